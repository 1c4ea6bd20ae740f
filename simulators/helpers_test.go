package simulators

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/telegauge/telegauge/broker"
	"github.com/telegauge/telegauge/internal/testutil"
)

// eventually polls check until it holds or the test fails.
var eventually = testutil.Eventually

// message is one publish the broker handed to the sink.
type message struct {
	topic   string
	payload []byte
}

// countingSink records what the broker offers it.
type countingSink struct {
	keep  bool // keep payloads, not only counts
	count atomic.Int64

	mu       sync.Mutex // guards messages
	messages []message
}

// Offer implements broker.Sink.
func (s *countingSink) Offer(topic string, payload []byte, _ time.Time) bool {
	s.count.Add(1)
	if s.keep {
		m := message{topic: topic, payload: append([]byte(nil), payload...)}
		s.mu.Lock()
		s.messages = append(s.messages, m)
		s.mu.Unlock()
	}
	return true
}

var _ broker.Sink = (*countingSink)(nil)

func (s *countingSink) Count() int { return int(s.count.Load()) }

func (s *countingSink) Messages() []message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]message(nil), s.messages...)
}

// waitCount waits until the sink has seen exactly n messages.
func (s *countingSink) waitCount(t testing.TB, n int) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		if got := s.Count(); got != n {
			return fmt.Errorf("sink has %d messages, want %d", got, n)
		}
		return nil
	})
}

// newTestBroker runs the repository's embedded mochi broker on a free
// loopback port with sink, and stops it when the test ends.
func newTestBroker(t testing.TB, sink broker.Sink) string {
	t.Helper()
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", Sink: sink}, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return b.Addr()
}
