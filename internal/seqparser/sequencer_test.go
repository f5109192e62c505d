package seqparser_test

import (
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/qaplatform/socketio/internal/seqparser"
)

// runLog records the events a Sequencer runs, and fails the test if two
// ever run at the same time.
type runLog struct {
	t       *testing.T
	mu      sync.Mutex
	ran     []seqparser.Seq
	running atomic.Int32
}

func (l *runLog) event(n seqparser.Seq) func() {
	return func() {
		if l.running.Add(1) != 1 {
			l.t.Errorf("event %d runs while another is running", n)
		}
		defer l.running.Add(-1)
		l.mu.Lock()
		defer l.mu.Unlock()
		l.ran = append(l.ran, n)
	}
}

func (l *runLog) take() []seqparser.Seq {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.ran
	l.ran = nil
	return out
}

func seqs(ns ...uint64) []seqparser.Seq {
	out := make([]seqparser.Seq, 0, len(ns))
	for _, n := range ns {
		out = append(out, seqparser.Seq(n))
	}
	return out
}

func TestSequencerHeldUntilRelease(t *testing.T) {
	s := seqparser.NewSequencer(8)
	log := &runLog{t: t}
	for _, n := range []uint64{2, 0, 1} {
		require.True(t, s.Submit(seqparser.Seq(n), log.event(seqparser.Seq(n))))
	}
	assert.Empty(t, log.take(), "nothing runs before Release")

	s.Release()
	assert.Equal(t, seqs(0, 1, 2), log.take(), "Release runs the ready events before returning")

	// Released: the submitter of the next event runs it.
	require.True(t, s.Submit(3, log.event(3)))
	assert.Equal(t, seqs(3), log.take())
}

func TestSequencerOrder(t *testing.T) {
	tests := []struct {
		name   string
		submit []uint64 // in this order, after Release
		want   []seqparser.Seq
	}{
		{name: "in order", submit: []uint64{0, 1, 2}, want: seqs(0, 1, 2)},
		{name: "reversed", submit: []uint64{2, 1, 0}, want: seqs(0, 1, 2)},
		{name: "gap filled last", submit: []uint64{0, 2, 3, 1}, want: seqs(0, 1, 2, 3)},
		{name: "gap never filled", submit: []uint64{0, 2, 3}, want: seqs(0)},
		{name: "first missing", submit: []uint64{1, 2}, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := seqparser.NewSequencer(8)
			s.Release()
			log := &runLog{t: t}
			for _, n := range tc.submit {
				require.True(t, s.Submit(seqparser.Seq(n), log.event(seqparser.Seq(n))))
			}
			assert.Equal(t, tc.want, log.take())
		})
	}
}

// Events submitted from many goroutines in a random order run one at a
// time, in Seq order.
func TestSequencerConcurrentSubmit(t *testing.T) {
	tests := []struct {
		name          string
		releaseBefore bool
	}{
		{"released", true},
		{"held while submitting", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			const n = 500
			s := seqparser.NewSequencer(n)
			if tc.releaseBefore {
				s.Release()
			}
			log := &runLog{t: t}
			order := rand.New(rand.NewPCG(1, 2)).Perm(n)

			start := make(chan struct{})
			var wg sync.WaitGroup
			for _, k := range order {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					assert.True(t, s.Submit(seqparser.Seq(k), log.event(seqparser.Seq(k))), "Submit(%d)", k)
				}()
			}
			close(start)
			wg.Wait()
			if !tc.releaseBefore {
				assert.Empty(t, log.take(), "held")
				s.Release()
			}

			// Every Submit has returned, so every event has run: the
			// submitter that completes a run drains it before returning.
			got := log.take()
			require.Len(t, got, n)
			assert.True(t, slices.IsSorted(got), "events ran out of order: %v", got)
			assert.Equal(t, seqparser.Seq(0), got[0])
			assert.Equal(t, seqparser.Seq(n-1), got[n-1])
		})
	}
}

func TestSequencerRefuses(t *testing.T) {
	s := seqparser.NewSequencer(4)
	log := &runLog{t: t}
	require.True(t, s.Submit(2, log.event(2)))
	assert.False(t, s.Submit(2, func() { t.Error("duplicate ran") }), "duplicate of a pending event")

	s.Release() // nothing ready: 0 is missing
	require.True(t, s.Submit(0, log.event(0)))
	assert.Equal(t, seqs(0), log.take())
	assert.False(t, s.Submit(0, func() { t.Error("replay ran") }), "an event that already ran")

	require.True(t, s.Submit(1, log.event(1)))
	assert.Equal(t, seqs(1, 2), log.take())
	for _, n := range []seqparser.Seq{0, 1, 2} {
		assert.False(t, s.Submit(n, func() { t.Errorf("%d ran twice", n) }), "Submit(%d) below next", n)
	}
	require.True(t, s.Submit(3, log.event(3)))
	assert.Equal(t, seqs(3), log.take())
}

func TestSequencerBoundedBuffer(t *testing.T) {
	const max = 3
	s := seqparser.NewSequencer(max)
	log := &runLog{t: t}
	for n := range seqparser.Seq(max) {
		require.True(t, s.Submit(n, log.event(n)), "Submit(%d)", n)
	}
	assert.False(t, s.Submit(max, func() { t.Error("dropped event ran") }), "buffer full")

	s.Release()
	assert.Equal(t, seqs(0, 1, 2), log.take())

	// The buffer drained: it takes max events again, however far ahead.
	for n := seqparser.Seq(max + 1); n <= 2*max; n++ {
		require.True(t, s.Submit(n, log.event(n)), "Submit(%d)", n)
	}
	assert.False(t, s.Submit(2*max+1, func() {}), "buffer full of events waiting for 3")
	assert.Empty(t, log.take())
}

func TestSequencerClose(t *testing.T) {
	t.Run("drops pending and refuses new", func(t *testing.T) {
		s := seqparser.NewSequencer(8)
		for _, n := range []seqparser.Seq{0, 1, 3} {
			require.True(t, s.Submit(n, func() { t.Errorf("event %d ran after Close", n) }))
		}
		s.Close()
		s.Release()
		assert.False(t, s.Submit(2, func() { t.Error("ran after Close") }))
		assert.False(t, s.Submit(4, func() { t.Error("ran after Close") }))
		s.Close() // idempotent
	})
	t.Run("from a running event", func(t *testing.T) {
		s := seqparser.NewSequencer(8)
		log := &runLog{t: t}
		require.True(t, s.Submit(1, func() { t.Error("event 1 ran after Close") }))
		require.True(t, s.Submit(0, func() {
			log.event(0)()
			s.Close()
		}))
		s.Release()
		assert.Equal(t, seqs(0), log.take(), "the running event finishes, the pending one is dropped")
		assert.False(t, s.Submit(2, func() {}))
	})
}

// An event may submit the next one: it is queued and run by the same
// drain, not deadlocked.
func TestSequencerSubmitFromEvent(t *testing.T) {
	s := seqparser.NewSequencer(4)
	s.Release()
	log := &runLog{t: t}
	require.True(t, s.Submit(0, func() {
		log.event(0)()
		assert.True(t, s.Submit(1, log.event(1)))
		assert.True(t, s.Submit(2, log.event(2)))
	}))
	assert.Equal(t, seqs(0, 1, 2), log.take())
}

// When the buffer is full of events waiting for the next one, that next
// event must still be accepted: it runs at once and drains the buffer.
// Refusing it leaves the sequencer stuck, and conn.go then disconnects a
// client whose only fault is that v2 scheduled its goroutines late.
func TestSequencerFullBufferAcceptsNext(t *testing.T) {
	const max = 2
	s := seqparser.NewSequencer(max)
	s.Release()
	log := &runLog{t: t}
	require.True(t, s.Submit(1, log.event(1)))
	require.True(t, s.Submit(2, log.event(2)))
	assert.True(t, s.Submit(0, log.event(0)), "the next event is refused by a full buffer")
	assert.Equal(t, seqs(0, 1, 2), log.take())
}
