package dashboard

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type hubMetrics struct {
	frames     prometheus.Counter
	readings   prometheus.Counter
	messages   prometheus.Counter
	gaps       prometheus.Counter
	resets     prometheus.Counter
	slow       prometheus.Counter
	viewers    *prometheus.GaugeVec
	collectors []prometheus.Collector
}

func newHubMetrics(h *Hub) *hubMetrics {
	m := &hubMetrics{
		frames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_hub_frames_total",
			Help: "Live frames built (each carries every reading since the previous one).",
		}),
		readings: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_hub_readings_total",
			Help: "Readings framed for live delivery.",
		}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_hub_messages_encoded_total",
			Help: "Frame encodings: one per frame per distinct subscription with matching readings.",
		}),
		gaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_hub_gaps_total",
			Help: "Times a slow viewer was skipped ahead and sent a gap event.",
		}),
		resets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_hub_resets_total",
			Help: "Resumes refused because the cursor was unknown or too old.",
		}),
		slow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_hub_slow_disconnects_total",
			Help: "Viewers disconnected because they could not keep up even after skipping ahead.",
		}),
		viewers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "telegauge_live_connections",
			Help: "Live viewers, by transport.",
		}, []string{"transport"}),
	}
	ring := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telegauge_hub_resume_ring_bytes",
		Help: "Estimated bytes held by the resume ring.",
	}, func() float64 {
		h.mu.Lock()
		defer h.mu.Unlock()
		return float64(h.ringBytes)
	})
	m.collectors = []prometheus.Collector{m.frames, m.readings, m.messages, m.gaps, m.resets, m.slow, m.viewers, ring}
	return m
}

func (m *hubMetrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range m.collectors {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}
