// Package redistest provides the Redis deployments the tests of this
// module run against besides a single server: a Ring, a client that
// hides its concrete type, and, when the
// environment names them, a real Redis Cluster (REDIS_CLUSTER_ADDRS) and a
// Sentinel-monitored master (REDIS_SENTINEL_ADDRS, REDIS_SENTINEL_MASTER).
// testdata/redis-topologies/run.sh starts the latter two and runs the
// tests that use them.
//
// It also checks the rule every key layout of the module follows: no
// command names keys of two hash slots (SlotCheckHook).
package redistest

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/qaplatform/socketio/internal/redistopo"
)

// Environment variables naming the real deployments.
const (
	// EnvCluster lists the nodes of a Redis Cluster, comma-separated
	// (host:port,host:port,…).
	EnvCluster = "REDIS_CLUSTER_ADDRS"
	// EnvSentinel lists Sentinel addresses, comma-separated.
	EnvSentinel = "REDIS_SENTINEL_ADDRS"
	// EnvSentinelMaster names the master the Sentinels monitor.
	// default: "mymaster"
	EnvSentinelMaster = "REDIS_SENTINEL_MASTER"
)

// Wrapped is a client that hides the concrete type of the one it wraps,
// as an application's instrumented or decorated client does: it has the
// methods of redis.UniversalClient and no others.
type Wrapped struct{ redis.UniversalClient }

// NewRing returns a Ring with one shard per address (named s0, s1, …),
// closed when tb ends.
func NewRing(tb testing.TB, addrs ...string) *redis.Ring {
	tb.Helper()
	shards := make(map[string]string, len(addrs))
	for i, a := range addrs {
		shards["s"+strconv.Itoa(i)] = a
	}
	ring := redis.NewRing(&redis.RingOptions{Addrs: shards})
	tb.Cleanup(func() { _ = ring.Close() })
	return ring
}

// NewCluster returns a client of the Redis Cluster named by
// REDIS_CLUSTER_ADDRS, closed when tb ends, or skips tb when it is unset.
func NewCluster(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	addrs := splitAddrs(os.Getenv(EnvCluster))
	if len(addrs) == 0 {
		tb.Skip(EnvCluster + " is not set: skipping the Redis Cluster pass (testdata/redis-topologies/run.sh sets it)")
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	tb.Cleanup(func() { _ = c.Close() })
	if err := c.Ping(context.Background()).Err(); err != nil {
		tb.Fatalf("%s is set but the cluster does not answer: %v", EnvCluster, err)
	}
	return c
}

// NewSentinel returns a failover client of the master that the Sentinels
// of REDIS_SENTINEL_ADDRS monitor, closed when tb ends, or skips tb when it
// is unset.
func NewSentinel(tb testing.TB) *redis.Client {
	tb.Helper()
	addrs := splitAddrs(os.Getenv(EnvSentinel))
	if len(addrs) == 0 {
		tb.Skip(EnvSentinel + " is not set: skipping the Sentinel pass (testdata/redis-topologies/run.sh sets it)")
	}
	master := os.Getenv(EnvSentinelMaster)
	if master == "" {
		master = "mymaster"
	}
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: master, SentinelAddrs: addrs})
	tb.Cleanup(func() { _ = c.Close() })
	if err := c.Ping(context.Background()).Err(); err != nil {
		tb.Fatalf("%s is set but the master does not answer: %v", EnvSentinel, err)
	}
	return c
}

func splitAddrs(s string) []string {
	var out []string
	for a := range strings.SplitSeq(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// DeletePrefix deletes every key that starts with prefix (which holds no
// glob characters) on every node of c, one DEL per key so that a Cluster
// accepts them. Failures are reported with tb.Errorf.
func DeletePrefix(tb testing.TB, c redis.UniversalClient, prefix string) {
	tb.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	var keys []string
	err := redistopo.ForEachMaster(ctx, c, func(ctx context.Context, n redis.Cmdable) error {
		iter := n.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			keys = append(keys, iter.Val())
			mu.Unlock()
		}
		return iter.Err()
	})
	if err == nil && len(keys) > 0 {
		_, err = c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, k := range keys {
				pipe.Del(ctx, k)
			}
			return nil
		})
	}
	if err != nil {
		tb.Errorf("cleaning up %s*: %v", prefix, err)
	}
}

// Slot is the Redis Cluster slot of key: CRC16 (XMODEM) of its hash tag,
// or of the whole key when it has none, modulo 16384.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

// SlotCheckHook is a go-redis hook that fails the test when a command names
// keys of two slots. It reads the keys of EVAL/EVALSHA from their numkeys
// argument, takes every argument of DEL, EXISTS, MGET and UNLINK as a key,
// and the first argument of any other command.
type SlotCheckHook struct {
	T testing.TB

	mu       sync.Mutex
	commands map[string]int
}

// Commands returns how many commands of each (lower-case) name it saw.
func (h *SlotCheckHook) Commands() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]int, len(h.commands))
	for k, v := range h.commands {
		out[k] = v
	}
	return out
}

// DialHook implements redis.Hook.
func (h *SlotCheckHook) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (h *SlotCheckHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.check(cmd)
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (h *SlotCheckHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			h.check(cmd)
		}
		return next(ctx, cmds)
	}
}

func (h *SlotCheckHook) check(cmd redis.Cmder) {
	args := cmd.Args()
	name := strings.ToLower(cmd.Name())
	var keys []string
	switch name {
	case "eval", "evalsha", "eval_ro", "evalsha_ro":
		n, _ := strconv.Atoi(argString(args[2]))
		for _, k := range args[3 : 3+n] {
			keys = append(keys, argString(k))
		}
	case "del", "exists", "mget", "unlink":
		for _, k := range args[1:] {
			keys = append(keys, argString(k))
		}
	default:
		if len(args) > 1 {
			keys = append(keys, argString(args[1]))
		}
	}
	h.mu.Lock()
	if h.commands == nil {
		h.commands = make(map[string]int)
	}
	h.commands[name]++
	h.mu.Unlock()
	for _, k := range keys {
		if Slot(k) != Slot(keys[0]) {
			h.T.Errorf("%s names keys of two slots: %q", name, keys)
			return
		}
	}
}

func argString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	}
	return ""
}

// IgnoreDNSLookups returns goleak options that ignore the goroutines of a
// DNS lookup in flight. go-redis's NewFailoverClient (and any client whose
// address is a host name) resolves that address when it is created, to
// classify the endpoint for maintenance notifications: a failover client
// resolves its placeholder address "FailoverClient", under a timeout of
// its own (2 s), and the lookup's goroutines may outlive Close until the
// resolver gives up. The module itself resolves no names.
func IgnoreDNSLookups() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("net.(*Resolver).lookupIPAddr.func1"),
		goleak.IgnoreAnyFunction("net.(*Resolver).lookupIPAddr.func2"),
		goleak.IgnoreAnyFunction("net.(*Resolver).goLookupIPCNAMEOrder.func3.1"),
	}
}

// Restart restarts a closed miniredis on its address, keeping its data.
// miniredis v2.40.0's own Restart leaves the context that Close cancelled
// in place, so every blocking command (XREAD BLOCK, XREADGROUP BLOCK,
// BLPOP) afterwards returns without a reply and its client waits out its
// read timeout; Restart gives the server a fresh one.
func Restart(mr *miniredis.Miniredis) error {
	if err := mr.Restart(); err != nil {
		return err
	}
	mr.Lock()
	mr.Ctx, mr.CtxCancel = context.WithCancel(context.Background())
	mr.Unlock()
	return nil
}
