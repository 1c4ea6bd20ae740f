package store

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest/rollup"
)

// suiteStore is a store under the conformance suite with what the suite
// drives besides the Store interface.
type suiteStore struct {
	Store
	Prune func(ctx context.Context) error
	Run   func(ctx context.Context) error
	Clock *clockwork.FakeClock
}

// storeFactory returns an empty, open store on a fake clock at t0, closed
// when the test ends.
type storeFactory func(t testing.TB, ret Retention, pruneInterval time.Duration) suiteStore

func memoryFactory(t testing.TB, ret Retention, pruneInterval time.Duration) suiteStore {
	m, clock := newTestMemory(t, MemoryConfig{Retention: ret, PruneInterval: pruneInterval})
	return suiteStore{
		Store: m,
		Prune: func(context.Context) error { m.Prune(); return nil },
		Run:   m.Run,
		Clock: clock,
	}
}

func sqlFactory(url func(t testing.TB) string) storeFactory {
	return func(t testing.TB, ret Retention, pruneInterval time.Duration) suiteStore {
		s, clock := newTestSQL(t, SQLConfig{URL: url(t), Retention: ret, PruneInterval: pruneInterval})
		return suiteStore{Store: s, Prune: s.Prune, Run: s.Run, Clock: clock}
	}
}

func TestMemorySuite(t *testing.T)   { runSuite(t, memoryFactory) }
func TestSQLiteSuite(t *testing.T)   { runSuite(t, sqlFactory(sqliteTestURL)) }
func TestPostgresSuite(t *testing.T) { runSuite(t, sqlFactory(postgresTestURL)) }

// runSuite is the behaviour every Store shares. Memory is the reference:
// the durable stores must answer exactly as it does.
func runSuite(t *testing.T, open storeFactory) {
	for _, tc := range []struct {
		name string
		test func(t *testing.T, open storeFactory)
	}{
		{"merges never overwrite", suiteMerges},
		{"tie-breaks match rollup.Bucket.Merge", suiteTieBreaks},
		{"any split and order gives the same bucket", suiteSplitOrder},
		{"duplicates within a batch", suiteDuplicatesInBatch},
		{"extreme values", suiteExtremeValues},
		{"large batch", suiteLargeBatch},
		{"watermarks", suiteWatermark},
		{"select ranges and order", suiteSelect},
		{"all or nothing", suiteAllOrNothing},
		{"retention and prune", suiteRetention},
		{"run prunes", suiteRunPrunes},
		{"concurrent append and select", suiteConcurrent},
		{"close", suiteClose},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, open) })
	}
}

func suiteMerges(t *testing.T, open storeFactory) {
	m := open(t, Retention{}, 0)
	s := t0.UnixMilli() - 10_000
	mustAppend(t, m, Batch{Writer: 0, Seq: 1, Entries: []Entry{
		entry("dev1/a", rollup.Tier1s, bucket(s, [2]float64{float64(s + 100), 5}, [2]float64{float64(s + 500), 1})),
	}})
	// A later delta of the same bucket adds to it; it never replaces it.
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

	// A late delta for an older bucket, after newer ones: merged into its
	// own bucket, the others untouched.
	mustAppend(t, m, Batch{Writer: 0, Seq: 3, Entries: []Entry{
		entry("dev1/a", rollup.Tier1s, bucket(s+2000, [2]float64{float64(s + 2000), 1})),
		entry("dev1/a", rollup.Tier1s, bucket(s+1000, [2]float64{float64(s + 1999), 4})),
	}})
	mustAppend(t, m, Batch{Writer: 0, Seq: 4, Entries: []Entry{
		entry("dev1/a", rollup.Tier1s, bucket(s, [2]float64{float64(s + 999), 100})),
		entry("dev1/a", rollup.Tier1s, bucket(s+1000, [2]float64{float64(s + 1000), -4})),
	}})
	sel = mustSelect(t, m, rollup.Tier1s, s, s+3000, "dev1/a")
	require.Equal(t, []rollup.Bucket{
		{StartMs: s, Count: 6, Sum: 116, Min: -2, Max: 100, FirstMs: s + 50, First: 9, LastMs: s + 999, Last: 100},
		{StartMs: s + 1000, Count: 2, Sum: 0, Min: -4, Max: 4, FirstMs: s + 1000, First: -4, LastMs: s + 1999, Last: 4},
		{StartMs: s + 2000, Count: 1, Sum: 1, Min: 1, Max: 1, FirstMs: s + 2000, First: 1, LastMs: s + 2000, Last: 1},
	}, sel.Buckets[0])
}

// suiteTieBreaks: readings at the same time as a bucket's first or last
// are resolved by value, whichever arrives first, exactly as
// rollup.Bucket.Merge does.
func suiteTieBreaks(t *testing.T, open storeFactory) {
	s := t0.UnixMilli() - 60_000
	r := func(dt int64, v float64) [2]float64 { return [2]float64{float64(s + dt), v} }
	for _, tc := range []struct {
		name   string
		deltas []rollup.Bucket // appended in this order, one batch each
	}{
		{"equal first time, smaller value later", []rollup.Bucket{bucket(s, r(10, 5), r(20, 6)), bucket(s, r(10, 3))}},
		{"equal first time, larger value later", []rollup.Bucket{bucket(s, r(10, 3), r(20, 6)), bucket(s, r(10, 5))}},
		{"equal last time, larger value later", []rollup.Bucket{bucket(s, r(10, 5), r(20, 6)), bucket(s, r(20, 8))}},
		{"equal last time, smaller value later", []rollup.Bucket{bucket(s, r(10, 5), r(20, 8)), bucket(s, r(20, 6))}},
		{"single readings at one time", []rollup.Bucket{bucket(s, r(10, 2)), bucket(s, r(10, 1)), bucket(s, r(10, 3))}},
		{"single reading then many", []rollup.Bucket{bucket(s, r(500, 2)), bucket(s, r(10, 7), r(500, 2), r(999, 1))}},
		{"many then single readings", []rollup.Bucket{bucket(s, r(10, 7), r(999, 1)), bucket(s, r(10, 7)), bucket(s, r(999, 1)), bucket(s, r(0, -1))}},
		{"negative and zero values", []rollup.Bucket{bucket(s, r(5, 0)), bucket(s, r(5, -0.5)), bucket(s, r(6, -0.25))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := open(t, Retention{}, 0)
			var want rollup.Bucket
			for i, d := range tc.deltas {
				want.Merge(&d)
				mustAppend(t, m, Batch{Writer: 0, Seq: uint64(i + 1), Entries: []Entry{entry("dev1/a", rollup.Tier1m, d)}})
			}
			sel := mustSelect(t, m, rollup.Tier1m, s, s+60_000, "dev1/a")
			require.Equal(t, []rollup.Bucket{want}, sel.Buckets[0])
		})
	}
}

// suiteSplitOrder: readings with many equal times and values, split into
// deltas at random and appended in random order, end as the bucket built
// from all of them at once.
func suiteSplitOrder(t *testing.T, open storeFactory) {
	m := open(t, Retention{}, 0)
	rng := rand.New(rand.NewPCG(1, 2))
	base := rollup.Floor(t0.UnixMilli(), 3_600_000) - 3_600_000
	seq := uint64(0)
	var wants []rollup.Bucket
	for k := range 40 {
		start := base + int64(k)*60_000
		n := 1 + rng.IntN(12)
		var all rollup.Bucket
		var deltas []rollup.Bucket
		for range n {
			tMs, v := start+int64(rng.IntN(4))*1000, float64(rng.IntN(5)-2)
			all.StartMs = start
			all.Add(tMs, v)
			if len(deltas) == 0 || rng.IntN(3) == 0 {
				deltas = append(deltas, rollup.Bucket{StartMs: start})
			}
			deltas[len(deltas)-1].Add(tMs, v)
		}
		rng.Shuffle(len(deltas), func(i, j int) { deltas[i], deltas[j] = deltas[j], deltas[i] })
		for _, d := range deltas {
			seq++
			mustAppend(t, m, Batch{Writer: 0, Seq: seq, Entries: []Entry{entry("dev1/a", rollup.Tier1m, d)}})
		}
		wants = append(wants, all)
	}
	sel := mustSelect(t, m, rollup.Tier1m, base, base+3_600_000, "dev1/a")
	require.Equal(t, wants, sel.Buckets[0])
}

// suiteDuplicatesInBatch: one batch may carry several deltas of one bucket.
func suiteDuplicatesInBatch(t *testing.T, open storeFactory) {
	m := open(t, Retention{}, 0)
	s := rollup.Floor(t0.UnixMilli(), 60_000) - 60_000
	d1 := bucket(s, [2]float64{float64(s + 10), 1}, [2]float64{float64(s + 20), 2})
	d2 := bucket(s, [2]float64{float64(s + 5), 7})
	d3 := bucket(s, [2]float64{float64(s + 20), 3})
	mustAppend(t, m, Batch{Writer: 0, Seq: 1, Entries: []Entry{
		entry("dev1/a", rollup.Tier1m, d1), entry("dev2/b", rollup.Tier1m, d1),
		entry("dev1/a", rollup.Tier1m, d2), entry("dev1/a", rollup.Tier1m, d3),
	}})
	want := d1
	want.Merge(&d2)
	want.Merge(&d3)
	sel := mustSelect(t, m, rollup.Tier1m, s, s+60_000, "dev1/a", "dev2/b")
	require.Equal(t, [][]rollup.Bucket{{want}, {d1}}, sel.Buckets)
}

// suiteExtremeValues: huge and tiny values survive, and a sum that
// overflows does so as it would in memory.
func suiteExtremeValues(t *testing.T, open storeFactory) {
	m := open(t, Retention{}, 0)
	s := rollup.Floor(t0.UnixMilli(), 1000) - 10_000
	vals := []float64{math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, 1e-300, 0.1, 1 << 60, -(1 << 53) - 2}
	var entries []Entry
	for i, v := range vals {
		entries = append(entries, entry("dev1/a", rollup.Tier1s, bucket(s+int64(i)*1000, [2]float64{float64(s + int64(i)*1000), v})))
	}
	mustAppend(t, m, Batch{Writer: 0, Seq: 1, Entries: entries})
	sel := mustSelect(t, m, rollup.Tier1s, s, s+10_000, "dev1/a")
	require.Len(t, sel.Buckets[0], len(vals))
	for i, v := range vals {
		require.Equal(t, v, sel.Buckets[0][i].Sum, "value %d", i)
		require.Equal(t, v, sel.Buckets[0][i].Last, "value %d", i)
	}

	// MaxFloat64 twice overflows the sum to +Inf; then -Inf makes it NaN.
	over := bucket(s, [2]float64{float64(s + 1), math.MaxFloat64})
	mustAppend(t, m, Batch{Writer: 0, Seq: 2, Entries: []Entry{entry("dev1/a", rollup.Tier1s, over)}})
	sel = mustSelect(t, m, rollup.Tier1s, s, s+1000, "dev1/a")
	require.True(t, math.IsInf(sel.Buckets[0][0].Sum, 1))
	require.Equal(t, math.MaxFloat64, sel.Buckets[0][0].Mean())

	under := bucket(s+1000, [2]float64{float64(s + 1001), -math.MaxFloat64})
	mustAppend(t, m, Batch{Writer: 0, Seq: 3, Entries: []Entry{entry("dev1/a", rollup.Tier1s, under)}})
	neg := bucket(s, [2]float64{float64(s + 2), -math.MaxFloat64}, [2]float64{float64(s + 3), -math.MaxFloat64})
	mustAppend(t, m, Batch{Writer: 0, Seq: 4, Entries: []Entry{entry("dev1/a", rollup.Tier1s, neg)}})
	sel = mustSelect(t, m, rollup.Tier1s, s, s+1000, "dev1/a")
	b := sel.Buckets[0][0]
	require.True(t, math.IsNaN(b.Sum), "sum %v", b.Sum)
	require.Equal(t, int64(4), b.Count)
	require.Equal(t, -math.MaxFloat64, b.Min)
	require.Equal(t, math.MaxFloat64, b.Max)
	require.Equal(t, 0.0, b.Mean())
}

// suiteLargeBatch: a flush of many series in one batch, larger than any
// statement's share.
func suiteLargeBatch(t *testing.T, open storeFactory) {
	m := open(t, Retention{}, 0)
	s := rollup.Floor(t0.UnixMilli(), 3_600_000)
	const n = 700
	names := make([]string, n)
	var entries []Entry
	for i := range n {
		names[i] = fmt.Sprintf("dev%03d/m", i)
		for _, tier := range rollup.Tiers {
			v := float64(i) + float64(tier)/10
			entries = append(entries, entry(names[i], tier, bucket(s, [2]float64{float64(s + int64(i)), v}, [2]float64{float64(s + 999), -v})))
		}
	}
	for seq := range uint64(2) {
		mustAppend(t, m, Batch{Writer: 3, Seq: seq + 1, Entries: entries})
	}
	for _, tier := range rollup.Tiers {
		sel := mustSelect(t, m, tier, s, s+3_600_000, names...)
		require.Equal(t, map[int]uint64{3: 2}, sel.Marks)
		for i := range n {
			v := float64(i) + float64(tier)/10
			want := bucket(s, [2]float64{float64(s + int64(i)), v}, [2]float64{float64(s + 999), -v},
				[2]float64{float64(s + int64(i)), v}, [2]float64{float64(s + 999), -v})
			require.Equal(t, []rollup.Bucket{want}, sel.Buckets[i], "series %d tier %s", i, tier)
		}
	}
}

func suiteWatermark(t *testing.T, open storeFactory) {
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
		{"a batch of empty buckets moves the mark", []Batch{
			{Writer: 0, Seq: 1, Entries: []Entry{entry("dev1/a", rollup.Tier1s, rollup.Bucket{StartMs: s})}}, one(1, 0),
		}, 0, map[int]uint64{0: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := open(t, Retention{}, 0)
			for _, b := range tc.batches {
				mustAppend(t, m, b)
			}
			sel := mustSelect(t, m, rollup.Tier1s, s, s+1000, "dev1/a")
			var n int64
			for _, b := range sel.Buckets[0] {
				n += b.Count
			}
			require.Equal(t, tc.wantCount, n)
			if n == 0 {
				require.Empty(t, sel.Buckets[0], "no empty buckets")
			}
			require.Equal(t, tc.wantMarks, sel.Marks)
		})
	}
}

func suiteSelect(t *testing.T, open storeFactory) {
	m := open(t, Retention{}, 0)
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
		{"reversed range", base + 6*60_000, base, []int64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sel := mustSelect(t, m, rollup.Tier1m, tc.from, tc.to, "dev1/a", "dev9/unknown", "dev2/b")
			require.Equal(t, tc.want, starts(sel.Buckets[0]))
			require.Empty(t, sel.Buckets[1], "unknown series")
			require.Equal(t, map[int]uint64{0: 2, 1: 1}, sel.Marks)
		})
	}
	t.Run("the same series twice", func(t *testing.T) {
		sel := mustSelect(t, m, rollup.Tier1m, base, base+2*60_000, "dev1/a", "dev1/a")
		require.Equal(t, []int64{0, 1}, starts(sel.Buckets[0]))
		require.Equal(t, sel.Buckets[0], sel.Buckets[1])
	})
	t.Run("no series", func(t *testing.T) {
		sel := mustSelect(t, m, rollup.Tier1m, base, base+2*60_000)
		require.Empty(t, sel.Buckets)
		require.Equal(t, map[int]uint64{0: 2, 1: 1}, sel.Marks)
	})
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

// suiteAllOrNothing: a batch that cannot be applied changes nothing, not
// even in part, so that its retry counts every entry once.
func suiteAllOrNothing(t *testing.T, open storeFactory) {
	m := open(t, Retention{}, 0)
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

	// A cancelled append applies nothing and leaves the mark.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Append(ctx, Batch{Writer: 0, Seq: 2, Entries: []Entry{good}}); err != nil {
		sel = mustSelect(t, m, rollup.Tier1s, s, s+1000, "dev1/a")
		require.Equal(t, int64(1), sel.Buckets[0][0].Count)
		require.Equal(t, uint64(1), sel.Marks[0])
	}
}

func suiteRetention(t *testing.T, open storeFactory) {
	ret := Retention{time.Hour, 48 * time.Hour, 90 * 24 * time.Hour}
	m := open(t, ret, 0)
	clock := m.Clock
	ctx := context.Background()
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
		return len(mustSelect(t, m, tier, 0, now+365*24*3_600_000, series).Buckets[0])
	}
	require.Equal(t, 1, count(rollup.Tier1s, "dev1/a"))
	require.Equal(t, 1, count(rollup.Tier1m, "dev1/a"))
	require.Equal(t, 1, count(rollup.Tier1s, "dev2/b"))
	require.Equal(t, map[int]uint64{0: 1}, mustSelect(t, m, rollup.Tier1s, 0, 1).Marks)

	// Prune drops buckets as they pass retention, tier by tier.
	require.NoError(t, m.Prune(ctx))
	require.Equal(t, 1, count(rollup.Tier1s, "dev1/a"), "nothing expired yet")
	clock.Advance(time.Second)
	require.NoError(t, m.Prune(ctx))
	require.Equal(t, 0, count(rollup.Tier1s, "dev1/a"))
	require.Equal(t, 1, count(rollup.Tier1m, "dev1/a"), "the 1m tier keeps it for 48 h")
	require.Equal(t, 1, count(rollup.Tier1s, "dev2/b"))
	clock.Advance(48 * time.Hour)
	require.NoError(t, m.Prune(ctx))
	require.Equal(t, 0, count(rollup.Tier1m, "dev1/a"))
	require.Equal(t, 0, count(rollup.Tier1s, "dev2/b"))
	require.Equal(t, map[int]uint64{0: 1}, mustSelect(t, m, rollup.Tier1s, 0, 1).Marks, "prune leaves marks")

	// Buckets keep merging after a prune.
	s := floor(clock.Now().UnixMilli(), 1000)
	mustAppend(t, m, Batch{Writer: 0, Seq: 2, Entries: []Entry{entry("dev1/a", rollup.Tier1s, bucket(s, [2]float64{float64(s), 1}))}})
	mustAppend(t, m, Batch{Writer: 0, Seq: 3, Entries: []Entry{entry("dev1/a", rollup.Tier1s, bucket(s, [2]float64{float64(s + 1), 1}))}})
	sel := mustSelect(t, m, rollup.Tier1s, s, s+1000, "dev1/a")
	require.Equal(t, int64(2), sel.Buckets[0][0].Count)

	// The 1h tier: many buckets expire in one prune, the rest stay.
	h := floor(clock.Now().UnixMilli(), 3_600_000)
	var entries []Entry
	for i := range int64(100) {
		entries = append(entries, entry("dev3/c", rollup.Tier1h, bucket(h-i*3_600_000, [2]float64{float64(h - i*3_600_000), float64(i)})))
	}
	mustAppend(t, m, Batch{Writer: 0, Seq: 4, Entries: entries})
	require.Equal(t, 100, count(rollup.Tier1h, "dev3/c"))
	// Move to where the cut (now - 90 days) is h-9h: the buckets that
	// start after h-10h, 10 of them, are left.
	cut := time.UnixMilli(h - 9*3_600_000).Add(90 * 24 * time.Hour)
	clock.Advance(cut.Sub(clock.Now()))
	require.NoError(t, m.Prune(ctx))
	require.Equal(t, 10, count(rollup.Tier1h, "dev3/c"))
}

func suiteRunPrunes(t *testing.T, open storeFactory) {
	m := open(t, Retention{time.Minute}, 10*time.Second)
	clock := m.Clock
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

// suiteConcurrent: writers append while readers select; every selection
// must hold exactly the batches its marks say were applied, the property
// the query side's exactly-once merge rests on (dashboard.Querier).
func suiteConcurrent(t *testing.T, open storeFactory) {
	m := open(t, Retention{}, 0)
	const (
		writers = 4
		batches = 60
		readers = 3
	)
	base := rollup.Floor(t0.UnixMilli(), 3_600_000)
	series := make([]string, writers)
	for w := range writers {
		series[w] = fmt.Sprintf("dev%d/x", w)
	}
	ctx := context.Background()
	errs := make(chan error, writers+readers)
	var wg, wwg sync.WaitGroup
	stop := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		wwg.Add(1)
		go func() {
			defer wg.Done()
			defer wwg.Done()
			for k := 1; k <= batches; k++ {
				// Batch k adds bucket k of the writer's series, plus a
				// reading to the 1h bucket shared by everyone.
				start := base + int64(k)*1000
				b := Batch{Writer: w, Seq: uint64(k), Entries: []Entry{
					entry(series[w], rollup.Tier1s, bucket(start, [2]float64{float64(start), float64(k)})),
					entry("shared/h", rollup.Tier1h, bucket(base, [2]float64{float64(start), float64(w)})),
				}}
				if err := m.Append(ctx, b); err != nil {
					errs <- fmt.Errorf("writer %d batch %d: %w", w, k, err)
					return
				}
			}
		}()
	}
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				sel, err := m.Select(ctx, series, rollup.Tier1s, base, base+3_600_000)
				if err != nil {
					errs <- err
					return
				}
				var total uint64
				for w := range writers {
					mark := sel.Marks[w]
					total += mark
					if got := uint64(len(sel.Buckets[w])); got != mark {
						errs <- fmt.Errorf("writer %d: %d buckets with mark %d", w, got, mark)
						return
					}
				}
				sel, err = m.Select(ctx, []string{"shared/h"}, rollup.Tier1h, base, base+3_600_000)
				if err != nil {
					errs <- err
					return
				}
				var n uint64
				total = 0
				for _, mark := range sel.Marks {
					total += mark
				}
				for _, b := range sel.Buckets[0] {
					n += uint64(b.Count)
				}
				if n != total {
					errs <- fmt.Errorf("shared bucket holds %d readings, marks say %d", n, total)
					return
				}
			}
		}()
	}
	wwg.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	sel := mustSelect(t, m, rollup.Tier1h, base, base+3_600_000, "shared/h")
	require.Equal(t, int64(writers*batches), sel.Buckets[0][0].Count)
	want := map[int]uint64{}
	for w := range writers {
		want[w] = batches
	}
	require.Equal(t, want, sel.Marks)
}

func suiteClose(t *testing.T, open storeFactory) {
	m := open(t, Retention{}, 0)
	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "idempotent")
	require.ErrorIs(t, m.Append(context.Background(), Batch{Seq: 1}), ErrClosed)
	_, err := m.Select(context.Background(), []string{"dev1/a"}, rollup.Tier1s, 0, 1)
	require.ErrorIs(t, err, ErrClosed)
	if err := m.Prune(context.Background()); err != nil {
		require.ErrorIs(t, err, ErrClosed)
	}
	// Run on a closed store stops by itself or with its context.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer bcancel()
	require.NoError(t, m.Clock.BlockUntilContext(bctx, 1))
	m.Clock.Advance(time.Hour)
	cancel()
	require.NoError(t, <-done)
}
