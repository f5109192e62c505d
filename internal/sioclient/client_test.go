package sioclient_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zishang520/socket.io/v2/socket"
	"go.uber.org/goleak"

	"github.com/qaplatform/socketio/internal/sioclient"
)

var transports = []string{sioclient.TransportWebsocket, sioclient.TransportPolling}

// testServer is a real zishang520 Socket.IO server on 127.0.0.1:0.
type testServer struct {
	URL     string
	io      *socket.Server
	sockets chan *serverSocket // every socket accepted, in order
	held    chan func()        // middleware continuations held for auth.hold
	holding atomic.Bool
}

// serverSocket is a server-side socket with the Engine.IO packets its
// connection received from the client since it was accepted, as text
// (`420["echo",1]`, "3"); close packets sent while polling are not seen.
type serverSocket struct {
	*socket.Socket
	packets chan string
}

// newTestServer starts a server whose "/" and "/admin" namespaces refuse
// auth.token == "bad" and register the handlers of registerHandlers.
func newTestServer(t testing.TB, configure ...func(*socket.ServerOptions)) *testServer {
	t.Helper()
	opts := socket.DefaultServerOptions()
	for _, f := range configure {
		f(opts)
	}
	ts := &testServer{
		io:      socket.NewServer(nil, opts),
		sockets: make(chan *serverSocket, 64),
		held:    make(chan func(), 1),
	}
	for _, nsp := range []socket.Namespace{ts.io.Sockets(), ts.io.Of("/admin", nil)} {
		nsp.Use(func(s *socket.Socket, next func(*socket.ExtendedError)) {
			auth, _ := s.Handshake().Auth.(map[string]any)
			if auth["token"] == "bad" {
				next(socket.NewExtendedError("unauthorized", map[string]any{"code": "unauthorized"}))
				return
			}
			// The first CONNECT with auth.hold stays unanswered until the
			// test calls the continuation it finds in ts.held.
			if auth["hold"] == true && ts.holding.CompareAndSwap(false, true) {
				ts.held <- func() { next(nil) }
				return
			}
			// Registered here, before the CONNECT reply goes out, so that
			// nothing the client sends after Dial returns is missed.
			ss := &serverSocket{Socket: s, packets: make(chan string, 256)}
			s.Conn().On("packet", func(args ...any) {
				select {
				case ss.packets <- packetText(args[0]):
				default:
				}
			})
			registerHandlers(s)
			select {
			case ts.sockets <- ss:
			default:
			}
			next(nil)
		})
	}
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", ts.io.ServeHandler(nil))
	hs := httptest.NewServer(mux)
	ts.URL = hs.URL
	t.Cleanup(func() {
		done := make(chan struct{})
		ts.io.Close(func(error) { close(done) })
		<-done
		hs.Close()
	})
	return ts
}

func registerHandlers(s *socket.Socket) {
	// echo answers with its own arguments through the ack.
	s.On("echo", func(args ...any) {
		if ack, ok := args[len(args)-1].(socket.Ack); ok {
			ack(args[:len(args)-1], nil)
		}
	})
	// echo_back pushes its arguments back as "echoed".
	s.On("echo_back", func(args ...any) { _ = s.Emit("echoed", args...) })
	// trigger pushes two different events in a fixed order.
	s.On("trigger", func(...any) {
		_ = s.Emit("task_status", "running")
		_ = s.Emit("answer", map[string]any{"text": "42", "n": 1})
	})
	// kick disconnects the socket; true also closes the connection.
	s.On("kick", func(args ...any) { s.Disconnect(args[0].(bool)) })
	// ask emits "question" with an ack and reports the reply as "answered".
	s.On("ask", func(...any) {
		_ = s.Emit("question", "ready?", socket.Ack(func(reply []any, err error) {
			if err == nil {
				_ = s.Emit("answered", reply...)
			}
		}))
	})
}

// packetText renders an engine.io-go-parser *packet.Packet (not imported:
// that module is not a direct dependency) as wire text.
func packetText(p any) string {
	v := reflect.Indirect(reflect.ValueOf(p))
	typ := map[string]string{
		"open": "0", "close": "1", "ping": "2", "pong": "3",
		"message": "4", "upgrade": "5", "noop": "6",
	}[v.FieldByName("Type").String()]
	if d, ok := v.FieldByName("Data").Interface().(fmt.Stringer); ok {
		return typ + d.String()
	}
	return typ
}

// expectPacket waits until the server received want, skipping other packets.
func (ss *serverSocket) expectPacket(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	var seen []string
	for {
		select {
		case p := <-ss.packets:
			if p == want {
				return
			}
			seen = append(seen, p)
		case <-timeout:
			t.Fatalf("server did not receive %q; it received %q", want, seen)
		}
	}
}

// nextSocket returns the next socket the server accepted.
func (ts *testServer) nextSocket(t *testing.T) *serverSocket {
	t.Helper()
	select {
	case s := <-ts.sockets:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("server accepted no socket")
		return nil
	}
}

func dial(t *testing.T, ts *testServer, transport string, edit ...func(*sioclient.Options)) *sioclient.Client {
	t.Helper()
	o := sioclient.Options{URL: ts.URL, Transport: transport, Timeout: 5 * time.Second}
	for _, f := range edit {
		f(&o)
	}
	c, err := sioclient.Dial(context.Background(), o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func waitDone(t *testing.T, c *sioclient.Client) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done was not closed")
	}
}

func TestConnect(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t)
			c := dial(t, ts, tr, func(o *sioclient.Options) {
				o.Auth = map[string]any{"token": "good"}
				o.Header = http.Header{"X-Forwarded-For": {"203.0.113.7"}}
			})
			s := ts.nextSocket(t)
			assert.Equal(t, string(s.Id()), c.SID())
			assert.Equal(t, s.Conn().Id(), c.EngineSID())
			assert.Equal(t, tr, s.Conn().Transport().Name())
			assert.Equal(t, map[string]any{"token": "good"}, s.Handshake().Auth)
			assert.Equal(t, []string{"203.0.113.7"}, s.Handshake().Headers["X-Forwarded-For"])
			assert.NoError(t, c.Err())
		})
	}
}

func TestEmitWithAck(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t)
			c := dial(t, ts, tr)
			got, err := c.EmitWithAck(context.Background(), "echo", "hi", 7, map[string]any{"a": []any{true, nil}})
			require.NoError(t, err)
			assert.Equal(t, []any{"hi", float64(7), map[string]any{"a": []any{true, nil}}}, got)

			// Concurrent acks are matched by id, not by arrival order.
			var wg sync.WaitGroup
			for i := range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					got, err := c.EmitWithAck(context.Background(), "echo", i)
					if assert.NoError(t, err) {
						assert.Equal(t, []any{float64(i)}, got)
					}
				}()
			}
			wg.Wait()
		})
	}
}

func TestEmitWithAckTimeout(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t)
			c := dial(t, ts, tr)
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			_, err := c.EmitWithAck(ctx, "no_such_handler")
			require.ErrorIs(t, err, context.DeadlineExceeded)
			// The client is still usable afterwards.
			got, err := c.EmitWithAck(context.Background(), "echo", "after")
			require.NoError(t, err)
			assert.Equal(t, []any{"after"}, got)
		})
	}
}

func TestServerPush(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t)
			c := dial(t, ts, tr)
			ctx := context.Background()

			require.NoError(t, c.Emit("trigger"))
			e, err := c.NextAny(ctx)
			require.NoError(t, err)
			assert.Equal(t, sioclient.Event{Name: "task_status", Args: []any{"running"}}, e)
			e, err = c.NextAny(ctx)
			require.NoError(t, err)
			assert.Equal(t, "answer", e.Name)
			assert.Equal(t, []any{map[string]any{"text": "42", "n": float64(1)}}, e.Args)

			// Next by name skips, but keeps, other events.
			require.NoError(t, c.Emit("trigger"))
			args, err := c.Next(ctx, "answer")
			require.NoError(t, err)
			assert.Len(t, args, 1)
			args, err = c.Next(ctx, "task_status")
			require.NoError(t, err)
			assert.Equal(t, []any{"running"}, args)

			ctx2, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			defer cancel()
			_, err = c.NextAny(ctx2)
			assert.ErrorIs(t, err, context.DeadlineExceeded, "the queue must be empty")
		})
	}
}

func TestServerAckRequest(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t)
			c := dial(t, ts, tr)
			ctx := context.Background()
			require.NoError(t, c.Emit("ask"))
			e, err := c.NextAny(ctx)
			require.NoError(t, err)
			require.Equal(t, "question", e.Name)
			_, ok := e.AckID()
			require.True(t, ok)
			require.NoError(t, c.Ack(e, "yes", 1))
			args, err := c.Next(ctx, "answered")
			require.NoError(t, err)
			assert.Equal(t, []any{"yes", float64(1)}, args)

			assert.Error(t, c.Ack(sioclient.Event{Name: "plain"}), "an event without ack id cannot be acked")
		})
	}
}

func TestNamespace(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t)
			c := dial(t, ts, tr, func(o *sioclient.Options) { o.Namespace = "/admin" })
			s := ts.nextSocket(t)
			assert.Equal(t, "/admin", s.Nsp().Name())
			got, err := c.EmitWithAck(context.Background(), "echo", "nsp")
			require.NoError(t, err)
			assert.Equal(t, []any{"nsp"}, got)
			require.NoError(t, c.Emit("trigger"))
			_, err = c.Next(context.Background(), "answer")
			require.NoError(t, err)
		})
	}
}

func TestConnectError(t *testing.T) {
	cases := []struct {
		name, nsp string
		auth      map[string]any
		message   string
		data      map[string]any
	}{
		{"middleware refuses", "/", map[string]any{"token": "bad"}, "unauthorized", map[string]any{"code": "unauthorized"}},
		{"middleware refuses in namespace", "/admin", map[string]any{"token": "bad"}, "unauthorized", map[string]any{"code": "unauthorized"}},
		{"unknown namespace", "/nope", nil, "Invalid namespace", nil},
	}
	for _, tr := range transports {
		for _, tc := range cases {
			t.Run(tr+"/"+tc.name, func(t *testing.T) {
				ts := newTestServer(t)
				c, err := sioclient.Dial(context.Background(), sioclient.Options{
					URL: ts.URL, Transport: tr, Namespace: tc.nsp, Auth: tc.auth,
				})
				require.Nil(t, c)
				var ce *sioclient.ConnectError
				require.ErrorAs(t, err, &ce)
				assert.Equal(t, tc.message, ce.Message)
				assert.Equal(t, tc.data, ce.Data)
				assert.NotEmpty(t, ce.Raw)
			})
		}
	}
}

// TestConnectRetry holds the first CONNECT unanswered, as zishang520 does
// when it drops one: Dial starts over on a new session. The first retry
// fires when the test has seen the server hold the CONNECT, not after a
// timer that load could make fire early or late.
func TestConnectRetry(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t)
			retryFirst := make(chan time.Time)
			o := sioclient.Options{URL: ts.URL, Transport: tr, Timeout: 5 * time.Second, Auth: map[string]any{"hold": true}}
			o = sioclient.WithRetryTimer(o, func(n int, d time.Duration) <-chan time.Time {
				if n == 0 {
					return retryFirst
				}
				return time.After(d) // a later CONNECT may still be dropped
			})
			type result struct {
				c   *sioclient.Client
				err error
			}
			done := make(chan result, 1)
			go func() {
				c, err := sioclient.Dial(context.Background(), o)
				done <- result{c, err}
			}()
			var release func()
			select {
			case release = <-ts.held:
			case <-time.After(5 * time.Second):
				t.Fatal("the server did not hold the first CONNECT")
			}
			close(retryFirst)
			r := <-done
			require.NoError(t, r.err)
			c := r.c
			t.Cleanup(func() { _ = c.Close() })

			// The kept session's socket; an attempt whose reply came after
			// its own timer (under load) may have left one before it.
			ss := ts.nextSocket(t)
			for string(ss.Id()) != c.SID() {
				ss = ts.nextSocket(t)
			}
			assert.Equal(t, ss.Conn().Id(), c.EngineSID(), "the session of the accepted CONNECT is the one kept")
			got, err := c.EmitWithAck(context.Background(), "echo", "retried")
			require.NoError(t, err)
			assert.Equal(t, []any{"retried"}, got)
			release() // the first session is closed: the server drops it
		})
	}
}

func TestConnectRetryDisabled(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t)
			c, err := sioclient.Dial(context.Background(), sioclient.Options{
				URL: ts.URL, Transport: tr, Auth: map[string]any{"hold": true},
				ConnectRetry: -1, Timeout: 200 * time.Millisecond,
			})
			assert.Nil(t, c)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			(<-ts.held)()
		})
	}
}

func TestDialErrors(t *testing.T) {
	ts := newTestServer(t)
	cases := []struct {
		name string
		o    sioclient.Options
	}{
		{"no URL", sioclient.Options{}},
		{"bad scheme", sioclient.Options{URL: "ftp://127.0.0.1"}},
		{"bad transport", sioclient.Options{URL: ts.URL, Transport: "webtransport"}},
		{"wrong path websocket", sioclient.Options{URL: ts.URL, Path: "/nothing/", Transport: sioclient.TransportWebsocket}},
		{"wrong path polling", sioclient.Options{URL: ts.URL, Path: "/nothing/", Transport: sioclient.TransportPolling}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := sioclient.Dial(context.Background(), tc.o)
			assert.Nil(t, c)
			assert.Error(t, err)
		})
	}
}

func TestServerDisconnect(t *testing.T) {
	for _, tr := range transports {
		for _, closeConn := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/close=%v", tr, closeConn), func(t *testing.T) {
				ts := newTestServer(t)
				c := dial(t, ts, tr)
				err := c.Emit("kick", closeConn)
				if tr == sioclient.TransportWebsocket || !closeConn {
					// Closing while the POST is being handled answers it 429.
					require.NoError(t, err)
				}
				waitDone(t, c)
				want := sioclient.ErrServerDisconnect
				if closeConn && !errors.Is(c.Err(), want) {
					// zishang520 v2.5.0 writes "41" asynchronously and may
					// close the connection before it is sent.
					want = sioclient.ErrTransportClosed
				}
				assert.ErrorIs(t, c.Err(), want)
				assert.ErrorIs(t, c.Emit("echo"), want)
				_, err = c.NextAny(context.Background())
				assert.ErrorIs(t, err, want)
			})
		}
	}
}

func TestEngineClosedByServer(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t)
			c := dial(t, ts, tr)
			ts.nextSocket(t).Conn().Close(false)
			waitDone(t, c)
			assert.ErrorIs(t, c.Err(), sioclient.ErrTransportClosed)
		})
	}
}

func TestSendRaw(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t)
			c := dial(t, ts, tr)
			require.NoError(t, c.SendRaw(`42["echo_back","raw",1]`))
			args, err := c.Next(context.Background(), "echoed")
			require.NoError(t, err)
			assert.Equal(t, []any{"raw", float64(1)}, args)

			// A malformed Socket.IO packet makes the server drop the
			// connection; when polling, it also answers the POST with 429.
			err = c.SendRaw(`42["x"`)
			if tr == sioclient.TransportWebsocket {
				require.NoError(t, err)
			}
			waitDone(t, c)
			assert.ErrorIs(t, c.Err(), sioclient.ErrTransportClosed)
		})
	}
}

func TestHeartbeat(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t, func(o *socket.ServerOptions) {
				o.SetPingInterval(20 * time.Millisecond)
				o.SetPingTimeout(500 * time.Millisecond)
			})
			c := dial(t, ts, tr)
			ss := ts.nextSocket(t)
			for range 5 {
				ss.expectPacket(t, "3")
			}
			got, err := c.EmitWithAck(context.Background(), "echo", "alive")
			require.NoError(t, err)
			assert.Equal(t, []any{"alive"}, got)
			assert.NoError(t, c.Err())
		})
	}
}

// TestWireFormat checks the packets the server received, byte for byte.
func TestWireFormat(t *testing.T) {
	for _, tr := range transports {
		for _, nsp := range []string{"/", "/admin"} {
			t.Run(tr+nsp, func(t *testing.T) {
				prefix := ""
				if nsp != "/" {
					prefix = nsp + ","
				}
				ts := newTestServer(t)
				c := dial(t, ts, tr, func(o *sioclient.Options) { o.Namespace = nsp })
				ss := ts.nextSocket(t)
				ctx := context.Background()

				_, err := c.EmitWithAck(ctx, "echo", "a")
				require.NoError(t, err)
				ss.expectPacket(t, `42`+prefix+`0["echo","a"]`)
				_, err = c.EmitWithAck(ctx, "echo", map[string]any{"k": 1.5})
				require.NoError(t, err)
				ss.expectPacket(t, `42`+prefix+`1["echo",{"k":1.5}]`)
				require.NoError(t, c.Emit("echo_back"))
				ss.expectPacket(t, `42`+prefix+`["echo_back"]`)
				require.NoError(t, c.Close())
				ss.expectPacket(t, `41`+prefix)
			})
		}
	}
}

func TestClose(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			// Registered first, so it runs after the server is shut down.
			// The server's own stray timers are not the client's; see
			// main_test.go.
			ignore := goleak.IgnoreCurrent()
			t.Cleanup(func() {
				goleak.VerifyNone(t, ignore,
					goleak.IgnoreTopFunction("github.com/zishang520/engine.io/v2/utils.SetTimeout.func1"))
			})

			ts := newTestServer(t)
			c := dial(t, ts, tr)
			ss := ts.nextSocket(t)
			gone := make(chan any, 1)
			ss.On("disconnect", func(args ...any) { gone <- args[0] })

			waiting := make(chan error, 1)
			go func() {
				_, err := c.Next(context.Background(), "never_sent")
				waiting <- err
			}()
			_, err := c.EmitWithAck(context.Background(), "echo", 1)
			require.NoError(t, err)

			require.NoError(t, c.Close())
			require.NoError(t, c.Close(), "Close is idempotent")
			waitDone(t, c)
			assert.ErrorIs(t, <-waiting, sioclient.ErrClosed, "Close wakes waiters")
			assert.ErrorIs(t, c.Err(), sioclient.ErrClosed)
			assert.ErrorIs(t, c.Emit("echo"), sioclient.ErrClosed)
			_, err = c.EmitWithAck(context.Background(), "echo")
			assert.ErrorIs(t, err, sioclient.ErrClosed)

			ss.expectPacket(t, "41")
			select {
			case reason := <-gone:
				// The server handles "41" on a goroutine of its own, so it may
				// notice the closed transport first.
				assert.Contains(t, []any{"client namespace disconnect", "transport close"}, reason)
			case <-time.After(5 * time.Second):
				t.Fatal("server did not see the disconnect")
			}
		})
	}
}

// TestCloseRacesCalls runs Close while other goroutines use the client.
func TestCloseRacesCalls(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := newTestServer(t)
			c := dial(t, ts, tr)
			var wg sync.WaitGroup
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						if _, err := c.EmitWithAck(context.Background(), "echo", "x"); err != nil {
							if !errors.Is(err, sioclient.ErrClosed) {
								t.Errorf("unexpected error: %v", err)
							}
							return
						}
					}
				}()
			}
			_, err := c.EmitWithAck(context.Background(), "echo", "warm")
			require.NoError(t, err)
			require.NoError(t, c.Close())
			wg.Wait()
		})
	}
}

func BenchmarkEmitWithAck(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr, func(b *testing.B) {
			ts := newTestServer(b)
			c, err := sioclient.Dial(context.Background(), sioclient.Options{URL: ts.URL, Transport: tr})
			require.NoError(b, err)
			defer c.Close()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.EmitWithAck(ctx, "echo", "x"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
