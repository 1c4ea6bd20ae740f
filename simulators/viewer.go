package simulators

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// Live transports of DESIGN.md §4 (ViewersConfig.Transport).
const (
	// TransportWS is GET /api/v1/ws, resuming with the cursor parameter.
	TransportWS = "ws"
	// TransportSSE is GET /api/v1/stream, resuming with Last-Event-ID.
	TransportSSE = "sse"
	// TransportLongPoll is GET /api/v1/poll with wait=PollWait.
	TransportLongPoll = "longpoll"
	// TransportPoll is GET /api/v1/poll with wait=0 every PollInterval.
	TransportPoll = "poll"
	// TransportMix spreads viewers over all four transports in turn.
	TransportMix = "mix"
)

// transports lists the concrete transports in reporting order.
var transports = [...]string{TransportWS, TransportSSE, TransportLongPoll, TransportPoll}

func transportIndex(name string) int {
	for i, t := range transports {
		if t == name {
			return i
		}
	}
	return -1
}

// ViewersConfig configures RunViewers. Zero values mean the documented
// defaults.
type ViewersConfig struct {
	// URL is the server's base URL. Empty means http://127.0.0.1:8080.
	URL string `yaml:"url"`
	// Viewers is how many viewers to run. Zero means 1.
	Viewers int `yaml:"viewers"`
	// Transport is TransportWS (default), TransportSSE,
	// TransportLongPoll, TransportPoll or TransportMix.
	Transport string `yaml:"transport"`
	// Series are the subscription patterns. Empty means ["#"].
	Series []string `yaml:"series"`
	// Duration bounds the run. Zero means until ctx ends.
	Duration time.Duration `yaml:"duration"`
	// Ramp spreads the viewers' starts evenly over this time. Zero means
	// all at once.
	Ramp time.Duration `yaml:"ramp"`
	// PollInterval is the pause between short polls. Zero means 1 s.
	PollInterval time.Duration `yaml:"poll-interval"`
	// PollWait is the wait parameter of long polls. Zero means 25 s.
	PollWait time.Duration `yaml:"poll-wait"`
	// Rate caps frames per second per viewer, passed to the server as the
	// rate parameter. Zero means the server's default.
	Rate int `yaml:"rate"`
	// Header is added to every request, e.g. Authorization.
	Header http.Header `yaml:"-"`
	// Now gives receive times for latency; nil means time.Now.
	Now func() time.Time `yaml:"-"`
	// Counters, when set, receives live counts; nil means RunViewers keeps
	// its own.
	Counters *ViewersCounters `yaml:"-"`
	// Backoff is the first reconnect delay, doubled per failed attempt
	// (with jitter) up to MaxBackoff. An SSE retry field from the server
	// replaces it. Zero means 250 ms.
	Backoff time.Duration `yaml:"backoff"`
	// MaxBackoff caps the reconnect delay. Zero means 10 s.
	MaxBackoff time.Duration `yaml:"max-backoff"`
	// DedupeWindow is how far back in reading time, behind the newest
	// reading it has seen, a viewer remembers points to detect duplicates
	// (at most 131,072 of them: past that it forgets the oldest, or all if
	// that is not enough). A point replayed from further back counts as
	// new. Zero means 1 minute;
	// negative disables duplicate detection, and every point counts as
	// new.
	DedupeWindow time.Duration `yaml:"dedupe-window"`
	// MaxMessageBytes caps an SSE line, a WebSocket message and a poll
	// answer. Zero means 8 MiB.
	MaxMessageBytes int `yaml:"max-message-bytes"`
	// HTTPClient is used for SSE and polls; nil means a shared client
	// sized for Viewers connections to one host. With Flaky.DisconnectEvery
	// each viewer uses a copy with a transport of its own, cloned from
	// this one, which must then be an *http.Transport.
	HTTPClient *http.Client `yaml:"-"`
	// Flaky injects disconnects and stalls; the zero value injects none.
	Flaky ViewerFlaky `yaml:"flaky"`
	// OnEvent, when set, is called on each viewer's own goroutine with
	// every frame of points, gap and reset the viewer receives (duplicates
	// included), so that a test can check delivery exactly. The viewer
	// reads nothing while it runs, so it should be quick. Nil means none;
	// when set, each frame's points are copied for it.
	OnEvent func(ViewerEvent) `yaml:"-"`
}

// Kinds of ViewerEvent.
const (
	// ViewerEventPoints is a frame (or poll answer) with points.
	ViewerEventPoints = "points"
	// ViewerEventGap is a gap notice: FromMs..ToMs will not come live.
	ViewerEventGap = "gap"
	// ViewerEventReset is a reset notice: the resume cursor was refused.
	ViewerEventReset = "reset"
)

// ViewerEvent is what a viewer received, as ViewersConfig.OnEvent reports
// it.
type ViewerEvent struct {
	// Viewer is the viewer's index, 0 to Viewers-1.
	Viewer int
	// Transport is the viewer's transport (never TransportMix).
	Transport string
	// Kind is ViewerEventPoints, ViewerEventGap or ViewerEventReset.
	Kind string
	// Points are the frame's points (ViewerEventPoints), the callee's to
	// keep.
	Points []LivePoint
	// FromMs and ToMs are the gap's reading times, Unix ms inclusive
	// (ViewerEventGap).
	FromMs, ToMs int64
}

// LivePoint is one live reading as a viewer received it.
type LivePoint struct {
	Series string
	TimeMs int64 // reading time, Unix ms
	Value  float64
}

func (c *ViewersConfig) setDefaults() error {
	if c.URL == "" {
		c.URL = "http://127.0.0.1:8080"
	}
	c.URL = strings.TrimRight(c.URL, "/")
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("parse URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("URL %q: want http:// or https://", c.URL)
	}
	if c.Viewers <= 0 {
		c.Viewers = 1
	}
	if c.Transport == "" {
		c.Transport = TransportWS
	}
	if c.Transport != TransportMix && transportIndex(c.Transport) < 0 {
		return fmt.Errorf("unknown transport %q (want ws, sse, longpoll, poll or mix)", c.Transport)
	}
	if len(c.Series) == 0 {
		c.Series = []string{"#"}
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.PollWait <= 0 {
		c.PollWait = 25 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Counters == nil {
		c.Counters = new(ViewersCounters)
	}
	if c.Backoff <= 0 {
		c.Backoff = 250 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 10 * time.Second
	}
	c.MaxBackoff = max(c.MaxBackoff, c.Backoff)
	if c.DedupeWindow == 0 {
		c.DedupeWindow = time.Minute
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 8 << 20
	}
	c.Flaky.setDefaults()
	if c.Flaky.DisconnectEvery > 0 && c.HTTPClient != nil && c.HTTPClient.Transport != nil {
		if _, ok := c.HTTPClient.Transport.(*http.Transport); !ok {
			return fmt.Errorf("flaky disconnects need an HTTPClient with an *http.Transport, have %T", c.HTTPClient.Transport)
		}
	}
	return nil
}

// transportOf returns viewer i's transport.
func (c *ViewersConfig) transportOf(i int) string {
	if c.Transport == TransportMix {
		return transports[i%len(transports)]
	}
	return c.Transport
}

// NewViewerHTTPClient returns an http.Client for n viewers of one server:
// no limit on connections per host, n idle connections kept, no
// compression (it would buffer SSE) and no overall timeout (streams are
// long; requests carry their own contexts).
func NewViewerHTTPClient(n int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0, // no limit
		MaxIdleConnsPerHost: max(n, 2),
		MaxConnsPerHost:     0, // no limit
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}}
}

// ViewersCounters are the live counts of a viewer swarm, per transport.
// Its methods are safe for concurrent use.
type ViewersCounters struct {
	start atomic.Int64 // Unix ns
	by    [len(transports)]transportCounters
}

// transportCounters are one transport's counts.
type transportCounters struct {
	viewers     atomic.Int64
	connected   atomic.Int64
	connections atomic.Int64
	reconnects  atomic.Int64
	frames      atomic.Int64
	points      atomic.Int64
	duplicates  atomic.Int64
	gaps        atomic.Int64
	gapMs       atomic.Int64
	resets      atomic.Int64
	heartbeats  atomic.Int64
	presence    atomic.Int64
	errs        atomic.Int64
	disconnects atomic.Int64
	stalls      atomic.Int64
	latency     syncHistogram

	mu     sync.Mutex      // guards unique
	unique []*atomic.Int64 // per viewer: distinct points received
}

// addViewer counts a viewer and returns its count of distinct points.
func (tc *transportCounters) addViewer() *atomic.Int64 {
	u := new(atomic.Int64)
	tc.mu.Lock()
	tc.unique = append(tc.unique, u)
	tc.mu.Unlock()
	tc.viewers.Add(1)
	return u
}

// uniqueRange returns the least and greatest per-viewer counts of
// distinct points.
func (tc *transportCounters) uniqueRange() (lo, hi int64) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	for i, u := range tc.unique {
		n := u.Load()
		if i == 0 || n < lo {
			lo = n
		}
		hi = max(hi, n)
	}
	return lo, hi
}

func (tc *transportCounters) snapshot(h *Histogram) TransportStats {
	tc.latency.copyInto(h)
	lo, hi := tc.uniqueRange()
	return TransportStats{
		Viewers:     tc.viewers.Load(),
		Connected:   tc.connected.Load(),
		Connections: tc.connections.Load(),
		Reconnects:  tc.reconnects.Load(),
		Frames:      tc.frames.Load(),
		Points:      tc.points.Load(),
		Duplicates:  tc.duplicates.Load(),
		Gaps:        tc.gaps.Load(),
		GapMs:       tc.gapMs.Load(),
		Resets:      tc.resets.Load(),
		Heartbeats:  tc.heartbeats.Load(),
		Presence:    tc.presence.Load(),
		Errors:      tc.errs.Load(),
		Disconnects: tc.disconnects.Load(),
		Stalls:      tc.stalls.Load(),
		UniqueMin:   lo,
		UniqueMax:   hi,
		Latency:     h.Summary(),
	}
}

// Snapshot returns the counts so far: every transport that has viewers, and
// their total (with merged latencies).
func (c *ViewersCounters) Snapshot() ViewersStats {
	s := ViewersStats{Transports: map[string]TransportStats{}}
	if st := c.start.Load(); st != 0 {
		s.Elapsed = time.Since(time.Unix(0, st))
	}
	var total Histogram
	for i := range c.by {
		var h Histogram
		ts := c.by[i].snapshot(&h)
		if ts == (TransportStats{}) {
			continue // a transport nobody used
		}
		total.Merge(&h)
		s.Transports[transports[i]] = ts
		s.Total.add(ts)
	}
	s.Total.Latency = total.Summary()
	return s
}

// ViewersStats are the results of a viewer swarm.
type ViewersStats struct {
	// Elapsed is the run's wall time (JSON: elapsedMs).
	Elapsed time.Duration `json:"-"`
	// Transports has one entry per transport used.
	Transports map[string]TransportStats `json:"transports"`
	// Total sums every transport.
	Total TransportStats `json:"total"`
}

// TransportStats are the counts of the viewers of one transport.
type TransportStats struct {
	// Viewers is how many viewers use the transport.
	Viewers int64 `json:"viewers"`
	// Connected is how many are connected at the snapshot (for polls: in a
	// session that has not failed).
	Connected int64 `json:"connected"`
	// Connections counts streams opened (polls: sessions started).
	Connections int64 `json:"connections"`
	// Reconnects counts connections after a viewer's first.
	Reconnects int64 `json:"reconnects"`
	// Frames counts messages that carried points.
	Frames int64 `json:"frames"`
	// Points counts points received, duplicates included.
	Points int64 `json:"points"`
	// UniqueMin and UniqueMax are the least and the greatest number of
	// distinct points one viewer received: Points less Duplicates, per
	// viewer. Equal when every viewer got the same set.
	UniqueMin int64 `json:"uniqueMin"`
	UniqueMax int64 `json:"uniqueMax"`
	// Duplicates counts points (same series, time and value) a viewer had
	// already received, as far as its DedupeWindow reaches.
	Duplicates int64 `json:"duplicates"`
	// Gaps counts gap notices.
	Gaps int64 `json:"gaps"`
	// GapMs sums the gaps' spans (to-from), in ms of reading time.
	GapMs int64 `json:"gapMs"`
	// Resets counts reset notices.
	Resets int64 `json:"resets"`
	// Heartbeats counts heartbeats.
	Heartbeats int64 `json:"heartbeats"`
	// Presence counts presence events.
	Presence int64 `json:"presence"`
	// Errors counts failed connections and requests, broken streams,
	// malformed messages and error messages from the server. Streams and
	// requests broken by an injected disconnect are not errors.
	Errors int64 `json:"errors"`
	// Disconnects counts disconnects injected by flaky mode that reset at
	// least one connection.
	Disconnects int64 `json:"disconnects"`
	// Stalls counts stalls injected by flaky mode.
	Stalls int64 `json:"stalls"`
	// Latency is receive time minus reading time of every point that was
	// not a duplicate.
	Latency LatencySummary `json:"latency"`
}

func (t *TransportStats) add(o TransportStats) {
	switch {
	case t.Viewers == 0:
		t.UniqueMin, t.UniqueMax = o.UniqueMin, o.UniqueMax
	case o.Viewers > 0:
		t.UniqueMin = min(t.UniqueMin, o.UniqueMin)
		t.UniqueMax = max(t.UniqueMax, o.UniqueMax)
	}
	t.Viewers += o.Viewers
	t.Connected += o.Connected
	t.Connections += o.Connections
	t.Reconnects += o.Reconnects
	t.Frames += o.Frames
	t.Points += o.Points
	t.Duplicates += o.Duplicates
	t.Gaps += o.Gaps
	t.GapMs += o.GapMs
	t.Resets += o.Resets
	t.Heartbeats += o.Heartbeats
	t.Presence += o.Presence
	t.Errors += o.Errors
	t.Disconnects += o.Disconnects
	t.Stalls += o.Stalls
}

// ExactlyOnce reports whether every viewer received every point exactly
// once, given that expectedPerViewer distinct points were published to
// each: no duplicates, no gap or reset notices, and each viewer's count of
// distinct points equal to expectedPerViewer.
//
// Duplicates are found only within each viewer's DedupeWindow (and its
// memory of 131,072 points). A point replayed from further back counts as
// a new one, and so does every point with duplicate detection off: then
// the counts exceed expectedPerViewer and ExactlyOnce is false, unless as
// many points were lost, which the count cannot tell apart.
func (s ViewersStats) ExactlyOnce(expectedPerViewer int64) bool {
	t := s.Total
	return t.Viewers > 0 && t.Duplicates == 0 && t.Gaps == 0 && t.Resets == 0 &&
		t.UniqueMin == expectedPerViewer && t.UniqueMax == expectedPerViewer
}

// MarshalJSON encodes the stats with Elapsed in milliseconds.
func (s ViewersStats) MarshalJSON() ([]byte, error) {
	type plain ViewersStats
	return json.Marshal(struct {
		plain
		ElapsedMs float64 `json:"elapsedMs"`
	}{plain(s), durationMs(s.Elapsed)})
}

// Summary formats the stats as a table: one row per transport and a total.
func (s ViewersStats) Summary() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "transport\tviewers\tconns\treconn\tdisconn\tstalls\tframes\tpoints\tuniq min\tuniq max\tdups\tgaps\tgap ms\tresets\theartbeats\terrors\tp50\tp90\tp99\tmax\t")
	row := func(name string, t TransportStats) {
		l := t.Latency
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t\n",
			name, t.Viewers, t.Connections, t.Reconnects, t.Disconnects, t.Stalls, t.Frames, t.Points,
			t.UniqueMin, t.UniqueMax, t.Duplicates, t.Gaps, t.GapMs, t.Resets, t.Heartbeats, t.Errors,
			fmtLatency(l.P50, l.Count), fmtLatency(l.P90, l.Count), fmtLatency(l.P99, l.Count), fmtLatency(l.Max, l.Count))
	}
	for _, name := range transports {
		if t, ok := s.Transports[name]; ok {
			row(name, t)
		}
	}
	row("total", s.Total)
	_ = tw.Flush()
	fmt.Fprintf(&b, "elapsed %s\n", s.Elapsed.Round(time.Millisecond))
	return b.String()
}

func fmtLatency(d time.Duration, n uint64) string {
	if n == 0 {
		return "-"
	}
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

// RunViewers runs cfg.Viewers live viewers against the server at cfg.URL
// until cfg.Duration passes or ctx ends, then closes every stream and
// returns the counts. Each viewer subscribes to cfg.Series, reconnects
// with backoff after a failure (or an injected disconnect, cfg.Flaky) and
// resumes from the last cursor it saw.
//
// It returns an error for an invalid config, or when no viewer ever
// connected although some tried.
func RunViewers(ctx context.Context, cfg ViewersConfig, log *slog.Logger) (ViewersStats, error) {
	if err := cfg.setDefaults(); err != nil {
		return ViewersStats{}, fmt.Errorf("configure viewers: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "simulators.viewers")
	client := cfg.HTTPClient
	if client == nil {
		client = NewViewerHTTPClient(cfg.Viewers)
		defer client.CloseIdleConnections()
	}
	start := time.Now()
	cfg.Counters.start.Store(start.UnixNano())
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	vs := make([]*viewer, cfg.Viewers)
	for i := range vs {
		vs[i] = newViewer(&cfg, i, client, log)
		if cfg.Flaky.DisconnectEvery > 0 {
			v := vs[i]
			v.link = newViewerLink(v.tc)
			c, err := v.link.client(client)
			if err != nil {
				return ViewersStats{}, fmt.Errorf("configure viewers: %w", err)
			}
			v.client = c
		}
	}
	var wg sync.WaitGroup
	for i, v := range vs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if cfg.Ramp > 0 {
				if !sleepCtx(ctx, time.Duration(int64(cfg.Ramp)*int64(i)/int64(cfg.Viewers))) {
					return
				}
			}
			v.run(ctx)
		}()
	}
	wg.Wait()
	s := cfg.Counters.Snapshot()
	s.Elapsed = time.Since(start)
	log.Info("viewers done", "connections", s.Total.Connections, "frames", s.Total.Frames,
		"points", s.Total.Points, "errors", s.Total.Errors, "p99", s.Total.Latency.P99)
	if s.Total.Connections == 0 && s.Total.Errors > 0 {
		return s, fmt.Errorf("connect viewers to %s: every attempt failed", cfg.URL)
	}
	return s, nil
}

// viewer is one simulated viewer, owned by its goroutine.
type viewer struct {
	cfg       *ViewersConfig
	i         int
	transport string
	tc        *transportCounters
	client    *http.Client
	log       *slog.Logger
	rng       *rand.Rand
	// unique counts the distinct points received (TransportStats.UniqueMin).
	unique *atomic.Int64

	// Flaky mode (ViewerFlaky): link is nil without disconnects; flaky is
	// set when any misbehaviour is configured, flakyArmed once it has
	// begun, and nextStall is when the next stall falls due.
	link       *viewerLink
	flaky      bool
	flakyArmed bool
	nextStall  time.Time
	// sessionMark is the link's disconnect sequence when the current
	// session began (viewerLink.cutSince).
	sessionMark uint64

	// cursor is the last position seen: the resume point.
	cursor []byte
	// connectedOnce is set after the viewer's first connection; later
	// ones are reconnects.
	connectedOnce bool
	// failures counts consecutive failed attempts, for backoff.
	failures int
	// retry is the server's SSE reconnection time, when it sent one.
	retry time.Duration

	// Duplicate detection: a hash of (series, t, v) -> t, pruned to
	// DedupeWindow behind the newest t seen.
	seen      map[uint64]int64
	newestMs  int64
	latencies []time.Duration // scratch for one frame

	// Per-transport state, kept across reconnects.
	dec     liveDecoder
	points  []point // SSE frames
	sse     *sseParser
	sseBuf  *bufio.Reader
	wsMsg   wsMessage
	wsBuf   bytes.Buffer
	poll    pollAnswer
	pollBuf bytes.Buffer
}

// setCursor remembers the resume cursor (copied: c is usually borrowed).
func (v *viewer) setCursor(c []byte) {
	if len(c) > 0 {
		v.cursor = append(v.cursor[:0], c...)
	}
}

func newViewer(cfg *ViewersConfig, i int, client *http.Client, log *slog.Logger) *viewer {
	tr := cfg.transportOf(i)
	v := &viewer{
		cfg:       cfg,
		i:         i,
		transport: tr,
		tc:        &cfg.Counters.by[transportIndex(tr)],
		client:    client,
		log:       log.With("viewer", i, "transport", tr),
		rng:       newRand(int64(i), 0x71e3),
		flaky:     cfg.Flaky.DisconnectEvery > 0 || cfg.Flaky.StallEvery > 0,
	}
	v.unique = v.tc.addViewer()
	if cfg.DedupeWindow > 0 {
		v.seen = make(map[uint64]int64)
	}
	return v
}

// run connects, streams and reconnects until ctx ends.
func (v *viewer) run(ctx context.Context) {
	defer v.runFlaky(ctx)()
	for ctx.Err() == nil {
		v.sessionMark = v.link.sessionStart()
		var err error
		switch v.transport {
		case TransportSSE:
			err = v.runSSE(ctx)
		case TransportWS:
			err = v.runWS(ctx)
		default:
			err = v.runPoll(ctx, v.transport == TransportLongPoll)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil && v.link.cutSince(v.sessionMark) {
			// Counted as a disconnect, not as an error.
			v.log.Debug("viewer stream cut", "err", err)
			err = nil
		}
		if err != nil {
			v.tc.errs.Add(1)
			v.log.Debug("viewer stream ended", "err", err)
		}
		if !sleepCtx(ctx, v.backoff()) {
			return
		}
	}
}

// connected records a new connection; the caller must call disconnected.
func (v *viewer) connected() {
	v.tc.connections.Add(1)
	v.tc.connected.Add(1)
	if v.connectedOnce {
		v.tc.reconnects.Add(1)
	}
	v.connectedOnce = true
}

func (v *viewer) disconnected() { v.tc.connected.Add(-1) }

// received marks that the current connection delivered something, so the
// next reconnect starts from the first backoff step.
func (v *viewer) received() {
	v.failures = 0
	if v.flaky && !v.flakyArmed {
		v.armFlaky()
	}
}

// backoff returns the delay before the next attempt: the SSE retry time or
// Backoff, doubled per consecutive failure up to MaxBackoff, ±25 % jitter.
func (v *viewer) backoff() time.Duration {
	base := v.cfg.Backoff
	if v.retry > 0 {
		base = v.retry
	}
	d := float64(base) * math.Pow(2, float64(min(v.failures, 20)))
	d = min(d, float64(max(v.cfg.MaxBackoff, base)))
	v.failures++
	return time.Duration(d * (0.75 + 0.5*v.rng.Float64()))
}

// onPoints counts a frame of points, its duplicates and its latencies.
func (v *viewer) onPoints(pts []point) {
	v.received()
	if len(pts) == 0 {
		return
	}
	if v.cfg.OnEvent != nil {
		lps := make([]LivePoint, len(pts))
		for i := range pts {
			lps[i] = LivePoint{Series: string(pts[i].S), TimeMs: pts[i].T, Value: pts[i].V}
		}
		v.cfg.OnEvent(ViewerEvent{Viewer: v.i, Transport: v.transport, Kind: ViewerEventPoints, Points: lps})
	}
	recv := v.cfg.Now()
	v.tc.frames.Add(1)
	v.tc.points.Add(int64(len(pts)))
	lats := v.latencies[:0]
	dups := 0
	for i := range pts {
		p := &pts[i]
		if v.duplicate(p) {
			dups++
			continue
		}
		lats = append(lats, recv.Sub(time.UnixMilli(p.T)))
	}
	v.latencies = lats
	v.unique.Add(int64(len(pts) - dups))
	if dups > 0 {
		v.tc.duplicates.Add(int64(dups))
	}
	v.tc.latency.recordAll(lats)
}

// dedupeLimit bounds a viewer's memory of points; past it the oldest half
// of the window is forgotten.
const dedupeLimit = 1 << 17

// duplicate reports whether the viewer saw p before, and remembers it.
func (v *viewer) duplicate(p *point) bool {
	if v.seen == nil {
		return false
	}
	// FNV-1a over series, time and value bits.
	h := uint64(14695981039346656037)
	for i := 0; i < len(p.S); i++ {
		h ^= uint64(p.S[i])
		h *= 1099511628211
	}
	for _, x := range [2]uint64{uint64(p.T), math.Float64bits(p.V)} {
		for range 8 {
			h ^= x & 0xff
			h *= 1099511628211
			x >>= 8
		}
	}
	if _, ok := v.seen[h]; ok {
		return true
	}
	v.seen[h] = p.T
	v.newestMs = max(v.newestMs, p.T)
	if len(v.seen) >= dedupeLimit {
		v.pruneSeen()
	}
	return false
}

func (v *viewer) pruneSeen() {
	window := v.cfg.DedupeWindow.Milliseconds()
	for len(v.seen) >= dedupeLimit/2 && window > 0 {
		cut := v.newestMs - window
		for k, t := range v.seen {
			if t < cut {
				delete(v.seen, k)
			}
		}
		window /= 2
	}
	if len(v.seen) >= dedupeLimit/2 {
		clear(v.seen)
	}
}

func (v *viewer) onGap(g wireGap) {
	v.received()
	if v.cfg.OnEvent != nil {
		v.cfg.OnEvent(ViewerEvent{Viewer: v.i, Transport: v.transport, Kind: ViewerEventGap, FromMs: g.From, ToMs: g.To})
	}
	v.tc.gaps.Add(1)
	if g.To >= g.From {
		v.tc.gapMs.Add(g.To - g.From)
	}
}

func (v *viewer) onReset() {
	v.received()
	if v.cfg.OnEvent != nil {
		v.cfg.OnEvent(ViewerEvent{Viewer: v.i, Transport: v.transport, Kind: ViewerEventReset})
	}
	v.tc.resets.Add(1)
}

func (v *viewer) onHeartbeat() {
	v.received()
	v.tc.heartbeats.Add(1)
}

func (v *viewer) onPresence() {
	v.received()
	v.tc.presence.Add(1)
}

// endpoint returns the URL of an API path with the subscription, rate and
// the given extra parameters (name, value pairs; empty values are left out).
func (v *viewer) endpoint(base, path string, extra ...string) string {
	q := url.Values{}
	for _, s := range v.cfg.Series {
		q.Add("series", s)
	}
	if v.cfg.Rate > 0 {
		q.Set("rate", strconv.Itoa(v.cfg.Rate))
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] != "" {
			q.Set(extra[i], extra[i+1])
		}
	}
	return base + "/api/v1/" + path + "?" + q.Encode()
}

// newRequest builds a GET with the configured headers.
func (v *viewer) newRequest(ctx context.Context, u string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	for k, vs := range v.cfg.Header {
		for _, s := range vs {
			req.Header.Add(k, s)
		}
	}
	return req, nil
}

// statusError is a non-2xx answer, with the server's {"error":...} message.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string {
	if e.msg != "" {
		return fmt.Sprintf("HTTP %d: %s", e.code, e.msg)
	}
	return fmt.Sprintf("HTTP %d", e.code)
}

// errorMessage extracts the message of an {"error":"..."} body.
func errorMessage(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// errMessageTooLarge is a message over MaxMessageBytes.
var errMessageTooLarge = errors.New("message too large")
