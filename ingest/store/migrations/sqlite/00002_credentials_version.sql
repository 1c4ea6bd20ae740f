-- credentials_version counts changes to device and user credentials, so
-- that a running server notices `telegauge devices revoke` or `users add`
-- from another process with one cheap query.
--
-- +goose Up
CREATE TABLE credentials_version (
    id      INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO credentials_version (id, version) VALUES (1, 0);

-- +goose Down
DROP TABLE credentials_version;
