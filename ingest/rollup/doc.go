// Package rollup is the downsampling arithmetic of Telegauge: buckets that
// summarise the readings of one series over a fixed step, and the tiers
// (1s, 1m, 1h) they are kept at.
//
// A Bucket is mergeable: merging the buckets of any partition of a set of
// readings gives the bucket of the whole set, in any order. That is what lets
// late readings, restarts (a partial bucket flushed before a crash plus the
// rest after it) and several cluster nodes combine exactly. The one place where
// order could leak in, two readings with the same timestamp competing for
// First or Last, is broken by value so that the result is still independent
// of order.
//
// The package has no goroutines, no I/O and no locks; callers own their
// buckets.
package rollup
