package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest/rollup"
)

// t0 is the fake clock's start: 2023-11-14T22:13:20Z.
var t0 = time.UnixMilli(1_700_000_000_000)

// newTestMemory returns an empty Memory store on a fake clock at t0.
func newTestMemory(t testing.TB, cfg MemoryConfig) (*Memory, *clockwork.FakeClock) {
	t.Helper()
	clock := clockwork.NewFakeClockAt(t0)
	cfg.Clock = clock
	m, err := NewMemory(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Close()) })
	return m, clock
}

// bucket returns a bucket at startMs holding the readings (time, value).
func bucket(startMs int64, readings ...[2]float64) rollup.Bucket {
	b := rollup.Bucket{StartMs: startMs}
	for _, r := range readings {
		b.Add(int64(r[0]), r[1])
	}
	return b
}

func entry(series string, tier rollup.Tier, b rollup.Bucket) Entry {
	return Entry{Series: series, Tier: tier, Bucket: b}
}

func mustAppend(t testing.TB, m Store, b Batch) {
	t.Helper()
	require.NoError(t, m.Append(context.Background(), b))
}

func mustSelect(t testing.TB, m Store, tier rollup.Tier, fromMs, toMs int64, series ...string) Selection {
	t.Helper()
	sel, err := m.Select(context.Background(), series, tier, fromMs, toMs)
	require.NoError(t, err)
	require.Len(t, sel.Buckets, len(series))
	return sel
}

func TestMemoryAppendMerges(t *testing.T) {
	m, _ := newTestMemory(t, MemoryConfig{})
	s := t0.UnixMilli() - 10_000
	mustAppend(t, m, Batch{Writer: 0, Seq: 1, Entries: []Entry{
		entry("dev1/a", rollup.Tier1s, bucket(s, [2]float64{float64(s + 100), 5}, [2]float64{float64(s + 500), 1})),
	}})
	// A later delta of the same bucket (a late reading, or one that came
	// after the previous flush) adds to it; it never replaces it.
	mustAppend(t, m, Batch{Writer: 0, Seq: 2, Entries: []Entry{
		entry("dev1/a", rollup.Tier1s, bucket(s, [2]float64{float64(s + 50), 9}, [2]float64{float64(s + 900), -2})),
	}})
	// Another writer (a cluster node) writing the same bucket adds too.
	mustAppend(t, m, Batch{Writer: 7, Seq: 1, Entries: []Entry{
		entry("dev1/a", rollup.Tier1s, bucket(s, [2]float64{float64(s + 300), 3})),
	}})
	sel := mustSelect(t, m, rollup.Tier1s, s, s+1000, "dev1/a")
	require.Equal(t, []rollup.Bucket{{
		StartMs: s, Count: 5, Sum: 16, Min: -2, Max: 9,
		FirstMs: s + 50, First: 9, LastMs: s + 900, Last: -2,
	}}, sel.Buckets[0])
	require.Equal(t, map[int]uint64{0: 2, 7: 1}, sel.Marks)
}

func TestMemoryWatermark(t *testing.T) {
	s := t0.UnixMilli() - 10_000
	one := func(seq uint64, writer int) Batch {
		return Batch{Writer: writer, Seq: seq, Entries: []Entry{entry("dev1/a", rollup.Tier1s, bucket(s, [2]float64{float64(s), 1}))}}
	}
	for _, tc := range []struct {
		name      string
		batches   []Batch
		wantCount int64
		wantMarks map[int]uint64
	}{
		{"first batch applies", []Batch{one(1, 0)}, 1, map[int]uint64{0: 1}},
		{"increasing seqs apply", []Batch{one(1, 0), one(2, 0), one(5, 0)}, 3, map[int]uint64{0: 5}},
		{"a retried batch is ignored", []Batch{one(1, 0), one(2, 0), one(2, 0)}, 2, map[int]uint64{0: 2}},
		{"an older batch is ignored", []Batch{one(1, 0), one(3, 0), one(2, 0)}, 2, map[int]uint64{0: 3}},
		{"seq 0 is never applied", []Batch{one(0, 0)}, 0, map[int]uint64{}},
		{"writers have their own marks", []Batch{one(3, 0), one(1, 1), one(2, 1), one(3, 0)}, 3, map[int]uint64{0: 3, 1: 2}},
		{"an empty batch moves the mark", []Batch{{Writer: 0, Seq: 4}, one(4, 0), one(5, 0)}, 1, map[int]uint64{0: 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newTestMemory(t, MemoryConfig{})
			for _, b := range tc.batches {
				mustAppend(t, m, b)
			}
			sel := mustSelect(t, m, rollup.Tier1s, s, s+1000, "dev1/a")
			var n int64
			for _, b := range sel.Buckets[0] {
				n += b.Count
			}
			require.Equal(t, tc.wantCount, n)
			require.Equal(t, tc.wantMarks, sel.Marks)
		})
	}
}

func TestMemorySelect(t *testing.T) {
	m, _ := newTestMemory(t, MemoryConfig{})
	base := t0.UnixMilli() - t0.UnixMilli()%60_000 - 10*60_000
	var entries []Entry
	// Appended out of order, across batches: they must come back sorted.
	for _, i := range []int64{5, 1, 3, 0, 4, 2} {
		entries = append(entries, entry("dev1/a", rollup.Tier1m, bucket(base+i*60_000, [2]float64{float64(base + i*60_000), float64(i)})))
	}
	mustAppend(t, m, Batch{Writer: 0, Seq: 1, Entries: entries[:3]})
	mustAppend(t, m, Batch{Writer: 0, Seq: 2, Entries: entries[3:]})
	mustAppend(t, m, Batch{Writer: 1, Seq: 1, Entries: []Entry{
		entry("dev2/b", rollup.Tier1m, bucket(base, [2]float64{float64(base), 42})),
		entry("dev1/a", rollup.Tier1s, bucket(base, [2]float64{float64(base), 0})), // another tier
	}})

	starts := func(bs []rollup.Bucket) []int64 {
		out := []int64{}
		for _, b := range bs {
			out = append(out, (b.StartMs-base)/60_000)
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		from, to int64
		want     []int64 // minutes after base
	}{
		{"everything", base, base + 6*60_000, []int64{0, 1, 2, 3, 4, 5}},
		{"from inclusive, to exclusive", base + 60_000, base + 3*60_000, []int64{1, 2}},
		{"unaligned bounds", base + 1, base + 3*60_000 + 1, []int64{1, 2, 3}},
		{"inside a bucket: nothing", base + 1, base + 59_999, []int64{}},
		{"before", base - 3_600_000, base, []int64{}},
		{"after", base + 6*60_000, base + 3_600_000, []int64{}},
		{"empty range", base + 60_000, base + 60_000, []int64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sel := mustSelect(t, m, rollup.Tier1m, tc.from, tc.to, "dev1/a", "dev9/unknown", "dev2/b")
			require.Equal(t, tc.want, starts(sel.Buckets[0]))
			require.Empty(t, sel.Buckets[1], "unknown series")
			require.Equal(t, map[int]uint64{0: 2, 1: 1}, sel.Marks)
		})
	}

	t.Run("tiers are separate", func(t *testing.T) {
		sel := mustSelect(t, m, rollup.Tier1s, base, base+3_600_000, "dev1/a", "dev2/b")
		require.Equal(t, []int64{0}, starts(sel.Buckets[0]))
		require.Empty(t, sel.Buckets[1])
		sel = mustSelect(t, m, rollup.Tier1h, 0, t0.UnixMilli()+3_600_000, "dev1/a")
		require.Empty(t, sel.Buckets[0])
	})
	t.Run("the selection is a copy", func(t *testing.T) {
		sel := mustSelect(t, m, rollup.Tier1m, base, base+60_000, "dev1/a")
		sel.Buckets[0][0].Count = 1000
		sel.Marks[0] = 1000
		sel = mustSelect(t, m, rollup.Tier1m, base, base+60_000, "dev1/a")
		require.Equal(t, int64(1), sel.Buckets[0][0].Count)
		require.Equal(t, uint64(2), sel.Marks[0])
	})
	t.Run("unknown tier", func(t *testing.T) {
		_, err := m.Select(context.Background(), []string{"dev1/a"}, rollup.Tier(rollup.NumTiers), base, base+60_000)
		require.Error(t, err)
	})
}

// TestMemoryAppendAllOrNothing: a batch that cannot be applied changes
// nothing, not even in part, so that its retry counts every entry once.
func TestMemoryAppendAllOrNothing(t *testing.T) {
	m, _ := newTestMemory(t, MemoryConfig{})
	s := t0.UnixMilli() - 10_000
	good := entry("dev1/a", rollup.Tier1s, bucket(s, [2]float64{float64(s), 1}))
	bad := entry("dev1/a", rollup.Tier(rollup.NumTiers), bucket(s, [2]float64{float64(s), 1}))
	require.Error(t, m.Append(context.Background(), Batch{Writer: 0, Seq: 1, Entries: []Entry{good, bad}}))
	sel := mustSelect(t, m, rollup.Tier1s, s, s+1000, "dev1/a")
	require.Empty(t, sel.Buckets[0])
	require.Empty(t, sel.Marks)

	// The retry (fixed) applies once.
	mustAppend(t, m, Batch{Writer: 0, Seq: 1, Entries: []Entry{good}})
	sel = mustSelect(t, m, rollup.Tier1s, s, s+1000, "dev1/a")
	require.Len(t, sel.Buckets[0], 1)
	require.Equal(t, int64(1), sel.Buckets[0][0].Count)
}

func TestMemoryRetention(t *testing.T) {
	ret := Retention{time.Hour, 48 * time.Hour, 90 * 24 * time.Hour}
	m, clock := newTestMemory(t, MemoryConfig{Retention: ret})
	now := t0.UnixMilli()
	hourAgo := now - time.Hour.Milliseconds()
	floor := func(t, step int64) int64 { return t - t%step }

	// Append drops what is already past retention: a 1s bucket that ended
	// an hour ago or earlier. The mark still moves.
	mustAppend(t, m, Batch{Writer: 0, Seq: 1, Entries: []Entry{
		entry("dev1/a", rollup.Tier1s, bucket(hourAgo-1000, [2]float64{float64(hourAgo - 1000), 1})), // ends at the cut: gone
		entry("dev1/a", rollup.Tier1s, bucket(hourAgo-999, [2]float64{float64(hourAgo - 999), 2})),   // ends just after: kept
		entry("dev1/a", rollup.Tier1m, bucket(floor(hourAgo, 60_000), [2]float64{float64(hourAgo), 3})),
		entry("dev2/b", rollup.Tier1s, bucket(floor(now, 1000), [2]float64{float64(now), 4})),
	}})
	count := func(tier rollup.Tier, series string) int {
		return len(mustSelect(t, m, tier, 0, now+3_600_000, series).Buckets[0])
	}
	require.Equal(t, 1, count(rollup.Tier1s, "dev1/a"))
	require.Equal(t, 1, count(rollup.Tier1m, "dev1/a"))
	require.Equal(t, 1, count(rollup.Tier1s, "dev2/b"))
	require.Equal(t, map[int]uint64{0: 1}, mustSelect(t, m, rollup.Tier1s, 0, 1).Marks)

	// Prune drops buckets as they pass retention, tier by tier.
	m.Prune()
	require.Equal(t, 1, count(rollup.Tier1s, "dev1/a"), "nothing expired yet")
	clock.Advance(time.Second)
	m.Prune()
	require.Equal(t, 0, count(rollup.Tier1s, "dev1/a"))
	require.Equal(t, 1, count(rollup.Tier1m, "dev1/a"), "the 1m tier keeps it for 48 h")
	clock.Advance(48 * time.Hour)
	m.Prune()
	require.Equal(t, 0, count(rollup.Tier1m, "dev1/a"))
	require.Equal(t, 0, count(rollup.Tier1s, "dev2/b"))
	m.mu.RLock()
	require.Empty(t, m.series, "series left with nothing are dropped")
	m.mu.RUnlock()

	// Buckets keep merging after a prune.
	s := floor(clock.Now().UnixMilli(), 1000)
	mustAppend(t, m, Batch{Writer: 0, Seq: 2, Entries: []Entry{entry("dev1/a", rollup.Tier1s, bucket(s, [2]float64{float64(s), 1}))}})
	mustAppend(t, m, Batch{Writer: 0, Seq: 3, Entries: []Entry{entry("dev1/a", rollup.Tier1s, bucket(s, [2]float64{float64(s + 1), 1}))}})
	sel := mustSelect(t, m, rollup.Tier1s, s, s+1000, "dev1/a")
	require.Equal(t, int64(2), sel.Buckets[0][0].Count)
}

func TestMemoryDefaults(t *testing.T) {
	m, _ := newTestMemory(t, MemoryConfig{Retention: Retention{2 * time.Hour}})
	require.Equal(t, Retention{2 * time.Hour, DefaultMemoryRetention[1], DefaultMemoryRetention[2]}, m.cfg.Retention)
	require.Equal(t, time.Minute, m.cfg.PruneInterval)
}

func TestMemoryRunPrunes(t *testing.T) {
	m, clock := newTestMemory(t, MemoryConfig{Retention: Retention{time.Minute}, PruneInterval: 10 * time.Second})
	s := t0.UnixMilli() - t0.UnixMilli()%1000
	mustAppend(t, m, Batch{Writer: 0, Seq: 1, Entries: []Entry{entry("dev1/a", rollup.Tier1s, bucket(s, [2]float64{float64(s), 1}))}})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer bcancel()
	require.NoError(t, clock.BlockUntilContext(bctx, 1), "Run's ticker")
	clock.Advance(70 * time.Second)
	eventually(t, 5*time.Second, func() error {
		if n := len(mustSelect(t, m, rollup.Tier1s, 0, s+1000, "dev1/a").Buckets[0]); n != 0 {
			return fmt.Errorf("%d buckets left", n)
		}
		return nil
	})
}

func TestMemoryClose(t *testing.T) {
	m, err := NewMemory(MemoryConfig{}, nil)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "idempotent")
	require.True(t, errors.Is(m.Append(context.Background(), Batch{Seq: 1}), ErrClosed))
	_, err = m.Select(context.Background(), []string{"dev1/a"}, rollup.Tier1s, 0, 1)
	require.ErrorIs(t, err, ErrClosed)
}

// eventually polls check until it returns nil or timeout passes, then fails
// the test with check's last error (nats checkFor).
func eventually(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %v", timeout, err)
		}
		// Not a synchronisation sleep: a poll interval with a deadline.
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}
