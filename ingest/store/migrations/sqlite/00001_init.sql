-- Telegauge schema, SQLite dialect. Keep it in step with ../postgres.
--
-- +goose Up

-- series interns series names, so that rollup rows carry a small integer.
-- Rows are never deleted: a cached id must stay valid for every writer.
CREATE TABLE series (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

-- rollups holds every tier's buckets, clustered by series, tier and start,
-- so a query for one series over a time range reads one contiguous run.
-- Columns that equal another for a single-reading bucket are NULL (see
-- store_sql.go, encodeBucket): min_v, max_v, first_v and last_v stand for
-- sum_v, last_off for first_off. Times inside a bucket are offsets from
-- start_ms, which SQLite stores in fewer bytes. sum_v is NULL when a sum
-- overflowed to NaN (SQLite has no NaN).
CREATE TABLE rollups (
    series_id INTEGER NOT NULL,
    tier      INTEGER NOT NULL,
    start_ms  INTEGER NOT NULL,
    cnt       INTEGER NOT NULL,
    sum_v     REAL,
    min_v     REAL,
    max_v     REAL,
    first_off INTEGER NOT NULL,
    first_v   REAL,
    last_off  INTEGER,
    last_v    REAL,
    PRIMARY KEY (series_id, tier, start_ms)
) WITHOUT ROWID;

-- coarse_journal lists, one row per append, the per-minute and per-hour
-- buckets whose deltas the store holds in memory rather than on disk (see
-- store_sql_coarse.go). A clean stop writes them and empties the table; at
-- start, rows left by a crash name the buckets to recompute from the finer
-- tier. keys is a sequence of (uvarint series id, tier byte, varint start
-- in steps).
CREATE TABLE coarse_journal (
    id   INTEGER PRIMARY KEY,
    keys BLOB NOT NULL
);

-- devices: times are Unix ms, 0 for never; metadata is JSON or NULL.
CREATE TABLE devices (
    id            TEXT NOT NULL PRIMARY KEY,
    token_hash    TEXT NOT NULL DEFAULT '',
    metadata      TEXT CHECK (metadata IS NULL OR json_valid(metadata)),
    first_seen_ms INTEGER NOT NULL DEFAULT 0,
    last_seen_ms  INTEGER NOT NULL DEFAULT 0
);

-- boards are saved dashboards; doc is opaque to the store.
CREATE TABLE boards (
    id         TEXT NOT NULL PRIMARY KEY,
    name       TEXT NOT NULL,
    doc        BLOB NOT NULL,
    updated_ms INTEGER NOT NULL
);

-- users are operators.
CREATE TABLE users (
    name       TEXT NOT NULL PRIMARY KEY,
    role       TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);

-- +goose Down
DROP TABLE coarse_journal;
DROP TABLE users;
DROP TABLE boards;
DROP TABLE devices;
DROP TABLE rollups;
DROP TABLE series;
