// Package natstest runs a real NATS server in-process for tests, on a
// free loopback port, which a test can stop and start again on the same
// port to play an outage.
package natstest

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is an in-process NATS server.
type Server struct {
	t    testing.TB
	port int
	s    *server.Server
}

// Run starts a NATS server on a free loopback port, stopped when the test
// ends.
func Run(t testing.TB) *Server {
	t.Helper()
	ns := &Server{t: t, port: -1}
	ns.Start()
	t.Cleanup(ns.Stop)
	return ns
}

// URL is the server's nats:// URL; it stays the same across Stop and Start.
func (ns *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", ns.port) }

// Start starts the server (again, on the same port).
func (ns *Server) Start() {
	ns.t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: ns.port, NoLog: true, NoSigs: true}
	s, err := server.NewServer(opts)
	if err != nil {
		ns.t.Fatalf("nats server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		ns.t.Fatalf("nats server not ready")
	}
	ns.s = s
	ns.port = s.Addr().(*net.TCPAddr).Port
}

// Stop shuts the server down and waits until it has; clients see the
// connection drop. It is idempotent.
func (ns *Server) Stop() {
	if ns.s == nil {
		return
	}
	ns.s.Shutdown()
	ns.s.WaitForShutdown()
	ns.s = nil
}
