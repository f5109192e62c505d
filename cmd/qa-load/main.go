// Command qa-load measures the round-trip cost of the Q&A service against a
// bare Socket.IO handler. N clients each loop get_history requests with an
// ack; the tool reports requests per second, latency percentiles and errors
// for both servers, and the ratio of their rates.
//
//	go run ./cmd/qa-load                  # both servers in-process
//	go run ./cmd/qa-load -clients 20 -duration 30s -transport polling
//	go run ./cmd/qa-load -target http://127.0.0.1:8080
//
// Without -target it starts, on loopback ports, a bare
// github.com/zishang520/socket.io/v2 server whose only handler acks
// get_history with an empty page, and the library with all its built-in
// hooks and limits no client reaches. With -target it loads that library
// server instead (its per-address connection limit must allow -clients),
// and compares it with -bare-target, or with the in-process bare server.
// The two are measured in alternating rounds, so that a change of machine
// load during the run weighs on both. Only loopback targets are accepted.
//
// Compare the two rows of one run; the absolute rates depend on the machine,
// and the clients share its CPUs with in-process servers.
//
// # Answers mode
//
//	go build -o /tmp/qa-server ./cmd/qa-server && go build -o /tmp/qa-worker ./cmd/qa-worker
//	go run ./cmd/qa-load -mode answers -server /tmp/qa-server -worker /tmp/qa-worker \
//		-redis-url redis://127.0.0.1:6379 -answer-delay 50ms -clients 50 -duration 20s
//
// -mode answers measures the durable answer queue on Redis Streams with
// the real binaries as child processes, on a fresh key prefix that it
// deletes at the end:
//
//   - throughput: one qa-server -workers 0 node, and 1, then 2, then 3
//     (-worker-counts) qa-worker processes of -concurrency each; -clients
//     clients keep -open-per-client questions open each, more than the
//     workers can answer at once, so that worker capacity is the bottleneck.
//     It reports answers per second per worker count, and their ratio to
//     one worker. -duration is split over the worker counts and rounds.
//   - latency: the time from sending ask_question to receiving answer, p50
//     and p99, with a light load (-latency-clients, one open question each),
//     for a node with the in-process pool (-queue memory on Redis storage
//     when qa-server has that flag, else a node without Redis) and for the
//     node -workers 0 with one qa-worker; the two are measured in
//     alternating rounds. It reports what the queue adds. -latency-interval
//     paces the clients when answers are fast (-stream=false, or no delay).
//   - CPU: user plus system time per answer of the node and of the workers,
//     read from /proc/<pid>/stat (Linux only, in 10 ms ticks), over the
//     measured window; it includes what the processes do besides answering
//     (polling Redis, timers), which weighs more the fewer answers per second.
//
// Every phase starts with -warmup, not measured; at its end the open
// questions are cancelled and their ends awaited, so that no backlog
// carries over. Only a loopback Redis is accepted. -markdown prints the
// tables as markdown.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/bits"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/baresrv"
	"github.com/qaplatform/socketio/internal/sioclient"
)

// Bounds on what one run may ask for.
const (
	maxClients  = 1000
	maxDuration = 10 * time.Minute
	maxRounds   = 10
)

type config struct {
	clients    int
	duration   time.Duration // in total, over all rounds and both targets
	rounds     int
	transport  string
	timeout    time.Duration // per request and per dial
	target     string        // library server; empty: in-process
	bareTarget string        // bare server; empty: in-process
	mode       string        // modeHistory or modeAnswers
	answers    answersConfig // of modeAnswers
}

// Modes of the tool.
const (
	modeHistory = "history" // get_history round trips, library against bare
	modeAnswers = "answers" // answers through the Redis queue: see answers.go
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "qa-load:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.mode == modeAnswers {
		rep, err := runAnswers(ctx, cfg)
		if err != nil {
			return err
		}
		return rep.write(stdout)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rep, err := compare(ctx, cfg, logger)
	if err != nil {
		return err
	}
	return rep.write(stdout)
}

func parseConfig(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("qa-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.clients, "clients", 50, fmt.Sprintf("concurrent clients per target; in answers mode, of the throughput phases (1-%d)", maxClients))
	fs.DurationVar(&c.duration, "duration", 10*time.Second, fmt.Sprintf("total measuring time, split evenly over the rounds of both targets; in answers mode, over the throughput phases (worker counts × rounds) (at most %s)", maxDuration))
	fs.IntVar(&c.rounds, "rounds", 3, fmt.Sprintf("alternating rounds per target; in answers mode, per worker count and per latency setup (1-%d)", maxRounds))
	fs.StringVar(&c.transport, "transport", sioclient.TransportWebsocket, "websocket or polling")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Second, "bound on each request and each connect")
	fs.StringVar(&c.target, "target", "", "URL of a library server on loopback; empty starts one in-process")
	fs.StringVar(&c.bareTarget, "bare-target", "", "URL of a bare server on loopback; empty starts one in-process")
	fs.StringVar(&c.mode, "mode", modeHistory, "history: get_history round trips, library against bare; answers: answer throughput and latency through the Redis queue, with the qa-server and qa-worker binaries (Linux only)")
	a := &c.answers
	fs.StringVar(&a.server, "server", "", "answers mode: path of the qa-server binary")
	fs.StringVar(&a.worker, "worker", "", "answers mode: path of the qa-worker binary")
	fs.StringVar(&a.redisURL, "redis-url", "", "answers mode: redis:// URL of a Redis on loopback; the run uses keys of a fresh prefix and deletes them at the end")
	fs.DurationVar(&a.answerDelay, "answer-delay", 50*time.Millisecond, "answers mode: -answer-delay of the node and the workers")
	fs.IntVar(&a.concurrency, "concurrency", 8, fmt.Sprintf("answers mode: -concurrency of each qa-worker, and -workers of the in-process baseline node (1-%d)", maxConcurrency))
	fs.StringVar(&a.workerCountsFlag, "worker-counts", "1,2,3", fmt.Sprintf("answers mode: qa-worker processes of the throughput phases, comma-separated (each 1-%d)", maxWorkerProcs))
	fs.IntVar(&a.perClient, "open-per-client", maxOpenPerClient, fmt.Sprintf("answers mode: questions each throughput client keeps open (1-%d, the per-session limit)", maxOpenPerClient))
	fs.BoolVar(&a.stream, "stream", true, "answers mode: ask for streamed answers (the demo answerer pauses -answer-delay before each chunk)")
	fs.DurationVar(&a.warmup, "warmup", time.Second, "answers mode: unmeasured start of every phase (at most 1m)")
	fs.IntVar(&a.latencyClients, "latency-clients", 4, fmt.Sprintf("answers mode: clients of the latency phases, one open question each; keep it below -concurrency (1-%d)", maxClients))
	fs.DurationVar(&a.latencyInterval, "latency-interval", 0, "answers mode: least time between two questions of a latency client, to keep the load light when answers are fast; 0: ask again as soon as the answer came (at most 1m)")
	fs.DurationVar(&a.latencyDuration, "latency-duration", 0, "answers mode: total measuring time of the latency phases; 0: as -duration")
	fs.BoolVar(&a.markdown, "markdown", false, "answers mode: print markdown tables")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.mode == modeAnswers {
		var err error
		if a.workerCounts, err = parseCounts(a.workerCountsFlag); err != nil {
			return c, err
		}
	}
	return c, c.validate()
}

func (c config) validate() error {
	var errs []error
	if c.clients < 1 || c.clients > maxClients {
		errs = append(errs, fmt.Errorf("-clients %d: want 1 to %d", c.clients, maxClients))
	}
	if c.rounds < 1 || c.rounds > maxRounds {
		errs = append(errs, fmt.Errorf("-rounds %d: want 1 to %d", c.rounds, maxRounds))
	}
	if c.duration <= 0 || c.duration > maxDuration {
		errs = append(errs, fmt.Errorf("-duration %s: want more than 0 and at most %s", c.duration, maxDuration))
	}
	if c.timeout <= 0 {
		errs = append(errs, fmt.Errorf("-timeout %s: want more than 0", c.timeout))
	}
	if c.transport != sioclient.TransportWebsocket && c.transport != sioclient.TransportPolling {
		errs = append(errs, fmt.Errorf("-transport %q: want websocket or polling", c.transport))
	}
	switch c.mode {
	case "", modeHistory:
	case modeAnswers:
		if c.target != "" || c.bareTarget != "" {
			errs = append(errs, errors.New("-target and -bare-target are for -mode history"))
		}
		if err := c.answers.validate(); err != nil {
			errs = append(errs, err)
		}
	default:
		errs = append(errs, fmt.Errorf("-mode %q: want history or answers", c.mode))
	}
	for _, f := range []struct{ name, url string }{{"-target", c.target}, {"-bare-target", c.bareTarget}} {
		if f.url == "" {
			continue
		}
		if err := checkLoopback(f.url); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.name, err))
		}
	}
	return errors.Join(errs...)
}

// checkLoopback accepts only http(s) or ws(s) URLs whose host is "localhost"
// or a loopback address: the tool is not for loading other machines.
func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	switch u.Scheme {
	case "http", "https", "ws", "wss":
	default:
		return fmt.Errorf("%q: want an http, https, ws or wss URL", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%q: only loopback targets are allowed", raw)
}

// report is the outcome of a run.
type report struct {
	cfg     config
	bare    target
	library target
}

type target struct {
	name  string
	url   string
	stats stats
}

// compare measures the bare and the library server in alternating rounds.
// It stops early, keeping what was measured, when ctx ends.
func compare(ctx context.Context, cfg config, logger *slog.Logger) (*report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rep := &report{cfg: cfg, bare: target{name: "bare", url: cfg.bareTarget}, library: target{name: "library", url: cfg.target}}
	if rep.bare.url == "" {
		h, closeBare := baresrv.New()
		u, stopHTTP, err := serveLoopback(h)
		if err != nil {
			closeBare()
			return nil, err
		}
		defer func() { closeBare(); stopHTTP() }()
		rep.bare.url = u
	}
	if rep.library.url == "" {
		h, closeLib, err := newLibrary(cfg.clients, logger)
		if err != nil {
			return nil, err
		}
		u, stopHTTP, err := serveLoopback(h)
		if err != nil {
			closeLib()
			return nil, err
		}
		defer func() { closeLib(); stopHTTP() }()
		rep.library.url = u
	}

	phase := cfg.duration / time.Duration(2*cfg.rounds)
	for round := range cfg.rounds {
		order := []*target{&rep.bare, &rep.library}
		if round%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, t := range order {
			if ctx.Err() != nil {
				return rep, nil
			}
			s, err := measure(ctx, t.url, cfg, phase)
			if err != nil && ctx.Err() != nil {
				return rep, nil
			}
			if err != nil {
				return nil, fmt.Errorf("%s (%s): %w", t.name, t.url, err)
			}
			t.stats.add(s)
		}
	}
	return rep, nil
}

// newLibrary builds the library server: all built-in hooks, the default
// MemoryStorage, and connection and question limits no run reaches
// (get_history is not rate limited anyway).
func newLibrary(clients int, logger *slog.Logger) (http.Handler, func(), error) {
	auth, err := socketio.NewAuth(socketio.AuthOptions{
		// Room for the clients of one phase while those of the previous
		// one are still being released.
		MaxConnectionsPerIP:        4*clients + 64,
		MaxQuestionsPerMinute:      1_000_000,
		MaxQuestionsPerMinutePerIP: 1_000_000,
		Logger:                     logger,
	})
	if err != nil {
		return nil, nil, err
	}
	sio := socket.NewServer(nil, nil)
	qa, err := socketio.Register(sio, socketio.Options{Auth: auth, Logger: logger})
	if err != nil {
		auth.Close()
		return nil, nil, err
	}
	return qa.Handler(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := qa.Close(ctx); err != nil {
			logger.Warn("qa-load: closing the library server", "err", err)
		}
		sio.Close(nil)
		_ = auth.Close()
	}, nil
}

// serveLoopback serves h at /socket.io/ on a free loopback port.
func serveLoopback(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	return "http://" + ln.Addr().String(), func() {
		_ = srv.Close()
		<-done
	}, nil
}

// measure connects cfg.clients clients to u, then has each loop get_history
// requests for d, and closes them. Connecting is not measured. A client
// whose connection fails stops; it is an error, as is a reply that is not
// ok:true. It is an error only when no client could connect.
func measure(ctx context.Context, u string, cfg config, d time.Duration) (stats, error) {
	clients := make([]*sioclient.Client, cfg.clients)
	dialErrs := make([]error, cfg.clients)
	var wg sync.WaitGroup
	for i := range clients {
		spawn(&wg, func() {
			clients[i], dialErrs[i] = sioclient.Dial(ctx, sioclient.Options{URL: u, Transport: cfg.transport, Timeout: cfg.timeout})
		})
	}
	wg.Wait()
	defer func() {
		var cw sync.WaitGroup
		for _, c := range clients {
			if c != nil {
				spawn(&cw, func() { _ = c.Close() })
			}
		}
		cw.Wait()
	}()

	var total stats
	connected := 0
	for i, err := range dialErrs {
		if err != nil {
			total.fail(err)
			clients[i] = nil
			continue
		}
		connected++
	}
	if connected == 0 {
		return total, fmt.Errorf("no client could connect: %w", dialErrs[0])
	}

	per := make([]stats, len(clients))
	start := time.Now()
	deadline := start.Add(d)
	for i, c := range clients {
		if c == nil {
			continue
		}
		spawn(&wg, func() { per[i] = load(ctx, c, deadline, cfg.timeout) })
	}
	wg.Wait()
	total.elapsed = time.Since(start)
	for i := range per {
		total.add(per[i])
	}
	return total, nil
}

// load runs one client's requests until deadline or until ctx ends.
func load(ctx context.Context, c *sioclient.Client, deadline time.Time, timeout time.Duration) stats {
	var s stats
	payload := map[string]any{}
	for time.Now().Before(deadline) && ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		t0 := time.Now()
		reply, err := c.EmitWithAck(rctx, "get_history", payload)
		lat := time.Since(t0)
		cancel()
		switch {
		case err != nil && ctx.Err() != nil:
			return s // interrupted, not failed
		case err != nil:
			s.fail(err)
			select {
			case <-c.Done():
				return s // the connection is gone; do not spin on it
			default:
			}
		case len(reply) != 1:
			s.fail(fmt.Errorf("get_history: %d reply arguments", len(reply)))
		default:
			if m, _ := reply[0].(map[string]any); m["ok"] != true {
				s.fail(fmt.Errorf("get_history: %v", reply[0]))
				continue
			}
			s.ok++
			s.hist.record(lat)
		}
	}
	return s
}

// stats counts one target's requests.
type stats struct {
	ok, errors int64
	firstErr   error
	elapsed    time.Duration // measured time, summed over phases
	hist       histogram     // latencies of successful requests
}

func (s *stats) fail(err error) {
	s.errors++
	if s.firstErr == nil {
		s.firstErr = err
	}
}

func (s *stats) add(o stats) {
	s.ok += o.ok
	s.errors += o.errors
	if s.firstErr == nil {
		s.firstErr = o.firstErr
	}
	s.elapsed += o.elapsed
	s.hist.merge(&o.hist)
}

func (s *stats) rate() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.ok) / s.elapsed.Seconds()
}

// histogram counts durations in logarithmic buckets: 2^histSubBits buckets
// per power of two, so a percentile is off by at most 1/2^histSubBits
// (about 3%), in bounded memory however long the run.
type histogram struct {
	counts [64 << histSubBits]int64
	total  int64
}

const histSubBits = 5

func histBucket(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < 1<<histSubBits {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1
	return (shift+1)<<histSubBits | int(v>>shift&(1<<histSubBits-1))
}

// histValue is the middle of bucket i.
func histValue(i int) time.Duration {
	if i < 2<<histSubBits {
		return time.Duration(i)
	}
	shift := i>>histSubBits - 1
	low := uint64(1<<histSubBits|i&(1<<histSubBits-1)) << shift
	return time.Duration(low + uint64(1)<<shift/2)
}

func (h *histogram) record(d time.Duration) {
	h.counts[histBucket(d)]++
	h.total++
}

func (h *histogram) merge(o *histogram) {
	for i, n := range o.counts {
		h.counts[i] += n
	}
	h.total += o.total
}

// quantile returns the q-quantile (0 < q ≤ 1), or 0 when nothing was
// recorded.
func (h *histogram) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := max(int64(math.Ceil(q*float64(h.total))), 1)
	var seen int64
	for i, n := range h.counts {
		seen += n
		if seen >= rank {
			return histValue(i)
		}
	}
	return histValue(len(h.counts) - 1)
}

func (r *report) write(w io.Writer) error {
	c := r.cfg
	fmt.Fprintf(w, "qa-load: %d clients, %s, %d rounds of %s per target\n",
		c.clients, c.transport, c.rounds, (c.duration / time.Duration(2*c.rounds)).Round(time.Millisecond))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\turl\trequests\trequests/s\tp50\tp90\tp99\terrors\t")
	for _, t := range []*target{&r.bare, &r.library} {
		s := &t.stats
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%s\t%s\t%s\t%d\t\n", t.name, t.url, s.ok, s.rate(),
			fmtLatency(s.hist.quantile(0.50)), fmtLatency(s.hist.quantile(0.90)), fmtLatency(s.hist.quantile(0.99)), s.errors)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, t := range []*target{&r.bare, &r.library} {
		if t.stats.firstErr != nil {
			fmt.Fprintf(w, "first %s error: %v\n", t.name, t.stats.firstErr)
		}
	}
	if b := r.bare.stats.rate(); b > 0 {
		_, err := fmt.Fprintf(w, "ratio library/bare: %.2f×\n", r.library.stats.rate()/b)
		return err
	}
	_, err := fmt.Fprintln(w, "ratio library/bare: n/a (no bare requests)")
	return err
}

func fmtLatency(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	}
}

// spawn runs f in a goroutine counted by wg (sync.WaitGroup.Go needs Go
// 1.25; this module supports 1.24).
func spawn(wg *sync.WaitGroup, f func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		f()
	}()
}
