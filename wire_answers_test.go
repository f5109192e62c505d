package socketio_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/sioclient"
)

// gatedAnswerer answers "answer to <question>" in two chunks, but only once
// released; it reports each call as it starts.
type gatedAnswerer struct {
	started chan string   // task ids, as answers start
	release chan struct{} // closed to let every answer finish
	once    sync.Once
}

func newGatedAnswerer() *gatedAnswerer {
	return &gatedAnswerer{started: make(chan string, 100), release: make(chan struct{})}
}

func (g *gatedAnswerer) Answer(ctx context.Context, q socketio.Question, w socketio.ChunkWriter) (socketio.Answer, error) {
	g.started <- q.TaskID
	select {
	case <-g.release:
	case <-ctx.Done():
		return socketio.Answer{}, ctx.Err()
	}
	if err := w.WriteChunk("answer to "); err != nil {
		return socketio.Answer{}, err
	}
	if err := w.WriteChunk(q.Text); err != nil {
		return socketio.Answer{}, err
	}
	return socketio.Answer{Text: "answer to " + q.Text, Sources: []string{"gated"}}, nil
}

func (g *gatedAnswerer) open() { g.once.Do(func() { close(g.release) }) }

func TestWireAnswerFlow(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		ts := startServer(t, socketio.Options{})
		c, _ := ts.dial(t, tr)
		reply := okReply(t, "ask", call(t, c, "ask_question", map[string]any{"question": "  What is Socket.IO?  ", "stream": true}))
		id := reply["task_id"]
		assert.Equal(t, "pending", reply["status"])

		var statuses []string
		var chunks strings.Builder
		seq := 0.0
		var answer map[string]any
		for answer == nil {
			ev, err := c.NextAny(context.Background())
			require.NoError(t, err)
			m := ev.Args[0].(map[string]any)
			require.Equal(t, id, m["task_id"], ev.Name)
			switch ev.Name {
			case "task_status":
				statuses = append(statuses, m["status"].(string))
				assert.True(t, isRFC3339Millis(m["updated_at"]))
			case "answer_chunk":
				require.Equal(t, seq, m["seq"])
				seq++
				chunks.WriteString(m["delta"].(string))
				require.NotContains(t, statuses, "completed", "chunk after the final status")
			case "answer":
				answer = m
			default:
				t.Fatalf("unexpected event %s", ev.Name)
			}
		}
		assert.Equal(t, []string{"pending", "processing", "completed"}, statuses)
		assert.GreaterOrEqual(t, seq, 2.0, "the built-in answerer streams in several chunks")
		assert.Equal(t, chunks.String(), answer["answer"])
		assert.Equal(t, "What is Socket.IO?", answer["question"])
		assert.Equal(t, "completed", answer["status"])
		assert.Equal(t, []any{"docs/socket.io"}, answer["sources"])
		assert.True(t, isRFC3339Millis(answer["asked_at"]))
		assert.True(t, isRFC3339Millis(answer["answered_at"]))
		assert.GreaterOrEqual(t, answer["duration_ms"], 0.0)

		task := okReply(t, "task", call(t, c, "get_task", map[string]any{"task_id": id}))["task"].(map[string]any)
		assert.Equal(t, "completed", task["status"])
		assert.Equal(t, answer["answer"], task["answer"])
		for _, f := range []string{"task_id", "question", "status", "answer", "asked_at", "updated_at", "answered_at"} {
			assert.Contains(t, task, f)
		}
		assert.NotContains(t, task, "room")

		// Without stream, no chunks.
		id2 := okReply(t, "ask", call(t, c, "ask_question", "How do rooms work?"))["task_id"]
		for {
			ev, err := c.NextAny(context.Background())
			require.NoError(t, err)
			require.NotEqual(t, "answer_chunk", ev.Name)
			if ev.Name == "answer" {
				assert.Equal(t, id2, ev.Args[0].(map[string]any)["task_id"])
				break
			}
		}
	})
}

func TestWireRoomAnswers(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		ts := startServer(t, socketio.Options{})
		asker, _ := ts.dial(t, tr)
		member, _ := ts.dial(t, tr)
		outsider, _ := ts.dial(t, tr)
		okReply(t, "join", call(t, asker, "join_room", "lobby"))
		okReply(t, "join", call(t, member, "join_room", "lobby"))
		assert.Equal(t, "forbidden", errCode(t, call(t, outsider, "ask_question", map[string]any{"question": "hi", "room": "lobby"})))

		id := okReply(t, "ask", call(t, asker, "ask_question", map[string]any{"question": "How do rooms work?", "room": "lobby"}))["task_id"]
		for _, c := range []*sioclient.Client{asker, member} {
			a := next(t, c, "answer")
			assert.Equal(t, id, a["task_id"])
		}
		noEvent(t, outsider, "answer")
		// The member can see the answer arrive, but the task is the asker's.
		assert.Equal(t, "not_found", errCode(t, call(t, member, "get_task", map[string]any{"task_id": id})))
		task := okReply(t, "task", call(t, asker, "get_task", map[string]any{"task_id": id}))["task"].(map[string]any)
		assert.Equal(t, "lobby", task["room"])
	})
}

func TestWireSessionSocketsAllGetAnswers(t *testing.T) {
	ts := startServer(t, socketio.Options{})
	a, first := ts.dial(t, "websocket")
	b, _ := ts.dial(t, "polling", withAuth(map[string]any{"resume": first["resume_token"]}))
	other, _ := ts.dial(t, "websocket")
	id := okReply(t, "ask", call(t, a, "ask_question", "What is Socket.IO?"))["task_id"]
	assert.Equal(t, id, next(t, a, "answer")["task_id"])
	assert.Equal(t, id, next(t, b, "answer")["task_id"])
	noEvent(t, other, "answer")
}

func TestWireTaskPrivacy(t *testing.T) {
	ts := startServer(t, socketio.Options{})
	a, _ := ts.dial(t, "websocket")
	b, _ := ts.dial(t, "websocket")
	id := okReply(t, "ask", call(t, a, "ask_question", "What is Socket.IO?"))["task_id"]
	next(t, a, "answer")
	assert.Equal(t, "not_found", errCode(t, call(t, b, "get_task", map[string]any{"task_id": id})))
	assert.Equal(t, "not_found", errCode(t, call(t, b, "cancel_task", map[string]any{"task_id": id})))
	assert.Equal(t, "not_found", errCode(t, call(t, b, "get_history", map[string]any{"before": id})))
	assert.Empty(t, okReply(t, "history", call(t, b, "get_history"))["items"])
	assert.EqualValues(t, 0, okReply(t, "cleared", call(t, b, "clear_history"))["deleted"])
	assert.Len(t, okReply(t, "history", call(t, a, "get_history"))["items"], 1)
}

func TestWireCancel(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		g := newGatedAnswerer()
		t.Cleanup(g.open)
		ts := startServer(t, socketio.Options{Answerer: g})
		c, _ := ts.dial(t, tr)
		id := okReply(t, "ask", call(t, c, "ask_question", map[string]any{"question": "slow", "stream": true}))["task_id"]
		<-g.started
		m := okReply(t, "cancelled", call(t, c, "cancel_task", map[string]any{"task_id": id}))
		assert.Equal(t, id, m["task_id"])
		assert.Equal(t, "cancelled", m["status"])

		var statuses []string
		for {
			ev, err := c.NextAny(context.Background())
			require.NoError(t, err)
			if ev.Name == "task_status" {
				statuses = append(statuses, ev.Args[0].(map[string]any)["status"].(string))
			}
			require.NotEqual(t, "answer", ev.Name)
			if ev.Name == "answer_error" {
				e := ev.Args[0].(map[string]any)
				assert.Equal(t, "cancelled", e["code"])
				assert.Equal(t, id, e["task_id"])
				break
			}
		}
		assert.Equal(t, []string{"pending", "processing", "cancelled"}, statuses)

		// Cancelling a finished task changes nothing and pushes nothing.
		m = okReply(t, "cancelled", call(t, c, "cancel_task", map[string]any{"task_id": id}))
		assert.Equal(t, "cancelled", m["status"])
		noEvent(t, c, "task_status")
		task := okReply(t, "task", call(t, c, "get_task", map[string]any{"task_id": id}))["task"].(map[string]any)
		assert.Equal(t, "cancelled", task["status"])
		assert.Equal(t, "cancelled", task["error"].(map[string]any)["code"])

		// A completed task stays completed.
		g.open()
		id2 := okReply(t, "ask", call(t, c, "ask_question", "fast"))["task_id"]
		next(t, c, "answer")
		m = okReply(t, "cancelled", call(t, c, "cancel_task", map[string]any{"task_id": id2}))
		assert.Equal(t, "completed", m["status"])
	})
}

func TestWireHistory(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		g := newGatedAnswerer()
		ts := startServer(t, socketio.Options{Answerer: g, Auth: bigLimits(t), MaxOpenTasks: 10})
		c, _ := ts.dial(t, tr)
		var ids []any
		g.open()
		for _, q := range []string{"q1", "q2", "q3", "q4", "q5"} {
			ids = append(ids, okReply(t, "ask", call(t, c, "ask_question", q))["task_id"])
			next(t, c, "answer")
		}
		page := okReply(t, "history", call(t, c, "get_history", map[string]any{"limit": 2}))
		items := page["items"].([]any)
		require.Len(t, items, 2)
		assert.Equal(t, ids[4], items[0].(map[string]any)["task_id"], "newest first")
		assert.Equal(t, ids[3], items[1].(map[string]any)["task_id"])
		assert.Equal(t, true, page["has_more"])

		page = okReply(t, "history", call(t, c, "get_history", map[string]any{"limit": 2, "before": ids[3]}))
		items = page["items"].([]any)
		assert.Equal(t, ids[2], items[0].(map[string]any)["task_id"])
		assert.Equal(t, ids[1], items[1].(map[string]any)["task_id"])
		assert.Equal(t, true, page["has_more"])
		page = okReply(t, "history", call(t, c, "get_history", map[string]any{"before": ids[1]}))
		assert.Len(t, page["items"], 1)
		assert.Equal(t, false, page["has_more"])

		// clear_history deletes finished tasks (TestWireClearKeepsUnfinished
		// shows an unfinished one stays).
		assert.EqualValues(t, 5, okReply(t, "cleared", call(t, c, "clear_history"))["deleted"])
		assert.Empty(t, okReply(t, "history", call(t, c, "get_history"))["items"])
		assert.Equal(t, "not_found", errCode(t, call(t, c, "get_task", map[string]any{"task_id": ids[0]})))
	})
}

func TestWireClearKeepsUnfinished(t *testing.T) {
	g := newGatedAnswerer()
	t.Cleanup(g.open)
	ts := startServer(t, socketio.Options{Answerer: g})
	c, _ := ts.dial(t, "websocket")
	id := okReply(t, "ask", call(t, c, "ask_question", "slow"))["task_id"]
	<-g.started
	assert.EqualValues(t, 0, okReply(t, "cleared", call(t, c, "clear_history"))["deleted"])
	g.open()
	assert.Equal(t, id, next(t, c, "answer")["task_id"])
	items := okReply(t, "history", call(t, c, "get_history"))["items"].([]any)
	require.Len(t, items, 1)
	assert.Equal(t, "completed", items[0].(map[string]any)["status"])
}

func TestWireRateLimit(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		ts := startServer(t, socketio.Options{MaxOpenTasks: 100})
		c, _ := ts.dial(t, tr)
		for i := range 5 {
			okReply(t, "ask", call(t, c, "ask_question", "What is Socket.IO?"))
			_ = i
		}
		m := call(t, c, "ask_question", "What is Socket.IO?")
		require.Equal(t, "rate_limited", errCode(t, m))
		retry := m["error"].(map[string]any)["retry_after_ms"]
		require.IsType(t, 0.0, retry)
		assert.Greater(t, retry.(float64), 0.0)
		assert.LessOrEqual(t, retry.(float64), 60000.0)
		assert.Equal(t, retry.(float64), float64(int64(retry.(float64))), "whole milliseconds")
		// A refused question is not counted, and invalid ones are refused
		// for what they are first.
		assert.Equal(t, "question_invalid", errCode(t, call(t, c, "ask_question", " ")))
		// Another session from the same address has its own budget.
		d, _ := ts.dial(t, tr)
		okReply(t, "ask", call(t, d, "ask_question", "What is Socket.IO?"))
	})
}

func TestWireRateLimitPerAddress(t *testing.T) {
	auth, err := socketio.NewAuth(socketio.AuthOptions{MaxQuestionsPerMinutePerIP: 3})
	require.NoError(t, err)
	t.Cleanup(func() { auth.Close() })
	ts := startServer(t, socketio.Options{Auth: auth})
	for range 3 {
		c, _ := ts.dial(t, "websocket")
		okReply(t, "ask", call(t, c, "ask_question", "What is Socket.IO?"))
	}
	c, _ := ts.dial(t, "websocket")
	assert.Equal(t, "rate_limited", errCode(t, call(t, c, "ask_question", "What is Socket.IO?")))
	// Disabling the rate_limit hook lifts it at run time.
	require.True(t, ts.QA.Hooks().Disable("rate_limit"))
	okReply(t, "ask", call(t, c, "ask_question", "What is Socket.IO?"))
}

func TestWireTooManyTasks(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		g := newGatedAnswerer()
		t.Cleanup(g.open)
		ts := startServer(t, socketio.Options{Answerer: g})
		c, _ := ts.dial(t, tr)
		for range 3 {
			okReply(t, "ask", call(t, c, "ask_question", "slow"))
		}
		assert.Equal(t, "too_many_tasks", errCode(t, call(t, c, "ask_question", "slow")))
		// Refused for too many tasks, the question did not use the rate
		// budget: after the tasks finish, two more are accepted (3 + 2 = 5).
		g.open()
		for range 3 {
			next(t, c, "answer")
		}
		okReply(t, "ask", call(t, c, "ask_question", "again"))
		okReply(t, "ask", call(t, c, "ask_question", "again"))
		assert.Equal(t, "rate_limited", errCode(t, call(t, c, "ask_question", "again")))
	})
}

func TestWireQueueFullIsUnavailable(t *testing.T) {
	g := newGatedAnswerer()
	t.Cleanup(g.open)
	ts := startServer(t, socketio.Options{Answerer: g, Workers: 1, QueueSize: 1})
	a, _ := ts.dial(t, "websocket")
	b, _ := ts.dial(t, "websocket")
	okReply(t, "ask", call(t, a, "ask_question", "one"))
	<-g.started
	okReply(t, "ask", call(t, a, "ask_question", "two"))
	assert.Equal(t, "unavailable", errCode(t, call(t, b, "ask_question", "three")))
	g.open()
	next(t, a, "answer")
	next(t, a, "answer")
	okReply(t, "ask", call(t, b, "ask_question", "three"))
}

func TestWireAnswerFailures(t *testing.T) {
	cases := []struct {
		name     string
		answerer socketio.AnswererFunc
		code     string
	}{
		{"error", func(context.Context, socketio.Question, socketio.ChunkWriter) (socketio.Answer, error) {
			return socketio.Answer{}, errors.New("model exploded: secret detail")
		}, "answer_failed"},
		{"panic", func(context.Context, socketio.Question, socketio.ChunkWriter) (socketio.Answer, error) {
			panic("answerer bug")
		}, "answer_failed"},
		{"timeout", func(ctx context.Context, _ socketio.Question, _ socketio.ChunkWriter) (socketio.Answer, error) {
			<-ctx.Done()
			return socketio.Answer{}, ctx.Err()
		}, "timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, socketio.Options{Answerer: tc.answerer, AnswerTimeout: 50 * time.Millisecond})
			c, _ := ts.dial(t, "websocket")
			id := okReply(t, "ask", call(t, c, "ask_question", "q"))["task_id"]
			e := next(t, c, "answer_error")
			assert.Equal(t, id, e["task_id"])
			assert.Equal(t, tc.code, e["code"])
			assert.NotContains(t, e["message"], "secret detail")
			task := okReply(t, "task", call(t, c, "get_task", map[string]any{"task_id": id}))["task"].(map[string]any)
			assert.Equal(t, "failed", task["status"])
			assert.Equal(t, tc.code, task["error"].(map[string]any)["code"])
			assert.NotContains(t, task, "answer")
		})
	}
}

// TestWireAnswerSurvivesDisconnect: the asker leaves mid-answer; the answer
// finishes, is stored, and the resumed session reads it.
func TestWireAnswerSurvivesDisconnect(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		g := newGatedAnswerer()
		t.Cleanup(g.open)
		ts := startServer(t, socketio.Options{Answerer: g})
		c, first := ts.dial(t, tr)
		id := okReply(t, "ask", call(t, c, "ask_question", "slow"))["task_id"]
		<-g.started
		require.NoError(t, c.Close())
		g.open()
		back, _ := ts.dial(t, tr, withAuth(map[string]any{"resume": first["resume_token"]}))
		require.Eventually(t, func() bool {
			m := call(t, back, "get_task", map[string]any{"task_id": id})
			return m["ok"] == true && m["task"].(map[string]any)["status"] == "completed"
		}, 5*time.Second, 10*time.Millisecond)
		items := okReply(t, "history", call(t, back, "get_history"))["items"].([]any)
		require.Len(t, items, 1)
		assert.Equal(t, "answer to slow", items[0].(map[string]any)["answer"])
	})
}

func TestCloseCancelsAnswersInFlight(t *testing.T) {
	g := newGatedAnswerer()
	ts := startServer(t, socketio.Options{Answerer: g})
	c, _ := ts.dial(t, "websocket")
	id := okReply(t, "ask", call(t, c, "ask_question", "slow"))["task_id"]
	<-g.started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, ts.QA.Close(ctx), context.DeadlineExceeded)
	e := next(t, c, "answer_error")
	assert.Equal(t, "cancelled", e["code"])
	assert.Equal(t, id, e["task_id"])
	assert.Equal(t, "unavailable", errCode(t, call(t, c, "get_history")))
}

// TestWireOrphanedTasksAreSettled: tasks left unfinished by a node that
// died stop counting against the open-task limit and read as failed.
func TestWireOrphanedTasksAreSettled(t *testing.T) {
	store := socketio.NewMemoryStorage(socketio.StorageOptions{})
	t.Cleanup(func() { store.Close() })
	ts := startServer(t, socketio.Options{Storage: store})
	c, hello := ts.dial(t, "websocket")
	sid := hello["session_id"].(string)
	owner := socketio.OwnerOf(sid, "")
	long := time.Now().Add(-time.Hour).UTC()
	var orphans []string
	for i := range 3 {
		task := socketio.Task{ID: fmt.Sprintf("t_orphan%d", i), SessionID: sid, Owner: owner, Question: "lost",
			Status: socketio.TaskPending, AskedAt: long, UpdatedAt: long}
		require.NoError(t, store.CreateTask(context.Background(), task, 0))
		orphans = append(orphans, task.ID)
	}
	_, _, err := store.UpdateTask(context.Background(), owner, orphans[0], socketio.TaskUpdate{Status: socketio.TaskProcessing, At: long})
	require.NoError(t, err)

	okReply(t, "ask", call(t, c, "ask_question", "What is Socket.IO?"))
	task := okReply(t, "task", call(t, c, "get_task", map[string]any{"task_id": orphans[0]}))["task"].(map[string]any)
	assert.Equal(t, "failed", task["status"])
	assert.Equal(t, "timeout", task["error"].(map[string]any)["code"])
}
