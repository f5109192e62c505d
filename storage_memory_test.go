package socketio_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	socketio "github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/storagetest"
)

// newTestMemoryStorage returns a MemoryStorage closed when the test ends.
func newTestMemoryStorage(tb testing.TB, opts socketio.StorageOptions) *socketio.MemoryStorage {
	tb.Helper()
	s := socketio.NewMemoryStorage(opts)
	tb.Cleanup(func() { require.NoError(tb, s.Close()) })
	return s
}

// verifyMemoryNoLeaks fails t if goroutines started during the test outlive it.
// It checks after every other cleanup, so storages closed with t.Cleanup
// have stopped by then.
func verifyMemoryNoLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

func TestMemoryStorageConformance(t *testing.T) {
	verifyMemoryNoLeaks(t)
	storagetest.Run(t, func(t *testing.T, opts socketio.StorageOptions) socketio.Storage {
		return newTestMemoryStorage(t, opts)
	})
}

func TestMemoryStorageSweeperRemovesExpired(t *testing.T) {
	verifyMemoryNoLeaks(t)
	// The TTLs are short so that the sweeper runs every few milliseconds;
	// the test polls Stats instead of sleeping.
	s := newTestMemoryStorage(t, socketio.StorageOptions{
		SessionTTL: 40 * time.Millisecond,
		HistoryTTL: 40 * time.Millisecond,
	})
	ctx := t.Context()

	for i := range 3 {
		id := "sess-" + strconv.Itoa(i)
		require.NoError(t, s.SaveSession(ctx, socketio.Session{ID: id, CreatedAt: time.Now(), LastSeen: time.Now()}))
		for j := range 2 {
			task := socketio.Task{ID: id + "-task-" + strconv.Itoa(j), SessionID: id, Owner: socketio.OwnerOf(id, "")}
			require.NoError(t, s.CreateTask(ctx, task, 0))
		}
	}
	require.NoError(t, s.RecordQuestion(ctx, "what is goleak?"))

	require.Eventually(t, func() bool {
		return s.Stats() == socketio.MemoryStats{Questions: 1}
	}, 5*time.Second, 5*time.Millisecond, "the sweeper left %+v", s.Stats())
}

func TestMemoryStorageClose(t *testing.T) {
	verifyMemoryNoLeaks(t)
	s := socketio.NewMemoryStorage(socketio.StorageOptions{})
	ctx := t.Context()
	require.NoError(t, s.SaveSession(ctx, socketio.Session{ID: "s1"}))

	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")

	tests := []struct {
		name string
		call func() error
	}{
		{"SaveSession", func() error { return s.SaveSession(ctx, socketio.Session{ID: "s2"}) }},
		{"Session", func() error { _, err := s.Session(ctx, "s1"); return err }},
		{"CreateTask", func() error { return s.CreateTask(ctx, socketio.Task{ID: "t", Owner: "s:s1"}, 0) }},
		{"History", func() error { _, _, err := s.History(ctx, "s:s1", "", 0); return err }},
		{"RecordQuestion", func() error { return s.RecordQuestion(ctx, "q") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.ErrorIs(t, tt.call(), socketio.ErrUnavailable)
		})
	}
}

func TestMemoryStorageMaxHistoryDeletesTasks(t *testing.T) {
	verifyMemoryNoLeaks(t)
	s := newTestMemoryStorage(t, socketio.StorageOptions{MaxHistory: 2})
	ctx := t.Context()

	var ids []string
	for i := range 4 {
		task := socketio.Task{ID: "t" + strconv.Itoa(i), SessionID: "s1", Owner: "s:s1"}
		require.NoError(t, s.CreateTask(ctx, task, 0))
		_, applied, err := s.UpdateTask(ctx, task.Owner, task.ID, socketio.TaskUpdate{Status: socketio.TaskCompleted, At: time.Now()})
		require.NoError(t, err)
		require.True(t, applied)
		ids = append(ids, task.ID)
	}
	for _, id := range ids[:2] {
		_, err := s.Task(ctx, "s:s1", id)
		assert.ErrorIs(t, err, socketio.ErrNotFound, "a dropped task must be deleted, not only unlisted")
	}
	assert.Equal(t, socketio.MemoryStats{Tasks: 2, Owners: 1}, s.Stats())

	n, err := s.ClearHistory(ctx, "s:s1")
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Equal(t, socketio.MemoryStats{}, s.Stats(), "an owner without tasks must be forgotten")
}

func TestMemoryStoragePopularOrder(t *testing.T) {
	verifyMemoryNoLeaks(t)
	tests := []struct {
		name       string
		maxPopular int
		asked      []string
		want       []string
	}{
		{
			name:  "ties go to the most recently asked",
			asked: []string{"a", "b", "c", "b", "a"},
			want:  []string{"a", "b", "c"},
		},
		{
			name:  "count beats recency",
			asked: []string{"a", "a", "b"},
			want:  []string{"a", "b"},
		},
		{
			name:       "a new question evicts the least asked",
			maxPopular: 3,
			asked:      []string{"a", "a", "b", "b", "b", "c", "d"},
			want:       []string{"b", "a", "d"},
		},
		{
			name:       "eviction among equals takes the least recently asked",
			maxPopular: 2,
			asked:      []string{"a", "b", "a", "b", "c"},
			want:       []string{"b", "c"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestMemoryStorage(t, socketio.StorageOptions{MaxPopular: tt.maxPopular})
			for _, q := range tt.asked {
				require.NoError(t, s.RecordQuestion(t.Context(), q))
			}
			got, err := s.PopularQuestions(t.Context(), 10)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestMemoryStorageDefaultLimits(t *testing.T) {
	verifyMemoryNoLeaks(t)
	s := newTestMemoryStorage(t, socketio.StorageOptions{})
	ctx := t.Context()

	for i := range 30 {
		id := strconv.Itoa(i)
		require.NoError(t, s.CreateTask(ctx, socketio.Task{ID: id, SessionID: "s1", Owner: "s:s1"}, 0))
		require.NoError(t, s.RecordQuestion(ctx, "question "+id))
	}
	items, hasMore, err := s.History(ctx, "s:s1", "", 0)
	require.NoError(t, err)
	assert.Len(t, items, 20)
	assert.True(t, hasMore)

	popular, err := s.PopularQuestions(ctx, 0)
	require.NoError(t, err)
	assert.Len(t, popular, 10)
}

func TestMemoryStorageCreateTaskStatus(t *testing.T) {
	verifyMemoryNoLeaks(t)
	tests := []struct {
		name    string
		status  socketio.TaskStatus
		wantErr bool
	}{
		{"empty", "", false},
		{"pending", socketio.TaskPending, false},
		{"processing", socketio.TaskProcessing, true},
		{"completed", socketio.TaskCompleted, true},
	}
	s := newTestMemoryStorage(t, socketio.StorageOptions{})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := socketio.Task{ID: strconv.Itoa(i), Owner: "s:s1", Status: tt.status}
			err := s.CreateTask(t.Context(), task, 0)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			got, err := s.Task(t.Context(), task.Owner, task.ID)
			require.NoError(t, err)
			assert.Equal(t, socketio.TaskPending, got.Status)
		})
	}
}

func TestMemoryStorageUpdateZeroAt(t *testing.T) {
	verifyMemoryNoLeaks(t)
	s := newTestMemoryStorage(t, socketio.StorageOptions{})
	ctx := t.Context()
	require.NoError(t, s.CreateTask(ctx, socketio.Task{ID: "t", Owner: "s:s1"}, 0))

	got, applied, err := s.UpdateTask(ctx, "s:s1", "t", socketio.TaskUpdate{Status: socketio.TaskCompleted})
	require.NoError(t, err)
	require.True(t, applied)
	assert.WithinDuration(t, time.Now(), got.UpdatedAt, time.Minute)
	assert.Equal(t, got.UpdatedAt, got.AnsweredAt)
}

func TestMemoryStorageContextDeadline(t *testing.T) {
	verifyMemoryNoLeaks(t)
	s := newTestMemoryStorage(t, socketio.StorageOptions{})
	ctx, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel()
	_, err := s.Session(ctx, "s1")
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func BenchmarkMemoryStorageCreateTask(b *testing.B) {
	s := newTestMemoryStorage(b, socketio.StorageOptions{})
	ctx := context.Background()
	const owners = 64

	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var n uint64
		worker := strconv.FormatUint(memoryBenchWorker.Add(1), 10)
		for pb.Next() {
			n++
			i := n
			sess := worker + "-" + strconv.FormatUint(i%owners, 10)
			task := socketio.Task{
				ID:        worker + "-" + strconv.FormatUint(i, 10),
				SessionID: sess,
				Owner:     socketio.OwnerOf(sess, ""),
				Question:  "question",
				Status:    socketio.TaskPending,
			}
			if err := s.CreateTask(ctx, task, 3); err != nil {
				b.Fatal(err)
			}
			// Finish it, so that the store reaches its steady state where
			// each create drops the oldest finished task.
			if _, _, err := s.UpdateTask(ctx, task.Owner, task.ID, socketio.TaskUpdate{Status: socketio.TaskCompleted, Answer: "answer"}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

var memoryBenchWorker atomic.Uint64

func BenchmarkMemoryStorageHistory(b *testing.B) {
	s := newTestMemoryStorage(b, socketio.StorageOptions{})
	ctx := context.Background()
	const owner = "s:s1"
	for i := range 200 {
		task := socketio.Task{ID: strconv.Itoa(i), SessionID: "s1", Owner: owner, Sources: []string{"kb/1", "kb/2"}}
		require.NoError(b, s.CreateTask(ctx, task, 0))
	}

	b.Run("first page", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := s.History(ctx, owner, "", 20); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("page before", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := s.History(ctx, owner, "100", 20); err != nil {
				b.Fatal(err)
			}
		}
	})
}
