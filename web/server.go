package web

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/telegauge/telegauge/dashboard"
	"github.com/telegauge/telegauge/ingest"
	"github.com/telegauge/telegauge/internal/connlimit"
	"github.com/telegauge/telegauge/internal/ratelimit"
)

// DeviceLister lists devices for the API; the aggregator is one.
type DeviceLister interface {
	Devices() []ingest.DeviceInfo
}

// Config configures a Server. Zero values mean the documented defaults.
type Config struct {
	// Addr is the HTTP listener. Empty means 127.0.0.1:8080.
	Addr string `yaml:"http-addr"`
	// Origins lists the Origins allowed to open a WebSocket
	// ("https://ops.example.com"); "*" allows any. Empty means same origin
	// only (the Origin's host equals the Host header).
	Origins []string `yaml:"origins"`
	// SSERetry is the reconnection delay hinted to SSE clients. Zero means
	// 2 s.
	SSERetry time.Duration `yaml:"sse-retry"`
	// WriteTimeout bounds each write to a live client; a client that cannot
	// take a batch in this time is disconnected. Zero means 10 s.
	WriteTimeout time.Duration `yaml:"write-timeout"`
	// ReadTimeout bounds reading one request (line, headers and body) and
	// the wait for a new connection's first byte, so that a slow or silent
	// client (slow loris) is cut off. Live streams are not affected: their
	// request is read before they start. Zero means 10 s.
	ReadTimeout time.Duration `yaml:"read-timeout"`
	// IdleTimeout is how long a keep-alive connection may wait for its
	// next request. Behind a load balancer that reuses connections it
	// should exceed the balancer's own idle timeout. Zero means 2 minutes.
	IdleTimeout time.Duration `yaml:"idle-timeout"`
	// PollWait is the default long-poll wait; MaxPollWait caps it. Zero
	// means 25 s, and 60 s or two heartbeat intervals if that is less: below
	// common proxy idle timeouts, and a vanished poller's request is freed
	// within two intervals, as a stream's is.
	PollWait    time.Duration `yaml:"poll-wait"`
	MaxPollWait time.Duration `yaml:"max-poll-wait"`
	// WSReadLimitBytes caps one WebSocket message from a client. Zero means
	// 64 KiB.
	WSReadLimitBytes int64 `yaml:"ws-read-limit-bytes"`
	// WSCompression offers permessage-deflate to WebSocket clients. It is
	// on unless DisableWSCompression is set.
	DisableWSCompression bool `yaml:"disable-ws-compression"`

	Hub     *dashboard.Hub     `yaml:"-"` // required
	Querier *dashboard.Querier `yaml:"-"` // required
	Devices DeviceLister       `yaml:"-"` // required
	// Transports lists the live transports served, of "ws", "sse",
	// "longpoll" (which also serves short polls); empty means all. A
	// disabled one answers 404, which clients take as a cue to fall back
	// (an operator may turn off what a proxy in front breaks).
	Transports []string `yaml:"transports"`
	// ExportPageBuckets is how many buckets of one series an export reads
	// per query: exports stream page by page, so a month at 1 s never sits
	// in memory. Zero means 10,000.
	ExportPageBuckets int `yaml:"export-page-buckets"`
	// Boards keeps saved dashboards; nil means in memory.
	Boards dashboard.BoardStore `yaml:"-"`
	// Admin manages device credentials and operators for the admin API
	// (handler_admin.go); nil means there is no database to keep them in,
	// and the admin API answers 501.
	Admin AdminStore `yaml:"-"`
	// Ready reports whether the node can serve (for /readyz); nil means
	// always ready.
	Ready func() error `yaml:"-"`
	// ReadyInfo adds fields to /readyz's body that do not make the node
	// unready, such as a cluster link that is down while the node still
	// serves its own devices ({"cluster": "nats unreachable since ..."}).
	// May be nil.
	ReadyInfo func() map[string]string `yaml:"-"`
	// Gatherer serves /metrics; nil means no metrics endpoint.
	Gatherer prometheus.Gatherer `yaml:"-"`
	// Registerer receives the web tier's metrics; nil means none.
	Registerer prometheus.Registerer `yaml:"-"`

	// Access says who may use the API (auth.go); SetAccess replaces it.
	// The zero value lets everyone in anonymously.
	Access Access `yaml:"-"`
	// Auth tunes sessions and login limits.
	Auth AuthConfig `yaml:"auth"`
	// TLS, when set, makes the listener speak HTTPS (and adds HSTS and
	// Secure cookies).
	TLS *tls.Config `yaml:"-"`
	// MaxConnsPerIP bounds the open connections from one client address
	// (IPv6: per /64); loopback and trusted proxies are not counted. Zero
	// means 256; negative, no limit.
	MaxConnsPerIP int `yaml:"max-conns-per-ip"`
	// TrustedProxies are the addresses and CIDR prefixes of reverse
	// proxies whose X-Forwarded-For names the client (for login limits and
	// logs). Empty: the peer's address is the client's.
	TrustedProxies []string `yaml:"trusted-proxies"`
}

// Server is the HTTP side of Telegauge: the API, the live transports and the
// embedded dashboard.
type Server struct {
	cfg      Config
	log      *slog.Logger
	app      *fiber.App
	ln       net.Listener
	metrics  *webMetrics
	closing  atomic.Bool
	upgrader wsUpgrader
	proxies  proxies        // trusted to name the client (clientip.go)
	streams  sync.WaitGroup // SSE and WebSocket connection goroutines
	auth     *auth
	csp      string // the Content-Security-Policy header (headers.go)
	// adminMu serializes operator changes, so that the last-admin check
	// and the change it allows are one step (in this process; `telegauge
	// users` beside it is not covered). It is held across the AdminStore
	// calls on purpose, guards no memory, and may be held while the store
	// takes auth.mu (SetAccess), never the other way round.
	adminMu sync.Mutex
}

// defaultMaxConnsPerIP is Config.MaxConnsPerIP's default: a browser holds
// at most six connections to a host, so this is some forty browsers
// behind one address (an office's NAT).
const defaultMaxConnsPerIP = 256

// New builds the app and binds its listener; Run serves it.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if cfg.Hub == nil || cfg.Querier == nil || cfg.Devices == nil {
		return nil, errors.New("web: Config needs Hub, Querier and Devices")
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	if cfg.SSERetry <= 0 {
		cfg.SSERetry = 2 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.PollWait <= 0 {
		cfg.PollWait = 25 * time.Second
	}
	if cfg.MaxPollWait <= 0 {
		cfg.MaxPollWait = min(60*time.Second, 2*cfg.Hub.Heartbeat())
	}
	cfg.PollWait = min(cfg.PollWait, cfg.MaxPollWait)
	for _, t := range cfg.Transports {
		if !slices.Contains([]string{"ws", "sse", "longpoll"}, t) {
			return nil, fmt.Errorf("web: unknown transport %q (want ws, sse or longpoll)", t)
		}
	}
	if cfg.ExportPageBuckets <= 0 {
		cfg.ExportPageBuckets = 10_000
	}
	if cfg.Boards == nil {
		cfg.Boards = dashboard.NewMemoryBoards()
	}
	if cfg.WSReadLimitBytes <= 0 {
		cfg.WSReadLimitBytes = 64 << 10
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log.With("component", "web")}
	s.metrics = newWebMetrics()
	var err error
	if s.proxies, err = parseProxies(cfg.TrustedProxies); err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	s.auth = newAuth(cfg.Auth, cfg.Access, cfg.TLS != nil, s.proxies, cfg.Hub, s.log)
	s.metrics.collectors = append(s.metrics.collectors, s.auth.met.collectors()...)
	s.csp = contentPolicy()
	if cfg.Registerer != nil {
		if err := s.metrics.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("web: register metrics: %w", err)
		}
	}
	s.upgrader = newWSUpgrader(cfg)
	s.app = fiber.New(fiber.Config{
		AppName:               "telegauge",
		DisableStartupMessage: true,
		ErrorHandler:          s.handleError,
		// Requests are small; a slow sender is cut off. Live streams are
		// hijacked or long-polled and manage their own deadlines.
		ReadTimeout:    cfg.ReadTimeout,
		IdleTimeout:    cfg.IdleTimeout,
		ReadBufferSize: 8 << 10,
		BodyLimit:      1 << 20,
		// Return read and write buffers to their pools between requests.
		// A hijacked live connection (SSE, WebSocket) then keeps no
		// request buffer for its whole life: 8 KiB per idle viewer.
		ReduceMemoryUsage: true,
	})
	// Live connections are hijacked and served on goroutines of our own
	// (streams), which close them; fasthttp must not close them when the
	// hijack handler returns.
	s.app.Server().KeepHijackedConns = true
	s.routes()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("web: listen on %s: %w", cfg.Addr, err)
	}
	tl := timeoutListener{Listener: ln, userTimeout: 2 * cfg.Hub.Heartbeat(), firstByte: cfg.ReadTimeout}
	if cfg.MaxConnsPerIP >= 0 {
		tl.conns = connlimit.New(cmp.Or(cfg.MaxConnsPerIP, defaultMaxConnsPerIP), func(a netip.Addr) bool {
			return a.IsLoopback() || s.proxies.trusted(a)
		})
		logs := ratelimit.New(1, time.Minute, 10_000) // a line per address a minute
		tl.refused = func(key netip.Addr) {
			s.metrics.connsRefused.Inc()
			if ok, _, _ := logs.Take(key.String(), time.Now()); ok {
				s.log.Warn("HTTP connection refused: too many from one address", "address", key.String(), "limit", tl.conns.Max())
			}
		}
	}
	s.ln = tl
	if cfg.TLS != nil {
		s.ln = tls.NewListener(s.ln, cfg.TLS)
	}
	return s, nil
}

func (s *Server) routes() {
	s.app.Use(s.securityHeaders)
	s.app.Get("/healthz", s.handleHealth)
	s.app.Get("/readyz", s.handleReady)
	if s.cfg.Gatherer != nil {
		// Metrics name devices and count everything: an operator's
		// credentials are needed when auth is on (Prometheus sends a
		// bearer token with `authorization: {credentials: ...}`).
		s.app.Get("/metrics", s.requireAuth, adaptor.HTTPHandler(promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{})))
	}
	api := s.app.Group("/api/v1")
	s.routesAuth(api) // login, logout; authentication for everything below
	api.Get("/devices", s.handleDevices)
	api.Get("/query", s.handleQuery)
	api.Get("/export", s.handleExport)
	api.Get("/stream", s.transport("sse", s.handleSSE))
	api.Get("/ws", s.transport("ws", s.handleWS))
	api.Get("/poll", s.transport("longpoll", s.handlePoll))
	api.Get("/dashboards", s.handleBoardsList)
	api.Post("/dashboards", s.needRole(RoleAdmin), s.handleBoardCreate)
	api.Get("/dashboards/:id", s.handleBoardGet)
	api.Put("/dashboards/:id", s.needRole(RoleAdmin), s.handleBoardPut)
	api.Delete("/dashboards/:id", s.needRole(RoleAdmin), s.handleBoardDelete)
	s.routesAdmin(api) // handler_admin.go
	api.Use(func(c *fiber.Ctx) error {
		return dashboard.Errorf(dashboard.CodeNotFound, "no such endpoint: %s %s", c.Method(), c.Path())
	})
	s.routesUI()
}

// transport serves h only if the named transport is enabled.
func (s *Server) transport(name string, h fiber.Handler) fiber.Handler {
	if len(s.cfg.Transports) == 0 || slices.Contains(s.cfg.Transports, name) {
		return h
	}
	return func(*fiber.Ctx) error {
		return dashboard.Errorf(dashboard.CodeNotFound, "the %s transport is disabled on this server", name)
	}
}

// SetAccess replaces who may use the API. Whoever lost access (a removed
// user, a re-issued token, anonymous viewers once access is required) loses
// it at once: their sessions end and their live streams are closed. With a
// session store, sessions it no longer holds (ended by another server)
// end too. Safe for concurrent use.
func (s *Server) SetAccess(a Access) {
	s.auth.set(a)
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := s.auth.syncSessions(ctx); err != nil {
		s.log.Warn("cannot check sessions against the store; will at the next change", "err", err)
	}
}

// Addr returns the address the listener is bound to.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends, then shuts down: live viewers are ended first
// (each told why), then the app, under one deadline of shutdownTimeout.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.app.Listener(s.ln) }()
	s.log.Info("HTTP listening", "addr", s.Addr())
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("web: serve: %w", err)
		}
		return nil // Shutdown was called directly
	case <-ctx.Done():
	}
	err := s.Shutdown(context.WithoutCancel(ctx))
	if serr := <-errc; serr != nil {
		err = errors.Join(err, fmt.Errorf("web: serve: %w", serr))
	}
	return err
}

// shutdownTimeout bounds Shutdown.
const shutdownTimeout = 10 * time.Second

// Shutdown ends every live viewer, then stops the app. Fiber waits for open
// connections and would wait forever on a stream (gofiber/fiber#1225), so
// the hub ends the streams first. It is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.closing.Swap(true) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, shutdownTimeout)
	defer cancel()
	herr := s.cfg.Hub.Close(ctx)
	// The hub has ended every viewer; wait (boundedly) for their
	// connections to finish writing the final events and close.
	streamsDone := make(chan struct{})
	go func() {
		s.streams.Wait()
		close(streamsDone)
	}()
	select {
	case <-streamsDone:
	case <-ctx.Done():
		herr = errors.Join(herr, fmt.Errorf("web: live connections still open: %w", ctx.Err()))
	}
	remaining := shutdownTimeout
	if dl, ok := ctx.Deadline(); ok {
		remaining = max(time.Until(dl), 100*time.Millisecond)
	}
	aerr := s.app.ShutdownWithTimeout(remaining)
	return errors.Join(herr, aerr)
}

// handleError maps errors to statuses and a JSON body: dashboard.Error by
// its code, fiber.Error by its status, anything else is a logged 500.
func (s *Server) handleError(c *fiber.Ctx, err error) error {
	status, msg := fiber.StatusInternalServerError, "internal error"
	var fe *fiber.Error
	switch {
	case errors.As(err, &fe):
		status, msg = fe.Code, fe.Message
	case dashboard.ErrorCode(err) != dashboard.CodeInternal:
		status, msg = statusOf[dashboard.ErrorCode(err)], err.Error()
	default:
		s.log.Error("request failed", "method", c.Method(), "path", c.Path(), "remote", s.proxies.clientIP(c), "err", err)
	}
	return c.Status(status).JSON(fiber.Map{"error": msg})
}

// statusOf maps error codes to HTTP statuses (STYLE.md: one map, in web).
var statusOf = map[dashboard.Code]int{
	dashboard.CodeInvalid:     fiber.StatusBadRequest,
	dashboard.CodeNotFound:    fiber.StatusNotFound,
	dashboard.CodeTooLarge:    fiber.StatusRequestEntityTooLarge,
	dashboard.CodeTooMany:     fiber.StatusTooManyRequests,
	dashboard.CodeUnavailable: fiber.StatusServiceUnavailable,
	dashboard.CodeInternal:    fiber.StatusInternalServerError,
}

func (s *Server) handleHealth(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"status": "ok"})
}

func (s *Server) handleReady(c *fiber.Ctx) error {
	if s.closing.Load() {
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "shutting down"})
	}
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "not ready", "error": err.Error()})
		}
	}
	body := fiber.Map{"status": "ready"}
	if s.cfg.ReadyInfo != nil {
		for k, v := range s.cfg.ReadyInfo() {
			if k != "status" {
				body[k] = v
			}
		}
	}
	return c.JSON(body)
}
