package store

import (
	"context"
	"math"
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
	require.NoError(t, s.r.QueryRow(`SELECT count(*) FROM write_journal`).Scan(&journal))
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

// fileFeed opens a SQLite file on a fake clock at t0 with a feed on it,
// and returns reopen, which opens the same file again and closes it when
// the test ends.
func fileFeed(t *testing.T) (f *coarseFeed, clock *clockwork.FakeClock, reopen func() *SQL) {
	url := sqliteTestURL(t)
	clock = clockwork.NewFakeClockAt(t0)
	return newCoarseFeed(openAt(t, url, clock)), clock, func() *SQL {
		s := openAt(t, url, clock)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
}

func TestBufferWaitsInMemoryThenWritesOnce(t *testing.T) {
	s, clock := newTestSQL(t, SQLConfig{URL: sqliteTestURL(t)})
	f := newCoarseFeed(s)
	base := t0.UnixMilli() - 120_000
	f.append(t, [2]float64{float64(base), 1}, [2]float64{float64(base + 1500), 2})
	f.append(t, [2]float64{float64(base + 2500), 3})

	for _, tier := range rollup.Tiers {
		rows, journal := storedRows(t, s, tier)
		require.Zero(t, rows, "%s buckets wait in memory", tier)
		require.Equal(t, 2, journal, "one journal row per append")
	}
	f.check(t, s)

	clock.Advance(DefaultWriteInterval)
	f.append(t, [2]float64{float64(base + 61_000), 4})
	for tier, want := range []int{4, 2, 1} {
		rows, journal := storedRows(t, s, rollup.Tier(tier))
		require.Equal(t, want, rows, "the interval passed: %s written", rollup.Tier(tier))
		require.Zero(t, journal, "and the journal emptied in the same transaction")
	}
	f.check(t, s)
}

func TestBufferWrittenAtClose(t *testing.T) {
	f, _, reopen := fileFeed(t)
	f.append(t, [2]float64{float64(t0.UnixMilli() - 5000), 7}, [2]float64{float64(t0.UnixMilli() - 4000), 8})
	require.NoError(t, f.s.Close())

	s := reopen()
	rows, journal := storedRows(t, s, rollup.Tier1h)
	require.Equal(t, 1, rows)
	require.Zero(t, journal)
	f.check(t, s)
}

// TestBufferReplayAfterCrash: a crash with coarse deltas in memory, some
// in buckets already partly written, one a late reading hours old: at the
// next start every minute and hour equals the merge of the seconds, each
// reading once.
func TestBufferReplayAfterCrash(t *testing.T) {
	f, clock, reopen := fileFeed(t)
	s := f.s
	rng := rand.New(rand.NewPCG(1, 2))
	base := t0.UnixMilli() - 30*60_000
	for i := range 200 {
		ts := base + int64(i)*900 + rng.Int64N(900)
		f.append(t, [2]float64{float64(ts), float64(rng.IntN(100))}, [2]float64{float64(ts + 1), float64(rng.IntN(100))})
		if i == 120 {
			clock.Advance(DefaultWriteInterval) // the next batch writes the buffer out
		}
	}
	f.append(t, [2]float64{float64(t0.UnixMilli() - 5*3_600_000 + 17), -3}) // late, hours old
	rows, journal := storedRows(t, s, rollup.Tier1m)
	require.NotZero(t, rows, "some minutes were written before the crash")
	require.NotZero(t, journal, "some deltas were in memory only")
	secs, _ := storedRows(t, s, rollup.Tier1s)
	require.Less(t, secs, len(f.want[rollup.Tier1s]), "some seconds were in memory only")
	crash(t, s)

	s = reopen()
	_, journal = storedRows(t, s, rollup.Tier1m)
	require.Zero(t, journal, "the replay empties the journal")
	f.check(t, s)
}

func TestBufferRunWritesWhenIdle(t *testing.T) {
	s, clock := newTestSQL(t, SQLConfig{URL: sqliteTestURL(t), PruneInterval: time.Hour})
	f := newCoarseFeed(s)
	f.append(t, [2]float64{float64(t0.UnixMilli() - 3000), 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	require.NoError(t, clock.BlockUntilContext(ctx, 2)) // the prune and coarse tickers
	clock.Advance(DefaultWriteInterval)
	require.Eventually(t, func() bool {
		rows, journal := storedRows(t, s, rollup.Tier1s)
		return rows == 1 && journal == 0
	}, 5*time.Second, time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	f.check(t, s)
}

func TestBufferPruneDropsExpiredDeltas(t *testing.T) {
	s, clock := newTestSQL(t, SQLConfig{URL: sqliteTestURL(t), Retention: Retention{time.Hour, 2 * time.Hour, 3 * time.Hour}})
	f := newCoarseFeed(s)
	f.append(t, [2]float64{float64(t0.UnixMilli() - 3000), 1})
	clock.Advance(4 * time.Hour)
	require.NoError(t, s.Prune(context.Background()))
	for _, tier := range rollup.Tiers {
		require.Empty(t, mustSelect(t, s, tier, 0, t0.UnixMilli()+5*3_600_000, "dev/a").Buckets[0], "%s", tier)
	}
	require.Zero(t, s.buf.n)
}

// FuzzJournal: any blob decodes to an error or to entries, never a panic;
// and what journal encodes decodes to the same buckets.
func FuzzJournal(f *testing.F) {
	w := newWriteBuffer(t0)
	start := t0.UnixMilli() - t0.UnixMilli()%1000
	f.Add(w.journal(nil, []sqlRow{
		{id: 1, tier: rollup.Tier1s, Bucket: bucket(start, [2]float64{float64(start + 3), 2.5})},
		{id: 1, tier: rollup.Tier1m, Bucket: bucket(start, [2]float64{float64(start + 3), 2.5})},
		{id: 7, tier: rollup.Tier1s, Bucket: bucket(start, [2]float64{float64(start + 3), -1}, [2]float64{float64(start + 999), 4})},
	}))
	f.Add([]byte{1, 0x80})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, blob []byte) {
		keys := map[bucketKey]bool{}
		deltas := map[bucketKey]*rollup.Bucket{}
		if err := decodeJournal(blob, keys, deltas); err != nil {
			require.ErrorIs(t, err, errCorruptJournal)
			return
		}
		// Re-encode what was decoded: it decodes to the same.
		var rows []sqlRow
		for k := range keys {
			r := sqlRow{id: k.id, tier: k.tier, Bucket: rollup.Bucket{StartMs: k.start}}
			if d := deltas[k]; d != nil {
				r.Bucket = *d
			} else if k.tier == rollup.Tier1s {
				continue // a per-second key without a delta: not what journal writes
			}
			rows = append(rows, r)
		}
		keys2 := map[bucketKey]bool{}
		deltas2 := map[bucketKey]*rollup.Bucket{}
		require.NoError(t, decodeJournal(newWriteBuffer(t0).journal(nil, rows), keys2, deltas2))
		require.Len(t, deltas2, len(deltas))
		for k, d := range deltas2 {
			want, got := deltas[k], d
			require.Equal(t, want.Count, got.Count)
			require.Equal(t, []int64{want.StartMs, want.FirstMs, want.LastMs}, []int64{got.StartMs, got.FirstMs, got.LastMs})
			for _, p := range [][2]float64{{want.Sum, got.Sum}, {want.Min, got.Min}, {want.Max, got.Max}, {want.First, got.First}, {want.Last, got.Last}} {
				require.Equal(t, math.Float64bits(p[0]), math.Float64bits(p[1]))
			}
		}
	})
}
