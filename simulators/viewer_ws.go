package simulators

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/fasthttp/websocket"
)

// wsWriteWait bounds a control frame write (pong, close).
const wsWriteWait = 5 * time.Second

// wsURL turns the http(s) base URL into ws(s).
func wsURL(base string) string {
	if rest, ok := strings.CutPrefix(base, "https://"); ok {
		return "wss://" + rest
	}
	return "ws://" + strings.TrimPrefix(base, "http://")
}

// runWS opens one WebSocket and reads it until it ends. It resumes with the
// cursor parameter.
func (v *viewer) runWS(ctx context.Context) error {
	d := websocket.Dialer{
		NetDialContext:   (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   16 << 10,
		WriteBufferSize:  1 << 10,
	}
	if tr, ok := v.client.Transport.(*http.Transport); ok && tr.TLSClientConfig != nil {
		d.TLSClientConfig = tr.TLSClientConfig
	}
	if v.link != nil {
		d.NetDialContext = v.link.wrapDial(d.NetDialContext)
	}
	u := v.endpoint(wsURL(v.cfg.URL), "ws", "cursor", string(v.cursor))
	conn, resp, err := d.DialContext(ctx, u, v.cfg.Header)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			_ = resp.Body.Close()
			return fmt.Errorf("open WebSocket: %w", &statusError{code: resp.StatusCode, msg: errorMessage(body)})
		}
		return fmt.Errorf("open WebSocket: %w", err)
	}
	v.connected()
	defer v.disconnected()
	conn.SetReadLimit(int64(v.cfg.MaxMessageBytes))
	// Answer protocol pings: the server closes a peer that misses two.
	conn.SetPingHandler(func(data string) error {
		err := conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(wsWriteWait))
		if err != nil && (errors.Is(err, websocket.ErrCloseSent) || isTimeout(err)) {
			return nil
		}
		return err
	})
	// When the run ends, say goodbye and close, which ends the read below.
	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(closed)
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = conn.Close()
	})
	defer func() {
		if !stop() {
			<-closed
			return
		}
		_ = conn.Close()
	}()

	for {
		_, r, err := conn.NextReader()
		if err != nil {
			if ctx.Err() != nil || websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
				return nil
			}
			return fmt.Errorf("read WebSocket: %w", err)
		}
		v.wsBuf.Reset()
		if _, err := v.wsBuf.ReadFrom(r); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read WebSocket: %w", err)
		}
		m := &v.wsMsg
		if err := v.dec.ws(v.wsBuf.Bytes(), m); err != nil {
			v.tc.errs.Add(1)
			v.log.Debug("malformed WebSocket message", "err", err)
			continue
		}
		v.onWS(m)
		v.maybeStall(ctx)
	}
}

// onWS handles one decoded message.
func (v *viewer) onWS(m *wsMessage) {
	v.setCursor(m.Cursor)
	switch m.Type {
	case "subscribed":
		v.received()
	case "points":
		v.onPoints(m.Points)
	case "heartbeat":
		v.onHeartbeat()
	case "presence":
		v.onPresence()
	case "gap":
		v.onGap(wireGap{From: m.From, To: m.To})
	case "reset":
		v.onReset()
	case "error":
		v.tc.errs.Add(1)
		v.log.Debug("server error message", "message", m.Message)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
