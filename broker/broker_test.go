package broker

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/internal/testutil"
)

// eventually polls check until it holds or the test fails.
var eventually = testutil.Eventually

// recordingSink is a Sink that keeps what it is offered.
type recordingSink struct {
	mu      sync.Mutex
	topics  []string
	refuse  bool
	offered int
}

func (s *recordingSink) Offer(topic string, payload []byte, at time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offered++
	if s.refuse {
		return false
	}
	s.topics = append(s.topics, topic+" "+string(payload))
	return true
}

func (s *recordingSink) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.topics...)
}

type presenceEvent struct {
	device string
	online bool
}

// newTestBroker runs a broker on a free loopback port.
func newTestBroker(t testing.TB, sink Sink) (*Broker, <-chan presenceEvent) {
	t.Helper()
	pres := make(chan presenceEvent, 64)
	b, err := New(Config{
		Addr: "127.0.0.1:0",
		Sink: sink,
		OnPresence: func(device string, online bool, _ time.Time) {
			pres <- presenceEvent{device, online}
		},
	}, nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- b.Run(t.Context()) }()
	t.Cleanup(func() {
		require.NoError(t, b.Close())
	})
	return b, pres
}

func connect(t testing.TB, b *Broker, id string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(id).SetAutoReconnect(false))
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(10) })
	return c
}

func publish(t testing.TB, c paho.Client, topic string, qos byte, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, false, payload)
	require.True(t, tok.WaitTimeout(5*time.Second), "publish %s", topic)
	require.NoError(t, tok.Error())
}

func TestBrokerHandsTelemetryToSink(t *testing.T) {
	sink := &recordingSink{}
	b, pres := newTestBroker(t, sink)
	c := connect(t, b, "gw")
	publish(t, c, "telemetry/dev1", 1, `{"t":1}`) // QoS 1: acknowledged
	publish(t, c, "telemetry/dev1/temp", 0, "2")
	publish(t, c, "telemetry/dev2/temp", 1, "3") // a gateway publishing for two devices
	publish(t, c, "other/topic", 1, "x")         // not telemetry: not offered
	eventually(t, 5*time.Second, func() error {
		if got := sink.got(); len(got) != 3 {
			return fmt.Errorf("offered %v", got)
		}
		return nil
	})
	require.Equal(t, []string{"telemetry/dev1 {\"t\":1}", "telemetry/dev1/temp 2", "telemetry/dev2/temp 3"}, sink.got())

	// Presence: a device is online while a session publishing for it is
	// connected.
	require.Equal(t, presenceEvent{"dev1", true}, <-pres)
	require.Equal(t, presenceEvent{"dev2", true}, <-pres)
	c.Disconnect(10)
	offline := map[presenceEvent]bool{<-pres: true, <-pres: true}
	require.Equal(t, map[presenceEvent]bool{{"dev1", false}: true, {"dev2", false}: true}, offline)
}

func TestBrokerPresenceWithTwoSessions(t *testing.T) {
	b, pres := newTestBroker(t, &recordingSink{})
	c1, c2 := connect(t, b, "a"), connect(t, b, "b")
	publish(t, c1, "telemetry/dev1/x", 1, "1")
	require.Equal(t, presenceEvent{"dev1", true}, <-pres)
	publish(t, c2, "telemetry/dev1/x", 1, "1")
	c1.Disconnect(10)
	publish(t, c2, "telemetry/dev1/x", 1, "1") // still served by the second session
	select {
	case e := <-pres:
		t.Fatalf("unexpected presence %+v while a session remains", e)
	default:
	}
	c2.Disconnect(10)
	require.Equal(t, presenceEvent{"dev1", false}, <-pres)
}

// TestBrokerRoutesTelemetryOnlyWhenSubscribed: telemetry skips mochi's
// subscriber lookup until an MQTT client subscribes to a filter that could
// match it, and is routed normally while one does.
func TestBrokerRoutesTelemetryOnlyWhenSubscribed(t *testing.T) {
	b, _ := newTestBroker(t, &recordingSink{})
	pub := connect(t, b, "pub")
	require.Zero(t, b.hook.routes.n.Load())
	publish(t, pub, "telemetry/dev1/x", 1, "1")

	sub := connect(t, b, "sub")
	got := make(chan string, 16)
	tok := sub.Subscribe("telemetry/+/x", 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() + " " + string(m.Payload()) })
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	require.Equal(t, int64(1), b.hook.routes.n.Load())
	tok = sub.Subscribe("commands/#", 1, func(paho.Client, paho.Message) {})
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.Equal(t, int64(1), b.hook.routes.n.Load(), "a filter that cannot match telemetry does not count")

	publish(t, pub, "telemetry/dev1/x", 1, "2")
	select {
	case m := <-got:
		require.Equal(t, "telemetry/dev1/x 2", m)
	case <-time.After(5 * time.Second):
		t.Fatal("subscriber got nothing")
	}

	tok = sub.Unsubscribe("telemetry/+/x")
	require.True(t, tok.WaitTimeout(5*time.Second))
	eventually(t, 5*time.Second, func() error {
		if n := b.hook.routes.n.Load(); n != 0 {
			return fmt.Errorf("%d routes", n)
		}
		return nil
	})
}

func TestMayMatchPrefix(t *testing.T) {
	for _, tc := range []struct {
		filter string
		want   bool
	}{
		{"#", true},
		{"+/dev1/x", true},
		{"telemetry/#", true},
		{"telemetry", true},
		{"$share/g/telemetry/+", true},
		{"$share/g/#", true},
		{"commands/#", false},
		{"telemetryx/#", false},
		{"$SYS/#", false},
		{"$share/g/commands/#", false},
	} {
		t.Run(tc.filter, func(t *testing.T) {
			require.Equal(t, tc.want, mayMatchPrefix(tc.filter, "telemetry"))
		})
	}
}

// TestBrokerRefusedQoS0IsCounted: when the sink refuses (ingest stopped),
// QoS 0 publishes are dropped and counted, and the broker keeps serving.
func TestBrokerRefusedQoS0IsCounted(t *testing.T) {
	sink := &recordingSink{refuse: true}
	b, _ := newTestBroker(t, sink)
	c := connect(t, b, "dev")
	publish(t, c, "telemetry/dev1/x", 0, "1")
	eventually(t, 5*time.Second, func() error {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		if sink.offered != 1 {
			return fmt.Errorf("offered %d", sink.offered)
		}
		return nil
	})
	require.True(t, c.IsConnectionOpen())
}

// TestCoalescingConn: writes made while the reader is busy wait and leave
// together when it next reads; writes while it is blocked reading go out
// at once.
func TestCoalescingConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	peer, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer peer.Close()
	raw := <-accepted
	c := &coalescingConn{Conn: raw}
	defer c.Close()
	peerR := bufio.NewReader(peer)

	// Busy (not in Read): writes are held back.
	for _, s := range []string{"a", "b", "c"} {
		n, err := c.Write([]byte(s))
		require.NoError(t, err)
		require.Equal(t, 1, n)
	}
	require.Equal(t, "abc", string(c.pending))
	_ = peer.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = peerR.ReadByte()
	require.Error(t, err, "nothing is sent while the reader is busy")
	_ = peer.SetReadDeadline(time.Time{})

	// The reader goes to read: pending writes leave first, in one piece.
	readDone := make(chan string, 1)
	go func() {
		buf := make([]byte, 8)
		n, _ := c.Read(buf)
		readDone <- string(buf[:n])
	}()
	got := make([]byte, 3)
	_, err = io.ReadFull(peerR, got)
	require.NoError(t, err)
	require.Equal(t, "abc", string(got))

	// While the reader is blocked, a write goes straight out.
	eventually(t, 5*time.Second, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.reading {
			return fmt.Errorf("reader not blocked yet")
		}
		return nil
	})
	_, err = c.Write([]byte("d"))
	require.NoError(t, err)
	b, err := peerR.ReadByte()
	require.NoError(t, err)
	require.Equal(t, byte('d'), b)

	_, err = peer.Write([]byte("in"))
	require.NoError(t, err)
	require.Equal(t, "in", <-readDone)

	// Close sends what is pending.
	_, err = c.Write([]byte("bye"))
	require.NoError(t, err)
	require.NoError(t, c.Close())
	rest, err := io.ReadAll(peerR)
	require.NoError(t, err)
	require.Equal(t, "bye", string(rest))
}
