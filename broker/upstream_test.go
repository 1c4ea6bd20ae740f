package broker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/internal/mosquittotest"
	"github.com/telegauge/telegauge/internal/testutil"
)

// countSink counts offers by topic; refuse, when set, refuses that many
// first offers (as a stopped ingest would).
type countSink struct {
	mu     sync.Mutex // guards the fields below
	byTop  map[string]int
	n      int
	refuse int
}

func (s *countSink) Offer(topic string, _ []byte, _ time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse > 0 {
		s.refuse--
		return false
	}
	if s.byTop == nil {
		s.byTop = make(map[string]int)
	}
	s.byTop[topic]++
	s.n++
	return true
}

func (s *countSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// newTestUpstream runs an Upstream until the test ends and waits until it
// is subscribed.
func newTestUpstream(t *testing.T, cfg UpstreamConfig) *Upstream {
	t.Helper()
	u, err := NewUpstream(cfg, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("upstream did not stop")
		}
	})
	testutil.Eventually(t, 10*time.Second, u.Ready)
	return u
}

func newPublisher(t *testing.T, url string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("pub-" + t.Name()).SetAutoReconnect(false))
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func publishN(t *testing.T, c paho.Client, from, n int) {
	t.Helper()
	toks := make([]paho.Token, 0, n)
	for i := from; i < from+n; i++ {
		toks = append(toks, c.Publish(fmt.Sprintf("telemetry/dev%d/x", i%7), 1, false, fmt.Sprint(i)))
	}
	for _, tok := range toks {
		require.True(t, tok.WaitTimeout(10*time.Second))
		require.NoError(t, tok.Error())
	}
}

func TestUpstreamSharedSubscriptionSplitsReadings(t *testing.T) {
	mq := mosquittotest.Start(t)
	var a, b countSink
	newTestUpstream(t, UpstreamConfig{URL: mq.URL(), ClientID: "node-a", Sink: &a})
	newTestUpstream(t, UpstreamConfig{URL: mq.URL(), ClientID: "node-b", Sink: &b})
	const n = 400
	publishN(t, newPublisher(t, mq.URL()), 0, n)
	testutil.Eventually(t, 10*time.Second, func() error {
		if got := a.count() + b.count(); got != n {
			return fmt.Errorf("%d + %d readings, want %d in all", a.count(), b.count(), n)
		}
		return nil
	})
	require.Positive(t, a.count(), "node a got none")
	require.Positive(t, b.count(), "node b got none")
}

// A reading the sink refuses is not acknowledged: the broker keeps it in
// the persistent session and sends it again when the node comes back.
func TestUpstreamRefusedReadingIsSentAgain(t *testing.T) {
	mq := mosquittotest.Start(t)
	sink := &countSink{refuse: 1}
	u, err := NewUpstream(UpstreamConfig{URL: mq.URL(), ClientID: "node-r", Sink: sink}, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	testutil.Eventually(t, 10*time.Second, u.Ready)
	pub := newPublisher(t, mq.URL())
	publishN(t, pub, 0, 3)
	testutil.Eventually(t, 10*time.Second, func() error {
		if got := sink.count(); got != 2 {
			return fmt.Errorf("%d readings, want 2 (one refused)", got)
		}
		return nil
	})
	cancel()
	require.NoError(t, <-done)

	// The same client id again: the refused reading comes back, and
	// nothing acknowledged does.
	newTestUpstream(t, UpstreamConfig{URL: mq.URL(), ClientID: "node-r", Sink: sink})
	testutil.Eventually(t, 10*time.Second, func() error {
		if got := sink.count(); got != 3 {
			return fmt.Errorf("%d readings, want 3", got)
		}
		return nil
	})
	publishN(t, pub, 3, 1) // a marker after the redelivery
	testutil.Eventually(t, 10*time.Second, func() error {
		if got := sink.count(); got != 4 {
			return fmt.Errorf("%d readings, want 4", got)
		}
		return nil
	})
}

func TestUpstreamReadyReportsTheBroker(t *testing.T) {
	mq := mosquittotest.Start(t)
	u := newTestUpstream(t, UpstreamConfig{URL: mq.URL(), ClientID: "node-x", Sink: &countSink{}})
	mq.Stop()
	testutil.Eventually(t, 20*time.Second, func() error {
		if u.Ready() == nil {
			return fmt.Errorf("still ready with the broker gone")
		}
		return nil
	})
	require.Contains(t, u.Ready().Error(), mq.Addr)
}

func TestUpstreamPresenceFromReadings(t *testing.T) {
	type event struct {
		device string
		online bool
	}
	var events []event
	now := time.Unix(1_700_000_000, 0)
	u, err := NewUpstream(UpstreamConfig{URL: "tcp://127.0.0.1:1", ClientID: "p", Sink: &countSink{},
		PresenceWindow: time.Minute,
		OnPresence:     func(d string, on bool, _ time.Time) { events = append(events, event{d, on}) },
	}, nil)
	require.NoError(t, err)
	u.seen("dev1", now)
	u.seen("dev1", now.Add(10*time.Second))
	u.seen("bad/name", now)
	u.seen("dev2", now.Add(30*time.Second))
	u.expire(now.Add(69 * time.Second)) // dev1 last seen 59 s ago
	require.Equal(t, []event{{"dev1", true}, {"dev2", true}}, events)
	u.expire(now.Add(70 * time.Second))
	require.Equal(t, []event{{"dev1", true}, {"dev2", true}, {"dev1", false}}, events)
	u.seen("dev1", now.Add(80*time.Second))
	u.expire(now.Add(90 * time.Second))
	require.Equal(t, []event{{"dev1", true}, {"dev2", true}, {"dev1", false}, {"dev1", true}, {"dev2", false}}, events)
}

func TestUpstreamConfigValidation(t *testing.T) {
	sink := &countSink{}
	for _, tc := range []struct {
		name, url, group, client string
		err                      string
	}{
		{name: "tcp", url: "tcp://broker:1883", client: "c"},
		{name: "ssl", url: "ssl://broker:8883", client: "c"},
		{name: "ws", url: "ws://broker/mqtt", client: "c"},
		{name: "no url", client: "c", err: "URL is required"},
		{name: "http", url: "http://broker", client: "c", err: "scheme must be"},
		{name: "no host", url: "tcp://", client: "c", err: "no host"},
		{name: "password hidden", url: "ftp://u:secret@broker", client: "c", err: "u:xxxxx@broker"},
		{name: "no client id", url: "tcp://broker:1883", err: "ClientID is required"},
		{name: "bad group", url: "tcp://broker:1883", client: "c", group: "a/b", err: "may not contain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := NewUpstream(UpstreamConfig{URL: tc.url, ClientID: tc.client, Group: tc.group, Sink: sink}, nil)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				require.NotContains(t, err.Error(), "secret")
				return
			}
			require.NoError(t, err)
			require.Equal(t, "$share/telegauge/telemetry/#", u.Filter())
		})
	}
}
