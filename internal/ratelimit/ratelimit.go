// Package ratelimit bounds attempts per key (a client address, a user
// name) with a token bucket each: the login and device-credential limits.
package ratelimit

import (
	"sync"
	"time"
)

// Keyed is a token bucket per key that bounds failed attempts: an attempt
// spends a token before the slow check runs, a success gives it back
// (Refund). Safe for concurrent use.
type Keyed struct {
	burst  float64       // tokens a full bucket holds
	refill time.Duration // time to earn one token back
	max    int           // keys held; past it, full buckets are dropped

	mu sync.Mutex // guards m
	m  map[string]*bucket
}

type bucket struct {
	tokens float64
	atMs   int64 // when tokens was last brought up to date
	// refused is set at the first refusal since the bucket last had a
	// token, so that an attack logs one line per episode, not per try.
	refused bool
}

// levelLocked brings b's tokens up to now. The caller must hold l.mu.
func (l *Keyed) levelLocked(b *bucket, nowMs int64) {
	if d := nowMs - b.atMs; d > 0 {
		b.tokens = min(l.burst, b.tokens+float64(d)/float64(l.refill.Milliseconds()))
		b.atMs = nowMs
	}
}

// New returns a limiter of burst attempts per key, one more earned every
// refill, holding at most max keys.
func New(burst int, refill time.Duration, max int) *Keyed {
	return &Keyed{burst: float64(burst), refill: refill, max: max, m: make(map[string]*bucket)}
}

// Len returns how many keys the limiter holds.
func (l *Keyed) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// Take spends one attempt of key. When none is left it returns false and
// how long until one is, and first reports whether this is the first
// refusal of the episode.
func (l *Keyed) Take(key string, now time.Time) (ok bool, wait time.Duration, first bool) {
	nowMs := now.UnixMilli()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, found := l.m[key]
	if !found {
		if len(l.m) >= l.max {
			for k, o := range l.m {
				if l.levelLocked(o, nowMs); o.tokens >= l.burst {
					delete(l.m, k) // a full bucket is the same as none
				}
			}
		}
		if len(l.m) >= l.max {
			// Every held key is in the middle of an episode: refuse new
			// ones rather than grow without bound.
			return false, l.refill, false
		}
		b = &bucket{tokens: l.burst, atMs: nowMs}
		l.m[key] = b
	}
	l.levelLocked(b, nowMs)
	if b.tokens < 1 {
		first = !b.refused
		b.refused = true
		return false, time.Duration((1 - b.tokens) * float64(l.refill)), first
	}
	b.tokens--
	b.refused = false
	return true, 0, false
}

// Refund gives back an attempt Take spent (a success).
func (l *Keyed) Refund(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.m[key]; ok {
		l.levelLocked(b, now.UnixMilli())
		b.tokens = min(l.burst, b.tokens+1)
	}
}
