// Package redistopo reaches every node behind a go-redis client, for the
// few commands that do not follow a key: SCAN and PUBSUB NUMSUB.
//
// Nothing here decides a key layout: the library keeps every multi-key
// command inside one hash slot, which a single server, Sentinel, Cluster
// and Ring all route alike. Only commands without a key need to know that
// the data is spread over nodes, and they learn it from the methods the
// client has (ForEachMaster, ForEachShard), not from its concrete type, so
// that a client wrapping a *redis.ClusterClient or *redis.Ring works when
// it exposes them too.
package redistopo

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// masterIterator is implemented by *redis.ClusterClient.
type masterIterator interface {
	ForEachMaster(ctx context.Context, fn func(ctx context.Context, c *redis.Client) error) error
}

// shardIterator is implemented by *redis.ClusterClient (masters and
// replicas) and *redis.Ring (its live shards).
type shardIterator interface {
	ForEachShard(ctx context.Context, fn func(ctx context.Context, c *redis.Client) error) error
}

// ForEachMaster calls fn once per node holding a share of the keys: each
// master of a Cluster, each live shard of a Ring, or c itself for a client
// of one server (direct or through Sentinel). Calls may run concurrently;
// it returns the first error.
func ForEachMaster(ctx context.Context, c redis.UniversalClient, fn func(ctx context.Context, c redis.Cmdable) error) error {
	wrap := func(ctx context.Context, n *redis.Client) error { return fn(ctx, n) }
	if m, ok := c.(masterIterator); ok {
		return m.ForEachMaster(ctx, wrap)
	}
	if s, ok := c.(shardIterator); ok {
		return s.ForEachShard(ctx, wrap)
	}
	return fn(ctx, c)
}

// ForEachNode calls fn once per node a subscriber may be connected to:
// every node of a Cluster (replicas included), each live shard of a Ring,
// or c itself for a client of one server. Calls may run concurrently; it
// returns the first error.
func ForEachNode(ctx context.Context, c redis.UniversalClient, fn func(ctx context.Context, c redis.Cmdable) error) error {
	if s, ok := c.(shardIterator); ok {
		return s.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error { return fn(ctx, n) })
	}
	return fn(ctx, c)
}
