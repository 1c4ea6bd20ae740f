package dashboard

import (
	"context"
	"fmt"
	"testing"

	"github.com/jonboulle/clockwork"

	"github.com/telegauge/telegauge/ingest"
)

// benchFrame is one frame's readings: 100 devices' temperature.
func benchFrame(n int) []ingest.Reading {
	rs := make([]ingest.Reading, n)
	for i := range rs {
		rs[i] = ingest.Reading{Series: fmt.Sprintf("dev%d/temperature", i), TimeMs: t0.UnixMilli() + int64(i), Value: 20 + float64(i%100)/8}
	}
	return rs
}

// newBenchHub returns a hub (not running: the benchmark builds frames
// itself) with n viewers. With distinct, every viewer has its own
// subscription, each still matching every reading, so each frame is encoded
// once per viewer; otherwise they share one.
func newBenchHub(b *testing.B, n int, distinct bool) (*Hub, []*Viewer) {
	b.Helper()
	h, err := NewHub(HubConfig{Clock: clockwork.NewFakeClockAt(t0), MaxViewers: n, ResumeBytes: 1 << 20}, nil)
	if err != nil {
		b.Fatal(err)
	}
	viewers := make([]*Viewer, n)
	for i := range viewers {
		patterns := []string{"+/temperature"}
		if distinct {
			patterns = append(patterns, fmt.Sprintf("viewer%d/x", i))
		}
		ps, err := ParsePatterns(patterns)
		if err != nil {
			b.Fatal(err)
		}
		if viewers[i], _, err = h.Subscribe(ps, SubscribeOptions{Transport: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() {
		for _, v := range viewers {
			v.Close()
		}
		if err := h.Close(context.Background()); err != nil {
			b.Error(err)
		}
	})
	return h, viewers
}

// BenchmarkHubBroadcast measures one frame of 100 readings fanned out to N
// viewers, every viewer's queue drained before the next frame (and so
// before the timer stops), as transports would.
func BenchmarkHubBroadcast(b *testing.B) {
	frame := benchFrame(100)
	for _, n := range []int{10, 1000, 10_000} {
		for _, subs := range []string{"shared", "distinct"} {
			b.Run(fmt.Sprintf("viewers=%d/subs=%s", n, subs), func(b *testing.B) {
				h, viewers := newBenchHub(b, n, subs == "distinct")
				evs := make([]Event, 0, 4)
				for _, v := range viewers {
					evs = v.Next(evs[:0]) // the subscription acks
				}
				b.ReportAllocs()
				for b.Loop() {
					h.Publish(frame)
					h.frame()
					for _, v := range viewers {
						evs = v.Next(evs[:0])
						if len(evs) != 1 || evs[0].Kind != EventPoints {
							b.Fatalf("viewer got %d events", len(evs))
						}
					}
				}
				b.ReportMetric(float64(n*len(frame)), "deliveries/op")
			})
		}
	}
}

// BenchmarkEncodeFrame measures encoding one frame's message.
func BenchmarkEncodeFrame(b *testing.B) {
	cursor := formatCursor(newEpoch(), 123456)
	for _, n := range []int{1, 100, 10_000} {
		b.Run(fmt.Sprintf("points=%d", n), func(b *testing.B) {
			pts := benchFrame(n)
			b.SetBytes(int64(len(NewMessage(1, cursor, pts).JSON)))
			b.ReportAllocs()
			for b.Loop() {
				NewMessage(1, cursor, pts)
			}
		})
	}
}
