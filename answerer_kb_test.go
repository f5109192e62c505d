package socketio_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio"
)

// kbtChunks records the deltas written to it. When failAt > 0, the
// failAt-th write returns failErr; when onWrite is set it runs after each
// recorded write.
type kbtChunks struct {
	mu      sync.Mutex
	deltas  []string
	failAt  int
	failErr error
	onWrite func(n int)
}

func (c *kbtChunks) WriteChunk(delta string) error {
	c.mu.Lock()
	n := len(c.deltas) + 1
	if c.failAt > 0 && n == c.failAt {
		c.mu.Unlock()
		return c.failErr
	}
	c.deltas = append(c.deltas, delta)
	c.mu.Unlock()
	if c.onWrite != nil {
		c.onWrite(n)
	}
	return nil
}

func (c *kbtChunks) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.deltas...)
}

// kbtAnswerer builds an answerer over a one-entry corpus answering text.
func kbtAnswerer(t *testing.T, text string, opts socketio.KBAnswererOptions) socketio.Answerer {
	t.Helper()
	kb, err := socketio.NewKnowledgeBase([]socketio.Entry{{Question: "test question", Answer: text}})
	require.NoError(t, err)
	return kb.Answerer(opts)
}

func TestKnowledgeBaseAnswerer(t *testing.T) {
	kb := kbtLoad(t)
	tests := []struct {
		name        string
		opts        socketio.KBAnswererOptions
		question    string
		stream      bool
		wantPrefix  string
		wantSources []string
	}{
		{
			name:        "match",
			question:    "What is Socket.IO?",
			wantPrefix:  "Socket.IO is a library",
			wantSources: []string{"docs/socket.io"},
		},
		{
			name:        "match streamed",
			question:    "how to stream answers",
			stream:      true,
			wantPrefix:  "Send ask_question with",
			wantSources: []string{"docs/protocol#streaming"},
		},
		{
			name:        "no source cites the question",
			question:    "rate limit",
			wantPrefix:  "By default a session",
			wantSources: []string{"How many questions can I ask per minute?"},
		},
		{
			name:        "chinese streamed",
			question:    "什么是socket.io",
			stream:      true,
			wantPrefix:  "Socket.IO 是一个",
			wantSources: []string{"docs/socket.io#zh"},
		},
		{
			name:       "fallback",
			question:   "how do I bake bread",
			wantPrefix: socketio.DefaultFallback,
		},
		{
			name:       "fallback streamed",
			question:   "how do I bake bread",
			stream:     true,
			wantPrefix: socketio.DefaultFallback,
		},
		{
			name:       "custom fallback",
			opts:       socketio.KBAnswererOptions{Fallback: "No idea."},
			question:   "what is kubernetes",
			wantPrefix: "No idea.",
		},
		{
			// "stream answer please" scores about 0.65 against this corpus.
			name:       "score under min score",
			opts:       socketio.KBAnswererOptions{MinScore: 0.9},
			question:   "stream answer please",
			wantPrefix: socketio.DefaultFallback,
		},
		{
			name:        "score over min score",
			opts:        socketio.KBAnswererOptions{MinScore: 0.5},
			question:    "stream answer please",
			wantPrefix:  "Send ask_question with",
			wantSources: []string{"docs/protocol#streaming"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chunks := &kbtChunks{}
			a := kb.Answerer(tt.opts)
			ans, err := a.Answer(t.Context(), socketio.Question{TaskID: "t1", Text: tt.question, Stream: tt.stream}, chunks)
			require.NoError(t, err, "a fallback is a completed answer too")
			assert.True(t, strings.HasPrefix(ans.Text, tt.wantPrefix), "answer %q", ans.Text)
			assert.Equal(t, tt.wantSources, ans.Sources)
			if tt.stream {
				assert.GreaterOrEqual(t, len(chunks.got()), 2)
				assert.Equal(t, ans.Text, strings.Join(chunks.got(), ""))
			} else {
				assert.Empty(t, chunks.got(), "nothing streamed without q.Stream")
			}
		})
	}
}

func TestKnowledgeBaseAnswererChunks(t *testing.T) {
	long := "Socket.IO enables real-time, bidirectional and event-based communication between the browser and the server."
	tests := []struct {
		name       string
		text       string
		chunkRunes int
		wantCount  int // 0: only check at least two
	}{
		{"default size", long, 0, 0},
		{"one rune chunks", "héllo wörld", 1, 11},
		{"two runes", "ab", 0, 2},
		{"two chinese runes", "你好", 0, 2},
		{"one rune", "好", 0, 1},
		{"shorter than a chunk", "Hello there", 0, 0},
		{"chinese", "Socket.IO 是一个在浏览器与服务器之间实现实时、双向、基于事件通信的库。", 0, 0},
		{"chinese small chunks", "实时双向通信", 4, 0},
		{"one long word", strings.Repeat("x", 50), 16, 4},
		{"emoji", "👋🏽 hello 🌍 world 🎉🎉🎉", 3, 0},
		{"huge chunk size", long, 1 << 20, 0},
		{"leading and trailing space", "  spaced out  ", 4, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chunks := &kbtChunks{}
			a := kbtAnswerer(t, tt.text, socketio.KBAnswererOptions{ChunkRunes: tt.chunkRunes})
			ans, err := a.Answer(t.Context(), socketio.Question{Text: "test question", Stream: true}, chunks)
			require.NoError(t, err)
			require.Equal(t, tt.text, ans.Text)

			got := chunks.got()
			assert.Equal(t, tt.text, strings.Join(got, ""), "deltas joined are the answer")
			if tt.wantCount > 0 {
				assert.Len(t, got, tt.wantCount)
			} else {
				assert.GreaterOrEqual(t, len(got), 2)
			}
			size := tt.chunkRunes
			if size <= 0 {
				size = 16
			}
			for i, d := range got {
				assert.NotEmpty(t, d, "chunk %d", i)
				assert.True(t, utf8.ValidString(d), "chunk %d %q cut inside a rune", i, d)
				assert.LessOrEqual(t, utf8.RuneCountInString(d), size, "chunk %d %q", i, d)
			}
		})
	}
}

func TestKnowledgeBaseAnswererChunksOnWords(t *testing.T) {
	text := "the quick brown fox jumps over the lazy dog and keeps running far away"
	chunks := &kbtChunks{}
	a := kbtAnswerer(t, text, socketio.KBAnswererOptions{ChunkRunes: 16})
	_, err := a.Answer(t.Context(), socketio.Question{Text: "test question", Stream: true}, chunks)
	require.NoError(t, err)
	got := chunks.got()
	require.Greater(t, len(got), 2)
	for _, d := range got[:len(got)-1] {
		assert.True(t, strings.HasSuffix(d, " "), "chunk %q should end on a word boundary", d)
	}
}

func TestKnowledgeBaseAnswererCancel(t *testing.T) {
	tests := []struct {
		name       string
		stream     bool
		chunkDelay time.Duration
		// cancelAfter cancels ctx once that many chunks are written; -1
		// cancels before Answer is called, 0 while it waits for chunk one.
		cancelAfter int
		wantChunks  int
	}{
		{"cancelled before", false, 0, -1, 0},
		{"cancelled before streaming", true, 0, -1, 0},
		{"cancelled in first delay", true, time.Hour, 0, 0},
		{"cancelled after first chunk", true, time.Millisecond, 1, 1},
		{"cancelled after second chunk without delay", true, 0, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			chunks := &kbtChunks{onWrite: func(n int) {
				if n == tt.cancelAfter {
					cancel()
				}
			}}
			kb := kbtLoad(t)
			a := kb.Answerer(socketio.KBAnswererOptions{ChunkDelay: tt.chunkDelay, ChunkRunes: 4})
			if tt.cancelAfter < 0 {
				cancel()
			}
			type result struct {
				ans socketio.Answer
				err error
			}
			done := make(chan result, 1)
			go func() {
				ans, err := a.Answer(ctx, socketio.Question{Text: "What is Socket.IO?", Stream: tt.stream}, chunks)
				done <- result{ans, err}
			}()
			if tt.cancelAfter == 0 {
				cancel() // Answer is waiting out an hour-long delay
			}
			select {
			case r := <-done:
				require.ErrorIs(t, r.err, context.Canceled)
				assert.Equal(t, socketio.Answer{}, r.ans)
			case <-time.After(10 * time.Second):
				t.Fatal("Answer did not return after ctx was cancelled")
			}
			assert.Len(t, chunks.got(), tt.wantChunks, "no chunk after cancellation")
		})
	}
}

func TestKnowledgeBaseAnswererDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
	defer cancel()
	a := kbtLoad(t).Answerer(socketio.KBAnswererOptions{ChunkDelay: time.Hour})
	chunks := &kbtChunks{}
	_, err := a.Answer(ctx, socketio.Question{Text: "What is Go?", Stream: true}, chunks)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Empty(t, chunks.got())
}

func TestKnowledgeBaseAnswererWriteError(t *testing.T) {
	errGone := errors.New("task gone")
	tests := []struct {
		name   string
		failAt int
	}{
		{"first chunk", 1},
		{"third chunk", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chunks := &kbtChunks{failAt: tt.failAt, failErr: errGone}
			a := kbtLoad(t).Answerer(socketio.KBAnswererOptions{ChunkRunes: 4})
			ans, err := a.Answer(t.Context(), socketio.Question{Text: "What is Socket.IO?", Stream: true}, chunks)
			require.ErrorIs(t, err, errGone)
			assert.Equal(t, socketio.Answer{}, ans)
			assert.Len(t, chunks.got(), tt.failAt-1, "no write after the failed one")
		})
	}
}

func TestKnowledgeBaseAnswererConcurrent(t *testing.T) {
	a := kbtLoad(t).Answerer(socketio.KBAnswererOptions{ChunkRunes: 8})
	questions := []string{"What is Socket.IO?", "如何启用流式回答？", "how do I bake bread"}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			chunks := &kbtChunks{}
			q := socketio.Question{Text: questions[g%len(questions)], Stream: g%2 == 0}
			ans, err := a.Answer(context.Background(), q, chunks)
			if err != nil {
				errs <- err
				return
			}
			if q.Stream && strings.Join(chunks.got(), "") != ans.Text {
				errs <- errors.New("deltas do not join to the answer")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// kbtPrintChunks prints each delta it is given.
type kbtPrintChunks struct{}

func (kbtPrintChunks) WriteChunk(delta string) error {
	fmt.Printf("chunk %q\n", delta)
	return nil
}

func ExampleKnowledgeBase_Answerer_streaming() {
	kb, err := socketio.NewKnowledgeBase([]socketio.Entry{{
		Question: "What is Socket.IO?",
		Answer:   "Socket.IO is a library for real-time communication.",
		Source:   "docs/socket.io",
	}})
	if err != nil {
		panic(err)
	}
	a := kb.Answerer(socketio.KBAnswererOptions{ChunkRunes: 20})
	ans, err := a.Answer(context.Background(), socketio.Question{Text: "what is socket.io", Stream: true}, kbtPrintChunks{})
	if err != nil {
		panic(err)
	}
	fmt.Println(ans.Sources)
	// Output:
	// chunk "Socket.IO is a "
	// chunk "library for "
	// chunk "real-time "
	// chunk "communication."
	// [docs/socket.io]
}
