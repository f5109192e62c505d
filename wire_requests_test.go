package socketio_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio"
)

// TestWireRepliesWithoutAck checks the reply-event convention: without an
// ack, success is the reply event and failure an "error" event naming the
// request.
func TestWireRepliesWithoutAck(t *testing.T) {
	cases := []struct {
		event, replyEvent string
		payload           any
		fields            []string
	}{
		{"join_room", "room_joined", "lobby", []string{"room", "members"}},
		{"leave_room", "room_left", map[string]any{"room": "lobby"}, []string{"room"}},
		{"get_suggestions", "suggestions", "what", []string{"query", "suggestions"}},
		{"get_history", "history", map[string]any{}, []string{"items", "has_more"}},
		{"clear_history", "history_cleared", nil, []string{"deleted"}},
		{"ask_question", "question_received", "What is Socket.IO?", []string{"task_id", "status"}},
	}
	forEachTransport(t, func(t *testing.T, tr string) {
		ts := startServer(t, socketio.Options{})
		c, _ := ts.dial(t, tr)
		for _, tc := range cases {
			if tc.payload == nil {
				require.NoError(t, c.Emit(tc.event))
			} else {
				require.NoError(t, c.Emit(tc.event, tc.payload))
			}
			m := next(t, c, tc.replyEvent)
			assert.Equal(t, true, m["ok"], tc.event)
			for _, f := range tc.fields {
				assert.Contains(t, m, f, tc.event)
			}
		}
		require.NoError(t, c.Emit("join_room", 42))
		e := next(t, c, "error")
		assert.Equal(t, "join_room", e["event"])
		assert.Equal(t, "invalid_payload", e["code"])
		assert.NotEmpty(t, e["message"])
	})
}

func TestWireInvalidPayloads(t *testing.T) {
	long := strings.Repeat("a", 201)
	cases := []struct {
		name  string
		event string
		args  []any
		code  string
	}{
		{"null payload", "get_history", []any{nil}, "invalid_payload"},
		{"two payloads", "get_history", []any{map[string]any{}, map[string]any{}}, "invalid_payload"},
		{"number payload", "join_room", []any{5}, "invalid_payload"},
		{"array payload", "join_room", []any{[]any{"lobby"}}, "invalid_payload"},
		{"string where no shorthand", "get_history", []any{"x"}, "invalid_payload"},
		{"missing room", "join_room", []any{map[string]any{}}, "invalid_payload"},
		{"null room is absent", "join_room", []any{map[string]any{"room": nil}}, "invalid_payload"},
		{"room of wrong type", "leave_room", []any{map[string]any{"room": 1}}, "invalid_payload"},
		{"missing question", "ask_question", nil, "invalid_payload"},
		{"question of wrong type", "ask_question", []any{map[string]any{"question": true}}, "invalid_payload"},
		{"stream of wrong type", "ask_question", []any{map[string]any{"question": "hi", "stream": "yes"}}, "invalid_payload"},
		{"context of wrong type", "ask_question", []any{map[string]any{"question": "hi", "context": 3}}, "invalid_payload"},
		{"room field of wrong type", "ask_question", []any{map[string]any{"question": "hi", "room": 3}}, "invalid_payload"},
		{"limit zero", "get_history", []any{map[string]any{"limit": 0}}, "invalid_payload"},
		{"limit negative", "get_history", []any{map[string]any{"limit": -1}}, "invalid_payload"},
		{"limit fraction", "get_history", []any{map[string]any{"limit": 1.5}}, "invalid_payload"},
		{"limit string", "get_suggestions", []any{map[string]any{"query": "a", "limit": "3"}}, "invalid_payload"},
		{"before of wrong type", "get_history", []any{map[string]any{"before": 7}}, "invalid_payload"},
		{"empty query", "get_suggestions", []any{"   "}, "invalid_payload"},
		{"query too long", "get_suggestions", []any{long}, "invalid_payload"},
		{"missing task_id", "get_task", []any{map[string]any{}}, "invalid_payload"},
		{"task_id of wrong type", "cancel_task", []any{map[string]any{"task_id": 1}}, "invalid_payload"},
		{"unknown task", "get_task", []any{map[string]any{"task_id": "t_nope"}}, "not_found"},
		{"unknown before", "get_history", []any{map[string]any{"before": "t_nope"}}, "not_found"},
		{"unknown event", "no_such_event", []any{map[string]any{}}, "unknown_event"},
		{"server event name", "answer", []any{map[string]any{}}, "unknown_event"},
	}
	forEachTransport(t, func(t *testing.T, tr string) {
		ts := startServer(t, socketio.Options{})
		c, _ := ts.dial(t, tr)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				assert.Equal(t, tc.code, errCode(t, call(t, c, tc.event, tc.args...)))
			})
		}
		// Nothing was changed by the refused requests.
		hist := okReply(t, "history", call(t, c, "get_history"))
		assert.Empty(t, hist["items"])
	})
}

func TestWireUnknownEventWithoutAckIsIgnored(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		ts := startServer(t, socketio.Options{})
		c, _ := ts.dial(t, tr)
		require.NoError(t, c.Emit("no_such_event", map[string]any{}))
		noEvent(t, c, "error")
	})
}

func TestWireLimitsAreClamped(t *testing.T) {
	ts := startServer(t, socketio.Options{})
	c, _ := ts.dial(t, "websocket")
	m := okReply(t, "suggestions", call(t, c, "get_suggestions", map[string]any{"query": "w", "limit": 1e9, "extra": "ignored"}))
	assert.LessOrEqual(t, len(m["suggestions"].([]any)), 20)
	okReply(t, "history", call(t, c, "get_history", map[string]any{"limit": 1e12}))
}

func TestWireRooms(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		ts := startServer(t, socketio.Options{})
		a, _ := ts.dial(t, tr)
		b, _ := ts.dial(t, tr)
		assert.EqualValues(t, 1, okReply(t, "join", call(t, a, "join_room", "lobby"))["members"])
		m := okReply(t, "join", call(t, b, "join_room", map[string]any{"room": "lobby"}))
		assert.Equal(t, "lobby", m["room"])
		assert.EqualValues(t, 2, m["members"])
		// Joining twice changes nothing.
		assert.EqualValues(t, 2, okReply(t, "join", call(t, b, "join_room", "lobby"))["members"])
		assert.Equal(t, "lobby", okReply(t, "leave", call(t, b, "leave_room", "lobby"))["room"])
		assert.EqualValues(t, 2, okReply(t, "join", call(t, b, "join_room", "lobby"))["members"])

		for _, bad := range []string{"", strings.Repeat("r", 65), "has space", "ümlaut", "a/b", "semi;colon"} {
			assert.Equal(t, "invalid_room", errCode(t, call(t, a, "join_room", map[string]any{"room": bad})), "room %q", bad)
			assert.Equal(t, "invalid_room", errCode(t, call(t, a, "leave_room", map[string]any{"room": bad})), "room %q", bad)
		}
		okReply(t, "join", call(t, a, "join_room", strings.Repeat("r", 64)))
		okReply(t, "join", call(t, a, "join_room", "Az09_.:-"))

		// Another socket's id is not a room name.
		assert.Equal(t, "invalid_room", errCode(t, call(t, a, "join_room", b.SID())))
		assert.Equal(t, "forbidden", errCode(t, call(t, a, "join_room", "private:x")))
	})
}

func TestWireRoomsPerSocketLimit(t *testing.T) {
	ts := startServer(t, socketio.Options{})
	c, _ := ts.dial(t, "websocket")
	for i := range 50 {
		okReply(t, "join", call(t, c, "join_room", fmt.Sprintf("room-%d", i)))
	}
	assert.Equal(t, "limit_exceeded", errCode(t, call(t, c, "join_room", "room-50")))
	// Re-joining a room already joined is still fine, and leaving frees a place.
	okReply(t, "join", call(t, c, "join_room", "room-0"))
	okReply(t, "leave", call(t, c, "leave_room", "room-0"))
	okReply(t, "join", call(t, c, "join_room", "room-50"))
}

func TestWireQuestionValidation(t *testing.T) {
	cases := []struct {
		name     string
		question string
		code     string
	}{
		{"empty", "", "question_invalid"},
		{"only spaces", " \t\n ", "question_invalid"},
		{"control character", "hello\x07", "question_invalid"},
		{"NUL", "a\x00b", "question_invalid"},
		{"too long", strings.Repeat("x", 2001), "question_too_long"},
		{"too long after trim is fine", "  " + strings.Repeat("x", 2000) + "  ", ""},
		{"2000 astral characters", strings.Repeat("😀", 2000), ""},
		{"tab newline cr allowed", "line one\n\tline two\r\n", ""},
	}
	forEachTransport(t, func(t *testing.T, tr string) {
		ts := startServer(t, socketio.Options{Auth: bigLimits(t)})
		c, _ := ts.dial(t, tr)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				m := call(t, c, "ask_question", map[string]any{"question": tc.question})
				if tc.code == "" {
					okReply(t, "ask", m)
					next(t, c, "answer")
					return
				}
				assert.Equal(t, tc.code, errCode(t, m))
			})
		}
		ctxCases := map[string]string{"context too long": strings.Repeat("c", 8001), "context control char": "x\x01"}
		for name, ctxText := range ctxCases {
			m := call(t, c, "ask_question", map[string]any{"question": "hi", "context": ctxText})
			assert.Contains(t, []string{"question_invalid", "question_too_long"}, errCode(t, m), name)
		}
	})
}

// TestWireLoneSurrogate sends a question holding a lone UTF-16 surrogate
// escape, which JSON allows but is not valid text.
func TestWireLoneSurrogate(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		ts := startServer(t, socketio.Options{})
		c, _ := ts.dial(t, tr)
		for _, q := range []string{`"\ud800"`, `"a\udc00b"`, `{"question":"x\uDBFFy"}`} {
			require.NoError(t, c.SendRaw(`42["ask_question",`+q+`]`))
			e := next(t, c, "error")
			assert.Equal(t, "question_invalid", e["code"], q)
		}
		// A valid pair is text.
		require.NoError(t, c.SendRaw(`42["ask_question","smile \ud83d\ude00"]`))
		assert.Equal(t, true, next(t, c, "question_received")["ok"])
	})
}

// TestWireTextForms: a literal U+FFFD is valid text (only a lone
// surrogate escape or bytes that are not UTF-8 are not), and full-width
// and other compatibility forms match the knowledge base and suggestions
// after NFKC normalisation, while the question is stored and echoed as sent.
func TestWireTextForms(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		ts := startServer(t, socketio.Options{Auth: bigLimits(t)})
		c, _ := ts.dial(t, tr)

		// Before anything is asked (a popular spelling would win).
		s := okReply(t, "suggestions", call(t, c, "get_suggestions", "ＳＯＣＫＥＴ"))
		assert.Equal(t, []any{"What is Socket.IO?"}, s["suggestions"])
		assert.Equal(t, "ＳＯＣＫＥＴ", s["query"], "the query is echoed as sent")

		for _, q := range []string{"what is \uFFFD?", "replacement \ufffd char"} {
			m := call(t, c, "ask_question", map[string]any{"question": q})
			okReply(t, "ask "+q, m)
			a := next(t, c, "answer")
			assert.Equal(t, q, a["question"])
		}
		require.NoError(t, c.SendRaw(`42["ask_question","escaped \ufffd"]`))
		assert.Equal(t, true, next(t, c, "question_received")["ok"])
		assert.Equal(t, "escaped \ufffd", next(t, c, "answer")["question"])

		// Bytes that are not UTF-8 stay invalid text.
		require.NoError(t, c.SendRaw("42[\"ask_question\",\"bad \xff byte\"]"))
		e := next(t, c, "error")
		assert.Equal(t, "question_invalid", e["code"])

		wide := "ｗｈａｔ　ｉｓ Ｓｏｃｋｅｔ．ＩＯ？"
		m := call(t, c, "ask_question", map[string]any{"question": "  " + wide + " "})
		id := okReply(t, "ask", m)["task_id"]
		a := next(t, c, "answer")
		assert.Equal(t, id, a["task_id"])
		assert.Equal(t, wide, a["question"], "the question is echoed as sent (trimmed)")
		assert.Equal(t, "Socket.IO is a library for real-time, bidirectional, event-based communication.", a["answer"])
		task := okReply(t, "get_task", call(t, c, "get_task", map[string]any{"task_id": id}))["task"].(map[string]any)
		assert.Equal(t, wide, task["question"], "and stored as sent")

	})
}

func TestWireErrorPrecedence(t *testing.T) {
	ts := startServer(t, socketio.Options{})
	c, _ := ts.dial(t, "websocket")
	cases := []struct {
		name    string
		payload map[string]any
		code    string
	}{
		{"invalid_payload before invalid_room", map[string]any{"question": 1, "room": "bad room"}, "invalid_payload"},
		{"invalid_room before question_invalid", map[string]any{"question": "", "room": "bad room"}, "invalid_room"},
		{"invalid_room before question_too_long", map[string]any{"question": strings.Repeat("x", 2001), "room": "bad room"}, "invalid_room"},
		{"question_too_long before forbidden", map[string]any{"question": strings.Repeat("x", 2001), "room": "not-joined"}, "question_too_long"},
		{"forbidden for a room not joined", map[string]any{"question": "hi", "room": "not-joined"}, "forbidden"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.code, errCode(t, call(t, c, "ask_question", tc.payload)))
		})
	}
}

// TestWireRequestOrder sends requests back to back without waiting: each
// must see the effect of the one before, and replies come in order.
func TestWireRequestOrder(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		ts := startServer(t, socketio.Options{Auth: bigLimits(t), MaxOpenTasks: 100})
		c, _ := ts.dial(t, tr)
		const n = 40
		for i := range n {
			room := fmt.Sprintf("r%d", i)
			require.NoError(t, c.Emit("join_room", room))
			require.NoError(t, c.Emit("ask_question", map[string]any{"question": "What is Socket.IO?", "room": room}))
			require.NoError(t, c.Emit("leave_room", room))
		}
		for i := range n {
			room := fmt.Sprintf("r%d", i)
			for _, want := range []string{"room_joined", "question_received", "room_left"} {
				ev, err := c.NextAny(context.Background())
				for err == nil && !isReply(ev.Name) {
					ev, err = c.NextAny(context.Background())
				}
				require.NoError(t, err)
				require.Equal(t, want, ev.Name, "request %d", i)
				m := ev.Args[0].(map[string]any)
				require.Equal(t, true, m["ok"], "%s %d: %v", want, i, m)
				if want != "question_received" {
					require.Equal(t, room, m["room"])
				}
			}
		}
	})
}

func isReply(name string) bool {
	switch name {
	case "room_joined", "question_received", "room_left", "error":
		return true
	}
	return false
}

// bigLimits returns an Auth whose question limits stay out of the way.
func bigLimits(t *testing.T) *socketio.Auth {
	t.Helper()
	a, err := socketio.NewAuth(socketio.AuthOptions{MaxQuestionsPerMinute: 1000, MaxQuestionsPerMinutePerIP: 1000})
	require.NoError(t, err)
	t.Cleanup(func() { a.Close() })
	return a
}

func TestWireSuggestions(t *testing.T) {
	ts := startServer(t, socketio.Options{})
	c, _ := ts.dial(t, "polling")
	m := okReply(t, "suggestions", call(t, c, "get_suggestions", map[string]any{"query": "  WHAT is ", "limit": 2}))
	assert.Equal(t, "WHAT is", m["query"])
	assert.Equal(t, []any{"What is Socket.IO?"}, m["suggestions"])
	m = okReply(t, "suggestions", call(t, c, "get_suggestions", "流式"))
	assert.Equal(t, []any{"什么是流式回答？"}, m["suggestions"])
	m = okReply(t, "suggestions", call(t, c, "get_suggestions", "zzzz"))
	assert.Equal(t, []any{}, m["suggestions"])
}

// blockingJoin holds the first join_room until released.
type blockingJoin struct {
	socketio.BaseHook
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (h *blockingJoin) BeforeJoinRoom(context.Context, *socketio.RoomEvent) error {
	first := false
	h.once.Do(func() { first = true })
	if first {
		close(h.entered)
		<-h.release
	}
	return nil
}

// TestWireFloodIsDisconnected: a client that sends more events than
// MaxPendingEvents while an earlier one is still running is disconnected;
// others are not affected.
func TestWireFloodIsDisconnected(t *testing.T) {
	ts := startServer(t, socketio.Options{MaxPendingEvents: 4})
	h := &blockingJoin{BaseHook: socketio.NewBaseHook("block", 50), entered: make(chan struct{}), release: make(chan struct{})}
	require.NoError(t, ts.QA.Hooks().Register(h))
	t.Cleanup(func() {
		select {
		case <-h.release:
		default:
			close(h.release)
		}
	})
	flooder, _ := ts.dial(t, "websocket")
	bystander, _ := ts.dial(t, "websocket")
	require.NoError(t, flooder.Emit("join_room", "first"))
	<-h.entered
	for range 20 {
		if flooder.Emit("get_history") != nil {
			break
		}
	}
	select {
	case <-flooder.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the flooding client was not disconnected")
	}
	close(h.release)
	okReply(t, "history", call(t, bystander, "get_history"))
}
