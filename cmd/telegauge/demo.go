package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/telegauge/telegauge/broker"
	"github.com/telegauge/telegauge/internal/secret"
	"github.com/telegauge/telegauge/simulators"
)

// demoPrefix starts the demo devices' ids.
const demoPrefix = "demo-"

// runDemo runs n simulated devices against the embedded broker over real
// MQTT, so the demo exercises the same path as a real fleet. It returns when
// ctx ends.
//
// The demo devices hold credentials of their own, known only to this
// process (one token for the fleet, hashed once), so that they keep
// publishing when credentials are required.
func runDemo(ctx context.Context, n int, mqttAddr, prefix string, creds *broker.Credentials, log *slog.Logger) error {
	token, err := secret.NewToken()
	if err != nil {
		return err
	}
	hash, err := secret.Hash(token)
	if err != nil {
		return err
	}
	for i := range n {
		creds.AddInternal(simulators.DeviceID(demoPrefix, i, n), hash)
	}
	_, err = simulators.RunDevices(ctx, simulators.DevicesConfig{
		Credentials: func(i int) (string, string) { return simulators.DeviceID(demoPrefix, i, n), token },
		Broker:      "tcp://" + mqttAddr,
		Devices:     n,
		Rate:        2,
		Jitter:      0.3,
		Ramp:        time.Duration(min(n, 50)) * 40 * time.Millisecond,
		Metrics:     4,
		Prefix:      prefix,
		IDPrefix:    demoPrefix,
		Seed:        time.Now().UnixNano(),
	}, log.With("component", "demo"))
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("demo fleet: %w", err)
	}
	return nil
}
