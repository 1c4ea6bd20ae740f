package web

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/dashboard"
)

// TestWSHeartbeatAndPings drives the fake clock: after an interval with
// nothing sent the client gets a heartbeat message, and a protocol ping
// every interval whatever else was sent; a client that answers the pings
// stays connected.
func TestWSHeartbeatAndPings(t *testing.T) {
	ts := newTestServer(t)
	c := dialWS(t, ts, "/api/v1/ws?series=dev1/%23", wsDialOptions{}).start()
	c.nextOf(t, "subscribed")

	ts.advance(3 * testHeartbeat / 4)
	ts.offer(t, point{"dev1/temp", ts.nowMs(), 1})
	pts := c.nextOf(t, "points")
	sentMs := ts.nowMs()
	require.Empty(t, c.pings, "no ping before an interval")

	// The ping is due an interval after the connection opened, though a
	// frame went out since; the heartbeat an interval after that frame.
	ts.advance(testHeartbeat / 4)
	ping := waitPing(t, c)
	require.Empty(t, ping)
	ts.advance(3 * testHeartbeat / 4)
	hb := c.nextOf(t, "heartbeat")
	require.Equal(t, sentMs+testHeartbeat.Milliseconds(), hb.T)
	require.Equal(t, pts.Cursor, hb.Cursor)
	require.Equal(t, fmt.Sprintf(`{"type":"heartbeat","t":%d,"cursor":"%s"}`, hb.T, hb.Cursor), hb.Raw)

	for i := 2; i <= 5; i++ {
		ts.advance(testHeartbeat / 4)
		waitPing(t, c)
		ts.advance(3 * testHeartbeat / 4)
		require.Equal(t, sentMs+int64(i)*testHeartbeat.Milliseconds(), c.nextOf(t, "heartbeat").T)
	}
	require.Equal(t, 1.0, ts.live(t, "ws"), "a client that answers pings stays")
}

func waitPing(t testing.TB, c *wsClient) string {
	t.Helper()
	select {
	case p := <-c.pings:
		return p
	case <-time.After(waitTimeout):
		t.Fatalf("no ping after %s", waitTimeout)
	}
	return ""
}

// TestWSDeadPeer uses a short real heartbeat, because socket deadlines are
// wall-clock: a client that stops answering pings is closed within about
// two intervals, while one that answers stays.
func TestWSDeadPeer(t *testing.T) {
	const hb = 200 * time.Millisecond
	ts := newTestServer(t, withRealClock(), withHub(func(c *dashboard.HubConfig) { c.Heartbeat = hb }))
	alive := dialWS(t, ts, "/api/v1/ws?series=%23", wsDialOptions{}).start()
	alive.nextOf(t, "subscribed")
	deaf := dialWS(t, ts, "/api/v1/ws?series=%23", wsDialOptions{ignorePings: true}).start()
	deaf.nextOf(t, "subscribed")
	start := time.Now()

	err := deaf.waitClose(t)
	elapsed := time.Since(start)
	require.Error(t, err)
	require.GreaterOrEqual(t, elapsed, hb, "not before it missed a ping")
	require.Less(t, elapsed, 5*hb, "closed within about two intervals (%s)", elapsed)
	ts.waitLive(t, "ws", 1)

	// Meanwhile the other one kept answering: it is still there, pings
	// later.
	n := len(alive.pings)
	for range 5 - min(n, 5) {
		waitPing(t, alive)
	}
	require.Equal(t, 1.0, ts.live(t, "ws"))
	select {
	case <-alive.done:
		t.Fatalf("the client that answered pings was closed: %v", alive.endErr())
	default:
	}
}

// TestWSClientGone checks that a client that closes its connection frees its
// viewer at once: the reader sees the end, no heartbeat needed.
func TestWSClientGone(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close func(c *websocket.Conn) error
	}{
		{"close frame", func(c *websocket.Conn) error {
			return c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
		}},
		{"TCP close", func(c *websocket.Conn) error { return c.NetConn().Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t)
			c := dialWS(t, ts, "/api/v1/ws?series=%23", wsDialOptions{})
			_, err := c.read()
			require.NoError(t, err)
			ts.waitLive(t, "ws", 1)
			require.NoError(t, tc.close(c.conn))
			ts.waitLive(t, "ws", 0)
			require.Zero(t, ts.metric(t, "telegauge_live_streams_open", map[string]string{"transport": "ws"}))
		})
	}
}

// TestWSSubscribeUnsubscribe changes one connection's subscription back and
// forth: each change is acknowledged with the whole set, and readings follow
// the set in force.
func TestWSSubscribeUnsubscribe(t *testing.T) {
	ts := newTestServer(t)
	c := dialWS(t, ts, "/api/v1/ws", wsDialOptions{}).start()
	ack := c.nextOf(t, "subscribed")
	require.Equal(t, []string{}, ack.Series)
	require.Equal(t, `{"type":"subscribed","series":[],"cursor":"`+ack.Cursor+`"}`, ack.Raw)

	var tm int64 = t0.UnixMilli()
	round := func(want ...string) {
		t.Helper()
		var pts, wantPts []point
		for _, s := range []string{"dev1/temp", "dev1/hum", "dev2/temp", "dev2/hum"} {
			tm++
			p := point{s, tm, float64(tm % 100)}
			pts = append(pts, p)
			if contains(want, s) {
				wantPts = append(wantPts, p)
			}
		}
		ts.offer(t, pts...)
		// A sentinel every subscription in this test covers would change
		// it; use a subscription change's ack instead: it follows the
		// frame in order.
		c.send(t, map[string]any{"type": "ping"})
		c.send(t, map[string]any{"type": "subscribe", "series": []string{"mark/x"}})
		got := map[point]int{}
		for {
			m := c.next(t)
			if m.Type == "subscribed" {
				break
			}
			require.Equal(t, "points", m.Type, m.Raw)
			for _, p := range m.Points {
				got[p]++
			}
		}
		requireExactlyOnce(t, wantPts, got)
		c.send(t, map[string]any{"type": "unsubscribe", "series": []string{"mark/x"}})
		c.nextOf(t, "subscribed")
	}

	round() // nothing subscribed
	c.send(t, map[string]any{"type": "subscribe", "series": []string{"dev1/#"}})
	ack = c.nextOf(t, "subscribed")
	require.Equal(t, []string{"dev1/#"}, ack.Series)
	require.Equal(t, ts.hub.Cursor(), ack.Cursor)
	round("dev1/temp", "dev1/hum")

	c.send(t, map[string]any{"type": "subscribe", "series": []string{"+/hum"}})
	require.Equal(t, []string{"+/hum", "dev1/#"}, c.nextOf(t, "subscribed").Series)
	round("dev1/temp", "dev1/hum", "dev2/hum")

	c.send(t, map[string]any{"type": "unsubscribe", "series": []string{"dev1/#"}})
	require.Equal(t, []string{"+/hum"}, c.nextOf(t, "subscribed").Series)
	round("dev1/hum", "dev2/hum")

	// Unsubscribing what is not subscribed changes nothing.
	c.send(t, map[string]any{"type": "unsubscribe", "series": []string{"dev2/#"}})
	require.Equal(t, []string{"+/hum"}, c.nextOf(t, "subscribed").Series)

	c.send(t, map[string]any{"type": "unsubscribe", "series": []string{"+/hum"}})
	require.Equal(t, []string{}, c.nextOf(t, "subscribed").Series)
	round()
}

// TestWSBadMessages checks that a refused client message gets an error
// message and leaves the connection usable.
func TestWSBadMessages(t *testing.T) {
	ts := newTestServer(t)
	c := dialWS(t, ts, "/api/v1/ws?series=dev1/%23", wsDialOptions{}).start()
	c.nextOf(t, "subscribed")
	for _, tc := range []struct {
		name string
		msg  func() error
		want string
	}{
		{"unknown type", func() error { return c.conn.WriteJSON(map[string]any{"type": "hello"}) }, "unknown message type"},
		{"no type", func() error { return c.conn.WriteJSON(map[string]any{"series": []string{"#"}}) }, "unknown message type"},
		{"not JSON", func() error { return c.conn.WriteMessage(websocket.TextMessage, []byte("subscribe #")) }, "not a JSON object"},
		{"JSON but not an object", func() error { return c.conn.WriteMessage(websocket.TextMessage, []byte(`["subscribe"]`)) }, "not a JSON object"},
		{"binary", func() error { return c.conn.WriteMessage(websocket.BinaryMessage, []byte(`{"type":"subscribe"}`)) }, "binary"},
		{"subscribe without series", func() error { return c.conn.WriteJSON(map[string]any{"type": "subscribe"}) }, "needs series"},
		{"subscribe bad pattern", func() error {
			return c.conn.WriteJSON(map[string]any{"type": "subscribe", "series": []string{"a/b/c"}})
		}, "series pattern"},
		{"unsubscribe bad pattern", func() error {
			return c.conn.WriteJSON(map[string]any{"type": "unsubscribe", "series": []string{"a/#/c"}})
		}, "series pattern"},
		{"subscribe malformed cursor", func() error {
			return c.conn.WriteJSON(map[string]any{"type": "subscribe", "series": []string{"dev2/#"}, "cursor": "x"})
		}, "malformed cursor"},
		{"long type", func() error { return c.conn.WriteJSON(map[string]any{"type": strings.Repeat("\n", 1000)}) }, "unknown message type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, tc.msg())
			m := c.nextOf(t, "error")
			require.Contains(t, m.Message, tc.want)
			require.Less(t, len(m.Message), 200, "a short message")
		})
	}
	// Still usable, and unchanged by the refused requests.
	c.send(t, map[string]any{"type": "subscribe", "series": []string{"dev3/#"}})
	require.Equal(t, []string{"dev1/#", "dev3/#"}, c.nextOf(t, "subscribed").Series)
	ts.offer(t, point{"dev2/temp", t0.UnixMilli(), 2}, point{"dev3/temp", t0.UnixMilli(), 3})
	require.Equal(t, []point{{"dev3/temp", t0.UnixMilli(), 3}}, c.nextOf(t, "points").Points)
}

// TestWSCompression checks permessage-deflate: negotiated when the client
// offers it (unless disabled), and messages, shared prepared ones included,
// still decode.
func TestWSCompression(t *testing.T) {
	for _, tc := range []struct {
		name     string
		disable  bool
		offer    bool
		deflated bool
	}{
		{"offered", false, true, true},
		{"not offered", false, false, false},
		{"disabled on the server", true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, withWeb(func(c *Config) { c.DisableWSCompression = tc.disable }))
			// Two clients with the same subscription share each
			// frame's prepared (and compressed) message.
			var cs []*wsClient
			for range 2 {
				c := dialWS(t, ts, "/api/v1/ws?series=%23", wsDialOptions{compress: tc.offer}).start()
				ext := c.resp.Header.Get("Sec-WebSocket-Extensions")
				if tc.deflated {
					require.Contains(t, ext, "permessage-deflate")
				} else {
					require.Empty(t, ext)
				}
				c.nextOf(t, "subscribed")
				cs = append(cs, c)
			}
			var pts []point
			for i := range 300 {
				pts = append(pts, point{fmt.Sprintf("dev%d/temp", i%4), t0.UnixMilli() + int64(i), float64(i) / 8})
			}
			ts.publish(t, pts...)
			for _, c := range cs {
				require.Equal(t, pts, c.nextOf(t, "points").Points)
			}
			ts.advance(testHeartbeat)
			for _, c := range cs {
				c.nextOf(t, "heartbeat")
			}
		})
	}
}

// TestWSOrigin checks the Origin allow-list, which is decided before the
// upgrade: same origin by default, else the configured list, "*" for any.
func TestWSOrigin(t *testing.T) {
	for _, tc := range []struct {
		name    string
		origins []string
		origin  string // "SAME" is the server's own http://host:port
		allowed bool
	}{
		{"default, no Origin (not a browser)", nil, "", true},
		{"default, same origin", nil, "SAME", true},
		{"default, other origin", nil, "http://evil.example", false},
		{"default, other port", nil, "http://127.0.0.1:1", false},
		{"default, same host in another scheme's clothes", nil, "null", false},
		{"list, listed", []string{"https://ops.example.com"}, "https://ops.example.com", true},
		{"list, listed in other case", []string{"https://ops.example.com"}, "https://OPS.example.com", true},
		{"list, listed with a slash", []string{"https://ops.example.com/"}, "https://ops.example.com", true},
		{"list, not listed", []string{"https://ops.example.com"}, "https://evil.example.com", false},
		{"list, same origin not listed", []string{"https://ops.example.com"}, "SAME", false},
		{"list, prefix of a listed one", []string{"https://ops.example.com"}, "https://ops.example.co", false},
		{"star", []string{"*"}, "https://anything.example", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, withWeb(func(c *Config) { c.Origins = tc.origins }))
			h := http.Header{}
			switch tc.origin {
			case "":
			case "SAME":
				h.Set("Origin", "http://"+ts.srv.Addr())
			default:
				h.Set("Origin", tc.origin)
			}
			conn, resp, err := dialWSRaw(ts, "/api/v1/ws?series=%23", wsDialOptions{header: h})
			if tc.allowed {
				require.NoError(t, err)
				defer conn.Close()
				_, data, err := conn.ReadMessage()
				require.NoError(t, err)
				require.Contains(t, string(data), `"subscribed"`)
				return
			}
			if conn != nil {
				conn.Close()
			}
			require.ErrorIs(t, err, websocket.ErrBadHandshake)
			require.Contains(t, requireJSONError(t, http.StatusForbidden, resp), "origin")
			require.Zero(t, ts.live(t, "ws"), "refused before subscribing")
		})
	}
}

// TestWSReadLimit checks that a client message over WSReadLimitBytes closes
// the connection with 1009.
func TestWSReadLimit(t *testing.T) {
	ts := newTestServer(t, withWeb(func(c *Config) { c.WSReadLimitBytes = 1024 }))
	c := dialWS(t, ts, "/api/v1/ws?series=%23", wsDialOptions{}).start()
	c.nextOf(t, "subscribed")
	// Just under the limit is fine.
	ok, err := json.Marshal(map[string]any{"type": "subscribe", "series": []string{"dev1/" + strings.Repeat("a", 60)}, "cursor": "", "pad": strings.Repeat(" ", 900)})
	require.NoError(t, err)
	require.Less(t, len(ok), 1024)
	require.NoError(t, c.conn.WriteMessage(websocket.TextMessage, ok))
	c.nextOf(t, "subscribed")

	big := `{"type":"subscribe","series":["` + strings.Repeat("x", 2000) + `"]}`
	require.NoError(t, c.conn.WriteMessage(websocket.TextMessage, []byte(big)))
	requireCloseCode(t, websocket.CloseMessageTooBig, c.waitClose(t))
	ts.waitLive(t, "ws", 0)
}

// TestWSShutdown checks that Shutdown closes WebSockets with 1001 and a
// reason, promptly.
func TestWSShutdown(t *testing.T) {
	ts := newTestServer(t)
	c := dialWS(t, ts, "/api/v1/ws?series=%23", wsDialOptions{}).start()
	c.nextOf(t, "subscribed")
	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(t.Context()) }()
	ce := requireCloseCode(t, websocket.CloseGoingAway, c.waitClose(t))
	require.Equal(t, "server shutting down", ce.Text)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(waitTimeout):
		t.Fatal("Shutdown hung")
	}
	ts.waitLive(t, "ws", 0)
}

// TestWSGap stalls a client (it stops reading) until its queue overflows:
// it then gets everything up to the stall, a gap message covering exactly
// the readings it missed, and newer points.
func TestWSGap(t *testing.T) {
	ts := newTestServer(t, withHub(func(c *dashboard.HubConfig) { c.ViewerQueueBytes = slowQueueBytes }))
	c := dialWS(t, ts, "/api/v1/ws?series=dev1/%23", wsDialOptions{rcvBufBytes: 4096})
	m, err := c.read()
	require.NoError(t, err)
	require.Equal(t, "subscribed", m.Type)

	sent := map[int64]bool{}
	next := 0
	fillUntil(t, ts, &next, sent, func() bool { return ts.metric(t, "telegauge_hub_gaps_total", nil) > 0 })
	require.Zero(t, ts.metric(t, "telegauge_hub_slow_disconnects_total", nil))
	c.start()
	newer := point{"dev1/temp", t0.UnixMilli(), 42}
	ts.publish(t, newer)
	got := map[int64]int{}
	var gap wsMsg
	for {
		m := c.next(t)
		if m.Type == "gap" {
			require.Empty(t, gap.Type, "one gap")
			gap = m
			require.NotEmpty(t, gap.Cursor)
			continue
		}
		require.Equal(t, "points", m.Type, m.Raw)
		pts := m.Points
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
			require.Equal(t, "gap", gap.Type, "the gap came before the newer points")
			break
		}
	}
	checkGap(t, sent, got, gap.From, gap.To)
	require.Equal(t, 1.0, ts.live(t, "ws"))
}

// TestWSTooSlow checks that a client that stays stalled while its queue
// overflows again and again is closed with 1008 and a reason.
func TestWSTooSlow(t *testing.T) {
	ts := newTestServer(t, withHub(func(c *dashboard.HubConfig) { c.ViewerQueueBytes = slowQueueBytes }))
	c := dialWS(t, ts, "/api/v1/ws?series=dev1/%23", wsDialOptions{rcvBufBytes: 4096})
	next := 0
	fillUntil(t, ts, &next, map[int64]bool{}, func() bool {
		return ts.metric(t, "telegauge_hub_slow_disconnects_total", nil) > 0
	})
	var err error
	for err == nil {
		_, err = c.read()
	}
	ce := requireCloseCode(t, websocket.ClosePolicyViolation, err)
	require.Equal(t, "too slow: could not keep up even after skipping ahead", ce.Text)
	ts.waitLive(t, "ws", 0)
}

// TestWSBadHandshake checks that an upgrade request the WebSocket library
// refuses gets a 400 with a JSON error, and frees the viewer that was
// subscribed for it.
func TestWSBadHandshake(t *testing.T) {
	ts := newTestServer(t)
	req, err := http.NewRequest(http.MethodGet, ts.url+"/api/v1/ws?series=%23", nil)
	require.NoError(t, err)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13") // and no Sec-WebSocket-Key
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NotEmpty(t, requireJSONError(t, http.StatusBadRequest, resp))
	ts.waitLive(t, "ws", 0)
}

// TestWSSubscribeResume checks a subscribe message with a cursor on a live
// connection: it replays what the new patterns match after the cursor and
// the old ones did not (those were delivered already), then both go on.
func TestWSSubscribeResume(t *testing.T) {
	ts := newTestServer(t)
	c := dialWS(t, ts, "/api/v1/ws?series=dev1/%23", wsDialOptions{}).start()
	c0 := c.nextOf(t, "subscribed").Cursor
	base := t0.UnixMilli()
	ts.offer(t, point{"dev1/temp", base, 1}, point{"dev2/temp", base, 2}, point{"dev2/hum", base, 3})
	got := map[point]int{}
	for len(got) == 0 {
		for _, p := range c.nextOf(t, "points").Points {
			got[p]++
		}
	}
	require.Equal(t, map[point]int{{"dev1/temp", base, 1}: 1}, got)

	c.send(t, map[string]any{"type": "subscribe", "series": []string{"+/temp"}, "cursor": c0})
	ack := c.nextOf(t, "subscribed")
	require.Equal(t, []string{"+/temp", "dev1/#"}, ack.Series)
	require.Equal(t, c0, ack.Cursor)
	require.Equal(t, []point{{"dev2/temp", base, 2}}, c.nextOf(t, "points").Points, "only what the old set missed")

	ts.offer(t, point{"dev1/temp", base + 1, 4}, point{"dev2/temp", base + 1, 5}, point{"dev2/hum", base + 1, 6})
	got = map[point]int{}
	for len(got) < 2 {
		for _, p := range c.nextOf(t, "points").Points {
			got[p]++
		}
	}
	require.Equal(t, map[point]int{{"dev1/temp", base + 1, 4}: 1, {"dev2/temp", base + 1, 5}: 1}, got)
}

// TestWSResetDuringHandshake: clients that reset their connection right
// after sending the upgrade leave no viewer behind, however the race with
// the server's 101 goes (fasthttp never hands over a connection whose 101
// could not be written).
func TestWSResetDuringHandshake(t *testing.T) {
	ts := newTestServer(t)
	addr := ts.srv.Addr()
	req := "GET /api/v1/ws?series=dev1/%23 HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	for range 200 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		require.NoError(t, err)
		_, err = c.Write([]byte(req))
		require.NoError(t, err)
		require.NoError(t, c.(*net.TCPConn).SetLinger(0))
		require.NoError(t, c.Close())
	}
	ts.waitLive(t, "ws", 0)
	// And the endpoint still serves.
	c := dialWS(t, ts, "/api/v1/ws?series=dev1/%23", wsDialOptions{}).start()
	c.nextOf(t, "subscribed")
}
