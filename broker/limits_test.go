package broker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/internal/testutil"
)

// newLimitBroker runs a broker with cfg (Addr and Sink filled in) on a free
// loopback port, logging into the returned buffer.
func newLimitBroker(t testing.TB, cfg Config) (*Broker, *recordingSink, *testutil.LogBuffer) {
	t.Helper()
	sink := &recordingSink{}
	logs := new(testutil.LogBuffer)
	cfg.Addr, cfg.Sink = "127.0.0.1:0", sink
	b, err := New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- b.Run(t.Context()) }()
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b, sink, logs
}

// refusals reads telegauge_mqtt_limit_refusals_total{limit}.
func refusals(b *Broker, limit string) float64 {
	return promtest.ToFloat64(b.limits.refusals.WithLabelValues(limit))
}

// waitRefusals waits for the refusal counter of a limit to reach want.
func waitRefusals(t testing.TB, b *Broker, limit string, want float64) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		if got := refusals(b, limit); got != want {
			return fmt.Errorf("%s refusals: %v, want %v", limit, got, want)
		}
		return nil
	})
}

// waitLog waits for exactly n log lines containing all of subs.
func waitLog(t testing.TB, logs *testutil.LogBuffer, n int, subs ...string) {
	t.Helper()
	eventually(t, 5*time.Second, func() error {
		if got := logs.Lines(subs...); len(got) != n {
			return fmt.Errorf("%d lines with %q, want %d", len(got), subs, n)
		}
		return nil
	})
}

// has reports whether the sink got a telemetry message.
func (s *recordingSink) has(msg string) bool {
	for _, m := range s.got() {
		if m == msg {
			return true
		}
	}
	return false
}

// goodTraffic publishes a QoS 1 message from c and waits for the sink to
// have it: good traffic flows beside the bad.
func goodTraffic(t testing.TB, c paho.Client, sink *recordingSink, topic, payload string) {
	t.Helper()
	publish(t, c, topic, 1, payload)
	eventually(t, 5*time.Second, func() error {
		if !sink.has(topic + " " + payload) {
			return fmt.Errorf("sink lacks %s %s", topic, payload)
		}
		return nil
	})
}

// lostConn connects a paho client that reports its lost connection.
func lostConn(t testing.TB, b *Broker, id string) (paho.Client, <-chan error) {
	t.Helper()
	lost := make(chan error, 1)
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(id).SetAutoReconnect(false).
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err }))
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(10) })
	return c, lost
}

// rawClient is a hand-driven MQTT connection, for what paho will not do.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
	ver  byte
}

// dialRaw opens a TCP connection; it is closed when the test ends.
func dialRaw(t testing.TB, addr string, ver byte) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	// A bound for every read, so that a broken limit fails the test
	// rather than hanging it.
	require.NoError(t, conn.SetDeadline(time.Now().Add(20*time.Second)))
	return &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), ver: ver}
}

func (c *rawClient) send(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = c.ver
	var buf bytes.Buffer
	require.NoError(c.t, encodePacket(&buf, pk))
	_, err := c.conn.Write(buf.Bytes())
	require.NoError(c.t, err)
}

// encodePacket appends pk, a CONNECT or a PUBLISH, to buf.
func encodePacket(buf *bytes.Buffer, pk packets.Packet) error {
	switch pk.FixedHeader.Type {
	case packets.Connect:
		return pk.ConnectEncode(buf)
	case packets.Publish:
		return pk.PublishEncode(buf)
	}
	return fmt.Errorf("cannot send packet type %d", pk.FixedHeader.Type)
}

// connect sends CONNECT and returns the CONNACK.
func (c *rawClient) connect(id string, keepalive uint16) packets.Packet {
	c.t.Helper()
	c.send(connectPacket(id, keepalive))
	ack, err := c.read()
	require.NoError(c.t, err)
	require.Equal(c.t, packets.Connack, ack.FixedHeader.Type)
	return ack
}

func connectPacket(id string, keepalive uint16) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: keepalive, ClientIdentifier: id,
		},
	}
}

// read reads and decodes one packet.
func (c *rawClient) read() (packets.Packet, error) {
	b, err := c.r.ReadByte()
	if err != nil {
		return packets.Packet{}, err
	}
	var fh packets.FixedHeader
	if err := fh.Decode(b); err != nil {
		return packets.Packet{}, err
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		return packets.Packet{}, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return packets.Packet{}, err
	}
	fh.Remaining = n
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: c.ver}
	switch fh.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	return pk, err
}

// readEOF reads until the server closes the connection, and fails the test
// if anything but a DISCONNECT arrives first. It returns the DISCONNECT's
// reason code (0 without one).
func (c *rawClient) readEOF() byte {
	c.t.Helper()
	var reason byte
	for {
		pk, err := c.read()
		if err != nil {
			require.True(c.t, errors.Is(err, io.EOF) || isReset(err), "want the server to close, got %v", err)
			return reason
		}
		require.Equal(c.t, packets.Disconnect, pk.FixedHeader.Type, "unexpected packet")
		reason = pk.ReasonCode
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestLimitPacketSize: a packet over MaxPacketBytes closes its connection,
// counted and logged with the device; an oversized CONNECT too, before any
// session exists. A device beside it keeps publishing.
func TestLimitPacketSize(t *testing.T) {
	b, sink, logs := newLimitBroker(t, Config{MaxPacketBytes: 1024})
	good := connect(t, b, "good")
	goodTraffic(t, good, sink, "telemetry/good/x", "1")

	big, lost := lostConn(t, b, "big")
	publish(t, big, "telemetry/bigdev/x", 1, "1") // the session now publishes for bigdev
	big.Publish("telemetry/bigdev/x", 1, false, strings.Repeat("9", 2048))
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the broker kept a connection that sent an oversized packet")
	}
	waitRefusals(t, b, limitPacketSize, 1)
	waitLog(t, logs, 1, "level=WARN", "over the size limit", "device=bigdev", "client=big")
	require.False(t, sink.has("telemetry/bigdev/x "+strings.Repeat("9", 2048)))
	goodTraffic(t, good, sink, "telemetry/good/x", "2")

	// An oversized CONNECT: closed before any session, counted all the same.
	raw := dialRaw(t, b.Addr(), 4)
	raw.send(connectPacket(strings.Repeat("c", 2048), 30))
	raw.readEOF()
	waitRefusals(t, b, limitPacketSize, 2)
	waitLog(t, logs, 1, "level=WARN", "CONNECT over the size limit", "remote=127.0.0.1:")
	goodTraffic(t, good, sink, "telemetry/good/x", "3")
}

// TestLimitInflight: an MQTT 5 client is told the receive maximum in
// CONNACK; one that leaves more QoS 2 publishes unreleased is disconnected
// with reason 0x93, counted and logged. A paho client publishing many QoS 2
// messages the ordinary way is not affected.
func TestLimitInflight(t *testing.T) {
	const window = 4
	b, sink, logs := newLimitBroker(t, Config{MaxInflight: window})

	good := connect(t, b, "good")
	for i := range 3 * window {
		publish(t, good, "telemetry/good/x", 2, fmt.Sprint(i))
	}

	raw := dialRaw(t, b.Addr(), 5)
	ack := raw.connect("hoarder", 30)
	require.Zero(t, ack.ReasonCode)
	require.Equal(t, uint16(window), ack.Properties.ReceiveMaximum)
	pub := func(id uint16) {
		raw.send(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2},
			TopicName:   "telemetry/hoarder/x", PacketID: id, Payload: []byte("1"),
		})
	}
	for id := uint16(1); id <= window; id++ {
		pub(id) // acknowledged with PUBREC; no PUBREL follows
		rec, err := raw.read()
		require.NoError(t, err)
		require.Equal(t, packets.Pubrec, rec.FixedHeader.Type)
		require.Equal(t, id, rec.PacketID)
	}
	pub(window + 1)
	require.Equal(t, packets.ErrReceiveMaximum.Code, raw.readEOF())
	waitRefusals(t, b, limitInflight, 1)
	waitLog(t, logs, 1, "level=WARN", "in-flight window", "device=hoarder")

	for i := range 3 * window {
		require.True(t, sink.has(fmt.Sprintf("telemetry/good/x %d", i)))
	}
	goodTraffic(t, good, sink, "telemetry/good/x", "after")
}

// TestLimitConnsPerIP: connections beyond the per-address limit are
// refused with a CONNACK (server unavailable for MQTT 3.1.1, quota exceeded
// for MQTT 5), counted and logged with the device; those within keep
// publishing, and a freed slot is taken again.
func TestLimitConnsPerIP(t *testing.T) {
	const limit = 3
	b, sink, logs := newLimitBroker(t, Config{MaxConnsPerIP: limit, LimitLoopback: true})
	var in []paho.Client
	for i := range limit {
		in = append(in, connect(t, b, fmt.Sprintf("in%d", i)))
	}

	// Protocol 3.1.1 only: paho would otherwise retry with 3.1.
	over := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("over").
		SetUsername("overdev").SetProtocolVersion(4).SetAutoReconnect(false))
	tok := over.Connect()
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.ErrorContains(t, tok.Error(), "Unavailable")
	waitRefusals(t, b, limitConnsPerIP, 1)
	waitLog(t, logs, 1, "level=WARN", "too many from one address", "device=overdev", "address=127.0.0.1")

	raw := dialRaw(t, b.Addr(), 5)
	ack := raw.connect("over5", 30)
	require.Equal(t, packets.ErrQuotaExceeded.Code, ack.ReasonCode)
	raw.readEOF()
	waitRefusals(t, b, limitConnsPerIP, 2)

	for i, c := range in {
		goodTraffic(t, c, sink, fmt.Sprintf("telemetry/in%d/x", i), "1")
	}
	in[0].Disconnect(10)
	eventually(t, 10*time.Second, func() error {
		if n := b.limits.conns.Count(netip.MustParseAddr("127.0.0.1")); n != limit-1 {
			return fmt.Errorf("%d connections counted", n)
		}
		return nil
	})
	again := connect(t, b, "again")
	goodTraffic(t, again, sink, "telemetry/again/x", "1")
	require.Equal(t, 2.0, refusals(b, limitConnsPerIP))
}

// TestLimitConnsPerIPLoopbackExempt: by default loopback peers are not
// counted, so the simulators and a local reverse proxy are not capped.
func TestLimitConnsPerIPLoopbackExempt(t *testing.T) {
	b, sink, _ := newLimitBroker(t, Config{MaxConnsPerIP: 1})
	for i := range 3 {
		goodTraffic(t, connect(t, b, fmt.Sprintf("c%d", i)), sink, fmt.Sprintf("telemetry/c%d/x", i), "1")
	}
	require.Zero(t, refusals(b, limitConnsPerIP))
}

// TestLimitKeepAlive: a client asking for no keep-alive, or for one over
// MaxKeepAlive, is given MaxKeepAlive (announced to MQTT 5 clients) and cut
// once it goes silent, counted and logged; a client that keeps talking
// stays.
func TestLimitKeepAlive(t *testing.T) {
	const maxKA = 2 // seconds: a silent client is cut after 3 s
	b, sink, logs := newLimitBroker(t, Config{MaxKeepAlive: maxKA * time.Second})
	good := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("good").
		SetKeepAlive(maxKA * time.Second).SetAutoReconnect(false))
	tok := good.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { good.Disconnect(10) })

	for _, tc := range []struct {
		name      string
		ver       byte
		keepalive uint16
	}{
		{"MQTT 3.1.1, keep-alive 0", 4, 0},
		{"MQTT 5, keep-alive 0", 5, 0},
		{"MQTT 5, keep-alive 18 h", 5, math.MaxUint16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := refusals(b, limitKeepAlive)
			raw := dialRaw(t, b.Addr(), tc.ver)
			id := fmt.Sprintf("silent%d-%d", tc.ver, tc.keepalive)
			ack := raw.connect(id, tc.keepalive)
			require.Zero(t, ack.ReasonCode)
			if tc.ver == 5 {
				require.True(t, ack.Properties.ServerKeepAliveFlag)
				require.Equal(t, uint16(maxKA), ack.Properties.ServerKeepAlive)
			}
			// Silent from here on: the server must close the connection,
			// while the good client keeps publishing.
			cut := make(chan struct{})
			go func() {
				defer close(cut)
				_, _ = io.Copy(io.Discard, raw.conn)
			}()
			n := 0
			eventually(t, 15*time.Second, func() error {
				n++
				publish(t, good, "telemetry/good/x", 1, fmt.Sprint(n))
				select {
				case <-cut:
					return nil
				default:
					return errors.New("silent client still connected")
				}
			})
			waitRefusals(t, b, limitKeepAlive, before+1)
			waitLog(t, logs, 1, "level=WARN", "silent past its keep-alive", "device="+id)
			waitLog(t, logs, 1, "keep-alive capped", "device="+id)
			goodTraffic(t, good, sink, "telemetry/good/x", "after "+id)
		})
	}
	require.Equal(t, 3.0, promtest.ToFloat64(b.limits.keepAlives), "the good client's own keep-alive was kept")
	require.True(t, good.IsConnectionOpen())
}

func TestLimitDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Config
		want Config
	}{
		{"zero", Config{}, Config{MaxPacketBytes: 256 << 10, MaxInflight: 128, MaxConnsPerIP: 100, MaxKeepAlive: 20 * time.Minute}},
		{"negative", Config{MaxPacketBytes: -1, MaxInflight: -1, MaxConnsPerIP: -1, MaxKeepAlive: -1},
			Config{MaxPacketBytes: 256 << 10, MaxInflight: 128, MaxConnsPerIP: -1, MaxKeepAlive: 20 * time.Minute}},
		{"clamped", Config{MaxPacketBytes: 10, MaxInflight: 1 << 20, MaxConnsPerIP: 5, MaxKeepAlive: 100 * time.Hour},
			Config{MaxPacketBytes: 10, MaxInflight: math.MaxUint16, MaxConnsPerIP: 5, MaxKeepAlive: math.MaxUint16 * time.Second}},
		{"keep-alive at least a second", Config{MaxKeepAlive: time.Millisecond},
			Config{MaxPacketBytes: 256 << 10, MaxInflight: 128, MaxConnsPerIP: 100, MaxKeepAlive: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.setLimitDefaults()
			require.Equal(t, tc.want, tc.in)
			caps := mqtt.NewDefaultServerCapabilities()
			applyLimits(caps, tc.in)
			require.Equal(t, uint32(tc.want.MaxPacketBytes), caps.MaximumPacketSize)
			require.Equal(t, uint16(tc.want.MaxInflight), caps.ReceiveMaximum)
			require.Equal(t, uint16(tc.want.MaxInflight), caps.MaximumInflight)
		})
	}
}

// TestLimitLogIsRateLimited: a flood of limit hits writes a burst of lines,
// not one per hit; the counter counts them all.
func TestLimitLogIsRateLimited(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	b, _, logs := newLimitBroker(t, Config{MaxKeepAlive: time.Hour, Now: func() time.Time { return now }})
	for i := range 3 * logBurst {
		raw := dialRaw(t, b.Addr(), 4)
		raw.connect(fmt.Sprintf("flood%d", i), 0) // each one is capped
	}
	require.Equal(t, float64(3*logBurst), promtest.ToFloat64(b.limits.keepAlives))
	require.Len(t, logs.Lines("keep-alive capped"), logBurst)
}

// wsTimeout is a timeout error that does not wrap os.ErrDeadlineExceeded,
// as the WebSocket listener's are.
type wsTimeout struct{}

func (wsTimeout) Error() string   { return "i/o timeout" }
func (wsTimeout) Timeout() bool   { return true }
func (wsTimeout) Temporary() bool { return true }

func TestIsTimeout(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"deadline", os.ErrDeadlineExceeded, true},
		{"TCP read", &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, true},
		{"WebSocket", fmt.Errorf("read: %w", wsTimeout{}), true},
		{"EOF", io.EOF, false},
		{"too large", packets.ErrPacketTooLarge, false},
	} {
		t.Run(tc.name, func(t *testing.T) { require.Equal(t, tc.want, isTimeout(tc.err)) })
	}
}
