// A Node socket.io server on the official @socket.io/redis-streams-adapter,
// for the interop tests of the Go redisadapter package.
//
//   node node-server.mjs <redis-url> <stream-name> <channel-prefix> [0.3|0.2]
//
// 0.3 (default) uses @socket.io/redis-streams-adapter (0.3.x) with the
// "redis" client; 0.2 uses the 0.2.x release (package alias
// redis-streams-adapter-0.2) with ioredis, which 0.2.x needs for its
// blocking reads. It listens on a free loopback port, prints
// {"port":N} on stdout and exits when stdin closes.
//
// Client events: "join" (room) joins a room; "relay" (room, payload)
// broadcasts "from-node" (payload) to room; "count" (room) answers with the
// ids of the sockets in room on every node (fetchSockets); "sse" answers
// with the replies of the other nodes to the server-side event "ping-nodes".
// Server-side event "ping-nodes" is answered with "pong-node".
import { createServer } from "node:http";
import { Server } from "socket.io";

const [url, streamName, channelPrefix, version = "0.3"] = process.argv.slice(2);
if (!url || !streamName || !channelPrefix) {
  console.error("usage: node node-server.mjs <redis-url> <stream-name> <channel-prefix> [0.3|0.2]");
  process.exit(2);
}

let adapter;
const closers = [];
if (version === "0.2") {
  const { default: Redis } = await import("ioredis");
  const { createAdapter } = await import("redis-streams-adapter-0.2");
  const client = new Redis(url);
  client.on("error", (err) => console.error("redis:", err.message));
  closers.push(() => client.disconnect());
  adapter = createAdapter(client, { streamName, heartbeatInterval: 200, heartbeatTimeout: 1000 });
} else {
  const { createClient } = await import("redis");
  const { createAdapter } = await import("@socket.io/redis-streams-adapter");
  const client = createClient({ url });
  client.on("error", (err) => console.error("redis:", err.message));
  await client.connect();
  closers.push(() => client.destroy());
  adapter = createAdapter(client, { streamName, channelPrefix, blockTimeInMs: 200 });
}

const httpServer = createServer();
const io = new Server(httpServer, { adapter });

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    ack?.("joined");
  });
  socket.on("relay", (room, payload, ack) => {
    io.to(room).emit("from-node", payload);
    ack?.("relayed");
  });
  socket.on("count", async (room, ack) => {
    try {
      const sockets = await io.in(room).fetchSockets();
      ack(sockets.map((s) => s.id).sort());
    } catch (err) {
      ack({ error: String(err) });
    }
  });
  socket.on("sse", async (ack) => {
    try {
      ack(await io.serverSideEmitWithAck("ping-nodes", "from-node"));
    } catch (err) {
      ack({ error: String(err) });
    }
  });
});
io.on("ping-nodes", (arg, cb) => cb("pong-node"));

httpServer.listen(0, "127.0.0.1", () => {
  console.log(JSON.stringify({ port: httpServer.address().port }));
});

process.stdin.resume();
process.stdin.on("end", async () => {
  io.close();
  for (const close of closers) close();
  process.exit(0);
});
