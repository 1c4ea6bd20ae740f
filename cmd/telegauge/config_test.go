package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/stretchr/testify/require"
)

// TestConfigPrecedence: every serve flag can come from the YAML file, a
// TELEGAUGE_* variable or the command line, in rising precedence.
func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "telegauge.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`
http-addr: 127.0.0.1:9001
mqtt-addr: 127.0.0.1:9002
heartbeat: 5s
retention_1s: 2h
origins: [https://a.example, https://b.example]
serve:
  demo: 3
`), 0o600))
	t.Setenv("TELEGAUGE_MQTT_ADDR", "127.0.0.1:9102")
	t.Setenv("TELEGAUGE_HEARTBEAT", "7s")

	var c cli
	parser, err := kong.New(&c, kong.Name("telegauge"), kong.DefaultEnvars("TELEGAUGE"), kong.Configuration(yamlConfig))
	require.NoError(t, err)
	_, err = parser.Parse([]string{"serve", "--config", file, "--heartbeat", "9s"})
	require.NoError(t, err)
	s := c.Serve
	require.Equal(t, "127.0.0.1:9001", s.HTTPAddr, "from the file")
	require.Equal(t, "127.0.0.1:9102", s.MQTTAddr, "the environment beats the file")
	require.Equal(t, 9*time.Second, s.Heartbeat, "the command line beats both")
	require.Equal(t, 2*time.Hour, s.Retention1s, "snake_case key")
	require.Equal(t, []string{"https://a.example", "https://b.example"}, s.Origins, "YAML list")
	require.Equal(t, 3, s.Demo, "under the command's name")
	require.Equal(t, 720*time.Hour, s.Retention1m, "default")
}

func TestConfigFileErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(file, []byte("http-addr: [unclosed"), 0o600))
	var c cli
	parser, err := kong.New(&c, kong.Name("telegauge"), kong.Configuration(yamlConfig))
	require.NoError(t, err)
	_, err = parser.Parse([]string{"serve", "--config", file})
	require.ErrorContains(t, err, "parse config file")
}

// TestProtectedMode: anonymous access only while every listener is on
// loopback (DESIGN.md §5).
func TestProtectedMode(t *testing.T) {
	devices, users := credentialCounts{devices: 1}, credentialCounts{users: 1}
	both, none := credentialCounts{devices: 1, users: 1}, credentialCounts{}
	for _, tc := range []struct {
		name    string
		cmd     ServeCmd
		creds   credentialCounts
		wantErr string
	}{
		{"loopback", ServeCmd{Auth: "auto", HTTPAddr: "127.0.0.1:8080", MQTTAddr: "[::1]:1883"}, none, ""},
		{"localhost", ServeCmd{Auth: "auto", HTTPAddr: "localhost:8080", MQTTAddr: "127.0.0.1:1883"}, none, ""},
		{"all interfaces", ServeCmd{Auth: "auto", HTTPAddr: ":8080", MQTTAddr: "127.0.0.1:1883"}, none, "--http-addr :8080 is not a loopback address"},
		{"public http, devices only", ServeCmd{Auth: "auto", HTTPAddr: ":8080", MQTTAddr: "127.0.0.1:1883"}, devices, "telegauge users add"},
		{"public http with users", ServeCmd{Auth: "auto", HTTPAddr: ":8080", MQTTAddr: "127.0.0.1:1883"}, users, ""},
		{"public mqtt", ServeCmd{Auth: "auto", HTTPAddr: "127.0.0.1:8080", MQTTAddr: "0.0.0.0:1883"}, users, "telegauge devices add"},
		{"public mqtt with devices", ServeCmd{Auth: "auto", HTTPAddr: "127.0.0.1:8080", MQTTAddr: "0.0.0.0:1883"}, devices, ""},
		{"public tls with client CA", ServeCmd{Auth: "auto", HTTPAddr: "127.0.0.1:8080", MQTTAddr: "127.0.0.1:1883", MQTTTLSAddr: ":8883", MQTTTLSClientCA: "ca.pem"}, none, ""},
		{"public websocket", ServeCmd{Auth: "auto", HTTPAddr: "127.0.0.1:8080", MQTTAddr: "127.0.0.1:1883", MQTTWSAddr: ":8083"}, none, "--mqtt-ws-addr"},
		{"everything public", ServeCmd{Auth: "auto", HTTPAddr: ":8080", MQTTAddr: ":1883", MQTTWSAddr: ":8083"}, both, ""},
		{"public debug", ServeCmd{Auth: "auto", HTTPAddr: "127.0.0.1:8080", MQTTAddr: "127.0.0.1:1883", DebugAddr: "0.0.0.0:6060"}, both, "--debug-addr"},
		{"required", ServeCmd{Auth: "required", HTTPAddr: "127.0.0.1:8080", MQTTAddr: "127.0.0.1:1883"}, none, ""},
		{"required in memory", ServeCmd{Auth: "required", DB: "memory", HTTPAddr: "127.0.0.1:8080", MQTTAddr: "127.0.0.1:1883"}, none, "--db memory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cmd.checkAuth(tc.creds)
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}
