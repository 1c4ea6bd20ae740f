package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/telegauge/telegauge/ingest/store"
)

// credentialCounts is what protected mode needs to know of the records.
type credentialCounts struct {
	devices, users int
}

// credentialRecords are the credentials on record: the device token
// hashes (broker.Credentials) and the operators (webAccess).
type credentialRecords struct {
	tokens map[string]string
	users  []store.UserRecord
}

// counts counts the credentials.
func (r credentialRecords) counts() credentialCounts {
	return credentialCounts{devices: len(r.tokens), users: len(r.users)}
}

// readCredentials reads the credentials in s (none without a database).
// It is the one read of them, at start and per reload.
func readCredentials(ctx context.Context, s *store.SQL) (credentialRecords, error) {
	if s == nil {
		return credentialRecords{}, nil
	}
	toks, err := s.DeviceTokens(ctx)
	if err != nil {
		return credentialRecords{}, fmt.Errorf("read device credentials: %w", err)
	}
	users, err := s.ListUsers(ctx)
	if err != nil {
		return credentialRecords{}, fmt.Errorf("list users: %w", err)
	}
	return credentialRecords{tokens: toks, users: users}, nil
}

// devicesRequired reports whether devices must authenticate: always with
// --auth required or a client CA, and once any device credential is on
// record (DESIGN.md §5). Users alone do not count: adding an operator to a
// loopback server must not cut off a fleet that has no way to log in.
func (c *ServeCmd) devicesRequired(n credentialCounts) bool {
	return c.Auth == "required" || c.MQTTTLSClientCA != "" || n.devices > 0
}

// mqttTLS builds the MQTT TLS listener's configuration from the flags, or
// returns nil when there is no TLS listener.
func (c *ServeCmd) mqttTLS() (*tls.Config, error) {
	if c.MQTTTLSAddr == "" {
		return nil, nil
	}
	if c.MQTTTLSCert == "" || c.MQTTTLSKey == "" {
		return nil, errors.New("--mqtt-tls-addr needs --mqtt-tls-cert and --mqtt-tls-key (PEM files)")
	}
	cert, err := tls.LoadX509KeyPair(c.MQTTTLSCert, c.MQTTTLSKey)
	if err != nil {
		return nil, fmt.Errorf("load MQTT TLS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.MQTTTLSClientCA != "" {
		pool, err := readCertPool("--mqtt-tls-client-ca", c.MQTTTLSClientCA)
		if err != nil {
			return nil, err
		}
		// A certificate is one way in; devices without one use tokens.
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

// readCertPool reads the PEM CA certificates in file, named what in errors
// (a flag).
func readCertPool(what, file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s %s holds no PEM certificate", what, file)
	}
	return pool, nil
}

// credentialsPoll is how often a running server looks for credential
// changes made by `telegauge devices` and `users` in another process.
const credentialsPoll = 500 * time.Millisecond

// startCredentials reads the credentials the server starts with, and the
// credentials version they are at least as new as (0 without a database).
func (n *node) startCredentials(ctx context.Context) (int64, credentialRecords, error) {
	if n.sql == nil {
		return 0, credentialRecords{}, nil
	}
	// The version first: what is read after it is at least that new.
	v, err := n.sql.CredentialsVersion(ctx)
	if err != nil {
		return 0, credentialRecords{}, err
	}
	recs, err := readCredentials(ctx, n.sql)
	return v, recs, err
}

// watchCredentials reloads the device credentials and the operators
// whenever the database says they changed (`telegauge devices` and
// `users`, from this process or another), every credentialsPoll or at once
// when asked (the admin API, applyCredentials), until ctx ends. A revoked
// device is disconnected by the broker, and a removed user's sessions and
// streams are ended by the web tier, as soon as they are loaded. It is the
// only goroutine that applies credentials, so they are applied in order.
func (n *node) watchCredentials(ctx context.Context, log *slog.Logger) error {
	last := n.applied.current() // loaded by build
	t := time.NewTicker(credentialsPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-n.applied.wake():
		}
		v, err := n.sql.CredentialsVersion(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Warn("cannot read credentials version", "err", err)
			continue
		}
		if v == last {
			continue
		}
		recs, err := readCredentials(ctx, n.sql)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("cannot reload credentials; will retry", "err", err)
			}
			continue
		}
		n.creds.Set(recs.tokens, n.cfg.devicesRequired(recs.counts()))
		acc := n.cfg.webAccess(recs.users) // serve_web_auth.go
		n.web.SetAccess(acc)
		last = v
		n.applied.set(v)
		log.Info("credentials reloaded", "devices_required", n.creds.Required(), "logins_required", acc.Required, "users", len(acc.Users))
	}
}

// credsApplied is the credentials version the running server has applied,
// so that a change made through the admin API can have the watcher apply
// it at once, and wait until it has.
type credsApplied struct {
	mu      sync.Mutex // guards the fields below
	version int64
	changed chan struct{} // closed (and replaced) when version changes
	now     chan struct{} // 1-buffered: the watcher's cue to look at once
}

// initLocked makes the channels. The caller must hold a.mu.
func (a *credsApplied) initLocked() {
	if a.changed == nil {
		a.changed, a.now = make(chan struct{}), make(chan struct{}, 1)
	}
}

// set records that version v is applied and tells the waiters.
func (a *credsApplied) set(v int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.initLocked()
	if v == a.version {
		return
	}
	a.version = v
	close(a.changed)
	a.changed = make(chan struct{})
}

// current returns the version applied.
func (a *credsApplied) current() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.version
}

// wake is the watcher's cue channel.
func (a *credsApplied) wake() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.initLocked()
	return a.now
}

// wait asks the watcher to look at once, and returns when version v (or
// a later one) is applied, or with ctx's error.
func (a *credsApplied) wait(ctx context.Context, v int64) error {
	a.mu.Lock()
	a.initLocked()
	now := a.now
	a.mu.Unlock()
	select {
	case now <- struct{}{}:
	default: // a cue is already pending
	}
	for {
		a.mu.Lock()
		applied, changed := a.version, a.changed
		a.mu.Unlock()
		if applied >= v {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for credentials version %d (applied: %d): %w", v, applied, ctx.Err())
		}
	}
}
