package web

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type webMetrics struct {
	streams *prometheus.GaugeVec
	frames  *prometheus.CounterVec
	exports prometheus.Gauge
	// connsRefused counts connections over the per-address limit.
	connsRefused prometheus.Counter
	collectors   []prometheus.Collector
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
		connsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_http_connections_refused_total",
			Help: "HTTP connections closed at once for being over --http-max-conns-per-ip from one address.",
		}),
	}
	m.collectors = []prometheus.Collector{m.streams, m.frames, m.exports, m.connsRefused}
	return m
}

func (m *webMetrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range m.collectors {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}
