'use strict';
// OneSignal mock (PROTOCOLS.md 4, 6.5): POST /notifications (current API, "Authorization: Key <k>")
// and POST /api/v1/notifications (legacy, "Authorization: Basic <k>", the key itself after Basic),
// over TLS >= 1.2, h2 and http/1.1 via ALPN. Targets by include_subscription_ids only (the style
// the extension uses); idempotency_key answers a repeated request from memory, undelivered.

const http2 = require('http2');
const C = require('./common');

const CURRENT = '/notifications';
const LEGACY = '/api/v1/notifications';
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// The fixed test app (README "OneSignal"); POST /config {"onesignal":{"apps":{...}}} adds others.
const TEST_APP_ID = '0b5e1a2c-3d4f-4a6b-8c7d-9e0f1a2b3c4d';
const TEST_API_KEY = 'os_v2_app_novutestrestapikey0000000000000000000000';

const DEFAULTS = {
  onesignal: {
    apps: { [TEST_APP_ID]: TEST_API_KEY }, // app_id -> REST API key (null removes an app)
    maxSubscriptionIds: 2000,  // include_subscription_ids per request
    maxTtl: 2419200,           // ttl range 0..maxTtl seconds (28 days)
    proxy502Next: 0,           // next N requests: a non-JSON 502 from a "proxy"
  },
};

// OneSignal's own texts (see README for which are OneSignal's and which the mock's).
const INVALID_API_KEY = "Access denied.  Please include an 'Authorization: ...' header with a valid API key (https://documentation.onesignal.com/docs/en/keys-and-ids#api-keys).";
const NO_APP_ID = 'app_id not found. You may be missing a Content-Type: application/json header.';
const NO_TARGETING = 'You must include which players, segments, or tags you wish to send this notification to.';
const NO_SUBSCRIBERS = 'All included players are not subscribed';
const NO_ENGLISH = 'Message Notifications must have English language content';
const SERVICE_UNAVAILABLE = 'Service temporarily unavailable';

// Targeting styles: a request uses exactly one.
const TARGETING = ['include_subscription_ids', 'include_player_ids', 'include_aliases', 'included_segments', 'filters',
  'include_external_user_ids', 'include_email_tokens', 'include_phone_numbers', 'include_ios_tokens',
  'include_android_reg_ids', 'include_amazon_reg_ids', 'include_chrome_reg_ids', 'include_chrome_web_reg_ids',
  'include_wp_wns_uris'];
// Scripted states that answer "not reachable" for one subscription (the others still get it).
const UNREACHABLE = new Set(['unsubscribed', 'dead', 'expired', 'invalid', 'bad']);

const errors = (...msgs) => ({ errors: msgs });

// A language map: an object of language code -> string. Returns an error text or null.
function langMap(v, field) {
  if (!C.isObj(v)) return `${field} must be an object of language codes to strings, e.g. {"en": "..."}`;
  for (const [k, s] of Object.entries(v)) if (typeof s !== 'string') return `${field}.${k} must be a string`;
  return null;
}

// The strict body checks after app_id and authentication. Returns an error text or null.
function validate(body, cfg) {
  const styles = TARGETING.filter((k) => body[k] !== undefined);
  if (styles.length === 0) return NO_TARGETING;
  if (styles.length > 1) return `Only one targeting style may be used per request; got ${styles.join(', ')}`;
  if (styles[0] !== 'include_subscription_ids') {
    return `${styles[0]} is not implemented by the mock: target subscriptions with include_subscription_ids`;
  }
  const ids = body.include_subscription_ids;
  if (!Array.isArray(ids)) return 'include_subscription_ids must be an array of subscription ids';
  if (ids.length === 0) return NO_TARGETING;
  if (ids.length > cfg.maxSubscriptionIds) return `include_subscription_ids must have at most ${cfg.maxSubscriptionIds} entries, got ${ids.length}`;
  for (const id of ids) {
    if (typeof id !== 'string' || !UUID_RE.test(id)) return `Incorrect subscription id format in include_subscription_ids (not a valid UUID): ${JSON.stringify(id)}`;
  }
  if (body.target_channel !== undefined && !['push', 'email', 'sms'].includes(body.target_channel)) {
    return 'target_channel must be one of push, email, sms';
  }
  if (body.content_available !== undefined && typeof body.content_available !== 'boolean') return 'content_available must be a boolean';
  if (body.mutable_content !== undefined && typeof body.mutable_content !== 'boolean') return 'mutable_content must be a boolean';
  if (body.template_id !== undefined && !(typeof body.template_id === 'string' && UUID_RE.test(body.template_id))) return 'template_id must be a UUID';
  if (body.contents === undefined) {
    if (body.content_available !== true && body.template_id === undefined) return 'contents is required unless content_available is true or template_id is set';
  } else {
    const e = langMap(body.contents, 'contents');
    if (e) return e;
    if (typeof body.contents.en !== 'string' || body.contents.en === '') return NO_ENGLISH;
  }
  for (const f of ['headings', 'subtitle']) {
    if (body[f] !== undefined) { const e = langMap(body[f], f); if (e) return e; }
  }
  if (body.data !== undefined && !C.isObj(body.data)) return 'data must be a JSON object';
  if (body.url !== undefined && !(typeof body.url === 'string' && body.url !== '')) return 'url must be a non-empty string';
  if (body.ttl !== undefined && !(Number.isInteger(body.ttl) && body.ttl >= 0 && body.ttl <= cfg.maxTtl)) {
    return `ttl must be an integer between 0 and ${cfg.maxTtl} seconds`;
  }
  if (body.priority !== undefined && !(Number.isInteger(body.priority) && body.priority >= 0 && body.priority <= 10)) {
    return 'priority must be an integer between 0 and 10 (10 = high)';
  }
  for (const f of ['idempotency_key', 'external_id']) {
    if (body[f] !== undefined && body[f] !== null && !(typeof body[f] === 'string' && UUID_RE.test(body[f]))) return `${f} must be a UUID`;
  }
  if (body.name !== undefined && typeof body.name !== 'string') return 'name must be a string';
  for (const k of C.dupKeysOf(body)) return `duplicate key "${k}" in the request body`;
  return null;
}

function create(ctx) {
  const { rec, tokens } = ctx;
  const server = http2.createSecureServer({ ...ctx.tlsOptions(), allowHTTP1: true });
  const conns = { sessions: new Set(), sockets: new Set() };
  C.trackConnections(server, conns);
  // app_id + idempotency key -> {status, body, ids}: the answer a repeated key gets again
  const idempotent = new Map();

  server.on('request', (req, res) => {
    handle(req, res).catch((e) => {
      ctx.log(`onesignal: internal error ${e.stack}`);
      try { res.writeHead(500); res.end(); } catch { /* gone */ }
    });
  });

  async function handle(req, res) {
    const cfg = ctx.config.onesignal;
    const entry = rec.begin('onesignal', C.compatInfo(req), ctx.config.logLimit);
    const whole = await C.readWholeBody(rec, req, entry, 4 << 20);
    if (!whole) return;  // half a request: not received
    const { buf, over } = whole;
    Object.assign(entry, C.bodyForLog(buf), { bodyBytes: buf.length });
    // every subscription id of a complete request counts as received, whatever is answered
    const sent = entry.body && Array.isArray(entry.body.include_subscription_ids) ? entry.body.include_subscription_ids.filter((t) => typeof t === 'string') : [];
    for (const t of sent) rec.receive('onesignal', t, entry);
    if (sent.length) entry.tokens = sent;

    const send = (status, body, headers = {}) =>
      C.sendCompat(rec, req, res, entry, status, Object.assign({ 'content-type': 'application/json; charset=utf-8' }, headers), body);
    const bad = (msg, status = 400) => { entry.payloadError = msg; return send(status, errors(msg)); };

    if (C.takeNext(cfg, 'proxy502Next')) return send(502, C.PROXY_502_HTML, { 'content-type': 'text/html' });

    // route and method
    const path = req.url.split('?')[0];
    if (path !== CURRENT && path !== LEGACY) return send(404, errors(`Not Found: ${path}`));
    entry.api = path === CURRENT ? 'current' : 'legacy';
    if (req.method !== 'POST') return send(405, errors(`Method ${req.method} not allowed on ${path} (the mock implements POST only)`), { allow: 'POST' });

    // the Authorization scheme of this API generation
    const scheme = path === CURRENT ? 'Key' : 'Basic';
    const am = /^(\S+) +(\S+)$/.exec(String(req.headers.authorization || ''));
    if (!am || am[1] !== scheme) {
      entry.authError = am ? `scheme "${am[1]}" on ${path}, expected "${scheme}" (case-sensitive)` : `no "Authorization: ${scheme} <REST API key>" header`;
      return send(401, errors(INVALID_API_KEY));
    }

    // body
    if (over) return bad('Request body too large', 413);
    const ct = String(req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
    if (ct !== 'application/json') return bad(NO_APP_ID);
    let body;
    try { body = C.parseJson(buf.toString('utf8')); } catch (e) { return bad(`Invalid JSON in the request body: ${e.message}`); }
    if (!C.isObj(body)) return bad('The request body must be a JSON object');
    if (body.app_id === undefined || body.app_id === null || body.app_id === '') return bad(NO_APP_ID);
    if (typeof body.app_id !== 'string' || !UUID_RE.test(body.app_id)) return bad(`app_id ${JSON.stringify(body.app_id)} is not a valid UUID`);
    entry.appId = body.app_id;

    // the key must belong to this app
    const appKey = cfg.apps[body.app_id.toLowerCase()] ?? cfg.apps[body.app_id];
    if (typeof appKey !== 'string' || am[2] !== appKey) {
      entry.authError = typeof appKey !== 'string' ? `unknown app_id ${body.app_id}`
        : (scheme === 'Basic' && Buffer.from(am[2], 'base64').toString('utf8').replace(/:$/, '') === appKey
          ? 'the key was base64-encoded: send the REST API key itself after "Basic"' : 'wrong REST API key for this app_id');
      return send(403, errors(INVALID_API_KEY));
    }

    const invalid = validate(body, cfg);
    if (invalid) return bad(invalid);
    const ids = body.include_subscription_ids;
    const key = body.idempotency_key || body.external_id || null;
    entry.idempotencyKey = key;

    // a repeated idempotency key: the same answer, nothing delivered again
    const idemKey = key ? `${body.app_id.toLowerCase()}\u0000${key.toLowerCase()}` : null;
    if (idemKey && idempotent.has(idemKey)) {
      const prev = idempotent.get(idemKey);
      entry.idempotentReplay = true;
      for (const t of ids) rec.receive('onesignal-replayed', t);
      for (const t of prev.delivered) rec.accept('onesignal', t);
      return send(prev.status, prev.body);
    }

    // scripted states: fail/reset/drop of any subscription fails the whole request
    const states = ids.map((t) => tokens.use('onesignal', t));
    entry.tokenStates = states.map((s) => s.spec || 'ok');
    const abort = states.find((s) => s.kind === 'reset' || s.kind === 'drop');
    if (abort) return C.abortCompat(rec, req, entry, abort.kind);
    const f = states.find((s) => s.kind === 'fail');
    if (f) {
      const h = f.retryAfter !== null && f.retryAfter !== undefined ? { 'retry-after': String(f.retryAfter) } : {};
      if (f.status === 502) return send(502, C.PROXY_502_HTML, { 'content-type': 'text/html', ...h });
      if (f.status === 429) return send(429, { errors: [f.reason || 'API rate limit exceeded'], limit: 'Notifications per second for this app' }, h);
      return send(f.status, errors(f.reason || (f.status >= 500 ? SERVICE_UNAVAILABLE : `Scripted failure ${f.status}`)), h);
    }
    let delay = Math.max(0, ...states.filter((s) => s.kind === 'slow').map((s) => s.ms));

    // the outcome: which subscriptions get it, and the answer
    const delivered = [], unreachable = [];
    let unsubscribed = false;
    ids.forEach((t, i) => {
      if (UNREACHABLE.has(states[i].kind)) {
        unreachable.push(t);
        if (states[i].kind !== 'invalid' && states[i].kind !== 'bad') unsubscribed = true;
      } else delivered.push(t);
    });
    let answer;
    if (delivered.length === 0) {
      // nobody reachable: no notification id
      answer = unsubscribed ? { id: '', errors: [NO_SUBSCRIBERS] } : { id: '', errors: { invalid_player_ids: unreachable } };
    } else {
      answer = { id: C.seqUuid(0x05), external_id: body.external_id ?? null };
      if (unreachable.length) answer.errors = { invalid_player_ids: unreachable };
    }
    entry.delivered = delivered;
    entry.unreachable = unreachable;
    let committed = false;
    // processed: delivered to the reachable ones, remembered under the idempotency key
    const commit = () => {
      if (committed) return;
      committed = true;
      for (const t of delivered) rec.receive('onesignal-delivered', t);
      if (idemKey) idempotent.set(idemKey, { status: 200, body: answer, delivered });
    };

    // faults under load (config.faults), on requests that would otherwise be answered
    const scripted = states.some((s) => s.kind === 'slow');
    const fault = !scripted ? C.faultFor(ctx, 'onesignal', entry, req.httpVersionMajor === 2 ? req.stream : null) : null;
    if (fault === 'held') {
      // drop/error: processed, the answer lost; goaway: refused unprocessed
      if (/(^|:)(drop|error)$/.test(String(entry.fault))) commit();
      return;
    }
    if (fault === 'reset') return C.abortCompat(rec, req, entry, 'reset');
    if (fault === 'close') { if (entry.fault !== 'goaway') commit(); return C.abortCompat(rec, req, entry, 'drop'); }
    if (fault === 'slow') delay = Math.max(delay, ctx.config.faults.slowMs);
    commit();
    if (delay) await C.sleep(delay);
    if (C.clientGone(req)) return rec.finish(entry, 'aborted', {}, null);
    for (const t of delivered) rec.accept('onesignal', t);
    return send(200, answer);
  }

  return { name: 'onesignal', server, conns, reset: () => idempotent.clear() };
}

module.exports = { create, DEFAULTS, TEST_APP_ID, TEST_API_KEY };
