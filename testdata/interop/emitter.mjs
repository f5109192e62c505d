// Publishes with the official @socket.io/redis-emitter, then exits.
//
//   node emitter.mjs <redis-url> <key> <room>
//
// It emits "emitter-room" to <room>, "emitter-all" to every socket,
// "emitter-except" to every socket not in <room>, makes the sockets of
// <room> join "emitter-joined", and sends the server-side event
// "emitter-sse", all in namespace "/".
import { createClient } from "redis";
import { Emitter } from "@socket.io/redis-emitter";

const [url, key, room] = process.argv.slice(2);
if (!url || !key || !room) {
  console.error("usage: node emitter.mjs <redis-url> <key> <room>");
  process.exit(2);
}
const client = createClient({ url });
client.on("error", (err) => console.error("redis:", err.message));
await client.connect();

const emitter = new Emitter(client, { key });
emitter.to(room).emit("emitter-room", "to-room", 1);
emitter.emit("emitter-all", { all: true });
emitter.except(room).emit("emitter-except");
emitter.in(room).socketsJoin("emitter-joined");
emitter.serverSideEmit("emitter-sse", "from-emitter");

// Commands run in order on one connection: once PING is answered, every
// PUBLISH above has been.
await client.ping();
client.destroy();
console.log("published");
