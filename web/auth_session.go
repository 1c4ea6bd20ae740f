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
	// stored is whether the session store holds the session (so that its
	// absence there means it was ended elsewhere), and storedSeenMs the
	// last use recorded there.
	stored       bool
	storedSeenMs int64
}

// sessions holds the logins in memory: bounded in number, in idle time and
// in age. The key is sha256 of the cookie's value, so the map holds no
// usable credential. With a session store (auth.store) it is a cache of
// the store's sessions plus those not yet written.
//
// It has no lock of its own: auth.mu guards it.
type sessions struct {
	idle, maxAge    time.Duration
	max, maxPerUser int
	m               map[[32]byte]*session
	perUser         map[string]int
}

// create starts a session for user and returns its cookie value (32
// random bytes, URL-safe base64), its key, and the keys of the sessions
// ended to make room.
func (ss *sessions) create(user, hash string, now time.Time) (id string, key [32]byte, evicted [][32]byte, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", key, nil, fmt.Errorf("make session id: %w", err)
	}
	id = base64.RawURLEncoding.EncodeToString(b)
	nowMs := now.UnixMilli()
	key = sha256.Sum256([]byte(id))
	evicted = ss.add(key, &session{user: user, hash: hash, startMs: nowMs, seenMs: nowMs}, nowMs)
	return id, key, evicted, nil
}

// add holds s under key, ending other sessions if a bound is reached, and
// returns the keys of those it ended.
func (ss *sessions) add(key [32]byte, s *session, nowMs int64) (evicted [][32]byte) {
	if old, ok := ss.m[key]; ok {
		*old = *s
		return nil
	}
	if ss.perUser[s.user] >= ss.maxPerUser {
		evicted = ss.evictLRU(evicted, func(o *session) bool { return o.user == s.user })
	}
	if len(ss.m) >= ss.max {
		for k, o := range ss.m {
			if ss.expired(o, nowMs) {
				ss.delete(k)
			}
		}
		if len(ss.m) >= ss.max {
			evicted = ss.evictLRU(evicted, func(*session) bool { return true })
		}
	}
	ss.m[key] = s
	ss.perUser[s.user]++
	return evicted
}

// evictLRU ends the least recently used session among those match
// accepts, appending its key to evicted. It scans every session: it runs
// only when a bound is reached.
func (ss *sessions) evictLRU(evicted [][32]byte, match func(*session) bool) [][32]byte {
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
		evicted = append(evicted, oldest)
	}
	return evicted
}

func (ss *sessions) expired(s *session, nowMs int64) bool {
	return nowMs-s.seenMs >= ss.idle.Milliseconds() || nowMs-s.startMs >= ss.maxAge.Milliseconds()
}

// get returns the session key names, marking it used, unless it expired
// (then it is ended). touch is whether the use should be recorded in the
// session store: a stored session's idle time is recorded at most every
// touchEvery, so a restart does not end a session in use, and does not
// write for every request.
func (ss *sessions) get(key [32]byte, now time.Time) (s session, touch, ok bool) {
	p, ok := ss.m[key]
	if !ok {
		return session{}, false, false
	}
	nowMs := now.UnixMilli()
	if ss.expired(p, nowMs) {
		ss.delete(key)
		return session{}, false, false
	}
	p.seenMs = nowMs
	if p.stored && nowMs-p.storedSeenMs >= ss.touchEvery().Milliseconds() {
		p.storedSeenMs = nowMs
		touch = true
	}
	return *p, touch, true
}

// touchEvery is how often a session's use is recorded in the store: a
// session is then never found idle for longer than idle + touchEvery.
func (ss *sessions) touchEvery() time.Duration { return ss.idle / 24 }

// markStored records that the store holds the session key, and reports
// whether it is still held here.
func (ss *sessions) markStored(key [32]byte, seenMs int64) bool {
	p, ok := ss.m[key]
	if ok {
		p.stored, p.storedSeenMs = true, seenMs
	}
	return ok
}

// storedKeys returns the keys of the sessions the store holds.
func (ss *sessions) storedKeys() [][32]byte {
	var out [][32]byte
	for k, s := range ss.m {
		if s.stored {
			out = append(out, k)
		}
	}
	return out
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
