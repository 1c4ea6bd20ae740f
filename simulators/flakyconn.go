package simulators

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// flakyConn is a TCP connection that a simulator can break the way mobile
// and rural links break: kill drops it with a reset, as when a modem loses
// its bearer; stall makes it go silent for a while, as in a tunnel, with
// the kernel buffering what the other side sends until it resumes.
type flakyConn struct {
	net.Conn
	closed    chan struct{}
	closeOnce sync.Once
	killed    atomic.Bool

	mu         sync.Mutex // guards stallUntil
	stallUntil time.Time
}

func newFlakyConn(c net.Conn) *flakyConn {
	return &flakyConn{Conn: c, closed: make(chan struct{})}
}

// stall makes reads and writes wait until d from now. Data read while a
// stall begins is held back until it ends, so nothing gets through.
func (c *flakyConn) stall(d time.Duration) {
	c.mu.Lock()
	c.stallUntil = time.Now().Add(d)
	c.mu.Unlock()
}

// kill resets the connection: no FIN, no DISCONNECT packet, so the peer
// learns of it from the reset or, if that is lost too, its keep-alive.
func (c *flakyConn) kill() {
	c.killed.Store(true)
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// errLinkReset is what a killed connection's reads and writes return.
// MQTT clients (paho among them) take "use of closed network connection"
// for their own doing and stay quiet about it; a reset they report.
var errLinkReset = errors.New("connection reset (simulated link failure)")

// failed translates the error of a killed connection.
func (c *flakyConn) failed(err error) error {
	if err != nil && c.killed.Load() {
		return errLinkReset
	}
	return err
}

// wait blocks while the connection is stalled; it fails once it is closed.
func (c *flakyConn) wait() error {
	for {
		c.mu.Lock()
		d := time.Until(c.stallUntil)
		c.mu.Unlock()
		select {
		case <-c.closed:
			return net.ErrClosed
		default:
		}
		if d <= 0 {
			return nil
		}
		t := time.NewTimer(d)
		select {
		case <-c.closed:
			t.Stop()
			return net.ErrClosed
		case <-t.C:
		}
	}
}

func (c *flakyConn) Read(b []byte) (int, error) {
	if err := c.wait(); err != nil {
		return 0, c.failed(err)
	}
	n, err := c.Conn.Read(b)
	if werr := c.wait(); werr != nil {
		return 0, c.failed(werr)
	}
	return n, c.failed(err)
}

func (c *flakyConn) Write(b []byte) (int, error) {
	if err := c.wait(); err != nil {
		return 0, c.failed(err)
	}
	n, err := c.Conn.Write(b)
	return n, c.failed(err)
}

func (c *flakyConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}
