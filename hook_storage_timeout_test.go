package socketio_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio"
)

// deadlineStorage records how far off the deadline of the built-in storage
// hook's calls is.
type deadlineStorage struct {
	*socketio.MemoryStorage
	recorded chan time.Duration // RecordQuestion
	touched  chan time.Duration // TouchSession
}

func remaining(ctx context.Context) time.Duration {
	d, ok := ctx.Deadline()
	if !ok {
		return -1
	}
	return time.Until(d)
}

func (s *deadlineStorage) RecordQuestion(ctx context.Context, q string) error {
	select {
	case s.recorded <- remaining(ctx):
	default:
	}
	return s.MemoryStorage.RecordQuestion(ctx, q)
}

func (s *deadlineStorage) TouchSession(ctx context.Context, id string, at time.Time) error {
	select {
	case s.touched <- remaining(ctx):
	default:
	}
	return s.MemoryStorage.TouchSession(ctx, id, at)
}

// TestStorageHookUsesStorageTimeout: the storage hook that Register
// installs bounds its calls by Options.StorageTimeout, not a fixed 5 s.
func TestStorageHookUsesStorageTimeout(t *testing.T) {
	for _, timeout := range []time.Duration{2 * time.Second, time.Hour} {
		t.Run(timeout.String(), func(t *testing.T) {
			st := &deadlineStorage{MemoryStorage: socketio.NewMemoryStorage(socketio.StorageOptions{}),
				recorded: make(chan time.Duration, 1), touched: make(chan time.Duration, 1)}
			t.Cleanup(func() { st.Close() })
			ts := startServer(t, socketio.Options{Storage: st, StorageTimeout: timeout})
			c, _ := ts.dial(t, "websocket")
			okReply(t, "ask", call(t, c, "ask_question", "What is Socket.IO?"))
			got := <-st.recorded
			assert.LessOrEqual(t, got, timeout, "RecordQuestion")
			assert.Greater(t, got, timeout/2, "RecordQuestion")
			require.NoError(t, c.Close())
			got = <-st.touched
			assert.LessOrEqual(t, got, timeout, "TouchSession")
			assert.Greater(t, got, timeout/2, "TouchSession")
		})
	}
}
