package web

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/dashboard"
)

// TestPollWithoutCursor checks that a poll without a cursor answers at once
// with the current cursor, whatever wait says.
func TestPollWithoutCursor(t *testing.T) {
	ts := newTestServer(t)
	ts.offer(t, point{"dev1/temp", t0.UnixMilli(), 1})
	for _, wait := range []string{"", "0", "60s"} {
		t.Run("wait="+wait, func(t *testing.T) {
			resp, err := http.Get(ts.url + "/api/v1/poll?series=%23&wait=" + wait)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
			status, a := poll(t, ts, url.Values{"series": {"#"}, "wait": {wait}})
			require.Equal(t, http.StatusOK, status)
			require.Equal(t, ts.hub.Cursor(), a.Cursor)
			require.Empty(t, a.Points)
			require.Nil(t, a.Gap)
			require.False(t, a.Reset)
		})
	}
	require.Zero(t, ts.live(t, "longpoll"))
}

// TestLongPollAnswersOnReading checks that a long poll waits (on the
// injected clock) and answers as soon as a matching reading arrives, with
// every reading since its cursor.
func TestLongPollAnswersOnReading(t *testing.T) {
	ts := newTestServer(t)
	cursor := ts.hub.Cursor()
	q := url.Values{"series": {"dev1/#"}, "cursor": {cursor}, "wait": {"15s"}}
	res := pollAsync(t.Context(), ts, q)
	ts.blockUntilWaiters(t, 1) // the poll's wait timer
	ts.waitLive(t, "longpoll", 1)
	ts.offer(t, point{"dev2/temp", t0.UnixMilli(), 1}) // not for it: it keeps waiting
	// A heartbeat goes by: the poll ignores it.
	ts.advance(14 * time.Second)
	ts.offer(t, point{"dev1/temp", t0.UnixMilli() + 1, 2})
	r := waitPoll(t, res)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, []point{{"dev1/temp", t0.UnixMilli() + 1, 2}}, r.answer.Points)
	require.Equal(t, ts.hub.Cursor(), r.answer.Cursor)
	require.Nil(t, r.answer.Gap)
	require.False(t, r.answer.Reset)
	ts.waitLive(t, "longpoll", 0)
}

// TestLongPollTimeout checks that a long poll with nothing for it answers
// empty when its wait ends, with the same cursor, or a newer one when
// frames it did not want went by.
func TestLongPollTimeout(t *testing.T) {
	for _, tc := range []struct {
		name  string
		other bool // publish a reading it does not want meanwhile
	}{
		{"nothing happened", false},
		{"other readings", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t)
			cursor := ts.hub.Cursor()
			res := pollAsync(t.Context(), ts, url.Values{"series": {"dev1/#"}, "cursor": {cursor}, "wait": {"5s"}})
			ts.blockUntilWaiters(t, 1)
			if tc.other {
				ts.offer(t, point{"dev2/temp", t0.UnixMilli(), 1})
			}
			ts.advance(5 * time.Second)
			r := waitPoll(t, res)
			require.Equal(t, http.StatusOK, r.status)
			require.Empty(t, r.answer.Points)
			require.Nil(t, r.answer.Gap)
			require.False(t, r.answer.Reset)
			require.Equal(t, ts.hub.Cursor(), r.answer.Cursor)
			if !tc.other {
				require.Equal(t, cursor, r.answer.Cursor)
			} else {
				require.Greater(t, seqOf(t, r.answer.Cursor), seqOf(t, cursor))
			}
		})
	}
}

// TestLongPollWaitCapped checks the cap on wait: MaxPollWait, which
// defaults to two heartbeat intervals, and that PollWait is the default.
func TestLongPollWaitCapped(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      Config
		wait     string
		answerIn time.Duration
	}{
		{"default cap: two heartbeats", Config{}, "1h", 2 * testHeartbeat},
		{"configured cap", Config{MaxPollWait: 3 * time.Second}, "1h", 3 * time.Second},
		{"seconds", Config{}, "7", 7 * time.Second},
		{"fractional seconds", Config{}, "1.5", 1500 * time.Millisecond},
		{"default wait, capped", Config{}, "", 2 * testHeartbeat},
		{"configured default wait", Config{PollWait: 4 * time.Second}, "", 4 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, withWeb(func(c *Config) { c.MaxPollWait, c.PollWait = tc.cfg.MaxPollWait, tc.cfg.PollWait }))
			q := url.Values{"series": {"#"}, "cursor": {ts.hub.Cursor()}}
			if tc.wait != "" {
				q.Set("wait", tc.wait)
			}
			res := pollAsync(t.Context(), ts, q)
			ts.blockUntilWaiters(t, 1)
			ts.advance(tc.answerIn - time.Millisecond)
			// Its timer has not fired: the waiter is still there (a fake
			// timer fires inside Advance, so this is not a race).
			ts.blockUntilWaiters(t, 1)
			select {
			case r := <-res:
				t.Fatalf("answered early: %+v", r)
			default:
			}
			ts.advance(time.Millisecond)
			r := waitPoll(t, res)
			require.Equal(t, http.StatusOK, r.status)
			require.Empty(t, r.answer.Points)
		})
	}
}

// TestShortPoll checks wait=0: an answer at once, with what there is.
func TestShortPoll(t *testing.T) {
	ts := newTestServer(t)
	cursor := ts.hub.Cursor()
	for _, wait := range []string{"0", "0s", "0ms"} {
		status, a := poll(t, ts, url.Values{"series": {"#"}, "cursor": {cursor}, "wait": {wait}})
		require.Equal(t, http.StatusOK, status)
		require.Empty(t, a.Points)
		require.Equal(t, cursor, a.Cursor)
	}
	ts.offer(t, point{"dev1/temp", t0.UnixMilli(), 1})
	ts.offer(t, point{"dev1/temp", t0.UnixMilli() + 1, 2})
	status, a := poll(t, ts, url.Values{"series": {"#"}, "cursor": {cursor}, "wait": {"0"}})
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, []point{{"dev1/temp", t0.UnixMilli(), 1}, {"dev1/temp", t0.UnixMilli() + 1, 2}}, a.Points)
	require.Equal(t, ts.hub.Cursor(), a.Cursor)
	status, b := poll(t, ts, url.Values{"series": {"#"}, "cursor": {a.Cursor}, "wait": {"0"}})
	require.Equal(t, http.StatusOK, status)
	require.Empty(t, b.Points, "nothing twice")
	require.Zero(t, ts.live(t, "poll"))
}

// TestPollGap checks a poll that resumes with more backlog than a viewer's
// queue holds: it gets the newest readings that fit and a gap over exactly
// the older ones, with the cursor after everything.
func TestPollGap(t *testing.T) {
	ts := newTestServer(t, withHub(func(c *dashboard.HubConfig) { c.ViewerQueueBytes = 2 << 10 }))
	cursor := ts.hub.Cursor()
	var pts []point
	for i := range 200 {
		pts = append(pts, point{"dev1/temp", t0.UnixMilli() - 1000 + int64(i), float64(i)})
	}
	for i := 0; i < len(pts); i += 50 {
		ts.offer(t, pts[i:i+50]...)
	}
	for _, wait := range []string{"0", "10s"} {
		status, a := poll(t, ts, url.Values{"series": {"dev1/#"}, "cursor": {cursor}, "wait": {wait}})
		require.Equal(t, http.StatusOK, status)
		require.NotNil(t, a.Gap)
		require.Less(t, len(a.Points), len(pts), "not the whole backlog")
		require.Equal(t, pts[len(pts)-len(a.Points):], a.Points, "the newest readings, in order")
		require.Equal(t, pts[0].T, a.Gap.From)
		require.Equal(t, pts[len(pts)-len(a.Points)-1].T, a.Gap.To, "the gap ends just before the readings returned")
		require.Equal(t, ts.hub.Cursor(), a.Cursor)
		require.False(t, a.Reset)
	}
}

// TestLongPollShutdown checks that Shutdown answers a waiting long poll at
// once (200, no points, a cursor to resume from) instead of hanging.
func TestLongPollShutdown(t *testing.T) {
	ts := newTestServer(t)
	cursor := ts.hub.Cursor()
	res := pollAsync(t.Context(), ts, url.Values{"series": {"#"}, "cursor": {cursor}, "wait": {"60s"}})
	ts.blockUntilWaiters(t, 1)
	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(context.Background()) }()
	r := waitPoll(t, res)
	require.Equal(t, http.StatusOK, r.status)
	require.Empty(t, r.answer.Points)
	require.Equal(t, cursor, r.answer.Cursor)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(waitTimeout):
		t.Fatal("Shutdown hung")
	}
	ts.waitLive(t, "longpoll", 0)
}

// TestLongPollClientGone checks that the viewer of a long poll whose client
// went away is freed when the wait ends, at most two heartbeat intervals
// (fasthttp does not tell a handler that its client left).
func TestLongPollClientGone(t *testing.T) {
	ts := newTestServer(t)
	ctx, cancel := context.WithCancel(t.Context())
	res := pollAsync(ctx, ts, url.Values{"series": {"#"}, "cursor": {ts.hub.Cursor()}, "wait": {"1h"}})
	ts.blockUntilWaiters(t, 1)
	ts.waitLive(t, "longpoll", 1)
	cancel()
	r := <-res
	require.ErrorIs(t, r.err, context.Canceled)
	ts.advance(2 * testHeartbeat)
	ts.waitLive(t, "longpoll", 0)
}
