package store

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver: pure Go, so the binary stays static
)

// sqliteDialect is SQLite through modernc.org/sqlite.
var sqliteDialect = &dialect{
	bufferWrites: true,
	name:         "sqlite",
	goose:        goose.DialectSQLite3,
	readers:      sqliteReaders,
	afterMigrate: sqliteAfterMigrate,
	upsert:       sqliteUpsert,
	intern:       sqliteIntern,
	checkpoint:   sqliteCheckpoint,
}

// sqliteUpsertRows is how many rows one upsert statement carries: 11
// parameters a row stays well under SQLite's 32,766.
const sqliteUpsertRows = 256

// sqliteReaders is the size of the reader pool. WAL readers never block the
// writer or each other.
const sqliteReaders = 4

// openSQLite opens the file at path with one writer connection and a
// small pool of readers.
func (s *SQL) openSQLite(ctx context.Context, path string) error {
	if strings.ContainsAny(path, "?#") {
		return fmt.Errorf("SQLite path %q: ? and # are not allowed", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	s.d = sqliteDialect
	var err error
	if !s.cfg.RecordsOnly {
		if s.lock, err = lockFile(path + ".lock"); err != nil {
			return err
		}
	}
	if s.w, err = sql.Open("sqlite", sqliteDSN(path, false)); err != nil {
		return err
	}
	// SQLite has one writer at a time; a second writer connection would
	// only wait on the file lock, or fail with SQLITE_BUSY.
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	if err := s.w.PingContext(ctx); err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	if s.r, err = sql.Open("sqlite", sqliteDSN(path, true)); err != nil {
		return err
	}
	s.r.SetMaxOpenConns(sqliteReaders)
	s.r.SetMaxIdleConns(sqliteReaders)
	s.r.SetConnMaxLifetime(0)
	s.r.SetConnMaxIdleTime(0)
	s.log.Info("store opened", "dialect", "sqlite", "path", path)
	return nil
}

// sqliteDSN returns the connection string for path.
//
//   - WAL lets readers run while the writer commits.
//   - synchronous=NORMAL: in WAL mode a commit is safe from a process crash
//     at once; only a power loss can undo the last commits before a
//     checkpoint. FULL would fsync every commit.
//   - busy_timeout covers another process (a CLI command) holding the
//     write lock for a moment.
//   - _txlock=immediate takes the write lock at BEGIN, so a transaction
//     never fails halfway when it upgrades from reading to writing.
//   - wal_autocheckpoint(0): the automatic checkpoint runs inside a commit,
//     which Append makes while holding mu, so every Select would wait for
//     its copy and fsync; Append checkpoints after releasing it instead.
//   - A large page cache for the writer: an upsert for each of 10,000
//     series touches as many B-tree leaves every flush.
//   - Readers are query_only, so a bug cannot write through them.
func sqliteDSN(path string, reader bool) string {
	q := "_busy_timeout=5000&_foreign_keys=1"
	if reader {
		q += "&_query_only=1&_pragma=cache_size(-32768)"
	} else {
		q += "&_pragma=page_size(1024)&_journal_mode=WAL&_synchronous=NORMAL&_txlock=immediate&_pragma=wal_autocheckpoint(0)&_pragma=cache_size(-131072)&_pragma=temp_store(MEMORY)"
	}
	return path + "?" + q
}

// sqliteUpsert merges rows in multi-row statements of sqliteUpsertRows.
func sqliteUpsert(ctx context.Context, s *SQL, tx *sql.Tx, rows []sqlRow) error {
	for len(rows) > 0 {
		n := min(len(rows), sqliteUpsertRows)
		var (
			stmt *sql.Stmt
			err  error
		)
		if n == sqliteUpsertRows {
			stmt = tx.StmtContext(ctx, s.upsertAll)
		} else if stmt, err = tx.PrepareContext(ctx, sqliteUpsertSQL(n)); err != nil {
			return fmt.Errorf("prepare upsert: %w", err)
		}
		args := s.args[:0]
		for i := range rows[:n] {
			r := &rows[i]
			cnt, sum, mn, mx, first, last, firstOff, lastOff := encodeBucket(&r.Bucket)
			args = append(args, r.id, int64(r.tier), r.StartMs, cnt, sum,
				nullFloat(mn), nullFloat(mx), firstOff, nullFloat(first), nullInt(lastOff), nullFloat(last))
		}
		_, err = stmt.ExecContext(ctx, args...)
		clear(args)
		s.args = args[:0]
		if n != sqliteUpsertRows {
			_ = stmt.Close()
		}
		if err != nil {
			return fmt.Errorf("upsert rollups: %w", err)
		}
		rows = rows[n:]
	}
	return nil
}

func sqliteUpsertSQL(n int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO rollups AS r (" + upsertColumns + ") VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?,?,?,?,?,?,?,?,?)")
	}
	b.WriteByte('\n')
	// SQLite's float addition overflows to ±Inf, as Go's does.
	b.WriteString(mergeSet("min", "max", "r.sum_v + excluded.sum_v"))
	return b.String()
}

// sqliteAfterMigrate prepares the full-chunk upsert. It cannot be prepared
// on first use: the writer's only connection is then busy with the batch's
// transaction.
func sqliteAfterMigrate(ctx context.Context, s *SQL) error {
	var err error
	if s.upsertAll, err = s.w.PrepareContext(ctx, sqliteUpsertSQL(sqliteUpsertRows)); err != nil {
		return fmt.Errorf("prepare upsert: %w", err)
	}
	return nil
}

func nullFloat(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func nullInt(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}

func sqliteIntern(ctx context.Context, db *sql.DB, names []string) (map[string]int64, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback() }()
	ins, err := tx.PrepareContext(ctx, `INSERT INTO series (name) VALUES (?) ON CONFLICT (name) DO NOTHING`)
	if err != nil {
		return nil, err
	}
	get, err := tx.PrepareContext(ctx, `SELECT id FROM series WHERE name = ?`)
	if err != nil {
		return nil, err
	}
	ids := make(map[string]int64, len(names))
	for _, n := range names {
		if _, err := ins.ExecContext(ctx, n); err != nil {
			return nil, err
		}
		var id int64
		if err := get.QueryRowContext(ctx, n).Scan(&id); err != nil {
			return nil, err
		}
		ids[n] = id
	}
	return ids, tx.Commit()
}

func sqliteCheckpoint(ctx context.Context, s *SQL, mode string) error {
	_, err := s.w.ExecContext(ctx, "PRAGMA wal_checkpoint("+mode+")")
	return err
}
