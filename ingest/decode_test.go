package ingest

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// decodeNowMs is the server clock of most decode tests:
// 2023-11-14T22:13:20Z, a round Unix second.
const decodeNowMs int64 = 1_700_000_000_000

const (
	decodeSkewMs = int64(5 * time.Minute / time.Millisecond)
	decodeLateMs = int64(24 * time.Hour / time.Millisecond)
)

// decodeCase is one message and what the decoder must make of it.
type decodeCase struct {
	name    string
	cfg     DecodeConfig
	topic   string
	payload string
	nowMs   int64 // 0 means decodeNowMs
	device  string
	want    []Reading
	rejects []Reason
}

func wantReading(series string, tMs int64, v float64) Reading {
	return Reading{Series: series, TimeMs: tMs, Value: v}
}

func runDecodeCases(t *testing.T, cases []decodeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nowMs := tc.nowMs
			if nowMs == 0 {
				nowMs = decodeNowMs
			}
			d := NewDecoder(tc.cfg)
			got := d.Decode(tc.topic, []byte(tc.payload), nowMs)
			requireDecoded(t, tc.device, tc.want, tc.rejects, got)
			requireDecodeInvariants(t, tc.cfg, tc.topic, nowMs, got)

			// A second decode with the same Decoder (warm scratch buffers
			// and series cache) must give the same answer.
			again := d.Decode(tc.topic, []byte(tc.payload), nowMs)
			requireDecoded(t, tc.device, tc.want, tc.rejects, again)
		})
	}
}

// requireDecoded checks the device attribution, the accepted readings (exact,
// in order) and the reasons of the rejects (in order).
func requireDecoded(t testing.TB, device string, want []Reading, reasons []Reason, got Decoded) {
	t.Helper()
	require.Equal(t, device, got.Device, "Decoded.Device")
	if len(want) == 0 {
		require.Empty(t, got.Readings, "readings")
	} else {
		require.Equal(t, want, got.Readings, "readings")
	}
	gotReasons := make([]Reason, 0, len(got.Rejects))
	for _, r := range got.Rejects {
		gotReasons = append(gotReasons, r.Reason)
	}
	if len(reasons) == 0 {
		require.Empty(t, gotReasons, "rejects: %v", got.Rejects)
	} else {
		require.Equal(t, reasons, gotReasons, "rejects: %v", got.Rejects)
	}
	for i := range got.Rejects {
		r := &got.Rejects[i]
		require.ErrorIs(t, r, r.Reason.Err())
		require.NotEmpty(t, r.Detail, "every reject says what was wrong")
	}
}

// requireDecodeInvariants checks what must hold for any message at all; the
// fuzzers rely on it too.
func requireDecodeInvariants(t testing.TB, cfg DecodeConfig, topic string, nowMs int64, got Decoded) {
	t.Helper()
	cfg.setDefaults()
	lo := addSat(nowMs, -cfg.LateWindow.Milliseconds())
	hi := addSat(nowMs, cfg.MaxSkew.Milliseconds())
	if got.Device != "" {
		require.True(t, ValidName(got.Device), "device %q", got.Device)
		require.True(t, strings.HasPrefix(topic, cfg.Prefix+"/"+got.Device), "device %q of topic %q", got.Device, topic)
		rest := topic[len(cfg.Prefix)+1+len(got.Device):]
		require.True(t, rest == "" || rest[0] == '/', "device %q is a whole topic level of %q", got.Device, topic)
	}
	for _, r := range got.Readings {
		require.True(t, ValidSeries(r.Series), "series %q", r.Series)
		require.Equal(t, got.Device, r.Device(), "reading %v is attributed to the topic's device", r)
		require.False(t, math.IsNaN(r.Value) || math.IsInf(r.Value, 0), "value of %v", r)
		require.GreaterOrEqual(t, r.TimeMs, lo, "reading %v older than the late window", r)
		require.LessOrEqual(t, r.TimeMs, hi, "reading %v beyond the skew", r)
	}
	if len(got.Readings) > 0 {
		require.NotEmpty(t, got.Device, "readings need a device")
	}
	for i := range got.Rejects {
		r := &got.Rejects[i]
		require.Less(t, int(r.Reason), NumReasons, "reason of %v", r)
		require.ErrorIs(t, r, r.Reason.Err())
		// Names and topics are quoted cut to 80 runes, parser errors to
		// maxDetailBytes: never the whole payload.
		require.LessOrEqual(t, len(r.Detail), 1024, "details are short: %q", r.Detail)
		require.True(t, utf8.ValidString(r.Detail), "details are valid UTF-8: %q", r.Detail)
		require.NotEqual(t, ReasonTooManySeries, r.Reason, "the decoder does not count series")
		require.NotEqual(t, ReasonOverload, r.Reason, "the decoder does not queue")
	}
}

func TestDecodeObject(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{
			name:    "numeric fields",
			topic:   "telemetry/dev1",
			payload: `{"temperature":21.5,"humidity":40}`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/temperature", decodeNowMs, 21.5), wantReading("dev1/humidity", decodeNowMs, 40)},
		},
		{
			name:    "number syntax",
			topic:   "telemetry/dev1",
			payload: `{"neg":-1.5e3,"zero":0,"exp":2E-2,"big":12345678901234567890,"tiny":1e-999}`,
			device:  "dev1",
			want: []Reading{
				wantReading("dev1/neg", decodeNowMs, -1500),
				wantReading("dev1/zero", decodeNowMs, 0),
				wantReading("dev1/exp", decodeNowMs, 0.02),
				wantReading("dev1/big", decodeNowMs, 12345678901234567890),
				wantReading("dev1/tiny", decodeNowMs, 0),
			},
		},
		{
			name:    "booleans count as 0 and 1",
			topic:   "telemetry/dev1",
			payload: `{"door_open":true,"alarm":false}`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/door_open", decodeNowMs, 1), wantReading("dev1/alarm", decodeNowMs, 0)},
		},
		{
			name:    "nested objects flatten with dots",
			topic:   "telemetry/dev1",
			payload: `{"env":{"t":1,"h":{"rel":2}},"x":3}`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/env.t", decodeNowMs, 1), wantReading("dev1/env.h.rel", decodeNowMs, 2), wantReading("dev1/x", decodeNowMs, 3)},
		},
		{
			name:    "nested ts is an ordinary metric",
			topic:   "telemetry/dev1",
			payload: `{"ts":1700000000123,"gps":{"ts":5,"fix":true}}`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/gps.ts", 1700000000123, 5), wantReading("dev1/gps.fix", 1700000000123, 1)},
		},
		{
			name:    "other strings are ignored",
			topic:   "telemetry/dev1",
			payload: `{"fw":"1.4.2","t":1,"status":"ok","num_as_string":"21.5"}`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/t", decodeNowMs, 1)},
		},
		{
			name:    "nulls and arrays are ignored",
			topic:   "telemetry/dev1",
			payload: `{"a":null,"b":[1,2,3],"c":[{"d":1}],"t":1}`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/t", decodeNowMs, 1)},
		},
		{
			name:    "empty object",
			topic:   "telemetry/dev1",
			payload: `{}`,
			device:  "dev1",
		},
		{
			name:    "empty nested object",
			topic:   "telemetry/dev1",
			payload: `{"env":{},"t":1}`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/t", decodeNowMs, 1)},
		},
		{
			name:    "only a timestamp",
			topic:   "telemetry/dev1",
			payload: `{"ts":1700000000123}`,
			device:  "dev1",
		},
		{
			name:    "whitespace around and inside",
			topic:   "telemetry/dev1",
			payload: " \r\n\t{ \"t\" : 1 ,\n \"env\" : { \"h\" : 2 } }\n",
			device:  "dev1",
			want:    []Reading{wantReading("dev1/t", decodeNowMs, 1), wantReading("dev1/env.h", decodeNowMs, 2)},
		},
		{
			name:    "escaped key",
			topic:   "telemetry/dev1",
			payload: `{"t\u0065mp":1}`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/temp", decodeNowMs, 1)},
		},
		{
			name:    "duplicate keys are both kept",
			topic:   "telemetry/dev1",
			payload: `{"t":1,"t":2}`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/t", decodeNowMs, 1), wantReading("dev1/t", decodeNowMs, 2)},
		},
		{
			name:    "longest metric name",
			topic:   "telemetry/dev1",
			payload: `{"` + strings.Repeat("m", 64) + `":1}`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/"+strings.Repeat("m", 64), decodeNowMs, 1)},
		},
		{
			name:    "longest nested metric name",
			topic:   "telemetry/dev1",
			payload: `{"` + strings.Repeat("a", 31) + `":{"` + strings.Repeat("b", 32) + `":1}}`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/"+strings.Repeat("a", 31)+"."+strings.Repeat("b", 32), decodeNowMs, 1)},
		},
		{
			name:    "partial acceptance",
			topic:   "telemetry/dev1",
			payload: `{"good":1,"bad name":2,"nan":NaN,"lenient":1-2,"inf":-Inf,"huge":1e999,"ok":true}`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/good", decodeNowMs, 1), wantReading("dev1/ok", decodeNowMs, 1)},
			rejects: []Reason{ReasonBadName, ReasonNotFinite, ReasonMalformed, ReasonNotFinite, ReasonNotFinite},
		},
		{
			name:    "metric name too long",
			topic:   "telemetry/dev1",
			payload: `{"` + strings.Repeat("m", 65) + `":1,"t":2}`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/t", decodeNowMs, 2)},
			rejects: []Reason{ReasonBadName},
		},
		{
			name:    "nested metric name too long",
			topic:   "telemetry/dev1",
			payload: `{"` + strings.Repeat("a", 32) + `":{"` + strings.Repeat("b", 32) + `":1},"t":2}`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/t", decodeNowMs, 2)},
			rejects: []Reason{ReasonBadName},
		},
		{
			name:    "object key already too long is refused once",
			topic:   "telemetry/dev1",
			payload: `{"` + strings.Repeat("a", 64) + `":{"b":1,"c":2},"t":2}`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/t", decodeNowMs, 2)},
			rejects: []Reason{ReasonBadName},
		},
		{
			name:    "bad name inside a nested object",
			topic:   "telemetry/dev1",
			payload: `{"env":{"t":1,"rel hum":2}}`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/env.t", decodeNowMs, 1)},
			rejects: []Reason{ReasonBadName},
		},
		{
			name:    "escaped slash in a key",
			topic:   "telemetry/dev1",
			payload: `{"a\/b":1}`,
			device:  "dev1",
			rejects: []Reason{ReasonBadName},
		},
		{
			name:    "non-ascii key",
			topic:   "telemetry/dev1",
			payload: `{"température":1,"t\u00e9":2}`,
			device:  "dev1",
			rejects: []Reason{ReasonBadName, ReasonBadName},
		},
		{
			name:    "empty key",
			topic:   "telemetry/dev1",
			payload: `{"":1}`,
			device:  "dev1",
			rejects: []Reason{ReasonBadName},
		},
		{
			name:    "name is checked before value",
			topic:   "telemetry/dev1",
			payload: `{"bad name":NaN}`,
			device:  "dev1",
			rejects: []Reason{ReasonBadName},
		},
	})
}

func TestDecodeObjectTimestamp(t *testing.T) {
	const tsMs = 1_700_000_000_123
	obj := func(ts string) string { return `{"ts":` + ts + `,"t":1}` }
	one := func(tMs int64) []Reading { return []Reading{wantReading("dev1/t", tMs, 1)} }
	runDecodeCases(t, []decodeCase{
		{name: "absent is now", topic: "telemetry/dev1", payload: `{"t":1}`, device: "dev1", want: one(decodeNowMs)},
		{name: "unix ms number", topic: "telemetry/dev1", payload: obj(`1700000000123`), device: "dev1", want: one(tsMs)},
		{name: "unix ms number after the metrics", topic: "telemetry/dev1", payload: `{"t":1,"ts":1700000000123}`, device: "dev1", want: one(tsMs)},
		{name: "fractional ms number truncates", topic: "telemetry/dev1", payload: obj(`1700000000123.9`), device: "dev1", want: one(tsMs)},
		{name: "exponent ms number", topic: "telemetry/dev1", payload: obj(`1.7e12`), device: "dev1", want: one(decodeNowMs)},
		{name: "decimal ms string", topic: "telemetry/dev1", payload: obj(`"1700000000123"`), device: "dev1", want: one(tsMs)},
		{name: "rfc3339 utc", topic: "telemetry/dev1", payload: obj(`"2023-11-14T22:13:20Z"`), device: "dev1", want: one(decodeNowMs)},
		{name: "rfc3339 millis", topic: "telemetry/dev1", payload: obj(`"2023-11-14T22:13:20.123Z"`), device: "dev1", want: one(tsMs)},
		{name: "rfc3339 nanos truncate", topic: "telemetry/dev1", payload: obj(`"2023-11-14T22:13:20.123999999Z"`), device: "dev1", want: one(tsMs)},
		{name: "rfc3339 positive offset", topic: "telemetry/dev1", payload: obj(`"2023-11-14T23:13:20.123+01:00"`), device: "dev1", want: one(tsMs)},
		{name: "rfc3339 negative offset", topic: "telemetry/dev1", payload: obj(`"2023-11-14T17:13:20-05:00"`), device: "dev1", want: one(decodeNowMs)},
		{name: "rfc3339 nanos and offset", topic: "telemetry/dev1", payload: obj(`"2023-11-14T23:43:20.123456789+01:30"`), device: "dev1", want: one(tsMs)},
		{name: "escaped ts key", topic: "telemetry/dev1", payload: `{"t\u0073":1700000000123,"t":1}`, device: "dev1", want: one(tsMs)},

		// Present but not a time: the whole payload is refused, once.
		{name: "word", topic: "telemetry/dev1", payload: obj(`"yesterday"`), device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "empty string", topic: "telemetry/dev1", payload: obj(`""`), device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "fractional ms string", topic: "telemetry/dev1", payload: obj(`"1700000000123.5"`), device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "exponent string", topic: "telemetry/dev1", payload: obj(`"1.7e12"`), device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "padded ms string", topic: "telemetry/dev1", payload: obj(`" 1700000000123"`), device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "ms string out of int64", topic: "telemetry/dev1", payload: obj(`"99999999999999999999"`), device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "rfc3339 with a space", topic: "telemetry/dev1", payload: obj(`"2023-11-14 22:13:20Z"`), device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "rfc3339 without zone", topic: "telemetry/dev1", payload: obj(`"2023-11-14T22:13:20"`), device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "rfc3339 hour 24", topic: "telemetry/dev1", payload: obj(`"2023-11-14T24:00:00Z"`), device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "true", topic: "telemetry/dev1", payload: obj(`true`), device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "null", topic: "telemetry/dev1", payload: obj(`null`), device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "object", topic: "telemetry/dev1", payload: obj(`{"ms":1}`), device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "array", topic: "telemetry/dev1", payload: obj(`[1700000000123]`), device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "NaN", topic: "telemetry/dev1", payload: obj(`NaN`), device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "overflowing number", topic: "telemetry/dev1", payload: obj(`1e999`), device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "number beyond int64", topic: "telemetry/dev1", payload: obj(`1e19`), device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "lenient number", topic: "telemetry/dev1", payload: obj(`17-00`), device: "dev1", rejects: []Reason{ReasonBadTime}},

		// The window: [now-LateWindow, now+MaxSkew], both ends included.
		{name: "at the skew limit", topic: "telemetry/dev1", payload: obj(strconv.FormatInt(decodeNowMs+decodeSkewMs, 10)), device: "dev1", want: one(decodeNowMs + decodeSkewMs)},
		{name: "past the skew limit", topic: "telemetry/dev1", payload: obj(strconv.FormatInt(decodeNowMs+decodeSkewMs+1, 10)), device: "dev1", rejects: []Reason{ReasonFuture}},
		{name: "at the late window", topic: "telemetry/dev1", payload: obj(strconv.FormatInt(decodeNowMs-decodeLateMs, 10)), device: "dev1", want: one(decodeNowMs - decodeLateMs)},
		{name: "past the late window", topic: "telemetry/dev1", payload: obj(strconv.FormatInt(decodeNowMs-decodeLateMs-1, 10)), device: "dev1", rejects: []Reason{ReasonTooOld}},
		{name: "seconds instead of ms", topic: "telemetry/dev1", payload: obj(`1700000000`), device: "dev1", rejects: []Reason{ReasonTooOld}},
		{name: "microseconds instead of ms", topic: "telemetry/dev1", payload: obj(`1700000000000000`), device: "dev1", rejects: []Reason{ReasonFuture}},
		{name: "negative", topic: "telemetry/dev1", payload: obj(`-1`), device: "dev1", rejects: []Reason{ReasonTooOld}},
		{name: "far future string", topic: "telemetry/dev1", payload: obj(`"9223372036854775807"`), device: "dev1", rejects: []Reason{ReasonFuture}},
		{name: "far past string", topic: "telemetry/dev1", payload: obj(`"-9223372036854775808"`), device: "dev1", rejects: []Reason{ReasonTooOld}},
		{name: "future rfc3339", topic: "telemetry/dev1", payload: obj(`"2023-11-14T22:18:21Z"`), device: "dev1", rejects: []Reason{ReasonFuture}},
		{name: "old rfc3339", topic: "telemetry/dev1", payload: obj(`"2023-11-13T22:13:19Z"`), device: "dev1", rejects: []Reason{ReasonTooOld}},
		{
			name:    "out of window is refused once for all metrics",
			topic:   "telemetry/dev1",
			payload: `{"ts":1,"a":1,"b":2,"c":{"d":3}}`,
			device:  "dev1",
			rejects: []Reason{ReasonTooOld},
		},
		{
			name:    "bad ts wins over bad fields",
			topic:   "telemetry/dev1",
			payload: `{"bad name":NaN,"ts":"soon"}`,
			device:  "dev1",
			rejects: []Reason{ReasonBadTime},
		},
	})
}

func TestDecodeDeviceTopicMalformed(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{name: "truncated object", topic: "telemetry/dev1", payload: `{"t":`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "unquoted key", topic: "telemetry/dev1", payload: `{t:1}`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "trailing garbage", topic: "telemetry/dev1", payload: `{"t":1} x`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "two objects", topic: "telemetry/dev1", payload: `{"t":1}{"t":2}`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "empty payload", topic: "telemetry/dev1", payload: ``, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "only whitespace", topic: "telemetry/dev1", payload: " \n", device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "top-level number", topic: "telemetry/dev1", payload: `21.5`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "top-level string", topic: "telemetry/dev1", payload: `"21.5"`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "top-level boolean", topic: "telemetry/dev1", payload: `true`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "top-level null", topic: "telemetry/dev1", payload: `null`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "Infinity literal", topic: "telemetry/dev1", payload: `{"t":Infinity}`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "binary", topic: "telemetry/dev1", payload: "\x00\x01\xff", device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "nesting deeper than the parser allows", topic: "telemetry/dev1", payload: strings.Repeat(`{"a":`, 400) + "1" + strings.Repeat("}", 400), device: "dev1", rejects: []Reason{ReasonMalformed}},
	})
}

func TestDecodeMetricTopic(t *testing.T) {
	const tsMs = 1_700_000_000_123
	one := func(tMs int64, v float64) []Reading { return []Reading{wantReading("dev1/temp", tMs, v)} }
	runDecodeCases(t, []decodeCase{
		{name: "plain number", topic: "telemetry/dev1/temp", payload: `21.5`, device: "dev1", want: one(decodeNowMs, 21.5)},
		{name: "plain integer", topic: "telemetry/dev1/temp", payload: `-3`, device: "dev1", want: one(decodeNowMs, -3)},
		{name: "plain exponent", topic: "telemetry/dev1/temp", payload: `1e3`, device: "dev1", want: one(decodeNowMs, 1000)},
		{name: "plain zero", topic: "telemetry/dev1/temp", payload: `0`, device: "dev1", want: one(decodeNowMs, 0)},
		{name: "plain underflow is zero", topic: "telemetry/dev1/temp", payload: `1e-999`, device: "dev1", want: one(decodeNowMs, 0)},
		{name: "plain with whitespace", topic: "telemetry/dev1/temp", payload: " 21.5\r\n", device: "dev1", want: one(decodeNowMs, 21.5)},
		{name: "plain true", topic: "telemetry/dev1/temp", payload: `true`, device: "dev1", want: one(decodeNowMs, 1)},
		{name: "plain false", topic: "telemetry/dev1/temp", payload: `false`, device: "dev1", want: one(decodeNowMs, 0)},
		{name: "dotted metric", topic: "telemetry/dev1/env.temp", payload: `1`, device: "dev1", want: []Reading{wantReading("dev1/env.temp", decodeNowMs, 1)}},
		{name: "value object", topic: "telemetry/dev1/temp", payload: `{"ts":1700000000123,"value":21.5}`, device: "dev1", want: one(tsMs, 21.5)},
		{name: "value object value first", topic: "telemetry/dev1/temp", payload: `{"value":21.5,"ts":1700000000123}`, device: "dev1", want: one(tsMs, 21.5)},
		{name: "value object without ts", topic: "telemetry/dev1/temp", payload: `{"value":21.5}`, device: "dev1", want: one(decodeNowMs, 21.5)},
		{name: "value object rfc3339", topic: "telemetry/dev1/temp", payload: `{"ts":"2023-11-14T22:13:20.123Z","value":21.5}`, device: "dev1", want: one(tsMs, 21.5)},
		{name: "value object ms string", topic: "telemetry/dev1/temp", payload: `{"ts":"1700000000123","value":21.5}`, device: "dev1", want: one(tsMs, 21.5)},
		{name: "value object boolean", topic: "telemetry/dev1/temp", payload: `{"value":true}`, device: "dev1", want: one(decodeNowMs, 1)},
		{name: "value object extra fields ignored", topic: "telemetry/dev1/temp", payload: `{"value":1,"unit":"Cel","q":2}`, device: "dev1", want: one(decodeNowMs, 1)},
		{name: "value object with whitespace", topic: "telemetry/dev1/temp", payload: "\n { \"value\" : 2 } \n", device: "dev1", want: one(decodeNowMs, 2)},

		{name: "plain word", topic: "telemetry/dev1/temp", payload: `warm`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "plain with unit", topic: "telemetry/dev1/temp", payload: `21.5 C`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "plain empty", topic: "telemetry/dev1/temp", payload: ``, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "plain whitespace", topic: "telemetry/dev1/temp", payload: "  ", device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "plain null", topic: "telemetry/dev1/temp", payload: `null`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "plain quoted number", topic: "telemetry/dev1/temp", payload: `"21.5"`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "plain array", topic: "telemetry/dev1/temp", payload: `[21.5]`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "plain senml", topic: "telemetry/dev1/temp", payload: `[{"v":21.5}]`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "plain go underscores", topic: "telemetry/dev1/temp", payload: `1_000`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "plain go hex float", topic: "telemetry/dev1/temp", payload: `0x1p4`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "plain hex", topic: "telemetry/dev1/temp", payload: `0x10`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "plain go hex float overflowing", topic: "telemetry/dev1/temp", payload: `0x1p99999`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "plain capitalised boolean", topic: "telemetry/dev1/temp", payload: `True`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "value object without value", topic: "telemetry/dev1/temp", payload: `{"ts":1700000000123}`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "value object empty", topic: "telemetry/dev1/temp", payload: `{}`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "value object string value", topic: "telemetry/dev1/temp", payload: `{"value":"21.5"}`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "value object null value", topic: "telemetry/dev1/temp", payload: `{"value":null}`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "value object nested value", topic: "telemetry/dev1/temp", payload: `{"value":{"v":1}}`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "value object array value", topic: "telemetry/dev1/temp", payload: `{"value":[1]}`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "value object lenient number", topic: "telemetry/dev1/temp", payload: `{"value":1-2}`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "value object truncated", topic: "telemetry/dev1/temp", payload: `{"value":1`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "value object trailing garbage", topic: "telemetry/dev1/temp", payload: `{"value":1}}`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "value object bad ts", topic: "telemetry/dev1/temp", payload: `{"ts":"noon","value":1}`, device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "value object bad ts and no value", topic: "telemetry/dev1/temp", payload: `{"ts":true}`, device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "value object future", topic: "telemetry/dev1/temp", payload: `{"ts":1700000300001,"value":1}`, device: "dev1", rejects: []Reason{ReasonFuture}},
		{name: "value object too old", topic: "telemetry/dev1/temp", payload: `{"ts":1699913599999,"value":1}`, device: "dev1", rejects: []Reason{ReasonTooOld}},
	})
}

func TestDecodeNotFinite(t *testing.T) {
	var cases []decodeCase
	for _, lit := range []string{"NaN", "nan", "Inf", "-Inf", "+Inf", "inf", "1e999", "-1e999", "1.5e400"} {
		cases = append(cases,
			decodeCase{name: "object " + lit, topic: "telemetry/dev1", payload: `{"t":` + lit + `}`, device: "dev1", rejects: []Reason{ReasonNotFinite}},
			decodeCase{name: "value object " + lit, topic: "telemetry/dev1/t", payload: `{"value":` + lit + `}`, device: "dev1", rejects: []Reason{ReasonNotFinite}},
			decodeCase{name: "senml v " + lit, topic: "telemetry/dev1", payload: `[{"n":"t","v":` + lit + `}]`, device: "dev1", rejects: []Reason{ReasonNotFinite}},
		)
	}
	for _, lit := range []string{"NaN", "nan", "Inf", "-Inf", "+Inf", "Infinity", "-infinity", "1e999", "-1e999", "1.5e400"} {
		cases = append(cases, decodeCase{name: "plain " + lit, topic: "telemetry/dev1/t", payload: lit, device: "dev1", rejects: []Reason{ReasonNotFinite}})
	}
	cases = append(cases,
		decodeCase{name: "senml bv plus v overflows", topic: "telemetry/dev1", payload: `[{"bv":1e308,"n":"t","v":1e308}]`, device: "dev1", rejects: []Reason{ReasonNotFinite}},
		decodeCase{name: "senml NaN bv", topic: "telemetry/dev1", payload: `[{"bv":NaN},{"n":"t","v":1}]`, device: "dev1", rejects: []Reason{ReasonNotFinite}},
		decodeCase{name: "largest finite value", topic: "telemetry/dev1", payload: `{"t":1.7976931348623157e308}`, device: "dev1", want: []Reading{wantReading("dev1/t", decodeNowMs, math.MaxFloat64)}},
	)
	runDecodeCases(t, cases)
}

func TestDecodeSenML(t *testing.T) {
	const bt = `"bt":1700000000`
	runDecodeCases(t, []decodeCase{
		{
			name:    "base name urn and name",
			topic:   "telemetry/dev1",
			payload: `[{"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/temp", decodeNowMs, 23.1)},
		},
		{
			name:    "rfc 8428 single datapoint keeps the last urn segment",
			topic:   "telemetry/dev1",
			payload: `[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/10e2073a01080063", decodeNowMs, 23.1)},
		},
		{
			name:    "rfc 8428 multiple datapoints",
			topic:   "telemetry/dev1",
			payload: `[{"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},{"n":"current","u":"A","v":1.2}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/voltage", decodeNowMs, 120.1), wantReading("dev1/current", decodeNowMs, 1.2)},
		},
		{
			name:  "rfc 8428 multiple measurements",
			topic: "telemetry/dev1",
			payload: `[{"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,"bu":"A","bver":5,"n":"voltage","u":"V","v":120.1},` +
				`{"n":"current","t":-5,"v":1.2},{"n":"current","t":-4,"v":1.3},{"n":"current","t":-3,"v":1.4},` +
				`{"n":"current","t":-2,"v":1.5},{"n":"current","t":-1,"v":1.6},{"n":"current","v":1.7}]`,
			nowMs:  1_276_020_076_001,
			device: "dev1",
			want: []Reading{
				wantReading("dev1/voltage", 1_276_020_076_001, 120.1),
				wantReading("dev1/current", 1_276_020_071_001, 1.2),
				wantReading("dev1/current", 1_276_020_072_001, 1.3),
				wantReading("dev1/current", 1_276_020_073_001, 1.4),
				wantReading("dev1/current", 1_276_020_074_001, 1.5),
				wantReading("dev1/current", 1_276_020_075_001, 1.6),
				wantReading("dev1/current", 1_276_020_076_001, 1.7),
			},
		},
		{
			name:    "path base name",
			topic:   "telemetry/dev1",
			payload: `[{"bn":"dev1/","n":"temp","v":1},{"bn":"a:b/c","v":2}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/temp", decodeNowMs, 1), wantReading("dev1/c", decodeNowMs, 2)},
		},
		{
			name:    "dotted base name concatenates",
			topic:   "telemetry/dev1",
			payload: `[{"bn":"env.","n":"t","v":1},{"n":"h","v":2}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/env.t", decodeNowMs, 1), wantReading("dev1/env.h", decodeNowMs, 2)},
		},
		{
			name:    "base name alone",
			topic:   "telemetry/dev1",
			payload: `[{"bn":"temperature","v":1}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/temperature", decodeNowMs, 1)},
		},
		{
			name:    "later base name replaces earlier",
			topic:   "telemetry/dev1",
			payload: `[{"bn":"a.","n":"x","v":1},{"bn":"b.","n":"x","v":2},{"n":"y","v":3}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/a.x", decodeNowMs, 1), wantReading("dev1/b.x", decodeNowMs, 2), wantReading("dev1/b.y", decodeNowMs, 3)},
		},
		{
			name:    "absolute base time with relative offsets",
			topic:   "telemetry/dev1",
			payload: `[{` + bt + `,"n":"t","v":1},{"n":"t","t":-5,"v":2},{"n":"t","t":0.25,"v":3}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/t", decodeNowMs, 1), wantReading("dev1/t", decodeNowMs-5000, 2), wantReading("dev1/t", decodeNowMs+250, 3)},
		},
		{
			name:    "fractional absolute base time",
			topic:   "telemetry/dev1",
			payload: `[{"bt":1.700000000123e9,"n":"t","v":1}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/t", 1_700_000_000_123, 1)},
		},
		{
			name:    "absolute record time",
			topic:   "telemetry/dev1",
			payload: `[{"n":"t","t":1700000000.5,"v":1}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/t", 1_700_000_000_500, 1)},
		},
		{
			name:    "relative record times",
			topic:   "telemetry/dev1",
			payload: `[{"n":"t","t":-60,"v":1},{"n":"t","t":0,"v":2},{"n":"t","t":10,"v":3},{"n":"t","t":-0.25,"v":4}]`,
			device:  "dev1",
			want: []Reading{
				wantReading("dev1/t", decodeNowMs-60_000, 1),
				wantReading("dev1/t", decodeNowMs, 2),
				wantReading("dev1/t", decodeNowMs+10_000, 3),
				wantReading("dev1/t", decodeNowMs-250, 4),
			},
		},
		{
			name:    "relative base time",
			topic:   "telemetry/dev1",
			payload: `[{"bt":-30,"n":"t","t":10,"v":1}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/t", decodeNowMs-20_000, 1)},
		},
		{
			name:    "largest relative time",
			topic:   "telemetry/dev1",
			payload: `[{"n":"t","t":268435455,"v":1}]`,
			device:  "dev1",
			rejects: []Reason{ReasonFuture},
		},
		{
			name:    "smallest absolute time",
			topic:   "telemetry/dev1",
			payload: `[{"n":"t","t":268435456,"v":1}]`,
			device:  "dev1",
			rejects: []Reason{ReasonTooOld},
		},
		{
			name:    "large negative time is absolute",
			topic:   "telemetry/dev1",
			payload: `[{"n":"t","t":-268435456,"v":1}]`,
			device:  "dev1",
			rejects: []Reason{ReasonTooOld},
		},
		{
			name:    "time out of range",
			topic:   "telemetry/dev1",
			payload: `[{"n":"t","t":1e300,"v":1}]`,
			device:  "dev1",
			rejects: []Reason{ReasonBadTime},
		},
		{
			name:    "relative future and past",
			topic:   "telemetry/dev1",
			payload: `[{"n":"t","t":301,"v":1},{"n":"t","t":-86401,"v":2},{"n":"t","t":300,"v":3},{"n":"t","t":-86400,"v":4}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/t", decodeNowMs+300_000, 3), wantReading("dev1/t", decodeNowMs-86_400_000, 4)},
			rejects: []Reason{ReasonFuture, ReasonTooOld},
		},
		{
			name:    "base value",
			topic:   "telemetry/dev1",
			payload: `[{"bv":20,"n":"t","v":1.5},{"n":"u","v":-1},{"n":"door","vb":true}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/t", decodeNowMs, 21.5), wantReading("dev1/u", decodeNowMs, 19), wantReading("dev1/door", decodeNowMs, 1)},
		},
		{
			name:    "boolean values",
			topic:   "telemetry/dev1",
			payload: `[{"n":"open","vb":true},{"n":"alarm","vb":false}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/open", decodeNowMs, 1), wantReading("dev1/alarm", decodeNowMs, 0)},
		},
		{
			name:    "v wins over vb",
			topic:   "telemetry/dev1",
			payload: `[{"n":"t","v":5,"vb":true}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/t", decodeNowMs, 5)},
		},
		{
			name:    "string, data and sum-only records are skipped",
			topic:   "telemetry/dev1",
			payload: `[{"n":"fw","vs":"1.4.2"},{"n":"blob","vd":"aGk"},{"n":"energy","s":12},{"n":"t","v":1}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/t", decodeNowMs, 1)},
		},
		{
			name:    "base-only records are skipped but carried",
			topic:   "telemetry/dev1",
			payload: `[{"bn":"urn:dev:ow:10e2073a01080063:",` + bt + `,"bv":1},{"n":"t","t":-1,"v":1}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/t", decodeNowMs-1000, 2)},
		},
		{
			name:    "empty pack",
			topic:   "telemetry/dev1",
			payload: `[]`,
			device:  "dev1",
		},
		{
			name:    "empty record",
			topic:   "telemetry/dev1",
			payload: `[{}]`,
			device:  "dev1",
		},
		{
			name:    "partial acceptance",
			topic:   "telemetry/dev1",
			payload: `[1,{"n":"a","v":1},{"bn":5,"v":1},{"n":"b","v":"x"},{"n":"c","vb":1},{"n":7,"v":1},{"n":"d","t":"now","v":1},{"bt":"now","n":"e","v":1},{"bt":NaN,"n":"f","v":1},{"bv":"x","n":"g","v":1},{"n":"h","v":2}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/a", decodeNowMs, 1), wantReading("dev1/h", decodeNowMs, 2)},
			rejects: []Reason{ReasonMalformed, ReasonMalformed, ReasonMalformed, ReasonMalformed, ReasonMalformed, ReasonBadTime, ReasonBadTime, ReasonBadTime, ReasonMalformed},
		},
		{
			name:    "bad names",
			topic:   "telemetry/dev1",
			payload: `[{"v":1},{"n":"te mp","v":2},{"bn":"urn:x:","v":3},{"n":"` + strings.Repeat("m", 65) + `","v":4},{"n":"ok","v":5}]`,
			device:  "dev1",
			want:    []Reading{wantReading("dev1/ok", decodeNowMs, 5)},
			rejects: []Reason{ReasonBadName, ReasonBadName, ReasonBadName, ReasonBadName},
		},
		{
			name:    "malformed pack",
			topic:   "telemetry/dev1",
			payload: `[{"n":"t","v":1}`,
			device:  "dev1",
			rejects: []Reason{ReasonMalformed},
		},
	})
}

func TestDecodeTopic(t *testing.T) {
	long := func(c string, n int) string { return strings.Repeat(c, n) }
	runDecodeCases(t, []decodeCase{
		{name: "other prefix", topic: "sensors/dev1", payload: `{"t":1}`, rejects: []Reason{ReasonMalformed}},
		{name: "prefix alone", topic: "telemetry", payload: `{"t":1}`, rejects: []Reason{ReasonMalformed}},
		{name: "prefix as word prefix", topic: "telemetryx/dev1", payload: `{"t":1}`, rejects: []Reason{ReasonMalformed}},
		{name: "prefix is case sensitive", topic: "Telemetry/dev1", payload: `{"t":1}`, rejects: []Reason{ReasonMalformed}},
		{name: "leading slash", topic: "/telemetry/dev1", payload: `{"t":1}`, rejects: []Reason{ReasonMalformed}},
		{name: "empty topic", topic: "", payload: `{"t":1}`, rejects: []Reason{ReasonMalformed}},
		{name: "empty device", topic: "telemetry/", payload: `{"t":1}`, rejects: []Reason{ReasonBadName}},
		{name: "empty device with metric", topic: "telemetry//t", payload: `1`, rejects: []Reason{ReasonBadName}},
		{name: "space in device", topic: "telemetry/dev 1", payload: `{"t":1}`, rejects: []Reason{ReasonBadName}},
		{name: "plus wildcard device", topic: "telemetry/+", payload: `{"t":1}`, rejects: []Reason{ReasonBadName}},
		{name: "hash wildcard device", topic: "telemetry/#", payload: `{"t":1}`, rejects: []Reason{ReasonBadName}},
		{name: "non-ascii device", topic: "telemetry/dév", payload: `{"t":1}`, rejects: []Reason{ReasonBadName}},
		{name: "device too long", topic: "telemetry/" + long("d", 65), payload: `{"t":1}`, rejects: []Reason{ReasonBadName}},
		{name: "bad device with metric", topic: "telemetry/dev 1/t", payload: `1`, rejects: []Reason{ReasonBadName}},
		{name: "longest device", topic: "telemetry/" + long("d", 64), payload: `{"t":1}`, device: long("d", 64), want: []Reading{wantReading(long("d", 64)+"/t", decodeNowMs, 1)}},
		{name: "empty metric", topic: "telemetry/dev1/", payload: `1`, device: "dev1", rejects: []Reason{ReasonBadName}},
		{name: "extra topic level", topic: "telemetry/dev1/env/t", payload: `1`, device: "dev1", rejects: []Reason{ReasonBadName}},
		{name: "trailing slash after metric", topic: "telemetry/dev1/t/", payload: `1`, device: "dev1", rejects: []Reason{ReasonBadName}},
		{name: "space in metric", topic: "telemetry/dev1/te mp", payload: `1`, device: "dev1", rejects: []Reason{ReasonBadName}},
		{name: "wildcard metric", topic: "telemetry/dev1/#", payload: `1`, device: "dev1", rejects: []Reason{ReasonBadName}},
		{name: "metric too long", topic: "telemetry/dev1/" + long("m", 65), payload: `1`, device: "dev1", rejects: []Reason{ReasonBadName}},
		{name: "longest metric", topic: "telemetry/dev1/" + long("m", 64), payload: `1`, device: "dev1", want: []Reading{wantReading("dev1/"+long("m", 64), decodeNowMs, 1)}},
		{name: "bad topic wins over size", cfg: DecodeConfig{MaxPayloadBytes: 4}, topic: "sensors/dev1", payload: `{"t":1}`, rejects: []Reason{ReasonMalformed}},
		{name: "bad metric wins over size", cfg: DecodeConfig{MaxPayloadBytes: 4}, topic: "telemetry/dev1/te mp", payload: `12345`, device: "dev1", rejects: []Reason{ReasonBadName}},
	})
}

func TestDecodeTooLarge(t *testing.T) {
	const limit = 16
	small := DecodeConfig{MaxPayloadBytes: limit}
	exact := `{"a":1234567890}`
	require.Len(t, exact, limit)
	padded := func(n int, body string) string { return body + strings.Repeat(" ", n-len(body)) }
	runDecodeCases(t, []decodeCase{
		{name: "object at the limit", cfg: small, topic: "telemetry/dev1", payload: exact, device: "dev1", want: []Reading{wantReading("dev1/a", decodeNowMs, 1234567890)}},
		{name: "object over the limit", cfg: small, topic: "telemetry/dev1", payload: `{"a":12345678901}`, device: "dev1", rejects: []Reason{ReasonTooLarge}},
		{name: "plain at the limit", cfg: small, topic: "telemetry/dev1/t", payload: "1234567890.12345", device: "dev1", want: []Reading{wantReading("dev1/t", decodeNowMs, 1234567890.12345)}},
		{name: "plain over the limit", cfg: small, topic: "telemetry/dev1/t", payload: "1234567890.123456", device: "dev1", rejects: []Reason{ReasonTooLarge}},
		{name: "whitespace counts", cfg: small, topic: "telemetry/dev1/t", payload: padded(limit+1, "1"), device: "dev1", rejects: []Reason{ReasonTooLarge}},
		{name: "garbage over the limit is too large, not malformed", cfg: small, topic: "telemetry/dev1", payload: strings.Repeat("{", limit+1), device: "dev1", rejects: []Reason{ReasonTooLarge}},
		{name: "default limit", topic: "telemetry/dev1", payload: padded(64<<10, `{"a":1}`), device: "dev1", want: []Reading{wantReading("dev1/a", decodeNowMs, 1)}},
		{name: "over the default limit", topic: "telemetry/dev1", payload: padded(64<<10+1, `{"a":1}`), device: "dev1", rejects: []Reason{ReasonTooLarge}},
		{name: "negative limit means default", cfg: DecodeConfig{MaxPayloadBytes: -1}, topic: "telemetry/dev1", payload: padded(64<<10, `{"a":1}`), device: "dev1", want: []Reading{wantReading("dev1/a", decodeNowMs, 1)}},
	})
}

func TestDecodePrefix(t *testing.T) {
	site := DecodeConfig{Prefix: "site-a/tg"}
	runDecodeCases(t, []decodeCase{
		{name: "device topic", cfg: site, topic: "site-a/tg/dev1", payload: `{"t":1}`, device: "dev1", want: []Reading{wantReading("dev1/t", decodeNowMs, 1)}},
		{name: "metric topic", cfg: site, topic: "site-a/tg/dev1/t", payload: `1`, device: "dev1", want: []Reading{wantReading("dev1/t", decodeNowMs, 1)}},
		{name: "default prefix refused", cfg: site, topic: "telemetry/dev1/t", payload: `1`, rejects: []Reason{ReasonMalformed}},
		{name: "first level only", cfg: site, topic: "site-a/dev1/t", payload: `1`, rejects: []Reason{ReasonMalformed}},
		{name: "prefix as word prefix", cfg: site, topic: "site-a/tgx/dev1", payload: `{"t":1}`, rejects: []Reason{ReasonMalformed}},
		{name: "prefix alone", cfg: site, topic: "site-a/tg", payload: `{"t":1}`, rejects: []Reason{ReasonMalformed}},
		{name: "single level prefix", cfg: DecodeConfig{Prefix: "tm"}, topic: "tm/dev1/t", payload: `1`, device: "dev1", want: []Reading{wantReading("dev1/t", decodeNowMs, 1)}},
	})
}

func TestDecodeTimeWindowConfig(t *testing.T) {
	tight := DecodeConfig{MaxSkew: time.Second, LateWindow: time.Minute}
	obj := func(tMs int64) string { return `{"ts":` + strconv.FormatInt(tMs, 10) + `,"t":1}` }
	runDecodeCases(t, []decodeCase{
		{name: "at the skew", cfg: tight, topic: "telemetry/dev1", payload: obj(decodeNowMs + 1000), device: "dev1", want: []Reading{wantReading("dev1/t", decodeNowMs+1000, 1)}},
		{name: "past the skew", cfg: tight, topic: "telemetry/dev1", payload: obj(decodeNowMs + 1001), device: "dev1", rejects: []Reason{ReasonFuture}},
		{name: "at the late window", cfg: tight, topic: "telemetry/dev1", payload: obj(decodeNowMs - 60_000), device: "dev1", want: []Reading{wantReading("dev1/t", decodeNowMs-60_000, 1)}},
		{name: "past the late window", cfg: tight, topic: "telemetry/dev1", payload: obj(decodeNowMs - 60_001), device: "dev1", rejects: []Reason{ReasonTooOld}},
		{name: "senml past the skew", cfg: tight, topic: "telemetry/dev1", payload: `[{"n":"t","t":1.002,"v":1}]`, device: "dev1", rejects: []Reason{ReasonFuture}},
		{name: "negative durations mean default", cfg: DecodeConfig{MaxSkew: -1, LateWindow: -1}, topic: "telemetry/dev1", payload: obj(decodeNowMs - decodeLateMs), device: "dev1", want: []Reading{wantReading("dev1/t", decodeNowMs-decodeLateMs, 1)}},
		// A clock near the ends of int64 must narrow the window, not wrap
		// it around and accept everything.
		{name: "clock at max int64", topic: "telemetry/dev1", nowMs: math.MaxInt64, payload: `{"ts":1,"t":1}`, device: "dev1", rejects: []Reason{ReasonTooOld}},
		{name: "clock at max int64 now", topic: "telemetry/dev1", nowMs: math.MaxInt64, payload: `[{"n":"t","v":1}]`, device: "dev1", want: []Reading{wantReading("dev1/t", math.MaxInt64, 1)}},
		{name: "clock at max int64 senml past", topic: "telemetry/dev1", nowMs: math.MaxInt64, payload: `[{"n":"t","t":-1,"v":1}]`, device: "dev1", want: []Reading{wantReading("dev1/t", math.MaxInt64-1000, 1)}},
		{name: "clock at min int64", topic: "telemetry/dev1", nowMs: math.MinInt64, payload: `{"ts":1,"t":1}`, device: "dev1", rejects: []Reason{ReasonFuture}},
		{name: "clock at min int64 now", topic: "telemetry/dev1", nowMs: math.MinInt64, payload: `{"t":1}`, device: "dev1", want: []Reading{wantReading("dev1/t", math.MinInt64, 1)}},
		{name: "clock at min int64 senml future", topic: "telemetry/dev1", nowMs: math.MinInt64, payload: `[{"n":"t","t":1,"v":1}]`, device: "dev1", want: []Reading{wantReading("dev1/t", math.MinInt64+1000, 1)}},
	})
}

func TestDecodeRejectDetail(t *testing.T) {
	d := NewDecoder(DecodeConfig{})
	for _, tc := range []struct {
		name    string
		topic   string
		payload string
		want    string
	}{
		{name: "future", topic: "telemetry/dev1", payload: `{"ts":1700000360000,"t":1}`, want: "timestamp too far in the future: ts 1700000360000 is 6m0s ahead"},
		{name: "too old", topic: "telemetry/dev1", payload: `{"ts":1699900000000,"t":1}`, want: "timestamp older than the late window: ts 1699900000000 is 27h46m40s old"},
		{name: "wildly old", topic: "telemetry/dev1", payload: `{"ts":"-9223372036854775808","t":1}`, want: "timestamp older than the late window: ts -9223372036854775808 is 2562047h47m16.854775807s old"},
		{name: "too large", topic: "telemetry/dev1", payload: strings.Repeat(" ", 64<<10+1), want: "payload too large: 65537 bytes, limit 65536"},
		{name: "long names are cut", topic: "telemetry/" + strings.Repeat("d", 200), payload: `1`, want: `invalid name: device name "` + strings.Repeat("d", 80) + `"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := d.Decode(tc.topic, []byte(tc.payload), decodeNowMs)
			require.Len(t, got.Rejects, 1)
			require.Equal(t, tc.want, got.Rejects[0].Error())
		})
	}
}

// TestDecodeMalformedDetailIsShort: fastjson's messages grow with the
// payload (one "cannot parse object" per level, the rest of the input
// quoted); the reject keeps both ends and stays short.
func TestDecodeMalformedDetailIsShort(t *testing.T) {
	d := NewDecoder(DecodeConfig{})
	for _, tc := range []struct {
		name     string
		topic    string
		payload  string
		contains []string
	}{
		{
			name:     "deep nesting",
			topic:    "telemetry/dev1",
			payload:  strings.Repeat(`{"a":`, 400) + "1" + strings.Repeat("}", 400),
			contains: []string{"cannot parse object value: too big depth for the nested JSON; it exceeds 300; unparsed tail: "},
		},
		{
			name:     "rest of a large payload quoted",
			topic:    "telemetry/dev1",
			payload:  `{"a":t` + strings.Repeat("x", 60<<10) + `}`,
			contains: []string{"unexpected value found"},
		},
		{
			name:     "large value object",
			topic:    "telemetry/dev1/t",
			payload:  `{"value":n` + strings.Repeat("é", 30<<10) + `}`,
			contains: []string{"unexpected value found"},
		},
		{
			name:     "unquoted key",
			topic:    "telemetry/dev1",
			payload:  `{a:1}`,
			contains: []string{`cannot parse object: cannot find opening '"" for object key; unparsed tail: "a:1}"`},
		},
		{
			name:     "short message kept whole",
			topic:    "telemetry/dev1",
			payload:  `{"a":`,
			contains: []string{`cannot parse empty string`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := d.Decode(tc.topic, []byte(tc.payload), decodeNowMs)
			require.Len(t, got.Rejects, 1)
			r := got.Rejects[0]
			require.Equal(t, ReasonMalformed, r.Reason)
			require.LessOrEqual(t, len(r.Detail), maxDetailBytes)
			require.True(t, utf8.ValidString(r.Detail))
			for _, c := range tc.contains {
				require.Contains(t, r.Detail, c)
			}
		})
	}
}

// TestDecodeReuse pins the ownership contract: Decoded's slices are reused by
// the next Decode, but the series ids in them are stable strings.
func TestDecodeReuse(t *testing.T) {
	d := NewDecoder(DecodeConfig{})
	first := d.Decode("telemetry/dev1", []byte(`{"a":1,"b":2}`), decodeNowMs)
	require.Len(t, first.Readings, 2)
	kept := append([]Reading(nil), first.Readings...)

	second := d.Decode("telemetry/dev2/c", []byte(`3`), decodeNowMs)
	require.Equal(t, []Reading{wantReading("dev2/c", decodeNowMs, 3)}, second.Readings)
	require.Equal(t, "dev2", second.Device)
	// Copies taken before the second call are untouched.
	require.Equal(t, []Reading{wantReading("dev1/a", decodeNowMs, 1), wantReading("dev1/b", decodeNowMs, 2)}, kept)

	// A reject does not leak into the next message, nor a device.
	d.Decode("sensors/x", []byte(`1`), decodeNowMs)
	third := d.Decode("telemetry/dev3/d", []byte(`4`), decodeNowMs)
	require.Empty(t, third.Rejects)
	require.Equal(t, "dev3", third.Device)
	bad := d.Decode("telemetry/dev 4/d", []byte(`4`), decodeNowMs)
	require.Empty(t, bad.Device)

	// The same series decoded twice shares one string.
	a := d.Decode("telemetry/dev1/a", []byte(`1`), decodeNowMs).Readings[0].Series
	b := d.Decode("telemetry/dev1", []byte(`{"a":1}`), decodeNowMs).Readings[0].Series
	require.Equal(t, "dev1/a", a)
	require.Same(t, unsafe.StringData(a), unsafe.StringData(b), "series ids are interned")
}

// TestDecodeInternLimit cycles through more distinct series than the cache
// holds: the cache is dropped and refilled, and every answer stays right.
func TestDecodeInternLimit(t *testing.T) {
	d := NewDecoder(DecodeConfig{})
	var topic []byte
	for i := range internLimit + 10 {
		topic = strconv.AppendInt(append(topic[:0], "telemetry/dev1/m"...), int64(i), 10)
		got := d.Decode(string(topic), []byte(`1`), decodeNowMs)
		require.Len(t, got.Readings, 1)
		require.Equal(t, string(topic[len("telemetry/"):]), got.Readings[0].Series)
		require.LessOrEqual(t, len(d.intern), internLimit)
	}
	require.Equal(t, 10, len(d.intern), "the cache was reset once and refilled")
}

// TestDecodeKnownSeriesAllocs is the allocation guarantee of BenchmarkDecode
// as a test, so that CI catches a regression without running benchmarks.
func TestDecodeKnownSeriesAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts are checked in the full run")
	}
	for _, tc := range []struct {
		name    string
		topic   string
		payload string
	}{
		{name: "object", topic: "telemetry/dev1", payload: `{"ts":1700000000123,"temperature":21.5,"humidity":40.25}`},
		{name: "object rfc3339", topic: "telemetry/dev1", payload: `{"ts":"2023-11-14T22:13:20.123Z","temperature":21.5}`},
		{name: "object rfc3339 offset", topic: "telemetry/dev1", payload: `{"ts":"2023-11-14T23:13:20.123+01:00","temperature":21.5}`},
		{name: "object ms string", topic: "telemetry/dev1", payload: `{"ts":"1700000000123","temperature":21.5}`},
		{name: "nested", topic: "telemetry/dev1", payload: `{"env":{"t":21.5,"h":{"rel":40}},"ok":true,"fw":"1.2"}`},
		{name: "plain", topic: "telemetry/dev1/temperature", payload: `21.5`},
		{name: "plain boolean", topic: "telemetry/dev1/door", payload: `true`},
		{name: "value object", topic: "telemetry/dev1/temperature", payload: `{"ts":1700000000123,"value":21.5}`},
		{name: "senml", topic: "telemetry/dev1", payload: `[{"bn":"urn:dev:ow:10e2073a01080063:","bt":1.7e9,"n":"t","v":21.5},{"n":"h","t":-1,"v":40},{"n":"door","vb":true}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDecoder(DecodeConfig{})
			payload := []byte(tc.payload)
			got := d.Decode(tc.topic, payload, decodeNowMs)
			require.NotEmpty(t, got.Readings)
			require.Empty(t, got.Rejects)
			allocs := testing.AllocsPerRun(100, func() { d.Decode(tc.topic, payload, decodeNowMs) })
			require.Zero(t, allocs, "allocations per Decode of a known series")
		})
	}
}

// goldenVector is one entry of testdata/decode_golden.json: realistic device
// messages with what the decoder must make of them. Other packages (the
// simulators, the web API tests) may read the same file.
type goldenVector struct {
	Name     string `json:"name"`
	Topic    string `json:"topic"`
	Payload  string `json:"payload"`
	NowMs    int64  `json:"nowMs"`
	Device   string `json:"device"`
	Readings []struct {
		Series string  `json:"series"`
		TimeMs int64   `json:"timeMs"`
		Value  float64 `json:"value"`
	} `json:"readings"`
	Rejects []string `json:"rejects"` // Reason names
}

func loadGolden(t testing.TB) []goldenVector {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "decode_golden.json"))
	require.NoError(t, err)
	var vs []goldenVector
	require.NoError(t, json.Unmarshal(raw, &vs))
	require.NotEmpty(t, vs)
	return vs
}

func TestDecodeGolden(t *testing.T) {
	reasons := make(map[string]Reason, NumReasons)
	for i := range NumReasons {
		reasons[Reason(i).String()] = Reason(i)
	}
	d := NewDecoder(DecodeConfig{}) // one Decoder for all: state must not leak between messages
	seen := map[string]bool{}
	for _, v := range loadGolden(t) {
		t.Run(v.Name, func(t *testing.T) {
			require.False(t, seen[v.Name], "duplicate vector name")
			seen[v.Name] = true
			var want []Reading
			for _, r := range v.Readings {
				want = append(want, wantReading(r.Series, r.TimeMs, r.Value))
			}
			var wantReasons []Reason
			for _, name := range v.Rejects {
				r, ok := reasons[name]
				require.True(t, ok, "unknown reason %q", name)
				wantReasons = append(wantReasons, r)
			}
			got := d.Decode(v.Topic, []byte(v.Payload), v.NowMs)
			requireDecoded(t, v.Device, want, wantReasons, got)
			requireDecodeInvariants(t, DecodeConfig{}, v.Topic, v.NowMs, got)
		})
	}
}

// TestDecodeHostile: payloads built to hurt (nesting as deep as the parser
// takes, as many fields as fit under the size cap, names that are not
// UTF-8, timestamps beyond any calendar) are each refused with a reason,
// once, and what is good beside them in the same payload is kept.
func TestDecodeHostile(t *testing.T) {
	nested := func(depth int, leaf string) string {
		return strings.Repeat(`{"a":`, depth) + leaf + strings.Repeat(`}`, depth)
	}
	// As many one-digit metrics as fit in the default 64 KiB cap.
	var many strings.Builder
	var manyWant []Reading
	many.WriteString(`{"ok":1`)
	manyWant = append(manyWant, wantReading("dev1/ok", decodeNowMs, 1))
	for i := 0; ; i++ {
		field := `,"m` + strconv.Itoa(i) + `":` + strconv.Itoa(i%10)
		if many.Len()+len(field)+1 > 64<<10 {
			break
		}
		many.WriteString(field)
		manyWant = append(manyWant, wantReading("dev1/m"+strconv.Itoa(i), decodeNowMs, float64(i%10)))
	}
	many.WriteString("}")
	ok := []Reading{wantReading("dev1/ok", decodeNowMs, 1)}
	runDecodeCases(t, []decodeCase{
		{name: "nesting as deep as the parser takes", topic: "telemetry/dev1", payload: `{"ok":1,"deep":` + nested(250, "1") + `}`, device: "dev1", want: ok, rejects: []Reason{ReasonBadName}},
		{name: "nesting deeper than the parser takes", topic: "telemetry/dev1", payload: `{"ok":1,"deep":` + nested(400, "1") + `}`, device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "nested empty keys", topic: "telemetry/dev1", payload: `{"ok":1,"":` + strings.Repeat(`{"":`, 200) + "1" + strings.Repeat(`}`, 201), device: "dev1", want: ok, rejects: []Reason{ReasonBadName}},
		{name: "nested arrays are ignored", topic: "telemetry/dev1", payload: `{"ok":1,"arr":` + strings.Repeat("[", 250) + strings.Repeat("]", 250) + `}`, device: "dev1", want: ok},
		{name: "senml nested arrays", topic: "telemetry/dev1", payload: strings.Repeat("[", 250) + strings.Repeat("]", 250), device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "senml deeper than the parser takes", topic: "telemetry/dev1", payload: strings.Repeat("[", 400) + strings.Repeat("]", 400), device: "dev1", rejects: []Reason{ReasonMalformed}},
		{name: "as many fields as fit under the size cap", topic: "telemetry/dev1", payload: many.String(), device: "dev1", want: manyWant},
		{name: "a byte over the size cap", topic: "telemetry/dev1", payload: many.String() + strings.Repeat(" ", 64<<10+1-many.Len()), device: "dev1", rejects: []Reason{ReasonTooLarge}},
		{name: "key not UTF-8", topic: "telemetry/dev1", payload: "{\"ok\":1,\"t\xff\":2}", device: "dev1", want: ok, rejects: []Reason{ReasonBadName}},
		{name: "nested key not UTF-8", topic: "telemetry/dev1", payload: "{\"ok\":1,\"env\":{\"\xc3(\":2}}", device: "dev1", want: ok, rejects: []Reason{ReasonBadName}},
		{name: "overlong UTF-8 key", topic: "telemetry/dev1", payload: "{\"ok\":1,\"\xc0\xaf\":2}", device: "dev1", want: ok, rejects: []Reason{ReasonBadName}},
		{name: "senml name not UTF-8", topic: "telemetry/dev1", payload: "[{\"n\":\"ok\",\"v\":1},{\"n\":\"t\xfe\",\"v\":2}]", device: "dev1", want: ok, rejects: []Reason{ReasonBadName}},
		{name: "senml base name not UTF-8", topic: "telemetry/dev1", payload: "[{\"bn\":\"\xff:\",\"n\":\"ok\",\"v\":1},{\"bn\":\"\xff\",\"n\":\"t\",\"v\":2}]", device: "dev1", want: ok, rejects: []Reason{ReasonBadName}},
		{name: "device not UTF-8", topic: "telemetry/d\xffv/t", payload: `1`, rejects: []Reason{ReasonBadName}},
		{name: "metric topic not UTF-8", topic: "telemetry/dev1/t\xff", payload: `1`, device: "dev1", rejects: []Reason{ReasonBadName}},
		{name: "ts not UTF-8", topic: "telemetry/dev1", payload: "{\"ts\":\"2023-11-14T22:13:20\xffZ\",\"t\":1}", device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "ts in year 10000", topic: "telemetry/dev1", payload: `{"ts":"10000-01-01T00:00:00Z","t":1}`, device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "ts in year 9999", topic: "telemetry/dev1", payload: `{"ts":"9999-12-31T23:59:59.999Z","t":1}`, device: "dev1", rejects: []Reason{ReasonFuture}},
		{name: "ts in year 0", topic: "telemetry/dev1", payload: `{"ts":"0000-01-01T00:00:00Z","t":1}`, device: "dev1", rejects: []Reason{ReasonTooOld}},
		{name: "ts 1e300", topic: "telemetry/dev1", payload: `{"ts":1e300,"t":1}`, device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "ts -1e300", topic: "telemetry/dev1/t", payload: `{"ts":-1e300,"value":1}`, device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "ts of a thousand digits", topic: "telemetry/dev1", payload: `{"ts":"` + strings.Repeat("9", 1000) + `","t":1}`, device: "dev1", rejects: []Reason{ReasonBadTime}},
		{name: "senml bt 1e300", topic: "telemetry/dev1", payload: `[{"n":"ok","v":1},{"bt":1e300,"n":"t","v":2}]`, device: "dev1", want: ok, rejects: []Reason{ReasonBadTime}},
		{name: "senml t -1e300", topic: "telemetry/dev1", payload: `[{"n":"ok","v":1},{"n":"t","t":-1e300,"v":2}]`, device: "dev1", want: ok, rejects: []Reason{ReasonBadTime}},
		{name: "senml bt plus t overflows", topic: "telemetry/dev1", payload: `[{"n":"ok","v":1},{"bt":1e308,"n":"t","t":1e308,"v":2}]`, device: "dev1", want: ok, rejects: []Reason{ReasonBadTime}},
	})
}
