package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/telegauge/telegauge/internal/secret"
)

// DeviceRecord is a device as the database keeps it.
type DeviceRecord struct {
	ID string
	// FirstSeenMs and LastSeenMs are Unix ms; 0 means never.
	FirstSeenMs, LastSeenMs int64
	// Metadata is a JSON document, or nil for none.
	Metadata []byte
	// TokenHash is the hash of the device's MQTT password; "" for none.
	TokenHash string
}

// SaveDevices upserts devices in one transaction. An existing device keeps
// the earlier first-seen and the later last-seen time (0 counts as never,
// not as earliest), and keeps its metadata and token hash unless the record
// gives new ones (non-nil, non-empty). Metadata must be valid JSON.
func (s *SQL) SaveDevices(ctx context.Context, devs []DeviceRecord) error {
	if s.closed.Load() {
		return ErrClosed
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, s.d.q(`INSERT INTO devices AS d (id, token_hash, metadata, first_seen_ms, last_seen_ms)
			VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET
				token_hash = CASE WHEN excluded.token_hash = '' THEN d.token_hash ELSE excluded.token_hash END,
				metadata = COALESCE(excluded.metadata, d.metadata),
				first_seen_ms = CASE
					WHEN d.first_seen_ms = 0 THEN excluded.first_seen_ms
					WHEN excluded.first_seen_ms = 0 OR d.first_seen_ms < excluded.first_seen_ms THEN d.first_seen_ms
					ELSE excluded.first_seen_ms END,
				last_seen_ms = CASE WHEN d.last_seen_ms > excluded.last_seen_ms THEN d.last_seen_ms ELSE excluded.last_seen_ms END`))
		if err != nil {
			return err
		}
		defer st.Close()
		for _, d := range devs {
			var md any
			if d.Metadata != nil {
				md = string(d.Metadata)
			}
			if _, err := st.ExecContext(ctx, d.ID, d.TokenHash, md, d.FirstSeenMs, d.LastSeenMs); err != nil {
				return fmt.Errorf("%s: %w", d.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("save devices: %w", err)
	}
	return nil
}

// Devices returns every device, sorted by ID.
func (s *SQL) Devices(ctx context.Context) ([]DeviceRecord, error) {
	var out []DeviceRecord
	err := s.query(ctx, `SELECT id, first_seen_ms, last_seen_ms, metadata, token_hash FROM devices ORDER BY id`,
		func(rs *sql.Rows) error {
			var d DeviceRecord
			if err := rs.Scan(&d.ID, &d.FirstSeenMs, &d.LastSeenMs, &d.Metadata, &d.TokenHash); err != nil {
				return err
			}
			out = append(out, d)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return out, nil
}

// DeleteDevice removes a device, its token hash with it (a credential
// change: see CredentialsVersion). Its history stays until retention
// removes it. A missing device is ErrNotFound.
func (s *SQL) DeleteDevice(ctx context.Context, id string) error {
	if err := s.changeCredential(ctx, `DELETE FROM devices WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete device %s: %w", id, err)
	}
	return nil
}

// BoardRecord is a saved dashboard.
type BoardRecord struct {
	ID        string
	Name      string
	Doc       []byte // the board's definition, opaque to the store
	UpdatedMs int64  // Unix ms
}

// PutBoard creates or replaces the board id.
func (s *SQL) PutBoard(ctx context.Context, id, name string, doc []byte, updatedMs int64) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if doc == nil {
		doc = []byte{}
	}
	_, err := s.w.ExecContext(ctx, s.d.q(`INSERT INTO boards (id, name, doc, updated_ms) VALUES (?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, doc = excluded.doc, updated_ms = excluded.updated_ms`),
		id, name, doc, updatedMs)
	if err != nil {
		return fmt.Errorf("put board %s: %w", id, s.closedErr(err))
	}
	return nil
}

// GetBoard returns the board id, or ErrNotFound.
func (s *SQL) GetBoard(ctx context.Context, id string) (name string, doc []byte, updatedMs int64, err error) {
	if s.closed.Load() {
		return "", nil, 0, ErrClosed
	}
	err = s.r.QueryRowContext(ctx, s.d.q(`SELECT name, doc, updated_ms FROM boards WHERE id = ?`), id).
		Scan(&name, &doc, &updatedMs)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return "", nil, 0, fmt.Errorf("get board %s: %w", id, s.closedErr(err))
	}
	return name, doc, updatedMs, nil
}

// ListBoards returns every board, sorted by ID.
func (s *SQL) ListBoards(ctx context.Context) ([]BoardRecord, error) {
	var out []BoardRecord
	err := s.query(ctx, `SELECT id, name, doc, updated_ms FROM boards ORDER BY id`, func(rs *sql.Rows) error {
		var b BoardRecord
		if err := rs.Scan(&b.ID, &b.Name, &b.Doc, &b.UpdatedMs); err != nil {
			return err
		}
		out = append(out, b)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list boards: %w", err)
	}
	return out, nil
}

// DeleteBoard removes the board id; a missing board is ErrNotFound.
func (s *SQL) DeleteBoard(ctx context.Context, id string) error {
	if err := s.deleteOne(ctx, `DELETE FROM boards WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete board %s: %w", id, err)
	}
	return nil
}

// UserRecord is an operator.
type UserRecord struct {
	Name      string
	Role      string // "admin" or "viewer"; not checked here
	TokenHash string // hash of the user's API token
	CreatedMs int64  // Unix ms
}

// PutUser creates a user or replaces its role and token hash; an existing
// user keeps its CreatedMs.
func (s *SQL) PutUser(ctx context.Context, u UserRecord) error {
	if s.closed.Load() {
		return ErrClosed
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.d.q(`INSERT INTO users (name, role, token_hash, created_ms) VALUES (?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET role = excluded.role, token_hash = excluded.token_hash`),
			u.Name, u.Role, u.TokenHash, u.CreatedMs); err != nil {
			return err
		}
		return bumpCredentials(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("put user %s: %w", u.Name, s.closedErr(err))
	}
	return nil
}

// GetUser returns the user name, or ErrNotFound.
func (s *SQL) GetUser(ctx context.Context, name string) (UserRecord, error) {
	if s.closed.Load() {
		return UserRecord{}, ErrClosed
	}
	u := UserRecord{Name: name}
	err := s.r.QueryRowContext(ctx, s.d.q(`SELECT role, token_hash, created_ms FROM users WHERE name = ?`), name).
		Scan(&u.Role, &u.TokenHash, &u.CreatedMs)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return UserRecord{}, fmt.Errorf("get user %s: %w", name, s.closedErr(err))
	}
	return u, nil
}

// ListUsers returns every user, sorted by name.
func (s *SQL) ListUsers(ctx context.Context) ([]UserRecord, error) {
	var out []UserRecord
	err := s.query(ctx, `SELECT name, role, token_hash, created_ms FROM users ORDER BY name`, func(rs *sql.Rows) error {
		var u UserRecord
		if err := rs.Scan(&u.Name, &u.Role, &u.TokenHash, &u.CreatedMs); err != nil {
			return err
		}
		out = append(out, u)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}

// DeleteUser removes the user name; a missing user is ErrNotFound.
func (s *SQL) DeleteUser(ctx context.Context, name string) error {
	if err := s.changeCredential(ctx, `DELETE FROM users WHERE name = ?`, name); err != nil {
		return fmt.Errorf("delete user %s: %w", name, err)
	}
	return nil
}

// inTx runs f in a write transaction, committing if it returns nil.
func (s *SQL) inTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.closedErr(err)
	}
	if err := f(tx); err != nil {
		_ = tx.Rollback()
		return s.closedErr(err)
	}
	return s.closedErr(tx.Commit())
}

// query runs a read and calls each for every row.
func (s *SQL) query(ctx context.Context, query string, each func(*sql.Rows) error, args ...any) error {
	if s.closed.Load() {
		return ErrClosed
	}
	rs, err := s.r.QueryContext(ctx, s.d.q(query), args...)
	if err != nil {
		return s.closedErr(err)
	}
	defer rs.Close()
	for rs.Next() {
		if err := each(rs); err != nil {
			return err
		}
	}
	return s.closedErr(rs.Err())
}

// deleteOne runs a DELETE that should remove one row; none is ErrNotFound.
func (s *SQL) deleteOne(ctx context.Context, query string, args ...any) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return s.closedErr(oneRow(s.w.ExecContext(ctx, s.d.q(query), args...)))
}

// oneRow is ErrNotFound for a statement that changed no row.
func oneRow(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// bumpCredentials counts a credential change (see CredentialsVersion).
func bumpCredentials(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `UPDATE credentials_version SET version = version + 1 WHERE id = 1`)
	return err
}

// changeCredential runs a statement that must change exactly one row, and
// counts the change; no row is ErrNotFound.
func (s *SQL) changeCredential(ctx context.Context, query string, args ...any) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		if err := oneRow(tx.ExecContext(ctx, s.d.q(query), args...)); err != nil {
			return err
		}
		return bumpCredentials(ctx, tx)
	})
}

// SetDeviceToken gives device id a credential (the hash of its token),
// creating the device if it is new and replacing any earlier credential.
func (s *SQL) SetDeviceToken(ctx context.Context, id, tokenHash string) error {
	if tokenHash == "" {
		return errors.New("set device token: empty hash")
	}
	if s.closed.Load() {
		return ErrClosed
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.d.q(`INSERT INTO devices (id, token_hash) VALUES (?, ?)
			ON CONFLICT (id) DO UPDATE SET token_hash = excluded.token_hash`), id, tokenHash); err != nil {
			return err
		}
		return bumpCredentials(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("set token of device %s: %w", id, s.closedErr(err))
	}
	return nil
}

// RevokeDevice replaces device id's credential with secret.Revoked (its history
// stays); a device without a live credential is ErrNotFound.
func (s *SQL) RevokeDevice(ctx context.Context, id string) error {
	if err := s.changeCredential(ctx, `UPDATE devices SET token_hash = ? WHERE id = ? AND token_hash <> '' AND token_hash <> ?`, secret.Revoked, id, secret.Revoked); err != nil {
		return fmt.Errorf("revoke device %s: %w", id, err)
	}
	return nil
}

// DeviceTokens returns the credential hash of every device that has one,
// secret.Revoked included.
func (s *SQL) DeviceTokens(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	err := s.query(ctx, `SELECT id, token_hash FROM devices WHERE token_hash <> ''`, func(rs *sql.Rows) error {
		var id, h string
		if err := rs.Scan(&id, &h); err != nil {
			return err
		}
		out[id] = h
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list device tokens: %w", err)
	}
	return out, nil
}

// CredentialsVersion returns a number that changes whenever a device or
// user credential does, from this process or another one using the same
// database: a running server polls it to honour changes at once.
func (s *SQL) CredentialsVersion(ctx context.Context) (int64, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	var v int64
	if err := s.r.QueryRowContext(ctx, `SELECT version FROM credentials_version WHERE id = 1`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read credentials version: %w", s.closedErr(err))
	}
	return v, nil
}
