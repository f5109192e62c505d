package seqparser

import "sync"

// Sequencer runs the events of one socket one at a time, in Seq order,
// whatever order the goroutines delivering them arrive in.
//
// Submit may be called concurrently. The goroutine that submits the next
// expected event runs it and then every buffered event that follows, so
// no goroutine of its own is needed. A Sequencer starts held: nothing runs
// until Release, so that a connection's setup completes before its first
// request is handled.
type Sequencer struct {
	mu      sync.Mutex
	next    Seq
	pending map[Seq]func()
	busy    bool // a goroutine is running events, or the sequencer is held
	held    bool // not released yet
	max     int
	closed  bool
}

// NewSequencer returns a held Sequencer that buffers at most max events
// waiting for an earlier one (a client can make the server buffer only that
// much).
func NewSequencer(max int) *Sequencer {
	return &Sequencer{pending: map[Seq]func(){}, busy: true, held: true, max: max}
}

// Submit schedules fn as event n. It returns false, and drops fn, when the
// buffer is full, n was already submitted, or the sequencer is closed.
func (s *Sequencer) Submit(n Seq, fn func()) bool {
	s.mu.Lock()
	if s.closed || n < s.next {
		s.mu.Unlock()
		return false
	}
	// The event due next is always taken: it is what frees the buffer.
	if _, dup := s.pending[n]; dup || n != s.next && len(s.pending) >= s.max {
		s.mu.Unlock()
		return false
	}
	s.pending[n] = fn
	if s.busy || n != s.next {
		s.mu.Unlock()
		return true
	}
	s.busy = true
	s.mu.Unlock()
	s.drain()
	return true
}

// Release lets held events run; the caller runs those that are ready.
// Only the first call does anything.
func (s *Sequencer) Release() {
	s.mu.Lock()
	if !s.held {
		s.mu.Unlock()
		return
	}
	s.held = false // busy stays set: this goroutine drains
	s.mu.Unlock()
	s.drain()
}

// Close drops buffered events and refuses new ones. An event that is
// running finishes.
func (s *Sequencer) Close() {
	s.mu.Lock()
	s.closed = true
	clear(s.pending)
	s.mu.Unlock()
}

// drain runs ready events in order; the caller holds the busy flag. If an
// event panics, the flag is given up so that later events still run.
func (s *Sequencer) drain() {
	defer func() {
		if v := recover(); v != nil {
			s.mu.Lock()
			s.busy = false
			s.mu.Unlock()
			panic(v)
		}
	}()
	for {
		s.mu.Lock()
		fn, ok := s.pending[s.next]
		if !ok || s.closed {
			s.busy = false
			s.mu.Unlock()
			return
		}
		delete(s.pending, s.next)
		s.next++
		s.mu.Unlock()
		fn()
	}
}
