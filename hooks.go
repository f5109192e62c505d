package socketio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Hook is a plugin that sees the events of the Q&A service. A hook has a
// name (unique within a HookManager) and a priority: higher priorities run
// first, equal priorities in the order they were registered. Embed BaseHook
// for both, then implement only the event interfaces the hook cares about
// (BeforeConnectHook, AfterQuestionHook, …); the manager finds them by type
// assertion when the hook is registered.
//
// Concurrency: hook methods are called concurrently for different sockets,
// and for one socket in the order its requests arrived. A before-hook
// refuses an event by returning an error: an *Error carries its own
// docs/protocol.md code to the client; any other error becomes "rejected" for a
// connect and "forbidden" elsewhere. After-hooks cannot refuse. A panic in a
// hook is recovered, counted and logged: in a before-hook the event answers
// "internal", in an after-hook the remaining hooks still run. ctx is
// cancelled when the request's socket disconnects (for the answer events,
// when the task ends).
type Hook interface {
	Name() string
	Priority() int
}

// BaseHook gives a hook its name and priority. Embed it:
//
//	type AuditHook struct{ socketio.BaseHook }
//	hooks.Register(&AuditHook{BaseHook: socketio.NewBaseHook("audit", 50)})
type BaseHook struct {
	name     string
	priority int
}

// NewBaseHook returns a BaseHook with the given name and priority.
func NewBaseHook(name string, priority int) BaseHook {
	return BaseHook{name: name, priority: priority}
}

// Name returns the hook's name.
func (b BaseHook) Name() string { return b.name }

// Priority returns the hook's priority.
func (b BaseHook) Priority() int { return b.priority }

// Caller identifies who sent an event.
type Caller struct {
	SocketID  string
	SessionID string
	// UserID is set when the connection's user is known: by the token
	// verifier (through the built-in auth hook), or by any BeforeConnect
	// hook that sets ConnectEvent.UserID. Tasks and history then belong to
	// the user rather than the session.
	UserID string
	// Address is the client's address (see AuthOptions.TrustedProxies).
	Address string
}

// ConnectEvent describes a connection attempt.
type ConnectEvent struct {
	Caller
	// Token is the handshake auth token, if any.
	Token string
	// Resumed is set, in AfterConnect, when the session was restored from a
	// resume token.
	Resumed bool
	// Header holds the handshake request headers.
	Header map[string][]string
}

// DisconnectEvent describes a socket that went away.
type DisconnectEvent struct {
	Caller
	Reason string
}

// RoomEvent describes a join_room or leave_room request.
type RoomEvent struct {
	Caller
	Room string
	// Joined is how many rooms the socket is in before this request.
	Joined int
	// Members is, in the after-hooks, the number of sockets in the room.
	Members int
}

// QuestionEvent describes an ask_question request.
type QuestionEvent struct {
	Caller
	// TaskID is set in AfterQuestion.
	TaskID   string
	Question string
	Context  string
	Room     string
	Stream   bool

	// undo holds what before-hooks reserved (a rate-limit slot), released
	// when a later step refuses the question.
	undo []func()
}

// AnswerEvent describes an answer: before the answerer runs, and after the
// task has finished (Task holds the outcome).
type AnswerEvent struct {
	Caller
	Task Task
}

// SuggestionsEvent describes a get_suggestions request. In AfterSuggestions,
// Suggestions holds the reply.
type SuggestionsEvent struct {
	Caller
	Query       string
	Limit       int
	Suggestions []string
}

// HistoryEvent describes a get_history request. Owner is the scope being
// read; in AfterHistory, Items holds the reply.
type HistoryEvent struct {
	Caller
	Owner  string
	Limit  int
	Before string
	Items  []Task
}

// ClearHistoryEvent describes a clear_history request; in
// AfterClearHistory, Deleted holds the count.
type ClearHistoryEvent struct {
	Caller
	Owner   string
	Deleted int
}

// The event interfaces a hook may implement. Before-hooks may refuse by
// returning an error; after-hooks observe.
type (
	BeforeConnectHook interface {
		BeforeConnect(ctx context.Context, e *ConnectEvent) error
	}
	AfterConnectHook interface {
		AfterConnect(ctx context.Context, e *ConnectEvent)
	}
	BeforeDisconnectHook interface {
		BeforeDisconnect(ctx context.Context, e *DisconnectEvent)
	}
	AfterDisconnectHook interface {
		AfterDisconnect(ctx context.Context, e *DisconnectEvent)
	}
	BeforeJoinRoomHook interface {
		BeforeJoinRoom(ctx context.Context, e *RoomEvent) error
	}
	AfterJoinRoomHook interface {
		AfterJoinRoom(ctx context.Context, e *RoomEvent)
	}
	BeforeLeaveRoomHook interface {
		BeforeLeaveRoom(ctx context.Context, e *RoomEvent) error
	}
	AfterLeaveRoomHook interface {
		AfterLeaveRoom(ctx context.Context, e *RoomEvent)
	}
	BeforeQuestionHook interface {
		BeforeQuestion(ctx context.Context, e *QuestionEvent) error
	}
	AfterQuestionHook interface {
		AfterQuestion(ctx context.Context, e *QuestionEvent)
	}
	BeforeAnswerHook interface {
		BeforeAnswer(ctx context.Context, e *AnswerEvent) error
	}
	AfterAnswerHook interface {
		AfterAnswer(ctx context.Context, e *AnswerEvent)
	}
	BeforeSuggestionsHook interface {
		BeforeSuggestions(ctx context.Context, e *SuggestionsEvent) error
	}
	AfterSuggestionsHook interface {
		AfterSuggestions(ctx context.Context, e *SuggestionsEvent)
	}
	BeforeHistoryHook interface {
		BeforeHistory(ctx context.Context, e *HistoryEvent) error
	}
	AfterHistoryHook interface {
		AfterHistory(ctx context.Context, e *HistoryEvent)
	}
	BeforeClearHistoryHook interface {
		BeforeClearHistory(ctx context.Context, e *ClearHistoryEvent) error
	}
	AfterClearHistoryHook interface {
		AfterClearHistory(ctx context.Context, e *ClearHistoryEvent)
	}
)

// stage names one dispatch point; it indexes the composed chains.
type stage int

const (
	beforeConnect stage = iota
	afterConnect
	beforeDisconnect
	afterDisconnect
	beforeJoinRoom
	afterJoinRoom
	beforeLeaveRoom
	afterLeaveRoom
	beforeQuestion
	afterQuestion
	beforeAnswer
	afterAnswer
	beforeSuggestions
	afterSuggestions
	beforeHistory
	afterHistory
	beforeClearHistory
	afterClearHistory
	numStages
)

var stageNames = [numStages]string{
	"before_connect", "after_connect", "before_disconnect", "after_disconnect",
	"before_join_room", "after_join_room", "before_leave_room", "after_leave_room",
	"before_question", "after_question", "before_answer", "after_answer",
	"before_suggestions", "after_suggestions", "before_history", "after_history",
	"before_clear_history", "after_clear_history",
}

func (s stage) String() string { return stageNames[s] }

// stagesOf lists the stages h implements.
func stagesOf(h Hook) []stage {
	var out []stage
	add := func(ok bool, s stage) {
		if ok {
			out = append(out, s)
		}
	}
	_, ok := h.(BeforeConnectHook)
	add(ok, beforeConnect)
	_, ok = h.(AfterConnectHook)
	add(ok, afterConnect)
	_, ok = h.(BeforeDisconnectHook)
	add(ok, beforeDisconnect)
	_, ok = h.(AfterDisconnectHook)
	add(ok, afterDisconnect)
	_, ok = h.(BeforeJoinRoomHook)
	add(ok, beforeJoinRoom)
	_, ok = h.(AfterJoinRoomHook)
	add(ok, afterJoinRoom)
	_, ok = h.(BeforeLeaveRoomHook)
	add(ok, beforeLeaveRoom)
	_, ok = h.(AfterLeaveRoomHook)
	add(ok, afterLeaveRoom)
	_, ok = h.(BeforeQuestionHook)
	add(ok, beforeQuestion)
	_, ok = h.(AfterQuestionHook)
	add(ok, afterQuestion)
	_, ok = h.(BeforeAnswerHook)
	add(ok, beforeAnswer)
	_, ok = h.(AfterAnswerHook)
	add(ok, afterAnswer)
	_, ok = h.(BeforeSuggestionsHook)
	add(ok, beforeSuggestions)
	_, ok = h.(AfterSuggestionsHook)
	add(ok, afterSuggestions)
	_, ok = h.(BeforeHistoryHook)
	add(ok, beforeHistory)
	_, ok = h.(AfterHistoryHook)
	add(ok, afterHistory)
	_, ok = h.(BeforeClearHistoryHook)
	add(ok, beforeClearHistory)
	_, ok = h.(AfterClearHistoryHook)
	add(ok, afterClearHistory)
	return out
}

// hookEntry is one registered hook with its counters. Counters are atomics,
// so dispatch never locks.
type hookEntry struct {
	hook    Hook
	seq     uint64 // registration order, for stable sorting
	stages  []stage
	enabled atomic.Bool

	calls   atomic.Uint64
	errors  atomic.Uint64
	panics  atomic.Uint64
	totalNs atomic.Int64
	maxNs   atomic.Int64
}

func (e *hookEntry) observe(d time.Duration) {
	ns := int64(d)
	e.calls.Add(1)
	e.totalNs.Add(ns)
	for {
		cur := e.maxNs.Load()
		if ns <= cur || e.maxNs.CompareAndSwap(cur, ns) {
			return
		}
	}
}

// chains is an immutable snapshot: for each stage, the enabled hooks that
// implement it, highest priority first.
type chains [numStages][]*hookEntry

// HookManager keeps the hooks of a Server and runs them for each event.
//
// Concurrency: all methods are safe for concurrent use, also while events
// are being dispatched. Registration composes new chains under a mutex and
// publishes them atomically; dispatch reads the current chains with one
// atomic load and takes no lock.
type HookManager struct {
	mu      sync.Mutex // serialises changes; never held during dispatch
	entries []*hookEntry
	nextSeq uint64
	current atomic.Pointer[chains]
	logger  *slog.Logger
}

// NewHookManager returns an empty HookManager that logs hook failures to
// logger (slog.Default() when nil).
func NewHookManager(logger *slog.Logger) *HookManager {
	if logger == nil {
		logger = slog.Default()
	}
	m := &HookManager{logger: logger}
	m.current.Store(&chains{})
	return m
}

// Register adds h, enabled. It returns an error if h is nil, has an empty
// name, or a hook of that name is already registered.
func (m *HookManager) Register(h Hook) error {
	if h == nil {
		return errors.New("socketio: Register: nil hook")
	}
	name := h.Name()
	if name == "" {
		return errors.New("socketio: Register: hook has no name")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.entries {
		if e.hook.Name() == name {
			return fmt.Errorf("socketio: Register: a hook named %q is already registered", name)
		}
	}
	e := &hookEntry{hook: h, seq: m.nextSeq, stages: stagesOf(h)}
	m.nextSeq++
	e.enabled.Store(true)
	m.entries = append(m.entries, e)
	m.publishLocked()
	return nil
}

// Replace registers h in place of the hook with the same name, in one
// step: every dispatch sees either the old hook or the new one. When there
// is no such hook, h is added. The new hook starts with fresh counters and
// enabled, and runs by its own priority.
func (m *HookManager) Replace(h Hook) error {
	if h == nil || h.Name() == "" {
		return errors.New("socketio: Replace: hook is nil or has no name")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e := &hookEntry{hook: h, seq: m.nextSeq, stages: stagesOf(h)}
	m.nextSeq++
	e.enabled.Store(true)
	if i := slices.IndexFunc(m.entries, func(x *hookEntry) bool { return x.hook.Name() == h.Name() }); i >= 0 {
		e.seq = m.entries[i].seq // keep its place among equal priorities
		m.entries[i] = e
	} else {
		m.entries = append(m.entries, e)
	}
	m.publishLocked()
	return nil
}

// Unregister removes the hook with the given name and reports whether there
// was one. A dispatch already under way may still call it once.
func (m *HookManager) Unregister(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := slices.IndexFunc(m.entries, func(e *hookEntry) bool { return e.hook.Name() == name })
	if i < 0 {
		return false
	}
	m.entries = slices.Delete(m.entries, i, i+1)
	m.publishLocked()
	return true
}

// Enable turns the named hook on and reports whether it exists.
func (m *HookManager) Enable(name string) bool { return m.setEnabled(name, true) }

// Disable turns the named hook off, without forgetting it, and reports
// whether it exists.
func (m *HookManager) Disable(name string) bool { return m.setEnabled(name, false) }

func (m *HookManager) setEnabled(name string, on bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.entries {
		if e.hook.Name() == name {
			if e.enabled.Swap(on) != on {
				m.publishLocked()
			}
			return true
		}
	}
	return false
}

// Hook returns the registered hook with the given name.
func (m *HookManager) Hook(name string) (Hook, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.entries {
		if e.hook.Name() == name {
			return e.hook, true
		}
	}
	return nil, false
}

// publishLocked composes the chains from the entries and publishes them.
func (m *HookManager) publishLocked() {
	sorted := slices.Clone(m.entries)
	sort.SliceStable(sorted, func(i, j int) bool {
		pi, pj := sorted[i].hook.Priority(), sorted[j].hook.Priority()
		if pi != pj {
			return pi > pj
		}
		return sorted[i].seq < sorted[j].seq
	})
	var c chains
	for _, e := range sorted {
		if !e.enabled.Load() {
			continue
		}
		for _, s := range e.stages {
			c[s] = append(c[s], e)
		}
	}
	m.current.Store(&c)
}

// HookInfo describes one registered hook, as reported by HooksInfo.
type HookInfo struct {
	Name     string
	Priority int
	Enabled  bool
	// Events lists the stages the hook implements, such as
	// "before_connect" or "after_question".
	Events []string
	Calls  uint64
	Errors uint64
	Panics uint64
	// MeanLatency and MaxLatency are measured over all calls.
	MeanLatency time.Duration
	MaxLatency  time.Duration
}

// HooksInfo reports every registered hook, in the order they run.
func (m *HookManager) HooksInfo() []HookInfo {
	m.mu.Lock()
	entries := slices.Clone(m.entries)
	m.mu.Unlock()
	sort.SliceStable(entries, func(i, j int) bool {
		pi, pj := entries[i].hook.Priority(), entries[j].hook.Priority()
		if pi != pj {
			return pi > pj
		}
		return entries[i].seq < entries[j].seq
	})
	out := make([]HookInfo, 0, len(entries))
	for _, e := range entries {
		info := HookInfo{
			Name:       e.hook.Name(),
			Priority:   e.hook.Priority(),
			Enabled:    e.enabled.Load(),
			Calls:      e.calls.Load(),
			Errors:     e.errors.Load(),
			Panics:     e.panics.Load(),
			MaxLatency: time.Duration(e.maxNs.Load()),
		}
		for _, s := range e.stages {
			info.Events = append(info.Events, s.String())
		}
		if info.Calls > 0 {
			info.MeanLatency = time.Duration(e.totalNs.Load() / int64(info.Calls))
		}
		out = append(out, info)
	}
	return out
}

// errHookPanic marks a refusal caused by a hook's panic; it reaches the
// client as "internal".
var errHookPanic = &Error{Code: CodeInternal, Message: "internal error"}

// runBefore calls call for each hook of stage s in order, stopping at the
// first refusal. A panic becomes errHookPanic.
func (m *HookManager) runBefore(s stage, call func(h Hook) error) error {
	for _, e := range m.current.Load()[s] {
		if err := m.callBefore(e, s, call); err != nil {
			return err
		}
	}
	return nil
}

func (m *HookManager) callBefore(e *hookEntry, s stage, call func(h Hook) error) (err error) {
	start := time.Now()
	defer func() {
		e.observe(time.Since(start))
		if r := recover(); r != nil {
			e.panics.Add(1)
			e.errors.Add(1)
			m.logger.Error("socketio: hook panicked", "hook", e.hook.Name(), "stage", s.String(), "panic", r)
			err = errHookPanic
			return
		}
		if err != nil {
			e.errors.Add(1)
		}
	}()
	return call(e.hook)
}

// runAfter calls call for every hook of stage s; panics are recovered and
// the rest still run.
func (m *HookManager) runAfter(s stage, call func(h Hook)) {
	for _, e := range m.current.Load()[s] {
		m.callAfter(e, s, call)
	}
}

func (m *HookManager) callAfter(e *hookEntry, s stage, call func(h Hook)) {
	start := time.Now()
	defer func() {
		e.observe(time.Since(start))
		if r := recover(); r != nil {
			e.panics.Add(1)
			e.errors.Add(1)
			m.logger.Error("socketio: hook panicked", "hook", e.hook.Name(), "stage", s.String(), "panic", r)
		}
	}()
	call(e.hook)
}
