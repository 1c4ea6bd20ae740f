package web

import (
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/telegauge/telegauge/dashboard"
)

// maxRate caps the rate parameter (frames per second).
const maxRate = 100

// rateParam reads the optional rate parameter: at most that many frames
// per second to this client, readings batched, never dropped. It returns the
// minimum interval between frames, or 0 for no cap. The interval is at most
// maxInterval (the heartbeat interval): the pump's pause holds back every
// event, so a longer one would hold heartbeats and pings past the interval
// in which both ends expect them, and a WebSocket would be taken for dead.
func rateParam(c *fiber.Ctx, maxInterval time.Duration) (time.Duration, error) {
	r := c.Query("rate")
	if r == "" || r == "0" {
		return 0, nil
	}
	n, err := strconv.ParseFloat(r, 64)
	if err != nil || !(n > 0 && n <= maxRate) { // also NaN, which ParseFloat accepts
		return 0, dashboard.Errorf(dashboard.CodeInvalid, "rate must be a number of frames per second between 0 and %d", maxRate)
	}
	// In floating point: for a tiny rate the interval overflows a Duration.
	if iv := float64(time.Second) / n; iv < float64(maxInterval) {
		return time.Duration(iv), nil
	}
	return maxInterval, nil
}

// pump moves a viewer's events to its connection: it waits for events,
// drains them all, and writes them as one batch. With a frame-rate cap it
// waits out the interval first and merges the waiting point messages into
// one frame.
type pump struct {
	v           *dashboard.Viewer
	hub         *dashboard.Hub
	minInterval time.Duration
	// stop, when closed, ends run (the client went away). May be nil.
	stop    <-chan struct{}
	stopped bool
	events  []dashboard.Event
	last    time.Time
}

// run calls write with each batch until write fails, stop closes, or the
// hub ends the viewer (then the final batch is written and run returns nil).
// It returns write's error.
func (p *pump) run(write func([]dashboard.Event) error) error {
	clock := p.hub.Clock()
	for {
		ended := false
		select {
		case <-p.v.Ready():
		case <-p.v.Done():
			ended = true
		case <-p.stop:
			p.stopped = true
			return nil
		}
		if !ended && p.minInterval > 0 {
			if !p.v.Pending() {
				continue // a stale wake-up: nothing to pace
			}
			if wait := p.last.Add(p.minInterval).Sub(clock.Now()); wait > 0 {
				select {
				case <-clock.After(wait):
				case <-p.v.Done():
					ended = true
				case <-p.stop:
					p.stopped = true
					return nil
				}
			}
		}
		p.events = p.v.Next(p.events[:0])
		if p.minInterval > 0 {
			// A rate-capped client gets one frame per interval.
			p.events = mergePoints(p.events)
		}
		if len(p.events) > 0 {
			p.last = clock.Now()
			if err := write(p.events); err != nil {
				return err
			}
		}
		if cap(p.events) > 16 {
			p.events = nil // an idle stream should not keep a burst's array
		}
		if ended {
			return nil
		}
	}
}

// mergePoints joins consecutive point messages into one frame, for a
// rate-capped client.
func mergePoints(evs []dashboard.Event) []dashboard.Event {
	out := evs[:0]
	var run []*dashboard.Message
	flush := func() {
		if len(run) > 0 {
			out = append(out, dashboard.Event{Kind: dashboard.EventPoints, Msg: dashboard.JoinMessages(run)})
			run = run[:0]
		}
	}
	for _, e := range evs {
		if e.Kind == dashboard.EventPoints {
			run = append(run, e.Msg)
			continue
		}
		flush()
		out = append(out, e)
	}
	flush()
	return out
}

// bufPool holds write buffers, so an idle connection holds none.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 1<<20 {
		return // let a huge one go rather than pin it
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

// writeDeadline keeps a connection's write deadline at least WriteTimeout/2
// ahead without setting it for every batch: setting it costs a timer update,
// which with a thousand viewers at 50 frames/s was 6% of the CPU. A write
// that blocks (a peer that stopped reading) still fails within WriteTimeout,
// or sooner once cut (see cut).
type writeDeadline struct {
	timeout time.Duration
	refresh time.Time    // when the deadline next needs moving
	at      time.Time    // the deadline set
	limit   atomic.Int64 // Unix ns no deadline may pass once cut; 0: none
}

// extend moves the deadline if it is due and returns it.
func (d *writeDeadline) extend(set func(time.Time) error) (time.Time, error) {
	now := time.Now()
	limit := d.limit.Load()
	if now.Before(d.refresh) && limit == 0 {
		return d.at, nil
	}
	d.at = now.Add(d.timeout)
	d.refresh = now.Add(d.timeout / 2)
	if limit != 0 {
		if l := time.Unix(0, limit); l.Before(d.at) {
			d.at = l
		}
	}
	return d.at, set(d.at)
}

// cut brings the deadline forward to at most `within` from now, for the
// write in progress (through conn) and every later one. It is safe to call
// from another goroutine.
func (d *writeDeadline) cut(conn net.Conn, within time.Duration) {
	at := time.Now().Add(within)
	d.limit.Store(at.UnixNano())
	_ = conn.SetWriteDeadline(at)
}

// onViewerEnd returns the Viewer.OnEnd callback of a live connection: when
// the hub ends a viewer (too slow, or shutting down) a write stuck on a
// peer that stopped reading gets one more second, time for the final event
// (the WebSocket close code and reason, the SSE retry hint) to leave if the
// peer reads at all, instead of the full WriteTimeout. What the kernel still
// holds for a peer that never reads again is dropped by the TCP user
// timeout (timeoutListener) within two heartbeat intervals.
func onViewerEnd(conn net.Conn, d *writeDeadline) func(reason string) {
	return func(string) { d.cut(conn, time.Second) }
}
