package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
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

// loadDeviceCredentials reads the device credentials into creds.
func (n *node) loadDeviceCredentials(ctx context.Context) error {
	toks, err := n.sql.DeviceTokens(ctx)
	if err != nil {
		return err
	}
	counts, err := countCredentials(ctx, n.sql)
	if err != nil {
		return err
	}
	n.creds.Set(toks, n.cfg.devicesRequired(counts))
	return nil
}

// watchCredentials reloads the device credentials whenever the database
// says they changed, until ctx ends; a revoked device is disconnected by
// the broker as soon as they are loaded.
func (n *node) watchCredentials(ctx context.Context, log *slog.Logger) error {
	last, err := n.sql.CredentialsVersion(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it started
		}
		return fmt.Errorf("watch credentials: %w", err)
	}
	t := time.NewTicker(credentialsPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
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
		if err := n.loadDeviceCredentials(ctx); err != nil {
			log.Warn("cannot reload device credentials", "err", err)
			continue
		}
		last = v
		log.Info("device credentials reloaded", "required", n.creds.Required())
	}
}
