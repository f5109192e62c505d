package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"

	"github.com/qaplatform/socketio"
)

// errStalled is the cause of an attempt's context when the stall timer
// fired.
var errStalled = errors.New("llm: the stream stalled")

// failure is why an attempt did not give an answer.
type failure struct {
	final      error         // returned as is, no retry (ctx ended, chunks refused)
	public     string        // the error message; names no detail of the server's
	detail     string        // for the log only
	status     int           // the HTTP status, 0 when none arrived
	retryable  bool          // the request may be made again
	retryAfter time.Duration // the server's Retry-After, 0 when none
	stalled    bool
}

// attempt makes one streaming request.
func (a *Answerer) attempt(ctx context.Context, params openai.ChatCompletionNewParams, stream bool, chunks socketio.ChunkWriter) (socketio.Answer, *failure) {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The stall timer runs from the request on and is pushed back by every
	// read that brings bytes; when it fires the request's context ends,
	// which closes the connection.
	stall := time.AfterFunc(a.opts.StallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()
	rec := &recorder{kick: func() { stall.Reset(a.opts.StallTimeout) }}

	s := a.service.NewStreaming(actx, params, option.WithMiddleware(rec.middleware))
	defer s.Close()

	var (
		text     strings.Builder
		usage    *socketio.Usage
		finished string
	)
	for s.Next() {
		c := s.Current()
		// OpenAI sends usage in a last chunk without choices; llama.cpp
		// puts it on the chunk with finish_reason. Either way the last one
		// seen is kept.
		if c.JSON.Usage.Valid() {
			usage = &socketio.Usage{
				PromptTokens:     int(c.Usage.PromptTokens),
				CompletionTokens: int(c.Usage.CompletionTokens),
				TotalTokens:      int(c.Usage.TotalTokens),
			}
		}
		for _, ch := range c.Choices {
			if ch.Index != 0 {
				continue
			}
			if d := ch.Delta.Content; d != "" {
				text.WriteString(d)
				if stream {
					if err := chunks.WriteChunk(d); err != nil {
						return socketio.Answer{}, &failure{final: err}
					}
				}
			}
			if ch.FinishReason != "" {
				finished = ch.FinishReason
			}
		}
	}
	err := s.Err()
	sent := text.Len() > 0

	switch {
	case ctx.Err() != nil:
		return socketio.Answer{}, &failure{final: a.ctxError(ctx)}
	case errors.Is(context.Cause(actx), errStalled) && finished != "" && sent:
		// The answer was whole; only the end of the stream never came.
		a.logger.Info("llm: the model server kept the stream open after the answer", "model", a.opts.Model)
	case errors.Is(context.Cause(actx), errStalled):
		return socketio.Answer{}, &failure{stalled: true, status: rec.status,
			public: fmt.Sprintf("the model server sent nothing for %s", a.opts.StallTimeout)}
	case rec.status >= 400:
		return socketio.Answer{}, a.httpFailure(rec)
	case err != nil:
		var se *ssestream.StreamError
		if errors.As(err, &se) {
			return socketio.Answer{}, &failure{status: rec.status,
				public: "the model server reported an error while answering",
				detail: errorDetail(se.Event.Data)}
		}
		f := &failure{status: rec.status, detail: err.Error(), retryable: !sent}
		if rec.status == 0 {
			f.public = "the model server could not be reached"
		} else {
			f.public = "the model server's stream broke off"
		}
		return socketio.Answer{}, f
	case finished == "":
		return socketio.Answer{}, &failure{status: rec.status, retryable: !sent,
			public: "the model server's stream ended before the answer was complete"}
	case !sent:
		return socketio.Answer{}, &failure{status: rec.status,
			public: "the model returned an empty answer", detail: "finish_reason " + finished}
	}
	if finished != "stop" {
		a.logger.Info("llm: the answer ended early", "model", a.opts.Model, "finish_reason", finished)
	}
	return socketio.Answer{Text: text.String(), Usage: usage}, nil
}

// httpFailure is the failure of a request the server answered with an
// error status.
func (a *Answerer) httpFailure(rec *recorder) *failure {
	st := rec.status
	f := &failure{status: st, detail: errorDetail(rec.body)}
	if txt := http.StatusText(st); txt != "" {
		f.public = fmt.Sprintf("the model server answered %d %s", st, txt)
	} else {
		f.public = fmt.Sprintf("the model server answered %d", st)
	}
	f.retryable = st == http.StatusRequestTimeout || st == http.StatusTooManyRequests || st >= 500
	f.retryAfter = retryAfter(rec.header, a.now())
	return f
}

// recorder is an attempt's SDK middleware: it keeps the response's status,
// headers and error body (read here, so that any body, JSON or not, is
// seen), and kicks the stall timer on each read of the stream.
type recorder struct {
	status int
	header http.Header
	body   []byte
	kick   func()
}

func (r *recorder) middleware(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
	res, err := next(req)
	if err != nil || res == nil {
		return res, err
	}
	r.kick()
	r.status, r.header = res.StatusCode, res.Header
	if res.StatusCode >= 400 {
		body, _ := io.ReadAll(io.LimitReader(res.Body, maxErrorBody))
		_ = res.Body.Close()
		r.body = body
		res.Body = io.NopCloser(bytes.NewReader(body))
		return res, nil
	}
	res.Body = &kickingBody{ReadCloser: res.Body, kick: r.kick}
	return res, nil
}

// kickingBody calls kick on every read that brought bytes.
type kickingBody struct {
	io.ReadCloser
	kick func()
}

func (b *kickingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.kick()
	}
	return n, err
}

// retryAfter reads the wait a server asked for: retry-after-ms (OpenAI),
// else Retry-After in seconds or as an HTTP date; at most maxRetryAfter,
// 0 when there is none.
func retryAfter(h http.Header, now time.Time) time.Duration {
	if h == nil {
		return 0
	}
	var d time.Duration
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			d = time.Duration(ms * float64(time.Millisecond))
		}
	} else if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if s, err := strconv.ParseFloat(v, 64); err == nil {
			d = time.Duration(s * float64(time.Second))
		} else if t, err := http.ParseTime(v); err == nil {
			d = t.Sub(now)
		}
	}
	if d <= 0 {
		return 0
	}
	return min(d, maxRetryAfter)
}

// errorDetail renders an error body for the log: the OpenAI shape
// {"error":{"message","type","code"}}, the {"error":"..."} of Ollama, the
// {"detail":...} of FastAPI servers, else the start of the text.
func errorDetail(body []byte) string {
	var v struct {
		Error  json.RawMessage `json:"error"`
		Detail json.RawMessage `json:"detail"`
	}
	if json.Unmarshal(body, &v) == nil {
		var e struct {
			Message string          `json:"message"`
			Type    string          `json:"type"`
			Code    json.RawMessage `json:"code"`
		}
		var s string
		switch {
		case json.Unmarshal(v.Error, &e) == nil && e.Message != "":
			out := e.Message
			if e.Type != "" {
				out += " (type " + e.Type + ")"
			}
			if c := strings.Trim(string(e.Code), `"`); c != "" && c != "null" {
				out += " (code " + c + ")"
			}
			return clip(out)
		case json.Unmarshal(v.Error, &s) == nil && s != "":
			return clip(s)
		case len(v.Detail) > 0:
			if json.Unmarshal(v.Detail, &s) == nil {
				return clip(s)
			}
			return clip(string(v.Detail))
		}
	}
	return clip(string(body))
}

// clip shortens s to 512 bytes of printable text.
func clip(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	s = strings.TrimSpace(s)
	if len(s) > 512 {
		s = strings.ToValidUTF8(s[:512], "") + "…"
	}
	return s
}
