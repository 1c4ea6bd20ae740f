package store

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest/rollup"
	"github.com/telegauge/telegauge/internal/testutil"
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

// eventually polls check until it holds or the test fails.
var eventually = testutil.Eventually
