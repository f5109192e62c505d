// Package llm is a socketio.Answerer that asks an OpenAI-compatible Chat
// Completions server (OpenAI, vLLM, llama.cpp, Ollama, …) and streams its
// answer.
//
// Concurrency: an *Answerer is safe for concurrent use; each Answer call
// makes its own streaming request. Cancelling the ctx given to Answer
// (cancel_task, the answer timeout, Server.Close) closes that request's
// HTTP stream at once.
//
// The package lives beside the core so that a program that does not use it
// does not compile the OpenAI SDK.
package llm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/qaplatform/socketio"
)

// DefaultBaseURL is the OpenAI API, used when Options.BaseURL is empty.
const DefaultBaseURL = "https://api.openai.com/v1/"

// Defaults of Options.
const (
	DefaultTurns        = 10
	DefaultStallTimeout = 30 * time.Second
	DefaultMaxRetries   = 3
)

// Limits of the retry waits, and of what an error body gives the log.
const (
	maxRetryAfter = 30 * time.Second       // a server's Retry-After is cut to this
	backoffBase   = 500 * time.Millisecond // first backoff, doubled per retry
	backoffMax    = 8 * time.Second        // longest backoff without Retry-After
	maxErrorBody  = 64 << 10               // bytes of an error body read
	redacted      = "[redacted]"
)

// Options configures New. The zero value of each field but Model means its
// default.
type Options struct {
	// BaseURL is the server's API root, the URL before /chat/completions
	// (for llama.cpp and vLLM "http://host:port/v1").
	// default: DefaultBaseURL
	BaseURL string
	// Model is the model name sent with each request. Required.
	Model string
	// APIKey is sent as a bearer token; empty sends no Authorization
	// header. It never appears in errors or logs. The environment is not
	// read (unlike the SDK's NewClient, which reads OPENAI_API_KEY).
	APIKey string
	// SystemPrompt, when not empty, is the first message of each request.
	SystemPrompt string
	// Temperature is the sampling temperature.
	// default: nil (the server's default)
	Temperature *float64
	// MaxTokens caps the tokens of an answer (sent as max_tokens, which
	// every OpenAI-compatible server reads).
	// default: 0 (the server's default)
	MaxTokens int
	// Turns is how many of the conversation's latest turns go with each
	// question (HistoryTurns); negative means none.
	// default: DefaultTurns
	Turns int
	// StallTimeout is the longest the server may send nothing: from the
	// request to the response headers, and between two reads of the
	// stream. A stream that stops moving is ended and the answer fails
	// with CodeTimeout. Raise it for a server whose prompt processing is
	// slow before the first token.
	// default: DefaultStallTimeout
	StallTimeout time.Duration
	// MaxRetries is how many times a request that got 408, 429, a 5xx
	// status or a connection error is made again, with jittered
	// exponential backoff or the server's Retry-After (at most 30s), but
	// only while no answer text has arrived; negative means none.
	// default: DefaultMaxRetries
	MaxRetries int
	// HTTPClient makes the requests. It should have no Timeout, which
	// would cut long answers; StallTimeout and ctx bound a request.
	// default: a client with http.DefaultTransport
	HTTPClient *http.Client
	// Logger receives retries (Info) and failures with the server's error
	// details (Warn).
	// default: slog.Default()
	Logger *slog.Logger
}

// Answerer answers questions with a Chat Completions model. Make one with
// New.
type Answerer struct {
	opts     Options
	service  openai.ChatCompletionService
	logger   *slog.Logger
	sleep    func(ctx context.Context, d time.Duration) error // replaced by tests
	now      func() time.Time
	redactor *strings.Replacer
}

var _ socketio.ConversationAnswerer = (*Answerer)(nil)

// New returns an Answerer for opts. It makes no request.
func New(opts Options) (*Answerer, error) {
	if strings.TrimSpace(opts.Model) == "" {
		return nil, errors.New("llm: Options.Model is required")
	}
	if opts.BaseURL == "" {
		opts.BaseURL = DefaultBaseURL
	}
	if err := checkBaseURL(opts.BaseURL); err != nil {
		return nil, err
	}
	if opts.Turns == 0 {
		opts.Turns = DefaultTurns
	}
	if opts.Turns < 0 {
		opts.Turns = 0
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = DefaultStallTimeout
	}
	if opts.MaxRetries == 0 {
		opts.MaxRetries = DefaultMaxRetries
	}
	if opts.MaxRetries < 0 {
		opts.MaxRetries = 0
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	reqOpts := []option.RequestOption{
		option.WithBaseURL(opts.BaseURL),
		option.WithHTTPClient(opts.HTTPClient),
		option.WithMaxRetries(0), // retries are ours: only before the first token
	}
	if opts.APIKey != "" {
		reqOpts = append(reqOpts, option.WithAPIKey(opts.APIKey))
	}
	a := &Answerer{
		opts:    opts,
		service: openai.NewChatCompletionService(reqOpts...),
		logger:  opts.Logger,
		sleep:   sleepCtx,
		now:     time.Now,
	}
	if opts.APIKey != "" {
		a.redactor = strings.NewReplacer(opts.APIKey, redacted)
	}
	return a, nil
}

// HistoryTurns is Options.Turns: how many earlier turns the library puts in
// Question.History.
func (a *Answerer) HistoryTurns() int { return a.opts.Turns }

// Answer asks the model. The messages are the system prompt, the latest
// Options.Turns turns of q.History, and the question, preceded by q.Context
// between <context> tags when the client sent one.
//
// When q.Stream is set, each piece of answer text is written to chunks as
// it arrives; an error from chunks stops the answer and is returned as is.
// Answer.Text is always the whole answer, and Answer.Usage the token usage
// when the server reported it.
//
// Errors are *socketio.Error: CodeTimeout when the stream stalled or ctx's
// deadline passed, CodeAnswerFailed otherwise, with a message that names
// the server's HTTP status but not its details (those go to the log). When
// ctx is cancelled, Answer returns ctx.Err().
func (a *Answerer) Answer(ctx context.Context, q socketio.Question, chunks socketio.ChunkWriter) (socketio.Answer, error) {
	params := a.params(q)
	for retry := 0; ; retry++ {
		ans, fail := a.attempt(ctx, params, q.Stream, chunks)
		if fail == nil {
			return ans, nil
		}
		if fail.final != nil {
			return socketio.Answer{}, fail.final
		}
		if !fail.retryable || retry >= a.opts.MaxRetries {
			return socketio.Answer{}, a.failed(fail)
		}
		wait := fail.retryAfter
		if wait <= 0 {
			wait = backoff(retry)
		}
		if dl, ok := ctx.Deadline(); ok && !a.now().Add(wait).Before(dl) {
			// The answer would time out while waiting: give up now.
			return socketio.Answer{}, a.failed(fail)
		}
		a.logger.Info("llm: retrying the model request", "model", a.opts.Model,
			"reason", fail.public, "retry", retry+1, "wait", wait)
		if err := a.sleep(ctx, wait); err != nil {
			return socketio.Answer{}, a.ctxError(ctx)
		}
	}
}

// params builds the request for q.
func (a *Answerer) params(q socketio.Question) openai.ChatCompletionNewParams {
	msgs := make([]openai.ChatCompletionMessageParamUnion, 0, 2+2*len(q.History))
	if a.opts.SystemPrompt != "" {
		msgs = append(msgs, openai.SystemMessage(a.opts.SystemPrompt))
	}
	hist := q.History
	if len(hist) > a.opts.Turns {
		hist = hist[len(hist)-a.opts.Turns:]
	}
	for _, t := range hist {
		// A turn goes whole or not at all, so that user and assistant
		// alternate as strict chat templates require.
		if t.Question == "" || t.Answer == "" {
			continue
		}
		msgs = append(msgs, openai.UserMessage(t.Question), openai.AssistantMessage(t.Answer))
	}
	msgs = append(msgs, openai.UserMessage(userText(q)))
	p := openai.ChatCompletionNewParams{
		Model:         a.opts.Model,
		Messages:      msgs,
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}
	if a.opts.Temperature != nil {
		p.Temperature = openai.Float(*a.opts.Temperature)
	}
	if a.opts.MaxTokens > 0 {
		p.MaxTokens = openai.Int(int64(a.opts.MaxTokens))
	}
	return p
}

// userText is the question's message: the context, when there is one,
// delimited so that the model does not take it for the question.
func userText(q socketio.Question) string {
	if strings.TrimSpace(q.Context) == "" {
		return q.Text
	}
	return "Context:\n<context>\n" + q.Context + "\n</context>\n\nQuestion: " + q.Text
}

// backoff is the jittered wait before retry number retry+1: half of
// backoffBase·2^retry (at most backoffMax) plus a random part as large.
func backoff(retry int) time.Duration {
	d := backoffMax
	if retry < 8 {
		d = min(backoffBase<<retry, backoffMax)
	}
	return d/2 + rand.N(d/2+1)
}

// sleepCtx waits d, or returns ctx.Err() when ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ctxError is the error of an answer whose ctx ended.
func (a *Answerer) ctxError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return socketio.NewError(socketio.CodeTimeout, "the model server did not finish the answer in time")
	}
	return ctx.Err()
}

// failed logs f's details and returns its public error.
func (a *Answerer) failed(f *failure) error {
	code := socketio.CodeAnswerFailed
	if f.stalled {
		code = socketio.CodeTimeout
	}
	attrs := []any{"model", a.opts.Model, "reason", f.public}
	if f.status != 0 {
		attrs = append(attrs, "status", f.status)
	}
	if f.detail != "" {
		attrs = append(attrs, "detail", a.redact(f.detail))
	}
	a.logger.Warn("llm: the model request failed", attrs...)
	return socketio.NewError(code, "%s", a.redact(f.public))
}

// redact removes the API key from s.
func (a *Answerer) redact(s string) string {
	if a.redactor == nil {
		return s
	}
	return a.redactor.Replace(s)
}

// checkBaseURL rejects a URL the SDK could not use, without echoing it
// (it may hold credentials).
func checkBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("llm: Options.BaseURL is not an http(s) URL")
	}
	return nil
}
