package simulators

import (
	"errors"
	"fmt"
	"math"

	"github.com/valyala/fastjson"
)

// Decoding of the live messages of DESIGN.md §4, apart from the connection
// logic so that it can be tested and fuzzed on its own. A viewer receives
// far more points than anything else, so decoding borrows: series names and
// cursors are slices of the decoder's memory, valid until its next call,
// and a steady stream of frames allocates nothing.

// point is one live point. S is borrowed from the decoder.
type point struct {
	S []byte
	T int64 // reading time, Unix ms
	V float64
}

// wireGap is a gap notice's reading-time range, Unix ms inclusive.
type wireGap struct {
	From int64
	To   int64
}

// wsMessage is any server -> client WebSocket message; Type says which
// fields are set. Cursor and Points are borrowed from the decoder.
type wsMessage struct {
	Type    string // one of the wsType constants, or the type as sent
	Cursor  []byte
	Points  []point
	From    int64 // gap
	To      int64 // gap
	T       int64 // heartbeat, presence: server time, Unix ms
	Message string
}

// pollAnswer is the answer of GET /poll. Cursor and Points are borrowed
// from the decoder.
type pollAnswer struct {
	Cursor []byte
	Points []point
	HasGap bool
	Gap    wireGap
	Reset  bool
}

// liveDecoder decodes live messages. It is not safe for concurrent use:
// each viewer owns one.
type liveDecoder struct {
	p fastjson.Parser
}

// frame decodes {"cursor":"...","points":[...]}, the data of an SSE frame,
// appending the points to pts[:0].
func (d *liveDecoder) frame(data []byte, pts []point) (cursor []byte, _ []point, err error) {
	o, err := d.object(data)
	if err != nil {
		return nil, pts[:0], fmt.Errorf("decode frame: %w", err)
	}
	cursor = o.GetStringBytes("cursor")
	pts, err = appendPoints(pts[:0], o.Get("points"))
	if err != nil {
		return nil, pts, fmt.Errorf("decode frame: %w", err)
	}
	return cursor, pts, nil
}

// gap decodes {"from":..,"to":..}.
func (d *liveDecoder) gap(data []byte) (wireGap, error) {
	o, err := d.object(data)
	if err != nil {
		return wireGap{}, fmt.Errorf("decode gap: %w", err)
	}
	return decodeGap(o)
}

// cursorOf returns the "cursor" of a JSON object, or nil.
func (d *liveDecoder) cursorOf(data []byte) []byte {
	o, err := d.object(data)
	if err != nil {
		return nil
	}
	return o.GetStringBytes("cursor")
}

// ws decodes a WebSocket message into m, reusing m's points.
func (d *liveDecoder) ws(data []byte, m *wsMessage) error {
	*m = wsMessage{Points: m.Points[:0]}
	o, err := d.object(data)
	if err != nil {
		return fmt.Errorf("decode WebSocket message: %w", err)
	}
	typ := o.GetStringBytes("type")
	if len(typ) == 0 {
		return errors.New("decode WebSocket message: no type")
	}
	m.Type = internType(typ)
	m.Cursor = o.GetStringBytes("cursor")
	switch m.Type {
	case "points":
		if m.Points, err = appendPoints(m.Points, o.Get("points")); err != nil {
			return fmt.Errorf("decode WebSocket message: %w", err)
		}
	case "gap":
		g, err := decodeGap(o)
		if err != nil {
			return fmt.Errorf("decode WebSocket message: %w", err)
		}
		m.From, m.To = g.From, g.To
	case "heartbeat", "presence":
		m.T = o.GetInt64("t")
	case "error":
		m.Message = string(o.GetStringBytes("message"))
	}
	return nil
}

// poll decodes a poll answer into a, reusing a's points.
func (d *liveDecoder) poll(data []byte, a *pollAnswer) error {
	*a = pollAnswer{Points: a.Points[:0]}
	o, err := d.object(data)
	if err != nil {
		return fmt.Errorf("decode poll answer: %w", err)
	}
	a.Cursor = o.GetStringBytes("cursor")
	if len(a.Cursor) == 0 {
		return errors.New("decode poll answer: no cursor")
	}
	if a.Points, err = appendPoints(a.Points, o.Get("points")); err != nil {
		return fmt.Errorf("decode poll answer: %w", err)
	}
	if g := o.Get("gap"); g != nil && g.Type() != fastjson.TypeNull {
		if g.Type() != fastjson.TypeObject {
			return fmt.Errorf("decode poll answer: gap is a JSON %s", g.Type())
		}
		if a.Gap, err = decodeGap(g); err != nil {
			return fmt.Errorf("decode poll answer: %w", err)
		}
		a.HasGap = true
	}
	a.Reset = o.GetBool("reset")
	return nil
}

// object parses data, which must be a JSON object.
func (d *liveDecoder) object(data []byte) (*fastjson.Value, error) {
	v, err := d.p.ParseBytes(data)
	if err != nil {
		return nil, err
	}
	if v.Type() != fastjson.TypeObject {
		return nil, fmt.Errorf("a JSON %s, want an object", v.Type())
	}
	return v, nil
}

// internType returns the constant for a known message type, so that
// decoding one allocates nothing.
func internType(b []byte) string {
	switch string(b) {
	case "subscribed":
		return "subscribed"
	case "points":
		return "points"
	case "heartbeat":
		return "heartbeat"
	case "presence":
		return "presence"
	case "gap":
		return "gap"
	case "reset":
		return "reset"
	case "error":
		return "error"
	}
	return string(b)
}

func decodeGap(o *fastjson.Value) (wireGap, error) {
	from, err1 := intField(o.Get("from"))
	to, err2 := intField(o.Get("to"))
	if err := errors.Join(err1, err2); err != nil {
		return wireGap{}, fmt.Errorf("gap: %w", err)
	}
	return wireGap{From: from, To: to}, nil
}

// appendPoints appends the points of a JSON array ([{"s","t","v"},...]) to
// dst. A missing or null array is no points.
func appendPoints(dst []point, v *fastjson.Value) ([]point, error) {
	if v == nil || v.Type() == fastjson.TypeNull {
		return dst, nil
	}
	arr, err := v.Array()
	if err != nil {
		return dst, fmt.Errorf("points: %w", err)
	}
	for i, pv := range arr {
		o, err := pv.Object()
		if err != nil {
			return dst, fmt.Errorf("point %d: %w", i, err)
		}
		sv := o.Get("s")
		if sv == nil || sv.Type() != fastjson.TypeString {
			return dst, fmt.Errorf("point %d: s is not a string", i)
		}
		s, _ := sv.StringBytes()
		t, err := intField(o.Get("t"))
		if err != nil {
			return dst, fmt.Errorf("point %d: t: %w", i, err)
		}
		vv := o.Get("v")
		if vv == nil || vv.Type() != fastjson.TypeNumber {
			return dst, fmt.Errorf("point %d: v: %w", i, errNotNumber)
		}
		val, err := vv.Float64()
		if err != nil {
			return dst, fmt.Errorf("point %d: v: %w", i, err)
		}
		dst = append(dst, point{S: s, T: t, V: val})
	}
	return dst, nil
}

// errNotNumber is a field that should be a number.
var errNotNumber = errors.New("not a number")

// intField reads an integer that may be written as a float (1.7e12).
func intField(v *fastjson.Value) (int64, error) {
	if v == nil || v.Type() != fastjson.TypeNumber {
		return 0, errNotNumber
	}
	if n, err := v.Int64(); err == nil {
		return n, nil
	}
	f, err := v.Float64()
	if err != nil || math.IsNaN(f) || math.Abs(f) > 1<<62 {
		return 0, errNotNumber
	}
	return int64(f), nil
}
