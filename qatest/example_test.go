package qatest_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/qatest"
)

// BannedWordsHook refuses questions that contain one of its words, with the
// code forbidden.
type BannedWordsHook struct {
	socketio.BaseHook
	Words []string
}

// BeforeQuestion runs before a question is accepted; an error refuses it.
func (h *BannedWordsHook) BeforeQuestion(ctx context.Context, e *socketio.QuestionEvent) error {
	q := strings.ToLower(e.Question)
	for _, w := range h.Words {
		if strings.Contains(q, w) {
			return socketio.NewError(socketio.CodeForbidden, "questions about %q are not allowed", w)
		}
	}
	return nil
}

// This tests a custom hook over the wire: a client connects, a question with
// a banned word is refused with forbidden (through an ack, and without one
// as an "error" event), and a normal question is answered by the knowledge
// base. In a test function, qatest.NewServer(t, opts) replaces Start and
// the deferred Close: it closes everything when the test ends and fails the
// test if something was left open.
func Example() {
	kb, err := socketio.NewKnowledgeBase([]socketio.Entry{
		{Question: "What is Socket.IO?", Answer: "A library for real-time, event-based communication.", Source: "docs/socket.io"},
	})
	if err != nil {
		panic(err)
	}
	srv, err := qatest.Start(socketio.Options{KnowledgeBase: kb})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	hook := &BannedWordsHook{BaseHook: socketio.NewBaseHook("banned_words", 50), Words: []string{"password"}}
	if err := srv.QA.Hooks().Register(hook); err != nil {
		panic(err)
	}

	ctx := context.Background() // each wait is bounded by ClientOptions.Timeout, 5s
	c, err := srv.Dial(ctx, qatest.ClientOptions{Transport: qatest.Polling})
	if err != nil {
		panic(err)
	}
	fmt.Println("resumed:", c.Connected().Resumed)

	// With an ack, the refusal is the reply.
	r, err := c.Request(ctx, "ask_question", "What is the admin PASSWORD?")
	if err != nil {
		panic(err)
	}
	fmt.Println(r.OK, r.Code(), r.Err.Message)

	// Without one, it comes as an "error" event naming the request.
	r, err = c.Send(ctx, "ask_question", map[string]any{"question": "password reset?"})
	if err != nil {
		panic(err)
	}
	fmt.Println(r.OK, r.Code(), r.Data["event"])

	// A normal question is accepted, then answered.
	r, err = c.Request(ctx, "ask_question", map[string]any{"question": "what is socket.io", "stream": true})
	if err != nil {
		panic(err)
	}
	var accepted struct {
		TaskID string `json:"task_id"`
		Status string `json:"status"`
	}
	if err := r.Decode(&accepted); err != nil {
		panic(err)
	}
	fmt.Println(r.OK, accepted.Status)

	ev, err := c.Await(ctx, "answer", qatest.ForTask(accepted.TaskID))
	if err != nil {
		panic(err)
	}
	var answer struct {
		Answer  string   `json:"answer"`
		Status  string   `json:"status"`
		Sources []string `json:"sources"`
	}
	if err := ev.Decode(&answer); err != nil {
		panic(err)
	}
	fmt.Println(answer.Status, answer.Answer, answer.Sources)

	// The hook saw both refused questions and the accepted one.
	for _, h := range srv.QA.Hooks().HooksInfo() {
		if h.Name == "banned_words" {
			fmt.Println("calls:", h.Calls, "refusals:", h.Errors)
		}
	}
	// Output:
	// resumed: false
	// false forbidden questions about "password" are not allowed
	// false forbidden ask_question
	// true pending
	// completed A library for real-time, event-based communication. [docs/socket.io]
	// calls: 3 refusals: 2
}
