package rollup

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sample is one reading folded into a bucket.
type sample struct {
	tMs int64
	v   float64
}

// addAll returns the bucket of samples, added one by one.
func addAll(startMs int64, samples []sample) Bucket {
	b := Bucket{StartMs: startMs}
	for _, s := range samples {
		b.Add(s.tMs, s.v)
	}
	return b
}

func TestBucketAdd(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples []sample
		want    Bucket
	}{
		{
			name:    "one reading",
			samples: []sample{{1500, 2}},
			want:    Bucket{StartMs: 1000, Count: 1, Sum: 2, Min: 2, Max: 2, FirstMs: 1500, First: 2, LastMs: 1500, Last: 2},
		},
		{
			name:    "in time order",
			samples: []sample{{1000, 3}, {1200, -1}, {1900, 5}},
			want:    Bucket{StartMs: 1000, Count: 3, Sum: 7, Min: -1, Max: 5, FirstMs: 1000, First: 3, LastMs: 1900, Last: 5},
		},
		{
			name:    "out of time order",
			samples: []sample{{1900, 5}, {1000, 3}, {1200, -1}},
			want:    Bucket{StartMs: 1000, Count: 3, Sum: 7, Min: -1, Max: 5, FirstMs: 1000, First: 3, LastMs: 1900, Last: 5},
		},
		{
			name:    "negative values only",
			samples: []sample{{1000, -3}, {1001, -7}},
			want:    Bucket{StartMs: 1000, Count: 2, Sum: -10, Min: -7, Max: -3, FirstMs: 1000, First: -3, LastMs: 1001, Last: -7},
		},
		{
			name:    "equal timestamps keep the smaller first and the larger last",
			samples: []sample{{1000, 4}, {1000, 2}, {1000, 9}},
			want:    Bucket{StartMs: 1000, Count: 3, Sum: 15, Min: 2, Max: 9, FirstMs: 1000, First: 2, LastMs: 1000, Last: 9},
		},
		{
			name:    "zero value readings",
			samples: []sample{{1000, 0}, {1500, 0}},
			want:    Bucket{StartMs: 1000, Count: 2, FirstMs: 1000, LastMs: 1500},
		},
		{
			name:    "Add does not check the bucket range",
			samples: []sample{{-5, 1}, {99_999, 2}},
			want:    Bucket{StartMs: 1000, Count: 2, Sum: 3, Min: 1, Max: 2, FirstMs: -5, First: 1, LastMs: 99_999, Last: 2},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, addAll(1000, tc.samples))
		})
	}
}

func TestBucketMean(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples []sample
		want    float64
	}{
		{name: "one reading", samples: []sample{{0, 2.5}}, want: 2.5},
		{name: "several", samples: []sample{{0, 1}, {1, 2}, {2, 6}}, want: 3},
		{name: "negative", samples: []sample{{0, -1}, {1, -2}}, want: -1.5},
		// 0.1+0.1+0.1 is 0.30000000000000004, whose third is above 0.1:
		// the mean of a constant series must be that constant.
		{name: "constant series does not round above max", samples: []sample{{0, 0.1}, {1, 0.1}, {2, 0.1}}, want: 0.1},
		{name: "constant series does not round below min", samples: []sample{{0, 0.7}, {1, 0.7}, {2, 0.7}}, want: 0.7},
		// The sum overflows, the mean must not.
		{name: "sum overflows to +Inf", samples: []sample{{0, math.MaxFloat64}, {1, math.MaxFloat64}}, want: math.MaxFloat64},
		{name: "sum overflows to -Inf", samples: []sample{{0, -math.MaxFloat64}, {1, -math.MaxFloat64}}, want: -math.MaxFloat64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := addAll(0, tc.samples)
			m := b.Mean()
			require.Equal(t, tc.want, m)
			require.GreaterOrEqual(t, m, b.Min)
			require.LessOrEqual(t, m, b.Max)
		})
	}
	t.Run("sums overflowed both ways", func(t *testing.T) {
		// +Inf + -Inf is NaN: the mean falls back to the middle of the range.
		up := addAll(0, []sample{{0, math.MaxFloat64}, {1, math.MaxFloat64}})
		down := addAll(0, []sample{{2, -math.MaxFloat64}, {3, -math.MaxFloat64}, {4, -math.MaxFloat64}})
		up.Merge(&down)
		require.True(t, math.IsNaN(up.Sum))
		require.Equal(t, 0.0, up.Mean())
	})
	t.Run("empty bucket", func(t *testing.T) {
		var b Bucket
		require.True(t, math.IsNaN(b.Mean()))
	})
}

func TestBucketMerge(t *testing.T) {
	full := addAll(1000, []sample{{1100, 5}, {1800, 1}})
	t.Run("empty into full is a no-op", func(t *testing.T) {
		b := full
		b.Merge(&Bucket{StartMs: 7})
		require.Equal(t, full, b)
	})
	t.Run("full into empty copies", func(t *testing.T) {
		var b Bucket
		b.Merge(&full)
		require.Equal(t, full, b)
	})
	t.Run("empty into empty stays empty", func(t *testing.T) {
		b := Bucket{StartMs: 1000}
		b.Merge(&Bucket{})
		require.Equal(t, Bucket{StartMs: 1000}, b)
	})
	t.Run("disjoint halves", func(t *testing.T) {
		all := []sample{{1000, 3}, {1200, -1}, {1500, 8}, {1900, 5}}
		a, b := addAll(1000, all[:2]), addAll(1000, all[2:])
		a.Merge(&b)
		require.Equal(t, addAll(1000, all), a)
	})
	t.Run("interleaved halves", func(t *testing.T) {
		all := []sample{{1000, 3}, {1200, -1}, {1500, 8}, {1900, 5}}
		a := addAll(1000, []sample{all[0], all[3]})
		b := addAll(1000, []sample{all[1], all[2]})
		b.Merge(&a)
		require.Equal(t, addAll(1000, all), b)
	})
	t.Run("merge does not modify its argument", func(t *testing.T) {
		a, b := addAll(1000, []sample{{1000, 1}}), addAll(1000, []sample{{1001, 2}})
		orig := b
		a.Merge(&b)
		require.Equal(t, orig, b)
	})
}

// TestBucketTieBreak checks that readings sharing a timestamp give the same
// First and Last whatever order they are added or merged in: a restarted
// writer or a second node must produce the same bucket.
func TestBucketTieBreak(t *testing.T) {
	for _, tc := range []struct {
		name      string
		samples   []sample
		wantFirst float64
		wantLast  float64
	}{
		{name: "all at one time", samples: []sample{{1000, 4}, {1000, -2}, {1000, 9}, {1000, 0}}, wantFirst: -2, wantLast: 9},
		{name: "ties at both ends", samples: []sample{{1000, 4}, {1000, 1}, {1500, 0}, {1999, 7}, {1999, 3}}, wantFirst: 1, wantLast: 7},
		{name: "tie at the start only", samples: []sample{{1000, 4}, {1000, 1}, {1500, 0}}, wantFirst: 1, wantLast: 0},
		{name: "duplicate readings", samples: []sample{{1000, 4}, {1000, 4}, {1000, 4}}, wantFirst: 4, wantLast: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want *Bucket
			permute(tc.samples, func(p []sample) {
				got := addAll(1000, p)
				require.Equal(t, tc.wantFirst, got.First, "order %v", p)
				require.Equal(t, tc.wantLast, got.Last, "order %v", p)
				if want == nil {
					want = &got
				}
				require.Equal(t, *want, got, "order %v", p)

				// One bucket per reading, merged in this order.
				var merged Bucket
				for _, s := range p {
					one := addAll(1000, []sample{s})
					merged.Merge(&one)
				}
				require.Equal(t, *want, merged, "merge order %v", p)
			})
		})
	}
}

// permute calls f with every ordering of s (Heap's algorithm).
func permute(s []sample, f func([]sample)) {
	p := append([]sample(nil), s...)
	var gen func(k int)
	gen = func(k int) {
		if k <= 1 {
			f(p)
			return
		}
		for i := range k {
			gen(k - 1)
			if k%2 == 0 {
				p[i], p[k-1] = p[k-1], p[i]
			} else {
				p[0], p[k-1] = p[k-1], p[0]
			}
		}
	}
	gen(len(p))
}

func TestFloor(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tMs    int64
		stepMs int64
		want   int64
	}{
		{name: "zero", tMs: 0, stepMs: 1000, want: 0},
		{name: "inside first bucket", tMs: 999, stepMs: 1000, want: 0},
		{name: "on a boundary", tMs: 1000, stepMs: 1000, want: 1000},
		{name: "inside a bucket", tMs: 1_700_000_000_123, stepMs: 1000, want: 1_700_000_000_000},
		{name: "minute", tMs: 1_700_000_000_123, stepMs: 60_000, want: 1_699_999_980_000},
		{name: "hour", tMs: 1_700_000_000_123, stepMs: 3_600_000, want: 1_699_999_200_000},
		{name: "step of one", tMs: 12345, stepMs: 1, want: 12345},
		{name: "odd step", tMs: 10, stepMs: 7, want: 7},
		{name: "just before the epoch", tMs: -1, stepMs: 1000, want: -1000},
		{name: "negative boundary", tMs: -1000, stepMs: 1000, want: -1000},
		{name: "just before a negative boundary", tMs: -1001, stepMs: 1000, want: -2000},
		{name: "1969 in hours", tMs: -1_800_000, stepMs: 3_600_000, want: -3_600_000},
		{name: "negative odd step", tMs: -10, stepMs: 7, want: -14},
		{name: "near max int64", tMs: math.MaxInt64, stepMs: 1000, want: math.MaxInt64 - 807},
		{name: "near min int64", tMs: math.MinInt64 + 1000, stepMs: 1000, want: math.MinInt64 + 808},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Floor(tc.tMs, tc.stepMs)
			require.Equal(t, tc.want, got)
			require.LessOrEqual(t, got, tc.tMs)
			require.Less(t, tc.tMs-got, tc.stepMs)
			require.Zero(t, got%tc.stepMs)
		})
	}
}

func TestTier(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tier   Tier
		stepMs int64
		step   time.Duration
	}{
		{name: "1s", tier: Tier1s, stepMs: 1000, step: time.Second},
		{name: "1m", tier: Tier1m, stepMs: 60_000, step: time.Minute},
		{name: "1h", tier: Tier1h, stepMs: 3_600_000, step: time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.name, tc.tier.String())
			require.Equal(t, tc.stepMs, tc.tier.StepMs())
			require.Equal(t, tc.step, tc.tier.Step())
			got, err := ParseTier(tc.name)
			require.NoError(t, err)
			require.Equal(t, tc.tier, got)
		})
	}
	t.Run("tiers are finest first and nest", func(t *testing.T) {
		require.Len(t, Tiers, NumTiers)
		for i, tier := range Tiers {
			require.Equal(t, Tier(i), tier)
			if i > 0 {
				prev := Tiers[i-1].StepMs()
				require.Greater(t, tier.StepMs(), prev)
				require.Zero(t, tier.StepMs()%prev, "%v is a multiple of %v", tier, Tiers[i-1])
			}
			// Every tier's buckets tile whole days, so day boundaries line up.
			require.Zero(t, (24*time.Hour).Milliseconds()%tier.StepMs())
		}
	})
	t.Run("String of an unknown tier", func(t *testing.T) {
		require.Equal(t, "tier(3)", Tier(NumTiers).String())
		require.Equal(t, "tier(255)", Tier(255).String())
	})
	for _, name := range []string{"", "1S", "1d", "5m", " 1s", "tier(0)", "1h "} {
		t.Run("ParseTier "+name, func(t *testing.T) {
			_, err := ParseTier(name)
			require.Error(t, err)
			require.Contains(t, err.Error(), "unknown tier")
		})
	}
}

func TestTierFor(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stepMs int64
		want   Tier
		ok     bool
	}{
		{name: "one second", stepMs: 1000, want: Tier1s, ok: true},
		{name: "two seconds", stepMs: 2000, want: Tier1s, ok: true},
		{name: "ninety seconds", stepMs: 90_000, want: Tier1s, ok: true},
		{name: "one minute", stepMs: 60_000, want: Tier1m, ok: true},
		{name: "five minutes", stepMs: 300_000, want: Tier1m, ok: true},
		{name: "ninety minutes", stepMs: 5_400_000, want: Tier1m, ok: true},
		{name: "one hour", stepMs: 3_600_000, want: Tier1h, ok: true},
		{name: "one day", stepMs: 86_400_000, want: Tier1h, ok: true},
		{name: "one week", stepMs: 7 * 86_400_000, want: Tier1h, ok: true},
		{name: "half a second", stepMs: 500, ok: false},
		{name: "one and a half seconds", stepMs: 1500, ok: false},
		{name: "one millisecond", stepMs: 1, ok: false},
		{name: "zero", stepMs: 0, ok: false},
		{name: "negative", stepMs: -60_000, ok: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := TierFor(tc.stepMs)
			require.Equal(t, tc.ok, ok)
			if !ok {
				return
			}
			require.Equal(t, tc.want, got)
			require.Zero(t, tc.stepMs%got.StepMs())
			if int(got)+1 < NumTiers {
				require.NotZero(t, tc.stepMs%Tier(got+1).StepMs(), "a coarser tier would do")
			}
		})
	}
}

func TestDownsample(t *testing.T) {
	// secs builds 1s buckets, one reading each, at the given seconds.
	secs := func(pairs ...float64) []Bucket {
		var bs []Bucket
		for i := 0; i < len(pairs); i += 2 {
			tMs := int64(pairs[i] * 1000)
			b := Bucket{StartMs: Floor(tMs, 1000)}
			b.Add(tMs, pairs[i+1])
			bs = append(bs, b)
		}
		return bs
	}
	for _, tc := range []struct {
		name   string
		src    []Bucket
		stepMs int64
		want   func(src []Bucket) []Bucket
	}{
		{
			name:   "no buckets",
			src:    nil,
			stepMs: 60_000,
			want:   func([]Bucket) []Bucket { return nil },
		},
		{
			name:   "one group",
			src:    secs(0, 1, 1, 2, 59, 3),
			stepMs: 60_000,
			want: func([]Bucket) []Bucket {
				return []Bucket{{StartMs: 0, Count: 3, Sum: 6, Min: 1, Max: 3, FirstMs: 0, First: 1, LastMs: 59_000, Last: 3}}
			},
		},
		{
			name:   "gaps are omitted",
			src:    secs(0, 1, 59, 2, 180, 3, 181, 4),
			stepMs: 60_000,
			want: func([]Bucket) []Bucket {
				return []Bucket{
					{StartMs: 0, Count: 2, Sum: 3, Min: 1, Max: 2, FirstMs: 0, First: 1, LastMs: 59_000, Last: 2},
					{StartMs: 180_000, Count: 2, Sum: 7, Min: 3, Max: 4, FirstMs: 180_000, First: 3, LastMs: 181_000, Last: 4},
				}
			},
		},
		{
			name:   "before the epoch",
			src:    secs(-61, 1, -60, 2, -1, 3, 0, 4),
			stepMs: 60_000,
			want: func([]Bucket) []Bucket {
				return []Bucket{
					{StartMs: -120_000, Count: 1, Sum: 1, Min: 1, Max: 1, FirstMs: -61_000, First: 1, LastMs: -61_000, Last: 1},
					{StartMs: -60_000, Count: 2, Sum: 5, Min: 2, Max: 3, FirstMs: -60_000, First: 2, LastMs: -1000, Last: 3},
					{StartMs: 0, Count: 1, Sum: 4, Min: 4, Max: 4, FirstMs: 0, First: 4, LastMs: 0, Last: 4},
				}
			},
		},
		{
			name:   "same step is a copy",
			src:    secs(1, 1, 2, 2, 5, 3),
			stepMs: 1000,
			want:   func(src []Bucket) []Bucket { return src },
		},
		{
			name:   "a step that is not a tier",
			src:    secs(0, 1, 1, 2, 2, 3, 3, 4, 4, 5),
			stepMs: 2000,
			want: func([]Bucket) []Bucket {
				return []Bucket{
					{StartMs: 0, Count: 2, Sum: 3, Min: 1, Max: 2, FirstMs: 0, First: 1, LastMs: 1000, Last: 2},
					{StartMs: 2000, Count: 2, Sum: 7, Min: 3, Max: 4, FirstMs: 2000, First: 3, LastMs: 3000, Last: 4},
					{StartMs: 4000, Count: 1, Sum: 5, Min: 5, Max: 5, FirstMs: 4000, First: 5, LastMs: 4000, Last: 5},
				}
			},
		},
		{
			name:   "empty source buckets are skipped",
			src:    append(append([]Bucket{{StartMs: 0}}, secs(1, 1, 2, 2)...), Bucket{StartMs: 60_000}, Bucket{StartMs: 61_000}),
			stepMs: 60_000,
			want: func([]Bucket) []Bucket {
				return []Bucket{{StartMs: 0, Count: 2, Sum: 3, Min: 1, Max: 2, FirstMs: 1000, First: 1, LastMs: 2000, Last: 2}}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := append([]Bucket(nil), tc.src...)
			got := Downsample(nil, tc.src, tc.stepMs)
			require.Equal(t, tc.want(orig), got)
			require.Equal(t, orig, tc.src, "Downsample must not modify src")
			for i, b := range got {
				require.NotZero(t, b.Count)
				require.Zero(t, b.StartMs%tc.stepMs, "aligned start")
				if i > 0 {
					require.Greater(t, b.StartMs, got[i-1].StartMs, "one bucket per group, in order")
				}
			}
		})
	}
	t.Run("appends to dst without merging into it", func(t *testing.T) {
		prev := addAll(0, []sample{{30_000, 100}})
		dst := make([]Bucket, 1, 4)
		dst[0] = prev
		got := Downsample(dst, secs(0, 1, 1, 2), 60_000)
		require.Len(t, got, 2)
		require.Equal(t, prev, got[0], "dst's own buckets are left alone")
		require.Equal(t, addAll(0, []sample{{0, 1}, {1000, 2}}), got[1])
	})
	t.Run("matches adding the raw readings", func(t *testing.T) {
		// Readings over three hours at a 7s cadence, rolled up to 1s and 1m
		// buckets and downsampled to 1m and 1h: the same as adding them to
		// buckets of that step directly.
		var raw []sample
		for tMs := int64(-3_600_000); tMs < 7_200_000; tMs += 7_000 {
			raw = append(raw, sample{tMs, float64(tMs%13_000) / 7})
		}
		rollup := func(stepMs int64) []Bucket {
			var bs []Bucket
			for _, s := range raw {
				start := Floor(s.tMs, stepMs)
				if n := len(bs); n == 0 || bs[n-1].StartMs != start {
					bs = append(bs, Bucket{StartMs: start})
				}
				bs[len(bs)-1].Add(s.tMs, s.v)
			}
			return bs
		}
		for _, tc := range []struct {
			name     string
			from, to Tier
		}{
			{name: "1s to 1m", from: Tier1s, to: Tier1m},
			{name: "1s to 1h", from: Tier1s, to: Tier1h},
			{name: "1m to 1h", from: Tier1m, to: Tier1h},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got := Downsample(nil, rollup(tc.from.StepMs()), tc.to.StepMs())
				want := rollup(tc.to.StepMs())
				require.Len(t, got, len(want))
				for i := range want {
					// Each bucket's readings share a sign: |Sum| is the sum of
					// their absolute values.
					requireEqualBucket(t, &want[i], &got[i], math.Abs(want[i].Sum), "bucket %d", i)
				}
			})
		}
	})
}
