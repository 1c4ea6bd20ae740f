package simulators

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// clusterMatrix is the cluster group: the same load split over however
// many nodes cfg has, so that runs with one, two and three nodes compare.
// optIn marks them opt-in (on a single node, where they are the baseline).
func clusterMatrix(cfg *BenchConfig, optIn bool) []benchScenario {
	nodes := len(cfg.Nodes)
	on := "one node"
	if nodes > 1 {
		on = fmt.Sprintf("%d nodes over NATS", nodes)
	}
	return []benchScenario{
		{
			name: "cluster-ingest-" + human(cfg.ClusterRate), group: BenchCluster, optIn: optIn,
			desc: fmt.Sprintf("%s devices split evenly over %s publish %s msgs/s in all (two metrics each) at QoS 0: accepted readings/s and server CPU seconds per reading, summed over the nodes",
				human(float64(cfg.IngestDevices)), on, human(cfg.ClusterRate)),
			run: func(ctx context.Context, b *bencher, r *BenchResult) error {
				return b.clusterIngest(ctx, r, cfg.ClusterRate)
			},
		},
		{
			name: "cluster-ingest-max", group: BenchCluster, optIn: optIn,
			desc: fmt.Sprintf("%s devices split evenly over %s publish as fast as the nodes take them (two metrics each, QoS 0)",
				human(float64(cfg.IngestDevices)), on),
			run: func(ctx context.Context, b *bencher, r *BenchResult) error { return b.clusterIngest(ctx, r, 0) },
		},
		{
			name: "cluster-fanout-" + human(float64(cfg.ClusterViewers)), group: BenchCluster, optIn: optIn,
			desc: fmt.Sprintf("%s WebSocket viewers spread over %s, all of one series that gets %s readings/s on node 1 (the others' viewers get it through NATS)",
				human(float64(cfg.ClusterViewers)), on, human(cfg.FanoutRate)),
			run: func(ctx context.Context, b *bencher, r *BenchResult) error { return b.clusterFanout(ctx, r) },
		},
	}
}

// split divides n as evenly as possible into parts, the first ones
// getting the remainder.
func split(n, parts int) []int {
	out := make([]int, parts)
	for i := range out {
		out[i] = n / parts
		if i < n%parts {
			out[i]++
		}
	}
	return out
}

// clusterIngest: IngestDevices devices split over the nodes' MQTT
// listeners, publishing rate messages/s in all (0: as fast as possible).
func (b *bencher) clusterIngest(ctx context.Context, r *BenchResult, rate float64) error {
	cfg := b.cfg
	r.Devices, r.Metrics, r.QoS, r.TargetRate = cfg.IngestDevices, 2, 0, rate
	counters := new(LoadCounters)
	from, to, err := b.measureLoad(ctx, r, counters, func(ctx context.Context) error {
		devices := split(cfg.IngestDevices, len(cfg.Nodes))
		errs := make([]error, len(cfg.Nodes))
		var wg sync.WaitGroup
		for i, n := range cfg.Nodes {
			if devices[i] == 0 {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = RunLoad(ctx, LoadConfig{
					Addr: n.MQTTAddr, Connections: devices[i], QoS: 0, Metrics: 2,
					Rate:     rate * float64(devices[i]) / float64(cfg.IngestDevices),
					IDPrefix: fmt.Sprintf("bench-cl%s-n%d-", human(rate), i+1), Counters: counters,
				}, b.log)
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	})
	if err != nil {
		return err
	}
	// Flat out, the devices' sockets and the nodes' queues hold a backlog
	// that would otherwise bill the next scenario.
	b.quiesce(ctx)
	if len(cfg.Nodes) > 1 {
		d := to.at.Sub(from.at).Seconds()
		r.Notes = fmt.Sprintf("%s readings/s accepted from devices across %d nodes; the nodes applied %s readings/s from each other (telegauge_cluster_readings_received_total; every node applies every reading)",
			human(r.AcceptedReadingsPerSecond), len(cfg.Nodes), human((to.get(mClusterReceived)-from.get(mClusterReceived))/d))
	}
	if r.CPUSecondsPerReading > 0 {
		if r.Notes != "" {
			r.Notes += "; "
		}
		r.Notes += fmt.Sprintf("server CPU %s per reading", perReading(r.CPUSecondsPerReading))
		if r.NATSCPUSecondsPerReading > 0 {
			r.Notes += fmt.Sprintf(" plus %s in the NATS server", perReading(r.NATSCPUSecondsPerReading))
		}
	}
	return nil
}

// perReading formats CPU seconds per reading in microseconds.
func perReading(s float64) string {
	return fmt.Sprintf("%.2f µs", s*1e6)
}

// clusterFanout: ClusterViewers WebSocket viewers spread round-robin over
// the nodes, all of one series published on node 1; on more than one node
// most of them get it through NATS (the remote path).
func (b *bencher) clusterFanout(ctx context.Context, r *BenchResult) error {
	cfg := b.cfg
	n := cfg.ClusterViewers
	r.Devices, r.Metrics, r.QoS, r.TargetRate, r.Viewers, r.Transport = 1, 1, 1, cfg.FanoutRate, n, TransportWS
	const prefix = "bench-clfan-"
	series := DeviceID(prefix, 0, 1) + "/" + MetricName(0)
	// The viewer groups share their counters (safe: atomics, and each
	// viewer registers under the counters' lock).
	vc := new(ViewersCounters)
	viewers := split(n, len(cfg.Nodes))
	var stops []func() (ViewersStats, error)
	stopAll := func() error {
		var errs []error
		for _, stop := range stops {
			_, err := stop()
			errs = append(errs, err)
		}
		stops = nil
		return errors.Join(errs...)
	}
	defer func() { _ = stopAll() }()
	for i, node := range cfg.Nodes {
		if viewers[i] == 0 {
			continue
		}
		_, stop := b.startViewers(ctx, ViewersConfig{
			URL: node.URL, Viewers: viewers[i], Transport: TransportWS, Series: []string{series},
			Ramp: time.Duration(viewers[i]) * time.Millisecond, Counters: vc,
		})
		stops = append(stops, stop)
	}
	if err := b.waitConnected(ctx, vc, n, time.Duration(n)*time.Millisecond+30*time.Second); err != nil {
		return err
	}
	counters := new(LoadCounters)
	_, _, err := b.measureLoad(ctx, r, counters, func(ctx context.Context) error {
		_, err := RunLoad(ctx, LoadConfig{
			Addr: cfg.Nodes[0].MQTTAddr, Connections: 1, Rate: cfg.FanoutRate, Metrics: 1, QoS: 1,
			IDPrefix: prefix, Counters: counters,
		}, b.log)
		return err
	})
	sent := counters.Snapshot().Messages
	r.PointsExpected = sent * int64(n)
	b.settle(ctx, vc, r.PointsExpected)
	verr := stopAll()
	latencyResult(r, vc.Snapshot(), vc)
	// CPU per reading means nothing here (one reading fans out to every
	// viewer); the CPU share is the figure.
	r.CPUSecondsPerReading, r.NATSCPUSecondsPerReading = 0, 0
	noteShortDelivery(r)
	return errors.Join(err, verr)
}

// quiesce waits (up to Settle) until the nodes have stopped taking
// publishes and applying each other's readings for half a second.
func (b *bencher) quiesce(ctx context.Context) {
	deadline := time.Now().Add(b.cfg.Settle)
	prev, err := b.metrics(ctx)
	for err == nil && time.Now().Before(deadline) && sleepCtx(ctx, 500*time.Millisecond) {
		cur, cerr := b.metrics(ctx)
		if cerr != nil {
			return
		}
		if cur.get(mPublishes) == prev.get(mPublishes) && cur.get(mClusterReceived) == prev.get(mClusterReceived) {
			return
		}
		prev = cur
	}
}
