package socketio_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/baresrv"
	"github.com/qaplatform/socketio/internal/sioclient"
)

// roundTripParallelism is the b.SetParallelism of the parallel variant: it
// runs roundTripParallelism×GOMAXPROCS clients, each in its own goroutine.
const roundTripParallelism = 4

// BenchmarkRoundTrip measures one get_history request and its ack over a
// real loopback connection, against a bare v2 handler (the baseline) and
// against the library with its full built-in hook chain. Compare library
// with bare from the same run; absolute figures depend on the machine.
//
// clients=1 is the latency of one round trip; clients=N runs N clients at
// once and measures throughput (ns/op is wall time over all clients' ops).
func BenchmarkRoundTrip(b *testing.B) {
	impls := []struct {
		name  string
		start func(b *testing.B) string
	}{
		{"bare", startBareBench},
		{"library", startLibraryBench},
	}
	for _, impl := range impls {
		b.Run(impl.name, func(b *testing.B) {
			for _, tr := range transports {
				b.Run(tr, func(b *testing.B) {
					url := impl.start(b)
					n := roundTripParallelism * runtime.GOMAXPROCS(0)
					clients := dialBench(b, url, tr, n+1)
					b.Run("clients=1", func(b *testing.B) { roundTripSerial(b, clients[0]) })
					b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) { roundTripParallel(b, clients[1:]) })
				})
			}
		})
	}
}

func roundTripSerial(b *testing.B, c *sioclient.Client) {
	ctx := context.Background()
	payload := map[string]any{}
	b.ReportAllocs()
	for b.Loop() {
		if err := getHistory(ctx, c, payload); err != nil {
			b.Fatal(err)
		}
	}
}

func roundTripParallel(b *testing.B, clients []*sioclient.Client) {
	pool := make(chan *sioclient.Client, len(clients))
	for _, c := range clients {
		pool <- c
	}
	b.SetParallelism(roundTripParallelism)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := <-pool // RunParallel starts exactly len(clients) goroutines
		defer func() { pool <- c }()
		ctx := context.Background()
		payload := map[string]any{}
		for pb.Next() {
			if err := getHistory(ctx, c, payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// getHistory sends one get_history with an ack and checks the reply.
func getHistory(ctx context.Context, c *sioclient.Client, payload map[string]any) error {
	reply, err := c.EmitWithAck(ctx, "get_history", payload)
	if err != nil {
		return err
	}
	if len(reply) != 1 {
		return fmt.Errorf("get_history: %d reply arguments", len(reply))
	}
	if m, _ := reply[0].(map[string]any); m["ok"] != true {
		return fmt.Errorf("get_history: %v", reply[0])
	}
	return nil
}

// startBareBench serves the baseline v2 server on a loopback port until the
// benchmark ends.
func startBareBench(b *testing.B) string {
	b.Helper()
	h, closeBare := baresrv.New()
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", h)
	hs := httptest.NewServer(mux)
	b.Cleanup(func() {
		closeBare()
		hs.CloseClientConnections()
		hs.Close()
	})
	return hs.URL
}

// startLibraryBench serves the library on a loopback port until the
// benchmark ends: all built-in hooks, the default MemoryStorage, and limits
// no benchmark reaches.
func startLibraryBench(b *testing.B) string {
	b.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	auth, err := socketio.NewAuth(socketio.AuthOptions{
		MaxConnectionsPerIP:        10_000,
		MaxQuestionsPerMinute:      1_000_000,
		MaxQuestionsPerMinutePerIP: 1_000_000,
		Logger:                     quiet,
	})
	if err != nil {
		b.Fatal(err)
	}
	sio := socket.NewServer(nil, nil)
	qa, err := socketio.Register(sio, socketio.Options{Auth: auth, Logger: quiet})
	if err != nil {
		auth.Close()
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", qa.Handler())
	hs := httptest.NewServer(mux)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := qa.Close(ctx); err != nil {
			b.Error(err)
		}
		sio.Close(nil)
		if err := auth.Close(); err != nil {
			b.Error(err)
		}
		hs.CloseClientConnections()
		hs.Close()
	})
	return hs.URL
}

// dialBench connects n clients over transport; they are closed when the
// benchmark ends.
func dialBench(b *testing.B, url, transport string, n int) []*sioclient.Client {
	b.Helper()
	clients := make([]*sioclient.Client, 0, n)
	b.Cleanup(func() {
		for _, c := range clients {
			c.Close()
		}
	})
	for range n {
		c, err := sioclient.Dial(context.Background(), sioclient.Options{URL: url, Transport: transport, Timeout: 10 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		clients = append(clients, c)
	}
	return clients
}
