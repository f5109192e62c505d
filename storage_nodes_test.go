package socketio

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// nodeStores returns the stores that keep node leases, each with a clock
// the test moves: a MemoryStorage, a RedisStorage on miniredis, and one on
// the real Redis when REDIS_URL is set (whose clock is real: its leases
// are given room to lapse by waiting).
func nodeStores(t *testing.T) map[string]func(t *testing.T) (nodeStore, func(time.Duration)) {
	m := map[string]func(t *testing.T) (nodeStore, func(time.Duration)){
		"memory": func(t *testing.T) (nodeStore, func(time.Duration)) {
			var clock atomic.Int64
			clock.Store(time.Now().UnixNano())
			s := newMemoryStorage(StorageOptions{}, func() time.Time { return time.Unix(0, clock.Load()) })
			t.Cleanup(func() { s.Close() })
			return s, func(d time.Duration) { clock.Add(int64(d)) }
		},
		"miniredis": func(t *testing.T) (nodeStore, func(time.Duration)) {
			mr := miniredis.RunT(t)
			c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
			s := NewRedisStorage(c, RedisStorageOptions{})
			t.Cleanup(func() { s.Close(); c.Close() })
			return s, mr.FastForward
		},
	}
	if url := os.Getenv("REDIS_URL"); url != "" {
		m["redis"] = func(t *testing.T) (nodeStore, func(time.Duration)) {
			o, err := redis.ParseURL(url)
			require.NoError(t, err)
			c := redis.NewClient(o)
			prefix := fmt.Sprintf("qatest:%d:nodes:", time.Now().UnixNano())
			s := NewRedisStorage(c, RedisStorageOptions{Prefix: prefix})
			t.Cleanup(func() {
				ctx := context.Background()
				iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
				for iter.Next(ctx) {
					c.Del(ctx, iter.Val())
				}
				s.Close()
				c.Close()
			})
			return s, time.Sleep
		}
	}
	return m
}

func TestNodeStoreLeases(t *testing.T) {
	for name, open := range nodeStores(t) {
		t.Run(name, func(t *testing.T) {
			s, advance := open(t)
			ctx := context.Background()
			const ttl = 50 * time.Millisecond
			ref := func(i int) taskRef { return taskRef{owner: fmt.Sprintf("s:{sess}:%d", i), id: fmt.Sprintf("t_%d", i)} }

			require.NoError(t, s.renewNode(ctx, "a", ttl))
			require.NoError(t, s.renewNode(ctx, "b", ttl))
			require.NoError(t, s.holdTask(ctx, "a", ref(1)))
			require.NoError(t, s.holdTask(ctx, "a", ref(2)))
			require.NoError(t, s.holdTask(ctx, "b", ref(3)))
			dead, err := s.deadNodes(ctx, "b")
			require.NoError(t, err)
			assert.Empty(t, dead, "both leases live")

			// a stops renewing; b renews.
			advance(ttl / 2)
			require.NoError(t, s.renewNode(ctx, "b", ttl))
			advance(ttl/2 + 10*time.Millisecond)
			dead, err = s.deadNodes(ctx, "b")
			require.NoError(t, err)
			assert.Equal(t, []string{"a"}, dead)
			dead, err = s.deadNodes(ctx, "a")
			require.NoError(t, err)
			assert.Empty(t, dead, "a node never counts itself dead")

			// One sweeper at a time per dead node; the holder may claim again.
			ok, err := s.claimNode(ctx, "a", "b", time.Hour)
			require.NoError(t, err)
			assert.True(t, ok)
			ok, err = s.claimNode(ctx, "a", "c", time.Hour)
			require.NoError(t, err)
			assert.False(t, ok)
			ok, err = s.claimNode(ctx, "a", "b", time.Hour)
			require.NoError(t, err)
			assert.True(t, ok)

			refs, err := s.heldTasks(ctx, "a", 10)
			require.NoError(t, err)
			sort.Slice(refs, func(i, j int) bool { return refs[i].id < refs[j].id })
			assert.Equal(t, []taskRef{ref(1), ref(2)}, refs)
			refs, err = s.heldTasks(ctx, "a", 1)
			require.NoError(t, err)
			assert.Len(t, refs, 1)
			for _, r := range []taskRef{ref(1), ref(2)} {
				require.NoError(t, s.releaseTask(ctx, "a", r))
			}
			refs, err = s.heldTasks(ctx, "a", 10)
			require.NoError(t, err)
			assert.Empty(t, refs)
			dead, err = s.deadNodes(ctx, "b")
			require.NoError(t, err)
			assert.Empty(t, dead, "a node that holds nothing is forgotten")

			// A dropped lease is dead at once.
			require.NoError(t, s.dropNode(ctx, "b"))
			dead, err = s.deadNodes(ctx, "c")
			require.NoError(t, err)
			assert.Equal(t, []string{"b"}, dead)
		})
	}
}
