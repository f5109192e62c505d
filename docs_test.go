package socketio_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/sioclient"
)

// The tests of this file keep docs/protocol.md, the protocol reference for
// client authors, in step with the code: every example in it is checked
// against what a real server sends, and its lists of events and error codes
// against the package's source.

const protocolDoc = "docs/protocol.md"

// notYetSent lists the fields the contract promises (and docs/protocol.md
// shows, under "Implementation status") that this version of the server
// does not send, by example name and field path. TestProtocolDocExamples
// fails when one of them starts being sent, so that the list, and the
// document's section, shrink as the library catches up.
var notYetSent = map[string][]string{
	"unavailable.failure": {"error.retry_after_ms"},
}

// docExamples returns the JSON examples of docs/protocol.md by name: each
// is a ```json block right after an <!-- example: NAME --> line.
func docExamples(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(protocolDoc)
	require.NoError(t, err)
	re := regexp.MustCompile("(?s)<!-- example: ([a-z_.]+) -->\n```json\n(.*?)\n```")
	out := map[string]any{}
	for _, m := range re.FindAllStringSubmatch(string(raw), -1) {
		name := m[1]
		_, dup := out[name]
		require.False(t, dup, "example %s appears twice", name)
		var v any
		require.NoError(t, json.Unmarshal([]byte(m[2]), &v), "example %s is not JSON", name)
		out[name] = v
	}
	require.Equal(t, strings.Count(string(raw), "<!-- example:"), len(out), "every example marker is followed by a json block")
	return out
}

// jsonKind names the JSON type of a decoded value; whole numbers are
// "integer", so that a documented integer must be sent as one.
func jsonKind(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case float64:
		if x == math.Trunc(x) {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// sameShape reports where got, as received from the server, differs in
// shape from want, a documented example: a field missing on either side
// (unless listed in absent, as paths like "error.retry_after_ms"), a
// different JSON type, or a different value for the fields that carry a
// fixed meaning ("ok", "code", "event").
func sameShape(want, got any, path string, absent []string) []string {
	var diffs []string
	wk, gk := jsonKind(want), jsonKind(got)
	if wk != gk {
		return []string{fmt.Sprintf("%s: documented %s, sent %s (%v)", orRoot(path), wk, gk, got)}
	}
	switch w := want.(type) {
	case map[string]any:
		g := got.(map[string]any)
		for k := range g {
			if _, ok := w[k]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s: sent but not documented (%v)", join(path, k), g[k]))
			}
		}
		for k, wv := range w {
			p := join(path, k)
			gv, ok := g[k]
			if !ok {
				if !slices.Contains(absent, p) {
					diffs = append(diffs, p+": documented but not sent")
				}
				continue
			}
			switch k {
			case "ok", "code", "event":
				if wv != gv {
					diffs = append(diffs, fmt.Sprintf("%s: documented %v, sent %v", p, wv, gv))
				}
			}
			diffs = append(diffs, sameShape(wv, gv, p, absent)...)
		}
	case []any:
		g := got.([]any)
		if len(w) > 0 && len(g) > 0 {
			for i := range g {
				diffs = append(diffs, sameShape(w[0], g[i], path+"[]", absent)...)
			}
		}
	}
	sort.Strings(diffs)
	return diffs
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func orRoot(path string) string {
	if path == "" {
		return "(the payload)"
	}
	return path
}

// TestProtocolDocExamples sends every documented request to a real server,
// over both transports, with and without an ack, and compares every reply,
// failure, error event, push, the connect handshake's events and the Task
// objects with the examples of docs/protocol.md.
func TestProtocolDocExamples(t *testing.T) {
	ex := docExamples(t)
	forEachTransport(t, func(t *testing.T, transport string) {
		checkDocExamples(t, ex, transport)
	})
}

func checkDocExamples(t *testing.T, ex map[string]any, transport string) {
	seen := map[string]bool{}
	example := func(name string) any {
		t.Helper()
		v, ok := ex[name]
		require.True(t, ok, "docs/protocol.md has no example %q", name)
		seen[name] = true
		return v
	}
	// gaps records which notYetSent fields were indeed absent.
	gaps := map[string]bool{}
	check := func(name string, got any) {
		t.Helper()
		want := example(name)
		absent := notYetSent[name]
		assert.Empty(t, sameShape(want, got, "", absent), "%s: the server's reply differs from docs/protocol.md\nsent: %v", name, got)
		for _, p := range absent {
			if !hasPath(got, p) {
				gaps[name+" "+p] = true
			}
		}
	}

	// The documented token is accepted and names user u42; any other
	// token, or none, is refused.
	docAuth := example("auth").(map[string]any)
	verifier := func(_ context.Context, tok string) (string, error) {
		if tok == docAuth["token"] {
			return "u42", nil
		}
		return "", errors.New("unknown token")
	}
	auth := mustAuth(t, socketio.AuthOptions{TokenVerifier: verifier})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	answerer := socketio.AnswererFunc(func(ctx context.Context, q socketio.Question, w socketio.ChunkWriter) (socketio.Answer, error) {
		if strings.HasPrefix(q.Text, "Hold on") { // streams one chunk, then waits to be cancelled
			if err := w.WriteChunk("A room is "); err != nil {
				return socketio.Answer{}, err
			}
			select {
			case <-ctx.Done():
				return socketio.Answer{}, ctx.Err()
			case <-release:
				return socketio.Answer{}, errors.New("released")
			}
		}
		for _, d := range []string{"A room is a named group of sockets; ", "join it to receive what is sent to it."} {
			if err := w.WriteChunk(d); err != nil {
				return socketio.Answer{}, err
			}
		}
		return socketio.Answer{Text: "A room is a named group of sockets; join it to receive what is sent to it.", Sources: []string{"docs/rooms"}}, nil
	})
	ts := startServer(t, socketio.Options{Auth: auth, Answerer: answerer, KnowledgeBase: testKB(t)})

	// Connecting: the documented auth object (its resume token is not one
	// of this server's, so a new session starts), connected, and a refusal.
	c, connected := ts.dial(t, transport, withAuth(docAuth))
	check("connected", connected)
	assert.Equal(t, example("connected").(map[string]any)["limits"], connected["limits"], "connected.limits shows the defaults")
	assert.Equal(t, false, connected["resumed"])
	_, err := ts.dialErr(t, transport)
	var ce *sioclient.ConnectError
	require.ErrorAs(t, err, &ce)
	check("connect_error", map[string]any{"message": ce.Message, "data": ce.Data})
	// The resume token of connected resumes the session.
	_, again := ts.dial(t, transport, withAuth(map[string]any{"token": docAuth["token"], "resume": connected["resume_token"]}))
	assert.Equal(t, true, again["resumed"])
	assert.Equal(t, connected["session_id"], again["session_id"])

	// ids maps the documented task ids to real ones, so that documented
	// requests naming a task name a real one.
	ids := map[string]string{}
	request := func(name string) any {
		t.Helper()
		v := example(name)
		if m, ok := v.(map[string]any); ok {
			cp := map[string]any{}
			for k, x := range m {
				if s, ok := x.(string); ok && ids[s] != "" {
					x = ids[s]
				}
				cp[k] = x
			}
			return cp
		}
		return v
	}
	// exchange sends event's documented request with an ack, then without,
	// and its documented failing request likewise, checking the four
	// answers. It returns the ack reply of the successful request.
	// then, when set, runs after each of the two successful requests.
	exchange := func(event, replyEvent string, then func(reply map[string]any)) map[string]any {
		t.Helper()
		ack := call(t, c, event, request(event+".request"))
		check(event+".ack", ack)
		if then != nil {
			then(ack)
		}
		require.NoError(t, c.Emit(event, request(event+".request")))
		reply := next(t, c, replyEvent)
		check(event+".reply", reply)
		if then != nil {
			then(reply)
		}
		check(event+".failure", call(t, c, event, request(event+".failure.request")))
		require.NoError(t, c.Emit(event, request(event+".failure.request")))
		check(event+".error", next(t, c, "error"))
		return ack
	}

	exchange("join_room", "room_joined", nil)

	// ask_question: the documented streamed question into the room, with
	// its pushes.
	// Each task's pushes are awaited before the next request, so that no
	// two tasks' pushes interleave.
	pushes := func(reply map[string]any) {
		t.Helper()
		id := reply["task_id"]
		for _, status := range []string{"pending", "processing", "completed"} {
			m := next(t, c, "task_status")
			check("task_status", m)
			require.Equal(t, id, m["task_id"])
			require.Equal(t, status, m["status"])
		}
		for seq := range 2 {
			m := next(t, c, "answer_chunk")
			check("answer_chunk", m)
			require.Equal(t, id, m["task_id"])
			require.EqualValues(t, seq, m["seq"])
		}
		m := next(t, c, "answer")
		check("answer", m)
		require.Equal(t, id, m["task_id"])
	}
	docTask := example("ask_question.ack").(map[string]any)["task_id"].(string)
	ack := exchange("ask_question", "question_received", pushes)
	ids[docTask] = ack["task_id"].(string)

	exchange("get_suggestions", "suggestions", nil)
	exchange("get_task", "task", nil)
	exchange("get_history", "history", nil)

	// A held streamed answer: a processing Task, then cancel_task and the
	// pushes a cancellation causes.
	held := call(t, c, "ask_question", map[string]any{"question": "Hold on: how do rooms work?", "stream": true})
	heldID := okReply(t, "ask_question", held)["task_id"].(string)
	docHeld := example("cancel_task.request").(map[string]any)["task_id"].(string)
	ids[docHeld] = heldID
	next(t, c, "answer_chunk")
	task := okReply(t, "get_task", call(t, c, "get_task", map[string]any{"task_id": heldID}))["task"]
	require.Equal(t, "processing", task.(map[string]any)["status"])
	check("task.processing", task)
	exchange("cancel_task", "task_cancelled", nil)
	for m := next(t, c, "task_status"); m["status"] != "cancelled"; m = next(t, c, "task_status") {
	}
	check("answer_error", next(t, c, "answer_error"))
	check("task.cancelled", okReply(t, "get_task", call(t, c, "get_task", map[string]any{"task_id": heldID}))["task"])

	exchange("clear_history", "history_cleared", nil)
	exchange("leave_room", "room_left", nil)

	check("unknown_event.failure", call(t, c, "no_such_event", example("unknown_event.request")))

	// The contract answers a faulty context with invalid_payload; this
	// version does not yet (docs/protocol.md, Implementation status).
	ctxFault := call(t, c, "ask_question", map[string]any{"question": "What is Socket.IO?", "context": strings.Repeat("x", 8001)})
	assert.Equal(t, "question_too_long", errCode(t, ctxFault), "a faulty context is answered as the contract says now: drop its row from docs/protocol.md's Implementation status")

	// rate_limited, with retry_after_ms, from a server allowing one
	// question a minute.
	strict := startServer(t, socketio.Options{Auth: mustAuth(t, socketio.AuthOptions{MaxQuestionsPerMinute: 1})})
	sc, _ := strict.dial(t, transport)
	okReply(t, "ask_question", call(t, sc, "ask_question", "What is Socket.IO?"))
	check("rate_limited.failure", call(t, sc, "ask_question", "What is Socket.IO?"))

	// unavailable: a request reaching a server that is shutting down.
	closing := startServer(t, socketio.Options{})
	cc, _ := closing.dial(t, transport)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, closing.QA.Close(ctx))
	check("unavailable.failure", call(t, cc, "get_history", map[string]any{}))

	// Every example was checked, and every field still listed as not yet
	// sent was indeed missing.
	for name := range ex {
		if name != "auth" && !strings.HasSuffix(name, ".request") {
			assert.True(t, seen[name], "example %s of docs/protocol.md is not checked against the server", name)
		}
	}
	for name, paths := range notYetSent {
		for _, p := range paths {
			assert.True(t, gaps[name+" "+p], "%s %s is sent now: drop it from notYetSent and from docs/protocol.md's Implementation status", name, p)
		}
	}
}

func mustAuth(t *testing.T, o socketio.AuthOptions) *socketio.Auth {
	t.Helper()
	a, err := socketio.NewAuth(o)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, a.Close()) }) // after the Server's cleanup: a caller's Auth is the caller's to close
	return a
}

// hasPath reports whether v holds the dotted field path p.
func hasPath(v any, p string) bool {
	for _, k := range strings.Split(p, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return false
		}
		if v, ok = m[k]; !ok {
			return false
		}
	}
	return true
}

// TestProtocolDocCoversCode checks docs/protocol.md against the source:
// every request event and its reply event (events.go), every event the
// server pushes, and every error code (errors.go) is documented, and every
// request and error code the document lists exists in the code.
func TestProtocolDocCoversCode(t *testing.T) {
	raw, err := os.ReadFile(protocolDoc)
	require.NoError(t, err)
	doc := string(raw)
	requests, pushed, codes := sourceNames(t)
	require.NotEmpty(t, requests)
	require.NotEmpty(t, codes)

	// Requests: each has its own section and a row in the summary table.
	docRequests := regexp.MustCompile("(?m)^### `([a-z_]+)`$").FindAllStringSubmatch(doc, -1)
	var sections []string
	for _, m := range docRequests {
		sections = append(sections, m[1])
	}
	var want []string
	for name, reply := range requests {
		want = append(want, name)
		assert.Regexp(t, "(?m)^\\| `"+name+"` \\| .* \\| `"+reply+"` \\|", doc, "the request table lists %s with its reply event %s", name, reply)
	}
	sort.Strings(want)
	sort.Strings(sections)
	assert.Equal(t, want, sections, "docs/protocol.md has one section per request event of events.go, and no other")

	// The fields not yet sent are named in Implementation status.
	status := doc[strings.Index(doc, "\n## Implementation status"):]
	for _, paths := range notYetSent {
		for _, p := range paths {
			assert.Contains(t, status, "`"+p[strings.LastIndex(p, ".")+1:]+"`", "Implementation status names %s", p)
		}
	}

	// Pushed events.
	for _, ev := range pushed {
		assert.Contains(t, doc, "`"+ev+"`", "the pushed event %s is documented", ev)
	}

	// Error codes: the table of "Error codes" against errors.go.
	section := doc[strings.Index(doc, "\n## Error codes"):]
	if i := strings.Index(section[1:], "\n## "); i >= 0 {
		section = section[:i+1]
	}
	var docCodes []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\|").FindAllStringSubmatch(section, -1) {
		docCodes = append(docCodes, m[1])
	}
	sort.Strings(docCodes)
	sort.Strings(codes)
	assert.Equal(t, codes, docCodes, "the error-code table of docs/protocol.md lists exactly the codes of errors.go")
}

// sourceNames reads the package's source: the request events and their
// reply events (requestHandlers in events.go), the events the server
// pushes (string literals passed to push, pushTo and broadcast), and the
// values of the Code constants.
func sourceNames(t *testing.T) (requests map[string]string, pushed, codes []string) {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	requests = map[string]string{}
	pushedSet := map[string]bool{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		require.NoError(t, err)
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ValueSpec:
				if len(n.Names) == 1 && n.Names[0].Name == "requestHandlers" && len(n.Values) == 1 {
					for _, el := range n.Values[0].(*ast.CompositeLit).Elts {
						kv := el.(*ast.KeyValueExpr)
						for _, f := range kv.Value.(*ast.CompositeLit).Elts {
							if fkv := f.(*ast.KeyValueExpr); fkv.Key.(*ast.Ident).Name == "replyEvent" {
								requests[unquote(t, kv.Key)] = unquote(t, fkv.Value)
							}
						}
					}
				}
				if id, ok := n.Type.(*ast.Ident); ok && id.Name == "Code" {
					for _, v := range n.Values {
						codes = append(codes, unquote(t, v))
					}
				}
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && slices.Contains([]string{"push", "pushTo", "broadcast"}, sel.Sel.Name) {
					for _, a := range n.Args {
						if lit, ok := a.(*ast.BasicLit); ok && lit.Kind == token.STRING {
							pushedSet[unquote(t, lit)] = true
						}
					}
				}
			}
			return true
		})
	}
	for ev := range pushedSet {
		pushed = append(pushed, ev)
	}
	sort.Strings(pushed)
	return requests, pushed, codes
}

func unquote(t *testing.T, e ast.Expr) string {
	t.Helper()
	lit, ok := e.(*ast.BasicLit)
	require.True(t, ok, "a string literal: %#v", e)
	s, err := strconv.Unquote(lit.Value)
	require.NoError(t, err)
	return s
}
