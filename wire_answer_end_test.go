package socketio_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/redistest"
	"github.com/qaplatform/socketio/internal/sioclient"
)

// endFaultStorage is a MemoryStorage whose writes of a final status fail
// while it is broken: with ErrUnavailable (the store is down) or, when lose
// is set, with ErrNotFound (the store came back without the task). Each
// refused write is reported on refused.
type endFaultStorage struct {
	*socketio.MemoryStorage
	broken  atomic.Bool
	lose    atomic.Bool
	only    socketio.TaskStatus // when set, only this final status fails
	refused chan string
}

func newEndFaultStorage(t *testing.T) *endFaultStorage {
	m := socketio.NewMemoryStorage(socketio.StorageOptions{})
	t.Cleanup(func() { m.Close() })
	return &endFaultStorage{MemoryStorage: m, refused: make(chan string, 100)}
}

func (s *endFaultStorage) UpdateTask(ctx context.Context, owner, id string, u socketio.TaskUpdate) (socketio.Task, bool, error) {
	if u.Status.Finished() && s.broken.Load() && (s.only == "" || u.Status == s.only) {
		select {
		case s.refused <- id:
		default:
		}
		if s.lose.Load() {
			return socketio.Task{}, false, fmt.Errorf("task %q: %w", id, socketio.ErrNotFound)
		}
		return socketio.Task{}, false, fmt.Errorf("store down: %w", socketio.ErrUnavailable)
	}
	return s.MemoryStorage.UpdateTask(ctx, owner, id, u)
}

// streamedEnd collects the events of one task after its reply until its
// terminal event (answer or answer_error), and checks that no second
// terminal event follows.
func streamedEnd(t *testing.T, c *sioclient.Client, id any) (statuses []string, chunks int, terminal sioclient.Event) {
	t.Helper()
	for {
		ev, err := c.NextAny(context.Background())
		require.NoError(t, err, "waiting for the end of the answer (statuses so far %v, %d chunks)", statuses, chunks)
		m := ev.Args[0].(map[string]any)
		require.Equal(t, id, m["task_id"], ev.Name)
		switch ev.Name {
		case "task_status":
			statuses = append(statuses, m["status"].(string))
		case "answer_chunk":
			chunks++
		case "answer", "answer_error":
			noEvent(t, c, "answer")
			noEvent(t, c, "answer_error")
			return statuses, chunks, ev
		}
	}
}

// TestWireAnswerEndStoredLate: the store is down when the answer ends; the
// end is kept and retried, and the clients get it once it is stored.
func TestWireAnswerEndStoredLate(t *testing.T) {
	store := newEndFaultStorage(t)
	g := newGatedAnswerer()
	t.Cleanup(g.open)
	ts := startServer(t, socketio.Options{Storage: store, Answerer: g})
	c, _ := ts.dial(t, "websocket")
	id := okReply(t, "ask", call(t, c, "ask_question", map[string]any{"question": "slow", "stream": true}))["task_id"]
	<-g.started
	store.broken.Store(true)
	g.open()
	assert.Equal(t, id, <-store.refused)
	store.broken.Store(false)

	statuses, chunks, end := streamedEnd(t, c, id)
	assert.Equal(t, []string{"pending", "processing", "completed"}, statuses)
	assert.Equal(t, 2, chunks)
	require.Equal(t, "answer", end.Name)
	assert.Equal(t, "answer to slow", end.Args[0].(map[string]any)["answer"])
	task := okReply(t, "task", call(t, c, "get_task", map[string]any{"task_id": id}))["task"].(map[string]any)
	assert.Equal(t, "completed", task["status"])
	// The open slot is free again.
	okReply(t, "ask", call(t, c, "ask_question", "again"))
}

// TestWireCancelWhileEndRetried: a cancel stored while the answer's end
// waits for the store wins; the clients get its end only.
func TestWireCancelWhileEndRetried(t *testing.T) {
	store := newEndFaultStorage(t)
	store.only = socketio.TaskCompleted
	g := newGatedAnswerer()
	t.Cleanup(g.open)
	ts := startServer(t, socketio.Options{Storage: store, Answerer: g})
	c, _ := ts.dial(t, "websocket")
	id := okReply(t, "ask", call(t, c, "ask_question", map[string]any{"question": "slow", "stream": true}))["task_id"]
	<-g.started
	store.broken.Store(true)
	g.open()
	assert.Equal(t, id, <-store.refused)
	m := okReply(t, "cancelled", call(t, c, "cancel_task", map[string]any{"task_id": id}))
	assert.Equal(t, "cancelled", m["status"])
	store.broken.Store(false)

	statuses, _, end := streamedEnd(t, c, id)
	assert.Equal(t, []string{"pending", "processing", "cancelled"}, statuses)
	require.Equal(t, "answer_error", end.Name)
	assert.Equal(t, "cancelled", end.Args[0].(map[string]any)["code"])
	task := okReply(t, "task", call(t, c, "get_task", map[string]any{"task_id": id}))["task"].(map[string]any)
	assert.Equal(t, "cancelled", task["status"])
}

// TestWireAnswerEndLost: the store lost the task (it came back empty): the
// clients get a failed end with answer_failed instead of nothing.
func TestWireAnswerEndLost(t *testing.T) {
	store := newEndFaultStorage(t)
	g := newGatedAnswerer()
	t.Cleanup(g.open)
	ts := startServer(t, socketio.Options{Storage: store, Answerer: g})
	c, _ := ts.dial(t, "websocket")
	id := okReply(t, "ask", call(t, c, "ask_question", map[string]any{"question": "slow", "stream": true}))["task_id"]
	<-g.started
	store.lose.Store(true)
	store.broken.Store(true)
	g.open()

	statuses, chunks, end := streamedEnd(t, c, id)
	assert.Equal(t, []string{"pending", "processing", "failed"}, statuses)
	assert.Equal(t, 2, chunks)
	require.Equal(t, "answer_error", end.Name)
	e := end.Args[0].(map[string]any)
	assert.Equal(t, "answer_failed", e["code"])
	assert.Equal(t, "the answer could not be stored", e["message"])
}

// TestCloseStopsAnswerEndRetry: a Server whose store stays down still
// closes, with no retry goroutine left (goleak checks), and pushes no end
// it could not store.
func TestCloseStopsAnswerEndRetry(t *testing.T) {
	store := newEndFaultStorage(t)
	g := newGatedAnswerer()
	t.Cleanup(g.open)
	ts := startServer(t, socketio.Options{Storage: store, Answerer: g})
	c, _ := ts.dial(t, "websocket")
	okReply(t, "ask", call(t, c, "ask_question", "slow"))
	<-g.started
	store.broken.Store(true)
	g.open()
	<-store.refused
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, ts.QA.Close(ctx), context.DeadlineExceeded)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	_, err := c.NextFunc(ctx2, func(ev sioclient.Event) bool { return ev.Name == "answer" || ev.Name == "answer_error" })
	require.Error(t, err, "an end that was not stored was pushed")
}

// logWatch is a slog handler that reports every message logged, so that a
// test can wait for one.
type logWatch struct {
	msgs chan string
}

func newLogWatch() *logWatch { return &logWatch{msgs: make(chan string, 1000)} }

func (w *logWatch) logger() *slog.Logger { return slog.New(w) }

func (w *logWatch) Enabled(context.Context, slog.Level) bool { return true }
func (w *logWatch) WithAttrs([]slog.Attr) slog.Handler       { return w }
func (w *logWatch) WithGroup(string) slog.Handler            { return w }
func (w *logWatch) Handle(_ context.Context, r slog.Record) error {
	select {
	case w.msgs <- r.Message:
	default:
	}
	return nil
}

// wait returns once msg has been logged.
func (w *logWatch) wait(t *testing.T, msg string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-w.msgs:
			if m == msg {
				return
			}
		case <-timeout:
			t.Fatalf("%q was not logged", msg)
		}
	}
}

// TestRedisAnswerEndAcrossOutage: Redis goes down while an answer streams;
// the node keeps the end and stores and pushes it when Redis is back, or
// pushes answer_failed when Redis came back empty.
func TestRedisAnswerEndAcrossOutage(t *testing.T) {
	for _, empty := range []bool{false, true} {
		t.Run(fmt.Sprintf("empty=%v", empty), func(t *testing.T) {
			mr := miniredis.RunT(t)
			r := &sharedRedis{mr: mr, opts: &redis.Options{Addr: mr.Addr()}, prefix: "qa:"}
			g := newGatedAnswerer()
			t.Cleanup(g.open)
			logs := newLogWatch()
			// The in-process queue; TestQueueAnswerAcrossOutage has the Redis one.
			a := r.clusterNode(t, socketio.Options{Answerer: g, StorageTimeout: 300 * time.Millisecond, Logger: logs.logger(), Queue: socketio.LocalQueue()})
			b := r.clusterNode(t, socketio.Options{Answerer: g, StorageTimeout: 300 * time.Millisecond, Queue: socketio.LocalQueue()})
			ca, hello := a.dial(t, sioclient.TransportWebsocket)
			cb, _ := b.dial(t, sioclient.TransportWebsocket, withAuth(map[string]any{"resume": hello["resume_token"]}))
			id := okReply(t, "ask", call(t, ca, "ask_question", map[string]any{"question": "slow", "stream": true}))["task_id"]
			<-g.started
			mr.Close()
			g.open()
			logs.wait(t, "socketio: cannot store the end of a task")
			require.NoError(t, redistest.Restart(mr))
			if empty {
				mr.FlushAll()
			}
			statuses, chunks, end := streamedEnd(t, ca, id)
			assert.Equal(t, 2, chunks)
			if empty {
				assert.Equal(t, []string{"pending", "processing", "failed"}, statuses)
				require.Equal(t, "answer_error", end.Name)
				assert.Equal(t, "answer_failed", end.Args[0].(map[string]any)["code"])
			} else {
				assert.Equal(t, []string{"pending", "processing", "completed"}, statuses)
				require.Equal(t, "answer", end.Name)
				task := okReply(t, "task", call(t, cb, "get_task", map[string]any{"task_id": id}))["task"].(map[string]any)
				assert.Equal(t, "completed", task["status"])
				assert.Equal(t, "answer to slow", task["answer"])
			}
			// The session's socket on node B is not checked: the Redis
			// adapter does not deliver cross-node pushes again after this
			// restart of miniredis (redisadapter's business).
		})
	}
}

// TestRedisAnswerEndAfterDataLoss: Redis loses its data mid-answer (as
// when it restarts empty); the answer's end cannot be stored any more, and
// its clients get answer_failed rather than nothing.
func TestRedisAnswerEndAfterDataLoss(t *testing.T) {
	for _, queue := range []string{"local", "redis"} {
		t.Run(queue, func(t *testing.T) {
			forEachRedis(t, func(t *testing.T, r *sharedRedis) {
				g := newGatedAnswerer()
				t.Cleanup(g.open)
				opts := socketio.Options{Answerer: g}
				if queue == "local" {
					opts.Queue = socketio.LocalQueue()
				}
				a := r.clusterNode(t, opts)
				c, _ := a.dial(t, sioclient.TransportWebsocket)
				id := okReply(t, "ask", call(t, c, "ask_question", map[string]any{"question": "slow", "stream": true}))["task_id"]
				<-g.started
				wipe := r.client(t)
				if r.mr != nil {
					r.mr.FlushAll()
				} else {
					cleanPrefix(wipe, r.prefix)
				}
				g.open()
				statuses, chunks, end := streamedEnd(t, c, id)
				assert.Equal(t, []string{"pending", "processing", "failed"}, statuses)
				if queue == "local" {
					assert.Equal(t, 2, chunks)
				} else {
					assert.Positive(t, chunks, "the two deltas, in one chunk or two")
				}
				require.Equal(t, "answer_error", end.Name)
				assert.Equal(t, "answer_failed", end.Args[0].(map[string]any)["code"])
			})
		})
	}
}
