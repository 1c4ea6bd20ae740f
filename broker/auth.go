package broker

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telegauge/telegauge/internal/ratelimit"
	"github.com/telegauge/telegauge/internal/secret"
)

// Credentials is the set of device credentials the broker checks
// (DESIGN.md §3): MQTT username = device id, password = its token, checked
// against the token's stored hash. Safe for concurrent use; Set replaces
// the set while the broker runs.
type Credentials struct {
	mu       sync.RWMutex      // guards tokens and internal
	tokens   map[string]string // device id -> token hash
	internal map[string]string // device id -> token hash, kept across Set
	required atomic.Bool
	verifier secret.Verifier

	// changed is told the devices whose credential was removed or
	// replaced; the broker disconnects their sessions.
	changed atomic.Pointer[func(ids []string)]
}

// NewCredentials returns an empty set that lets anonymous devices in until
// Set says otherwise.
func NewCredentials() *Credentials {
	return &Credentials{tokens: map[string]string{}, internal: map[string]string{}}
}

// AddInternal gives a device of the server's own (the demo fleet) a
// credential that lives only in this process and survives Set.
func (c *Credentials) AddInternal(id, tokenHash string) {
	c.mu.Lock()
	c.internal[id] = tokenHash
	c.mu.Unlock()
}

// Set replaces the credentials with tokens (device id -> token hash) and
// says whether every device must authenticate. Devices whose credential is
// gone or different are disconnected at once, as are anonymous sessions
// when authentication becomes required.
func (c *Credentials) Set(tokens map[string]string, required bool) {
	c.mu.Lock()
	var gone []string
	for id, h := range c.tokens {
		if tokens[id] != h {
			gone = append(gone, id)
		}
	}
	c.tokens = tokens
	c.mu.Unlock()
	wasRequired := c.required.Swap(required)
	if required && !wasRequired {
		gone = append(gone, anyAnonymous)
	}
	if f := c.changed.Load(); f != nil && len(gone) > 0 {
		(*f)(gone)
	}
}

// anyAnonymous in a changed list stands for every session that did not
// authenticate.
const anyAnonymous = "\x00anonymous"

// Required reports whether devices must authenticate.
func (c *Credentials) Required() bool { return c.required.Load() }

// check verifies a device's token.
func (c *Credentials) check(id, token string) (ok bool, known bool, err error) {
	c.mu.RLock()
	h, known := c.tokens[id]
	if !known {
		h, known = c.internal[id]
	}
	c.mu.RUnlock()
	if !known {
		// Spend the time a check would, so that probing for device ids
		// learns nothing from timing.
		_, _ = secret.Verify(secret.DecoyHash(), token)
		return false, false, nil
	}
	if h == secret.Revoked {
		return false, true, errRevoked
	}
	ok, err = c.verifier.Verify(h, token)
	return ok, true, err
}

// errRevoked is a check of a revoked device.
var errRevoked = errors.New("device revoked")

// authHook authenticates devices and applies the per-device ACL.
type authHook struct {
	mqtt.HookBase
	creds  *Credentials
	prefix string // telemetry prefix with its slash
	log    *slog.Logger
	now    func() time.Time

	failures *prometheus.CounterVec // by reason
	denied   *prometheus.CounterVec // by action
	logGate  logGate
	failed   *ratelimit.Keyed
}

func newAuthHook(cfg Config, log *slog.Logger) *authHook {
	return &authHook{
		creds:  cfg.Credentials,
		prefix: cfg.Prefix + "/",
		log:    log,
		now:    cfg.Now,
		failed: ratelimit.New(failBurst, failRefill, failMaxKeys),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telegauge_mqtt_auth_failures_total",
			Help: "MQTT connections refused, by reason.",
		}, []string{"reason"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telegauge_mqtt_acl_denied_total",
			Help: "Publishes and subscriptions refused because a device may only publish under its own telemetry topics and subscribe to its own commands.",
		}, []string{"action"}),
	}
}

// ID implements mqtt.Hook.
func (h *authHook) ID() string { return "telegauge-auth" }

// Provides implements mqtt.Hook.
func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

// deviceOf returns the device a session authenticated as: the username
// mochi keeps in the client's properties.
func deviceOf(cl *mqtt.Client) string { return string(cl.Properties.Username) }

// certDevice returns the common name of the client certificate the TLS
// listener verified, or "".
func certDevice(cl *mqtt.Client) string {
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return ""
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return ""
	}
	return st.PeerCertificates[0].Subject.CommonName
}

// OnConnectAuthenticate implements mqtt.Hook.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if !h.creds.Required() {
		return true
	}
	user := string(pk.Connect.Username)
	if cn := certDevice(cl); cn != "" {
		// A certificate from the configured CA names the device; a
		// username, when given, must agree with it.
		if !validDeviceName(cn) || (user != "" && user != cn) {
			h.refuse(cl, "certificate", cn)
			return false
		}
		cl.Properties.Username = []byte(cn)
		return true
	}
	if user == "" || !validDeviceName(user) {
		h.refuse(cl, "anonymous", user)
		return false
	}
	addr := remoteHost(cl.Net.Remote)
	now := h.now()
	if ok, _, _ := h.failed.Take(addr, now); !ok {
		// Too many wrong tokens from this address: refused without the
		// slow hash, so guessing costs the server nothing.
		h.refuse(cl, "rate_limited", user)
		return false
	}
	ok, known, err := h.creds.check(user, string(pk.Connect.Password))
	if ok {
		h.failed.Refund(addr, now) // only failures spend the address's tries
	}
	switch {
	case errors.Is(err, errRevoked):
		h.refuse(cl, "revoked", user)
		return false
	case err != nil:
		h.log.Error("device credential unreadable", "device", user, "err", err)
		h.refuse(cl, "bad_hash", user)
		return false
	case !known:
		h.refuse(cl, "unknown_device", user)
		return false
	case !ok:
		h.refuse(cl, "bad_token", user)
		return false
	}
	cl.Properties.Username = []byte(user)
	return true
}

func (h *authHook) refuse(cl *mqtt.Client, reason, device string) {
	h.failures.WithLabelValues(reason).Inc()
	if h.logGate.allow(h.now()) {
		h.log.Warn("MQTT connection refused", "reason", reason, "device", device, "remote", cl.Net.Remote)
	}
}

// OnACLCheck implements mqtt.Hook: a device publishes only under its own
// telemetry topics and subscribes only to its own commands.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if !h.creds.Required() {
		return true
	}
	dev := deviceOf(cl)
	if dev == "" {
		return false
	}
	base := "commands/"
	if write {
		base = h.prefix
	}
	own := base + dev
	ok := topic == own || (strings.HasPrefix(topic, own) && topic[len(own)] == '/')
	if !ok {
		action := "subscribe"
		if write {
			action = "publish"
		}
		h.denied.WithLabelValues(action).Inc()
		if h.logGate.allow(h.now()) {
			h.log.Warn("MQTT "+action+" refused: outside the device's own topics", "device", dev, "topic", topic)
		}
	}
	return ok
}

// validDeviceName applies the DESIGN.md §3 charset and length.
func validDeviceName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// remoteHost returns the host of a "host:port" remote address.
func remoteHost(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// Failed device logins are limited per remote address: failBurst in a
// row, then one per failRefill; at most failMaxKeys addresses are held.
const (
	failBurst   = 20
	failRefill  = 3 * time.Second
	failMaxKeys = 100_000
)

// logGate lets through at most logBurst log lines a second, so that a
// misbehaving fleet cannot flood the log; counters still count everything.
type logGate struct {
	sec atomic.Int64
	n   atomic.Int64
}

const logBurst = 10

func (g *logGate) allow(now time.Time) bool {
	s := now.Unix()
	if g.sec.Swap(s) != s {
		g.n.Store(0)
	}
	return g.n.Add(1) <= logBurst
}

// kick disconnects the sessions of devices whose credential changed (and,
// for anyAnonymous, every session that did not authenticate).
func (b *Broker) kick(ids []string) {
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Inline {
			continue
		}
		dev := deviceOf(cl)
		anonymous := certDevice(cl) == "" && (dev == "" || !b.cfg.Credentials.knows(dev))
		if want[dev] || (want[anyAnonymous] && anonymous) {
			b.log.Info("disconnecting device: its credential was revoked or replaced", "device", dev, "remote", cl.Net.Remote)
			_ = b.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		}
	}
}

// knows reports whether id has a credential.
func (c *Credentials) knows(id string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.tokens[id]
	if !ok {
		_, ok = c.internal[id]
	}
	return ok
}
