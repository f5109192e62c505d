package qatest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/sioclient"
	"github.com/qaplatform/socketio/qatest"
)

func testKB(t testing.TB) *socketio.KnowledgeBase {
	t.Helper()
	kb, err := socketio.NewKnowledgeBase([]socketio.Entry{
		{Question: "What is Socket.IO?", Answer: "A library for real-time, event-based communication.", Source: "docs/socket.io"},
		{Question: "How do rooms work?", Answer: "Join a room to receive what is sent to it.", Source: "docs/rooms"},
	})
	require.NoError(t, err)
	return kb
}

// newAuth returns an Auth the test owns; it is closed after the server.
func newAuth(t *testing.T, o socketio.AuthOptions) *socketio.Auth {
	t.Helper()
	a, err := socketio.NewAuth(o)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, a.Close()) })
	return a
}

func dial(t *testing.T, srv *qatest.Server, o qatest.ClientOptions) *qatest.Client {
	t.Helper()
	c, err := srv.Dial(context.Background(), o)
	require.NoError(t, err)
	return c
}

func forEachTransport(t *testing.T, f func(t *testing.T, tr qatest.Transport)) {
	for _, tr := range qatest.Transports() {
		t.Run(string(tr), func(t *testing.T) { f(t, tr) })
	}
}

func TestRequestAndSend(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr qatest.Transport) {
		srv := qatest.NewServer(t, socketio.Options{KnowledgeBase: testKB(t)})
		c := dial(t, srv, qatest.ClientOptions{Transport: tr})
		ctx := context.Background()

		got := c.Connected()
		assert.True(t, strings.HasPrefix(got.SessionID, "s_"), got.SessionID)
		assert.NotEmpty(t, got.ResumeToken)
		assert.False(t, got.Resumed)
		assert.Empty(t, got.UserID)
		assert.WithinDuration(t, time.Now(), got.ServerTime, time.Minute)
		assert.Equal(t, qatest.Limits{MaxQuestionsPerMinute: 5, MaxQuestionsPerMinutePerIP: 60, MaxQuestionLength: 2000}, got.Limits)
		assert.NotEmpty(t, c.SocketID())

		// With an ack.
		r, err := c.Request(ctx, "join_room", "lobby")
		require.NoError(t, err)
		assert.True(t, r.OK)
		assert.Nil(t, r.Err)
		assert.Equal(t, socketio.Code(""), r.Code())
		assert.Equal(t, "lobby", r.Data["room"])
		r, err = c.Request(ctx, "join_room", 42)
		require.NoError(t, err)
		assert.False(t, r.OK)
		assert.Equal(t, socketio.CodeInvalidPayload, r.Code())
		assert.NotEmpty(t, r.Err.Message)
		r, err = c.Request(ctx, "no_such_event", nil)
		require.NoError(t, err)
		assert.Equal(t, socketio.CodeUnknownEvent, r.Code())

		// Without one: the reply event, or an error event naming the
		// request.
		r, err = c.Send(ctx, "leave_room", map[string]any{"room": "lobby"})
		require.NoError(t, err)
		assert.True(t, r.OK)
		assert.Equal(t, "lobby", r.Data["room"])
		r, err = c.Send(ctx, "join_room", map[string]any{"room": "bad room!"})
		require.NoError(t, err)
		assert.False(t, r.OK)
		assert.Equal(t, socketio.CodeInvalidRoom, r.Code())
		assert.Equal(t, "join_room", r.Data["event"])
		r, err = c.Send(ctx, "get_history", nil)
		require.NoError(t, err)
		assert.True(t, r.OK)
		assert.Contains(t, r.Data, "items")

		_, err = c.Send(ctx, "no_such_event", nil)
		assert.ErrorContains(t, err, "not a request event")
	})
}

// An error event for another request is not taken as Send's reply, and
// stays queued.
func TestSendMatchesItsOwnError(t *testing.T) {
	srv := qatest.NewServer(t, socketio.Options{})
	c := dial(t, srv, qatest.ClientOptions{})
	ctx := context.Background()
	require.NoError(t, c.Emit("get_history", "not an object"))
	r, err := c.Send(ctx, "join_room", "lobby")
	require.NoError(t, err)
	assert.True(t, r.OK, "%v", r.Data)
	e, err := c.Next(ctx, "error")
	require.NoError(t, err)
	assert.Equal(t, "get_history", e.Data["event"])
	assert.Equal(t, "invalid_payload", e.Data["code"])
}

func TestAnswerPushes(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr qatest.Transport) {
		srv := qatest.NewServer(t, socketio.Options{KnowledgeBase: testKB(t)})
		c := dial(t, srv, qatest.ClientOptions{Transport: tr})
		ctx := context.Background()

		var ids []string
		for _, q := range []string{"What is Socket.IO?", "How do rooms work?"} {
			r, err := c.Request(ctx, "ask_question", map[string]any{"question": q, "stream": true})
			require.NoError(t, err)
			require.True(t, r.OK, "%v", r.Data)
			var accepted struct {
				TaskID string `json:"task_id"`
			}
			require.NoError(t, r.Decode(&accepted))
			ids = append(ids, accepted.TaskID)
		}
		// The second answer first: Await passes over the first, which stays.
		for _, i := range []int{1, 0} {
			e, err := c.Await(ctx, "answer", qatest.ForTask(ids[i]))
			require.NoError(t, err)
			var a struct {
				TaskID string `json:"task_id"`
				Status string `json:"status"`
				Answer string `json:"answer"`
			}
			require.NoError(t, e.Decode(&a))
			assert.Equal(t, ids[i], a.TaskID)
			assert.Equal(t, "completed", a.Status)
			assert.NotEmpty(t, a.Answer)
		}
		chunk, err := c.Await(ctx, "answer_chunk", qatest.ForTask(ids[0]))
		require.NoError(t, err)
		assert.Equal(t, float64(0), chunk.Data["seq"])
		status, err := c.Await(ctx, "task_status", func(e qatest.Event) bool { return e.Data["status"] == "completed" })
		require.NoError(t, err)
		assert.Contains(t, ids, status.Data["task_id"])
	})
}

func TestResumeAcrossClients(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr qatest.Transport) {
		srv := qatest.NewServer(t, socketio.Options{KnowledgeBase: testKB(t)})
		ctx := context.Background()
		first := dial(t, srv, qatest.ClientOptions{Transport: tr})
		r, err := first.Request(ctx, "ask_question", "What is Socket.IO?")
		require.NoError(t, err)
		taskID, _ := r.Data["task_id"].(string)
		require.NotEmpty(t, taskID)
		_, err = first.Await(ctx, "answer", qatest.ForTask(taskID))
		require.NoError(t, err)
		require.NoError(t, first.Close())

		again := dial(t, srv, qatest.ClientOptions{Transport: tr, Resume: first.Connected().ResumeToken})
		assert.True(t, again.Connected().Resumed)
		assert.Equal(t, first.Connected().SessionID, again.Connected().SessionID)
		r, err = again.Request(ctx, "get_task", map[string]any{"task_id": taskID})
		require.NoError(t, err)
		require.True(t, r.OK, "%v", r.Data)
		var got struct {
			Task socketio.Task `json:"task"`
		}
		require.NoError(t, r.Decode(&got))
		assert.Equal(t, taskID, got.Task.ID)
		assert.Equal(t, socketio.TaskCompleted, got.Task.Status)
		assert.False(t, got.Task.AnsweredAt.IsZero())

		// A resume token of the wrong type is no error: a new session.
		fresh := dial(t, srv, qatest.ClientOptions{Transport: tr, Auth: map[string]any{"resume": 42}})
		assert.False(t, fresh.Connected().Resumed)
		assert.NotEqual(t, first.Connected().SessionID, fresh.Connected().SessionID)
	})
}

func TestWaitsEndWithTheirDeadline(t *testing.T) {
	srv := qatest.NewServer(t, socketio.Options{KnowledgeBase: testKB(t)})
	c := dial(t, srv, qatest.ClientOptions{Timeout: 50 * time.Millisecond})

	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := c.Next(short, "answer")
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	// Without a deadline on ctx, ClientOptions.Timeout applies.
	_, err = c.Next(context.Background(), "answer")
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.Await(cancelled, "answer", nil)
	assert.ErrorIs(t, err, context.Canceled)

	// An event match refuses stays queued for a later wait.
	r, err := c.Request(context.Background(), "ask_question", "What is Socket.IO?")
	require.NoError(t, err)
	require.True(t, r.OK)
	_, err = c.Await(context.Background(), "answer", func(qatest.Event) bool { return false })
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	e, err := c.Next(context.Background(), "answer")
	require.NoError(t, err)
	assert.Equal(t, r.Data["task_id"], e.Data["task_id"])
}

func TestReplyDecoding(t *testing.T) {
	auth := newAuth(t, socketio.AuthOptions{MaxQuestionsPerMinute: 1})
	srv := qatest.NewServer(t, socketio.Options{KnowledgeBase: testKB(t), Auth: auth})
	c := dial(t, srv, qatest.ClientOptions{})
	ctx := context.Background()

	r, err := c.Request(ctx, "ask_question", "What is Socket.IO?")
	require.NoError(t, err)
	require.True(t, r.OK)
	var accepted struct {
		TaskID string `json:"task_id"`
		Status string `json:"status"`
	}
	require.NoError(t, r.Decode(&accepted))
	assert.Equal(t, "pending", accepted.Status)
	assert.Equal(t, r.Data["task_id"], accepted.TaskID)

	// A refusal carries its code and retry_after_ms, both ways.
	for name, request := range map[string]func(context.Context, string, any) (qatest.Reply, error){
		"Request": c.Request, "Send": c.Send,
	} {
		r, err := request(ctx, "ask_question", "How do rooms work?")
		require.NoError(t, err, name)
		assert.False(t, r.OK, name)
		assert.Equal(t, socketio.CodeRateLimited, r.Code(), name)
		assert.ErrorIs(t, r.Err, socketio.ErrRateLimited, name)
		assert.Greater(t, r.Err.RetryAfter, time.Duration(0), name)
		assert.LessOrEqual(t, r.Err.RetryAfter, time.Minute, name)
	}

	// Events decode too, and a payload of the wrong shape is an error.
	e, err := c.Await(ctx, "answer", qatest.ForTask(accepted.TaskID))
	require.NoError(t, err)
	var answer struct {
		Question   string    `json:"question"`
		AnsweredAt time.Time `json:"answered_at"`
		DurationMS int       `json:"duration_ms"`
	}
	require.NoError(t, e.Decode(&answer))
	assert.Equal(t, "What is Socket.IO?", answer.Question)
	assert.False(t, answer.AnsweredAt.IsZero())
	var wrong []string
	assert.Error(t, e.Decode(&wrong))
	assert.Error(t, r.Decode(&wrong))
}

func TestDialRefusedCarriesTheCode(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr qatest.Transport) {
		auth := newAuth(t, socketio.AuthOptions{
			TokenVerifier: func(_ context.Context, token string) (string, error) {
				if token == "tok-alice" {
					return "alice", nil
				}
				return "", errors.New("bad token")
			},
		})
		srv := qatest.NewServer(t, socketio.Options{Auth: auth})
		ctx := context.Background()

		for _, token := range []string{"", "forged"} {
			_, err := srv.Dial(ctx, qatest.ClientOptions{Transport: tr, Token: token})
			require.Error(t, err)
			assert.ErrorIs(t, err, socketio.ErrUnauthorized)
			var e *socketio.Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, socketio.CodeUnauthorized, e.Code)
			assert.NotEmpty(t, e.Message)
		}
		c := dial(t, srv, qatest.ClientOptions{Transport: tr, Token: "tok-alice"})
		assert.Equal(t, "alice", c.Connected().UserID)
	})
}

// callerHook records who each admitted connection is.
type callerHook struct {
	socketio.BaseHook
	seen chan socketio.Caller
}

func (h *callerHook) AfterConnect(_ context.Context, e *socketio.ConnectEvent) {
	h.seen <- e.Caller
}

func TestHeadersReachTheService(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr qatest.Transport) {
		auth := newAuth(t, socketio.AuthOptions{TrustedProxies: []string{"127.0.0.1/32"}})
		srv := qatest.NewServer(t, socketio.Options{Auth: auth})
		hook := &callerHook{BaseHook: socketio.NewBaseHook("caller", 50), seen: make(chan socketio.Caller, 2)}
		require.NoError(t, srv.QA.Hooks().Register(hook))

		c := dial(t, srv, qatest.ClientOptions{Transport: tr, Header: http.Header{"X-Forwarded-For": {"203.0.113.7"}}})
		caller := <-hook.seen
		assert.Equal(t, "203.0.113.7", caller.Address)
		assert.Equal(t, c.SocketID(), caller.SocketID)
		assert.Equal(t, c.Connected().SessionID, caller.SessionID)
		require.NoError(t, auth.BlockIP(context.Background(), "198.51.100.0/24", "abuse", 0))
		_, err := srv.Dial(context.Background(), qatest.ClientOptions{Transport: tr, Header: http.Header{"X-Forwarded-For": {"198.51.100.9"}}})
		assert.ErrorIs(t, err, socketio.ErrIPBlocked)
		assert.Equal(t, socketio.CodeIPBlocked, socketio.ErrorCode(err))
	})
}

func TestCloseIsIdempotent(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr qatest.Transport) {
		srv := qatest.NewServer(t, socketio.Options{})
		c := dial(t, srv, qatest.ClientOptions{Transport: tr})
		require.NoError(t, c.Err())
		require.NoError(t, c.Close())
		require.NoError(t, c.Close())
		select {
		case <-c.Done():
		default:
			t.Fatal("Done is not closed after Close")
		}
		assert.ErrorIs(t, c.Err(), qatest.ErrClosed)
		_, err := c.Request(context.Background(), "get_history", nil)
		assert.ErrorIs(t, err, qatest.ErrClosed)
		_, err = c.Send(context.Background(), "get_history", nil)
		assert.ErrorIs(t, err, qatest.ErrClosed)
		assert.ErrorIs(t, c.Emit("get_history"), qatest.ErrClosed)
		_, err = c.Next(context.Background(), "answer")
		assert.ErrorIs(t, err, qatest.ErrClosed)

		// The server closes a client the test left open, and Close twice
		// returns the first result.
		open := dial(t, srv, qatest.ClientOptions{Transport: tr})
		require.NoError(t, srv.Close())
		require.NoError(t, srv.Close())
		<-open.Done()
		assert.ErrorIs(t, open.Err(), qatest.ErrClosed)
		_, err = srv.Dial(context.Background(), qatest.ClientOptions{Transport: tr})
		assert.ErrorIs(t, err, qatest.ErrClosed)
	})
}

// blockingJoin holds every join_room until release is closed.
type blockingJoin struct {
	socketio.BaseHook
	entered chan struct{}
	release chan struct{}
}

func (h *blockingJoin) BeforeJoinRoom(ctx context.Context, _ *socketio.RoomEvent) error {
	select {
	case h.entered <- struct{}{}:
	default:
	}
	select {
	case <-h.release:
	case <-ctx.Done():
	}
	return nil
}

// A client the service disconnects (here for flooding) reports
// ErrDisconnected.
func TestServerDisconnect(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr qatest.Transport) {
		srv := qatest.NewServer(t, socketio.Options{MaxPendingEvents: 1})
		hook := &blockingJoin{BaseHook: socketio.NewBaseHook("block", 50), entered: make(chan struct{}, 1), release: make(chan struct{})}
		require.NoError(t, srv.QA.Hooks().Register(hook))
		defer close(hook.release)
		c := dial(t, srv, qatest.ClientOptions{Transport: tr})
		require.NoError(t, c.Emit("join_room", "a"))
		<-hook.entered
		// One event may wait behind the held one; the next is one too many.
		for _, room := range []string{"b", "c", "d"} {
			if err := c.Emit("join_room", room); err != nil {
				break
			}
		}
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the flooding client was not disconnected")
		}
		assert.ErrorIs(t, c.Err(), qatest.ErrDisconnected)
		_, err := c.Request(context.Background(), "get_history", nil)
		assert.ErrorIs(t, err, qatest.ErrDisconnected)
	})
}

func TestConcurrentRequests(t *testing.T) {
	srv := qatest.NewServer(t, socketio.Options{})
	c := dial(t, srv, qatest.ClientOptions{Transport: qatest.Polling})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			room := fmt.Sprintf("r%d", i)
			r, err := c.Request(context.Background(), "join_room", room)
			if err == nil && (!r.OK || r.Data["room"] != room) {
				err = fmt.Errorf("join %s: %v", room, r.Data)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
}

// Clients join the namespace the service is registered on.
func TestNamespace(t *testing.T) {
	srv := qatest.NewServer(t, socketio.Options{Namespace: "/qa"})
	c := dial(t, srv, qatest.ClientOptions{Transport: qatest.Polling})
	r, err := c.Request(context.Background(), "get_history", nil)
	require.NoError(t, err)
	assert.True(t, r.OK, "%v", r.Data)
}

// TestBannedWords is the test the README shows.
func TestBannedWords(t *testing.T) {
	kb := testKB(t)
	ctx := context.Background()
	srv := qatest.NewServer(t, socketio.Options{KnowledgeBase: kb}) // closed when the test ends
	require.NoError(t, srv.QA.Hooks().Register(&BannedWordsHook{BaseHook: socketio.NewBaseHook("banned_words", 50), Words: []string{"password"}}))
	c, err := srv.Dial(ctx, qatest.ClientOptions{Transport: qatest.Polling})
	require.NoError(t, err)
	r, err := c.Request(ctx, "ask_question", "what is the admin password?") // with an ack; Send awaits the reply event instead
	require.NoError(t, err)
	assert.Equal(t, socketio.CodeForbidden, r.Code())
	r, err = c.Request(ctx, "ask_question", "What is Socket.IO?")
	require.NoError(t, err)
	_, err = c.Await(ctx, "answer", qatest.ForTask(r.Data["task_id"].(string))) // waits up to 5s by default
	require.NoError(t, err)
}

func TestDialOptionErrors(t *testing.T) {
	srv := qatest.NewServer(t, socketio.Options{})
	_, err := srv.Dial(context.Background(), qatest.ClientOptions{Transport: "carrier-pigeon"})
	assert.ErrorContains(t, err, "unknown transport")
}

// recorder is a testing.TB whose cleanups the test runs itself and whose
// failures it reads.
type recorder struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
	errs     []string
}

func (r *recorder) Helper()          {}
func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	r.TB.FailNow()
}

// runCleanups runs the cleanups last first, as testing does.
func (r *recorder) runCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

// The cleanup of NewServer closes what the test left open and reports
// nothing then.
func TestCleanupClosesClients(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr qatest.Transport) {
		rec := &recorder{TB: t}
		srv := qatest.NewServer(rec, socketio.Options{})
		left := dial(t, srv, qatest.ClientOptions{Transport: tr})
		rec.runCleanups()
		assert.Empty(t, rec.errs)
		<-left.Done()
		assert.ErrorIs(t, left.Err(), qatest.ErrClosed)
	})
}

// A connection the harness does not know of, still open when the test
// ends, fails the test (after the 5s the service has to see it gone; the
// subtests wait in parallel).
func TestCleanupReportsOpenConnections(t *testing.T) {
	t.Run("by the cleanup", func(t *testing.T) {
		t.Parallel()
		rec := &recorder{TB: t}
		srv := qatest.NewServer(rec, socketio.Options{})
		dial(t, srv, qatest.ClientOptions{})
		stray, err := sioclient.Dial(context.Background(), sioclient.Options{URL: srv.URL})
		require.NoError(t, err)
		defer stray.Close()
		rec.runCleanups()
		require.Len(t, rec.errs, 1)
		assert.Contains(t, rec.errs[0], "1 connection(s) still open")
	})
	t.Run("by an explicit Close, once", func(t *testing.T) {
		t.Parallel()
		rec := &recorder{TB: t}
		srv := qatest.NewServer(rec, socketio.Options{})
		stray, err := sioclient.Dial(context.Background(), sioclient.Options{URL: srv.URL, Transport: sioclient.TransportPolling})
		require.NoError(t, err)
		defer stray.Close()
		assert.ErrorContains(t, srv.Close(), "1 connection(s) still open")
		assert.ErrorContains(t, srv.Close(), "1 connection(s) still open", "the first result again")
		rec.runCleanups()
		assert.Empty(t, rec.errs, "the cleanup does not report it again")
	})
}

// After a test's cleanup nothing it started runs on: no goroutine of the
// harness, its clients or the service, even when the test closed nothing.
func TestCleanupLeavesNoGoroutine(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Run("leaves everything open", func(t *testing.T) {
		srv := qatest.NewServer(t, socketio.Options{KnowledgeBase: testKB(t)})
		for _, tr := range qatest.Transports() {
			c := dial(t, srv, qatest.ClientOptions{Transport: tr})
			r, err := c.Request(context.Background(), "ask_question", map[string]any{"question": "What is Socket.IO?", "stream": true})
			require.NoError(t, err)
			require.True(t, r.OK)
			_, err = c.Next(context.Background(), "answer")
			require.NoError(t, err)
			require.NoError(t, c.Emit("join_room", "lobby")) // its reply is never read
		}
	})
	goleak.VerifyNone(t, before)
}
