package redisadapter

import "errors"

var (
	// ErrClosed is returned by Health after Close, and passed to the
	// callbacks of requests still pending when their adapter closes.
	ErrClosed = errors.New("redisadapter: closed")

	// ErrTimeout is passed (wrapped) to the callback of a cluster request
	// when some nodes did not answer within its timeout, together with the
	// answers that did arrive.
	ErrTimeout = errors.New("redisadapter: request timed out")

	// ErrUnhealthy is wrapped by the error Health returns when the stream
	// reader, the subscription or the publishing client is down.
	ErrUnhealthy = errors.New("redisadapter: unhealthy")

	// ErrNotRunning is returned by Health while no namespace uses the
	// adapter: nothing is read from Redis.
	ErrNotRunning = errors.New("redisadapter: no namespace attached")
)
