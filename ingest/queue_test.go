package ingest

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"
)

func qmsg(payload string) message {
	return message{topic: "telemetry/dev1/a", payload: []byte(payload), atMs: 1}
}

func woken(q *queue) bool {
	select {
	case <-q.wake:
		return true
	default:
		return false
	}
}

func TestQueuePushPop(t *testing.T) {
	q := newQueue(10, 1000)
	require.False(t, woken(q))
	require.True(t, q.push(qmsg("1"), "dev1"))
	require.True(t, q.push(qmsg("22"), "dev1"))
	require.True(t, q.push(qmsg("333"), "dev2"))
	require.Equal(t, 3, q.length())
	require.True(t, woken(q), "the first push wakes the consumer")
	require.False(t, woken(q), "once")

	buf, dropped := q.pop(nil, make(map[string]int))
	require.Equal(t, []message{qmsg("1"), qmsg("22"), qmsg("333")}, buf)
	require.Empty(t, dropped)
	require.Equal(t, 0, q.length())
	require.Zero(t, q.bytes)

	// An empty pop returns nothing; the buffer is reused.
	buf, _ = q.pop(buf, dropped)
	require.Empty(t, buf)

	require.True(t, q.push(qmsg("4"), "dev1"))
	require.True(t, woken(q), "a push into an emptied queue wakes again")
	buf, _ = q.pop(buf, dropped)
	require.Equal(t, []message{qmsg("4")}, buf)
}

func TestQueueLimits(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxLen   int
		maxBytes int
		payloads []string
		want     []bool
	}{
		{"message count", 2, 1000, []string{"a", "b", "c", "d"}, []bool{true, true, false, false}},
		{"bytes", 10, 10, []string{"123456", "123456", "1234", "1"}, []bool{true, false, true, false}},
		{"empty payloads count against length only", 3, 0, []string{"", "", "", ""}, []bool{true, true, true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newQueue(tc.maxLen, tc.maxBytes)
			var got []bool
			refused := 0
			for _, p := range tc.payloads {
				ok := q.push(qmsg(p), "dev1")
				got = append(got, ok)
				if !ok {
					refused++
				}
			}
			require.Equal(t, tc.want, got)
			_, dropped := q.pop(nil, make(map[string]int))
			require.Equal(t, map[string]int{"dev1": refused}, dropped)
		})
	}
}

func TestQueueDroppedPerDevice(t *testing.T) {
	q := newQueue(1, 1000)
	require.True(t, q.push(qmsg("1"), "dev1"))
	require.False(t, q.push(qmsg("1"), "dev1"))
	require.False(t, q.push(qmsg("1"), "dev2"))
	require.False(t, q.push(qmsg("1"), "dev2"))

	mine := make(map[string]int)
	buf, dropped := q.pop(nil, mine)
	require.Len(t, buf, 1)
	require.Equal(t, map[string]int{"dev1": 1, "dev2": 2}, dropped)

	// The caller's (cleared) map becomes the queue's: counts start again.
	clear(dropped)
	require.True(t, q.push(qmsg("1"), "dev1"))
	require.False(t, q.push(qmsg("1"), "dev3"))
	_, dropped2 := q.pop(nil, dropped)
	require.Equal(t, map[string]int{"dev3": 1}, dropped2)

	// No refusals: the caller's map comes back as it was.
	clear(dropped2)
	_, dropped3 := q.pop(nil, dropped2)
	require.Empty(t, dropped3)
}

func TestQueueClose(t *testing.T) {
	q := newQueue(10, 1000)
	require.True(t, q.push(qmsg("1"), "dev1"))
	q.close()
	q.close() // idempotent
	require.False(t, q.push(qmsg("2"), "dev1"))
	ok, _, closed := q.tryPush(qmsg("3"))
	require.False(t, ok)
	require.True(t, closed)
	require.False(t, q.pushWait(context.Background(), clockwork.NewFakeClock(), qmsg("4"), "dev1", time.Hour), "no wait once closed")

	// What was queued before close is still drained; refusals after close
	// are not counted (the aggregator has stopped).
	buf, dropped := q.pop(nil, make(map[string]int))
	require.Equal(t, []message{qmsg("1")}, buf)
	require.Empty(t, dropped)
}

func TestQueuePushWait(t *testing.T) {
	const timeout = 5 * time.Second
	for _, tc := range []struct {
		name string
		// act runs while a producer waits on a full queue.
		act         func(q *queue, clock *clockwork.FakeClock, cancel context.CancelFunc)
		want        bool
		wantDropped map[string]int
	}{
		{"space frees up", func(q *queue, _ *clockwork.FakeClock, _ context.CancelFunc) { q.pop(nil, make(map[string]int)) }, true, map[string]int{}},
		{"times out: refused and counted", func(_ *queue, c *clockwork.FakeClock, _ context.CancelFunc) { c.Advance(timeout) }, false, map[string]int{"dev1": 1}},
		{"context ends: refused and counted", func(_ *queue, _ *clockwork.FakeClock, cancel context.CancelFunc) { cancel() }, false, map[string]int{"dev1": 1}},
		{"queue closes: refused", func(q *queue, _ *clockwork.FakeClock, _ context.CancelFunc) { q.close() }, false, map[string]int{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newQueue(1, 1000)
			clock := clockwork.NewFakeClock()
			require.True(t, q.push(qmsg("full"), "dev1"))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			res := make(chan bool, 1)
			go func() { res <- q.pushWait(ctx, clock, qmsg("waiting"), "dev1", timeout) }()

			bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer bcancel()
			require.NoError(t, clock.BlockUntilContext(bctx, 1), "the producer's timer")
			tc.act(q, clock, cancel)
			select {
			case got := <-res:
				require.Equal(t, tc.want, got)
			case <-time.After(5 * time.Second):
				t.Fatal("pushWait did not return")
			}
			buf, dropped := q.pop(nil, make(map[string]int))
			require.Equal(t, tc.wantDropped, dropped)
			if tc.want {
				require.Equal(t, []message{qmsg("waiting")}, buf)
			}
		})
	}
}

func TestQueuePushWaitNoWaitWithSpace(t *testing.T) {
	q := newQueue(2, 1000)
	clock := clockwork.NewFakeClock()
	require.True(t, q.pushWait(context.Background(), clock, qmsg("1"), "dev1", time.Second))
	require.True(t, woken(q))
}
