package simulators

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/telegauge/telegauge/ingest"
)

func TestRunLoad(t *testing.T) {
	const conns, perConn = 4, 500
	for _, tc := range []struct {
		name     string
		qos      byte
		rate     float64
		inFlight int
		metrics  int
	}{
		{name: "qos0 unpaced", qos: 0},
		{name: "qos1 unpaced", qos: 1, inFlight: 8},
		{name: "qos0 paced", qos: 0, rate: 20_000},
		{name: "qos1 paced window 1", qos: 1, rate: 20_000, inFlight: 1, metrics: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &countingSink{keep: true}
			addr := newTestBroker(t, sink)
			stats, err := RunLoad(context.Background(), LoadConfig{
				Addr:        addr,
				Connections: conns,
				Messages:    perConn,
				Rate:        tc.rate,
				QoS:         tc.qos,
				InFlight:    tc.inFlight,
				Metrics:     tc.metrics,
				IDPrefix:    "dev-",
				Now:         func() time.Time { return fixedNow },
			}, nil)
			require.NoError(t, err)
			require.EqualValues(t, conns*perConn, stats.Messages)
			require.Zero(t, stats.Errors)
			require.Zero(t, stats.Connected)
			if tc.qos == 1 {
				require.EqualValues(t, conns*perConn, stats.Acks)
			} else {
				require.Zero(t, stats.Acks)
			}
			require.Positive(t, stats.MessagesPerSecond)

			sink.waitCount(t, conns*perConn)
			metrics := max(tc.metrics, 2)
			dec := ingest.NewDecoder(ingest.DecodeConfig{})
			perTopic := map[string]int{}
			for _, m := range sink.Messages() {
				perTopic[m.topic]++
				d := dec.Decode(m.topic, m.payload, fixedNow.UnixMilli())
				require.Empty(t, d.Rejects, "%s", m.payload)
				require.Len(t, d.Readings, metrics)
			}
			require.Len(t, perTopic, conns)
			require.Equal(t, perConn, perTopic["telemetry/dev-0003"])
		})
	}
}

func TestRunLoadDuration(t *testing.T) {
	sink := &countingSink{}
	addr := newTestBroker(t, sink)
	counters := new(LoadCounters)
	stats, err := RunLoad(context.Background(), LoadConfig{
		Addr:        addr,
		Connections: 2,
		Rate:        2000,
		Duration:    200 * time.Millisecond,
		QoS:         1,
		Counters:    counters,
	}, nil)
	require.NoError(t, err)
	require.Positive(t, stats.Messages)
	require.Equal(t, stats.Messages, stats.Acks)
	// Paced at 2000/s for 0.2 s: around 400, never a burst far beyond it.
	require.Less(t, stats.Messages, int64(1000))
	require.Equal(t, stats.Messages, counters.Snapshot().Messages)
	sink.waitCount(t, int(stats.Messages))
}

func TestLoadPayload(t *testing.T) {
	p := newLoadPayload(2, 1)
	for i := range 1000 {
		b := p.build(1_700_000_000_123 + int64(i))
		var v struct {
			TS          int64   `json:"ts"`
			Temperature float64 `json:"temperature"`
			Humidity    float64 `json:"humidity"`
		}
		require.NoError(t, json.Unmarshal(b, &v), "%s", b)
		require.Equal(t, 1_700_000_000_123+int64(i), v.TS)
		require.InDelta(t, 21.53, v.Temperature, 3.01)
		require.InDelta(t, 40.1, v.Humidity, 10.01)
		require.True(t, strings.HasPrefix(string(b), `{"ts":`))
	}
	require.Equal(t, 0.0, testing.AllocsPerRun(100, func() { p.build(1_700_000_000_123) }))
}

// fakeBrokerConn is the server side of one raw MQTT connection in tests of
// the client's protocol handling.
type fakeBrokerConn struct {
	conn net.Conn
	r    *bufio.Reader
}

func (f *fakeBrokerConn) readPacket() (byte, []byte, error) {
	typ, err := f.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, err := readRemainingLength(f.r)
	if err != nil {
		return 0, nil, err
	}
	body := make([]byte, n)
	_, err = io.ReadFull(f.r, body)
	return typ, body, err
}

func TestRawClientProtocol(t *testing.T) {
	for _, tc := range []struct {
		name    string
		connack byte
		wantErr error
	}{
		{name: "accepted", connack: 0},
		{name: "refused", connack: 5, wantErr: ConnackError(5)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer ln.Close()
			type seen struct {
				connect []byte
				pubs    []byte // fixed-header bytes of PUBLISHes
				ids     []uint16
				payload string
				pings   int
				disc    bool
			}
			result := make(chan seen, 1)
			go func() {
				var s seen
				defer func() { result <- s }()
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				f := &fakeBrokerConn{conn: conn, r: bufio.NewReader(conn)}
				_, s.connect, _ = f.readPacket()
				_, _ = conn.Write([]byte{pktConnack, 2, 0, tc.connack})
				for {
					typ, body, err := f.readPacket()
					if err != nil {
						return
					}
					switch typ & 0xf0 {
					case pktPublish:
						s.pubs = append(s.pubs, typ)
						tl := int(body[0])<<8 | int(body[1])
						rest := body[2+tl:]
						if typ&0x06 != 0 {
							id := uint16(rest[0])<<8 | uint16(rest[1])
							s.ids = append(s.ids, id)
							rest = rest[2:]
							_, _ = conn.Write([]byte{pktPuback, 2, byte(id >> 8), byte(id)})
						}
						s.payload = string(rest)
					case pktPingreq:
						s.pings++
						_, _ = conn.Write([]byte{pktPingresp, 0})
					case pktDisconnect:
						s.disc = true
						return
					}
				}
			}()

			c, err := dialRaw(context.Background(), ln.Addr().String(), rawOptions{
				clientID: "dev-1", username: "dev-1", password: "secret", hasUser: true, hasPass: true,
				keepAlive: 30 * time.Second, qos: 1, inFlight: 2,
			})
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				require.ErrorContains(t, err, "not authorized")
				<-result
				return
			}
			require.NoError(t, err)
			go c.readLoop()
			stop := make(chan struct{})
			for i := range 5 {
				require.NoError(t, c.publish([]byte("telemetry/dev-1"), []byte(`{"ts":1,"v":`+string(rune('0'+i))+`}`), stop))
			}
			require.NoError(t, c.ping())
			require.NoError(t, c.close(5*time.Second))
			require.EqualValues(t, 5, c.acked.Load())
			require.Zero(t, c.unexpected.Load())
			s := <-result

			// CONNECT: "MQTT" level 4, flags user|pass|clean, keep-alive 30.
			require.Equal(t, []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0xC2, 0, 30}, s.connect[:10])
			require.Contains(t, string(s.connect), "dev-1")
			require.Contains(t, string(s.connect), "secret")
			require.Equal(t, []byte{0x32, 0x32, 0x32, 0x32, 0x32}, s.pubs)
			require.Equal(t, []uint16{1, 2, 3, 4, 5}, s.ids)
			require.Equal(t, `{"ts":1,"v":4}`, s.payload)
			require.Equal(t, 1, s.pings)
			require.True(t, s.disc)
		})
	}
}

func TestRawClientStopWhileWindowFull(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		f := &fakeBrokerConn{conn: conn, r: bufio.NewReader(conn)}
		_, _, _ = f.readPacket()
		_, _ = conn.Write([]byte{pktConnack, 2, 0, 0})
		// Never acknowledge anything.
		accepted <- conn
		_, _ = io.Copy(io.Discard, conn)
	}()
	c, err := dialRaw(context.Background(), ln.Addr().String(), rawOptions{clientID: "x", qos: 1, inFlight: 1})
	require.NoError(t, err)
	conn := <-accepted
	defer conn.Close()
	go c.readLoop()
	stop := make(chan struct{})
	require.NoError(t, c.publish([]byte("telemetry/x"), []byte("1"), stop))
	errc := make(chan error, 1)
	go func() { errc <- c.publish([]byte("telemetry/x"), []byte("2"), stop) }()
	close(stop)
	require.True(t, errors.Is(<-errc, errStopped))
	require.Equal(t, 1, c.inFlight())
	require.NoError(t, c.close(10*time.Millisecond))
}

func TestRunLoadConnectFailure(t *testing.T) {
	_, err := RunLoad(context.Background(), LoadConfig{
		Addr:        "127.0.0.1:1",
		Connections: 1,
		Duration:    200 * time.Millisecond,
	}, nil)
	require.Error(t, err)
}
