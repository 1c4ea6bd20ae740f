package main

import (
	"bytes"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/internal/secret"
	"github.com/telegauge/telegauge/internal/testutil"
)

// parseCLI parses a command line as main does.
func parseCLI(t testing.TB, args ...string) (*cli, *kong.Context, error) {
	t.Helper()
	var c cli
	parser, err := kong.New(&c, kong.Name("telegauge"), kong.Configuration(yamlConfig))
	require.NoError(t, err)
	ctx, err := parser.Parse(args)
	return &c, ctx, err
}

// TestUsersCommands: add prints the token alone on stdout's last line (and
// what it is for on stderr), list shows name, role and creation, add again
// re-issues, remove deletes; bad input gets a clear error.
func TestUsersCommands(t *testing.T) {
	dir := t.TempDir()
	add := func(args ...string) (token, msg string) {
		t.Helper()
		c, _, err := parseCLI(t, append([]string{"users", "add", "--data-dir", dir}, args...)...)
		require.NoError(t, err)
		var out, errb bytes.Buffer
		require.NoError(t, c.Users.Add.run(&out, &errb))
		lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
		require.Len(t, lines, 1, "stdout holds the token alone: %q", out.String())
		return lines[0], errb.String()
	}
	list := func() string {
		t.Helper()
		c, _, err := parseCLI(t, "users", "list", "--data-dir", dir)
		require.NoError(t, err)
		var out bytes.Buffer
		require.NoError(t, c.Users.List.run(&out))
		return out.String()
	}

	ann, msg := add("ann", "--role", "admin")
	require.True(t, strings.HasPrefix(ann, "tg_"), ann)
	require.Contains(t, msg, "added as admin")
	require.Contains(t, msg, "shown only this once")
	vic, _ := add("vic@example.com") // viewer by default
	require.NotEqual(t, ann, vic)

	out := list()
	require.Regexp(t, `(?m)^USER\s+ROLE\s+CREATED$`, out)
	require.Regexp(t, `(?m)^ann\s+admin\s+\d{4}-\d\d-\d\dT`, out)
	require.Regexp(t, `(?m)^vic@example.com\s+viewer\s+\d{4}-`, out)
	require.NotContains(t, out, "tg_", "no secrets listed")

	// The stored hash checks the printed token.
	s, err := RecordsFlags{DataDir: dir}.openRecords(t.Context())
	require.NoError(t, err)
	u, err := s.GetUser(t.Context(), "ann")
	require.NoError(t, err)
	ok, err := secret.Verify(u.TokenHash, ann)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, s.Close())

	ann2, msg := add("ann", "--role", "viewer")
	require.NotEqual(t, ann, ann2)
	require.Contains(t, msg, "new token")
	require.Regexp(t, `(?m)^ann\s+viewer\s`, list())

	require.NoError(t, removeUser(t.Context(), RecordsFlags{DataDir: dir}, "ann"))
	require.NotContains(t, list(), "ann ")
	require.ErrorContains(t, removeUser(t.Context(), RecordsFlags{DataDir: dir}, "ann"), "no user ann")

	_, _, err = addUser(t.Context(), RecordsFlags{DataDir: dir}, "bad name", "admin")
	require.ErrorContains(t, err, "want 1-64 of")
	_, _, err = parseCLI(t, "users", "add", "x", "--role", "root", "--data-dir", dir)
	require.ErrorContains(t, err, "--role")
	_, _, err = addUser(t.Context(), RecordsFlags{DB: "memory"}, "x", "admin")
	require.ErrorContains(t, err, "--db memory keeps no credentials")
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key as
// PEM files, and returns their paths and the certificate.
func writeCert(t testing.TB, dir, name string) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	c, _ := testutil.SelfSigned(t, name)
	certFile, keyFile = testutil.WritePEM(t, dir, c)
	return certFile, keyFile, c.Leaf
}

// TestWebTLSFlags: both files or neither; a renewed pair is picked up, a
// broken one leaves the old in service.
func TestWebTLSFlags(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg, err := WebTLSFlags{}.webTLS(log)
	require.NoError(t, err)
	require.Nil(t, cfg)
	_, err = WebTLSFlags{TLSCert: "x.pem"}.webTLS(log)
	require.ErrorContains(t, err, "--tls-cert and --tls-key go together")
	_, err = WebTLSFlags{TLSCert: "nope.pem", TLSKey: "nope.key"}.webTLS(log)
	require.ErrorContains(t, err, "load HTTPS certificate")

	dir := t.TempDir()
	certFile, keyFile, first := writeCert(t, dir, "first")
	cf := &certFiles{cert: certFile, key: keyFile, every: 0, log: log}
	require.NoError(t, cf.load())
	got, err := cf.get(nil)
	require.NoError(t, err)
	require.Equal(t, first.Raw, got.Certificate[0])

	_, _, second := writeCert(t, dir, "second")
	later := time.Now().Add(time.Minute) // a distinct mtime whatever the file system's resolution
	require.NoError(t, os.Chtimes(certFile, later, later))
	require.NoError(t, os.Chtimes(keyFile, later, later))
	got, err = cf.get(nil)
	require.NoError(t, err)
	require.Equal(t, second.Raw, got.Certificate[0], "renewed")

	require.NoError(t, os.WriteFile(keyFile, []byte("half written"), 0o600))
	evenLater := later.Add(time.Minute)
	require.NoError(t, os.Chtimes(keyFile, evenLater, evenLater))
	got, err = cf.get(nil)
	require.NoError(t, err)
	require.Equal(t, second.Raw, got.Certificate[0], "a broken renewal keeps the old certificate")
}
