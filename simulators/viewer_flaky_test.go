package simulators

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/dashboard"
	"github.com/telegauge/telegauge/ingest"
	"github.com/telegauge/telegauge/ingest/store"
	"github.com/telegauge/telegauge/web"
)

// liveServer is the real read side (aggregator, hub, web) in process, on
// the real clock; readings go straight into the aggregator, as the broker
// would hand them over.
type liveServer struct {
	url string
	agg *ingest.Aggregator
}

// newTestLiveServer wires and runs the server the way cmd/telegauge does,
// minus the broker, and shuts it down (web first) when the test ends.
func newTestLiveServer(t testing.TB) *liveServer {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	st, err := store.NewMemory(store.MemoryConfig{}, log)
	require.NoError(t, err)
	var hub *dashboard.Hub
	agg, err := ingest.New(ingest.Config{Store: st, Notify: func() { hub.Wake() }, Registerer: reg}, log)
	require.NoError(t, err)
	hub, err = dashboard.NewHub(dashboard.HubConfig{
		// Far more than a stalled viewer falls behind, and a long resume
		// window: a cut or a stall must lead to a resume, never to a gap
		// or a reset.
		ViewerQueueBytes: 64 << 20,
		ResumeWindow:     10 * time.Minute,
		Source:           agg,
		Registerer:       reg,
	}, log)
	require.NoError(t, err)
	q, err := dashboard.NewQuerier(dashboard.QueryConfig{Source: agg, History: st}, log)
	require.NoError(t, err)
	srv, err := web.New(web.Config{
		Addr:    "127.0.0.1:0",
		Hub:     hub,
		Querier: q,
		Devices: agg,
		// The viewers' backoff after a cut is the SSE retry hint: keep
		// it short so that SSE resumes as quickly as the others.
		SSERetry:   20 * time.Millisecond,
		Registerer: reg,
	}, log)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	webCtx, stopWeb := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	run := func(name string, ctx context.Context, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	run("hub", ctx, hub.Run)
	run("aggregator", ctx, agg.Run)
	run("store", ctx, st.Run)
	webDone := make(chan struct{})
	go func() {
		defer close(webDone)
		err := srv.Run(webCtx)
		if err != nil {
			errs <- fmt.Errorf("web: %w", err)
		}
	}()
	t.Cleanup(func() {
		stopWeb() // viewers first, as cmd/telegauge shuts down
		select {
		case <-webDone:
		case <-time.After(15 * time.Second):
			t.Error("web server did not stop")
		}
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		require.NoError(t, st.Close())
	})
	return &liveServer{url: "http://" + srv.Addr(), agg: agg}
}

// publish offers one reading of series device/metric at reading time tMs.
func (s *liveServer) publish(t testing.TB, series string, tMs int64, v float64) {
	t.Helper()
	payload := fmt.Sprintf(`{"ts":%d,"value":%g}`, tMs, v)
	require.True(t, s.agg.Offer("telemetry/"+series, []byte(payload), time.Now()), "aggregator stopped")
}

// TestViewerFlaky runs flaky viewers of each transport against the real
// server while readings are published in batches, and checks that, by
// resuming from their cursors, they all get every reading exactly once.
// Publishing goes on, a batch per injected disconnect, until the viewers
// have also stalled, so that cuts and stalls fall among the readings
// whatever the timing.
func TestViewerFlaky(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			testViewerFlaky(t, tr)
		})
	}
}

func testViewerFlaky(t *testing.T, transport string) {
	const (
		viewers    = 3
		perBatch   = 20 // readings per batch, over two series
		minBatches = 6
		maxBatches = 400
	)
	srv := newTestLiveServer(t)
	counters := new(ViewersCounters)
	stop := runViewersAsync(t, ViewersConfig{
		URL:          srv.url,
		Viewers:      viewers,
		Transport:    transport,
		Series:       []string{"flaky/#"},
		PollInterval: 20 * time.Millisecond,
		PollWait:     time.Second,
		Backoff:      10 * time.Millisecond,
		MaxBackoff:   50 * time.Millisecond,
		Counters:     counters,
		Flaky: ViewerFlaky{
			DisconnectEvery: 200 * time.Millisecond,
			StallEvery:      300 * time.Millisecond,
			StallFor:        100 * time.Millisecond,
		},
	})
	// Every viewer has been subscribed once: from then on the server owes
	// it every reading, and it can only be cut once it holds a cursor.
	eventually(t, 10*time.Second, func() error {
		s := counters.Snapshot().Total
		if n := s.Connections - s.Reconnects; n != viewers {
			return fmt.Errorf("%d of %d viewers connected", n, viewers)
		}
		return nil
	})

	baseMs := time.Now().UnixMilli()
	var published int64
	for batch := 0; ; batch++ {
		require.Less(t, batch, maxBatches, "no stall after %d batches", batch)
		for range perBatch / 2 {
			for _, series := range []string{"flaky/a", "flaky/b"} {
				srv.publish(t, series, baseMs+published/2, float64(published))
				published++
			}
		}
		s := counters.Snapshot().Total
		if batch+1 >= minBatches && s.Stalls > 0 {
			break
		}
		// The next batch waits for a disconnect.
		eventually(t, 5*time.Second, func() error {
			if d := counters.Snapshot().Total.Disconnects; d <= s.Disconnects {
				return errors.New("no disconnect since the last batch")
			}
			return nil
		})
	}

	eventually(t, 10*time.Second, func() error {
		s := counters.Snapshot()
		tot := s.Total
		// These will not go away: fail at once.
		require.Zero(t, tot.Duplicates, "duplicates")
		require.Zero(t, tot.Gaps, "gaps")
		require.Zero(t, tot.Resets, "resets")
		require.LessOrEqual(t, tot.UniqueMax, published, "more distinct points than published")
		if tot.Reconnects == 0 {
			return errors.New("no reconnect yet")
		}
		if !s.ExactlyOnce(published) {
			return fmt.Errorf("distinct points per viewer %d..%d, want %d", tot.UniqueMin, tot.UniqueMax, published)
		}
		return nil
	})
	s := stop()
	ts := s.Transports[transport]
	t.Logf("%s: %d readings per viewer; %d disconnects, %d stalls, %d reconnects, %d errors, %d frames",
		transport, published, ts.Disconnects, ts.Stalls, ts.Reconnects, ts.Errors, ts.Frames)
	require.True(t, s.ExactlyOnce(published), "exactly once")
	require.Positive(t, ts.Disconnects, "disconnects")
	require.Positive(t, ts.Stalls, "stalls")
	require.Positive(t, ts.Reconnects, "reconnects")
	require.EqualValues(t, published, ts.UniqueMin)
	require.EqualValues(t, published, ts.UniqueMax)
	require.False(t, s.ExactlyOnce(published+1))
	require.Contains(t, s.Summary(), "disconn")
}

// TestViewerFlakyReset checks that a disconnect resets the TCP connection
// instead of closing it: the server reads ECONNRESET, not EOF.
func TestViewerFlakyReset(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	got := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		_, err = c.Read(make([]byte, 1))
		got <- err
	}()

	c := new(ViewersCounters)
	l := newViewerLink(&c.by[0])
	conn, err := l.wrapDial((&net.Dialer{}).DialContext)(context.Background(), "tcp", ln.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	l.cut() // not armed: nothing happens
	require.Zero(t, c.Snapshot().Total.Disconnects)
	l.armed.Store(true)
	mark := l.sessionStart()
	l.cut()
	require.True(t, l.cutSince(mark))
	require.False(t, l.cutSince(l.sessionStart()))
	var rerr error
	select {
	case rerr = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the server saw nothing")
	}
	require.ErrorIs(t, rerr, syscall.ECONNRESET)
	require.EqualValues(t, 1, c.Snapshot().Transports[TransportWS].Disconnects)
	// With nothing left to reset, a cut counts nothing.
	l.cut()
	require.EqualValues(t, 1, c.Snapshot().Transports[TransportWS].Disconnects)
}

// TestViewerFlakyConfig checks the flaky defaults and that a transport
// that cannot be cloned per viewer is refused.
func TestViewerFlakyConfig(t *testing.T) {
	cfg := ViewersConfig{Flaky: ViewerFlaky{StallEvery: time.Second}}
	require.NoError(t, cfg.setDefaults())
	require.Equal(t, time.Second, cfg.Flaky.StallFor)

	odd := &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, errors.New("no") })}
	cfg = ViewersConfig{HTTPClient: odd, Flaky: ViewerFlaky{DisconnectEvery: time.Second}}
	require.Error(t, cfg.setDefaults())
	cfg = ViewersConfig{HTTPClient: odd, Flaky: ViewerFlaky{StallEvery: time.Second}}
	require.NoError(t, cfg.setDefaults(), "stalls need no transport of their own")
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestViewersExactlyOnce checks the per-viewer distinct counts and the
// verdict built on them.
func TestViewersExactlyOnce(t *testing.T) {
	const t0 = 1_700_000_000_000
	cfg := &ViewersConfig{Transport: TransportMix, Now: func() time.Time { return time.UnixMilli(t0 + 10) }}
	require.NoError(t, cfg.setDefaults())
	log := slog.New(slog.DiscardHandler)
	ws := newViewer(cfg, 0, http.DefaultClient, log)
	sse := newViewer(cfg, 1, http.DefaultClient, log)
	a, b := []byte("d/a"), []byte("d/b")
	ws.onPoints([]point{{S: a, T: t0, V: 1}, {S: b, T: t0, V: 1}})
	sse.onPoints([]point{{S: a, T: t0, V: 1}})
	s := cfg.Counters.Snapshot()
	require.EqualValues(t, 2, s.Transports[TransportWS].UniqueMin)
	require.EqualValues(t, 1, s.Transports[TransportSSE].UniqueMax)
	require.EqualValues(t, 1, s.Total.UniqueMin)
	require.EqualValues(t, 2, s.Total.UniqueMax)
	require.False(t, s.ExactlyOnce(2), "one viewer is short of a point")

	sse.onPoints([]point{{S: a, T: t0, V: 1}, {S: b, T: t0, V: 1}}) // a again
	s = cfg.Counters.Snapshot()
	require.EqualValues(t, 2, s.Total.UniqueMin)
	require.EqualValues(t, 2, s.Total.UniqueMax)
	require.False(t, s.ExactlyOnce(2), "a duplicate")
	s.Total.Duplicates = 0
	require.True(t, s.ExactlyOnce(2))
	for name, mutate := range map[string]func(*TransportStats){
		"gap":       func(t *TransportStats) { t.Gaps = 1 },
		"reset":     func(t *TransportStats) { t.Resets = 1 },
		"no viewer": func(t *TransportStats) { *t = TransportStats{} },
	} {
		c := s
		mutate(&c.Total)
		require.False(t, c.ExactlyOnce(2), name)
	}
	b2, err := s.MarshalJSON()
	require.NoError(t, err)
	for _, key := range []string{`"uniqueMin":2`, `"uniqueMax":2`, `"disconnects":0`, `"stalls":0`} {
		require.Contains(t, string(b2), key)
	}
}
