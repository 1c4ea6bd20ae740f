//go:build !linux

package web

import (
	"net"
	"time"
)

// setUserTimeout is a no-op where TCP_USER_TIMEOUT is not available.
func setUserTimeout(*net.TCPConn, time.Duration) error { return nil }
