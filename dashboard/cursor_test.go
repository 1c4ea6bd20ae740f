package dashboard

import (
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCursorRoundTrip(t *testing.T) {
	epoch := newEpoch()
	for _, tc := range []struct {
		name string
		seq  uint64
	}{
		{"zero", 0},
		{"one", 1},
		{"last one-digit", 35},
		{"first two-digit", 36},
		{"large", 1 << 40},
		{"max", math.MaxUint64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := formatCursor(epoch, tc.seq)
			require.True(t, ValidCursor(c))
			e, seq, err := parseCursor(c)
			require.NoError(t, err)
			require.Equal(t, epoch, e)
			require.Equal(t, tc.seq, seq)
		})
	}
}

func TestCursorMalformed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cursor string
	}{
		{"empty", ""},
		{"no separator", "abc"},
		{"only a separator", "-"},
		{"no seq", "abc-"},
		{"no epoch", "-1"},
		{"upper case", "ABC-1"},
		{"two separators", "abc-1-2"},
		{"punctuation", "abc-1!"},
		{"space", "a c-1"},
		{"negative", "abc--1"},
		{"unicode", "äbc-1"},
		{"epoch too long", strings.Repeat("a", 17) + "-1"},
		{"seq too long", "abc-" + strings.Repeat("1", 14)},
		{"seq overflows", "abc-" + strings.Repeat("z", 13)},
		{"newline", "abc-1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.False(t, ValidCursor(tc.cursor))
			_, _, err := parseCursor(tc.cursor)
			require.Equal(t, CodeInvalid, ErrorCode(err))
		})
	}
}

func TestCursorEpoch(t *testing.T) {
	a, b := newEpoch(), newEpoch()
	require.NotEqual(t, a, b, "epochs are random per hub")
	for _, e := range []string{a, b} {
		require.True(t, base36(e))
		require.NotEmpty(t, e)
		require.LessOrEqual(t, len(e), 16)
	}
	h1, err := NewHub(HubConfig{}, nil)
	require.NoError(t, err)
	h2, err := NewHub(HubConfig{}, nil)
	require.NoError(t, err)
	require.NotEqual(t, h1.Cursor(), h2.Cursor(), "a cursor from another hub is foreign")
	require.True(t, ValidCursor(h1.Cursor()))
}
