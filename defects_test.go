package socketio_test

// Each test here pairs a check that fails on a bare
// github.com/zishang520/socket.io/v2 v2.5.0 server (the "bare" subtest
// asserts the defect is really there, so the check is known to detect it)
// with the same check passing once the library is registered.

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/sioclient"
)

// bareServer starts a v2 server without the library; setup registers its
// handlers on each new socket.
func bareServer(t *testing.T, setup func(*socket.Socket)) string {
	t.Helper()
	sio := socket.NewServer(nil, nil)
	sio.On("connection", func(args ...any) { setup(args[0].(*socket.Socket)) })
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", sio.ServeHandler(nil))
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		sio.Close(nil)
		hs.CloseClientConnections()
		hs.Close()
	})
	return hs.URL
}

func dialURL(t *testing.T, url, transport string) *sioclient.Client {
	t.Helper()
	c, err := sioclient.Dial(context.Background(), sioclient.Options{URL: url, Transport: transport})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// Defect: v2.5.0 runs each incoming event in its own goroutine, so a
// client's second request can be handled before its first.
func TestDefectEventOrder(t *testing.T) {
	// The first request is slow (it waits, up to a bound, for the second to
	// be handled); in order, the second cannot be handled before it.
	const wait = 300 * time.Millisecond
	t.Run("bare", func(t *testing.T) {
		var mu sync.Mutex
		var order []string
		secondDone := make(chan struct{})
		url := bareServer(t, func(s *socket.Socket) {
			s.On("first", func(...any) {
				select {
				case <-secondDone:
				case <-time.After(wait):
				}
				mu.Lock()
				order = append(order, "first")
				mu.Unlock()
			})
			s.On("second", func(args ...any) {
				mu.Lock()
				order = append(order, "second")
				mu.Unlock()
				close(secondDone)
				args[len(args)-1].(socket.Ack)([]any{"ok"}, nil)
			})
		})
		c := dialURL(t, url, sioclient.TransportWebsocket)
		require.NoError(t, c.Emit("first"))
		_, err := c.EmitWithAck(context.Background(), "second")
		require.NoError(t, err)
		require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 2 }, 5*time.Second, time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, []string{"second", "first"}, order, "the defect: the second request ran before the first")
	})
	t.Run("library", func(t *testing.T) {
		ts := startServer(t, socketio.Options{})
		h := &orderHook{BaseHook: socketio.NewBaseHook("order", 50), wait: wait, secondDone: make(chan struct{})}
		require.NoError(t, ts.QA.Hooks().Register(h))
		c, _ := ts.dial(t, sioclient.TransportWebsocket)
		require.NoError(t, c.Emit("join_room", "first"))
		okReply(t, "join", call(t, c, "join_room", "second"))
		h.mu.Lock()
		defer h.mu.Unlock()
		assert.Equal(t, []string{"first", "second"}, h.order)
	})
}

type orderHook struct {
	socketio.BaseHook
	wait       time.Duration
	secondDone chan struct{}
	mu         sync.Mutex
	order      []string
}

func (h *orderHook) BeforeJoinRoom(_ context.Context, e *socketio.RoomEvent) error {
	if e.Room == "first" {
		select {
		case <-h.secondDone:
		case <-time.After(h.wait):
		}
	}
	h.mu.Lock()
	h.order = append(h.order, e.Room)
	h.mu.Unlock()
	if e.Room == "second" {
		close(h.secondDone)
	}
	return nil
}

// startChild runs this test binary as a bare v2 server in another process
// (see runChild in main_test.go) and returns its URL and a function that
// waits for the process to end, returning its output and exit error.
func startChild(t *testing.T, mode string) (string, func() (string, error)) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	url := strings.TrimSpace(strings.TrimPrefix(line, "URL="))
	wait := func() (string, error) {
		done := make(chan error, 1)
		go func() {
			_, _ = io.Copy(io.Discard, stdout)
			done <- cmd.Wait()
		}()
		select {
		case err := <-done:
			return stderr.String(), err
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			return "still running after 10s", <-done
		}
	}
	return url, wait
}

// Defect: v2.5.0 has no recover(), so a panic in any listener kills the
// whole process, and every client with it.
func TestDefectListenerPanic(t *testing.T) {
	t.Run("bare", func(t *testing.T) {
		url, wait := startChild(t, "listener-panic")
		c := dialURL(t, url, sioclient.TransportWebsocket)
		require.NoError(t, c.Emit("boom"))
		stderr, err := wait()
		require.Error(t, err, "the defect: the process died")
		assert.Contains(t, stderr, "a bug in a listener")
	})
	t.Run("library", func(t *testing.T) {
		ts := startServer(t, socketio.Options{})
		require.NoError(t, ts.QA.Hooks().Register(&refuser{BaseHook: socketio.NewBaseHook("boom", 50), panicOn: "join"}))
		c, _ := ts.dial(t, sioclient.TransportWebsocket)
		other, _ := ts.dial(t, sioclient.TransportPolling)
		assert.Equal(t, "internal", errCode(t, call(t, c, "join_room", "x")))
		okReply(t, "history", call(t, c, "get_history"))
		okReply(t, "history", call(t, other, "get_history"))
	})
}

// hostileFrames are Engine.IO message packets whose Socket.IO payload v2.5.0
// accepts from the parser and then panics on.
var hostileFrames = []string{
	"42",     // EVENT without payload: onevent asserts Data.([]any)
	"43",     // ACK without payload: onack asserts Data.([]any)
	"42[1]",  // event name that is not a string
	"4213",   // EVENT with an ack id and no payload
	"42[\"x", // truncated JSON
	"45-",    // broken binary attachment count
	"4/nope,2[\"x\"]",
	"4" + strings.Repeat("[", 20000),
}

// Defect: some malformed frames panic inside v2.5.0 itself.
func TestDefectMalformedFrames(t *testing.T) {
	t.Run("bare", func(t *testing.T) {
		for _, frame := range hostileFrames[:1] {
			t.Run(frame, func(t *testing.T) {
				url, wait := startChild(t, "plain")
				c := dialURL(t, url, sioclient.TransportWebsocket)
				require.NoError(t, c.SendRaw(frame))
				stderr, err := wait()
				require.Error(t, err, "the defect: the process died")
				assert.Contains(t, stderr, "panic")
			})
		}
	})
	t.Run("library", func(t *testing.T) {
		forEachTransport(t, func(t *testing.T, tr string) {
			ts := startServer(t, socketio.Options{})
			bystander, _ := ts.dial(t, tr)
			for _, frame := range hostileFrames {
				c, _ := ts.dial(t, tr)
				// The offender may be disconnected, even while its frame is
				// being sent; the server and the other client go on.
				_ = c.SendRaw(frame)
				okReply(t, "history", call(t, bystander, "get_history"))
			}
			okReply(t, "join", call(t, bystander, "join_room", "still-here"))
		})
	})
}

// Defect: the polling transport checks the Content-Length a client
// declares, not the bytes it reads, so a chunked body of any size is read
// into memory whole.
func TestDefectPollingBodyLimit(t *testing.T) {
	const limit, size = 1_000_000, 32 << 20
	// send posts a chunked body of size bytes and returns how many of them
	// the server took before answering, and its status.
	send := func(t *testing.T, url string) (int64, int) {
		t.Helper()
		sid := pollingSession(t, url)
		body := &countingReader{r: io.LimitReader(zeros{}, size)}
		req, err := http.NewRequest(http.MethodPost, url+"/socket.io/?EIO=4&transport=polling&sid="+sid, body)
		require.NoError(t, err)
		req.ContentLength = -1 // chunked: the client does not say how much
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return body.n.Load(), 0 // the server hung up mid-body
		}
		defer resp.Body.Close()
		return body.n.Load(), resp.StatusCode
	}
	t.Run("bare", func(t *testing.T) {
		url := bareServer(t, func(*socket.Socket) {})
		n, status := send(t, url)
		assert.Equal(t, http.StatusOK, status)
		assert.EqualValues(t, size, n, "the defect: the server read the whole oversized body")
	})
	t.Run("library", func(t *testing.T) {
		ts := startServer(t, socketio.Options{})
		n, status := send(t, ts.URL)
		assert.NotEqual(t, http.StatusOK, status)
		assert.Less(t, n, int64(size/4), "the server stopped reading near the limit (%d bytes plus socket buffers)", limit)
	})
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = '0'
	}
	return len(p), nil
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// pollingSession opens an Engine.IO polling session and connects it to the
// default namespace, returning the session id.
func pollingSession(t *testing.T, url string) string {
	t.Helper()
	get := func(u string) string {
		resp, err := http.Get(u)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return string(b)
	}
	open := get(url + "/socket.io/?EIO=4&transport=polling")
	i := strings.Index(open, `"sid":"`)
	require.Positive(t, i, open)
	sid := open[i+7:]
	sid = sid[:strings.IndexByte(sid, '"')]
	resp, err := http.Post(url+"/socket.io/?EIO=4&transport=polling&sid="+sid, "text/plain", strings.NewReader("40"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Contains(t, get(url+"/socket.io/?EIO=4&transport=polling&sid="+sid), "40")
	return sid
}

// Defect: the handshake address is the raw peer address, port included,
// whatever proxy the request came through.
func TestDefectHandshakeAddress(t *testing.T) {
	t.Run("bare", func(t *testing.T) {
		got := make(chan string, 1)
		url := bareServer(t, func(s *socket.Socket) { got <- s.Handshake().Address })
		dialURL(t, url, sioclient.TransportWebsocket)
		_ = url
		addr := <-got
		assert.True(t, strings.HasPrefix(addr, "127.0.0.1:"), "the defect: %q is the proxy's address and port", addr)
	})
	t.Run("library", func(t *testing.T) {
		auth, err := socketio.NewAuth(socketio.AuthOptions{TrustedProxies: []string{"127.0.0.0/8"}})
		require.NoError(t, err)
		t.Cleanup(func() { auth.Close() })
		ts := startServer(t, socketio.Options{Auth: auth})
		rec := &addrHook{BaseHook: socketio.NewBaseHook("addr", 50), got: make(chan string, 1)}
		require.NoError(t, ts.QA.Hooks().Register(rec))
		ts.dial(t, sioclient.TransportPolling, withHeader("X-Forwarded-For", "203.0.113.9"))
		assert.Equal(t, "203.0.113.9", <-rec.got)
	})
}

type addrHook struct {
	socketio.BaseHook
	got chan string
}

func (h *addrHook) AfterConnect(_ context.Context, e *socketio.ConnectEvent) { h.got <- e.Address }

// Defect: the websocket transport stops sending a batch after its first
// pre-encoded frame, so room broadcasts lose deliveries under load.
func TestDefectBroadcastLoss(t *testing.T) {
	const members, messages = 3, 2000
	count := func(t *testing.T, clients []*sioclient.Client) int {
		t.Helper()
		total := 0
		for _, c := range clients {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			for {
				ev, err := c.NextAny(ctx)
				if err != nil || ev.Name == "end" {
					break
				}
				if ev.Name == "m" {
					total++
				}
			}
			cancel()
		}
		return total
	}
	broadcast := func(sio *socket.Server) {
		for i := range messages {
			sio.To("room").Emit("m", i)
		}
		sio.To("room").Emit("end")
	}
	joined := func(n int) (func(*socket.Socket), *sync.WaitGroup) {
		var wg sync.WaitGroup
		wg.Add(n)
		return func(s *socket.Socket) { s.Join("room"); wg.Done() }, &wg
	}
	t.Run("bare", func(t *testing.T) {
		sio := socket.NewServer(nil, nil)
		join, wg := joined(members)
		sio.On("connection", func(args ...any) { join(args[0].(*socket.Socket)) })
		hs := httptest.NewServer(sio.ServeHandler(nil))
		t.Cleanup(func() { sio.Close(nil); hs.CloseClientConnections(); hs.Close() })
		var clients []*sioclient.Client
		for range members {
			clients = append(clients, dialURL(t, hs.URL, sioclient.TransportWebsocket))
		}
		wg.Wait()
		broadcast(sio)
		got := count(t, clients)
		assert.Less(t, got, members*messages, "the defect: deliveries were lost")
		t.Logf("bare v2.5.0 delivered %d of %d", got, members*messages)
	})
	t.Run("library", func(t *testing.T) {
		sio := socket.NewServer(nil, nil)
		qa, err := socketio.Register(sio, socketio.Options{Namespace: "/qa"})
		require.NoError(t, err)
		join, wg := joined(members)
		sio.On("connection", func(args ...any) { join(args[0].(*socket.Socket)) })
		hs := httptest.NewServer(qa.Handler())
		t.Cleanup(func() {
			require.NoError(t, qa.Close(context.Background()))
			sio.Close(nil)
			hs.CloseClientConnections()
			hs.Close()
		})
		var clients []*sioclient.Client
		for range members {
			clients = append(clients, dialURL(t, hs.URL, sioclient.TransportWebsocket))
		}
		wg.Wait()
		broadcast(sio)
		assert.Equal(t, members*messages, count(t, clients))
	})
}

// Defect: a CONNECT that arrives before v2.5.0 listens to a new engine
// connection is dropped, and a websocket-only client hangs. It is rare
// (0–3 in 1,000 handshakes at 1,000/s, and rarer on a quiet machine), so
// the bare rate is documented rather than asserted; the library must lose
// none.
func TestDefectConnectRace(t *testing.T) {
	ts := startServer(t, socketio.Options{Auth: manyConnections(t)})
	const n = 300
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := sioclient.Dial(context.Background(), sioclient.Options{
				URL: ts.URL, Transport: sioclient.TransportWebsocket, ConnectRetry: -1, Timeout: 5 * time.Second,
			})
			if err != nil {
				errs <- err
				return
			}
			c.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func manyConnections(t *testing.T) *socketio.Auth {
	t.Helper()
	a, err := socketio.NewAuth(socketio.AuthOptions{MaxConnectionsPerIP: 1000})
	require.NoError(t, err)
	t.Cleanup(func() { a.Close() })
	return a
}

// Defect: v2.5.0's ServeHandler checks for an existing engine without a
// lock, so concurrent first calls can build two engines. It is rare (0 to
// 8 of 200 servers in three runs here), so the bare count is logged, not
// asserted, by TestDefectConcurrentServeHandlerBare, which runs outside the
// race detector (that reports the race itself). Handler must hand out one
// engine however it is called.
func TestDefectConcurrentServeHandler(t *testing.T) {
	const servers = 200
	t.Run("library", func(t *testing.T) {
		for range servers / 4 {
			sio := socket.NewServer(nil, nil)
			qa, err := socketio.Register(sio, socketio.Options{})
			require.NoError(t, err)
			handlers := make([]http.Handler, 8)
			var wg sync.WaitGroup
			for i := range handlers {
				wg.Add(1)
				go func() { defer wg.Done(); handlers[i] = qa.Handler() }()
			}
			wg.Wait()
			for _, h := range handlers[1:] {
				require.Same(t, handlers[0], h)
			}
			require.NoError(t, qa.Close(context.Background()))
			sio.Close(nil)
		}
	})
}

// Defect: v2.5.0 sends the CONNECT reply before it registers the socket,
// and registers it before the application's "connection" handler listens
// to it; a request sent the moment the reply arrives (as browsers do) can
// close the connection for "invalid state" or go unanswered. On a bare
// server it hit 1–2 in 100 such dials on a loaded machine (the client's own
// tests) and 0 in 200 on a quiet one: the rate depends on scheduling, so it
// is logged, not asserted. The library must lose none.
func TestDefectRequestRightAfterConnect(t *testing.T) {
	const n = 200
	run := func(t *testing.T, url string) int {
		t.Helper()
		failed := 0
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := sioclient.Dial(context.Background(), sioclient.Options{
					URL: url, Transport: sioclient.TransportWebsocket, ConnectRetry: -1, Settle: -1, Timeout: 2 * time.Second,
				})
				if err == nil {
					_, err = c.EmitWithAck(context.Background(), "get_history", map[string]any{})
					c.Close()
				}
				if err != nil {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return failed
	}
	t.Run("bare", func(t *testing.T) {
		url := bareServer(t, func(s *socket.Socket) {
			s.On("get_history", func(args ...any) {
				args[len(args)-1].(socket.Ack)([]any{map[string]any{"ok": true}}, nil)
			})
		})
		t.Logf("bare v2.5.0: %d of %d requests sent right after CONNECT failed", run(t, url), n)
	})
	t.Run("library", func(t *testing.T) {
		ts := startServer(t, socketio.Options{Auth: manyConnections(t)})
		assert.Zero(t, run(t, ts.URL))
	})
}
