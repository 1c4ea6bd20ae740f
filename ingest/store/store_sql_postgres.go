package store

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// postgresDialect is PostgreSQL through pgx's database/sql driver, which
// keeps one code path for both databases; pgx caches prepared statements
// per connection by itself.
var postgresDialect = &dialect{
	name:         "postgres",
	goose:        goose.DialectPostgres,
	readers:      postgresConns / 2,
	rebind:       postgresRebind,
	locker:       postgresLocker,
	afterMigrate: postgresAfterMigrate,
	upsert:       postgresUpsert,
	intern:       postgresIntern,
}

// postgresConns is the pool size: appends are serialised per process, so
// the rest serve concurrent queries.
const postgresConns = 8

// postgresUpsertRows is how many rows one upsert statement carries. The
// rows travel as 11 arrays, so a statement's size does not depend on a
// parameter limit; this bounds the memory of one statement.
const postgresUpsertRows = 10_000

// migrationLockID is the advisory lock that serialises migrations of
// several processes starting at once; an arbitrary constant, distinct
// from goose's default so that other goose users of the same database
// do not wait on us.
const migrationLockID = 0x6d1e_58a3

func (s *SQL) openPostgres(ctx context.Context, url string) error {
	s.d = postgresDialect
	db, err := sql.Open("pgx", url)
	if err != nil {
		return err
	}
	s.w, s.r = db, db
	db.SetMaxOpenConns(postgresConns)
	db.SetMaxIdleConns(postgresConns)
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	return nil
}

func postgresLocker() (lock.SessionLocker, error) {
	// Retry every second for up to 5 minutes: a peer's migration is short.
	return lock.NewPostgresSessionLocker(lock.WithLockID(migrationLockID), lock.WithLockTimeout(1, 300))
}

// postgresAfterMigrate makes rollups a TimescaleDB hypertable when the
// extension is installed in the database (CREATE EXTENSION timescaledb,
// done by an administrator: the store never creates extensions). Chunks
// are one day of start_ms. The primary key includes start_ms, as Timescale
// requires of unique indexes, and Timescale's default time index is left
// out: every query names the series, so the primary key serves it. The
// table stays one for all tiers, so pruning deletes rows (as on plain
// PostgreSQL) rather than dropping chunks. if_not_exists makes this a
// no-op on later starts; migrate_data converts a table that existed before
// the extension was installed.
func postgresAfterMigrate(ctx context.Context, s *SQL) error {
	if err := s.w.QueryRowContext(ctx,
		`SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')`).Scan(&s.timescale); err != nil {
		return fmt.Errorf("detect TimescaleDB: %w", err)
	}
	if s.timescale {
		if _, err := s.w.ExecContext(ctx, `SELECT create_hypertable('rollups', 'start_ms',
			chunk_time_interval => 86400000::bigint, create_default_indexes => false,
			if_not_exists => true, migrate_data => true)`); err != nil {
			return fmt.Errorf("make rollups a hypertable: %w", err)
		}
	}
	s.log.Info("store opened", "dialect", "postgres", "timescaledb", s.timescale)
	return nil
}

// postgresRebind numbers ? placeholders as $1, $2, ... None of our
// queries has a ? inside a literal.
func postgresRebind(query string) string {
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// postgresUpsertSQL unnests one array per column: one statement, one round
// trip and one plan whatever the batch size.
var postgresUpsertSQL = `INSERT INTO rollups AS r (` + upsertColumns + `)
SELECT * FROM unnest($1::int4[], $2::int2[], $3::int8[], $4::int8[], $5::float8[], $6::float8[],
	$7::float8[], $8::int8[], $9::float8[], $10::int8[], $11::float8[])
` + mergeSet("LEAST", "GREATEST", postgresSum)

// postgresSum is r.sum_v + excluded.sum_v with Go's overflow to ±Inf:
// PostgreSQL raises an error when two finite float8 overflow, which would
// fail the batch, and every retry of it, forever. Halving is exact for
// values this large and scaling by two commutes with rounding, so a+b
// overflows exactly when a/2+b/2 rounds above MaxFloat64/2. An infinite or
// NaN operand takes the first branch too, and sign() times Infinity gives
// what Go would (NaN for Inf-Inf).
var postgresSum = fmt.Sprintf(`CASE WHEN abs(r.sum_v / 2 + excluded.sum_v / 2) > '%s'::float8
		THEN sign(r.sum_v / 2 + excluded.sum_v / 2) * 'Infinity'::float8
		ELSE r.sum_v + excluded.sum_v END`, strconv.FormatFloat(math.MaxFloat64/2, 'g', -1, 64))

func postgresUpsert(ctx context.Context, _ *SQL, tx *sql.Tx, rows []sqlRow) error {
	for len(rows) > 0 {
		n := min(len(rows), postgresUpsertRows)
		var (
			ids                  = make([]int32, n)
			tiers                = make([]int16, n)
			starts, cnts, offs   = make([]int64, n), make([]int64, n), make([]int64, n)
			sums                 = make([]float64, n)
			mins, maxs, fvs, lvs = make([]pgtype.Float8, n), make([]pgtype.Float8, n), make([]pgtype.Float8, n), make([]pgtype.Float8, n)
			lastOffs             = make([]pgtype.Int8, n)
		)
		for i := range rows[:n] {
			r := &rows[i]
			cnt, sum, mn, mx, first, last, firstOff, lastOff := encodeBucket(&r.Bucket)
			if r.id > 1<<31-1 {
				return fmt.Errorf("series id %d overflows int4", r.id)
			}
			ids[i], tiers[i], starts[i], cnts[i], sums[i], offs[i] = int32(r.id), int16(r.tier), r.StartMs, cnt, sum, firstOff
			mins[i], maxs[i], fvs[i], lvs[i] = pgFloat(mn), pgFloat(mx), pgFloat(first), pgFloat(last)
			if lastOff != nil {
				lastOffs[i] = pgtype.Int8{Int64: *lastOff, Valid: true}
			}
		}
		if _, err := tx.ExecContext(ctx, postgresUpsertSQL,
			ids, tiers, starts, cnts, sums, mins, maxs, offs, fvs, lastOffs, lvs); err != nil {
			return fmt.Errorf("upsert rollups: %w", err)
		}
		rows = rows[n:]
	}
	return nil
}

func pgFloat(p *float64) pgtype.Float8 {
	if p == nil {
		return pgtype.Float8{}
	}
	return pgtype.Float8{Float64: *p, Valid: true}
}

func postgresIntern(ctx context.Context, db *sql.DB, names []string) (map[string]int64, error) {
	// names is sorted, so concurrent nodes lock new names in one order.
	if _, err := db.ExecContext(ctx,
		`INSERT INTO series (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING`, names); err != nil {
		return nil, err
	}
	rs, err := db.QueryContext(ctx, `SELECT id, name FROM series WHERE name = ANY($1::text[])`, names)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	ids := make(map[string]int64, len(names))
	for rs.Next() {
		var (
			id int64
			n  string
		)
		if err := rs.Scan(&id, &n); err != nil {
			return nil, err
		}
		ids[n] = id
	}
	return ids, rs.Err()
}
