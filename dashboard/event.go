package dashboard

import (
	"strconv"
	"sync"

	"github.com/telegauge/telegauge/ingest"
)

// EventKind says what an Event carries.
type EventKind uint8

// The event kinds a viewer receives, in the vocabulary of DESIGN.md §4.
const (
	EventPoints     EventKind = iota // Msg: readings after a cursor
	EventPresence                    // Presence: a device went online or offline
	EventGap                         // Gap: readings skipped for this viewer; backfill from history
	EventReset                       // the resume cursor was unknown or too old: reload history
	EventHeartbeat                   // nothing else was sent for a heartbeat interval
	EventPing                        // time for a protocol-level ping (WebSocket only)
	EventClosing                     // the server ended the stream; Reason says why
	EventSubscribed                  // Series and Cursor: a subscription took effect; points after Cursor follow
	EventError                       // Reason: a client request on the stream was refused
)

// Event is one item in a viewer's queue.
type Event struct {
	Kind     EventKind
	Msg      *Message // EventPoints
	Presence Presence // EventPresence
	Gap      Gap      // EventGap
	// Cursor is the position a client may resume from after this event
	// (EventHeartbeat, EventReset, EventGap). For EventPoints see Msg.Cursor.
	Cursor string
	TimeMs int64    // server time, Unix ms (EventHeartbeat, EventClosing)
	Reason string   // EventClosing, EventError
	Series []string // EventSubscribed: the whole subscription now
}

// Presence is a device's online state change.
type Presence struct {
	Device string `json:"device"`
	Online bool   `json:"online"`
	TimeMs int64  `json:"t"`
}

// Gap is the range of reading times, Unix ms inclusive, of points a viewer
// will not receive live.
type Gap struct {
	FromMs int64 `json:"from"`
	ToMs   int64 `json:"to"`
}

// Message is the readings of one frame (or of a replay) for one
// subscription, encoded once and shared by every viewer with that
// subscription. It is immutable once built.
type Message struct {
	Seq    uint64
	Cursor string
	Points []ingest.Reading
	// JSON is {"cursor":"...","points":[{"s":..,"t":..,"v":..},...]}.
	JSON []byte
	// MinMs and MaxMs bound the points' reading times.
	MinMs, MaxMs int64

	once     sync.Once
	prepared any
	joined   bool // made by JoinMessages for one viewer, not shared
}

// Shared reports whether the message may be sent to several viewers (it
// came from a frame), so that caching a transport encoding of it pays off.
func (m *Message) Shared() bool { return !m.joined }

// NewMessage encodes the points (at least one) as one message at cursor.
func NewMessage(seq uint64, cursor string, pts []ingest.Reading) *Message {
	m := &Message{Seq: seq, Cursor: cursor, Points: pts}
	m.MinMs, m.MaxMs = pts[0].TimeMs, pts[0].TimeMs
	for _, p := range pts[1:] {
		m.MinMs = min(m.MinMs, p.TimeMs)
		m.MaxMs = max(m.MaxMs, p.TimeMs)
	}
	m.JSON = AppendPointsJSON(make([]byte, 0, 32+len(pts)*48), cursor, pts)
	return m
}

// JoinMessages returns one message carrying the points of ms (in order, at
// least one), at the cursor of the last. Its JSON is the messages' point
// arrays concatenated, not re-encoded: a transport uses it to send a viewer
// that fell behind everything it has queued in one write.
func JoinMessages(ms []*Message) *Message {
	if len(ms) == 1 {
		return ms[0]
	}
	last := ms[len(ms)-1]
	j := &Message{Seq: last.Seq, Cursor: last.Cursor, MinMs: ms[0].MinMs, MaxMs: ms[0].MaxMs, joined: true}
	n, size := 0, 0
	for _, m := range ms {
		n += len(m.Points)
		size += len(m.JSON)
		j.MinMs, j.MaxMs = min(j.MinMs, m.MinMs), max(j.MaxMs, m.MaxMs)
	}
	j.Points = make([]ingest.Reading, 0, n)
	j.JSON = make([]byte, 0, size)
	j.JSON = append(j.JSON, `{"cursor":"`...)
	j.JSON = append(j.JSON, last.Cursor...)
	j.JSON = append(j.JSON, `","points":[`...)
	for i, m := range ms {
		j.Points = append(j.Points, m.Points...)
		if i > 0 {
			j.JSON = append(j.JSON, ',')
		}
		j.JSON = append(j.JSON, m.PointsInner()...)
	}
	j.JSON = append(j.JSON, "]}"...)
	return j
}

// PointsInner returns the elements of the message's JSON points array,
// without the brackets, for transports that join messages.
func (m *Message) PointsInner() []byte {
	head := len(`{"cursor":"`) + len(m.Cursor) + len(`","points":[`)
	return m.JSON[head : len(m.JSON)-len("]}")]
}

// Prepared returns a transport-specific encoding of the message, built by
// build on first use and shared from then on. The web tier keeps its
// WebSocket prepared message here so that compression, too, happens once per
// subscription rather than once per connection.
func (m *Message) Prepared(build func(*Message) any) any {
	m.once.Do(func() { m.prepared = build(m) })
	return m.prepared
}

// size is what the message counts against a viewer's queue.
func (e *Event) size() int {
	if e.Kind == EventPoints {
		return len(e.Msg.JSON) + 64
	}
	return 128
}

// AppendPointsJSON appends {"cursor":C,"points":[...]} to dst. Series ids are
// limited to [A-Za-z0-9._-/] by validation, so they need no escaping; values
// are finite, so they are valid JSON numbers.
func AppendPointsJSON(dst []byte, cursor string, pts []ingest.Reading) []byte {
	dst = append(dst, `{"cursor":"`...)
	dst = append(dst, cursor...)
	dst = append(dst, `","points":`...)
	dst = AppendPointsArray(dst, pts)
	return append(dst, '}')
}

// AppendPointsArray appends [{"s":..,"t":..,"v":..},...] to dst.
func AppendPointsArray(dst []byte, pts []ingest.Reading) []byte {
	dst = append(dst, '[')
	for i, p := range pts {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"s":"`...)
		dst = append(dst, p.Series...)
		dst = append(dst, `","t":`...)
		dst = strconv.AppendInt(dst, p.TimeMs, 10)
		dst = append(dst, `,"v":`...)
		dst = strconv.AppendFloat(dst, p.Value, 'g', -1, 64)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}
