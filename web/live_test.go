package web

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/dashboard"
)

// liveEvent is what a transport delivered, in one vocabulary.
type liveEvent struct {
	kind     string // points, presence, gap, reset, heartbeat
	cursor   string
	points   []point
	device   string
	online   bool
	from, to int64
}

// liveClient is one viewer on some transport.
type liveClient interface {
	// next returns the next event (acknowledgements are skipped).
	next(t testing.TB) liveEvent
}

// liveTransport opens viewers of one kind. open subscribes to series
// (resuming after cursor when set) and returns the client and the cursor
// the subscription starts after.
type liveTransport struct {
	name     string
	presence bool // delivers presence events
	open     func(t testing.TB, ts *testServer, series []string, cursor string) (liveClient, string)
}

func seriesQuery(series []string, cursor string) string {
	q := url.Values{"series": series}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	return q.Encode()
}

// sseLive adapts an SSE stream.
type sseLive struct{ s *sseStream }

func (c sseLive) next(t testing.TB) liveEvent {
	t.Helper()
	b := c.s.nextEvent(t)
	switch b.Type() {
	case "message":
		cursor, pts := framePoints(t, b)
		return liveEvent{kind: "points", cursor: cursor, points: pts}
	case "heartbeat":
		return liveEvent{kind: "heartbeat", cursor: b.ID}
	case "presence":
		var p struct {
			Device string `json:"device"`
			Online bool   `json:"online"`
		}
		require.NoError(t, json.Unmarshal([]byte(b.Data), &p), b.Data)
		return liveEvent{kind: "presence", device: p.Device, online: p.Online}
	case "gap":
		var g struct {
			From, To int64
			Cursor   string
		}
		require.NoError(t, json.Unmarshal([]byte(b.Data), &g), b.Data)
		require.Equal(t, g.Cursor, b.ID)
		return liveEvent{kind: "gap", cursor: g.Cursor, from: g.From, to: g.To}
	case "reset":
		var r struct{ Cursor string }
		require.NoError(t, json.Unmarshal([]byte(b.Data), &r), b.Data)
		require.Equal(t, r.Cursor, b.ID, "reset's id: is where to continue from")
		return liveEvent{kind: "reset", cursor: r.Cursor}
	}
	t.Fatalf("unexpected SSE event %+v", b)
	return liveEvent{}
}

// wsLive adapts a WebSocket.
type wsLive struct{ c *wsClient }

func (c wsLive) next(t testing.TB) liveEvent {
	t.Helper()
	for {
		m := c.c.next(t)
		switch m.Type {
		case "subscribed":
			continue
		case "points":
			return liveEvent{kind: "points", cursor: m.Cursor, points: m.Points}
		case "heartbeat":
			return liveEvent{kind: "heartbeat", cursor: m.Cursor}
		case "presence":
			return liveEvent{kind: "presence", device: m.Device, online: m.Online}
		case "gap":
			return liveEvent{kind: "gap", cursor: m.Cursor, from: m.From, to: m.To}
		case "reset":
			return liveEvent{kind: "reset", cursor: m.Cursor}
		}
		t.Fatalf("unexpected WebSocket message %s", m.Raw)
	}
}

// pollLive is a poll client: each next polls from the last cursor (short
// polls repeat until something comes).
type pollLive struct {
	ts      *testServer
	series  []string
	cursor  string
	wait    string
	pending []liveEvent
}

func (c *pollLive) next(t testing.TB) liveEvent {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for len(c.pending) == 0 {
		require.True(t, time.Now().Before(deadline), "no poll answer with anything in it")
		q := url.Values{"series": c.series, "cursor": {c.cursor}, "wait": {c.wait}}
		r := waitPoll(t, pollAsync(context.Background(), c.ts, q))
		require.Equal(t, http.StatusOK, r.status, "error %q", r.answer.Error)
		a := r.answer
		require.NotEmpty(t, a.Cursor)
		if a.Reset {
			c.pending = append(c.pending, liveEvent{kind: "reset", cursor: a.Cursor})
		}
		if a.Gap != nil {
			c.pending = append(c.pending, liveEvent{kind: "gap", cursor: a.Gap.Cursor, from: a.Gap.From, to: a.Gap.To})
		}
		if len(a.Points) > 0 {
			c.pending = append(c.pending, liveEvent{kind: "points", cursor: a.Cursor, points: a.Points})
		}
		c.cursor = a.Cursor
	}
	e := c.pending[0]
	c.pending = c.pending[1:]
	return e
}

func openPoll(wait string) func(t testing.TB, ts *testServer, series []string, cursor string) (liveClient, string) {
	return func(t testing.TB, ts *testServer, series []string, cursor string) (liveClient, string) {
		t.Helper()
		if cursor == "" {
			status, a := poll(t, ts, url.Values{"series": series})
			require.Equal(t, http.StatusOK, status)
			require.Empty(t, a.Points)
			require.Nil(t, a.Gap)
			require.False(t, a.Reset)
			cursor = a.Cursor
		}
		return &pollLive{ts: ts, series: series, cursor: cursor, wait: wait}, cursor
	}
}

var liveTransports = []liveTransport{
	{
		name: "sse", presence: true,
		open: func(t testing.TB, ts *testServer, series []string, cursor string) (liveClient, string) {
			t.Helper()
			s := openSSE(t, ts, "/api/v1/stream?"+seriesQuery(series, cursor), nil)
			return sseLive{s}, s.open(t)
		},
	},
	{
		name: "ws", presence: true,
		open: func(t testing.TB, ts *testServer, series []string, cursor string) (liveClient, string) {
			t.Helper()
			c := dialWS(t, ts, "/api/v1/ws?"+seriesQuery(series, cursor), wsDialOptions{}).start()
			ack := c.nextOf(t, "subscribed")
			require.Equal(t, dashboardList(t, series), ack.Series)
			return wsLive{c}, ack.Cursor
		},
	},
	{name: "longpoll", open: openPoll("60s")},
	{name: "poll", open: openPoll("0")},
}

// dashboardList is the canonical form of a subscription, as acks show it.
func dashboardList(t testing.TB, series []string) []string {
	t.Helper()
	ps, err := dashboard.ParsePatterns(series)
	require.NoError(t, err)
	return ps.List()
}

// collectUntil gathers the points of c's events until one carries the
// sentinel, which must be the last point of its message; it returns the
// points before the sentinel and the other events.
func collectUntil(t testing.TB, c liveClient, sentinel point) (map[point]int, []liveEvent) {
	t.Helper()
	got := map[point]int{}
	var others []liveEvent
	for {
		e := c.next(t)
		if e.kind != "points" {
			others = append(others, e)
			continue
		}
		for i, p := range e.points {
			if p == sentinel {
				require.Equal(t, len(e.points)-1, i, "the sentinel is the last point")
				return got, others
			}
			got[p]++
		}
	}
}

// requireExactlyOnce checks that got holds each wanted point once and
// nothing else.
func requireExactlyOnce(t testing.TB, want []point, got map[point]int) {
	t.Helper()
	wantSet := map[point]bool{}
	for _, p := range want {
		wantSet[p] = true
	}
	for p, n := range got {
		require.True(t, wantSet[p], "unexpected point %+v", p)
		require.Equal(t, 1, n, "point %+v delivered %d times", p, n)
	}
	require.Len(t, got, len(wantSet), "points delivered")
}

// TestLiveDelivery checks, on every transport, that a subscription gets
// exactly the readings its patterns match, and (SSE, WebSocket) the
// presence changes of the devices they cover.
func TestLiveDelivery(t *testing.T) {
	series := []string{"dev1/temp", "dev1/hum", "dev2/temp", "dev2/hum", "dev3/pres"}
	for _, tr := range liveTransports {
		for _, tc := range []struct {
			name     string
			patterns []string
			want     []string // series delivered
			devices  []string // presence delivered, in order of publication
		}{
			{"all", []string{"#"}, series, []string{"dev3", "dev2", "dev1"}},
			{"one device", []string{"dev1/#"}, []string{"dev1/temp", "dev1/hum"}, []string{"dev1"}},
			{"one metric", []string{"+/temp"}, []string{"dev1/temp", "dev2/temp"}, []string{"dev3", "dev2", "dev1"}},
			{"one device, any metric", []string{"dev1/+"}, []string{"dev1/temp", "dev1/hum"}, []string{"dev1"}},
			{"exact", []string{"dev1/temp"}, []string{"dev1/temp"}, []string{"dev1"}},
			{"several", []string{"dev1/hum", "+/temp", "dev3/pres"}, []string{"dev1/temp", "dev1/hum", "dev2/temp", "dev3/pres"}, []string{"dev3", "dev2", "dev1"}},
			{"overlapping", []string{"dev1/#", "dev1/temp", "#"}, series, []string{"dev3", "dev2", "dev1"}},
		} {
			t.Run(tr.name+"/"+tc.name, func(t *testing.T) {
				ts := newTestServer(t)
				c, _ := tr.open(t, ts, tc.patterns, "")
				base := t0.UnixMilli()
				var all, want []point
				for i, s := range series {
					p := point{s, base + int64(i), float64(i) + 0.5}
					all = append(all, p)
					if contains(tc.want, s) {
						want = append(want, p)
					}
				}
				ts.offer(t, all...)
				sentinel := point{"dev1/temp", base + 100, -1}
				ts.offer(t, sentinel)
				got, others := collectUntil(t, c, sentinel)
				require.Empty(t, others)
				requireExactlyOnce(t, want, got)
				if !tr.presence {
					return
				}
				ts.hub.PublishPresence("dev3", true, ts.clock.Now())
				ts.hub.PublishPresence("dev2", false, ts.clock.Now())
				ts.hub.PublishPresence("dev1", true, ts.clock.Now()) // covered by every case: the last
				var devices []string
				for {
					e := c.next(t)
					require.Equal(t, "presence", e.kind)
					devices = append(devices, e.device)
					require.Equal(t, e.device != "dev2", e.online)
					if e.device == "dev1" {
						break
					}
				}
				require.Equal(t, tc.devices, devices)
			})
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// resumeVariant is one way of reconnecting with a cursor.
type resumeVariant struct {
	name string
	// open resubscribes to "#" after cursor.
	open func(t testing.TB, ts *testServer, cursor string) liveClient
}

func resumeVariants() []resumeVariant {
	return []resumeVariant{
		{"sse/Last-Event-ID", func(t testing.TB, ts *testServer, cursor string) liveClient {
			s := openSSE(t, ts, "/api/v1/stream?series=%23", http.Header{"Last-Event-ID": {cursor}})
			require.Equal(t, cursor, s.open(t), "the subscription resumes at the cursor")
			return sseLive{s}
		}},
		{"sse/cursor parameter", func(t testing.TB, ts *testServer, cursor string) liveClient {
			s := openSSE(t, ts, "/api/v1/stream?series=%23&cursor="+url.QueryEscape(cursor), nil)
			require.Equal(t, cursor, s.open(t))
			return sseLive{s}
		}},
		{"sse/Last-Event-ID wins over the parameter", func(t testing.TB, ts *testServer, cursor string) liveClient {
			// A browser reconnects to the URL it opened (with the
			// original cursor) and sends the latest id as Last-Event-ID.
			stale := epochOf(t, cursor) + "-1"
			s := openSSE(t, ts, "/api/v1/stream?series=%23&cursor="+stale, http.Header{"Last-Event-ID": {cursor}})
			require.Equal(t, cursor, s.open(t))
			return sseLive{s}
		}},
		{"ws/cursor parameter", func(t testing.TB, ts *testServer, cursor string) liveClient {
			c := dialWS(t, ts, "/api/v1/ws?series=%23&cursor="+url.QueryEscape(cursor), wsDialOptions{}).start()
			require.Equal(t, cursor, c.nextOf(t, "subscribed").Cursor)
			return wsLive{c}
		}},
		{"ws/subscribe message", func(t testing.TB, ts *testServer, cursor string) liveClient {
			c := dialWS(t, ts, "/api/v1/ws", wsDialOptions{}).start()
			ack := c.nextOf(t, "subscribed")
			require.Empty(t, ack.Series)
			c.send(t, map[string]any{"type": "subscribe", "series": []string{"#"}, "cursor": cursor})
			ack = c.nextOf(t, "subscribed")
			require.Equal(t, []string{"#"}, ack.Series)
			require.Equal(t, cursor, ack.Cursor)
			return wsLive{c}
		}},
		{"longpoll/cursor parameter", func(t testing.TB, ts *testServer, cursor string) liveClient {
			return &pollLive{ts: ts, series: []string{"#"}, cursor: cursor, wait: "60s"}
		}},
		{"poll/cursor parameter", func(t testing.TB, ts *testServer, cursor string) liveClient {
			return &pollLive{ts: ts, series: []string{"#"}, cursor: cursor, wait: "0"}
		}},
	}
}

// TestLiveResume takes a cursor mid-stream, publishes while the client is
// away, and reconnects with the cursor every way there is: every reading
// after the cursor arrives exactly once, then live ones.
func TestLiveResume(t *testing.T) {
	for _, v := range resumeVariants() {
		t.Run(v.name, func(t *testing.T) {
			ts := newTestServer(t)
			transport := v.name[:strings.IndexByte(v.name, '/')]
			var first liveTransport
			for _, tr := range liveTransports {
				if tr.name == transport {
					first = tr
				}
			}
			c, _ := first.open(t, ts, []string{"#"}, "")
			base := t0.UnixMilli()
			batch := func(n, from int) []point {
				var pts []point
				for i := range n {
					pts = append(pts, point{"dev" + strconv.Itoa(i%3) + "/temp", base + int64(from+i), float64(from + i)})
				}
				return pts
			}
			// Before: three frames, read, and a cursor taken after them.
			before := batch(9, 0)
			for i := 0; i < len(before); i += 3 {
				ts.offer(t, before[i:i+3]...)
			}
			mark := point{"dev9/mark", base + 50, 0}
			ts.offer(t, mark)
			got, _ := collectUntil(t, c, mark)
			requireExactlyOnce(t, before, got)
			cursor := ts.hub.Cursor()

			// While away: three more frames.
			away := batch(9, 100)
			for i := 0; i < len(away); i += 3 {
				ts.offer(t, away[i:i+3]...)
			}
			c = v.open(t, ts, cursor)
			after := batch(5, 200)
			ts.offer(t, after...)
			sentinel := point{"dev9/mark", base + 300, 1}
			ts.offer(t, sentinel)
			got, others := collectUntil(t, c, sentinel)
			for _, e := range others {
				require.Equal(t, "heartbeat", e.kind, "no reset or gap: %+v", e)
			}
			requireExactlyOnce(t, append(away, after...), got)
		})
	}
}

// TestLiveReset checks that a well-formed cursor that cannot be resumed
// gets a reset carrying the current cursor, on every transport, after which
// live readings flow: a cursor of another server run, one whose frames left
// the resume ring, and one from the future.
func TestLiveReset(t *testing.T) {
	for _, tr := range liveTransports {
		for _, tc := range []struct {
			name   string
			cursor func(epoch string, seq uint64) string
		}{
			{"foreign epoch", func(epoch string, seq uint64) string { return "x" + epoch + "-1" }},
			{"evicted", func(epoch string, seq uint64) string { return epoch + "-1" }},
			{"future", func(epoch string, seq uint64) string { return epoch + "-" + strconv.FormatUint(seq+5, 36) }},
			{"zero of another run", func(epoch string, seq uint64) string { return "0-0" }},
		} {
			t.Run(tr.name+"/"+tc.name, func(t *testing.T) {
				// The ring holds two single-reading frames.
				ts := newTestServer(t, withHub(func(c *dashboard.HubConfig) { c.ResumeBytes = 48 }))
				for i := range 5 {
					ts.offer(t, point{"dev1/temp", t0.UnixMilli() + int64(i), float64(i)})
				}
				now := ts.hub.Cursor()
				require.EqualValues(t, 5, seqOf(t, now))
				// The ring does resume from frame 3 (the test's premise).
				c, ack := tr.open(t, ts, []string{"dev1/#"}, epochOf(t, now)+"-3")
				require.Equal(t, epochOf(t, now)+"-3", ack)
				e := c.next(t)
				require.Equal(t, "points", e.kind)
				require.Equal(t, []point{{"dev1/temp", t0.UnixMilli() + 3, 3}, {"dev1/temp", t0.UnixMilli() + 4, 4}}, e.points, "frames 4 and 5")

				now = ts.hub.Cursor()
				c, ack = tr.open(t, ts, []string{"dev1/#"}, tc.cursor(epochOf(t, now), seqOf(t, now)))
				if tr.presence { // a stream: its acknowledgement
					require.Equal(t, now, ack, "a refused resume starts at the current cursor")
				}
				e = c.next(t)
				require.Equal(t, "reset", e.kind)
				require.Equal(t, now, e.cursor)
				live := point{"dev1/temp", t0.UnixMilli() + 6, 6}
				ts.offer(t, live)
				e = c.next(t)
				require.Equal(t, "points", e.kind)
				require.Equal(t, []point{live}, e.points)
			})
		}
	}
}

// TestLiveMalformedCursor checks that a cursor that is not a cursor is a
// 400 with a JSON error everywhere, before anything is subscribed.
func TestLiveMalformedCursor(t *testing.T) {
	ts := newTestServer(t)
	for _, bad := range []string{"zz", "abc-", "-1", "ABC-1", "abc-1-2", "abc-!", "0123456789abcdefg-1", "a-0123456789abcd", "%00%01"} {
		q := "series=%23&cursor=" + url.QueryEscape(bad)
		t.Run("sse parameter "+bad, func(t *testing.T) {
			requireJSONError(t, http.StatusBadRequest, getStream(t, ts.url+"/api/v1/stream?"+q, nil))
		})
		t.Run("sse Last-Event-ID "+bad, func(t *testing.T) {
			requireJSONError(t, http.StatusBadRequest, getStream(t, ts.url+"/api/v1/stream?series=%23", http.Header{"Last-Event-ID": {bad}}))
		})
		t.Run("long poll "+bad, func(t *testing.T) {
			requireJSONError(t, http.StatusBadRequest, getStream(t, ts.url+"/api/v1/poll?wait=10s&"+q, nil))
		})
		t.Run("short poll "+bad, func(t *testing.T) {
			requireJSONError(t, http.StatusBadRequest, getStream(t, ts.url+"/api/v1/poll?wait=0&"+q, nil))
		})
		t.Run("ws parameter "+bad, func(t *testing.T) {
			conn, resp, err := dialWSRaw(ts, "/api/v1/ws?"+q, wsDialOptions{})
			if conn != nil {
				conn.Close()
			}
			require.Error(t, err)
			requireJSONError(t, http.StatusBadRequest, resp)
		})
	}
	t.Run("ws subscribe message", func(t *testing.T) {
		c := dialWS(t, ts, "/api/v1/ws?series=dev1/%23", wsDialOptions{}).start()
		c.nextOf(t, "subscribed")
		c.send(t, map[string]any{"type": "subscribe", "series": []string{"dev2/#"}, "cursor": "not a cursor"})
		require.Contains(t, c.nextOf(t, "error").Message, "malformed cursor")
		// Nothing changed, and the connection still works.
		c.send(t, map[string]any{"type": "subscribe", "series": []string{"dev2/#"}})
		require.Equal(t, []string{"dev1/#", "dev2/#"}, c.nextOf(t, "subscribed").Series)
	})
	for _, tr := range []string{"sse", "ws", "longpoll", "poll"} {
		ts.waitLive(t, tr, 0)
	}
}

// TestLiveRate drives the fake clock with rate=2: frames at least 500 ms
// apart, readings that arrive in between merged into the next frame, none
// lost.
func TestLiveRate(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t testing.TB, ts *testServer) liveClient
	}{
		{"sse", func(t testing.TB, ts *testServer) liveClient {
			s := openSSE(t, ts, "/api/v1/stream?series=dev1/%23&rate=2", nil)
			s.open(t)
			return sseLive{s}
		}},
		{"ws", func(t testing.TB, ts *testServer) liveClient {
			c := dialWS(t, ts, "/api/v1/ws?series=dev1/%23&rate=2", wsDialOptions{}).start()
			c.nextOf(t, "subscribed")
			return wsLive{c}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t)
			c := tc.open(t, ts) // the acknowledgement went out at t0
			r := func(i int) point { return point{"dev1/temp", t0.UnixMilli() + int64(i), float64(i)} }

			// Two frames at t0: the stream waits out the interval.
			ts.offer(t, r(1))
			ts.offer(t, r(2))
			ts.blockUntilWaiters(t, 1)
			ts.advance(499 * time.Millisecond)
			ts.offer(t, r(3)) // a third frame, still inside the interval
			ts.advance(time.Millisecond)
			e := c.next(t)
			require.Equal(t, "points", e.kind)
			require.Equal(t, []point{r(1), r(2), r(3)}, e.points, "three frames merged into one")
			require.Equal(t, ts.hub.Cursor(), e.cursor, "the merged frame ends at the last one's cursor")

			// Right after a frame, the next waits a whole interval.
			ts.offer(t, r(4))
			ts.blockUntilWaiters(t, 1)
			ts.advance(250 * time.Millisecond)
			ts.offer(t, r(5))
			ts.advance(250 * time.Millisecond)
			e = c.next(t)
			require.Equal(t, []point{r(4), r(5)}, e.points)

			// After a quiet interval a reading goes out at once.
			ts.advance(time.Second)
			ts.offer(t, r(6))
			e = c.next(t)
			require.Equal(t, []point{r(6)}, e.points)
		})
	}
}

// TestLiveRateInvalid checks the rate parameter's validation.
func TestLiveRateInvalid(t *testing.T) {
	ts := newTestServer(t)
	for _, rate := range []string{"fast", "-1", "-0.5", "101", "1e9", "NaN", "nan", "Inf", "+Inf", "-Inf"} {
		t.Run(rate, func(t *testing.T) {
			q := "series=%23&rate=" + url.QueryEscape(rate)
			requireJSONError(t, http.StatusBadRequest, getStream(t, ts.url+"/api/v1/stream?"+q, nil))
			conn, resp, err := dialWSRaw(ts, "/api/v1/ws?"+q, wsDialOptions{})
			if conn != nil {
				conn.Close()
			}
			require.Error(t, err)
			requireJSONError(t, http.StatusBadRequest, resp)
		})
	}
	for _, rate := range []string{"0", "0.5", "2", "100", "1e-300", "0x1p-1000"} {
		t.Run("valid "+rate, func(t *testing.T) {
			s := openSSE(t, ts, "/api/v1/stream?series=%23&rate="+rate, nil)
			s.open(t)
		})
	}
}

// TestLiveRateKeepsHeartbeats checks that a very low rate does not hold back
// heartbeats (and WebSocket pings): they still go out every interval, so a
// rate-capped client is neither starved of keep-alives nor taken for dead.
func TestLiveRateKeepsHeartbeats(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t testing.TB, ts *testServer) liveClient
	}{
		{"sse", func(t testing.TB, ts *testServer) liveClient {
			s := openSSE(t, ts, "/api/v1/stream?series=dev1/%23&rate=0.001", nil)
			s.open(t)
			return sseLive{s}
		}},
		{"ws", func(t testing.TB, ts *testServer) liveClient {
			c := dialWS(t, ts, "/api/v1/ws?series=dev1/%23&rate=0.001", wsDialOptions{}).start()
			c.nextOf(t, "subscribed")
			return wsLive{c}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t)
			c := tc.open(t, ts)
			for i := 1; i <= 3; i++ {
				ts.advance(testHeartbeat)
				e := c.next(t)
				require.Equal(t, "heartbeat", e.kind, "heartbeat %d", i)
			}
			// And a reading is not held for 1000 s either: at most an interval.
			ts.offer(t, point{"dev1/temp", ts.nowMs(), 1})
			ts.blockUntilWaiters(t, 1)
			ts.advance(testHeartbeat)
			e := c.next(t)
			require.Equal(t, "points", e.kind)
		})
	}
}

// TestLivePresenceHostileName checks presence for a device whose name came
// from a topic unvalidated (the broker marks a session's device present from
// the topic it published on, before any validation): the hub drops a name no
// device could have, so it forges nothing, and the next presence arrives.
// (The transports escape names anyway: see FuzzSSEFrame.)
func TestLivePresenceHostileName(t *testing.T) {
	const name = "x\",\"online\":false,\"device\":\"dev1\"}\n\nevent: reset\ndata: {\"cursor\":\"evil-1\"}\n\n\xff"
	for _, tr := range liveTransports {
		if !tr.presence {
			continue
		}
		t.Run(tr.name, func(t *testing.T) {
			ts := newTestServer(t)
			c, _ := tr.open(t, ts, []string{"#"}, "")
			ts.hub.PublishPresence(name, true, ts.clock.Now())
			ts.hub.PublishPresence("dev1", false, ts.clock.Now())
			e := c.next(t)
			require.Equal(t, liveEvent{kind: "presence", device: "dev1", online: false}, e)
		})
	}
}

// TestLiveStalledClient checks Config.WriteTimeout: a client that stops
// reading while its queue has room is disconnected once a write has waited
// that long (a wall-clock socket deadline), not by the slow-viewer policy;
// and that such a client does not hold up Shutdown beyond it.
func TestLiveStalledClient(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t testing.TB, ts *testServer)
	}{
		{"sse", func(t testing.TB, ts *testServer) {
			resp := getStreamRcvBuf(t, ts.url+"/api/v1/stream?series=%23", nil, 4096)
			require.Equal(t, http.StatusOK, resp.StatusCode)
		}},
		{"ws", func(t testing.TB, ts *testServer) {
			dialWS(t, ts, "/api/v1/ws?series=%23", wsDialOptions{rcvBufBytes: 4096})
		}},
	} {
		t.Run(tc.name+"/write timeout", func(t *testing.T) {
			ts := newTestServer(t,
				withHub(func(c *dashboard.HubConfig) { c.ViewerQueueBytes = 1 << 30 }),
				withWeb(func(c *Config) { c.WriteTimeout = 300 * time.Millisecond }))
			tc.open(t, ts)
			ts.waitLive(t, tc.name, 1)
			next := 0
			fillUntil(t, ts, &next, map[int64]bool{}, func() bool { return ts.live(t, tc.name) == 0 })
			require.Zero(t, ts.metric(t, "telegauge_hub_gaps_total", nil))
			require.Zero(t, ts.metric(t, "telegauge_hub_slow_disconnects_total", nil))
		})
		t.Run(tc.name+"/shutdown", func(t *testing.T) {
			ts := newTestServer(t,
				withHub(func(c *dashboard.HubConfig) { c.ViewerQueueBytes = 1 << 30 }),
				withWeb(func(c *Config) { c.WriteTimeout = 300 * time.Millisecond }))
			tc.open(t, ts)
			ts.waitLive(t, tc.name, 1)
			for f := range 80 { // some 7 MB: more than the sockets hold
				ts.publish(t, slowFrame(f)...)
			}
			done := make(chan error, 1)
			go func() { done <- ts.srv.Shutdown(context.Background()) }()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(waitTimeout):
				t.Fatal("Shutdown hung on a stalled client")
			}
			ts.waitLive(t, tc.name, 0)
		})
	}
}
