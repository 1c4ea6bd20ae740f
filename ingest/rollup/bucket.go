package rollup

import (
	"fmt"
	"math"
	"time"
)

// Bucket summarises the readings of one series whose times fall in
// [StartMs, StartMs+step). The zero Bucket (Count 0) is empty; Add and Merge
// on an empty bucket adopt the other side's values.
type Bucket struct {
	StartMs int64   // start of the bucket, Unix ms, a multiple of the step
	Count   int64   // number of readings
	Sum     float64 // sum of the values
	Min     float64 // smallest value
	Max     float64 // largest value
	FirstMs int64   // earliest reading time, Unix ms
	First   float64 // value at FirstMs
	LastMs  int64   // latest reading time, Unix ms
	Last    float64 // value at LastMs
}

// Add folds one reading into b. The caller chooses the bucket; Add does not
// check that tMs lies inside it.
func (b *Bucket) Add(tMs int64, v float64) {
	if b.Count == 0 {
		b.Count, b.Sum, b.Min, b.Max = 1, v, v, v
		b.FirstMs, b.First, b.LastMs, b.Last = tMs, v, tMs, v
		return
	}
	b.Count++
	b.Sum += v
	b.Min = math.Min(b.Min, v)
	b.Max = math.Max(b.Max, v)
	if earlier(tMs, v, b.FirstMs, b.First) {
		b.FirstMs, b.First = tMs, v
	}
	if later(tMs, v, b.LastMs, b.Last) {
		b.LastMs, b.Last = tMs, v
	}
}

// Merge folds o into b, as if every reading of o had been added to b. Both
// must have the same StartMs unless b is empty, in which case b becomes a
// copy of o.
func (b *Bucket) Merge(o *Bucket) {
	if o.Count == 0 {
		return
	}
	if b.Count == 0 {
		*b = *o
		return
	}
	b.Count += o.Count
	b.Sum += o.Sum
	b.Min = math.Min(b.Min, o.Min)
	b.Max = math.Max(b.Max, o.Max)
	if earlier(o.FirstMs, o.First, b.FirstMs, b.First) {
		b.FirstMs, b.First = o.FirstMs, o.First
	}
	if later(o.LastMs, o.Last, b.LastMs, b.Last) {
		b.LastMs, b.Last = o.LastMs, o.Last
	}
}

// Mean is Sum/Count, or NaN for an empty bucket. It is clamped to
// [Min, Max]: rounding in Sum can put the quotient an ulp outside (three
// readings of 0.1 sum to 0.30000000000000004, whose third is above 0.1), and
// a Sum that overflowed to ±Inf or NaN would otherwise escape as a mean no
// reading had. Charts draw the mean inside the min-max band, so it must stay
// there.
func (b *Bucket) Mean() float64 {
	if b.Count == 0 {
		return math.NaN()
	}
	m := b.Sum / float64(b.Count)
	switch {
	case m < b.Min:
		return b.Min
	case m > b.Max:
		return b.Max
	case m != m: // NaN: +Inf and -Inf partial sums met
		return b.Min/2 + b.Max/2
	}
	return m
}

// earlier reports whether (t, v) should replace (bt, bv) as a bucket's first
// reading. Equal times are broken by the smaller value so that the outcome
// does not depend on the order readings or partial buckets arrive in.
func earlier(t int64, v float64, bt int64, bv float64) bool {
	return t < bt || (t == bt && v < bv)
}

// later is earlier's mirror for a bucket's last reading: equal times keep the
// larger value.
func later(t int64, v float64, bt int64, bv float64) bool {
	return t > bt || (t == bt && v > bv)
}

// Floor returns the start of the step-sized bucket that holds tMs, aligned to
// the Unix epoch. It rounds towards minus infinity, so times before 1970 fall
// into the right bucket too. stepMs must be positive.
func Floor(tMs, stepMs int64) int64 {
	r := tMs % stepMs
	if r < 0 {
		r += stepMs
	}
	return tMs - r
}

// Tier is one of the fixed resolutions rollups are kept at.
type Tier uint8

// The tiers, finest first. Their order is relied on: a coarser tier's step is
// a multiple of every finer one's.
const (
	Tier1s Tier = iota
	Tier1m
	Tier1h
	NumTiers int = iota
)

// Tiers lists every tier, finest first.
var Tiers = [NumTiers]Tier{Tier1s, Tier1m, Tier1h}

var tierSteps = [NumTiers]int64{1000, 60_000, 3_600_000}

var tierNames = [NumTiers]string{"1s", "1m", "1h"}

// StepMs is the width of the tier's buckets in milliseconds.
func (t Tier) StepMs() int64 { return tierSteps[t] }

// Step is StepMs as a duration.
func (t Tier) Step() time.Duration { return time.Duration(tierSteps[t]) * time.Millisecond }

// String returns the tier's name: "1s", "1m" or "1h".
func (t Tier) String() string {
	if int(t) < NumTiers {
		return tierNames[t]
	}
	return fmt.Sprintf("tier(%d)", uint8(t))
}

// ParseTier is the inverse of String.
func ParseTier(s string) (Tier, error) {
	for i, n := range tierNames {
		if n == s {
			return Tier(i), nil
		}
	}
	return 0, fmt.Errorf("unknown tier %q", s)
}

// TierFor returns the coarsest tier whose step divides stepMs, the tier a
// query at that step is best merged from. ok is false when no tier divides
// it (stepMs is not a positive multiple of one second).
func TierFor(stepMs int64) (t Tier, ok bool) {
	if stepMs <= 0 {
		return 0, false
	}
	for i := NumTiers - 1; i >= 0; i-- {
		if stepMs%tierSteps[i] == 0 {
			return Tier(i), true
		}
	}
	return 0, false
}

// Downsample merges buckets (sorted by StartMs, all of one tier) into buckets
// of stepMs, which must be a multiple of the tier's step. Empty buckets in src
// are skipped, so empty groups are omitted. The result is appended to dst:
// the buckets already in dst are never merged into, even when the last one
// has the same StartMs as the first new group.
func Downsample(dst []Bucket, src []Bucket, stepMs int64) []Bucket {
	first := len(dst)
	for i := range src {
		if src[i].Count == 0 {
			// Merging into or from an empty bucket copies StartMs, which
			// would leave an unaligned group start behind.
			continue
		}
		start := Floor(src[i].StartMs, stepMs)
		if n := len(dst); n > first && dst[n-1].StartMs == start {
			dst[n-1].Merge(&src[i])
			continue
		}
		b := src[i]
		b.StartMs = start
		dst = append(dst, b)
	}
	return dst
}
