package socketio

import (
	"errors"
	"fmt"
	"time"
)

// Code is a stable, machine-readable error code from docs/protocol.md. Clients
// switch on it; the accompanying message is for people.
type Code string

// The error codes of the wire contract (docs/protocol.md, "Error codes").
const (
	CodeInvalidPayload     Code = "invalid_payload"
	CodeInvalidRoom        Code = "invalid_room"
	CodeForbidden          Code = "forbidden"
	CodeLimitExceeded      Code = "limit_exceeded"
	CodeQuestionInvalid    Code = "question_invalid"
	CodeQuestionTooLong    Code = "question_too_long"
	CodeRateLimited        Code = "rate_limited"
	CodeTooManyTasks       Code = "too_many_tasks"
	CodeNotFound           Code = "not_found"
	CodeUnauthorized       Code = "unauthorized"
	CodeIPBlocked          Code = "ip_blocked"
	CodeTooManyConnections Code = "too_many_connections"
	CodeRejected           Code = "rejected"
	CodeUnknownEvent       Code = "unknown_event"
	CodeUnavailable        Code = "unavailable"
	CodeInternal           Code = "internal"

	// Codes carried by answer_error.
	CodeAnswerFailed Code = "answer_failed"
	CodeTimeout      Code = "timeout"
	CodeCancelled    Code = "cancelled"
)

// Error is an error with a docs/protocol.md code. It is what a hook returns to
// refuse an event with a specific code, and what the client receives.
// Match it with errors.As, or compare codes with errors.Is against the
// sentinel errors of this package (ErrForbidden, ErrRateLimited, …).
type Error struct {
	Code    Code
	Message string
	// RetryAfter, when positive, tells the client how long to wait before
	// the same request could succeed (sent as retry_after_ms, rounded up).
	RetryAfter time.Duration
}

// NewError returns an *Error with the given code and message.
func NewError(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Message
}

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, ErrRateLimited) holds for any rate_limited error.
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) {
		return t.Code == e.Code
	}
	return false
}

// Sentinel errors, one per code, for use with errors.Is.
var (
	ErrInvalidPayload     = &Error{Code: CodeInvalidPayload, Message: "invalid payload"}
	ErrInvalidRoom        = &Error{Code: CodeInvalidRoom, Message: "invalid room name"}
	ErrForbidden          = &Error{Code: CodeForbidden, Message: "forbidden"}
	ErrLimitExceeded      = &Error{Code: CodeLimitExceeded, Message: "limit exceeded"}
	ErrQuestionInvalid    = &Error{Code: CodeQuestionInvalid, Message: "invalid question"}
	ErrQuestionTooLong    = &Error{Code: CodeQuestionTooLong, Message: "question too long"}
	ErrRateLimited        = &Error{Code: CodeRateLimited, Message: "rate limited"}
	ErrTooManyTasks       = &Error{Code: CodeTooManyTasks, Message: "too many unfinished tasks"}
	ErrNotFound           = &Error{Code: CodeNotFound, Message: "not found"}
	ErrUnauthorized       = &Error{Code: CodeUnauthorized, Message: "unauthorized"}
	ErrIPBlocked          = &Error{Code: CodeIPBlocked, Message: "address blocked"}
	ErrTooManyConnections = &Error{Code: CodeTooManyConnections, Message: "too many connections"}
	ErrRejected           = &Error{Code: CodeRejected, Message: "rejected"}
	ErrUnknownEvent       = &Error{Code: CodeUnknownEvent, Message: "unknown event"}
	ErrUnavailable        = &Error{Code: CodeUnavailable, Message: "service unavailable"}
	ErrInternal           = &Error{Code: CodeInternal, Message: "internal error"}
)

// ErrorCode returns the code carried by err, or "" when err carries none.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// toWireError turns any error into the *Error sent to a client. It is the one
// place where errors cross to the wire: an error without a code becomes
// fallback (internal unless the caller says otherwise), so that details of
// unexpected failures stay in the log.
func toWireError(err error, fallback Code) *Error {
	var e *Error
	if errors.As(err, &e) {
		if e.Message == "" {
			return &Error{Code: e.Code, Message: string(e.Code), RetryAfter: e.RetryAfter}
		}
		return e
	}
	switch fallback {
	case CodeRejected:
		return &Error{Code: CodeRejected, Message: "connection rejected"}
	case CodeForbidden:
		return &Error{Code: CodeForbidden, Message: "request refused"}
	case CodeUnavailable:
		return &Error{Code: CodeUnavailable, Message: "service unavailable"}
	}
	return &Error{Code: CodeInternal, Message: "internal error"}
}

// wire renders the error as the docs/protocol.md error object.
func (e *Error) wire() map[string]any {
	m := map[string]any{"code": string(e.Code), "message": e.Message}
	if e.RetryAfter > 0 {
		m["retry_after_ms"] = retryAfterMillis(e.RetryAfter)
	}
	return m
}

// retryAfterMillis rounds d up to whole milliseconds.
func retryAfterMillis(d time.Duration) int64 {
	ms := d / time.Millisecond
	if d%time.Millisecond != 0 {
		ms++
	}
	return int64(ms)
}
