#!/usr/bin/env node
'use strict';
// Selftest of the Web Push mock (webpush.js), cross-checked against independent implementations:
// the npm packages web-push and http_ece (test/mocks/.npm; `npm ci --prefix test/mocks/.npm`).
//
//   node test/mocks/selftest-webpush.js                        starts its own certificates and server
//   node test/mocks/selftest-webpush.js --ready FILE --ca FILE  uses a running server (its ready line)
//
// (a) web-push sends to subscriptions of each service on both listeners: the mock must accept the
//     VAPID JWT and decrypt exactly the plaintext sent (also over h2, with http_ece padding, and
//     without a payload);
// (b) the mock must reject what a push service rejects: a wrong signature, aud, exp, missing TTL,
//     a body over 4096 bytes, a tampered ciphertext, and so on, each in the service's style;
// (c) the RFC 8291 Appendix A message decrypts to the watermelon sentence, with every
//     intermediate value of the RFC.
// Prints failures (and passes with VERBOSE=1), then "N passed, M failed"; exits 1 on a failure.

const assert = require('assert');
const crypto = require('crypto');
const fs = require('fs');
const http2 = require('http2');
const https = require('https');
const os = require('os');
const path = require('path');
const tls = require('tls');
const { spawn, execFileSync } = require('child_process');
const WP = require('./webpush');

const NPM = path.join(__dirname, '.npm', 'node_modules');
let webpush, ece;
try {
  webpush = require(path.join(NPM, 'web-push'));
  ece = require(path.join(NPM, 'http_ece'));
} catch (e) {
  process.stdout.write(`FAIL - the npm packages web-push and http_ece are not installed (npm ci --prefix ${path.join(__dirname, '.npm')}): ${e.message}\n0 passed, 1 failed\n`);
  process.exit(1);
}

let passed = 0, failed = 0;
function check(name, fn) {
  try {
    fn();
    passed++;
    if (process.env.VERBOSE) process.stdout.write(`ok   - ${name}\n`);
  } catch (e) {
    failed++;
    process.stdout.write(`FAIL - ${name}: ${e.message.split('\n').slice(0, 6).join(' ')}\n`);
  }
}
const eq = (name, actual, expected) => check(name, () => assert.deepStrictEqual(actual, expected));
const ok = (name, cond, detail) => check(name, () => { if (!cond) throw new Error(detail || 'condition false'); });

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];

// ---------------------------------------------------------------------------------------------
// server (a running one, or our own)
// ---------------------------------------------------------------------------------------------
let server = null, tmp = null, serverErr = '';
async function startServer() {
  if (args.ready) return { ready: JSON.parse(fs.readFileSync(args.ready, 'utf8').split('\n')[0]), ca: fs.readFileSync(args.ca) };
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'novu-webpush-selftest.'));
  execFileSync('sh', [path.join(__dirname, '..', 'certs', 'make-certs.sh'), path.join(tmp, 'certs')]);
  server = spawn(process.execPath, [path.join(__dirname, 'server.js'), '--certs', path.join(tmp, 'certs'), '--port-base', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  server.stderr.on('data', (d) => { serverErr += d; });
  const line = await new Promise((resolve, reject) => {
    let out = '';
    server.stdout.on('data', (d) => { out += d; if (out.includes('\n')) resolve(out.split('\n')[0]); });
    server.on('exit', (c) => reject(new Error(`server exited ${c}`)));
  });
  return { ready: JSON.parse(line), ca: fs.readFileSync(path.join(tmp, 'certs', 'ca.pem')) };
}

let CTL, CA, agent, READY;
async function ctl(method, p, body) {
  const r = await fetch(CTL + p, { method, body: body === undefined ? undefined : JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  return { status: r.status, body: await r.json() };
}
async function subscribe(service, opts = {}) {
  const r = await ctl('POST', '/webpush/subscriptions', Object.assign({ service }, opts));
  if (r.status !== 200) throw new Error(`POST /webpush/subscriptions ${JSON.stringify(opts)}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.subscriptions;
}
async function lastEntry() {
  const r = await ctl('GET', '/requests?provider=webpush&limit=1');
  return r.body.requests[0];
}

// One request over http/1.1 (https) or h2. Returns {status, headers, body, error, httpVersion}.
function send({ url, method = 'POST', headers: given = {}, body = null, h2 = false }) {
  const u = new URL(url);
  // drop removed headers; Content-Length is the transport's (a test may swap the body)
  const headers = {};
  for (const [k, v] of Object.entries(given)) if (v !== undefined && k.toLowerCase() !== 'content-length') headers[k] = v;
  return new Promise((resolveOuter) => {
    let resolve = resolveOuter;
    if (h2) {
      const s = http2.connect(u.origin, { ca: CA });
      const done = resolve;
      resolve = (v) => { s.destroy(); done(v); };
      s.on('error', (e) => resolve({ error: e.message }));
      const hs = Object.assign({ ':method': method, ':path': u.pathname + u.search }, lower(headers));
      const r = s.request(hs);
      let status = null, rh = null; const chunks = [];
      r.on('response', (h) => { status = h[':status']; rh = h; });
      r.on('data', (d) => chunks.push(d));
      r.on('error', (e) => resolve({ error: e.message }));
      r.on('end', () => { resolve({ status, headers: rh, body: Buffer.concat(chunks).toString(), httpVersion: '2' }); });
      r.end(body || undefined);
      return;
    }
    const r = https.request(url, { method, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString(), httpVersion: res.httpVersion }));
    });
    r.on('error', (e) => resolve({ error: e.message }));
    r.end(body || undefined);
  });
}
function lower(h) { const o = {}; for (const k of Object.keys(h)) o[k.toLowerCase()] = h[k]; return o; }
const json = (s) => { try { return JSON.parse(s); } catch { return null; } };

// web-push's request for a subscription (its own encryption and VAPID), not sent.
function details(sub, payload, vapid, extra = {}) {
  return webpush.generateRequestDetails(sub, payload, Object.assign({
    TTL: 60,
    vapidDetails: { subject: 'mailto:ops@example.com', publicKey: vapid.publicKey, privateKey: vapid.privateKey },
  }, extra));
}
const sendDetails = (d, mut = {}) => send({ url: d.endpoint, headers: Object.assign({}, d.headers, mut.headers || {}), body: mut.body !== undefined ? mut.body : d.body, h2: mut.h2 });

// An ES256 JWT of our own (for claims web-push refuses to make).
function jwt(claims, privPem, header = { typ: 'JWT', alg: 'ES256' }, der = false) {
  const b = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${b(header)}.${b(claims)}`;
  const sig = crypto.sign('sha256', Buffer.from(input), { key: privPem, dsaEncoding: der ? 'der' : 'ieee-p1363' });
  return `${input}.${sig.toString('base64url')}`;
}
// PEM private key of a web-push VAPID key pair (raw base64url d + public point)
function vapidPem(v) {
  const pub = Buffer.from(v.publicKey, 'base64url');
  return crypto.createPrivateKey({ format: 'jwk', key: { kty: 'EC', crv: 'P-256', d: v.privateKey, x: pub.subarray(1, 33).toString('base64url'), y: pub.subarray(33).toString('base64url') } });
}

// Encrypt one record (padding and delimiter given by the caller) for a subscription's browser
// keys, with a fresh sender key and salt (RFC 8291 3.3-3.4, RFC 8188 2): to send what web-push
// never makes. Written for this test; the mock's decrypt() must undo it.
function encryptRecord(sub, record) {
  const ua = Buffer.from(sub.keys.p256dh, 'base64url');
  const sender = crypto.createECDH('prime256v1'); sender.generateKeys();
  const as = sender.getPublicKey();
  const salt = crypto.randomBytes(16);
  const mac = (k, ...d) => { const h = crypto.createHmac('sha256', k); d.forEach((x) => h.update(x)); return h.digest(); };
  const ikm = mac(mac(Buffer.from(sub.keys.auth, 'base64url'), sender.computeSecret(ua)), Buffer.from('WebPush: info\0'), ua, as, Buffer.from([1]));
  const prk = mac(salt, ikm);
  const c = crypto.createCipheriv('aes-128-gcm', mac(prk, Buffer.from('Content-Encoding: aes128gcm\0\x01')).subarray(0, 16), mac(prk, Buffer.from('Content-Encoding: nonce\0\x01')).subarray(0, 12));
  const ct = Buffer.concat([c.update(record), c.final(), c.getAuthTag()]);
  const rs = Buffer.alloc(4); rs.writeUInt32BE(4096);
  return Buffer.concat([salt, rs, Buffer.from([65]), as, ct]);
}

const SVC_AUTH = { fcm: 403, mozilla: 401, apple: 403, wns: 403 };
const SVC_AUTH_MISSING = { fcm: 401, mozilla: 401, apple: 403, wns: 401 };

async function main() {
  const srv = await startServer();
  READY = srv.ready; CA = srv.ca;
  CTL = READY.urls.control;
  agent = new https.Agent({ ca: CA, keepAlive: false });
  await ctl('POST', '/reset');
  await ctl('DELETE', '/webpush/subscriptions');
  const vapid = webpush.generateVAPIDKeys();
  const other = webpush.generateVAPIDKeys();
  const wpOpts = (extra = {}) => Object.assign({ agent, TTL: 120, vapidDetails: { subject: 'mailto:ops@example.com', publicKey: vapid.publicKey, privateKey: vapid.privateKey } }, extra);

  // ============================ (a) web-push -> the mock ======================================
  const subs = {};
  for (const http1 of [false, true]) {
    for (const service of WP.SERVICES) {
      const [sub] = await subscribe(service, { applicationServerKey: vapid.publicKey, http1 });
      const port = READY.ports[http1 ? 'webpushH1' : 'webpush'];
      const where = `${service}${http1 ? ' (http/1.1-only listener)' : ''}`;
      subs[where] = sub;
      eq(`${where}: subscription JSON shape`, [typeof sub.endpoint, sub.expirationTime, Buffer.from(sub.keys.p256dh, 'base64url').length, Buffer.from(sub.keys.auth, 'base64url').length, sub.keys.p256dh.length, sub.keys.auth.length],
        ['string', null, 65, 16, 87, 22]);
      ok(`${where}: endpoint on 127.0.0.1:${port} with the service's path`, sub.endpoint.startsWith(`https://127.0.0.1:${port}${{ fcm: '/fcm/send/', mozilla: '/wpush/v2/', apple: '/push/', wns: '/w/?token=' }[service]}`), sub.endpoint);
      const payload = JSON.stringify({ title: `Grüße from ${service} ✓`, body: 'x'.repeat(200), data: { url: 'https://example.com/a?b=1' } });
      let res, err;
      try { res = await webpush.sendNotification(sub, payload, wpOpts({ urgency: 'high', topic: `t-${service}` })); } catch (e) { err = e; }
      eq(`${where}: web-push send -> 201`, res ? res.statusCode : `${err.statusCode} ${err.body || err.message}`, 201);
      ok(`${where}: Location of a message URL`, res && /^https:\/\/127\.0\.0\.1:\d+\/(m|message)\/\S+$/.test(res.headers.location), res && res.headers.location);
      const e = await lastEntry();
      eq(`${where}: mock decrypted exactly the plaintext`, e.plaintext, payload);
      eq(`${where}: log has the parsed JSON payload`, e.payload, JSON.parse(payload));
      eq(`${where}: log shows the accepted VAPID JWT`, [e.vapid.k, e.vapid.claims.aud, e.vapid.claims.sub, e.vapid.header.alg, e.authError],
        [vapid.publicKey, `https://127.0.0.1:${port}`, 'mailto:ops@example.com', 'ES256', undefined]);
      eq(`${where}: log has service, token = endpoint, TTL, Urgency, Topic, encryption`, [e.service, e.token, e.ttl, e.urgency, e.topic, e.encryption.rs, e.encryption.padding, e.httpVersion],
        [service, sub.endpoint, 120, 'high', `t-${service}`, 4096, 0, '1.1']);
    }
  }
  const rec = (await ctl('GET', '/received?provider=webpush')).body;
  const acc = (await ctl('GET', '/accepted?provider=webpush')).body;
  eq('received/accepted count each subscription once, keyed by endpoint', Object.values(subs).map((s) => [rec[s.endpoint], acc[s.endpoint]]), Object.values(subs).map(() => [1, 1]));

  // over h2 (web-push itself speaks http/1.1): the same request bytes on an h2 stream
  {
    const sub = subs.fcm;
    const d = details(sub, 'over h2', vapid);
    const r = await sendDetails(d, { h2: true });
    const e = await lastEntry();
    eq('h2: web-push request over an h2 stream -> 201, decrypted', [r.status, e.httpVersion, e.alpn, e.plaintext, e.payload], [201, '2', 'h2', 'over h2', null]);
  }
  // ALPN: the webpush listener offers h2, the H1 listener http/1.1 only
  for (const [name, want] of [['webpush', 'h2'], ['webpushH1', 'http/1.1']]) {
    const alpn = await new Promise((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port: READY.ports[name], ca: CA, servername: 'localhost', ALPNProtocols: ['h2', 'http/1.1'] }, () => { resolve(s.alpnProtocol); s.end(); });
      s.on('error', (e) => resolve(`error ${e.message}`));
    });
    eq(`ALPN h2,http/1.1 offered to ${name} -> ${want}`, alpn, want);
  }
  // http_ece (independent of web-push's call path): padding and a smaller record size
  {
    const sub = subs.mozilla;
    const sender = crypto.createECDH('prime256v1'); sender.generateKeys();
    const text = 'padded by http_ece';
    const body = ece.encrypt(Buffer.from(text), { version: 'aes128gcm', dh: sub.keys.p256dh, authSecret: sub.keys.auth, privateKey: sender, pad: 100, rs: 512 });
    const vh = webpush.getVapidHeaders(new URL(sub.endpoint).origin, 'https://example.com/contact', vapid.publicKey, vapid.privateKey, 'aes128gcm');
    const r = await send({ url: sub.endpoint, headers: { TTL: '0', 'Content-Encoding': 'aes128gcm', Authorization: vh.Authorization }, body });
    const e = await lastEntry();
    eq('http_ece: padded message (pad 100, rs 512) -> 201, padding stripped', [r.status, e.plaintext, e.encryption.padding, e.encryption.rs, e.ttl], [201, text, 100, 512, 0]);
  }
  // a push without payload (no body, no Content-Encoding)
  {
    let res, err;
    try { res = await webpush.sendNotification(subs.apple, null, wpOpts()); } catch (e) { err = e; }
    const e = await lastEntry();
    eq('no payload -> 201, plaintext null', [res ? res.statusCode : err.statusCode, e.plaintext, e.bodyBytes], [201, null, 0]);
  }
  // a subscription made without applicationServerKey takes any valid key (Mozilla: /wpush/v1/)
  {
    const [sub] = await subscribe('mozilla');
    ok('mozilla without applicationServerKey: /wpush/v1/ endpoint', /\/wpush\/v1\//.test(sub.endpoint), sub.endpoint);
    let res, err;
    try { res = await webpush.sendNotification(sub, 'any key', wpOpts({ vapidDetails: { subject: 'mailto:ops@example.com', publicKey: other.publicKey, privateKey: other.privateKey } })); } catch (e) { err = e; }
    eq('unrestricted subscription: any VAPID key -> 201', res ? res.statusCode : err.statusCode, 201);
    await ctl('POST', '/config', { webpush: { vapidKeys: [vapid.publicKey] } });
    res = null; err = null;
    try { res = await webpush.sendNotification(sub, 'other key', wpOpts({ vapidDetails: { subject: 'mailto:ops@example.com', publicKey: other.publicKey, privateKey: other.privateKey } })); } catch (e) { err = e; }
    eq('config webpush.vapidKeys: another key -> 401 errno 109 (mozilla)', err ? [err.statusCode, json(err.body).errno, json(err.body).message.startsWith('VAPID public key mismatch')] : res.statusCode, [401, 109, true]);
    await ctl('POST', '/config', { webpush: { vapidKeys: [] } });
  }
  // the record's padding delimiter, and the one-record rule (records made here, RFC 8188 2)
  {
    const sub = subs.apple;
    const vh = webpush.getVapidHeaders(new URL(sub.endpoint).origin, 'mailto:ops@example.com', vapid.publicKey, vapid.privateKey, 'aes128gcm');
    const post = (b) => send({ url: sub.endpoint, headers: { TTL: '30', 'Content-Encoding': 'aes128gcm', Authorization: vh.Authorization }, body: b });
    const cases = [
      ['plaintext || 0x02 || five zeros', Buffer.from('hello\x02\0\0\0\0\0', 'latin1'), 201, 'hello'],
      ['plaintext || 0x01 (a non-final record)', Buffer.from('hello\x01', 'latin1'), 400, /non-final/],
      ['plaintext || 0x03', Buffer.from('hello\x03', 'latin1'), 400, /not 0x02/],
      ['no delimiter at all', Buffer.from('hello', 'latin1'), 400, /not 0x02/],
      ['only zeros', Buffer.alloc(8), 400, /no padding delimiter/],
    ];
    for (const [name, record, status, want] of cases) {
      const r = await post(encryptRecord(sub, record));
      const e = await lastEntry();
      eq(`record ${name} -> ${status}`, r.status, status);
      if (status === 201) eq(`record ${name}: padding stripped`, [e.plaintext, e.encryption.padding], [want, 5]);
      else ok(`record ${name}: logged why`, want.test(e.payloadError || ''), e.payloadError);
    }
    const sender = crypto.createECDH('prime256v1'); sender.generateKeys();
    const two = ece.encrypt(Buffer.from('two records, the first one full'), { version: 'aes128gcm', dh: sub.keys.p256dh, authSecret: sub.keys.auth, privateKey: sender, rs: 36 });
    const r = await post(two);
    const e = await lastEntry();
    eq('http_ece message of two records (rs 36) -> 400, one record only', [r.status, /one record/.test(e.payloadError)], [400, true]);
  }
  // the largest payload that fits 4096 bytes: 4096 - 86 - 16 - 1 = 3993
  {
    const text = 'y'.repeat(3993);
    let res, err;
    try { res = await webpush.sendNotification(subs.wns, text, wpOpts()); } catch (e) { err = e; }
    const e = await lastEntry();
    eq('3993-byte plaintext (4096-byte body) -> 201', [res ? res.statusCode : err.statusCode, e.bodyBytes, e.plaintext === text], [201, 4096, true]);
  }

  // ============================ (b) what must be refused ======================================
  const expectRefused = async (name, service, d, mut, status, check2) => {
    const r = await sendDetails(d, mut);
    const e = await lastEntry();
    eq(`${service}: ${name} -> ${status}`, r.status, status);
    ok(`${service}: ${name}: nothing decrypted or accepted`, e.plaintext === undefined && e.response.status === status, JSON.stringify({ plaintext: e.plaintext, status: e.response.status }));
    if (check2) check(`${service}: ${name}: answer in the service's style`, () => check2(r, e));
  };
  const now = Math.floor(Date.now() / 1000);
  const pem = vapidPem(vapid);
  for (const service of WP.SERVICES) {
    const sub = subs[service];
    const origin = new URL(sub.endpoint).origin;
    const d = details(sub, '{"secret":"must not be logged"}', vapid);
    const auth = (t, k = vapid.publicKey) => ({ headers: { Authorization: `vapid t=${t}, k=${k}` } });
    const good = d.headers.Authorization;
    const t0 = /t=([^,]+)/.exec(good)[1];
    // wrong signature: flip one bit of the signature
    const sigBytes = Buffer.from(t0.split('.')[2], 'base64url'); sigBytes[10] ^= 1;
    const tampered = `${t0.split('.').slice(0, 2).join('.')}.${sigBytes.toString('base64url')}`;
    await expectRefused('wrong JWT signature', service, d, auth(tampered), SVC_AUTH[service], (r, e) => {
      if (service === 'mozilla') assert.deepStrictEqual([json(r.body).code, json(r.body).errno], [401, 109]);
      if (service === 'apple') assert.deepStrictEqual(json(r.body), { reason: 'BadJwtToken' });
      if (service === 'wns') assert.ok(/signature/.test(r.headers['x-wns-error-description']));
      assert.ok(/signature does not verify/.test(e.authError), e.authError);
    });
    // wrong aud: another origin, a path, a trailing slash
    for (const aud of ['https://127.0.0.1:1', `${origin}/`, sub.endpoint, origin.replace('127.0.0.1', 'localhost')]) {
      const vh = webpush.getVapidHeaders(aud, 'mailto:ops@example.com', vapid.publicKey, vapid.privateKey, 'aes128gcm');
      await expectRefused(`aud ${aud.length > 40 ? `${aud.slice(0, 40)}…` : aud}`, service, d, { headers: { Authorization: vh.Authorization } }, SVC_AUTH[service],
        (r, e) => assert.ok(/aud/.test(e.authError), e.authError));
    }
    // expired exp, and exp more than 24 h ahead
    const vhExp = webpush.getVapidHeaders(origin, 'mailto:ops@example.com', vapid.publicKey, vapid.privateKey, 'aes128gcm', now - 5);
    await expectRefused('expired exp', service, d, { headers: { Authorization: vhExp.Authorization } }, SVC_AUTH[service], (r, e) => assert.ok(/expired/.test(e.authError), e.authError));
    await expectRefused('exp 24 h + 5 min ahead', service, d, auth(jwt({ aud: origin, exp: now + 86700, sub: 'mailto:ops@example.com' }, pem)), SVC_AUTH[service]);
    await expectRefused('exp a string', service, d, auth(jwt({ aud: origin, exp: String(now + 600), sub: 'mailto:ops@example.com' }, pem)), SVC_AUTH[service]);
    await expectRefused('no sub', service, d, auth(jwt({ aud: origin, exp: now + 600 }, pem)), SVC_AUTH[service]);
    await expectRefused('sub not mailto:/https:', service, d, auth(jwt({ aud: origin, exp: now + 600, sub: 'ops@example.com' }, pem)), SVC_AUTH[service]);
    await expectRefused('DER signature', service, d, auth(jwt({ aud: origin, exp: now + 600, sub: 'mailto:ops@example.com' }, pem, undefined, true)), SVC_AUTH[service],
      (r, e) => assert.ok(/64 of raw R\|\|S/.test(e.authError), e.authError));
    await expectRefused('alg ES384 in the JWT header', service, d, auth(jwt({ aud: origin, exp: now + 600, sub: 'mailto:ops@example.com' }, pem, { typ: 'JWT', alg: 'ES384' })), SVC_AUTH[service]);
    await expectRefused('k not the applicationServerKey', service, details(sub, 'x', other), {}, SVC_AUTH[service], (r) => {
      if (service === 'fcm') assert.ok(/does not correspond to the sender ID/.test(r.body), r.body);
      if (service === 'mozilla') assert.ok(/^VAPID public key mismatch/.test(json(r.body).message), r.body);
    });
    await expectRefused('k not a P-256 point', service, d, auth(t0, Buffer.alloc(65, 4).toString('base64url')), SVC_AUTH[service]);
    await expectRefused('no Authorization', service, d, { headers: { Authorization: undefined } }, SVC_AUTH_MISSING[service]);
    await expectRefused('legacy "WebPush <jwt>" scheme', service, d, { headers: { Authorization: `WebPush ${t0}` } }, SVC_AUTH[service]);
    // RFC 8030 headers
    await expectRefused('missing TTL', service, d, { headers: { TTL: undefined } }, 400, (r) => {
      if (service === 'mozilla') assert.deepStrictEqual([json(r.body).code, json(r.body).errno, json(r.body).message.startsWith('Missing TTL Header')], [400, 111, true]);
      if (service === 'apple') assert.deepStrictEqual(json(r.body), { reason: 'BadExpirationDate' });
    });
    for (const ttl of ['-1', '1.5', 'ten']) await expectRefused(`TTL "${ttl}"`, service, d, { headers: { TTL: ttl } }, 400);
    await expectRefused('Urgency "urgent"', service, d, { headers: { Urgency: 'urgent' } }, 400);
    await expectRefused('Topic of 33 characters', service, d, { headers: { Topic: 'a'.repeat(33) } }, 400);
    await expectRefused('Topic with "."', service, d, { headers: { Topic: 'a.b' } }, 400);
    // body
    const big = details(sub, 'z'.repeat(3994), vapid);
    await expectRefused('body of 4097 bytes', service, big, {}, 413, (r) => {
      if (service === 'mozilla') assert.strictEqual(json(r.body).errno, 104);
      if (service === 'apple') assert.deepStrictEqual(json(r.body), { reason: 'PayloadTooLarge' });
    });
    const flip = (at) => { const b = Buffer.from(d.body); b[at] ^= 0x01; return b; };
    await expectRefused('tampered ciphertext', service, d, { body: flip(d.body.length - 20) }, 400, (r, e) => assert.ok(/authentication failed/.test(e.payloadError), e.payloadError));
    await expectRefused('tampered tag', service, d, { body: flip(d.body.length - 1) }, 400);
    await expectRefused('tampered salt', service, d, { body: flip(3) }, 400);
    await expectRefused('keyid not a point', service, d, { body: flip(30) }, 400);
    await expectRefused('Content-Encoding aesgcm', service, d, { headers: { 'Content-Encoding': 'aesgcm' } }, 400);
    await expectRefused('no Content-Encoding', service, d, { headers: { 'Content-Encoding': undefined } }, 400);
    // a body encrypted for another subscription (other keys)
    const [stranger] = await subscribe(service, { applicationServerKey: vapid.publicKey });
    await expectRefused('body encrypted for another subscription', service, d, { body: details(stranger, 'x', vapid).body }, 400);
    // method, unknown subscription, a subscription of the other listener
    const g = await send({ url: sub.endpoint, method: 'GET' });
    eq(`${service}: GET -> 405 Allow: POST`, [g.status, g.headers.allow], [405, 'POST']);
    const unknown = sub.endpoint.replace(/([A-Za-z0-9])(?=[^/=]*$)/, (c) => (c === 'A' ? 'B' : 'A'));
    eq(`${service}: unknown subscription -> 404`, (await sendDetails(Object.assign({}, d, { endpoint: unknown }))).status, 404);
    const h1sub = subs[`${service} (http/1.1-only listener)`];
    const cross = h1sub.endpoint.replace(`:${READY.ports.webpushH1}/`, `:${READY.ports.webpush}/`);
    eq(`${service}: an endpoint of one listener asked at the other -> 404`, (await sendDetails(Object.assign({}, details(h1sub, 'x', vapid), { endpoint: cross }))).status, 404);
  }
  // Apple refuses a contact at localhost; the others take it
  for (const service of WP.SERVICES) {
    const sub = subs[service];
    const vh = webpush.getVapidHeaders(new URL(sub.endpoint).origin, 'mailto:admin@localhost', vapid.publicKey, vapid.privateKey, 'aes128gcm');
    const r = await sendDetails(details(sub, 'x', vapid), { headers: { Authorization: vh.Authorization } });
    eq(`${service}: sub mailto:admin@localhost -> ${service === 'apple' ? '403 BadJwtToken' : '201'}`, [r.status, service === 'apple' ? json(r.body) : null],
      service === 'apple' ? [403, { reason: 'BadJwtToken' }] : [201, null]);
  }
  eq('unknown path -> 404', (await send({ url: `${READY.urls.webpush}/nowhere`, body: 'x' })).status, 404);

  // scripted subscription states (POST /tokens, provider webpush, token = endpoint)
  const state = (sub, s) => ctl('POST', '/tokens', { provider: 'webpush', token: sub.endpoint, state: s });
  const wpSend = async (sub, payload = 'state') => {
    const t = Date.now();
    try { const r = await webpush.sendNotification(sub, payload, wpOpts()); return { status: r.statusCode, headers: r.headers, ms: Date.now() - t }; } catch (e) {
      return { status: e.statusCode, headers: e.headers || {}, body: e.body, error: e.statusCode ? undefined : e.message, ms: Date.now() - t };
    }
  };
  for (const service of WP.SERVICES) {
    const [sub] = await subscribe(service, { applicationServerKey: vapid.publicKey });
    await state(sub, 'gone');
    const g = await wpSend(sub);
    const e = await lastEntry();
    eq(`${service}: state gone -> 410 (the user agent's payload still decrypted and logged)`, [g.status, e.plaintext, e.tokenState], [410, 'state', 'gone']);
    await state(sub, 'expired');
    eq(`${service}: state expired -> 404`, (await wpSend(sub)).status, 404);
    await state(sub, 'mismatch');
    eq(`${service}: state mismatch -> ${SVC_AUTH[service]}`, (await wpSend(sub)).status, SVC_AUTH[service]);
    await state(sub, 'fail:429:7:1');
    const f = await wpSend(sub);
    eq(`${service}: fail:429:7:1 -> 429 Retry-After 7, then 201`, [f.status, f.headers['retry-after'], (await wpSend(sub)).status], [429, '7', 201]);
    await state(sub, 'fail:503::1');
    const f5 = await wpSend(sub);
    eq(`${service}: fail:503::1 -> 503 without Retry-After`, [f5.status, f5.headers['retry-after']], [503, undefined]);
    await state(sub, 'ok');
  }
  {
    const [sub] = await subscribe('fcm', { applicationServerKey: vapid.publicKey });
    await state(sub, 'slow:400:1');
    const s = await wpSend(sub);
    eq('slow:400:1 -> 201 after >= 400 ms', [s.status, s.ms >= 400], [201, true]);
    await state(sub, 'reset:1');
    const r = await wpSend(sub);
    ok('reset:1 -> the connection breaks without an answer', r.status === undefined && r.error, JSON.stringify(r));
    const d = details(sub, 'h2 reset', vapid);
    await state(sub, 'reset:1');
    const r2 = await sendDetails(d, { h2: true });
    const e2 = await lastEntry();
    ok('reset:1 over h2 -> RST_STREAM, logged reset', r2.status === undefined && e2.response.status === 'reset', JSON.stringify([r2, e2.response.status]));
    eq('after reset:1: 201 again', (await wpSend(sub)).status, 201);
    const rc = (await ctl('GET', '/received?provider=webpush')).body[sub.endpoint];
    const ac = (await ctl('GET', '/accepted?provider=webpush')).body[sub.endpoint];
    eq('received counts every request of the subscription (also the broken ones), accepted only the 201s', [rc, ac], [4, 2]);
    const list = (await ctl('GET', `/webpush/subscriptions?endpoint=${encodeURIComponent(sub.endpoint)}`)).body;
    eq('GET /webpush/subscriptions?endpoint= lists it', [list.count, list.subscriptions[0].service, list.subscriptions[0].applicationServerKey], [1, 'fcm', vapid.publicKey]);
    const del = (await ctl('DELETE', `/webpush/subscriptions?endpoint=${encodeURIComponent(sub.endpoint)}`)).body;
    eq('DELETE /webpush/subscriptions?endpoint= removes it; then 404', [del.deleted, (await wpSend(sub)).status], [1, 404]);
  }
  // faults under load: every 2nd deliverable request gets a reset
  {
    await ctl('POST', '/reset');
    await ctl('POST', '/config', { faults: { every: { webpush: 2 }, kinds: ['reset'], max: 1 } });
    const [sub] = await subscribe('mozilla', { applicationServerKey: vapid.publicKey });
    const out = [];
    for (let i = 0; i < 3; i++) out.push((await wpSend(sub)).status);
    const fs2 = (await ctl('GET', '/faults?provider=webpush')).body;
    eq('faults.every.webpush: the 2nd request breaks, the others 201', [out, fs2.injected, fs2.byKind], [[201, undefined, 201], 1, { reset: 1 }]);
    await ctl('POST', '/reset');
  }
  // control API errors
  eq('POST /webpush/subscriptions: unknown service -> 400', (await ctl('POST', '/webpush/subscriptions', { service: 'gcm' })).status, 400);
  eq('POST /webpush/subscriptions: bad applicationServerKey -> 400', (await ctl('POST', '/webpush/subscriptions', { service: 'fcm', applicationServerKey: 'abc' })).status, 400);
  eq('POST /webpush/subscriptions: unknown field -> 400', (await ctl('POST', '/webpush/subscriptions', { service: 'fcm', cnt: 2 })).status, 400);
  eq('POST /webpush/subscriptions: count 3 -> 3 distinct endpoints', new Set((await subscribe('apple', { count: 3 })).map((s) => s.endpoint)).size, 3);
  eq('POST /config: unknown webpush key -> 400', (await ctl('POST', '/config', { webpush: { maxBytes: 1 } })).status, 400);

  // ============================ (c) RFC 8291 Appendix A =======================================
  const V = {
    plaintext: 'V2hlbiBJIGdyb3cgdXAsIEkgd2FudCB0byBiZSBhIHdhdGVybWVsb24',
    uaPublic: 'BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4',
    uaPrivate: 'q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94',
    auth: 'BTBZMqHH6r4Tts7J_aSIgg',
    ecdh: 'kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs',
    prkKey: 'Snr3JMxaHVDXHWJn5wdC52WjpCtd2EIEGBykDcZW32k',
    ikm: 'S4lYMb_L0FxCeq0WhDx813KgSYqU26kOyzWUdsXYyrg',
    prk: '09_eUZGrsvxChDCGRCdkLiDXrReGOEVeSCdCcPBSJSc',
    cek: 'oIhVW04MRdy2XN9CiKLxTg',
    nonce: '4h_95klXJ5E_qnoN',
    body: 'DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN',
  };
  const B = (s) => Buffer.from(s, 'base64url');
  const body = B(V.body);
  eq('RFC 8291 A: the body is 144 bytes', body.length, 144);
  let dec = null;
  check('RFC 8291 A: webpush.decrypt() accepts the message', () => { dec = WP.decrypt(body, { privateKey: B(V.uaPrivate), publicKey: B(V.uaPublic), auth: B(V.auth) }); });
  if (dec) {
    eq('RFC 8291 A: plaintext is the watermelon sentence', dec.plaintext.toString(), 'When I grow up, I want to be a watermelon');
    eq('RFC 8291 A: plaintext bytes', dec.plaintext.toString('base64url'), V.plaintext);
    eq('RFC 8291 A: header fields (rs 4096, keyid = as_public, no padding)', [dec.rs, dec.keyid.toString('base64url'), dec.salt.toString('base64url'), dec.padding],
      [4096, 'BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8', 'DGv6ra1nlYgDCS1FRnbzlw', 0]);
    eq('RFC 8291 A: every intermediate value (ecdh_secret, PRK_key, IKM, PRK, CEK, NONCE)',
      ['ecdhSecret', 'prkKey', 'ikm', 'prk', 'cek', 'nonce'].map((k) => dec.steps[k].toString('base64url')), [V.ecdh, V.prkKey, V.ikm, V.prk, V.cek, V.nonce]);
  }
  check('RFC 8291 A: a wrong auth secret fails with DecryptError', () => assert.throws(() => WP.decrypt(body, { privateKey: B(V.uaPrivate), publicKey: B(V.uaPublic), auth: Buffer.alloc(16) }), WP.DecryptError));
  check('RFC 8291 A: truncated header fails with DecryptError', () => assert.throws(() => WP.decrypt(body.subarray(0, 60), { privateKey: B(V.uaPrivate), publicKey: B(V.uaPublic), auth: B(V.auth) }), /ends before/));
  eq('RFC 8291 A: http_ece decrypts the same body to the same plaintext',
    ece.decrypt(body, { version: 'aes128gcm', privateKey: (() => { const k = crypto.createECDH('prime256v1'); k.setPrivateKey(B(V.uaPrivate)); return k; })(), authSecret: V.auth }).toString(),
    'When I grow up, I want to be a watermelon');
  // end to end: a subscription with the RFC's user-agent keys receives the RFC's bytes
  {
    const [sub] = await subscribe('mozilla', { privateKey: V.uaPrivate, auth: V.auth, applicationServerKey: vapid.publicKey });
    eq('subscription with fixed keys: p256dh is the RFC ua_public', [sub.keys.p256dh, sub.keys.auth], [V.uaPublic, V.auth]);
    const vh = webpush.getVapidHeaders(new URL(sub.endpoint).origin, 'mailto:ops@example.com', vapid.publicKey, vapid.privateKey, 'aes128gcm');
    const r = await send({ url: sub.endpoint, headers: { TTL: '10', 'Content-Encoding': 'aes128gcm', Authorization: vh.Authorization }, body, h2: true });
    const e = await lastEntry();
    eq('RFC 8291 A replayed to the mock -> 201 and the watermelon in the log', [r.status, e.plaintext], [201, 'When I grow up, I want to be a watermelon']);
  }
}

// a hang is a failure, not a stuck selftest
setTimeout(() => { process.stdout.write(`FAIL - selftest-webpush.js timed out after 120 s\n${passed} passed, ${failed + 1} failed\n`); if (server) server.kill('SIGTERM'); process.exit(1); }, 120000).unref();

main().catch((e) => { failed++; process.stdout.write(`FAIL - selftest crashed: ${e.stack}\n`); }).finally(() => {
  if (server) eq('no internal errors in the mock', serverErr.split('\n').filter((l) => /internal error/i.test(l)), []);
  if (server) server.kill('SIGTERM');
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  process.stdout.write(`${passed} passed, ${failed} failed\n`);
  process.exit(failed ? 1 : 0);
});
