package socketio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// AuthOptions configures an Auth. The zero value means the defaults; a zero
// or negative number or duration also means its default.
type AuthOptions struct {
	// MaxConnectionsPerIP caps the open connections of one client address.
	// default: 10
	MaxConnectionsPerIP int
	// MaxQuestionsPerMinute caps the accepted questions of one session in
	// any sliding QuestionWindow. default: 5
	MaxQuestionsPerMinute int
	// MaxQuestionsPerMinutePerIP caps the accepted questions of one client
	// address, over all its sessions, in any sliding QuestionWindow.
	// default: 60
	MaxQuestionsPerMinutePerIP int
	// QuestionWindow is the length of the sliding rate-limit window.
	// default: 1m
	QuestionWindow time.Duration
	// MaxQuestionLength caps a question, in code points after trimming.
	// default: 2000
	MaxQuestionLength int
	// MaxContextLength caps ask_question.context, in code points after
	// trimming. default: 8000
	MaxContextLength int
	// MaxRoomsPerSocket caps the rooms one socket may be in, not counting
	// the room of its own id. default: 50
	MaxRoomsPerSocket int
	// RoomPolicy decides whether caller may join room (a name already
	// validated). It returns nil to allow; an *Error keeps its code, any
	// other error refuses with forbidden. It is called concurrently.
	// default: nil, meaning any room except those starting with "private:"
	RoomPolicy func(ctx context.Context, caller Caller, room string) error
	// QuestionRules run, in order, after the built-in text checks; the
	// first error refuses the question. An *Error keeps its code and
	// message; any other error becomes question_invalid with a generic
	// message (its text goes to the log only). They are called
	// concurrently. default: none
	QuestionRules []func(question string) error
	// TokenVerifier maps a handshake token to a user id. When set, a
	// missing token or one it rejects refuses the connection with
	// unauthorized; an error matching ErrUnavailable refuses it with
	// unavailable instead. A nil error with an empty id accepts the token
	// without naming a user. default: nil, meaning tokens are ignored
	TokenVerifier func(ctx context.Context, token string) (userID string, err error)
	// TrustedProxies lists the proxies, as CIDRs ("10.0.0.0/8") or single
	// addresses ("192.0.2.7"), whose X-Forwarded-For and X-Real-IP headers
	// are believed (see Auth.ClientAddress). default: none
	TrustedProxies []string
	// Logger receives state failures and refused tokens.
	// default: slog.Default()
	Logger *slog.Logger

	// Redis, when set, holds the limits, the blocklist and the connection
	// counts, shared by every node using the same RedisPrefix. The Auth
	// does not close it. default: nil (in memory, this node only)
	Redis redis.UniversalClient
	// RedisPrefix starts every Redis key the Auth uses. default: "qa:"
	RedisPrefix string
	// LeaseTTL is how long a connection slot held in Redis outlives its
	// node: each node renews its slots every LeaseTTL/3, so the slots of a
	// node that dies without releasing them lapse after LeaseTTL. A
	// renewal also writes back the slots of open connections that Redis
	// lost (a restart without persistence, an eviction), so the limit
	// holds again within LeaseTTL/3. Nodes sharing a prefix should use the
	// same value. default: 30s
	LeaseTTL time.Duration
	// BlocklistCacheTTL is how long a node answers blocklist lookups from
	// its copy of the Redis blocklist: a block or unblock made on another
	// node takes effect here within this time (at once on the node that
	// made it). default: 1s
	BlocklistCacheTTL time.Duration
	// FailOpenConnects admits connections while the shared state (Redis)
	// cannot be reached, instead of refusing them with unavailable: the
	// blocklist and the connection limit are then not applied, and a
	// session that cannot be stored cannot be resumed later. A token
	// verifier still decides. default: false (fail closed)
	FailOpenConnects bool
}

func (o AuthOptions) withDefaults() AuthOptions {
	if o.MaxConnectionsPerIP <= 0 {
		o.MaxConnectionsPerIP = 10
	}
	if o.MaxQuestionsPerMinute <= 0 {
		o.MaxQuestionsPerMinute = 5
	}
	if o.MaxQuestionsPerMinutePerIP <= 0 {
		o.MaxQuestionsPerMinutePerIP = 60
	}
	if o.QuestionWindow <= 0 {
		o.QuestionWindow = time.Minute
	}
	if o.MaxQuestionLength <= 0 {
		o.MaxQuestionLength = 2000
	}
	if o.MaxContextLength <= 0 {
		o.MaxContextLength = 8000
	}
	if o.MaxRoomsPerSocket <= 0 {
		o.MaxRoomsPerSocket = 50
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.RedisPrefix == "" {
		o.RedisPrefix = "qa:"
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 30 * time.Second
	}
	if o.BlocklistCacheTTL <= 0 {
		o.BlocklistCacheTTL = time.Second
	}
	o.QuestionRules = slices.Clone(o.QuestionRules)
	o.TrustedProxies = slices.Clone(o.TrustedProxies)
	return o
}

// BlockedAddress is one entry of the blocklist.
type BlockedAddress struct {
	// Addr is a single address ("192.0.2.7") or a CIDR ("10.0.0.0/8").
	Addr   string
	Reason string
	// Expires is when the entry lapses; the zero time means never.
	Expires time.Time
}

// ConnectionStats is a snapshot of an Auth's connection bookkeeping.
type ConnectionStats struct {
	// Total is the number of open connections.
	Total int
	// PerAddress holds the open connections per client address.
	PerAddress map[string]int
	// Blocked lists the current blocklist entries, ordered by Addr.
	Blocked []BlockedAddress
	// Refusals counts connection refusals by code since the Auth was
	// created: ip_blocked, too_many_connections, unauthorized, rejected
	// and unavailable are always present.
	Refusals map[Code]uint64
}

// Auth is the access policy of the service: the blocklist, connection and
// question limits, token verification, room policy and history access. The
// library's built-in hooks call its Check methods; users who replace a
// built-in hook can call them too.
//
// Concurrency: all methods are safe for concurrent use. Limits are enforced
// atomically: goroutines racing for the last connection slots or question
// reservations never exceed a limit, on one node or, with
// AuthOptions.Redis, on all nodes together. Methods that take a ctx pass it
// to the Redis state (the memory state ignores it), to RoomPolicy and to
// TokenVerifier.
type Auth struct {
	opts    AuthOptions
	logger  *slog.Logger
	store   atomic.Pointer[authStore] // see st; replaced only by bindRedis
	bindMu  sync.Mutex
	now     func() time.Time
	proxies []netip.Prefix

	refusals [numRefusalCodes]atomic.Uint64

	afterSweep func() // test hook

	closeOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
}

// authStore is where an Auth keeps its state: in memory (rdb nil) or in
// Redis under prefix.
type authStore struct {
	state  authState
	rdb    redis.UniversalClient
	prefix string
}

// st returns the Auth's state.
func (a *Auth) st() authState { return a.store.Load().state }

// authConfig holds the knobs tests use; the zero value is production.
type authConfig struct {
	now        func() time.Time // default time.Now
	state      authState        // default a new in-memory state
	sweepEvery time.Duration    // default from the window; < 0 disables the sweeper
	afterSweep func()           // called after each background sweep
	renewEvery time.Duration    // Redis lease renewal; default LeaseTTL/3
}

// NewAuth returns an Auth with opts (defaults filled). It returns an error
// when a TrustedProxies entry is neither an address nor a CIDR. Call Close
// to stop its background sweeper.
func NewAuth(opts AuthOptions) (*Auth, error) {
	return newAuth(opts, authConfig{})
}

func newAuth(opts AuthOptions, cfg authConfig) (*Auth, error) {
	opts = opts.withDefaults()
	proxies := make([]netip.Prefix, 0, len(opts.TrustedProxies))
	for _, s := range opts.TrustedProxies {
		p, err := parsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("socketio: NewAuth: TrustedProxies: %w", err)
		}
		proxies = append(proxies, p)
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	store := &authStore{state: cfg.state}
	if opts.Redis != nil {
		store.rdb, store.prefix = opts.Redis, opts.RedisPrefix
		if store.state == nil {
			store.state = newRedisAuthState(opts.Redis, redisAuthConfig{
				prefix: opts.RedisPrefix, leaseTTL: opts.LeaseTTL, cacheTTL: opts.BlocklistCacheTTL,
				now: cfg.now, logger: opts.Logger, renewEvery: cfg.renewEvery,
			})
		}
	}
	if store.state == nil {
		store.state = newMemoryAuthState()
	}
	a := &Auth{
		opts:    opts,
		logger:  opts.Logger,
		now:     cfg.now,
		proxies: proxies,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	a.store.Store(store)
	a.afterSweep = cfg.afterSweep
	every := cfg.sweepEvery
	if every == 0 {
		// Sweep once per window, but at least every minute (for expired
		// blocks) and at most every second.
		every = min(max(opts.QuestionWindow, time.Second), time.Minute)
	}
	if every > 0 {
		go a.sweepLoop(every)
	} else {
		close(a.done)
	}
	return a, nil
}

// Options returns the effective options, defaults filled. After Register
// has moved the Auth to Options.Redis (see Options.Auth), Redis and
// RedisPrefix name where its state is.
func (a *Auth) Options() AuthOptions {
	o := a.opts
	if st := a.store.Load(); st.rdb != nil {
		o.Redis, o.RedisPrefix = st.rdb, st.prefix
	}
	o.QuestionRules = slices.Clone(o.QuestionRules)
	o.TrustedProxies = slices.Clone(o.TrustedProxies)
	return o
}

// Close stops the background sweeper and waits for it to exit. With Redis,
// it also stops renewing this node's connection leases and releases them
// (best effort, within 2s; what it cannot release lapses after LeaseTTL).
// It is idempotent and always returns nil. The Auth keeps answering after
// Close, but idle rate-limit windows are then dropped only lazily.
func (a *Auth) Close() error {
	a.closeOnce.Do(func() { close(a.stop) })
	<-a.done
	a.bindMu.Lock() // a state bindRedis is installing is closed too
	defer a.bindMu.Unlock()
	if c, ok := a.st().(interface{ close() }); ok {
		c.close()
	}
	return nil
}

// bindRedis moves an Auth whose state is in memory to Redis (rdb, under
// prefix), for Register: see Options.Auth. An Auth already in Redis (its
// own AuthOptions.Redis, or an earlier Register's) stays where it is. The
// blocklist entries made so far are written to Redis; question windows
// are not carried over. It refuses an Auth that holds connection slots,
// which the Redis state would not know to release.
func (a *Auth) bindRedis(ctx context.Context, rdb redis.UniversalClient, prefix string, renewEvery time.Duration) error {
	a.bindMu.Lock()
	defer a.bindMu.Unlock()
	select {
	case <-a.stop:
		return errors.New("socketio: Register: Options.Auth is closed")
	default:
	}
	cur := a.store.Load()
	if cur.rdb != nil {
		return nil
	}
	mem, ok := cur.state.(*memoryAuthState)
	if !ok {
		return nil // a state injected by a test
	}
	now := a.now()
	st, err := mem.stats(ctx, now)
	if err != nil {
		return err
	}
	if len(st.perAddress) > 0 {
		return errors.New("socketio: Register: Options.Auth holds open connections in memory and cannot move to Options.Redis; " +
			"register it before using it, or create it with AuthOptions.Redis")
	}
	rs := newRedisAuthState(rdb, redisAuthConfig{
		prefix: prefix, leaseTTL: a.opts.LeaseTTL, cacheTTL: a.opts.BlocklistCacheTTL,
		now: a.now, logger: a.logger, renewEvery: renewEvery,
	})
	for _, b := range st.blocked {
		p, err := parsePrefix(b.Addr)
		if err == nil {
			err = rs.block(ctx, p, b.Reason, b.Expires)
		}
		if err != nil {
			rs.close()
			return fmt.Errorf("socketio: Register: moving Options.Auth's blocklist to Redis: %w", unavailable(err))
		}
	}
	a.store.Store(&authStore{state: rs, rdb: rdb, prefix: prefix})
	return nil
}

func (a *Auth) sweepLoop(every time.Duration) {
	defer close(a.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			a.sweep()
			if a.afterSweep != nil {
				a.afterSweep()
			}
		}
	}
}

// sweep drops expired blocks and idle rate-limit windows.
func (a *Auth) sweep() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.st().sweep(ctx, a.now(), a.opts.QuestionWindow); err != nil {
		a.logger.Warn("socketio: auth sweep failed", "err", err)
	}
}

// BlockIP blocks addr, a single IPv4 or IPv6 address or a CIDR, for ttl
// (0 means until UnblockIP), with reason shown to refused clients. Blocking
// an entry again replaces its reason and expiry. Open connections are not
// closed. It returns an error for a malformed addr or a negative ttl.
func (a *Auth) BlockIP(ctx context.Context, addr, reason string, ttl time.Duration) error {
	p, err := parsePrefix(addr)
	if err != nil {
		return fmt.Errorf("socketio: BlockIP: %w", err)
	}
	if ttl < 0 {
		return fmt.Errorf("socketio: BlockIP: negative ttl %v", ttl)
	}
	var expires time.Time
	if ttl > 0 {
		expires = a.now().Add(ttl)
	}
	if err := a.st().block(ctx, p, reason, expires); err != nil {
		return fmt.Errorf("socketio: BlockIP: %w", unavailable(err))
	}
	return nil
}

// UnblockIP removes the blocklist entry for addr (written as for BlockIP)
// and reports whether a live entry existed. Entries of other, overlapping
// CIDRs stay.
func (a *Auth) UnblockIP(ctx context.Context, addr string) (bool, error) {
	p, err := parsePrefix(addr)
	if err != nil {
		return false, fmt.Errorf("socketio: UnblockIP: %w", err)
	}
	ok, err := a.st().unblock(ctx, p, a.now())
	if err != nil {
		return false, fmt.Errorf("socketio: UnblockIP: %w", unavailable(err))
	}
	return ok, nil
}

// BlockedReason reports whether ip is blocked and why. When several entries
// match, the most specific one (longest prefix) gives the reason. Expired
// entries are ignored and dropped. It returns an error when ip is not an
// address.
func (a *Auth) BlockedReason(ctx context.Context, ip string) (reason string, blocked bool, err error) {
	addr, ok := parseIP(ip)
	if !ok {
		return "", false, fmt.Errorf("socketio: BlockedReason: %q is not an IP address", ip)
	}
	reason, blocked, err = a.st().lookup(ctx, addr, a.now())
	if err != nil {
		return "", false, fmt.Errorf("socketio: BlockedReason: %w", unavailable(err))
	}
	return reason, blocked, nil
}

// ConnectionStats returns a snapshot of the open connections, the blocklist
// and the refusal counters (the seed's get_connection_stats). If the shared
// state cannot be read, it returns the refusal counters, which are always
// local, with an error wrapping ErrUnavailable.
func (a *Auth) ConnectionStats(ctx context.Context) (ConnectionStats, error) {
	st, err := a.st().stats(ctx, a.now())
	if err != nil {
		err = fmt.Errorf("socketio: ConnectionStats: %w", unavailable(err))
	}
	cs := ConnectionStats{
		PerAddress: st.perAddress,
		Blocked:    st.blocked,
		Refusals:   make(map[Code]uint64, numRefusalCodes),
	}
	if cs.PerAddress == nil {
		cs.PerAddress = map[string]int{}
	}
	for _, n := range cs.PerAddress {
		cs.Total += n
	}
	for i, c := range refusalCodes {
		cs.Refusals[c] = a.refusals[i].Load()
	}
	return cs, err
}

// refusalCodes are the connect_error codes counted by ConnectionStats.
var refusalCodes = [...]Code{CodeIPBlocked, CodeTooManyConnections, CodeUnauthorized, CodeRejected, CodeUnavailable}

const numRefusalCodes = len(refusalCodes)

// countRefusal counts a refused connection under code; the library calls it
// for refusals that CheckConnect did not make and count (a later hook said
// no): guard it with refusalCounted.
// Codes other than the connect_error codes count as rejected, except
// internal, which is not counted.
func (a *Auth) countRefusal(code Code) {
	if code == CodeInternal {
		return
	}
	i := slices.Index(refusalCodes[:], code)
	if i < 0 {
		i = slices.Index(refusalCodes[:], CodeRejected)
	}
	a.refusals[i].Add(1)
}

// CheckConnect admits a connection from addr (a client address, as
// returned by ClientAddress) for socket socketID. In order it refuses with
//   - ip_blocked when addr is blocked (the message includes the reason);
//   - unauthorized when a TokenVerifier is set and the token is missing or
//     rejected (unavailable when the verifier reports ErrUnavailable);
//   - too_many_connections when addr already has MaxConnectionsPerIP open.
//
// On success it holds a connection slot for socketID until
// ReleaseConnection, and returns the verified user id ("" without a
// verifier). Each refusal is counted by code. Checking an id that already
// holds a slot succeeds without taking another.
func (a *Auth) CheckConnect(ctx context.Context, socketID, addr, token string) (userID string, err error) {
	if socketID == "" {
		return "", errors.New("socketio: CheckConnect: empty socket id")
	}
	addr = normalizeAddr(addr)
	if verify := a.opts.TokenVerifier; verify != nil {
		// The blocklist goes first, so that blocked clients cost no
		// verification and learn nothing about their token.
		if ip, ok := parseIP(addr); ok {
			reason, blocked, err := a.st().lookup(ctx, ip, a.now())
			if err != nil && !a.opts.FailOpenConnects {
				return "", a.refuse(CodeUnavailable, unavailable(err))
			}
			if err != nil {
				a.logger.Warn("socketio: blocklist unavailable; admitting (FailOpenConnects)", "addr", addr, "err", err)
			}
			if blocked {
				return "", a.refuse(CodeIPBlocked, blockedError(reason))
			}
		}
		if token == "" {
			return "", a.refuse(CodeUnauthorized, &Error{Code: CodeUnauthorized, Message: "missing token"})
		}
		userID, err = verify(ctx, token)
		if err != nil {
			if errors.Is(err, ErrUnavailable) {
				a.logger.Warn("socketio: token verifier unavailable", "addr", addr, "err", err)
				return "", a.refuse(CodeUnavailable, fmt.Errorf("%w: %w", ErrUnavailable, err))
			}
			a.logger.Debug("socketio: token rejected", "addr", addr, "err", err)
			return "", a.refuse(CodeUnauthorized, fmt.Errorf("%w: %w", errInvalidToken, err))
		}
	}
	// acquireConn checks the blocklist (again) right before taking the
	// slot, so a block added during verification still applies.
	if err := a.st().acquireConn(ctx, socketID, addr, a.opts.MaxConnectionsPerIP, a.now()); err != nil {
		code := ErrorCode(err)
		if code != CodeIPBlocked && code != CodeTooManyConnections {
			if a.opts.FailOpenConnects {
				// Admitted uncounted: the limit cannot be checked now.
				a.logger.Warn("socketio: connection state unavailable; admitting uncounted (FailOpenConnects)", "addr", addr, "err", err)
				return userID, nil
			}
			code, err = CodeUnavailable, unavailable(err)
		}
		return "", a.refuse(code, err)
	}
	return userID, nil
}

var errInvalidToken = &Error{Code: CodeUnauthorized, Message: "invalid token"}

func (a *Auth) refuse(code Code, err error) error {
	a.countRefusal(code)
	return countedRefusal{err}
}

// countedRefusal marks a refusal that CheckConnect has already counted, so
// that the connect boundary does not count it again (see refusalCounted).
// It is transparent to errors.Is and errors.As.
type countedRefusal struct{ error }

func (e countedRefusal) Unwrap() error { return e.error }

// refusalCounted reports whether err, a connect refusal, was already
// counted by CheckConnect; the library counts the others with countRefusal.
func refusalCounted(err error) bool {
	var c countedRefusal
	return errors.As(err, &c)
}

// ReleaseConnection frees the connection slot held by socketID. It is
// idempotent; an unknown id is a no-op. A state failure is logged.
func (a *Auth) ReleaseConnection(ctx context.Context, socketID string) {
	if err := a.st().releaseConn(ctx, socketID); err != nil {
		a.logger.Warn("socketio: releasing connection failed", "socket", socketID, "err", err)
	}
}

// CheckRoom decides whether caller may join room, a name already validated.
// joined is the number of rooms the socket is in now, not counting the room
// of its own id: at MaxRoomsPerSocket or more it refuses with
// limit_exceeded. Then RoomPolicy decides; a plain error from it refuses
// with forbidden, an *Error keeps its code.
func (a *Auth) CheckRoom(ctx context.Context, caller Caller, room string, joined int) error {
	if joined >= a.opts.MaxRoomsPerSocket {
		return &Error{Code: CodeLimitExceeded, Message: fmt.Sprintf("at most %d rooms per socket", a.opts.MaxRoomsPerSocket)}
	}
	policy := a.opts.RoomPolicy
	if policy == nil {
		policy = defaultRoomPolicy
	}
	if err := policy(ctx, caller, room); err != nil {
		if ErrorCode(err) != "" {
			return err
		}
		return fmt.Errorf("%w: %w", ErrForbidden, err)
	}
	return nil
}

func defaultRoomPolicy(_ context.Context, _ Caller, room string) error {
	if strings.HasPrefix(room, "private:") {
		return &Error{Code: CodeForbidden, Message: "private room"}
	}
	return nil
}

// CheckQuestion runs QuestionRules on question (already trimmed and
// validated by the library) and returns the first refusal: an *Error keeps
// its code, any other error becomes question_invalid.
func (a *Auth) CheckQuestion(question string) error {
	for _, rule := range a.opts.QuestionRules {
		if err := rule(question); err != nil {
			if ErrorCode(err) != "" {
				return err
			}
			return fmt.Errorf("%w: %w", ErrQuestionInvalid, err)
		}
	}
	return nil
}

// ReserveQuestion applies the question rate limits: at most
// MaxQuestionsPerMinute accepted questions per session and
// MaxQuestionsPerMinutePerIP per client address in any sliding
// QuestionWindow. When either is full it records nothing and returns an
// *Error with code rate_limited whose RetryAfter (> 0) is the time until
// both would accept one. Otherwise it records one question in both windows
// and returns release, which removes exactly that record; call it when a
// later step refuses the question. release is idempotent and safe to call
// from any goroutine.
func (a *Auth) ReserveQuestion(ctx context.Context, sessionID, addr string) (release func(), err error) {
	if sessionID == "" {
		return nil, errors.New("socketio: ReserveQuestion: empty session id")
	}
	lim := questionLimits{
		perSession: a.opts.MaxQuestionsPerMinute,
		perAddr:    a.opts.MaxQuestionsPerMinutePerIP,
		window:     a.opts.QuestionWindow,
	}
	release, err = a.st().reserveQuestion(ctx, sessionID, normalizeAddr(addr), lim, a.now())
	if err != nil {
		if ErrorCode(err) == CodeRateLimited {
			return nil, err
		}
		return nil, unavailable(err)
	}
	return release, nil
}

// CanReadHistory reports whether caller may read the history of owner: its
// own session ("s:" + SessionID) or, when a user was identified, its own
// user ("u:" + UserID).
func (a *Auth) CanReadHistory(caller Caller, owner string) bool {
	if caller.SessionID != "" && len(owner) == 2+len(caller.SessionID) &&
		strings.HasPrefix(owner, "s:") && owner[2:] == caller.SessionID {
		return true
	}
	return caller.UserID != "" && len(owner) == 2+len(caller.UserID) &&
		strings.HasPrefix(owner, "u:") && owner[2:] == caller.UserID
}

// ClientAddress returns the client's address for r, normalised (an
// IPv4-mapped IPv6 address becomes IPv4, zones are dropped). It is the peer
// of r.RemoteAddr unless that peer is a trusted proxy; then it is the
// right-most X-Forwarded-For entry that is not itself a trusted proxy (the
// left-most entry when all are), else X-Real-IP, else the peer. A header
// that cannot be parsed, up to the entry chosen, is ignored. When the peer
// itself is not an IP address (a Unix socket), it returns "0.0.0.0".
func (a *Auth) ClientAddress(r *http.Request) string {
	peer, ok := parseHostPort(r.RemoteAddr)
	if !ok {
		return netip.IPv4Unspecified().String()
	}
	if !a.trusted(peer) {
		return peer.String()
	}
	if ip, ok := a.fromForwardedFor(r.Header.Values("X-Forwarded-For")); ok {
		return ip.String()
	}
	if ip, ok := parseHostPort(strings.TrimSpace(r.Header.Get("X-Real-IP"))); ok {
		return ip.String()
	}
	return peer.String()
}

// fromForwardedFor walks the X-Forwarded-For entries from the right and
// returns the first that is not a trusted proxy. An unparseable entry on the
// way makes the header unusable: what lies left of it cannot be trusted.
func (a *Auth) fromForwardedFor(values []string) (netip.Addr, bool) {
	var entries []string
	for _, v := range values {
		for e := range strings.SplitSeq(v, ",") {
			entries = append(entries, e)
		}
	}
	for i := len(entries) - 1; i >= 0; i-- {
		ip, ok := parseHostPort(strings.TrimSpace(entries[i]))
		if !ok {
			return netip.Addr{}, false
		}
		if i == 0 || !a.trusted(ip) {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

func (a *Auth) trusted(ip netip.Addr) bool {
	for _, p := range a.proxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// parseIP parses a bare address and normalises it.
func parseIP(s string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap().WithZone(""), true
}

// parseHostPort parses "ip", "ip:port", "[ip]:port" or "[ip]".
func parseHostPort(s string) (netip.Addr, bool) {
	if ip, ok := parseIP(s); ok {
		return ip, true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		return parseIP(s[1 : len(s)-1])
	}
	return netip.Addr{}, false
}

// normalizeAddr returns the canonical form of an address string, or s
// unchanged when it is not an address. It does not allocate when s is
// already canonical.
func normalizeAddr(s string) string {
	ip, ok := parseIP(s)
	if !ok {
		return s
	}
	var buf [64]byte
	if b := ip.AppendTo(buf[:0]); string(b) != s {
		return string(b)
	}
	return s
}

// parsePrefix parses a single address or a CIDR into a masked prefix; a
// single address becomes a full-length prefix. IPv4-mapped IPv6 forms
// become IPv4.
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		ip, ok := parseIP(s)
		if !ok {
			return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a CIDR", s)
		}
		return netip.PrefixFrom(ip, ip.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a CIDR", s)
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// prefixString renders a blocklist key: a bare address for a full-length
// prefix, else the CIDR.
func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

func blockedError(reason string) *Error {
	msg := "address blocked"
	if reason != "" {
		msg += ": " + reason
	}
	return &Error{Code: CodeIPBlocked, Message: msg}
}

// unavailable marks a state failure as unavailable, keeping the cause for
// the log; the client sees only "service unavailable".
func unavailable(err error) error {
	if ErrorCode(err) == CodeUnavailable {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// authState holds the mutable state of an Auth: open connections, question
// windows and the blocklist. The in-memory implementation serves one node; a
// shared one (Redis) lets several nodes enforce the limits together.
//
// Every method is safe for concurrent use and takes now from the caller, so
// that one clock rules all nodes' decisions. Errors other than the *Error
// refusals named below mean the backend failed; Auth reports them as
// unavailable.
type authState interface {
	// acquireConn refuses with an ip_blocked *Error (message including the
	// reason, see blockedError) when addr is blocked, or a
	// too_many_connections *Error when addr holds max slots; otherwise it
	// records one slot for socketID at addr. Taking the slot is atomic; an
	// id that already holds a slot at addr succeeds without taking another.
	acquireConn(ctx context.Context, socketID, addr string, max int, now time.Time) error
	// releaseConn frees socketID's slot; an unknown id is a no-op.
	releaseConn(ctx context.Context, socketID string) error

	// reserveQuestion atomically checks both windows of lim and either
	// records one question in both, returning a release that removes
	// exactly that record (idempotent, callable from any goroutine), or
	// records nothing and returns a rate_limited *Error with RetryAfter > 0.
	reserveQuestion(ctx context.Context, sessionID, addr string, lim questionLimits, now time.Time) (release func(), err error)

	// block adds or replaces the entry for p; a zero expires means never.
	block(ctx context.Context, p netip.Prefix, reason string, expires time.Time) error
	// unblock removes the entry for exactly p and reports whether a live
	// one existed.
	unblock(ctx context.Context, p netip.Prefix, now time.Time) (bool, error)
	// lookup returns the reason of the most specific live entry containing
	// ip. It may drop expired entries.
	lookup(ctx context.Context, ip netip.Addr, now time.Time) (reason string, blocked bool, err error)

	// stats snapshots the open connections and the live blocklist.
	stats(ctx context.Context, now time.Time) (authStats, error)
	// sweep drops expired blocks and windows idle for longer than window.
	// A store with its own expiry may do nothing.
	sweep(ctx context.Context, now time.Time, window time.Duration) error
}

// questionLimits are the rate limits reserveQuestion enforces.
type questionLimits struct {
	perSession int
	perAddr    int
	window     time.Duration
}

// authStats is what authState.stats reports.
type authStats struct {
	perAddress map[string]int
	blocked    []BlockedAddress // ordered by Addr
}

// rateLimited is the refusal of a question over the session's (sWait) or
// the address's (aWait) limit: the client may retry after the longer wait.
func rateLimited(lim questionLimits, sWait, aWait time.Duration) *Error {
	scope, limit := "session", lim.perSession
	if aWait > sWait {
		scope, limit = "address", lim.perAddr
	}
	return &Error{
		Code:       CodeRateLimited,
		Message:    fmt.Sprintf("at most %d questions per %v per %s", limit, lim.window, scope),
		RetryAfter: max(sWait, aWait),
	}
}
