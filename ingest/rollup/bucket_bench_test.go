package rollup

import (
	"fmt"
	"testing"
)

// BenchmarkBucketAdd is the aggregator's per-reading cost: one Add into an
// open 1s bucket.
func BenchmarkBucketAdd(b *testing.B) {
	b.ReportAllocs()
	var bk Bucket
	tMs, v := int64(1_700_000_000_000), 21.5
	for b.Loop() {
		bk.Add(tMs, v)
		tMs++
		v += 0.25
	}
	if bk.Count == 0 {
		b.Fatal("nothing added")
	}
}

// BenchmarkBucketMerge is the cost of folding one flushed bucket into another
// (late readings, restarts, several nodes, and Downsample).
func BenchmarkBucketMerge(b *testing.B) {
	var src Bucket
	for i := range 16 {
		src.Add(1_700_000_000_000+int64(i)*60, float64(i))
	}
	b.ReportAllocs()
	var dst Bucket
	for b.Loop() {
		dst.Merge(&src)
	}
	if dst.Count == 0 {
		b.Fatal("nothing merged")
	}
}

// BenchmarkDownsample merges a day of buckets of one tier into the next
// coarser step, the work of a dashboard query over a day.
func BenchmarkDownsample(b *testing.B) {
	for _, bc := range []struct {
		from   Tier
		stepMs int64
		n      int
	}{
		{from: Tier1s, stepMs: Tier1m.StepMs(), n: 3600},
		{from: Tier1m, stepMs: Tier1h.StepMs(), n: 1440},
	} {
		b.Run(fmt.Sprintf("from=%v/to=%dms/buckets=%d", bc.from, bc.stepMs, bc.n), func(b *testing.B) {
			src := make([]Bucket, bc.n)
			for i := range src {
				src[i].StartMs = int64(i) * bc.from.StepMs()
				src[i].Add(src[i].StartMs, float64(i))
			}
			dst := make([]Bucket, 0, bc.n)
			b.ReportAllocs()
			for b.Loop() {
				dst = Downsample(dst[:0], src, bc.stepMs)
			}
		})
	}
}
