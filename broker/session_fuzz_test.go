package broker

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// FuzzSession sends arbitrary bytes as one MQTT connection's whole input
// into a broker with every hook of ours installed (limits, auth, ingest),
// over net.Pipe, anonymous or with credentials required. mochi decodes the
// packets; our hooks see the CONNECT (usernames, keep-alive, client ids)
// and the PUBLISHes (topics, payloads) of a hostile device. The broker must
// not panic or hang, and must end the connection when its input ends; what
// reaches the sink is under the telemetry prefix. The input is split in two
// writes at split (nats' trick: the parser must not care where reads end).
func FuzzSession(f *testing.F) {
	for _, s := range []struct {
		session  []byte
		required bool
	}{
		{fuzzPackets(connectPacket4("dev1", "", 30), publishPacket("telemetry/dev1", 0, `{"t":1}`), publishPacket("telemetry/dev1/x", 1, `2`)), false},
		{fuzzPackets(connectPacket4("dev1", "dev1", 0), publishPacket("telemetry/dev2", 1, `{"t":1}`)), false},
		{fuzzPackets(connectPacket4("dev1", "dev1", 10), publishPacket("telemetry/dev1", 1, `{"t":1}`)), true},
		{fuzzPackets(connectPacket4("", "", 0), publishPacket("$SYS/x", 0, `1`), publishPacket("telemetry/+", 0, `1`)), false},
		{fuzzPackets(connectPacket4(strings.Repeat("c", 300), "d\xffv", 65535)), false},
		{fuzzPackets(publishPacket("telemetry/dev1", 0, `1`)), false},
		{[]byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f}, false},
		{[]byte{0x10, 0x00}, false},
		{[]byte{0x30}, false},
		{nil, false},
	} {
		f.Add(s.session, s.required, uint16(len(s.session)/2))
	}
	sink := &checkingSink{}
	creds := NewCredentials()
	b, err := New(Config{Addr: "127.0.0.1:0", Sink: sink, Credentials: creds, MaxPacketBytes: 4 << 10}, nil)
	require.NoError(f, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	f.Cleanup(func() { cancel(); require.NoError(f, <-done) })
	f.Fuzz(func(t *testing.T, session []byte, required bool, split uint16) {
		creds.Set(map[string]string{}, required)
		client, server := net.Pipe()
		established := make(chan error, 1)
		go func() { established <- b.srv.EstablishConnection("tcp", server) }()
		// The server's answers (CONNACK, PUBACK, DISCONNECT) are read and
		// dropped: a pipe has no buffer, and a server write must not wait.
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			_, _ = io.Copy(io.Discard, client)
		}()
		cut := min(int(split), len(session))
		_ = client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := client.Write(session[:cut]); err == nil {
			_, _ = client.Write(session[cut:])
		}
		// A write error means the broker closed the connection already.
		_ = client.Close()
		select {
		case <-established:
		case <-time.After(10 * time.Second):
			t.Fatal("the broker did not end a connection whose input ended")
		}
		<-drained
		require.False(t, sink.outside.Load(), "a publish outside the telemetry prefix reached the sink")
	})
}

// checkingSink notes whether it was offered anything outside the
// telemetry prefix.
type checkingSink struct {
	outside atomic.Bool
}

func (s *checkingSink) Offer(topic string, _ []byte, _ time.Time) bool {
	if !strings.HasPrefix(topic, "telemetry/") {
		s.outside.Store(true)
	}
	return true
}

func connectPacket4(clientID, user string, keepalive uint16) packets.Packet {
	pk := connectPacket(clientID, keepalive)
	pk.ProtocolVersion = 4
	if user != "" {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(user)
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte("not-a-token")
	}
	return pk
}

func publishPacket(topic string, qos byte, payload string) packets.Packet {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: qos},
		ProtocolVersion: 4,
		TopicName:       topic,
		Payload:         []byte(payload),
	}
	if qos > 0 {
		pk.PacketID = 1
	}
	return pk
}

// fuzzPackets encodes packets back to back.
func fuzzPackets(pks ...packets.Packet) []byte {
	var buf bytes.Buffer
	for _, pk := range pks {
		if err := encodePacket(&buf, pk); err != nil {
			panic("encode seed packet: " + err.Error())
		}
	}
	return buf.Bytes()
}
