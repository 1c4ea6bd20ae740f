package bus

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the bus's Prometheus metrics.
type metrics struct {
	sent, received           prometheus.Counter
	bytesSent, bytesReceived prometheus.Counter
	reconnects               prometheus.Counter
	dropped                  *prometheus.CounterVec
	collectors               []prometheus.Collector
}

func newMetrics(b *Bus) *metrics {
	m := &metrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_cluster_readings_sent_total",
			Help: "Readings this node accepted from its devices and published to the other nodes.",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_cluster_readings_received_total",
			Help: "Readings from other nodes applied on this node.",
		}),
		bytesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_cluster_bytes_sent_total",
			Help: "Bytes of readings messages published to NATS.",
		}),
		bytesReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_cluster_bytes_received_total",
			Help: "Bytes of readings messages received from NATS.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_cluster_reconnects_total",
			Help: "Times the NATS connection came back after being lost.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telegauge_cluster_readings_dropped_total",
			Help: "Readings not exchanged, by reason: queue (publisher behind), send (NATS refused: reconnect buffer full), apply (over this node's series or device limit), corrupt and slow_consumer (messages, not readings).",
		}, []string{"reason"}),
	}
	for _, r := range []string{"queue", "send", "apply", "corrupt", "slow_consumer"} {
		m.dropped.WithLabelValues(r)
	}
	m.collectors = []prometheus.Collector{
		m.sent, m.received, m.bytesSent, m.bytesReceived, m.reconnects, m.dropped,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "telegauge_cluster_connected",
			Help: "1 while the node is connected to NATS, 0 while it is not (it then serves its own devices only).",
		}, func() float64 {
			if b.Connected() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "telegauge_cluster_nodes",
			Help: "Other nodes heard from within the node timeout.",
		}, func() float64 { return float64(len(b.Nodes())) }),
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
