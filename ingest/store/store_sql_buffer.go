package store

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/telegauge/telegauge/ingest/rollup"
)

// On SQLite, Append keeps every tier's deltas in memory, merged, and
// writes them to rollups every WriteInterval, when too many pile up, by
// Run when idle, and at Close. Rollups are clustered by series, so a flush
// that upserts one row for each of 10,000 series dirties 10,000 pages:
// written every second, that was ~2 KiB of WAL and checkpoint writes per
// reading at one reading per second per series, and a tenth of the
// server's CPU. Buffered, a series' pages are dirtied once per interval.
//
// Durability does not suffer: each append records, in one transaction, a
// journal row (write_journal) with the per-second deltas it left in memory
// and the keys of the new per-minute and per-hour buckets it left there.
// The rows of one append are contiguous, so this is one short sequential
// write. Writing the buffer out merges it into rollups and empties the
// journal, in one transaction. At start, a journal that is not empty means
// the last run died with deltas in memory: its per-second deltas are
// merged into rollups, then every minute and hour it names is recomputed
// from the tier below (a minute from its seconds, an hour from its
// minutes), replacing the stored row, so no reading is counted twice. Only
// a minute whose seconds are past retention cannot be recomputed; it
// keeps its stored value (see replayJournal).
//
// PostgreSQL may be shared by several nodes, whose deltas for one bucket a
// recomputation could not tell apart, so it writes every tier at once.

const (
	// DefaultWriteInterval is how long SQLite keeps deltas in memory.
	DefaultWriteInterval = 30 * time.Second
	// bufferMaxBuckets bounds the buckets kept in memory (about 100 bytes
	// each); more make the next append write them.
	bufferMaxBuckets = 500_000
)

// bucketKey names a stored bucket.
type bucketKey struct {
	id    int64
	tier  rollup.Tier
	start int64
}

// tierStart names a bucket of one series.
type tierStart struct {
	tier  rollup.Tier
	start int64
}

// writeBuffer is the deltas held in memory. Append writes it under
// appendMu and mu; Select reads it under mu.
type writeBuffer struct {
	series  map[int64]map[tierStart]rollup.Bucket // by series id
	n       int                                   // buckets held
	written time.Time                             // when it was last written out
}

func newWriteBuffer(now time.Time) *writeBuffer {
	return &writeBuffer{series: make(map[int64]map[tierStart]rollup.Bucket), written: now}
}

// due reports whether the next append should write the buffer out, given
// that it brings adding more buckets.
func (c *writeBuffer) due(now time.Time, interval time.Duration, adding int) bool {
	return c.n > 0 && (now.Sub(c.written) >= interval || c.n+adding > bufferMaxBuckets)
}

// has reports whether the buffer holds a delta for r's bucket.
func (c *writeBuffer) has(r *sqlRow) bool {
	_, ok := c.series[r.id][tierStart{r.tier, r.StartMs}]
	return ok
}

// Journal entry tags: the tier in the low bits, and flags.
const (
	tagDelta  = 0x80 // a per-second delta follows the key
	tagSingle = 0x40 // ... of one reading: count, sum and offset only
	tagTier   = 0x0f
)

var errCorruptJournal = errors.New("corrupt write journal entry")

// journal appends to buf the journal entries of rows: each per-second
// delta whole, and the key of each coarser bucket not yet in the buffer.
// An entry is uvarint series id, a tag byte, varint start, and for a
// delta: uvarint count, the sum, varint first offset, and unless
// tagSingle: min, max, first, last and varint last offset.
func (c *writeBuffer) journal(buf []byte, rows []sqlRow) []byte {
	for i := range rows {
		r := &rows[i]
		delta := r.tier == rollup.Tier1s
		if !delta && c.has(r) {
			continue
		}
		buf = binary.AppendUvarint(buf, uint64(r.id))
		tag := byte(r.tier)
		one := single(&r.Bucket)
		if delta {
			tag |= tagDelta
			if one {
				tag |= tagSingle
			}
		}
		buf = append(buf, tag)
		buf = binary.AppendVarint(buf, r.StartMs)
		if !delta {
			continue
		}
		f := func(v float64) { buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(v)) }
		buf = binary.AppendUvarint(buf, uint64(r.Count))
		f(r.Sum)
		buf = binary.AppendVarint(buf, r.FirstMs-r.StartMs)
		if !one {
			f(r.Min)
			f(r.Max)
			f(r.First)
			f(r.Last)
			buf = binary.AppendVarint(buf, r.LastMs-r.StartMs)
		}
	}
	return buf
}

// journalReader decodes journal entries. Its methods panic with
// errCorruptJournal on a short or malformed entry; decodeJournal recovers.
type journalReader struct{ b []byte }

func (j *journalReader) uvarint() uint64 { return readVarint(j, binary.Uvarint) }

func (j *journalReader) varint() int64 { return readVarint(j, binary.Varint) }

// readVarint decodes one varint of j with read.
func readVarint[T int64 | uint64](j *journalReader, read func([]byte) (T, int)) T {
	v, n := read(j.b)
	if n <= 0 {
		panic(errCorruptJournal)
	}
	j.b = j.b[n:]
	return v
}

// take consumes the next n bytes of j.
func (j *journalReader) take(n int) []byte {
	if len(j.b) < n {
		panic(errCorruptJournal)
	}
	v := j.b[:n]
	j.b = j.b[n:]
	return v
}

func (j *journalReader) byte() byte { return j.take(1)[0] }

func (j *journalReader) float() float64 {
	return math.Float64frombits(binary.LittleEndian.Uint64(j.take(8)))
}

// decodeJournal adds the entries of blob to keys (every bucket named) and
// deltas (per-second deltas, merged by key).
func decodeJournal(blob []byte, keys map[bucketKey]bool, deltas map[bucketKey]*rollup.Bucket) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if r != errCorruptJournal {
				panic(r)
			}
			err = errCorruptJournal
		}
	}()
	j := journalReader{blob}
	for len(j.b) > 0 {
		id := j.uvarint()
		tag := j.byte()
		tier := rollup.Tier(tag & tagTier)
		delta := tag&tagDelta != 0
		if int(tier) >= rollup.NumTiers || id > math.MaxInt64 || tag&^(tagDelta|tagSingle|tagTier) != 0 ||
			delta != (tier == rollup.Tier1s) || (!delta && tag&tagSingle != 0) {
			return errCorruptJournal
		}
		k := bucketKey{int64(id), tier, j.varint()}
		keys[k] = true
		if !delta {
			continue
		}
		b := rollup.Bucket{StartMs: k.start, Count: int64(j.uvarint()), Sum: j.float()}
		b.FirstMs = k.start + j.varint()
		b.Min, b.Max, b.First, b.Last, b.LastMs = b.Sum, b.Sum, b.Sum, b.Sum, b.FirstMs
		if tag&tagSingle == 0 {
			b.Min, b.Max, b.First, b.Last = j.float(), j.float(), j.float(), j.float()
			b.LastMs = k.start + j.varint()
		}
		if d := deltas[k]; d != nil {
			d.Merge(&b)
		} else {
			deltas[k] = &b
		}
	}
	return nil
}

// add merges rows into the buffer. The caller holds mu.
func (c *writeBuffer) add(rows []sqlRow) {
	for i := range rows {
		r := &rows[i]
		m := c.series[r.id]
		if m == nil {
			m = make(map[tierStart]rollup.Bucket)
			c.series[r.id] = m
		}
		k := tierStart{r.tier, r.StartMs}
		b, ok := m[k]
		if !ok {
			c.n++
		}
		b.Merge(&r.Bucket)
		m[k] = b
	}
}

// merged returns rows, which are sorted by key and unique, with the
// buffer merged in: sorted, each key once, ready for an upsert.
func (c *writeBuffer) merged(rows []sqlRow) []sqlRow {
	out := make([]sqlRow, 0, len(rows)+c.n)
	for _, r := range rows {
		if b, ok := c.series[r.id][tierStart{r.tier, r.StartMs}]; ok {
			b.Merge(&r.Bucket)
			r.Bucket = b
		}
		out = append(out, r)
	}
	for id, m := range c.series {
		for k, b := range m {
			r := sqlRow{id: id, tier: k.tier, Bucket: b}
			if _, inRows := slices.BinarySearchFunc(rows, r, compareRows); !inRows {
				out = append(out, r)
			}
		}
	}
	slices.SortFunc(out, compareRows)
	return out
}

// expire drops the buffered buckets that start before their tier's cut
// (Unix ms, by tier), as Prune deletes rows from rollups. The caller holds
// mu.
func (c *writeBuffer) expire(cut [rollup.NumTiers]int64) {
	for id, m := range c.series {
		for k := range m {
			if k.start < cut[k.tier] {
				delete(m, k)
				c.n--
			}
		}
		if len(m) == 0 {
			delete(c.series, id)
		}
	}
}

// reset empties the buffer after a write at now. The caller holds mu.
func (c *writeBuffer) reset(now time.Time) {
	clear(c.series)
	c.n = 0
	c.written = now
}

// overlay merges the buffered buckets of series id and tier in
// [fromMs, toMs) into bs, which is sorted by start. The caller read-holds
// mu.
func (c *writeBuffer) overlay(id int64, tier rollup.Tier, fromMs, toMs int64, bs []rollup.Bucket) []rollup.Bucket {
	var found []rollup.Bucket
	for k, b := range c.series[id] {
		if k.tier == tier && k.start >= fromMs && k.start < toMs {
			found = append(found, b)
		}
	}
	// In order, so that mergeInto mostly appends.
	slices.SortFunc(found, func(x, y rollup.Bucket) int { return cmp.Compare(x.StartMs, y.StartMs) })
	for i := range found {
		bs = mergeInto(bs, &found[i])
	}
	return bs
}

// writeBuffered upserts rows (already merged with the buffer) and
// empties the journal, inside tx.
func (s *SQL) writeBuffered(ctx context.Context, tx *sql.Tx, rows []sqlRow) error {
	if err := s.d.upsert(ctx, s, tx, rows); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM write_journal`); err != nil {
		return fmt.Errorf("empty write journal: %w", err)
	}
	return nil
}

// writeIfDue writes the buffer out when it has waited WriteInterval, so
// that an idle server does not keep deltas in memory until its next
// append.
func (s *SQL) writeIfDue(ctx context.Context) error {
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	if s.buf == nil || !s.buf.due(s.cfg.Clock.Now(), s.cfg.WriteInterval, 0) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushBuffer(ctx)
}

// flushBuffer writes the buffer out in a transaction of its own. The
// caller holds appendMu and mu.
func (s *SQL) flushBuffer(ctx context.Context) error {
	if s.buf == nil || s.buf.n == 0 {
		return nil
	}
	rows := s.buf.merged(nil)
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("write buffered buckets: begin: %w", err)
	}
	if err := s.writeBuffered(ctx, tx, rows); err != nil {
		_ = tx.Rollback()
		return fmt.Errorf("write buffered buckets: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("write buffered buckets: commit: %w", err)
	}
	s.met.rowsWritten.Add(float64(len(rows)))
	s.buf.reset(s.cfg.Clock.Now())
	return nil
}

// replayJournal finishes, after an unclean stop, what the journal says was
// in memory: it merges the per-second deltas into rollups, then recomputes
// every minute and hour named (or holding a replayed second) from the
// tier below, replacing what is stored. A minute whose start is past the
// per-second retention is left as stored (its seconds may be gone), which
// loses at most that minute's deltas of the last WriteInterval before the
// crash; such buckets are counted in the log.
func (s *SQL) replayJournal(ctx context.Context) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("replay journal: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	keys, deltas, err := readJournal(ctx, tx)
	if err != nil {
		return fmt.Errorf("replay journal: %w", err)
	}
	if len(keys) == 0 {
		return nil
	}
	nowMs := s.cfg.Clock.Now().UnixMilli()
	seconds := make([]sqlRow, 0, len(deltas))
	for k, b := range deltas {
		if b.StartMs+rollup.Tier1s.StepMs() > nowMs-s.cfg.Retention[rollup.Tier1s].Milliseconds() {
			seconds = append(seconds, sqlRow{id: k.id, tier: k.tier, Bucket: *b})
		}
	}
	slices.SortFunc(seconds, compareRows)
	if err := s.d.upsert(ctx, s, tx, seconds); err != nil {
		return fmt.Errorf("replay journal: %w", err)
	}
	minutes := make(map[bucketKey]bool)
	hours := make(map[bucketKey]bool)
	for k := range keys {
		minute := bucketKey{k.id, rollup.Tier1m, rollup.Floor(k.start, rollup.Tier1m.StepMs())}
		hour := bucketKey{k.id, rollup.Tier1h, rollup.Floor(k.start, rollup.Tier1h.StepMs())}
		switch k.tier {
		case rollup.Tier1s:
			minutes[minute], hours[hour] = true, true
		case rollup.Tier1m:
			minutes[k], hours[hour] = true, true
		case rollup.Tier1h:
			hours[k] = true
		}
	}
	var repaired, skipped int
	// Minutes first: the hours are recomputed from them.
	for _, phase := range []struct {
		keys    map[bucketKey]bool
		horizon int64 // oldest start whose finer buckets are all kept
	}{
		{minutes, nowMs - s.cfg.Retention[rollup.Tier1s].Milliseconds()},
		{hours, nowMs - s.cfg.Retention[rollup.Tier1m].Milliseconds()},
	} {
		var rows []sqlRow
		for k := range phase.keys {
			if k.start < phase.horizon {
				skipped++
				continue
			}
			b, err := s.recompute(ctx, tx, k)
			if err != nil {
				return fmt.Errorf("replay journal: %w", err)
			}
			if b.Count > 0 {
				rows = append(rows, sqlRow{id: k.id, tier: k.tier, Bucket: b})
			}
			repaired++
		}
		slices.SortFunc(rows, compareRows)
		if err := s.d.upsert(ctx, s, tx, rows); err != nil {
			return fmt.Errorf("replay journal: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM write_journal`); err != nil {
		return fmt.Errorf("replay journal: empty it: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("replay journal: commit: %w", err)
	}
	s.log.Warn("the last run did not stop cleanly: buffered writes replayed from the journal",
		"seconds", len(seconds), "recomputed", repaired, "past_retention_kept", skipped)
	return nil
}

// readJournal decodes every entry of write_journal.
func readJournal(ctx context.Context, tx *sql.Tx) (map[bucketKey]bool, map[bucketKey]*rollup.Bucket, error) {
	rs, err := tx.QueryContext(ctx, `SELECT keys FROM write_journal ORDER BY id`)
	if err != nil {
		return nil, nil, fmt.Errorf("read write journal: %w", err)
	}
	defer rs.Close()
	keys := make(map[bucketKey]bool)
	deltas := make(map[bucketKey]*rollup.Bucket)
	for rs.Next() {
		var blob []byte
		if err := rs.Scan(&blob); err != nil {
			return nil, nil, fmt.Errorf("read write journal: %w", err)
		}
		if err := decodeJournal(blob, keys, deltas); err != nil {
			return nil, nil, fmt.Errorf("read write journal: %w", err)
		}
	}
	return keys, deltas, rs.Err()
}

// recompute deletes bucket k and returns the merge of the buckets of the
// tier below that it covers (Count 0 when there are none), to be stored in
// its place.
func (s *SQL) recompute(ctx context.Context, tx *sql.Tx, k bucketKey) (rollup.Bucket, error) {
	b := rollup.Bucket{StartMs: k.start}
	rs, err := tx.QueryContext(ctx, `SELECT `+bucketColumns+`
		FROM rollups WHERE series_id = ? AND tier = ? AND start_ms >= ? AND start_ms < ? ORDER BY start_ms`,
		k.id, int64(k.tier-1), k.start, k.start+k.tier.StepMs())
	if err != nil {
		return b, fmt.Errorf("read %s buckets of series %d: %w", k.tier-1, k.id, err)
	}
	parts, err := scanBuckets(rs)
	if err != nil {
		return b, fmt.Errorf("read %s buckets of series %d: %w", k.tier-1, k.id, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM rollups WHERE series_id = ? AND tier = ? AND start_ms = ?`, k.id, int64(k.tier), k.start); err != nil {
		return b, fmt.Errorf("replace %s bucket of series %d: %w", k.tier, k.id, err)
	}
	for i := range parts {
		parts[i].StartMs = k.start
		b.Merge(&parts[i])
	}
	return b, nil
}
