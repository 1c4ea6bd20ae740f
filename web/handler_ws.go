package web

import (
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/telegauge/telegauge/dashboard"
)

// wsUpgrader wraps the fasthttp WebSocket upgrader with our origin policy.
type wsUpgrader struct {
	up      websocket.FastHTTPUpgrader
	origins []string
}

func newWSUpgrader(cfg Config) wsUpgrader {
	return wsUpgrader{
		origins: cfg.Origins,
		up: websocket.FastHTTPUpgrader{
			HandshakeTimeout: 10 * time.Second,
			// Client messages are small (subscribe, unsubscribe); a larger
			// one is read through the buffer, up to WSReadLimitBytes. The
			// buffer lives as long as the connection.
			ReadBufferSize:  256,
			WriteBufferSize: 4096,
			// Write buffers are taken from the pool only while a message
			// is being written, so idle connections hold none.
			WriteBufferPool:   &sync.Pool{},
			EnableCompression: !cfg.DisableWSCompression,
			// handleWS has already checked the Origin, with a clearer
			// error than the upgrader's.
			CheckOrigin: func(*fasthttp.RequestCtx) bool { return true },
		},
	}
}

// originAllowed applies the allow-list: an empty list means same origin
// only (browsers always send Origin on WebSocket handshakes; a request
// without one is not from a browser page and cannot be a cross-site attack).
func (u *wsUpgrader) originAllowed(origin, host string) bool {
	if origin == "" {
		return true
	}
	for _, o := range u.origins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	if len(u.origins) > 0 {
		return false
	}
	ou, err := url.Parse(origin)
	return err == nil && strings.EqualFold(ou.Host, host)
}

// WebSocket close codes [RFC 6455 §7.4.1].
const (
	closeGoingAway      = websocket.CloseGoingAway       // 1001: server shutting down
	closePolicy         = websocket.ClosePolicyViolation // 1008: too slow, or credentials revoked
	closeMessageTooBig  = websocket.CloseMessageTooBig   // 1009
	closeTryAgainLater  = websocket.CloseTryAgainLater   // 1013: hub full
	closeWriteWaitSlack = time.Second
)

// sendClose writes a close frame with code and reason, waiting at most
// closeWriteWaitSlack; the caller closes the connection.
func sendClose(conn *websocket.Conn, code int, reason string) {
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(closeWriteWaitSlack))
}

// wsRequest is a client message: subscribe or unsubscribe.
type wsRequest struct {
	Type   string   `json:"type"`
	Series []string `json:"series"`
	Cursor string   `json:"cursor"`
}

// handleWS serves GET /api/v1/ws. Parameters are checked and the viewer
// subscribed before the upgrade, so errors are plain HTTP answers.
func (s *Server) handleWS(c *fiber.Ctx) error {
	if s.closing.Load() {
		return dashboard.ErrClosed
	}
	if !websocket.FastHTTPIsWebSocketUpgrade(c.Context()) {
		return fiber.NewError(fiber.StatusUpgradeRequired, "this endpoint speaks WebSocket: send an upgrade request")
	}
	if !s.upgrader.originAllowed(c.Get(fiber.HeaderOrigin), c.Hostname()) {
		return fiber.NewError(fiber.StatusForbidden, "origin not allowed: add it to the server's allowed origins")
	}
	var ps dashboard.Patterns
	list, err := seriesParams(c)
	if err != nil {
		return err
	}
	if len(list) > 0 {
		if ps, err = dashboard.ParsePatterns(list); err != nil {
			return err
		}
	}
	minInterval, err := rateParam(c, s.cfg.Hub.Heartbeat())
	if err != nil {
		return err
	}
	opts := dashboard.SubscribeOptions{Transport: "ws", Cursor: c.Query("cursor"), Ping: true}
	// The viewer is registered once the connection is ours: fasthttp hands
	// it over only after writing the 101, and never when that write fails
	// (a client reset mid-handshake), so a viewer made here could leak.
	// Admit gives the HTTP error answers Subscribe would.
	if err := s.cfg.Hub.Admit(opts); err != nil {
		return err
	}
	remote := s.proxies.clientIP(c)
	who := principalOf(c)
	err = s.upgrader.up.Upgrade(c.Context(), func(conn *websocket.Conn) {
		// As for SSE: serve on our own goroutine so that fasthttp can
		// release the request's context now. Returning here is safe: the
		// upgrader only puts back its handshake buffer holder, which a
		// connection with a WriteBufferPool never uses.
		s.streams.Go(func() {
			v, _, err := s.cfg.Hub.Subscribe(ps, opts)
			if err != nil {
				// Admitted a moment ago, refused now: the server is
				// shutting down (1001, as for viewers it already had) or
				// the hub filled up (1013: come back later).
				code := closeTryAgainLater
				if errors.Is(err, dashboard.ErrClosed) {
					code = closeGoingAway
				}
				sendClose(conn, code, err.Error())
				_ = conn.Close()
				return
			}
			defer v.Close()
			if !s.auth.track(who, v) { // auth.go: ended when its operator loses access
				sendClose(conn, closePolicy, "credentials revoked")
				_ = conn.Close()
				return
			}
			defer s.auth.untrack(v)
			s.metrics.streams.WithLabelValues("ws").Inc()
			defer s.metrics.streams.WithLabelValues("ws").Dec()
			s.serveWS(conn, v, minInterval, remote)
		})
	})
	if err != nil {
		return fiber.NewError(fiber.StatusBadRequest, "websocket handshake failed: "+err.Error())
	}
	return nil
}

// serveWS runs one WebSocket: a reader goroutine for client messages and
// pongs, and this goroutine writing the viewer's events.
func (s *Server) serveWS(conn *websocket.Conn, v *dashboard.Viewer, minInterval time.Duration, remote string) {
	hub := s.cfg.Hub
	clock := hub.Clock()
	// A peer that answers neither pings nor anything else for two
	// heartbeat intervals is gone.
	idle := 2 * hub.Heartbeat()
	conn.SetReadLimit(s.cfg.WSReadLimitBytes)
	_ = conn.SetReadDeadline(time.Now().Add(idle))
	conn.SetPongHandler(func(string) error {
		v.Pong(clock.Now().UnixMilli())
		return conn.SetReadDeadline(time.Now().Add(idle))
	})

	readerDone := make(chan struct{})
	var readErr error
	go func() {
		defer close(readerDone)
		readErr = s.readWS(conn, v, idle)
	}()

	w := &wsConn{s: s, conn: conn, v: v}
	w.deadline.timeout = s.cfg.WriteTimeout
	v.OnEnd(onViewerEnd(conn.NetConn(), &w.deadline))
	p := &pump{v: v, hub: hub, minInterval: minInterval, stop: readerDone}
	err := p.run(w.write)
	switch {
	case err == nil && p.stopped:
		s.log.Debug("WebSocket closed by client", "viewer", v.ID(), "remote", remote, "err", readErr)
	case err != nil:
		s.log.Debug("WebSocket write failed", "viewer", v.ID(), "remote", remote, "err", err)
	}
	_ = conn.Close() // ends the reader if it is still blocked
	<-readerDone
}

// readWS handles client messages until the connection fails or closes.
func (s *Server) readWS(conn *websocket.Conn, v *dashboard.Viewer, idle time.Duration) error {
	hub := s.cfg.Hub
	for {
		typ, data, err := conn.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				sendClose(conn, closeMessageTooBig, "message too big")
			}
			return err
		}
		_ = conn.SetReadDeadline(time.Now().Add(idle))
		v.Pong(hub.Clock().Now().UnixMilli()) // any message shows the peer is alive
		s.wsMessage(v, typ, data)
	}
}

// wsMessage handles one client message. A problem is answered with an
// error event; its message is returned ("" when there was none).
func (s *Server) wsMessage(v *dashboard.Viewer, typ int, data []byte) string {
	var reason string
	var req wsRequest
	switch {
	case typ != websocket.TextMessage:
		reason = "binary messages are not supported"
	case json.Unmarshal(data, &req) != nil:
		reason = "message is not a JSON object"
	default:
		if err := s.handleWSRequest(v, req); err != nil {
			reason = err.Error()
		}
	}
	if reason != "" {
		s.cfg.Hub.Notify(v, dashboard.Event{Kind: dashboard.EventError, Reason: reason})
	}
	return reason
}

func (s *Server) handleWSRequest(v *dashboard.Viewer, req wsRequest) error {
	hub := s.cfg.Hub
	switch req.Type {
	case "subscribe":
		if len(req.Series) == 0 {
			return dashboard.Errorf(dashboard.CodeInvalid, "subscribe needs series")
		}
		ps, err := dashboard.ParsePatterns(req.Series)
		if err != nil {
			return err
		}
		_, err = hub.AddSeries(v, ps, req.Cursor)
		return err
	case "unsubscribe":
		ps, err := dashboard.ParsePatterns(req.Series)
		if err != nil {
			return err
		}
		hub.RemoveSeries(v, ps)
		return nil
	case "ping", "pong":
		return nil // app-level keep-alive from clients that cannot send protocol pings
	default:
		return dashboard.Errorf(dashboard.CodeInvalid, "unknown message type %.40q: want subscribe or unsubscribe", req.Type)
	}
}

// wsConn writes viewer events as WebSocket messages.
type wsConn struct {
	s        *Server
	conn     *websocket.Conn
	v        *dashboard.Viewer
	deadline writeDeadline
}

func (w *wsConn) write(evs []dashboard.Event) error {
	deadline, err := w.deadline.extend(w.conn.SetWriteDeadline)
	if err != nil {
		return err
	}
	frames := 0
	for i := 0; i < len(evs); i++ {
		e := &evs[i]
		switch e.Kind {
		case dashboard.EventPoints:
			// A viewer that fell behind has several frames queued: send
			// them as one message, one write instead of one per frame,
			// which is what lets a saturated server catch up. A viewer
			// that keeps up gets the shared, once-encoded message.
			j := i + 1
			for j < len(evs) && evs[j].Kind == dashboard.EventPoints {
				j++
			}
			if j-i == 1 && e.Msg.Shared() {
				pm := e.Msg.Prepared(preparePoints).(*websocket.PreparedMessage)
				err = w.conn.WritePreparedMessage(pm)
			} else {
				err = w.writeJoined(evs[i:j])
			}
			i = j - 1
			frames++
		case dashboard.EventPing:
			// A peer that answers no ping (nor anything else) is found by
			// the reader's deadline, two intervals after its last word.
			err = w.conn.WriteControl(websocket.PingMessage, nil, deadline)
		case dashboard.EventClosing:
			code := closeGoingAway
			if w.v.Reason() != dashboard.ReasonShutdown {
				code = closePolicy
			}
			_ = w.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, e.Reason), deadline)
			return nil
		default:
			bp := getBuf()
			b := appendWSEvent((*bp)[:0], e)
			err = w.conn.WriteMessage(websocket.TextMessage, b)
			*bp = b
			putBuf(bp)
		}
		if err != nil {
			return err
		}
	}
	w.s.metrics.frames.WithLabelValues("ws").Add(float64(frames))
	return nil
}

// writeJoined writes point messages as one points message at the last
// one's cursor, built in a pooled buffer from their encoded point arrays.
func (w *wsConn) writeJoined(evs []dashboard.Event) error {
	bp := getBuf()
	defer putBuf(bp)
	b := append((*bp)[:0], `{"type":"points","cursor":"`...)
	b = appendCursor(b, evs[len(evs)-1].Msg.Cursor)
	b = append(b, `","points":[`...)
	for i := range evs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, evs[i].Msg.PointsInner()...)
	}
	b = append(b, "]}"...)
	*bp = b
	return w.conn.WriteMessage(websocket.TextMessage, b)
}

// preparePoints builds the shared WebSocket form of a points message:
// {"type":"points","cursor":...,"points":[...]}. A prepared message also
// caches its compressed form, so deflate runs once per subscription.
func preparePoints(m *dashboard.Message) any {
	b := make([]byte, 0, len(m.JSON)+16)
	b = append(b, `{"type":"points",`...)
	b = append(b, m.JSON[1:]...)
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, b)
	if err != nil {
		panic("prepare WebSocket message: " + err.Error()) // only fails for invalid message types
	}
	return pm
}

// appendWSEvent encodes a non-points event as a WebSocket JSON message.
func appendWSEvent(b []byte, e *dashboard.Event) []byte {
	switch e.Kind {
	case dashboard.EventSubscribed:
		b = append(b, `{"type":"subscribed","series":`...)
		series := e.Series
		if series == nil {
			series = []string{}
		}
		js, _ := json.Marshal(series)
		b = append(b, js...)
		b = append(b, `,"cursor":"`...)
		b = appendCursor(b, e.Cursor)
		b = append(b, `"}`...)
	case dashboard.EventHeartbeat:
		b = append(b, `{"type":"heartbeat","t":`...)
		b = strconv.AppendInt(b, e.TimeMs, 10)
		b = append(b, `,"cursor":"`...)
		b = appendCursor(b, e.Cursor)
		b = append(b, `"}`...)
	case dashboard.EventPresence:
		b = appendPresenceJSON(b, "presence", e.Presence)
	case dashboard.EventGap:
		b = appendGapJSON(b, "gap", e)
	case dashboard.EventReset:
		b = append(b, `{"type":"reset","cursor":"`...)
		b = appendCursor(b, e.Cursor)
		b = append(b, `"}`...)
	case dashboard.EventError:
		js, _ := json.Marshal(map[string]string{"type": "error", "message": e.Reason})
		b = append(b, js...)
	}
	return b
}
