package web

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSlowClientsAreCut checks the HTTP listener's timeouts with raw TCP
// clients: one that connects and says nothing, one that sends a request a
// byte at a time (slow loris) and one that stays idle after a request are
// each disconnected, while an SSE stream, a WebSocket and a long poll opened
// before them (so older than the timeouts when they fire) keep delivering,
// and ordinary requests beside them are answered.
func TestSlowClientsAreCut(t *testing.T) {
	const readTimeout, idleTimeout = 200 * time.Millisecond, 300 * time.Millisecond
	ts := newTestServer(t, withWeb(func(c *Config) { c.ReadTimeout, c.IdleTimeout = readTimeout, idleTimeout }))

	sse := openSSE(t, ts, "/api/v1/stream?series=%23", nil)
	sse.open(t)
	ws := dialWS(t, ts, "/api/v1/ws?series=%23", wsDialOptions{}).start()
	ws.nextOf(t, "subscribed")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	longPoll := pollAsync(ctx, ts, url.Values{"series": {"#"}, "cursor": {ts.hub.Cursor()}, "wait": {"25s"}})
	ts.blockUntilWaiters(t, 1)

	start := time.Now()
	silent := dialRaw(t, ts)

	loris := dialRaw(t, ts)
	_, err := io.WriteString(loris, "GET /api/v1/devices HTTP/1.1\r\nHost: telegauge\r\n")
	require.NoError(t, err)
	stopDribble := make(chan struct{})
	dribbled := make(chan error, 1)
	go func() { dribbled <- dribble(loris, "X-Slow: "+strings.Repeat("a", 1<<16), stopDribble) }()

	idle := dialRaw(t, ts)
	_, err = io.WriteString(idle, "GET /healthz HTTP/1.1\r\nHost: telegauge\r\n\r\n")
	require.NoError(t, err)
	idleReader := bufio.NewReader(idle)
	resp, err := http.ReadResponse(idleReader, nil)
	require.NoError(t, err)
	_, err = io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.False(t, resp.Close, "a keep-alive connection")

	// A good client beside them.
	var health struct{ Status string }
	require.Equal(t, http.StatusOK, getJSON(t, ts.url+"/healthz", &health))

	got, err := readUntilClosed(silent, nil)
	requireCut(t, err, got)
	require.Empty(t, got, "nothing was asked, nothing is answered")
	require.GreaterOrEqual(t, time.Since(start), readTimeout)

	got, err = readUntilClosed(loris, nil)
	requireCut(t, err, got)
	if len(got) > 0 {
		require.True(t, strings.HasPrefix(string(got), "HTTP/1.1 408"), "answer to a request too slow to arrive: %q", got)
	}
	select {
	case err := <-dribbled:
		t.Fatalf("the slow client stopped sending before it was cut: %v", err)
	default:
	}
	close(stopDribble)
	<-dribbled

	got, err = readUntilClosed(idle, idleReader)
	requireCut(t, err, got)
	require.Empty(t, got)

	// The live clients are older than both timeouts now, and still served.
	p := point{"dev1/temp", ts.nowMs(), 21.5}
	ts.publish(t, p)
	_, pts := framePoints(t, sse.nextEvent(t))
	require.Equal(t, []point{p}, pts)
	require.Equal(t, []point{p}, ws.nextOf(t, "points").Points)
	r := waitPoll(t, longPoll)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, []point{p}, r.answer.Points)
	require.Equal(t, 1.0, ts.live(t, "sse"))
	require.Equal(t, 1.0, ts.live(t, "ws"))
	require.Equal(t, http.StatusOK, getJSON(t, ts.url+"/healthz", &health))
}

// TestReadTimeoutDefault checks the documented defaults.
func TestReadTimeoutDefault(t *testing.T) {
	ts := newTestServer(t)
	require.Equal(t, 10*time.Second, ts.srv.cfg.ReadTimeout)
	require.Equal(t, 2*time.Minute, ts.srv.cfg.IdleTimeout)
	require.Equal(t, 10*time.Second, ts.srv.app.Config().ReadTimeout)
	require.Equal(t, 2*time.Minute, ts.srv.app.Config().IdleTimeout)
}

// dialRaw opens a TCP connection to the server.
func dialRaw(t testing.TB, ts *testServer) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", ts.srv.Addr(), waitTimeout)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// dribble writes s to c a byte every 10 ms until a write fails or stop is
// closed. It runs on its own goroutine and reports through its result.
func dribble(c net.Conn, s string, stop <-chan struct{}) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i = (i + 1) % len(s) {
		select {
		case <-stop:
			return nil
		case <-tick.C:
		}
		if _, err := c.Write([]byte{s[i]}); err != nil {
			return err
		}
	}
}

// readUntilClosed reads what the server sends on c (through r, when a
// reader already buffers it) until it closes the connection, waiting at
// most waitTimeout.
func readUntilClosed(c net.Conn, r io.Reader) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
	if r == nil {
		r = c
	}
	return io.ReadAll(r)
}

// requireCut checks that the server closed the connection (a clean close,
// or a reset when it closed with our bytes unread), rather than the
// client giving up waiting.
func requireCut(t testing.TB, err error, got []byte) {
	t.Helper()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server did not close the connection within %s (read %q)", waitTimeout, got)
	}
	if err != nil {
		require.ErrorContains(t, err, "reset", "read %q", got)
	}
}
