// Package answerconf chooses the Answerer of the ready-made binaries
// (cmd/qa-server, cmd/qa-worker) from their environment.
package answerconf

import (
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/llm"
)

// The environment variables FromEnv reads.
const (
	EnvBaseURL      = "QA_LLM_BASE_URL"
	EnvOpenAIKey    = "OPENAI_API_KEY"
	EnvAPIKey       = "QA_LLM_API_KEY"
	EnvModel        = "QA_LLM_MODEL"
	EnvSystemPrompt = "QA_LLM_SYSTEM_PROMPT"
	EnvTemperature  = "QA_LLM_TEMPERATURE"
	EnvMaxTokens    = "QA_LLM_MAX_TOKENS"
	EnvTurns        = "QA_LLM_TURNS"
	EnvStallTimeout = "QA_LLM_STALL_TIMEOUT"
)

// FromEnv returns a model Answerer (package llm) when QA_LLM_BASE_URL or
// OPENAI_API_KEY is set, and fallback otherwise. desc says which, for the
// log; it never holds the API key.
//
// With a model: the server is QA_LLM_BASE_URL (default: the OpenAI API);
// the key is QA_LLM_API_KEY, else OPENAI_API_KEY (none: no Authorization
// header); QA_LLM_MODEL is required. Optional: QA_LLM_SYSTEM_PROMPT,
// QA_LLM_TEMPERATURE (a number ≥ 0), QA_LLM_MAX_TOKENS (an integer > 0),
// QA_LLM_TURNS (earlier turns sent with a question, an integer ≥ 0; 0
// sends none; default 10) and QA_LLM_STALL_TIMEOUT (a Go duration such as
// "45s"; default 30s). A value that does not parse is an error that names
// the variable.
func FromEnv(getenv func(string) string, fallback socketio.Answerer, logger *slog.Logger) (a socketio.Answerer, desc string, err error) {
	get := func(k string) string { return strings.TrimSpace(getenv(k)) }
	base, openAIKey := get(EnvBaseURL), get(EnvOpenAIKey)
	if base == "" && openAIKey == "" {
		return fallback, "built-in answerer (set " + EnvBaseURL + " or " + EnvOpenAIKey + " for a model)", nil
	}
	opts := llm.Options{
		BaseURL:      base,
		APIKey:       openAIKey,
		Model:        get(EnvModel),
		SystemPrompt: getenv(EnvSystemPrompt),
		Logger:       logger,
	}
	if k := get(EnvAPIKey); k != "" {
		opts.APIKey = k
	}
	if opts.Model == "" {
		return nil, "", fmt.Errorf("answerconf: %s is required with %s or %s", EnvModel, EnvBaseURL, EnvOpenAIKey)
	}
	if v := get(EnvTemperature); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, "", fmt.Errorf("answerconf: %s=%q is not a number ≥ 0", EnvTemperature, v)
		}
		opts.Temperature = &f
	}
	if v := get(EnvMaxTokens); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return nil, "", fmt.Errorf("answerconf: %s=%q is not an integer > 0", EnvMaxTokens, v)
		}
		opts.MaxTokens = n
	}
	if v := get(EnvTurns); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, "", fmt.Errorf("answerconf: %s=%q is not an integer ≥ 0", EnvTurns, v)
		}
		opts.Turns = n
		if n == 0 {
			opts.Turns = -1 // llm's "none"; its 0 is the default
		}
	}
	if v := get(EnvStallTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, "", fmt.Errorf("answerconf: %s=%q is not a positive duration such as 30s", EnvStallTimeout, v)
		}
		opts.StallTimeout = d
	}
	m, err := llm.New(opts)
	if err != nil {
		return nil, "", fmt.Errorf("answerconf: %w", err)
	}
	return m, describe(opts), nil
}

// describe is the log line of a model answerer: model, server (without
// credentials or query) and whether a key is set.
func describe(o llm.Options) string {
	server := o.BaseURL
	if server == "" {
		server = llm.DefaultBaseURL
	}
	if u, err := url.Parse(server); err == nil {
		u.User, u.RawQuery, u.Fragment = nil, "", ""
		server = u.String()
	}
	key := "no API key"
	if o.APIKey != "" {
		key = "API key set"
	}
	return fmt.Sprintf("model %q at %s (%s)", o.Model, server, key)
}
