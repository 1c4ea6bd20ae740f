package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/prometheus/client_golang/prometheus"
)

// Sink receives telemetry publishes, on the publishing connection's
// goroutine. Offer must not wait for anything slow (a viewer, the disk): the
// time it takes is time that connection is not read, which is how a busy
// server slows a device down (TCP and MQTT flow control). A sink may use
// that on purpose, holding a publish to slow a device over its rate; it
// should then let go of held publishes before Close, which waits for the
// publishes inside Offer. It returns false when it cannot take the message
// at all (shutting down).
type Sink interface {
	Offer(topic string, payload []byte, at time.Time) bool
}

// Config configures a Broker. Zero values mean the documented defaults.
type Config struct {
	// Addr is the MQTT TCP listener. Empty means 127.0.0.1:1883.
	Addr string `yaml:"mqtt-addr"`
	// WSAddr, when set, is an MQTT-over-WebSocket listener (path /mqtt
	// or any path) for devices behind firewalls that only pass HTTP.
	WSAddr string `yaml:"mqtt-ws-addr"`
	// TLSAddr, when set, is an MQTT over TLS listener (mqtts, port 8883 by
	// convention); TLSConfig must then hold its certificate.
	TLSAddr string `yaml:"mqtt-tls-addr"`
	// TLSConfig is the TLS listener's configuration.
	TLSConfig *tls.Config `yaml:"-"`
	// Prefix is the first topic level of telemetry. Empty means "telemetry".
	Prefix string `yaml:"prefix"`
	// MaxPacketBytes caps an MQTT packet; a client sending a larger one is
	// disconnected (limits.go). Zero means 256 KiB.
	MaxPacketBytes int `yaml:"max-packet-bytes"`
	// MaxInflight is each client's QoS 1 and 2 window, both ways: QoS 2
	// publishes it may have unreleased (the Receive Maximum announced in
	// CONNACK; one more and it is disconnected), and messages stored for
	// it, sent or waiting (beyond it they are dropped and counted). Zero
	// means 128; at most 65,535.
	MaxInflight int `yaml:"max-inflight"`
	// MaxConnsPerIP caps the connections from one IP address (IPv6: one
	// /64). Loopback peers are not counted unless LimitLoopback is set.
	// Zero means 100; negative means no limit.
	MaxConnsPerIP int `yaml:"max-conns-per-ip"`
	// LimitLoopback applies MaxConnsPerIP to loopback peers too. Off by
	// default: the simulators, a local gateway or a reverse proxy in front
	// of the WebSocket listener all connect from loopback.
	LimitLoopback bool `yaml:"limit-loopback"`
	// MaxKeepAlive is the longest keep-alive a client may have: one asking
	// for none or for more is given this, so a silent connection is cut
	// after one and a half of it. Whole seconds, from 1 s to 65,535 s.
	// Zero means 20 minutes.
	MaxKeepAlive time.Duration `yaml:"max-keepalive"`
	// ConnectTimeout is how long a new connection may take to send its
	// CONNECT, a TLS handshake included (on the WebSocket listener it runs
	// from the HTTP upgrade); one that has not is closed and counted. Zero
	// means 10 s.
	ConnectTimeout time.Duration `yaml:"connect-timeout"`
	// Credentials are the device credentials; nil means anonymous devices
	// are welcome (loopback development).
	Credentials *Credentials `yaml:"-"`
	// Sink receives every publish under Prefix. Required.
	Sink Sink `yaml:"-"`
	// OnPresence is told when a device goes online or offline. May be nil.
	// It is called from connection goroutines and must not block.
	OnPresence func(device string, online bool, at time.Time) `yaml:"-"`
	// Now gives arrival times; nil means time.Now.
	Now func() time.Time `yaml:"-"`
	// Registerer receives the broker's metrics; nil means none.
	Registerer prometheus.Registerer `yaml:"-"`
}

// Broker is the embedded MQTT server.
type Broker struct {
	cfg       Config
	log       *slog.Logger
	srv       *mqtt.Server
	hook      *ingestHook
	auth      *authHook
	limits    *limits
	tcp       *tcpListener
	tls       *listeners.TCP
	closeOnce sync.Once
	served    chan struct{}
}

// New builds the MQTT server and binds its listeners; Run serves them.
func New(cfg Config, log *slog.Logger) (*Broker, error) {
	if cfg.Sink == nil {
		return nil, errors.New("broker: Config.Sink is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:1883"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "telemetry"
	}
	cfg.setLimitDefaults()
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Credentials == nil {
		cfg.Credentials = NewCredentials()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "broker")

	caps := mqtt.NewDefaultServerCapabilities()
	applyLimits(caps, cfg)
	// Sessions of devices that went away are kept a day, not forever, so a
	// fleet of one-off client ids cannot grow memory without bound.
	caps.MaximumSessionExpiryInterval = 24 * 60 * 60
	// mochi's default outbound queue is 8,192 slots per client, 64 KiB of
	// channel per connection before anything is sent; devices receive
	// little (acknowledgements, the odd command), so 256 is plenty. With it
	// a connected device costs about 45 KiB of server memory in all
	// (measured with 5,000 devices), two goroutine stacks included.
	caps.MaximumClientWritesPending = 256
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		// mochi logs every connection at Info; ours are counted in metrics.
		Logger: slog.New(quietHandler{log.With("lib", "mochi").Handler(), slog.LevelError}),
	})
	b := &Broker{cfg: cfg, log: log, srv: srv, served: make(chan struct{})}
	b.hook = newIngestHook(cfg, log)
	b.auth = newAuthHook(cfg, log)
	b.limits = newLimits(cfg, log, b.hook)
	// Before the ingest hook, whose OnDisconnect forgets the session's
	// devices, which the limits hook names.
	if err := srv.AddHook(b.limits, nil); err != nil {
		return nil, fmt.Errorf("broker: add limits hook: %w", err)
	}
	if err := srv.AddHook(b.auth, nil); err != nil {
		return nil, fmt.Errorf("broker: add auth hook: %w", err)
	}
	kick := b.kick
	cfg.Credentials.changed.Store(&kick)
	if err := srv.AddHook(b.hook, nil); err != nil {
		return nil, fmt.Errorf("broker: add ingest hook: %w", err)
	}
	b.tcp = newTCPListener("tcp", cfg.Addr)
	if err := srv.AddListener(b.limits.wrap(b.withConnectTimeout(b.tcp))); err != nil {
		return nil, fmt.Errorf("broker: listen on %s: %w", cfg.Addr, err)
	}
	if cfg.TLSAddr != "" {
		if cfg.TLSConfig == nil || (len(cfg.TLSConfig.Certificates) == 0 && cfg.TLSConfig.GetCertificate == nil) {
			b.Close()
			return nil, errors.New("broker: the MQTT TLS listener needs a certificate")
		}
		b.tls = listeners.NewTCP(listeners.Config{ID: "tls", Address: cfg.TLSAddr, TLSConfig: cfg.TLSConfig})
		if err := srv.AddListener(b.limits.wrap(b.withConnectTimeout(b.tls))); err != nil {
			b.Close()
			return nil, fmt.Errorf("broker: listen for MQTT over TLS on %s: %w", cfg.TLSAddr, err)
		}
	}
	if cfg.WSAddr != "" {
		ws := listeners.NewWebsocket(listeners.Config{ID: "ws", Address: cfg.WSAddr})
		if err := srv.AddListener(b.limits.wrap(b.withConnectTimeout(ws))); err != nil {
			b.Close()
			return nil, fmt.Errorf("broker: listen for MQTT over WebSocket on %s: %w", cfg.WSAddr, err)
		}
	}
	if cfg.Registerer != nil {
		if err := b.registerMetrics(cfg.Registerer); err != nil {
			b.Close()
			return nil, fmt.Errorf("broker: register metrics: %w", err)
		}
	}
	return b, nil
}

// Addr returns the address the TCP listener is bound to.
func (b *Broker) Addr() string { return b.tcp.Address() }

// TLSAddr returns the address the TLS listener is bound to, or "".
func (b *Broker) TLSAddr() string {
	if b.tls == nil {
		return ""
	}
	return b.tls.Address()
}

// Run serves MQTT until ctx ends, then closes the broker.
func (b *Broker) Run(ctx context.Context) error {
	if err := b.srv.Serve(); err != nil {
		return fmt.Errorf("broker: serve: %w", err)
	}
	close(b.served)
	b.log.Info("MQTT listening", "addr", b.Addr(), "ws", b.cfg.WSAddr)
	<-ctx.Done()
	return b.Close()
}

// Close stops the listeners, disconnects every client and waits (briefly)
// for publishes already inside the hook to reach the sink. It is idempotent.
func (b *Broker) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.hook.closing.Store(true)
		// mochi's Close is not idempotent; the Once makes ours so.
		err = b.srv.Close()
		b.hook.waitIdle(5 * time.Second)
	})
	return err
}

// topicDevice returns the device of a telemetry topic, or "".
func topicDevice(topic, prefix string) string {
	rest, ok := strings.CutPrefix(topic, prefix)
	if !ok {
		return ""
	}
	dev, _, _ := strings.Cut(rest, "/")
	return dev
}
