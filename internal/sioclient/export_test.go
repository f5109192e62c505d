package sioclient

import "time"

// WithRetryTimer returns o with f deciding when attempt n of Dial stops
// waiting for its CONNECT reply and starts over (see Options.retryTimer).
func WithRetryTimer(o Options, f func(n int, d time.Duration) <-chan time.Time) Options {
	o.retryTimer = f
	return o
}
