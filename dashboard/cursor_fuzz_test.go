package dashboard

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest"
)

// FuzzCursor checks live cursors from clients (DESIGN.md §4: opaque to
// clients; malformed is a 400, well-formed but unknown or too old is a
// reset). parseCursor must accept exactly "{epoch}-{seq}" in lowercase base
// 36 within the length limits and uint64, and round-trip. A hub given the
// cursor by Admit, Subscribe or AddSeries refuses a malformed one with
// CodeInvalid and registers nothing; a well-formed one resumes (every
// reading after it, once) only when it is of the hub's epoch and still in
// its ring, and otherwise resets.
//
// sameEpoch puts the hub's own epoch in front of the fuzzed seq, so that
// resumes are reached: the hub's epoch is random.
func FuzzCursor(f *testing.F) {
	for _, s := range []struct {
		cursor    string
		sameEpoch bool
	}{
		{"1y2p0ij32e8e7-1", false},
		{"x-0", true},
		{"x-3", true},
		{"x-6", true},
		{"x-7", true},
		{"x-1", true},
		{"x-zzzzzzzzzzzz", true},
		{"x-3w5e11264sgsf", true},
		{"x-3w5e11264sgsg", true},
		{"x-00000000000003", true},
		{"x-0000000000003", true},
		{"x--1", true},
		{"x-", true},
		{"-1", false},
		{"", false},
		{"abc-1\n", false},
		{"ABC-1", false},
		{"abc-1-2", false},
		{strings.Repeat("a", 16) + "-1", false},
		{strings.Repeat("a", 17) + "-1", false},
		{"äbc-1", false},
		{"abc-\xff", false},
		{strings.Repeat("9", 4096), false},
	} {
		f.Add(s.cursor, s.sameEpoch)
	}
	f.Fuzz(func(t *testing.T, cursor string, sameEpoch bool) {
		h, frames := newFuzzHub(t)
		if sameEpoch {
			if _, seq, ok := strings.Cut(cursor, "-"); ok {
				cursor = h.epoch + "-" + seq
			}
		}

		epoch, seq, err := parseCursor(cursor)
		wantSeq, wantOK := referenceCursor(cursor)
		require.Equal(t, wantOK, err == nil, "cursor %q: %v", cursor, err)
		require.Equal(t, wantOK, ValidCursor(cursor))
		if err != nil {
			requireInvalid(t, err)
			if cursor == "" {
				return // no cursor: start from now, which the hub tests cover
			}
			requireInvalid(t, h.Admit(SubscribeOptions{Cursor: cursor}))
			_, _, err := h.Subscribe(mustPatterns(t, "#"), SubscribeOptions{Cursor: cursor})
			requireInvalid(t, err)
			v, _, err := h.Subscribe(mustPatterns(t, "dev1/a"), SubscribeOptions{})
			require.NoError(t, err)
			_, err = h.AddSeries(v, mustPatterns(t, "#"), cursor)
			requireInvalid(t, err)
			v.Close()
			require.Empty(t, h.viewers, "a refused cursor registers nothing")
			return
		}
		require.Equal(t, wantSeq, seq)
		e2, s2, err := parseCursor(formatCursor(epoch, seq))
		require.NoError(t, err)
		require.Equal(t, epoch, e2)
		require.Equal(t, seq, s2)
		require.NoError(t, h.Admit(SubscribeOptions{Cursor: cursor}))

		resume := epoch == h.epoch && seq <= h.seq && seq >= h.evictedUpTo
		v, ack, err := h.Subscribe(mustPatterns(t, "#"), SubscribeOptions{Cursor: cursor})
		require.NoError(t, err)
		defer v.Close()
		evs := v.Next(nil)
		require.NotEmpty(t, evs)
		require.Equal(t, EventSubscribed, evs[0].Kind)
		require.Equal(t, ack, evs[0].Cursor)
		if !resume {
			require.Equal(t, h.Cursor(), ack)
			require.Len(t, evs, 2)
			require.Equal(t, EventReset, evs[1].Kind)
			return
		}
		require.Equal(t, cursor, ack)
		var got []float64
		for _, e := range evs[1:] {
			require.Equal(t, EventPoints, e.Kind)
			for _, p := range e.Msg.Points {
				got = append(got, p.Value)
			}
		}
		var want []float64
		for s := seq + 1; s <= uint64(frames); s++ {
			want = append(want, float64(s))
		}
		require.Equal(t, want, got, "every reading after %d, once", seq)
	})
}

// newFuzzHub returns a hub (not running: frames are built by calling frame)
// with frames 1..n of one reading each, value = seq, a minute apart, the
// oldest of them evicted from the ring.
func newFuzzHub(t testing.TB) (*Hub, int) {
	t.Helper()
	clock := clockwork.NewFakeClockAt(t0)
	h, err := NewHub(HubConfig{Clock: clock, ResumeWindow: 3 * time.Minute}, nil)
	require.NoError(t, err)
	const n = 6
	for i := 1; i <= n; i++ {
		clock.Advance(time.Minute)
		h.Publish([]ingest.Reading{{Series: "dev1/t", TimeMs: clock.Now().UnixMilli(), Value: float64(i)}})
		h.frame()
	}
	require.Equal(t, uint64(n), h.seq)
	require.NotZero(t, h.evictedUpTo, "some frames are too old to resume from")
	return h, n
}

// referenceCursor is the cursor syntax: 1-16 base-36 epoch digits, "-",
// 1-13 base-36 seq digits whose value fits uint64.
func referenceCursor(s string) (uint64, bool) {
	i := strings.IndexByte(s, '-')
	if i < 1 || i > 16 {
		return 0, false
	}
	epoch, num := s[:i], s[i+1:]
	if len(num) < 1 || len(num) > 13 {
		return 0, false
	}
	for _, part := range []string{epoch, num} {
		for _, c := range []byte(part) {
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z') {
				return 0, false
			}
		}
	}
	seq, err := strconv.ParseUint(num, 36, 64)
	return seq, err == nil
}
