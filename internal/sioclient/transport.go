package sioclient

import "time"

// transport carries Engine.IO text packets. write may be called concurrently
// with itself, run and close; run is called once, by the client's reader
// goroutine.
type transport interface {
	// write sends one Engine.IO packet verbatim.
	write(packet string) error
	// run delivers each received text packet to handle, in order, until the
	// transport fails or handle returns an error, and returns that error.
	run(handle func(packet string) error) error
	// close tears the transport down; graceful first tells the server
	// (websocket close frame, or Engine.IO close packet when polling) and
	// waits, up to closeGrace, for run to end. It is idempotent and
	// never called by run itself.
	close(graceful bool)
}

// closeGrace bounds how long a graceful close waits for the server to end
// the session. A server that answers does so within milliseconds; one that
// does not (zishang520 v2.5.0 can leave a GET that reached it just after the
// close packet hanging forever) is then cut off.
const closeGrace = 250 * time.Millisecond

// awaitOrTimeout waits for ch to close, at most min(d, closeGrace).
func awaitOrTimeout(ch <-chan struct{}, d time.Duration) {
	d = min(d, closeGrace)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

// liveness is how long the transport may stay silent before it is presumed
// dead: the server pings every pingInterval and the pong must arrive within
// pingTimeout, so a healthy server never stays quiet longer than both.
func (h handshake) liveness() time.Duration {
	d := time.Duration(h.PingInterval+h.PingTimeout) * time.Millisecond
	if d <= 0 {
		return 0
	}
	return d + time.Second // slack for scheduling and slow CI
}
