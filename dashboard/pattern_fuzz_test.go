package dashboard

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest"
)

// FuzzParsePatterns checks subscription patterns (DESIGN.md §4) against the
// contract read literally: a list is accepted exactly when it has at most
// MaxPatterns distinct-or-not entries and each is "#" or "{d}/{m}" with {d}
// a name or "+" and {m} a name, "+" or "#"; a refusal is a short CodeInvalid
// error; an accepted set is canonical (order and repeats do not matter, and
// parsing its List again gives the same set) and matches a series exactly
// when one of its patterns does, by MQTT's rules over two levels.
//
// The list is the input split at newlines, so one input can be empty levels
// ("/x", "dev1/"), "#" in the middle ("dev1/#/x"), huge lists
// (many lines) or non-UTF-8 bytes.
func FuzzParsePatterns(f *testing.F) {
	for _, s := range []struct{ list, probe string }{
		{"dev1/temperature", "dev1/temperature"},
		{"#", "dev9/x"},
		{"dev1/#\n+/temperature\ndev1/#", "dev2/temperature"},
		{"+/+", "a/b"},
		{"+/#", "a/b"},
		{"dev1/+\ndev2/env.t", "dev2/env.t"},
		{"#/temperature", "dev1/temperature"},
		{"dev1/#/x", "dev1/x"},
		{"dev1/", "dev1/x"},
		{"/x", "a/x"},
		{"//", "a/b"},
		{"", "a/b"},
		{"dev1", "dev1/x"},
		{"dev1/a/b", "dev1/a"},
		{"d+/x", "d+/x"},
		{"dev1/t#", "dev1/t#"},
		{"+", "a/b"},
		{"##", "a/b"},
		{"dev\xff/t", "dev1/t"},
		{"dév/t", "dév/t"},
		{strings.Repeat("d", 64) + "/" + strings.Repeat("m", 64), strings.Repeat("d", 64) + "/" + strings.Repeat("m", 64)},
		{strings.Repeat("d", 65) + "/m", "d/m"},
		{strings.Repeat("a/b\n", MaxPatterns+1), "a/b"},
		{strings.Repeat("#\n", MaxPatterns), "a/b"},
		{"dev1/temperature\x00", "dev1/temperature"},
	} {
		f.Add(s.list, s.probe)
	}
	f.Fuzz(func(t *testing.T, in, probe string) {
		list := strings.Split(in, "\n")
		ps, err := ParsePatterns(list)

		want := len(list) <= MaxPatterns
		for _, s := range list {
			want = want && referencePatternValid(s)
		}
		if !want {
			require.Error(t, err, "%q", list)
			requireInvalid(t, err)
			return
		}
		require.NoError(t, err, "%q", list)

		// Canonical: sorted, deduplicated, the same for any order.
		got := ps.List()
		wantList := slices.Clone(list)
		slices.Sort(wantList)
		require.Equal(t, slices.Compact(wantList), got)
		rev := slices.Clone(list)
		slices.Reverse(rev)
		if len(list)*2 <= MaxPatterns {
			again, err := ParsePatterns(append(rev, list...))
			require.NoError(t, err)
			require.Equal(t, ps.Key(), again.Key())
		}
		again, err := ParsePatterns(got)
		require.NoError(t, err)
		require.Equal(t, ps.Key(), again.Key())

		// Matching, for the probe and for series made from the patterns.
		probes := []string{probe, "dev1/temperature", "x/y"}
		for _, s := range list {
			d, m, _ := strings.Cut(s, "/")
			if d == "+" || d == "#" {
				d = "anydev"
			}
			if m == "+" || m == "#" || m == "" {
				m = "anymetric"
			}
			probes = append(probes, d+"/"+m)
		}
		for _, p := range probes {
			if !ingest.ValidSeries(p) {
				continue
			}
			wantMatch := false
			for _, s := range list {
				wantMatch = wantMatch || referencePatternMatch(s, p)
			}
			require.Equal(t, wantMatch, ps.Match(p), "patterns %q, series %q", list, p)
			if wantMatch {
				require.True(t, ps.MatchDevice(ingest.SeriesDevice(p)), "patterns %q, device of %q", list, p)
			}
		}

		// Set algebra: a set with itself is itself; without itself, empty.
		u, err := ps.Union(ps)
		require.NoError(t, err)
		require.Equal(t, ps.Key(), u.Key())
		require.Zero(t, ps.Without(ps).Len())
		require.Equal(t, ps.Key(), ps.Without(Patterns{}).Key())
	})
}

// referencePatternValid is DESIGN.md §4's pattern syntax.
func referencePatternValid(s string) bool {
	if s == "#" {
		return true
	}
	levels := strings.Split(s, "/")
	if len(levels) != 2 {
		return false
	}
	d, m := levels[0], levels[1]
	return (d == "+" || ingest.ValidName(d)) && (m == "+" || m == "#" || ingest.ValidName(m))
}

// referencePatternMatch is MQTT topic matching of a valid pattern against a
// valid two-level series.
func referencePatternMatch(pattern, series string) bool {
	if pattern == "#" {
		return true
	}
	pl, sl := strings.Split(pattern, "/"), strings.Split(series, "/")
	for i := range pl {
		switch pl[i] {
		case "#":
			return true
		case "+":
		default:
			if pl[i] != sl[i] {
				return false
			}
		}
	}
	return true
}

// requireInvalid checks that err is a CodeInvalid *Error with a message
// short enough for a log line or an HTTP body, whatever the input.
func requireInvalid(t testing.TB, err error) {
	t.Helper()
	require.Equal(t, CodeInvalid, ErrorCode(err), "%v", err)
	require.LessOrEqual(t, len(err.Error()), 400, "error message length")
}
