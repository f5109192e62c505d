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
	max     int
	closed  bool
}

// NewSequencer returns a held Sequencer that buffers at most max events
// waiting for an earlier one (a client can make the server buffer only that
// much).
func NewSequencer(max int) *Sequencer {
	return &Sequencer{pending: map[Seq]func(){}, busy: true, max: max}
}

// Submit schedules fn as event n. It returns false, and drops fn, when the
// buffer is full, n was already submitted, or the sequencer is closed.
func (s *Sequencer) Submit(n Seq, fn func()) bool {
	s.mu.Lock()
	if s.closed || n < s.next {
		s.mu.Unlock()
		return false
	}
	if _, dup := s.pending[n]; dup || len(s.pending) >= s.max {
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
func (s *Sequencer) Release() { s.drain() }

// Close drops buffered events and refuses new ones. An event that is
// running finishes.
func (s *Sequencer) Close() {
	s.mu.Lock()
	s.closed = true
	clear(s.pending)
	s.mu.Unlock()
}

// drain runs ready events in order; the caller holds the busy flag.
func (s *Sequencer) drain() {
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
