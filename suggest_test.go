package socketio_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio"
)

// kbtSuggestKB is the corpus of the suggestion tests.
func kbtSuggestKB(t *testing.T) *socketio.KnowledgeBase {
	t.Helper()
	var entries []socketio.Entry
	for _, q := range []string{
		"What is Socket.IO?",
		"How do I enable streaming answers?",
		"How do I cancel a task?",
		"Is streaming supported?",
		"Why use Redis?",
		"Été à Paris?",
		"什么是 Socket.IO？",
		"如何启用流式回答？",
	} {
		entries = append(entries, socketio.Entry{Question: q, Answer: "answer to " + q})
	}
	kb, err := socketio.NewKnowledgeBase(entries)
	require.NoError(t, err)
	return kb
}

// kbtPopular returns a popular function answering qs, most asked first.
func kbtPopular(qs ...string) func(context.Context, int) ([]string, error) {
	return func(_ context.Context, limit int) ([]string, error) {
		return qs[:min(limit, len(qs))], nil
	}
}

func TestSuggester(t *testing.T) {
	s := socketio.NewSuggester(kbtSuggestKB(t), kbtPopular(
		"What is socket.io used for?",
		"how do I cancel a task?", // the KB's question, in other case
		"What is a room?",
		"  ", // blank entries are skipped
	))
	tests := []struct {
		name  string
		query string
		limit int
		want  []string
	}{
		{"prefix, popular first then shorter", "what is", 10,
			[]string{"What is a room?", "What is socket.io used for?", "What is Socket.IO?"}},
		{"case-insensitive prefix", "WHAT IS S", 10,
			[]string{"What is socket.io used for?", "What is Socket.IO?"}},
		{"case-insensitive beyond ASCII", "ÉTÉ", 10, []string{"Été à Paris?"}},
		{"white space collapsed", "  what   is  a ", 10, []string{"What is a room?"}},
		{"word prefix, shorter first", "stream", 10,
			[]string{"Is streaming supported?", "How do I enable streaming answers?"}},
		{"word after punctuation", "io", 10,
			[]string{"What is socket.io used for?", "什么是 Socket.IO？", "What is Socket.IO?"}},
		{"prefix rank before word rank", "is", 10,
			[]string{"Is streaming supported?", "What is a room?", "What is socket.io used for?", "What is Socket.IO?"}},
		{"not inside a word", "ocket", 10, []string{}},
		{"every word, deduplicated", "cancel task", 10, []string{"how do I cancel a task?"}},
		{"every word, prefixes in any order", "answ enab", 10, []string{"How do I enable streaming answers?"}},
		{"stop words ignored for every word", "the redis", 10, []string{"Why use Redis?"}},
		{"a missing word", "cancel room", 10, []string{}},
		{"chinese prefix", "什么", 10, []string{"什么是 Socket.IO？"}},
		{"chinese substring", "流式", 10, []string{"如何启用流式回答？"}},
		{"chinese bigrams", "启用 回答", 10, []string{"如何启用流式回答？"}},
		{"chinese single character", "答", 10, []string{"如何启用流式回答？"}},
		{"chinese and latin", "socket 是", 10, []string{"什么是 Socket.IO？"}},
		{"chinese no match", "天气", 10, []string{}},
		{"full-width query (NFKC)", "ＷＨＡＴ　ｉｓ　Ｓ", 10,
			[]string{"What is socket.io used for?", "What is Socket.IO?"}},
		{"limit", "what is", 2, []string{"What is a room?", "What is socket.io used for?"}},
		{"limit one", "how do i", 1, []string{"how do I cancel a task?"}},
		{"zero limit", "what", 0, []string{}},
		{"no match", "kubernetes", 5, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Suggest(t.Context(), tt.query, tt.limit)
			require.NoError(t, err)
			require.NotNil(t, got, "an empty result is an empty slice")
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestSuggesterSources(t *testing.T) {
	kb := kbtSuggestKB(t)
	tests := []struct {
		name    string
		kb      *socketio.KnowledgeBase
		popular func(context.Context, int) ([]string, error)
		query   string
		want    []string
	}{
		{"knowledge base only", kb, nil, "how do", []string{"How do I cancel a task?", "How do I enable streaming answers?"}},
		{"popular only", nil, kbtPopular("How do rooms work?"), "how do", []string{"How do rooms work?"}},
		{"neither", nil, nil, "how do", []string{}},
		{"popular deduplicated", nil, kbtPopular("How do rooms work?", "HOW DO ROOMS WORK?"), "how", []string{"How do rooms work?"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := socketio.NewSuggester(tt.kb, tt.popular).Suggest(t.Context(), tt.query, 5)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestSuggesterPopularLimit(t *testing.T) {
	var asked int
	popular := func(_ context.Context, limit int) ([]string, error) {
		asked = limit
		return nil, nil
	}
	_, err := socketio.NewSuggester(nil, popular).Suggest(t.Context(), "what", 5)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, asked, 5, "popular is asked for enough candidates to filter")
}

func TestSuggesterErrors(t *testing.T) {
	errDown := errors.New("redis down")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		popular func(context.Context, int) ([]string, error)
		wantErr error
	}{
		{"popular fails", context.Background(), func(context.Context, int) ([]string, error) { return nil, errDown }, errDown},
		{"popular sees ctx cancelled", context.Background(), func(context.Context, int) ([]string, error) { return nil, context.Canceled }, context.Canceled},
		{"ctx cancelled", cancelled, kbtPopular("What is a room?"), context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := socketio.NewSuggester(kbtSuggestKB(t), tt.popular).Suggest(tt.ctx, "what", 5)
			require.ErrorIs(t, err, tt.wantErr)
			assert.Nil(t, got)
		})
	}
}

func TestSuggesterConcurrent(t *testing.T) {
	s := socketio.NewSuggester(kbtSuggestKB(t), kbtPopular("What is a room?"))
	want, err := s.Suggest(t.Context(), "what", 5)
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				got, err := s.Suggest(context.Background(), "what", 5)
				if err != nil || len(got) != len(want) {
					errs <- errors.New("concurrent Suggest gave a different result")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func ExampleNewSuggester_popular() {
	kb, err := socketio.NewKnowledgeBase([]socketio.Entry{
		{Question: "How do I enable streaming answers?", Answer: "Send \"stream\": true."},
		{Question: "How do I cancel a task?", Answer: "Send cancel_task."},
	})
	if err != nil {
		panic(err)
	}
	// Storage.PopularQuestions has this shape.
	popular := func(ctx context.Context, limit int) ([]string, error) {
		return []string{"How do rooms work?"}, nil
	}
	s := socketio.NewSuggester(kb, popular)
	suggestions, err := s.Suggest(context.Background(), "how do", 5)
	if err != nil {
		panic(err)
	}
	for _, q := range suggestions {
		fmt.Println(q)
	}
	// Output:
	// How do rooms work?
	// How do I cancel a task?
	// How do I enable streaming answers?
}
