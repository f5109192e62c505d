package socketio

import (
	"context"
	"encoding/json"
	"errors"
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

	mu       sync.Mutex
	stopping bool
	ended    boundedSet // tasks whose end went by: later events of them are dropped
}

func newQueueNode(s *Server, q *RedisQueue) *queueNode {
	n := &queueNode{srv: s, q: q, ended: newBoundedSet(1 << 16)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := q.q.Events(s.ctx, n.deliver); err != nil && s.ctx.Err() == nil {
			s.logger.Error("socketio: the answer events stream stopped", "err", err)
		}
	}()
	return n
}

// accept stores a new pending task for ev. It refuses with unavailable, and
// stores nothing, when the queue is full. The question enters the queue in
// start, once the reply is sent, so that nothing of the task reaches a
// client before it: a question that races others into the last places of
// the queue may still find it full then, and ends as failed.
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
	now := time.Now().UTC().Truncate(time.Millisecond)
	t := Task{
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
	err = s.storage.CreateTask(ctx, t, s.opts.MaxOpenTasks)
	if errors.Is(err, ErrTooManyTasks) && s.tasks.settleStaleOf(ctx, c.owner, c.caller.SessionID) > 0 {
		err = s.storage.CreateTask(ctx, t, s.opts.MaxOpenTasks)
	}
	if err != nil {
		return nil, storageErr(err)
	}
	return &taskRun{task: t, caller: c.caller}, nil
}

func (n *queueNode) full() error {
	return &Error{Code: CodeUnavailable, Message: "too many questions are waiting; try again shortly", RetryAfter: n.q.opts.RetryAfter}
}

// start puts an accepted task into the queue, with its pending
// task_status. When the queue cannot take it, the task ends as failed.
func (n *queueNode) start(run *taskRun) {
	s := n.srv
	t := run.task
	entry, _ := json.Marshal(queueEntry{Owner: t.Owner, TaskID: t.ID, Caller: run.caller})
	ctx, cancel := s.storageCtx()
	defer cancel()
	_, err := n.q.q.Add(ctx, entry, encodeEvent(t, false, push{"task_status", taskStatusEvent(t)}))
	if err == nil {
		return
	}
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
		s.tasks.pushEnd(nt)
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
	n.srv.logger.Debug("socketio: answer event", "task", ev.TaskID, "pushes", len(ev.Pushes), "final", ev.Final)
	n.mu.Lock()
	drop := n.ended.has(ev.TaskID)
	if ev.Final && !drop {
		n.ended.add(ev.TaskID)
	}
	n.mu.Unlock()
	if drop {
		return
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
