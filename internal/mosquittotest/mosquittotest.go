// Package mosquittotest runs a real Mosquitto broker (Debian's package
// `mosquitto`) for tests, on a free loopback port with a generated
// configuration, and stops it, by its process id, when the test ends.
package mosquittotest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/telegauge/telegauge/internal/testutil"
)

// Env names the variable holding the mosquitto binary. .ci/run installs
// the package and exports it, so in CI a missing broker fails the tests
// instead of skipping them.
const Env = "TELEGAUGE_TEST_MOSQUITTO"

// Server is a running Mosquitto.
type Server struct {
	// Addr is its listener, 127.0.0.1:PORT.
	Addr string

	cmd  *exec.Cmd
	out  *testutil.LogBuffer
	done chan struct{}
	once sync.Once
}

// URL is the broker's tcp:// URL.
func (s *Server) URL() string { return "tcp://" + s.Addr }

// Binary returns the mosquitto binary, or "" if there is none.
func Binary() string {
	if b := os.Getenv(Env); b != "" {
		return b
	}
	if b, err := exec.LookPath("mosquitto"); err == nil {
		return b
	}
	for _, b := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if _, err := os.Stat(b); err == nil {
			return b
		}
	}
	return ""
}

// Start runs a Mosquitto for the test: anonymous clients on a free
// loopback port, no persistence, offline queues large enough for tests
// (extra are further configuration lines). It skips the test when the
// binary is missing outside CI, and fails it in CI.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("mosquitto is not installed (CI must install it: .ci/run)")
		}
		t.Skipf("mosquitto is not installed (apt-get install mosquitto, or set %s); skipping the external broker test", Env)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s=%s: %v", Env, bin, err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	var b bytes.Buffer
	fmt.Fprintf(&b, "listener %d 127.0.0.1\n", port)
	b.WriteString("allow_anonymous true\npersistence false\n")
	// Queues of offline persistent sessions: Mosquitto's default, 1,000
	// messages, would drop a restarting node's share in a long test.
	b.WriteString("max_queued_messages 1000000\n")
	b.WriteString("log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n")
	for _, line := range extra {
		b.WriteString(line + "\n")
	}
	if err := os.WriteFile(conf, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), out: new(testutil.LogBuffer), done: make(chan struct{})}
	s.cmd = exec.Command(bin, "-c", conf)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("mosquitto output:\n%s", s.out.String())
		}
	})
	err = testutil.Poll(10*time.Second, func() error {
		select {
		case <-s.done:
			return fmt.Errorf("mosquitto exited: %s", s.out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		t.Fatalf("mosquitto did not start: %v", err)
	}
	return s
}

// Stop ends the broker by its process id (SIGTERM, then SIGKILL) and waits
// for it. It is idempotent.
func (s *Server) Stop() {
	s.once.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		select {
		case <-s.done:
		case <-ctx.Done():
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
}

// Output is what the broker logged so far.
func (s *Server) Output() string { return s.out.String() }
