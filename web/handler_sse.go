package web

import (
	"encoding/json"
	"net"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/telegauge/telegauge/dashboard"
)

// handleSSE serves GET /api/v1/stream: Server-Sent Events (WHATWG HTML
// §9.2). The subscription is checked before the response starts, so bad
// parameters get a 400 with a JSON body. Then the connection is hijacked:
// one goroutine per stream, writing chunked frames straight to the socket
// with a write deadline per batch (fasthttp's body stream writer would add
// a goroutine and a pipe per stream).
func (s *Server) handleSSE(c *fiber.Ctx) error {
	if s.closing.Load() {
		return dashboard.ErrClosed
	}
	ps, err := patternParams(c)
	if err != nil {
		return err
	}
	minInterval, err := rateParam(c, s.cfg.Hub.Heartbeat())
	if err != nil {
		return err
	}
	cursor := c.Get("Last-Event-ID")
	if cursor == "" {
		cursor = c.Query("cursor")
	}
	v, _, err := s.cfg.Hub.Subscribe(ps, dashboard.SubscribeOptions{Transport: "sse", Cursor: cursor})
	if err != nil {
		return err
	}
	if !s.auth.track(principalOf(c), v) { // auth.go: ended when its operator loses access
		v.Close()
		return unauthorized(c, "credentials revoked")
	}
	h := &c.Response().Header
	h.Set(fiber.HeaderContentType, "text/event-stream; charset=utf-8")
	// no-transform keeps proxies from compressing (and so buffering) the stream.
	h.Set(fiber.HeaderCacheControl, "no-cache, no-store, no-transform")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer
	h.Set(fiber.HeaderConnection, "keep-alive")
	h.SetContentLength(-1) // chunked
	head := append([]byte(nil), h.Header()...)
	remote := s.proxies.clientIP(c)
	c.Context().HijackSetNoResponse(true)
	c.Context().Hijack(func(conn net.Conn) {
		// Run the stream on a goroutine of our own and return, so that
		// fasthttp releases the request's context (KeepHijackedConns keeps
		// the connection open for us): a stream then holds no request
		// buffers for its whole life.
		s.streams.Go(func() {
			defer conn.Close()
			defer v.Close()
			defer s.auth.untrack(v)
			s.metrics.streams.WithLabelValues("sse").Inc()
			defer s.metrics.streams.WithLabelValues("sse").Dec()
			w := &sseConn{s: s, conn: conn}
			w.deadline.timeout = s.cfg.WriteTimeout
			v.OnEnd(onViewerEnd(conn, &w.deadline))
			if err := w.writeRaw(head, s.cfg.SSERetry); err != nil {
				return
			}
			p := &pump{v: v, hub: s.cfg.Hub, minInterval: minInterval}
			if err := p.run(w.write); err != nil {
				s.log.Debug("SSE stream ended", "viewer", v.ID(), "remote", remote, "err", err)
				return
			}
			w.finish()
		})
	})
	return nil
}

// sseConn writes SSE events to a hijacked connection as HTTP/1.1 chunks.
type sseConn struct {
	s        *Server
	conn     net.Conn
	deadline writeDeadline
}

// writeRaw writes the response head and the stream's opening retry hint.
func (w *sseConn) writeRaw(head []byte, retry time.Duration) error {
	bp := getBuf()
	defer putBuf(bp)
	b := append(*bp, head...)
	body := len(b)
	// DESIGN.md §4: the stream starts with retry:.
	b = append(b, "retry: "...)
	b = strconv.AppendInt(b, retry.Milliseconds(), 10)
	b = append(b, "\n: telegauge live stream\n\n"...)
	b = chunk(b, body)
	*bp = b
	return w.send(b)
}

// write encodes a batch of events into one chunk and writes it.
func (w *sseConn) write(evs []dashboard.Event) error {
	bp := getBuf()
	defer putBuf(bp)
	b := (*bp)[:0]
	frames := 0
	for i := range evs {
		n := len(b)
		b = appendSSE(b, &evs[i], w.s.cfg.SSERetry)
		if evs[i].Kind == dashboard.EventPoints && len(b) > n {
			frames++
		}
	}
	*bp = b
	if len(b) == 0 {
		return nil
	}
	b = chunk(b, 0)
	*bp = b
	if err := w.send(b); err != nil {
		return err
	}
	w.s.metrics.frames.WithLabelValues("sse").Add(float64(frames))
	return nil
}

// finish ends the chunked body, so a proxy sees a complete response.
func (w *sseConn) finish() {
	_ = w.send([]byte("0\r\n\r\n"))
}

func (w *sseConn) send(b []byte) error {
	if _, err := w.deadline.extend(w.conn.SetWriteDeadline); err != nil {
		return err
	}
	_, err := w.conn.Write(b)
	return err
}

// chunk frames b[from:] as one HTTP/1.1 chunk in place: it shifts the data
// right to make room for the size line and appends the trailing CRLF.
func chunk(b []byte, from int) []byte {
	n := len(b) - from
	var hdr [20]byte
	h := strconv.AppendInt(hdr[:0], int64(n), 16)
	h = append(h, '\r', '\n')
	b = append(b, h...) // grow by len(h)
	copy(b[from+len(h):], b[from:from+n])
	copy(b[from:], h)
	return append(b, '\r', '\n')
}

// appendSSE appends one event in SSE wire format. Every field value written
// here is a number, a cursor (ours, and written through appendCursor all the
// same), or JSON with every string escaped or validated, which has no raw
// line breaks, so nothing can end a field early and inject another field or
// event (FuzzSSEFrame).
func appendSSE(b []byte, e *dashboard.Event, retry time.Duration) []byte {
	switch e.Kind {
	case dashboard.EventPoints:
		b = append(b, "id: "...)
		b = appendCursor(b, e.Msg.Cursor)
		b = append(b, "\ndata: "...)
		b = append(b, e.Msg.JSON...)
		b = append(b, "\n\n"...)
	case dashboard.EventSubscribed:
		// Sent at once when a stream opens. The id becomes the browser's
		// Last-Event-ID, so even a client that sees no points before it
		// reconnects resumes from the moment it subscribed; and a client
		// that does not receive this event promptly knows a proxy is
		// buffering the stream, and can fall back to long polling.
		b = append(b, "event: subscribed\nid: "...)
		b = appendCursor(b, e.Cursor)
		b = append(b, "\ndata: {\"series\":"...)
		series := e.Series
		if series == nil {
			series = []string{}
		}
		js, _ := json.Marshal(series)
		b = append(b, js...)
		b = append(b, `,"cursor":"`...)
		b = appendCursor(b, e.Cursor)
		b = append(b, "\"}\n\n"...)
	case dashboard.EventHeartbeat:
		// The comment line is for proxies that watch for SSE comments to
		// keep an idle stream open; browsers ignore it.
		b = append(b, ": keep-alive\nevent: heartbeat\nid: "...)
		b = appendCursor(b, e.Cursor)
		b = append(b, "\ndata: "...)
		b = strconv.AppendInt(b, e.TimeMs, 10)
		b = append(b, "\n\n"...)
	case dashboard.EventPresence:
		b = append(b, "event: presence\ndata: "...)
		b = appendPresenceJSON(b, "", e.Presence)
		b = append(b, "\n\n"...)
	case dashboard.EventGap:
		b = append(b, "event: gap\nid: "...)
		b = appendCursor(b, e.Cursor)
		b = append(b, "\ndata: "...)
		b = appendGapJSON(b, "", e)
		b = append(b, "\n\n"...)
	case dashboard.EventReset:
		b = append(b, "event: reset\nid: "...)
		b = appendCursor(b, e.Cursor)
		b = append(b, "\ndata: {\"cursor\":\""...)
		b = appendCursor(b, e.Cursor)
		b = append(b, "\"}\n\n"...)
	case dashboard.EventClosing:
		// The browser reconnects by itself after retry; tell it to wait
		// a little longer when the server is going away.
		b = append(b, "retry: "...)
		b = strconv.AppendInt(b, 2*retry.Milliseconds(), 10)
		b = append(b, "\n: closed: "...)
		b = appendSafeComment(b, e.Reason)
		b = append(b, "\n\n"...)
	}
	return b
}

// appendSafeComment appends s with line breaks removed.
func appendSafeComment(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '\n' && c != '\r' {
			b = append(b, c)
		}
	}
	return b
}

// appendCursor appends a cursor to an SSE field or a JSON string. Cursors
// are ours ([0-9a-z-]), but rather than trust that here, whatever could end
// the line or the string (control characters, '"', '\\') is dropped.
func appendCursor(b []byte, c string) []byte {
	for i := 0; i < len(c); i++ {
		if ch := c[i]; ch >= 0x20 && ch != '"' && ch != '\\' {
			b = append(b, ch)
		}
	}
	return b
}

// appendJSONString appends s as a JSON string: as it is when it is plain
// printable ASCII with nothing to escape, else through json.Marshal, which
// also replaces invalid UTF-8 (a WebSocket text message must be valid UTF-8,
// RFC 6455 §8.1).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			js, _ := json.Marshal(s)
			return append(b, js...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendPresenceJSON appends a presence object; typ, when set, adds a
// "type" field (WebSocket). The device is escaped: presence comes from the
// broker, which takes the name from the topic a session published on
// without validating it, so it may hold quotes or line breaks.
func appendPresenceJSON(b []byte, typ string, p dashboard.Presence) []byte {
	b = append(b, '{')
	if typ != "" {
		b = append(b, `"type":"`...)
		b = append(b, typ...)
		b = append(b, `",`...)
	}
	b = append(b, `"device":`...)
	b = appendJSONString(b, p.Device)
	b = append(b, `,"online":`...)
	b = strconv.AppendBool(b, p.Online)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, p.TimeMs, 10)
	return append(b, '}')
}

// appendGapJSON appends {"from","to","cursor"}; typ as for presence.
func appendGapJSON(b []byte, typ string, e *dashboard.Event) []byte {
	b = append(b, '{')
	if typ != "" {
		b = append(b, `"type":"`...)
		b = append(b, typ...)
		b = append(b, `",`...)
	}
	b = append(b, `"from":`...)
	b = strconv.AppendInt(b, e.Gap.FromMs, 10)
	b = append(b, `,"to":`...)
	b = strconv.AppendInt(b, e.Gap.ToMs, 10)
	b = append(b, `,"cursor":"`...)
	b = appendCursor(b, e.Cursor)
	return append(b, `"}`...)
}
