package simulators

import (
	"encoding/json"
	"math"
	"math/bits"
	"sync"
	"time"
)

// histSubBits sets a Histogram's precision: each power-of-two range of
// values is split into 2^histSubBits buckets, so a reported quantile is
// within 1/2^histSubBits (under 0.8 %) of the true value, as in HDR
// histograms with two significant digits.
const (
	histSubBits  = 7
	histSubCount = 1 << histSubBits
)

// Histogram is a log-bucketed latency histogram with microsecond
// resolution and bounded relative error (see histSubBits), covering any
// duration. The zero value is empty and ready. A Histogram is not safe for
// concurrent use.
type Histogram struct {
	counts   []uint64 // grown on demand to the highest bucket used
	count    uint64
	sumUs    float64
	minUs    int64
	maxUs    int64
	negative uint64 // values below zero (clock skew), recorded as 0
}

// histIndex returns the bucket of v >= 0 microseconds.
func histIndex(v int64) int {
	if v < histSubCount {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - histSubBits - 1
	return histSubCount + shift*histSubCount + int(v>>shift) - histSubCount
}

// histBucket returns the lowest value of bucket i and its width.
func histBucket(i int) (low, width int64) {
	if i < histSubCount {
		return int64(i), 1
	}
	shift := (i - histSubCount) / histSubCount
	sub := int64((i-histSubCount)%histSubCount + histSubCount)
	return sub << shift, 1 << shift
}

// Record adds one duration. Negative durations (a receive time before the
// reading time: clocks out of step) count as zero and are tallied in
// Negative.
func (h *Histogram) Record(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		h.negative++
		us = 0
	}
	i := histIndex(us)
	if i >= len(h.counts) {
		h.grow(i)
	}
	h.counts[i]++
	if h.count == 0 || us < h.minUs {
		h.minUs = us
	}
	if us > h.maxUs {
		h.maxUs = us
	}
	h.count++
	h.sumUs += float64(us)
}

func (h *Histogram) grow(i int) {
	// Round up to whole power-of-two ranges so growth happens rarely.
	n := (i/histSubCount + 1) * histSubCount
	c := make([]uint64, n)
	copy(c, h.counts)
	h.counts = c
}

// Merge adds every value of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.count == 0 {
		return
	}
	if len(o.counts) > len(h.counts) {
		h.grow(len(o.counts) - 1)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.count == 0 || o.minUs < h.minUs {
		h.minUs = o.minUs
	}
	h.maxUs = max(h.maxUs, o.maxUs)
	h.count += o.count
	h.sumUs += o.sumUs
	h.negative += o.negative
}

// Count returns how many values were recorded.
func (h *Histogram) Count() uint64 { return h.count }

// Negative returns how many recorded values were below zero.
func (h *Histogram) Negative() uint64 { return h.negative }

// Max returns the largest value recorded, exactly (to the microsecond).
func (h *Histogram) Max() time.Duration { return time.Duration(h.maxUs) * time.Microsecond }

// Min returns the smallest value recorded.
func (h *Histogram) Min() time.Duration { return time.Duration(h.minUs) * time.Microsecond }

// Mean returns the average of the values recorded.
func (h *Histogram) Mean() time.Duration {
	if h.count == 0 {
		return 0
	}
	return time.Duration(h.sumUs / float64(h.count) * float64(time.Microsecond))
}

// Quantile returns the value at quantile q (0..1): the middle of the bucket
// holding the ceil(q·count)-th smallest value, clamped to the recorded
// minimum and maximum. An empty histogram returns 0.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.count == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.count)))
	rank = min(max(rank, 1), h.count)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			low, width := histBucket(i)
			v := low + (width-1)/2
			v = min(max(v, h.minUs), h.maxUs)
			return time.Duration(v) * time.Microsecond
		}
	}
	return h.Max()
}

// Summary returns the usual quantiles.
func (h *Histogram) Summary() LatencySummary {
	return LatencySummary{
		Count: h.count,
		Min:   h.Min(),
		Mean:  h.Mean(),
		P50:   h.Quantile(0.50),
		P90:   h.Quantile(0.90),
		P99:   h.Quantile(0.99),
		Max:   h.Max(),
	}
}

// LatencySummary condenses a Histogram. In JSON the durations are
// milliseconds (p50Ms, ...).
type LatencySummary struct {
	Count uint64
	Min   time.Duration
	Mean  time.Duration
	P50   time.Duration
	P90   time.Duration
	P99   time.Duration
	Max   time.Duration
}

// latencySummaryJSON is LatencySummary's JSON form.
type latencySummaryJSON struct {
	Count  uint64  `json:"count"`
	MinMs  float64 `json:"minMs"`
	MeanMs float64 `json:"meanMs"`
	P50Ms  float64 `json:"p50Ms"`
	P90Ms  float64 `json:"p90Ms"`
	P99Ms  float64 `json:"p99Ms"`
	MaxMs  float64 `json:"maxMs"`
}

// MarshalJSON encodes the summary with durations in milliseconds.
func (l LatencySummary) MarshalJSON() ([]byte, error) {
	return json.Marshal(latencySummaryJSON{l.Count, durationMs(l.Min), durationMs(l.Mean), durationMs(l.P50), durationMs(l.P90), durationMs(l.P99), durationMs(l.Max)})
}

// UnmarshalJSON reads what MarshalJSON writes, so that a saved report can
// be read back.
func (l *LatencySummary) UnmarshalJSON(b []byte) error {
	var v latencySummaryJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	ms := func(f float64) time.Duration { return time.Duration(math.Round(f * float64(time.Millisecond))) }
	*l = LatencySummary{Count: v.Count, Min: ms(v.MinMs), Mean: ms(v.MeanMs), P50: ms(v.P50Ms), P90: ms(v.P90Ms), P99: ms(v.P99Ms), Max: ms(v.MaxMs)}
	return nil
}

// syncHistogram is a Histogram shared by many viewers. Viewers record a
// whole frame's latencies under one lock acquisition.
type syncHistogram struct {
	mu sync.Mutex // guards h
	h  Histogram
}

func (s *syncHistogram) recordAll(ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	s.mu.Lock()
	for _, d := range ds {
		s.h.Record(d)
	}
	s.mu.Unlock()
}

// copyInto merges the histogram into dst.
func (s *syncHistogram) copyInto(dst *Histogram) {
	s.mu.Lock()
	dst.Merge(&s.h)
	s.mu.Unlock()
}

// CDF returns the distribution as at most about n points (Ms, Q): the share
// Q of values at or below Ms, at the upper edge of each bucket, thinned to
// points at least 1/n of the count apart, with the first and last kept. An
// empty histogram has none.
func (h *Histogram) CDF(n int) []CDFPoint {
	if h.count == 0 {
		return nil
	}
	n = max(n, 2)
	step := max(h.count/uint64(n), 1)
	var out []CDFPoint
	var seen, lastAt uint64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		seen += c
		if len(out) > 0 && seen-lastAt < step && seen < h.count {
			continue
		}
		low, width := histBucket(i)
		us := min(max(low+width-1, h.minUs), h.maxUs)
		out = append(out, CDFPoint{Ms: float64(us) / 1000, Q: float64(seen) / float64(h.count)})
		lastAt = seen
	}
	return out
}
