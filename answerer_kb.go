package socketio

import (
	"context"
	"time"
	"unicode"
	"unicode/utf8"
)

// DefaultFallback is the answer of the built-in answerer when no entry
// matches the question.
const DefaultFallback = "Sorry, I don't know the answer to that question yet."

// KBAnswererOptions configures KnowledgeBase.Answerer. The zero value means
// the defaults.
type KBAnswererOptions struct {
	// MinScore is the match score (0 to 1, see KnowledgeBase.Match) below
	// which a question gets Fallback. Values ≤ 0 mean the default.
	// default: 0.2
	MinScore float64
	// Fallback is the answer when no entry matches; it is a completed
	// answer, not an error, and has no sources.
	// default: DefaultFallback
	Fallback string
	// ChunkDelay is the pause before each streamed chunk, to pace a demo
	// like a model that types; cancelling ctx cuts it short.
	// default: 0 (no pause)
	ChunkDelay time.Duration
	// ChunkRunes is the target size of a streamed chunk in runes (code
	// points); chunks break after white space when one is near.
	// default: 16
	ChunkRunes int
}

// Answerer returns the built-in Answerer, which answers with the entry that
// best matches the question text, or with opts.Fallback when none scores
// opts.MinScore.
//
// When the question asks for streaming, the answer is written through the
// ChunkWriter in at least two chunks (unless it is a single rune), each of
// about opts.ChunkRunes runes, cut after white space where possible and
// never inside a rune; the chunks joined are exactly Answer.Text. An error
// from the ChunkWriter stops the answer and is returned as is.
//
// Answer.Sources is the matched entry's Source, or its question when it has
// none; a fallback answer has no sources.
//
// The Answerer is safe for concurrent use. It returns ctx.Err() as soon as
// it sees ctx cancelled: before answering, during each ChunkDelay, and
// before returning.
func (kb *KnowledgeBase) Answerer(opts KBAnswererOptions) Answerer {
	if opts.MinScore <= 0 {
		opts.MinScore = DefaultMinScore
	}
	if opts.Fallback == "" {
		opts.Fallback = DefaultFallback
	}
	if opts.ChunkDelay < 0 {
		opts.ChunkDelay = 0
	}
	if opts.ChunkRunes <= 0 {
		opts.ChunkRunes = 16
	}
	return &kbAnswerer{kb: kb, opts: opts}
}

type kbAnswerer struct {
	kb   *KnowledgeBase
	opts KBAnswererOptions
}

var _ Answerer = (*kbAnswerer)(nil)

func (a *kbAnswerer) Answer(ctx context.Context, q Question, chunks ChunkWriter) (Answer, error) {
	if err := ctx.Err(); err != nil {
		return Answer{}, err
	}
	ans := Answer{Text: a.opts.Fallback}
	if e, _, ok := a.kb.MatchMin(q.Text, a.opts.MinScore); ok {
		ans.Text = e.Answer
		if e.Source != "" {
			ans.Sources = []string{e.Source}
		} else {
			ans.Sources = []string{e.Question}
		}
	}
	if q.Stream {
		if err := a.stream(ctx, ans.Text, chunks); err != nil {
			return Answer{}, err
		}
	}
	if err := ctx.Err(); err != nil {
		return Answer{}, err
	}
	return ans, nil
}

// stream writes text through chunks, pausing ChunkDelay before each chunk.
func (a *kbAnswerer) stream(ctx context.Context, text string, chunks ChunkWriter) error {
	var timer *time.Timer
	if a.opts.ChunkDelay > 0 {
		timer = time.NewTimer(a.opts.ChunkDelay)
		defer timer.Stop()
	}
	for i, piece := range splitChunks(text, a.opts.ChunkRunes) {
		if timer != nil {
			if i > 0 {
				timer.Reset(a.opts.ChunkDelay) // safe on a fired timer since Go 1.23
			}
			select {
			case <-ctx.Done():
			case <-timer.C:
			}
		}
		// Checked even after the timer fired: select does not prefer
		// ctx.Done when both are ready.
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := chunks.WriteChunk(piece); err != nil {
			return err
		}
	}
	return nil
}

// splitChunks cuts text into pieces of about size runes whose
// concatenation is text. A piece ends after white space when some lies in
// its second half, else after exactly size runes; text of two or more runes
// always gives at least two pieces.
func splitChunks(text string, size int) []string {
	n := utf8.RuneCountInString(text)
	if n == 0 {
		return nil
	}
	if n < 2 {
		return []string{text}
	}
	if size >= n {
		size = (n + 1) / 2
	}
	// offs[k] is the byte offset of rune k; offs[n] is len(text).
	offs := make([]int, 0, n+1)
	for i := range text {
		offs = append(offs, i)
	}
	offs = append(offs, len(text))

	pieces := make([]string, 0, n/size+1)
	for start := 0; start < n; {
		end := start + size
		if end >= n {
			pieces = append(pieces, text[offs[start]:])
			break
		}
		// Prefer to end right after a white space, keeping at least half
		// the target size.
		for k := end; k >= start+max(1, size/2); k-- {
			r, _ := utf8.DecodeRuneInString(text[offs[k-1]:])
			if unicode.IsSpace(r) {
				end = k
				break
			}
		}
		pieces = append(pieces, text[offs[start]:offs[end]])
		start = end
	}
	return pieces
}
