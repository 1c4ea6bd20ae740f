package broker

import (
	"errors"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

func (b *Broker) registerMetrics(r prometheus.Registerer) error {
	info := b.srv.Info
	clients := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telegauge_mqtt_connections",
		Help: "Connected MQTT clients.",
	}, func() float64 { return float64(atomic.LoadInt64(&info.ClientsConnected)) })
	received := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "telegauge_mqtt_messages_received_total",
		Help: "MQTT PUBLISH packets received, on any topic.",
	}, func() float64 { return float64(atomic.LoadInt64(&info.MessagesReceived)) })
	inflightDropped := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "telegauge_mqtt_inflight_dropped_total",
		Help: "QoS 1 and 2 messages to clients dropped because the client's window (--mqtt-max-inflight) was full.",
	}, func() float64 { return float64(atomic.LoadInt64(&info.InflightDropped)) })
	var errs []error
	for _, c := range []prometheus.Collector{clients, received, inflightDropped, b.hook.offered, b.hook.dropped,
		b.auth.failures, b.auth.denied, b.limits.refusals, b.limits.keepAlives} {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}
