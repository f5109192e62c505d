// Package streamq holds the Redis Streams mechanics of a durable answer
// queue: nodes (producers) add task entries to a stream, workers
// (consumers of one consumer group) take, heartbeat and acknowledge them,
// and nodes read an events stream that workers write, to push progress to
// their clients.
//
// Every key lives under one hash tag, <Prefix>{aq}:…, so that scripts,
// MULTI blocks and pipelines never span two Redis Cluster slots:
//
//	<Prefix>{aq}:tasks           stream of task entries (field "p": payload)
//	<Prefix>{aq}:events          stream of events (field "e")
//	<Prefix>{aq}:dead            stream of dead-lettered entries
//	<Prefix>{aq}:partial:<task>  hash: the latest partial answer of a task
//	<Prefix>{aq}:claims:<entry>  how many times the entry was claimed
//	<Prefix>{aq}:attempt:<entry> how many times the entry was delivered
//	<Prefix>{aq}:cancel          pub/sub channel of cancelled task ids
//
// Acknowledged and dead-lettered entries are deleted from the tasks stream
// (XDEL), so its length is the number of unanswered entries.
package streamq

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrFull is returned by Add when the queue already holds Config.Limit
// unanswered entries; nothing was written.
var ErrFull = errors.New("streamq: queue is full")

// Defaults of Config.
const (
	DefaultGroup        = "workers"
	DefaultLimit        = 10000
	DefaultEventsMaxLen = 100000
	DefaultDeadMaxLen   = 10000
	DefaultClaimAfter   = 30 * time.Second
	DefaultMaxClaims    = 3
	DefaultKeyTTL       = 24 * time.Hour
	DefaultEventsBlock  = time.Second
)

// Config configures a Queue. Zero (or negative) fields take their defaults.
type Config struct {
	// Prefix is prepended to every key and to the cancel channel, e.g.
	// "qa:". default: "" (keys start with "{aq}:").
	Prefix string
	// Group is the consumer group of the workers. It is created on demand
	// (MKSTREAM, from id 0) and again whenever Redis answers NOGROUP, e.g.
	// after Redis restarted empty. default: "workers"
	Group string
	// Limit is the most unanswered entries (waiting and in progress) the
	// queue holds; Add refuses with ErrFull beyond it. The tasks stream is
	// also capped at about 2*Limit entries as a safety net. default: 10000
	Limit int64
	// EventsMaxLen is the approximate length (MAXLEN ~) the events stream
	// is trimmed to. default: 100000
	EventsMaxLen int64
	// DeadMaxLen is the approximate length (MAXLEN ~) the dead-letter
	// stream is trimmed to. default: 10000
	DeadMaxLen int64
	// ClaimAfter is how long an entry must have been idle (not delivered,
	// claimed or touched) before Claim hands it to another consumer.
	// Redis keeps idle times in milliseconds. default: 30s
	ClaimAfter time.Duration
	// MaxClaims is how many claims an entry survives: the claim that
	// brings it beyond MaxClaims returns it flagged Dead. default: 3
	MaxClaims int
	// KeyTTL is the expiry of the per-task keys (partial, claims,
	// attempt), refreshed on every write. default: 24h
	KeyTTL time.Duration
	// EventsBlock is how long one blocking XREAD of Events waits. It bounds
	// how long Events takes to return after its context ends: go-redis
	// does not interrupt a blocking command when its context is cancelled.
	// default: 1s
	EventsBlock time.Duration
	// OnError, when set, is told of the errors that Events and Cancels
	// retry on their own (they return none), e.g. to log them. It must not
	// block. default: nil
	OnError func(err error)
}

// Partial is the latest partial answer of a task, as a worker wrote it.
type Partial struct {
	// Attempt is the delivery attempt that wrote it.
	Attempt int
	// Seq is the sequence number of the last chunk it includes.
	Seq int
	// Text is the answer text so far.
	Text string
}

// Delivery is a task entry handed to a consumer by Read or Claim.
type Delivery struct {
	// ID is the stream entry id, to pass to Touch, Ack, Release and
	// DeadLetter.
	ID string
	// Payload is the opaque payload given to Add.
	Payload []byte
	// Attempt counts the deliveries of the entry, this one included: 1 for
	// a first delivery; 0 when Read could not update the counter (Redis
	// failed after delivering).
	Attempt int
	// Claims counts how many times the entry was claimed from an idle
	// consumer (releases excepted); 0 for a delivery by Read.
	Claims int
	// Dead reports that Claims exceeds Config.MaxClaims: the entry should
	// be dead-lettered rather than processed again.
	Dead bool
}

// Queue is a durable queue on Redis Streams. It is safe for concurrent
// use; it starts no goroutines of its own except those of Cancels.
type Queue struct {
	rdb redis.UniversalClient
	cfg Config

	tasks, events, dead, cancel string
	base                        string
}

// New returns a Queue on rdb. It sends no command; the consumer group is
// created by the first Read or Claim that needs it.
func New(rdb redis.UniversalClient, cfg Config) *Queue {
	if cfg.Group == "" {
		cfg.Group = DefaultGroup
	}
	if cfg.Limit <= 0 {
		cfg.Limit = DefaultLimit
	}
	if cfg.EventsMaxLen <= 0 {
		cfg.EventsMaxLen = DefaultEventsMaxLen
	}
	if cfg.DeadMaxLen <= 0 {
		cfg.DeadMaxLen = DefaultDeadMaxLen
	}
	if cfg.ClaimAfter <= 0 {
		cfg.ClaimAfter = DefaultClaimAfter
	}
	if cfg.MaxClaims <= 0 {
		cfg.MaxClaims = DefaultMaxClaims
	}
	if cfg.KeyTTL <= 0 {
		cfg.KeyTTL = DefaultKeyTTL
	}
	if cfg.EventsBlock <= 0 {
		cfg.EventsBlock = DefaultEventsBlock
	}
	base := cfg.Prefix + "{aq}:"
	return &Queue{
		rdb:    rdb,
		cfg:    cfg,
		base:   base,
		tasks:  base + "tasks",
		events: base + "events",
		dead:   base + "dead",
		cancel: base + "cancel",
	}
}

// Config returns the configuration of q, defaults filled in.
func (q *Queue) Config() Config { return q.cfg }

// TasksKey returns the key of the tasks stream.
func (q *Queue) TasksKey() string { return q.tasks }

// EventsKey returns the key of the events stream.
func (q *Queue) EventsKey() string { return q.events }

// DeadKey returns the key of the dead-letter stream.
func (q *Queue) DeadKey() string { return q.dead }

// CancelChannel returns the pub/sub channel Cancel publishes on.
func (q *Queue) CancelChannel() string { return q.cancel }

func (q *Queue) partialKey(taskID string) string { return q.base + "partial:" + taskID }
func (q *Queue) claimsKey(id string) string      { return q.base + "claims:" + id }
func (q *Queue) attemptKey(id string) string     { return q.base + "attempt:" + id }

// addEvents queues an XADD of every event on pipe.
func (q *Queue) addEvents(ctx context.Context, pipe redis.Pipeliner, events [][]byte) {
	for _, e := range events {
		pipe.XAdd(ctx, &redis.XAddArgs{
			Stream: q.events,
			MaxLen: q.cfg.EventsMaxLen,
			Approx: true,
			Values: []any{"e", e},
		})
	}
}

// ---------------------------------------------------------------------
// Producer side

// Len returns the number of unanswered entries: waiting and in progress.
func (q *Queue) Len(ctx context.Context) (int64, error) {
	return q.rdb.XLen(ctx, q.tasks).Result()
}

// addScript adds a task entry and its events unless the queue is full.
// KEYS: tasks, events. ARGV: limit, tasks cap, events maxlen, payload,
// events….
var addScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return false
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'p', ARGV[4])
for i = 5, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[i])
end
return id
`)

// Add appends a task entry holding payload, and the events after it,
// atomically: when the queue already holds Config.Limit unanswered entries
// it returns ErrFull and writes nothing. It returns the entry id.
func (q *Queue) Add(ctx context.Context, payload []byte, events ...[]byte) (string, error) {
	args := make([]any, 0, 4+len(events))
	args = append(args, q.cfg.Limit, 2*q.cfg.Limit, q.cfg.EventsMaxLen, payload)
	for _, e := range events {
		args = append(args, e)
	}
	id, err := addScript.Run(ctx, q.rdb, []string{q.tasks, q.events}, args...).Text()
	if errors.Is(err, redis.Nil) {
		return "", ErrFull
	}
	if err != nil {
		return "", fmt.Errorf("streamq: add: %w", err)
	}
	return id, nil
}

// Publish appends events to the events stream, in order, in one MULTI.
func (q *Queue) Publish(ctx context.Context, events ...[]byte) error {
	if len(events) == 0 {
		return nil
	}
	_, err := q.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		q.addEvents(ctx, pipe, events)
		return nil
	})
	if err != nil {
		return fmt.Errorf("streamq: publish: %w", err)
	}
	return nil
}

// Cancel publishes taskID on the cancel channel, to every Cancels
// subscriber. Like all pub/sub, it reaches only those subscribed now.
func (q *Queue) Cancel(ctx context.Context, taskID string) error {
	if err := q.rdb.Publish(ctx, q.cancel, taskID).Err(); err != nil {
		return fmt.Errorf("streamq: cancel: %w", err)
	}
	return nil
}

// Partial returns the partial answer of taskID that SetPartial stored,
// and false when there is none.
func (q *Queue) Partial(ctx context.Context, taskID string) (Partial, bool, error) {
	m, err := q.rdb.HGetAll(ctx, q.partialKey(taskID)).Result()
	if err != nil {
		return Partial{}, false, fmt.Errorf("streamq: partial: %w", err)
	}
	if len(m) == 0 {
		return Partial{}, false, nil
	}
	var p Partial
	if p.Attempt, err = strconv.Atoi(m["a"]); err != nil {
		return Partial{}, false, fmt.Errorf("streamq: partial %s: attempt: %w", taskID, err)
	}
	if p.Seq, err = strconv.Atoi(m["s"]); err != nil {
		return Partial{}, false, fmt.Errorf("streamq: partial %s: seq: %w", taskID, err)
	}
	p.Text = m["t"]
	return p, true, nil
}

// ---------------------------------------------------------------------
// Events reader

// EventsTail returns the id of the newest entry of the events stream, or
// "0-0" when it is empty: the position to give EventsAfter to read every
// event added from now on.
func (q *Queue) EventsTail(ctx context.Context) (string, error) {
	msgs, err := q.rdb.XRevRangeN(ctx, q.events, "+", "-", 1).Result()
	if err != nil {
		return "", fmt.Errorf("streamq: events tail: %w", err)
	}
	if len(msgs) == 0 {
		return "0-0", nil
	}
	return msgs[0].ID, nil
}

// Events calls fn with every event added to the events stream after
// Events was called, in stream order, until ctx ends; it then returns nil.
// It positions itself with EventsTail (retrying on errors like the reads)
// and goes on as EventsAfter. A caller that must know when the reader is
// positioned calls EventsTail itself and then EventsAfter.
func (q *Queue) Events(ctx context.Context, fn func(event []byte)) error {
	b := newBackoff()
	for {
		after, err := q.EventsTail(ctx)
		if err == nil {
			return q.EventsAfter(ctx, after, fn)
		}
		if ctx.Err() != nil {
			return nil
		}
		q.onError(err)
		if !b.wait(ctx) {
			return nil
		}
	}
}

// EventsAfter calls fn with every event of the events stream whose id is
// greater than after, in stream order, until ctx ends; it then returns
// nil. fn runs on the caller's goroutine, one event at a time.
//
// It reads with XREAD BLOCK from the id of the last event it handed to fn,
// so a dropped connection loses nothing still in the stream: on errors it
// backs off (jittered, 50ms doubling to 2s) and reads on from that id. If
// the events after that id were trimmed away meanwhile, it goes on from
// the oldest one left. ctx is checked between reads: Events returns at
// most about Config.EventsBlock after ctx ends.
//
// Stream ids come from the server's clock (milliseconds). When Redis
// loses the stream (a restart with no persistence) it goes on with the
// new entries, whose ids are above the last one read unless the new
// server's clock is behind the old one's (a failover to a replica on a
// host whose clock lags): then the events until the ids pass the last one
// read are missed.
func (q *Queue) EventsAfter(ctx context.Context, after string, fn func(event []byte)) error {
	b := newBackoff()
	for ctx.Err() == nil {
		streams, err := q.rdb.XRead(ctx, &redis.XReadArgs{
			Streams: []string{q.events, after},
			Count:   1000,
			Block:   q.cfg.EventsBlock,
		}).Result()
		if errors.Is(err, redis.Nil) {
			b.reset()
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			q.onError(fmt.Errorf("streamq: events: %w", err))
			if !b.wait(ctx) {
				return nil
			}
			continue
		}
		b.reset()
		for _, s := range streams {
			for _, m := range s.Messages {
				after = m.ID
				if e, ok := field(m.Values, "e"); ok {
					fn(e)
				}
			}
		}
	}
	return nil
}

func (q *Queue) onError(err error) {
	if q.cfg.OnError != nil {
		q.cfg.OnError(err)
	}
}

// field returns the value of name in the fields of an entry.
func field(values map[string]any, name string) ([]byte, bool) {
	switch v := values[name].(type) {
	case string:
		return []byte(v), true
	case []byte:
		return v, true
	}
	return nil, false
}

// backoff is a jittered exponential backoff, 50ms doubling to 2s.
type backoff struct{ d time.Duration }

const (
	backoffMin = 50 * time.Millisecond
	backoffMax = 2 * time.Second
)

func newBackoff() *backoff { return &backoff{d: backoffMin} }

func (b *backoff) reset() { b.d = backoffMin }

// wait sleeps a random duration in [d/2, d), doubles d, and reports
// whether ctx is still live.
func (b *backoff) wait(ctx context.Context) bool {
	sleep := b.d/2 + rand.N(b.d/2)
	b.d = min(2*b.d, backoffMax)
	t := time.NewTimer(sleep)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ---------------------------------------------------------------------
// Consumer side

// isNoGroup reports whether err is Redis's NOGROUP: the stream or the
// group does not exist (any more).
func isNoGroup(err error) bool {
	return err != nil && strings.Contains(err.Error(), "NOGROUP")
}

// ensureGroup creates the consumer group (and the stream) from id 0, so
// that a group recreated after a data loss delivers every entry left.
func (q *Queue) ensureGroup(ctx context.Context) error {
	err := q.rdb.XGroupCreateMkStream(ctx, q.tasks, q.cfg.Group, "0").Err()
	if err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("streamq: create group %s: %w", q.cfg.Group, err)
	}
	return nil
}

// withGroup runs f, and when it fails with NOGROUP creates the group and
// runs it once more.
func (q *Queue) withGroup(ctx context.Context, f func() error) error {
	err := f()
	if !isNoGroup(err) {
		return err
	}
	if err := q.ensureGroup(ctx); err != nil {
		return err
	}
	return f()
}

// Read hands consumer up to count new entries (XREADGROUP >), waiting up
// to block for the first one when there is none; block <= 0 does not
// wait. It returns no deliveries and no error when none came. Every
// delivery's attempt counter is incremented (Attempt is 1 for a first
// delivery). Like Events, a blocking Read is not interrupted by ctx.
// Deliveries are pending on consumer until acknowledged (Ack, DeadLetter),
// handed back (Release) or claimed by another consumer once idle for
// ClaimAfter: a worker calls Touch more often than that.
func (q *Queue) Read(ctx context.Context, consumer string, count int, block time.Duration) ([]Delivery, error) {
	if count <= 0 {
		count = 1
	}
	args := &redis.XReadGroupArgs{
		Group:    q.cfg.Group,
		Consumer: consumer,
		Streams:  []string{q.tasks, ">"},
		Count:    int64(count),
		Block:    -1, // go-redis: Block 0 means BLOCK 0, forever
	}
	if block > 0 {
		args.Block = max(block, time.Millisecond)
	}
	var streams []redis.XStream
	err := q.withGroup(ctx, func() error {
		var err error
		streams, err = q.rdb.XReadGroup(ctx, args).Result()
		return err
	})
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("streamq: read: %w", err)
	}
	var out []Delivery
	for _, s := range streams {
		for _, m := range s.Messages {
			p, ok := field(m.Values, "p")
			if !ok {
				continue // deleted meanwhile; cannot happen with ">"
			}
			out = append(out, Delivery{ID: m.ID, Payload: p})
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	attempts := make([]*redis.IntCmd, len(out))
	_, err = q.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, d := range out {
			attempts[i] = pipe.Incr(ctx, q.attemptKey(d.ID))
			pipe.PExpire(ctx, q.attemptKey(d.ID), q.cfg.KeyTTL)
		}
		return nil
	})
	if err != nil {
		// The entries are ours now (pending): hand them out with Attempt
		// 0 (unknown) rather than leave them idle until claimed.
		return out, nil
	}
	for i := range out {
		out[i].Attempt = int(attempts[i].Val())
	}
	return out, nil
}

// maxClaimRounds bounds the XAUTOCLAIM calls of one Claim.
const maxClaimRounds = 8

// Claim hands consumer up to count entries that other consumers left idle
// for Config.ClaimAfter or longer (XAUTOCLAIM). Every claimed entry's
// claims and attempt counters are incremented; an entry claimed more than
// Config.MaxClaims times comes back flagged Dead. Entries whose stream
// data is gone (trimmed or deleted) are acknowledged and skipped.
func (q *Queue) Claim(ctx context.Context, consumer string, count int) ([]Delivery, error) {
	if count <= 0 {
		count = 1
	}
	minIdle := q.cfg.ClaimAfter.Milliseconds()
	var out []Delivery
	var gone []string
	start := "0-0"
	for round := 0; round < maxClaimRounds && len(out) < count; round++ {
		var raw any
		err := q.withGroup(ctx, func() error {
			var err error
			raw, err = q.rdb.Do(ctx, "XAUTOCLAIM", q.tasks, q.cfg.Group, consumer,
				minIdle, start, "COUNT", count-len(out)).Result()
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("streamq: claim: %w", err)
		}
		next, claimed, deleted, err := parseAutoclaim(raw)
		if err != nil {
			return nil, fmt.Errorf("streamq: claim: %w", err)
		}
		out = append(out, claimed...)
		gone = append(gone, deleted...)
		if next == "0-0" || next == "" {
			break
		}
		start = next
	}
	// Entries claimed with nil data (Redis 6.2) are still pending: ack
	// them. Redis 7 drops deleted ids from the pending list itself.
	kept := out[:0]
	for _, d := range out {
		if d.Payload == nil {
			gone = append(gone, d.ID)
			continue
		}
		kept = append(kept, d)
	}
	out = kept
	if len(gone) > 0 {
		_, err := q.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, id := range gone {
				pipe.XAck(ctx, q.tasks, q.cfg.Group, id)
				pipe.Del(ctx, q.claimsKey(id), q.attemptKey(id))
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("streamq: claim: ack deleted entries: %w", err)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	claims := make([]*redis.IntCmd, len(out))
	attempts := make([]*redis.IntCmd, len(out))
	_, err := q.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, d := range out {
			claims[i] = pipe.Incr(ctx, q.claimsKey(d.ID))
			pipe.PExpire(ctx, q.claimsKey(d.ID), q.cfg.KeyTTL)
			attempts[i] = pipe.Incr(ctx, q.attemptKey(d.ID))
			pipe.PExpire(ctx, q.attemptKey(d.ID), q.cfg.KeyTTL)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("streamq: claim: counters: %w", err)
	}
	for i := range out {
		out[i].Claims = int(claims[i].Val())
		out[i].Attempt = int(attempts[i].Val())
		out[i].Dead = out[i].Claims > q.cfg.MaxClaims
	}
	return out, nil
}

// parseAutoclaim reads the reply of XAUTOCLAIM: the next cursor, the
// claimed entries (Payload nil when the entry's data is gone, as Redis 6.2
// reports it) and, from Redis 7, the ids of deleted entries it dropped.
func parseAutoclaim(raw any) (next string, claimed []Delivery, deleted []string, err error) {
	top, ok := raw.([]any)
	if !ok || len(top) < 2 {
		return "", nil, nil, fmt.Errorf("unexpected XAUTOCLAIM reply %T", raw)
	}
	next, _ = top[0].(string)
	entries, _ := top[1].([]any)
	for _, e := range entries {
		pair, ok := e.([]any)
		if !ok || len(pair) < 1 {
			continue // nil entry without id: nothing to do with it
		}
		id, _ := pair[0].(string)
		d := Delivery{ID: id}
		if len(pair) > 1 {
			d.Payload = fieldOf(pair[1], "p")
		}
		claimed = append(claimed, d)
	}
	if len(top) > 2 {
		ids, _ := top[2].([]any)
		for _, v := range ids {
			if id, ok := v.(string); ok {
				deleted = append(deleted, id)
			}
		}
	}
	return next, claimed, deleted, nil
}

// fieldOf returns the value of name in a raw field list (array in RESP2
// and RESP3, map tolerated), nil when absent.
func fieldOf(raw any, name string) []byte {
	switch fv := raw.(type) {
	case []any:
		for i := 0; i+1 < len(fv); i += 2 {
			if k, _ := fv[i].(string); k == name {
				if v, ok := fv[i+1].(string); ok {
					return []byte(v)
				}
			}
		}
	case map[any]any:
		if v, ok := fv[name].(string); ok {
			return []byte(v)
		}
	case map[string]any:
		if v, ok := fv[name].(string); ok {
			return []byte(v)
		}
	}
	return nil
}

// touchScript resets the idle time of the entries the consumer still owns
// and returns the others. KEYS: tasks. ARGV: group, consumer, ids….
var touchScript = redis.NewScript(`
local lost = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  local owned = false
  if #p == 1 and p[1][2] == ARGV[2] then
    local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    owned = #c == 1
  end
  if not owned then
    lost[#lost + 1] = id
  end
end
return lost
`)

// Touch is the heartbeat of consumer: it resets the idle time of the given
// entries it still owns, so that Claim leaves them alone (XCLAIM … 0
// JUSTID, which does not count as a delivery). It returns the ids it no
// longer owns: claimed by another consumer, acknowledged, or lost with the
// stream; a consumer should stop working on those.
func (q *Queue) Touch(ctx context.Context, consumer string, ids ...string) (lost []string, err error) {
	if len(ids) == 0 {
		return nil, nil
	}
	args := make([]any, 0, 2+len(ids))
	args = append(args, q.cfg.Group, consumer)
	for _, id := range ids {
		args = append(args, id)
	}
	lost, err = touchScript.Run(ctx, q.rdb, []string{q.tasks}, args...).StringSlice()
	if isNoGroup(err) {
		return append([]string(nil), ids...), nil
	}
	if err != nil {
		return nil, fmt.Errorf("streamq: touch: %w", err)
	}
	return lost, nil
}

// ackIn queues, on pipe, the acknowledgement and deletion of entry id and
// of its counters.
func (q *Queue) ackIn(ctx context.Context, pipe redis.Pipeliner, id string) {
	pipe.XAck(ctx, q.tasks, q.cfg.Group, id)
	pipe.XDel(ctx, q.tasks, id)
	pipe.Del(ctx, q.claimsKey(id), q.attemptKey(id))
}

// Ack acknowledges and deletes entry id, and appends events, in one
// MULTI. Acking an entry that is no longer pending is harmless.
func (q *Queue) Ack(ctx context.Context, id string, events ...[]byte) error {
	return q.AckDone(ctx, id, "", events...)
}

// AckDone is Ack for an entry whose task is finished: in the same MULTI it
// also deletes the task's partial (when taskID is set), which no reader
// needs any more.
func (q *Queue) AckDone(ctx context.Context, id, taskID string, events ...[]byte) error {
	_, err := q.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		q.ackIn(ctx, pipe, id)
		if taskID != "" {
			pipe.Del(ctx, q.partialKey(taskID))
		}
		q.addEvents(ctx, pipe, events)
		return nil
	})
	if err != nil && !isNoGroup(err) {
		return fmt.Errorf("streamq: ack %s: %w", id, err)
	}
	return nil
}

// releaseScript makes an entry the consumer owns idle past ClaimAfter and
// takes back one claim. KEYS: tasks, claims key. ARGV: group, consumer,
// id, idle ms, ttl ms.
var releaseScript = redis.NewScript(`
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 1 and p[1][2] == ARGV[2] then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')
  redis.call('DECR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  return 1
end
return 0
`)

// Release hands entry id, which consumer owns, back at once, e.g. when a
// worker shuts down gracefully: the entry becomes idle past ClaimAfter
// (XCLAIM … IDLE … JUSTID), so that the next Claim of any consumer takes
// it, and that claim does not count toward MaxClaims. Releasing an entry
// consumer does not own does nothing.
func (q *Queue) Release(ctx context.Context, consumer, id string) error {
	idle := q.cfg.ClaimAfter.Milliseconds() + 1000
	err := releaseScript.Run(ctx, q.rdb, []string{q.tasks, q.claimsKey(id)},
		q.cfg.Group, consumer, id, idle, q.cfg.KeyTTL.Milliseconds()).Err()
	if err != nil && !isNoGroup(err) {
		return fmt.Errorf("streamq: release %s: %w", id, err)
	}
	return nil
}

// DeadLetter moves delivery d to the dead-letter stream (fields p:
// payload, r: reason, c: claims, a: attempt, id: the entry id), acknowledges
// and deletes the entry, and appends events, in one MULTI.
func (q *Queue) DeadLetter(ctx context.Context, d Delivery, reason string, events ...[]byte) error {
	_, err := q.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.XAdd(ctx, &redis.XAddArgs{
			Stream: q.dead,
			MaxLen: q.cfg.DeadMaxLen,
			Approx: true,
			Values: []any{"p", d.Payload, "r", reason, "c", d.Claims, "a", d.Attempt, "id", d.ID},
		})
		q.ackIn(ctx, pipe, d.ID)
		q.addEvents(ctx, pipe, events)
		return nil
	})
	if err != nil && !isNoGroup(err) {
		return fmt.Errorf("streamq: dead-letter %s: %w", d.ID, err)
	}
	return nil
}

// SetPartial stores p as the partial answer of taskID (expiring after
// KeyTTL) and appends events, in one MULTI, so that the stored partial and
// the chunks pushed to clients agree.
func (q *Queue) SetPartial(ctx context.Context, taskID string, p Partial, events ...[]byte) error {
	key := q.partialKey(taskID)
	_, err := q.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.HSet(ctx, key, "a", p.Attempt, "s", p.Seq, "t", p.Text)
		pipe.PExpire(ctx, key, q.cfg.KeyTTL)
		q.addEvents(ctx, pipe, events)
		return nil
	})
	if err != nil {
		return fmt.Errorf("streamq: set partial %s: %w", taskID, err)
	}
	return nil
}

// setNewerPartialScript stores a partial unless the stored one is as new
// or newer, and then only appends the events. KEYS: partial, events.
// ARGV: attempt, seq, text, ttl ms, events maxlen, events….
var setNewerPartialScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local cur = redis.call('HMGET', KEYS[1], 'a', 's')
local a, s = tonumber(ARGV[1]), tonumber(ARGV[2])
if cur[1] then
  local ca, cs = tonumber(cur[1]), tonumber(cur[2])
  if ca > a or (ca == a and cs >= s) then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'a', ARGV[1], 's', ARGV[2], 't', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
for i = 6, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'e', ARGV[i])
end
return 1
`)

// SetNewerPartial is SetPartial for writers that may be stale, such as a
// worker whose entry was claimed away before it noticed: it stores p and
// appends events, atomically, only when the stored partial of taskID is
// older (a lower Attempt, or the same Attempt and a lower Seq) or absent,
// and reports whether it did. A stale write changes nothing, so clients
// never see the chunks of an attempt that was superseded.
func (q *Queue) SetNewerPartial(ctx context.Context, taskID string, p Partial, events ...[]byte) (bool, error) {
	args := make([]any, 0, 5+len(events))
	args = append(args, p.Attempt, p.Seq, p.Text, q.cfg.KeyTTL.Milliseconds(), q.cfg.EventsMaxLen)
	for _, e := range events {
		args = append(args, e)
	}
	n, err := setNewerPartialScript.Run(ctx, q.rdb, []string{q.partialKey(taskID), q.events}, args...).Int()
	if err != nil {
		return false, fmt.Errorf("streamq: set partial %s: %w", taskID, err)
	}
	return n == 1, nil
}

// ClearPartial deletes the partial answer of taskID.
func (q *Queue) ClearPartial(ctx context.Context, taskID string) error {
	if err := q.rdb.Del(ctx, q.partialKey(taskID)).Err(); err != nil {
		return fmt.Errorf("streamq: clear partial %s: %w", taskID, err)
	}
	return nil
}

// Cancels subscribes to the cancel channel and returns a channel of the
// task ids Cancel publishes from then on, and a func that ends the
// subscription. Cancels returns once Redis confirmed the subscription (or
// its first attempt failed; go-redis keeps resubscribing). The channel is
// closed, and no goroutine is left, when the func has returned; it also
// closes soon after ctx ends (call the func anyway). The func may be
// called more than once. Ids published while the connection is down are
// lost, as with any pub/sub; errors go to Config.OnError.
func (q *Queue) Cancels(ctx context.Context) (<-chan string, func()) {
	ps := q.rdb.Subscribe(ctx, q.cancel)
	_, _ = ps.Receive(ctx) // wait for the confirmation
	out := make(chan string)
	done := make(chan struct{})
	finished := make(chan struct{})
	stopAfter := context.AfterFunc(ctx, func() { _ = ps.Close() })
	go func() {
		defer close(finished)
		defer close(out)
		b := newBackoff()
		for {
			msg, err := ps.ReceiveMessage(context.Background())
			select {
			case <-done:
				return
			default:
			}
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				if errors.Is(err, redis.ErrClosed) {
					return
				}
				q.onError(fmt.Errorf("streamq: cancels: %w", err))
				if !b.wait(ctx) {
					return
				}
				continue
			}
			b.reset()
			select {
			case out <- msg.Payload:
			case <-done:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	var once sync.Once
	return out, func() {
		once.Do(func() {
			close(done)
			stopAfter()
			_ = ps.Close()
			<-finished
		})
	}
}
