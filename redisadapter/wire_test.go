package redisadapter_test

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/qaplatform/socketio/redisadapter"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/zishang520/socket.io/v2/adapter"
	"github.com/zishang520/socket.io/v2/socket"
)

// lastEntry returns the newest entry of the stream.
func lastEntry(t *testing.T, rdb *redis.Client, stream string) redis.XMessage {
	t.Helper()
	e, err := rdb.XRevRangeN(context.Background(), stream, "+", "-", 1).Result()
	require.NoError(t, err)
	require.Len(t, e, 1)
	return e[0]
}

// The stream entries are those of @socket.io/redis-streams-adapter: fields
// uid, nsp, type (a decimal string) and data (JSON, or base64 msgpack when
// it holds binary), with the objects socket.io-adapter builds.
func TestWireStreamEntries(t *testing.T) {
	each(t, func(t *testing.T, be backend, p redisadapter.Protocol) {
		cfg := newConfig(t, be, p)
		n1 := cfg.node(t, "n1")
		c := n1.dial(t, "c")
		join(t, c, "r")
		ready(t, n1)
		stream := cfg.opts.StreamName

		require.NoError(t, n1.io.To("r").Except("x").Emit("wire", 1, "s"))
		next(t, c, "wire")
		e := lastEntry(t, n1.rdb, stream)
		assert.Equal(t, string(n1.nsp().Adapter().(adapter.ClusterAdapter).Uid()), e.Values["uid"])
		assert.Equal(t, "/", e.Values["nsp"])
		assert.Equal(t, "3", e.Values["type"])
		assert.JSONEq(t, `{"opts":{"rooms":["r"],"except":["x"],"flags":{}},"packet":{"type":2,"data":["wire",1,"s"]}}`, e.Values["data"].(string))

		require.NoError(t, n1.io.Timeout(1500*time.Millisecond).Volatile().Emit("flags"))
		next(t, c, "flags")
		e = lastEntry(t, n1.rdb, stream)
		assert.JSONEq(t, `{"opts":{"rooms":[],"except":[],"flags":{"volatile":true,"timeout":1500}},"packet":{"type":2,"data":["flags"]}}`, e.Values["data"].(string))

		n1.io.In("r").SocketsJoin("j")
		e = lastEntry(t, n1.rdb, stream)
		assert.Equal(t, "4", e.Values["type"])
		assert.JSONEq(t, `{"opts":{"rooms":["r"],"except":[],"flags":{}},"rooms":["j"]}`, e.Values["data"].(string))

		n1.io.Emit("bin", []byte{1, 2, 3})
		e = lastEntry(t, n1.rdb, stream)
		data := e.Values["data"].(string)
		require.False(t, strings.HasPrefix(data, "{"), "binary data is base64 msgpack: %s", data)
		raw, err := base64.StdEncoding.DecodeString(data)
		require.NoError(t, err)
		var m map[string]any
		require.NoError(t, msgpack.Unmarshal(raw, &m))
		assert.Equal(t, []any{"bin", []byte{1, 2, 3}}, m["packet"].(map[string]any)["data"])
	})
}

// Entries written as the Node adapter writes them reach the local sockets.
func TestWireStreamEntriesFromNode(t *testing.T) {
	each(t, func(t *testing.T, be backend, p redisadapter.Protocol) {
		cfg := newConfig(t, be, p)
		n1 := cfg.node(t, "n1")
		c, d := n1.dial(t, "c"), n1.dial(t, "d")
		join(t, c, "r")
		ready(t, n1)
		xadd := func(typ, data string) {
			values := []any{"uid", "node-js", "nsp", "/", "type", typ}
			if data != "" {
				values = append(values, "data", data)
			}
			require.NoError(t, n1.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: cfg.opts.StreamName, Values: values}).Err())
		}
		xadd("3", `{"packet":{"type":2,"data":["from-js",{"k":1}],"nsp":"/"},"opts":{"rooms":["r"],"except":[],"flags":{}}}`)
		assert.Equal(t, []any{map[string]any{"k": float64(1)}}, next(t, c, "from-js"))

		b, err := msgpack.Marshal(map[string]any{
			"packet": map[string]any{"type": 2, "data": []any{"bin-js", []byte{9}}, "nsp": "/"},
			"opts":   map[string]any{"rooms": []any{}, "except": []any{"r"}},
		})
		require.NoError(t, err)
		xadd("3", base64.StdEncoding.EncodeToString(b))
		next(t, d, "bin-js")

		xadd("4", `{"opts":{"rooms":["r"],"except":[]},"rooms":["j"]}`) // SOCKETS_JOIN
		eventually(t, 5*time.Second, "c joined j", func() bool {
			k, err := redisadapter.RoomSize(context.Background(), n1.nsp(), "j")
			return err == nil && k == 1
		})
		xadd("6", `{"opts":{"rooms":["j"],"except":[]},"close":true}`) // DISCONNECT_SOCKETS
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("c was not disconnected")
		}
		xadd("13", "")                    // ADAPTER_CLOSE of an unknown node: ignored
		xadd("3", `{"packet":"garbage"}`) // undecodable: skipped
		xadd("3", `{"packet":{"type":2,"data":["still-reading"]},"opts":{"rooms":[],"except":[]}}`)
		next(t, d, "still-reading")
	})
}

// A node written from the JavaScript sources answers FETCH_SOCKETS the way
// socket.io 4 does; its socket comes back with its handshake.
func TestWireFetchSocketsFromNode(t *testing.T) {
	each(t, func(t *testing.T, be backend, p redisadapter.Protocol) {
		cfg := newConfig(t, be, p)
		n1 := cfg.node(t, "n1")
		c := n1.dial(t, "c")
		join(t, c, "r")
		ready(t, n1)
		f := startFakeNode(t, cfg, true)
		eventually(t, 5*time.Second, "the node is counted", func() bool { return n1.nsp().Adapter().ServerCount() == 2 })

		all, err := redisadapter.FetchSockets(ctxTimeout(t, 3*time.Second), n1.nsp(), "r")
		require.NoError(t, err)
		req := f.waitRequest(t)
		assert.Equal(t, "/", req["nsp"])
		opts := req["data"].(map[string]any)["opts"].(map[string]any)
		assert.Equal(t, []any{"r"}, opts["rooms"])
		assert.Equal(t, []any{}, opts["except"])

		require.Len(t, all, 2)
		var remote socket.SocketDetails
		for _, s := range all {
			if s.Id() == fakeSocketID {
				remote = s
			}
		}
		require.NotNil(t, remote)
		h := remote.Handshake()
		assert.Equal(t, []string{"node"}, h.Headers["User-Agent"])
		assert.Equal(t, []string{"1", "2"}, h.Headers["X-Multi"])
		assert.Equal(t, []string{"4"}, h.Query["EIO"])
		assert.Equal(t, int64(1767225600000), h.Issued)
		assert.Equal(t, "::ffff:127.0.0.1", h.Address)
		assert.Equal(t, map[string]any{"token": "t"}, h.Auth)
		assert.True(t, remote.Rooms().Has("r"))
		assert.Equal(t, map[string]any{"from": "fake"}, remote.Data())
	})
}
