package ingest

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	// Shards is the number of independently locked shards the devices are
	// hashed onto. Zero means 4 per GOMAXPROCS, so that publishers on
	// different cores rarely meet on one lock.
	Shards int `yaml:"shards"`
	// MaxSeriesPerDevice caps the series of one device. Zero means 1,000.
	MaxSeriesPerDevice int `yaml:"max-series-per-device"`
	// MaxSeries caps the series of the whole server. Zero means 1,000,000.
	MaxSeries int `yaml:"max-series"`
	// MaxDevices caps the devices tracked. Zero means 100,000.
	MaxDevices int `yaml:"max-devices"`
	// MaxRatePerDevice is the readings per second one device may send
	// over time: a token bucket per device, refilled at this rate by the
	// publishes' arrival times, holding at most MaxBurstPerDevice. A device
	// over it is slowed, not refused: its readings are accepted, and Offer
	// holds the publishing connection (up to a second per publish) until
	// the bucket has refilled, so that the device's next packets are read
	// at this rate (limits.go). Zero means 1,000; negative means no limit.
	MaxRatePerDevice float64 `yaml:"max-rate-per-device"`
	// MaxBurstPerDevice is the size of that bucket: how many readings a
	// device that has been quiet may send at once, unslowed (a device
	// replaying its offline buffer, say). Zero means ten seconds' worth of
	// MaxRatePerDevice; it is at least 1.
	MaxBurstPerDevice int `yaml:"max-burst-per-device"`
	// RawPoints is how many recent raw readings are kept per series. Zero
	// means 256; negative keeps none.
	RawPoints int `yaml:"raw-points"`
	// FlushInterval is how often pending buckets are written to the store.
	// It bounds what a crash can lose. Zero means 1 s.
	FlushInterval time.Duration `yaml:"flush-interval"`
	// MaxLiveReadings bounds, per shard, the accepted readings waiting for
	// the live hub to take them (DrainReadings). Beyond it the oldest are
	// dropped from the live stream, which is then told of a gap; history
	// keeps them. Zero means 1,048,576.
	MaxLiveReadings int `yaml:"max-live-readings"`

	// Store receives flushed buckets. Required.
	Store Appender `yaml:"-"`
	// Notify is called when accepted readings start waiting to be taken
	// with DrainReadings (not once per reading: once each time a shard's
	// waiting list goes from empty to not empty). It is called on the
	// publishing goroutine with no lock held and must not block. May be nil.
	Notify func() `yaml:"-"`
	// Clock is the time source; nil means the real clock.
	Clock clockwork.Clock `yaml:"-"`
	// Sleep, when set, is called by Offer, with no lock held, to hold a
	// publishing connection whose device is over MaxRatePerDevice, instead
	// of waiting on Clock (tests record the waits). Nil means a wait on
	// Clock that ends early when throttling stops (StopThrottling, or Run
	// returning). It is not called once throttling has stopped.
	Sleep func(time.Duration) `yaml:"-"`
	// Registerer receives the aggregator's metrics; nil means none.
	Registerer prometheus.Registerer `yaml:"-"`
}

// Aggregator turns MQTT publishes into readings, rollups and live updates.
// Devices are hashed onto shards; each shard's state has its own mutex, and
// a publish is decoded outside any lock, then folded into its shard in one
// short critical section, on the publishing connection's own goroutine.
//
// NOTE(lead): an earlier design queued raw publishes for one consumer
// goroutine per shard. Under saturation on one core (1,000 connections
// publishing as fast as they could), the consumer got a sliver of the CPU
// while producers read and dropped: ingest fell to about 20,000 messages/s
// with the rest counted as overload. Doing the work where the message is
// read makes the cost of a publish land on the connection that sent it, so
// a saturated server reads sockets more slowly (TCP backpressure reaches
// the device) instead of dropping.
//
// All methods are safe for concurrent use.
type Aggregator struct {
	cfg      Config
	log      *slog.Logger
	prefix   string
	seed     maphash.Seed
	shards   []*shard
	metrics  *metrics
	decoders sync.Pool // *Decoder: decoding needs scratch space, not a lock
	stopped  atomic.Bool
	flushMu  sync.Mutex // serialises flushes (ticker and Flush), across the store write
	limitLog logBudget  // lines about devices over their limits

	// unthrottled is closed by StopThrottling: it ends the waits of the
	// publishes held for their device's rate.
	unthrottled    chan struct{}
	unthrottleOnce sync.Once
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
		cfg.Shards = 4 * runtime.GOMAXPROCS(0)
	}
	if cfg.MaxLiveReadings <= 0 {
		cfg.MaxLiveReadings = 1 << 20
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
	if cfg.MaxRatePerDevice == 0 {
		cfg.MaxRatePerDevice = 1000
	}
	if cfg.MaxBurstPerDevice <= 0 {
		cfg.MaxBurstPerDevice = max(1, int(math.Min(10*cfg.MaxRatePerDevice, math.MaxInt32)))
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

		unthrottled: make(chan struct{}),
	}
	a.metrics = newMetrics(a)
	if cfg.Registerer != nil {
		if err := a.metrics.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("ingest: register metrics: %w", err)
		}
	}
	decodeCfg := cfg.Decode
	a.decoders.New = func() any { return NewDecoder(decodeCfg) }
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

// Offer decodes one publish and folds what it accepts into its device's
// shard, on the caller's goroutine; it does not wait for anything but that
// shard's lock, except when the device is over MaxRatePerDevice: then,
// after releasing the lock, it holds the caller for up to a second (see
// limits.go), which is how the broker, calling it on the device's
// connection goroutine, slows the device down. It returns false only once
// the aggregator has stopped (Run returned), counting the message against
// its device as an overload rejection.
func (a *Aggregator) Offer(topic string, payload []byte, at time.Time) bool {
	atMs := at.UnixMilli()
	dec := a.decoders.Get().(*Decoder)
	d := dec.Decode(topic, payload, atMs)
	s := a.shardFor(d.Device)
	ok := !a.stopped.Load()
	var wait time.Duration
	if ok {
		wait = s.apply(&d, atMs)
	} else {
		s.refuse(d.Device)
	}
	a.decoders.Put(dec)
	if wait > 0 {
		a.throttle(wait)
	}
	return ok
}

// DrainReadings appends every accepted reading not yet taken to dst and
// returns it, with the range of reading times dropped from the live stream
// because they were not taken in time (nil if none). The live hub calls it
// once per frame after Config.Notify.
func (a *Aggregator) DrainReadings(dst []Reading) ([]Reading, *LiveGap) {
	// Every shard is locked (in index order, the only order in which more
	// than one shard lock is ever held) while the readings are counted and
	// copied, so dst grows once, to the exact size: under load this copy is
	// the hub's biggest memory traffic, and regrowing made it several times
	// larger. The locks are held for one copy, microseconds.
	for _, s := range a.shards {
		s.mu.Lock()
	}
	n := 0
	for _, s := range a.shards {
		n += len(s.live)
	}
	dst = slices.Grow(dst, n)
	var gap *LiveGap
	for _, s := range a.shards {
		dst = append(dst, s.live...)
		clear(s.live) // drop the series references for the GC
		s.live = s.live[:0]
		if g := s.liveGap; g != nil {
			if gap == nil {
				gap = g
			} else {
				gap.FromMs, gap.ToMs = min(gap.FromMs, g.FromMs), max(gap.ToMs, g.ToMs)
			}
			s.liveGap = nil
		}
	}
	for _, s := range slices.Backward(a.shards) {
		s.mu.Unlock()
	}
	return dst, gap
}

// LiveGap is a range of reading times, Unix ms inclusive, of accepted
// readings dropped from the live stream (they are in history).
type LiveGap struct {
	FromMs, ToMs int64
}

// flushTimeout bounds one periodic flush, so that a store that stopped
// answering cannot hold up shutdown for long.
const flushTimeout = 30 * time.Second

// Run flushes pending buckets every FlushInterval until ctx ends, then
// refuses further publishes and makes a final flush. Stop the broker before
// cancelling ctx so nothing is refused in between.
func (a *Aggregator) Run(ctx context.Context) error {
	tick := a.cfg.Clock.NewTicker(a.cfg.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.Chan():
			// Not cancelled by shutdown: a flush cut short would be retried
			// by the final one, but log a failure on the way.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
			_ = a.Flush(fctx)
			cancel()
		case <-ctx.Done():
			a.stopped.Store(true)
			a.StopThrottling()
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return a.Flush(fctx)
		}
	}
}

// SetPresence records that a device went online or offline at a time. It
// is called by the broker's presence tracking.
func (a *Aggregator) SetPresence(device string, online bool, at time.Time) {
	if !ValidName(device) {
		return
	}
	a.shardFor(device).setPresence(device, online, at.UnixMilli())
}

// RestoredDevice is a device known from history.
type RestoredDevice struct {
	ID          string
	FirstSeenMs int64
	LastSeenMs  int64
}

// Restore re-creates, idle and offline, the devices and series a previous
// run knew (from the history store), so that after a restart they are
// listed and queryable before they publish again. Limits apply as for new
// ones. It returns how many series it created.
func (a *Aggregator) Restore(devices []RestoredDevice, series []string) int {
	byShard := make(map[*shard][]string)
	for _, id := range series {
		s := a.shardFor(SeriesDevice(id))
		byShard[s] = append(byShard[s], id)
	}
	devByShard := make(map[*shard][]RestoredDevice)
	for _, d := range devices {
		s := a.shardFor(d.ID)
		devByShard[s] = append(devByShard[s], d)
	}
	n := 0
	for _, s := range a.shards {
		n += s.restore(devByShard[s], byShard[s])
	}
	return n
}

// DeviceInfo is what the API shows of one device.
type DeviceInfo struct {
	ID               string
	Online           bool
	FirstSeenMs      int64 // Unix ms of the first message or connection known; 0 if never
	LastSeenMs       int64 // Unix ms of the latest message or connection; 0 if never
	Metrics          []string
	Rate             float64       // accepted readings per second over the last 10 s
	Throttled        time.Duration // how long its publishes were held for going over MaxRatePerDevice
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

// Flush writes every pending bucket to the store now, shard by shard. The
// shards also flush on their own every FlushInterval while Run runs.
func (a *Aggregator) Flush(ctx context.Context) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	var errs []error
	for _, s := range a.shards {
		if err := s.flush(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
