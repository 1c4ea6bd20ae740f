//go:build unix

package web

import (
	"errors"
	"syscall"
)

// rcvBufControl sets a socket's receive buffer before it connects, so the
// window it advertises stays small: a client that stops reading then
// stalls the server's writes after little data.
func rcvBufControl(n int) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
		})
		return errors.Join(err, serr)
	}
}
