package simulators

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"
)

// sseEvent is one dispatched Server-Sent Event. Data is valid only during
// the callback.
type sseEvent struct {
	// Type is the event field, "message" when absent.
	Type string
	// Data is the data lines joined with "\n".
	Data []byte
	// ID is the last event ID at dispatch [WHATWG HTML §9.2.6], valid only
	// during the callback.
	ID []byte
}

// sseParser parses a text/event-stream as the WHATWG HTML standard (§9.2.6)
// says: lines end in CRLF, LF or CR; lines starting with ':' are comments;
// "field: value" with one optional space; a blank line dispatches. The last
// event ID and the retry time persist across streams, as a browser's
// EventSource keeps them across reconnections.
type sseParser struct {
	// MaxLine caps one line, and also the data of one event. Zero means
	// 8 MiB.
	MaxLine int
	// LastID is the last event ID: sent as Last-Event-ID on reconnect.
	// It is a byte slice so that a new id per frame costs no allocation.
	// An id field takes effect only when its event is dispatched, so an
	// event broken off by a lost connection does not move it.
	LastID []byte
	// Retry is the reconnection time the server asked for, or 0.
	Retry time.Duration

	data      []byte // the event being built
	typ       []byte // its event field
	idBuf     []byte // the last event ID buffer: LastID once dispatched
	partial   []byte // a line longer than the reader's buffer
	pendingCR bool   // the last line ended in CR: skip a following LF
}

// errLineTooLong is an SSE line or event over sseParser.MaxLine.
var errLineTooLong = errors.New("SSE line too long")

// sseBOM is skipped at the start of a stream [WHATWG HTML §9.2.5].
var sseBOM = []byte{0xEF, 0xBB, 0xBF}

// parse reads one stream until it ends, calling fn for each dispatched
// event. An event not terminated by a blank line when the stream ends is
// discarded [WHATWG HTML §9.2.6]. It returns fn's first error, or the
// reader's (io.EOF for a clean end).
func (p *sseParser) parse(r *bufio.Reader, fn func(*sseEvent) error) error {
	if p.MaxLine <= 0 {
		p.MaxLine = 8 << 20
	}
	p.data, p.typ, p.pendingCR = p.data[:0], p.typ[:0], false
	p.idBuf = append(p.idBuf[:0], p.LastID...)
	if b, err := r.Peek(3); err == nil && bytes.Equal(b, sseBOM) {
		_, _ = r.Discard(3)
	}
	var ev sseEvent
	for {
		line, err := p.readLine(r)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			if err := p.dispatch(&ev, fn); err != nil {
				return err
			}
			continue
		}
		if line[0] == ':' {
			continue // comment: a keep-alive
		}
		name, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			name, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(name) {
		case "event":
			p.typ = append(p.typ[:0], value...)
		case "data":
			if len(p.data)+len(value)+1 > p.MaxLine {
				return errLineTooLong
			}
			p.data = append(p.data, value...)
			p.data = append(p.data, '\n')
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				p.idBuf = append(p.idBuf[:0], value...)
			}
		case "retry":
			if ms, ok := parseDigits(value); ok {
				p.Retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
}

// dispatch hands the event built so far to fn and starts a new one. The
// last event ID buffer becomes the last event ID first, even for an event
// without data, which is not handed to fn [WHATWG HTML §9.2.6, "dispatch
// the event" steps 1-2].
func (p *sseParser) dispatch(ev *sseEvent, fn func(*sseEvent) error) error {
	p.LastID = append(p.LastID[:0], p.idBuf...)
	if len(p.data) == 0 {
		p.typ = p.typ[:0]
		return nil
	}
	ev.Data = p.data[:len(p.data)-1] // drop the last "\n"
	ev.ID = p.LastID
	switch string(p.typ) { // known names without allocating
	case "", "message":
		ev.Type = "message"
	case "heartbeat":
		ev.Type = "heartbeat"
	case "presence":
		ev.Type = "presence"
	case "gap":
		ev.Type = "gap"
	case "reset":
		ev.Type = "reset"
	default:
		ev.Type = string(p.typ)
	}
	p.data, p.typ = p.data[:0], p.typ[:0]
	return fn(ev)
}

// setLastID replaces the last event ID (and its buffer) with id, as from
// a dispatched event's id field.
func (p *sseParser) setLastID(id []byte) {
	p.LastID = append(p.LastID[:0], id...)
	p.idBuf = append(p.idBuf[:0], id...)
}

// parseDigits parses a non-empty string of ASCII digits.
func parseDigits(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 12 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// readLine returns the next line without its terminator. The slice is valid
// until the next read.
func (p *sseParser) readLine(r *bufio.Reader) ([]byte, error) {
	p.partial = p.partial[:0]
	long := false
	for {
		if r.Buffered() == 0 {
			if _, err := r.Peek(1); err != nil {
				if long && err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return nil, err
			}
		}
		buf, _ := r.Peek(r.Buffered())
		if p.pendingCR {
			p.pendingCR = false
			if buf[0] == '\n' {
				_, _ = r.Discard(1)
				continue
			}
		}
		// Two vectorised scans beat one byte loop over "\r\n".
		end := bytes.IndexByte(buf, '\n')
		head := buf
		if end >= 0 {
			head = buf[:end]
		}
		if cr := bytes.IndexByte(head, '\r'); cr >= 0 {
			end = cr
		}
		if end < 0 {
			if len(p.partial)+len(buf) > p.MaxLine {
				return nil, errLineTooLong
			}
			p.partial = append(p.partial, buf...)
			long = true
			_, _ = r.Discard(len(buf))
			continue
		}
		if len(p.partial)+end > p.MaxLine {
			return nil, errLineTooLong
		}
		line := buf[:end]
		consumed := end + 1
		if buf[end] == '\r' {
			if end+1 < len(buf) {
				if buf[end+1] == '\n' {
					consumed++
				}
			} else {
				p.pendingCR = true
			}
		}
		if long {
			p.partial = append(p.partial, line...)
			line = p.partial
		}
		// Discard only advances the read position: line stays valid
		// until the next Peek refills the buffer.
		_, _ = r.Discard(consumed)
		return line, nil
	}
}

// runSSE opens one event stream and reads it until it ends. It resumes from
// the last event ID (Last-Event-ID header).
func (v *viewer) runSSE(ctx context.Context) error {
	req, err := v.newRequest(ctx, v.endpoint(v.cfg.URL, "stream"))
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if v.sse == nil {
		v.sse = &sseParser{MaxLine: v.cfg.MaxMessageBytes, LastID: append([]byte(nil), v.cursor...)}
	}
	if len(v.sse.LastID) > 0 {
		req.Header.Set("Last-Event-ID", string(v.sse.LastID))
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return fmt.Errorf("open event stream: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("open event stream: %w", &statusError{code: resp.StatusCode, msg: errorMessage(body)})
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return fmt.Errorf("open event stream: content type %q, want text/event-stream", resp.Header.Get("Content-Type"))
	}
	v.connected()
	defer v.disconnected()

	if v.sseBuf == nil {
		v.sseBuf = bufio.NewReaderSize(resp.Body, 16<<10)
	} else {
		v.sseBuf.Reset(resp.Body)
	}
	handle := v.onSSE
	if v.flaky {
		handle = func(ev *sseEvent) error {
			err := v.onSSE(ev)
			v.maybeStall(ctx)
			return err
		}
	}
	err = v.sse.parse(v.sseBuf, handle)
	v.retry = v.sse.Retry
	v.setCursor(v.sse.LastID)
	if ctx.Err() != nil || errors.Is(err, io.EOF) {
		// The server ended the stream (or we did): reconnect without
		// counting an error.
		return nil
	}
	return fmt.Errorf("read event stream: %w", err)
}

// onSSE handles one event. The parser's LastID is the resume cursor: every
// frame has an id, so the data's cursor need not be read.
func (v *viewer) onSSE(ev *sseEvent) error {
	switch ev.Type {
	case "message":
		var err error
		if _, v.points, err = v.dec.frame(ev.Data, v.points); err != nil {
			v.tc.errs.Add(1)
			v.log.Debug("malformed SSE frame", "err", err)
			return nil
		}
		v.onPoints(v.points)
	case "heartbeat":
		v.onHeartbeat()
	case "presence":
		v.onPresence()
	case "gap":
		g, err := v.dec.gap(ev.Data)
		if err != nil {
			v.tc.errs.Add(1)
			return nil
		}
		v.onGap(g)
	case "reset":
		v.onReset()
		if c := v.dec.cursorOf(ev.Data); len(c) > 0 {
			v.sse.setLastID(c)
		}
	}
	return nil
}
