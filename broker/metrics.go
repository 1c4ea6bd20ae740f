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
	var errs []error
	for _, c := range []prometheus.Collector{clients, received, b.hook.offered, b.hook.dropped, b.auth.failures, b.auth.denied} {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}
