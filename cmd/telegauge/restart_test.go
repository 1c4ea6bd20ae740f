//go:build integration

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/internal/pgtest"
)

// builtBinary builds the telegauge binary once per test run.
var builtBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "telegauge-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "telegauge")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// process is telegauge serve running as a child process.
type process struct {
	cmd  *exec.Cmd
	http string
	mqtt string
	done chan error
}

// startProcess runs `telegauge serve` with a data directory and waits
// until it serves.
func startProcess(t *testing.T, args ...string) *process {
	t.Helper()
	bin, err := builtBinary()
	require.NoError(t, err)
	cmd := exec.Command(bin, append([]string{"serve", "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &process{cmd: cmd, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec struct{ Msg, Dashboard, MQTT string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "telegauge serving" {
				p.http, p.mqtt = rec.Dashboard, rec.MQTT
				close(ready)
			}
			if testing.Verbose() {
				t.Log(sc.Text())
			}
		}
		p.done <- cmd.Wait()
	}()
	select {
	case <-ready:
	case err := <-p.done:
		t.Fatalf("server exited before serving: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server did not start")
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	return p
}

// stop sends sig and waits for the exit.
func (p *process) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig))
	select {
	case err := <-p.done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("server did not exit")
		return nil
	}
}

// storedCount sums the 1s-tier counts of a series over the buckets that
// hold [from, to): the query answers buckets that start in its range, so
// from is floored to the bucket holding it.
func storedCount(t *testing.T, base, series string, fromMs, toMs int64) int64 {
	t.Helper()
	return stepCount(t, base, series, "1s", fromMs-fromMs%1000, toMs)
}

// stepCount sums the counts of a series' buckets of step that start in
// [from, to).
func stepCount(t *testing.T, base, series, step string, fromMs, toMs int64) int64 {
	t.Helper()
	var q queryAnswer
	u := fmt.Sprintf("%s/api/v1/query?series=%s&from=%d&to=%d&step=%s&maxPoints=20000", base, series, fromMs, toMs, step)
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&q))
	require.Len(t, q.Series, 1, "answer: %+v", q)
	var n int64
	for _, c := range q.Series[0].Count {
		n += c
	}
	return n
}

// sentReading is one reading a steadyPublisher published: the point, when
// the publish began, and whether the broker acknowledged it.
type sentReading struct {
	p     point
	at    time.Time
	acked bool
}

// steadyPublisher publishes one reading of a series every interval at
// QoS 1 until halted or the broker goes away. Each reading has its own
// time (strictly increasing) and value (its sequence number), so a
// viewer's points can be matched one by one.
type steadyPublisher struct {
	mu   sync.Mutex // guards sent
	sent []sentReading
	stop chan struct{}
	done chan struct{}
}

func publishSteadily(t *testing.T, broker, series string, every time.Duration) *steadyPublisher {
	t.Helper()
	dev, _, _ := strings.Cut(series, "/")
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + broker).SetClientID("steady-" + dev).SetAutoReconnect(false))
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	sp := &steadyPublisher{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(sp.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		var lastMs int64
		for k := 0; ; k++ {
			select {
			case <-sp.stop:
				return
			case <-tick.C:
			}
			at := time.Now()
			tMs := max(at.UnixMilli(), lastMs+1)
			lastMs = tMs
			r := sentReading{p: point{S: series, T: tMs, V: float64(k)}, at: at}
			sp.mu.Lock()
			sp.sent = append(sp.sent, r)
			i := len(sp.sent) - 1
			sp.mu.Unlock()
			tok := c.Publish("telemetry/"+series, 1, false, fmt.Sprintf(`{"ts":%d,"value":%d}`, tMs, k))
			if !tok.WaitTimeout(2*time.Second) || tok.Error() != nil {
				return // the broker went away: this reading may or may not have been taken
			}
			sp.mu.Lock()
			sp.sent[i].acked = true
			sp.mu.Unlock()
		}
	}()
	t.Cleanup(func() { sp.halt(); c.Disconnect(10) })
	return sp
}

// sentAfter counts the readings whose publish began after at.
func (sp *steadyPublisher) sentAfter(at time.Time) int {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	n := 0
	for _, r := range sp.sent {
		if r.at.After(at) {
			n++
		}
	}
	return n
}

// halt stops publishing and returns every reading published.
func (sp *steadyPublisher) halt() []sentReading {
	select {
	case <-sp.stop:
	default:
		close(sp.stop)
	}
	<-sp.done
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return append([]sentReading(nil), sp.sent...)
}

// ackedTimes are the times of the readings the broker acknowledged.
func ackedTimes(sent []sentReading) []int64 {
	var out []int64
	for _, r := range sent {
		if r.acked {
			out = append(out, r.p.T)
		}
	}
	return out
}

// TestRestartKeepsHistory: readings, SIGTERM (exit 0), restart on the same
// data directory: every acknowledged reading is there, and the device and
// its series are known again.
func TestRestartKeepsHistory(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testRestartKeepsHistory(t, "--data-dir", t.TempDir()) })
	t.Run("postgres", func(t *testing.T) { testRestartKeepsHistory(t, "--db", pgtest.URL(t)) })
}

func testRestartKeepsHistory(t *testing.T, db ...string) {
	p := startProcess(t, db...)
	sp := publishSteadily(t, p.mqtt, "keep/temp", 10*time.Millisecond)
	time.Sleep(1500 * time.Millisecond) // the run being stopped
	acked := ackedTimes(sp.halt())
	require.NotEmpty(t, acked)
	require.NoError(t, p.stop(t, syscall.SIGTERM), "a graceful stop exits 0")

	q := startProcess(t, db...)
	from, to := acked[0], acked[len(acked)-1]+1
	require.Equal(t, int64(len(acked)), storedCount(t, q.http, "keep/temp", from, to), "every acknowledged reading survives a graceful stop")
	var devs struct {
		Devices []struct {
			ID      string
			Online  bool
			Metrics []string
		}
	}
	resp, err := http.Get(q.http + "/api/v1/devices")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&devs))
	require.Len(t, devs.Devices, 1)
	require.Equal(t, "keep", devs.Devices[0].ID)
	require.False(t, devs.Devices[0].Online)
	require.Equal(t, []string{"temp"}, devs.Devices[0].Metrics)
	require.NoError(t, q.stop(t, syscall.SIGTERM))
}

// TestCrashLosesAtMostTheFlushInterval: readings at a steady rate, kill -9,
// restart: what is missing is at most the last flush interval's readings,
// counted exactly; and the server starts cleanly.
func TestCrashLosesAtMostTheFlushInterval(t *testing.T) {
	dir := t.TempDir()
	const every = 10 * time.Millisecond // 100 readings/s
	p := startProcess(t, "--data-dir", dir, "--flush-interval", "1s")
	sp := publishSteadily(t, p.mqtt, "crash/temp", every)
	time.Sleep(3500 * time.Millisecond)
	_ = p.stop(t, syscall.SIGKILL)
	acked := ackedTimes(sp.halt())
	require.Greater(t, len(acked), 200)

	q := startProcess(t, "--data-dir", dir, "--flush-interval", "1s")
	from, to := acked[0], acked[len(acked)-1]+1
	stored := storedCount(t, q.http, "crash/temp", from, to)
	lost := int64(len(acked)) - stored
	t.Logf("kill -9 after %d acknowledged readings at 100/s: %d stored, %d lost (%.0f ms of readings)", len(acked), stored, lost, float64(lost)*float64(every/time.Millisecond))
	require.GreaterOrEqual(t, lost, int64(0), "nothing stored that was not sent")
	// The flush interval's worth, plus one interval of slack for the flush in
	// progress when the process died.
	require.LessOrEqual(t, lost, int64(2*time.Second/every), "loss bounded by the flush interval")
	// What survived is a prefix: the lost readings are the newest.
	require.Equal(t, stored, storedCount(t, q.http, "crash/temp", from, acked[stored-1]+1), "the survivors are the oldest readings")
	// The minute and hour tiers, whose deltas were partly in memory when
	// the process died, were recomputed: they hold the same readings.
	hour := from - from%3_600_000
	all := func(step string) int64 {
		return stepCount(t, q.http, "crash/temp", step, hour, time.Now().Add(time.Minute).UnixMilli())
	}
	secs := all("1s")
	require.Equal(t, secs, all("1m"), "per-minute buckets hold every stored reading once")
	require.Equal(t, secs, all("1h"), "per-hour buckets hold every stored reading once")
	require.NoError(t, q.stop(t, syscall.SIGTERM))
}

// TestRestartKeepsLogins: a browser's login outlives a graceful restart
// (sessions are in the database), and on a shared PostgreSQL every server
// honours it; a logout on one ends it on the others within their
// credentials poll.
func TestRestartKeepsLogins(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		dir := t.TempDir()
		testRestartKeepsLogins(t, RecordsFlags{DataDir: dir}, "--data-dir", dir)
	})
	t.Run("postgres", func(t *testing.T) {
		u := pgtest.URL(t)
		testRestartKeepsLogins(t, RecordsFlags{DB: u}, "--db", u)
	})
}

func testRestartKeepsLogins(t *testing.T, records RecordsFlags, db ...string) {
	token, _, err := addUser(t.Context(), records, "ann", "admin")
	require.NoError(t, err)
	p := startProcess(t, db...)
	// The cookie is what a browser sends from then on (cookies are not
	// bound to a port).
	var session string
	resp, err := http.Post(p.http+"/api/v1/login", "application/json", strings.NewReader(`{"name":"ann","password":"`+token+`"}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, c := range resp.Cookies() {
		if c.Name == "telegauge_session" {
			session = c.Value
		}
	}
	require.NotEmpty(t, session)
	as := func(base string) http.Header {
		return http.Header{"Cookie": {"telegauge_session=" + session}, "Origin": {base}}
	}
	me := func(base string) int {
		st, _ := httpStatus(t, nil, http.MethodGet, base+"/api/v1/me", "", as(base))
		return st
	}
	require.Equal(t, http.StatusOK, me(p.http))
	require.NoError(t, p.stop(t, syscall.SIGTERM))

	q := startProcess(t, db...)
	st, body := httpStatus(t, nil, http.MethodGet, q.http+"/api/v1/me", "", as(q.http))
	require.Equal(t, http.StatusOK, st, "after a restart: %s", body)
	require.Contains(t, body, `"user":"ann"`)
	if records.DB == "" {
		require.NoError(t, q.stop(t, syscall.SIGTERM))
		return
	}

	// A second server on the same PostgreSQL honours the login, and a
	// logout there reaches the first.
	r := startProcess(t, db...)
	require.Equal(t, http.StatusOK, me(r.http), "on another server")
	st, body = httpStatus(t, nil, http.MethodPost, r.http+"/api/v1/logout", "", as(r.http))
	require.Equal(t, http.StatusNoContent, st, body)
	require.Equal(t, http.StatusUnauthorized, me(r.http))
	eventually(t, 10*time.Second, func() error {
		if st := me(q.http); st != http.StatusUnauthorized {
			return fmt.Errorf("the first server still answers %d", st)
		}
		return nil
	})
	require.NoError(t, r.stop(t, syscall.SIGTERM))
	require.NoError(t, q.stop(t, syscall.SIGTERM))
}
