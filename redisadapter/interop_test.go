package redisadapter_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/qaplatform/socketio/internal/sioclient"
	"github.com/qaplatform/socketio/redisadapter"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zishang520/engine.io/v2/types"
	"github.com/zishang520/socket.io-go-parser/v2/parser"
	"github.com/zishang520/socket.io/v2/socket"
)

// interopDir is testdata/interop, where `npm ci` installs the pinned npm
// packages the interop tests run.
var interopDir = filepath.Join("..", "testdata", "interop")

// nodeJS returns the node binary, or skips the test when node or the npm
// packages are missing, or when REDIS_URL is not set.
func nodeJS(t *testing.T) (string, backend) {
	t.Helper()
	be := realRedis(t)
	bin, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed; the Node interop tests need Node 20 and `cd testdata/interop && npm ci`")
	}
	for _, pkg := range []string{"@socket.io/redis-streams-adapter", "@socket.io/redis-emitter", "socket.io", "redis", "ioredis", "redis-streams-adapter-0.2"} {
		if _, err := os.Stat(filepath.Join(interopDir, "node_modules", pkg, "package.json")); err != nil {
			t.Skipf("testdata/interop/node_modules/%s is missing; run `cd testdata/interop && npm ci`", pkg)
		}
	}
	return bin, be
}

// runNode runs a script of testdata/interop and waits for it to exit.
func runNode(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = interopDir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "node %v: %s", args, out)
	return string(out)
}

// nodeServer is a Node socket.io server on the official adapter.
type nodeServer struct {
	url    string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr bytes.Buffer
	drain  sync.WaitGroup
}

func startNodeServer(t *testing.T, bin string, cfg *clusterConfig, version string) *nodeServer {
	t.Helper()
	s := &nodeServer{}
	s.cmd = exec.Command(bin, "node-server.mjs", os.Getenv("REDIS_URL"), cfg.opts.StreamName, cfg.opts.ChannelPrefix, version)
	s.cmd.Dir = interopDir
	s.cmd.Stderr = &s.stderr
	var err error
	s.stdin, err = s.cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := s.cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, s.cmd.Start())
	t.Cleanup(func() {
		_ = s.stdin.Close() // the server exits when stdin closes
		done := make(chan error, 1)
		go func() { done <- s.cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-done
		}
		s.drain.Wait()
		if t.Failed() {
			t.Logf("node-server stderr:\n%s", s.stderr.String())
		}
	})
	lines := bufio.NewScanner(stdout)
	port := make(chan int, 1)
	s.drain.Add(1)
	go func() {
		defer s.drain.Done()
		for lines.Scan() {
			var m struct{ Port int }
			if json.Unmarshal(lines.Bytes(), &m) == nil && m.Port > 0 {
				port <- m.Port
			}
		}
	}()
	select {
	case p := <-port:
		s.url = fmt.Sprintf("http://127.0.0.1:%d", p)
	case <-time.After(15 * time.Second):
		t.Fatalf("node-server printed no port; stderr:\n%s", s.stderr.String())
	}
	return s
}

// The official @socket.io/redis-emitter reaches the sockets of Go nodes.
func TestInteropEmitter(t *testing.T) {
	bin, be := nodeJS(t)
	for _, p := range []redisadapter.Protocol{redisadapter.Protocol03, redisadapter.Protocol02} {
		t.Run(protoName(p), func(t *testing.T) {
			cfg := newConfig(t, be, p)
			n1, n2 := cfg.node(t, "n1"), cfg.node(t, "n2")
			a, b, c := n1.dial(t, "a"), n2.dial(t, "b"), n2.dial(t, "c")
			join(t, a, "r")
			join(t, b, "r")
			ready(t, n1, n2)

			runNode(t, bin, "emitter.mjs", os.Getenv("REDIS_URL"), cfg.opts.EmitterKey, "r")

			// The emitter's messages arrive in order; socketsJoin is the
			// last broadcast-related one.
			for _, n := range []*node{n1, n2} {
				eventually(t, 5*time.Second, n.name+" sees the emitter's join", func() bool {
					k, err := redisadapter.RoomSize(context.Background(), n.nsp(), "emitter-joined")
					return err == nil && k == 2
				})
			}
			n1.io.Emit("fence")
			assert.Equal(t, []string{"emitter-room", "emitter-all"}, untilFence(t, a, "fence"))
			assert.Equal(t, []string{"emitter-room", "emitter-all"}, untilFence(t, b, "fence"))
			assert.Equal(t, []string{"emitter-all", "emitter-except"}, untilFence(t, c, "fence"))

			for _, n := range []*node{n1, n2} {
				eventually(t, 5*time.Second, n.name+" got emitter-sse", func() bool {
					return len(n.received()) == 1
				})
				assert.Equal(t, []any{"from-emitter"}, n.received())
			}
		})
	}
}

// The arguments an emitter sends arrive as sent.
func TestInteropEmitterArguments(t *testing.T) {
	bin, be := nodeJS(t)
	cfg := newConfig(t, be, redisadapter.Protocol03)
	n1 := cfg.node(t, "n1")
	a := n1.dial(t, "a")
	join(t, a, "r")
	ready(t, n1)
	runNode(t, bin, "emitter.mjs", os.Getenv("REDIS_URL"), cfg.opts.EmitterKey, "r")
	assert.Equal(t, []any{"to-room", float64(1)}, next(t, a, "emitter-room"))
	assert.Equal(t, []any{map[string]any{"all": true}}, next(t, a, "emitter-all"))
}

// A Node socket.io server on the official adapter and a Go node share rooms,
// broadcasts, fetchSockets, server-side emits and broadcasts with acks.
func TestInteropNodeServer(t *testing.T) {
	bin, be := nodeJS(t)
	for _, tc := range []struct {
		version string
		p       redisadapter.Protocol
	}{{"0.3", redisadapter.Protocol03}, {"0.2", redisadapter.Protocol02}} {
		t.Run(tc.version, func(t *testing.T) {
			cfg := newConfig(t, be, tc.p)
			g := cfg.node(t, "g")
			ns := startNodeServer(t, bin, cfg, tc.version)
			cg, cn := g.dial(t, "cg"), dialURL(t, ns.url, "cn")
			join(t, cg, "r")
			join(t, cn, "r")
			healthy(t, g)

			// The Node adapter starts reading asynchronously: probe until a
			// broadcast of the Go node reaches the Node side.
			eventually(t, 15*time.Second, "the Node server reads the stream", func() bool {
				g.io.To("r").Emit("probe")
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer cancel()
				_, err := cn.Next(ctx, "probe")
				return err == nil
			})
			eventually(t, 15*time.Second, "both nodes count each other", func() bool {
				return g.nsp().Adapter().ServerCount() == 2
			})

			// Go → Node.
			g.io.To("r").Emit("from-go", map[string]any{"n": 1}, []any{"x"})
			assert.Equal(t, []any{map[string]any{"n": float64(1)}, []any{"x"}}, next(t, cn, "from-go"))
			// Binary data goes as base64 msgpack; the test client keeps the
			// attachment's placeholder.
			g.io.To("r").Emit("bin-from-go", []byte{1, 2, 3})
			assert.Equal(t, []any{map[string]any{"_placeholder": true, "num": float64(0)}}, next(t, cn, "bin-from-go"))
			// Node → Go.
			_, err := cn.EmitWithAck(ctxTimeout(t, 5*time.Second), "relay", "r", "hello")
			require.NoError(t, err)
			assert.Equal(t, []any{"hello"}, next(t, cg, "from-node"))

			// fetchSockets both ways.
			ids := []any{cg.SID(), cn.SID()}
			sort.Slice(ids, func(i, j int) bool { return ids[i].(string) < ids[j].(string) })
			got, err := cn.EmitWithAck(ctxTimeout(t, 10*time.Second), "count", "r")
			require.NoError(t, err)
			assert.Equal(t, []any{ids}, got, "the Node server fetches the Go node's sockets")
			all, err := redisadapter.FetchSockets(ctxTimeout(t, 5*time.Second), g.nsp(), "r")
			require.NoError(t, err)
			var remote socket.SocketDetails
			for _, s := range all {
				if string(s.Id()) == cn.SID() {
					remote = s
				}
			}
			require.NotNil(t, remote, "the Go node fetches the Node server's socket")
			assert.Equal(t, []string{"cn"}, remote.Handshake().Query["tag"])
			assert.NotEmpty(t, remote.Handshake().Headers["Upgrade"])
			assert.True(t, remote.Rooms().Has("r"))

			// socketsJoin from Go reaches the Node server's socket.
			g.io.In("r").SocketsJoin("j")
			eventually(t, 5*time.Second, "the Node socket joined j", func() bool {
				got, err := cn.EmitWithAck(ctxTimeout(t, 5*time.Second), "count", "j")
				return err == nil && assert.ObjectsAreEqual([]any{ids}, got)
			})

			// Server-side emits with acks, both ways.
			res := make(chan []any, 1)
			require.NoError(t, g.io.ServerSideEmit("ping-nodes", "from-go", socket.Ack(func(args []any, err error) {
				assert.NoError(t, err)
				res <- args
			})))
			select {
			case args := <-res:
				assert.Equal(t, []any{"pong-node"}, args)
			case <-time.After(10 * time.Second):
				t.Fatal("the Node server did not answer the server-side emit")
			}
			got, err = cn.EmitWithAck(ctxTimeout(t, 10*time.Second), "sse")
			require.NoError(t, err)
			assert.Equal(t, []any{[]any{"pong-g"}}, got)

			// A broadcast with acks from Go collects the Node client's ack.
			errs := answer(t, map[string]*sioclient.Client{"cg": cg, "cn": cn}, "question")
			var mu sync.Mutex
			var answers []any
			done := make(chan struct{})
			timeout := 3 * time.Second
			g.nsp().Adapter().BroadcastWithAck(
				&parser.Packet{Type: parser.EVENT, Data: []any{"question"}},
				&socket.BroadcastOptions{Rooms: types.NewSet[socket.Room]("j"), Except: types.NewSet[socket.Room](),
					Flags: &socket.BroadcastFlags{Timeout: &timeout}},
				func(uint64) {},
				func(args []any, _ error) {
					mu.Lock()
					defer mu.Unlock()
					answers = append(answers, args...)
					if len(answers) == 2 {
						close(done)
					}
				})
			require.NoError(t, <-errs)
			require.NoError(t, <-errs)
			select {
			case <-done:
				mu.Lock()
				assert.ElementsMatch(t, []any{"answer-cg", "answer-cn"}, answers)
				mu.Unlock()
			case <-time.After(5 * time.Second):
				t.Fatal("the Node client's ack did not come back")
			}
		})
	}
}
