package main

// The answers mode: how answer throughput scales with qa-worker processes
// on the Redis queue, the latency the queue adds over the in-process pool,
// and the CPU each answer costs the node and the workers.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/qaplatform/socketio/internal/sioclient"
)

// Bounds of the answers mode.
const (
	maxWorkerProcs   = 8
	maxConcurrency   = 256
	maxOpenPerClient = 3 // the per-session limit of unfinished tasks
	drainTimeout     = 15 * time.Second
	startTimeout     = 20 * time.Second
	stopTimeout      = 15 * time.Second
	clockTicks       = 100 // sysconf(_SC_CLK_TCK) on Linux
)

// Questions the clients ask in turn: entries of the demo knowledge base
// with short answers, so that a streamed answer is a few chunks.
var loadQuestions = []string{
	"How many questions can be open at once?",
	"Can I run the service without Redis?",
	"What happens if I disconnect while a question is being answered?",
}

// answersConfig holds the flags of the answers mode.
type answersConfig struct {
	server, worker   string        // binaries
	redisURL         string        // loopback Redis
	answerDelay      time.Duration // -answer-delay of the node and the workers
	concurrency      int           // -concurrency of each worker
	workerCounts     []int         // throughput phases
	perClient        int           // open questions per client in the throughput phases
	stream           bool          // ask for streamed answers
	warmup           time.Duration // unmeasured start of every phase
	latencyClients   int
	latencyInterval  time.Duration // least time between two questions of a latency client
	latencyDuration  time.Duration // total over the latency rounds of both setups
	markdown         bool
	workerCountsFlag string
}

func (a answersConfig) validate() error {
	var errs []error
	if a.server == "" || a.worker == "" {
		errs = append(errs, errors.New("-mode answers needs -server and -worker (paths of qa-server and qa-worker)"))
	}
	if a.redisURL == "" {
		errs = append(errs, errors.New("-mode answers needs -redis-url"))
	} else if err := checkRedisLoopback(a.redisURL); err != nil {
		errs = append(errs, fmt.Errorf("-redis-url: %w", err))
	}
	if a.answerDelay < 0 || a.answerDelay > 10*time.Second {
		errs = append(errs, fmt.Errorf("-answer-delay %s: want 0 to 10s", a.answerDelay))
	}
	if a.concurrency < 1 || a.concurrency > maxConcurrency {
		errs = append(errs, fmt.Errorf("-concurrency %d: want 1 to %d", a.concurrency, maxConcurrency))
	}
	if len(a.workerCounts) == 0 {
		errs = append(errs, errors.New("-worker-counts: want at least one count"))
	}
	for _, n := range a.workerCounts {
		if n < 1 || n > maxWorkerProcs {
			errs = append(errs, fmt.Errorf("-worker-counts: %d: want 1 to %d", n, maxWorkerProcs))
		}
	}
	if a.perClient < 1 || a.perClient > maxOpenPerClient {
		errs = append(errs, fmt.Errorf("-open-per-client %d: want 1 to %d (the per-session limit)", a.perClient, maxOpenPerClient))
	}
	if a.latencyClients < 1 || a.latencyClients > maxClients {
		errs = append(errs, fmt.Errorf("-latency-clients %d: want 1 to %d", a.latencyClients, maxClients))
	}
	if a.latencyDuration < 0 || a.latencyDuration > maxDuration {
		errs = append(errs, fmt.Errorf("-latency-duration %s: want 0 to %s", a.latencyDuration, maxDuration))
	}
	if a.latencyInterval < 0 || a.latencyInterval > time.Minute {
		errs = append(errs, fmt.Errorf("-latency-interval %s: want 0 to 1m", a.latencyInterval))
	}
	if a.warmup < 0 || a.warmup > time.Minute {
		errs = append(errs, fmt.Errorf("-warmup %s: want 0 to 1m", a.warmup))
	}
	return errors.Join(errs...)
}

// parseCounts reads "1,2,3".
func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("-worker-counts %q: %w", s, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// checkRedisLoopback accepts only redis:// or rediss:// URLs of a single
// server on loopback.
func checkRedisLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return fmt.Errorf("%q: want a redis:// or rediss:// URL of one server", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%q: only a loopback Redis is allowed", raw)
}

// answersReport is the outcome of an answers run.
type answersReport struct {
	cfg        config
	phase      time.Duration // measured length of one throughput phase
	latPhase   time.Duration // of one latency phase
	throughput []*phaseResult
	baseline   phaseResult // in-process pool
	queued     phaseResult // node -workers 0 plus one qa-worker
	baseName   string      // what the baseline node is
	prefix     string      // of every Redis key of the run
	notes      []string
}

// phaseResult accumulates the rounds of one setup.
type phaseResult struct {
	workers  int // qa-worker processes; 0 for the in-process baseline
	stats    stats
	nodeCPU  time.Duration
	workCPU  time.Duration
	canceled int64 // questions cancelled at the end of a phase
	// samples are the latencies of stats.ok, kept exactly (up to
	// maxSamples): at a latency of 500 ms the histogram's buckets are
	// 8 ms wide, too coarse for a difference of a few ms.
	samples []time.Duration
}

// maxSamples bounds phaseResult.samples.
const maxSamples = 1 << 20

func (p *phaseResult) add(o phaseResult) {
	p.stats.add(o.stats)
	p.samples = append(p.samples, o.samples[:min(len(o.samples), maxSamples-len(p.samples))]...)
	p.nodeCPU += o.nodeCPU
	p.workCPU += o.workCPU
	p.canceled += o.canceled
}

// quantile is the exact q-quantile (0 < q ≤ 1) of the samples, by the
// nearest-rank method, or 0 without samples.
func (p *phaseResult) quantile(q float64) time.Duration {
	if len(p.samples) == 0 {
		return 0
	}
	s := slices.Clone(p.samples)
	slices.Sort(s)
	rank := max(int(math.Ceil(q*float64(len(s)))), 1)
	return s[rank-1]
}

// cpuPerAnswer is µs of CPU per answer, or -1 when nothing was answered.
func cpuPerAnswer(d time.Duration, answers int64) float64 {
	if answers == 0 {
		return -1
	}
	return float64(d) / float64(time.Microsecond) / float64(answers)
}

// runAnswers runs the answers mode. The throughput phases and the latency
// phases each split their duration evenly; ctx ending stops the run early,
// keeping what was measured.
func runAnswers(ctx context.Context, cfg config) (*answersReport, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a := cfg.answers
	rep := &answersReport{cfg: cfg}
	rep.phase = cfg.duration / time.Duration(cfg.rounds*len(a.workerCounts))
	latTotal := a.latencyDuration
	if latTotal == 0 {
		latTotal = cfg.duration
	}
	rep.latPhase = latTotal / time.Duration(2*cfg.rounds)

	serverFlags, err := binaryFlags(ctx, a.server)
	if err != nil {
		return nil, err
	}
	workerFlags, err := binaryFlags(ctx, a.worker)
	if err != nil {
		return nil, err
	}
	for _, f := range []string{"workers", "redis-url", "redis-prefix"} {
		if !serverFlags[f] {
			return nil, fmt.Errorf("%s has no -%s flag: not a qa-server with the Redis answer queue", a.server, f)
		}
	}
	for _, f := range []string{"redis-url", "redis-prefix", "concurrency"} {
		if !workerFlags[f] {
			return nil, fmt.Errorf("%s has no -%s flag: not a qa-worker", a.worker, f)
		}
	}

	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	base := "qaload:" + hex.EncodeToString(rnd[:]) + ":"
	rep.prefix = base
	defer func() {
		if err := cleanRedis(a.redisURL, base); err != nil {
			rep.notes = append(rep.notes, "cleaning up Redis keys "+base+"*: "+err.Error())
		}
	}()
	queuePrefix, memPrefix := base+"q:", base+"m:"

	env := childEnv()
	nodeArgs := func(prefix string) []string {
		args := []string{
			"-log-level", "warn",
			"-max-connections-per-ip", strconv.Itoa(4*max(cfg.clients, a.latencyClients) + 64),
			"-max-questions-per-minute", "1000000",
			"-max-questions-per-minute-per-ip", "1000000",
			"-answer-delay", a.answerDelay.String(),
		}
		if prefix != "" {
			args = append(args, "-redis-url", a.redisURL, "-redis-prefix", prefix)
			if serverFlags["cluster-key"] {
				args = append(args, "-cluster-key", prefix+"sio")
			}
		}
		return args
	}
	workerArgs := []string{"-redis-url", a.redisURL, "-redis-prefix", queuePrefix,
		"-concurrency", strconv.Itoa(a.concurrency), "-answer-delay", a.answerDelay.String()}
	if workerFlags["log-level"] {
		workerArgs = append(workerArgs, "-log-level", "warn")
	}
	if workerFlags["cluster-key"] {
		workerArgs = append(workerArgs, "-cluster-key", queuePrefix+"sio")
	}

	// The node of the queue: it answers nothing itself.
	qArgs := append(nodeArgs(queuePrefix), "-workers", "0")
	if serverFlags["queue"] {
		qArgs = append(qArgs, "-queue", "redis")
	}
	qNode, err := startNode(ctx, "qa-server -workers 0", a.server, qArgs, env)
	if err != nil {
		return nil, err
	}
	defer qNode.stop()

	pool := &workerPool{bin: a.worker, args: workerArgs, env: env}
	defer pool.stopAll()

	// Throughput: rounds of the worker counts, the order reversed on odd
	// rounds.
	byCount := map[int]*phaseResult{}
	for _, n := range a.workerCounts {
		if byCount[n] == nil {
			byCount[n] = &phaseResult{workers: n}
			rep.throughput = append(rep.throughput, byCount[n])
		}
	}
	tcfg := loadSpec{clients: cfg.clients, perClient: a.perClient, stream: a.stream,
		transport: cfg.transport, timeout: cfg.timeout, warmup: a.warmup, window: rep.phase}
	for round := range cfg.rounds {
		counts := append([]int(nil), a.workerCounts...)
		if round%2 == 1 {
			for i, j := 0, len(counts)-1; i < j; i, j = i+1, j-1 {
				counts[i], counts[j] = counts[j], counts[i]
			}
		}
		for _, n := range counts {
			if ctx.Err() != nil {
				return rep, nil
			}
			if err := pool.resize(ctx, n); err != nil {
				return nil, err
			}
			r, err := runPhase(ctx, qNode.url, tcfg, qNode, pool.procs)
			if err != nil && ctx.Err() != nil {
				return rep, nil
			}
			if err != nil {
				return nil, fmt.Errorf("%d workers: %w", n, err)
			}
			r.workers = n
			byCount[n].add(r)
		}
	}

	// Latency: the in-process pool against one worker behind the queue.
	if err := pool.resize(ctx, 1); err != nil {
		return nil, err
	}
	var bArgs []string
	if serverFlags["queue"] {
		bArgs = append(nodeArgs(memPrefix), "-queue", "memory")
		rep.baseName = "in-process pool, Redis storage"
	} else {
		bArgs = nodeArgs("")
		rep.baseName = "in-process pool, memory storage"
		rep.notes = append(rep.notes, a.server+" has no -queue flag: the baseline node keeps everything in memory, so the difference includes Redis storage, not only the queue")
	}
	bArgs = append(bArgs, "-workers", strconv.Itoa(a.concurrency))
	bNode, err := startNode(ctx, "qa-server (in-process)", a.server, bArgs, env)
	if err != nil {
		return nil, err
	}
	defer bNode.stop()
	rep.baseline.workers = 0
	rep.queued.workers = 1
	// One question, so that every answer has the same number of chunks.
	lcfg := loadSpec{clients: a.latencyClients, perClient: 1, question: loadQuestions[0], interval: a.latencyInterval, stream: a.stream,
		transport: cfg.transport, timeout: cfg.timeout, warmup: a.warmup, window: rep.latPhase}
	for round := range cfg.rounds {
		type setup struct {
			res   *phaseResult
			node  *process
			procs []*process
		}
		order := []setup{{&rep.baseline, bNode, nil}, {&rep.queued, qNode, pool.procs}}
		if round%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, s := range order {
			if ctx.Err() != nil {
				return rep, nil
			}
			r, err := runPhase(ctx, s.node.url, lcfg, s.node, s.procs)
			if err != nil && ctx.Err() != nil {
				return rep, nil
			}
			if err != nil {
				return nil, fmt.Errorf("latency (%s): %w", s.node.name, err)
			}
			s.res.add(r)
		}
	}
	return rep, nil
}

// loadSpec is what one phase asks of its clients.
type loadSpec struct {
	clients, perClient int
	question           string        // asked every time; empty: loadQuestions in turn
	interval           time.Duration // least time between two questions of a client
	stream             bool
	transport          string
	timeout            time.Duration
	warmup, window     time.Duration
}

// runPhase connects the clients to u, has them ask questions for
// warmup+window, counting the answers that arrive in the window and the
// CPU node and procs use in it, then cancels the questions still open and
// waits for them to end.
func runPhase(ctx context.Context, u string, spec loadSpec, node *process, procs []*process) (phaseResult, error) {
	var res phaseResult
	clients := make([]*sioclient.Client, spec.clients)
	dialErrs := make([]error, spec.clients)
	var wg sync.WaitGroup
	for i := range clients {
		spawn(&wg, func() {
			clients[i], dialErrs[i] = sioclient.Dial(ctx, sioclient.Options{URL: u, Transport: spec.transport, Timeout: spec.timeout})
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
	connected := 0
	for i, err := range dialErrs {
		if err != nil {
			res.stats.fail(err)
			clients[i] = nil
			continue
		}
		connected++
	}
	if connected == 0 {
		return res, fmt.Errorf("no client could connect: %w", dialErrs[0])
	}

	start := time.Now()
	w0, w1 := start.Add(spec.warmup), start.Add(spec.warmup+spec.window)
	all := append([]*process{node}, procs...)
	cpu0 := make([]time.Duration, len(all))
	cpu1 := make([]time.Duration, len(all))
	var cpuErr error
	var cpuWG sync.WaitGroup
	spawn(&cpuWG, func() {
		sample := func(at time.Time, into []time.Duration) bool {
			t := time.NewTimer(time.Until(at))
			defer t.Stop()
			select {
			case <-ctx.Done():
				return false
			case <-t.C:
			}
			for i, p := range all {
				d, err := procCPU(p.pid())
				if err != nil && cpuErr == nil {
					cpuErr = fmt.Errorf("%s: %w", p.name, err)
				}
				into[i] = d
			}
			return true
		}
		if sample(w0, cpu0) {
			sample(w1, cpu1)
		}
	})

	per := make([]phaseResult, len(clients))
	for i, c := range clients {
		if c == nil {
			continue
		}
		spawn(&wg, func() { per[i] = ask(ctx, c, spec, w0, w1, i) })
	}
	wg.Wait()
	cpuWG.Wait()
	for i := range per {
		res.add(per[i])
	}
	res.stats.elapsed = spec.window
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if cpuErr != nil {
		return res, cpuErr
	}
	res.nodeCPU = cpu1[0] - cpu0[0]
	for i := 1; i < len(all); i++ {
		res.workCPU += cpu1[i] - cpu0[i]
	}
	for _, p := range all {
		if err := p.exited(); err != nil {
			return res, err
		}
	}
	return res, nil
}

// ask is one client of a phase: it keeps spec.perClient questions open
// until w1, counts the answers that arrive between w0 and w1 and their
// latency (from sending ask_question to receiving answer), then cancels
// what is still open and waits for those to end.
func ask(ctx context.Context, c *sioclient.Client, spec loadSpec, w0, w1 time.Time, id int) phaseResult {
	var r phaseResult
	open := map[string]time.Time{} // task_id → when ask_question was sent
	n := id
	var backoff time.Time // no asking before: after a refusal, or spec.interval
	for ctx.Err() == nil {
		now := time.Now()
		if !now.Before(w1) {
			break
		}
		for len(open) < spec.perClient && now.Before(w1) && !now.Before(backoff) {
			q := spec.question
			if q == "" {
				q = loadQuestions[n%len(loadQuestions)]
			}
			n++
			rctx, cancel := context.WithTimeout(ctx, spec.timeout)
			t0 := time.Now()
			reply, err := c.EmitWithAck(rctx, "ask_question", map[string]any{"question": q, "stream": spec.stream})
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					r.stats.fail(fmt.Errorf("ask_question: %w", err))
				}
				select {
				case <-c.Done():
					return r
				default:
				}
				break
			}
			taskID, retry, err := askReply(reply)
			if err != nil {
				r.stats.fail(err)
				backoff = time.Now().Add(min(max(retry, 10*time.Millisecond), time.Second))
				break
			}
			open[taskID] = t0
			if spec.interval > 0 {
				backoff = t0.Add(spec.interval)
			}
			now = time.Now()
		}
		// Wait for an event, but not past the end of the window or the
		// back-off while there is room to ask.
		until := now.Add(spec.timeout)
		if len(open) < spec.perClient && backoff.After(now) {
			until = backoff
		}
		if w1.Before(until) {
			until = w1
		}
		if len(open) == 0 && !until.After(now) {
			continue
		}
		r.receive(ctx, c, open, until, w0, w1)
	}
	if ctx.Err() != nil || len(open) == 0 {
		return r
	}
	// Drain: cancel what is still open, so that the next phase does not
	// find this one's backlog in the queue, and wait for the ends.
	for taskID := range open {
		rctx, cancel := context.WithTimeout(ctx, spec.timeout)
		_, err := c.EmitWithAck(rctx, "cancel_task", map[string]any{"task_id": taskID})
		cancel()
		if err != nil {
			break
		}
		r.canceled++
	}
	deadline := time.Now().Add(drainTimeout)
	for len(open) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		r.receive(ctx, c, open, deadline, w0, w1)
		select {
		case <-c.Done():
			return r
		default:
		}
	}
	return r
}

// receive handles the next event, waiting until at most until.
func (r *phaseResult) receive(ctx context.Context, c *sioclient.Client, open map[string]time.Time, until, w0, w1 time.Time) {
	ectx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	ev, err := c.NextAny(ectx)
	at := time.Now()
	if err != nil {
		select {
		case <-c.Done():
			if ctx.Err() == nil && len(open) > 0 {
				r.stats.fail(fmt.Errorf("connection lost with %d questions open: %w", len(open), c.Err()))
				clear(open)
			}
		default:
		}
		return
	}
	var m map[string]any
	if len(ev.Args) > 0 {
		m, _ = ev.Args[0].(map[string]any)
	}
	taskID, _ := m["task_id"].(string)
	switch ev.Name {
	case "answer":
		t0, ok := open[taskID]
		if !ok {
			return
		}
		delete(open, taskID)
		if !at.Before(w0) && !at.After(w1) {
			r.stats.ok++
			r.stats.hist.record(at.Sub(t0))
			if len(r.samples) < maxSamples {
				r.samples = append(r.samples, at.Sub(t0))
			}
		}
	case "answer_error":
		if _, ok := open[taskID]; !ok {
			return
		}
		delete(open, taskID)
		if code, _ := m["code"].(string); code != "cancelled" || at.Before(w1) {
			r.stats.fail(fmt.Errorf("answer_error: %v", m))
		}
	case "error":
		r.stats.fail(fmt.Errorf("error event: %v", m))
	}
}

// askReply reads the ack of ask_question: the task id, or the error and
// its retry_after_ms.
func askReply(reply []any) (string, time.Duration, error) {
	if len(reply) != 1 {
		return "", 0, fmt.Errorf("ask_question: %d reply arguments", len(reply))
	}
	m, _ := reply[0].(map[string]any)
	if m["ok"] != true {
		var retry time.Duration
		if e, ok := m["error"].(map[string]any); ok {
			if ms, ok := e["retry_after_ms"].(float64); ok {
				retry = time.Duration(ms * float64(time.Millisecond))
			}
		}
		return "", retry, fmt.Errorf("ask_question: %v", reply[0])
	}
	id, _ := m["task_id"].(string)
	if id == "" {
		return "", 0, fmt.Errorf("ask_question: no task_id in %v", reply[0])
	}
	return id, 0, nil
}

// process is a child process: a node or a worker.
type process struct {
	name string
	url  string // of a node
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{}
	err  error // of Wait, once done is closed
	once sync.Once
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited returns an error when the process has ended.
func (p *process) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v): %s", p.name, p.err, p.out.String())
	default:
		return nil
	}
}

// stop sends SIGTERM, and SIGKILL after stopTimeout, and waits for the end.
func (p *process) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(stopTimeout)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

func startProcess(name, bin string, args, env []string) (*process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	out := &tailBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	// The children die with this process, whatever ends it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// startNode starts a qa-server on a free loopback port and waits until its
// /readyz answers 200.
func startNode(ctx context.Context, name, bin string, args, env []string) (*process, error) {
	for attempt := 0; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		addr := ln.Addr().String()
		ln.Close()
		p, err := startProcess(name, bin, append([]string{"-addr", addr}, args...), env)
		if err != nil {
			return nil, err
		}
		p.url = "http://" + addr
		err = waitReady(ctx, p)
		if err == nil {
			return p, nil
		}
		p.stop()
		// Another process may have taken the port between Close and the
		// child's Listen: try another one, a few times.
		if attempt < 2 && strings.Contains(p.out.String(), "address already in use") {
			continue
		}
		return nil, err
	}
}

func waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-p.done:
			t.Stop()
			return p.exited()
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s at %s: not ready after %s: %s", p.name, p.url, startTimeout, p.out.String())
		case <-t.C:
		}
	}
}

// workerPool holds the running qa-worker processes.
type workerPool struct {
	bin   string
	args  []string
	env   []string
	procs []*process
	seq   int
}

// resize starts or stops workers until n run. A new worker gets a moment
// to connect; the warm-up of the phase covers the rest.
func (w *workerPool) resize(ctx context.Context, n int) error {
	for len(w.procs) > n {
		last := w.procs[len(w.procs)-1]
		w.procs = w.procs[:len(w.procs)-1]
		last.stop()
	}
	started := false
	for len(w.procs) < n {
		w.seq++
		p, err := startProcess(fmt.Sprintf("qa-worker #%d", w.seq), w.bin, w.args, w.env)
		if err != nil {
			return err
		}
		w.procs = append(w.procs, p)
		started = true
	}
	if started {
		t := time.NewTimer(300 * time.Millisecond)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	for _, p := range w.procs {
		if err := p.exited(); err != nil {
			return err
		}
	}
	return nil
}

func (w *workerPool) stopAll() {
	var wg sync.WaitGroup
	for _, p := range w.procs {
		spawn(&wg, p.stop)
	}
	wg.Wait()
	w.procs = nil
}

// childEnv is this process's environment without the variables qa-server
// and qa-worker read (REDIS_URL, QA_*): their flags alone configure them.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "QA_") || strings.HasPrefix(kv, "REDIS_URL=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

var flagLine = regexp.MustCompile(`(?m)^\s+-([A-Za-z0-9][A-Za-z0-9_.-]*)`)

// binaryFlags runs bin -h and returns the names of the flags it lists.
func binaryFlags(ctx context.Context, bin string) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-h")
	cmd.Env = childEnv()
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		return nil, fmt.Errorf("%s -h: %w", bin, err)
	}
	flags := map[string]bool{}
	for _, m := range flagLine.FindAllSubmatch(out, -1) {
		flags[string(m[1])] = true
	}
	if len(flags) == 0 {
		return nil, fmt.Errorf("%s -h lists no flags: %s", bin, bytes.TrimSpace(out))
	}
	return flags, nil
}

// procCPU is the user plus system CPU time of process pid so far, from
// /proc/<pid>/stat (Linux only), in steps of 1/clockTicks s.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("reading CPU time (Linux only): %w", err)
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime, fields 14 and 15 of /proc/<pid>/stat.
// The command name (field 2) is in parentheses and may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc stat format")
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// cleanRedis deletes the keys under prefix.
func cleanRedis(rawURL, prefix string) error {
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := rdb.Unlink(ctx, batch...).Err()
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	return flush()
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}

// write prints the report as aligned text, or as markdown tables with
// cfg.answers.markdown.
func (r *answersReport) write(w io.Writer) error {
	c, a := r.cfg, r.cfg.answers
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "qa-load answers: answer delay %s, streamed %t, %s\n", a.answerDelay, a.stream, c.transport)
	fmt.Fprintf(bw, "throughput: %d clients × %d open questions, workers of -concurrency %d, %d round(s) of %s (+%s warm-up) per worker count\n",
		c.clients, a.perClient, a.concurrency, c.rounds, r.phase.Round(time.Millisecond), a.warmup)
	var one float64
	for _, p := range r.throughput {
		if p.workers == 1 {
			one = p.stats.rate()
		}
	}
	ratio := func(p *phaseResult) string {
		if one <= 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f×", p.stats.rate()/one)
	}
	tput := [][]string{{"workers", "answers", "answers/s", "ratio to 1", "node CPU µs/answer", "worker CPU µs/answer", "errors"}}
	for _, p := range r.throughput {
		s := &p.stats
		tput = append(tput, []string{strconv.Itoa(p.workers), strconv.FormatInt(s.ok, 10), fmt.Sprintf("%.1f", s.rate()), ratio(p),
			fmtCPU(cpuPerAnswer(p.nodeCPU, s.ok)), fmtCPU(cpuPerAnswer(p.workCPU, s.ok)), strconv.FormatInt(s.errors, 10)})
	}
	if err := writeTable(bw, tput, a.markdown); err != nil {
		return err
	}
	pace := ""
	if a.latencyInterval > 0 {
		pace = fmt.Sprintf(" at most every %s", a.latencyInterval)
	}
	fmt.Fprintf(bw, "\nlatency (ask_question sent to answer received): %d clients × 1 open question%s, %d round(s) of %s (+%s warm-up) per setup, alternating\n",
		a.latencyClients, pace, c.rounds, r.latPhase.Round(time.Millisecond), a.warmup)
	lat := [][]string{{"setup", "answers", "p50", "p90", "p99", "node CPU µs/answer", "worker CPU µs/answer", "errors"}}
	for _, row := range []struct {
		name string
		p    *phaseResult
	}{{r.baseName, &r.baseline}, {"node -workers 0 + 1 qa-worker (Redis queue)", &r.queued}} {
		s := &row.p.stats
		workerCPU := "-"
		if row.p.workers > 0 {
			workerCPU = fmtCPU(cpuPerAnswer(row.p.workCPU, s.ok))
		}
		lat = append(lat, []string{row.name, strconv.FormatInt(s.ok, 10),
			fmtLatency(row.p.quantile(0.5)), fmtLatency(row.p.quantile(0.9)), fmtLatency(row.p.quantile(0.99)),
			fmtCPU(cpuPerAnswer(row.p.nodeCPU, s.ok)), workerCPU, strconv.FormatInt(s.errors, 10)})
	}
	if err := writeTable(bw, lat, a.markdown); err != nil {
		return err
	}
	b, q := &r.baseline, &r.queued
	if len(b.samples) > 0 && len(q.samples) > 0 {
		fmt.Fprintf(bw, "\nqueue adds: p50 %s, p99 %s\n", fmtDelta(q.quantile(0.5)-b.quantile(0.5)), fmtDelta(q.quantile(0.99)-b.quantile(0.99)))
	} else {
		fmt.Fprintln(bw, "\nqueue adds: n/a (no answers in one of the setups)")
	}
	for _, p := range append(append([]*phaseResult(nil), r.throughput...), &r.baseline, &r.queued) {
		if p.stats.firstErr != nil {
			fmt.Fprintf(bw, "first error (%d workers): %v\n", p.workers, p.stats.firstErr)
		}
	}
	for _, n := range r.notes {
		fmt.Fprintln(bw, "note:", n)
	}
	return bw.Flush()
}

// writeTable prints rows, the first being the header, aligned or as a
// markdown table.
func writeTable(w io.Writer, rows [][]string, markdown bool) error {
	if markdown {
		fmt.Fprintln(w)
		for i, row := range rows {
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
			if i == 0 {
				fmt.Fprintf(w, "|%s\n", strings.Repeat(" --- |", len(row)))
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, row := range rows {
		fmt.Fprintf(tw, "%s\t\n", strings.Join(row, "\t"))
	}
	return tw.Flush()
}

func fmtCPU(us float64) string {
	if us < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f", us)
}

func fmtDelta(d time.Duration) string {
	if d < 0 {
		return "-" + fmtLatency(-d)
	}
	return "+" + fmtLatency(d)
}
