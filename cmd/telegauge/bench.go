package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/telegauge/telegauge/simulators"
)

// BenchCmd is `telegauge bench`.
type BenchCmd struct {
	URL        string        `help:"Measure the server at this base URL instead of starting one (needs --mqtt)." placeholder:"URL"`
	MQTT       string        `name:"mqtt" help:"MQTT address (host:port) of the server given by --url." placeholder:"ADDR"`
	DebugURL   string        `name:"debug-url" help:"pprof base URL of the server given by --url (serve --debug-addr), for exact idle-memory figures." placeholder:"URL"`
	DB         string        `name:"db" help:"History of the server the benchmark starts: 'memory', a postgres:// URL, or empty for SQLite in a temporary directory."`
	ServerCPUs string        `name:"server-cpus" help:"Pin the server the benchmark starts to these CPUs (a taskset list such as 1); pin the load with taskset -c 0 telegauge bench." placeholder:"LIST"`
	Scenarios  []string      `help:"Scenarios or groups to run (ingest, latency, fanout, idle, flaky, or names such as fanout-5k); default all." placeholder:"NAME"`
	Duration   time.Duration `default:"10s" help:"Measured phase of each scenario."`
	Warmup     time.Duration `default:"2s" help:"Load before each measured phase."`
	Quick      bool          `help:"A small matrix that runs in about a minute: 100 devices, 1k msgs/s, 100-500 viewers, 3 s phases."`
	JSONOut    string        `name:"json" default:"bench.json" help:"Write the report as JSON here ('' for none)." placeholder:"FILE"`
	HTMLOut    string        `name:"html" default:"bench.html" help:"Write the report with latency and throughput plots here ('' for none)." placeholder:"FILE"`
	List       bool          `help:"List the scenarios and exit."`
	Nodes      int           `default:"1" help:"Start this many nodes (1-9): more than one makes a cluster over NATS (serve --nats, each node its own SQLite history), where the cluster scenarios (the default then) split their load over the nodes."`
	NATS       string        `name:"nats" help:"NATS server of the cluster --nodes starts; empty starts nats-server (from PATH) on a free loopback port, pinned like the nodes." placeholder:"URL"`
}

// Run runs the matrix and writes the report.
func (c *BenchCmd) Run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := newLogger("warn", "text")
	cfg := simulators.BenchConfig{
		Scenarios: c.Scenarios, Duration: c.Duration, Warmup: c.Warmup,
		Progress: func(s string) { fmt.Fprintln(os.Stderr, "==>", s) },
	}
	if c.Quick {
		cfg.Duration, cfg.Warmup = min(c.Duration, 3*time.Second), min(c.Warmup, time.Second)
		cfg.IngestDevices, cfg.LatencyRates, cfg.FanoutViewers, cfg.IdleViewers = 100, []float64{1000}, []int{100, 500}, 500
		cfg.FlakyDevices, cfg.FlakyViewers, cfg.Settle = 5, 8, 10*time.Second
		cfg.ClusterRate, cfg.ClusterViewers = 5000, 200
	}
	if c.Nodes < 1 || c.Nodes > 9 {
		return fmt.Errorf("--nodes %d: want 1 to 9", c.Nodes)
	}
	if c.Nodes > 1 && c.URL != "" {
		return errors.New("--nodes starts a cluster; it does not go with --url")
	}
	if c.List {
		// The matrix depends on the number of nodes, not where they are.
		list := cfg
		list.Nodes = make([]simulators.BenchNode, c.Nodes)
		for _, s := range simulators.BenchScenarios(list) {
			fmt.Println(s)
		}
		return nil
	}

	target := c.URL
	if c.URL == "" {
		pin := ""
		if c.ServerCPUs != "" {
			pin = "taskset -c " + c.ServerCPUs + " "
		}
		var extra []string
		var targets []string
		if c.Nodes > 1 {
			natsURL := c.NATS
			if natsURL == "" {
				ns, err := startBenchNATS(ctx, c.ServerCPUs)
				if err != nil {
					return err
				}
				defer ns.stop()
				natsURL = ns.url
				cfg.ExtraCPU = func() (float64, error) { return processCPUSeconds(ns.cmd.Process.Pid) }
				targets = append(targets, "started: "+pin+strings.Join(ns.args, " "))
			}
			extra = []string{"--nats", natsURL}
		}
		for i := range c.Nodes {
			args := extra
			if c.Nodes > 1 {
				args = append(append([]string(nil), extra...), "--node-id", fmt.Sprintf("node%d", i+1))
			}
			srv, err := startBenchServer(ctx, c.DB, c.ServerCPUs, args...)
			if err != nil {
				return err
			}
			defer srv.stop()
			cfg.Nodes = append(cfg.Nodes, simulators.BenchNode{URL: srv.url, MQTTAddr: srv.mqtt})
			if i == 0 {
				cfg.URL, cfg.MQTTAddr, cfg.DebugURL = srv.url, srv.mqtt, srv.debug
			}
			targets = append(targets, "started: "+pin+"telegauge "+strings.Join(srv.args, " "))
		}
		target = strings.Join(targets, "; ")
	} else {
		if c.MQTT == "" {
			return errors.New("--url needs --mqtt, the server's MQTT address")
		}
		cfg.URL, cfg.MQTTAddr, cfg.DebugURL = c.URL, c.MQTT, c.DebugURL
	}

	rep, err := simulators.RunBench(ctx, cfg, log)
	if rep == nil {
		return err
	}
	rep.Version, rep.Command, rep.Target = version, strings.Join(os.Args, " "), target
	fmt.Print(rep.Table())
	if werr := c.write(rep); werr != nil {
		return errors.Join(err, werr)
	}
	return err
}

// write saves the JSON and HTML reports.
func (c *BenchCmd) write(rep *simulators.BenchReport) error {
	if c.JSONOut != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return fmt.Errorf("encode report: %w", err)
		}
		if err := os.WriteFile(c.JSONOut, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		fmt.Fprintln(os.Stderr, "wrote", c.JSONOut)
	}
	if c.HTMLOut != "" {
		var buf bytes.Buffer
		if err := simulators.WriteBenchHTML(&buf, rep); err != nil {
			return fmt.Errorf("render report: %w", err)
		}
		if err := os.WriteFile(c.HTMLOut, buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		fmt.Fprintln(os.Stderr, "wrote", c.HTMLOut)
	}
	return nil
}

// benchServer is a `telegauge serve` the benchmark started.
type benchServer struct {
	cmd       *exec.Cmd
	dir       string
	url, mqtt string
	debug     string
	args      []string
	done      chan error
}

// startBenchServer starts this binary's serve on free loopback ports with
// its own data directory (and extra flags), as a separate process so that
// its CPU and memory are its own, and waits until it answers.
func startBenchServer(ctx context.Context, db, cpus string, extra ...string) (*benchServer, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own binary: %w", err)
	}
	dir, err := os.MkdirTemp("", "telegauge-bench-")
	if err != nil {
		return nil, fmt.Errorf("make data directory: %w", err)
	}
	httpAddr, err := simulators.FreeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	mqttAddr, err := simulators.FreeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	debugAddr, err := simulators.FreeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	// No per-device rate limit: the ingest scenarios measure the server's
	// ceiling with each device publishing as fast as it can (1,000 devices,
	// each far over the default 1,000 readings/s), which the limit would
	// slow down to the rate and so measure the limit instead.
	args := []string{"serve", "--http-addr", httpAddr, "--mqtt-addr", mqttAddr, "--debug-addr", debugAddr, "--data-dir", dir, "--log-level", "warn",
		"--max-rate-per-device=-1"}
	if db != "" {
		args = append(args, "--db", db)
	}
	args = append(args, extra...)
	name, argv, err := pinned(cpus, self, args)
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, fmt.Errorf("create server log: %w", err)
	}
	cmd := exec.Command(name, argv...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start server: %w", err)
	}
	s := &benchServer{cmd: cmd, dir: dir, url: "http://" + httpAddr, mqtt: mqttAddr, debug: "http://" + debugAddr, args: args, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait(); logFile.Close() }()
	fmt.Fprintf(os.Stderr, "==> server pid %d on %s (MQTT %s), data in %s\n", cmd.Process.Pid, s.url, mqttAddr, dir)

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.url + "/metrics")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case werr := <-s.done:
			s.done <- werr
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			return nil, fmt.Errorf("server exited: %v\n%s", werr, log)
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, errors.New("server did not answer within 30 s")
		}
	}
}

// stop ends the server (SIGTERM, then SIGKILL after 20 s) and removes its
// data directory.
func (s *benchServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	_ = os.RemoveAll(s.dir)
}

// pinned returns the command line that runs name with args on cpus (a
// taskset list; empty means anywhere).
func pinned(cpus, name string, args []string) (string, []string, error) {
	if cpus == "" {
		return name, args, nil
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return "", nil, fmt.Errorf("--server-cpus needs taskset: %w", err)
	}
	return taskset, append([]string{"-c", cpus, name}, args...), nil
}

// benchNATS is a nats-server the benchmark started for its cluster.
type benchNATS struct {
	cmd  *exec.Cmd
	url  string
	args []string
	done chan error
}

// startBenchNATS starts nats-server (the Debian package's binary, or any
// on PATH: it is a separate program, not linked into telegauge) on a free
// loopback port, pinned to cpus like the nodes, and waits until it takes
// connections.
func startBenchNATS(ctx context.Context, cpus string) (*benchNATS, error) {
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		return nil, fmt.Errorf("--nodes needs nats-server on PATH (apt-get install nats-server) or --nats URL: %w", err)
	}
	addr, err := simulators.FreeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	host, port, _ := strings.Cut(addr, ":")
	args := []string{"nats-server", "-a", host, "-p", port}
	name, argv, err := pinned(cpus, bin, args[1:])
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, argv...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	ns := &benchNATS{cmd: cmd, url: "nats://" + addr, args: args, done: make(chan error, 1)}
	go func() { ns.done <- cmd.Wait() }()
	fmt.Fprintf(os.Stderr, "==> nats-server pid %d on %s\n", cmd.Process.Pid, ns.url)
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return ns, nil
		}
		select {
		case werr := <-ns.done:
			ns.done <- werr
			return nil, fmt.Errorf("nats-server exited: %v", werr)
		case <-ctx.Done():
			ns.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			ns.stop()
			return nil, errors.New("nats-server did not take connections within 10 s")
		}
	}
}

// stop ends nats-server by its PID (SIGTERM, then SIGKILL after 10 s).
func (ns *benchNATS) stop() {
	_ = ns.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ns.done:
	case <-time.After(10 * time.Second):
		_ = ns.cmd.Process.Kill()
		<-ns.done
	}
}

// processCPUSeconds is the user and system CPU time a process has used,
// from /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s, the
// USER_HZ every Linux architecture telegauge runs on uses).
func processCPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read process CPU: %w", err)
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("read process CPU: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("read process CPU: short stat")
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("read process CPU: %w", err)
	}
	return (utime + stime) / 100, nil
}
