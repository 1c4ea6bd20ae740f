package dashboard

import (
	"errors"
	"fmt"
)

// Code classifies an Error. The web tier maps each code to one HTTP status.
type Code string

// The error codes.
const (
	CodeInvalid     Code = "invalid"     // bad parameters: HTTP 400
	CodeNotFound    Code = "not_found"   // unknown series or object: 404
	CodeTooLarge    Code = "too_large"   // request too large: 413
	CodeTooMany     Code = "too_many"    // too many streams: 429
	CodeUnavailable Code = "unavailable" // shutting down: 503
	CodeInternal    Code = "internal"    // anything else: 500
)

// Error is an error with a code and a message safe to show to clients.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of err: the Code of an *Error in its chain, or
// CodeInternal.
func ErrorCode(err error) Code {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Code
	}
	return CodeInternal
}

// ErrClosed is returned by a hub that is shutting down.
var ErrClosed = &Error{Code: CodeUnavailable, Message: "server is shutting down"}
