package socketio_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zishang520/socket.io-go-parser/v2/parser"
	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/sioclient"
)

// countingParser counts the decoders its server asked for.
type countingParser struct {
	parser.Parser
	decoders atomic.Int64
}

func (p *countingParser) NewDecoder() parser.Decoder {
	p.decoders.Add(1)
	return p.Parser.NewDecoder()
}

// askInOrder sends requests back to back and checks their replies come in
// order with each seeing the one before: what the library's parser is for.
func askInOrder(t *testing.T, c *sioclient.Client) {
	t.Helper()
	const n = 10
	for i := range n {
		room := fmt.Sprintf("r%d", i)
		require.NoError(t, c.Emit("join_room", room))
		require.NoError(t, c.Emit("ask_question", map[string]any{"question": "What is Socket.IO?", "room": room}))
		require.NoError(t, c.Emit("leave_room", room))
	}
	for i := range n {
		for _, want := range []string{"room_joined", "question_received", "room_left"} {
			ev, err := c.NextAny(context.Background())
			for err == nil && !isReply(ev.Name) {
				ev, err = c.NextAny(context.Background())
			}
			require.NoError(t, err)
			require.Equal(t, want, ev.Name, "request %d", i)
			require.Equal(t, true, ev.Args[0].(map[string]any)["ok"], "%s %d: %v", want, i, ev.Args[0])
		}
	}
}

// TestSetParser: with the helper applied to the options before the server
// is built, Register uses that parser as it is and swaps nothing inside
// the server; the parser the options had is wrapped, not dropped.
func TestSetParser(t *testing.T) {
	user := &countingParser{Parser: parser.NewParser()}
	opts := socket.DefaultServerOptions()
	opts.SetParser(user)
	require.Same(t, opts, socketio.SetParser(opts))
	p := opts.GetRawParser()
	require.NotSame(t, user, p, "the library's parser is set")
	socketio.SetParser(opts)
	require.Equal(t, p, opts.GetRawParser(), "a second call changes nothing")

	sio := socket.NewServer(nil, opts)
	ts := startServerOn(t, sio, socketio.Options{Auth: bigLimits(t), MaxOpenTasks: 100})
	assert.False(t, socketio.ParserSwapped(ts.QA), "Register took the parser from the options")
	assert.Equal(t, p, sio.Opts().GetRawParser())
	for _, tr := range transports {
		c, _ := ts.dial(t, tr)
		askInOrder(t, c)
	}
	assert.Positive(t, user.decoders.Load(), "the user's parser still decodes")

	// A second namespace on the same server reuses it too.
	qa2, err := socketio.Register(sio, socketio.Options{Namespace: "/other", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	t.Cleanup(func() { _ = qa2.Close(context.Background()) })
	assert.False(t, socketio.ParserSwapped(qa2))

	assert.NotNil(t, socketio.SetParser(nil).GetRawParser(), "nil means new default options")
}

// TestSetParserFallback: without the helper, Register swaps the parser in
// place, and events are still ordered.
func TestSetParserFallback(t *testing.T) {
	ts := startServer(t, socketio.Options{Auth: bigLimits(t), MaxOpenTasks: 100})
	assert.True(t, socketio.ParserSwapped(ts.QA))
	c, _ := ts.dial(t, sioclient.TransportWebsocket)
	askInOrder(t, c)
}
