#!/usr/bin/env node
// Durable answer queue, process level (issue 9 item 6).
//
// Starts qa-server nodes that answer nothing themselves (-workers 0) and
// qa-worker processes on one Redis under a fresh key prefix, drives them
// with the official socket.io-client (pinned in package.json), and, while
// answers stream, SIGKILLs one worker and then one node. It checks the
// contract of /work/shared/PROTOCOL.md (docs/protocol.md) that this shows:
//
//   * every task ends completed, with the knowledge base's answer;
//   * each session gets at most one "answer" per task, and exactly one
//     when the socket that asked stayed connected until the answer;
//   * the chunks of a task's highest attempt (after the get_task
//     "partial" for a session that reconnected) join to the answer;
//   * within an attempt, chunks arrive in seq order without gaps on a
//     socket connected throughout;
//   * a session of the killed node resumes on the other node (same
//     session_id) and finds its unfinished tasks there; the node is killed
//     in a burst of questions it is taking, and every question it
//     acknowledged (or stored before it died) is answered;
//   * some task was answered again (attempt >= 2): the kill hit mid-answer;
//   * phase 2: with no worker left, questions stay pending; a new worker
//     answers them all.
//
// Usage (run.sh passes all of this):
//   node durable.mjs --server-bin B --worker-bin W --redis-url URL --prefix P --logs DIR --kb kb.json
// Options: --nodes 2 --workers 3 --clients 40 --questions 1000
//   --answer-delay 20ms --claim-after 2s --concurrency 16
//   --kill-worker-at N  (answers completed before the worker is killed; default 150)
//   --kill-node-after MS (after the worker kill; default 700): then
//     --burst-sessions N (default 50) idle sessions of the node to kill
//     ask 3 questions each at once, and the node is killed when it has
//     acknowledged a fifth of them (with 0: no burst, the node is killed
//     at that time, whatever it is doing)
//   --phase2-questions 20 (0: no phase 2)   --deadline MS (default 80000)
//   --in-node: the nodes answer themselves (a qa-server without the durable
//     queue); no worker processes, no kills, no phase 2. For trying the
//     driver against an older server.
//   --pidfile F: the pid of every process started is appended to F.
//
// Output: "# …" progress lines, one "ok NAME" or "FAIL NAME: REASON" line
// per check, a summary line, then "N passed, N failed". Exit 1 when a check
// failed, 2 on bad usage.

import { io } from 'socket.io-client';
import { parseArgs } from 'node:util';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

// ---------------------------------------------------------------- options

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      'server-bin': { type: 'string' },
      'worker-bin': { type: 'string' },
      'redis-url': { type: 'string', default: process.env.REDIS_URL || 'redis://127.0.0.1:6379' },
      prefix: { type: 'string' },
      logs: { type: 'string' },
      kb: { type: 'string' },
      pidfile: { type: 'string' },
      nodes: { type: 'string', default: '2' },
      workers: { type: 'string', default: '3' },
      clients: { type: 'string', default: '40' },
      questions: { type: 'string', default: '1000' },
      'answer-delay': { type: 'string', default: '20ms' },
      'claim-after': { type: 'string', default: '2s' },
      'node-ttl': { type: 'string', default: '2s' },
      concurrency: { type: 'string', default: '16' },
      'kill-worker-at': { type: 'string', default: '150' },
      'kill-node-after': { type: 'string', default: '700' },
      'burst-sessions': { type: 'string', default: '50' },
      'phase2-questions': { type: 'string', default: '20' },
      deadline: { type: 'string', default: '80000' },
      'in-node': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  }));
} catch (err) {
  console.error(`durable: ${err.message}`);
  process.exit(2);
}
if (args.help) {
  console.log('usage: node durable.mjs --server-bin B --worker-bin W --redis-url URL --prefix P --logs DIR --kb kb.json [options]; see the head of this file');
  process.exit(0);
}
const num = (name) => {
  const n = Number(args[name]);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`durable: --${name} takes a non-negative integer, not ${JSON.stringify(args[name])}`);
    process.exit(2);
  }
  return n;
};
const IN_NODE = args['in-node'];
const NODES = num('nodes');
const WORKERS = IN_NODE ? 0 : num('workers');
const CLIENTS = num('clients');
const TARGET = num('questions');
const KILL_WORKER_AT = num('kill-worker-at');
const KILL_NODE_AFTER = num('kill-node-after');
const BURST = IN_NODE ? 0 : num('burst-sessions');
const PHASE2 = IN_NODE ? 0 : num('phase2-questions');
const DEADLINE = num('deadline');
for (const k of ['server-bin', 'prefix', 'logs', 'kb'].concat(IN_NODE ? [] : ['worker-bin'])) {
  if (!args[k]) {
    console.error(`durable: --${k} is required`);
    process.exit(2);
  }
}
if (NODES < 1 || CLIENTS < 1 || (!IN_NODE && (NODES < 2 || WORKERS < 2))) {
  console.error('durable: needs --nodes >= 2 and --workers >= 2 (one of each is killed), and --clients >= 1');
  process.exit(2);
}
const PREFIX = args.prefix;
const LOGS = args.logs;

// The demo knowledge base: the questions asked, and the answer each must get.
const KB = JSON.parse(fs.readFileSync(args.kb, 'utf8'));
const QUESTIONS = KB.filter((e) => [...e.answer].length > 64).map((e) => e.question);
const EXPECTED = new Map(KB.map((e) => [e.question, e.answer]));

const ACK_TIMEOUT = 10000;
const T0 = Date.now();
const elapsed = () => ((Date.now() - T0) / 1000).toFixed(1) + 's';
const note = (msg) => console.log(`# durable ${elapsed()}: ${msg}`);

// ---------------------------------------------------------------- results

const CHECKS = [
  'processes', 'resume', 'ask', 'no_answer_error', 'one_answer_per_task', 'status_before_answer',
  'chunk_order', 'chunks_join_to_answer', 'tasks_completed', 'answer_text', 'history_matches',
  'retried_attempt', 'phase2_pending', 'phase2_completed', 'graceful_exit',
];
const failures = new Map(CHECKS.map((c) => [c, []]));
const skipped = new Map();
function fail(check, msg) {
  if (!failures.has(check)) failures.set(check, []);
  failures.get(check).push(msg);
}

function j(x) {
  let s;
  try { s = JSON.stringify(x); } catch { s = String(x); }
  if (s === undefined) s = String(x);
  return s.length > 300 ? s.slice(0, 300) + '…' : s;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const isObj = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);
const isInt = (n, min) => Number.isInteger(n) && n >= min;
function deferred() {
  let resolve;
  const p = new Promise((r) => { resolve = r; });
  return { p, resolve };
}

// ---------------------------------------------------------------- processes

const procs = [];

// Proc is one child process (a node or a worker) logging to LOGS/name.log.
class Proc {
  constructor(name, bin, argv) {
    this.name = name;
    this.log = path.join(LOGS, `${name}.log`);
    const fd = fs.openSync(this.log, 'a');
    this.child = spawn(bin, argv, {
      stdio: ['ignore', fd, fd],
      env: { ...process.env, QA_CLUSTER_KEY: `${PREFIX}socket.io` },
    });
    fs.closeSync(fd);
    this.expectExit = false;
    this.exit = null;
    this.exited = new Promise((resolve) => {
      this.child.on('error', (err) => {
        this.exit = { code: null, signal: null, err };
        fail('processes', `${name}: could not start ${bin}: ${err.message}`);
        resolve(this.exit);
      });
      this.child.on('exit', (code, signal) => {
        this.exit = { code, signal };
        if (!this.expectExit) {
          fail('processes', `${name} exited on its own during the run (code ${code}, signal ${signal}); ` +
            `last log lines:\n${tail(this.log, 15)}`);
        }
        resolve(this.exit);
      });
    });
    if (args.pidfile && this.child.pid) fs.appendFileSync(args.pidfile, `${this.child.pid}\n`);
    procs.push(this);
  }

  alive() { return this.exit === null; }

  kill(sig) {
    this.expectExit = true;
    if (this.alive()) this.child.kill(sig);
  }
}

function tail(file, n) {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-n).map((l) => `#   ${l}`).join('\n');
  } catch {
    return '#   (no log)';
  }
}

const commonLimits = [
  '-max-connections-per-ip', '1000',
  '-max-questions-per-minute', '1000',
  '-max-questions-per-minute-per-ip', '100000',
];

// startNode starts a node on a port the kernel picks and waits until its
// /readyz answers 200.
async function startNode(i) {
  const argv = ['-addr', '127.0.0.1:0', '-redis-url', args['redis-url'], '-redis-prefix', PREFIX,
    '-answer-delay', args['answer-delay'], '-log-level', 'info', ...commonLimits];
  if (!IN_NODE) argv.push('-workers', '0', '-claim-after', args['claim-after'], '-node-ttl', args['node-ttl']);
  const p = new Proc(`node${i}`, args['server-bin'], argv);
  for (let k = 0; k < 300 && p.alive(); k++) {
    const m = /http:\/\/127\.0\.0\.1:[0-9]+/.exec(fs.readFileSync(p.log, 'utf8'));
    if (m) {
      try {
        const r = await fetch(`${m[0]}/readyz`);
        if (r.ok) {
          p.url = m[0];
          return p;
        }
      } catch { /* not yet */ }
    }
    await sleep(100);
  }
  throw new Error(`node${i} did not become ready (/readyz) within 30 s:\n${tail(p.log, 30)}`);
}

let workerCount = 0;
function startWorker() {
  const argv = ['-redis-url', args['redis-url'], '-redis-prefix', PREFIX, '-answer-delay', args['answer-delay'],
    '-claim-after', args['claim-after'], '-concurrency', args.concurrency];
  return new Proc(`worker${workerCount++}`, args['worker-bin'], argv);
}

// ---------------------------------------------------------------- sessions

class Disconnected extends Error {}

let tasksCompleted = 0;
let workerKilledAt = 0;
let ackHook = null; // called with (socket, reply) on each ask_question ack
let killWorkerHook = null; // called as answers complete, until it fires
const stats = { interrupted: 0, interruptedWhole: 0, partials: 0, getTaskOnly: 0, tooManyTasks: 0, unavailable: 0, lostAsks: 0, adopted: 0, reconnected: 0, staleChunks: 0 };

// Task is what one session saw of one task, over all its sockets.
class Task {
  constructor(sess, id) {
    this.sess = sess;
    this.id = id;
    this.question = null;
    this.askRec = null; // the socket that asked (null: adopted from history)
    this.interrupted = false; // the session lost its socket while the task was open
    this.attempts = new Map(); // attempt -> Map(seq -> delta), from every socket
    this.partial = null; // the get_task partial after a reconnect
    this.partialRec = null; // the socket whose get_task gave it
    this.seq0Rec = new Map(); // attempt -> the socket that got its chunk seq 0
    this.pushes = 0; // "answer" events
    this.answer = null; // the first "answer" payload
    this.completedSeen = false; // a task_status completed before the answer
    this.viaGetTask = null; // the completed Task a get_task returned after a reconnect
    this.statuses = [];
    this.trail = []; // what the session saw, in order, for failure messages
    this.done = deferred();
    this.finished = false;
    this.phase = 1;
  }

  finish() {
    if (this.finished) return;
    this.finished = true;
    tasksCompleted++;
    if (killWorkerHook) killWorkerHook();
    this.done.resolve();
  }

  maxAttempt() {
    let a = 0;
    for (const k of this.attempts.keys()) a = Math.max(a, k);
    if (this.partial && this.partial.seq >= 0) a = Math.max(a, this.partial.attempt);
    return a;
  }
}

// SockRec is one socket of a session.
class SockRec {
  constructor(sess, node) {
    this.sess = sess;
    this.node = node;
    this.connected = false;
    this.pending = new Set(); // {reject} of requests awaiting their ack
    this.lastSeq = new Map(); // `${task}:${attempt}` -> last seq seen here
    this.maxAttempt = new Map(); // task -> highest attempt seen here
  }
}

class Session {
  constructor(i, node) {
    this.i = i;
    this.node = node;
    this.tasks = new Map();
    this.token = null;
    this.sessionId = null;
    this.cur = null;
    this.live = deferred();
    this.lostNode = false;
    this.burst = false; // asks only in the burst before the node kill
    this.nsock = 0;
    this.openAtLoss = new Set(); // tasks open when a socket was lost
    this.recovering = null; // the promise of recover, once the session lost its node
  }

  task(id) {
    let t = this.tasks.get(id);
    if (!t) {
      t = new Task(this, id);
      this.tasks.set(id, t);
    }
    return t;
  }

  // connect opens a socket to node, resuming the session when it has one.
  async connect(node) {
    const rec = new SockRec(this, node);
    rec.name = `s${this.i}.${++this.nsock}@${node.name}`;
    const auth = this.token ? { resume: this.token } : {};
    const sock = io(node.url, { transports: ['websocket'], forceNew: true, reconnection: false, timeout: 8000, auth });
    rec.sock = sock;
    const got = deferred();
    sock.on('connected', (c) => got.resolve({ c }));
    sock.on('connect_error', (err) => got.resolve({ err }));
    sock.on('task_status', (p) => this.onStatus(rec, p));
    sock.on('answer_chunk', (p) => this.onChunk(rec, p));
    sock.on('answer', (p) => this.onAnswer(rec, p));
    sock.on('answer_error', (p) => fail('no_answer_error', `session ${this.i}: answer_error ${j(p)}`));
    sock.on('error', (p) => fail('ask', `session ${this.i}: "error" event ${j(p)}`));
    sock.on('disconnect', (reason) => this.onDisconnect(rec, reason));
    const timer = setTimeout(() => got.resolve({ err: new Error('no "connected" within 10 s') }), 10000);
    const { c, err } = await got.p;
    clearTimeout(timer);
    if (err) throw new Error(`session ${this.i}: connecting to ${node.name}: ${err.message} ${err.data ? j(err.data) : ''}`);
    if (!isObj(c) || typeof c.session_id !== 'string' || typeof c.resume_token !== 'string') {
      throw new Error(`session ${this.i}: bad "connected" payload ${j(c)}`);
    }
    if (this.token) {
      if (c.resumed !== true || c.session_id !== this.sessionId) {
        fail('resume', `session ${this.i}: resume on ${node.name} gave ${j({ resumed: c.resumed, session_id: c.session_id })}, ` +
          `want resumed:true and session_id ${this.sessionId}`);
      }
    } else {
      this.sessionId = c.session_id;
    }
    this.token = c.resume_token;
    rec.connected = true;
    for (const t of this.tasks.values()) if (!t.finished) t.trail.push(`${rec.name}:connected`);
    this.cur = rec;
    this.node = node;
    this.live.resolve(rec);
    return rec;
  }

  onStatus(rec, p) {
    if (!isObj(p) || typeof p.task_id !== 'string') return;
    const t = this.task(p.task_id);
    t.statuses.push(p.status);
    t.trail.push(`${rec.name}:${p.status}`);
    if (p.status === 'completed') t.completedSeen = true;
    if (p.status === 'failed' || p.status === 'cancelled') fail('no_answer_error', `session ${this.i}: task ${t.id} status ${p.status}`);
  }

  onChunk(rec, p) {
    // A server from before the durable queue sends no attempt.
    if (IN_NODE && isObj(p) && p.attempt === undefined) p = { ...p, attempt: 1 };
    if (!isObj(p) || typeof p.task_id !== 'string' || !isInt(p.attempt, 1) || !isInt(p.seq, 0) || typeof p.delta !== 'string') {
      fail('chunk_order', `session ${this.i}: malformed answer_chunk ${j(p)}`);
      return;
    }
    const t = this.task(p.task_id);
    if (t.answer) fail('chunk_order', `session ${this.i}: task ${t.id}: chunk ${j(p)} after its "answer"`);
    let m = t.attempts.get(p.attempt);
    if (!m) t.attempts.set(p.attempt, (m = new Map()));
    if (m.has(p.seq) && m.get(p.seq) !== p.delta) {
      fail('chunk_order', `session ${this.i}: task ${t.id}: attempt ${p.attempt} seq ${p.seq} arrived twice with different deltas`);
    }
    m.set(p.seq, p.delta);
    if (p.seq === 0 && !t.seq0Rec.has(p.attempt)) t.seq0Rec.set(p.attempt, rec);
    if (p.attempt >= 2 && !t.retryAt) t.retryAt = Date.now();
    t.trail.push(`${rec.name}:chunk ${p.attempt}/${p.seq}`);
    const top = rec.maxAttempt.get(t.id) || 0;
    if (p.attempt < top) stats.staleChunks++; // a client drops these
    rec.maxAttempt.set(t.id, Math.max(top, p.attempt));
    const key = `${t.id}:${p.attempt}`;
    const last = rec.lastSeq.get(key);
    if (last === undefined) {
      // This socket saw the task's whole life when it asked it: the first
      // chunk of every attempt it sees is seq 0.
      if (t.askRec === rec && p.seq !== 0) {
        fail('chunk_order', `session ${this.i}: task ${t.id} attempt ${p.attempt}: first chunk on the asking socket has seq ${p.seq}, want 0`);
      }
    } else if (p.seq !== last + 1) {
      fail('chunk_order', `session ${this.i}: task ${t.id} attempt ${p.attempt}: seq ${p.seq} after ${last} on one socket`);
    }
    rec.lastSeq.set(key, p.seq);
  }

  onAnswer(rec, p) {
    if (!isObj(p) || typeof p.task_id !== 'string') {
      fail('one_answer_per_task', `session ${this.i}: malformed answer ${j(p)}`);
      return;
    }
    const t = this.task(p.task_id);
    t.pushes++;
    t.trail.push(`${rec.name}:answer`);
    if (t.pushes > 1) {
      fail('one_answer_per_task', `session ${this.i}: task ${t.id}: "answer" number ${t.pushes} (on ${rec.node.name})`);
      return;
    }
    t.answer = p;
    t.answerRec = rec;
    if (p.status !== 'completed') fail('tasks_completed', `session ${this.i}: task ${t.id}: answer with status ${j(p.status)}`);
    if (t.askRec === rec && !t.completedSeen) {
      fail('status_before_answer', `session ${this.i}: task ${t.id}: "answer" before task_status completed (statuses ${j(t.statuses)})`);
    }
    t.finish();
  }

  onDisconnect(rec, reason) {
    rec.connected = false;
    for (const t of this.tasks.values()) if (!t.finished) t.trail.push(`${rec.name}:disconnect`);
    for (const p of rec.pending) p.reject(new Disconnected(reason));
    rec.pending.clear();
    if (rec !== this.cur || closing) return;
    this.live = deferred();
    for (const t of this.tasks.values()) {
      if (t.finished) continue;
      t.interrupted = true;
      this.openAtLoss.add(t);
    }
    if (!rec.node.killed) {
      fail('processes', `session ${this.i}: disconnected from ${rec.node.name}, which was not killed: ${reason}`);
    }
    this.lostNode = true;
    this.recovering = this.recover().catch((err) => fail('resume', `session ${this.i}: ${err.message}`));
  }

  // recover resumes the session on a live node and finds its unfinished
  // tasks there: get_task for those it knows, get_history for any whose
  // ask was accepted but not acknowledged before the node died.
  async recover() {
    const node = nodes.find((n) => !n.killed);
    stats.reconnected++;
    const rec = await this.connect(node);
    // Every task open when the socket went, even one whose answer reached
    // the new socket already: the partial is what a client would show.
    const lost = [...this.openAtLoss];
    this.openAtLoss.clear();
    await Promise.all(lost.map((t) => this.refresh(rec, t)));
    for (const item of await this.history(rec)) {
      if (this.tasks.has(item.task_id)) continue;
      const t = this.task(item.task_id);
      t.question = item.question;
      t.interrupted = true;
      stats.adopted++;
      asked++;
      if (item.status === 'completed') {
        t.viaGetTask = item;
        t.finish();
      } else {
        await this.refresh(rec, t);
      }
    }
  }

  // refresh reads a task with get_task after a reconnect.
  async refresh(rec, t) {
    const r = await request(rec, 'get_task', { task_id: t.id });
    if (!r.ok) {
      fail('resume', `session ${this.i}: get_task ${t.id} after resuming: ${j(r)}`);
      return;
    }
    const task = r.task;
    t.trail.push(`${rec.name}:get_task ${task.status}${task.partial ? ` partial ${task.partial.attempt}/${task.partial.seq}` : ''}`);
    if (task.status === 'completed') {
      t.viaGetTask = task;
      t.finish();
    } else if (task.status === 'processing' && task.partial !== undefined) {
      const pt = task.partial;
      if (!isObj(pt) || !isInt(pt.attempt, 1) || !isInt(pt.seq, -1) || typeof pt.text !== 'string') {
        fail('resume', `session ${this.i}: task ${t.id}: malformed partial ${j(pt)}`);
      } else if (!t.partial || pt.attempt > t.partial.attempt || (pt.attempt === t.partial.attempt && pt.seq > t.partial.seq)) {
        t.partial = pt;
        t.partialRec = rec;
      }
    } else if (task.status !== 'pending' && task.status !== 'processing') {
      fail('tasks_completed', `session ${this.i}: task ${t.id} is ${task.status} after resuming: ${j(task)}`);
    }
  }

  async history(rec) {
    const items = [];
    let before;
    for (;;) {
      const r = await request(rec, 'get_history', before ? { limit: 100, before } : { limit: 100 });
      if (!r.ok || !Array.isArray(r.items)) throw new Error(`get_history: ${j(r)}`);
      items.push(...r.items);
      if (!r.has_more || r.items.length === 0) return items;
      before = r.items[r.items.length - 1].task_id;
    }
  }
}

// request sends ev with an ack and resolves with the reply; it rejects
// with Disconnected when the socket goes first.
function request(rec, ev, payload) {
  return new Promise((resolve, reject) => {
    if (!rec.connected) {
      reject(new Disconnected('not connected'));
      return;
    }
    const entry = { reject };
    rec.pending.add(entry);
    const timer = setTimeout(() => {
      rec.pending.delete(entry);
      reject(new Error(`no ack for ${ev} ${j(payload)} within ${ACK_TIMEOUT} ms on ${rec.node.name}`));
    }, ACK_TIMEOUT);
    rec.sock.emit(ev, payload, (reply) => {
      clearTimeout(timer);
      if (!rec.pending.delete(entry)) return;
      if (ackHook && ev === 'ask_question') ackHook(rec, reply);
      resolve(reply);
    });
  });
}

// ---------------------------------------------------------------- load

let asked = 0;
let closing = false;
let nodes = [];
let sessions = [];

// askOne asks question on sess's current socket, waiting out
// too_many_tasks; it returns the Task, or null when the socket went before
// the ack (the question may or may not have been accepted: recover finds
// it in the history if it was).
async function askOne(sess, question, phase) {
  for (;;) {
    const rec = await sess.live.p;
    let r;
    try {
      r = await request(rec, 'ask_question', { question, stream: true });
    } catch (err) {
      if (err instanceof Disconnected) {
        stats.lostAsks++;
        return null;
      }
      throw err;
    }
    if (isObj(r) && r.ok === true && typeof r.task_id === 'string') {
      if (r.status !== 'pending') fail('ask', `session ${sess.i}: ask_question reply status ${j(r.status)}, want "pending"`);
      const t = sess.task(r.task_id);
      if (t.askRec || t.question) fail('ask', `session ${sess.i}: task_id ${r.task_id} given twice`);
      t.question = question;
      t.askRec = rec;
      t.phase = phase;
      return t;
    }
    const code = isObj(r) && isObj(r.error) ? r.error.code : undefined;
    if (code === 'too_many_tasks') {
      stats.tooManyTasks++;
      await sleep(20);
    } else if (code === 'unavailable') {
      stats.unavailable++;
      await sleep(Math.min(1000, r.error.retry_after_ms || 100));
    } else {
      throw new Error(`session ${sess.i}: ask_question ${j(question)}: ${j(r)}`);
    }
  }
}

// slot keeps one question of sess in flight until TARGET are asked.
async function slot(sess, k) {
  for (;;) {
    if (asked >= TARGET) return;
    const question = QUESTIONS[(asked + k) % QUESTIONS.length];
    asked++;
    const t = await askOne(sess, question, 1);
    if (!t) {
      asked--;
      continue;
    }
    await t.done.p;
  }
}

// ---------------------------------------------------------------- checks

class Unfinished extends Error {}

// waitAnswered waits until every task of phase finished, or until no task
// at all finished for ms. In that case it reads the unfinished ones with
// get_task, fails tasks_completed with what it found, and returns false.
async function waitAnswered(phase, ms) {
  const open = () => sessions.flatMap((s) => [...s.tasks.values()].filter((t) => t.phase === phase && !t.finished));
  let seen = tasksCompleted;
  let since = Date.now();
  for (;;) {
    if (open().length === 0) return true;
    if (tasksCompleted !== seen) {
      seen = tasksCompleted;
      since = Date.now();
    } else if (Date.now() - since >= ms) {
      break;
    }
    await sleep(100);
  }
  const left = open();
  const reasons = new Map();
  const states = await Promise.all(left.map(async (t) => {
    let st;
    try {
      const g = await request(t.sess.cur, 'get_task', { task_id: t.id });
      st = isObj(g) && g.ok ? g.task.status : j(g);
    } catch (err) {
      st = `(get_task: ${err.message})`;
    }
    const why = t.askRec === null ? 'found in the history after its ack was lost with the node'
      : t.askRec.node.killed ? `acknowledged by ${t.askRec.node.name}, which was then killed`
        : t.interrupted ? 'its session lost its node' : 'its session kept its socket';
    const key = `${st}, ${why}`;
    reasons.set(key, (reasons.get(key) || 0) + 1);
    return `session ${t.sess.i} task ${t.id} ${st}: ${why} (saw: ${t.trail.join(', ')})`;
  }));
  const tally = [...reasons].map(([k, n]) => `${n} ${k}`).join('; ');
  fail('tasks_completed', `${left.length} tasks unanswered, ${ms / 1000} s without any answer: ${tally}; for example\n  ${states.slice(0, 8).join('\n  ')}`);
  return false;
}

// checkTask checks one finished task against the final get_task.
function checkTask(t, final) {
  const where = `session ${t.sess.i} task ${t.id}${t.interrupted ? ` (its session lost its node; it saw: ${t.trail.join(', ')})` : ''}`;
  if (!isObj(final) || final.status !== 'completed') {
    fail('tasks_completed', `${where}: get_task at the end: ${j(final)}`);
    return;
  }
  const want = EXPECTED.get(t.question);
  if (want === undefined) {
    fail('answer_text', `${where}: question ${j(t.question)} is not one the driver asked`);
  } else if (final.answer !== want) {
    fail('answer_text', `${where}: stored answer ${j(final.answer)}, want the knowledge base's ${j(want)}`);
  }
  if (t.answer && t.answer.answer !== final.answer) {
    fail('answer_text', `${where}: pushed answer ${j(t.answer.answer)} differs from get_task's ${j(final.answer)}`);
  }
  if (final.partial !== undefined) fail('tasks_completed', `${where}: a completed task still has partial ${j(final.partial)}`);
  if (t.pushes > 1) return; // failed already
  if (t.interrupted) {
    stats.interrupted++;
    if (t.partial && t.partial.seq >= 0) stats.partials++;
    if (t.pushes === 0) stats.getTaskOnly++;
  }
  if (t.pushes === 0 && !t.interrupted) {
    fail('one_answer_per_task', `${where}: no "answer" on the socket that asked, which stayed connected`);
  }
  // The answer from the chunks of the highest attempt, after the partial.
  const a = t.maxAttempt();
  if (a === 0) {
    if (!t.interrupted) fail('chunks_join_to_answer', `${where}: no chunk at all for a streamed question`);
    return;
  }
  const m = t.attempts.get(a) || new Map();
  let text = '';
  let seq = 0;
  if (t.partial && t.partial.attempt === a && t.partial.seq >= 0) {
    text = t.partial.text;
    seq = t.partial.seq + 1;
    let prefix = '';
    let whole = true;
    for (let s = 0; s <= t.partial.seq; s++) {
      if (!m.has(s)) { whole = false; break; }
      prefix += m.get(s);
    }
    if (whole && prefix !== t.partial.text) {
      fail('chunks_join_to_answer', `${where}: partial ${j(t.partial)} differs from the chunks 0..${t.partial.seq} seen: ${j(prefix)}`);
    }
  }
  let maxSeq = -1;
  for (const s of m.keys()) maxSeq = Math.max(maxSeq, s);
  let gap = null;
  for (; seq <= maxSeq; seq++) {
    if (!m.has(seq)) { gap = seq; break; }
    text += m.get(seq);
  }
  // Whole when the socket that got the answer also got the rest of the
  // attempt: all of it, or all after a partial that socket's get_task
  // returned. A session without a socket while chunks were pushed has only
  // pieces (its client shows the answer from "answer" or get_task).
  const fromStart = !t.interrupted || (t.answerRec && t.seq0Rec.get(a) === t.answerRec);
  const fromPartial = t.partial && t.partial.attempt === a && t.partial.seq >= 0 && t.partialRec === t.answerRec;
  const heardEnd = t.pushes === 1 && (fromStart || fromPartial);
  if (t.interrupted && heardEnd) stats.interruptedWhole++;
  if (gap !== null) {
    if (heardEnd) fail('chunks_join_to_answer', `${where}: attempt ${a} lacks chunk seq ${gap} (seen ${j([...m.keys()].sort((x, y) => x - y))}, partial ${j(t.partial)})`);
    if (!final.answer.startsWith(text)) fail('chunks_join_to_answer', `${where}: chunks of attempt ${a} before seq ${gap} are not a prefix of the answer: ${j(text)}`);
    return;
  }
  if (heardEnd) {
    if (text !== final.answer) fail('chunks_join_to_answer', `${where}: attempt ${a} joined is ${j(text)}, the answer is ${j(final.answer)}`);
  } else if (!final.answer.startsWith(text)) {
    fail('chunks_join_to_answer', `${where}: attempt ${a} joined (${j(text)}) is not a prefix of the answer ${j(final.answer)}`);
  }
}

async function finalChecks(phase) {
  const work = sessions.map(async (sess) => {
    const rec = await sess.live.p;
    const mine = [...sess.tasks.values()].filter((t) => t.phase === phase);
    await Promise.all(mine.map(async (t) => {
      const r = await request(rec, 'get_task', { task_id: t.id });
      checkTask(t, isObj(r) && r.ok ? r.task : r);
    }));
    if (phase === 1) {
      const items = await sess.history(rec);
      const ids = new Set(items.map((x) => x.task_id));
      for (const id of ids) if (!sess.tasks.has(id)) fail('history_matches', `session ${sess.i}: history holds task ${id}, which the session never saw`);
      for (const id of sess.tasks.keys()) if (!ids.has(id)) fail('history_matches', `session ${sess.i}: task ${id} is not in the history`);
      if (ids.size !== items.length) fail('history_matches', `session ${sess.i}: history lists a task twice`);
    }
  });
  await Promise.all(work);
}

function retriedCount(phase) {
  let n = 0;
  for (const s of sessions) for (const t of s.tasks.values()) if (t.phase === phase && t.maxAttempt() >= 2) n++;
  return n;
}

// retryDelays says how long after the worker kill the answers it held
// streamed again (first chunk of attempt 2 seen): a measurement, not a check.
function retryDelays() {
  const ds = [];
  for (const s of sessions) for (const t of s.tasks.values()) if (t.retryAt && workerKilledAt) ds.push(t.retryAt - workerKilledAt);
  if (ds.length === 0) return 'none seen';
  ds.sort((a, b) => a - b);
  return `${(ds[0] / 1000).toFixed(1)}-${(ds[ds.length - 1] / 1000).toFixed(1)} s after the worker kill (claim-after ${args['claim-after']})`;
}

// ---------------------------------------------------------------- run

async function phase1() {
  for (let i = 0; i < NODES; i++) nodes.push(await startNode(i));
  nodes.forEach((n, i) => { n.name = `node${i}`; });
  note(`nodes up: ${nodes.map((n) => n.url).join(' ')}`);
  const workers = [];
  for (let i = 0; i < WORKERS; i++) workers.push(startWorker());
  if (WORKERS) note(`${WORKERS} workers started`);

  sessions = [];
  for (let i = 0; i < CLIENTS; i++) sessions.push(new Session(i, nodes[i % NODES]));
  // Idle sessions on the node that is killed: they ask all at once just
  // before the kill, so that the node dies with questions half taken.
  const burst = [];
  for (let i = 0; i < BURST; i++) {
    const b = new Session(CLIENTS + i, nodes[NODES - 1]);
    b.burst = true;
    burst.push(b);
  }
  sessions.push(...burst);
  await Promise.all(sessions.map((s) => s.connect(s.node)));
  note(`${sessions.length} sessions connected (${BURST} of them wait on ${nodes[NODES - 1].name} for the burst)`);

  const killed = deferred();
  if (!IN_NODE) {
    killWorkerHook = () => {
      if (tasksCompleted < KILL_WORKER_AT) return;
      killWorkerHook = null;
      const w = workers[0];
      note(`SIGKILL ${w.name} (pid ${w.child.pid}) after ${tasksCompleted} answers`);
      w.kill('SIGKILL');
      workerKilledAt = Date.now();
      // The node dies in the middle of a burst of questions, right after
      // it acknowledged some: acknowledged questions must be answered all
      // the same.
      setTimeout(() => {
        const n = nodes[NODES - 1];
        let acks = 0;
        const killAt = Math.max(1, Math.floor(BURST * 3 / 5));
        const kill = (reply) => {
          n.killed = true;
          n.kill('SIGKILL');
          if (!reply) {
            note(`SIGKILL ${n.name} (pid ${n.child.pid}) after ${tasksCompleted} answers; its ${sessions.filter((s) => s.node === n).length} sessions move`);
            killed.resolve();
            return;
          }
          note(`SIGKILL ${n.name} (pid ${n.child.pid}) after ${tasksCompleted} answers, just after it acknowledged task ${reply.task_id} ` +
            `and ${acks - 1} others of a burst of ${BURST * 3}; its ${sessions.filter((s) => s.node === n).length} sessions move`);
          killed.resolve();
        };
        if (BURST === 0) {
          kill(null);
          return;
        }
        ackHook = (rec, reply) => {
          if (rec.node !== n || !isObj(reply) || reply.ok !== true) return;
          if (++acks < killAt) return;
          ackHook = null;
          kill(reply);
        };
        for (const b of burst) {
          for (let k = 0; k < 3; k++) {
            askOne(b, QUESTIONS[(b.i + k) % QUESTIONS.length], 1).then((t) => { if (t) asked++; }, (err) => fail('ask', err.message));
          }
        }
      }, KILL_NODE_AFTER);
    };
  } else {
    killed.resolve();
  }

  const t1 = Date.now();
  const slots = Promise.all(sessions.filter((s) => !s.burst).flatMap((s) => [0, 1, 2].map((k) => slot(s, k * 7 + s.i))));
  // A slot waits for its task: a task never answered holds it, so the
  // answers are watched for a stall meanwhile.
  let slotsDone = false;
  slots.then(() => { slotsDone = true; });
  for (;;) {
    if (!(await waitAnswered(1, 20000))) throw new Unfinished();
    if (slotsDone) break;
    await sleep(100);
  }
  await killed.p;
  // Every session of the killed node notices and starts to recover.
  for (let k = 0; k < 500 && sessions.some((s) => s.node.killed && !s.recovering); k++) await sleep(20);
  // Sessions of the killed node may still be adopting tasks.
  await Promise.all(sessions.map((s) => s.recovering));
  if (!(await waitAnswered(1, 20000))) throw new Unfinished();
  const secs = (Date.now() - t1) / 1000;
  const total = sessions.reduce((n, s) => n + s.tasks.size, 0);
  note(`all ${total} tasks answered in ${secs.toFixed(1)} s; checking`);
  await finalChecks(1);
  const retried = retriedCount(1);
  if (IN_NODE) skipped.set('retried_attempt', 'no worker is killed with --in-node');
  else if (retried === 0) {
    fail('retried_attempt', `no task was seen with attempt >= 2: the worker kill (after ${KILL_WORKER_AT} answers) hit no answer in progress; tune --kill-worker-at or the answer delay`);
  }
  return { total, retried, secs, workers };
}

async function phase2(workers) {
  for (const w of workers) {
    if (!w.alive()) continue;
    w.kill('SIGTERM');
  }
  for (const w of workers) {
    if (w.expectExit && w.exit === null) {
      const r = await Promise.race([w.exited, sleep(15000).then(() => null)]);
      if (r === null) fail('graceful_exit', `${w.name}: still running 15 s after SIGTERM (idle, so it should stop at once)`);
    }
    if (w.exit && w.exit.signal !== 'SIGKILL' && w.exit.code !== 0) {
      fail('graceful_exit', `${w.name}: exited with ${j(w.exit)} after SIGTERM, want code 0; last log lines:\n${tail(w.log, 10)}`);
    }
  }
  note(`all workers stopped; asking ${PHASE2} questions with none running`);
  const live = sessions.filter((s) => s.cur && s.cur.connected);
  if (Math.ceil(PHASE2 / live.length) > 3) throw new Error(`phase 2 would ask more than 3 questions of a session (${live.length} sessions left)`);
  const asks = [];
  for (let k = 0; k < PHASE2; k++) asks.push(askOne(live[k % live.length], QUESTIONS[k % QUESTIONS.length], 2));
  const tasks = (await Promise.all(asks)).filter(Boolean);
  if (tasks.length !== PHASE2) fail('phase2_pending', `${PHASE2 - tasks.length} phase-2 questions lost their ack`);
  // No worker runs: give one time to misbehave, then every task is pending.
  await sleep(1500);
  await Promise.all(tasks.map(async (t) => {
    const r = await request(t.sess.cur, 'get_task', { task_id: t.id });
    const st = isObj(r) && r.ok ? r.task.status : j(r);
    if (st !== 'pending') fail('phase2_pending', `session ${t.sess.i} task ${t.id}: ${st} with no worker running, want pending`);
    if (t.statuses.some((x) => x !== 'pending') || t.attempts.size > 0 || t.pushes > 0) {
      fail('phase2_pending', `session ${t.sess.i} task ${t.id}: pushes with no worker running: statuses ${j(t.statuses)}, ${t.attempts.size} attempts of chunks, ${t.pushes} answers`);
    }
  }));
  const w = startWorker();
  note(`${w.name} started`);
  if (!(await waitAnswered(2, 20000))) {
    fail('phase2_completed', `tasks unanswered after ${w.name} started (listed under tasks_completed)`);
    return w;
  }
  const before = failures.get('tasks_completed').length + failures.get('chunks_join_to_answer').length +
    failures.get('one_answer_per_task').length + failures.get('answer_text').length;
  await finalChecks(2);
  const after = failures.get('tasks_completed').length + failures.get('chunks_join_to_answer').length +
    failures.get('one_answer_per_task').length + failures.get('answer_text').length;
  if (after > before) fail('phase2_completed', `${after - before} phase-2 task checks failed (listed under their checks)`);
  note(`phase 2: all ${tasks.length} answered by ${w.name}`);
  return w;
}

async function stopAll() {
  closing = true;
  for (const s of sessions) if (s.cur) s.cur.sock.disconnect();
  const live = procs.filter((p) => p.alive() && !p.expectExit);
  for (const p of live) p.kill('SIGTERM');
  await Promise.all(live.map(async (p) => {
    const r = await Promise.race([p.exited, sleep(15000).then(() => null)]);
    if (r === null) {
      fail('graceful_exit', `${p.name}: still running 15 s after SIGTERM`);
      p.kill('SIGKILL');
    } else if (r.code !== 0) {
      fail('graceful_exit', `${p.name}: exited with ${j(r)} after SIGTERM, want code 0; last log lines:\n${tail(p.log, 10)}`);
    }
  }));
}

function dumpOpen() {
  const open = sessions.flatMap((s) => [...s.tasks.values()].filter((t) => !t.finished));
  console.log(`# durable: ${open.length} tasks unfinished, asked ${asked}, completed ${tasksCompleted}`);
  for (const t of open.slice(0, 10)) {
    console.log(`#   session ${t.sess.i} on ${t.sess.node && t.sess.node.name} task ${t.id} phase ${t.phase} ` +
      `interrupted ${t.interrupted} statuses ${j(t.statuses)} attempts ${j([...t.attempts].map(([a, m]) => [a, m.size]))} partial ${j(t.partial)}`);
  }
}

// report prints the checks; cut short (the deadline), it prints only the
// failures, since the other checks did not all run.
function report(summary, cutShort = false) {
  let passed = 0;
  let failed = 0;
  for (const [name, msgs] of failures) {
    if (skipped.has(name) && msgs.length === 0) {
      console.log(`skip ${name}: ${skipped.get(name)}`);
      continue;
    }
    if (msgs.length === 0) {
      if (cutShort) continue;
      console.log(`ok ${name}`);
      passed++;
      continue;
    }
    failed++;
    console.log(`FAIL ${name}: ${msgs[0]}`);
    for (const m of msgs.slice(1, 5)) console.log(`  also: ${m}`);
    if (msgs.length > 5) console.log(`  … and ${msgs.length - 5} more`);
  }
  if (summary) console.log(summary);
  console.log(`${passed} passed, ${failed} failed`);
  return failed;
}

let done = false;
const deadline = setTimeout(async () => {
  if (done) return;
  fail('tasks_completed', `the run did not finish within ${DEADLINE} ms`);
  dumpOpen();
  closing = true;
  for (const p of procs) p.kill('SIGKILL');
  report('', true);
  process.exit(1);
}, DEADLINE);

async function main() {
  let summary = '';
  try {
    const { total, retried, secs, workers } = await phase1();
    summary = `# durable summary: ${total} tasks over ${sessions.length} sessions on ${NODES} nodes, ${WORKERS} workers; ` +
      `${retried} answered again (attempt >= 2), streaming again ${retryDelays()}; ${stats.reconnected} sessions resumed on another node ` +
      `with ${stats.interrupted} tasks open (${stats.partials} with a partial, ${stats.interruptedWhole} streamed whole to the new socket, ` +
      `${stats.getTaskOnly} finished unseen, read with get_task); ` +
      `${stats.lostAsks} asks lost with the node (${stats.adopted} found in history); ` +
      `${stats.tooManyTasks} too_many_tasks retries; ${stats.staleChunks} chunks of a superseded attempt; phase 1 ${secs.toFixed(1)} s`;
    if (PHASE2 > 0) await phase2(workers);
    else skipped.set('phase2_pending', 'no phase 2').set('phase2_completed', 'no phase 2');
  } catch (err) {
    if (!(err instanceof Unfinished)) {
      fail('processes', `the run stopped: ${err.stack || err.message}`);
      dumpOpen();
    }
    for (const c of ['chunks_join_to_answer', 'answer_text', 'history_matches', 'retried_attempt', 'phase2_pending', 'phase2_completed']) {
      if (failures.get(c).length === 0) skipped.set(c, 'not reached');
    }
  }
  await stopAll();
  done = true;
  clearTimeout(deadline);
  summary = `${summary || '# durable summary: stopped before the end'}; total ${elapsed()}`;
  process.exit(report(summary) ? 1 : 0);
}

process.on('exit', () => {
  for (const p of procs) if (p.alive()) p.child.kill('SIGKILL');
});
main();
