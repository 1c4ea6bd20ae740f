package ingest

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/jonboulle/clockwork"

	"github.com/telegauge/telegauge/ingest/store"
)

// BenchmarkAggregatorAppend measures one reading through the aggregator:
// Offer (decode, validation, series lookup, three rollup tiers, the raw
// ring, the live list), the hub taking the live readings every 256, and a
// flush to the store every 64 Ki readings. Each op is one reading of one of
// N series, round robin.
func BenchmarkAggregatorAppend(b *testing.B) {
	for _, n := range []int{1, 1000, 100_000} {
		b.Run(fmt.Sprintf("series=%d", n), func(b *testing.B) {
			ctx := context.Background()
			clock := clockwork.NewFakeClockAt(aggT0)
			mem, err := store.NewMemory(store.MemoryConfig{Clock: clock}, nil)
			if err != nil {
				b.Fatal(err)
			}
			// The per-device rate limit is checked on every publish but
			// never reached: the clock stands still, so the bucket must
			// hold every reading of the run (a wait would be a sleep).
			a, err := New(Config{Shards: 1, Store: mem, Clock: clock, MaxSeriesPerDevice: 100,
				MaxRatePerDevice: 1, MaxBurstPerDevice: math.MaxInt32}, nil)
			if err != nil {
				b.Fatal(err)
			}
			s := a.shards[0]
			var live []Reading
			topics := make([]string, n)
			for i := range topics {
				topics[i] = fmt.Sprintf("telemetry/dev%d/m%d", i/100, i%100)
			}
			payload := []byte("21.5")
			now := clock.Now()
			// Every series exists before the timer starts.
			for i, topic := range topics {
				if !a.Offer(topic, payload, now) {
					b.Fatal("refused")
				}
				if i%256 == 255 {
					live, _ = a.DrainReadings(live[:0])
				}
			}
			if err := s.flush(ctx); err != nil {
				b.Fatal(err)
			}
			if got := len(a.SeriesIDs()); got != n {
				b.Fatalf("%d series, want %d", got, n)
			}

			b.ReportAllocs()
			i := 0
			for b.Loop() {
				a.Offer(topics[i%n], payload, now)
				i++
				if i%256 == 0 {
					live, _ = a.DrainReadings(live[:0])
				}
				if i%(64<<10) == 0 {
					if err := s.flush(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			if s.throttled > 0 {
				b.Fatalf("%d publishes throttled", s.throttled)
			}
		})
	}
}
