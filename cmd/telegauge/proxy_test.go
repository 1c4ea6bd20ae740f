//go:build integration

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/internal/testutil"
	"github.com/telegauge/telegauge/simulators"
)

// The reverse-proxy example, deploy/proxy/nginx.conf, run by Debian's nginx
// in front of a real server: the shipped file with only its placeholders
// (ports, certificate, upstream) filled in. .ci/run installs nginx; without
// it these tests are skipped, except in CI (CI set), where they fail.

// shippedNginxConf is the example as shipped.
const shippedNginxConf = "../../deploy/proxy/nginx.conf"

// TestNginxProxy runs viewers on WebSocket, SSE and long poll through
// nginx (TLS; HTTP/2 for SSE and polls, HTTP/1.1 for WebSocket, as
// browsers do) while devices publish, and checks that every reading
// reaches every viewer exactly once and promptly, that one reading
// published into silence arrives at once (a buffering proxy would hold it
// until kilobytes more came), and that heartbeats pass.
func TestNginxProxy(t *testing.T) {
	n := mustRunMain(t, "--heartbeat=250ms")
	px := startNginx(t, n.web.Addr(), nil)

	// HTTP/2 to clients that offer it, and plain HTTP only redirects.
	resp, err := px.client(true).Get(px.url + "/healthz")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "HTTP/2.0", resp.Proto)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noFollow.Get(px.plainURL + "/api/v1/devices")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusMovedPermanently, resp.StatusCode)
	require.True(t, strings.HasPrefix(resp.Header.Get("Location"), "https://"), "redirect to %q", resp.Header.Get("Location"))

	for _, tr := range []string{simulators.TransportWS, simulators.TransportSSE, simulators.TransportLongPoll} {
		t.Run(tr, func(t *testing.T) { testNginxTransport(t, n, px, tr) })
	}
}

func testNginxTransport(t *testing.T, n *testNode, px *nginxProxy, transport string) {
	const (
		viewers  = 3
		devices  = 4
		messages = 150 // per device, two readings each
		rate     = 300 // messages/s in all: half a second per device's share
	)
	prefix := "px" + strings.ReplaceAll(transport, "longpoll", "lp") + "-"
	baseMs := time.Now().UnixMilli()
	want := map[string]int{}
	for d := range devices {
		for _, m := range []string{simulators.MetricName(0), simulators.MetricName(1)} {
			want[simulators.DeviceID(prefix, d, devices)+"/"+m] = messages
		}
	}
	dl := newDeliveryLog(prefix, baseMs)
	counters := new(simulators.ViewersCounters)
	stop := startViewers(t, simulators.ViewersConfig{
		URL:        px.url,
		Viewers:    viewers,
		Transport:  transport,
		Series:     []string{"#"},
		PollWait:   2 * time.Second,
		Backoff:    50 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond,
		// A WebSocket client must not offer h2 in its TLS handshake:
		// browsers open WebSockets over HTTP/1.1 (nginx does not take
		// them over HTTP/2).
		HTTPClient: px.client(transport != simulators.TransportWS),
		Counters:   counters,
		OnEvent:    dl.add,
	})
	warmUp(t, n, counters, dl, viewers)

	load, err := simulators.RunLoad(context.Background(), simulators.LoadConfig{
		Addr:        n.broker.Addr(),
		Connections: devices,
		Messages:    messages,
		Rate:        rate,
		QoS:         1,
		IDPrefix:    prefix,
	}, nil)
	require.NoError(t, err)
	require.EqualValues(t, devices*messages, load.Acks, "QoS 1 acknowledgements")
	eventually(t, 20*time.Second, func() error {
		if err := dl.failure(); err != nil {
			t.Fatal(err) // a duplicate or a stray reading will not go away
		}
		return dl.complete(viewers, want, false)
	})

	// One reading into silence: with nothing after it to fill a proxy's
	// buffer, it arrives only if nothing buffers. Heartbeats (a few dozen
	// bytes each 250 ms) would take about a minute to push out a default
	// 4-8 KiB buffer.
	dev := newPaho(t, n.mqttURL, prefix+"ping")
	sent := time.Now()
	publish(t, dev, "telemetry/"+prefix+"ping/v", 1, fmt.Sprintf(`{"ts":%d,"value":1}`, sent.UnixMilli()))
	eventually(t, 10*time.Second, func() error { return dl.allReachedMs(viewers, sent.UnixMilli()) })
	alone := time.Since(sent)
	require.Less(t, alone, 2*time.Second, "a lone reading took %s through nginx", alone)

	if transport != simulators.TransportLongPoll { // long polls have no heartbeats
		before := counters.Snapshot().Total.Heartbeats
		eventually(t, 10*time.Second, func() error {
			if h := counters.Snapshot().Total.Heartbeats; h < before+viewers {
				return fmt.Errorf("%d heartbeats since the readings, want %d", h-before, viewers)
			}
			return nil
		})
	}

	stats := stop()
	ts := stats.Transports[transport]
	t.Logf("%s through nginx: %d viewers, %d readings each, lone reading in %s; latency p50 %s p99 %s max %s; %d heartbeats",
		transport, viewers, len(want)*messages, alone.Round(time.Millisecond), ts.Latency.P50, ts.Latency.P99, ts.Latency.Max, ts.Heartbeats)
	require.Zero(t, ts.Reconnects, "reconnects")
	require.Zero(t, ts.Errors, "errors")
	require.Zero(t, ts.Duplicates, "duplicates")
	require.Zero(t, ts.Gaps, "gaps")
	require.Zero(t, ts.Resets, "resets")
	require.Less(t, ts.Latency.P99, 2*time.Second, "p99 latency through nginx")
}

// TestNginxProxyKeepsIdleStreams proves, without waiting a minute, that
// the example keeps live streams open past nginx's read timeout. nginx cuts
// a proxied stream after proxy_read_timeout without a byte from the node;
// Telegauge's heartbeats reset that clock. Here the example's timeout for
// live routes is shortened to 1 s (the only change to the shipped file):
// with 200 ms heartbeats, idle SSE and WebSocket streams live on through
// many timeouts without a reconnect; against a node with 5 s heartbeats,
// the same proxy cuts an idle stream (the control, showing the timeout is
// in force). The shipped values themselves are checked by
// TestNginxConfigTimeouts.
func TestNginxProxyKeepsIdleStreams(t *testing.T) {
	short := func(conf string) string {
		live := `proxy_read_timeout 1h;`
		require.Equal(t, 1, strings.Count(conf, live), "the live location's read timeout")
		return strings.Replace(conf, live, `proxy_read_timeout 1s;`, 1)
	}
	t.Run("heartbeats", func(t *testing.T) {
		n := mustRunMain(t, "--heartbeat=200ms")
		px := startNginx(t, n.web.Addr(), short)
		for _, tr := range []string{simulators.TransportSSE, simulators.TransportWS} {
			counters := new(simulators.ViewersCounters)
			stop := startViewers(t, simulators.ViewersConfig{
				URL: px.url, Viewers: 2, Transport: tr, Series: []string{"idle/#"},
				HTTPClient: px.client(tr != simulators.TransportWS), Counters: counters,
			})
			// 20 heartbeats per viewer: 4 s, four of nginx's timeouts.
			eventually(t, 20*time.Second, func() error {
				if h := counters.Snapshot().Total.Heartbeats; h < 40 {
					return fmt.Errorf("%d heartbeats", h)
				}
				return nil
			})
			ts := stop().Transports[tr]
			require.Zero(t, ts.Reconnects, "%s reconnects", tr)
			require.Zero(t, ts.Errors, "%s errors", tr)
			require.EqualValues(t, 2, ts.Connections, "%s connections", tr)
		}
		require.NotContains(t, px.log(), "upstream timed out")
	})
	t.Run("control", func(t *testing.T) {
		n := mustRunMain(t, "--heartbeat=5s")
		px := startNginx(t, n.web.Addr(), short)
		counters := new(simulators.ViewersCounters)
		stop := startViewers(t, simulators.ViewersConfig{
			URL: px.url, Viewers: 1, Transport: simulators.TransportSSE, Series: []string{"idle/#"},
			Backoff: 50 * time.Millisecond, HTTPClient: px.client(true), Counters: counters,
		})
		eventually(t, 10*time.Second, func() error {
			if c := counters.Snapshot().Total.Connections; c < 2 {
				return fmt.Errorf("%d connections: the idle stream was not cut", c)
			}
			return nil
		})
		stop()
		require.Contains(t, px.log(), "upstream timed out")
	})
}

// TestNginxConfigTimeouts checks the shipped example's timeouts against
// the server's defaults: the live routes' read timeout must outlast two
// default heartbeats (15 s) and the longest long poll (60 s).
func TestNginxConfigTimeouts(t *testing.T) {
	b, err := os.ReadFile(shippedNginxConf)
	require.NoError(t, err)
	live := regexp.MustCompile(`(?s)location ~ \^/api/v1/\(stream\|ws\|poll\)\$ \{(.*?)\n    \}`).FindSubmatch(b)
	require.NotNil(t, live, "the live location")
	body := string(live[1])
	require.Contains(t, body, "proxy_buffering off;")
	for _, d := range []string{"proxy_read_timeout", "proxy_send_timeout"} {
		m := regexp.MustCompile(d + ` (\d+)([smh]);`).FindStringSubmatch(body)
		require.NotNil(t, m, d)
		v, _ := strconv.Atoi(m[1])
		got := time.Duration(v) * map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour}[m[2]]
		require.Greater(t, got, 2*15*time.Second, d)
		require.Greater(t, got, 60*time.Second, d)
	}
}

// nginxProxy is a running nginx in front of one node.
type nginxProxy struct {
	url      string // https://127.0.0.1:PORT
	plainURL string // http://127.0.0.1:PORT
	roots    *x509.CertPool
	dir      string
}

// client returns an HTTP client that trusts the proxy's certificate and
// offers HTTP/2 (h2) or only HTTP/1.1.
func (p *nginxProxy) client(h2 bool) *http.Client {
	tc := &tls.Config{RootCAs: p.roots, NextProtos: []string{"http/1.1"}}
	tr := &http.Transport{TLSClientConfig: tc, MaxIdleConnsPerHost: 16, ForceAttemptHTTP2: h2}
	if h2 {
		tc.NextProtos = []string{"h2", "http/1.1"}
	}
	return &http.Client{Transport: tr}
}

// log returns nginx's error log so far.
func (p *nginxProxy) log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "error.log"))
	return string(b)
}

// nginxBinary finds nginx, or skips the test (fails it in CI).
func nginxBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"nginx", "/usr/sbin/nginx"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("nginx is not installed (.ci/run installs Debian's nginx)")
	}
	t.Skip("nginx is not installed: apt-get install nginx")
	return ""
}

// startNginx runs nginx as its own process with the shipped example,
// its placeholders filled for free loopback ports, a fresh self-signed
// certificate and one upstream, and stops it by its PID when the test
// ends. edit, when set, may change the rendered example.
func startNginx(t *testing.T, upstream string, edit func(string) string) *nginxProxy {
	t.Helper()
	bin := nginxBinary(t)
	dir := t.TempDir()
	pair, roots := testutil.SelfSigned(t, "127.0.0.1")
	cert, key := testutil.WritePEM(t, dir, pair)
	httpsPort, httpPort := freePort(t), freePort(t)
	src, err := os.ReadFile(shippedNginxConf)
	require.NoError(t, err)
	site := string(src)
	for k, v := range map[string]string{
		"TELEGAUGE_SERVER_NAME":      "127.0.0.1",
		"TELEGAUGE_HTTPS_PORT":       "127.0.0.1:" + strconv.Itoa(httpsPort),
		"TELEGAUGE_HTTP_PORT":        "127.0.0.1:" + strconv.Itoa(httpPort),
		"TELEGAUGE_TLS_CERT":         cert,
		"TELEGAUGE_TLS_KEY":          key,
		"TELEGAUGE_UPSTREAM_SERVERS": "server " + upstream + ";",
	} {
		require.Contains(t, site, "${"+k+"}")
		site = strings.ReplaceAll(site, "${"+k+"}", v)
	}
	require.NotContains(t, site, "${", "a placeholder the test does not know")
	if edit != nil {
		site = edit(site)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "telegauge.conf"), []byte(site), 0o644))

	// The main file is what an installation provides around the
	// example: here everything lives in the test's directory.
	var main bytes.Buffer
	if os.Geteuid() == 0 {
		main.WriteString("user root;\n") // the temporary directories are root's
	}
	fmt.Fprintf(&main, `daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/telegauge.conf;
}
`, dir)
	mainConf := filepath.Join(dir, "nginx.conf")
	require.NoError(t, os.WriteFile(mainConf, main.Bytes(), 0o644))
	args := []string{"-p", dir, "-c", mainConf, "-e", filepath.Join(dir, "error.log")}
	out, err := exec.Command(bin, append([]string{"-t", "-q"}, args...)...).CombinedOutput()
	require.NoError(t, err, "nginx -t: %s", out)

	cmd := exec.Command(bin, args...)
	var stderr testutil.LogBuffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // nginx's fast shutdown
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Error("nginx did not stop on SIGTERM")
		}
	})
	px := &nginxProxy{
		url:      "https://127.0.0.1:" + strconv.Itoa(httpsPort),
		plainURL: "http://127.0.0.1:" + strconv.Itoa(httpPort),
		roots:    roots,
		dir:      dir,
	}
	c := px.client(false)
	eventually(t, 10*time.Second, func() error {
		select {
		case err := <-exited:
			t.Fatalf("nginx exited: %v: %s", err, stderr.String())
		default:
		}
		resp, err := c.Get(px.url + "/readyz")
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz through nginx: %s", resp.Status)
		}
		return nil
	})
	c.CloseIdleConnections()
	return px
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
