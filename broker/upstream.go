package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
)

// UpstreamConfig configures an Upstream: telemetry read from an existing
// MQTT broker or cluster (Mosquitto, EMQX, HiveMQ) instead of the embedded
// one. Zero values mean the documented defaults.
type UpstreamConfig struct {
	// URL is the broker: tcp:// or mqtt:// (plain), ssl://, tls:// or
	// mqtts:// (TLS), ws:// or wss:// (MQTT over WebSocket). Required.
	URL string `yaml:"mqtt-upstream"`
	// Username and Password authenticate this node at the broker; empty
	// means anonymous.
	Username string `yaml:"-"`
	Password string `yaml:"-"`
	// TLSConfig configures ssl://, mqtts:// and wss:// brokers; nil means
	// the system's roots.
	TLSConfig *tls.Config `yaml:"-"`
	// Group is the shared-subscription group: nodes of one group split the
	// readings between them (each reading goes to one of them). Empty
	// means "telegauge".
	Group string `yaml:"group"`
	// ClientID is this node's MQTT client id. With a persistent session it
	// must be stable across restarts and unique among the nodes. Required.
	ClientID string `yaml:"client-id"`
	// CleanSession asks the broker to forget this node's session when it
	// disconnects. Off by default: the broker then keeps the subscription
	// and queues QoS 1 readings while the node restarts.
	CleanSession bool `yaml:"clean-session"`
	// Prefix is the first topic level of telemetry. Empty means "telemetry".
	Prefix string `yaml:"prefix"`
	// PresenceWindow is how long a device counts as online after its last
	// reading (the upstream broker does not tell us who is connected).
	// Zero means 1 minute.
	PresenceWindow time.Duration `yaml:"presence-window"`
	// KeepAlive is the MQTT keep-alive towards the broker. Zero means 30 s.
	KeepAlive time.Duration `yaml:"keepalive"`
	// ConnectTimeout bounds one connection attempt and the wait for a
	// SUBACK. Zero means 10 s.
	ConnectTimeout time.Duration `yaml:"connect-timeout"`
	// MaxReconnectInterval caps the backoff between reconnection attempts.
	// Zero means 30 s.
	MaxReconnectInterval time.Duration `yaml:"max-reconnect-interval"`
	// Sink receives every publish under Prefix, on paho's dispatch
	// goroutine, one at a time. Required.
	Sink Sink `yaml:"-"`
	// OnPresence is told when a device goes online or offline (see
	// PresenceWindow). May be nil. It must not block.
	OnPresence func(device string, online bool, at time.Time) `yaml:"-"`
	// Now gives arrival times; nil means time.Now.
	Now func() time.Time `yaml:"-"`
	// Registerer receives the upstream metrics; nil means none.
	Registerer prometheus.Registerer `yaml:"-"`
}

// Upstream states, for Ready and telegauge_upstream_connected.
const (
	upDisconnected int32 = iota
	upConnected          // connected, subscription not (yet) confirmed
	upSubscribed         // connected and subscribed: readings flow
)

// maxUpstreamDevices bounds the devices whose presence is tracked.
const maxUpstreamDevices = 100_000

// Upstream ingests telemetry from an external MQTT broker through a
// shared subscription, with the Eclipse paho client.
//
// Flow control: paho calls the message handler on its one dispatch
// goroutine (order matters), so while Sink.Offer works the next message is
// not read, TCP fills up and the broker holds back (its in-flight window
// for this client, max_inflight_messages in Mosquitto). A message is
// acknowledged (PUBACK) only after the sink took it; one the sink refused,
// or one arriving while the node shuts down, is never acknowledged, so the
// broker sends it again when this session reconnects.
type Upstream struct {
	cfg    UpstreamConfig
	log    *slog.Logger
	client paho.Client
	filter string // $share/{group}/{prefix}/#
	prefix string // cfg.Prefix + "/"

	// connected receives a value when paho (re)connects; Run subscribes.
	connected chan struct{}
	state     atomic.Int32
	lastErr   atomic.Pointer[string]

	closing   atomic.Bool
	inflight  atomic.Int64 // handler calls in progress
	closeOnce sync.Once

	presMu   sync.Mutex           // guards lastSeen
	lastSeen map[string]time.Time // online devices -> time of their last reading

	messages     prometheus.Counter
	refused      prometheus.Counter
	ignored      prometheus.Counter
	connects     prometheus.Counter
	losses       prometheus.Counter
	failures     prometheus.Counter
	subFailures  prometheus.Counter
	connectedVec prometheus.GaugeFunc
}

// NewUpstream validates cfg and builds the client; Run connects it.
func NewUpstream(cfg UpstreamConfig, log *slog.Logger) (*Upstream, error) {
	if cfg.Sink == nil {
		return nil, errors.New("broker: UpstreamConfig.Sink is required")
	}
	if err := checkUpstreamURL(cfg.URL); err != nil {
		return nil, err
	}
	if cfg.ClientID == "" {
		return nil, errors.New("broker: UpstreamConfig.ClientID is required")
	}
	if cfg.Group == "" {
		cfg.Group = "telegauge"
	}
	if strings.ContainsAny(cfg.Group, "/+#") {
		return nil, fmt.Errorf("broker: shared subscription group %q may not contain / + #", cfg.Group)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "telemetry"
	}
	if cfg.PresenceWindow <= 0 {
		cfg.PresenceWindow = time.Minute
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 30 * time.Second
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.MaxReconnectInterval <= 0 {
		cfg.MaxReconnectInterval = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "upstream")
	u := &Upstream{
		cfg:       cfg,
		log:       log,
		filter:    "$share/" + cfg.Group + "/" + cfg.Prefix + "/#",
		prefix:    cfg.Prefix + "/",
		connected: make(chan struct{}, 1),
		lastSeen:  make(map[string]time.Time),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_upstream_messages_total",
			Help: "Messages received from the upstream MQTT broker.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_upstream_refused_total",
			Help: "Upstream messages not acknowledged because ingest had stopped (the broker sends them again).",
		}),
		ignored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_upstream_ignored_total",
			Help: "Upstream messages outside the telemetry prefix (acknowledged and dropped).",
		}),
		connects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_upstream_connects_total",
			Help: "Successful connections to the upstream MQTT broker.",
		}),
		losses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_upstream_connection_losses_total",
			Help: "Connections to the upstream MQTT broker lost.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_upstream_connect_errors_total",
			Help: "Failed connection attempts to the upstream MQTT broker.",
		}),
		subFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_upstream_subscribe_errors_total",
			Help: "Failed or refused subscriptions at the upstream MQTT broker.",
		}),
	}
	u.connectedVec = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "telegauge_upstream_connected",
		Help: "1 while connected and subscribed to the upstream MQTT broker, else 0.",
	}, func() float64 {
		if u.state.Load() == upSubscribed {
			return 1
		}
		return 0
	})

	opts := paho.NewClientOptions().
		AddBroker(cfg.URL).
		SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		SetCleanSession(cfg.CleanSession).
		// One dispatch goroutine, handler inline: Offer's time is the
		// flow control (see Upstream).
		SetOrderMatters(true).
		// PUBACK only once the sink has the reading.
		SetAutoAckDisabled(true).
		// A persistent session may deliver queued messages right after
		// CONNACK, before our SUBSCRIBE: without a default handler paho
		// would leave them unacknowledged.
		SetDefaultPublishHandler(u.handle).
		SetKeepAlive(cfg.KeepAlive).
		SetPingTimeout(cfg.ConnectTimeout).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetWriteTimeout(cfg.ConnectTimeout).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(cfg.MaxReconnectInterval).
		// Run subscribes on every connection; paho must not replay old
		// SUBSCRIBEs from its store as well.
		SetResumeSubs(false).
		SetOnConnectHandler(func(paho.Client) {
			u.state.Store(upConnected)
			u.connects.Inc()
			select {
			case u.connected <- struct{}{}:
			default: // Run has one pending already
			}
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			u.state.Store(upDisconnected)
			u.losses.Inc()
			u.setErr(fmt.Sprintf("connection lost: %v", err))
			u.log.Warn("upstream broker connection lost; reconnecting", "err", err)
		}).
		SetConnectionNotificationHandler(func(_ paho.Client, n paho.ConnectionNotification) {
			if f, ok := n.(paho.ConnectionNotificationFailed); ok {
				u.failures.Inc()
				u.setErr(fmt.Sprintf("connect: %v", f.Reason))
				u.log.Warn("upstream broker connect failed; retrying", "err", f.Reason)
			}
		})
	if cfg.TLSConfig != nil {
		opts.SetTLSConfig(cfg.TLSConfig)
	}
	u.client = paho.NewClient(opts)
	u.setErr("not connected yet")
	if cfg.Registerer != nil {
		var errs []error
		for _, c := range []prometheus.Collector{u.connectedVec, u.messages, u.refused, u.ignored,
			u.connects, u.losses, u.failures, u.subFailures} {
			errs = append(errs, cfg.Registerer.Register(c))
		}
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("broker: register upstream metrics: %w", err)
		}
	}
	return u, nil
}

// checkUpstreamURL accepts the schemes paho dials.
func checkUpstreamURL(raw string) error {
	if raw == "" {
		return errors.New("broker: the upstream broker URL is required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("broker: upstream broker URL: %w", err)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
	default:
		return fmt.Errorf("broker: upstream broker URL %s: scheme must be tcp, mqtt, ssl, tls, mqtts, ws or wss", redactURL(raw))
	}
	if u.Host == "" {
		return fmt.Errorf("broker: upstream broker URL %s has no host", redactURL(raw))
	}
	return nil
}

// redactURL drops any password from a URL, for logs and /readyz.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// URL returns the broker's URL without any password in it.
func (u *Upstream) URL() string { return redactURL(u.cfg.URL) }

// Filter returns the shared subscription, $share/{group}/{prefix}/#.
func (u *Upstream) Filter() string { return u.filter }

// ClientID returns this node's MQTT client id at the broker.
func (u *Upstream) ClientID() string { return u.cfg.ClientID }

func (u *Upstream) setErr(s string) { u.lastErr.Store(&s) }

// Ready returns nil while the node is connected and subscribed, or an
// error saying why readings are not flowing.
func (u *Upstream) Ready() error {
	switch u.state.Load() {
	case upSubscribed:
		return nil
	case upConnected:
		return fmt.Errorf("upstream broker %s: connected, not subscribed (%s)", u.URL(), *u.lastErr.Load())
	default:
		return fmt.Errorf("upstream broker %s: %s", u.URL(), *u.lastErr.Load())
	}
}

// Run connects to the broker (retrying, with backoff, until it answers),
// subscribes on every (re)connection, expires presence, and returns once
// ctx ends and the client has disconnected.
func (u *Upstream) Run(ctx context.Context) error {
	u.log.Info("connecting to the upstream MQTT broker", "url", u.URL(), "client", u.cfg.ClientID,
		"filter", u.filter, "cleanSession", u.cfg.CleanSession)
	// With ConnectRetry the token completes only once connected (or on
	// Disconnect); OnConnect tells the loop below.
	u.client.Connect()
	sweep := time.NewTicker(max(u.cfg.PresenceWindow/4, 100*time.Millisecond))
	defer sweep.Stop()
	var retry *time.Timer
	var retryC <-chan time.Time
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return u.Close()
		case <-u.connected:
			if !u.subscribe(ctx) && ctx.Err() == nil {
				if retry == nil {
					retry = time.NewTimer(5 * time.Second)
				} else {
					retry.Reset(5 * time.Second)
				}
				retryC = retry.C
			}
		case <-retryC:
			retryC = nil
			if u.client.IsConnectionOpen() && !u.subscribe(ctx) && ctx.Err() == nil {
				retry.Reset(5 * time.Second)
				retryC = retry.C
			}
		case <-sweep.C:
			u.expire(u.cfg.Now())
		}
	}
}

// subscribe (re)subscribes at QoS 1 and reports whether the broker
// granted it. With a persistent session the broker usually still has the
// subscription; subscribing again is harmless and covers an expired one.
func (u *Upstream) subscribe(ctx context.Context) bool {
	tok := u.client.Subscribe(u.filter, 1, nil) // messages go to the default handler
	timeout := time.NewTimer(u.cfg.ConnectTimeout)
	defer timeout.Stop()
	var err error
	select {
	case <-tok.Done():
		err = tok.Error()
	case <-timeout.C:
		err = errors.New("no SUBACK in time")
	case <-ctx.Done():
		return false
	}
	if err == nil {
		// paho keys the result by the filter without its $share/{group}/;
		// there is one filter.
		granted := byte(0x80)
		for _, q := range tok.(*paho.SubscribeToken).Result() {
			granted = q
		}
		switch {
		case granted == 0x80:
			err = errors.New("the broker refused the subscription (SUBACK 0x80: check its ACL and that it supports shared subscriptions)")
		case granted == 0:
			u.log.Warn("upstream broker granted QoS 0 only: readings may be lost in a reconnection", "filter", u.filter)
		}
	}
	if err != nil {
		u.subFailures.Inc()
		u.setErr("subscribe " + u.filter + ": " + err.Error())
		u.log.Error("upstream subscribe failed; retrying", "filter", u.filter, "err", err)
		return false
	}
	if u.client.IsConnectionOpen() {
		u.state.CompareAndSwap(upConnected, upSubscribed)
	}
	u.log.Info("subscribed at the upstream MQTT broker", "url", u.URL(), "filter", u.filter)
	return true
}

// handle is paho's message handler, on its dispatch goroutine.
func (u *Upstream) handle(_ paho.Client, m paho.Message) {
	// inflight before closing: Close sets closing, then waits for
	// inflight to reach zero, so no handler acknowledges after Close.
	u.inflight.Add(1)
	defer u.inflight.Add(-1)
	if u.closing.Load() {
		return // unacknowledged: the broker sends it again to this session
	}
	u.messages.Inc()
	topic := m.Topic()
	if !strings.HasPrefix(topic, u.prefix) {
		u.ignored.Inc()
		m.Ack()
		return
	}
	now := u.cfg.Now()
	u.seen(topicDevice(topic, u.prefix), now)
	if !u.cfg.Sink.Offer(topic, m.Payload(), now) {
		u.refused.Inc()
		return
	}
	m.Ack()
}

// seen marks device online as of now.
func (u *Upstream) seen(device string, now time.Time) {
	if !validDeviceName(device) {
		return // ingest rejects and counts it; it has no presence
	}
	u.presMu.Lock()
	_, online := u.lastSeen[device]
	if !online && len(u.lastSeen) >= maxUpstreamDevices {
		u.presMu.Unlock()
		return
	}
	u.lastSeen[device] = now
	u.presMu.Unlock()
	if !online && u.cfg.OnPresence != nil {
		u.cfg.OnPresence(device, true, now)
	}
}

// expire marks offline the devices silent for PresenceWindow.
func (u *Upstream) expire(now time.Time) {
	var gone []string
	u.presMu.Lock()
	for d, t := range u.lastSeen {
		if now.Sub(t) >= u.cfg.PresenceWindow {
			gone = append(gone, d)
			delete(u.lastSeen, d)
		}
	}
	u.presMu.Unlock()
	if u.cfg.OnPresence == nil {
		return
	}
	for _, d := range gone {
		u.cfg.OnPresence(d, false, now)
	}
}

// Close stops taking messages, waits (briefly) for the one inside the
// sink, then disconnects. The session stays at the broker unless
// CleanSession is set. It is idempotent.
func (u *Upstream) Close() error {
	u.closeOnce.Do(func() {
		u.closing.Store(true)
		// The handler acknowledges before it returns, and paho writes
		// acknowledgements before a later DISCONNECT, so what was taken is
		// acknowledged and not sent again.
		waitZero(&u.inflight, 5*time.Second)
		u.client.Disconnect(1000)
		u.state.Store(upDisconnected)
		u.setErr("stopped")
	})
	return nil
}
