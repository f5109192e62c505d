package socketio

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio/internal/streamq"
)

// queueNode is the side of a RedisQueue that a node runs: it takes
// questions into the queue, cancels them, and pushes to its own sockets what
// the workers (and the other nodes) write to the events stream.
type queueNode struct {
	srv *Server
	q   *RedisQueue

	// mu also orders the pushes: deliver emits under it.
	mu       sync.Mutex
	stopping bool
	ended    boundedSet // tasks whose end went by: later events of them are dropped
	// held keeps the events of tasks this node took whose reply is not
	// sent yet: nothing of a task may reach a client before that reply.
	held map[string][]taskEvent
}

func newQueueNode(s *Server, q *RedisQueue) *queueNode {
	n := &queueNode{srv: s, q: q, ended: newBoundedSet(1 << 16), held: map[string][]taskEvent{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := q.q.Events(s.ctx, n.deliver); err != nil && s.ctx.Err() == nil {
			s.logger.Error("socketio: the answer events stream stopped", "err", err)
		}
	}()
	return n
}

// accept stores a new pending task for ev and puts it into the queue, with
// its pending task_status. It refuses with unavailable, and stores nothing,
// when the queue is full. The task enters the queue before the reply is
// sent, so that a node dying right after its reply loses no question; its
// events are held here until start, after the reply. Should the queue
// refuse it after it was stored (a question that raced others into the
// last places, or Redis failing just then), the task is stored as failed
// and the client is told so after the reply.
func (n *queueNode) accept(c *conn, ev *QuestionEvent) (*taskRun, error) {
	n.mu.Lock()
	stopping := n.stopping
	n.mu.Unlock()
	if stopping {
		return nil, ErrUnavailable
	}
	s := n.srv
	ctx, cancel := s.storageCtx()
	defer cancel()
	waiting, err := n.q.q.Len(ctx)
	if err != nil {
		return nil, storageErr(err)
	}
	if waiting >= int64(n.q.opts.Limit) {
		return nil, n.full()
	}
	t := newTask(c, ev)
	// The task is held by this node until it is in the queue, so that,
	// should this node die in between, the sweep of another node queues it
	// (see requeue).
	err = s.tasks.hold(ctx, t)
	if err == nil {
		err = s.storage.CreateTask(ctx, t, s.opts.MaxOpenTasks)
		if errors.Is(err, ErrTooManyTasks) && s.tasks.settleStaleOf(ctx, c.owner, c.caller.SessionID) > 0 {
			err = s.storage.CreateTask(ctx, t, s.opts.MaxOpenTasks)
		}
		if err != nil {
			s.tasks.release(t)
		}
	}
	if err != nil {
		return nil, storageErr(err)
	}
	run := &taskRun{task: t, caller: c.caller}
	n.mu.Lock()
	n.held[t.ID] = nil
	n.mu.Unlock()
	if err := n.enqueue(ctx, t, run.caller); err != nil {
		n.refused(ctx, run, err)
	}
	s.tasks.release(t)
	return run, nil
}

// requeue puts into the queue a task that a dead node held: it had stored
// the task and died before (or just after) queueing it. A task no longer
// pending made it into the queue; one queued twice is answered once (see
// Worker).
func (n *queueNode) requeue(ctx context.Context, ref taskRef) error {
	t, err := n.srv.storage.Task(ctx, ref.owner, ref.id)
	if err != nil || t.Status != TaskPending {
		return err
	}
	caller := Caller{SessionID: t.SessionID}
	if user, ok := strings.CutPrefix(t.Owner, "u:"); ok {
		caller.UserID = user
	}
	if err := n.enqueue(ctx, t, caller); err != nil {
		return err
	}
	n.srv.logger.Warn("socketio: queued a question its node died with", "task", t.ID)
	return nil
}

// enqueue puts pending task t, asked by caller, into the queue with its
// pending task_status.
func (n *queueNode) enqueue(ctx context.Context, t Task, caller Caller) error {
	entry, _ := json.Marshal(queueEntry{Owner: t.Owner, TaskID: t.ID, Caller: caller})
	_, err := n.q.q.Add(ctx, entry, encodeEvent(t, false, push{"task_status", taskStatusEvent(t)}))
	return err
}

// refused ends a stored task the queue did not take. Its end is held with
// the task's other events until start.
func (n *queueNode) refused(ctx context.Context, run *taskRun, err error) {
	s := n.srv
	t := run.task
	msg := "the answer queue is unavailable"
	if errors.Is(err, streamq.ErrFull) {
		msg = "too many questions are waiting"
	}
	s.logger.Error("socketio: cannot queue a question", "task", t.ID, "err", err)
	u := TaskUpdate{Status: TaskFailed, At: time.Now().UTC().Truncate(time.Millisecond),
		Error: &TaskError{Code: CodeAnswerFailed, Message: msg}}
	nt, applied, uerr := s.storage.UpdateTask(ctx, t.Owner, t.ID, u)
	if uerr != nil {
		// Left pending: it is settled once stale (see staleAge).
		s.logger.Error("socketio: cannot fail a question the queue refused", "task", t.ID, "err", uerr)
		return
	}
	if applied || ownWrite(nt, u) {
		n.mu.Lock()
		n.held[t.ID] = append(n.held[t.ID], newTaskEvent(nt, true, endPushes(nt)...))
		n.mu.Unlock()
	}
}

func (n *queueNode) full() error {
	return &Error{Code: CodeUnavailable, Message: "too many questions are waiting; try again shortly", RetryAfter: n.q.opts.RetryAfter}
}

// start, once the reply is sent, pushes the events of the task that
// arrived meanwhile, and those that follow as they come.
func (n *queueNode) start(run *taskRun) {
	n.mu.Lock()
	defer n.mu.Unlock()
	held := n.held[run.task.ID]
	delete(n.held, run.task.ID)
	for _, ev := range held {
		n.emitLocked(ev)
	}
}

// cancel ends an unfinished task as cancelled, pushes its end through the
// events stream (so that every node drops what the worker still sends of
// it), and tells the worker holding it to stop.
func (n *queueNode) cancel(t Task) (Task, error) {
	s := n.srv
	ctx, cancel := s.storageCtx()
	defer cancel()
	u := TaskUpdate{Status: TaskCancelled, At: time.Now().UTC().Truncate(time.Millisecond),
		Error: &TaskError{Code: CodeCancelled, Message: "cancelled"}}
	nt, applied, err := s.storage.UpdateTask(ctx, t.Owner, t.ID, u)
	if err != nil {
		return Task{}, storageErr(err)
	}
	if !applied && !ownWrite(nt, u) {
		return nt, nil // it finished first
	}
	if err := n.q.q.Publish(ctx, encodeEvent(nt, true, endPushes(nt)...)); err != nil {
		s.logger.Warn("socketio: cannot publish a cancellation; pushing it directly", "task", nt.ID, "err", err)
		s.tasks.pushEnd(nt)
	}
	if err := n.q.q.Cancel(ctx, nt.ID); err != nil {
		// The worker finds out at its next renewal, from the stored status.
		s.logger.Warn("socketio: cannot tell the workers of a cancellation", "task", nt.ID, "err", err)
	}
	return nt, nil
}

// partial returns the streamed text so far of a processing task.
func (n *queueNode) partial(ctx context.Context, t Task) *Partial {
	p, ok, err := n.q.q.Partial(ctx, t.ID)
	if err != nil || !ok {
		return &Partial{Attempt: 1, Seq: -1}
	}
	return &Partial{Attempt: p.Attempt, Seq: p.Seq, Text: p.Text}
}

// deliver pushes one event of the stream to this node's sockets.
func (n *queueNode) deliver(raw []byte) {
	var ev taskEvent
	if err := json.Unmarshal(raw, &ev); err != nil || ev.TaskID == "" {
		n.srv.logger.Warn("socketio: a malformed answer event", "err", err)
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if held, ok := n.held[ev.TaskID]; ok {
		n.held[ev.TaskID] = append(held, ev)
		return
	}
	n.emitLocked(ev)
}

// emitLocked pushes ev to this node's sockets, unless its task has ended
// already; the caller holds n.mu.
func (n *queueNode) emitLocked(ev taskEvent) {
	if n.ended.has(ev.TaskID) {
		return
	}
	if ev.Final {
		n.ended.add(ev.TaskID)
	}
	rooms := make([]socket.Room, len(ev.Rooms))
	for i, r := range ev.Rooms {
		rooms[i] = socket.Room(r)
	}
	for _, p := range ev.Pushes {
		if err := n.srv.nsp.Local().To(rooms...).Emit(p.Name, p.Data); err != nil {
			n.srv.logger.Debug("socketio: push failed", "event", p.Name, "err", err)
		}
	}
}

// shutdown stops taking questions.
func (n *queueNode) shutdown() {
	n.mu.Lock()
	n.stopping = true
	n.mu.Unlock()
}

// boundedSet remembers up to max strings; past it, the oldest are
// forgotten first.
type boundedSet struct {
	max   int
	items map[string]struct{}
	order []string
	next  int
}

func newBoundedSet(max int) boundedSet {
	return boundedSet{max: max, items: map[string]struct{}{}}
}

func (b *boundedSet) has(s string) bool {
	_, ok := b.items[s]
	return ok
}

func (b *boundedSet) add(s string) {
	if _, ok := b.items[s]; ok {
		return
	}
	if len(b.order) < b.max {
		b.order = append(b.order, s)
	} else {
		delete(b.items, b.order[b.next])
		b.order[b.next] = s
		b.next = (b.next + 1) % b.max
	}
	b.items[s] = struct{}{}
}
