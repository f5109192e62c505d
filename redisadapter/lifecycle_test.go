package redisadapter_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/qaplatform/socketio/internal/redistest"
	"github.com/qaplatform/socketio/redisadapter"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zishang520/socket.io/v2/socket"
)

func newServer(b *redisadapter.Builder) *socket.Server {
	opts := socket.DefaultServerOptions()
	opts.SetAdapter(b)
	return socket.NewServer(nil, opts)
}

func closeServer(io *socket.Server) {
	done := make(chan struct{})
	io.Close(func(error) { close(done) })
	<-done
}

func TestLifecycle(t *testing.T) {
	be := backends(t)[0]
	cfg := newConfig(t, be, redisadapter.Protocol03)
	rdb := newClient(t, be, cfg.names, "")
	b := redisadapter.New(rdb, cfg.opts)
	ctx := ctxTimeout(t, 5*time.Second)

	assert.ErrorIs(t, b.Health(ctx), redisadapter.ErrNotRunning, "no namespace yet")

	io := newServer(b)
	eventually(t, 5*time.Second, "healthy", func() bool { return b.Health(ctx) == nil })
	chat := io.Of("/chat", nil)
	eventually(t, 5*time.Second, "healthy with /chat", func() bool { return b.Health(ctx) == nil })
	k, err := redisadapter.RoomSize(ctx, chat, "r")
	require.NoError(t, err)
	assert.Zero(t, k)

	// SetAdapter again replaces the adapters instead of leaking them.
	io.SetAdapter(b)
	eventually(t, 5*time.Second, "healthy after SetAdapter", func() bool { return b.Health(ctx) == nil })

	// A second server on the same Builder would count as the same node.
	assert.PanicsWithValue(t,
		`redisadapter: namespace "/" of another server is attached to this Builder; use one Builder per server`,
		func() { newServer(b) })

	// Closing the server closes the adapters and stops every goroutine
	// (goleak checks at the end of the run).
	closeServer(io)
	assert.ErrorIs(t, b.Health(ctx), redisadapter.ErrNotRunning)

	// The Builder serves a new server once the first is closed.
	io2 := newServer(b)
	eventually(t, 5*time.Second, "healthy again", func() bool { return b.Health(ctx) == nil })
	require.NoError(t, b.Close())
	assert.ErrorIs(t, b.Health(ctx), redisadapter.ErrClosed)
	closeServer(io2)
}

func TestNewRejectsMistakes(t *testing.T) {
	rdb := newClient(t, backends(t)[0], "x", "")
	assert.Panics(t, func() { redisadapter.New(nil, redisadapter.Options{}) })
	assert.Panics(t, func() { redisadapter.New(rdb, redisadapter.Options{Protocol: 7}) })
	assert.Panics(t, func() { redisadapter.New(rdb, redisadapter.Options{Protocol: redisadapter.Protocol02, StreamCount: 2}) })
	assert.Panics(t, func() { redisadapter.New(rdb, redisadapter.Options{RequestsTimeout: -time.Second}) })
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	defer ring.Close()
	assert.PanicsWithValue(t, "redisadapter: a *redis.Ring cannot hold one subscription to every channel "+
		"(it subscribes on one shard per call); use a client of one server, Sentinel or Cluster",
		func() { redisadapter.New(ring, redisadapter.Options{}) })
	assert.NotPanics(t, func() { redisadapter.New(rdb, redisadapter.Options{}) })
}

// Namespaces spread over several streams as the Node option streamCount
// spreads them: stream "<name>-<hashCode(nsp) % count>", with JavaScript's
// hashCode and sign (hashCode("/a") = 1554 → "-0"; hashCode("/abcdefg")
// = -898584235 → "--1").
func TestStreamCount(t *testing.T) {
	each(t, func(t *testing.T, be backend, p redisadapter.Protocol) {
		if p != redisadapter.Protocol03 {
			t.Skip("streamCount is an option of 0.3.x only")
		}
		cfg := newConfig(t, be, p)
		cfg.opts.StreamCount = 3
		n1, n2 := cfg.node(t, "n1"), cfg.node(t, "n2")
		rdb := n1.rdb
		streams := []string{cfg.opts.StreamName + "-0", cfg.opts.StreamName + "--1", cfg.opts.StreamName + "-2"}
		if be.mr == nil {
			t.Cleanup(func() { rdb.Del(context.Background(), streams...) })
		}
		for _, nsp := range []string{"/a", "/abcdefg"} {
			for _, n := range []*node{n1, n2} {
				n.io.Of(nsp, nil)
			}
		}
		ready(t, n1, n2)
		for i, nsp := range []string{"/a", "/abcdefg"} {
			c := dialNsp(t, n2, nsp)
			eventually(t, 5*time.Second, nsp+" is ready on both", func() bool {
				return n1.io.Of(nsp, nil).Adapter().ServerCount() == 2
			})
			n1.io.Of(nsp, nil).Emit("on-" + nsp)
			next(t, c, "on-"+nsp)
			n, err := rdb.Exists(context.Background(), streams[i]).Result()
			require.NoError(t, err)
			assert.Equal(t, int64(1), n, "namespace %s writes to %s", nsp, streams[i])
		}
	})
}

// TestWrappedRingIsAnError: a *redis.Ring that New cannot recognise (it is
// wrapped) cannot subscribe; Health says so, and the process goes on.
func TestWrappedRingIsAnError(t *testing.T) {
	be := backends(t)[0]
	cfg := newConfig(t, be, redisadapter.Protocol03)
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": be.addr}})
	t.Cleanup(func() { _ = ring.Close() })
	b := redisadapter.New(redistest.Wrapped{UniversalClient: ring}, cfg.opts)
	io := newServer(b)
	t.Cleanup(func() { closeServer(io) })
	ctx := ctxTimeout(t, 5*time.Second)
	eventually(t, 5*time.Second, "the subscription error", func() bool {
		err := b.Health(ctx)
		return err != nil && strings.Contains(err.Error(), "cannot hold one subscription")
	})
}
