package socketio_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/redistest"
	"github.com/qaplatform/socketio/internal/sioclient"
)

// sharedRedis is a Redis that several test servers share: a miniredis, or
// the real server named by REDIS_URL (with a key prefix of the test's own).
type sharedRedis struct {
	mr     *miniredis.Miniredis // nil for a real server
	opts   *redis.Options
	prefix string
}

// redisBackends returns the Redis servers a test runs against: miniredis
// always, and the real server when REDIS_URL is set.
func redisBackends(t *testing.T) map[string]func(t *testing.T) *sharedRedis {
	t.Helper()
	m := map[string]func(t *testing.T) *sharedRedis{
		"miniredis": func(t *testing.T) *sharedRedis {
			mr := miniredis.RunT(t)
			return &sharedRedis{mr: mr, opts: &redis.Options{Addr: mr.Addr()}, prefix: "qa:"}
		},
	}
	if url := os.Getenv("REDIS_URL"); url != "" {
		m["redis"] = func(t *testing.T) *sharedRedis {
			o, err := redis.ParseURL(url)
			require.NoError(t, err)
			return &sharedRedis{opts: o, prefix: fmt.Sprintf("qatest:%d:%s:", time.Now().UnixNano(), t.Name())}
		}
	}
	return m
}

// client returns a new client of the shared Redis, closed at cleanup.
func (r *sharedRedis) client(t *testing.T) *redis.Client {
	t.Helper()
	o := *r.opts
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	o.MaxRetries = -1
	c := redis.NewClient(&o)
	t.Cleanup(func() {
		if r.mr == nil {
			cleanPrefix(c, r.prefix)
		}
		c.Close()
	})
	return c
}

func cleanPrefix(c *redis.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		c.Del(ctx, iter.Val())
	}
}

// node starts one server on the shared Redis.
func (r *sharedRedis) node(t *testing.T, opts socketio.Options) *testServer {
	t.Helper()
	opts.Redis = r.client(t)
	opts.RedisPrefix = r.prefix
	return startServer(t, opts)
}

func TestRedisNodesShareOneService(t *testing.T) {
	for name, backend := range redisBackends(t) {
		t.Run(name, func(t *testing.T) {
			r := backend(t)
			newAuth := func() *socketio.Auth {
				a, err := socketio.NewAuth(socketio.AuthOptions{
					Redis: r.client(t), RedisPrefix: r.prefix,
					MaxConnectionsPerIP: 3, MaxQuestionsPerMinutePerIP: 4,
					TrustedProxies: []string{"127.0.0.0/8"}, BlocklistCacheTTL: 10 * time.Millisecond,
				})
				require.NoError(t, err)
				t.Cleanup(func() { a.Close() })
				return a
			}
			authA, authB := newAuth(), newAuth()
			a := r.node(t, socketio.Options{Auth: authA})
			b := r.node(t, socketio.Options{Auth: authB})

			// One connection limit.
			a.dial(t, sioclient.TransportWebsocket)
			b.dial(t, sioclient.TransportWebsocket)
			b.dial(t, sioclient.TransportPolling)
			_, err := a.dialErr(t, sioclient.TransportWebsocket)
			requireConnectError(t, err, "too_many_connections")

			// One blocklist.
			require.NoError(t, authA.BlockIP(context.Background(), "203.0.113.0/24", "abuse", 0))
			require.Eventually(t, func() bool {
				_, err := b.dialErr(t, sioclient.TransportWebsocket, withHeader("X-Forwarded-For", "203.0.113.5"))
				var ce *sioclient.ConnectError
				return errors.As(err, &ce) && ce.Message == "ip_blocked"
			}, 5*time.Second, 20*time.Millisecond)

			// One question rate per address (4), spread over both nodes.
			qa, _ := a.dial(t, sioclient.TransportWebsocket, withHeader("X-Forwarded-For", "198.51.100.7"))
			qb, _ := b.dial(t, sioclient.TransportWebsocket, withHeader("X-Forwarded-For", "198.51.100.7"))
			for i := range 4 {
				c := []*sioclient.Client{qa, qb}[i%2]
				okReply(t, "ask", call(t, c, "ask_question", "What is Socket.IO?"))
			}
			assert.Equal(t, "rate_limited", errCode(t, call(t, qb, "ask_question", "What is Socket.IO?")))
			assert.Equal(t, "rate_limited", errCode(t, call(t, qa, "ask_question", "What is Socket.IO?")))
		})
	}
}

func TestRedisResumeAfterRestart(t *testing.T) {
	for name, backend := range redisBackends(t) {
		t.Run(name, func(t *testing.T) {
			r := backend(t)
			first := r.node(t, socketio.Options{})
			c, hello := first.dial(t, sioclient.TransportWebsocket)
			id := okReply(t, "ask", call(t, c, "ask_question", "What is Socket.IO?"))["task_id"]
			answer := next(t, c, "answer")
			require.NoError(t, c.Close())
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			require.NoError(t, first.QA.Close(ctx))

			// A new server process: new secret unless shared, new memory.
			second := r.node(t, socketio.Options{})
			c2, again := second.dial(t, sioclient.TransportPolling, withAuth(map[string]any{"resume": hello["resume_token"]}))
			assert.Equal(t, hello["session_id"], again["session_id"])
			assert.Equal(t, true, again["resumed"])
			task := okReply(t, "task", call(t, c2, "get_task", map[string]any{"task_id": id}))["task"].(map[string]any)
			assert.Equal(t, "completed", task["status"])
			assert.Equal(t, answer["answer"], task["answer"])
			items := okReply(t, "history", call(t, c2, "get_history"))["items"].([]any)
			require.Len(t, items, 1)
		})
	}
}

func TestRedisDownAndBack(t *testing.T) {
	mr := miniredis.RunT(t)
	r := &sharedRedis{mr: mr, opts: &redis.Options{Addr: mr.Addr()}, prefix: "qa:"}
	ts := r.node(t, socketio.Options{StorageTimeout: 300 * time.Millisecond})
	c, _ := ts.dial(t, sioclient.TransportWebsocket)
	okReply(t, "history", call(t, c, "get_history"))

	mr.Close()
	for _, req := range []struct {
		event string
		args  []any
	}{
		{"get_history", nil},
		{"ask_question", []any{"What is Socket.IO?"}},
		{"clear_history", nil},
		{"get_task", []any{map[string]any{"task_id": "t_x"}}},
	} {
		assert.Equal(t, "unavailable", errCode(t, call(t, c, req.event, req.args...)), req.event)
	}
	// What does not need Redis still works.
	okReply(t, "join", call(t, c, "join_room", "lobby"))
	_, err := ts.dialErr(t, sioclient.TransportWebsocket)
	requireConnectError(t, err, "unavailable")

	require.NoError(t, redistest.Restart(mr))
	require.Eventually(t, func() bool {
		return call(t, c, "get_history")["ok"] == true
	}, 5*time.Second, 20*time.Millisecond)
	ts.dial(t, sioclient.TransportWebsocket)
	okReply(t, "ask", call(t, c, "ask_question", "What is Socket.IO?"))
	// The answer goes through the Redis queue, whose readers come back
	// with their own backoff (up to 2 s each, longer on a loaded machine):
	// this waits for it, it does not time it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = c.Next(ctx, "answer")
	require.NoError(t, err, "the answer after Redis came back")
}

// TestRedisDownFailOpenConnects: with FailOpenConnects, a Redis outage
// admits connections instead of refusing them; requests that need Redis
// still answer unavailable.
func TestRedisDownFailOpenConnects(t *testing.T) {
	mr := miniredis.RunT(t)
	r := &sharedRedis{mr: mr, opts: &redis.Options{Addr: mr.Addr()}, prefix: "qa:"}
	auth, err := socketio.NewAuth(socketio.AuthOptions{Redis: r.client(t), FailOpenConnects: true})
	require.NoError(t, err)
	t.Cleanup(func() { auth.Close() })
	ts := r.node(t, socketio.Options{Auth: auth, StorageTimeout: 300 * time.Millisecond})
	mr.Close()
	c, hello := ts.dial(t, sioclient.TransportWebsocket)
	assert.Equal(t, false, hello["resumed"])
	assert.Equal(t, "unavailable", errCode(t, call(t, c, "get_history")))
	okReply(t, "join", call(t, c, "join_room", "lobby"))
}

// TestRedisUserAuthSharesRedis: an Auth the user built without
// AuthOptions.Redis, handed to Register with Options.Redis, keeps its
// state in that Redis, so that two nodes enforce one blocklist and one
// connection limit.
func TestRedisUserAuthSharesRedis(t *testing.T) {
	for name, backend := range redisBackends(t) {
		t.Run(name, func(t *testing.T) {
			r := backend(t)
			newAuth := func() *socketio.Auth {
				a, err := socketio.NewAuth(socketio.AuthOptions{
					MaxConnectionsPerIP: 2, TrustedProxies: []string{"127.0.0.0/8"}, BlocklistCacheTTL: 10 * time.Millisecond,
				})
				require.NoError(t, err)
				t.Cleanup(func() { a.Close() })
				return a
			}
			authA, authB := newAuth(), newAuth()
			a := r.node(t, socketio.Options{Auth: authA})
			b := r.node(t, socketio.Options{Auth: authB})
			assert.NotNil(t, authA.Options().Redis, "bound to Options.Redis")
			assert.Equal(t, r.prefix, authB.Options().RedisPrefix)

			require.NoError(t, authA.BlockIP(context.Background(), "203.0.113.9", "abuse", 0))
			reason, blocked, err := authB.BlockedReason(context.Background(), "203.0.113.9")
			require.NoError(t, err)
			assert.True(t, blocked, "a block made on A is seen by B")
			assert.Equal(t, "abuse", reason)
			_, err = b.dialErr(t, sioclient.TransportWebsocket, withHeader("X-Forwarded-For", "203.0.113.9"))
			requireConnectError(t, err, "ip_blocked")

			// One connection limit (2) over both nodes.
			a.dial(t, sioclient.TransportWebsocket, withHeader("X-Forwarded-For", "198.51.100.8"))
			b.dial(t, sioclient.TransportWebsocket, withHeader("X-Forwarded-For", "198.51.100.8"))
			_, err = a.dialErr(t, sioclient.TransportWebsocket, withHeader("X-Forwarded-For", "198.51.100.8"))
			requireConnectError(t, err, "too_many_connections")
		})
	}
}

// TestRedisUserAuthMovedToRedis: what Register does with an Auth of the
// caller's when Options.Redis is set.
func TestRedisUserAuthMovedToRedis(t *testing.T) {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	register := func(t *testing.T, opts socketio.Options) (*socketio.Server, error) {
		sio := socket.NewServer(nil, nil)
		t.Cleanup(func() { sio.Close(nil) })
		qa, err := socketio.Register(sio, opts)
		if err == nil {
			t.Cleanup(func() { require.NoError(t, qa.Close(ctx)) })
		}
		return qa, err
	}

	t.Run("blocks made before Register move to Redis", func(t *testing.T) {
		rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
		t.Cleanup(func() { rdb.Close() })
		auth, err := socketio.NewAuth(socketio.AuthOptions{Logger: quiet})
		require.NoError(t, err)
		t.Cleanup(func() { auth.Close() })
		require.NoError(t, auth.BlockIP(ctx, "192.0.2.0/24", "early", time.Hour))
		_, err = register(t, socketio.Options{Redis: rdb, Auth: auth, Logger: quiet})
		require.NoError(t, err)

		other, err := socketio.NewAuth(socketio.AuthOptions{Redis: rdb, Logger: quiet})
		require.NoError(t, err)
		t.Cleanup(func() { other.Close() })
		reason, blocked, err := other.BlockedReason(ctx, "192.0.2.4")
		require.NoError(t, err)
		assert.True(t, blocked)
		assert.Equal(t, "early", reason)
	})

	t.Run("an Auth holding connections is refused", func(t *testing.T) {
		rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
		t.Cleanup(func() { rdb.Close() })
		auth, err := socketio.NewAuth(socketio.AuthOptions{Logger: quiet})
		require.NoError(t, err)
		t.Cleanup(func() { auth.Close() })
		_, err = auth.CheckConnect(ctx, "s1", "192.0.2.1", "")
		require.NoError(t, err)
		_, err = register(t, socketio.Options{Redis: rdb, Auth: auth, Logger: quiet})
		require.ErrorContains(t, err, "holds open connections")
		assert.Nil(t, auth.Options().Redis, "left in memory")
	})

	t.Run("a closed Auth is refused", func(t *testing.T) {
		rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
		t.Cleanup(func() { rdb.Close() })
		auth, err := socketio.NewAuth(socketio.AuthOptions{Logger: quiet})
		require.NoError(t, err)
		require.NoError(t, auth.Close())
		_, err = register(t, socketio.Options{Redis: rdb, Auth: auth, Logger: quiet})
		require.ErrorContains(t, err, "closed")
	})

	t.Run("an Auth with its own Redis keeps it", func(t *testing.T) {
		own := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
		t.Cleanup(func() { own.Close() })
		rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
		t.Cleanup(func() { rdb.Close() })
		auth, err := socketio.NewAuth(socketio.AuthOptions{Redis: own, RedisPrefix: "mine:", Logger: quiet})
		require.NoError(t, err)
		t.Cleanup(func() { auth.Close() })
		_, err = register(t, socketio.Options{Redis: rdb, Auth: auth, Logger: quiet})
		require.NoError(t, err)
		assert.Same(t, own, auth.Options().Redis)
		assert.Equal(t, "mine:", auth.Options().RedisPrefix)
	})
}

// TestRedisLeasesAfterEmptyRestart: Redis restarts empty while a node has
// connections open; its lease renewal writes their slots back, so a
// connection beyond MaxConnectionsPerIP is refused again.
func TestRedisLeasesAfterEmptyRestart(t *testing.T) {
	mr := miniredis.RunT(t)
	r := &sharedRedis{mr: mr, opts: &redis.Options{Addr: mr.Addr()}, prefix: "qa:"}
	ts := r.node(t, socketio.WithLeaseRenewal(socketio.Options{}, 10*time.Millisecond))
	limit := ts.QA.Auth().Options().MaxConnectionsPerIP
	for range limit {
		ts.dial(t, sioclient.TransportWebsocket)
	}
	_, err := ts.dialErr(t, sioclient.TransportWebsocket)
	requireConnectError(t, err, "too_many_connections")

	mr.FlushAll()
	require.Eventually(t, func() bool {
		st, err := ts.QA.Auth().ConnectionStats(context.Background())
		return err == nil && st.Total == limit
	}, 5*time.Second, 10*time.Millisecond, "the renewal writes the open connections' slots back")
	_, err = ts.dialErr(t, sioclient.TransportWebsocket)
	requireConnectError(t, err, "too_many_connections")
}
