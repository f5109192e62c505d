package socketio

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/qaplatform/socketio/internal/seqparser"
)

// FuzzRequest drives the validation path with arbitrary request arguments,
// decoded as the server decodes them (including its lone-surrogate
// rewrite). Whatever the input: no panic, every refusal carries a
// docs/protocol.md code, and an accepted question obeys the text rules.
func FuzzRequest(f *testing.F) {
	for _, seed := range []string{
		`[]`, `[{}]`, `[null]`, `[{},{}]`, `["What is Socket.IO?"]`, `[5]`, `[[1]]`,
		`[{"question":"hi","room":"lobby","stream":true,"context":"ctx"}]`,
		`[{"question":"  \t "}]`, `[{"question":"a\u0007b"}]`, `[{"question":"\ud800"}]`,
		`[{"question":"\ud83d\ude00"}]`, `[{"question":null}]`, `[{"question":1}]`,
		`[{"question":"q","room":"bad room"}]`, `[{"question":"q","room":""}]`,
		`[{"question":"q","stream":"yes"}]`, `[{"limit":0}]`, `[{"limit":1.5}]`, `[{"limit":1e300}]`,
		`[{"question":"` + strings.Repeat("长", 2001) + `"}]`,
	} {
		f.Add(seed)
	}
	limits := AuthOptions{}.withDefaults()
	taken := func(s string) bool { return s == "taken" }
	f.Fuzz(func(t *testing.T, raw string) {
		var args []any
		if json.Unmarshal([]byte(seqparser.RewriteLoneSurrogates(raw)), &args) != nil {
			return
		}
		coded := func(err error) {
			if err != nil && ErrorCode(err) == "" {
				t.Fatalf("refusal without a code: %v", err)
			}
		}
		p, err := parsePayload(args, "question")
		coded(err)
		if err != nil {
			return
		}
		_, err = p.limit("limit", 20, 100)
		coded(err)
		req, err := parseAsk(p, &limits, taken)
		coded(err)
		if err != nil {
			return
		}
		q := req.question
		if q != strings.TrimSpace(q) || q == "" || !utf8.ValidString(q) || utf8.RuneCountInString(q) > limits.MaxQuestionLength {
			t.Fatalf("accepted a question breaking the text rules: %q", q)
		}
		for _, r := range q {
			if unicode.Is(unicode.Cc, r) && r != '\t' && r != '\n' && r != '\r' {
				t.Fatalf("accepted a control character in %q", q)
			}
		}
		if req.room != "" && validRoomName(req.room, taken) != nil {
			t.Fatalf("accepted an invalid room %q", req.room)
		}
	})
}
