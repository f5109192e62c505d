// Command qa-server is the demo of the socketio library: a Socket.IO
// question-and-answer server with the embedded store, a demo knowledge base
// and a web page to try it.
//
//	go run ./cmd/qa-server            # then open http://127.0.0.1:8080/
//
// Every setting is a flag with an environment twin (flags win); -h lists
// them. Secrets are read from the environment or from files (QA_SECRET,
// QA_SECRET_FILE, QA_JWT_SECRET, …), not from flags, which show in ps.
package main

import (
	"context"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/answerconf"
	"github.com/qaplatform/socketio/internal/demokb"
	"github.com/qaplatform/socketio/internal/envflag"
	"github.com/qaplatform/socketio/internal/redisurl"
	"github.com/qaplatform/socketio/redisadapter"
)

//go:embed web
var webFS embed.FS

type config struct {
	addr             string
	maxConnsPerIP    int
	maxQPerMin       int
	maxQPerMinPerIP  int
	secrets          secretConfig
	answerDelay      time.Duration
	shutdownTimeout  time.Duration
	logLevel         string
	trustedProxyList string
	redisURL         string
	redisPrefix      string
	clusterKey       string
	workers          int
	queue            string
	claimAfter       time.Duration
	queueLimit       int
	nodeTTL          time.Duration
	// getenv reads the model server settings (QA_LLM_*, OPENAI_API_KEY).
	getenv func(string) string
}

func main() {
	if err := run(os.Args[1:], os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "qa-server:", err)
		os.Exit(1)
	}
}

// parseConfig reads flags, falling back to their environment twins.
func parseConfig(args []string, getenv func(string) string) (config, error) {
	c := config{getenv: getenv}
	fs := flag.NewFlagSet("qa-server", flag.ContinueOnError)
	env := &envflag.Env{Getenv: getenv}
	envStr, envInt, envDur := env.String, env.Int, env.Duration
	var errs []error
	fs.StringVar(&c.addr, "addr", envStr("QA_ADDR", "127.0.0.1:8080"), "listen address (env QA_ADDR)")
	fs.IntVar(&c.maxConnsPerIP, "max-connections-per-ip", envInt("QA_MAX_CONNECTIONS_PER_IP", 10), "open connections allowed per client address (env QA_MAX_CONNECTIONS_PER_IP)")
	fs.IntVar(&c.maxQPerMin, "max-questions-per-minute", envInt("QA_MAX_QUESTIONS_PER_MINUTE", 5), "questions per session in any 60 s window (env QA_MAX_QUESTIONS_PER_MINUTE)")
	fs.IntVar(&c.maxQPerMinPerIP, "max-questions-per-minute-per-ip", envInt("QA_MAX_QUESTIONS_PER_MINUTE_PER_IP", 60), "questions per client address in any 60 s window (env QA_MAX_QUESTIONS_PER_MINUTE_PER_IP)")
	secrets := addSecretFlags(fs, getenv)
	fs.DurationVar(&c.answerDelay, "answer-delay", envDur("QA_ANSWER_DELAY", 0), "pause before each streamed answer chunk, to mimic a slow model (env QA_ANSWER_DELAY)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", envDur("QA_SHUTDOWN_TIMEOUT", 10*time.Second), "how long answers in flight may finish on shutdown (env QA_SHUTDOWN_TIMEOUT)")
	fs.StringVar(&c.logLevel, "log-level", envStr("QA_LOG_LEVEL", "info"), "debug, info, warn or error (env QA_LOG_LEVEL)")
	fs.StringVar(&c.redisURL, "redis-url", envStr("REDIS_URL", ""), "Redis to share sessions, history, limits and the resume secret with other nodes: redis://[[user]:password@]host:port[/db] for one server, redis+sentinel://[[user]:password@]sentinel:port[/db]?master_name=NAME[&addr=sentinel2:port] for Sentinel, redis+cluster://[[user]:password@]node:port[?addr=node2:port] for a Cluster (rediss… for TLS; go-redis URL options in the query); empty: everything in memory (env REDIS_URL)")
	fs.StringVar(&c.redisPrefix, "redis-prefix", envStr("QA_REDIS_PREFIX", "qa:"), "prefix of every Redis key (env QA_REDIS_PREFIX)")
	fs.StringVar(&c.clusterKey, "cluster-key", envStr("QA_CLUSTER_KEY", "socket.io"), "with -redis-url: the Redis stream and channel prefix the nodes' cluster adapter shares, which @socket.io/redis-streams-adapter and @socket.io/redis-emitter also use by default (env QA_CLUSTER_KEY)")
	fs.IntVar(&c.workers, "workers", envInt("QA_WORKERS", 16), "answers this node runs at once; 0: none, the node only takes questions and qa-worker processes answer them (needs -redis-url) (env QA_WORKERS)")
	fs.StringVar(&c.queue, "queue", envStr("QA_QUEUE", ""), "where questions wait for an answer: redis (the shared, durable queue; the default with -redis-url) or memory (each node answers its own questions; the default without) (env QA_QUEUE)")
	fs.DurationVar(&c.claimAfter, "claim-after", envDur("QA_CLAIM_AFTER", 30*time.Second), "with the redis queue: how long a worker may be silent before its answers are taken over by another (env QA_CLAIM_AFTER)")
	fs.IntVar(&c.queueLimit, "queue-limit", envInt("QA_QUEUE_LIMIT", 10000), "with the redis queue: unanswered questions it holds before ask_question is refused as unavailable (env QA_QUEUE_LIMIT)")
	fs.DurationVar(&c.nodeTTL, "node-ttl", envDur("QA_NODE_TTL", 15*time.Second), "how long a node counts as alive after it last renewed its lease; the questions a dead node held are queued again, or settled, by the others (env QA_NODE_TTL)")
	fs.StringVar(&c.trustedProxyList, "trusted-proxies", envStr("QA_TRUSTED_PROXIES", ""), "comma-separated CIDRs whose X-Forwarded-For is believed (env QA_TRUSTED_PROXIES)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case c.workers < 0:
		errs = append(errs, errors.New("-workers must be 0 or more"))
	case c.queue != "" && c.queue != "redis" && c.queue != "memory":
		errs = append(errs, fmt.Errorf("-queue %q: want redis or memory", c.queue))
	case c.queue == "redis" && c.redisURL == "":
		errs = append(errs, errors.New("-queue redis needs -redis-url"))
	}
	if c.queue == "" {
		c.queue = "memory"
		if c.redisURL != "" {
			c.queue = "redis"
		}
	}
	if c.workers == 0 && c.queue == "memory" {
		errs = append(errs, errors.New("-workers 0 needs the redis queue (-redis-url): no question would be answered"))
	}
	var err error
	if c.secrets, err = secrets.resolve(fs); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, env.Err())
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	return c, nil
}

func run(args []string, getenv func(string) string) error {
	cfg, err := parseConfig(args, getenv)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	srv, handler, err := newService(cfg, logger)
	if err != nil {
		ln.Close()
		return err
	}
	httpServer := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- httpServer.Serve(ln) }()
	logger.Info("qa-server listening", "addr", "http://"+ln.Addr().String()+"/")

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	closeErr := srv.Close(sctx)
	_ = httpServer.Shutdown(sctx)
	if closeErr != nil && !errors.Is(closeErr, context.DeadlineExceeded) {
		return closeErr
	}
	return nil
}

// env reads the environment parseConfig was given (none for a config
// built by hand).
func (c config) env(name string) string {
	if c.getenv == nil {
		return ""
	}
	return c.getenv(name)
}

// service is what newService builds: the library's Server and the
// Socket.IO server it is registered on.
type service struct {
	qa      *socketio.Server
	io      *socket.Server
	auth    *socketio.Auth        // passed to Register, so closed here
	redis   redis.UniversalClient // nil without -redis-url
	cluster *redisadapter.Builder
}

// Close stops the Q&A service, then the Socket.IO server and Redis.
func (s *service) Close(ctx context.Context) error {
	err := s.qa.Close(ctx)
	s.io.Close(nil)
	err = errors.Join(err, s.auth.Close())
	if s.cluster != nil {
		err = errors.Join(err, s.cluster.Close())
	}
	if s.redis != nil {
		err = errors.Join(err, s.redis.Close())
	}
	return err
}

// newService builds the Socket.IO server, registers the Q&A service on it
// and returns the HTTP handler serving the endpoint and the web page.
func newService(cfg config, logger *slog.Logger) (*service, http.Handler, error) {
	kb, err := demokb.Load()
	if err != nil {
		return nil, nil, err
	}
	var proxies []string
	for _, p := range strings.Split(cfg.trustedProxyList, ",") {
		if p = strings.TrimSpace(p); p != "" {
			proxies = append(proxies, p)
		}
	}
	var rdb redis.UniversalClient
	if cfg.redisURL != "" {
		if rdb, err = redisurl.Connect(cfg.redisURL); err != nil {
			return nil, nil, err
		}
	}
	closeRedis := func() {
		if rdb != nil {
			rdb.Close()
		}
	}
	authOpts := socketio.AuthOptions{
		MaxConnectionsPerIP:        cfg.maxConnsPerIP,
		MaxQuestionsPerMinute:      cfg.maxQPerMin,
		MaxQuestionsPerMinutePerIP: cfg.maxQPerMinPerIP,
		TrustedProxies:             proxies,
		Logger:                     logger,
		RedisPrefix:                cfg.redisPrefix,
	}
	answerer, desc, err := answerconf.FromEnv(cfg.env, kb.Answerer(socketio.KBAnswererOptions{ChunkDelay: cfg.answerDelay}), logger)
	if err != nil {
		return nil, nil, err
	}
	logger.Info("answering with " + desc)
	opts := socketio.Options{
		KnowledgeBase: kb,
		Answerer:      answerer,
		Logger:        logger,
		RedisPrefix:   cfg.redisPrefix,
	}
	if rdb != nil {
		authOpts.Redis, opts.Redis = rdb, rdb
	}
	opts.Workers = cfg.workers
	opts.NodeTTL = cfg.nodeTTL
	if cfg.workers == 0 {
		opts.Workers = -1
	}
	switch cfg.queue {
	case "memory":
		opts.Queue = socketio.LocalQueue()
	case "redis":
		opts.Queue = socketio.NewRedisQueue(rdb, socketio.RedisQueueOptions{
			Prefix: cfg.redisPrefix, ClaimAfter: cfg.claimAfter, Limit: cfg.queueLimit,
		})
	}
	if err := cfg.secrets.apply(&opts, &authOpts); err != nil {
		closeRedis()
		return nil, nil, err
	}
	auth, err := socketio.NewAuth(authOpts)
	if err != nil {
		closeRedis()
		return nil, nil, err
	}
	opts.Auth = auth
	// With Redis, the nodes form one cluster: broadcasts, rooms and task
	// events cross them through the Redis adapter.
	sopts := socket.DefaultServerOptions()
	var cluster *redisadapter.Builder
	if rdb != nil {
		cluster = redisadapter.New(rdb, redisadapter.Options{
			StreamName: cfg.clusterKey, ChannelPrefix: cfg.clusterKey, EmitterKey: cfg.clusterKey, Logger: logger,
		})
		sopts.SetAdapter(cluster)
	}
	io := socket.NewServer(nil, socketio.SetParser(sopts))
	qa, err := socketio.Register(io, opts)
	if err != nil {
		auth.Close()
		if cluster != nil {
			cluster.Close()
		}
		closeRedis()
		return nil, nil, err
	}
	svc := &service{qa: qa, io: io, auth: auth, redis: rdb, cluster: cluster}

	static, err := fs.Sub(webFS, "web")
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", qa.Handler())
	mux.Handle("/static/", http.StripPrefix("/static/", staticFiles(static)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if cluster != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			if err := cluster.Health(ctx); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, "cluster:", err)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	// /healthz is liveness (the process serves; with Redis, its cluster
	// adapter is connected); /readyz is readiness: also the storage and
	// the auth store answer and the server is not shutting down. A load
	// balancer routes by /readyz.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		var down []string
		if cluster != nil {
			if err := cluster.Health(ctx); err != nil {
				down = append(down, "cluster: "+err.Error())
			}
		}
		if err := qa.Ready(ctx); err != nil {
			down = append(down, strings.Split(err.Error(), "\n")...)
		}
		if len(down) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, strings.Join(down, "\n"))
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, static, "index.html")
	})
	return svc, mux, nil
}

// staticFiles serves fsys, refusing with 400 a path that cannot name a
// file of it: http.FileServerFS answers 500 for a path that is not UTF-8
// (such as /static/%ff), which io/fs paths must be.
func staticFiles(fsys fs.FS) http.Handler {
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !utf8.ValidString(r.URL.Path) {
			http.Error(w, "400 bad request: the path is not UTF-8", http.StatusBadRequest)
			return
		}
		files.ServeHTTP(w, r)
	})
}
