// Package secret makes and checks the credentials Telegauge hands out:
// device tokens and user API tokens. Tokens are random and shown once;
// only a slow, salted hash (argon2id) is stored, so a stolen database does
// not give away working credentials.
package secret

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters: OWASP's recommendation for argon2id with 19 MiB of
// memory (m=19456 KiB, t=2, p=1): about 20 ms per hash on one core here.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
	saltLen      = 16
)

// tokenPrefix marks Telegauge tokens, so that a leaked one is recognisable
// by secret scanners and by people.
const tokenPrefix = "tg_"

// NewToken returns a fresh token: tokenPrefix and 32 random bytes in
// URL-safe base64 (46 characters), safe in URLs, headers and MQTT passwords.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make token: %w", err)
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// Issue returns a fresh token and its hash: the token to show once, the
// hash to store.
func Issue() (token, hash string, err error) {
	if token, err = NewToken(); err != nil {
		return "", "", err
	}
	if hash, err = Hash(token); err != nil {
		return "", "", err
	}
	return token, hash, nil
}

// DecoyHash returns a well-formed hash no token matches, made on first use.
// Checking a credential that names nobody against it costs what a real
// check does, so that timing tells no names.
var DecoyHash = sync.OnceValue(func() string {
	h, err := Hash("no such name: a credential naming nobody is checked against this")
	if err != nil {
		panic("secret: hash: " + err.Error()) // only if the system has no randomness
	}
	return h
})

// Hash returns the PHC-style argon2id hash of token with a random salt:
// $argon2id$v=19$m=19456,t=2,p=1$SALT$KEY.
func Hash(token string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("make salt: %w", err)
	}
	key := argon2.IDKey([]byte(token), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// Revoked is the stored hash of a revoked credential: no token matches
// it, and unlike no credential at all it keeps the server demanding
// credentials (the last revocation must not reopen the door to anonymous
// devices).
const Revoked = "revoked"

// ErrMalformedHash is a stored hash Verify cannot read.
var ErrMalformedHash = errors.New("malformed credential hash")

// Verify reports whether token matches hash, in time independent of where
// they differ. An empty hash (no credential) matches nothing.
func Verify(hash, token string) (bool, error) {
	if hash == "" {
		return false, nil
	}
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return false, ErrMalformedHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, ErrMalformedHash
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || m > 1<<20 || t == 0 || t > 16 || p == 0 {
		return false, ErrMalformedHash
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return false, ErrMalformedHash
	}
	key, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(key) == 0 || len(key) > 128 {
		return false, ErrMalformedHash
	}
	got := argon2.IDKey([]byte(token), salt, t, m, p, uint32(len(key)))
	return subtle.ConstantTimeCompare(got, key) == 1, nil
}

// Verifier is Verify with a memory of recent successes, so that a fleet
// reconnecting after an outage (thousands of devices in seconds) costs one
// slow hash per device, not one per attempt. Failures are never cached: a
// wrong token always pays the full price. Safe for concurrent use.
type Verifier struct {
	mu sync.Mutex // guards ok
	// ok holds sha256(hash, token) of pairs that verified.
	ok map[[32]byte]struct{}
}

// verifierLimit bounds the memory; past it the memory starts over.
const verifierLimit = 100_000

// Verify is the package Verify, remembering successes.
func (v *Verifier) Verify(hash, token string) (bool, error) {
	if hash == "" {
		return false, nil
	}
	h := sha256.New()
	h.Write([]byte(hash))
	h.Write([]byte{0})
	h.Write([]byte(token))
	var k [32]byte
	h.Sum(k[:0])
	v.mu.Lock()
	_, hit := v.ok[k]
	v.mu.Unlock()
	if hit {
		return true, nil
	}
	ok, err := Verify(hash, token)
	if ok {
		v.mu.Lock()
		if v.ok == nil || len(v.ok) >= verifierLimit {
			v.ok = make(map[[32]byte]struct{})
		}
		v.ok[k] = struct{}{}
		v.mu.Unlock()
	}
	return ok, err
}
