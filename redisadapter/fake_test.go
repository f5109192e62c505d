package redisadapter_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/qaplatform/socketio/redisadapter"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

// fakeNode is a node written from the JavaScript sources of
// @socket.io/redis-streams-adapter and socket.io-adapter, on raw Redis
// commands: it joins the cluster of namespace "/", records the
// FETCH_SOCKETS requests it sees and, when it answers, replies with one
// socket shaped as socket.io 4 sends it.
type fakeNode struct {
	uid      string
	requests chan map[string]any
	cancel   context.CancelFunc
	once     sync.Once
	stopFn   func()
}

const fakeSocketID = "fake-socket"

// fakeSocket is a socket as socket.io 4 serialises it in a
// FETCH_SOCKETS_RESPONSE.
func fakeSocket() map[string]any {
	return map[string]any{
		"id": fakeSocketID,
		"handshake": map[string]any{
			"headers": map[string]any{"user-agent": "node", "x-multi": []any{"1", "2"}},
			"time":    "Thu Jan 01 2026 00:00:00 GMT+0000", "address": "::ffff:127.0.0.1",
			"xdomain": false, "secure": false, "issued": 1767225600000,
			"url":   "/socket.io/?EIO=4&transport=websocket",
			"query": map[string]any{"EIO": "4", "transport": "websocket"},
			"auth":  map[string]any{"token": "t"},
		},
		"rooms": []any{fakeSocketID, "r"},
		"data":  map[string]any{"from": "fake"},
	}
}

func startFakeNode(t *testing.T, cfg *clusterConfig, answer bool) *fakeNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &fakeNode{uid: "fake-" + uniq(t), requests: make(chan map[string]any, 16), cancel: cancel}
	rdb := newClient(t, cfg.be, cfg.names+"-fake", "")
	var wg sync.WaitGroup
	if cfg.opts.Protocol == redisadapter.Protocol03 {
		public := cfg.opts.ChannelPrefix + "#/#"
		ps := rdb.Subscribe(ctx, public, public+f.uid+"#")
		for range 2 {
			_, err := ps.Receive(ctx) // subscription confirmations
			require.NoError(t, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				msg, err := ps.ReceiveMessage(ctx)
				if err != nil {
					return
				}
				var m map[string]any
				if msgpack.Unmarshal([]byte(msg.Payload), &m) != nil || toInt(m["type"]) != 7 {
					continue
				}
				f.requests <- m
				if answer {
					data := m["data"].(map[string]any)
					resp, _ := msgpack.Marshal(map[string]any{
						"uid": f.uid, "nsp": "/", "type": 8,
						"data": map[string]any{"requestId": data["requestId"], "sockets": []any{fakeSocket()}},
					})
					rdb.Publish(ctx, public+m["uid"].(string)+"#", resp)
				}
			}
		}()
		f.stopFn = func() { _ = ps.Close() }
	} else {
		stream := cfg.opts.StreamName
		xadd := func(typ string, data any) {
			values := []any{"uid", f.uid, "nsp", "/", "type", typ}
			if data != nil {
				b, _ := json.Marshal(data)
				values = append(values, "data", string(b))
			}
			rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, MaxLen: 10000, Approx: true, Values: values})
		}
		last := "0-0"
		if e, err := rdb.XRevRangeN(ctx, stream, "+", "-", 1).Result(); err == nil && len(e) > 0 {
			last = e[0].ID
		}
		xadd("1", nil) // INITIAL_HEARTBEAT
		wg.Add(1)
		go func() {
			defer wg.Done()
			beat := time.NewTicker(cfg.opts.HeartbeatInterval)
			defer beat.Stop()
			for ctx.Err() == nil {
				select {
				case <-beat.C:
					xadd("2", nil)
				default:
				}
				res, err := rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{stream, last}, Block: 50 * time.Millisecond}).Result()
				if err != nil && !errors.Is(err, redis.Nil) {
					continue
				}
				for _, s := range res {
					for _, e := range s.Messages {
						last = e.ID
						if e.Values["type"] != "7" || e.Values["uid"] == f.uid {
							continue
						}
						var data map[string]any
						if json.Unmarshal([]byte(e.Values["data"].(string)), &data) != nil {
							continue
						}
						f.requests <- map[string]any{"uid": e.Values["uid"], "nsp": e.Values["nsp"], "type": 7, "data": data}
						if answer {
							xadd("8", map[string]any{"requestId": data["requestId"], "sockets": []any{fakeSocket()}})
						}
					}
				}
			}
		}()
		f.stopFn = func() {}
	}
	t.Cleanup(f.stop)
	f.stopFn = func(inner func()) func() {
		return func() { inner(); cancel(); wg.Wait() }
	}(f.stopFn)
	return f
}

// stop ends the fake node abruptly: no ADAPTER_CLOSE, like a crash.
func (f *fakeNode) stop() { f.once.Do(f.stopFn) }

// waitRequest waits for the next FETCH_SOCKETS the node receives.
func (f *fakeNode) waitRequest(t *testing.T) map[string]any {
	t.Helper()
	select {
	case m := <-f.requests:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("the fake node received no request")
		return nil
	}
}

func toInt(v any) int {
	switch n := v.(type) {
	case int8:
		return int(n)
	case uint8:
		return int(n)
	case int16:
		return int(n)
	case uint16:
		return int(n)
	case int32:
		return int(n)
	case uint32:
		return int(n)
	case int64:
		return int(n)
	case uint64:
		return int(n)
	case int:
		return n
	case float64:
		return int(n)
	}
	return -1
}
