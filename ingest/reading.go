package ingest

import (
	"errors"
	"fmt"
	"strings"
)

// Reading is one accepted sensor value: the series it belongs to, the time it
// was taken and its value. It is also the unit of a live frame, where it is
// encoded as {"s","t","v"}.
type Reading struct {
	Series string  // "{device}/{metric}"
	TimeMs int64   // reading time, Unix ms
	Value  float64 // finite
}

// Device returns the device part of the reading's series id.
func (r Reading) Device() string { return SeriesDevice(r.Series) }

// SeriesDevice returns the device part of a series id ("dev1" for
// "dev1/temperature"). Device names cannot contain '/', so the first one ends it.
func SeriesDevice(series string) string {
	if i := strings.IndexByte(series, '/'); i >= 0 {
		return series[:i]
	}
	return series
}

// MaxNameLen is the longest device or metric name accepted (DESIGN.md §3).
const MaxNameLen = 64

// ValidName reports whether s is a valid device or metric name: 1 to 64 of
// A-Z a-z 0-9 . _ -
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameChar[s[i]] {
			return false
		}
	}
	return true
}

var nameChar = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t['.'], t['_'], t['-'] = true, true, true
	return t
}()

// ValidSeries reports whether s is "{device}/{metric}" with two valid names.
func ValidSeries(s string) bool {
	dev, metric, ok := strings.Cut(s, "/")
	return ok && ValidName(dev) && ValidName(metric)
}

// Reason is why a reading or payload was rejected. Reasons are counted per
// device and shown in the API by their String names.
type Reason uint8

// The rejection reasons. Their names are part of the HTTP API
// (rejectedByReason) and of metric labels: do not rename them.
const (
	ReasonMalformed     Reason = iota // not a payload of any accepted form
	ReasonTooLarge                    // payload over the size cap
	ReasonBadName                     // device or metric name outside the charset or too long
	ReasonNotFinite                   // NaN or ±Inf
	ReasonBadTime                     // ts present but not a time
	ReasonFuture                      // ts too far ahead of the server clock
	ReasonTooOld                      // ts older than the late window
	ReasonTooManySeries               // the device is at its series limit
	ReasonOverload                    // refused because ingest had stopped
	NumReasons          int    = iota
)

var reasonNames = [NumReasons]string{
	"malformed", "too_large", "bad_name", "not_finite", "bad_time",
	"future", "too_old", "too_many_series", "overload",
}

// String returns the reason's API name, such as "too_old".
func (r Reason) String() string {
	if int(r) < NumReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Sentinel errors, one per reason, for errors.Is. A *RejectError wraps one.
var (
	ErrMalformed     = errors.New("malformed payload")
	ErrTooLarge      = errors.New("payload too large")
	ErrBadName       = errors.New("invalid name")
	ErrNotFinite     = errors.New("value is not finite")
	ErrBadTime       = errors.New("invalid timestamp")
	ErrFuture        = errors.New("timestamp too far in the future")
	ErrTooOld        = errors.New("timestamp older than the late window")
	ErrTooManySeries = errors.New("too many series for device")
	ErrOverload      = errors.New("ingest overloaded")
)

var reasonErrs = [NumReasons]error{
	ErrMalformed, ErrTooLarge, ErrBadName, ErrNotFinite, ErrBadTime,
	ErrFuture, ErrTooOld, ErrTooManySeries, ErrOverload,
}

// Err returns the sentinel error of the reason.
func (r Reason) Err() error {
	if int(r) < NumReasons {
		return reasonErrs[r]
	}
	return ErrMalformed
}

// RejectError describes one rejection: its reason and what was wrong.
type RejectError struct {
	Reason Reason
	Detail string // short, safe to show to an operator
}

func (e *RejectError) Error() string {
	if e.Detail == "" {
		return e.Reason.Err().Error()
	}
	return e.Reason.Err().Error() + ": " + e.Detail
}

// Unwrap returns the reason's sentinel, so errors.Is(err, ErrTooOld) works.
func (e *RejectError) Unwrap() error { return e.Reason.Err() }

func reject(r Reason, format string, args ...any) *RejectError {
	return &RejectError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}
