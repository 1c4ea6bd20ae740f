package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/telegauge/telegauge/broker"
	"github.com/telegauge/telegauge/dashboard"
	"github.com/telegauge/telegauge/ingest"
	"github.com/telegauge/telegauge/ingest/bus"
	"github.com/telegauge/telegauge/ingest/store"
	"github.com/telegauge/telegauge/web"
)

// ServeCmd runs one node: broker, ingest and web.
type ServeCmd struct {
	Config     kong.ConfigFlag `help:"YAML config file; every flag is a key there (http-addr: 0.0.0.0:8080)." placeholder:"FILE"`
	HTTPAddr   string          `name:"http-addr" default:"127.0.0.1:8080" help:"HTTP listener: dashboard, API and live streams."`
	MQTTAddr   string          `name:"mqtt-addr" default:"127.0.0.1:1883" help:"MQTT listener for devices."`
	MQTTWSAddr string          `name:"mqtt-ws-addr" help:"MQTT over WebSocket listener for devices (off when empty)."`
	// Device TLS (serve_devices.go).
	MQTTTLSAddr     string        `name:"mqtt-tls-addr" help:"MQTT over TLS listener for devices, e.g. 0.0.0.0:8883 (off when empty)." placeholder:"ADDR"`
	MQTTTLSCert     string        `name:"mqtt-tls-cert" help:"PEM certificate (chain) of the MQTT TLS listener." placeholder:"FILE"`
	MQTTTLSKey      string        `name:"mqtt-tls-key" help:"PEM private key of the MQTT TLS listener." placeholder:"FILE"`
	MQTTTLSClientCA string        `name:"mqtt-tls-client-ca" help:"PEM CA whose client certificates authenticate devices on the TLS listener (device id = the certificate's common name)." placeholder:"FILE"`
	Heartbeat       time.Duration `default:"15s" help:"Live-stream heartbeat interval."`
	Auth            string        `enum:"auto,required" default:"auto" help:"auto: anonymous devices while the MQTT listeners are on loopback and no device has a token, anonymous viewers while the HTTP listener is on loopback and no user exists; required: always demand credentials."`
	Demo            int           `help:"Also run N simulated devices in-process." placeholder:"N"`

	DataDir string `default:"./data" help:"Where the SQLite history database lives (telegauge.db)."`
	DB      string `name:"db" help:"Keep history in PostgreSQL instead (postgres://user:pass@host/db), or 'memory' for none that survives a restart."`

	Prefix             string        `default:"telemetry" help:"First MQTT topic level of telemetry."`
	LateWindow         time.Duration `default:"24h" help:"Oldest reading time accepted, relative to now."`
	MaxSeriesPerDevice int           `default:"1000" help:"Series one device may create."`
	// Device limits (broker/limits.go, ingest/limits.go).
	MaxRatePerDevice   float64       `default:"1000" help:"Readings per second one device may send; a device over it is slowed (its connection is not read until it is back within the rate), nothing is dropped (negative: no limit)."`
	MaxBurstPerDevice  int           `default:"0" help:"Readings a device that has been quiet may send at once before it is slowed, e.g. replaying its offline buffer (0: ten seconds' worth of --max-rate-per-device)."`
	MQTTMaxPacketBytes int           `name:"mqtt-max-packet-bytes" default:"262144" help:"Largest MQTT packet; a client sending a larger one is disconnected."`
	MQTTMaxInflight    int           `name:"mqtt-max-inflight" default:"128" help:"QoS 1/2 window per MQTT client, each way: unreleased QoS 2 publishes it may have (one more disconnects it), messages stored for it (more are dropped)."`
	MQTTMaxConnsPerIP  int           `name:"mqtt-max-conns-per-ip" default:"100" help:"MQTT connections per IP address (IPv6: per /64); loopback is not counted (negative: no limit)."`
	MQTTMaxKeepAlive   time.Duration `name:"mqtt-max-keepalive" default:"20m" help:"Longest MQTT keep-alive; a client asking for none or more gets this, and is cut after 1.5 times it in silence."`
	// Slow and silent clients (broker/listener_timeout.go, web/listener.go).
	MQTTConnectTimeout time.Duration `name:"mqtt-connect-timeout" default:"10s" help:"Time a new MQTT connection has to send CONNECT, TLS handshake included; then it is closed."`
	HTTPIdleTimeout    time.Duration `name:"http-idle-timeout" default:"2m" help:"Time an idle keep-alive HTTP connection is kept; above a load balancer's own idle timeout when behind one."`
	HTTPMaxConnsPerIP  int           `name:"http-max-conns-per-ip" default:"256" help:"HTTP connections per client address (IPv6: per /64); loopback and --trusted-proxies are not counted (negative: no limit)."`
	FlushInterval      time.Duration `default:"1s" help:"How often rollups are flushed to history."`
	Retention1s        time.Duration `name:"retention-1s" env:"TELEGAUGE_RETENTION_1S" default:"24h" help:"How long 1-second rollups are kept."`
	Retention1m        time.Duration `name:"retention-1m" env:"TELEGAUGE_RETENTION_1M" default:"720h" help:"How long 1-minute rollups are kept."`
	Retention1h        time.Duration `name:"retention-1h" env:"TELEGAUGE_RETENTION_1H" default:"17520h" help:"How long 1-hour rollups are kept."`
	ResumeWindow       time.Duration `default:"5m" help:"How far back a live client can resume from its cursor."`
	ViewerQueueBytes   int           `default:"4194304" help:"Bytes queued per live viewer before a slow one is skipped ahead (gap event), then disconnected." placeholder:"BYTES"`
	Origins            []string      `help:"Origins allowed to open WebSockets, such as https://ops.example.com (default: same origin only)."`
	TrustedProxies     []string      `help:"Reverse proxies (addresses or CIDR prefixes, such as 127.0.0.1 or 10.0.0.0/8) trusted to name the client in X-Forwarded-For, for login limits and logs (default: none, the peer is the client)."`
	Transports         []string      `enum:"ws,sse,longpoll" default:"ws,sse,longpoll" help:"Live transports to serve (longpoll also serves short polls); turn off one a proxy in front breaks."`
	// HTTPS on the HTTP listener: --tls-cert, --tls-key (serve_web_auth.go).
	WebTLSFlags `embed:""`
	// External broker mode: --mqtt-upstream URL ... (serve_upstream.go).
	UpstreamFlags `embed:""`
	// Cluster mode: --nats, --node-id (serve_cluster.go).
	ClusterFlags `embed:""`

	DebugAddr string `help:"Serve Go's pprof profiles on this address (loopback only; off when empty)." placeholder:"ADDR"`
	LogLevel  string `enum:"debug,info,warn,error" default:"info" help:"Log level."`
	LogFormat string `enum:"text,json" default:"text" help:"Log format."`
}

// shutdownDeadline bounds the whole orderly shutdown.
const shutdownDeadline = 10 * time.Second

// Run starts the node and blocks until SIGINT or SIGTERM, then stops it in
// order: web (live viewers are told first), the broker, then ingest drains
// its queue and flushes.
func (c *ServeCmd) Run() error {
	log := newLogger(c.LogLevel, c.LogFormat)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	n, err := c.build(log)
	if err != nil {
		return err
	}
	return n.run(ctx, log)
}

// checkAuth applies protected mode (DESIGN.md §5): a listener off
// loopback needs credentials for who comes through it; --auth required
// needs a database to hold them.
func (c *ServeCmd) checkAuth(n credentialCounts) error {
	if c.DebugAddr != "" && !isLoopback(c.DebugAddr) {
		return fmt.Errorf("--debug-addr %s must be a loopback address: profiles expose internals", c.DebugAddr)
	}
	if c.Auth == "required" && c.DB == "memory" {
		return errors.New("--auth required needs credentials, and --db memory keeps none: use the SQLite data directory or PostgreSQL")
	}
	for _, l := range []struct{ flag, addr string }{{"--mqtt-addr", c.MQTTAddr}, {"--mqtt-ws-addr", c.MQTTWSAddr}, {"--mqtt-tls-addr", c.MQTTTLSAddr}} {
		if l.addr != "" && !isLoopback(l.addr) && n.devices == 0 && c.MQTTTLSClientCA == "" {
			return fmt.Errorf("%s %s is not a loopback address and no device credentials exist: anonymous devices are only allowed on loopback. "+
				"Add credentials with `telegauge devices add ID` (same --data-dir/--db), or bind to 127.0.0.1", l.flag, l.addr)
		}
	}
	if !isLoopback(c.HTTPAddr) && n.users == 0 {
		return fmt.Errorf("--http-addr %s is not a loopback address and no users exist: anonymous viewers are only allowed on loopback. "+
			"Add one with `telegauge users add NAME --role admin` (same --data-dir/--db), or bind to 127.0.0.1 behind a reverse proxy", c.HTTPAddr)
	}
	return nil
}

// isLoopback reports whether a listen address only accepts local
// connections. An empty host or 0.0.0.0 listens everywhere.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// history is the store as the node runs it.
type history interface {
	store.Store
	Run(ctx context.Context) error
}

// node is a wired server.
type node struct {
	cfg    *ServeCmd
	reg    *prometheus.Registry
	store  history
	sql    *store.SQL // the same store when it is a database; nil in memory
	agg    *ingest.Aggregator
	hub    *dashboard.Hub
	broker *broker.Broker
	// upstream replaces broker in external broker mode (serve_upstream.go).
	upstream *broker.Upstream
	web      *web.Server
	creds    *broker.Credentials
	bus      *bus.Bus // cluster mode; nil without --nats (serve_cluster.go)
	// applied is the credentials version the server has applied
	// (serve_devices.go).
	applied credsApplied
}

func (c *ServeCmd) build(log *slog.Logger) (*node, error) {
	n := &node{cfg: c, reg: prometheus.NewRegistry()}
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	clock := clockwork.NewRealClock()
	retention := store.Retention{c.Retention1s, c.Retention1m, c.Retention1h}
	var err error
	switch {
	case c.DB == "memory":
		if n.store, err = store.NewMemory(store.MemoryConfig{Retention: retention, Clock: clock}, log); err != nil {
			return nil, fmt.Errorf("open history: %w", err)
		}
	default:
		url := c.DB
		if url == "" {
			url = filepath.Join(c.DataDir, "telegauge.db")
		}
		if n.sql, err = store.Open(context.Background(), store.SQLConfig{URL: url, Retention: retention, Clock: clock, Registerer: n.reg}, log); err != nil {
			return nil, fmt.Errorf("open history: %w", err)
		}
		n.store = n.sql
	}
	// The credentials are read once here, for protected mode, the broker
	// and the web tier; watchCredentials reloads them (serve_devices.go).
	credsVersion, recs, err := n.startCredentials(context.Background())
	if err != nil {
		_ = n.store.Close()
		return nil, fmt.Errorf("load credentials: %w", err)
	}
	if err := c.checkAuth(recs.counts()); err != nil {
		_ = n.store.Close()
		return nil, err
	}
	tlsCfg, err := c.mqttTLS()
	if err != nil {
		_ = n.store.Close()
		return nil, err
	}
	n.creds = broker.NewCredentials()
	n.creds.Set(recs.tokens, c.devicesRequired(recs.counts()))
	n.applied.set(credsVersion)
	if n.agg, err = ingest.New(ingest.Config{
		Decode:             ingest.DecodeConfig{Prefix: c.Prefix, LateWindow: c.LateWindow},
		MaxSeriesPerDevice: c.MaxSeriesPerDevice,
		MaxRatePerDevice:   c.MaxRatePerDevice,
		MaxBurstPerDevice:  c.MaxBurstPerDevice,
		FlushInterval:      c.FlushInterval,
		Store:              n.store,
		Notify:             func() { n.hub.Wake() },
		Clock:              clock,
		Registerer:         n.reg,
	}, log); err != nil {
		return nil, err
	}
	if n.hub, err = dashboard.NewHub(dashboard.HubConfig{
		ResumeWindow:     c.ResumeWindow,
		Heartbeat:        c.Heartbeat,
		ViewerQueueBytes: c.ViewerQueueBytes,
		Source:           n.liveSource(), // the aggregator, teed to the cluster (serve_cluster.go)
		Clock:            clock,
		Registerer:       n.reg,
	}, log); err != nil {
		return nil, err
	}
	if err := n.buildBus(log); err != nil {
		_ = n.store.Close()
		return nil, err
	}
	if n.sql != nil {
		if err := n.restore(log); err != nil {
			_ = n.store.Close()
			return nil, err
		}
	}
	querier, err := dashboard.NewQuerier(dashboard.QueryConfig{
		Source:    n.agg,
		History:   n.store,
		Retention: retention,
		Clock:     clock,
	}, log)
	if err != nil {
		return nil, err
	}
	if c.MQTTUpstream != "" {
		// External broker mode (serve_upstream.go): no embedded listeners.
		if n.upstream, err = n.newUpstream(log); err != nil {
			_ = n.store.Close()
			return nil, err
		}
	} else if n.broker, err = broker.New(broker.Config{
		Addr:        c.MQTTAddr,
		WSAddr:      c.MQTTWSAddr,
		TLSAddr:     c.MQTTTLSAddr,
		TLSConfig:   tlsCfg,
		Credentials: n.creds,
		Prefix:      c.Prefix,
		Sink:        n.agg,
		// Limits (broker/limits.go).
		MaxPacketBytes: c.MQTTMaxPacketBytes,
		MaxInflight:    c.MQTTMaxInflight,
		MaxConnsPerIP:  c.MQTTMaxConnsPerIP,
		MaxKeepAlive:   c.MQTTMaxKeepAlive,
		ConnectTimeout: c.MQTTConnectTimeout,
		OnPresence:     n.onPresence, // cluster-wide with --nats (serve_cluster.go)
		Registerer:     n.reg,
	}, log); err != nil {
		return nil, err
	}
	var boards dashboard.BoardStore
	if n.sql != nil {
		boards = dashboard.NewDBBoards(n.sql)
	}
	// Operators and HTTPS (serve_web_auth.go).
	access, webTLS, err := c.webSecurity(recs.users, log)
	if err != nil {
		n.closeMQTT()
		return nil, err
	}
	// Sessions are kept in the database, so that a restart (or another
	// node on a shared PostgreSQL) keeps operators logged in.
	var sessions web.SessionStore
	if n.sql != nil {
		sessions = n.sql
	}
	if n.web, err = web.New(web.Config{
		Auth:           web.AuthConfig{Store: sessions},
		Addr:           c.HTTPAddr,
		Origins:        c.Origins,
		TrustedProxies: c.TrustedProxies,
		Transports:     c.Transports,
		Hub:            n.hub,
		Querier:        querier,
		Devices:        n.agg,
		Boards:         boards,
		Gatherer:       n.reg,
		Registerer:     n.reg,
		Access:         access,            // serve_web_auth.go
		Admin:          n.adminStore(log), // serve_admin.go
		TLS:            webTLS,
		ReadyInfo:      n.readyInfo, // the cluster link (serve_cluster.go)

		IdleTimeout:   c.HTTPIdleTimeout, // ReadTimeout keeps web's default
		MaxConnsPerIP: c.HTTPMaxConnsPerIP,
		Ready:         n.mqttReady, // serve_upstream.go
	}, log); err != nil {
		n.closeMQTT()
		return nil, err
	}
	return n, nil
}

// run serves until ctx ends or a component fails, then shuts down in order
// under one deadline.
func (n *node) run(ctx context.Context, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Each stage has its own context so that shutdown can go in order even
	// though every component runs from the start.
	brokerCtx, stopBroker := context.WithCancel(context.Background())
	ingestCtx, stopIngest := context.WithCancel(context.Background())
	backCtx, stopBack := context.WithCancel(context.Background())
	defer stopBroker()
	defer stopIngest()
	defer stopBack()

	var front, brk, ing, back errgroup.Group
	failed := func(name string, err error) error {
		if err != nil {
			log.Error("component failed", "component", name, "err", err)
			cancel()
		}
		return err
	}
	back.Go(func() error { return failed("hub", n.hub.Run(backCtx)) })
	back.Go(func() error { return failed("store", n.store.Run(backCtx)) })
	if n.bus != nil {
		back.Go(func() error { return failed("cluster", n.bus.Run(backCtx)) })
	}
	if n.sql != nil {
		back.Go(func() error { return n.saveDevices(backCtx, log) })
		back.Go(func() error { return n.watchCredentials(backCtx, log) }) // devices and users
	}
	ing.Go(func() error { return failed("ingest", n.agg.Run(ingestCtx)) })
	brk.Go(func() error { return failed("broker", n.runMQTT(brokerCtx)) })
	front.Go(func() error { return failed("web", n.web.Run(ctx)) })
	if n.cfg.DebugAddr != "" {
		front.Go(func() error { return failed("debug", serveDebug(ctx, n.cfg.DebugAddr, log)) })
	}
	if n.cfg.Demo > 0 {
		front.Go(func() error { return runDemo(ctx, n.cfg.Demo, n.broker.Addr(), n.cfg.Prefix, n.creds, log) })
	}
	log.Info("telegauge serving", "dashboard", n.dashboardURL(), "mqtt", n.mqttAddr(), "demo", n.cfg.Demo)

	<-ctx.Done()
	log.Info("shutting down")
	done := make(chan error, 1)
	go func() {
		errs := []error{front.Wait()} // web ended its viewers and stopped; demo devices disconnected
		// Let go of the devices held for going over their rate: the broker
		// waits for publishes inside ingest before it returns.
		n.agg.StopThrottling()
		stopBroker()
		errs = append(errs, brk.Wait())
		stopIngest() // drain the queue and flush, now that nothing more can arrive
		errs = append(errs, ing.Wait())
		stopBack()
		errs = append(errs, back.Wait(), n.store.Close())
		done <- errors.Join(errs...)
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
		log.Info("stopped")
		return nil
	case <-time.After(shutdownDeadline):
		return fmt.Errorf("shutdown: not finished after %s", shutdownDeadline)
	}
}

// restore has the aggregator know again the devices and series a previous
// run stored, so that they are listed and queryable at once.
func (n *node) restore(log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	series, err := n.sql.SeriesNames(ctx)
	if err != nil {
		return fmt.Errorf("read stored series: %w", err)
	}
	recs, err := n.sql.Devices(ctx)
	if err != nil {
		return fmt.Errorf("read stored devices: %w", err)
	}
	devs := make([]ingest.RestoredDevice, len(recs))
	for i, r := range recs {
		devs[i] = ingest.RestoredDevice{ID: r.ID, FirstSeenMs: r.FirstSeenMs, LastSeenMs: r.LastSeenMs}
	}
	restored := n.agg.Restore(devs, series)
	log.Info("history restored", "devices", len(devs), "series", restored)
	return nil
}

// devicesSaveInterval is how often device activity (first and last seen) is
// written to the database; a last save happens at shutdown.
const devicesSaveInterval = 10 * time.Second

// saveDevices writes the first and last seen times of the devices seen
// since the last save to the database every devicesSaveInterval, and once
// more when ctx ends.
func (n *node) saveDevices(ctx context.Context, log *slog.Logger) error {
	saved := make(map[string]int64) // last seen time in the database, by device
	save := func(ctx context.Context) {
		var recs []store.DeviceRecord
		for _, d := range n.agg.Devices() {
			if last, ok := saved[d.ID]; ok && last == d.LastSeenMs {
				continue // an idle device: nothing new to write
			}
			recs = append(recs, store.DeviceRecord{ID: d.ID, FirstSeenMs: d.FirstSeenMs, LastSeenMs: d.LastSeenMs})
		}
		if len(recs) == 0 {
			return
		}
		if err := n.sql.SaveDevices(ctx, recs); err != nil {
			log.Warn("saving devices failed; will retry", "err", err)
			return
		}
		for _, r := range recs {
			saved[r.ID] = r.LastSeenMs
		}
	}
	t := time.NewTicker(devicesSaveInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			save(ctx)
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			save(sctx)
			cancel()
			return nil
		}
	}
}

func newLogger(level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
