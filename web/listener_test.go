package web

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/internal/connlimit"
)

// TestListenerConnsPerIP: past the limit a connection is closed before
// anything is read, and counted; closing one gives its place back. (The
// limiter counts loopback here; the server exempts it, see
// TestServerConnLimitExemptions.)
func TestListenerConnsPerIP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var refused atomic.Int64
	tl := timeoutListener{Listener: ln, userTimeout: time.Minute, conns: connlimit.New(2, nil),
		refused: func(key netip.Addr) {
			if key.String() == "127.0.0.1" {
				refused.Add(1)
			}
		}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })}
	go func() { _ = srv.Serve(tl) }()
	t.Cleanup(func() { _ = srv.Close() })

	get := func(c net.Conn) error {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.ReadAll(resp.Body)
		return err
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := dial(), dial()
	require.NoError(t, get(a))
	require.NoError(t, get(b))
	over := dial()
	require.Error(t, get(over), "the third is closed")
	eventually(t, waitTimeout, func() error {
		if n := refused.Load(); n != 1 {
			return fmt.Errorf("%d refusals counted", n)
		}
		return nil
	})

	require.NoError(t, a.Close())
	eventually(t, waitTimeout, func() error {
		c := dial()
		defer c.Close()
		return get(c)
	})
	require.NoError(t, get(b), "the others were never touched")
}

// TestServerConnLimitExemptions: the server counts connections per client
// address, but not loopback peers or trusted proxies (everything behind
// them would share one count), and not at all when the limit is negative.
func TestServerConnLimitExemptions(t *testing.T) {
	tcp := func(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	ts := newTestServer(t, withWeb(func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/8"} }))
	lim := ts.srv.ln.(timeoutListener).conns
	require.Equal(t, defaultMaxConnsPerIP, lim.Max())
	for addr, counted := range map[string]bool{
		"127.0.0.1:1": false, "[::1]:1": false, "10.2.3.4:1": false,
		"192.0.2.1:1": true, "[2001:db8::1]:1": true,
	} {
		key, ok := lim.Acquire(tcp(addr))
		require.True(t, ok)
		require.Equal(t, counted, key.IsValid(), addr)
		lim.Release(key)
	}
	off := newTestServer(t, withWeb(func(c *Config) { c.MaxConnsPerIP = -1 }))
	require.Nil(t, off.srv.ln.(timeoutListener).conns)
}
