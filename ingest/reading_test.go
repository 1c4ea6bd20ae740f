package ingest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want bool
	}{
		{name: "lower", in: "temperature", want: true},
		{name: "upper", in: "TEMP", want: true},
		{name: "digits", in: "0123456789", want: true},
		{name: "punctuation", in: "env.t_1-a", want: true},
		{name: "single char", in: "x", want: true},
		{name: "only dots", in: "..", want: true},
		{name: "64 chars", in: strings.Repeat("a", MaxNameLen), want: true},
		{name: "65 chars", in: strings.Repeat("a", MaxNameLen+1), want: false},
		{name: "empty", in: "", want: false},
		{name: "slash", in: "a/b", want: false},
		{name: "space", in: "a b", want: false},
		{name: "mqtt plus wildcard", in: "a+", want: false},
		{name: "mqtt hash wildcard", in: "#", want: false},
		{name: "dollar", in: "$SYS", want: false},
		{name: "colon", in: "urn:dev", want: false},
		{name: "non-ascii letter", in: "température", want: false},
		{name: "nul byte", in: "a\x00", want: false},
		{name: "high byte", in: "a\xff", want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, ValidName(tc.in))
			require.Equal(t, tc.want, validNameBytes([]byte(tc.in)), "validNameBytes must agree with ValidName")
		})
	}
}

func TestValidSeries(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want bool
	}{
		{name: "device and metric", in: "dev1/temperature", want: true},
		{name: "nested metric", in: "dev1/env.t", want: true},
		{name: "longest names", in: strings.Repeat("d", 64) + "/" + strings.Repeat("m", 64), want: true},
		{name: "no slash", in: "dev1", want: false},
		{name: "empty device", in: "/temperature", want: false},
		{name: "empty metric", in: "dev1/", want: false},
		{name: "three levels", in: "dev1/env/t", want: false},
		{name: "device too long", in: strings.Repeat("d", 65) + "/t", want: false},
		{name: "metric too long", in: "d/" + strings.Repeat("m", 65), want: false},
		{name: "bad char", in: "dev 1/t", want: false},
		{name: "empty", in: "", want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, ValidSeries(tc.in))
		})
	}
}

func TestSeriesDevice(t *testing.T) {
	for _, tc := range []struct {
		name   string
		series string
		want   string
	}{
		{name: "series", series: "dev1/temperature", want: "dev1"},
		{name: "nested metric", series: "dev1/env.t", want: "dev1"},
		{name: "no slash", series: "dev1", want: "dev1"},
		{name: "empty", series: "", want: ""},
		{name: "leading slash", series: "/t", want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, SeriesDevice(tc.series))
			require.Equal(t, tc.want, Reading{Series: tc.series}.Device())
		})
	}
}

func TestReason(t *testing.T) {
	want := []struct {
		reason Reason
		name   string
		err    error
	}{
		{ReasonMalformed, "malformed", ErrMalformed},
		{ReasonTooLarge, "too_large", ErrTooLarge},
		{ReasonBadName, "bad_name", ErrBadName},
		{ReasonNotFinite, "not_finite", ErrNotFinite},
		{ReasonBadTime, "bad_time", ErrBadTime},
		{ReasonFuture, "future", ErrFuture},
		{ReasonTooOld, "too_old", ErrTooOld},
		{ReasonTooManySeries, "too_many_series", ErrTooManySeries},
		{ReasonOverload, "overload", ErrOverload},
	}
	// The names are API (rejectedByReason, metric labels): this table pins
	// them, and its length pins NumReasons, so adding a reason means adding
	// it here too.
	require.Len(t, want, NumReasons)
	for _, tc := range want {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.name, tc.reason.String())
			require.Same(t, tc.err, tc.reason.Err())
			// Sentinel messages are lowercase without trailing punctuation.
			msg := tc.err.Error()
			require.Equal(t, strings.ToLower(msg), msg)
			require.NotRegexp(t, `[.!?]$`, msg)
		})
	}
	t.Run("sentinels are distinct", func(t *testing.T) {
		for i := range NumReasons {
			for j := range NumReasons {
				require.Equal(t, i == j, errors.Is(Reason(i).Err(), Reason(j).Err()), "%v vs %v", Reason(i), Reason(j))
			}
		}
	})
	t.Run("out of range", func(t *testing.T) {
		r := Reason(NumReasons)
		require.Equal(t, fmt.Sprintf("reason(%d)", NumReasons), r.String())
		require.Equal(t, "reason(255)", Reason(255).String())
		require.Same(t, ErrMalformed, r.Err())
	})
}

func TestRejectError(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     *RejectError
		wantMsg string
		wantIs  error
	}{
		{
			name:    "with detail",
			err:     &RejectError{Reason: ReasonTooOld, Detail: "ts 5 is 1h old"},
			wantMsg: "timestamp older than the late window: ts 5 is 1h old",
			wantIs:  ErrTooOld,
		},
		{
			name:    "without detail",
			err:     &RejectError{Reason: ReasonNotFinite},
			wantMsg: "value is not finite",
			wantIs:  ErrNotFinite,
		},
		{
			name:    "zero value is malformed",
			err:     &RejectError{},
			wantMsg: "malformed payload",
			wantIs:  ErrMalformed,
		},
		{
			name:    "from reject",
			err:     reject(ReasonBadName, "metric name %q", "a b"),
			wantMsg: `invalid name: metric name "a b"`,
			wantIs:  ErrBadName,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.wantMsg, tc.err.Error())
			require.ErrorIs(t, tc.err, tc.wantIs)
			var err error = tc.err
			var re *RejectError
			require.ErrorAs(t, err, &re)
			require.Equal(t, tc.err.Reason, re.Reason)
			for i := range NumReasons {
				if Reason(i).Err() != tc.wantIs {
					require.NotErrorIs(t, tc.err, Reason(i).Err())
				}
			}
		})
	}
}
