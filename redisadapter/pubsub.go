package redisadapter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/zishang520/socket.io/v2/adapter"
)

// errNoPong reports a subscription whose connection stopped answering.
var errNoPong = errors.New("no answer to ping")

// subscribe keeps one subscription to every channel and pattern of the
// attached namespaces. Each connection is used until it fails or stops
// answering pings; then a new one subscribes to everything again.
func (r *run) subscribe() {
	defer r.wg.Done()
	var bo backoff
	for r.ctx.Err() == nil {
		err := r.subscribeOnce(&bo)
		if r.ctx.Err() != nil {
			return
		}
		r.sub.setDown(err)
		if !r.sleep(bo.next()) {
			return
		}
	}
}

// subscribeNothing returns a subscription to no channel yet. A client that
// cannot make one (a *redis.Ring, which New refuses, wrapped in another
// type: it panics) is an error, which Health reports, not a crash.
func subscribeNothing(ctx context.Context, c redis.UniversalClient) (ps *redis.PubSub, err error) {
	defer func() {
		if p := recover(); p != nil {
			ps, err = nil, fmt.Errorf("this client cannot hold one subscription to every channel (a *redis.Ring?): %v", p)
		}
	}()
	return c.Subscribe(ctx), nil
}

func (r *run) subscribeOnce(bo *backoff) error {
	b := r.b
	ps, err := subscribeNothing(r.ctx, b.client) // no channel yet: no I/O
	if err != nil {
		return err
	}
	defer func() {
		b.mu.Lock()
		if r.ps == ps {
			r.ps = nil
		}
		b.mu.Unlock()
		_ = ps.Close()
	}()

	// Publish ps before taking the snapshot: a namespace attached after the
	// snapshot subscribes on ps itself.
	b.mu.Lock()
	if b.run != r {
		b.mu.Unlock()
		return r.ctx.Err()
	}
	r.ps = ps
	var chans, pats []string
	for ch := range b.direct {
		chans = append(chans, ch)
	}
	for p := range b.patterns {
		pats = append(pats, p)
	}
	b.mu.Unlock()

	want := len(chans) + len(pats)
	if len(chans) > 0 {
		if err := ps.Subscribe(r.ctx, chans...); err != nil {
			return err
		}
	}
	if len(pats) > 0 {
		if err := ps.PSubscribe(r.ctx, pats...); err != nil {
			return err
		}
	}
	if want == 0 {
		r.sub.setUp()
	}
	confirmed, pinged := 0, false
	for {
		msg, err := ps.ReceiveTimeout(r.ctx, b.opts.HealthCheckInterval)
		if err != nil {
			if r.ctx.Err() != nil {
				return r.ctx.Err()
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return err
			}
			if pinged {
				return errNoPong
			}
			if err := ps.Ping(r.ctx); err != nil {
				return err
			}
			pinged = true
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" || m.Kind == "psubscribe" {
				if confirmed++; confirmed == want {
					r.sub.setUp()
					bo.reset()
				}
			}
		case *redis.Message:
			b.safely("pub/sub message", func() { r.dispatch(m) })
		}
	}
}

func (r *run) dispatch(m *redis.Message) {
	b := r.b
	payload := []byte(m.Payload)
	b.mu.Lock()
	rt, direct := b.direct[m.Channel]
	pa := b.patterns[m.Pattern]
	b.mu.Unlock()

	if m.Pattern != "" {
		// Channels also subscribed directly arrive twice; the direct copy
		// is the one handled.
		if !direct && pa != nil && isMsgpackArray(payload) {
			r.emitterBroadcast(pa, payload)
		}
		return
	}
	if !direct {
		return
	}
	switch rt.kind {
	case routePublic:
		if isMsgpackArray(payload) {
			if !b.opts.DisableEmitter {
				r.emitterBroadcast(rt.a, payload)
			}
			return
		}
		fallthrough
	case routePrivate:
		msg, err := decodeMessage(payload)
		if err != nil {
			b.log.Debug("redisadapter: undecodable message", "channel", m.Channel, "err", err)
			return
		}
		rt.a.receive(msg, "", r.queue.push)
	case routeEmitterRequest:
		r.emitterRequest(rt.a, payload)
	}
}

// isMsgpackArray reports whether b starts with a msgpack array, the shape
// of redis-emitter (and @socket.io/redis-adapter) broadcasts; cluster
// messages are maps.
func isMsgpackArray(b []byte) bool {
	return len(b) > 0 && (b[0]&0xf0 == 0x90 || b[0] == 0xdc || b[0] == 0xdd)
}

// emitterBroadcast delivers [uid, packet, {rooms, except, flags}].
func (r *run) emitterBroadcast(a *nodeAdapter, payload []byte) {
	var parts []msgpack.RawMessage
	err := unmarshalMsgpack(payload, &parts)
	if err == nil && len(parts) < 3 {
		err = fmt.Errorf("%d elements", len(parts))
	}
	var p wirePacket
	var o wireOpts
	if err == nil {
		err = unmarshalMsgpack(parts[1], &p)
	}
	if err == nil {
		err = unmarshalMsgpack(parts[2], &o)
	}
	if err != nil {
		r.b.log.Debug("redisadapter: undecodable emitter message", "nsp", a.name, "err", err)
		return
	}
	if p.Nsp != "" && p.Nsp != a.name {
		return
	}
	packet, err := packetFromWire(p)
	if err != nil {
		r.b.log.Debug("redisadapter: undecodable emitter packet", "nsp", a.name, "err", err)
		return
	}
	a.deliver(adapter.BROADCAST, &adapter.BroadcastMessage{Packet: packet, Opts: optsFromWire(o)}, r.queue.push)
}

// emitterRequest is a request of the redis-emitter: the request types of
// @socket.io/redis-adapter that the emitter sends, without a requestId.
type emitterRequest struct {
	UID       string   `json:"uid"`
	Type      int      `json:"type"`
	RequestID string   `json:"requestId"`
	Opts      wireOpts `json:"opts"`
	Rooms     []string `json:"rooms"`
	Close     bool     `json:"close"`
	Data      []any    `json:"data"`
}

const (
	emitterRemoteJoin       = 2
	emitterRemoteLeave      = 3
	emitterRemoteDisconnect = 4
	emitterServerSideEmit   = 6
)

func (r *run) emitterRequest(a *nodeAdapter, payload []byte) {
	var req emitterRequest
	if err := json.Unmarshal(payload, &req); err != nil {
		r.b.log.Debug("redisadapter: undecodable emitter request", "nsp", a.name, "err", err)
		return
	}
	if req.RequestID != "" || req.UID == string(a.Uid()) {
		return // a request of a node that waits for answers; not the emitter's
	}
	switch req.Type {
	case emitterRemoteJoin:
		a.deliver(adapter.SOCKETS_JOIN, &adapter.SocketsJoinLeaveMessage{Opts: optsFromWire(req.Opts), Rooms: roomsFromWire(req.Rooms)}, r.queue.push)
	case emitterRemoteLeave:
		a.deliver(adapter.SOCKETS_LEAVE, &adapter.SocketsJoinLeaveMessage{Opts: optsFromWire(req.Opts), Rooms: roomsFromWire(req.Rooms)}, r.queue.push)
	case emitterRemoteDisconnect:
		a.deliver(adapter.DISCONNECT_SOCKETS, &adapter.DisconnectSocketsMessage{Opts: optsFromWire(req.Opts), Close: req.Close}, r.queue.push)
	case emitterServerSideEmit:
		if len(req.Data) > 0 {
			a.deliver(adapter.SERVER_SIDE_EMIT, &adapter.ServerSideEmitMessage{Packet: req.Data}, r.queue.push)
		}
	}
}
