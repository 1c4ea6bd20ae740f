-- sessions are operators' logins to the dashboard, kept so that a restart,
-- or another node sharing the database, honours them. key_hash is the hex
-- sha256 of the session cookie's value: the table holds no usable
-- credential. token_hash is the user's token hash at login: a new token
-- ends the session.
--
-- +goose Up
CREATE TABLE sessions (
    key_hash   TEXT NOT NULL PRIMARY KEY,
    user_name  TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    start_ms   BIGINT NOT NULL,
    seen_ms    BIGINT NOT NULL
);

-- +goose Down
DROP TABLE sessions;
