package web

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/telegauge/telegauge/ingest/store"
)

// SessionStore keeps sessions where a restart of this server, or another
// server on the same database, finds them (store.SQL). The web tier holds
// the sessions it uses in memory and asks the store for one it does not
// hold; a session ended here is deleted there, and SetAccess (called when
// the database's credentials version moves, which deleting a session does)
// drops the sessions another server ended.
type SessionStore interface {
	PutSession(ctx context.Context, r store.SessionRecord) error
	// GetSession returns store.ErrNotFound for a session it does not hold.
	GetSession(ctx context.Context, key string) (store.SessionRecord, error)
	TouchSession(ctx context.Context, key string, seenMs int64) error
	DeleteSessions(ctx context.Context, keys ...string) error
	SessionKeys(ctx context.Context) (map[string]struct{}, error)
	PruneSessions(ctx context.Context, seenBeforeMs, startBeforeMs int64) (int64, error)
}

// storeTimeout bounds one session store call.
const storeTimeout = 5 * time.Second

// storeKey is a session's key in the store.
func storeKey(key [32]byte) string { return hex.EncodeToString(key[:]) }

// storeNew writes a session just created to the store, ends there the
// ones its creation evicted, and prunes expired ones. A session the store
// could not take still works, until this process ends.
func (a *auth) storeNew(ctx context.Context, key [32]byte, user, hash string, now time.Time, evicted [][32]byte) {
	if a.store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	a.forget(ctx, evicted)
	nowMs := now.UnixMilli()
	err := a.store.PutSession(ctx, store.SessionRecord{Key: storeKey(key), User: user, TokenHash: hash, StartMs: nowMs, SeenMs: nowMs})
	if err != nil {
		a.log.Warn("session not stored: it lasts only as long as this process", "user", user, "err", err)
		return
	}
	a.mu.Lock()
	held := a.sessions.markStored(key, nowMs)
	a.mu.Unlock()
	if !held {
		a.forget(ctx, [][32]byte{key}) // ended while it was being written
	}
	if _, err := a.store.PruneSessions(ctx, nowMs-a.cfg.SessionIdle.Milliseconds(), nowMs-a.cfg.SessionMaxAge.Milliseconds()); err != nil {
		a.log.Warn("cannot prune expired sessions", "err", err)
	}
}

// loadSession looks for a session this server does not hold in the store
// and holds it if it is still valid. It reports whether the store knew the
// session at all, and whether it is now held.
func (a *auth) loadSession(ctx context.Context, key [32]byte) (known, held bool, err error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	r, err := a.store.GetSession(ctx, storeKey(key))
	if errors.Is(err, store.ErrNotFound) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("load session: %w", err)
	}
	s := &session{user: r.User, hash: r.TokenHash, startMs: r.StartMs, seenMs: r.SeenMs, stored: true, storedSeenMs: r.SeenMs}
	nowMs := a.cfg.Clock.Now().UnixMilli()
	a.mu.Lock()
	if _, ok := a.currentLocked(r.User, r.TokenHash); !ok || a.sessions.expired(s, nowMs) {
		a.mu.Unlock()
		return true, false, nil // the browser of a removed user, say
	}
	evicted := a.sessions.add(key, s, nowMs)
	a.mu.Unlock()
	a.forget(ctx, evicted)
	return true, true, nil
}

// touch records a session's use in the store.
func (a *auth) touch(ctx context.Context, key [32]byte, seenMs int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	if err := a.store.TouchSession(ctx, storeKey(key), seenMs); err != nil {
		a.log.Warn("cannot record a session's use", "err", err)
	}
}

// forget deletes sessions from the store.
func (a *auth) forget(ctx context.Context, keys [][32]byte) {
	if a.store == nil || len(keys) == 0 {
		return
	}
	ks := make([]string, len(keys))
	for i, k := range keys {
		ks[i] = storeKey(k)
	}
	if err := a.store.DeleteSessions(ctx, ks...); err != nil {
		a.log.Warn("cannot end sessions in the store; they end here", "sessions", len(ks), "err", err)
	}
}

// syncSessions ends the sessions held here that the store no longer holds:
// ended by another server (a logout there, or one past its bounds).
func (a *auth) syncSessions(ctx context.Context) error {
	if a.store == nil {
		return nil
	}
	a.mu.Lock()
	held := a.sessions.storedKeys()
	a.mu.Unlock()
	if len(held) == 0 {
		return nil
	}
	keys, err := a.store.SessionKeys(ctx)
	if err != nil {
		return fmt.Errorf("sync sessions: %w", err)
	}
	for _, k := range held {
		if _, ok := keys[storeKey(k)]; !ok {
			a.endHeld(k, "logged out")
		}
	}
	return nil
}
