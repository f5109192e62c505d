package socketio

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Storage keeps sessions, tasks and conversation history.
//
// Concurrency: every method may be called concurrently from many goroutines
// (and, for shared implementations such as Redis, from many processes). A
// method honours ctx: when ctx is done it returns promptly with an error
// wrapping ctx.Err(), and a write it abandons is either applied whole or not
// at all. Methods return ErrNotFound (matched with errors.Is) for missing or
// expired data, and an error wrapping ErrUnavailable when the backend cannot
// be reached.
//
// History is the list of an owner's tasks, newest first. An owner is the
// scope that data belongs to: "u:<user id>" when a token verifier
// identified a user, otherwise "s:<session id>" (see OwnerOf). Every task
// operation is scoped by its owner, so that a store can keep all of an
// owner's data together (in one Redis Cluster slot, say).
//
// A Storage may also implement Pinger, for Server.Ready.
type Storage interface {
	// SaveSession creates or replaces a session and (re)starts its expiry.
	SaveSession(ctx context.Context, s Session) error
	// Session returns the session with the given id, or ErrNotFound.
	Session(ctx context.Context, id string) (Session, error)
	// TouchSession records activity: it sets LastSeen and restarts the
	// session's expiry. It returns ErrNotFound for an unknown session.
	TouchSession(ctx context.Context, id string, at time.Time) error
	// DeleteSession removes a session; deleting an unknown one is not an error.
	DeleteSession(ctx context.Context, id string) error

	// CreateTask stores a new pending task at the head of its owner's
	// history, unless the task's session already has maxOpen or more
	// unfinished tasks, in which case it stores nothing and returns
	// ErrTooManyTasks. maxOpen <= 0 means no limit. The check and the
	// write are one atomic step.
	CreateTask(ctx context.Context, t Task, maxOpen int) error
	// Task returns the owner's task with the given id, or ErrNotFound (also
	// when the id belongs to another owner: ids leak nothing).
	Task(ctx context.Context, owner, id string) (Task, error)
	// UpdateTask applies u to the owner's task atomically when the
	// transition is allowed (pending → processing → completed | failed |
	// cancelled, and pending straight to a final status). It returns the
	// task as it stands after the call and whether u was applied. A task
	// that has already finished never changes: that is (task, false, nil),
	// not an error. A zero u.At means now.
	UpdateTask(ctx context.Context, owner, id string, u TaskUpdate) (Task, bool, error)
	// History returns up to limit of the owner's tasks, newest first. With
	// before set to a task id, it returns the tasks older than that one; an
	// unknown before is ErrNotFound. hasMore reports whether older tasks
	// remain.
	History(ctx context.Context, owner string, before string, limit int) (items []Task, hasMore bool, err error)
	// ClearHistory deletes the owner's finished tasks and returns how many
	// it deleted. Unfinished tasks stay.
	ClearHistory(ctx context.Context, owner string) (deleted int, err error)

	// RecordQuestion counts one more asking of question (already trimmed)
	// in the popularity index that feeds suggestions.
	RecordQuestion(ctx context.Context, question string) error
	// PopularQuestions returns up to limit questions, most asked first.
	PopularQuestions(ctx context.Context, limit int) ([]string, error)
}

// StorageOptions configures the retention of a Storage. The zero value means
// the defaults.
type StorageOptions struct {
	// SessionTTL is how long a session lives after its last activity.
	// default: 24h
	SessionTTL time.Duration
	// HistoryTTL is how long tasks and history live after their last write.
	// default: 168h (7 days)
	HistoryTTL time.Duration
	// MaxHistory caps the tasks kept per owner; the oldest finished ones are
	// dropped first. default: 200
	MaxHistory int
	// MaxPopular caps the distinct questions in the popularity index.
	// default: 10000
	MaxPopular int
}

func (o StorageOptions) withDefaults() StorageOptions {
	if o.SessionTTL <= 0 {
		o.SessionTTL = 24 * time.Hour
	}
	if o.HistoryTTL <= 0 {
		o.HistoryTTL = 7 * 24 * time.Hour
	}
	if o.MaxHistory <= 0 {
		o.MaxHistory = 200
	}
	if o.MaxPopular <= 0 {
		o.MaxPopular = 10000
	}
	return o
}

// Session is one client session. A session outlives its sockets: a client
// that reconnects with its resume token gets the same session back.
type Session struct {
	ID        string            `json:"session_id"`
	UserID    string            `json:"user_id,omitempty"`
	Address   string            `json:"address,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	LastSeen  time.Time         `json:"last_seen"`
	Data      map[string]string `json:"data,omitempty"`
}

// Owner returns the scope that the session's tasks and history belong to.
func (s Session) Owner() string { return OwnerOf(s.ID, s.UserID) }

// OwnerOf returns the owner scope for a session: its user when a user was
// identified, otherwise the session itself.
func OwnerOf(sessionID, userID string) string {
	if userID != "" {
		return "u:" + userID
	}
	return "s:" + sessionID
}

// TaskStatus is the state of an answer task.
type TaskStatus string

// Task statuses, in the order a task moves through them.
const (
	TaskPending    TaskStatus = "pending"
	TaskProcessing TaskStatus = "processing"
	TaskCompleted  TaskStatus = "completed"
	TaskFailed     TaskStatus = "failed"
	TaskCancelled  TaskStatus = "cancelled"
)

// Finished reports whether the status is final.
func (s TaskStatus) Finished() bool {
	return s == TaskCompleted || s == TaskFailed || s == TaskCancelled
}

// CanMoveTo reports whether a task may go from s to next.
func (s TaskStatus) CanMoveTo(next TaskStatus) bool {
	switch s {
	case TaskPending:
		return next == TaskProcessing || next.Finished()
	case TaskProcessing:
		return next.Finished()
	}
	return false
}

// TaskError is why a task failed or was cancelled.
type TaskError struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

// Task is one question and its answer, as stored and as sent on the wire.
type Task struct {
	ID        string `json:"task_id"`
	SessionID string `json:"session_id"`
	// Owner is the scope the task belongs to (see OwnerOf).
	Owner    string     `json:"owner"`
	Question string     `json:"question"`
	Context  string     `json:"context,omitempty"`
	Room     string     `json:"room,omitempty"`
	Stream   bool       `json:"stream,omitempty"`
	Status   TaskStatus `json:"status"`
	Answer   string     `json:"answer,omitempty"`
	Sources  []string   `json:"sources,omitempty"`
	Error    *TaskError `json:"error,omitempty"`
	// Usage is the token usage the Answerer reported, if any. It is kept,
	// not sent to clients.
	Usage      *Usage    `json:"usage,omitempty"`
	AskedAt    time.Time `json:"asked_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	AnsweredAt time.Time `json:"answered_at,omitzero"`
}

// TaskUpdate is a status transition with what comes with it.
type TaskUpdate struct {
	Status TaskStatus
	// At is when the transition happened; it becomes UpdatedAt, and
	// AnsweredAt when Status is final.
	At      time.Time
	Answer  string
	Sources []string
	Error   *TaskError
	// Usage is kept with a final status (see Task.Usage).
	Usage *Usage
}

// Apply returns t after u, and whether the transition was allowed. It is the
// transition rule every Storage implements.
func (u TaskUpdate) Apply(t Task) (Task, bool) {
	if !t.Status.CanMoveTo(u.Status) {
		return t, false
	}
	t.Status = u.Status
	t.UpdatedAt = u.At
	if u.Status.Finished() {
		t.AnsweredAt = u.At
		t.Answer = u.Answer
		t.Sources = u.Sources
		t.Error = u.Error
		t.Usage = u.Usage
	}
	return t, true
}

// checkNewTask is the validation every Storage applies in CreateTask: an
// id, an owner, and a status that is empty or pending.
func checkNewTask(t Task) error {
	switch {
	case t.ID == "":
		return errors.New("socketio: create task: empty task id")
	case t.Owner == "":
		return fmt.Errorf("socketio: create task %q: empty owner", t.ID)
	case t.Status != "" && t.Status != TaskPending:
		return fmt.Errorf("socketio: create task %q: status %q is not %q", t.ID, t.Status, TaskPending)
	}
	return nil
}
