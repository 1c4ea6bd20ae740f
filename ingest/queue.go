package ingest

import (
	"context"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// message is one MQTT publish waiting to be decoded.
type message struct {
	topic   string
	payload []byte
	atMs    int64 // arrival, Unix ms
}

// queue is a bounded multi-producer, single-consumer queue of messages, in
// the manner of nats' ipQueue: a mutex-guarded slice, a 1-buffered wake-up
// channel, and a consumer that takes everything queued in one pop. Producers
// never block in push; waitSpace lets a producer that may wait (QoS 1) do so
// for a bounded time.
type queue struct {
	maxLen   int
	maxBytes int

	mu      sync.Mutex // guards the fields below
	msgs    []message
	bytes   int
	space   chan struct{}  // closed and replaced when a pop frees space
	dropped map[string]int // device -> messages refused since the last pop
	closed  bool

	wake chan struct{} // 1-buffered: a pop may find messages
}

func newQueue(maxLen, maxBytes int) *queue {
	return &queue{
		maxLen:   maxLen,
		maxBytes: maxBytes,
		space:    make(chan struct{}),
		dropped:  make(map[string]int),
		wake:     make(chan struct{}, 1),
	}
}

// push appends m unless the queue is full or closed. A refused message is
// counted against device, so the consumer can report it.
func (q *queue) push(m message, device string) bool {
	q.mu.Lock()
	if q.closed || len(q.msgs) >= q.maxLen || q.bytes+len(m.payload) > q.maxBytes {
		if !q.closed {
			q.dropped[device]++
		}
		q.mu.Unlock()
		return false
	}
	q.msgs = append(q.msgs, m)
	q.bytes += len(m.payload)
	first := len(q.msgs) == 1
	q.mu.Unlock()
	if first {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// tryPush is push without counting a refusal: for producers that will wait
// and try again.
func (q *queue) tryPush(m message) (ok bool, space <-chan struct{}, closed bool) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false, nil, true
	}
	if len(q.msgs) >= q.maxLen || q.bytes+len(m.payload) > q.maxBytes {
		space = q.space
		q.mu.Unlock()
		return false, space, false
	}
	q.msgs = append(q.msgs, m)
	q.bytes += len(m.payload)
	first := len(q.msgs) == 1
	q.mu.Unlock()
	if first {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return true, nil, false
}

// pushWait is push that waits up to timeout (or until ctx ends) for space.
func (q *queue) pushWait(ctx context.Context, clock clockwork.Clock, m message, device string, timeout time.Duration) bool {
	var timer <-chan time.Time
	for {
		ok, space, closed := q.tryPush(m)
		if ok {
			return true
		}
		if closed {
			return false
		}
		if timer == nil {
			t := clock.NewTimer(timeout)
			defer t.Stop()
			timer = t.Chan()
		}
		select {
		case <-space:
		case <-timer:
			return q.push(m, device)
		case <-ctx.Done():
			return q.push(m, device)
		}
	}
}

// pop moves every queued message into buf (which it returns, grown as
// needed) and hands back the refusals counted since the previous pop.
func (q *queue) pop(buf []message, dropped map[string]int) ([]message, map[string]int) {
	q.mu.Lock()
	buf = append(buf[:0], q.msgs...)
	clear(q.msgs)
	q.msgs = q.msgs[:0]
	freed := len(buf) > 0 && !q.closed
	q.bytes = 0
	if len(q.dropped) > 0 {
		q.dropped, dropped = dropped, q.dropped
	}
	if freed {
		close(q.space)
		q.space = make(chan struct{})
	}
	q.mu.Unlock()
	return buf, dropped
}

// length returns the number of queued messages.
func (q *queue) length() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.msgs)
}

// close refuses further pushes and wakes any waiting producer.
func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.space)
	}
}
