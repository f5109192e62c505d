package socketio

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// hookCallLog records the names of the hooks called, in order.
type hookCallLog struct {
	mu    sync.Mutex
	names []string
}

func (l *hookCallLog) add(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.names = append(l.names, name)
}

// take returns the names recorded since the last take.
func (l *hookCallLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.names
	l.names = nil
	return out
}

// prioritiesKey carries, in a dispatch's context, a *[]int to which every
// hook called appends its priority.
type prioritiesKey struct{}

// fakeHook is the behaviour shared by the test hooks; the wrapper types
// below choose which stages a hook implements.
type fakeHook struct {
	BaseHook
	log        *hookCallLog
	err        error // returned by before-methods
	panics     bool  // every method panics with panicValue
	panicValue any
	// tick makes each call last until the monotonic clock has advanced, so
	// that the measured latency is non-zero on any clock resolution.
	tick bool
	// during, if set, runs inside each call.
	during func()
}

func (h *fakeHook) hit(ctx context.Context) error {
	if h.log != nil {
		h.log.add(h.Name())
	}
	if p, ok := ctx.Value(prioritiesKey{}).(*[]int); ok {
		*p = append(*p, h.Priority())
	}
	if h.tick {
		for t0 := time.Now(); time.Since(t0) == 0; {
		}
	}
	if h.during != nil {
		h.during()
	}
	if h.panics {
		panic(h.panicValue)
	}
	return h.err
}

// fakePlainHook implements no stage.
type fakePlainHook struct{ *fakeHook }

// fakeConnectHook implements BeforeConnect only.
type fakeConnectHook struct{ *fakeHook }

func (h fakeConnectHook) BeforeConnect(ctx context.Context, _ *ConnectEvent) error { return h.hit(ctx) }

// fakeQuestionHook implements BeforeQuestion and AfterQuestion.
type fakeQuestionHook struct{ *fakeHook }

func (h fakeQuestionHook) BeforeQuestion(ctx context.Context, _ *QuestionEvent) error {
	return h.hit(ctx)
}
func (h fakeQuestionHook) AfterQuestion(ctx context.Context, _ *QuestionEvent) { _ = h.hit(ctx) }

// fakeAllHook implements every stage.
type fakeAllHook struct{ *fakeHook }

func (h fakeAllHook) BeforeConnect(ctx context.Context, _ *ConnectEvent) error { return h.hit(ctx) }
func (h fakeAllHook) AfterConnect(ctx context.Context, _ *ConnectEvent)        { _ = h.hit(ctx) }
func (h fakeAllHook) BeforeDisconnect(ctx context.Context, _ *DisconnectEvent) { _ = h.hit(ctx) }
func (h fakeAllHook) AfterDisconnect(ctx context.Context, _ *DisconnectEvent)  { _ = h.hit(ctx) }
func (h fakeAllHook) BeforeJoinRoom(ctx context.Context, _ *RoomEvent) error   { return h.hit(ctx) }
func (h fakeAllHook) AfterJoinRoom(ctx context.Context, _ *RoomEvent)          { _ = h.hit(ctx) }
func (h fakeAllHook) BeforeLeaveRoom(ctx context.Context, _ *RoomEvent) error  { return h.hit(ctx) }
func (h fakeAllHook) AfterLeaveRoom(ctx context.Context, _ *RoomEvent)         { _ = h.hit(ctx) }
func (h fakeAllHook) BeforeQuestion(ctx context.Context, _ *QuestionEvent) error {
	return h.hit(ctx)
}
func (h fakeAllHook) AfterQuestion(ctx context.Context, _ *QuestionEvent)       { _ = h.hit(ctx) }
func (h fakeAllHook) BeforeAnswer(ctx context.Context, _ *AnswerEvent) error    { return h.hit(ctx) }
func (h fakeAllHook) AfterAnswer(ctx context.Context, _ *AnswerEvent)           { _ = h.hit(ctx) }
func (h fakeAllHook) AfterSuggestions(ctx context.Context, _ *SuggestionsEvent) { _ = h.hit(ctx) }
func (h fakeAllHook) BeforeSuggestions(ctx context.Context, _ *SuggestionsEvent) error {
	return h.hit(ctx)
}
func (h fakeAllHook) BeforeHistory(ctx context.Context, _ *HistoryEvent) error { return h.hit(ctx) }
func (h fakeAllHook) AfterHistory(ctx context.Context, _ *HistoryEvent)        { _ = h.hit(ctx) }
func (h fakeAllHook) BeforeClearHistory(ctx context.Context, _ *ClearHistoryEvent) error {
	return h.hit(ctx)
}
func (h fakeAllHook) AfterClearHistory(ctx context.Context, _ *ClearHistoryEvent) { _ = h.hit(ctx) }

var (
	_ BeforeConnectHook  = fakeConnectHook{}
	_ AfterQuestionHook  = fakeQuestionHook{}
	_ BeforeQuestionHook = fakeQuestionHook{}
	_ AfterConnectHook   = fakeAllHook{}
)

type hookKind int

const (
	hookKindAll hookKind = iota
	hookKindQuestion
	hookKindConnect
	hookKindNone
)

// hookReg describes one registration.
type hookReg struct {
	name string
	prio int
	kind hookKind
}

func newFakeHook(r hookReg, log *hookCallLog) (Hook, *fakeHook) {
	th := &fakeHook{BaseHook: NewBaseHook(r.name, r.prio), log: log}
	switch r.kind {
	case hookKindQuestion:
		return fakeQuestionHook{th}, th
	case hookKindConnect:
		return fakeConnectHook{th}, th
	case hookKindNone:
		return fakePlainHook{th}, th
	default:
		return fakeAllHook{th}, th
	}
}

// newTestHookManager returns a HookManager logging JSON records to the
// returned buffer.
func newTestHookManager(t *testing.T) (*HookManager, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	return NewHookManager(slog.New(slog.NewJSONHandler(&buf, nil))), &buf
}

// registerHooks registers every r on m, failing the test on error.
func registerHooks(t *testing.T, m *HookManager, log *hookCallLog, regs ...hookReg) map[string]*fakeHook {
	t.Helper()
	out := make(map[string]*fakeHook, len(regs))
	for _, r := range regs {
		h, th := newFakeHook(r, log)
		require.NoError(t, m.Register(h), "Register(%q)", r.name)
		out[r.name] = th
	}
	return out
}

// dispatchStage runs stage s on m the way the server does, and returns the
// before-chain's result (nil for after-stages).
func dispatchStage(ctx context.Context, m *HookManager, s stage) error {
	switch s {
	case beforeConnect:
		e := &ConnectEvent{}
		return m.runBefore(s, func(h Hook) error { return h.(BeforeConnectHook).BeforeConnect(ctx, e) })
	case afterConnect:
		e := &ConnectEvent{}
		m.runAfter(s, func(h Hook) { h.(AfterConnectHook).AfterConnect(ctx, e) })
	case beforeDisconnect:
		e := &DisconnectEvent{}
		m.runAfter(s, func(h Hook) { h.(BeforeDisconnectHook).BeforeDisconnect(ctx, e) })
	case afterDisconnect:
		e := &DisconnectEvent{}
		m.runAfter(s, func(h Hook) { h.(AfterDisconnectHook).AfterDisconnect(ctx, e) })
	case beforeJoinRoom:
		e := &RoomEvent{}
		return m.runBefore(s, func(h Hook) error { return h.(BeforeJoinRoomHook).BeforeJoinRoom(ctx, e) })
	case afterJoinRoom:
		e := &RoomEvent{}
		m.runAfter(s, func(h Hook) { h.(AfterJoinRoomHook).AfterJoinRoom(ctx, e) })
	case beforeLeaveRoom:
		e := &RoomEvent{}
		return m.runBefore(s, func(h Hook) error { return h.(BeforeLeaveRoomHook).BeforeLeaveRoom(ctx, e) })
	case afterLeaveRoom:
		e := &RoomEvent{}
		m.runAfter(s, func(h Hook) { h.(AfterLeaveRoomHook).AfterLeaveRoom(ctx, e) })
	case beforeQuestion:
		e := &QuestionEvent{}
		return m.runBefore(s, func(h Hook) error { return h.(BeforeQuestionHook).BeforeQuestion(ctx, e) })
	case afterQuestion:
		e := &QuestionEvent{}
		m.runAfter(s, func(h Hook) { h.(AfterQuestionHook).AfterQuestion(ctx, e) })
	case beforeAnswer:
		e := &AnswerEvent{}
		return m.runBefore(s, func(h Hook) error { return h.(BeforeAnswerHook).BeforeAnswer(ctx, e) })
	case afterAnswer:
		e := &AnswerEvent{}
		m.runAfter(s, func(h Hook) { h.(AfterAnswerHook).AfterAnswer(ctx, e) })
	case beforeSuggestions:
		e := &SuggestionsEvent{}
		return m.runBefore(s, func(h Hook) error { return h.(BeforeSuggestionsHook).BeforeSuggestions(ctx, e) })
	case afterSuggestions:
		e := &SuggestionsEvent{}
		m.runAfter(s, func(h Hook) { h.(AfterSuggestionsHook).AfterSuggestions(ctx, e) })
	case beforeHistory:
		e := &HistoryEvent{}
		return m.runBefore(s, func(h Hook) error { return h.(BeforeHistoryHook).BeforeHistory(ctx, e) })
	case afterHistory:
		e := &HistoryEvent{}
		m.runAfter(s, func(h Hook) { h.(AfterHistoryHook).AfterHistory(ctx, e) })
	case beforeClearHistory:
		e := &ClearHistoryEvent{}
		return m.runBefore(s, func(h Hook) error { return h.(BeforeClearHistoryHook).BeforeClearHistory(ctx, e) })
	case afterClearHistory:
		e := &ClearHistoryEvent{}
		m.runAfter(s, func(h Hook) { h.(AfterClearHistoryHook).AfterClearHistory(ctx, e) })
	default:
		panic(fmt.Sprintf("unknown stage %d", s))
	}
	return nil
}

// hooksCalledFor dispatches s and returns the names of the hooks called.
func hooksCalledFor(t *testing.T, m *HookManager, log *hookCallLog, s stage) []string {
	t.Helper()
	log.take()
	require.NoError(t, dispatchStage(context.Background(), m, s), "dispatch %s", s)
	return log.take()
}

// hookInfoOf returns the HooksInfo entry of the named hook.
func hookInfoOf(t *testing.T, m *HookManager, name string) HookInfo {
	t.Helper()
	for _, info := range m.HooksInfo() {
		if info.Name == name {
			return info
		}
	}
	require.Failf(t, "hook not listed", "HooksInfo has no %q", name)
	return HookInfo{}
}

// hookLogRecords parses the JSON log records written to buf.
func hookLogRecords(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(buf.Bytes()))
	for sc.Scan() {
		var rec map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &rec), "log line %q", sc.Text())
		out = append(out, rec)
	}
	require.NoError(t, sc.Err())
	return out
}

func allHookStages() []stage {
	out := make([]stage, 0, numStages)
	for s := range numStages {
		out = append(out, s)
	}
	return out
}

func TestHookManagerCallOrder(t *testing.T) {
	every := func(names ...string) map[stage][]string {
		out := map[stage][]string{}
		for _, s := range allHookStages() {
			out[s] = names
		}
		return out
	}
	tests := []struct {
		name string
		regs []hookReg
		want map[stage][]string // stages absent here call no hook
	}{
		{
			name: "no hooks",
			want: map[stage][]string{},
		},
		{
			name: "higher priority first",
			regs: []hookReg{{"a", 10, hookKindAll}, {"b", 100, hookKindAll}, {"c", 50, hookKindAll}},
			want: every("b", "c", "a"),
		},
		{
			name: "equal priorities in registration order",
			regs: []hookReg{{"c", 50, hookKindAll}, {"a", 50, hookKindAll}, {"b", 50, hookKindAll}},
			want: every("c", "a", "b"),
		},
		{
			name: "mixed and negative priorities",
			regs: []hookReg{
				{"a", 50, hookKindAll}, {"b", 100, hookKindAll}, {"c", 50, hookKindAll},
				{"d", 100, hookKindAll}, {"e", -5, hookKindAll}, {"f", 10, hookKindAll},
			},
			want: every("b", "d", "a", "c", "f", "e"),
		},
		{
			name: "built-in priorities registered in reverse",
			regs: []hookReg{
				{MetricsHookName, MetricsHookPriority, hookKindAll},
				{"user", 50, hookKindAll},
				{StorageHookName, StorageHookPriority, hookKindAll},
				{RateLimitHookName, RateLimitHookPriority, hookKindAll},
				{AuthHookName, AuthHookPriority, hookKindAll},
			},
			want: every(AuthHookName, RateLimitHookName, StorageHookName, "user", MetricsHookName),
		},
		{
			name: "only the stages a hook implements",
			regs: []hookReg{
				{"none", 200, hookKindNone},
				{"conn", 100, hookKindConnect},
				{"q", 50, hookKindQuestion},
				{"all", 10, hookKindAll},
			},
			want: func() map[stage][]string {
				w := every("all")
				w[beforeConnect] = []string{"conn", "all"}
				w[beforeQuestion] = []string{"q", "all"}
				w[afterQuestion] = []string{"q", "all"}
				return w
			}(),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newTestHookManager(t)
			log := &hookCallLog{}
			registerHooks(t, m, log, tc.regs...)
			for _, s := range allHookStages() {
				assert.Equal(t, tc.want[s], hooksCalledFor(t, m, log, s), "stage %s", s)
			}
		})
	}
}

func TestHookManagerRegisterErrors(t *testing.T) {
	tests := []struct {
		name    string
		hook    Hook
		wantErr string
	}{
		{name: "nil hook", hook: nil, wantErr: "nil hook"},
		{name: "empty name", hook: fakeAllHook{&fakeHook{BaseHook: NewBaseHook("", 50)}}, wantErr: "no name"},
		{name: "duplicate name", hook: fakeAllHook{&fakeHook{BaseHook: NewBaseHook("a", 50)}}, wantErr: `"a" is already registered`},
		{name: "duplicate name, other priority", hook: fakeQuestionHook{&fakeHook{BaseHook: NewBaseHook("a", 99)}}, wantErr: `"a" is already registered`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newTestHookManager(t)
			log := &hookCallLog{}
			original := registerHooks(t, m, log, hookReg{"a", 50, hookKindAll})["a"]

			err := m.Register(tc.hook)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)

			// The manager is unchanged.
			assert.Len(t, m.HooksInfo(), 1)
			h, ok := m.Hook("a")
			require.True(t, ok)
			assert.Same(t, original, h.(fakeAllHook).fakeHook)
			assert.Equal(t, []string{"a"}, hooksCalledFor(t, m, log, beforeQuestion))
		})
	}
}

func TestHookManagerUnregister(t *testing.T) {
	m, _ := newTestHookManager(t)
	log := &hookCallLog{}
	registerHooks(t, m, log, hookReg{"a", 50, hookKindAll}, hookReg{"b", 50, hookKindAll}, hookReg{"c", 50, hookKindAll})

	assert.True(t, m.Unregister("b"))
	assert.Equal(t, []string{"a", "c"}, hooksCalledFor(t, m, log, beforeQuestion))
	assert.Equal(t, []string{"a", "c"}, hooksCalledFor(t, m, log, afterQuestion))
	_, ok := m.Hook("b")
	assert.False(t, ok)
	for _, info := range m.HooksInfo() {
		assert.NotEqual(t, "b", info.Name)
	}

	assert.False(t, m.Unregister("b"), "second Unregister")
	assert.False(t, m.Unregister("unknown"))
	assert.False(t, m.Unregister(""))

	// The name is free again; the new hook is registered last among equals.
	registerHooks(t, m, log, hookReg{"b", 50, hookKindAll})
	assert.Equal(t, []string{"a", "c", "b"}, hooksCalledFor(t, m, log, beforeQuestion))
}

func TestHookManagerEnableDisable(t *testing.T) {
	m, _ := newTestHookManager(t)
	log := &hookCallLog{}
	registerHooks(t, m, log, hookReg{"a", 50, hookKindAll}, hookReg{"b", 50, hookKindAll}, hookReg{"c", 50, hookKindAll}, hookReg{"d", 10, hookKindAll})

	steps := []struct {
		name   string
		do     func() bool
		wantOK bool
		want   []string // called for before_question and after_question
	}{
		{"disable b", func() bool { return m.Disable("b") }, true, []string{"a", "c", "d"}},
		{"disable b again", func() bool { return m.Disable("b") }, true, []string{"a", "c", "d"}},
		{"disable a", func() bool { return m.Disable("a") }, true, []string{"c", "d"}},
		{"enable b keeps its position", func() bool { return m.Enable("b") }, true, []string{"b", "c", "d"}},
		{"enable b again", func() bool { return m.Enable("b") }, true, []string{"b", "c", "d"}},
		{"enable a keeps its position", func() bool { return m.Enable("a") }, true, []string{"a", "b", "c", "d"}},
		{"disable unknown", func() bool { return m.Disable("x") }, false, []string{"a", "b", "c", "d"}},
		{"enable unknown", func() bool { return m.Enable("x") }, false, []string{"a", "b", "c", "d"}},
	}
	for _, st := range steps {
		assert.Equal(t, st.wantOK, st.do(), st.name)
		assert.Equal(t, st.want, hooksCalledFor(t, m, log, beforeQuestion), "%s: before_question", st.name)
		assert.Equal(t, st.want, hooksCalledFor(t, m, log, afterQuestion), "%s: after_question", st.name)
	}

	// A disabled hook stays listed, in its place, and keeps its counters.
	require.True(t, m.Disable("b"))
	var names []string
	for _, info := range m.HooksInfo() {
		names = append(names, info.Name)
		assert.Equal(t, info.Name != "b", info.Enabled, "Enabled of %s", info.Name)
	}
	assert.Equal(t, []string{"a", "b", "c", "d"}, names)
	calls := hookInfoOf(t, m, "b").Calls
	assert.Positive(t, calls)
	hooksCalledFor(t, m, log, beforeQuestion)
	assert.Equal(t, calls, hookInfoOf(t, m, "b").Calls, "a disabled hook is not called")

	// Everything disabled: chains are empty and nothing refuses.
	for _, n := range []string{"a", "b", "c", "d"} {
		require.True(t, m.Disable(n))
	}
	for _, s := range allHookStages() {
		assert.Empty(t, hooksCalledFor(t, m, log, s), "stage %s", s)
	}
}

func TestHookManagerReplace(t *testing.T) {
	m, _ := newTestHookManager(t)
	log := &hookCallLog{}
	registerHooks(t, m, log, hookReg{"a", 50, hookKindAll}, hookReg{"b", 40, hookKindAll}, hookReg{"c", 30, hookKindAll})
	hooksCalledFor(t, m, log, beforeQuestion)
	require.EqualValues(t, 1, hookInfoOf(t, m, "b").Calls)

	// Replace a hook by one of another priority and other stages.
	nb, _ := newFakeHook(hookReg{"b", 60, hookKindQuestion}, log)
	require.NoError(t, m.Replace(nb))
	assert.Equal(t, []string{"b", "a", "c"}, hooksCalledFor(t, m, log, beforeQuestion))
	assert.Equal(t, []string{"a", "c"}, hooksCalledFor(t, m, log, beforeConnect), "the new hook's stages apply")
	got, ok := m.Hook("b")
	require.True(t, ok)
	assert.Equal(t, nb, got)
	info := hookInfoOf(t, m, "b")
	assert.Equal(t, 60, info.Priority)
	assert.Equal(t, []string{"before_question", "after_question"}, info.Events)
	assert.EqualValues(t, 1, info.Calls, "counters restart with the new hook")
	assert.Len(t, m.HooksInfo(), 3)

	// Replace adds a hook that is not registered.
	nd, _ := newFakeHook(hookReg{"d", 45, hookKindAll}, log)
	require.NoError(t, m.Replace(nd))
	assert.Equal(t, []string{"b", "a", "d", "c"}, hooksCalledFor(t, m, log, beforeQuestion))

	// Replace of a disabled hook: the new hook is enabled.
	require.True(t, m.Disable("c"))
	nc, _ := newFakeHook(hookReg{"c", 30, hookKindAll}, log)
	require.NoError(t, m.Replace(nc))
	assert.True(t, hookInfoOf(t, m, "c").Enabled)
	assert.Equal(t, []string{"b", "a", "d", "c"}, hooksCalledFor(t, m, log, beforeQuestion))

	for name, h := range map[string]Hook{
		"nil":        nil,
		"empty name": fakeAllHook{&fakeHook{BaseHook: NewBaseHook("", 1)}},
	} {
		assert.Error(t, m.Replace(h), name)
	}
	assert.Len(t, m.HooksInfo(), 4)
}

func TestHookManagerHook(t *testing.T) {
	m, _ := newTestHookManager(t)
	hooks := registerHooks(t, m, nil, hookReg{"a", 50, hookKindAll}, hookReg{"q", 10, hookKindQuestion})

	tests := []struct {
		name   string
		want   *fakeHook
		wantOK bool
	}{
		{"a", hooks["a"], true},
		{"q", hooks["q"], true},
		{"missing", nil, false},
		{"", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, ok := m.Hook(tc.name)
			require.Equal(t, tc.wantOK, ok)
			if !tc.wantOK {
				assert.Nil(t, h)
				return
			}
			switch h := h.(type) {
			case fakeAllHook:
				assert.Same(t, tc.want, h.fakeHook)
			case fakeQuestionHook:
				assert.Same(t, tc.want, h.fakeHook)
			default:
				t.Fatalf("Hook(%q) returned %T", tc.name, h)
			}
		})
	}
}

func TestHookManagerBeforeRefusal(t *testing.T) {
	wrapped := errors.New("plain")
	tests := []struct {
		name     string
		err      error
		wantCode Code // ErrorCode of the returned error
	}{
		{"plain error", errors.New("nope"), ""},
		{"sentinel *Error", ErrForbidden, CodeForbidden},
		{"*Error with RetryAfter", &Error{Code: CodeRateLimited, Message: "slow down", RetryAfter: 2 * time.Second}, CodeRateLimited},
		{"wrapped *Error", fmt.Errorf("quota: %w", ErrTooManyTasks), CodeTooManyTasks},
		{"wrapped plain error", fmt.Errorf("ctx: %w", wrapped), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, logBuf := newTestHookManager(t)
			log := &hookCallLog{}
			hooks := registerHooks(t, m, log, hookReg{"first", 100, hookKindAll}, hookReg{"refuser", 50, hookKindAll}, hookReg{"later", 10, hookKindAll})
			hooks["refuser"].err = tc.err

			err := dispatchStage(context.Background(), m, beforeQuestion)
			require.Error(t, err)
			assert.Same(t, tc.err, err, "the refusal is returned as is")
			assert.Equal(t, tc.wantCode, ErrorCode(err))
			if want, ok := tc.err.(*Error); ok {
				var got *Error
				require.ErrorAs(t, err, &got)
				assert.Equal(t, want.RetryAfter, got.RetryAfter)
			}
			assert.Equal(t, []string{"first", "refuser"}, log.take(), "the chain stops at the refusal")

			// After-hooks cannot refuse: all run.
			assert.Equal(t, []string{"first", "refuser", "later"}, hooksCalledFor(t, m, log, afterQuestion))

			assert.EqualValues(t, 0, hookInfoOf(t, m, "first").Errors)
			ri := hookInfoOf(t, m, "refuser")
			assert.EqualValues(t, 2, ri.Calls)
			assert.EqualValues(t, 1, ri.Errors)
			assert.EqualValues(t, 0, ri.Panics)
			assert.EqualValues(t, 1, hookInfoOf(t, m, "later").Calls, "only the after-hook ran")
			assert.Empty(t, logBuf.String(), "refusals are not logged")
		})
	}
}

func TestHookManagerBeforePanic(t *testing.T) {
	tests := []struct {
		name  string
		value any
	}{
		{"string", "boom"},
		{"error", errors.New("kaboom")},
		{"nil", nil}, // recover sees a *runtime.PanicNilError
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, logBuf := newTestHookManager(t)
			log := &hookCallLog{}
			hooks := registerHooks(t, m, log, hookReg{"first", 100, hookKindAll}, hookReg{"panicker", 50, hookKindAll}, hookReg{"later", 10, hookKindAll})
			hooks["panicker"].panics, hooks["panicker"].panicValue = true, tc.value

			var err error
			require.NotPanics(t, func() { err = dispatchStage(context.Background(), m, beforeQuestion) })
			assert.Same(t, errHookPanic, err)
			assert.Equal(t, CodeInternal, ErrorCode(err))
			assert.ErrorIs(t, err, ErrInternal)
			assert.Equal(t, []string{"first", "panicker"}, log.take(), "later hooks are not called")

			pi := hookInfoOf(t, m, "panicker")
			assert.EqualValues(t, 1, pi.Calls)
			assert.EqualValues(t, 1, pi.Panics)
			assert.EqualValues(t, 1, pi.Errors)
			assert.EqualValues(t, 0, hookInfoOf(t, m, "later").Calls)
			assert.EqualValues(t, 0, hookInfoOf(t, m, "first").Panics)

			recs := hookLogRecords(t, logBuf)
			require.Len(t, recs, 1)
			assert.Equal(t, "ERROR", recs[0]["level"])
			assert.Equal(t, "socketio: hook panicked", recs[0]["msg"])
			assert.Equal(t, "panicker", recs[0]["hook"])
			assert.Equal(t, "before_question", recs[0]["stage"])
			assert.Contains(t, recs[0], "panic")

			// The manager keeps working and keeps counting.
			assert.Same(t, errHookPanic, dispatchStage(context.Background(), m, beforeQuestion))
			assert.EqualValues(t, 2, hookInfoOf(t, m, "panicker").Panics)
			hooks["panicker"].panics = false
			assert.NoError(t, dispatchStage(context.Background(), m, beforeQuestion))
			assert.Equal(t, []string{"first", "panicker", "first", "panicker", "later"}, log.take())
		})
	}
}

func TestHookManagerAfterPanic(t *testing.T) {
	m, logBuf := newTestHookManager(t)
	log := &hookCallLog{}
	hooks := registerHooks(t, m, log, hookReg{"first", 100, hookKindAll}, hookReg{"panicker", 50, hookKindAll}, hookReg{"later", 10, hookKindAll})
	hooks["panicker"].panics, hooks["panicker"].panicValue = true, "boom"

	for _, s := range []stage{afterQuestion, afterConnect, beforeDisconnect, afterAnswer} {
		var got []string
		require.NotPanics(t, func() { got = hooksCalledFor(t, m, log, s) }, "stage %s", s)
		assert.Equal(t, []string{"first", "panicker", "later"}, got, "stage %s: the remaining hooks run", s)
	}

	pi := hookInfoOf(t, m, "panicker")
	assert.EqualValues(t, 4, pi.Calls)
	assert.EqualValues(t, 4, pi.Panics)
	assert.EqualValues(t, 4, pi.Errors)
	assert.EqualValues(t, 4, hookInfoOf(t, m, "later").Calls)

	recs := hookLogRecords(t, logBuf)
	require.Len(t, recs, 4)
	assert.Equal(t, "panicker", recs[0]["hook"])
	assert.Equal(t, "after_question", recs[0]["stage"])
	assert.Equal(t, "boom", recs[0]["panic"])
	assert.Equal(t, "before_disconnect", recs[2]["stage"])
}

func TestHooksInfo(t *testing.T) {
	m, _ := newTestHookManager(t)
	hooks := registerHooks(t, m, nil,
		hookReg{"none", 10, hookKindNone},
		hookReg{"q", 50, hookKindQuestion},
		hookReg{"off", 20, hookKindQuestion},
		hookReg{"all", 100, hookKindAll},
	)
	hooks["all"].tick = true
	hooks["q"].tick = true
	hooks["q"].err = ErrForbidden
	require.True(t, m.Disable("off"))

	const rounds = 3
	for range rounds {
		require.ErrorIs(t, dispatchStage(context.Background(), m, beforeQuestion), ErrForbidden)
		require.NoError(t, dispatchStage(context.Background(), m, afterQuestion))
	}
	require.NoError(t, dispatchStage(context.Background(), m, beforeConnect))

	allEvents := stageNames[:]
	want := []HookInfo{
		{Name: "all", Priority: 100, Enabled: true, Events: allEvents, Calls: 2*rounds + 1},
		{Name: "q", Priority: 50, Enabled: true, Events: []string{"before_question", "after_question"}, Calls: 2 * rounds, Errors: rounds},
		{Name: "off", Priority: 20, Enabled: false, Events: []string{"before_question", "after_question"}},
		{Name: "none", Priority: 10, Enabled: true},
	}
	got := m.HooksInfo()
	require.Len(t, got, len(want))
	for i, w := range want {
		g := got[i]
		t.Run(w.Name, func(t *testing.T) {
			if w.Calls > 0 {
				assert.Positive(t, g.MeanLatency, "MeanLatency")
				assert.GreaterOrEqual(t, g.MaxLatency, g.MeanLatency, "MaxLatency >= MeanLatency")
			} else {
				assert.Zero(t, g.MeanLatency)
				assert.Zero(t, g.MaxLatency)
			}
			if len(w.Events) == 0 {
				assert.Empty(t, g.Events)
				g.Events = nil
			}
			g.MeanLatency, g.MaxLatency = 0, 0
			assert.Equal(t, w, g)
		})
	}

	// The result is a copy.
	got[0].Events[0] = "changed"
	assert.Equal(t, "before_connect", m.HooksInfo()[0].Events[0])
}

func TestHookManagerEmpty(t *testing.T) {
	m := NewHookManager(nil)
	assert.Same(t, slog.Default(), m.logger, "nil logger means slog.Default()")
	assert.Empty(t, m.HooksInfo())
	for _, s := range allHookStages() {
		assert.NoError(t, dispatchStage(context.Background(), m, s), "stage %s", s)
	}
	assert.Equal(t, "before_connect", beforeConnect.String())
	assert.Equal(t, "after_clear_history", afterClearHistory.String())
}

// Changes made from inside a hook do not deadlock, and take effect at the
// next dispatch: a dispatch runs the chain it loaded when it started.
func TestHookManagerChangesFromInsideAHook(t *testing.T) {
	m, _ := newTestHookManager(t)
	log := &hookCallLog{}
	hooks := registerHooks(t, m, log, hookReg{"a", 50, hookKindQuestion}, hookReg{"b", 40, hookKindQuestion})
	late, _ := newFakeHook(hookReg{"late", 100, hookKindQuestion}, log)
	hooks["a"].during = func() {
		hooks["a"].during = nil
		assert.NoError(t, m.Register(late))
		assert.True(t, m.Disable("b"))
		assert.NotEmpty(t, m.HooksInfo())
	}

	done := make(chan error)
	go func() { done <- dispatchStage(context.Background(), m, beforeQuestion) }()
	select {
	case err := <-done:
		require.NoError(t, err)
		assert.Equal(t, []string{"a", "b"}, log.take(), "the running dispatch keeps its chain")
	case <-time.After(10 * time.Second):
		t.Fatal("dispatch deadlocked on a change made by a hook")
	}
	assert.Equal(t, []string{"late", "a"}, hooksCalledFor(t, m, log, beforeQuestion))
}

// Registration, removal and enabling race with dispatch; every dispatch must
// see a chain sorted by priority. Run with -race.
func TestHookManagerConcurrentChangesAndDispatch(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	m := NewHookManager(slog.New(slog.NewTextHandler(io.Discard, nil)))
	// A panicking hook, last in both chains, keeps the recovery path busy
	// without hiding the other hooks.
	p, pth := newFakeHook(hookReg{"panicker", -100, hookKindQuestion}, nil)
	pth.panics, pth.panicValue = true, "boom"
	require.NoError(t, m.Register(p))

	const (
		mutators    = 4
		dispatchers = 4
		iterations  = 400
	)
	names := []string{"h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7"}
	newHook := func(r *rand.Rand) Hook {
		h, _ := newFakeHook(hookReg{names[r.IntN(len(names))], r.IntN(7)*20 - 20, hookKindQuestion}, nil)
		return h
	}

	var wg sync.WaitGroup
	for g := range mutators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 42))
			for range iterations {
				name := names[r.IntN(len(names))]
				switch r.IntN(7) {
				case 0, 1:
					_ = m.Register(newHook(r))
				case 2:
					m.Unregister(name)
				case 3:
					m.Enable(name)
				case 4:
					m.Disable(name)
				case 5:
					assert.NoError(t, m.Replace(newHook(r)))
				case 6:
					_, _ = m.Hook(name)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range iterations {
			infos := m.HooksInfo()
			for i := 1; i < len(infos); i++ {
				if infos[i].Priority > infos[i-1].Priority {
					t.Errorf("HooksInfo not sorted by priority: %+v", infos)
					return
				}
			}
		}
	}()
	sorted := func(kind string, prios []int) {
		for i := 1; i < len(prios); i++ {
			if prios[i] > prios[i-1] {
				t.Errorf("%s chain not sorted by priority: %v", kind, prios)
				return
			}
		}
	}
	for range dispatchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range iterations {
				var before, after []int
				var err error
				assert.NotPanics(t, func() {
					err = dispatchStage(context.WithValue(context.Background(), prioritiesKey{}, &before), m, beforeQuestion)
					_ = dispatchStage(context.WithValue(context.Background(), prioritiesKey{}, &after), m, afterQuestion)
				})
				assert.Same(t, errHookPanic, err, "the last hook panics")
				sorted("before", before)
				sorted("after", after)
			}
		}()
	}
	wg.Wait()

	pi := hookInfoOf(t, m, "panicker")
	assert.Positive(t, pi.Panics)
	assert.Equal(t, pi.Calls, pi.Panics)
}

// Replace swaps a hook without a window in which dispatch runs neither the
// old nor the new one.
func TestHookManagerReplaceIsAtomic(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	m, _ := newTestHookManager(t)
	require.NoError(t, m.Register(fakeQuestionHook{&fakeHook{BaseHook: NewBaseHook("guard", 100)}}))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				assert.NoError(t, m.Replace(fakeQuestionHook{&fakeHook{BaseHook: NewBaseHook("guard", 100)}}))
			}
		}
	}()
	missed := 0
	for range 20000 {
		var prios []int
		ctx := context.WithValue(context.Background(), prioritiesKey{}, &prios)
		require.NoError(t, dispatchStage(ctx, m, beforeQuestion))
		if len(prios) == 0 {
			missed++
		}
	}
	close(stop)
	wg.Wait()
	assert.Zero(t, missed, "dispatches that ran without the replaced hook")
}
