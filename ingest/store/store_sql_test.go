package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest/rollup"
	"github.com/telegauge/telegauge/internal/pgtest"
	"github.com/telegauge/telegauge/internal/secret"
)

// newTestSQL opens a store with cfg on a fake clock at t0 and closes it
// when the test ends.
func newTestSQL(t testing.TB, cfg SQLConfig) (*SQL, *clockwork.FakeClock) {
	t.Helper()
	clock := clockwork.NewFakeClockAt(t0)
	cfg.Clock = clock
	s, err := Open(context.Background(), cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s, clock
}

// sqliteTestURL returns a fresh SQLite file in the test's directory.
func sqliteTestURL(t testing.TB) string {
	return filepath.Join(t.TempDir(), "telegauge.db")
}

// postgresTestURL is a fresh schema in the test PostgreSQL, or a skip.
func postgresTestURL(t testing.TB) string { return pgtest.URL(t) }

// dialects runs f once per SQL database: SQLite, and PostgreSQL when
// configured.
func dialects(t *testing.T, f func(t *testing.T, url func(testing.TB) string)) {
	t.Run("sqlite", func(t *testing.T) { f(t, sqliteTestURL) })
	t.Run("postgres", func(t *testing.T) { f(t, postgresTestURL) })
}

func TestSQLReopen(t *testing.T) {
	dialects(t, func(t *testing.T, url func(testing.TB) string) {
		u := url(t)
		ctx := context.Background()
		s := t0.UnixMilli() - 10_000
		b := bucket(s, [2]float64{float64(s + 1), 2}, [2]float64{float64(s + 2), 3})
		a, _ := newTestSQL(t, SQLConfig{URL: u})
		mustAppend(t, a, Batch{Writer: 0, Seq: 5, Entries: []Entry{
			entry("dev1/a", rollup.Tier1s, b), entry("dev2/b", rollup.Tier1m, b), entry("dev0/z", rollup.Tier1h, b),
		}})
		require.NoError(t, a.SaveDevices(ctx, []DeviceRecord{{ID: "dev1", FirstSeenMs: 1, LastSeenMs: 2}}))
		require.NoError(t, a.PutBoard(ctx, "b1", "Board", []byte(`{}`), 3))
		require.NoError(t, a.PutUser(ctx, UserRecord{Name: "ann", Role: "admin", TokenHash: "h", CreatedMs: 4}))
		require.NoError(t, a.Close())

		r, _ := newTestSQL(t, SQLConfig{URL: u})
		sel := mustSelect(t, r, rollup.Tier1s, s, s+1000, "dev1/a")
		require.Equal(t, []rollup.Bucket{b}, sel.Buckets[0])
		require.Empty(t, sel.Marks, "marks belong to the process that wrote")
		names, err := r.SeriesNames(ctx)
		require.NoError(t, err)
		require.Equal(t, []string{"dev0/z", "dev1/a", "dev2/b"}, names)
		devs, err := r.Devices(ctx)
		require.NoError(t, err)
		require.Equal(t, []DeviceRecord{{ID: "dev1", FirstSeenMs: 1, LastSeenMs: 2}}, devs)
		boards, err := r.ListBoards(ctx)
		require.NoError(t, err)
		require.Equal(t, []BoardRecord{{ID: "b1", Name: "Board", Doc: []byte(`{}`), UpdatedMs: 3}}, boards)
		users, err := r.ListUsers(ctx)
		require.NoError(t, err)
		require.Equal(t, []UserRecord{{Name: "ann", Role: "admin", TokenHash: "h", CreatedMs: 4}}, users)

		// A restarted aggregator numbers its batches from 1 again, and they
		// merge into what the previous run stored.
		mustAppend(t, r, Batch{Writer: 0, Seq: 1, Entries: []Entry{entry("dev1/a", rollup.Tier1s, b)}})
		sel = mustSelect(t, r, rollup.Tier1s, s, s+1000, "dev1/a")
		require.Equal(t, int64(4), sel.Buckets[0][0].Count)
	})
}

func TestSQLMigrationsIdempotent(t *testing.T) {
	dialects(t, func(t *testing.T, url func(testing.TB) string) {
		u := url(t)
		for range 3 {
			s, _ := newTestSQL(t, SQLConfig{URL: u})
			var version int64
			require.NoError(t, s.r.QueryRow(`SELECT max(version_id) FROM goose_db_version`).Scan(&version))
			require.Equal(t, int64(3), version, "the newest migration")
			require.NoError(t, s.Close())
		}
	})
}

// TestSQLCompactRows checks that single-reading buckets are stored with
// NULLs, the encoding that halves the per-second tier.
func TestSQLCompactRows(t *testing.T) {
	dialects(t, func(t *testing.T, url func(testing.TB) string) {
		// Written through: the coarse tier would wait in memory.
		st, _ := newTestSQL(t, SQLConfig{URL: url(t), WriteInterval: -1})
		s := t0.UnixMilli() - 10_000
		mustAppend(t, st, Batch{Writer: 0, Seq: 1, Entries: []Entry{
			entry("dev1/a", rollup.Tier1s, bucket(s, [2]float64{float64(s + 7), 2.5})),
			entry("dev1/a", rollup.Tier1m, bucket(s, [2]float64{float64(s + 7), 2.5}, [2]float64{float64(s + 8), 2.5})),
		}})
		var compact, full int
		require.NoError(t, st.r.QueryRow(`SELECT
			count(*) FILTER (WHERE min_v IS NULL AND max_v IS NULL AND first_v IS NULL AND last_v IS NULL AND last_off IS NULL),
			count(*) FILTER (WHERE min_v IS NOT NULL AND last_off IS NOT NULL)
			FROM rollups`).Scan(&compact, &full))
		require.Equal(t, 1, compact)
		require.Equal(t, 1, full)
	})
}

func TestSQLPruneChunks(t *testing.T) {
	dialects(t, func(t *testing.T, url func(testing.TB) string) {
		st, clock := newTestSQL(t, SQLConfig{URL: url(t), Retention: Retention{2 * time.Hour}})
		ctx := context.Background()
		// More expired rows in one series than a prune transaction deletes,
		// and more series than its statement budget.
		now := rollup.Floor(t0.UnixMilli(), 1000)
		var entries []Entry
		for i := range int64(pruneChunkRows + 1500) {
			start := now - (i+1)*1000
			entries = append(entries, entry("dev1/a", rollup.Tier1s, bucket(start, [2]float64{float64(start), 1})))
		}
		for i := range pruneChunkStmts/3 + 10 {
			entries = append(entries, entry(fmt.Sprintf("dev%d/b", i), rollup.Tier1s, bucket(now, [2]float64{float64(now), 1})))
		}
		mustAppend(t, st, Batch{Writer: 0, Seq: 1, Entries: entries})
		require.Len(t, mustSelect(t, st, rollup.Tier1s, 0, now+1000, "dev1/a").Buckets[0], pruneChunkRows+1500)

		clock.Advance(3 * time.Hour)
		mustAppend(t, st, Batch{Writer: 0, Seq: 2, Entries: []Entry{
			entry("dev1/a", rollup.Tier1s, bucket(rollup.Floor(clock.Now().UnixMilli(), 1000), [2]float64{float64(clock.Now().UnixMilli()), 1})),
		}})
		require.NoError(t, st.Prune(ctx))
		var n int
		require.NoError(t, st.r.QueryRow(`SELECT count(*) FROM rollups`).Scan(&n))
		require.Equal(t, 1, n, "only the fresh bucket is left")
		names, err := st.SeriesNames(ctx)
		require.NoError(t, err)
		require.Equal(t, []string{"dev1/a"}, names, "series without buckets are not listed")
	})
}

func TestSQLDevices(t *testing.T) {
	dialects(t, func(t *testing.T, url func(testing.TB) string) {
		s, _ := newTestSQL(t, SQLConfig{URL: url(t)})
		ctx := context.Background()
		devs, err := s.Devices(ctx)
		require.NoError(t, err)
		require.Empty(t, devs)

		require.NoError(t, s.SaveDevices(ctx, []DeviceRecord{
			{ID: "b", FirstSeenMs: 100, LastSeenMs: 200, Metadata: []byte(`{"room":"lab"}`)},
			{ID: "a", TokenHash: "hash-a"}, // added by the CLI: never seen
		}))
		require.NoError(t, s.SaveDevices(ctx, []DeviceRecord{
			{ID: "b", FirstSeenMs: 150, LastSeenMs: 180}, // older last-seen, no metadata
			{ID: "a", FirstSeenMs: 300, LastSeenMs: 300}, // first sighting, no token
		}))
		require.NoError(t, s.SaveDevices(ctx, []DeviceRecord{
			{ID: "b", FirstSeenMs: 90, LastSeenMs: 250, Metadata: []byte(`{"room":"hall"}`)},
			{ID: "c"},
		}))
		require.NoError(t, s.SaveDevices(ctx, nil))
		devs, err = s.Devices(ctx)
		require.NoError(t, err)
		require.Equal(t, []DeviceRecord{
			{ID: "a", FirstSeenMs: 300, LastSeenMs: 300, TokenHash: "hash-a"},
			{ID: "b", FirstSeenMs: 90, LastSeenMs: 250, Metadata: []byte(`{"room":"hall"}`)},
			{ID: "c"},
		}, devs)

		require.Error(t, s.SaveDevices(ctx, []DeviceRecord{{ID: "d"}, {ID: "e", Metadata: []byte(`{not json`)}}))
		devs, err = s.Devices(ctx)
		require.NoError(t, err)
		require.Len(t, devs, 3, "a failed save saves none")

		require.NoError(t, s.DeleteDevice(ctx, "a"))
		require.ErrorIs(t, s.DeleteDevice(ctx, "a"), ErrNotFound)
		devs, err = s.Devices(ctx)
		require.NoError(t, err)
		require.Len(t, devs, 2)
	})
}

func TestSQLBoards(t *testing.T) {
	dialects(t, func(t *testing.T, url func(testing.TB) string) {
		s, _ := newTestSQL(t, SQLConfig{URL: url(t)})
		ctx := context.Background()
		_, _, _, err := s.GetBoard(ctx, "nope")
		require.ErrorIs(t, err, ErrNotFound)
		boards, err := s.ListBoards(ctx)
		require.NoError(t, err)
		require.Empty(t, boards)

		doc := []byte("{\"panels\":[1,2]}\x00\xff") // opaque bytes round-trip
		require.NoError(t, s.PutBoard(ctx, "b2", "Second", doc, 10))
		require.NoError(t, s.PutBoard(ctx, "b1", "First", []byte(`{}`), 11))
		require.NoError(t, s.PutBoard(ctx, "b2", "Second, renamed", []byte(`{"v":2}`), 12))
		name, got, updated, err := s.GetBoard(ctx, "b2")
		require.NoError(t, err)
		require.Equal(t, "Second, renamed", name)
		require.Equal(t, []byte(`{"v":2}`), got)
		require.Equal(t, int64(12), updated)
		require.NoError(t, s.PutBoard(ctx, "b3", "Third", doc, 13))
		_, got, _, err = s.GetBoard(ctx, "b3")
		require.NoError(t, err)
		require.Equal(t, doc, got)

		boards, err = s.ListBoards(ctx)
		require.NoError(t, err)
		require.Equal(t, []BoardRecord{
			{ID: "b1", Name: "First", Doc: []byte(`{}`), UpdatedMs: 11},
			{ID: "b2", Name: "Second, renamed", Doc: []byte(`{"v":2}`), UpdatedMs: 12},
			{ID: "b3", Name: "Third", Doc: doc, UpdatedMs: 13},
		}, boards)

		require.NoError(t, s.DeleteBoard(ctx, "b2"))
		require.ErrorIs(t, s.DeleteBoard(ctx, "b2"), ErrNotFound)
		_, _, _, err = s.GetBoard(ctx, "b2")
		require.ErrorIs(t, err, ErrNotFound)
	})
}

func TestSQLUsers(t *testing.T) {
	dialects(t, func(t *testing.T, url func(testing.TB) string) {
		s, _ := newTestSQL(t, SQLConfig{URL: url(t)})
		ctx := context.Background()
		_, err := s.GetUser(ctx, "ann")
		require.ErrorIs(t, err, ErrNotFound)

		require.NoError(t, s.PutUser(ctx, UserRecord{Name: "ann", Role: "admin", TokenHash: "h1", CreatedMs: 1}))
		require.NoError(t, s.PutUser(ctx, UserRecord{Name: "bob", Role: "viewer", TokenHash: "h2", CreatedMs: 2}))
		require.NoError(t, s.PutUser(ctx, UserRecord{Name: "ann", Role: "viewer", TokenHash: "h3", CreatedMs: 9}))
		u, err := s.GetUser(ctx, "ann")
		require.NoError(t, err)
		require.Equal(t, UserRecord{Name: "ann", Role: "viewer", TokenHash: "h3", CreatedMs: 1}, u, "created is kept")
		users, err := s.ListUsers(ctx)
		require.NoError(t, err)
		require.Equal(t, []UserRecord{u, {Name: "bob", Role: "viewer", TokenHash: "h2", CreatedMs: 2}}, users)

		require.NoError(t, s.DeleteUser(ctx, "ann"))
		require.ErrorIs(t, s.DeleteUser(ctx, "ann"), ErrNotFound)
		_, err = s.GetUser(ctx, "ann")
		require.ErrorIs(t, err, ErrNotFound)
	})
}

// twoHandles opens the database at u twice, as a server and as a records
// command beside it, and returns a reader of its credentials version.
func twoHandles(t *testing.T, u string) (s, other *SQL, version func() int64) {
	s, _ = newTestSQL(t, SQLConfig{URL: u})
	other, _ = newTestSQL(t, SQLConfig{URL: u, RecordsOnly: true})
	return s, other, func() int64 {
		t.Helper()
		v, err := s.CredentialsVersion(context.Background())
		require.NoError(t, err)
		return v
	}
}

// TestSQLCredentials: device credentials come and go, and every change to a
// device or user credential, from any handle on the database, moves
// CredentialsVersion; other writes do not.
func TestSQLCredentials(t *testing.T) {
	dialects(t, func(t *testing.T, url func(testing.TB) string) {
		s, other, version := twoHandles(t, url(t))
		ctx := context.Background()
		v0 := version()
		require.NoError(t, s.SaveDevices(ctx, []DeviceRecord{{ID: "d1", LastSeenMs: 5}}))
		require.Equal(t, v0, version(), "seeing a device is not a credential change")

		require.NoError(t, other.SetDeviceToken(ctx, "d1", "h1"))
		require.NoError(t, other.SetDeviceToken(ctx, "d2", "h2"))
		require.Equal(t, v0+2, version())
		toks, err := s.DeviceTokens(ctx)
		require.NoError(t, err)
		require.Equal(t, map[string]string{"d1": "h1", "d2": "h2"}, toks)
		// The server's periodic save keeps the credential.
		require.NoError(t, s.SaveDevices(ctx, []DeviceRecord{{ID: "d1", LastSeenMs: 9}}))
		toks, err = s.DeviceTokens(ctx)
		require.NoError(t, err)
		require.Equal(t, "h1", toks["d1"])

		require.NoError(t, other.RevokeDevice(ctx, "d1"))
		require.ErrorIs(t, other.RevokeDevice(ctx, "d1"), ErrNotFound, "already revoked")
		require.ErrorIs(t, other.RevokeDevice(ctx, "nobody"), ErrNotFound)
		require.Equal(t, v0+3, version())
		toks, err = s.DeviceTokens(ctx)
		require.NoError(t, err)
		require.Equal(t, map[string]string{"d1": secret.Revoked, "d2": "h2"}, toks)
		require.NoError(t, other.SetDeviceToken(ctx, "d1", "h1b"), "a revoked device can get a new token")
		require.NoError(t, other.RevokeDevice(ctx, "d1"))
		v0 += 2
		devs, err := s.Devices(ctx)
		require.NoError(t, err)
		require.Len(t, devs, 2, "a revoked device keeps its record")

		require.NoError(t, other.PutUser(ctx, UserRecord{Name: "ann", Role: "admin", TokenHash: "u1", CreatedMs: 1}))
		require.NoError(t, other.DeleteUser(ctx, "ann"))
		require.Equal(t, v0+5, version())
		require.Error(t, s.SetDeviceToken(ctx, "d3", ""))
	})
}

// TestSQLSessions: a session recorded by one server is found by another on
// the same database; ending one is a credential change, pruning expired
// ones is not.
func TestSQLSessions(t *testing.T) {
	dialects(t, func(t *testing.T, url func(testing.TB) string) {
		s, other, version := twoHandles(t, url(t))
		ctx := context.Background()
		v0 := version()
		a := SessionRecord{Key: "k1", User: "ann", TokenHash: "h1", StartMs: 1000, SeenMs: 1000}
		b := SessionRecord{Key: "k2", User: "bob", TokenHash: "h2", StartMs: 2000, SeenMs: 2500}
		require.NoError(t, s.PutSession(ctx, a))
		require.NoError(t, s.PutSession(ctx, b))
		require.Equal(t, v0, version(), "a login is not a credential change")

		got, err := other.GetSession(ctx, "k1")
		require.NoError(t, err)
		require.Equal(t, a, got)
		_, err = other.GetSession(ctx, "nope")
		require.ErrorIs(t, err, ErrNotFound)

		require.NoError(t, other.TouchSession(ctx, "k1", 5000))
		require.NoError(t, other.TouchSession(ctx, "k1", 4000), "an older use changes nothing")
		require.NoError(t, other.TouchSession(ctx, "gone", 4000))
		got, err = s.GetSession(ctx, "k1")
		require.NoError(t, err)
		require.Equal(t, int64(5000), got.SeenMs)

		keys, err := s.SessionKeys(ctx)
		require.NoError(t, err)
		require.Equal(t, map[string]struct{}{"k1": {}, "k2": {}}, keys)

		require.NoError(t, other.DeleteSessions(ctx, "k1", "unknown"))
		require.Equal(t, v0+1, version(), "ending a session is")
		require.NoError(t, other.DeleteSessions(ctx, "k1"))
		require.Equal(t, v0+1, version(), "ending none is not")
		_, err = s.GetSession(ctx, "k1")
		require.ErrorIs(t, err, ErrNotFound)

		require.NoError(t, s.PutSession(ctx, a))
		n, err := s.PruneSessions(ctx, 2000, 0) // k1 last seen at 1000
		require.NoError(t, err)
		require.Equal(t, int64(1), n)
		n, err = s.PruneSessions(ctx, 0, 2001) // k2 started at 2000
		require.NoError(t, err)
		require.Equal(t, int64(1), n)
		keys, err = s.SessionKeys(ctx)
		require.NoError(t, err)
		require.Empty(t, keys)
		require.Equal(t, v0+1, version())

		require.NoError(t, s.Close())
		require.ErrorIs(t, s.PutSession(ctx, a), ErrClosed)
		_, err = s.GetSession(ctx, "k1")
		require.ErrorIs(t, err, ErrClosed)
	})
}

func TestSQLRecordsAfterClose(t *testing.T) {
	s, err := Open(context.Background(), SQLConfig{URL: sqliteTestURL(t)}, nil)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	ctx := context.Background()
	_, err = s.Devices(ctx)
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, s.SaveDevices(ctx, nil), ErrClosed)
	require.ErrorIs(t, s.PutBoard(ctx, "b", "B", nil, 0), ErrClosed)
	_, _, _, err = s.GetBoard(ctx, "b")
	require.ErrorIs(t, err, ErrClosed)
	_, err = s.ListUsers(ctx)
	require.ErrorIs(t, err, ErrClosed)
	_, err = s.SeriesNames(ctx)
	require.ErrorIs(t, err, ErrClosed)
}

func TestSQLOpenURL(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		url     string
		file    string // created, relative to dir; "" when Open fails
		wantErr string
	}{
		{"plain path, missing directories made", filepath.Join(dir, "a", "b", "x.db"), "a/b/x.db", ""},
		{"sqlite: prefix", "sqlite:" + filepath.Join(dir, "y.db"), "y.db", ""},
		{"sqlite:// prefix", "sqlite://" + filepath.Join(dir, "z.db"), "z.db", ""},
		{"empty", "", "", "no database URL"},
		{"prefix only", "sqlite:", "", "no SQLite file"},
		{"query characters", filepath.Join(dir, "q?.db"), "", "not allowed"},
		{"unreachable postgres", "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2", "", "connect to PostgreSQL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(context.Background(), SQLConfig{URL: tc.url}, nil)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				require.Nil(t, s)
				return
			}
			require.NoError(t, err)
			require.NoError(t, s.Close())
			require.FileExists(t, filepath.Join(dir, tc.file))
		})
	}
}

func TestSQLDefaults(t *testing.T) {
	s, _ := newTestSQL(t, SQLConfig{URL: sqliteTestURL(t), Retention: Retention{2 * time.Hour}})
	require.Equal(t, Retention{2 * time.Hour, DefaultSQLRetention[1], DefaultSQLRetention[2]}, s.cfg.Retention)
	require.Equal(t, time.Minute, s.cfg.PruneInterval)
	require.Equal(t, Retention{24 * time.Hour, 30 * 24 * time.Hour, 2 * 365 * 24 * time.Hour}, DefaultSQLRetention)
}

func TestSQLMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	u := sqliteTestURL(t)
	s, clock := newTestSQL(t, SQLConfig{URL: u, Registerer: reg, Retention: Retention{time.Minute}, WriteInterval: -1})
	start := rollup.Floor(t0.UnixMilli(), 1000)
	mustAppend(t, s, Batch{Writer: 0, Seq: 1, Entries: []Entry{
		entry("dev1/a", rollup.Tier1s, bucket(start, [2]float64{float64(start), 1})),
		entry("dev1/a", rollup.Tier1m, bucket(rollup.Floor(start, 60_000), [2]float64{float64(start), 1})),
	}})
	require.Equal(t, 2.0, testutil.ToFloat64(s.met.rowsWritten))
	clock.Advance(time.Hour)
	require.NoError(t, s.Prune(context.Background()))
	require.Equal(t, 1.0, testutil.ToFloat64(s.met.rowsPruned))
	n, err := testutil.GatherAndCount(reg, "telegauge_store_rows_written_total", "telegauge_store_append_seconds")
	require.NoError(t, err)
	require.Equal(t, 2, n)

	// Closing unregisters, so a reopened store can register again.
	require.NoError(t, s.Close())
	s2, err := Open(context.Background(), SQLConfig{URL: u, Registerer: reg}, nil)
	require.NoError(t, err)
	require.NoError(t, s2.Close())
}

// TestSQLiteSecondProcess: another handle on the same file, as a CLI
// command running beside the server has, sees the server's writes and
// writes records the server sees.
func TestSQLiteSecondProcess(t *testing.T) {
	u := sqliteTestURL(t)
	ctx := context.Background()
	server, _ := newTestSQL(t, SQLConfig{URL: u, WriteInterval: -1}) // rollups written at once, for SeriesNames below
	s := t0.UnixMilli() - 10_000
	mustAppend(t, server, Batch{Writer: 0, Seq: 1, Entries: []Entry{entry("dev1/a", rollup.Tier1s, bucket(s, [2]float64{float64(s), 1}))}})

	cli, _ := newTestSQL(t, SQLConfig{URL: u, RecordsOnly: true})
	require.Error(t, cli.Append(ctx, Batch{Writer: 9, Seq: 1}), "a records-only store takes no rollups")
	require.NoError(t, cli.SaveDevices(ctx, []DeviceRecord{{ID: "dev9", TokenHash: "h"}}))
	names, err := cli.SeriesNames(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"dev1/a"}, names)
	require.NoError(t, cli.Close())

	devs, err := server.Devices(ctx)
	require.NoError(t, err)
	require.Equal(t, []DeviceRecord{{ID: "dev9", TokenHash: "h"}}, devs)
}

// TestSQLiteOneOwner: a second store on the same file is refused with an
// error that says why, until the first closes.
func TestSQLiteOneOwner(t *testing.T) {
	url := sqliteTestURL(t)
	first, err := Open(context.Background(), SQLConfig{URL: url}, nil)
	require.NoError(t, err)
	_, err = Open(context.Background(), SQLConfig{URL: url}, nil)
	require.ErrorContains(t, err, "another telegauge is using this data directory")
	require.NoError(t, first.Close())
	again, err := Open(context.Background(), SQLConfig{URL: url}, nil)
	require.NoError(t, err)
	require.NoError(t, again.Close())
}
