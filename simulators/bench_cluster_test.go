package simulators

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBenchClusterMatrix: one node keeps the single-node matrix as the
// default, with the cluster scenarios opt-in; more nodes run the cluster
// group by default.
func TestBenchClusterMatrix(t *testing.T) {
	names := func(nodes int, want ...string) []string {
		cfg := BenchConfig{URL: "http://a", MQTTAddr: "a:1", Nodes: make([]BenchNode, nodes)}
		cfg.setDefaults()
		s, err := selected(matrix(&cfg), want)
		require.NoError(t, err)
		var out []string
		for _, x := range s {
			out = append(out, x.name)
		}
		return out
	}
	single := []string{"idle-ws", "idle-sse", "ingest-qos0", "ingest-qos1", "latency-1k", "latency-10k", "latency-50k",
		"fanout-1k", "fanout-5k", "fanout-10k", "flaky"}
	cluster := []string{"cluster-ingest-20k", "cluster-ingest-max", "cluster-fanout-1k"}
	for _, tc := range []struct {
		name  string
		nodes int
		want  []string
		got   []string
	}{
		{name: "no nodes", nodes: 0, got: single},
		{name: "one node", nodes: 1, got: single},
		{name: "one node, cluster group", nodes: 1, want: []string{BenchCluster}, got: cluster},
		{name: "two nodes", nodes: 2, got: cluster},
		{name: "three nodes, by name", nodes: 3, want: []string{"ingest-qos0", "cluster-fanout-1k"}, got: []string{"ingest-qos0", "cluster-fanout-1k"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.got, names(tc.nodes, tc.want...))
		})
	}
	require.Equal(t, []int{4, 3, 3}, split(10, 3))
	require.Equal(t, []int{1, 0}, split(1, 2))
}

// TestBenchClusterReport: the table and the HTML report show the nodes and
// the CPU per reading.
func TestBenchClusterReport(t *testing.T) {
	rep := &BenchReport{Results: []BenchResult{{
		Scenario: "cluster-ingest-20k", Group: BenchCluster, Nodes: 3, Devices: 1000, Metrics: 2, TargetRate: 20_000,
		AcceptedReadingsPerSecond: 40_000, ServerCPUCores: 0.9, CPUSecondsPerReading: 22.5e-6, NATSCPUSecondsPerReading: 1.5e-6,
	}}}
	table := rep.Table()
	require.Contains(t, table, "22.50 µs")
	require.Contains(t, table, "3 nodes")
	page := renderBenchHTML(t, rep)
	require.Contains(t, page, "22.50 µs CPU per reading")
	require.Contains(t, page, "1.50 µs in NATS")
	require.Contains(t, page, "3 nodes")
}
