//go:build integration

package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/simulators"
)

// TestSimFlakyDevicesHistory: devices on links that reset and stall keep
// measuring while offline and send their backlog on reconnect; history
// holds every reading at its original time.
func TestSimFlakyDevicesHistory(t *testing.T) {
	n := mustRunMain(t)
	const devices, perDevice = 3, 120
	// Each reading is a second after the previous one, half an hour ago,
	// so that each lands in its own one-second bucket and a reading
	// re-stamped at sending would land outside the range.
	baseMs := time.Now().Add(-30*time.Minute).UnixMilli() / 1000 * 1000
	var clock atomic.Int64
	stats, err := simulators.RunDevices(context.Background(), simulators.DevicesConfig{
		Broker: n.mqttURL, Devices: devices, Rate: 60, Messages: perDevice, Metrics: 1, QoS: 1,
		IDPrefix: "flk-", Seed: 11, KeepAlive: time.Second,
		Flaky: simulators.DeviceFlaky{DisconnectEvery: 400 * time.Millisecond, StallEvery: time.Second, StallFor: 500 * time.Millisecond},
		Now:   func() time.Time { return time.UnixMilli(baseMs + 1000*clock.Add(1)) },
	}, nil)
	require.NoError(t, err)
	require.EqualValues(t, devices*perDevice, stats.Readings)
	require.Positive(t, stats.Disconnects)
	require.Positive(t, stats.Buffered, "some readings waited offline")
	require.Zero(t, stats.Dropped+stats.Unsent)

	series := []string{}
	for i := range devices {
		series = append(series, simulators.DeviceID("flk-", i, devices)+"/temperature")
	}
	fromMs, toMs := baseMs, baseMs+1000*(devices*perDevice+2)
	eventually(t, 15*time.Second, func() error {
		got, err := queryCounts(n.httpURL, series, fromMs, toMs)
		if err != nil {
			return err
		}
		seconds := map[int64]bool{}
		var total int64
		for _, buckets := range got {
			for t, c := range buckets {
				if c > 0 {
					seconds[t] = true
					total += c
				}
			}
		}
		for k := int64(1); k <= devices*perDevice; k++ {
			if !seconds[baseMs+1000*k] {
				return fmt.Errorf("reading %d (t=%d) is not in history (%d of %d seconds present)", k, baseMs+1000*k, len(seconds), devices*perDevice)
			}
		}
		if len(seconds) != devices*perDevice {
			return fmt.Errorf("history has %d seconds with readings, want %d", len(seconds), devices*perDevice)
		}
		if total < devices*perDevice || total > devices*perDevice+stats.Republished {
			return fmt.Errorf("history counts %d readings, want %d plus at most %d sent again", total, devices*perDevice, stats.Republished)
		}
		return nil
	})
}

// TestBenchSmall runs the whole benchmark matrix, shrunk, against an
// in-process server: every scenario completes and reports sane numbers.
func TestBenchSmall(t *testing.T) {
	// As telegauge bench starts its server: no per-device rate limit, so
	// the ingest scenarios' devices publish as fast as they can rather
	// than be slowed to the limit.
	n := mustRunMain(t, "--max-rate-per-device=-1")
	// The server is in this process, so a pprof handler here collects its
	// garbage for the idle scenarios.
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	debug := httptest.NewServer(mux)
	defer debug.Close()
	rep, err := simulators.RunBench(context.Background(), simulators.BenchConfig{
		URL: n.httpURL, MQTTAddr: n.broker.Addr(), DebugURL: debug.URL,
		Duration: time.Second, Warmup: 500 * time.Millisecond,
		IngestDevices: 20, LatencyRates: []float64{200}, FanoutViewers: []int{50}, FanoutRate: 20,
		IdleViewers: 100, FlakyDevices: 3, FlakyViewers: 4, Settle: 10 * time.Second,
	}, nil)
	require.NoError(t, err)
	want := []string{"idle-ws", "idle-sse", "ingest-qos0", "ingest-qos1", "latency-200", "fanout-50", "flaky"}
	require.Len(t, rep.Results, len(want))
	for i, r := range rep.Results {
		require.Equal(t, want[i], r.Scenario)
		require.Empty(t, r.Error, r.Scenario)
		switch r.Group {
		case simulators.BenchIngest:
			require.Positive(t, r.AcceptedMessagesPerSecond, r.Scenario)
			require.InDelta(t, 2*r.AcceptedMessagesPerSecond, r.AcceptedReadingsPerSecond, 0.2*r.AcceptedReadingsPerSecond, r.Scenario)
			require.NotEmpty(t, r.Throughput, r.Scenario)
			require.Positive(t, r.ServerCPUCores, r.Scenario)
		case simulators.BenchLatency, simulators.BenchFanout:
			require.NotNil(t, r.Latency, r.Scenario)
			require.Positive(t, r.Latency.Count, r.Scenario)
			require.NotEmpty(t, r.LatencyCDF, r.Scenario)
			require.InDelta(t, 1, r.LatencyCDF[len(r.LatencyCDF)-1].Q, 1e-9, r.Scenario)
			require.Equal(t, r.PointsExpected, r.PointsReceived, r.Scenario)
		case simulators.BenchIdle:
			// Memory per connection means something only for a server in
			// its own process (as telegauge bench runs it); here the
			// test's own garbage swamps 100 connections. The mechanics:
			require.Equal(t, 100, r.Viewers, r.Scenario)
			require.Contains(t, r.Notes, "per connection", r.Scenario)
		case simulators.BenchFlaky:
			require.NotNil(t, r.ExactlyOnce)
			require.True(t, *r.ExactlyOnce, r.Notes)
		}
	}
	require.Contains(t, rep.Table(), "fanout-50")
}

// TestBenchCluster runs the cluster scenarios, shrunk, over two in-process
// nodes and an in-process NATS: the load splits over both, every reading
// accepted on one node reaches the other, every viewer (on either node)
// gets every point, and the CPU per reading is measured.
func TestBenchCluster(t *testing.T) {
	_, nodes, _ := startCluster(t, []string{"node1", "node2"})
	var bn []simulators.BenchNode
	for _, n := range nodes {
		bn = append(bn, simulators.BenchNode{URL: n.httpURL, MQTTAddr: n.broker.Addr()})
	}
	rep, err := simulators.RunBench(context.Background(), simulators.BenchConfig{
		Nodes: bn, NodesShareProcess: true,
		Duration: time.Second, Warmup: 500 * time.Millisecond,
		IngestDevices: 20, ClusterRate: 1000, ClusterViewers: 40, FanoutRate: 20, Settle: 10 * time.Second,
	}, nil)
	require.NoError(t, err)
	want := []string{"cluster-ingest-1k", "cluster-ingest-max", "cluster-fanout-40"}
	require.Len(t, rep.Results, len(want))
	for i, r := range rep.Results {
		require.Equal(t, want[i], r.Scenario)
		require.Empty(t, r.Error, r.Scenario)
		require.Equal(t, simulators.BenchCluster, r.Group, r.Scenario)
		require.Equal(t, 2, r.Nodes, r.Scenario)
		switch r.Scenario {
		case "cluster-ingest-1k":
			require.InDelta(t, 2000, r.AcceptedReadingsPerSecond, 600, r.Scenario)
			fallthrough
		case "cluster-ingest-max":
			require.Positive(t, r.AcceptedReadingsPerSecond, r.Scenario)
			require.Positive(t, r.CPUSecondsPerReading, r.Scenario)
			require.Less(t, r.CPUSecondsPerReading, 0.01, r.Scenario)
			require.Contains(t, r.Notes, "from each other", r.Scenario)
		default:
			require.Equal(t, 40, r.Viewers)
			require.NotNil(t, r.Latency, r.Scenario)
			require.Positive(t, r.PointsExpected, r.Scenario)
			require.Equal(t, r.PointsExpected, r.PointsReceived, r.Scenario)
			require.Zero(t, r.Duplicates, r.Scenario)
		}
	}
	require.Contains(t, rep.Table(), "2 nodes")
	// Every reading a node accepted from its devices, the other applied.
	eventually(t, 10*time.Second, func() error {
		var accepted, received float64
		for _, n := range nodes {
			m, err := scrapeMetrics(n.httpURL)
			if err != nil {
				return err
			}
			for k, v := range m {
				switch name, _, _ := strings.Cut(k, "{"); name {
				case "telegauge_readings_accepted_total":
					accepted += v
				case "telegauge_cluster_readings_received_total":
					received += v
				}
			}
		}
		if accepted == 0 || received != accepted {
			return fmt.Errorf("nodes accepted %v readings and applied %v from each other", accepted, received)
		}
		return nil
	})
}

// TestSimCountsExact: a device fleet with malformed messages mixed in, every
// form, against the whole server: it accepts exactly the readings the
// simulator sent and rejects exactly the malformed messages; viewers on
// every transport get each reading exactly once.
func TestSimCountsExact(t *testing.T) {
	n := mustRunMain(t)
	counters := new(simulators.ViewersCounters)
	stopViewers := startViewers(t, simulators.ViewersConfig{
		URL: n.httpURL, Viewers: 8, Transport: simulators.TransportMix, Series: []string{"#"},
		PollInterval: 100 * time.Millisecond, PollWait: 2 * time.Second, Counters: counters,
	})
	eventually(t, 10*time.Second, func() error {
		if c := counters.Snapshot().Total.Connected; c < 8 {
			return fmt.Errorf("%d of 8 viewers connected", c)
		}
		return nil
	})
	// One reading first, so that every viewer (pollers included) holds a
	// cursor before the counted ones start.
	warm, err := simulators.RunDevices(context.Background(), simulators.DevicesConfig{
		Broker: n.mqttURL, Devices: 1, Messages: 1, Metrics: 1, QoS: 1, IDPrefix: "cnt-warm-",
	}, nil)
	require.NoError(t, err)
	eventually(t, 10*time.Second, func() error {
		if u := counters.Snapshot().Total.UniqueMin; u < 1 {
			return fmt.Errorf("a viewer has %d points", u)
		}
		return nil
	})
	before, err := scrapeMetrics(n.httpURL)
	require.NoError(t, err)
	var clock atomic.Int64
	clock.Store(time.Now().Add(-time.Hour).UnixMilli())
	var readings, bad int64
	for i, form := range []string{simulators.FormObject, simulators.FormMetric, simulators.FormSenML} {
		stats, err := simulators.RunDevices(context.Background(), simulators.DevicesConfig{
			Broker: n.mqttURL, Devices: 4, Rate: 200, Messages: 25, Metrics: 3, Form: form, QoS: 1,
			IDPrefix: fmt.Sprintf("cnt-%d-", i), BadShare: 0.2, Seed: int64(i),
			// A millisecond of its own per reading: on a loaded machine two
			// readings of a valve (0 or 1) could otherwise share time and
			// value, and viewers would rightly call the second a duplicate.
			Now: func() time.Time { return time.UnixMilli(clock.Add(1)) },
		}, nil)
		require.NoError(t, err)
		require.Zero(t, stats.Errors)
		require.Positive(t, stats.Bad)
		readings += stats.Readings
		bad += stats.Bad
	}
	eventually(t, 30*time.Second, func() error {
		after, err := scrapeMetrics(n.httpURL)
		if err != nil {
			return err
		}
		accepted := after["telegauge_readings_accepted_total"] - before["telegauge_readings_accepted_total"]
		var rejected float64
		for k, v := range after {
			if strings.HasPrefix(k, "telegauge_readings_rejected_total") {
				rejected += v - before[k]
			}
		}
		if int64(accepted) != readings || int64(rejected) != bad {
			return fmt.Errorf("server accepted %v and rejected %v, want %d and %d", accepted, rejected, readings, bad)
		}
		if s := counters.Snapshot(); !s.ExactlyOnce(warm.Readings + readings) {
			return fmt.Errorf("viewers: %d..%d distinct points of %d, %d duplicates, %d gaps", s.Total.UniqueMin, s.Total.UniqueMax, warm.Readings+readings, s.Total.Duplicates, s.Total.Gaps)
		}
		return nil
	})
	stopViewers()
}
