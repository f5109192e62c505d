package socketio_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/sioclient"
)

// TestLibrarySetsNoSocketFlags: the library's code never sets v2's
// per-socket emit flags, which race under concurrent emits
// (TestDefectEmitFlagsBare).
func TestLibrarySetsNoSocketFlags(t *testing.T) {
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	flagCall := regexp.MustCompile(`\.(Timeout|Compress|Volatile)\(`)
	checked := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		assert.False(t, flagCall.Match(src), "%s sets a per-socket emit flag", f)
		checked++
	}
	require.Positive(t, checked)
}

// TestLibraryConcurrentPushes: answers streamed by several workers at once
// to one socket, while it keeps sending requests, all arrive whole and in
// order per task (run under -race in CI).
func TestLibraryConcurrentPushes(t *testing.T) {
	const tasks, chunks = 8, 50
	answerer := socketio.AnswererFunc(func(ctx context.Context, q socketio.Question, w socketio.ChunkWriter) (socketio.Answer, error) {
		for i := range chunks {
			if err := w.WriteChunk(fmt.Sprintf("%d,", i)); err != nil {
				return socketio.Answer{}, err
			}
		}
		return socketio.Answer{}, nil
	})
	ts := startServer(t, socketio.Options{Answerer: answerer, Workers: tasks, MaxOpenTasks: tasks, Auth: bigLimits(t)})
	c, _ := ts.dial(t, sioclient.TransportWebsocket)
	for range tasks {
		require.NoError(t, c.Emit("ask_question", map[string]any{"question": "q", "stream": true}))
	}
	for range 20 {
		require.NoError(t, c.Emit("get_history", map[string]any{"limit": 1}))
	}
	seq := map[string]float64{}
	answers := 0
	for answers < tasks {
		ev, err := c.NextAny(context.Background())
		require.NoError(t, err)
		m := ev.Args[0].(map[string]any)
		switch ev.Name {
		case "answer_chunk":
			id := m["task_id"].(string)
			require.Equal(t, seq[id], m["seq"], "chunks of %s in order", id)
			seq[id]++
		case "answer":
			id := m["task_id"].(string)
			require.EqualValues(t, chunks, seq[id], "every chunk of %s before its answer", id)
			answers++
		}
	}
}
