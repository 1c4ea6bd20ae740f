package dashboard

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"
	"unsafe"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telegauge/telegauge/ingest"
)

// HubConfig configures a Hub. Zero values mean the documented defaults.
type HubConfig struct {
	// ResumeWindow is how long frames stay in the resume ring. Zero means
	// 5 minutes.
	ResumeWindow time.Duration `yaml:"resume-window"`
	// ResumeBytes bounds the resume ring (24 bytes per reading). Zero
	// means 128 MiB. At high ingest rates this bound, not ResumeWindow, is
	// what limits how far back a client can resume.
	ResumeBytes int `yaml:"resume-bytes"`
	// Heartbeat is sent to a viewer that was sent nothing for this long;
	// WebSocket viewers are also pinged this often. Zero means 15 s.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// MinFrameInterval is the least time between two frames. Zero means
	// 1 ms; readings arriving in between go out together in the next frame.
	MinFrameInterval time.Duration `yaml:"min-frame-interval"`
	// MaxFrameDelay caps the interval between frames, which grows with the
	// number of viewers a frame reaches (about 10 µs each). Zero means
	// 20 ms.
	MaxFrameDelay time.Duration `yaml:"max-frame-delay"`
	// ViewerQueueBytes bounds each viewer's queue. Zero means 4 MiB.
	ViewerQueueBytes int `yaml:"viewer-queue-bytes"`
	// MaxViewers caps concurrent viewers. Zero means 100,000.
	MaxViewers int `yaml:"max-viewers"`
	// Source, when set, is drained for readings at every frame (the
	// aggregator); call Hub.Wake when it has some. Publish adds readings
	// from elsewhere.
	Source LiveSource `yaml:"-"`
	// Clock is the time source (heartbeats, pings, frame and presence
	// times, the resume window); nil means the real clock.
	Clock clockwork.Clock `yaml:"-"`
	// Registerer receives the hub's metrics; nil means none.
	Registerer prometheus.Registerer `yaml:"-"`
}

// LiveSource is where the hub takes accepted readings from: the aggregator.
type LiveSource interface {
	// DrainReadings appends the readings waiting since the last call to
	// dst, and reports a range of reading times dropped before the hub
	// could take them (nil if none).
	DrainReadings(dst []ingest.Reading) ([]ingest.Reading, *ingest.LiveGap)
}

// Hub fans live readings out to viewers. Readings published by the
// aggregator are gathered into frames; each frame gets the next cursor, is
// kept in the resume ring, and is filtered and encoded once per distinct
// subscription, the encoded message being shared by every viewer with that
// subscription.
//
// Publish and PublishPresence never block on viewers. All methods are safe
// for concurrent use.
type Hub struct {
	cfg     HubConfig
	log     *slog.Logger
	epoch   string
	wake    chan struct{}
	metrics *hubMetrics

	pendMu   sync.Mutex // guards pending and presence
	pending  []ingest.Reading
	presence []Presence

	mu          sync.Mutex // guards the fields below; taken before any Viewer.mu
	seq         uint64     // seq of the latest frame
	ring        []frame
	ringBytes   int
	evictedUpTo uint64 // seq of the latest frame dropped from the ring
	groups      map[string]*group
	sids        map[string]uint32 // series table: name -> id, for the ring
	names       []string          // series table: id -> name
	sidBuf      []uint32          // scratch: the ids of the frame being built
	viewers     map[*Viewer]struct{}
	nextID      uint64
	closed      bool
	frameHint   int // readings in the last frame; owned by Run

	wg sync.WaitGroup // one per viewer not yet Closed
}

// frame is one entry of the resume ring: every reading of one frame.
type frame struct {
	seq    uint64
	atMs   int64
	points []ringPoint
	bytes  int
}

// ringPoint is a reading as the ring keeps it: the series as an id into the
// hub's series table rather than a string. The ring is the biggest thing in
// the heap (tens of MiB), and without pointers in it the garbage collector
// never has to scan it: with a string per reading, marking it took 50-80 ms
// of a core every cycle, which showed in live latency.
type ringPoint struct {
	tMs int64
	v   float64
	sid uint32
}

// readingBytes is what one reading is counted as in the resume ring.
const readingBytes = int(unsafe.Sizeof(ringPoint{}))

// group is the viewers sharing one subscription.
type group struct {
	patterns Patterns
	viewers  map[*Viewer]struct{}
	match    []uint8 // memo of patterns.Match by series id: 0 unknown, 1 no, 2 yes
}

func (g *group) matches(sid uint32, name string) bool {
	if g.patterns.all {
		return true
	}
	if int(sid) >= len(g.match) {
		g.match = append(g.match, make([]uint8, int(sid)+1-len(g.match)+64)...)
	}
	m := g.match[sid]
	if m == 0 {
		m = 1
		if g.patterns.Match(name) {
			m = 2
		}
		g.match[sid] = m
	}
	return m == 2
}

// sidLocked returns the series table id of name, adding it if new. Ids are
// never reused: the table grows with the series the server has seen, which
// the aggregator bounds (MaxSeries). The caller must hold h.mu.
func (h *Hub) sidLocked(name string) uint32 {
	if id, ok := h.sids[name]; ok {
		return id
	}
	id := uint32(len(h.names))
	h.sids[name] = id
	h.names = append(h.names, name)
	return id
}

// NewHub returns a Hub; Run starts its frame loop.
func NewHub(cfg HubConfig, log *slog.Logger) (*Hub, error) {
	if cfg.ResumeWindow <= 0 {
		cfg.ResumeWindow = 5 * time.Minute
	}
	if cfg.ResumeBytes <= 0 {
		cfg.ResumeBytes = 128 << 20
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 15 * time.Second
	}
	if cfg.MinFrameInterval <= 0 {
		cfg.MinFrameInterval = time.Millisecond
	}
	if cfg.MaxFrameDelay <= 0 {
		cfg.MaxFrameDelay = 20 * time.Millisecond
	}
	if cfg.ViewerQueueBytes <= 0 {
		cfg.ViewerQueueBytes = 4 << 20
	}
	if cfg.MaxViewers <= 0 {
		cfg.MaxViewers = 100_000
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Hub{
		cfg:     cfg,
		log:     log.With("component", "hub"),
		epoch:   newEpoch(),
		wake:    make(chan struct{}, 1),
		groups:  make(map[string]*group),
		sids:    make(map[string]uint32),
		viewers: make(map[*Viewer]struct{}),
	}
	h.metrics = newHubMetrics(h)
	if cfg.Registerer != nil {
		if err := h.metrics.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("hub: register metrics: %w", err)
		}
	}
	return h, nil
}

// Heartbeat returns the heartbeat interval.
func (h *Hub) Heartbeat() time.Duration { return h.cfg.Heartbeat }

// Clock returns the hub's time source, which transports use for their own
// deadlines so that tests can drive them.
func (h *Hub) Clock() clockwork.Clock { return h.cfg.Clock }

// Publish hands the hub readings for the next frame. It copies them and
// never blocks on viewers; it is the aggregator's OnReadings.
func (h *Hub) Publish(rs []ingest.Reading) {
	if len(rs) == 0 {
		return
	}
	h.pendMu.Lock()
	first := len(h.pending) == 0 && len(h.presence) == 0
	h.pending = append(h.pending, rs...)
	h.pendMu.Unlock()
	if first {
		h.signal()
	}
}

// PublishPresence queues a device's online change for the viewers whose
// subscription covers the device.
func (h *Hub) PublishPresence(device string, online bool, at time.Time) {
	if !ingest.ValidName(device) {
		// In anonymous mode the name comes from whatever topic a session
		// published on; only names a device could have reach viewers.
		return
	}
	h.pendMu.Lock()
	h.presence = append(h.presence, Presence{Device: device, Online: online, TimeMs: at.UnixMilli()})
	h.pendMu.Unlock()
	h.signal()
}

// Wake tells the hub that its Source has readings. It never blocks.
func (h *Hub) Wake() { h.signal() }

func (h *Hub) signal() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// Run builds and fans out frames, and sends heartbeats and pings, until ctx
// ends. A frame goes out as soon as readings arrive, but frames are spaced
// by an interval that grows with the fan-out (frameInterval): each frame
// costs every viewer it reaches a wake-up and a write, so with many viewers
// fewer, fuller frames deliver more readings per second at lower latency.
// Readings keep accumulating while the hub waits; none are dropped.
//
// NOTE(lead): the spacing is waited out in wall time, not on the injected
// clock: it is about what frames cost in CPU, and waiting on a fake clock
// would stall frames until a test advanced it. Under saturation a timer-woken
// goroutine waits its turn behind every runnable connection goroutine; the
// broker keeps that turn short by having connections yield (yieldEvery).
func (h *Hub) Run(ctx context.Context) error {
	tick := h.cfg.Clock.NewTicker(h.heartbeatTick())
	defer tick.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var next time.Time
	for {
		select {
		case <-ctx.Done():
			h.frame()
			return nil
		case <-tick.Chan():
			h.heartbeats()
		case <-h.wake:
			if wait := time.Until(next); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-ctx.Done():
					h.frame()
					return nil
				}
			}
			start := time.Now()
			reached := h.frame()
			next = start.Add(h.frameInterval(reached))
		}
	}
}

// perViewerFrameCost is roughly what one frame costs per viewer it reaches
// on this kind of machine: queueing, waking the viewer's goroutine and one
// write system call.
const perViewerFrameCost = 5 * time.Microsecond

// frameInterval is the least time between two frames after one that reached
// n viewers: enough that frame overheads stay well under a core, between
// MinFrameInterval and MaxFrameDelay.
func (h *Hub) frameInterval(n int) time.Duration {
	return min(max(time.Duration(n)*2*perViewerFrameCost, h.cfg.MinFrameInterval), h.cfg.MaxFrameDelay)
}

func (h *Hub) heartbeatTick() time.Duration {
	return max(h.cfg.Heartbeat/4, time.Millisecond)
}

// frame turns everything published since the previous frame into one
// frame, and queues it (filtered, encoded once per subscription) to every
// viewer it concerns. It returns how many viewers it queued points to.
func (h *Hub) frame() (reached int) {
	h.pendMu.Lock()
	pts, pres := h.pending, h.presence
	h.pending, h.presence = nil, nil
	h.pendMu.Unlock()
	var lost *ingest.LiveGap
	if h.cfg.Source != nil {
		if pts == nil && h.frameHint > 0 {
			// The frame's slice is shared by the messages viewers hold,
			// so it is new every time; sizing it like the last one saves
			// regrowing it.
			pts = make([]ingest.Reading, 0, h.frameHint+h.frameHint/4)
		}
		pts, lost = h.cfg.Source.DrainReadings(pts)
		h.frameHint = len(pts)
	}
	if len(pts) == 0 && len(pres) == 0 && lost == nil {
		return 0
	}
	nowMs := h.cfg.Clock.Now().UnixMilli()

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0
	}
	var slow []*Viewer
	if lost != nil {
		// Readings the hub could not take in time: every viewer whose
		// subscription might cover them backfills that range.
		h.metrics.gaps.Inc()
		gap := Event{Kind: EventGap, Gap: Gap{FromMs: lost.FromMs, ToMs: lost.ToMs}, Cursor: formatCursor(h.epoch, h.seq)}
		for v := range h.viewers {
			if v.group != nil {
				v.enqueue(gap)
				v.lastSentMs = nowMs
			}
		}
	}
	if len(pts) > 0 {
		h.seq++
		rps := make([]ringPoint, len(pts))
		sids := h.sidBuf[:0]
		for i, p := range pts {
			sid := h.sidLocked(p.Series)
			sids = append(sids, sid)
			rps[i] = ringPoint{tMs: p.TimeMs, v: p.Value, sid: sid}
		}
		h.sidBuf = sids
		f := frame{seq: h.seq, atMs: nowMs, points: rps, bytes: len(pts) * readingBytes}
		h.ring = append(h.ring, f)
		h.ringBytes += f.bytes
		h.evictLocked(nowMs)
		cursor := formatCursor(h.epoch, h.seq)
		h.metrics.frames.Inc()
		h.metrics.readings.Add(float64(len(pts)))
		var buf []ingest.Reading
		for _, g := range h.groups {
			buf = buf[:0]
			for i, p := range pts {
				if g.matches(sids[i], p.Series) {
					buf = append(buf, p)
				}
			}
			if len(buf) == 0 {
				continue
			}
			var msgPts []ingest.Reading
			if len(buf) == len(pts) {
				msgPts = pts // nobody changes pts from here on; share it
			} else {
				msgPts = append([]ingest.Reading(nil), buf...)
			}
			msg := NewMessage(h.seq, cursor, msgPts)
			h.metrics.messages.Inc()
			reached += len(g.viewers)
			for v := range g.viewers {
				if !v.enqueue(Event{Kind: EventPoints, Msg: msg}) {
					slow = append(slow, v)
				}
				v.lastSentMs = nowMs
			}
		}
	}
	for _, p := range pres {
		for _, g := range h.groups {
			if !g.patterns.MatchDevice(p.Device) {
				continue
			}
			for v := range g.viewers {
				if !v.enqueue(Event{Kind: EventPresence, Presence: p}) {
					slow = append(slow, v)
				}
				v.lastSentMs = nowMs
			}
		}
	}
	for _, v := range slow {
		h.endSlowLocked(v)
	}
	return reached
}

// evictLocked drops frames older than the resume window, or beyond its
// byte bound. The caller must hold h.mu.
func (h *Hub) evictLocked(nowMs int64) {
	i := 0
	for ; i < len(h.ring)-1; i++ { // always keep the newest frame
		f := &h.ring[i]
		if h.ringBytes <= h.cfg.ResumeBytes && nowMs-f.atMs <= h.cfg.ResumeWindow.Milliseconds() {
			break
		}
		h.ringBytes -= f.bytes
		h.evictedUpTo = f.seq
	}
	if i > 0 {
		clear(h.ring[:i])
		h.ring = h.ring[i:]
	}
}

func (h *Hub) endSlowLocked(v *Viewer) {
	h.metrics.slow.Inc()
	h.log.Info("viewer too slow: disconnecting", "viewer", v.id, "transport", v.transport)
	h.detachLocked(v)
	v.end(Event{Kind: EventClosing, TimeMs: h.cfg.Clock.Now().UnixMilli(), Reason: "too slow: could not keep up even after skipping ahead"}, ReasonTooSlow)
}

// heartbeats queues a heartbeat to every viewer that was sent nothing for a
// heartbeat interval, and a ping to every WebSocket viewer due one.
func (h *Hub) heartbeats() {
	nowMs := h.cfg.Clock.Now().UnixMilli()
	hb := h.cfg.Heartbeat.Milliseconds()
	h.mu.Lock()
	defer h.mu.Unlock()
	cursor := formatCursor(h.epoch, h.seq)
	for v := range h.viewers {
		if nowMs-v.lastSentMs >= hb {
			v.enqueue(Event{Kind: EventHeartbeat, TimeMs: nowMs, Cursor: cursor})
			v.lastSentMs = nowMs
		}
		if v.wantsPing && nowMs-v.lastPingMs >= hb {
			v.enqueue(Event{Kind: EventPing, TimeMs: nowMs})
			v.lastPingMs = nowMs
		}
	}
}

// SubscribeOptions describe a new viewer.
type SubscribeOptions struct {
	// Transport names the viewer's transport ("ws", "sse", "longpoll",
	// "poll") for metrics and logs.
	Transport string
	// Cursor, when set, resumes after that position: the viewer first gets
	// every matching reading after it, or an EventReset when it is unknown
	// or too old. A malformed cursor is CodeInvalid.
	Cursor string
	// Ping asks for EventPing every heartbeat interval.
	Ping bool
}

// Admit reports the error Subscribe would return now for opts (a malformed
// cursor, a closed hub, too many viewers) without registering anything:
// for transports that must answer before they can subscribe, such as a
// WebSocket whose handshake can still fail after the HTTP handler returns.
func (h *Hub) Admit(opts SubscribeOptions) error {
	if opts.Cursor != "" {
		if _, _, err := parseCursor(opts.Cursor); err != nil {
			return err
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.admitLocked()
}

// admitLocked is the error a new viewer meets now, if any. The caller must
// hold h.mu.
func (h *Hub) admitLocked() error {
	if h.closed {
		return ErrClosed
	}
	if len(h.viewers) >= h.cfg.MaxViewers {
		return Errorf(CodeTooMany, "too many live viewers (limit %d)", h.cfg.MaxViewers)
	}
	return nil
}

// Subscribe registers a viewer for the patterns. It returns the viewer and
// the cursor its live stream starts after: the caller's cursor when resumed,
// otherwise the current one.
func (h *Hub) Subscribe(ps Patterns, opts SubscribeOptions) (*Viewer, string, error) {
	var (
		epoch string
		after uint64
	)
	if opts.Cursor != "" {
		var err error
		if epoch, after, err = parseCursor(opts.Cursor); err != nil {
			return nil, "", err
		}
	}
	nowMs := h.cfg.Clock.Now().UnixMilli()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.admitLocked(); err != nil {
		return nil, "", err
	}
	h.nextID++
	v := &Viewer{
		hub:        h,
		id:         h.nextID,
		transport:  opts.Transport,
		wantsPing:  opts.Ping,
		lastSentMs: nowMs,
		lastPingMs: nowMs,
		notify:     make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	v.lastPongMs.Store(nowMs)
	h.viewers[v] = struct{}{}
	h.wg.Add(1)
	h.metrics.viewers.WithLabelValues(opts.Transport).Inc()
	ack := formatCursor(h.epoch, h.seq)
	resume := opts.Cursor != "" && h.resumableLocked(epoch, after)
	if resume {
		ack = opts.Cursor
	}
	v.enqueue(Event{Kind: EventSubscribed, Series: ps.List(), Cursor: ack})
	switch {
	case resume:
		h.replayLocked(v, after, func(s string) bool { return ps.Match(s) })
	case opts.Cursor != "":
		h.metrics.resets.Inc()
		v.enqueue(Event{Kind: EventReset, Cursor: ack})
	}
	h.attachLocked(v, ps)
	return v, ack, nil
}

// resumableLocked reports whether every frame after (epoch, after) is still
// in the ring. The caller must hold h.mu.
func (h *Hub) resumableLocked(epoch string, after uint64) bool {
	return epoch == h.epoch && after <= h.seq && after >= h.evictedUpTo
}

// replayLocked queues the ring readings after seq that want accepts: as
// many of the newest as fit in half the viewer's queue, as one message, and
// before them a gap covering the older ones, if any (the client backfills
// those from history). A replay is bounded like live delivery: it never
// builds more than the queue could hold, so a client resuming from an old
// cursor costs the hub a scan of the ring, not megabytes of encoding under
// its lock. The caller must hold h.mu.
func (h *Hub) replayLocked(v *Viewer, after uint64, want func(string) bool) {
	first := len(h.ring)
	for first > 0 && h.ring[first-1].seq > after {
		first--
	}
	if first == len(h.ring) {
		return
	}
	memo := make([]uint8, len(h.names)) // 0 unknown, 1 no, 2 yes
	match := func(sid uint32) bool {
		if memo[sid] == 0 {
			memo[sid] = 1
			if want(h.names[sid]) {
				memo[sid] = 2
			}
		}
		return memo[sid] == 2
	}
	// Newest frames first, until the budget is spent.
	budget := max(1, h.cfg.ViewerQueueBytes/2/approxPointBytes)
	keep, n := len(h.ring), 0
	for i := len(h.ring) - 1; i >= first; i-- {
		m := 0
		for _, p := range h.ring[i].points {
			if match(p.sid) {
				m++
			}
		}
		if n+m > budget {
			break
		}
		n += m
		keep = i
	}
	if keep > first {
		gap := Gap{FromMs: math.MaxInt64, ToMs: math.MinInt64}
		for _, f := range h.ring[first:keep] {
			for _, p := range f.points {
				if match(p.sid) {
					gap.FromMs, gap.ToMs = min(gap.FromMs, p.tMs), max(gap.ToMs, p.tMs)
				}
			}
		}
		if gap.FromMs <= gap.ToMs {
			h.metrics.gaps.Inc()
			v.enqueue(Event{Kind: EventGap, Gap: gap, Cursor: formatCursor(h.epoch, h.ring[keep-1].seq)})
		}
	}
	if n == 0 {
		return
	}
	pts := make([]ingest.Reading, 0, n)
	for _, f := range h.ring[keep:] {
		for _, p := range f.points {
			if match(p.sid) {
				pts = append(pts, ingest.Reading{Series: h.names[p.sid], TimeMs: p.tMs, Value: p.v})
			}
		}
	}
	v.enqueue(Event{Kind: EventPoints, Msg: NewMessage(h.seq, formatCursor(h.epoch, h.seq), pts)})
}

// approxPointBytes is about what one reading takes in an encoded message,
// {"s":"device/metric","t":1700000000000,"v":21.5}, plus its share of the
// message's queue overhead.
const approxPointBytes = 64

// attachLocked puts v in the group of ps. The caller must hold h.mu.
func (h *Hub) attachLocked(v *Viewer, ps Patterns) {
	v.patterns = ps
	if ps.Len() == 0 {
		return
	}
	key := ps.Key()
	g := h.groups[key]
	if g == nil {
		g = &group{patterns: ps, viewers: make(map[*Viewer]struct{})}
		h.groups[key] = g
	}
	g.viewers[v] = struct{}{}
	v.group = g
}

// detachLocked takes v out of its group. The caller must hold h.mu.
func (h *Hub) detachLocked(v *Viewer) {
	g := v.group
	if g == nil {
		return
	}
	delete(g.viewers, v)
	if len(g.viewers) == 0 {
		delete(h.groups, g.patterns.Key())
	}
	v.group = nil
}

// AddSeries widens a live viewer's subscription. With a cursor, the viewer
// first gets the readings after it that match the new patterns and not the
// old ones (or a reset). It returns the cursor live delivery of the new
// patterns starts after.
func (h *Hub) AddSeries(v *Viewer, add Patterns, cursor string) (string, error) {
	var (
		epoch string
		after uint64
	)
	if cursor != "" {
		var err error
		if epoch, after, err = parseCursor(cursor); err != nil {
			return "", err
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return "", ErrClosed
	}
	if _, ok := h.viewers[v]; !ok {
		return "", Errorf(CodeInvalid, "viewer is closed")
	}
	old := v.patterns
	union, err := old.Union(add)
	if err != nil {
		return "", err
	}
	ack := formatCursor(h.epoch, h.seq)
	resume := cursor != "" && h.resumableLocked(epoch, after)
	if resume {
		ack = cursor
	}
	v.enqueue(Event{Kind: EventSubscribed, Series: union.List(), Cursor: ack})
	switch {
	case resume:
		h.replayLocked(v, after, func(s string) bool { return add.Match(s) && !old.Match(s) })
	case cursor != "":
		h.metrics.resets.Inc()
		v.enqueue(Event{Kind: EventReset, Cursor: ack})
	}
	h.detachLocked(v)
	h.attachLocked(v, union)
	return ack, nil
}

// RemoveSeries narrows a live viewer's subscription by the exact patterns
// given, as MQTT unsubscribe does, and queues an EventSubscribed with what
// remains.
func (h *Hub) RemoveSeries(v *Viewer, remove Patterns) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.viewers[v]; ok {
		rest := v.patterns.Without(remove)
		h.detachLocked(v)
		h.attachLocked(v, rest)
		v.enqueue(Event{Kind: EventSubscribed, Series: rest.List(), Cursor: formatCursor(h.epoch, h.seq)})
	}
}

// Detach stops live delivery to v and returns the cursor up to which every
// frame has been queued to it: after draining v, a client that resumes from
// that cursor misses nothing and gets nothing twice. Long polls end with it.
func (h *Hub) Detach(v *Viewer) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.detachLocked(v)
	return formatCursor(h.epoch, h.seq)
}

// End ends one viewer as the hub ends a slow one: it stops live delivery
// and queues a final EventClosing that gives reason, which Viewer.Reason
// then reports. The web tier ends the streams of an operator whose
// credentials were withdrawn this way. A viewer already ended or closed is
// left alone.
func (h *Hub) End(v *Viewer, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.viewers[v]; !ok {
		return
	}
	h.detachLocked(v)
	v.end(Event{Kind: EventClosing, TimeMs: h.cfg.Clock.Now().UnixMilli(), Reason: reason, Cursor: formatCursor(h.epoch, h.seq)}, reason)
}

// Notify queues a transport-level event (such as EventError) to v.
func (h *Hub) Notify(v *Viewer, e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v.enqueue(e)
}

// Cursor returns the cursor of the latest frame.
func (h *Hub) Cursor() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return formatCursor(h.epoch, h.seq)
}

// remove forgets a viewer the transport closed.
func (h *Hub) remove(v *Viewer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.viewers[v]; !ok {
		return
	}
	h.detachLocked(v)
	delete(h.viewers, v)
	h.metrics.viewers.WithLabelValues(v.transport).Dec()
}

// Close ends every viewer with an EventClosing (telling clients to
// reconnect elsewhere or later), refuses new ones, and waits until every
// transport has closed its viewer or ctx ends. It is idempotent.
func (h *Hub) Close(ctx context.Context) error {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		nowMs := h.cfg.Clock.Now().UnixMilli()
		for v := range h.viewers {
			h.detachLocked(v)
			v.end(Event{Kind: EventClosing, TimeMs: nowMs, Reason: "server shutting down", Cursor: formatCursor(h.epoch, h.seq)}, ReasonShutdown)
		}
	}
	h.mu.Unlock()
	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("hub close: viewers still open: %w", ctx.Err())
	}
}
