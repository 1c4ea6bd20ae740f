package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
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
	Broker       string        `default:"tcp://127.0.0.1:1883" help:"MQTT broker URL (tcp://, ssl://, ws://, wss://)."`
	Devices      int           `help:"Devices, one MQTT connection each (default 10, or one per line of --credentials)." placeholder:"N"`
	Rate         float64       `default:"1" help:"Messages per second per device (with --fast, 0 means as fast as possible)."`
	Duration     time.Duration `default:"0" help:"How long to run; 0 runs until interrupted."`
	Metrics      int           `default:"4" help:"Metrics per device."`
	Pattern      string        `enum:"mixed,sine,walk,steps,spikes,noise" default:"mixed" help:"Values of every metric: mixed (temperature sine, humidity walk, valve steps, vibration spikes, then noise) or one kind for all."`
	Form         string        `enum:"object,metric,senml" default:"object" help:"Payload form: one JSON object per message, one publish per metric, or SenML."`
	QoS          byte          `name:"qos" default:"0" help:"MQTT QoS (0 or 1)."`
	Jitter       float64       `default:"0.1" help:"Share of each interval that varies at random."`
	Ramp         time.Duration `default:"1s" help:"Spread connection starts over this time."`
	IDPrefix     string        `default:"sim-" help:"Device ids are this prefix plus a number."`
	Prefix       string        `default:"telemetry" help:"Telemetry topic prefix."`
	Credentials  string        `help:"File of device credentials, one 'ID TOKEN' per line (ids replace --id-prefix)." placeholder:"FILE" type:"existingfile"`
	Password     string        `help:"Password pattern for every device, {id} and {i} replaced (username: the device id)." placeholder:"PATTERN"`
	CAFile       string        `name:"ca-file" help:"PEM CA certificates to trust for ssl:// and wss:// brokers." placeholder:"FILE" type:"existingfile"`
	Insecure     bool          `help:"Skip TLS certificate verification (test brokers only)."`
	Backfill     time.Duration `help:"First publish this much past history per device, with original timestamps (paho mode)."`
	BackfillStep time.Duration `default:"10s" help:"Spacing of backfilled readings."`
	Buffer       int           `help:"Messages each device buffers while offline and sends on reconnect with their original timestamps (default 10000 with flaky faults, else 0)." placeholder:"N"`
	Disconnect   time.Duration `name:"disconnect-every" help:"Flaky link: mean time between abrupt disconnects per device (tcp:// and ssl:// only)." placeholder:"D"`
	StallEvery   time.Duration `help:"Flaky link: mean time between silent network stalls per device." placeholder:"D"`
	StallFor     time.Duration `default:"5s" help:"How long a stall lasts."`
	BadShare     float64       `help:"Share (0..1) of messages replaced by malformed payloads." placeholder:"SHARE"`
	Fast         bool          `help:"Use the built-in raw MQTT publisher instead of paho, for load beyond what paho can generate (object form, 2+ metrics, tcp:// only)."`
	JSON         bool          `name:"json" help:"Print the summary as JSON."`
}

// Run runs the fleet and prints a summary.
func (c *SimDevicesCmd) Run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := newLogger("warn", "text")
	cfg, err := c.devicesConfig()
	if err != nil {
		return err
	}
	if c.Fast {
		if c.Disconnect > 0 || c.StallEvery > 0 || cfg.BadShare > 0 || cfg.TLS != nil || cfg.Buffer > 0 || cfg.Backfill > 0 || len(cfg.IDs) > 0 || !strings.HasPrefix(c.Broker, "tcp://") {
			return errors.New("--fast publishes well-formed readings over plain tcp:// only: drop the flaky, bad-payload, TLS, buffer, backfill and credentials-file flags, or --fast")
		}
		counters := &simulators.LoadCounters{}
		stopProgress := progress(func() string {
			s := counters.Snapshot()
			return fmt.Sprintf("sent %d msgs (%.0f/s), acks %d, errors %d", s.Messages, s.MessagesPerSecond, s.Acks, s.Errors)
		})
		st, err := simulators.RunLoad(ctx, simulators.LoadConfig{
			Addr: strings.TrimPrefix(c.Broker, "tcp://"), Connections: cfg.Devices, Rate: c.Rate * float64(cfg.Devices),
			Duration: c.Duration, QoS: c.QoS, Metrics: c.Metrics, Prefix: c.Prefix, IDPrefix: c.IDPrefix,
			Credentials: cfg.Credentials, Counters: counters,
		}, log)
		stopProgress()
		return report(c.JSON, st, st.Summary(), err)
	}
	counters := &simulators.DevicesCounters{}
	cfg.Counters = counters
	stopProgress := progress(func() string {
		s := counters.Snapshot()
		line := fmt.Sprintf("%d connected, sent %d msgs (%.0f/s), %d readings, acks %d, errors %d",
			s.Connected, s.Messages, s.MessagesPerSecond, s.Readings, s.Acks, s.Errors)
		if s.Disconnects+s.Stalls+s.Bad > 0 {
			line += fmt.Sprintf(", %d disconnects, %d stalls, %d buffered, %d malformed", s.Disconnects, s.Stalls, s.Buffered, s.Bad)
		}
		return line
	})
	st, err := simulators.RunDevices(ctx, cfg, log)
	stopProgress()
	return report(c.JSON, st, st.Summary(), err)
}

// devicesConfig turns the flags into a simulators.DevicesConfig.
func (c *SimDevicesCmd) devicesConfig() (simulators.DevicesConfig, error) {
	cfg := simulators.DevicesConfig{
		Broker: c.Broker, Devices: c.Devices, Rate: c.Rate, Jitter: c.Jitter, Ramp: c.Ramp, Duration: c.Duration,
		Metrics: c.Metrics, Pattern: c.Pattern, Form: c.Form, QoS: c.QoS, Prefix: c.Prefix, IDPrefix: c.IDPrefix,
		Seed: time.Now().UnixNano(), Backfill: c.Backfill, BackfillStep: c.BackfillStep, Buffer: c.Buffer,
		Flaky:    simulators.DeviceFlaky{DisconnectEvery: c.Disconnect, StallEvery: c.StallEvery, StallFor: c.StallFor},
		BadShare: c.BadShare,
	}
	if c.Credentials != "" {
		creds, err := simulators.ReadCredentialsFile(c.Credentials)
		if err != nil {
			return cfg, err
		}
		for _, cr := range creds {
			cfg.IDs = append(cfg.IDs, cr.ID)
		}
		cfg.Credentials = func(i int) (string, string) { return creds[i].ID, creds[i].Token }
	} else if cfg.Devices <= 0 {
		cfg.Devices = 10
	}
	if c.Credentials == "" && c.Password != "" {
		n := cfg.Devices
		cfg.Credentials = simulators.PatternPassword(c.Password, func(i int) string { return simulators.DeviceID(c.IDPrefix, i, n) })
	}
	if c.CAFile != "" || c.Insecure {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.Insecure} //nolint:gosec // asked for by --insecure
		if c.CAFile != "" {
			pool, err := readCertPool("CA file", c.CAFile)
			if err != nil {
				return cfg, err
			}
			tc.RootCAs = pool
		}
		cfg.TLS = tc
	}
	return cfg, nil
}

// SimViewersCmd is `telegauge sim viewers`.
type SimViewersCmd struct {
	URL       string        `default:"http://127.0.0.1:8080" help:"Telegauge base URL."`
	Viewers   int           `default:"10" help:"Viewers to simulate."`
	Transport string        `enum:"ws,sse,longpoll,poll,mix" default:"ws" help:"Live transport: ws, sse, longpoll, poll, or mix (the four in turn)."`
	Series    []string      `default:"#" help:"Series patterns to subscribe to."`
	Duration  time.Duration `default:"0" help:"How long to run; 0 runs until interrupted."`
	Ramp      time.Duration `default:"1s" help:"Spread connection starts over this time."`
	Rate      int           `default:"0" help:"Cap each viewer at this many frames per second (0: no cap)."`
	// Flaky mode: the viewer side of a bad mobile link.
	DisconnectEvery time.Duration `name:"disconnect-every" help:"Flaky mode: mean time between abrupt disconnects per viewer (TCP reset, then resume from the cursor); 0: never." placeholder:"D"`
	StallEvery      time.Duration `help:"Flaky mode: mean time between stalls per viewer, in which it stops reading its stream; 0: never." placeholder:"D"`
	StallFor        time.Duration `default:"1s" help:"How long a stall lasts."`
	Expect          int64         `help:"Points each viewer should receive; when set, report whether every point arrived exactly once and fail if not." placeholder:"N"`
	JSON            bool          `name:"json" help:"Print the summary as JSON."`
}

// Run runs the viewers and prints a summary.
func (c *SimViewersCmd) Run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	counters := &simulators.ViewersCounters{}
	stopProgress := progress(func() string {
		s := counters.Snapshot().Total
		line := fmt.Sprintf("%d connected, %d points, %d gaps, %d duplicates, p99 %s", s.Connected, s.Points, s.Gaps, s.Duplicates, s.Latency.P99)
		if s.Disconnects+s.Stalls > 0 {
			line += fmt.Sprintf(", %d disconnects, %d stalls, %d reconnects", s.Disconnects, s.Stalls, s.Reconnects)
		}
		return line
	})
	st, err := simulators.RunViewers(ctx, simulators.ViewersConfig{
		URL: c.URL, Viewers: c.Viewers, Transport: c.Transport, Series: c.Series, Duration: c.Duration,
		Ramp: c.Ramp, Rate: c.Rate, Counters: counters,
		Flaky: simulators.ViewerFlaky{DisconnectEvery: c.DisconnectEvery, StallEvery: c.StallEvery, StallFor: c.StallFor},
	}, newLogger("warn", "text"))
	stopProgress()
	summary := st.Summary()
	if c.Expect > 0 {
		t := st.Total
		if st.ExactlyOnce(c.Expect) {
			summary += "exactly once: yes\n"
		} else {
			summary += "exactly once: no\n"
			if err == nil {
				err = fmt.Errorf("exactly once: no: want %d distinct points per viewer, got %d to %d, with %d duplicates, %d gaps, %d resets",
					c.Expect, t.UniqueMin, t.UniqueMax, t.Duplicates, t.Gaps, t.Resets)
			}
		}
	}
	return report(c.JSON, st, summary, err)
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
