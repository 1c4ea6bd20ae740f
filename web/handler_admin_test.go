package web

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/dashboard"
	"github.com/telegauge/telegauge/internal/secret"
)

// memAdmin is an AdminStore in memory. Like cmd's, it applies operator
// changes to the server before returning, and turns logins on once a user
// exists (protected mode on loopback).
type memAdmin struct {
	mu       sync.Mutex // guards the fields below
	srv      *Server
	required bool // Access.Required with no users
	devices  map[string]*DeviceCredential
	users    map[string]memUser
}

type memUser struct {
	Operator
	hash string
}

var _ AdminStore = (*memAdmin)(nil)

func newMemAdmin(required bool, ops ...operator) *memAdmin {
	m := &memAdmin{required: required, devices: map[string]*DeviceCredential{}, users: map[string]memUser{}}
	for _, o := range ops {
		m.users[o.Name] = memUser{Operator: Operator{Name: o.Name, Role: o.Role, CreatedMs: 1}, hash: o.TokenHash}
	}
	return m
}

// access is the Access the users give. The caller must hold m.mu.
func (m *memAdmin) accessLocked() Access {
	acc := Access{Required: m.required || len(m.users) > 0}
	for _, u := range m.users {
		acc.Users = append(acc.Users, User{Name: u.Name, Role: u.Role, TokenHash: u.hash})
	}
	return acc
}

// serve wires m to the server it manages and gives it the users.
func (m *memAdmin) serve(s *Server) {
	m.mu.Lock()
	m.srv = s
	acc := m.accessLocked()
	m.mu.Unlock()
	s.SetAccess(acc)
}

// apply hands the users to the server, as cmd's reload does.
func (m *memAdmin) apply() {
	m.mu.Lock()
	srv, acc := m.srv, m.accessLocked()
	m.mu.Unlock()
	srv.SetAccess(acc)
}

func (m *memAdmin) ListDevices(context.Context) ([]DeviceCredential, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []DeviceCredential
	for _, d := range m.devices {
		out = append(out, *d)
	}
	slices.SortFunc(out, func(a, b DeviceCredential) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func (m *memAdmin) IssueDevice(_ context.Context, id string) (IssuedDevice, error) {
	tok, err := secret.NewToken()
	if err != nil {
		return IssuedDevice{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.devices[id]
	if !ok {
		d = &DeviceCredential{ID: id}
		m.devices[id] = d
	}
	replaced := d.Credential == CredentialToken
	d.Credential = CredentialToken
	return IssuedDevice{Token: tok, Replaced: replaced, Topic: "telemetry/" + id,
		Brokers: []string{"mqtt://0.0.0.0:1883", "mqtts://mqtt.example.com:8883"}}, nil
}

func (m *memAdmin) RevokeDevice(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.devices[id]
	if !ok || d.Credential != CredentialToken {
		return dashboard.Errorf(dashboard.CodeNotFound, "device %s holds no credential", id)
	}
	d.Credential = CredentialRevoked
	return nil
}

func (m *memAdmin) ListUsers(context.Context) ([]Operator, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Operator
	for _, u := range m.users {
		out = append(out, u.Operator)
	}
	slices.SortFunc(out, func(a, b Operator) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (m *memAdmin) IssueUser(_ context.Context, name string, role Role) (string, bool, error) {
	tok, err := secret.NewToken()
	if err != nil {
		return "", false, err
	}
	h, err := secret.Hash(tok)
	if err != nil {
		return "", false, err
	}
	m.mu.Lock()
	old, replaced := m.users[name]
	created := int64(1_700_000_000_000)
	if replaced {
		created = old.CreatedMs
	}
	m.users[name] = memUser{Operator: Operator{Name: name, Role: role, CreatedMs: created}, hash: h}
	m.mu.Unlock()
	m.apply()
	return tok, replaced, nil
}

func (m *memAdmin) RemoveUser(_ context.Context, name string) error {
	m.mu.Lock()
	_, ok := m.users[name]
	delete(m.users, name)
	m.mu.Unlock()
	if !ok {
		return dashboard.Errorf(dashboard.CodeNotFound, "no user %s", name)
	}
	m.apply()
	return nil
}

// newAdminServer is a test server whose admin API manages m.
func newAdminServer(t testing.TB, m *memAdmin, opts ...testOption) *testServer {
	t.Helper()
	ts := newTestServer(t, append(opts, withWeb(func(c *Config) { c.Admin = m }))...)
	m.serve(ts.srv)
	return ts
}

// jsonOf decodes body into a fresh T.
func jsonOf[T any](t testing.TB, body []byte) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(body, &v), "body %s", body)
	return v
}

type adminDevicesBody struct {
	Devices []adminDeviceJSON `json:"devices"`
}

type adminUsersBody struct {
	Users []operatorJSON `json:"users"`
}

// TestAdminRoles: the admin API is for admins: 401 without credentials,
// 403 for a viewer (with any verb, on any of its routes), and every answer
// is uncacheable.
func TestAdminRoles(t *testing.T) {
	ann, vic := newOperator(t, "ann", RoleAdmin), newOperator(t, "vic", RoleViewer)
	m := newMemAdmin(true, ann, vic)
	ts := newAdminServer(t, m)
	for _, tc := range []struct {
		name, method, path, body string
		admin                    int
	}{
		{"list devices", "", "/api/v1/admin/devices", "", 200},
		{"add device", http.MethodPost, "/api/v1/admin/devices", `{"id":"boiler-1"}`, 201},
		{"revoke device", http.MethodDelete, "/api/v1/admin/devices/boiler-1", "", 204},
		{"list users", "", "/api/v1/admin/users", "", 200},
		{"add user", http.MethodPost, "/api/v1/admin/users", `{"name":"zoe","role":"viewer"}`, 201},
		{"remove user", http.MethodDelete, "/api/v1/admin/users/zoe", "", 204},
		{"unknown admin route", "", "/api/v1/admin/nope", "", 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := ts.do(t, request{method: tc.method, path: tc.path, body: tc.body})
			requireError(t, http.StatusUnauthorized, resp, body)
			resp, body = ts.do(t, request{method: tc.method, path: tc.path, body: tc.body, header: bearer(vic.token)})
			require.Contains(t, requireError(t, http.StatusForbidden, resp, body), "admin role")
			resp, body = ts.do(t, request{method: tc.method, path: tc.path, body: tc.body, header: bearer(ann.token)})
			require.Equal(t, tc.admin, resp.StatusCode, "body %s", body)
			if tc.admin != http.StatusNotFound {
				require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
			}
		})
	}
}

// TestAdminDevices: an admin gives a device a token (shown once, with how
// to connect), lists devices with their credential state, re-issues
// (replacing the token) and revokes; bad ids and bodies are 400s.
func TestAdminDevices(t *testing.T) {
	ann := newOperator(t, "ann", RoleAdmin)
	m := newMemAdmin(true, ann)
	ts := newAdminServer(t, m)
	as := bearer(ann.token)

	resp, body := ts.do(t, request{method: http.MethodPost, path: "/api/v1/admin/devices", body: `{"id":"boiler-1"}`, header: as})
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body %s", body)
	first := jsonOf[issuedDeviceJSON](t, body)
	require.Equal(t, "boiler-1", first.ID)
	require.True(t, strings.HasPrefix(first.Token, "tg_"), first.Token)
	require.False(t, first.Replaced)
	require.Equal(t, "telemetry/boiler-1", first.Topic)
	require.Equal(t, []string{"mqtt://127.0.0.1:1883", "mqtts://mqtt.example.com:8883"}, first.Brokers,
		"a listener on every address is shown at the host the dashboard was reached at")

	resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/admin/devices", body: `{"id":"boiler-1"}`, header: as})
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body %s", body)
	again := jsonOf[issuedDeviceJSON](t, body)
	require.True(t, again.Replaced)
	require.NotEqual(t, first.Token, again.Token)

	resp, body = ts.do(t, request{path: "/api/v1/admin/devices", header: as})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, adminDevicesBody{Devices: []adminDeviceJSON{{ID: "boiler-1", Credential: "token"}}}, jsonOf[adminDevicesBody](t, body))

	resp, body = ts.do(t, request{method: http.MethodDelete, path: "/api/v1/admin/devices/boiler-1", header: as})
	require.Equal(t, http.StatusNoContent, resp.StatusCode, "body %s", body)
	resp, body = ts.do(t, request{path: "/api/v1/admin/devices", header: as})
	require.Equal(t, "revoked", jsonOf[adminDevicesBody](t, body).Devices[0].Credential)
	resp, body = ts.do(t, request{method: http.MethodDelete, path: "/api/v1/admin/devices/boiler-1", header: as})
	require.Contains(t, requireError(t, http.StatusNotFound, resp, body), "holds no credential")
	resp, body = ts.do(t, request{method: http.MethodDelete, path: "/api/v1/admin/devices/nobody", header: as})
	requireError(t, http.StatusNotFound, resp, body)

	for _, tc := range []struct {
		name, method, path, body string
		status                   int
	}{
		{"empty id", http.MethodPost, "/api/v1/admin/devices", `{"id":""}`, 400},
		{"no id", http.MethodPost, "/api/v1/admin/devices", `{}`, 400},
		{"slash in id", http.MethodPost, "/api/v1/admin/devices", `{"id":"a/b"}`, 400},
		{"wildcard in id", http.MethodPost, "/api/v1/admin/devices", `{"id":"+"}`, 400},
		{"space in id", http.MethodPost, "/api/v1/admin/devices", `{"id":"a b"}`, 400},
		{"id too long", http.MethodPost, "/api/v1/admin/devices", `{"id":"` + strings.Repeat("a", 65) + `"}`, 400},
		{"id not a string", http.MethodPost, "/api/v1/admin/devices", `{"id":7}`, 400},
		{"not JSON", http.MethodPost, "/api/v1/admin/devices", `id=boiler-2`, 400},
		{"too large", http.MethodPost, "/api/v1/admin/devices", `{"id":"a","pad":"` + strings.Repeat("x", 5000) + `"}`, 413},
		{"revoke bad id", http.MethodDelete, "/api/v1/admin/devices/a%20b", "", 400},
		{"revoke id too long", http.MethodDelete, "/api/v1/admin/devices/" + strings.Repeat("a", 65), "", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := ts.do(t, request{method: tc.method, path: tc.path, body: tc.body, header: as})
			requireError(t, tc.status, resp, body)
		})
	}
	resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/admin/devices", body: `{"id":"` + strings.Repeat("a", 64) + `"}`, header: as})
	require.Equal(t, http.StatusCreated, resp.StatusCode, "64 characters is fine: %s", body)
}

// TestAdminUsers: an admin adds users (the token logs in at once), lists
// them, changes a role and removes them; removing or demoting the last
// admin is refused, removing oneself is fine while another admin remains.
func TestAdminUsers(t *testing.T) {
	ann := newOperator(t, "ann", RoleAdmin)
	m := newMemAdmin(true, ann)
	ts := newAdminServer(t, m)
	as := bearer(ann.token)

	resp, body := ts.do(t, request{method: http.MethodPost, path: "/api/v1/admin/users", body: `{"name":"vic@example.com","role":"viewer"}`, header: as})
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body %s", body)
	vic := jsonOf[issuedUserJSON](t, body)
	require.Equal(t, issuedUserJSON{Name: "vic@example.com", Role: RoleViewer, Token: vic.Token}, vic)
	var me meBody
	require.Equal(t, http.StatusOK, doJSON(t, ts.url+"/api/v1/me", bearer(vic.Token), &me), "the new token works at once")
	require.Equal(t, meBody{User: "vic@example.com", Role: RoleViewer, Auth: "token"}, me)
	vicSession := ts.login(t, "vic@example.com", vic.Token)

	resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/admin/users", body: `{"name":"dee"}`, header: as})
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body %s", body)
	require.Equal(t, RoleViewer, jsonOf[issuedUserJSON](t, body).Role, "viewer by default")

	resp, body = ts.do(t, request{path: "/api/v1/admin/users", header: as})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, adminUsersBody{Users: []operatorJSON{
		{Name: "ann", Role: RoleAdmin, Created: 1},
		{Name: "dee", Role: RoleViewer, Created: 1_700_000_000_000},
		{Name: "vic@example.com", Role: RoleViewer, Created: 1_700_000_000_000},
	}}, jsonOf[adminUsersBody](t, body))

	// The last admin can neither be demoted nor removed, by anyone.
	resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/admin/users", body: `{"name":"ann","role":"viewer"}`, header: as})
	require.Contains(t, requireError(t, http.StatusConflict, resp, body), "last admin")
	resp, body = ts.do(t, request{method: http.MethodDelete, path: "/api/v1/admin/users/ann", header: as})
	require.Contains(t, requireError(t, http.StatusConflict, resp, body), "last admin")
	require.Equal(t, http.StatusOK, doJSON(t, ts.url+"/api/v1/me", as, &me), "ann is untouched")

	// Promoting vic re-issues vic's token: the old one and its session end.
	resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/admin/users", body: `{"name":"vic@example.com","role":"admin"}`, header: as})
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body %s", body)
	vic2 := jsonOf[issuedUserJSON](t, body)
	require.True(t, vic2.Replaced)
	require.Equal(t, RoleAdmin, vic2.Role)
	resp, body = ts.do(t, request{path: "/api/v1/me", header: bearer(vic.Token)})
	requireError(t, http.StatusUnauthorized, resp, body)
	resp, body = ts.do(t, request{path: "/api/v1/me", header: ts.withCookie(vicSession)})
	requireError(t, http.StatusUnauthorized, resp, body)

	// With another admin, ann may remove herself, and is out at once.
	resp, body = ts.do(t, request{method: http.MethodDelete, path: "/api/v1/admin/users/ann", header: as})
	require.Equal(t, http.StatusNoContent, resp.StatusCode, "body %s", body)
	resp, body = ts.do(t, request{path: "/api/v1/me", header: as})
	requireError(t, http.StatusUnauthorized, resp, body)
	resp, body = ts.do(t, request{method: http.MethodDelete, path: "/api/v1/admin/users/ann", header: bearer(vic2.Token)})
	require.Contains(t, requireError(t, http.StatusNotFound, resp, body), "no user ann")
	// Now vic is the last admin (the name, escaped in the path, is found).
	resp, body = ts.do(t, request{method: http.MethodDelete, path: "/api/v1/admin/users/vic%40example.com", header: bearer(vic2.Token)})
	require.Contains(t, requireError(t, http.StatusConflict, resp, body), "vic@example.com is the last admin")

	for _, tc := range []struct {
		name, method, path, body string
		status                   int
	}{
		{"bad role", http.MethodPost, "/api/v1/admin/users", `{"name":"zed","role":"root"}`, 400},
		{"empty name", http.MethodPost, "/api/v1/admin/users", `{"name":"","role":"viewer"}`, 400},
		{"space in name", http.MethodPost, "/api/v1/admin/users", `{"name":"z z","role":"viewer"}`, 400},
		{"name too long", http.MethodPost, "/api/v1/admin/users", `{"name":"` + strings.Repeat("z", 65) + `","role":"viewer"}`, 400},
		{"not JSON", http.MethodPost, "/api/v1/admin/users", `name=zed`, 400},
		{"remove bad name", http.MethodDelete, "/api/v1/admin/users/z%20z", "", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := ts.do(t, request{method: tc.method, path: tc.path, body: tc.body, header: bearer(vic2.Token)})
			requireError(t, tc.status, resp, body)
		})
	}
}

// TestAdminAnonymous: on a server without logins (loopback, no users) the
// anonymous visitor is an admin, as for dashboards; the first user must be
// an admin, and adding one turns logins on at once. Pages on other sites
// cannot use the admin API.
func TestAdminAnonymous(t *testing.T) {
	m := newMemAdmin(false)
	ts := newAdminServer(t, m)

	resp, body := ts.do(t, request{path: "/api/v1/admin/users"})
	require.Equal(t, http.StatusOK, resp.StatusCode, "body %s", body)
	require.Equal(t, adminUsersBody{Users: []operatorJSON{}}, jsonOf[adminUsersBody](t, body))
	resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/admin/devices", body: `{"id":"boiler-1"}`,
		header: http.Header{"Origin": {"http://evil.example"}}})
	require.Contains(t, requireError(t, http.StatusForbidden, resp, body), "cross-site")
	resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/admin/devices", body: `{"id":"boiler-1"}`,
		header: http.Header{"Origin": {ts.url}}})
	require.Equal(t, http.StatusCreated, resp.StatusCode, "the dashboard's own page may: %s", body)

	resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/admin/users", body: `{"name":"vic","role":"viewer"}`})
	require.Contains(t, requireError(t, http.StatusConflict, resp, body), "first user must be an admin")
	resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/admin/users", body: `{"name":"ann","role":"admin"}`})
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body %s", body)
	ann := jsonOf[issuedUserJSON](t, body)
	resp, body = ts.do(t, request{path: "/api/v1/admin/users"})
	requireError(t, http.StatusUnauthorized, resp, body)
	var me meBody
	require.Equal(t, http.StatusOK, doJSON(t, ts.url+"/api/v1/me", bearer(ann.Token), &me))
	require.Equal(t, RoleAdmin, me.Role)
}

// TestAdminCSRF: with a session cookie, admin writes need the server's own
// Origin.
func TestAdminCSRF(t *testing.T) {
	ann := newOperator(t, "ann", RoleAdmin)
	ts := newAdminServer(t, newMemAdmin(true, ann))
	ck := ts.login(t, "ann", ann.token)
	cookie := http.Header{"Cookie": {ck.Name + "=" + ck.Value}}
	for _, tc := range []struct {
		name   string
		origin string
		status int
	}{
		{"no origin", "", http.StatusForbidden},
		{"another site", "http://evil.example", http.StatusForbidden},
		{"own page", ts.url, http.StatusCreated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := cookie.Clone()
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			resp, body := ts.do(t, request{method: http.MethodPost, path: "/api/v1/admin/devices", body: `{"id":"boiler-1"}`, header: h})
			require.Equal(t, tc.status, resp.StatusCode, "body %s", body)
			resp, body = ts.do(t, request{method: http.MethodPost, path: "/api/v1/admin/users", body: `{"name":"zed","role":"viewer"}`, header: h})
			require.Equal(t, tc.status, resp.StatusCode, "body %s", body)
		})
	}
}

// TestAdminNoDatabase: without a database (--db memory) the admin API says
// so (501); viewers are still refused first.
func TestAdminNoDatabase(t *testing.T) {
	ann, vic := newOperator(t, "ann", RoleAdmin), newOperator(t, "vic", RoleViewer)
	ts := newTestServer(t, withOperators(ann, vic))
	for _, path := range []string{"/api/v1/admin/devices", "/api/v1/admin/users"} {
		resp, body := ts.do(t, request{path: path, header: bearer(ann.token)})
		require.Contains(t, requireError(t, http.StatusNotImplemented, resp, body), "credentials need a database")
		resp, body = ts.do(t, request{method: http.MethodPost, path: path, body: `{}`, header: bearer(ann.token)})
		requireError(t, http.StatusNotImplemented, resp, body)
		resp, body = ts.do(t, request{path: path, header: bearer(vic.token)})
		requireError(t, http.StatusForbidden, resp, body)
	}
}

func TestWithRequestHost(t *testing.T) {
	for _, tc := range []struct {
		name, listener, host, want string
	}{
		{"every IPv4 address", "mqtt://0.0.0.0:1883", "ops.example.com:8080", "mqtt://ops.example.com:1883"},
		{"every IPv6 address", "mqtt://[::]:1883", "ops.example.com", "mqtt://ops.example.com:1883"},
		{"no host", "mqtt://:1883", "10.0.0.5:8080", "mqtt://10.0.0.5:1883"},
		{"IPv6 request host", "mqtts://0.0.0.0:8883", "[2001:db8::1]:8080", "mqtts://[2001:db8::1]:8883"},
		{"a path is kept", "ws://0.0.0.0:8083/mqtt", "ops.example.com", "ws://ops.example.com:8083/mqtt"},
		{"a named host is kept", "mqtt://mqtt.example.com:1883", "ops.example.com", "mqtt://mqtt.example.com:1883"},
		{"loopback is kept", "mqtt://127.0.0.1:1883", "ops.example.com", "mqtt://127.0.0.1:1883"},
		{"no request host", "mqtt://0.0.0.0:1883", "", "mqtt://0.0.0.0:1883"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, withRequestHost(tc.listener, tc.host))
		})
	}
}
