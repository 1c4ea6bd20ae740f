package store

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest/rollup"
)

// coarseFeed appends readings the way the aggregator flushes them: each
// reading's delta in all three tiers, one batch per call.
type coarseFeed struct {
	s    *SQL
	seq  uint64
	want [rollup.NumTiers]map[int64]rollup.Bucket // by start, every reading appended
}

func newCoarseFeed(s *SQL) *coarseFeed {
	f := &coarseFeed{s: s}
	for t := range f.want {
		f.want[t] = make(map[int64]rollup.Bucket)
	}
	return f
}

// append sends one batch holding readings (time, value) of series "dev/a".
func (f *coarseFeed) append(t *testing.T, readings ...[2]float64) {
	t.Helper()
	var entries []Entry
	for _, tier := range rollup.Tiers {
		deltas := map[int64]*rollup.Bucket{}
		for _, r := range readings {
			start := rollup.Floor(int64(r[0]), tier.StepMs())
			if deltas[start] == nil {
				deltas[start] = &rollup.Bucket{StartMs: start}
			}
			deltas[start].Add(int64(r[0]), r[1])
			w := f.want[tier][start]
			w.StartMs = start
			w.Add(int64(r[0]), r[1])
			f.want[tier][start] = w
		}
		for _, d := range deltas {
			entries = append(entries, entry("dev/a", tier, *d))
		}
	}
	f.seq++
	mustAppend(t, f.s, Batch{Writer: 1, Seq: f.seq, Entries: entries})
}

// check asserts that every tier answers the count, min, max, first and last
// of every reading appended, each once.
func (f *coarseFeed) check(t *testing.T, s Store) {
	t.Helper()
	for _, tier := range rollup.Tiers {
		got := mustSelect(t, s, tier, 0, t0.UnixMilli()+24*3_600_000, "dev/a").Buckets[0]
		require.Len(t, got, len(f.want[tier]), "%s buckets", tier)
		for _, b := range got {
			w := f.want[tier][b.StartMs]
			require.Equal(t, w.Count, b.Count, "%s bucket %d", tier, b.StartMs)
			require.InDelta(t, w.Sum, b.Sum, 1e-9)
			require.Equal(t, []float64{w.Min, w.Max, w.First, w.Last}, []float64{b.Min, b.Max, b.First, b.Last})
			require.Equal(t, []int64{w.FirstMs, w.LastMs}, []int64{b.FirstMs, b.LastMs})
		}
	}
}

// storedRows counts the rows of a tier in the database, and the journal's.
func storedRows(t *testing.T, s *SQL, tier rollup.Tier) (rows, journal int) {
	t.Helper()
	require.NoError(t, s.r.QueryRow(`SELECT count(*) FROM rollups WHERE tier = ?`, int64(tier)).Scan(&rows))
	require.NoError(t, s.r.QueryRow(`SELECT count(*) FROM coarse_journal`).Scan(&journal))
	return rows, journal
}

// crash abandons s as kill -9 would: no coarse write, no checkpoint.
func crash(t *testing.T, s *SQL) {
	t.Helper()
	s.closed.Store(true)
	s.met.unregister(s.cfg.Registerer)
	require.NoError(t, s.closeDBs())
}

func openAt(t *testing.T, url string, clock *clockwork.FakeClock) *SQL {
	t.Helper()
	s, err := Open(context.Background(), SQLConfig{URL: url, Clock: clock}, nil)
	require.NoError(t, err)
	return s
}

func TestCoarseWaitsInMemoryThenWritesOnce(t *testing.T) {
	s, clock := newTestSQL(t, SQLConfig{URL: sqliteTestURL(t)})
	f := newCoarseFeed(s)
	base := t0.UnixMilli() - 120_000
	f.append(t, [2]float64{float64(base), 1}, [2]float64{float64(base + 1500), 2})
	f.append(t, [2]float64{float64(base + 2500), 3})

	rows, journal := storedRows(t, s, rollup.Tier1m)
	require.Zero(t, rows, "the minute waits in memory")
	require.Equal(t, 1, journal, "journaled once: the second batch's minute was already held")
	secs, _ := storedRows(t, s, rollup.Tier1s)
	require.Equal(t, 3, secs, "seconds are written at once")
	f.check(t, s)

	clock.Advance(DefaultCoarseInterval)
	f.append(t, [2]float64{float64(base + 61_000), 4})
	rows, journal = storedRows(t, s, rollup.Tier1m)
	require.Equal(t, 2, rows, "the interval passed: both minutes written")
	require.Zero(t, journal, "and the journal emptied in the same transaction")
	f.check(t, s)
}

func TestCoarseWrittenAtClose(t *testing.T) {
	url := sqliteTestURL(t)
	clock := clockwork.NewFakeClockAt(t0)
	s := openAt(t, url, clock)
	f := newCoarseFeed(s)
	f.append(t, [2]float64{float64(t0.UnixMilli() - 5000), 7}, [2]float64{float64(t0.UnixMilli() - 4000), 8})
	require.NoError(t, s.Close())

	s = openAt(t, url, clock)
	defer s.Close()
	rows, journal := storedRows(t, s, rollup.Tier1h)
	require.Equal(t, 1, rows)
	require.Zero(t, journal)
	f.check(t, s)
}

// TestCoarseRepairAfterCrash: a crash with coarse deltas in memory, some
// in buckets already partly written, one a late reading hours old: at the
// next start every minute and hour equals the merge of the seconds, each
// reading once.
func TestCoarseRepairAfterCrash(t *testing.T) {
	url := sqliteTestURL(t)
	clock := clockwork.NewFakeClockAt(t0)
	s := openAt(t, url, clock)
	f := newCoarseFeed(s)
	rng := rand.New(rand.NewPCG(1, 2))
	base := t0.UnixMilli() - 30*60_000
	for i := range 200 {
		ts := base + int64(i)*900 + rng.Int64N(900)
		f.append(t, [2]float64{float64(ts), float64(rng.IntN(100))}, [2]float64{float64(ts + 1), float64(rng.IntN(100))})
		if i == 120 {
			clock.Advance(DefaultCoarseInterval) // the next batch writes the coarse tiers
		}
	}
	f.append(t, [2]float64{float64(t0.UnixMilli() - 5*3_600_000 + 17), -3}) // late, hours old
	rows, journal := storedRows(t, s, rollup.Tier1m)
	require.NotZero(t, rows, "some minutes were written before the crash")
	require.NotZero(t, journal, "some deltas were in memory only")
	crash(t, s)

	s = openAt(t, url, clock)
	defer s.Close()
	_, journal = storedRows(t, s, rollup.Tier1m)
	require.Zero(t, journal, "repair empties the journal")
	f.check(t, s)
}

func TestCoarseRunWritesWhenIdle(t *testing.T) {
	s, clock := newTestSQL(t, SQLConfig{URL: sqliteTestURL(t), PruneInterval: time.Hour})
	f := newCoarseFeed(s)
	f.append(t, [2]float64{float64(t0.UnixMilli() - 3000), 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	require.NoError(t, clock.BlockUntilContext(ctx, 2)) // the prune and coarse tickers
	clock.Advance(DefaultCoarseInterval)
	require.Eventually(t, func() bool {
		rows, journal := storedRows(t, s, rollup.Tier1m)
		return rows == 1 && journal == 0
	}, 5*time.Second, time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	f.check(t, s)
}

func TestCoarsePruneDropsExpiredDeltas(t *testing.T) {
	s, clock := newTestSQL(t, SQLConfig{URL: sqliteTestURL(t), Retention: Retention{time.Hour, 2 * time.Hour, 3 * time.Hour}})
	f := newCoarseFeed(s)
	f.append(t, [2]float64{float64(t0.UnixMilli() - 3000), 1})
	clock.Advance(4 * time.Hour)
	require.NoError(t, s.Prune(context.Background()))
	for _, tier := range rollup.Tiers {
		require.Empty(t, mustSelect(t, s, tier, 0, t0.UnixMilli()+5*3_600_000, "dev/a").Buckets[0], "%s", tier)
	}
	require.Zero(t, s.coarse.n)
}
