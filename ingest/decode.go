package ingest

import (
	"bytes"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fastjson"
)

// DecodeConfig holds the validation rules of the device contract (DESIGN.md §3).
type DecodeConfig struct {
	// Prefix is the first topic level of telemetry. Zero means "telemetry".
	Prefix string `yaml:"prefix"`
	// MaxPayloadBytes caps a payload before it is parsed. Zero means 64 KiB.
	MaxPayloadBytes int `yaml:"max-payload-bytes"`
	// MaxSkew is how far ahead of the server clock a reading time may be.
	// Zero means 5 minutes.
	MaxSkew time.Duration `yaml:"max-skew"`
	// LateWindow is how far behind the server clock a reading time may be.
	// Zero means 24 hours.
	LateWindow time.Duration `yaml:"late-window"`
}

func (c *DecodeConfig) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = "telemetry"
	}
	if c.MaxPayloadBytes <= 0 {
		c.MaxPayloadBytes = 64 << 10
	}
	if c.MaxSkew <= 0 {
		c.MaxSkew = 5 * time.Minute
	}
	if c.LateWindow <= 0 {
		c.LateWindow = 24 * time.Hour
	}
}

// internLimit bounds a Decoder's cache of series ids. When it is full the
// cache is dropped and rebuilt from what arrives next, so a device cycling
// through random names costs allocations, not memory.
const internLimit = 1 << 16

// Decoder turns MQTT messages into readings. It keeps a JSON parser and a
// cache of series ids so that decoding a known series allocates nothing.
//
// A Decoder is not safe for concurrent use: each shard owns one.
type Decoder struct {
	cfg       DecodeConfig
	prefix    string // cfg.Prefix + "/"
	maxSkewMs int64
	lateMs    int64
	parser    fastjson.Parser
	intern    map[string]string
	name      []byte // scratch: "{device}/{metric}" being built
	readings  []Reading
	rejects   []RejectError
	senName   []byte // scratch: a SenML bn+n
	device    string
	nowMs     int64
	minMs     int64 // oldest accepted reading time: nowMs-lateMs, saturated
	maxMs     int64 // newest accepted reading time: nowMs+maxSkewMs, saturated
}

// NewDecoder returns a Decoder for cfg, with zero fields set to their defaults.
func NewDecoder(cfg DecodeConfig) *Decoder {
	cfg.setDefaults()
	return &Decoder{
		cfg:       cfg,
		prefix:    cfg.Prefix + "/",
		maxSkewMs: cfg.MaxSkew.Milliseconds(),
		lateMs:    cfg.LateWindow.Milliseconds(),
		intern:    make(map[string]string),
	}
}

// Decoded is the outcome of decoding one message. Its slices belong to the
// Decoder and are valid until its next Decode call.
type Decoded struct {
	// Device is the device the topic names, or "" when the topic is not a
	// valid telemetry topic (such a message cannot be attributed to a device).
	Device string
	// Readings are the accepted readings, in payload order.
	Readings []Reading
	// Rejects lists what was refused: one entry for a payload refused as a
	// whole, or one per refused reading.
	Rejects []RejectError
}

// Decode parses one message published on topic at nowMs (the server clock,
// Unix ms). It never panics: every problem becomes a RejectError.
func (d *Decoder) Decode(topic string, payload []byte, nowMs int64) Decoded {
	d.readings = d.readings[:0]
	d.rejects = d.rejects[:0]
	d.nowMs = nowMs
	// Saturate rather than wrap, so that a clock near the ends of int64 (a
	// bad injected clock, a fuzzer) narrows the window instead of turning it
	// inside out and accepting every time.
	d.minMs = addSat(nowMs, -d.lateMs)
	d.maxMs = addSat(nowMs, d.maxSkewMs)
	d.device = ""

	device, metric, err := d.splitTopic(topic)
	if err != nil {
		d.rejects = append(d.rejects, *err)
		return d.result()
	}
	d.device = device
	if len(payload) > d.cfg.MaxPayloadBytes {
		d.rejects = append(d.rejects, *reject(ReasonTooLarge, "%d bytes, limit %d", len(payload), d.cfg.MaxPayloadBytes))
		return d.result()
	}
	if metric != "" {
		d.decodeMetricTopic(metric, payload)
	} else {
		d.decodeDeviceTopic(payload)
	}
	return d.result()
}

func (d *Decoder) result() Decoded {
	return Decoded{Device: d.device, Readings: d.readings, Rejects: d.rejects}
}

// splitTopic checks "{prefix}/{device}[/{metric}]" and returns its names.
func (d *Decoder) splitTopic(topic string) (device, metric string, _ *RejectError) {
	rest, ok := strings.CutPrefix(topic, d.prefix)
	if !ok {
		return "", "", reject(ReasonMalformed, "topic %.80q is not under %q", topic, d.prefix)
	}
	device, metric, hasMetric := strings.Cut(rest, "/")
	if !ValidName(device) {
		return "", "", reject(ReasonBadName, "device name %.80q", device)
	}
	if hasMetric && !ValidName(metric) {
		// The device is known, so the rejection is attributed to it.
		d.device = device
		return "", "", reject(ReasonBadName, "metric name %.80q", metric)
	}
	return device, metric, nil
}

// decodeMetricTopic handles telemetry/{device}/{metric}: a plain number, a
// boolean, or {"ts": ..., "value": ...}.
func (d *Decoder) decodeMetricTopic(metric string, payload []byte) {
	p := bytes.TrimSpace(payload)
	if len(p) > 0 && p[0] != '{' {
		// A plain number: the common case for tiny devices, parsed without
		// the JSON machinery.
		v, err := parsePlainValue(p)
		if err != nil {
			d.rejects = append(d.rejects, *err)
			return
		}
		d.add(d.seriesID(metric), d.nowMs, v)
		return
	}
	root, err := d.parser.ParseBytes(p)
	if err != nil {
		d.rejects = append(d.rejects, *malformedJSON(err))
		return
	}
	obj := root.GetObject()
	tsMs, rerr := d.readingTime(obj.Get("ts"))
	if rerr != nil {
		d.rejects = append(d.rejects, *rerr)
		return
	}
	val := obj.Get("value")
	if val == nil {
		d.rejects = append(d.rejects, *reject(ReasonMalformed, `object has no "value"`))
		return
	}
	v, ok, rerr := jsonValue(val)
	if rerr != nil {
		d.rejects = append(d.rejects, *rerr)
		return
	}
	if !ok {
		d.rejects = append(d.rejects, *reject(ReasonMalformed, `"value" is %s, not a number`, val.Type()))
		return
	}
	d.addChecked(d.seriesID(metric), tsMs, v)
}

// maxDetailBytes caps the Detail of a malformed-JSON reject. fastjson nests
// one "cannot parse object: " per level of the payload and quotes the rest of
// the input after some errors, so its messages grow with the payload: a
// hostile 64 KiB payload would otherwise make a 64 KiB detail in every log
// line and API response that shows it.
const maxDetailBytes = 160

// malformedJSON turns a parser error into a short malformed reject: the
// innermost "cannot parse X: why" of fastjson's chain, and the start of the
// unparsed tail.
func malformedJSON(err error) *RejectError {
	const tailSep = "; unparsed tail: "
	cause, tail := strings.TrimPrefix(err.Error(), "cannot parse JSON: "), ""
	if i := strings.LastIndex(cause, tailSep); i >= 0 {
		cause, tail = cause[:i], cause[i+len(tailSep):]
	}
	for {
		_, inner, ok := strings.Cut(cause, ": ")
		if !ok || !strings.HasPrefix(inner, "cannot parse ") {
			break
		}
		cause = inner
	}
	detail := cutDetail(cause, maxDetailBytes-len(tailSep)-40)
	if tail != "" && tail != `""` {
		detail += tailSep + cutDetail(tail, 40)
	}
	return &RejectError{Reason: ReasonMalformed, Detail: detail}
}

// cutDetail shortens s to at most n bytes, marking the cut with "...".
func cutDetail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// ToValidUTF8 drops a rune cut in two at the seam.
	return strings.ToValidUTF8(s[:n-3], "") + "..."
}

// parsePlainValue parses a payload that is a bare number or boolean.
func parsePlainValue(p []byte) (float64, *RejectError) {
	switch string(p) {
	case "true":
		return 1, nil
	case "false":
		return 0, nil
	}
	if bytes.ContainsAny(p, "_xX") {
		// ParseFloat takes Go literal syntax: "1_000" and "0x1p4" are not
		// numbers in the device contract, and {"value": 1_000} is refused.
		return 0, reject(ReasonMalformed, "%.40q is not a number", p)
	}
	v, err := strconv.ParseFloat(string(p), 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, reject(ReasonNotFinite, "%.40q overflows", p)
		}
		return 0, reject(ReasonMalformed, "%.40q is not a number", p)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, reject(ReasonNotFinite, "%.40q", p)
	}
	return v, nil
}

// decodeDeviceTopic handles telemetry/{device}: a JSON object or a SenML array.
func (d *Decoder) decodeDeviceTopic(payload []byte) {
	root, err := d.parser.ParseBytes(payload)
	if err != nil {
		d.rejects = append(d.rejects, *malformedJSON(err))
		return
	}
	switch root.Type() {
	case fastjson.TypeObject:
		d.decodeObject(root.GetObject())
	case fastjson.TypeArray:
		d.decodeSenML(root.GetArray())
	default:
		d.rejects = append(d.rejects, *reject(ReasonMalformed, "payload is a JSON %s, want an object or a SenML array", root.Type()))
	}
}

func (d *Decoder) decodeObject(obj *fastjson.Object) {
	tsMs, rerr := d.readingTime(obj.Get("ts"))
	if rerr != nil {
		d.rejects = append(d.rejects, *rerr)
		return
	}
	if rerr := d.checkTime(tsMs); rerr != nil {
		// One reading time for the whole payload: refuse it once rather
		// than once per metric.
		d.rejects = append(d.rejects, *rerr)
		return
	}
	d.name = append(d.name[:0], d.device...)
	d.name = append(d.name, '/')
	d.flatten(obj, tsMs, true)
}

// flatten adds every numeric or boolean field of obj under the metric-name
// prefix already in d.name, recursing into nested objects with "." between
// levels. Strings, nulls and arrays are ignored, as the contract says.
func (d *Decoder) flatten(obj *fastjson.Object, tsMs int64, top bool) {
	base := len(d.name)
	obj.Visit(func(key []byte, v *fastjson.Value) {
		if top && string(key) == "ts" {
			return
		}
		d.name = append(d.name[:base], key...)
		switch v.Type() {
		case fastjson.TypeObject:
			if len(d.name)-d.metricStart() >= MaxNameLen {
				d.rejects = append(d.rejects, *reject(ReasonBadName, "metric name %.80q", d.name[d.metricStart():]))
				return
			}
			d.name = append(d.name, '.')
			d.flatten(v.GetObject(), tsMs, false)
		case fastjson.TypeNumber, fastjson.TypeTrue, fastjson.TypeFalse:
			val, _, rerr := jsonValue(v)
			metric := d.name[d.metricStart():]
			switch {
			case !validNameBytes(metric):
				d.rejects = append(d.rejects, *reject(ReasonBadName, "metric name %.80q", metric))
			case rerr != nil:
				d.rejects = append(d.rejects, *rerr)
			default:
				d.add(d.internName(), tsMs, val)
			}
		}
	})
	d.name = d.name[:base]
}

func (d *Decoder) metricStart() int { return len(d.device) + 1 }

// decodeSenML handles an RFC 8428 pack. Base fields (bn, bt, bv) carry over to
// later records [RFC 8428 §4.1]. Times are seconds; a time below 2^28 is
// relative to now [RFC 8428 §4.5.3]. The metric is bn+n; when that is a URN or
// path (it has ':' or '/'), the part after the last separator is used, so
// "urn:dev:ow:10e2073a01080063:temp" is metric "temp" of the topic's device.
func (d *Decoder) decodeSenML(recs []*fastjson.Value) {
	var (
		baseName []byte
		baseTime float64
		baseVal  float64
	)
	for i, rec := range recs {
		obj, err := rec.Object()
		if err != nil {
			d.rejects = append(d.rejects, *reject(ReasonMalformed, "SenML record %d is not an object", i))
			continue
		}
		if v := obj.Get("bn"); v != nil {
			b, err := v.StringBytes()
			if err != nil {
				d.rejects = append(d.rejects, *reject(ReasonMalformed, "SenML record %d: bn is not a string", i))
				continue
			}
			baseName = b
		}
		if v := obj.Get("bt"); v != nil {
			f, err := v.Float64()
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				d.rejects = append(d.rejects, *reject(ReasonBadTime, "SenML record %d: bt", i))
				continue
			}
			baseTime = f
		}
		if v := obj.Get("bv"); v != nil {
			f, err := v.Float64()
			if err != nil {
				d.rejects = append(d.rejects, *reject(ReasonMalformed, "SenML record %d: bv is not a number", i))
				continue
			}
			baseVal = f
		}
		var value float64
		if v := obj.Get("v"); v != nil {
			f, err := v.Float64()
			if err != nil {
				d.rejects = append(d.rejects, *reject(ReasonMalformed, "SenML record %d: v is not a number", i))
				continue
			}
			value = baseVal + f
		} else if v := obj.Get("vb"); v != nil {
			b, err := v.Bool()
			if err != nil {
				d.rejects = append(d.rejects, *reject(ReasonMalformed, "SenML record %d: vb is not a boolean", i))
				continue
			}
			if b {
				value = 1
			}
		} else {
			// Base-only records and string/data values carry no metric.
			continue
		}
		var name []byte
		if v := obj.Get("n"); v != nil {
			b, err := v.StringBytes()
			if err != nil {
				d.rejects = append(d.rejects, *reject(ReasonMalformed, "SenML record %d: n is not a string", i))
				continue
			}
			name = b
		}
		t := baseTime
		if v := obj.Get("t"); v != nil {
			f, err := v.Float64()
			if err != nil {
				d.rejects = append(d.rejects, *reject(ReasonBadTime, "SenML record %d: t", i))
				continue
			}
			t += f
		}
		tsMs, rerr := d.senmlTime(t)
		if rerr == nil {
			rerr = d.checkTime(tsMs)
		}
		if rerr != nil {
			d.rejects = append(d.rejects, *rerr)
			continue
		}
		full := append(append(d.senName[:0], baseName...), name...)
		d.senName = full
		if j := bytes.LastIndexAny(full, ":/"); j >= 0 {
			full = full[j+1:]
		}
		d.name = append(d.name[:0], d.device...)
		d.name = append(d.name, '/')
		d.name = append(d.name, full...)
		metric := d.name[d.metricStart():]
		if !validNameBytes(metric) {
			d.rejects = append(d.rejects, *reject(ReasonBadName, "metric name %.80q", metric))
			continue
		}
		if math.IsNaN(value) || math.IsInf(value, 0) {
			d.rejects = append(d.rejects, *reject(ReasonNotFinite, "%s", metric))
			continue
		}
		d.add(d.internName(), tsMs, value)
	}
}

// senmlTime converts a resolved SenML time in seconds to Unix ms. Zero means
// "now"; values below 2^28 are relative to now [RFC 8428 §4.5.3].
func (d *Decoder) senmlTime(t float64) (int64, *RejectError) {
	if math.IsNaN(t) || math.IsInf(t, 0) {
		return 0, reject(ReasonBadTime, "SenML time is not finite")
	}
	if math.Abs(t) < 1<<28 {
		return addSat(d.nowMs, int64(math.Round(t*1000))), nil
	}
	ms := t * 1000
	if ms > math.MaxInt64/2 || ms < math.MinInt64/2 {
		return 0, reject(ReasonBadTime, "SenML time %g out of range", t)
	}
	return int64(math.Round(ms)), nil
}

// readingTime resolves a "ts" field: absent means now; a number is Unix ms; a
// string is RFC 3339 or decimal Unix ms. Anything else refuses the payload.
func (d *Decoder) readingTime(v *fastjson.Value) (int64, *RejectError) {
	if v == nil {
		return d.nowMs, nil
	}
	switch v.Type() {
	case fastjson.TypeNumber:
		f, err := v.Float64()
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f > math.MaxInt64/2 || f < math.MinInt64/2 {
			return 0, reject(ReasonBadTime, "ts %.40q", v.String())
		}
		return int64(f), nil
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		return parseTimeString(b)
	default:
		return 0, reject(ReasonBadTime, "ts is a JSON %s", v.Type())
	}
}

func parseTimeString(b []byte) (int64, *RejectError) {
	// Only hand ParseInt what looks like an integer: its error for an
	// RFC 3339 string costs two allocations on every such payload.
	if isDecimal(b) {
		if ms, err := strconv.ParseInt(string(b), 10, 64); err == nil {
			return ms, nil
		}
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return 0, reject(ReasonBadTime, "ts %.40q is neither Unix ms nor RFC 3339", b)
	}
	return t.UnixMilli(), nil
}

// isDecimal reports whether b is an optionally signed run of ASCII digits,
// the syntax strconv.ParseInt accepts in base 10.
func isDecimal(b []byte) bool {
	if len(b) > 0 && (b[0] == '-' || b[0] == '+') {
		b = b[1:]
	}
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// checkTime applies the late window and the future skew to a reading time.
func (d *Decoder) checkTime(tsMs int64) *RejectError {
	if tsMs > d.maxMs {
		return reject(ReasonFuture, "ts %d is %s ahead", tsMs, msDuration(tsMs, d.nowMs))
	}
	if tsMs < d.minMs {
		return reject(ReasonTooOld, "ts %d is %s old", tsMs, msDuration(d.nowMs, tsMs))
	}
	return nil
}

// addSat returns a+b, clamped to the int64 range instead of wrapping.
func addSat(a, b int64) int64 {
	s := a + b
	switch {
	case b > 0 && s < a:
		return math.MaxInt64
	case b < 0 && s > a:
		return math.MinInt64
	}
	return s
}

// msDuration is (a-b) ms as a Duration for messages, for a >= b. It is
// computed in uint64, where a-b cannot overflow, and clamped, so that a wild
// timestamp reads as a very long time rather than a wrapped negative one.
func msDuration(a, b int64) time.Duration {
	diff := uint64(a) - uint64(b)
	if diff > uint64(math.MaxInt64/int64(time.Millisecond)) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(diff) * time.Millisecond
}

// jsonValue returns a JSON number or boolean as a float. ok is false for other
// types; err is set for numbers that are not finite.
func jsonValue(v *fastjson.Value) (f float64, ok bool, err *RejectError) {
	switch v.Type() {
	case fastjson.TypeTrue:
		return 1, true, nil
	case fastjson.TypeFalse:
		return 0, true, nil
	case fastjson.TypeNumber:
		f, perr := v.Float64()
		if perr != nil {
			// fastjson's number scanner is lenient ("1-2"); the float parser
			// is not.
			return 0, true, reject(ReasonMalformed, "number %.40q", v.String())
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, true, reject(ReasonNotFinite, "%.40q", v.String())
		}
		return f, true, nil
	}
	return 0, false, nil
}

// add appends an accepted reading whose time was already checked.
func (d *Decoder) add(series string, tsMs int64, v float64) {
	d.readings = append(d.readings, Reading{Series: series, TimeMs: tsMs, Value: v})
}

// addChecked applies the time window and appends the reading.
func (d *Decoder) addChecked(series string, tsMs int64, v float64) {
	if rerr := d.checkTime(tsMs); rerr != nil {
		d.rejects = append(d.rejects, *rerr)
		return
	}
	d.add(series, tsMs, v)
}

// seriesID builds "{device}/{metric}" in the scratch buffer and interns it.
func (d *Decoder) seriesID(metric string) string {
	d.name = append(d.name[:0], d.device...)
	d.name = append(d.name, '/')
	d.name = append(d.name, metric...)
	return d.internName()
}

// internName returns d.name as a string, reusing an earlier allocation when
// the same series was seen before.
func (d *Decoder) internName() string {
	if s, ok := d.intern[string(d.name)]; ok {
		return s
	}
	s := string(d.name)
	if len(d.intern) >= internLimit {
		clear(d.intern)
	}
	d.intern[s] = s
	return s
}

func validNameBytes(b []byte) bool {
	if len(b) == 0 || len(b) > MaxNameLen {
		return false
	}
	for _, c := range b {
		if !nameChar[c] {
			return false
		}
	}
	return true
}
