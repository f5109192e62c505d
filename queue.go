package socketio

import (
	"encoding/json"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/qaplatform/socketio/internal/streamq"
)

// AnswerQueue carries accepted questions from the nodes that take them to
// the workers that answer them, and the workers' progress back to the
// clients. There are two:
//
//   - LocalQueue, the default without Options.Redis: the node that took a
//     question answers it on its own pool of Options.Workers. An answer
//     ends with its node.
//   - a RedisQueue, the default with Options.Redis: questions wait in a
//     Redis stream, answered by the workers of any node (Options.Workers)
//     and by Worker processes (see NewWorker, and cmd/qa-worker). An
//     answer outlives the node that took it and the worker that began it.
//
// The interface is sealed: only this package implements it.
type AnswerQueue interface {
	answerQueue()
}

// LocalQueue returns the in-process queue: each node answers the questions
// it takes, on its own workers. A streamed answer's partial text (get_task's
// "partial") is known only to the node answering it.
func LocalQueue() AnswerQueue { return localQueue{} }

type localQueue struct{}

func (localQueue) answerQueue() {}

// RedisQueueOptions configures a RedisQueue. The zero value means the
// defaults; nodes and workers sharing a queue must agree on Prefix.
type RedisQueueOptions struct {
	// Prefix starts every key of the queue; it is the nodes' RedisPrefix.
	// default: "qa:"
	Prefix string
	// Limit is how many unanswered questions (waiting or being answered)
	// the queue holds; past it, ask_question is refused with "unavailable"
	// and a retry_after_ms. default: 10000
	Limit int
	// ClaimAfter is how long a worker may go silent before another worker
	// takes the answers it holds and answers them again. A live worker
	// renews its hold every ClaimAfter/3, so an answer slower than
	// ClaimAfter is never taken from a worker that is alive. default: 30s
	ClaimAfter time.Duration
	// MaxClaims is how many times one question may be taken from a
	// silent worker: past it, the question (which seems to kill every
	// worker) ends as answer_failed and is moved to the dead-letter stream
	// <Prefix>{aq}:dead. default: 3
	MaxClaims int
	// ChunkInterval is how often a worker sends what a streamed answer
	// produced: the deltas written within one interval go out as one
	// answer_chunk, and one write to Redis. default: 50ms
	ChunkInterval time.Duration
	// RetryAfter is the retry_after_ms a refusal suggests when the queue
	// is full. default: 1s
	RetryAfter time.Duration
}

func (o RedisQueueOptions) withDefaults() RedisQueueOptions {
	if o.Prefix == "" {
		o.Prefix = "qa:"
	}
	if o.Limit <= 0 {
		o.Limit = 10000
	}
	if o.ClaimAfter <= 0 {
		o.ClaimAfter = 30 * time.Second
	}
	if o.MaxClaims <= 0 {
		o.MaxClaims = 3
	}
	if o.ChunkInterval <= 0 {
		o.ChunkInterval = 50 * time.Millisecond
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = time.Second
	}
	return o
}

// RedisQueue is the durable answer queue of a service whose nodes share
// Redis. Questions are entries of a Redis stream read by one consumer
// group; workers take them (XREADGROUP), renew their hold while they
// answer, and acknowledge them when the answer is stored. An entry held by
// a worker that went silent for ClaimAfter is taken by another worker
// (XAUTOCLAIM), which answers it again as a new attempt. Processing is thus
// at least once; what clients see is exactly once, because a task's final
// status is stored by the first that gets there, and only that one pushes
// the end.
//
// Progress (task_status, answer_chunk, answer, answer_error) travels in a
// second stream, which every node reads and pushes to its own sockets.
// All keys share one hash tag, {aq}, so a Redis Cluster keeps the queue on
// one shard.
//
// Create it with NewRedisQueue; the caller owns and closes the client.
type RedisQueue struct {
	opts RedisQueueOptions
	q    *streamq.Queue
	rdb  redis.UniversalClient
}

// NewRedisQueue returns a queue kept in rdb.
func NewRedisQueue(rdb redis.UniversalClient, opts RedisQueueOptions) *RedisQueue {
	opts = opts.withDefaults()
	return &RedisQueue{
		opts: opts,
		rdb:  rdb,
		q: streamq.New(rdb, streamq.Config{
			Prefix:     opts.Prefix,
			Limit:      int64(opts.Limit),
			ClaimAfter: opts.ClaimAfter,
			MaxClaims:  opts.MaxClaims,
		}),
	}
}

func (*RedisQueue) answerQueue() {}

// Partial is the text a streamed answer has produced so far: the deltas of
// attempt Attempt joined, up to and including chunk Seq (-1 before the
// first chunk). It is get_task's "partial".
type Partial struct {
	Attempt int    `json:"attempt"`
	Seq     int    `json:"seq"`
	Text    string `json:"text"`
}

// queueEntry is what an entry of the queue holds: the task it asks for,
// and who asked (for the answer hooks).
type queueEntry struct {
	Owner  string `json:"o"`
	TaskID string `json:"t"`
	Caller Caller `json:"c"`
}

// taskEvent is an event of the events stream: pushes, in order, for the
// sockets in Rooms. Final marks the end of the task (its final task_status,
// then answer or answer_error): nodes drop whatever of the task comes after
// it.
type taskEvent struct {
	TaskID string     `json:"t"`
	Rooms  []string   `json:"r"`
	Pushes []wirePush `json:"p"`
	Final  bool       `json:"f,omitempty"`
}

type wirePush struct {
	Name string          `json:"n"`
	Data json.RawMessage `json:"d"`
}

// newTaskEvent gathers pushes of task t into one event of the stream.
func newTaskEvent(t Task, final bool, pushes ...push) taskEvent {
	ev := taskEvent{TaskID: t.ID, Rooms: taskRooms(t), Final: final}
	for _, p := range pushes {
		data, err := json.Marshal(p.data)
		if err != nil {
			continue // maps of strings and numbers only
		}
		ev.Pushes = append(ev.Pushes, wirePush{Name: p.name, Data: data})
	}
	return ev
}

// encodeEvent renders pushes of task t as one event of the stream.
func encodeEvent(t Task, final bool, pushes ...push) []byte {
	b, _ := json.Marshal(newTaskEvent(t, final, pushes...))
	return b
}

// push is one event for a task's sockets.
type push struct {
	name string
	data map[string]any
}

// endPushes are the pushes that end t: its final task_status, then answer
// or answer_error.
func endPushes(t Task) []push {
	out := []push{{"task_status", taskStatusEvent(t)}}
	if t.Status == TaskCompleted {
		m := map[string]any{
			"task_id":     t.ID,
			"question":    t.Question,
			"answer":      t.Answer,
			"status":      string(t.Status),
			"asked_at":    formatTime(t.AskedAt),
			"answered_at": formatTime(t.AnsweredAt),
			"duration_ms": t.AnsweredAt.Sub(t.AskedAt).Milliseconds(),
		}
		if len(t.Sources) > 0 {
			m["sources"] = t.Sources
		}
		out = append(out, push{"answer", m})
	} else if t.Error != nil {
		out = append(out, push{"answer_error", map[string]any{"task_id": t.ID, "code": string(t.Error.Code), "message": t.Error.Message}})
	}
	return out
}
