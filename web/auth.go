package web

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telegauge/telegauge/dashboard"
	"github.com/telegauge/telegauge/internal/ratelimit"
	"github.com/telegauge/telegauge/internal/secret"
)

// Operators authenticate with a session cookie from the login page
// (browsers) or an API token in `Authorization: Bearer` (scripts); the token
// is also the login password (DESIGN.md §4, §5). Who the operators are, and
// whether anonymous access is allowed at all, is given by Config.Access and
// SetAccess: cmd decides it (protected mode) and polls the database so that
// `telegauge users add|remove` take effect at once.

// Role is what an operator may do.
type Role string

const (
	// RoleViewer reads: devices, history, exports, live streams, dashboards.
	RoleViewer Role = "viewer"
	// RoleAdmin also changes dashboards, and anything else admin-only.
	RoleAdmin Role = "admin"
)

// ParseRole checks a role's name.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleViewer, RoleAdmin:
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q: want admin or viewer", s)
}

// grants reports whether an operator with role r may do what needs role
// need.
func (r Role) grants(need Role) bool { return r == RoleAdmin || r == need }

// User is an operator.
type User struct {
	Name string
	Role Role
	// TokenHash is secret.Hash of the user's API token, which is also the
	// login password. A new hash (a re-issued token) ends the user's
	// sessions and live streams.
	TokenHash string
}

// Access says who may use the API.
type Access struct {
	// Required demands credentials (a session cookie or a bearer token) on
	// every API request, live stream and /metrics. When false every request
	// is let in anonymously with every right: protected mode (DESIGN.md §5,
	// in cmd) allows that only on loopback with no credentials configured.
	Required bool
	// Users are the operators.
	Users []User
}

// AuthConfig tunes sessions and login limits. Zero values mean the
// documented defaults.
type AuthConfig struct {
	// SessionIdle ends a session unused for this long. Zero means 24 h.
	SessionIdle time.Duration `yaml:"session-idle"`
	// SessionMaxAge ends a session this long after login, used or not; it
	// is also the cookie's Max-Age. Zero means 7 days.
	SessionMaxAge time.Duration `yaml:"session-max-age"`
	// MaxSessions bounds the sessions held; past it the least recently
	// used one ends. Zero means 10,000.
	MaxSessions int `yaml:"max-sessions"`
	// MaxSessionsPerUser bounds one user's sessions; past it the user's
	// least recently used one ends. Zero means 32.
	MaxSessionsPerUser int `yaml:"max-sessions-per-user"`
	// LoginBurst is how many failed logins an IP address, and separately a
	// user name, may make in a row (bad API tokens count against the
	// address); one more is earned every LoginRefill. Zero means 10 and 6 s:
	// ten a minute, sustained.
	LoginBurst  int           `yaml:"login-burst"`
	LoginRefill time.Duration `yaml:"login-refill"`
	// Clock gives the time for session expiry and login limits; nil means
	// the hub's clock.
	Clock clockwork.Clock `yaml:"-"`
	// Store, when set, keeps sessions where a restart, or another server
	// on the same database, finds them (see SessionStore); nil keeps them
	// in memory only.
	Store SessionStore `yaml:"-"`
}

// Ways a request is authenticated, as GET /api/v1/me reports them.
const (
	viaSession   = "session"
	viaToken     = "token"
	viaAnonymous = "anonymous"
)

// principal is who a request acts for.
type principal struct {
	user string // "" when anonymous
	role Role
	via  string
	hash string   // the user's TokenHash when authenticated
	sid  [32]byte // the session's key, via a session
}

// principalKey is the fiber.Ctx.Locals key of the request's principal.
type principalKey struct{}

// principalOf returns the principal authenticate found.
func principalOf(c *fiber.Ctx) principal {
	p, _ := c.Locals(principalKey{}).(principal)
	return p
}

// maxSecretBytes bounds what a login or a bearer token may carry (as
// maxUserNameBytes bounds a name): anything longer is refused without
// hashing it.
const maxSecretBytes = 256

// hashWait bounds how long a request waits for a hashing slot.
const hashWait = 10 * time.Second

// errHashBusy is every hashing slot taken for hashWait.
var errHashBusy = fiber.NewError(fiber.StatusServiceUnavailable, "too many logins at once: try again shortly")

// auth holds the operators, their sessions and live streams, and the login
// limits.
//
// Locks: auth.mu guards the operators, the sessions and the live viewers;
// limits.mu the login limits. Neither is held with the other, nor while
// calling into the hub (Hub.End takes the hub's lock and runs the viewer's
// OnEnd callback), nor while hashing.
type auth struct {
	cfg    AuthConfig
	log    *slog.Logger
	hub    *dashboard.Hub
	met    *authMetrics
	limits *ratelimit.Keyed
	// slots bounds concurrent argon2 hashes: each takes 19 MiB and a core
	// for some 20 ms, so a burst of logins must queue, not pile up.
	slots  chan struct{}
	cookie string       // the session cookie's name
	hashes atomic.Int64 // slow hashes run (tests check that unknown names cost one)

	store   SessionStore // nil: sessions live in memory only
	proxies proxies      // trusted to name the client

	mu       sync.Mutex // guards the fields below
	sessions *sessions
	required bool
	users    map[string]User
	// tokens remembers the API tokens that verified, by sha256 of the
	// token, with the user (and hash) they verified against: at most one
	// per user, so it needs no other bound. A request with a known token
	// then costs a sha256, not an argon2 hash per user.
	tokens map[[32]byte]User
	// live holds every open live viewer (SSE, WebSocket, long poll) with
	// who opened it: when that principal loses access the viewer is ended.
	live map[*dashboard.Viewer]principal
}

func newAuth(cfg AuthConfig, acc Access, tls bool, ps proxies, hub *dashboard.Hub, log *slog.Logger) *auth {
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = 24 * time.Hour
	}
	if cfg.SessionMaxAge <= 0 {
		cfg.SessionMaxAge = 7 * 24 * time.Hour
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 10_000
	}
	if cfg.MaxSessionsPerUser <= 0 {
		cfg.MaxSessionsPerUser = 32
	}
	if cfg.LoginBurst <= 0 {
		cfg.LoginBurst = 10
	}
	if cfg.LoginRefill <= 0 {
		cfg.LoginRefill = 6 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = hub.Clock()
	}
	a := &auth{
		cfg:    cfg,
		log:    log,
		hub:    hub,
		met:    newAuthMetrics(),
		slots:  make(chan struct{}, max(2, min(runtime.GOMAXPROCS(0), 8))),
		cookie: "telegauge_session",
		sessions: &sessions{
			idle: cfg.SessionIdle, maxAge: cfg.SessionMaxAge,
			max: cfg.MaxSessions, maxPerUser: cfg.MaxSessionsPerUser,
			m: make(map[[32]byte]*session), perUser: make(map[string]int),
		},
		limits:  ratelimit.New(cfg.LoginBurst, cfg.LoginRefill, 100_000),
		store:   cfg.Store,
		proxies: ps,
		tokens:  make(map[[32]byte]User),
		live:    make(map[*dashboard.Viewer]principal),
	}
	if tls {
		// The __Host- prefix makes browsers refuse the cookie unless it is
		// Secure, host-only and for path / (RFC 6265bis §4.1.3.2).
		a.cookie = "__Host-telegauge_session"
	}
	a.set(acc)
	return a
}

// set replaces the operators. Whoever lost access (a removed user, a
// re-issued token, or anonymous viewers once credentials are required)
// loses it at once: sessions end and live streams are ended.
func (a *auth) set(acc Access) {
	users := make(map[string]User, len(acc.Users))
	for _, u := range acc.Users {
		if _, err := ParseRole(string(u.Role)); err != nil {
			a.log.Warn("operator ignored", "user", u.Name, "err", err)
			continue
		}
		users[u.Name] = u
	}
	a.mu.Lock()
	var gone []string
	for name, old := range a.users {
		if u, ok := users[name]; !ok || u.TokenHash != old.TokenHash {
			gone = append(gone, name)
		}
	}
	changed := a.required != acc.Required || len(gone) > 0 || len(users) != len(a.users)
	a.required, a.users = acc.Required, users
	for k, u := range a.tokens {
		if cur, ok := users[u.Name]; !ok || cur.TokenHash != u.TokenHash {
			delete(a.tokens, k)
		}
	}
	a.sessions.dropUsers(gone)
	var ended []*dashboard.Viewer
	for v, p := range a.live {
		if !a.validLocked(p) {
			ended = append(ended, v)
			delete(a.live, v)
		}
	}
	a.mu.Unlock()
	for _, v := range ended {
		a.hub.End(v, "credentials revoked")
	}
	if changed {
		a.log.Info("operators updated", "users", len(users), "required", acc.Required, "ended_streams", len(ended))
	}
}

// validLocked reports whether p still has access. The caller must hold
// a.mu.
func (a *auth) validLocked(p principal) bool {
	switch p.via {
	case viaAnonymous:
		return !a.required
	case viaSession:
		if !a.sessions.has(p.sid) {
			return false
		}
	}
	_, ok := a.currentLocked(p.user, p.hash)
	return ok
}

// currentLocked returns the user named name if its token hash is still
// hash: the user was neither removed nor given a new token since. The
// caller must hold a.mu.
func (a *auth) currentLocked(name, hash string) (User, bool) {
	u, ok := a.users[name]
	return u, ok && u.TokenHash == hash
}

// principal returns the principal of a request u authenticated, via a
// token or a session (whose key the caller adds).
func (u User) principal(via string) principal {
	return principal{user: u.Name, role: u.Role, via: via, hash: u.TokenHash}
}

// valid reports whether p still has access.
func (a *auth) valid(p principal) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.validLocked(p)
}

// track records a live viewer opened by p, so that it is ended when p
// loses access. It returns false, recording nothing, when p already has:
// the caller closes the viewer.
func (a *auth) track(p principal, v *dashboard.Viewer) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.validLocked(p) {
		return false
	}
	a.live[v] = p
	return true
}

// untrack forgets a live viewer that ended.
func (a *auth) untrack(v *dashboard.Viewer) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.live, v)
}

// endSession ends one session, here and in the session store, and the
// live streams opened with it.
func (a *auth) endSession(sid [32]byte) {
	a.endHeld(sid, "logged out")
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	a.forget(ctx, [][32]byte{sid})
}

// endHeld ends one session in memory, and the live streams opened with it.
func (a *auth) endHeld(sid [32]byte, reason string) {
	a.mu.Lock()
	a.sessions.delete(sid)
	var ended []*dashboard.Viewer
	for v, p := range a.live {
		if p.via == viaSession && p.sid == sid {
			ended = append(ended, v)
			delete(a.live, v)
		}
	}
	a.mu.Unlock()
	for _, v := range ended {
		a.hub.End(v, reason)
	}
}

// unauthorized is a 401 with the challenge RFC 6750 §3 asks for. Browsers
// show no dialog for the Bearer scheme.
func unauthorized(c *fiber.Ctx, msg string) error {
	c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="telegauge"`)
	return fiber.NewError(fiber.StatusUnauthorized, msg)
}

// authenticate finds who the request acts for: a bearer token, else a
// session cookie, else anonymous when access is not required. It answers
// 401 when none fits, and 429 when the address made too many bad
// attempts.
func (a *auth) authenticate(c *fiber.Ctx) (principal, error) {
	a.mu.Lock()
	required := a.required
	a.mu.Unlock()
	if !required {
		return principal{role: RoleAdmin, via: viaAnonymous}, nil
	}
	if h := c.Get(fiber.HeaderAuthorization); h != "" {
		scheme, token, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			a.met.denied.WithLabelValues("unauthenticated").Inc()
			return principal{}, unauthorized(c, "use Authorization: Bearer <API token>")
		}
		return a.byToken(c, strings.TrimSpace(token))
	}
	if sid := c.Cookies(a.cookie); sid != "" {
		p, ok, err := a.bySession(c, sid)
		if err != nil {
			return principal{}, err
		}
		if ok {
			return p, nil
		}
		a.met.denied.WithLabelValues("unauthenticated").Inc()
		return principal{}, unauthorized(c, "session expired or ended: log in again")
	}
	a.met.denied.WithLabelValues("unauthenticated").Inc()
	return principal{}, unauthorized(c, "authentication required: log in, or send Authorization: Bearer <API token>")
}

// bySession finds the session a cookie names, if it is still valid: in
// memory, else in the session store (a session from before a restart, or
// from another server). A cookie that is in neither counts against the
// address's login limit, as a bad token does, so that guessing cookies
// cannot keep the database busy; an ended one (its user removed, say)
// does not.
func (a *auth) bySession(c *fiber.Ctx, cookie string) (principal, bool, error) {
	key := sha256.Sum256([]byte(cookie))
	a.mu.Lock()
	held := a.sessions.has(key)
	a.mu.Unlock()
	if !held && a.store != nil {
		ip := a.proxies.clientIP(c)
		ipKey := limitKey(ip)
		now := a.cfg.Clock.Now()
		if ok, wait, _ := a.limits.Take(ipKey, now); !ok {
			return principal{}, false, a.limited(c, wait)
		}
		known, loaded, err := a.loadSession(c.UserContext(), key)
		if err != nil {
			a.limits.Refund(ipKey, now)
			a.log.Warn("cannot read a session from the store", "remote", ip, "err", err)
			return principal{}, false, fiber.NewError(fiber.StatusServiceUnavailable, "cannot check the session: try again shortly")
		}
		if known {
			a.limits.Refund(ipKey, now)
		}
		if !loaded {
			return principal{}, false, nil
		}
	}

	a.mu.Lock()
	s, touch, ok := a.sessions.get(key, a.cfg.Clock.Now())
	var u User
	if ok {
		if u, ok = a.currentLocked(s.user, s.hash); !ok {
			a.sessions.delete(key)
			ok, touch = false, false
		}
	}
	a.mu.Unlock()
	if touch {
		a.touch(c.UserContext(), key, s.seenMs)
	}
	if !ok {
		return principal{}, false, nil
	}
	p := u.principal(viaSession)
	p.sid = key
	return p, true, nil
}

// byToken finds the user whose API token this is. An unknown token costs
// one slow hash per user (tokens carry no user name), so bad tokens count
// against the address's login limit.
func (a *auth) byToken(c *fiber.Ctx, token string) (principal, error) {
	key := sha256.Sum256([]byte(token))
	a.mu.Lock()
	if u, ok := a.tokens[key]; ok {
		if cur, still := a.currentLocked(u.Name, u.TokenHash); still {
			a.mu.Unlock()
			return cur.principal(viaToken), nil
		}
	}
	users := make([]User, 0, len(a.users))
	for _, u := range a.users {
		users = append(users, u)
	}
	a.mu.Unlock()

	ip := a.proxies.clientIP(c)
	ipKey := limitKey(ip)
	now := a.cfg.Clock.Now()
	if ok, wait, first := a.limits.Take(ipKey, now); !ok {
		if first {
			a.log.Warn("API token attempts rate limited", "remote", ip)
		}
		return principal{}, a.limited(c, wait)
	}
	if token != "" && len(token) <= maxSecretBytes {
		for _, u := range users {
			ok, err := a.verify(u.TokenHash, token)
			if errors.Is(err, errHashBusy) {
				a.limits.Refund(ipKey, now)
				return principal{}, err
			}
			if err != nil {
				a.log.Error("stored token hash unreadable", "user", u.Name, "err", err)
				continue
			}
			if !ok {
				continue
			}
			a.limits.Refund(ipKey, now)
			a.mu.Lock()
			cur, still := a.currentLocked(u.Name, u.TokenHash)
			if still {
				a.tokens[key] = cur
			}
			a.mu.Unlock()
			if !still {
				break // removed while we hashed
			}
			return cur.principal(viaToken), nil
		}
	}
	a.met.denied.WithLabelValues("unauthenticated").Inc()
	a.log.Warn("API token refused", "remote", ip)
	return principal{}, unauthorized(c, "unknown or revoked API token")
}

// verify is secret.Verify in one of the hashing slots.
func (a *auth) verify(hash, token string) (bool, error) {
	t := time.NewTimer(hashWait) // a throttle on the real clock, not an expiry
	defer t.Stop()
	select {
	case a.slots <- struct{}{}:
	case <-t.C:
		return false, errHashBusy
	}
	defer func() { <-a.slots }()
	a.hashes.Add(1)
	return secret.Verify(hash, token)
}

// limited answers 429 with Retry-After.
func (a *auth) limited(c *fiber.Ctx, wait time.Duration) error {
	a.met.denied.WithLabelValues("rate_limited").Inc()
	secs := max(1, int((wait+time.Second-1)/time.Second))
	c.Set(fiber.HeaderRetryAfter, strconv.Itoa(secs))
	return fiber.NewError(fiber.StatusTooManyRequests, fmt.Sprintf("too many failed attempts: try again in %d s", secs))
}

// limitKey is the login-limit key of a client address: the address, or
// for IPv6 its /64, which one host usually holds whole.
func limitKey(ip string) string {
	a := net.ParseIP(ip)
	if a != nil && a.To4() == nil {
		return "ip:" + a.Mask(net.CIDRMask(64, 128)).String()
	}
	return "ip:" + ip
}

// authMetrics count logins and refusals.
type authMetrics struct {
	logins *prometheus.CounterVec
	denied *prometheus.CounterVec
}

func newAuthMetrics() *authMetrics {
	return &authMetrics{
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telegauge_web_logins_total",
			Help: "Login attempts, by result (ok, failed, rate_limited).",
		}, []string{"result"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telegauge_web_requests_denied_total",
			Help: "API requests refused by authentication, by reason (unauthenticated, forbidden, cross_site, rate_limited).",
		}, []string{"reason"}),
	}
}

func (m *authMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.logins, m.denied}
}
