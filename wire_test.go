package socketio_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/sioclient"
)

// transports lists the Engine.IO transports every wire test runs over.
var transports = []string{sioclient.TransportWebsocket, sioclient.TransportPolling}

// testServer is a real HTTP server with the service registered on a real v2
// Socket.IO server.
type testServer struct {
	URL string
	QA  *socketio.Server
	IO  *socket.Server
}

// startServer starts the service with opts (a test knowledge base and a
// quiet logger unless set). Everything is closed when the test ends.
func startServer(t *testing.T, opts socketio.Options) *testServer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.KnowledgeBase == nil && opts.Answerer == nil {
		opts.KnowledgeBase = testKB(t)
	}
	return startServerOn(t, socket.NewServer(nil, nil), opts)
}

// startServerOn is startServer on a v2 server the caller built (with a
// cluster adapter, say).
func startServerOn(t *testing.T, sio *socket.Server, opts socketio.Options) *testServer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.KnowledgeBase == nil && opts.Answerer == nil {
		opts.KnowledgeBase = testKB(t)
	}
	qa, err := socketio.Register(sio, opts)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", qa.Handler())
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := qa.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			assert.NoError(t, err) // a test that closed early may have timed out on purpose
		}
		sio.Close(nil)
		hs.CloseClientConnections()
		hs.Close()
	})
	return &testServer{URL: hs.URL, QA: qa, IO: sio}
}

func testKB(t *testing.T) *socketio.KnowledgeBase {
	t.Helper()
	kb, err := socketio.NewKnowledgeBase([]socketio.Entry{
		{Question: "What is Socket.IO?", Answer: "Socket.IO is a library for real-time, bidirectional, event-based communication.", Source: "docs/socket.io"},
		{Question: "How do rooms work?", Answer: "A room is a named group of sockets; join it to receive what is sent to it.", Source: "docs/rooms"},
		{Question: "什么是流式回答？", Answer: "流式回答会把答案分成多个片段依次发送给客户端。", Source: "docs/stream"},
	})
	require.NoError(t, err)
	return kb
}

type dialOption func(*sioclient.Options)

func withAuth(m map[string]any) dialOption {
	return func(o *sioclient.Options) { o.Auth = m }
}

func withHeader(k, v string) dialOption {
	return func(o *sioclient.Options) {
		if o.Header == nil {
			o.Header = http.Header{}
		}
		o.Header.Set(k, v)
	}
}

// dialErr connects a client over transport; the client is closed when the
// test ends.
func (ts *testServer) dialErr(t *testing.T, transport string, opts ...dialOption) (*sioclient.Client, error) {
	t.Helper()
	// The client's workarounds for bare v2.5.0 races are off: the library
	// must not need them.
	o := sioclient.Options{URL: ts.URL, Transport: transport, Timeout: 5 * time.Second, ConnectRetry: -1, Settle: -1}
	for _, f := range opts {
		f(&o)
	}
	c, err := sioclient.Dial(context.Background(), o)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// dial connects and returns the client with its connected payload.
func (ts *testServer) dial(t *testing.T, transport string, opts ...dialOption) (*sioclient.Client, map[string]any) {
	t.Helper()
	c, err := ts.dialErr(t, transport, opts...)
	require.NoError(t, err)
	args, err := c.Next(context.Background(), "connected")
	require.NoError(t, err)
	require.Len(t, args, 1)
	return c, args[0].(map[string]any)
}

// call sends a request with an ack and returns the single reply object.
func call(t *testing.T, c *sioclient.Client, event string, args ...any) map[string]any {
	t.Helper()
	reply, err := c.EmitWithAck(context.Background(), event, args...)
	require.NoError(t, err, event)
	require.Len(t, reply, 1, "%s: one reply object", event)
	m, ok := reply[0].(map[string]any)
	require.True(t, ok, "%s: reply is an object: %#v", event, reply[0])
	return m
}

// okReply asserts a success reply.
func okReply(t *testing.T, event string, m map[string]any) map[string]any {
	t.Helper()
	require.Equal(t, true, m["ok"], "%s: %v", event, m)
	return m
}

// errCode returns the code of a failure reply.
func errCode(t *testing.T, m map[string]any) string {
	t.Helper()
	require.Equal(t, false, m["ok"], "expected a failure, got %v", m)
	e, ok := m["error"].(map[string]any)
	require.True(t, ok, "failure has an error object: %v", m)
	assert.NotEmpty(t, e["message"])
	code, _ := e["code"].(string)
	return code
}

// next waits for a pushed event and returns its single object.
func next(t *testing.T, c *sioclient.Client, event string) map[string]any {
	t.Helper()
	args, err := c.Next(context.Background(), event)
	require.NoError(t, err, event)
	require.Len(t, args, 1, event)
	return args[0].(map[string]any)
}

// forEachTransport runs f once per transport, in parallel subtests.
func forEachTransport(t *testing.T, f func(t *testing.T, transport string)) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { f(t, tr) })
	}
}

func isRFC3339Millis(s any) bool {
	str, ok := s.(string)
	if !ok {
		return false
	}
	tm, err := time.Parse("2006-01-02T15:04:05.000Z07:00", str)
	return err == nil && strings.HasSuffix(str, "Z") && tm.Location() == time.UTC
}

// noEvent asserts nothing named event arrives within a short grace period
// after a later marker request has been answered (replies are ordered, so
// an earlier push would already be queued).
func noEvent(t *testing.T, c *sioclient.Client, event string) {
	t.Helper()
	okReply(t, "get_history", call(t, c, "get_history", map[string]any{"limit": 1}))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Next(ctx, event)
	require.Error(t, err, "unexpected %s", event)
}

// stats reads a's connection statistics.
func stats(t *testing.T, a *socketio.Auth) socketio.ConnectionStats {
	t.Helper()
	st, err := a.ConnectionStats(context.Background())
	require.NoError(t, err)
	return st
}
