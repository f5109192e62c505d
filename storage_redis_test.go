package socketio_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	socketio "github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/redistest"
	"github.com/qaplatform/socketio/storagetest"
)

// redisTestRun keeps the key prefixes of concurrent test runs (and
// packages) sharing one real Redis apart.
var (
	redisTestRun  = strconv.FormatUint(rand.Uint64(), 36)
	redisTestNext atomic.Uint64
)

// redisTestPrefix returns a key prefix no other test uses.
func redisTestPrefix() string {
	return "qatest:" + redisTestRun + ":" + strconv.FormatUint(redisTestNext.Add(1), 10) + ":"
}

// newMiniredis starts a miniredis closed when the test ends, whose clock
// follows the wall clock so that keys expire (miniredis only expires keys
// when told time has passed).
func newMiniredis(tb testing.TB) *miniredis.Miniredis {
	tb.Helper()
	mr := miniredis.RunT(tb)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		ticker := time.NewTicker(5 * time.Millisecond)
		defer ticker.Stop()
		last := time.Now()
		for {
			select {
			case <-stop:
				return
			case now := <-ticker.C:
				mr.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	tb.Cleanup(func() { close(stop); <-done })
	return mr
}

// newRedisClient returns a client of opts closed when the test ends.
func newRedisClient(tb testing.TB, opts *redis.Options) *redis.Client {
	tb.Helper()
	c := redis.NewClient(opts)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// realRedisURL returns REDIS_URL, or skips the test when it is unset.
func realRedisURL(tb testing.TB) string {
	tb.Helper()
	url := os.Getenv("REDIS_URL")
	if url == "" {
		tb.Skip("REDIS_URL is not set: skipping the real Redis pass (CI sets it, e.g. REDIS_URL=redis://127.0.0.1:6379/0)")
	}
	return url
}

// newRealRedisClient returns a client of the Redis at REDIS_URL, closed
// when the test ends, or skips the test when REDIS_URL is unset.
func newRealRedisClient(tb testing.TB) *redis.Client {
	tb.Helper()
	opts, err := redis.ParseURL(realRedisURL(tb))
	require.NoError(tb, err, "REDIS_URL")
	c := newRedisClient(tb, opts)
	require.NoError(tb, c.Ping(tb.Context()).Err(), "REDIS_URL is set but Redis does not answer")
	return c
}

// newTestRedisStorage returns a RedisStorage on client with a unique prefix,
// closed when the test ends, after which its keys are deleted.
func newTestRedisStorage(tb testing.TB, client redis.UniversalClient, opts socketio.RedisStorageOptions) *socketio.RedisStorage {
	tb.Helper()
	if opts.Prefix == "" {
		opts.Prefix = redisTestPrefix()
	}
	s := socketio.NewRedisStorage(client, opts)
	tb.Cleanup(func() {
		require.NoError(tb, s.Close())
		deleteRedisPrefix(tb, client, opts.Prefix)
	})
	return s
}

// deleteRedisPrefix deletes every key that starts with prefix (which holds
// no glob characters), on every node of client.
func deleteRedisPrefix(tb testing.TB, client redis.UniversalClient, prefix string) {
	tb.Helper()
	redistest.DeletePrefix(tb, client, prefix)
}

// countingHook counts the round trips of a client: one per command and one
// per pipeline.
type countingHook struct {
	n atomic.Int64
}

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

func TestRedisStorageConformanceMiniredis(t *testing.T) {
	for _, protocol := range []int{3, 2} {
		t.Run("RESP"+strconv.Itoa(protocol), func(t *testing.T) {
			storagetest.Run(t, func(t *testing.T, opts socketio.StorageOptions) socketio.Storage {
				mr := newMiniredis(t)
				client := newRedisClient(t, &redis.Options{Addr: mr.Addr(), Protocol: protocol})
				return newTestRedisStorage(t, client, socketio.RedisStorageOptions{StorageOptions: opts})
			})
		})
	}
}

func TestRedisStorageConformanceReal(t *testing.T) {
	client := newRealRedisClient(t)
	storagetest.Run(t, func(t *testing.T, opts socketio.StorageOptions) socketio.Storage {
		return newTestRedisStorage(t, client, socketio.RedisStorageOptions{StorageOptions: opts})
	})
}

var redisSlot = redistest.Slot

func TestRedisSlot(t *testing.T) {
	// Examples from the Redis Cluster specification and redis-cli.
	assert.Equal(t, 12739, redisSlot("123456789"))
	assert.Equal(t, redisSlot("user1000"), redisSlot("{user1000}.following"))
	assert.Equal(t, redisSlot("foo{}{bar}"), redisSlot("foo{}{bar}"))
	assert.Equal(t, redisSlot("bar"), redisSlot("foo{bar}{zap}"))
}

// exerciseOwner runs every task operation for owner, in two sessions.
func exerciseOwner(t *testing.T, s socketio.Storage, owner string) {
	t.Helper()
	ctx := t.Context()
	for i, sess := range []string{"sess-a", "sess-{b}"} {
		for j := range 3 {
			task := socketio.Task{
				ID: owner + "/" + strconv.Itoa(i) + "/" + strconv.Itoa(j), SessionID: sess, Owner: owner,
				Question: "q", AskedAt: time.Now(), UpdatedAt: time.Now(),
			}
			require.NoError(t, s.CreateTask(ctx, task, 5))
			_, applied, err := s.UpdateTask(ctx, owner, task.ID, socketio.TaskUpdate{Status: socketio.TaskProcessing})
			require.NoError(t, err)
			require.True(t, applied)
			if j > 0 {
				_, applied, err = s.UpdateTask(ctx, owner, task.ID, socketio.TaskUpdate{Status: socketio.TaskCompleted, Answer: "a"})
				require.NoError(t, err)
				require.True(t, applied)
			}
		}
	}
	items, _, err := s.History(ctx, owner, "", 3)
	require.NoError(t, err)
	require.Len(t, items, 3)
	_, _, err = s.History(ctx, owner, items[2].ID, 3)
	require.NoError(t, err)
	n, err := s.ClearHistory(ctx, owner)
	require.NoError(t, err)
	require.Positive(t, n)
}

func TestRedisStorageOwnerKeysShareSlot(t *testing.T) {
	owners := []string{
		"s:plain",
		"u:{tag}",
		"u:}{",
		"u:a{b}c{d}",
		"u:" + strings.Repeat("{", 40),
		"u:пользователь ✓",
		"u:",
	}
	for _, owner := range owners {
		t.Run(owner, func(t *testing.T) {
			mr := newMiniredis(t)
			client := newRedisClient(t, &redis.Options{Addr: mr.Addr()})
			prefix := redisTestPrefix()
			s := newTestRedisStorage(t, client, socketio.RedisStorageOptions{Prefix: prefix})
			ctx := t.Context()
			require.NoError(t, s.SaveSession(ctx, socketio.Session{ID: "sess-a", CreatedAt: time.Now()}))
			require.NoError(t, s.RecordQuestion(ctx, "q"))
			exerciseOwner(t, s, owner)

			var ownerKeys []string
			for _, key := range mr.Keys() {
				rest := strings.TrimPrefix(key, prefix)
				switch {
				case strings.HasPrefix(rest, "sess:"), rest == "pop", strings.HasPrefix(rest, "id:"):
					continue
				}
				ownerKeys = append(ownerKeys, key)
				// Each owner key starts with its hash tag, which holds no
				// brace of the owner's.
				require.True(t, strings.HasPrefix(rest, "{"), "key %q has no leading hash tag", key)
				end := strings.IndexByte(rest, '}')
				require.Positive(t, end, "key %q", key)
				assert.NotContains(t, rest[1:end], "{", "key %q", key)
				assert.Equal(t, redisSlot(ownerKeys[0]), redisSlot(key), "key %q is in another slot than %q", key, ownerKeys[0])
			}
			// The history, the open set of the session with unfinished
			// tasks and the two unfinished tasks remain.
			assert.GreaterOrEqual(t, len(ownerKeys), 4, "owner keys: %q", ownerKeys)
		})
	}
}

// TestRedisStorageCluster runs every operation through a ClusterClient
// (miniredis answers CLUSTER SLOTS as a one-node cluster) and checks that
// no command names keys of two slots.
func TestRedisStorageCluster(t *testing.T) {
	mr := newMiniredis(t)
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{mr.Addr()}})
	t.Cleanup(func() { _ = client.Close() })
	hook := &redistest.SlotCheckHook{T: t}
	client.AddHook(hook)
	s := newTestRedisStorage(t, client, socketio.RedisStorageOptions{StorageOptions: socketio.StorageOptions{MaxHistory: 3}})
	ctx := t.Context()

	sess := socketio.Session{ID: "sess-{x}", CreatedAt: time.Now(), LastSeen: time.Now()}
	require.NoError(t, s.SaveSession(ctx, sess))
	require.NoError(t, s.TouchSession(ctx, sess.ID, time.Now()))
	_, err := s.Session(ctx, sess.ID)
	require.NoError(t, err)
	require.NoError(t, s.RecordQuestion(ctx, "q"))
	_, err = s.PopularQuestions(ctx, 5)
	require.NoError(t, err)
	exerciseOwner(t, s, "u:{cluster}")

	// Ids are unique across owners: the claim lives in a slot of its own.
	task := socketio.Task{ID: "dup", SessionID: "s", Owner: "u:1", Question: "first", AskedAt: time.Now()}
	require.NoError(t, s.CreateTask(ctx, task, 0))
	second := task
	second.Question = "second"
	require.Error(t, s.CreateTask(ctx, second, 0))
	second.Owner = "u:2"
	require.Error(t, s.CreateTask(ctx, second, 0))
	require.NoError(t, s.DeleteSession(ctx, sess.ID))

	cmds := hook.Commands()
	assert.Positive(t, cmds["evalsha"]+cmds["eval"], "commands seen: %v", cmds)
}

// TestRedisStorageCreateTaskWritesAllOrNothing checks that a CreateTask that
// fails leaves no trace.
func TestRedisStorageCreateTaskWritesAllOrNothing(t *testing.T) {
	mr := newMiniredis(t)
	client := newRedisClient(t, &redis.Options{Addr: mr.Addr()})
	s := newTestRedisStorage(t, client, socketio.RedisStorageOptions{})
	owner := socketio.OwnerOf("sess-a", "")
	newTask := func(id, sess string) socketio.Task {
		return socketio.Task{ID: id, SessionID: sess, Owner: owner, Question: "q", AskedAt: time.Now()}
	}

	t.Run("ctx cancelled before the call", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		err := s.CreateTask(ctx, newTask("t1", "sess-a"), 1)
		require.ErrorIs(t, err, context.Canceled)
		assert.Empty(t, mr.Keys(), "a cancelled CreateTask wrote keys")
	})

	t.Run("script fails after its checks", func(t *testing.T) {
		ctx := t.Context()
		require.NoError(t, s.CreateTask(ctx, newTask("t1", "sess-a"), 1))
		before := mr.Keys()
		// Break the open set of another session of the owner: the script
		// fails (WRONGTYPE) on its first touch of it.
		var hist string
		for _, k := range before {
			if strings.HasSuffix(k, "}:h") {
				hist = k
			}
		}
		require.NotEmpty(t, hist, "no history key among %q", before)
		broken := strings.TrimSuffix(hist, "h") + "o:sess-b"
		require.NoError(t, mr.Set(broken, "not a set"))
		for _, maxOpen := range []int{0, 2} {
			err := s.CreateTask(ctx, newTask("t2", "sess-b"), maxOpen)
			require.ErrorIs(t, err, socketio.ErrUnavailable)
			assert.ElementsMatch(t, append(before, broken), mr.Keys(), "a failed CreateTask wrote keys")
			ids := historyIDs(t, s, owner)
			assert.Equal(t, []string{"t1"}, ids)
		}
	})

	t.Run("refused", func(t *testing.T) {
		ctx := t.Context()
		before := mr.Keys()
		require.ErrorIs(t, s.CreateTask(ctx, newTask("t3", "sess-a"), 1), socketio.ErrTooManyTasks)
		assert.ElementsMatch(t, before, mr.Keys(), "a refused CreateTask wrote keys")
	})

	t.Run("retried after a lost reply", func(t *testing.T) {
		ctx := t.Context()
		task := newTask("t4", "sess-c")
		require.NoError(t, s.CreateTask(ctx, task, 1))
		require.NoError(t, s.CreateTask(ctx, task, 1), "the same call again must succeed")
		other := task
		other.Question = "another question"
		require.Error(t, s.CreateTask(ctx, other, 1))
		assert.Equal(t, []string{"t4", "t1"}, historyIDs(t, s, owner))
	})
}

func historyIDs(t *testing.T, s socketio.Storage, owner string) []string {
	t.Helper()
	items, _, err := s.History(t.Context(), owner, "", 100)
	require.NoError(t, err)
	ids := make([]string, 0, len(items))
	for _, it := range items {
		ids = append(ids, it.ID)
	}
	return ids
}

func TestRedisStorageRoundTripsAnyBytes(t *testing.T) {
	mr := newMiniredis(t)
	client := newRedisClient(t, &redis.Options{Addr: mr.Addr()})
	s := newTestRedisStorage(t, client, socketio.RedisStorageOptions{})
	ctx := t.Context()
	odd := []string{"", ":", "12:", "0:", "a\x00b", "{}", "}{", "ünïcødé ✓", "\xff\xfe", strings.Repeat("long ", 2000)}

	for i, v := range odd {
		t.Run("task "+strconv.Itoa(i), func(t *testing.T) {
			owner := "u:" + v
			task := socketio.Task{
				ID: "t" + v, SessionID: "s" + v, Owner: owner, Question: v, Context: v, Room: v, Stream: i%2 == 0,
				AskedAt: time.UnixMilli(int64(i)), UpdatedAt: time.Now(),
			}
			require.NoError(t, s.CreateTask(ctx, task, 1))
			got, err := s.Task(ctx, owner, task.ID)
			require.NoError(t, err)
			task.Status = socketio.TaskPending
			assert.Equal(t, task.Question, got.Question)
			assert.Equal(t, task.Context, got.Context)
			assert.Equal(t, task.Room, got.Room)
			assert.Equal(t, task.SessionID, got.SessionID)
			assert.Equal(t, task.Stream, got.Stream)
			assert.True(t, task.AskedAt.Equal(got.AskedAt), "AskedAt %v, want %v", got.AskedAt, task.AskedAt)

			u := socketio.TaskUpdate{Status: socketio.TaskFailed, Answer: v, Sources: []string{v, "", v},
				Error: &socketio.TaskError{Code: socketio.Code(v), Message: v}}
			got, applied, err := s.UpdateTask(ctx, owner, task.ID, u)
			require.NoError(t, err)
			require.True(t, applied)
			for _, g := range []socketio.Task{got, mustGetTask(t, s, owner, task.ID)} {
				assert.Equal(t, v, g.Answer)
				assert.Equal(t, u.Sources, g.Sources)
				assert.Equal(t, *u.Error, *g.Error)
				assert.Equal(t, task.Question, g.Question, "the update kept the rest of the task")
			}
		})
		t.Run("session "+strconv.Itoa(i), func(t *testing.T) {
			sess := socketio.Session{ID: "s" + v, UserID: v, Address: v, CreatedAt: time.Now(), LastSeen: time.Now(),
				Data: map[string]string{v: v, "k": v}}
			require.NoError(t, s.SaveSession(ctx, sess))
			at := time.Now().Add(time.Hour)
			require.NoError(t, s.TouchSession(ctx, sess.ID, at))
			got, err := s.Session(ctx, sess.ID)
			require.NoError(t, err)
			assert.Equal(t, sess.UserID, got.UserID)
			assert.Equal(t, sess.Address, got.Address)
			assert.Equal(t, sess.Data, got.Data)
			assert.Equal(t, at.UnixMilli(), got.LastSeen.UnixMilli())
		})
	}

	t.Run("empty error", func(t *testing.T) {
		task := socketio.Task{ID: "empty-error", Owner: "u:e", Question: "q"}
		require.NoError(t, s.CreateTask(ctx, task, 0))
		got, _, err := s.UpdateTask(ctx, task.Owner, task.ID, socketio.TaskUpdate{Status: socketio.TaskCancelled, Error: &socketio.TaskError{}})
		require.NoError(t, err)
		require.NotNil(t, got.Error, "a non-nil empty error must stay non-nil")
		assert.True(t, got.AskedAt.IsZero(), "a zero AskedAt must stay zero")
	})

	t.Run("corrupt data is an error, not a panic", func(t *testing.T) {
		task := socketio.Task{ID: "corrupt", SessionID: "s", Owner: "u:c", Question: "q"}
		require.NoError(t, s.CreateTask(ctx, task, 0))
		require.NoError(t, s.SaveSession(ctx, socketio.Session{ID: "corrupt"}))
		var keys []string
		for _, k := range mr.Keys() {
			if strings.HasSuffix(k, ":t:corrupt") || strings.HasSuffix(k, "sess:{corrupt}") {
				keys = append(keys, k)
			}
		}
		require.Len(t, keys, 2)
		for _, garbage := range []string{"garbage", "2:9:x", "1:1:x", "99999999999999999999:x"} {
			for _, k := range keys {
				require.NoError(t, mr.Set(k, garbage))
			}
			_, err := s.Task(ctx, task.Owner, task.ID)
			assert.Error(t, err)
			_, _, err = s.UpdateTask(ctx, task.Owner, task.ID, socketio.TaskUpdate{Status: socketio.TaskProcessing})
			assert.Error(t, err)
			_, _, err = s.History(ctx, task.Owner, "", 10)
			assert.Error(t, err)
			_, err = s.Session(ctx, "corrupt")
			assert.Error(t, err)
			assert.Error(t, s.TouchSession(ctx, "corrupt", time.Now()))
		}
	})
}

func mustGetTask(t *testing.T, s socketio.Storage, owner, id string) socketio.Task {
	t.Helper()
	task, err := s.Task(t.Context(), owner, id)
	require.NoError(t, err)
	return task
}

// redisOps is every Storage operation, on data that exists.
func redisOps(s socketio.Storage, owner, sessID string, taskIDs func() string) []struct {
	name string
	call func(ctx context.Context) error
} {
	return []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"SaveSession", func(ctx context.Context) error {
			return s.SaveSession(ctx, socketio.Session{ID: sessID, CreatedAt: time.Now(), LastSeen: time.Now(), Data: map[string]string{"k": "v"}})
		}},
		{"Session", func(ctx context.Context) error { _, err := s.Session(ctx, sessID); return err }},
		{"TouchSession", func(ctx context.Context) error { return s.TouchSession(ctx, sessID, time.Now()) }},
		{"CreateTask", func(ctx context.Context) error {
			return s.CreateTask(ctx, socketio.Task{ID: taskIDs(), SessionID: sessID, Owner: owner, Question: "q", AskedAt: time.Now()}, 100)
		}},
		{"Task", func(ctx context.Context) error { _, err := s.Task(ctx, owner, "fixed"); return err }},
		{"UpdateTask", func(ctx context.Context) error {
			_, _, err := s.UpdateTask(ctx, owner, "fixed", socketio.TaskUpdate{Status: socketio.TaskProcessing})
			return err
		}},
		{"History", func(ctx context.Context) error { _, _, err := s.History(ctx, owner, "", 20); return err }},
		{"HistoryBefore", func(ctx context.Context) error { _, _, err := s.History(ctx, owner, "fixed", 20); return err }},
		{"ClearHistory", func(ctx context.Context) error { _, err := s.ClearHistory(ctx, owner); return err }},
		{"RecordQuestion", func(ctx context.Context) error { return s.RecordQuestion(ctx, "q") }},
		{"PopularQuestions", func(ctx context.Context) error { _, err := s.PopularQuestions(ctx, 10); return err }},
		{"DeleteSession", func(ctx context.Context) error { return s.DeleteSession(ctx, sessID) }},
	}
}

// TestRedisStorageOneRoundTripPerOperation pins the round trips of each
// operation: one, except CreateTask, which claims the task id (in a slot
// of its own) before storing the task (in its owner's).
func TestRedisStorageOneRoundTripPerOperation(t *testing.T) {
	backends := []struct {
		name   string
		client func(t *testing.T) *redis.Client
	}{
		{"miniredis", func(t *testing.T) *redis.Client {
			return newRedisClient(t, &redis.Options{Addr: newMiniredis(t).Addr()})
		}},
		{"real", func(t *testing.T) *redis.Client { return newRealRedisClient(t) }},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			client := b.client(t)
			hook := &countingHook{}
			client.AddHook(hook)
			s := newTestRedisStorage(t, client, socketio.RedisStorageOptions{})
			ctx := t.Context()
			owner := socketio.OwnerOf("sess", "")
			require.NoError(t, s.CreateTask(ctx, socketio.Task{ID: "fixed", SessionID: "sess", Owner: owner, Question: "q", AskedAt: time.Now()}, 0))
			var n int
			taskID := func() string { n++; return "task-" + strconv.Itoa(n) }
			ops := redisOps(s, owner, "sess", taskID)
			// The first run of each script may load it (EVALSHA, then EVAL).
			for _, op := range ops {
				require.NoError(t, op.call(ctx), "warm-up %s", op.name)
			}
			for _, op := range ops {
				t.Run(op.name, func(t *testing.T) {
					want := int64(1)
					if op.name == "CreateTask" {
						want = 2
					}
					before := hook.n.Load()
					require.NoError(t, op.call(ctx))
					assert.Equal(t, want, hook.n.Load()-before, "round trips")
				})
			}
		})
	}
}

func TestRedisStorageUnavailable(t *testing.T) {
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	// Retries are the caller's policy (by default go-redis dials 5 times and
	// sends a command up to 4 times); without them a call fails at once.
	client := newRedisClient(t, &redis.Options{Addr: addr, DialTimeout: 100 * time.Millisecond, MaxRetries: -1, DialerRetries: 1})
	s := newTestRedisStorageNoCleanup(t, client)
	owner := socketio.OwnerOf("sess", "")
	for _, op := range redisOps(s, owner, "sess", func() string { return "t" }) {
		t.Run(op.name, func(t *testing.T) {
			start := time.Now()
			err := op.call(t.Context())
			require.ErrorIs(t, err, socketio.ErrUnavailable)
			assert.Less(t, time.Since(start), 250*time.Millisecond, "failing took too long")
		})
	}
}

// newTestRedisStorageNoCleanup returns a RedisStorage closed when the test
// ends, for a client whose Redis cannot be reached.
func newTestRedisStorageNoCleanup(t *testing.T, client redis.UniversalClient) *socketio.RedisStorage {
	t.Helper()
	s := socketio.NewRedisStorage(client, socketio.RedisStorageOptions{Prefix: redisTestPrefix()})
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// TestRedisStorageContextEndsMidCall points the store at a server that
// accepts connections and never answers.
func TestRedisStorageContextEndsMidCall(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	spawn(&wg, func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})

	client := newRedisClient(t, &redis.Options{Addr: ln.Addr().String(), ContextTimeoutEnabled: true, MaxRetries: -1})
	s := newTestRedisStorageNoCleanup(t, client)
	for _, op := range redisOps(s, "s:sess", "sess", func() string { return "t" }) {
		t.Run(op.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
			defer cancel()
			err := op.call(ctx)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.ErrorIs(t, err, socketio.ErrUnavailable)
		})
	}
}

// sweepWatchHook records the bounds of every ZREMRANGEBYRANK.
type sweepWatchHook struct {
	mu     sync.Mutex
	ranges [][2]int64
}

func (h *sweepWatchHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *sweepWatchHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if strings.EqualFold(cmd.Name(), "zremrangebyrank") {
			args := cmd.Args()
			start, _ := strconv.ParseInt(fmt.Sprint(args[2]), 10, 64)
			stop, _ := strconv.ParseInt(fmt.Sprint(args[3]), 10, 64)
			h.mu.Lock()
			h.ranges = append(h.ranges, [2]int64{start, stop})
			h.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}

func (h *sweepWatchHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func TestRedisStoragePopularSweep(t *testing.T) {
	const maxPopular = 5
	mr := newMiniredis(t)
	client := newRedisClient(t, &redis.Options{Addr: mr.Addr()})
	hook := &sweepWatchHook{}
	client.AddHook(hook)
	prefix := redisTestPrefix()
	s := newTestRedisStorage(t, client, socketio.RedisStorageOptions{
		Prefix:         prefix,
		StorageOptions: socketio.StorageOptions{MaxPopular: maxPopular},
		SweepInterval:  20 * time.Millisecond,
	})
	ctx := t.Context()

	// Many rare questions (more than one sweep command removes) and a few
	// often asked ones.
	pipe := client.Pipeline()
	for i := range 2500 {
		pipe.ZIncrBy(ctx, prefix+"pop", -1, "rare "+strconv.Itoa(i))
	}
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)
	want := []string{"top 0", "top 1", "top 2", "top 3", "top 4"}
	for i, q := range want {
		for range 10 - i {
			require.NoError(t, s.RecordQuestion(ctx, q))
		}
	}

	require.Eventually(t, func() bool {
		n, err := client.ZCard(ctx, prefix+"pop").Result()
		return err == nil && n <= maxPopular
	}, 5*time.Second, 10*time.Millisecond, "the sweeper never trimmed the index")
	got, err := s.PopularQuestions(ctx, 100)
	require.NoError(t, err)
	assert.Equal(t, want, got)

	hook.mu.Lock()
	defer hook.mu.Unlock()
	require.NotEmpty(t, hook.ranges)
	for _, r := range hook.ranges {
		assert.Equal(t, int64(maxPopular), r[0], "a sweep must keep the top MaxPopular")
		assert.LessOrEqual(t, r[1]-r[0]+1, int64(1000), "a sweep command must remove a bounded number")
	}
}

func TestRedisStoragePopularTieBreak(t *testing.T) {
	client := newRedisClient(t, &redis.Options{Addr: newMiniredis(t).Addr()})
	s := newTestRedisStorage(t, client, socketio.RedisStorageOptions{})
	ctx := t.Context()
	for _, q := range []string{"b", "c", "a", "c"} {
		require.NoError(t, s.RecordQuestion(ctx, q))
	}
	got, err := s.PopularQuestions(ctx, 10)
	require.NoError(t, err)
	assert.Equal(t, []string{"c", "a", "b"}, got, "most asked first, then lexicographically")
}

func TestRedisStorageClose(t *testing.T) {
	// Registered first, so it runs after every other cleanup: the client,
	// miniredis and the storage are closed by then.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })

	mr := newMiniredis(t)
	client := newRedisClient(t, &redis.Options{Addr: mr.Addr()})
	s := socketio.NewRedisStorage(client, socketio.RedisStorageOptions{SweepInterval: time.Millisecond})
	ctx := t.Context()
	require.NoError(t, s.RecordQuestion(ctx, "q"))

	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")
	require.ErrorIs(t, s.RecordQuestion(ctx, "q"), socketio.ErrUnavailable, "after Close")
	require.NoError(t, client.Ping(ctx).Err(), "Close must not close the client")
}

func TestRedisStorageConcurrentCloseAndUse(t *testing.T) {
	client := newRedisClient(t, &redis.Options{Addr: newMiniredis(t).Addr()})
	s := socketio.NewRedisStorage(client, socketio.RedisStorageOptions{SweepInterval: time.Millisecond})
	ctx := t.Context()
	var wg sync.WaitGroup
	for range 4 {
		spawn(&wg, func() {
			for range 50 {
				if err := s.RecordQuestion(ctx, "q"); err != nil && !errors.Is(err, socketio.ErrUnavailable) {
					t.Errorf("RecordQuestion: %v", err)
				}
			}
		})
		spawn(&wg, func() { _ = s.Close() })
	}
	wg.Wait()
}

// spawn runs f in a goroutine counted by wg (sync.WaitGroup.Go needs Go
// 1.25; this module supports 1.24).
func spawn(wg *sync.WaitGroup, f func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		f()
	}()
}

// TestRedisStorageTopologies runs the conformance suite through every kind
// of client a deployment may hand the storage: a Ring of two shards, a
// wrapped client of one server, a wrapped ClusterClient (types the storage
// cannot recognise), a real Redis Cluster and a Sentinel failover client
// (when testdata/redis-topologies/run.sh provides them). No command may
// name keys of two slots, whatever the client.
func TestRedisStorageTopologies(t *testing.T) {
	tests := []struct {
		name   string
		client func(t *testing.T) redis.UniversalClient
	}{
		{"ring", func(t *testing.T) redis.UniversalClient {
			return redistest.NewRing(t, newMiniredis(t).Addr(), newMiniredis(t).Addr())
		}},
		{"wrapped client", func(t *testing.T) redis.UniversalClient {
			return redistest.Wrapped{UniversalClient: newRedisClient(t, &redis.Options{Addr: newMiniredis(t).Addr()})}
		}},
		{"wrapped cluster client", func(t *testing.T) redis.UniversalClient {
			c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{newMiniredis(t).Addr()}})
			t.Cleanup(func() { _ = c.Close() })
			return redistest.Wrapped{UniversalClient: c}
		}},
		{"cluster", func(t *testing.T) redis.UniversalClient { return redistest.NewCluster(t) }},
		{"sentinel", func(t *testing.T) redis.UniversalClient { return redistest.NewSentinel(t) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			storagetest.Run(t, func(t *testing.T, opts socketio.StorageOptions) socketio.Storage {
				client := tt.client(t)
				client.AddHook(&redistest.SlotCheckHook{T: t})
				return newTestRedisStorage(t, client, socketio.RedisStorageOptions{StorageOptions: opts})
			})
		})
	}
}

// TestRedisStorageTaskFormatBeforeUsage: a task stored in the format from
// before Task.Usage (15 fields, no usage) still reads, and still takes a
// final update with usage; a task without usage is still written in that
// format, so older readers read it too.
func TestRedisStorageTaskFormatBeforeUsage(t *testing.T) {
	clients := map[string]func(t *testing.T) redis.UniversalClient{
		"miniredis": func(t *testing.T) redis.UniversalClient {
			return newRedisClient(t, &redis.Options{Addr: newMiniredis(t).Addr()})
		},
	}
	if os.Getenv("REDIS_URL") != "" {
		clients["real"] = func(t *testing.T) redis.UniversalClient { return newRealRedisClient(t) }
	}
	field := func(s string) string { return strconv.Itoa(len(s)) + ":" + s }
	for name, newClient := range clients {
		t.Run(name, func(t *testing.T) {
			client := newClient(t)
			prefix := redisTestPrefix()
			s := newTestRedisStorage(t, client, socketio.RedisStorageOptions{Prefix: prefix})
			ctx := t.Context()
			asked := time.UnixMilli(1_700_000_000_000)
			task := socketio.Task{ID: "old-" + prefix, SessionID: "sess", Owner: "owner", Question: "q?", Context: "ctx", Room: "room", Stream: true,
				Status: socketio.TaskPending, AskedAt: asked, UpdatedAt: asked}
			require.NoError(t, s.CreateTask(ctx, task, 0))
			keys, err := client.Keys(ctx, prefix+"*t:"+task.ID).Result()
			require.NoError(t, err)
			require.Len(t, keys, 1)

			raw, err := client.Get(ctx, keys[0]).Result()
			require.NoError(t, err)
			old := field("1") + field("owner") + field("sess") + field("processing") +
				field("1700000001000") + field("") + field("") + field("") + field("") +
				field(task.ID) + field("q?") + field("ctx") + field("room") + field("1") + field("1700000000000")
			assert.Equal(t, strings.Replace(old, field("processing")+field("1700000001000"), field("pending")+field("1700000000000"), 1),
				raw, "a task without usage is written in the old format")
			require.NoError(t, client.Set(ctx, keys[0], old, time.Hour).Err())

			got, err := s.Task(ctx, "owner", task.ID)
			require.NoError(t, err)
			assert.Equal(t, socketio.TaskProcessing, got.Status)
			assert.Equal(t, "ctx", got.Context)
			assert.Equal(t, "room", got.Room)
			assert.True(t, got.Stream)
			assert.Nil(t, got.Usage)

			usage := &socketio.Usage{PromptTokens: 1, CompletionTokens: 22, TotalTokens: 23}
			got, applied, err := s.UpdateTask(ctx, "owner", task.ID, socketio.TaskUpdate{
				Status: socketio.TaskCompleted, Answer: "a", Usage: usage})
			require.NoError(t, err)
			require.True(t, applied)
			assert.Equal(t, usage, got.Usage)
			got, err = s.Task(ctx, "owner", task.ID)
			require.NoError(t, err)
			assert.Equal(t, usage, got.Usage)
			assert.Equal(t, "a", got.Answer)
			assert.Equal(t, "q?", got.Question)
			assert.Equal(t, "ctx", got.Context)
			assert.True(t, got.AskedAt.Equal(asked))
			raw, err = client.Get(ctx, keys[0]).Result()
			require.NoError(t, err)
			assert.True(t, strings.HasSuffix(raw, field("1700000000000")+field("1,22,23")), "usage is the 16th field: %q", raw)

			for _, bad := range []string{old + field("1,2"), old + field("1,2,x"), old + field("1,2,3") + field("")} {
				require.NoError(t, client.Set(ctx, keys[0], bad, time.Hour).Err())
				_, err := s.Task(ctx, "owner", task.ID)
				assert.Error(t, err, "%q", bad)
			}
		})
	}
}
