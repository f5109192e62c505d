package redisadapter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/zishang520/engine.io/v2/types"
	"github.com/zishang520/socket.io-go-parser/v2/parser"
	"github.com/zishang520/socket.io/v2/adapter"
	"github.com/zishang520/socket.io/v2/socket"
)

var _ adapter.ClusterAdapter = (*nodeAdapter)(nil)

// nodeAdapter is the adapter of one namespace on this node. It embeds v2's
// ClusterAdapter, which handles the messages that act on local sockets
// (broadcasts, joins, leaves, disconnects, fetches and server-side emits
// from other nodes) and broadcasts with acks; it overrides what v2 gets
// wrong or what depends on the transport: publishing, node counting,
// FetchSockets and ServerSideEmit with acks (v2's count nodes with the
// in-memory ServerCount, which is always 1), and Broadcast (v2 skips the
// local delivery when publishing fails).
type nodeAdapter struct {
	adapter.ClusterAdapter

	b       *Builder
	name    string // namespace
	stream  string
	public  string // Protocol03 request channel
	private string // Protocol03 response channel of this node

	mu       sync.Mutex
	requests map[string]*request
	nodes    map[adapter.ServerId]time.Time // Protocol02: last message of each node
	closed   bool

	lastPublish atomic.Int64 // unix nanoseconds
	greeted     atomic.Bool  // Protocol02: INITIAL_HEARTBEAT sent
	closeOnce   sync.Once
}

func newNodeAdapter(b *Builder, nsp socket.Namespace) *nodeAdapter {
	a := &nodeAdapter{
		ClusterAdapter: adapter.MakeClusterAdapter(),
		b:              b,
		requests:       map[string]*request{},
		nodes:          map[adapter.ServerId]time.Time{},
	}
	a.Prototype(a)
	a.Construct(nsp)
	a.name = nsp.Name()
	a.stream = b.streamFor(a.name)
	a.public = fmt.Sprintf("%s#%s#", b.opts.ChannelPrefix, a.name)
	a.private = a.responseChannel(a.Uid())
	return a
}

func (a *nodeAdapter) responseChannel(uid adapter.ServerId) string {
	return fmt.Sprintf("%s#%s#%s#", a.b.opts.ChannelPrefix, a.name, uid)
}

// Init does nothing: v2 never calls it, and the Builder starts what the
// adapter needs when it creates it.
func (a *nodeAdapter) Init() {}

// Close tells the other nodes this one is gone (Protocol02), fails the
// pending requests with ErrClosed and detaches the adapter from its
// Builder, which stops reading from Redis when no adapter is left.
func (a *nodeAdapter) Close() {
	a.closeOnce.Do(func() {
		if a.b.opts.Protocol == Protocol02 {
			a.Publish(&adapter.ClusterMessage{Type: adapter.ADAPTER_CLOSE})
		}
		a.mu.Lock()
		a.closed = true
		pending := a.requests
		a.requests = map[string]*request{}
		a.mu.Unlock()
		for _, r := range pending {
			r.timer.Stop()
			r.finish(ErrClosed)
		}
		a.b.detach(a)
	})
}

func (a *nodeAdapter) isClosed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}

// ephemeral reports whether Protocol03 publishes m on the request channel
// rather than in the stream.
func ephemeral(m *adapter.ClusterMessage) bool {
	switch m.Type {
	case adapter.SERVER_SIDE_EMIT, adapter.FETCH_SOCKETS:
		return true
	case adapter.BROADCAST:
		d, ok := m.Data.(*adapter.BroadcastMessage)
		return ok && d.RequestId != nil
	}
	return false
}

// DoPublish sends m to the other nodes and returns its stream id ("" when
// it went through pub/sub).
func (a *nodeAdapter) DoPublish(m *adapter.ClusterMessage) (adapter.Offset, error) {
	if a.isClosed() {
		return "", ErrClosed
	}
	a.lastPublish.Store(time.Now().UnixNano())
	ctx, cancel := a.b.commandContext()
	defer cancel()
	if a.b.opts.Protocol == Protocol03 && ephemeral(m) {
		payload, err := encodeMessage(m)
		if err != nil {
			return "", err
		}
		return "", a.b.client.Publish(ctx, a.public, payload).Err()
	}
	fields, err := encodeEntry(m, a.b.opts.OnlyPlaintext)
	if err != nil {
		return "", err
	}
	id, err := a.b.client.XAdd(ctx, &redis.XAddArgs{
		Stream: a.stream, MaxLen: a.b.opts.MaxLen, Approx: true, Values: fields,
	}).Result()
	return adapter.Offset(id), err
}

// DoPublishResponse sends a response to the node that asked.
func (a *nodeAdapter) DoPublishResponse(requester adapter.ServerId, m *adapter.ClusterResponse) error {
	if a.b.opts.Protocol == Protocol02 {
		_, err := a.DoPublish(m)
		return err
	}
	if a.isClosed() {
		return ErrClosed
	}
	payload, err := encodeMessage(m)
	if err != nil {
		return err
	}
	ctx, cancel := a.b.commandContext()
	defer cancel()
	return a.b.client.Publish(ctx, a.responseChannel(requester), payload).Err()
}

// Broadcast publishes the packet, then delivers it to the local sockets
// even when publishing failed.
func (a *nodeAdapter) Broadcast(p *parser.Packet, opts *socket.BroadcastOptions) {
	if !isLocal(opts) {
		offset, err := a.PublishAndReturnOffset(&adapter.ClusterMessage{
			Type: adapter.BROADCAST,
			Data: &adapter.BroadcastMessage{Packet: p, Opts: adapter.EncodeOptions(opts)},
		})
		if err != nil {
			a.b.publishFailed(a.name, err)
		} else {
			a.addOffset(p, opts, offset)
		}
	}
	a.ClusterAdapter.Broadcast(p, localOpts(opts))
}

// addOffset appends the stream id to the event, as v2 and socket.io do
// when connection state recovery is on.
func (a *nodeAdapter) addOffset(p *parser.Packet, opts *socket.BroadcastOptions, offset adapter.Offset) {
	if a.Nsp().Server().Opts().GetRawConnectionStateRecovery() == nil || offset == "" {
		return
	}
	data, ok := p.Data.([]any)
	volatile := opts != nil && opts.Flags != nil && opts.Flags.Volatile
	if ok && p.Type == parser.EVENT && p.Id == nil && !volatile {
		p.Data = append(data, string(offset))
	}
}

// ServerCount returns the number of nodes serving this namespace,
// including this one.
func (a *nodeAdapter) ServerCount() int64 {
	if a.b.opts.Protocol == Protocol02 {
		a.mu.Lock()
		defer a.mu.Unlock()
		return int64(len(a.nodes) + 1)
	}
	ctx, cancel := a.b.commandContext()
	defer cancel()
	n, err := a.others(ctx)
	if err != nil {
		a.b.log.Debug("redisadapter: cannot count nodes", "nsp", a.name, "err", err)
	}
	return int64(n + 1)
}

// FetchSockets returns the matching sockets of every node. When some nodes
// do not answer in time, the callback gets the sockets that did arrive and
// an error wrapping ErrTimeout.
func (a *nodeAdapter) FetchSockets(opts *socket.BroadcastOptions) func(func([]socket.SocketDetails, error)) {
	return func(cb func([]socket.SocketDetails, error)) {
		var local []socket.SocketDetails
		a.ClusterAdapter.FetchSockets(localOpts(opts))(func(s []socket.SocketDetails, _ error) { local = s })
		if isLocal(opts) {
			cb(local, nil)
			return
		}
		timeout := a.b.opts.RequestsTimeout
		if opts != nil && opts.Flags != nil && opts.Flags.Timeout != nil && *opts.Flags.Timeout > 0 {
			timeout = *opts.Flags.Timeout
		}
		r := &request{typ: adapter.FETCH_SOCKETS, sockets: local}
		r.done = func(err error) { cb(r.sockets, err) }
		id, started, err := a.start(r, timeout)
		if err != nil || !started {
			cb(local, err)
			return
		}
		_, err = a.PublishAndReturnOffset(&adapter.ClusterMessage{
			Type: adapter.FETCH_SOCKETS,
			Data: &adapter.FetchSocketsMessage{Opts: adapter.EncodeOptions(opts), RequestId: id},
		})
		if err != nil {
			a.fail(id, err)
		}
	}
}

// ServerSideEmit sends packet (event name first) to the other nodes. When
// its last element is a socket.Ack, the ack is
// called once with one value per node that answered (the first argument
// of its ack) and, when some did not answer within RequestsTimeout, an
// error wrapping ErrTimeout. An error is returned only when nothing was
// sent; the ack is not called then.
func (a *nodeAdapter) ServerSideEmit(packet []any) error {
	if len(packet) == 0 {
		return errors.New("redisadapter: empty server-side emit")
	}
	ack, withAck := ackOf(packet[len(packet)-1])
	if !withAck {
		_, err := a.PublishAndReturnOffset(&adapter.ClusterMessage{
			Type: adapter.SERVER_SIDE_EMIT,
			Data: &adapter.ServerSideEmitMessage{Packet: packet},
		})
		return err
	}
	packet = packet[:len(packet)-1]
	r := &request{typ: adapter.SERVER_SIDE_EMIT, values: []any{}}
	r.done = func(err error) { ack(r.values, err) }
	id, started, err := a.start(r, a.b.opts.RequestsTimeout)
	if err != nil {
		return err
	}
	if !started {
		ack([]any{}, nil)
		return nil
	}
	_, err = a.PublishAndReturnOffset(&adapter.ClusterMessage{
		Type: adapter.SERVER_SIDE_EMIT,
		Data: &adapter.ServerSideEmitMessage{RequestId: &id, Packet: packet},
	})
	if err != nil {
		a.fail(id, err)
	}
	return nil
}

func ackOf(v any) (socket.Ack, bool) {
	f, ok := v.(socket.Ack)
	return f, ok && f != nil
}

// OnMessage handles a message from another node.
func (a *nodeAdapter) OnMessage(m *adapter.ClusterMessage, offset adapter.Offset) {
	a.receive(m, offset, func(f func()) { f() })
}

// OnResponse handles a response from another node.
func (a *nodeAdapter) OnResponse(m *adapter.ClusterResponse) {
	a.receive(m, "", func(f func()) { f() })
}

// receive handles m. Responses and heartbeats are handled at once; the
// rest, which runs listeners and touches sockets, is passed to later, so
// that a listener waiting for a cluster request cannot hold up the
// response it waits for.
func (a *nodeAdapter) receive(m *adapter.ClusterMessage, offset adapter.Offset, later func(func())) {
	if m.Uid == a.Uid() || m.Nsp != a.name {
		return
	}
	heartbeat := a.b.opts.Protocol == Protocol02
	if heartbeat && m.Uid != adapter.EMITTER_UID && m.Uid != "" {
		a.mu.Lock()
		if !a.closed {
			a.nodes[m.Uid] = time.Now()
		}
		a.mu.Unlock()
	}
	switch m.Type {
	case adapter.INITIAL_HEARTBEAT:
		if heartbeat {
			a.Publish(&adapter.ClusterMessage{Type: adapter.HEARTBEAT})
		}
	case adapter.HEARTBEAT:
	case adapter.ADAPTER_CLOSE:
		if heartbeat {
			a.removeNode(m.Uid)
		}
	case adapter.FETCH_SOCKETS_RESPONSE, adapter.SERVER_SIDE_EMIT_RESPONSE:
		a.onResponse(m)
	case adapter.BROADCAST_CLIENT_COUNT, adapter.BROADCAST_ACK:
		a.ClusterAdapter.OnResponse(m)
	default:
		later(func() { a.ClusterAdapter.OnMessage(m, offset) })
	}
}

// request is a pending FetchSockets or ServerSideEmit with an ack.
type request struct {
	typ     adapter.MessageType
	byNode  bool                          // Protocol02: wait for missing
	missing map[adapter.ServerId]struct{} // Protocol02
	pending int                           // Protocol03: answers still expected
	total   int
	sockets []socket.SocketDetails
	values  []any
	timer   *time.Timer
	done    func(error)
}

func (r *request) complete() bool {
	if r.byNode {
		return len(r.missing) == 0
	}
	return r.pending <= 0
}

func (r *request) outstanding() int {
	if r.byNode {
		return len(r.missing)
	}
	return r.pending
}

func (r *request) finish(err error) { r.done(err) }

// others returns the number of other nodes (Protocol03): the subscribers
// of the request channel, less this node when it is subscribed.
func (a *nodeAdapter) others(ctx context.Context) (int, error) {
	n, err := a.b.numSub(ctx, a.public)
	if err != nil {
		return 0, err
	}
	if a.b.subscribedNow() {
		n--
	}
	return max(n, 0), nil
}

// start registers r under a new id and arms its timeout. started is false
// when there is no other node to ask.
func (a *nodeAdapter) start(r *request, timeout time.Duration) (id string, started bool, err error) {
	if a.b.opts.Protocol == Protocol02 {
		r.byNode = true
		r.missing = map[adapter.ServerId]struct{}{}
		a.mu.Lock()
		for uid := range a.nodes {
			r.missing[uid] = struct{}{}
		}
		a.mu.Unlock()
		r.total = len(r.missing)
	} else {
		ctx, cancel := a.b.commandContext()
		n, err := a.others(ctx)
		cancel()
		if err != nil {
			return "", false, fmt.Errorf("redisadapter: counting nodes: %w", err)
		}
		r.pending, r.total = n, n
	}
	if r.total == 0 {
		return "", false, nil
	}
	id, err = adapter.RandomId()
	if err != nil {
		return "", false, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return "", false, ErrClosed
	}
	a.requests[id] = r
	r.timer = time.AfterFunc(timeout, func() {
		a.b.safely("request timeout", func() {
			if r := a.take(id); r != nil {
				r.finish(fmt.Errorf("%w: %d of %d nodes did not answer within %v", ErrTimeout, r.outstanding(), r.total, timeout))
			}
		})
	})
	return id, true, nil
}

// take removes and returns the pending request id, or nil.
func (a *nodeAdapter) take(id string) *request {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.requests[id]
	delete(a.requests, id)
	return r
}

func (a *nodeAdapter) fail(id string, err error) {
	if r := a.take(id); r != nil {
		r.timer.Stop()
		r.finish(err)
	}
}

func (a *nodeAdapter) onResponse(m *adapter.ClusterMessage) {
	var id string
	var typ adapter.MessageType
	var add func(*request)
	switch d := m.Data.(type) {
	case *fetchResponse:
		id, typ = d.RequestID, adapter.FETCH_SOCKETS
		add = func(r *request) { r.sockets = append(r.sockets, d.Sockets...) }
	case *valueResponse:
		id, typ = d.RequestID, adapter.SERVER_SIDE_EMIT
		add = func(r *request) { r.values = append(r.values, d.Value) }
	default:
		return
	}
	a.mu.Lock()
	r, ok := a.requests[id]
	if !ok || r.typ != typ {
		a.mu.Unlock()
		return
	}
	add(r)
	if r.byNode {
		delete(r.missing, m.Uid)
	} else {
		r.pending--
	}
	done := r.complete()
	if done {
		delete(a.requests, id)
	}
	a.mu.Unlock()
	if done {
		r.timer.Stop()
		r.finish(nil)
	}
}

// removeNode stops counting uid and waiting for its answers (Protocol02).
func (a *nodeAdapter) removeNode(uid adapter.ServerId) {
	var finished []*request
	a.mu.Lock()
	delete(a.nodes, uid)
	for id, r := range a.requests {
		if !r.byNode {
			continue
		}
		delete(r.missing, uid)
		if r.complete() {
			delete(a.requests, id)
			finished = append(finished, r)
		}
	}
	a.mu.Unlock()
	for _, r := range finished {
		r.timer.Stop()
		r.finish(nil)
	}
}

// maintain sends this node's heartbeats and forgets silent nodes
// (Protocol02).
func (a *nodeAdapter) maintain(now time.Time) {
	if !a.greeted.Swap(true) {
		a.Publish(&adapter.ClusterMessage{Type: adapter.INITIAL_HEARTBEAT})
	} else if now.Sub(time.Unix(0, a.lastPublish.Load())) >= a.b.opts.HeartbeatInterval {
		a.Publish(&adapter.ClusterMessage{Type: adapter.HEARTBEAT})
	}
	var silent []adapter.ServerId
	a.mu.Lock()
	for uid, seen := range a.nodes {
		if now.Sub(seen) > a.b.opts.HeartbeatTimeout {
			silent = append(silent, uid)
		}
	}
	a.mu.Unlock()
	for _, uid := range silent {
		a.b.log.Info("redisadapter: node seems down", "nsp", a.name, "node", uid)
		a.removeNode(uid)
	}
}

// deliver hands a message of the redis-emitter to v2's ClusterAdapter.
func (a *nodeAdapter) deliver(typ adapter.MessageType, data any, later func(func())) {
	a.receive(&adapter.ClusterMessage{Uid: adapter.EMITTER_UID, Nsp: a.name, Type: typ, Data: data}, "", later)
}

func isLocal(opts *socket.BroadcastOptions) bool {
	return opts != nil && opts.Flags != nil && opts.Flags.Local
}

// localOpts returns a copy of opts with the Local flag set.
func localOpts(opts *socket.BroadcastOptions) *socket.BroadcastOptions {
	c := &socket.BroadcastOptions{}
	if opts != nil {
		*c = *opts
	}
	f := socket.BroadcastFlags{}
	if c.Flags != nil {
		f = *c.Flags
	}
	f.Local = true
	c.Flags = &f
	return c
}

// remoteSocket is a socket of another node, as FetchSockets returns it.
type remoteSocket struct {
	id        socket.SocketId
	handshake *socket.Handshake
	rooms     *types.Set[socket.Room]
	data      any
}

func (r *remoteSocket) Id() socket.SocketId          { return r.id }
func (r *remoteSocket) Handshake() *socket.Handshake { return r.handshake }
func (r *remoteSocket) Rooms() *types.Set[socket.Room] {
	return r.rooms
}
func (r *remoteSocket) Data() any { return r.data }
