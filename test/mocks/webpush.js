'use strict';
// Web Push mock (PROTOCOLS.md 5, 6.6): a push service in the style of four real ones, told apart
// by the endpoint's path, as the real hosts are:
//   fcm      /fcm/send/<id>       (Chrome, fcm.googleapis.com)
//   mozilla  /wpush/v2/<id>       (Firefox autopush; /wpush/v1/<id> for a subscription made
//                                  without applicationServerKey)
//   apple    /push/<id>           (Safari, web.push.apple.com)
//   wns      /w/?token=<id>       (Edge on Windows, *.notify.windows.com)
// Two listeners share the subscriptions: "webpush" (h2 and http/1.1 via ALPN) and "webpushH1"
// (http/1.1 only, a push service without HTTP/2). A subscription belongs to one listener: its
// endpoint carries that port.
//
// The mock creates the subscriptions (POST /webpush/subscriptions on the control port), so it
// holds the user agent's private key and auth secret: it checks every request as strictly as
// RFC 8030/8291/8292 allow (TTL, Urgency, Topic, Content-Encoding, size, the VAPID JWT and key),
// then DECRYPTS the aes128gcm body and logs the plaintext the user would see.
//
// Exports: create(ctx, {portName}), decrypt() (RFC 8291 / RFC 8188, one record), DEFAULTS.

const crypto = require('crypto');
const http2 = require('http2');
const https = require('https');
const C = require('./common');

const SERVICES = ['fcm', 'mozilla', 'apple', 'wns'];

// Config section "webpush" (POST /config); server.js adds it to its defaults.
const DEFAULTS = {
  vapidKeys: [],           // VAPID public keys (base64url) accepted for subscriptions made without
                           // applicationServerKey; [] = any valid key (a JWT is always required)
  maxBody: 4096,           // a larger body -> 413 (RFC 8030 7.2: at least 4096 must be accepted)
  maxTtl: 2592000,         // a larger TTL is accepted but shortened to this (TTL response header)
  maxExpSeconds: 86400,    // JWT exp at most this far ahead (RFC 8292 2: 24 h)
  maxConcurrentStreams: 100, // h2 SETTINGS of the "webpush" listener (startup only)
  proxy502Next: 0,         // next N requests: a non-JSON 502 from a "proxy"
};

// ---------------------------------------------------------------------------------------------
// RFC 8291 / RFC 8188 decryption
// ---------------------------------------------------------------------------------------------
const hmac = (key, ...data) => { const h = crypto.createHmac('sha256', key); for (const d of data) h.update(d); return h.digest(); };
const KEY_INFO = Buffer.from('WebPush: info\0');
const CEK_INFO = Buffer.from('Content-Encoding: aes128gcm\0\x01');
const NONCE_INFO = Buffer.from('Content-Encoding: nonce\0\x01');
const ONE = Buffer.from([1]);

class DecryptError extends Error {}

// Decrypt an aes128gcm Web Push message body (one record, as RFC 8291 4 requires) with the
// user agent's keys. ua: {privateKey: 32 bytes, publicKey: 65 bytes, auth: 16 bytes} (Buffers).
// Returns {plaintext, salt, rs, keyid, padding, steps:{ecdhSecret, prkKey, ikm, prk, cek, nonce}}.
// Throws DecryptError (message says what is wrong) for anything RFC 8188/8291 does not allow.
function decrypt(body, ua) {
  if (!Buffer.isBuffer(body) || body.length < 21) throw new DecryptError(`body of ${body ? body.length : 0} bytes is shorter than the 21-byte aes128gcm header`);
  const salt = body.subarray(0, 16);
  const rs = body.readUInt32BE(16);
  const idlen = body[20];
  if (body.length < 21 + idlen) throw new DecryptError(`header announces a ${idlen}-byte keyid but the body ends before it`);
  const keyid = body.subarray(21, 21 + idlen);
  if (idlen !== 65 || keyid[0] !== 0x04) {
    throw new DecryptError(`keyid must be the sender's 65-byte uncompressed P-256 public key (idlen ${idlen}${idlen ? `, first byte 0x${keyid[0].toString(16).padStart(2, '0')}` : ''})`);
  }
  if (rs < 18) throw new DecryptError(`record size ${rs} is below the minimum 18`);
  const record = body.subarray(21 + idlen);
  if (record.length === 0) throw new DecryptError('no record after the header');
  if (record.length > rs) throw new DecryptError(`${record.length} bytes of records exceed the record size ${rs}: Web Push allows one record`);
  if (record.length < 17) throw new DecryptError(`record of ${record.length} bytes is shorter than the 16-byte tag plus the delimiter`);

  let ecdhSecret;
  try {
    const ecdh = crypto.createECDH('prime256v1');
    ecdh.setPrivateKey(ua.privateKey);
    ecdhSecret = ecdh.computeSecret(keyid);
  } catch (e) { throw new DecryptError(`keyid is not a point on P-256 (${e.message})`); }
  // HKDF #1 (RFC 8291 3.4): auth secret as salt, info binds both public keys
  const prkKey = hmac(ua.auth, ecdhSecret);
  const ikm = hmac(prkKey, KEY_INFO, ua.publicKey, keyid, ONE);
  // HKDF #2 (RFC 8188 2.2, 2.3): the message salt
  const prk = hmac(salt, ikm);
  const cek = hmac(prk, CEK_INFO).subarray(0, 16);
  const nonce = hmac(prk, NONCE_INFO).subarray(0, 12); // record 0: NONCE xor 0
  let padded;
  try {
    const d = crypto.createDecipheriv('aes-128-gcm', cek, nonce);
    d.setAuthTag(record.subarray(record.length - 16));
    padded = Buffer.concat([d.update(record.subarray(0, record.length - 16)), d.final()]);
  } catch { throw new DecryptError('AES-128-GCM authentication failed (wrong keys, auth secret, salt or a modified ciphertext)'); }
  let i = padded.length - 1;
  while (i >= 0 && padded[i] === 0) i--;
  if (i < 0) throw new DecryptError('record has no padding delimiter (all zeros)');
  if (padded[i] !== 0x02) {
    throw new DecryptError(padded[i] === 0x01 ? 'delimiter 0x01 marks a non-final record, but the only record must be the last (0x02)'
      : `padding delimiter is 0x${padded[i].toString(16).padStart(2, '0')}, not 0x02`);
  }
  return {
    plaintext: padded.subarray(0, i), salt, rs, keyid, padding: padded.length - i - 1,
    steps: { ecdhSecret, prkKey, ikm, prk, cek, nonce },
  };
}

// ---------------------------------------------------------------------------------------------
// VAPID (RFC 8292)
// ---------------------------------------------------------------------------------------------
// Parse `Authorization: vapid t=<jwt>, k=<key>` (scheme case-insensitive, parameters in any order,
// extra spaces tolerated). Returns {t, k} or {error}.
function parseVapid(value) {
  if (!value) return { missing: true, error: 'no Authorization header' };
  const m = /^\s*vapid\s+(.*)$/is.exec(String(value));
  if (!m) {
    const scheme = String(value).trim().split(/\s+/)[0];
    return { error: `Authorization scheme "${scheme}" is not "vapid" (RFC 8292 3; the legacy "WebPush" scheme goes with the obsolete aesgcm encoding)` };
  }
  const out = {};
  for (const part of m[1].split(',')) {
    const p = /^\s*([A-Za-z]+)\s*=\s*"?([^"\s]*)"?\s*$/.exec(part);
    if (!p) return { error: `malformed vapid parameter "${part.trim()}"` };
    const name = p[1].toLowerCase();
    if (out[name] !== undefined) return { error: `vapid parameter ${name} given twice` };
    out[name] = p[2];
  }
  if (!out.t) return { error: 'vapid parameter t (the JWT) missing' };
  if (!out.k) return { error: 'vapid parameter k (the public key) missing' };
  return { t: out.t, k: out.k };
}

// The public key object for a raw 65-byte uncompressed P-256 point, or null when it is not one.
function p256Key(raw) {
  if (!raw || raw.length !== 65 || raw[0] !== 0x04) return null;
  try {
    return crypto.createPublicKey({
      format: 'jwk',
      key: { kty: 'EC', crv: 'P-256', x: raw.subarray(1, 33).toString('base64url'), y: raw.subarray(33).toString('base64url') },
    });
  } catch { return null; }
}

// Check the VAPID header of a request for a subscription. Returns {ok, jwt, k} or
// {kind: 'missing'|'invalid'|'mismatch'|'localhost', error}.
function checkVapid(ctx, sub, authz) {
  const cfg = ctx.config.webpush;
  const v = parseVapid(authz);
  if (v.error) return { kind: v.missing ? 'missing' : 'invalid', error: v.error };
  const kRaw = C.b64urlDecode(v.k);
  const pub = p256Key(kRaw);
  if (!pub) return { kind: 'invalid', error: 'k is not a base64url 65-byte uncompressed P-256 public key' };
  const k = kRaw.toString('base64url');
  const jwt = C.decodeJwt(v.t);
  const info = { k };
  if (jwt.error) return { kind: 'invalid', error: `JWT: ${jwt.error}`, info };
  info.header = jwt.header;
  info.claims = jwt.claims;
  if (jwt.header.alg !== 'ES256') return { kind: 'invalid', error: `JWT alg "${jwt.header.alg}" is not ES256`, info };
  if (jwt.header.typ !== undefined && jwt.header.typ !== 'JWT') return { kind: 'invalid', error: `JWT typ "${jwt.header.typ}" is not JWT`, info };
  if (jwt.signature.length !== 64) {
    return { kind: 'invalid', error: `JWT signature has ${jwt.signature.length} bytes, not the 64 of raw R||S (DER is not allowed)`, info };
  }
  if (!crypto.verify('sha256', jwt.signingInput, { key: pub, dsaEncoding: 'ieee-p1363' }, jwt.signature)) {
    return { kind: 'invalid', error: 'JWT signature does not verify with k', info };
  }
  const c = jwt.claims;
  if (c.aud !== sub.origin) return { kind: 'invalid', error: `JWT aud ${JSON.stringify(c.aud)} is not the endpoint's origin "${sub.origin}"`, info };
  const now = C.nowSec();
  if (!Number.isInteger(c.exp)) return { kind: 'invalid', error: `JWT exp ${JSON.stringify(c.exp)} is not an integer (seconds)`, info };
  if (c.exp <= now) return { kind: 'invalid', error: `JWT expired: exp ${c.exp} is ${now - c.exp} s in the past`, info };
  if (c.exp > now + cfg.maxExpSeconds) return { kind: 'invalid', error: `JWT exp ${c.exp} is ${c.exp - now} s ahead, more than ${cfg.maxExpSeconds}`, info };
  if (typeof c.sub !== 'string' || !(/^mailto:[^@\s]+@[^@\s]+$/.test(c.sub) || /^https:\/\/[^/\s]+/.test(c.sub))) {
    return { kind: 'invalid', error: `JWT sub ${JSON.stringify(c.sub)} is not a mailto: address or an https: URL`, info };
  }
  if (sub.service === 'apple' && /^mailto:.*@localhost$/i.test(c.sub)) {
    return { kind: 'localhost', error: `JWT sub ${c.sub}: Apple rejects a contact at localhost`, info };
  }
  // a subscription is bound to the applicationServerKey it was made with (RFC 8292 4.3)
  if (sub.applicationServerKey && k !== sub.applicationServerKey) {
    return { kind: 'mismatch', error: 'k is not the applicationServerKey the subscription was created with', info };
  }
  if (!sub.applicationServerKey && cfg.vapidKeys.length && !cfg.vapidKeys.includes(k)) {
    return { kind: 'mismatch', error: 'k is not one of the accepted VAPID keys (config webpush.vapidKeys)', info };
  }
  return { ok: true, info };
}

// ---------------------------------------------------------------------------------------------
// Answers in each service's style. kind: route | method | ttl-missing | ttl | urgency | topic |
// encoding | decrypt | too-large | auth-missing | auth | mismatch | localhost | unknown |
// expired | gone | fail (status given) | ok.
// Mozilla's shape and errnos are autopush's (error.rs / http.md); Apple's reasons follow APNs;
// FCM's are short text bodies as fcm.googleapis.com sends them; WNS answers with empty bodies and
// X-WNS-* headers. Exact texts are the mock's, not copies.
// ---------------------------------------------------------------------------------------------
const STATUS_TEXT = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed',
  410: 'Gone', 413: 'Payload Too Large', 429: 'Too Many Requests', 500: 'Internal Server Error',
  502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout',
};
const STATUS = {
  fcm: { 'auth-missing': 401, auth: 403, mismatch: 403, localhost: 403 },
  mozilla: { 'auth-missing': 401, auth: 401, mismatch: 401, localhost: 401 },
  apple: { 'auth-missing': 403, auth: 403, mismatch: 403, localhost: 403 },
  wns: { 'auth-missing': 401, auth: 403, mismatch: 403, localhost: 403 },
};
const COMMON_STATUS = {
  route: 404, method: 405, 'ttl-missing': 400, ttl: 400, urgency: 400, topic: 400, encoding: 400, decrypt: 400,
  'too-large': 413, unknown: 404, expired: 404, gone: 410,
};
const MOZ = { // kind -> [errno, message]
  'ttl-missing': [111, 'Missing TTL Header'], ttl: [112, 'Invalid TTL header value'], urgency: [null, 'Invalid Urgency header value'],
  topic: [113, 'Invalid Topic header value'], encoding: [110, 'Invalid Content-Encoding'], decrypt: [110, 'Invalid encryption'],
  'too-large': [104, 'Data payload too large'], 'auth-missing': [109, 'Missing VAPID token'], auth: [109, 'Invalid VAPID token'],
  mismatch: [109, 'VAPID public key mismatch'], localhost: [109, 'Invalid VAPID token'], unknown: [102, 'Invalid token'],
  expired: [102, 'Invalid token'], gone: [106, 'No such subscription'], method: [null, 'Method Not Allowed'],
  429: [null, 'Too Many Requests'], 500: [999, 'Unknown error'], 503: [201, 'Service unavailable, use exponential back-off'],
};
const APPLE = {
  'ttl-missing': 'BadExpirationDate', ttl: 'BadExpirationDate', urgency: 'BadPriority', topic: 'BadWebPushTopic',
  encoding: 'BadPayload', decrypt: 'BadPayload', 'too-large': 'PayloadTooLarge', 'auth-missing': 'BadJwtToken',
  auth: 'BadJwtToken', mismatch: 'BadJwtToken', localhost: 'BadJwtToken', unknown: 'BadDeviceToken',
  expired: 'ExpiredToken', gone: 'Unregistered', method: 'MethodNotAllowed',
  400: 'BadRequest', 403: 'Forbidden', 404: 'BadPath', 410: 'Unregistered', 413: 'PayloadTooLarge',
  429: 'TooManyRequests', 500: 'InternalServerError', 503: 'ServiceUnavailable',
};
const FCM_TEXT = {
  'ttl-missing': 'TTL header is required.', ttl: 'TTL header must be a non-negative integer.', urgency: 'invalid Urgency header.',
  topic: 'invalid Topic header.', encoding: 'Content-Encoding must be aes128gcm.', decrypt: 'payload could not be decrypted.',
  'too-large': 'payload is too large.', 'auth-missing': 'authorization header must be specified.', auth: 'invalid JWT provided.',
  mismatch: 'the key in the authorization header does not correspond to the sender ID used to subscribe this user. Please ensure you use the correct public and private key.',
  localhost: 'invalid JWT provided.', unknown: 'push subscription not found.', expired: 'push subscription has expired.',
  gone: 'push subscription has unsubscribed or expired.', method: 'method not allowed.',
};

// The answer for kind: [status, headers, body]. detail: the mock's explanation (logged, and put
// where the service has room for text: Mozilla's message, FCM's text, WNS' description header).
function answer(service, kind, detail, status) {
  status = status || (STATUS[service] && STATUS[service][kind]) || COMMON_STATUS[kind] || 500;
  const h = {};
  if (status === 405) h.allow = 'POST';
  switch (service) {
    case 'mozilla': {
      const [errno, message] = MOZ[kind] || MOZ[status] || [null, STATUS_TEXT[status] || 'Error'];
      if (status === 410) h['cache-control'] = 'max-age=86400';
      return [status, h, { code: status, errno, error: STATUS_TEXT[status] || 'Error', message: detail ? `${message}: ${detail}` : message, more_info: 'http://autopush.readthedocs.io/en/latest/http.html#error-codes' }];
    }
    case 'apple':
      h['apns-id'] = crypto.randomUUID().toUpperCase();
      return [status, h, { reason: APPLE[kind] || APPLE[status] || 'BadRequest' }];
    case 'wns':
      h['x-wns-status'] = 'dropped';
      h['x-wns-error-description'] = (detail || STATUS_TEXT[status] || kind).replace(/[^\x20-\x7e]/g, '?').slice(0, 500);
      h['x-wns-debug-trace'] = 'MOCK-WNS';
      return [status, h, null];
    default: { // fcm
      h['content-type'] = 'text/plain; charset=utf-8';
      const text = FCM_TEXT[kind] || `${STATUS_TEXT[status] || 'Error'}.`;
      return [status, h, `${text}${detail && kind !== 'mismatch' && kind !== 'gone' ? ` ${detail}` : ''}\n`];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Subscriptions (shared by both listeners; kept across POST /reset like issued OAuth tokens)
// ---------------------------------------------------------------------------------------------
const PATHS = {
  fcm: (id) => `/fcm/send/${id}`,
  mozilla: (id, restricted) => `/wpush/${restricted ? 'v2' : 'v1'}/${id}`,
  apple: (id) => `/push/${id}`,
  wns: (id) => `/w/?token=${id}`,
};
const rnd = (n) => crypto.randomBytes(n).toString('base64url');
const ID = {
  fcm: () => `${rnd(8)}:APA91b${rnd(105)}`,
  mozilla: () => `gAAAAAB${rnd(120)}`,
  apple: () => rnd(48),
  wns: () => `BQYAAAD${rnd(90)}`,
};

function b64Key(value, bytes, what) {
  const raw = C.b64urlDecode(typeof value === 'string' ? value.replace(/=+$/, '') : value);
  if (!raw || raw.length !== bytes) throw new Error(`${what} must be base64url of ${bytes} bytes`);
  return raw;
}

// POST /webpush/subscriptions: make `count` subscriptions, return their browser JSON.
function createSubscriptions(ctx, st, body) {
  const b = C.isObj(body) ? body : {};
  const known = ['service', 'count', 'applicationServerKey', 'http1', 'host', 'privateKey', 'auth'];
  for (const k of Object.keys(b)) if (!known.includes(k)) throw new Error(`unknown field "${k}" (known: ${known.join(', ')})`);
  if (!SERVICES.includes(b.service)) throw new Error(`service must be one of ${SERVICES.join(', ')}`);
  const count = b.count === undefined ? 1 : b.count;
  if (!Number.isInteger(count) || count < 1 || count > 100000) throw new Error('count must be an integer from 1 to 100000');
  let asKey = null;
  if (b.applicationServerKey !== undefined && b.applicationServerKey !== null) {
    const raw = b64Key(b.applicationServerKey, 65, 'applicationServerKey');
    if (!p256Key(raw)) throw new Error('applicationServerKey is not an uncompressed P-256 public key');
    asKey = raw.toString('base64url');
  }
  const host = b.host === undefined ? '127.0.0.1' : b.host;
  if (!['127.0.0.1', 'localhost'].includes(host)) throw new Error('host must be 127.0.0.1 or localhost (the names in the server certificate)');
  const portName = b.http1 ? 'webpushH1' : 'webpush';
  const port = ctx.ports[portName];
  if (!port) throw new Error(`listener ${portName} is not running`);
  // fixed keys (e.g. RFC 8291 Appendix A's user agent) for one subscription
  let fixed = null;
  if (b.privateKey !== undefined || b.auth !== undefined) {
    if (count !== 1) throw new Error('privateKey/auth are for count 1');
    fixed = { privateKey: b64Key(b.privateKey, 32, 'privateKey'), auth: b64Key(b.auth, 16, 'auth') };
  }
  const out = [];
  for (let i = 0; i < count; i++) {
    const ecdh = crypto.createECDH('prime256v1');
    if (fixed) ecdh.setPrivateKey(fixed.privateKey); else ecdh.generateKeys();
    let id;
    do id = ID[b.service](); while (st.subs.has(id));
    const origin = `https://${host}:${port}`;
    const sub = {
      id, service: b.service, portName, origin, seq: ++st.seq,
      endpoint: origin + PATHS[b.service](id, !!asKey),
      publicKey: ecdh.getPublicKey(), privateKey: ecdh.getPrivateKey(),
      auth: fixed ? fixed.auth : crypto.randomBytes(16),
      applicationServerKey: asKey, created: C.nowMs(),
    };
    sub.privateKey = Buffer.concat([Buffer.alloc(32 - sub.privateKey.length), sub.privateKey]);
    st.subs.set(id, sub);
    st.byEndpoint.set(sub.endpoint, sub);
    out.push(browserJson(sub));
  }
  return out;
}

// What PushSubscription.toJSON() gives the web app (and so what it stores).
function browserJson(sub) {
  return { endpoint: sub.endpoint, expirationTime: null, keys: { p256dh: sub.publicKey.toString('base64url'), auth: sub.auth.toString('base64url') } };
}

// Control routes under /webpush/ (control.js calls this first; null = not ours).
function controlRoute(ctx, st, method, url, body) {
  const q = url.searchParams;
  const key = `${method} ${url.pathname}`;
  switch (key) {
    case 'POST /webpush/subscriptions': return [200, { subscriptions: createSubscriptions(ctx, st, body) }];
    case 'GET /webpush/subscriptions': {
      let list = [...st.subs.values()];
      if (q.get('service')) list = list.filter((s) => s.service === q.get('service'));
      if (q.get('endpoint')) list = list.filter((s) => s.endpoint === q.get('endpoint'));
      return [200, {
        count: list.length,
        subscriptions: list.map((s) => Object.assign(browserJson(s), {
          id: s.id, service: s.service, port: s.portName, origin: s.origin,
          applicationServerKey: s.applicationServerKey, created: s.created,
          state: (ctx.tokens.peek('webpush', s.endpoint) || {}).spec || 'ok',
        })),
      }];
    }
    case 'DELETE /webpush/subscriptions': {
      const ep = q.get('endpoint');
      let n = 0;
      for (const s of [...st.subs.values()]) {
        if (ep && s.endpoint !== ep) continue;
        st.subs.delete(s.id); st.byEndpoint.delete(s.endpoint); n++;
      }
      return [200, { ok: true, deleted: n }];
    }
    default:
      return url.pathname.startsWith('/webpush/') ? [404, { error: `no route ${key}` }] : null;
  }
}

// Shared state of both listeners, made once per server.
function shared(ctx) {
  if (!ctx.webpush) {
    const st = ctx.webpush = { subs: new Map(), byEndpoint: new Map(), seq: 0, msgSeq: 0 };
    (ctx.controlRoutes || (ctx.controlRoutes = [])).push((method, url, body) => controlRoute(ctx, st, method, url, body));
  }
  return ctx.webpush;
}

// Which service a request path addresses and the subscription id in it (null: no such route).
function route(reqUrl) {
  let u;
  try { u = new URL(reqUrl, 'https://mock.invalid'); } catch { return null; }
  let m;
  if ((m = /^\/fcm\/send\/([^/]+)$/.exec(u.pathname))) return { service: 'fcm', id: m[1] };
  if ((m = /^\/wpush\/v[12]\/([^/]+)$/.exec(u.pathname))) return { service: 'mozilla', id: m[1] };
  if ((m = /^\/push\/([^/]+)$/.exec(u.pathname))) return { service: 'apple', id: m[1] };
  if (/^\/w\/?$/.test(u.pathname) && u.searchParams.get('token')) return { service: 'wns', id: u.searchParams.get('token') };
  return null;
}

const TTL_RE = /^[0-9]+$/;
const URGENCIES = ['very-low', 'low', 'normal', 'high'];
const TOPIC_RE = /^[A-Za-z0-9_-]{1,32}$/;

function create(ctx, { portName }) {
  const { rec, tokens } = ctx;
  const st = shared(ctx);
  const h1only = portName === 'webpushH1';
  const server = h1only
    ? https.createServer({ ...ctx.tlsOptions(), ALPNProtocols: ['http/1.1'] })
    : http2.createSecureServer({ ...ctx.tlsOptions(), allowHTTP1: true, settings: { maxConcurrentStreams: ctx.config.webpush.maxConcurrentStreams } });
  const conns = { sessions: new Set(), sockets: new Set() };
  C.trackConnections(server, conns);
  server.keepAliveTimeout = 5000;

  server.on('request', (req, res) => {
    handle(req, res).catch((e) => {
      ctx.log(`webpush: internal error ${e.stack}`);
      try { res.writeHead(500); res.end(); } catch { /* gone */ }
    });
  });

  async function handle(req, res) {
    const cfg = ctx.config;
    const entry = rec.begin('webpush', Object.assign(C.compatInfo(req), { port: portName }), cfg.logLimit);
    const whole = await C.readWholeBody(rec, req, entry, 1 << 20);
    if (!whole) return;  // half a request: not received
    const { buf, size, over } = whole;
    entry.bodyBytes = size;
    if (buf.length) entry.bodyBase64 = buf.toString('base64');
    entry.body = null;

    const r = route(req.url);
    const sub = r ? st.subs.get(r.id) : null;
    const known = sub && sub.service === r.service && sub.portName === portName && sub.endpoint === sub.origin + req.url;
    const service = r ? r.service : null;
    entry.service = service;
    entry.token = known ? sub.endpoint : `https://${req.headers[':authority'] || req.headers.host}${req.url}`;
    if (known) entry.subscription = sub.id;
    rec.receive('webpush', entry.token, entry);

    const send = (status, headers, body) => C.sendCompat(rec, req, res, entry, status, headers, body);
    const fail = (kind, detail, status) => {
      if (detail) entry.error = detail;
      const [s, h, b] = answer(service, kind, detail, status);
      return send(s, h, b);
    };

    if (C.takeNext(cfg.webpush, 'proxy502Next')) return send(502, { 'content-type': 'text/html' }, C.PROXY_502_HTML);
    if (!r) return send(404, { 'content-type': 'text/plain; charset=utf-8' }, 'Not Found\n');
    if (!known) return fail('unknown', 'no such subscription at this push service');
    if (req.method !== 'POST') return fail('method', `${req.method}: a push message is sent with POST`);

    // RFC 8030 5.2-5.4 headers
    const ttlH = req.headers.ttl;
    if (ttlH === undefined) return fail('ttl-missing', 'the TTL header is required (RFC 8030 5.2)');
    if (!TTL_RE.test(ttlH) || !Number.isSafeInteger(Number(ttlH))) return fail('ttl', `TTL "${ttlH}" is not a non-negative integer`);
    entry.ttl = Number(ttlH);
    const urgency = req.headers.urgency;
    if (urgency !== undefined && !URGENCIES.includes(urgency)) return fail('urgency', `Urgency "${urgency}" is not one of ${URGENCIES.join(', ')}`);
    entry.urgency = urgency || 'normal';
    const topic = req.headers.topic;
    if (topic !== undefined && !TOPIC_RE.test(topic)) return fail('topic', `Topic "${topic}" is not 1 to 32 characters of the base64url alphabet`);
    if (topic !== undefined) entry.topic = topic;

    // body: size, then its content coding
    if (over || size > cfg.webpush.maxBody) return fail('too-large', `body of ${size} bytes exceeds ${cfg.webpush.maxBody}`);
    const ce = req.headers['content-encoding'];
    if (size > 0 && String(ce || '').toLowerCase() !== 'aes128gcm') {
      return fail('encoding', ce ? `Content-Encoding "${ce}" is not aes128gcm (RFC 8291)` : 'a body needs Content-Encoding: aes128gcm (RFC 8291)');
    }

    // VAPID
    const v = checkVapid(ctx, sub, req.headers.authorization);
    if (v.info) entry.vapid = v.info;
    if (!v.ok) {
      entry.authError = v.error;
      return fail(v.kind === 'missing' ? 'auth-missing' : v.kind === 'invalid' ? 'auth' : v.kind, v.error);
    }

    // decrypt what the user agent would decrypt
    if (size > 0) {
      let d;
      try { d = decrypt(buf, sub); } catch (e) {
        if (!(e instanceof DecryptError)) throw e;
        entry.payloadError = e.message;
        return fail('decrypt', e.message);
      }
      const text = d.plaintext.toString('utf8');
      if (Buffer.from(text, 'utf8').equals(d.plaintext)) {
        entry.plaintext = text;
        try { entry.payload = JSON.parse(text); } catch { entry.payload = null; }
      } else {
        entry.plaintext = null;
        entry.plaintextBase64 = d.plaintext.toString('base64');
        entry.payload = null;
      }
      entry.body = entry.payload;
      entry.encryption = { rs: d.rs, salt: d.salt.toString('base64url'), keyid: d.keyid.toString('base64url'), padding: d.padding, plaintextBytes: d.plaintext.length };
    } else {
      entry.plaintext = null;
      entry.payload = null;
    }

    // scripted subscription state (POST /tokens, provider webpush, token = the endpoint)
    const s = tokens.use('webpush', sub.endpoint);
    entry.tokenState = s.spec || 'ok';
    switch (s.kind) {
      case 'slow': await C.sleep(s.ms); break;
      case 'reset': case 'drop': return C.abortCompat(rec, req, entry, s.kind);
      case 'gone': case 'dead': return fail('gone', 'scripted: the subscription was unsubscribed');
      case 'expired': case 'bad': return fail('expired', 'scripted: the subscription expired');
      case 'mismatch': entry.authError = 'scripted: the subscription is bound to another VAPID key'; return fail('mismatch', entry.authError);
      case 'fail': {
        const h = s.retryAfter !== null && s.retryAfter !== undefined ? { 'retry-after': String(s.retryAfter) } : {};
        if (s.status === 502) return send(502, { 'content-type': 'text/html', ...h }, C.PROXY_502_HTML);
        const [st2, h2, b2] = answer(service, 'fail', s.reason || `scripted failure ${s.status}`, s.status);
        return send(st2, Object.assign(h2, h), b2);
      }
      case 'redirect':
        return send(s.status, { 'content-type': 'text/html', location: sub.endpoint }, C.REDIRECT_HTML);
      default: // ok, and states meant for other providers
    }

    // faults under load (config.faults, key webpush)
    const fault = s.kind === 'ok' ? C.faultFor(ctx, 'webpush', entry, req.httpVersionMajor === 2 ? req.stream : null) : null;
    if (fault === 'held') return;
    if (fault === 'reset' || fault === 'close') return C.abortCompat(rec, req, entry, fault === 'reset' ? 'reset' : 'drop');
    if (fault === 'slow') await C.sleep(cfg.faults.slowMs);

    if (C.clientGone(req)) return rec.finish(entry, 'aborted', {}, null);
    const ttl = Math.min(entry.ttl, cfg.webpush.maxTtl);
    const msgId = `${String(++st.msgSeq).padStart(8, '0')}-${rnd(9)}`;
    const h = { location: `${sub.origin}${service === 'mozilla' ? '/m/' : '/message/'}${msgId}`, ttl: String(ttl) };
    if (service === 'apple') h['apns-id'] = crypto.randomUUID().toUpperCase();
    if (service === 'wns') { h['x-wns-msg-id'] = msgId; h['x-wns-status'] = 'received'; }
    entry.messageId = msgId;
    rec.accept('webpush', sub.endpoint);
    return send(201, h, null);
  }

  return { name: portName, server, conns };
}

module.exports = { create, decrypt, DecryptError, parseVapid, checkVapid, DEFAULTS, SERVICES };
