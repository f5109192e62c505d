package socketio_test

import (
	"context"
	"runtime"
	"strings"
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
	"github.com/qaplatform/socketio/redisadapter"
)

// clusterNode starts one node of a cluster on the shared Redis: a v2 server
// with the Redis adapter, and the service with its state in Redis.
func (r *sharedRedis) clusterNode(t *testing.T, opts socketio.Options) *testServer {
	t.Helper()
	adapter := redisadapter.New(r.client(t), redisadapter.Options{
		StreamName:    r.prefix + "stream",
		ChannelPrefix: r.prefix + "chan",
	})
	t.Cleanup(func() { adapter.Close() })
	so := socket.DefaultServerOptions()
	so.SetAdapter(adapter)
	opts.Redis = r.client(t)
	opts.RedisPrefix = r.prefix
	return startServerOn(t, socket.NewServer(nil, so), opts)
}

// forEachRedis runs f against miniredis and, with REDIS_URL, a real Redis.
func forEachRedis(t *testing.T, f func(t *testing.T, r *sharedRedis)) {
	for name, backend := range redisBackends(t) {
		t.Run(name, func(t *testing.T) { f(t, backend(t)) })
	}
}

func TestClusterRoomsAndAnswers(t *testing.T) {
	forEachRedis(t, func(t *testing.T, r *sharedRedis) {
		a := r.clusterNode(t, socketio.Options{})
		b := r.clusterNode(t, socketio.Options{})
		ca, _ := a.dial(t, sioclient.TransportWebsocket)
		cb, _ := b.dial(t, sioclient.TransportPolling)

		okReply(t, "join", call(t, ca, "join_room", "lobby"))
		m := okReply(t, "join", call(t, cb, "join_room", "lobby"))
		assert.EqualValues(t, 2, m["members"], "members counted across nodes")

		// A room answer asked on node A reaches the member on node B.
		id := okReply(t, "ask", call(t, ca, "ask_question", map[string]any{"question": "How do rooms work?", "room": "lobby", "stream": true}))["task_id"]
		assert.Equal(t, id, next(t, cb, "answer")["task_id"])
		assert.Equal(t, id, next(t, ca, "answer")["task_id"])

		// A socket id on the other node is not a room name.
		assert.Equal(t, "invalid_room", errCode(t, call(t, ca, "join_room", cb.SID())))
	})
}

func TestClusterSessionAcrossNodes(t *testing.T) {
	forEachRedis(t, func(t *testing.T, r *sharedRedis) {
		g := newGatedAnswerer()
		t.Cleanup(g.open)
		a := r.clusterNode(t, socketio.Options{Answerer: g})
		b := r.clusterNode(t, socketio.Options{Answerer: g})
		ca, hello := a.dial(t, sioclient.TransportWebsocket)
		cb, again := b.dial(t, sioclient.TransportWebsocket, withAuth(map[string]any{"resume": hello["resume_token"]}))
		require.Equal(t, hello["session_id"], again["session_id"])

		// Asked on node A, the answer reaches the session's socket on B.
		id := okReply(t, "ask", call(t, ca, "ask_question", "first"))["task_id"]
		<-g.started
		g.open()
		assert.Equal(t, id, next(t, cb, "answer")["task_id"])
		assert.Equal(t, id, next(t, ca, "answer")["task_id"])
	})
}

func TestClusterCancelOnAnotherNode(t *testing.T) {
	forEachRedis(t, func(t *testing.T, r *sharedRedis) {
		g := newGatedAnswerer()
		t.Cleanup(g.open)
		a := r.clusterNode(t, socketio.Options{Answerer: g})
		b := r.clusterNode(t, socketio.Options{Answerer: g})
		ca, hello := a.dial(t, sioclient.TransportWebsocket)
		cb, _ := b.dial(t, sioclient.TransportWebsocket, withAuth(map[string]any{"resume": hello["resume_token"]}))

		id := okReply(t, "ask", call(t, ca, "ask_question", "slow"))["task_id"]
		<-g.started // running on node A
		m := okReply(t, "cancelled", call(t, cb, "cancel_task", map[string]any{"task_id": id}))
		assert.Equal(t, "cancelled", m["status"])
		for _, c := range []*sioclient.Client{ca, cb} {
			e := next(t, c, "answer_error")
			assert.Equal(t, "cancelled", e["code"])
		}
		task := okReply(t, "task", call(t, ca, "get_task", map[string]any{"task_id": id}))["task"].(map[string]any)
		assert.Equal(t, "cancelled", task["status"])
	})
}

func TestClusterNodeStopped(t *testing.T) {
	forEachRedis(t, func(t *testing.T, r *sharedRedis) {
		a := r.clusterNode(t, socketio.Options{})
		b := r.clusterNode(t, socketio.Options{})
		ca, hello := a.dial(t, sioclient.TransportWebsocket)
		id := okReply(t, "ask", call(t, ca, "ask_question", "What is Socket.IO?"))["task_id"]
		answer := next(t, ca, "answer")

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, a.QA.Close(ctx))
		a.IO.Close(nil)

		// The client comes back on node B and finds everything.
		cb, again := b.dial(t, sioclient.TransportPolling, withAuth(map[string]any{"resume": hello["resume_token"]}))
		assert.Equal(t, true, again["resumed"])
		task := okReply(t, "task", call(t, cb, "get_task", map[string]any{"task_id": id}))["task"].(map[string]any)
		assert.Equal(t, answer["answer"], task["answer"])
		// And node B still serves rooms with the stopped node gone.
		m := okReply(t, "join", call(t, cb, "join_room", "after"))
		assert.EqualValues(t, 1, m["members"])
	})
}

// TestClusterRedisDownJoinRoom: with the Redis adapter, join_room counts
// the room's members across nodes; during a Redis outage it answers
// unavailable like every other request that needs Redis, never internal.
func TestClusterRedisDownJoinRoom(t *testing.T) {
	// Registered first, so it runs after the clients are closed.
	t.Cleanup(func() { awaitRedisDialProbes(t) })
	mr := miniredis.RunT(t)
	r := &sharedRedis{mr: mr, opts: &redis.Options{Addr: mr.Addr()}, prefix: "qa:"}
	ts := r.clusterNode(t, socketio.Options{})
	other := r.clusterNode(t, socketio.Options{})
	c, _ := ts.dial(t, sioclient.TransportWebsocket)
	co, _ := other.dial(t, sioclient.TransportWebsocket)
	okReply(t, "join", call(t, co, "join_room", "lobby"))
	m := okReply(t, "join", call(t, c, "join_room", "lobby"))
	require.EqualValues(t, 2, m["members"], "the nodes know each other")

	mr.Close()
	for _, room := range []string{"lobby", "other"} {
		m := call(t, c, "join_room", room)
		assert.Equal(t, "unavailable", errCode(t, m), "%s: %v", room, m)
	}

	require.NoError(t, redistest.Restart(mr))
	require.Eventually(t, func() bool {
		return call(t, c, "join_room", "lobby")["ok"] == true
	}, 5*time.Second, 20*time.Millisecond)
}

// awaitRedisDialProbes waits for go-redis's dial probes to end. After many
// failed dials a pool starts a probe goroutine that sleeps a second
// between attempts and ends when a dial succeeds or, at its next wake-up,
// when the pool is closed; goleak would otherwise see it when this is the
// last test.
func awaitRedisDialProbes(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		buf := make([]byte, 1<<20)
		return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "pool.(*ConnPool).tryDial")
	}, 5*time.Second, 20*time.Millisecond)
}
