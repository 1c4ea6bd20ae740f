package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest/rollup"
	"github.com/telegauge/telegauge/ingest/store"
	"github.com/telegauge/telegauge/internal/testutil"
)

// limitAggregator is an aggregator (not running: nothing here needs a
// flush) whose log and metrics a test reads, whose live readings it takes
// itself, and whose throttling waits it records instead of waiting.
type limitAggregator struct {
	*Aggregator
	log *testutil.LogBuffer
	reg *prometheus.Registry

	mu    sync.Mutex
	waits []time.Duration // requested by Offer, not yet taken by offerAt
}

func newLimitAggregator(t *testing.T, cfg Config) *limitAggregator {
	t.Helper()
	clock := clockwork.NewFakeClockAt(aggT0)
	mem, err := store.NewMemory(store.MemoryConfig{Clock: clock}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, mem.Close()) })
	la := &limitAggregator{log: new(testutil.LogBuffer), reg: prometheus.NewRegistry()}
	cfg.Store, cfg.Clock, cfg.Registerer, cfg.Shards = mem, clock, la.reg, 1
	cfg.Sleep = func(d time.Duration) {
		la.mu.Lock()
		defer la.mu.Unlock()
		la.waits = append(la.waits, d)
	}
	la.Aggregator, err = New(cfg, slog.New(slog.NewTextHandler(la.log, nil)))
	require.NoError(t, err)
	return la
}

// offerAt offers a payload arriving at t0 plus ms milliseconds, and returns
// the waits it asked for (nil if none).
func (la *limitAggregator) offerAt(t *testing.T, ms int64, topic, payload string) []time.Duration {
	t.Helper()
	require.True(t, la.Offer(topic, []byte(payload), aggT0.Add(time.Duration(ms)*time.Millisecond)))
	la.mu.Lock()
	defer la.mu.Unlock()
	w := la.waits
	la.waits = nil
	return w
}

// accepted returns how many readings of each device were accepted since
// the last call.
func (la *limitAggregator) accepted() map[string]int {
	rs, _ := la.DrainReadings(nil)
	out := map[string]int{}
	for _, r := range rs {
		out[r.Device()]++
	}
	return out
}

func (la *limitAggregator) device(t *testing.T, id string) DeviceInfo {
	t.Helper()
	for _, d := range la.Devices() {
		if d.ID == id {
			return d
		}
	}
	t.Fatalf("device %q not listed", id)
	return DeviceInfo{}
}

func (la *limitAggregator) rejected(t *testing.T, device, reason string) uint64 {
	t.Helper()
	return la.device(t, device).RejectedByReason[reason]
}

// metric returns telegauge_readings_rejected_total{reason}.
func (la *limitAggregator) metric(t *testing.T, reason string) float64 {
	t.Helper()
	return la.gather(t, "telegauge_readings_rejected_total", reason)
}

// gather returns the value of counter name, with the label reason if
// reason is not empty.
func (la *limitAggregator) gather(t *testing.T, name, reason string) float64 {
	t.Helper()
	mfs, err := la.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if reason == "" {
				return m.GetCounter().GetValue()
			}
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "reason" && lp.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{reason=%q}", name, reason)
	return 0
}

// readingsPayload is a JSON object of n readings, metrics m0 to m{n-1}.
func readingsPayload(n int) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"m%d":%d`, i, i)
	}
	b.WriteByte('}')
	return b.String()
}

// TestThrottlePerDevice: each device has a token bucket of readings,
// refilled by arrival time. A device over it loses nothing: every reading
// is accepted, the bucket goes into debt, and Offer asks for the publishing
// connection to be held until the debt has refilled at the device's rate.
// The time is counted for the device and in the metrics, and the device is
// named in a warning at most once a minute. A device beside it is never
// held.
func TestThrottlePerDevice(t *testing.T) {
	la := newLimitAggregator(t, Config{MaxRatePerDevice: 10, MaxBurstPerDevice: 5})
	obj := readingsPayload(7)
	var total time.Duration
	for _, tc := range []struct {
		name    string
		atMs    int64
		payload string        // published by hog
		wait    time.Duration // asked for hog's publish; 0 for none
	}{
		// 10/s is one token per 100 ms. The bucket holds 5; its debt is at
		// most 10, a second's worth (more than the burst).
		{"a full bucket of 5, then 7 readings: 2 owed, 200 ms", 0, obj, 200 * time.Millisecond},
		{"100 ms refill one token; one more reading: 2 owed", 100, readingsPayload(1), 200 * time.Millisecond},
		{"none at the same instant", 100, readingsPayload(1), 300 * time.Millisecond},
		{"an earlier arrival refills nothing", 50, readingsPayload(1), 400 * time.Millisecond},
		{"350 ms refill 3.5 tokens", 450, readingsPayload(3), 350 * time.Millisecond},
		{"a debt of 10 is held a second", 500, obj, time.Second},
		{"the debt stops at 10, the readings are accepted", 500, obj, time.Second},
		{"a second pays 10: one more owed", 1500, readingsPayload(1), 100 * time.Millisecond},
		{"the bucket refills to 5 at most", 60_000, obj, 200 * time.Millisecond},
		{"within the bucket: not held", 120_000, readingsPayload(3), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []time.Duration
			if tc.wait > 0 {
				want = []time.Duration{tc.wait}
			}
			require.Equal(t, want, la.offerAt(t, tc.atMs, "telemetry/hog", tc.payload))
			require.Empty(t, la.offerAt(t, tc.atMs, "telemetry/calm/x", "1"), "the good device is never held")
			n := strings.Count(tc.payload, ":")
			require.Equal(t, map[string]int{"hog": n, "calm": 1}, la.accepted(), "no reading lost")
			total += tc.wait
		})
	}
	hog := la.device(t, "hog")
	require.Zero(t, hog.Rejected, "%v", hog.RejectedByReason)
	require.Equal(t, total, hog.Throttled)
	require.Zero(t, la.device(t, "calm").Throttled)
	require.Equal(t, 9.0, la.gather(t, "telegauge_device_throttled_messages_total", ""))
	require.InDelta(t, total.Seconds(), la.gather(t, "telegauge_device_throttled_seconds_total", ""), 1e-9)
	for r := range NumReasons {
		require.Zero(t, la.metric(t, Reason(r).String()), Reason(r).String())
	}

	// One warning a minute per device, with the publishes held since the
	// previous one and for how long.
	warn := la.log.Lines("level=WARN", "device=hog", "over its reading rate")
	require.Len(t, warn, 2, "%q", warn)
	require.Contains(t, warn[0], "limit_per_second=10")
	require.Contains(t, warn[0], "burst=5")
	require.Contains(t, warn[0], "throttled=1 held=200ms")
	require.Contains(t, warn[1], "throttled=8 held=3.55s")
	require.Empty(t, la.log.Lines("device=calm"))
}

// TestThrottleWaitIsCapped: one publish is held at most a second, however
// much its device owes; the debt (here bounded by the burst, more than a
// second's worth) is paid by its next publishes.
func TestThrottleWaitIsCapped(t *testing.T) {
	la := newLimitAggregator(t, Config{MaxRatePerDevice: 10, MaxBurstPerDevice: 100})
	for _, tc := range []struct {
		name     string
		atMs     int64
		readings int
		wait     time.Duration
	}{
		{"half the bucket", 0, 50, 0},
		{"50 owed: 5 s, held 1 s", 0, 100, time.Second},
		{"the debt stops at the burst", 0, 100, time.Second},
		{"a second later, 91 owed: held 1 s", 1000, 1, time.Second},
		{"nine seconds later, 2 owed", 10_000, 1, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []time.Duration
			if tc.wait > 0 {
				want = []time.Duration{tc.wait}
			}
			require.Equal(t, want, la.offerAt(t, tc.atMs, "telemetry/dev1", readingsPayload(tc.readings)))
			require.Equal(t, map[string]int{"dev1": tc.readings}, la.accepted())
		})
	}
	require.Zero(t, la.device(t, "dev1").Rejected)
}

func TestRateLimitOff(t *testing.T) {
	la := newLimitAggregator(t, Config{MaxRatePerDevice: -1})
	for range 100 {
		require.Empty(t, la.offerAt(t, 0, "telemetry/dev1", readingsPayload(10)))
	}
	require.Equal(t, map[string]int{"dev1": 1000}, la.accepted())
	require.Zero(t, la.gather(t, "telegauge_device_throttled_messages_total", ""))
	require.Zero(t, la.device(t, "dev1").Throttled)
}

func TestRateLimitDefaults(t *testing.T) {
	la := newLimitAggregator(t, Config{})
	require.Equal(t, 1000.0, la.cfg.MaxRatePerDevice)
	require.Equal(t, 10_000, la.cfg.MaxBurstPerDevice, "ten seconds' worth")
	la = newLimitAggregator(t, Config{MaxRatePerDevice: 0.01})
	require.Equal(t, 1, la.cfg.MaxBurstPerDevice, "at least one")
}

// TestSeriesLimitIsLogged: a device over MaxSeriesPerDevice gets
// too_many_series rejections, counted for it, and a warning naming it.
func TestSeriesLimitIsLogged(t *testing.T) {
	la := newLimitAggregator(t, Config{MaxSeriesPerDevice: 2})
	la.offerAt(t, 0, "telemetry/wide", `{"a":1,"b":2,"c":3,"d":4}`)
	la.offerAt(t, 0, "telemetry/narrow", `{"a":1,"b":2}`)
	require.Equal(t, map[string]int{"wide": 2, "narrow": 2}, la.accepted())
	require.Equal(t, uint64(2), la.rejected(t, "wide", "too_many_series"))
	require.Zero(t, la.rejected(t, "narrow", "too_many_series"))
	require.Equal(t, 2.0, la.metric(t, "too_many_series"))
	warn := la.log.Lines("level=WARN", "device=wide", "reason=too_many_series")
	require.Len(t, warn, 1)
	require.Contains(t, warn[0], "limit=2")
	require.Contains(t, warn[0], "rejected=2")
	require.Empty(t, la.log.Lines("device=narrow"))

	// Known series keep flowing.
	la.offerAt(t, 1000, "telemetry/wide", `{"a":5,"b":6,"z":7}`)
	require.Equal(t, map[string]int{"wide": 2}, la.accepted())
}

// TestLimitLogBudget: however many devices go over a limit, the log gets a
// burst of lines and then one a second, each saying how many were left out.
func TestLimitLogBudget(t *testing.T) {
	la := newLimitAggregator(t, Config{MaxSeriesPerDevice: 1})
	for i := range 50 {
		la.offerAt(t, 0, "telemetry/dev"+string(rune('A'+i%26))+string(rune('a'+i/26)), `{"a":1,"b":2}`)
	}
	require.Len(t, la.log.Lines("reason=too_many_series"), logBurst)
	require.Equal(t, 50.0, la.metric(t, "too_many_series"), "every rejection is counted")
	la.offerAt(t, logEveryMs, "telemetry/late", `{"a":1,"b":2}`)
	last := la.log.Lines("device=late")
	require.Len(t, last, 1)
	require.Contains(t, last[0], "suppressed=40")
}

func TestLogBudget(t *testing.T) {
	var b logBudget
	for range logBurst {
		ok, _ := b.allow(5000)
		require.True(t, ok)
	}
	ok, _ := b.allow(5000)
	require.False(t, ok)
	ok, _ = b.allow(5000 + logEveryMs/2)
	require.False(t, ok)
	ok, suppressed := b.allow(5000 + logEveryMs)
	require.True(t, ok)
	require.Equal(t, 2, suppressed)
	ok, _ = b.allow(0) // the clock went back: no refill, no panic
	require.False(t, ok)
}

// TestThrottleSpendsOnlyAccepted: readings refused for another reason
// (here the series limit) do not spend the device's rate.
func TestThrottleSpendsOnlyAccepted(t *testing.T) {
	la := newLimitAggregator(t, Config{MaxRatePerDevice: 10, MaxBurstPerDevice: 5, MaxSeriesPerDevice: 2})
	require.Empty(t, la.offerAt(t, 0, "telemetry/dev1", readingsPayload(7)), "2 accepted: 3 tokens left")
	require.Equal(t, map[string]int{"dev1": 2}, la.accepted())
	require.Equal(t, uint64(5), la.rejected(t, "dev1", "too_many_series"))
	require.Empty(t, la.offerAt(t, 0, "telemetry/dev1", readingsPayload(2)), "1 token left")
	require.Equal(t, []time.Duration{100 * time.Millisecond}, la.offerAt(t, 0, "telemetry/dev1", readingsPayload(2)), "1 owed")
	require.Equal(t, map[string]int{"dev1": 4}, la.accepted())
	require.Equal(t, uint64(5), la.rejected(t, "dev1", "too_many_series"))
}

// recvWithin returns what ch delivers, failing the test if it delivers
// nothing within a generous bound (a held Offer that is never released).
func recvWithin[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received in 10 s")
		var zero T
		return zero
	}
}

// TestThrottleWaitsOnTheClock: without Config.Sleep, a held publish waits
// on the aggregator's clock, and StopThrottling ends the wait at once and
// every later one before it starts.
func TestThrottleWaitsOnTheClock(t *testing.T) {
	ta := newIdleAggregator(t, Config{Shards: 1, MaxRatePerDevice: 10, MaxBurstPerDevice: 1})
	offer := func() <-chan bool {
		done := make(chan bool, 1)
		go func() { done <- ta.Offer("telemetry/hog/x", []byte("1"), ta.clock.Now()) }()
		return done
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ta.offer(t, "telemetry/hog/x", "1") // the burst: not held
	done := offer()                     // one owed: held 100 ms
	require.NoError(t, ta.clock.BlockUntilContext(ctx, 1))
	ta.clock.Advance(99 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("released before its wait")
	default:
	}
	ta.clock.Advance(time.Millisecond)
	require.True(t, recvWithin(t, done))

	done = offer() // one owed again
	require.NoError(t, ta.clock.BlockUntilContext(ctx, 1))
	ta.StopThrottling()
	require.True(t, recvWithin(t, done), "StopThrottling ends the wait")
	for range 3 {
		require.True(t, recvWithin(t, offer()), "and no publish is held after it")
	}
	ta.StopThrottling() // idempotent
	require.Len(t, ta.readings(), 6, "every reading accepted")
}

// TestThrottleEndsWithRun: when Run stops, a publish being held is let go
// (so that shutdown does not wait for a slowed device), and its readings
// are in the final flush.
func TestThrottleEndsWithRun(t *testing.T) {
	ta := newTestAggregator(t, Config{Shards: 1, MaxRatePerDevice: 10, MaxBurstPerDevice: 1})
	ta.offer(t, "telemetry/hog/x", "1")
	done := make(chan bool, 1)
	go func() { done <- ta.Offer("telemetry/hog/x", []byte("2"), ta.clock.Now()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, ta.clock.BlockUntilContext(ctx, 2), "Run's ticker and the held publish")
	ta.stop(t)
	require.True(t, recvWithin(t, done), "accepted before the stop")
	require.Equal(t, int64(2), storedTotal(t, ta))
}

// TestThrottleBacklogReplay: a device back online replays a backlog ten
// times its burst, each publish as soon as the previous one is released
// (the injected sleep moves the clock on by the wait, as a real connection
// would be read again after it). Every reading is stored and none
// rejected, the device was slowed to its rate after the burst, and a
// device publishing beside it was never held.
func TestThrottleBacklogReplay(t *testing.T) {
	const (
		rate, burst = 100, 200
		msgs        = 1000 // 2 readings each: 2,000
	)
	var waits []time.Duration // the replaying device's
	var ta *testAggregator
	ta = newIdleAggregator(t, Config{MaxRatePerDevice: rate, MaxBurstPerDevice: burst, Sleep: func(d time.Duration) {
		waits = append(waits, d)
		ta.clock.Advance(d)
	}})
	start := ta.clock.Now()
	backlogT0 := start.Add(-3 * time.Hour).UnixMilli()
	for i := range msgs {
		// Its readings one every 10 s over the hours it was offline.
		ts := backlogT0 + int64(i)*10_000
		ta.offer(t, "telemetry/replay", fmt.Sprintf(`{"ts":%d,"temperature":%d,"humidity":%d}`, ts, i, i))
		if i%100 == 0 {
			n := len(waits)
			ta.offer(t, "telemetry/steady/x", "1")
			require.Len(t, waits, n, "the steady device is not held")
		}
	}
	ta.flush(t)

	series := []string{"replay/temperature", "replay/humidity"}
	sel, err := ta.mem.Select(context.Background(), series, rollup.Tier1m, backlogT0-time.Hour.Milliseconds(), start.UnixMilli())
	require.NoError(t, err)
	for i, bs := range sel.Buckets {
		var n int64
		for _, b := range bs {
			n += b.Count
		}
		require.Equal(t, int64(msgs), n, "readings of %s stored", series[i])
	}
	d := ta.device(t, "replay")
	require.Zero(t, d.Rejected, "%v", d.RejectedByReason)

	// The first 100 publishes spent the burst; each of the other 900 owed
	// its 2 readings and was held 20 ms: the replay took (2,000-200)/100 s.
	require.Len(t, waits, msgs-burst/2)
	for _, w := range waits {
		require.Equal(t, 20*time.Millisecond, w)
	}
	require.Equal(t, time.Duration(2*msgs-burst)*time.Second/rate, ta.clock.Since(start))
	require.Equal(t, ta.clock.Since(start), d.Throttled)
}
