package store

import (
	"cmp"
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/telegauge/telegauge/ingest/rollup"
)

// SQLConfig configures a SQL store.
type SQLConfig struct {
	// URL names the database: a SQLite file path, the same prefixed with
	// "sqlite:", or a PostgreSQL URL ("postgres://..." or
	// "postgresql://...", any parameter pgx accepts). A SQLite file and its
	// directory are created when missing. Required.
	URL string `yaml:"url"`
	// Retention per tier; zero tiers take DefaultSQLRetention.
	Retention Retention `yaml:"retention"`
	// PruneInterval is how often Run drops expired buckets. Zero means 1 minute.
	PruneInterval time.Duration `yaml:"prune-interval"`
	// WriteInterval is how long SQLite keeps deltas in memory, journaled,
	// before merging them into rollups (see store_sql_buffer.go); zero
	// means DefaultWriteInterval, negative writes with every append.
	// PostgreSQL always writes with every append.
	WriteInterval time.Duration `yaml:"write-interval"`
	// RecordsOnly opens the database for its devices, boards and users
	// beside a running server (telegauge devices|users): no ownership lock,
	// no journal replay, and Append is refused.
	RecordsOnly bool `yaml:"-"`
	// Clock gives the time for retention; nil means the real clock.
	Clock clockwork.Clock `yaml:"-"`
	// Registerer receives the store's metrics; nil means none.
	Registerer prometheus.Registerer `yaml:"-"`
}

// DefaultSQLRetention is the durable stores' retention: a day of
// per-second buckets, a month of per-minute ones and two years of hourly
// ones.
var DefaultSQLRetention = Retention{24 * time.Hour, 30 * 24 * time.Hour, 2 * 365 * 24 * time.Hour}

// DefaultSQLiteFile is the SQLite database's file name inside a data
// directory.
const DefaultSQLiteFile = "telegauge.db"

// SQL is a Store on SQLite or PostgreSQL. Besides rollup history it keeps
// the server's durable state: devices, saved dashboards and operators.
//
// Watermarks live in memory, per SQL value: they reconcile this process's
// in-flight batches with what it reads back, so a restarted process starts
// again from Seq 1. Rollups are merged, never overwritten, so several
// processes (cluster nodes) may share a PostgreSQL database.
type SQL struct {
	cfg SQLConfig
	log *slog.Logger
	d   *dialect
	w   *sql.DB // writes; a single connection on SQLite, which allows one writer
	r   *sql.DB // reads; the same pool as w on PostgreSQL
	sel *sql.Stmt
	met *sqlMetrics

	timescale bool     // rollups is a TimescaleDB hypertable
	lock      *os.File // held while a SQLite file is open; nil otherwise

	// closed is set first thing in Close, so that a long Prune stops at
	// its next chunk.
	closed atomic.Bool

	// pruneMu serialises Prune. Lock order: pruneMu, appendMu, mu.
	pruneMu sync.Mutex

	// appendMu serialises Append and guards rows and dirtyRows; ids is
	// written holding appendMu and mu, so either is enough to read it.
	appendMu  sync.Mutex
	ids       map[string]int64 // series name -> id, all committed
	rows      []sqlRow         // Append's scratch buffer
	args      []any            // the upsert's scratch buffer (SQLite)
	upsertAll *sql.Stmt        // the upsert of a full chunk (SQLite)
	dirtyRows int              // rows written since the last WAL checkpoint (SQLite)
	journal   []byte           // Append's write journal scratch buffer

	// mu makes a batch's data and its watermark visible together: Append
	// holds it across the commit and the watermark update, Select read-holds
	// it across its queries and copying the marks. It guards marks, which
	// Append writes holding appendMu too, so Append reads them under
	// appendMu alone.
	mu    sync.RWMutex
	marks map[int]uint64
	// buf holds the deltas not yet written to rollups, on SQLite; nil on
	// PostgreSQL. Guarded like marks.
	buf *writeBuffer
}

var _ Store = (*SQL)(nil)

// dialect is what differs between SQLite and PostgreSQL.
type dialect struct {
	name  string // also the migrations folder
	goose goose.Dialect
	// bufferWrites keeps deltas in memory between writes (SQLite:
	// one process owns the file).
	bufferWrites bool
	// readers is how many queries one Select runs at once.
	readers int
	// rebind turns the ? placeholders of a query into the dialect's.
	rebind func(query string) string
	// locker returns the lock that keeps two processes from migrating at
	// once; nil for none.
	locker func() (lock.SessionLocker, error)
	// afterMigrate runs once the schema is up to date; may be nil.
	afterMigrate func(ctx context.Context, s *SQL) error
	// upsert merges rows, sorted by key and unique, into rollups. The
	// caller holds appendMu.
	upsert func(ctx context.Context, s *SQL, tx *sql.Tx, rows []sqlRow) error
	// intern inserts the names missing from series and returns every
	// name's id.
	intern func(ctx context.Context, db *sql.DB, names []string) (map[string]int64, error)
	// checkpoint copies the WAL into the database (mode PASSIVE or
	// TRUNCATE); nil where there is no such thing. The caller holds
	// appendMu, or is Close.
	checkpoint func(ctx context.Context, s *SQL, mode string) error
}

// q rebinds a query written with ? placeholders.
func (d *dialect) q(query string) string {
	if d.rebind == nil {
		return query
	}
	return d.rebind(query)
}

// Tuning. These bound how long one statement or transaction holds the
// writer, and so how long an Append or a Select waits behind a prune.
const (
	// pruneChunkRows is how many rows one prune transaction deletes at most.
	pruneChunkRows = 4096
	// pruneChunkStmts is how many deletes one prune transaction runs at
	// most, even when they find little to delete: 10,000 series make
	// 30,000 of them per prune.
	pruneChunkStmts = 512
	// checkpointRows is how many rows SQLite lets pile up in its WAL
	// before Append checkpoints it (see sqliteDSN).
	checkpointRows = 100_000
)

//go:embed migrations
var migrations embed.FS

// Open opens (creating if needed) the database cfg.URL names and brings its
// schema up to date. It starts no goroutines: Run prunes.
func Open(ctx context.Context, cfg SQLConfig, log *slog.Logger) (*SQL, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Retention = cfg.Retention.withDefaults(DefaultSQLRetention)
	if cfg.PruneInterval <= 0 {
		cfg.PruneInterval = time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.WriteInterval == 0 {
		cfg.WriteInterval = DefaultWriteInterval
	}
	s := &SQL{
		cfg:   cfg,
		log:   log.With("component", "store"),
		ids:   make(map[string]int64),
		marks: make(map[int]uint64),
		met:   newSQLMetrics(),
	}
	fail := func(err error) (*SQL, error) {
		_ = s.closeDBs()
		return nil, fmt.Errorf("open store: %w", err)
	}
	var err error
	switch u := strings.TrimSpace(cfg.URL); {
	case u == "":
		return nil, errors.New("open store: no database URL")
	case strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://"):
		err = s.openPostgres(ctx, u)
	default:
		path := strings.TrimPrefix(strings.TrimPrefix(u, "sqlite:"), "//")
		if path == "" {
			return nil, fmt.Errorf("open store: no SQLite file in %q", cfg.URL)
		}
		err = s.openSQLite(ctx, path)
	}
	if err != nil {
		return fail(err)
	}
	if err := s.migrate(ctx); err != nil {
		return fail(err)
	}
	if s.d.afterMigrate != nil {
		if err := s.d.afterMigrate(ctx, s); err != nil {
			return fail(err)
		}
	}
	if s.d.bufferWrites && !cfg.RecordsOnly {
		// Even when this run will not buffer: the last one may have.
		if err := s.replayJournal(ctx); err != nil {
			return fail(err)
		}
		if cfg.WriteInterval > 0 {
			s.buf = newWriteBuffer(cfg.Clock.Now())
		}
	}
	if s.sel, err = s.r.PrepareContext(ctx, s.d.q(`SELECT `+bucketColumns+`
		FROM rollups
		WHERE series_id = (SELECT id FROM series WHERE name = ?) AND tier = ? AND start_ms >= ? AND start_ms < ?
		ORDER BY start_ms`)); err != nil {
		return fail(fmt.Errorf("prepare select: %w", err))
	}
	if cfg.Registerer != nil {
		if err := s.met.register(cfg.Registerer); err != nil {
			s.met.unregister(cfg.Registerer)
			return fail(fmt.Errorf("register metrics: %w", err))
		}
	}
	return s, nil
}

// migrate runs the dialect's embedded migrations that have not run yet.
func (s *SQL) migrate(ctx context.Context) error {
	fsys, err := fs.Sub(migrations, "migrations/"+s.d.name)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	opts := []goose.ProviderOption{goose.WithDisableGlobalRegistry(true)}
	if s.d.locker != nil {
		l, err := s.d.locker()
		if err != nil {
			return fmt.Errorf("migration lock: %w", err)
		}
		opts = append(opts, goose.WithSessionLocker(l))
	}
	p, err := goose.NewProvider(s.d.goose, s.w, fsys, opts...)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	res, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, r := range res {
		s.log.Info("schema migrated", "dialect", s.d.name, "version", r.Source.Version, "took", r.Duration)
	}
	return nil
}

// sqlRow is one entry of a batch, ready for the database.
type sqlRow struct {
	id   int64
	name string
	tier rollup.Tier
	rollup.Bucket
}

func compareRows(a, b sqlRow) int {
	if c := cmp.Compare(a.id, b.id); c != 0 {
		return c
	}
	if c := cmp.Compare(a.tier, b.tier); c != 0 {
		return c
	}
	return cmp.Compare(a.StartMs, b.StartMs)
}

// Append implements Store. A batch is one transaction of multi-row upserts
// whose SET clause is rollup.Bucket.Merge in SQL (see mergeSet), in key
// order so that concurrent writers on PostgreSQL never deadlock.
func (s *SQL) Append(ctx context.Context, b Batch) error {
	if s.cfg.RecordsOnly {
		return errors.New("append: the store was opened for records only")
	}
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	if b.Seq <= s.marks[b.Writer] {
		return nil
	}
	// Check every entry before applying any: a batch applies whole or not
	// at all, or its retry would count the applied part twice.
	for i := range b.Entries {
		if e := &b.Entries[i]; int(e.Tier) >= rollup.NumTiers {
			return fmt.Errorf("append to %s: unknown tier %d", e.Series, e.Tier)
		}
	}
	timer := prometheus.NewTimer(s.met.appendSeconds)
	defer timer.ObserveDuration()

	nowMs := s.cfg.Clock.Now().UnixMilli()
	var missing []string
	rows := s.rows[:0]
	for i := range b.Entries {
		e := &b.Entries[i]
		if e.Count == 0 {
			continue // merging an empty bucket changes nothing (rollup.Bucket.Merge)
		}
		if e.StartMs+e.Tier.StepMs() <= nowMs-s.cfg.Retention[e.Tier].Milliseconds() {
			continue // already past retention: it would be pruned at once
		}
		id, ok := s.ids[e.Series]
		if !ok {
			missing = append(missing, e.Series)
		}
		rows = append(rows, sqlRow{id: id, name: e.Series, tier: e.Tier, Bucket: e.Bucket})
	}
	s.rows = rows[:0]
	if len(missing) > 0 {
		if err := s.intern(ctx, missing); err != nil {
			return fmt.Errorf("append: %w", err)
		}
		for i := range rows {
			rows[i].id = s.ids[rows[i].name]
		}
	}
	// Sort, and merge entries of the same bucket: one statement may not
	// update a row twice on PostgreSQL.
	slices.SortFunc(rows, compareRows)
	out := rows[:0]
	for _, r := range rows {
		if n := len(out); n > 0 && compareRows(out[n-1], r) == 0 {
			out[n-1].Merge(&r.Bucket)
			continue
		}
		out = append(out, r)
	}
	rows = out

	if len(rows) == 0 {
		s.mu.Lock()
		s.marks[b.Writer] = b.Seq
		s.mu.Unlock()
		return nil
	}
	// On SQLite the rows wait in memory, journaled (store_sql_buffer.go).
	now := s.cfg.Clock.Now()
	journaled := s.buf != nil && !s.buf.due(now, s.cfg.WriteInterval, len(rows))
	if s.buf != nil && !journaled {
		rows = s.buf.merged(rows)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("append: begin: %w", err)
	}
	switch {
	case journaled:
		s.journal = s.buf.journal(s.journal[:0], rows)
		if _, err = tx.ExecContext(ctx, `INSERT INTO write_journal (keys) VALUES (?)`, s.journal); err != nil {
			err = fmt.Errorf("journal: %w", err)
		}
	case s.buf != nil:
		err = s.writeBuffered(ctx, tx, rows)
	default:
		err = s.d.upsert(ctx, s, tx, rows)
	}
	if err != nil {
		_ = tx.Rollback()
		return fmt.Errorf("append: %w", err)
	}
	s.mu.Lock()
	err = tx.Commit()
	if err == nil {
		s.marks[b.Writer] = b.Seq
		switch {
		case journaled:
			s.buf.add(rows)
		case s.buf != nil:
			s.buf.reset(now)
		}
	}
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("append: commit: %w", err)
	}
	if journaled {
		return nil
	}
	s.met.rowsWritten.Add(float64(len(rows)))
	s.dirtyRows += len(rows)
	if s.d.checkpoint != nil && s.dirtyRows >= checkpointRows {
		s.dirtyRows = 0
		// Outside mu, so that readers never wait for the copy and fsync.
		if err := s.d.checkpoint(ctx, s, "PASSIVE"); err != nil {
			s.log.Warn("WAL checkpoint failed", "err", err)
		}
	}
	return nil
}

// intern gives every name in names a series id, inserting those the
// database does not have, and caches them. The caller must hold appendMu.
// Names are committed on their own: a series row without rollups is
// harmless, and a rolled-back id in the cache would not be.
func (s *SQL) intern(ctx context.Context, names []string) error {
	slices.Sort(names)
	names = slices.Compact(names)
	got, err := s.d.intern(ctx, s.w, names)
	if err != nil {
		return fmt.Errorf("intern series: %w", err)
	}
	for _, n := range names {
		if _, ok := got[n]; !ok {
			return fmt.Errorf("intern series: %q has no id", n)
		}
	}
	s.mu.Lock()
	maps.Copy(s.ids, got)
	s.mu.Unlock()
	return nil
}

// encodeBucket returns b's column values in the order of upsertColumns
// after the key. A single reading's min, max, first and last equal its sum
// and its last time its first, so they are stored as NULL: that halves the
// per-second tier, where most buckets hold one reading. Offsets are from
// the bucket's start.
func encodeBucket(b *rollup.Bucket) (cnt int64, sum float64, mn, mx, first, last *float64, firstOff int64, lastOff *int64) {
	firstOff = b.FirstMs - b.StartMs
	if single(b) {
		return b.Count, b.Sum, nil, nil, nil, nil, firstOff, nil
	}
	lo := b.LastMs - b.StartMs
	return b.Count, b.Sum, &b.Min, &b.Max, &b.First, &b.Last, firstOff, &lo
}

// single reports whether b is one reading, every value bit-identical.
func single(b *rollup.Bucket) bool {
	s := math.Float64bits(b.Sum)
	return b.Count == 1 && b.FirstMs == b.LastMs &&
		math.Float64bits(b.Min) == s && math.Float64bits(b.Max) == s &&
		math.Float64bits(b.First) == s && math.Float64bits(b.Last) == s
}

// upsertColumns are the rollups columns an upsert writes, key first.
const upsertColumns = "series_id, tier, start_ms, cnt, sum_v, min_v, max_v, first_off, first_v, last_off, last_v"

// mergeSet is the ON CONFLICT clause of the rollup upsert: rollup.Bucket.Merge
// of the stored row r and the proposed one (excluded), NULLs expanded as
// encodeBucket describes. Every expression sees the old row, so the order
// of the assignments does not matter. The row comparisons are
// rollup.earlier and rollup.later: an equal time keeps the smaller first
// value and the larger last value. least and greatest name the dialect's
// two-argument scalar min and max, sum its r.sum_v + excluded.sum_v.
func mergeSet(least, greatest, sum string) string {
	const (
		oldFirst  = "(r.first_off, COALESCE(r.first_v, r.sum_v))"
		newFirst  = "(excluded.first_off, COALESCE(excluded.first_v, excluded.sum_v))"
		oldLast   = "(COALESCE(r.last_off, r.first_off), COALESCE(r.last_v, r.sum_v))"
		newLast   = "(COALESCE(excluded.last_off, excluded.first_off), COALESCE(excluded.last_v, excluded.sum_v))"
		earlier   = newFirst + " < " + oldFirst
		later     = newLast + " > " + oldLast
		firstWhen = "CASE WHEN " + earlier + " THEN "
		lastWhen  = "CASE WHEN " + later + " THEN "
	)
	return `ON CONFLICT (series_id, tier, start_ms) DO UPDATE SET
	cnt = r.cnt + excluded.cnt,
	sum_v = ` + sum + `,
	min_v = ` + least + `(COALESCE(r.min_v, r.sum_v), COALESCE(excluded.min_v, excluded.sum_v)),
	max_v = ` + greatest + `(COALESCE(r.max_v, r.sum_v), COALESCE(excluded.max_v, excluded.sum_v)),
	first_off = ` + firstWhen + `excluded.first_off ELSE r.first_off END,
	first_v = ` + firstWhen + `COALESCE(excluded.first_v, excluded.sum_v) ELSE COALESCE(r.first_v, r.sum_v) END,
	last_off = ` + lastWhen + `COALESCE(excluded.last_off, excluded.first_off) ELSE COALESCE(r.last_off, r.first_off) END,
	last_v = ` + lastWhen + `COALESCE(excluded.last_v, excluded.sum_v) ELSE COALESCE(r.last_v, r.sum_v) END`
}

// Select implements Store.
func (s *SQL) Select(ctx context.Context, series []string, tier rollup.Tier, fromMs, toMs int64) (Selection, error) {
	if int(tier) >= rollup.NumTiers {
		return Selection{}, fmt.Errorf("select: unknown tier %d", tier)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return Selection{}, ErrClosed
	}
	sel := Selection{Buckets: make([][]rollup.Bucket, len(series)), Marks: maps.Clone(s.marks)}
	if fromMs >= toMs {
		return sel, nil
	}
	// One query per series, run side by side on the reader pool: decoding
	// rows costs more CPU than SQLite's lookups, and each connection
	// decodes on its own goroutine.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.d.readers)
	for i, name := range series {
		g.Go(func() error {
			bs, err := s.selectOne(gctx, name, tier, fromMs, toMs)
			if err != nil {
				return fmt.Errorf("select %s: %w", name, s.closedErr(err))
			}
			if id, ok := s.ids[name]; ok && s.buf != nil {
				bs = s.buf.overlay(id, tier, fromMs, toMs, bs)
			}
			sel.Buckets[i] = bs
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return Selection{}, err
	}
	return sel, nil
}

// selectOne reads one series' buckets. The caller must read-hold mu.
func (s *SQL) selectOne(ctx context.Context, name string, tier rollup.Tier, fromMs, toMs int64) ([]rollup.Bucket, error) {
	rs, err := s.sel.QueryContext(ctx, name, int64(tier), fromMs, toMs)
	if err != nil {
		return nil, err
	}
	return scanBuckets(rs)
}

// bucketColumns are the rollups columns scanBuckets reads, in its order.
const bucketColumns = "start_ms, cnt, sum_v, min_v, max_v, first_off, first_v, last_off, last_v"

// scanBuckets reads rows of bucketColumns and closes them.
func scanBuckets(rs *sql.Rows) ([]rollup.Bucket, error) {
	defer rs.Close()
	var (
		out                 []rollup.Bucket
		b                   rollup.Bucket
		sum, mn, mx, fv, lv sql.NullFloat64
		lastOff             sql.NullInt64
		firstOff            int64
	)
	for rs.Next() {
		if err := rs.Scan(&b.StartMs, &b.Count, &sum, &mn, &mx, &firstOff, &fv, &lastOff, &lv); err != nil {
			return nil, err
		}
		b.Sum = math.NaN() // SQLite stores NaN as NULL
		if sum.Valid {
			b.Sum = sum.Float64
		}
		b.Min, b.Max, b.First, b.Last = orSum(mn, b.Sum), orSum(mx, b.Sum), orSum(fv, b.Sum), orSum(lv, b.Sum)
		b.FirstMs = b.StartMs + firstOff
		b.LastMs = b.FirstMs
		if lastOff.Valid {
			b.LastMs = b.StartMs + lastOff.Int64
		}
		out = append(out, b)
	}
	return out, rs.Err()
}

func orSum(v sql.NullFloat64, sum float64) float64 {
	if v.Valid {
		return v.Float64
	}
	return sum
}

// SeriesNames returns, sorted, every series with stored buckets, so that a
// restarted aggregator knows its series before they report again.
func (s *SQL) SeriesNames(ctx context.Context) ([]string, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	rs, err := s.r.QueryContext(ctx, `SELECT name FROM series AS s
		WHERE EXISTS (SELECT 1 FROM rollups AS r WHERE r.series_id = s.id)
		ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list series: %w", s.closedErr(err))
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		var n string
		if err := rs.Scan(&n); err != nil {
			return nil, fmt.Errorf("list series: %w", err)
		}
		out = append(out, n)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("list series: %w", s.closedErr(err))
	}
	return out, nil
}

// Prune deletes every bucket that ended before its tier's retention. It
// walks series by series, so each delete is a range of the primary key,
// and commits every pruneChunkRows rows or pruneChunkStmts statements, so
// that an Append never waits long for the writer. Series rows stay (see
// the schema).
func (s *SQL) Prune(ctx context.Context) error {
	s.pruneMu.Lock()
	defer s.pruneMu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	timer := prometheus.NewTimer(s.met.pruneSeconds)
	defer timer.ObserveDuration()

	nowMs := s.cfg.Clock.Now().UnixMilli()
	var cuts [rollup.NumTiers]int64 // delete start_ms < cut
	for t := range cuts {
		// A bucket is expired once it ended at or before now-retention,
		// that is StartMs+step <= now-retention (as Memory.Prune).
		cuts[t] = nowMs - s.cfg.Retention[t].Milliseconds() - rollup.Tier(t).StepMs() + 1
	}
	if s.buf != nil {
		s.appendMu.Lock()
		s.mu.Lock()
		s.buf.expire(cuts)
		s.mu.Unlock()
		s.appendMu.Unlock()
	}
	ids, err := s.seriesIDs(ctx)
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	p := pruner{s: s}
	defer p.rollback()
	for _, id := range ids {
		for t := range rollup.NumTiers {
			for {
				if err := p.ensureTx(ctx); err != nil {
					return fmt.Errorf("prune: %w", err)
				}
				limit := int64(pruneChunkRows - p.rows)
				res, err := p.del.ExecContext(ctx, id, t, id, t, cuts[t], limit, cuts[t])
				if err != nil {
					return fmt.Errorf("prune: %w", s.closedErr(err))
				}
				n, err := res.RowsAffected()
				if err != nil {
					return fmt.Errorf("prune: %w", err)
				}
				p.rows += int(n)
				p.stmts++
				if err := p.maybeCommit(); err != nil {
					return fmt.Errorf("prune: %w", err)
				}
				if n < limit {
					break // this series' tier is done
				}
			}
		}
	}
	if err := p.commit(); err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	if p.total > 0 && s.d.checkpoint != nil {
		s.appendMu.Lock()
		err := s.d.checkpoint(ctx, s, "PASSIVE")
		s.appendMu.Unlock()
		if err != nil {
			s.log.Warn("WAL checkpoint failed", "err", err)
		}
	}
	if p.total > 0 {
		s.log.Debug("pruned expired buckets", "rows", p.total)
	}
	return nil
}

// pruner is Prune's chunked transaction.
type pruner struct {
	s     *SQL
	tx    *sql.Tx
	del   *sql.Stmt
	rows  int // deleted in tx
	stmts int // run in tx
	total int64
}

// pruneDelete deletes the oldest rows of one series' tier that start
// before a cut, at most limit of them: it deletes below the start of the
// (limit+1)th oldest expired row, or below the cut if there are fewer.
// SQLite and PostgreSQL have no DELETE ... LIMIT.
// Arguments: id, tier, id, tier, cut, limit, cut.
const pruneDelete = `DELETE FROM rollups WHERE series_id = ? AND tier = ? AND start_ms < COALESCE(
	(SELECT start_ms FROM rollups WHERE series_id = ? AND tier = ? AND start_ms < ?
	 ORDER BY start_ms LIMIT 1 OFFSET ?), ?)`

func (p *pruner) ensureTx(ctx context.Context) error {
	if p.tx != nil {
		return nil
	}
	if p.s.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	tx, err := p.s.w.BeginTx(ctx, nil)
	if err != nil {
		return p.s.closedErr(err)
	}
	del, err := tx.PrepareContext(ctx, p.s.d.q(pruneDelete))
	if err != nil {
		_ = tx.Rollback()
		return err
	}
	p.tx, p.del = tx, del
	return nil
}

func (p *pruner) maybeCommit() error {
	if p.rows >= pruneChunkRows || p.stmts >= pruneChunkStmts {
		return p.commit()
	}
	return nil
}

func (p *pruner) commit() error {
	if p.tx == nil {
		return nil
	}
	err := p.tx.Commit()
	p.tx, p.del = nil, nil
	if err != nil {
		return fmt.Errorf("commit: %w", p.s.closedErr(err))
	}
	p.s.met.rowsPruned.Add(float64(p.rows))
	p.total += int64(p.rows)
	p.rows, p.stmts = 0, 0
	return nil
}

func (p *pruner) rollback() {
	if p.tx != nil {
		_ = p.tx.Rollback()
		p.tx = nil
	}
}

// seriesIDs returns every series id, ascending.
func (s *SQL) seriesIDs(ctx context.Context) ([]int64, error) {
	rs, err := s.r.QueryContext(ctx, `SELECT id FROM series ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list series ids: %w", s.closedErr(err))
	}
	defer rs.Close()
	var ids []int64
	for rs.Next() {
		var id int64
		if err := rs.Scan(&id); err != nil {
			return nil, fmt.Errorf("list series ids: %w", err)
		}
		ids = append(ids, id)
	}
	return ids, rs.Err()
}

// Run prunes expired buckets every PruneInterval, and on SQLite writes
// deltas that have waited WriteInterval, until ctx ends or the
// store is closed. A failure is logged and tried again next time.
func (s *SQL) Run(ctx context.Context) error {
	t := s.cfg.Clock.NewTicker(s.cfg.PruneInterval)
	defer t.Stop()
	var writes <-chan time.Time // nil, never ready, when not buffering
	if s.buf != nil {
		ct := s.cfg.Clock.NewTicker(s.cfg.WriteInterval)
		defer ct.Stop()
		writes = ct.Chan()
	}
	for {
		var (
			err  error
			what string
		)
		select {
		case <-ctx.Done():
			return nil
		case <-t.Chan():
			err, what = s.Prune(ctx), "prune failed; will retry"
		case <-writes:
			err, what = s.writeIfDue(ctx), "writing buffered buckets failed; will retry"
		}
		switch {
		case errors.Is(err, ErrClosed), ctx.Err() != nil:
			return nil
		case err != nil:
			s.log.Error(what, "err", err)
		}
	}
}

// Close implements Store. It waits for a running Append, Select or prune
// chunk, then closes the database; on SQLite it first checkpoints the WAL
// into the main file.
func (s *SQL) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.pruneMu.Lock()
	defer s.pruneMu.Unlock()
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if err := s.flushBuffer(context.Background()); err != nil {
		errs = append(errs, err)
	}
	if s.d.checkpoint != nil {
		if err := s.d.checkpoint(context.Background(), s, "TRUNCATE"); err != nil {
			errs = append(errs, fmt.Errorf("checkpoint: %w", err))
		}
	}
	s.met.unregister(s.cfg.Registerer)
	errs = append(errs, s.closeDBs())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

func (s *SQL) closeDBs() error {
	var errs []error
	if s.upsertAll != nil {
		errs = append(errs, s.upsertAll.Close())
	}
	if s.sel != nil {
		errs = append(errs, s.sel.Close())
	}
	if s.r != nil && s.r != s.w {
		errs = append(errs, s.r.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close()) // releases the flock
	}
	return errors.Join(errs...)
}

// closedErr turns database/sql's error for a closed pool into ErrClosed
// when Close caused it.
func (s *SQL) closedErr(err error) error {
	if err != nil && s.closed.Load() && strings.Contains(err.Error(), "sql: database is closed") {
		return ErrClosed
	}
	return err
}

// sqlMetrics are the SQL store's metrics.
type sqlMetrics struct {
	rowsWritten   prometheus.Counter
	rowsPruned    prometheus.Counter
	appendSeconds prometheus.Histogram
	pruneSeconds  prometheus.Histogram
}

func newSQLMetrics() *sqlMetrics {
	return &sqlMetrics{
		rowsWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_store_rows_written_total",
			Help: "Rollup rows upserted into the history database.",
		}),
		rowsPruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telegauge_store_rows_pruned_total",
			Help: "Rollup rows deleted from the history database after their tier's retention.",
		}),
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "telegauge_store_append_seconds",
			Help:    "Time to apply one flushed batch to the history database.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		pruneSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "telegauge_store_prune_seconds",
			Help:    "Time for one pass deleting expired rollup rows.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
	}
}

func (m *sqlMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.rowsWritten, m.rowsPruned, m.appendSeconds, m.pruneSeconds}
}

func (m *sqlMetrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range m.collectors() {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}

// unregister removes the metrics, so that a store reopened on the same
// registry (a test, or a CLI command in-process) can register again.
func (m *sqlMetrics) unregister(r prometheus.Registerer) {
	if r == nil {
		return
	}
	for _, c := range m.collectors() {
		r.Unregister(c)
	}
}
