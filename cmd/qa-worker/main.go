// Command qa-worker answers the questions that qa-server nodes put into the
// shared Redis queue. Run as many as the answering load needs, apart from
// the nodes, which then need no answering capacity of their own
// (qa-server -workers 0):
//
//	go run ./cmd/qa-server -redis-url redis://127.0.0.1:6379 -workers 0
//	go run ./cmd/qa-worker -redis-url redis://127.0.0.1:6379
//
// It answers from the demo knowledge base, or, when QA_LLM_BASE_URL or
// OPENAI_API_KEY is set, from an OpenAI-compatible model server (see the
// README). A worker killed mid-answer loses nothing: another worker takes
// its answers over after -claim-after and answers them again. On SIGTERM
// it takes no more questions, lets the answers in progress finish for up
// to -shutdown-timeout, and hands the rest to the other workers.
//
// Every setting is a flag with an environment twin (flags win); -h lists
// them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/answerconf"
	"github.com/qaplatform/socketio/internal/demokb"
	"github.com/qaplatform/socketio/internal/envflag"
	"github.com/qaplatform/socketio/internal/redisurl"
)

type config struct {
	redisURL        string
	redisPrefix     string
	answerDelay     time.Duration
	claimAfter      time.Duration
	concurrency     int
	answerTimeout   time.Duration
	shutdownTimeout time.Duration
	name            string
	logLevel        string
}

func main() {
	if err := run(os.Args[1:], os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "qa-worker:", err)
		os.Exit(1)
	}
}

// parseConfig reads flags, falling back to their environment twins, which
// are qa-server's where the two share a setting.
func parseConfig(args []string, getenv func(string) string) (config, error) {
	var c config
	fs := flag.NewFlagSet("qa-worker", flag.ContinueOnError)
	env := &envflag.Env{Getenv: getenv}
	envStr, envInt, envDur := env.String, env.Int, env.Duration
	var errs []error
	fs.StringVar(&c.redisURL, "redis-url", envStr("REDIS_URL", ""), "the Redis the qa-server nodes share, in qa-server's -redis-url forms (required) (env REDIS_URL)")
	fs.StringVar(&c.redisPrefix, "redis-prefix", envStr("QA_REDIS_PREFIX", "qa:"), "prefix of every Redis key; the nodes' -redis-prefix (env QA_REDIS_PREFIX)")
	fs.DurationVar(&c.answerDelay, "answer-delay", envDur("QA_ANSWER_DELAY", 0), "pause before each streamed answer chunk of the demo knowledge base, to mimic a slow model (env QA_ANSWER_DELAY)")
	fs.DurationVar(&c.claimAfter, "claim-after", envDur("QA_CLAIM_AFTER", 30*time.Second), "how long a worker may be silent before its answers are taken over by another; the nodes' -claim-after (env QA_CLAIM_AFTER)")
	fs.IntVar(&c.concurrency, "concurrency", envInt("QA_WORKER_CONCURRENCY", 16), "answers this worker runs at once (env QA_WORKER_CONCURRENCY)")
	fs.DurationVar(&c.answerTimeout, "answer-timeout", envDur("QA_ANSWER_TIMEOUT", 2*time.Minute), "bound on one answer, and on the wait of a question in the queue (env QA_ANSWER_TIMEOUT)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", envDur("QA_SHUTDOWN_TIMEOUT", 10*time.Second), "how long answers in progress may finish on SIGTERM before they are handed to other workers (env QA_SHUTDOWN_TIMEOUT)")
	fs.StringVar(&c.name, "name", envStr("QA_WORKER_NAME", ""), "this worker's name in the queue, unique among live workers; default: host, pid and a random suffix (env QA_WORKER_NAME)")
	fs.StringVar(&c.logLevel, "log-level", envStr("QA_LOG_LEVEL", "info"), "debug, info, warn or error (env QA_LOG_LEVEL)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.redisURL == "" {
		errs = append(errs, errors.New("-redis-url is required: a worker answers the questions of the nodes' Redis queue"))
	}
	if c.concurrency <= 0 {
		errs = append(errs, errors.New("-concurrency must be 1 or more"))
	}
	errs = append(errs, env.Err())
	return c, errors.Join(errs...)
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

	w, closeAll, err := newWorker(cfg, getenv, logger)
	if err != nil {
		return err
	}
	logger.Info("qa-worker running", "name", w.Name(), "concurrency", cfg.concurrency)
	<-ctx.Done()
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	err = w.Close(sctx)
	closeAll()
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// newWorker connects to Redis and starts the worker; closeAll closes what
// it opened, after the worker.
func newWorker(cfg config, getenv func(string) string, logger *slog.Logger) (*socketio.Worker, func(), error) {
	kb, err := demokb.Load()
	if err != nil {
		return nil, nil, err
	}
	answerer, desc, err := answerconf.FromEnv(getenv, kb.Answerer(socketio.KBAnswererOptions{ChunkDelay: cfg.answerDelay}), logger)
	if err != nil {
		return nil, nil, err
	}
	rdb, err := redisurl.Connect(cfg.redisURL)
	if err != nil {
		return nil, nil, err
	}
	q := socketio.NewRedisQueue(rdb, socketio.RedisQueueOptions{Prefix: cfg.redisPrefix, ClaimAfter: cfg.claimAfter})
	w, err := socketio.NewWorker(socketio.WorkerOptions{
		Queue:         q,
		Answerer:      answerer,
		Concurrency:   cfg.concurrency,
		AnswerTimeout: cfg.answerTimeout,
		Name:          cfg.name,
		Logger:        logger,
	})
	if err != nil {
		rdb.Close()
		return nil, nil, err
	}
	logger.Info("answering with " + desc)
	return w, func() { rdb.Close() }, nil
}
