package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/fasthttp/websocket"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/internal/testutil"
)

// testNode is a running server for a test.
type testNode struct {
	*node
	httpURL string
	mqttURL string
}

// mustRunMain starts `telegauge serve` in-process on free loopback ports,
// with extra flags, and stops it (checking the shutdown) when the test ends.
func mustRunMain(t testing.TB, args ...string) *testNode {
	t.Helper()
	var c cli
	parser, err := kong.New(&c, kong.Name("telegauge"), kong.DefaultEnvars("TELEGAUGE"), kong.Configuration(yamlConfig))
	require.NoError(t, err)
	_, err = parser.Parse(append([]string{"serve", "--http-addr=127.0.0.1:0", "--mqtt-addr=127.0.0.1:0", "--data-dir=" + t.TempDir()}, args...))
	require.NoError(t, err)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	n, err := c.Serve.build(log)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.run(ctx, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err, "shutdown")
		case <-time.After(15 * time.Second):
			t.Error("server did not stop")
		}
	})
	return &testNode{node: n, httpURL: "http://" + n.web.Addr(), mqttURL: n.mqttURL()}
}

// eventually polls check until it holds or the test fails.
var eventually = testutil.Eventually

func newPaho(t testing.TB, broker, id string) mqtt.Client {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).SetAutoReconnect(false))
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second), "connect")
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

func publish(t testing.TB, c mqtt.Client, topic string, qos byte, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, false, payload)
	require.True(t, tok.WaitTimeout(5*time.Second), "publish")
	require.NoError(t, tok.Error())
}

type point struct {
	S string  `json:"s"`
	T int64   `json:"t"`
	V float64 `json:"v"`
}

// collector gathers live points from one client and reports duplicates.
type collector struct {
	mu     sync.Mutex
	points map[point]int
	events []string
	err    error
}

func newCollector() *collector { return &collector{points: make(map[point]int)} }

func (c *collector) add(kind string, pts []point) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, kind)
	for _, p := range pts {
		c.points[p]++
	}
}

func (c *collector) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
}

// check returns nil when every wanted point arrived exactly once and
// nothing else did.
func (c *collector) check(want map[point]bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	for p, n := range c.points {
		if n > 1 {
			return fmt.Errorf("point %+v delivered %d times", p, n)
		}
		if !want[p] {
			return fmt.Errorf("unexpected point %+v", p)
		}
	}
	if len(c.points) != len(want) {
		return fmt.Errorf("got %d of %d points", len(c.points), len(want))
	}
	return nil
}

func (c *collector) snapshot() map[point]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[point]int, len(c.points))
	for p, n := range c.points {
		out[p] = n
	}
	return out
}

func (c *collector) saw(kind string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.events {
		if e == kind {
			return true
		}
	}
	return false
}

// streamSSE reads an SSE stream into c until ctx ends. It returns once the
// stream is open.
func streamSSE(t testing.TB, ctx context.Context, u string, c *collector) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Equal(t, "no", resp.Header.Get("X-Accel-Buffering"))
	r := bufio.NewReader(resp.Body)
	first, err := r.ReadString('\n')
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(first, "retry: "), "stream starts with retry: got %q", first)
	go func() {
		defer resp.Body.Close()
		event, data := "", ""
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				if ctx.Err() == nil {
					c.fail(fmt.Errorf("SSE read: %w", err))
				}
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case line == "":
				if data != "" {
					kind := event
					if kind == "" {
						kind = "points"
					}
					var f struct {
						Points []point `json:"points"`
					}
					if kind == "points" {
						if err := json.Unmarshal([]byte(data), &f); err != nil {
							c.fail(fmt.Errorf("SSE data %q: %w", data, err))
						}
					}
					c.add(kind, f.Points)
				}
				event, data = "", ""
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
}

// streamWS reads a WebSocket into c until ctx ends. It returns once the
// subscription is acknowledged.
func streamWS(t testing.TB, ctx context.Context, u string, c *collector) *websocket.Conn {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.DialContext(ctx, u, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	var ack struct {
		Type   string   `json:"type"`
		Series []string `json:"series"`
		Cursor string   `json:"cursor"`
	}
	require.NoError(t, conn.ReadJSON(&ack))
	require.Equal(t, "subscribed", ack.Type)
	require.NotEmpty(t, ack.Cursor)
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	go func() {
		for {
			var m struct {
				Type   string  `json:"type"`
				Points []point `json:"points"`
			}
			if err := conn.ReadJSON(&m); err != nil {
				if ctx.Err() == nil {
					c.fail(fmt.Errorf("WS read: %w", err))
				}
				return
			}
			c.add(m.Type, m.Points)
		}
	}()
	return conn
}

func getJSON(t testing.TB, u string, out any) int {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Contains(t, resp.Header.Get("Content-Type"), "application/json")
	require.NoError(t, json.NewDecoder(resp.Body).Decode(out))
	return resp.StatusCode
}

type queryAnswer struct {
	Series []struct {
		ID    string    `json:"id"`
		Step  int64     `json:"step"`
		T     []int64   `json:"t"`
		Min   []float64 `json:"min"`
		Max   []float64 `json:"max"`
		Avg   []float64 `json:"avg"`
		Count []int64   `json:"count"`
		Last  []float64 `json:"last"`
	} `json:"series"`
	Error string `json:"error"`
}

// TestEndToEnd publishes readings over MQTT and checks that SSE and
// WebSocket viewers get each exactly once and that /query's rollups are
// exact, late and out-of-order readings included.
func TestEndToEnd(t *testing.T) {
	n := mustRunMain(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	sseAll, sseDev, wsDev := newCollector(), newCollector(), newCollector()
	streamSSE(t, ctx, n.httpURL+"/api/v1/stream?series=%23", sseAll)
	streamSSE(t, ctx, n.httpURL+"/api/v1/stream?series=e2e/temperature", sseDev)
	streamWS(t, ctx, "ws"+strings.TrimPrefix(n.httpURL, "http")+"/api/v1/ws?series=%2B/temperature&series=e2e/%23", wsDev)

	// Readings in one minute, then late ones in the previous minute,
	// published out of order.
	nowMs := time.Now().UnixMilli()
	minute := nowMs - nowMs%60_000
	type reading struct {
		tMs  int64
		temp float64
		hum  float64
	}
	var rs []reading
	for i := range 40 {
		rs = append(rs, reading{tMs: minute + int64(i)*250, temp: 20 + float64(i%7), hum: 50 - float64(i%5)})
	}
	for i := range 10 {
		rs = append(rs, reading{tMs: minute - 60_000 + int64(9-i)*1000, temp: -float64(i), hum: float64(i)})
	}
	dev := newPaho(t, n.mqttURL, "e2e")
	all, temps := map[point]bool{}, map[point]bool{}
	for _, r := range rs {
		publish(t, dev, "telemetry/e2e", 1, fmt.Sprintf(`{"ts":%d,"temperature":%g,"env":{"humidity":%g},"note":"ignored"}`, r.tMs, r.temp, r.hum))
		all[point{"e2e/temperature", r.tMs, r.temp}] = true
		all[point{"e2e/env.humidity", r.tMs, r.hum}] = true
		temps[point{"e2e/temperature", r.tMs, r.temp}] = true
	}
	// The per-metric topic form, and a rejected payload that must not stop
	// anything else.
	publish(t, dev, "telemetry/e2e/pressure", 1, "1013.25")
	publish(t, dev, "telemetry/e2e", 1, `{"temperature": "warm", "ts": "yesterday"}`)
	eventually(t, 5*time.Second, func() error {
		if got := len(sseAll.snapshot()); got < len(all)+1 {
			return fmt.Errorf("waiting: %d points", got)
		}
		return nil
	})
	for p := range sseAll.snapshot() {
		if p.S == "e2e/pressure" {
			all[p] = true
		}
	}

	eventually(t, 5*time.Second, func() error { return sseAll.check(all) })
	eventually(t, 5*time.Second, func() error { return sseDev.check(temps) })
	wsWant := map[point]bool{}
	for p := range all {
		wsWant[p] = true
	}
	eventually(t, 5*time.Second, func() error { return wsDev.check(wsWant) })
	require.True(t, sseAll.saw("presence"), "presence event")

	// Rollups at 1m: exact count, min, max, avg, last for both minutes.
	var q queryAnswer
	u := fmt.Sprintf("%s/api/v1/query?series=e2e/temperature&series=e2e/env.humidity&from=%d&to=%d&step=1m", n.httpURL, minute-60_000, minute+60_000)
	require.Equal(t, http.StatusOK, getJSON(t, u, &q))
	require.Len(t, q.Series, 2)
	for _, s := range q.Series {
		require.Equal(t, int64(60_000), s.Step)
		require.Equal(t, []int64{minute - 60_000, minute}, s.T, s.ID)
		for b, start := range s.T {
			var cnt int64
			lo, hi, sum, lastT, last := 1e9, -1e9, 0.0, int64(-1), 0.0
			for _, r := range rs {
				if r.tMs < start || r.tMs >= start+60_000 {
					continue
				}
				v := r.temp
				if s.ID == "e2e/env.humidity" {
					v = r.hum
				}
				cnt++
				lo, hi, sum = min(lo, v), max(hi, v), sum+v
				if r.tMs > lastT {
					lastT, last = r.tMs, v
				}
			}
			require.Equal(t, cnt, s.Count[b], "%s count at %d", s.ID, start)
			require.Equal(t, lo, s.Min[b], "%s min", s.ID)
			require.Equal(t, hi, s.Max[b], "%s max", s.ID)
			require.InDelta(t, sum/float64(cnt), s.Avg[b], 1e-9, "%s avg", s.ID)
			require.Equal(t, last, s.Last[b], "%s last", s.ID)
		}
	}

	// The devices API shows the device, its metrics and the rejection.
	var devs struct {
		Devices []struct {
			ID               string            `json:"id"`
			Online           bool              `json:"online"`
			LastSeen         int64             `json:"lastSeen"`
			Metrics          []string          `json:"metrics"`
			Rejected         int               `json:"rejected"`
			RejectedByReason map[string]uint64 `json:"rejectedByReason"`
		} `json:"devices"`
	}
	require.Equal(t, http.StatusOK, getJSON(t, n.httpURL+"/api/v1/devices", &devs))
	require.Len(t, devs.Devices, 1)
	d := devs.Devices[0]
	require.Equal(t, "e2e", d.ID)
	require.True(t, d.Online)
	require.Equal(t, []string{"env.humidity", "pressure", "temperature"}, d.Metrics)
	require.Equal(t, 1, d.Rejected)
	require.Equal(t, map[string]uint64{"bad_time": 1}, d.RejectedByReason)
}

// TestAPIErrors checks that bad parameters are 400s with a JSON error, and
// unknown series 404s.
func TestAPIErrors(t *testing.T) {
	n := mustRunMain(t)
	for _, tc := range []struct {
		name   string
		path   string
		status int
	}{
		{"query without series", "/api/v1/query", 400},
		{"query bad series", "/api/v1/query?series=no-slash", 400},
		{"query unknown series", "/api/v1/query?series=dev/x", 404},
		{"query bad from", "/api/v1/query?series=dev/x&from=yesterday", 400},
		{"query bad step", "/api/v1/query?series=dev/x&step=1.5s", 400},
		{"query bad maxPoints", "/api/v1/query?series=dev/x&maxPoints=-1", 400},
		{"stream without series", "/api/v1/stream", 400},
		{"stream bad pattern", "/api/v1/stream?series=a/b/c", 400},
		{"stream malformed cursor", "/api/v1/stream?series=%23&cursor=%00%01", 400},
		{"poll bad wait", "/api/v1/poll?series=%23&wait=soon", 400},
		{"poll malformed cursor", "/api/v1/poll?series=%23&cursor=zz", 400},
		{"ws without upgrade", "/api/v1/ws?series=%23", 426},
		{"unknown endpoint", "/api/v1/nope", 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body struct {
				Error string `json:"error"`
			}
			require.Equal(t, tc.status, getJSON(t, n.httpURL+tc.path, &body))
			require.NotEmpty(t, body.Error)
		})
	}
}

// pollAnswer is the answer of GET /api/v1/poll.
type pollAnswer struct {
	Cursor string  `json:"cursor"`
	Points []point `json:"points"`
	Gap    *struct {
		From int64 `json:"from"`
		To   int64 `json:"to"`
	} `json:"gap"`
	Reset bool `json:"reset"`
}

// TestPoll checks the long poll: the first call returns a cursor, the next
// waits for points after it, and resuming from the returned cursor gives
// every point once.
func TestPoll(t *testing.T) {
	n := mustRunMain(t)
	base := n.httpURL + "/api/v1/poll?series=poll/%23"
	var a pollAnswer
	require.Equal(t, 200, getJSON(t, base, &a))
	require.NotEmpty(t, a.Cursor)
	require.Empty(t, a.Points)

	// A short poll with nothing new answers at once, empty.
	var b pollAnswer
	require.Equal(t, 200, getJSON(t, base+"&wait=0&cursor="+url.QueryEscape(a.Cursor), &b))
	require.Empty(t, b.Points)
	require.False(t, b.Reset)

	dev := newPaho(t, n.mqttURL, "poll")
	got := map[point]int{}
	cursor := a.Cursor
	nowMs := time.Now().UnixMilli()
	for i := range 20 {
		publish(t, dev, "telemetry/poll/v", 1, fmt.Sprintf(`{"ts":%d,"value":%d}`, nowMs+int64(i), i))
		if i%5 == 4 {
			var c pollAnswer
			require.Equal(t, 200, getJSON(t, base+"&wait=5s&cursor="+url.QueryEscape(cursor), &c))
			require.False(t, c.Reset)
			require.Nil(t, c.Gap)
			for _, p := range c.Points {
				got[p]++
			}
			cursor = c.Cursor
		}
	}
	eventually(t, 5*time.Second, func() error {
		var c pollAnswer
		getJSON(t, base+"&wait=1s&cursor="+url.QueryEscape(cursor), &c)
		for _, p := range c.Points {
			got[p]++
		}
		cursor = c.Cursor
		if len(got) < 20 {
			return fmt.Errorf("%d of 20 points", len(got))
		}
		return nil
	})
	for p, k := range got {
		require.Equal(t, 1, k, "point %+v", p)
	}

	// A cursor from another server run gets a reset.
	var r pollAnswer
	require.Equal(t, 200, getJSON(t, base+"&wait=0&cursor=abc-1", &r))
	require.True(t, r.Reset)
}

// TestShutdownTellsViewers checks that stopping the server ends SSE with a
// retry hint and WebSocket with close code 1001, promptly.
func TestShutdownTellsViewers(t *testing.T) {
	n := mustRunMain(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.httpURL+"/api/v1/stream?series=%23", nil)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	conn, _, err := websocket.DefaultDialer.DialContext(ctx, "ws"+strings.TrimPrefix(n.httpURL, "http")+"/api/v1/ws?series=%23", nil)
	require.NoError(t, err)
	defer conn.Close()

	start := time.Now()
	go func() { _ = n.web.Shutdown(context.Background()) }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err, "SSE body ends cleanly")
	require.Contains(t, string(body), "\nretry: ")
	require.Contains(t, string(body), ": closed: server shutting down")
	for {
		_, _, err = conn.ReadMessage()
		if err != nil {
			break
		}
	}
	var ce *websocket.CloseError
	require.True(t, errors.As(err, &ce), "close error, got %v", err)
	require.Equal(t, websocket.CloseGoingAway, ce.Code)
	require.Less(t, time.Since(start), 5*time.Second)
}
