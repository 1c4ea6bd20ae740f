package ingest

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telegauge/telegauge/ingest/rollup"
	"github.com/telegauge/telegauge/ingest/store"
)

// Appender is where the aggregator flushes closed and open buckets; a
// store.Store is one.
type Appender interface {
	// Append merges the batch into history. See store.Store.
	Append(ctx context.Context, b store.Batch) error
}

// Config configures an Aggregator. Zero values mean the documented defaults.
type Config struct {
	Decode DecodeConfig `yaml:",inline"`
	// Shards is the number of independent shards (each a goroutine owning
	// a share of the devices). Zero means GOMAXPROCS.
	Shards int `yaml:"shards"`
	// QueueMessages bounds each shard's queue of undecoded messages. Zero
	// means 65,536.
	QueueMessages int `yaml:"queue-messages"`
	// QueueBytes bounds each shard's queued payload bytes. Zero means 64 MiB.
	QueueBytes int `yaml:"queue-bytes"`
	// MaxWait bounds how long OfferWait (QoS 1) waits for queue space.
	// Zero means 5 s.
	MaxWait time.Duration `yaml:"max-wait"`
	// MaxSeriesPerDevice caps the series of one device. Zero means 1,000.
	MaxSeriesPerDevice int `yaml:"max-series-per-device"`
	// MaxSeries caps the series of the whole server. Zero means 1,000,000.
	MaxSeries int `yaml:"max-series"`
	// MaxDevices caps the devices tracked. Zero means 100,000.
	MaxDevices int `yaml:"max-devices"`
	// RawPoints is how many recent raw readings are kept per series. Zero
	// means 256; negative keeps none.
	RawPoints int `yaml:"raw-points"`
	// FlushInterval is how often pending buckets are written to the store.
	// It bounds what a crash can lose. Zero means 1 s.
	FlushInterval time.Duration `yaml:"flush-interval"`

	// Store receives flushed buckets. Required.
	Store Appender `yaml:"-"`
	// OnReadings is called after each batch with the readings it accepted,
	// from the shard's goroutine. It must not block and must not keep the
	// slice. May be nil.
	OnReadings func([]Reading) `yaml:"-"`
	// Clock is the time source; nil means the real clock.
	Clock clockwork.Clock `yaml:"-"`
	// Registerer receives the aggregator's metrics; nil means none.
	Registerer prometheus.Registerer `yaml:"-"`
}

// Aggregator turns queued MQTT messages into readings, rollups and live
// updates. Devices are hashed onto shards; each shard's goroutine is the only
// writer of its series and devices, so the hot path takes no global lock.
//
// Offer and OfferWait are safe for concurrent use and never block on a
// viewer; the query methods are safe for concurrent use.
type Aggregator struct {
	cfg     Config
	log     *slog.Logger
	prefix  string
	seed    maphash.Seed
	shards  []*shard
	metrics *metrics
}

// New validates cfg and returns an Aggregator; Run starts it.
func New(cfg Config, log *slog.Logger) (*Aggregator, error) {
	if cfg.Store == nil {
		return nil, errors.New("ingest: Config.Store is required")
	}
	cfg.Decode.setDefaults()
	if strings.ContainsAny(cfg.Decode.Prefix, "/+#") {
		return nil, fmt.Errorf("ingest: topic prefix %q must be one level without wildcards", cfg.Decode.Prefix)
	}
	if cfg.Shards <= 0 {
		cfg.Shards = runtime.GOMAXPROCS(0)
	}
	if cfg.QueueMessages <= 0 {
		cfg.QueueMessages = 1 << 16
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = 64 << 20
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 5 * time.Second
	}
	if cfg.MaxSeriesPerDevice <= 0 {
		cfg.MaxSeriesPerDevice = 1000
	}
	if cfg.MaxSeries <= 0 {
		cfg.MaxSeries = 1_000_000
	}
	if cfg.MaxDevices <= 0 {
		cfg.MaxDevices = 100_000
	}
	if cfg.RawPoints == 0 {
		cfg.RawPoints = 256
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Aggregator{
		cfg:    cfg,
		log:    log.With("component", "ingest"),
		prefix: cfg.Decode.Prefix + "/",
		seed:   maphash.MakeSeed(),
	}
	a.metrics = newMetrics(a)
	if cfg.Registerer != nil {
		if err := a.metrics.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("ingest: register metrics: %w", err)
		}
	}
	a.shards = make([]*shard, cfg.Shards)
	for i := range a.shards {
		a.shards[i] = newShard(i, a)
	}
	return a, nil
}

// Prefix returns the telemetry topic prefix, without the trailing '/'.
func (a *Aggregator) Prefix() string { return a.cfg.Decode.Prefix }

// shardFor picks the shard of the device a topic or series names.
func (a *Aggregator) shardFor(device string) *shard {
	if len(a.shards) == 1 {
		return a.shards[0]
	}
	return a.shards[maphash.String(a.seed, device)%uint64(len(a.shards))]
}

// topicDevice returns the device level of a telemetry topic, or the whole
// remainder when the topic is malformed (the decoder then rejects it).
func (a *Aggregator) topicDevice(topic string) string {
	rest := strings.TrimPrefix(topic, a.prefix)
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[:i]
	}
	return rest
}

// Offer queues one publish for decoding without blocking. It returns false
// when the device's shard is full (or the aggregator has stopped); the
// refusal is counted against the device as an overload rejection.
func (a *Aggregator) Offer(topic string, payload []byte, at time.Time) bool {
	dev := a.topicDevice(topic)
	ok := a.shardFor(dev).q.push(message{topic: topic, payload: payload, atMs: at.UnixMilli()}, dev)
	if ok {
		a.metrics.messages.Inc()
	}
	return ok
}

// OfferWait is Offer for QoS 1 publishes: when the shard is full it waits up
// to Config.MaxWait for space, which holds up the publishing connection and
// so reaches the device as MQTT flow control. It returns false when the wait
// ends without space, or ctx ends.
func (a *Aggregator) OfferWait(ctx context.Context, topic string, payload []byte, at time.Time) bool {
	dev := a.topicDevice(topic)
	ok := a.shardFor(dev).q.pushWait(ctx, a.cfg.Clock, message{topic: topic, payload: payload, atMs: at.UnixMilli()}, dev, a.cfg.MaxWait)
	if ok {
		a.metrics.messages.Inc()
	}
	return ok
}

// Run processes queued messages and flushes buckets until ctx ends. Then it
// refuses further offers, drains what was queued, makes a final flush and
// returns. Stop the broker before cancelling ctx so nothing is refused in
// between.
func (a *Aggregator) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(a.shards))
	for i, s := range a.shards {
		wg.Go(func() { errs[i] = s.run(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// SetPresence records that a device went online or offline at a time. It
// is called by the broker's presence tracking.
func (a *Aggregator) SetPresence(device string, online bool, at time.Time) {
	if !ValidName(device) {
		return
	}
	a.shardFor(device).setPresence(device, online, at.UnixMilli())
}

// DeviceInfo is what the API shows of one device.
type DeviceInfo struct {
	ID               string
	Online           bool
	LastSeenMs       int64 // Unix ms of the latest message or connection; 0 if never
	Metrics          []string
	Rate             float64 // accepted readings per second over the last 10 s
	Rejected         uint64
	RejectedByReason map[string]uint64
}

// Devices returns every known device, sorted by id.
func (a *Aggregator) Devices() []DeviceInfo {
	nowMs := a.cfg.Clock.Now().UnixMilli()
	var out []DeviceInfo
	for _, s := range a.shards {
		out = s.appendDevices(out, nowMs)
	}
	slices.SortFunc(out, func(x, y DeviceInfo) int { return strings.Compare(x.ID, y.ID) })
	return out
}

// SeriesIDs returns every known series id, sorted.
func (a *Aggregator) SeriesIDs() []string {
	var out []string
	for _, s := range a.shards {
		out = s.appendSeriesIDs(out)
	}
	slices.Sort(out)
	return out
}

// HasSeries reports whether the series has been seen since start.
func (a *Aggregator) HasSeries(id string) bool {
	s := a.shardFor(SeriesDevice(id))
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.series[id]
	return ok
}

// UnflushedBucket is a bucket not yet known to be in the store, with the
// sequence number of the batch that carries (or will carry) it.
type UnflushedBucket struct {
	Seq uint64
	rollup.Bucket
}

// Unflushed is a series' buckets that the store may not have yet.
type Unflushed struct {
	Writer  int // the store.Batch writer id of the shard
	Buckets []UnflushedBucket
}

// Unflushed returns the series' buckets at tier with StartMs in [fromMs,
// toMs) that are pending or in flight to the store. Add the ones whose Seq
// is above the writer's watermark in a store.Selection read after this call
// to get every reading exactly once.
func (a *Aggregator) Unflushed(series string, tier rollup.Tier, fromMs, toMs int64) Unflushed {
	return a.shardFor(SeriesDevice(series)).unflushed(series, tier, fromMs, toMs)
}

// Recent returns the series' most recent raw readings with TimeMs in
// [fromMs, toMs), sorted by time.
func (a *Aggregator) Recent(series string, fromMs, toMs int64) []Reading {
	return a.shardFor(SeriesDevice(series)).recent(series, fromMs, toMs)
}

// Flush processes what is queued and writes every pending bucket to the
// store now. It is for tests and tools; the shards flush on their own every
// FlushInterval.
// It needs Run to be running.
func (a *Aggregator) Flush(ctx context.Context) error {
	var errs []error
	for _, s := range a.shards {
		done := make(chan error, 1)
		select {
		case s.flushReq <- done:
		case <-ctx.Done():
			return fmt.Errorf("flush: %w", ctx.Err())
		}
		select {
		case err := <-done:
			errs = append(errs, err)
		case <-ctx.Done():
			return fmt.Errorf("flush: %w", ctx.Err())
		}
	}
	return errors.Join(errs...)
}
