//go:build integration

package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/internal/mosquittotest"
	"github.com/telegauge/telegauge/simulators"
)

// metricSum is the sum of a metric family's samples in a node's registry,
// which stays readable after the node stopped.
func metricSum(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

func accepted(t *testing.T, n *testNode) float64 {
	return metricSum(t, n.reg, "telegauge_readings_accepted_total")
}

func readyStatus(t *testing.T, n *testNode) int {
	t.Helper()
	resp, err := http.Get(n.httpURL + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// upstreamDevices publishes at QoS 1 to the broker at url and returns the
// final counts.
func upstreamDevices(ctx context.Context, url, idPrefix string, devices, messages int, rate float64) (simulators.DevicesStats, error) {
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return simulators.RunDevices(ctx, simulators.DevicesConfig{
		Broker:   url,
		Devices:  devices,
		Messages: messages,
		Rate:     rate,
		Metrics:  2,
		QoS:      1,
		IDPrefix: idPrefix,
		Seed:     1,
	}, log)
}

// Two nodes on one Mosquitto, one shared subscription: every reading is
// counted once across them, and each does some of the work.
func TestUpstreamTwoNodesCountEveryReadingOnce(t *testing.T) {
	mq := mosquittotest.Start(t)
	a := mustRunMain(t, "--mqtt-upstream="+mq.URL(), "--mqtt-upstream-client-id=tg-a")
	b := mustRunMain(t, "--mqtt-upstream="+mq.URL(), "--mqtt-upstream-client-id=tg-b")
	for _, n := range []*testNode{a, b} {
		require.Nil(t, n.broker, "the embedded broker is off")
		eventually(t, 10*time.Second, func() error { return n.upstream.Ready() })
		require.Equal(t, http.StatusOK, readyStatus(t, n))
		require.Equal(t, 1.0, metricSum(t, n.reg, "telegauge_upstream_connected"))
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stats, err := upstreamDevices(ctx, mq.URL(), "up-", 8, 60, 100)
	require.NoError(t, err)
	require.Zero(t, stats.Errors, "every publish confirmed")
	require.Equal(t, int64(8*60*2), stats.Readings)

	eventually(t, 20*time.Second, func() error {
		if got := accepted(t, a) + accepted(t, b); got != float64(stats.Readings) {
			return fmt.Errorf("accepted %v + %v, want %d in all", accepted(t, a), accepted(t, b), stats.Readings)
		}
		return nil
	})
	require.Positive(t, accepted(t, a), "node a got no share")
	require.Positive(t, accepted(t, b), "node b got no share")
	require.Equal(t, float64(stats.Messages),
		metricSum(t, a.reg, "telegauge_upstream_messages_total")+metricSum(t, b.reg, "telegauge_upstream_messages_total"))

	// Each node knows the devices whose readings it got, and has them online.
	var devs struct {
		Devices []struct {
			ID     string `json:"id"`
			Online bool   `json:"online"`
		} `json:"devices"`
	}
	require.Equal(t, http.StatusOK, getJSON(t, a.httpURL+"/api/v1/devices", &devs))
	require.NotEmpty(t, devs.Devices)
	for _, d := range devs.Devices {
		require.True(t, strings.HasPrefix(d.ID, "up-"), d.ID)
		require.True(t, d.Online, d.ID)
	}
}

// A node restarted mid-stream loses nothing: its persistent session (the
// client id kept in its data directory) has Mosquitto hold its share of
// QoS 1 readings, and what it had not acknowledged, until it is back.
func TestUpstreamNodeRestartLosesNothing(t *testing.T) {
	mq := mosquittotest.Start(t)
	a := mustRunMain(t, "--mqtt-upstream="+mq.URL(), "--mqtt-upstream-client-id=tg-a")
	eventually(t, 10*time.Second, func() error { return a.upstream.Ready() })
	bDir := t.TempDir()
	args := []string{"--mqtt-upstream=" + mq.URL(), "--data-dir=" + bDir}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type result struct {
		stats simulators.DevicesStats
		err   error
	}
	done := make(chan result, 1)
	var b1Accepted float64
	var clientID string
	t.Run("first life", func(t *testing.T) {
		var b *testNode
		// Registered first, so it runs after mustRunMain's cleanup has
		// stopped the node: what it took up to the end.
		t.Cleanup(func() {
			if b != nil {
				b1Accepted = accepted(t, b)
			}
		})
		b = mustRunMain(t, args...)
		eventually(t, 10*time.Second, func() error { return b.upstream.Ready() })
		clientID = b.upstream.ClientID()
		go func() {
			stats, err := upstreamDevices(ctx, mq.URL(), "rs-", 8, 150, 50)
			done <- result{stats, err}
		}()
		eventually(t, 20*time.Second, func() error {
			if accepted(t, b) < 50 {
				return fmt.Errorf("node b accepted %v so far", accepted(t, b))
			}
			return nil
		})
	})
	// Node b is down; the devices go on publishing, and node a keeps
	// taking its share.
	aBefore := accepted(t, a)
	eventually(t, 20*time.Second, func() error {
		if accepted(t, a) < aBefore+50 {
			return fmt.Errorf("node a accepted %v (had %v)", accepted(t, a), aBefore)
		}
		return nil
	})
	b2 := mustRunMain(t, args...)
	require.Equal(t, clientID, b2.upstream.ClientID(), "the default client id is kept in the data directory")
	require.FileExists(t, filepath.Join(bDir, upstreamClientIDFile))

	r := <-done
	require.NoError(t, r.err)
	require.Zero(t, r.stats.Errors, "every publish confirmed")
	want := float64(r.stats.Readings)
	eventually(t, 30*time.Second, func() error {
		if got := accepted(t, a) + b1Accepted + accepted(t, b2); got != want {
			return fmt.Errorf("accepted a %v + b %v + b again %v = %v, want %v",
				accepted(t, a), b1Accepted, accepted(t, b2), got, want)
		}
		return nil
	})
	t.Logf("readings %v: node a %v, node b %v before the restart and %v after", want, accepted(t, a), b1Accepted, accepted(t, b2))
}

func TestUpstreamFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		err  string
	}{
		{"ws listener", []string{"--mqtt-upstream=tcp://127.0.0.1:1", "--mqtt-ws-addr=127.0.0.1:0"}, "--mqtt-ws-addr has no effect"},
		{"demo", []string{"--mqtt-upstream=tcp://127.0.0.1:1", "--demo=3"}, "--demo needs the embedded broker"},
		{"scheme", []string{"--mqtt-upstream=http://127.0.0.1:1"}, "scheme must be"},
		{"both passwords", []string{"--mqtt-upstream=tcp://127.0.0.1:1", "--mqtt-upstream-password=x", "--mqtt-upstream-password-file=/dev/null"}, "exclusive"},
		{"bad CA", []string{"--mqtt-upstream=ssl://127.0.0.1:1", "--mqtt-upstream-ca-file=/dev/null"}, "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c cli
			parser, err := kong.New(&c, kong.Name("telegauge"), kong.Configuration(yamlConfig))
			require.NoError(t, err)
			_, err = parser.Parse(append([]string{"serve", "--http-addr=127.0.0.1:0", "--db=memory"}, tc.args...))
			require.NoError(t, err)
			_, err = c.Serve.build(slog.New(slog.DiscardHandler))
			require.ErrorContains(t, err, tc.err)
		})
	}
}
