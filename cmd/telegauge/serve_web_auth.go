package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/telegauge/telegauge/ingest/store"
	"github.com/telegauge/telegauge/web"
)

// WebTLSFlags are serve's flags for HTTPS on the HTTP listener.
type WebTLSFlags struct {
	TLSCert string `name:"tls-cert" help:"PEM certificate (chain) for the HTTP listener, which then speaks HTTPS; re-read when the file changes." placeholder:"FILE"`
	TLSKey  string `name:"tls-key" help:"PEM private key of --tls-cert." placeholder:"FILE"`
}

// webTLS builds the HTTP listener's TLS configuration, or nil without
// --tls-cert.
func (f WebTLSFlags) webTLS(log *slog.Logger) (*tls.Config, error) {
	if f.TLSCert == "" && f.TLSKey == "" {
		return nil, nil
	}
	if f.TLSCert == "" || f.TLSKey == "" {
		return nil, errors.New("--tls-cert and --tls-key go together (PEM files)")
	}
	cf := &certFiles{cert: f.TLSCert, key: f.TLSKey, every: certCheckInterval, log: log}
	if err := cf.load(); err != nil {
		return nil, err
	}
	return &tls.Config{GetCertificate: cf.get, MinVersion: tls.VersionTLS12}, nil
}

// certCheckInterval is how often the certificate files are checked for a
// renewal (certbot and the like replace them in place).
const certCheckInterval = time.Minute

// certFiles serves a certificate from files, loading it again when either
// file's modification time changes.
type certFiles struct {
	cert, key string
	every     time.Duration
	log       *slog.Logger

	mu      sync.Mutex // guards the fields below
	current *tls.Certificate
	mtimes  [2]time.Time
	checked time.Time
}

func (cf *certFiles) stat() ([2]time.Time, error) {
	var m [2]time.Time
	for i, p := range []string{cf.cert, cf.key} {
		st, err := os.Stat(p)
		if err != nil {
			return m, err
		}
		m[i] = st.ModTime()
	}
	return m, nil
}

// load reads the pair. The caller must hold mu, or be the only user.
func (cf *certFiles) load() error {
	m, err := cf.stat()
	if err == nil {
		var c tls.Certificate
		if c, err = tls.LoadX509KeyPair(cf.cert, cf.key); err == nil {
			cf.current, cf.mtimes = &c, m
			return nil
		}
	}
	return fmt.Errorf("load HTTPS certificate: %w", err)
}

// get is tls.Config.GetCertificate.
func (cf *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cf.mu.Lock()
	defer cf.mu.Unlock()
	if now := time.Now(); now.Sub(cf.checked) >= cf.every {
		cf.checked = now
		if m, err := cf.stat(); err == nil && m != cf.mtimes {
			if err := cf.load(); err != nil {
				// A half-written renewal: keep serving the old one.
				cf.log.Warn("HTTPS certificate changed but cannot be loaded; keeping the previous one", "err", err)
			} else {
				cf.log.Info("HTTPS certificate reloaded", "file", cf.cert)
			}
		}
	}
	return cf.current, nil
}

// webAccess says who may use the dashboard and API (DESIGN.md §5, protected
// mode), given the users on record: with --auth auto, anonymous visitors
// (with every right, as before there were accounts) only while the HTTP
// listener is on loopback and no user exists; otherwise the users. As for
// devices (devicesRequired), each side goes by its own credentials: a
// device token does not lock a loopback dashboard that nobody could log in
// to, and the first `telegauge users add` turns logins on at once.
// checkAuth has already refused a non-loopback HTTP listener without users.
func (c *ServeCmd) webAccess(users []store.UserRecord) web.Access {
	acc := web.Access{Required: c.Auth == "required" || len(users) > 0 || !isLoopback(c.HTTPAddr)}
	for _, u := range users {
		acc.Users = append(acc.Users, web.User{Name: u.Name, Role: web.Role(u.Role), TokenHash: u.TokenHash})
	}
	return acc
}

// webSecurity is what web.New needs of the above: the access at start,
// given the users on record, and the TLS configuration.
func (c *ServeCmd) webSecurity(users []store.UserRecord, log *slog.Logger) (web.Access, *tls.Config, error) {
	acc := c.webAccess(users)
	if acc.Required && len(acc.Users) == 0 {
		log.Warn("the dashboard and API need a login (--auth required) but there are no users: " +
			"add one with `telegauge users add NAME --role admin`")
	}
	cfg, err := c.WebTLSFlags.webTLS(log)
	return acc, cfg, err
}

// dashboardURL is where the dashboard is served.
func (n *node) dashboardURL() string {
	if n.cfg.TLSCert != "" {
		return "https://" + n.web.Addr()
	}
	return "http://" + n.web.Addr()
}
