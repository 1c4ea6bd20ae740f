package simulators

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ViewerFlaky makes viewers behave like clients on a bad mobile link
// (ViewersConfig.Flaky). The zero value is a well-behaved viewer.
//
// A viewer turns flaky only once it holds a cursor to resume from: a
// disconnect before that would merely restart its subscription, which
// tests nothing and would make exactly-once accounting meaningless
// (nothing was promised to a viewer without a cursor).
type ViewerFlaky struct {
	// DisconnectEvery is the mean time between abrupt disconnects of a
	// viewer: every connection it holds (a stream, a poll in flight, an
	// idle kept-alive one) is reset with no protocol goodbye, and its
	// session ends. The viewer reconnects with its normal backoff and
	// resumes from its cursor. Intervals are exponential, drawn from the
	// viewer's own seeded generator. Zero or negative means never.
	DisconnectEvery time.Duration `yaml:"disconnect-every"`
	// StallEvery is the mean time between stalls, exponential like
	// DisconnectEvery. In a stall the viewer stops reading its stream (a
	// poller pauses before its next poll) for StallFor, as a phone in a
	// tunnel does: the server's buffers fill, then the viewer carries on
	// reading the same connection. Zero or negative means never.
	StallEvery time.Duration `yaml:"stall-every"`
	// StallFor is how long a stall lasts. Zero or negative means 1 s.
	StallFor time.Duration `yaml:"stall-for"`
}

func (f *ViewerFlaky) setDefaults() {
	if f.StallFor <= 0 {
		f.StallFor = time.Second
	}
}

// errViewerCut ends a poll session after an injected disconnect.
var errViewerCut = errors.New("connection cut by flaky mode")

// expInterval draws an exponentially distributed interval of the given
// mean: the gaps between events of a Poisson process, so that cuts and
// stalls hit every phase of a viewer's life with no pattern.
func expInterval(rng *rand.Rand, mean time.Duration) time.Duration {
	return time.Duration(rng.ExpFloat64() * float64(mean))
}

// viewerLink is a viewer's network as flaky mode sees it: every
// connection the viewer dialled and has not closed, so that a disconnect
// resets them all.
//
// Disconnects close the TCP connection under the protocol instead of
// cancelling the request context: net/http turns a cancelled context into
// a closed socket for HTTP/1.1 but into a RST_STREAM on a still-open
// connection for HTTP/2, and a WebSocket's dial context does nothing once
// the handshake is done (ending it cleanly means a close frame, which a
// dead link never sends). Closing the socket itself, with
// SO_LINGER 0 so that the kernel sends RST rather than FIN, is what a lost
// bearer looks like to the server whatever the protocol, and it leaves no
// TIME_WAIT socket behind, so a large swarm that disconnects often does
// not run out of ports. It needs connections only this viewer uses, so in
// flaky mode each viewer gets its own HTTP transport (viewerLink.client).
type viewerLink struct {
	tc *transportCounters
	// armed is set once the viewer holds a cursor (ViewerFlaky).
	armed atomic.Bool
	// seq counts disconnects twice, before and after closing: odd while
	// one is under way. A session that sees it change, or odd, was cut.
	seq atomic.Uint64

	mu    sync.Mutex // guards conns
	conns map[*viewerConn]struct{}
}

func newViewerLink(tc *transportCounters) *viewerLink {
	return &viewerLink{tc: tc, conns: make(map[*viewerConn]struct{})}
}

// viewerConn is a connection a viewerLink can reset.
type viewerConn struct {
	net.Conn
	l *viewerLink
}

// Close forgets the connection and closes it.
func (c *viewerConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// reset closes the connection with a TCP RST.
func (c *viewerConn) reset() {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Conn.Close()
}

// wrapDial makes dial's connections resettable by l.
func (l *viewerLink) wrapDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		vc := &viewerConn{Conn: c, l: l}
		l.mu.Lock()
		l.conns[vc] = struct{}{}
		l.mu.Unlock()
		return vc, nil
	}
}

// client returns a client like base whose connections are l's alone:
// base's transport cloned, dialling through l. base's transport must be
// an *http.Transport (nil means http.DefaultTransport).
func (l *viewerLink) client(base *http.Client) (*http.Client, error) {
	rt := base.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	tr, ok := rt.(*http.Transport)
	if !ok {
		return nil, fmt.Errorf("flaky disconnects need an *http.Transport, have %T", rt)
	}
	tr = tr.Clone()
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	tr.DialContext = l.wrapDial(dial)
	if tr.DialTLSContext != nil {
		tr.DialTLSContext = l.wrapDial(tr.DialTLSContext)
	}
	// One stream or poll at a time, and one left over from the last.
	tr.MaxIdleConnsPerHost = 2
	c := *base
	c.Transport = tr
	return &c, nil
}

// cut resets every connection of an armed viewer, and counts a disconnect
// if there was one to reset.
func (l *viewerLink) cut() {
	if !l.armed.Load() {
		return
	}
	l.seq.Add(1)
	defer l.seq.Add(1)
	l.mu.Lock()
	conns := make([]*viewerConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	clear(l.conns)
	l.mu.Unlock()
	for _, c := range conns {
		c.reset()
	}
	if len(conns) > 0 {
		l.tc.disconnects.Add(1)
	}
}

// run cuts at exponential intervals of mean every until ctx ends. It runs
// on a goroutine of its own because a viewer blocked in a read cannot cut
// itself.
func (l *viewerLink) run(ctx context.Context, every time.Duration, rng *rand.Rand) {
	t := time.NewTimer(expInterval(rng, every))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.cut()
		t.Reset(expInterval(rng, every))
	}
}

// sessionStart returns the mark to pass to cutSince at the session's end.
// A nil link is never cut.
func (l *viewerLink) sessionStart() uint64 {
	if l == nil {
		return 0
	}
	return l.seq.Load()
}

// cutSince reports whether a disconnect was under way at mark or has
// happened since.
func (l *viewerLink) cutSince(mark uint64) bool {
	if l == nil {
		return false
	}
	return mark%2 == 1 || l.seq.Load() != mark
}

// runFlaky starts the viewer's disconnect loop, if any, and returns a
// function that stops it and waits for it.
func (v *viewer) runFlaky(ctx context.Context) (stop func()) {
	if v.link == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	// Its own generator: v.rng belongs to the viewer's goroutine.
	rng := newRand(int64(v.i), 0xd15c)
	go func() {
		defer close(done)
		v.link.run(ctx, v.cfg.Flaky.DisconnectEvery, rng)
	}()
	return func() {
		cancel()
		<-done
		v.client.CloseIdleConnections()
	}
}

// armFlaky turns flaky mode on once the viewer holds a cursor. Callers
// run on the viewer's goroutine.
func (v *viewer) armFlaky() {
	if v.flakyArmed || !v.flaky {
		return
	}
	if len(v.cursor) == 0 && (v.sse == nil || len(v.sse.LastID) == 0) {
		return
	}
	v.flakyArmed = true
	if v.link != nil {
		v.link.armed.Store(true)
	}
	if v.cfg.Flaky.StallEvery > 0 {
		v.nextStall = time.Now().Add(expInterval(v.rng, v.cfg.Flaky.StallEvery))
	}
}

// maybeStall stops the viewer for StallFor when a stall is due. It is
// called between messages, so a stall that falls due while the stream is
// quiet starts with the next message: not reading an idle connection
// would change nothing. Stalls run on the wall clock, not cfg.Now, which
// only stamps receive times.
func (v *viewer) maybeStall(ctx context.Context) {
	if !v.flakyArmed || v.cfg.Flaky.StallEvery <= 0 || time.Now().Before(v.nextStall) {
		return
	}
	v.tc.stalls.Add(1)
	sleepCtx(ctx, v.cfg.Flaky.StallFor)
	v.nextStall = time.Now().Add(expInterval(v.rng, v.cfg.Flaky.StallEvery))
}
