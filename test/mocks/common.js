'use strict';
// Shared helpers of the mock providers: clock, order-preserving JSON parser, request recorder,
// per-token behaviour registry, TLS server plumbing, small JWT/base64url utilities.
// Node built-ins only.

const crypto = require('crypto');
const http2 = require('http2');
const zlib = require('zlib');
const { performance } = require('perf_hooks');

// ---------------------------------------------------------------------------------------------
// Clock. Every time-based rule (JWT iat/exp, access-token expiry, receipt expiry) reads nowMs(),
// which is the wall clock shifted by config.clockOffset seconds (settable through /config).
// ---------------------------------------------------------------------------------------------
const clock = { offsetMs: 0 };
const nowMs = () => Date.now() + clock.offsetMs;
const nowSec = () => Math.floor(nowMs() / 1000);
// Wall-clock receive time in ms with sub-ms precision (never shifted: it is for ordering/latency).
const hrTime = () => Math.round((performance.timeOrigin + performance.now()) * 1000) / 1000;

// ---------------------------------------------------------------------------------------------
// Deterministic ids: counters, so runs are reproducible. Access tokens are random (secrets).
// ---------------------------------------------------------------------------------------------
let idSeq = 0;
function seqUuid(prefix = 0) {
  const n = (++idSeq).toString(16).padStart(12, '0');
  return `${prefix.toString(16).padStart(8, '0')}-0000-4000-8000-${n}`;
}
const randomToken = (bytes = 24) => crypto.randomBytes(bytes).toString('base64url');

// ---------------------------------------------------------------------------------------------
// Strict JSON parser that remembers key order and duplicate keys of every object.
// JSON.parse reorders integer-like keys ("2" before "b"); FCM's error text names the index of
// the offending map entry ("message.data[0].value"), so the original order matters.
// ---------------------------------------------------------------------------------------------
const KEY_ORDER = new WeakMap();   // object -> [keys in source order]
const DUP_KEYS = new WeakMap();    // object -> [duplicated keys]
const STR_RE = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
const NUM_RE = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

function parseJson(text) {
  const s = String(text);
  let i = 0;
  const fail = (msg) => { const e = new SyntaxError(`${msg} at position ${i}`); e.position = i; throw e; };
  const ws = () => { while (i < s.length && (s[i] === ' ' || s[i] === '\t' || s[i] === '\n' || s[i] === '\r')) i++; };
  function str() {
    STR_RE.lastIndex = i;
    const m = STR_RE.exec(s);
    if (!m) fail('Bad string');
    i += m[0].length;
    return JSON.parse(m[0]);
  }
  function value(depth) {
    if (depth > 200) fail('Nesting too deep');
    ws();
    const c = s[i];
    if (c === '{') {
      i++;
      const obj = {}, order = [], dups = [];
      ws();
      if (s[i] === '}') { i++; KEY_ORDER.set(obj, order); return obj; }
      for (;;) {
        ws();
        if (s[i] !== '"') fail('Expected key');
        const k = str();
        ws();
        if (s[i] !== ':') fail('Expected ":"');
        i++;
        const v = value(depth + 1);
        if (Object.prototype.hasOwnProperty.call(obj, k)) { dups.push(k); order.splice(order.indexOf(k), 1); }
        Object.defineProperty(obj, k, { value: v, enumerable: true, writable: true, configurable: true });
        order.push(k);
        ws();
        if (s[i] === ',') { i++; continue; }
        if (s[i] === '}') { i++; break; }
        fail('Expected "," or "}"');
      }
      KEY_ORDER.set(obj, order);
      if (dups.length) DUP_KEYS.set(obj, dups);
      return obj;
    }
    if (c === '[') {
      i++;
      const arr = [];
      ws();
      if (s[i] === ']') { i++; return arr; }
      for (;;) {
        arr.push(value(depth + 1));
        ws();
        if (s[i] === ',') { i++; continue; }
        if (s[i] === ']') { i++; break; }
        fail('Expected "," or "]"');
      }
      return arr;
    }
    if (c === '"') return str();
    if (s.startsWith('true', i)) { i += 4; return true; }
    if (s.startsWith('false', i)) { i += 5; return false; }
    if (s.startsWith('null', i)) { i += 4; return null; }
    NUM_RE.lastIndex = i;
    const m = NUM_RE.exec(s);
    if (m && m[0].length) { i += m[0].length; return Number(m[0]); }
    fail('Unexpected token');
  }
  const v = value(0);
  ws();
  if (i !== s.length) fail('Unexpected data after JSON value');
  return v;
}
const keysOf = (o) => KEY_ORDER.get(o) || Object.keys(o);
const dupKeysOf = (o) => DUP_KEYS.get(o) || [];
const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// ---------------------------------------------------------------------------------------------
// base64url / JWT helpers
// ---------------------------------------------------------------------------------------------
const B64URL_RE = /^[A-Za-z0-9_-]*$/;
function b64urlDecode(str) {
  if (typeof str !== 'string' || !B64URL_RE.test(str) || str.length % 4 === 1) return null;
  return Buffer.from(str, 'base64url');
}
// Split a compact JWS. Returns {header, claims, signingInput, signature} or {error}.
function decodeJwt(jwt) {
  if (typeof jwt !== 'string') return { error: 'not a string' };
  const parts = jwt.split('.');
  if (parts.length !== 3) return { error: `JWT has ${parts.length} parts` };
  const [h, c, sg] = parts;
  const hb = b64urlDecode(h), cb = b64urlDecode(c), sb = b64urlDecode(sg);
  if (!hb || !cb || !sb) return { error: 'JWT part is not base64url (no padding)' };
  let header, claims;
  try { header = JSON.parse(hb.toString('utf8')); } catch { return { error: 'JWT header is not JSON' }; }
  try { claims = JSON.parse(cb.toString('utf8')); } catch { return { error: 'JWT claims are not JSON' }; }
  if (!isObj(header) || !isObj(claims)) return { error: 'JWT header/claims are not objects' };
  return { header, claims, signingInput: Buffer.from(`${h}.${c}`), signature: sb };
}

// ---------------------------------------------------------------------------------------------
// Recorder: every request, in arrival order, with what was answered.
// ---------------------------------------------------------------------------------------------
class Recorder {
  constructor() { this.reset(); }
  reset() {
    this.entries = [];
    this.dropped = 0;
    this.seq = 0;
    this.stats = {};     // provider -> {requests, byStatus:{}}
    this.accepted = {};  // provider -> {token: count}
    // provider -> {token: count}: every request received with its body complete, whatever was
    // answered (or not). Kept apart from the log, so logLimit never makes a count wrong.
    this.received = {};
    this.faults = {};    // provider -> {requests, injected, byKind:{}}: see faultFor()
  }
  clearLog() { this.entries = []; this.dropped = 0; }
  begin(provider, fields, limit) {
    const e = Object.assign({ seq: ++this.seq, provider, time: hrTime() }, fields, { response: null });
    this.entries.push(e);
    if (limit && this.entries.length > limit) { this.entries.shift(); this.dropped++; }
    const st = this.stats[provider] || (this.stats[provider] = { requests: 0, byStatus: {}, events: {} });
    if (!e.event) st.requests++;
    return e;
  }
  // status: a number, or a string like "reset"/"drop"/"rejected" for non-HTTP outcomes.
  finish(e, status, headers, body) {
    if (e.response) return;
    e.response = { status, headers: headers || {}, body: body === undefined ? null : body, time: hrTime() };
    const st = this.stats[e.provider];
    // connection-level events (refused TLS handshakes, ...) are counted apart from requests
    const bucket = e.event ? st.events : st.byStatus;
    bucket[status] = (bucket[status] || 0) + 1;
    if (this.onFinish) this.onFinish(e);
  }
  accept(provider, token) {
    const m = this.accepted[provider] || (this.accepted[provider] = {});
    m[token] = (m[token] || 0) + 1;
  }
  // entry: the request's log entry, which remembers the tokens it was counted under
  receive(provider, token, entry) {
    if (typeof token !== 'string' || token === '') return;
    const m = this.received[provider] || (this.received[provider] = {});
    m[token] = (m[token] || 0) + 1;
    if (entry) (entry.counted || (entry.counted = [])).push(token);
  }
  // A request refused unprocessed (above a GOAWAY's last-stream-id) was not received after all:
  // a client may resend it (RFC 9113 8.7), and the resend is the one that counts.
  unreceive(provider, entry) {
    const m = this.received[provider] || {};
    for (const t of entry.counted || []) if (m[t] > 0 && --m[t] === 0) delete m[t];
    entry.counted = [];
  }
  faultStats(provider) {
    return this.faults[provider] || (this.faults[provider] = { requests: 0, injected: 0, byKind: {}, refused: 0 });
  }
}

// ---------------------------------------------------------------------------------------------
// Token behaviour registry. A state is given as a string or as an object:
//   ok | dead | gone | bad | mismatch | expired | sandbox-only | production-only | apns-dead | apns-auth
//   receipt-dead | receipt-error:<Code> | ticket-error:<Code> | project:<experienceId>
//   fail:<status>[:<retryAfter>][:<count>][:<reason>]   slow:<ms>[:<count>]
//   reset[:<count>]   drop[:<count>]   redirect[:<status>][:<count>] (FCM, APNs: a 3xx to the same URL)
//   refuse[:<count>] (APNs: RST_STREAM(REFUSED_STREAM), unprocessed: not counted as received)
// Object form: {"state":"fail","status":503,"retryAfter":2,"count":1,"reason":"Shutdown"}.
// States with a count revert to "ok" once used up. Unknown tokens behave as "ok".
// ---------------------------------------------------------------------------------------------
// A scripted redirect answers one of these, with Location: the same URL (a client that follows
// it sends the request again, which the log shows).
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const SIMPLE_STATES = new Set(['ok', 'dead', 'bad', 'mismatch', 'expired', 'sandbox-only', 'production-only',
  'apns-dead', 'apns-auth', 'receipt-dead', 'gone']);
// OneSignal (unsubscribed, invalid), push webhook (not-found) and chat webhooks (deleted, archived,
// no-team, channel-not-found, invalid-token): what each one answers is in README.md.
for (const s of ['unsubscribed', 'invalid', 'not-found', 'deleted', 'archived', 'no-team', 'channel-not-found', 'invalid-token']) SIMPLE_STATES.add(s);

function parseState(spec) {
  if (isObj(spec)) {
    const kind = spec.state || spec.kind;
    if (typeof kind !== 'string') throw new Error('state object needs "state"');
    const base = SIMPLE_STATES.has(kind) ? { kind } : null;
    const st = base || (['fail', 'slow', 'reset', 'drop', 'refuse', 'receipt-error', 'ticket-error', 'project'].includes(kind)
      ? { kind, count: null } : kind === 'redirect' ? { kind, status: 307, count: null } : parseState(kind));
    for (const k of ['status', 'retryAfter', 'count', 'ms', 'reason', 'code', 'project']) {
      if (spec[k] !== undefined && spec[k] !== null) st[k] = spec[k];
    }
    if (st.kind === 'fail' && !(Number.isInteger(st.status) && st.status >= 100 && st.status <= 599)) throw new Error('fail needs "status" (an HTTP status)');
    if (st.kind === 'fail' && st.retryAfter === undefined) st.retryAfter = null;
    if (st.kind === 'slow' && !(Number.isInteger(st.ms) && st.ms >= 0)) throw new Error('slow needs "ms"');
    if (st.kind === 'redirect' && !REDIRECT_STATUSES.has(st.status)) throw new Error('redirect needs a 3xx "status" (301, 302, 303, 307, 308)');
    if ((st.kind === 'receipt-error' || st.kind === 'ticket-error') && typeof st.code !== 'string') throw new Error(`${st.kind} needs "code"`);
    if (st.kind === 'project' && typeof st.project !== 'string') throw new Error('project needs "project"');
    if (st.count !== null && st.count !== undefined && !(Number.isInteger(st.count) && st.count > 0)) throw new Error('"count" must be a positive integer');
    return st;
  }
  if (typeof spec !== 'string' || !spec) throw new Error('state must be a non-empty string or object');
  const p = spec.split(':');
  const int = (v, what) => {
    if (v === undefined || v === '') return null;
    if (!/^\d+$/.test(v)) throw new Error(`bad ${what} "${v}" in state "${spec}"`);
    return Number(v);
  };
  if (SIMPLE_STATES.has(spec)) return { kind: spec };
  switch (p[0]) {
    case 'fail': {
      const status = int(p[1], 'status');
      if (!status || status < 100 || status > 599) throw new Error(`fail needs an HTTP status: "${spec}"`);
      // retryAfter: delta-seconds here (an HTTP-date contains ':', use the object form for it)
      const ra = p[2] === undefined || p[2] === '' ? null : (/^\d+$/.test(p[2]) ? Number(p[2]) : p[2]);
      return { kind: 'fail', status, retryAfter: ra, count: int(p[3], 'count'), reason: p.slice(4).join(':') || null };
    }
    case 'slow': {
      const ms = int(p[1], 'ms');
      if (ms === null) throw new Error(`slow needs milliseconds: "${spec}"`);
      return { kind: 'slow', ms, count: int(p[2], 'count') };
    }
    case 'redirect': {
      if (p.length > 3) break;
      const status = int(p[1], 'status') ?? 307;
      if (!REDIRECT_STATUSES.has(status)) throw new Error(`redirect needs a 3xx status (301, 302, 303, 307, 308): "${spec}"`);
      return { kind: 'redirect', status, count: int(p[2], 'count') };
    }
    case 'reset': case 'drop': case 'refuse':
      if (p.length > 2) break;
      return { kind: p[0], count: int(p[1], 'count') };
    case 'receipt-error': case 'ticket-error':
      if (!p[1]) break;
      return { kind: p[0], code: p.slice(1).join(':') };
    case 'project':
      if (!p[1]) break;
      return { kind: 'project', project: p.slice(1).join(':') };
    default:
  }
  throw new Error(`unknown token state "${spec}"`);
}

class TokenRegistry {
  constructor() { this.map = new Map(); }
  key(provider, token) { return `${provider}\u0000${token}`; }
  set(provider, token, spec) {
    const st = parseState(spec);
    st.spec = spec;
    st.since = nowMs();
    st.used = 0;
    this.map.set(this.key(provider, token), st);
    return st;
  }
  delete(provider, token) { return this.map.delete(this.key(provider, token)); }
  clear() { this.map.clear(); }
  // Look at a token's state without consuming a use.
  peek(provider, token) { return this.map.get(this.key(provider, token)) || null; }
  // The behaviour for one request: consumes one use of a counted state.
  use(provider, token) {
    const k = this.key(provider, token);
    const st = this.map.get(k);
    if (!st) return { kind: 'ok' };
    st.used++;
    if (st.count !== null && st.count !== undefined) {
      if (st.count <= 0) { this.map.delete(k); return { kind: 'ok' }; }
      st.count--;
      if (st.count === 0) this.map.delete(k);
    }
    return st;
  }
  list() {
    const out = [];
    for (const [k, st] of this.map) {
      const [provider, token] = k.split('\u0000');
      out.push({ provider, token, state: st.spec, kind: st.kind, remaining: st.count ?? null, used: st.used, since: st.since });
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// TLS / HTTP plumbing shared by the HTTPS mocks.
// ---------------------------------------------------------------------------------------------
const CONN = Symbol('connId');
const REQN = Symbol('requestsOnConnection');
let connSeq = 0;
const nextConnId = () => ++connSeq;

// Track connections of a TLS/h2 server: connection ids, and sets used to close them on shutdown.
function trackConnections(server, ctx) {
  server.on('session', (session) => {
    session[CONN] = nextConnId();
    ctx.sessions.add(session);
    session.on('close', () => ctx.sessions.delete(session));
    session.on('error', () => {});
    watchArrivals(session);
  });
  server.on('secureConnection', (sock) => {
    if (sock.alpnProtocol !== 'h2') sock[CONN] = nextConnId();
    ctx.sockets.add(sock);
    sock.on('close', () => ctx.sockets.delete(sock));
    sock.on('error', () => {});
  });
  server.on('connection', (sock) => {
    ctx.sockets.add(sock);
    sock.on('close', () => ctx.sockets.delete(sock));
    sock.on('error', () => {});
  });
  server.on('tlsClientError', () => {});
}

function pairs(raw) {
  const out = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i], raw[i + 1]]);
  return out;
}

// Request metadata of a compat-API request (http2 with allowHTTP1: h2 or http/1.1).
function compatInfo(req) {
  const h2 = req.httpVersionMajor === 2;
  const sock = h2 ? req.stream.session.socket : req.socket;
  let reqOnConn = null;
  if (!h2) reqOnConn = req.socket[REQN] = (req.socket[REQN] || 0) + 1;
  return {
    method: req.method,
    path: req.url,
    httpVersion: h2 ? '2' : req.httpVersion,
    alpn: sock.alpnProtocol || null,
    tls: typeof sock.getProtocol === 'function' ? sock.getProtocol() : null,
    connId: h2 ? req.stream.session[CONN] : req.socket[CONN],
    streamId: h2 ? req.stream.id : null,
    requestOnConnection: reqOnConn,
    headers: Object.assign({}, req.headers),
    rawHeaders: pairs(req.rawHeaders || []),
  };
}

// Whether an HTTP/2 stream's request came whole, at its 'end': Node also ends the readable side
// of a stream the client reset before its END_STREAM, and that stream is closed by then (one
// that came whole stays open for the answer). Half a request is not one a server acts on.
function endedWhole(stream) {
  return !stream || !stream.closed;
}

// Collect a request body (Buffer). Stops storing after `limit` bytes but drains the rest.
function readBody(req, limit = 8 * 1024 * 1024) {
  return new Promise((resolve) => {
    const chunks = [];
    let size = 0, over = false, done = false;
    const finish = (aborted) => { if (done) return; done = true; resolve({ buf: Buffer.concat(chunks), size, over, aborted }); };
    req.on('data', (c) => { size += c.length; if (size > limit) over = true; else chunks.push(c); });
    req.on('end', () => finish(!endedWhole(req.stream)));
    req.on('error', () => finish(true));
    req.on('aborted', () => finish(true));
    req.on('close', () => finish(true));
  });
}

// A request's body, or null for half a request (its stream or connection ended before its
// END_STREAM: never received, its log entry says "aborted").
async function readWholeBody(rec, req, entry, limit) {
  const r = await readBody(req, limit);
  if (!r.aborted) return r;
  rec.finish(entry, 'aborted', {}, null);
  return null;
}

// Try to show a body in the log: parsed JSON if possible, else text, else base64.
function bodyForLog(buf) {
  if (!buf || buf.length === 0) return { body: null, bodyText: '' };
  const text = buf.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(buf)) return { body: null, bodyBase64: buf.toString('base64') };
  try { return { body: JSON.parse(text), bodyText: text }; } catch { return { body: null, bodyText: text }; }
}

// ---------------------------------------------------------------------------------------------
// Faults under load (config.faults, README "Faults under load"). Every Nth request of a provider
// that reaches the point where it would be delivered gets the next fault kind in turn:
//   goaway - GOAWAY(NO_ERROR) whose last-stream-id is below this stream: this stream and every
//            later one on the connection are refused, unprocessed (not counted as received, so
//            a client may resend them); earlier ones are answered;
//   reset  - RST_STREAM(INTERNAL_ERROR) on this stream only;
//   drop   - the request is processed, then the connection is destroyed: its answer and the
//            answers of every other request in flight on it are lost;
//   error  - as drop, but first GOAWAY(INTERNAL_ERROR) whose last-stream-id is the last stream
//            received: every request in flight may have been processed (what an nghttp2 server
//            does after too many resets). A client that resends them silently makes duplicates;
//   slow   - the answer comes after faults.slowMs (longer than the client's timeout).
// goaway, drop and error break a connection, and a request the client wrote before it learnt
// of the break but that the server never read is an attempt the mock never saw. So the break
// waits until the connection is quiet: from the fault on, requests reaching the delivery point
// on it are held unanswered, and the break happens once no new stream arrived for
// faults.quietMs, no stream is still receiving its body and one more read of the socket
// brought nothing new (at the latest after faults.holdMaxMs). The client cannot open more than
// its stream limit meanwhile, so the connection does go quiet, and what it sent has arrived and
// been counted (received) before the break. A client that opens a new stream in the instant of
// the break still crosses it: Node's HTTP/2 (nghttp2) ignores new streams once it sent GOAWAY
// and shows nothing of bytes read after a destroy, so such a request is never counted (never
// counted twice either). On HTTP/1.1 (one request per connection) all three just close the
// connection.
// ---------------------------------------------------------------------------------------------
const FAULT_KINDS = ['goaway', 'reset', 'drop', 'error', 'slow'];
const BREAKS = new Set(['goaway', 'drop', 'error']);
const ARRIVALS = Symbol('arrivals');
const BREAK = Symbol('pendingBreak');

// When the last stream of a session arrived, how many are open and how many still read a body.
function watchArrivals(session) {
  const a = session[ARRIVALS] = { last: 0, open: 0, reading: 0, maxId: 0 };
  session.on('stream', (stream) => {
    a.last = performance.now();
    a.maxId = Math.max(a.maxId, stream.id);
    a.open++;
    a.reading++;
    let reading = true;
    const bodyDone = () => { if (reading) { reading = false; a.reading--; } };
    stream.once('end', bodyDone);
    stream.once('close', () => { bodyDone(); a.open--; });
  });
}

// The fault for this request: null (none), 'held' (its connection is breaking: leave it, the
// break finishes it), 'close' (HTTP/1.1: close the connection), 'reset' or 'slow'. stream: the
// request's h2 stream, or null on HTTP/1.1.
function faultFor(ctx, provider, entry, stream) {
  const session = stream ? stream.session : null;
  const b = session ? session[BREAK] : null;
  if (b) {
    // below a GOAWAY's last-stream-id a stream is still processed and answered
    if (b.kind === 'goaway' && stream.id < b.from) return null;
    entry.fault = `held:${b.kind}`;
    if (!b.broken) b.held.push(entry);
    // a stream that came in as the GOAWAY went out: above its last-stream-id it is refused
    else if (stream.id > b.last) refuse(ctx, provider, entry);
    else ctx.rec.finish(entry, b.kind, {}, null);
    return 'held';
  }
  const f = ctx.config.faults;
  const every = (f.every && f.every[provider]) || 0;
  const st = ctx.rec.faultStats(provider);
  st.requests++;
  if (!(every > 0) || st.requests % every !== 0 || !f.kinds.length) return null;
  if (f.max > 0 && st.injected >= f.max) return null;
  const kind = f.kinds[st.injected % f.kinds.length];
  st.injected++;
  st.byKind[kind] = (st.byKind[kind] || 0) + 1;
  entry.fault = kind;
  if (!BREAKS.has(kind)) return kind;
  if (!session) return 'close';
  session[BREAK] = { kind, provider, from: stream.id, held: [entry], started: performance.now() };
  breakWhenQuiet(ctx, session);
  return 'held';
}

function refuse(ctx, provider, entry) {
  ctx.rec.unreceive(provider, entry);
  ctx.rec.faultStats(provider).refused++;
  ctx.rec.finish(entry, 'refused', {}, null);
}

function breakWhenQuiet(ctx, session) {
  const f = ctx.config.faults;
  const b = session[BREAK];
  const a = session[ARRIVALS];
  if (session.destroyed) {
    for (const e of b.held) ctx.rec.finish(e, 'aborted', {}, null);
    return;
  }
  const now = performance.now();
  const quiet = now - a.last >= f.quietMs && a.reading === 0;
  if (!quiet && now - b.started < f.holdMaxMs) {
    setTimeout(() => breakWhenQuiet(ctx, session), Math.max(5, f.quietMs / 2));
    return;
  }
  // Timers run before the event loop reads its sockets: let it read once more what already
  // arrived (setImmediate runs after that), and break only if that brought no new stream.
  if (quiet && !b.confirmed) {
    const seen = a.last;
    setImmediate(() => {
      if (a.last === seen && a.reading === 0) b.confirmed = true;
      breakWhenQuiet(ctx, session);
    });
    return;
  }
  b.broken = true;
  // the log shows each break: how long it waited, whether the connection had gone quiet
  const ev = ctx.rec.begin(b.provider, {
    event: 'break', kind: b.kind, connId: session[CONN], streamId: b.from, held: b.held.length,
    waitedMs: Math.round(now - b.started), quiet, open: a.open, reading: a.reading,
  }, ctx.config.logLimit);
  ctx.rec.finish(ev, b.kind, {}, null);
  if (b.kind === 'drop') {
    // processed, never answered
    for (const e of b.held) ctx.rec.finish(e, 'drop', {}, null);
    hardClose(session.socket);
    try { session.destroy(); } catch { /* gone */ }
    return;
  }
  if (b.kind === 'error') {
    // processed, never answered; the GOAWAY says so, then the connection goes
    for (const e of b.held) ctx.rec.finish(e, 'error', {}, null);
    b.last = a.maxId;
    try { session.goaway(http2.constants.NGHTTP2_INTERNAL_ERROR, b.last); } catch { /* gone */ }
    setTimeout(() => { hardClose(session.socket); try { session.destroy(); } catch { /* gone */ } }, 20);
    return;
  }
  // goaway: the held streams (this one and all later ones) are refused, unprocessed: they do
  // not count as received. Streams below finish, then the connection is closed.
  for (const e of b.held) refuse(ctx, b.provider, e);
  b.last = Math.max(0, b.from - 2);
  try { session.goaway(http2.constants.NGHTTP2_NO_ERROR, b.last); } catch { /* gone */ }
  const until = now + f.holdMaxMs;
  const closeWhenDone = () => {
    if (session.destroyed) return;
    if (a.open > 0 && performance.now() < until) { setTimeout(closeWhenDone, 20); return; }
    try { session.destroy(); } catch { /* gone */ }
  };
  setTimeout(closeWhenDone, 20);
}

// Send a response on a compat request and record it. body: object (JSON), string or Buffer.
function sendCompat(rec, req, res, entry, status, headers = {}, body = null, opts = {}) {
  let payload = Buffer.alloc(0);
  const h = Object.assign({}, headers);
  if (body !== null && body !== undefined) {
    if (Buffer.isBuffer(body)) payload = body;
    else if (typeof body === 'string') payload = Buffer.from(body);
    else { payload = Buffer.from(JSON.stringify(body)); if (!h['content-type']) h['content-type'] = 'application/json; charset=UTF-8'; }
  }
  let wire = payload;
  if (opts.gzip && payload.length) {
    wire = zlib.gzipSync(payload);
    h['content-encoding'] = 'gzip';
    h.vary = 'Accept-Encoding';
  }
  h['content-length'] = String(wire.length);
  rec.finish(entry, status, h, typeof body === 'object' && !Buffer.isBuffer(body) ? body : (payload.length ? payload.toString('utf8') : null));
  if (res.destroyed || (req.stream && req.stream.destroyed)) return;
  try {
    res.writeHead(status, h);
    res.end(wire);
  } catch { /* client went away */ }
}

// Abort a compat request: "reset" = RST_STREAM(INTERNAL_ERROR) on h2 / close the socket on
// http/1.1; "drop" = close the whole TCP connection (TCP RST where possible).
function abortCompat(rec, req, entry, kind) {
  rec.finish(entry, kind, {}, null);
  try {
    if (req.httpVersionMajor !== 2) hardClose(req.socket);
    else if (kind === 'reset') req.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    else req.stream.session.destroy();
  } catch { /* already gone */ }
}
function hardClose(sock) {
  try {
    if (typeof sock.resetAndDestroy === 'function' && sock._handle) sock.resetAndDestroy();
    else sock.destroy();
  } catch { try { sock.destroy(); } catch { /* gone */ } }
}

// True when the client has gone away (e.g. during a slow:<ms> delay or after a GOAWAY): such a
// request is recorded as "aborted" and NOT counted as accepted (accepted = a success was sent).
function clientGone(req) {
  return req.httpVersionMajor === 2 ? req.stream.destroyed || req.stream.closed : req.socket.destroyed;
}

// HTML body a misbehaving proxy / CDN would send.
const PROXY_502_HTML = '<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>mock-proxy</center></body></html>\n';

// Body of a scripted redirect (what a web server sends with a 3xx).
const REDIRECT_HTML = '<html><head><title>Moved</title></head><body><a href="">moved here</a></body></html>\n';

// Deep merge for /config (arrays and scalars replace).
function deepMerge(dst, src) {
  for (const k of Object.keys(src)) {
    if (k === '__proto__' || k === 'constructor' || k === 'prototype') continue;
    if (isObj(src[k]) && isObj(dst[k])) deepMerge(dst[k], src[k]);
    else dst[k] = src[k];
  }
  return dst;
}

// Decrement a "next N requests" counter in config; true if this request is hit.
function takeNext(obj, key) {
  if (obj[key] > 0) { obj[key]--; return true; }
  return false;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

module.exports = {
  clock, nowMs, nowSec, hrTime, seqUuid, randomToken,
  parseJson, keysOf, dupKeysOf, isObj,
  b64urlDecode, decodeJwt,
  Recorder, TokenRegistry, parseState,
  CONN, trackConnections, FAULT_KINDS, faultFor, compatInfo, clientGone, endedWhole, readBody, readWholeBody, bodyForLog, sendCompat, abortCompat, hardClose, pairs,
  PROXY_502_HTML, REDIRECT_HTML, deepMerge, takeNext, sleep,
};
