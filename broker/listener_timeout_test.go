package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/fasthttp/websocket"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/internal/testutil"
)

// TestConnectTimeout: on every listener (TCP, TLS, WebSocket) a connection
// that does not send CONNECT in time is closed, counted and logged: one
// that sends nothing, one that sends half a CONNECT, one that never starts
// its TLS handshake, one that finishes it and then says nothing, one that
// upgrades to WebSocket and then says nothing. Devices connected before
// them, on every listener, stay silent for longer than the timeout and are
// still connected and publishing afterwards: the deadline ends with the
// CONNECT.
func TestConnectTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	ca, caKey := newCA(t)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	clientTLS := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	wsAddr := freeAddr(t)
	sink := &recordingSink{}
	logs := new(testutil.LogBuffer)
	b := newTimeoutBroker(t, logs, Config{
		Sink:           sink,
		ConnectTimeout: timeout,
		TLSAddr:        "127.0.0.1:0",
		TLSConfig:      &tls.Config{Certificates: []tls.Certificate{issue(t, ca, caKey, "127.0.0.1", true)}, MinVersion: tls.VersionTLS12},
		WSAddr:         wsAddr,
	})

	good := map[string]paho.Client{
		"tcp": connectGood(t, "tcp://"+b.Addr(), nil),
		"tls": connectGood(t, "ssl://"+b.TLSAddr(), clientTLS),
		"ws":  connectGood(t, "ws://"+wsAddr+"/mqtt", nil),
	}

	start := time.Now()
	bad := map[string]net.Conn{}
	bad["tcp silent"] = dialBad(t, b.Addr())
	bad["tcp half a CONNECT"] = dialBad(t, b.Addr())
	_, err := bad["tcp half a CONNECT"].Write([]byte{0x10, 0x20, 0x00, 0x04, 'M'})
	require.NoError(t, err)
	bad["tls no handshake"] = dialBad(t, b.TLSAddr())
	tc := tls.Client(dialBad(t, b.TLSAddr()), clientTLS.Clone())
	require.NoError(t, tc.Handshake())
	bad["tls silent after the handshake"] = tc
	ws, resp, err := (&websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}).
		Dial("ws://"+wsAddr+"/mqtt", nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	t.Cleanup(func() { ws.Close() })
	bad["ws silent after the upgrade"] = ws.NetConn()

	for name, c := range bad {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "%s: not closed by the server (read %q)", name, got)
		require.True(t, err == nil || strings.Contains(err.Error(), "connection reset"), "%s: %v", name, err)
		if name != "ws silent after the upgrade" && name != "tls silent after the handshake" {
			require.Empty(t, got, "%s: nothing asked, nothing answered", name)
		}
	}
	require.GreaterOrEqual(t, time.Since(start), timeout)
	testutil.Eventually(t, 5*time.Second, func() error {
		if got := refusals(b, limitConnectTimeout); got != float64(len(bad)) {
			return fmt.Errorf("%v connect timeouts counted, want %d", got, len(bad))
		}
		if got := strings.Count(logs.String(), "sent no CONNECT in time"); got != len(bad) {
			return fmt.Errorf("%d log lines, want %d", got, len(bad))
		}
		return nil
	})

	for name, c := range good {
		require.True(t, c.IsConnectionOpen(), "%s: a connected device is not cut by the connect timeout", name)
		topic := "telemetry/good-" + name
		publish(t, c, topic, 1, `{"t":1}`)
		require.Contains(t, sink.got(), topic+` {"t":1}`)
	}
	require.Zero(t, refusals(b, limitKeepAlive))
}

// TestConnectTimeoutDefault checks the documented default.
func TestConnectTimeoutDefault(t *testing.T) {
	b := newTimeoutBroker(t, io.Discard, Config{Sink: &recordingSink{}})
	require.Equal(t, 10*time.Second, b.cfg.ConnectTimeout)
}

// newTimeoutBroker runs a broker with cfg on free loopback ports, logging
// to w.
func newTimeoutBroker(t *testing.T, w io.Writer, cfg Config) *Broker {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	b, err := New(cfg, slog.New(slog.NewTextHandler(w, nil)))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	return b
}

// connectGood connects a paho client with a 60 s keep-alive (no pings
// during the test), retrying while the listener comes up.
func connectGood(t *testing.T, url string, tc *tls.Config) paho.Client {
	t.Helper()
	var c paho.Client
	testutil.Eventually(t, 5*time.Second, func() error {
		o := paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("good-%d", time.Now().UnixNano())).
			SetProtocolVersion(4).SetKeepAlive(60 * time.Second).SetAutoReconnect(false).SetConnectTimeout(2 * time.Second)
		if tc != nil {
			o.SetTLSConfig(tc)
		}
		c = paho.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(5 * time.Second) {
			return errors.New("connect timed out")
		}
		return tok.Error()
	})
	t.Cleanup(func() { c.Disconnect(10) })
	return c
}

// dialBad opens a TCP connection that the test drives by hand.
func dialBad(t *testing.T, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// freeAddr returns a loopback address with a free port, for mochi's
// WebSocket listener, which reports only the address it was given.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}
