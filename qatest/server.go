package qatest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio"
)

// EngineTimerFunction is the function of the goroutine behind every timer of
// zishang520/engine.io v2.5.0. Such a goroutine may outlive Server.Close by
// up to 30 s and ends by itself; pass this name to
// goleak.IgnoreTopFunction. Neither the library nor qatest arms such timers.
const EngineTimerFunction = "github.com/zishang520/engine.io/v2/utils.SetTimeout.func1"

// closeTimeout bounds each step of Server.Close: the service seeing every
// connection gone, and answers in flight finishing before they are
// cancelled.
const closeTimeout = 5 * time.Second

// Server is the Q&A service, registered on its own Socket.IO server and
// served by an httptest server on 127.0.0.1.
//
// Concurrency: all methods may be called concurrently. Dial after Close
// fails with ErrClosed; a Dial in flight when Close starts is waited for
// and its client closed.
type Server struct {
	// URL is the base URL of the HTTP server, such as
	// "http://127.0.0.1:41234"; the service answers at URL+"/socket.io/".
	URL string
	// QA is the service: register hooks through QA.Hooks(), read
	// QA.Auth(), QA.Storage() and QA.Metrics().
	QA *socketio.Server

	namespace string
	sio       *socket.Server
	hs        *httptest.Server
	metrics   socketio.Hook // the built-in metrics hook, whose counters Close reads

	mu      sync.Mutex
	closed  bool
	dialing sync.WaitGroup // Dial calls in flight, added to only while !closed
	clients map[*Client]struct{}

	closeOnce  sync.Once
	closeErr   error
	userClosed atomic.Bool
}

// NewServer starts the service with opts, as Start does, and registers a
// cleanup on t that closes it (see Server.Close) and reports what Close
// found with t.Errorf. It fails the test at once, with t.Fatalf, if the
// service cannot start. Call it from the test's goroutine.
func NewServer(t testing.TB, opts socketio.Options) *Server {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatalf("qatest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.close(); err != nil && !s.userClosed.Load() {
			t.Errorf("%v", err)
		}
	})
	return s
}

// Start starts the service with opts on a new Socket.IO server, served by a
// new httptest server. opts is passed to socketio.Register unchanged but for
// Logger, which defaults to discarding the logs (set it to see them).
// Without KnowledgeBase or Answerer every question gets the library's "no
// answer" reply. The caller must call Close.
func Start(opts socketio.Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	sio := socket.NewServer(nil, socketio.SetParser(nil))
	qa, err := socketio.Register(sio, opts)
	if err != nil {
		sio.Close(nil)
		return nil, fmt.Errorf("starting the service: %w", err)
	}
	metrics, _ := qa.Hooks().Hook(socketio.MetricsHookName)
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", qa.Handler())
	hs := httptest.NewServer(mux)
	ns := opts.Namespace
	if ns == "" {
		ns = "/"
	}
	return &Server{
		URL:       hs.URL,
		QA:        qa,
		namespace: ns,
		sio:       sio,
		hs:        hs,
		metrics:   metrics,
		clients:   map[*Client]struct{}{},
	}, nil
}

// Close closes every client dialed through s, waits (up to 5 s) for the
// service to see their connections gone, closes the service (answers in
// flight get up to 5 s to finish, then are cancelled), the Socket.IO server
// and the HTTP server. It returns an error if a connection was still open
// on the service after every client had closed (one dialed elsewhere and
// left open, say), or if closing the service failed; the check reads the
// built-in metrics hook, and is skipped if the test disabled or replaced
// it. Everything is closed in any case. Calling Close again returns the
// first result; after an explicit Close, the cleanup of NewServer reports
// nothing more.
func (s *Server) Close() error {
	s.userClosed.Store(true)
	return s.close()
}

func (s *Server) close() error {
	s.closeOnce.Do(func() { s.closeErr = s.shutdown() })
	return s.closeErr
}

func (s *Server) shutdown() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.dialing.Wait()
	s.mu.Lock()
	clients := make([]*Client, 0, len(s.clients))
	for c := range s.clients {
		clients = append(clients, c)
	}
	s.mu.Unlock()
	for _, c := range clients {
		_ = c.Close()
	}

	var errs []error
	if open := s.awaitNoConnections(); open != 0 {
		errs = append(errs, fmt.Errorf("qatest: %d connection(s) still open on the service after every client of the harness closed", open))
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	err := s.QA.Close(ctx)
	cancel()
	// Answers still running after closeTimeout were cancelled and their
	// goroutines have ended; that is the documented outcome, not a leak.
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		errs = append(errs, fmt.Errorf("qatest: closing the service: %w", err))
	}
	s.sio.Close(nil)
	s.hs.CloseClientConnections()
	s.hs.Close()
	return errors.Join(errs...)
}

// awaitNoConnections waits up to closeTimeout for the service to count no
// open connection, and returns how many it counts then. It returns 0 when
// the built-in metrics hook is gone, replaced or disabled: its count is
// then not to be trusted.
func (s *Server) awaitNoConnections() int64 {
	h, ok := s.QA.Hooks().Hook(socketio.MetricsHookName)
	if !ok || h != s.metrics {
		return 0
	}
	for _, info := range s.QA.Hooks().HooksInfo() {
		if info.Name == socketio.MetricsHookName && !info.Enabled {
			return 0
		}
	}
	// The service learns of a closed connection asynchronously and says so
	// through no channel: poll its counter.
	deadline := time.NewTimer(closeTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		n := s.QA.Metrics().Connections
		if n <= 0 {
			return 0
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return n
		}
	}
}

// track records c as a client of s, unless s is closing.
func (s *Server) track(c *Client) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.clients[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *Client) {
	s.mu.Lock()
	delete(s.clients, c)
	s.mu.Unlock()
}

// startDial reports whether a Dial may proceed; if so, the caller must call
// s.dialing.Done when it has finished.
func (s *Server) startDial() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.dialing.Add(1)
	return true
}
