package socketio

import (
	"context"
	"errors"
	"time"
)

// sweepBatch bounds how many tasks of a dead node one sweep settles.
const sweepBatch = 100

// startLeases, when the storage keeps node leases, takes this node's lease
// and starts renewing it and sweeping for the tasks of dead nodes, every
// NodeTTL/3 until Close.
func (s *Server) startLeases() {
	ns, ok := s.storage.(nodeStore)
	if !ok {
		return
	}
	s.nodes, s.node = ns, newID("n_")
	ctx, cancel := s.storageCtx()
	if err := ns.renewNode(ctx, s.node, s.opts.NodeTTL); err != nil {
		s.logger.Warn("socketio: cannot take this node's lease", "node", s.node, "err", err)
	}
	cancel()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.runLeases()
	}()
}

// runLeases is startLeases' loop. When it stops, it drops the lease: the
// tasks this node still holds (ends it could not store) are then settled
// by the other nodes.
func (s *Server) runLeases() {
	ticker := time.NewTicker(max(s.opts.NodeTTL/3, time.Millisecond))
	defer ticker.Stop()
	suspects := map[string]bool{}
	for {
		select {
		case <-s.ctx.Done():
			ctx, cancel := s.storageCtx()
			_ = s.nodes.dropNode(ctx, s.node)
			cancel()
			return
		case <-ticker.C:
		}
		if !s.leaseOff.Load() {
			ctx, cancel := s.loopCtx()
			if err := s.nodes.renewNode(ctx, s.node, s.opts.NodeTTL); err != nil {
				s.logger.Debug("socketio: cannot renew this node's lease", "node", s.node, "err", err)
			}
			cancel()
		}
		suspects = s.tasks.sweep(suspects)
	}
}

// loopCtx bounds a storage call of the lease loop: by StorageTimeout, and
// by Close, which need not wait for a slow store here (an abandoned write
// is applied whole or not at all).
func (s *Server) loopCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, s.opts.StorageTimeout)
}

// lostUpdate is the end of a task that was lost with the node that ran it.
func lostUpdate() TaskUpdate {
	return TaskUpdate{Status: TaskFailed, At: time.Now().UTC().Truncate(time.Millisecond),
		Error: &TaskError{Code: CodeTimeout, Message: "the answer was lost with the server that ran it"}}
}

// sweep settles the tasks of the nodes that were dead at the previous
// sweep (suspects) and still are, and returns the nodes dead now. Seeing
// a node dead twice, a renewal period apart, spares a node that lost its
// lease only while the store was away and renews it as soon as it is
// back. Several nodes may sweep at once: a dead node is swept by the one
// that claims it, and the store applies only the first end of a task, so
// each orphan's end is pushed once.
func (r *taskRunner) sweep(suspects map[string]bool) map[string]bool {
	s := r.srv
	ctx, cancel := s.loopCtx()
	dead, err := s.nodes.deadNodes(ctx, s.node)
	cancel()
	if err != nil {
		s.logger.Debug("socketio: cannot sweep for orphaned tasks", "err", err)
		return map[string]bool{}
	}
	next := make(map[string]bool, len(dead))
	for _, node := range dead {
		next[node] = true
		if suspects[node] {
			r.settleNode(node)
		}
	}
	return next
}

// settleNode settles a batch of the unfinished tasks of a dead node and
// pushes their ends.
func (r *taskRunner) settleNode(node string) {
	s := r.srv
	ctx, cancel := s.loopCtx()
	defer cancel()
	ok, err := s.nodes.claimNode(ctx, node, s.node, s.opts.NodeTTL)
	if err != nil || !ok {
		return
	}
	refs, err := s.nodes.heldTasks(ctx, node, sweepBatch)
	if err != nil {
		return
	}
	for _, ref := range refs {
		if s.queue != nil {
			// With a RedisQueue a node holds a task only until it is
			// queued: the dead node's answers go on on the workers.
			if err := s.queue.requeue(ctx, ref); err != nil && !errors.Is(err, ErrNotFound) {
				return
			}
			_ = s.nodes.releaseTask(ctx, node, ref)
			continue
		}
		t, applied, err := s.storage.UpdateTask(ctx, ref.owner, ref.id, lostUpdate())
		if err != nil && !errors.Is(err, ErrNotFound) {
			return
		}
		if applied {
			s.logger.Warn("socketio: settled a task lost with its node", "task", ref.id, "node", node)
			r.pushEnd(t)
		}
		_ = s.nodes.releaseTask(ctx, node, ref)
	}
}

// hold records that this node holds the task t, before it is created.
func (r *taskRunner) hold(ctx context.Context, t Task) error {
	if r.srv.nodes == nil {
		return nil
	}
	return r.srv.nodes.holdTask(ctx, r.srv.node, taskRef{owner: t.Owner, id: t.ID})
}

// release forgets that this node holds t, whose end is stored (or lost).
func (r *taskRunner) release(t Task) {
	if r.srv.nodes == nil {
		return
	}
	ctx, cancel := r.srv.storageCtx()
	defer cancel()
	if err := r.srv.nodes.releaseTask(ctx, r.srv.node, taskRef{owner: t.Owner, id: t.ID}); err != nil {
		r.srv.logger.Debug("socketio: cannot release a task", "task", t.ID, "err", err)
	}
}
