'use strict';
// Receiver for Novu's push-webhook provider (PROTOCOLS.md 4a): POST on any path, TLS >= 1.2,
// h2 and http/1.1 via ALPN. Checks the JSON body shape and X-Novu-Signature (lowercase hex
// HMAC-SHA256 of the raw body bytes, keyed with the secret of the path).

const crypto = require('crypto');
const http2 = require('http2');
const C = require('./common');

const DEFAULT_SECRET = 'novu-push-webhook-secret';

const DEFAULTS = {
  webhook: {
    secret: DEFAULT_SECRET, // HMAC key of every path without an entry in secrets
    secrets: {},            // URL path -> HMAC key, e.g. {"/hooks/a": "other-secret"}
    proxy502Next: 0,        // next N requests: a non-JSON 502 from a "proxy"
  },
};

// X-Novu-Signature check: null when it is the lowercase hex HMAC-SHA256 of raw keyed with secret,
// else why not. Shared with chat.js (the generic chat webhook signs the same way).
function signatureError(header, raw, secret) {
  if (header === undefined) return 'no X-Novu-Signature header';
  if (Array.isArray(header)) return 'X-Novu-Signature sent more than once';
  if (!/^[0-9a-f]{64}$/.test(header)) return /^[0-9a-fA-F]{64}$/.test(header) ? 'X-Novu-Signature is not lowercase hex' : 'X-Novu-Signature is not 64 hex digits (HMAC-SHA256)';
  const want = crypto.createHmac('sha256', secret).update(raw).digest();
  if (!crypto.timingSafeEqual(want, Buffer.from(header, 'hex'))) return 'X-Novu-Signature does not match the HMAC-SHA256 of the body bytes';
  return null;
}

const isStr = (v) => typeof v === 'string';
const TOP_KEYS = ['target', 'title', 'content', 'overrides', 'payload'];

// Shape of a push-webhook body (PROTOCOLS.md 4a). Returns an error text or null.
function shapeError(b) {
  if (!C.isObj(b)) return 'the body must be a JSON object';
  for (const k of C.keysOf(b)) if (!TOP_KEYS.includes(k)) return `unexpected top-level key "${k}" (expected ${TOP_KEYS.join(', ')})`;
  for (const k of C.dupKeysOf(b)) return `duplicate key "${k}"`;
  if (!Array.isArray(b.target) || b.target.length !== 1 || !isStr(b.target[0]) || b.target[0] === '') return '"target" must be an array of exactly one non-empty token string';
  if (!isStr(b.title)) return '"title" must be a string';
  if (!isStr(b.content)) return '"content" must be a string';
  if (!C.isObj(b.overrides)) return '"overrides" must be an object';
  if (!C.isObj(b.payload)) return '"payload" must be an object';
  const s = b.payload.subscriber;
  if (!C.isObj(s)) return '"payload.subscriber" must be an object';
  if (!isStr(s.subscriberId) || s.subscriberId === '') return '"payload.subscriber.subscriberId" must be a non-empty string';
  const st = b.payload.step;
  if (!C.isObj(st)) return '"payload.step" must be an object';
  if (typeof st.digest !== 'boolean') return '"payload.step.digest" must be a boolean';
  // Novu leaves events/total_count out when the step is not a digest
  if (st.digest || st.events !== undefined) {
    if (!Array.isArray(st.events)) return '"payload.step.events" must be an array';
  }
  if (st.digest || st.total_count !== undefined) {
    if (!(Number.isInteger(st.total_count) && st.total_count >= 0)) return '"payload.step.total_count" must be a non-negative integer';
  }
  return null;
}

function create(ctx) {
  const { rec, tokens } = ctx;
  const server = http2.createSecureServer({ ...ctx.tlsOptions(), allowHTTP1: true });
  const conns = { sessions: new Set(), sockets: new Set() };
  C.trackConnections(server, conns);
  let seq = 0;

  server.on('request', (req, res) => {
    handle(req, res).catch((e) => {
      ctx.log(`webhook: internal error ${e.stack}`);
      try { res.writeHead(500); res.end(); } catch { /* gone */ }
    });
  });

  async function handle(req, res) {
    const cfg = ctx.config.webhook;
    const entry = rec.begin('webhook', C.compatInfo(req), ctx.config.logLimit);
    const whole = await C.readWholeBody(rec, req, entry, 1 << 20);
    if (!whole) return;  // half a request: not received
    const { buf, over } = whole;
    Object.assign(entry, C.bodyForLog(buf), { bodyBytes: buf.length });
    const path = req.url.split('?')[0];
    // the target token of a complete request counts as received, whatever is answered
    const b = entry.body;
    const token = C.isObj(b) && Array.isArray(b.target) && isStr(b.target[0]) ? b.target[0] : null;
    if (token) { entry.token = token; rec.receive('webhook', token, entry); }

    const send = (status, body, headers = {}) =>
      C.sendCompat(rec, req, res, entry, status, Object.assign({ 'content-type': 'application/json; charset=utf-8' }, headers), body);
    const bad = (status, msg) => { entry.payloadError = msg; return send(status, { error: msg }); };

    if (C.takeNext(cfg, 'proxy502Next')) return send(502, C.PROXY_502_HTML, { 'content-type': 'text/html' });
    if (req.method !== 'POST') return send(405, { error: `method ${req.method} not allowed: POST only` }, { allow: 'POST' });
    if (over) return bad(413, 'request body too large');
    const ct = String(req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
    if (ct !== 'application/json') return bad(415, `Content-Type must be application/json, got "${req.headers['content-type'] || ''}"`);

    // authenticity first: the signature over the exact bytes received
    const secret = typeof cfg.secrets[path] === 'string' ? cfg.secrets[path] : cfg.secret;
    const sigErr = signatureError(req.headers['x-novu-signature'], buf, secret);
    if (sigErr) { entry.authError = sigErr; return send(401, { error: sigErr }); }

    let body;
    try { body = C.parseJson(buf.toString('utf8')); } catch (e) { return bad(400, `the body is not JSON: ${e.message}`); }
    const shape = shapeError(body);
    if (shape) return bad(400, shape);

    // scripted state of the target token
    const st = tokens.use('webhook', token);
    entry.tokenState = st.spec || 'ok';
    switch (st.kind) {
      case 'slow': await C.sleep(st.ms); break;
      case 'reset': case 'drop': return C.abortCompat(rec, req, entry, st.kind);
      case 'dead': case 'expired': case 'unsubscribed': return send(410, { error: 'gone', target: token });
      case 'not-found': case 'deleted': case 'invalid': return send(404, { error: 'not found', target: token });
      case 'bad': return send(400, { error: 'bad target', target: token });
      case 'fail': {
        const h = st.retryAfter !== null && st.retryAfter !== undefined ? { 'retry-after': String(st.retryAfter) } : {};
        if (st.status === 502) return send(502, C.PROXY_502_HTML, { 'content-type': 'text/html', ...h });
        return send(st.status, { error: st.reason || (st.status === 429 ? 'too many requests' : `scripted failure ${st.status}`) }, h);
      }
      case 'redirect':
        return send(st.status, C.REDIRECT_HTML, { 'content-type': 'text/html', location: `https://${req.headers[':authority'] || req.headers.host}${req.url}` });
      default:
    }

    const fault = st.kind === 'ok' ? C.faultFor(ctx, 'webhook', entry, req.httpVersionMajor === 2 ? req.stream : null) : null;
    if (fault === 'held') return;
    if (fault === 'reset' || fault === 'close') return C.abortCompat(rec, req, entry, fault === 'reset' ? 'reset' : 'drop');
    if (fault === 'slow') await C.sleep(ctx.config.faults.slowMs);
    if (C.clientGone(req)) return rec.finish(entry, 'aborted', {}, null);
    rec.accept('webhook', token);
    return send(200, { id: `wh-${String(++seq).padStart(8, '0')}` });
  }

  return { name: 'webhook', server, conns };
}

module.exports = { create, DEFAULTS, DEFAULT_SECRET, signatureError };
