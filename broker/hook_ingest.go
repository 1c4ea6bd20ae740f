package broker

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
)

// ingestHook hands telemetry publishes to the sink and tracks presence.
// mochi runs OnPublish on the publishing client's own goroutine, so it does
// only a prefix check and a non-blocking Offer (QoS 1: a bounded wait).
type ingestHook struct {
	mqtt.HookBase
	cfg    Config
	prefix string // cfg.Prefix + "/"
	log    *slog.Logger
	waiter Waiter
	ctx    context.Context // cancelled when the broker closes, to end QoS 1 waits
	cancel context.CancelFunc

	closing  atomic.Bool
	inflight atomic.Int64 // OnPublish calls inside the sink

	offered  prometheus.Counter
	dropped  *prometheus.CounterVec
	clients  sync.Map // *mqtt.Client -> *clientDevices
	presence presence
}

// clientDevices is the set of devices one MQTT session publishes for. In
// anonymous mode a session makes its devices present by publishing for them.
type clientDevices struct {
	mu      sync.Mutex // guards the fields below
	last    string     // the device of the previous publish: the fast path
	devices map[string]struct{}
}

// presence counts the sessions of each device; a device is online while it
// has at least one.
type presence struct {
	mu       sync.Mutex // guards sessions
	sessions map[string]int
}

func newIngestHook(cfg Config, log *slog.Logger) *ingestHook {
	ctx, cancel := context.WithCancel(context.Background())
	h := &ingestHook{
		cfg:    cfg,
		prefix: cfg.Prefix + "/",
		log:    log,
		ctx:    ctx,
		cancel: cancel,
		offered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_mqtt_telemetry_publishes_total",
			Help: "Telemetry publishes handed to ingest.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telegauge_mqtt_telemetry_dropped_total",
			Help: "Telemetry publishes refused because ingest was full, by QoS.",
		}, []string{"qos"}),
		presence: presence{sessions: make(map[string]int)},
	}
	h.waiter, _ = cfg.Sink.(Waiter)
	return h
}

// ID implements mqtt.Hook.
func (h *ingestHook) ID() string { return "telegauge-ingest" }

// Provides implements mqtt.Hook.
func (h *ingestHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnPublish, mqtt.OnDisconnect}, []byte{b})
}

// OnPublish implements mqtt.Hook.
func (h *ingestHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if len(pk.TopicName) <= len(h.prefix) || pk.TopicName[:len(h.prefix)] != h.prefix {
		return pk, nil // not telemetry: routed like any MQTT message
	}
	h.inflight.Add(1)
	defer h.inflight.Add(-1)
	if h.closing.Load() {
		return pk, packets.ErrRejectPacket
	}
	now := h.cfg.Now()
	h.track(cl, topicDevice(pk.TopicName, h.prefix), now)

	var ok bool
	if pk.FixedHeader.Qos > 0 && h.waiter != nil {
		ok = h.waiter.OfferWait(h.ctx, pk.TopicName, pk.Payload, now)
	} else {
		ok = h.cfg.Sink.Offer(pk.TopicName, pk.Payload, now)
	}
	if ok {
		h.offered.Inc()
		return pk, nil
	}
	if pk.FixedHeader.Qos == 0 {
		h.dropped.WithLabelValues("0").Inc()
		return pk, packets.ErrRejectPacket
	}
	h.dropped.WithLabelValues("1").Inc()
	if cl.Properties.ProtocolVersion == 5 {
		// PUBACK with "quota exceeded": the device knows to retry later.
		return pk, packets.ErrQuotaExceeded
	}
	// MQTT 3.1.1 has no negative acknowledgement: withhold the PUBACK so the
	// device keeps the message and resends it [MQTT-4.4.0-1].
	return pk, packets.ErrRejectPacket
}

// track makes the device present through this session.
func (h *ingestHook) track(cl *mqtt.Client, device string, now time.Time) {
	if device == "" {
		return
	}
	v, ok := h.clients.Load(cl)
	if !ok {
		v, _ = h.clients.LoadOrStore(cl, &clientDevices{devices: make(map[string]struct{})})
	}
	cd := v.(*clientDevices)
	cd.mu.Lock()
	if cd.last == device {
		cd.mu.Unlock()
		return
	}
	cd.last = device
	_, known := cd.devices[device]
	if !known {
		if len(cd.devices) >= maxDevicesPerSession {
			cd.mu.Unlock()
			return
		}
		cd.devices[device] = struct{}{}
	}
	cd.mu.Unlock()
	if !known {
		h.sessionStarted(device, now)
	}
}

// maxDevicesPerSession bounds what one anonymous session can mark present
// (a gateway publishing for many devices is fine; a flood of names is not).
const maxDevicesPerSession = 10_000

// OnDisconnect implements mqtt.Hook.
func (h *ingestHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	v, ok := h.clients.LoadAndDelete(cl)
	if !ok {
		return
	}
	cd := v.(*clientDevices)
	cd.mu.Lock()
	devices := cd.devices
	cd.devices = nil
	cd.mu.Unlock()
	now := h.cfg.Now()
	for d := range devices {
		h.sessionEnded(d, now)
	}
}

func (h *ingestHook) sessionStarted(device string, now time.Time) {
	h.presence.mu.Lock()
	h.presence.sessions[device]++
	first := h.presence.sessions[device] == 1
	h.presence.mu.Unlock()
	if first && h.cfg.OnPresence != nil {
		h.cfg.OnPresence(device, true, now)
	}
}

func (h *ingestHook) sessionEnded(device string, now time.Time) {
	h.presence.mu.Lock()
	h.presence.sessions[device]--
	last := h.presence.sessions[device] <= 0
	if last {
		delete(h.presence.sessions, device)
	}
	h.presence.mu.Unlock()
	if last && h.cfg.OnPresence != nil {
		h.cfg.OnPresence(device, false, now)
	}
}

// waitIdle ends QoS 1 waits and waits up to timeout for OnPublish calls in
// progress to finish, so that a publish the broker accepted reaches the sink
// before ingest drains.
func (h *ingestHook) waitIdle(timeout time.Duration) {
	h.cancel()
	deadline := time.Now().Add(timeout)
	for h.inflight.Load() > 0 && time.Now().Before(deadline) {
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}
