package simulators

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// A minimal MQTT 3.1.1 publisher for load generation, where paho (a
// goroutine, a channel hop and a token per message) would be the
// bottleneck. It speaks only what a publishing device needs: CONNECT,
// PUBLISH at QoS 0 and 1 (with PUBACK tracking under a bounded in-flight
// window), PINGREQ and DISCONNECT. Packets are written through a
// bufio.Writer and flushed in batches by the caller.
//
// Goroutines: the owner goroutine does every write; readLoop, started by
// the owner, reads CONNACK's successors (PUBACK, PINGRESP) until the
// connection closes. close waits for readLoop.

// MQTT 3.1.1 control packet types, shifted into the fixed header [MQTT-2.2.1].
const (
	pktConnect    = 1 << 4
	pktConnack    = 2 << 4
	pktPublish    = 3 << 4
	pktPuback     = 4 << 4
	pktPingreq    = 12 << 4
	pktPingresp   = 13 << 4
	pktDisconnect = 14 << 4
)

// errStopped is returned by a publish that gave up because its owner is
// stopping.
var errStopped = errors.New("publisher stopping")

// ConnackError is a CONNACK return code other than 0 [MQTT-3.2.2.3].
type ConnackError byte

// Error implements error.
func (e ConnackError) Error() string {
	reasons := [...]string{
		1: "unacceptable protocol version",
		2: "identifier rejected",
		3: "server unavailable",
		4: "bad user name or password",
		5: "not authorized",
	}
	if int(e) < len(reasons) && reasons[e] != "" {
		return fmt.Sprintf("broker refused connection: %s (code %d)", reasons[e], byte(e))
	}
	return fmt.Sprintf("broker refused connection (code %d)", byte(e))
}

// rawOptions configures one rawClient.
type rawOptions struct {
	clientID           string
	username, password string
	hasUser, hasPass   bool
	keepAlive          time.Duration // 0: no keep-alive
	qos                byte          // 0 or 1
	inFlight           int           // QoS 1 window, > 0
	connectTimeout     time.Duration
	writeBufferBytes   int
	sendBufferBytes    int // SO_SNDBUF; 0: the system's
}

// rawClient is one MQTT connection. Apart from readLoop and the atomic
// counters, it is used only by its owner goroutine.
type rawClient struct {
	conn      net.Conn
	w         *bufio.Writer
	r         *bufio.Reader
	qos       byte
	keepAlive time.Duration
	lastFlush time.Time // owner only: when the last explicit flush happened
	scratch   []byte    // owner only: the packet being encoded
	pingTimer *time.Timer

	// QoS 1 flow control. sem holds a token per publish in flight: the
	// owner sends before publishing, readLoop receives on PUBACK. slots
	// maps (id-1)%window to the packet id in flight there, so a PUBACK for
	// an id that is not in flight is noticed rather than trusted.
	nextID  uint16 // owner only
	maxID   uint16
	slots   []atomic.Uint32
	sem     chan struct{}
	drained chan struct{} // 1-buffered: readLoop freed the last slot

	readDone chan struct{} // closed when readLoop returns
	readErr  error         // written by readLoop before readDone closes

	acked      atomic.Int64 // PUBACKs that matched a publish in flight
	unexpected atomic.Int64 // PUBACKs that did not, and unexpected packets
}

// dialRaw connects, sends CONNECT (clean session) and waits for a
// successful CONNACK. It starts no goroutine: the owner runs readLoop.
func dialRaw(ctx context.Context, addr string, o rawOptions) (*rawClient, error) {
	if o.connectTimeout <= 0 {
		o.connectTimeout = 10 * time.Second
	}
	if o.writeBufferBytes <= 0 {
		o.writeBufferBytes = 64 << 10
	}
	if o.inFlight <= 0 {
		o.inFlight = 64
	}
	o.inFlight = min(o.inFlight, 65535)
	d := net.Dialer{Timeout: o.connectTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if tc, ok := conn.(*net.TCPConn); ok && o.sendBufferBytes > 0 {
		// Bound what sits in the kernel unsent: loopback auto-tuning
		// allows megabytes per socket, which makes a run end seconds
		// after its duration while the broker drains the backlog.
		_ = tc.SetWriteBuffer(o.sendBufferBytes)
	}
	c := &rawClient{
		conn:      conn,
		w:         bufio.NewWriterSize(conn, o.writeBufferBytes),
		r:         bufio.NewReaderSize(conn, 4096),
		qos:       o.qos,
		keepAlive: o.keepAlive,
		scratch:   make([]byte, 0, 512),
		readDone:  make(chan struct{}),
	}
	if o.qos > 0 {
		c.slots = make([]atomic.Uint32, o.inFlight)
		c.sem = make(chan struct{}, o.inFlight)
		c.drained = make(chan struct{}, 1)
		// Ids cycle through a multiple of the window so that id and slot
		// stay in step across the wrap [MQTT-2.3.1-1: ids are non-zero].
		c.maxID = uint16(o.inFlight * (65535 / o.inFlight))
		c.nextID = 1
	}
	_ = conn.SetDeadline(time.Now().Add(o.connectTimeout))
	if err := c.handshake(o); err != nil {
		_ = conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	c.lastFlush = time.Now()
	return c, nil
}

func (c *rawClient) handshake(o rawOptions) error {
	// Variable header [MQTT-3.1.2]: protocol name, level 4, flags, keep-alive.
	flags := byte(0x02) // clean session
	if o.hasUser {
		flags |= 0x80
	}
	if o.hasPass {
		flags |= 0x40
	}
	body := make([]byte, 0, 64)
	body = append(body, 0, 4, 'M', 'Q', 'T', 'T', 4, flags)
	body = binary.BigEndian.AppendUint16(body, uint16(min(o.keepAlive/time.Second, 65535)))
	body = appendMQTTString(body, o.clientID)
	if o.hasUser {
		body = appendMQTTString(body, o.username)
	}
	if o.hasPass {
		body = appendMQTTString(body, o.password)
	}
	pkt := []byte{pktConnect}
	pkt = appendRemainingLength(pkt, len(body))
	pkt = append(pkt, body...)
	if _, err := c.w.Write(pkt); err != nil {
		return fmt.Errorf("send CONNECT: %w", err)
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("send CONNECT: %w", err)
	}
	var ack [4]byte
	if _, err := io.ReadFull(c.r, ack[:]); err != nil {
		return fmt.Errorf("read CONNACK: %w", err)
	}
	if ack[0] != pktConnack || ack[1] != 2 {
		return fmt.Errorf("read CONNACK: unexpected packet % x", ack[:2])
	}
	if ack[3] != 0 {
		return ConnackError(ack[3])
	}
	return nil
}

func appendMQTTString(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

// appendRemainingLength appends n as an MQTT variable byte integer [MQTT-2.2.3].
func appendRemainingLength(dst []byte, n int) []byte {
	for {
		b := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			b |= 0x80
		}
		dst = append(dst, b)
		if n == 0 {
			return dst
		}
	}
}

// publish writes one PUBLISH into the buffer. At QoS 1 it first takes an
// in-flight slot; when the window is full it flushes and waits for a
// PUBACK (pinging if the wait is long), giving up when stop closes or the
// connection fails. It does not flush otherwise.
func (c *rawClient) publish(topic, payload []byte, stop <-chan struct{}) error {
	var id uint16
	if c.qos > 0 {
		select {
		case c.sem <- struct{}{}:
		default:
			if err := c.flush(); err != nil {
				return err
			}
			if err := c.acquireSlow(stop); err != nil {
				return err
			}
		}
		id = c.allocID()
	}
	b := c.scratch[:0]
	n := 2 + len(topic) + len(payload)
	if c.qos > 0 {
		b = append(b, pktPublish|c.qos<<1)
		n += 2
	} else {
		b = append(b, pktPublish)
	}
	b = appendRemainingLength(b, n)
	b = binary.BigEndian.AppendUint16(b, uint16(len(topic)))
	b = append(b, topic...)
	if c.qos > 0 {
		b = binary.BigEndian.AppendUint16(b, id)
	}
	b = append(b, payload...)
	c.scratch = b
	if _, err := c.w.Write(b); err != nil {
		return fmt.Errorf("write PUBLISH: %w", err)
	}
	return nil
}

// acquireSlow waits for an in-flight slot.
func (c *rawClient) acquireSlow(stop <-chan struct{}) error {
	for {
		if c.keepAlive > 0 {
			if c.pingTimer == nil {
				c.pingTimer = time.NewTimer(c.keepAlive / 2)
			} else {
				c.pingTimer.Reset(c.keepAlive / 2)
			}
		}
		var ping <-chan time.Time
		if c.pingTimer != nil {
			ping = c.pingTimer.C
		}
		select {
		case c.sem <- struct{}{}:
			return nil
		case <-c.readDone:
			return fmt.Errorf("wait for PUBACK: %w", c.readErr)
		case <-stop:
			return errStopped
		case <-ping:
			if err := c.ping(); err != nil {
				return err
			}
		}
	}
}

// allocID returns the next packet id whose slot is free. The caller holds
// a sem token, so some slot is free; it is normally the next one, since
// brokers acknowledge in order.
func (c *rawClient) allocID() uint16 {
	for {
		id := c.nextID
		c.nextID++
		if c.nextID > c.maxID || c.nextID == 0 {
			c.nextID = 1
		}
		if c.slots[int(id-1)%len(c.slots)].CompareAndSwap(0, uint32(id)) {
			return id
		}
	}
}

// flush writes out the buffer.
func (c *rawClient) flush() error {
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	c.lastFlush = time.Now()
	return nil
}

// ping sends PINGREQ [MQTT-3.1.2-23: a control packet within the
// keep-alive] and flushes.
func (c *rawClient) ping() error {
	if err := c.w.WriteByte(pktPingreq); err != nil {
		return fmt.Errorf("write PINGREQ: %w", err)
	}
	if err := c.w.WriteByte(0); err != nil {
		return fmt.Errorf("write PINGREQ: %w", err)
	}
	return c.flush()
}

// idle sends a PINGREQ when nothing was flushed for half the keep-alive.
// Paced publishers call it before they sleep.
func (c *rawClient) idle(now time.Time) error {
	if c.keepAlive > 0 && now.Sub(c.lastFlush) >= c.keepAlive/2 {
		return c.ping()
	}
	return nil
}

// inFlight returns how many QoS 1 publishes await their PUBACK.
func (c *rawClient) inFlight() int { return len(c.sem) }

// readLoop reads packets until the connection fails or closes. The owner
// runs it on its own goroutine and waits for readDone.
func (c *rawClient) readLoop() {
	defer close(c.readDone)
	var hdr [2]byte
	for {
		typ, err := c.r.ReadByte()
		if err != nil {
			c.readErr = err
			return
		}
		n, err := readRemainingLength(c.r)
		if err != nil {
			c.readErr = err
			return
		}
		switch {
		case typ&0xf0 == pktPuback && n == 2:
			if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
				c.readErr = err
				return
			}
			c.onPuback(binary.BigEndian.Uint16(hdr[:]))
		case typ&0xf0 == pktPingresp:
			if _, err := c.r.Discard(n); err != nil {
				c.readErr = err
				return
			}
		default:
			// Nothing else is expected of a publish-only session.
			c.unexpected.Add(1)
			if _, err := c.r.Discard(n); err != nil {
				c.readErr = err
				return
			}
		}
	}
}

func (c *rawClient) onPuback(id uint16) {
	if c.sem == nil || id == 0 || id > c.maxID || !c.slots[int(id-1)%len(c.slots)].CompareAndSwap(uint32(id), 0) {
		c.unexpected.Add(1)
		return
	}
	c.acked.Add(1)
	<-c.sem
	if len(c.sem) == 0 {
		select {
		case c.drained <- struct{}{}:
		default:
		}
	}
}

// readRemainingLength decodes an MQTT variable byte integer [MQTT-2.2.3].
func readRemainingLength(r *bufio.Reader) (int, error) {
	n, shift := 0, 0
	for range 4 {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		n |= int(b&0x7f) << shift
		if b&0x80 == 0 {
			return n, nil
		}
		shift += 7
	}
	return 0, errors.New("malformed remaining length")
}

// close flushes, waits up to wait for QoS 1 publishes in flight, sends
// DISCONNECT [MQTT-3.14], closes the connection and waits for readLoop,
// which must have been started.
func (c *rawClient) close(wait time.Duration) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(wait + time.Second))
	err := c.flush()
	if err == nil && c.sem != nil && len(c.sem) > 0 {
		t := time.NewTimer(wait)
	drain:
		for len(c.sem) > 0 {
			select {
			case <-c.drained:
			case <-c.readDone:
				break drain
			case <-t.C:
				break drain
			}
		}
		t.Stop()
	}
	if err == nil {
		if _, werr := c.w.Write([]byte{pktDisconnect, 0}); werr != nil {
			err = fmt.Errorf("write DISCONNECT: %w", werr)
		} else {
			err = c.flush()
		}
	}
	if cerr := c.conn.Close(); cerr != nil && err == nil && !errors.Is(cerr, net.ErrClosed) {
		err = fmt.Errorf("close connection: %w", cerr)
	}
	<-c.readDone
	return err
}
