package simulators

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// DevicesConfig configures RunDevices. Zero values mean the documented
// defaults.
type DevicesConfig struct {
	// Broker is the MQTT server URL (tcp://, ssl://, ws://). Empty means
	// tcp://127.0.0.1:1883.
	Broker string `yaml:"broker"`
	// Devices is how many devices (MQTT connections) to simulate. Zero
	// means 1.
	Devices int `yaml:"devices"`
	// Rate is messages per second per device. Zero means 1.
	Rate float64 `yaml:"rate"`
	// Jitter is the share (0..1) by which each interval between messages
	// varies at random, keeping the mean rate. Zero means none; values are
	// clamped to 1.
	Jitter float64 `yaml:"jitter"`
	// Ramp spreads the devices' connection starts evenly over this time, so
	// a large fleet does not connect all at once. Zero means all at once.
	Ramp time.Duration `yaml:"ramp"`
	// Duration bounds the run, counted from the call. Zero means until ctx
	// ends (or Messages are sent).
	Duration time.Duration `yaml:"duration"`
	// Messages, when positive, is how many messages each device sends
	// before it disconnects, so that tests can count exactly. Zero means
	// no limit.
	Messages int `yaml:"messages"`
	// Metrics is how many metrics each device has (see MetricName). Zero
	// means 4.
	Metrics int `yaml:"metrics"`
	// Form is the payload shape: FormObject (default), FormMetric or
	// FormSenML.
	Form string `yaml:"form"`
	// QoS is the MQTT QoS of publishes, 0 or 1.
	QoS byte `yaml:"qos"`
	// Prefix is the first topic level. Empty means "telemetry".
	Prefix string `yaml:"prefix"`
	// IDPrefix starts every device id (see DeviceID). Empty means "sim-".
	IDPrefix string `yaml:"id-prefix"`
	// Credentials, when set, gives device i's MQTT username and password
	// (DESIGN.md §3: the device id and its token). Nil means anonymous.
	Credentials func(i int) (username, password string) `yaml:"-"`
	// Seed makes the patterns reproducible.
	Seed int64 `yaml:"seed"`
	// Now gives the reading times put into payloads; nil means time.Now.
	// Viewers measure latency from these, so they must be the real publish
	// time in production.
	Now func() time.Time `yaml:"-"`
	// Counters, when set, receives live counts (for progress output); nil
	// means RunDevices keeps its own.
	Counters *DevicesCounters `yaml:"-"`
	// Backfill, when positive, has each device first publish the readings
	// of that much past time, one every BackfillStep, with their original
	// timestamps, before going live: a fleet with a history behind it
	// (demos, browser tests), or a device emptying its offline buffer.
	// Readings older than the server's late window are rejected there.
	Backfill time.Duration `yaml:"backfill"`
	// BackfillStep is the spacing of backfilled readings. Zero means 10 s.
	BackfillStep time.Duration `yaml:"backfill-step"`
	// KeepAlive is the MQTT keep-alive. Zero means 30 s.
	KeepAlive time.Duration `yaml:"keep-alive"`
	// ConnectTimeout bounds one connection attempt. Zero means 10 s.
	ConnectTimeout time.Duration `yaml:"connect-timeout"`
}

func (c *DevicesConfig) setDefaults() error {
	if c.Broker == "" {
		c.Broker = "tcp://127.0.0.1:1883"
	}
	if c.Devices <= 0 {
		c.Devices = 1
	}
	if c.Rate <= 0 {
		c.Rate = 1
	}
	c.Jitter = min(max(c.Jitter, 0), 1)
	if c.Metrics <= 0 {
		c.Metrics = 4
	}
	if c.Form == "" {
		c.Form = FormObject
	}
	if c.Prefix == "" {
		c.Prefix = "telemetry"
	}
	if c.IDPrefix == "" {
		c.IDPrefix = "sim-"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Counters == nil {
		c.Counters = new(DevicesCounters)
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = 30 * time.Second
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	switch c.Form {
	case FormObject, FormMetric, FormSenML:
	default:
		return fmt.Errorf("unknown payload form %q (want %s, %s or %s)", c.Form, FormObject, FormMetric, FormSenML)
	}
	if c.QoS > 1 {
		return fmt.Errorf("QoS %d is not supported (want 0 or 1)", c.QoS)
	}
	if !validName(c.IDPrefix) {
		return fmt.Errorf("device id prefix %q is outside the charset A-Z a-z 0-9 . _ -", c.IDPrefix)
	}
	return nil
}

// validName reports whether s uses only the DESIGN.md §3 name charset.
func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// DevicesCounters are the live counts of a device fleet. Its methods are
// safe for concurrent use; a CLI reads Snapshot while RunDevices runs.
type DevicesCounters struct {
	start           atomic.Int64 // Unix ns of the run's start
	connected       atomic.Int64
	messages        atomic.Int64
	readings        atomic.Int64
	acks            atomic.Int64
	errs            atomic.Int64
	connectFailures atomic.Int64
	connectionsLost atomic.Int64
}

// Snapshot returns the counts so far.
func (c *DevicesCounters) Snapshot() DevicesStats {
	s := DevicesStats{
		Connected:       c.connected.Load(),
		Messages:        c.messages.Load(),
		Readings:        c.readings.Load(),
		Acks:            c.acks.Load(),
		Errors:          c.errs.Load(),
		ConnectFailures: c.connectFailures.Load(),
		ConnectionsLost: c.connectionsLost.Load(),
	}
	if st := c.start.Load(); st != 0 {
		s.Elapsed = time.Since(time.Unix(0, st))
	}
	s.setRates()
	return s
}

// DevicesStats are the results of a device fleet run.
type DevicesStats struct {
	// Connected is the number of devices connected at the time of the
	// snapshot (zero once RunDevices has returned).
	Connected int64 `json:"connected"`
	// Messages is how many publishes were handed to the MQTT clients.
	Messages int64 `json:"messages"`
	// Readings is Messages times the readings each message carries.
	Readings int64 `json:"readings"`
	// Acks is how many QoS 1 publishes the broker acknowledged.
	Acks int64 `json:"acks"`
	// Errors is how many publishes failed or were not confirmed in time.
	Errors int64 `json:"errors"`
	// ConnectFailures is how many connection attempts failed.
	ConnectFailures int64 `json:"connectFailures"`
	// ConnectionsLost is how many established connections dropped.
	ConnectionsLost int64 `json:"connectionsLost"`
	// Elapsed is the run's wall time (JSON: elapsedMs).
	Elapsed time.Duration `json:"-"`
	// MessagesPerSecond is Messages over Elapsed.
	MessagesPerSecond float64 `json:"messagesPerSecond"`
	// ReadingsPerSecond is Readings over Elapsed.
	ReadingsPerSecond float64 `json:"readingsPerSecond"`
}

func (s *DevicesStats) setRates() {
	if sec := s.Elapsed.Seconds(); sec > 0 {
		s.MessagesPerSecond = float64(s.Messages) / sec
		s.ReadingsPerSecond = float64(s.Readings) / sec
	}
}

// MarshalJSON encodes the stats with Elapsed in milliseconds.
func (s DevicesStats) MarshalJSON() ([]byte, error) {
	type plain DevicesStats
	return json.Marshal(struct {
		plain
		ElapsedMs float64 `json:"elapsedMs"`
	}{plain(s), durationMs(s.Elapsed)})
}

// Summary formats the stats as a small table.
func (s DevicesStats) Summary() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "messages\treadings\tacks\terrors\tconnect failures\tlost\telapsed\tmsg/s\treadings/s\t")
	fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%s\t%.0f\t%.0f\t\n",
		s.Messages, s.Readings, s.Acks, s.Errors, s.ConnectFailures, s.ConnectionsLost,
		s.Elapsed.Round(time.Millisecond), s.MessagesPerSecond, s.ReadingsPerSecond)
	_ = tw.Flush()
	return b.String()
}

func durationMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// RunDevices connects cfg.Devices paho MQTT clients (client id = device
// id, clean session) and publishes readings at cfg.Rate each until
// cfg.Duration passes, each device has sent cfg.Messages, or ctx ends. It
// then waits (briefly) for outstanding publishes to complete, disconnects
// every client cleanly and returns the final counts.
//
// It returns an error for an invalid config, or when no device could
// connect at all; individual failures are counted, not returned.
func RunDevices(ctx context.Context, cfg DevicesConfig, log *slog.Logger) (DevicesStats, error) {
	if err := cfg.setDefaults(); err != nil {
		return DevicesStats{}, fmt.Errorf("configure devices: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "simulators.devices")
	start := time.Now()
	cfg.Counters.start.Store(start.UnixNano())
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}

	var (
		wg      sync.WaitGroup
		ok      atomic.Int64 // devices that connected (or were never due to)
		errMu   sync.Mutex   // guards lastErr
		lastErr error
	)
	for i := range cfg.Devices {
		d := &device{cfg: &cfg, i: i, id: DeviceID(cfg.IDPrefix, i, cfg.Devices), log: log}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var delay time.Duration
			if cfg.Ramp > 0 {
				delay = time.Duration(int64(cfg.Ramp) * int64(i) / int64(cfg.Devices))
			}
			err := d.run(ctx, delay)
			if err != nil {
				errMu.Lock()
				lastErr = err
				errMu.Unlock()
				return
			}
			ok.Add(1)
		}()
	}
	wg.Wait()
	s := cfg.Counters.Snapshot()
	s.Elapsed = time.Since(start)
	s.setRates()
	log.Info("device fleet done", "messages", s.Messages, "acks", s.Acks, "errors", s.Errors, "connectFailures", s.ConnectFailures)
	if ok.Load() == 0 && lastErr != nil {
		return s, fmt.Errorf("connect devices to %s: %w", cfg.Broker, lastErr)
	}
	return s, nil
}

// errNeverConnected is returned by device.run when the run ended before the
// device could connect even once.
var errNeverConnected = errors.New("device never connected")

// device is one simulated device. Its fields are used only by its own
// goroutine.
type device struct {
	cfg     *DevicesConfig
	i       int
	id      string
	log     *slog.Logger
	metrics []Metric
	values  []float64
	rng     *rand.Rand
	// pending are the tokens of publishes not yet completed, oldest first.
	pending []pendingToken
}

type pendingToken struct {
	tok mqtt.Token
	qos byte
}

// maxPendingTokens bounds the publishes a device has in flight; beyond it
// the device waits for the oldest, which is also how broker backpressure
// (withheld PUBACKs) slows a device down.
const maxPendingTokens = 64

// drainTimeout bounds the wait for outstanding publishes at the end.
const drainTimeout = 5 * time.Second

// run connects (retrying with backoff after ramp delay), publishes until ctx
// ends or the message budget is spent, then disconnects. It returns an error
// only when the device never connected.
func (d *device) run(ctx context.Context, delay time.Duration) error {
	cfg := d.cfg
	c := cfg.Counters
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
	d.metrics = DefaultMetrics(cfg.Seed, d.i, cfg.Metrics)
	d.values = make([]float64, len(d.metrics))
	d.rng = newRand(cfg.Seed, uint64(d.i)<<8|0xff)

	// up makes the Connected gauge exact: paho's handlers and the final
	// disconnect race, and only the one that flips up may count.
	var up atomic.Bool
	opts := mqtt.NewClientOptions().
		AddBroker(cfg.Broker).
		SetClientID(d.id).
		SetCleanSession(true).
		SetKeepAlive(cfg.KeepAlive).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetWriteTimeout(cfg.ConnectTimeout).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(5 * time.Second).
		SetOrderMatters(false).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			c.connectionsLost.Add(1)
			if up.CompareAndSwap(true, false) {
				c.connected.Add(-1)
			}
			d.log.Debug("connection lost", "device", d.id, "err", err)
		}).
		SetOnConnectHandler(func(mqtt.Client) {
			if up.CompareAndSwap(false, true) {
				c.connected.Add(1)
			}
		})
	if cfg.Credentials != nil {
		u, p := cfg.Credentials(d.i)
		opts.SetUsername(u).SetPassword(p)
	}
	client := mqtt.NewClient(opts)

	defer func() {
		if up.CompareAndSwap(true, false) {
			c.connected.Add(-1)
		}
	}()
	if err := d.connect(ctx, client); err != nil {
		return err
	}
	if cfg.Backfill > 0 {
		d.backfill(ctx, client)
	}
	d.publishLoop(ctx, client)
	d.drain()
	client.Disconnect(250)
	return nil
}

// connect tries until it succeeds or ctx ends, backing off from 100 ms to 5 s.
func (d *device) connect(ctx context.Context, client mqtt.Client) error {
	backoff := 100 * time.Millisecond
	var lastErr error
	for {
		tok := client.Connect()
		select {
		case <-tok.Done():
		case <-ctx.Done():
			// paho ends the attempt after ConnectTimeout; wait for it so
			// that no goroutine of this device outlives the run.
			if tok.WaitTimeout(d.cfg.ConnectTimeout+time.Second) && tok.Error() == nil {
				client.Disconnect(0)
				return nil
			}
			if lastErr == nil {
				lastErr = errNeverConnected
			}
			return lastErr
		}
		err := tok.Error()
		if err == nil {
			return nil
		}
		lastErr = err
		d.cfg.Counters.connectFailures.Add(1)
		d.log.Debug("connect failed", "device", d.id, "err", err)
		// Jittered, so that a restarted broker is not hit by the whole
		// fleet in the same millisecond.
		wait := backoff/2 + time.Duration(d.rng.Int64N(int64(backoff)))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return lastErr
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// publishLoop publishes on schedule until ctx ends or the budget is spent.
func (d *device) publishLoop(ctx context.Context, client mqtt.Client) {
	cfg := d.cfg
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	timer := time.NewTimer(0)
	defer timer.Stop()
	next := time.Now()
	for sent := 0; cfg.Messages <= 0 || sent < cfg.Messages; sent++ {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		d.publish(client)
		d.reap()

		step := interval
		if cfg.Jitter > 0 {
			step = time.Duration(float64(interval) * (1 + cfg.Jitter*(2*d.rng.Float64()-1)))
		}
		next = next.Add(step)
		now := time.Now()
		// Behind by more than a second (a stall, a slow broker): skip
		// ahead rather than burst to catch up.
		if now.Sub(next) > time.Second {
			next = now
		}
		timer.Reset(next.Sub(now))
	}
}

// publish sends one message (FormMetric: one per metric) stamped Now().
// backfill publishes the readings of the last cfg.Backfill, oldest first,
// with their own timestamps.
func (d *device) backfill(ctx context.Context, client mqtt.Client) {
	step := d.cfg.BackfillStep
	if step <= 0 {
		step = 10 * time.Second
	}
	now := d.cfg.Now()
	for at := now.Add(-d.cfg.Backfill).Add(step); at.Before(now); at = at.Add(step) {
		if ctx.Err() != nil {
			return
		}
		d.publishAt(client, at)
		d.reap()
	}
}

func (d *device) publish(client mqtt.Client) { d.publishAt(client, d.cfg.Now()) }

// publishAt publishes one reading of every metric, taken at now.
func (d *device) publishAt(client mqtt.Client, now time.Time) {
	cfg := d.cfg
	tsMs := now.UnixMilli()
	for i, m := range d.metrics {
		d.values[i] = m.Pattern(now)
	}
	// paho keeps the payload slice until the publish completes, so each
	// message gets its own buffer.
	switch cfg.Form {
	case FormObject:
		p := appendObject(make([]byte, 0, 32+24*len(d.metrics)), tsMs, d.metrics, d.values)
		d.send(client, cfg.Prefix+"/"+d.id, p, len(d.metrics))
	case FormSenML:
		p := appendSenML(make([]byte, 0, 48+32*len(d.metrics)), d.id, tsMs, d.metrics, d.values)
		d.send(client, cfg.Prefix+"/"+d.id, p, len(d.metrics))
	case FormMetric:
		for i, m := range d.metrics {
			p := appendValue(make([]byte, 0, 40), tsMs, m, d.values[i])
			d.send(client, cfg.Prefix+"/"+d.id+"/"+m.Name, p, 1)
		}
	}
}

func (d *device) send(client mqtt.Client, topic string, payload []byte, readings int) {
	c := d.cfg.Counters
	if !client.IsConnectionOpen() {
		// paho would "complete" a QoS 0 publish while reconnecting
		// without sending it: count it as the failure it is.
		c.errs.Add(1)
		return
	}
	tok := client.Publish(topic, d.cfg.QoS, false, payload)
	c.messages.Add(1)
	c.readings.Add(int64(readings))
	d.pending = append(d.pending, pendingToken{tok: tok, qos: d.cfg.QoS})
	if len(d.pending) >= maxPendingTokens {
		d.settle(d.pending[0], drainTimeout)
		d.pending = append(d.pending[:0], d.pending[1:]...)
	}
}

// reap settles the completed tokens at the front of pending.
func (d *device) reap() {
	n := 0
	for _, p := range d.pending {
		select {
		case <-p.tok.Done():
		default:
			d.pending = append(d.pending[:0], d.pending[n:]...)
			return
		}
		d.settle(p, 0)
		n++
	}
	d.pending = d.pending[:0]
}

// settle waits up to timeout for a publish and counts its outcome.
func (d *device) settle(p pendingToken, timeout time.Duration) {
	c := d.cfg.Counters
	select {
	case <-p.tok.Done():
	default:
		if timeout <= 0 || !p.tok.WaitTimeout(timeout) {
			c.errs.Add(1)
			return
		}
	}
	if err := p.tok.Error(); err != nil {
		c.errs.Add(1)
		if d.log.Enabled(context.Background(), slog.LevelDebug) {
			d.log.Debug("publish failed", "device", d.id, "err", err)
		}
		return
	}
	if p.qos > 0 {
		c.acks.Add(1)
	}
}

// drain waits for outstanding publishes before the disconnect: paho sends
// DISCONNECT on a priority queue that can overtake queued publishes.
func (d *device) drain() {
	deadline := time.Now().Add(drainTimeout)
	for _, p := range d.pending {
		d.settle(p, max(time.Until(deadline), time.Millisecond))
	}
	d.pending = d.pending[:0]
}
