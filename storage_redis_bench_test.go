package socketio_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	socketio "github.com/qaplatform/socketio"
)

// benchOwnerTasks is how many tasks a benchmark puts in one owner's
// history, below MaxHistory so that no write has to trim.
const benchOwnerTasks = 100

// benchParallelism is the b.SetParallelism of the parallel variants:
// benchParallelism×GOMAXPROCS goroutines share the client's pool.
const benchParallelism = 4

// BenchmarkRedis measures RedisStorage operations against the real Redis
// at REDIS_URL, next to raw_GET and raw_SET, the server's own
// single-command round trip. Each operation runs serially (latency) and
// with b.RunParallel (throughput: ns/op is wall time over all goroutines'
// ops), and reports round-trips/op, counted by a client hook. Compare
// ratios within one run; absolute figures depend on the machine.
func BenchmarkRedis(b *testing.B) {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		b.Skip("REDIS_URL is not set: BenchmarkRedis needs a real Redis (e.g. REDIS_URL=redis://127.0.0.1:6379/0)")
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		b.Fatalf("REDIS_URL: %v", err)
	}
	client := redis.NewClient(opts)
	b.Cleanup(func() { _ = client.Close() })
	hook := &countingHook{}
	client.AddHook(hook)
	prefix := redisTestPrefix()
	s := socketio.NewRedisStorage(client, socketio.RedisStorageOptions{
		Prefix:         prefix,
		StorageOptions: socketio.StorageOptions{HistoryTTL: 10 * time.Minute, SessionTTL: 10 * time.Minute},
	})
	b.Cleanup(func() {
		_ = s.Close()
		deleteRedisPrefix(b, client, prefix)
	})
	ctx := context.Background()
	if err := client.Ping(ctx).Err(); err != nil {
		b.Fatalf("REDIS_URL is set but Redis does not answer: %v", err)
	}

	rawKey := prefix + "raw"
	rawValue := strings.Repeat("v", 64)
	if err := client.Set(ctx, rawKey, rawValue, 10*time.Minute).Err(); err != nil {
		b.Fatal(err)
	}
	var ids atomic.Uint64
	newID := func() string { return "bench-" + strconv.FormatUint(ids.Add(1), 36) }
	historyOwner := socketio.OwnerOf("history-session", "")
	for range 2 * 20 {
		task := benchTask(historyOwner, "history-session", newID())
		if err := s.CreateTask(ctx, task, 0); err != nil {
			b.Fatal(err)
		}
		u := socketio.TaskUpdate{
			Status:  socketio.TaskCompleted,
			Answer:  strings.Repeat("An answer of a typical length. ", 8),
			Sources: []string{"kb/articles/reset-password", "kb/articles/account"},
		}
		if _, _, err := s.UpdateTask(ctx, task.Owner, task.ID, u); err != nil {
			b.Fatal(err)
		}
	}

	// Each case returns the op of one worker (the serial loop, or one
	// RunParallel goroutine); prepare readies n ops' data, untimed.
	cases := []struct {
		name    string
		prepare func(b *testing.B, n int)
		worker  func() func() error
	}{
		{name: "raw_GET", worker: func() func() error {
			return func() error { return client.Get(ctx, rawKey).Err() }
		}},
		{name: "raw_SET", worker: func() func() error {
			return func() error { return client.Set(ctx, rawKey, rawValue, 10*time.Minute).Err() }
		}},
		{name: "AppendHistory", worker: func() func() error {
			// A user's new session per task, with the Server's default
			// open-task limit, so that the limit is checked and never hit.
			var owner string
			n := 0
			return func() error {
				if n%benchOwnerTasks == 0 {
					owner = socketio.OwnerOf("", newID())
				}
				n++
				return s.CreateTask(ctx, benchTask(owner, newID(), newID()), 3)
			}
		}},
		{name: "HistoryPage", worker: func() func() error {
			return func() error {
				items, _, err := s.History(ctx, historyOwner, "", 20)
				if err == nil && len(items) != 20 {
					err = fmt.Errorf("History returned %d items", len(items))
				}
				return err
			}
		}},
	}
	// TaskTransition: each op is one transition, pending → processing or
	// processing → completed, of tasks created beforehand.
	var (
		pendingMu sync.Mutex
		pending   []socketio.Task
	)
	cases = append(cases, struct {
		name    string
		prepare func(b *testing.B, n int)
		worker  func() func() error
	}{
		name: "TaskTransition",
		prepare: func(b *testing.B, n int) {
			tasks := benchCreateTasks(b, s, n/2+64, newID)
			pendingMu.Lock()
			pending = tasks
			pendingMu.Unlock()
		},
		worker: func() func() error {
			var cur *socketio.Task
			return func() error {
				if cur == nil {
					pendingMu.Lock()
					cur = &pending[len(pending)-1]
					pending = pending[:len(pending)-1]
					pendingMu.Unlock()
					_, applied, err := s.UpdateTask(ctx, cur.Owner, cur.ID, socketio.TaskUpdate{Status: socketio.TaskProcessing})
					if err == nil && !applied {
						err = errors.New("pending → processing did not apply")
					}
					return err
				}
				_, applied, err := s.UpdateTask(ctx, cur.Owner, cur.ID, socketio.TaskUpdate{
					Status: socketio.TaskCompleted, Answer: "answer", Sources: []string{"kb/1"},
				})
				if err == nil && !applied {
					err = errors.New("processing → completed did not apply")
				}
				cur = nil
				return err
			}
		},
	})

	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			// Warm up: load scripts and fill the pool outside the timings.
			if c.prepare != nil {
				c.prepare(b, 2)
			}
			if err := c.worker()(); err != nil {
				b.Fatal(err)
			}
			b.Run("serial", func(b *testing.B) {
				if c.prepare != nil {
					c.prepare(b, b.N)
				}
				op := c.worker()
				b.ReportAllocs()
				before := hook.n.Load()
				b.ResetTimer()
				for range b.N {
					if err := op(); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(hook.n.Load()-before)/float64(b.N), "round-trips/op")
			})
			b.Run("parallel", func(b *testing.B) {
				if c.prepare != nil {
					c.prepare(b, b.N)
				}
				b.SetParallelism(benchParallelism)
				b.ReportAllocs()
				before := hook.n.Load()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					op := c.worker()
					for pb.Next() {
						if err := op(); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.StopTimer()
				b.ReportMetric(float64(hook.n.Load()-before)/float64(b.N), "round-trips/op")
			})
		})
	}
}

// benchTask returns a new pending task of a typical size.
func benchTask(owner, sess, id string) socketio.Task {
	now := time.Now()
	return socketio.Task{
		ID: id, SessionID: sess, Owner: owner,
		Question: "How do I reset my password when the reset mail never arrives?",
		Room:     "support", AskedAt: now, UpdatedAt: now,
	}
}

// benchCreateTasks creates n pending tasks, benchOwnerTasks per owner, with
// a few concurrent workers, and returns them.
func benchCreateTasks(b *testing.B, s socketio.Storage, n int, newID func() string) []socketio.Task {
	b.Helper()
	tasks := make([]socketio.Task, n)
	var sess string
	for i := range tasks {
		if i%benchOwnerTasks == 0 {
			sess = newID()
		}
		tasks[i] = benchTask(socketio.OwnerOf(sess, ""), sess, newID())
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := s.CreateTask(context.Background(), tasks[i], 0); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return tasks
}
