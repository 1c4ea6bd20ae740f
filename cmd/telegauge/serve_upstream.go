package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/telegauge/telegauge/broker"
)

// UpstreamFlags are serve's flags for external broker mode: readings come
// from an existing MQTT broker (--mqtt-upstream) instead of the embedded
// one, whose listeners are then off.
type UpstreamFlags struct {
	MQTTUpstream             string        `name:"mqtt-upstream" help:"Ingest from this existing MQTT broker instead of the embedded one (tcp://, ssl://, ws://, wss://HOST:PORT); the embedded MQTT listeners are then off." placeholder:"URL"`
	MQTTUpstreamUsername     string        `name:"mqtt-upstream-username" help:"Username of this node at the upstream broker."`
	MQTTUpstreamPassword     string        `name:"mqtt-upstream-password" help:"Password at the upstream broker (prefer --mqtt-upstream-password-file or TELEGAUGE_MQTT_UPSTREAM_PASSWORD)."`
	MQTTUpstreamPasswordFile string        `name:"mqtt-upstream-password-file" help:"File holding the password at the upstream broker (one line)." placeholder:"FILE"`
	MQTTUpstreamCAFile       string        `name:"mqtt-upstream-ca-file" help:"PEM CA certificates to trust for an ssl:// or wss:// upstream broker (default: the system's)." placeholder:"FILE"`
	MQTTUpstreamGroup        string        `name:"mqtt-upstream-group" default:"telegauge" help:"Shared subscription group: nodes of one group split the readings ($share/GROUP/PREFIX/#)."`
	MQTTUpstreamClientID     string        `name:"mqtt-upstream-client-id" help:"MQTT client id at the upstream broker; unique per node and stable across restarts (default: telegauge-HOSTNAME-RANDOM, the random part kept in --data-dir)."`
	MQTTUpstreamCleanSession bool          `name:"mqtt-upstream-clean-session" help:"Have the broker forget this node's session when it disconnects, instead of queueing its share of QoS 1 readings until it is back."`
	MQTTUpstreamPresence     time.Duration `name:"mqtt-upstream-presence-window" default:"1m" help:"With --mqtt-upstream, a device is online while it published within this window."`
}

// newUpstream builds the upstream client (broker/upstream.go); the
// embedded broker is not built.
func (n *node) newUpstream(log *slog.Logger) (*broker.Upstream, error) {
	c := n.cfg
	for _, l := range []struct{ flag, value string }{{"--mqtt-ws-addr", c.MQTTWSAddr}, {"--mqtt-tls-addr", c.MQTTTLSAddr}} {
		if l.value != "" {
			return nil, fmt.Errorf("%s has no effect with --mqtt-upstream: devices connect to the upstream broker, and the embedded MQTT listeners are off", l.flag)
		}
	}
	if c.Demo > 0 {
		return nil, fmt.Errorf("--demo needs the embedded broker; with --mqtt-upstream run `telegauge sim devices --broker %s` instead", c.MQTTUpstream)
	}
	password := c.MQTTUpstreamPassword
	if c.MQTTUpstreamPasswordFile != "" {
		if password != "" {
			return nil, errors.New("--mqtt-upstream-password and --mqtt-upstream-password-file are exclusive")
		}
		b, err := os.ReadFile(c.MQTTUpstreamPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("read --mqtt-upstream-password-file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	var tlsCfg *tls.Config
	if c.MQTTUpstreamCAFile != "" {
		pool, err := readCertPool("--mqtt-upstream-ca-file", c.MQTTUpstreamCAFile)
		if err != nil {
			return nil, err
		}
		tlsCfg = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if u, err := url.Parse(c.MQTTUpstream); err == nil && password != "" &&
		(u.Scheme == "tcp" || u.Scheme == "mqtt" || u.Scheme == "ws") && !isLoopback(u.Host) {
		log.Warn("the upstream broker password travels in clear text: use ssl:// or wss://", "url", u.Redacted())
	}
	clientID, clean := c.MQTTUpstreamClientID, c.MQTTUpstreamCleanSession
	if clientID == "" {
		var stable bool
		clientID, stable = c.upstreamClientID(log)
		if !stable && !clean {
			// A persistent session under an id the next run will not use
			// would queue this node's share at the broker for nobody.
			log.Warn("no stable client id for the upstream broker (--db memory): using a clean session; set --mqtt-upstream-client-id to keep readings across restarts", "client", clientID)
			clean = true
		}
	}
	// One subscription carries every device: holding it for one device
	// over its rate would stall them all, so over-rate devices are
	// counted (telegauge_device_throttled_*) but not slowed.
	n.agg.StopThrottling()
	return broker.NewUpstream(broker.UpstreamConfig{
		URL:            c.MQTTUpstream,
		Username:       c.MQTTUpstreamUsername,
		Password:       password,
		TLSConfig:      tlsCfg,
		Group:          c.MQTTUpstreamGroup,
		ClientID:       clientID,
		CleanSession:   clean,
		Prefix:         c.Prefix,
		PresenceWindow: c.MQTTUpstreamPresence,
		Sink:           n.agg,
		OnPresence:     n.onPresence, // cluster-wide with --nats, as for the embedded broker
		Registerer:     n.reg,
	}, log)
}

// upstreamClientIDFile keeps the random part of the default client id in
// the data directory, so a restarted node resumes its persistent session.
const upstreamClientIDFile = "mqtt-upstream-client-id"

// upstreamClientID returns the default client id, telegauge-HOST-RANDOM,
// and whether it is stable across restarts (kept in --data-dir).
func (c *ServeCmd) upstreamClientID(log *slog.Logger) (string, bool) {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, host)
	if host == "" {
		host = "node"
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	fresh := "telegauge-" + host + "-" + hex.EncodeToString(rnd[:])
	if c.DB == "memory" {
		return fresh, false
	}
	path := filepath.Join(c.DataDir, upstreamClientIDFile)
	if b, err := os.ReadFile(path); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, true
		}
	}
	if err := os.MkdirAll(c.DataDir, 0o750); err == nil {
		if err = os.WriteFile(path, []byte(fresh+"\n"), 0o640); err == nil {
			return fresh, true
		}
		log.Warn("cannot keep the upstream client id", "file", path, "err", err)
	}
	return fresh, false
}

// closeMQTT closes whichever device side was built.
func (n *node) closeMQTT() {
	if n.broker != nil {
		_ = n.broker.Close()
	}
	if n.upstream != nil {
		_ = n.upstream.Close()
	}
}

// runMQTT runs the device side: the embedded broker, or the upstream
// client.
func (n *node) runMQTT(ctx context.Context) error {
	if n.upstream != nil {
		return n.upstream.Run(ctx)
	}
	return n.broker.Run(ctx)
}

// mqttURL is where devices publish: the embedded broker's TCP listener or
// the upstream broker.
func (n *node) mqttURL() string {
	if n.upstream != nil {
		return n.upstream.URL()
	}
	return "tcp://" + n.broker.Addr()
}

// mqttAddr is the embedded broker's TCP listener (host:port) or the
// upstream broker's URL, for the log.
func (n *node) mqttAddr() string {
	if n.upstream != nil {
		return n.upstream.URL()
	}
	return n.broker.Addr()
}

// mqttReady is /readyz's check: in external broker mode the node is ready
// while it is connected and subscribed upstream.
func (n *node) mqttReady() error {
	if n.upstream != nil {
		return n.upstream.Ready()
	}
	return nil
}
