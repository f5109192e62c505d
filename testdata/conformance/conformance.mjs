#!/usr/bin/env node
// Official-client conformance suite for the Q&A wire contract
// (docs/protocol.md in this repository, kept in step with the team's
// contract and with the code).
//
// It drives a running server with the official JavaScript socket.io-client
// (pinned in package.json) and checks every rule of docs/protocol.md that one
// node with default limits can show. Each check is independent and opens
// its own fresh clients (so its own sessions) where state matters.
//
// Usage:
//   node conformance.mjs --url http://127.0.0.1:PORT --transport websocket|polling
//   (the URL may also come from the CONFORMANCE_URL environment variable)
// Options:
//   --only a,b        run only the checks whose names contain one of these
//   --list            print the check names and exit
//   --check-timeout MS  time allowed to each check (default 20000)
//   --total-timeout MS  time allowed to the whole run (default 300000)
//   --per-ip-max N    run the per-address rate check only when the server's
//                     announced max_questions_per_minute_per_ip is <= N
//                     (default 200); otherwise it is printed as "skip"
//   --verbose         print extra detail on failures
//
// Output: one line per check, "ok NAME" or "FAIL NAME: REASON" (or
// "skip NAME: REASON", not counted), then exactly "N passed, N failed"
// alone on a line. Exit code 1 when any check failed (or the server could
// not be reached), 2 on bad usage.
//
// Server settings the suite expects (run.sh sets them):
//   * every default limit of docs/protocol.md: 5 questions/min per session,
//     60/min per address, 2000-character questions, 3 open tasks,
//     50 rooms per socket, 10 connections per address, "private:*" rooms
//     forbidden, no token verifier, no trusted proxies needed;
//   * the built-in (knowledge-base) answerer, streaming in several chunks,
//     with QA_ANSWER_DELAY=30ms per streamed chunk, so that a streamed
//     answer stays unfinished for a few hundred milliseconds (long enough
//     to cancel it and to hold 3 tasks open);
//   * a FRESH server process (or one idle for over 60 s) for each run: all
//     checks connect from 127.0.0.1 and so share the per-address question
//     budget (60/min) and connection limit (10). The suite runs its checks
//     one after the other, keeps its own questions to about 35 per run, and
//     spends the rest of the budget in the last check, rate_limited_per_ip,
//     which asks until the server refuses with rate_limited. A runner that
//     must reuse one server for several runs within a minute can start it
//     with QA_MAX_QUESTIONS_PER_MINUTE_PER_IP=1000: the suite reads the
//     limit from the "connected" event and then skips that one check.
//
// Not reachable with these settings (so not checked): token verification
// (user_id, unauthorized, per-user data), ip_blocked, rejected, unavailable,
// internal, trusted proxy headers, answer_failed / timeout, clusters.

import { io } from 'socket.io-client';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';

// ---------------------------------------------------------------- options

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      url: { type: 'string' },
      transport: { type: 'string', default: 'websocket' },
      only: { type: 'string' },
      list: { type: 'boolean', default: false },
      'check-timeout': { type: 'string', default: '20000' },
      'total-timeout': { type: 'string', default: '300000' },
      'per-ip-max': { type: 'string', default: '200' },
      verbose: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  }));
} catch (err) {
  console.error(`conformance: ${err.message}`);
  process.exit(2);
}
if (args.help) {
  console.log('usage: node conformance.mjs --url http://127.0.0.1:PORT[,http://127.0.0.1:PORT2…] --transport websocket|polling [--only a,b] [--list]');
  process.exit(0);
}
const URL_ = args.url || process.env.CONFORMANCE_URL;
// Several comma-separated URLs are the nodes of one cluster: each new
// client connects to the next one in turn, so that every check spreads its
// clients over the nodes (rooms, resume, limits and answers then cross
// nodes).
const URLS = (URL_ || '').split(',').map((u) => u.trim()).filter(Boolean);
let nextURL = 0;
const TRANSPORT = args.transport;
const CHECK_TIMEOUT = Number(args['check-timeout']);
const TOTAL_TIMEOUT = Number(args['total-timeout']);
const PER_IP_MAX = Number(args['per-ip-max']);
if (!args.list) {
  if (!URL_) {
    console.error('conformance: no server URL: pass --url http://127.0.0.1:PORT or set CONFORMANCE_URL');
    process.exit(2);
  }
  if (TRANSPORT !== 'websocket' && TRANSPORT !== 'polling') {
    console.error(`conformance: --transport must be websocket or polling, not ${JSON.stringify(TRANSPORT)}`);
    process.exit(2);
  }
  if (![CHECK_TIMEOUT, TOTAL_TIMEOUT, PER_IP_MAX].every((n) => Number.isFinite(n) && n > 0)) {
    console.error('conformance: --check-timeout, --total-timeout and --per-ip-max take positive numbers');
    process.exit(2);
  }
}

const ACK_TIMEOUT = 5000; // an ack or reply event must come within this
const QUIET_MS = 300; // how long "nothing is pushed" is watched for

// A streamed answer of the demo knowledge base that is long (about 300
// characters, so ~19 chunks, ~0.6 s at 30 ms a chunk).
const LONG_Q = 'What is the difference between Socket.IO and WebSocket?';
// Other questions of the demo knowledge base, to vary asks.
const QUESTIONS = [
  'What is Socket.IO?', 'What is a room?', 'How do I ask a question?',
  'How do I enable streaming answers?', 'How do I cancel a question?',
  'How do I get my history?', 'How do suggestions work?', 'What is the rate limit?',
  'What is Go?', 'What is a goroutine?', 'What is Redis?', 'What is a hook?',
];
let qCounter = 0;
const nextQ = () => QUESTIONS[qCounter++ % QUESTIONS.length];

const REPLY = {
  join_room: 'room_joined',
  leave_room: 'room_left',
  ask_question: 'question_received',
  get_suggestions: 'suggestions',
  get_history: 'history',
  clear_history: 'history_cleared',
  get_task: 'task',
  cancel_task: 'task_cancelled',
};
const REQUESTS = Object.keys(REPLY);
const PUSHED = ['connected', 'task_status', 'answer_chunk', 'answer', 'answer_error', 'error'];

// Every question the server accepted during this run, by client time:
// the per-address check needs to know how much of the budget is spent.
const accepted = [];
// What the first "connected" event announced.
let serverLimits = null;

// ---------------------------------------------------------------- helpers

class CheckFailure extends Error {}
class Skip extends Error {}

function j(x) {
  let s;
  try { s = JSON.stringify(x); } catch { s = String(x); }
  if (s === undefined) s = String(x);
  return s.length > 300 ? s.slice(0, 300) + '…' : s;
}
function assert(cond, msg) {
  if (!cond) throw new CheckFailure(msg);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rand = () => randomBytes(4).toString('hex');
const isObj = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);
const TIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
function isTime(s) {
  return typeof s === 'string' && TIME_RE.test(s) && !Number.isNaN(Date.parse(s));
}
function assertTime(s, what) {
  assert(isTime(s), `${what} is not an RFC 3339 UTC time with milliseconds (YYYY-MM-DDTHH:MM:SS.mmmZ): ${j(s)}`);
}
const isNonNegInt = (n) => Number.isInteger(n) && n >= 0;
const STATUSES = ['pending', 'processing', 'completed', 'failed', 'cancelled'];

// Conn is one Socket.IO client with a log of everything it received, in
// arrival order: events ("event"), acknowledgements ("ack"), connect errors
// and disconnections. Ack entries are logged inside the ack callback, so the
// log order is the order in which the client handled the frames.
class Conn {
  constructor(t, auth = {}) {
    if (t.aborted) throw new CheckFailure('check already timed out');
    this.t = t;
    this.log = [];
    this.listeners = new Set();
    this.socket = io(URLS[nextURL++ % URLS.length], {
      transports: [TRANSPORT],
      forceNew: true,
      reconnection: false,
      timeout: 8000,
      auth,
    });
    this.socket.onAny((name, ...a) => {
      if (name === 'question_received' && a[0] && a[0].ok === true) accepted.push(Date.now());
      this.push({ kind: 'event', name, data: a[0], args: a });
    });
    this.socket.on('connect_error', (err) => this.push({ kind: 'connect_error', err }));
    this.socket.on('disconnect', (reason) => this.push({ kind: 'disconnect', reason }));
    t.conns.push(this);
  }

  push(e) {
    e.t = Date.now();
    e.i = this.log.length;
    this.log.push(e);
    for (const l of [...this.listeners]) l();
  }

  mark() {
    return this.log.length;
  }

  // wait resolves with the first log entry at index >= from that matches.
  wait(pred, { from = 0, timeout = ACK_TIMEOUT, what = 'an event' } = {}) {
    return new Promise((resolve, reject) => {
      let timer;
      const check = () => {
        for (let i = from; i < this.log.length; i++) {
          if (pred(this.log[i])) {
            clearTimeout(timer);
            this.listeners.delete(check);
            resolve(this.log[i]);
            return;
          }
        }
      };
      timer = setTimeout(() => {
        this.listeners.delete(check);
        reject(new CheckFailure(`timed out after ${timeout} ms waiting for ${what}`));
      }, timeout);
      this.listeners.add(check);
      check();
    });
  }

  waitEvent(name, opts = {}) {
    const { pred = () => true } = opts;
    return this.wait((e) => e.kind === 'event' && e.name === name && pred(e.data), { what: `"${name}"`, ...opts });
  }

  events(name, from = 0) {
    return this.log.slice(from).filter((e) => e.kind === 'event' && (name === undefined || e.name === name));
  }

  // taskEvents lists the pushed events about one task, in arrival order.
  taskEvents(taskId, from = 0) {
    return this.log.slice(from).filter((e) => e.kind === 'event' && isObj(e.data) && e.data.task_id === taskId &&
      ['task_status', 'answer_chunk', 'answer', 'answer_error'].includes(e.name));
  }

  async connect() {
    let e;
    try {
      e = await this.wait(
        (e) => (e.kind === 'event' && e.name === 'connected') || e.kind === 'connect_error' || e.kind === 'disconnect',
        { timeout: 10000, what: '"connected"' });
    } catch (err) {
      const engine = this.socket.io.engine;
      throw new CheckFailure(`${err.message} (Socket.IO CONNECT ${this.socket.connected ? 'received' : 'not received'}; ` +
        `Engine.IO ${engine ? `${engine.readyState} over ${engine.transport && engine.transport.name}` : 'not started'}; ` +
        `events: ${j(this.log.map((x) => x.name || x.kind))})`);
    }
    if (e.kind === 'connect_error') {
      throw new CheckFailure(`connect_error: ${describeConnectError(e.err)}`);
    }
    if (e.kind === 'disconnect') throw new CheckFailure(`disconnected before "connected": ${e.reason}`);
    this.connected = e.data;
    if (serverLimits === null && isObj(e.data) && isObj(e.data.limits)) serverLimits = e.data.limits;
    return e.data;
  }

  // ack sends a request with an acknowledgement and resolves with the reply.
  ack(ev, ...payload) {
    return new Promise((resolve, reject) => {
      this.socket.timeout(ACK_TIMEOUT).emit(ev, ...payload, (err, ...replies) => {
        if (err) {
          reject(new CheckFailure(`no ack for ${ev} ${j(payload)} within ${ACK_TIMEOUT} ms`));
          return;
        }
        this.push({ kind: 'ack', name: ev, data: replies[0], args: replies });
        if (ev === 'ask_question' && isObj(replies[0]) && replies[0].ok === true) accepted.push(Date.now());
        if (replies.length !== 1) {
          reject(new CheckFailure(`ack for ${ev} called with ${replies.length} arguments, want 1: ${j(replies)}`));
          return;
        }
        resolve(replies[0]);
      });
    });
  }

  // send sends a request without an acknowledgement and resolves with the
  // reply event or the "error" event for it: {name, data}.
  async send(ev, ...payload) {
    const from = this.mark();
    this.socket.emit(ev, ...payload);
    const reply = REPLY[ev];
    return this.wait(
      (e) => e.kind === 'event' && (e.name === reply || (e.name === 'error' && isObj(e.data) && e.data.event === ev)),
      { from, what: `"${reply}" or "error" for ${ev} ${j(payload)}` });
  }

  close() {
    try { this.socket.disconnect(); } catch { /* already closed */ }
  }
}

// describeConnectError says why a connection failed: a refusal's code and
// data, or the transport's own error (HTTP status, socket error).
function describeConnectError(err) {
  let s = String(err && err.message);
  if (err && err.data !== undefined) s += ` ${j(err.data)}`;
  const d = err && err.description;
  if (typeof d === 'number') s += ` (HTTP status ${d})`;
  else if (d && (d.message || (d.error && d.error.message))) s += ` (${d.message || d.error.message})`;
  return s;
}

async function client(t, auth) {
  const c = new Conn(t, auth);
  await c.connect();
  return c;
}

function expectOk(reply, what) {
  assert(isObj(reply) && reply.ok === true, `${what}: want ok:true, got ${j(reply)}`);
  return reply;
}
function expectErr(reply, code, what) {
  assert(isObj(reply) && reply.ok === false && isObj(reply.error) && reply.error.code === code &&
    typeof reply.error.message === 'string',
  `${what}: want {ok:false, error:{code:"${code}", message}}, got ${j(reply)}`);
  return reply.error;
}
function expectReplyEvent(e, ev, what) {
  assert(e.name === REPLY[ev], `${what}: want event "${REPLY[ev]}", got "${e.name}" ${j(e.data)}`);
  return expectOk(e.data, `${what} ("${REPLY[ev]}" event)`);
}
function expectErrorEvent(e, ev, code, what) {
  assert(e.name === 'error' && isObj(e.data) && e.data.event === ev && e.data.code === code &&
    typeof e.data.message === 'string',
  `${what}: want "error" event {event:"${ev}", code:"${code}", message}, got "${e.name}" ${j(e.data)}`);
  return e.data;
}

// refused checks one request both ways: with an ack (error reply) and
// without (an "error" event naming the request).
async function refused(c, ev, payload, code, what) {
  const label = what || `${ev} ${j(payload)}`;
  expectErr(await c.ack(ev, ...payload), code, `${label} with ack`);
  expectErrorEvent(await c.send(ev, ...payload), ev, code, `${label} without ack`);
}
// succeeds checks one request both ways and returns [ackReply, eventReply].
async function succeeds(c, ev, payload, what) {
  const label = what || `${ev} ${j(payload)}`;
  const a = expectOk(await c.ack(ev, ...payload), `${label} with ack`);
  const e = expectReplyEvent(await c.send(ev, ...payload), ev, `${label} without ack`);
  return [a, e];
}

async function ask(c, payload, what = 'ask_question') {
  const r = await c.ack('ask_question', payload);
  expectOk(r, `${what} ${j(payload).slice(0, 80)}`);
  assert(typeof r.task_id === 'string' && r.task_id !== '', `${what}: task_id missing: ${j(r)}`);
  assert(r.status === 'pending', `${what}: status ${j(r.status)}, want "pending"`);
  return r.task_id;
}

// finished waits for the answer or answer_error of a task.
function finished(c, taskId, timeout = 15000) {
  return c.wait((e) => e.kind === 'event' && (e.name === 'answer' || e.name === 'answer_error') &&
    isObj(e.data) && e.data.task_id === taskId, { timeout, what: `answer or answer_error for ${taskId}` });
}
async function answered(c, taskId, timeout) {
  const e = await finished(c, taskId, timeout);
  assert(e.name === 'answer', `task ${taskId} ended with ${e.name} ${j(e.data)}`);
  return e.data;
}

function checkTask(task, what, { status, taskId, question, room } = {}) {
  assert(isObj(task), `${what}: Task is not an object: ${j(task)}`);
  assert(typeof task.task_id === 'string' && task.task_id !== '', `${what}: task_id: ${j(task)}`);
  if (taskId !== undefined) assert(task.task_id === taskId, `${what}: task_id ${j(task.task_id)}, want ${taskId}`);
  assert(typeof task.question === 'string', `${what}: question: ${j(task)}`);
  if (question !== undefined) assert(task.question === question, `${what}: question ${j(task.question)}, want ${j(question)}`);
  assert(STATUSES.includes(task.status), `${what}: status ${j(task.status)}`);
  if (status !== undefined) assert(task.status === status, `${what}: status ${j(task.status)}, want ${status}`);
  assertTime(task.asked_at, `${what}: asked_at`);
  assertTime(task.updated_at, `${what}: updated_at`);
  if (task.answered_at !== undefined) assertTime(task.answered_at, `${what}: answered_at`);
  if (task.status === 'completed') {
    assert(typeof task.answer === 'string', `${what}: completed Task without answer: ${j(task)}`);
    assert(task.answered_at !== undefined, `${what}: completed Task without answered_at: ${j(task)}`);
  }
  if (task.status === 'failed') assert(task.error !== undefined, `${what}: failed Task without error: ${j(task)}`);
  if (task.error !== undefined) {
    assert(isObj(task.error) && typeof task.error.code === 'string' && typeof task.error.message === 'string',
      `${what}: error is not {code, message}: ${j(task.error)}`);
  }
  if (task.room !== undefined) assert(typeof task.room === 'string', `${what}: room: ${j(task.room)}`);
  if (room !== undefined) assert(task.room === room, `${what}: room ${j(task.room)}, want ${j(room)}`);
  return task;
}

function checkAnswer(a, what, { taskId, question } = {}) {
  assert(isObj(a), `${what}: answer is not an object`);
  if (taskId !== undefined) assert(a.task_id === taskId, `${what}: task_id ${j(a.task_id)}, want ${taskId}`);
  if (question !== undefined) assert(a.question === question, `${what}: question ${j(a.question)}, want ${j(question)}`);
  assert(typeof a.answer === 'string' && a.answer !== '', `${what}: answer text: ${j(a.answer)}`);
  assert(a.status === 'completed', `${what}: status ${j(a.status)}, want "completed"`);
  assertTime(a.asked_at, `${what}: asked_at`);
  assertTime(a.answered_at, `${what}: answered_at`);
  assert(Date.parse(a.answered_at) >= Date.parse(a.asked_at), `${what}: answered_at ${a.answered_at} before asked_at ${a.asked_at}`);
  assert(isNonNegInt(a.duration_ms), `${what}: duration_ms is not a non-negative integer: ${j(a.duration_ms)}`);
  if (a.sources !== undefined) {
    assert(Array.isArray(a.sources) && a.sources.every((s) => typeof s === 'string'), `${what}: sources: ${j(a.sources)}`);
  }
}

// quiet asserts that nothing matching pred arrives during ms.
async function quiet(c, pred, what, ms = QUIET_MS) {
  const from = c.mark();
  await sleep(ms);
  const got = c.log.slice(from).filter(pred);
  assert(got.length === 0, `${what}: got ${got.map((e) => `${e.name || e.kind} ${j(e.data)}`).join('; ')}`);
}

const memberCount = (m) => (Array.isArray(m) ? m.length : m);
function checkMembers(r, want, what) {
  const ok = (Number.isInteger(r.members) && r.members >= 0) ||
    (Array.isArray(r.members) && r.members.every((s) => typeof s === 'string'));
  assert(ok, `${what}: members is neither a count nor a list of socket ids: ${j(r.members)}`);
  assert(memberCount(r.members) === want, `${what}: members ${j(r.members)}, want ${want} member(s)`);
}

// ---------------------------------------------------------------- checks

const checks = [];
function check(name, fn, opts = {}) {
  checks.push({ name, fn, timeout: opts.timeout || CHECK_TIMEOUT });
}

check('server_reachable', async (t) => {
  await client(t);
});

check('connected_payload', async (t) => {
  const before = Date.now();
  const a = await client(t);
  const b = await client(t);
  const p = a.connected;
  assert(isObj(p), `"connected" payload is not an object: ${j(p)}`);
  assert(typeof p.session_id === 'string' && p.session_id.startsWith('s_') && p.session_id.length > 2,
    `session_id ${j(p.session_id)}, want a string "s_…"`);
  assert(typeof p.resume_token === 'string' && p.resume_token.length >= 16, `resume_token ${j(p.resume_token)}`);
  assert(p.resumed === false, `resumed ${j(p.resumed)}, want false`);
  assert(!('user_id' in p), `user_id present without a token: ${j(p.user_id)}`);
  assertTime(p.server_time, 'server_time');
  const skew = Date.parse(p.server_time) - before;
  assert(skew > -5000 && skew < 15000, `server_time ${p.server_time} is far from the client clock`);
  assert(isObj(p.limits), `limits is not an object: ${j(p.limits)}`);
  assert(p.limits.max_questions_per_minute === 5, `limits.max_questions_per_minute ${j(p.limits.max_questions_per_minute)}, want 5`);
  assert(Number.isInteger(p.limits.max_questions_per_minute_per_ip) && p.limits.max_questions_per_minute_per_ip > 0,
    `limits.max_questions_per_minute_per_ip ${j(p.limits.max_questions_per_minute_per_ip)}`);
  assert(p.limits.max_question_length === 2000, `limits.max_question_length ${j(p.limits.max_question_length)}, want 2000`);
  const q = b.connected;
  assert(q.session_id !== p.session_id, 'two fresh connections got the same session_id');
  assert(q.resume_token !== p.resume_token, 'two sessions got the same resume_token');
  assert(a.events('connected').length === 1, '"connected" sent more than once');
});

check('resume_restores_session', async (t) => {
  const a = await client(t);
  const sid = a.connected.session_id;
  const id = await ask(a, { question: LONG_Q, stream: true });
  a.close(); // leave while the answer is still being written
  await sleep(100);
  const b = await client(t, { resume: a.connected.resume_token });
  assert(b.connected.session_id === sid, `resumed session_id ${j(b.connected.session_id)}, want ${sid}`);
  assert(b.connected.resumed === true, `resumed ${j(b.connected.resumed)}, want true`);
  assert(typeof b.connected.resume_token === 'string' && b.connected.resume_token !== '', 'no resume_token after resuming');
  assertTime(b.connected.server_time, 'server_time');
  // The answer finishes although the asker left, and is readable after resuming.
  let task;
  for (let i = 0; i < 60; i++) {
    const r = expectOk(await b.ack('get_task', { task_id: id }), 'get_task after resume');
    task = r.task;
    if (task && ['completed', 'failed', 'cancelled'].includes(task.status)) break;
    await sleep(100);
  }
  checkTask(task, 'task after resume', { status: 'completed', taskId: id, question: LONG_Q });
  const h = expectOk(await b.ack('get_history', {}), 'get_history after resume');
  assert(Array.isArray(h.items) && h.items.some((it) => it.task_id === id), `history after resume lacks ${id}: ${j(h)}`);
});

check('resume_forged_token_new_session', async (t) => {
  const a = await client(t);
  const tok = a.connected.resume_token;
  const mid = Math.floor(tok.length / 2);
  const flipped = tok.slice(0, mid) + (tok[mid] === 'A' ? 'B' : 'A') + tok.slice(mid + 1);
  for (const forged of ['forged-token', flipped, tok + 'x', '']) {
    const b = await client(t, { resume: forged });
    assert(b.connected.resumed === false, `resume ${j(forged)}: resumed ${j(b.connected.resumed)}, want false`);
    assert(b.connected.session_id !== a.connected.session_id, `resume ${j(forged)}: got the real session`);
    assert(typeof b.connected.session_id === 'string' && b.connected.session_id !== '', 'no session_id');
    b.close();
  }
});

check('join_leave_room_replies', async (t) => {
  const c = await client(t);
  const r1 = `conf-${rand()}`;
  const r2 = `conf-${rand()}`;
  const a = expectOk(await c.ack('join_room', { room: r1 }), 'join_room with ack');
  assert(a.room === r1, `room_joined room ${j(a.room)}, want ${r1}`);
  checkMembers(a, 1, 'join_room with ack');
  const e = expectReplyEvent(await c.send('join_room', { room: r2 }), 'join_room', 'join_room without ack');
  assert(e.room === r2, `room_joined room ${j(e.room)}, want ${r2}`);
  checkMembers(e, 1, 'join_room without ack');
  const l = expectOk(await c.ack('leave_room', { room: r1 }), 'leave_room with ack');
  assert(l.room === r1, `room_left room ${j(l.room)}, want ${r1}`);
  const le = expectReplyEvent(await c.send('leave_room', { room: r2 }), 'leave_room', 'leave_room without ack');
  assert(le.room === r2, `room_left room ${j(le.room)}, want ${r2}`);
  // members counts sockets in the room.
  const d = await client(t);
  expectOk(await c.ack('join_room', { room: r1 }), 'rejoin');
  const m2 = expectOk(await d.ack('join_room', { room: r1 }), 'second member joins');
  checkMembers(m2, 2, 'second member joins');
  // A left room does not take questions from that socket.
  expectOk(await c.ack('leave_room', { room: r1 }), 'leave again');
  expectErr(await c.ack('ask_question', { question: nextQ(), room: r1 }), 'forbidden', 'ask_question into a left room');
});

check('ask_question_replies', async (t) => {
  const c = await client(t);
  const from = c.mark();
  const q1 = nextQ();
  const id1 = await ask(c, { question: q1 });
  const e = await c.send('ask_question', { question: nextQ() });
  const r = expectReplyEvent(e, 'ask_question', 'ask_question without ack');
  assert(typeof r.task_id === 'string' && r.task_id !== '' && r.task_id !== id1, `question_received task_id ${j(r.task_id)}`);
  assert(r.status === 'pending', `question_received status ${j(r.status)}, want "pending"`);
  await answered(c, id1);
  await answered(c, r.task_id);
  // Without "stream" nothing is chunked.
  assert(c.events('answer_chunk', from).length === 0, 'answer_chunk sent for a question that did not ask to stream');
});

check('get_suggestions_replies', async (t) => {
  const c = await client(t);
  const [a, e] = await succeeds(c, 'get_suggestions', [{ query: 'socket' }]);
  for (const [r, how] of [[a, 'with ack'], [e, 'without ack']]) {
    assert(r.query === 'socket', `${how}: query ${j(r.query)}, want "socket"`);
    assert(Array.isArray(r.suggestions) && r.suggestions.every((s) => typeof s === 'string'),
      `${how}: suggestions is not an array of strings: ${j(r.suggestions)}`);
    assert(r.suggestions.length <= 5, `${how}: ${r.suggestions.length} suggestions by default, want at most 5`);
  }
  assert(j(a.suggestions) === j(e.suggestions), 'the same query gave different suggestions with and without ack');
  const five = expectOk(await c.ack('get_suggestions', { query: 'what', limit: 5 }), 'limit 5');
  const dflt = expectOk(await c.ack('get_suggestions', { query: 'what' }), 'default limit');
  assert(dflt.suggestions.length === five.suggestions.length, `default limit gave ${dflt.suggestions.length}, limit 5 gave ${five.suggestions.length}`);
  const one = expectOk(await c.ack('get_suggestions', { query: 'what', limit: 1 }), 'limit 1');
  assert(one.suggestions.length <= 1, `limit 1 gave ${one.suggestions.length}`);
  // Query length: 1–200 characters after trimming, else invalid_payload.
  for (const q of ['', '   ', 'x'.repeat(201), '😀'.repeat(201)]) {
    await refused(c, 'get_suggestions', [{ query: q }], 'invalid_payload', `get_suggestions query of ${[...q].length} chars ${j(q.slice(0, 6))}`);
  }
  expectOk(await c.ack('get_suggestions', { query: 'x'.repeat(200) }), 'query of 200 characters');
  expectOk(await c.ack('get_suggestions', { query: '😀'.repeat(200) }), 'query of 200 astral characters');
});

check('get_history_replies', async (t) => {
  const c = await client(t);
  const [a, e] = await succeeds(c, 'get_history', [{}]);
  for (const [r, how] of [[a, 'with ack'], [e, 'without ack']]) {
    assert(Array.isArray(r.items) && r.items.length === 0, `${how}: items of a new session: ${j(r.items)}`);
    assert(r.has_more === false, `${how}: has_more ${j(r.has_more)}, want false`);
  }
});

check('clear_history_replies', async (t) => {
  const c = await client(t);
  const [a, e] = await succeeds(c, 'clear_history', [{}]);
  assert(a.deleted === 0, `with ack: deleted ${j(a.deleted)}, want 0`);
  assert(e.deleted === 0, `without ack: deleted ${j(e.deleted)}, want 0`);
});

check('get_task', async (t) => {
  const c = await client(t);
  const q = nextQ();
  const id = await ask(c, { question: q });
  const ans = await answered(c, id);
  const [a, e] = await succeeds(c, 'get_task', [{ task_id: id }]);
  for (const [r, how] of [[a, 'with ack'], [e, 'without ack']]) {
    checkTask(r.task, `get_task ${how}`, { status: 'completed', taskId: id, question: q });
    assert(r.task.answer === ans.answer, `${how}: Task answer differs from the "answer" event`);
    assert(!('room' in r.task), `${how}: room present for a question without room: ${j(r.task.room)}`);
    assert(!('error' in r.task), `${how}: error present on a completed task: ${j(r.task.error)}`);
  }
  // Another session's task, and unknown ids, are not_found (never forbidden).
  const other = await client(t);
  await refused(other, 'get_task', [{ task_id: id }], 'not_found', "get_task of another session's task");
  await refused(other, 'cancel_task', [{ task_id: id }], 'not_found', "cancel_task of another session's task");
  await refused(c, 'get_task', [{ task_id: `t_${rand()}` }], 'not_found', 'get_task of an unknown id');
  await refused(c, 'cancel_task', [{ task_id: `t_${rand()}` }], 'not_found', 'cancel_task of an unknown id');
});

check('shorthand_payloads', async (t) => {
  const c = await client(t);
  const room = `conf-${rand()}`;
  const j1 = expectOk(await c.ack('join_room', room), 'join_room "room" with ack');
  assert(j1.room === room, `room_joined room ${j(j1.room)}`);
  const l1 = expectReplyEvent(await c.send('leave_room', room), 'leave_room', 'leave_room "room" without ack');
  assert(l1.room === room, `room_left room ${j(l1.room)}`);
  const j2 = expectReplyEvent(await c.send('join_room', room), 'join_room', 'join_room "room" without ack');
  assert(j2.room === room, `room_joined room ${j(j2.room)}`);
  const l2 = expectOk(await c.ack('leave_room', room), 'leave_room "room" with ack');
  assert(l2.room === room, `room_left room ${j(l2.room)}`);
  const s1 = expectOk(await c.ack('get_suggestions', 'socket'), 'get_suggestions "query" with ack');
  assert(s1.query === 'socket' && Array.isArray(s1.suggestions), `suggestions reply ${j(s1)}`);
  const s2 = expectReplyEvent(await c.send('get_suggestions', 'socket'), 'get_suggestions', 'get_suggestions "query" without ack');
  assert(s2.query === 'socket' && j(s2.suggestions) === j(s1.suggestions), `suggestions event ${j(s2)}`);
  const q = nextQ();
  const id = await ask(c, q, 'ask_question "question"');
  const ans = await answered(c, id);
  assert(ans.question === q, `answer question ${j(ans.question)}, want ${j(q)}`);
  // No shorthand for the others: a bare string is invalid_payload.
  for (const ev of ['get_history', 'clear_history', 'get_task', 'cancel_task']) {
    await refused(c, ev, ['x'], 'invalid_payload', `${ev} "x"`);
  }
});

check('missing_payload_means_empty_object', async (t) => {
  const c = await client(t);
  const h = expectOk(await c.ack('get_history'), 'get_history with no payload (ack)');
  assert(Array.isArray(h.items), `history items ${j(h.items)}`);
  expectReplyEvent(await c.send('get_history'), 'get_history', 'get_history with no payload (no ack)');
  const cl = expectOk(await c.ack('clear_history'), 'clear_history with no payload (ack)');
  assert(cl.deleted === 0, `deleted ${j(cl.deleted)}`);
  expectReplyEvent(await c.send('clear_history'), 'clear_history', 'clear_history with no payload (no ack)');
  // Required fields missing.
  for (const ev of ['join_room', 'leave_room', 'ask_question', 'get_suggestions', 'get_task', 'cancel_task']) {
    await refused(c, ev, [], 'invalid_payload', `${ev} with no payload`);
  }
});

check('null_payload_is_invalid', async (t) => {
  const c = await client(t);
  for (const ev of REQUESTS) await refused(c, ev, [null], 'invalid_payload', `${ev} null`);
});

check('two_payloads_are_invalid', async (t) => {
  const c = await client(t);
  const room = `conf-${rand()}`;
  const cases = {
    join_room: [{ room }, { room }], leave_room: [room, room], ask_question: [{ question: nextQ() }, {}],
    get_suggestions: ['socket', 'socket'], get_history: [{}, {}], clear_history: [{}, {}],
    get_task: [{ task_id: 'x' }, {}], cancel_task: [{ task_id: 'x' }, {}],
  };
  for (const [ev, p] of Object.entries(cases)) await refused(c, ev, p, 'invalid_payload', `${ev} with two payloads`);
});

check('non_object_payloads_are_invalid', async (t) => {
  const c = await client(t);
  for (const ev of REQUESTS) {
    for (const p of [42, 0, true, ['x'], []]) {
      expectErr(await c.ack(ev, p), 'invalid_payload', `${ev} ${j(p)} with ack`);
    }
    expectErrorEvent(await c.send(ev, 42), ev, 'invalid_payload', `${ev} 42 without ack`);
  }
});

check('wrong_field_types_are_invalid', async (t) => {
  const c = await client(t);
  const cases = [
    ['join_room', { room: 5 }], ['join_room', { room: ['a'] }], ['join_room', { room: {} }], ['join_room', { room: true }],
    ['leave_room', { room: 5 }],
    ['ask_question', { question: 5 }], ['ask_question', { question: ['q'] }], ['ask_question', { question: {} }],
    ['ask_question', { question: nextQ(), room: 5 }], ['ask_question', { question: nextQ(), context: 5 }],
    ['ask_question', { question: nextQ(), stream: 'yes' }], ['ask_question', { question: nextQ(), stream: 1 }],
    ['ask_question', { question: nextQ(), stream: 'true' }],
    ['get_suggestions', { query: 5 }], ['get_suggestions', { query: ['a'] }],
    ['get_history', { before: 5 }], ['get_history', { before: {} }],
    ['get_task', { task_id: 5 }], ['get_task', { task_id: ['x'] }],
    ['cancel_task', { task_id: 5 }], ['cancel_task', { task_id: true }],
    ['join_room', {}], ['ask_question', {}], ['get_suggestions', {}], ['get_task', {}], ['cancel_task', {}],
  ];
  for (const [ev, p] of cases) expectErr(await c.ack(ev, p), 'invalid_payload', `${ev} ${j(p)} with ack`);
  for (const [ev, p] of cases.slice(0, 6)) expectErrorEvent(await c.send(ev, p), ev, 'invalid_payload', `${ev} ${j(p)} without ack`);
});

check('unknown_fields_ignored_null_fields_absent', async (t) => {
  const c = await client(t);
  const room = `conf-${rand()}`;
  const jr = expectOk(await c.ack('join_room', { room, extra: 1, nested: { a: [1, 2] } }), 'join_room with unknown fields');
  assert(jr.room === room, `room ${j(jr.room)}`);
  expectOk(await c.ack('leave_room', { room, extra: 'x' }), 'leave_room with unknown fields');
  expectOk(await c.ack('get_history', { foo: 'bar', limit: 3 }), 'get_history with unknown fields');
  expectOk(await c.ack('clear_history', { foo: 1 }), 'clear_history with unknown fields');
  expectOk(await c.ack('get_suggestions', { query: 'socket', foo: [] }), 'get_suggestions with unknown fields');
  await refused(c, 'get_task', [{ task_id: `t_${rand()}`, foo: 1 }], 'not_found', 'get_task with unknown fields');
  // null counts as absent: optional fields take defaults, required ones are missing.
  const h = expectOk(await c.ack('get_history', { limit: null, before: null }), 'get_history with null limit and before');
  assert(Array.isArray(h.items) && h.has_more === false, `history ${j(h)}`);
  expectOk(await c.ack('get_suggestions', { query: 'socket', limit: null }), 'get_suggestions with null limit');
  expectErr(await c.ack('join_room', { room: null }), 'invalid_payload', 'join_room {room:null}');
  expectErr(await c.ack('ask_question', { question: null }), 'invalid_payload', 'ask_question {question:null}');
  expectErr(await c.ack('get_suggestions', { query: null }), 'invalid_payload', 'get_suggestions {query:null}');
  expectErr(await c.ack('get_task', { task_id: null }), 'invalid_payload', 'get_task {task_id:null}');
  const from = c.mark();
  const q = nextQ();
  const id = await ask(c, { question: q, room: null, context: null, stream: null, extra: { x: 1 } }, 'ask_question with null optionals');
  const ans = await answered(c, id);
  assert(c.events('answer_chunk', from).length === 0, 'stream:null streamed (null should count as absent = false)');
  const task = expectOk(await c.ack('get_task', { task_id: id }), 'get_task').task;
  checkTask(task, 'task asked with room:null', { taskId: id, question: q });
  assert(!('room' in task), `room:null gave a room: ${j(task.room)}`);
  assert(ans.task_id === id, 'answer task_id');
});

check('limit_rules', async (t) => {
  const c = await client(t);
  for (const ev of ['get_history', 'get_suggestions']) {
    const base = ev === 'get_history' ? {} : { query: 'what' };
    for (const limit of [0, -1, 1.5, '3', true, [3], { n: 3 }, -1e300]) {
      expectErr(await c.ack(ev, { ...base, limit }), 'invalid_payload', `${ev} limit ${j(limit)}`);
    }
    expectErrorEvent(await c.send(ev, { ...base, limit: 0 }), ev, 'invalid_payload', `${ev} limit 0 without ack`);
    for (const limit of [1, 7, 1000000, 2 ** 53 - 1, 2 ** 64]) {
      expectOk(await c.ack(ev, { ...base, limit }), `${ev} limit ${j(limit)}`);
    }
  }
  // Clamping: larger limits act as 100 (history) and 20 (suggestions).
  const s20 = expectOk(await c.ack('get_suggestions', { query: 'what', limit: 20 }), 'suggestions limit 20');
  assert(s20.suggestions.length <= 20, `limit 20 gave ${s20.suggestions.length}`);
  for (const limit of [21, 1000000, 2 ** 64]) {
    const s = expectOk(await c.ack('get_suggestions', { query: 'what', limit }), `suggestions limit ${limit}`);
    assert(s.suggestions.length === s20.suggestions.length,
      `suggestions limit ${j(limit)} gave ${s.suggestions.length}, limit 20 gave ${s20.suggestions.length} (should clamp to 20)`);
  }
  const h = expectOk(await c.ack('get_history', { limit: 2 ** 64 }), 'history huge limit');
  assert(Array.isArray(h.items) && h.items.length <= 100, `history huge limit gave ${h.items && h.items.length}`);
});

check('limit_huge_exponent_form', async (t) => {
  // 1e300 is an integer ≥ 1 written in exponent form by JSON.stringify:
  // "however large" it is clamped, not refused.
  const c = await client(t);
  expectOk(await c.ack('get_history', { limit: 1e300 }), 'get_history limit 1e300');
  expectOk(await c.ack('get_suggestions', { query: 'what', limit: 1e21 }), 'get_suggestions limit 1e21');
});

check('invalid_room', async (t) => {
  const c = await client(t);
  const other = await client(t);
  assert(typeof other.socket.id === 'string' && other.socket.id !== '', 'client has no socket id');
  const bad = ['', 'a'.repeat(65), 'a b', 'a/b', 'é', 'a#b', 'room!', 'a\u0000b', '😀', other.socket.id, c.socket.id];
  for (const room of bad) {
    expectErr(await c.ack('join_room', { room }), 'invalid_room', `join_room ${j(room)}`);
  }
  expectErr(await c.ack('join_room', ''), 'invalid_room', 'join_room "" (shorthand)');
  expectErrorEvent(await c.send('join_room', { room: 'a b' }), 'join_room', 'invalid_room', 'join_room "a b" without ack');
  await refused(c, 'leave_room', [{ room: 'a'.repeat(65) }], 'invalid_room', 'leave_room of 65 characters');
  await refused(c, 'leave_room', [{ room: other.socket.id }], 'invalid_room', "leave_room another socket's id");
  await refused(c, 'ask_question', [{ question: nextQ(), room: 'a b' }], 'invalid_room', 'ask_question room "a b"');
  await refused(c, 'ask_question', [{ question: nextQ(), room: other.socket.id }], 'invalid_room', "ask_question room = another socket's id");
  for (const room of ['a'.repeat(64), 'A-z_0.9:x', `x:${rand()}`, '1']) {
    const r = expectOk(await c.ack('join_room', { room }), `join_room ${j(room)}`);
    assert(r.room === room, `room_joined room ${j(r.room)}, want ${j(room)}`);
  }
});

check('forbidden_rooms', async (t) => {
  const c = await client(t);
  await refused(c, 'join_room', [{ room: 'private:x' }], 'forbidden', 'join_room private:x');
  await refused(c, 'join_room', ['private:x'], 'forbidden', 'join_room "private:x" (shorthand)');
  await refused(c, 'ask_question', [{ question: nextQ(), room: 'private:x' }], 'forbidden', 'ask_question into private:x');
  const room = `conf-${rand()}`;
  await refused(c, 'ask_question', [{ question: nextQ(), room }], 'forbidden', 'ask_question into a room not joined');
  const h = expectOk(await c.ack('get_history', {}), 'get_history');
  assert(h.items.length === 0, `refused questions were stored: ${j(h.items)}`);
});

check('limit_exceeded_after_50_rooms', async (t) => {
  const c = await client(t);
  const base = `conf-${rand()}`;
  const replies = await Promise.all(Array.from({ length: 50 }, (_, i) => c.ack('join_room', { room: `${base}-${i}` })));
  replies.forEach((r, i) => expectOk(r, `join_room #${i + 1}`));
  await refused(c, 'join_room', [{ room: `${base}-50` }], 'limit_exceeded', 'join_room #51');
  expectOk(await c.ack('leave_room', { room: `${base}-0` }), 'leave_room one');
  expectOk(await c.ack('join_room', { room: `${base}-50` }), 'join_room #51 after leaving one');
  expectErr(await c.ack('join_room', { room: `${base}-51` }), 'limit_exceeded', 'join_room #52');
});

check('question_invalid', async (t) => {
  const c = await client(t);
  assert(JSON.stringify('a\ud800b') === '"a\\ud800b"', 'this Node does not write lone surrogates as \\u escapes');
  const bad = ['', '   ', '\t\n\r ', '\u3000\u00a0\u2003', 'a\u0001b', 'a\u0000b', 'a\u007fb', 'a\u0085b',
    'a\u001bb', 'a\ud800b', 'a\udfffb', '\udbff', 'ok \ud83d'];
  for (const q of bad) expectErr(await c.ack('ask_question', { question: q }), 'question_invalid', `question ${j(q)}`);
  expectErr(await c.ack('ask_question', 'a\u0002b'), 'question_invalid', 'shorthand question with a control char');
  expectErrorEvent(await c.send('ask_question', { question: '  ' }), 'ask_question', 'question_invalid', 'blank question without ack');
  // context: same text rules.
  expectErr(await c.ack('ask_question', { question: nextQ(), context: 'a\u0001b' }), 'question_invalid', 'context with a control char');
  expectErr(await c.ack('ask_question', { question: nextQ(), context: 'x\ud800' }), 'question_invalid', 'context with a lone surrogate');
  // tab, line feed and carriage return are allowed inside.
  const id = await ask(c, { question: 'What is\ta room?\r\nTell me.' }, 'question with tab/CR/LF inside');
  await finished(c, id);
});

check('question_too_long', async (t) => {
  const c = await client(t);
  for (const q of ['a'.repeat(2001), '😀'.repeat(2001), ' ' + 'b'.repeat(2001) + ' ', 'é'.repeat(2001)]) {
    expectErr(await c.ack('ask_question', { question: q }), 'question_too_long', `question of ${[...q.trim()].length} code points`);
  }
  expectErrorEvent(await c.send('ask_question', 'a'.repeat(2001)), 'ask_question', 'question_too_long', '2001 characters without ack');
  expectErr(await c.ack('ask_question', { question: nextQ(), context: 'c'.repeat(8001) }), 'question_too_long', 'context of 8001 characters');
  // Lengths count code points, after trimming: these are 2000 long.
  const astral = '😀'.repeat(2000); // 4000 UTF-16 units, 8000 UTF-8 bytes
  const id1 = await ask(c, { question: astral }, 'question of 2000 astral code points');
  const id2 = await ask(c, { question: '  ' + 'a'.repeat(2000) + '\n ' }, 'question of 2000 characters plus white space');
  const a1 = await answered(c, id1);
  assert(a1.question === astral, 'the astral question came back altered');
  await finished(c, id2);
});

check('error_precedence', async (t) => {
  const c = await client(t);
  const long = 'a'.repeat(2001);
  const cases = [
    [{ question: long, room: 'bad room!', stream: 'yes' }, 'invalid_payload'],
    [{ question: 5, room: 'bad room!' }, 'invalid_payload'],
    [{ question: long, room: 'private:x', context: 7 }, 'invalid_payload'],
    [{ question: long, room: 'bad room!' }, 'invalid_room'],
    [{ question: '', room: 'bad room!' }, 'invalid_room'],
    [{ question: 'a\u0001', room: 'a'.repeat(65) }, 'invalid_room'],
    [{ question: long, room: 'private:x' }, 'question_too_long'],
    [{ question: '   ', room: 'private:x' }, 'question_invalid'],
    [{ question: long, room: `conf-${rand()}` }, 'question_too_long'],
    [{ question: 'a\u0001', room: `conf-${rand()}` }, 'question_invalid'],
  ];
  for (const [p, code] of cases) {
    expectErr(await c.ack('ask_question', p), code, `ask_question ${j(p).slice(0, 90)}`);
  }
  expectErrorEvent(await c.send('ask_question', cases[3][0]), 'ask_question', 'invalid_room', 'invalid room + too long, without ack');
});

check('rate_limited_per_session', async (t) => {
  const c = await client(t);
  // Two quick answered questions, then three streamed ones held open.
  for (let i = 0; i < 2; i++) await answered(c, await ask(c, { question: nextQ() }));
  const open = await Promise.all([0, 1, 2].map(() => ask(c, { question: LONG_Q, stream: true })));
  const room = `conf-${rand()}`;
  const [forb, inv, tl, ip, rl] = await Promise.all([
    c.ack('ask_question', { question: nextQ(), room }),
    c.ack('ask_question', { question: '' }),
    c.ack('ask_question', { question: 'a'.repeat(2001) }),
    c.ack('ask_question', { question: 5 }),
    c.ack('ask_question', { question: nextQ() }),
  ]);
  const err = expectErr(rl, 'rate_limited', '6th question within a minute (3 tasks open: rate_limited comes before too_many_tasks)');
  assert(Number.isInteger(err.retry_after_ms) && err.retry_after_ms > 0 && err.retry_after_ms <= 60000,
    `retry_after_ms ${j(err.retry_after_ms)}, want an integer in (0, 60000]`);
  expectErr(forb, 'forbidden', 'ask into a room not joined while rate limited (forbidden comes first)');
  expectErr(inv, 'question_invalid', 'empty question while rate limited');
  expectErr(tl, 'question_too_long', 'too long question while rate limited');
  expectErr(ip, 'invalid_payload', 'bad payload while rate limited');
  const e = expectErrorEvent(await c.send('ask_question', { question: nextQ() }), 'ask_question', 'rate_limited', '6th question without ack');
  assert(Number.isInteger(e.retry_after_ms) && e.retry_after_ms > 0 && e.retry_after_ms <= 60000,
    `error event retry_after_ms ${j(e.retry_after_ms)}`);
  // Other sessions from the same address are not limited by this one.
  const d = await client(t);
  await answered(d, await ask(d, { question: nextQ() }));
  await Promise.all(open.map((id) => c.ack('cancel_task', { task_id: id })));
});

check('too_many_tasks', async (t) => {
  const c = await client(t);
  const ids = await Promise.all([0, 1, 2].map(() => ask(c, { question: LONG_Q, stream: true })));
  const room = `conf-${rand()}`;
  const [tm, inv, forb] = await Promise.all([
    c.ack('ask_question', { question: nextQ() }),
    c.ack('ask_question', { question: '\u0001' }),
    c.ack('ask_question', { question: nextQ(), room }),
  ]);
  expectErr(tm, 'too_many_tasks', '4th question with 3 unfinished');
  expectErr(inv, 'question_invalid', 'invalid question with 3 unfinished');
  expectErr(forb, 'forbidden', 'room not joined with 3 unfinished');
  expectErrorEvent(await c.send('ask_question', { question: nextQ() }), 'ask_question', 'too_many_tasks', '4th question without ack');
  // Finishing one frees a slot; the refusals above did not count toward
  // the 5-per-minute rate, so two more questions are accepted.
  for (const k of [0, 1]) {
    const cr = expectOk(await c.ack('cancel_task', { task_id: ids[k] }), 'cancel_task');
    assert(cr.status === 'cancelled', `cancel status ${j(cr.status)} (the streamed answer finished before the cancel; is QA_ANSWER_DELAY=30ms set?)`);
    await finished(c, ids[k]);
    ids.push(await ask(c, { question: LONG_Q, stream: true }, 'question after a slot was freed (refusals must not count toward the rate)'));
  }
  expectErr(await c.ack('ask_question', { question: nextQ() }), 'rate_limited', '6th accepted question');
  await Promise.all(ids.map((id) => c.ack('cancel_task', { task_id: id })));
});

check('streamed_answer_flow', async (t) => {
  const c = await client(t);
  const from = c.mark();
  const id = await ask(c, { question: LONG_Q, stream: true });
  const ans = await answered(c, id);
  await sleep(QUIET_MS);
  const log = c.log.slice(from);
  const ackAt = log.findIndex((e) => e.kind === 'ack' && e.name === 'ask_question');
  const pushed = log.filter((e) => e.kind === 'event' && isObj(e.data) && e.data.task_id === id);
  assert(pushed.length > 0 && pushed[0].i > log[ackAt].i, 'something was pushed for the task before the ask_question ack');
  const statuses = pushed.filter((e) => e.name === 'task_status');
  const seq = statuses.map((e) => e.data.status);
  const want = seq[0] === 'pending' ? ['pending', 'processing', 'completed'] : ['processing', 'completed'];
  assert(j(seq) === j(want), `task_status sequence ${j(seq)}, want ${j(want)} (pending optional)`);
  let prev = 0;
  for (const s of statuses) {
    assertTime(s.data.updated_at, 'task_status updated_at');
    assert(Date.parse(s.data.updated_at) >= prev, 'task_status updated_at went backwards');
    prev = Date.parse(s.data.updated_at);
  }
  const chunks = pushed.filter((e) => e.name === 'answer_chunk');
  assert(chunks.length >= 1, 'no answer_chunk for a streamed question');
  chunks.forEach((e, k) => {
    assert(e.data.seq === k, `answer_chunk #${k} has seq ${j(e.data.seq)}`);
    assert(typeof e.data.delta === 'string', `answer_chunk delta ${j(e.data.delta)}`);
  });
  const answers = pushed.filter((e) => e.name === 'answer');
  assert(answers.length === 1, `${answers.length} "answer" events`);
  assert(pushed.every((e) => e.name !== 'answer_error'), 'answer_error for a completed task');
  const ansAt = answers[0].i;
  assert(chunks.every((e) => e.i < ansAt), 'answer_chunk after "answer"');
  const final = statuses[statuses.length - 1];
  assert(final.i < ansAt, 'the final task_status came after "answer"');
  assert(chunks.map((e) => e.data.delta).join('') === ans.answer, 'the deltas joined differ from the answer');
  checkAnswer(ans, 'answer', { taskId: id, question: LONG_Q });
  assert(Date.parse(final.data.updated_at) >= Date.parse(ans.asked_at), 'final updated_at before asked_at');
  const task = expectOk(await c.ack('get_task', { task_id: id }), 'get_task').task;
  checkTask(task, 'finished task', { status: 'completed', taskId: id, question: LONG_Q });
  assert(task.answer === ans.answer && task.answered_at === ans.answered_at && task.asked_at === ans.asked_at,
    `Task ${j(task)} differs from answer ${j(ans)}`);
});

check('plain_answer_flow_without_ack', async (t) => {
  const c = await client(t);
  const from = c.mark();
  const q = nextQ();
  const e = await c.send('ask_question', { question: q, stream: false });
  const r = expectReplyEvent(e, 'ask_question', 'ask_question without ack');
  const id = r.task_id;
  const ans = await answered(c, id);
  const pushed = c.taskEvents(id, from);
  assert(pushed.every((p) => p.i > e.i), 'pushed before question_received');
  assert(pushed.every((p) => p.name !== 'answer_chunk'), 'answer_chunk without stream');
  const seq = pushed.filter((p) => p.name === 'task_status').map((p) => p.data.status);
  assert(seq[seq.length - 1] === 'completed' && seq.includes('processing'), `task_status sequence ${j(seq)}`);
  const ansAt = pushed.find((p) => p.name === 'answer').i;
  assert(pushed.filter((p) => p.name === 'task_status').every((p) => p.i < ansAt), 'task_status after answer');
  checkAnswer(ans, 'answer', { taskId: id, question: q });
});

check('answers_reach_every_socket_of_the_session', async (t) => {
  const a = await client(t);
  const b = await client(t, { resume: a.connected.resume_token });
  assert(b.connected.session_id === a.connected.session_id && b.connected.resumed === true, 'second socket did not join the session');
  const outsider = await client(t);
  const fromO = outsider.mark();
  const id = await ask(a, { question: nextQ(), stream: true });
  const ansA = await answered(a, id);
  const ansB = await answered(b, id);
  assert(ansA.answer === ansB.answer, 'the two sockets got different answers');
  assert(b.events('answer_chunk').filter((e) => e.data.task_id === id).length >= 1, 'the other socket of the session got no chunks');
  await sleep(100);
  const stray = outsider.log.slice(fromO).filter((e) => e.kind === 'event');
  assert(stray.length === 0, `another session received: ${stray.map((e) => e.name).join(', ')}`);
});

check('room_answers_reach_members_only', async (t) => {
  const a = await client(t);
  const b = await client(t);
  const c = await client(t);
  const room = `conf-${rand()}`;
  checkMembers(expectOk(await a.ack('join_room', { room }), 'a joins'), 1, 'first member');
  checkMembers(expectOk(await b.ack('join_room', { room }), 'b joins'), 2, 'second member');
  const fromC = c.mark();
  const id = await ask(a, { question: LONG_Q, room, stream: true });
  const ansA = await answered(a, id);
  const ansB = await answered(b, id);
  checkAnswer(ansB, 'answer at another member', { taskId: id, question: LONG_Q });
  assert(ansA.answer === ansB.answer, 'members got different answers');
  const chunksB = b.events('answer_chunk').filter((e) => e.data.task_id === id);
  assert(chunksB.length >= 1 && chunksB.map((e) => e.data.delta).join('') === ansB.answer, 'the other member got incomplete chunks');
  assert(b.events('task_status').some((e) => e.data.task_id === id && e.data.status === 'completed'), 'the other member got no task_status');
  await sleep(100);
  assert(c.log.slice(fromC).filter((e) => e.kind === 'event').length === 0,
    `a non-member received: ${c.log.slice(fromC).map((e) => e.name).join(', ')}`);
  const task = expectOk(await a.ack('get_task', { task_id: id }), 'get_task by the asker').task;
  checkTask(task, 'room task', { status: 'completed', room, taskId: id });
  expectErr(await b.ack('get_task', { task_id: id }), 'not_found', "get_task by another member (another session's task)");
  await refused(c, 'ask_question', [{ question: nextQ(), room }], 'forbidden', 'non-member asks into the room');
});

check('cancel_running_task', async (t) => {
  const c = await client(t);
  for (const withAck of [true, false]) {
    const from = c.mark();
    const id = await ask(c, { question: LONG_Q, stream: true });
    await c.wait((e) => e.kind === 'event' && e.name === 'answer_chunk' && e.data.task_id === id, { from, what: 'a first answer_chunk' });
    let r;
    if (withAck) r = expectOk(await c.ack('cancel_task', { task_id: id }), 'cancel_task with ack');
    else r = expectReplyEvent(await c.send('cancel_task', { task_id: id }), 'cancel_task', 'cancel_task without ack');
    const how = withAck ? 'with ack' : 'without ack';
    assert(r.task_id === id, `${how}: task_id ${j(r.task_id)}`);
    assert(r.status === 'cancelled', `${how}: status ${j(r.status)}, want cancelled (did the answer finish first? QA_ANSWER_DELAY=30ms expected)`);
    const end = await finished(c, id);
    assert(end.name === 'answer_error', `${how}: got "${end.name}" after cancelling`);
    assert(end.data.code === 'cancelled' && typeof end.data.message === 'string', `${how}: answer_error ${j(end.data)}`);
    await sleep(QUIET_MS);
    const pushed = c.taskEvents(id, from);
    const st = pushed.filter((e) => e.name === 'task_status');
    assert(st.length > 0 && st[st.length - 1].data.status === 'cancelled', `${how}: last task_status ${j(st.map((e) => e.data.status))}`);
    assert(st[st.length - 1].i < end.i, `${how}: the cancelled task_status came after answer_error`);
    assert(pushed.filter((e) => e.name === 'answer_error').length === 1, `${how}: answer_error more than once`);
    assert(!pushed.some((e) => e.name === 'answer'), `${how}: "answer" pushed for a cancelled task`);
    const task = expectOk(await c.ack('get_task', { task_id: id }), 'get_task').task;
    checkTask(task, `${how}: cancelled task`, { status: 'cancelled', taskId: id });
  }
});

check('cancel_finished_task', async (t) => {
  const c = await client(t);
  const id = await ask(c, { question: nextQ(), stream: true });
  await answered(c, id);
  await sleep(50);
  const from = c.mark();
  const [a, e] = await succeeds(c, 'cancel_task', [{ task_id: id }], 'cancel_task of a finished task');
  for (const [r, how] of [[a, 'with ack'], [e, 'without ack']]) {
    assert(r.task_id === id && r.status === 'completed', `${how}: reply ${j(r)}, want task_id and status "completed"`);
  }
  await quiet(c, (x) => x.kind === 'event' && ['task_status', 'answer_error', 'answer', 'answer_chunk'].includes(x.name),
    'pushed after cancelling a finished task');
  assert(c.taskEvents(id, from).length === 0, 'pushed after cancelling a finished task');
  const task = expectOk(await c.ack('get_task', { task_id: id }), 'get_task').task;
  assert(task.status === 'completed', `status became ${j(task.status)}`);
});

check('history_paging', async (t) => {
  const c = await client(t);
  const ids = [];
  const qs = [];
  for (let i = 0; i < 3; i++) {
    qs.push(nextQ());
    ids.push(await ask(c, { question: qs[i] }));
    await answered(c, ids[i]);
    await sleep(5);
  }
  const [a, e] = await succeeds(c, 'get_history', [{}]);
  for (const [r, how] of [[a, 'with ack'], [e, 'without ack']]) {
    assert(j(r.items.map((x) => x.task_id)) === j([...ids].reverse()), `${how}: items ${j(r.items.map((x) => x.task_id))}, want newest first ${j([...ids].reverse())}`);
    assert(r.has_more === false, `${how}: has_more ${j(r.has_more)}`);
    r.items.forEach((it, k) => checkTask(it, `${how}: history item ${k}`, { status: 'completed', question: qs[2 - k] }));
  }
  const p1 = expectOk(await c.ack('get_history', { limit: 2 }), 'limit 2');
  assert(j(p1.items.map((x) => x.task_id)) === j([ids[2], ids[1]]) && p1.has_more === true, `page 1 ${j(p1)}`);
  const p2 = expectOk(await c.ack('get_history', { limit: 2, before: p1.items[1].task_id }), 'limit 2 before');
  assert(j(p2.items.map((x) => x.task_id)) === j([ids[0]]) && p2.has_more === false, `page 2 ${j(p2)}`);
  const p3 = expectOk(await c.ack('get_history', { before: ids[0] }), 'before the oldest');
  assert(p3.items.length === 0 && p3.has_more === false, `before the oldest ${j(p3)}`);
  const p4 = expectOk(await c.ack('get_history', { limit: 1, before: ids[2] }), 'limit 1 before the newest');
  assert(j(p4.items.map((x) => x.task_id)) === j([ids[1]]) && p4.has_more === true, `limit 1 before the newest ${j(p4)}`);
  await refused(c, 'get_history', [{ before: `t_${rand()}` }], 'not_found', 'unknown before');
  const other = await client(t);
  await refused(other, 'get_history', [{ before: ids[1] }], 'not_found', "before = another session's task");
  const oh = expectOk(await other.ack('get_history', {}), 'other session history');
  assert(oh.items.length === 0, "another session sees this session's history");
});

check('clear_history', async (t) => {
  const c = await client(t);
  const done = [];
  for (let i = 0; i < 2; i++) {
    done.push(await ask(c, { question: nextQ() }));
    await answered(c, done[i]);
  }
  const running = await ask(c, { question: LONG_Q, stream: true });
  const cl = expectOk(await c.ack('clear_history', {}), 'clear_history with a task running');
  assert(cl.deleted === 2, `deleted ${j(cl.deleted)}, want 2 (the finished tasks only)`);
  const h = expectOk(await c.ack('get_history', {}), 'history after clearing');
  assert(j(h.items.map((x) => x.task_id)) === j([running]), `history after clear ${j(h.items.map((x) => x.task_id))}, want only the unfinished ${running}`);
  await refused(c, 'get_task', [{ task_id: done[0] }], 'not_found', 'get_task of a cleared task');
  const ans = await answered(c, running); // the unfinished one finishes
  const h2 = expectOk(await c.ack('get_history', {}), 'history after it finished');
  assert(h2.items.length === 1 && h2.items[0].status === 'completed' && h2.items[0].answer === ans.answer, `history ${j(h2)}`);
  const e = expectReplyEvent(await c.send('clear_history', {}), 'clear_history', 'clear_history without ack');
  assert(e.deleted === 1, `deleted ${j(e.deleted)}, want 1`);
  const h3 = expectOk(await c.ack('get_history', {}), 'history after clearing all');
  assert(h3.items.length === 0 && h3.has_more === false, `history ${j(h3)}`);
});

check('unknown_events', async (t) => {
  const c = await client(t);
  const from = c.mark();
  for (const ev of ['no_such_event', 'JOIN_ROOM', 'join_room ', ...PUSHED, 'room_joined', 'history', 'task', 'suggestions']) {
    expectErr(await c.ack(ev, {}), 'unknown_event', `"${ev}" with ack`);
  }
  expectErr(await c.ack('no_such_event'), 'unknown_event', 'unknown event, no payload, with ack');
  c.socket.emit('no_such_event', { x: 1 });
  c.socket.emit('answer', { task_id: 'x' });
  c.socket.emit('error', {});
  c.socket.emit('no_such_event');
  const h = expectOk(await c.ack('get_history', {}), 'a request after unknown events');
  assert(Array.isArray(h.items), 'history');
  await sleep(100);
  const stray = c.log.slice(from).filter((e) => e.kind === 'event');
  assert(stray.length === 0, `events sent in answer to unknown events without ack: ${stray.map((e) => `${e.name} ${j(e.data)}`).join('; ')}`);
  assert(c.socket.connected, 'disconnected after unknown events');
});

check('requests_handled_in_order', async (t) => {
  const c = await client(t);
  const room = `conf-${rand()}`;
  const [jr, aq] = await Promise.all([
    c.ack('join_room', { room }),
    c.ack('ask_question', { question: nextQ(), room }),
  ]);
  expectOk(jr, 'join_room');
  expectOk(aq, 'ask_question sent right after join_room (with ack)');
  // A room's answer goes to the room's members (docs/protocol.md): wait for it
  // while this client is still one.
  await answered(c, aq.task_id);
  const [lr, forb] = await Promise.all([c.ack('leave_room', { room }), c.ack('ask_question', { question: nextQ(), room })]);
  expectOk(lr, 'leave_room');
  expectErr(forb, 'forbidden', 'ask_question sent right after leave_room');
  const room2 = `conf-${rand()}`;
  const from = c.mark();
  c.socket.emit('join_room', { room: room2 });
  c.socket.emit('ask_question', { question: nextQ(), room: room2 });
  const q = await c.wait((e) => e.kind === 'event' && (e.name === 'question_received' || e.name === 'error'), { from, what: 'question_received' });
  expectReplyEvent(q, 'ask_question', 'ask_question sent right after join_room (without ack)');
  const rj = c.events('room_joined', from);
  assert(rj.length === 1 && rj[0].i < q.i, 'room_joined did not come before question_received');
  await answered(c, q.data.task_id);
});

check('replies_in_request_order', async (t) => {
  const c = await client(t);
  const room = `conf-${rand()}`;
  const from = c.mark();
  const acks = [];
  acks.push(c.ack('get_history', {}));
  c.socket.emit('get_suggestions', 'socket');
  acks.push(c.ack('join_room', { room }));
  c.socket.emit('leave_room', { room });
  acks.push(c.ack('clear_history', {}));
  c.socket.emit('join_room', { room: 'bad room!' });
  acks.push(c.ack('get_task', { task_id: `t_${rand()}` }));
  c.socket.emit('get_suggestions', { query: 'what', limit: 3 });
  acks.push(c.ack('get_suggestions', 'redis'));
  c.socket.emit('get_history', { limit: 1 });
  await Promise.all(acks);
  await c.wait((e) => e.kind === 'event' && e.name === 'history', { from, what: 'the last reply' });
  const got = c.log.slice(from).map((e) => (e.kind === 'ack' ? `ack:${e.name}` : `${e.name}`));
  const want = ['ack:get_history', 'suggestions', 'ack:join_room', 'room_left', 'ack:clear_history', 'error',
    'ack:get_task', 'suggestions', 'ack:get_suggestions', 'history'];
  assert(j(got) === j(want), `reply order ${j(got)}, want ${j(want)}`);
  // Many acked requests at once come back in order too.
  const order = [];
  await Promise.all(Array.from({ length: 20 }, (_, k) => c.ack(k % 2 ? 'get_history' : 'get_suggestions', k % 2 ? { limit: 1 } : 'go')
    .then(() => order.push(k))));
  assert(j(order) === j([...order].sort((x, y) => x - y)), `acks out of order: ${j(order)}`);
});

check('undecodable_frame_closes_only_its_connection', async (t) => {
  const bad = await client(t);
  const good = await client(t);
  const engine = bad.socket.io.engine;
  assert(engine && typeof engine.write === 'function', 'no engine to write a raw frame to');
  engine.write('2["ask_question",{"question":'); // not valid JSON
  await bad.wait((e) => e.kind === 'disconnect', { timeout: 10000, what: 'the server to close the sending connection' });
  expectOk(await good.ack('get_history', {}), 'another client after the bad frame');
  const fresh = await client(t);
  expectOk(await fresh.ack('get_history', {}), 'a new client after the bad frame');
}, { timeout: 25000 });

check('too_many_connections', async (t) => {
  await sleep(500); // let the server forget the previous checks' sockets
  const open = [];
  for (let i = 0; i < 10; i++) {
    try {
      open.push(await client(t));
    } catch (err) {
      throw new CheckFailure(`connection #${i + 1} of 10 refused: ${err.message}`);
    }
  }
  const c11 = new Conn(t);
  const e = await c11.wait((x) => x.kind === 'connect_error' || (x.kind === 'event' && x.name === 'connected'),
    { timeout: 10000, what: 'connect_error for the 11th connection' });
  assert(e.kind === 'connect_error', '11th connection from one address was accepted');
  assert(e.err.message === 'too_many_connections', `err.message ${j(e.err.message)}, want "too_many_connections"`);
  assert(isObj(e.err.data) && e.err.data.code === 'too_many_connections' && typeof e.err.data.message === 'string',
    `err.data ${j(e.err.data)}, want {code:"too_many_connections", message}`);
  open[0].close();
  let ok = false;
  for (let i = 0; i < 20 && !ok; i++) {
    await sleep(100);
    const again = new Conn(t);
    try { await again.connect(); ok = true; } catch { again.close(); }
  }
  assert(ok, 'no connection accepted after one of the 10 closed');
}, { timeout: 30000 });

check('rate_limited_per_ip', async (t) => {
  const limit = serverLimits && serverLimits.max_questions_per_minute_per_ip;
  const perSession = (serverLimits && serverLimits.max_questions_per_minute) || 5;
  if (!Number.isInteger(limit)) throw new CheckFailure('no max_questions_per_minute_per_ip announced in "connected"');
  if (limit > PER_IP_MAX) throw new Skip(`the server allows ${limit} questions/min per address (above --per-ip-max ${PER_IP_MAX})`);
  await sleep(300);
  const maxAsks = limit + 3 * perSession;
  let asks = 0;
  let c = null;
  let inSession = 0;
  const pending = [];
  while (asks < maxAsks) {
    if (c === null || inSession >= perSession) {
      if (c) { await Promise.all(pending.splice(0)); c.close(); }
      c = await client(t);
      inSession = 0;
    }
    if (pending.length >= 3) await Promise.all(pending.splice(0));
    const sentAt = Date.now();
    const r = await c.ack('ask_question', { question: nextQ() });
    asks++;
    if (r.ok === true) {
      inSession++;
      pending.push(finished(c, r.task_id).catch(() => {}));
      continue;
    }
    const err = expectErr(r, 'rate_limited', `question #${asks} from this address`);
    assert(inSession < perSession, 'internal: session over its own limit');
    assert(Number.isInteger(err.retry_after_ms) && err.retry_after_ms > 0 && err.retry_after_ms <= 60000,
      `retry_after_ms ${j(err.retry_after_ms)}, want an integer in (0, 60000]`);
    const surely = accepted.filter((x) => x > sentAt - 60000 + 1500).length;
    const maybe = accepted.filter((x) => x > sentAt - 60000 - 1500).length;
    assert(surely <= limit && limit <= maybe,
      `refused with ${surely}–${maybe} questions accepted from this address in the last minute, want ${limit}`);
    const oldest = accepted.filter((x) => x > sentAt - 60000 - 1500).sort((x, y) => x - y)[maybe - limit];
    if (oldest !== undefined) {
      const want = oldest + 60000 - sentAt;
      assert(Math.abs(err.retry_after_ms - want) < 3000, `retry_after_ms ${err.retry_after_ms}, expected about ${want}`);
    }
    // A fresh session from the same address is refused too.
    const d = await client(t);
    const e = expectErrorEvent(await d.send('ask_question', { question: nextQ() }), 'ask_question', 'rate_limited',
      'a fresh session from the same address (without ack)');
    assert(Number.isInteger(e.retry_after_ms) && e.retry_after_ms > 0, `retry_after_ms ${j(e.retry_after_ms)}`);
    await Promise.all(pending.splice(0));
    return;
  }
  throw new CheckFailure(`${asks} questions from one address were all accepted, limit ${limit}`);
}, { timeout: 90000 });

// ---------------------------------------------------------------- runner

async function runCheck(ch) {
  const t = { conns: [], aborted: false };
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => {
      t.aborted = true;
      reject(new CheckFailure(`check timed out after ${ch.timeout} ms`));
    }, ch.timeout);
  });
  try {
    await Promise.race([ch.fn(t), timeout]);
    return { ok: true };
  } catch (err) {
    if (err instanceof Skip) return { skip: err.message };
    const msg = err instanceof CheckFailure ? err.message : `${err && err.stack ? err.stack : err}`;
    return { ok: false, reason: msg.replace(/\s*\n\s*/g, ' | ') };
  } finally {
    clearTimeout(timer);
    for (const c of t.conns) c.close();
    await sleep(t.conns.length ? 50 : 0);
  }
}

async function main() {
  if (args.list) {
    for (const ch of checks) console.log(ch.name);
    return 0;
  }
  let selected = checks;
  if (args.only) {
    const want = args.only.split(',').map((s) => s.trim()).filter(Boolean);
    selected = checks.filter((ch) => ch.name === 'server_reachable' || want.some((w) => ch.name.includes(w)));
  }
  console.log(`# conformance: ${URL_} transport=${TRANSPORT} socket.io-client ${await clientVersion()}`);
  const deadline = Date.now() + TOTAL_TIMEOUT;
  let passed = 0;
  let failed = 0;
  for (const ch of selected) {
    if (Date.now() > deadline) {
      console.log(`FAIL ${ch.name}: not run, the whole run exceeded ${TOTAL_TIMEOUT} ms`);
      failed++;
      continue;
    }
    const r = await runCheck({ ...ch, timeout: Math.min(ch.timeout, Math.max(1000, deadline - Date.now())) });
    if (r.skip) {
      console.log(`skip ${ch.name}: ${r.skip}`);
    } else if (r.ok) {
      console.log(`ok ${ch.name}`);
      passed++;
    } else {
      console.log(`FAIL ${ch.name}: ${r.reason}`);
      failed++;
      if (ch.name === 'server_reachable') {
        console.log(`# cannot reach a Socket.IO server at ${URL_} over ${TRANSPORT}; not running the other checks`);
        break;
      }
    }
  }
  console.log(`# ${accepted.length} questions accepted from this address during the run`);
  console.log(`${passed} passed, ${failed} failed`);
  return failed > 0 ? 1 : 0;
}

async function clientVersion() {
  try {
    const { readFile } = await import('node:fs/promises');
    const pkg = JSON.parse(await readFile(new URL('./node_modules/socket.io-client/package.json', import.meta.url), 'utf8'));
    return pkg.version;
  } catch {
    return '(unknown version)';
  }
}

main().then((code) => {
  // Sockets of timed-out checks may still hold the event loop.
  process.exit(code);
}, (err) => {
  console.log(`FAIL runner: ${err && err.stack ? err.stack : err}`);
  console.log('0 passed, 1 failed');
  process.exit(1);
});
