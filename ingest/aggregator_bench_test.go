package ingest

import (
	"context"
	"fmt"
	"testing"

	"github.com/jonboulle/clockwork"

	"github.com/telegauge/telegauge/ingest/store"
)

// BenchmarkAggregatorAppend measures one reading through the aggregator:
// Offer into the shard's queue, then the shard's own path (decode,
// validation, series lookup, three rollup tiers, the raw ring), in batches
// of 256 as a busy shard takes them, with a flush to the store every 64 Ki
// readings. Each op is one reading of one of N series, round robin.
func BenchmarkAggregatorAppend(b *testing.B) {
	for _, n := range []int{1, 1000, 100_000} {
		b.Run(fmt.Sprintf("series=%d", n), func(b *testing.B) {
			ctx := context.Background()
			clock := clockwork.NewFakeClockAt(aggT0)
			mem, err := store.NewMemory(store.MemoryConfig{Clock: clock}, nil)
			if err != nil {
				b.Fatal(err)
			}
			a, err := New(Config{Shards: 1, Store: mem, Clock: clock, MaxSeriesPerDevice: 100}, nil)
			if err != nil {
				b.Fatal(err)
			}
			s := a.shards[0]
			topics := make([]string, n)
			for i := range topics {
				topics[i] = fmt.Sprintf("telemetry/dev%d/m%d", i/100, i%100)
			}
			payload := []byte("21.5")
			now := clock.Now()
			// Every series exists before the timer starts.
			for i, topic := range topics {
				if !a.Offer(topic, payload, now) {
					b.Fatal("queue full")
				}
				if i%256 == 255 {
					s.process()
				}
			}
			s.process()
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
					s.process()
				}
				if i%(64<<10) == 0 {
					if err := s.flush(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
			s.process()
		})
	}
}
