package broker

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// tcpListener is mochi's TCP listener with one change: every connection is
// wrapped in a coalescingConn, so that the acknowledgements mochi writes
// while it works through a batch of packets leave in one system call.
type tcpListener struct {
	id   string
	addr string
	ln   net.Listener
	log  *slog.Logger
	end  atomic.Bool
}

var _ listeners.Listener = (*tcpListener)(nil)

func newTCPListener(id, addr string) *tcpListener {
	return &tcpListener{id: id, addr: addr}
}

// ID implements listeners.Listener.
func (l *tcpListener) ID() string { return l.id }

// Address implements listeners.Listener: the bound address once listening.
func (l *tcpListener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Protocol implements listeners.Listener.
func (l *tcpListener) Protocol() string { return "tcp" }

// Init implements listeners.Listener: it binds the address.
func (l *tcpListener) Init(log *slog.Logger) error {
	l.log = log
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	l.ln = ln
	return nil
}

// Serve implements listeners.Listener: it accepts until Close.
func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if !l.end.Load() && !errors.Is(err, net.ErrClosed) {
				l.log.Warn("accept failed", "err", err)
			}
			return
		}
		if l.end.Load() {
			_ = conn.Close()
			return
		}
		go func() {
			// mochi returns when the client goes away; its errors are the
			// client's, reported through hooks and metrics.
			_ = establish(l.id, &coalescingConn{Conn: conn})
		}()
	}
}

// Close implements listeners.Listener: it stops accepting and has mochi
// close the listener's clients.
func (l *tcpListener) Close(closeClients listeners.CloseFn) {
	if l.end.Swap(true) {
		return
	}
	closeClients(l.id)
	if l.ln != nil {
		_ = l.ln.Close()
	}
}

// coalescingConn delays the writes made while the connection's reader is
// busy until it is about to wait for more input, then sends them together.
//
// mochi handles a client on one goroutine: read a packet, process it (which
// writes a PUBACK for QoS 1), read the next. Each write was a system call:
// at QoS 1 half the CPU of a saturated server went to writing 4-byte
// acknowledgements one by one. Now a write made while the reader is not
// blocked in Read is buffered, and Read flushes the buffer before it blocks,
// so the acknowledgements for a batch of publishes leave as one segment,
// just before the server would otherwise sit idle on this connection.
// A write made while the reader is blocked in Read (from mochi's write loop,
// delivering a message to a subscriber) goes out at once: nothing waits
// behind an idle reader.
type coalescingConn struct {
	net.Conn
	mu      sync.Mutex // guards the fields below; held across the writes it orders
	pending []byte     // written while the reader was busy, not yet sent
	reading bool       // the reader is blocked in Read
	err     error      // the first write error, returned from then on
}

// Write implements net.Conn.
func (c *coalescingConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.reading {
		// The buffer was flushed before the reader blocked; nothing is
		// queued ahead of this write.
		n, err := c.Conn.Write(b)
		c.err = err
		return n, err
	}
	if len(c.pending)+len(b) > maxPendingBytes {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(b) > maxPendingBytes {
			n, err := c.Conn.Write(b)
			c.err = err
			return n, err
		}
	}
	c.pending = append(c.pending, b...)
	return len(b), nil
}

// maxPendingBytes bounds what a connection buffers before it writes.
const maxPendingBytes = 16 << 10

// Read implements net.Conn: it sends what is pending, then reads.
func (c *coalescingConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if err := c.flushLocked(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	c.reading = true
	c.mu.Unlock()
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.reading = false
	c.mu.Unlock()
	return n, err
}

// Close implements net.Conn: what is pending (a final CONNACK or
// DISCONNECT with a reason) is sent first.
func (c *coalescingConn) Close() error {
	c.mu.Lock()
	_ = c.flushLocked()
	c.mu.Unlock()
	return c.Conn.Close()
}

// flushLocked writes the pending bytes. The caller must hold c.mu.
func (c *coalescingConn) flushLocked() error {
	if c.err != nil {
		return c.err
	}
	if len(c.pending) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.pending)
	c.err = err
	if cap(c.pending) > 4<<10 {
		c.pending = nil // do not keep a burst's buffer on an idle connection
	} else {
		c.pending = c.pending[:0]
	}
	return err
}
