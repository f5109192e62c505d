package streamq_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio/internal/redistest"
)

// backend is one Redis deployment the suite runs against.
type backend struct {
	name string
	// addr is the address of the Redis server (a proxy may stand in front).
	addr string
	// mr is the miniredis, nil for real Redis.
	mr *miniredis.Miniredis
	// real reports a real Redis server.
	real bool
	// cluster makes clients Redis Cluster clients.
	cluster bool
	// clusterAddrs are the nodes of a real Redis Cluster (addr unused).
	clusterAddrs []string
	// protocol is the RESP version of the clients (0: go-redis's, 3).
	protocol int
	// prefix is this test's key prefix.
	prefix string
}

// backends returns the deployments of one test: miniredis, a Redis Cluster
// client on miniredis, and real Redis when REDIS_URL is set. Each has a
// key prefix of its own; the keys of real Redis are deleted afterwards.
func backends() []namedBackend {
	out := []namedBackend{
		{"miniredis", func(t testing.TB) *backend {
			mr := miniredis.RunT(t)
			return &backend{name: "miniredis", addr: mr.Addr(), mr: mr, prefix: randPrefix()}
		}},
		{"miniredis-resp2", func(t testing.TB) *backend {
			mr := miniredis.RunT(t)
			return &backend{name: "miniredis-resp2", addr: mr.Addr(), mr: mr, protocol: 2, prefix: randPrefix()}
		}},
		{"cluster", func(t testing.TB) *backend {
			mr := miniredis.RunT(t)
			return &backend{name: "cluster", addr: mr.Addr(), mr: mr, cluster: true, prefix: randPrefix()}
		}},
	}
	if url := os.Getenv("REDIS_URL"); url != "" {
		out = append(out, namedBackend{"redis", func(t testing.TB) *backend {
			opts, err := redis.ParseURL(url)
			require.NoError(t, err)
			if opts.Addr == "" {
				t.Fatal("REDIS_URL names no address")
			}
			b := &backend{name: "redis", addr: opts.Addr, real: true, prefix: randPrefix()}
			t.Cleanup(func() {
				c := redis.NewClient(opts)
				defer func() { _ = c.Close() }()
				redistest.DeletePrefix(t, c, b.prefix)
			})
			return b
		}}, namedBackend{"redis-resp2", func(t testing.TB) *backend {
			opts, err := redis.ParseURL(url)
			require.NoError(t, err)
			b := &backend{name: "redis-resp2", addr: opts.Addr, real: true, protocol: 2, prefix: randPrefix()}
			t.Cleanup(func() {
				c := redis.NewClient(opts)
				defer func() { _ = c.Close() }()
				redistest.DeletePrefix(t, c, b.prefix)
			})
			return b
		}})
	}
	if addrs := os.Getenv(redistest.EnvCluster); addrs != "" {
		out = append(out, namedBackend{"redis-cluster", func(t testing.TB) *backend {
			c := redistest.NewCluster(t)
			b := &backend{name: "redis-cluster", real: true, cluster: true, clusterAddrs: strings.Split(addrs, ","), prefix: randPrefix()}
			t.Cleanup(func() { redistest.DeletePrefix(t, c, b.prefix) })
			return b
		}})
	}
	return out
}

// namedBackend makes a fresh backend for each test.
type namedBackend struct {
	name string
	new  func(t testing.TB) *backend
}

func randPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "streamqtest:" + hex.EncodeToString(b[:]) + ":"
}

// clientOpts tune one client of a backend.
type clientOpts struct {
	addr string // default: the backend's
	name string // CLIENT SETNAME
	// noRetries makes a failed command fail at once instead of being
	// retried by go-redis, so that the code under test sees the error.
	noRetries bool
}

// client returns a client of b, checked by a SlotCheckHook, closed when t
// ends.
func (b *backend) client(t testing.TB, o clientOpts) redis.UniversalClient {
	t.Helper()
	addr := o.addr
	if addr == "" {
		addr = b.addr
	}
	retries := 0
	if o.noRetries {
		retries = -1
	}
	var c redis.UniversalClient
	switch {
	case b.clusterAddrs != nil:
		if o.addr != "" {
			t.Skip("no proxy in front of a real Redis Cluster")
		}
		c = redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:      b.clusterAddrs,
			ClientName: o.name,
			MaxRetries: retries,
			Protocol:   b.protocol,
		})
	case b.cluster:
		c = redis.NewClusterClient(&redis.ClusterOptions{
			Protocol:   b.protocol,
			ClientName: o.name,
			MaxRetries: retries,
			// One node serving every slot, at addr (possibly a proxy):
			// CLUSTER SLOTS would name the server's own address.
			ClusterSlots: func(context.Context) ([]redis.ClusterSlot, error) {
				return []redis.ClusterSlot{{Start: 0, End: 16383, Nodes: []redis.ClusterNode{{Addr: addr}}}}, nil
			},
		})
	default:
		c = redis.NewClient(&redis.Options{Addr: addr, ClientName: o.name, MaxRetries: retries, Protocol: b.protocol})
	}
	c.AddHook(&redistest.SlotCheckHook{T: t})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// loseData makes the server lose the queue's data, as a Redis restarted
// empty does: FLUSHALL on miniredis, and on a (shared) real Redis the
// deletion of this test's keys.
func (b *backend) loseData(t *testing.T) {
	t.Helper()
	if b.mr != nil {
		b.mr.FlushAll()
		return
	}
	c := b.client(t, clientOpts{})
	redistest.DeletePrefix(t, c, b.prefix)
}

// killClients kills, on a real Redis, the connections of the clients named
// name.
func (b *backend) killClients(t *testing.T, name string) int {
	t.Helper()
	c := b.client(t, clientOpts{})
	list, err := c.ClientList(context.Background()).Result()
	require.NoError(t, err)
	n := 0
	for _, line := range strings.Split(list, "\n") {
		var id string
		named := false
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "id="); ok {
				id = v
			}
			if f == "name="+name {
				named = true
			}
		}
		if named && id != "" {
			require.NoError(t, c.Do(context.Background(), "CLIENT", "KILL", "ID", id).Err())
			n++
		}
	}
	return n
}

// proxy forwards TCP connections to a Redis and can cut them all, to
// simulate a dropped connection.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			_ = down.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			_ = down.Close()
			continue
		}
		p.conns[down], p.conns[up] = true, true
		p.wg.Add(2)
		p.mu.Unlock()
		go p.copy(up, down)
		go p.copy(down, up)
	}
}

func (p *proxy) copy(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
}

// cut closes every connection and refuses new ones until restore.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

func (p *proxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}
