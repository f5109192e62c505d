package socketio

import (
	"context"
	"errors"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The request events of docs/protocol.md, each with its reply event and the
// payload field a bare string stands for.
var requestHandlers = map[string]requestHandler{
	"join_room":       {replyEvent: "room_joined", shorthand: "room", fn: (*conn).joinRoom},
	"leave_room":      {replyEvent: "room_left", shorthand: "room", fn: (*conn).leaveRoom},
	"ask_question":    {replyEvent: "question_received", shorthand: "question", fn: (*conn).askQuestion},
	"get_suggestions": {replyEvent: "suggestions", shorthand: "query", fn: (*conn).getSuggestions},
	"get_history":     {replyEvent: "history", fn: (*conn).getHistory},
	"clear_history":   {replyEvent: "history_cleared", fn: (*conn).clearHistory},
	"get_task":        {replyEvent: "task", fn: (*conn).getTask},
	"cancel_task":     {replyEvent: "task_cancelled", fn: (*conn).cancelTask},
}

type requestHandler struct {
	replyEvent string
	shorthand  string
	fn         func(c *conn, ctx context.Context, p payload) (map[string]any, error)
}

// Limits of docs/protocol.md that are not configurable through AuthOptions.
const (
	maxRoomLength       = 64
	maxQueryLength      = 200
	defaultHistoryLimit = 20
	maxHistoryLimit     = 100
	defaultSuggestLimit = 5
	maxSuggestLimit     = 20
)

// payload is a request's JSON object. Its getters treat a null field as
// absent and a field of the wrong type as invalid_payload.
type payload map[string]any

// parsePayload applies the payload rules: no payload means {}, one object
// or (where the event has one) a shorthand string, anything else is
// invalid_payload.
func parsePayload(args []any, shorthand string) (payload, error) {
	switch len(args) {
	case 0:
		return payload{}, nil
	case 1:
	default:
		return nil, NewError(CodeInvalidPayload, "expected at most one payload, got %d", len(args))
	}
	switch v := args[0].(type) {
	case map[string]any:
		return payload(v), nil
	case string:
		if shorthand != "" {
			return payload{shorthand: v}, nil
		}
	}
	return nil, NewError(CodeInvalidPayload, "payload must be an object")
}

func (p payload) string(key string, required bool) (string, bool, error) {
	v, ok := p[key]
	if !ok || v == nil {
		if required {
			return "", false, NewError(CodeInvalidPayload, "%s is required", key)
		}
		return "", false, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", false, NewError(CodeInvalidPayload, "%s must be a string", key)
	}
	return s, true, nil
}

func (p payload) bool(key string) (bool, error) {
	v, ok := p[key]
	if !ok || v == nil {
		return false, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, NewError(CodeInvalidPayload, "%s must be a boolean", key)
	}
	return b, nil
}

// limit reads an optional integer ≥ 1, clamped to max.
func (p payload) limit(key string, def, max int) (int, error) {
	v, ok := p[key]
	if !ok || v == nil {
		return def, nil
	}
	f, ok := v.(float64)
	if !ok || f < 1 || f != math.Trunc(f) || math.IsInf(f, 0) {
		return 0, NewError(CodeInvalidPayload, "%s must be an integer of at least 1", key)
	}
	if f > float64(max) {
		return max, nil
	}
	return int(f), nil
}

// validRoomName checks the room rules of docs/protocol.md; isSocketID reports
// whether a name is taken by a connected socket.
func validRoomName(room string, isSocketID func(string) bool) error {
	if n := len(room); n < 1 || n > maxRoomLength {
		return NewError(CodeInvalidRoom, "room must be 1 to %d characters", maxRoomLength)
	}
	for i := 0; i < len(room); i++ {
		c := room[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-') {
			return NewError(CodeInvalidRoom, "room may hold only A-Z a-z 0-9 _ . : -")
		}
	}
	if isSocketID(room) {
		return NewError(CodeInvalidRoom, "room name is taken")
	}
	return nil
}

// checkText applies the text rules to an already trimmed string: valid
// UTF-8 without lone surrogates (seqparser turned those, and bytes that
// are not UTF-8, into NUL before Go's JSON decoder could hide them as
// U+FFFD), no control characters but tab, line feed and carriage return,
// and 1 to max code points. A literal U+FFFD is valid text.
func checkText(s, what string, max int) error {
	if s == "" {
		return NewError(CodeQuestionInvalid, "%s is empty", what)
	}
	if !utf8.ValidString(s) {
		return NewError(CodeQuestionInvalid, "%s is not valid text", what)
	}
	n := 0
	for _, r := range s {
		n++
		if unicode.Is(unicode.Cc, r) && r != '\t' && r != '\n' && r != '\r' {
			return NewError(CodeQuestionInvalid, "%s holds a control character or invalid text", what)
		}
	}
	if n > max {
		return NewError(CodeQuestionTooLong, "%s is longer than %d characters", what, max)
	}
	return nil
}

func (c *conn) roomField(p payload) (string, error) {
	room, _, err := p.string("room", true)
	if err != nil {
		return "", err
	}
	return room, validRoomName(room, c.srv.isSocketID)
}

func (c *conn) joinRoom(ctx context.Context, p payload) (map[string]any, error) {
	room, err := c.roomField(p)
	if err != nil {
		return nil, err
	}
	ev := &RoomEvent{Caller: c.caller, Room: room, Joined: len(c.rooms())}
	if !c.inRoom(room) {
		if err := c.srv.hooks.runBefore(beforeJoinRoom, func(h Hook) error {
			return h.(BeforeJoinRoomHook).BeforeJoinRoom(ctx, ev)
		}); err != nil {
			return nil, toWireError(err, CodeForbidden)
		}
		c.join(room)
	}
	n, err := c.srv.roomSize(ctx, room)
	if err != nil {
		return nil, err
	}
	ev.Members = n
	c.srv.hooks.runAfter(afterJoinRoom, func(h Hook) { h.(AfterJoinRoomHook).AfterJoinRoom(ctx, ev) })
	return map[string]any{"room": room, "members": ev.Members}, nil
}

func (c *conn) leaveRoom(ctx context.Context, p payload) (map[string]any, error) {
	room, err := c.roomField(p)
	if err != nil {
		return nil, err
	}
	ev := &RoomEvent{Caller: c.caller, Room: room, Joined: len(c.rooms())}
	if err := c.srv.hooks.runBefore(beforeLeaveRoom, func(h Hook) error {
		return h.(BeforeLeaveRoomHook).BeforeLeaveRoom(ctx, ev)
	}); err != nil {
		return nil, toWireError(err, CodeForbidden)
	}
	c.leave(room)
	c.srv.hooks.runAfter(afterLeaveRoom, func(h Hook) { h.(AfterLeaveRoomHook).AfterLeaveRoom(ctx, ev) })
	return map[string]any{"room": room}, nil
}

// askRequest is a validated ask_question payload.
type askRequest struct {
	question, context, room string
	stream                  bool
}

// parseAsk validates an ask_question payload in docs/protocol.md's order: every
// field's type (invalid_payload), then the room's and the texts' own codes.
func parseAsk(p payload, limits *AuthOptions, isSocketID func(string) bool) (askRequest, error) {
	var r askRequest
	question, _, err := p.string("question", true)
	if err != nil {
		return r, err
	}
	room, hasRoom, err := p.string("room", false)
	if err != nil {
		return r, err
	}
	qctx, _, err := p.string("context", false)
	if err != nil {
		return r, err
	}
	if r.stream, err = p.bool("stream"); err != nil {
		return r, err
	}
	if hasRoom {
		if err := validRoomName(room, isSocketID); err != nil {
			return r, err
		}
	}
	r.room = room
	r.question = strings.TrimSpace(question)
	if err := checkText(r.question, "question", limits.MaxQuestionLength); err != nil {
		return r, err
	}
	r.context = strings.TrimSpace(qctx)
	if r.context != "" {
		if err := checkText(r.context, "context", limits.MaxContextLength); err != nil {
			return r, err
		}
	}
	return r, nil
}

func (c *conn) askQuestion(ctx context.Context, p payload) (map[string]any, error) {
	s := c.srv
	req, err := parseAsk(p, &s.auth.opts, s.isSocketID)
	if err != nil {
		return nil, err
	}
	// Then access, then the hooks (auth content rules, rate limit, …).
	if req.room != "" && !c.inRoom(req.room) {
		return nil, NewError(CodeForbidden, "join the room before asking into it")
	}
	ev := &QuestionEvent{Caller: c.caller, Question: req.question, Context: req.context, Room: req.room, Stream: req.stream}
	undo := func() {
		for _, f := range ev.undo {
			f()
		}
	}
	if err := s.hooks.runBefore(beforeQuestion, func(h Hook) error {
		return h.(BeforeQuestionHook).BeforeQuestion(ctx, ev)
	}); err != nil {
		undo()
		return nil, toWireError(err, CodeForbidden)
	}
	accept, start := s.tasks.accept, s.tasks.start
	if s.queue != nil {
		accept, start = s.queue.accept, s.queue.start
	}
	task, err := accept(c, ev)
	if err != nil {
		undo()
		return nil, err
	}
	ev.TaskID = task.task.ID
	// Every push for the task must follow the reply: the task starts, and
	// the after-hooks run, once the reply is written.
	c.afterReply = func() {
		s.hooks.runAfter(afterQuestion, func(h Hook) { h.(AfterQuestionHook).AfterQuestion(c.ctx, ev) })
		start(task)
	}
	return map[string]any{"task_id": task.task.ID, "status": string(TaskPending)}, nil
}

func (c *conn) getSuggestions(ctx context.Context, p payload) (map[string]any, error) {
	query, _, err := p.string("query", true)
	if err != nil {
		return nil, err
	}
	limit, err := p.limit("limit", defaultSuggestLimit, maxSuggestLimit)
	if err != nil {
		return nil, err
	}
	query = strings.TrimSpace(query)
	if n := utf8.RuneCountInString(query); n < 1 || n > maxQueryLength {
		return nil, NewError(CodeInvalidPayload, "query must be 1 to %d characters", maxQueryLength)
	}
	ev := &SuggestionsEvent{Caller: c.caller, Query: query, Limit: limit}
	if err := c.srv.hooks.runBefore(beforeSuggestions, func(h Hook) error {
		return h.(BeforeSuggestionsHook).BeforeSuggestions(ctx, ev)
	}); err != nil {
		return nil, toWireError(err, CodeForbidden)
	}
	list, err := c.srv.suggester.Suggest(ctx, query, limit)
	if err != nil {
		return nil, storageErr(err)
	}
	if len(list) > limit {
		list = list[:limit]
	}
	if list == nil {
		list = []string{}
	}
	ev.Suggestions = list
	c.srv.hooks.runAfter(afterSuggestions, func(h Hook) { h.(AfterSuggestionsHook).AfterSuggestions(ctx, ev) })
	return map[string]any{"query": query, "suggestions": list}, nil
}

func (c *conn) getHistory(ctx context.Context, p payload) (map[string]any, error) {
	limit, err := p.limit("limit", defaultHistoryLimit, maxHistoryLimit)
	if err != nil {
		return nil, err
	}
	before, _, err := p.string("before", false)
	if err != nil {
		return nil, err
	}
	ev := &HistoryEvent{Caller: c.caller, Owner: c.owner, Limit: limit, Before: before}
	if err := c.srv.hooks.runBefore(beforeHistory, func(h Hook) error {
		return h.(BeforeHistoryHook).BeforeHistory(ctx, ev)
	}); err != nil {
		return nil, toWireError(err, CodeForbidden)
	}
	items, more, err := c.srv.storage.History(ctx, ev.Owner, before, limit)
	if err != nil {
		return nil, storageErr(err)
	}
	for i := range items {
		items[i] = c.srv.tasks.settleIfStale(ctx, items[i])
	}
	ev.Items = items
	c.srv.hooks.runAfter(afterHistory, func(h Hook) { h.(AfterHistoryHook).AfterHistory(ctx, ev) })
	wire := make([]map[string]any, len(items))
	for i, t := range items {
		wire[i] = wireTask(t, c.srv.partial(ctx, t))
	}
	return map[string]any{"items": wire, "has_more": more}, nil
}

func (c *conn) clearHistory(ctx context.Context, p payload) (map[string]any, error) {
	ev := &ClearHistoryEvent{Caller: c.caller, Owner: c.owner}
	if err := c.srv.hooks.runBefore(beforeClearHistory, func(h Hook) error {
		return h.(BeforeClearHistoryHook).BeforeClearHistory(ctx, ev)
	}); err != nil {
		return nil, toWireError(err, CodeForbidden)
	}
	n, err := c.srv.storage.ClearHistory(ctx, ev.Owner)
	if err != nil {
		return nil, storageErr(err)
	}
	ev.Deleted = n
	c.srv.hooks.runAfter(afterClearHistory, func(h Hook) { h.(AfterClearHistoryHook).AfterClearHistory(ctx, ev) })
	return map[string]any{"deleted": n}, nil
}

// ownTask loads a task of the caller's; another owner's task is not_found.
func (c *conn) ownTask(ctx context.Context, p payload) (Task, error) {
	id, _, err := p.string("task_id", true)
	if err != nil {
		return Task{}, err
	}
	t, err := c.srv.storage.Task(ctx, c.owner, id)
	if errors.Is(err, ErrNotFound) || err == nil && t.Owner != c.owner {
		return Task{}, NewError(CodeNotFound, "no such task")
	}
	if err != nil {
		return Task{}, storageErr(err)
	}
	return c.srv.tasks.settleIfStale(ctx, t), nil
}

func (c *conn) getTask(ctx context.Context, p payload) (map[string]any, error) {
	t, err := c.ownTask(ctx, p)
	if err != nil {
		return nil, err
	}
	return map[string]any{"task": wireTask(t, c.srv.partial(ctx, t))}, nil
}

func (c *conn) cancelTask(ctx context.Context, p payload) (map[string]any, error) {
	t, err := c.ownTask(ctx, p)
	if err != nil {
		return nil, err
	}
	if !t.Status.Finished() {
		if c.srv.queue != nil {
			t, err = c.srv.queue.cancel(t)
		} else {
			t, err = c.srv.tasks.cancel(t)
		}
		if err != nil {
			return nil, err
		}
	}
	return map[string]any{"task_id": t.ID, "status": string(t.Status)}, nil
}

// partial returns the streamed text so far of t, when t is a streamed
// answer in progress and it is known here (see LocalQueue), or else nil.
func (s *Server) partial(ctx context.Context, t Task) *Partial {
	if t.Status != TaskProcessing || !t.Stream {
		return nil
	}
	if s.queue != nil {
		return s.queue.partial(ctx, t)
	}
	return s.tasks.partial(t.ID)
}

// wireTask renders a Task as docs/protocol.md's Task object, with the
// partial text p of a streamed answer in progress.
func wireTask(t Task, p *Partial) map[string]any {
	m := map[string]any{
		"task_id":    t.ID,
		"question":   t.Question,
		"status":     string(t.Status),
		"asked_at":   formatTime(t.AskedAt),
		"updated_at": formatTime(t.UpdatedAt),
	}
	if t.Status == TaskCompleted {
		m["answer"] = t.Answer
	}
	if t.Error != nil {
		m["error"] = map[string]any{"code": string(t.Error.Code), "message": t.Error.Message}
	}
	if t.Room != "" {
		m["room"] = t.Room
	}
	if !t.AnsweredAt.IsZero() {
		m["answered_at"] = formatTime(t.AnsweredAt)
	}
	if p != nil {
		m["partial"] = map[string]any{"attempt": p.Attempt, "seq": p.Seq, "text": p.Text}
	}
	return m
}
