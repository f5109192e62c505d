package storagetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	socketio "github.com/qaplatform/socketio"
)

// factory returns a new, empty Storage configured by opts.
type factory = func(t *testing.T, opts socketio.StorageOptions) socketio.Storage

// Timing of the expiry subtests: short TTLs, generous polling.
const (
	shortTTL      = 200 * time.Millisecond
	expiryWait    = 5 * time.Second
	expiryPoll    = 10 * time.Millisecond
	timePrecision = time.Millisecond
)

// Run tests newStorage's Storage against the contract of socketio.Storage,
// one subtest per behaviour. newStorage is called once per subtest and
// must return a new, empty Storage configured by opts (the zero value
// means the defaults); it should register its cleanup with t.Cleanup.
func Run(t *testing.T, newStorage func(t *testing.T, opts socketio.StorageOptions) socketio.Storage) {
	t.Helper()
	cases := []struct {
		name string
		run  func(t *testing.T, newStorage factory)
	}{
		{"SessionRoundTrip", testSessionRoundTrip},
		{"SessionCopySafety", testSessionCopySafety},
		{"TouchSession", testTouchSession},
		{"DeleteSession", testDeleteSession},
		{"SessionExpiry", testSessionExpiry},
		{"TaskRoundTrip", testTaskRoundTrip},
		{"TaskCopySafety", testTaskCopySafety},
		{"TaskUsage", testTaskUsage},
		{"CreateTaskDuplicateID", testCreateTaskDuplicateID},
		{"CreateTaskInvalid", testCreateTaskInvalid},
		{"OpenTaskLimit", testOpenTaskLimit},
		{"OpenTaskLimitConcurrent", testOpenTaskLimitConcurrent},
		{"FinishingFreesSlot", testFinishingFreesSlot},
		{"Transitions", testTransitions},
		{"FinishedTaskNeverChanges", testFinishedTaskNeverChanges},
		{"UpdateUnknownTask", testUpdateUnknownTask},
		{"ConcurrentFinish", testConcurrentFinish},
		{"History", testHistory},
		{"HistoryDefaultLimit", testHistoryDefaultLimit},
		{"HistoryIsolation", testHistoryIsolation},
		{"ClearHistory", testClearHistory},
		{"MaxHistory", testMaxHistory},
		{"HistoryExpiry", testHistoryExpiry},
		{"PopularQuestions", testPopularQuestions},
		{"MaxPopular", testMaxPopular},
		{"ContextCancelled", testContextCancelled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, newStorage) })
	}
}

func testSessionRoundTrip(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()
	now := time.Now()

	want := socketio.Session{
		ID:        uniq("sess"),
		UserID:    "user-1",
		Address:   "203.0.113.7:51000",
		CreatedAt: now.Add(-time.Minute),
		LastSeen:  now,
		Data:      map[string]string{"lang": "en", "plan": "pro"},
	}
	require.NoError(t, s.SaveSession(ctx, want))
	got, err := s.Session(ctx, want.ID)
	require.NoError(t, err)
	assertSessionEqual(t, want, got)

	// Saving again replaces the whole session, Data included.
	replaced := want
	replaced.UserID = ""
	replaced.LastSeen = now.Add(time.Second)
	replaced.Data = map[string]string{"lang": "de"}
	require.NoError(t, s.SaveSession(ctx, replaced))
	got, err = s.Session(ctx, want.ID)
	require.NoError(t, err)
	assertSessionEqual(t, replaced, got)

	_, err = s.Session(ctx, uniq("missing"))
	require.ErrorIs(t, err, socketio.ErrNotFound)
}

func testSessionCopySafety(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()

	data := map[string]string{"k": "v"}
	sess := socketio.Session{ID: uniq("sess"), CreatedAt: time.Now(), LastSeen: time.Now(), Data: data}
	require.NoError(t, s.SaveSession(ctx, sess))
	data["k"] = "changed after save"
	data["extra"] = "added after save"

	got, err := s.Session(ctx, sess.ID)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"k": "v"}, got.Data, "the caller's map changed the stored session")
	got.Data["k"] = "changed after read"
	got.Data["new"] = "added after read"

	again, err := s.Session(ctx, sess.ID)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"k": "v"}, again.Data, "a returned map changed the stored session")
}

func testTouchSession(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()
	now := time.Now()

	sess := socketio.Session{
		ID:        uniq("sess"),
		UserID:    "user-1",
		CreatedAt: now,
		LastSeen:  now,
		Data:      map[string]string{"k": "v"},
	}
	require.NoError(t, s.SaveSession(ctx, sess))
	at := now.Add(time.Minute)
	require.NoError(t, s.TouchSession(ctx, sess.ID, at))

	got, err := s.Session(ctx, sess.ID)
	require.NoError(t, err)
	want := sess
	want.LastSeen = at
	assertSessionEqual(t, want, got)

	missing := uniq("missing")
	err = s.TouchSession(ctx, missing, at)
	require.ErrorIs(t, err, socketio.ErrNotFound)
	_, err = s.Session(ctx, missing)
	require.ErrorIs(t, err, socketio.ErrNotFound, "TouchSession must not create a session")
}

func testDeleteSession(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()

	sess := socketio.Session{ID: uniq("sess"), CreatedAt: time.Now(), LastSeen: time.Now()}
	other := socketio.Session{ID: uniq("sess"), CreatedAt: time.Now(), LastSeen: time.Now()}
	require.NoError(t, s.SaveSession(ctx, sess))
	require.NoError(t, s.SaveSession(ctx, other))

	require.NoError(t, s.DeleteSession(ctx, sess.ID))
	_, err := s.Session(ctx, sess.ID)
	require.ErrorIs(t, err, socketio.ErrNotFound)
	_, err = s.Session(ctx, other.ID)
	require.NoError(t, err, "deleting one session must keep the others")

	require.NoError(t, s.DeleteSession(ctx, sess.ID), "deleting twice")
	require.NoError(t, s.DeleteSession(ctx, uniq("never-saved")), "deleting an unknown session")
}

func testSessionExpiry(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{SessionTTL: shortTTL})
	ctx := t.Context()

	sess := socketio.Session{ID: uniq("sess"), CreatedAt: time.Now(), LastSeen: time.Now()}
	require.NoError(t, s.SaveSession(ctx, sess))
	_, err := s.Session(ctx, sess.ID)
	require.NoError(t, err, "a session must live SessionTTL")

	require.Eventually(t, func() bool {
		_, err := s.Session(ctx, sess.ID)
		return errors.Is(err, socketio.ErrNotFound)
	}, expiryWait, expiryPoll, "the session never expired")
	err = s.TouchSession(ctx, sess.ID, time.Now())
	require.ErrorIs(t, err, socketio.ErrNotFound, "touching an expired session")
}

func testTaskRoundTrip(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()
	now := time.Now()
	sessID := uniq("sess")

	want := socketio.Task{
		ID:        uniq("task"),
		SessionID: sessID,
		Owner:     socketio.OwnerOf(sessID, "user-1"),
		Question:  "How do I reset my password?",
		Context:   "account settings",
		Room:      "support",
		Stream:    true,
		Status:    socketio.TaskPending,
		AskedAt:   now,
		UpdatedAt: now,
	}
	require.NoError(t, s.CreateTask(ctx, want, 0))
	got, err := s.Task(ctx, want.Owner, want.ID)
	require.NoError(t, err)
	assertTaskEqual(t, want, got)

	at := now.Add(2 * time.Second)
	updated, applied, err := s.UpdateTask(ctx, want.Owner, want.ID, socketio.TaskUpdate{
		Status:  socketio.TaskCompleted,
		At:      at,
		Answer:  "Use the reset link.",
		Sources: []string{"kb/reset", "kb/account"},
	})
	require.NoError(t, err)
	require.True(t, applied)
	want.Status = socketio.TaskCompleted
	want.UpdatedAt = at
	want.AnsweredAt = at
	want.Answer = "Use the reset link."
	want.Sources = []string{"kb/reset", "kb/account"}
	assertTaskEqual(t, want, updated)
	got, err = s.Task(ctx, want.Owner, want.ID)
	require.NoError(t, err)
	assertTaskEqual(t, want, got)

	failed := newTask(want.Owner, sessID)
	require.NoError(t, s.CreateTask(ctx, failed, 0))
	taskErr := &socketio.TaskError{Code: socketio.CodeAnswerFailed, Message: "backend down"}
	_, applied, err = s.UpdateTask(ctx, failed.Owner, failed.ID, socketio.TaskUpdate{Status: socketio.TaskFailed, At: at, Error: taskErr})
	require.NoError(t, err)
	require.True(t, applied)
	got, err = s.Task(ctx, failed.Owner, failed.ID)
	require.NoError(t, err)
	require.NotNil(t, got.Error)
	assert.Equal(t, *taskErr, *got.Error)
	assertTimeEqual(t, at, got.AnsweredAt, "AnsweredAt")

	_, err = s.Task(ctx, want.Owner, uniq("missing"))
	require.ErrorIs(t, err, socketio.ErrNotFound)
	_, err = s.Task(ctx, uniq("other-owner"), want.ID)
	require.ErrorIs(t, err, socketio.ErrNotFound)
}

func testTaskCopySafety(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()

	task := newTask(socketio.OwnerOf(uniq("sess"), ""), uniq("sess"))
	require.NoError(t, s.CreateTask(ctx, task, 0))
	sources := []string{"a", "b"}
	taskErr := &socketio.TaskError{Code: socketio.CodeCancelled, Message: "stopped"}
	returned, applied, err := s.UpdateTask(ctx, task.Owner, task.ID, socketio.TaskUpdate{
		Status: socketio.TaskCancelled, At: time.Now(), Sources: sources, Error: taskErr,
	})
	require.NoError(t, err)
	require.True(t, applied)

	sources[0] = "changed after update"
	taskErr.Message = "changed after update"
	returned.Sources[1] = "changed in returned task"
	returned.Error.Code = socketio.CodeInternal

	got, err := s.Task(ctx, task.Owner, task.ID)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, got.Sources)
	assert.Equal(t, socketio.TaskError{Code: socketio.CodeCancelled, Message: "stopped"}, *got.Error)

	got.Sources[0] = "changed in read task"
	got.Error.Message = "changed in read task"
	items, _, err := s.History(ctx, task.Owner, "", 10)
	require.NoError(t, err)
	require.Len(t, items, 1)
	assert.Equal(t, []string{"a", "b"}, items[0].Sources)
	assert.Equal(t, "stopped", items[0].Error.Message)
}

// testTaskUsage: a final update's Usage is kept and read back by Task and
// History; a non-final update's is not; the stored usage is the storage's
// own copy.
func testTaskUsage(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()
	sessID := uniq("sess")
	owner := socketio.OwnerOf(sessID, "")

	task := newTask(owner, sessID)
	require.NoError(t, s.CreateTask(ctx, task, 0))
	usage := &socketio.Usage{PromptTokens: 120, CompletionTokens: 34, TotalTokens: 154}
	got, applied, err := s.UpdateTask(ctx, owner, task.ID, socketio.TaskUpdate{
		Status: socketio.TaskProcessing, At: time.Now(), Usage: usage,
	})
	require.NoError(t, err)
	require.True(t, applied)
	assert.Nil(t, got.Usage, "a non-final update sets no usage")
	assert.Nil(t, mustTask(t, s, owner, task.ID).Usage, "a non-final update stores no usage")

	at := time.Now()
	got, applied, err = s.UpdateTask(ctx, owner, task.ID, socketio.TaskUpdate{
		Status: socketio.TaskCompleted, At: at, Answer: "an answer", Sources: []string{"kb/1"}, Usage: usage,
	})
	require.NoError(t, err)
	require.True(t, applied)
	want := task
	want.Status, want.UpdatedAt, want.AnsweredAt = socketio.TaskCompleted, at, at
	want.Answer, want.Sources = "an answer", []string{"kb/1"}
	want.Usage = &socketio.Usage{PromptTokens: 120, CompletionTokens: 34, TotalTokens: 154}
	assertTaskEqual(t, want, got)

	usage.TotalTokens = -1 // the caller's copy changes after the update
	got.Usage.PromptTokens = -1
	read := mustTask(t, s, owner, task.ID)
	assertTaskEqual(t, want, read)
	read.Usage.CompletionTokens = -1
	items, _, err := s.History(ctx, owner, "", 10)
	require.NoError(t, err)
	require.Len(t, items, 1)
	assertTaskEqual(t, want, items[0])

	// Zero counts are a usage too, and a final update without usage
	// stores none.
	zero := newTask(owner, sessID)
	require.NoError(t, s.CreateTask(ctx, zero, 0))
	_, _, err = s.UpdateTask(ctx, owner, zero.ID, socketio.TaskUpdate{Status: socketio.TaskFailed, At: at, Usage: &socketio.Usage{}})
	require.NoError(t, err)
	assert.Equal(t, &socketio.Usage{}, mustTask(t, s, owner, zero.ID).Usage)
	none := newTask(owner, sessID)
	require.NoError(t, s.CreateTask(ctx, none, 0))
	_, _, err = s.UpdateTask(ctx, owner, none.ID, socketio.TaskUpdate{Status: socketio.TaskCancelled, At: at})
	require.NoError(t, err)
	assert.Nil(t, mustTask(t, s, owner, none.ID).Usage)
}

func testCreateTaskDuplicateID(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()

	first := newTask(socketio.OwnerOf(uniq("sess"), ""), uniq("sess"))
	first.Question = "first"
	require.NoError(t, s.CreateTask(ctx, first, 0))
	otherOwner := socketio.OwnerOf(uniq("sess"), "")

	tests := []struct {
		name  string
		owner string
	}{
		{"same owner", first.Owner},
		{"other owner", otherOwner},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dup := first
			dup.Owner = tt.owner
			dup.Question = "second"
			require.Error(t, s.CreateTask(ctx, dup, 0))

			got, err := s.Task(ctx, first.Owner, first.ID)
			require.NoError(t, err)
			assert.Equal(t, "first", got.Question, "a duplicate replaced the task")
			assert.Equal(t, []string{first.ID}, historyIDs(t, s, first.Owner, "", 10))
			assert.Empty(t, historyIDs(t, s, otherOwner, "", 10))
		})
	}
}

func testCreateTaskInvalid(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()

	tests := []struct {
		name   string
		mutate func(*socketio.Task)
	}{
		{"no id", func(t *socketio.Task) { t.ID = "" }},
		{"no owner", func(t *socketio.Task) { t.Owner = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := newTask(socketio.OwnerOf(uniq("sess"), ""), uniq("sess"))
			tt.mutate(&task)
			require.Error(t, s.CreateTask(ctx, task, 0))
		})
	}
}

func testOpenTaskLimit(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()
	sessA, sessB := uniq("sess"), uniq("sess")
	owner := socketio.OwnerOf(sessA, "user-1") // both sessions belong to one user

	const maxOpen = 3
	for range maxOpen {
		require.NoError(t, s.CreateTask(ctx, newTask(owner, sessA), maxOpen))
	}
	extra := newTask(owner, sessA)
	err := s.CreateTask(ctx, extra, maxOpen)
	require.ErrorIs(t, err, socketio.ErrTooManyTasks)
	_, err = s.Task(ctx, extra.Owner, extra.ID)
	require.ErrorIs(t, err, socketio.ErrNotFound, "a refused task must not be stored")
	require.Len(t, historyIDs(t, s, owner, "", 100), maxOpen)

	require.NoError(t, s.CreateTask(ctx, newTask(owner, sessB), maxOpen), "the limit is per session")
	require.NoError(t, s.CreateTask(ctx, newTask(owner, sessA), 0), "maxOpen 0 means no limit")
	require.NoError(t, s.CreateTask(ctx, newTask(owner, sessA), -1), "maxOpen < 0 means no limit")
	require.Len(t, historyIDs(t, s, owner, "", 100), maxOpen+3)
}

func testOpenTaskLimitConcurrent(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()
	sess := uniq("sess")
	owner := socketio.OwnerOf(sess, "")

	const workers, maxOpen = 20, 3
	tasks := make([]socketio.Task, workers)
	for i := range tasks {
		tasks[i] = newTask(owner, sess)
	}
	errs := make([]error, workers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = s.CreateTask(ctx, tasks[i], maxOpen)
		}()
	}
	close(start)
	wg.Wait()

	created, refused := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			created++
		case errors.Is(err, socketio.ErrTooManyTasks):
			refused++
		default:
			t.Errorf("CreateTask: unexpected error %v", err)
		}
	}
	assert.Equal(t, maxOpen, created, "created")
	assert.Equal(t, workers-maxOpen, refused, "refused")
	assert.Len(t, historyIDs(t, s, owner, "", 100), maxOpen)
}

func testFinishingFreesSlot(t *testing.T, newStorage factory) {
	tests := []struct {
		name string
		path []socketio.TaskStatus
	}{
		{"completed", []socketio.TaskStatus{socketio.TaskProcessing, socketio.TaskCompleted}},
		{"failed", []socketio.TaskStatus{socketio.TaskProcessing, socketio.TaskFailed}},
		{"cancelled while processing", []socketio.TaskStatus{socketio.TaskProcessing, socketio.TaskCancelled}},
		{"cancelled while pending", []socketio.TaskStatus{socketio.TaskCancelled}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStorage(t, socketio.StorageOptions{})
			ctx := t.Context()
			sess := uniq("sess")
			owner := socketio.OwnerOf(sess, "")

			first := newTask(owner, sess)
			require.NoError(t, s.CreateTask(ctx, first, 1))
			for _, status := range tt.path {
				require.ErrorIs(t, s.CreateTask(ctx, newTask(owner, sess), 1), socketio.ErrTooManyTasks,
					"a %s task holds its slot", mustTask(t, s, first.Owner, first.ID).Status)
				update(t, s, first.Owner, first.ID, status)
			}
			require.NoError(t, s.CreateTask(ctx, newTask(owner, sess), 1), "a finished task frees its slot")
			require.ErrorIs(t, s.CreateTask(ctx, newTask(owner, sess), 1), socketio.ErrTooManyTasks)
		})
	}
}

func testTransitions(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()

	const (
		pending    = socketio.TaskPending
		processing = socketio.TaskProcessing
		completed  = socketio.TaskCompleted
		failed     = socketio.TaskFailed
		cancelled  = socketio.TaskCancelled
		unknown    = socketio.TaskStatus("archived")
	)
	tests := []struct {
		from, to socketio.TaskStatus
		allowed  bool
	}{
		{pending, pending, false},
		{pending, processing, true},
		{pending, completed, true},
		{pending, failed, true},
		{pending, cancelled, true},
		{pending, unknown, false},
		{processing, pending, false},
		{processing, processing, false},
		{processing, completed, true},
		{processing, failed, true},
		{processing, cancelled, true},
		{processing, unknown, false},
	}
	for _, from := range []socketio.TaskStatus{completed, failed, cancelled} {
		for _, to := range []socketio.TaskStatus{pending, processing, completed, failed, cancelled, unknown} {
			tests = append(tests, struct {
				from, to socketio.TaskStatus
				allowed  bool
			}{from, to, false})
		}
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s_to_%s", tt.from, tt.to), func(t *testing.T) {
			task := newTask(socketio.OwnerOf(uniq("sess"), ""), uniq("sess"))
			require.NoError(t, s.CreateTask(ctx, task, 0))
			if tt.from != pending {
				update(t, s, task.Owner, task.ID, tt.from)
			}
			before := mustTask(t, s, task.Owner, task.ID)
			require.Equal(t, tt.from, before.Status)

			at := before.UpdatedAt.Add(time.Minute)
			u := socketio.TaskUpdate{Status: tt.to, At: at, Answer: "new answer", Sources: []string{"new"}}
			if tt.to == failed {
				u.Error = &socketio.TaskError{Code: socketio.CodeAnswerFailed, Message: "new error"}
			}
			got, applied, err := s.UpdateTask(ctx, task.Owner, task.ID, u)
			require.NoError(t, err)
			assert.Equal(t, tt.allowed, applied, "applied")

			want := before
			if tt.allowed {
				want.Status = tt.to
				want.UpdatedAt = at
				if tt.to.Finished() {
					want.AnsweredAt = at
					want.Answer = u.Answer
					want.Sources = u.Sources
					want.Error = u.Error
				}
			}
			assertTaskEqual(t, want, got)
			assertTaskEqual(t, want, mustTask(t, s, task.Owner, task.ID))
		})
	}
}

func testFinishedTaskNeverChanges(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()

	task := newTask(socketio.OwnerOf(uniq("sess"), ""), uniq("sess"))
	require.NoError(t, s.CreateTask(ctx, task, 0))
	update(t, s, task.Owner, task.ID, socketio.TaskProcessing)
	update(t, s, task.Owner, task.ID, socketio.TaskCompleted)
	finished := mustTask(t, s, task.Owner, task.ID)

	for _, status := range []socketio.TaskStatus{
		socketio.TaskFailed, socketio.TaskCancelled, socketio.TaskProcessing,
		socketio.TaskPending, socketio.TaskCompleted,
	} {
		got, applied, err := s.UpdateTask(ctx, task.Owner, task.ID, socketio.TaskUpdate{
			Status: status, At: time.Now().Add(time.Hour), Answer: "late",
		})
		require.NoError(t, err, "updating a finished task is not an error")
		assert.False(t, applied, "%s applied to a finished task", status)
		assertTaskEqual(t, finished, got)
	}
	assertTaskEqual(t, finished, mustTask(t, s, task.Owner, task.ID))
}

func testUpdateUnknownTask(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	_, applied, err := s.UpdateTask(t.Context(), uniq("owner"), uniq("missing"), socketio.TaskUpdate{
		Status: socketio.TaskProcessing, At: time.Now(),
	})
	require.ErrorIs(t, err, socketio.ErrNotFound)
	assert.False(t, applied)
}

func testConcurrentFinish(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()
	finals := []socketio.TaskStatus{socketio.TaskCompleted, socketio.TaskFailed}

	const rounds, workers = 10, 8
	for round := range rounds {
		task := newTask(socketio.OwnerOf(uniq("sess"), ""), uniq("sess"))
		require.NoError(t, s.CreateTask(ctx, task, 0))
		if round%2 == 1 {
			update(t, s, task.Owner, task.ID, socketio.TaskProcessing)
		}

		type result struct {
			status  socketio.TaskStatus
			task    socketio.Task
			applied bool
			err     error
		}
		results := make([]result, workers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status := finals[i%len(finals)]
				<-start
				got, applied, err := s.UpdateTask(ctx, task.Owner, task.ID, socketio.TaskUpdate{
					Status: status, At: time.Now(), Answer: string(status),
				})
				results[i] = result{status, got, applied, err}
			}()
		}
		close(start)
		wg.Wait()

		var winner socketio.TaskStatus
		appliedCount := 0
		for _, r := range results {
			require.NoError(t, r.err)
			assert.True(t, r.task.Status.Finished(), "UpdateTask returned a task that is %s", r.task.Status)
			if r.applied {
				appliedCount++
				winner = r.status
			}
		}
		require.Equal(t, 1, appliedCount, "round %d: exactly one final update applies", round)
		stored := mustTask(t, s, task.Owner, task.ID)
		assert.Equal(t, winner, stored.Status)
		assert.Equal(t, string(winner), stored.Answer, "the answer must come with the winning status")
		for _, r := range results {
			assert.Equal(t, winner, r.task.Status, "every caller sees the winner")
		}
	}
}

func testHistory(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()
	sess := uniq("sess")
	owner := socketio.OwnerOf(sess, "")

	ids := make([]string, 5) // ids[0] is the oldest
	for i := range ids {
		task := newTask(owner, sess)
		require.NoError(t, s.CreateTask(ctx, task, 0))
		ids[i] = task.ID
	}
	otherOwner := socketio.OwnerOf(uniq("sess"), "")
	foreign := newTask(otherOwner, "other")
	require.NoError(t, s.CreateTask(ctx, foreign, 0))

	tests := []struct {
		name        string
		owner       string
		before      string
		limit       int
		want        []string
		wantHasMore bool
	}{
		{"first page", owner, "", 2, []string{ids[4], ids[3]}, true},
		{"second page", owner, ids[3], 2, []string{ids[2], ids[1]}, true},
		{"last page", owner, ids[1], 2, []string{ids[0]}, false},
		{"before the oldest", owner, ids[0], 2, []string{}, false},
		{"limit above count", owner, "", 10, []string{ids[4], ids[3], ids[2], ids[1], ids[0]}, false},
		{"limit equals count", owner, "", 5, []string{ids[4], ids[3], ids[2], ids[1], ids[0]}, false},
		{"limit one below count", owner, "", 4, []string{ids[4], ids[3], ids[2], ids[1]}, true},
		{"unknown owner", socketio.OwnerOf(uniq("sess"), ""), "", 10, []string{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			items, hasMore, err := s.History(ctx, tt.owner, tt.before, tt.limit)
			require.NoError(t, err)
			assert.Equal(t, tt.want, taskIDs(items))
			assert.Equal(t, tt.wantHasMore, hasMore, "hasMore")
		})
	}

	errTests := []struct {
		name   string
		before string
	}{
		{"unknown before", uniq("missing")},
		{"other owner's before", foreign.ID},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := s.History(ctx, owner, tt.before, 10)
			require.ErrorIs(t, err, socketio.ErrNotFound)
		})
	}

	t.Run("items are whole tasks", func(t *testing.T) {
		items, _, err := s.History(ctx, owner, "", 1)
		require.NoError(t, err)
		require.Len(t, items, 1)
		assertTaskEqual(t, mustTask(t, s, owner, ids[4]), items[0])
	})
}

func testHistoryDefaultLimit(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()
	sess := uniq("sess")
	owner := socketio.OwnerOf(sess, "")

	const total = 25
	var newest string
	for range total {
		task := newTask(owner, sess)
		require.NoError(t, s.CreateTask(ctx, task, 0))
		newest = task.ID
	}
	for _, limit := range []int{0, -1} {
		items, hasMore, err := s.History(ctx, owner, "", limit)
		require.NoError(t, err)
		require.NotEmpty(t, items, "limit %d must mean a default page size", limit)
		assert.LessOrEqual(t, len(items), total)
		assert.Equal(t, newest, items[0].ID)
		assert.Equal(t, len(items) < total, hasMore, "hasMore")
	}
}

func testHistoryIsolation(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()
	sess := uniq("sess")
	userOwner := socketio.OwnerOf(sess, "user-1")
	sessOwner := socketio.OwnerOf(sess, "")

	var userIDs, sessIDs []string
	for range 3 {
		a := newTask(userOwner, sess)
		b := newTask(sessOwner, sess)
		require.NoError(t, s.CreateTask(ctx, a, 0))
		require.NoError(t, s.CreateTask(ctx, b, 0))
		update(t, s, a.Owner, a.ID, socketio.TaskCompleted)
		update(t, s, b.Owner, b.ID, socketio.TaskCompleted)
		userIDs = append([]string{a.ID}, userIDs...)
		sessIDs = append([]string{b.ID}, sessIDs...)
	}
	assert.Equal(t, userIDs, historyIDs(t, s, userOwner, "", 10))
	assert.Equal(t, sessIDs, historyIDs(t, s, sessOwner, "", 10))

	n, err := s.ClearHistory(ctx, userOwner)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	assert.Empty(t, historyIDs(t, s, userOwner, "", 10))
	assert.Equal(t, sessIDs, historyIDs(t, s, sessOwner, "", 10), "clearing one owner must keep the others")
}

func testClearHistory(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()
	sess := uniq("sess")
	owner := socketio.OwnerOf(sess, "")

	paths := [][]socketio.TaskStatus{
		{socketio.TaskCompleted},
		{socketio.TaskProcessing, socketio.TaskFailed},
		nil, // stays pending
		{socketio.TaskProcessing},
		{socketio.TaskCancelled},
	}
	ids := make([]string, len(paths))
	for i, path := range paths {
		task := newTask(owner, sess)
		require.NoError(t, s.CreateTask(ctx, task, 0))
		for _, status := range path {
			update(t, s, task.Owner, task.ID, status)
		}
		ids[i] = task.ID
	}

	n, err := s.ClearHistory(ctx, owner)
	require.NoError(t, err)
	assert.Equal(t, 3, n, "deleted")
	assert.Equal(t, []string{ids[3], ids[2]}, historyIDs(t, s, owner, "", 10), "unfinished tasks stay")
	for _, i := range []int{0, 1, 4} {
		_, err := s.Task(ctx, owner, ids[i])
		assert.ErrorIs(t, err, socketio.ErrNotFound, "finished task %d must be deleted", i)
	}
	for _, i := range []int{2, 3} {
		_, err := s.Task(ctx, owner, ids[i])
		assert.NoError(t, err, "unfinished task %d must stay", i)
	}
	require.ErrorIs(t, s.CreateTask(ctx, newTask(owner, sess), 2), socketio.ErrTooManyTasks,
		"unfinished tasks still count against the limit")

	n, err = s.ClearHistory(ctx, owner)
	require.NoError(t, err)
	assert.Zero(t, n, "clearing twice")
	n, err = s.ClearHistory(ctx, socketio.OwnerOf(uniq("sess"), ""))
	require.NoError(t, err)
	assert.Zero(t, n, "clearing an unknown owner")
}

func testMaxHistory(t *testing.T, newStorage factory) {
	const maxHistory = 3
	s := newStorage(t, socketio.StorageOptions{MaxHistory: maxHistory})
	ctx := t.Context()

	// create makes a task for owner and moves it along path.
	create := func(t *testing.T, owner string, path ...socketio.TaskStatus) string {
		t.Helper()
		task := newTask(owner, uniq("sess"))
		require.NoError(t, s.CreateTask(ctx, task, 0))
		for _, status := range path {
			update(t, s, task.Owner, task.ID, status)
		}
		return task.ID
	}

	t.Run("oldest finished dropped", func(t *testing.T) {
		owner := socketio.OwnerOf(uniq("sess"), "")
		var ids []string
		for range 5 {
			ids = append(ids, create(t, owner, socketio.TaskCompleted))
		}
		assert.Equal(t, []string{ids[4], ids[3], ids[2]}, historyIDs(t, s, owner, "", 10))
	})
	t.Run("unfinished never dropped", func(t *testing.T) {
		owner := socketio.OwnerOf(uniq("sess"), "")
		var ids []string
		for range 5 {
			ids = append(ids, create(t, owner))
		}
		assert.Equal(t, []string{ids[4], ids[3], ids[2], ids[1], ids[0]}, historyIDs(t, s, owner, "", 10))
	})
	t.Run("finished dropped around unfinished", func(t *testing.T) {
		owner := socketio.OwnerOf(uniq("sess"), "")
		oldest := create(t, owner, socketio.TaskProcessing)
		var ids []string
		for range 4 {
			ids = append(ids, create(t, owner, socketio.TaskFailed))
		}
		assert.Equal(t, []string{ids[3], ids[2], oldest}, historyIDs(t, s, owner, "", 10))
	})
}

func testHistoryExpiry(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{HistoryTTL: shortTTL})
	ctx := t.Context()
	sess := uniq("sess")
	owner := socketio.OwnerOf(sess, "")

	task := newTask(owner, sess)
	require.NoError(t, s.CreateTask(ctx, task, 1))
	_, err := s.Task(ctx, task.Owner, task.ID)
	require.NoError(t, err, "a task must live HistoryTTL")

	require.Eventually(t, func() bool {
		_, err := s.Task(ctx, task.Owner, task.ID)
		return errors.Is(err, socketio.ErrNotFound)
	}, expiryWait, expiryPoll, "the task never expired")
	require.Eventually(t, func() bool {
		items, _, err := s.History(ctx, owner, "", 10)
		return err == nil && len(items) == 0
	}, expiryWait, expiryPoll, "the history never expired")
	require.NoError(t, s.CreateTask(ctx, newTask(owner, sess), 1), "an expired task must not hold a slot")
}

func testPopularQuestions(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	ctx := t.Context()

	got, err := s.PopularQuestions(ctx, 5)
	require.NoError(t, err)
	assert.Empty(t, got, "a new storage has no popular questions")

	a, b, c := uniq("question a"), uniq("question b"), uniq("question c")
	for _, q := range []string{a, b, c, a, c, a} {
		require.NoError(t, s.RecordQuestion(ctx, q))
	}
	tests := []struct {
		limit int
		want  []string
	}{
		{10, []string{a, c, b}},
		{3, []string{a, c, b}},
		{2, []string{a, c}},
		{1, []string{a}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("limit %d", tt.limit), func(t *testing.T) {
			got, err := s.PopularQuestions(ctx, tt.limit)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func testMaxPopular(t *testing.T, newStorage factory) {
	const maxPopular = 3
	s := newStorage(t, socketio.StorageOptions{MaxPopular: maxPopular})
	ctx := t.Context()

	a, b := uniq("question a"), uniq("question b")
	record := func(q string, times int) {
		t.Helper()
		for range times {
			require.NoError(t, s.RecordQuestion(ctx, q))
		}
	}
	record(a, 5)
	record(b, 4)
	record(uniq("question c"), 3)
	for range 5 {
		record(uniq("rare question"), 1)
	}

	got, err := s.PopularQuestions(ctx, 10)
	require.NoError(t, err)
	assert.LessOrEqual(t, len(got), maxPopular, "the index must keep at most MaxPopular questions")
	require.GreaterOrEqual(t, len(got), 2)
	assert.Equal(t, []string{a, b}, got[:2], "the most asked questions must survive eviction")
}

func testContextCancelled(t *testing.T, newStorage factory) {
	s := newStorage(t, socketio.StorageOptions{})
	live := t.Context()
	sess := socketio.Session{ID: uniq("sess"), CreatedAt: time.Now(), LastSeen: time.Now()}
	require.NoError(t, s.SaveSession(live, sess))
	task := newTask(sess.Owner(), sess.ID)
	require.NoError(t, s.CreateTask(live, task, 0))

	ctx, cancel := context.WithCancel(live)
	cancel()
	tests := []struct {
		name string
		call func() error
	}{
		{"SaveSession", func() error { return s.SaveSession(ctx, sess) }},
		{"Session", func() error { _, err := s.Session(ctx, sess.ID); return err }},
		{"TouchSession", func() error { return s.TouchSession(ctx, sess.ID, time.Now()) }},
		{"DeleteSession", func() error { return s.DeleteSession(ctx, sess.ID) }},
		{"CreateTask", func() error { return s.CreateTask(ctx, newTask(sess.Owner(), sess.ID), 0) }},
		{"Task", func() error { _, err := s.Task(ctx, task.Owner, task.ID); return err }},
		{"UpdateTask", func() error {
			_, _, err := s.UpdateTask(ctx, task.Owner, task.ID, socketio.TaskUpdate{Status: socketio.TaskProcessing, At: time.Now()})
			return err
		}},
		{"History", func() error { _, _, err := s.History(ctx, task.Owner, "", 10); return err }},
		{"ClearHistory", func() error { _, err := s.ClearHistory(ctx, task.Owner); return err }},
		{"RecordQuestion", func() error { return s.RecordQuestion(ctx, "question") }},
		{"PopularQuestions", func() error { _, err := s.PopularQuestions(ctx, 10); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.ErrorIs(t, tt.call(), context.Canceled)
		})
	}
}

// runID keeps the ids of concurrent runs against one shared backend apart.
var (
	runID  = strconv.FormatUint(rand.Uint64(), 36)
	nextID atomic.Uint64
)

// uniq returns a new id starting with kind.
func uniq(kind string) string {
	return fmt.Sprintf("%s-%s-%d", kind, runID, nextID.Add(1))
}

// newTask returns a new pending task with a unique id. It is safe to call
// from any goroutine.
func newTask(owner, sessionID string) socketio.Task {
	now := time.Now()
	id := uniq("task")
	return socketio.Task{
		ID:        id,
		SessionID: sessionID,
		Owner:     owner,
		Question:  "question of " + id,
		Status:    socketio.TaskPending,
		AskedAt:   now,
		UpdatedAt: now,
	}
}

// mustTask returns the stored task with the given id.
func mustTask(t *testing.T, s socketio.Storage, owner, id string) socketio.Task {
	t.Helper()
	task, err := s.Task(t.Context(), owner, id)
	require.NoError(t, err)
	return task
}

// update moves a task to status and requires the move to apply.
func update(t *testing.T, s socketio.Storage, owner, id string, status socketio.TaskStatus) {
	t.Helper()
	u := socketio.TaskUpdate{Status: status, At: time.Now()}
	if status.Finished() {
		u.Answer = "answer to " + id
	}
	_, applied, err := s.UpdateTask(t.Context(), owner, id, u)
	require.NoError(t, err)
	require.True(t, applied, "moving task %s to %s", id, status)
}

// historyIDs returns the ids of a History page.
func historyIDs(t *testing.T, s socketio.Storage, owner, before string, limit int) []string {
	t.Helper()
	items, _, err := s.History(t.Context(), owner, before, limit)
	require.NoError(t, err)
	return taskIDs(items)
}

// taskIDs returns the ids of tasks, never nil.
func taskIDs(tasks []socketio.Task) []string {
	ids := make([]string, 0, len(tasks))
	for _, task := range tasks {
		ids = append(ids, task.ID)
	}
	return ids
}

// assertSessionEqual compares sessions with millisecond time precision and
// nil and empty Data alike.
func assertSessionEqual(t *testing.T, want, got socketio.Session) {
	t.Helper()
	assert.Equal(t, want.ID, got.ID, "ID")
	assert.Equal(t, want.UserID, got.UserID, "UserID")
	assert.Equal(t, want.Address, got.Address, "Address")
	assertTimeEqual(t, want.CreatedAt, got.CreatedAt, "CreatedAt")
	assertTimeEqual(t, want.LastSeen, got.LastSeen, "LastSeen")
	if len(want.Data) == 0 {
		assert.Empty(t, got.Data, "Data")
	} else {
		assert.Equal(t, want.Data, got.Data, "Data")
	}
}

// assertTaskEqual compares tasks with millisecond time precision and nil
// and empty Sources alike.
func assertTaskEqual(t *testing.T, want, got socketio.Task) {
	t.Helper()
	assert.Equal(t, want.ID, got.ID, "ID")
	assert.Equal(t, want.SessionID, got.SessionID, "SessionID")
	assert.Equal(t, want.Owner, got.Owner, "Owner")
	assert.Equal(t, want.Question, got.Question, "Question")
	assert.Equal(t, want.Context, got.Context, "Context")
	assert.Equal(t, want.Room, got.Room, "Room")
	assert.Equal(t, want.Stream, got.Stream, "Stream")
	assert.Equal(t, want.Status, got.Status, "Status")
	assert.Equal(t, want.Answer, got.Answer, "Answer")
	if len(want.Sources) == 0 {
		assert.Empty(t, got.Sources, "Sources")
	} else {
		assert.Equal(t, want.Sources, got.Sources, "Sources")
	}
	assert.Equal(t, want.Error, got.Error, "Error")
	assert.Equal(t, want.Usage, got.Usage, "Usage")
	assertTimeEqual(t, want.AskedAt, got.AskedAt, "AskedAt")
	assertTimeEqual(t, want.UpdatedAt, got.UpdatedAt, "UpdatedAt")
	assertTimeEqual(t, want.AnsweredAt, got.AnsweredAt, "AnsweredAt")
}

// assertTimeEqual compares times to the millisecond; a zero time must stay
// zero.
func assertTimeEqual(t *testing.T, want, got time.Time, name string) {
	t.Helper()
	if want.IsZero() {
		assert.True(t, got.IsZero(), "%s: want zero time, got %v", name, got)
		return
	}
	assert.WithinDuration(t, want, got, timePrecision, name)
}
