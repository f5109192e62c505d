package llm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/llm"
)

const testKey = "sk-test-0123456789SECRET"

// fake is an OpenAI-compatible test server: each request is recorded and
// answered by handle, which sees its 0-based number.
type fake struct {
	srv *httptest.Server

	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	path   string
	header http.Header
	body   map[string]any
}

func newFake(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, n int)) *fake {
	t.Helper()
	f := &fake{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		f.mu.Lock()
		n := len(f.reqs)
		f.reqs = append(f.reqs, recorded{path: r.URL.Path, header: r.Header.Clone(), body: body})
		f.mu.Unlock()
		handle(w, r, n)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fake) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newAnswerer makes an Answerer for f whose retry waits are recorded in
// *waits instead of slept.
func newAnswerer(t *testing.T, f *fake, opts llm.Options) (*llm.Answerer, *logBuf, *[]time.Duration) {
	t.Helper()
	if opts.Model == "" {
		opts.Model = "test-model"
	}
	opts.BaseURL = f.srv.URL + "/v1"
	opts.HTTPClient = f.srv.Client()
	logs := &logBuf{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := llm.New(opts)
	require.NoError(t, err)
	var mu sync.Mutex
	waits := &[]time.Duration{}
	llm.SetSleep(a, func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		*waits = append(*waits, d)
		mu.Unlock()
		return ctx.Err()
	})
	return a, logs, waits
}

// chunks records what an Answerer streams; fail, when set, is returned
// from the write with that 1-based number.
type chunks struct {
	mu     sync.Mutex
	deltas []string
	failAt int
	fail   error
	first  chan struct{}
}

func newChunks() *chunks { return &chunks{first: make(chan struct{})} }

func (c *chunks) WriteChunk(d string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deltas = append(c.deltas, d)
	if len(c.deltas) == 1 {
		close(c.first)
	}
	if c.failAt > 0 && len(c.deltas) == c.failAt {
		return c.fail
	}
	return nil
}

func (c *chunks) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.deltas...)
}

// SSE building blocks in the Chat Completions streaming format.

func chunkJSON(delta map[string]any, finish any, usage any) string {
	choice := map[string]any{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finish}
	b, _ := json.Marshal(map[string]any{
		"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000,
		"model": "test-model", "choices": []any{choice}, "usage": usage,
	})
	return string(b)
}

func roleChunk() string {
	return chunkJSON(map[string]any{"role": "assistant", "content": ""}, nil, nil)
}

func contentChunk(s string) string { return chunkJSON(map[string]any{"content": s}, nil, nil) }

func finishChunk(usage any) string { return chunkJSON(map[string]any{}, "stop", usage) }

func usageChunk(p, c int) string {
	b, _ := json.Marshal(map[string]any{
		"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000,
		"model": "test-model", "choices": []any{},
		"usage": map[string]any{"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
	})
	return string(b)
}

func usageObj(p, c int) map[string]any {
	return map[string]any{"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
}

// sendSSE starts an event stream and sends events, flushing each.
func sendSSE(w http.ResponseWriter, events ...string) {
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
	}
	for _, e := range events {
		fmt.Fprintf(w, "data: %s\n\n", e)
		w.(http.Flusher).Flush()
	}
}

// openAIStream answers with the deltas the way OpenAI does: role, content,
// finish_reason, then a usage chunk without choices.
func openAIStream(deltas ...string) func(w http.ResponseWriter, r *http.Request, n int) {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		ev := []string{roleChunk()}
		for _, d := range deltas {
			ev = append(ev, contentChunk(d))
		}
		ev = append(ev, finishChunk(nil), usageChunk(7, len(deltas)), "[DONE]")
		sendSSE(w, ev...)
	}
}

// llamaStream answers the way llama.cpp does: usage on the finish chunk.
func llamaStream(deltas ...string) func(w http.ResponseWriter, r *http.Request, n int) {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		ev := []string{roleChunk()}
		for _, d := range deltas {
			ev = append(ev, contentChunk(d))
		}
		ev = append(ev, finishChunk(usageObj(11, len(deltas))), "[DONE]")
		sendSSE(w, ev...)
	}
}

func errorBody(status int, msg, typ string, code any) func(w http.ResponseWriter, r *http.Request, n int) {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": typ, "code": code}})
		_, _ = w.Write(b)
	}
}

// backend is a server the success tests run against: the fake one, and a
// real one when QA_TEST_LLM_BASE_URL is set.
type backend struct {
	name  string
	new   func(t *testing.T, opts llm.Options) *llm.Answerer
	exact bool // the answer and usage are known
}

func backends() []backend {
	bs := []backend{{
		name:  "fake",
		exact: true,
		new: func(t *testing.T, opts llm.Options) *llm.Answerer {
			f := newFake(t, openAIStream("Hel", "lo, ", "world."))
			a, _, _ := newAnswerer(t, f, opts)
			return a
		},
	}}
	if base := os.Getenv("QA_TEST_LLM_BASE_URL"); base != "" {
		bs = append(bs, backend{
			name: "real",
			new: func(t *testing.T, opts llm.Options) *llm.Answerer {
				opts.BaseURL = base
				opts.Model = os.Getenv("QA_TEST_LLM_MODEL")
				if opts.Model == "" {
					opts.Model = "default"
				}
				opts.APIKey = os.Getenv("QA_TEST_LLM_API_KEY")
				opts.StallTimeout = 2 * time.Minute
				tr := &http.Transport{}
				t.Cleanup(tr.CloseIdleConnections)
				opts.HTTPClient = &http.Client{Transport: tr}
				a, err := llm.New(opts)
				require.NoError(t, err)
				return a
			},
		})
	}
	return bs
}

func TestAnswerBackends(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			for _, stream := range []bool{true, false} {
				t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
					temp := 0.0
					a := b.new(t, llm.Options{
						SystemPrompt: "Answer in one short sentence.",
						Temperature:  &temp,
						MaxTokens:    64,
					})
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
					defer cancel()
					c := newChunks()
					ans, err := a.Answer(ctx, socketio.Question{Text: "Say hello to the world.", Stream: stream}, c)
					require.NoError(t, err)
					require.NotEmpty(t, ans.Text)
					if stream {
						assert.Equal(t, ans.Text, strings.Join(c.got(), ""), "the chunks joined are the answer")
						if b.exact {
							assert.Equal(t, []string{"Hel", "lo, ", "world."}, c.got())
						}
					} else {
						assert.Empty(t, c.got(), "nothing is streamed when the question did not ask")
					}
					if b.exact {
						assert.Equal(t, "Hello, world.", ans.Text)
						assert.Equal(t, &socketio.Usage{PromptTokens: 7, CompletionTokens: 3, TotalTokens: 10}, ans.Usage)
					}
				})
			}
		})
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name   string
		handle func(w http.ResponseWriter, r *http.Request, n int)
		want   *socketio.Usage
	}{
		{"openai final usage chunk", openAIStream("a", "b"), &socketio.Usage{PromptTokens: 7, CompletionTokens: 2, TotalTokens: 9}},
		{"llama.cpp usage on the finish chunk", llamaStream("a", "b"), &socketio.Usage{PromptTokens: 11, CompletionTokens: 2, TotalTokens: 13}},
		{"no usage", func(w http.ResponseWriter, r *http.Request, n int) {
			sendSSE(w, roleChunk(), contentChunk("ab"), finishChunk(nil), "[DONE]")
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _, _ := newAnswerer(t, newFake(t, tt.handle), llm.Options{})
			ans, err := a.Answer(context.Background(), socketio.Question{Text: "q"}, newChunks())
			require.NoError(t, err)
			assert.Equal(t, "ab", ans.Text)
			assert.Equal(t, tt.want, ans.Usage)
		})
	}
}

func TestRequestBody(t *testing.T) {
	history := []socketio.Turn{
		{Question: "q1", Answer: "a1"},
		{Question: "q2", Answer: "a2"},
		{Question: "q3", Answer: "a3"},
	}
	temp := 0.25
	tests := []struct {
		name      string
		opts      llm.Options
		q         socketio.Question
		wantMsgs  []map[string]any
		wantTemp  any
		wantMax   any
		wantAuth  string
		wantTurns int
	}{
		{
			name: "everything",
			opts: llm.Options{Model: "m1", APIKey: testKey, SystemPrompt: "Be brief.", Temperature: &temp, MaxTokens: 100, Turns: 2},
			q:    socketio.Question{Text: "q4", Context: "The sky is green here.", History: history},
			wantMsgs: []map[string]any{
				{"role": "system", "content": "Be brief."},
				{"role": "user", "content": "q2"},
				{"role": "assistant", "content": "a2"},
				{"role": "user", "content": "q3"},
				{"role": "assistant", "content": "a3"},
				{"role": "user", "content": "Context:\n<context>\nThe sky is green here.\n</context>\n\nQuestion: q4"},
			},
			wantTemp: 0.25, wantMax: 100.0, wantAuth: "Bearer " + testKey, wantTurns: 2,
		},
		{
			name:      "defaults",
			opts:      llm.Options{Model: "m2"},
			q:         socketio.Question{Text: "only this", History: history[:1]},
			wantMsgs:  []map[string]any{{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "only this"}},
			wantTurns: 10,
		},
		{
			name:      "no history, half turns skipped",
			opts:      llm.Options{Model: "m3", Turns: -1},
			q:         socketio.Question{Text: "x", History: history},
			wantMsgs:  []map[string]any{{"role": "user", "content": "x"}},
			wantTurns: 0,
		},
		{
			name:      "a turn without an answer is left out whole",
			opts:      llm.Options{Model: "m4"},
			q:         socketio.Question{Text: "x", History: []socketio.Turn{{Question: "lost"}, {Question: "q", Answer: "a"}}},
			wantMsgs:  []map[string]any{{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "x"}},
			wantTurns: 10,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, openAIStream("ok"))
			a, _, _ := newAnswerer(t, f, tt.opts)
			assert.Equal(t, tt.wantTurns, a.HistoryTurns())
			_, err := a.Answer(context.Background(), tt.q, newChunks())
			require.NoError(t, err)
			reqs := f.requests()
			require.Len(t, reqs, 1)
			r := reqs[0]
			assert.Equal(t, "/v1/chat/completions", r.path)
			assert.Equal(t, tt.wantAuth, r.header.Get("Authorization"))
			assert.Equal(t, tt.opts.Model, r.body["model"])
			assert.Equal(t, true, r.body["stream"])
			assert.Equal(t, map[string]any{"include_usage": true}, r.body["stream_options"])
			assert.Equal(t, tt.wantTemp, r.body["temperature"])
			assert.Equal(t, tt.wantMax, r.body["max_tokens"])
			var msgs []map[string]any
			for _, m := range r.body["messages"].([]any) {
				msgs = append(msgs, m.(map[string]any))
			}
			assert.Equal(t, tt.wantMsgs, msgs)
		})
	}
}

func TestHTTPErrors(t *testing.T) {
	leak := "Incorrect API key provided: " + testKey + "."
	tests := []struct {
		status   int
		msg      string
		wantMsg  string
		requests int // 1, or 1+MaxRetries when retried
	}{
		{400, "max_tokens is too large", "the model server answered 400 Bad Request", 1},
		{401, leak, "the model server answered 401 Unauthorized", 1},
		{500, "boom " + testKey, "the model server answered 500 Internal Server Error", 3},
		{503, "Loading model", "the model server answered 503 Service Unavailable", 3},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			f := newFake(t, errorBody(tt.status, tt.msg, "invalid_request_error", tt.status))
			a, logs, waits := newAnswerer(t, f, llm.Options{APIKey: testKey, MaxRetries: 2})
			_, err := a.Answer(context.Background(), socketio.Question{Text: "q", Stream: true}, newChunks())
			require.Error(t, err)
			var se *socketio.Error
			require.ErrorAs(t, err, &se)
			assert.Equal(t, socketio.CodeAnswerFailed, se.Code)
			assert.Equal(t, tt.wantMsg, se.Message)
			assert.Len(t, f.requests(), tt.requests)
			assert.Len(t, *waits, tt.requests-1)

			assert.NotContains(t, err.Error(), testKey)
			assert.NotContains(t, logs.String(), testKey)
			// The details reach the log, redacted.
			assert.Contains(t, logs.String(), strings.ReplaceAll(tt.msg, testKey, "[redacted]"))
		})
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		header map[string]string
		want   time.Duration
	}{
		{"seconds", map[string]string{"Retry-After": "2"}, 2 * time.Second},
		{"capped", map[string]string{"Retry-After": "3600"}, 30 * time.Second},
		{"http date", map[string]string{"Retry-After": now.Add(5 * time.Second).Format(http.TimeFormat)}, 5 * time.Second},
		{"milliseconds", map[string]string{"Retry-After-Ms": "150", "Retry-After": "9"}, 150 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
				if n == 0 {
					for k, v := range tt.header {
						w.Header().Set(k, v)
					}
					errorBody(http.StatusTooManyRequests, "slow down", "rate_limit_error", "rate_limit_exceeded")(w, r, n)
					return
				}
				openAIStream("fine")(w, r, n)
			})
			a, _, waits := newAnswerer(t, f, llm.Options{})
			llm.SetNow(a, func() time.Time { return now })
			c := newChunks()
			ans, err := a.Answer(context.Background(), socketio.Question{Text: "q", Stream: true}, c)
			require.NoError(t, err)
			assert.Equal(t, "fine", ans.Text)
			assert.Equal(t, []string{"fine"}, c.got())
			assert.Len(t, f.requests(), 2, "retried once")
			assert.Equal(t, []time.Duration{tt.want}, *waits)
		})
	}
}

func TestRetryAfterPastDeadline(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Retry-After", "20")
		errorBody(http.StatusTooManyRequests, "slow down", "rate_limit_error", nil)(w, r, n)
	})
	a, _, waits := newAnswerer(t, f, llm.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := a.Answer(ctx, socketio.Question{Text: "q"}, newChunks())
	require.Error(t, err)
	assert.Equal(t, "answer_failed: the model server answered 429 Too Many Requests", err.Error())
	assert.Empty(t, *waits, "no wait that would outlast the answer")
	assert.Len(t, f.requests(), 1)
}

func TestRetryConnectionError(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 0 {
			// The connection drops before any response.
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		openAIStream("after", " all")(w, r, n)
	})
	a, _, waits := newAnswerer(t, f, llm.Options{})
	ans, err := a.Answer(context.Background(), socketio.Question{Text: "q"}, newChunks())
	require.NoError(t, err)
	assert.Equal(t, "after all", ans.Text)
	assert.Len(t, f.requests(), 2)
	require.Len(t, *waits, 1)
	assert.Positive(t, (*waits)[0])
	assert.LessOrEqual(t, (*waits)[0], llm.BackoffMax)
}

func TestBackoffBounds(t *testing.T) {
	for retry := 0; retry < 70; retry++ {
		d := llm.Backoff(retry)
		assert.Positive(t, d, "retry %d", retry)
		assert.LessOrEqual(t, d, llm.BackoffMax, "retry %d", retry)
	}
}

func TestStreamCutOff(t *testing.T) {
	tests := []struct {
		name string
		end  func(w http.ResponseWriter)
	}{
		{"connection aborted", func(http.ResponseWriter) { panic(http.ErrAbortHandler) }},
		{"closed cleanly without finish_reason", func(http.ResponseWriter) {}},
		{"error event", func(w http.ResponseWriter) {
			sendSSE(w, `{"error":{"message":"the GPU fell over","type":"server_error"}}`)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
				sendSSE(w, roleChunk(), contentChunk("Half "), contentChunk("an "))
				tt.end(w)
			})
			a, _, waits := newAnswerer(t, f, llm.Options{MaxRetries: 3})
			c := newChunks()
			_, err := a.Answer(context.Background(), socketio.Question{Text: "q", Stream: true}, c)
			require.Error(t, err)
			assert.Equal(t, socketio.CodeAnswerFailed, socketio.ErrorCode(err))
			assert.Equal(t, []string{"Half ", "an "}, c.got())
			assert.Len(t, f.requests(), 1, "never retried after tokens were sent")
			assert.Empty(t, *waits)
		})
	}
}

func TestCutOffBeforeTokensIsRetried(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 0 {
			sendSSE(w, roleChunk())
			panic(http.ErrAbortHandler)
		}
		openAIStream("second")(w, r, n)
	})
	a, _, _ := newAnswerer(t, f, llm.Options{})
	c := newChunks()
	ans, err := a.Answer(context.Background(), socketio.Question{Text: "q", Stream: true}, c)
	require.NoError(t, err)
	assert.Equal(t, "second", ans.Text)
	assert.Equal(t, []string{"second"}, c.got())
	assert.Len(t, f.requests(), 2)
}

// silent sends the events, then nothing until the request ends, which it
// reports on gone.
func silent(gone chan struct{}, events ...string) func(w http.ResponseWriter, r *http.Request, n int) {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		sendSSE(w, events...)
		<-r.Context().Done()
		close(gone)
	}
}

func waitClosed(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not happen", what)
	}
}

func TestStall(t *testing.T) {
	tests := []struct {
		name   string
		events []string
		want   []string
	}{
		{"headers then silence", nil, nil},
		{"silence after some tokens", []string{roleChunk(), contentChunk("Hi")}, []string{"Hi"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gone := make(chan struct{})
			f := newFake(t, silent(gone, tt.events...))
			a, _, waits := newAnswerer(t, f, llm.Options{StallTimeout: 50 * time.Millisecond})
			c := newChunks()
			_, err := a.Answer(context.Background(), socketio.Question{Text: "q", Stream: true}, c)
			require.Error(t, err)
			assert.Equal(t, socketio.CodeTimeout, socketio.ErrorCode(err))
			assert.Contains(t, err.Error(), "sent nothing for 50ms")
			assert.Equal(t, tt.want, c.got())
			waitClosed(t, gone, "the server seeing the request end")
			assert.Len(t, f.requests(), 1)
			assert.Empty(t, *waits)
		})
	}
}

func TestStallBeforeHeaders(t *testing.T) {
	gone := make(chan struct{})
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		<-r.Context().Done()
		close(gone)
	})
	a, _, _ := newAnswerer(t, f, llm.Options{StallTimeout: 50 * time.Millisecond})
	_, err := a.Answer(context.Background(), socketio.Question{Text: "q"}, newChunks())
	assert.Equal(t, socketio.CodeTimeout, socketio.ErrorCode(err))
	waitClosed(t, gone, "the server seeing the request end")
}

func TestCancelClosesStream(t *testing.T) {
	gone := make(chan struct{})
	f := newFake(t, silent(gone, roleChunk(), contentChunk("Hel")))
	a, _, _ := newAnswerer(t, f, llm.Options{StallTimeout: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newChunks()
	done := make(chan error, 1)
	go func() {
		_, err := a.Answer(ctx, socketio.Question{Text: "q", Stream: true}, c)
		done <- err
	}()
	waitClosed(t, c.first, "the first chunk")
	cancel()
	waitClosed(t, gone, "the server seeing the request end")
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("Answer did not return after cancel")
	}
}

func TestDeadline(t *testing.T) {
	gone := make(chan struct{})
	f := newFake(t, silent(gone, roleChunk()))
	a, _, _ := newAnswerer(t, f, llm.Options{StallTimeout: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := a.Answer(ctx, socketio.Question{Text: "q"}, newChunks())
	assert.Equal(t, socketio.CodeTimeout, socketio.ErrorCode(err))
	assert.Contains(t, err.Error(), "in time")
	waitClosed(t, gone, "the server seeing the request end")
}

func TestChunkWriterError(t *testing.T) {
	gone := make(chan struct{})
	f := newFake(t, silent(gone, roleChunk(), contentChunk("a"), contentChunk("b")))
	a, _, _ := newAnswerer(t, f, llm.Options{StallTimeout: time.Hour})
	refused := errors.New("the task can take no more chunks")
	c := newChunks()
	c.failAt, c.fail = 2, refused
	_, err := a.Answer(context.Background(), socketio.Question{Text: "q", Stream: true}, c)
	assert.Same(t, refused, err)
	assert.Equal(t, []string{"a", "b"}, c.got())
	waitClosed(t, gone, "the server seeing the request end")
	assert.Len(t, f.requests(), 1)
}

func TestEmptyAnswer(t *testing.T) {
	f := newFake(t, openAIStream())
	a, _, _ := newAnswerer(t, f, llm.Options{MaxRetries: -1})
	_, err := a.Answer(context.Background(), socketio.Question{Text: "q"}, newChunks())
	assert.Equal(t, "answer_failed: the model returned an empty answer", fmt.Sprint(err))
}

func TestUnreachable(t *testing.T) {
	f := newFake(t, openAIStream("x"))
	a, logs, waits := newAnswerer(t, f, llm.Options{APIKey: testKey, MaxRetries: 2})
	f.srv.Close()
	_, err := a.Answer(context.Background(), socketio.Question{Text: "q"}, newChunks())
	assert.Equal(t, "answer_failed: the model server could not be reached", fmt.Sprint(err))
	assert.Len(t, *waits, 2)
	assert.NotContains(t, logs.String(), testKey)
}

func TestNew(t *testing.T) {
	tests := []struct {
		name string
		opts llm.Options
		want string
	}{
		{"no model", llm.Options{}, "llm: Options.Model is required"},
		{"blank model", llm.Options{Model: "  "}, "llm: Options.Model is required"},
		{"bad scheme", llm.Options{Model: "m", BaseURL: "ftp://user:" + testKey + "@host/"}, "llm: Options.BaseURL is not an http(s) URL"},
		{"no host", llm.Options{Model: "m", BaseURL: "http://"}, "llm: Options.BaseURL is not an http(s) URL"},
		{"defaults", llm.Options{Model: "m"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := llm.New(tt.opts)
			if tt.want == "" {
				require.NoError(t, err)
				assert.Equal(t, llm.DefaultTurns, a.HistoryTurns())
				return
			}
			assert.EqualError(t, err, tt.want)
			assert.Nil(t, a)
		})
	}
}

func TestNoEnvironmentKey(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", testKey)
	t.Setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/")
	f := newFake(t, openAIStream("x"))
	a, _, _ := newAnswerer(t, f, llm.Options{})
	_, err := a.Answer(context.Background(), socketio.Question{Text: "q"}, newChunks())
	require.NoError(t, err)
	assert.Empty(t, f.requests()[0].header.Get("Authorization"), "the SDK's environment is not read")
}

func TestSlowStreamIsNotStalled(t *testing.T) {
	// Ten deltas 50ms apart take longer than StallTimeout in all, but no
	// gap comes near it: each read pushes the stall timer back.
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		sendSSE(w, roleChunk())
		for i := 0; i < 10; i++ {
			time.Sleep(50 * time.Millisecond)
			sendSSE(w, contentChunk("x"))
		}
		sendSSE(w, finishChunk(nil), "[DONE]")
	})
	a, _, _ := newAnswerer(t, f, llm.Options{StallTimeout: 250 * time.Millisecond})
	ans, err := a.Answer(context.Background(), socketio.Question{Text: "q"}, newChunks())
	require.NoError(t, err)
	assert.Equal(t, strings.Repeat("x", 10), ans.Text)
}

func TestStallAfterWholeAnswer(t *testing.T) {
	// A server that sends the whole answer but never ends the response:
	// the answer stands.
	gone := make(chan struct{})
	f := newFake(t, silent(gone, roleChunk(), contentChunk("done"), finishChunk(usageObj(1, 1)), "[DONE]"))
	a, _, _ := newAnswerer(t, f, llm.Options{StallTimeout: 50 * time.Millisecond})
	ans, err := a.Answer(context.Background(), socketio.Question{Text: "q"}, newChunks())
	require.NoError(t, err)
	assert.Equal(t, "done", ans.Text)
	assert.Equal(t, &socketio.Usage{PromptTokens: 1, CompletionTokens: 1, TotalTokens: 2}, ans.Usage)
	waitClosed(t, gone, "the server seeing the request end")
}
