// Package sioclient is a small Socket.IO v5 / Engine.IO v4 client for wire
// tests. It speaks the real protocol over a real TCP connection, using either
// the websocket transport or HTTP long-polling (never both: there is no
// upgrade), and joins exactly one namespace per Client.
//
// Concurrency: all methods of *Client may be called concurrently. Each Client
// runs one background goroutine, which reads from the transport, answers
// Engine.IO pings and queues what the server sends; Close stops it and
// returns only after it has exited. No other goroutine is started per call,
// and nothing is sent after Close has sent its DISCONNECT.
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
//
// When the server disconnects the socket ("41"), Done is closed at once but
// the transport is read until the server closes it or Close is called, so
// that a polling server sees its close packet collected.
//
// zishang520/socket.io v2.5.0 sets sessions and sockets up asynchronously
// after it has already answered, so a client that writes at once can lose
// its CONNECT or be disconnected for "invalid state". Dial therefore pauses
// briefly (Options.Settle) and starts over when a CONNECT goes unanswered
// (Options.ConnectRetry); set both negative to reproduce the raw behaviour.
package sioclient
