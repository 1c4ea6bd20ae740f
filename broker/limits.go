package broker

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telegauge/telegauge/internal/connlimit"
)

// Connection limits. Each one refuses or cuts a connection, counts it in
// telegauge_mqtt_limit_refusals_total{limit} and names the device (or,
// before CONNECT, the remote address) in a warning, at most logBurst lines
// a second across the broker so that an attacker cannot flood the log:
//
//   - packet_size: a packet over MaxPacketBytes. mochi stops reading at the
//     fixed header [MQTT-3.2.2-15], so the payload is never buffered.
//   - inflight: more QoS 2 publishes awaiting PUBREL than MaxInflight (the
//     Receive Maximum the CONNACK announces [MQTT-3.3.4-9]). mochi sends
//     DISCONNECT 0x93 to MQTT 5 clients and closes.
//   - connections_per_ip: more than MaxConnsPerIP connections from one
//     address. Refused before mochi sees the connection.
//   - keepalive: a connection silent for one and a half keep-alive periods
//     [MQTT-3.1.2-22]. A client asking for no keep-alive, or for more than
//     MaxKeepAlive, is given MaxKeepAlive (announced as Server Keep Alive to
//     MQTT 5 clients [MQTT-3.2.2-21]), so a dead connection is always cut.
//
// Readings per second and series per device are limited in ingest, where
// readings are counted. Series over the limit are rejections like
// malformed payloads (telegauge_readings_rejected_total{reason="too_many_series"});
// a device over its rate is slowed instead: the sink holds its publish
// inside Offer, so mochi reads its connection's next packet later
// (ingest/limits.go, telegauge_device_throttled_seconds_total).

// Limit defaults. See Config.
const (
	defaultMaxInflight   = 128
	defaultMaxConnsPerIP = 100
	defaultMaxKeepAlive  = 20 * time.Minute
)

// Labels of telegauge_mqtt_limit_refusals_total.
const (
	limitPacketSize = "packet_size"
	limitInflight   = "inflight"
	limitConnsPerIP = "connections_per_ip"
	limitKeepAlive  = "keepalive"
)

// setLimitDefaults applies the documented defaults of the limit fields.
func (c *Config) setLimitDefaults() {
	if c.MaxPacketBytes <= 0 {
		c.MaxPacketBytes = 256 << 10
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = defaultMaxInflight
	}
	c.MaxInflight = min(c.MaxInflight, math.MaxUint16)
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = defaultMaxConnsPerIP
	}
	if c.MaxKeepAlive <= 0 {
		c.MaxKeepAlive = defaultMaxKeepAlive
	}
	// Keep-alive is whole seconds on the wire, at most 65,535.
	c.MaxKeepAlive = min(max(c.MaxKeepAlive, time.Second), math.MaxUint16*time.Second)
}

// applyLimits sets the mochi capabilities behind the limits.
func applyLimits(caps *mqtt.Capabilities, cfg Config) {
	caps.MaximumPacketSize = uint32(cfg.MaxPacketBytes)
	// Inbound: QoS 2 publishes a client may have unreleased. (mochi
	// acknowledges QoS 1 at once, so they never count against it.)
	caps.ReceiveMaximum = uint16(cfg.MaxInflight)
	// Outbound: QoS 1 and 2 messages stored for a client, sent or waiting
	// for its window; beyond it they are dropped and counted. A client's
	// own Receive Maximum is lowered to it too.
	caps.MaximumInflight = uint16(cfg.MaxInflight)
}

// limits enforces the connection limits: a mochi hook (keep-alive on
// CONNECT, classification of disconnects) plus a wrapper around every
// listener (connections per IP, oversized CONNECT packets).
type limits struct {
	mqtt.HookBase
	cfg    Config
	log    *slog.Logger
	ingest *ingestHook // names anonymous devices by what they publish

	conns    *connlimit.Limiter
	polite   chan struct{} // slots for refusals that answer CONNECT with a CONNACK
	attached sync.Map      // net.Conn -> struct{}: connections mochi read a CONNECT from

	refusals   *prometheus.CounterVec // by limit
	keepAlives prometheus.Counter
	logGate    logGate
}

// maxPoliteRefusals bounds the refused connections being answered at once;
// beyond it a refused connection is closed without a word, so a flood of
// connections costs no more than its sockets.
const maxPoliteRefusals = 64

// refuseReadTimeout bounds the wait for a refused connection's CONNECT.
const refuseReadTimeout = 3 * time.Second

func newLimits(cfg Config, log *slog.Logger, ingest *ingestHook) *limits {
	exempt := connlimit.Loopback
	if cfg.LimitLoopback {
		exempt = nil
	}
	l := &limits{
		cfg:    cfg,
		log:    log,
		ingest: ingest,
		conns:  connlimit.New(cfg.MaxConnsPerIP, exempt),
		polite: make(chan struct{}, maxPoliteRefusals),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telegauge_mqtt_limit_refusals_total",
			Help: "MQTT connections refused or cut by a limit: packet_size (a packet over --mqtt-max-packet-bytes), " +
				"inflight (more unreleased QoS 2 publishes than --mqtt-max-inflight), connections_per_ip " +
				"(over --mqtt-max-conns-per-ip), keepalive (silent for 1.5 keep-alive periods).",
		}, []string{"limit"}),
		keepAlives: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_mqtt_keepalive_overrides_total",
			Help: "MQTT connections that asked for no keep-alive or one over --mqtt-max-keepalive and were given --mqtt-max-keepalive.",
		}),
	}
	for _, name := range []string{limitPacketSize, limitInflight, limitConnsPerIP, limitKeepAlive} {
		l.refusals.WithLabelValues(name) // listed from the start, at 0
	}
	return l
}

// ID implements mqtt.Hook.
func (l *limits) ID() string { return "telegauge-limits" }

// Provides implements mqtt.Hook.
func (l *limits) Provides(b byte) bool { return b == mqtt.OnConnect || b == mqtt.OnDisconnect }

// OnConnect implements mqtt.Hook: it enforces the keep-alive ceiling. mochi
// arms the read deadline from cl.State.Keepalive right after this hook, and
// re-arms it after every packet.
func (l *limits) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if cl.Net.Conn != nil {
		l.attached.Store(cl.Net.Conn, struct{}{})
	}
	maxKA := uint16(l.cfg.MaxKeepAlive / time.Second)
	if ka := cl.State.Keepalive; ka == 0 || ka > maxKA {
		cl.State.Keepalive = maxKA
		cl.State.ServerKeepalive = true // sent to MQTT 5 clients in CONNACK
		l.keepAlives.Inc()
		if l.logGate.allow(l.cfg.Now()) {
			l.log.Info("MQTT keep-alive capped", "device", connectDevice(pk), "client", clip(cl.ID),
				"asked", time.Duration(ka)*time.Second, "given", time.Duration(maxKA)*time.Second, "remote", cl.Net.Remote)
		}
	}
	return nil
}

// OnDisconnect implements mqtt.Hook: it counts connections a limit ended.
func (l *limits) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	var limit, msg string
	switch {
	case err == nil:
		return
	case errors.Is(err, packets.ErrPacketTooLarge):
		limit, msg = limitPacketSize, "MQTT packet over the size limit: connection closed"
	case errors.Is(err, packets.ErrReceiveMaximum):
		limit, msg = limitInflight, "MQTT client over its in-flight window (unreleased QoS 2 publishes): disconnected"
	case isTimeout(err):
		limit, msg = limitKeepAlive, "MQTT connection silent past its keep-alive: closed"
	default:
		return
	}
	l.refusals.WithLabelValues(limit).Inc()
	if l.logGate.allow(l.cfg.Now()) {
		l.log.Warn(msg, "device", l.deviceOf(cl), "client", clip(cl.ID), "remote", cl.Net.Remote,
			"max_packet_bytes", l.cfg.MaxPacketBytes, "max_inflight", l.cfg.MaxInflight,
			"keepalive", time.Duration(cl.State.Keepalive)*time.Second)
	}
}

// isTimeout reports whether err is a read deadline expiring: an
// os.ErrDeadlineExceeded from a TCP or TLS connection, or the WebSocket
// listener's own timeout error, which does not wrap it.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// deviceOf names the device of a session: the one it authenticated as, or
// in anonymous mode the one it last published for, or else its client id.
// The hook runs before the ingest hook forgets the session.
func (l *limits) deviceOf(cl *mqtt.Client) string {
	if dev := deviceOf(cl); dev != "" {
		return clip(dev)
	}
	if v, ok := l.ingest.clients.Load(cl); ok {
		cd := v.(*clientDevices)
		cd.mu.Lock()
		dev := cd.last
		cd.mu.Unlock()
		if dev != "" {
			return dev
		}
	}
	return clip(cl.ID)
}

// connectDevice names the device of a CONNECT: its username, or else its
// client id.
func connectDevice(pk packets.Packet) string {
	if len(pk.Connect.Username) > 0 {
		return clip(string(pk.Connect.Username))
	}
	return clip(pk.Connect.ClientIdentifier)
}

// clip shortens a client-chosen string for the log.
func clip(s string) string {
	const n = 64
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// limitedListener wraps a listener so that every connection it accepts
// passes the per-IP limit before mochi sees it. It does not wrap the
// connection itself: the auth hook reads the TLS state from it.
type limitedListener struct {
	listeners.Listener
	l *limits
}

// wrap returns ln with the connection limits applied.
func (l *limits) wrap(ln listeners.Listener) listeners.Listener {
	return limitedListener{Listener: ln, l: l}
}

// Serve implements listeners.Listener.
func (ll limitedListener) Serve(establish listeners.EstablishFn) {
	l := ll.l
	ll.Listener.Serve(func(id string, c net.Conn) error {
		key, ok := l.conns.Acquire(c.RemoteAddr())
		if !ok {
			l.refusals.WithLabelValues(limitConnsPerIP).Inc()
			l.refuse(c, key)
			return errTooManyConns
		}
		defer l.conns.Release(key)
		err := establish(id, c)
		if _, attached := l.attached.LoadAndDelete(c); !attached && errors.Is(err, packets.ErrPacketTooLarge) {
			// The CONNECT itself was too large: no session, no hook.
			l.refusals.WithLabelValues(limitPacketSize).Inc()
			if l.logGate.allow(l.cfg.Now()) {
				l.log.Warn("MQTT CONNECT over the size limit: connection closed", "remote", c.RemoteAddr().String(),
					"max_packet_bytes", l.cfg.MaxPacketBytes)
			}
		}
		return err
	})
}

// errTooManyConns is returned for a connection refused by the per-IP limit.
var errTooManyConns = errors.New("too many connections from one address")

// refuse closes a connection over the per-IP limit. When a slot is free it
// first reads the CONNECT (briefly) and answers with a CONNACK saying the
// server is unavailable (MQTT 3.1.1 return code 3) or the quota is exceeded
// (MQTT 5 reason 0x97), so the device backs off and the log can name it;
// otherwise it just closes.
func (l *limits) refuse(c net.Conn, key netip.Addr) {
	defer c.Close()
	device := ""
	select {
	case l.polite <- struct{}{}:
		device = l.answerRefused(c)
		<-l.polite
	default:
	}
	if l.logGate.allow(l.cfg.Now()) {
		l.log.Warn("MQTT connection refused: too many from one address", "device", device,
			"remote", c.RemoteAddr().String(), "address", key.String(), "limit", l.conns.Max())
	}
}

// answerRefused reads a CONNECT from c and answers it with a refusing
// CONNACK. It returns the device the CONNECT named, if it got one.
func (l *limits) answerRefused(c net.Conn) string {
	_ = c.SetDeadline(time.Now().Add(refuseReadTimeout))
	r := bufio.NewReaderSize(c, 512)
	b, err := r.ReadByte()
	if err != nil {
		return ""
	}
	var fh packets.FixedHeader
	if fh.Decode(b) != nil || fh.Type != packets.Connect {
		return ""
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil || n > 4<<10 { // a CONNECT worth answering is small
		return ""
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return ""
	}
	pk := packets.Packet{FixedHeader: fh}
	if pk.ConnectDecode(buf) != nil {
		return ""
	}
	ack := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connack},
		ProtocolVersion: pk.ProtocolVersion,
		ReasonCode:      packets.ErrQuotaExceeded.Code,
	}
	if pk.ProtocolVersion < 5 {
		ack.ReasonCode = packets.Err3ServerUnavailable.Code
	} else {
		ack.Properties.ReasonString = "too many connections from one address"
	}
	var out bytes.Buffer
	if ack.ConnackEncode(&out) == nil {
		_, _ = c.Write(out.Bytes())
	}
	return connectDevice(pk)
}
