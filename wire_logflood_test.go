package socketio_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio"
)

// logRecorder is a slog.Handler that keeps every record, for tests that
// count log lines.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

// lines returns the records whose message is msg, each as its attributes.
func (h *logRecorder) lines(msg string) []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]any
	for _, r := range h.records {
		if r.Message != msg {
			continue
		}
		m := map[string]any{}
		r.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.Any()
			return true
		})
		out = append(out, m)
	}
	return out
}

// disconnected closes a channel when the socket with the given id is gone.
type disconnected struct {
	socketio.BaseHook
	mu   sync.Mutex
	want string
	done chan struct{}
}

func (h *disconnected) AfterDisconnect(_ context.Context, e *socketio.DisconnectEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e.SocketID == h.want && h.done != nil {
		close(h.done)
		h.done = nil
	}
}

// watchGone returns a setter naming a socket and a function that waits
// until the server has closed that socket.
func watchGone(t *testing.T, ts *testServer) (set func(sid string), wait func()) {
	t.Helper()
	gone := &disconnected{BaseHook: socketio.NewBaseHook("gone", 5), done: make(chan struct{})}
	require.NoError(t, ts.QA.Hooks().Register(gone))
	done := gone.done
	set = func(sid string) {
		gone.mu.Lock()
		gone.want = sid
		gone.mu.Unlock()
	}
	wait = func() {
		t.Helper()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the server did not close the connection")
		}
	}
	return set, wait
}

// checkThinned asserts that the records of msg are one plain first
// occurrence and at most one summary carrying a positive "suppressed".
func checkThinned(t *testing.T, rec *logRecorder, msg string, sent int) {
	t.Helper()
	lines := rec.lines(msg)
	require.NotEmpty(t, lines, msg)
	assert.LessOrEqual(t, len(lines), 2, "%d events, %d lines of %q, the first: %v", sent, len(lines), msg, lines[:min(3, len(lines))])
	if len(lines) > 2 {
		return
	}
	assert.NotContains(t, lines[0], "suppressed", "the first occurrence is logged as is")
	for _, l := range lines[1:] {
		assert.Greater(t, l["suppressed"], int64(0), "a summary counts the repeats: %v", l)
	}
}

// TestWireFloodLogsOnce: a socket that floods past MaxPendingEvents is
// disconnected by every one of the concurrent events that found the buffer
// full; the warning is logged once, and the repeats at most as one summary
// with their count, not a line per event.
func TestWireFloodLogsOnce(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		rec := &logRecorder{}
		ts := startServer(t, socketio.Options{MaxPendingEvents: 8, Logger: slog.New(rec)})
		setGone, waitGone := watchGone(t, ts)
		flooder, _ := ts.dial(t, tr)
		setGone(flooder.SID())
		sent := 0
		for range 3000 {
			if flooder.Emit("get_suggestions", "what") != nil {
				break
			}
			sent++
		}
		select {
		case <-flooder.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the flooding client was not disconnected")
		}
		waitGone()
		checkThinned(t, rec, "socketio: too many pending events, disconnecting", sent)
	})
}

// internalHook fails every join_room with an internal error, which the
// server logs.
type internalHook struct{ socketio.BaseHook }

func (internalHook) BeforeJoinRoom(context.Context, *socketio.RoomEvent) error {
	return &socketio.Error{Code: socketio.CodeInternal, Message: "broken"}
}

// TestWireRepeatedFailureLogsOnce: the same internal failure of one
// socket's requests is logged once, and its repeats as one summary with
// their count when the connection ends.
func TestWireRepeatedFailureLogsOnce(t *testing.T) {
	const n = 300
	rec := &logRecorder{}
	ts := startServer(t, socketio.Options{Logger: slog.New(rec), MaxPendingEvents: 2 * n})
	require.NoError(t, ts.QA.Hooks().Register(internalHook{socketio.NewBaseHook("broken", 50)}))
	setGone, waitGone := watchGone(t, ts)
	c, _ := ts.dial(t, "websocket")
	setGone(c.SID())
	for range n {
		require.NoError(t, c.Emit("join_room", "lobby"))
	}
	for range n {
		assert.Equal(t, "internal", next(t, c, "error")["code"])
	}
	require.NoError(t, c.Close())
	waitGone()
	checkThinned(t, rec, "socketio: request failed", n)
	lines := rec.lines("socketio: request failed")
	require.Len(t, lines, 2, "the repeats are summed up at the end")
	assert.EqualValues(t, n-1, lines[1]["suppressed"])
	assert.Equal(t, "join_room", lines[1]["event"])
}
