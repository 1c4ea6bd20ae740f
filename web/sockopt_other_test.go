//go:build !unix

package web

import "syscall"

// rcvBufControl leaves the receive buffer alone where SO_RCVBUF is not set
// this way: a stalled client then takes more data to stall the server.
func rcvBufControl(int) func(network, address string, c syscall.RawConn) error {
	return func(string, string, syscall.RawConn) error { return nil }
}
