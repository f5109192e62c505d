package redisadapter_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"math"
	"net"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/qaplatform/socketio/internal/sioclient"
	"github.com/qaplatform/socketio/redisadapter"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/zishang520/engine.io/v2/types"
	"github.com/zishang520/socket.io/v2/socket"
)

// backend is a Redis the nodes of a test share.
type backend struct {
	name string
	addr string
	db   int
	mr   *miniredis.Miniredis // nil for real Redis
	// client, when set, opens each node's client instead of addr (a
	// deployment other than one server), closed when the test ends.
	client func(t *testing.T) redis.UniversalClient
}

// backends returns miniredis, and real Redis when REDIS_URL is set.
func backends(t *testing.T) []backend {
	t.Helper()
	mr := miniredis.RunT(t)
	out := []backend{{name: "miniredis", addr: mr.Addr(), mr: mr}}
	if u := os.Getenv("REDIS_URL"); u != "" {
		o, err := redis.ParseURL(u)
		require.NoError(t, err)
		out = append(out, backend{name: "redis", addr: o.Addr, db: o.DB})
	}
	return out
}

// realRedis returns the backend of REDIS_URL or skips the test.
func realRedis(t *testing.T) backend {
	t.Helper()
	u := os.Getenv("REDIS_URL")
	if u == "" {
		t.Skip("REDIS_URL is not set; set REDIS_URL=redis://127.0.0.1:6379/0 to run against real Redis")
	}
	o, err := redis.ParseURL(u)
	require.NoError(t, err)
	return backend{name: "redis", addr: o.Addr, db: o.DB}
}

// each runs f for every backend and protocol; the real Redis pass is
// skipped, with a message, when REDIS_URL is not set.
func each(t *testing.T, f func(t *testing.T, be backend, p redisadapter.Protocol)) {
	t.Helper()
	bes := backends(t)
	if len(bes) == 1 {
		t.Log("REDIS_URL is not set: real Redis pass skipped (CI sets REDIS_URL=redis://127.0.0.1:6379/0)")
	}
	for _, be := range bes {
		for _, p := range []redisadapter.Protocol{redisadapter.Protocol03, redisadapter.Protocol02} {
			t.Run(be.name+"/"+protoName(p), func(t *testing.T) { f(t, be, p) })
		}
	}
}

func protoName(p redisadapter.Protocol) string {
	if p == redisadapter.Protocol02 {
		return "0.2"
	}
	return "0.3"
}

func uniq(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return "sio-test-" + hex.EncodeToString(b)
}

// newClient returns a client of be named name (for CLIENT KILL), connecting
// through addr when it is not empty.
func newClient(t *testing.T, be backend, name, addr string) *redis.Client {
	t.Helper()
	if addr == "" {
		addr = be.addr
	}
	c := redis.NewClient(&redis.Options{
		Addr: addr, DB: be.db, ClientName: name,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: time.Second,
		MaxRetries: -1,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// clusterConfig is what the nodes of one test share.
type clusterConfig struct {
	be    backend
	opts  redisadapter.Options
	names string // prefix of the Redis client names
}

func newConfig(t *testing.T, be backend, p redisadapter.Protocol) *clusterConfig {
	t.Helper()
	id := uniq(t)
	o := redisadapter.Options{
		Protocol:            p,
		StreamName:          id + "-stream",
		ChannelPrefix:       id,
		EmitterKey:          id,
		RequestsTimeout:     2 * time.Second,
		HeartbeatInterval:   100 * time.Millisecond,
		HeartbeatTimeout:    600 * time.Millisecond,
		HealthCheckInterval: 200 * time.Millisecond,
		BlockTime:           time.Second,
	}
	if be.client != nil {
		c := be.client(t)
		t.Cleanup(func() { c.Del(context.Background(), o.StreamName) })
	} else if be.mr == nil {
		t.Cleanup(func() {
			c := redis.NewClient(&redis.Options{Addr: be.addr, DB: be.db})
			defer c.Close()
			c.Del(context.Background(), o.StreamName)
		})
	}
	return &clusterConfig{be: be, opts: o, names: id}
}

// node is one v2 server with the adapter, on a loopback port.
type node struct {
	t    *testing.T
	name string
	io   *socket.Server
	hs   *httptest.Server
	b    *redisadapter.Builder
	rdb  *redis.Client // nil when the backend opens its own clients

	mu      sync.Mutex
	emits   []any // server-side emits received
	stopped bool
}

type nodeOption func(*nodeSetup)

type nodeSetup struct {
	addr string // Redis address override (a proxy)
	opts func(*redisadapter.Options)
}

func viaAddr(addr string) nodeOption { return func(s *nodeSetup) { s.addr = addr } }

func (c *clusterConfig) node(t *testing.T, name string, options ...nodeOption) *node {
	t.Helper()
	var setup nodeSetup
	for _, o := range options {
		o(&setup)
	}
	n := &node{t: t, name: name}
	var client redis.UniversalClient
	if c.be.client != nil {
		client = c.be.client(t)
	} else {
		n.rdb = newClient(t, c.be, c.names+"-"+name, setup.addr)
		client = n.rdb
	}
	o := c.opts
	if setup.opts != nil {
		setup.opts(&o)
	}
	n.b = redisadapter.New(client, o)
	opts := socket.DefaultServerOptions()
	opts.SetAdapter(n.b)
	n.io = socket.NewServer(nil, opts)
	// Handlers are attached in the middleware: v2.5.0 answers CONNECT
	// before it emits "connection".
	n.io.Sockets().Use(func(s *socket.Socket, next func(*socket.ExtendedError)) {
		s.SetData(map[string]any{"node": name, "tag": s.Handshake().Query["tag"]})
		_ = s.On("join", func(args ...any) {
			if len(args) > 0 {
				if room, ok := args[0].(string); ok {
					s.Join(socket.Room(room))
				}
			}
			ackLast(args, "joined")
		})
		next(nil)
	})
	_ = n.io.On("ping-nodes", func(args ...any) {
		n.record(args)
		ackLast(args, "pong-"+name)
	})
	_ = n.io.On("hello-nodes", func(args ...any) { n.record(args) })
	_ = n.io.On("emitter-sse", func(args ...any) { n.record(args) })
	// Per-message deflate with an unreachable threshold turns off v2.5.0's
	// pre-encoded websocket frames, which lose broadcast deliveries (the
	// library's handler does the same).
	so := socket.DefaultServerOptions()
	so.SetPerMessageDeflate(&types.PerMessageDeflate{Threshold: math.MaxInt32})
	n.hs = httptest.NewServer(n.io.ServeHandler(so))
	t.Cleanup(n.stop)
	return n
}

func ackLast(args []any, v any) {
	if len(args) == 0 {
		return
	}
	if ack, ok := args[len(args)-1].(socket.Ack); ok {
		ack([]any{v}, nil)
	}
}

func (n *node) record(args []any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(args) > 0 {
		if _, ok := args[len(args)-1].(socket.Ack); ok {
			args = args[:len(args)-1]
		}
	}
	n.emits = append(n.emits, args...)
}

func (n *node) received() []any {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]any(nil), n.emits...)
}

// stop closes the server (and so its adapters) and waits for it.
func (n *node) stop() {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return
	}
	n.stopped = true
	n.mu.Unlock()
	done := make(chan struct{})
	n.io.Close(func(error) { close(done) })
	<-done
	n.hs.CloseClientConnections()
	n.hs.Close()
}

func (n *node) nsp() socket.Namespace { return n.io.Sockets() }

// dial connects a client to the node; tag is sent in the query.
func (n *node) dial(t *testing.T, tag string) *sioclient.Client {
	t.Helper()
	c := dialURL(t, n.hs.URL, tag)
	return c
}

func dialURL(t *testing.T, url, tag string) *sioclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := sioclient.Dial(ctx, sioclient.Options{
		URL: url + "/?tag=" + tag, ConnectRetry: -1, Settle: 5 * time.Millisecond,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// dialNsp connects a client to namespace nsp of the node.
func dialNsp(t *testing.T, n *node, nsp string) *sioclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := sioclient.Dial(ctx, sioclient.Options{
		URL: n.hs.URL, Namespace: nsp, ConnectRetry: -1, Settle: 5 * time.Millisecond,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func join(t *testing.T, c *sioclient.Client, room string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.EmitWithAck(ctx, "join", room)
	require.NoError(t, err)
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// proxy forwards TCP connections to a Redis and can cut them, to simulate
// an outage of one node's connection.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			_, _ = io.Copy(dst, src)
			_ = dst.Close()
			_ = src.Close()
		}
		go pipe(c, up)
		go pipe(up, c)
	}
}

// cut closes every connection and refuses new ones until restore.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = map[net.Conn]struct{}{}
}

func (p *proxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}
