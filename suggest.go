package socketio

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// NewSuggester returns the built-in Suggester. It proposes the questions
// of kb and the frequently asked questions that popular returns (for
// example Storage.PopularQuestions); either may be nil.
//
// A candidate matches a query, ignoring case, runs of white space and
// Unicode compatibility forms (both are compared in NFKC, so a full-width
// query finds its plain candidate), when
// (best first):
//
//  1. the candidate starts with the query;
//  2. a word of the candidate starts with the query, or, when the query
//     holds Chinese, Japanese or Korean characters, the candidate contains
//     it anywhere;
//  3. each word of the query starts a word of the candidate (English stop
//     words aside), and each pair of adjacent CJK characters of the query
//     appears in the candidate.
//
// Within a rank, popular questions come before the others, then shorter
// before longer, then in lexical order. Candidates that differ only in case
// or spacing are proposed once. An error from popular is returned wrapped.
//
// The Suggester is safe for concurrent use when popular is.
func NewSuggester(kb *KnowledgeBase, popular func(ctx context.Context, limit int) ([]string, error)) Suggester {
	s := &suggester{popular: popular}
	for _, q := range kb.Questions() {
		s.kb = append(s.kb, newSuggestion(q, false))
	}
	return s
}

type suggester struct {
	kb      []suggestion // immutable after NewSuggester
	popular func(ctx context.Context, limit int) ([]string, error)
}

var _ Suggester = (*suggester)(nil)

// suggestion is a candidate prepared for matching.
type suggestion struct {
	text    string // as proposed
	norm    string // normalizeText(text)
	runes   int    // length of text, in runes
	popular bool
}

func newSuggestion(text string, popular bool) suggestion {
	return suggestion{
		text:    text,
		norm:    normalizeText(text),
		runes:   utf8.RuneCountInString(text),
		popular: popular,
	}
}

// popularFetch is how many popular questions to consider for a result of
// limit suggestions: most will not match the query.
func popularFetch(limit int) int {
	return max(50, 4*limit)
}

func (s *suggester) Suggest(ctx context.Context, query string, limit int) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return []string{}, nil
	}
	var candidates []suggestion
	if s.popular != nil {
		qs, err := s.popular(ctx, popularFetch(limit))
		if err != nil {
			return nil, fmt.Errorf("socketio: popular questions for suggestions: %w", err)
		}
		candidates = make([]suggestion, 0, len(qs)+len(s.kb))
		for _, q := range qs {
			if strings.TrimSpace(q) != "" {
				candidates = append(candidates, newSuggestion(q, true))
			}
		}
	}
	candidates = append(candidates, s.kb...)

	m := newSuggestMatcher(query)
	type ranked struct {
		suggestion
		rank int
	}
	var hits []ranked
	seen := make(map[string]bool, len(candidates))
	for _, c := range candidates {
		if c.norm == "" || seen[c.norm] {
			continue
		}
		seen[c.norm] = true // the popular spelling wins: it comes first
		if r := m.rank(c.norm); r > 0 {
			hits = append(hits, ranked{c, r})
		}
	}
	slices.SortFunc(hits, func(a, b ranked) int {
		if c := cmp.Compare(a.rank, b.rank); c != 0 {
			return c
		}
		if a.popular != b.popular {
			if a.popular {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(a.runes, b.runes); c != 0 {
			return c
		}
		if c := strings.Compare(a.norm, b.norm); c != 0 {
			return c
		}
		return strings.Compare(a.text, b.text)
	})
	out := make([]string, 0, min(limit, len(hits)))
	for _, h := range hits[:min(limit, len(hits))] {
		out = append(out, h.text)
	}
	return out, nil
}

// suggestMatcher ranks normalised candidates against one query.
type suggestMatcher struct {
	query string   // normalised
	cjk   bool     // query holds CJK characters
	words []string // rank 3: each must start a word of the candidate
	grams []string // rank 3: each must appear in the candidate
}

func newSuggestMatcher(query string) suggestMatcher {
	m := suggestMatcher{query: normalizeText(query)}
	var all []string
	q := m.query
	for i := 0; i < len(q); {
		r, size := utf8.DecodeRuneInString(q[i:])
		switch {
		case isCJK(r):
			m.cjk = true
			j, prev := i, -1
			for j < len(q) {
				r, n := utf8.DecodeRuneInString(q[j:])
				if !isCJK(r) {
					break
				}
				if prev >= 0 {
					m.grams = append(m.grams, q[prev:j+n])
				}
				prev = j
				j += n
			}
			if prev == i { // a lone character is its own "bigram"
				m.grams = append(m.grams, q[i:j])
			}
			i = j
		case isWordRune(r):
			j := i
			for j < len(q) {
				r, n := utf8.DecodeRuneInString(q[j:])
				if !isWordRune(r) {
					break
				}
				j += n
			}
			all = append(all, q[i:j])
			if !stopWords[q[i:j]] {
				m.words = append(m.words, q[i:j])
			}
			i = j
		default:
			i += size
		}
	}
	if len(m.words) == 0 && len(m.grams) == 0 {
		m.words = all // a query of stop words only still means something
	}
	return m
}

// rank returns 1, 2 or 3 (see NewSuggester), or 0 when c does not match.
func (m *suggestMatcher) rank(c string) int {
	if strings.HasPrefix(c, m.query) {
		return 1
	}
	if m.cjk {
		if strings.Contains(c, m.query) {
			return 2
		}
	} else if hasWordPrefix(c, m.query) {
		return 2
	}
	if len(m.words) == 0 && len(m.grams) == 0 {
		return 0
	}
	for _, g := range m.grams {
		if !strings.Contains(c, g) {
			return 0
		}
	}
	for _, w := range m.words {
		if !hasWordPrefix(c, w) {
			return 0
		}
	}
	return 3
}

// hasWordPrefix reports whether a word of c starts with p: whether p
// follows, in c, the start of c or a rune that is not part of a word
// ("io" starts a word of "socket.io").
func hasWordPrefix(c, p string) bool {
	for i := 0; ; {
		k := strings.Index(c[i:], p)
		if k < 0 {
			return false
		}
		k += i
		if k == 0 {
			return true
		}
		if r, _ := utf8.DecodeLastRuneInString(c[:k]); !isWordRune(r) {
			return true
		}
		_, size := utf8.DecodeRuneInString(c[k:])
		i = k + size
	}
}
