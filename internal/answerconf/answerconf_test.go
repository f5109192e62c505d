package answerconf_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/answerconf"
	"github.com/qaplatform/socketio/llm"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const key = "sk-answerconf-SECRET-42"

func TestFromEnv(t *testing.T) {
	fallback := socketio.AnswererFunc(func(context.Context, socketio.Question, socketio.ChunkWriter) (socketio.Answer, error) {
		return socketio.Answer{Text: "fallback"}, nil
	})
	tests := []struct {
		name      string
		env       map[string]string
		wantLLM   bool
		wantDesc  string
		wantErr   string
		wantTurns int
	}{
		{name: "nothing set", env: nil,
			wantDesc: "built-in answerer (set QA_LLM_BASE_URL or OPENAI_API_KEY for a model)"},
		{name: "only a model name is not enough", env: map[string]string{"QA_LLM_MODEL": "m", "QA_LLM_API_KEY": key},
			wantDesc: "built-in answerer (set QA_LLM_BASE_URL or OPENAI_API_KEY for a model)"},
		{name: "OpenAI key only", env: map[string]string{"OPENAI_API_KEY": key, "QA_LLM_MODEL": "gpt-4o-mini"},
			wantLLM: true, wantDesc: `model "gpt-4o-mini" at https://api.openai.com/v1/ (API key set)`, wantTurns: 10},
		{name: "local server, no key", env: map[string]string{"QA_LLM_BASE_URL": "http://127.0.0.1:8080/v1", "QA_LLM_MODEL": "qwen"},
			wantLLM: true, wantDesc: `model "qwen" at http://127.0.0.1:8080/v1 (no API key)`, wantTurns: 10},
		{name: "every option", env: map[string]string{
			"QA_LLM_BASE_URL": "https://user:" + key + "@llm.example/v1?api_key=" + key, "QA_LLM_API_KEY": key, "QA_LLM_MODEL": "m",
			"QA_LLM_SYSTEM_PROMPT": "Be brief.", "QA_LLM_TEMPERATURE": "0.3", "QA_LLM_MAX_TOKENS": "256",
			"QA_LLM_TURNS": "4", "QA_LLM_STALL_TIMEOUT": "45s",
		}, wantLLM: true, wantDesc: `model "m" at https://llm.example/v1 (API key set)`, wantTurns: 4},
		{name: "no turns", env: map[string]string{"QA_LLM_BASE_URL": "http://h/v1", "QA_LLM_MODEL": "m", "QA_LLM_TURNS": "0"},
			wantLLM: true, wantDesc: `model "m" at http://h/v1 (no API key)`, wantTurns: 0},
		{name: "model missing", env: map[string]string{"OPENAI_API_KEY": key},
			wantErr: "answerconf: QA_LLM_MODEL is required with QA_LLM_BASE_URL or OPENAI_API_KEY"},
		{name: "bad temperature", env: map[string]string{"OPENAI_API_KEY": key, "QA_LLM_MODEL": "m", "QA_LLM_TEMPERATURE": "warm"},
			wantErr: `answerconf: QA_LLM_TEMPERATURE="warm" is not a number ≥ 0`},
		{name: "negative temperature", env: map[string]string{"OPENAI_API_KEY": key, "QA_LLM_MODEL": "m", "QA_LLM_TEMPERATURE": "-1"},
			wantErr: `answerconf: QA_LLM_TEMPERATURE="-1" is not a number ≥ 0`},
		{name: "bad max tokens", env: map[string]string{"OPENAI_API_KEY": key, "QA_LLM_MODEL": "m", "QA_LLM_MAX_TOKENS": "0"},
			wantErr: `answerconf: QA_LLM_MAX_TOKENS="0" is not an integer > 0`},
		{name: "bad turns", env: map[string]string{"OPENAI_API_KEY": key, "QA_LLM_MODEL": "m", "QA_LLM_TURNS": "-2"},
			wantErr: `answerconf: QA_LLM_TURNS="-2" is not an integer ≥ 0`},
		{name: "bad stall timeout", env: map[string]string{"OPENAI_API_KEY": key, "QA_LLM_MODEL": "m", "QA_LLM_STALL_TIMEOUT": "30"},
			wantErr: `answerconf: QA_LLM_STALL_TIMEOUT="30" is not a positive duration such as 30s`},
		{name: "bad base URL", env: map[string]string{"QA_LLM_BASE_URL": "ftp://" + key + "@h", "QA_LLM_MODEL": "m"},
			wantErr: "answerconf: llm: Options.BaseURL is not an http(s) URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string { return tt.env[k] }
			a, desc, err := answerconf.FromEnv(getenv, fallback, slog.New(slog.DiscardHandler))
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				assert.NotContains(t, err.Error(), key)
				assert.Nil(t, a)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantDesc, desc)
			assert.NotContains(t, desc, key)
			m, isLLM := a.(*llm.Answerer)
			require.Equal(t, tt.wantLLM, isLLM, "answerer %T", a)
			if !isLLM {
				ans, err := a.Answer(t.Context(), socketio.Question{}, nil)
				require.NoError(t, err)
				assert.Equal(t, "fallback", ans.Text)
				return
			}
			assert.Equal(t, tt.wantTurns, m.HistoryTurns())
		})
	}
}

// TestFromEnvRequest: the variables reach the model request, and
// QA_LLM_API_KEY wins over OPENAI_API_KEY.
func TestFromEnvRequest(t *testing.T) {
	var (
		mu   sync.Mutex
		auth string
		body map[string]any
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = r.Header.Get("Authorization")
		_ = json.NewDecoder(r.Body).Decode(&body)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range []string{
			`{"choices":[{"index":0,"delta":{"content":"hi"}}]}`,
			`{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
			`[DONE]`,
		} {
			fmt.Fprintf(w, "data: %s\n\n", ev)
		}
	}))
	defer srv.Close()
	env := map[string]string{
		"QA_LLM_BASE_URL": srv.URL + "/v1", "OPENAI_API_KEY": "sk-openai", "QA_LLM_API_KEY": key,
		"QA_LLM_MODEL": "m1", "QA_LLM_SYSTEM_PROMPT": "Be brief.", "QA_LLM_TEMPERATURE": "0.5",
		"QA_LLM_MAX_TOKENS": "77", "QA_LLM_STALL_TIMEOUT": "1m",
	}
	a, _, err := answerconf.FromEnv(func(k string) string { return env[k] }, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	ans, err := a.Answer(t.Context(), socketio.Question{Text: "q"}, nil)
	require.NoError(t, err)
	assert.Equal(t, "hi", ans.Text)
	srv.CloseClientConnections()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()

	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, "Bearer "+key, auth)
	assert.Equal(t, "m1", body["model"])
	assert.Equal(t, 0.5, body["temperature"])
	assert.Equal(t, 77.0, body["max_tokens"])
	assert.Equal(t, []any{
		map[string]any{"role": "system", "content": "Be brief."},
		map[string]any{"role": "user", "content": "q"},
	}, body["messages"])
}
