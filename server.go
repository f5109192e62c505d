package socketio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio/internal/seqparser"
)

// Options configures Register. The zero value means the defaults.
type Options struct {
	// Namespace is the Socket.IO namespace to serve. default: "/"
	Namespace string
	// Redis, when set, is the state every node using it shares (with the
	// same RedisPrefix): the default Storage is a RedisStorage on it, the
	// default Auth (and an Auth of the caller's created without
	// AuthOptions.Redis, see Auth) keeps its limits, blocklist and
	// connection counts in it,
	// and, when Secret is unset, the nodes agree through it on the secret
	// that signs resume tokens. The caller owns the client and closes it
	// after Close. default: nil (all state in this process)
	Redis redis.UniversalClient
	// RedisPrefix prefixes every key the service writes to Redis.
	// default: "qa:"
	RedisPrefix string
	// Storage keeps sessions, tasks and history. default: a RedisStorage
	// when Redis is set, otherwise a MemoryStorage; either is owned and
	// closed by the Server.
	Storage Storage
	// Auth holds the limits and access rules. default: NewAuth with Redis
	// (when set) and otherwise default options, owned and closed by the
	// Server. An Auth of the caller's stays the caller's to close. When
	// Redis is set and the Auth was created without AuthOptions.Redis,
	// Register moves its state to Redis (under RedisPrefix), so that it is
	// shared with the other nodes like the default Auth's: blocklist
	// entries made before are written there, and Register fails if the
	// Auth already holds connections. An Auth created with
	// AuthOptions.Redis keeps its own.
	Auth *Auth
	// KnowledgeBase, when set, provides the default Answerer and Suggester.
	KnowledgeBase *KnowledgeBase
	// Answerer answers questions. default: KnowledgeBase.Answerer (or, with
	// no knowledge base, an answerer that says it has no answer).
	Answerer Answerer
	// Suggester serves get_suggestions. default: NewSuggester over the
	// knowledge base and the storage's popular questions.
	Suggester Suggester
	// Queue carries the accepted questions to the workers that answer
	// them (see AnswerQueue). default: a RedisQueue on Redis (with
	// RedisPrefix) when Redis is set, otherwise LocalQueue()
	Queue AnswerQueue
	// Workers is how many answers this node runs at once: on its own pool
	// with LocalQueue, as a Worker inside the node with a RedisQueue. A
	// negative count means none: with a RedisQueue the node then only
	// takes questions, and Worker processes (cmd/qa-worker) answer them.
	// default: 16
	Workers int
	// QueueSize is how many accepted questions may wait for a worker of
	// the LocalQueue; when it is full, ask_question answers "unavailable"
	// (a RedisQueue has RedisQueueOptions.Limit). default: 1024
	QueueSize int
	// AnswerTimeout bounds one answer; past it the task fails with
	// "timeout". default: 2m
	AnswerTimeout time.Duration
	// StorageTimeout bounds the work of one request or connection attempt
	// (its hooks and storage calls), each storage call of an answer, and
	// each call of the built-in storage hook: past it, the client is told
	// "unavailable". default: 5s
	StorageTimeout time.Duration
	// MaxOpenTasks is how many unfinished tasks a session may have.
	// default: 3
	MaxOpenTasks int
	// MaxPendingEvents is how many events of one socket may wait for an
	// earlier one; a client that sends more is disconnected. default: 256
	MaxPendingEvents int
	// Secret signs resume tokens. Sockets can only resume sessions on
	// servers that accept the secret that signed their token. default:
	// with Redis, a random secret the nodes share through it (and follow
	// when it changes, for instance after Redis lost its data); otherwise
	// 32 random bytes per Register call
	Secret []byte
	// PreviousSecrets are secrets that verify resume tokens but sign none:
	// to rotate Secret without ending sessions, move the old value here,
	// set the new one, and drop the old after ResumeTokenTTL. A token
	// names its secret by a key id derived from it (a short hash), so
	// secrets need no names. default: none
	PreviousSecrets [][]byte
	// ResumeTokenTTL is how long a resume token is accepted after it was
	// issued (every connected event brings a fresh one); an expired token
	// gets a new session, like a forged one. default: 24h (the default
	// StorageOptions.SessionTTL)
	ResumeTokenTTL time.Duration
	// MaxQueuedBytes is the send budget of one connection: how many bytes
	// of packets may wait for a transport that cannot take them (a
	// websocket whose client does not read, a polling client that makes no
	// request). A connection past it is closed, logged and counted in
	// Metrics.SlowConsumers; so is one that answers a ping it was never
	// sent. It must exceed the largest message the service sends (a
	// history page, an answer). Enforced by Handler. default: 1 MiB
	MaxQueuedBytes int
	// Logger receives the library's logs. A connection's repeated lines
	// are thinned out: the first is written, then at most one every 10 s
	// with "suppressed", the number left out, and one when the connection
	// ends. default: slog.Default()
	Logger *slog.Logger

	// NodeTTL is how long this node counts as alive after it last renewed
	// its lease in the storage. It renews the lease every NodeTTL/3, and
	// as often sweeps for the unfinished tasks of nodes whose lease has
	// lapsed on two sweeps in a row: those tasks were lost with their node,
	// and are settled as failed with "timeout", their final task_status
	// and answer_error pushed. Only the built-in stores (MemoryStorage,
	// RedisStorage) keep leases; with another Storage an orphaned task is
	// settled when it is read or blocks a question, once it has been
	// unchanged for AnswerTimeout + 2×StorageTimeout + 30s. default: 15s
	NodeTTL time.Duration

	// secretRefresh is how often a secret shared through Redis is re-read.
	// default: defaultSecretRefresh (tests shorten it)
	secretRefresh time.Duration
	// leaseRenewal is how often an Auth in Redis that Register creates or
	// moves there renews its connection leases. default: LeaseTTL/3
	// (tests shorten it)
	leaseRenewal time.Duration
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = "/"
	}
	if o.Workers == 0 {
		o.Workers = 16
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 1024
	}
	if o.AnswerTimeout <= 0 {
		o.AnswerTimeout = 2 * time.Minute
	}
	if o.StorageTimeout <= 0 {
		o.StorageTimeout = 5 * time.Second
	}
	if o.MaxOpenTasks <= 0 {
		o.MaxOpenTasks = 3
	}
	if o.MaxPendingEvents <= 0 {
		o.MaxPendingEvents = 256
	}
	if o.MaxQueuedBytes <= 0 {
		o.MaxQueuedBytes = defaultMaxQueuedBytes
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.RedisPrefix == "" {
		o.RedisPrefix = "qa:"
	}
	if o.ResumeTokenTTL <= 0 {
		o.ResumeTokenTTL = 24 * time.Hour
	}
	if o.NodeTTL <= 0 {
		o.NodeTTL = 15 * time.Second
	}
	if o.secretRefresh <= 0 {
		o.secretRefresh = defaultSecretRefresh
	}
	return o
}

// Server is the Q&A service registered on one namespace of a Socket.IO
// server. It is created by Register.
//
// Concurrency: all methods are safe for concurrent use.
type Server struct {
	opts   Options
	sio    *socket.Server
	nsp    socket.Namespace
	parser *seqparser.Parser
	// parserSwapped: Register replaced sio's parser in place (the server
	// was not built with SetParser).
	parserSwapped bool
	hooks         *HookManager
	auth          *Auth
	storage       Storage
	answerer      Answerer
	suggester     Suggester
	logger        *slog.Logger
	tokens        atomic.Pointer[resumeKeyring] // see resumeKeys
	shared        *sharedSecret                 // nil unless the secret is shared through Redis
	tasks         *taskRunner
	queue         *queueNode // nil with LocalQueue
	worker        *Worker    // the node's own Worker of a RedisQueue, if any
	metrics       *MetricsHook

	ownStorage io.Closer
	ownAuth    bool

	// node names this Server in the node leases of the storage, which
	// nodes is when the storage keeps them (see Options.NodeTTL);
	// leaseOff stops renewing the lease (tests).
	node     string
	nodes    nodeStore
	leaseOff atomic.Bool

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	closed atomic.Bool
	// slowConsumers counts connections closed by their send guard.
	slowConsumers atomic.Uint64
	wg            sync.WaitGroup // connect middlewares in flight

	mu        sync.Mutex
	sockets   map[string]*conn // by socket id, local
	handler   http.Handler
	closeOnce sync.Once
	closeErr  error
}

// Register wires the Q&A events of docs/protocol.md onto sio and returns the
// Server through which hooks, auth and storage are reached. Register the
// service once per namespace: a second Register on the same namespace of
// the same sio is an error. Serve the endpoint with Server.Handler (rather
// than sio.ServeHandler) to get the HTTP-level protections. Close the Server
// to stop its goroutines; Close does not close sio.
func Register(sio *socket.Server, opts Options) (*Server, error) {
	if sio == nil {
		return nil, errors.New("socketio: Register: nil server")
	}
	opts = opts.withDefaults()
	p, swapped, err := installParser(sio)
	if err != nil {
		return nil, err
	}
	if !p.Track(opts.Namespace) {
		return nil, fmt.Errorf("socketio: Register: namespace %q is already registered on this server", opts.Namespace)
	}

	s := &Server{
		opts:          opts,
		sio:           sio,
		parser:        p,
		parserSwapped: swapped,
		logger:        opts.Logger,
		sockets:       map[string]*conn{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	fail := func(err error) (*Server, error) {
		p.Untrack(opts.Namespace)
		if s.worker != nil {
			_ = s.worker.Close(context.Background())
		}
		s.cancel()
		s.wg.Wait()
		if s.ownAuth && s.auth != nil {
			_ = s.auth.Close()
		}
		if s.ownStorage != nil {
			_ = s.ownStorage.Close()
		}
		return nil, err
	}

	s.auth = opts.Auth
	switch {
	case s.auth == nil:
		a, err := newAuth(AuthOptions{Logger: opts.Logger, Redis: opts.Redis, RedisPrefix: opts.RedisPrefix},
			authConfig{renewEvery: opts.leaseRenewal})
		if err != nil {
			return fail(err)
		}
		s.auth, s.ownAuth = a, true
	case opts.Redis != nil:
		ctx, cancel := context.WithTimeout(context.Background(), opts.StorageTimeout)
		err := s.auth.bindRedis(ctx, opts.Redis, opts.RedisPrefix, opts.leaseRenewal)
		cancel()
		if err != nil {
			return fail(err)
		}
	}
	s.storage = opts.Storage
	switch {
	case s.storage != nil:
	case opts.Redis != nil:
		r := NewRedisStorage(opts.Redis, RedisStorageOptions{Prefix: opts.RedisPrefix})
		s.storage, s.ownStorage = r, r
	default:
		m := NewMemoryStorage(StorageOptions{})
		s.storage, s.ownStorage = m, m
	}
	s.answerer = opts.Answerer
	if s.answerer == nil {
		kb := opts.KnowledgeBase
		if kb == nil {
			kb, _ = NewKnowledgeBase(nil)
		}
		s.answerer = kb.Answerer(KBAnswererOptions{})
	}
	s.suggester = opts.Suggester
	if s.suggester == nil {
		s.suggester = NewSuggester(opts.KnowledgeBase, s.storage.PopularQuestions)
	}
	if err := s.setupResumeKeys(); err != nil {
		return fail(err)
	}

	s.hooks = NewHookManager(opts.Logger)
	s.metrics = NewMetricsHook()
	storageHook := NewStorageHook(s.storage, opts.Logger)
	storageHook.timeout = opts.StorageTimeout
	for _, h := range []Hook{
		NewAuthHook(s.auth),
		NewRateLimitHook(s.auth),
		storageHook,
		s.metrics,
	} {
		if err := s.hooks.Register(h); err != nil {
			return fail(err)
		}
	}
	queue := opts.Queue
	if queue == nil && opts.Redis != nil {
		queue = NewRedisQueue(opts.Redis, RedisQueueOptions{Prefix: opts.RedisPrefix})
	}
	rq, _ := queue.(*RedisQueue)
	switch {
	case rq == nil && opts.Workers < 0:
		return fail(errors.New("socketio: Register: no Workers with a LocalQueue: no question would be answered"))
	case rq == nil:
		s.tasks = newTaskRunner(s, opts.Workers)
	default:
		s.tasks = newTaskRunner(s, 0) // settles orphans; answers nothing
		if opts.Workers > 0 {
			w, err := NewWorker(WorkerOptions{
				Queue: rq, Storage: s.storage, Answerer: s.answerer, Concurrency: opts.Workers,
				AnswerTimeout: opts.AnswerTimeout, StorageTimeout: opts.StorageTimeout,
				Hooks: s.hooks, Logger: opts.Logger,
			})
			if err != nil {
				return fail(err)
			}
			s.worker = w
		}
	}

	s.nsp = sio.Of(opts.Namespace, nil)
	s.nsp.Use(s.admit)
	if err := s.nsp.On("connection", s.onConnection); err != nil {
		return fail(err)
	}
	if err := s.onNodeEvent(cancelTaskEvent, func(args ...any) {
		if len(args) > 0 {
			if id, ok := args[0].(string); ok {
				s.tasks.stop(id)
			}
		}
	}); err != nil {
		return fail(err)
	}
	if rq != nil {
		s.queue = newQueueNode(s, rq)
	}
	s.startLeases()
	return s, nil
}

// setupResumeKeys builds the keyring of resume-token secrets from the
// options and, when the secret is shared through Redis, starts following
// it.
func (s *Server) setupResumeKeys() error {
	opts := s.opts
	var previous []resumeKey
	for _, p := range opts.PreviousSecrets {
		if len(p) == 0 {
			return errors.New("socketio: Register: an empty PreviousSecrets entry")
		}
		previous = append(previous, newResumeKey(p))
	}
	switch {
	case len(opts.Secret) > 0:
		s.tokens.Store(newKeyring(newResumeKey(opts.Secret), opts.ResumeTokenTTL, time.Now(), previous...))
	case opts.Redis != nil:
		shared, err := newSharedSecret(opts.Redis, opts.RedisPrefix+"resume-secret", opts.ResumeTokenTTL, previous, opts.Logger)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), opts.StorageTimeout)
		err = shared.refresh(ctx, false)
		cancel()
		if err != nil {
			return fmt.Errorf("socketio: Register: %w", err)
		}
		s.shared = shared
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			shared.run(s.ctx, opts.secretRefresh, opts.StorageTimeout)
		}()
	default:
		secret, err := randomSecret()
		if err != nil {
			return err
		}
		s.tokens.Store(newKeyring(newResumeKey(secret), opts.ResumeTokenTTL, time.Now(), previous...))
	}
	return nil
}

// resumeKeys returns the keyring that signs and verifies resume tokens now.
func (s *Server) resumeKeys() *resumeKeyring {
	if s.shared != nil {
		return s.shared.ring.Load()
	}
	return s.tokens.Load()
}

// Hooks returns the Server's hook manager, with the built-in hooks "auth"
// (100), "rate_limit" (80), "storage" (60) and "metrics" (10) registered.
func (s *Server) Hooks() *HookManager { return s.hooks }

// Auth returns the Server's access rules and connection statistics.
func (s *Server) Auth() *Auth { return s.auth }

// Storage returns the Server's storage.
func (s *Server) Storage() Storage { return s.storage }

// Metrics returns the counters of the built-in "metrics" hook. They stop
// moving while that hook is disabled, unregistered or replaced.
func (s *Server) Metrics() Metrics {
	m := s.metrics.Snapshot()
	m.SlowConsumers = s.slowConsumers.Load()
	return m
}

// Close stops the service gracefully: new connections and requests are
// refused with "unavailable", answers in flight may finish until ctx is
// done, then the rest are cancelled (and stored as cancelled); an answer
// whose end could not be stored by then (the store is down) is given up
// here, and settled by the sweep of another node (see NodeTTL) or of this
// service's next start. Close waits for every goroutine the Server
// started, closes the storage and auth it created itself, and returns
// ctx.Err() if ctx ended first. It does not close the Socket.IO server.
// Calling Close again returns the first result.
func (s *Server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		if s.queue != nil {
			s.queue.shutdown()
		}
		if s.worker != nil {
			s.closeErr = s.worker.Close(ctx)
		}
		if err := s.tasks.shutdown(ctx); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
		s.cancel()
		s.wg.Wait()
		s.mu.Lock()
		conns := make([]*conn, 0, len(s.sockets))
		for _, c := range s.sockets {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		for _, c := range conns {
			c.seq.Close()
		}
		if s.ownAuth {
			if err := s.auth.Close(); err != nil && s.closeErr == nil {
				s.closeErr = err
			}
		}
		if s.ownStorage != nil {
			if err := s.ownStorage.Close(); err != nil && s.closeErr == nil {
				s.closeErr = err
			}
		}
	})
	return s.closeErr
}

// storageCtx bounds a storage call made for a request or a task. It does
// not inherit the caller's cancellation: a write the service decided to make
// (a task's final status, say) is made even if the asker went away.
func (s *Server) storageCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(s.ctx), s.opts.StorageTimeout)
}

// storageErr maps a storage failure to what the client is told.
func storageErr(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
