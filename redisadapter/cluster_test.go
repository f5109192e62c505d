package redisadapter_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/qaplatform/socketio/internal/redistest"
	"github.com/qaplatform/socketio/internal/sioclient"
	"github.com/qaplatform/socketio/redisadapter"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zishang520/engine.io/v2/types"
	"github.com/zishang520/socket.io-go-parser/v2/parser"
	"github.com/zishang520/socket.io/v2/socket"
)

// ready waits until every node reads and subscribes, and counts them all.
func ready(t *testing.T, nodes ...*node) {
	t.Helper()
	healthy(t, nodes...)
	for _, n := range nodes {
		eventually(t, 5*time.Second, fmt.Sprintf("%s counts %d nodes", n.name, len(nodes)), func() bool {
			return n.nsp().Adapter().ServerCount() == int64(len(nodes))
		})
	}
}

// healthy waits until every node reads and subscribes.
func healthy(t *testing.T, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		eventually(t, 5*time.Second, n.name+" healthy", func() bool {
			return n.b.Health(ctxTimeout(t, time.Second)) == nil
		})
	}
}

// untilFence returns the names of the events c receives before fence.
func untilFence(t *testing.T, c *sioclient.Client, fence string) []string {
	t.Helper()
	ctx := ctxTimeout(t, 5*time.Second)
	var got []string
	for {
		ev, err := c.NextAny(ctx)
		require.NoError(t, err, "waiting for %s", fence)
		if ev.Name == fence {
			return got
		}
		got = append(got, ev.Name)
	}
}

func next(t *testing.T, c *sioclient.Client, event string) []any {
	t.Helper()
	args, err := c.Next(ctxTimeout(t, 5*time.Second), event)
	require.NoError(t, err, "waiting for %q", event)
	return args
}

func TestBroadcastAcrossNodes(t *testing.T) {
	each(t, func(t *testing.T, be backend, p redisadapter.Protocol) {
		cfg := newConfig(t, be, p)
		n1, n2, n3 := cfg.node(t, "n1"), cfg.node(t, "n2"), cfg.node(t, "n3")
		a, b, c, d := n1.dial(t, "a"), n2.dial(t, "b"), n3.dial(t, "c"), n2.dial(t, "d")
		join(t, a, "r")
		join(t, b, "r")
		join(t, d, "r")
		join(t, d, "x")
		join(t, c, "y")
		ready(t, n1, n2, n3)
		clients := map[string]*sioclient.Client{"a": a, "b": b, "c": c, "d": d}

		cases := []struct {
			name string
			from *node
			emit func(io *socket.Server, ev string) error
			want []string
		}{
			{"all", n1, func(io *socket.Server, ev string) error { io.Emit(ev, 1); return nil }, []string{"a", "b", "c", "d"}},
			{"room", n1, func(io *socket.Server, ev string) error { return io.To("r").Emit(ev, 2) }, []string{"a", "b", "d"}},
			{"rooms", n2, func(io *socket.Server, ev string) error { return io.To("x", "y").Emit(ev) }, []string{"c", "d"}},
			{"room except", n3, func(io *socket.Server, ev string) error { return io.To("r").Except("x").Emit(ev) }, []string{"a", "b"}},
			{"except", n2, func(io *socket.Server, ev string) error { return io.Except("r").Emit(ev) }, []string{"c"}},
			{"to a socket", n3, func(io *socket.Server, ev string) error { return io.To(socket.Room(b.SID())).Emit(ev) }, []string{"b"}},
		}
		for i, tc := range cases {
			ev := "ev-" + tc.name
			require.NoError(t, tc.emit(tc.from.io, ev))
			fence := fmt.Sprintf("fence-%d", i)
			tc.from.io.Emit(fence)
			for name, cl := range clients {
				got := untilFence(t, cl, fence)
				if contains(tc.want, name) {
					assert.Equal(t, []string{ev}, got, "%s: client %s", tc.name, name)
				} else {
					assert.Empty(t, got, "%s: client %s", tc.name, name)
				}
			}
		}
		// Arguments survive the trip.
		require.NoError(t, n3.io.To("r").Emit("args", "s", 1.5, map[string]any{"k": []any{true, nil}}))
		assert.Equal(t, []any{"s", 1.5, map[string]any{"k": []any{true, nil}}}, next(t, a, "args"))
	})
}

func contains(s []string, v string) bool {
	for _, e := range s {
		if e == v {
			return true
		}
	}
	return false
}

func TestRoomOperationsAcrossNodes(t *testing.T) {
	each(t, func(t *testing.T, be backend, p redisadapter.Protocol) {
		cfg := newConfig(t, be, p)
		n1, n2, n3 := cfg.node(t, "n1"), cfg.node(t, "n2"), cfg.node(t, "n3")
		a, b, c := n1.dial(t, "a"), n2.dial(t, "b"), n3.dial(t, "c")
		join(t, b, "r")
		join(t, c, "r")
		ready(t, n1, n2, n3)
		roomSize := func(n *node, room string, k int) {
			t.Helper()
			eventually(t, 5*time.Second, fmt.Sprintf("%s sees %d in %s", n.name, k, room), func() bool {
				got, err := redisadapter.RoomSize(context.Background(), n.nsp(), room)
				return err == nil && got == k
			})
		}

		n1.io.In("r").SocketsJoin("j")
		roomSize(n1, "j", 2)
		roomSize(n3, "j", 2)
		n2.io.SocketsJoin("all")
		roomSize(n3, "all", 3)

		n3.io.In("j").SocketsLeave("all")
		roomSize(n1, "all", 1)
		require.NoError(t, n2.io.To("all").Emit("only-a"))
		next(t, a, "only-a")

		n1.io.In("j").DisconnectSockets(true)
		for _, cl := range []*sioclient.Client{b, c} {
			select {
			case <-cl.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("a socket of room j was not disconnected")
			}
		}
		assert.NoError(t, a.Err(), "a is not in j")
		roomSize(n1, "r", 0)
	})
}

func TestFetchSocketsAcrossNodes(t *testing.T) {
	each(t, func(t *testing.T, be backend, p redisadapter.Protocol) {
		cfg := newConfig(t, be, p)
		n1, n2, n3 := cfg.node(t, "n1"), cfg.node(t, "n2"), cfg.node(t, "n3")
		a, b, c := n1.dial(t, "a"), n2.dial(t, "b"), n3.dial(t, "c")
		join(t, a, "r")
		join(t, b, "r")
		ready(t, n1, n2, n3)

		all, err := redisadapter.FetchSockets(ctxTimeout(t, 5*time.Second), n1.nsp())
		require.NoError(t, err)
		byID := map[string]socket.SocketDetails{}
		for _, s := range all {
			byID[string(s.Id())] = s
		}
		require.Len(t, byID, 3)
		rb := byID[b.SID()]
		require.NotNil(t, rb, "b, on another node")
		assert.True(t, rb.Rooms().Has("r"))
		assert.True(t, rb.Rooms().Has(socket.Room(b.SID())))
		assert.Equal(t, []string{"b"}, rb.Handshake().Query["tag"])
		assert.NotEmpty(t, rb.Handshake().Headers["Upgrade"], "headers: %v", rb.Handshake().Headers)
		assert.NotEmpty(t, rb.Handshake().Address)
		assert.Greater(t, rb.Handshake().Issued, int64(0))
		assert.Equal(t, map[string]any{"node": "n2", "tag": []any{"b"}}, rb.Data())
		assert.NotNil(t, byID[c.SID()])

		k, err := redisadapter.RoomSize(ctxTimeout(t, 5*time.Second), n3.nsp(), "r")
		require.NoError(t, err)
		assert.Equal(t, 2, k)

		ok, err := redisadapter.SocketExists(ctxTimeout(t, 5*time.Second), n2.nsp(), a.SID())
		require.NoError(t, err)
		assert.True(t, ok)
		ok, err = redisadapter.SocketExists(ctxTimeout(t, 5*time.Second), n2.nsp(), "r")
		require.NoError(t, err)
		assert.False(t, ok, "r is a room, not a socket")

		// v2's own API goes through the adapter too.
		got := make(chan []*socket.RemoteSocket, 1)
		n2.io.In("r").FetchSockets()(func(s []*socket.RemoteSocket, err error) {
			assert.NoError(t, err)
			got <- s
		})
		select {
		case s := <-got:
			assert.Len(t, s, 2)
		case <-time.After(5 * time.Second):
			t.Fatal("FetchSockets did not call back")
		}
	})
}

func TestServerSideEmitAcrossNodes(t *testing.T) {
	each(t, func(t *testing.T, be backend, p redisadapter.Protocol) {
		cfg := newConfig(t, be, p)
		n1, n2, n3 := cfg.node(t, "n1"), cfg.node(t, "n2"), cfg.node(t, "n3")
		ready(t, n1, n2, n3)

		require.NoError(t, n1.io.ServerSideEmit("hello-nodes", "hi", 7))
		for _, n := range []*node{n2, n3} {
			eventually(t, 5*time.Second, n.name+" got hello-nodes", func() bool { return len(n.received()) == 2 })
			assert.Equal(t, []any{"hi", float64(7)}, normalize(n.received()))
		}
		assert.Empty(t, n1.received(), "a node does not receive its own server-side emit")

		type result struct {
			args []any
			err  error
		}
		res := make(chan result, 1)
		start := time.Now()
		require.NoError(t, n1.io.ServerSideEmit("ping-nodes", "x", socket.Ack(func(args []any, err error) {
			res <- result{args, err}
		})))
		select {
		case r := <-res:
			require.NoError(t, r.err)
			assert.ElementsMatch(t, []any{"pong-n2", "pong-n3"}, r.args)
			assert.Less(t, time.Since(start), cfg.opts.RequestsTimeout)
		case <-time.After(10 * time.Second):
			t.Fatal("no ack")
		}
	})
}

// normalize turns the numbers msgpack and JSON decode into float64.
func normalize(v []any) []any {
	out := make([]any, len(v))
	for i, e := range v {
		switch n := e.(type) {
		case int64:
			out[i] = float64(n)
		case uint64:
			out[i] = float64(n)
		case int:
			out[i] = float64(n)
		default:
			out[i] = e
		}
	}
	return out
}

// answer makes every client ack the next event named event, skipping
// others, with "answer-<tag>".
func answer(t *testing.T, clients map[string]*sioclient.Client, event string) <-chan error {
	t.Helper()
	errs := make(chan error, len(clients))
	for tag, cl := range clients {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for {
				ev, err := cl.NextAny(ctx)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", tag, err)
					return
				}
				if ev.Name == event {
					errs <- cl.Ack(ev, "answer-"+tag)
					return
				}
			}
		}()
	}
	return errs
}

// The adapter's BroadcastWithAck, as BroadcastOperator.EmitWithAck calls it:
// each node reports its client count, then each client's ack.
func TestBroadcastWithAckAcrossNodes(t *testing.T) {
	each(t, func(t *testing.T, be backend, p redisadapter.Protocol) {
		cfg := newConfig(t, be, p)
		n1, n2, n3 := cfg.node(t, "n1"), cfg.node(t, "n2"), cfg.node(t, "n3")
		clients := map[string]*sioclient.Client{"a": n1.dial(t, "a"), "b": n2.dial(t, "b"), "c": n3.dial(t, "c")}
		ready(t, n1, n2, n3)

		errs := answer(t, clients, "question")
		var mu sync.Mutex
		var counts uint64
		var answers []any
		done := make(chan struct{})
		timeout := time.Second
		n1.nsp().Adapter().BroadcastWithAck(
			&parser.Packet{Type: parser.EVENT, Data: []any{"question", 1}},
			&socket.BroadcastOptions{Rooms: types.NewSet[socket.Room](), Except: types.NewSet[socket.Room](),
				Flags: &socket.BroadcastFlags{Timeout: &timeout}},
			func(n uint64) {
				mu.Lock()
				defer mu.Unlock()
				counts += n
			},
			func(args []any, err error) {
				assert.NoError(t, err)
				mu.Lock()
				defer mu.Unlock()
				answers = append(answers, args...)
				if len(answers) == len(clients) {
					close(done)
				}
			})
		for range clients {
			require.NoError(t, <-errs)
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("not every ack arrived")
		}
		mu.Lock()
		assert.ElementsMatch(t, []any{"answer-a", "answer-b", "answer-c"}, answers)
		mu.Unlock()
		// A node writes to its clients before it reports their count, so a
		// count may arrive after the acks.
		eventually(t, 5*time.Second, "a client count from every node", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return counts == 3
		})
	})
}

// The same through v2's BroadcastOperator. v2.5.0's EmitWithAck writes the
// expected server count after BroadcastWithAck returns (broadcast-operator.go
// line 249) while the acks read it (line 224), so the race detector flags
// it even on a single node; this test runs without -race only.
func TestEmitWithAckAcrossNodes(t *testing.T) {
	if raceEnabled {
		t.Skip("v2.5.0 BroadcastOperator.EmitWithAck races with its own acks (broadcast-operator.go:224/249); covered by TestBroadcastWithAckAcrossNodes under -race")
	}
	each(t, func(t *testing.T, be backend, p redisadapter.Protocol) {
		cfg := newConfig(t, be, p)
		n1, n2, n3 := cfg.node(t, "n1"), cfg.node(t, "n2"), cfg.node(t, "n3")
		clients := map[string]*sioclient.Client{"a": n1.dial(t, "a"), "b": n2.dial(t, "b"), "c": n3.dial(t, "c")}
		ready(t, n1, n2, n3)

		errs := answer(t, clients, "question")
		res := make(chan []any, 1)
		n1.io.Timeout(3*time.Second).EmitWithAck("question", 1)(func(args []any, err error) {
			assert.NoError(t, err)
			res <- args
		})
		for range clients {
			require.NoError(t, <-errs)
		}
		select {
		case args := <-res:
			assert.ElementsMatch(t, []any{"answer-a", "answer-b", "answer-c"}, args)
		case <-time.After(5 * time.Second):
			t.Fatal("no acks")
		}
	})
}

func TestNodeStoppedMidRun(t *testing.T) {
	each(t, func(t *testing.T, be backend, p redisadapter.Protocol) {
		cfg := newConfig(t, be, p)
		cfg.opts.RequestsTimeout = 800 * time.Millisecond
		n1, n2, n3 := cfg.node(t, "n1"), cfg.node(t, "n2"), cfg.node(t, "n3")
		a, b, c := n1.dial(t, "a"), n2.dial(t, "b"), n3.dial(t, "c")
		for _, cl := range []*sioclient.Client{a, b, c} {
			join(t, cl, "r")
		}
		ready(t, n1, n2, n3)

		// A node that is counted but never answers: requests time out.
		hung := startFakeNode(t, cfg, false)
		eventually(t, 5*time.Second, "the hung node is counted", func() bool { return n1.nsp().Adapter().ServerCount() == 4 })
		start := time.Now()
		k, err := redisadapter.RoomSize(context.Background(), n1.nsp(), "r")
		elapsed := time.Since(start)
		hung.waitRequest(t)
		require.ErrorIs(t, err, redisadapter.ErrTimeout)
		assert.Equal(t, 3, k, "the answers that arrived")
		assert.GreaterOrEqual(t, elapsed, cfg.opts.RequestsTimeout)
		assert.Less(t, elapsed, cfg.opts.RequestsTimeout+time.Second)

		// It dies while a request waits for it: the request completes once
		// the node is known dead, with no error.
		done := make(chan error, 1)
		var got int
		go func() {
			var err error
			got, err = redisadapter.RoomSize(context.Background(), n2.nsp(), "r")
			done <- err
		}()
		hung.waitRequest(t) // the request waits for the hung node
		hung.stop()
		select {
		case err := <-done:
			if p == redisadapter.Protocol02 {
				// Forgotten after HeartbeatTimeout, before RequestsTimeout.
				require.NoError(t, err)
				assert.Equal(t, 3, got)
			} else {
				// PUBSUB NUMSUB counted it when the request started; the
				// request times out at RequestsTimeout.
				require.ErrorIs(t, err, redisadapter.ErrTimeout)
			}
		case <-time.After(cfg.opts.RequestsTimeout + 2*time.Second):
			t.Fatal("a request kept waiting for a dead node")
		}
		eventually(t, 5*time.Second, "the dead node is not counted", func() bool { return n1.nsp().Adapter().ServerCount() == 3 })

		// A real node is stopped mid-run.
		n3.stop()
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("c still connected to a stopped node")
		}
		eventually(t, 5*time.Second, "n3 is not counted", func() bool {
			return n1.nsp().Adapter().ServerCount() == 2 && n2.nsp().Adapter().ServerCount() == 2
		})
		start = time.Now()
		k, err = redisadapter.RoomSize(context.Background(), n1.nsp(), "r")
		require.NoError(t, err)
		assert.Equal(t, 2, k)
		assert.Less(t, time.Since(start), cfg.opts.RequestsTimeout)
		require.NoError(t, n2.io.To("r").Emit("still"))
		next(t, a, "still")
	})
}

func TestConnectionLossAndRecovery(t *testing.T) {
	each(t, func(t *testing.T, be backend, p redisadapter.Protocol) {
		cfg := newConfig(t, be, p)
		px := newProxy(t, be.addr)
		n1, n2 := cfg.node(t, "n1"), cfg.node(t, "n2", viaAddr(px.addr()))
		a, b := n1.dial(t, "a"), n2.dial(t, "b")
		ready(t, n1, n2)
		n1.io.Emit("before")
		next(t, b, "before")

		px.cut()
		eventually(t, 5*time.Second, "n2 reports the outage", func() bool {
			err := n2.b.Health(ctxTimeout(t, time.Second))
			st := n2.b.Status()
			return errors.Is(err, redisadapter.ErrUnhealthy) && !st.Reader.Up && !st.Subscriber.Up
		})
		st := n2.b.Status()
		assert.False(t, st.Reader.Up)
		assert.Error(t, st.Reader.LastError)
		n1.io.Emit("during")
		next(t, a, "during")
		// Local sockets still get the node's own broadcasts.
		n2.io.Emit("local-during")
		next(t, b, "local-during")

		px.restore()
		eventually(t, 10*time.Second, "n2 recovers", func() bool { return n2.b.Health(ctxTimeout(t, time.Second)) == nil })
		st = n2.b.Status()
		assert.True(t, st.Reader.Up)
		assert.GreaterOrEqual(t, st.Reader.Losses, uint64(1))
		assert.GreaterOrEqual(t, st.Subscriber.Losses, uint64(1))
		// The reader resumed from the last entry it had seen.
		next(t, b, "during")
		n1.io.Emit("after")
		next(t, b, "after")
		n2.io.Emit("back")
		next(t, a, "back")
	})
}

// A miniredis Restart cannot stand for a Redis restart here: miniredis
// v2.40.0 cancels its context on Close and never renews it, so after
// Restart a blocking command (XREAD BLOCK) gets no reply at all. The
// proxy of TestConnectionLossAndRecovery cuts the connections instead.

func TestClientKill(t *testing.T) {
	be := realRedis(t)
	for _, p := range []redisadapter.Protocol{redisadapter.Protocol03, redisadapter.Protocol02} {
		t.Run(protoName(p), func(t *testing.T) {
			cfg := newConfig(t, be, p)
			n1, n2 := cfg.node(t, "n1"), cfg.node(t, "n2")
			a, b := n1.dial(t, "a"), n2.dial(t, "b")
			ready(t, n1, n2)

			killed := killClients(t, n1.rdb, cfg.names+"-n2")
			require.GreaterOrEqual(t, killed, 2, "the reader and the subscriber")
			eventually(t, 5*time.Second, "n2 noticed and recovered", func() bool {
				st := n2.b.Status()
				return st.Reader.Losses >= 1 && st.Subscriber.Losses >= 1 &&
					n2.b.Health(ctxTimeout(t, time.Second)) == nil
			})
			ready(t, n1, n2)
			n1.io.Emit("after-kill")
			next(t, b, "after-kill")
			n2.io.Emit("back")
			next(t, a, "back")
		})
	}
}

// killClients kills the connections of the Redis clients named name and
// returns how many there were.
func killClients(t *testing.T, rdb *redis.Client, name string) int {
	t.Helper()
	ctx := ctxTimeout(t, 5*time.Second)
	list, err := rdb.ClientList(ctx).Result()
	require.NoError(t, err)
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		fields := map[string]string{}
		for _, f := range strings.Fields(line) {
			if k, v, ok := strings.Cut(f, "="); ok {
				fields[k] = v
			}
		}
		if fields["name"] == name {
			require.NoError(t, rdb.ClientKillByFilter(ctx, "ID", fields["id"]).Err())
			killed++
		}
	}
	return killed
}

// TestTopologies runs nodes on clients other than a plain *redis.Client:
// one hiding its type, a Sentinel failover client and a Cluster client
// (the last two when testdata/redis-topologies/run.sh provides them).
// Broadcasts reach every node, and requests count every node's answer.
func TestTopologies(t *testing.T) {
	tests := []struct {
		name   string
		client func(t *testing.T) redis.UniversalClient
	}{
		{"wrapped", func(t *testing.T) redis.UniversalClient {
			mr := miniredis.RunT(t)
			c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
			t.Cleanup(func() { _ = c.Close() })
			return redistest.Wrapped{UniversalClient: c}
		}},
		{"sentinel", func(t *testing.T) redis.UniversalClient { return redistest.NewSentinel(t) }},
		{"cluster", func(t *testing.T) redis.UniversalClient { return redistest.NewCluster(t) }},
	}
	for _, tt := range tests {
		for _, p := range []redisadapter.Protocol{redisadapter.Protocol03, redisadapter.Protocol02} {
			t.Run(tt.name+"/"+protoName(p), func(t *testing.T) {
				be := backend{name: tt.name, client: tt.client}
				if tt.name == "wrapped" {
					// Every node on the same embedded server.
					c := tt.client(t)
					be.client = func(*testing.T) redis.UniversalClient { return c }
				}
				cfg := newConfig(t, be, p)
				n1, n2 := cfg.node(t, "n1"), cfg.node(t, "n2")
				a, b := n1.dial(t, "a"), n2.dial(t, "b")
				join(t, a, "r")
				join(t, b, "r")
				ready(t, n1, n2)

				require.NoError(t, n1.io.To("r").Emit("hi", 1))
				assert.Equal(t, []any{float64(1)}, next(t, a, "hi"))
				assert.Equal(t, []any{float64(1)}, next(t, b, "hi"))

				all, err := redisadapter.FetchSockets(ctxTimeout(t, 5*time.Second), n2.nsp(), "r")
				require.NoError(t, err)
				assert.Len(t, all, 2)
			})
		}
	}
}
