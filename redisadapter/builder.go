package redisadapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf16"

	"github.com/redis/go-redis/v9"
	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio/internal/redistopo"
)

var _ socket.AdapterConstructor = (*Builder)(nil)

// Builder creates the adapter of each namespace of one v2 server and owns
// what they share: the stream readers, the pub/sub subscription and, for
// Protocol02, the heartbeats. Install it with ServerOptions.SetAdapter.
//
// Use one Builder per server: two servers sharing one would count as one
// node. All methods may be called concurrently.
type Builder struct {
	client redis.UniversalClient
	opts   Options
	log    *slog.Logger

	mu       sync.Mutex
	adapters map[string]*nodeAdapter // by namespace
	direct   map[string]route        // SUBSCRIBEd channel → handler
	patterns map[string]*nodeAdapter // PSUBSCRIBEd pattern → adapter
	run      *run                    // nil while no adapter is attached
	closed   bool

	lastWarn   atomic.Int64  // unix nanoseconds of the last publishFailed warning
	suppressed atomic.Uint64 // failures not logged since
}

type routeKind int

const (
	routePublic         routeKind = iota // Protocol03 requests, and emitter broadcasts when prefixes match
	routePrivate                         // Protocol03 responses to this node
	routeEmitterRequest                  // redis-emitter socketsJoin, serverSideEmit, ...
)

type route struct {
	a    *nodeAdapter
	kind routeKind
}

// New returns the adapter constructor for a v2 server whose nodes share
// the Redis behind client: one server, a failover client (Sentinel), a
// Cluster, or a client wrapping one of them (a wrapped Cluster client
// should keep the ForEachShard method, which counts the subscribers on
// every node). It panics when client is nil or a *redis.Ring, whose
// pub/sub is per shard, or when opts are invalid. Nothing is read from Redis until the server creates its first
// namespace.
//
//	opts := socket.DefaultServerOptions()
//	opts.SetAdapter(redisadapter.New(rdb, redisadapter.Options{}))
//	io := socket.NewServer(nil, opts)
func New(client redis.UniversalClient, opts Options) *Builder {
	if client == nil {
		panic("redisadapter: nil client")
	}
	if _, ok := client.(*redis.Ring); ok {
		panic("redisadapter: a *redis.Ring cannot hold one subscription to every channel (it subscribes on one shard per call); " +
			"use a client of one server, Sentinel or Cluster")
	}
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		panic("redisadapter: " + err.Error())
	}
	return &Builder{
		client:   client,
		opts:     o,
		log:      o.Logger,
		adapters: map[string]*nodeAdapter{},
		direct:   map[string]route{},
		patterns: map[string]*nodeAdapter{},
	}
}

// New returns the adapter of nsp; v2 calls it for every namespace. It
// implements socket.AdapterConstructor.
func (b *Builder) New(nsp socket.Namespace) socket.Adapter {
	a := newNodeAdapter(b, nsp)
	b.attach(a)
	return a
}

func (b *Builder) attach(a *nodeAdapter) {
	b.mu.Lock()
	old := b.adapters[a.name]
	b.mu.Unlock()
	if old != nil {
		if old.Nsp() != a.Nsp() {
			panic(fmt.Sprintf("redisadapter: namespace %q of another server is attached to this Builder; use one Builder per server", a.name))
		}
		old.Close() // SetAdapter was called again
	}

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		a.mu.Lock()
		a.closed = true
		a.mu.Unlock()
		return
	}
	b.adapters[a.name] = a
	routes, pats := b.channelsOf(a)
	chans := make([]string, 0, len(routes))
	for ch, rt := range routes {
		b.direct[ch] = rt
		chans = append(chans, ch)
	}
	for _, p := range pats {
		b.patterns[p] = a
	}
	r := b.run
	if r == nil {
		r = b.startLocked()
	}
	r.ensureReaderLocked(a.stream)
	ps := r.ps
	b.mu.Unlock()

	if ps != nil {
		// A subscription made before this namespace existed; if this fails,
		// the subscriber notices the broken connection and subscribes to
		// everything again.
		ctx, cancel := b.commandContext()
		if len(chans) > 0 {
			_ = ps.Subscribe(ctx, chans...)
		}
		if len(pats) > 0 {
			_ = ps.PSubscribe(ctx, pats...)
		}
		cancel()
	}
	r.wake()
}

func (b *Builder) detach(a *nodeAdapter) {
	b.mu.Lock()
	if b.adapters[a.name] != a {
		b.mu.Unlock()
		return
	}
	delete(b.adapters, a.name)
	routes, pats := b.channelsOf(a)
	chans := make([]string, 0, len(routes))
	for ch := range routes {
		delete(b.direct, ch)
		chans = append(chans, ch)
	}
	for _, p := range pats {
		delete(b.patterns, p)
	}
	r := b.run
	var ps *redis.PubSub
	if len(b.adapters) == 0 {
		b.run = nil
	} else if r != nil {
		ps, r = r.ps, nil
	}
	b.mu.Unlock()

	if r != nil {
		r.stop()
		return
	}
	if ps != nil {
		ctx, cancel := b.commandContext()
		if len(chans) > 0 {
			_ = ps.Unsubscribe(ctx, chans...)
		}
		if len(pats) > 0 {
			_ = ps.PUnsubscribe(ctx, pats...)
		}
		cancel()
	}
}

// channelsOf returns the channels (with their handlers) and the patterns
// a's namespace subscribes to.
func (b *Builder) channelsOf(a *nodeAdapter) (map[string]route, []string) {
	routes := map[string]route{}
	var pats []string
	if b.opts.Protocol == Protocol03 {
		routes[a.public] = route{a: a, kind: routePublic}
		routes[a.private] = route{a: a, kind: routePrivate}
	}
	if !b.opts.DisableEmitter {
		routes[b.opts.EmitterKey+"-request#"+a.name+"#"] = route{a: a, kind: routeEmitterRequest}
		pats = append(pats, globEscape(b.opts.EmitterKey+"#"+a.name+"#")+"*")
	}
	return routes, pats
}

// subscriptionNeeded reports whether the node subscribes to anything.
func (b *Builder) subscriptionNeeded() bool {
	return b.opts.Protocol == Protocol03 || !b.opts.DisableEmitter
}

func globEscape(s string) string {
	var sb strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`\*?[]`, c) {
			sb.WriteByte('\\')
		}
		sb.WriteRune(c)
	}
	return sb.String()
}

// streamFor returns the stream of namespace nsp, as the Node adapter
// computes it.
func (b *Builder) streamFor(nsp string) string {
	if b.opts.StreamCount == 1 {
		return b.opts.StreamName
	}
	var h int32
	for _, c := range utf16.Encode([]rune(nsp)) {
		h = h*31 + int32(c)
	}
	return fmt.Sprintf("%s-%d", b.opts.StreamName, h%int32(b.opts.StreamCount))
}

func (b *Builder) adapter(nsp string) *nodeAdapter {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.adapters[nsp]
}

func (b *Builder) commandContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), b.opts.RequestsTimeout)
}

// numSub returns the number of subscribers of channel, summed over the
// nodes a subscriber may be connected to (every node of a Cluster, found
// by the client's ForEachShard method, whatever its type).
func (b *Builder) numSub(ctx context.Context, channel string) (int, error) {
	var n atomic.Int64
	err := redistopo.ForEachNode(ctx, b.client, func(ctx context.Context, c redis.Cmdable) error {
		m, err := c.PubSubNumSub(ctx, channel).Result()
		n.Add(m[channel])
		return err
	})
	return int(n.Load()), err
}

// subscribedNow reports whether this node's subscription is up.
func (b *Builder) subscribedNow() bool {
	b.mu.Lock()
	r := b.run
	b.mu.Unlock()
	return r != nil && r.sub != nil && r.sub.status().Up
}

// safely runs f, logging a panic instead of crashing the process: f may
// be a listener or callback of the application running on a goroutine of
// the adapter.
func (b *Builder) safely(what string, f func()) {
	defer func() {
		if p := recover(); p != nil {
			b.log.Error("redisadapter: panic in "+what, "panic", p)
		}
	}()
	f()
}

// publishFailed logs a broadcast that did not reach Redis, at most once a
// second: an outage would otherwise log every broadcast.
func (b *Builder) publishFailed(nsp string, err error) {
	now := time.Now().UnixNano()
	last := b.lastWarn.Load()
	if now-last < int64(time.Second) || !b.lastWarn.CompareAndSwap(last, now) {
		b.suppressed.Add(1)
		return
	}
	b.log.Warn("redisadapter: broadcast not published; delivered to local sockets only",
		"nsp", nsp, "err", err, "suppressed", b.suppressed.Swap(0))
}

// Close closes the adapters of every namespace, as closing the server
// does, and stops reading from Redis; it returns when every goroutine of
// the adapter has exited. The client is not closed. Namespaces created
// afterwards get adapters that deliver locally only.
func (b *Builder) Close() error {
	b.mu.Lock()
	b.closed = true
	var all []*nodeAdapter
	for _, a := range b.adapters {
		all = append(all, a)
	}
	b.mu.Unlock()
	for _, a := range all {
		a.Close()
	}
	return nil
}

// Status describes the connections the adapter reads from.
type Status struct {
	// Reader is the stream reader (all of them, when namespaces use
	// several streams): Up only when every one is.
	Reader ComponentStatus
	// Subscriber is the pub/sub subscription (Protocol03 requests and
	// responses, redis-emitter messages). Up when none is needed.
	Subscriber ComponentStatus
}

// ComponentStatus is the state of one connection loop.
type ComponentStatus struct {
	Up bool
	// Since is when Up last changed (or the loop started).
	Since time.Time
	// Losses counts the times the connection went from up to down.
	Losses uint64
	// LastError is the last error seen; it is kept after a recovery.
	LastError error
}

// Status returns the state of the reader and the subscriber; both are
// down (zero) while no namespace is attached.
func (b *Builder) Status() Status {
	b.mu.Lock()
	r := b.run
	var readers []*component
	if r != nil {
		for _, rd := range r.readers {
			readers = append(readers, rd.comp)
		}
	}
	b.mu.Unlock()
	if r == nil {
		return Status{}
	}
	st := Status{Subscriber: ComponentStatus{Up: true, Since: r.started}}
	if r.sub != nil {
		st.Subscriber = r.sub.status()
	}
	st.Reader = ComponentStatus{Up: len(readers) > 0, Since: r.started}
	for _, c := range readers {
		s := c.status()
		st.Reader.Up = st.Reader.Up && s.Up
		st.Reader.Losses += s.Losses
		if s.Since.After(st.Reader.Since) {
			st.Reader.Since = s.Since
		}
		if s.LastError != nil {
			st.Reader.LastError = s.LastError
		}
	}
	return st
}

// Health returns nil when the stream reader and the subscription are up
// and the publishing client answers PING within ctx; otherwise an error
// wrapping ErrUnhealthy that says what is down, since when and why. It
// returns ErrClosed after Close and ErrNotRunning while no namespace is
// attached.
func (b *Builder) Health(ctx context.Context) error {
	b.mu.Lock()
	closed, r := b.closed, b.run
	var comps []*component
	if r != nil {
		for _, rd := range r.readers {
			comps = append(comps, rd.comp)
		}
		if r.sub != nil {
			comps = append(comps, r.sub)
		}
	}
	b.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case r == nil:
		return ErrNotRunning
	}
	var errs []error
	for _, c := range comps {
		if err := c.health(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := b.client.Ping(ctx).Err(); err != nil {
		errs = append(errs, fmt.Errorf("publisher: %w", err))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrUnhealthy, errors.Join(errs...))
	}
	return nil
}

// component tracks whether one connection loop is up.
type component struct {
	name string
	log  *slog.Logger

	mu      sync.Mutex
	up      bool
	since   time.Time
	losses  uint64
	lastErr error
}

func newComponent(name string, log *slog.Logger) *component {
	return &component{name: name, log: log, since: time.Now()}
}

func (c *component) setUp() {
	c.mu.Lock()
	changed := !c.up
	recovered := changed && c.lastErr != nil
	if changed {
		c.up, c.since = true, time.Now()
	}
	c.mu.Unlock()
	if recovered {
		c.log.Info("redisadapter: connection restored", "component", c.name)
	}
}

func (c *component) setDown(err error) {
	c.mu.Lock()
	lost := c.up
	if lost {
		c.up, c.since = false, time.Now()
		c.losses++
	}
	c.lastErr = err
	c.mu.Unlock()
	if lost {
		c.log.Warn("redisadapter: connection lost", "component", c.name, "err", err)
	} else {
		c.log.Debug("redisadapter: still down", "component", c.name, "err", err)
	}
}

func (c *component) status() ComponentStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ComponentStatus{Up: c.up, Since: c.since, Losses: c.losses, LastError: c.lastErr}
}

func (c *component) health() error {
	s := c.status()
	if s.Up {
		return nil
	}
	cause := s.LastError
	if cause == nil {
		cause = errors.New("not connected yet")
	}
	return fmt.Errorf("%s down since %s: %w", c.name, s.Since.Format(time.RFC3339Nano), cause)
}
