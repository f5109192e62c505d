package socketio_test

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/demokb"
)

// kbtLoad loads testdata/kb.json.
func kbtLoad(t testing.TB) *socketio.KnowledgeBase {
	t.Helper()
	f, err := os.Open("testdata/kb.json")
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	kb, err := socketio.LoadKnowledgeBase(f)
	require.NoError(t, err)
	return kb
}

func TestKnowledgeBaseMatch(t *testing.T) {
	kb := kbtLoad(t)
	tests := []struct {
		name  string
		query string
		want  string // matched question; "" for no match
	}{
		{"exact", "What is Socket.IO?", "What is Socket.IO?"},
		{"case and punctuation", "  WHAT IS SOCKET.IO  ", "What is Socket.IO?"},
		{"alias", "tell me about socket io", "What is Socket.IO?"},
		{"paraphrase", "how can I turn on streaming?", "How do I enable streaming answers?"},
		{"plural", "stream answer", "How do I enable streaming answers?"},
		{"keywords only", "cancel task", "How do I cancel a task?"},
		{"alias of another entry", "what's the rate limit", "How many questions can I ask per minute?"},
		{"redis", "what is redis used for", "What is Redis used for?"},
		{"chinese without spaces", "什么是socket.io", "什么是 Socket.IO？"},
		{"chinese reordered", "socket.io是什么？", "什么是 Socket.IO？"},
		{"chinese paraphrase", "流式回答怎么启用", "如何启用流式回答？"},
		{"full-width forms (NFKC)", "ｗｈａｔ　ｉｓ Ｓｏｃｋｅｔ．ＩＯ？", "What is Socket.IO?"},
		{"full-width words (NFKC)", "ｒｅｄｉｓ ｕｓｅｄ ｆｏｒ", "What is Redis used for?"},
		{"unknown topic", "what is kubernetes", ""},
		{"unrelated", "how do I bake bread", ""},
		{"unrelated chinese", "今天天气怎么样", ""},
		{"stop words only", "is it the", ""},
		{"punctuation only", "???", ""},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, score, ok := kb.Match(tt.query)
			if tt.want == "" {
				assert.False(t, ok, "matched %q with score %.3f", e.Question, score)
				assert.Equal(t, socketio.Entry{}, e)
				assert.Less(t, score, socketio.DefaultMinScore)
				return
			}
			require.True(t, ok, "no match, best score %.3f", score)
			assert.Equal(t, tt.want, e.Question)
			assert.GreaterOrEqual(t, score, socketio.DefaultMinScore)
			assert.LessOrEqual(t, score, 1.0)
		})
	}
}

// TestKnowledgeBaseCompatibilityForms: questions and phrasings are
// compared after NFKC normalisation, both ways, so full-width letters, the
// ideographic space and ligatures match their plain forms.
func TestKnowledgeBaseCompatibilityForms(t *testing.T) {
	kb, err := socketio.NewKnowledgeBase([]socketio.Entry{
		{Question: "What is WebSocket?", Answer: "a protocol"},
		{Question: "ｆｉｌｅ ｕｐｌｏａｄｓ", Answer: "full-width in the base"},
	})
	require.NoError(t, err)
	for query, want := range map[string]string{
		"ｗｈａｔ　ｉｓ ＷｅｂＳｏｃｋｅｔ？": "What is WebSocket?",
		"websocket":  "What is WebSocket?",
		"ﬁle upload": "ｆｉｌｅ ｕｐｌｏａｄｓ",
	} {
		e, score, ok := kb.Match(query)
		require.True(t, ok, "%q: best score %.3f", query, score)
		assert.Equal(t, want, e.Question, query)
		assert.InDelta(t, 1.0, score, 1e-9, query)
	}
	_, err = socketio.NewKnowledgeBase([]socketio.Entry{
		{Question: "What is WebSocket?", Answer: "a"},
		{Question: "ＷＨＡＴ ＩＳ ＷＥＢＳＯＣＫＥＴ？", Answer: "b"},
	})
	assert.ErrorContains(t, err, "same question", "the duplicate check normalises too")
}

func TestKnowledgeBaseMatchEveryQuestion(t *testing.T) {
	demo, err := demokb.Load()
	require.NoError(t, err)
	for name, kb := range map[string]*socketio.KnowledgeBase{"testdata": kbtLoad(t), "demokb": demo} {
		t.Run(name, func(t *testing.T) {
			for _, q := range kb.Questions() {
				e, score, ok := kb.Match(q)
				require.True(t, ok, q)
				assert.Equal(t, q, e.Question)
				assert.InDelta(t, 1.0, score, 1e-9, q)
			}
		})
	}
}

func TestKnowledgeBaseMatchMin(t *testing.T) {
	kb := kbtLoad(t)
	const query = "stream answer please"
	_, best, ok := kb.Match(query)
	require.True(t, ok)
	require.Less(t, best, 1.0, "a partial match")

	tests := []struct {
		name     string
		minScore float64
		wantOK   bool
	}{
		{"below best", best / 2, true},
		{"at best", best, true},
		{"above best", best * 1.01, false},
		{"exact only", 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, score, ok := kb.MatchMin(query, tt.minScore)
			assert.Equal(t, tt.wantOK, ok)
			assert.Equal(t, best, score)
			assert.Equal(t, tt.wantOK, e.Question != "")
		})
	}
}

func TestKnowledgeBaseMatchTieBreak(t *testing.T) {
	// Different questions with the same terms score the same; the entry
	// given first wins, whatever the order.
	a := socketio.Entry{Question: "What is Go?", Answer: "A"}
	b := socketio.Entry{Question: "what is go!!", Answer: "B"}
	tests := []struct {
		name    string
		entries []socketio.Entry
		want    string
	}{
		{"a first", []socketio.Entry{a, b}, "A"},
		{"b first", []socketio.Entry{b, a}, "B"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kb, err := socketio.NewKnowledgeBase(tt.entries)
			require.NoError(t, err)
			for range 20 {
				e, _, ok := kb.Match("go")
				require.True(t, ok)
				require.Equal(t, tt.want, e.Answer)
			}
		})
	}
}

func TestNewKnowledgeBase(t *testing.T) {
	tests := []struct {
		name    string
		entries []socketio.Entry
		wantErr string // substring; "" for success
	}{
		{"empty corpus", nil, ""},
		{"valid", []socketio.Entry{{Question: "q one", Answer: "a"}, {Question: "q two", Answer: "b"}}, ""},
		{"empty question", []socketio.Entry{{Question: "", Answer: "a"}}, "entry 0: empty question"},
		{"blank question", []socketio.Entry{{Question: "ok", Answer: "a"}, {Question: " \t", Answer: "a"}}, "entry 1: empty question"},
		{"blank answer", []socketio.Entry{{Question: "q", Answer: "\n"}}, "empty answer"},
		{"duplicate question", []socketio.Entry{{Question: "What is Go?", Answer: "a"}, {Question: "what is  GO?", Answer: "b"}}, "same question as entry 0"},
		{"no searchable words", []socketio.Entry{{Question: "Is it?", Answer: "a"}}, "no searchable words"},
		{"alias of stop words only", []socketio.Entry{{Question: "Go?", Answer: "a", Aliases: []string{"is it"}}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kb, err := socketio.NewKnowledgeBase(tt.entries)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				assert.Nil(t, kb)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, len(tt.entries), kb.Len())
			_, _, ok := kb.Match("nothing here")
			assert.False(t, ok)
		})
	}
}

func TestLoadKnowledgeBase(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		wantLen int
		wantErr string // substring; "" for success
	}{
		{"empty array", `[]`, 0, ""},
		{"entries", `[{"question":"q","answer":"a","source":"s","aliases":["x"]},{"question":"r","answer":"b"}]`, 2, ""},
		{"syntax error", `[{"question":"q",}]`, 0, "knowledge base JSON at byte"},
		{"truncated", `[{"question":"q"`, 0, "knowledge base JSON"},
		{"not an array", `{"question":"q","answer":"a"}`, 0, "want an array"},
		{"wrong field type", `[{"question":1,"answer":"a"}]`, 0, "want an array"},
		{"unknown field", `[{"question":"q","answr":"a"}]`, 0, `unknown field "answr"`},
		{"trailing data", `[] []`, 0, "after the array"},
		{"invalid entry", `[{"question":"q"}]`, 0, "empty answer"},
		{"empty input", ``, 0, "knowledge base JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kb, err := socketio.LoadKnowledgeBase(strings.NewReader(tt.json))
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantLen, kb.Len())
		})
	}
}

func TestKnowledgeBaseQuestions(t *testing.T) {
	kb := kbtLoad(t)
	qs := kb.Questions()
	require.Len(t, qs, kb.Len())
	assert.Equal(t, "What is Socket.IO?", qs[0])
	assert.Contains(t, qs, "如何启用流式回答？")
	assert.NotContains(t, qs, "Explain Socket.IO", "aliases are not questions")

	qs[0] = "changed"
	assert.Equal(t, "What is Socket.IO?", kb.Questions()[0], "Questions returns a copy")
}

func TestKnowledgeBaseImmutable(t *testing.T) {
	entries := []socketio.Entry{{Question: "What is Go?", Answer: "A language.", Aliases: []string{"golang"}}}
	kb, err := socketio.NewKnowledgeBase(entries)
	require.NoError(t, err)

	entries[0].Answer = "changed"
	entries[0].Aliases[0] = "changed"
	e, _, ok := kb.Match("golang")
	require.True(t, ok, "the alias was copied")
	assert.Equal(t, "A language.", e.Answer)

	e.Aliases[0] = "changed again"
	e, _, ok = kb.Match("golang")
	require.True(t, ok)
	assert.Equal(t, []string{"golang"}, e.Aliases, "Match returns a copy")
}

func TestKnowledgeBaseConcurrentMatch(t *testing.T) {
	kb := kbtLoad(t)
	queries := []string{"what is socket.io", "流式回答", "cancel task", "what is kubernetes"}
	want := make([]string, len(queries))
	for i, q := range queries {
		e, _, _ := kb.Match(q)
		want[i] = e.Question
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				k := (g + i) % len(queries)
				if e, _, _ := kb.Match(queries[k]); e.Question != want[k] {
					errs <- fmt.Errorf("Match(%q) = %q, want %q", queries[k], e.Question, want[k])
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

func TestDemoKnowledgeBase(t *testing.T) {
	kb, err := demokb.Load()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, kb.Len(), 20)
	tests := []struct {
		query string
		want  string
	}{
		{"what is socket.io", "What is Socket.IO?"},
		{"socket.io vs websocket", "What is the difference between Socket.IO and WebSocket?"},
		{"how do I stream the answer", "How do I enable streaming answers?"},
		{"什么是socket.io", "什么是 Socket.IO？"},
		{"怎么开启流式回答", "如何启用流式回答？"},
		{"what is a goroutine", "What is a goroutine?"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			e, score, ok := kb.Match(tt.query)
			require.True(t, ok, "best score %.3f", score)
			assert.Equal(t, tt.want, e.Question)
			assert.NotEmpty(t, e.Source)
		})
	}
}

func BenchmarkKnowledgeBaseMatch(b *testing.B) {
	kb, err := demokb.Load()
	require.NoError(b, err)
	for _, query := range []string{
		"how can I turn on streaming answers?",
		"流式回答怎么开启",
		"what is kubernetes",
	} {
		b.Run(query, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				kb.Match(query)
			}
		})
	}
}

func ExampleKnowledgeBase_Match_chinese() {
	kb, err := socketio.NewKnowledgeBase([]socketio.Entry{
		{Question: "What is Socket.IO?", Answer: "A real-time library.", Source: "docs/socket.io"},
		{Question: "如何启用流式回答？", Answer: "设置 \"stream\": true。", Source: "docs/streaming"},
	})
	if err != nil {
		panic(err)
	}
	for _, q := range []string{"socket.io?", "流式回答怎么启用", "how do I bake bread"} {
		e, _, ok := kb.Match(q)
		fmt.Printf("%s -> %v %q\n", q, ok, e.Question)
	}
	// Output:
	// socket.io? -> true "What is Socket.IO?"
	// 流式回答怎么启用 -> true "如何启用流式回答？"
	// how do I bake bread -> false ""
}

// TestKnowledgeBaseInvalidUTF8 builds and queries a base whose texts hold
// bytes that are not UTF-8 (as one read from a file may): they compare as
// U+FFFD, and the rest of the text still matches.
func TestKnowledgeBaseInvalidUTF8(t *testing.T) {
	kb, err := socketio.NewKnowledgeBase([]socketio.Entry{
		{Question: "What is \xff\xfe WebSocket?", Answer: "a protocol"},
	})
	require.NoError(t, err)
	e, _, ok := kb.Match("what is websocket \xc3")
	require.True(t, ok)
	assert.Equal(t, "What is \xff\xfe WebSocket?", e.Question, "stored as given")
}
