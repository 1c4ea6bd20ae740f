package bus

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest"
	"github.com/telegauge/telegauge/ingest/store"
	"github.com/telegauge/telegauge/internal/natstest"
	"github.com/telegauge/telegauge/internal/testutil"
)

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

func TestCodecRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		rs   []ingest.Reading
	}{
		{"empty", nil},
		{"one", []ingest.Reading{{Series: "d/m", TimeMs: 1700000000123, Value: 21.5}}},
		{"many", []ingest.Reading{
			{Series: "dev1/temperature", TimeMs: 1700000000123, Value: -1},
			{Series: "dev1/temperature", TimeMs: 1700000000100, Value: math.MaxFloat64},
			{Series: "dev2/x", TimeMs: -5, Value: 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := make(interner)
			msg := appendReadings(tc.rs)
			got, err := decodeReadings(nil, msg, &in)
			require.NoError(t, err)
			require.Len(t, got, len(tc.rs))
			for i := range got {
				require.Equal(t, tc.rs[i], got[i])
			}
			// Every truncation is an error or a prefix, never a panic.
			for n := range len(msg) {
				got, err := decodeReadings(nil, msg[:n], &in)
				if err == nil {
					for i := range got {
						require.Equal(t, tc.rs[i], got[i])
					}
				}
			}
		})
	}
}

// testNode is a bus with its own aggregator and the presence it reports.
type testNode struct {
	bus  *Bus
	agg  *ingest.Aggregator
	mu   sync.Mutex
	live []ingest.Reading
	pres map[string]bool
}

func newTestNode(t *testing.T, url, id string) *testNode {
	t.Helper()
	st, err := store.NewMemory(store.MemoryConfig{}, nil)
	require.NoError(t, err)
	agg, err := ingest.New(ingest.Config{Store: st, MaxRatePerDevice: -1}, nil)
	require.NoError(t, err)
	n := &testNode{agg: agg, pres: map[string]bool{}}
	n.bus, err = New(Config{
		URL: url, NodeID: id, NodeTimeout: time.Second, PersistRemote: true, Apply: agg,
		Live: func(rs []ingest.Reading) {
			n.mu.Lock()
			n.live = append(n.live, rs...)
			n.mu.Unlock()
		},
		Presence: func(d string, on bool, _ time.Time) {
			n.mu.Lock()
			n.pres[d] = on
			n.mu.Unlock()
		},
	}, testLog(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.bus.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return n
}

func (n *testNode) liveCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.live)
}

func (n *testNode) online(d string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pres[d]
}

func TestBusExchange(t *testing.T) {
	ns := natstest.Run(t)
	a := newTestNode(t, ns.URL(), "a")
	b := newTestNode(t, ns.URL(), "b")
	testutil.Eventually(t, 5*time.Second, func() error {
		if len(a.bus.Nodes()) != 1 || len(b.bus.Nodes()) != 1 {
			return fmt.Errorf("nodes: a %v, b %v", a.bus.Nodes(), b.bus.Nodes())
		}
		return nil
	})
	nowMs := time.Now().UnixMilli()
	rs := make([]ingest.Reading, 100)
	for i := range rs {
		rs[i] = ingest.Reading{Series: fmt.Sprintf("d%d/m", i%3), TimeMs: nowMs + int64(i), Value: float64(i)}
	}
	a.bus.Send(rs)
	testutil.Eventually(t, 5*time.Second, func() error {
		if got := b.liveCount(); got != len(rs) {
			return fmt.Errorf("b live: %d of %d", got, len(rs))
		}
		return nil
	})
	require.Zero(t, a.liveCount(), "a node never applies its own readings")
	require.Len(t, b.agg.SeriesIDs(), 3)

	// Presence: online while any node has a session.
	a.bus.LocalPresence("d0", true, time.Now())
	require.True(t, a.online("d0"))
	testutil.Eventually(t, 5*time.Second, func() error {
		if !b.online("d0") {
			return fmt.Errorf("d0 not online on b")
		}
		return nil
	})
	b.bus.LocalPresence("d0", true, time.Now())
	testutil.Eventually(t, 5*time.Second, func() error {
		a.bus.mu.Lock()
		defer a.bus.mu.Unlock()
		if p := a.bus.peers["b"]; p == nil || !p.devices["d0"] {
			return fmt.Errorf("a does not know b's session yet")
		}
		return nil
	})
	a.bus.LocalPresence("d0", false, time.Now())
	require.True(t, a.online("d0"), "still online: b has a session")
	b.bus.LocalPresence("d0", false, time.Now())
	testutil.Eventually(t, 5*time.Second, func() error {
		if a.online("d0") || b.online("d0") {
			return fmt.Errorf("d0 still online")
		}
		return nil
	})
}

// TestBusOutage stops NATS: the nodes say so, expire each other's devices,
// and exchange readings and presence again once it is back.
func TestBusOutage(t *testing.T) {
	ns := natstest.Run(t)
	a := newTestNode(t, ns.URL(), "a")
	b := newTestNode(t, ns.URL(), "b")
	a.bus.LocalPresence("dev", true, time.Now())
	testutil.Eventually(t, 5*time.Second, func() error {
		if !b.online("dev") || !a.bus.Connected() {
			return fmt.Errorf("not joined")
		}
		return nil
	})
	ns.Stop()
	testutil.Eventually(t, 5*time.Second, func() error {
		if a.bus.Connected() || b.online("dev") {
			return fmt.Errorf("outage not seen: connected %v, dev online on b %v", a.bus.Connected(), b.online("dev"))
		}
		return nil
	})
	require.Contains(t, a.bus.Status(), "nats unreachable")
	ns.Start()
	testutil.Eventually(t, 10*time.Second, func() error {
		if !a.bus.Connected() || !b.online("dev") {
			return fmt.Errorf("not back: connected %v, dev online on b %v", a.bus.Connected(), b.online("dev"))
		}
		return nil
	})
	a.bus.Send([]ingest.Reading{{Series: "dev/m", TimeMs: time.Now().UnixMilli(), Value: 1}})
	testutil.Eventually(t, 5*time.Second, func() error {
		if b.liveCount() != 1 {
			return fmt.Errorf("b live %d", b.liveCount())
		}
		return nil
	})
}
