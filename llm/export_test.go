package llm

import (
	"context"
	"time"
)

// SetSleep replaces the retry wait of a; the test's f sees each wait.
func SetSleep(a *Answerer, f func(ctx context.Context, d time.Duration) error) { a.sleep = f }

// SetNow replaces the clock a reads HTTP-date Retry-After values with.
func SetNow(a *Answerer, now func() time.Time) { a.now = now }

// Backoff is backoff, for its bounds test.
var Backoff = backoff

// BackoffMax is the longest backoff without Retry-After.
const BackoffMax = backoffMax
