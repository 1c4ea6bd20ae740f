package ratelimit

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var t0 = time.Unix(1_700_000_000, 0)

// TestLimiterBounded: the limiter holds at most max keys: full buckets are
// dropped to make room, and with none to drop new keys are refused.
func TestLimiterBounded(t *testing.T) {
	l := New(2, time.Minute, 2)
	now := t0
	ok, _, _ := l.Take("a", now)
	require.True(t, ok)
	ok, _, _ = l.Take("b", now)
	require.True(t, ok)
	ok, wait, _ := l.Take("c", now)
	require.False(t, ok, "both held keys are mid-episode")
	require.Equal(t, time.Minute, wait)
	now = now.Add(time.Minute) // a and b are full again: dropped for c
	ok, _, _ = l.Take("c", now)
	require.True(t, ok)
	require.Equal(t, 1, l.Len())
	_, _, _ = l.Take("c", now)
	ok, wait, first := l.Take("c", now)
	require.False(t, ok)
	require.True(t, first)
	require.Equal(t, time.Minute, wait)
	_, _, first = l.Take("c", now)
	require.False(t, first, "one log line per episode")
}
