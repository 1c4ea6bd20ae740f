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

-- write_journal holds, one row per append, what the store keeps in memory
-- rather than in rollups (see store_sql_buffer.go): per-second deltas
-- whole, and the keys of per-minute and per-hour buckets. Writing the
-- buffer out empties it; rows left by a crash are replayed at start. keys
-- is the encoded entries (writeBuffer.journal).
CREATE TABLE write_journal (
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
DROP TABLE write_journal;
DROP TABLE users;
DROP TABLE boards;
DROP TABLE devices;
DROP TABLE rollups;
DROP TABLE series;
