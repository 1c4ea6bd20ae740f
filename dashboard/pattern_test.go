package dashboard

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPatternMatch(t *testing.T) {
	series := []string{"dev1/temperature", "dev1/humidity", "dev2/temperature", "dev10/temperature", "dev1/env.t"}
	for _, tc := range []struct {
		name    string
		pattern string
		want    []string // the series of the list above it matches
	}{
		{"everything", "#", series},
		{"any device, any metric", "+/+", series},
		{"any device, every metric", "+/#", series},
		{"one device, every metric", "dev1/#", []string{"dev1/temperature", "dev1/humidity", "dev1/env.t"}},
		{"one device, any metric", "dev1/+", []string{"dev1/temperature", "dev1/humidity", "dev1/env.t"}},
		{"one metric, any device", "+/temperature", []string{"dev1/temperature", "dev2/temperature", "dev10/temperature"}},
		{"exact", "dev1/temperature", []string{"dev1/temperature"}},
		{"exact, flattened metric", "dev1/env.t", []string{"dev1/env.t"}},
		{"no prefix match within a metric", "dev1/env", nil},
		{"no prefix match within a device", "dev/#", nil},
		{"longer metric", "dev1/temperatures", nil},
		{"case-sensitive", "Dev1/temperature", nil},
		{"unknown device", "dev3/#", nil},
		{"unknown metric", "+/pressure", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps, err := ParsePatterns([]string{tc.pattern})
			require.NoError(t, err)
			var got []string
			for _, s := range series {
				if ps.Match(s) {
					got = append(got, s)
				}
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func TestPatternMatchDevice(t *testing.T) {
	for _, tc := range []struct {
		name     string
		patterns []string
		device   string
		want     bool
	}{
		{"everything", []string{"#"}, "dev1", true},
		{"any device", []string{"+/temperature"}, "dev1", true},
		{"the device, every metric", []string{"dev1/#"}, "dev1", true},
		{"the device, one metric", []string{"dev1/temperature"}, "dev1", true},
		{"another device", []string{"dev2/#"}, "dev1", false},
		{"several, none of it", []string{"dev2/#", "dev3/a"}, "dev1", false},
		{"several, one of it", []string{"dev2/#", "dev1/a"}, "dev1", true},
		{"empty subscription", nil, "dev1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps, err := ParsePatterns(tc.patterns)
			require.NoError(t, err)
			require.Equal(t, tc.want, ps.MatchDevice(tc.device))
		})
	}
}

func TestPatternInvalid(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pattern string
	}{
		{"empty", ""},
		{"one level", "dev1"},
		{"three levels", "dev1/a/b"},
		{"hash not last", "#/temperature"},
		{"hash then more", "dev1/#/x"},
		{"plus inside a name", "dev+/a"},
		{"hash inside a name", "dev1/te#mp"},
		{"empty device", "/temperature"},
		{"empty metric", "dev1/"},
		{"bad character", "dev 1/temperature"},
		{"unicode", "dév/temperature"},
		{"name too long", strings.Repeat("d", 65) + "/a"},
		{"just a slash", "/"},
		{"plus alone", "+"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePatterns([]string{"dev1/#", tc.pattern})
			require.Error(t, err)
			require.Equal(t, CodeInvalid, ErrorCode(err))
		})
	}
}

func TestPatternsCanonical(t *testing.T) {
	a, err := ParsePatterns([]string{"b/#", "a/x", "+/t", "a/x"})
	require.NoError(t, err)
	b, err := ParsePatterns([]string{"+/t", "a/x", "b/#"})
	require.NoError(t, err)
	require.Equal(t, a.Key(), b.Key())
	require.Equal(t, []string{"+/t", "a/x", "b/#"}, a.List())
	require.Equal(t, 3, a.Len())

	c, err := ParsePatterns([]string{"+/t", "a/x"})
	require.NoError(t, err)
	require.NotEqual(t, a.Key(), c.Key())

	// List returns a copy.
	l := a.List()
	l[0] = "changed"
	require.Equal(t, "+/t", a.List()[0])
}

func TestPatternsLimit(t *testing.T) {
	many := make([]string, MaxPatterns+1)
	for i := range many {
		many[i] = fmt.Sprintf("dev%d/#", i)
	}
	_, err := ParsePatterns(many[:MaxPatterns])
	require.NoError(t, err)
	_, err = ParsePatterns(many)
	require.Equal(t, CodeInvalid, ErrorCode(err))
}

func TestPatternsUnionWithout(t *testing.T) {
	ps := func(list ...string) Patterns {
		p, err := ParsePatterns(list)
		require.NoError(t, err)
		return p
	}
	u, err := ps("dev1/a", "dev2/#").Union(ps("dev2/#", "+/t"))
	require.NoError(t, err)
	require.Equal(t, []string{"+/t", "dev1/a", "dev2/#"}, u.List())
	require.Equal(t, ps("+/t", "dev1/a", "dev2/#").Key(), u.Key())

	w := u.Without(ps("dev2/#", "dev9/x"))
	require.Equal(t, []string{"+/t", "dev1/a"}, w.List())
	require.True(t, w.Match("dev3/t"))
	require.False(t, w.Match("dev2/b"))

	// Unsubscribing is by exact text: "dev1/a" stays covered by "#".
	all := ps("#", "dev1/a").Without(ps("dev1/a"))
	require.True(t, all.Match("dev1/a"))
	require.True(t, all.Match("x/y"))
	none := all.Without(ps("#"))
	require.Zero(t, none.Len())
	require.False(t, none.Match("x/y"))
	require.False(t, none.MatchDevice("x"))
}
