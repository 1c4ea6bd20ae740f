package web

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/telegauge/telegauge/internal/connlimit"
)

// timeoutListener sets each accepted connection's TCP user timeout: how
// long sent data may stay unacknowledged before the kernel gives up on the
// peer. Live streams write at least a heartbeat every interval, so a peer
// that vanished without closing (a phone that lost coverage, a laptop that
// slept) is found out, and its stream freed, within about two intervals
// instead of TCP's default of some fifteen minutes.
//
// It also gives each new connection a read deadline of firstByte. fasthttp
// bounds a request from its first byte on (ReadTimeout) and the wait between
// keep-alive requests (IdleTimeout), but waits for the first byte of a
// connection's first request for ever: a client that connects and sends
// nothing would hold a connection, and a server goroutine, as long as it
// liked. fasthttp replaces the deadline once a request starts; on TLS it
// bounds the handshake too.
type timeoutListener struct {
	net.Listener
	userTimeout time.Duration
	firstByte   time.Duration
	// conns, when set, bounds the connections per client address; a
	// connection over it is closed at once and reported to refused.
	conns   *connlimit.Limiter
	refused func(key netip.Addr)
}

func (l timeoutListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var key netip.Addr // the zero Addr: not counted
		if l.conns != nil {
			var ok bool
			if key, ok = l.conns.Acquire(c.RemoteAddr()); !ok {
				// Closed before a byte is read: nothing to answer in (the
				// listener may be TLS), and nothing spent on it.
				l.refused(key)
				_ = c.Close()
				continue
			}
		}
		if l.firstByte > 0 {
			_ = c.SetReadDeadline(time.Now().Add(l.firstByte))
		}
		if tc, ok := c.(*net.TCPConn); ok {
			// Best effort: where the option does not exist, heartbeat write
			// errors and write deadlines still end dead streams, later.
			_ = setUserTimeout(tc, l.userTimeout)
		}
		if !key.IsValid() {
			return c, nil // no limit, or not counted (loopback, a trusted proxy)
		}
		return &countedConn{Conn: c, release: func() { l.conns.Release(key) }}, nil
	}
}

// countedConn gives its count back to the limiter when it closes. A
// hijacked connection (SSE, WebSocket) is closed by its handler, anything
// else by fasthttp.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
