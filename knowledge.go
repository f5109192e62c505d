package socketio

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// DefaultMinScore is the score below which KnowledgeBase.Match reports no
// match, and the default of KBAnswererOptions.MinScore.
const DefaultMinScore = 0.2

// Entry is one question of a KnowledgeBase with its answer.
type Entry struct {
	// Question is the canonical phrasing; it must not be blank.
	Question string `json:"question"`
	// Answer is the text the built-in answerer returns; it must not be blank.
	Answer string `json:"answer"`
	// Source names where the answer comes from (a document, a URL). When
	// empty, the answerer cites Question instead.
	Source string `json:"source,omitempty"`
	// Aliases are other phrasings of Question, matched like it.
	Aliases []string `json:"aliases,omitempty"`
}

// KnowledgeBase is a small corpus of questions and answers that the
// built-in answerer (KnowledgeBase.Answerer) and suggester (NewSuggester)
// work from.
//
// Concurrency: a KnowledgeBase is immutable once constructed, so all its
// methods may be called concurrently without locks.
//
// Matching scores a query against every phrasing (question and aliases) of
// every entry by the cosine similarity of TF-IDF vectors. Texts are first
// put in Unicode normalisation form NFKC, so that full-width letters, the
// ideographic space, ligatures and other compatibility forms match their
// plain forms ("ｗｈａｔ　ｉｓ ＷｅｂＳｏｃｋｅｔ？" matches "What is
// WebSocket?"); only the comparison is normalised. Latin, digit and
// other alphabetic text is split into lower-cased words, minus a few English
// stop words and with a trailing plural "s" removed; Chinese, Japanese and
// Korean text, written without spaces, contributes each character and each
// pair of adjacent characters. IDF is computed over all phrasings.
type KnowledgeBase struct {
	entries []Entry
	vocab   map[string]int32 // term -> term id
	idf     []float64        // by term id
	// postings lists, by term id, the phrasings holding the term with the
	// term's weight in the phrasing's unit vector, in phrasing order.
	postings [][]posting
	owner    []int32 // phrasing -> entry index
	// unknownIDF is the weight of a query term no phrasing contains.
	unknownIDF float64
}

type posting struct {
	doc    int32
	weight float64
}

// NewKnowledgeBase builds a KnowledgeBase from entries, which it copies.
// Each entry needs a non-blank question and answer, with at least one
// searchable word in the question; two entries may not have the same
// question (ignoring case, white space and compatibility forms).
func NewKnowledgeBase(entries []Entry) (*KnowledgeBase, error) {
	kb := &KnowledgeBase{
		entries: make([]Entry, len(entries)),
		vocab:   make(map[string]int32),
	}
	seen := make(map[string]int, len(entries))
	// Term counts per phrasing, as term id -> count, in phrasing order.
	var docs []map[int32]int
	for i, e := range entries {
		if strings.TrimSpace(e.Question) == "" {
			return nil, fmt.Errorf("socketio: knowledge base entry %d: empty question", i)
		}
		if strings.TrimSpace(e.Answer) == "" {
			return nil, fmt.Errorf("socketio: knowledge base entry %d (%q): empty answer", i, e.Question)
		}
		key := normalizeText(e.Question)
		if j, dup := seen[key]; dup {
			return nil, fmt.Errorf("socketio: knowledge base entry %d (%q): same question as entry %d", i, e.Question, j)
		}
		seen[key] = i
		e.Aliases = slices.Clone(e.Aliases)
		kb.entries[i] = e

		for k, phrasing := range append([]string{e.Question}, e.Aliases...) {
			terms := tokenize(phrasing, nil)
			if len(terms) == 0 {
				if k == 0 {
					return nil, fmt.Errorf("socketio: knowledge base entry %d (%q): question has no searchable words", i, e.Question)
				}
				continue // an alias made only of stop words can never match
			}
			counts := make(map[int32]int, len(terms))
			for _, t := range terms {
				id, ok := kb.vocab[t]
				if !ok {
					id = int32(len(kb.vocab))
					kb.vocab[t] = id
				}
				counts[id]++
			}
			docs = append(docs, counts)
			kb.owner = append(kb.owner, int32(i))
		}
	}

	n := float64(len(docs))
	df := make([]int, len(kb.vocab))
	for _, d := range docs {
		for id := range d {
			df[id]++
		}
	}
	kb.idf = make([]float64, len(df))
	for id, f := range df {
		kb.idf[id] = smoothIDF(n, f)
	}
	kb.unknownIDF = smoothIDF(n, 0)

	kb.postings = make([][]posting, len(kb.vocab))
	for d, counts := range docs {
		ids := make([]int32, 0, len(counts))
		for id := range counts {
			ids = append(ids, id)
		}
		slices.Sort(ids) // fixed summation order keeps scores deterministic
		var norm float64
		for _, id := range ids {
			w := termWeight(counts[id], kb.idf[id])
			norm += w * w
		}
		norm = math.Sqrt(norm)
		for _, id := range ids {
			w := termWeight(counts[id], kb.idf[id]) / norm
			kb.postings[id] = append(kb.postings[id], posting{doc: int32(d), weight: w})
		}
	}
	return kb, nil
}

// LoadKnowledgeBase reads a JSON array of entries (see Entry for the field
// names) and builds a KnowledgeBase from it. Unknown fields and trailing
// data are errors, so that a misspelt field does not silently drop content.
func LoadKnowledgeBase(r io.Reader) (*KnowledgeBase, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var entries []Entry
	if err := dec.Decode(&entries); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return nil, fmt.Errorf("socketio: knowledge base JSON at byte %d: %w", syn.Offset, err)
		}
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) {
			return nil, fmt.Errorf("socketio: knowledge base JSON at byte %d: want an array of {\"question\", \"answer\", \"source\"?, \"aliases\"?}: %w", typ.Offset, err)
		}
		return nil, fmt.Errorf("socketio: knowledge base JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("socketio: knowledge base JSON: unexpected data after the array")
	}
	return NewKnowledgeBase(entries)
}

// Len returns the number of entries.
func (kb *KnowledgeBase) Len() int {
	if kb == nil {
		return 0
	}
	return len(kb.entries)
}

// Questions returns the entries' questions (not their aliases), in the
// order the entries were given. The slice is the caller's.
func (kb *KnowledgeBase) Questions() []string {
	if kb == nil {
		return nil
	}
	qs := make([]string, len(kb.entries))
	for i, e := range kb.entries {
		qs[i] = e.Question
	}
	return qs
}

// Match returns the entry whose question or alias best matches query, and
// its score, a cosine similarity between 0 and 1. ok is false, with a zero
// Entry, when the best score is below DefaultMinScore. It is MatchMin with
// DefaultMinScore.
func (kb *KnowledgeBase) Match(query string) (e Entry, score float64, ok bool) {
	return kb.MatchMin(query, DefaultMinScore)
}

// MatchMin is Match with minScore as the threshold: ok is false, with a
// zero Entry and the best score found, when that score is below minScore or
// when no phrasing shares a term with query. Ties go to the entry given
// first.
func (kb *KnowledgeBase) MatchMin(query string, minScore float64) (e Entry, score float64, ok bool) {
	i, score := kb.best(query)
	if i < 0 || score < minScore {
		return Entry{}, score, false
	}
	e = kb.entries[i]
	e.Aliases = slices.Clone(e.Aliases)
	return e, score, true
}

// best returns the index of the best-matching entry and its score, or -1
// when no phrasing shares a term with query.
func (kb *KnowledgeBase) best(query string) (int, float64) {
	if kb == nil || len(kb.owner) == 0 {
		return -1, 0
	}
	var buf [32]string
	terms := tokenize(query, buf[:0])
	if len(terms) == 0 {
		return -1, 0
	}
	// Sorted terms give each distinct term with its count, in an order
	// that does not depend on map iteration, so sums are reproducible.
	slices.Sort(terms)
	type qterm struct {
		id     int32
		weight float64
	}
	var qbuf [32]qterm
	qs := qbuf[:0]
	var norm float64
	for i := 0; i < len(terms); {
		j := i + 1
		for j < len(terms) && terms[j] == terms[i] {
			j++
		}
		// A term no phrasing holds only adds to the query's norm: a query
		// about something else scores low.
		if id, ok := kb.vocab[terms[i]]; ok {
			w := termWeight(j-i, kb.idf[id])
			qs = append(qs, qterm{id: id, weight: w})
			norm += w * w
		} else {
			w := termWeight(j-i, kb.unknownIDF)
			norm += w * w
		}
		i = j
	}
	if len(qs) == 0 {
		return -1, 0
	}
	norm = math.Sqrt(norm)

	scores := make([]float64, len(kb.owner))
	for _, q := range qs {
		w := q.weight / norm
		for _, p := range kb.postings[q.id] {
			scores[p.doc] += w * p.weight
		}
	}
	bestEntry, bestScore := -1, 0.0
	for d, s := range scores {
		// Phrasings are in entry order, so strict > keeps the first entry
		// on a tie.
		if s > bestScore {
			bestEntry, bestScore = int(kb.owner[d]), s
		}
	}
	return bestEntry, min(bestScore, 1)
}

// smoothIDF is the inverse document frequency of a term found in df of n
// phrasings, smoothed to stay positive for a term in every phrasing and
// finite for a term in none (which then weighs most).
func smoothIDF(n float64, df int) float64 {
	return math.Log((n + 1) / (float64(df) + 0.5))
}

// termWeight damps repeated terms: the tenth "socket" is not ten times the
// evidence of the first.
func termWeight(count int, idf float64) float64 {
	return (1 + math.Log(float64(count))) * idf
}

// stopWords are English words too common to say what a question is about.
// Question words are among them: in a corpus of "What is …?" and "How do I
// …?" questions they would otherwise make "what is kubernetes" match "What
// is Go?".
var stopWords = map[string]bool{
	"what": true, "how": true, "why": true, "when": true, "where": true,
	"who": true, "which": true,
	"a": true, "an": true, "the": true, "is": true, "are": true, "am": true,
	"was": true, "were": true, "be": true, "been": true, "to": true,
	"of": true, "in": true, "on": true, "at": true, "for": true, "and": true,
	"or": true, "it": true, "its": true, "this": true, "that": true,
	"i": true, "me": true, "my": true, "do": true, "does": true, "did": true,
	"with": true, "by": true, "as": true, "s": true, "can": true,
}

// isCJK reports whether r belongs to a script written without spaces
// between words.
func isCJK(r rune) bool {
	return unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Hangul)
}

// isWordRune reports whether r belongs to a space-separated word.
func isWordRune(r rune) bool {
	return (unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r)) && !isCJK(r)
}

// tokenize appends the terms of s to dst: lower-cased words (stop words
// dropped, plural "s" removed) and, for CJK runs, characters and character
// bigrams.
func tokenize(s string, dst []string) []string {
	s = foldText(s)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case isCJK(r):
			j := i
			prev := -1 // start of the previous rune of the run
			for j < len(s) {
				r, n := utf8.DecodeRuneInString(s[j:])
				if !isCJK(r) {
					break
				}
				dst = append(dst, s[j:j+n])
				if prev >= 0 {
					dst = append(dst, s[prev:j+n])
				}
				prev = j
				j += n
			}
			i = j
		case isWordRune(r):
			j := i
			for j < len(s) {
				r, n := utf8.DecodeRuneInString(s[j:])
				if !isWordRune(r) {
					break
				}
				j += n
			}
			if w := s[i:j]; !stopWords[w] {
				dst = append(dst, stem(w))
			}
			i = j
		default:
			i += size
		}
	}
	return dst
}

// stem removes a plural "s" so that "answers" matches "answer"; it leaves
// short words and endings such as "ss", "us" and "is" ("redis") alone.
func stem(w string) string {
	if len(w) <= 3 || w[len(w)-1] != 's' {
		return w
	}
	switch w[len(w)-2] {
	case 's', 'u', 'i':
		return w
	}
	return w[:len(w)-1]
}

// foldText puts s in NFKC and lower-cases it: the form in which texts are
// compared (never the one stored or shown). Bytes that are not UTF-8 (a
// knowledge base read from a file may have them; requests cannot) become
// U+FFFD first: x/text before v0.39.0 can loop forever normalising them
// (GO-2026-5970), and v0.39.0 needs Go 1.25.
func foldText(s string) string {
	return strings.ToLower(norm.NFKC.String(strings.ToValidUTF8(s, "\uFFFD")))
}

// normalizeText folds s (foldText), trims it and collapses runs of white
// space to one space; it is the key under which texts are compared.
func normalizeText(s string) string {
	return strings.Join(strings.Fields(foldText(s)), " ")
}
