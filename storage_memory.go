package socketio

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

var _ Storage = (*MemoryStorage)(nil)

const (
	// memDefaultHistoryLimit is the page size of History when limit <= 0.
	memDefaultHistoryLimit = 20
	// memDefaultPopularLimit is the size of PopularQuestions when limit <= 0.
	memDefaultPopularLimit = 10
	// memSweepBatch bounds how many entries one sweep step removes while
	// holding the lock, so that a large expiry does not stall requests.
	memSweepBatch = 1000
	// memMaxSweepInterval and memMinSweepInterval bound how often the
	// sweeper runs.
	memMaxSweepInterval = time.Minute
	memMinSweepInterval = time.Millisecond
)

var errMemoryClosed = fmt.Errorf("socketio: memory storage closed: %w", ErrUnavailable)

// MemoryStorage is a Storage that keeps everything in the memory of one
// process. It is the default store: fine for a single server, lost on
// restart, and not shared between processes (use a Redis-backed Storage for
// that).
//
// Concurrency: all methods may be called concurrently. A method whose ctx
// is already done returns an error wrapping ctx.Err() and changes nothing;
// once started, a method runs to completion without blocking, so it is
// always applied whole.
//
// Memory is bounded by StorageOptions: sessions expire SessionTTL after
// their last save or touch, a task expires HistoryTTL after its last write
// (and an owner's history with its last task), each owner keeps at most
// MaxHistory tasks (the oldest finished ones are dropped first; unfinished
// ones are never dropped), and the popularity index keeps at most
// MaxPopular questions (a new question evicts the least asked one, the
// least recently asked among equals). Expired data is invisible at once
// and is removed by a background sweeper that runs at a fraction of the
// shortest TTL, at least once a minute. Close stops the sweeper; after
// Close, methods return an error wrapping ErrUnavailable.
type MemoryStorage struct {
	opts StorageOptions
	// now is the clock, injected by newMemoryStorage; it is read by the
	// sweeper too, so it is never reassigned.
	now func() time.Time

	mu        sync.Mutex
	closed    bool
	seq       uint64 // orders task creations and question askings
	sessions  map[string]*memSession
	sessionQ  memExpiryQueue[*memSession]
	tasks     map[string]*memTask
	taskQ     memExpiryQueue[*memTask]
	owners    map[string][]*memTask          // owner → tasks, oldest first
	open      map[string]map[string]*memTask // session id → unfinished tasks
	questions map[string]*memQuestion
	questionQ memQuestionQueue
	nodes     memNodes // see storage_nodes.go

	closeOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
}

// MemoryStats counts what a MemoryStorage holds, including expired entries
// that the sweeper has not removed yet. It is meant for metrics.
type MemoryStats struct {
	Sessions  int
	Tasks     int
	Owners    int
	Questions int
}

// NewMemoryStorage returns a MemoryStorage configured by opts (the zero
// value means the defaults) and starts its sweeper. Call Close to stop it.
func NewMemoryStorage(opts StorageOptions) *MemoryStorage {
	return newMemoryStorage(opts, time.Now)
}

// newMemoryStorage is NewMemoryStorage with an injectable clock.
func newMemoryStorage(opts StorageOptions, now func() time.Time) *MemoryStorage {
	opts = opts.withDefaults()
	s := &MemoryStorage{
		opts:      opts,
		now:       now,
		sessions:  make(map[string]*memSession),
		tasks:     make(map[string]*memTask),
		owners:    make(map[string][]*memTask),
		open:      make(map[string]map[string]*memTask),
		questions: make(map[string]*memQuestion),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	go s.sweeper(memSweepInterval(opts))
	return s
}

// memSweepInterval is a quarter of the shortest TTL, between
// memMinSweepInterval and memMaxSweepInterval.
func memSweepInterval(opts StorageOptions) time.Duration {
	d := min(opts.SessionTTL, opts.HistoryTTL) / 4
	return min(max(d, memMinSweepInterval), memMaxSweepInterval)
}

// Close stops the sweeper and waits for it to exit. It is idempotent and
// always returns nil.
func (s *MemoryStorage) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.stop)
	})
	<-s.done
	return nil
}

// Stats returns the number of entries the storage holds.
func (s *MemoryStorage) Stats() MemoryStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return MemoryStats{
		Sessions:  len(s.sessions),
		Tasks:     len(s.tasks),
		Owners:    len(s.owners),
		Questions: len(s.questions),
	}
}

// SaveSession creates or replaces a session and restarts its expiry.
func (s *MemoryStorage) SaveSession(ctx context.Context, sess Session) error {
	if err := memCheckContext(ctx); err != nil {
		return err
	}
	if sess.ID == "" {
		return errors.New("socketio: save session: empty session id")
	}
	sess = memCopySession(sess)
	now := s.now()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errMemoryClosed
	}
	if ms, ok := s.sessions[sess.ID]; ok {
		ms.session = sess
		memSetExpiry(&s.sessionQ, ms, now.Add(s.opts.SessionTTL))
		return nil
	}
	ms := &memSession{session: sess}
	ms.at = now.Add(s.opts.SessionTTL)
	s.sessions[sess.ID] = ms
	heap.Push(&s.sessionQ, ms)
	return nil
}

// Session returns the session with the given id, or ErrNotFound.
func (s *MemoryStorage) Session(ctx context.Context, id string) (Session, error) {
	if err := memCheckContext(ctx); err != nil {
		return Session{}, err
	}
	now := s.now()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Session{}, errMemoryClosed
	}
	ms, ok := s.sessions[id]
	if !ok || ms.expired(now) {
		s.mu.Unlock()
		return Session{}, fmt.Errorf("session %q: %w", id, ErrNotFound)
	}
	sess := ms.session // Data is cloned outside the lock: stored maps are never mutated
	s.mu.Unlock()
	return memCopySession(sess), nil
}

// TouchSession sets the session's LastSeen to at and restarts its expiry.
func (s *MemoryStorage) TouchSession(ctx context.Context, id string, at time.Time) error {
	if err := memCheckContext(ctx); err != nil {
		return err
	}
	now := s.now()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errMemoryClosed
	}
	ms, ok := s.sessions[id]
	if !ok || ms.expired(now) {
		return fmt.Errorf("session %q: %w", id, ErrNotFound)
	}
	ms.session.LastSeen = at
	memSetExpiry(&s.sessionQ, ms, now.Add(s.opts.SessionTTL))
	return nil
}

// DeleteSession removes a session; deleting an unknown one is not an error.
func (s *MemoryStorage) DeleteSession(ctx context.Context, id string) error {
	if err := memCheckContext(ctx); err != nil {
		return err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errMemoryClosed
	}
	if ms, ok := s.sessions[id]; ok {
		s.removeSessionLocked(ms)
	}
	return nil
}

// CreateTask stores a new pending task at the head of its owner's history
// unless its session already has maxOpen or more unfinished tasks
// (ErrTooManyTasks). The task must have an ID and an Owner, its ID must be
// new, and its Status must be empty or TaskPending; it is stored as
// pending.
func (s *MemoryStorage) CreateTask(ctx context.Context, t Task, maxOpen int) error {
	if err := memCheckContext(ctx); err != nil {
		return err
	}
	if err := checkNewTask(t); err != nil {
		return err
	}
	t = memCopyTask(t)
	t.Status = TaskPending
	now := s.now()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errMemoryClosed
	}
	if old, ok := s.tasks[t.ID]; ok {
		if !old.expired(now) {
			return fmt.Errorf("socketio: create task %q: task id already exists", t.ID)
		}
		s.removeTaskLocked(old)
	}
	if maxOpen > 0 {
		n := 0
		for _, mt := range s.open[t.SessionID] {
			if !mt.expired(now) {
				n++
			}
		}
		if n >= maxOpen {
			return ErrTooManyTasks
		}
	}

	s.seq++
	mt := &memTask{seq: s.seq, task: t}
	mt.at = now.Add(s.opts.HistoryTTL)
	s.tasks[t.ID] = mt
	heap.Push(&s.taskQ, mt)
	s.owners[t.Owner] = append(s.owners[t.Owner], mt)
	open := s.open[t.SessionID]
	if open == nil {
		open = make(map[string]*memTask)
		s.open[t.SessionID] = open
	}
	open[t.ID] = mt
	s.trimOwnerLocked(t.Owner, now)
	return nil
}

// Task returns the owner's task with the given id, or ErrNotFound.
func (s *MemoryStorage) Task(ctx context.Context, owner, id string) (Task, error) {
	if err := memCheckContext(ctx); err != nil {
		return Task{}, err
	}
	now := s.now()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Task{}, errMemoryClosed
	}
	mt, ok := s.tasks[id]
	if !ok || mt.expired(now) || mt.task.Owner != owner {
		s.mu.Unlock()
		return Task{}, fmt.Errorf("task %q: %w", id, ErrNotFound)
	}
	t := mt.task // stored Sources, Error and Usage are never mutated, only replaced
	s.mu.Unlock()
	return memCopyTask(t), nil
}

// UpdateTask applies u to the task when TaskUpdate.Apply allows it and
// returns the task after the call and whether u was applied. An applied
// update restarts the task's expiry. A zero u.At means now.
func (s *MemoryStorage) UpdateTask(ctx context.Context, owner, id string, u TaskUpdate) (Task, bool, error) {
	if err := memCheckContext(ctx); err != nil {
		return Task{}, false, err
	}
	now := s.now()
	if u.At.IsZero() {
		u.At = now
	}
	u.Sources = slices.Clone(u.Sources)
	if u.Error != nil {
		e := *u.Error
		u.Error = &e
	}
	if u.Usage != nil {
		us := *u.Usage
		u.Usage = &us
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Task{}, false, errMemoryClosed
	}
	mt, ok := s.tasks[id]
	if !ok || mt.expired(now) || mt.task.Owner != owner {
		s.mu.Unlock()
		return Task{}, false, fmt.Errorf("task %q: %w", id, ErrNotFound)
	}
	t, applied := u.Apply(mt.task)
	if applied {
		mt.task = t
		memSetExpiry(&s.taskQ, mt, now.Add(s.opts.HistoryTTL))
		if t.Status.Finished() {
			s.closeTaskLocked(mt)
			s.trimOwnerLocked(t.Owner, now)
		}
	}
	s.mu.Unlock()
	return memCopyTask(t), applied, nil
}

// History returns up to limit of the owner's tasks, most recently created
// first, starting after the task before when it is set. limit <= 0 means
// 20. before must be a live task of the owner, or History returns
// ErrNotFound.
func (s *MemoryStorage) History(ctx context.Context, owner string, before string, limit int) ([]Task, bool, error) {
	if err := memCheckContext(ctx); err != nil {
		return nil, false, err
	}
	if limit <= 0 {
		limit = memDefaultHistoryLimit
	}
	now := s.now()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, false, errMemoryClosed
	}
	list := s.owners[owner]
	i := len(list) - 1
	if before != "" {
		mt, ok := s.tasks[before]
		if !ok || mt.expired(now) || mt.task.Owner != owner {
			s.mu.Unlock()
			return nil, false, fmt.Errorf("history of %q before task %q: %w", owner, before, ErrNotFound)
		}
		pos, found := memFindTask(list, mt)
		if !found {
			s.mu.Unlock()
			return nil, false, fmt.Errorf("history of %q before task %q: %w", owner, before, ErrNotFound)
		}
		i = pos - 1
	}
	items := make([]Task, 0, min(limit, i+1))
	hasMore := false
	for ; i >= 0; i-- {
		mt := list[i]
		if mt.expired(now) {
			continue
		}
		if len(items) == limit {
			hasMore = true
			break
		}
		items = append(items, mt.task)
	}
	s.mu.Unlock()
	for k := range items {
		items[k] = memCopyTask(items[k])
	}
	return items, hasMore, nil
}

// ClearHistory deletes the owner's finished tasks, so that Task then
// returns ErrNotFound for them, and returns how many it deleted.
// Unfinished tasks stay.
func (s *MemoryStorage) ClearHistory(ctx context.Context, owner string) (int, error) {
	if err := memCheckContext(ctx); err != nil {
		return 0, err
	}
	now := s.now()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errMemoryClosed
	}
	list, ok := s.owners[owner]
	if !ok {
		return 0, nil
	}
	deleted := 0
	kept := list[:0]
	for _, mt := range list {
		expired := mt.expired(now)
		if !expired && !mt.task.Status.Finished() {
			kept = append(kept, mt)
			continue
		}
		if !expired {
			deleted++
		}
		s.unindexTaskLocked(mt)
	}
	s.setOwnerLocked(owner, list, kept)
	return deleted, nil
}

// RecordQuestion counts one more asking of question. When the index is
// full, a new question evicts the least asked one (the least recently
// asked among equals).
func (s *MemoryStorage) RecordQuestion(ctx context.Context, question string) error {
	if err := memCheckContext(ctx); err != nil {
		return err
	}
	if question == "" {
		return errors.New("socketio: record question: empty question")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errMemoryClosed
	}
	s.seq++
	if q, ok := s.questions[question]; ok {
		q.count++
		q.seq = s.seq
		heap.Fix(&s.questionQ, q.index)
		return nil
	}
	for len(s.questionQ) >= s.opts.MaxPopular {
		evicted := heap.Pop(&s.questionQ).(*memQuestion)
		delete(s.questions, evicted.text)
	}
	q := &memQuestion{text: question, count: 1, seq: s.seq}
	s.questions[question] = q
	heap.Push(&s.questionQ, q)
	return nil
}

// PopularQuestions returns up to limit questions, most asked first; ties go
// to the most recently asked, then to the lexicographically smaller.
// limit <= 0 means 10.
func (s *MemoryStorage) PopularQuestions(ctx context.Context, limit int) ([]string, error) {
	if err := memCheckContext(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = memDefaultPopularLimit
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errMemoryClosed
	}
	// Keep the best limit questions in a heap whose root is the worst of
	// them: O(n log limit) under the lock, without copying the index.
	top := make(memRankHeap, 0, min(limit, len(s.questions)))
	for _, q := range s.questions {
		r := memRanked{text: q.text, count: q.count, seq: q.seq}
		switch {
		case len(top) < limit:
			heap.Push(&top, r)
		case memRankBefore(r, top[0]):
			top[0] = r
			heap.Fix(&top, 0)
		}
	}
	s.mu.Unlock()

	slices.SortFunc(top, func(a, b memRanked) int {
		if memRankBefore(a, b) {
			return -1
		}
		if memRankBefore(b, a) {
			return 1
		}
		return 0
	})
	out := make([]string, len(top))
	for i, r := range top {
		out[i] = r.text
	}
	return out, nil
}

// sweeper removes expired entries every interval until Close.
func (s *MemoryStorage) sweeper(interval time.Duration) {
	defer close(s.done)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-ticker.C:
			s.sweep()
		}
	}
}

// sweep removes every entry that has expired, memSweepBatch at a time so
// that requests can interleave.
func (s *MemoryStorage) sweep() {
	for {
		now := s.now()
		s.mu.Lock()
		n := 0
		for n < memSweepBatch && len(s.sessionQ) > 0 && s.sessionQ[0].expired(now) {
			s.removeSessionLocked(s.sessionQ[0])
			n++
		}
		for n < memSweepBatch && len(s.taskQ) > 0 && s.taskQ[0].expired(now) {
			s.removeTaskLocked(s.taskQ[0])
			n++
		}
		s.mu.Unlock()
		if n < memSweepBatch {
			return
		}
	}
}

// removeSessionLocked forgets a session.
func (s *MemoryStorage) removeSessionLocked(ms *memSession) {
	delete(s.sessions, ms.session.ID)
	heap.Remove(&s.sessionQ, ms.index)
}

// removeTaskLocked forgets a task, including its place in its owner's
// history.
func (s *MemoryStorage) removeTaskLocked(mt *memTask) {
	s.unindexTaskLocked(mt)
	owner := mt.task.Owner
	list := s.owners[owner]
	if i, ok := memFindTask(list, mt); ok {
		s.setOwnerLocked(owner, list, slices.Delete(list, i, i+1))
	}
}

// unindexTaskLocked forgets a task everywhere except in its owner's
// history; the caller removes it from there.
func (s *MemoryStorage) unindexTaskLocked(mt *memTask) {
	delete(s.tasks, mt.task.ID)
	heap.Remove(&s.taskQ, mt.index)
	s.closeTaskLocked(mt)
}

// closeTaskLocked removes a task from its session's unfinished tasks.
func (s *MemoryStorage) closeTaskLocked(mt *memTask) {
	open := s.open[mt.task.SessionID]
	delete(open, mt.task.ID)
	if len(open) == 0 {
		delete(s.open, mt.task.SessionID)
	}
}

// setOwnerLocked stores an owner's new history list, which reuses the
// backing array of old; it forgets the owner when the list is empty.
func (s *MemoryStorage) setOwnerLocked(owner string, old, list []*memTask) {
	clear(old[len(list):]) // drop references to removed tasks
	if len(list) == 0 {
		delete(s.owners, owner)
		return
	}
	s.owners[owner] = list
}

// trimOwnerLocked drops the owner's expired tasks and, while the owner has
// more than MaxHistory tasks, its oldest finished ones.
func (s *MemoryStorage) trimOwnerLocked(owner string, now time.Time) {
	list := s.owners[owner]
	if len(list) <= s.opts.MaxHistory {
		return
	}
	live := 0
	for _, mt := range list {
		if !mt.expired(now) {
			live++
		}
	}
	excess := live - s.opts.MaxHistory
	kept := list[:0]
	for _, mt := range list {
		switch {
		case mt.expired(now):
			s.unindexTaskLocked(mt)
		case excess > 0 && mt.task.Status.Finished():
			s.unindexTaskLocked(mt)
			excess--
		default:
			kept = append(kept, mt)
		}
	}
	s.setOwnerLocked(owner, list, kept)
}

// memCheckContext returns an error wrapping ctx.Err() when ctx is done.
func memCheckContext(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("socketio: memory storage: %w", err)
	}
	return nil
}

// memCopySession returns s with its own Data map.
func memCopySession(s Session) Session {
	s.Data = maps.Clone(s.Data)
	return s
}

// memCopyTask returns t with its own Sources, Error and Usage.
func memCopyTask(t Task) Task {
	t.Sources = slices.Clone(t.Sources)
	if t.Error != nil {
		e := *t.Error
		t.Error = &e
	}
	if t.Usage != nil {
		u := *t.Usage
		t.Usage = &u
	}
	return t
}

// memFindTask returns the position of mt in list, which is ordered by seq.
func memFindTask(list []*memTask, mt *memTask) (int, bool) {
	i, ok := slices.BinarySearchFunc(list, mt.seq, func(e *memTask, seq uint64) int {
		return cmp.Compare(e.seq, seq)
	})
	return i, ok && list[i] == mt
}

// memExpiry is when an entry expires and its place in an expiry queue.
type memExpiry struct {
	at    time.Time
	index int
}

func (e *memExpiry) expiryEntry() *memExpiry { return e }

// expired reports whether the entry has expired at now.
func (e *memExpiry) expired(now time.Time) bool { return !now.Before(e.at) }

type memExpiring interface{ expiryEntry() *memExpiry }

// memExpiryQueue is a min-heap of entries by expiry time.
type memExpiryQueue[T memExpiring] []T

func (q memExpiryQueue[T]) Len() int { return len(q) }
func (q memExpiryQueue[T]) Less(i, j int) bool {
	return q[i].expiryEntry().at.Before(q[j].expiryEntry().at)
}

func (q memExpiryQueue[T]) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].expiryEntry().index = i
	q[j].expiryEntry().index = j
}

func (q *memExpiryQueue[T]) Push(x any) {
	e := x.(T)
	e.expiryEntry().index = len(*q)
	*q = append(*q, e)
}

func (q *memExpiryQueue[T]) Pop() any {
	old := *q
	n := len(old) - 1
	e := old[n]
	var zero T
	old[n] = zero
	*q = old[:n]
	e.expiryEntry().index = -1
	return e
}

// memSetExpiry moves e, which is in q, to expire at at.
func memSetExpiry[T memExpiring](q *memExpiryQueue[T], e T, at time.Time) {
	x := e.expiryEntry()
	x.at = at
	heap.Fix(q, x.index)
}

type memSession struct {
	memExpiry
	session Session
}

type memTask struct {
	memExpiry
	seq  uint64 // creation order
	task Task
}

// memQuestion is one entry of the popularity index.
type memQuestion struct {
	text  string
	count int64
	seq   uint64 // when it was last asked
	index int    // place in memQuestionQueue
}

// memQuestionQueue is a min-heap of questions, least asked first, least
// recently asked among equals: its root is the next to evict.
type memQuestionQueue []*memQuestion

func (q memQuestionQueue) Len() int { return len(q) }
func (q memQuestionQueue) Less(i, j int) bool {
	if q[i].count != q[j].count {
		return q[i].count < q[j].count
	}
	return q[i].seq < q[j].seq
}

func (q memQuestionQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index = i
	q[j].index = j
}

func (q *memQuestionQueue) Push(x any) {
	e := x.(*memQuestion)
	e.index = len(*q)
	*q = append(*q, e)
}

func (q *memQuestionQueue) Pop() any {
	old := *q
	n := len(old) - 1
	e := old[n]
	old[n] = nil
	*q = old[:n]
	e.index = -1
	return e
}

// memRanked is a snapshot of a question for PopularQuestions.
type memRanked struct {
	text  string
	count int64
	seq   uint64
}

// memRankBefore reports whether a ranks before b: more asked, then more
// recently asked, then lexicographically smaller.
func memRankBefore(a, b memRanked) bool {
	if a.count != b.count {
		return a.count > b.count
	}
	if a.seq != b.seq {
		return a.seq > b.seq
	}
	return a.text < b.text
}

// memRankHeap is a heap whose root is its worst-ranked question.
type memRankHeap []memRanked

func (h memRankHeap) Len() int           { return len(h) }
func (h memRankHeap) Less(i, j int) bool { return memRankBefore(h[j], h[i]) }
func (h memRankHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *memRankHeap) Push(x any)        { *h = append(*h, x.(memRanked)) }
func (h *memRankHeap) Pop() any {
	old := *h
	n := len(old) - 1
	e := old[n]
	*h = old[:n]
	return e
}
