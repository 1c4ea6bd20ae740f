package ingest

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest/store"
)

// logBuffer collects log lines; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the lines containing every one of the substrings.
func (b *logBuffer) lines(subs ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
next:
	for _, l := range strings.Split(b.buf.String(), "\n") {
		for _, s := range subs {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// limitAggregator is an aggregator (not running: nothing here needs a
// flush) whose log and metrics a test reads, and whose live readings it
// takes itself.
type limitAggregator struct {
	*Aggregator
	log *logBuffer
	reg *prometheus.Registry
}

func newLimitAggregator(t *testing.T, cfg Config) *limitAggregator {
	t.Helper()
	clock := clockwork.NewFakeClockAt(aggT0)
	mem, err := store.NewMemory(store.MemoryConfig{Clock: clock}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, mem.Close()) })
	la := &limitAggregator{log: new(logBuffer), reg: prometheus.NewRegistry()}
	cfg.Store, cfg.Clock, cfg.Registerer, cfg.Shards = mem, clock, la.reg, 1
	la.Aggregator, err = New(cfg, slog.New(slog.NewTextHandler(la.log, nil)))
	require.NoError(t, err)
	return la
}

// offerAt offers a payload arriving at t0 plus ms milliseconds.
func (la *limitAggregator) offerAt(t *testing.T, ms int64, topic, payload string) {
	t.Helper()
	require.True(t, la.Offer(topic, []byte(payload), aggT0.Add(time.Duration(ms)*time.Millisecond)))
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

func (la *limitAggregator) rejected(t *testing.T, device, reason string) uint64 {
	t.Helper()
	for _, d := range la.Devices() {
		if d.ID == device {
			return d.RejectedByReason[reason]
		}
	}
	return 0
}

// metric returns telegauge_readings_rejected_total{reason}.
func (la *limitAggregator) metric(t *testing.T, reason string) float64 {
	t.Helper()
	mfs, err := la.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "telegauge_readings_rejected_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "reason" && lp.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no telegauge_readings_rejected_total{reason=%q}", reason)
	return 0
}

// TestRateLimitPerDevice: each device has a token bucket of readings,
// refilled by arrival time; readings beyond it are rejected as
// rate_limited, counted per device and in the metric, and the device is
// named in a warning at most once a minute. A device beside it is not
// affected.
func TestRateLimitPerDevice(t *testing.T) {
	la := newLimitAggregator(t, Config{MaxRatePerDevice: 10, MaxBurstPerDevice: 5})
	obj := `{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7}` // 7 readings

	// A full bucket of 5: two of the seven are refused.
	la.offerAt(t, 0, "telemetry/hog", obj)
	la.offerAt(t, 0, "telemetry/calm/x", "1")
	require.Equal(t, map[string]int{"hog": 5, "calm": 1}, la.accepted())
	require.Equal(t, uint64(2), la.rejected(t, "hog", "rate_limited"))
	require.Zero(t, la.rejected(t, "calm", "rate_limited"))
	require.Equal(t, 2.0, la.metric(t, "rate_limited"))
	warn := la.log.lines("level=WARN", "device=hog", "reason=rate_limited")
	require.Len(t, warn, 1)
	require.Contains(t, warn[0], "rejected=2")
	require.Contains(t, warn[0], "limit_per_second=10")

	for _, tc := range []struct {
		name     string
		atMs     int64
		topic    string
		payload  string
		accepted int
		limited  uint64 // hog's rate_limited total after the step
	}{
		// 10/s is one token per 100 ms.
		{"one token after 100 ms", 100, "telemetry/hog", obj, 1, 8},
		{"none at the same instant", 100, "telemetry/hog/x", "1", 0, 9},
		{"an earlier arrival refills nothing", 50, "telemetry/hog/x", "1", 0, 10},
		{"250 ms later: 2.5 tokens, so 2 readings", 350, "telemetry/hog", `{"a":1,"b":2,"c":3}`, 2, 11},
		{"the half token is kept", 400, "telemetry/hog/x", "1", 1, 11},
		{"the bucket holds 5 at most", 60_000, "telemetry/hog", obj, 5, 13},
	} {
		t.Run(tc.name, func(t *testing.T) {
			la.offerAt(t, tc.atMs, tc.topic, tc.payload)
			require.Equal(t, tc.accepted, la.accepted()["hog"])
			require.Equal(t, tc.limited, la.rejected(t, "hog", "rate_limited"))
		})
	}
	// The good device kept flowing throughout.
	la.offerAt(t, 60_000, "telemetry/calm/x", "2")
	require.Equal(t, map[string]int{"calm": 1}, la.accepted())

	// One warning a minute per device: the steps above (within the minute)
	// added none; the one at 60 s did, with the rejections since.
	warn = la.log.lines("device=hog", "reason=rate_limited")
	require.Len(t, warn, 2, "%q", warn)
	require.Contains(t, warn[1], "rejected=11")
}

func TestRateLimitOff(t *testing.T) {
	la := newLimitAggregator(t, Config{MaxRatePerDevice: -1})
	for i := range 100 {
		la.offerAt(t, 0, "telemetry/dev1", `{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":`+string(rune('0'+i%10))+`}`)
	}
	require.Equal(t, map[string]int{"dev1": 1000}, la.accepted())
	require.Zero(t, la.metric(t, "rate_limited"))
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
	warn := la.log.lines("level=WARN", "device=wide", "reason=too_many_series")
	require.Len(t, warn, 1)
	require.Contains(t, warn[0], "limit=2")
	require.Contains(t, warn[0], "rejected=2")
	require.Empty(t, la.log.lines("device=narrow"))

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
	require.Len(t, la.log.lines("reason=too_many_series"), logBurst)
	require.Equal(t, 50.0, la.metric(t, "too_many_series"), "every rejection is counted")
	la.offerAt(t, logEveryMs, "telemetry/late", `{"a":1,"b":2}`)
	last := la.log.lines("device=late")
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

// TestRateLimitSpendsOnlyAccepted: readings refused for another reason
// (here the series limit) do not spend the device's rate.
func TestRateLimitSpendsOnlyAccepted(t *testing.T) {
	la := newLimitAggregator(t, Config{MaxRatePerDevice: 10, MaxBurstPerDevice: 5, MaxSeriesPerDevice: 2})
	la.offerAt(t, 0, "telemetry/dev1", `{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7}`)
	require.Equal(t, map[string]int{"dev1": 2}, la.accepted())
	require.Equal(t, uint64(5), la.rejected(t, "dev1", "too_many_series"))
	la.offerAt(t, 0, "telemetry/dev1", `{"a":1,"b":2}`) // tokens: 3 left, then 1
	la.offerAt(t, 0, "telemetry/dev1", `{"a":1,"b":2}`)
	require.Equal(t, map[string]int{"dev1": 3}, la.accepted())
	require.Equal(t, uint64(1), la.rejected(t, "dev1", "rate_limited"))
	require.Equal(t, uint64(5), la.rejected(t, "dev1", "too_many_series"))
}
