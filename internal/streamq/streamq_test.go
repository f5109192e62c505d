package streamq_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/qaplatform/socketio/internal/streamq"
)

func TestMain(m *testing.M) {
	redis.SetLogger(quietLogger{})
	goleak.VerifyTestMain(m)
}

// quietLogger drops go-redis's "info for cmd=xautoclaim not found": the
// COMMAND reply of miniredis does not list XAUTOCLAIM, so a cluster client
// on miniredis logs it for every Claim (it then routes by the first
// argument, the key, which is right).
type quietLogger struct{}

func (quietLogger) Printf(_ context.Context, format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.Contains(msg, "info for cmd=") && strings.Contains(msg, "not found") {
		return
	}
	log.Print("redis: " + msg)
}

func TestQueue(t *testing.T) {
	for _, nb := range backends() {
		t.Run(nb.name, func(t *testing.T) { runSuite(t, nb.new) })
	}
}

// env is one test's queue on one backend.
type env struct {
	b *backend
	c redis.UniversalClient // a plain client for inspection
	q *streamq.Queue
}

func newEnv(t *testing.T, newBackend func(testing.TB) *backend, cfg streamq.Config) *env {
	t.Helper()
	b := newBackend(t)
	cfg.Prefix = b.prefix
	c := b.client(t, clientOpts{})
	return &env{b: b, c: c, q: streamq.New(c, cfg)}
}

// events returns every event in the events stream, oldest first.
func (e *env) events(t *testing.T) []string {
	t.Helper()
	msgs, err := e.c.XRange(context.Background(), e.q.EventsKey(), "-", "+").Result()
	require.NoError(t, err)
	out := []string{}
	for _, m := range msgs {
		out = append(out, m.Values["e"].(string))
	}
	return out
}

// pending returns the number of entries pending in the group.
func (e *env) pending(t *testing.T) int64 {
	t.Helper()
	p, err := e.c.XPending(context.Background(), e.q.TasksKey(), e.q.Config().Group).Result()
	require.NoError(t, err)
	return p.Count
}

func bs(s ...string) [][]byte {
	out := make([][]byte, len(s))
	for i, v := range s {
		out[i] = []byte(v)
	}
	return out
}

// read reads exactly one delivery.
func read(t *testing.T, q *streamq.Queue, consumer string) streamq.Delivery {
	t.Helper()
	ds, err := q.Read(context.Background(), consumer, 10, 0)
	require.NoError(t, err)
	require.Len(t, ds, 1)
	return ds[0]
}

// claimEventually claims until an entry comes.
func claimEventually(t *testing.T, q *streamq.Queue, consumer string) streamq.Delivery {
	t.Helper()
	var got []streamq.Delivery
	require.Eventually(t, func() bool {
		ds, err := q.Claim(context.Background(), consumer, 10)
		require.NoError(t, err)
		got = ds
		return len(ds) > 0
	}, 5*time.Second, 10*time.Millisecond)
	require.Len(t, got, 1)
	return got[0]
}

func runSuite(t *testing.T, newBackend func(testing.TB) *backend) {
	ctx := context.Background()

	t.Run("RoundTrip", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{})
		id, err := e.q.Add(ctx, []byte("task-1"), bs("queued")...)
		require.NoError(t, err)
		require.NotEmpty(t, id)
		n, err := e.q.Len(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 1, n)

		d := read(t, e.q, "w1")
		assert.Equal(t, streamq.Delivery{ID: id, Payload: []byte("task-1"), Attempt: 1}, d)
		none, err := e.q.Read(ctx, "w2", 10, 0)
		require.NoError(t, err)
		assert.Empty(t, none, "a delivered entry is not delivered again by Read")
		n, err = e.q.Len(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 1, n, "an entry in progress counts as unanswered")

		require.NoError(t, e.q.Ack(ctx, d.ID, bs("done-1", "done-2")...))
		n, err = e.q.Len(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 0, n)
		assert.EqualValues(t, 0, e.pending(t))
		assert.Equal(t, []string{"queued", "done-1", "done-2"}, e.events(t))
		keys, err := e.c.Keys(ctx, e.b.prefix+"*attempt*").Result()
		require.NoError(t, err)
		assert.Empty(t, keys, "Ack deletes the attempt counter")
	})

	t.Run("ReadBlocks", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{})
		ds, err := e.q.Read(ctx, "w1", 1, 50*time.Millisecond)
		require.NoError(t, err)
		assert.Empty(t, ds)
		got := make(chan []streamq.Delivery, 1)
		go func() {
			ds, err := e.q.Read(ctx, "w1", 1, 5*time.Second)
			assert.NoError(t, err)
			got <- ds
		}()
		// Add until the blocked Read takes one: an Add before the Read
		// blocks is read too, by the XREADGROUP itself.
		var ids []string
		require.Eventually(t, func() bool {
			select {
			case ds := <-got:
				require.Len(t, ds, 1)
				assert.Contains(t, ids, ds[0].ID)
				return true
			default:
			}
			if len(ids) == 0 {
				id, err := e.q.Add(ctx, []byte("x"))
				require.NoError(t, err)
				ids = append(ids, id)
			}
			return false
		}, 5*time.Second, 10*time.Millisecond)
	})

	t.Run("Full", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{Limit: 2})
		id1, err := e.q.Add(ctx, []byte("1"), bs("e1")...)
		require.NoError(t, err)
		_, err = e.q.Add(ctx, []byte("2"), bs("e2")...)
		require.NoError(t, err)
		_, err = e.q.Add(ctx, []byte("3"), bs("e3a", "e3b")...)
		require.ErrorIs(t, err, streamq.ErrFull)
		n, err := e.q.Len(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 2, n)
		assert.Equal(t, []string{"e1", "e2"}, e.events(t), "a refused Add writes no event")

		// In progress still counts; answered does not.
		ds, err := e.q.Read(ctx, "w", 1, 0)
		require.NoError(t, err)
		require.Len(t, ds, 1)
		d := ds[0]
		assert.Equal(t, id1, d.ID)
		_, err = e.q.Add(ctx, []byte("3"))
		require.ErrorIs(t, err, streamq.ErrFull)
		require.NoError(t, e.q.Ack(ctx, d.ID))
		_, err = e.q.Add(ctx, []byte("3"), bs("e3")...)
		require.NoError(t, err)
		assert.Equal(t, []string{"e1", "e2", "e3"}, e.events(t))
	})

	t.Run("EventsInOrderToTwoReaders", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{EventsBlock: 100 * time.Millisecond})
		require.NoError(t, e.q.Publish(ctx, bs("before")...))
		tail, err := e.q.EventsTail(ctx)
		require.NoError(t, err)

		const n = 300
		rctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		got := make([][]string, 2)
		var mu sync.Mutex
		for i := range got {
			// Each reader on a client of its own, as nodes are.
			q := streamq.New(e.b.client(t, clientOpts{}), e.q.Config())
			wg.Add(1)
			go func() {
				defer wg.Done()
				assert.NoError(t, q.EventsAfter(rctx, tail, func(ev []byte) {
					mu.Lock()
					got[i] = append(got[i], string(ev))
					mu.Unlock()
				}))
			}()
		}
		var want []string
		for i := 0; i < n; i += 3 {
			// Every writer of events: Publish, Add, SetPartial.
			a, b, c := strconv.Itoa(i), strconv.Itoa(i+1), strconv.Itoa(i+2)
			require.NoError(t, e.q.Publish(ctx, []byte(a)))
			_, err := e.q.Add(ctx, []byte("t"), []byte(b))
			require.NoError(t, err)
			require.NoError(t, e.q.SetPartial(ctx, "t", streamq.Partial{}, []byte(c)))
			want = append(want, a, b, c)
		}
		require.Eventually(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got[0]) >= n && len(got[1]) >= n
		}, 10*time.Second, 10*time.Millisecond)
		cancel()
		wg.Wait()
		assert.Equal(t, want, got[0])
		assert.Equal(t, want, got[1])
	})

	t.Run("EventsStartsNow", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{EventsBlock: 100 * time.Millisecond})
		require.NoError(t, e.q.Publish(ctx, bs("old-1", "old-2")...))
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		var mu sync.Mutex
		var got []string
		go func() {
			defer close(done)
			assert.NoError(t, e.q.Events(rctx, func(ev []byte) {
				mu.Lock()
				got = append(got, string(ev))
				mu.Unlock()
			}))
		}()
		// Events positions itself asynchronously: publish markers until
		// one arrives, then the events that must all arrive.
		require.Eventually(t, func() bool {
			require.NoError(t, e.q.Publish(ctx, []byte("marker")))
			mu.Lock()
			defer mu.Unlock()
			return len(got) > 0
		}, 5*time.Second, 20*time.Millisecond)
		require.NoError(t, e.q.Publish(ctx, bs("a", "b", "c")...))
		require.Eventually(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got) > 0 && got[len(got)-1] == "c"
		}, 5*time.Second, 10*time.Millisecond)
		cancel()
		<-done
		assert.NotContains(t, got, "old-1")
		assert.NotContains(t, got, "old-2")
		for len(got) > 0 && got[0] == "marker" {
			got = got[1:]
		}
		assert.Equal(t, []string{"a", "b", "c"}, got)
	})

	t.Run("EventsResumeAfterDroppedConnection", func(t *testing.T) {
		var errs atomic.Int64
		e := newEnv(t, newBackend, streamq.Config{EventsBlock: 100 * time.Millisecond, OnError: func(error) { errs.Add(1) }})
		if e.b.clusterAddrs != nil {
			t.Skip("no proxy in front of a real Redis Cluster")
		}
		p := newProxy(t, e.b.addr)
		rq := streamq.New(e.b.client(t, clientOpts{addr: p.addr(), noRetries: true}), e.q.Config())
		tail, err := rq.EventsTail(ctx)
		require.NoError(t, err)
		got := make(chan string, 1000)
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			assert.NoError(t, rq.EventsAfter(rctx, tail, func(ev []byte) { got <- string(ev) }))
		}()
		defer func() { cancel(); <-done }()
		next := func(want string) {
			t.Helper()
			select {
			case ev := <-got:
				require.Equal(t, want, ev)
			case <-time.After(10 * time.Second):
				t.Fatalf("no event %q", want)
			}
		}
		require.NoError(t, e.q.Publish(ctx, bs("1", "2")...))
		next("1")
		next("2")

		p.cut()
		// Published while the reader's connection is down: still in the
		// stream, so not lost.
		require.NoError(t, e.q.Publish(ctx, bs("3", "4")...))
		time.Sleep(300 * time.Millisecond) // let the reader fail, more than once
		p.restore()
		require.NoError(t, e.q.Publish(ctx, bs("5")...))
		for _, w := range []string{"3", "4", "5"} {
			next(w)
		}
		assert.Positive(t, errs.Load(), "the reader's errors reach OnError")
		select {
		case ev := <-got:
			t.Fatalf("unexpected event %q", ev)
		default:
		}
	})

	t.Run("EventsResumeAfterClientKill", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{EventsBlock: 2 * time.Second})
		if !e.b.real || e.b.cluster {
			t.Skip("CLIENT KILL needs a real single Redis (the proxy test covers miniredis)")
		}
		name := "streamq-reader-" + e.b.prefix
		rq := streamq.New(e.b.client(t, clientOpts{name: name, noRetries: true}), e.q.Config())
		tail, err := rq.EventsTail(ctx)
		require.NoError(t, err)
		got := make(chan string, 1000)
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			assert.NoError(t, rq.EventsAfter(rctx, tail, func(ev []byte) { got <- string(ev) }))
		}()
		defer func() { cancel(); <-done }()
		require.NoError(t, e.q.Publish(ctx, []byte("1")))
		assert.Equal(t, "1", <-got)
		// Kill the reader while it blocks, and publish at once.
		require.Positive(t, e.b.killClients(t, name))
		require.NoError(t, e.q.Publish(ctx, bs("2", "3")...))
		var rest []string
		require.Eventually(t, func() bool {
			select {
			case ev := <-got:
				rest = append(rest, ev)
			default:
			}
			return len(rest) == 2
		}, 10*time.Second, 5*time.Millisecond)
		assert.Equal(t, []string{"2", "3"}, rest)
	})

	t.Run("EventsTrimmedGoesOnFromOldest", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{EventsMaxLen: 3, EventsBlock: 100 * time.Millisecond})
		require.NoError(t, e.q.Publish(ctx, []byte("0")))
		tail, err := e.q.EventsTail(ctx)
		require.NoError(t, err)
		// Far more events than the stream keeps, before reading.
		for i := 1; i <= 300; i++ {
			require.NoError(t, e.q.Publish(ctx, []byte(strconv.Itoa(i))))
		}
		rctx, cancel := context.WithCancel(ctx)
		var mu sync.Mutex
		var got []string
		done := make(chan struct{})
		go func() {
			defer close(done)
			assert.NoError(t, e.q.EventsAfter(rctx, tail, func(ev []byte) {
				mu.Lock()
				got = append(got, string(ev))
				mu.Unlock()
			}))
		}()
		require.Eventually(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got) > 0 && got[len(got)-1] == "300"
		}, 5*time.Second, 10*time.Millisecond)
		cancel()
		<-done
		// What is left arrives in order, ending with the newest.
		assert.True(t, slices.IsSortedFunc(got, func(a, b string) int {
			x, _ := strconv.Atoi(a)
			y, _ := strconv.Atoi(b)
			return x - y
		}), "%v", got)
		assert.Less(t, len(got), 300)
	})

	t.Run("ClaimAfterIdle", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{ClaimAfter: 200 * time.Millisecond})
		id, err := e.q.Add(ctx, []byte("x"))
		require.NoError(t, err)
		d := read(t, e.q, "w1")
		ds, err := e.q.Claim(ctx, "w2", 10)
		require.NoError(t, err)
		assert.Empty(t, ds, "an entry read just now is not idle")

		c := claimEventually(t, e.q, "w2")
		assert.Equal(t, streamq.Delivery{ID: id, Payload: []byte("x"), Attempt: 2, Claims: 1}, c)
		lost, err := e.q.Touch(ctx, "w1", d.ID)
		require.NoError(t, err)
		assert.Equal(t, []string{d.ID}, lost, "w1 learns it lost the entry")
		lost, err = e.q.Touch(ctx, "w2", d.ID)
		require.NoError(t, err)
		assert.Empty(t, lost)
		ds, err = e.q.Claim(ctx, "w1", 10)
		require.NoError(t, err)
		assert.Empty(t, ds, "w2's Touch made it busy again")
	})

	t.Run("TouchKeepsEntry", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{ClaimAfter: 200 * time.Millisecond})
		_, err := e.q.Add(ctx, []byte("x"))
		require.NoError(t, err)
		d := read(t, e.q, "w1")
		// Touch every 40ms for about four ClaimAfter; claim all the while.
		for end := time.Now().Add(800 * time.Millisecond); time.Now().Before(end); {
			lost, err := e.q.Touch(ctx, "w1", d.ID)
			require.NoError(t, err)
			require.Empty(t, lost)
			ds, err := e.q.Claim(ctx, "w2", 10)
			require.NoError(t, err)
			require.Empty(t, ds, "a touched entry was claimed")
			time.Sleep(40 * time.Millisecond)
		}
		c := claimEventually(t, e.q, "w2")
		assert.Equal(t, d.ID, c.ID)
		assert.Equal(t, 2, c.Attempt, "Touch is not a delivery")
	})

	t.Run("TouchUnknown", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{})
		lost, err := e.q.Touch(ctx, "w1", "1-1")
		require.NoError(t, err, "NOGROUP: nothing is owned")
		assert.Equal(t, []string{"1-1"}, lost)
		id, err := e.q.Add(ctx, []byte("x"))
		require.NoError(t, err)
		d := read(t, e.q, "w1")
		require.NoError(t, e.q.Ack(ctx, d.ID))
		lost, err = e.q.Touch(ctx, "w1", id, "1-1")
		require.NoError(t, err)
		assert.Equal(t, []string{id, "1-1"}, lost)
	})

	t.Run("DeadAfterMaxClaims", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{ClaimAfter: 100 * time.Millisecond, MaxClaims: 2})
		_, err := e.q.Add(ctx, []byte("poison"))
		require.NoError(t, err)
		read(t, e.q, "w0")
		for i := 1; i <= 3; i++ {
			c := claimEventually(t, e.q, "w"+strconv.Itoa(i))
			assert.Equal(t, i, c.Claims)
			assert.Equal(t, i+1, c.Attempt)
			assert.Equal(t, i > 2, c.Dead, "claim %d", i)
		}
	})

	t.Run("Release", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{ClaimAfter: time.Hour, MaxClaims: 1})
		_, err := e.q.Add(ctx, []byte("x"))
		require.NoError(t, err)
		d := read(t, e.q, "w1")

		require.NoError(t, e.q.Release(ctx, "w2", d.ID), "not w2's: nothing happens")
		ds, err := e.q.Claim(ctx, "w3", 10)
		require.NoError(t, err)
		assert.Empty(t, ds)

		for i := 2; i <= 5; i++ {
			prev := "w" + strconv.Itoa(i-1)
			require.NoError(t, e.q.Release(ctx, prev, d.ID))
			ds, err = e.q.Claim(ctx, "w"+strconv.Itoa(i), 10)
			require.NoError(t, err)
			require.Len(t, ds, 1, "released: claimable at once")
			assert.Equal(t, d.ID, ds[0].ID)
			assert.Equal(t, 0, ds[0].Claims, "a release does not count")
			assert.False(t, ds[0].Dead)
			assert.Equal(t, i, ds[0].Attempt)
			lost, err := e.q.Touch(ctx, prev, d.ID)
			require.NoError(t, err)
			assert.Equal(t, []string{d.ID}, lost)
		}
	})

	t.Run("ReleaseAfterClaimKeepsCount", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{ClaimAfter: 100 * time.Millisecond, MaxClaims: 1})
		_, err := e.q.Add(ctx, []byte("x"))
		require.NoError(t, err)
		read(t, e.q, "w1")
		c := claimEventually(t, e.q, "w2")
		assert.Equal(t, 1, c.Claims)
		require.NoError(t, e.q.Release(ctx, "w2", c.ID))
		ds, err := e.q.Claim(ctx, "w3", 10)
		require.NoError(t, err)
		require.Len(t, ds, 1)
		assert.Equal(t, 1, ds[0].Claims)
		assert.False(t, ds[0].Dead)
		c = claimEventually(t, e.q, "w4")
		assert.Equal(t, 2, c.Claims)
		assert.True(t, c.Dead)
	})

	t.Run("DeadLetter", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{})
		_, err := e.q.Add(ctx, []byte("poison"))
		require.NoError(t, err)
		d := read(t, e.q, "w1")
		d.Claims = 4
		require.NoError(t, e.q.DeadLetter(ctx, d, "too many claims", bs("failed")...))
		n, err := e.q.Len(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 0, n)
		assert.EqualValues(t, 0, e.pending(t))
		assert.Equal(t, []string{"failed"}, e.events(t))
		dead, err := e.c.XRange(ctx, e.q.DeadKey(), "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, dead, 1)
		assert.Equal(t, map[string]any{"p": "poison", "r": "too many claims", "c": "4", "a": "1", "id": d.ID}, dead[0].Values)
	})

	t.Run("Partial", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{KeyTTL: time.Minute})
		_, ok, err := e.q.Partial(ctx, "t1")
		require.NoError(t, err)
		assert.False(t, ok)
		require.NoError(t, e.q.SetPartial(ctx, "t1", streamq.Partial{Attempt: 1, Seq: 1, Text: "Hel"}, bs("c1")...))
		require.NoError(t, e.q.SetPartial(ctx, "t1", streamq.Partial{Attempt: 1, Seq: 2, Text: "Hello"}, bs("c2")...))
		p, ok, err := e.q.Partial(ctx, "t1")
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, streamq.Partial{Attempt: 1, Seq: 2, Text: "Hello"}, p)
		assert.Equal(t, []string{"c1", "c2"}, e.events(t))
		ttl, err := e.c.PTTL(ctx, e.b.prefix+"{aq}:partial:t1").Result()
		require.NoError(t, err)
		assert.Positive(t, ttl)
		assert.LessOrEqual(t, ttl, time.Minute)
		require.NoError(t, e.q.ClearPartial(ctx, "t1"))
		_, ok, err = e.q.Partial(ctx, "t1")
		require.NoError(t, err)
		assert.False(t, ok)
	})

	t.Run("AckDoneDropsThePartial", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{KeyTTL: time.Minute})
		_, err := e.q.Add(ctx, []byte("task-1"))
		require.NoError(t, err)
		d := read(t, e.q, "w1")
		require.NoError(t, e.q.SetPartial(ctx, "t1", streamq.Partial{Attempt: 1, Seq: 0, Text: "Hel"}))
		require.NoError(t, e.q.SetPartial(ctx, "t2", streamq.Partial{Attempt: 1, Seq: 0, Text: "other"}))
		require.NoError(t, e.q.AckDone(ctx, d.ID, "t1", bs("end")...))
		_, ok, err := e.q.Partial(ctx, "t1")
		require.NoError(t, err)
		assert.False(t, ok, "the finished task's partial is gone")
		_, ok, err = e.q.Partial(ctx, "t2")
		require.NoError(t, err)
		assert.True(t, ok, "another task's stays")
		assert.EqualValues(t, 0, e.pending(t))
		assert.Equal(t, []string{"end"}, e.events(t))
	})

	t.Run("SetNewerPartial", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{KeyTTL: time.Minute})
		set := func(a, s int, text string, want bool) {
			t.Helper()
			ok, err := e.q.SetNewerPartial(ctx, "t1", streamq.Partial{Attempt: a, Seq: s, Text: text}, []byte(text))
			require.NoError(t, err)
			assert.Equal(t, want, ok, "%d/%d", a, s)
		}
		set(1, 1, "a", true)
		set(1, 2, "ab", true)
		set(1, 2, "ab-again", false)
		set(2, 1, "x", true) // a new attempt starts over
		set(1, 3, "abc", false)
		set(2, 2, "xy", true)
		p, ok, err := e.q.Partial(ctx, "t1")
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, streamq.Partial{Attempt: 2, Seq: 2, Text: "xy"}, p)
		assert.Equal(t, []string{"a", "ab", "x", "xy"}, e.events(t), "stale writes push nothing")
		ttl, err := e.c.PTTL(ctx, e.b.prefix+"{aq}:partial:t1").Result()
		require.NoError(t, err)
		assert.Positive(t, ttl)
	})

	t.Run("LimitUnderConcurrency", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{Limit: 50})
		var wg sync.WaitGroup
		var mu sync.Mutex
		added, full := 0, 0
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					_, err := e.q.Add(ctx, []byte("x"), []byte("ev"))
					mu.Lock()
					if errors.Is(err, streamq.ErrFull) {
						full++
					} else if assert.NoError(t, err) {
						added++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		assert.Equal(t, 50, added)
		assert.Equal(t, 110, full)
		n, err := e.q.Len(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 50, n)
		assert.Len(t, e.events(t), 50)
	})

	t.Run("EventsAfterDataLoss", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{EventsBlock: 100 * time.Millisecond})
		require.NoError(t, e.q.Publish(ctx, []byte("old")))
		tail, err := e.q.EventsTail(ctx)
		require.NoError(t, err)
		got := make(chan string, 100)
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			assert.NoError(t, e.q.EventsAfter(rctx, tail, func(ev []byte) { got <- string(ev) }))
		}()
		defer func() { cancel(); <-done }()
		require.NoError(t, e.q.Publish(ctx, []byte("1")))
		assert.Equal(t, "1", <-got)
		e.b.loseData(t)
		// Stream ids are the server's clock in ms: a restarted server
		// generates ids above those it gave before only once its clock has
		// moved on, which a real restart takes far longer than 2ms to do.
		time.Sleep(2 * time.Millisecond)
		require.NoError(t, e.q.Publish(ctx, []byte("2")))
		select {
		case ev := <-got:
			assert.Equal(t, "2", ev)
		case <-time.After(5 * time.Second):
			t.Fatal("no event after the data loss")
		}
	})

	t.Run("Cancels", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{})
		ch, stop := e.q.Cancels(ctx)
		ch2, stop2 := e.q.Cancels(ctx)
		require.NoError(t, e.q.Cancel(ctx, "t1"))
		require.NoError(t, e.q.Cancel(ctx, "t2"))
		for _, c := range []<-chan string{ch, ch2} {
			assert.Equal(t, "t1", <-c)
			assert.Equal(t, "t2", <-c)
		}
		stop()
		stop() // idempotent
		select {
		case _, open := <-ch:
			assert.False(t, open, "closed after stop")
		default:
			t.Fatal("the channel is still open when stop returned")
		}
		// The other is still subscribed.
		require.NoError(t, e.q.Cancel(ctx, "t3"))
		assert.Equal(t, "t3", <-ch2)
		// stop does not wait for an unread channel.
		require.NoError(t, e.q.Cancel(ctx, "t4"))
		time.Sleep(20 * time.Millisecond)
		stop2()
	})

	t.Run("CancelsEndWithContext", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{})
		cctx, cancel := context.WithCancel(ctx)
		ch, stop := e.q.Cancels(cctx)
		defer stop()
		require.NoError(t, e.q.Cancel(ctx, "t1"))
		assert.Equal(t, "t1", <-ch)
		cancel()
		select {
		case _, open := <-ch:
			assert.False(t, open)
		case <-time.After(5 * time.Second):
			t.Fatal("channel not closed after ctx ended")
		}
	})

	t.Run("GroupRecreatedAfterDataLoss", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{ClaimAfter: 100 * time.Millisecond})
		_, err := e.q.Add(ctx, []byte("before"))
		require.NoError(t, err)
		d := read(t, e.q, "w1")
		e.b.loseData(t)

		lost, err := e.q.Touch(ctx, "w1", d.ID)
		require.NoError(t, err)
		assert.Equal(t, []string{d.ID}, lost)
		require.NoError(t, e.q.Ack(ctx, d.ID), "acking a lost entry is harmless")
		ds, err := e.q.Claim(ctx, "w2", 10)
		require.NoError(t, err)
		assert.Empty(t, ds)

		e.b.loseData(t)
		// A node adds to a stream without the group: the group, created
		// from id 0, delivers it.
		id, err := e.q.Add(ctx, []byte("after"))
		require.NoError(t, err)
		d = read(t, e.q, "w1")
		assert.Equal(t, id, d.ID)
		assert.Equal(t, 1, d.Attempt)
		require.NoError(t, e.q.Ack(ctx, d.ID))
	})

	t.Run("GroupDestroyedRedelivers", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{})
		id, err := e.q.Add(ctx, []byte("x"))
		require.NoError(t, err)
		d := read(t, e.q, "w1")
		require.Equal(t, 1, d.Attempt)
		require.NoError(t, e.c.XGroupDestroy(ctx, e.q.TasksKey(), e.q.Config().Group).Err())
		// Recreated from id 0: every entry left is delivered again.
		d = read(t, e.q, "w2")
		assert.Equal(t, id, d.ID)
		assert.Equal(t, 2, d.Attempt)
	})

	t.Run("ClaimSkipsDeletedEntries", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{ClaimAfter: 100 * time.Millisecond})
		_, err := e.q.Add(ctx, []byte("gone"))
		require.NoError(t, err)
		_, err = e.q.Add(ctx, []byte("kept"))
		require.NoError(t, err)
		ds, err := e.q.Read(ctx, "w1", 10, 0)
		require.NoError(t, err)
		require.Len(t, ds, 2)
		require.NoError(t, e.c.XDel(ctx, e.q.TasksKey(), ds[0].ID).Err())
		c := claimEventually(t, e.q, "w2")
		assert.Equal(t, ds[1].ID, c.ID)
		if e.b.real {
			// miniredis keeps deleted entries pending (it does not
			// implement the deleted-ids reply of Redis 7's XAUTOCLAIM).
			assert.EqualValues(t, 1, e.pending(t), "the deleted entry is no longer pending")
		}
	})

	t.Run("ConcurrentWorkers", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{})
		const n = 200
		for i := range n {
			_, err := e.q.Add(ctx, []byte(strconv.Itoa(i)))
			require.NoError(t, err)
		}
		var mu sync.Mutex
		seen := map[string]int{}
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					ds, err := e.q.Read(ctx, fmt.Sprint("w", w), 7, 0)
					if !assert.NoError(t, err) || len(ds) == 0 {
						return
					}
					for _, d := range ds {
						mu.Lock()
						seen[string(d.Payload)]++
						mu.Unlock()
						assert.NoError(t, e.q.Ack(ctx, d.ID))
					}
				}
			}()
		}
		wg.Wait()
		assert.Len(t, seen, n)
		for k, v := range seen {
			assert.Equal(t, 1, v, k)
		}
		l, err := e.q.Len(ctx)
		require.NoError(t, err)
		assert.Zero(t, l)
	})

	t.Run("CrashedWorkerLosesNothing", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{ClaimAfter: 100 * time.Millisecond})
		const n = 30
		for i := range n {
			_, err := e.q.Add(ctx, []byte(strconv.Itoa(i)))
			require.NoError(t, err)
		}
		// w1 takes a third and dies silently.
		ds, err := e.q.Read(ctx, "w1", n/3, 0)
		require.NoError(t, err)
		require.Len(t, ds, n/3)
		answered := map[string]int{}
		require.Eventually(t, func() bool {
			ds, err := e.q.Read(ctx, "w2", 5, 0)
			require.NoError(t, err)
			cs, err := e.q.Claim(ctx, "w2", 5)
			require.NoError(t, err)
			for _, d := range append(ds, cs...) {
				require.False(t, d.Dead)
				answered[string(d.Payload)]++
				require.NoError(t, e.q.Ack(ctx, d.ID))
			}
			l, err := e.q.Len(ctx)
			require.NoError(t, err)
			return l == 0
		}, 10*time.Second, 20*time.Millisecond)
		assert.Len(t, answered, n)
		for k, v := range answered {
			assert.Equal(t, 1, v, k)
		}
		assert.EqualValues(t, 0, e.pending(t))
	})

	t.Run("ContextErrors", func(t *testing.T) {
		e := newEnv(t, newBackend, streamq.Config{})
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := e.q.Add(cctx, []byte("x"))
		require.Error(t, err)
		assert.False(t, errors.Is(err, streamq.ErrFull))
		assert.NoError(t, e.q.Events(cctx, func([]byte) { t.Error("event") }))
	})
}

// TestDefaults checks the defaults of Config.
func TestDefaults(t *testing.T) {
	c := redis.NewClient(&redis.Options{})
	defer func() { _ = c.Close() }()
	q := streamq.New(c, streamq.Config{Prefix: "p:"})
	assert.Equal(t, streamq.Config{
		Prefix:       "p:",
		Group:        "workers",
		Limit:        10000,
		EventsMaxLen: 100000,
		DeadMaxLen:   10000,
		ClaimAfter:   30 * time.Second,
		MaxClaims:    3,
		KeyTTL:       24 * time.Hour,
		EventsBlock:  time.Second,
	}, q.Config())
	assert.Equal(t, "p:{aq}:tasks", q.TasksKey())
	assert.Equal(t, "p:{aq}:events", q.EventsKey())
	assert.Equal(t, "p:{aq}:dead", q.DeadKey())
	assert.Equal(t, "p:{aq}:cancel", q.CancelChannel())
}
