#!/usr/bin/env node
'use strict';
// Fast mock provider for `make bench`: answers FCM, OAuth, APNs and Expo at once
// over HTTP/2 + TLS (h2 and http/1.1 via ALPN), plus plain HTTP/1.1 for pg_net.
// It checks nothing beyond what it needs to answer; it counts requests and, when a
// message carries "t" (epoch seconds set at trigger time), the commit-to-receipt latency.
//
//   node fastmock.js --certs DIR --port P [--plain-port Q]
// Prints {"ready":true} when listening. Control: GET /_stats, POST /_reset (any port).
const http2 = require('http2');
const http = require('http');
const fs = require('fs');
const zlib = require('zlib');

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const certs = opt('--certs');
const port = Number(opt('--port', 0));
const plainPort = Number(opt('--plain-port', 0));

let counts = { oauth: 0, fcm: 0, apns: 0, expo: 0, receipts: 0, plain: 0, messages: 0 };
let latencies = [];
let firstAt = 0, lastAt = 0;
let seq = 0;

function noteLatency(t) {
  const v = Number(t);
  if (v > 0) latencies.push(Date.now() / 1000 - v);
}

function stats() {
  const l = latencies.slice().sort((a, b) => a - b);
  const pct = (p) => (l.length ? l[Math.min(l.length - 1, Math.floor(p * l.length))] * 1000 : null);
  return { counts, firstAt, lastAt, latency: { n: l.length, p50_ms: pct(0.5), p99_ms: pct(0.99), max_ms: pct(1) } };
}

function reset() {
  counts = { oauth: 0, fcm: 0, apns: 0, expo: 0, receipts: 0, plain: 0, messages: 0 };
  latencies = [];
  firstAt = lastAt = 0;
}

function handle(req, res) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const url = req.url;
    const now = Date.now();
    if (url === '/_stats') return json(res, 200, stats());
    if (url === '/_reset') { reset(); return json(res, 200, { ok: true }); }
    if (!firstAt) firstAt = now;
    lastAt = now;
    let raw = Buffer.concat(chunks);
    if (req.headers['content-encoding'] === 'gzip') raw = zlib.gunzipSync(raw);
    const body = raw.toString('utf8');
    if (url === '/token') { counts.oauth++; return json(res, 200, { access_token: 'bench-token', expires_in: 3600, token_type: 'Bearer' }); }
    if (url.startsWith('/v1/projects/')) {
      counts.fcm++; counts.messages++;
      const m = /"t": ?"([0-9.]+)"/.exec(body);
      if (m) noteLatency(m[1]);
      return json(res, 200, { name: `projects/bench/messages/${++seq}` });
    }
    if (url.startsWith('/3/device/')) {
      counts.apns++; counts.messages++;
      const m = /"t": ?([0-9.]+)/.exec(body);
      if (m) noteLatency(m[1]);
      res.writeHead(200, { 'apns-id': `00000000-0000-4000-8000-${String(++seq).padStart(12, '0')}` });
      return res.end();
    }
    if (url === '/--/api/v2/push/send') {
      counts.expo++;
      let msgs = [];
      try { msgs = JSON.parse(body); } catch { /* counted as zero */ }
      counts.messages += msgs.length;
      for (const m of msgs) if (m.data && m.data.t) noteLatency(m.data.t);
      return json(res, 200, { data: msgs.map(() => ({ status: 'ok', id: `r-${++seq}` })) });
    }
    if (url === '/--/api/v2/push/getReceipts') { counts.receipts++; return json(res, 200, { data: {} }); }
    counts.plain++; counts.messages++;
    return json(res, 200, { ok: true });
  });
}

function json(res, status, obj) {
  const s = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) });
  res.end(s);
}

const server = http2.createSecureServer({
  key: fs.readFileSync(`${certs}/server.key`),
  cert: fs.readFileSync(`${certs}/server.pem`),
  allowHTTP1: true,
  settings: { maxConcurrentStreams: 1000 },
  maxSessionMemory: 1000,
}, handle);
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
