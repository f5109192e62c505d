package socketio_test

import (
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/redistest"
	"github.com/qaplatform/socketio/internal/sioclient"
	"github.com/qaplatform/socketio/redisadapter"
)

// TestRedisTopologiesWire runs two nodes over the wire on each Redis
// deployment besides one server: a Ring of two shards (without the cluster
// adapter, which a Ring cannot carry), a Sentinel failover client and a
// real Cluster (with the adapter; when testdata/redis-topologies/run.sh
// provides them). Each node is given its own Auth, as Options.Auth; the
// nodes share sessions, history, the connection limit and the blocklist.
func TestRedisTopologiesWire(t *testing.T) {
	tests := []struct {
		name    string
		client  func(t *testing.T) redis.UniversalClient
		adapter bool
	}{
		{"ring", func(t *testing.T) redis.UniversalClient {
			return redistest.NewRing(t, newMiniredis(t).Addr(), newMiniredis(t).Addr())
		}, false},
		{"sentinel", func(t *testing.T) redis.UniversalClient { return redistest.NewSentinel(t) }, true},
		{"cluster", func(t *testing.T) redis.UniversalClient { return redistest.NewCluster(t) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb := tt.client(t)
			rdb.AddHook(&redistest.SlotCheckHook{T: t})
			prefix := "qa-wire:" + rand.Text()[:10] + ":"
			t.Cleanup(func() { redistest.DeletePrefix(t, rdb, prefix) })
			node := func() (*testServer, *socketio.Auth) {
				auth, err := socketio.NewAuth(socketio.AuthOptions{
					MaxConnectionsPerIP: 2, TrustedProxies: []string{"127.0.0.0/8"}, BlocklistCacheTTL: 10 * time.Millisecond,
				})
				require.NoError(t, err)
				t.Cleanup(func() { auth.Close() })
				opts := socketio.Options{Redis: rdb, RedisPrefix: prefix, Auth: auth}
				sio := socket.NewServer(nil, nil)
				if tt.adapter {
					adapter := redisadapter.New(rdb, redisadapter.Options{StreamName: prefix + "stream", ChannelPrefix: prefix + "chan"})
					t.Cleanup(func() { adapter.Close() })
					so := socket.DefaultServerOptions()
					so.SetAdapter(adapter)
					sio = socket.NewServer(nil, so)
				}
				return startServerOn(t, sio, opts), auth
			}
			a, authA := node()
			b, _ := node()

			// A session asked on A resumes on B, with its history.
			ca, hello := a.dial(t, sioclient.TransportWebsocket)
			id := okReply(t, "ask", call(t, ca, "ask_question", "What is Socket.IO?"))["task_id"]
			assert.Equal(t, id, next(t, ca, "answer")["task_id"])
			cb, again := b.dial(t, sioclient.TransportPolling, withAuth(map[string]any{"resume": hello["resume_token"]}))
			assert.Equal(t, hello["session_id"], again["session_id"])
			items := okReply(t, "history", call(t, cb, "get_history"))["items"].([]any)
			require.Len(t, items, 1)

			if tt.adapter {
				// A room answer asked on A reaches the member on B.
				okReply(t, "join", call(t, ca, "join_room", "lobby"))
				m := okReply(t, "join", call(t, cb, "join_room", "lobby"))
				assert.EqualValues(t, 2, m["members"], "members counted across nodes")
				rid := okReply(t, "ask", call(t, ca, "ask_question", map[string]any{"question": "How do rooms work?", "room": "lobby"}))["task_id"]
				assert.Equal(t, rid, next(t, cb, "answer")["task_id"])
			}

			// One connection limit (2) and one blocklist over both nodes.
			const addr = "198.51.100.40"
			a.dial(t, sioclient.TransportWebsocket, withHeader("X-Forwarded-For", addr))
			b.dial(t, sioclient.TransportWebsocket, withHeader("X-Forwarded-For", addr))
			_, err := a.dialErr(t, sioclient.TransportWebsocket, withHeader("X-Forwarded-For", addr))
			requireConnectError(t, err, "too_many_connections")
			require.NoError(t, authA.BlockIP(t.Context(), "203.0.113.0/24", "abuse", 0))
			require.Eventually(t, func() bool {
				_, err := b.dialErr(t, sioclient.TransportWebsocket, withHeader("X-Forwarded-For", "203.0.113.5"))
				var ce *sioclient.ConnectError
				return errors.As(err, &ce) && ce.Message == "ip_blocked"
			}, 5*time.Second, 20*time.Millisecond)
		})
	}
}
