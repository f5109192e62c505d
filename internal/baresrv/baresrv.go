// Package baresrv is the baseline that the round-trip benchmark and
// cmd/qa-load measure the library against: a plain
// github.com/zishang520/socket.io/v2 server with a single handler that acks
// get_history with an empty page, and nothing else (no hooks, no auth, no
// storage, no ordering parser).
package baresrv

import (
	"net/http"

	"github.com/zishang520/socket.io/v2/socket"
)

// New starts a bare v2 Socket.IO server and returns its endpoint handler
// (mount it at "/socket.io/") and a function that closes the server and
// waits until it is closed. The handler serves both transports.
func New() (http.Handler, func()) {
	io := socket.NewServer(nil, nil)
	// The handler is attached in the connect middleware rather than in a
	// "connection" listener: v2.5.0 sends the CONNECT reply before it emits
	// "connection", so a request that follows the reply at once could find
	// no listener yet. The per-request path is the same either way.
	io.Sockets().Use(func(s *socket.Socket, next func(*socket.ExtendedError)) {
		_ = s.On("get_history", onGetHistory)
		next(nil)
	})
	return io.ServeHandler(nil), func() {
		done := make(chan struct{})
		io.Close(func(error) { close(done) })
		<-done
	}
}

func onGetHistory(args ...any) {
	if len(args) == 0 {
		return
	}
	if ack, ok := args[len(args)-1].(socket.Ack); ok {
		ack([]any{map[string]any{"ok": true, "items": []any{}, "has_more": false}}, nil)
	}
}
