package web

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/dashboard"
)

// TestSSEStreamFormat checks the response head, the opening (retry:, then
// the subscription's id:), the chunked framing, and that every data frame
// carries id: equal to its cursor.
func TestSSEStreamFormat(t *testing.T) {
	ts := newTestServer(t, withWeb(func(c *Config) { c.SSERetry = 1500 * time.Millisecond }))
	s := openSSE(t, ts, "/api/v1/stream?series=dev1/%23", nil)
	h := s.resp.Header
	require.Equal(t, "text/event-stream; charset=utf-8", h.Get("Content-Type"))
	require.Contains(t, h.Get("Cache-Control"), "no-cache")
	require.Contains(t, h.Get("Cache-Control"), "no-store")
	require.Equal(t, "no", h.Get("X-Accel-Buffering"))
	require.Equal(t, []string{"chunked"}, s.resp.TransferEncoding, "chunked body")
	require.EqualValues(t, -1, s.resp.ContentLength)

	first := s.next(t)
	require.Equal(t, []string{"retry: 1500", ": telegauge live stream"}, first.Lines)
	sub := s.next(t)
	cur := ts.hub.Cursor()
	require.Equal(t, []string{"event: subscribed", "id: " + cur, `data: {"series":["dev1/#"],"cursor":"` + cur + `"}`}, sub.Lines,
		"the subscription and its cursor, at once and before any point")

	prev := sub.ID
	for i := range 3 {
		p := point{"dev1/temp", t0.UnixMilli() + int64(i), float64(i) + 0.25}
		ts.offer(t, p, point{"dev2/temp", p.T, 99}) // dev2 is not subscribed
		b := s.next(t)
		require.True(t, b.HasID, "every data frame has an id: %q", b.Lines)
		require.Equal(t, "id: "+b.ID, b.Lines[0])
		cursor, pts := framePoints(t, b)
		require.Greater(t, seqOf(t, cursor), seqOf(t, prev))
		require.Equal(t, []point{p}, pts)
		prev = cursor
	}
	// Frames with many points, and values that need all their digits.
	var many []point
	for i := range 500 {
		many = append(many, point{"dev1/v" + strconv.Itoa(i%7), t0.UnixMilli() + 1000 + int64(i), 1.0 / float64(i+3)})
	}
	ts.publish(t, many...)
	_, pts := framePoints(t, s.next(t))
	require.Equal(t, many, pts)
}

// TestSSEHeartbeat drives the fake clock: a heartbeat comes after exactly one
// interval with nothing sent (a frame restarts the interval), with a
// keep-alive comment for proxies and the current cursor as its id.
func TestSSEHeartbeat(t *testing.T) {
	ts := newTestServer(t)
	s := openSSE(t, ts, "/api/v1/stream?series=dev1/%23", nil)
	s.open(t)

	// Three quarters of an interval of silence: nothing yet. The frame is
	// the next block, so no heartbeat went before it.
	ts.advance(3 * testHeartbeat / 4)
	ts.offer(t, point{"dev1/temp", ts.nowMs(), 1})
	cursor, _ := framePoints(t, s.next(t))
	sentMs := ts.nowMs()

	// Another three quarters: 1.5 intervals since the stream opened, but
	// only 0.75 since the frame. Then the rest of the interval.
	ts.advance(3 * testHeartbeat / 4)
	ts.advance(testHeartbeat / 4)
	hb := s.next(t)
	require.Equal(t, []string{": keep-alive", "event: heartbeat", "id: " + cursor, "data: " + strconv.FormatInt(sentMs+testHeartbeat.Milliseconds(), 10)}, hb.Lines)
	require.Equal(t, "heartbeat", hb.Type())
	require.Equal(t, cursor, hb.LastID)

	// Silence goes on: one heartbeat per interval.
	ts.advance(testHeartbeat)
	hb = s.next(t)
	require.Equal(t, "heartbeat", hb.Type())
	require.Equal(t, strconv.FormatInt(sentMs+2*testHeartbeat.Milliseconds(), 10), hb.Data)
	require.Equal(t, cursor, hb.ID)
}

// TestSSEDeadPeer checks that a client that went away is found out by the
// heartbeat writes and its viewer freed within two heartbeat intervals. A
// second, healthy stream shows when each heartbeat went out.
func TestSSEDeadPeer(t *testing.T) {
	for _, tc := range []struct {
		name string
		// reset closes with SO_LINGER 0 (an RST: the next write fails);
		// otherwise a FIN, after which the first write still succeeds
		// and draws the RST that fails the second.
		reset      bool
		heartbeats int
	}{
		{"client closes", false, 2},
		{"client resets", true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t)
			witness := openSSE(t, ts, "/api/v1/stream?series=%23", nil)
			witness.open(t)

			conn, err := net.Dial("tcp", ts.srv.Addr())
			require.NoError(t, err)
			t.Cleanup(func() { conn.Close() })
			_, err = fmt.Fprintf(conn, "GET /api/v1/stream?series=%%23 HTTP/1.1\r\nHost: %s\r\n\r\n", ts.srv.Addr())
			require.NoError(t, err)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			ts.waitLive(t, "sse", 2)
			if tc.reset {
				require.NoError(t, conn.(*net.TCPConn).SetLinger(0))
			}
			require.NoError(t, conn.Close())

			// Heartbeats queued while the dead viewer's writer is busy are
			// joined into one write, so the write that fails may come a
			// heartbeat or two later than tc.heartbeats; it must come.
			for i := 1; ; i++ {
				ts.advance(testHeartbeat)
				require.Equal(t, "heartbeat", witness.next(t).Type(), "heartbeat %d", i)
				if i < tc.heartbeats {
					continue
				}
				if ts.liveWithin(t, "sse", 1, 500*time.Millisecond) {
					break
				}
				require.Less(t, i, tc.heartbeats+4, "the dead peer is still counted after %d heartbeats", i)
			}
			require.Equal(t, 1.0, ts.metric(t, "telegauge_live_streams_open", map[string]string{"transport": "sse"}))
		})
	}
}

// TestSSEShutdown checks that Shutdown ends a stream with a longer retry
// hint and a comment saying why, then a clean end of the chunked body.
func TestSSEShutdown(t *testing.T) {
	ts := newTestServer(t, withWeb(func(c *Config) { c.SSERetry = time.Second }))
	s := openSSE(t, ts, "/api/v1/stream?series=%23", nil)
	s.open(t)
	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(t.Context()) }()
	last := s.next(t)
	require.Equal(t, []string{"retry: 2000", ": closed: server shutting down"}, last.Lines)
	require.ErrorIs(t, s.waitEnd(t), io.EOF, "the terminating chunk arrived")
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(waitTimeout):
		t.Fatal("Shutdown hung")
	}
	ts.waitLive(t, "sse", 0)
}

// slowReaderFrames is how many readings each frame of the slow-reader tests
// carries (about 45 bytes each as JSON), and slowQueueBytes the viewer queue:
// two such frames fit, three do not.
const (
	slowReaderFrames = 2000
	slowQueueBytes   = 200 << 10
)

// slowFrame is frame f of a slow-reader test: readings with distinct,
// increasing times, so that the times a client misses form one range.
func slowFrame(f int) []point {
	pts := make([]point, slowReaderFrames)
	base := t0.UnixMilli() - time.Hour.Milliseconds() + int64(f*slowReaderFrames)
	for i := range pts {
		pts[i] = point{"dev1/temp", base + int64(i), float64(i % 10)}
	}
	return pts
}

// fillUntil publishes slow frames (from frame *next on) until cond holds,
// with each frame queued before the next is published.
func fillUntil(t testing.TB, ts *testServer, next *int, sent map[int64]bool, cond func() bool) {
	t.Helper()
	for start := *next; !cond(); *next++ {
		require.Less(t, *next-start, 2000, "the client's socket never filled")
		pts := slowFrame(*next)
		ts.publish(t, pts...)
		for _, p := range pts {
			sent[p.T] = true
		}
	}
}

// checkGap checks what a client that stalled got: every reading it did not
// get live lies in the gap's range, and no reading it got does.
func checkGap(t testing.TB, sent map[int64]bool, got map[int64]int, fromMs, toMs int64) {
	t.Helper()
	for tm, n := range got {
		require.Equal(t, 1, n, "reading at %d delivered %d times", tm, n)
		require.True(t, sent[tm], "reading at %d was never sent", tm)
		require.False(t, tm >= fromMs && tm <= toMs, "reading at %d delivered, but inside the gap [%d, %d]", tm, fromMs, toMs)
	}
	missed, lo, hi := 0, int64(0), int64(0)
	for tm := range sent {
		if got[tm] == 0 {
			if missed == 0 || tm < lo {
				lo = tm
			}
			if missed == 0 || tm > hi {
				hi = tm
			}
			missed++
		}
	}
	require.NotZero(t, missed, "the stall skipped something")
	require.Equal(t, lo, fromMs, "gap starts at the first missed reading")
	require.Equal(t, hi, toMs, "gap ends at the last missed reading")
}

// TestSSEGap stalls a client (it stops reading, its small socket buffer
// fills) until its queue overflows: once it reads again it gets everything
// up to the stall, a gap event covering exactly the readings it missed, and
// then newer points.
func TestSSEGap(t *testing.T) {
	ts := newTestServer(t, withHub(func(c *dashboard.HubConfig) { c.ViewerQueueBytes = slowQueueBytes }))
	resp := getStreamRcvBuf(t, ts.url+"/api/v1/stream?series=dev1/%23", nil, 4096)
	require.Equal(t, http.StatusOK, resp.StatusCode)

	sent := map[int64]bool{}
	next := 0
	fillUntil(t, ts, &next, sent, func() bool { return ts.metric(t, "telegauge_hub_gaps_total", nil) > 0 })
	t.Logf("gap after %d frames", next)
	require.Zero(t, ts.metric(t, "telegauge_hub_slow_disconnects_total", nil))

	s := readSSE(t, resp)
	s.open(t)
	newer := point{"dev1/temp", t0.UnixMilli(), 42}
	ts.publish(t, newer)
	got := map[int64]int{}
	var gapFrom, gapTo int64
	gaps := 0
	for {
		b := s.nextEvent(t)
		if b.Type() == "gap" {
			gaps++
			require.Equal(t, "gap", b.Event)
			var g struct {
				From, To int64
				Cursor   string
			}
			require.NoError(t, json.Unmarshal([]byte(b.Data), &g))
			require.Equal(t, g.Cursor, b.ID, "the gap's id: is where it brings the client")
			gapFrom, gapTo = g.From, g.To
			continue
		}
		_, pts := framePoints(t, b)
		last := pts[len(pts)-1] == newer
		if last {
			// A client that was behind gets what it queued as one frame:
			// the newer reading may share it with earlier ones.
			pts = pts[:len(pts)-1]
		}
		for _, p := range pts {
			got[p.T]++
		}
		if last {
			require.Equal(t, 1, gaps, "one gap, before the newer points")
			break
		}
	}
	checkGap(t, sent, got, gapFrom, gapTo)
	require.Equal(t, 1.0, ts.live(t, "sse"), "a viewer that caught up stays")
}

// TestSSETooSlow checks that a client that stays stalled while its queue
// overflows again and again is disconnected, told why in a comment.
func TestSSETooSlow(t *testing.T) {
	ts := newTestServer(t, withHub(func(c *dashboard.HubConfig) { c.ViewerQueueBytes = slowQueueBytes }))
	resp := getStreamRcvBuf(t, ts.url+"/api/v1/stream?series=dev1/%23", nil, 4096)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	next := 0
	fillUntil(t, ts, &next, map[int64]bool{}, func() bool {
		return ts.metric(t, "telegauge_hub_slow_disconnects_total", nil) > 0
	})
	s := readSSE(t, resp)
	var last sseBlock
	for {
		select {
		case b := <-s.blocks:
			last = b
			continue
		case <-s.done:
		case <-time.After(waitTimeout):
			t.Fatal("stream of a too-slow client did not end")
		}
		break
	}
	for len(s.blocks) > 0 {
		last = <-s.blocks
	}
	require.ErrorIs(t, s.endErr(), io.EOF, "a clean end")
	require.Len(t, last.Lines, 2, "last block %q", last.Lines)
	require.True(t, strings.HasPrefix(last.Lines[0], "retry: "))
	require.Equal(t, ": closed: too slow: could not keep up even after skipping ahead", last.Lines[1])
	ts.waitLive(t, "sse", 0)
}
