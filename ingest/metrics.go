package ingest

import (
	"errors"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the aggregator's counters. Hot-path counters are added once
// per batch, not per reading.
type metrics struct {
	messages    prometheus.Counter
	accepted    prometheus.Counter
	rejected    [NumReasons]prometheus.Counter
	flushErrors prometheus.Counter
	collectors  []prometheus.Collector

	// Live totals, also used to enforce MaxSeries and MaxDevices.
	series  atomic.Int64
	devices atomic.Int64
}

func newMetrics(a *Aggregator) *metrics {
	m := &metrics{
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_ingest_messages_total",
			Help: "MQTT publishes queued for decoding.",
		}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_readings_accepted_total",
			Help: "Readings accepted into rollups and live streams.",
		}),
		flushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_store_flush_errors_total",
			Help: "Flushes to the history store that failed and will be retried.",
		}),
	}
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "telegauge_readings_rejected_total",
		Help: "Readings or payloads rejected, by reason.",
	}, []string{"reason"})
	for r := range NumReasons {
		m.rejected[r] = rejected.WithLabelValues(Reason(r).String())
	}
	queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telegauge_ingest_queue_messages",
		Help: "Messages waiting to be decoded, over all shards.",
	}, func() float64 {
		n := 0
		for _, s := range a.shards {
			n += s.q.length()
		}
		return float64(n)
	})
	series := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telegauge_series",
		Help: "Series known to the aggregator.",
	}, func() float64 { return float64(m.series.Load()) })
	devices := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telegauge_devices",
		Help: "Devices known to the aggregator.",
	}, func() float64 { return float64(m.devices.Load()) })
	m.collectors = []prometheus.Collector{m.messages, m.accepted, rejected, m.flushErrors, queued, series, devices}
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range m.collectors {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}
