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
//
// Memory keeps history in memory. SQL keeps it in SQLite (the default, a
// file in the data directory, through the pure-Go modernc.org/sqlite) or
// PostgreSQL (through pgx; a TimescaleDB hypertable when the extension is
// installed), and also holds the server's devices, saved dashboards and
// operators. Open runs the schema migrations embedded in the binary
// (migrations/, one folder per dialect, applied with goose) before
// returning; neither constructor starts a goroutine: Run prunes expired
// buckets until its context ends.
//
// SQL's Append and Prune share the database's writer: SQLite has one, so
// a prune works in short transactions and Append waits at most one of
// them. Select never waits for the database's writer, only for the
// moment a batch commits and its watermark moves.
//
// Lock order in SQL: pruneMu, appendMu, mu. Memory has one lock.
package store
