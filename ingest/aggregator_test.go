package ingest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest/rollup"
	"github.com/telegauge/telegauge/ingest/store"
	"github.com/telegauge/telegauge/internal/testutil"
)

// aggT0 is the aggregator tests' fake clock start, a whole second:
// 2023-11-14T22:13:20Z.
var aggT0 = time.UnixMilli(1_700_000_000_000)

// eventually polls check until it holds or the test fails.
var eventually = testutil.Eventually

// testAggregator is a real Aggregator over a real memory store on a fake
// clock, taking the live readings it announces with Notify, as the hub does.
type testAggregator struct {
	*Aggregator
	mem   *store.Memory
	clock *clockwork.FakeClock

	mu       sync.Mutex
	got      []Reading // every reading taken with DrainReadings
	accepted atomic.Int64

	cancel  context.CancelFunc
	runDone chan error
}

// newIdleAggregator returns an aggregator that is not running yet (start
// runs it). cfg.Store defaults to a memory store with a long retention.
func newIdleAggregator(t testing.TB, cfg Config) *testAggregator {
	t.Helper()
	ta := &testAggregator{clock: clockwork.NewFakeClockAt(aggT0)}
	mem, err := store.NewMemory(store.MemoryConfig{
		Clock:     ta.clock,
		Retention: store.Retention{30 * 24 * time.Hour, 60 * 24 * time.Hour, 400 * 24 * time.Hour},
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, mem.Close()) })
	ta.mem = mem
	if cfg.Store == nil {
		cfg.Store = mem
	}
	cfg.Clock = ta.clock
	cfg.Notify = func() {
		ta.mu.Lock()
		defer ta.mu.Unlock()
		n := len(ta.got)
		ta.got, _ = ta.DrainReadings(ta.got)
		ta.accepted.Add(int64(len(ta.got) - n))
	}
	ta.Aggregator, err = New(cfg, nil)
	require.NoError(t, err)
	return ta
}

// newTestAggregator returns a running aggregator; cleanup stops it.
func newTestAggregator(t testing.TB, cfg Config) *testAggregator {
	t.Helper()
	ta := newIdleAggregator(t, cfg)
	ta.start(t)
	return ta
}

func (ta *testAggregator) start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ta.cancel = cancel
	ta.runDone = make(chan error, 1)
	go func() { ta.runDone <- ta.Run(ctx) }()
	t.Cleanup(func() { ta.stop(t) })
}

// stop cancels Run and waits for it; it is idempotent.
func (ta *testAggregator) stop(t testing.TB) {
	t.Helper()
	if ta.cancel == nil {
		return
	}
	ta.cancel()
	ta.cancel = nil
	require.NoError(t, <-ta.runDone)
}

func (ta *testAggregator) offer(t testing.TB, topic, payload string) {
	t.Helper()
	require.True(t, ta.Offer(topic, []byte(payload), ta.clock.Now()), "offer %s %s", topic, payload)
}

// offerReading publishes r on its series' own topic.
func (ta *testAggregator) offerReading(t testing.TB, r Reading) {
	t.Helper()
	ta.offer(t, "telemetry/"+r.Series, valuePayload(r.TimeMs, r.Value))
}

func valuePayload(tMs int64, v float64) string {
	return `{"ts":` + strconv.FormatInt(tMs, 10) + `,"value":` + strconv.FormatFloat(v, 'g', -1, 64) + `}`
}

// flush writes everything pending to the store.
func (ta *testAggregator) flush(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, ta.Flush(ctx))
}

func (ta *testAggregator) readings() []Reading {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return append([]Reading(nil), ta.got...)
}

func (ta *testAggregator) device(t testing.TB, id string) DeviceInfo {
	t.Helper()
	for _, d := range ta.Devices() {
		if d.ID == id {
			return d
		}
	}
	t.Fatalf("device %q not listed", id)
	return DeviceInfo{}
}

// countOnce counts a series' readings in [fromMs, toMs) at a tier the way a
// query must: the unflushed buckets first, then the store, adding the
// unflushed ones the store's watermark says it does not have.
func countOnce(ctx context.Context, a *Aggregator, st store.Store, series string, tier rollup.Tier, fromMs, toMs int64) (int64, error) {
	u := a.Unflushed(series, tier, fromMs, toMs)
	sel, err := st.Select(ctx, []string{series}, tier, fromMs, toMs)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, b := range sel.Buckets[0] {
		n += b.Count
	}
	for _, ub := range u.Buckets {
		if ub.Seq > sel.Marks[u.Writer] {
			n += ub.Count
		}
	}
	return n, nil
}

func TestNewValidates(t *testing.T) {
	mem, err := store.NewMemory(store.MemoryConfig{}, nil)
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no store", Config{}},
		{"prefix with a slash", Config{Store: mem, Decode: DecodeConfig{Prefix: "a/b"}}},
		{"prefix with a wildcard", Config{Store: mem, Decode: DecodeConfig{Prefix: "tele#"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(tc.cfg, nil)
			require.Error(t, err)
			require.Nil(t, a)
		})
	}
	a, err := New(Config{Store: mem, Decode: DecodeConfig{Prefix: "sensors"}}, nil)
	require.NoError(t, err)
	require.Equal(t, "sensors", a.Prefix())
}

func TestAggregatorFlushesBucketsToStore(t *testing.T) {
	ta := newTestAggregator(t, Config{Shards: 2})
	ctx := context.Background()
	ms := aggT0.UnixMilli()
	base := ms - ms%3_600_000 // an hour start
	rs := []Reading{
		{"dev1/t", base + 100, 1}, {"dev1/t", base + 900, 5}, {"dev1/t", base + 1500, 2},
		{"dev1/t", base + 61_000, 10}, {"dev2/h", base + 5, 7},
	}
	for _, r := range rs {
		ta.offerReading(t, r)
	}
	eventually(t, 5*time.Second, func() error {
		if n := ta.accepted.Load(); n != int64(len(rs)) {
			return fmt.Errorf("accepted %d", n)
		}
		return nil
	})

	// Before a flush the buckets are pending, to go out in batch 1.
	u := ta.Unflushed("dev1/t", rollup.Tier1s, base, base+3_600_000)
	require.Len(t, u.Buckets, 3)
	for _, b := range u.Buckets {
		require.Equal(t, uint64(1), b.Seq)
	}
	require.True(t, ta.HasSeries("dev1/t"))
	require.False(t, ta.HasSeries("dev1/nope"))
	require.Equal(t, []string{"dev1/t", "dev2/h"}, ta.SeriesIDs())

	ta.flush(t)
	require.Empty(t, ta.Unflushed("dev1/t", rollup.Tier1s, base, base+3_600_000).Buckets, "flushed and acknowledged")
	for _, tc := range []struct {
		name string
		tier rollup.Tier
		want []rollup.Bucket
	}{
		{"1s", rollup.Tier1s, []rollup.Bucket{
			{StartMs: base, Count: 2, Sum: 6, Min: 1, Max: 5, FirstMs: base + 100, First: 1, LastMs: base + 900, Last: 5},
			{StartMs: base + 1000, Count: 1, Sum: 2, Min: 2, Max: 2, FirstMs: base + 1500, First: 2, LastMs: base + 1500, Last: 2},
			{StartMs: base + 61_000, Count: 1, Sum: 10, Min: 10, Max: 10, FirstMs: base + 61_000, First: 10, LastMs: base + 61_000, Last: 10},
		}},
		{"1m", rollup.Tier1m, []rollup.Bucket{
			{StartMs: base, Count: 3, Sum: 8, Min: 1, Max: 5, FirstMs: base + 100, First: 1, LastMs: base + 1500, Last: 2},
			{StartMs: base + 60_000, Count: 1, Sum: 10, Min: 10, Max: 10, FirstMs: base + 61_000, First: 10, LastMs: base + 61_000, Last: 10},
		}},
		{"1h", rollup.Tier1h, []rollup.Bucket{
			{StartMs: base, Count: 4, Sum: 18, Min: 1, Max: 10, FirstMs: base + 100, First: 1, LastMs: base + 61_000, Last: 10},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := ta.mem.Select(ctx, []string{"dev1/t"}, tc.tier, base, base+3_600_000)
			require.NoError(t, err)
			require.Equal(t, tc.want, sel.Buckets[0])
		})
	}

	// A late reading for a flushed bucket is merged into it on the next
	// flush, never written over it.
	ta.offerReading(t, Reading{"dev1/t", base + 50, -4})
	ta.flush(t)
	sel, err := ta.mem.Select(ctx, []string{"dev1/t"}, rollup.Tier1s, base, base+1000)
	require.NoError(t, err)
	require.Equal(t, []rollup.Bucket{{StartMs: base, Count: 3, Sum: 2, Min: -4, Max: 5, FirstMs: base + 50, First: -4, LastMs: base + 900, Last: 5}}, sel.Buckets[0])
	n, err := countOnce(ctx, ta.Aggregator, ta.mem, "dev2/h", rollup.Tier1h, base, base+3_600_000)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
}

func TestAggregatorLiveGetsAcceptedReadings(t *testing.T) {
	ta := newTestAggregator(t, Config{Shards: 1, MaxSeriesPerDevice: 4})
	now := aggT0.UnixMilli()
	for _, m := range []struct{ topic, payload string }{
		{"telemetry/dev1/temp", "21.5"}, // no time: arrival
		{"telemetry/dev1", `{"ts":` + strconv.FormatInt(now-1000, 10) + `,"a":1,"b":true,"s":"text","env":{"t":2}}`},
		{"telemetry/dev1/temp", "NaN"},
		{"telemetry/dev1/temp", "1e999"},
		{"telemetry/dev 2/temp", "1"},
		{"telemetry/dev1/te mp", "1"},
		{"telemetry/dev1/temp", valuePayload(now+time.Hour.Milliseconds(), 1)},
		{"telemetry/dev1/temp", valuePayload(now-25*time.Hour.Milliseconds(), 1)},
		{"telemetry/dev1", `{"a":`},
		{"telemetry/dev1/temp", `{"ts":"yesterday","value":1}`},
		{"telemetry/dev1/extra", "1"}, // a fifth series
		{"elsewhere/dev1/temp", "1"},
		{"telemetry/dev1/temp", valuePayload(now-500, 3)},
	} {
		ta.offer(t, m.topic, m.payload)
	}
	ta.flush(t)
	require.Equal(t, []Reading{
		{"dev1/temp", now, 21.5},
		{"dev1/a", now - 1000, 1},
		{"dev1/b", now - 1000, 1},
		{"dev1/env.t", now - 1000, 2},
		{"dev1/temp", now - 500, 3},
	}, ta.readings())

	d := ta.device(t, "dev1")
	require.Equal(t, map[string]uint64{
		"not_finite": 2, "bad_name": 1, "future": 1, "too_old": 1,
		"malformed": 1, "bad_time": 1, "too_many_series": 1,
	}, d.RejectedByReason)
	require.Equal(t, uint64(8), d.Rejected)
	require.Equal(t, []string{"a", "b", "env.t", "temp"}, d.Metrics)
	require.False(t, ta.HasSeries("dev1/extra"), "a rejected reading never makes a series")
	require.Equal(t, []string{"dev1"}, func() (ids []string) {
		for _, d := range ta.Devices() {
			ids = append(ids, d.ID)
		}
		return ids
	}(), "unattributable rejects make no device")
}

func TestAggregatorDevices(t *testing.T) {
	ta := newTestAggregator(t, Config{Shards: 3})
	require.Empty(t, ta.Devices())
	t0 := aggT0
	ta.offer(t, "telemetry/dev-b/x", "1")
	ta.flush(t) // counted in second t0
	ta.clock.Advance(5 * time.Second)
	for _, m := range []string{"z", "x", "y", "x"} {
		ta.offer(t, "telemetry/dev-a/"+m, "1")
	}
	ta.SetPresence("dev-a", true, t0.Add(7*time.Second))
	ta.SetPresence("dev-c", false, t0.Add(time.Second))
	ta.SetPresence("bad name", true, t0) // ignored
	ta.flush(t)                          // counted in second t0+5s, still in progress

	devs := ta.Devices()
	require.Len(t, devs, 3)
	require.Equal(t, DeviceInfo{ID: "dev-a", Online: true, FirstSeenMs: t0.Add(5 * time.Second).UnixMilli(), LastSeenMs: t0.Add(7 * time.Second).UnixMilli(),
		Metrics: []string{"x", "y", "z"}, RejectedByReason: map[string]uint64{}}, devs[0])
	require.Equal(t, DeviceInfo{ID: "dev-b", FirstSeenMs: t0.UnixMilli(), LastSeenMs: t0.UnixMilli(), Rate: 0.1,
		Metrics: []string{"x"}, RejectedByReason: map[string]uint64{}}, devs[1])
	require.Equal(t, "dev-c", devs[2].ID)
	require.False(t, devs[2].Online)
	require.Equal(t, t0.Add(time.Second).UnixMilli(), devs[2].LastSeenMs)
	require.Empty(t, devs[2].Metrics)

	// Going offline keeps the latest time seen.
	ta.SetPresence("dev-a", false, t0)
	d := ta.device(t, "dev-a")
	require.False(t, d.Online)
	require.Equal(t, t0.Add(7*time.Second).UnixMilli(), d.LastSeenMs)

	// The slice is the caller's.
	devs[0].Metrics[0] = "changed"
	require.Equal(t, "x", ta.device(t, "dev-a").Metrics[0])
}

func TestAggregatorRate(t *testing.T) {
	ta := newTestAggregator(t, Config{Shards: 1})
	offerN := func(n int) {
		t.Helper()
		for range n {
			ta.offer(t, "telemetry/dev1/m", "1")
		}
		ta.flush(t)
	}
	rate := func() float64 {
		t.Helper()
		return ta.device(t, "dev1").Rate
	}
	offerN(20) // in second S
	require.Zero(t, rate(), "the second in progress does not count")
	ta.clock.Advance(time.Second)
	require.Equal(t, 2.0, rate())
	offerN(5) // in S+1
	ta.clock.Advance(time.Second)
	require.Equal(t, 2.5, rate())
	ta.clock.Advance(8 * time.Second) // S+10: S is still among the last 10 whole seconds
	require.Equal(t, 2.5, rate())
	ta.clock.Advance(time.Second) // S+11
	require.Equal(t, 0.5, rate(), "S has left the window")
	offerN(3)                     // in S+11, reusing the slot S had
	ta.clock.Advance(time.Second) // S+12: S+2..S+11
	require.Equal(t, 0.3, rate())
	ta.clock.Advance(10 * time.Second)
	require.Zero(t, rate())
}

func TestAggregatorSeriesLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		series  []string // offered in order
		want    []string // accepted series
		devices []string
		refused map[string]uint64 // too_many_series per device
	}{
		{"per device", Config{MaxSeriesPerDevice: 2},
			[]string{"dev1/a", "dev1/b", "dev1/c", "dev1/a", "dev2/c"},
			[]string{"dev1/a", "dev1/b", "dev2/c"},
			[]string{"dev1", "dev2"}, map[string]uint64{"dev1": 1}},
		{"whole server", Config{MaxSeries: 3},
			[]string{"dev1/a", "dev1/b", "dev2/a", "dev2/b", "dev3/a", "dev1/a"},
			[]string{"dev1/a", "dev1/b", "dev2/a"},
			[]string{"dev1", "dev2", "dev3"}, map[string]uint64{"dev2": 1, "dev3": 1}},
		{"devices", Config{MaxDevices: 2},
			[]string{"dev1/a", "dev2/a", "dev3/a", "dev3/b", "dev1/b"},
			[]string{"dev1/a", "dev1/b", "dev2/a"},
			[]string{"dev1", "dev2"}, map[string]uint64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Shards = 1
			ta := newTestAggregator(t, tc.cfg)
			for _, s := range tc.series {
				ta.offer(t, "telemetry/"+s, "1")
			}
			ta.flush(t)
			require.Equal(t, tc.want, ta.SeriesIDs())
			var ids []string
			for _, d := range ta.Devices() {
				ids = append(ids, d.ID)
				require.Equal(t, tc.refused[d.ID], d.RejectedByReason["too_many_series"], d.ID)
			}
			require.Equal(t, tc.devices, ids)
			var accepted int
			for _, r := range ta.readings() {
				require.Contains(t, tc.want, r.Series)
				accepted++
			}
			require.Equal(t, int(ta.accepted.Load()), accepted)
		})
	}
}

// TestAggregatorLimitsAcrossShards: the server-wide limits hold exactly
// when many shards create devices and series at once.
func TestAggregatorLimitsAcrossShards(t *testing.T) {
	for _, tc := range []struct {
		name        string
		cfg         Config
		wantDevices int
		wantSeries  int
	}{
		{"devices", Config{MaxDevices: 10}, 10, 10},
		{"series", Config{MaxSeries: 25}, 200, 25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Shards = 8
			ta := newTestAggregator(t, tc.cfg)
			var wg sync.WaitGroup
			var refused atomic.Int64
			for g := range 4 {
				wg.Go(func() {
					for d := g; d < 200; d += 4 {
						if !ta.Offer(fmt.Sprintf("telemetry/dev%d/m", d), []byte("1"), ta.clock.Now()) {
							refused.Add(1)
						}
					}
				})
			}
			wg.Wait()
			require.Zero(t, refused.Load())
			ta.flush(t)
			require.Len(t, ta.Devices(), tc.wantDevices)
			require.Len(t, ta.SeriesIDs(), tc.wantSeries)
			require.Equal(t, int64(min(tc.wantDevices, tc.wantSeries)), ta.accepted.Load())
		})
	}
}

func TestAggregatorRecent(t *testing.T) {
	now := aggT0.UnixMilli()
	rs := []Reading{ // out of order
		{"dev1/a", now - 60, 1}, {"dev1/a", now - 10, 2}, {"dev1/a", now - 50, 3},
		{"dev1/a", now - 20, 4}, {"dev1/a", now - 40, 5}, {"dev1/a", now - 30, 6},
	}
	for _, tc := range []struct {
		name     string
		raw      int
		from, to int64
		want     []float64
	}{
		{"the latest N, by time", 4, now - 100, now, []float64{3, 5, 6, 4}},
		{"range: from inclusive, to exclusive", 4, now - 40, now - 20, []float64{5, 6}},
		{"room for all", 0, now - 100, now, []float64{1, 3, 5, 6, 4, 2}},
		{"none kept", -1, now - 100, now, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ta := newTestAggregator(t, Config{Shards: 1, RawPoints: tc.raw})
			for _, r := range rs {
				ta.offerReading(t, r)
			}
			ta.flush(t)
			var got []float64
			for _, r := range ta.Recent("dev1/a", tc.from, tc.to) {
				require.Equal(t, "dev1/a", r.Series)
				got = append(got, r.Value)
			}
			require.Equal(t, tc.want, got)
			require.Empty(t, ta.Recent("dev9/none", tc.from, tc.to))
		})
	}
}

// TestAggregatorRunDrainsOnCancel: every offer accepted before Run's
// context ends reaches the store.
func TestAggregatorRunDrainsOnCancel(t *testing.T) {
	t.Run("offered before Run", func(t *testing.T) {
		ta := newIdleAggregator(t, Config{Shards: 4})
		for i := range 1000 {
			ta.offer(t, fmt.Sprintf("telemetry/dev%d/m", i%20), "1")
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.NoError(t, ta.Run(ctx))
		require.Equal(t, int64(1000), storedTotal(t, ta))
		require.False(t, ta.Offer("telemetry/dev1/m", []byte("1"), ta.clock.Now()), "stopped")
		require.Equal(t, map[string]uint64{"overload": 1}, ta.device(t, "dev1").RejectedByReason, "a refusal is counted")
	})
	t.Run("offered while running", func(t *testing.T) {
		ta := newTestAggregator(t, Config{Shards: 4})
		var accepted atomic.Int64
		started := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				if i == 500 {
					close(started)
				}
				if !ta.Offer(fmt.Sprintf("telemetry/dev%d/m", i%20), []byte("1"), ta.clock.Now()) {
					if i >= 500 {
						return // stopped
					}
					continue
				}
				accepted.Add(1)
			}
		}()
		<-started
		ta.stop(t)
		<-done
		require.Equal(t, accepted.Load(), storedTotal(t, ta))
		require.Equal(t, accepted.Load(), ta.accepted.Load())
	})
}

// storedTotal sums the 1h-tier counts of every series in the store.
func storedTotal(t testing.TB, ta *testAggregator) int64 {
	t.Helper()
	sel, err := ta.mem.Select(context.Background(), ta.SeriesIDs(), rollup.Tier1h, 0, aggT0.UnixMilli()+3_600_000)
	require.NoError(t, err)
	var n int64
	for _, bs := range sel.Buckets {
		for _, b := range bs {
			n += b.Count
		}
	}
	return n
}

// TestAggregatorLiveBound: when the hub does not take live readings, a
// shard keeps at most MaxLiveReadings of them, drops the oldest from the
// live stream and reports their time range as a gap; history keeps all.
func TestAggregatorLiveBound(t *testing.T) {
	ta := newIdleAggregator(t, Config{Shards: 1, MaxLiveReadings: 8})
	ta.cfg.Notify = nil // nobody drains
	base := aggT0.UnixMilli() - 100
	for i := range 20 {
		ta.offer(t, "telemetry/dev1/m", valuePayload(base+int64(i), float64(i)))
	}
	got, gap := ta.DrainReadings(nil)
	require.NotNil(t, gap)
	require.Len(t, got, 8, "the newest MaxLiveReadings at most")
	require.Equal(t, base+19, got[len(got)-1].TimeMs, "the newest is kept")
	require.Equal(t, base, gap.FromMs)
	require.Equal(t, got[0].TimeMs-1, gap.ToMs, "the gap ends where live resumes")
	again, gap := ta.DrainReadings(nil)
	require.Empty(t, again)
	require.Nil(t, gap, "a gap is reported once")
	ta.start(t)
	ta.flush(t)
	require.Equal(t, int64(20), storedTotal(t, ta), "history has every reading")
}

// flakyStore is the real memory store with injected Append failures.
type flakyStore struct {
	*store.Memory
	failures atomic.Int32 // Appends left to fail
}

var errInjected = errors.New("injected store failure")

func (f *flakyStore) Append(ctx context.Context, b store.Batch) error {
	if f.failures.Add(-1) >= 0 {
		return errInjected
	}
	return f.Memory.Append(ctx, b)
}

// TestAggregatorFlushRetry: a batch the store refused stays visible to
// queries and is retried, before later batches, and lands exactly once.
func TestAggregatorFlushRetry(t *testing.T) {
	mem, err := store.NewMemory(store.MemoryConfig{Clock: clockwork.NewFakeClockAt(aggT0)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, mem.Close()) })
	fs := &flakyStore{Memory: mem}
	ta := newTestAggregator(t, Config{Shards: 1, Store: fs})
	ctx := context.Background()
	ms := aggT0.UnixMilli()
	count := func() int64 {
		t.Helper()
		n, err := countOnce(ctx, ta.Aggregator, mem, "dev1/a", rollup.Tier1m, ms-3_600_000, ms+60_000)
		require.NoError(t, err)
		return n
	}

	fs.failures.Store(2)
	ta.offerReading(t, Reading{"dev1/a", ms - 100, 1})
	require.ErrorIs(t, ta.Flush(ctx), errInjected) // batch 1 refused
	require.Equal(t, int64(1), count())
	ta.offerReading(t, Reading{"dev1/a", ms - 200, 2})
	require.ErrorIs(t, ta.Flush(ctx), errInjected) // batch 1 refused again; 2 waits behind it
	require.Equal(t, int64(2), count())
	u := ta.Unflushed("dev1/a", rollup.Tier1m, ms-3_600_000, ms+60_000)
	require.Len(t, u.Buckets, 2)

	ta.offerReading(t, Reading{"dev1/a", ms - 300, 3})
	require.NoError(t, ta.Flush(ctx)) // batches 1, 2 and 3, in order
	require.Equal(t, int64(3), count())
	require.Empty(t, ta.Unflushed("dev1/a", rollup.Tier1m, ms-3_600_000, ms+60_000).Buckets)
	sel, err := mem.Select(ctx, []string{"dev1/a"}, rollup.Tier1m, ms-3_600_000, ms+60_000)
	require.NoError(t, err)
	require.Equal(t, map[int]uint64{0: 3}, sel.Marks)
	require.Equal(t, int64(3), sel.Buckets[0][0].Count)
	require.Equal(t, 6.0, sel.Buckets[0][0].Sum)
}

// TestAggregatorExactlyOnce hammers Offer, Flush and the query protocol
// (Unflushed, then the store) at once: a count never misses an accepted
// reading nor counts one twice.
func TestAggregatorExactlyOnce(t *testing.T) {
	ta := newTestAggregator(t, Config{Shards: 4})
	ctx := context.Background()
	ms := aggT0.UnixMilli()
	var series []string
	for d := range 8 {
		series = append(series, fmt.Sprintf("dev%d/a", d), fmt.Sprintf("dev%d/b", d))
	}
	var offered atomic.Int64
	next := 0
	burst := func(n int) {
		for range n {
			i := next
			next++
			offered.Add(1)
			ta.offerReading(t, Reading{series[i%len(series)], ms - 600_000 + int64(i*7919%600_000), 1})
		}
	}
	settle := func() {
		eventually(t, 5*time.Second, func() error {
			if a, o := ta.accepted.Load(), offered.Load(); a != o {
				return fmt.Errorf("accepted %d of %d", a, o)
			}
			return nil
		})
	}
	total := func(tier rollup.Tier) (int64, error) {
		var n int64
		for _, s := range series {
			c, err := countOnce(ctx, ta.Aggregator, ta.mem, s, tier, ms-3_600_000, ms+3_600_000)
			if err != nil {
				return 0, err
			}
			n += c
		}
		return n, nil
	}

	type window struct{ total int64 }
	var quiet atomic.Pointer[window]
	check := func(tier rollup.Tier) error {
		w1 := quiet.Load()
		lo := ta.accepted.Load()
		n, err := total(tier)
		hi := offered.Load()
		w2 := quiet.Load()
		switch {
		case err != nil:
			return err
		case n < lo:
			return fmt.Errorf("tier %s missed readings: %d counted, %d accepted before", tier, n, lo)
		case n > hi:
			return fmt.Errorf("tier %s double-counted: %d counted, %d offered", tier, n, hi)
		case w1 != nil && w1 == w2 && n != w1.total:
			return fmt.Errorf("tier %s in a quiet window: %d counted, want %d", tier, n, w1.total)
		}
		return nil
	}

	stop := make(chan struct{})
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := ta.Flush(ctx); err != nil {
				errs <- err
				return
			}
		}
	})
	for g := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := check(rollup.Tiers[(i+g)%rollup.NumTiers]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for range 40 {
		quiet.Store(nil)
		burst(29)
		settle()
		quiet.Store(&window{total: offered.Load()})
		flushed := make(chan error, 1)
		go func() { flushed <- ta.Flush(ctx) }()
		for _, tier := range rollup.Tiers {
			require.NoError(t, check(tier))
		}
		require.NoError(t, <-flushed)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for _, tier := range rollup.Tiers {
		n, err := total(tier)
		require.NoError(t, err)
		require.Equal(t, offered.Load(), n, "tier %s", tier)
	}
}

// TestAggregatorRestore: devices and series from history come back idle,
// listed and known, within the limits; live readings then join them.
func TestAggregatorRestore(t *testing.T) {
	ta := newTestAggregator(t, Config{Shards: 2, MaxSeriesPerDevice: 2})
	now := aggT0.UnixMilli()
	n := ta.Restore(
		[]RestoredDevice{{ID: "dev1", FirstSeenMs: now - 5000, LastSeenMs: now - 1000}, {ID: "bad name"}},
		[]string{"dev1/a", "dev1/b", "dev1/c", "dev2/x", "not-a-series"},
	)
	require.Equal(t, 3, n, "dev1/c is over dev1's limit; the malformed one is skipped")
	require.True(t, ta.HasSeries("dev1/a"))
	require.True(t, ta.HasSeries("dev2/x"))
	require.False(t, ta.HasSeries("dev1/c"))
	d := ta.device(t, "dev1")
	require.False(t, d.Online)
	require.Equal(t, now-5000, d.FirstSeenMs)
	require.Equal(t, now-1000, d.LastSeenMs)
	require.Equal(t, []string{"a", "b"}, d.Metrics)
	require.Len(t, ta.Devices(), 2)

	ta.offer(t, "telemetry/dev1/a", "1")
	require.Equal(t, now, ta.device(t, "dev1").LastSeenMs)
	require.Equal(t, now-5000, ta.device(t, "dev1").FirstSeenMs)
}
