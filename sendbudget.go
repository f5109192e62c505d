package socketio

import (
	"sync"

	"github.com/zishang520/engine.io-go-parser/packet"
	"github.com/zishang520/engine.io/v2/engine"
)

// defaultMaxQueuedBytes is Options.MaxQueuedBytes's default, the send
// budget centrifuge gives a connection.
const defaultMaxQueuedBytes = 1 << 20

// sendGuard keeps one Engine.IO connection's send budget. v2.5.0 queues
// every packet for a connection whose transport cannot take it (a websocket
// whose peer does not read, a polling client that sends no GET) without
// limit, and a pong refreshes the connection's liveness whether or not a
// ping was delivered; together they let one client grow a node's memory
// without bound. The guard follows the engine socket's own events:
// "packetCreate" adds a packet to the bytes queued, "flush" takes a batch
// off them, "packet" sees what the client sends. A connection whose queue
// passes the budget while its transport is busy, or that answers a ping it
// was never sent, is closed.
type sendGuard struct {
	srv   *Server
	es    engine.Socket
	limit int64

	mu      sync.Mutex
	queued  int64 // bytes of the packets created and not yet flushed
	pingOut bool  // a ping was handed to the transport and not answered
	dropped bool
}

// guardEngineConnection is the engine's "connection" listener: it gives
// every new Engine.IO connection its send guard.
func (s *Server) guardEngineConnection(args ...any) {
	if len(args) == 0 {
		return
	}
	es, ok := args[0].(engine.Socket)
	if !ok {
		return
	}
	g := &sendGuard{srv: s, es: es, limit: int64(s.opts.MaxQueuedBytes)}
	es.On("packetCreate", g.onPacketCreate)
	es.On("flush", g.onFlush)
	es.On("packet", g.onPacket)
}

func (g *sendGuard) onPacketCreate(args ...any) {
	p, ok := firstPacket(args)
	if !ok {
		return
	}
	g.mu.Lock()
	g.queued += packetSize(p)
	queued := g.queued
	g.mu.Unlock()
	// A writable transport takes the packet at once (the engine flushes
	// right after this event), so only a busy one lets the queue grow.
	if queued > g.limit && !g.es.Transport().Writable() {
		g.drop("send budget exceeded", "queued_bytes", queued, "limit", g.limit)
	}
}

func (g *sendGuard) onFlush(args ...any) {
	if len(args) == 0 {
		return
	}
	batch, ok := args[0].([]*packet.Packet)
	if !ok {
		return
	}
	var n int64
	ping := false
	for _, p := range batch {
		n += packetSize(p)
		if p.Type == packet.PING {
			ping = true
		}
	}
	g.mu.Lock()
	// Packets created before the guard was attached (the handshake's open
	// packet) are flushed without having been counted.
	g.queued = max(g.queued-n, 0)
	if ping {
		g.pingOut = true
	}
	g.mu.Unlock()
}

func (g *sendGuard) onPacket(args ...any) {
	p, ok := firstPacket(args)
	if !ok || p.Type != packet.PONG || g.es.Protocol() < 4 {
		return
	}
	g.mu.Lock()
	solicited := g.pingOut
	g.pingOut = false
	g.mu.Unlock()
	if !solicited {
		// In protocol 4 the server pings and the client answers; a pong
		// sent blind would keep a client that reads nothing alive.
		g.drop("pong without a delivered ping")
	}
}

// drop closes the connection once, logs why and counts it. The close runs
// on its own goroutine: the guard is called from inside the engine's send
// and receive paths, which a synchronous close would re-enter.
func (g *sendGuard) drop(reason string, attrs ...any) {
	g.mu.Lock()
	if g.dropped {
		g.mu.Unlock()
		return
	}
	g.dropped = true
	g.mu.Unlock()
	s := g.srv
	if s.closed.Load() {
		return // a closed Server guards nothing any more
	}
	s.slowConsumers.Add(1)
	s.logger.Warn("socketio: closing a connection: "+reason,
		append([]any{"engine_id", g.es.Id(), "remote", g.es.RemoteAddress(), "transport", g.es.Transport().Name()}, attrs...)...)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		g.es.Close(true)
	}()
}

func firstPacket(args []any) (*packet.Packet, bool) {
	if len(args) == 0 {
		return nil, false
	}
	p, ok := args[0].(*packet.Packet)
	return p, ok && p != nil
}

// packetSize is the bytes a packet holds: its data, and one byte for its
// type.
func packetSize(p *packet.Packet) int64 {
	n := int64(1)
	if l, ok := p.Data.(interface{ Len() int }); ok {
		n += int64(l.Len())
	}
	return n
}
