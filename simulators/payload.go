package simulators

import (
	"strconv"
)

// The payload shapes of DESIGN.md §3, built by appending to a caller's
// buffer so that a steady publisher allocates nothing.

// Forms of device payloads (DevicesConfig.Form).
const (
	// FormObject is one JSON object per message on {prefix}/{device}:
	// {"ts":1700000000123,"temperature":21.53,...}.
	FormObject = "object"
	// FormMetric is one publish per metric on {prefix}/{device}/{metric}:
	// {"ts":1700000000123,"value":21.53}.
	FormMetric = "metric"
	// FormSenML is an RFC 8428 pack on {prefix}/{device}:
	// [{"bn":"sim-0007:","bt":1700000000.123,"n":"temperature","v":21.53},...].
	FormSenML = "senml"
)

// DeviceID returns the id of device i: prefix + i, zero-padded to at least
// four digits and to the width of the largest index of a fleet of n, so that
// ids sort in order ("sim-0007").
func DeviceID(prefix string, i, n int) string {
	width := max(4, len(strconv.Itoa(max(n-1, 0))))
	s := strconv.Itoa(i)
	for len(s) < width {
		s = "0" + s
	}
	return prefix + s
}

// appendFixed appends v with exactly decimals fraction digits.
func appendFixed(dst []byte, v float64, decimals int) []byte {
	return strconv.AppendFloat(dst, v, 'f', decimals, 64)
}

// appendScaled appends n / 10^decimals in decimal, without floating point:
// the load generator's fast path (appendScaled(b, 2153, 2) is "21.53").
func appendScaled(dst []byte, n int64, decimals int) []byte {
	if decimals <= 0 {
		return strconv.AppendInt(dst, n, 10)
	}
	if n < 0 {
		dst = append(dst, '-')
		n = -n
	}
	pow := int64(1)
	for range decimals {
		pow *= 10
	}
	dst = strconv.AppendInt(dst, n/pow, 10)
	dst = append(dst, '.')
	frac := n % pow
	for p := pow / 10; p > frac && p > 1; p /= 10 {
		dst = append(dst, '0')
	}
	return strconv.AppendInt(dst, frac, 10)
}

// appendObject appends {"ts":tsMs,"name":value,...}.
func appendObject(dst []byte, tsMs int64, ms []Metric, values []float64) []byte {
	dst = append(dst, `{"ts":`...)
	dst = strconv.AppendInt(dst, tsMs, 10)
	for i, m := range ms {
		dst = append(dst, `,"`...)
		dst = append(dst, m.Name...)
		dst = append(dst, `":`...)
		dst = appendFixed(dst, values[i], m.Decimals)
	}
	return append(dst, '}')
}

// appendValue appends {"ts":tsMs,"value":value}.
func appendValue(dst []byte, tsMs int64, m Metric, value float64) []byte {
	dst = append(dst, `{"ts":`...)
	dst = strconv.AppendInt(dst, tsMs, 10)
	dst = append(dst, `,"value":`...)
	dst = appendFixed(dst, value, m.Decimals)
	return append(dst, '}')
}

// appendSenML appends an RFC 8428 pack. The base name is "{device}:" so the
// metric is the part after the last ':' (DESIGN.md §3 via ingest), and the
// base time is seconds with exact milliseconds [RFC 8428 §4.5.3].
func appendSenML(dst []byte, device string, tsMs int64, ms []Metric, values []float64) []byte {
	dst = append(dst, '[')
	for i, m := range ms {
		if i == 0 {
			dst = append(dst, `{"bn":"`...)
			dst = append(dst, device...)
			dst = append(dst, `:","bt":`...)
			dst = appendScaled(dst, tsMs, 3)
			dst = append(dst, `,"n":"`...)
		} else {
			dst = append(dst, `,{"n":"`...)
		}
		dst = append(dst, m.Name...)
		dst = append(dst, `","v":`...)
		dst = appendFixed(dst, values[i], m.Decimals)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}
