package ingest

import (
	"context"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/telegauge/telegauge/ingest/rollup"
	"github.com/telegauge/telegauge/ingest/store"
)

// shard owns a share of the devices and their series. Publishes for its
// devices are folded in under mu by whichever goroutine read them; queries
// and the flush read under the same mu.
type shard struct {
	id int
	a  *Aggregator

	mu       sync.Mutex // guards the fields below
	series   map[string]*series
	devices  map[string]*device
	dirty    []*series     // series with pending buckets
	inflight []store.Batch // flushed to the store, not yet acknowledged, in Seq order
	seq      uint64        // Seq of the latest batch made
	live     []Reading     // accepted readings not yet taken by DrainReadings
	liveGap  *LiveGap      // readings dropped from live because live was full
	accepted uint64
	rejected [NumReasons]uint64
	// throttled counts the publishes held for their device's rate, and
	// throttledWait the time they were asked to wait.
	throttled     uint64
	throttledWait time.Duration
	liveDrop      uint64
	lastWarn      time.Time
}

// series is one series' live state: its buckets since the last flush and
// its recent raw readings.
type series struct {
	id      string
	dev     *device
	pending [rollup.NumTiers][]rollup.Bucket // deltas since the last flush; few, unsorted
	dirty   bool                             // listed in shard.dirty
	raw     []rawPoint                       // ring of recent readings
	rawNext int                              // next slot of raw to overwrite once full
}

// rawPoint is a recent reading as a series keeps it: no series id, so no
// pointer for the garbage collector to follow in a ring of thousands.
type rawPoint struct {
	tMs int64
	v   float64
}

// device is one device's state: presence, activity, rejections and rate.
type device struct {
	id          string
	online      bool
	firstSeenMs int64
	lastSeenMs  int64
	metrics     []string // sorted
	rejected    [NumReasons]uint64
	// rate counts accepted readings per second in a ring of rateSlots
	// seconds; rateSec[i] says which second slot i holds.
	rate    [rateSlots]uint32
	rateSec [rateSlots]int64
	// tokens is the readings the device may still send now, negative when
	// it is in debt (see spend), as of tokensMs; tokensMs 0 means a full
	// bucket.
	tokens   float64
	tokensMs int64
	// throttled is the time its publishes were held for its rate.
	throttled time.Duration
	// limitLogMs is when the device was last named in a warning about each
	// limit; limitN counts what happened since (readings rejected, or
	// publishes held) and limitWait how long those publishes were held.
	limitLogMs [numLimits]int64
	limitN     [numLimits]uint64
	limitWait  time.Duration
}

// rateSlots is one more than the 10 s rate window so the second in progress
// never counts.
const rateSlots = 11

func newShard(id int, a *Aggregator) *shard {
	return &shard{
		id:      id,
		a:       a,
		series:  make(map[string]*series),
		devices: make(map[string]*device),
	}
}

// apply folds one decoded message, which arrived at atMs, into the shard.
// It returns how long the publishing connection should be held because the
// device is over its rate (see spend); the caller waits after releasing
// every lock.
func (s *shard) apply(d *Decoded, atMs int64) (wait time.Duration) {
	if len(d.Rejects) > 0 && s.a.log.Enabled(context.Background(), slog.LevelDebug) {
		for i := range d.Rejects {
			s.a.log.Debug("reading rejected", "device", d.Device, "err", &d.Rejects[i])
		}
	}
	nowSec := atMs / 1000
	s.mu.Lock()
	var dev *device
	if d.Device != "" {
		dev = s.deviceLocked(d.Device)
		if dev != nil {
			dev.seen(atMs)
		}
	}
	for i := range d.Rejects {
		r := d.Rejects[i].Reason
		s.rejected[r]++
		if dev != nil {
			dev.rejected[r]++
		}
	}
	wasEmpty := len(s.live) == 0
	accepted, tooMany := 0, 0
	for _, r := range d.Readings {
		ser := s.series[r.Series]
		if ser == nil {
			var reason Reason
			if ser, reason = s.newSeriesLocked(r.Series); ser == nil {
				s.rejected[reason]++
				if dev != nil {
					dev.rejected[reason]++
				}
				tooMany++
				continue
			}
		}
		s.addLocked(ser, r)
		ser.dev.count(nowSec)
		accepted++
		s.pushLiveLocked(Reading{Series: ser.id, TimeMs: r.TimeMs, Value: r.Value})
	}
	s.accepted += uint64(accepted)
	// Only accepted readings spend the rate, all of the publish's at once.
	// A reading's series belongs to the topic's device, so dev is not nil
	// when any was accepted.
	if rate := s.a.cfg.MaxRatePerDevice; rate > 0 && accepted > 0 && dev != nil {
		wait = dev.spend(atMs, accepted, rate, s.a.cfg.MaxBurstPerDevice)
	}
	notify := wasEmpty && len(s.live) > 0
	var hits [numLimits]limitHit
	var logHit [numLimits]bool
	if tooMany > 0 {
		hits[limitSeries], logHit[limitSeries] = s.noteLimitLocked(dev, limitSeries, tooMany, 0, atMs)
	}
	if wait > 0 {
		s.throttled++
		s.throttledWait += wait
		dev.throttled += wait
		hits[limitRate], logHit[limitRate] = s.noteLimitLocked(dev, limitRate, 1, wait, atMs)
	}
	s.mu.Unlock()
	for i := range hits {
		if logHit[i] {
			s.a.logLimit(d.Device, hits[i])
		}
	}
	if notify && s.a.cfg.Notify != nil {
		s.a.cfg.Notify()
	}
	return wait
}

// pushLiveLocked queues a reading for the live hub. When the hub has not
// taken the shard's readings for so long that MaxLiveReadings are waiting,
// the oldest half is dropped from the live stream (history keeps it) and
// remembered as a gap, so viewers are told to backfill rather than silently
// miss it. The caller must hold s.mu.
func (s *shard) pushLiveLocked(r Reading) {
	if len(s.live) >= s.a.cfg.MaxLiveReadings {
		n := len(s.live) / 2
		for _, old := range s.live[:n] {
			if s.liveGap == nil {
				s.liveGap = &LiveGap{FromMs: old.TimeMs, ToMs: old.TimeMs}
			}
			s.liveGap.FromMs = min(s.liveGap.FromMs, old.TimeMs)
			s.liveGap.ToMs = max(s.liveGap.ToMs, old.TimeMs)
		}
		s.live = append(s.live[:0], s.live[n:]...)
		s.liveDrop += uint64(n)
		s.warnLiveDropLocked(n)
	}
	s.live = append(s.live, r)
}

// refuse counts a publish that arrived after the aggregator stopped.
func (s *shard) refuse(device string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejected[ReasonOverload]++
	if d := s.deviceLocked(device); d != nil {
		d.rejected[ReasonOverload]++
	}
}

// warnLiveDropLocked logs dropped live readings at most every 10 s per
// shard, so an overload is visible without flooding the log. The caller
// must hold s.mu.
func (s *shard) warnLiveDropLocked(n int) {
	now := s.a.cfg.Clock.Now()
	if now.Sub(s.lastWarn) < 10*time.Second {
		return
	}
	s.lastWarn = now
	s.a.log.Warn("live hub fell behind: readings dropped from live streams (history keeps them; viewers get a gap)", "shard", s.id, "dropped", n)
}

// deviceLocked returns the device's state, creating it if there is room.
// It returns nil for an unattributable ("") or over-limit device. The caller
// must hold s.mu.
func (s *shard) deviceLocked(id string) *device {
	if id == "" {
		return nil
	}
	if d := s.devices[id]; d != nil {
		return d
	}
	if !ValidName(id) || !reserve(&s.a.metrics.devices, s.a.cfg.MaxDevices) {
		return nil
	}
	d := &device{id: id}
	s.devices[id] = d
	return d
}

// reserve adds one to n unless that would take it over limit. Shards create
// devices and series concurrently, so a load-then-add would let several
// pass the last free slot at once.
func reserve(n *atomic.Int64, limit int) bool {
	for {
		cur := n.Load()
		if cur >= int64(limit) {
			return false
		}
		if n.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

// newSeriesLocked creates a series if its device and the server are below
// their limits; otherwise it returns the reason for refusing. The caller
// must hold s.mu.
func (s *shard) newSeriesLocked(id string) (*series, Reason) {
	dev := s.deviceLocked(SeriesDevice(id))
	if dev == nil || len(dev.metrics) >= s.a.cfg.MaxSeriesPerDevice ||
		!reserve(&s.a.metrics.series, s.a.cfg.MaxSeries) {
		return nil, ReasonTooManySeries
	}
	return s.insertSeriesLocked(id, dev), 0
}

// insertSeriesLocked adds a series of dev, its slot under MaxSeries
// already reserved. The caller must hold s.mu.
func (s *shard) insertSeriesLocked(id string, dev *device) *series {
	ser := &series{id: id, dev: dev}
	s.series[id] = ser
	metric := id[len(dev.id)+1:]
	i, _ := slices.BinarySearch(dev.metrics, metric)
	dev.metrics = slices.Insert(dev.metrics, i, metric)
	return ser
}

// addLocked folds a reading into the series' pending buckets and marks
// the series for the next flush. The caller must hold s.mu.
func (s *shard) addLocked(ser *series, r Reading) {
	ser.add(r, s.a.cfg.RawPoints)
	if !ser.dirty {
		ser.dirty = true
		s.dirty = append(s.dirty, ser)
	}
}

// add folds a reading into the series' pending bucket of every tier.
func (ser *series) add(r Reading, rawCap int) {
	for t := range rollup.NumTiers {
		start := rollup.Floor(r.TimeMs, rollup.Tier(t).StepMs())
		p := ser.pending[t]
		i := len(p) - 1
		for ; i >= 0 && p[i].StartMs != start; i-- {
		}
		if i < 0 {
			p = append(p, rollup.Bucket{StartMs: start})
			i = len(p) - 1
			ser.pending[t] = p
		}
		p[i].Add(r.TimeMs, r.Value)
	}
	ser.addRaw(r, rawCap)
}

// addRaw keeps a reading among the series' recent raw readings only.
func (ser *series) addRaw(r Reading, rawCap int) {
	if rawCap <= 0 {
		return
	}
	rp := rawPoint{tMs: r.TimeMs, v: r.Value}
	if len(ser.raw) < rawCap {
		ser.raw = append(ser.raw, rp)
	} else {
		ser.raw[ser.rawNext] = rp
		ser.rawNext = (ser.rawNext + 1) % rawCap
	}
}

// seen records activity of the device at atMs.
func (d *device) seen(atMs int64) {
	if d.firstSeenMs == 0 || atMs < d.firstSeenMs {
		d.firstSeenMs = atMs
	}
	d.lastSeenMs = max(d.lastSeenMs, atMs)
}

// count adds one accepted reading to the device's rate window.
func (d *device) count(nowSec int64) {
	i := nowSec % rateSlots
	if d.rateSec[i] != nowSec {
		d.rateSec[i], d.rate[i] = nowSec, 0
	}
	d.rate[i]++
}

// rateAt returns accepted readings per second over the 10 whole seconds
// before nowSec.
func (d *device) rateAt(nowSec int64) float64 {
	var n uint32
	for i := range rateSlots {
		if sec := d.rateSec[i]; sec < nowSec && sec >= nowSec-(rateSlots-1) {
			n += d.rate[i]
		}
	}
	return float64(n) / (rateSlots - 1)
}

// flush hands every pending bucket to the store as one batch, then retries
// any earlier batch the store refused. Batches go in Seq order and stop at
// the first failure, because the store ignores a Seq at or below its
// watermark: a later batch landing first would make an earlier one look
// applied.
func (s *shard) flush(ctx context.Context) error {
	s.mu.Lock()
	if len(s.dirty) > 0 {
		var n int
		for _, ser := range s.dirty {
			for t := range ser.pending {
				n += len(ser.pending[t])
			}
		}
		s.seq++
		b := store.Batch{Writer: s.id, Seq: s.seq, Entries: make([]store.Entry, 0, n)}
		for _, ser := range s.dirty {
			for t := range ser.pending {
				for _, bk := range ser.pending[t] {
					b.Entries = append(b.Entries, store.Entry{Series: ser.id, Tier: rollup.Tier(t), Bucket: bk})
				}
				ser.pending[t] = ser.pending[t][:0]
			}
			ser.dirty = false
		}
		clear(s.dirty)
		s.dirty = s.dirty[:0]
		s.inflight = append(s.inflight, b)
	}
	todo := slices.Clone(s.inflight)
	s.mu.Unlock()

	for _, b := range todo {
		if err := s.a.cfg.Store.Append(ctx, b); err != nil {
			s.a.metrics.flushErrors.Inc()
			s.a.log.Error("flush to store failed; will retry", "shard", s.id, "batch", b.Seq, "buckets", len(b.Entries), "err", err)
			return err
		}
		s.mu.Lock()
		s.inflight = slices.DeleteFunc(s.inflight, func(x store.Batch) bool { return x.Seq == b.Seq })
		s.mu.Unlock()
	}
	return nil
}

func (s *shard) unflushed(id string, tier rollup.Tier, fromMs, toMs int64) Unflushed {
	out := Unflushed{Writer: s.id}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.inflight {
		for _, e := range b.Entries {
			if e.Series == id && e.Tier == tier && e.StartMs >= fromMs && e.StartMs < toMs {
				out.Buckets = append(out.Buckets, UnflushedBucket{Seq: b.Seq, Bucket: e.Bucket})
			}
		}
	}
	if ser := s.series[id]; ser != nil {
		// Pending buckets go into the next batch.
		for _, bk := range ser.pending[tier] {
			if bk.StartMs >= fromMs && bk.StartMs < toMs {
				out.Buckets = append(out.Buckets, UnflushedBucket{Seq: s.seq + 1, Bucket: bk})
			}
		}
	}
	return out
}

func (s *shard) recent(id string, fromMs, toMs int64) []Reading {
	s.mu.Lock()
	var out []Reading
	if ser := s.series[id]; ser != nil {
		for _, r := range ser.raw {
			if r.tMs >= fromMs && r.tMs < toMs {
				out = append(out, Reading{Series: ser.id, TimeMs: r.tMs, Value: r.v})
			}
		}
	}
	s.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].TimeMs < out[j].TimeMs })
	return out
}

func (s *shard) setPresence(id string, online bool, atMs int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.deviceLocked(id); d != nil {
		d.online = online
		d.seen(atMs)
	}
}

func (s *shard) appendDevices(out []DeviceInfo, nowMs int64) []DeviceInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.devices {
		info := DeviceInfo{
			ID:               d.id,
			Online:           d.online,
			FirstSeenMs:      d.firstSeenMs,
			LastSeenMs:       d.lastSeenMs,
			Metrics:          slices.Clone(d.metrics),
			Rate:             d.rateAt(nowMs / 1000),
			Throttled:        d.throttled,
			RejectedByReason: make(map[string]uint64),
		}
		for r, n := range d.rejected {
			if n > 0 {
				info.Rejected += n
				info.RejectedByReason[Reason(r).String()] = n
			}
		}
		out = append(out, info)
	}
	return out
}

func (s *shard) appendSeriesIDs(out []string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.series {
		out = append(out, id)
	}
	return out
}

// restore re-creates devices and series known from history, idle.
func (s *shard) restore(devices []RestoredDevice, series []string) (n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rd := range devices {
		if d := s.deviceLocked(rd.ID); d != nil {
			if rd.FirstSeenMs > 0 {
				d.seen(rd.FirstSeenMs)
			}
			if rd.LastSeenMs > 0 {
				d.seen(rd.LastSeenMs)
			}
		}
	}
	for _, id := range series {
		if s.series[id] != nil || !ValidSeries(id) {
			continue
		}
		if ser, _ := s.newSeriesLocked(id); ser != nil {
			n++
		}
	}
	return n
}
