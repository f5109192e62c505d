// Package demokb holds the knowledge base of the demo server: a few dozen
// questions about Socket.IO, this question-and-answer service, Go and
// Redis, in English and Chinese.
package demokb

import (
	"bytes"
	_ "embed"

	"github.com/qaplatform/socketio"
)

//go:embed kb.json
var kbJSON []byte

// Load parses the embedded corpus and returns a new KnowledgeBase. It
// fails only if kb.json is broken, which the root package's tests check.
func Load() (*socketio.KnowledgeBase, error) {
	return socketio.LoadKnowledgeBase(bytes.NewReader(kbJSON))
}
