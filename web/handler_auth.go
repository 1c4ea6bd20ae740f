package web

import (
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/telegauge/telegauge/internal/secret"
)

// routesAuth adds login and logout, then authentication for every route
// of api registered after it, then GET /me.
func (s *Server) routesAuth(api fiber.Router) {
	api.Post("/login", s.handleLogin)
	api.Post("/logout", s.handleLogout)
	api.Use(s.requireAuth)
	api.Get("/me", s.handleMe)
}

// requireAuth authenticates the request (auth.authenticate), refuses a
// cross-site state-changing request (checkCrossSite), and hands the
// principal to the handlers.
func (s *Server) requireAuth(c *fiber.Ctx) error {
	p, err := s.auth.authenticate(c)
	if err != nil {
		return err
	}
	if p.via != viaToken {
		// A bearer token is never sent by a browser on its own, so only
		// cookie and anonymous requests can be forged from another site.
		if err := s.checkCrossSite(c, p.via == viaSession); err != nil {
			return err
		}
	}
	c.Locals(principalKey{}, p)
	return c.Next()
}

// needRole lets only operators with role through.
func (s *Server) needRole(role Role) fiber.Handler {
	return func(c *fiber.Ctx) error {
		p := principalOf(c)
		if !p.role.grants(role) {
			s.auth.met.denied.WithLabelValues("forbidden").Inc()
			return fiber.NewError(fiber.StatusForbidden, "this needs the "+string(role)+" role; "+p.user+" is a "+string(p.role))
		}
		return c.Next()
	}
}

// checkCrossSite is the CSRF defence for requests that change something
// (POST, PUT, PATCH, DELETE): their Origin (or, lacking one, Referer) must
// be this server or one of Config.Origins. Browsers send Origin with every
// such request, so a request authenticated by cookie must carry one;
// anonymous ones without either come from scripts, not pages, and pass.
// The session cookie is also SameSite=Strict: this check is the second
// line, and the one that holds for same-site (sibling subdomain) pages.
func (s *Server) checkCrossSite(c *fiber.Ctx, needOrigin bool) error {
	switch c.Method() {
	case fiber.MethodGet, fiber.MethodHead, fiber.MethodOptions:
		return nil
	}
	origin := c.Get(fiber.HeaderOrigin)
	if origin == "" {
		if ref := c.Get(fiber.HeaderReferer); ref != "" {
			if u, err := url.Parse(ref); err == nil && u.Host != "" {
				origin = u.Scheme + "://" + u.Host
			} else {
				origin = "null"
			}
		}
	}
	if origin == "" && !needOrigin {
		return nil
	}
	// Hostname believes X-Forwarded-Host, as the WebSocket check does, so
	// that a reverse proxy may rewrite Host. A page cannot forge that
	// header: a cross-site request carrying it needs a CORS preflight,
	// which this server never grants.
	if origin != "" && origin != "null" && s.originMatches(origin, c.Hostname()) {
		return nil
	}
	s.auth.met.denied.WithLabelValues("cross_site").Inc()
	return fiber.NewError(fiber.StatusForbidden, "cross-site request refused: the Origin is not this server (nor in its allowed origins)")
}

// originMatches reports whether origin is in the Origins list, or is this
// server (its host equals host).
func (s *Server) originMatches(origin, host string) bool {
	for _, o := range s.cfg.Origins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, host)
}

// loginBody is what POST /api/v1/login takes, as JSON or a form.
type loginBody struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

// handleLogin serves POST /api/v1/login: name and password (the user's
// API token) for a session cookie.
func (s *Server) handleLogin(c *fiber.Ctx) error {
	a := s.auth
	c.Set(fiber.HeaderCacheControl, "no-store")
	// Login CSRF: a page elsewhere must not log a browser in as someone.
	if err := s.checkCrossSite(c, false); err != nil {
		return err
	}
	var in loginBody
	if strings.HasPrefix(c.Get(fiber.HeaderContentType), fiber.MIMEApplicationForm) {
		in.Name, in.Password = c.FormValue("name"), c.FormValue("password")
	} else if err := json.Unmarshal(c.Body(), &in); err != nil {
		return fiber.NewError(fiber.StatusBadRequest, `body must be {"name": ..., "password": ...}`)
	}
	if in.Name == "" || in.Password == "" {
		return fiber.NewError(fiber.StatusBadRequest, "name and password are required")
	}
	ip := s.proxies.clientIP(c)
	ipKey, userKey := limitKey(ip), "user:"+in.Name
	if len(in.Name) > maxUserNameBytes {
		userKey = "user:" + in.Name[:maxUserNameBytes] // no user has such a name; bound the key
	}
	now := a.cfg.Clock.Now()
	ok, wait, first := a.limits.Take(ipKey, now)
	if ok {
		if ok, wait, first = a.limits.Take(userKey, now); !ok {
			a.limits.Refund(ipKey, now)
		}
	}
	if !ok {
		a.met.logins.WithLabelValues("rate_limited").Inc()
		if first {
			a.log.Warn("login rate limited", "user", in.Name, "remote", ip, "retry_after", wait.Round(time.Second))
		}
		return a.limited(c, wait)
	}

	a.mu.Lock()
	u, known := a.users[in.Name]
	a.mu.Unlock()
	hash := u.TokenHash
	if !known || len(in.Password) > maxSecretBytes {
		// Hash all the same, so that a login naming nobody takes as long
		// as a wrong password: the answer's timing tells no names.
		hash, in.Password = secret.DecoyHash(), "-"
	}
	verified, err := a.verify(hash, in.Password)
	if errors.Is(err, errHashBusy) {
		a.limits.Refund(ipKey, now)
		a.limits.Refund(userKey, now)
		return err
	}
	if err != nil {
		a.log.Error("stored token hash unreadable", "user", in.Name, "err", err)
	}
	if !known || !verified {
		a.met.logins.WithLabelValues("failed").Inc()
		a.log.Warn("login failed", "user", in.Name, "remote", ip)
		return fiber.NewError(fiber.StatusUnauthorized, "wrong name or password")
	}
	a.limits.Refund(ipKey, now)
	a.limits.Refund(userKey, now)

	a.mu.Lock()
	cur, still := a.currentLocked(u.Name, u.TokenHash)
	var (
		id      string
		key     [32]byte
		evicted [][32]byte
	)
	if still {
		id, key, evicted, err = a.sessions.create(u.Name, u.TokenHash, now)
	}
	a.mu.Unlock()
	if err != nil {
		return err
	}
	if id == "" {
		return fiber.NewError(fiber.StatusUnauthorized, "wrong name or password") // removed while we hashed
	}
	a.storeNew(c.UserContext(), key, u.Name, u.TokenHash, now, evicted)
	a.met.logins.WithLabelValues("ok").Inc()
	a.log.Info("login", "user", u.Name, "remote", ip)
	c.Cookie(s.sessionCookie(c, id, a.cfg.SessionMaxAge))
	return c.JSON(meBody{User: cur.Name, Role: cur.Role, Auth: viaSession})
}

// handleLogout serves POST /api/v1/logout: the session ends, with the live
// streams opened with it, and the cookie is cleared. It answers 204 with or
// without a session.
func (s *Server) handleLogout(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	if err := s.checkCrossSite(c, false); err != nil {
		return err
	}
	if sid := c.Cookies(s.auth.cookie); sid != "" {
		if p, ok, _ := s.auth.bySession(c, sid); ok {
			s.auth.log.Info("logout", "user", p.user, "remote", s.proxies.clientIP(c))
			s.auth.endSession(p.sid)
		}
	}
	c.Cookie(s.sessionCookie(c, "", -1))
	return c.SendStatus(fiber.StatusNoContent)
}

// sessionCookie is the session cookie: HttpOnly (no script reads it),
// SameSite=Strict (no other site's page sends it), Secure when the request
// came over HTTPS. A negative maxAge clears it.
func (s *Server) sessionCookie(c *fiber.Ctx, value string, maxAge time.Duration) *fiber.Cookie {
	ck := &fiber.Cookie{
		Name:     s.auth.cookie,
		Value:    value,
		Path:     "/",
		HTTPOnly: true,
		SameSite: fiber.CookieSameSiteStrictMode,
		// Fiber's Protocol believes X-Forwarded-Proto: a TLS proxy in front
		// gets Secure cookies too; a client lying about it only stops its
		// own browser from sending the cookie back over plain HTTP.
		Secure: s.cfg.TLS != nil || c.Protocol() == "https",
	}
	if maxAge < 0 {
		ck.Expires = time.Unix(1, 0)
	} else {
		ck.MaxAge = int(maxAge / time.Second)
	}
	return ck
}

// meBody is GET /api/v1/me's answer (and login's).
type meBody struct {
	User string `json:"user"` // "" when anonymous
	Role Role   `json:"role"`
	Auth string `json:"auth"` // session, token or anonymous
}

// handleMe serves GET /api/v1/me: who the request acts for.
func (s *Server) handleMe(c *fiber.Ctx) error {
	p := principalOf(c)
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(meBody{User: p.user, Role: p.role, Auth: p.via})
}
