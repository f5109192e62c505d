package socketio

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// Names and priorities of the built-in hooks, registered by Register.
const (
	AuthHookName      = "auth"
	RateLimitHookName = "rate_limit"
	StorageHookName   = "storage"
	MetricsHookName   = "metrics"

	AuthHookPriority      = 100
	RateLimitHookPriority = 80
	StorageHookPriority   = 60
	MetricsHookPriority   = 10
)

// AuthHook enforces an Auth's connection, room, content and history rules.
// Disabling it lifts those rules (connections are still counted, so
// ConnectionStats stays true).
type AuthHook struct {
	BaseHook
	auth *Auth
}

// NewAuthHook returns the built-in "auth" hook (priority 100) for a.
func NewAuthHook(a *Auth) *AuthHook {
	return &AuthHook{BaseHook: NewBaseHook(AuthHookName, AuthHookPriority), auth: a}
}

// BeforeConnect checks the blocklist, the token and the per-address
// connection limit, and sets e.UserID from the token.
func (h *AuthHook) BeforeConnect(ctx context.Context, e *ConnectEvent) error {
	userID, err := h.auth.CheckConnect(ctx, e.SocketID, e.Address, e.Token)
	if err != nil {
		return err
	}
	e.UserID = userID
	return nil
}

// BeforeJoinRoom applies the room policy and the rooms-per-socket limit.
func (h *AuthHook) BeforeJoinRoom(ctx context.Context, e *RoomEvent) error {
	return h.auth.CheckRoom(ctx, e.Caller, e.Room, e.Joined)
}

// BeforeQuestion applies the question content rules.
func (h *AuthHook) BeforeQuestion(_ context.Context, e *QuestionEvent) error {
	return h.auth.CheckQuestion(e.Question)
}

// BeforeHistory allows reading only the caller's own history.
func (h *AuthHook) BeforeHistory(_ context.Context, e *HistoryEvent) error {
	if !h.auth.CanReadHistory(e.Caller, e.Owner) {
		return ErrForbidden
	}
	return nil
}

// BeforeClearHistory allows clearing only the caller's own history.
func (h *AuthHook) BeforeClearHistory(_ context.Context, e *ClearHistoryEvent) error {
	if !h.auth.CanReadHistory(e.Caller, e.Owner) {
		return ErrForbidden
	}
	return nil
}

// RateLimitHook applies an Auth's question rate limits.
type RateLimitHook struct {
	BaseHook
	auth *Auth
}

// NewRateLimitHook returns the built-in "rate_limit" hook (priority 80).
func NewRateLimitHook(a *Auth) *RateLimitHook {
	return &RateLimitHook{BaseHook: NewBaseHook(RateLimitHookName, RateLimitHookPriority), auth: a}
}

// BeforeQuestion takes a place in the session's and the address's windows;
// the place is given back if a later step refuses the question.
func (h *RateLimitHook) BeforeQuestion(ctx context.Context, e *QuestionEvent) error {
	release, err := h.auth.ReserveQuestion(ctx, e.SessionID, e.Address)
	if err != nil {
		return err
	}
	e.undo = append(e.undo, release)
	return nil
}

// StorageHook keeps session activity and the popularity index that feeds
// suggestions. Its failures are logged, never shown to clients.
type StorageHook struct {
	BaseHook
	storage Storage
	logger  *slog.Logger
	timeout time.Duration // bounds each storage call
}

// NewStorageHook returns the built-in "storage" hook (priority 60). Each
// of its storage calls is bounded by 5 s; the one Register installs uses
// Options.StorageTimeout instead.
func NewStorageHook(s Storage, logger *slog.Logger) *StorageHook {
	if logger == nil {
		logger = slog.Default()
	}
	return &StorageHook{BaseHook: NewBaseHook(StorageHookName, StorageHookPriority), storage: s, logger: logger, timeout: 5 * time.Second}
}

// AfterDisconnect records the session's last activity.
func (h *StorageHook) AfterDisconnect(ctx context.Context, e *DisconnectEvent) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	if err := h.storage.TouchSession(ctx, e.SessionID, time.Now().UTC()); err != nil {
		h.logger.Debug("socketio: touch session failed", "session", e.SessionID, "err", err)
	}
}

// AfterQuestion counts the question in the popularity index.
func (h *StorageHook) AfterQuestion(ctx context.Context, e *QuestionEvent) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.timeout)
	defer cancel()
	if err := h.storage.RecordQuestion(ctx, e.Question); err != nil {
		h.logger.Warn("socketio: recording question failed", "err", err)
	}
}

// MetricsHook counts what the service does. Read it with Snapshot.
type MetricsHook struct {
	BaseHook
	connects, disconnects, joins, leaves atomic.Uint64
	questions, suggestions, histories    atomic.Uint64
	clears                               atomic.Uint64
	completed, failed, cancelled         atomic.Uint64
	answerNs                             atomic.Int64
	current                              atomic.Int64
}

// NewMetricsHook returns the built-in "metrics" hook (priority 10).
func NewMetricsHook() *MetricsHook {
	return &MetricsHook{BaseHook: NewBaseHook(MetricsHookName, MetricsHookPriority)}
}

// Metrics is a snapshot of a MetricsHook's counters.
type Metrics struct {
	Connections       int64 // open now
	Connects          uint64
	Disconnects       uint64
	RoomJoins         uint64
	RoomLeaves        uint64
	Questions         uint64
	Suggestions       uint64
	HistoryReads      uint64
	HistoryClears     uint64
	AnswersCompleted  uint64
	AnswersFailed     uint64
	AnswersCancelled  uint64
	MeanAnswerLatency time.Duration // from asked to answered, over completed answers
	// SlowConsumers counts connections closed for passing their send
	// budget or answering a ping they were not sent (Options.MaxQueuedBytes).
	// Filled by Server.Metrics; a MetricsHook alone leaves it zero.
	SlowConsumers uint64
}

// Snapshot returns the current counters.
func (h *MetricsHook) Snapshot() Metrics {
	m := Metrics{
		Connections:      h.current.Load(),
		Connects:         h.connects.Load(),
		Disconnects:      h.disconnects.Load(),
		RoomJoins:        h.joins.Load(),
		RoomLeaves:       h.leaves.Load(),
		Questions:        h.questions.Load(),
		Suggestions:      h.suggestions.Load(),
		HistoryReads:     h.histories.Load(),
		HistoryClears:    h.clears.Load(),
		AnswersCompleted: h.completed.Load(),
		AnswersFailed:    h.failed.Load(),
		AnswersCancelled: h.cancelled.Load(),
	}
	if m.AnswersCompleted > 0 {
		m.MeanAnswerLatency = time.Duration(h.answerNs.Load() / int64(m.AnswersCompleted))
	}
	return m
}

// AfterConnect counts a connection.
func (h *MetricsHook) AfterConnect(context.Context, *ConnectEvent) {
	h.connects.Add(1)
	h.current.Add(1)
}

// AfterDisconnect counts a disconnection.
func (h *MetricsHook) AfterDisconnect(context.Context, *DisconnectEvent) {
	h.disconnects.Add(1)
	h.current.Add(-1)
}

// AfterJoinRoom counts a join.
func (h *MetricsHook) AfterJoinRoom(context.Context, *RoomEvent) { h.joins.Add(1) }

// AfterLeaveRoom counts a leave.
func (h *MetricsHook) AfterLeaveRoom(context.Context, *RoomEvent) { h.leaves.Add(1) }

// AfterQuestion counts an accepted question.
func (h *MetricsHook) AfterQuestion(context.Context, *QuestionEvent) { h.questions.Add(1) }

// AfterSuggestions counts a suggestions request.
func (h *MetricsHook) AfterSuggestions(context.Context, *SuggestionsEvent) { h.suggestions.Add(1) }

// AfterHistory counts a history read.
func (h *MetricsHook) AfterHistory(context.Context, *HistoryEvent) { h.histories.Add(1) }

// AfterClearHistory counts a history clear.
func (h *MetricsHook) AfterClearHistory(context.Context, *ClearHistoryEvent) { h.clears.Add(1) }

// AfterAnswer counts a finished task by outcome.
func (h *MetricsHook) AfterAnswer(_ context.Context, e *AnswerEvent) {
	switch e.Task.Status {
	case TaskCompleted:
		h.completed.Add(1)
		h.answerNs.Add(int64(e.Task.AnsweredAt.Sub(e.Task.AskedAt)))
	case TaskFailed:
		h.failed.Add(1)
	case TaskCancelled:
		h.cancelled.Add(1)
	}
}
