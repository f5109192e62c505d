package socketio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio/internal/seqparser"
)

// conn is the service's state for one connected socket.
type conn struct {
	srv    *Server
	sock   *socket.Socket
	caller Caller
	owner  string
	ctx    context.Context // cancelled when the socket goes away
	cancel context.CancelFunc
	seq    *seqparser.Sequencer
	gate   *seqparser.Gate // holds the client's first events until onConnection

	resumed     bool
	resumeToken string
	token       string
	header      http.Header

	// afterReply, set by a request handler, runs once its reply is sent.
	// Only the goroutine running the socket's requests touches it.
	afterReply func()
	umu        sync.Mutex // serialises untagged events (see onEvent)

	gone atomic.Bool
	// logs thins out this connection's repeated log lines.
	logs *logLimiter
}

// admit is the namespace middleware that decides on a connection. It runs
// the work in its own goroutine so that a slow check (a token verifier, a
// storage round trip) never holds the connection's read loop.
func (s *Server) admit(sock *socket.Socket, next func(*socket.ExtendedError)) {
	if s.closed.Load() {
		next(refusal(ErrUnavailable))
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			if v := recover(); v != nil {
				s.logger.Error("socketio: panic admitting a connection", "panic", v)
				s.auth.ReleaseConnection(context.WithoutCancel(s.ctx), string(sock.Id()))
				next(refusal(ErrInternal))
			}
		}()
		c, err := s.newConn(sock)
		if err != nil {
			s.auth.ReleaseConnection(context.WithoutCancel(s.ctx), string(sock.Id()))
			if !refusalCounted(err) {
				s.auth.countRefusal(toWireError(err, CodeRejected).Code)
			}
			next(refusal(err))
			return
		}
		// The engine connection's close is certain to come, even when v2
		// drops the socket between admission and "connection".
		sock.Conn().Once("close", func(...any) { c.close("transport close") })
		next(nil)
	}()
}

// refusal renders err as the CONNECT_ERROR a client receives.
func refusal(err error) *socket.ExtendedError {
	e := toWireError(err, CodeRejected)
	return socket.NewExtendedError(string(e.Code), e.wire())
}

// newConn runs the connect hooks and resolves the session.
func (s *Server) newConn(sock *socket.Socket) (*conn, error) {
	hs := sock.Handshake()
	gate := seqparser.TakeGate(hs.Auth)
	var token, resume string
	if m, ok := hs.Auth.(map[string]any); ok {
		token, _ = m["token"].(string)
		resume, _ = m["resume"].(string)
	}
	addr := ""
	if req := sock.Request(); req != nil && req.Request() != nil {
		addr = s.auth.ClientAddress(req.Request())
	}
	ctx, cancel := context.WithCancel(s.ctx)
	c := &conn{
		srv:    s,
		sock:   sock,
		ctx:    ctx,
		cancel: cancel,
		seq:    seqparser.NewSequencer(s.opts.MaxPendingEvents),
		gate:   gate,
		token:  token,
		header: http.Header(hs.Headers),
		caller: Caller{SocketID: string(sock.Id()), Address: addr},
		logs:   newLogLimiter(s.logger),
	}
	ev := &ConnectEvent{Caller: c.caller, Token: token, Header: hs.Headers}
	hctx, hcancel := context.WithTimeout(ctx, s.opts.StorageTimeout)
	err := s.hooks.runBefore(beforeConnect, func(h Hook) error {
		return h.(BeforeConnectHook).BeforeConnect(hctx, ev)
	})
	err = pastDeadline(hctx, err)
	hcancel()
	if err != nil {
		cancel()
		return nil, err
	}
	c.caller.UserID = ev.UserID

	sess, resumed, err := s.resolveSession(ctx, resume, c.caller)
	if err != nil && s.auth.opts.FailOpenConnects && errors.Is(err, ErrUnavailable) {
		// Admitted with a session that could not be stored (see
		// AuthOptions.FailOpenConnects).
		s.logger.Warn("socketio: session storage unavailable; admitting with an unstored session", "err", err)
		now := time.Now().UTC()
		sess, resumed, err = Session{ID: newID("s_"), UserID: c.caller.UserID, Address: c.caller.Address, CreatedAt: now, LastSeen: now}, false, nil
	}
	if err != nil {
		cancel()
		return nil, err
	}
	c.caller.SessionID = sess.ID
	c.owner = sess.Owner()
	c.resumed = resumed
	c.resumeToken = s.resumeKeys().sign(sess.ID, time.Now())

	s.mu.Lock()
	s.sockets[c.caller.SocketID] = c
	s.mu.Unlock()
	return c, nil
}

// resolveSession restores the session named by a valid resume token, or
// starts a new one. A token that does not verify, names an unknown session,
// or a session of another user, is not an error: a new session is issued.
func (s *Server) resolveSession(ctx context.Context, resume string, caller Caller) (Session, bool, error) {
	now := time.Now().UTC()
	sctx, cancel := s.storageCtx()
	defer cancel()
	if id, ok := s.resumeKeys().verify(resume, now); ok {
		sess, err := s.storage.Session(sctx, id)
		switch {
		case err == nil && sess.UserID == caller.UserID:
			sess.LastSeen = now
			sess.Address = caller.Address
			if err := s.storage.SaveSession(sctx, sess); err != nil {
				return Session{}, false, storageErr(err)
			}
			return sess, true, nil
		case err != nil && !errors.Is(err, ErrNotFound):
			return Session{}, false, storageErr(err)
		}
	}
	sess := Session{ID: newID("s_"), UserID: caller.UserID, Address: caller.Address, CreatedAt: now, LastSeen: now}
	if err := s.storage.SaveSession(sctx, sess); err != nil {
		return Session{}, false, storageErr(err)
	}
	return sess, false, nil
}

// onConnection runs when v2 has connected an admitted socket.
func (s *Server) onConnection(args ...any) {
	sock, ok := args[0].(*socket.Socket)
	if !ok {
		return
	}
	s.mu.Lock()
	c := s.sockets[string(sock.Id())]
	s.mu.Unlock()
	if c == nil {
		// Admitted by another Server's middleware on the same namespace
		// cannot happen (Register refuses it); a socket we do not know is
		// dropped.
		sock.Disconnect(true)
		return
	}
	// Pushes for the session reach its sockets through this room, on
	// whichever node they are.
	sock.Join(socket.Room(sessionRoom(c.caller.SessionID)))
	sock.OnAny(c.onEvent)
	if err := sock.On("disconnect", func(args ...any) {
		reason := ""
		if len(args) > 0 {
			reason, _ = args[0].(string)
		}
		c.close(reason)
	}); err != nil {
		s.logger.Error("socketio: cannot listen for disconnect", "err", err)
	}
	// Listening now: let the events the client sent meanwhile through.
	c.gate.Open()
	connected := map[string]any{
		"session_id":   c.caller.SessionID,
		"resume_token": c.resumeToken,
		"resumed":      c.resumed,
		"server_time":  formatTime(time.Now()),
		"limits":       s.limitsPayload(),
	}
	if c.caller.UserID != "" {
		connected["user_id"] = c.caller.UserID
	}
	c.push("connected", connected)
	ev := &ConnectEvent{Caller: c.caller, Token: c.token, Resumed: c.resumed, Header: c.header}
	s.hooks.runAfter(afterConnect, func(h Hook) { h.(AfterConnectHook).AfterConnect(c.ctx, ev) })
	c.seq.Release()
}

func (s *Server) limitsPayload() map[string]any {
	o := &s.auth.opts // read-only after NewAuth; Options() would copy
	return map[string]any{
		"max_questions_per_minute":        o.MaxQuestionsPerMinute,
		"max_questions_per_minute_per_ip": o.MaxQuestionsPerMinutePerIP,
		"max_question_length":             o.MaxQuestionLength,
	}
}

// close forgets the socket. It runs once, whichever of v2's disconnect or
// the engine connection's close comes first.
func (c *conn) close(reason string) {
	if c.gone.Swap(true) {
		return
	}
	s := c.srv
	c.seq.Close()
	s.mu.Lock()
	delete(s.sockets, c.caller.SocketID)
	s.mu.Unlock()
	ctx := context.WithoutCancel(c.ctx)
	s.auth.ReleaseConnection(ctx, c.caller.SocketID)
	ev := &DisconnectEvent{Caller: c.caller, Reason: reason}
	s.hooks.runAfter(beforeDisconnect, func(h Hook) { h.(BeforeDisconnectHook).BeforeDisconnect(ctx, ev) })
	c.cancel()
	c.logs.flush()
	s.hooks.runAfter(afterDisconnect, func(h Hook) { h.(AfterDisconnectHook).AfterDisconnect(ctx, ev) })
}

// onEvent receives every event of the socket, from v2's per-event
// goroutines, and hands it to the sequencer so events run in the order the
// client sent them.
func (c *conn) onEvent(args ...any) {
	defer c.recoverPanic("event")
	if len(args) == 0 {
		return
	}
	name, _ := args[0].(string)
	args = args[1:]
	var ack socket.Ack
	if n := len(args); n > 0 {
		if fn, ok := args[n-1].(socket.Ack); ok {
			ack = fn
			args = args[:n-1]
		}
	}
	n := len(args)
	var seq seqparser.Seq
	tagged := false
	if n > 0 {
		seq, tagged = args[n-1].(seqparser.Seq)
	}
	if !tagged {
		// The client's connection started before Register installed the
		// ordering parser: events are still run one at a time.
		c.umu.Lock()
		defer c.umu.Unlock()
		c.handle(name, args, ack)
		return
	}
	args = args[:n-1]
	if c.srv.closed.Load() {
		c.handle(name, args, ack) // answers unavailable
		return
	}
	if !c.seq.Submit(seq, func() { c.handle(name, args, ack) }) && !c.gone.Load() && !c.srv.closed.Load() {
		// Every event of a flood that found the buffer full gets here,
		// concurrently, until the disconnect lands: one line for all.
		c.logs.log(slog.LevelWarn, "socketio: too many pending events, disconnecting", "", "socket", c.caller.SocketID)
		c.sock.Disconnect(true)
	}
}

// handle runs one request, recovering any panic.
func (c *conn) handle(name string, args []any, ack socket.Ack) {
	defer c.recoverPanic(name)
	if c.gone.Load() {
		return
	}
	h, known := requestHandlers[name]
	if !known {
		if ack != nil {
			ack([]any{map[string]any{"ok": false, "error": ErrUnknownEvent.wire()}}, nil)
		}
		return
	}
	var reply map[string]any
	var err error
	if c.srv.closed.Load() {
		err = ErrUnavailable
	} else {
		var p payload
		p, err = parsePayload(args, h.shorthand)
		if err == nil {
			// A request's hooks and storage calls share one deadline, so a
			// slow or unreachable backend answers unavailable in time.
			ctx, cancel := context.WithTimeout(c.ctx, c.srv.opts.StorageTimeout)
			reply, err = h.fn(c, ctx, p)
			err = pastDeadline(ctx, err)
			cancel()
		}
	}
	c.reply(name, h.replyEvent, ack, reply, err)
	if f := c.afterReply; f != nil {
		c.afterReply = nil
		if err == nil {
			f()
		}
	}
}

// pastDeadline marks an uncoded error of work whose ctx ended as
// unavailable: the backend was too slow or unreachable.
func pastDeadline(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && ErrorCode(err) == "" {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// reply answers a request: through its ack when it has one, otherwise with
// the reply event or an "error" event.
func (c *conn) reply(event, replyEvent string, ack socket.Ack, reply map[string]any, err error) {
	if err != nil {
		we := toWireError(err, CodeInternal)
		if we.Code == CodeInternal {
			c.logs.log(slog.LevelError, "socketio: request failed", event, "event", event, "socket", c.caller.SocketID, "err", err)
		}
		if ack != nil {
			ack([]any{map[string]any{"ok": false, "error": we.wire()}}, nil)
			return
		}
		m := we.wire()
		m["event"] = event
		c.push("error", m)
		return
	}
	reply["ok"] = true
	if ack != nil {
		ack([]any{reply}, nil)
		return
	}
	c.push(replyEvent, reply)
}

// push emits an event to this socket. Only the goroutine running the
// socket's requests (or its setup, before any request runs) pushes, so
// replies go out in request order; task events go through broadcast. It
// never sets v2's per-socket emit flags, which race (see defects tests).
func (c *conn) push(event string, v map[string]any) {
	if c.gone.Load() {
		return
	}
	if err := c.sock.Emit(event, v); err != nil {
		c.logs.log(slog.LevelDebug, "socketio: emit failed", event, "event", event, "err", err)
	}
}

func (c *conn) recoverPanic(what string) {
	if v := recover(); v != nil {
		c.logs.log(slog.LevelError, "socketio: panic handling an event", what, "event", what, "socket", c.caller.SocketID, "panic", v)
	}
}

// rooms returns the rooms the client joined: not the socket's own id room,
// nor the library's internal rooms (their names start with NUL).
func (c *conn) rooms() []string {
	var out []string
	for _, r := range c.sock.Rooms().Keys() {
		if string(r) != c.caller.SocketID && !strings.HasPrefix(string(r), "\x00") {
			out = append(out, string(r))
		}
	}
	return out
}

func (c *conn) inRoom(room string) bool {
	return c.sock.Rooms().Has(socket.Room(room))
}

// sessionRoom is the room every socket of a session is in. A client
// cannot name it: NUL is not a room character.
func sessionRoom(sessionID string) string { return "\x00session:" + sessionID }

// broadcast emits an event once to every socket in any of rooms, on every
// node (through the namespace's adapter).
func (s *Server) broadcast(rooms []string, event string, v map[string]any) {
	to := make([]socket.Room, len(rooms))
	for i, r := range rooms {
		to[i] = socket.Room(r)
	}
	if err := s.nsp.To(to...).Emit(event, v); err != nil {
		s.logger.Debug("socketio: broadcast failed", "event", event, "err", err)
	}
}

// tellNodes sends a server-side event to the other nodes of the cluster.
// Without a cluster adapter there are none, and nothing is sent.
func (s *Server) tellNodes(event string, args ...any) {
	if err := s.nsp.ServerSideEmit(event, args...); err != nil {
		s.logger.Debug("socketio: no cluster to tell", "event", event, "err", err)
	}
}

// onNodeEvent listens to a server-side event from the other nodes.
func (s *Server) onNodeEvent(event string, fn func(args ...any)) error {
	return s.nsp.On(event, func(args ...any) {
		defer func() {
			if v := recover(); v != nil {
				s.logger.Error("socketio: panic handling a server-side event", "event", event, "panic", v)
			}
		}()
		fn(args...)
	})
}

// roomSockets returns the ids of the sockets in room, on every node. With a
// cluster adapter it asks the other nodes, within ctx.
func (s *Server) roomSockets(ctx context.Context, room string) ([]string, error) {
	type result struct {
		ids []string
		err error
	}
	done := make(chan result, 1)
	s.nsp.In(socket.Room(room)).FetchSockets()(func(sockets []*socket.RemoteSocket, err error) {
		ids := make([]string, 0, len(sockets))
		for _, rs := range sockets {
			ids = append(ids, string(rs.Id()))
		}
		done <- result{ids, err}
	})
	select {
	case r := <-done:
		if r.err != nil {
			// The adapter's own error (Redis down, a node that did not
			// answer): a backend fault, so unavailable, never internal.
			return r.ids, fmt.Errorf("%w: counting the room's members: %w", ErrUnavailable, r.err)
		}
		return r.ids, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: counting the room's members: %w", ErrUnavailable, ctx.Err())
	}
}

// roomSize is the number of sockets in room, on every node.
func (s *Server) roomSize(ctx context.Context, room string) (int, error) {
	ids, err := s.roomSockets(ctx, room)
	return len(ids), err
}

// isSocketID reports whether name is the id of a connected socket on any
// node. Only names shaped like v2 socket ids (24 characters of URL-safe
// base64) cost a question to the other nodes.
func (s *Server) isSocketID(name string) bool {
	if _, ok := s.nsp.Sockets().Load(socket.SocketId(name)); ok {
		return true
	}
	if len(name) != 24 || strings.ContainsAny(name, ".:") {
		return false
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.StorageTimeout)
	defer cancel()
	ids, err := s.roomSockets(ctx, name)
	if err != nil {
		return true // when in doubt, the name is taken
	}
	return slices.Contains(ids, name)
}

func (c *conn) join(room string)  { c.sock.Join(socket.Room(room)) }
func (c *conn) leave(room string) { c.sock.Leave(socket.Room(room)) }
