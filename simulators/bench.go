package simulators

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// BenchConfig configures RunBench. Zero values mean the documented
// defaults, which are the full matrix the README reports; tests and quick
// checks shrink them.
type BenchConfig struct {
	// URL is the server's base URL (dashboard, API, /metrics). Required.
	URL string
	// MQTTAddr is the server's MQTT TCP address, host:port. Required.
	MQTTAddr string
	// DebugURL, when set, is the server's pprof listener (serve
	// --debug-addr): the idle scenarios collect garbage through it before
	// measuring, so that memory freed earlier does not pass for free.
	DebugURL string
	// Scenarios are the names (or groups: ingest, latency, fanout, idle,
	// flaky) to run, in matrix order. Empty means all.
	Scenarios []string
	// Duration is each scenario's measured phase. Zero means 10 s.
	Duration time.Duration
	// Warmup runs the load this long before measuring. Zero means 2 s.
	Warmup time.Duration
	// IngestDevices is the fleet of the ingest scenarios. Zero means 1,000.
	IngestDevices int
	// LatencyRates are the fixed message rates of the latency scenarios.
	// Empty means 1,000, 10,000 and 50,000 messages/s.
	LatencyRates []float64
	// FanoutViewers are the viewer counts of the fan-out scenarios. Empty
	// means 1,000, 5,000 and 10,000.
	FanoutViewers []int
	// FanoutRate is the readings/s published to the fanned-out series.
	// Zero means 10.
	FanoutRate float64
	// IdleViewers is how many idle connections the idle scenarios open.
	// Zero means 5,000.
	IdleViewers int
	// FlakyDevices and FlakyViewers size the flaky scenario. Zero means 20
	// and 40.
	FlakyDevices, FlakyViewers int
	// Settle bounds the wait for deliveries after a phase. Zero means 15 s.
	Settle time.Duration
	// Progress, when set, is told what is running.
	Progress func(string)
	// HTTPClient is used for /metrics and queries; nil means a default.
	HTTPClient *http.Client

	// Nodes are the nodes of a cluster (serve --nats), the first being the
	// one at URL and MQTTAddr (either may be left empty and taken from
	// Nodes[0]). Every scenario reads the servers' counters summed over the
	// nodes; the cluster scenarios also split their devices and viewers
	// over them. Empty means the one node at URL and MQTTAddr. With more
	// than one node the default selection is the cluster group alone (the
	// other scenarios would measure node 1 with the others idle).
	Nodes []BenchNode
	// NodesShareProcess says the nodes run in one process (tests), so that
	// the process_ and go_ metrics of every node are the same figures,
	// taken from the first node only.
	NodesShareProcess bool
	// ClusterRate is the fixed total rate (messages/s, two readings each)
	// of cluster-ingest, split evenly over the nodes, so that runs with any
	// number of nodes compare. Zero means 20,000.
	ClusterRate float64
	// ClusterViewers is how many WebSocket viewers cluster-fanout spreads
	// over the nodes. Zero means 1,000.
	ClusterViewers int
	// ExtraCPU, when set, returns the CPU seconds used so far by a process
	// the cluster needs besides the nodes (the NATS server the benchmark
	// started); the cluster-ingest scenarios report its share per reading
	// as NATSCPUSecondsPerReading.
	ExtraCPU func() (float64, error)
}

// BenchNode is one node of a cluster under benchmark.
type BenchNode struct {
	// URL is the node's base URL (dashboard, API, /metrics).
	URL string
	// MQTTAddr is the node's MQTT TCP address, host:port.
	MQTTAddr string
}

func (c *BenchConfig) setDefaults() {
	if len(c.Nodes) == 0 {
		c.Nodes = []BenchNode{{URL: c.URL, MQTTAddr: c.MQTTAddr}}
	}
	c.Nodes = append([]BenchNode(nil), c.Nodes...)
	if c.URL == "" {
		c.URL = c.Nodes[0].URL
	}
	if c.MQTTAddr == "" {
		c.MQTTAddr = c.Nodes[0].MQTTAddr
	}
	c.URL = strings.TrimRight(c.URL, "/")
	for i := range c.Nodes {
		c.Nodes[i].URL = strings.TrimRight(c.Nodes[i].URL, "/")
	}
	if c.ClusterRate <= 0 {
		c.ClusterRate = 20_000
	}
	if c.ClusterViewers <= 0 {
		c.ClusterViewers = 1000
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Warmup <= 0 {
		c.Warmup = 2 * time.Second
	}
	if c.IngestDevices <= 0 {
		c.IngestDevices = 1000
	}
	if len(c.LatencyRates) == 0 {
		c.LatencyRates = []float64{1000, 10_000, 50_000}
	}
	if len(c.FanoutViewers) == 0 {
		c.FanoutViewers = []int{1000, 5000, 10_000}
	}
	if c.FanoutRate <= 0 {
		c.FanoutRate = 10
	}
	if c.IdleViewers <= 0 {
		c.IdleViewers = 5000
	}
	if c.FlakyDevices <= 0 {
		c.FlakyDevices = 20
	}
	if c.FlakyViewers <= 0 {
		c.FlakyViewers = 40
	}
	if c.Settle <= 0 {
		c.Settle = 15 * time.Second
	}
	if c.Progress == nil {
		c.Progress = func(string) {}
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
}

// benchScenario is one entry of the matrix.
type benchScenario struct {
	name, group, desc string
	// optIn scenarios run only when asked for by name or group.
	optIn bool
	run   func(ctx context.Context, b *bencher, r *BenchResult) error
}

// BenchScenarios returns the names of the matrix's scenarios for cfg, in
// the order RunBench runs them; those marked "(opt-in)" run only when
// named.
func BenchScenarios(cfg BenchConfig) []string {
	cfg.setDefaults()
	var names []string
	for _, s := range matrix(&cfg) {
		if s.optIn {
			names = append(names, s.name+" (opt-in)")
		} else {
			names = append(names, s.name)
		}
	}
	return names
}

func matrix(cfg *BenchConfig) []benchScenario {
	var m []benchScenario
	// Idle memory first, on a fresh server: later scenarios leave garbage
	// and grown heaps that blur a per-connection figure.
	for _, tr := range []string{TransportWS, TransportSSE} {
		m = append(m, benchScenario{
			name: "idle-" + tr, group: BenchIdle,
			desc: fmt.Sprintf("%s idle %s connections (heartbeats only): server memory per connection", human(float64(cfg.IdleViewers)), tr),
			run:  func(ctx context.Context, b *bencher, r *BenchResult) error { return b.idle(ctx, r, tr) },
		})
	}
	for _, qos := range []byte{0, 1} {
		m = append(m, benchScenario{
			name: fmt.Sprintf("ingest-qos%d", qos), group: BenchIngest,
			desc: fmt.Sprintf("%s devices publish JSON with two metrics at QoS %d as fast as the server takes them", human(float64(cfg.IngestDevices)), qos),
			run:  func(ctx context.Context, b *bencher, r *BenchResult) error { return b.ingest(ctx, r, qos) },
		})
	}
	for _, rate := range cfg.LatencyRates {
		m = append(m, benchScenario{
			name: "latency-" + human(rate), group: BenchLatency,
			desc: fmt.Sprintf("%s devices publish %s msgs/s (two metrics each) at QoS 0; one SSE viewer of every series measures publish-to-receive latency", human(float64(min(max(int(rate/50), 100), 1000))), human(rate)),
			run:  func(ctx context.Context, b *bencher, r *BenchResult) error { return b.latency(ctx, r, rate) },
		})
	}
	for _, n := range cfg.FanoutViewers {
		m = append(m, benchScenario{
			name: "fanout-" + human(float64(n)), group: BenchFanout,
			desc: fmt.Sprintf("%s WebSocket viewers of one series that gets %s readings/s", human(float64(n)), human(cfg.FanoutRate)),
			run:  func(ctx context.Context, b *bencher, r *BenchResult) error { return b.fanout(ctx, r, n) },
		})
	}
	m = append(m, benchScenario{
		name: "flaky", group: BenchFlaky,
		desc: fmt.Sprintf("%d devices on links that reset and stall, buffering offline (QoS 1); %d viewers on all four transports that disconnect and stall, resuming; a steady device for the viewers", cfg.FlakyDevices, cfg.FlakyViewers),
		run:  func(ctx context.Context, b *bencher, r *BenchResult) error { return b.flaky(ctx, r) },
	})
	// The cluster scenarios: opt-in on one node (where they are the
	// baseline the multi-node runs compare with), the whole default
	// selection on more.
	cluster := len(cfg.Nodes) > 1
	for i := range m {
		m[i].optIn = cluster
	}
	return append(m, clusterMatrix(cfg, !cluster)...)
}

// selected filters the matrix by names and groups.
func selected(m []benchScenario, want []string) ([]benchScenario, error) {
	var out []benchScenario
	if len(want) == 0 {
		for _, s := range m {
			if !s.optIn {
				out = append(out, s)
			}
		}
		return out, nil
	}
	used := map[string]bool{}
	for _, s := range m {
		for _, w := range want {
			if w == s.name || w == s.group {
				out = append(out, s)
				used[w] = true
				break
			}
		}
	}
	for _, w := range want {
		if !used[w] {
			var names []string
			for _, s := range m {
				names = append(names, s.name)
			}
			return nil, fmt.Errorf("bench: no scenario or group %q (have %s)", w, strings.Join(names, ", "))
		}
	}
	return out, nil
}

// RunBench runs the scenario matrix against the server at cfg.URL and
// cfg.MQTTAddr, one scenario after the other, and returns the report
// (Version, Command and Target are the caller's to fill). A scenario that
// fails is reported with its Error and the run goes on; RunBench itself
// fails only for a bad config, an unreachable server or a cancelled ctx.
func RunBench(ctx context.Context, cfg BenchConfig, log *slog.Logger) (*BenchReport, error) {
	cfg.setDefaults()
	for _, n := range cfg.Nodes {
		if n.URL == "" || n.MQTTAddr == "" {
			return nil, errors.New("bench: URL and MQTTAddr are required (of every node)")
		}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	scenarios, err := selected(matrix(&cfg), cfg.Scenarios)
	if err != nil {
		return nil, err
	}
	b := &bencher{cfg: &cfg, log: log.With("component", "simulators.bench")}
	if _, err := b.metrics(ctx); err != nil {
		return nil, fmt.Errorf("bench: server at %s: %w", cfg.URL, err)
	}
	rep := &BenchReport{Started: time.Now().UTC(), Machine: machine()}
	for _, s := range scenarios {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		cfg.Progress(s.name + ": " + s.desc)
		r := BenchResult{Scenario: s.name, Group: s.group, Description: s.desc, Nodes: len(cfg.Nodes)}
		if err := s.run(ctx, b, &r); err != nil {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			r.Error = err.Error()
			b.log.Warn("scenario failed", "scenario", s.name, "err", err)
		}
		rep.Results = append(rep.Results, r)
		// Let the server settle (flushes, closed connections) between
		// scenarios, so one does not bill the next.
		if !sleepCtx(ctx, time.Second) {
			return rep, ctx.Err()
		}
	}
	return rep, nil
}

// bencher runs scenarios against one server.
type bencher struct {
	cfg *BenchConfig
	log *slog.Logger
}

// metricSample is a scrape of the server's /metrics, summed over labels:
// family name -> value.
type metricSample struct {
	at time.Time
	v  map[string]float64
}

func (m metricSample) get(name string) float64 { return m.v[name] }

// metrics scrapes every node's /metrics and sums them: the cluster's own
// ingest (telegauge_readings_accepted_total counts a node's own devices
// only, not the readings other nodes send it), CPU and memory.
func (b *bencher) metrics(ctx context.Context) (metricSample, error) {
	s := metricSample{v: map[string]float64{}}
	for i, n := range b.cfg.Nodes {
		if err := b.scrape(ctx, n.URL, s.v, i > 0 && b.cfg.NodesShareProcess); err != nil {
			if len(b.cfg.Nodes) > 1 {
				return metricSample{}, fmt.Errorf("node %d: %w", i+1, err)
			}
			return metricSample{}, err
		}
	}
	if b.cfg.ExtraCPU != nil {
		cpu, err := b.cfg.ExtraCPU()
		if err != nil {
			return metricSample{}, fmt.Errorf("extra CPU: %w", err)
		}
		s.v[mExtraCPU] = cpu
	}
	s.at = time.Now()
	return s, nil
}

// scrape adds the /metrics of the server at base to v, summed over
// labels; skipProcess leaves out the process_ and go_ families.
func (b *bencher) scrape(ctx context.Context, base string, v map[string]float64, skipProcess bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return fmt.Errorf("build metrics request: %w", err)
	}
	resp, err := b.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("scrape metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		x, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		name := line[:sp]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		if skipProcess && (strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "go_")) {
			continue
		}
		v[name] += x
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read metrics: %w", err)
	}
	return nil
}

// Server metrics the scenarios read.
const (
	mPublishes  = "telegauge_mqtt_telemetry_publishes_total"
	mReadings   = "telegauge_readings_accepted_total"
	mCPU        = "process_cpu_seconds_total"
	mRSS        = "process_resident_memory_bytes"
	mHeap       = "go_memstats_heap_inuse_bytes"
	mStack      = "go_memstats_stack_inuse_bytes"
	mGoroutines = "go_goroutines"
	// Cluster mode: readings a node applied from the others.
	mClusterReceived = "telegauge_cluster_readings_received_total"
	// mExtraCPU is BenchConfig.ExtraCPU's figure, not a server metric.
	mExtraCPU = "bench_extra_cpu_seconds"
)

// resources fills the server's CPU and memory over [from, to].
func resources(r *BenchResult, from, to metricSample) {
	if d := to.at.Sub(from.at).Seconds(); d > 0 {
		r.ServerCPUCores = (to.get(mCPU) - from.get(mCPU)) / d
	}
	r.ServerRSSBytes = to.get(mRSS)
}

// sampler records the send and accept rates once a second while load runs.
type sampler struct {
	b      *bencher
	sent   func() int64
	start  time.Time
	mu     sync.Mutex // guards points
	points []RatePoint
}

func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	prevSent, prevAt := s.sent(), time.Now()
	prev, err := s.b.metrics(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		sent := s.sent()
		p := RatePoint{T: now.Sub(s.start).Seconds(), Sent: float64(sent-prevSent) / now.Sub(prevAt).Seconds()}
		if cur, cerr := s.b.metrics(ctx); cerr == nil {
			if err == nil {
				p.Accepted = (cur.get(mPublishes) - prev.get(mPublishes)) / cur.at.Sub(prev.at).Seconds()
			}
			prev, err = cur, nil
		}
		prevSent, prevAt = sent, now
		s.mu.Lock()
		s.points = append(s.points, p)
		s.mu.Unlock()
	}
}

func (s *sampler) result() []RatePoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]RatePoint(nil), s.points...)
}

// measureLoad runs load, which publishes through counters, for
// Warmup+Duration while sampling, scraping the server at the start and end
// of the measured phase.
func (b *bencher) measureLoad(ctx context.Context, r *BenchResult, counters *LoadCounters, load func(ctx context.Context) error) (from, to metricSample, err error) {
	sent := func() int64 { return counters.Snapshot().Messages }
	cfg := b.cfg
	loadCtx, cancelLoad := context.WithCancel(ctx)
	defer cancelLoad()
	loadDone := make(chan error, 1)
	go func() { loadDone <- load(loadCtx) }()
	s := &sampler{b: b, sent: sent, start: time.Now()}
	sampCtx, stopSampling := context.WithCancel(ctx)
	sampDone := make(chan struct{})
	go func() { defer close(sampDone); s.run(sampCtx) }()
	defer func() { stopSampling(); <-sampDone; r.Throughput = s.result() }()

	if !sleepCtx(ctx, cfg.Warmup) {
		return from, to, ctx.Err()
	}
	if from, err = b.metrics(ctx); err != nil {
		return from, to, err
	}
	sentFrom := sent()
	if !sleepCtx(ctx, cfg.Duration) {
		return from, to, ctx.Err()
	}
	if to, err = b.metrics(ctx); err != nil {
		return from, to, err
	}
	d := to.at.Sub(from.at).Seconds()
	r.DurationMs = d * 1000
	r.SentMessagesPerSecond = float64(sent()-sentFrom) / d
	r.AcceptedMessagesPerSecond = (to.get(mPublishes) - from.get(mPublishes)) / d
	r.AcceptedReadingsPerSecond = (to.get(mReadings) - from.get(mReadings)) / d
	resources(r, from, to)
	if readings := to.get(mReadings) - from.get(mReadings); readings > 0 {
		r.CPUSecondsPerReading = (to.get(mCPU) - from.get(mCPU)) / readings
		if b.cfg.ExtraCPU != nil {
			r.NATSCPUSecondsPerReading = (to.get(mExtraCPU) - from.get(mExtraCPU)) / readings
		}
	}
	cancelLoad()
	if err := <-loadDone; err != nil && !errors.Is(err, context.Canceled) {
		return from, to, fmt.Errorf("load: %w", err)
	}
	return from, to, nil
}

// ingest: as many messages as the server takes.
func (b *bencher) ingest(ctx context.Context, r *BenchResult, qos byte) error {
	r.Devices, r.Metrics, r.QoS = b.cfg.IngestDevices, 2, qos
	counters := new(LoadCounters)
	_, _, err := b.measureLoad(ctx, r, counters, func(ctx context.Context) error {
		_, err := RunLoad(ctx, LoadConfig{
			Addr: b.cfg.MQTTAddr, Connections: r.Devices, QoS: qos, Metrics: 2,
			IDPrefix: fmt.Sprintf("bench-in%d-", qos), Counters: counters,
		}, b.log)
		return err
	})
	return err
}

// startViewers runs viewers (on cfg.URL, or node 1 if empty) until the
// returned stop is called, which returns their stats.
func (b *bencher) startViewers(ctx context.Context, cfg ViewersConfig) (counters *ViewersCounters, stop func() (ViewersStats, error)) {
	// Node 1 and counters of their own, unless cfg says otherwise.
	if cfg.URL == "" {
		cfg.URL = b.cfg.URL
	}
	if cfg.Counters == nil {
		cfg.Counters = new(ViewersCounters)
	}
	counters = cfg.Counters
	vctx, cancel := context.WithCancel(ctx)
	type result struct {
		s   ViewersStats
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := RunViewers(vctx, cfg, b.log)
		done <- result{s, err}
	}()
	return counters, func() (ViewersStats, error) {
		cancel()
		res := <-done
		return res.s, res.err
	}
}

// waitConnected waits until n viewers have connected (flaky ones may have
// dropped again since).
func (b *bencher) waitConnected(ctx context.Context, c *ViewersCounters, n int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		t := c.Snapshot().Total
		got := t.Connections - t.Reconnects
		if got >= int64(n) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d viewers connected within %s", got, n, within)
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// latencyResult fills latency fields from viewer stats and counters.
func latencyResult(r *BenchResult, st ViewersStats, c *ViewersCounters) {
	t := st.Total
	l := t.Latency
	r.Latency = &l
	r.Duplicates, r.Gaps, r.Reconnects = t.Duplicates, t.Gaps, t.Reconnects
	r.PointsReceived = t.Points - t.Duplicates
	h := viewersLatency(c)
	r.LatencyCDF = h.CDF(200)
}

// noteShortDelivery notes the share of the expected points the viewers
// received, when some are missing.
func noteShortDelivery(r *BenchResult) {
	if r.PointsReceived < r.PointsExpected {
		r.Notes = fmt.Sprintf("%.2f%% of points delivered", 100*float64(r.PointsReceived)/float64(max(r.PointsExpected, 1)))
	}
}

// viewersLatency merges the latency histograms of every transport.
func viewersLatency(c *ViewersCounters) *Histogram {
	var h Histogram
	for i := range c.by {
		c.by[i].latency.copyInto(&h)
	}
	return &h
}

// latency: a fixed rate, one viewer of everything.
func (b *bencher) latency(ctx context.Context, r *BenchResult, rate float64) error {
	// At most 50 messages/s per device: a device's readings need distinct
	// milliseconds (the load generator moves a repeated one forward, which
	// would read as negative latency).
	r.Devices, r.Metrics, r.TargetRate, r.Viewers, r.Transport = min(max(int(rate/50), 100), 1000), 2, rate, 1, TransportSSE
	vc, stop := b.startViewers(ctx, ViewersConfig{Viewers: 1, Transport: TransportSSE, Series: []string{"#"}})
	if err := b.waitConnected(ctx, vc, 1, 10*time.Second); err != nil {
		_, _ = stop()
		return err
	}
	counters := new(LoadCounters)
	_, _, err := b.measureLoad(ctx, r, counters, func(ctx context.Context) error {
		_, err := RunLoad(ctx, LoadConfig{
			Addr: b.cfg.MQTTAddr, Connections: r.Devices, Rate: rate, Metrics: 2,
			IDPrefix: "bench-lat-", Counters: counters,
		}, b.log)
		return err
	})
	// The tail of the load is still on its way.
	sleepCtx(ctx, 500*time.Millisecond)
	st, verr := stop()
	latencyResult(r, st, vc)
	r.PointsExpected = 2 * counters.Snapshot().Messages
	return errors.Join(err, verr)
}

// fanout: n WebSocket viewers of one series.
func (b *bencher) fanout(ctx context.Context, r *BenchResult, n int) error {
	cfg := b.cfg
	r.Devices, r.Metrics, r.QoS, r.TargetRate, r.Viewers, r.Transport = 1, 1, 1, cfg.FanoutRate, n, TransportWS
	series := fmt.Sprintf("bench-fan%d-0000/%s", n, MetricName(0))
	vc, stop := b.startViewers(ctx, ViewersConfig{
		Viewers: n, Transport: TransportWS, Series: []string{series},
		Ramp: time.Duration(n) * time.Millisecond, // 1,000 connections a second
	})
	if err := b.waitConnected(ctx, vc, n, time.Duration(n)*time.Millisecond+30*time.Second); err != nil {
		_, _ = stop()
		return err
	}
	counters := new(LoadCounters)
	_, _, err := b.measureLoad(ctx, r, counters, func(ctx context.Context) error {
		_, err := RunLoad(ctx, LoadConfig{
			Addr: cfg.MQTTAddr, Connections: 1, Rate: cfg.FanoutRate, Metrics: 1, QoS: 1,
			IDPrefix: fmt.Sprintf("bench-fan%d-", n), Counters: counters,
		}, b.log)
		return err
	})
	sent := counters.Snapshot().Messages
	r.PointsExpected = sent * int64(n)
	b.settle(ctx, vc, r.PointsExpected)
	st, verr := stop()
	latencyResult(r, st, vc)
	noteShortDelivery(r)
	return errors.Join(err, verr)
}

// settle waits until the viewers have want distinct points between them,
// or Settle passes.
func (b *bencher) settle(ctx context.Context, c *ViewersCounters, want int64) {
	deadline := time.Now().Add(b.cfg.Settle)
	for time.Now().Before(deadline) {
		t := c.Snapshot().Total
		if t.Points-t.Duplicates >= want {
			return
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return
		}
	}
}

// idle: memory per idle connection: the server's heap and stacks after a
// garbage collection (through DebugURL) with no connection, with half and
// with all of them open. Both halves should cost the same; a first half
// that looks cheaper is reusing memory an earlier scenario left behind.
func (b *bencher) idle(ctx context.Context, r *BenchResult, transport string) error {
	half := max(b.cfg.IdleViewers/2, 1)
	r.Viewers, r.Transport = 2*half, transport
	sample := func() (metricSample, error) {
		if err := b.collectGarbage(ctx); err != nil {
			return metricSample{}, err
		}
		return b.metrics(ctx)
	}
	var stops []func() (ViewersStats, error)
	defer func() {
		for _, stop := range stops {
			_, _ = stop()
		}
	}()
	samples := make([]metricSample, 0, 3)
	for step := range 3 {
		if step > 0 {
			vc, stop := b.startViewers(ctx, ViewersConfig{
				Viewers: half, Transport: transport, Series: []string{"bench-idle-none/x"},
				Ramp: time.Duration(half) * 500 * time.Microsecond,
			})
			stops = append(stops, stop)
			if err := b.waitConnected(ctx, vc, half, time.Duration(half)*time.Millisecond+30*time.Second); err != nil {
				return err
			}
			// Let the connections' buffers reach their steady size.
			sleepCtx(ctx, b.cfg.Warmup)
		}
		m, err := sample()
		if err != nil {
			return err
		}
		samples = append(samples, m)
	}
	base, mid, all := samples[0], samples[1], samples[2]
	mem := func(m metricSample) float64 { return m.get(mHeap) + m.get(mStack) }
	per := func(name string, from, to metricSample) float64 {
		return (to.get(name) - from.get(name)) / float64(half)
	}
	r.DurationMs = float64(all.at.Sub(base.at).Milliseconds())
	r.BytesPerConnection = (mem(all) - mem(base)) / float64(2*half)
	resources(r, mid, all) // RSS of all, CPU over the second half
	if b.cfg.DebugURL == "" {
		r.Notes = "no debug URL to collect garbage through, so garbage blurs the figures. "
	}
	r.Notes += fmt.Sprintf("heap+stacks %s idle, %s with %d connections, %s with %d: %s and %s per connection for the two halves; RSS %s per connection; %.1f goroutines each",
		bytesHuman(mem(base)), bytesHuman(mem(mid)), half, bytesHuman(mem(all)), 2*half,
		bytesHuman((mem(mid)-mem(base))/float64(half)), bytesHuman((mem(all)-mem(mid))/float64(half)),
		bytesHuman((all.get(mRSS)-base.get(mRSS))/float64(2*half)), per(mGoroutines, mid, all))
	return nil
}

// collectGarbage has the server run a full garbage collection, through
// pprof's heap profile with gc=1, when DebugURL is set.
func (b *bencher) collectGarbage(ctx context.Context) error {
	if b.cfg.DebugURL == "" {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(b.cfg.DebugURL, "/")+"/debug/pprof/heap?gc=1", nil)
	if err != nil {
		return fmt.Errorf("build GC request: %w", err)
	}
	resp, err := b.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("collect garbage: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("collect garbage: %s", resp.Status)
	}
	return nil
}

// flaky: devices and viewers on bad links; delivery must stay exact.
func (b *bencher) flaky(ctx context.Context, r *BenchResult) error {
	cfg := b.cfg
	r.Devices, r.Metrics, r.QoS, r.Viewers, r.Transport = cfg.FlakyDevices, 2, 1, cfg.FlakyViewers, TransportMix
	phase := cfg.Warmup + cfg.Duration
	const rate = 5.0
	perDevice := int(rate * phase.Seconds())

	// The viewers follow one steady device: a reading sent twice by a
	// flaky device (its acknowledgement lost) is a legitimate duplicate
	// that would hide the viewers' own.
	steadySeries := "bench-steady-0000/#"
	vc, stop := b.startViewers(ctx, ViewersConfig{
		Viewers: cfg.FlakyViewers, Transport: TransportMix, Series: []string{steadySeries},
		PollInterval: 500 * time.Millisecond, PollWait: 5 * time.Second,
		Backoff: 100 * time.Millisecond, MaxBackoff: time.Second,
		Flaky: ViewerFlaky{DisconnectEvery: 2 * time.Second, StallEvery: 3 * time.Second, StallFor: time.Second},
	})
	if err := b.waitConnected(ctx, vc, cfg.FlakyViewers, 30*time.Second); err != nil {
		_, _ = stop()
		return err
	}
	start := time.Now()
	var wg sync.WaitGroup
	var steady, flaky DevicesStats
	var steadyErr, flakyErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		steady, steadyErr = RunDevices(ctx, DevicesConfig{
			Broker: "tcp://" + cfg.MQTTAddr, Devices: 1, Rate: 20, Messages: int(20 * phase.Seconds()), Metrics: 2, QoS: 1,
			IDPrefix: "bench-steady-", Seed: 1, Now: distinctMillis(),
		}, b.log)
	}()
	go func() {
		defer wg.Done()
		flaky, flakyErr = RunDevices(ctx, DevicesConfig{
			Broker: "tcp://" + cfg.MQTTAddr, Devices: cfg.FlakyDevices, Rate: rate, Messages: perDevice, Metrics: 2, QoS: 1,
			IDPrefix: "bench-flaky-", Seed: 2, Ramp: time.Second, KeepAlive: 2 * time.Second,
			Flaky: DeviceFlaky{DisconnectEvery: 2 * time.Second, StallEvery: 3 * time.Second, StallFor: 1500 * time.Millisecond},
		}, b.log)
	}()
	wg.Wait()
	end := time.Now()
	if err := errors.Join(steadyErr, flakyErr); err != nil {
		_, _ = stop()
		return err
	}
	perViewer := steady.Readings
	r.PointsExpected = perViewer * int64(cfg.FlakyViewers)
	b.settle(ctx, vc, r.PointsExpected)
	st, verr := stop()
	latencyResult(r, st, vc)
	r.DurationMs = float64(end.Sub(start).Milliseconds())

	// History must hold every reading of the flaky devices: counted once
	// each, or twice where the device had to send it again.
	stored, qerr := b.storedReadings(ctx, "bench-flaky-", cfg.FlakyDevices, 2, start.Add(-time.Minute), end.Add(time.Minute), flaky.Readings)
	viewersOK := st.ExactlyOnce(perViewer)
	historyOK := qerr == nil && stored >= flaky.Readings && stored <= flaky.Readings+2*flaky.Republished && flaky.Unsent == 0 && flaky.Dropped == 0
	ok := viewersOK && historyOK
	r.ExactlyOnce = &ok
	r.Notes = fmt.Sprintf("devices: %d readings, %d disconnects, %d stalls, %d readings buffered offline, %d messages sent again; history holds %d. "+
		"viewers: %d disconnects, %d stalls, %d reconnects; distinct points per viewer %d..%d of %d, %d duplicates, %d gaps",
		flaky.Readings, flaky.Disconnects, flaky.Stalls, flaky.Buffered, flaky.Republished, stored,
		st.Total.Disconnects, st.Total.Stalls, st.Total.Reconnects, st.Total.UniqueMin, st.Total.UniqueMax, perViewer, st.Total.Duplicates, st.Total.Gaps)
	return errors.Join(verr, qerr)
}

// distinctMillis returns a clock for one device whose readings each get a
// millisecond of their own: a device that falls behind sends its due
// readings in a burst, and two with the same time and value would be
// indistinguishable from a duplicate delivery.
func distinctMillis() func() time.Time {
	var mu sync.Mutex
	var last int64
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		last = max(last+1, time.Now().UnixMilli())
		return time.UnixMilli(last)
	}
}

// storedReadings sums the per-second counts history holds for the metrics
// of n devices, waiting (up to Settle) until it reaches want.
func (b *bencher) storedReadings(ctx context.Context, prefix string, n, metrics int, from, to time.Time, want int64) (int64, error) {
	q := url.Values{
		"from": {strconv.FormatInt(from.UnixMilli(), 10)}, "to": {strconv.FormatInt(to.UnixMilli(), 10)},
		"step": {"1s"}, "maxPoints": {"20000"},
	}
	for i := range n {
		for m := range metrics {
			q.Add("series", DeviceID(prefix, i, n)+"/"+MetricName(m))
		}
	}
	u := b.cfg.URL + "/api/v1/query?" + q.Encode()
	deadline := time.Now().Add(b.cfg.Settle)
	for {
		total, err := b.queryCount(ctx, u)
		if err != nil || total >= want || time.Now().After(deadline) {
			return total, err
		}
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return total, ctx.Err()
		}
	}
}

func (b *bencher) queryCount(ctx context.Context, u string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("build query: %w", err)
	}
	resp, err := b.cfg.HTTPClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("query history: %w", err)
	}
	defer resp.Body.Close()
	var a struct {
		Series []struct {
			Count []int64 `json:"count"`
		} `json:"series"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return 0, fmt.Errorf("query history: %s: %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("query history: %s: %s", resp.Status, a.Error)
	}
	var total int64
	for _, s := range a.Series {
		for _, c := range s.Count {
			total += c
		}
	}
	return total, nil
}

// machine describes this machine.
func machine() BenchMachine {
	// NumCPU is what this process may use, which taskset narrows; the
	// report wants the machine's.
	m := BenchMachine{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			switch k = strings.TrimSpace(k); {
			case !ok:
			case k == "processor":
				n++
			case k == "model name" && m.CPUModel == "":
				m.CPUModel = strings.TrimSpace(v)
			}
		}
		m.CPUs = max(m.CPUs, n)
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				m.MemoryBytes = kb << 10
			}
		}
	}
	return m
}

// FreeLoopbackAddr returns a loopback address that was free a moment ago,
// for a server the benchmark starts.
func FreeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Table formats the report as a table, one row per scenario.
func (r *BenchReport) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "telegauge %s bench on %s/%s, %d CPUs (%s), %s; target %s\n",
		r.Version, r.Machine.OS, r.Machine.Arch, r.Machine.CPUs, r.Machine.CPUModel, r.Machine.GoVersion, r.Target)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tload\taccepted msg/s\treadings/s\tp50\tp99\tmax\tdelivered\tdup/gaps\tserver CPU\tCPU/reading\tRSS\tper conn\tresult")
	for _, x := range r.Results {
		load := ""
		if x.Devices > 0 {
			load = fmt.Sprintf("%s dev x %d, QoS %d", human(float64(x.Devices)), x.Metrics, x.QoS)
			if x.TargetRate > 0 {
				load += " @ " + human(x.TargetRate) + "/s"
			}
		}
		if x.Viewers > 0 {
			if load != "" {
				load += "; "
			}
			load += fmt.Sprintf("%s %s viewers", human(float64(x.Viewers)), x.Transport)
		}
		if x.Nodes > 1 {
			load += fmt.Sprintf("; %d nodes", x.Nodes)
		}
		perReadingCPU := "-"
		if x.CPUSecondsPerReading > 0 {
			perReadingCPU = perReading(x.CPUSecondsPerReading)
		}
		p50, p99, mx := "-", "-", "-"
		if x.Latency != nil && x.Latency.Count > 0 {
			p50, p99, mx = fmtLatency(x.Latency.P50, 1), fmtLatency(x.Latency.P99, 1), fmtLatency(x.Latency.Max, 1)
		}
		delivered := "-"
		if x.PointsExpected > 0 {
			delivered = fmt.Sprintf("%.2f%%", 100*float64(x.PointsReceived)/float64(x.PointsExpected))
		}
		result := "ok"
		switch {
		case x.Error != "":
			result = "error: " + x.Error
		case x.ExactlyOnce != nil && *x.ExactlyOnce:
			result = "exactly once"
		case x.ExactlyOnce != nil:
			result = "NOT exactly once"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\t%s\n",
			x.Scenario, load, humanOrDash(x.AcceptedMessagesPerSecond), humanOrDash(x.AcceptedReadingsPerSecond),
			p50, p99, mx, delivered, x.Duplicates, x.Gaps, pctOrDash(x.ServerCPUCores), perReadingCPU, bytesOrDash(x.ServerRSSBytes),
			bytesOrDash(x.BytesPerConnection), result)
	}
	_ = tw.Flush()
	for _, x := range r.Results {
		if x.Notes != "" {
			fmt.Fprintf(&b, "%s: %s\n", x.Scenario, x.Notes)
		}
	}
	return b.String()
}

// human formats a count: 950, 12k, 1.5M.
func human(v float64) string {
	trim := func(s string) string { return strings.TrimSuffix(strings.TrimRight(s, "0"), ".") }
	switch {
	case v >= 1e6:
		return trim(strconv.FormatFloat(v/1e6, 'f', 2, 64)) + "M"
	case v >= 1e3:
		return trim(strconv.FormatFloat(v/1e3, 'f', 1, 64)) + "k"
	default:
		return trim(strconv.FormatFloat(v, 'f', 1, 64))
	}
}

func humanOrDash(v float64) string {
	if v <= 0 {
		return "-"
	}
	return human(float64(int64(v)))
}

func pctOrDash(cores float64) string {
	if cores <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", cores*100)
}

func bytesOrDash(v float64) string {
	if v <= 0 {
		return "-"
	}
	return bytesHuman(v)
}

// bytesHuman formats a byte count in KiB or MiB.
func bytesHuman(v float64) string {
	switch {
	case v >= 1<<20 || v <= -(1<<20):
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case v >= 1<<10 || v <= -(1<<10):
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	default:
		return fmt.Sprintf("%.0f B", v)
	}
}
