package socketio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/qaplatform/socketio/internal/streamq"
)

// WorkerOptions configures a Worker. The zero value of each field but Queue
// means its default.
type WorkerOptions struct {
	// Queue is the queue the worker takes questions from. required
	Queue *RedisQueue
	// Storage is the nodes' storage, where tasks are read and their ends
	// stored. default: a RedisStorage on the queue's client, with its
	// Prefix, owned and closed by the Worker
	Storage Storage
	// Answerer answers the questions. default: an answerer that says it has
	// no answer
	Answerer Answerer
	// Concurrency is how many answers the worker runs at once. default: 16
	Concurrency int
	// AnswerTimeout bounds one answer; past it the task fails with
	// "timeout". A question that waited in the queue longer than
	// AnswerTimeout fails the same way, unanswered. default: 2m
	AnswerTimeout time.Duration
	// StorageTimeout bounds each call to the storage and the queue.
	// default: 5s
	StorageTimeout time.Duration
	// Hooks, when set, runs its BeforeAnswer and AfterAnswer hooks around
	// each answer, as a node does. default: none
	Hooks *HookManager
	// Name names the worker in the queue's consumer group; it must be
	// unique among the live workers. default: host name, process id and a
	// random suffix
	Name string
	// Logger receives the worker's logs. default: slog.Default()
	Logger *slog.Logger
}

func (o WorkerOptions) withDefaults() WorkerOptions {
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.AnswerTimeout <= 0 {
		o.AnswerTimeout = 2 * time.Minute
	}
	if o.StorageTimeout <= 0 {
		o.StorageTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Name == "" {
		host, _ := os.Hostname()
		o.Name = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), newID(""))
	}
	return o
}

// Worker answers the questions of a RedisQueue: it takes up to Concurrency
// of them at a time, renews its hold on each while it answers, streams the
// answer's chunks to the clients (one write every ChunkInterval), stores
// the end and acknowledges the question. A question it held when it died
// is taken by another worker after ClaimAfter and answered again; the
// first end stored is the one clients see. See RedisQueue for the
// guarantees.
//
// A Worker runs from NewWorker until Close. It may run inside a node's
// process (Options.Workers does that) or on its own (cmd/qa-worker).
type Worker struct {
	opts     WorkerOptions
	q        *RedisQueue
	storage  Storage
	answerer Answerer
	logger   *slog.Logger
	owned    io.Closer

	ctx    context.Context // ends when Close has stopped the answers: the loops stop
	cancel context.CancelFunc
	// answering is the parent of every answer's context; Close cancels it,
	// with errWorkerStopping, when its grace period is over.
	answering     context.Context
	stopAnswering context.CancelCauseFunc
	take          context.Context // ends when Close begins: no more questions are taken
	stopTake      context.CancelFunc

	quit    chan struct{} // closed when Close gives up waiting: ends are released, not retried
	slots   chan struct{} // one per answer in progress
	loops   sync.WaitGroup
	answers sync.WaitGroup

	mu   sync.Mutex
	held map[string]*heldEntry // by entry id

	closeOnce sync.Once
	closeErr  error
}

// heldEntry is a question this worker holds.
type heldEntry struct {
	owner, taskID string
	cancel        context.CancelCauseFunc
}

var (
	errClaimedAway    = errors.New("taken by another worker")
	errWorkerStopping = errors.New("worker stopping")
)

// NewWorker starts a worker on opts.Queue.
func NewWorker(opts WorkerOptions) (*Worker, error) {
	if opts.Queue == nil {
		return nil, errors.New("socketio: NewWorker: no Queue")
	}
	opts = opts.withDefaults()
	w := &Worker{
		opts:     opts,
		q:        opts.Queue,
		storage:  opts.Storage,
		answerer: opts.Answerer,
		logger:   opts.Logger,
		slots:    make(chan struct{}, opts.Concurrency),
		quit:     make(chan struct{}),
		held:     map[string]*heldEntry{},
	}
	if w.storage == nil {
		rs := NewRedisStorage(opts.Queue.rdb, RedisStorageOptions{Prefix: opts.Queue.opts.Prefix})
		w.storage, w.owned = rs, rs
	}
	if w.answerer == nil {
		kb, _ := NewKnowledgeBase(nil)
		w.answerer = kb.Answerer(KBAnswererOptions{})
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.answering, w.stopAnswering = context.WithCancelCause(w.ctx)
	w.take, w.stopTake = context.WithCancel(w.ctx)
	cancels, unsubscribe := w.q.q.Cancels(w.ctx)
	w.loops.Add(3)
	go w.takeLoop()
	go w.renewLoop()
	go w.cancelLoop(cancels, unsubscribe)
	return w, nil
}

// Name returns the worker's name in the queue's consumer group.
func (w *Worker) Name() string { return w.opts.Name }

// Close stops the worker gracefully: it takes no more questions, lets the
// answers in progress finish until ctx is done, then stops the rest and
// releases their questions to the other workers at once (they are answered
// again there). It waits for every goroutine the worker started and closes
// the storage it created. It returns ctx.Err() if ctx ended first; calling
// it again returns the first result.
func (w *Worker) Close(ctx context.Context) error {
	w.closeOnce.Do(func() {
		w.stopTake()
		done := make(chan struct{})
		go func() {
			w.answers.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			w.closeErr = ctx.Err()
			close(w.quit)
			w.stopAnswering(errWorkerStopping)
			<-done
		}
		w.cancel()
		w.loops.Wait()
		if w.owned != nil {
			w.closeErr = errors.Join(w.closeErr, w.owned.Close())
		}
	})
	return w.closeErr
}

// takeLoop takes questions whenever a slot is free: those of workers that
// went silent (and those released by workers that stopped) first, when a
// claim is due, then new ones. Claims come first so that, under a steady
// load, taking over a dead worker's answers does not wait for the backlog.
func (w *Worker) takeLoop() {
	defer w.loops.Done()
	// At least every second: a released question is claimable at once.
	every := min(max(w.q.opts.ClaimAfter/4, 10*time.Millisecond), time.Second)
	var lastClaim time.Time
	backoff := newBackoff()
	for w.take.Err() == nil {
		select {
		case w.slots <- struct{}{}:
		case <-w.take.Done():
			return
		}
		if time.Since(lastClaim) >= every {
			lastClaim = time.Now()
			n := 1 + w.freeSlots()
			ctx, cancel := context.WithTimeout(w.take, w.opts.StorageTimeout)
			ds, err := w.q.q.Claim(ctx, w.opts.Name, n)
			cancel()
			if err != nil && w.take.Err() == nil {
				w.logger.Warn("socketio: worker cannot claim from the queue", "err", err)
			}
			for _, d := range ds {
				w.logger.Info("socketio: took over a question from a silent worker", "entry", d.ID, "attempt", d.Attempt, "claims", d.Claims)
			}
			if len(ds) > 0 {
				w.run(ds, n)
				continue
			}
			for range n - 1 { // keep one slot for the read
				<-w.slots
			}
		}
		// One at a time: a slot held in a blocking read is one a claim
		// cannot use.
		block := min(time.Second, max(every-time.Since(lastClaim), time.Millisecond))
		ds, err := w.q.q.Read(w.take, w.opts.Name, 1, block)
		if err != nil && w.take.Err() == nil {
			w.logger.Warn("socketio: worker cannot read the queue", "err", err)
			backoff.wait(w.take)
		} else {
			backoff.reset()
		}
		w.run(ds, 1)
	}
}

// freeSlots takes every free slot and returns how many it took.
func (w *Worker) freeSlots() int {
	n := 0
	for {
		select {
		case w.slots <- struct{}{}:
			n++
		default:
			return n
		}
	}
}

// run starts the answers of ds, which were read with n slots taken, and
// gives back the slots it does not use.
func (w *Worker) run(ds []streamq.Delivery, n int) {
	for i := range n {
		if i >= len(ds) {
			<-w.slots
			continue
		}
		d := ds[i]
		w.answers.Add(1)
		go func() {
			defer func() { <-w.slots }()
			defer w.answers.Done()
			w.handle(d)
		}()
	}
}

// renewLoop renews the hold on every question in progress, every
// ClaimAfter/3, and stops the answers another worker took over or that
// finished elsewhere.
func (w *Worker) renewLoop() {
	defer w.loops.Done()
	t := time.NewTicker(max(w.q.opts.ClaimAfter/3, 5*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		ids := make([]string, 0, len(w.held))
		held := make([]*heldEntry, 0, len(w.held))
		for id, h := range w.held {
			ids = append(ids, id)
			held = append(held, h)
		}
		w.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		w.stopFinished(held)
		ctx, cancel := context.WithTimeout(w.ctx, w.opts.StorageTimeout)
		lost, err := w.q.q.Touch(ctx, w.opts.Name, ids...)
		cancel()
		if err != nil {
			w.logger.Warn("socketio: worker cannot renew its hold", "err", err)
			continue
		}
		w.mu.Lock()
		for _, id := range lost {
			if h := w.held[id]; h != nil {
				w.logger.Warn("socketio: another worker took over a question", "task", h.taskID, "entry", id)
				h.cancel(errClaimedAway)
			}
		}
		w.mu.Unlock()
	}
}

// stopFinished stops the answers of held tasks that are finished in the
// storage: cancelled on a node whose word to the workers was lost, or
// settled meanwhile.
func (w *Worker) stopFinished(held []*heldEntry) {
	for _, h := range held {
		ctx, cancel := context.WithTimeout(w.ctx, w.opts.StorageTimeout)
		t, err := w.storage.Task(ctx, h.owner, h.taskID)
		cancel()
		if err == nil && t.Status.Finished() {
			h.cancel(errTaskCancelled)
		}
	}
}

// cancelLoop stops the answers of tasks cancelled on a node.
func (w *Worker) cancelLoop(ids <-chan string, unsubscribe func()) {
	defer w.loops.Done()
	defer unsubscribe()
	for {
		select {
		case <-w.ctx.Done():
			return
		case id, ok := <-ids:
			if !ok {
				return
			}
			w.mu.Lock()
			for _, h := range w.held {
				if h.taskID == id {
					h.cancel(errTaskCancelled)
				}
			}
			w.mu.Unlock()
		}
	}
}

// storageCtx bounds one call to the storage or the queue; it outlives
// Close's grace period, so that an end is stored or released whole.
func (w *Worker) storageCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(w.ctx), w.opts.StorageTimeout)
}

// handle answers one question of the queue.
func (w *Worker) handle(d streamq.Delivery) {
	d.Attempt = max(d.Attempt, 1) // 0 when its counter could not be kept
	var e queueEntry
	if err := json.Unmarshal(d.Payload, &e); err != nil || e.TaskID == "" || e.Owner == "" {
		w.logger.Error("socketio: a malformed entry in the answer queue", "entry", d.ID, "err", err)
		ctx, cancel := w.storageCtx()
		_ = w.q.q.DeadLetter(ctx, d, "malformed entry")
		cancel()
		return
	}
	w.mu.Lock()
	mine := w.held[d.ID] != nil
	w.mu.Unlock()
	if mine {
		return // claimed back from itself; see below
	}
	w.logger.Debug("socketio: worker took a question", "task", e.TaskID, "entry", d.ID, "attempt", d.Attempt)
	ctx, cancel := w.storageCtx()
	t, err := w.storage.Task(ctx, e.Owner, e.TaskID)
	cancel()
	switch {
	case errors.Is(err, ErrNotFound):
		w.ack(d, "", nil) // expired or cleared: nothing to answer
		return
	case err != nil:
		// Left pending: claimed again after ClaimAfter.
		w.logger.Error("socketio: worker cannot read a task", "task", e.TaskID, "err", err)
		return
	case t.Status.Finished():
		// Cancelled, or settled, while it waited; or answered by a worker
		// that died between storing the end and acknowledging it (the end
		// and the acknowledgement are pushed and written together): only
		// workers complete tasks, so a completed one's end was not pushed
		// when this entry was taken from a dead worker. (A first delivery
		// is a task queued twice, see queueNode.requeue: its end went out
		// with the other entry.)
		var end []byte
		if t.Status == TaskCompleted && d.Attempt > 1 {
			end = encodeEvent(t, true, endPushes(t)...)
		}
		w.ack(d, t.ID, end)
		return
	case d.Dead:
		w.logger.Error("socketio: a question was taken from silent workers too often; giving up", "task", t.ID, "claims", d.Claims)
		w.finish(d, t, e.Caller, TaskUpdate{Status: TaskFailed,
			Error: &TaskError{Code: CodeAnswerFailed, Message: "the answer failed on every attempt"}}, true)
		return
	case time.Since(t.AskedAt) > w.opts.AnswerTimeout:
		w.finish(d, t, e.Caller, TaskUpdate{Status: TaskFailed,
			Error: &TaskError{Code: CodeTimeout, Message: "no worker took the question in time"}}, false)
		return
	}

	rctx, rcancel := context.WithCancelCause(w.answering)
	defer rcancel(nil)
	w.mu.Lock()
	if w.held[d.ID] != nil {
		// This worker's own question, claimed back after renewals failed:
		// the answer in progress goes on (the next renewal resets it).
		w.mu.Unlock()
		return
	}
	w.held[d.ID] = &heldEntry{owner: t.Owner, taskID: t.ID, cancel: rcancel}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.held, d.ID)
		w.mu.Unlock()
	}()
	defer func() {
		if v := recover(); v != nil {
			w.logger.Error("socketio: panic while answering", "task", t.ID, "panic", v)
			w.finish(d, t, e.Caller, TaskUpdate{Status: TaskFailed, Error: &TaskError{Code: CodeAnswerFailed, Message: "the answer failed"}}, false)
		}
	}()

	// Start it: pending → processing (on a later attempt it is processing
	// already), and a fresh partial for this attempt.
	ctx, cancel = w.storageCtx()
	nt, applied, err := w.storage.UpdateTask(ctx, t.Owner, t.ID, TaskUpdate{Status: TaskProcessing, At: time.Now().UTC()})
	cancel()
	if err != nil {
		w.logger.Error("socketio: worker cannot start a task", "task", t.ID, "err", err)
		return // left pending: claimed again after ClaimAfter
	}
	if nt.Status.Finished() {
		w.ack(d, t.ID, nil) // cancelled just now; the canceller pushed the end
		return
	}
	if !applied && d.Attempt == 1 {
		// Processing already, yet this entry was never taken before: the
		// task was queued twice, and the other entry's worker answers it
		// (and keeps its partial).
		w.ack(d, "", nil)
		return
	}
	t = nt
	var pushes []push
	if applied {
		pushes = append(pushes, push{"task_status", taskStatusEvent(t)})
	}
	ctx, cancel = w.storageCtx()
	if t.Stream {
		_, err = w.q.q.SetNewerPartial(ctx, t.ID, streamq.Partial{Attempt: d.Attempt, Seq: -1}, encodeEvent(t, false, pushes...))
	} else if len(pushes) > 0 {
		err = w.q.q.Publish(ctx, encodeEvent(t, false, pushes...))
	}
	cancel()
	if err != nil {
		w.logger.Warn("socketio: worker cannot publish a task's start", "task", t.ID, "err", err)
	}

	ev := &AnswerEvent{Caller: e.Caller, Task: t}
	if w.opts.Hooks != nil {
		if err := w.opts.Hooks.runBefore(beforeAnswer, func(h Hook) error {
			return h.(BeforeAnswerHook).BeforeAnswer(rctx, ev)
		}); err != nil {
			w.finish(d, t, e.Caller, TaskUpdate{Status: TaskFailed, Error: &TaskError{Code: CodeAnswerFailed, Message: toWireError(err, CodeAnswerFailed).Message}}, false)
			return
		}
	}

	q := Question{
		TaskID: t.ID, SessionID: t.SessionID, UserID: e.Caller.UserID,
		Text: t.Question, Context: t.Context, Room: t.Room, Stream: t.Stream, Attempt: d.Attempt,
	}
	if ca, ok := w.answerer.(ConversationAnswerer); ok && ca.HistoryTurns() > 0 {
		ctx, cancel := w.storageCtx()
		q.History = recentTurns(ctx, w.storage, t, ca.HistoryTurns())
		cancel()
	}
	actx, acancel := context.WithTimeout(rctx, w.opts.AnswerTimeout)
	defer acancel()
	var chunks ChunkWriter = discardChunks{}
	var cw *queuedChunks
	if t.Stream {
		cw = newQueuedChunks(w, t, d.Attempt, actx)
		chunks = cw
	}
	ans, err := w.answerer.Answer(actx, q, chunks)
	if cw != nil {
		cw.close()
	}
	var u TaskUpdate
	switch cause := context.Cause(rctx); {
	case errors.Is(cause, errWorkerStopping):
		w.release(d, t)
		return
	case errors.Is(cause, errClaimedAway), errors.Is(cause, errTaskCancelled):
		// Another worker answers it, or a node cancelled it and pushed the
		// end: this attempt ends here, silently.
		if errors.Is(cause, errTaskCancelled) {
			w.ack(d, t.ID, nil)
		}
		return
	default:
		if err != nil && actx.Err() == nil {
			w.logger.Warn("socketio: answerer failed", "task", t.ID, "err", err)
		}
		if cw != nil {
			if text, ok := cw.written(); ok {
				ans.Text = text
			}
		}
		u = answerUpdate(actx, ans, err)
	}
	w.finish(d, t, e.Caller, u, false)
}

// finish stores the end u of task t, retrying while the store is
// unreachable, and then acknowledges its entry (moving it to the
// dead-letter stream when dead) together with the end's pushes, when this
// worker's end was the one stored. Should the worker be stopped before the
// end is stored, the question is released to another worker.
func (w *Worker) finish(d streamq.Delivery, t Task, caller Caller, u TaskUpdate, dead bool) {
	u.At = time.Now().UTC().Truncate(time.Millisecond)
	expiry := t.AskedAt.Add(2*w.opts.AnswerTimeout + time.Minute)
	for attempt := 0; ; attempt++ {
		ctx, cancel := w.storageCtx()
		nt, applied, err := w.storage.UpdateTask(ctx, t.Owner, t.ID, u)
		cancel()
		if err == nil {
			var end []byte
			if applied || ownWrite(nt, u) {
				end = encodeEvent(nt, true, endPushes(nt)...)
			}
			if dead {
				ctx, cancel := w.storageCtx()
				if err := w.q.q.DeadLetter(ctx, d, "taken from silent workers too often", end); err != nil {
					w.logger.Error("socketio: cannot move a question to the dead letters", "task", t.ID, "err", err)
				}
				cancel()
			} else {
				w.ack(d, t.ID, end)
			}
			if end != nil && w.opts.Hooks != nil {
				ev := &AnswerEvent{Caller: caller, Task: nt}
				w.opts.Hooks.runAfter(afterAnswer, func(h Hook) { h.(AfterAnswerHook).AfterAnswer(context.WithoutCancel(w.ctx), ev) })
			}
			return
		}
		if !retriable(err) || time.Now().After(expiry) {
			// The store lost the task (or stayed down past its expiry):
			// nobody else can end it, so its clients are told it failed.
			w.logger.Error("socketio: the store lost a task before its end", "task", t.ID, "err", err)
			lost := TaskUpdate{Status: TaskFailed, At: u.At, Error: &TaskError{Code: CodeAnswerFailed, Message: "the answer could not be stored"}}
			if u.Status != TaskCompleted && u.Error != nil {
				lost = u
			}
			lt, _ := lost.Apply(t)
			w.ack(d, t.ID, encodeEvent(lt, true, endPushes(lt)...))
			return
		}
		timer := time.NewTimer(endRetryWait(attempt))
		select {
		case <-w.quit:
			timer.Stop()
			w.release(d, t)
			return
		case <-timer.C:
		}
	}
}

// ack acknowledges an entry of a finished task, pushing end (when not nil)
// with it and dropping the task's partial.
func (w *Worker) ack(d streamq.Delivery, taskID string, end []byte) {
	var events [][]byte
	if end != nil {
		events = append(events, end)
	}
	for attempt := 0; attempt < 3; attempt++ {
		ctx, cancel := w.storageCtx()
		err := w.q.q.AckDone(ctx, d.ID, taskID, events...)
		cancel()
		if err == nil {
			return
		}
		w.logger.Warn("socketio: worker cannot acknowledge a question", "entry", d.ID, "err", err)
	}
}

// release hands a question this worker is stopping on to the others.
func (w *Worker) release(d streamq.Delivery, t Task) {
	ctx, cancel := w.storageCtx()
	defer cancel()
	if err := w.q.q.Release(ctx, w.opts.Name, d.ID); err != nil {
		w.logger.Warn("socketio: worker cannot release a question; it is taken after ClaimAfter", "task", t.ID, "err", err)
		return
	}
	w.logger.Info("socketio: released a question to the other workers", "task", t.ID)
}

// answerUpdate is the end of an answer that returned ans and err within
// actx (not cancelled): completed, timeout when actx's deadline passed, or
// failed as answerError says.
func answerUpdate(actx context.Context, ans Answer, err error) TaskUpdate {
	switch {
	case err == nil && actx.Err() == nil:
		return TaskUpdate{Status: TaskCompleted, Answer: ans.Text, Sources: ans.Sources, Usage: ans.Usage}
	case errors.Is(actx.Err(), context.DeadlineExceeded):
		return TaskUpdate{Status: TaskFailed, Error: &TaskError{Code: CodeTimeout, Message: "the answer took too long"}}
	}
	return TaskUpdate{Status: TaskFailed, Error: answerError(err)}
}

// answerError is the end of an answer whose Answerer failed with err: its
// *Error's message, with code timeout when the Answerer says so (a model
// server that stalled) and answer_failed otherwise.
func answerError(err error) *TaskError {
	msg := "the answer failed"
	var e *Error
	if errors.As(err, &e) && e.Message != "" {
		msg = e.Message
	}
	code := CodeAnswerFailed
	if e != nil && e.Code == CodeTimeout {
		code = CodeTimeout
	}
	return &TaskError{Code: code, Message: msg}
}

// recentTurns reads up to n of the owner's completed questions older than
// t, oldest first.
func recentTurns(ctx context.Context, st Storage, t Task, n int) []Turn {
	items, _, err := st.History(ctx, t.Owner, t.ID, min(n*2, maxHistoryLimit))
	if err != nil {
		return nil
	}
	var turns []Turn
	for _, it := range items {
		if it.Status == TaskCompleted {
			turns = append(turns, Turn{Question: it.Question, Answer: it.Answer})
			if len(turns) == n {
				break
			}
		}
	}
	for i, j := 0, len(turns)-1; i < j; i, j = i+1, j-1 {
		turns[i], turns[j] = turns[j], turns[i]
	}
	return turns
}

// queuedChunks is the ChunkWriter of a streamed answer on a worker: deltas
// are gathered and sent every ChunkInterval as one answer_chunk, with the
// partial text in the same write.
type queuedChunks struct {
	w       *Worker
	t       Task
	attempt int
	ctx     context.Context

	mu      sync.Mutex
	pending strings.Builder
	text    strings.Builder
	seq     int
	// superseded: the stored partial is of a later attempt.
	superseded bool
	stop       chan struct{}
	done       chan struct{}
}

func newQueuedChunks(w *Worker, t Task, attempt int, ctx context.Context) *queuedChunks {
	c := &queuedChunks{w: w, t: t, attempt: attempt, ctx: ctx, stop: make(chan struct{}), done: make(chan struct{})}
	go c.loop()
	return c
}

func (c *queuedChunks) loop() {
	defer close(c.done)
	t := time.NewTicker(c.w.q.opts.ChunkInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.flush()
		}
	}
}

// WriteChunk gathers delta for the next chunk.
func (c *queuedChunks) WriteChunk(delta string) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	if delta == "" {
		return nil
	}
	c.mu.Lock()
	c.pending.WriteString(delta)
	c.mu.Unlock()
	return nil
}

// flush sends what was gathered as one chunk.
func (c *queuedChunks) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending.Len() == 0 || c.ctx.Err() != nil || c.superseded {
		return
	}
	delta := c.pending.String()
	seq := c.seq
	text := c.text.String() + delta
	ev := encodeEvent(c.t, false, push{"answer_chunk", map[string]any{"task_id": c.t.ID, "attempt": c.attempt, "seq": seq, "delta": delta}})
	ctx, cancel := c.w.storageCtx()
	newer, err := c.w.q.q.SetNewerPartial(ctx, c.t.ID, streamq.Partial{Attempt: c.attempt, Seq: seq, Text: text}, ev)
	cancel()
	if err != nil {
		// Kept for the next flush, so that the chunks have no gap.
		c.w.logger.Warn("socketio: worker cannot send a chunk", "task", c.t.ID, "seq", seq, "err", err)
		return
	}
	if !newer {
		// A later attempt began elsewhere: this one streams no more (its
		// end, should it come first, is still stored).
		c.superseded = true
	}
	c.pending.Reset()
	c.text.WriteString(delta)
	c.seq++
}

// close sends the last chunk and stops the ticker.
func (c *queuedChunks) close() {
	close(c.stop)
	<-c.done
	c.flush()
}

// written returns the deltas written, joined, and whether there were any.
func (c *queuedChunks) written() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.text.String() + c.pending.String(), c.text.Len()+c.pending.Len() > 0
}

// backoff waits between failed reads: jittered, from 50 ms doubling to 2 s.
type backoff struct{ next time.Duration }

func newBackoff() *backoff { return &backoff{next: 50 * time.Millisecond} }

func (b *backoff) reset() { b.next = 50 * time.Millisecond }

func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.next/2 + rand.N(b.next/2+1))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	b.next = min(2*b.next, 2*time.Second)
}
