package web

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"

	"github.com/telegauge/telegauge/dashboard"
)

// The HTTP fuzzers send requests straight into the Fiber app (its handler,
// middleware and error handler, without a socket), so that each input costs
// microseconds. Their property is the API contract (DESIGN.md §4): never a
// panic or a 5xx; a 4xx carries a JSON {"error": "..."} body with a short
// message; a success is well-formed and answers what was asked.

// newFuzzServer is a test server on the real clock (a long poll's timer
// must fire by itself) whose long polls wait at most a nanosecond, holding
// readings of dev1/temp and dev2/hum over the last ten minutes.
func newFuzzServer(f *testing.F, opts ...testOption) *testServer {
	f.Helper()
	opts = append([]testOption{withRealClock(), withWeb(func(c *Config) {
		c.MaxPollWait = time.Nanosecond
		c.ExportPageBuckets = 50
	})}, opts...)
	ts := newTestServer(f, opts...)
	now := ts.nowMs()
	var pts []point
	for i := range 60 {
		pts = append(pts, point{"dev1/temp", now - int64(i)*10_000, float64(i % 7)})
		if i%3 == 0 {
			pts = append(pts, point{"dev2/hum", now - int64(i)*10_000, float64(i)})
		}
	}
	ts.offer(f, pts...)
	return ts
}

// fuzzDo serves one request through the app and returns the response.
// Control characters and spaces in uri are percent-encoded: they cannot
// reach a handler on the wire, where they would end the request line.
func fuzzDo(s *Server, method, uri string, body []byte, header ...string) *fasthttp.Response {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(wireURI(uri))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if body != nil {
		req.Header.SetContentType(fiber.MIMEApplicationJSON)
		req.SetBody(body)
	}
	// As RequestCtx.Init, but on a connection that takes deadlines (Init's
	// stand-in panics on them, and an export sets one).
	pipe, peer := net.Pipe()
	defer pipe.Close()
	defer peer.Close()
	var fctx fasthttp.RequestCtx
	fctx.Init2(fuzzConn{pipe}, nil, true)
	req.CopyTo(&fctx.Request)
	s.app.Handler()(&fctx)
	_ = fctx.Response.Body() // runs a body stream writer to its end
	resp := &fasthttp.Response{}
	fctx.Response.CopyTo(resp)
	return resp
}

// fuzzConn is a connection nothing is read from or written to, with the
// addresses RequestCtx.Init gives.
type fuzzConn struct{ net.Conn }

func (fuzzConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4zero} }
func (fuzzConn) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4zero} }

// wireURI percent-encodes the bytes of uri that cannot appear in an HTTP
// request line.
func wireURI(uri string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(uri); i++ {
		if c := uri[i]; c <= ' ' || c == 0x7f {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(uri[i])
	}
	return b.String()
}

// withoutFragment cuts a raw query at '#', where the server's URI parser
// ends it.
func withoutFragment(raw string) string {
	raw, _, _ = strings.Cut(raw, "#")
	return raw
}

// requireAPIAnswer checks the error contract and returns the status.
func requireAPIAnswer(t testing.TB, resp *fasthttp.Response, what string) int {
	t.Helper()
	status := resp.StatusCode()
	require.Less(t, status, 500, "%s: %d %s", what, status, resp.Body())
	if status >= 400 {
		require.True(t, strings.HasPrefix(string(resp.Header.ContentType()), fiber.MIMEApplicationJSON), "%s: %d %q", what, status, resp.Header.ContentType())
		var e map[string]any
		require.NoError(t, json.Unmarshal(resp.Body(), &e), "%s: %s", what, resp.Body())
		msg, ok := e["error"].(string)
		require.True(t, ok, "%s: %s", what, resp.Body())
		require.NotEmpty(t, msg)
		require.LessOrEqual(t, len(msg), 400, "%s: a short message", what)
	}
	return status
}

// querySeries returns the series parameters of a raw query string as the
// server reads them: repeated or comma-separated, blanks dropped.
func querySeries(raw string) []string {
	var args fasthttp.Args
	args.Parse(withoutFragment(raw))
	var out []string
	for _, v := range args.PeekMulti("series") {
		for part := range strings.SplitSeq(string(v), ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}

// FuzzQueryParams fuzzes GET /api/v1/query: series, from/to (Unix ms, RFC
// 3339, relative, absurd), step and maxPoints. A 200 answers every series
// asked for, in order, columns of equal length, at most maxPoints buckets.
func FuzzQueryParams(f *testing.F) {
	ts := newFuzzServer(f)
	now := strconv.FormatInt(ts.nowMs(), 10)
	for _, q := range []string{
		"series=dev1/temp",
		"series=dev1/temp&series=dev2/hum&from=-15m&step=1m",
		"series=dev1/temp,dev2/hum&from=" + now + "&to=-1h",
		"series=dev1/temp&from=2023-11-14T22:13:20Z&to=now&step=auto&maxPoints=3",
		"series=dev1/temp&from=0&to=9223372036854775807&step=1s&maxPoints=2",
		"series=dev1/temp&from=-2562047h&to=%2B2562047h",
		"series=dev1/temp&from=-9223372036854775808",
		"series=dev1/temp&step=raw&maxPoints=5&from=-1h",
		"series=dev1/temp&step=2562047h",
		"series=dev1/temp&step=1.5s",
		"series=dev1/temp&step=-1m",
		"series=dev1/temp&maxPoints=0",
		"series=dev1/temp&maxPoints=99999999999999999999",
		"series=dev1/temp&maxPoints=-1",
		"series=dev9/none",
		"series=dev1/%23",
		"series=%ff%fe/x",
		"series=" + strings.Repeat("a/b,", 1001),
		"series=dev1/temp&from=%00",
		"from=-1h",
		"",
		"series",
		"series=&series=,,&series=dev1/temp",
		"%zz=1&series=dev1/temp",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		resp := fuzzDo(ts.srv, "GET", "/api/v1/query?"+raw, nil)
		if requireAPIAnswer(t, resp, raw) != 200 {
			return
		}
		var ans queryAnswerJSON
		require.NoError(t, json.Unmarshal(resp.Body(), &ans))
		want := querySeries(raw)
		require.Len(t, ans.Series, len(want))
		var args fasthttp.Args
		args.Parse(withoutFragment(raw))
		maxPoints, err := strconv.Atoi(string(args.Peek("maxPoints")))
		if err != nil {
			maxPoints = 1500
		}
		for i, s := range ans.Series {
			require.Equal(t, want[i], s.ID)
			require.LessOrEqual(t, len(s.T), maxPoints)
			for _, n := range []int{len(s.Min), len(s.Max), len(s.Avg), len(s.Count), len(s.Last)} {
				require.Equal(t, len(s.T), n)
			}
		}
	})
}

// FuzzExportParams fuzzes GET /api/v1/export: the query parameters plus
// format. Errors come before the response starts; a 200 is a CSV table (or
// a JSON array) of whole rows of the series asked for, never more rows
// than the range has buckets.
func FuzzExportParams(f *testing.F) {
	ts := newFuzzServer(f)
	for _, q := range []string{
		"series=dev1/temp",
		"series=dev1/temp&series=dev2/hum&from=-15m&step=1m&format=json",
		"series=dev1/temp&step=10s&from=-10m",
		"series=dev1/temp&step=1s&from=0",
		"series=dev1/temp&step=1d&from=0001-01-01T00:00:00Z&to=9999-12-31T00:00:00Z",
		"series=dev1/temp&step=1s&from=0&to=9223372036854775807",
		"series=dev1/temp&from=9007199254740993&to=9223372036854775807",
		"series=dev1/temp&step=2562047h&from=0",
		"series=dev1/temp&step=raw",
		"series=dev1/temp&step=auto",
		"series=dev1/temp&format=xml",
		"series=dev1/temp&from=-1h&to=-2h",
		"series=dev9/none",
		"series=" + strings.Repeat("dev1/temp,", 1000),
		"series=" + strings.Repeat("dev1/temp,", 1001),
		"",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		resp := fuzzDo(ts.srv, "GET", "/api/v1/export?"+raw, nil)
		if requireAPIAnswer(t, resp, raw) != 200 {
			return
		}
		want := querySeries(raw)
		var got []string
		body := resp.Body()
		if bytes.HasPrefix(body, []byte("[")) {
			var rows []struct {
				Series *string `json:"series"`
				Error  string  `json:"error"`
			}
			require.NoError(t, json.Unmarshal(body, &rows), "%s", body)
			for _, r := range rows {
				require.Empty(t, r.Error)
				require.NotNil(t, r.Series)
				got = append(got, *r.Series)
			}
		} else {
			rows, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
			require.NoError(t, err, "%s", body)
			require.NotEmpty(t, rows)
			require.Equal(t, "series", rows[0][0])
			for _, r := range rows[1:] {
				got = append(got, r[0])
			}
		}
		for _, s := range got {
			require.Contains(t, want, s)
		}
	})
}

// FuzzPollParams fuzzes GET /api/v1/poll: series, cursor (malformed, huge,
// other epochs, this hub's epoch with any seq: "EPOCH" in the input is
// replaced by it) and wait. A 200 is {"cursor","points","gap","reset"} with
// a well-formed cursor, and a poll without a cursor gets the hub's.
func FuzzPollParams(f *testing.F) {
	ts := newFuzzServer(f)
	for _, q := range []string{
		"series=%23",
		"series=%23&cursor=EPOCH-0&wait=0",
		"series=dev1/%2B&cursor=EPOCH-1&wait=25s",
		"series=dev1/temp&cursor=EPOCH-zzzzzzzzzzzzz",
		"series=dev1/temp&cursor=EPOCH-3w5e11264sgsg",
		"series=%2B/%23&cursor=abc-1&wait=1",
		"series=%23&cursor=abc&wait=0",
		"series=%23&cursor=" + strings.Repeat("z", 5000),
		"series=%23&cursor=EPOCH-1%0A",
		"series=%23&wait=-1s",
		"series=%23&wait=NaN",
		"series=%23&wait=1e300",
		"series=%23&wait=5200w",
		"series=%23/x",
		"series=dev1/%23/x",
		"series=%2B",
		"series=",
		"",
	} {
		f.Add(q)
	}
	epoch, _, _ := strings.Cut(ts.hub.Cursor(), "-")
	f.Fuzz(func(t *testing.T, raw string) {
		raw = strings.ReplaceAll(raw, "EPOCH", epoch)
		resp := fuzzDo(ts.srv, "GET", "/api/v1/poll?"+raw, nil)
		if requireAPIAnswer(t, resp, raw) != 200 {
			return
		}
		var ans struct {
			Cursor string         `json:"cursor"`
			Points []point        `json:"points"`
			Gap    *dashboard.Gap `json:"gap"`
			Reset  *bool          `json:"reset"`
		}
		require.NoError(t, json.Unmarshal(resp.Body(), &ans), "%s", resp.Body())
		require.True(t, dashboard.ValidCursor(ans.Cursor), "%q", ans.Cursor)
		require.NotNil(t, ans.Reset)
		require.NotNil(t, ans.Points)
	})
}

// FuzzLiveParams fuzzes what the stream (SSE) and WebSocket handlers read
// before they take the connection over: series patterns, rate and cursor
// (or Last-Event-ID), through the same functions and the hub. Bad input is
// a short CodeInvalid error and registers no viewer; good input subscribes
// to exactly the patterns asked for.
func FuzzLiveParams(f *testing.F) {
	ts := newFuzzServer(f)
	for _, s := range []struct{ query, lastEventID string }{
		{"series=%23", ""},
		{"series=dev1/%23&series=%2B/temp&rate=10", "EPOCH-1"},
		{"series=dev1/temp,dev2/hum&cursor=EPOCH-0", ""},
		{"series=dev1/temp&cursor=abc-1", "EPOCH-2"},
		{"series=dev1/temp&rate=0.0000001", ""},
		{"series=dev1/temp&rate=1e400", ""},
		{"series=dev1/temp&rate=NaN", ""},
		{"series=dev1/temp&rate=-1", ""},
		{"series=%23/temp", ""},
		{"series=dev1/%23/x", ""},
		{"series=dev1/", ""},
		{"series=/temp", ""},
		{"series=%2B%2B/temp", ""},
		{"series=" + strings.Repeat("d/m,", 257), ""},
		{"series=" + strings.Repeat("d/m,", 1001), ""},
		{"series=%ff/x", "\xff"},
		{"series=a/b", strings.Repeat("1", 100)},
		{"", ""},
	} {
		f.Add(s.query, s.lastEventID)
	}
	epoch, _, _ := strings.Cut(ts.hub.Cursor(), "-")
	hb := ts.hub.Heartbeat()
	f.Fuzz(func(t *testing.T, raw, lastEventID string) {
		raw = strings.ReplaceAll(raw, "EPOCH", epoch)
		lastEventID = strings.ReplaceAll(lastEventID, "EPOCH", epoch)
		var fctx fasthttp.RequestCtx
		fctx.Request.SetRequestURI(wireURI("/api/v1/stream?" + raw))
		if lastEventID != "" {
			fctx.Request.Header.Set("Last-Event-ID", lastEventID)
		}
		c := ts.srv.app.AcquireCtx(&fctx)
		defer ts.srv.app.ReleaseCtx(c)
		want := querySeries(raw)

		// SSE: series required.
		ps, perr := patternParams(c)
		if perr == nil {
			requireSubscribed(t, ps, want)
			cursor := c.Get("Last-Event-ID")
			if cursor == "" {
				cursor = c.Query("cursor")
			}
			subscribeCheck(t, ts, ps, cursor)
		} else {
			requireInvalidErr(t, perr)
		}
		// WebSocket: series optional.
		list, werr := seriesParams(c)
		if werr == nil && len(list) > 0 {
			_, werr = dashboard.ParsePatterns(list)
		}
		if werr != nil {
			requireInvalidErr(t, werr)
		}
		if perr == nil {
			require.NoError(t, werr, "what SSE accepts, the WebSocket accepts")
		}
		if werr == nil {
			if err := ts.hub.Admit(dashboard.SubscribeOptions{Cursor: c.Query("cursor")}); err != nil {
				requireInvalidErr(t, err)
			}
		}
		iv, rerr := rateParam(c, hb)
		if rerr != nil {
			requireInvalidErr(t, rerr)
		} else {
			require.GreaterOrEqual(t, iv, time.Duration(0))
			require.LessOrEqual(t, iv, hb)
		}
		require.Zero(t, ts.live(t, "sse"), "no viewer left behind")
	})
}

// subscribeCheck subscribes as the SSE handler does and closes the viewer:
// only a malformed cursor is refused (a 400); any other one resumes or
// resets.
func subscribeCheck(t testing.TB, ts *testServer, ps dashboard.Patterns, cursor string) {
	t.Helper()
	v, ack, err := ts.hub.Subscribe(ps, dashboard.SubscribeOptions{Transport: "sse", Cursor: cursor})
	if err != nil {
		requireInvalidErr(t, err)
		require.False(t, dashboard.ValidCursor(cursor), "a well-formed cursor resumes or resets: %q", cursor)
		return
	}
	defer v.Close()
	require.True(t, dashboard.ValidCursor(ack))
	evs := v.Next(nil)
	require.NotEmpty(t, evs)
	require.Equal(t, dashboard.EventSubscribed, evs[0].Kind)
}

// requireSubscribed checks that ps is the set of patterns asked for.
func requireSubscribed(t testing.TB, ps dashboard.Patterns, want []string) {
	t.Helper()
	for _, p := range ps.List() {
		require.Contains(t, want, p)
	}
	for _, p := range want {
		require.Contains(t, ps.List(), p)
	}
}

// requireInvalidErr checks err is a CodeInvalid dashboard error (a 400)
// with a short message.
func requireInvalidErr(t testing.TB, err error) {
	t.Helper()
	require.Equal(t, dashboard.CodeInvalid, dashboard.ErrorCode(err), "%v", err)
	require.LessOrEqual(t, len(err.Error()), 400)
}
