package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/telegauge/telegauge/simulators"
)

// SimCmd groups the load simulators.
type SimCmd struct {
	Devices SimDevicesCmd `cmd:"" help:"Simulate a fleet of MQTT devices."`
	Viewers SimViewersCmd `cmd:"" help:"Simulate dashboard viewers on any live transport."`
}

// SimDevicesCmd is `telegauge sim devices`.
type SimDevicesCmd struct {
	Broker       string        `default:"tcp://127.0.0.1:1883" help:"MQTT broker URL (tcp://, ws://)."`
	Devices      int           `default:"10" help:"Devices, one MQTT connection each."`
	Rate         float64       `default:"1" help:"Messages per second per device (with --fast, 0 means as fast as possible)."`
	Duration     time.Duration `default:"0" help:"How long to run; 0 runs until interrupted."`
	Metrics      int           `default:"4" help:"Metrics per device."`
	Form         string        `enum:"object,metric,senml" default:"object" help:"Payload form: one JSON object per message, one publish per metric, or SenML."`
	QoS          byte          `name:"qos" default:"0" help:"MQTT QoS (0 or 1)."`
	Jitter       float64       `default:"0.1" help:"Share of each interval that varies at random."`
	Ramp         time.Duration `default:"1s" help:"Spread connection starts over this time."`
	IDPrefix     string        `default:"sim-" help:"Device ids are this prefix plus a number."`
	Prefix       string        `default:"telemetry" help:"Telemetry topic prefix."`
	Backfill     time.Duration `help:"First publish this much past history per device, with original timestamps (paho mode)."`
	BackfillStep time.Duration `default:"10s" help:"Spacing of backfilled readings."`
	Fast         bool          `help:"Use the built-in raw MQTT publisher instead of paho, for load beyond what paho can generate (object form, 2+ metrics, tcp:// only)."`
	JSON         bool          `name:"json" help:"Print the summary as JSON."`
}

// Run runs the fleet and prints a summary.
func (c *SimDevicesCmd) Run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := newLogger("warn", "text")
	if c.Fast {
		counters := &simulators.LoadCounters{}
		stopProgress := progress(func() string {
			s := counters.Snapshot()
			return fmt.Sprintf("sent %d msgs (%.0f/s), acked %d, errors %d", s.Messages, s.Rate, s.Acked, s.Errors)
		})
		st, err := simulators.RunLoad(ctx, simulators.LoadConfig{
			Addr: strings.TrimPrefix(c.Broker, "tcp://"), Connections: c.Devices, Rate: c.Rate * float64(c.Devices),
			Duration: c.Duration, QoS: c.QoS, Metrics: c.Metrics, Prefix: c.Prefix, IDPrefix: c.IDPrefix, Counters: counters,
		}, log)
		stopProgress()
		return report(c.JSON, st, st.Summary(), err)
	}
	counters := &simulators.DevicesCounters{}
	stopProgress := progress(func() string {
		s := counters.Snapshot()
		return fmt.Sprintf("sent %d msgs, %d readings, acked %d, errors %d", s.Messages, s.Readings, s.Acks, s.Errors)
	})
	st, err := simulators.RunDevices(ctx, simulators.DevicesConfig{
		Broker: c.Broker, Devices: c.Devices, Rate: c.Rate, Jitter: c.Jitter, Ramp: c.Ramp, Duration: c.Duration,
		Metrics: c.Metrics, Form: c.Form, QoS: c.QoS, Prefix: c.Prefix, IDPrefix: c.IDPrefix, Seed: time.Now().UnixNano(), Counters: counters,
		Backfill: c.Backfill, BackfillStep: c.BackfillStep,
	}, log)
	stopProgress()
	return report(c.JSON, st, st.Summary(), err)
}

// SimViewersCmd is `telegauge sim viewers`.
type SimViewersCmd struct {
	URL       string        `default:"http://127.0.0.1:8080" help:"Telegauge base URL."`
	Viewers   int           `default:"10" help:"Viewers to simulate."`
	Transport string        `enum:"ws,sse,longpoll,poll,mix" default:"ws" help:"Live transport."`
	Series    []string      `default:"#" help:"Series patterns to subscribe to."`
	Duration  time.Duration `default:"0" help:"How long to run; 0 runs until interrupted."`
	Ramp      time.Duration `default:"1s" help:"Spread connection starts over this time."`
	Rate      int           `default:"0" help:"Cap each viewer at this many frames per second (0: no cap)."`
	JSON      bool          `name:"json" help:"Print the summary as JSON."`
}

// Run runs the viewers and prints a summary.
func (c *SimViewersCmd) Run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	counters := &simulators.ViewersCounters{}
	stopProgress := progress(func() string {
		s := counters.Snapshot().Total
		return fmt.Sprintf("%d connected, %d points, %d gaps, %d duplicates, p99 %s", s.Connected, s.Points, s.Gaps, s.Duplicates, s.Latency.P99)
	})
	st, err := simulators.RunViewers(ctx, simulators.ViewersConfig{
		URL: c.URL, Viewers: c.Viewers, Transport: c.Transport, Series: c.Series, Duration: c.Duration,
		Ramp: c.Ramp, Rate: c.Rate, Counters: counters,
	}, newLogger("warn", "text"))
	stopProgress()
	return report(c.JSON, st, st.Summary(), err)
}

// progress prints a status line to stderr every second while a simulation
// runs, when stderr is a terminal. The returned func stops it.
func progress(line func() string) func() {
	if fi, err := os.Stderr.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return func() {}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(os.Stderr, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprintf(os.Stderr, "\r\033[K%s", line())
			}
		}
	}()
	return func() { close(done); <-stopped }
}

func report(asJSON bool, v any, summary string, err error) error {
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(v); jerr != nil {
			return jerr
		}
	} else {
		fmt.Print(summary)
	}
	return err
}
