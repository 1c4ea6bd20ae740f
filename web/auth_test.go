package web

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/internal/secret"
	"github.com/telegauge/telegauge/internal/testutil"
)

// operator is a test user with its token.
type operator struct {
	User
	token string
}

// newOperator makes a user with a fresh token.
func newOperator(t testing.TB, name string, role Role) operator {
	t.Helper()
	tok, err := secret.NewToken()
	require.NoError(t, err)
	h, err := secret.Hash(tok)
	require.NoError(t, err)
	return operator{User: User{Name: name, Role: role, TokenHash: h}, token: tok}
}

// withOperators requires credentials and gives the users.
func withOperators(ops ...operator) testOption {
	return withWeb(func(c *Config) {
		c.Access = accessOf(ops...)
	})
}

func accessOf(ops ...operator) Access {
	a := Access{Required: true}
	for _, o := range ops {
		a.Users = append(a.Users, o.User)
	}
	return a
}

// request is one HTTP request of a test.
type request struct {
	method, path, body string
	header             http.Header
	client             *http.Client // nil: a plain client
}

// do sends r to ts and returns the response, its body read and closed.
func (ts *testServer) do(t testing.TB, r request) (*http.Response, []byte) {
	t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req, err := http.NewRequest(cmpOr(r.method, http.MethodGet), ts.url+r.path, body)
	require.NoError(t, err)
	for k, vs := range r.header {
		req.Header[k] = vs
	}
	if r.body != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	client := r.client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// bearer is an Authorization header with a token.
func bearer(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

// requireError checks an answer is status with a JSON {"error"}.
func requireError(t testing.TB, status int, resp *http.Response, body []byte) string {
	t.Helper()
	require.Equal(t, status, resp.StatusCode, "body %s", body)
	require.Contains(t, resp.Header.Get("Content-Type"), "application/json")
	var e errorBody
	require.NoError(t, json.Unmarshal(body, &e), "body %s", body)
	require.NotEmpty(t, e.Error)
	return e.Error
}

// login logs in and returns the session cookie.
func (ts *testServer) login(t testing.TB, name, password string) *http.Cookie {
	t.Helper()
	resp, body := ts.do(t, request{method: http.MethodPost, path: "/api/v1/login",
		body: `{"name":"` + name + `","password":"` + password + `"}`})
	require.Equal(t, http.StatusOK, resp.StatusCode, "login: %s", body)
	for _, c := range resp.Cookies() {
		if strings.HasSuffix(c.Name, "telegauge_session") && c.Value != "" {
			return c
		}
	}
	t.Fatalf("login set no session cookie: %v", resp.Header.Values("Set-Cookie"))
	return nil
}

// withCookie is a header carrying the session cookie, and the Origin of
// the server's own pages.
func (ts *testServer) withCookie(c *http.Cookie) http.Header {
	return http.Header{"Cookie": {c.Name + "=" + c.Value}, "Origin": {ts.url}}
}

const boardJSON = `{"name":"b","panels":[{"title":"p","series":["dev1/#"],"range":"1h"}]}`

// TestSecurityHeaders: every answer (UI, API, errors, streams, health)
// carries the security headers; HSTS only over TLS (TestTLS).
func TestSecurityHeaders(t *testing.T) {
	ts := newTestServer(t)
	check := func(t *testing.T, h http.Header) {
		t.Helper()
		csp := h.Get("Content-Security-Policy")
		require.Contains(t, csp, "frame-ancestors 'none'")
		require.Contains(t, csp, "object-src 'none'")
		require.NotContains(t, csp, "unsafe-eval")
		require.Equal(t, "nosniff", h.Get("X-Content-Type-Options"))
		require.Equal(t, "same-origin", h.Get("Referrer-Policy"))
		require.Equal(t, "DENY", h.Get("X-Frame-Options"))
		require.Empty(t, h.Get("Strict-Transport-Security"), "no HSTS over plain HTTP")
	}
	for _, path := range []string{"/", "/index.html", "/api/v1/devices", "/api/v1/nope", "/api/v1/query?series=x&step=bad", "/healthz", "/readyz", "/metrics", "/api/v1/me"} {
		t.Run(path, func(t *testing.T) {
			resp, _ := ts.do(t, request{path: path})
			check(t, resp.Header)
		})
	}
	t.Run("stream", func(t *testing.T) {
		s := openSSE(t, ts, "/api/v1/stream?series=dev1/%23", nil)
		check(t, s.resp.Header)
	})
	if uiBuilt() {
		resp, _ := ts.do(t, request{path: "/"})
		require.Equal(t, builtCSP, resp.Header.Get("Content-Security-Policy"), "the built UI has no inline script or style")
	}
}

// TestPlainCSP: the placeholder page's inline script is allowed by its
// hash, and nothing else inline is.
func TestPlainCSP(t *testing.T) {
	csp := plainCSP([]byte("<p>x</p><script>alert(1)</script>"))
	require.Contains(t, csp, "script-src 'self' 'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='")
	require.NotContains(t, csp, "script-src 'self' 'unsafe-inline'")
}

// TestAnonymousAccess: without Access.Required (loopback, no credentials:
// protected mode in cmd) everything works as before, with every right;
// but a page on another site still cannot change anything.
func TestAnonymousAccess(t *testing.T) {
	ts := newTestServer(t)
	var me meBody
	require.Equal(t, http.StatusOK, getJSON(t, ts.url+"/api/v1/me", &me))
	require.Equal(t, meBody{Role: RoleAdmin, Auth: "anonymous"}, me)
	resp, body := ts.do(t, request{method: http.MethodPost, path: "/api/v1/dashboards", body: boardJSON})
	require.Equal(t, http.StatusCreated, resp.StatusCode, "a script (no Origin) may: %s", body)
	resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/dashboards", body: boardJSON, header: http.Header{"Origin": {ts.url}}})
	require.Equal(t, http.StatusCreated, resp.StatusCode, "the dashboard's own page may: %s", body)
	resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/dashboards", body: boardJSON, header: http.Header{"Origin": {"http://evil.example"}}})
	require.Contains(t, requireError(t, http.StatusForbidden, resp, body), "cross-site")
	resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/dashboards", body: boardJSON, header: http.Header{"Referer": {"http://evil.example/page"}}})
	requireError(t, http.StatusForbidden, resp, body)
	resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/login", body: `{"name":"x","password":"y"}`})
	requireError(t, http.StatusUnauthorized, resp, body)
}

// TestAuthRequired: with access required, every API route, live transport
// and /metrics answers 401 (JSON, with a Bearer challenge) to a request
// without credentials or with bad ones; health checks and the UI's files
// (the login page) stay open.
func TestAuthRequired(t *testing.T) {
	ann := newOperator(t, "ann", RoleAdmin)
	ts := newTestServer(t, withOperators(ann))
	stranger, err := secret.NewToken()
	require.NoError(t, err)
	for _, tc := range []struct {
		name   string
		method string
		path   string
		header http.Header
	}{
		{"devices", "", "/api/v1/devices", nil},
		{"query", "", "/api/v1/query?series=dev1/a", nil},
		{"export", "", "/api/v1/export?series=dev1/a", nil},
		{"sse", "", "/api/v1/stream?series=dev1/%23", nil},
		{"poll", "", "/api/v1/poll?series=dev1/%23&wait=0", nil},
		{"ws (no upgrade)", "", "/api/v1/ws?series=dev1/%23", nil},
		{"dashboards", "", "/api/v1/dashboards", nil},
		{"dashboard", "", "/api/v1/dashboards/abc", nil},
		{"create dashboard", http.MethodPost, "/api/v1/dashboards", nil},
		{"delete dashboard", http.MethodDelete, "/api/v1/dashboards/abc", nil},
		{"me", "", "/api/v1/me", nil},
		{"unknown endpoint", "", "/api/v1/nope", nil},
		{"metrics", "", "/metrics", nil},
		{"unknown token", "", "/api/v1/devices", bearer(stranger)},
		{"empty token", "", "/api/v1/devices", http.Header{"Authorization": {"Bearer "}}},
		{"basic auth", "", "/api/v1/devices", http.Header{"Authorization": {"Basic YW5uOnB3"}}},
		{"unknown session", "", "/api/v1/devices", http.Header{"Cookie": {"telegauge_session=forged"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := ts.do(t, request{method: tc.method, path: tc.path, header: tc.header})
			requireError(t, http.StatusUnauthorized, resp, body)
			require.Equal(t, `Bearer realm="telegauge"`, resp.Header.Get("WWW-Authenticate"))
			require.NotEmpty(t, resp.Header.Get("Content-Security-Policy"))
		})
	}
	t.Run("websocket handshake", func(t *testing.T) {
		_, resp, err := dialWSRaw(ts, "/api/v1/ws?series=dev1/%23", wsDialOptions{})
		require.ErrorIs(t, err, websocket.ErrBadHandshake)
		requireJSONError(t, http.StatusUnauthorized, resp)
	})
	for _, path := range []string{"/healthz", "/readyz", "/"} {
		resp, body := ts.do(t, request{path: path})
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, body)
	}
	require.Equal(t, float64(18), ts.metric(t, "telegauge_web_requests_denied_total", map[string]string{"reason": "unauthenticated"}))
}

// TestRoles: a viewer reads everything and changes nothing; an admin also
// manages dashboards. Both work with bearer tokens (scripts) and cookies.
func TestRoles(t *testing.T) {
	ann, vic := newOperator(t, "ann", RoleAdmin), newOperator(t, "vic", RoleViewer)
	ts := newTestServer(t, withOperators(ann, vic))
	ts.offer(t, point{"dev1/a", ts.nowMs(), 1})

	// The admin makes a board the viewer then reads.
	resp, body := ts.do(t, request{method: http.MethodPost, path: "/api/v1/dashboards", body: boardJSON, header: bearer(ann.token)})
	require.Equal(t, http.StatusCreated, resp.StatusCode, "%s", body)
	var board struct{ ID string }
	require.NoError(t, json.Unmarshal(body, &board))

	for _, tc := range []struct {
		name, method, path, body string
		viewer, admin            int
	}{
		{"devices", "", "/api/v1/devices", "", 200, 200},
		{"query", "", "/api/v1/query?series=dev1/a", "", 200, 200},
		{"export", "", "/api/v1/export?series=dev1/a", "", 200, 200},
		{"poll", "", "/api/v1/poll?series=dev1/%23", "", 200, 200},
		{"list dashboards", "", "/api/v1/dashboards", "", 200, 200},
		{"read dashboard", "", "/api/v1/dashboards/" + board.ID, "", 200, 200},
		{"metrics", "", "/metrics", "", 200, 200},
		{"me", "", "/api/v1/me", "", 200, 200},
		{"create dashboard", http.MethodPost, "/api/v1/dashboards", boardJSON, 403, 201},
		{"replace dashboard", http.MethodPut, "/api/v1/dashboards/" + board.ID, boardJSON, 403, 200},
		{"delete dashboard", http.MethodDelete, "/api/v1/dashboards/" + board.ID, "", 403, 204},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, who := range []struct {
				op   operator
				want int
			}{{vic, tc.viewer}, {ann, tc.admin}} {
				resp, body := ts.do(t, request{method: tc.method, path: tc.path, body: tc.body, header: bearer(who.op.token)})
				if who.want == http.StatusForbidden {
					require.Contains(t, requireError(t, http.StatusForbidden, resp, body), "admin role")
					continue
				}
				require.Equal(t, who.want, resp.StatusCode, "%s: %s", who.op.Name, body)
			}
		})
	}
	var me meBody
	require.Equal(t, http.StatusOK, doJSON(t, ts.url+"/api/v1/me", bearer(vic.token), &me))
	require.Equal(t, meBody{User: "vic", Role: RoleViewer, Auth: "token"}, me)
	require.Equal(t, float64(3), ts.metric(t, "telegauge_web_requests_denied_total", map[string]string{"reason": "forbidden"}))

	// Live transports with a token.
	s := openSSE(t, ts, "/api/v1/stream?series=dev1/%23", bearer(vic.token))
	s.open(t)
	ws := dialWS(t, ts, "/api/v1/ws?series=dev1/%23", wsDialOptions{header: bearer(vic.token)}).start()
	ws.nextOf(t, "subscribed")
}

// TestLogin: the login page's endpoint gives a session cookie (HttpOnly,
// SameSite=Strict, not Secure over plain HTTP), which then works like a
// token for reads, and for writes from the server's own pages only
// (CSRF); logout ends it.
func TestLogin(t *testing.T) {
	ann, vic := newOperator(t, "ann", RoleAdmin), newOperator(t, "vic", RoleViewer)
	ts := newTestServer(t, withOperators(ann, vic))

	for _, tc := range []struct {
		name, body, ctype string
		status            int
	}{
		{"wrong password", `{"name":"ann","password":"` + vic.token + `"}`, "", 401},
		{"unknown user", `{"name":"zed","password":"` + ann.token + `"}`, "", 401},
		{"missing password", `{"name":"ann"}`, "", 400},
		{"not JSON", `name=ann`, "", 400},
		{"oversized password", `{"name":"ann","password":"` + strings.Repeat("x", 1000) + `"}`, "", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := ts.do(t, request{method: http.MethodPost, path: "/api/v1/login", body: tc.body})
			msg := requireError(t, tc.status, resp, body)
			if tc.status == 401 {
				require.Equal(t, "wrong name or password", msg, "the same answer whether or not the user exists")
			}
			require.Empty(t, resp.Cookies())
		})
	}

	// A form works too (a plain HTML form, no script).
	resp, body := ts.do(t, request{method: http.MethodPost, path: "/api/v1/login",
		body: url.Values{"name": {"vic"}, "password": {vic.token}}.Encode(), header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}})
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)

	resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/login", body: `{"name":"ann","password":"` + ann.token + `"}`})
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	var me meBody
	require.NoError(t, json.Unmarshal(body, &me))
	require.Equal(t, meBody{User: "ann", Role: RoleAdmin, Auth: "session"}, me)
	raw := resp.Header.Get("Set-Cookie")
	for _, attr := range []string{"telegauge_session=", "HttpOnly", "SameSite=Strict", "Path=/", "max-age=604800"} {
		require.Contains(t, strings.ToLower(raw), strings.ToLower(attr), "Set-Cookie: %s", raw)
	}
	require.NotContains(t, strings.ToLower(raw), "secure", "not Secure over plain HTTP")
	ck := resp.Cookies()[0]

	cookieOnly := http.Header{"Cookie": {ck.Name + "=" + ck.Value}}
	require.Equal(t, http.StatusOK, doJSON(t, ts.url+"/api/v1/me", cookieOnly, &me))
	require.Equal(t, "session", me.Auth)
	resp, body = ts.do(t, request{path: "/api/v1/devices", header: cookieOnly})
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)

	// CSRF: a write with the cookie needs the server's own Origin (or
	// Referer); a bearer token needs neither.
	for _, tc := range []struct {
		name   string
		header http.Header
		status int
	}{
		{"no origin", cookieOnly, 403},
		{"other origin", http.Header{"Cookie": cookieOnly["Cookie"], "Origin": {"http://evil.example"}}, 403},
		{"null origin", http.Header{"Cookie": cookieOnly["Cookie"], "Origin": {"null"}}, 403},
		{"other referer", http.Header{"Cookie": cookieOnly["Cookie"], "Referer": {"http://evil.example/x"}}, 403},
		{"own origin", ts.withCookie(ck), 201},
		{"origin of a proxy's host", http.Header{"Cookie": cookieOnly["Cookie"], "Origin": {"https://ops.example"}, "X-Forwarded-Host": {"ops.example"}}, 201},
		{"own referer", http.Header{"Cookie": cookieOnly["Cookie"], "Referer": {ts.url + "/#/dashboards"}}, 201},
		{"token, no origin", bearer(ann.token), 201},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := ts.do(t, request{method: http.MethodPost, path: "/api/v1/dashboards", body: boardJSON, header: tc.header})
			if tc.status == 403 {
				require.Contains(t, requireError(t, 403, resp, body), "cross-site")
				return
			}
			require.Equal(t, tc.status, resp.StatusCode, "%s", body)
		})
	}
	require.Equal(t, float64(4), ts.metric(t, "telegauge_web_requests_denied_total", map[string]string{"reason": "cross_site"}))
	// Login CSRF: another site's page cannot log the browser in.
	resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/login", body: `{"name":"ann","password":"` + ann.token + `"}`,
		header: http.Header{"Origin": {"http://evil.example"}}})
	requireError(t, http.StatusForbidden, resp, body)

	// A live stream opened with the session ends at logout.
	s := openSSE(t, ts, "/api/v1/stream?series=dev1/%23", cookieOnly)
	s.open(t)
	resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/logout", header: ts.withCookie(ck)})
	require.Equal(t, http.StatusNoContent, resp.StatusCode, "%s", body)
	require.Contains(t, resp.Header.Get("Set-Cookie"), "telegauge_session=;")
	require.Contains(t, resp.Header.Get("Set-Cookie"), "expires=")
	require.ErrorIs(t, s.waitEnd(t), io.EOF, "ended cleanly")
	resp, body = ts.do(t, request{path: "/api/v1/me", header: cookieOnly})
	require.Contains(t, requireError(t, http.StatusUnauthorized, resp, body), "log in again")
	// Logging out again, or without a session, is fine.
	resp, _ = ts.do(t, request{method: http.MethodPost, path: "/api/v1/logout", header: ts.withCookie(ck)})
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	require.Equal(t, float64(2), ts.metric(t, "telegauge_web_logins_total", map[string]string{"result": "ok"}))
	require.Equal(t, float64(3), ts.metric(t, "telegauge_web_logins_total", map[string]string{"result": "failed"}))
}

// TestUnknownUserCostsAHash: a login naming nobody runs the slow hash as a
// wrong password does, so its timing does not tell which names exist.
func TestUnknownUserCostsAHash(t *testing.T) {
	ann := newOperator(t, "ann", RoleAdmin)
	ts := newTestServer(t, withOperators(ann))
	hashes := func() int64 { return ts.srv.auth.hashes.Load() }
	for _, name := range []string{"ann", "nobody"} {
		before := hashes()
		resp, body := ts.do(t, request{method: http.MethodPost, path: "/api/v1/login", body: `{"name":"` + name + `","password":"wrong"}`})
		requireError(t, http.StatusUnauthorized, resp, body)
		require.Equal(t, before+1, hashes(), name)
	}
}

// TestSessionExpiry: a session ends after SessionIdle without use, and
// SessionMaxAge after login however much it is used (fake clock).
func TestSessionExpiry(t *testing.T) {
	ann := newOperator(t, "ann", RoleAdmin)
	ts := newTestServer(t, withOperators(ann), withWeb(func(c *Config) {
		c.Auth.SessionIdle, c.Auth.SessionMaxAge = time.Hour, 3*time.Hour
	}))
	me := func(ck *http.Cookie) int {
		resp, _ := ts.do(t, request{path: "/api/v1/me", header: ts.withCookie(ck)})
		return resp.StatusCode
	}
	idle := ts.login(t, "ann", ann.token)
	used := ts.login(t, "ann", ann.token)
	ts.advance(59 * time.Minute)
	require.Equal(t, 200, me(used))
	ts.advance(2 * time.Minute)
	require.Equal(t, 401, me(idle), "an hour idle")
	require.Equal(t, 200, me(used), "used a minute ago")
	for range 2 {
		ts.advance(59 * time.Minute)
		require.Equal(t, 200, me(used))
	}
	ts.advance(2 * time.Minute) // 3 h 1 min after login
	require.Equal(t, 401, me(used), "past the maximum age")
}

// TestSessionBounds: sessions are bounded per user and in all; the least
// recently used go first.
func TestSessionBounds(t *testing.T) {
	ann, bob := newOperator(t, "ann", RoleAdmin), newOperator(t, "bob", RoleViewer)
	ts := newTestServer(t, withOperators(ann, bob), withWeb(func(c *Config) {
		c.Auth.MaxSessions, c.Auth.MaxSessionsPerUser = 3, 2
	}))
	me := func(ck *http.Cookie) int {
		resp, _ := ts.do(t, request{path: "/api/v1/me", header: ts.withCookie(ck)})
		return resp.StatusCode
	}
	a1 := ts.login(t, "ann", ann.token)
	ts.advance(time.Second)
	a2 := ts.login(t, "ann", ann.token)
	ts.advance(time.Second)
	a3 := ts.login(t, "ann", ann.token) // ann's third: her oldest ends
	require.Equal(t, []int{401, 200, 200}, []int{me(a1), me(a2), me(a3)})
	ts.advance(time.Second)
	require.Equal(t, 200, me(a2)) // a3 is now ann's least recently used
	b1 := ts.login(t, "bob", bob.token)
	ts.advance(time.Second)
	b2 := ts.login(t, "bob", bob.token) // the fourth in all: the least recently used (a3) ends
	require.Equal(t, []int{200, 401, 200, 200}, []int{me(a2), me(a3), me(b1), me(b2)})
}

// TestLoginRateLimit: failed logins are limited per client address and
// per user name, with a counter, a Retry-After and one log line per
// episode; the limit refills with time; a success costs nothing.
func TestLoginRateLimit(t *testing.T) {
	ann, bob := newOperator(t, "ann", RoleAdmin), newOperator(t, "bob", RoleViewer)
	ts := newTestServer(t, withOperators(ann, bob), withWeb(func(c *Config) {
		c.Auth.LoginBurst, c.Auth.LoginRefill = 3, time.Minute
	}))
	// Clients on several loopback addresses: 127.0.0.0/8 is all local.
	from := func(ip string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		tr := &http.Transport{DialContext: d.DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}
	}
	login := func(c *http.Client, name, password string) (*http.Response, []byte) {
		return ts.do(t, request{client: c, method: http.MethodPost, path: "/api/v1/login", body: `{"name":"` + name + `","password":"` + password + `"}`})
	}
	hashes := func() int64 { return ts.srv.auth.hashes.Load() }

	// Per address: three failures, then 429 even with the right password,
	// and without hashing.
	c2 := from("127.0.0.2")
	for _, name := range []string{"x1", "x2", "x3"} {
		resp, body := login(c2, name, "wrong")
		requireError(t, http.StatusUnauthorized, resp, body)
	}
	before := hashes()
	resp, body := login(c2, "bob", bob.token)
	require.Contains(t, requireError(t, http.StatusTooManyRequests, resp, body), "try again in 60 s")
	require.Equal(t, "60", resp.Header.Get("Retry-After"))
	require.Equal(t, before, hashes(), "a limited attempt costs no hash")
	// Bad API tokens count against the address as well.
	resp, body = ts.do(t, request{client: c2, path: "/api/v1/devices", header: bearer("tg_wrong")})
	requireError(t, http.StatusTooManyRequests, resp, body)

	// Per user name: ann's failures from three addresses lock her name,
	// not bob's, nor the addresses.
	for _, ip := range []string{"127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		resp, body := login(from(ip), "ann", "wrong")
		requireError(t, http.StatusUnauthorized, resp, body)
	}
	c6 := from("127.0.0.6")
	resp, body = login(c6, "ann", ann.token)
	requireError(t, http.StatusTooManyRequests, resp, body)
	// A success costs nothing: bob logs in again and again.
	for range 5 {
		resp, body = login(c6, "bob", bob.token)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	}
	require.Equal(t, float64(2), ts.metric(t, "telegauge_web_logins_total", map[string]string{"result": "rate_limited"}))

	// A minute later each has one attempt back.
	ts.advance(time.Minute)
	resp, body = login(c2, "ann", ann.token)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
}

// TestRevocation: removing a user (or re-issuing its token) ends its
// sessions, token and live streams on every transport at once, while other
// operators' streams go on.
func TestRevocation(t *testing.T) {
	ann, bob := newOperator(t, "ann", RoleAdmin), newOperator(t, "bob", RoleViewer)
	ts := newTestServer(t, withOperators(ann, bob))
	ck := ts.login(t, "ann", ann.token)

	annSSE := openSSE(t, ts, "/api/v1/stream?series=dev1/%23", ts.withCookie(ck))
	annSSE.open(t)
	annWS := dialWS(t, ts, "/api/v1/ws?series=dev1/%23", wsDialOptions{header: bearer(ann.token)}).start()
	annWS.nextOf(t, "subscribed")
	_, first := pollWith(t, ts, "series=dev1/%23", bearer(ann.token))
	annPoll := pollWithAsync(ts, "series=dev1/%23&wait=30s&cursor="+first.Cursor, bearer(ann.token))
	ts.blockUntilWaiters(t, 1) // the long poll waits
	bobSSE := openSSE(t, ts, "/api/v1/stream?series=dev1/%23", bearer(bob.token))
	bobSSE.open(t)
	ts.waitLive(t, "sse", 2)

	ts.srv.SetAccess(accessOf(bob)) // `telegauge users remove ann`

	require.ErrorIs(t, annSSE.waitEnd(t), io.EOF)
	ce := requireCloseCode(t, websocket.ClosePolicyViolation, annWS.waitClose(t))
	require.Equal(t, "credentials revoked", ce.Text)
	r := <-annPoll
	require.NoError(t, r.err)
	require.Equal(t, http.StatusUnauthorized, r.status, "the waiting long poll: %s", r.body)
	for _, h := range []http.Header{ts.withCookie(ck), bearer(ann.token)} {
		resp, body := ts.do(t, request{path: "/api/v1/devices", header: h})
		requireError(t, http.StatusUnauthorized, resp, body)
	}
	// bob's stream goes on.
	ts.publish(t, point{"dev1/a", ts.nowMs(), 7})
	_, pts := framePoints(t, bobSSE.nextEvent(t))
	require.Equal(t, []point{{"dev1/a", ts.nowMs(), 7}}, pts)

	// A re-issued token (users add of an existing name) ends the old one.
	ck = ts.login(t, "bob", bob.token)
	bob2 := newOperator(t, "bob", RoleViewer)
	ts.srv.SetAccess(accessOf(bob2))
	require.ErrorIs(t, bobSSE.waitEnd(t), io.EOF)
	for _, h := range []http.Header{ts.withCookie(ck), bearer(bob.token)} {
		resp, body := ts.do(t, request{path: "/api/v1/devices", header: h})
		requireError(t, http.StatusUnauthorized, resp, body)
	}
	resp, body := ts.do(t, request{path: "/api/v1/devices", header: bearer(bob2.token)})
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)

	// A role change takes effect at the next request, sessions kept.
	ck = ts.login(t, "bob", bob2.token)
	bob2.Role = RoleAdmin
	ts.srv.SetAccess(accessOf(bob2))
	resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/dashboards", body: boardJSON, header: ts.withCookie(ck)})
	require.Equal(t, http.StatusCreated, resp.StatusCode, "%s", body)
}

// TestAuthTurnsOn: anonymous viewers lose access the moment credentials
// are required (the first user added to a loopback server).
func TestAuthTurnsOn(t *testing.T) {
	ts := newTestServer(t)
	s := openSSE(t, ts, "/api/v1/stream?series=dev1/%23", nil)
	s.open(t)
	ws := dialWS(t, ts, "/api/v1/ws?series=dev1/%23", wsDialOptions{}).start()
	ws.nextOf(t, "subscribed")
	ts.waitLive(t, "ws", 1)

	ann := newOperator(t, "ann", RoleAdmin)
	ts.srv.SetAccess(accessOf(ann))
	require.ErrorIs(t, s.waitEnd(t), io.EOF)
	requireCloseCode(t, websocket.ClosePolicyViolation, ws.waitClose(t))
	resp, body := ts.do(t, request{path: "/api/v1/devices"})
	requireError(t, http.StatusUnauthorized, resp, body)

	// And back: every user removed on loopback (cmd's decision).
	ts.srv.SetAccess(Access{})
	resp, body = ts.do(t, request{path: "/api/v1/devices"})
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
}

// TestWSOriginWithCookie: a WebSocket with a session cookie opens from the
// server's own pages (or, with --origins, the listed ones), never from
// another site's.
func TestWSOriginWithCookie(t *testing.T) {
	ann := newOperator(t, "ann", RoleViewer)
	for _, tc := range []struct {
		name    string
		origins []string
		origin  string // "SAME": the server's own
		ok      bool
	}{
		{"same origin", nil, "SAME", true},
		{"other site", nil, "http://evil.example", false},
		{"listed", []string{"https://ops.example"}, "https://ops.example", true},
		{"not listed", []string{"https://ops.example"}, "http://evil.example", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, withOperators(ann), withWeb(func(c *Config) { c.Origins = tc.origins }))
			ck := ts.login(t, "ann", ann.token)
			origin := tc.origin
			if origin == "SAME" {
				origin = ts.url
			}
			h := http.Header{"Cookie": {ck.Name + "=" + ck.Value}, "Origin": {origin}}
			if tc.ok {
				dialWS(t, ts, "/api/v1/ws?series=dev1/%23", wsDialOptions{header: h}).start().nextOf(t, "subscribed")
				return
			}
			_, resp, err := dialWSRaw(ts, "/api/v1/ws?series=dev1/%23", wsDialOptions{header: h})
			require.ErrorIs(t, err, websocket.ErrBadHandshake)
			require.Contains(t, requireJSONError(t, http.StatusForbidden, resp), "origin not allowed")
		})
	}
}

// pollAnswer is a poll's outcome with the raw body.
type pollOutcome struct {
	status int
	body   string
	err    error
}

// pollWith polls at once with a header.
func pollWith(t testing.TB, ts *testServer, query string, h http.Header) (int, pollAnswerJSON) {
	t.Helper()
	var a pollAnswerJSON
	return doJSON(t, ts.url+"/api/v1/poll?"+query, h, &a), a
}

// pollWithAsync polls in a goroutine (which must not touch t).
func pollWithAsync(ts *testServer, query string, h http.Header) <-chan pollOutcome {
	out := make(chan pollOutcome, 1)
	go func() {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, ts.url+"/api/v1/poll?"+query, nil)
		if err != nil {
			out <- pollOutcome{err: err}
			return
		}
		req.Header = h.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- pollOutcome{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		out <- pollOutcome{status: resp.StatusCode, body: string(b), err: err}
	}()
	return out
}

// TestTLS: with a TLS config the listener speaks HTTPS: HSTS, a Secure
// __Host- session cookie, and the live transports over TLS with it.
func TestTLS(t *testing.T) {
	cert, pool := testutil.SelfSigned(t, "telegauge test")
	ann := newOperator(t, "ann", RoleAdmin)
	ts := newTestServer(t, withOperators(ann), withWeb(func(c *Config) {
		c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}))
	require.True(t, strings.HasPrefix(ts.url, "https://"))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}

	resp, _ := ts.do(t, request{client: client, path: "/healthz"})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "max-age=31536000", resp.Header.Get("Strict-Transport-Security"))
	// Plain HTTP on the TLS port gets nowhere.
	_, err := http.Get("http://" + ts.srv.Addr() + "/healthz")
	require.Error(t, err)

	resp, body := ts.do(t, request{client: client, method: http.MethodPost, path: "/api/v1/login",
		body: `{"name":"ann","password":"` + ann.token + `"}`})
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	raw := resp.Header.Get("Set-Cookie")
	require.True(t, strings.HasPrefix(raw, "__Host-telegauge_session="), raw)
	require.Contains(t, strings.ToLower(raw), "; secure")
	ck := resp.Cookies()[0]
	h := ts.withCookie(ck)

	resp, body = ts.do(t, request{client: client, method: http.MethodPost, path: "/api/v1/dashboards", body: boardJSON, header: h})
	require.Equal(t, http.StatusCreated, resp.StatusCode, "%s", body)

	// SSE over TLS with the cookie.
	req, err := http.NewRequest(http.MethodGet, ts.url+"/api/v1/stream?series=dev1/%23", nil)
	require.NoError(t, err)
	req.Header = h.Clone()
	sresp, err := client.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, sresp.StatusCode)
	s := readSSE(t, sresp)
	s.open(t)
	ts.publish(t, point{"dev1/a", ts.nowMs(), 3})
	_, pts := framePoints(t, s.nextEvent(t))
	require.Equal(t, []point{{"dev1/a", ts.nowMs(), 3}}, pts)

	// WebSocket over TLS with the cookie, from the server's own origin.
	d := websocket.Dialer{HandshakeTimeout: waitTimeout, TLSClientConfig: &tls.Config{RootCAs: pool}}
	conn, wresp, err := d.Dial("wss://"+ts.srv.Addr()+"/api/v1/ws?series=dev1/%23", h)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	require.Equal(t, http.StatusSwitchingProtocols, wresp.StatusCode)
	var m wsMsg
	require.NoError(t, conn.ReadJSON(&m))
	require.Equal(t, "subscribed", m.Type)
}
