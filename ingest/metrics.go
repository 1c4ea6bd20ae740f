package ingest

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the aggregator's metrics. Counts live in the shards, under
// their locks, and are summed when scraped, so the hot path touches no
// shared cache line.
type metrics struct {
	flushErrors prometheus.Counter
	collectors  []prometheus.Collector

	// Live totals, also used to enforce MaxSeries and MaxDevices.
	series  atomic.Int64
	devices atomic.Int64
}

func newMetrics(a *Aggregator) *metrics {
	m := &metrics{
		flushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_store_flush_errors_total",
			Help: "Flushes to the history store that failed and will be retried.",
		}),
	}
	total := func(f func(s *shard) uint64) uint64 {
		var n uint64
		for _, s := range a.shards {
			s.mu.Lock()
			n += f(s)
			s.mu.Unlock()
		}
		return n
	}
	sum := func(f func(s *shard) uint64) func() float64 {
		return func() float64 { return float64(total(f)) }
	}
	m.collectors = []prometheus.Collector{
		m.flushErrors,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "telegauge_readings_accepted_total",
			Help: "Readings accepted into rollups and live streams.",
		}, sum(func(s *shard) uint64 { return s.accepted })),
		rejectedCollector{a: a, desc: prometheus.NewDesc("telegauge_readings_rejected_total",
			"Readings or payloads rejected, by reason.", []string{"reason"}, nil)},
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "telegauge_device_throttled_seconds_total",
			Help: "Time publishing connections were held, their next packets unread, because their device was over its reading rate (nothing is dropped).",
		}, func() float64 {
			return time.Duration(total(func(s *shard) uint64 { return uint64(s.throttledWait) })).Seconds()
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "telegauge_device_throttled_messages_total",
			Help: "Publishes whose connection was held because their device was over its reading rate.",
		}, sum(func(s *shard) uint64 { return s.throttled })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "telegauge_live_readings_dropped_total",
			Help: "Accepted readings dropped from live streams because the hub fell behind (kept in history; viewers got a gap).",
		}, sum(func(s *shard) uint64 { return s.liveDrop })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "telegauge_live_readings_waiting",
			Help: "Accepted readings waiting for the live hub.",
		}, sum(func(s *shard) uint64 { return uint64(len(s.live)) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "telegauge_series",
			Help: "Series known to the aggregator.",
		}, func() float64 { return float64(m.series.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "telegauge_devices",
			Help: "Devices known to the aggregator.",
		}, func() float64 { return float64(m.devices.Load()) }),
	}
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range m.collectors {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}

// rejectedCollector exports the shards' rejection counts by reason.
type rejectedCollector struct {
	a    *Aggregator
	desc *prometheus.Desc
}

func (c rejectedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c rejectedCollector) Collect(ch chan<- prometheus.Metric) {
	var n [NumReasons]uint64
	for _, s := range c.a.shards {
		s.mu.Lock()
		for r := range n {
			n[r] += s.rejected[r]
		}
		s.mu.Unlock()
	}
	for r := range n {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n[r]), Reason(r).String())
	}
}
