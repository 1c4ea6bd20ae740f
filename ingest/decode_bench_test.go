package ingest

import (
	"testing"
)

// BenchmarkDecode measures one message of each device-contract form on a
// series the Decoder has already seen, the steady state of a device that
// reports the same metrics every few seconds. It must stay at 0 allocs/op.
func BenchmarkDecode(b *testing.B) {
	const nowMs = 1_700_000_000_000
	for _, bc := range []struct {
		name    string
		topic   string
		payload string
		want    int // readings per message
	}{
		{
			name:    "form=object",
			topic:   "telemetry/dev-0001",
			payload: `{"ts":1700000000123,"temperature":21.5,"humidity":40.25}`,
			want:    2,
		},
		{
			name:    "form=nested",
			topic:   "telemetry/dev-0001",
			payload: `{"ts":"2023-11-14T22:13:20.123Z","env":{"temperature":21.5,"humidity":40.25},"power":{"battery":{"v":3.71,"pct":87},"charging":false},"fw":"1.4.2"}`,
			want:    5,
		},
		{
			name:    "form=plain",
			topic:   "telemetry/dev-0001/temperature",
			payload: `21.5`,
			want:    1,
		},
		{
			name:    "form=value-object",
			topic:   "telemetry/dev-0001/temperature",
			payload: `{"ts":1700000000123,"value":21.5}`,
			want:    1,
		},
		{
			name:  "form=senml",
			topic: "telemetry/dev-0001",
			payload: `[{"bn":"urn:dev:ow:10e2073a01080063:","bt":1.700000000123e9,"bu":"Cel","n":"temperature","v":21.5},` +
				`{"n":"humidity","u":"%RH","v":40.25,"t":-1},{"n":"door","vb":true}]`,
			want: 3,
		},
	} {
		b.Run(bc.name, func(b *testing.B) {
			d := NewDecoder(DecodeConfig{})
			payload := []byte(bc.payload)
			// Warm up: parser buffers, scratch slices and the series cache.
			if got := d.Decode(bc.topic, payload, nowMs); len(got.Readings) != bc.want || len(got.Rejects) != 0 {
				b.Fatalf("warm-up decode: %d readings, rejects %v", len(got.Readings), got.Rejects)
			}
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				d.Decode(bc.topic, payload, nowMs)
			}
		})
	}
}
