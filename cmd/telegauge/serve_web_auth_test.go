//go:build integration

package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// httpStatus GETs u with client (nil: a plain one) and the header, and
// returns the status and body.
func httpStatus(t testing.TB, client *http.Client, method, u, body string, header http.Header) (int, string) {
	t.Helper()
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	require.NoError(t, err)
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// sseReader reads an SSE response's data lines on a goroutine of its own
// (which never touches t) until the stream ends.
type sseReader struct {
	data chan string
	done chan struct{}
}

func openStream(t testing.TB, client *http.Client, u string) *sseReader {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	require.NoError(t, err)
	resp, err := client.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	require.Equal(t, http.StatusOK, resp.StatusCode)
	r := &sseReader{data: make(chan string, 1024), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				select {
				case r.data <- d:
				default:
				}
			}
		}
	}()
	return r
}

// waitData waits for a data line containing s.
func (r *sseReader) waitData(t testing.TB, s string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case d := <-r.data:
			if strings.Contains(d, s) {
				return
			}
		case <-r.done:
			t.Fatalf("stream ended before %q", s)
		case <-deadline:
			t.Fatalf("no %q on the stream", s)
		}
	}
}

// waitEnd waits until the server ends the stream.
func (r *sseReader) waitEnd(t testing.TB, what string) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the stream is still open", what)
	}
}

// jarClient is a browser-like client: it keeps cookies.
func jarClient(t testing.TB, tr http.RoundTripper) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &http.Client{Jar: jar, Transport: tr}
}

// TestUsersBesideRunningServer: on a loopback server anonymous viewers get
// in until `telegauge users add` (run beside it) turns logins on, at once:
// anonymous streams end. The printed token is the login password and an
// API token; `users remove` ends the user's session and live stream at
// once. With no user left, it is anonymous again.
func TestUsersBesideRunningServer(t *testing.T) {
	dir := t.TempDir()
	n := mustRunMain(t, "--data-dir="+dir)
	flags := RecordsFlags{DataDir: dir}
	var me map[string]string
	require.Equal(t, http.StatusOK, getJSON(t, n.httpURL+"/api/v1/me", &me))
	require.Equal(t, "anonymous", me["auth"])
	anon := openStream(t, http.DefaultClient, n.httpURL+"/api/v1/stream?series=%23")

	token, _, err := addUser(t.Context(), flags, "ann", "admin")
	require.NoError(t, err)
	anon.waitEnd(t, "the anonymous stream after the first user")
	_, _, err = addUser(t.Context(), flags, "bob", "viewer")
	require.NoError(t, err)
	eventually(t, 10*time.Second, func() error {
		if st, body := httpStatus(t, nil, http.MethodGet, n.httpURL+"/api/v1/devices", "", nil); st != http.StatusUnauthorized {
			return fmt.Errorf("anonymous: %d %s", st, body)
		}
		return nil
	})
	st, body := httpStatus(t, nil, http.MethodGet, n.httpURL+"/api/v1/devices", "", http.Header{"Authorization": {"Bearer " + token}})
	require.Equal(t, http.StatusOK, st, body)

	browser := jarClient(t, nil)
	st, body = httpStatus(t, browser, http.MethodPost, n.httpURL+"/api/v1/login", `{"name":"ann","password":"`+token+`"}`,
		http.Header{"Content-Type": {"application/json"}, "Origin": {n.httpURL}})
	require.Equal(t, http.StatusOK, st, body)
	st, body = httpStatus(t, browser, http.MethodPost, n.httpURL+"/api/v1/dashboards", `{"name":"b","panels":[]}`,
		http.Header{"Content-Type": {"application/json"}, "Origin": {n.httpURL}})
	require.Equal(t, http.StatusCreated, st, body)
	live := openStream(t, browser, n.httpURL+"/api/v1/stream?series=boiler-1/%23")
	dev := newPaho(t, n.mqttURL, "boiler-1")
	publish(t, dev, "telemetry/boiler-1", 1, `{"t":21.5}`)
	live.waitData(t, `"s":"boiler-1/t"`)

	require.NoError(t, removeUser(t.Context(), flags, "ann"))
	live.waitEnd(t, "ann's stream after users remove")
	st, _ = httpStatus(t, browser, http.MethodGet, n.httpURL+"/api/v1/me", "", nil)
	require.Equal(t, http.StatusUnauthorized, st)
	st, _ = httpStatus(t, nil, http.MethodGet, n.httpURL+"/api/v1/me", "", http.Header{"Authorization": {"Bearer " + token}})
	require.Equal(t, http.StatusUnauthorized, st)

	// The last user gone, a loopback server is anonymous again.
	require.NoError(t, removeUser(t.Context(), flags, "bob"))
	eventually(t, 10*time.Second, func() error {
		if st, body := httpStatus(t, nil, http.MethodGet, n.httpURL+"/api/v1/devices", "", nil); st != http.StatusOK {
			return fmt.Errorf("anonymous: %d %s", st, body)
		}
		return nil
	})
}

// TestWebProtectedMode: a non-loopback HTTP listener needs a user to start,
// and then wants a login; --auth required wants one on loopback too;
// --db memory (no records) stays anonymous on loopback.
func TestWebProtectedMode(t *testing.T) {
	t.Run("public without users", func(t *testing.T) {
		c, _, err := parseCLI(t, "serve", "--http-addr=0.0.0.0:0", "--mqtt-addr=127.0.0.1:0", "--data-dir="+t.TempDir())
		require.NoError(t, err)
		_, err = c.Serve.build(slog.New(slog.DiscardHandler))
		require.ErrorContains(t, err, "telegauge users add")
	})
	t.Run("public with a user", func(t *testing.T) {
		dir := t.TempDir()
		token, _, err := addUser(t.Context(), RecordsFlags{DataDir: dir}, "vic", "viewer")
		require.NoError(t, err)
		n := mustRunMain(t, "--data-dir="+dir, "--http-addr=0.0.0.0:0")
		_, port, err := net.SplitHostPort(n.web.Addr())
		require.NoError(t, err)
		base := "http://127.0.0.1:" + port
		st, _ := httpStatus(t, nil, http.MethodGet, base+"/api/v1/devices", "", nil)
		require.Equal(t, http.StatusUnauthorized, st)
		st, body := httpStatus(t, nil, http.MethodGet, base+"/api/v1/devices", "", http.Header{"Authorization": {"Bearer " + token}})
		require.Equal(t, http.StatusOK, st, body)
		st, _ = httpStatus(t, nil, http.MethodGet, base+"/healthz", "", nil)
		require.Equal(t, http.StatusOK, st, "health checks need no credentials")
		st, _ = httpStatus(t, nil, http.MethodGet, base+"/metrics", "", nil)
		require.Equal(t, http.StatusUnauthorized, st, "metrics do")
		// Every user removed: still no anonymous access off loopback.
		require.NoError(t, removeUser(t.Context(), RecordsFlags{DataDir: dir}, "vic"))
		eventually(t, 10*time.Second, func() error {
			if st, _ := httpStatus(t, nil, http.MethodGet, base+"/api/v1/devices", "", http.Header{"Authorization": {"Bearer " + token}}); st != http.StatusUnauthorized {
				return fmt.Errorf("removed user: %d", st)
			}
			return nil
		})
		st, _ = httpStatus(t, nil, http.MethodGet, base+"/api/v1/devices", "", nil)
		require.Equal(t, http.StatusUnauthorized, st)
	})
	t.Run("required on loopback", func(t *testing.T) {
		n := mustRunMain(t, "--auth=required")
		st, _ := httpStatus(t, nil, http.MethodGet, n.httpURL+"/api/v1/devices", "", nil)
		require.Equal(t, http.StatusUnauthorized, st)
	})
	t.Run("memory on loopback", func(t *testing.T) {
		n := mustRunMain(t, "--db=memory")
		var me map[string]string
		require.Equal(t, http.StatusOK, getJSON(t, n.httpURL+"/api/v1/me", &me))
		require.Equal(t, "anonymous", me["auth"])
	})
}

// TestServeHTTPS: --tls-cert and --tls-key make the HTTP listener speak
// HTTPS, with HSTS and a Secure session cookie, live streams included.
func TestServeHTTPS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, cert := writeCert(t, t.TempDir(), "telegauge")
	token, _, err := addUser(t.Context(), RecordsFlags{DataDir: dir}, "ann", "admin")
	require.NoError(t, err)
	n := mustRunMain(t, "--data-dir="+dir, "--tls-cert="+certFile, "--tls-key="+keyFile)
	base := n.dashboardURL()
	require.True(t, strings.HasPrefix(base, "https://127.0.0.1:"), base)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	browser := jarClient(t, tr)

	resp, err := browser.Get(base + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, "max-age=31536000", resp.Header.Get("Strict-Transport-Security"))

	resp, err = browser.Post(base+"/api/v1/login", "application/json", strings.NewReader(`{"name":"ann","password":"`+token+`"}`))
	require.NoError(t, err)
	var me map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&me))
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "ann", me["user"])
	require.Len(t, resp.Cookies(), 1)
	require.Equal(t, "__Host-telegauge_session", resp.Cookies()[0].Name)
	require.True(t, resp.Cookies()[0].Secure)
	require.True(t, resp.Cookies()[0].HttpOnly)

	live := openStream(t, browser, base+"/api/v1/stream?series=boiler-1/%23")
	dev := newPaho(t, n.mqttURL, "boiler-1")
	publish(t, dev, "telemetry/boiler-1", 1, `{"t":1}`)
	live.waitData(t, `"s":"boiler-1/t"`)
}
