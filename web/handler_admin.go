package web

import (
	"context"
	"encoding/json"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/telegauge/telegauge/dashboard"
	"github.com/telegauge/telegauge/ingest"
)

// The admin API: viewers read; admins also manage device credentials and
// operators (and dashboards, handler_boards.go). It is what `telegauge
// devices` and `telegauge users` do, from the dashboard, and a change takes
// effect in the running server before the answer is sent.

// Device credential states, as GET /api/v1/admin/devices reports them.
const (
	// CredentialToken is a device holding a live token.
	CredentialToken = "token"
	// CredentialRevoked is a device whose token was revoked: it is refused
	// until it is given a new one.
	CredentialRevoked = "revoked"
	// CredentialNone is a device seen (anonymously) that never had a token.
	CredentialNone = "none"
)

// DeviceCredential is a device as the admin API lists it.
type DeviceCredential struct {
	ID string
	// Credential is CredentialToken, CredentialRevoked or CredentialNone.
	Credential string
	// FirstSeenMs and LastSeenMs are Unix ms; 0 means never.
	FirstSeenMs, LastSeenMs int64
}

// IssuedDevice is a device's new token and how the device uses it.
type IssuedDevice struct {
	// Token is the MQTT password; the username is the device id. It is
	// shown once: only its hash is kept.
	Token string
	// Replaced reports that the device held a live token, which no longer
	// works.
	Replaced bool
	// Topic is where the device publishes ("telemetry/boiler-1").
	Topic string
	// Brokers are the MQTT listeners as URLs: mqtt://host:port, and
	// mqtts://host:port and ws://host:port/mqtt when those listeners are
	// on. An unspecified host (0.0.0.0, ::) is answered as the host the
	// request came to.
	Brokers []string
}

// Operator is a user as the admin API lists it: never the token hash.
type Operator struct {
	Name      string
	Role      Role
	CreatedMs int64 // Unix ms
}

// DeviceAdmin manages device credentials.
type DeviceAdmin interface {
	// ListDevices returns every device with a credential or seen, sorted
	// by id.
	ListDevices(ctx context.Context) ([]DeviceCredential, error)
	// IssueDevice gives device id (already validated) a new token,
	// creating the device if it is new and replacing any earlier token or
	// revocation. It returns once the running server honours the change:
	// sessions using a replaced token are disconnected.
	IssueDevice(ctx context.Context, id string) (IssuedDevice, error)
	// RevokeDevice revokes device id's token; once it returns, the
	// device's sessions are disconnected and it is refused. A device
	// holding no live token is a dashboard.Error with CodeNotFound.
	RevokeDevice(ctx context.Context, id string) error
}

// UserAdmin manages operators.
type UserAdmin interface {
	// ListUsers returns every operator, sorted by name.
	ListUsers(ctx context.Context) ([]Operator, error)
	// IssueUser creates user name (already validated) with role and a
	// new API token, or gives an existing user role and a new token, and
	// reports which. It returns once the running server honours the
	// change: a replaced token's sessions and live streams have ended.
	IssueUser(ctx context.Context, name string, role Role) (token string, replaced bool, err error)
	// RemoveUser removes user name; once it returns, the user's sessions
	// and live streams have ended. A missing user is a dashboard.Error
	// with CodeNotFound.
	RemoveUser(ctx context.Context, name string) error
}

// AdminStore is what the admin API manages: device credentials and
// operators, kept in the database.
type AdminStore interface {
	DeviceAdmin
	UserAdmin
}

// maxAdminBodyBytes caps an admin request's body: a name and a role.
const maxAdminBodyBytes = 4 << 10

// maxUserNameBytes is the longest user name.
const maxUserNameBytes = 64

// ValidUserName reports whether s is a valid user name: 1 to 64 of
// A-Z a-z 0-9 . _ - @ (the device charset of DESIGN.md §3, plus '@' so
// that an e-mail address can be a name).
func ValidUserName(s string) bool {
	if len(s) == 0 || len(s) > maxUserNameBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '@') {
			return false
		}
	}
	return true
}

// routesAdmin adds the admin API under api: admins only, never cached
// (answers carry tokens).
func (s *Server) routesAdmin(api fiber.Router) {
	adm := api.Group("/admin", s.needRole(RoleAdmin), s.adminAvailable)
	adm.Get("/devices", s.handleAdminDevices)
	adm.Post("/devices", s.handleAdminDeviceIssue)
	adm.Delete("/devices/:id", s.handleAdminDeviceRevoke)
	adm.Get("/users", s.handleAdminUsers)
	adm.Post("/users", s.handleAdminUserIssue)
	adm.Delete("/users/:name", s.handleAdminUserRemove)
}

// adminAvailable answers 501 when there is no database to keep
// credentials in, and marks every admin answer uncacheable.
func (s *Server) adminAvailable(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	if s.cfg.Admin == nil {
		return fiber.NewError(fiber.StatusNotImplemented,
			"credentials need a database: this server keeps none (--db memory), so devices and users cannot be managed here")
	}
	return c.Next()
}

// actor names who made a change, for the log.
func actor(c *fiber.Ctx) string {
	if p := principalOf(c); p.user != "" {
		return p.user
	}
	return "anonymous"
}

// adminBody decodes a small JSON object from the request body into v.
func adminBody(c *fiber.Ctx, v any, shape string) error {
	body := c.Body()
	if len(body) > maxAdminBodyBytes {
		return dashboard.Errorf(dashboard.CodeTooLarge, "body too large (limit %d bytes)", maxAdminBodyBytes)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return dashboard.Errorf(dashboard.CodeInvalid, "body must be JSON: %s", shape)
	}
	return nil
}

// pathName returns the path parameter key, unescaped ('@' arrives as %40).
func pathName(c *fiber.Ctx, key string) string {
	raw := c.Params(key)
	if v, err := url.PathUnescape(raw); err == nil {
		return v
	}
	return raw
}

// badDeviceID is the answer to a device id outside the charset.
func badDeviceID(id string) error {
	return dashboard.Errorf(dashboard.CodeInvalid, "device id %.70q: want 1-64 of A-Z a-z 0-9 . _ -", id)
}

// badUserName is the answer to a user name outside the charset.
func badUserName(name string) error {
	return dashboard.Errorf(dashboard.CodeInvalid, "user name %.70q: want 1-64 of A-Z a-z 0-9 . _ - @", name)
}

type adminDeviceJSON struct {
	ID         string `json:"id"`
	Credential string `json:"credential"`
	FirstSeen  int64  `json:"firstSeen"`
	LastSeen   int64  `json:"lastSeen"`
}

// handleAdminDevices serves GET /api/v1/admin/devices.
func (s *Server) handleAdminDevices(c *fiber.Ctx) error {
	devs, err := s.cfg.Admin.ListDevices(c.UserContext())
	if err != nil {
		return err
	}
	out := make([]adminDeviceJSON, len(devs))
	for i, d := range devs {
		out[i] = adminDeviceJSON{ID: d.ID, Credential: d.Credential, FirstSeen: d.FirstSeenMs, LastSeen: d.LastSeenMs}
	}
	return c.JSON(fiber.Map{"devices": out})
}

type issuedDeviceJSON struct {
	ID       string   `json:"id"`
	Token    string   `json:"token"`
	Replaced bool     `json:"replaced"`
	Topic    string   `json:"topic"`
	Brokers  []string `json:"brokers"`
}

// handleAdminDeviceIssue serves POST /api/v1/admin/devices {"id"}: a new
// token for the device, shown in this answer only.
func (s *Server) handleAdminDeviceIssue(c *fiber.Ctx) error {
	var in struct {
		ID string `json:"id"`
	}
	if err := adminBody(c, &in, `{"id": "boiler-1"}`); err != nil {
		return err
	}
	if !ingest.ValidName(in.ID) {
		return badDeviceID(in.ID)
	}
	dev, err := s.cfg.Admin.IssueDevice(c.UserContext(), in.ID)
	if err != nil {
		return err
	}
	s.log.Info("device token issued", "device", in.ID, "replaced", dev.Replaced, "user", actor(c), "remote", s.proxies.clientIP(c))
	brokers := make([]string, 0, len(dev.Brokers))
	for _, b := range dev.Brokers {
		brokers = append(brokers, withRequestHost(b, c.Hostname()))
	}
	return c.Status(fiber.StatusCreated).JSON(issuedDeviceJSON{
		ID: in.ID, Token: dev.Token, Replaced: dev.Replaced, Topic: dev.Topic, Brokers: brokers,
	})
}

// withRequestHost puts host (the request's, from the Host header) in a
// listener URL whose host is unspecified (0.0.0.0, ::, empty): a listener
// on every address is reachable where the dashboard is.
func withRequestHost(listener, host string) string {
	u, err := url.Parse(listener)
	if err != nil || u.Host == "" {
		return listener
	}
	if ip := net.ParseIP(u.Hostname()); u.Hostname() != "" && (ip == nil || !ip.IsUnspecified()) {
		return listener
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "" {
		return listener
	}
	u.Host = net.JoinHostPort(host, u.Port())
	return u.String()
}

// handleAdminDeviceRevoke serves DELETE /api/v1/admin/devices/{id}.
func (s *Server) handleAdminDeviceRevoke(c *fiber.Ctx) error {
	id := pathName(c, "id")
	if !ingest.ValidName(id) {
		return badDeviceID(id)
	}
	if err := s.cfg.Admin.RevokeDevice(c.UserContext(), id); err != nil {
		return err
	}
	s.log.Info("device token revoked", "device", id, "user", actor(c), "remote", s.proxies.clientIP(c))
	return c.SendStatus(fiber.StatusNoContent)
}

type operatorJSON struct {
	Name    string `json:"name"`
	Role    Role   `json:"role"`
	Created int64  `json:"created"`
}

// handleAdminUsers serves GET /api/v1/admin/users.
func (s *Server) handleAdminUsers(c *fiber.Ctx) error {
	users, err := s.cfg.Admin.ListUsers(c.UserContext())
	if err != nil {
		return err
	}
	out := make([]operatorJSON, len(users))
	for i, u := range users {
		out[i] = operatorJSON{Name: u.Name, Role: u.Role, Created: u.CreatedMs}
	}
	return c.JSON(fiber.Map{"users": out})
}

type issuedUserJSON struct {
	Name     string `json:"name"`
	Role     Role   `json:"role"`
	Token    string `json:"token"`
	Replaced bool   `json:"replaced"`
}

// handleAdminUserIssue serves POST /api/v1/admin/users {"name","role"}: a
// new user, or an existing one with a new role and token; the token (also
// the login password) is shown in this answer only. A change that would
// leave no admin is refused (409).
func (s *Server) handleAdminUserIssue(c *fiber.Ctx) error {
	var in struct {
		Name string `json:"name"`
		Role string `json:"role"`
	}
	if err := adminBody(c, &in, `{"name": "ann", "role": "admin|viewer"}`); err != nil {
		return err
	}
	if !ValidUserName(in.Name) {
		return badUserName(in.Name)
	}
	role := RoleViewer // as `telegauge users add`: the least right by default
	if in.Role != "" {
		r, err := ParseRole(in.Role)
		if err != nil {
			return dashboard.Errorf(dashboard.CodeInvalid, "role %.30q: want admin or viewer", in.Role)
		}
		role = r
	}
	ctx := c.UserContext()
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	users, err := s.cfg.Admin.ListUsers(ctx)
	if err != nil {
		return err
	}
	if !hasAdmin(append(without(users, in.Name), Operator{Name: in.Name, Role: role})) {
		if !hasAdmin(users) {
			return fiber.NewError(fiber.StatusConflict, "the first user must be an admin: logins start with it, and a viewer alone could not manage devices and users")
		}
		return errLastAdmin(in.Name)
	}
	token, replaced, err := s.cfg.Admin.IssueUser(ctx, in.Name, role)
	if err != nil {
		return err
	}
	s.log.Info("user token issued", "name", in.Name, "role", role, "replaced", replaced, "user", actor(c), "remote", s.proxies.clientIP(c))
	return c.Status(fiber.StatusCreated).JSON(issuedUserJSON{Name: in.Name, Role: role, Token: token, Replaced: replaced})
}

// handleAdminUserRemove serves DELETE /api/v1/admin/users/{name}. Removing
// the last admin is refused (409).
func (s *Server) handleAdminUserRemove(c *fiber.Ctx) error {
	name := pathName(c, "name")
	if !ValidUserName(name) {
		return badUserName(name)
	}
	ctx := c.UserContext()
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	users, err := s.cfg.Admin.ListUsers(ctx)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(users, func(u Operator) bool { return u.Name == name }) {
		return dashboard.Errorf(dashboard.CodeNotFound, "no user %s", name)
	}
	if !hasAdmin(without(users, name)) {
		return errLastAdmin(name)
	}
	if err := s.cfg.Admin.RemoveUser(ctx, name); err != nil {
		return err
	}
	s.log.Info("user removed", "name", name, "user", actor(c), "remote", s.proxies.clientIP(c))
	return c.SendStatus(fiber.StatusNoContent)
}

// hasAdmin reports whether any of users is an admin.
func hasAdmin(users []Operator) bool {
	return slices.ContainsFunc(users, func(u Operator) bool { return u.Role == RoleAdmin })
}

// without returns a copy of users without user name.
func without(users []Operator, name string) []Operator {
	return slices.DeleteFunc(slices.Clone(users), func(u Operator) bool { return u.Name == name })
}

// errLastAdmin refuses a change that would leave no admin.
func errLastAdmin(name string) error {
	return fiber.NewError(fiber.StatusConflict, name+" is the last admin: make another user an admin first, so that someone can still manage devices and users")
}
