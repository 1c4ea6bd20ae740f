package web

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"time"
)

// session is a browser's login.
type session struct {
	user    string
	hash    string // the user's token hash at login: a new token ends the session
	startMs int64  // login time, Unix ms
	seenMs  int64  // last use, Unix ms
}

// sessions holds the logins, in memory: bounded in number, in idle time
// and in age. The key is sha256 of the cookie's value, so the map holds no
// usable credential.
//
// It has no lock of its own: auth.mu guards it.
type sessions struct {
	idle, maxAge    time.Duration
	max, maxPerUser int
	m               map[[32]byte]*session
	perUser         map[string]int
}

// create starts a session for user and returns its cookie value: 32
// random bytes, URL-safe base64.
func (ss *sessions) create(user, hash string, now time.Time) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make session id: %w", err)
	}
	id := base64.RawURLEncoding.EncodeToString(b)
	nowMs := now.UnixMilli()
	if ss.perUser[user] >= ss.maxPerUser {
		ss.evictLRU(func(s *session) bool { return s.user == user })
	}
	if len(ss.m) >= ss.max {
		for k, s := range ss.m {
			if ss.expired(s, nowMs) {
				ss.delete(k)
			}
		}
		if len(ss.m) >= ss.max {
			ss.evictLRU(func(*session) bool { return true })
		}
	}
	ss.m[sha256.Sum256([]byte(id))] = &session{user: user, hash: hash, startMs: nowMs, seenMs: nowMs}
	ss.perUser[user]++
	return id, nil
}

// evictLRU ends the least recently used session among those match
// accepts. It scans every session: it runs only when a bound is reached.
func (ss *sessions) evictLRU(match func(*session) bool) {
	var (
		oldest [32]byte
		seen   int64
		found  bool
	)
	for k, s := range ss.m {
		if match(s) && (!found || s.seenMs < seen) {
			oldest, seen, found = k, s.seenMs, true
		}
	}
	if found {
		ss.delete(oldest)
	}
}

func (ss *sessions) expired(s *session, nowMs int64) bool {
	return nowMs-s.seenMs >= ss.idle.Milliseconds() || nowMs-s.startMs >= ss.maxAge.Milliseconds()
}

// get returns the session key names, marking it used, unless it expired
// (then it is ended).
func (ss *sessions) get(key [32]byte, now time.Time) (session, bool) {
	s, ok := ss.m[key]
	if !ok {
		return session{}, false
	}
	nowMs := now.UnixMilli()
	if ss.expired(s, nowMs) {
		ss.delete(key)
		return session{}, false
	}
	s.seenMs = nowMs
	return *s, true
}

// has reports whether the session exists (expired or not: get decides).
func (ss *sessions) has(key [32]byte) bool {
	_, ok := ss.m[key]
	return ok
}

// delete ends a session; an unknown key is a no-op.
func (ss *sessions) delete(key [32]byte) {
	s, ok := ss.m[key]
	if !ok {
		return
	}
	delete(ss.m, key)
	if ss.perUser[s.user]--; ss.perUser[s.user] <= 0 {
		delete(ss.perUser, s.user)
	}
}

// dropUsers ends every session of the named users.
func (ss *sessions) dropUsers(names []string) {
	if len(names) == 0 {
		return
	}
	gone := make(map[string]bool, len(names))
	for _, n := range names {
		gone[n] = true
	}
	for k, s := range ss.m {
		if gone[s.user] {
			ss.delete(k)
		}
	}
}
