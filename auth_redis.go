package socketio

import (
	"cmp"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/qaplatform/socketio/internal/redistopo"
)

var _ authState = (*redisAuthState)(nil)

// The scripts of the Redis auth state. Each touches exactly one key, so each
// runs in one slot of a Cluster, and on one shard of a Ring, whatever the
// key names and whatever the client.
var (
	//go:embed redis/auth_conn_acquire.lua
	connAcquireLua    string
	connAcquireScript = redis.NewScript(connAcquireLua)

	//go:embed redis/auth_conn_renew.lua
	connRenewLua    string
	connRenewScript = redis.NewScript(connRenewLua)

	//go:embed redis/auth_rate_reserve.lua
	rateReserveLua    string
	rateReserveScript = redis.NewScript(rateReserveLua)

	//go:embed redis/auth_blocks_fetch.lua
	blocksFetchLua    string
	blocksFetchScript = redis.NewScript(blocksFetchLua)

	//go:embed redis/auth_blocks_sweep.lua
	blocksSweepLua    string
	blocksSweepScript = redis.NewScript(blocksSweepLua)
)

const (
	// blocksVersionField is the reserved field of the blocklist hash that
	// every change increments; no address or CIDR can be spelled so.
	blocksVersionField = "version"
	// redisCleanupTimeout bounds the best-effort writes made outside a
	// caller's request: compensations, question releases, the release of
	// this node's slots on close.
	redisCleanupTimeout = 2 * time.Second
	// renewBatch is how many members one pipeline of the lease refresher
	// renews at most.
	renewBatch = 512
	// maxStatsKeys bounds the connection keys one stats call reads.
	maxStatsKeys = 10000
)

// redisAuthState is the authState shared by every node that uses the same
// Redis and key prefix. Each method costs one round trip, except where its
// comment says otherwise.
//
// Key layout (p is the prefix; a {…} part is a Cluster hash tag):
//
//	p+"conn:{<addr>}"     zset, member "<node>|<socket>", score = lease expiry (Unix ms)
//	p+"rq:s:{<session>}"  zset, member = record id, score = acceptance time (Unix µs)
//	p+"rq:a:{<addr>}"     zset, the same for an address
//	p+"blocks"            hash, field = address or CIDR, value = JSON
//	                      {"reason","expires_ms"}; field "version" counts changes
//
// Every script touches one key, and block/unblock are a MULTI on one key,
// so nothing needs two keys in one slot.
//
// Times are the callers' (Auth's clock), not Redis's TIME: the authState
// contract passes now, so one injectable clock decides everything (tests
// drive windows, leases and cache ages with it), and nodes do not depend on
// one Redis server's clock. Nodes' clocks must agree (NTP): a skew of d
// moves window and lease edges by up to d.
//
// Consistency:
//   - Connection slots are exact across nodes: one script checks and takes
//     a slot. A slot is a lease that this node renews every LeaseTTL/3; the
//     slots of a node that dies without releasing lapse after LeaseTTL. A
//     renewal writes back the slots of this node's open sockets that are
//     missing (Redis restarted empty, a key was evicted, or the node was
//     cut off for longer than LeaseTTL), since those connections still
//     count: until then, they do not count, and after it an address may be
//     over its limit (acquires refuse until enough connections close).
//   - The blocklist is read through a per-node cache: a block or unblock
//     takes effect at once on the node that made it and within
//     BlocklistCacheTTL on the others.
//   - Question limits are never exceeded: each window is checked and added
//     to atomically by one script. The session and address windows live in
//     different slots, so a question takes two scripts, sent in one
//     pipeline; when exactly one accepts, its record is removed in a second
//     round trip. Until then that record holds a place: a concurrent
//     question that finds the window exactly full may be refused (with a
//     RetryAfter up to the window) although one atomic check over both
//     windows would have accepted it. (Tagging the session key by address
//     would put both windows in one slot, but a session that changes
//     address would then get a fresh window per address.) If a request
//     fails after its scripts ran (a timeout), its records stay and count
//     until they leave the window: failures err towards refusing.
type redisAuthState struct {
	rdb      redis.UniversalClient
	prefix   string
	node     string // random per state, so that nodes never share a member
	leaseTTL time.Duration
	cacheTTL time.Duration
	now      func() time.Time
	logger   *slog.Logger

	renewEvery  time.Duration // how often the leases are renewed: LeaseTTL/3
	afterRenew  func()        // test hook, called after each background renewal
	duringRenew func()        // test hook, called once a renewal has read this node's slots

	// blocks is the blocklist cache; nil means none or invalidated.
	// blocksGen counts invalidations: a fetch started before one must not
	// store its (older) result.
	blocks    atomic.Pointer[blockSnapshot]
	blocksMu  sync.Mutex
	blocksGen uint64

	connMu sync.Mutex
	conns  map[string]string // this node's slots: socket id → address

	seq atomic.Uint64 // question record ids

	stopOnce  sync.Once
	closeOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
}

// redisAuthConfig configures a redisAuthState; zero fields take the
// AuthOptions defaults.
type redisAuthConfig struct {
	prefix      string           // default "qa:"
	leaseTTL    time.Duration    // default 30s
	cacheTTL    time.Duration    // default 1s
	now         func() time.Time // default time.Now
	logger      *slog.Logger     // default slog.Default()
	renewEvery  time.Duration    // default leaseTTL/3 (tests shorten it)
	afterRenew  func()
	duringRenew func()
}

// newRedisAuthState returns a state over rdb and starts its lease
// refresher; close stops it.
func newRedisAuthState(rdb redis.UniversalClient, cfg redisAuthConfig) *redisAuthState {
	if cfg.prefix == "" {
		cfg.prefix = "qa:"
	}
	if cfg.leaseTTL <= 0 {
		cfg.leaseTTL = 30 * time.Second
	}
	if cfg.cacheTTL <= 0 {
		cfg.cacheTTL = time.Second
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	if cfg.renewEvery <= 0 {
		cfg.renewEvery = max(cfg.leaseTTL/3, time.Millisecond)
	}
	r := &redisAuthState{
		rdb:         rdb,
		prefix:      cfg.prefix,
		node:        rand.Text(),
		leaseTTL:    cfg.leaseTTL,
		cacheTTL:    cfg.cacheTTL,
		now:         cfg.now,
		logger:      cfg.logger,
		renewEvery:  cfg.renewEvery,
		afterRenew:  cfg.afterRenew,
		duringRenew: cfg.duringRenew,
		conns:       map[string]string{},
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
	}
	go r.renewLoop()
	return r
}

func (r *redisAuthState) connKey(addr string) string { return r.prefix + "conn:{" + addr + "}" }
func (r *redisAuthState) sessionRateKey(session string) string {
	return r.prefix + "rq:s:{" + session + "}"
}
func (r *redisAuthState) addrRateKey(addr string) string { return r.prefix + "rq:a:{" + addr + "}" }
func (r *redisAuthState) blocksKey() string              { return r.prefix + "blocks" }
func (r *redisAuthState) member(socketID string) string  { return r.node + "|" + socketID }

// connKeyTTL is how long a connection key outlives its last renewal: twice
// the lease, so that a lease scored by a clock slightly ahead of Redis's is
// not lost with its key.
func (r *redisAuthState) connKeyTTL() time.Duration { return 2 * r.leaseTTL }

// Connections.

// acquireConn checks the blocklist, then takes a slot with one script.
//
// The blocklist check uses this node's cache, so a block made on another
// node refuses here only once the cache has been refreshed: within
// BlocklistCacheTTL. When the cache is stale, the refresh goes in the same
// pipeline as the acquire (still one round trip); if the fresh blocklist
// then refuses, the slot just taken is given back in a second round trip.
func (r *redisAuthState) acquireConn(ctx context.Context, socketID, addr string, limit int, now time.Time) error {
	r.connMu.Lock()
	old, had := r.conns[socketID]
	r.connMu.Unlock()
	if had && old != addr {
		// The socket moves to another address (the memory state allows
		// it): give the old slot back first, in its own round trip.
		if err := r.releaseConn(ctx, socketID); err != nil {
			return err
		}
	}

	ip, isIP := parseIP(addr)
	snap := r.blocks.Load()
	acquire := &scriptCall{
		script: connAcquireScript,
		keys:   []string{r.connKey(addr)},
		args: []any{
			now.UnixMilli(), now.Add(r.leaseTTL).UnixMilli(), r.member(socketID),
			limit, r.connKeyTTL().Milliseconds(),
		},
	}
	var fetch *scriptCall
	if isIP && snap.fresh(now, r.cacheTTL) {
		if reason, blocked := snap.lookup(ip, now); blocked {
			return blockedError(reason)
		}
		r.runScripts(ctx, acquire)
	} else if isIP {
		gen := r.generation()
		fetch = r.fetchCall(snap)
		r.runScripts(ctx, fetch, acquire)
		fresh, err := r.applyFetch(snap, fetch.cmd, now, gen)
		if err != nil {
			if res, aerr := acquire.cmd.Int64(); aerr == nil && res == 0 {
				r.giveBack(ctx, addr, socketID)
			}
			return err
		}
		snap = fresh
	} else {
		r.runScripts(ctx, acquire)
	}

	res, err := acquire.cmd.Int64()
	if err != nil {
		// The script may have run: a slot taken unknown to this node lapses
		// with its lease, as it is not renewed.
		return err
	}
	if fetch != nil {
		if reason, blocked := snap.lookup(ip, now); blocked {
			if res == 0 {
				r.giveBack(ctx, addr, socketID)
			}
			return blockedError(reason)
		}
	}
	if res < 0 {
		return &Error{Code: CodeTooManyConnections, Message: fmt.Sprintf("at most %d connections per address", limit)}
	}
	r.connMu.Lock()
	r.conns[socketID] = addr
	r.connMu.Unlock()
	return nil
}

// giveBack removes a slot this call just took, best effort: if it fails,
// the lease lapses on its own.
func (r *redisAuthState) giveBack(ctx context.Context, addr, socketID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisCleanupTimeout)
	defer cancel()
	if err := r.rdb.ZRem(ctx, r.connKey(addr), r.member(socketID)).Err(); err != nil {
		r.logger.Warn("socketio: giving back a connection slot failed", "addr", addr, "err", err)
	}
}

// releaseConn forgets the slot locally, then removes it. If the removal
// fails, the slot lapses after LeaseTTL, as it is no longer renewed.
func (r *redisAuthState) releaseConn(ctx context.Context, socketID string) error {
	r.connMu.Lock()
	addr, ok := r.conns[socketID]
	delete(r.conns, socketID)
	r.connMu.Unlock()
	if !ok {
		return nil
	}
	return r.rdb.ZRem(ctx, r.connKey(addr), r.member(socketID)).Err()
}

// renewLoop renews this node's leases every LeaseTTL/3 until stop.
func (r *redisAuthState) renewLoop() {
	defer close(r.done)
	t := time.NewTicker(r.renewEvery)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.renewLeases()
			if r.afterRenew != nil {
				r.afterRenew()
			}
		}
	}
}

// renewLeases renews every slot this node holds: one renew script per
// address, sent in pipelines of at most renewBatch members. A slot missing
// from Redis (lost with its data, or dropped after its lease lapsed) is
// written back: its connection is still open and counts. A socket released
// while its renewal was in flight may have been written back after its
// release; such slots are removed again at the end.
func (r *redisAuthState) renewLeases() {
	r.connMu.Lock()
	held := maps.Clone(r.conns)
	r.connMu.Unlock()
	if len(held) == 0 {
		return
	}
	if r.duringRenew != nil {
		r.duringRenew()
	}
	byAddr := make(map[string][]string, len(held))
	for socketID, addr := range held {
		byAddr[addr] = append(byAddr[addr], r.member(socketID))
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.leaseTTL/3)
	defer cancel()
	expiry := r.now().Add(r.leaseTTL).UnixMilli()
	ttl := r.connKeyTTL().Milliseconds()

	var batch []*scriptCall
	size, restored := 0, int64(0)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		r.runScripts(ctx, batch...)
		for _, c := range batch {
			n, err := c.cmd.Int64()
			if err != nil {
				r.logger.Warn("socketio: renewing connection leases failed", "err", err)
				break
			}
			restored += n
		}
		batch, size = batch[:0], 0
	}
	for addr, members := range byAddr {
		for chunk := range slices.Chunk(members, renewBatch) {
			args := make([]any, 0, 2+len(chunk))
			args = append(args, expiry, ttl)
			for _, m := range chunk {
				args = append(args, m)
			}
			batch = append(batch, &scriptCall{script: connRenewScript, keys: []string{r.connKey(addr)}, args: args})
			if size += len(chunk); size >= renewBatch {
				flush()
			}
		}
	}
	flush()
	if restored > 0 {
		r.logger.Info("socketio: re-created connection leases missing from Redis", "slots", restored)
	}

	// Slots released (or moved) while the renewal ran.
	r.connMu.Lock()
	var gone []string
	for socketID, addr := range held {
		if now, ok := r.conns[socketID]; !ok || now != addr {
			gone = append(gone, socketID)
		}
	}
	r.connMu.Unlock()
	if len(gone) == 0 {
		return
	}
	pipe := r.rdb.Pipeline()
	for _, socketID := range gone {
		pipe.ZRem(ctx, r.connKey(held[socketID]), r.member(socketID))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		r.logger.Warn("socketio: removing connection slots released during renewal failed", "err", err)
	}
}

// stopRenewing stops the lease refresher and waits for it to exit.
func (r *redisAuthState) stopRenewing() {
	r.stopOnce.Do(func() { close(r.stop) })
	<-r.done
}

// close stops the lease refresher, then releases this node's slots, best
// effort and within redisCleanupTimeout (slots it fails to release lapse
// after LeaseTTL). It is idempotent. The state keeps answering after close,
// but slots taken then are not renewed.
func (r *redisAuthState) close() {
	r.closeOnce.Do(func() {
		r.stopRenewing()
		r.connMu.Lock()
		conns := r.conns
		r.conns = map[string]string{}
		r.connMu.Unlock()
		if len(conns) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), redisCleanupTimeout)
		defer cancel()
		pipe := r.rdb.Pipeline()
		for socketID, addr := range conns {
			pipe.ZRem(ctx, r.connKey(addr), r.member(socketID))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			r.logger.Warn("socketio: releasing connection slots on close failed", "slots", len(conns), "err", err)
		}
	})
}

// Question windows.

// reserveQuestion runs the reserve script on the session window and on the
// address window in one pipeline. When exactly one accepts, a second round
// trip removes its record; see redisAuthState for what that implies.
func (r *redisAuthState) reserveQuestion(ctx context.Context, sessionID, addr string, lim questionLimits, now time.Time) (func(), error) {
	id := r.node + ":" + strconv.FormatUint(r.seq.Add(1), 36)
	nowUS := now.UnixMicro()
	// Round the window up to whole µs: never shorter than asked.
	winUS := int64((lim.window + time.Microsecond - 1) / time.Microsecond)
	ttl := max((2 * lim.window).Milliseconds(), 1000)
	sessKey, addrKey := r.sessionRateKey(sessionID), r.addrRateKey(addr)
	// The two windows live in different slots (shards of a Ring): two
	// scripts in one pipeline, and the half recorded taken back when the
	// other refused. Never over a limit, but a question racing that
	// take-back may be refused while a window has room.
	sess := &scriptCall{script: rateReserveScript, keys: []string{sessKey}, args: []any{nowUS, nowUS - winUS, lim.perSession, id, ttl}}
	adr := &scriptCall{script: rateReserveScript, keys: []string{addrKey}, args: []any{nowUS, nowUS - winUS, lim.perAddr, id, ttl}}
	r.runScripts(ctx, sess, adr)

	sOK, sWait, sErr := reserveResult(sess.cmd, nowUS, winUS)
	aOK, aWait, aErr := reserveResult(adr.cmd, nowUS, winUS)
	if sOK && aOK {
		var once sync.Once
		return func() {
			once.Do(func() { r.removeRecords(context.Background(), id, sessKey, addrKey) })
		}, nil
	}
	// Take back the half that was recorded.
	var keys []string
	if sOK {
		keys = append(keys, sessKey)
	}
	if aOK {
		keys = append(keys, addrKey)
	}
	if len(keys) > 0 {
		r.removeRecords(ctx, id, keys...)
	}
	if err := cmp.Or(sErr, aErr); err != nil {
		return nil, err
	}
	return nil, rateLimited(lim, sWait, aWait)
}

// reserveResult decodes a reserve script's reply: accepted, or the wait
// until the window has room.
func reserveResult(cmd *redis.Cmd, nowUS, winUS int64) (ok bool, wait time.Duration, err error) {
	vals, err := cmd.Slice()
	if err != nil {
		return false, 0, err
	}
	if len(vals) == 1 {
		return true, 0, nil
	}
	if len(vals) != 2 {
		return false, 0, fmt.Errorf("socketio: unexpected reserve reply %v", vals)
	}
	wait, err = waitFor(vals[1], nowUS, winUS)
	return false, wait, err
}

// waitFor turns the score of the record whose leaving makes room in a log
// ("" when the log has room) into the wait until then.
func waitFor(score any, nowUS, winUS int64) (time.Duration, error) {
	s, _ := score.(string)
	if s == "" {
		return 0, nil
	}
	at, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("socketio: unexpected reserve score %v", score)
	}
	// A record scored at or before now-window has been pruned, so the wait
	// is at least 1µs.
	return time.Duration(max(int64(at)+winUS-nowUS, 1)) * time.Microsecond, nil
}

// removeRecords removes question record id from keys, in one pipeline,
// best effort: a record that stays counts until it leaves its window.
func (r *redisAuthState) removeRecords(ctx context.Context, id string, keys ...string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisCleanupTimeout)
	defer cancel()
	pipe := r.rdb.Pipeline()
	for _, k := range keys {
		pipe.ZRem(ctx, k, id)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		r.logger.Warn("socketio: removing a question record failed", "err", err)
	}
}

// Blocklist.

// blockValue is the JSON value of a blocklist entry.
type blockValue struct {
	Reason    string `json:"reason"`
	ExpiresMS int64  `json:"expires_ms"` // Unix ms; 0: never
}

// block writes the entry and bumps the version in one MULTI.
func (r *redisAuthState) block(ctx context.Context, p netip.Prefix, reason string, expires time.Time) error {
	v := blockValue{Reason: reason}
	if !expires.IsZero() {
		// Round up: an entry never lapses before its time.
		v.ExpiresMS = expires.Add(time.Millisecond - 1).UnixMilli()
	}
	val, err := json.Marshal(v)
	if err != nil {
		return err
	}
	key := r.blocksKey()
	var version *redis.IntCmd
	_, err = r.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.HSet(ctx, key, prefixString(p), val)
		version = pipe.HIncrBy(ctx, key, blocksVersionField, 1)
		return nil
	})
	if err != nil {
		r.invalidate() // it may have been applied
		return err
	}
	e := v.entry()
	r.applyOwnChange(version.Val(), p, &e)
	return nil
}

// unblock reads, removes and bumps the version in one MULTI.
func (r *redisAuthState) unblock(ctx context.Context, p netip.Prefix, now time.Time) (bool, error) {
	key := r.blocksKey()
	var get *redis.StringCmd
	var version *redis.IntCmd
	_, err := r.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		get = pipe.HGet(ctx, key, prefixString(p))
		pipe.HDel(ctx, key, prefixString(p))
		version = pipe.HIncrBy(ctx, key, blocksVersionField, 1)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		r.invalidate() // it may have been applied
		return false, err
	}
	r.applyOwnChange(version.Val(), p, nil)
	if errors.Is(get.Err(), redis.Nil) {
		return false, nil
	}
	var v blockValue
	if err := json.Unmarshal([]byte(get.Val()), &v); err != nil {
		return true, nil // an entry we cannot read was there: count it live
	}
	return v.entry().live(now), nil
}

// lookup answers from the cache, refreshing it first (one round trip, which
// ships the blocklist only if it changed) when it is older than
// BlocklistCacheTTL.
func (r *redisAuthState) lookup(ctx context.Context, ip netip.Addr, now time.Time) (string, bool, error) {
	snap := r.blocks.Load()
	if !snap.fresh(now, r.cacheTTL) {
		gen := r.generation()
		fetch := r.fetchCall(snap)
		r.runScripts(ctx, fetch)
		var err error
		if snap, err = r.applyFetch(snap, fetch.cmd, now, gen); err != nil {
			return "", false, err
		}
	}
	reason, blocked := snap.lookup(ip, now)
	return reason, blocked, nil
}

func (r *redisAuthState) generation() uint64 {
	r.blocksMu.Lock()
	defer r.blocksMu.Unlock()
	return r.blocksGen
}

// invalidate drops the cache, so that the next lookup fetches.
func (r *redisAuthState) invalidate() {
	r.blocksMu.Lock()
	r.blocksGen++
	r.blocks.Store(nil)
	r.blocksMu.Unlock()
}

// applyOwnChange makes this node see its own change at once: it sets (e
// non-nil) or removes the entry for p in the cache, which then holds
// version, when the cache held the version just before; otherwise (another
// change came in between) it drops the cache. Either way, a fetch in flight
// cannot store an older list over it.
func (r *redisAuthState) applyOwnChange(version int64, p netip.Prefix, e *blockEntry) {
	r.blocksMu.Lock()
	defer r.blocksMu.Unlock()
	r.blocksGen++
	old := r.blocks.Load()
	if old == nil || old.version != strconv.FormatInt(version-1, 10) {
		r.blocks.Store(nil)
		return
	}
	s := &blockSnapshot{
		version: strconv.FormatInt(version, 10),
		fetched: old.fetched,
		singles: maps.Clone(old.singles),
		cidrs:   slices.DeleteFunc(slices.Clone(old.cidrs), func(c cidrEntry) bool { return c.prefix == p }),
	}
	switch {
	case p.IsSingleIP() && e != nil:
		s.singles[p.Addr()] = *e
	case p.IsSingleIP():
		delete(s.singles, p.Addr())
	case e != nil:
		s.cidrs = append(s.cidrs, cidrEntry{prefix: p, blockEntry: *e})
		slices.SortStableFunc(s.cidrs, func(x, y cidrEntry) int { return cmp.Compare(y.prefix.Bits(), x.prefix.Bits()) })
	}
	r.blocks.Store(s)
}

func (r *redisAuthState) fetchCall(have *blockSnapshot) *scriptCall {
	version := ""
	if have != nil {
		version = have.version
	}
	return &scriptCall{script: blocksFetchScript, keys: []string{r.blocksKey()}, args: []any{version}}
}

// applyFetch turns a fetch reply into a snapshot taken at now and caches
// it, unless the cache was invalidated since gen.
func (r *redisAuthState) applyFetch(have *blockSnapshot, cmd *redis.Cmd, now time.Time, gen uint64) (*blockSnapshot, error) {
	vals, err := cmd.Slice()
	if err != nil {
		return nil, err
	}
	if len(vals) == 0 {
		return nil, fmt.Errorf("socketio: unexpected blocklist reply %v", vals)
	}
	version, _ := vals[0].(string)
	var snap *blockSnapshot
	if len(vals) == 1 && have != nil && have.version == version {
		s := *have
		s.fetched = now
		snap = &s
	} else {
		var fields []any
		if len(vals) > 1 {
			fields, _ = vals[1].([]any)
		}
		snap = r.parseBlocks(version, fields, now)
	}
	r.blocksMu.Lock()
	if r.blocksGen == gen {
		r.blocks.Store(snap)
	}
	r.blocksMu.Unlock()
	return snap, nil
}

// parseBlocks builds a snapshot from HGETALL's flat field/value list,
// skipping the version and entries that do not parse.
func (r *redisAuthState) parseBlocks(version string, fields []any, now time.Time) *blockSnapshot {
	snap := &blockSnapshot{version: version, fetched: now, singles: map[netip.Addr]blockEntry{}}
	for i := 0; i+1 < len(fields); i += 2 {
		f, _ := fields[i].(string)
		v, _ := fields[i+1].(string)
		p, e, ok := decodeBlock(f, v)
		if !ok {
			if f != blocksVersionField {
				r.logger.Warn("socketio: ignoring a malformed blocklist entry", "field", f)
			}
			continue
		}
		if p.IsSingleIP() {
			snap.singles[p.Addr()] = e
		} else {
			snap.cidrs = append(snap.cidrs, cidrEntry{prefix: p, blockEntry: e})
		}
	}
	slices.SortStableFunc(snap.cidrs, func(x, y cidrEntry) int { return cmp.Compare(y.prefix.Bits(), x.prefix.Bits()) })
	return snap
}

func decodeBlock(field, value string) (netip.Prefix, blockEntry, bool) {
	if field == blocksVersionField {
		return netip.Prefix{}, blockEntry{}, false
	}
	p, err := parsePrefix(field)
	if err != nil {
		return netip.Prefix{}, blockEntry{}, false
	}
	var v blockValue
	if err := json.Unmarshal([]byte(value), &v); err != nil {
		return netip.Prefix{}, blockEntry{}, false
	}
	return p, v.entry(), true
}

func (v blockValue) entry() blockEntry {
	e := blockEntry{reason: v.Reason}
	if v.ExpiresMS > 0 {
		e.expires = time.UnixMilli(v.ExpiresMS).UTC()
	}
	return e
}

// blockSnapshot is an immutable copy of the blocklist as fetched at fetched
// (by the Auth's clock).
type blockSnapshot struct {
	version string
	fetched time.Time
	singles map[netip.Addr]blockEntry
	cidrs   []cidrEntry // longest prefix first
}

// fresh reports whether s is younger than ttl at now; a nil s is not.
func (s *blockSnapshot) fresh(now time.Time, ttl time.Duration) bool {
	return s != nil && !now.Before(s.fetched) && now.Sub(s.fetched) < ttl
}

// lookup returns the reason of the most specific live entry containing ip.
func (s *blockSnapshot) lookup(ip netip.Addr, now time.Time) (string, bool) {
	if e, ok := s.singles[ip]; ok && e.live(now) {
		return e.reason, true
	}
	for _, c := range s.cidrs {
		if c.live(now) && c.prefix.Contains(ip) {
			return c.reason, true
		}
	}
	return "", false
}

// Stats and sweeping.

// stats scans the connection keys (SCAN on every node holding keys; at
// most maxStatsKeys keys), then counts their live leases and reads the
// blocklist in one pipeline. It is meant for admin calls, not hot paths.
func (r *redisAuthState) stats(ctx context.Context, now time.Time) (authStats, error) {
	keys, err := r.scanConnKeys(ctx)
	if err != nil {
		return authStats{}, err
	}
	pipe := r.rdb.Pipeline()
	counts := make([]*redis.IntCmd, len(keys))
	live := "(" + strconv.FormatInt(now.UnixMilli(), 10)
	for i, k := range keys {
		counts[i] = pipe.ZCount(ctx, k, live, "+inf")
	}
	all := pipe.HGetAll(ctx, r.blocksKey())
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return authStats{}, err
	}
	st := authStats{perAddress: make(map[string]int, len(keys))}
	head := r.prefix + "conn:{"
	for i, k := range keys {
		if n := counts[i].Val(); n > 0 && strings.HasPrefix(k, head) && strings.HasSuffix(k, "}") {
			st.perAddress[k[len(head):len(k)-1]] += int(n)
		}
	}
	for f, v := range all.Val() {
		p, e, ok := decodeBlock(f, v)
		if ok && e.live(now) {
			st.blocked = append(st.blocked, BlockedAddress{Addr: prefixString(p), Reason: e.reason, Expires: e.expires})
		}
	}
	slices.SortFunc(st.blocked, func(x, y BlockedAddress) int { return cmp.Compare(x.Addr, y.Addr) })
	return st, nil
}

func (r *redisAuthState) scanConnKeys(ctx context.Context) ([]string, error) {
	match := escapeGlob(r.prefix) + "conn:{*}"
	seen := map[string]struct{}{}
	var mu sync.Mutex
	scan := func(ctx context.Context, c redis.Cmdable) error {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, match, 1000).Result()
			if err != nil {
				return err
			}
			mu.Lock()
			for _, k := range keys {
				seen[k] = struct{}{}
			}
			full := len(seen) >= maxStatsKeys
			mu.Unlock()
			if cursor = next; cursor == 0 || full {
				return nil
			}
		}
	}
	if err := redistopo.ForEachMaster(ctx, r.rdb, scan); err != nil {
		return nil, err
	}
	if len(seen) >= maxStatsKeys {
		r.logger.Warn("socketio: connection stats truncated", "keys", len(seen))
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, nil
}

// escapeGlob escapes the characters SCAN MATCH treats specially.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// sweep drops expired blocklist entries with one script. Connection and
// question keys expire by their TTLs; window is not needed.
func (r *redisAuthState) sweep(ctx context.Context, now time.Time, _ time.Duration) error {
	return blocksSweepScript.Run(ctx, r.rdb, []string{r.blocksKey()}, now.UnixMilli()).Err()
}

// Scripts in pipelines.

// scriptCall is one script invocation; cmd holds its result once run.
type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
}

// runScripts sends calls in one pipeline by EVALSHA (in a Cluster, go-redis
// sends one pipeline per node, concurrently). A call the server could not
// run because it has not cached the script (NOSCRIPT: after a restart or
// SCRIPT FLUSH) is sent again, alone, with its source.
func (r *redisAuthState) runScripts(ctx context.Context, calls ...*scriptCall) {
	if len(calls) == 1 {
		c := calls[0]
		c.cmd = c.script.Run(ctx, r.rdb, c.keys, c.args...)
		return
	}
	pipe := r.rdb.Pipeline()
	for _, c := range calls {
		c.cmd = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx) // each call's error is in its cmd
	for _, c := range calls {
		if err := c.cmd.Err(); err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT")) {
			c.cmd = c.script.Eval(ctx, r.rdb, c.keys, c.args...)
		}
	}
}
