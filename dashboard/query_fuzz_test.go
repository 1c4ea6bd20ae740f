package dashboard

import (
	"context"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/telegauge/telegauge/ingest"
)

// FuzzParseTime checks the from/to parameters of queries and exports: Unix
// ms, RFC 3339, "now" or relative. Anything is either a time or a short
// CodeInvalid error; Unix ms and RFC 3339 forms of a time round-trip, and a
// relative time is now moved by the duration.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{
		"1700000000123", "0", "-1", "9223372036854775807", "-9223372036854775808", "9223372036854775808",
		"2023-11-14T22:13:20Z", "2023-11-14T23:13:20.123456789+01:00", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z",
		"10000-01-01T00:00:00Z", "2023-11-14", "now", "", " -1h ", "-1h", "+5m", "-7d", "-2w", "-5200w", "-5201w",
		"-90", "-1e9", "-1e10", "-NaN", "+Inf", "--1s", "-2562047h47m16.854775807s", "-2562048h", "+-1h", "-1.5d",
		"yesterday", "\xff", "1700000000123\x00",
	} {
		f.Add(s, int64(1_700_000_000_000))
	}
	f.Fuzz(func(t *testing.T, s string, nowMs int64) {
		// The server clock is a real time; keep it in this millennium's
		// neighbourhood (time.Time ± the longest relative time then stays
		// within what UnixMilli can represent).
		now := time.UnixMilli(nowMs % (1 << 45))
		ms, err := ParseTime(s, now)
		if err != nil {
			requireInvalid(t, err)
			return
		}
		trimmed := strings.TrimSpace(s)
		switch {
		case trimmed == "" || trimmed == "now":
			require.Equal(t, now.UnixMilli(), ms)
		case trimmed[0] == '-' || trimmed[0] == '+':
			d, err := ParseDuration(trimmed[1:])
			require.NoError(t, err)
			if trimmed[0] == '-' {
				d = -d
			}
			require.Equal(t, now.Add(d).UnixMilli(), ms)
		}
		// What a client would send for the same instant parses back to it.
		// (A leading '-' makes a relative time, so Unix ms before 1970 have
		// only their RFC 3339 form.)
		if ms >= 0 {
			back, err := ParseTime(strconv.FormatInt(ms, 10), now)
			require.NoError(t, err)
			require.Equal(t, ms, back)
		}
		if tm := time.UnixMilli(ms).UTC(); tm.Year() >= 0 && tm.Year() <= 9999 {
			back, err := ParseTime(tm.Format(time.RFC3339Nano), now)
			require.NoError(t, err)
			require.Equal(t, ms, back)
		}
	})
}

// FuzzParseStep checks the step parameter and, through it, ParseDuration:
// "", "auto" and "raw" are the special forms; anything else is a positive
// whole number of seconds or a short CodeInvalid error, and a step's Go
// duration form parses back to it.
func FuzzParseStep(f *testing.F) {
	for _, s := range []string{
		"", "auto", "raw", "1s", "90s", "1m", "5m", "1h", "1d", "2w", "60", "0.5", "1.5", "1e3", "1e9", "1e10",
		"0s", "0", "1500ms", "-1m", "--1m", "NaN", "Inf", "AUTO", "5200w", "5201w", "2562047h", "2562048h",
		"9223372036s", "1d1h", "d", "1.5d", "\x00", "1h\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := ParseDuration(s); err == nil {
			// Only time.ParseDuration may give a negative duration; every
			// caller checks the sign.
			if d < 0 {
				require.True(t, strings.HasPrefix(s, "-"), "%q gave %v", s, d)
			}
		}
		stepMs, raw, err := ParseStep(s)
		if err != nil {
			requireInvalid(t, err)
			return
		}
		switch s {
		case "", "auto":
			require.Zero(t, stepMs)
			require.False(t, raw)
			return
		case "raw":
			require.Zero(t, stepMs)
			require.True(t, raw)
			return
		}
		require.False(t, raw)
		require.Positive(t, stepMs)
		require.Zero(t, stepMs%1000)
		back, _, err := ParseStep((time.Duration(stepMs) * time.Millisecond).String())
		require.NoError(t, err)
		require.Equal(t, stepMs, back)
	})
}

// FuzzQuery runs history queries with arbitrary ranges, steps and caps over
// a real aggregator and store holding a few hundred readings. Bad requests
// are CodeInvalid (unknown series CodeNotFound), never anything else; an
// answer has at most the point cap of buckets, in order, at starts inside
// [from, to) that are multiples of its step (a multiple of the step asked
// for), and counts exactly the readings of those buckets.
func FuzzQuery(f *testing.F) {
	e := newTestQuerier(f, QueryConfig{MaxPoints: 1000})
	end := t0.UnixMilli()
	var rs []ingest.Reading
	for i := range 300 {
		rs = append(rs, rd("dev1/a", end-int64(i)*7_001, float64(i%17)))
	}
	for i := range 20 {
		rs = append(rs, rd("dev2/b", end-int64(i)*3_600_000, float64(i)))
	}
	e.offer(f, rs[:250]...)
	e.flush(f)
	e.offer(f, rs[250:]...) // some unflushed
	e.settle(f)

	for _, s := range []struct {
		series         string
		from, to, step int64
		maxPoints      int
		raw            bool
	}{
		{"dev1/a", end - 3_600_000, end + 1, 0, 0, false},
		{"dev1/a", end - 3_600_000, end + 1, 1000, 10, false},
		{"dev1/a,dev2/b", end - 86_400_000, end + 1, 60_000, 0, false},
		{"dev1/a", end - 60_000, end + 1, 0, 5, true},
		{"dev1/a", math.MinInt64, math.MaxInt64, 0, 0, false},
		{"dev1/a", math.MinInt64, math.MaxInt64, 1000, 3, false},
		{"dev1/a", 0, math.MaxInt64, 0, 1, false},
		{"dev1/a", math.MinInt64 + 1, end, 9_223_372_036_000, 0, false},
		{"dev1/a", end, end, 0, 0, false},
		{"dev1/a", end, end - 1, 0, 0, false},
		{"dev1/a", end - 1000, end, 1500, 0, false},
		{"dev1/a", end - 1000, end, -1000, 0, false},
		{"dev1/a", end - 1000, end, 0, -1, false},
		{"dev1/a", end - 1000, end, 0, 1001, false},
		{"dev9/none", end - 1000, end, 0, 0, false},
		{"dev1/#", end - 1000, end, 0, 0, false},
		{"", end - 1000, end, 0, 0, false},
	} {
		f.Add(s.series, s.from, s.to, s.step, s.maxPoints, s.raw)
	}
	f.Fuzz(func(t *testing.T, series string, fromMs, toMs, stepMs int64, maxPoints int, raw bool) {
		var ids []string
		if series != "" {
			ids = strings.Split(series, ",")
		}
		req := QueryRequest{Series: ids, FromMs: fromMs, ToMs: toMs, StepMs: stepMs, Raw: raw, MaxPoints: maxPoints}
		out, err := e.q.Query(context.Background(), req)
		if err != nil {
			code := ErrorCode(err)
			require.Contains(t, []Code{CodeInvalid, CodeNotFound}, code, "%v", err)
			require.LessOrEqual(t, len(err.Error()), 400)
			return
		}
		require.Len(t, out, len(ids))
		limit := maxPoints
		if limit == 0 {
			limit = 1500
		}
		for i, d := range out {
			require.Equal(t, ids[i], d.ID)
			n := len(d.T)
			require.LessOrEqual(t, n, limit, "point cap")
			for _, col := range []int{len(d.Min), len(d.Max), len(d.Avg), len(d.Count), len(d.Last)} {
				require.Equal(t, n, col, "columns of equal length")
			}
			require.True(t, slices.IsSorted(d.T))
			if raw {
				require.Zero(t, d.StepMs)
				for _, tm := range d.T {
					require.GreaterOrEqual(t, tm, fromMs)
					require.Less(t, tm, toMs)
				}
				continue
			}
			require.Positive(t, d.StepMs)
			require.Zero(t, d.StepMs%1000)
			if stepMs != 0 {
				require.Zero(t, d.StepMs%stepMs, "the step is a multiple of the one asked for")
			}
			for j, tm := range d.T {
				require.GreaterOrEqual(t, tm, fromMs)
				require.Less(t, tm, toMs)
				require.Zero(t, ((tm%d.StepMs)+d.StepMs)%d.StepMs, "bucket start on the step grid")
				require.Positive(t, d.Count[j])
				if j > 0 {
					require.Less(t, d.T[j-1], tm)
				}
			}
			requireSeriesData(t, expect(rs, d.ID, d.StepMs, fromMs, toMs), d)
		}
	})
}
