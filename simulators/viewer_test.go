package simulators

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/stretchr/testify/require"
)

type sseWant struct{ typ, data, id string }

// sseCases are SSE streams and what a browser's EventSource makes of them.
var sseCases = []struct {
	name      string
	in        string
	want      []sseWant
	wantRetry time.Duration
	wantID    string
}{
	{
		name:      "frame with retry",
		in:        "retry: 2000\n\nid: c-1\ndata: {\"cursor\":\"c-1\",\"points\":[]}\n\n",
		want:      []sseWant{{"message", `{"cursor":"c-1","points":[]}`, "c-1"}},
		wantRetry: 2 * time.Second,
		wantID:    "c-1",
	},
	{
		name: "CRLF",
		in:   "event: heartbeat\r\ndata: 1700000000000\r\n\r\n",
		want: []sseWant{{"heartbeat", "1700000000000", ""}},
	},
	{
		name: "CR only",
		in:   "data: a\rdata: b\r\r",
		want: []sseWant{{"message", "a\nb", ""}},
	},
	{
		name: "mixed endings",
		in:   "data: a\r\ndata: b\rdata: c\n\r\n",
		want: []sseWant{{"message", "a\nb\nc", ""}},
	},
	{
		name: "comments",
		in:   ": keep-alive\n\n:another\ndata: x\n: in between\n\n",
		want: []sseWant{{"message", "x", ""}},
	},
	{
		name: "multi-line data",
		in:   "data: line1\ndata:line2\ndata\n\n",
		want: []sseWant{{"message", "line1\nline2\n", ""}},
	},
	{
		name: "named events",
		in: "event: presence\ndata: {\"device\":\"d\",\"online\":true,\"t\":1}\n\n" +
			"event: gap\ndata: {\"from\":1,\"to\":2}\n\nevent: reset\ndata: {}\n\nevent: custom\ndata: z\n\n",
		want: []sseWant{
			{"presence", `{"device":"d","online":true,"t":1}`, ""},
			{"gap", `{"from":1,"to":2}`, ""},
			{"reset", "{}", ""},
			{"custom", "z", ""},
		},
	},
	{
		name:   "no data, no dispatch",
		in:     "event: heartbeat\n\nid: 5\n\n",
		wantID: "5",
	},
	{
		name: "incomplete event at end is dropped",
		in:   "data: complete\n\ndata: x\n",
		want: []sseWant{{"message", "complete", ""}},
	},
	{
		name:   "id with NUL is ignored",
		in:     "id: a\n\nid: b\x00c\ndata: 1\n\n",
		want:   []sseWant{{"message", "1", "a"}},
		wantID: "a",
	},
	{
		name: "only one leading space is removed",
		in:   "data:  two\n\n",
		want: []sseWant{{"message", " two", ""}},
	},
	{
		name: "byte order mark",
		in:   "\xEF\xBB\xBFdata: x\n\n",
		want: []sseWant{{"message", "x", ""}},
	},
	{
		name: "unknown fields and bad retry are ignored",
		in:   "foo: bar\nretry: 1s\ndata: y\n\n",
		want: []sseWant{{"message", "y", ""}},
	},
	{
		name:   "id persists, empty id clears",
		in:     "id: a\ndata: 1\n\ndata: 2\n\nid\ndata: 3\n\n",
		want:   []sseWant{{"message", "1", "a"}, {"message", "2", "a"}, {"message", "3", ""}},
		wantID: "",
	},
	{
		name: "event type resets after dispatch",
		in:   "event: heartbeat\ndata: 1\n\ndata: 2\n\n",
		want: []sseWant{{"heartbeat", "1", ""}, {"message", "2", ""}},
	},
}

func parseAllSSE(r *bufio.Reader, p *sseParser) ([]sseWant, error) {
	var got []sseWant
	err := p.parse(r, func(ev *sseEvent) error {
		got = append(got, sseWant{ev.Type, string(ev.Data), string(ev.ID)})
		return nil
	})
	return got, err
}

func TestParseSSE(t *testing.T) {
	for _, tc := range sseCases {
		t.Run(tc.name, func(t *testing.T) {
			readers := map[string]func() io.Reader{
				"whole":    func() io.Reader { return strings.NewReader(tc.in) },
				"one byte": func() io.Reader { return iotest.OneByteReader(strings.NewReader(tc.in)) },
			}
			// nats' split trick, at every position: chunk boundaries must
			// not change what is parsed.
			for i := 1; i < len(tc.in); i++ {
				readers[fmt.Sprintf("split %d", i)] = func() io.Reader {
					return io.MultiReader(strings.NewReader(tc.in[:i]), strings.NewReader(tc.in[i:]))
				}
			}
			for name, mk := range readers {
				for _, size := range []int{16, 4096} {
					p := &sseParser{}
					got, err := parseAllSSE(bufio.NewReaderSize(mk(), size), p)
					require.ErrorIs(t, err, io.EOF, "%s/%d", name, size)
					require.Equal(t, tc.want, got, "%s/%d", name, size)
					require.Equal(t, tc.wantRetry, p.Retry, "%s/%d", name, size)
					require.Equal(t, tc.wantID, string(p.LastID), "%s/%d", name, size)
				}
			}
		})
	}
}

// TestParseSSEBrokenEvent checks that an event cut off before its blank
// line does not move the last event ID: the id takes effect when the event
// is dispatched [WHATWG HTML §9.2.6], so a client that resumes after a
// broken connection gets that event again instead of losing it.
func TestParseSSEBrokenEvent(t *testing.T) {
	for _, in := range []string{
		"id: c-1\ndata: {}\n\nid: c-2\n",
		"id: c-1\ndata: {}\n\nid: c-2\ndata: {\"cursor\":",
		"id: c-1\ndata: {}\n\nid: c-2\ndata: {}\n",
	} {
		p := &sseParser{}
		got, err := parseAllSSE(bufio.NewReader(strings.NewReader(in)), p)
		require.True(t, errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF), "%q: %v", in, err)
		require.Equal(t, []sseWant{{"message", "{}", "c-1"}}, got, "%q", in)
		require.Equal(t, "c-1", string(p.LastID), "%q", in)
	}
	// An id-only event (the server's subscription acknowledgement) does
	// move it, although it dispatches nothing.
	p := &sseParser{}
	got, err := parseAllSSE(bufio.NewReader(strings.NewReader("id: c-7\n\n")), p)
	require.ErrorIs(t, err, io.EOF)
	require.Empty(t, got)
	require.Equal(t, "c-7", string(p.LastID))
}

func TestParseSSELimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want error
	}{
		{name: "long line", in: "data: " + strings.Repeat("x", 100) + "\n\n", want: errLineTooLong},
		{name: "long event", in: strings.Repeat("data: xxxxx\n", 20) + "\n", want: errLineTooLong},
		{name: "long unterminated", in: strings.Repeat("x", 100), want: errLineTooLong},
		{name: "cut mid line", in: "data: " + strings.Repeat("x", 20), want: io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &sseParser{MaxLine: 50}
			_, err := parseAllSSE(bufio.NewReaderSize(strings.NewReader(tc.in), 16), p)
			require.ErrorIs(t, err, tc.want)
		})
	}
	// The callback's error ends parsing.
	stop := errors.New("stop")
	p := &sseParser{}
	err := p.parse(bufio.NewReader(strings.NewReader("data: 1\n\ndata: 2\n\n")), func(*sseEvent) error { return stop })
	require.ErrorIs(t, err, stop)
}

// pointStrings renders points as "series@t=v" for comparisons.
func pointStrings(pts []point) []string {
	var out []string
	for _, p := range pts {
		out = append(out, fmt.Sprintf("%s@%d=%g", p.S, p.T, p.V))
	}
	return out
}

func TestDecodeWSMessage(t *testing.T) {
	type view struct {
		typ, cursor, message string
		points               []string
		from, to, t          int64
	}
	for _, tc := range []struct {
		name    string
		in      string
		want    view
		wantErr bool
	}{
		{
			name: "subscribed",
			in:   `{"type":"subscribed","series":["dev1/#"],"cursor":"a-1"}`,
			want: view{typ: "subscribed", cursor: "a-1"},
		},
		{
			name: "points",
			in:   `{"type":"points","cursor":"a-2","points":[{"s":"dev1/temperature","t":1700000000123,"v":21.5},{"s":"d\u002fx","t":1.7e12,"v":-1e-3}]}`,
			want: view{typ: "points", cursor: "a-2", points: []string{"dev1/temperature@1700000000123=21.5", "d/x@1700000000000=-0.001"}},
		},
		{name: "heartbeat", in: `{"type":"heartbeat","t":1700000000000}`, want: view{typ: "heartbeat", t: 1700000000000}},
		{name: "presence", in: `{"type":"presence","device":"dev1","online":true,"t":5}`, want: view{typ: "presence", t: 5}},
		{name: "gap", in: `{"type":"gap","from":10,"to":20}`, want: view{typ: "gap", from: 10, to: 20}},
		{name: "reset", in: `{"type":"reset","cursor":"b-0"}`, want: view{typ: "reset", cursor: "b-0"}},
		{name: "error", in: `{"type":"error","message":"malformed cursor"}`, want: view{typ: "error", message: "malformed cursor"}},
		{name: "unknown type", in: `{"type":"closing"}`, want: view{typ: "closing"}},
		{name: "no type", in: `{"cursor":"x"}`, wantErr: true},
		{name: "not JSON", in: `points`, wantErr: true},
		{name: "not an object", in: `[1]`, wantErr: true},
		{name: "point without time", in: `{"type":"points","points":[{"s":"a/b","v":1}]}`, wantErr: true},
		{name: "point with string value", in: `{"type":"points","points":[{"s":"a/b","t":1,"v":"1"}]}`, wantErr: true},
		{name: "gap without to", in: `{"type":"gap","from":1}`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d liveDecoder
			// Start from a used message: nothing may leak from it.
			m := wsMessage{Type: "points", Cursor: []byte("old"), Points: []point{{S: []byte("x"), T: 1, V: 1}}, Message: "old"}
			err := d.ws([]byte(tc.in), &m)
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			got := view{typ: m.Type, cursor: string(m.Cursor), message: m.Message, points: pointStrings(m.Points), from: m.From, to: m.To, t: m.T}
			require.Equal(t, tc.want, got)
		})
	}
}

func TestDecodePollAnswer(t *testing.T) {
	type view struct {
		cursor string
		points []string
		gap    *wireGap
		reset  bool
	}
	for _, tc := range []struct {
		name    string
		in      string
		want    view
		wantErr bool
	}{
		{name: "first call", in: `{"cursor":"a-0","points":[],"gap":null,"reset":false}`, want: view{cursor: "a-0"}},
		{name: "minimal", in: `{"cursor":"a-0"}`, want: view{cursor: "a-0"}},
		{
			name: "points",
			in:   `{"cursor":"a-1","points":[{"s":"d/m","t":1,"v":2.5}],"gap":null,"reset":false}`,
			want: view{cursor: "a-1", points: []string{"d/m@1=2.5"}},
		},
		{name: "gap", in: `{"cursor":"a-2","points":[],"gap":{"from":3,"to":9},"reset":false}`, want: view{cursor: "a-2", gap: &wireGap{From: 3, To: 9}}},
		{name: "reset", in: `{"cursor":"b-0","points":[],"gap":null,"reset":true}`, want: view{cursor: "b-0", reset: true}},
		{name: "no cursor", in: `{"points":[]}`, wantErr: true},
		{name: "truncated", in: `{"cursor":"a`, wantErr: true},
		{name: "gap not an object", in: `{"cursor":"a","gap":5}`, wantErr: true},
		{name: "points not an array", in: `{"cursor":"a","points":{}}`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d liveDecoder
			a := pollAnswer{Cursor: []byte("old"), Points: []point{{S: []byte("x")}}, HasGap: true, Gap: wireGap{From: 1}, Reset: true}
			err := d.poll([]byte(tc.in), &a)
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			got := view{cursor: string(a.Cursor), points: pointStrings(a.Points), reset: a.Reset}
			if a.HasGap {
				got.gap = &a.Gap
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func TestDecodeFrame(t *testing.T) {
	var d liveDecoder
	cursor, pts, err := d.frame([]byte(`{"cursor":"c-9","points":[{"s":"a/b","t":5,"v":1.25}]}`), nil)
	require.NoError(t, err)
	require.Equal(t, "c-9", string(cursor))
	require.Equal(t, []string{"a/b@5=1.25"}, pointStrings(pts))
	_, _, err = d.frame([]byte(`{"cursor":"c-9","points":[{"s":1,"t":5,"v":1}]}`), pts)
	require.Error(t, err)
	g, err := d.gap([]byte(`{"from":1,"to":2}`))
	require.NoError(t, err)
	require.Equal(t, wireGap{From: 1, To: 2}, g)
	require.Equal(t, "r-1", string(d.cursorOf([]byte(`{"cursor":"r-1"}`))))
	require.Nil(t, d.cursorOf([]byte(`nope`)))
	// A steady stream of frames decodes without allocating.
	data := []byte(`{"cursor":"c-9","points":[{"s":"a/b","t":5,"v":1.25},{"s":"a/c","t":6,"v":2}]}`)
	require.Zero(t, testing.AllocsPerRun(100, func() { _, pts, _ = d.frame(data, pts) }))
}

func TestHistogram(t *testing.T) {
	var h Histogram
	require.Zero(t, h.Quantile(0.5))
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	for _, tc := range []struct {
		name string
		got  time.Duration
		want time.Duration
	}{
		{name: "p50", got: h.Quantile(0.5), want: 500 * time.Millisecond},
		{name: "p90", got: h.Quantile(0.9), want: 900 * time.Millisecond},
		{name: "p99", got: h.Quantile(0.99), want: 990 * time.Millisecond},
		{name: "p100", got: h.Quantile(1), want: 1000 * time.Millisecond},
		{name: "p0", got: h.Quantile(0), want: time.Millisecond},
		{name: "max", got: h.Max(), want: 1000 * time.Millisecond},
		{name: "min", got: h.Min(), want: time.Millisecond},
		{name: "mean", got: h.Mean(), want: 500500 * time.Microsecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.InEpsilon(t, float64(tc.want), float64(tc.got), 1.0/histSubCount)
		})
	}
	require.EqualValues(t, 1000, h.Count())

	t.Run("small values are exact", func(t *testing.T) {
		var s Histogram
		for _, us := range []int64{0, 1, 5, 127} {
			s.Record(time.Duration(us) * time.Microsecond)
		}
		require.Equal(t, 1*time.Microsecond, s.Quantile(0.5))
		require.Equal(t, 127*time.Microsecond, s.Quantile(1))
	})
	t.Run("negative counts as zero", func(t *testing.T) {
		var s Histogram
		s.Record(-time.Second)
		require.EqualValues(t, 1, s.Negative())
		require.Zero(t, s.Max())
	})
	t.Run("merge", func(t *testing.T) {
		var a, b Histogram
		a.Record(time.Millisecond)
		b.Record(time.Hour)
		a.Merge(&b)
		require.EqualValues(t, 2, a.Count())
		require.Equal(t, time.Hour, a.Max())
		require.Equal(t, time.Millisecond, a.Min())
	})
	t.Run("bucket round trip", func(t *testing.T) {
		for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 1000, 49_999, 50_000, 1 << 40, 1<<62 + 12345} {
			low, width := histBucket(histIndex(v))
			require.LessOrEqual(t, low, v, v)
			require.Less(t, v-low, width, v)
			require.LessOrEqual(t, float64(width), float64(max(low, 1))/float64(histSubCount)+1, v)
		}
	})
	t.Run("json", func(t *testing.T) {
		b, err := json.Marshal(h.Summary())
		require.NoError(t, err)
		require.Contains(t, string(b), `"count":1000`)
		require.Contains(t, string(b), `"maxMs":1000`)
	})
}

// newTestViewer returns a viewer of transport tr whose clock reads now().
func newTestViewer(t *testing.T, tr string, now func() time.Time) (*viewer, *ViewersCounters) {
	t.Helper()
	cfg := &ViewersConfig{Transport: tr, Now: now}
	require.NoError(t, cfg.setDefaults())
	return newViewer(cfg, 0, http.DefaultClient, slog.New(slog.DiscardHandler)), cfg.Counters
}

func TestViewerLatencyAndDuplicates(t *testing.T) {
	const t0 = 1_700_000_000_000
	v, c := newTestViewer(t, TransportSSE, func() time.Time { return time.UnixMilli(t0 + 50) })
	a, b := []byte("d/a"), []byte("d/b")
	v.onPoints([]point{{S: a, T: t0, V: 1}, {S: b, T: t0, V: 1}})
	v.onPoints([]point{{S: a, T: t0, V: 1}, {S: a, T: t0, V: 2}, {S: a, T: t0 + 1, V: 1}})
	v.onGap(wireGap{From: 100, To: 350})
	v.onReset()
	v.onHeartbeat()
	s := c.Snapshot()
	ts := s.Transports[TransportSSE]
	require.EqualValues(t, 2, ts.Frames)
	require.EqualValues(t, 5, ts.Points)
	require.EqualValues(t, 1, ts.Duplicates)
	require.EqualValues(t, 1, ts.Gaps)
	require.EqualValues(t, 250, ts.GapMs)
	require.EqualValues(t, 1, ts.Resets)
	require.EqualValues(t, 1, ts.Heartbeats)
	require.EqualValues(t, 4, ts.Latency.Count)
	require.InEpsilon(t, float64(50*time.Millisecond), float64(ts.Latency.P50), 1.0/histSubCount)
	require.InEpsilon(t, float64(50*time.Millisecond), float64(ts.Latency.P99), 1.0/histSubCount)
	require.Equal(t, 50*time.Millisecond, ts.Latency.Max)
	require.Equal(t, 49*time.Millisecond, ts.Latency.Min)
	require.Equal(t, ts, s.Total)

	out := s.Summary()
	require.Contains(t, out, "sse")
	require.Contains(t, out, "total")
	b, err := json.Marshal(s)
	require.NoError(t, err)
	var back map[string]any
	require.NoError(t, json.Unmarshal(b, &back))
	require.Contains(t, back, "elapsedMs")
	require.Contains(t, back["transports"], "sse")
}

// TestViewerOnEvent checks that the hook sees every frame, duplicates
// included, with copies the viewer does not reuse, and gaps and resets.
func TestViewerOnEvent(t *testing.T) {
	const t0 = 1_700_000_000_000
	var got []ViewerEvent
	cfg := &ViewersConfig{Transport: TransportWS, OnEvent: func(e ViewerEvent) { got = append(got, e) }}
	require.NoError(t, cfg.setDefaults())
	v := newViewer(cfg, 3, http.DefaultClient, slog.New(slog.DiscardHandler))
	buf := []byte("d/a")
	v.onPoints([]point{{S: buf, T: t0, V: 1}})
	copy(buf, "x/y") // the decoder reuses its memory
	v.onPoints([]point{{S: []byte("d/a"), T: t0, V: 1}, {S: []byte("d/b"), T: t0 + 1, V: 2}})
	v.onPoints(nil)
	v.onGap(wireGap{From: 100, To: 350})
	v.onReset()
	require.Equal(t, []ViewerEvent{
		{Viewer: 3, Transport: TransportWS, Kind: ViewerEventPoints, Points: []LivePoint{{"d/a", t0, 1}}},
		{Viewer: 3, Transport: TransportWS, Kind: ViewerEventPoints, Points: []LivePoint{{"d/a", t0, 1}, {"d/b", t0 + 1, 2}}},
		{Viewer: 3, Transport: TransportWS, Kind: ViewerEventGap, FromMs: 100, ToMs: 350},
		{Viewer: 3, Transport: TransportWS, Kind: ViewerEventReset},
	}, got)
	require.EqualValues(t, 1, cfg.Counters.Snapshot().Total.Duplicates)
}

func TestViewersConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     ViewersConfig
		wantErr bool
	}{
		{name: "defaults", cfg: ViewersConfig{}},
		{name: "mix", cfg: ViewersConfig{Transport: TransportMix}},
		{name: "bad transport", cfg: ViewersConfig{Transport: "carrier-pigeon"}, wantErr: true},
		{name: "bad scheme", cfg: ViewersConfig{URL: "ftp://x"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.setDefaults()
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
		})
	}
	mix := ViewersConfig{Transport: TransportMix}
	require.Equal(t, []string{"ws", "sse", "longpoll", "poll", "ws"},
		[]string{mix.transportOf(0), mix.transportOf(1), mix.transportOf(2), mix.transportOf(3), mix.transportOf(4)})
}

// runViewersAsync starts RunViewers and returns a function that stops it
// and returns its result.
func runViewersAsync(t *testing.T, cfg ViewersConfig) func() ViewersStats {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		s   ViewersStats
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := RunViewers(ctx, cfg, nil)
		done <- result{s, err}
	}()
	var once sync.Once
	var res result
	stop := func() ViewersStats {
		once.Do(func() {
			cancel()
			res = <-done
		})
		require.NoError(t, res.err)
		return res.s
	}
	t.Cleanup(func() { once.Do(func() { cancel(); <-done }) })
	return stop
}

const e2eT0 = 1_700_000_000_000

// framePoints are the points of the scripted streams: the first frame has
// a and b; the resumed one replays b (a duplicate) and adds c.
var (
	firstPoints   = fmt.Sprintf(`[{"s":"dev1/a","t":%d,"v":1},{"s":"dev1/b","t":%d,"v":2}]`, e2eT0, e2eT0)
	resumedPoints = fmt.Sprintf(`[{"s":"dev1/b","t":%d,"v":2},{"s":"dev1/c","t":%d,"v":3}]`, e2eT0, e2eT0)
)

// checkResumed checks the counts every scripted server produces.
func checkResumed(t *testing.T, ts TransportStats) {
	t.Helper()
	require.EqualValues(t, 2, ts.Connections)
	require.EqualValues(t, 1, ts.Reconnects)
	require.EqualValues(t, 2, ts.Frames)
	require.EqualValues(t, 4, ts.Points)
	require.EqualValues(t, 1, ts.Duplicates)
	require.EqualValues(t, 1, ts.Gaps)
	require.EqualValues(t, 500, ts.GapMs)
	require.EqualValues(t, 1, ts.Resets)
	require.EqualValues(t, 3, ts.Latency.Count)
	require.InEpsilon(t, float64(50*time.Millisecond), float64(ts.Latency.P50), 1.0/histSubCount)
	require.Zero(t, ts.Connected)
}

// request is what a scripted server saw.
type request struct {
	path, query, lastEventID, auth string
}

func TestViewerSSEResume(t *testing.T) {
	var calls atomic.Int32
	seen := make(chan request, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- request{r.URL.Path, r.URL.RawQuery, r.Header.Get("Last-Event-ID"), r.Header.Get("Authorization")}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		fl := w.(http.Flusher)
		if calls.Add(1) == 1 {
			fmt.Fprintf(w, "retry: 1\n\n: hello\n\nid: c-1\ndata: {\"cursor\":\"c-1\",\"points\":%s}\n\n", firstPoints)
			fl.Flush()
			return // the stream breaks: the viewer must resume from c-1
		}
		fmt.Fprintf(w, "id: c-2\ndata: {\"cursor\":\"c-2\",\"points\":%s}\n\n", resumedPoints)
		fmt.Fprint(w, "event: heartbeat\ndata: 1700000000100\n\n")
		fmt.Fprint(w, "event: presence\ndata: {\"device\":\"dev1\",\"online\":false,\"t\":1}\n\n")
		fmt.Fprint(w, "event: gap\ndata: {\"from\":1000,\"to\":1500}\n\n")
		fmt.Fprint(w, "id: c-3\nevent: reset\ndata: {}\n\n")
		fl.Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()

	counters := new(ViewersCounters)
	stop := runViewersAsync(t, ViewersConfig{
		URL:       srv.URL,
		Transport: TransportSSE,
		Series:    []string{"dev1/#"},
		Rate:      5,
		Header:    http.Header{"Authorization": {"Bearer tok"}},
		Now:       func() time.Time { return time.UnixMilli(e2eT0 + 50) },
		Counters:  counters,
		Backoff:   time.Millisecond,
	})
	eventually(t, 5*time.Second, func() error {
		if r := counters.Snapshot().Total.Resets; r != 1 {
			return fmt.Errorf("%d resets", r)
		}
		return nil
	})
	s := stop()
	ts := s.Transports[TransportSSE]
	checkResumed(t, ts)
	require.EqualValues(t, 1, ts.Heartbeats)
	require.EqualValues(t, 1, ts.Presence)
	require.Zero(t, ts.Errors)

	first, second := <-seen, <-seen
	require.Equal(t, "/api/v1/stream", first.path)
	require.Equal(t, "rate=5&series=dev1%2F%23", first.query)
	require.Equal(t, "Bearer tok", first.auth)
	require.Empty(t, first.lastEventID)
	require.Equal(t, "c-1", second.lastEventID)
}

func TestViewerWSResume(t *testing.T) {
	var calls atomic.Int32
	seen := make(chan request, 16)
	pongs := make(chan string, 4)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- request{r.URL.Path, r.URL.RawQuery, r.URL.Query().Get("cursor"), r.Header.Get("Authorization")}
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		send := func(s string) { _ = conn.WriteMessage(websocket.TextMessage, []byte(s)) }
		if calls.Add(1) == 1 {
			send(`{"type":"subscribed","series":["dev1/#"],"cursor":"c-0"}`)
			send(`{"type":"points","cursor":"c-1","points":` + firstPoints + `}`)
			_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "restart"))
			return
		}
		conn.SetPongHandler(func(s string) error { pongs <- s; return nil })
		_ = conn.WriteControl(websocket.PingMessage, []byte("p1"), time.Now().Add(time.Second))
		send(`{"type":"subscribed","series":["dev1/#"],"cursor":"c-1"}`)
		send(`{"type":"points","cursor":"c-2","points":` + resumedPoints + `}`)
		send(`{"type":"heartbeat","t":1700000000100}`)
		send(`{"type":"presence","device":"dev1","online":true,"t":1}`)
		send(`{"type":"gap","from":1000,"to":1500}`)
		send(`{"type":"error","message":"unknown series pattern"}`)
		send(`{"type":"reset","cursor":"c-3"}`)
		// Read until the viewer closes: this also runs the pong handler.
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}))
	defer srv.Close()

	counters := new(ViewersCounters)
	stop := runViewersAsync(t, ViewersConfig{
		URL:       srv.URL,
		Transport: TransportWS,
		Series:    []string{"dev1/#"},
		Header:    http.Header{"Authorization": {"Bearer tok"}},
		Now:       func() time.Time { return time.UnixMilli(e2eT0 + 50) },
		Counters:  counters,
		Backoff:   time.Millisecond,
	})
	eventually(t, 5*time.Second, func() error {
		if r := counters.Snapshot().Total.Resets; r != 1 {
			return fmt.Errorf("%d resets", r)
		}
		return nil
	})
	require.Equal(t, "p1", <-pongs)
	s := stop()
	ts := s.Transports[TransportWS]
	checkResumed(t, ts)
	require.EqualValues(t, 1, ts.Heartbeats)
	require.EqualValues(t, 1, ts.Presence)
	require.EqualValues(t, 1, ts.Errors) // the server's error message

	first, second := <-seen, <-seen
	require.Equal(t, "/api/v1/ws", first.path)
	require.Equal(t, "Bearer tok", first.auth)
	require.Empty(t, first.lastEventID)
	require.Equal(t, "c-1", second.lastEventID)
	require.Contains(t, second.query, "series=dev1%2F%23")
}

func TestViewerPollResume(t *testing.T) {
	for _, tc := range []struct {
		name      string
		transport string
		wantWait  string
	}{
		{name: "long poll", transport: TransportLongPoll, wantWait: "25s"},
		{name: "short poll", transport: TransportPoll, wantWait: "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var failed atomic.Bool
			seen := make(chan request, 1024)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				q := r.URL.Query()
				cursor := q.Get("cursor")
				select {
				case seen <- request{r.URL.Path, q.Get("wait"), cursor, r.Header.Get("Authorization")}:
				default:
				}
				w.Header().Set("Content-Type", "application/json")
				switch cursor {
				case "":
					fmt.Fprint(w, `{"cursor":"c-0","points":[],"gap":null,"reset":false}`)
				case "c-0":
					fmt.Fprintf(w, `{"cursor":"c-1","points":%s,"gap":null,"reset":false}`, firstPoints)
				case "c-1":
					if !failed.Swap(true) {
						w.WriteHeader(http.StatusServiceUnavailable)
						fmt.Fprint(w, `{"error":"shutting down"}`)
						return
					}
					fmt.Fprintf(w, `{"cursor":"c-2","points":%s,"gap":{"from":1000,"to":1500},"reset":false}`, resumedPoints)
				case "c-2":
					fmt.Fprint(w, `{"cursor":"c-3","points":[],"gap":null,"reset":true}`)
				default:
					if tc.transport == TransportLongPoll {
						<-r.Context().Done()
						return
					}
					fmt.Fprint(w, `{"cursor":"c-3","points":[],"gap":null,"reset":false}`)
				}
			}))
			defer srv.Close()

			counters := new(ViewersCounters)
			stop := runViewersAsync(t, ViewersConfig{
				URL:          srv.URL,
				Transport:    tc.transport,
				Now:          func() time.Time { return time.UnixMilli(e2eT0 + 50) },
				Counters:     counters,
				Backoff:      time.Millisecond,
				PollInterval: time.Millisecond,
			})
			eventually(t, 5*time.Second, func() error {
				if r := counters.Snapshot().Total.Resets; r != 1 {
					return fmt.Errorf("%d resets", r)
				}
				return nil
			})
			s := stop()
			ts := s.Transports[tc.transport]
			checkResumed(t, ts)
			require.EqualValues(t, 1, ts.Errors) // the 503

			var got []request
			for len(seen) > 0 {
				got = append(got, <-seen)
			}
			require.GreaterOrEqual(t, len(got), 5)
			cursors := []string{}
			for _, r := range got[:5] {
				require.Equal(t, "/api/v1/poll", r.path)
				cursors = append(cursors, r.lastEventID)
			}
			// The session after the 503 resumes from the same cursor.
			require.Equal(t, []string{"", "c-0", "c-1", "c-1", "c-2"}, cursors)
			require.Empty(t, got[0].query) // no wait without a cursor
			require.Equal(t, tc.wantWait, got[1].query)
		})
	}
}

func TestRunViewersUnreachable(t *testing.T) {
	s, err := RunViewers(context.Background(), ViewersConfig{
		URL:       "http://127.0.0.1:1",
		Transport: TransportMix,
		Viewers:   4,
		Duration:  100 * time.Millisecond,
		Backoff:   10 * time.Millisecond,
	}, nil)
	require.Error(t, err)
	require.Positive(t, s.Total.Errors)
	require.Len(t, s.Transports, 4)
	require.EqualValues(t, 4, s.Total.Viewers)
}
