package socketio

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// taskRunner runs accepted questions on a bounded pool of workers and pushes
// their progress to the clients that should see it.
type taskRunner struct {
	srv  *Server
	jobs chan *taskRun
	// slots counts accepted tasks not yet picked up by a worker; accept
	// refuses with unavailable when it reaches capacity (QueueSize).
	slots    atomic.Int64
	capacity int64
	workers  sync.WaitGroup

	// retries counts the goroutines that retry storing an end (see
	// endLater); quit, closed when shutdown gives up waiting, stops them.
	retries sync.WaitGroup
	quit    chan struct{}

	mu       sync.Mutex
	running  map[string]*taskRun // by task id, from accept to the end stored
	stopping bool                // shutdown began: accept refuses
	stopped  bool                // jobs is closed
	drained  chan struct{}       // closed when stopping and running is empty
}

// taskRun is one task on its way through the pool. Its mutex orders the
// pushes of the task, so that nothing follows the final answer.
type taskRun struct {
	task   Task
	caller Caller
	ctx    context.Context
	cancel context.CancelCauseFunc

	// endLater is set by end when a goroutine took over storing the end:
	// that goroutine, not the worker, then forgets the run.
	endLater bool

	mu    sync.Mutex
	done  bool
	chunk int
	text  strings.Builder
}

var (
	errTaskCancelled = errors.New("task cancelled")
	errServerClosed  = errors.New("server closed")
)

func newTaskRunner(s *Server, workers int) *taskRunner {
	r := &taskRunner{
		srv:      s,
		capacity: int64(s.opts.QueueSize),
		running:  map[string]*taskRun{},
		quit:     make(chan struct{}),
	}
	r.jobs = make(chan *taskRun, workers+s.opts.QueueSize)
	r.workers.Add(workers)
	for range workers {
		go r.work()
	}
	return r
}

func (r *taskRunner) work() {
	defer r.workers.Done()
	for run := range r.jobs {
		r.slots.Add(-1)
		r.execute(run)
	}
}

// accept stores a new pending task for ev, holding a place in the queue.
// It refuses with unavailable when the queue is full and too_many_tasks when
// the session has too many unfinished tasks.
func (r *taskRunner) accept(c *conn, ev *QuestionEvent) (*taskRun, error) {
	r.mu.Lock()
	stopping := r.stopping
	r.mu.Unlock()
	if stopping {
		return nil, ErrUnavailable
	}
	if r.slots.Add(1) > r.capacity {
		r.slots.Add(-1)
		return nil, NewError(CodeUnavailable, "too many questions are waiting; try again shortly")
	}
	t := newTask(c, ev)
	ctx, cancel := r.srv.storageCtx()
	// The task is held by this node before it exists, so that the sweep
	// finds it should this node die (see Options.NodeTTL).
	err := r.hold(ctx, t)
	if err == nil {
		err = r.srv.storage.CreateTask(ctx, t, r.srv.opts.MaxOpenTasks)
		if errors.Is(err, ErrTooManyTasks) && r.settleStaleOf(ctx, c.owner, c.caller.SessionID) > 0 {
			err = r.srv.storage.CreateTask(ctx, t, r.srv.opts.MaxOpenTasks)
		}
		if err != nil {
			r.release(t)
		}
	}
	cancel()
	if err != nil {
		r.slots.Add(-1)
		return nil, storageErr(err)
	}
	tctx, tcancel := context.WithCancelCause(r.srv.ctx)
	run := &taskRun{task: t, caller: c.caller, ctx: tctx, cancel: tcancel}
	r.mu.Lock()
	r.running[t.ID] = run
	r.mu.Unlock()
	return run, nil
}

// newTask is the pending task of question ev, asked on c.
func newTask(c *conn, ev *QuestionEvent) Task {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return Task{
		ID:        newID("t_"),
		SessionID: c.caller.SessionID,
		Owner:     c.owner,
		Question:  ev.Question,
		Context:   ev.Context,
		Room:      ev.Room,
		Stream:    ev.Stream,
		Status:    TaskPending,
		AskedAt:   now,
		UpdatedAt: now,
	}
}

// start announces an accepted task as pending and queues it. It never
// blocks: accept reserved the place.
func (r *taskRunner) start(run *taskRun) {
	run.mu.Lock()
	r.pushStatus(run)
	run.mu.Unlock()
	r.mu.Lock()
	if !r.stopped {
		r.jobs <- run
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	r.slots.Add(-1)
	if !r.end(run, r.endedBy(run)) {
		r.forget(run)
	}
}

// execute runs one task to its end.
func (r *taskRunner) execute(run *taskRun) {
	s := r.srv
	defer func() {
		if v := recover(); v != nil {
			s.logger.Error("socketio: panic while answering", "task", run.task.ID, "panic", v)
			r.end(run, TaskUpdate{Status: TaskFailed, Error: &TaskError{Code: CodeAnswerFailed, Message: "the answer failed"}})
		}
		if !run.endLater {
			r.forget(run)
		}
	}()
	if err := run.ctx.Err(); err != nil {
		r.end(run, r.endedBy(run))
		return
	}
	now := time.Now().UTC()
	sctx, cancel := s.storageCtx()
	t, applied, err := s.storage.UpdateTask(sctx, run.task.Owner, run.task.ID, TaskUpdate{Status: TaskProcessing, At: now})
	cancel()
	if err != nil {
		s.logger.Error("socketio: cannot start task", "task", run.task.ID, "err", err)
		r.end(run, TaskUpdate{Status: TaskFailed, Error: &TaskError{Code: CodeAnswerFailed, Message: "the answer could not be started"}})
		return
	}
	if !applied {
		r.release(t) // cancelled while it waited; the canceller pushed the end
		return
	}
	run.mu.Lock()
	run.task = t
	if !run.done {
		r.pushStatus(run)
	}
	run.mu.Unlock()

	ev := &AnswerEvent{Caller: run.caller, Task: t}
	if err := s.hooks.runBefore(beforeAnswer, func(h Hook) error {
		return h.(BeforeAnswerHook).BeforeAnswer(run.ctx, ev)
	}); err != nil {
		r.end(run, TaskUpdate{Status: TaskFailed, Error: &TaskError{Code: CodeAnswerFailed, Message: toWireError(err, CodeAnswerFailed).Message}})
		return
	}

	actx, acancel := context.WithTimeout(run.ctx, s.opts.AnswerTimeout)
	defer acancel()
	q := Question{
		TaskID: t.ID, SessionID: t.SessionID, UserID: run.caller.UserID,
		Text: t.Question, Context: t.Context, Room: t.Room, Stream: t.Stream, Attempt: 1,
	}
	if ca, ok := s.answerer.(ConversationAnswerer); ok && ca.HistoryTurns() > 0 {
		hctx, hcancel := s.storageCtx()
		q.History = recentTurns(hctx, s.storage, t, ca.HistoryTurns())
		hcancel()
	}
	var w ChunkWriter = discardChunks{}
	if t.Stream {
		w = &chunkWriter{r: r, run: run, ctx: actx}
	}
	ans, err := s.answerer.Answer(actx, q, w)
	switch cause := context.Cause(run.ctx); {
	case err == nil && actx.Err() == nil:
		run.mu.Lock()
		if run.chunk > 0 {
			ans.Text = run.text.String()
		}
		run.mu.Unlock()
		r.end(run, answerUpdate(actx, ans, nil))
	case errors.Is(cause, errTaskCancelled), errors.Is(cause, errServerClosed):
		r.end(run, r.endedBy(run))
	default:
		if err != nil && actx.Err() == nil {
			s.logger.Warn("socketio: answerer failed", "task", t.ID, "err", err)
		}
		r.end(run, answerUpdate(actx, ans, err))
	}
}

// endedBy is the final update of a task whose context was cancelled.
func (r *taskRunner) endedBy(run *taskRun) TaskUpdate {
	if errors.Is(context.Cause(run.ctx), errServerClosed) {
		return TaskUpdate{Status: TaskCancelled, Error: &TaskError{Code: CodeCancelled, Message: "the server shut down"}}
	}
	return TaskUpdate{Status: TaskCancelled, Error: &TaskError{Code: CodeCancelled, Message: "cancelled"}}
}

// finish stores the final status; if it was applied (nobody finished the
// task first), it pushes the final task_status then answer or
// answer_error, and runs the after-answer hooks. It returns the task as
// stored, or the storage's error.
func (r *taskRunner) finish(run *taskRun, u TaskUpdate) (Task, error) {
	s := r.srv
	if u.At.IsZero() {
		u.At = time.Now().UTC().Truncate(time.Millisecond)
	}
	run.mu.Lock() // a retry of the end may race with a cancel
	owner, id := run.task.Owner, run.task.ID
	run.mu.Unlock()
	sctx, cancel := s.storageCtx()
	t, applied, err := s.storage.UpdateTask(sctx, owner, id, u)
	cancel()
	if err != nil {
		return Task{}, err
	}
	r.release(t)
	if !applied && !ownWrite(t, u) {
		return t, nil
	}
	r.ended(run, t)
	return t, nil
}

// ended pushes the end t of run, unless run ended already, and runs the
// after-answer hooks.
func (r *taskRunner) ended(run *taskRun, t Task) {
	run.mu.Lock()
	if run.done { // finished here already; this was a late second finisher
		run.mu.Unlock()
		return
	}
	run.done = true
	run.task = t
	r.pushEnd(t)
	run.mu.Unlock()
	run.cancel(errTaskCancelled)
	ev := &AnswerEvent{Caller: run.caller, Task: t}
	r.srv.hooks.runAfter(afterAnswer, func(h Hook) { h.(AfterAnswerHook).AfterAnswer(context.WithoutCancel(run.ctx), ev) })
}

// Retrying the end of a task: the first retry waits up to endRetryBase, each
// next one up to twice as long, at most endRetryMax (full jitter).
const (
	endRetryBase = 50 * time.Millisecond
	endRetryMax  = 5 * time.Second
)

// endRetryWait is how long retry number attempt of storing an end waits:
// a random time up to endRetryBase doubled attempt times, at most
// endRetryMax (full jitter).
func endRetryWait(attempt int) time.Duration {
	wait := endRetryMax
	if attempt < 16 {
		wait = min(endRetryBase<<attempt, endRetryMax)
	}
	return rand.N(wait) + time.Millisecond
}

// end settles run with its final update u, the way an answer ends. The
// store decides who ends a task (a cancel or a sweep on another node may
// come first), so the end is pushed only once stored. When the store
// cannot be written, a goroutine keeps trying, with jittered exponential
// backoff, until it is stored, the task has expired from the store, or
// the Server closes; end then reports true and that goroutine forgets the
// run. When the store no longer has the task, nobody else can end it: its
// clients are told it failed (see lost).
func (r *taskRunner) end(run *taskRun, u TaskUpdate) (later bool) {
	u.At = time.Now().UTC().Truncate(time.Millisecond)
	_, err := r.finish(run, u)
	if err == nil {
		return false
	}
	retry := retriable(err)
	r.srv.logger.Error("socketio: cannot store the end of a task", "task", run.task.ID, "retrying", retry, "err", err)
	if !retry {
		r.lost(run, u)
		return false
	}
	run.endLater = true
	r.retries.Add(1)
	go r.retryEnd(run, u)
	return true
}

// retriable reports whether a failed write may succeed later: the store
// was unreachable or too slow. Anything else (the task is gone, or
// corrupt) stays so.
func retriable(err error) bool {
	return !errors.Is(err, ErrNotFound) &&
		(errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled))
}

// retryEnd is end's retry loop.
func (r *taskRunner) retryEnd(run *taskRun, u TaskUpdate) {
	defer r.retries.Done()
	defer r.forget(run)
	run.mu.Lock()
	id := run.task.ID
	expiry := run.task.UpdatedAt.Add(r.srv.taskTTL()) // its last write
	run.mu.Unlock()
	for attempt := 1; ; attempt++ {
		timer := time.NewTimer(endRetryWait(attempt))
		select {
		case <-r.quit:
			timer.Stop()
			r.srv.logger.Error("socketio: gave up storing the end of a task: the server closed", "task", id, "attempts", attempt)
			return
		case <-timer.C:
		}
		run.mu.Lock()
		done := run.done
		run.mu.Unlock()
		if done { // cancelled on another node, which pushed the end
			return
		}
		_, err := r.finish(run, u)
		if err != nil {
			r.srv.logger.Debug("socketio: cannot store the end of a task yet", "task", id, "attempts", attempt+1, "err", err)
		}
		switch {
		case err == nil:
			r.srv.logger.Info("socketio: stored the end of a task", "task", id, "attempts", attempt+1)
			return
		case !retriable(err), time.Now().After(expiry):
			r.lost(run, u)
			return
		}
	}
}

// lost ends run, whose end u the store cannot take (it lost the task, or
// the task expired while the store was down): its clients get a failed
// end; an answer that completed fails with answer_failed.
func (r *taskRunner) lost(run *taskRun, u TaskUpdate) {
	if u.Status == TaskCompleted || u.Error == nil {
		u = TaskUpdate{Status: TaskFailed, At: u.At, Error: &TaskError{Code: CodeAnswerFailed, Message: "the answer could not be stored"}}
	}
	run.mu.Lock()
	t, _ := u.Apply(run.task)
	run.mu.Unlock()
	r.srv.logger.Error("socketio: the store lost a task before its end", "task", t.ID, "status", t.Status)
	r.release(t)
	r.ended(run, t)
}

// ownWrite reports whether t already holds exactly update u: a client
// library that retried the write after a lost reply sees "not applied" for
// the write that did apply.
func ownWrite(t Task, u TaskUpdate) bool {
	return t.Status == u.Status && t.UpdatedAt.Equal(u.At.Truncate(time.Millisecond))
}

// cancel ends an unfinished task as cancelled; it returns the task as it
// stands afterwards (completed, if the answer won the race).
func (r *taskRunner) cancel(t Task) (Task, error) {
	r.mu.Lock()
	run := r.running[t.ID]
	r.mu.Unlock()
	if run != nil {
		nt, err := r.finish(run, TaskUpdate{Status: TaskCancelled, Error: &TaskError{Code: CodeCancelled, Message: "cancelled"}})
		if err != nil {
			r.srv.logger.Error("socketio: cannot store the end of a task", "task", run.task.ID, "err", err)
		}
		run.cancel(errTaskCancelled)
		return nt, storageErr(err)
	}
	// Not running here: it runs on another node, or on none any more.
	// Settle it in storage, tell its clients, and ask the other nodes to
	// stop the answer.
	ctx, cancel := r.srv.storageCtx()
	defer cancel()
	u := TaskUpdate{Status: TaskCancelled, At: time.Now().UTC().Truncate(time.Millisecond),
		Error: &TaskError{Code: CodeCancelled, Message: "cancelled"}}
	nt, applied, err := r.srv.storage.UpdateTask(ctx, t.Owner, t.ID, u)
	if err != nil {
		return Task{}, storageErr(err)
	}
	if applied || ownWrite(nt, u) {
		r.pushEnd(nt)
		r.srv.tellNodes(cancelTaskEvent, nt.ID)
	}
	return nt, nil
}

// cancelTaskEvent is the server-side event that asks every node to stop
// answering a task cancelled elsewhere.
const cancelTaskEvent = "socketio:cancel_task"

// stop ends the local run of a task that was cancelled on another node: its
// answer is stopped and nothing more of it is pushed from here.
func (r *taskRunner) stop(taskID string) {
	r.mu.Lock()
	run := r.running[taskID]
	r.mu.Unlock()
	if run == nil {
		return
	}
	run.mu.Lock()
	run.done = true
	run.mu.Unlock()
	run.cancel(errTaskCancelled)
}

// pushEnd sends the final task_status, then answer or answer_error. The
// caller holds the task's run lock, if it has a run.
func (r *taskRunner) pushEnd(t Task) {
	room := taskRooms(t)
	for _, p := range endPushes(t) {
		r.srv.broadcast(room, p.name, p.data)
	}
}

// staleAge is how long an unfinished task may go unchanged before no node
// can still be working on it: an answer is bounded by AnswerTimeout, and
// its start and end by a storage call each. Such a task was orphaned by a
// node that died, and is settled as failed with "timeout".
//
// With a RedisQueue, a question may wait AnswerTimeout in the queue before
// its answer begins, and be taken over from a silent worker (ClaimAfter)
// up to MaxClaims times.
func (r *taskRunner) staleAge() time.Duration {
	o := r.srv.opts
	age := o.AnswerTimeout + 2*o.StorageTimeout + 30*time.Second
	if r.srv.queue != nil {
		qo := r.srv.queue.q.opts
		age += o.AnswerTimeout + time.Duration(qo.MaxClaims)*(qo.ClaimAfter+o.AnswerTimeout)
	}
	return age
}

// settleIfStale settles t if it is orphaned (see staleAge) and returns it as
// it stands afterwards. Concurrent settlers and a late worker are safe:
// storage applies only the first final status.
func (r *taskRunner) settleIfStale(ctx context.Context, t Task) Task {
	if t.Status.Finished() || time.Since(t.UpdatedAt) < r.staleAge() {
		return t
	}
	r.mu.Lock()
	_, local := r.running[t.ID]
	r.mu.Unlock()
	if local {
		return t
	}
	nt, applied, err := r.srv.storage.UpdateTask(ctx, t.Owner, t.ID, lostUpdate())
	if err != nil {
		return t
	}
	if applied {
		r.srv.logger.Warn("socketio: settled an orphaned task", "task", t.ID)
		r.pushEnd(nt)
	}
	return nt
}

// settleStaleOf settles the orphaned tasks of a session among its owner's
// recent history and returns how many it settled.
func (r *taskRunner) settleStaleOf(ctx context.Context, owner, sessionID string) int {
	items, _, err := r.srv.storage.History(ctx, owner, "", maxHistoryLimit)
	if err != nil {
		return 0
	}
	n := 0
	for _, t := range items {
		if t.SessionID == sessionID && !t.Status.Finished() && r.settleIfStale(ctx, t).Status.Finished() {
			n++
		}
	}
	return n
}

func (r *taskRunner) forget(run *taskRun) {
	r.mu.Lock()
	delete(r.running, run.task.ID)
	if r.stopping && len(r.running) == 0 && r.drained != nil {
		close(r.drained)
		r.drained = nil
	}
	r.mu.Unlock()
}

// partial returns the streamed text so far of a task this node is
// answering, or nil when it answers no such task.
func (r *taskRunner) partial(id string) *Partial {
	r.mu.Lock()
	run := r.running[id]
	r.mu.Unlock()
	if run == nil {
		return nil
	}
	run.mu.Lock()
	defer run.mu.Unlock()
	return &Partial{Attempt: 1, Seq: run.chunk - 1, Text: run.text.String()}
}

// pushStatus sends task_status; the caller holds run.mu.
func (r *taskRunner) pushStatus(run *taskRun) {
	r.pushTo(run, "task_status", taskStatusEvent(run.task))
}

// taskStatusEvent is the task_status payload of t.
func taskStatusEvent(t Task) map[string]any {
	return map[string]any{
		"task_id":    t.ID,
		"status":     string(t.Status),
		"updated_at": formatTime(t.UpdatedAt),
	}
}

// pushTo sends an event of the task to the room it was asked into, or to
// every socket of the asking session, on every node.
func (r *taskRunner) pushTo(run *taskRun, event string, v map[string]any) {
	r.srv.broadcast(taskRooms(run.task), event, v)
}

// taskRooms are where a task's events go (docs/protocol.md): the members of the
// room it was asked into, or else every socket of the asking session.
func taskRooms(t Task) []string {
	if t.Room != "" {
		return []string{t.Room}
	}
	return []string{sessionRoom(t.SessionID)}
}

// shutdown stops accepting, lets tasks finish until ctx is done, then
// cancels the rest and waits for the workers.
func (r *taskRunner) shutdown(ctx context.Context) error {
	defer r.retries.Wait()
	r.mu.Lock()
	r.stopping = true
	done := make(chan struct{})
	if len(r.running) == 0 {
		close(done)
	} else {
		r.drained = done
	}
	r.mu.Unlock()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		r.mu.Lock()
		for _, run := range r.running {
			run.cancel(errServerClosed)
		}
		r.mu.Unlock()
		close(r.quit)
	}
	r.mu.Lock()
	r.stopped = true
	close(r.jobs)
	r.mu.Unlock()
	r.workers.Wait()
	return err
}

// chunkWriter pushes answer_chunk events for a streaming task.
type chunkWriter struct {
	r   *taskRunner
	run *taskRun
	ctx context.Context
}

func (w *chunkWriter) WriteChunk(delta string) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if delta == "" {
		return nil
	}
	run := w.run
	run.mu.Lock()
	defer run.mu.Unlock()
	if run.done {
		return errTaskCancelled
	}
	run.text.WriteString(delta)
	w.r.pushTo(run, "answer_chunk", map[string]any{"task_id": run.task.ID, "attempt": 1, "seq": run.chunk, "delta": delta})
	run.chunk++
	return nil
}

type discardChunks struct{}

func (discardChunks) WriteChunk(string) error { return nil }
