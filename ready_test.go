package socketio_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/redistest"
)

// pingStorage is a MemoryStorage whose Ping answers err.
type pingStorage struct {
	*socketio.MemoryStorage
	err error
}

func (s *pingStorage) Ping(context.Context) error { return s.err }

var _ socketio.Pinger = (*pingStorage)(nil)

func TestServerReady(t *testing.T) {
	ctx := context.Background()
	down := errors.New("disk on fire")
	st := &pingStorage{MemoryStorage: socketio.NewMemoryStorage(socketio.StorageOptions{})}
	t.Cleanup(func() { st.Close() })
	ts := startServer(t, socketio.Options{Storage: st})
	require.NoError(t, ts.QA.Ready(ctx))

	st.err = down
	err := ts.QA.Ready(ctx)
	require.ErrorIs(t, err, down)
	assert.ErrorContains(t, err, "storage: disk on fire")
	assert.NotContains(t, err.Error(), "auth")

	st.err = nil
	require.NoError(t, ts.QA.Close(ctx))
	assert.ErrorContains(t, ts.QA.Ready(ctx), "shutting down")
}

// TestServerReadyRedis: with the default Redis storage and auth, Ready
// names both while Redis is down and is nil again once it is back.
func TestServerReadyRedis(t *testing.T) {
	t.Cleanup(func() { awaitRedisDialProbes(t) })
	mr := miniredis.RunT(t)
	r := &sharedRedis{mr: mr, opts: &redis.Options{Addr: mr.Addr()}, prefix: "qa:"}
	ts := r.node(t, socketio.Options{StorageTimeout: 300 * time.Millisecond})
	ctx := context.Background()
	require.NoError(t, ts.QA.Ready(ctx))
	require.NoError(t, ts.QA.Auth().Ping(ctx))

	mr.Close()
	tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := ts.QA.Ready(tctx)
	require.Error(t, err)
	assert.ErrorContains(t, err, "storage: ")
	assert.ErrorContains(t, err, "auth: ")

	require.NoError(t, redistest.Restart(mr))
	require.Eventually(t, func() bool { return ts.QA.Ready(ctx) == nil }, 5*time.Second, 20*time.Millisecond)
}
