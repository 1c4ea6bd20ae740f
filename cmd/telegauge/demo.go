package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/telegauge/telegauge/simulators"
)

// runDemo runs n simulated devices against the embedded broker over real
// MQTT, so the demo exercises the same path as a real fleet. It returns when
// ctx ends.
func runDemo(ctx context.Context, n int, mqttAddr, prefix string, log *slog.Logger) error {
	_, err := simulators.RunDevices(ctx, simulators.DevicesConfig{
		Broker:   "tcp://" + mqttAddr,
		Devices:  n,
		Rate:     2,
		Jitter:   0.3,
		Ramp:     time.Duration(min(n, 50)) * 40 * time.Millisecond,
		Metrics:  4,
		Prefix:   prefix,
		IDPrefix: "demo-",
		Seed:     time.Now().UnixNano(),
	}, log.With("component", "demo"))
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("demo fleet: %w", err)
	}
	return nil
}
