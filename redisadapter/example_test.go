package redisadapter_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/qaplatform/socketio/redisadapter"
	"github.com/redis/go-redis/v9"
	"github.com/zishang520/socket.io/v2/socket"
)

func ExampleNew() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	// One option installs the adapter; every node of the service does the
	// same with the same Redis.
	b := redisadapter.New(rdb, redisadapter.Options{})
	opts := socket.DefaultServerOptions()
	opts.SetAdapter(b)
	io := socket.NewServer(nil, opts)
	defer func() {
		done := make(chan struct{})
		io.Close(func(error) { close(done) })
		<-done // the adapter's goroutines have stopped
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for b.Health(ctx) != nil {
		time.Sleep(10 * time.Millisecond) // readiness probe
	}
	io.To("lobby").Emit("news", "reaches the lobby on every node")
	members, err := redisadapter.RoomSize(ctx, io.Sockets(), "lobby")
	fmt.Println(members, err)
	// Output: 0 <nil>
}
