// Package sioclient is a small Socket.IO v5 / Engine.IO v4 client for wire
// tests. It speaks the real protocol over a real TCP connection, using either
// the websocket transport or HTTP long-polling (never both: there is no
// upgrade), and joins exactly one namespace per Client.
//
// Concurrency: all methods of *Client may be called concurrently. Each Client
// runs one background goroutine, which reads from the transport, answers
// Engine.IO pings and queues what the server sends; Close stops it and
// returns only after it has exited. No other goroutine is started per call.
//
// Incoming events are kept in one queue in arrival order and none is dropped:
// Next takes the oldest event with a given name, NextAny the oldest of all.
// The queue is unbounded; a test that never reads it keeps everything.
//
// JSON arguments are decoded with encoding/json into any: objects become
// map[string]any, arrays []any and numbers float64.
//
// Only text packets are supported. Binary frames are skipped; an event or ack
// that carried binary attachments is still delivered, with the attachment
// placeholders ({"_placeholder":true,"num":N}) left in its arguments.
package sioclient
