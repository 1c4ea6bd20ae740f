package broker

import (
	"net"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// defaultConnectTimeout is how long a new connection may take to send its
// CONNECT: enough for a TLS handshake and a CONNECT over a slow cellular
// link, short enough that connections which never speak (port scanners,
// slow-loris attacks, half-open sockets) do not pile up.
const defaultConnectTimeout = 10 * time.Second

// limitConnectTimeout labels telegauge_mqtt_limit_refusals_total for
// connections closed because no CONNECT arrived in time.
const limitConnectTimeout = "connect_timeout"

// connectTimeoutListener gives every connection it accepts a deadline for
// its CONNECT packet (and, on the TLS listener, the handshake before it).
// mochi waits for the first packet with no deadline of its own; once it has
// read a CONNECT it replaces the deadline with the keep-alive one
// [MQTT-3.1.2-22] (never none: the limits hook caps keep-alive), so only
// the connection phase is bounded here. It does not wrap the connection
// itself: the auth hook reads the TLS state from it.
//
// On the WebSocket listener the deadline starts after the HTTP upgrade,
// which mochi's HTTP server bounds by its own 60 s read timeout.
type connectTimeoutListener struct {
	listeners.Listener
	timeout time.Duration
	limits  *limits // counts and logs the connections cut
}

// withConnectTimeout wraps ln so that its connections must send CONNECT
// within Config.ConnectTimeout.
func (b *Broker) withConnectTimeout(ln listeners.Listener) listeners.Listener {
	return connectTimeoutListener{Listener: ln, timeout: b.cfg.ConnectTimeout, limits: b.limits}
}

// Serve implements listeners.Listener.
func (l connectTimeoutListener) Serve(establish listeners.EstablishFn) {
	l.Listener.Serve(func(id string, c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(l.timeout))
		err := establish(id, c)
		// mochi (v2.7.9 attachClient) reports a failure to read the first
		// packet as "read connection: ..."; later read errors (a keep-alive
		// expiring) are the limits hook's to count. The WebSocket
		// listener's timeouts do not wrap os.ErrDeadlineExceeded (see
		// isTimeout).
		if isTimeout(err) && strings.HasPrefix(err.Error(), "read connection: ") {
			lm := l.limits
			lm.refusals.WithLabelValues(limitConnectTimeout).Inc()
			if lm.logGate.allow(lm.cfg.Now()) {
				lm.log.Warn("MQTT connection sent no CONNECT in time: closed", "remote", c.RemoteAddr().String(),
					"listener", id, "timeout", l.timeout)
			}
		}
		return err
	})
}
