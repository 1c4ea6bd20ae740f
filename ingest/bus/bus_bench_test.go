package bus

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telegauge/telegauge/ingest"
	"github.com/telegauge/telegauge/ingest/store"
	"github.com/telegauge/telegauge/internal/natstest"
	"github.com/telegauge/telegauge/internal/testutil"
)

// BenchmarkBusPath measures the cluster path of a reading end to end:
// Send, encode, publish to a real NATS server on loopback, receive,
// decode, ApplyRemote on the other node's aggregator (rollups persisted
// as with SQLite per node) and hand to its live hub. ns/reading and
// allocs/reading are per reading; an op is one batch (one hub frame).
func BenchmarkBusPath(b *testing.B) {
	for _, batch := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			ns := natstest.Run(b)
			var got atomic.Int64
			arrived := make(chan struct{}, 1)
			var want atomic.Int64
			newBus := func(id string, live func([]ingest.Reading)) *Bus {
				st, err := store.NewMemory(store.MemoryConfig{}, nil)
				if err != nil {
					b.Fatal(err)
				}
				agg, err := ingest.New(ingest.Config{Store: st, MaxRatePerDevice: -1}, nil)
				if err != nil {
					b.Fatal(err)
				}
				bus, err := New(Config{URL: ns.URL(), NodeID: id, PersistRemote: true, Apply: agg, Live: live}, nil)
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- bus.Run(ctx) }()
				b.Cleanup(func() { cancel(); <-done })
				return bus
			}
			sender := newBus("a", nil)
			recv := newBus("b", func(rs []ingest.Reading) {
				if got.Add(int64(len(rs))) >= want.Load() {
					select {
					case arrived <- struct{}{}:
					default:
					}
				}
			})
			if err := testutil.Poll(10*time.Second, func() error {
				if len(sender.Nodes()) != 1 || len(recv.Nodes()) != 1 {
					return fmt.Errorf("not joined")
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			rs := make([]ingest.Reading, batch)
			nowMs := time.Now().UnixMilli()
			for i := range rs {
				rs[i] = ingest.Reading{Series: fmt.Sprintf("device-%03d/temperature", i%100), TimeMs: nowMs + int64(i), Value: float64(i)}
			}
			b.ReportAllocs()
			b.ResetTimer()
			n := 0
			for b.Loop() {
				n++
				want.Store(int64(n * batch))
				sender.Send(rs)
				for got.Load() < int64(n*batch) {
					<-arrived
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*batch), "ns/reading")
		})
	}
}
