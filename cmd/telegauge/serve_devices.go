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

// countCredentials counts the credentials in the database (none without
// one).
func countCredentials(ctx context.Context, s *store.SQL) (credentialCounts, error) {
	if s == nil {
		return credentialCounts{}, nil
	}
	toks, err := s.DeviceTokens(ctx)
	if err != nil {
		return credentialCounts{}, err
	}
	users, err := s.ListUsers(ctx)
	if err != nil {
		return credentialCounts{}, err
	}
	return credentialCounts{devices: len(toks), users: len(users)}, nil
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
		pem, err := os.ReadFile(c.MQTTTLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("read --mqtt-tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--mqtt-tls-client-ca %s holds no PEM certificate", c.MQTTTLSClientCA)
		}
		// A certificate is one way in; devices without one use tokens.
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

// credentialsPoll is how often a running server looks for credential
// changes made by `telegauge devices` and `users` in another process.
const credentialsPoll = 500 * time.Millisecond

// loadDeviceCredentials reads the device credentials into creds, and
// records the credentials version they are at least as new as.
func (n *node) loadDeviceCredentials(ctx context.Context) error {
	// The version first: what is read after it is at least that new.
	v, err := n.sql.CredentialsVersion(ctx)
	if err != nil {
		return err
	}
	if err := n.setDeviceCredentials(ctx); err != nil {
		return err
	}
	n.applied.set(v)
	return nil
}

// setDeviceCredentials reads the device credentials into creds.
func (n *node) setDeviceCredentials(ctx context.Context) error {
	toks, err := n.sql.DeviceTokens(ctx)
	if err != nil {
		return err
	}
	n.creds.Set(toks, n.cfg.devicesRequired(credentialCounts{devices: len(toks)}))
	return nil
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
		if err := n.setDeviceCredentials(ctx); err != nil {
			if ctx.Err() == nil {
				log.Warn("cannot reload device credentials; will retry", "err", err)
			}
			continue
		}
		acc, err := n.webAccess(ctx) // serve_web_auth.go
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("cannot reload users; will retry", "err", err)
			}
			continue
		}
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
