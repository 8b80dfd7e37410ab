#!/usr/bin/env node
'use strict';
// Fast mock provider for `make bench`: answers FCM, OAuth, APNs, Expo, OneSignal
// (/notifications, /api/v1/notifications: one id per request, each subscription id
// counted) and Web Push (POST /push/<id>: 201, nothing decrypted) at once
// over HTTP/2 + TLS (h2 and http/1.1 via ALPN), plus plain HTTP/1.1 for pg_net.
// It checks nothing beyond what it needs to answer.  It counts requests, every
// message per device token (counted when its request body is complete, whatever
// the answer; an Expo request counts each of its tokens), messages received per
// second, and, when a message carries "t" (epoch seconds set at trigger time), the
// commit-to-receipt latency.  A request is complete when its whole body came:
// Node's compatibility API also ends a request whose stream the client reset
// before the rest of its body came (a client's timeout), and such a request is
// not counted (counts.unfinished).
//
//   node fastmock.js --certs DIR --port P [--plain-port Q]
// Prints {"ready":true} when listening.  Control (any port):
//   GET  /_stats      counts, latency percentiles, fault counts
//   POST /_reset      zero everything (the fault settings stay)
//   GET  /_tokens     "token<TAB>count" lines, one per device token seen
//   GET  /_timeline   {"<epoch second>": messages received in that second, ...}
//   GET  /_receipts   "<rid>\t<epoch seconds>" per message carrying a "rid" (the bench's id of its trigger)
//   GET  /_faults     the fault settings
//   POST /_faults     set them (JSON; every field optional, rates 0..1 per message request):
//     {"rst": r,          answer nothing, reset the stream (RST_STREAM INTERNAL_ERROR)
//      "e5xx": r,         503 with Retry-After: retryAfter seconds and the provider's error body
//      "slow": r,         answer after slowMs (longer than the client's timeout)
//      "goaway": r,       GOAWAY(NO_ERROR) whose last-stream-id is this request's stream:
//                         streams above it are refused (the client may send them again)
//      "destroy": r,      close the connection unanswered: GOAWAY(NO_ERROR) naming every stream
//                         it read, then a TCP reset 50 ms later
//      "retryAfter": 1, "slowMs": 3000, "quietMs": 150, "maxHoldMs": 1500}
//     {} turns every fault off.
//
// GOAWAY and destroy act on a whole connection, and a request the client wrote but
// the mock never read would be an attempt the counts cannot see.  So the chosen
// connection is first drained: its answers are held, and the GOAWAY or destroy
// happens only once every stream opened on it has a complete body (all counted),
// no new stream came for quietMs, and one more turn of the event loop read whatever
// was already in the socket; after maxHoldMs it happens anyway, and the streams
// still incomplete then are counted in faults.incomplete (otherwise invisible).
// Held answers of a GOAWAY'd connection are then sent (those at or below its
// last-stream-id; the others are refused, unprocessed, and taken back out of the
// per-token counts, since the client may send them again: faults.refused).  A destroy first
// says GOAWAY so the client starts nothing more on it.  A stream that crossed a
// GOAWAY (above its last-stream-id) is refused as far as the client knows and may be
// sent again: it is not counted, only noted in faults.lateStreams.  What no server can see: a request the client
// never sends.  libcurl 7.88 keeps starting requests on a connection after its
// GOAWAY; nghttp2 does not send them (see test/bench/mixed.sh).
const http2 = require('http2');
const http = require('http');
const fs = require('fs');
const zlib = require('zlib');

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const certs = opt('--certs');
const port = Number(opt('--port', 0));
const plainPort = Number(opt('--plain-port', 0));

const newCounts = () => ({ oauth: 0, fcm: 0, apns: 0, expo: 0, receipts: 0, onesignal: 0, webpush: 0, plain: 0, messages: 0, unfinished: 0 });
const newFaultCounts = () => ({ rst: 0, e5xx: 0, slow: 0, goaway: 0, destroy: 0, drainedQuiet: 0, drainedTimeout: 0, incomplete: 0, refused: 0, lateStreams: 0 });
let counts = newCounts();
let faultCounts = newFaultCounts();
let latencies = [];
let receipts = [];          // [rid, epoch seconds]: when each message with a "rid" arrived
let firstAt = 0, lastAt = 0;
let seq = 0;
let tokens = new Map();     // device token -> requests received carrying it
let perSecond = new Map();  // epoch second -> messages received
const faultDefaults = { rst: 0, e5xx: 0, slow: 0, goaway: 0, destroy: 0, retryAfter: 1, slowMs: 3000, quietMs: 150, maxHoldMs: 1500 };
let faults = { ...faultDefaults };
let faultsOn = false;
let sessions = 0;           // HTTP/2 connections open

function noteLatency(t) {
  const v = Number(t);
  if (v > 0) latencies.push(Date.now() / 1000 - v);
}

function noteReceipt(rid) {
  if (typeof rid === 'string' && rid.length > 0 && rid.length < 32) receipts.push([rid, Date.now() / 1000]);
}

function noteToken(tok, now) {
  tokens.set(tok, (tokens.get(tok) || 0) + 1);
  const s = Math.floor(now / 1000);
  perSecond.set(s, (perSecond.get(s) || 0) + 1);
}

function stats() {
  const l = latencies.slice().sort((a, b) => a - b);
  const pct = (p) => (l.length ? l[Math.min(l.length - 1, Math.floor(p * l.length))] * 1000 : null);
  return {
    counts, firstAt, lastAt, tokens: tokens.size, sessions, faults: faultCounts,
    latency: { n: l.length, p50_ms: pct(0.5), p99_ms: pct(0.99), max_ms: pct(1) },
  };
}

function reset() {
  counts = newCounts();
  faultCounts = newFaultCounts();
  latencies = [];
  receipts = [];
  tokens = new Map();
  perSecond = new Map();
  firstAt = lastAt = 0;
}

function setFaults(cfg) {
  faults = { ...faultDefaults, ...cfg };
  faultsOn = ['rst', 'e5xx', 'slow', 'goaway', 'destroy'].some((k) => faults[k] > 0);
  return faults;
}

// --- per-connection bookkeeping (HTTP/2 only): open streams, bodies not yet complete
function connState(req) {
  if (req.httpVersionMajor !== 2) return null;
  const s = req.stream.session;
  if (!s.__novu) s.__novu = { open: 0, incomplete: 0, lastNewAt: 0, maxId: 0, drain: null, goawayLast: -1 };
  return s.__novu;
}

// Drain a connection, then GOAWAY or destroy it (see the header).
const draining = new Set();
let drainTimer = null;
function startDrain(session, kind, streamId) {
  session.__novu.drain = { kind, lastStreamId: streamId, since: Date.now(), held: [] };
  draining.add(session);
  if (!drainTimer) drainTimer = setInterval(drainTick, 5);
}
function drainTick() {
  const now = Date.now();
  for (const s of draining) {
    const st = s.__novu;
    const d = st.drain;
    if (d.confirming) continue;
    if (s.destroyed) { draining.delete(s); continue; }
    const quiet = st.incomplete === 0 && now - st.lastNewAt >= faults.quietMs;
    if (quiet) {
      // confirm after the event loop's next I/O phase: bytes already in the socket are read first
      d.confirming = true;
      const seen = st.lastNewAt;
      setImmediate(() => {
        d.confirming = false;
        if (st.incomplete === 0 && st.lastNewAt === seen) drainFire(s, true);
      });
    } else if (now - d.since >= faults.maxHoldMs) drainFire(s, false);
  }
  if (draining.size === 0) { clearInterval(drainTimer); drainTimer = null; }
}
function drainFire(s, quiet) {
  const st = s.__novu;
  const d = st.drain;
  draining.delete(s);
  if (s.destroyed) return;
  if (quiet) faultCounts.drainedQuiet++; else { faultCounts.drainedTimeout++; faultCounts.incomplete += st.incomplete; }
  if (d.kind === 'destroy') {
    // announce the close (so the client starts nothing more on it), then destroy it
    // unanswered once the GOAWAY had time to arrive
    st.goawayLast = st.maxId;
    try { s.goaway(http2.constants.NGHTTP2_NO_ERROR, st.maxId); } catch { /* gone */ }
    setTimeout(() => {
      try {
        const sock = s.socket;
        if (sock && typeof sock.resetAndDestroy === 'function') sock.resetAndDestroy();
        else s.destroy();
      } catch { try { s.destroy(); } catch { /* gone */ } }
    }, 50);
  } else {
    st.goawayLast = d.lastStreamId;
    try { s.goaway(http2.constants.NGHTTP2_NO_ERROR, d.lastStreamId); } catch { /* gone */ }
    for (const h of d.held) {
      if (h.id <= d.lastStreamId) h.answer();
      else {
        // refused above the last-stream-id: not processed, so not received (the
        // client may send it again, RFC 9113 8.7)
        faultCounts.refused++;
        for (const tok of h.toks || []) tokens.set(tok, (tokens.get(tok) || 1) - 1);
      }
    }
    st.drain = null;
  }
}

// The provider's 503 answer.
function answer503(res, kind) {
  const headers = { 'retry-after': String(faults.retryAfter) };
  if (kind === 'fcm') return json(res, 503, { error: { code: 503, message: 'The service is currently unavailable.', status: 'UNAVAILABLE' } }, headers);
  if (kind === 'apns') return json(res, 503, { reason: 'ServiceUnavailable' }, headers);
  if (kind === 'onesignal') return json(res, 503, { errors: ['Service temporarily unavailable'] }, headers);
  if (kind === 'webpush') return json(res, 503, { code: 503, errno: 999, error: 'Service Unavailable', message: 'Service temporarily unavailable' }, headers);
  return json(res, 503, { errors: [{ code: 'INTERNAL_SERVER_ERROR', message: 'An unknown error occurred.' }] }, headers);
}

// Answer a message request, unless a fault says otherwise.
function deliver(req, res, st, kind, answer, toks) {
  if (faultsOn && st) {
    if (st.drain) {
      st.drain.held.push({ id: req.stream.id, answer, toks });
      return;
    }
    let r = Math.random();
    if ((r -= faults.rst) < 0) {
      faultCounts.rst++;
      try { req.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR); } catch { /* gone */ }
      return;
    }
    if ((r -= faults.e5xx) < 0) { faultCounts.e5xx++; return answer503(res, kind); }
    if ((r -= faults.slow) < 0) {
      faultCounts.slow++;
      setTimeout(() => { if (!req.stream.destroyed && !req.stream.closed) answer(); }, faults.slowMs);
      return;
    }
    const kind2 = (r -= faults.goaway) < 0 ? 'goaway' : (r -= faults.destroy) < 0 ? 'destroy' : null;
    if (kind2) {
      faultCounts[kind2]++;
      startDrain(req.stream.session, kind2, req.stream.id);
      st.drain.held.push({ id: req.stream.id, answer, toks });
      return;
    }
  }
  answer();
}

// Whether the client sent the whole request (bytes: the body bytes that came).
// HTTP/2: its Content-Length came, or without one, its END_STREAM (the stream
// ended before it was destroyed); Node's compatibility API also ends a request
// whose stream was reset or destroyed first.  HTTP/1.1: Node's own flag.
function bodyComplete(req, bytes) {
  if (req.httpVersionMajor !== 2) return req.complete;
  const declared = req.headers['content-length'];
  if (declared !== undefined) return bytes === Number(declared);
  return !req.stream.readableAborted;
}

function handle(req, res) {
  const chunks = [];
  const st = connState(req);
  let complete = false;  // body complete or stream gone: no longer incomplete (once)
  const settle = () => { if (st && !complete) { complete = true; st.incomplete--; } };
  if (st) {
    st.open++; st.incomplete++; st.lastNewAt = Date.now(); st.maxId = Math.max(st.maxId, req.stream.id);
    req.stream.once('close', () => { st.open--; settle(); });
  }
  let bytes = 0;
  req.on('data', (c) => { chunks.push(c); bytes += c.length; });
  req.on('end', () => {
    settle();
    if (!bodyComplete(req, bytes)) {
      counts.unfinished++;
      return;
    }
    // a stream that crossed this connection's GOAWAY (above its last-stream-id) is
    // refused as far as the client knows, which may send it again: not counted
    if (st && st.goawayLast >= 0 && req.stream.id > st.goawayLast) {
      faultCounts.lateStreams++;
      return;
    }
    const url = req.url;
    const now = Date.now();
    if (url.startsWith('/_')) return control(req, res, url, chunks);
    if (!firstAt) firstAt = now;
    lastAt = now;
    let raw = Buffer.concat(chunks);
    if (req.headers['content-encoding'] === 'gzip') raw = zlib.gunzipSync(raw);
    const body = raw.toString('utf8');
    if (url === '/token') { counts.oauth++; return json(res, 200, { access_token: 'bench-token', expires_in: 3600, token_type: 'Bearer' }); }
    if (url.startsWith('/v1/projects/')) {
      counts.fcm++; counts.messages++;
      const k = /"token": ?"([^"]*)"/.exec(body);
      if (k) noteToken(k[1], now);
      const m = /"t": ?"([0-9.]+)"/.exec(body);
      if (m) noteLatency(m[1]);
      const r = /"rid": ?"([^"]*)"/.exec(body);
      if (r) noteReceipt(r[1]);
      return deliver(req, res, st, 'fcm', () => json(res, 200, { name: `projects/bench/messages/${++seq}` }), k ? [k[1]] : []);
    }
    if (url.startsWith('/3/device/')) {
      counts.apns++; counts.messages++;
      noteToken(url.slice(10), now);
      const m = /"t": ?([0-9.]+)/.exec(body);
      if (m) noteLatency(m[1]);
      const r = /"rid": ?"([^"]*)"/.exec(body);
      if (r) noteReceipt(r[1]);
      return deliver(req, res, st, 'apns', () => {
        if (res.stream && (res.stream.destroyed || res.stream.closed)) return;
        res.writeHead(200, { 'apns-id': `00000000-0000-4000-8000-${String(++seq).padStart(12, '0')}` });
        res.end();
      }, [url.slice(10)]);
    }
    if (url === '/--/api/v2/push/send') {
      counts.expo++;
      let msgs = [];
      try { msgs = JSON.parse(body); } catch { /* counted as zero */ }
      if (!Array.isArray(msgs)) msgs = [msgs];
      counts.messages += msgs.length;
      const toks = [];
      for (const m of msgs) {
        for (const to of Array.isArray(m.to) ? m.to : [m.to]) { noteToken(String(to), now); toks.push(String(to)); }
        if (m.data && m.data.t) noteLatency(m.data.t);
        if (m.data) noteReceipt(m.data.rid);
      }
      return deliver(req, res, st, 'expo', () => json(res, 200, { data: msgs.map(() => ({ status: 'ok', id: `r-${++seq}` })) }), toks);
    }
    if (url === '/--/api/v2/push/getReceipts') { counts.receipts++; return json(res, 200, { data: {} }); }
    if (url === '/notifications' || url === '/api/v1/notifications') {
      // OneSignal: one notification id per request; each subscription id is a message
      counts.onesignal++;
      let m = {};
      try { m = JSON.parse(body); } catch { /* counted as zero */ }
      const ids = m && Array.isArray(m.include_subscription_ids) ? m.include_subscription_ids.map(String) : [];
      counts.messages += ids.length;
      for (const id of ids) noteToken(id, now);
      if (m && m.data && m.data.t) noteLatency(m.data.t);
      if (m && m.data) noteReceipt(m.data.rid);
      return deliver(req, res, st, 'onesignal', () => json(res, 200, { id: `00000000-0000-4000-8000-${String(++seq).padStart(12, '0')}`, external_id: null }), ids);
    }
    if (url.startsWith('/push/')) {
      // Web Push: the body is encrypted (aes128gcm) and not decrypted here: the bench measures
      // the client; the subscription id of the endpoint URL is the token
      counts.webpush++; counts.messages++;
      const sub = url.slice(6).split('?')[0];
      noteToken(sub, now);
      return deliver(req, res, st, 'webpush', () => {
        if (res.stream && (res.stream.destroyed || res.stream.closed)) return;
        res.writeHead(201, { location: `https://${req.headers[':authority'] || req.headers.host}/message/${++seq}`, 'content-length': '0' });
        res.end();
      }, [sub]);
    }
    counts.plain++; counts.messages++;
    return json(res, 200, { ok: true });
  });
}

function control(req, res, url, chunks) {
  if (url === '/_stats') return json(res, 200, stats());
  if (url === '/_reset') { reset(); return json(res, 200, { ok: true }); }
  if (url === '/_tokens') {
    const lines = [];
    for (const [t, n] of tokens) lines.push(`${t}\t${n}\n`);
    const s = lines.join('');
    res.writeHead(200, { 'content-type': 'text/tab-separated-values', 'content-length': Buffer.byteLength(s) });
    return res.end(s);
  }
  if (url === '/_receipts') {
    const s = receipts.map(([r, at]) => `${r}\t${at.toFixed(6)}\n`).join('');
    res.writeHead(200, { 'content-type': 'text/tab-separated-values', 'content-length': Buffer.byteLength(s) });
    return res.end(s);
  }
  if (url === '/_timeline') return json(res, 200, Object.fromEntries(perSecond));
  if (url === '/_faults') {
    if (req.method === 'POST') {
      let cfg = {};
      try { cfg = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}'); } catch { return json(res, 400, { error: 'bad JSON' }); }
      return json(res, 200, setFaults(cfg));
    }
    return json(res, 200, faults);
  }
  return json(res, 404, { error: 'unknown control URL' });
}

function json(res, status, obj, headers) {
  if (res.stream && (res.stream.destroyed || res.stream.closed)) return;
  const s = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s), ...headers });
  res.end(s);
}

const server = http2.createSecureServer({
  key: fs.readFileSync(`${certs}/server.key`),
  cert: fs.readFileSync(`${certs}/server.pem`),
  allowHTTP1: true,
  settings: { maxConcurrentStreams: 1000 },
  maxSessionMemory: 1000,
}, handle);
server.on('sessionError', () => { /* a destroyed connection */ });
server.on('session', (s) => { sessions++; s.on('close', () => { sessions--; }); s.on('error', () => { /* reset by a fault */ }); });
if (process.env.FASTMOCK_DEBUG) {
  server.on('session', (s) => {
    s.on('error', (e) => console.error('session error', e.code, e.message));
    s.on('frameError', (t, c, id) => console.error('frameError', t, c, id));
    s.on('goaway', (c, l) => console.error('goaway received', c, l));
    s.on('close', () => console.error('session close'));
  });
  server.on('sessionError', (e) => console.error('sessionError', e.code, e.message));
}
server.listen(port, '127.0.0.1', () => {
  if (plainPort) {
    const plain = http.createServer({ keepAlive: true }, handle);
    plain.listen(plainPort, '127.0.0.1', () => console.log(JSON.stringify({ ready: true })));
  } else console.log(JSON.stringify({ ready: true }));
});
process.on('SIGTERM', () => process.exit(0));
