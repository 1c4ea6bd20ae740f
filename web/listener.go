package web

import (
	"net"
	"time"
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
}

func (l timeoutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if l.firstByte > 0 {
		_ = c.SetReadDeadline(time.Now().Add(l.firstByte))
	}
	if tc, ok := c.(*net.TCPConn); ok {
		// Best effort: where the option does not exist, heartbeat write
		// errors and write deadlines still end dead streams, later.
		_ = setUserTimeout(tc, l.userTimeout)
	}
	return c, nil
}
