package redisadapter

import (
	"fmt"
	"log/slog"
	"time"
)

// Protocol selects which release line of @socket.io/redis-streams-adapter
// the adapter speaks. Both use the same stream entries; they differ in how
// requests and responses travel and in how nodes are counted.
type Protocol int

const (
	// Protocol03 is @socket.io/redis-streams-adapter 0.3.x: broadcasts and
	// room operations go through the stream; requests (fetchSockets,
	// serverSideEmit, broadcasts with acks) are published on the channel
	// "<ChannelPrefix>#<nsp>#", responses on "<ChannelPrefix>#<nsp>#<uid>#",
	// and the nodes are counted with PUBSUB NUMSUB on the first of those.
	Protocol03 Protocol = iota
	// Protocol02 is @socket.io/redis-streams-adapter 0.2.x: every message
	// and response goes through the stream, and nodes are counted by
	// heartbeat (see Options.HeartbeatInterval and HeartbeatTimeout).
	Protocol02
)

// String returns the npm version range the protocol matches.
func (p Protocol) String() string {
	switch p {
	case Protocol03:
		return "redis-streams-adapter 0.3.x"
	case Protocol02:
		return "redis-streams-adapter 0.2.x"
	}
	return fmt.Sprintf("Protocol(%d)", int(p))
}

// Options configure the adapter. The zero value of every field means its
// default, which is also the default of the Node adapter, so that a Go node
// and a Node node configured with defaults share a cluster.
type Options struct {
	// Protocol is the wire protocol. Every node of a cluster must use the
	// same one. default: Protocol03
	Protocol Protocol

	// StreamName is the Redis stream that carries broadcasts and room
	// operations. default: "socket.io"
	StreamName string

	// StreamCount spreads namespaces over that many streams, named
	// "<StreamName>-<i>", as the Node option streamCount does. Only
	// Protocol03 has it. default: 1 (a single stream named StreamName)
	StreamCount int

	// ChannelPrefix starts the names of the pub/sub channels of
	// Protocol03. default: "socket.io"
	ChannelPrefix string

	// MaxLen trims the stream on every XADD (MAXLEN ~). default: 10000
	MaxLen int64

	// ReadCount is the COUNT of each XREAD. default: 100
	ReadCount int64

	// BlockTime is the BLOCK of each XREAD. The reader uses a connection
	// of its own, which Close interrupts, so this does not delay Close
	// unless the client is neither a *redis.Client nor a
	// *redis.ClusterClient. default: 5s
	BlockTime time.Duration

	// OnlyPlaintext writes stream data as JSON even when it holds binary
	// values, which JSON turns into base64 strings, as the Node option
	// onlyPlaintext does. default: false (binary data is sent as base64
	// msgpack)
	OnlyPlaintext bool

	// HeartbeatInterval is how long a node stays silent before it
	// publishes a heartbeat. Only Protocol02 has heartbeats. default: 5s
	HeartbeatInterval time.Duration

	// HeartbeatTimeout is how long a node may stay silent before the
	// others stop counting it and stop waiting for its responses. Only
	// Protocol02 has heartbeats. default: 10s
	HeartbeatTimeout time.Duration

	// RequestsTimeout bounds a cluster request (FetchSockets without its
	// own timeout, ServerSideEmit with an ack) and every Redis command the
	// adapter sends. default: 5s
	RequestsTimeout time.Duration

	// EmitterKey is the key option of the @socket.io/redis-emitter whose
	// messages are delivered: broadcasts on "<EmitterKey>#<nsp>#" and
	// "<EmitterKey>#<nsp>#<room>#", requests on
	// "<EmitterKey>-request#<nsp>#". default: "socket.io"
	EmitterKey string

	// DisableEmitter turns off the emitter subscriptions. default: false
	DisableEmitter bool

	// HealthCheckInterval is how long the subscription may stay silent
	// before it is pinged; a ping unanswered for as long again counts as a
	// lost connection. default: 5s
	HealthCheckInterval time.Duration

	// Logger receives connection losses and recoveries (Warn, Info) and
	// undecodable messages (Debug). default: slog.Default()
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.StreamName == "" {
		o.StreamName = "socket.io"
	}
	if o.StreamCount == 0 {
		o.StreamCount = 1
	}
	if o.ChannelPrefix == "" {
		o.ChannelPrefix = "socket.io"
	}
	if o.MaxLen == 0 {
		o.MaxLen = 10_000
	}
	if o.ReadCount == 0 {
		o.ReadCount = 100
	}
	if o.BlockTime == 0 {
		o.BlockTime = 5 * time.Second
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = 5 * time.Second
	}
	if o.HeartbeatTimeout == 0 {
		o.HeartbeatTimeout = 10 * time.Second
	}
	if o.RequestsTimeout == 0 {
		o.RequestsTimeout = 5 * time.Second
	}
	if o.EmitterKey == "" {
		o.EmitterKey = "socket.io"
	}
	if o.HealthCheckInterval == 0 {
		o.HealthCheckInterval = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

func (o Options) validate() error {
	switch {
	case o.Protocol != Protocol03 && o.Protocol != Protocol02:
		return fmt.Errorf("unknown %v", o.Protocol)
	case o.StreamCount < 1:
		return fmt.Errorf("StreamCount %d < 1", o.StreamCount)
	case o.StreamCount > 1 && o.Protocol != Protocol03:
		return fmt.Errorf("StreamCount %d needs Protocol03", o.StreamCount)
	case o.MaxLen < 0, o.ReadCount < 0:
		return fmt.Errorf("negative MaxLen or ReadCount")
	case o.BlockTime < time.Millisecond:
		return fmt.Errorf("BlockTime %v < 1ms", o.BlockTime)
	case o.HeartbeatInterval < 0, o.HeartbeatTimeout < 0, o.RequestsTimeout < 0, o.HealthCheckInterval < 0:
		return fmt.Errorf("negative duration")
	}
	return nil
}
