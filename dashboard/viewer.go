package dashboard

import (
	"sync"
	"sync/atomic"
)

// Viewer is one live subscriber: a WebSocket, an SSE stream, or one long
// poll. The hub fills its queue; the transport drains it with Next when
// Ready fires, and calls Close when the client goes away.
//
// The queue is bounded in bytes. When a frame would overflow it, the queued
// point messages are dropped and replaced by one Gap event covering their
// reading times, so the client backfills from history instead of silently
// missing data; a viewer that overflows again and again without draining is
// closed as too slow.
type Viewer struct {
	hub       *Hub
	id        uint64
	transport string
	wantsPing bool

	// Guarded by hub.mu.
	patterns   Patterns
	group      *group
	lastSentMs int64 // when the hub last queued something for this viewer
	lastPingMs int64

	mu        sync.Mutex // guards the fields below
	events    []Event
	bytes     int
	gap       Gap    // reading times skipped since the last drain
	gapCursor string // cursor of the latest skipped message
	gapped    bool
	overflows int // overflows since the last drain
	closed    bool
	reason    string

	onEnd atomic.Pointer[func(reason string)] // set by the transport

	lastPongMs atomic.Int64 // set by the transport when a pong arrives
	notify     chan struct{}
	done       chan struct{} // closed when the hub ends the viewer
	closeOnce  sync.Once
}

// Reasons the hub ends a viewer, as Viewer.Reason reports them.
const (
	ReasonShutdown = "shutdown"
	ReasonTooSlow  = "too slow"
)

// maxIdleEvents is the event capacity a drained viewer keeps; a bigger
// array, grown in a burst, is let go.
const maxIdleEvents = 16

// maxOverflows is how many times a viewer's queue may overflow between two
// drains before the viewer is disconnected as too slow.
const maxOverflows = 3

// ID identifies the viewer in logs.
func (v *Viewer) ID() uint64 { return v.id }

// Ready fires when events may be waiting.
func (v *Viewer) Ready() <-chan struct{} { return v.notify }

// Done is closed when the hub ends the viewer: it was too slow, or the
// server is shutting down. The transport should drain and write the
// remaining events (ending with EventClosing on shutdown), then Close.
func (v *Viewer) Done() <-chan struct{} { return v.done }

// Reason says why the hub ended the viewer, once Done is closed.
func (v *Viewer) Reason() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.reason
}

// Next appends every queued event to buf and returns it.
func (v *Viewer) Next(buf []Event) []Event {
	v.mu.Lock()
	buf = append(buf, v.events...)
	if cap(v.events) > maxIdleEvents {
		v.events = nil // an idle viewer should not keep a burst's array
	} else {
		clear(v.events)
		v.events = v.events[:0]
	}
	v.bytes = 0
	v.overflows = 0
	v.gapped = false
	v.mu.Unlock()
	return buf
}

// Pending reports whether events are queued.
func (v *Viewer) Pending() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.events) > 0
}

// OnEnd registers f to be called, once, when the hub ends the viewer (too
// slow, or shutting down), from the hub's goroutine with its lock held: f
// must not block. Transports use it to cut short a write stuck on a peer
// that stopped reading, which Done alone cannot interrupt.
func (v *Viewer) OnEnd(f func(reason string)) { v.onEnd.Store(&f) }

// Pong records that the client answered a ping at nowMs.
func (v *Viewer) Pong(nowMs int64) { v.lastPongMs.Store(nowMs) }

// LastPongMs returns when the client last answered a ping.
func (v *Viewer) LastPongMs() int64 { return v.lastPongMs.Load() }

// Patterns returns the viewer's current subscription.
func (v *Viewer) Patterns() Patterns {
	v.hub.mu.Lock()
	defer v.hub.mu.Unlock()
	return v.patterns
}

// Close unsubscribes the viewer and frees its queue. It is idempotent and
// safe to call from any goroutine.
func (v *Viewer) Close() {
	v.closeOnce.Do(func() {
		v.hub.remove(v)
		v.mu.Lock()
		v.closed = true
		clear(v.events)
		v.events = nil
		v.bytes = 0
		v.mu.Unlock()
		v.hub.wg.Done()
	})
}

// enqueue adds an event and wakes the transport. It returns false when the
// viewer overflowed once too often and must be ended; the caller holds hub.mu
// and ends it.
func (v *Viewer) enqueue(e Event) bool {
	size := e.size()
	v.mu.Lock()
	// An ended viewer's final event (EventClosing) stays its last: it is
	// still in hub.viewers until its transport closes it, and heartbeats or
	// requests must not queue anything after that event.
	if v.closed || v.reason != "" {
		v.mu.Unlock()
		return true
	}
	if e.Kind == EventPoints && v.bytes+size > v.hub.cfg.ViewerQueueBytes {
		v.overflows++
		v.hub.metrics.gaps.Inc() // every skip ahead, not every gap event
		if v.overflows >= maxOverflows {
			v.mu.Unlock()
			return false
		}
		v.skipLocked()
		if size > v.hub.cfg.ViewerQueueBytes {
			// Even alone the frame does not fit: skip it too.
			v.widenGapLocked(e.Msg)
			v.appendLocked(Event{Kind: EventGap, Gap: v.gap, Cursor: e.Msg.Cursor})
			v.mu.Unlock()
			v.wake()
			return true
		}
		// Only when something was skipped since the last drain: otherwise
		// (the queue held no points) v.gap is zero or a drained gap's, and
		// its cursor would move the client back.
		if v.gapped {
			v.appendLocked(Event{Kind: EventGap, Gap: v.gap, Cursor: v.gapCursor})
		}
	}
	v.appendLocked(e)
	v.mu.Unlock()
	v.wake()
	return true
}

func (v *Viewer) appendLocked(e Event) {
	v.events = append(v.events, e)
	v.bytes += e.size()
}

// skipLocked drops every queued point message, widening the viewer's gap to
// cover them, along with queued heartbeats and gap events, which the new gap
// event supersedes. What remains (presence, subscription changes) keeps its
// order. The caller must hold v.mu.
func (v *Viewer) skipLocked() {
	kept := v.events[:0]
	for _, e := range v.events {
		switch e.Kind {
		case EventPoints:
			v.widenGapLocked(e.Msg)
		case EventGap, EventHeartbeat:
		default:
			kept = append(kept, e)
		}
	}
	clear(v.events[len(kept):])
	v.events = kept
	v.bytes = 0
	for i := range v.events {
		v.bytes += v.events[i].size()
	}
}

// widenGapLocked adds a skipped message to the viewer's gap: its reading
// times, and its cursor as the position the gap brings the client to. The
// caller must hold v.mu.
func (v *Viewer) widenGapLocked(m *Message) {
	if !v.gapped {
		v.gap = Gap{FromMs: m.MinMs, ToMs: m.MaxMs}
		v.gapped = true
	} else {
		v.gap.FromMs = min(v.gap.FromMs, m.MinMs)
		v.gap.ToMs = max(v.gap.ToMs, m.MaxMs)
	}
	v.gapCursor = m.Cursor
}

func (v *Viewer) wake() {
	select {
	case v.notify <- struct{}{}:
	default:
	}
}

// end marks the viewer ended by the hub with a final event. The caller
// holds hub.mu.
func (v *Viewer) end(final Event, reason string) {
	v.mu.Lock()
	if v.closed || v.reason != "" {
		v.mu.Unlock()
		return
	}
	v.reason = reason
	v.events = append(v.events, final)
	v.mu.Unlock()
	close(v.done)
	v.wake()
	if f := v.onEnd.Load(); f != nil {
		(*f)(reason)
	}
}
