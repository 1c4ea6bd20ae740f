package simulators

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
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
	// Broker is the MQTT server URL (tcp://, ssl://, ws://, wss://).
	// Empty means tcp://127.0.0.1:1883.
	Broker string `yaml:"broker"`
	// TLS configures ssl:// and wss:// brokers; nil means the system's
	// roots.
	TLS *tls.Config `yaml:"-"`
	// Devices is how many devices (MQTT connections) to simulate. Zero
	// means 1, or len(IDs).
	Devices int `yaml:"devices"`
	// IDs, when set, are the device ids (say, from a credentials file)
	// instead of IDPrefix and a number; Devices may not exceed len(IDs).
	IDs []string `yaml:"-"`
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
	// Pattern is the value generator of every metric: PatternMixed (the
	// default: each metric its own kind, see DefaultMetrics), or one of
	// PatternSine, PatternWalk, PatternSteps, PatternSpikes, PatternNoise.
	Pattern string `yaml:"pattern"`
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
	// WriteTimeout bounds a write to the broker, and a publish waiting for
	// the client to take it (paho blocks the device that long when its
	// connection died under it). Zero means 10 s, or 2 s when Flaky is on.
	WriteTimeout time.Duration `yaml:"write-timeout"`
	// Buffer is how many messages a device keeps while it is offline (or
	// its link is slower than its rate), sending them with their original
	// timestamps once it can, oldest first; QoS 1 publishes lost in flight
	// go back into it. A full buffer drops its oldest message. Zero means
	// no buffer (messages measured offline are errors), unless Flaky is on:
	// then 10,000.
	Buffer int `yaml:"buffer"`
	// Flaky breaks each device's link now and then, as bad mobile and rural
	// links do (tcp:// and ssl:// brokers only).
	Flaky DeviceFlaky `yaml:"flaky"`
	// BadShare is the share (0..1) of messages replaced by malformed ones
	// (not JSON, truncated, wrong types, bad names), as buggy firmware
	// sends. They are counted as Bad, not as Messages.
	BadShare float64 `yaml:"bad-share"`
}

// DeviceFlaky are the link faults of a flaky device fleet. Each fault
// happens to each device at random, exponentially distributed intervals.
type DeviceFlaky struct {
	// DisconnectEvery is the mean time between abrupt disconnects (a TCP
	// reset, no MQTT DISCONNECT). Zero means none.
	DisconnectEvery time.Duration `yaml:"disconnect-every"`
	// StallEvery is the mean time between silent stalls: nothing is sent
	// or received for StallFor, and the connection is not closed. Zero
	// means none.
	StallEvery time.Duration `yaml:"stall-every"`
	// StallFor is how long a stall lasts. Zero means 5 s.
	StallFor time.Duration `yaml:"stall-for"`
}

func (f DeviceFlaky) enabled() bool { return f.DisconnectEvery > 0 || f.StallEvery > 0 }

func (c *DevicesConfig) setDefaults() error {
	if c.Broker == "" {
		c.Broker = "tcp://127.0.0.1:1883"
	}
	if c.Devices <= 0 {
		c.Devices = max(len(c.IDs), 1)
	}
	if len(c.IDs) > 0 && c.Devices > len(c.IDs) {
		return fmt.Errorf("%d devices but only %d device ids", c.Devices, len(c.IDs))
	}
	for _, id := range c.IDs {
		if id == "" || !validName(id) {
			return fmt.Errorf("device id %q is empty or outside the charset A-Z a-z 0-9 . _ -", id)
		}
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
	if c.Pattern == "" {
		c.Pattern = PatternMixed
	}
	if !validPattern(c.Pattern) {
		return fmt.Errorf("unknown pattern %q (want %s)", c.Pattern, strings.Join(Patterns, ", "))
	}
	if c.Flaky.enabled() {
		if c.Buffer == 0 {
			c.Buffer = 10_000
		}
		if c.WriteTimeout <= 0 {
			c.WriteTimeout = 2 * time.Second
		}
		if c.Flaky.StallFor <= 0 {
			c.Flaky.StallFor = 5 * time.Second
		}
		u, err := url.Parse(c.Broker)
		if err != nil {
			return fmt.Errorf("parse broker URL: %w", err)
		}
		if u.Scheme != "tcp" && u.Scheme != "mqtt" && !tlsScheme(u.Scheme) {
			return fmt.Errorf("flaky devices need a tcp:// or ssl:// broker, not %s://", u.Scheme)
		}
	}
	c.Buffer = max(c.Buffer, 0)
	if c.BadShare < 0 || c.BadShare > 1 {
		return fmt.Errorf("bad-payload share %v is outside 0..1", c.BadShare)
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
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
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
	reconnects      atomic.Int64
	disconnects     atomic.Int64
	stalls          atomic.Int64
	buffered        atomic.Int64
	dropped         atomic.Int64
	unsent          atomic.Int64
	republished     atomic.Int64
	bad             atomic.Int64
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
		Reconnects:      c.reconnects.Load(),
		Disconnects:     c.disconnects.Load(),
		Stalls:          c.stalls.Load(),
		Buffered:        c.buffered.Load(),
		Dropped:         c.dropped.Load(),
		Unsent:          c.unsent.Load(),
		Republished:     c.republished.Load(),
		Bad:             c.bad.Load(),
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
	// Messages is how many distinct well-formed messages were handed to
	// the MQTT clients (a message sent again counts once).
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
	// Reconnects is how many connections succeeded after a device's first.
	Reconnects int64 `json:"reconnects"`
	// Disconnects and Stalls are the faults flaky mode injected.
	Disconnects int64 `json:"disconnects"`
	Stalls      int64 `json:"stalls"`
	// Buffered is how many readings were measured while offline and kept
	// in the offline buffer.
	Buffered int64 `json:"buffered"`
	// Dropped is how many readings a full offline buffer dropped.
	Dropped int64 `json:"dropped"`
	// Unsent is how many readings were still buffered when the run ended.
	Unsent int64 `json:"unsent"`
	// Republished is how many QoS 1 messages were sent again because the
	// connection dropped before their acknowledgement: the broker may
	// have them twice.
	Republished int64 `json:"republished"`
	// Bad is how many malformed messages were sent (BadShare).
	Bad int64 `json:"bad"`
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
	fmt.Fprintln(tw, "messages\treadings\tacks\terrors\tconnect failures\tlost\treconnects\telapsed\tmsg/s\treadings/s\t")
	fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%.0f\t%.0f\t\n",
		s.Messages, s.Readings, s.Acks, s.Errors, s.ConnectFailures, s.ConnectionsLost, s.Reconnects,
		s.Elapsed.Round(time.Millisecond), s.MessagesPerSecond, s.ReadingsPerSecond)
	_ = tw.Flush()
	if s.Disconnects+s.Stalls+s.Buffered+s.Dropped+s.Unsent+s.Republished+s.Bad > 0 {
		fmt.Fprintf(&b, "flaky: %d disconnects, %d stalls; readings buffered offline %d, dropped %d, unsent %d; messages sent again %d; malformed %d\n",
			s.Disconnects, s.Stalls, s.Buffered, s.Dropped, s.Unsent, s.Republished, s.Bad)
	}
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
		id := DeviceID(cfg.IDPrefix, i, cfg.Devices)
		if len(cfg.IDs) > 0 {
			id = cfg.IDs[i]
		}
		d := &device{cfg: &cfg, i: i, id: id, log: log}
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

// maxPendingTokens bounds the publishes a device has in flight; beyond it
// the device waits for the oldest, which is also how broker backpressure
// (withheld PUBACKs) slows a device down.
const maxPendingTokens = 64

// drainTimeout bounds the wait for outstanding publishes at the end.
const drainTimeout = 5 * time.Second

// outMsg is a message a device has built: its payload carries the reading
// time, so a message sent late from the offline buffer keeps it.
type outMsg struct {
	topic    string
	payload  []byte
	readings int
	bad      bool
	sent     bool // handed to the client at least once
}

// inflight is a publish the client has not completed yet.
type inflight struct {
	tok mqtt.Token
	msg *outMsg
}

// device is one simulated device. Its fields are used only by its own
// goroutine, except conn (set from paho's connecting goroutine) and lost
// (written by paho's handler).
type device struct {
	cfg     *DevicesConfig
	i       int
	id      string
	log     *slog.Logger
	metrics []Metric
	values  []float64
	rng     *rand.Rand
	client  mqtt.Client

	// up makes the Connected gauge exact: paho's handlers and the final
	// disconnect race, and only the one that flips up may count.
	up atomic.Bool
	// conn is the current connection in flaky mode, for kill and stall.
	conn atomic.Pointer[flakyConn]
	// lost is signalled by paho when the connection drops.
	lost chan struct{}

	// online is whether the device believes it is connected: from a
	// successful connect until paho reports the connection lost or a
	// publish fails.
	online bool
	// suspect is set when a publish failed on a connection paho has not
	// (yet) reported lost: the device waits a moment for the report.
	suspect bool
	// outbox holds built messages not yet handed to the client, oldest
	// first: the offline buffer, and the backlog behind a full window.
	outbox []*outMsg
	// pending are the publishes in flight, oldest first.
	pending []inflight
}

// run connects (retrying with backoff after ramp delay), publishes until ctx
// ends or the message budget is spent, then disconnects. It returns an error
// only when the device never connected.
func (d *device) run(ctx context.Context, delay time.Duration) error {
	cfg := d.cfg
	c := cfg.Counters
	if delay > 0 && !sleepCtx(ctx, delay) {
		return nil
	}
	d.metrics = MetricsFor(cfg.Pattern, cfg.Seed, d.i, cfg.Metrics)
	d.values = make([]float64, len(d.metrics))
	d.rng = newRand(cfg.Seed, uint64(d.i)<<8|0xff)
	d.lost = make(chan struct{}, 1)

	// Reconnection is the device's own job, not paho's: while it is
	// offline it keeps measuring into its buffer, and it decides what to
	// send again.
	opts := mqtt.NewClientOptions().
		AddBroker(cfg.Broker).
		SetClientID(d.id).
		SetCleanSession(true).
		SetKeepAlive(cfg.KeepAlive).
		SetPingTimeout(min(cfg.KeepAlive, 10*time.Second)).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetWriteTimeout(cfg.WriteTimeout).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(false).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			c.connectionsLost.Add(1)
			if d.up.CompareAndSwap(true, false) {
				c.connected.Add(-1)
			}
			d.log.Debug("connection lost", "device", d.id, "err", err)
			select {
			case d.lost <- struct{}{}:
			default:
			}
		}).
		SetOnConnectHandler(func(mqtt.Client) {
			if d.up.CompareAndSwap(false, true) {
				c.connected.Add(1)
			}
		})
	if cfg.TLS != nil {
		opts.SetTLSConfig(cfg.TLS)
	}
	if cfg.Flaky.enabled() {
		opts.SetCustomOpenConnectionFn(d.open)
	}
	if cfg.Credentials != nil {
		u, p := cfg.Credentials(d.i)
		opts.SetUsername(u).SetPassword(p)
	}
	d.client = mqtt.NewClient(opts)

	defer func() {
		if d.up.CompareAndSwap(true, false) {
			c.connected.Add(-1)
		}
	}()
	if err := d.connect(ctx); err != nil {
		return err
	}
	d.online = true
	if cfg.Backfill > 0 {
		d.backfill(ctx)
	}
	d.loop(ctx)
	if d.client.IsConnected() {
		d.client.Disconnect(250)
	}
	return nil
}

// open dials the broker for paho in flaky mode, through a flakyConn.
func (d *device) open(uri *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
	dialer := &net.Dialer{Timeout: d.cfg.ConnectTimeout}
	raw, err := dialer.Dial("tcp", uri.Host)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", uri.Host, err)
	}
	fc := newFlakyConn(raw)
	var conn net.Conn = fc
	if tlsScheme(uri.Scheme) {
		tc := tls.Client(fc, clientTLS(d.cfg.TLS, uri.Hostname()))
		_ = tc.SetDeadline(time.Now().Add(d.cfg.ConnectTimeout))
		if err := tc.Handshake(); err != nil {
			_ = fc.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", uri.Host, err)
		}
		_ = tc.SetDeadline(time.Time{})
		conn = tc
	}
	d.conn.Store(fc)
	return conn, nil
}

// clientTLS returns cfg (or a default) with ServerName set to host when
// the config does not name one.
func clientTLS(cfg *tls.Config, host string) *tls.Config {
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	return cfg
}

func tlsScheme(s string) bool {
	switch s {
	case "ssl", "tls", "mqtts", "tcps":
		return true
	}
	return false
}

// connect tries until it succeeds or ctx ends, backing off from 100 ms to 5 s.
func (d *device) connect(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	var lastErr error
	for {
		tok := d.client.Connect()
		select {
		case <-tok.Done():
		case <-ctx.Done():
			// paho ends the attempt after ConnectTimeout; wait for it so
			// that no goroutine of this device outlives the run.
			if tok.WaitTimeout(d.cfg.ConnectTimeout+time.Second) && tok.Error() == nil {
				d.client.Disconnect(0)
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
		if !sleepCtx(ctx, d.jitter(backoff)) {
			return lastErr
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// jitter returns d ± 50 %, so that a restarted broker is not hit by the
// whole fleet in the same millisecond.
func (d *device) jitter(b time.Duration) time.Duration {
	return b/2 + time.Duration(d.rng.Int64N(int64(b)))
}

// loop measures on schedule and publishes until the budget is spent and
// everything is sent, or ctx ends (then it drains for up to drainTimeout).
// It reconnects after a lost connection and, in flaky mode, breaks the
// link now and then.
func (d *device) loop(ctx context.Context) {
	cfg := d.cfg
	c := cfg.Counters
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	tick := time.NewTimer(0)
	defer tick.Stop()
	tickC := tick.C
	next := time.Now()

	var disconnectC, stallC <-chan time.Time
	disconnectT := d.chaosTimer(cfg.Flaky.DisconnectEvery, &disconnectC)
	stallT := d.chaosTimer(cfg.Flaky.StallEvery, &stallC)
	stopChaos := func() {
		if disconnectT != nil {
			disconnectT.Stop()
		}
		if stallT != nil {
			stallT.Stop()
		}
		disconnectC, stallC = nil, nil
	}
	defer stopChaos()

	var (
		retryT      *time.Timer
		retryC      <-chan time.Time
		connecting  mqtt.Token
		connectingC <-chan struct{}
		backoff     = 100 * time.Millisecond
		drainC      <-chan time.Time
		healthT     *time.Timer
		healthC     <-chan time.Time
		ctxDone     = ctx.Done()
		generating  = true
		built       int
	)
	defer func() {
		if retryT != nil {
			retryT.Stop()
		}
		if healthT != nil {
			healthT.Stop()
		}
		if connecting != nil && connectingC != nil {
			// Let paho finish the attempt, so none of its goroutines
			// outlive the run.
			connecting.WaitTimeout(cfg.ConnectTimeout + time.Second)
		}
		d.abandon()
	}()
	scheduleRetry := func() {
		retryT = time.NewTimer(d.jitter(backoff))
		retryC = retryT.C
		backoff = min(2*backoff, 5*time.Second)
	}
	endGeneration := func() {
		generating = false
		tick.Stop()
		tickC = nil
		stopChaos()
	}

	for {
		if !generating && len(d.outbox) == 0 && len(d.pending) == 0 {
			return
		}
		var oldest <-chan struct{}
		if len(d.pending) > 0 {
			oldest = d.pending[0].tok.Done()
		}
		select {
		case <-ctxDone:
			ctxDone = nil
			endGeneration()
			drainC = time.After(drainTimeout)
		case <-drainC:
			return
		case <-tickC:
			d.generate()
			built++
			if cfg.Messages > 0 && built >= cfg.Messages {
				endGeneration()
				break
			}
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
			tick.Reset(next.Sub(now))
		case <-oldest:
			d.reap()
		case <-d.lost:
			d.goOffline()
			if drainC == nil && (generating || len(d.outbox) > 0) {
				scheduleRetry()
			}
		case <-retryC:
			retryC = nil
			connecting = d.client.Connect()
			connectingC = connecting.Done()
		case <-connectingC:
			connectingC = nil
			if err := connecting.Error(); err != nil {
				c.connectFailures.Add(1)
				d.log.Debug("reconnect failed", "device", d.id, "err", err)
				if drainC == nil {
					scheduleRetry()
				}
				break
			}
			c.reconnects.Add(1)
			d.online = true
			backoff = 100 * time.Millisecond
		case <-healthC:
			healthC = nil
			if d.suspect {
				// No loss reported: the failure was the publish's alone.
				d.suspect = false
				d.online = d.client.IsConnectionOpen()
			}
		case <-disconnectC:
			if fc := d.conn.Load(); fc != nil && d.online && d.conn.CompareAndSwap(fc, nil) {
				c.disconnects.Add(1)
				fc.kill()
			}
			disconnectT.Reset(d.exp(cfg.Flaky.DisconnectEvery))
		case <-stallC:
			if fc := d.conn.Load(); fc != nil && d.online {
				c.stalls.Add(1)
				fc.stall(cfg.Flaky.StallFor)
			}
			stallT.Reset(d.exp(cfg.Flaky.StallEvery))
		}
		if d.suspect && healthC == nil {
			healthT = time.NewTimer(time.Second)
			healthC = healthT.C
		}
		d.pump()
		// A device with no room to buffer waits for the link, as a
		// blocking MQTT library would: that is how a slow broker slows it.
		if d.online && len(d.outbox) > d.outboxLimit() && len(d.pending) > 0 {
			d.settleOldest(drainTimeout)
			d.pump()
		}
	}
}

// chaosTimer starts a timer for a random fault with the given mean
// interval, or returns nil when that fault is off.
func (d *device) chaosTimer(mean time.Duration, ch *<-chan time.Time) *time.Timer {
	if mean <= 0 {
		return nil
	}
	t := time.NewTimer(d.exp(mean))
	*ch = t.C
	return t
}

// exp returns an exponentially distributed interval with the given mean,
// at least a millisecond.
func (d *device) exp(mean time.Duration) time.Duration {
	return max(expInterval(d.rng, mean), time.Millisecond)
}

// outboxLimit is how many built messages may wait while online.
func (d *device) outboxLimit() int { return max(d.cfg.Buffer, 1) }

// generate takes one reading of every metric, now, and queues the
// message(s): one per metric in FormMetric, or a malformed one when the
// bad-payload share says so.
func (d *device) generate() { d.generateAt(d.cfg.Now()) }

func (d *device) generateAt(now time.Time) {
	cfg := d.cfg
	tsMs := now.UnixMilli()
	for i, m := range d.metrics {
		d.values[i] = m.Pattern(now)
	}
	if cfg.BadShare > 0 && d.rng.Float64() < cfg.BadShare {
		topic, payload := badPayload(d.rng, cfg.Prefix, d.id, tsMs)
		d.enqueue(&outMsg{topic: topic, payload: payload, bad: true})
		return
	}
	// paho keeps the payload slice until the publish completes, so each
	// message gets its own buffer.
	switch cfg.Form {
	case FormObject:
		p := appendObject(make([]byte, 0, 32+24*len(d.metrics)), tsMs, d.metrics, d.values)
		d.enqueue(&outMsg{topic: cfg.Prefix + "/" + d.id, payload: p, readings: len(d.metrics)})
	case FormSenML:
		p := appendSenML(make([]byte, 0, 48+32*len(d.metrics)), d.id, tsMs, d.metrics, d.values)
		d.enqueue(&outMsg{topic: cfg.Prefix + "/" + d.id, payload: p, readings: len(d.metrics)})
	case FormMetric:
		for i, m := range d.metrics {
			p := appendValue(make([]byte, 0, 40), tsMs, m, d.values[i])
			d.enqueue(&outMsg{topic: cfg.Prefix + "/" + d.id + "/" + m.Name, payload: p, readings: 1})
		}
	}
}

// enqueue adds a message to the outbox. Offline, a device without a buffer
// loses it (an error); one with a full buffer drops its oldest message.
func (d *device) enqueue(m *outMsg) {
	c := d.cfg.Counters
	if !d.online {
		if d.cfg.Buffer <= 0 {
			c.errs.Add(1)
			return
		}
		c.buffered.Add(int64(m.readings))
		if len(d.outbox) >= d.cfg.Buffer {
			old := d.outbox[0]
			d.outbox = d.outbox[1:]
			c.dropped.Add(int64(old.readings))
		}
	}
	d.outbox = append(d.outbox, m)
}

// pump hands queued messages to the client while it is connected and the
// in-flight window has room.
func (d *device) pump() {
	c := d.cfg.Counters
	for d.online && len(d.outbox) > 0 && len(d.pending) < maxPendingTokens {
		if !d.client.IsConnectionOpen() {
			return // lost; paho's handler will say so
		}
		m := d.outbox[0]
		d.outbox[0] = nil
		d.outbox = d.outbox[1:]
		tok := d.client.Publish(m.topic, d.cfg.QoS, false, m.payload)
		switch {
		case m.sent:
			c.republished.Add(1)
		case m.bad:
			c.bad.Add(1)
		default:
			c.messages.Add(1)
			c.readings.Add(int64(m.readings))
		}
		m.sent = true
		d.pending = append(d.pending, inflight{tok: tok, msg: m})
	}
}

// reap settles the completed publishes at the front of pending.
func (d *device) reap() {
	var failed []*outMsg
	n := 0
	for _, p := range d.pending {
		select {
		case <-p.tok.Done():
		default:
			d.pending = append(d.pending[:0], d.pending[n:]...)
			d.requeue(failed)
			return
		}
		if !d.settle(p) {
			failed = append(failed, p.msg)
		}
		n++
	}
	d.pending = d.pending[:0]
	d.requeue(failed)
}

// settleOldest waits up to timeout for the oldest publish.
func (d *device) settleOldest(timeout time.Duration) {
	p := d.pending[0]
	d.pending = append(d.pending[:0], d.pending[1:]...)
	if !p.tok.WaitTimeout(timeout) {
		d.cfg.Counters.errs.Add(1)
		return
	}
	if !d.settle(p) {
		d.requeue([]*outMsg{p.msg})
	}
}

// settle counts a completed publish; false means it failed.
func (d *device) settle(p inflight) bool {
	c := d.cfg.Counters
	if err := p.tok.Error(); err != nil {
		if d.log.Enabled(context.Background(), slog.LevelDebug) {
			d.log.Debug("publish failed", "device", d.id, "err", err)
		}
		return false
	}
	if d.cfg.QoS > 0 {
		c.acks.Add(1)
	}
	return true
}

// requeue puts failed QoS 1 messages back at the front of the outbox, in
// order, when the device buffers: the broker may or may not have them, and
// at-least-once means sending again. Otherwise they are errors.
func (d *device) requeue(failed []*outMsg) {
	if len(failed) == 0 {
		return
	}
	c := d.cfg.Counters
	if d.cfg.Buffer <= 0 || d.cfg.QoS == 0 {
		c.errs.Add(int64(len(failed)))
		return
	}
	d.outbox = append(failed, d.outbox...)
	// A publish fails on a connection that is going down before paho
	// reports it lost; sending again at once would only fail again.
	if d.online {
		d.online = false
		d.suspect = true
	}
}

// goOffline handles a lost connection: paho has failed the QoS 1 publishes
// in flight (they go back to the outbox); QoS 0 ones it may never complete,
// and their fate is unknown, so they count as errors.
func (d *device) goOffline() {
	d.online = false
	d.suspect = false
	d.conn.Store(nil)
	var failed []*outMsg
	for _, p := range d.pending {
		if !p.tok.WaitTimeout(100 * time.Millisecond) {
			d.cfg.Counters.errs.Add(1)
			continue
		}
		if !d.settle(p) {
			failed = append(failed, p.msg)
		}
	}
	d.pending = d.pending[:0]
	d.requeue(failed)
}

// abandon counts what is left at the end: publishes not confirmed in time
// and readings never sent.
func (d *device) abandon() {
	c := d.cfg.Counters
	deadline := time.Now().Add(drainTimeout)
	for _, p := range d.pending {
		if !p.tok.WaitTimeout(max(time.Until(deadline), time.Millisecond)) || !d.settle(p) {
			c.errs.Add(1)
		}
	}
	d.pending = d.pending[:0]
	for _, m := range d.outbox {
		c.unsent.Add(int64(m.readings))
	}
	d.outbox = d.outbox[:0]
}

// backfill publishes the readings of the last cfg.Backfill, oldest first,
// with their own timestamps, before the device goes live.
func (d *device) backfill(ctx context.Context) {
	step := d.cfg.BackfillStep
	if step <= 0 {
		step = 10 * time.Second
	}
	now := d.cfg.Now()
	for at := now.Add(-d.cfg.Backfill).Add(step); at.Before(now); at = at.Add(step) {
		if ctx.Err() != nil || !d.client.IsConnectionOpen() {
			return
		}
		d.generateAt(at)
		d.pump()
		for len(d.outbox) > 0 && len(d.pending) > 0 {
			d.settleOldest(drainTimeout)
			d.pump()
		}
		d.reap()
	}
}

// badPayload returns one of the malformed messages buggy firmware sends,
// each of which the server must reject (DESIGN.md §3).
func badPayload(r *rand.Rand, prefix, device string, tsMs int64) (topic string, payload []byte) {
	topic = prefix + "/" + device
	ts := strconv.FormatInt(tsMs, 10)
	switch r.IntN(6) {
	case 0:
		return topic, []byte("temperature=21.5")
	case 1:
		return topic, []byte(`{"ts":` + ts + `,"temperature":21.`)
	case 2:
		// A clock that never got its time: the year 2286.
		return topic, []byte(`{"ts":9999999999999,"temperature":21.5}`)
	case 3:
		return topic, []byte(`{"ts":"yesterday","temperature":21.5}`)
	case 4:
		return topic + "/bad metric", []byte(`21.5`)
	default:
		return topic, []byte{0xff, 0xfe, 0x00}
	}
}
