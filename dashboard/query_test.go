package dashboard

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest"
	"github.com/telegauge/telegauge/ingest/store"
)

// queryEnv is a real aggregator flushing into a real memory store, and a
// Querier over both.
type queryEnv struct {
	agg      *ingest.Aggregator
	mem      *store.Memory
	q        *Querier
	clock    *clockwork.FakeClock
	offered  atomic.Int64
	accepted atomic.Int64
}

// longRetention keeps every tier long enough that no test reading expires.
var longRetention = store.Retention{30 * 24 * time.Hour, 60 * 24 * time.Hour, 400 * 24 * time.Hour}

// newTestQuerier returns a running aggregator (two shards) and a Querier on
// a fake clock at t0.
func newTestQuerier(t testing.TB, cfg QueryConfig) *queryEnv {
	t.Helper()
	e := &queryEnv{clock: clockwork.NewFakeClockAt(t0)}
	mem, err := store.NewMemory(store.MemoryConfig{Clock: e.clock, Retention: longRetention}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, mem.Close()) })
	e.mem = mem
	var drainMu sync.Mutex // DrainReadings may be called from several publishers
	var live []ingest.Reading
	e.agg, err = ingest.New(ingest.Config{
		Shards: 2,
		Store:  mem,
		Clock:  e.clock,
		Notify: func() {
			drainMu.Lock()
			defer drainMu.Unlock()
			live, _ = e.agg.DrainReadings(live[:0])
			e.accepted.Add(int64(len(live)))
		},
	}, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.agg.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	cfg.Source, cfg.History, cfg.Clock = e.agg, mem, e.clock
	e.q, err = NewQuerier(cfg, nil)
	require.NoError(t, err)
	return e
}

// offer hands the aggregator readings as devices would send them.
func (e *queryEnv) offer(t testing.TB, rs ...ingest.Reading) {
	t.Helper()
	for _, r := range rs {
		payload := `{"ts":` + strconv.FormatInt(r.TimeMs, 10) + `,"value":` + strconv.FormatFloat(r.Value, 'g', -1, 64) + `}`
		e.offered.Add(1)
		require.True(t, e.agg.Offer("telemetry/"+r.Series, []byte(payload), e.clock.Now()), "offer %v", r)
	}
}

// settle waits until every offered reading has been accepted (it is then in
// the aggregator's pending buckets, not yet flushed).
func (e *queryEnv) settle(t testing.TB) {
	t.Helper()
	eventually(t, 5*time.Second, func() error {
		if a, o := e.accepted.Load(), e.offered.Load(); a != o {
			return fmt.Errorf("accepted %d of %d", a, o)
		}
		return nil
	})
}

// flush writes everything offered so far to the store.
func (e *queryEnv) flush(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, e.agg.Flush(ctx))
	e.settle(t)
}

func (e *queryEnv) query(t testing.TB, req QueryRequest) []SeriesData {
	t.Helper()
	out, err := e.q.Query(context.Background(), req)
	require.NoError(t, err)
	require.Len(t, out, len(req.Series))
	return out
}

// expect is the reference answer for one series, computed naively from
// the readings: buckets of stepMs whose start is in [fromMs, toMs).
func expect(rs []ingest.Reading, series string, stepMs, fromMs, toMs int64) SeriesData {
	type acc struct {
		n          int64
		sum        float64
		lo, hi     float64
		lastT      int64
		last       float64
		firstFound bool
	}
	groups := map[int64]*acc{}
	for _, r := range rs {
		if r.Series != series {
			continue
		}
		start := r.TimeMs - ((r.TimeMs%stepMs)+stepMs)%stepMs
		if start < fromMs || start >= toMs {
			continue
		}
		a := groups[start]
		if a == nil {
			a = &acc{lo: math.Inf(1), hi: math.Inf(-1), lastT: math.MinInt64}
			groups[start] = a
		}
		a.n++
		a.sum += r.Value
		a.lo, a.hi = min(a.lo, r.Value), max(a.hi, r.Value)
		if r.TimeMs > a.lastT || r.TimeMs == a.lastT && r.Value > a.last {
			a.lastT, a.last = r.TimeMs, r.Value
		}
	}
	d := SeriesData{ID: series, StepMs: stepMs, T: []int64{}, Min: []float64{}, Max: []float64{}, Avg: []float64{}, Count: []int64{}, Last: []float64{}}
	starts := make([]int64, 0, len(groups))
	for s := range groups {
		starts = append(starts, s)
	}
	slices.Sort(starts)
	for _, s := range starts {
		a := groups[s]
		d.T = append(d.T, s)
		d.Min = append(d.Min, a.lo)
		d.Max = append(d.Max, a.hi)
		d.Avg = append(d.Avg, a.sum/float64(a.n))
		d.Count = append(d.Count, a.n)
		d.Last = append(d.Last, a.last)
	}
	return d
}

func requireSeriesData(t testing.TB, want, got SeriesData) {
	t.Helper()
	require.Equal(t, want.ID, got.ID)
	require.Equal(t, want.StepMs, got.StepMs)
	require.Equal(t, want.T, got.T)
	require.Equal(t, want.Count, got.Count)
	require.Equal(t, want.Min, got.Min)
	require.Equal(t, want.Max, got.Max)
	require.Equal(t, want.Last, got.Last)
	require.InDeltaSlice(t, want.Avg, got.Avg, 1e-9)
}

// TestQueryLateAndOutOfOrder checks one hand-computed case: readings that
// arrive after their bucket was flushed, and out of order, land in the
// right bucket and are merged exactly with what is stored; the open
// (unflushed) buckets are included.
func TestQueryLateAndOutOfOrder(t *testing.T) {
	e := newTestQuerier(t, QueryConfig{})
	base := t0.UnixMilli() - t0.UnixMilli()%60_000 - 5*60_000 // a minute start
	const s = "dev1/temperature"
	e.offer(t, rd(s, base+100, 1), rd(s, base+900, 5), rd(s, base+1500, 2), rd(s, base+61_000, 10))
	e.flush(t)
	e.offer(t, rd(s, base+500, 7), rd(s, base+50, -3)) // late, into stored buckets
	e.flush(t)
	e.offer(t, rd(s, base+950, 4), rd(s, base+60_500, 6)) // open buckets
	e.settle(t)

	for _, tc := range []struct {
		name string
		step int64
		want SeriesData
	}{
		{"1s", 1000, SeriesData{ID: s, StepMs: 1000,
			T:     []int64{base, base + 1000, base + 60_000, base + 61_000},
			Min:   []float64{-3, 2, 6, 10},
			Max:   []float64{7, 2, 6, 10},
			Avg:   []float64{14.0 / 5, 2, 6, 10},
			Count: []int64{5, 1, 1, 1},
			Last:  []float64{4, 2, 6, 10}}},
		{"1m", 60_000, SeriesData{ID: s, StepMs: 60_000,
			T:     []int64{base, base + 60_000},
			Min:   []float64{-3, 6},
			Max:   []float64{7, 10},
			Avg:   []float64{16.0 / 6, 8},
			Count: []int64{6, 2},
			Last:  []float64{2, 10}}},
		{"1h", 3_600_000, SeriesData{ID: s, StepMs: 3_600_000,
			T:     []int64{base - base%3_600_000},
			Min:   []float64{-3},
			Max:   []float64{10},
			Avg:   []float64{32.0 / 8},
			Count: []int64{8},
			Last:  []float64{10}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := e.query(t, QueryRequest{Series: []string{s}, FromMs: base - 2*3_600_000, ToMs: base + 3_600_000, StepMs: tc.step, MaxPoints: 20_000})
			requireSeriesData(t, tc.want, got[0])
		})
	}
}

// testReadings returns deterministic readings of two series: dense (2-3 a
// second) over the last ten minutes before t0, sparse over the three hours
// before that. Values are multiples of 1/4, so sums are exact.
func testReadings() []ingest.Reading {
	rng := rand.New(rand.NewPCG(1, 2))
	var rs []ingest.Reading
	series := []string{"dev1/temperature", "dev2/humidity"}
	end := t0.UnixMilli()
	for i := range 1500 {
		tm := end - 10*60_000 + int64(i)*400 + rng.Int64N(400)
		rs = append(rs, rd(series[i%2], tm, float64(rng.IntN(400)-200)/4))
	}
	for i := range 300 {
		tm := end - 3*3_600_000 - 10*60_000 + int64(i)*36_000 + rng.Int64N(36_000)
		rs = append(rs, rd(series[i%2], tm, float64(rng.IntN(400)-200)/4))
	}
	return rs
}

// offerShuffled offers rs in a random order in chunks, flushing after most
// chunks, so that many readings arrive late for buckets already stored;
// the last chunk stays unflushed.
func offerShuffled(t testing.TB, e *queryEnv, rs []ingest.Reading) {
	t.Helper()
	rs = slices.Clone(rs)
	rng := rand.New(rand.NewPCG(3, 4))
	rng.Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
	for chunk := range slices.Chunk(rs, 100) {
		e.offer(t, chunk...)
		e.flush(t)
	}
	e.offer(t, rd("dev1/temperature", t0.UnixMilli()-1, 99.5)) // open bucket
	e.settle(t)
}

func TestQueryStepsMatchReference(t *testing.T) {
	e := newTestQuerier(t, QueryConfig{})
	rs := testReadings()
	offerShuffled(t, e, rs)
	rs = append(rs, rd("dev1/temperature", t0.UnixMilli()-1, 99.5))
	from, to := t0.UnixMilli()-4*3_600_000, t0.UnixMilli()+60_000
	for _, tc := range []struct {
		name   string
		stepMs int64
	}{
		{"1s", 1000},
		{"15s from the 1s tier", 15_000},
		{"90s from the 1s tier", 90_000},
		{"1m", 60_000},
		{"5m from the 1m tier", 5 * 60_000},
		{"7m from the 1m tier", 7 * 60_000},
		{"1h", 3_600_000},
		{"2h from the 1h tier", 2 * 3_600_000},
		{"3h from the 1h tier", 3 * 3_600_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := e.query(t, QueryRequest{Series: []string{"dev1/temperature", "dev2/humidity"}, FromMs: from, ToMs: to, StepMs: tc.stepMs, MaxPoints: 20_000})
			for i, id := range []string{"dev1/temperature", "dev2/humidity"} {
				want := expect(rs, id, tc.stepMs, from, to)
				require.NotEmpty(t, want.T)
				requireSeriesData(t, want, got[i])
			}
		})
	}
}

func TestQueryStepCoarsensToMaxPoints(t *testing.T) {
	e := newTestQuerier(t, QueryConfig{})
	const s = "dev1/a"
	var rs []ingest.Reading
	for i := range 3 * 360 { // one every 10 s for three hours
		rs = append(rs, rd(s, t0.UnixMilli()-3*3_600_000+int64(i)*10_000, float64(i%17)))
	}
	e.offer(t, rs...)
	e.flush(t)
	for _, tc := range []struct {
		name      string
		span      time.Duration
		stepMs    int64
		maxPoints int
		want      int64
	}{
		{"1s over an hour, 100 points: 36s", time.Hour, 1000, 100, 36_000},
		{"1m over three hours, 7 points: 26m", 3 * time.Hour, 60_000, 7, 26 * 60_000},
		{"1m over three hours, 180 points: unchanged", 3 * time.Hour, 60_000, 180, 60_000},
		{"90s over three hours, 60 points: 180s", 3 * time.Hour, 90_000, 60, 180_000},
		{"1h over an hour, 1 point: unchanged", time.Hour, 3_600_000, 1, 3_600_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from := t0.UnixMilli() - tc.span.Milliseconds()
			got := e.query(t, QueryRequest{Series: []string{s}, FromMs: from, ToMs: t0.UnixMilli(), StepMs: tc.stepMs, MaxPoints: tc.maxPoints})[0]
			require.Equal(t, tc.want, got.StepMs)
			require.LessOrEqual(t, len(got.T), tc.maxPoints)
			requireSeriesData(t, expect(rs, s, tc.want, from, t0.UnixMilli()), got)
		})
	}
}

func TestQueryAutoStep(t *testing.T) {
	day := 24 * time.Hour
	ret := store.Retention{time.Hour, 48 * time.Hour, 90 * day}
	for _, tc := range []struct {
		name      string
		retention store.Retention
		ago       time.Duration // from = now - ago, to = now
		maxPoints int
		want      time.Duration
	}{
		{"short range: 1s", ret, 10 * time.Minute, 20_000, time.Second},
		{"default cap: the next nice step", ret, 30 * time.Minute, 0, 2 * time.Second},
		{"cap of 100 over an hour: 36s rounds to 1m", ret, 59 * time.Minute, 100, time.Minute},
		{"1s tier expired: 1m", ret, 2 * time.Hour, 20_000, time.Minute},
		{"1m tier expired: 1h", ret, 3 * day, 20_000, time.Hour},
		{"beyond every tier: 1h", ret, 400 * day, 20_000, time.Hour},
		{"kept forever: 1s", store.Retention{}, 2 * time.Hour, 20_000, time.Second},
		{"30 days in 10 points: a week", store.Retention{}, 30 * day, 10, 7 * day},
		{"a year in 10 points: whole days", store.Retention{}, 365 * day, 10, 37 * day},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestQuerier(t, QueryConfig{Retention: tc.retention})
			e.offer(t, rd("dev1/a", t0.UnixMilli()-1000, 1))
			e.settle(t)
			now := e.clock.Now().UnixMilli()
			got := e.query(t, QueryRequest{Series: []string{"dev1/a"}, FromMs: now - tc.ago.Milliseconds(), ToMs: now, MaxPoints: tc.maxPoints})[0]
			require.Equal(t, tc.want.Milliseconds(), got.StepMs)
			if tc.want <= time.Hour {
				require.Equal(t, []int64{1}, got.Count)
			}
		})
	}
}

func TestQueryRangeBounds(t *testing.T) {
	e := newTestQuerier(t, QueryConfig{})
	const s = "dev1/a"
	base := t0.UnixMilli() - t0.UnixMilli()%60_000 - 10*60_000
	for i := range 4 {
		e.offer(t, rd(s, base+int64(i)*60_000, float64(i)), rd(s, base+int64(i)*60_000+59_999, float64(i)))
	}
	e.offer(t, rd(s, base+8*60_000, 8)) // after an empty stretch
	e.flush(t)
	for _, tc := range []struct {
		name     string
		from, to int64
		want     []int64 // bucket starts, relative to base
	}{
		{"aligned: from inclusive, to exclusive", base, base + 3*60_000, []int64{0, 60_000, 120_000}},
		{"unaligned from: first whole bucket after it", base + 1, base + 3*60_000 + 1, []int64{60_000, 120_000, 180_000}},
		{"one bucket", base + 60_000, base + 60_001, []int64{60_000}},
		{"inside one bucket, not at its start: nothing", base + 30_000, base + 59_999, []int64{}},
		{"empty buckets are omitted", base, base + 10*60_000, []int64{0, 60_000, 120_000, 180_000, 480_000}},
		{"before any data", base - 3_600_000, base, []int64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := e.query(t, QueryRequest{Series: []string{s}, FromMs: tc.from, ToMs: tc.to, StepMs: 60_000})[0]
			rel := []int64{}
			for _, tm := range got.T {
				rel = append(rel, tm-base)
			}
			require.Equal(t, tc.want, rel)
			require.Len(t, got.Count, len(tc.want))
			for _, n := range got.Count {
				require.Positive(t, n)
			}
		})
	}
}

func TestQueryRaw(t *testing.T) {
	e := newTestQuerier(t, QueryConfig{})
	const s = "dev1/a"
	ms := t0.UnixMilli()
	e.offer(t, rd(s, ms-500, 5), rd(s, ms-100, 1), rd(s, ms-300, 3), rd(s, ms-200, 2), rd(s, ms-400, 4))
	e.settle(t)
	for _, tc := range []struct {
		name      string
		from, to  int64
		maxPoints int
		want      []float64 // values, sorted by time
	}{
		{"all, by time", ms - 1000, ms, 0, []float64{5, 4, 3, 2, 1}},
		{"from inclusive, to exclusive", ms - 400, ms - 100, 0, []float64{4, 3, 2}},
		{"capped: the latest", ms - 1000, ms, 2, []float64{2, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := e.query(t, QueryRequest{Series: []string{s}, FromMs: tc.from, ToMs: tc.to, Raw: true, MaxPoints: tc.maxPoints})[0]
			require.Equal(t, int64(0), got.StepMs)
			require.Equal(t, tc.want, got.Last)
			require.Equal(t, tc.want, got.Min)
			require.Equal(t, tc.want, got.Max)
			require.Equal(t, tc.want, got.Avg)
			require.Len(t, got.T, len(tc.want))
			require.True(t, slices.IsSorted(got.T))
			for _, n := range got.Count {
				require.Equal(t, int64(1), n)
			}
		})
	}
}

func TestQueryErrors(t *testing.T) {
	e := newTestQuerier(t, QueryConfig{MaxSeries: 2, MaxPoints: 1000})
	e.offer(t, rd("dev1/a", t0.UnixMilli()-1000, 1))
	e.settle(t)
	from, to := t0.UnixMilli()-3_600_000, t0.UnixMilli()
	for _, tc := range []struct {
		name string
		req  QueryRequest
		want Code
	}{
		{"no series", QueryRequest{FromMs: from, ToMs: to}, CodeInvalid},
		{"too many series", QueryRequest{Series: []string{"dev1/a", "dev1/b", "dev1/c"}, FromMs: from, ToMs: to}, CodeInvalid},
		{"series without a metric", QueryRequest{Series: []string{"dev1"}, FromMs: from, ToMs: to}, CodeInvalid},
		{"series with a wildcard", QueryRequest{Series: []string{"dev1/#"}, FromMs: from, ToMs: to}, CodeInvalid},
		{"series with a space", QueryRequest{Series: []string{"dev 1/a"}, FromMs: from, ToMs: to}, CodeInvalid},
		{"empty range", QueryRequest{Series: []string{"dev1/a"}, FromMs: to, ToMs: to}, CodeInvalid},
		{"reversed range", QueryRequest{Series: []string{"dev1/a"}, FromMs: to, ToMs: from}, CodeInvalid},
		{"negative maxPoints", QueryRequest{Series: []string{"dev1/a"}, FromMs: from, ToMs: to, MaxPoints: -1}, CodeInvalid},
		{"maxPoints over the limit", QueryRequest{Series: []string{"dev1/a"}, FromMs: from, ToMs: to, MaxPoints: 1001}, CodeInvalid},
		{"step not a multiple of 1s", QueryRequest{Series: []string{"dev1/a"}, FromMs: from, ToMs: to, StepMs: 1500}, CodeInvalid},
		{"negative step", QueryRequest{Series: []string{"dev1/a"}, FromMs: from, ToMs: to, StepMs: -60_000}, CodeInvalid},
		{"unknown series", QueryRequest{Series: []string{"dev1/a", "dev9/none"}, FromMs: from, ToMs: to}, CodeNotFound},
		{"unknown series, raw", QueryRequest{Series: []string{"dev9/none"}, FromMs: from, ToMs: to, Raw: true}, CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.q.Query(context.Background(), tc.req)
			require.Error(t, err)
			require.Equal(t, tc.want, ErrorCode(err), "%v", err)
		})
	}

	// A known series with nothing in range is no error.
	got := e.query(t, QueryRequest{Series: []string{"dev1/a"}, FromMs: from - 3_600_000, ToMs: from})
	require.Empty(t, got[0].T)
	require.NotNil(t, got[0].T, "empty columns encode as [] rather than null")
}

func TestNewQuerierValidates(t *testing.T) {
	_, err := NewQuerier(QueryConfig{}, nil)
	require.Error(t, err)
}

// TestQueryExactlyOnceWhileFlushing races queries against flushes: a query
// must count every accepted reading exactly once, whether it is pending in
// the aggregator, in flight to the store, or stored.
func TestQueryExactlyOnceWhileFlushing(t *testing.T) {
	e := newTestQuerier(t, QueryConfig{})
	var series []string
	for d := range 8 {
		for m := range 2 {
			series = append(series, fmt.Sprintf("dev%d/m%d", d, m))
		}
	}
	next := 0
	burst := func(n int) {
		for range n {
			i := next
			next++
			// Spread over ten minutes, revisiting buckets already stored.
			tm := t0.UnixMilli() - 10*60_000 + int64(i*7919%600_000)
			e.offer(t, rd(series[i%len(series)], tm, 1))
		}
	}
	burst(len(series)) // every series known before queries start
	e.settle(t)

	// settled is set while every offered reading is accepted and no more
	// are offered: queries that start and end inside that window must see
	// exactly that many.
	type window struct{ total int64 }
	var settled atomic.Pointer[window]
	stop := make(chan struct{})
	errs := make(chan error, 8)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	var wg sync.WaitGroup
	ctx := context.Background()
	wg.Go(func() { // a flusher besides the one in each round
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := e.agg.Flush(ctx); err != nil {
				report(err)
				return
			}
		}
	})
	check := func(n int, steps int64) error {
		w1 := settled.Load()
		lo := e.accepted.Load()
		out, err := e.q.Query(ctx, QueryRequest{
			Series: series, FromMs: t0.UnixMilli() - 15*60_000, ToMs: t0.UnixMilli() + 60_000,
			StepMs: steps, MaxPoints: 20_000,
		})
		hi := e.offered.Load()
		w2 := settled.Load()
		if err != nil {
			return err
		}
		var total int64
		for _, d := range out {
			for _, c := range d.Count {
				total += c
			}
		}
		switch {
		case total < lo:
			return fmt.Errorf("query %d missed readings: %d counted, %d accepted before it began", n, total, lo)
		case total > hi:
			return fmt.Errorf("query %d double-counted: %d counted, only %d offered", n, total, hi)
		case w1 != nil && w1 == w2 && total != w1.total:
			return fmt.Errorf("query %d in a quiet window counted %d, want exactly %d", n, total, w1.total)
		}
		return nil
	}
	steps := []int64{1000, 60_000, 3_600_000}
	for qi := range 2 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := check(n, steps[(n+qi)%len(steps)]); err != nil {
					report(err)
					return
				}
			}
		})
	}
	for round := range 60 {
		settled.Store(nil)
		burst(37)
		e.settle(t)
		settled.Store(&window{total: e.offered.Load()})
		// Flush while this goroutine, too, queries: the quiet window then
		// always holds queries racing a flush of pending buckets.
		flushed := make(chan error, 1)
		go func() { flushed <- e.agg.Flush(ctx) }()
		for i := range 3 {
			require.NoError(t, check(round, steps[i]))
		}
		require.NoError(t, <-flushed)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	out := e.query(t, QueryRequest{Series: series, FromMs: t0.UnixMilli() - 3_600_000, ToMs: t0.UnixMilli(), StepMs: 3_600_000})
	var total int64
	for _, d := range out {
		for _, c := range d.Count {
			total += c
		}
	}
	require.Equal(t, e.offered.Load(), total)
}

func TestParseTime(t *testing.T) {
	now := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		in   string
		want int64
	}{
		{"unix ms", "1700000000123", 1_700_000_000_123},
		{"unix ms zero", "0", 0},
		{"rfc 3339", "2023-11-14T22:13:20Z", 1_700_000_000_000},
		{"rfc 3339 with offset", "2023-11-14T23:13:20+01:00", 1_700_000_000_000},
		{"rfc 3339 with fraction", "2023-11-14T22:13:20.123Z", 1_700_000_000_123},
		{"now", "now", now.UnixMilli()},
		{"empty is now", "", now.UnixMilli()},
		{"spaces trimmed", " -1h ", now.Add(-time.Hour).UnixMilli()},
		{"an hour ago", "-1h", now.Add(-time.Hour).UnixMilli()},
		{"thirty minutes ago", "-30m", now.Add(-30 * time.Minute).UnixMilli()},
		{"a week ago in days", "-7d", now.Add(-7 * 24 * time.Hour).UnixMilli()},
		{"two weeks ago", "-2w", now.Add(-14 * 24 * time.Hour).UnixMilli()},
		{"seconds ago", "-90", now.Add(-90 * time.Second).UnixMilli()},
		{"ahead", "+5m", now.Add(5 * time.Minute).UnixMilli()},
		{"compound", "-1h30m", now.Add(-90 * time.Minute).UnixMilli()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTime(tc.in, now)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	for _, bad := range []string{"yesterday", "-", "-x", "-1y", "-1.5d", "2023-11-14", "2023-11-14 22:13:20", "1e3", "-NaN", "+Inf", "-1e12", "12:00"} {
		t.Run("invalid "+bad, func(t *testing.T) {
			_, err := ParseTime(bad, now)
			require.Error(t, err)
			require.Equal(t, CodeInvalid, ErrorCode(err))
		})
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want time.Duration
	}{
		{"go duration", "1h30m", 90 * time.Minute},
		{"milliseconds", "250ms", 250 * time.Millisecond},
		{"seconds as a number", "25", 25 * time.Second},
		{"fractional seconds", "1.5", 1500 * time.Millisecond},
		{"zero", "0", 0},
		{"days", "7d", 7 * 24 * time.Hour},
		{"weeks", "2w", 14 * 24 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDuration(tc.in)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	for _, bad := range []string{"", "abc", "-1", "1e10", "NaN", "nan", "Inf", "-Inf", "1.5d", "d", "-2d", "99999w", "1y"} {
		t.Run("invalid "+bad, func(t *testing.T) {
			_, err := ParseDuration(bad)
			require.Error(t, err)
		})
	}
}

func TestParseStep(t *testing.T) {
	for _, tc := range []struct {
		in     string
		stepMs int64
		raw    bool
	}{
		{"", 0, false},
		{"auto", 0, false},
		{"raw", 0, true},
		{"1s", 1000, false},
		{"90s", 90_000, false},
		{"1m", 60_000, false},
		{"5m", 300_000, false},
		{"1h", 3_600_000, false},
		{"1d", 86_400_000, false},
		{"60", 60_000, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			stepMs, raw, err := ParseStep(tc.in)
			require.NoError(t, err)
			require.Equal(t, tc.stepMs, stepMs)
			require.Equal(t, tc.raw, raw)
		})
	}
	for _, bad := range []string{"0s", "0", "1500ms", "1.5", "-1m", "abc", "NaN", "AUTO"} {
		t.Run("invalid "+bad, func(t *testing.T) {
			_, _, err := ParseStep(bad)
			require.Equal(t, CodeInvalid, ErrorCode(err))
		})
	}
}
