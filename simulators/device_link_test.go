package simulators

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/telegauge/telegauge/broker"
	"github.com/telegauge/telegauge/ingest"
	"github.com/telegauge/telegauge/internal/testutil"
)

// freeAddr returns a loopback address nothing listens on (for listeners
// that cannot report the port they bound).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// startBroker runs a broker with cfg (Sink set by the caller).
func startBroker(t *testing.T, cfg broker.Config) *broker.Broker {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	b, err := broker.New(cfg, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return b
}

// TestRunDevicesTLSAndWebSocket: the same fleet over MQTT over TLS (with
// the CA given and with verification off, plain and flaky) and over
// WebSocket delivers every message.
func TestRunDevicesTLSAndWebSocket(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, "telegauge test")
	sink := &countingSink{}
	wsAddr := freeAddr(t)
	b := startBroker(t, broker.Config{
		TLSAddr: "127.0.0.1:0", TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		WSAddr: wsAddr, Sink: sink,
	})
	want := 0
	for _, tc := range []struct {
		name   string
		broker string
		tls    *tls.Config
		flaky  DeviceFlaky
	}{
		{name: "tls", broker: "ssl://" + b.TLSAddr(), tls: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
		{name: "tls insecure", broker: "ssl://" + b.TLSAddr(), tls: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // a test certificate
		{name: "tls flaky dialer", broker: "ssl://" + b.TLSAddr(), tls: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, flaky: DeviceFlaky{StallEvery: time.Hour}},
		{name: "websocket", broker: "ws://" + wsAddr + "/mqtt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stats, err := RunDevices(context.Background(), DevicesConfig{
				Broker: tc.broker, TLS: tc.tls, Flaky: tc.flaky, Devices: 3, Rate: 200, Messages: 10, QoS: 1,
				IDPrefix: strings.ReplaceAll(tc.name, " ", "-") + "-",
			}, nil)
			require.NoError(t, err)
			require.EqualValues(t, 30, stats.Messages)
			require.EqualValues(t, 30, stats.Acks)
			require.Zero(t, stats.Errors)
			want += 30
			sink.waitCount(t, want)
		})
	}

	t.Run("untrusted certificate", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stats, err := RunDevices(ctx, DevicesConfig{Broker: "ssl://" + b.TLSAddr(), Devices: 1, Messages: 1, Duration: 500 * time.Millisecond}, nil)
		require.Error(t, err)
		require.Contains(t, err.Error(), "certificate")
		require.Positive(t, stats.ConnectFailures)
	})
}

// TestRunDevicesBadPayloads: the chosen share of messages is malformed, and
// the server's decoder rejects exactly those while accepting every reading
// of the others.
func TestRunDevicesBadPayloads(t *testing.T) {
	sink := &countingSink{keep: true}
	addr := newTestBroker(t, sink)
	stats, err := RunDevices(context.Background(), DevicesConfig{
		Broker: "tcp://" + addr, Devices: 4, Rate: 500, Messages: 100, Metrics: 2, QoS: 1, BadShare: 0.25, Seed: 3,
		Now: func() time.Time { return fixedNow },
	}, nil)
	require.NoError(t, err)
	require.EqualValues(t, 400, stats.Messages+stats.Bad)
	require.InDelta(t, 100, stats.Bad, 40, "about a quarter malformed")
	require.EqualValues(t, 2*stats.Messages, stats.Readings)
	sink.waitCount(t, 400)

	dec := ingest.NewDecoder(ingest.DecodeConfig{})
	var good, bad, readings int64
	for _, m := range sink.Messages() {
		d := dec.Decode(m.topic, m.payload, fixedNow.UnixMilli())
		if len(d.Rejects) > 0 {
			require.Empty(t, d.Readings, "%s %q: a malformed message carries no reading", m.topic, m.payload)
			bad++
			continue
		}
		good++
		readings += int64(len(d.Readings))
	}
	require.Equal(t, stats.Bad, bad)
	require.Equal(t, stats.Messages, good)
	require.Equal(t, stats.Readings, readings)
}

// TestFlakyDevicesBuffer: disconnects and stalls on the device side, with
// every message acknowledged in the end, sent again only when its
// acknowledgement was lost, and the backlog sent oldest first with the
// original timestamps.
func TestFlakyDevicesBuffer(t *testing.T) {
	sink := &countingSink{keep: true}
	addr := newTestBroker(t, sink)
	var clock atomic.Int64
	clock.Store(1_000_000)
	stats, err := RunDevices(context.Background(), DevicesConfig{
		Broker: "tcp://" + addr, Devices: 3, Rate: 100, Messages: 200, Metrics: 1, QoS: 1, Seed: 5,
		KeepAlive: time.Second,
		Flaky:     DeviceFlaky{DisconnectEvery: 300 * time.Millisecond, StallEvery: 700 * time.Millisecond, StallFor: 400 * time.Millisecond},
		// Each reading gets its own millisecond, so the broker's copy
		// shows which readings arrived, in which order.
		Now: func() time.Time { return time.UnixMilli(clock.Add(1)) },
	}, nil)
	require.NoError(t, err)
	require.EqualValues(t, 600, stats.Messages)
	require.EqualValues(t, 600, stats.Acks, "every message acknowledged once")
	require.Positive(t, stats.Republished, "some acknowledgements were lost with their connection")
	require.Positive(t, stats.Disconnects)
	require.Positive(t, stats.Stalls)
	require.Positive(t, stats.Reconnects)
	require.Positive(t, stats.Buffered, "readings measured offline")
	require.Zero(t, stats.Dropped)
	require.Zero(t, stats.Unsent)

	// Every reading reached the broker at least once; copies beyond the
	// first are bounded by what was sent again.
	eventually(t, 10*time.Second, func() error {
		if n := sink.Count(); n < 600 {
			return fmt.Errorf("broker has %d messages, want at least 600", n)
		}
		return nil
	})
	seen := map[string]int{}
	for _, m := range sink.Messages() {
		seen[string(m.payload[:strings.IndexByte(string(m.payload), ',')])]++
	}
	require.Len(t, seen, 600)
	extra := 0
	for _, n := range seen {
		extra += n - 1
	}
	require.LessOrEqual(t, int64(extra), stats.Republished)
}

func TestReadCredentials(t *testing.T) {
	creds, err := ReadCredentials(strings.NewReader("# fleet A\nboiler-1 tok1\n\nboiler-2,tok2\nboiler-3: tok:3\n"))
	require.NoError(t, err)
	require.Equal(t, []DeviceCredential{{"boiler-1", "tok1"}, {"boiler-2", "tok2"}, {"boiler-3", "tok:3"}}, creds)
	for _, bad := range []string{"", "# only a comment\n", "boiler-1\n", "bad/id tok\n"} {
		_, err := ReadCredentials(strings.NewReader(bad))
		require.Error(t, err, "%q", bad)
	}
	u, p := PatternPassword("s-{id}-{i}", func(i int) string { return DeviceID("d-", i, 10) })(3)
	require.Equal(t, "d-0003", u)
	require.Equal(t, "s-d-0003-3", p)
}
