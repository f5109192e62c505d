package redisadapter_test

import (
	"context"
	"fmt"
	"math"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/qaplatform/socketio/internal/sioclient"
	"github.com/qaplatform/socketio/redisadapter"
	"github.com/redis/go-redis/v9"
	"github.com/zishang520/engine.io/v2/types"
	"github.com/zishang520/socket.io/v2/socket"
)

// BenchmarkBroadcast broadcasts to a room of members spread evenly over 1,
// 2 and 3 nodes sharing one real Redis, from the first node, and reports
// deliveries per second and the latency from emit to receipt (p50, p99),
// so that the cost of crossing nodes reads as a ratio to the single-node
// run of the same invocation:
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench Broadcast ./redisadapter/
func BenchmarkBroadcast(b *testing.B) {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		b.Skip("REDIS_URL is not set; the broadcast benchmark needs a real Redis")
	}
	ropts, err := redis.ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	const members = 12
	for _, nodes := range []int{1, 2, 3} {
		b.Run(fmt.Sprintf("nodes=%d/members=%d", nodes, members), func(b *testing.B) {
			benchBroadcast(b, ropts, nodes, members)
		})
	}
}

func benchBroadcast(b *testing.B, ropts *redis.Options, nodes, members int) {
	prefix := fmt.Sprintf("bench:%d:", time.Now().UnixNano())
	var joined sync.WaitGroup
	joined.Add(members)
	var servers []*socket.Server
	var clients []*sioclient.Client
	for range nodes {
		rdb := redis.NewClient(ropts)
		builder := redisadapter.New(rdb, redisadapter.Options{StreamName: prefix + "stream", ChannelPrefix: prefix + "chan"})
		so := socket.DefaultServerOptions()
		so.SetAdapter(builder)
		// Without pre-encoded frames: v2.5.0 loses broadcasts with them.
		so.SetPerMessageDeflate(&types.PerMessageDeflate{Threshold: math.MaxInt32})
		sio := socket.NewServer(nil, so)
		sio.On("connection", func(args ...any) {
			args[0].(*socket.Socket).Join("bench")
			joined.Done()
		})
		hs := httptest.NewServer(sio.ServeHandler(so))
		servers = append(servers, sio)
		b.Cleanup(func() {
			sio.Close(nil)
			hs.CloseClientConnections()
			hs.Close()
			builder.Close()
			rdb.Del(context.Background(), prefix+"stream")
			rdb.Close()
		})
		// Spread the members: member i connects to node i % nodes.
		for i := len(servers) - 1; i < members; i += nodes {
			c, err := sioclient.Dial(context.Background(), sioclient.Options{URL: hs.URL, Transport: sioclient.TransportWebsocket})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Close() })
			clients = append(clients, c)
		}
	}
	joined.Wait()

	latencies := make([][]time.Duration, len(clients))
	var readers sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i, c := range clients {
		readers.Add(1)
		go func() {
			defer readers.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			for len(latencies[i]) < b.N {
				ev, err := c.NextAny(ctx)
				if err != nil {
					return
				}
				if ev.Name != "m" || len(ev.Args) == 0 {
					continue
				}
				sent, _ := ev.Args[0].(float64)
				latencies[i] = append(latencies[i], time.Since(time.UnixMicro(int64(sent))))
			}
		}()
	}
	for range b.N {
		servers[0].To("bench").Emit("m", time.Now().UnixMicro())
	}
	readers.Wait()
	elapsed := time.Since(start)
	b.StopTimer()

	var all []time.Duration
	for _, l := range latencies {
		all = append(all, l...)
	}
	if want := members * b.N; len(all) != want {
		b.Fatalf("%d of %d deliveries arrived", len(all), want)
	}
	slices.Sort(all)
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
}
