package socketio_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/alicebob/miniredis/v2/server"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/sioclient"
	"github.com/qaplatform/socketio/internal/streamq"
)

// The tests of this file run the service on a RedisQueue: nodes that only
// take questions, and Workers (in this process, or in child processes that
// are killed) that answer them.

// queueOpts are the queue options of a test: a short claim timeout, so
// that a silent worker's questions are taken over within a test.
func (r *sharedRedis) queueOpts() socketio.RedisQueueOptions {
	return socketio.RedisQueueOptions{Prefix: r.prefix, ClaimAfter: 300 * time.Millisecond, ChunkInterval: 10 * time.Millisecond}
}

// queueNode starts a cluster node that answers nothing itself.
func (r *sharedRedis) queueNode(t *testing.T, opts socketio.Options) *testServer {
	t.Helper()
	opts.Workers = -1
	opts.Queue = socketio.NewRedisQueue(r.client(t), r.queueOpts())
	return r.clusterNode(t, opts)
}

// worker starts a Worker on the shared Redis, closed when the test ends.
func (r *sharedRedis) worker(t *testing.T, a socketio.Answerer) *socketio.Worker {
	t.Helper()
	w, err := socketio.NewWorker(socketio.WorkerOptions{
		Queue:    socketio.NewRedisQueue(r.client(t), r.queueOpts()),
		Answerer: a,
		Logger:   queueLogger(),
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, w.Close(ctx))
	})
	return w
}

// queueLogger is the logger of the queue tests' workers: quiet, or on
// stderr at debug level with QA_TEST_LOG=1.
func queueLogger() *slog.Logger {
	if os.Getenv("QA_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// streamedAnswer is what one socket saw of a streamed task.
type streamedAnswer struct {
	statuses []string
	chunks   map[int][]string // deltas by attempt, in arrival order
	seqs     map[int][]int
	end      sioclient.Event
}

// text returns the deltas of the last attempt joined.
func (s streamedAnswer) text() (string, int) {
	last := 0
	for a := range s.chunks {
		last = max(last, a)
	}
	return strings.Join(s.chunks[last], ""), last
}

// collect reads the events of task id until its end, and checks that no
// second end follows.
func collect(t *testing.T, c *sioclient.Client, id any) streamedAnswer {
	t.Helper()
	s := streamedAnswer{chunks: map[int][]string{}, seqs: map[int][]int{}}
	for {
		ev, err := c.NextAny(context.Background())
		require.NoError(t, err, "waiting for the end of the answer (statuses so far %v)", s.statuses)
		m := ev.Args[0].(map[string]any)
		if m["task_id"] != id {
			continue
		}
		switch ev.Name {
		case "task_status":
			s.statuses = append(s.statuses, m["status"].(string))
		case "answer_chunk":
			a := int(m["attempt"].(float64))
			s.chunks[a] = append(s.chunks[a], m["delta"].(string))
			s.seqs[a] = append(s.seqs[a], int(m["seq"].(float64)))
		case "answer", "answer_error":
			s.end = ev
			noEvent(t, c, "answer")
			noEvent(t, c, "answer_error")
			return s
		}
	}
}

// inOrder asserts the chunks of every attempt came with seq 0, 1, 2, ….
func (s streamedAnswer) inOrder(t *testing.T) {
	t.Helper()
	for a, seqs := range s.seqs {
		for i, seq := range seqs {
			require.Equal(t, i, seq, "attempt %d: chunk %d has seq %d", a, i, seq)
		}
	}
}

// stepAnswerer streams "step 1 " … "step n " and waits for a step of its
// gate before each but the first, so a test can look at an answer midway.
type stepAnswerer struct {
	n       int
	started chan socketio.Question
	step    chan struct{}
}

func newStepAnswerer(n int) *stepAnswerer {
	return &stepAnswerer{n: n, started: make(chan socketio.Question, 10), step: make(chan struct{})}
}

func (a *stepAnswerer) Answer(ctx context.Context, q socketio.Question, w socketio.ChunkWriter) (socketio.Answer, error) {
	a.started <- q
	var text strings.Builder
	for i := 1; i <= a.n; i++ {
		if i > 1 {
			select {
			case <-a.step:
			case <-ctx.Done():
				return socketio.Answer{}, ctx.Err()
			}
		}
		d := fmt.Sprintf("step %d ", i)
		text.WriteString(d)
		if err := w.WriteChunk(d); err != nil {
			return socketio.Answer{}, err
		}
	}
	return socketio.Answer{Text: text.String()}, nil
}

func TestQueueStreamedAnswerAndPartial(t *testing.T) {
	forEachRedis(t, func(t *testing.T, r *sharedRedis) {
		a := r.queueNode(t, socketio.Options{})
		b := r.queueNode(t, socketio.Options{})
		ans := newStepAnswerer(3)
		r.worker(t, ans)
		ca, hello := a.dial(t, sioclient.TransportWebsocket)
		cb, _ := b.dial(t, sioclient.TransportPolling, withAuth(map[string]any{"resume": hello["resume_token"]}))
		id := okReply(t, "ask", call(t, ca, "ask_question", map[string]any{"question": "What is Socket.IO?", "stream": true}))["task_id"]
		q := <-ans.started
		assert.Equal(t, 1, q.Attempt)
		// Midway, both nodes show what was streamed so far.
		for _, c := range []*sioclient.Client{ca, cb} {
			var p map[string]any
			require.Eventually(t, func() bool {
				task := okReply(t, "task", call(t, c, "get_task", map[string]any{"task_id": id}))["task"].(map[string]any)
				p, _ = task["partial"].(map[string]any)
				return p != nil && p["text"] == "step 1 "
			}, 5*time.Second, 10*time.Millisecond, "partial of the first step")
			assert.Equal(t, map[string]any{"attempt": 1.0, "seq": 0.0, "text": "step 1 "}, p)
		}
		items := okReply(t, "history", call(t, cb, "get_history"))["items"].([]any)
		require.Len(t, items, 1)
		assert.Equal(t, "step 1 ", items[0].(map[string]any)["partial"].(map[string]any)["text"])
		ans.step <- struct{}{}
		ans.step <- struct{}{}
		for _, c := range []*sioclient.Client{ca, cb} {
			s := collect(t, c, id)
			s.inOrder(t)
			assert.Equal(t, []string{"pending", "processing", "completed"}, s.statuses)
			require.Equal(t, "answer", s.end.Name)
			text, attempt := s.text()
			assert.Equal(t, 1, attempt)
			assert.Equal(t, "step 1 step 2 step 3 ", text)
			assert.Equal(t, text, s.end.Args[0].(map[string]any)["answer"])
		}
		task := okReply(t, "task", call(t, cb, "get_task", map[string]any{"task_id": id}))["task"].(map[string]any)
		assert.Equal(t, "completed", task["status"])
		assert.NotContains(t, task, "partial")
		_, kept, err := streamq.New(r.client(t), streamq.Config{Prefix: r.prefix}).Partial(context.Background(), id.(string))
		require.NoError(t, err)
		assert.False(t, kept, "the partial of a finished answer is dropped from Redis")
	})
}

// TestQueueWorkerSeesStoredCancel: a task cancelled in the storage without
// word to the workers (a node whose pub/sub message was lost) is stopped on
// the worker at its next renewal.
func TestQueueWorkerSeesStoredCancel(t *testing.T) {
	forEachRedis(t, func(t *testing.T, r *sharedRedis) {
		ts := r.queueNode(t, socketio.Options{})
		c, _ := ts.dial(t, sioclient.TransportWebsocket)
		started := make(chan socketio.Question, 1)
		stopped := make(chan error, 1)
		r.worker(t, socketio.AnswererFunc(func(ctx context.Context, q socketio.Question, _ socketio.ChunkWriter) (socketio.Answer, error) {
			started <- q
			<-ctx.Done()
			stopped <- context.Cause(ctx)
			return socketio.Answer{}, ctx.Err()
		}))
		okReply(t, "ask", call(t, c, "ask_question", "slow"))
		q := <-started
		owner := socketio.OwnerOf(q.SessionID, q.UserID)
		_, applied, err := ts.QA.Storage().UpdateTask(context.Background(), owner, q.TaskID,
			socketio.TaskUpdate{Status: socketio.TaskCancelled, Error: &socketio.TaskError{Code: socketio.CodeCancelled, Message: "cancelled"}})
		require.NoError(t, err)
		require.True(t, applied)
		select {
		case err := <-stopped:
			require.Error(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("the worker did not stop the cancelled answer")
		}
	})
}

// TestQueueEndOfADeadWorkersStoredAnswer: a worker stored the answer and
// died before it acknowledged the question and pushed the end; the worker
// that takes the question over pushes that end, once, and answers nothing.
func TestQueueEndOfADeadWorkersStoredAnswer(t *testing.T) {
	forEachRedis(t, func(t *testing.T, r *sharedRedis) {
		ts := r.queueNode(t, socketio.Options{})
		c, hello := ts.dial(t, sioclient.TransportWebsocket)
		id := okReply(t, "ask", call(t, c, "ask_question", "What is Socket.IO?"))["task_id"].(string)
		ghost := streamq.New(r.client(t), streamq.Config{Prefix: r.prefix, ClaimAfter: 300 * time.Millisecond})
		ctx := context.Background()
		require.Eventually(t, func() bool {
			ds, err := ghost.Read(ctx, "ghost", 1, 0)
			return err == nil && len(ds) == 1
		}, 5*time.Second, 10*time.Millisecond)
		task := okReply(t, "task", call(t, c, "get_task", map[string]any{"task_id": id}))["task"].(map[string]any)
		require.Equal(t, "pending", task["status"])
		owner := socketio.OwnerOf(hello["session_id"].(string), "")
		_, applied, err := ts.QA.Storage().UpdateTask(ctx, owner, id, socketio.TaskUpdate{Status: socketio.TaskCompleted, Answer: "stored by the dead worker"})
		require.NoError(t, err)
		require.True(t, applied)

		answered := make(chan struct{}, 1)
		r.worker(t, socketio.AnswererFunc(func(context.Context, socketio.Question, socketio.ChunkWriter) (socketio.Answer, error) {
			answered <- struct{}{}
			return socketio.Answer{Text: "again"}, nil
		}))
		s := collect(t, c, id)
		require.Equal(t, "answer", s.end.Name)
		assert.Equal(t, "stored by the dead worker", s.end.Args[0].(map[string]any)["answer"])
		assert.Empty(t, answered, "a finished task is not answered again")
	})
}

// TestQueueWaitsForAWorker: questions asked while no worker runs wait in
// the queue, and are answered once one starts.
func TestQueueWaitsForAWorker(t *testing.T) {
	forEachRedis(t, func(t *testing.T, r *sharedRedis) {
		ts := r.queueNode(t, socketio.Options{})
		c, _ := ts.dial(t, sioclient.TransportWebsocket)
		var ids []any
		for _, q := range []string{"What is Socket.IO?", "How do rooms work?"} {
			ids = append(ids, okReply(t, "ask", call(t, c, "ask_question", q))["task_id"])
		}
		noEvent(t, c, "answer")
		task := okReply(t, "task", call(t, c, "get_task", map[string]any{"task_id": ids[0]}))["task"].(map[string]any)
		assert.Equal(t, "pending", task["status"])
		r.worker(t, testKB(t).Answerer(socketio.KBAnswererOptions{}))
		got := map[any]bool{}
		for range ids {
			got[next(t, c, "answer")["task_id"]] = true
		}
		assert.Len(t, got, 2)
	})
}

// TestQueueFull: past the queue's limit, ask_question is refused with
// unavailable and a retry_after_ms, and nothing is stored.
func TestQueueFull(t *testing.T) {
	forEachRedis(t, func(t *testing.T, r *sharedRedis) {
		qo := r.queueOpts()
		qo.Limit = 2
		ts := r.clusterNode(t, socketio.Options{Workers: -1, Queue: socketio.NewRedisQueue(r.client(t), qo)})
		c, _ := ts.dial(t, sioclient.TransportWebsocket)
		okReply(t, "ask", call(t, c, "ask_question", "What is Socket.IO?"))
		okReply(t, "ask", call(t, c, "ask_question", "How do rooms work?"))
		refused := call(t, c, "ask_question", "And a third?")
		assert.Equal(t, "unavailable", errCode(t, refused))
		assert.Equal(t, 1000.0, refused["error"].(map[string]any)["retry_after_ms"])
		items := okReply(t, "history", call(t, c, "get_history"))["items"].([]any)
		assert.Len(t, items, 2, "the refused question left nothing behind")
	})
}

// TestQueueCancelStopsTheWorker: cancel_task on a node stops the answer on
// the worker holding it, and the client gets one answer_error cancelled.
func TestQueueCancelStopsTheWorker(t *testing.T) {
	forEachRedis(t, func(t *testing.T, r *sharedRedis) {
		a := r.queueNode(t, socketio.Options{})
		b := r.queueNode(t, socketio.Options{})
		stopped := make(chan error, 1)
		started := make(chan struct{}, 1)
		r.worker(t, socketio.AnswererFunc(func(ctx context.Context, q socketio.Question, w socketio.ChunkWriter) (socketio.Answer, error) {
			_ = w.WriteChunk("thinking ")
			started <- struct{}{}
			<-ctx.Done()
			stopped <- context.Cause(ctx)
			return socketio.Answer{}, ctx.Err()
		}))
		ca, hello := a.dial(t, sioclient.TransportWebsocket)
		cb, _ := b.dial(t, sioclient.TransportWebsocket, withAuth(map[string]any{"resume": hello["resume_token"]}))
		id := okReply(t, "ask", call(t, ca, "ask_question", map[string]any{"question": "slow", "stream": true}))["task_id"]
		<-started
		reply := okReply(t, "cancel", call(t, cb, "cancel_task", map[string]any{"task_id": id}))
		assert.Equal(t, "cancelled", reply["status"])
		require.Error(t, <-stopped, "the worker's answer was stopped")
		for _, c := range []*sioclient.Client{ca, cb} {
			s := collect(t, c, id)
			require.Equal(t, "answer_error", s.end.Name)
			assert.Equal(t, "cancelled", s.end.Args[0].(map[string]any)["code"])
			assert.Equal(t, "cancelled", s.statuses[len(s.statuses)-1])
		}
	})
}

// TestQueueNodeDies: the node that took a question goes away mid-answer;
// the worker finishes it, and the client, resumed on another node, gets
// the rest of the stream and the answer there.
func TestQueueNodeDies(t *testing.T) {
	forEachRedis(t, func(t *testing.T, r *sharedRedis) {
		a := r.queueNode(t, socketio.Options{})
		b := r.queueNode(t, socketio.Options{})
		ans := newStepAnswerer(2)
		r.worker(t, ans)
		ca, hello := a.dial(t, sioclient.TransportWebsocket)
		id := okReply(t, "ask", call(t, ca, "ask_question", map[string]any{"question": "What is Socket.IO?", "stream": true}))["task_id"]
		<-ans.started
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, a.QA.Close(ctx))
		ca.Close()
		cb, _ := b.dial(t, sioclient.TransportWebsocket, withAuth(map[string]any{"resume": hello["resume_token"]}))
		task := okReply(t, "task", call(t, cb, "get_task", map[string]any{"task_id": id}))["task"].(map[string]any)
		assert.Equal(t, "processing", task["status"])
		ans.step <- struct{}{}
		s := collect(t, cb, id)
		require.Equal(t, "answer", s.end.Name)
		assert.Equal(t, "step 1 step 2 ", s.end.Args[0].(map[string]any)["answer"])
	})
}

// workerChildEnv holds the Redis address, prefix and claim timeout of a
// worker child process (see runWorkerChild).
const workerChildEnv = "SOCKETIO_TEST_WORKER"

// runWorkerChild runs a Worker whose answers stream one chunk, print
// "ANSWERING <task id> <attempt>" and then hang, until the process is
// killed.
func runWorkerChild(spec string) {
	addr, prefix, _ := strings.Cut(spec, "|")
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	var mu sync.Mutex
	_, err := socketio.NewWorker(socketio.WorkerOptions{
		Queue: socketio.NewRedisQueue(rdb, socketio.RedisQueueOptions{Prefix: prefix, ClaimAfter: 300 * time.Millisecond, ChunkInterval: 10 * time.Millisecond}),
		Answerer: socketio.AnswererFunc(func(ctx context.Context, q socketio.Question, w socketio.ChunkWriter) (socketio.Answer, error) {
			_ = w.WriteChunk("doomed ")
			time.Sleep(100 * time.Millisecond) // the chunk goes out
			mu.Lock()
			fmt.Printf("ANSWERING %s %d\n", q.TaskID, q.Attempt)
			mu.Unlock()
			select {}
		}),
		Logger: queueLogger(),
	})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	select {}
}

// startWorkerChild starts a worker child process on r and returns it with
// the lines it prints.
func startWorkerChild(t *testing.T, r *sharedRedis) (*exec.Cmd, <-chan string) {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), workerChildEnv+"="+r.opts.Addr+"|"+r.prefix)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := make(chan string, 10)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		for range lines {
		}
	})
	return cmd, lines
}

// TestQueueWorkerKilled: a worker process killed (SIGKILL) mid-answer; after
// the claim timeout another worker answers again as attempt 2, and each
// socket sees exactly one answer, equal to the chunks of attempt 2.
func TestQueueWorkerKilled(t *testing.T) {
	forEachRedis(t, func(t *testing.T, r *sharedRedis) {
		a := r.queueNode(t, socketio.Options{})
		b := r.queueNode(t, socketio.Options{})
		child, lines := startWorkerChild(t, r)
		ca, hello := a.dial(t, sioclient.TransportWebsocket)
		cb, _ := b.dial(t, sioclient.TransportWebsocket, withAuth(map[string]any{"resume": hello["resume_token"]}))
		id := okReply(t, "ask", call(t, ca, "ask_question", map[string]any{"question": "What is Socket.IO?", "stream": true}))["task_id"]
		line := <-lines
		require.Equal(t, fmt.Sprintf("ANSWERING %s 1", id), line)
		require.NoError(t, child.Process.Kill())
		_ = child.Wait()

		ans := newStepAnswerer(2)
		r.worker(t, ans)
		q := <-ans.started
		assert.Equal(t, 2, q.Attempt, "answered again, as a new attempt")
		require.Eventually(t, func() bool {
			task := okReply(t, "task", call(t, cb, "get_task", map[string]any{"task_id": id}))["task"].(map[string]any)
			p, _ := task["partial"].(map[string]any)
			return p != nil && p["attempt"] == 2.0 && p["text"] == "step 1 "
		}, 5*time.Second, 10*time.Millisecond, "partial of attempt 2")
		ans.step <- struct{}{}
		for _, c := range []*sioclient.Client{ca, cb} {
			s := collect(t, c, id)
			s.inOrder(t)
			assert.Equal(t, []string{"doomed "}, s.chunks[1], "attempt 1 streamed before the kill")
			require.Equal(t, "answer", s.end.Name)
			text, attempt := s.text()
			assert.Equal(t, 2, attempt)
			assert.Equal(t, "step 1 step 2 ", text)
			assert.Equal(t, text, s.end.Args[0].(map[string]any)["answer"])
		}
	})
}

// TestQueueDeadLetter: a question taken from silent workers more than
// MaxClaims times ends as answer_failed and moves to the dead letters.
func TestQueueDeadLetter(t *testing.T) {
	forEachRedis(t, func(t *testing.T, r *sharedRedis) {
		ts := r.queueNode(t, socketio.Options{})
		c, _ := ts.dial(t, sioclient.TransportWebsocket)
		id := okReply(t, "ask", call(t, c, "ask_question", "What is Socket.IO?"))["task_id"]
		// Ghost workers take the question and go silent, as many times as
		// MaxClaims allows (3), the first by reading it.
		ghosts := streamq.New(r.client(t), streamq.Config{Prefix: r.prefix, ClaimAfter: 300 * time.Millisecond, MaxClaims: 3})
		ctx := context.Background()
		var ds []streamq.Delivery
		require.Eventually(t, func() bool {
			var err error
			ds, err = ghosts.Read(ctx, "ghost-0", 1, 0)
			return err == nil && len(ds) == 1
		}, 5*time.Second, 10*time.Millisecond)
		for i := 1; i <= 3; i++ {
			require.Eventually(t, func() bool {
				ds, _ = ghosts.Claim(ctx, fmt.Sprintf("ghost-%d", i), 1)
				return len(ds) == 1
			}, 5*time.Second, 20*time.Millisecond, "claim %d", i)
			require.False(t, ds[0].Dead, "claim %d", i)
		}
		answered := make(chan struct{}, 1)
		r.worker(t, socketio.AnswererFunc(func(context.Context, socketio.Question, socketio.ChunkWriter) (socketio.Answer, error) {
			answered <- struct{}{}
			return socketio.Answer{Text: "never"}, nil
		}))
		s := collect(t, c, id)
		require.Equal(t, "answer_error", s.end.Name)
		assert.Equal(t, "answer_failed", s.end.Args[0].(map[string]any)["code"])
		assert.Empty(t, answered, "a dead question is not answered")
		dead, err := r.client(t).XLen(ctx, ghosts.DeadKey()).Result()
		require.NoError(t, err)
		assert.Equal(t, int64(1), dead)
		n, err := ghosts.Len(ctx)
		require.NoError(t, err)
		assert.Zero(t, n, "nothing left unanswered")
	})
}

// TestQueueWorkerCloseReleases: a worker closed with answers in progress
// hands them to another worker at once (no claim timeout to wait out).
func TestQueueWorkerCloseReleases(t *testing.T) {
	forEachRedis(t, func(t *testing.T, r *sharedRedis) {
		ts := r.queueNode(t, socketio.Options{})
		c, _ := ts.dial(t, sioclient.TransportWebsocket)
		hang := make(chan struct{})
		first, err := socketio.NewWorker(socketio.WorkerOptions{
			Queue: socketio.NewRedisQueue(r.client(t), socketio.RedisQueueOptions{Prefix: r.prefix, ClaimAfter: time.Hour}),
			Answerer: socketio.AnswererFunc(func(ctx context.Context, _ socketio.Question, _ socketio.ChunkWriter) (socketio.Answer, error) {
				close(hang)
				<-ctx.Done()
				return socketio.Answer{}, ctx.Err()
			}),
			Logger: queueLogger(),
		})
		require.NoError(t, err)
		id := okReply(t, "ask", call(t, c, "ask_question", "What is Socket.IO?"))["task_id"]
		<-hang
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		assert.True(t, errors.Is(first.Close(ctx), context.DeadlineExceeded), "the answer did not finish in the grace period")
		second, err := socketio.NewWorker(socketio.WorkerOptions{
			Queue:    socketio.NewRedisQueue(r.client(t), socketio.RedisQueueOptions{Prefix: r.prefix, ClaimAfter: time.Hour}),
			Answerer: testKB(t).Answerer(socketio.KBAnswererOptions{}),
			Logger:   queueLogger(),
		})
		require.NoError(t, err)
		t.Cleanup(func() { second.Close(context.Background()) })
		assert.Equal(t, id, next(t, c, "answer")["task_id"])
	})
}

// TestQueueSlowAnswerKeptByALiveWorker: an answer slower than ClaimAfter is
// not taken over while its worker is alive (it renews its hold), though
// another worker is there and idle.
func TestQueueSlowAnswerKeptByALiveWorker(t *testing.T) {
	forEachRedis(t, func(t *testing.T, r *sharedRedis) {
		ts := r.queueNode(t, socketio.Options{})
		c, _ := ts.dial(t, sioclient.TransportWebsocket)
		ans := newStepAnswerer(2)
		r.worker(t, ans)
		r.worker(t, ans)
		id := okReply(t, "ask", call(t, c, "ask_question", map[string]any{"question": "What is Socket.IO?", "stream": true}))["task_id"]
		q := <-ans.started
		assert.Equal(t, 1, q.Attempt)
		// Wait out several claim timeouts (300 ms) with the answer held.
		for range 5 {
			noEvent(t, c, "answer")
			time.Sleep(200 * time.Millisecond)
		}
		select {
		case q := <-ans.started:
			t.Fatalf("taken over from a live worker: attempt %d", q.Attempt)
		default:
		}
		claims, err := r.client(t).Keys(context.Background(), r.prefix+"{aq}:claims:*").Result()
		require.NoError(t, err)
		assert.Empty(t, claims, "no worker claimed the question, not even its own")
		ans.step <- struct{}{}
		s := collect(t, c, id)
		require.Equal(t, "answer", s.end.Name)
		_, attempt := s.text()
		assert.Equal(t, 1, attempt)
	})
}

// TestQueueNodeDiesBeforeQueueing: a node dies between storing a question
// and queueing it; another node's sweep queues it, and it is answered.
func TestQueueNodeDiesBeforeQueueing(t *testing.T) {
	forEachRedis(t, func(t *testing.T, r *sharedRedis) {
		frozen := make(chan struct{})
		t.Cleanup(func() { close(frozen) })
		store := socketio.NewRedisStorage(r.client(t), socketio.RedisStorageOptions{Prefix: r.prefix})
		t.Cleanup(func() { store.Close() })
		a := r.queueNode(t, socketio.Options{Storage: socketio.FrozenCreate(store, frozen), NodeTTL: 300 * time.Millisecond})
		b := r.queueNode(t, socketio.Options{NodeTTL: 300 * time.Millisecond})
		r.worker(t, testKB(t).Answerer(socketio.KBAnswererOptions{}))
		ca, hello := a.dial(t, sioclient.TransportWebsocket)
		cb, _ := b.dial(t, sioclient.TransportWebsocket, withAuth(map[string]any{"resume": hello["resume_token"]}))
		require.NoError(t, ca.Emit("ask_question", "What is Socket.IO?"))
		var id any
		require.Eventually(t, func() bool {
			items := okReply(t, "history", call(t, cb, "get_history"))["items"].([]any)
			if len(items) == 1 {
				id = items[0].(map[string]any)["task_id"]
			}
			return id != nil
		}, 5*time.Second, 10*time.Millisecond, "the question is stored")
		socketio.StopNodeLease(a.QA)
		answer := next(t, cb, "answer")
		assert.Equal(t, id, answer["task_id"])
		noEvent(t, cb, "answer")
	})
}

// TestQueueRefusedAfterStored: a question stored whose entry the queue
// then refuses (Redis failing just at the add) is accepted, then ends
// failed, after its reply; nothing of it stays unfinished.
func TestQueueRefusedAfterStored(t *testing.T) {
	mr := miniredis.RunT(t)
	r := &sharedRedis{mr: mr, opts: &redis.Options{Addr: mr.Addr()}, prefix: "qa:"}
	ts := r.queueNode(t, socketio.Options{})
	c, _ := ts.dial(t, sioclient.TransportWebsocket)
	// The add is the one script on the queue's stream a node runs.
	tasks := r.prefix + "{aq}:tasks"
	mr.Server().SetPreHook(func(p *server.Peer, cmd string, args ...string) bool {
		if (strings.EqualFold(cmd, "EVALSHA") || strings.EqualFold(cmd, "EVAL")) && len(args) > 2 && args[2] == tasks {
			p.WriteError("ERR injected: the add fails")
			return true
		}
		return false
	})
	reply := okReply(t, "ask", call(t, c, "ask_question", "How do rooms work?"))
	s := collect(t, c, reply["task_id"])
	assert.Equal(t, []string{"failed"}, s.statuses)
	require.Equal(t, "answer_error", s.end.Name)
	assert.Equal(t, "answer_failed", s.end.Args[0].(map[string]any)["code"])
	assert.Equal(t, "the answer queue is unavailable", s.end.Args[0].(map[string]any)["message"])
	task := okReply(t, "task", call(t, c, "get_task", map[string]any{"task_id": reply["task_id"]}))["task"].(map[string]any)
	assert.Equal(t, "failed", task["status"])
}
