package broker

import (
	"bytes"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
)

// ingestHook hands telemetry publishes to the sink and tracks presence.
// mochi runs OnPublish on the publishing client's own goroutine; the sink
// does its work there and never waits on viewers or storage.
type ingestHook struct {
	mqtt.HookBase
	cfg    Config
	prefix string // cfg.Prefix + "/"
	log    *slog.Logger

	closing  atomic.Bool
	inflight atomic.Int64 // OnPublish calls inside the sink

	offered  prometheus.Counter
	dropped  *prometheus.CounterVec
	clients  sync.Map // *mqtt.Client -> *clientDevices
	presence presence
	routes   routes
}

// routes tracks the MQTT subscriptions that could match a telemetry topic.
// While there are none, telemetry publishes skip mochi's subscriber lookup,
// which allocates on every publish and was an eighth of the CPU of a
// saturated server; an operator running `mosquitto_sub -t 'telemetry/#'`
// turns routing back on at once. Entries are keyed by client id, as MQTT
// sessions are, and kept until mochi reports the subscription gone, so any
// doubt errs towards routing.
type routes struct {
	mu       sync.Mutex                     // guards byClient
	byClient map[string]map[string]struct{} // client id -> filters that could match telemetry
	n        atomic.Int64                   // entries in byClient, read on every publish
}

// clientDevices is the set of devices one MQTT session publishes for. In
// anonymous mode a session makes its devices present by publishing for them.
type clientDevices struct {
	mu      sync.Mutex // guards the fields below
	last    string     // the device of the previous publish: the fast path
	devices map[string]struct{}
	publish uint32 // telemetry publishes on this session, for yieldEvery
}

// yieldEvery is how many telemetry publishes a session processes before its
// goroutine yields the processor. mochi reads a connection's packets until
// its socket is drained, and ingest runs on that goroutine, so without this
// a thousand saturated devices would each hold a core for a socket's worth
// of messages while the live hub and the viewers' writers, one goroutine
// each, waited their turn behind all of them (measured: a viewer got 6
// frames in 20 s). Yielding every 16 publishes costs a few nanoseconds per
// message and keeps the live path's wait to tens of milliseconds.
const yieldEvery = 16

// presence counts the sessions of each device; a device is online while it
// has at least one.
type presence struct {
	mu       sync.Mutex // guards sessions
	sessions map[string]int
}

func newIngestHook(cfg Config, log *slog.Logger) *ingestHook {
	h := &ingestHook{
		cfg:    cfg,
		prefix: cfg.Prefix + "/",
		log:    log,
		offered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_mqtt_telemetry_publishes_total",
			Help: "Telemetry publishes handed to ingest.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telegauge_mqtt_telemetry_dropped_total",
			Help: "Telemetry publishes refused because ingest had stopped, by QoS.",
		}, []string{"qos"}),
		presence: presence{sessions: make(map[string]int)},
		routes:   routes{byClient: make(map[string]map[string]struct{})},
	}
	return h
}

// ID implements mqtt.Hook.
func (h *ingestHook) ID() string { return "telegauge-ingest" }

// Provides implements mqtt.Hook.
func (h *ingestHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnPublish, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnClientExpired}, []byte{b})
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
	if h.track(cl, topicDevice(pk.TopicName, h.prefix), now) {
		defer runtime.Gosched()
	}

	if h.cfg.Sink.Offer(pk.TopicName, pk.Payload, now) {
		h.offered.Inc()
		if h.routes.n.Load() == 0 && !pk.FixedHeader.Retain {
			// Nobody could receive it over MQTT: acknowledge it (QoS 1)
			// without the subscriber lookup.
			return pk, packets.CodeSuccessIgnore
		}
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

// track makes the device present through this session, and reports whether
// the session is due to yield the processor (see yieldEvery).
func (h *ingestHook) track(cl *mqtt.Client, device string, now time.Time) (yield bool) {
	v, ok := h.clients.Load(cl)
	if !ok {
		v, _ = h.clients.LoadOrStore(cl, &clientDevices{devices: make(map[string]struct{})})
	}
	cd := v.(*clientDevices)
	cd.mu.Lock()
	cd.publish++
	yield = cd.publish%yieldEvery == 0
	if device == "" || cd.last == device {
		cd.mu.Unlock()
		return yield
	}
	cd.last = device
	_, known := cd.devices[device]
	if !known {
		if len(cd.devices) >= maxDevicesPerSession {
			cd.mu.Unlock()
			return yield
		}
		cd.devices[device] = struct{}{}
	}
	cd.mu.Unlock()
	if !known {
		h.sessionStarted(device, now)
	}
	return yield
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

// waitIdle waits up to timeout for OnPublish calls in progress to finish,
// so that a publish the broker accepted reaches the sink before ingest stops.
func (h *ingestHook) waitIdle(timeout time.Duration) { waitZero(&h.inflight, timeout) }

// waitZero waits up to timeout for a count of calls in progress to reach
// zero.
func waitZero(n *atomic.Int64, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for n.Load() > 0 && time.Now().Before(deadline) {
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

// OnSubscribed implements mqtt.Hook.
func (h *ingestHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	h.routes.mu.Lock()
	defer h.routes.mu.Unlock()
	for _, f := range pk.Filters {
		if !mayMatchPrefix(f.Filter, h.cfg.Prefix) {
			continue
		}
		set := h.routes.byClient[cl.ID]
		if set == nil {
			set = make(map[string]struct{})
			h.routes.byClient[cl.ID] = set
		}
		if _, ok := set[f.Filter]; !ok {
			set[f.Filter] = struct{}{}
			h.routes.n.Add(1)
		}
	}
}

// OnUnsubscribed implements mqtt.Hook. mochi reports every removal here:
// UNSUBSCRIBE packets, clean sessions ending and sessions taken over.
func (h *ingestHook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	h.routes.mu.Lock()
	defer h.routes.mu.Unlock()
	set := h.routes.byClient[cl.ID]
	for _, f := range pk.Filters {
		if _, ok := set[f.Filter]; ok {
			delete(set, f.Filter)
			h.routes.n.Add(-1)
		}
	}
	if set != nil && len(set) == 0 {
		delete(h.routes.byClient, cl.ID)
	}
}

// OnClientExpired implements mqtt.Hook: a persistent session ended.
func (h *ingestHook) OnClientExpired(cl *mqtt.Client) {
	h.routes.mu.Lock()
	defer h.routes.mu.Unlock()
	if set, ok := h.routes.byClient[cl.ID]; ok {
		h.routes.n.Add(-int64(len(set)))
		delete(h.routes.byClient, cl.ID)
	}
}

// mayMatchPrefix reports whether a subscription filter could match a topic
// under prefix: its first level (after any $share/{group}/) is the prefix,
// + or #. Filters on $-topics never match ordinary topics [MQTT-4.7.2-1].
func mayMatchPrefix(filter, prefix string) bool {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		_, filter, _ = strings.Cut(rest, "/")
	}
	first, _, _ := strings.Cut(filter, "/")
	return first == prefix || first == "+" || first == "#"
}
