package ingest

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The committed seed corpora live in testdata/fuzz/FuzzDecode and
// testdata/fuzz/FuzzTopic (one realistic message per file, from
// testdata/decode_golden.json and the forms of DESIGN.md §3); the seeds added
// here with f.Add cover the same ground so that `go test` without the
// testdata still runs them.

// decodeSnapshot is a copy of a Decoded that outlives the next Decode.
type decodeSnapshot struct {
	Device   string
	Readings []Reading
	Rejects  []RejectError
}

func snapshotDecoded(d Decoded) decodeSnapshot {
	return decodeSnapshot{
		Device:   d.Device,
		Readings: append([]Reading(nil), d.Readings...),
		Rejects:  append([]RejectError(nil), d.Rejects...),
	}
}

var fuzzDecodeSeeds = []struct {
	topic   string
	payload string
}{
	{"telemetry/dev1", `{"ts":1700000000123,"temperature":21.5,"humidity":40.25}`},
	{"telemetry/dev1", `{"ts":"2023-11-14T22:13:20.123Z","env":{"t":21.5,"h":{"rel":40}},"ok":true,"fw":"1.2","x":null,"y":[1]}`},
	{"telemetry/dev1", `{"ts":"1700000000123","a":NaN,"b":-Inf,"c":1e999,"bad name":1,"d":1-2}`},
	{"telemetry/dev1", `{"ts":"2023-11-14T23:13:20.5+01:00","t\u0065mp":1}`},
	{"telemetry/dev1/temperature", `21.5`},
	{"telemetry/dev1/temperature", ` -1e3 `},
	{"telemetry/dev1/door", `true`},
	{"telemetry/dev1/temperature", `{"ts":1700000000123,"value":21.5}`},
	{"telemetry/dev1/temperature", `{"ts":"bad","value":21.5}`},
	{"telemetry/dev1", `[{"bn":"urn:dev:ow:10e2073a01080063:","bt":1.7e9,"bu":"Cel","n":"temp","v":21.5},{"n":"hum","t":-1,"v":40},{"n":"door","vb":true},{"n":"fw","vs":"1.2"}]`},
	{"telemetry/dev1", `[{"bv":20,"n":"t","t":-300,"v":1.5},{"bt":-30,"n":"u","t":10,"v":2},{"n":"w","t":268435456,"v":1},1,{"n":7}]`},
	{"telemetry/dev1", `{"ts":1,"a":1}`},
	{"telemetry/dev1", `{"a":`},
	{"telemetry/dev 1/t", `1`},
	{"telemetry/dev1/a/b", `1`},
	{"sensors/dev1", `1`},
}

func FuzzDecode(f *testing.F) {
	for _, s := range fuzzDecodeSeeds {
		f.Add(s.topic, []byte(s.payload), decodeNowMs)
	}
	for _, v := range loadGolden(f) {
		f.Add(v.Topic, []byte(v.Payload), v.NowMs)
	}
	cfg := DecodeConfig{}
	f.Fuzz(func(t *testing.T, topic string, payload []byte, nowMs int64) {
		d := NewDecoder(cfg)
		orig := bytes.Clone(payload)
		got := d.Decode(topic, payload, nowMs)
		require.Equal(t, orig, payload, "Decode must not modify the payload")
		requireDecodeInvariants(t, cfg, topic, nowMs, got)
		requireTopicAttribution(t, cfg.Prefix, topic, got)
		want := snapshotDecoded(got)

		// The split-in-half trick (nats): a device cut off mid-publish sends
		// a prefix of a valid payload. Both halves must decode without
		// panicking and within the invariants, and a warm Decoder must not
		// carry anything from them into the next message.
		for _, part := range [][]byte{payload[:len(payload)/2], payload[len(payload)/2:]} {
			requireDecodeInvariants(t, cfg, topic, nowMs, d.Decode(topic, part, nowMs))
		}
		require.Equal(t, want, snapshotDecoded(d.Decode(topic, payload, nowMs)), "a warm Decoder must give the same answer")
	})
}

func FuzzTopic(f *testing.F) {
	for _, topic := range []string{
		"telemetry/dev1",
		"telemetry/dev1/temperature",
		"telemetry/dev1/env.t",
		"telemetry/greenhouse-esp32/humidity",
		"telemetry/" + strings.Repeat("d", 64) + "/" + strings.Repeat("m", 64),
		"telemetry/" + strings.Repeat("d", 65),
		"telemetry/",
		"telemetry//t",
		"telemetry/dev1/",
		"telemetry/dev1/a/b",
		"telemetry/dev 1",
		"telemetry/+/t",
		"telemetry/dev1/#",
		"telemetry",
		"telemetryx/dev1",
		"site-a/tg/dev1/t",
		"/telemetry/dev1",
		"",
	} {
		f.Add(topic)
	}
	// One payload that is accepted on both topic forms: on telemetry/{device}
	// it is the metric "value", on telemetry/{device}/{metric} the value of
	// that metric.
	payload := []byte(`{"value":1}`)
	f.Fuzz(func(t *testing.T, topic string) {
		for _, prefix := range []string{"telemetry", "site-a/tg"} {
			cfg := DecodeConfig{Prefix: prefix}
			got := NewDecoder(cfg).Decode(topic, payload, decodeNowMs)
			requireDecodeInvariants(t, cfg, topic, decodeNowMs, got)
			requireTopicAttribution(t, prefix, topic, got)

			// The reference: DESIGN.md §3 read literally.
			var (
				wantDevice string
				want       []Reading
				reasons    []Reason
			)
			rest, underPrefix := strings.CutPrefix(topic, prefix+"/")
			dev, metric, hasMetric := strings.Cut(rest, "/")
			switch {
			case !underPrefix:
				reasons = []Reason{ReasonMalformed}
			case !ValidName(dev):
				reasons = []Reason{ReasonBadName}
			case hasMetric && !ValidName(metric):
				wantDevice, reasons = dev, []Reason{ReasonBadName}
			case hasMetric:
				wantDevice, want = dev, []Reading{wantReading(dev+"/"+metric, decodeNowMs, 1)}
			default:
				wantDevice, want = dev, []Reading{wantReading(dev+"/value", decodeNowMs, 1)}
			}
			requireDecoded(t, wantDevice, want, reasons, got)
		}
	})
}

// requireTopicAttribution checks Decoded.Device against the topic: a topic
// under the prefix whose first level is a valid name is that device's, even
// when the rest of the message is refused.
func requireTopicAttribution(t testing.TB, prefix, topic string, got Decoded) {
	t.Helper()
	if prefix == "" {
		prefix = "telemetry"
	}
	rest, ok := strings.CutPrefix(topic, prefix+"/")
	dev, _, _ := strings.Cut(rest, "/")
	if ok && ValidName(dev) {
		require.Equal(t, dev, got.Device, "device of topic %q", topic)
	} else {
		require.Empty(t, got.Device, "topic %q names no valid device", topic)
		require.Empty(t, got.Readings)
		require.Len(t, got.Rejects, 1)
	}
}
