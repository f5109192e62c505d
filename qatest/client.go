package qatest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/sioclient"
)

// Transport is the Engine.IO transport a Client uses. A client never
// upgrades from one to the other.
type Transport string

// The transports of PROTOCOL.md.
const (
	Websocket Transport = "websocket"
	Polling   Transport = "polling"
)

// Transports returns every transport, for tests that run once per
// transport.
func Transports() []Transport { return []Transport{Websocket, Polling} }

var (
	// ErrClosed is reported by a Client's methods after its Close, and by
	// Server.Dial after Server.Close.
	ErrClosed = errors.New("qatest: closed")
	// ErrDisconnected is reported once the server has ended the connection:
	// it disconnected the socket or closed the transport.
	ErrDisconnected = errors.New("qatest: disconnected by the server")
)

// ClientOptions configure Server.Dial. The zero value means a websocket
// client without credentials. Dial copies what it keeps, so the options may
// be reused and changed afterwards.
type ClientOptions struct {
	// Transport is Websocket or Polling. default: Websocket
	Transport Transport
	// Token is sent as the handshake's auth.token, for the token verifier
	// (socketio.AuthOptions.TokenVerifier) and BeforeConnect hooks.
	// default: none
	Token string
	// Resume is sent as auth.resume: the ResumeToken of an earlier
	// Connected, to restore that session. default: none
	Resume string
	// Auth holds further fields of the handshake's auth object, such as a
	// resume token of the wrong type; Token and Resume, when set, replace
	// the fields of the same name. default: none
	Auth map[string]any
	// Header is sent with the websocket handshake, or with every polling
	// request, for example X-Forwarded-For (believed only from the trusted
	// proxies of socketio.AuthOptions.TrustedProxies). default: none
	Header http.Header
	// Timeout bounds Dial, each write, and each wait (Request, Send, Next,
	// Await) whose context has no deadline. default: 5s
	Timeout time.Duration
}

// Connected is the payload of the "connected" event the service sends to a
// new socket (PROTOCOL.md, "Connecting"). It is a plain value, safe to copy
// and share.
type Connected struct {
	SessionID   string `json:"session_id"`
	ResumeToken string `json:"resume_token"`
	Resumed     bool   `json:"resumed"`
	// UserID is set when the token verifier or a hook named the user.
	UserID     string    `json:"user_id"`
	ServerTime time.Time `json:"server_time"`
	Limits     Limits    `json:"limits"`
}

// Limits are the limits announced in Connected.
type Limits struct {
	MaxQuestionsPerMinute      int `json:"max_questions_per_minute"`
	MaxQuestionsPerMinutePerIP int `json:"max_questions_per_minute_per_ip"`
	MaxQuestionLength          int `json:"max_question_length"`
}

// Client is one Socket.IO connection to the service, made by Server.Dial.
//
// Concurrency: all methods may be called concurrently. Pushed events are
// queued in arrival order, none is dropped, and each is delivered once:
// concurrent Next or Await calls for the same event each get a different
// one. Send matches the reply to a request by its event name (the service
// answers one socket's requests in order), so two concurrent Sends of the
// same request on one Client may swap replies; Request, which uses acks,
// has no such limit. Each Client runs one goroutine, which Close stops.
type Client struct {
	sc        *sioclient.Client
	srv       *Server
	connected Connected
	timeout   time.Duration
}

// Dial connects a client to the service and returns once the service has
// sent it "connected". A refused connection (connect_error) is an error
// wrapping a *socketio.Error with the refusal's code (unauthorized,
// ip_blocked, too_many_connections, rejected or unavailable). Without a
// deadline on ctx, o.Timeout applies. The client is closed by Server.Close
// if the test has not closed it.
func (s *Server) Dial(ctx context.Context, o ClientOptions) (*Client, error) {
	if !s.startDial() {
		return nil, fmt.Errorf("qatest: dial: %w", ErrClosed)
	}
	defer s.dialing.Done()
	if o.Transport == "" {
		o.Transport = Websocket
	}
	if o.Transport != Websocket && o.Transport != Polling {
		return nil, fmt.Errorf("qatest: unknown transport %q", o.Transport)
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	var auth map[string]any
	if o.Auth != nil || o.Token != "" || o.Resume != "" {
		auth = make(map[string]any, len(o.Auth)+2)
		for k, v := range o.Auth {
			auth[k] = v
		}
		if o.Token != "" {
			auth["token"] = o.Token
		}
		if o.Resume != "" {
			auth["resume"] = o.Resume
		}
	}
	ctx, cancel := withTimeout(ctx, o.Timeout)
	defer cancel()
	sc, err := sioclient.Dial(ctx, sioclient.Options{
		URL:       s.URL,
		Transport: string(o.Transport),
		Namespace: s.namespace,
		Auth:      auth,
		Header:    o.Header.Clone(),
		Timeout:   o.Timeout,
		// The service's Handler closes the races of v2.5.0 these
		// workarounds are for, and a retry would run BeforeConnect hooks
		// twice.
		ConnectRetry: -1,
		Settle:       -1,
	})
	if err != nil {
		var ce *sioclient.ConnectError
		if errors.As(err, &ce) {
			return nil, fmt.Errorf("qatest: connection refused: %w", connectError(ce))
		}
		return nil, translate(err, "dial")
	}
	c := &Client{sc: sc, srv: s, timeout: o.Timeout}
	args, err := sc.Next(ctx, "connected")
	if err == nil {
		err = decodeArg(args, &c.connected)
	}
	if err != nil {
		_ = sc.Close()
		return nil, translate(err, `awaiting "connected"`)
	}
	if !s.track(c) {
		_ = sc.Close()
		return nil, fmt.Errorf("qatest: dial: %w", ErrClosed)
	}
	return c, nil
}

// connectError turns a connect_error payload into the error the service
// refused with.
func connectError(ce *sioclient.ConnectError) *socketio.Error {
	e := &socketio.Error{Code: socketio.Code(ce.Message), Message: ce.Message}
	if code, ok := ce.Data["code"].(string); ok {
		e.Code = socketio.Code(code)
	}
	if msg, ok := ce.Data["message"].(string); ok {
		e.Message = msg
	}
	if ms, ok := ce.Data["retry_after_ms"].(float64); ok {
		e.RetryAfter = time.Duration(ms) * time.Millisecond
	}
	return e
}

// Connected returns the payload of the "connected" event: the session id,
// the resume token, and whether the session was resumed.
func (c *Client) Connected() Connected { return c.connected }

// SocketID is the Socket.IO id of the client's socket, which hooks see as
// Caller.SocketID.
func (c *Client) SocketID() string { return c.sc.SID() }

// Request sends a request with an acknowledgement and returns the reply the
// service acknowledged it with. payload is the request's one payload: an
// object (a map or a struct, encoded with encoding/json) or a shorthand
// string; nil sends none (which the service reads as {}). A failure reply
// is a Reply with OK false and Err set, not an error: the error says why
// no reply came. Without a deadline on ctx, ClientOptions.Timeout applies.
func (c *Client) Request(ctx context.Context, event string, payload any) (Reply, error) {
	ctx, cancel := withTimeout(ctx, c.timeout)
	defer cancel()
	args, err := c.sc.EmitWithAck(ctx, event, payloadArgs(payload)...)
	if err != nil {
		return Reply{}, translate(err, fmt.Sprintf("awaiting the ack of %q", event))
	}
	if len(args) != 1 {
		return Reply{}, fmt.Errorf("qatest: the ack of %q has %d arguments, want 1", event, len(args))
	}
	return parseReply(event, args[0])
}

// replyEvents maps each request event of PROTOCOL.md to its reply event.
var replyEvents = map[string]string{
	"join_room":       "room_joined",
	"leave_room":      "room_left",
	"ask_question":    "question_received",
	"get_suggestions": "suggestions",
	"get_history":     "history",
	"clear_history":   "history_cleared",
	"get_task":        "task",
	"cancel_task":     "task_cancelled",
}

// Send sends a request without an acknowledgement, as clients that do not
// use acks do, and awaits its answer: the request's reply event (such as
// "room_joined" for "join_room"), or an "error" event naming the request,
// which becomes a Reply with OK false and Err set. payload is as for
// Request. Events that arrive meanwhile stay queued for Next and Await.
// Without a deadline on ctx, ClientOptions.Timeout applies.
func (c *Client) Send(ctx context.Context, event string, payload any) (Reply, error) {
	replyEvent, ok := replyEvents[event]
	if !ok {
		return Reply{}, fmt.Errorf("qatest: %q is not a request event (the service ignores other events without an ack)", event)
	}
	ctx, cancel := withTimeout(ctx, c.timeout)
	defer cancel()
	if err := c.sc.Emit(event, payloadArgs(payload)...); err != nil {
		return Reply{}, translate(err, fmt.Sprintf("sending %q", event))
	}
	e, err := c.sc.NextFunc(ctx, func(e sioclient.Event) bool {
		if e.Name == replyEvent {
			return true
		}
		if e.Name != "error" || len(e.Args) == 0 {
			return false
		}
		m, _ := e.Args[0].(map[string]any)
		return m["event"] == event
	})
	if err != nil {
		return Reply{}, translate(err, fmt.Sprintf("awaiting %q or an error for %q", replyEvent, event))
	}
	if len(e.Args) != 1 {
		return Reply{}, fmt.Errorf("qatest: %q has %d arguments, want 1", e.Name, len(e.Args))
	}
	if e.Name == "error" {
		m := e.Args[0].(map[string]any) // the match checked it
		return Reply{Err: wireError(m), Data: m}, nil
	}
	return parseReply(event, e.Args[0])
}

// Emit sends an event without an acknowledgement and waits for nothing; use
// it for what Request and Send cannot express, such as several payloads
// or a null one. It returns once the packet is written.
func (c *Client) Emit(event string, args ...any) error {
	return translate(c.sc.Emit(event, args...), fmt.Sprintf("sending %q", event))
}

// Next returns the oldest queued event with that name, waiting for one if
// needed, and takes it out of the queue. Events of other names stay queued.
// Without a deadline on ctx, ClientOptions.Timeout applies; when the wait
// ends the error wraps context.DeadlineExceeded. Events that arrived
// before the connection ended can still be read.
func (c *Client) Next(ctx context.Context, event string) (Event, error) {
	return c.Await(ctx, event, nil)
}

// Await is Next for the oldest event with that name that match accepts (a
// nil match accepts any); the events it passes over stay queued. match is
// called with the client's queue locked: it must not call the Client.
func (c *Client) Await(ctx context.Context, event string, match func(Event) bool) (Event, error) {
	ctx, cancel := withTimeout(ctx, c.timeout)
	defer cancel()
	e, err := c.sc.NextFunc(ctx, func(e sioclient.Event) bool {
		return e.Name == event && (match == nil || match(toEvent(e)))
	})
	if err != nil {
		return Event{}, translate(err, fmt.Sprintf("awaiting %q", event))
	}
	return toEvent(e), nil
}

// Done is closed when the connection has ended: Close was called, or the
// server ended it. Err then tells which.
func (c *Client) Done() <-chan struct{} { return c.sc.Done() }

// Err is nil while the connection is up, then ErrClosed after Close, or an
// error wrapping ErrDisconnected.
func (c *Client) Err() error { return translate(c.sc.Err(), "connection") }

// Close disconnects the socket, closes the connection and waits for the
// client's goroutine to exit. It returns nil; calling it again does
// nothing.
func (c *Client) Close() error {
	_ = c.sc.Close()
	c.srv.untrack(c)
	return nil
}

// ForTask returns a match for Await that accepts the events of one task
// (task_status, answer_chunk, answer, answer_error), by their task_id.
func ForTask(taskID string) func(Event) bool {
	return func(e Event) bool { return e.Data["task_id"] == taskID }
}

// translate turns an error of sioclient into one of this package, keeping
// the context errors and the cause's text but not its types.
func translate(err error, doing string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("qatest: %s: %w", doing, context.DeadlineExceeded)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("qatest: %s: %w", doing, context.Canceled)
	case errors.Is(err, sioclient.ErrClosed):
		return fmt.Errorf("qatest: %s: %w", doing, ErrClosed)
	case errors.Is(err, sioclient.ErrServerDisconnect), errors.Is(err, sioclient.ErrTransportClosed):
		return fmt.Errorf("qatest: %s: %w (%v)", doing, ErrDisconnected, err)
	}
	return fmt.Errorf("qatest: %s: %v", doing, err)
}

// payloadArgs is the argument list for one optional payload.
func payloadArgs(payload any) []any {
	if payload == nil {
		return nil
	}
	return []any{payload}
}

// decodeArg decodes the single argument of an event into v.
func decodeArg(args []any, v any) error {
	if len(args) != 1 {
		return fmt.Errorf("%d arguments, want 1", len(args))
	}
	return remarshal(args[0], v)
}

// remarshal decodes a value decoded into any again, into v.
func remarshal(from, v any) error {
	b, err := json.Marshal(from)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// withTimeout applies d when ctx has no deadline.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}
