//go:build integration

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/internal/natstest"
	"github.com/telegauge/telegauge/simulators"
)

// TestClusterHardKill kills (-9) the node that live viewers are connected
// to, while devices publish at QoS 1 to both nodes. The viewers, switched
// by a load-balancer-like dialer, resume on the surviving node with the
// dead node's cursors. Never silent loss: each gets exactly one reset (the
// dead node's epoch is unknown to the survivor); every reading published
// after that arrives exactly once and nothing arrives twice; the
// survivor's history holds every reading published to it; and it notices
// the death (peer count, the dead node's devices offline) within about the
// node timeout.
func TestClusterHardKill(t *testing.T) {
	const (
		nodeTimeout = time.Second
		every       = 10 * time.Millisecond // each device: 100 readings/s
	)
	start := time.Now()
	ns := natstest.Run(t)
	cluster := func(id string) []string {
		return []string{"--data-dir", t.TempDir(), "--nats", ns.URL(), "--node-id", id,
			"--cluster-node-timeout", nodeTimeout.String(), "--flush-interval", "100ms", "--max-rate-per-device=-1"}
	}
	a := startProcess(t, cluster("a")...)
	b := startProcess(t, cluster("b")...)
	// Each node has subscribed before it heartbeats, so once each hears
	// the other nothing published from now on is missed for want of a
	// subscription.
	for _, p := range []*process{a, b} {
		eventually(t, 10*time.Second, func() error { return clusterNodes(p.http, 1) })
	}

	onA := publishSteadily(t, a.mqtt, "hka/v", every)
	onB := publishSteadily(t, b.mqtt, "hkb/v", every)

	// Viewers on a, SSE and long poll (and short poll), through a dialer
	// that, like a load balancer, sends new connections to b once a
	// refuses them. Each swarm resumes with its last cursor.
	log := newFailoverLog()
	client := failoverClient(strings.TrimPrefix(a.http, "http://"), strings.TrimPrefix(b.http, "http://"))
	defer client.CloseIdleConnections()
	const perTransport = 2
	transports := []string{simulators.TransportSSE, simulators.TransportLongPoll, simulators.TransportPoll}
	for _, tr := range transports {
		startViewers(t, simulators.ViewersConfig{
			URL: a.http, Viewers: perTransport, Transport: tr, Series: []string{"#"},
			PollWait: 2 * time.Second, PollInterval: 50 * time.Millisecond,
			Backoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
			HTTPClient: client, OnEvent: log.add,
		})
	}
	viewers := len(transports) * perTransport
	// Warm: every viewer holds a cursor on a that has carried a stream of
	// readings of both devices (hkb's through NATS), and b sees hka online.
	eventually(t, 10*time.Second, func() error { return log.warm(viewers, 30, "hka/v", "hkb/v") })
	eventually(t, 5*time.Second, func() error { return deviceOnline(b.http, "hka", true) })

	killAt := time.Now()
	err := a.stop(t, syscall.SIGKILL)
	require.Error(t, err, "kill -9 is not a clean exit")
	aSent := onA.halt()

	// b notices: a's heartbeats stop, and after the node timeout (checked
	// every fifth of it) a is forgotten and its device shown offline.
	eventually(t, 5*time.Second, func() error { return clusterNodes(b.http, 0) })
	noticed := time.Since(killAt)
	eventually(t, 5*time.Second, func() error { return deviceOnline(b.http, "hka", false) })
	offline := time.Since(killAt)
	require.Less(t, noticed, nodeTimeout+2*nodeTimeout/5+500*time.Millisecond, "b forgets a within the node timeout and a heartbeat interval")
	require.Less(t, offline, nodeTimeout+2*nodeTimeout/5+500*time.Millisecond, "a's device offline on b within the node timeout")

	// Every viewer moves to b and is told to reload: reset.
	eventually(t, 10*time.Second, func() error { return log.allReset(viewers) })
	lastReset := log.lastReset()
	moved := lastReset.Sub(killAt)

	// Keep publishing on b well past the last resubscription, then stop.
	eventually(t, 10*time.Second, func() error {
		if n := onB.sentAfter(lastReset); n < 50 {
			return fmt.Errorf("%d readings published on b after the last reset", n)
		}
		return nil
	})
	bSent := onB.halt()

	// Every reading published on b after a viewer's reset reaches it
	// exactly once; nothing reaches anyone twice or unpublished.
	published := map[point]bool{}
	for _, r := range append(append([]sentReading(nil), aSent...), bSent...) {
		published[r.p] = true
	}
	eventually(t, 10*time.Second, func() error { return log.complete(viewers, bSent) })
	require.NoError(t, log.exact(published))

	// b's history holds every reading published to it, before and after
	// the kill (acknowledged at QoS 1, so b had accepted it).
	var bAcked []sentReading
	for _, r := range bSent {
		if r.acked {
			bAcked = append(bAcked, r)
		}
	}
	require.Len(t, bAcked, len(bSent), "b acknowledged every publish")
	from, to := bSent[0].p.T, bSent[len(bSent)-1].p.T+1
	eventually(t, 5*time.Second, func() error {
		if got := storedCount(t, b.http, "hkb/v", from, to); got != int64(len(bSent)) {
			return fmt.Errorf("b's history holds %d of %d readings of hkb", got, len(bSent))
		}
		return nil
	})

	// What a acknowledged and b holds: the readings a accepted but had not
	// yet sent over NATS when it died are on a's disk at best (SQLite per
	// node), not on b. Reported, not asserted: it depends on where in a's
	// frame the kill lands.
	onBFromA := rawTimes(t, b.http, "hka/v")
	var aAcked, aLost, aUnseen int
	for _, r := range aSent {
		if !r.acked {
			continue
		}
		aAcked++
		if !onBFromA[r.p.T] {
			aLost++
			if !log.anyGot(r.p) {
				aUnseen++
			}
		}
	}
	require.LessOrEqual(t, len(onBFromA), len(aSent), "b holds no reading of hka that was not published")
	st := log.statsOf(bSent)
	t.Logf("kill -9 of a: b forgot a after %s, showed hka offline after %s, all %d viewers reset on b after %s (reconnect: SSE retry hint 2s, polls %s backoff)",
		noticed.Round(time.Millisecond), offline.Round(time.Millisecond), viewers, moved.Round(time.Millisecond), 20*time.Millisecond)
	t.Logf("hkb: %d readings published on b, all in b's history; viewers missed %d live (all published before their reset), received %d published after it; hka: %d acknowledged by a, %d in b's history, %d not (%d of them seen live by no viewer)",
		len(bSent), st.missedBeforeReset, st.afterReset, aAcked, len(onBFromA), aLost, aUnseen)
	// The survivor still shuts down cleanly with its peer gone.
	require.NoError(t, b.stop(t, syscall.SIGTERM))
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
}

// rawTimes returns the reading times of a series' recent raw readings (the
// last 256) on the node at base.
func rawTimes(t *testing.T, base, series string) map[int64]bool {
	t.Helper()
	var q queryAnswer
	require.Equal(t, http.StatusOK, getJSON(t, base+"/api/v1/query?step=raw&from=-1h&series="+series, &q))
	out := map[int64]bool{}
	for _, s := range q.Series {
		for _, tMs := range s.T {
			out[tMs] = true
		}
	}
	return out
}

// failoverClient is an HTTP client whose connections go to primary, or to
// backup when primary refuses them: a load balancer's health check in
// miniature, so that viewers resume on another node with their cursors.
func failoverClient(primary, backup string) *http.Client {
	d := &net.Dialer{Timeout: 2 * time.Second}
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, primary)
			if err == nil {
				return c, nil
			}
			return d.DialContext(ctx, network, backup)
		},
		MaxIdleConnsPerHost: 16,
		DisableCompression:  true, // it would buffer SSE
	}}
}

// clusterNodes checks that the node at base hears want other nodes.
func clusterNodes(base string, want int) error {
	m, err := scrapeMetrics(base)
	if err != nil {
		return err
	}
	if got, ok := m["telegauge_cluster_nodes"]; !ok || int(got) != want {
		return fmt.Errorf("%s: telegauge_cluster_nodes %v, want %d", base, got, want)
	}
	return nil
}

// deviceOnline checks a device's presence in the node's device list.
func deviceOnline(base, device string, want bool) error {
	resp, err := http.Get(base + "/api/v1/devices")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var devs struct {
		Devices []struct {
			ID     string `json:"id"`
			Online bool   `json:"online"`
		} `json:"devices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&devs); err != nil {
		return err
	}
	for _, d := range devs.Devices {
		if d.ID == device {
			if d.Online != want {
				return fmt.Errorf("%s: %s online %v, want %v", base, device, d.Online, want)
			}
			return nil
		}
	}
	return fmt.Errorf("%s: no device %s in %+v", base, device, devs.Devices)
}

// failoverLog records what each viewer of several swarms received
// (ViewersConfig.OnEvent), with when it was told to reset.
type failoverLog struct {
	mu      sync.Mutex // guards viewers
	viewers map[string]*failoverViewer
}

// failoverViewer is what one viewer received.
type failoverViewer struct {
	got     map[point]int
	resets  int
	resetAt time.Time // when the first reset arrived
	gaps    []simulators.ViewerEvent
}

func newFailoverLog() *failoverLog { return &failoverLog{viewers: map[string]*failoverViewer{}} }

// add is a ViewersConfig.OnEvent; the key names the swarm (its transport)
// and the viewer.
func (l *failoverLog) add(e simulators.ViewerEvent) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	key := fmt.Sprintf("%s/%d", e.Transport, e.Viewer)
	v := l.viewers[key]
	if v == nil {
		v = &failoverViewer{got: map[point]int{}}
		l.viewers[key] = v
	}
	switch e.Kind {
	case simulators.ViewerEventReset:
		if v.resets == 0 {
			v.resetAt = now
		}
		v.resets++
	case simulators.ViewerEventGap:
		v.gaps = append(v.gaps, e)
	case simulators.ViewerEventPoints:
		for _, p := range e.Points {
			v.got[point{S: p.Series, T: p.TimeMs, V: p.Value}]++
		}
	}
}

// warm reports whether n viewers each received atLeast readings of every
// series.
func (l *failoverLog) warm(n, atLeast int, series ...string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.viewers) != n {
		return fmt.Errorf("%d of %d viewers received anything", len(l.viewers), n)
	}
	for key, v := range l.viewers {
		for _, s := range series {
			got := 0
			for p := range v.got {
				if p.S == s {
					got++
				}
			}
			if got < atLeast {
				return fmt.Errorf("viewer %s has %d readings of %s, want %d", key, got, s, atLeast)
			}
		}
	}
	return nil
}

// allReset reports whether n viewers have been told to reset.
func (l *failoverLog) allReset(n int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	reset := 0
	for _, v := range l.viewers {
		if v.resets > 0 {
			reset++
		}
	}
	if reset != n || len(l.viewers) != n {
		return fmt.Errorf("%d of %d viewers reset", reset, n)
	}
	return nil
}

func (l *failoverLog) lastReset() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var last time.Time
	for _, v := range l.viewers {
		if v.resetAt.After(last) {
			last = v.resetAt
		}
	}
	return last
}

// complete reports whether every viewer has each of sent published after
// its reset.
func (l *failoverLog) complete(n int, sent []sentReading) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, v := range l.viewers {
		for _, r := range sent {
			if r.at.After(v.resetAt) && v.got[r.p] == 0 {
				return fmt.Errorf("viewer %s: %+v, published %s after its reset, has not arrived", key, r.p, r.at.Sub(v.resetAt))
			}
		}
	}
	return nil
}

// anyGot reports whether any viewer received p.
func (l *failoverLog) anyGot(p point) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, v := range l.viewers {
		if v.got[p] > 0 {
			return true
		}
	}
	return false
}

// exact returns an error for a duplicate, a reading never published, a
// second reset or a gap.
func (l *failoverLog) exact(published map[point]bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, v := range l.viewers {
		if v.resets != 1 {
			return fmt.Errorf("viewer %s: %d resets, want 1", key, v.resets)
		}
		if len(v.gaps) > 0 {
			return fmt.Errorf("viewer %s: gaps %+v", key, v.gaps)
		}
		for p, c := range v.got {
			if c != 1 {
				return fmt.Errorf("viewer %s: %+v delivered %d times", key, p, c)
			}
			if !published[p] {
				return fmt.Errorf("viewer %s: %+v was never published", key, p)
			}
		}
	}
	return nil
}

// failoverStats sums, over the viewers, readings published to b before
// their reset that they never got live (those a reset tells them to
// reload from history) and readings they got that were published after.
type failoverStats struct{ missedBeforeReset, afterReset int }

func (l *failoverLog) statsOf(sent []sentReading) failoverStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s failoverStats
	for _, v := range l.viewers {
		for _, r := range sent {
			switch {
			case r.at.After(v.resetAt):
				s.afterReset++
			case v.got[r.p] == 0:
				s.missedBeforeReset++
			}
		}
	}
	return s
}
