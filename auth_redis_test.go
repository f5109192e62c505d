package socketio

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/qaplatform/socketio/internal/redistest"
)

// The shared-state tests run each scenario against every backend: the
// memory state (several Auths sharing one state object: the reference
// behaviour), miniredis, and a real Redis when REDIS_URL is set. Each Auth
// is a "node"; nodes share the backend and a manual clock.

// authEnv is one backend for one test.
type authEnv struct {
	t      *testing.T
	kind   string // one of authEnvKinds
	clk    *authTestClock
	mem    *memoryAuthState
	rdb    redis.UniversalClient
	mrs    []*miniredis.Miniredis // the embedded servers behind rdb, if any
	prefix string
	trips  *roundTripCounter
}

// authEnvKinds are the backends: the memory state, one miniredis, the
// real Redis of REDIS_URL, a Ring of two miniredis shards, a ClusterClient
// on miniredis wrapped so that its type is hidden, and the real Cluster and
// Sentinel deployments of redistest (skipped when the environment does not
// name them).
var authEnvKinds = []string{"memory", "miniredis", "redis", "ring", "wrapped cluster", "cluster", "sentinel"}

// forEachAuthEnv runs fn once per backend, in a subtest named after it
// (the memory state only when withMemory). Each subtest checks for leaked
// goroutines once everything it opened is closed.
func forEachAuthEnv(t *testing.T, withMemory bool, fn func(t *testing.T, e *authEnv)) {
	t.Helper()
	kinds := authEnvKinds[1:]
	if withMemory {
		kinds = authEnvKinds
	}
	forEachAuthEnvOf(t, kinds, fn)
}

// forEachAuthEnvOf is forEachAuthEnv over the given kinds.
func forEachAuthEnvOf(t *testing.T, kinds []string, fn func(t *testing.T, e *authEnv)) {
	t.Helper()
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, append(redistest.IgnoreDNSLookups(), ignore)...) }) // runs last
			e := &authEnv{t: t, kind: kind, clk: &authTestClock{t: time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)}}
			switch kind {
			case "memory":
				e.mem = newMemoryAuthState()
			case "miniredis":
				e.use(redis.NewClient(&redis.Options{Addr: e.miniredis().Addr()}))
			case "redis":
				e.use(redis.NewClient(realRedisOptions(t)))
			case "ring":
				e.use(redis.NewRing(&redis.RingOptions{Addrs: map[string]string{
					"a": e.miniredis().Addr(), "b": e.miniredis().Addr(),
				}}))
			case "wrapped cluster":
				e.use(redistest.Wrapped{UniversalClient: redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{e.miniredis().Addr()}})})
			case "cluster":
				e.use(redistest.NewCluster(t))
			case "sentinel":
				e.use(redistest.NewSentinel(t))
			default:
				t.Fatalf("unknown backend %q", kind)
			}
			fn(t, e)
		})
	}
}

// miniredis starts an embedded server for e, stopped at cleanup.
func (e *authEnv) miniredis() *miniredis.Miniredis {
	mr := miniredis.NewMiniRedis()
	require.NoError(e.t, mr.Start())
	e.t.Cleanup(mr.Close)
	e.mrs = append(e.mrs, mr)
	return mr
}

// realRedisOptions parses REDIS_URL, or skips t when it is unset.
func realRedisOptions(t testing.TB) *redis.Options {
	t.Helper()
	url := os.Getenv("REDIS_URL")
	if url == "" {
		t.Skip("REDIS_URL is not set: skipping the real-Redis pass (CI sets it)")
	}
	opts, err := redis.ParseURL(url)
	require.NoError(t, err)
	return opts
}

// use makes c the backend, under a fresh key prefix, with a hook that
// fails the test when a command names keys of two slots; at cleanup it
// deletes that prefix's keys (never the whole database) and closes c.
func (e *authEnv) use(c redis.UniversalClient) {
	e.rdb = c
	e.trips = &roundTripCounter{}
	e.rdb.AddHook(e.trips)
	e.rdb.AddHook(&redistest.SlotCheckHook{T: e.t})
	e.prefix = "qa-test:" + rand.Text()[:12] + ":"
	e.t.Cleanup(func() { _ = e.rdb.Close() })
	e.t.Cleanup(func() { deleteKeys(e.t, e.rdb, e.prefix) })
}

func deleteKeys(t testing.TB, rdb redis.UniversalClient, prefix string) {
	t.Helper()
	redistest.DeletePrefix(t, rdb, escapeGlob(prefix))
}

func (e *authEnv) redis() bool { return e.rdb != nil }

// node returns a new Auth on the backend, without a sweeper, closed at
// cleanup.
func (e *authEnv) node(opts AuthOptions) *Auth {
	a, _ := e.nodeWith(opts, nil)
	return a
}

// nodeWith is node, with a hook called after each lease renewal (Redis
// only); it also returns the node's Redis state (nil for memory).
func (e *authEnv) nodeWith(opts AuthOptions, afterRenew func()) (*Auth, *redisAuthState) {
	e.t.Helper()
	return e.nodeWithConfig(opts, redisAuthConfig{afterRenew: afterRenew})
}

// nodeWithConfig is nodeWith with the test knobs of the Redis state
// (afterRenew, renewEvery) taken from rc; the rest comes from opts.
func (e *authEnv) nodeWithConfig(opts AuthOptions, rc redisAuthConfig) (*Auth, *redisAuthState) {
	e.t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	cfg := authConfig{now: e.clk.Now, sweepEvery: -1, state: e.mem}
	var st *redisAuthState
	if e.redis() {
		opts.Redis, opts.RedisPrefix = e.rdb, e.prefix
		o := opts.withDefaults()
		st = newRedisAuthState(e.rdb, redisAuthConfig{
			prefix: o.RedisPrefix, leaseTTL: o.LeaseTTL, cacheTTL: o.BlocklistCacheTTL,
			now: e.clk.Now, logger: o.Logger, afterRenew: rc.afterRenew, renewEvery: rc.renewEvery,
			duringRenew: rc.duringRenew,
		})
		cfg.state = st
	}
	a, err := newAuth(opts, cfg)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { require.NoError(e.t, a.Close()) })
	return a, st
}

// roundTripCounter is a go-redis hook counting round trips: one per command
// sent alone, one per pipeline or transaction.
type roundTripCounter struct{ n atomic.Int64 }

func (c *roundTripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *roundTripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c *roundTripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}

// tripsOf returns how many round trips f made.
func (e *authEnv) tripsOf(f func()) int64 {
	before := e.trips.n.Load()
	f()
	return e.trips.n.Load() - before
}

func TestRedisAuthConnectionsAcrossNodes(t *testing.T) {
	forEachAuthEnv(t, true, func(t *testing.T, e *authEnv) {
		ctx := context.Background()
		opts := AuthOptions{MaxConnectionsPerIP: 10}
		nodes := []*Auth{e.node(opts), e.node(opts)}
		const addr = "192.0.2.50"

		// 50 goroutines on two nodes race for 10 slots.
		var admitted atomic.Int64
		owner := make([]int, 50) // node that admitted socket i, or -1
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				owner[i] = -1
				if _, err := nodes[i%2].CheckConnect(ctx, "sock"+strconv.Itoa(i), addr, ""); err == nil {
					admitted.Add(1)
					owner[i] = i % 2
				} else {
					requireCode(t, err, CodeTooManyConnections)
				}
			}()
		}
		close(start)
		wg.Wait()
		require.EqualValues(t, 10, admitted.Load())
		for _, a := range nodes {
			st := stats(t, a)
			assert.Equal(t, 10, st.Total)
			assert.Equal(t, map[string]int{addr: 10}, st.PerAddress)
		}
		assert.EqualValues(t, 40, stats(t, nodes[0]).Refusals[CodeTooManyConnections]+stats(t, nodes[1]).Refusals[CodeTooManyConnections])

		// A release on one node frees a slot for the other.
		var held []int
		for i, o := range owner {
			if o >= 0 {
				held = append(held, i)
			}
		}
		first := held[0]
		other := nodes[1-owner[first]]
		_, err := other.CheckConnect(ctx, "late", addr, "")
		requireCode(t, err, CodeTooManyConnections)
		nodes[owner[first]].ReleaseConnection(ctx, "sock"+strconv.Itoa(first))
		nodes[owner[first]].ReleaseConnection(ctx, "sock"+strconv.Itoa(first)) // idempotent
		_, err = other.CheckConnect(ctx, "late", addr, "")
		require.NoError(t, err)
		_, err = other.CheckConnect(ctx, "late", addr, "") // same id: no second slot
		require.NoError(t, err)
		_, err = nodes[0].CheckConnect(ctx, "later", "::ffff:"+addr, "") // mapped form: same address
		requireCode(t, err, CodeTooManyConnections)

		for _, i := range held[1:] {
			nodes[owner[i]].ReleaseConnection(ctx, "sock"+strconv.Itoa(i))
		}
		other.ReleaseConnection(ctx, "late")
		st := stats(t, nodes[0])
		assert.Zero(t, st.Total)
		assert.Empty(t, st.PerAddress)
	})
}

func TestRedisAuthLeases(t *testing.T) {
	forEachAuthEnv(t, false, func(t *testing.T, e *authEnv) {
		ctx := context.Background()
		const lease = 60 * time.Millisecond // renewed every 20ms of real time
		renewed := make(chan struct{}, 1)
		a, aState := e.nodeWith(AuthOptions{MaxConnectionsPerIP: 3, LeaseTTL: lease}, func() {
			select {
			case renewed <- struct{}{}:
			default:
			}
		})
		b := e.node(AuthOptions{MaxConnectionsPerIP: 3, LeaseTTL: lease})
		const addr = "198.51.100.20"
		for i := range 3 {
			_, err := a.CheckConnect(ctx, "a"+strconv.Itoa(i), addr, "")
			require.NoError(t, err)
		}
		_, err := b.CheckConnect(ctx, "b0", addr, "")
		requireCode(t, err, CodeTooManyConnections)

		// A live node renews its leases: after a whole lease has passed on
		// the shared clock and A has renewed, its slots still count.
		e.clk.Advance(lease)
		waitRenewals(t, renewed, 2) // the second one surely read the new time
		_, err = b.CheckConnect(ctx, "b0", addr, "")
		requireCode(t, err, CodeTooManyConnections)

		// A dies: no more renewals and no release. Its slots lapse one
		// lease later and B can take them.
		aState.stopRenewing()
		aState.connMu.Lock()
		clear(aState.conns)
		aState.connMu.Unlock()
		e.clk.Advance(lease - time.Millisecond)
		_, err = b.CheckConnect(ctx, "b0", addr, "")
		requireCode(t, err, CodeTooManyConnections)
		e.clk.Advance(time.Millisecond)
		for i := range 3 {
			_, err := b.CheckConnect(ctx, "b"+strconv.Itoa(i), addr, "")
			require.NoError(t, err, "slot %d", i)
		}
		_, err = b.CheckConnect(ctx, "b3", addr, "")
		requireCode(t, err, CodeTooManyConnections)
		assert.Equal(t, map[string]int{addr: 3}, stats(t, b).PerAddress)

		// Close releases a node's slots at once.
		c := e.node(AuthOptions{MaxConnectionsPerIP: 3, LeaseTTL: lease})
		_, err = c.CheckConnect(ctx, "c0", "198.51.100.21", "")
		require.NoError(t, err)
		assert.Equal(t, 1, stats(t, b).PerAddress["198.51.100.21"])
		require.NoError(t, c.Close())
		require.NoError(t, c.Close())
		assert.Zero(t, stats(t, b).PerAddress["198.51.100.21"])
	})
}

// TestRedisAuthLeasesRecreatedAfterWipe: when Redis loses the connection
// keys (a restart with no persistence, an eviction), the next renewal
// writes this node's slots back, since their connections are still open:
// a connection beyond the limit is refused again, from any node.
func TestRedisAuthLeasesRecreatedAfterWipe(t *testing.T) {
	forEachAuthEnv(t, false, func(t *testing.T, e *authEnv) {
		ctx := context.Background()
		const limit = 4
		renewed := make(chan struct{}, 1)
		opts := AuthOptions{MaxConnectionsPerIP: limit}
		a, _ := e.nodeWithConfig(opts, redisAuthConfig{renewEvery: 5 * time.Millisecond, afterRenew: func() {
			select {
			case renewed <- struct{}{}:
			default:
			}
		}})
		b := e.node(opts)
		const addr = "198.51.100.30"
		for i := range limit {
			_, err := a.CheckConnect(ctx, "a"+strconv.Itoa(i), addr, "")
			require.NoError(t, err)
		}
		_, err := b.CheckConnect(ctx, "b0", addr, "")
		requireCode(t, err, CodeTooManyConnections)

		e.wipe()
		waitRenewals(t, renewed, 2) // the second one surely ran after the wipe

		assert.Equal(t, map[string]int{addr: limit}, stats(t, b).PerAddress, "the leases are back")
		_, err = b.CheckConnect(ctx, "b0", addr, "")
		requireCode(t, err, CodeTooManyConnections)
		_, err = a.CheckConnect(ctx, "a"+strconv.Itoa(limit), addr, "")
		requireCode(t, err, CodeTooManyConnections)

		// A released slot is not brought back by later renewals.
		a.ReleaseConnection(ctx, "a0")
		waitRenewals(t, renewed, 2)
		_, err = b.CheckConnect(ctx, "b0", addr, "")
		require.NoError(t, err)
		_, err = b.CheckConnect(ctx, "b1", addr, "")
		requireCode(t, err, CodeTooManyConnections)
	})
}

// TestRedisAuthReleaseDuringRenewal: a slot released while a renewal that
// read it runs is not written back for good (the renewal writes missing
// slots back, and the release may have come first).
func TestRedisAuthReleaseDuringRenewal(t *testing.T) {
	forEachAuthEnv(t, false, func(t *testing.T, e *authEnv) {
		ctx := context.Background()
		const addr = "198.51.100.31"
		var a *Auth
		var once sync.Once
		released, renewed := make(chan struct{}), make(chan struct{}, 1)
		a, _ = e.nodeWithConfig(AuthOptions{MaxConnectionsPerIP: 1}, redisAuthConfig{
			renewEvery: 5 * time.Millisecond,
			duringRenew: func() {
				once.Do(func() {
					a.ReleaseConnection(ctx, "a0")
					close(released)
				})
			},
			afterRenew: func() {
				select {
				case renewed <- struct{}{}:
				default:
				}
			},
		})
		_, err := a.CheckConnect(ctx, "a0", addr, "")
		require.NoError(t, err)
		<-released
		waitRenewals(t, renewed, 2)
		assert.Empty(t, stats(t, a).PerAddress)
		_, err = e.node(AuthOptions{MaxConnectionsPerIP: 1}).CheckConnect(ctx, "b0", addr, "")
		require.NoError(t, err, "the released slot is free")
	})
}

// wipe deletes the test's keys, as a Redis restarted without persistence
// would have lost them: miniredis is flushed; a real Redis loses only this
// test's prefix (never the whole database).
func (e *authEnv) wipe() {
	e.t.Helper()
	if len(e.mrs) > 0 {
		for _, mr := range e.mrs {
			mr.FlushAll()
		}
		return
	}
	deleteKeys(e.t, e.rdb, e.prefix)
}

func waitRenewals(t *testing.T, renewed <-chan struct{}, n int) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	// Drop a signal from before the caller's change.
	select {
	case <-renewed:
	default:
	}
	for range n {
		select {
		case <-renewed:
		case <-deadline:
			t.Fatal("the lease refresher did not run")
		}
	}
}

func TestRedisAuthBlocklistAcrossNodes(t *testing.T) {
	forEachAuthEnv(t, true, func(t *testing.T, e *authEnv) {
		ctx := context.Background()
		const cacheTTL = time.Second
		opts := AuthOptions{BlocklistCacheTTL: cacheTTL}
		a, b := e.node(opts), e.node(opts)
		blocked := func(n *Auth, ip string) (string, bool) {
			t.Helper()
			reason, ok, err := n.BlockedReason(ctx, ip)
			require.NoError(t, err)
			return reason, ok
		}
		// within advances past B's cache TTL on Redis, where B may answer
		// from its cache until then; the memory state is exact at once.
		within := func(stale func()) {
			t.Helper()
			if e.redis() {
				stale()
				e.clk.Advance(cacheTTL)
			}
		}

		_, ok := blocked(b, "203.0.113.7") // B's cache is warm
		require.False(t, ok)
		require.NoError(t, a.BlockIP(ctx, "203.0.113.0/24", "abuse", 0))
		_, err := a.CheckConnect(ctx, "a1", "203.0.113.7", "")
		requireCode(t, err, CodeIPBlocked) // at once on the node that blocked
		within(func() {
			_, ok := blocked(b, "203.0.113.7")
			assert.False(t, ok, "B answers from its cache until the TTL passes")
		})
		_, err = b.CheckConnect(ctx, "b1", "203.0.113.7", "")
		ee := requireCode(t, err, CodeIPBlocked)
		assert.Contains(t, ee.Message, "abuse")

		// The most specific live entry wins, wherever it was set.
		require.NoError(t, b.BlockIP(ctx, "203.0.113.7", "single", 0))
		require.NoError(t, a.BlockIP(ctx, "203.0.0.0/16", "wide", 0))
		require.NoError(t, a.BlockIP(ctx, "203.0.113.9", "short", time.Minute))
		within(func() {})
		for _, n := range []*Auth{a, b} {
			for ip, want := range map[string]string{
				"203.0.113.7": "single", "203.0.113.8": "abuse", "203.0.5.5": "wide",
				"203.0.113.9": "short", "::ffff:203.0.113.7": "single",
			} {
				reason, ok := blocked(n, ip)
				assert.True(t, ok, ip)
				assert.Equal(t, want, reason, ip)
			}
			_, ok := blocked(n, "203.1.0.1")
			assert.False(t, ok)
		}

		// Expiry: the minute-long entry lapses on every node, even in a
		// cache; the /24 then decides.
		e.clk.Advance(time.Minute)
		for _, n := range []*Auth{a, b} {
			reason, _ := blocked(n, "203.0.113.9")
			assert.Equal(t, "abuse", reason)
		}
		ok, err = b.UnblockIP(ctx, "203.0.113.9") // expired: not live
		require.NoError(t, err)
		assert.False(t, ok)

		// Unblock on one node lifts the block on the other within the TTL.
		_, _ = blocked(b, "203.0.113.8")
		ok, err = a.UnblockIP(ctx, "203.0.113.0/24")
		require.NoError(t, err)
		assert.True(t, ok)
		within(func() {
			reason, _ := blocked(b, "203.0.113.8")
			assert.Equal(t, "abuse", reason, "B answers from its cache until the TTL passes")
		})
		reason, _ := blocked(b, "203.0.113.8")
		assert.Equal(t, "wide", reason)
		ok, err = b.UnblockIP(ctx, "203.0.113.0/24")
		require.NoError(t, err)
		assert.False(t, ok)

		// Both nodes report the same live blocklist.
		want := []BlockedAddress{{Addr: "203.0.0.0/16", Reason: "wide"}, {Addr: "203.0.113.7", Reason: "single"}}
		assert.Equal(t, want, stats(t, a).Blocked)
		assert.Equal(t, want, stats(t, b).Blocked)

		// The sweep drops expired entries from the store.
		require.NoError(t, a.BlockIP(ctx, "198.51.100.0/24", "temp", time.Second))
		e.clk.Advance(time.Second)
		a.sweep()
		if e.redis() {
			fields, err := e.rdb.HKeys(ctx, e.prefix+"blocks").Result()
			require.NoError(t, err)
			assert.ElementsMatch(t, []string{"203.0.0.0/16", "203.0.113.7", "version"}, fields)
		}
		assert.Equal(t, want, stats(t, b).Blocked)
	})
}

func TestRedisAuthBlocklistLookups(t *testing.T) {
	forEachAuthEnv(t, true, func(t *testing.T, e *authEnv) {
		ctx := context.Background()
		a := e.node(AuthOptions{})
		for _, b := range []struct {
			addr, reason string
			ttl          time.Duration
		}{
			{"10.0.0.0/8", "replaced below", time.Hour},
			{"10.0.0.0/8", "wide", 0},
			{"10.1.0.0/16", "narrow", 0},
			{"10.1.2.3", "single", 0},
			{"2001:db8::/32", "v6 range", 0},
			{"2001:db8:1:2::/64", "v6 subnet", time.Hour},
			{"2001:DB8::7", "v6 single", 0},
			{"::ffff:192.0.2.0/120", "mapped range", 0},
		} {
			require.NoError(t, a.BlockIP(ctx, b.addr, b.reason, b.ttl), b.addr)
		}
		for _, tt := range []struct {
			ip, reason string
			blocked    bool
		}{
			{"10.1.2.3", "single", true},
			{"10.1.9.9", "narrow", true},
			{"10.200.0.1", "wide", true},
			{"::ffff:10.1.2.3", "single", true},
			{"11.0.0.1", "", false},
			{"2001:db8:1:2::99", "v6 subnet", true},
			{"2001:db8:ffff::1", "v6 range", true},
			{"2001:db8::7", "v6 single", true},
			{"2001:db9::1", "", false},
			{"192.0.2.200", "mapped range", true},
		} {
			reason, blocked, err := a.BlockedReason(ctx, tt.ip)
			require.NoError(t, err)
			assert.Equal(t, tt.blocked, blocked, tt.ip)
			assert.Equal(t, tt.reason, reason, tt.ip)
		}
		e.clk.Advance(time.Hour)
		reason, _, err := a.BlockedReason(ctx, "2001:db8:1:2::1")
		require.NoError(t, err)
		assert.Equal(t, "v6 range", reason, "expired /64 falls back to /32")
		ok, err := a.UnblockIP(ctx, "2001:db8:0:0:0:0:0:7")
		require.NoError(t, err)
		assert.True(t, ok)
		_, blocked, err := a.BlockedReason(ctx, "2001:db8::7")
		require.NoError(t, err)
		assert.True(t, blocked, "the /32 still holds")
	})
}

func TestRedisAuthCheckConnectOrder(t *testing.T) {
	forEachAuthEnv(t, true, func(t *testing.T, e *authEnv) {
		ctx := context.Background()
		verifier := func(_ context.Context, token string) (string, error) {
			if token == "good" {
				return "u42", nil
			}
			return "", assert.AnError
		}
		opts := AuthOptions{MaxConnectionsPerIP: 1, TokenVerifier: verifier}
		a, b := e.node(opts), e.node(opts)
		require.NoError(t, a.BlockIP(ctx, "198.51.100.1", "abuse", 0))
		_, err := a.CheckConnect(ctx, "filler", "198.51.100.2", "good")
		require.NoError(t, err)
		e.clk.Advance(time.Second) // past B's cache TTL
		for _, tt := range []struct {
			addr, token string
			code        Code
		}{
			{"198.51.100.1", "", CodeIPBlocked},
			{"198.51.100.1", "good", CodeIPBlocked},
			{"198.51.100.2", "bad", CodeUnauthorized},
			{"198.51.100.2", "good", CodeTooManyConnections},
			{"198.51.100.3", "good", ""},
		} {
			user, err := b.CheckConnect(ctx, "s-"+tt.addr+tt.token, tt.addr, tt.token)
			if tt.code == "" {
				require.NoError(t, err)
				assert.Equal(t, "u42", user)
				continue
			}
			requireCode(t, err, tt.code)
		}
	})
}

func TestRedisAuthConnectionStats(t *testing.T) {
	forEachAuthEnv(t, true, func(t *testing.T, e *authEnv) {
		ctx := context.Background()
		a, b := e.node(AuthOptions{MaxConnectionsPerIP: 1}), e.node(AuthOptions{MaxConnectionsPerIP: 1})
		require.NoError(t, a.BlockIP(ctx, "10.0.0.0/8", "range", 0))
		require.NoError(t, a.BlockIP(ctx, "2001:db8::1", "v6", time.Hour))
		require.NoError(t, a.BlockIP(ctx, "192.0.2.9", "gone soon", time.Second))
		for i, addr := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.2", "2001:db8::2", "10.1.1.1"} {
			_, _ = []*Auth{a, b}[i%2].CheckConnect(ctx, "k"+strconv.Itoa(i), addr, "")
		}
		e.clk.Advance(time.Second)
		for _, n := range []*Auth{a, b} {
			st := stats(t, n)
			assert.Equal(t, 3, st.Total)
			assert.Equal(t, map[string]int{"192.0.2.1": 1, "192.0.2.2": 1, "2001:db8::2": 1}, st.PerAddress)
			require.Len(t, st.Blocked, 2)
			assert.Equal(t, BlockedAddress{Addr: "10.0.0.0/8", Reason: "range"}, st.Blocked[0])
			assert.Equal(t, "2001:db8::1", st.Blocked[1].Addr)
			assert.True(t, st.Blocked[1].Expires.Equal(time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC)), st.Blocked[1].Expires)
		}
		assert.EqualValues(t, 1, stats(t, a).Refusals[CodeIPBlocked]+stats(t, b).Refusals[CodeIPBlocked])
		assert.EqualValues(t, 1, stats(t, a).Refusals[CodeTooManyConnections]+stats(t, b).Refusals[CodeTooManyConnections])
	})
}

// TestRedisAuthRateLimitConcurrent races 200 questions on two nodes. When
// one window binds, exactly its limit is accepted. When both bind, neither
// is exceeded; the Redis state may then accept fewer (a question the
// session refused holds an address place until it is taken back; see
// redisAuthState).
func TestRedisAuthRateLimitConcurrent(t *testing.T) {
	forEachAuthEnv(t, true, func(t *testing.T, e *authEnv) {
		tests := []struct {
			name    string
			perIP   int
			session func(i int) string
			addr    string
			want    int64
			exact   bool
		}{
			{"one session", 1000, func(int) string { return "s" }, "192.0.2.77", 5, true},
			{"many sessions, one address", 60, func(i int) string { return "m" + strconv.Itoa(i) }, "192.0.2.78", 60, true},
			{"both bind", 60, func(i int) string { return "b" + strconv.Itoa(i%20) }, "192.0.2.79", 60, false},
		}
		for _, tt := range tests {
			opts := AuthOptions{MaxQuestionsPerMinutePerIP: tt.perIP}
			nodes := []*Auth{e.node(opts), e.node(opts)}
			var ok atomic.Int64
			perSession := make([]atomic.Int64, 200)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range 200 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					_, err := nodes[i%2].ReserveQuestion(context.Background(), tt.session(i), tt.addr)
					if err == nil {
						ok.Add(1)
						if tt.name == "both bind" {
							perSession[i%20].Add(1)
						}
						return
					}
					ee := requireCode(t, err, CodeRateLimited)
					assert.Greater(t, ee.RetryAfter, time.Duration(0))
					assert.LessOrEqual(t, ee.RetryAfter, time.Minute)
				}()
			}
			close(start)
			wg.Wait()
			if tt.exact || e.kind == "memory" {
				assert.Equal(t, tt.want, ok.Load(), tt.name)
			} else {
				assert.LessOrEqual(t, ok.Load(), tt.want, tt.name)
				assert.Positive(t, ok.Load(), tt.name)
			}
			for i := range perSession {
				assert.LessOrEqual(t, perSession[i].Load(), int64(5), "%s: session %d", tt.name, i)
			}
		}
	})
}

func TestRedisAuthRateLimitWindow(t *testing.T) {
	forEachAuthEnv(t, true, func(t *testing.T, e *authEnv) {
		ctx := context.Background()
		nodes := []*Auth{e.node(AuthOptions{}), e.node(AuthOptions{})}
		const addr = "203.0.113.1"
		for i := range 5 { // at 0s, 10s, … 40s, alternating nodes
			_, err := nodes[i%2].ReserveQuestion(ctx, "s1", addr)
			require.NoError(t, err)
			e.clk.Advance(10 * time.Second)
		}
		steps := []struct {
			advance   time.Duration // before the attempt
			ok        bool
			wantRetry time.Duration
		}{
			{0, false, 10 * time.Second}, // at 50s: the 0s record leaves at 60s
			{9 * time.Second, false, time.Second},
			// Redis keeps microseconds, the finest a score holds exactly.
			{time.Second - time.Microsecond, false, time.Microsecond},
			{time.Microsecond, true, 0},  // at 60s: exactly one slot
			{0, false, 10 * time.Second}, // refusals did not count
			{10 * time.Second, true, 0},  // at 70s
			{5 * time.Second, false, 5 * time.Second},
		}
		for i, st := range steps {
			e.clk.Advance(st.advance)
			release, err := nodes[i%2].ReserveQuestion(ctx, "s1", addr)
			if st.ok {
				require.NoError(t, err, "step %d", i)
				require.NotNil(t, release)
				continue
			}
			ee := requireCode(t, err, CodeRateLimited)
			assert.Nil(t, release)
			assert.Equal(t, st.wantRetry, ee.RetryAfter, "step %d", i)
		}
	})
}

func TestRedisAuthRateLimitPerAddress(t *testing.T) {
	forEachAuthEnv(t, true, func(t *testing.T, e *authEnv) {
		ctx := context.Background()
		opts := AuthOptions{MaxQuestionsPerMinute: 2, MaxQuestionsPerMinutePerIP: 3}
		a, b := e.node(opts), e.node(opts)
		const ip = "198.51.100.4"
		ask := func(n *Auth, session, addr string) error {
			_, err := n.ReserveQuestion(ctx, session, addr)
			return err
		}
		require.NoError(t, ask(a, "A", ip)) // 0s
		e.clk.Advance(10 * time.Second)
		require.NoError(t, ask(b, "B", ip)) // 10s
		e.clk.Advance(10 * time.Second)
		require.NoError(t, ask(a, "B", "::ffff:"+ip)) // 20s
		e.clk.Advance(10 * time.Second)               // 30s
		for _, tt := range []struct {
			name     string
			node     *Auth
			session  string
			addr     string
			code     Code
			retry    time.Duration
			sessions int // questions the session window holds after
		}{
			{"address limit across sessions and nodes", b, "A", ip, CodeRateLimited, 30 * time.Second, 1},
			{"new session, same address", a, "C", ip, CodeRateLimited, 30 * time.Second, 0},
			{"retry is max over both", b, "B", ip, CodeRateLimited, 40 * time.Second, 2},
			{"other address", a, "D", "198.51.100.5", "", 0, 1},
		} {
			err := ask(tt.node, tt.session, tt.addr)
			if tt.code == "" {
				require.NoError(t, err, tt.name)
			} else {
				ee := requireCode(t, err, tt.code)
				assert.Equal(t, tt.retry, ee.RetryAfter, tt.name)
			}
			if e.redis() { // a refusal leaves nothing behind
				n, err := e.rdb.ZCard(ctx, e.prefix+"rq:s:{"+tt.session+"}").Result()
				require.NoError(t, err)
				assert.EqualValues(t, tt.sessions, n, tt.name)
			}
		}
		e.clk.Advance(30 * time.Second) // 60s: A's record left
		require.NoError(t, ask(b, "C", ip))
	})
}

func TestRedisAuthRateLimitRelease(t *testing.T) {
	forEachAuthEnv(t, true, func(t *testing.T, e *authEnv) {
		ctx := context.Background()
		opts := AuthOptions{MaxQuestionsPerMinute: 2}
		a, b := e.node(opts), e.node(opts)
		const addr = "203.0.113.1"
		r1, err := a.ReserveQuestion(ctx, "s1", addr)
		require.NoError(t, err)
		e.clk.Advance(time.Second)
		r2, err := b.ReserveQuestion(ctx, "s1", addr)
		require.NoError(t, err)
		_, err = a.ReserveQuestion(ctx, "s1", addr)
		requireCode(t, err, CodeRateLimited)

		// Releasing the newer record frees exactly its slot, on both nodes.
		r2()
		r2()
		r3, err := a.ReserveQuestion(ctx, "s1", addr)
		require.NoError(t, err)
		_, err = b.ReserveQuestion(ctx, "s1", addr)
		ee := requireCode(t, err, CodeRateLimited)
		assert.Equal(t, 59*time.Second, ee.RetryAfter)
		r1()
		r3()
		if e.redis() {
			for _, k := range []string{"rq:s:{s1}", "rq:a:{" + addr + "}"} {
				n, err := e.rdb.ZCard(ctx, e.prefix+k).Result()
				require.NoError(t, err)
				assert.Zero(t, n, k)
			}
		}
	})
}

// TestRedisAuthRoundTrips pins the cost of each operation on one server
// (on a Cluster, a script may first have to be loaded on another node).
func TestRedisAuthRoundTrips(t *testing.T) {
	forEachAuthEnvOf(t, []string{"miniredis", "redis", "sentinel"}, func(t *testing.T, e *authEnv) {
		ctx := context.Background()
		a := e.node(AuthOptions{MaxQuestionsPerMinute: 1, LeaseTTL: time.Hour})
		// Warm up: load the scripts, fill the blocklist cache.
		_, err := a.CheckConnect(ctx, "w", "192.0.2.1", "")
		require.NoError(t, err)
		r, err := a.ReserveQuestion(ctx, "w", "192.0.2.1")
		require.NoError(t, err)
		r()
		a.sweep()

		for _, tt := range []struct {
			name string
			want int64
			f    func()
		}{
			{"CheckConnect, cache fresh", 1, func() { _, err := a.CheckConnect(ctx, "s1", "192.0.2.2", ""); require.NoError(t, err) }},
			{"CheckConnect, cache stale", 1, func() {
				e.clk.Advance(time.Second)
				_, err := a.CheckConnect(ctx, "s2", "192.0.2.2", "")
				require.NoError(t, err)
			}},
			{"ReleaseConnection", 1, func() { a.ReleaseConnection(ctx, "s1") }},
			{"BlockedReason, cache fresh", 0, func() { _, _, err := a.BlockedReason(ctx, "192.0.2.3"); require.NoError(t, err) }},
			{"ReserveQuestion", 1, func() { r, err = a.ReserveQuestion(ctx, "q", "192.0.2.2"); require.NoError(t, err) }},
			{"ReserveQuestion refused by both", 1, func() {
				b := e.node(AuthOptions{MaxQuestionsPerMinute: 1, MaxQuestionsPerMinutePerIP: 1, LeaseTTL: time.Hour})
				_, err := b.ReserveQuestion(ctx, "q", "192.0.2.2")
				requireCode(t, err, CodeRateLimited)
			}},
			{"ReserveQuestion refused by one: the half recorded is taken back", 2, func() {
				_, err := a.ReserveQuestion(ctx, "q", "192.0.2.9")
				requireCode(t, err, CodeRateLimited)
			}},
			{"release", 1, func() { r() }},
			{"BlockIP", 1, func() { require.NoError(t, a.BlockIP(ctx, "198.51.100.0/24", "x", 0)) }},
			{"CheckConnect blocked by own block", 0, func() {
				_, err := a.CheckConnect(ctx, "s3", "198.51.100.1", "")
				requireCode(t, err, CodeIPBlocked)
			}},
			{"UnblockIP", 1, func() { _, err := a.UnblockIP(ctx, "198.51.100.0/24"); require.NoError(t, err) }},
			{"sweep", 1, func() { a.sweep() }},
		} {
			assert.Equal(t, tt.want, e.tripsOf(tt.f), tt.name)
		}
	})
}

// TestRedisAuthBlockedWhileStale checks that a connect from an address
// blocked elsewhere, made when the cache is stale, is refused and leaves no
// slot behind.
func TestRedisAuthBlockedWhileStale(t *testing.T) {
	forEachAuthEnv(t, false, func(t *testing.T, e *authEnv) {
		ctx := context.Background()
		a, b := e.node(AuthOptions{}), e.node(AuthOptions{})
		_, _, err := b.BlockedReason(ctx, "192.0.2.1")
		require.NoError(t, err)
		require.NoError(t, a.BlockIP(ctx, "192.0.2.1", "x", 0))
		e.clk.Advance(time.Second)
		_, err = b.CheckConnect(ctx, "s", "192.0.2.1", "")
		requireCode(t, err, CodeIPBlocked)
		assert.Empty(t, stats(t, a).PerAddress)
	})
}

func TestRedisAuthUnavailable(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	defer goleak.VerifyNone(t, ignore)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := l.Addr().String()
	require.NoError(t, l.Close())

	mr := miniredis.NewMiniRedis()
	require.NoError(t, mr.Start())
	defer func() {
		if mr != nil {
			mr.Close()
		}
	}()
	dying := redis.NewClient(&redis.Options{Addr: mr.Addr(), DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, MaxRetries: -1, DialerRetries: 1})

	for _, tt := range []struct {
		name string
		rdb  *redis.Client
	}{
		{"closed port", redis.NewClient(&redis.Options{Addr: closed, DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, MaxRetries: -1, DialerRetries: 1})},
		{"server gone", dying},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ok := func(context.Context, string) (string, error) { return "u", nil }
			for _, verifier := range []func(context.Context, string) (string, error){nil, ok} {
				a, err := NewAuth(AuthOptions{Redis: tt.rdb, TokenVerifier: verifier, Logger: slog.New(slog.DiscardHandler)})
				require.NoError(t, err)
				ctx := context.Background()
				if tt.rdb == dying && mr != nil {
					_, err := a.CheckConnect(ctx, "k0", "192.0.2.1", "t")
					require.NoError(t, err, "works while the server is up")
					mr.Close()
					mr = nil
				}
				start := time.Now()
				_, err = a.CheckConnect(ctx, "k", "192.0.2.1", "t")
				requireCode(t, err, CodeUnavailable)
				_, err = a.ReserveQuestion(ctx, "s", "192.0.2.1")
				requireCode(t, err, CodeUnavailable)
				assert.Less(t, time.Since(start), 2*time.Second)
				assert.ErrorIs(t, a.BlockIP(ctx, "192.0.2.1", "", 0), ErrUnavailable)
				_, err = a.UnblockIP(ctx, "192.0.2.1")
				assert.ErrorIs(t, err, ErrUnavailable)
				_, _, err = a.BlockedReason(ctx, "192.0.2.9")
				assert.ErrorIs(t, err, ErrUnavailable)
				a.ReleaseConnection(ctx, "k0") // logged, no panic
				a.sweep()
				st, err := a.ConnectionStats(ctx)
				assert.ErrorIs(t, err, ErrUnavailable)
				assert.NotNil(t, st.PerAddress)
				assert.EqualValues(t, 1, st.Refusals[CodeUnavailable])
				require.NoError(t, a.Close())
			}
			require.NoError(t, tt.rdb.Close())
		})
	}
}

func TestRedisAuthNewAuth(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	defer goleak.VerifyNone(t, ignore)

	mr := miniredis.NewMiniRedis()
	require.NoError(t, mr.Start())
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	a, err := NewAuth(AuthOptions{Redis: rdb, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	o := a.Options()
	assert.Equal(t, "qa:", o.RedisPrefix)
	assert.Equal(t, 30*time.Second, o.LeaseTTL)
	assert.Equal(t, time.Second, o.BlocklistCacheTTL)
	st, ok := a.st().(*redisAuthState)
	require.True(t, ok, "Redis set: the Redis state")
	assert.Equal(t, "qa:", st.prefix)
	_, err = a.CheckConnect(context.Background(), "s", "192.0.2.1", "")
	require.NoError(t, err)
	assert.True(t, mr.Exists("qa:conn:{192.0.2.1}"))
	require.NoError(t, a.Close()) // stops the sweeper and the refresher, releases
	require.NoError(t, a.Close())
	members, _ := mr.ZMembers("qa:conn:{192.0.2.1}")
	assert.Empty(t, members)

	m, err := NewAuth(AuthOptions{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	_, ok = m.st().(*memoryAuthState)
	assert.True(t, ok, "no Redis: the memory state")
	require.NoError(t, m.Close())
}

// BenchmarkRedisAuth measures the Redis state against a real Redis
// (REDIS_URL), reporting the round trips each operation costs.
func BenchmarkRedisAuth(b *testing.B) {
	opts := realRedisOptions(b)
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	trips := &roundTripCounter{}
	rdb.AddHook(trips)
	prefix := "qa-bench:" + rand.Text()[:12] + ":"
	defer deleteKeys(b, rdb, prefix)
	a, err := NewAuth(AuthOptions{
		Redis: rdb, RedisPrefix: prefix, MaxConnectionsPerIP: 1 << 30,
		MaxQuestionsPerMinute: 1 << 30, MaxQuestionsPerMinutePerIP: 1 << 30,
		Logger: slog.New(slog.DiscardHandler),
	})
	require.NoError(b, err)
	defer a.Close()
	ctx := context.Background()
	require.NoError(b, a.BlockIP(ctx, "10.0.0.0/8", "range", 0))

	run := func(b *testing.B, op func(i int64) error) {
		var n atomic.Int64
		before := trips.n.Load()
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := n.Add(1)
			for pb.Next() {
				if err := op(i); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(trips.n.Load()-before)/float64(b.N), "round-trips/op")
	}
	b.Run("CheckConnect+Release", func(b *testing.B) {
		run(b, func(i int64) error {
			id := "sock" + strconv.FormatInt(i, 10)
			if _, err := a.CheckConnect(ctx, id, "203.0.113."+strconv.FormatInt(i%250, 10), ""); err != nil {
				return err
			}
			a.ReleaseConnection(ctx, id)
			return nil
		})
	})
	b.Run("ReserveQuestion", func(b *testing.B) {
		run(b, func(i int64) error {
			_, err := a.ReserveQuestion(ctx, "s"+strconv.FormatInt(i, 10), "203.0.113."+strconv.FormatInt(i%250, 10))
			return err
		})
	})
}

// TestRedisAuthRateLimitOnCluster runs the question limits through a
// ClusterClient (on miniredis), where the two windows are two scripts and
// a half-recorded question is taken back.
func TestRedisAuthRateLimitOnCluster(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{mr.Addr()}})
	t.Cleanup(func() { rdb.Close() })
	clk := &authTestClock{t: time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)}
	st := newRedisAuthState(rdb, redisAuthConfig{prefix: "qa:", now: clk.Now, logger: slog.New(slog.DiscardHandler)})
	a, err := newAuth(AuthOptions{MaxQuestionsPerMinute: 2, MaxQuestionsPerMinutePerIP: 3, Logger: slog.New(slog.DiscardHandler)},
		authConfig{now: clk.Now, sweepEvery: -1, state: st})
	require.NoError(t, err)
	t.Cleanup(func() { a.Close() })
	ctx := context.Background()

	for range 2 {
		_, err := a.ReserveQuestion(ctx, "s1", "192.0.2.1")
		require.NoError(t, err)
	}
	_, err = a.ReserveQuestion(ctx, "s1", "192.0.2.1")
	e := requireCode(t, err, CodeRateLimited)
	assert.Equal(t, time.Minute, e.RetryAfter, "the session's oldest question leaves the window in a minute")

	// The address has one place left: s2 takes it; s3 is refused by the
	// address alone, and what it recorded in its own window is taken back.
	_, err = a.ReserveQuestion(ctx, "s2", "192.0.2.1")
	require.NoError(t, err)
	_, err = a.ReserveQuestion(ctx, "s3", "192.0.2.1")
	requireCode(t, err, CodeRateLimited)
	_, err = a.ReserveQuestion(ctx, "s3", "192.0.2.2")
	require.NoError(t, err)
	_, err = a.ReserveQuestion(ctx, "s3", "192.0.2.2")
	require.NoError(t, err, "the refused question did not use s3's budget of 2")
}
