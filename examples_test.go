package socketio_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"
	"github.com/zishang520/engine.io/v2/types"
	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/jwtauth"
)

// This is the seed's register_socketio_events(app): register the Q&A events
// on a Socket.IO server and serve it from an http.ServeMux.
func ExampleRegister() {
	kb, err := socketio.NewKnowledgeBase([]socketio.Entry{
		{Question: "什么是流式回答？", Answer: "流式回答会把答案分成多个片段依次发送。"},
	})
	if err != nil {
		panic(err)
	}

	// SetParser gives the server the library's ordering parser before it
	// is built (Register would otherwise swap it in place).
	sio := socket.NewServer(nil, socketio.SetParser(socket.DefaultServerOptions()))
	defer sio.Close(nil)
	qa, err := socketio.Register(sio, socketio.Options{
		KnowledgeBase: kb,
		AnswerTimeout: 30 * time.Second,
	})
	if err != nil {
		panic(err)
	}
	defer qa.Close(context.Background())

	mux := http.NewServeMux()
	mux.Handle("/socket.io/", qa.Handler()) // not sio.ServeHandler: Handler adds protections
	// http.ListenAndServe(":8080", mux)

	for _, h := range qa.Hooks().HooksInfo() {
		fmt.Println(h.Name, h.Priority)
	}
	// Output:
	// auth 100
	// rate_limit 80
	// storage 60
	// metrics 10
}

// CustomHook is the seed's CustomHook: it implements only the events it
// cares about, here BeforeConnect and AfterConnect.
type CustomHook struct{ socketio.BaseHook }

// BeforeConnect runs before a connection is admitted; an error refuses it.
func (h *CustomHook) BeforeConnect(ctx context.Context, e *socketio.ConnectEvent) error {
	return nil
}

// AfterConnect runs once the client has its session.
func (h *CustomHook) AfterConnect(ctx context.Context, e *socketio.ConnectEvent) {}

// This is the seed's hook_manager.register_hook(CustomHook()): a user hook
// at priority 50 runs after the built-in storage hook (60) and before the
// metrics hook (10).
func ExampleHookManager_Register() {
	sio := socket.NewServer(nil, nil)
	defer sio.Close(nil)
	qa, err := socketio.Register(sio, socketio.Options{})
	if err != nil {
		panic(err)
	}
	defer qa.Close(context.Background())

	hooks := qa.Hooks()
	if err := hooks.Register(&CustomHook{BaseHook: socketio.NewBaseHook("custom", 50)}); err != nil {
		panic(err)
	}
	for _, h := range hooks.HooksInfo() {
		fmt.Println(h.Priority, h.Name, h.Events)
	}
	// Output:
	// 100 auth [before_connect before_join_room before_question before_history before_clear_history]
	// 80 rate_limit [before_question]
	// 60 storage [after_disconnect after_question]
	// 50 custom [before_connect after_connect]
	// 10 metrics [after_connect after_disconnect after_join_room after_leave_room after_question after_answer after_suggestions after_history after_clear_history]
}

// CustomAuthHook is the seed's CustomAuthHook: it admits only clients whose
// handshake token is a JWT signed with HMAC-SHA256 under its secret, not
// expired, and names the user from its "sub". Package jwtauth checks the
// token (and pins the algorithm, so "alg": "none" is refused). (For token
// checks alone, AuthOptions.TokenVerifier: verifier.Verify does the same
// with less code.)
type CustomAuthHook struct {
	socketio.BaseHook
	verifier *jwtauth.Verifier
}

func (h *CustomAuthHook) BeforeConnect(ctx context.Context, e *socketio.ConnectEvent) error {
	user, err := h.verifier.Verify(ctx, e.Token)
	if err != nil {
		return err // matches socketio.ErrUnauthorized: the client's connect_error has code "unauthorized"
	}
	e.UserID = user // the session and its history belong to this user
	return nil
}

// signDemoToken makes a token as an identity provider would.
func signDemoToken(secret []byte, claims jwt.MapClaims) string {
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		panic(err)
	}
	return token
}

// A custom authentication hook (the seed's CustomAuthHook, priority 90)
// runs after the built-in auth hook (100) and before rate limiting (80).
// Returning an error refuses the connection.
func ExampleHookManager_Register_customAuth() {
	sio := socket.NewServer(nil, nil)
	defer sio.Close(nil)
	qa, err := socketio.Register(sio, socketio.Options{})
	if err != nil {
		panic(err)
	}
	defer qa.Close(context.Background())

	secret := []byte("a demo secret of at least 32 bytes")
	verifier, err := jwtauth.New(jwtauth.Options{Secret: secret})
	if err != nil {
		panic(err)
	}
	hook := &CustomAuthHook{BaseHook: socketio.NewBaseHook("custom_auth", 90), verifier: verifier}
	if err := qa.Hooks().Register(hook); err != nil {
		panic(err)
	}

	// The library calls BeforeConnect for each connection attempt; here it
	// is called directly to show the outcomes.
	ctx := context.Background()
	now := time.Now()
	unsigned, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "user123", "exp": now.Add(time.Hour).Unix()}).
		SignedString(jwt.UnsafeAllowNoneSignatureType)
	for _, token := range []string{
		signDemoToken(secret, jwt.MapClaims{"sub": "user123", "exp": now.Add(time.Hour).Unix()}),
		signDemoToken(secret, jwt.MapClaims{"sub": "user123", "exp": now.Add(-time.Minute).Unix()}), // expired
		signDemoToken([]byte("someone else's secret, 32 bytes long"), jwt.MapClaims{"sub": "user123", "exp": now.Add(time.Hour).Unix()}),
		unsigned, // "alg": "none"
		"forged.token.value",
		"",
	} {
		e := &socketio.ConnectEvent{Token: token}
		err := hook.BeforeConnect(ctx, e)
		fmt.Printf("user=%q unauthorized=%v\n", e.UserID, errors.Is(err, socketio.ErrUnauthorized))
	}
	// Output:
	// user="user123" unauthorized=false
	// user="" unauthorized=true
	// user="" unauthorized=true
	// user="" unauthorized=true
	// user="" unauthorized=true
	// user="" unauthorized=true
}

// DatabaseStorageHook is the seed's DatabaseStorageHook: after each
// connection it copies the session to another store. After-hooks cannot
// refuse, so failures are logged.
type DatabaseStorageHook struct {
	socketio.BaseHook
	db     socketio.Storage // stands in for your database
	logger *slog.Logger
}

func (h *DatabaseStorageHook) AfterConnect(ctx context.Context, e *socketio.ConnectEvent) {
	// ctx ends when the socket disconnects; finish the write regardless,
	// but not forever.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	err := h.db.SaveSession(ctx, socketio.Session{
		ID:        e.SessionID,
		UserID:    e.UserID,
		Address:   e.Address,
		CreatedAt: time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC), // time.Now() in real code
	})
	if err != nil {
		h.logger.Warn("saving session to the database failed", "session", e.SessionID, "err", err)
	}
}

// A custom storage backend hook (the seed's DatabaseStorageHook). Hook
// names are unique and "storage" is the built-in hook's, so this one is
// "database_storage"; at the same priority, 60, it runs after the built-in
// because it was registered later.
func ExampleHookManager_Register_databaseStorage() {
	sio := socket.NewServer(nil, nil)
	defer sio.Close(nil)
	qa, err := socketio.Register(sio, socketio.Options{})
	if err != nil {
		panic(err)
	}
	defer qa.Close(context.Background())

	db := socketio.NewMemoryStorage(socketio.StorageOptions{})
	defer db.Close()
	hook := &DatabaseStorageHook{BaseHook: socketio.NewBaseHook("database_storage", 60), db: db, logger: slog.Default()}
	if err := qa.Hooks().Register(hook); err != nil {
		panic(err)
	}
	for _, h := range qa.Hooks().HooksInfo() {
		fmt.Println(h.Priority, h.Name)
	}

	// What the library does after a client connects:
	ctx := context.Background()
	hook.AfterConnect(ctx, &socketio.ConnectEvent{Caller: socketio.Caller{
		SocketID: "sock1", SessionID: "s_1", UserID: "user123", Address: "203.0.113.7",
	}})
	s, err := db.Session(ctx, "s_1")
	if err != nil {
		panic(err)
	}
	fmt.Println(s.ID, s.UserID, s.Address, s.CreatedAt.Format(time.RFC3339))
	// Output:
	// 100 auth
	// 80 rate_limit
	// 60 storage
	// 60 database_storage
	// 10 metrics
	// s_1 user123 203.0.113.7 2025-03-01T09:00:00Z
}

// QuestionMetricsHook is the seed's MetricsHook: it sends a metric for each
// accepted question. It is safe for concurrent use, as hooks must be.
type QuestionMetricsHook struct {
	socketio.BaseHook
	mu     sync.Mutex
	byRoom map[string]int // stands in for your monitoring client
}

func (h *QuestionMetricsHook) AfterQuestion(ctx context.Context, e *socketio.QuestionEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.byRoom[e.Room]++
}

// A monitoring hook (the seed's MetricsHook) at priority 10. "metrics" is
// the built-in hook's name, so this one is "my_metrics". The built-in
// MetricsHook already counts every event; read it with Snapshot.
func ExampleHookManager_Register_metrics() {
	sio := socket.NewServer(nil, nil)
	defer sio.Close(nil)
	qa, err := socketio.Register(sio, socketio.Options{})
	if err != nil {
		panic(err)
	}
	defer qa.Close(context.Background())

	hook := &QuestionMetricsHook{BaseHook: socketio.NewBaseHook("my_metrics", 10), byRoom: map[string]int{}}
	if err := qa.Hooks().Register(hook); err != nil {
		panic(err)
	}

	// What the library does after it accepts questions:
	ctx := context.Background()
	for _, room := range []string{"support", "support", "sales"} {
		hook.AfterQuestion(ctx, &socketio.QuestionEvent{TaskID: "t", Question: "用户问题", Room: room})
	}
	fmt.Println(hook.byRoom["support"], hook.byRoom["sales"])

	h, _ := qa.Hooks().Hook(socketio.MetricsHookName)
	fmt.Println("questions seen by the built-in:", h.(*socketio.MetricsHook).Snapshot().Questions)
	// Output:
	// 2 1
	// questions seen by the built-in: 0
}

// This is the seed's hook_manager.get_hooks_info() (HooksInfo): every hook
// in the order it runs, with its events and call statistics.
func ExampleHookManager_HooksInfo() {
	sio := socket.NewServer(nil, nil)
	defer sio.Close(nil)
	qa, err := socketio.Register(sio, socketio.Options{})
	if err != nil {
		panic(err)
	}
	defer qa.Close(context.Background())

	for _, h := range qa.Hooks().HooksInfo() {
		fmt.Printf("%-10s priority=%-3d enabled=%v calls=%d errors=%d panics=%d\n",
			h.Name, h.Priority, h.Enabled, h.Calls, h.Errors, h.Panics)
	}
	// Output:
	// auth       priority=100 enabled=true calls=0 errors=0 panics=0
	// rate_limit priority=80  enabled=true calls=0 errors=0 panics=0
	// storage    priority=60  enabled=true calls=0 errors=0 panics=0
	// metrics    priority=10  enabled=true calls=0 errors=0 panics=0
}

// This is the seed's hook_manager.disable_hook('rate_limit') and
// enable_hook('rate_limit') (DisableHook / EnableHook). A disabled hook
// keeps its place and its counters; it is skipped until enabled again.
func ExampleHookManager_Disable() {
	sio := socket.NewServer(nil, nil)
	defer sio.Close(nil)
	qa, err := socketio.Register(sio, socketio.Options{})
	if err != nil {
		panic(err)
	}
	defer qa.Close(context.Background())

	hooks := qa.Hooks()
	enabled := func(name string) bool {
		for _, h := range hooks.HooksInfo() {
			if h.Name == name {
				return h.Enabled
			}
		}
		return false
	}

	fmt.Println(hooks.Disable(socketio.RateLimitHookName), enabled("rate_limit"))
	fmt.Println(hooks.Enable(socketio.RateLimitHookName), enabled("rate_limit"))
	fmt.Println(hooks.Disable("no_such_hook"))
	// Output:
	// true false
	// true true
	// false
}

// This is the seed's SocketIOAuth configuration: connection and question
// limits, block_ip (BlockIP) and get_connection_stats (ConnectionStats).
// Pass the Auth to Register in Options.Auth; the caller then owns it and
// closes it.
func ExampleAuth() {
	auth, err := socketio.NewAuth(socketio.AuthOptions{
		MaxConnectionsPerIP:   10,
		MaxQuestionsPerMinute: 5,
	})
	if err != nil {
		panic(err)
	}
	defer auth.Close()

	ctx := context.Background()
	if err := auth.BlockIP(ctx, "192.168.1.100", "违规行为", 0); err != nil { // 0: until UnblockIP
		panic(err)
	}
	reason, blocked, err := auth.BlockedReason(ctx, "192.168.1.100")
	if err != nil {
		panic(err)
	}
	fmt.Println(blocked, reason)

	// A connection attempt from that address, as the built-in auth hook
	// makes it, is refused with ip_blocked.
	_, err = auth.CheckConnect(ctx, "sock1", "192.168.1.100", "")
	fmt.Println(socketio.ErrorCode(err), err)

	stats, err := auth.ConnectionStats(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("open connections:", stats.Total)
	for _, b := range stats.Blocked {
		fmt.Printf("blocked %s (%s), expires: %v\n", b.Addr, b.Reason, !b.Expires.IsZero())
	}
	fmt.Println("refused as ip_blocked:", stats.Refusals[socketio.CodeIPBlocked])
	// Output:
	// true 违规行为
	// ip_blocked ip_blocked: address blocked: 违规行为
	// open connections: 0
	// blocked 192.168.1.100 (违规行为), expires: false
	// refused as ip_blocked: 1
}

// AuthOptions.TokenVerifier is the short way to require a token: a missing
// or rejected token refuses the connection with unauthorized, and the user
// id it returns owns the session's history.
func ExampleAuthOptions_tokenVerifier() {
	auth, err := socketio.NewAuth(socketio.AuthOptions{
		TokenVerifier: func(ctx context.Context, token string) (string, error) {
			if token != "secret-token-of-user123" { // check a JWT here
				return "", errors.New("bad token")
			}
			return "user123", nil
		},
	})
	if err != nil {
		panic(err)
	}
	defer auth.Close()

	ctx := context.Background()
	user, err := auth.CheckConnect(ctx, "sock1", "203.0.113.7", "secret-token-of-user123")
	fmt.Printf("%q %v\n", user, err)
	_, err = auth.CheckConnect(ctx, "sock2", "203.0.113.7", "guess")
	fmt.Println(errors.Is(err, socketio.ErrUnauthorized))
	// Output:
	// "user123" <nil>
	// true
}

// This is the seed's SocketIOStorage use: store_session (StoreSession) is
// SaveSession, get_session_history (SessionHistory) is History, and
// store_task (StoreTask) is CreateTask followed by UpdateTask. Register
// uses a MemoryStorage unless Options.Storage is set.
func ExampleMemoryStorage() {
	storage := socketio.NewMemoryStorage(socketio.StorageOptions{
		SessionTTL: 24 * time.Hour,     // the seed's session_ttl
		HistoryTTL: 7 * 24 * time.Hour, // the seed's history_ttl
	})
	defer storage.Close()
	ctx := context.Background()
	connectedAt := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC) // time.Now() in real code

	// store_session
	err := storage.SaveSession(ctx, socketio.Session{ID: "session_id", UserID: "user123", CreatedAt: connectedAt})
	if err != nil {
		panic(err)
	}

	// store_task: tasks belong to an owner, the user when there is one.
	owner := socketio.OwnerOf("session_id", "user123")
	err = storage.CreateTask(ctx, socketio.Task{
		ID:        "task_id",
		SessionID: "session_id",
		Owner:     owner,
		Question:  "用户问题",
		AskedAt:   connectedAt.Add(time.Minute),
	}, 3) // at most 3 unfinished tasks per session
	if err != nil {
		panic(err)
	}
	t, applied, err := storage.UpdateTask(ctx, owner, "task_id", socketio.TaskUpdate{
		Status: socketio.TaskProcessing,
		At:     connectedAt.Add(time.Minute + time.Second),
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(t.Status, applied)

	// get_session_history(limit=20)
	history, hasMore, err := storage.History(ctx, owner, "", 20)
	if err != nil {
		panic(err)
	}
	for _, t := range history {
		fmt.Println(t.ID, t.Question, t.Status, t.UpdatedAt.Format(time.RFC3339))
	}
	fmt.Println("more:", hasMore)

	// Without a user, the session itself is the owner.
	fmt.Println(owner, socketio.OwnerOf("session_id", ""))
	// Output:
	// processing true
	// task_id 用户问题 processing 2025-03-01T09:01:01Z
	// more: false
	// u:user123 s:session_id
}

// A custom Answerer, for example one that calls a language model, is a
// function wrapped in AnswererFunc and passed in Options.Answerer. When the
// client asked for streaming, pieces written to chunks reach it as
// answer_chunk events before the final answer.
func ExampleAnswererFunc() {
	answerer := socketio.AnswererFunc(func(ctx context.Context, q socketio.Question, chunks socketio.ChunkWriter) (socketio.Answer, error) {
		text := "你问的是：" + q.Text
		for _, piece := range []string{"你问的是：", q.Text} {
			if err := chunks.WriteChunk(piece); err != nil {
				return socketio.Answer{}, err // the task was cancelled or timed out
			}
		}
		return socketio.Answer{Text: text, Sources: []string{"echo"}}, ctx.Err()
	})

	sio := socket.NewServer(nil, nil)
	defer sio.Close(nil)
	qa, err := socketio.Register(sio, socketio.Options{Answerer: answerer})
	if err != nil {
		panic(err)
	}
	defer qa.Close(context.Background())

	// What a worker does for a streamed question:
	ans, err := answerer.Answer(context.Background(), socketio.Question{Text: "用户问题", Stream: true}, printChunks{})
	fmt.Println(ans.Text, ans.Sources, err)
	// Output:
	// chunk "你问的是："
	// chunk "用户问题"
	// 你问的是：用户问题 [echo] <nil>
}

// printChunks is a ChunkWriter that prints each delta.
type printChunks struct{}

func (printChunks) WriteChunk(delta string) error {
	fmt.Printf("chunk %q\n", delta)
	return nil
}

// A KnowledgeBase answers from a fixed set of questions; with
// Options.KnowledgeBase it also feeds get_suggestions. A question it cannot
// match gets a fallback answer, not an error.
func ExampleNewKnowledgeBase() {
	kb, err := socketio.NewKnowledgeBase([]socketio.Entry{
		{Question: "How do rooms work?", Answer: "Join a room to receive what is sent to it.", Source: "docs/rooms"},
		{Question: "如何取消任务？", Answer: "发送 cancel_task 事件。", Aliases: []string{"怎么停止回答"}},
	})
	if err != nil {
		panic(err)
	}
	answerer := kb.Answerer(socketio.KBAnswererOptions{Fallback: "暂时无法回答。"})
	for _, q := range []string{"how do rooms work", "怎么停止回答？", "天气如何"} {
		ans, err := answerer.Answer(context.Background(), socketio.Question{Text: q}, printChunks{})
		if err != nil {
			panic(err)
		}
		fmt.Println(ans.Text, ans.Sources)
	}
	// Output:
	// Join a room to receive what is sent to it. [docs/rooms]
	// 发送 cancel_task 事件。 [如何取消任务？]
	// 暂时无法回答。 []
}

// Errors carry a docs/protocol.md code. errors.Is matches any error with the same
// code as a sentinel, however it is wrapped; ErrorCode reads the code.
func ExampleErrorCode() {
	err := fmt.Errorf("ask_question: %w", socketio.NewError(socketio.CodeRateLimited, "5 questions per minute"))

	fmt.Println(errors.Is(err, socketio.ErrRateLimited))
	fmt.Println(errors.Is(err, socketio.ErrForbidden))
	fmt.Println(socketio.ErrorCode(err))
	fmt.Printf("%q\n", socketio.ErrorCode(errors.New("no code")))
	// Output:
	// true
	// false
	// rate_limited
	// ""
}

// QuietHoursHook refuses questions with a code of its choice and tells the
// client when to retry.
type QuietHoursHook struct{ socketio.BaseHook }

func (QuietHoursHook) BeforeQuestion(ctx context.Context, e *socketio.QuestionEvent) error {
	return &socketio.Error{
		Code:       socketio.CodeRateLimited,
		Message:    "questions are paused, try again later",
		RetryAfter: 90 * time.Second, // sent as retry_after_ms
	}
}

// A before-hook refuses an event with an *Error to choose the code the
// client sees; any other error becomes "forbidden" ("rejected" for a
// connect), and its text stays in the log.
func ExampleError() {
	hook := QuietHoursHook{socketio.NewBaseHook("quiet_hours", 50)}
	err := hook.BeforeQuestion(context.Background(), &socketio.QuestionEvent{Question: "用户问题"})

	var e *socketio.Error
	if errors.As(err, &e) {
		fmt.Println(e.Code, e.RetryAfter)
	}
	fmt.Println(errors.Is(err, socketio.ErrRateLimited))
	// Output:
	// rate_limited 1m30s
	// true
}

// ExampleNewRedisStorage shows the production store: the seed's
// SocketIOStorage on Redis (here an embedded miniredis, so the example runs
// anywhere). Every node that shares the Redis sees the same sessions,
// tasks and history.
func ExampleNewRedisStorage() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	store := socketio.NewRedisStorage(rdb, socketio.RedisStorageOptions{Prefix: "qa:"})
	defer store.Close()
	ctx := context.Background()
	at := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	if err := store.SaveSession(ctx, socketio.Session{ID: "session_id", UserID: "user123", CreatedAt: at, LastSeen: at}); err != nil {
		panic(err)
	}
	owner := socketio.OwnerOf("session_id", "user123")
	if err := store.CreateTask(ctx, socketio.Task{ID: "t1", SessionID: "session_id", Owner: owner,
		Question: "用户问题", AskedAt: at, UpdatedAt: at}, 3); err != nil {
		panic(err)
	}
	t, applied, err := store.UpdateTask(ctx, owner, "t1", socketio.TaskUpdate{
		Status: socketio.TaskCompleted, At: at.Add(time.Second), Answer: "答案",
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(t.Status, applied, t.Answer)

	items, _, err := store.History(ctx, owner, "", 20)
	if err != nil {
		panic(err)
	}
	fmt.Println(len(items), items[0].Question)
	// Output:
	// completed true 答案
	// 1 用户问题
}

// ExampleOptions_redis registers the service with its state in Redis: one
// option gives every node the same storage, limits, blocklist and
// resume-token secret. (Add redisadapter on the Socket.IO server for rooms
// and answers to cross nodes.)
func ExampleOptions_redis() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	sio := socket.NewServer(nil, nil)
	qa, err := socketio.Register(sio, socketio.Options{
		Redis:  rdb,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	defer qa.Close(context.Background())
	_, isRedis := qa.Storage().(*socketio.RedisStorage)
	fmt.Println("storage in Redis:", isRedis)
	// Output: storage in Redis: true
}

// Answering apart from the nodes: the nodes take questions into a
// RedisQueue and answer none (Workers: -1); a Worker, in this process or
// in another (cmd/qa-worker is one), answers them with its own Answerer.
func ExampleNewWorker() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	queue := socketio.NewRedisQueue(rdb, socketio.RedisQueueOptions{
		Prefix:     "qa:",            // the nodes' RedisPrefix
		ClaimAfter: 30 * time.Second, // a silent worker's answers are taken over after this
	})

	// A node: it stores questions, queues them and pushes what workers send.
	sio := socket.NewServer(nil, socketio.SetParser(socket.DefaultServerOptions()))
	defer sio.Close(nil)
	qa, err := socketio.Register(sio, socketio.Options{
		Redis: rdb, Queue: queue, Workers: -1,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	defer qa.Close(context.Background())

	// A worker with an answerer of its own.
	w, err := socketio.NewWorker(socketio.WorkerOptions{
		Queue: queue,
		Answerer: socketio.AnswererFunc(func(ctx context.Context, q socketio.Question, chunks socketio.ChunkWriter) (socketio.Answer, error) {
			_ = chunks.WriteChunk("You asked: ")
			_ = chunks.WriteChunk(q.Text)
			return socketio.Answer{Text: "You asked: " + q.Text}, nil
		}),
		Concurrency: 8,
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	// On SIGTERM: answers in progress finish until ctx ends, the rest go
	// to the other workers.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println("worker stopped:", w.Close(ctx))
	// Output: worker stopped: <nil>
}

// The endpoint's path and CORS are settings of the Socket.IO server: set
// them in its ServerOptions, and mount Handler at the same path. Here the
// endpoint is /qa/ and only pages from https://app.example.com may call it
// from a browser (socket.io-client: io("https://api.example.com", {path:
// "/qa/"})).
func ExampleServer_Handler_pathAndCORS() {
	opts := socket.DefaultServerOptions()
	opts.SetPath("/qa")
	opts.SetCors(&types.Cors{
		Origin:      "https://app.example.com",
		Credentials: true,
	})
	sio := socket.NewServer(nil, socketio.SetParser(opts))
	defer sio.Close(nil)
	qa, err := socketio.Register(sio, socketio.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		panic(err)
	}
	defer qa.Close(context.Background())

	mux := http.NewServeMux()
	mux.Handle("/qa/", qa.Handler())
	hs := httptest.NewServer(mux)
	defer hs.Close()

	// What a browser on https://app.example.com sends: a CORS preflight,
	// then the Engine.IO handshake of the polling transport.
	for _, method := range []string{http.MethodOptions, http.MethodGet} {
		req, err := http.NewRequest(method, hs.URL+"/qa/?EIO=4&transport=polling", nil)
		if err != nil {
			panic(err)
		}
		req.Header.Set("Origin", "https://app.example.com")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(method, resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"), strings.HasPrefix(string(body), `0{"`))
	}
	// Output:
	// OPTIONS 204 https://app.example.com false
	// GET 200 https://app.example.com true
}
