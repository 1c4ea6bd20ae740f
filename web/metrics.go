package web

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type webMetrics struct {
	streams    *prometheus.GaugeVec
	frames     *prometheus.CounterVec
	exports    prometheus.Gauge
	collectors []prometheus.Collector
}

func newWebMetrics() *webMetrics {
	m := &webMetrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "telegauge_live_streams_open",
			Help: "Open streaming connections (SSE, WebSocket), by transport.",
		}, []string{"transport"}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telegauge_live_frames_sent_total",
			Help: "Live frames (points messages or poll answers) written to clients, by transport.",
		}, []string{"transport"}),
		exports: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "telegauge_http_exports_streaming",
			Help: "Exports (/api/v1/export) being written to clients.",
		}),
	}
	m.collectors = []prometheus.Collector{m.streams, m.frames, m.exports}
	return m
}

func (m *webMetrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range m.collectors {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}
