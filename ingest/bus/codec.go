package bus

import (
	"encoding/binary"
	"errors"
	"math"

	"github.com/telegauge/telegauge/ingest"
)

// A readings message is a version byte, then per reading:
//
//	uvarint len(series) | series | varint (TimeMs - previous TimeMs) | 8 bytes IEEE 754 value, little endian
//
// The first reading's time delta is from 0. Readings arrive grouped by
// series (a node's shards drain series by series), so times are close and
// the deltas are short: about 12 bytes a reading plus its series id.
const codecVersion = 1

// errCorrupt is a readings message that does not decode.
var errCorrupt = errors.New("corrupt readings message")

// encoder builds one readings message.
type encoder struct {
	buf  []byte
	prev int64 // the previous reading's time
}

// reset starts a new message, reusing the buffer.
func (e *encoder) reset() {
	e.buf = append(e.buf[:0], codecVersion)
	e.prev = 0
}

// add appends one reading to the message.
func (e *encoder) add(r ingest.Reading) {
	e.buf = binary.AppendUvarint(e.buf, uint64(len(r.Series)))
	e.buf = append(e.buf, r.Series...)
	e.buf = binary.AppendVarint(e.buf, r.TimeMs-e.prev)
	e.prev = r.TimeMs
	e.buf = binary.LittleEndian.AppendUint64(e.buf, math.Float64bits(r.Value))
}

// appendReadings encodes rs as one message.
func appendReadings(rs []ingest.Reading) []byte {
	var e encoder
	e.reset()
	for _, r := range rs {
		e.add(r)
	}
	return e.buf
}

// interner reuses series id strings across messages, so a steady stream
// of readings allocates no strings. It is bounded: past maxInterned ids it
// starts over.
type interner map[string]string

const maxInterned = 1 << 16

func (in *interner) get(b []byte) string {
	if s, ok := (*in)[string(b)]; ok { // no allocation for the lookup
		return s
	}
	if len(*in) >= maxInterned {
		*in = make(interner)
	}
	s := string(b)
	(*in)[s] = s
	return s
}

// decodeReadings appends the readings of msg to dst. Series ids are not
// validated here (ApplyRemote drops invalid ones); a truncated or otherwise
// malformed message is errCorrupt, with the readings decoded before the
// fault returned.
func decodeReadings(dst []ingest.Reading, msg []byte, in *interner) ([]ingest.Reading, error) {
	if len(msg) == 0 || msg[0] != codecVersion {
		return dst, errCorrupt
	}
	msg = msg[1:]
	var prev int64
	for len(msg) > 0 {
		n, k := binary.Uvarint(msg)
		if k <= 0 || n > uint64(len(msg)-k) || n > 2*ingest.MaxNameLen+1 {
			return dst, errCorrupt
		}
		msg = msg[k:]
		series := in.get(msg[:n])
		msg = msg[n:]
		d, k := binary.Varint(msg)
		if k <= 0 || len(msg)-k < 8 {
			return dst, errCorrupt
		}
		msg = msg[k:]
		prev += d
		v := math.Float64frombits(binary.LittleEndian.Uint64(msg))
		msg = msg[8:]
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return dst, errCorrupt
		}
		dst = append(dst, ingest.Reading{Series: series, TimeMs: prev, Value: v})
	}
	return dst, nil
}
