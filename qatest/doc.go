// Package qatest runs the Q&A service in tests, the way Flask-SocketIO's
// test_client does for Python: a real service on a real HTTP server at
// 127.0.0.1, and real Socket.IO v5 clients, over websocket or long-polling,
// that send requests and await replies and pushed events with deadlines.
// It is meant for users who write hooks and answerers and want to see what
// a client sees.
//
//	func TestBannedWords(t *testing.T) {
//		srv := qatest.NewServer(t, socketio.Options{KnowledgeBase: kb})
//		require.NoError(t, srv.QA.Hooks().Register(myHook))
//		c, err := srv.Dial(ctx, qatest.ClientOptions{Transport: qatest.Polling})
//		require.NoError(t, err)
//		r, err := c.Request(ctx, "ask_question", "a banned question")
//		require.NoError(t, err)
//		assert.Equal(t, socketio.CodeForbidden, r.Code())
//	}
//
// NewServer registers a cleanup that closes every client, then the service,
// the Socket.IO server and the HTTP server, and fails the test if a
// connection was still open on the service after every client had closed.
// Start does the same for code without a testing.TB (an Example, TestMain),
// which then calls Server.Close itself.
//
// Concurrency: all methods of Server and Client may be called concurrently;
// see each type for what concurrent waits on one Client mean.
//
// # Goroutines
//
// Each Client runs one goroutine, which reads from its connection; Close
// returns after it has exited. The service, the Socket.IO server and the
// HTTP server stop their goroutines in Server.Close. So qatest works with
// go.uber.org/goleak: once the cleanups have run, no goroutine of the
// harness, its clients or the service is left. The one exception is
// zishang520/engine.io v2.5.0's own timers (a goroutine per armed timer,
// which ends when the timer fires, up to 30 s after a connection closed);
// ignore that function:
//
//	func TestMain(m *testing.M) {
//		goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(qatest.EngineTimerFunction))
//	}
//
// # Errors
//
// A refused connection is reported by Dial as an error wrapping a
// *socketio.Error with the PROTOCOL.md code (match it with errors.Is
// against socketio.ErrUnauthorized and the like, or read it with
// socketio.ErrorCode). A failure reply is not an error of Request or Send:
// it is a Reply whose Err holds the code. The errors of Request, Send, Next
// and Await say why no reply or event came: context.DeadlineExceeded (or
// context.Canceled) when the wait ended, ErrClosed after Client.Close, or
// ErrDisconnected when the server ended the connection.
package qatest
