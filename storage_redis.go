package socketio

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

var _ Storage = (*RedisStorage)(nil)

const (
	redisDefaultPrefix        = "qa:"
	redisDefaultSweepInterval = time.Minute
	// redisSweepBatch bounds how many questions one sweep command removes,
	// and redisSweepMaxBatches how many commands one sweep sends, so that a
	// sweep never blocks the server for long.
	redisSweepBatch      = 1000
	redisSweepMaxBatches = 100
)

// The task and session scripts share the prelude of redis/storage_lib.lua.
// Every script names all its keys, and they share one hash slot, so that a
// Cluster (and a Ring, which routes by the same hash tags) runs it whatever
// client the storage is given.
var (
	//go:embed redis/storage_lib.lua
	redisLuaLib string
	//go:embed redis/storage_create_task.lua
	redisLuaCreateTask string
	//go:embed redis/storage_update_task.lua
	redisLuaUpdateTask string
	//go:embed redis/storage_history.lua
	redisLuaHistory string
	//go:embed redis/storage_clear_history.lua
	redisLuaClearHistory string
	//go:embed redis/storage_touch_session.lua
	redisLuaTouchSession string
	//go:embed redis/storage_claim_id.lua
	redisLuaClaimID string
	//go:embed redis/storage_unclaim_id.lua
	redisLuaUnclaimID string

	redisCreateTask   = redis.NewScript(redisLuaLib + redisLuaCreateTask)
	redisUpdateTask   = redis.NewScript(redisLuaLib + redisLuaUpdateTask)
	redisHistory      = redis.NewScript(redisLuaLib + redisLuaHistory)
	redisClearHistory = redis.NewScript(redisLuaLib + redisLuaClearHistory)
	redisTouchSession = redis.NewScript(redisLuaLib + redisLuaTouchSession)
	redisClaimID      = redis.NewScript(redisLuaClaimID)
	redisUnclaimID    = redis.NewScript(redisLuaUnclaimID)
)

// A stored task or session is a string of fields, each <length>:<bytes>,
// in a fixed order that redis/storage_lib.lua knows too, the first one the
// format version. Lua reads and rewrites a task without JSON (the fields scripts
// touch come first; the rest stays one opaque string), Go decodes one
// without reflection, and History fetches a page with one MGET.
const (
	redisFormatVersion = "1"
	// version, owner, session, status, updated, answered, answer, sources,
	// error, id, question, context, room, stream, asked; then, only when
	// the task has one, its usage. Tasks stored before usage existed have
	// the 15 fields alone and read as before; a task without usage is still
	// written that way, so older readers read it too.
	redisTaskFieldCount = 15
	// version, last seen, id, user, address, created, data
	redisSessionFieldCount = 7
)

var errRedisClosed = fmt.Errorf("socketio: redis storage closed: %w", ErrUnavailable)

// RedisStorageOptions configures a RedisStorage. The zero value means the
// defaults.
type RedisStorageOptions struct {
	// Prefix starts every key, so that several stores (or applications)
	// can share one database. A prefix containing a hash tag ({…}) puts
	// every key in one Cluster slot. default: "qa:"
	Prefix string
	// StorageOptions sets the TTLs and caps, with the same defaults as for
	// every Storage.
	StorageOptions
	// SweepInterval is how often the sweeper trims the popularity index to
	// MaxPopular questions, the one index that TTLs cannot bound.
	// default: 1m
	SweepInterval time.Duration
}

// RedisStorage is a Storage kept in Redis, shared by every process that
// uses the same Redis and Prefix. It works with any redis.UniversalClient,
// whatever its concrete type: a single server, Sentinel (a failover
// client), Cluster, Ring, or a client wrapping one of them. Its key layout
// does not depend on the client: no command names keys of two hash slots.
//
// Concurrency: all methods may be called concurrently, from any number of
// goroutines and processes. Each method is one round trip to Redis (one
// command, one Lua script or one pipeline; the first run of a script on a
// server also loads it), except CreateTask, which first claims the task id
// (see below), and each write is atomic: a call abandoned because ctx ended
// is applied whole or not at all. A method whose ctx is
// already done returns an error wrapping ctx.Err() without calling Redis;
// a failed call returns an error wrapping ErrUnavailable (and ctx.Err()
// when ctx ended meanwhile).
//
// Layout: a session is one string, <prefix>sess:{<id>}, that expires
// SessionTTL after its last save or touch. All of an owner's data shares
// the hash tag {h}, h a hash of the owner, so that one script can touch it
// all even in a Cluster: each task is a string <prefix>{h}:t:<id> that
// expires HistoryTTL after its last write, the history <prefix>{h}:h is a
// sorted set of task ids by creation, and <prefix>{h}:o:<session id> is the
// set of a session's unfinished tasks; both live as long as the owner's
// newest write. Ids of expired tasks are skipped, and dropped by the next
// write that meets them. The popularity index is the sorted set
// <prefix>pop, trimmed to MaxPopular by a sweeper every SweepInterval.
// The node leases of a Server (Options.NodeTTL) are <prefix>node:{<node>}
// and the tasks each node holds <prefix>node:{<node>}:t, listed in
// <prefix>nodes.
//
// Task ids are unique across owners: CreateTask first claims the id in
// <prefix>id:<id> (a string holding the owner, in a slot of its own), then
// stores the task with one script in the owner's slot; a claim whose task
// was refused (too many open tasks) is given back. A claim lives as long as
// its task would (UpdateTask restarts both): the id of a task that was
// trimmed or cleared stays its owner's until then, and a CreateTask
// abandoned between the two steps leaves only the claim. The open-task
// limit of CreateTask counts a session's unfinished tasks under the task's
// owner.
//
// Close stops the sweeper; it does not close the client, which the caller
// owns.
type RedisStorage struct {
	client redis.UniversalClient
	opts   StorageOptions
	prefix string
	// Script arguments, computed once.
	historyTTL string
	sessionTTL string
	maxHistory string

	// noSort is set once the server refused SORT … GET (an old Redis
	// Cluster, or a stand-in without SORT): History then always runs its
	// script.
	noSort atomic.Bool

	closed    atomic.Bool
	closeOnce sync.Once
	cancel    context.CancelFunc
	done      chan struct{}
}

// NewRedisStorage returns a RedisStorage that keeps its data in client,
// configured by opts, and starts its sweeper. Call Close to stop it. It
// panics when client is nil.
func NewRedisStorage(client redis.UniversalClient, opts RedisStorageOptions) *RedisStorage {
	if client == nil {
		panic("socketio: NewRedisStorage: nil client")
	}
	if opts.Prefix == "" {
		opts.Prefix = redisDefaultPrefix
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = redisDefaultSweepInterval
	}
	so := opts.StorageOptions.withDefaults()
	s := &RedisStorage{
		client:     client,
		opts:       so,
		prefix:     opts.Prefix,
		historyTTL: strconv.FormatInt(max(so.HistoryTTL.Milliseconds(), 1), 10),
		sessionTTL: strconv.FormatInt(max(so.SessionTTL.Milliseconds(), 1), 10),
		maxHistory: strconv.Itoa(so.MaxHistory),
		done:       make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.sweeper(ctx, opts.SweepInterval)
	return s
}

// Close stops the sweeper and waits for it to exit; after Close, methods
// return an error wrapping ErrUnavailable. It does not close the client.
// It is idempotent and always returns nil.
func (s *RedisStorage) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.cancel()
	})
	<-s.done
	return nil
}

// SaveSession creates or replaces a session and restarts its expiry.
func (s *RedisStorage) SaveSession(ctx context.Context, sess Session) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if sess.ID == "" {
		return errors.New("socketio: save session: empty session id")
	}
	if err := s.client.Set(ctx, s.sessionKey(sess.ID), redisEncodeSession(sess), s.opts.SessionTTL).Err(); err != nil {
		return s.fail(ctx, "save session", err)
	}
	return nil
}

// Session returns the session with the given id, or ErrNotFound.
func (s *RedisStorage) Session(ctx context.Context, id string) (Session, error) {
	if err := s.check(ctx); err != nil {
		return Session{}, err
	}
	raw, err := s.client.Get(ctx, s.sessionKey(id)).Result()
	if err != nil {
		return Session{}, s.fail(ctx, "session "+strconv.Quote(id), err)
	}
	sess, err := redisDecodeSession(raw)
	if err != nil {
		return Session{}, fmt.Errorf("socketio: redis: session %q: %w", id, err)
	}
	return sess, nil
}

// TouchSession sets the session's LastSeen to at and restarts its expiry.
func (s *RedisStorage) TouchSession(ctx context.Context, id string, at time.Time) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	n, err := redisTouchSession.Run(ctx, s.client, []string{s.sessionKey(id)},
		s.sessionTTL, redisFormatTime(at)).Int()
	if err != nil {
		return s.fail(ctx, "touch session", err)
	}
	if n == 0 {
		return fmt.Errorf("session %q: %w", id, ErrNotFound)
	}
	return nil
}

// DeleteSession removes a session; deleting an unknown one is not an error.
func (s *RedisStorage) DeleteSession(ctx context.Context, id string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := s.client.Del(ctx, s.sessionKey(id)).Err(); err != nil {
		return s.fail(ctx, "delete session", err)
	}
	return nil
}

// CreateTask stores a new pending task at the head of its owner's history
// unless its session already has maxOpen or more unfinished tasks
// (ErrTooManyTasks), then drops the owner's oldest finished tasks beyond
// MaxHistory. The task must have an ID and an Owner, its ID must be new,
// and its Status must be empty or TaskPending. A call retried after a lost
// reply (same id, owner, session, question and AskedAt) succeeds.
func (s *RedisStorage) CreateTask(ctx context.Context, t Task, maxOpen int) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := checkNewTask(t); err != nil {
		return err
	}
	t.Status = TaskPending
	idKey := s.idKey(t.ID)
	claim, err := redisClaimID.Run(ctx, s.client, []string{idKey}, t.Owner, s.historyTTL).Int()
	if err != nil {
		return s.fail(ctx, "create task", err)
	}
	if claim == 0 {
		return fmt.Errorf("socketio: create task %q: task id already exists", t.ID)
	}
	p := s.ownerPrefix(t.Owner)
	keys := []string{p + "t:" + t.ID, p + "h", p + "o:" + t.SessionID}
	n, err := redisCreateTask.Run(ctx, s.client, keys,
		p, s.historyTTL, s.maxHistory, maxOpen, t.ID, redisEncodeTask(t)).Int()
	if err != nil {
		// A server's error reply means the script wrote nothing (it checks
		// before it writes); after any other failure it may have run, and
		// the claim stays, reserving the id for this owner (a retry
		// succeeds) until it expires.
		var rerr redis.Error
		if claim == 1 && errors.As(err, &rerr) {
			s.unclaim(ctx, idKey, t.Owner)
		}
		return s.fail(ctx, "create task", err)
	}
	switch n {
	case 1:
		return nil
	case 0:
		if claim == 1 {
			s.unclaim(ctx, idKey, t.Owner)
		}
		return ErrTooManyTasks
	}
	// The owner has another task under this id (its claim had been lost):
	// the claim, renewed, is that task's.
	return fmt.Errorf("socketio: create task %q: task id already exists", t.ID)
}

// unclaim gives back an id claimed for a task that was not stored, best
// effort (a claim left behind reserves the id for its owner until it
// expires), within redisCleanupTimeout even when ctx has ended.
func (s *RedisStorage) unclaim(ctx context.Context, idKey, owner string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisCleanupTimeout)
	defer cancel()
	_ = redisUnclaimID.Run(ctx, s.client, []string{idKey}, owner).Err()
}

// Task returns the owner's task with the given id, or ErrNotFound.
func (s *RedisStorage) Task(ctx context.Context, owner, id string) (Task, error) {
	if err := s.check(ctx); err != nil {
		return Task{}, err
	}
	raw, err := s.client.Get(ctx, s.ownerPrefix(owner)+"t:"+id).Result()
	if err != nil {
		return Task{}, s.fail(ctx, "task "+strconv.Quote(id), err)
	}
	t, err := redisDecodeTask(raw)
	if err != nil {
		return Task{}, fmt.Errorf("socketio: redis: task %q: %w", id, err)
	}
	if t.Owner != owner {
		return Task{}, fmt.Errorf("task %q: %w", id, ErrNotFound)
	}
	return t, nil
}

// UpdateTask applies u to the task when TaskUpdate.Apply allows it and
// returns the task after the call and whether u was applied. An applied
// update restarts the task's expiry; a final one frees the task's open
// slot and trims the owner's history to MaxHistory. A zero u.At means now.
func (s *RedisStorage) UpdateTask(ctx context.Context, owner, id string, u TaskUpdate) (Task, bool, error) {
	if err := s.check(ctx); err != nil {
		return Task{}, false, err
	}
	if u.At.IsZero() {
		u.At = time.Now()
	}
	p := s.ownerPrefix(owner)
	keys := []string{p + "t:" + id, p + "h"}
	args := []any{p, s.historyTTL, s.maxHistory, owner, id,
		string(u.Status), redisFormatTime(u.At), u.Answer, redisEncodeSources(u.Sources), redisEncodeError(u.Error),
		redisEncodeUsage(u.Usage)}
	// The id's claim (in another slot) lives as long as the task: it is
	// restarted in the same pipeline. When the task is not this owner's or
	// not changed, that only keeps a live id reserved a little longer.
	pipe := s.client.Pipeline()
	cmd := redisUpdateTask.EvalSha(ctx, pipe, keys, args...)
	pipe.PExpire(ctx, s.idKey(id), s.opts.HistoryTTL)
	_, _ = pipe.Exec(ctx) // each command's error is in it
	if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		cmd = redisUpdateTask.Eval(ctx, s.client, keys, args...)
	}
	res, err := cmd.Slice()
	if err != nil {
		return Task{}, false, s.fail(ctx, "update task", err)
	}
	code := redisCode(res)
	if code < 0 || len(res) < 2 {
		return Task{}, false, fmt.Errorf("task %q: %w", id, ErrNotFound)
	}
	raw, _ := res[1].(string)
	t, err := redisDecodeTask(raw)
	if err != nil {
		return Task{}, false, fmt.Errorf("socketio: redis: task %q: %w", id, err)
	}
	return t, code == 1, nil
}

// History returns up to limit of the owner's tasks, most recently created
// first, starting after the task before when it is set. limit <= 0 means
// 20. before must be a live task of the owner, or History returns
// ErrNotFound.
func (s *RedisStorage) History(ctx context.Context, owner string, before string, limit int) ([]Task, bool, error) {
	if err := s.check(ctx); err != nil {
		return nil, false, err
	}
	if limit <= 0 {
		limit = memDefaultHistoryLimit
	}
	p := s.ownerPrefix(owner)
	if before == "" && !s.noSort.Load() {
		if items, hasMore, ok, err := s.firstPage(ctx, owner, p, limit); ok || err != nil {
			return items, hasMore, err
		}
	}
	res, err := redisHistory.Run(ctx, s.client, []string{p + "h"}, p, before, limit).Slice()
	if err != nil {
		return nil, false, s.fail(ctx, "history", err)
	}
	if len(res) == 1 {
		if code, ok := res[0].(int64); ok && code < 0 {
			return nil, false, fmt.Errorf("history of %q before task %q: %w", owner, before, ErrNotFound)
		}
	}
	items := make([]Task, 0, min(len(res), limit))
	hasMore := false
	for _, r := range res {
		raw, _ := r.(string)
		t, err := redisDecodeTask(raw)
		if err != nil {
			return nil, false, fmt.Errorf("socketio: redis: history of %q: %w", owner, err)
		}
		if t.Owner != owner {
			continue // an owner whose hash tag collides with this one's
		}
		if len(items) == limit {
			hasMore = true
			break
		}
		items = append(items, t)
	}
	return items, hasMore, nil
}

// firstPage reads the newest page of a history with one native command,
// SORT … BY nosort GET, which costs the server a fraction of the script.
// ok is false when the answer is not conclusive (an expired task inside a
// full page, or a server without SORT … GET): History then runs its script.
func (s *RedisStorage) firstPage(ctx context.Context, owner, p string, limit int) (items []Task, hasMore, ok bool, err error) {
	vals, err := s.client.SortRO(ctx, p+"h", &redis.Sort{
		By: "nosort", Get: []string{p + "t:*"}, Order: "DESC", Offset: 0, Count: int64(limit + 1),
	}).Result()
	if err != nil {
		var rerr redis.Error
		if errors.As(err, &rerr) && ctx.Err() == nil {
			// The server refused the command itself: no SORT, or no GET
			// patterns (Redis Cluster before 7.0).
			s.noSort.Store(true)
			return nil, false, false, nil
		}
		return nil, false, false, s.fail(ctx, "history", err)
	}
	full := len(vals) == limit+1
	items = make([]Task, 0, min(len(vals), limit))
	for _, raw := range vals {
		if raw == "" { // expired: its id waits in the history for a trim
			if full {
				return nil, false, false, nil
			}
			continue
		}
		t, err := redisDecodeTask(raw)
		if err != nil {
			return nil, false, false, fmt.Errorf("socketio: redis: history of %q: %w", owner, err)
		}
		if t.Owner != owner {
			if full {
				return nil, false, false, nil
			}
			continue // an owner whose hash tag collides with this one's
		}
		if len(items) == limit {
			return items, true, true, nil
		}
		items = append(items, t)
	}
	return items, false, true, nil
}

// ClearHistory deletes the owner's finished tasks and returns how many it
// deleted. Unfinished tasks stay.
func (s *RedisStorage) ClearHistory(ctx context.Context, owner string) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	p := s.ownerPrefix(owner)
	n, err := redisClearHistory.Run(ctx, s.client, []string{p + "h"}, p, owner).Int()
	if err != nil {
		return 0, s.fail(ctx, "clear history", err)
	}
	return n, nil
}

// RecordQuestion counts one more asking of question. The index may hold
// more than MaxPopular questions until the next sweep, which keeps the
// most asked ones.
func (s *RedisStorage) RecordQuestion(ctx context.Context, question string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if question == "" {
		return errors.New("socketio: record question: empty question")
	}
	// Scores are minus the counts, so that ascending order is most asked
	// first and, among equals, lexicographically smaller first.
	if err := s.client.ZIncrBy(ctx, s.popularKey(), -1, question).Err(); err != nil {
		return s.fail(ctx, "record question", err)
	}
	return nil
}

// PopularQuestions returns up to limit questions (at most MaxPopular),
// most asked first; ties go to the lexicographically smaller. limit <= 0
// means 10.
func (s *RedisStorage) PopularQuestions(ctx context.Context, limit int) ([]string, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = memDefaultPopularLimit
	}
	limit = min(limit, s.opts.MaxPopular)
	out, err := s.client.ZRange(ctx, s.popularKey(), 0, int64(limit-1)).Result()
	if err != nil {
		return nil, s.fail(ctx, "popular questions", err)
	}
	return out, nil
}

// sweeper runs sweepPopular every interval until ctx is done.
func (s *RedisStorage) sweeper(ctx context.Context, interval time.Duration) {
	defer close(s.done)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			// A failed sweep is retried at the next tick; the index only
			// grows meanwhile.
			_, _ = s.sweepPopular(ctx)
		}
	}
}

// sweepPopular removes the least asked questions beyond MaxPopular, at most
// redisSweepBatch per command and redisSweepMaxBatches commands per call,
// and returns how many it removed.
func (s *RedisStorage) sweepPopular(ctx context.Context) (int, error) {
	keep := int64(s.opts.MaxPopular)
	removed := 0
	for range redisSweepMaxBatches {
		n, err := s.client.ZRemRangeByRank(ctx, s.popularKey(), keep, keep+redisSweepBatch-1).Result()
		if err != nil {
			return removed, s.fail(ctx, "sweep popular questions", err)
		}
		removed += int(n)
		if n < redisSweepBatch {
			break
		}
	}
	return removed, nil
}

// check returns an error when the storage is closed or ctx is done.
func (s *RedisStorage) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("socketio: redis: %w", err)
	}
	if s.closed.Load() {
		return errRedisClosed
	}
	return nil
}

// fail wraps an error of the client: redis.Nil (a missing key) becomes
// ErrNotFound, any other ErrUnavailable, with ctx.Err() when ctx ended
// meanwhile.
func (s *RedisStorage) fail(ctx context.Context, op string, err error) error {
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("socketio: redis: %s: %w", op, ErrNotFound)
	}
	ctxErr := ctx.Err()
	if dl, ok := ctx.Deadline(); ok && ctxErr == nil && !time.Now().Before(dl) {
		// The connection's deadline, set from ctx's, fired first.
		ctxErr = context.DeadlineExceeded
	}
	if ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("socketio: redis: %s: %w: %w (%w)", op, ErrUnavailable, ctxErr, err)
	}
	return fmt.Errorf("socketio: redis: %s: %w: %w", op, ErrUnavailable, err)
}

func (s *RedisStorage) sessionKey(id string) string { return s.prefix + "sess:{" + id + "}" }
func (s *RedisStorage) popularKey() string          { return s.prefix + "pop" }
func (s *RedisStorage) idKey(id string) string      { return s.prefix + "id:" + id }

// ownerPrefix starts the keys of an owner's data: the prefix and the
// owner's hash tag, {h}, where h is the first 96 bits of the owner's
// SHA-256 in base64url. A hash keeps any owner string, braces included,
// out of the tag syntax.
func (s *RedisStorage) ownerPrefix(owner string) string {
	sum := sha256.Sum256([]byte(owner))
	var tag [16]byte
	base64.RawURLEncoding.Encode(tag[:], sum[:12])
	return s.prefix + "{" + string(tag[:]) + "}:"
}

// redisEncodeTask encodes t in the format of redis/storage_lib.lua.
func redisEncodeTask(t Task) string {
	stream := ""
	if t.Stream {
		stream = "1"
	}
	b := make([]byte, 0, 128+len(t.ID)+len(t.Owner)+len(t.Question)+len(t.Context)+len(t.Answer))
	for _, f := range [redisTaskFieldCount]string{
		redisFormatVersion, t.Owner, t.SessionID, string(t.Status),
		redisFormatTime(t.UpdatedAt), redisFormatTime(t.AnsweredAt), t.Answer,
		redisEncodeSources(t.Sources), redisEncodeError(t.Error),
		t.ID, t.Question, t.Context, t.Room, stream, redisFormatTime(t.AskedAt),
	} {
		b = redisAppendField(b, f)
	}
	if t.Usage != nil {
		b = redisAppendField(b, redisEncodeUsage(t.Usage))
	}
	return string(b)
}

// redisDecodeTask decodes redisEncodeTask's output. The strings of the
// task share raw's memory.
func redisDecodeTask(raw string) (Task, error) {
	var f [redisTaskFieldCount]string
	rest, err := redisSplitFieldsRest(raw, f[:])
	if err != nil {
		return Task{}, fmt.Errorf("corrupt task: %w", err)
	}
	var usage *Usage
	if rest != "" {
		var u string
		if u, rest, err = redisNextField(rest); err != nil || rest != "" {
			return Task{}, errors.New("corrupt task: trailing bytes")
		}
		if usage, err = redisDecodeUsage(u); err != nil {
			return Task{}, fmt.Errorf("corrupt task usage: %w", err)
		}
	}
	t := Task{
		Owner:      f[1],
		SessionID:  f[2],
		Status:     TaskStatus(f[3]),
		UpdatedAt:  redisParseTime(f[4]),
		AnsweredAt: redisParseTime(f[5]),
		Answer:     f[6],
		ID:         f[9],
		Question:   f[10],
		Context:    f[11],
		Room:       f[12],
		Stream:     f[13] == "1",
		AskedAt:    redisParseTime(f[14]),
		Usage:      usage,
	}
	if t.Sources, err = redisSplitList(f[7]); err != nil {
		return Task{}, fmt.Errorf("corrupt task sources: %w", err)
	}
	if f[8] != "" {
		var e [2]string
		if err := redisSplitFields(f[8], e[:]); err != nil {
			return Task{}, fmt.Errorf("corrupt task error: %w", err)
		}
		t.Error = &TaskError{Code: Code(e[0]), Message: e[1]}
	}
	return t, nil
}

// redisEncodeSession encodes s like a task: version, last seen, id, user,
// address, created, and the data as a list of keys and values.
func redisEncodeSession(s Session) string {
	var data []byte
	for k, v := range s.Data {
		data = redisAppendField(data, k)
		data = redisAppendField(data, v)
	}
	b := make([]byte, 0, 96+len(s.ID)+len(s.UserID)+len(s.Address)+len(data))
	for _, f := range [redisSessionFieldCount]string{
		redisFormatVersion, redisFormatTime(s.LastSeen), s.ID, s.UserID, s.Address,
		redisFormatTime(s.CreatedAt), string(data),
	} {
		b = redisAppendField(b, f)
	}
	return string(b)
}

// redisDecodeSession decodes redisEncodeSession's output.
func redisDecodeSession(raw string) (Session, error) {
	var f [redisSessionFieldCount]string
	if err := redisSplitFields(raw, f[:]); err != nil {
		return Session{}, fmt.Errorf("corrupt session: %w", err)
	}
	s := Session{
		LastSeen:  redisParseTime(f[1]),
		ID:        f[2],
		UserID:    f[3],
		Address:   f[4],
		CreatedAt: redisParseTime(f[5]),
	}
	data, err := redisSplitList(f[6])
	if err == nil && len(data)%2 != 0 {
		err = errors.New("a key without a value")
	}
	if err != nil {
		return Session{}, fmt.Errorf("corrupt session data: %w", err)
	}
	if len(data) > 0 {
		s.Data = make(map[string]string, len(data)/2)
		for i := 0; i < len(data); i += 2 {
			s.Data[data[i]] = data[i+1]
		}
	}
	return s, nil
}

// redisEncodeSources encodes sources as a list of fields, "" when empty.
func redisEncodeSources(sources []string) string {
	var b []byte
	for _, src := range sources {
		b = redisAppendField(b, src)
	}
	return string(b)
}

// redisEncodeError encodes e as two fields, code and message; "" when nil.
func redisEncodeError(e *TaskError) string {
	if e == nil {
		return ""
	}
	return string(redisAppendField(redisAppendField(nil, string(e.Code)), e.Message))
}

// redisAppendField appends f as <length>:<bytes>.
func redisAppendField(b []byte, f string) []byte {
	b = strconv.AppendInt(b, int64(len(f)), 10)
	b = append(b, ':')
	return append(b, f...)
}

// redisNextField splits the first field off s.
func redisNextField(s string) (field, rest string, err error) {
	colon := strings.IndexByte(s, ':')
	if colon < 0 {
		return "", "", errors.New("missing field")
	}
	n, err := strconv.Atoi(s[:colon])
	if err != nil || n < 0 || n > len(s)-colon-1 {
		return "", "", errors.New("bad field length")
	}
	return s[colon+1 : colon+1+n], s[colon+1+n:], nil
}

// redisSplitFields splits s into exactly len(f) fields. A task or a session
// (more than two fields) must start with the version this code writes.
func redisSplitFields(s string, f []string) error {
	rest, err := redisSplitFieldsRest(s, f)
	if err == nil && rest != "" {
		err = errors.New("trailing bytes")
	}
	return err
}

// redisSplitFieldsRest is redisSplitFields that returns what follows the
// len(f) fields instead of refusing it.
func redisSplitFieldsRest(s string, f []string) (string, error) {
	var err error
	for i := range f {
		if f[i], s, err = redisNextField(s); err != nil {
			return "", err
		}
	}
	if len(f) > 2 && f[0] != redisFormatVersion {
		return "", fmt.Errorf("unknown format version %q", f[0])
	}
	return s, nil
}

// redisEncodeUsage encodes u as "prompt,completion,total"; nil is "".
func redisEncodeUsage(u *Usage) string {
	if u == nil {
		return ""
	}
	return strconv.Itoa(u.PromptTokens) + "," + strconv.Itoa(u.CompletionTokens) + "," + strconv.Itoa(u.TotalTokens)
}

// redisDecodeUsage decodes redisEncodeUsage's output.
func redisDecodeUsage(s string) (*Usage, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return nil, errors.New("want 3 counts")
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil {
			return nil, errors.New("bad count")
		}
		n[i] = v
	}
	return &Usage{PromptTokens: n[0], CompletionTokens: n[1], TotalTokens: n[2]}, nil
}

// redisSplitList splits s into all its fields; "" is nil.
func redisSplitList(s string) ([]string, error) {
	var list []string
	for s != "" {
		var f string
		var err error
		if f, s, err = redisNextField(s); err != nil {
			return nil, err
		}
		list = append(list, f)
	}
	return list, nil
}

// redisCode returns the status code that starts a script's reply, -1 when
// there is none.
func redisCode(res []any) int64 {
	if len(res) == 0 {
		return -1
	}
	code, ok := res[0].(int64)
	if !ok {
		return -1
	}
	return code
}

// redisFormatTime renders t as Unix milliseconds, "" for the zero time.
func redisFormatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

// redisParseTime parses redisFormatTime's output; anything else is the zero
// time.
func redisParseTime(s string) time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
