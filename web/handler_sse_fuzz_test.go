package web

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"net/http/httputil"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/dashboard"
	"github.com/telegauge/telegauge/ingest"
)

// FuzzSSEFrame checks that appendSSE cannot be made to inject: the bytes it
// writes for one event, parsed by a WHATWG-conformant parser, are exactly
// one block with the fields that event should have (a dispatched event, or
// none for the id-only and comment-only kinds), and the event after it is
// unaffected. Text that may come from outside the server (a presence
// device's name, which the broker takes from a topic; a closing reason) is
// arbitrary; cursors, which the hub makes, are arbitrary too, as defence in
// depth. A points message's JSON is built by dashboard from readings the
// aggregator validated, so its series names and values are drawn from that
// domain. The output is also checked split in two at any point (a parser
// must not care where reads end) and framed as an HTTP chunk.
func FuzzSSEFrame(f *testing.F) {
	for _, s := range []struct {
		kind         uint8
		text, cursor string
		a, b         int64
		v            float64
		online       bool
		split        uint16
	}{
		{uint8(dashboard.EventPoints), "dev1/temperature", "1y2p0ij32e8e7-1", 1_700_000_000_123, 7, 21.5, false, 10},
		{uint8(dashboard.EventPresence), "dev1", "", 1_700_000_000_123, 0, 0, true, 3},
		{uint8(dashboard.EventPresence), "ev\"il\ndata: {\"forged\":true}\n\nevent: reset\r\n", "", 1, 0, 0, true, 40},
		{uint8(dashboard.EventPresence), "bad\xffutf8\\\x00", "", -1, 0, 0, false, 0},
		{uint8(dashboard.EventGap), "", "abc-1\n\nevent: reset", 1_700_000_000_000, 1_700_000_000_999, 0, false, 7},
		{uint8(dashboard.EventReset), "", "abc-\"},\"x\":{\"\r", 0, 0, 0, false, 12},
		{uint8(dashboard.EventHeartbeat), "", "abc-z\rdata: x", 1_700_000_000_000, 0, 0, false, 30},
		{uint8(dashboard.EventClosing), "server shutting down\r\n\r\nevent: reset\ndata: {}\n\n", "", 0, 2000, 0, false, 25},
		{uint8(dashboard.EventClosing), "too slow", "", 0, -5, 0, false, 1},
		{uint8(dashboard.EventSubscribed), "", "abc-1\x00\nid: evil", 0, 0, 0, false, 5},
		{uint8(dashboard.EventSubscribed), "", "", 0, 0, 0, false, 0},
		{uint8(dashboard.EventPing), "", "", 5, 0, 0, false, 0},
		{uint8(dashboard.EventError), "nope\n\n", "", 0, 0, 0, false, 0},
		{uint8(dashboard.EventPoints), "\n\r+#/x y", "not a cursor\n", math.MinInt64, math.MaxInt64, math.Inf(1), false, 9},
	} {
		f.Add(s.kind, s.text, s.cursor, s.a, s.b, s.v, s.online, s.split)
	}
	f.Fuzz(func(t *testing.T, kind uint8, text, cursor string, a, b int64, v float64, online bool, split uint16) {
		retry := time.Duration(uint16(b)) * time.Millisecond
		e, check := fuzzEvent(kind, text, cursor, a, b, v, online, retry)
		out := appendSSE([]byte("prefix"), &e, retry)
		require.Equal(t, "prefix", string(out[:6]), "appends")
		out = out[6:]

		// The event, then a known one: the first must end where it
		// says, and not swallow or change the second.
		sentinel := dashboard.Event{Kind: dashboard.EventHeartbeat, Cursor: "s-1", TimeMs: 42}
		stream := appendSSE(slices.Clone(out), &sentinel, retry)
		blocks := parseAll(stream, -1)
		require.Equal(t, blocks, parseAll(stream, int(split)), "split at %d", split)
		if len(out) == 0 {
			require.Len(t, blocks, 1, "nothing written for kind %d", e.Kind)
		} else {
			require.Len(t, blocks, 2, "one block for the event, one for the sentinel: %q", stream)
			check(t, blocks[0])
		}
		last := blocks[len(blocks)-1]
		require.Equal(t, []string{": keep-alive", "event: heartbeat", "id: s-1", "data: 42"}, last.Lines)
		require.Equal(t, "s-1", last.LastID)

		// HTTP chunk framing in place, after a head.
		framed := chunk(append([]byte("HEAD"), stream...), 4)
		require.Equal(t, "HEAD", string(framed[:4]))
		body, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(append(framed[4:], "0\r\n\r\n"...))))
		require.NoError(t, err)
		require.Equal(t, stream, body)
	})
}

// parseAll parses a whole stream, fed in two reads split at split (or in
// one when split < 0), and returns its blocks. A block left unterminated
// fails the test by showing up as a pending line or field.
func parseAll(stream []byte, split int) []sseBlock {
	var blocks []sseBlock
	add := func(b sseBlock) { blocks = append(blocks, b) }
	var p sseParser
	if split >= 0 && len(stream) > 0 {
		split %= len(stream) + 1
		p.feed(stream[:split], add)
		p.feed(stream[split:], add)
	} else {
		p.feed(stream, add)
	}
	if len(p.line) > 0 || len(p.block.Lines) > 0 {
		blocks = append(blocks, sseBlock{Lines: []string{"UNTERMINATED: " + string(p.line)}})
	}
	return blocks
}

// fuzzEvent builds an event of kind from the fuzz input, and the check of
// its parsed block.
func fuzzEvent(kind uint8, text, cursor string, a, b int64, v float64, online bool, retry time.Duration) (dashboard.Event, func(t *testing.T, blk sseBlock)) {
	k := dashboard.EventKind(kind % (uint8(dashboard.EventError) + 1))
	e := dashboard.Event{Kind: k}
	clean := cleanCursor(cursor)
	switch k {
	case dashboard.EventPoints:
		// The domain the hub builds messages from.
		if !dashboard.ValidCursor(cursor) {
			cursor = strconv.FormatUint(uint64(a)>>20, 36) + "-" + strconv.FormatUint(uint64(b), 36)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			v = 0
		}
		pts := []ingest.Reading{{Series: validSeries(text), TimeMs: a, Value: v}, {Series: "d/m", TimeMs: b, Value: -v}}
		e.Msg = dashboard.NewMessage(uint64(b), cursor, pts)
		return e, func(t *testing.T, blk sseBlock) {
			require.True(t, blk.Dispatched())
			require.Equal(t, "message", blk.Type())
			require.Equal(t, "", blk.Event)
			require.True(t, blk.HasID)
			require.Equal(t, cursor, blk.ID)
			require.Equal(t, string(e.Msg.JSON), blk.Data)
			var got struct {
				Cursor string  `json:"cursor"`
				Points []point `json:"points"`
			}
			require.NoError(t, json.Unmarshal([]byte(blk.Data), &got))
			require.Equal(t, cursor, got.Cursor)
			require.Equal(t, []point{{pts[0].Series, a, v}, {"d/m", b, -v}}, got.Points)
		}
	case dashboard.EventPresence:
		e.Presence = dashboard.Presence{Device: text, Online: online, TimeMs: a}
		return e, func(t *testing.T, blk sseBlock) {
			require.True(t, blk.Dispatched())
			require.Equal(t, "presence", blk.Type())
			require.False(t, blk.HasID)
			var got struct {
				Device *string `json:"device"`
				Online *bool   `json:"online"`
				T      *int64  `json:"t"`
			}
			require.NoError(t, json.Unmarshal([]byte(blk.Data), &got), "data %q", blk.Data)
			require.NotNil(t, got.Device)
			require.Equal(t, jsonCoerced(text), *got.Device)
			require.Equal(t, online, *got.Online)
			require.Equal(t, a, *got.T)
		}
	case dashboard.EventGap:
		e.Gap, e.Cursor = dashboard.Gap{FromMs: a, ToMs: b}, cursor
		return e, func(t *testing.T, blk sseBlock) {
			require.True(t, blk.Dispatched())
			require.Equal(t, "gap", blk.Type())
			require.True(t, blk.HasID)
			require.Equal(t, clean, blk.ID)
			var got struct {
				From, To int64
				Cursor   string
			}
			require.NoError(t, json.Unmarshal([]byte(blk.Data), &got), "data %q", blk.Data)
			require.Equal(t, a, got.From)
			require.Equal(t, b, got.To)
			require.Equal(t, jsonCoerced(clean), got.Cursor)
		}
	case dashboard.EventReset:
		e.Cursor = cursor
		return e, func(t *testing.T, blk sseBlock) {
			require.True(t, blk.Dispatched())
			require.Equal(t, "reset", blk.Type())
			require.True(t, blk.HasID)
			require.Equal(t, clean, blk.ID)
			var got struct{ Cursor string }
			require.NoError(t, json.Unmarshal([]byte(blk.Data), &got), "data %q", blk.Data)
			require.Equal(t, jsonCoerced(clean), got.Cursor)
		}
	case dashboard.EventHeartbeat:
		e.Cursor, e.TimeMs = cursor, a
		return e, func(t *testing.T, blk sseBlock) {
			require.True(t, blk.Dispatched())
			require.Equal(t, "heartbeat", blk.Type())
			require.Equal(t, []string{" keep-alive"}, blk.Comments)
			require.True(t, blk.HasID)
			require.Equal(t, clean, blk.ID)
			require.Equal(t, strconv.FormatInt(a, 10), blk.Data)
		}
	case dashboard.EventClosing:
		e.Reason, e.TimeMs, e.Cursor = text, a, cursor
		return e, func(t *testing.T, blk sseBlock) {
			require.False(t, blk.Dispatched(), "a comment, not an event")
			require.False(t, blk.HasID)
			require.Equal(t, strconv.FormatInt(2*retry.Milliseconds(), 10), blk.Retry)
			reason := strings.NewReplacer("\r", "", "\n", "").Replace(text)
			require.Equal(t, []string{" closed: " + reason}, blk.Comments)
		}
	case dashboard.EventSubscribed:
		e.Cursor, e.Series = cursor, []string{text}
		return e, func(t *testing.T, blk sseBlock) {
			require.True(t, blk.Dispatched(), "one subscribed event")
			require.Equal(t, "subscribed", blk.Event)
			require.Equal(t, clean, blk.LastID)
			var d struct {
				Series []string `json:"series"`
				Cursor string   `json:"cursor"`
			}
			require.NoError(t, json.Unmarshal([]byte(blk.Data), &d), "data is one JSON object: %q", blk.Data)
			require.Equal(t, []string{strings.ToValidUTF8(text, "\uFFFD")}, d.Series)
			require.Equal(t, clean, d.Cursor)
		}
	default: // ping, error: nothing on SSE
		e.Reason, e.TimeMs, e.Cursor = text, a, cursor
		return e, func(t *testing.T, blk sseBlock) { t.Fatalf("kind %d wrote %+v", k, blk) }
	}
}

// cleanCursor is what appendSSE may write of a cursor: it drops what could
// end a line or a JSON string.
func cleanCursor(c string) string {
	var b strings.Builder
	for i := 0; i < len(c); i++ {
		if ch := c[i]; ch >= 0x20 && ch != '"' && ch != '\\' {
			b.WriteByte(ch)
		}
	}
	return b.String()
}

// jsonCoerced is s as encoding/json reads it back: invalid UTF-8 replaced.
func jsonCoerced(s string) string {
	js, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(js, &out)
	return out
}

// validSeries makes a series name the aggregator would accept from fuzz
// text: {device}/{metric}, each 1-64 of [A-Za-z0-9._-].
func validSeries(text string) string {
	var b strings.Builder
	for i := 0; i < len(text) && b.Len() < 64; i++ {
		if c := text[i]; c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			b.WriteByte(c)
		}
	}
	dev := b.String()
	if dev == "" {
		dev = "d"
	}
	s := dev + "/m"
	if !ingest.ValidName(dev) {
		return "d/m"
	}
	return s
}
