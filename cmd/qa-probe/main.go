// Command qa-probe runs hostile clients against a qa-server and reports the
// server's memory: the attacks of issue 8 (oversized websocket messages,
// clients that never read, blind pongs), each against a fresh server
// process it starts and watches.
//
//	go build -o /tmp/qa-server ./cmd/qa-server
//	go run ./cmd/qa-probe -server /tmp/qa-server
//	go run ./cmd/qa-probe -server /tmp/qa-server -scenarios never-read -duration 60s
//
// For each scenario it starts the server on a free loopback port (with
// question limits no feeder reaches), connects feeder clients that ask
// questions in a room as fast as their replies come, samples the server's
// resident memory (VmRSS in /proc) every 100 ms, runs the attack, and
// prints the idle resident memory before the attack, the peak and the last
// sample, the peak as a ratio of the idle figure, and whether the server
// closed the attacking connection. Compare servers built from two
// revisions in the same run of the machine: the absolute figures depend on
// it. Linux only (it reads /proc).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/gorilla/websocket"

	"github.com/qaplatform/socketio/internal/sioclient"
)

const room = "probe"

var scenarios = map[string]func(ctx context.Context, p *probe) (closed bool, err error){
	"frame-100mb":        attackFrames(1, 100<<20),
	"frames-8x50mb":      attackFrames(8, 50<<20),
	"never-read":         attackNeverRead(false),
	"blind-pong-ws":      attackNeverRead(true),
	"blind-pong-polling": attackBlindPongPolling,
}

var order = []string{"frame-100mb", "frames-8x50mb", "never-read", "blind-pong-ws", "blind-pong-polling"}

type config struct {
	server    string
	scenarios []string
	duration  time.Duration
	feeders   int
	pongEvery time.Duration
}

func main() {
	cfg, err := parse(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "qa-probe:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tidle RSS\tpeak RSS\tlast RSS\tpeak/idle\tattacker closed\tfeeder answers/s")
	for _, name := range cfg.scenarios {
		fmt.Fprintf(os.Stderr, "qa-probe: %s...\n", name)
		r, err := runScenario(ctx, cfg, name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "qa-probe: %s: %v\n", name, err)
			os.Exit(1)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.2f×\t%v\t%.0f\n", name, mib(r.idle), mib(r.peak), mib(r.last),
			float64(r.peak)/float64(r.idle), r.closed, r.answersPerSec)
	}
	tw.Flush()
}

func parse(args []string) (config, error) {
	var c config
	var names string
	fs := flag.NewFlagSet("qa-probe", flag.ContinueOnError)
	fs.StringVar(&c.server, "server", "", "path of a built qa-server binary (required)")
	fs.StringVar(&names, "scenarios", strings.Join(order, ","), "comma-separated scenarios: "+strings.Join(order, ", "))
	fs.DurationVar(&c.duration, "duration", 30*time.Second, "how long a never-read or blind-pong attack lasts")
	fs.IntVar(&c.feeders, "feeders", 4, "clients asking questions in the attacked room")
	fs.DurationVar(&c.pongEvery, "pong-every", 10*time.Second, "interval of the blind pongs")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.server == "" {
		return c, errors.New("-server is required (go build -o /tmp/qa-server ./cmd/qa-server)")
	}
	for _, n := range strings.Split(names, ",") {
		if _, ok := scenarios[n]; !ok {
			return c, fmt.Errorf("unknown scenario %q", n)
		}
		c.scenarios = append(c.scenarios, n)
	}
	if c.duration <= 0 || c.feeders < 1 || c.pongEvery <= 0 {
		return c, errors.New("-duration, -feeders and -pong-every must be positive")
	}
	return c, nil
}

type result struct {
	idle, peak, last int64
	closed           bool
	answersPerSec    float64
}

type probe struct {
	cfg     config
	url     string
	answers atomic.Int64
}

func runScenario(ctx context.Context, cfg config, name string) (result, error) {
	addr, err := freeAddr()
	if err != nil {
		return result{}, err
	}
	cmd := exec.CommandContext(ctx, cfg.server, "-addr", addr,
		"-max-connections-per-ip", "1000",
		"-max-questions-per-minute", "100000000",
		"-max-questions-per-minute-per-ip", "100000000",
		"-log-level", "warn")
	cmd.Stdout = io.Discard
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	p := &probe{cfg: cfg, url: "http://" + addr}
	if err := waitUp(ctx, p.url); err != nil {
		return result{}, err
	}

	fctx, stopFeeders := context.WithCancel(ctx)
	var feeders sync.WaitGroup
	for range cfg.feeders {
		c, err := sioclient.Dial(ctx, sioclient.Options{URL: p.url})
		if err != nil {
			stopFeeders()
			return result{}, fmt.Errorf("feeder: %w", err)
		}
		defer c.Close()
		if _, err := c.EmitWithAck(ctx, "join_room", map[string]any{"room": room}); err != nil {
			stopFeeders()
			return result{}, fmt.Errorf("feeder join_room: %w", err)
		}
		feeders.Add(1)
		go func() {
			defer feeders.Done()
			p.feed(fctx, c)
		}()
	}
	defer func() { stopFeeders(); feeders.Wait() }()

	time.Sleep(2 * time.Second) // let the feeders reach their pace
	var r result
	if r.idle, err = rss(cmd.Process.Pid); err != nil {
		return result{}, err
	}
	sampler := startSampler(cmd.Process.Pid)
	before := p.answers.Load()
	start := time.Now()
	r.closed, err = scenarios[name](ctx, p)
	elapsed := time.Since(start)
	r.answersPerSec = float64(p.answers.Load()-before) / elapsed.Seconds()
	r.peak, r.last = sampler.stop()
	return r, err
}

// feed asks questions in the room, one at a time, until ctx ends.
func (p *probe) feed(ctx context.Context, c *sioclient.Client) {
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		args, err := c.EmitWithAck(rctx, "ask_question", map[string]any{"question": "What is Socket.IO?", "room": room})
		cancel()
		if err != nil || len(args) == 0 {
			continue
		}
		if m, ok := args[0].(map[string]any); ok && m["ok"] == true {
			p.answers.Add(1)
		} else {
			time.Sleep(10 * time.Millisecond) // too many open tasks: let them finish
		}
	}
}

// attackFrames sends n websocket messages of size bytes at once, each on
// its own connection offering per-message deflate (a message of zeros
// compresses a thousandfold), and reports whether the server closed them
// all.
func attackFrames(n, size int) func(context.Context, *probe) (bool, error) {
	return func(ctx context.Context, p *probe) (bool, error) {
		var wg sync.WaitGroup
		var closed atomic.Int64
		errs := make(chan error, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := dialRaw(p.url, true)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				c.EnableWriteCompression(true)
				w, err := c.NextWriter(websocket.TextMessage)
				if err != nil {
					errs <- err
					return
				}
				head := `42["ask_question",{"question":"`
				_, _ = io.WriteString(w, head)
				chunk := strings.Repeat("a", 64<<10)
				for written := len(head); written < size; written += len(chunk) {
					if _, err := io.WriteString(w, chunk); err != nil {
						break // closed by the server
					}
				}
				_, _ = io.WriteString(w, `"}]`)
				_ = w.Close()
				if closedWithin(c, 10*time.Second) {
					closed.Add(1)
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return false, err
		}
		time.Sleep(2 * time.Second) // what stays after the attack
		return closed.Load() == int64(n), nil
	}
}

// attackNeverRead joins the room on a websocket and never reads, sending a
// blind pong every -pong-every when pong is set.
func attackNeverRead(pong bool) func(context.Context, *probe) (bool, error) {
	return func(ctx context.Context, p *probe) (bool, error) {
		c, err := dialRaw(p.url, false)
		if err != nil {
			return false, err
		}
		defer c.Close()
		if err := c.WriteMessage(websocket.TextMessage, []byte(`421["join_room",{"room":"`+room+`"}]`)); err != nil {
			return false, err
		}
		deadline := time.After(p.cfg.duration)
		tick := time.NewTicker(p.cfg.pongEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case <-deadline:
				return closedWithin(c, 10*time.Second), nil
			case <-tick.C:
				if pong {
					_ = c.SetWriteDeadline(time.Now().Add(time.Second))
					_ = c.WriteMessage(websocket.TextMessage, []byte("3"))
				}
			}
		}
	}
}

// attackBlindPongPolling joins the room over long-polling, makes no GET
// request, and posts a blind pong every -pong-every.
func attackBlindPongPolling(ctx context.Context, p *probe) (bool, error) {
	base := p.url + "/socket.io/?EIO=4&transport=polling"
	open, _, err := httpDo(ctx, http.MethodGet, base, "")
	if err != nil {
		return false, err
	}
	i := strings.Index(open, `"sid":"`)
	if i < 0 {
		return false, fmt.Errorf("no sid in %q", open)
	}
	sid := open[i+7:]
	sid = sid[:strings.IndexByte(sid, '"')]
	u := base + "&sid=" + url.QueryEscape(sid)
	for _, frame := range []string{"40", `421["join_room",{"room":"` + room + `"}]`} {
		if _, _, err := httpDo(ctx, http.MethodPost, u, frame); err != nil {
			return false, err
		}
	}
	deadline := time.After(p.cfg.duration)
	tick := time.NewTicker(p.cfg.pongEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-deadline:
			_, status, err := httpDo(ctx, http.MethodPost, u, "40")
			return err == nil && status == http.StatusBadRequest, nil
		case <-tick.C:
			_, _, _ = httpDo(ctx, http.MethodPost, u, "3")
		}
	}
}

func dialRaw(serverURL string, compress bool) (*websocket.Conn, error) {
	u := strings.Replace(serverURL, "http://", "ws://", 1) + "/socket.io/?EIO=4&transport=websocket"
	d := websocket.Dialer{EnableCompression: compress, HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial(u, nil)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); err != nil { // open
		c.Close()
		return nil, err
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte("40")); err != nil {
		c.Close()
		return nil, err
	}
	for range 2 { // CONNECT reply, "connected"
		if _, _, err := c.ReadMessage(); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// closedWithin reads until the connection ends or wait passes, and reports
// whether the server ended it.
func closedWithin(c *websocket.Conn, wait time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

func httpDo(ctx context.Context, method, u, body string) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(body))
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return string(b), resp.StatusCode, err
}

func waitUp(ctx context.Context, u string) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, status, err := httpDo(ctx, http.MethodGet, u+"/healthz", ""); err == nil && status == http.StatusOK {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("server did not answer /healthz in 15 s")
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// rss is the resident memory of process pid, in bytes.
func rss(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

type sampler struct {
	done       chan struct{}
	wg         sync.WaitGroup
	peak, last int64
}

func startSampler(pid int) *sampler {
	s := &sampler{done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := rss(pid); err == nil {
				s.last = v
				s.peak = max(s.peak, v)
			}
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) stop() (peak, last int64) {
	close(s.done)
	s.wg.Wait()
	return s.peak, s.last
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func selfPID() int { return os.Getpid() }
