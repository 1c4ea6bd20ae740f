// Package store keeps rollup history: the buckets the aggregator flushes,
// one tier at a time, with a retention per tier.
//
// Writes are merges, never overwrites: the aggregator flushes deltas (the
// part of each bucket that arrived since its previous flush), so a late
// reading, a bucket that stays open across several flushes, or two cluster
// nodes writing the same bucket all add up exactly (see package rollup).
//
// A query combines stored buckets with the aggregator's unflushed ones. To
// count every reading once while a flush is in flight, each writer (an
// aggregator shard) numbers its batches, and a store records the highest
// batch it has applied per writer (its watermark) in the same step as the
// data; Select reports the watermarks that go with what it read, so the
// caller adds exactly the unflushed batches the store had not yet applied.
//
// Implementations are safe for concurrent use.
package store
