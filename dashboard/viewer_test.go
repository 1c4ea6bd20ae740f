package dashboard

import (
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest"
)

// slowQueueBytes fits two four-reading frames but not three, nor a gap
// event and two frames (see requireSlowSizes).
const slowQueueBytes = 650

// frameN returns frame i of a slow-viewer test: four dev1/temperature
// readings with 13-digit times and one-digit values, so every such message
// has the same size whatever i is (below 36, one cursor digit).
func frameN(i int) []ingest.Reading {
	base := t0.UnixMilli() + int64(i)*10
	return []ingest.Reading{
		rd("dev1/temperature", base+2, 1),
		rd("dev1/temperature", base, 2), // out of order: min is not first
		rd("dev1/temperature", base+3, 3),
		rd("dev1/temperature", base+1, 4),
	}
}

// requireSlowSizes checks the arithmetic the slow-viewer tests rely on.
func requireSlowSizes(t testing.TB, e Event) {
	t.Helper()
	m := e.size()
	gap := (&Event{Kind: EventGap}).size()
	require.LessOrEqual(t, 2*m, slowQueueBytes, "two frames fit")
	require.Greater(t, 3*m, slowQueueBytes, "three frames do not")
	require.Greater(t, gap+2*m, slowQueueBytes, "a gap and two frames do not")
	require.LessOrEqual(t, gap+m, slowQueueBytes, "a gap and a frame do")
}

func newSlowViewer(t testing.TB) (*Hub, *Viewer, *clockwork.FakeClock) {
	t.Helper()
	h, clock := newTestHub(t, HubConfig{ViewerQueueBytes: slowQueueBytes, Heartbeat: time.Second})
	v, _ := subscribe(t, h, SubscribeOptions{Transport: "sse"}, "dev1/#")
	v.Next(nil)
	return h, v, clock
}

func span(frames ...int) Gap {
	g := Gap{FromMs: frameN(frames[0])[1].TimeMs, ToMs: frameN(frames[0])[2].TimeMs}
	for _, i := range frames[1:] {
		g.FromMs = min(g.FromMs, frameN(i)[1].TimeMs)
		g.ToMs = max(g.ToMs, frameN(i)[2].TimeMs)
	}
	return g
}

func TestViewerOverflowSkipsToGap(t *testing.T) {
	h, v, _ := newSlowViewer(t)
	c1 := publishFrame(t, h, frameN(1)...)
	c2 := publishFrame(t, h, frameN(2)...)
	require.True(t, v.Pending())
	v.mu.Lock()
	requireSlowSizes(t, v.events[0])
	v.mu.Unlock()

	c3 := publishFrame(t, h, frameN(3)...)
	evs := v.Next(nil)
	require.Equal(t, []EventKind{EventGap, EventPoints}, kinds(evs), "the gap replaces frames 1 and 2, before frame 3")
	require.Equal(t, span(1, 2), evs[0].Gap)
	require.Equal(t, c2, evs[0].Cursor, "the gap's cursor is the latest skipped frame's")
	require.NotEqual(t, c1, evs[0].Cursor)
	require.Equal(t, c3, evs[1].Msg.Cursor)
	require.Equal(t, frameN(3), evs[1].Msg.Points)
	select {
	case <-v.Done():
		t.Fatal("one overflow must not end the viewer")
	default:
	}

	// After a drain the next gap starts afresh.
	publishFrame(t, h, frameN(4)...)
	c5 := publishFrame(t, h, frameN(5)...)
	publishFrame(t, h, frameN(6)...)
	evs = v.Next(nil)
	require.Equal(t, []EventKind{EventGap, EventPoints}, kinds(evs))
	require.Equal(t, span(4, 5), evs[0].Gap)
	require.Equal(t, c5, evs[0].Cursor)
}

func TestViewerRepeatedOverflowEndsViewer(t *testing.T) {
	h, v, clock := newSlowViewer(t)
	var cursors []string
	for i := 1; i <= 5; i++ {
		cursors = append(cursors, publishFrame(t, h, frameN(i)...))
	}
	select {
	case <-v.Done():
	default:
		t.Fatal("a viewer that overflowed three times without draining was not ended")
	}
	require.Equal(t, ReasonTooSlow, v.Reason())

	// Nothing reaches it any more, heartbeats included.
	publishFrame(t, h, frameN(6)...)
	h.PublishPresence("dev1", true, clock.Now())
	barrier(t, h)
	clock.Advance(2 * time.Second)
	h.heartbeats()

	evs := v.Next(nil)
	require.Equal(t, []EventKind{EventGap, EventPoints, EventClosing}, kinds(evs), "the closing event is the last")
	require.Equal(t, span(1, 2, 3), evs[0].Gap)
	require.Equal(t, cursors[2], evs[0].Cursor)
	require.Equal(t, cursors[3], evs[1].Msg.Cursor)
	require.NotEmpty(t, evs[2].Reason)
	v.Close()
}

func TestViewerThatDrainsSurvivesOverflows(t *testing.T) {
	h, v, _ := newSlowViewer(t)
	for round := range 10 {
		for i := 1; i <= 3; i++ { // three frames: one overflow per round
			publishFrame(t, h, frameN(round*3+i)...)
		}
		evs := v.Next(nil)
		require.Equal(t, []EventKind{EventGap, EventPoints}, kinds(evs), "round %d", round)
	}
	select {
	case <-v.Done():
		t.Fatal("a viewer that drains between overflows was ended")
	default:
	}
}

func TestViewerFrameLargerThanQueue(t *testing.T) {
	var big []ingest.Reading
	for i := range 20 {
		big = append(big, rd("dev1/temperature", t0.UnixMilli()+500+int64(i), 5))
	}
	for _, tc := range []struct {
		name   string
		before []int // frames queued first
		want   Gap
	}{
		{"alone", nil, Gap{FromMs: t0.UnixMilli() + 500, ToMs: t0.UnixMilli() + 519}},
		{"after a queued frame", []int{1}, Gap{FromMs: span(1).FromMs, ToMs: t0.UnixMilli() + 519}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, v, _ := newSlowViewer(t)
			for _, i := range tc.before {
				publishFrame(t, h, frameN(i)...)
			}
			c := publishFrame(t, h, big...)
			evs := v.Next(nil)
			require.Equal(t, []Event{{Kind: EventGap, Gap: tc.want, Cursor: c}}, evs)
		})
	}
}

func TestViewerSkipKeepsOtherEventsInOrder(t *testing.T) {
	h, v, clock := newSlowViewer(t)
	c1 := publishFrame(t, h, frameN(1)...)
	h.PublishPresence("dev1", false, clock.Now())
	barrier(t, h)
	c2 := publishFrame(t, h, frameN(2)...)
	evs := v.Next(nil)
	require.Equal(t, []EventKind{EventPresence, EventGap, EventPoints}, kinds(evs))
	require.Equal(t, Presence{Device: "dev1", Online: false, TimeMs: t0.UnixMilli()}, evs[0].Presence)
	require.Equal(t, Event{Kind: EventGap, Gap: span(1), Cursor: c1}, evs[1])
	require.Equal(t, c2, evs[2].Msg.Cursor)
}

// TestViewerOverflowWithoutPointsQueuesNoGap: when a frame overflows a
// queue that holds no point messages (only presence here), nothing was
// skipped, so there is no gap to report; a gap event here would carry an
// empty range and an empty cursor (or a stale one from an earlier gap).
func TestViewerOverflowWithoutPointsQueuesNoGap(t *testing.T) {
	h, v, clock := newSlowViewer(t)

	// An earlier gap, drained: its range must not come back.
	for i := 1; i <= 3; i++ {
		publishFrame(t, h, frameN(i)...)
	}
	require.Equal(t, []EventKind{EventGap, EventPoints}, kinds(v.Next(nil)))

	for i := range 4 {
		h.PublishPresence("dev1", i%2 == 0, clock.Now())
	}
	barrier(t, h)
	c := publishFrame(t, h, frameN(4)...)
	evs := v.Next(nil)
	require.Equal(t, []EventKind{EventPresence, EventPresence, EventPresence, EventPresence, EventPoints}, kinds(evs))
	require.Equal(t, c, evs[4].Msg.Cursor)
}

func TestViewerBasics(t *testing.T) {
	h, clock := newTestHub(t, HubConfig{})
	v, _ := subscribe(t, h, SubscribeOptions{Transport: "ws", Ping: true}, "dev1/#")
	w, _ := subscribe(t, h, SubscribeOptions{Transport: "ws"}, "dev1/#")
	require.NotEqual(t, v.ID(), w.ID())
	require.Equal(t, t0.UnixMilli(), v.LastPongMs())
	v.Pong(clock.Now().UnixMilli() + 5)
	require.Equal(t, t0.UnixMilli()+5, v.LastPongMs())

	require.True(t, v.Pending())
	buf := make([]Event, 0, 4)
	buf = v.Next(buf)
	require.Len(t, buf, 1)
	require.False(t, v.Pending())
	require.Empty(t, v.Next(nil))

	// Close is idempotent and safe from several goroutines at once.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(v.Close)
	}
	wg.Wait()
	h.Notify(v, Event{Kind: EventError, Reason: "late"})
	publishFrame(t, h, rd("dev1/a", t0.UnixMilli(), 1))
	require.False(t, v.Pending(), "a closed viewer queues nothing")
	require.Equal(t, "", v.Reason(), "closed by its transport, not ended by the hub")
	require.Equal(t, 1, len(points(w.Next(nil))))
}

func TestViewerPatterns(t *testing.T) {
	h, _ := newTestHub(t, HubConfig{})
	v, _ := subscribe(t, h, SubscribeOptions{}, "b/#", "a/x", "b/#")
	require.Equal(t, []string{"a/x", "b/#"}, v.Patterns().List())
}
