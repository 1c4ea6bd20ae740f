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

// shard owns a share of the devices and their series. Its run goroutine is
// the only writer; queries read under mu.
type shard struct {
	id  int
	a   *Aggregator
	q   *queue
	dec *Decoder

	// Owned by the run goroutine.
	msgs     []message
	dropped  map[string]int
	staged   []staged
	rejects  []stagedReject
	accepted []Reading
	lastWarn time.Time
	flushReq chan chan error

	mu       sync.Mutex // guards the fields below
	series   map[string]*series
	devices  map[string]*device
	dirty    []*series     // series with pending buckets
	inflight []store.Batch // flushed to the store, not yet acknowledged, in Seq order
	seq      uint64        // Seq of the latest batch made
}

type staged struct {
	Reading
	atMs int64
}

type stagedReject struct {
	device string
	reason Reason
	atMs   int64
}

// series is one series' live state: its buckets since the last flush and
// its recent raw readings.
type series struct {
	id      string
	dev     *device
	pending [rollup.NumTiers][]rollup.Bucket // deltas since the last flush; few, unsorted
	dirty   bool                             // listed in shard.dirty
	raw     []Reading                        // ring of recent readings
	rawNext int                              // next slot of raw to overwrite once full
}

// device is one device's state: presence, activity and rejections.
type device struct {
	id         string
	online     bool
	lastSeenMs int64
	metrics    []string // sorted
	rejected   [NumReasons]uint64
	// rate counts accepted readings per second in a ring of rateSlots
	// seconds; rateSec[i] says which second slot i holds.
	rate    [rateSlots]uint32
	rateSec [rateSlots]int64
}

// rateSlots is one more than the 10 s rate window so the second in progress
// never counts.
const rateSlots = 11

func newShard(id int, a *Aggregator) *shard {
	return &shard{
		id:       id,
		a:        a,
		q:        newQueue(a.cfg.QueueMessages, a.cfg.QueueBytes),
		dec:      NewDecoder(a.cfg.Decode),
		dropped:  make(map[string]int),
		flushReq: make(chan chan error),
		series:   make(map[string]*series),
		devices:  make(map[string]*device),
	}
}

func (s *shard) run(ctx context.Context) error {
	tick := s.a.cfg.Clock.NewTicker(s.a.cfg.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.q.wake:
			s.process()
		case <-tick.Chan():
			_ = s.flush(ctx)
		case done := <-s.flushReq:
			s.process()
			done <- s.flush(ctx)
		case <-ctx.Done():
			// Drain: nothing that was accepted into the queue is lost.
			s.q.close()
			s.process()
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return s.flush(fctx)
		}
	}
}

// process decodes everything queued and applies it to the shard's state.
func (s *shard) process() {
	s.msgs, s.dropped = s.q.pop(s.msgs, s.dropped)
	if len(s.msgs) == 0 && len(s.dropped) == 0 {
		return
	}
	s.staged = s.staged[:0]
	s.rejects = s.rejects[:0]
	for i := range s.msgs {
		m := &s.msgs[i]
		d := s.dec.Decode(m.topic, m.payload, m.atMs)
		for _, r := range d.Readings {
			s.staged = append(s.staged, staged{Reading: r, atMs: m.atMs})
		}
		for j := range d.Rejects {
			s.rejects = append(s.rejects, stagedReject{device: d.Device, reason: d.Rejects[j].Reason, atMs: m.atMs})
			if s.a.log.Enabled(context.Background(), slog.LevelDebug) {
				s.a.log.Debug("reading rejected", "device", d.Device, "topic", m.topic, "err", &d.Rejects[j])
			}
		}
		*m = message{} // drop the payload reference
	}
	nowSec := s.a.cfg.Clock.Now().Unix()

	s.accepted = s.accepted[:0]
	var rejected [NumReasons]int
	s.mu.Lock()
	for dev, n := range s.dropped {
		rejected[ReasonOverload] += n
		if d := s.deviceLocked(dev); d != nil {
			d.rejected[ReasonOverload] += uint64(n)
		}
	}
	for _, r := range s.rejects {
		rejected[r.reason]++
		if d := s.deviceLocked(r.device); d != nil {
			d.rejected[r.reason]++
			d.lastSeenMs = max(d.lastSeenMs, r.atMs)
		}
	}
	for i := range s.staged {
		st := &s.staged[i]
		ser := s.series[st.Series]
		if ser == nil {
			var reason Reason
			ser, reason = s.newSeriesLocked(st.Series)
			if ser == nil {
				rejected[reason]++
				if d := s.deviceLocked(st.Device()); d != nil {
					d.rejected[reason]++
				}
				continue
			}
		}
		ser.add(st.Reading, s.a.cfg.RawPoints)
		if !ser.dirty {
			ser.dirty = true
			s.dirty = append(s.dirty, ser)
		}
		ser.dev.count(nowSec)
		ser.dev.lastSeenMs = max(ser.dev.lastSeenMs, st.atMs)
		s.accepted = append(s.accepted, Reading{Series: ser.id, TimeMs: st.TimeMs, Value: st.Value})
	}
	s.mu.Unlock()
	clear(s.dropped)

	s.a.metrics.accepted.Add(float64(len(s.accepted)))
	for r, n := range rejected {
		if n > 0 {
			s.a.metrics.rejected[r].Add(float64(n))
		}
	}
	if rejected[ReasonOverload] > 0 {
		s.warnOverload(rejected[ReasonOverload])
	}
	if len(s.accepted) > 0 && s.a.cfg.OnReadings != nil {
		s.a.cfg.OnReadings(s.accepted)
	}
}

// warnOverload logs dropped messages at most every 10 s per shard, so an
// overload is visible without flooding the log.
func (s *shard) warnOverload(n int) {
	now := s.a.cfg.Clock.Now()
	if now.Sub(s.lastWarn) < 10*time.Second {
		return
	}
	s.lastWarn = now
	s.a.log.Warn("ingest queue full: messages dropped", "shard", s.id, "dropped", n)
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
	ser := &series{id: id, dev: dev}
	s.series[id] = ser
	metric := id[len(dev.id)+1:]
	i, _ := slices.BinarySearch(dev.metrics, metric)
	dev.metrics = slices.Insert(dev.metrics, i, metric)
	return ser, 0
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
	if rawCap > 0 {
		if len(ser.raw) < rawCap {
			ser.raw = append(ser.raw, r)
		} else {
			ser.raw[ser.rawNext] = r
			ser.rawNext = (ser.rawNext + 1) % rawCap
		}
	}
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
			if r.TimeMs >= fromMs && r.TimeMs < toMs {
				out = append(out, r)
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
		d.lastSeenMs = max(d.lastSeenMs, atMs)
	}
}

func (s *shard) appendDevices(out []DeviceInfo, nowMs int64) []DeviceInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.devices {
		info := DeviceInfo{
			ID:               d.id,
			Online:           d.online,
			LastSeenMs:       d.lastSeenMs,
			Metrics:          slices.Clone(d.metrics),
			Rate:             d.rateAt(nowMs / 1000),
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
