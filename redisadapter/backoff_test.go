package redisadapter

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestBackoffNotInLockstep: two nodes that lose Redis at the same moment
// must not retry at the same moments.
func TestBackoffNotInLockstep(t *testing.T) {
	var a, b backoff
	differ := 0
	for range 8 {
		if a.next() != b.next() {
			differ++
		}
	}
	assert.Equal(t, 8, differ, "every delay is jittered")
}

// TestBackoffJitterRange: each delay lies in [d/2, d) of the doubling
// sequence 50ms … 2s, at the ends of the random source and between.
func TestBackoffJitterRange(t *testing.T) {
	base := []time.Duration{50, 100, 200, 400, 800, 1600, 2000, 2000, 2000}
	for i := range base {
		base[i] *= time.Millisecond
	}
	for _, r := range []float64{0, 0.5, 0.999999} {
		b := backoff{rnd: func() float64 { return r }}
		for i, d := range base {
			got := b.next()
			assert.GreaterOrEqual(t, got, d/2, "r=%v step %d", r, i)
			assert.Less(t, got, d, "r=%v step %d", r, i)
			assert.Equal(t, d/2+time.Duration(r*float64(d-d/2)), got, "r=%v step %d", r, i)
		}
	}
	// A sequence of sources gives a sequence of different delays; reset
	// starts over.
	vals := []float64{0.1, 0.9}
	i := 0
	b := backoff{rnd: func() float64 { v := vals[i%2]; i++; return v }}
	assert.Equal(t, 27500*time.Microsecond, b.next())
	assert.Equal(t, 95*time.Millisecond, b.next())
	b.reset()
	assert.Equal(t, 27500*time.Microsecond, b.next())
}
