package socketio

import "context"

// Answerer answers questions.
//
// Concurrency: Answer is called from the library's worker pool, so many
// calls run at once; an implementation must be safe for concurrent use.
// ctx is cancelled when the task is cancelled (cancel_task), when the
// per-answer timeout passes, or when the Server closes; an Answerer should
// return promptly with ctx.Err() then. ctx is not cancelled when the asker
// disconnects: the answer still finishes and is stored for a later resume.
//
// When the question asked for streaming (q.Stream), an Answerer may send
// the answer in pieces through chunks; the deltas joined are the answer, and
// the library sends them to the client as answer_chunk events before the
// final answer. chunks is never nil; when the question did not ask for
// streaming, writes to it are discarded.
type Answerer interface {
	Answer(ctx context.Context, q Question, chunks ChunkWriter) (Answer, error)
}

// AnswererFunc adapts a function to the Answerer interface.
type AnswererFunc func(ctx context.Context, q Question, chunks ChunkWriter) (Answer, error)

// Answer calls f.
func (f AnswererFunc) Answer(ctx context.Context, q Question, chunks ChunkWriter) (Answer, error) {
	return f(ctx, q, chunks)
}

// ChunkWriter receives the pieces of a streamed answer, in order.
type ChunkWriter interface {
	// WriteChunk sends one delta. It returns an error when the task can no
	// longer take chunks (it was cancelled or timed out).
	WriteChunk(delta string) error
}

// Question is what an Answerer is asked.
type Question struct {
	TaskID    string
	SessionID string
	UserID    string
	Text      string
	// Context is the optional context string the client sent.
	Context string
	Room    string
	Stream  bool
	// Attempt counts the times this task was started, from 1: an answer
	// restarted after the worker that held it was lost has Attempt > 1.
	Attempt int
	// History holds the owner's latest completed questions and answers
	// before this one, oldest first, when the Answerer implements
	// ConversationAnswerer (at most HistoryTurns of them); otherwise nil.
	History []Turn
}

// Turn is one earlier question and its answer.
type Turn struct {
	Question string
	Answer   string
}

// ConversationAnswerer is an Answerer that answers in the light of the
// conversation so far: the library reads up to HistoryTurns of the owner's
// latest completed turns from the storage into Question.History before
// each answer. An Answerer that does not implement it costs no such read.
type ConversationAnswerer interface {
	Answerer
	HistoryTurns() int
}

// Answer is an Answerer's result.
type Answer struct {
	Text string
	// Sources name where the answer came from; sent to the client as
	// "sources" when not empty.
	Sources []string
	// Usage is what the answer cost a language model, when the Answerer
	// knows; it is kept with the task.
	Usage *Usage
}

// Usage counts the tokens a language model spent on an answer.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// Suggester proposes questions for a partial query (get_suggestions).
//
// Concurrency: Suggest may be called concurrently.
type Suggester interface {
	Suggest(ctx context.Context, query string, limit int) ([]string, error)
}

// SuggesterFunc adapts a function to the Suggester interface.
type SuggesterFunc func(ctx context.Context, query string, limit int) ([]string, error)

// Suggest calls f.
func (f SuggesterFunc) Suggest(ctx context.Context, query string, limit int) ([]string, error) {
	return f(ctx, query, limit)
}
