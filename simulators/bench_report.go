package simulators

import (
	"time"
)

// BenchReport is the outcome of RunBench: what ran, where, and every
// scenario's measurements. It is what `telegauge bench` writes as JSON and
// renders as a table and an HTML report.
type BenchReport struct {
	// Version is the telegauge version that ran the benchmark.
	Version string `json:"version"`
	// Started is when the run began.
	Started time.Time `json:"started"`
	// Command is the command line that produced the report.
	Command string `json:"command"`
	// Machine describes the machine the run happened on.
	Machine BenchMachine `json:"machine"`
	// Target is the server measured: "started" with its flags, or a URL.
	Target string `json:"target"`
	// Results has one entry per scenario, in the order they ran.
	Results []BenchResult `json:"results"`
}

// BenchMachine describes where a benchmark ran.
type BenchMachine struct {
	OS          string `json:"os"`
	Arch        string `json:"arch"`
	CPUs        int    `json:"cpus"`
	CPUModel    string `json:"cpuModel,omitempty"`
	MemoryBytes uint64 `json:"memoryBytes,omitempty"`
	GoVersion   string `json:"goVersion"`
}

// Scenario groups (BenchResult.Group).
const (
	BenchIngest  = "ingest"  // ingest ceiling: devices publish as fast as they can
	BenchLatency = "latency" // publish-to-receive latency at a fixed rate
	BenchFanout  = "fanout"  // many viewers of the same series
	BenchIdle    = "idle"    // server memory per idle live connection
	BenchFlaky   = "flaky"   // flaky devices and viewers: exactly-once delivery
	BenchCluster = "cluster" // ingest and fan-out spread over a cluster's nodes
)

// BenchResult is one scenario's measurements. Fields that do not apply to
// a scenario's group are zero (and left out of the JSON).
type BenchResult struct {
	// Scenario is the scenario's name, e.g. "ingest-qos0" or "fanout-5k".
	Scenario string `json:"scenario"`
	// Group is one of BenchIngest, BenchLatency, BenchFanout, BenchIdle,
	// BenchFlaky, BenchCluster.
	Group string `json:"group"`
	// Nodes is how many servers the run measured (a cluster over NATS
	// when more than one); their counters are summed.
	Nodes int `json:"nodes,omitempty"`
	// Description says what the scenario does, in a sentence.
	Description string `json:"description"`

	// The load.
	Devices    int     `json:"devices,omitempty"`
	Metrics    int     `json:"metrics,omitempty"` // readings per message
	QoS        byte    `json:"qos"`
	TargetRate float64 `json:"targetRate,omitempty"` // messages/s asked for; 0 means as fast as possible
	Viewers    int     `json:"viewers,omitempty"`
	Transport  string  `json:"transport,omitempty"`
	// DurationMs is how long the measured phase lasted.
	DurationMs float64 `json:"durationMs"`

	// Throughput. Messages and readings the devices sent, and those the
	// server accepted (from its /metrics), per second over the phase.
	SentMessagesPerSecond     float64 `json:"sentMessagesPerSecond,omitempty"`
	AcceptedMessagesPerSecond float64 `json:"acceptedMessagesPerSecond,omitempty"`
	AcceptedReadingsPerSecond float64 `json:"acceptedReadingsPerSecond,omitempty"`
	// Throughput is the rate over time, sampled every second or so.
	Throughput []RatePoint `json:"throughput,omitempty"`

	// Delivery to viewers.
	PointsExpected int64 `json:"pointsExpected,omitempty"` // per viewer times viewers
	PointsReceived int64 `json:"pointsReceived,omitempty"` // distinct, all viewers
	Duplicates     int64 `json:"duplicates"`
	Gaps           int64 `json:"gaps"`
	Reconnects     int64 `json:"reconnects"`
	// Latency is publish-to-receive latency over every point received.
	Latency *LatencySummary `json:"latency,omitempty"`
	// LatencyCDF is the latency distribution for plots: the share of
	// points (Q, 0..1) received within Ms milliseconds.
	LatencyCDF []CDFPoint `json:"latencyCdf,omitempty"`

	// Server resources over the phase, from its /metrics.
	ServerCPUCores float64 `json:"serverCpuCores,omitempty"` // CPU seconds per second
	ServerRSSBytes float64 `json:"serverRssBytes,omitempty"` // at the end of the phase
	// CPUSecondsPerReading is the servers' CPU seconds (summed over the
	// nodes) per reading accepted from devices over the phase: the cost of
	// a reading, which in a cluster includes every node applying it and
	// the NATS path (encode, publish, receive, decode).
	CPUSecondsPerReading float64 `json:"cpuSecondsPerReading,omitempty"`
	// NATSCPUSecondsPerReading is the NATS server's CPU seconds per
	// reading, when the benchmark started it (not in CPUSecondsPerReading).
	NATSCPUSecondsPerReading float64 `json:"natsCpuSecondsPerReading,omitempty"`
	// BytesPerConnection is the server memory (heap and stacks) one idle
	// live connection costs.
	BytesPerConnection float64 `json:"bytesPerConnection,omitempty"`

	// ExactlyOnce, for flaky scenarios, is whether every reading reached
	// every viewer exactly once and history holds every reading.
	ExactlyOnce *bool `json:"exactlyOnce,omitempty"`
	// Notes explains a result (what was lost, what fell short).
	Notes string `json:"notes,omitempty"`
	// Error is set when the scenario could not run.
	Error string `json:"error,omitempty"`
}

// RatePoint is a rate at a moment of a run.
type RatePoint struct {
	// T is seconds since the measured phase began.
	T float64 `json:"t"`
	// Sent is messages/s the devices sent in the last interval.
	Sent float64 `json:"sent"`
	// Accepted is messages/s the server accepted in the last interval
	// (zero when its metrics are not available).
	Accepted float64 `json:"accepted"`
}

// CDFPoint is a point of a latency distribution.
type CDFPoint struct {
	Ms float64 `json:"ms"`
	Q  float64 `json:"q"`
}
