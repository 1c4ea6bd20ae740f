package web

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
)

func TestClientIP(t *testing.T) {
	ps, err := parseProxies([]string{"127.0.0.1", "10.0.0.0/8", "::1", " "})
	require.NoError(t, err)
	app := fiber.New()
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"no proxy header", "203.0.113.9", nil, "203.0.113.9"},
		{"an untrusted peer's header is ignored", "203.0.113.9", []string{"198.51.100.1"}, "203.0.113.9"},
		{"a trusted proxy names the client", "127.0.0.1", []string{"198.51.100.1"}, "198.51.100.1"},
		{"what the client wrote to the left is ignored", "127.0.0.1", []string{"6.6.6.6, 198.51.100.1"}, "198.51.100.1"},
		{"a chain of trusted proxies", "127.0.0.1", []string{"6.6.6.6, 198.51.100.1, 10.1.2.3"}, "198.51.100.1"},
		{"several headers are one list", "10.9.9.9", []string{"6.6.6.6", "198.51.100.1,10.1.2.3"}, "198.51.100.1"},
		{"ports and brackets", "127.0.0.1", []string{"[2001:db8::1]:4711"}, "2001:db8::1"},
		{"IPv4 with a port", "127.0.0.1", []string{"198.51.100.1:80"}, "198.51.100.1"},
		{"IPv4-mapped IPv6", "::ffff:127.0.0.1", []string{"::ffff:198.51.100.1"}, "198.51.100.1"},
		{"a malformed entry stops at the proxy that passed it", "127.0.0.1", []string{"198.51.100.1, unknown, 10.1.2.3"}, "10.1.2.3"},
		{"a trusted proxy without the header", "127.0.0.1", nil, "127.0.0.1"},
		{"only trusted entries", "127.0.0.1", []string{"10.1.1.1"}, "10.1.1.1"},
		{"IPv6 loopback", "::1", []string{"2001:db8::7"}, "2001:db8::7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var req fasthttp.Request
			for _, v := range tc.xff {
				req.Header.Add("X-Forwarded-For", v)
			}
			var fctx fasthttp.RequestCtx
			fctx.Init(&req, &net.TCPAddr{IP: net.ParseIP(tc.peer), Port: 5555}, nil)
			c := app.AcquireCtx(&fctx)
			defer app.ReleaseCtx(c)
			require.Equal(t, tc.want, ps.clientIP(c))
		})
	}
	_, err = parseProxies([]string{"10.0.0.0/33"})
	require.Error(t, err)
	none, err := parseProxies(nil)
	require.NoError(t, err)
	var req fasthttp.Request
	req.Header.Add("X-Forwarded-For", "198.51.100.1")
	var fctx fasthttp.RequestCtx
	fctx.Init(&req, &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, nil)
	c := app.AcquireCtx(&fctx)
	defer app.ReleaseCtx(c)
	require.Equal(t, "127.0.0.1", none.clientIP(c), "no trusted proxies: the header means nothing")
}

// TestLoginLimitBehindProxy: behind a trusted proxy each client has its own
// login limit, and cannot leave it by writing X-Forwarded-For itself;
// without one the header is ignored and everyone shares the peer's.
func TestLoginLimitBehindProxy(t *testing.T) {
	ann := newOperator(t, "ann", RoleAdmin)
	limits := func(c *Config) { c.Auth.LoginBurst = 2 }
	badLogin := func(ts *testServer, xff string) int {
		t.Helper()
		resp, _ := ts.do(t, request{method: http.MethodPost, path: "/api/v1/login",
			body: `{"name":"nobody-` + xff + `","password":"wrong"}`, header: http.Header{"X-Forwarded-For": {xff}}})
		return resp.StatusCode
	}

	behind := newTestServer(t, withOperators(ann), withWeb(limits), withWeb(func(c *Config) { c.TrustedProxies = []string{"127.0.0.1"} }))
	require.Equal(t, []int{401, 401, 429}, []int{badLogin(behind, "198.51.100.1"), badLogin(behind, "198.51.100.1"), badLogin(behind, "198.51.100.1")})
	require.Equal(t, 429, badLogin(behind, "6.6.6.6, 198.51.100.1"), "a forged entry to the left changes nothing")
	require.Equal(t, 401, badLogin(behind, "198.51.100.2"), "another client has its own limit")

	direct := newTestServer(t, withOperators(ann), withWeb(limits))
	require.Equal(t, []int{401, 401, 429}, []int{badLogin(direct, "198.51.100.1"), badLogin(direct, "198.51.100.2"), badLogin(direct, "198.51.100.3")})
}

// FuzzClientIP: any X-Forwarded-For from a trusted proxy gives a valid
// address: the proxy's own, or one the header holds that no trusted proxy
// has.
func FuzzClientIP(f *testing.F) {
	for _, s := range []string{"", "198.51.100.1", "6.6.6.6, 198.51.100.1, 10.1.2.3", "[2001:db8::1]:4711", "unknown",
		",,,", "198.51.100.1:80, ::ffff:10.0.0.1", "1.2.3.4%eth0", strings.Repeat("10.0.0.1,", 100)} {
		f.Add(s)
	}
	ps, err := parseProxies([]string{"127.0.0.1", "10.0.0.0/8"})
	require.NoError(f, err)
	app := fiber.New()
	f.Fuzz(func(t *testing.T, xff string) {
		var req fasthttp.Request
		req.Header.Add("X-Forwarded-For", xff)
		var fctx fasthttp.RequestCtx
		fctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, nil)
		c := app.AcquireCtx(&fctx)
		defer app.ReleaseCtx(c)
		got := ps.clientIP(c)
		a, err := netip.ParseAddr(got)
		require.NoError(t, err, "%q gave %q", xff, got)
		if got != "127.0.0.1" && !strings.Contains(xff, strings.TrimPrefix(got, "::ffff:")) {
			// A mapped or bracketed form is written differently.
			require.True(t, a.Is6() || strings.Contains(xff, ":"), "%q gave %q, not in the header", xff, got)
		}
	})
}
