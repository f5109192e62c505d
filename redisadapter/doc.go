// Package redisadapter lets several github.com/zishang520/socket.io/v2
// servers (nodes) sharing one Redis behave as one: broadcasts to all, to
// rooms and with exceptions, SocketsJoin, SocketsLeave, DisconnectSockets,
// FetchSockets, server-side emits with acks and broadcasts with acks reach
// every node. It speaks the wire protocol of the official Node adapter
// @socket.io/redis-streams-adapter, so Node and Go nodes can share a
// cluster, and it delivers the messages of the official
// @socket.io/redis-emitter.
//
// Concurrency: all methods of *Builder, and the helpers FetchSockets,
// RoomSize and SocketExists, may be called concurrently. Per Builder the
// adapter runs one goroutine per stream it reads, one for the pub/sub
// subscription, one that runs message handlers and, for Protocol02, one
// for heartbeats; they start with the first namespace and all stop, before
// Close returns, when the last namespace's adapter is closed (closing the
// v2 server closes them) or when Builder.Close is called. Messages from
// other nodes are handled in arrival order on the handler goroutine: the
// listeners they trigger (server-side emit listeners, disconnect handlers
// of sockets disconnected remotely) run there, and responses to cluster
// requests keep flowing while they run, so a listener may wait for a
// cluster request; it must not close the server or the Builder, which
// waits for that goroutine. Request callbacks (FetchSockets, acks) run on
// a reader or timer goroutine and must not block. A panic in any of them
// is logged, not propagated.
//
// # Installing
//
//	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
//	b := redisadapter.New(rdb, redisadapter.Options{})
//	opts := socket.DefaultServerOptions()
//	opts.SetAdapter(b)
//	io := socket.NewServer(nil, opts)
//	// b.Health(ctx) for readiness probes; redisadapter.RoomSize(ctx,
//	// io.Sockets(), room) for cluster-wide member counts.
//
// The client may be one server, a failover client (Sentinel), a Cluster or
// a client wrapping one of them; not a *redis.Ring, whose pub/sub lives on
// one shard per subscription. Use one Builder per server. The stream
// reader uses a connection of its own (a single-connection copy of a
// *redis.Client or *redis.ClusterClient; other clients are shared), the
// subscription another.
//
// # Protocols and compatible versions
//
// Options.Protocol selects the protocol; every node of a cluster must use
// the same. Tested against Node 20 with the versions pinned in
// testdata/interop/package-lock.json: socket.io 4.8.4, socket.io-adapter
// 2.5.8, @socket.io/redis-streams-adapter 0.3.1 (on redis 6.3.1) and 0.2.3
// (on ioredis 6.0.0), @socket.io/redis-emitter 5.1.0.
//
// Protocol03 (default) is @socket.io/redis-streams-adapter 0.3.x. Broadcasts
// without acks, SOCKETS_JOIN, SOCKETS_LEAVE and DISCONNECT_SOCKETS are
// appended to the stream (default "socket.io"; with StreamCount n > 1,
// "<name>-<hashCode(nsp) % n>" as in JavaScript) with XADD MAXLEN ~ MaxLen,
// as fields uid, nsp, type (decimal) and data: JSON, or base64 msgpack when
// the data holds binary values. FETCH_SOCKETS, SERVER_SIDE_EMIT and
// broadcasts with acks are published, msgpack-encoded whole, on
// "<ChannelPrefix>#<nsp>#"; responses go to the requester's
// "<ChannelPrefix>#<nsp>#<uid>#". The nodes are the subscribers of the
// first channel (PUBSUB NUMSUB, summed over a Redis Cluster's nodes): a
// node whose connection closes, because it stopped or crashed, stops being
// counted at once; a request already waiting for it ends at its timeout.
//
// Protocol02 is @socket.io/redis-streams-adapter 0.2.x: every message and
// response goes through the stream, and nodes are counted by heartbeat. A
// node publishes INITIAL_HEARTBEAT when it starts, HEARTBEAT when it has
// published nothing for HeartbeatInterval and ADAPTER_CLOSE when it
// closes; a node silent for HeartbeatTimeout is forgotten and the requests
// waiting for it complete without it.
//
// The message types and payloads are those of socket.io-adapter's
// ClusterAdapter, which v2's adapter package ports; v2's own structs are
// not serialised as they are, because they do not match JavaScript on the
// wire (packet types are ASCII digits, flags.timeout is in nanoseconds,
// volatile is always written, handshake headers are lists); this package
// converts them field by field. An ack forwards its first argument only,
// as in JavaScript.
//
// redis-emitter messages are delivered in every namespace that has an
// adapter: broadcasts on "<EmitterKey>#<nsp>#" and
// "<EmitterKey>#<nsp>#<room>#" (PSUBSCRIBE), socketsJoin, socketsLeave,
// disconnectSockets and serverSideEmit on "<EmitterKey>-request#<nsp>#".
//
// # Options
//
// The zero Options are the Node defaults: StreamName "socket.io",
// StreamCount 1, ChannelPrefix "socket.io", MaxLen 10000, ReadCount 100,
// BlockTime 5s, HeartbeatInterval 5s, HeartbeatTimeout 10s, EmitterKey
// "socket.io"; and RequestsTimeout 5s (requests and each Redis command),
// HealthCheckInterval 5s, Logger slog.Default().
//
// # Failures
//
// The stream reader resumes after a lost connection from the last entry
// it saw, so broadcasts made meanwhile are delivered late rather than lost
// (unless MAXLEN trimmed them). The subscription is pinged when silent
// for HealthCheckInterval and renewed when the connection fails or a ping
// goes unanswered. Health reports either one being down, with the cause,
// and Status counts the losses. A broadcast that cannot be published still
// reaches the node's own sockets (v2's ClusterAdapter skips them).
//
// Not supported: connection state recovery across nodes (PersistSession
// and RestoreSession do nothing), sharded pub/sub (useShardedPubSub), and
// the protocol of @socket.io/redis-adapter (its broadcasts on the emitter
// channels are delivered, its requests are not answered). Redis Cluster is
// untested. v2.5.0's BroadcastOperator.EmitWithAck has a data race of its
// own, even on one node; the adapter's BroadcastWithAck has none.
package redisadapter
