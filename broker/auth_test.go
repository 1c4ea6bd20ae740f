package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/internal/ratelimit"
	"github.com/telegauge/telegauge/internal/secret"
)

// newAuthBroker runs a broker that demands credentials: device id -> token.
func newAuthBroker(t *testing.T, sink Sink, tokens map[string]string, tlsCfg *tls.Config, opts ...func(*Config)) (*Broker, *Credentials) {
	t.Helper()
	creds := NewCredentials()
	hashes := map[string]string{}
	for id, tok := range tokens {
		h, err := secret.Hash(tok)
		require.NoError(t, err)
		hashes[id] = h
	}
	creds.Set(hashes, true)
	cfg := Config{Addr: "127.0.0.1:0", Sink: sink, Credentials: creds, Registerer: prometheus.NewRegistry()}
	if tlsCfg != nil {
		cfg.TLSAddr, cfg.TLSConfig = "127.0.0.1:0", tlsCfg
	}
	for _, o := range opts {
		o(&cfg)
	}
	b, err := New(cfg, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	return b, creds
}

// dial connects a paho client as user/password; lost receives connection
// losses.
func dial(t *testing.T, url, user, password string, tc *tls.Config) (paho.Client, <-chan error, error) {
	t.Helper()
	lost := make(chan error, 1)
	o := paho.NewClientOptions().AddBroker(url).SetClientID("c-" + user + "-" + fmt.Sprint(time.Now().UnixNano())).
		SetUsername(user).SetPassword(password).SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(10*time.Second))
	if err := tok.Error(); err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { c.Disconnect(10) })
	return c, lost, nil
}

func TestAuthDevices(t *testing.T) {
	sink := &recordingSink{}
	b, creds := newAuthBroker(t, sink, map[string]string{"dev1": "tok1", "dev2": "tok2"}, nil)
	url := "tcp://" + b.Addr()

	for _, tc := range []struct{ name, user, password, reason string }{
		{"wrong token", "dev1", "tok2", "bad_token"},
		{"unknown device", "dev9", "tok1", "unknown_device"},
		{"anonymous", "", "", "anonymous"},
		{"bad name", "a/b", "tok1", "anonymous"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(b.auth.failures.WithLabelValues(tc.reason))
			_, _, err := dial(t, url, tc.user, tc.password, nil)
			require.Error(t, err)
			require.Equal(t, before+1, testutil.ToFloat64(b.auth.failures.WithLabelValues(tc.reason)))
		})
	}

	c1, lost1, err := dial(t, url, "dev1", "tok1", nil)
	require.NoError(t, err)
	publish(t, c1, "telemetry/dev1", 1, `{"t":1}`)
	publish(t, c1, "telemetry/dev1/t", 1, `2`)
	// Its own commands: allowed. Someone else's: refused (SUBACK failure).
	tok := c1.Subscribe("commands/dev1/#", 1, nil)
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	require.Equal(t, byte(1), tok.(*paho.SubscribeToken).Result()["commands/dev1/#"])
	tok = c1.Subscribe("commands/dev2/#", 1, nil)
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.Equal(t, byte(0x80), tok.(*paho.SubscribeToken).Result()["commands/dev2/#"])
	require.Equal(t, 1.0, testutil.ToFloat64(b.auth.denied.WithLabelValues("subscribe")))

	// Publishing for another device at QoS 0 is dropped and counted; the
	// device's own readings still flow.
	c2, lost2, err := dial(t, url, "dev2", "tok2", nil)
	require.NoError(t, err)
	publish(t, c2, "telemetry/dev1", 0, `{"t":666}`)
	publish(t, c2, "telemetry/dev2", 1, `{"t":3}`)
	require.Equal(t, []string{`telemetry/dev1 {"t":1}`, `telemetry/dev1/t 2`, `telemetry/dev2 {"t":3}`}, sink.got())
	require.Equal(t, 1.0, testutil.ToFloat64(b.auth.denied.WithLabelValues("publish")))
	// ... and at QoS 1 (MQTT 3.1.1 has no negative PUBACK) costs the
	// connection.
	c2.Publish("telemetry/dev1x", 1, false, `{"t":667}`)
	select {
	case <-lost2:
	case <-time.After(10 * time.Second):
		t.Fatal("a device publishing for another at QoS 1 stayed connected")
	}
	require.Equal(t, 2.0, testutil.ToFloat64(b.auth.denied.WithLabelValues("publish")))

	// Revoking dev1 disconnects it at once.
	hashes := map[string]string{}
	creds.mu.RLock()
	hashes["dev2"] = creds.tokens["dev2"]
	creds.mu.RUnlock()
	creds.Set(hashes, true)
	select {
	case <-lost1:
	case <-time.After(10 * time.Second):
		t.Fatal("revoked device still connected")
	}
	_, _, err = dial(t, url, "dev1", "tok1", nil)
	require.Error(t, err, "a revoked device cannot come back")
	require.Equal(t, []string{`telemetry/dev1 {"t":1}`, `telemetry/dev1/t 2`, `telemetry/dev2 {"t":3}`}, sink.got())
}

// TestAuthAnonymousUntilRequired: without credentials anyone may publish;
// once credentials are required, anonymous sessions are cut.
func TestAuthAnonymousUntilRequired(t *testing.T) {
	sink := &recordingSink{}
	creds := NewCredentials()
	b, err := New(Config{Addr: "127.0.0.1:0", Sink: sink, Credentials: creds}, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })

	c, lost, err := dial(t, "tcp://"+b.Addr(), "", "", nil)
	require.NoError(t, err)
	publish(t, c, "telemetry/anyone", 1, `1`)
	require.Equal(t, []string{"telemetry/anyone 1"}, sink.got())

	h, err := secret.Hash("tok")
	require.NoError(t, err)
	creds.Set(map[string]string{"dev1": h}, true)
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("anonymous session survived credentials becoming required")
	}
	_, _, err = dial(t, "tcp://"+b.Addr(), "", "", nil)
	require.Error(t, err)
}

// TestAuthClientCertificate: on the TLS listener a verified client
// certificate names the device; a username that disagrees is refused.
func TestAuthClientCertificate(t *testing.T) {
	ca, caKey := newCA(t)
	serverCert := issue(t, ca, caKey, "127.0.0.1", true)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	sink := &recordingSink{}
	b, _ := newAuthBroker(t, sink, map[string]string{"dev1": "tok1"}, &tls.Config{
		Certificates: []tls.Certificate{serverCert}, ClientCAs: pool,
		ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12,
	})
	url := "ssl://" + b.TLSAddr()
	devCert := issue(t, ca, caKey, "boiler-7", false)
	withCert := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{devCert}, MinVersion: tls.VersionTLS12}

	c, _, err := dial(t, url, "", "", withCert)
	require.NoError(t, err)
	publish(t, c, "telemetry/boiler-7", 1, `{"t":1}`)
	require.Equal(t, []string{`telemetry/boiler-7 {"t":1}`}, sink.got())

	_, _, err = dial(t, url, "dev1", "", withCert)
	require.Error(t, err, "username disagrees with the certificate")
	// Without a certificate, the token still works over TLS.
	c2, _, err := dial(t, url, "dev1", "tok1", &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	publish(t, c2, "telemetry/dev1", 1, `{"t":2}`)
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return cert, key
}

func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP(name)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestAuthFailuresRateLimited: past a burst of wrong tokens from one
// address, further tries are refused without checking (a good token too),
// until the bucket refills.
func TestAuthFailuresRateLimited(t *testing.T) {
	l := ratelimit.New(failBurst, failRefill, failMaxKeys)
	now := time.Unix(1_700_000_000, 0)
	allow := func(addr string, at time.Time) bool { ok, _, _ := l.Take(addr, at); return ok }
	for range failBurst {
		require.True(t, allow("10.0.0.1", now))
	}
	require.False(t, allow("10.0.0.1", now))
	require.True(t, allow("10.0.0.2", now), "other addresses are not affected")
	require.True(t, allow("10.0.0.1", now.Add(failRefill)), "one more try per refill")
	require.False(t, allow("10.0.0.1", now.Add(failRefill)))
}

// TestAuthRateLimitedOverMQTT: a real client guessing tokens gets cut off
// by reason rate_limited.
func TestAuthRateLimitedOverMQTT(t *testing.T) {
	// A still clock: however slow the dials (the race detector, a busy
	// machine), the bucket earns nothing back in between.
	at := time.Now()
	b, _ := newAuthBroker(t, &recordingSink{}, map[string]string{"dev1": "tok1"}, nil,
		func(c *Config) { c.Now = func() time.Time { return at } })
	url := "tcp://" + b.Addr()
	for range failBurst {
		_, _, err := dial(t, url, "dev1", "guess", nil)
		require.Error(t, err)
	}
	before := testutil.ToFloat64(b.auth.failures.WithLabelValues("rate_limited"))
	_, _, err := dial(t, url, "dev1", "tok1", nil)
	require.Error(t, err, "even the right token waits once the address is limited")
	require.Equal(t, before+1, testutil.ToFloat64(b.auth.failures.WithLabelValues("rate_limited")))
}
