package sioclient_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio/internal/sioclient"
)

func TestNextFunc(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t)
			c := dial(t, ts, tr)
			ctx := context.Background()

			// "trigger" pushes task_status, then answer. The later one is
			// taken; the one passed over stays queued.
			require.NoError(t, c.Emit("trigger"))
			e, err := c.NextFunc(ctx, func(e sioclient.Event) bool { return e.Name == "answer" })
			require.NoError(t, err)
			assert.Equal(t, "answer", e.Name)
			e, err = c.NextAny(ctx)
			require.NoError(t, err)
			assert.Equal(t, sioclient.Event{Name: "task_status", Args: []any{"running"}}, e)

			// Nothing matches: the wait ends with the context.
			require.NoError(t, c.Emit("echo_back", 4))
			short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			defer cancel()
			_, err = c.NextFunc(short, func(sioclient.Event) bool { return false })
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			args, err := c.Next(ctx, "echoed")
			require.NoError(t, err)
			assert.Equal(t, []any{float64(4)}, args, "a refused event stays queued")
		})
	}
}
