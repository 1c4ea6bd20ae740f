//go:build integration

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/internal/natstest"
	"github.com/telegauge/telegauge/internal/pgtest"
)

// runClusterNode is mustRunMain with a stop function, so that a test can
// take a node away while the others run on. Stopping is idempotent and
// checks the shutdown.
func runClusterNode(t *testing.T, nats, id string, args ...string) (*testNode, func()) {
	t.Helper()
	var c cli
	parser, err := kong.New(&c, kong.Name("telegauge"), kong.DefaultEnvars("TELEGAUGE"), kong.Configuration(yamlConfig))
	require.NoError(t, err)
	_, err = parser.Parse(append([]string{"serve", "--http-addr=127.0.0.1:0", "--mqtt-addr=127.0.0.1:0", "--data-dir=" + t.TempDir(),
		"--nats=" + nats, "--node-id=" + id, "--cluster-node-timeout=1s", "--max-rate-per-device=-1", "--flush-interval=100ms"}, args...))
	require.NoError(t, err)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("testnode", id)
	}
	n, err := c.Serve.build(log)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.run(ctx, log) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err, "shutdown of node %s", id)
		case <-time.After(15 * time.Second):
			t.Errorf("node %s did not stop", id)
		}
	}
	t.Cleanup(stop)
	return &testNode{node: n, httpURL: "http://" + n.web.Addr(), mqttURL: "tcp://" + n.broker.Addr()}, stop
}

// startCluster starts NATS and one node per id, and waits until every
// node hears every other (so each has subscribed and nothing published
// from now on is missed).
func startCluster(t *testing.T, ids []string, args ...string) (*natstest.Server, []*testNode, []func()) {
	t.Helper()
	ns := natstest.Run(t)
	var nodes []*testNode
	var stops []func()
	for _, id := range ids {
		n, stop := runClusterNode(t, ns.URL(), id, args...)
		nodes = append(nodes, n)
		stops = append(stops, stop)
	}
	waitPeers(t, nodes, len(ids)-1)
	return ns, nodes, stops
}

func waitPeers(t *testing.T, nodes []*testNode, want int) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		for _, n := range nodes {
			if got := n.bus.Nodes(); len(got) != want || !n.bus.Connected() {
				return fmt.Errorf("node %s: connected %v, peers %v, want %d", n.bus.NodeID(), n.bus.Connected(), got, want)
			}
		}
		return nil
	})
}

// seriesCounts sums /query's counts per series over [fromMs, toMs).
func seriesCounts(t *testing.T, n *testNode, series []string, fromMs, toMs int64) (map[string]int64, error) {
	u := fmt.Sprintf("%s/api/v1/query?from=%d&to=%d&step=1s", n.httpURL, fromMs, toMs)
	for _, s := range series {
		u += "&series=" + url.QueryEscape(s)
	}
	var q queryAnswer
	if code := getJSON(t, u, &q); code != http.StatusOK {
		return nil, fmt.Errorf("query: %d %s", code, q.Error)
	}
	out := map[string]int64{}
	for _, s := range q.Series {
		for _, c := range s.Count {
			out[s.ID] += c
		}
	}
	return out, nil
}

func TestClusterSQLite(t *testing.T) { testCluster(t) }

func TestClusterSharedPostgres(t *testing.T) {
	testCluster(t, "--db="+pgtest.URL(t))
}

// testCluster spreads readings over three nodes: a viewer on each sees
// every reading exactly once, every node's /query counts them exactly,
// and presence is cluster-wide.
func testCluster(t *testing.T, args ...string) {
	ids := []string{"a", "b", "c"}
	_, nodes, _ := startCluster(t, ids, args...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	viewers := make([]*collector, len(nodes))
	for i, n := range nodes {
		viewers[i] = newCollector()
		streamSSE(t, ctx, n.httpURL+"/api/v1/stream?series=%23", viewers[i])
	}
	const perNode = 50
	baseMs := time.Now().Add(-time.Minute).UnixMilli() / 1000 * 1000
	want := map[point]bool{}
	var series []string
	for i, n := range nodes {
		dev := "dev-" + ids[i]
		series = append(series, dev+"/v")
		c := newPaho(t, n.mqttURL, dev)
		for k := range perNode {
			tMs := baseMs + int64(k)*10 + int64(i)
			publish(t, c, "telemetry/"+dev+"/v", 1, fmt.Sprintf(`{"ts":%d,"value":%d}`, tMs, k))
			want[point{dev + "/v", tMs, float64(k)}] = true
		}
	}
	for i, v := range viewers {
		eventually(t, 10*time.Second, func() error {
			if err := v.check(want); err != nil {
				return fmt.Errorf("viewer on %s: %w", ids[i], err)
			}
			return nil
		})
	}
	// Counts are exact on every node (from its own history, or the shared
	// one plus its unflushed buckets, once the origin has flushed).
	for i, n := range nodes {
		eventually(t, 10*time.Second, func() error {
			got, err := seriesCounts(t, n, series, baseMs, baseMs+60_000)
			if err != nil {
				return err
			}
			for _, s := range series {
				if got[s] != perNode {
					return fmt.Errorf("node %s: %s counts %d, want %d", ids[i], s, got[s], perNode)
				}
			}
			return nil
		})
	}
	// Once every node has flushed everything it holds, the counts are still
	// exact: with shared PostgreSQL only the origin wrote each reading.
	for _, n := range nodes {
		require.NoError(t, n.agg.Flush(context.Background()))
	}
	for i, n := range nodes {
		got, err := seriesCounts(t, n, series, baseMs, baseMs+60_000)
		require.NoError(t, err)
		for _, s := range series {
			require.Equal(t, int64(perNode), got[s], "node %s: %s after every flush", ids[i], s)
		}
	}
	// Every node lists every device online.
	for i, n := range nodes {
		eventually(t, 5*time.Second, func() error {
			devs := getDevices(t, n.httpURL)
			online := 0
			for _, d := range devs {
				if d.Online {
					online++
				}
			}
			if online != len(ids) {
				return fmt.Errorf("node %s: %d devices online: %+v", ids[i], online, devs)
			}
			return nil
		})
	}
	// The cluster metrics say what went where.
	body := getText(t, nodes[0].httpURL+"/metrics")
	require.Contains(t, body, fmt.Sprintf("telegauge_cluster_readings_sent_total %d", perNode))
	require.Contains(t, body, fmt.Sprintf("telegauge_cluster_readings_received_total %d", 2*perNode))
	require.Contains(t, body, "telegauge_cluster_connected 1")
}

// getDevices lists the node's devices (GET /api/v1/devices), whatever the
// status: for polling until the list is as wanted.
func getDevices(t *testing.T, base string) []*apiDevice {
	t.Helper()
	var body struct {
		Devices []*apiDevice `json:"devices"`
	}
	getJSON(t, base+"/api/v1/devices", &body)
	return body.Devices
}

func getText(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// TestClusterFailover stops the node a viewer polls: resuming on another
// node with the old cursor is a reset (the cursor carries the first
// node's epoch), never a silent loss, and the device's presence is
// withdrawn there.
func TestClusterFailover(t *testing.T) {
	_, nodes, stops := startCluster(t, []string{"a", "b"})
	a, b := nodes[0], nodes[1]
	base := "/api/v1/poll?series=fo/%23"
	var p pollAnswer
	require.Equal(t, 200, getJSON(t, a.httpURL+base, &p))
	cursor := p.Cursor
	dev := newPaho(t, a.mqttURL, "fo")
	nowMs := time.Now().UnixMilli()
	publish(t, dev, "telemetry/fo/v", 1, fmt.Sprintf(`{"ts":%d,"value":1}`, nowMs))
	require.Equal(t, 200, getJSON(t, a.httpURL+base+"&wait=5s&cursor="+url.QueryEscape(cursor), &p))
	require.Len(t, p.Points, 1)
	cursor = p.Cursor
	eventually(t, 5*time.Second, func() error {
		devs := getDevices(t, b.httpURL)
		if len(devs) != 1 || !devs[0].Online {
			return fmt.Errorf("b: %+v", devs)
		}
		return nil
	})

	// Node a goes away; readings published meanwhile (here, on b) must not
	// be silently skipped by the viewer that moves to b.
	dev.Disconnect(0)
	stops[0]()
	devB := newPaho(t, b.mqttURL, "fo")
	publish(t, devB, "telemetry/fo/v", 1, fmt.Sprintf(`{"ts":%d,"value":2}`, nowMs+1))
	require.Equal(t, 200, getJSON(t, b.httpURL+base+"&wait=0&cursor="+url.QueryEscape(cursor), &p))
	require.True(t, p.Reset, "a cursor from another node is a reset: %+v", p)
	require.NotEmpty(t, p.Cursor)
	// After the reset the viewer reloads history, which has both readings
	// (b persisted a's, having a history of its own).
	eventually(t, 5*time.Second, func() error {
		got, err := seriesCounts(t, b, []string{"fo/v"}, nowMs-1000, nowMs+1000)
		if err != nil {
			return err
		}
		if got["fo/v"] != 2 {
			return fmt.Errorf("b counts %d of 2", got["fo/v"])
		}
		return nil
	})
}

// TestClusterNATSRestart stops and restarts NATS: each node says so in
// /readyz and /metrics while it is down, keeps serving its own devices and
// viewers, and readings flow between the nodes again once it is back.
func TestClusterNATSRestart(t *testing.T) {
	ns, nodes, _ := startCluster(t, []string{"a", "b"})
	a, b := nodes[0], nodes[1]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	onA, onB := newCollector(), newCollector()
	streamSSE(t, ctx, a.httpURL+"/api/v1/stream?series=%23", onA)
	streamSSE(t, ctx, b.httpURL+"/api/v1/stream?series=%23", onB)
	dev := newPaho(t, a.mqttURL, "nr")
	nowMs := time.Now().UnixMilli()
	publish(t, dev, "telemetry/nr/v", 1, fmt.Sprintf(`{"ts":%d,"value":0}`, nowMs))
	eventually(t, 5*time.Second, func() error {
		if len(onB.snapshot()) != 1 {
			return fmt.Errorf("b has not seen the first reading")
		}
		return nil
	})

	ns.Stop()
	eventually(t, 10*time.Second, func() error {
		body := getText(t, a.httpURL+"/readyz")
		if !strings.Contains(body, "nats unreachable") {
			return fmt.Errorf("readyz: %s", body)
		}
		if m := getText(t, a.httpURL+"/metrics"); !strings.Contains(m, "telegauge_cluster_connected 0") {
			return fmt.Errorf("metrics do not say disconnected")
		}
		return nil
	})
	resp, err := http.Get(a.httpURL + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "a node cut off from NATS still serves its own devices")
	// Node a's own devices and viewers carry on.
	publish(t, dev, "telemetry/nr/v", 1, fmt.Sprintf(`{"ts":%d,"value":1}`, nowMs+1))
	eventually(t, 5*time.Second, func() error {
		if len(onA.snapshot()) != 2 {
			return fmt.Errorf("a's viewer: %d of 2", len(onA.snapshot()))
		}
		return nil
	})

	ns.Start()
	waitPeers(t, nodes, 1)
	require.NotContains(t, getText(t, a.httpURL+"/readyz"), "unreachable")
	// Readings flow again. The first after the restart may race b's
	// resubscription, so publish until one arrives (each with its own
	// time), then check that one more arrives too.
	k := int64(2)
	eventually(t, 10*time.Second, func() error {
		publish(t, dev, "telemetry/nr/v", 1, fmt.Sprintf(`{"ts":%d,"value":%d}`, nowMs+k, k))
		k++
		for p := range onB.snapshot() {
			if p.V >= 2 {
				return nil
			}
		}
		return fmt.Errorf("nothing new on b yet")
	})
	last := float64(k)
	publish(t, dev, "telemetry/nr/v", 1, fmt.Sprintf(`{"ts":%d,"value":%d}`, nowMs+k, k))
	eventually(t, 5*time.Second, func() error {
		if _, ok := onB.snapshot()[point{"nr/v", nowMs + k, last}]; !ok {
			return fmt.Errorf("b has not seen the reading after the restart")
		}
		return nil
	})
	for p, c := range onB.snapshot() {
		require.Equal(t, 1, c, "point %+v", p)
	}
}
