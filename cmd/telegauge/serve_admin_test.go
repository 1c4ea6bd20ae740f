//go:build integration

package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// adminCall sends an admin API request with a bearer token ("" for none)
// and decodes a JSON answer into out (when not nil); it returns the
// status and the body.
func adminCall(t *testing.T, n *testNode, token, method, path, body string, out any) (int, string) {
	t.Helper()
	h := http.Header{"Content-Type": {"application/json"}}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	st, b := httpStatus(t, nil, method, n.httpURL+path, body, h)
	if out != nil && st < 300 {
		require.NoError(t, json.Unmarshal([]byte(b), out), "body %s", b)
	}
	return st, b
}

// TestAdminAPI: the whole admin flow against the real server. On a loopback
// server the anonymous visitor (an admin) adds the first admin, which turns
// logins on; that admin adds a viewer, who is refused the admin API. The
// admin gives a device a token, and a paho device connects with it and
// publishes; re-issuing the token cuts the session that used the old one,
// and revoking cuts the device and keeps it out. Each change holds as soon
// as the answer arrives: no waiting for the credentials poll.
func TestAdminAPI(t *testing.T) {
	n := mustRunMain(t)

	st, body := adminCall(t, n, "", http.MethodPost, "/api/v1/admin/users", `{"name":"vic","role":"viewer"}`, nil)
	require.Equal(t, http.StatusConflict, st, "the first user must be an admin: %s", body)
	var ann struct{ Name, Role, Token string }
	st, body = adminCall(t, n, "", http.MethodPost, "/api/v1/admin/users", `{"name":"ann","role":"admin"}`, &ann)
	require.Equal(t, http.StatusCreated, st, body)
	require.Equal(t, "admin", ann.Role)
	st, _ = adminCall(t, n, "", http.MethodGet, "/api/v1/admin/devices", "", nil)
	require.Equal(t, http.StatusUnauthorized, st, "logins are on at once")

	var vic struct{ Token string }
	st, body = adminCall(t, n, ann.Token, http.MethodPost, "/api/v1/admin/users", `{"name":"vic","role":"viewer"}`, &vic)
	require.Equal(t, http.StatusCreated, st, body)
	for _, r := range []struct{ method, path, body string }{
		{http.MethodGet, "/api/v1/admin/devices", ""},
		{http.MethodPost, "/api/v1/admin/devices", `{"id":"boiler-1"}`},
		{http.MethodDelete, "/api/v1/admin/devices/boiler-1", ""},
		{http.MethodGet, "/api/v1/admin/users", ""},
		{http.MethodPost, "/api/v1/admin/users", `{"name":"vic","role":"admin"}`},
		{http.MethodDelete, "/api/v1/admin/users/ann", ""},
	} {
		st, body := adminCall(t, n, vic.Token, r.method, r.path, r.body, nil)
		require.Equal(t, http.StatusForbidden, st, "viewer %s %s: %s", r.method, r.path, body)
	}
	st, _ = adminCall(t, n, vic.Token, http.MethodGet, "/api/v1/devices", "", nil)
	require.Equal(t, http.StatusOK, st, "viewers read")

	// A device credential from the API: anonymous devices are out, the
	// device is in.
	_, anonLost, err := dialDevice(t, n.mqttURL, "", "")
	require.NoError(t, err, "anonymous while no device credential exists")
	var dev struct {
		ID, Token, Topic string
		Replaced         bool
		Brokers          []string
	}
	st, body = adminCall(t, n, ann.Token, http.MethodPost, "/api/v1/admin/devices", `{"id":"boiler-1"}`, &dev)
	require.Equal(t, http.StatusCreated, st, body)
	require.Equal(t, "telemetry/boiler-1", dev.Topic)
	require.Equal(t, []string{"mqtt://" + strings.TrimPrefix(n.mqttURL, "tcp://")}, dev.Brokers, "the hint names the MQTT listener")
	require.False(t, dev.Replaced)
	waitLost(t, anonLost, "the anonymous session once a device credential exists")
	_, _, err = dialDevice(t, n.mqttURL, "", "")
	require.Error(t, err, "anonymous devices refused at once")

	c, lost, err := dialDevice(t, n.mqttURL, "boiler-1", dev.Token)
	require.NoError(t, err)
	publish(t, c, dev.Topic, 1, `{"t":21.5}`)
	eventually(t, 10*time.Second, func() error { return deviceKnown(n, "boiler-1") })
	var list struct {
		Devices []struct {
			ID, Credential      string
			FirstSeen, LastSeen int64
		}
	}
	st, body = adminCall(t, n, ann.Token, http.MethodGet, "/api/v1/admin/devices", "", &list)
	require.Equal(t, http.StatusOK, st, body)
	require.Len(t, list.Devices, 1, body)
	require.Equal(t, "boiler-1", list.Devices[0].ID)
	require.Equal(t, "token", list.Devices[0].Credential)
	require.Positive(t, list.Devices[0].LastSeen, "activity not yet saved is shown")

	// Re-issuing: the session with the old token is cut, the old token
	// refused, the new one works.
	var dev2 struct {
		Token    string
		Replaced bool
	}
	st, body = adminCall(t, n, ann.Token, http.MethodPost, "/api/v1/admin/devices", `{"id":"boiler-1"}`, &dev2)
	require.Equal(t, http.StatusCreated, st, body)
	require.True(t, dev2.Replaced)
	_, _, err = dialDevice(t, n.mqttURL, "boiler-1", dev.Token)
	require.Error(t, err, "the old token is refused as soon as the answer arrives")
	waitLost(t, lost, "the session using the replaced token")
	c, lost, err = dialDevice(t, n.mqttURL, "boiler-1", dev2.Token)
	require.NoError(t, err)
	publish(t, c, dev.Topic, 1, `{"t":22}`)

	// Revoking: the device is cut and stays out.
	st, body = adminCall(t, n, ann.Token, http.MethodDelete, "/api/v1/admin/devices/boiler-1", "", nil)
	require.Equal(t, http.StatusNoContent, st, body)
	_, _, err = dialDevice(t, n.mqttURL, "boiler-1", dev2.Token)
	require.Error(t, err, "a revoked device is refused as soon as the answer arrives")
	waitLost(t, lost, "the revoked device")
	st, body = adminCall(t, n, ann.Token, http.MethodDelete, "/api/v1/admin/devices/boiler-1", "", nil)
	require.Equal(t, http.StatusNotFound, st, body)
	st, body = adminCall(t, n, ann.Token, http.MethodGet, "/api/v1/admin/devices", "", &list)
	require.Equal(t, http.StatusOK, st, body)
	require.Equal(t, "revoked", list.Devices[0].Credential)

	// Users: the last admin stays; a removed user is out at once.
	st, body = adminCall(t, n, ann.Token, http.MethodDelete, "/api/v1/admin/users/ann", "", nil)
	require.Equal(t, http.StatusConflict, st, body)
	require.Contains(t, body, "last admin")
	st, body = adminCall(t, n, ann.Token, http.MethodDelete, "/api/v1/admin/users/vic", "", nil)
	require.Equal(t, http.StatusNoContent, st, body)
	st, _ = adminCall(t, n, vic.Token, http.MethodGet, "/api/v1/devices", "", nil)
	require.Equal(t, http.StatusUnauthorized, st, "a removed user is out as soon as the answer arrives")
	var users struct{ Users []struct{ Name, Role string } }
	st, body = adminCall(t, n, ann.Token, http.MethodGet, "/api/v1/admin/users", "", &users)
	require.Equal(t, http.StatusOK, st, body)
	require.Equal(t, []struct{ Name, Role string }{{"ann", "admin"}}, users.Users)
}

// TestAdminAPIWithoutDatabase: --db memory keeps no credentials, and the
// admin API says so.
func TestAdminAPIWithoutDatabase(t *testing.T) {
	n := mustRunMain(t, "--db=memory")
	st, body := adminCall(t, n, "", http.MethodGet, "/api/v1/admin/devices", "", nil)
	require.Equal(t, http.StatusNotImplemented, st, body)
	require.Contains(t, body, "credentials need a database")
	st, body = adminCall(t, n, "", http.MethodPost, "/api/v1/admin/users", `{"name":"ann","role":"admin"}`, nil)
	require.Equal(t, http.StatusNotImplemented, st, body)
}
