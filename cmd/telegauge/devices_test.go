//go:build integration

package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
)

// dialDevice connects a paho client with credentials; lost is told when the
// connection drops.
func dialDevice(t *testing.T, url, user, password string) (mqtt.Client, <-chan struct{}, error) {
	t.Helper()
	lost := make(chan struct{}, 1)
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("t-" + user + time.Now().Format("150405.000000")).
		SetUsername(user).SetPassword(password).SetProtocolVersion(4).SetAutoReconnect(false).
		SetConnectionLostHandler(func(mqtt.Client, error) { lost <- struct{}{} }))
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(10*time.Second))
	if err := tok.Error(); err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { c.Disconnect(10) })
	return c, lost, nil
}

func waitLost(t *testing.T, lost <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: still connected", what)
	}
}

// TestDeviceCredentials: `telegauge devices add` beside a running server
// turns authentication on at once (anonymous sessions are cut), a device
// with its token publishes, a wrong token is refused, and `devices revoke`
// disconnects the device at once and keeps it out.
func TestDeviceCredentials(t *testing.T) {
	dir := t.TempDir()
	n := mustRunMain(t, "--data-dir="+dir)
	flags := RecordsFlags{DataDir: dir}
	ctx := context.Background()

	anon, anonLost, err := dialDevice(t, n.mqttURL, "", "")
	require.NoError(t, err, "anonymous while no credentials exist")
	publish(t, anon, "telemetry/anon-1", 1, `{"t":1}`)

	token, err := addDevice(ctx, flags, "boiler-1")
	require.NoError(t, err)
	waitLost(t, anonLost, "anonymous session after the first credential")
	_, _, err = dialDevice(t, n.mqttURL, "", "")
	require.Error(t, err, "anonymous refused once credentials exist")
	_, _, err = dialDevice(t, n.mqttURL, "boiler-1", token+"x")
	require.Error(t, err, "wrong token")

	c, lost, err := dialDevice(t, n.mqttURL, "boiler-1", token)
	require.NoError(t, err)
	publish(t, c, "telemetry/boiler-1", 1, `{"t":21.5}`)
	eventually(t, 10*time.Second, func() error {
		return deviceKnown(n, "boiler-1")
	})

	require.NoError(t, revokeDevice(ctx, flags, "boiler-1"))
	waitLost(t, lost, "revoked device")
	_, _, err = dialDevice(t, n.mqttURL, "boiler-1", token)
	require.Error(t, err, "a revoked token stays out")
	require.ErrorContains(t, revokeDevice(ctx, flags, "boiler-1"), "holds no credential")
}

// deviceKnown checks that the server has accepted readings of device id
// (read from the aggregator: with credentials on record, the HTTP API
// wants a login).
func deviceKnown(n *testNode, id string) error {
	for _, d := range n.agg.Devices() {
		if d.ID == id && len(d.Metrics) > 0 {
			return nil
		}
	}
	return fmt.Errorf("no readings of device %s", id)
}

// TestDemoWithCredentials: the demo fleet keeps publishing on a server that
// requires credentials (it holds in-process ones).
func TestDemoWithCredentials(t *testing.T) {
	dir := t.TempDir()
	_, err := addDevice(context.Background(), RecordsFlags{DataDir: dir}, "boiler-1")
	require.NoError(t, err)
	n := mustRunMain(t, "--data-dir="+dir, "--demo=2")
	require.True(t, n.creds.Required())
	eventually(t, 15*time.Second, func() error {
		if err := deviceKnown(n, "demo-0000"); err != nil {
			return err
		}
		return deviceKnown(n, "demo-0001")
	})
	_, _, err = dialDevice(t, n.mqttURL, "demo-0000", "guess")
	require.Error(t, err, "the demo's credential is not guessable")
}
