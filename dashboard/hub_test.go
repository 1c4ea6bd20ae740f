package dashboard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest"
	"github.com/telegauge/telegauge/internal/testutil"
)

// t0 is the fake clocks' start: 2023-11-14T22:13:20Z.
var t0 = time.UnixMilli(1_700_000_000_000)

// eventually polls check until it holds or the test fails.
var eventually = testutil.Eventually

// newTestHub returns a running hub on a fake clock at t0. Cleanup stops Run
// and closes the hub; viewers from subscribe are closed before that.
func newTestHub(t testing.TB, cfg HubConfig) (*Hub, *clockwork.FakeClock) {
	t.Helper()
	clock := clockwork.NewFakeClockAt(t0)
	cfg.Clock = clock
	h, err := NewHub(cfg, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		require.NoError(t, h.Close(cctx))
	})
	return h, clock
}

// subscribe registers a viewer that test cleanup closes.
func subscribe(t testing.TB, h *Hub, opts SubscribeOptions, patterns ...string) (*Viewer, string) {
	t.Helper()
	v, ack, err := h.Subscribe(mustPatterns(t, patterns...), opts)
	require.NoError(t, err)
	t.Cleanup(v.Close)
	return v, ack
}

func mustPatterns(t testing.TB, patterns ...string) Patterns {
	t.Helper()
	ps, err := ParsePatterns(patterns)
	require.NoError(t, err)
	return ps
}

func hubSeq(h *Hub) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seq
}

// publishFrame publishes rs and waits until Run has made them one frame
// (queued to every viewer: the hub's seq moves under the same lock). It
// returns the frame's cursor.
func publishFrame(t testing.TB, h *Hub, rs ...ingest.Reading) string {
	t.Helper()
	before := hubSeq(h)
	h.Publish(rs)
	eventually(t, 5*time.Second, func() error {
		if s := hubSeq(h); s == before {
			return fmt.Errorf("no frame after seq %d yet", s)
		}
		return nil
	})
	require.Equal(t, before+1, hubSeq(h), "one publish must make one frame")
	return formatCursor(h.epoch, before+1)
}

// barrier waits until everything published before it (presence included)
// has been handed out: it frames one reading of a series test viewers do
// not subscribe to ("#" viewers get it and must ignore it).
func barrier(t testing.TB, h *Hub) {
	t.Helper()
	publishFrame(t, h, rd("barrier/sync", t0.UnixMilli(), 0))
}

func rd(series string, tMs int64, v float64) ingest.Reading {
	return ingest.Reading{Series: series, TimeMs: tMs, Value: v}
}

func kinds(evs []Event) []EventKind {
	out := make([]EventKind, len(evs))
	for i, e := range evs {
		out[i] = e.Kind
	}
	return out
}

// points concatenates the readings of the point events, leaving out the
// barrier series.
func points(evs []Event) []ingest.Reading {
	var out []ingest.Reading
	for _, e := range evs {
		if e.Kind != EventPoints {
			continue
		}
		for _, p := range e.Msg.Points {
			if p.Series != "barrier/sync" {
				out = append(out, p)
			}
		}
	}
	return out
}

func ofKind(evs []Event, k EventKind) []Event {
	var out []Event
	for _, e := range evs {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

func TestHubFanOutFiltersPerSubscription(t *testing.T) {
	h, _ := newTestHub(t, HubConfig{})
	ms := t0.UnixMilli()
	frame := []ingest.Reading{
		rd("dev1/temperature", ms, 21.5),
		rd("dev1/humidity", ms+1, 40),
		rd("dev2/temperature", ms+2, 19),
		rd("dev2/humidity", ms+3, 55),
		rd("dev3/pressure", ms+4, 1013.25),
	}
	for _, tc := range []struct {
		name     string
		patterns []string
		want     []ingest.Reading
	}{
		{"everything", []string{"#"}, frame},
		{"one device", []string{"dev1/#"}, frame[0:2]},
		{"one metric of every device", []string{"+/temperature"}, []ingest.Reading{frame[0], frame[2]}},
		{"exact series", []string{"dev2/humidity"}, frame[3:4]},
		{"every metric of a device with +", []string{"dev2/+"}, frame[2:4]},
		{"two patterns, overlapping", []string{"dev1/#", "+/temperature"}, []ingest.Reading{frame[0], frame[1], frame[2]}},
		{"nothing matches", []string{"dev9/#"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, ack := subscribe(t, h, SubscribeOptions{Transport: "sse"}, tc.patterns...)
			require.Equal(t, h.Cursor(), ack)
			evs := v.Next(nil)
			require.Len(t, evs, 1)
			require.Equal(t, EventSubscribed, evs[0].Kind)
			require.Equal(t, ack, evs[0].Cursor)
			require.Equal(t, mustPatterns(t, tc.patterns...).List(), evs[0].Series)

			cursor := publishFrame(t, h, frame...)
			evs = v.Next(nil)
			if tc.want == nil {
				require.Empty(t, evs)
				require.False(t, v.Pending())
				return
			}
			require.Len(t, evs, 1)
			require.Equal(t, EventPoints, evs[0].Kind)
			m := evs[0].Msg
			require.Equal(t, tc.want, m.Points)
			require.Equal(t, cursor, m.Cursor)
			require.Equal(t, string(AppendPointsJSON(nil, cursor, tc.want)), string(m.JSON))
			require.Equal(t, tc.want[0].TimeMs, m.MinMs)
			require.Equal(t, tc.want[len(tc.want)-1].TimeMs, m.MaxMs)
		})
	}
}

func TestHubEncodesOncePerSubscription(t *testing.T) {
	h, _ := newTestHub(t, HubConfig{})
	a, _ := subscribe(t, h, SubscribeOptions{}, "dev1/#", "+/temperature")
	b, _ := subscribe(t, h, SubscribeOptions{}, "+/temperature", "dev1/#", "dev1/#") // same set
	c, _ := subscribe(t, h, SubscribeOptions{}, "#")
	d, _ := subscribe(t, h, SubscribeOptions{}, "+/+") // matches the same, but another set
	for _, v := range []*Viewer{a, b, c, d} {
		v.Next(nil)
	}
	ms := t0.UnixMilli()
	publishFrame(t, h, rd("dev1/humidity", ms, 1), rd("dev2/temperature", ms, 2), rd("dev3/x", ms, 3))

	msg := func(v *Viewer) *Message {
		t.Helper()
		evs := v.Next(nil)
		require.Len(t, evs, 1)
		require.Equal(t, EventPoints, evs[0].Kind)
		return evs[0].Msg
	}
	ma, mb, mc, md := msg(a), msg(b), msg(c), msg(d)
	require.Same(t, ma, mb, "viewers with the same subscription share one encoded message")
	require.NotSame(t, mc, md, "different subscriptions are encoded separately")
	require.Equal(t, mc.JSON, md.JSON)
	require.Len(t, ma.Points, 2)
	require.Len(t, mc.Points, 3)

	// Prepared builds once and is shared too.
	calls := 0
	build := func(m *Message) any { calls++; return len(m.JSON) }
	require.Equal(t, len(ma.JSON), ma.Prepared(build))
	require.Equal(t, len(ma.JSON), mb.Prepared(build))
	require.Equal(t, 1, calls)

	// Widening b's subscription moves it to its own group.
	_, err := h.AddSeries(b, mustPatterns(t, "dev3/x"), "")
	require.NoError(t, err)
	b.Next(nil)
	publishFrame(t, h, rd("dev1/humidity", ms, 4))
	require.NotSame(t, msg(a), msg(b))
}

// framesForResume publishes five frames (readings of dev1/a and dev2/b) and
// returns their cursors, index 0 being the cursor before the first.
func framesForResume(t testing.TB, h *Hub) ([]string, [][]ingest.Reading) {
	t.Helper()
	cursors := []string{h.Cursor()}
	var frames [][]ingest.Reading
	for i := range 5 {
		ms := t0.UnixMilli() + int64(i)*1000
		f := []ingest.Reading{rd("dev1/a", ms, float64(i)), rd("dev2/b", ms, float64(10+i))}
		cursors = append(cursors, publishFrame(t, h, f...))
		frames = append(frames, f)
	}
	return cursors, frames
}

func TestHubSubscribeCursor(t *testing.T) {
	for _, tc := range []struct {
		name string
		// cursor picks the resume cursor from the five frames' cursors.
		cursor func(h *Hub, cursors []string) string
		// wantReplay lists the frames (1-based) whose dev1/a readings are
		// replayed; nil with wantReset false means none.
		wantReplay []int
		wantReset  bool
	}{
		{"no cursor: live from now", func(*Hub, []string) string { return "" }, nil, false},
		{"current cursor: nothing to replay", func(_ *Hub, c []string) string { return c[5] }, nil, false},
		{"mid-stream: frames after it", func(_ *Hub, c []string) string { return c[2] }, []int{3, 4, 5}, false},
		{"before the first frame", func(_ *Hub, c []string) string { return c[0] }, []int{1, 2, 3, 4, 5}, false},
		{"foreign epoch", func(h *Hub, _ []string) string { return formatCursor(h.epoch+"x", 2) }, nil, true},
		{"future cursor", func(h *Hub, _ []string) string { return formatCursor(h.epoch, 99) }, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := newTestHub(t, HubConfig{})
			cursors, frames := framesForResume(t, h)
			cursor := tc.cursor(h, cursors)
			v, ack := subscribe(t, h, SubscribeOptions{Cursor: cursor}, "dev1/#")
			evs := v.Next(nil)
			require.NotEmpty(t, evs)
			require.Equal(t, EventSubscribed, evs[0].Kind, "the ack comes first")
			require.Equal(t, ack, evs[0].Cursor)
			switch {
			case tc.wantReset:
				require.Equal(t, h.Cursor(), ack)
				require.Equal(t, []EventKind{EventSubscribed, EventReset}, kinds(evs))
				require.Equal(t, h.Cursor(), evs[1].Cursor)
			case tc.wantReplay == nil:
				if cursor == "" {
					require.Equal(t, h.Cursor(), ack)
				} else {
					require.Equal(t, cursor, ack)
				}
				require.Equal(t, []EventKind{EventSubscribed}, kinds(evs))
			default:
				require.Equal(t, cursor, ack)
				require.Equal(t, []EventKind{EventSubscribed, EventPoints}, kinds(evs))
				var want []ingest.Reading
				for _, i := range tc.wantReplay {
					want = append(want, frames[i-1][0])
				}
				require.Equal(t, want, evs[1].Msg.Points)
				require.Equal(t, h.Cursor(), evs[1].Msg.Cursor, "after the replay the client is at the newest frame")
			}

			// Live delivery continues with the next frame, exactly once.
			next := publishFrame(t, h, rd("dev1/a", t0.UnixMilli()+9000, 9))
			evs = v.Next(nil)
			require.Equal(t, []EventKind{EventPoints}, kinds(evs))
			require.Equal(t, next, evs[0].Msg.Cursor)
			require.Equal(t, []ingest.Reading{rd("dev1/a", t0.UnixMilli()+9000, 9)}, evs[0].Msg.Points)
		})
	}
}

func TestHubSubscribeMalformedCursor(t *testing.T) {
	h, _ := newTestHub(t, HubConfig{MaxViewers: 1})
	for _, c := range []string{"nope", "-", "abc-", "-1", "ABC-1", "abc-1-2", "abc-!", "a b-1"} {
		t.Run(c, func(t *testing.T) {
			v, _, err := h.Subscribe(mustPatterns(t, "#"), SubscribeOptions{Cursor: c})
			require.Error(t, err)
			require.Nil(t, v)
			require.Equal(t, CodeInvalid, ErrorCode(err))
		})
	}
	// None of the refused subscriptions took a viewer slot.
	subscribe(t, h, SubscribeOptions{}, "#")
}

func TestHubResumeTooOld(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  HubConfig
		// age runs before the last frame is published.
		age func(clock *clockwork.FakeClock)
	}{
		{"evicted by the resume window", HubConfig{ResumeWindow: time.Minute}, func(c *clockwork.FakeClock) { c.Advance(2 * time.Minute) }},
		// Each frame below is 2 readings = 80 bytes: the ring keeps two.
		{"evicted by the byte bound", HubConfig{ResumeBytes: 2 * 2 * readingBytes}, func(*clockwork.FakeClock) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, clock := newTestHub(t, tc.cfg)
			var cursors []string
			for i := range 3 {
				cursors = append(cursors, publishFrame(t, h, rd("dev1/a", t0.UnixMilli()+int64(i), 1), rd("dev1/b", t0.UnixMilli()+int64(i), 2)))
			}
			tc.age(clock)
			last := publishFrame(t, h, rd("dev1/a", clock.Now().UnixMilli(), 3), rd("dev1/b", clock.Now().UnixMilli(), 4))

			// Frame 1 is gone: a cursor before it cannot be honoured.
			v, ack := subscribe(t, h, SubscribeOptions{Cursor: formatCursor(h.epoch, 0)}, "dev1/a")
			require.Equal(t, last, ack)
			require.Equal(t, []EventKind{EventSubscribed, EventReset}, kinds(v.Next(nil)))

			// The newest frame is always kept: resuming just before it works.
			w, ack := subscribe(t, h, SubscribeOptions{Cursor: cursors[2]}, "dev1/a")
			require.Equal(t, cursors[2], ack)
			evs := w.Next(nil)
			require.Equal(t, []EventKind{EventSubscribed, EventPoints}, kinds(evs))
			require.Equal(t, []ingest.Reading{rd("dev1/a", clock.Now().UnixMilli(), 3)}, evs[1].Msg.Points)
		})
	}
}

// TestHubResumeExactlyOnce has a client reconnect again and again while
// frames keep coming, each time resuming from the last cursor it saw: it
// must get every matching reading exactly once, in order.
func TestHubResumeExactlyOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		// visit subscribes from cursor, takes what is queued, and returns
		// the readings and the cursor to resume from.
		visit func(t *testing.T, h *Hub, cursor string) ([]ingest.Reading, string)
	}{
		{"stream: resume from the last message", func(t *testing.T, h *Hub, cursor string) ([]ingest.Reading, string) {
			v, ack, err := h.Subscribe(mustPatterns(t, "dev1/#"), SubscribeOptions{Transport: "sse", Cursor: cursor})
			require.NoError(t, err)
			defer v.Close()
			next := ack
			evs := v.Next(nil)
			for _, e := range evs {
				require.NotEqual(t, EventReset, e.Kind)
				require.NotEqual(t, EventGap, e.Kind)
				if e.Kind == EventPoints {
					next = e.Msg.Cursor
				}
			}
			return points(evs), next
		}},
		{"long poll: resume from Detach", func(t *testing.T, h *Hub, cursor string) ([]ingest.Reading, string) {
			v, _, err := h.Subscribe(mustPatterns(t, "dev1/#"), SubscribeOptions{Transport: "longpoll", Cursor: cursor})
			require.NoError(t, err)
			defer v.Close()
			evs := v.Next(nil)
			next := h.Detach(v)
			evs = v.Next(evs)
			require.Empty(t, ofKind(evs, EventReset))
			require.Empty(t, ofKind(evs, EventGap))
			return points(evs), next
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := newTestHub(t, HubConfig{})
			const frames, perFrame = 2000, 3
			var want []ingest.Reading
			for i := range frames * perFrame {
				if i%perFrame != 2 {
					want = append(want, rd("dev1/m", t0.UnixMilli()+int64(i), float64(i)))
				}
			}
			cursor := h.Cursor()
			done := make(chan struct{})
			go func() {
				defer close(done)
				for f := range frames {
					batch := make([]ingest.Reading, 0, perFrame)
					for j := range perFrame {
						i := f*perFrame + j
						s := "dev1/m"
						if j == 2 {
							s = "dev2/m"
						}
						batch = append(batch, rd(s, t0.UnixMilli()+int64(i), float64(i)))
					}
					h.Publish(batch)
				}
			}()
			var got []ingest.Reading
			eventually(t, 10*time.Second, func() error {
				pts, next := tc.visit(t, h, cursor)
				got, cursor = append(got, pts...), next
				if len(got) < len(want) {
					return fmt.Errorf("%d of %d readings", len(got), len(want))
				}
				return nil
			})
			<-done
			require.Equal(t, want, got)
		})
	}
}

func TestHubAddSeries(t *testing.T) {
	h, _ := newTestHub(t, HubConfig{})
	ms := t0.UnixMilli()
	v, _ := subscribe(t, h, SubscribeOptions{Transport: "ws"}, "dev1/temperature")
	v.Next(nil)
	c1 := publishFrame(t, h, rd("dev1/temperature", ms, 1), rd("dev2/temperature", ms, 2), rd("dev2/humidity", ms, 3))
	publishFrame(t, h, rd("dev1/temperature", ms+1, 4), rd("dev2/temperature", ms+1, 5))
	require.Equal(t, []ingest.Reading{rd("dev1/temperature", ms, 1), rd("dev1/temperature", ms+1, 4)}, points(v.Next(nil)))

	t.Run("with a cursor: replays only what the new patterns add", func(t *testing.T) {
		ack, err := h.AddSeries(v, mustPatterns(t, "+/temperature"), c1)
		require.NoError(t, err)
		require.Equal(t, c1, ack)
		evs := v.Next(nil)
		require.Equal(t, []EventKind{EventSubscribed, EventPoints}, kinds(evs))
		require.Equal(t, []string{"+/temperature", "dev1/temperature"}, evs[0].Series)
		require.Equal(t, c1, evs[0].Cursor)
		require.Equal(t, []ingest.Reading{rd("dev2/temperature", ms+1, 5)}, evs[1].Msg.Points)
		require.Equal(t, []string{"+/temperature", "dev1/temperature"}, v.Patterns().List())

		publishFrame(t, h, rd("dev1/temperature", ms+2, 6), rd("dev2/temperature", ms+2, 7), rd("dev2/humidity", ms+2, 8))
		require.Equal(t, []ingest.Reading{rd("dev1/temperature", ms+2, 6), rd("dev2/temperature", ms+2, 7)}, points(v.Next(nil)))
	})
	t.Run("without a cursor: live from now", func(t *testing.T) {
		ack, err := h.AddSeries(v, mustPatterns(t, "dev2/humidity"), "")
		require.NoError(t, err)
		require.Equal(t, h.Cursor(), ack)
		require.Equal(t, []EventKind{EventSubscribed}, kinds(v.Next(nil)))
	})
	t.Run("unknown cursor: reset", func(t *testing.T) {
		ack, err := h.AddSeries(v, mustPatterns(t, "dev3/#"), formatCursor(h.epoch+"x", 1))
		require.NoError(t, err)
		require.Equal(t, h.Cursor(), ack)
		evs := v.Next(nil)
		require.Equal(t, []EventKind{EventSubscribed, EventReset}, kinds(evs))
		require.Equal(t, []string{"+/temperature", "dev1/temperature", "dev2/humidity", "dev3/#"}, evs[0].Series)
	})
	t.Run("malformed cursor: invalid, subscription unchanged", func(t *testing.T) {
		_, err := h.AddSeries(v, mustPatterns(t, "dev4/#"), "not a cursor")
		require.Equal(t, CodeInvalid, ErrorCode(err))
		require.False(t, v.Pending())
		require.Equal(t, 4, v.Patterns().Len())
	})
	t.Run("too many patterns: invalid", func(t *testing.T) {
		var many []string
		for i := range MaxPatterns {
			many = append(many, fmt.Sprintf("d%d/#", i))
		}
		_, err := h.AddSeries(v, mustPatterns(t, many...), "")
		require.Equal(t, CodeInvalid, ErrorCode(err))
	})
	t.Run("remove narrows by exact pattern", func(t *testing.T) {
		h.RemoveSeries(v, mustPatterns(t, "dev1/temperature", "dev3/#", "dev9/#"))
		evs := v.Next(nil)
		require.Equal(t, []EventKind{EventSubscribed}, kinds(evs))
		require.Equal(t, []string{"+/temperature", "dev2/humidity"}, evs[0].Series)
		require.Equal(t, h.Cursor(), evs[0].Cursor)
		// dev1/temperature still arrives through +/temperature.
		publishFrame(t, h, rd("dev1/temperature", ms+3, 9), rd("dev3/x", ms+3, 10))
		require.Equal(t, []ingest.Reading{rd("dev1/temperature", ms+3, 9)}, points(v.Next(nil)))

		h.RemoveSeries(v, mustPatterns(t, "+/temperature", "dev2/humidity"))
		evs = v.Next(nil)
		require.Equal(t, []EventKind{EventSubscribed}, kinds(evs))
		require.Empty(t, evs[0].Series)
		publishFrame(t, h, rd("dev1/temperature", ms+4, 11))
		require.Empty(t, v.Next(nil))
	})
	t.Run("closed viewer: refused", func(t *testing.T) {
		w, _ := subscribe(t, h, SubscribeOptions{}, "dev1/#")
		w.Close()
		_, err := h.AddSeries(w, mustPatterns(t, "dev2/#"), "")
		require.Equal(t, CodeInvalid, ErrorCode(err))
		h.RemoveSeries(w, mustPatterns(t, "dev1/#")) // no effect, no panic
		require.False(t, w.Pending())
	})
}

func TestHubDetach(t *testing.T) {
	h, _ := newTestHub(t, HubConfig{})
	v, _ := subscribe(t, h, SubscribeOptions{Transport: "longpoll"}, "dev1/#")
	c1 := publishFrame(t, h, rd("dev1/a", t0.UnixMilli(), 1))
	require.Equal(t, c1, h.Detach(v))
	publishFrame(t, h, rd("dev1/a", t0.UnixMilli()+1, 2))
	evs := v.Next(nil)
	require.Equal(t, []EventKind{EventSubscribed, EventPoints}, kinds(evs), "nothing after Detach")
	require.Equal(t, c1, evs[1].Msg.Cursor)

	// The next poll resumes from the detach cursor and gets the rest.
	w, _ := subscribe(t, h, SubscribeOptions{Transport: "longpoll", Cursor: c1}, "dev1/#")
	require.Equal(t, []ingest.Reading{rd("dev1/a", t0.UnixMilli()+1, 2)}, points(w.Next(nil)))
}

func TestHubNotify(t *testing.T) {
	h, _ := newTestHub(t, HubConfig{})
	v, _ := subscribe(t, h, SubscribeOptions{Transport: "ws"}, "dev1/#")
	v.Next(nil)
	<-v.Ready() // the subscription ack's wake-up
	h.Notify(v, Event{Kind: EventError, Reason: "bad request"})
	select {
	case <-v.Ready():
	default:
		t.Fatal("Notify did not wake the viewer")
	}
	require.Equal(t, []Event{{Kind: EventError, Reason: "bad request"}}, v.Next(nil))
}

func TestHubPresenceOnlyToCoveringSubscriptions(t *testing.T) {
	h, clock := newTestHub(t, HubConfig{})
	type sub struct {
		patterns []string
		want     bool
	}
	subs := map[string]sub{
		"everything":             {[]string{"#"}, true},
		"the device":             {[]string{"dev1/#"}, true},
		"one series of it":       {[]string{"dev1/temperature"}, true},
		"a metric of any device": {[]string{"+/temperature"}, true},
		"another device":         {[]string{"dev2/#"}, false},
		"another device, exact":  {[]string{"dev2/temperature", "dev3/+"}, false},
	}
	viewers := map[string]*Viewer{}
	for name, s := range subs {
		v, _ := subscribe(t, h, SubscribeOptions{}, s.patterns...)
		v.Next(nil)
		viewers[name] = v
	}
	h.PublishPresence("dev1", true, clock.Now())
	barrier(t, h)
	for name, s := range subs {
		t.Run(name, func(t *testing.T) {
			got := ofKind(viewers[name].Next(nil), EventPresence)
			if !s.want {
				require.Empty(t, got)
				return
			}
			require.Equal(t, []Event{{Kind: EventPresence, Presence: Presence{Device: "dev1", Online: true, TimeMs: t0.UnixMilli()}}}, got)
		})
	}
}

func TestHubHeartbeat(t *testing.T) {
	const hb = 4 * time.Second
	h, clock := newTestHub(t, HubConfig{Heartbeat: hb})
	require.Equal(t, hb, h.Heartbeat())
	quiet, _ := subscribe(t, h, SubscribeOptions{Transport: "sse"}, "dev1/#")
	busy, _ := subscribe(t, h, SubscribeOptions{Transport: "ws", Ping: true}, "dev2/#")
	quiet.Next(nil)
	busy.Next(nil)

	// Three seconds in, busy is sent a frame; quiet is sent nothing.
	clock.Advance(hb - time.Second)
	c := publishFrame(t, h, rd("dev2/a", clock.Now().UnixMilli(), 1))
	busy.Next(nil)
	// One interval of silence, less a millisecond: nothing yet. (Run's
	// own ticker may get there first; the outcome is the same.)
	clock.Advance(time.Second - time.Millisecond)
	h.heartbeats()
	require.False(t, quiet.Pending())
	require.False(t, busy.Pending())

	// A whole interval: the quiet viewer gets a heartbeat carrying the
	// cursor; the busy one is due a ping but no heartbeat.
	clock.Advance(time.Millisecond)
	h.heartbeats()
	require.Equal(t, []Event{{Kind: EventHeartbeat, TimeMs: t0.Add(hb).UnixMilli(), Cursor: c}}, quiet.Next(nil))
	require.Equal(t, []Event{{Kind: EventPing, TimeMs: t0.Add(hb).UnixMilli()}}, busy.Next(nil))

	// Heartbeats repeat every interval of silence, not every tick.
	clock.Advance(hb / 2)
	h.heartbeats()
	require.False(t, quiet.Pending())
	clock.Advance(hb / 2)
	h.heartbeats()
	require.Equal(t, []EventKind{EventHeartbeat}, kinds(quiet.Next(nil)))
	require.Equal(t, []EventKind{EventHeartbeat, EventPing}, kinds(busy.Next(nil)))
}

// TestHubHeartbeatRun drives heartbeats through Run's own ticker.
func TestHubHeartbeatRun(t *testing.T) {
	const hb = 8 * time.Second
	h, clock := newTestHub(t, HubConfig{Heartbeat: hb})
	v, ack := subscribe(t, h, SubscribeOptions{Transport: "ws", Ping: true}, "dev1/#")
	v.Next(nil)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, clock.BlockUntilContext(ctx, 1), "Run's ticker")
	clock.Advance(hb)
	var got []Event
	eventually(t, 5*time.Second, func() error {
		got = v.Next(got)
		if len(got) < 2 {
			return fmt.Errorf("got %v", kinds(got))
		}
		return nil
	})
	require.Equal(t, []Event{
		{Kind: EventHeartbeat, TimeMs: t0.Add(hb).UnixMilli(), Cursor: ack},
		{Kind: EventPing, TimeMs: t0.Add(hb).UnixMilli()},
	}, got)
}

func TestHubClose(t *testing.T) {
	h, _ := newTestHub(t, HubConfig{})
	publishFrame(t, h, rd("dev1/a", t0.UnixMilli(), 1))
	type result struct {
		evs    []Event
		reason string
	}
	results := make(chan result, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		v, _ := subscribe(t, h, SubscribeOptions{Transport: "sse"}, fmt.Sprintf("dev%d/#", i))
		// A transport: drain until the hub ends the viewer, then Close.
		wg.Go(func() {
			var evs []Event
			for {
				select {
				case <-v.Ready():
					evs = v.Next(evs)
				case <-v.Done():
					evs = v.Next(evs)
					results <- result{evs, v.Reason()}
					v.Close()
					return
				}
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, h.Close(ctx))
	wg.Wait()
	close(results)
	for r := range results {
		require.Equal(t, ReasonShutdown, r.reason)
		require.NotEmpty(t, r.evs)
		last := r.evs[len(r.evs)-1]
		require.Equal(t, EventClosing, last.Kind, "the closing event is the last")
		require.Equal(t, h.Cursor(), last.Cursor)
		require.Equal(t, t0.UnixMilli(), last.TimeMs)
	}

	require.NoError(t, h.Close(ctx), "Close is idempotent")
	_, _, err := h.Subscribe(mustPatterns(t, "#"), SubscribeOptions{})
	require.ErrorIs(t, err, ErrClosed)
	require.Equal(t, CodeUnavailable, ErrorCode(err))
	h.Publish([]ingest.Reading{rd("dev1/a", t0.UnixMilli(), 2)}) // no effect, no panic
	h.PublishPresence("dev1", false, t0)
}

func TestHubCloseWaitsForViewers(t *testing.T) {
	h, _ := newTestHub(t, HubConfig{})
	v, _ := subscribe(t, h, SubscribeOptions{}, "#")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := h.Close(ctx)
	require.ErrorIs(t, err, context.Canceled, "the viewer never closed")
	select {
	case <-v.Done():
	default:
		t.Fatal("Close did not end the viewer")
	}
	require.Equal(t, ReasonShutdown, v.Reason())
	v.Close()
	require.NoError(t, h.Close(context.Background()))
}

func TestHubMaxViewers(t *testing.T) {
	h, _ := newTestHub(t, HubConfig{MaxViewers: 2})
	a, _ := subscribe(t, h, SubscribeOptions{}, "#")
	subscribe(t, h, SubscribeOptions{}, "#")
	_, _, err := h.Subscribe(mustPatterns(t, "#"), SubscribeOptions{})
	require.Equal(t, CodeTooMany, ErrorCode(err))
	a.Close()
	a.Close() // idempotent
	subscribe(t, h, SubscribeOptions{}, "#")
}

// TestHubRunFramesOnCancel: readings published just before Run's context
// ends still reach the viewers.
func TestHubRunFramesOnCancel(t *testing.T) {
	h, err := NewHub(HubConfig{Clock: clockwork.NewFakeClockAt(t0)}, nil)
	require.NoError(t, err)
	v, _, err := h.Subscribe(mustPatterns(t, "#"), SubscribeOptions{})
	require.NoError(t, err)
	defer v.Close()
	h.Publish([]ingest.Reading{rd("dev1/a", t0.UnixMilli(), 1)})
	h.Publish(nil) // nothing
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, h.Run(ctx))
	require.Equal(t, []ingest.Reading{rd("dev1/a", t0.UnixMilli(), 1)}, points(v.Next(nil)))
}

func TestErrorCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want Code
	}{
		{"typed", Errorf(CodeNotFound, "unknown series %q", "a/b"), CodeNotFound},
		{"wrapped", fmt.Errorf("query: %w", Errorf(CodeInvalid, "bad")), CodeInvalid},
		{"closed", ErrClosed, CodeUnavailable},
		{"plain", errors.New("boom"), CodeInternal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, ErrorCode(tc.err))
		})
	}
	require.Equal(t, `unknown series "a/b"`, Errorf(CodeNotFound, "unknown series %q", "a/b").Error())
}

// TestHubResumeBoundedByQueue: a resume whose backlog is larger than the
// viewer's queue could hold replays the newest readings that fit and sends
// one gap, with the exact reading times of the older ones, before them; it
// never builds (and then skips) a message the queue cannot take.
func TestHubResumeBoundedByQueue(t *testing.T) {
	// Half of 64 KiB at approxPointBytes is 512 readings.
	h, _ := newTestHub(t, HubConfig{ViewerQueueBytes: 64 << 10})
	start := publishFrame(t, h, rd("dev1/a", 1, 0))
	base := t0.UnixMilli()
	for f := range 10 {
		var rs []ingest.Reading
		for i := range 100 {
			rs = append(rs, rd("dev1/a", base+int64(f*100+i), float64(i)))
			rs = append(rs, rd("dev2/b", base+int64(f*100+i), 0)) // not subscribed
		}
		publishFrame(t, h, rs...)
	}
	v, ack := subscribe(t, h, SubscribeOptions{Cursor: start}, "dev1/#")
	require.Equal(t, start, ack)
	evs := v.Next(nil)
	require.Equal(t, []EventKind{EventSubscribed, EventGap, EventPoints}, kinds(evs))
	// Five frames of 100 fit the budget of 512; the five before are gapped.
	gap := evs[1]
	require.Equal(t, Gap{FromMs: base, ToMs: base + 499}, gap.Gap)
	require.Equal(t, formatCursor(h.epoch, hubSeq(h)-5), gap.Cursor, "the gap brings the client up to the last gapped frame")
	pts := evs[2].Msg.Points
	require.Len(t, pts, 500)
	require.Equal(t, base+500, pts[0].TimeMs)
	require.Equal(t, base+999, pts[len(pts)-1].TimeMs)
	require.Equal(t, formatCursor(h.epoch, hubSeq(h)), evs[2].Msg.Cursor)
}

// TestJoinMessages: joining messages concatenates their point arrays into
// what encoding all the points at the last cursor would give.
func TestJoinMessages(t *testing.T) {
	a := NewMessage(1, "e-1", []ingest.Reading{rd("d/a", 5, 1.5), rd("d/b", 3, -2)})
	b := NewMessage(2, "e-2", []ingest.Reading{rd("d/a", 7, 1e21)})
	c := NewMessage(3, "e-3", []ingest.Reading{rd("d/c", 1, 0)})
	j := JoinMessages([]*Message{a, b, c})
	want := NewMessage(3, "e-3", append(append(append([]ingest.Reading(nil), a.Points...), b.Points...), c.Points...))
	require.Equal(t, string(want.JSON), string(j.JSON))
	require.Equal(t, want.Points, j.Points)
	require.Equal(t, int64(1), j.MinMs)
	require.Equal(t, int64(7), j.MaxMs)
	require.Equal(t, uint64(3), j.Seq)
	require.Same(t, a, JoinMessages([]*Message{a}), "one message is shared as is")
}
