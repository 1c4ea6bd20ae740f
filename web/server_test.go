package web

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/dashboard"
	"github.com/telegauge/telegauge/ingest"
	"github.com/telegauge/telegauge/ingest/store"
	"github.com/telegauge/telegauge/internal/testutil"
)

// t0 is the fake clocks' start: 2023-11-14T22:13:20Z.
var t0 = time.UnixMilli(1_700_000_000_000)

// testHeartbeat is the fake-clock heartbeat. It is long in wall-clock terms
// on purpose: WebSocket read deadlines and the TCP user timeout are
// wall-clock (2 × heartbeat), and must not fire while a test thinks.
const testHeartbeat = 10 * time.Second

// waitTimeout bounds every wait for something that should happen promptly.
const waitTimeout = 5 * time.Second

// testServer is a running web.Server on 127.0.0.1:0 over a real hub,
// aggregator and in-memory store.
type testServer struct {
	srv   *Server
	hub   *dashboard.Hub
	agg   *ingest.Aggregator
	store *store.Memory
	reg   *prometheus.Registry
	clock clockwork.Clock
	fake  *clockwork.FakeClock // nil with withRealClock
	// baseWaiters is how many fake-clock waiters the server has when idle
	// (the hub's and the aggregator's tickers).
	baseWaiters int
	url         string // http://127.0.0.1:port
	wsURL       string // ws://127.0.0.1:port
}

type testOptions struct {
	hub       dashboard.HubConfig
	web       Config
	realClock bool
}

type testOption func(*testOptions)

func withHub(f func(*dashboard.HubConfig)) testOption {
	return func(o *testOptions) { f(&o.hub) }
}

func withWeb(f func(*Config)) testOption {
	return func(o *testOptions) { f(&o.web) }
}

// withRealClock runs everything on the real clock: for the tests of
// wall-clock socket deadlines.
func withRealClock() testOption {
	return func(o *testOptions) { o.realClock = true }
}

// newTestServer wires and runs a server the way cmd/telegauge does, on a
// fake clock at t0 unless withRealClock. Cleanup shuts it down (viewers
// first), then stops the hub and the aggregator, checking each.
func newTestServer(t testing.TB, opts ...testOption) *testServer {
	t.Helper()
	o := testOptions{hub: dashboard.HubConfig{Heartbeat: testHeartbeat}}
	for _, f := range opts {
		f(&o)
	}
	ts := &testServer{reg: prometheus.NewRegistry()}
	if o.realClock {
		ts.clock = clockwork.NewRealClock()
	} else {
		ts.fake = clockwork.NewFakeClockAt(t0)
		ts.clock = ts.fake
	}
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	var err error
	ts.store, err = store.NewMemory(store.MemoryConfig{Clock: ts.clock}, log)
	require.NoError(t, err)
	ts.agg, err = ingest.New(ingest.Config{
		Store:      ts.store,
		Notify:     func() { ts.hub.Wake() },
		Clock:      ts.clock,
		Registerer: ts.reg,
	}, log)
	require.NoError(t, err)
	hc := o.hub
	hc.Source, hc.Clock, hc.Registerer = ts.agg, ts.clock, ts.reg
	ts.hub, err = dashboard.NewHub(hc, log)
	require.NoError(t, err)
	querier, err := dashboard.NewQuerier(dashboard.QueryConfig{Source: ts.agg, History: ts.store, Clock: ts.clock}, log)
	require.NoError(t, err)
	wc := o.web
	wc.Addr = "127.0.0.1:0"
	wc.Hub, wc.Querier, wc.Devices = ts.hub, querier, ts.agg
	wc.Gatherer, wc.Registerer = ts.reg, ts.reg
	ts.srv, err = New(wc, log)
	require.NoError(t, err)
	ts.url = "http://" + ts.srv.Addr()
	ts.wsURL = "ws://" + ts.srv.Addr()

	hubCtx, stopHub := context.WithCancel(context.Background())
	aggCtx, stopAgg := context.WithCancel(context.Background())
	webCtx, stopWeb := context.WithCancel(context.Background())
	hubDone, aggDone, webDone := make(chan error, 1), make(chan error, 1), make(chan error, 1)
	go func() { hubDone <- ts.hub.Run(hubCtx) }()
	go func() { aggDone <- ts.agg.Run(aggCtx) }()
	go func() { webDone <- ts.srv.Run(webCtx) }()
	t.Cleanup(func() {
		stopWeb()
		select {
		case err := <-webDone:
			require.NoError(t, err, "web shutdown")
		case <-time.After(15 * time.Second):
			t.Error("web server did not stop")
		}
		stopAgg()
		require.NoError(t, <-aggDone, "aggregator")
		stopHub()
		require.NoError(t, <-hubDone, "hub")
		require.NoError(t, ts.store.Close())
	})
	if ts.fake != nil {
		ts.baseWaiters = 2
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		require.NoError(t, ts.fake.BlockUntilContext(ctx, ts.baseWaiters), "hub and aggregator tickers")
	}
	client := http.DefaultClient
	if wc.TLS != nil {
		ts.url, ts.wsURL = "https://"+ts.srv.Addr(), "wss://"+ts.srv.Addr()
		// The test's own certificate: TestTLS verifies it properly.
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	}
	eventually(t, waitTimeout, func() error {
		resp, err := client.Get(ts.url + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	return ts
}

// advance moves the fake clock.
func (ts *testServer) advance(d time.Duration) { ts.fake.Advance(d) }

// blockUntilWaiters waits until n fake-clock waiters beyond the idle ones
// exist: a long poll's timer, a rate-capped stream's pause.
func (ts *testServer) blockUntilWaiters(t testing.TB, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	require.NoError(t, ts.fake.BlockUntilContext(ctx, ts.baseWaiters+n), "waiting for %d fake-clock waiters", n)
}

// nowMs is the server's clock in Unix ms.
func (ts *testServer) nowMs() int64 { return ts.clock.Now().UnixMilli() }

// point is a reading as the live transports encode it.
type point struct {
	S string  `json:"s"`
	T int64   `json:"t"`
	V float64 `json:"v"`
}

func (p point) reading() ingest.Reading {
	return ingest.Reading{Series: p.S, TimeMs: p.T, Value: p.V}
}

// offer hands readings to the aggregator as the broker does, one MQTT
// publish each on telemetry/{series}, and waits until the hub has framed
// them all and queued them to its viewers.
func (ts *testServer) offer(t testing.TB, pts ...point) {
	t.Helper()
	before := ts.metric(t, "telegauge_hub_readings_total", nil)
	for _, p := range pts {
		payload := fmt.Sprintf(`{"ts":%d,"value":%s}`, p.T, strconv.FormatFloat(p.V, 'g', -1, 64))
		require.True(t, ts.agg.Offer("telemetry/"+p.S, []byte(payload), ts.clock.Now()))
	}
	ts.waitFramed(t, before+float64(len(pts)))
}

// publish hands readings straight to the hub (one frame, unless the hub is
// busy) and waits until they are framed and queued.
func (ts *testServer) publish(t testing.TB, pts ...point) {
	t.Helper()
	before := ts.metric(t, "telegauge_hub_readings_total", nil)
	rs := make([]ingest.Reading, len(pts))
	for i, p := range pts {
		rs[i] = p.reading()
	}
	ts.hub.Publish(rs)
	ts.waitFramed(t, before+float64(len(pts)))
}

func (ts *testServer) waitFramed(t testing.TB, readings float64) {
	t.Helper()
	eventually(t, waitTimeout, func() error {
		if got := ts.metric(t, "telegauge_hub_readings_total", nil); got < readings {
			return fmt.Errorf("hub framed %v readings, want %v", got, readings)
		}
		return nil
	})
	// The counter moves inside the frame's critical section; Cursor takes
	// the same lock, so once it returns the frame is queued to every viewer.
	_ = ts.hub.Cursor()
}

// metric returns the value of a counter or gauge in the server's registry
// (0 when absent). labels must match exactly the series' labels.
func (ts *testServer) metric(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := ts.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// live returns telegauge_live_connections for a transport.
func (ts *testServer) live(t testing.TB, transport string) float64 {
	t.Helper()
	return ts.metric(t, "telegauge_live_connections", map[string]string{"transport": transport})
}

// waitLive waits until the hub counts n viewers of the transport.
func (ts *testServer) waitLive(t testing.TB, transport string, n float64) {
	t.Helper()
	eventually(t, waitTimeout, func() error {
		if got := ts.live(t, transport); got != n {
			return fmt.Errorf("%s viewers: %v, want %v", transport, got, n)
		}
		return nil
	})
}

// liveWithin reports whether the transport's live viewers reach n within
// timeout.
func (ts *testServer) liveWithin(t testing.TB, transport string, n float64, timeout time.Duration) bool {
	t.Helper()
	return testutil.Poll(timeout, func() error {
		if ts.live(t, transport) != n {
			return errors.New("not yet")
		}
		return nil
	}) == nil
}

// eventually polls check until it holds or the test fails.
var eventually = testutil.Eventually

// epochOf returns the epoch part of a cursor, and seqOf its sequence.
func epochOf(t testing.TB, cursor string) string {
	t.Helper()
	epoch, _, ok := strings.Cut(cursor, "-")
	require.True(t, ok, "cursor %q", cursor)
	return epoch
}

func seqOf(t testing.TB, cursor string) uint64 {
	t.Helper()
	_, num, ok := strings.Cut(cursor, "-")
	require.True(t, ok, "cursor %q", cursor)
	n, err := strconv.ParseUint(num, 36, 64)
	require.NoError(t, err)
	return n
}

// ---- HTTP helpers ----

// getJSON GETs u and decodes a JSON body (any status) into out.
func getJSON(t testing.TB, u string, out any) int {
	t.Helper()
	return doJSON(t, u, nil, out)
}

func doJSON(t testing.TB, u string, header http.Header, out any) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	require.NoError(t, err)
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, resp.Header.Get("Content-Type"), "application/json", "body %s", body)
	require.NoError(t, json.Unmarshal(body, out), "body %s", body)
	return resp.StatusCode
}

// errorBody is the API's error answer.
type errorBody struct {
	Error string `json:"error"`
}

// requireJSONError checks an error answer: the status and a JSON error.
func requireJSONError(t testing.TB, status int, resp *http.Response) string {
	t.Helper()
	require.NotNil(t, resp)
	defer resp.Body.Close()
	// The status first: a wrongly accepted stream has a body without end.
	require.Equal(t, status, resp.StatusCode, "content type %q", resp.Header.Get("Content-Type"))
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, resp.Header.Get("Content-Type"), "application/json")
	var e errorBody
	require.NoError(t, json.Unmarshal(body, &e), "body %s", body)
	require.NotEmpty(t, e.Error)
	return e.Error
}

// ---- SSE client ----

// sseBlock is one blank-line-terminated block of an SSE stream, as a
// WHATWG parser (HTML §9.2.6) sees it.
type sseBlock struct {
	Lines    []string // raw lines, in order
	Comments []string // comment lines without the ':'
	Event    string   // the event field ("" when absent)
	Data     string   // data lines joined with "\n"; HasData says whether any
	HasData  bool
	ID       string // the id field of this block ("" when absent); HasID says whether any
	HasID    bool
	Retry    string // the retry field, if any
	LastID   string // the parser's last event ID after this block
}

// Dispatched reports whether a browser would dispatch an event for the
// block: only when it has data [WHATWG HTML §9.2.6].
func (b sseBlock) Dispatched() bool { return b.HasData }

// Type is the dispatched event's type: the event field or "message".
func (b sseBlock) Type() string {
	if b.Event == "" {
		return "message"
	}
	return b.Event
}

// sseParser splits a text/event-stream as the WHATWG HTML standard says:
// lines end in CRLF, LF or CR; a leading BOM is skipped; a line starting
// with ':' is a comment; "field: value" with one optional space after the
// colon; an id with a NUL is ignored; a blank line ends a block. It is
// deliberately independent of the server's encoder.
type sseParser struct {
	lastID    string
	started   bool
	pendingCR bool
	line      []byte
	block     sseBlock
	data      []string
}

// feed parses b and calls fn for every completed block. A block that is not
// terminated when the input ends stays pending (and is discarded at EOF, as
// the standard says).
func (p *sseParser) feed(b []byte, fn func(sseBlock)) {
	if !p.started {
		p.started = true
		if strings.HasPrefix(string(b), "\xEF\xBB\xBF") {
			b = b[3:]
		}
	}
	for _, c := range b {
		if p.pendingCR {
			p.pendingCR = false
			if c == '\n' {
				continue
			}
		}
		switch c {
		case '\r':
			p.pendingCR = true
			p.endLine(fn)
		case '\n':
			p.endLine(fn)
		default:
			p.line = append(p.line, c)
		}
	}
}

func (p *sseParser) endLine(fn func(sseBlock)) {
	line := string(p.line)
	p.line = p.line[:0]
	if line == "" {
		p.block.LastID = p.lastID
		if p.data != nil {
			p.block.Data = strings.Join(p.data, "\n")
			p.block.HasData = true
		}
		fn(p.block)
		p.block, p.data = sseBlock{}, nil
		return
	}
	p.block.Lines = append(p.block.Lines, line)
	if line[0] == ':' {
		p.block.Comments = append(p.block.Comments, line[1:])
		return
	}
	name, value, found := strings.Cut(line, ":")
	if found {
		value = strings.TrimPrefix(value, " ")
	}
	switch name {
	case "event":
		p.block.Event = value
	case "data":
		p.data = append(p.data, value)
	case "id":
		if !strings.ContainsRune(value, 0) {
			p.block.ID, p.block.HasID = value, true
			p.lastID = value
		}
	case "retry":
		p.block.Retry = value
	}
}

// sseStream is an open SSE response read by a goroutine into blocks.
type sseStream struct {
	resp   *http.Response
	blocks chan sseBlock
	done   chan struct{} // closed when the body ends
	mu     sync.Mutex
	err    error // why the body ended
}

// openSSE opens u (a path under the server) and checks the answer is an
// event stream. It returns once the response head has arrived.
func openSSE(t testing.TB, ts *testServer, path string, header http.Header) *sseStream {
	t.Helper()
	resp := getStream(t, ts.url+path, header)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return readSSE(t, resp)
}

func getStream(t testing.TB, u string, header http.Header) *http.Response {
	t.Helper()
	return getStreamRcvBuf(t, u, header, 0)
}

// getStreamRcvBuf GETs u on a connection of its own whose receive buffer is
// rcvBufBytes (0: the default).
func getStreamRcvBuf(t testing.TB, u string, header http.Header, rcvBufBytes int) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	require.NoError(t, err)
	for k, vs := range header {
		req.Header[k] = vs
	}
	// A transport of its own per stream: closing the body closes the
	// connection, as a browser tab that goes away does.
	tr := &http.Transport{DisableKeepAlives: true}
	if rcvBufBytes > 0 {
		tr.DialContext = (&net.Dialer{Control: rcvBufControl(rcvBufBytes)}).DialContext
	}
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	return resp
}

// readSSE starts reading resp's body into blocks.
func readSSE(t testing.TB, resp *http.Response) *sseStream {
	t.Helper()
	s := &sseStream{resp: resp, blocks: make(chan sseBlock, 1<<14), done: make(chan struct{})}
	t.Cleanup(func() { resp.Body.Close() })
	go func() {
		defer close(s.done)
		var p sseParser
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			p.feed(buf[:n], func(b sseBlock) {
				select {
				case s.blocks <- b:
				default:
					s.setErr(errors.New("SSE test client: block buffer full"))
				}
			})
			if err != nil {
				s.setErr(err)
				return
			}
		}
	}()
	return s
}

func (s *sseStream) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *sseStream) endErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// next returns the next block, failing the test if none comes in time or
// the stream ends.
func (s *sseStream) next(t testing.TB) sseBlock {
	t.Helper()
	select {
	case b := <-s.blocks:
		return b
	case <-s.done:
		select {
		case b := <-s.blocks:
			return b
		default:
		}
		t.Fatalf("SSE stream ended: %v", s.endErr())
	case <-time.After(waitTimeout):
		t.Fatalf("no SSE block after %s", waitTimeout)
	}
	return sseBlock{}
}

// nextEvent returns the next dispatched event (a block with data),
// skipping id-only and comment-only blocks.
func (s *sseStream) nextEvent(t testing.TB) sseBlock {
	t.Helper()
	for {
		if b := s.next(t); b.Dispatched() {
			return b
		}
	}
}

// open reads the stream's opening: the retry block, then the subscribed
// event with the subscription's cursor as its id. It returns the cursor.
func (s *sseStream) open(t testing.TB) string {
	t.Helper()
	first := s.next(t)
	require.NotEmpty(t, first.Lines)
	require.True(t, strings.HasPrefix(first.Lines[0], "retry: "), "stream starts with retry: got %q", first.Lines)
	require.False(t, first.Dispatched())
	sub := s.next(t)
	require.True(t, sub.HasID, "subscribed event with an id, got %+v", sub)
	require.True(t, sub.Dispatched())
	require.Equal(t, "subscribed", sub.Event)
	require.Contains(t, sub.Data, `"cursor":"`+sub.ID+`"`)
	return sub.ID
}

// waitEnd waits until the server ends the stream and returns how it ended
// (io.EOF: cleanly, with the terminating chunk).
func (s *sseStream) waitEnd(t testing.TB) error {
	t.Helper()
	select {
	case <-s.done:
		return s.endErr()
	case <-time.After(waitTimeout):
		t.Fatalf("SSE stream did not end after %s", waitTimeout)
	}
	return nil
}

// framePoints decodes an SSE points frame.
func framePoints(t testing.TB, b sseBlock) (string, []point) {
	t.Helper()
	require.Equal(t, "message", b.Type(), "block %+v", b)
	var f struct {
		Cursor string  `json:"cursor"`
		Points []point `json:"points"`
	}
	require.NoError(t, json.Unmarshal([]byte(b.Data), &f), "data %q", b.Data)
	require.Equal(t, f.Cursor, b.ID, "id: is the frame's cursor")
	return f.Cursor, f.Points
}

// ---- WebSocket client ----

// wsMsg is any server -> client WebSocket message.
type wsMsg struct {
	Type    string   `json:"type"`
	Cursor  string   `json:"cursor"`
	Series  []string `json:"series"`
	Points  []point  `json:"points"`
	T       int64    `json:"t"`
	From    int64    `json:"from"`
	To      int64    `json:"to"`
	Message string   `json:"message"`
	Device  string   `json:"device"`
	Online  bool     `json:"online"`
	Raw     string   `json:"-"`
}

// wsClient is a WebSocket whose messages a goroutine reads into msgs once
// start is called; protocol pings are answered (unless ignorePings) and
// reported on pings.
type wsClient struct {
	conn  *websocket.Conn
	resp  *http.Response
	msgs  chan wsMsg
	pings chan string
	done  chan struct{}
	mu    sync.Mutex
	err   error
}

type wsDialOptions struct {
	header      http.Header
	compress    bool
	ignorePings bool
	rcvBufBytes int // SO_RCVBUF of the client socket; 0 leaves the default
}

func dialWSRaw(ts *testServer, path string, o wsDialOptions) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: waitTimeout, EnableCompression: o.compress}
	if o.rcvBufBytes > 0 {
		nd := net.Dialer{Control: rcvBufControl(o.rcvBufBytes)}
		d.NetDialContext = nd.DialContext
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return d.DialContext(ctx, ts.wsURL+path, o.header)
}

// dialWS opens a WebSocket and (unless noRead) starts reading it.
func dialWS(t testing.TB, ts *testServer, path string, o wsDialOptions) *wsClient {
	t.Helper()
	conn, resp, err := dialWSRaw(ts, path, o)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	c := &wsClient{conn: conn, resp: resp, msgs: make(chan wsMsg, 1<<14), pings: make(chan string, 1<<10), done: make(chan struct{})}
	t.Cleanup(func() { conn.Close() })
	conn.SetPingHandler(func(data string) error {
		select {
		case c.pings <- data:
		default:
		}
		if o.ignorePings {
			return nil
		}
		err := conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	return c
}

// start reads messages in a goroutine until the connection fails.
func (c *wsClient) start() *wsClient {
	go func() {
		defer close(c.done)
		for {
			m, err := c.read()
			if err != nil {
				c.setErr(err)
				return
			}
			c.msgs <- m
		}
	}()
	return c
}

// read reads one message on the caller's goroutine (before start).
func (c *wsClient) read() (wsMsg, error) {
	typ, data, err := c.conn.ReadMessage()
	if err != nil {
		return wsMsg{}, err
	}
	if typ != websocket.TextMessage {
		return wsMsg{}, fmt.Errorf("message type %d, want text", typ)
	}
	var m wsMsg
	if err := json.Unmarshal(data, &m); err != nil {
		return wsMsg{}, fmt.Errorf("message %q: %w", data, err)
	}
	m.Raw = string(data)
	return m, nil
}

func (c *wsClient) setErr(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
}

func (c *wsClient) endErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// next returns the next message.
func (c *wsClient) next(t testing.TB) wsMsg {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-c.done:
		select {
		case m := <-c.msgs:
			return m
		default:
		}
		t.Fatalf("WebSocket ended: %v", c.endErr())
	case <-time.After(waitTimeout):
		t.Fatalf("no WebSocket message after %s", waitTimeout)
	}
	return wsMsg{}
}

// nextOf returns the next message, which must be of type typ.
func (c *wsClient) nextOf(t testing.TB, typ string) wsMsg {
	t.Helper()
	m := c.next(t)
	require.Equal(t, typ, m.Type, "message %s", m.Raw)
	return m
}

// send writes a JSON client message.
func (c *wsClient) send(t testing.TB, v any) {
	t.Helper()
	require.NoError(t, c.conn.WriteJSON(v))
}

// waitClose waits until the connection ends and returns why.
func (c *wsClient) waitClose(t testing.TB) error {
	t.Helper()
	select {
	case <-c.done:
		return c.endErr()
	case <-time.After(waitTimeout):
		t.Fatalf("WebSocket not closed after %s", waitTimeout)
	}
	return nil
}

// requireCloseCode checks err is a WebSocket close with that code.
func requireCloseCode(t testing.TB, code int, err error) *websocket.CloseError {
	t.Helper()
	var ce *websocket.CloseError
	require.True(t, errors.As(err, &ce), "want close %d, got %v", code, err)
	require.Equal(t, code, ce.Code, "close %v", ce)
	return ce
}

// ---- query answers ----

// queryAnswerJSON is /api/v1/query's answer.
type queryAnswerJSON struct {
	Series []querySeriesJSON `json:"series"`
}

// querySeriesJSON is one series of a query's answer.
type querySeriesJSON struct {
	ID    string    `json:"id"`
	Step  int64     `json:"step"`
	T     []int64   `json:"t"`
	Min   []float64 `json:"min"`
	Max   []float64 `json:"max"`
	Avg   []float64 `json:"avg"`
	Count []int64   `json:"count"`
	Last  []float64 `json:"last"`
}

// ---- poll client ----

// pollAnswerJSON is a poll's answer.
type pollAnswerJSON struct {
	Cursor string  `json:"cursor"`
	Points []point `json:"points"`
	Gap    *struct {
		From   int64  `json:"from"`
		To     int64  `json:"to"`
		Cursor string `json:"cursor"`
	} `json:"gap"`
	Reset bool   `json:"reset"`
	Error string `json:"error"`
}

// poll GETs /api/v1/poll with the query and decodes the answer.
func poll(t testing.TB, ts *testServer, query url.Values) (int, pollAnswerJSON) {
	t.Helper()
	var a pollAnswerJSON
	status := getJSON(t, ts.url+"/api/v1/poll?"+query.Encode(), &a)
	return status, a
}

// pollResult is the outcome of a poll made in the background.
type pollResult struct {
	status int
	answer pollAnswerJSON
	err    error
}

// pollAsync polls in a goroutine and sends the outcome on the channel; it
// must not touch t (STYLE.md: no require from spawned goroutines).
func pollAsync(ctx context.Context, ts *testServer, query url.Values) <-chan pollResult {
	out := make(chan pollResult, 1)
	go func() {
		var r pollResult
		defer func() { out <- r }()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.url+"/api/v1/poll?"+query.Encode(), nil)
		if err != nil {
			r.err = err
			return
		}
		tr := &http.Transport{DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			r.err = err
			return
		}
		defer resp.Body.Close()
		r.status = resp.StatusCode
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			r.err = err
			return
		}
		if err := json.Unmarshal(body, &r.answer); err != nil {
			r.err = fmt.Errorf("poll answer %q: %w", body, err)
		}
	}()
	return out
}

func waitPoll(t testing.TB, c <-chan pollResult) pollResult {
	t.Helper()
	select {
	case r := <-c:
		require.NoError(t, r.err)
		return r
	case <-time.After(waitTimeout):
		t.Fatalf("poll did not answer within %s", waitTimeout)
	}
	return pollResult{}
}

// ---- tests of the plain HTTP API ----

// TestHealthAndReady checks /healthz and /readyz, and that once Shutdown
// begins /readyz answers 503 and new live requests are refused with 503,
// while the server still drains its viewers.
func TestHealthAndReady(t *testing.T) {
	ts := newTestServer(t)
	var body map[string]any
	require.Equal(t, http.StatusOK, getJSON(t, ts.url+"/healthz", &body))
	require.Equal(t, "ok", body["status"])
	require.Equal(t, http.StatusOK, getJSON(t, ts.url+"/readyz", &body))
	require.Equal(t, "ready", body["status"])

	// A viewer the test holds keeps Shutdown in its first stage (the hub
	// waits for every viewer to close), with the listener still serving.
	ps, err := dashboard.ParsePatterns([]string{"#"})
	require.NoError(t, err)
	v, _, err := ts.hub.Subscribe(ps, dashboard.SubscribeOptions{Transport: "test"})
	require.NoError(t, err)
	shutdown := make(chan error, 1)
	go func() { shutdown <- ts.srv.Shutdown(context.Background()) }()
	select {
	case <-v.Done():
	case <-time.After(waitTimeout):
		t.Fatal("Shutdown did not end the viewer")
	}
	require.Equal(t, http.StatusServiceUnavailable, getJSON(t, ts.url+"/readyz", &body))
	require.Equal(t, "shutting down", body["status"])
	require.Equal(t, http.StatusOK, getJSON(t, ts.url+"/healthz", &body), "alive while draining")
	for _, path := range []string{"/api/v1/stream?series=%23", "/api/v1/poll?series=%23", "/api/v1/ws?series=%23"} {
		var e errorBody
		require.Equal(t, http.StatusServiceUnavailable, getJSON(t, ts.url+path, &e), path)
		require.NotEmpty(t, e.Error)
	}
	v.Close()
	select {
	case err := <-shutdown:
		require.NoError(t, err)
	case <-time.After(waitTimeout):
		t.Fatal("Shutdown did not finish")
	}
	require.NoError(t, ts.srv.Shutdown(context.Background()), "idempotent")
}

// TestReadyzHook checks that Config.Ready decides /readyz.
func TestReadyzHook(t *testing.T) {
	var mu sync.Mutex
	var notReady error
	ts := newTestServer(t, withWeb(func(c *Config) {
		c.Ready = func() error {
			mu.Lock()
			defer mu.Unlock()
			return notReady
		}
	}))
	var body map[string]any
	require.Equal(t, http.StatusOK, getJSON(t, ts.url+"/readyz", &body))
	mu.Lock()
	notReady = errors.New("store not open")
	mu.Unlock()
	require.Equal(t, http.StatusServiceUnavailable, getJSON(t, ts.url+"/readyz", &body))
	require.Equal(t, "store not open", body["error"])
}

// TestMetricsEndpoint checks /metrics: live connections by transport and
// frames sent.
func TestMetricsEndpoint(t *testing.T) {
	ts := newTestServer(t)
	sse := openSSE(t, ts, "/api/v1/stream?series=%23", nil)
	sse.open(t)
	ws := dialWS(t, ts, "/api/v1/ws?series=%23", wsDialOptions{}).start()
	ws.nextOf(t, "subscribed")
	ts.offer(t, point{"dev1/temp", t0.UnixMilli(), 21.5})
	_, pts := framePoints(t, sse.nextEvent(t))
	require.Len(t, pts, 1)
	require.Len(t, ws.nextOf(t, "points").Points, 1)

	eventually(t, waitTimeout, func() error {
		resp, err := http.Get(ts.url + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			return fmt.Errorf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		for _, want := range []string{
			`telegauge_live_connections{transport="sse"} 1`,
			`telegauge_live_connections{transport="ws"} 1`,
			`telegauge_live_frames_sent_total{transport="sse"} 1`,
			`telegauge_live_frames_sent_total{transport="ws"} 1`,
			`telegauge_live_streams_open{transport="sse"} 1`,
			`telegauge_live_streams_open{transport="ws"} 1`,
		} {
			if !strings.Contains(string(body), want+"\n") {
				return fmt.Errorf("/metrics lacks %q", want)
			}
		}
		return nil
	})
}

// TestDevicesAndQuery checks /devices and /query over HTTP with readings
// that went through the aggregator.
func TestDevicesAndQuery(t *testing.T) {
	ts := newTestServer(t)
	base := t0.UnixMilli() - 10_000 // five readings a second apart, the last 6 s ago
	var pts []point
	for i := range 5 {
		pts = append(pts, point{"dev1/temp", base + int64(i)*1000, float64(20 + i)})
	}
	pts = append(pts, point{"dev1/hum", base, 50}, point{"dev2/temp", base, 7})
	ts.offer(t, pts...)
	require.True(t, ts.agg.Offer("telemetry/dev1/temp", []byte(`{"ts":"yesterday","value":1}`), ts.clock.Now()))
	ts.agg.SetPresence("dev1", true, ts.clock.Now())

	var devs struct {
		Devices []struct {
			ID               string            `json:"id"`
			Online           bool              `json:"online"`
			LastSeen         int64             `json:"lastSeen"`
			Metrics          []string          `json:"metrics"`
			Rate             *float64          `json:"rate"`
			Rejected         uint64            `json:"rejected"`
			RejectedByReason map[string]uint64 `json:"rejectedByReason"`
			ThrottledSeconds *float64          `json:"throttledSeconds"`
		} `json:"devices"`
	}
	require.Equal(t, http.StatusOK, getJSON(t, ts.url+"/api/v1/devices", &devs))
	require.Len(t, devs.Devices, 2)
	byID := map[string]int{}
	for i, d := range devs.Devices {
		byID[d.ID] = i
	}
	d1 := devs.Devices[byID["dev1"]]
	require.True(t, d1.Online)
	require.Equal(t, t0.UnixMilli(), d1.LastSeen)
	require.Equal(t, []string{"hum", "temp"}, d1.Metrics)
	require.NotNil(t, d1.Rate)
	require.Equal(t, uint64(1), d1.Rejected)
	require.Equal(t, map[string]uint64{"bad_time": 1}, d1.RejectedByReason)
	require.NotNil(t, d1.ThrottledSeconds)
	require.Zero(t, *d1.ThrottledSeconds, "a device within its rate is never held")
	d2 := devs.Devices[byID["dev2"]]
	require.False(t, d2.Online)
	require.Equal(t, []string{"temp"}, d2.Metrics)

	var q queryAnswerJSON
	u := fmt.Sprintf("%s/api/v1/query?series=dev1/temp&series=dev2/temp&from=%d&to=%d&step=1h", ts.url, base-3_600_000, base+3_600_000)
	require.Equal(t, http.StatusOK, getJSON(t, u, &q))
	require.Len(t, q.Series, 2)
	byS := map[string]querySeriesJSON{}
	for _, s := range q.Series {
		byS[s.ID] = s
	}
	hour := base - base%3_600_000
	require.Equal(t, querySeriesJSON{ID: "dev1/temp", Step: 3_600_000, T: []int64{hour}, Min: []float64{20}, Max: []float64{24}, Avg: []float64{22}, Count: []int64{5}, Last: []float64{24}}, byS["dev1/temp"])
	require.Equal(t, []int64{1}, byS["dev2/temp"].Count)

	// Relative times and the default range reach the same readings.
	require.Equal(t, http.StatusOK, getJSON(t, ts.url+"/api/v1/query?series=dev1/temp&from=-1m&step=1s", &q))
	require.Len(t, q.Series, 1)
	require.Equal(t, []int64{1, 1, 1, 1, 1}, q.Series[0].Count)
	require.Equal(t, http.StatusOK, getJSON(t, ts.url+"/api/v1/query?series=dev1/temp,dev1/hum", &q))
	require.Len(t, q.Series, 2)
}

// TestAPIErrors checks that bad parameters are 400s with a JSON error body,
// unknown series 404s, and unknown endpoints 404s.
func TestAPIErrors(t *testing.T) {
	ts := newTestServer(t)
	ts.offer(t, point{"dev1/temp", t0.UnixMilli(), 1})
	tooMany := "series=" + strings.Repeat("d/m,", maxSeriesParams+1)
	var b strings.Builder
	for i := range dashboard.MaxPatterns + 1 {
		fmt.Fprintf(&b, "series=d%d/m&", i)
	}
	tooManyPatterns := b.String()
	for _, tc := range []struct {
		name   string
		path   string
		status int
	}{
		{"query without series", "/api/v1/query", 400},
		{"query bad series", "/api/v1/query?series=no-slash", 400},
		{"query unknown series", "/api/v1/query?series=dev9/x", 404},
		{"query bad from", "/api/v1/query?series=dev1/temp&from=yesterday", 400},
		{"query bad to", "/api/v1/query?series=dev1/temp&to=-1x", 400},
		{"query bad step", "/api/v1/query?series=dev1/temp&step=1.5s", 400},
		{"query zero maxPoints", "/api/v1/query?series=dev1/temp&maxPoints=0", 400},
		{"query bad maxPoints", "/api/v1/query?series=dev1/temp&maxPoints=many", 400},
		{"query too many series params", "/api/v1/query?" + tooMany, 400},
		{"stream without series", "/api/v1/stream", 400},
		{"stream empty series", "/api/v1/stream?series=,,", 400},
		{"stream bad pattern", "/api/v1/stream?series=a/b/c", 400},
		{"stream bad wildcard", "/api/v1/stream?series=dev%23/x", 400},
		{"stream too many patterns", "/api/v1/stream?" + tooManyPatterns, 400},
		{"poll without series", "/api/v1/poll", 400},
		{"poll bad wait", "/api/v1/poll?series=%23&wait=soon", 400},
		{"poll negative wait", "/api/v1/poll?series=%23&wait=-1s", 400},
		{"poll NaN wait", "/api/v1/poll?series=%23&wait=NaN", 400},
		{"ws without upgrade", "/api/v1/ws?series=%23", 426},
		{"unknown endpoint", "/api/v1/nope", 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body errorBody
			require.Equal(t, tc.status, getJSON(t, ts.url+tc.path, &body))
			require.NotEmpty(t, body.Error)
		})
	}
	// Nothing leaked: every refused request freed what it took.
	for _, tr := range []string{"sse", "ws", "longpoll", "poll"} {
		require.Zero(t, ts.live(t, tr), tr)
	}
}

// TestUIServed checks the embedded page is served at /.
func TestUIServed(t *testing.T) {
	ts := newTestServer(t)
	resp, err := http.Get(ts.url + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/html")
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.NotEmpty(t, line)
}

// TestTooManyViewers checks that past HubConfig.MaxViewers every live
// transport answers 429 with a JSON error, before anything is upgraded.
func TestTooManyViewers(t *testing.T) {
	ts := newTestServer(t, withHub(func(c *dashboard.HubConfig) { c.MaxViewers = 1 }))
	s := openSSE(t, ts, "/api/v1/stream?series=%23", nil)
	s.open(t)
	requireJSONError(t, http.StatusTooManyRequests, getStream(t, ts.url+"/api/v1/stream?series=%23", nil))
	requireJSONError(t, http.StatusTooManyRequests, getStream(t, ts.url+"/api/v1/poll?series=%23&wait=0&cursor="+ts.hub.Cursor(), nil))
	conn, resp, err := dialWSRaw(ts, "/api/v1/ws?series=%23", wsDialOptions{})
	if conn != nil {
		conn.Close()
	}
	require.Error(t, err)
	requireJSONError(t, http.StatusTooManyRequests, resp)
	// A poll without a cursor needs no viewer.
	status, a := poll(t, ts, url.Values{"series": {"#"}})
	require.Equal(t, http.StatusOK, status)
	require.NotEmpty(t, a.Cursor)
	require.Equal(t, 1.0, ts.live(t, "sse"))
}
