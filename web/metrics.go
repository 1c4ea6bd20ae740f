package web

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type webMetrics struct {
	streams    *prometheus.GaugeVec
	frames     *prometheus.CounterVec
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
	}
	m.collectors = []prometheus.Collector{m.streams, m.frames}
	return m
}

func (m *webMetrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range m.collectors {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}
