package redisadapter

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// run is the set of goroutines serving a Builder while at least one
// adapter is attached: a reader per stream, the subscriber, the worker that
// runs message handlers and, for Protocol02, the heartbeat loop. Its
// readers and ps are guarded by Builder.mu.
type run struct {
	b       *Builder
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started time.Time
	kick    chan struct{}
	queue   queue
	sub     *component // nil when nothing is subscribed

	readers map[string]*streamReader
	ps      *redis.PubSub
}

// startLocked starts a run; b.mu is held.
func (b *Builder) startLocked() *run {
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{
		b: b, ctx: ctx, cancel: cancel, started: time.Now(),
		kick: make(chan struct{}, 1), readers: map[string]*streamReader{},
	}
	r.queue.wake = make(chan struct{}, 1)
	b.run = r
	r.wg.Add(1)
	go r.work()
	if b.subscriptionNeeded() {
		r.sub = newComponent("subscriber", b.log)
		r.wg.Add(1)
		go r.subscribe()
	}
	if b.opts.Protocol == Protocol02 {
		r.wg.Add(1)
		go r.heartbeat()
	}
	return r
}

// ensureReaderLocked starts the reader of stream unless it runs; b.mu is
// held.
func (r *run) ensureReaderLocked(stream string) {
	if _, ok := r.readers[stream]; ok {
		return
	}
	rd := newStreamReader(r, stream)
	r.readers[stream] = rd
	r.wg.Add(1)
	go rd.loop()
}

// stop ends the run and waits for its goroutines. b.run no longer points
// to r, so nothing new is started in it.
func (r *run) stop() {
	r.cancel()
	r.b.mu.Lock()
	ps := r.ps
	r.ps = nil
	var readers []*streamReader
	for _, rd := range r.readers {
		readers = append(readers, rd)
	}
	r.b.mu.Unlock()
	if ps != nil {
		_ = ps.Close() // interrupts a blocked receive
	}
	for _, rd := range readers {
		rd.close() // interrupts a blocked XREAD
	}
	r.wg.Wait()
}

func (r *run) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// sleep waits for d or the end of the run; it reports whether the run goes
// on.
func (r *run) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.ctx.Done():
		return false
	}
}

// queue holds message handlers for the worker, in arrival order. It is
// unbounded so that the readers never wait for a slow listener.
type queue struct {
	mu    sync.Mutex
	items []func()
	wake  chan struct{}
}

func (q *queue) push(f func()) {
	q.mu.Lock()
	q.items = append(q.items, f)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue) take() []func() {
	q.mu.Lock()
	defer q.mu.Unlock()
	items := q.items
	q.items = nil
	return items
}

// work runs the queued message handlers; what is still queued when the run
// stops is dropped.
func (r *run) work() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.queue.wake:
		}
		for items := r.queue.take(); len(items) > 0; items = r.queue.take() {
			for _, f := range items {
				if r.ctx.Err() != nil {
					return
				}
				r.b.safely("message handler", f)
			}
		}
	}
}

// heartbeat sends the heartbeats of every adapter and forgets silent nodes
// (Protocol02).
func (r *run) heartbeat() {
	defer r.wg.Done()
	period := min(r.b.opts.HeartbeatInterval, r.b.opts.HeartbeatTimeout) / 4
	period = max(min(period, time.Second), 5*time.Millisecond)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		r.b.mu.Lock()
		var all []*nodeAdapter
		for _, a := range r.b.adapters {
			all = append(all, a)
		}
		r.b.mu.Unlock()
		now := time.Now()
		for _, a := range all {
			if r.ctx.Err() != nil {
				return
			}
			r.b.safely("heartbeat", func() { a.maintain(now) })
		}
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		case <-r.kick:
		}
	}
}

// backoff doubles a retry delay from 50ms up to 2s, and jitters each
// delay into [d/2, d): nodes that lose Redis together (a Redis restart)
// then reconnect spread out, not in lockstep.
type backoff struct {
	d time.Duration
	// rnd returns a number in [0, 1); nil means math/rand/v2.
	rnd func() float64
}

func (b *backoff) next() time.Duration {
	switch {
	case b.d == 0:
		b.d = 50 * time.Millisecond
	case b.d < 2*time.Second:
		b.d = min(2*b.d, 2*time.Second)
	}
	rnd := b.rnd
	if rnd == nil {
		rnd = rand.Float64
	}
	half := b.d / 2
	return half + time.Duration(rnd()*float64(b.d-half))
}

func (b *backoff) reset() { b.d = 0 }
