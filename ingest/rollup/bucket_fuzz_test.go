package rollup

import (
	"cmp"
	"encoding/binary"
	"math"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// fuzzSampleBytes is the size of one reading in FuzzRollup's input: a time
// byte, a 4-byte mantissa, an exponent byte and a partition byte.
const fuzzSampleBytes = 7

// fuzzSamples derives readings from fuzz bytes. Values are int32 mantissas
// scaled by 2^[-20,20], so they are finite, cover signs, zeros, repeats and a
// wide range of magnitudes, and the sum of a few hundred cannot overflow.
// Times are multiples of 500 ms over about a minute, so equal timestamps are
// common. parts[i] is the partition reading i goes to.
func fuzzSamples(data []byte) (k int, samples []sample, parts []int) {
	if len(data) < 2 {
		return 1, nil, nil
	}
	k = 1 + int(data[0]%6)
	startMs := int64(1_700_000_000_000) // 20 s into a minute: the readings span two
	if data[1]&1 == 1 {
		startMs = -61_000 // before the epoch
	}
	data = data[2:]
	for len(data) >= fuzzSampleBytes && len(samples) < 512 {
		tMs := startMs + int64(data[0]%128)*500
		mant := int32(binary.LittleEndian.Uint32(data[1:5]))
		v := math.Ldexp(float64(mant), int(data[5]%41)-20)
		samples = append(samples, sample{tMs, v})
		parts = append(parts, int(data[6])%k)
		data = data[fuzzSampleBytes:]
	}
	return k, samples, parts
}

// encodeFuzzSamples is fuzzSamples' inverse for seeds: it turns (time step,
// mantissa, exponent, part) tuples into FuzzRollup input.
func encodeFuzzSamples(k byte, negative bool, tuples ...[4]int64) []byte {
	b := []byte{k - 1, 0}
	if negative {
		b[1] = 1
	}
	for _, tu := range tuples {
		var s [fuzzSampleBytes]byte
		s[0] = byte(tu[0])
		binary.LittleEndian.PutUint32(s[1:5], uint32(int32(tu[1])))
		s[5] = byte(tu[2] + 20)
		s[6] = byte(tu[3])
		b = append(b, s[:]...)
	}
	return b
}

func FuzzRollup(f *testing.F) {
	f.Add([]byte{})
	f.Add(encodeFuzzSamples(1, false, [4]int64{0, 215, -1, 0}))
	f.Add(encodeFuzzSamples(2, false, [4]int64{0, 215, -1, 0}, [4]int64{1, 402, -1, 1}, [4]int64{2, -3, 0, 0}))
	// Equal timestamps split across parts: First/Last tie-breaking.
	f.Add(encodeFuzzSamples(3, false, [4]int64{5, 4, 0, 0}, [4]int64{5, -2, 0, 1}, [4]int64{5, 9, 0, 2}, [4]int64{5, 0, 0, 1}))
	// Before the epoch, across minute boundaries.
	f.Add(encodeFuzzSamples(4, true, [4]int64{0, 1, 0, 0}, [4]int64{2, 2, 0, 1}, [4]int64{3, 3, 0, 2}, [4]int64{127, 4, 0, 3}))
	// Wide magnitudes: cancellation in Sum.
	f.Add(encodeFuzzSamples(2, false, [4]int64{0, math.MaxInt32, 20, 0}, [4]int64{1, 1, -20, 1}, [4]int64{2, math.MinInt32, 20, 0}, [4]int64{3, 3, -7, 1}))
	// Constant values: the mean must not round outside [min, max].
	f.Add(encodeFuzzSamples(3, false, [4]int64{0, 13421773, -27, 0}, [4]int64{1, 13421773, -27, 1}, [4]int64{2, 13421773, -27, 2}))

	f.Fuzz(func(t *testing.T, data []byte) {
		k, samples, parts := fuzzSamples(data)
		n := len(samples)
		whole := addAll(0, samples)

		// Count is preserved; an empty bucket stays the zero Bucket.
		require.Equal(t, int64(n), whole.Count)
		if n == 0 {
			require.Equal(t, Bucket{}, whole)
			require.True(t, math.IsNaN(whole.Mean()))
			return
		}

		// The reference: the summary computed directly from the readings.
		want := Bucket{Count: int64(n), Min: math.Inf(1), Max: math.Inf(-1), FirstMs: math.MaxInt64, LastMs: math.MinInt64}
		var absSum float64
		for _, s := range samples {
			want.Sum += s.v
			absSum += math.Abs(s.v)
			want.Min = math.Min(want.Min, s.v)
			want.Max = math.Max(want.Max, s.v)
			want.FirstMs = min(want.FirstMs, s.tMs)
			want.LastMs = max(want.LastMs, s.tMs)
		}
		want.First, want.Last = math.Inf(1), math.Inf(-1)
		for _, s := range samples {
			if s.tMs == want.FirstMs {
				want.First = math.Min(want.First, s.v)
			}
			if s.tMs == want.LastMs {
				want.Last = math.Max(want.Last, s.v)
			}
		}
		requireEqualBucket(t, &want, &whole, absSum, "added in order")

		// min <= mean <= max, exactly: Mean clamps the rounding of Sum/Count.
		mean := whole.Mean()
		require.False(t, math.IsNaN(mean))
		require.LessOrEqual(t, whole.Min, mean)
		require.LessOrEqual(t, mean, whole.Max)
		require.InDelta(t, want.Sum/float64(n), mean, 1e-9*absSum/float64(n)+1e-300)

		// Adding in reverse order gives the same bucket.
		rev := slices.Clone(samples)
		slices.Reverse(rev)
		reversed := addAll(0, rev)
		requireEqualBucket(t, &whole, &reversed, absSum, "added in reverse")

		// Merging the buckets of any partition, in any order, is adding
		// everything to one bucket.
		partBuckets := make([]Bucket, k)
		for i, s := range samples {
			partBuckets[parts[i]].Add(s.tMs, s.v)
		}
		for _, order := range [][]int{ascending(k), descending(k), rotated(k, int(data[1])%k)} {
			var merged Bucket
			for _, i := range order {
				merged.Merge(&partBuckets[i])
			}
			requireEqualBucket(t, &whole, &merged, absSum, "merged in order %v", order)
		}
		// And as a tree: pairs, then pairs of pairs.
		level := slices.Clone(partBuckets)
		for len(level) > 1 {
			var next []Bucket
			for i := 0; i < len(level); i += 2 {
				b := level[i]
				if i+1 < len(level) {
					b.Merge(&level[i+1])
				}
				next = append(next, b)
			}
			level = next
		}
		requireEqualBucket(t, &whole, &level[0], absSum, "merged as a tree")

		// Rolling up at 1s and downsampling is rolling up at the coarser
		// step directly, and every reading lies in its bucket.
		oneSec := rollupBuckets(samples, Tier1s.StepMs())
		for _, tier := range []Tier{Tier1m, Tier1h} {
			step := tier.StepMs()
			direct := rollupBuckets(samples, step)
			down := Downsample(nil, oneSec, step)
			require.Len(t, down, len(direct), "%v buckets", tier)
			for i := range direct {
				requireEqualBucket(t, &direct[i], &down[i], absSum, "%v bucket %d", tier, i)
			}
		}
		for _, s := range samples {
			for _, tier := range Tiers {
				// A plain if: a require call per reading and tier would be
				// most of the fuzzer's time.
				step := tier.StepMs()
				if fl := Floor(s.tMs, step); fl%step != 0 || fl > s.tMs || s.tMs-fl >= step {
					t.Fatalf("Floor(%d, %d) = %d", s.tMs, step, fl)
				}
			}
		}
	})
}

// rollupBuckets adds samples (in any order) to step-aligned buckets and
// returns them sorted by StartMs, as the aggregator would have flushed them.
func rollupBuckets(samples []sample, stepMs int64) []Bucket {
	byStart := map[int64]*Bucket{}
	for _, s := range samples {
		start := Floor(s.tMs, stepMs)
		b := byStart[start]
		if b == nil {
			b = &Bucket{StartMs: start}
			byStart[start] = b
		}
		b.Add(s.tMs, s.v)
	}
	out := make([]Bucket, 0, len(byStart))
	for _, b := range byStart {
		out = append(out, *b)
	}
	slices.SortFunc(out, func(a, b Bucket) int { return cmp.Compare(a.StartMs, b.StartMs) })
	return out
}

// requireEqualBucket compares two summaries of the same readings: exactly,
// but for Sum, which rounds differently in a different order. absSum (the
// sum of the readings' absolute values) bounds that rounding error.
func requireEqualBucket(t testing.TB, want, got *Bucket, absSum float64, msgAndArgs ...any) {
	t.Helper()
	require.InDelta(t, want.Sum, got.Sum, 1e-9*absSum+1e-300, msgAndArgs...)
	w, g := *want, *got
	w.Sum, g.Sum = 0, 0
	require.Equal(t, w, g, msgAndArgs...)
}

func ascending(k int) []int {
	o := make([]int, k)
	for i := range o {
		o[i] = i
	}
	return o
}

func descending(k int) []int {
	o := ascending(k)
	slices.Reverse(o)
	return o
}

func rotated(k, by int) []int {
	o := ascending(k)
	return append(o[by:], o[:by]...)
}
