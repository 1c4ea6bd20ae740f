package simulators

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// LoadConfig configures RunLoad. Zero values mean the documented defaults.
type LoadConfig struct {
	// Addr is the broker's MQTT TCP address, host:port. Empty means
	// 127.0.0.1:1883.
	Addr string `yaml:"addr"`
	// Connections is how many MQTT connections (devices) publish, one
	// goroutine each. Zero means 10.
	Connections int `yaml:"connections"`
	// Rate is the total messages per second across all connections, paced
	// with a token bucket per connection. Zero means as fast as possible.
	Rate float64 `yaml:"rate"`
	// Duration bounds the publishing. Zero means until ctx ends (or
	// Messages are sent). RunLoad returns a little later when the broker
	// is the bottleneck: each connection flushes what it has written
	// (bounded by its 64 KiB buffer and socket send buffer) and
	// disconnects cleanly, so that every message counted was delivered.
	Duration time.Duration `yaml:"duration"`
	// Messages, when positive, is how many messages each connection sends
	// before it disconnects. Zero means no limit.
	Messages int `yaml:"messages"`
	// QoS is 0 or 1.
	QoS byte `yaml:"qos"`
	// Metrics is how many metrics each payload carries (see MetricName).
	// Zero means 2: {"ts":..,"temperature":21.53,"humidity":40.1}.
	Metrics int `yaml:"metrics"`
	// Prefix is the first topic level. Empty means "telemetry".
	Prefix string `yaml:"prefix"`
	// IDPrefix starts every device id (see DeviceID). Empty means "load-".
	IDPrefix string `yaml:"id-prefix"`
	// InFlight is the QoS 1 window per connection: publishes sent but not
	// yet acknowledged. Zero means 64.
	InFlight int `yaml:"in-flight"`
	// KeepAlive is the MQTT keep-alive. Zero means 30 s.
	KeepAlive time.Duration `yaml:"keep-alive"`
	// Credentials, when set, gives connection i's username and password.
	Credentials func(i int) (username, password string) `yaml:"-"`
	// Now gives the payloads' "ts"; nil means time.Now.
	Now func() time.Time `yaml:"-"`
	// Counters, when set, receives live counts; nil means RunLoad keeps
	// its own.
	Counters *LoadCounters `yaml:"-"`
}

func (c *LoadConfig) setDefaults() error {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:1883"
	}
	if c.Connections <= 0 {
		c.Connections = 10
	}
	if c.Rate < 0 {
		c.Rate = 0
	}
	if c.Metrics <= 0 {
		c.Metrics = 2
	}
	if c.Prefix == "" {
		c.Prefix = "telemetry"
	}
	if c.IDPrefix == "" {
		c.IDPrefix = "load-"
	}
	if c.InFlight <= 0 {
		c.InFlight = 64
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Counters == nil {
		c.Counters = new(LoadCounters)
	}
	if c.QoS > 1 {
		return fmt.Errorf("QoS %d is not supported (want 0 or 1)", c.QoS)
	}
	if !validName(c.IDPrefix) {
		return fmt.Errorf("device id prefix %q is outside the charset A-Z a-z 0-9 . _ -", c.IDPrefix)
	}
	return nil
}

// LoadCounters are the live counts of a load run. Its methods are safe for
// concurrent use. Connections add their counts in batches, so a snapshot
// lags by at most a batch per connection.
type LoadCounters struct {
	start           atomic.Int64 // Unix ns
	connected       atomic.Int64
	messages        atomic.Int64
	acked           atomic.Int64
	errs            atomic.Int64
	connectFailures atomic.Int64
	perMessage      atomic.Int64 // readings a message carries
}

// Snapshot returns the counts so far.
func (c *LoadCounters) Snapshot() LoadStats {
	s := LoadStats{
		Connected:       c.connected.Load(),
		Messages:        c.messages.Load(),
		Acks:            c.acked.Load(),
		Errors:          c.errs.Load(),
		ConnectFailures: c.connectFailures.Load(),
	}
	if st := c.start.Load(); st != 0 {
		s.Elapsed = time.Since(time.Unix(0, st))
	}
	s.Readings = s.Messages * c.perMessage.Load()
	s.setRate()
	return s
}

// LoadStats are the results of a load run.
type LoadStats struct {
	// Connected is the number of connections up at the snapshot (zero once
	// RunLoad has returned).
	Connected int64 `json:"connected"`
	// Messages is how many PUBLISH packets were written.
	Messages int64 `json:"messages"`
	// Readings is Messages times the readings each message carries.
	Readings int64 `json:"readings"`
	// Acks is how many QoS 1 publishes were acknowledged.
	Acks int64 `json:"acks"`
	// Errors counts failed connections, writes and unexpected packets.
	Errors int64 `json:"errors"`
	// ConnectFailures is how many connection attempts failed.
	ConnectFailures int64 `json:"connectFailures"`
	// Elapsed is the run's wall time (JSON: elapsedMs).
	Elapsed time.Duration `json:"-"`
	// MessagesPerSecond is Messages over Elapsed.
	MessagesPerSecond float64 `json:"messagesPerSecond"`
	// ReadingsPerSecond is Readings over Elapsed.
	ReadingsPerSecond float64 `json:"readingsPerSecond"`
}

func (s *LoadStats) setRate() {
	if sec := s.Elapsed.Seconds(); sec > 0 {
		s.MessagesPerSecond = float64(s.Messages) / sec
		s.ReadingsPerSecond = float64(s.Readings) / sec
	}
}

// MarshalJSON encodes the stats with Elapsed in milliseconds.
func (s LoadStats) MarshalJSON() ([]byte, error) {
	type plain LoadStats
	return json.Marshal(struct {
		plain
		ElapsedMs float64 `json:"elapsedMs"`
	}{plain(s), durationMs(s.Elapsed)})
}

// Summary formats the stats as a small table.
func (s LoadStats) Summary() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "messages\treadings\tacks\terrors\tconnect failures\telapsed\tmsg/s\treadings/s\t")
	fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%s\t%.0f\t%.0f\t\n",
		s.Messages, s.Readings, s.Acks, s.Errors, s.ConnectFailures, s.Elapsed.Round(time.Millisecond), s.MessagesPerSecond, s.ReadingsPerSecond)
	_ = tw.Flush()
	return b.String()
}

// RunLoad opens cfg.Connections raw MQTT connections (client id = device id
// = IDPrefix+index) and publishes {"ts":..,"temperature":..,"humidity":..}
// on {Prefix}/{device} as fast as possible or at cfg.Rate in total, until
// cfg.Duration passes, each connection has sent cfg.Messages, or ctx ends.
// A connection that fails is reopened with backoff. At the end each
// connection waits briefly for QoS 1 acknowledgements and disconnects.
//
// It returns an error for an invalid config, or when no connection could
// be opened at all.
func RunLoad(ctx context.Context, cfg LoadConfig, log *slog.Logger) (LoadStats, error) {
	if err := cfg.setDefaults(); err != nil {
		return LoadStats{}, fmt.Errorf("configure load: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "simulators.load")
	start := time.Now()
	cfg.Counters.perMessage.Store(int64(cfg.Metrics))
	cfg.Counters.start.Store(start.UnixNano())
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	var (
		wg      sync.WaitGroup
		ok      atomic.Int64
		errMu   sync.Mutex // guards lastErr
		lastErr error
	)
	for i := range cfg.Connections {
		lc := newLoadConn(&cfg, i, log)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := lc.run(ctx); err != nil {
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
	s.setRate()
	log.Info("load done", "messages", s.Messages, "rate", int64(s.MessagesPerSecond), "acks", s.Acks, "errors", s.Errors)
	if ok.Load() == 0 && lastErr != nil {
		return s, fmt.Errorf("publish load to %s: %w", cfg.Addr, lastErr)
	}
	return s, nil
}

// loadPayload builds {"ts":..,"temperature":21.53,"humidity":40.1,...}
// into a reused buffer. Values are scaled integers that wander a little
// around realistic bases, so that building allocates nothing and needs no
// float formatting.
type loadPayload struct {
	keys     [][]byte // `,"temperature":`
	vals     []int64  // scaled by 10^decimals
	lo, hi   []int64
	decimals []int
	rng      uint64 // xorshift64 state, never zero
	buf      []byte
	lastTs   int64 // the previous message's ts
}

// loadMetric describes the fast path's version of a metric.
type loadMetric struct {
	base, spread int64
	decimals     int
}

// loadMetrics are the bases of the first metrics, scaled: 21.53 °C, 40.1 %,
// valve 0/1, vibration 0.050; later metrics are m4.. around 50.00.
var loadMetrics = [...]loadMetric{
	{base: 2153, spread: 300, decimals: 2},
	{base: 401, spread: 100, decimals: 1},
	{base: 0, spread: 1, decimals: 0},
	{base: 50, spread: 40, decimals: 3},
}

func newLoadPayload(metrics int, seed uint64) *loadPayload {
	p := &loadPayload{rng: seed*0x9e3779b97f4a7c15 | 1, buf: make([]byte, 0, 32+24*metrics)}
	for i := range metrics {
		m := loadMetric{base: 5000, spread: 500, decimals: 2}
		if i < len(loadMetrics) {
			m = loadMetrics[i]
		}
		p.keys = append(p.keys, []byte(`,"`+MetricName(i)+`":`))
		p.vals = append(p.vals, m.base)
		p.lo = append(p.lo, m.base-m.spread)
		p.hi = append(p.hi, m.base+m.spread)
		p.decimals = append(p.decimals, m.decimals)
	}
	for i := range p.lo {
		p.lo[i] = max(p.lo[i], 0)
	}
	return p
}

// build returns the payload for reading time tsMs; the slice is reused by
// the next call.
func (p *loadPayload) build(tsMs int64) []byte {
	// Times strictly increase per device, as a real sensor's do, so that a
	// viewer can tell a duplicate delivery from two readings that happen to
	// share a millisecond and a value. Above 1,000 messages/s per device
	// this runs ahead of the clock.
	if tsMs <= p.lastTs {
		tsMs = p.lastTs + 1
	}
	p.lastTs = tsMs
	b := append(p.buf[:0], `{"ts":`...)
	b = strconv.AppendInt(b, tsMs, 10)
	for i, k := range p.keys {
		// xorshift64: each value steps -1, 0 or +1 unit, within its range.
		p.rng ^= p.rng << 13
		p.rng ^= p.rng >> 7
		p.rng ^= p.rng << 17
		v := p.vals[i] + int64(p.rng%3) - 1
		v = min(max(v, p.lo[i]), p.hi[i])
		p.vals[i] = v
		b = append(b, k...)
		b = appendScaled(b, v, p.decimals[i])
	}
	b = append(b, '}')
	p.buf = b
	return b
}

// loadConn is one publishing connection, owned by its goroutine.
type loadConn struct {
	cfg     *LoadConfig
	i       int
	id      string
	topic   []byte
	payload *loadPayload
	log     *slog.Logger

	// Counts not yet added to cfg.Counters; flushed per batch so that
	// connections do not contend on shared cache lines per message.
	sent, errs int64
	ackedSeen  int64 // the client's acked count already added
}

func newLoadConn(cfg *LoadConfig, i int, log *slog.Logger) *loadConn {
	id := DeviceID(cfg.IDPrefix, i, cfg.Connections)
	return &loadConn{
		cfg:     cfg,
		i:       i,
		id:      id,
		topic:   []byte(cfg.Prefix + "/" + id),
		payload: newLoadPayload(cfg.Metrics, uint64(i)+1),
		log:     log,
	}
}

// loadBatch is how many messages a connection writes between checks of
// its context and flushes of its counters.
const loadBatch = 64

// loadWriteTimeout bounds one blocked write, so that a broker that stops
// reading ends the run instead of hanging it.
const loadWriteTimeout = 10 * time.Second

// run publishes until ctx ends or the budget is spent, reconnecting after
// failures. It returns an error only if it never connected.
func (l *loadConn) run(ctx context.Context) error {
	cfg := l.cfg
	counters := cfg.Counters
	remaining := cfg.Messages
	backoff := 100 * time.Millisecond
	everConnected := false
	var lastErr error
	for ctx.Err() == nil && (cfg.Messages <= 0 || remaining > 0) {
		o := rawOptions{
			clientID:         l.id,
			keepAlive:        cfg.KeepAlive,
			qos:              cfg.QoS,
			inFlight:         cfg.InFlight,
			writeBufferBytes: 64 << 10,
			sendBufferBytes:  64 << 10,
		}
		if cfg.Credentials != nil {
			o.username, o.password = cfg.Credentials(l.i)
			o.hasUser, o.hasPass = true, true
		}
		c, err := dialRaw(ctx, cfg.Addr, o)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			lastErr = err
			counters.connectFailures.Add(1)
			l.log.Debug("connect failed", "device", l.id, "err", err)
			if !sleepCtx(ctx, backoff) {
				break
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		everConnected = true
		backoff = 100 * time.Millisecond
		counters.connected.Add(1)
		go c.readLoop()
		l.ackedSeen = 0
		sent, err := l.publish(ctx, c, remaining)
		remaining -= sent
		if cerr := c.close(2 * time.Second); err == nil && cerr != nil {
			err = cerr
		}
		counters.connected.Add(-1)
		l.flushCounters(c)
		l.errs += c.unexpected.Load()
		if err != nil && !errors.Is(err, errStopped) && ctx.Err() == nil {
			lastErr = err
			l.errs++
			l.log.Debug("connection failed", "device", l.id, "err", err)
		}
		counters.errs.Add(l.errs)
		l.errs = 0
	}
	if !everConnected && lastErr != nil {
		return lastErr
	}
	return nil
}

// flushCounters adds the connection's unreported counts to cfg.Counters.
func (l *loadConn) flushCounters(c *rawClient) {
	counters := l.cfg.Counters
	if l.sent > 0 {
		counters.messages.Add(l.sent)
		l.sent = 0
	}
	if a := c.acked.Load(); a > l.ackedSeen {
		counters.acked.Add(a - l.ackedSeen)
		l.ackedSeen = a
	}
}

// publish writes messages on c until ctx ends, budget (when cfg.Messages >
// 0) is spent or the connection fails, and returns how many it wrote.
func (l *loadConn) publish(ctx context.Context, c *rawClient, budget int) (int, error) {
	cfg := l.cfg
	limited := cfg.Messages > 0
	done := ctx.Done()
	total := 0
	if cfg.Rate <= 0 {
		for !limited || total < budget {
			select {
			case <-done:
				return total, nil
			default:
			}
			_ = c.conn.SetWriteDeadline(time.Now().Add(loadWriteTimeout))
			n := loadBatch
			if limited {
				n = min(n, budget-total)
			}
			for range n {
				if err := c.publish(l.topic, l.payload.build(cfg.Now().UnixMilli()), done); err != nil {
					return total, err
				}
				total++
				l.sent++
			}
			l.flushCounters(c)
		}
		return total, nil
	}

	// Token bucket: tokens accrue at the connection's share of the rate,
	// up to 20 ms worth, and the connection sleeps until that batch is
	// there: a timer wake-up per message, times a thousand connections,
	// would cost the generator more than the publishing.
	perConn := cfg.Rate / float64(cfg.Connections)
	burst := max(1, perConn/50)
	want := math.Floor(burst)
	tokens := 1.0
	last := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for !limited || total < budget {
		now := time.Now()
		tokens = min(burst, tokens+now.Sub(last).Seconds()*perConn)
		last = now
		n := int(tokens)
		if tokens < want {
			if err := c.flush(); err != nil {
				return total, err
			}
			l.flushCounters(c)
			if err := c.idle(now); err != nil {
				return total, err
			}
			wait := max(time.Duration((want-tokens)/perConn*float64(time.Second)), 500*time.Microsecond)
			timer.Reset(wait)
			select {
			case <-done:
				return total, nil
			case <-c.readDone:
				return total, fmt.Errorf("read: %w", c.readErr)
			case <-timer.C:
			}
			continue
		}
		if limited {
			n = min(n, budget-total)
		}
		tokens -= float64(n)
		_ = c.conn.SetWriteDeadline(now.Add(loadWriteTimeout))
		for range n {
			if err := c.publish(l.topic, l.payload.build(cfg.Now().UnixMilli()), done); err != nil {
				return total, err
			}
			total++
			l.sent++
		}
	}
	return total, nil
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
