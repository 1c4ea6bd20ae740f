package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// SessionRecord is an operator's login to the dashboard.
type SessionRecord struct {
	Key       string // hex sha256 of the session cookie's value
	User      string
	TokenHash string // the user's token hash at login
	StartMs   int64  // login time, Unix ms
	SeenMs    int64  // last use as last recorded, Unix ms
}

// PutSession records a session, replacing one with the same key.
func (s *SQL) PutSession(ctx context.Context, r SessionRecord) error {
	if s.closed.Load() {
		return ErrClosed
	}
	_, err := s.w.ExecContext(ctx, s.d.q(`INSERT INTO sessions (key_hash, user_name, token_hash, start_ms, seen_ms) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (key_hash) DO UPDATE SET user_name = excluded.user_name, token_hash = excluded.token_hash,
		start_ms = excluded.start_ms, seen_ms = excluded.seen_ms`),
		r.Key, r.User, r.TokenHash, r.StartMs, r.SeenMs)
	if err != nil {
		return fmt.Errorf("put session of %s: %w", r.User, s.closedErr(err))
	}
	return nil
}

// GetSession returns the session with key, or ErrNotFound.
func (s *SQL) GetSession(ctx context.Context, key string) (SessionRecord, error) {
	if s.closed.Load() {
		return SessionRecord{}, ErrClosed
	}
	r := SessionRecord{Key: key}
	err := s.r.QueryRowContext(ctx, s.d.q(`SELECT user_name, token_hash, start_ms, seen_ms FROM sessions WHERE key_hash = ?`), key).
		Scan(&r.User, &r.TokenHash, &r.StartMs, &r.SeenMs)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return SessionRecord{}, fmt.Errorf("get session: %w", s.closedErr(err))
	}
	return r, nil
}

// TouchSession records a later use of the session with key; an earlier
// time, or a session that is gone, changes nothing.
func (s *SQL) TouchSession(ctx context.Context, key string, seenMs int64) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if _, err := s.w.ExecContext(ctx, s.d.q(`UPDATE sessions SET seen_ms = ? WHERE key_hash = ? AND seen_ms < ?`), seenMs, key, seenMs); err != nil {
		return fmt.Errorf("touch session: %w", s.closedErr(err))
	}
	return nil
}

// DeleteSessions ends the sessions with these keys (unknown ones are
// skipped). Ending one counts as a credential change (see
// CredentialsVersion), so that other servers on the database drop it too.
func (s *SQL) DeleteSessions(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	if s.closed.Load() {
		return ErrClosed
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var n int64
		for _, k := range keys {
			res, err := tx.ExecContext(ctx, s.d.q(`DELETE FROM sessions WHERE key_hash = ?`), k)
			if err != nil {
				return err
			}
			m, err := res.RowsAffected()
			if err != nil {
				return err
			}
			n += m
		}
		if n == 0 {
			return nil
		}
		return bumpCredentials(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("delete %d sessions: %w", len(keys), err)
	}
	return nil
}

// SessionKeys returns the key of every recorded session.
func (s *SQL) SessionKeys(ctx context.Context) (map[string]struct{}, error) {
	out := map[string]struct{}{}
	err := s.query(ctx, `SELECT key_hash FROM sessions`, func(rs *sql.Rows) error {
		var k string
		if err := rs.Scan(&k); err != nil {
			return err
		}
		out[k] = struct{}{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return out, nil
}

// PruneSessions deletes the sessions last seen before seenBeforeMs or
// started before startBeforeMs (expired ones: every server finds them
// expired by itself, so this counts as no credential change) and returns
// how many went.
func (s *SQL) PruneSessions(ctx context.Context, seenBeforeMs, startBeforeMs int64) (int64, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	res, err := s.w.ExecContext(ctx, s.d.q(`DELETE FROM sessions WHERE seen_ms < ? OR start_ms < ?`), seenBeforeMs, startBeforeMs)
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("prune sessions: %w", s.closedErr(err))
}
