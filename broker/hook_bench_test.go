package broker

import (
	"log/slog"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

type discardSink struct{}

func (discardSink) Offer(string, []byte, time.Time) bool { return true }

// BenchmarkOnPublish is the broker's share of every telemetry publish: the
// prefix check, presence tracking and the hand-off to ingest (here a sink
// that takes everything), on the publishing connection's goroutine.
func BenchmarkOnPublish(b *testing.B) {
	h := newIngestHook(Config{Prefix: "telemetry", Sink: discardSink{}, Now: time.Now}, slog.New(slog.DiscardHandler))
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	cl := srv.NewClient(nil, "local", "dev-0001", true)
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "telemetry/dev-0001",
		Payload:     []byte(`{"ts":1700000000123,"temperature":21.53,"humidity":40.1}`),
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.OnPublish(cl, pk); err != packets.CodeSuccessIgnore {
			b.Fatal(err)
		}
	}
}
