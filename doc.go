// Package socketio is a Socket.IO question-and-answer service that runs on
// a github.com/zishang520/socket.io/v2 server. All exported types are safe
// for concurrent use unless their documentation says otherwise. The
// requests of one socket are handled one at a time, in the order the client
// sent them; requests of different sockets run concurrently, so hooks,
// answerers, suggesters and storages are called concurrently across
// sockets and must be safe for that. Every such call takes a ctx first; each
// type documents when it is cancelled.
//
// # Registering the service
//
// Register wires the events of docs/protocol.md (ask_question, get_history,
// join_room, …) onto one namespace and returns a *Server. Serve its
// Handler, not the Socket.IO server's own, and Close it on shutdown:
//
//	kb, err := socketio.NewKnowledgeBase(entries) // or Options.Answerer
//	…
//	sio := socket.NewServer(nil, nil)
//	qa, err := socketio.Register(sio, socketio.Options{KnowledgeBase: kb})
//	…
//	mux.Handle("/socket.io/", qa.Handler())
//	…
//	err = qa.Close(ctx) // on shutdown; ctx bounds the answers in flight
//
// The zero Options means the defaults; each field documents its own.
//
// # Hooks and priorities
//
// A hook is a type that embeds BaseHook (a name and a priority) and
// implements only the event interfaces it cares about, such as
// BeforeConnectHook or AfterQuestionHook. Higher priorities run first. The
// Server's HookManager (Server.Hooks) starts with the built-in hooks:
//
//	auth        100  blocklist, tokens, connection limit, rooms, content
//	rate_limit   80  questions per session and per address
//	storage      60  session activity and popular questions
//	(yours)      50  the usual priority for user hooks
//	metrics      10  counters, read with MetricsHook.Snapshot
//
// Hooks may be registered, replaced, disabled and enabled while the server
// runs; dispatch takes no lock. A before-hook refuses an event by returning
// an error; after-hooks only observe. A panicking hook is recovered.
//
// # Access rules
//
// Auth holds the blocklist (BlockIP, UnblockIP, BlockedReason), the
// connection and question limits, the token verifier and the room policy,
// and reports ConnectionStats. Build one with NewAuth and pass it in
// Options.Auth, or use the default and reach it with Server.Auth.
//
// # Storage
//
// Storage keeps sessions, tasks and history. The default is a
// MemoryStorage, which suits one process; with Options.Redis the default is
// a RedisStorage, and Auth's limits, blocklist and connection counts live
// in Redis too, so several processes share one state. Tasks and history
// belong to an owner: the user when a token named one, otherwise the
// session (see OwnerOf).
//
// # Several nodes
//
// Nodes that share a Redis also need a cluster adapter on their Socket.IO
// server for rooms and answers to cross them: package redisadapter is one,
// compatible with the official Node Redis tooling. Behind a load balancer,
// long-polling clients need sticky sessions (every request of a polling
// session must reach the node that holds it); websocket-only clients do
// not.
//
// # Answers and suggestions
//
// An Answerer answers questions from a worker pool, streaming pieces
// through a ChunkWriter when the client asked for it; AnswererFunc adapts a
// function. A Suggester serves get_suggestions. KnowledgeBase provides both
// for a fixed set of questions (KnowledgeBase.Answerer, NewSuggester).
//
// # Errors
//
// Every error a client can see carries a code of docs/protocol.md. Refuse with
// a sentinel (ErrForbidden, ErrRateLimited, …) or an *Error of your own,
// with RetryAfter where it applies; match with errors.Is, errors.As or
// ErrorCode. An error without a code reaches the client as "internal" (or
// "rejected" / "forbidden" when a hook refused), its text only in the log.
//
// # What the library guards against
//
// It is built on socket.io/v2 v2.5.0 and shields the service from that
// version's defects:
//
//   - Ordering: v2.5.0 delivers each event in its own goroutine, so one
//     client's events can run out of order; the library restores the order.
//   - Panics: v2.5.0 recovers nothing, so a panicking listener kills the
//     process; panics in hooks, answerers, handlers and HTTP serving are
//     recovered and logged, and the client gets "internal".
//   - Malformed frames: some frames panic inside the v2.5.0 parser; they are
//     refused, and only the offending connection is closed.
//   - Handshake race: v2.5.0 may lose a CONNECT that follows the open packet
//     at once; Handler holds the client back until the connection is known.
//   - Body limit: v2.5.0 checks the polling body against the Content-Length
//     the client claims; Handler enforces it on the bytes actually read.
//   - Early events: v2.5.0 replies to CONNECT before it registers the socket;
//     events sent at once are held until the service listens.
//   - Broadcast loss: v2.5.0's websocket transport drops the rest of a batch
//     after a pre-encoded frame; Handler turns pre-encoding off.
//   - Emit flags: v2.5.0's per-socket Timeout/Compress/Volatile race under
//     concurrent emits; the library never sets them.
package socketio
