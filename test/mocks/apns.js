'use strict';
// APNs provider API mock (PROTOCOLS.md 2, 6.3): HTTP/2 only over TLS >= 1.2.
// One listener per (environment, auth mode):
//   token auth  - ES256 provider JWT in `authorization: bearer ...`; SETTINGS_MAX_CONCURRENT_STREAMS
//                 starts at 1 and is raised once a request with a valid JWT was accepted;
//   cert auth   - TLS client certificate chaining to the mock "Apple" CA is required by the
//                 listener (requestCert + rejectUnauthorized); no JWT needed.

const crypto = require('crypto');
const http2 = require('http2');
const C = require('./common');

const STATE = Symbol('apnsConnState');
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const HEX_RE = /^[0-9a-fA-F]+$/;
// apns-push-type -> topic suffix (null: any topic, e.g. mdm)
const SUFFIX = {
  alert: '', background: '', voip: '.voip', complication: '.complication', fileprovider: '.pushkit.fileprovider',
  location: '.location-query', liveactivity: '.push-type.liveactivity', widgets: '.push-type.widgets',
  controls: '.push-type.controls', pushtotalk: '.voip-ptt', mdm: null,
};
// Headers that may legitimately repeat (none of APNs' own).
const MAY_REPEAT = new Set(['cookie']);

// Reason for a scripted "fail:<status>" when none is given.
const FAIL_REASON = {
  400: 'BadRequest', 403: 'Forbidden', 404: 'BadPath', 405: 'MethodNotAllowed', 410: 'Unregistered', 413: 'PayloadTooLarge',
  429: 'TooManyRequests', 500: 'InternalServerError', 503: 'ServiceUnavailable',
};

// --- client certificate inspection (Apple push cert extensions) -------------------------------
const OID_PREFIX = Buffer.from('060a2a864886f763640603', 'hex'); // 1.2.840.113635.100.6.3.x
function tlv(buf, i) {
  const tag = buf[i];
  let len = buf[i + 1], off = 2;
  if (len & 0x80) { const n = len & 0x7f; len = 0; for (let k = 0; k < n; k++) len = len * 256 + buf[i + 2 + k]; off = 2 + n; }
  return { tag, start: i + off, end: i + off + len };
}
function certInfo(peer) {
  const raw = peer && peer.raw;
  const info = { subject: peer && peer.subject ? Object.assign({}, peer.subject) : null, development: false, production: false, topics: [] };
  if (!raw) return info;
  let i = -1;
  while ((i = raw.indexOf(OID_PREFIX, i + 1)) !== -1) {
    const sub = raw[i + OID_PREFIX.length];
    if (sub === 1) info.development = true;
    else if (sub === 2) info.production = true;
    else if (sub === 6) {
      // Extension ::= SEQUENCE { OID, critical BOOLEAN OPTIONAL, OCTET STRING { SEQUENCE { UTF8String, SEQUENCE, ... } } }
      try {
        let t = tlv(raw, i + OID_PREFIX.length + 1);
        if (t.tag === 0x01) t = tlv(raw, t.end);
        if (t.tag !== 0x04) continue;
        const seq = tlv(raw, t.start);
        for (let j = seq.start; j < seq.end;) {
          const e = tlv(raw, j);
          if (e.tag === 0x0c) info.topics.push(raw.slice(e.start, e.end).toString('utf8'));
          j = e.end;
        }
      } catch { /* malformed: ignore */ }
    }
  }
  if (!info.topics.length && info.subject && info.subject.UID) info.topics.push(info.subject.UID);
  return info;
}

function create(ctx, { env, auth }) {
  const { rec, tokens } = ctx;
  const name = `apns-${env}-${auth}`;
  const acfg = () => ctx.config.apns;
  const opts = {
    ...ctx.tlsOptions(),
    // ALPN "h2" only (no allowHTTP1): Node answers a TLS no_application_protocol alert to
    // clients offering only http/1.1, and 'unknownProtocol' (closed below) to clients without ALPN.
    settings: { maxConcurrentStreams: auth === 'token' ? acfg().initialStreams : acfg().raisedStreams },
  };
  if (auth === 'cert') Object.assign(opts, { requestCert: true, rejectUnauthorized: true, ca: ctx.apnsCa });
  const server = http2.createSecureServer(opts);
  const conns = { sessions: new Set(), sockets: new Set() };
  C.trackConnections(server, conns);

  // Clients that did not negotiate h2 (or failed the handshake) are refused and logged.
  server.on('unknownProtocol', (sock) => {
    const e = rec.begin('apns', { env, auth, event: 'refused', alpn: sock.alpnProtocol || null, tls: sock.getProtocol && sock.getProtocol() }, ctx.config.logLimit);
    rec.finish(e, 'refused', {}, 'ALPN did not negotiate h2');
    C.hardClose(sock);
  });
  server.on('tlsClientError', (err, sock) => {
    const e = rec.begin('apns', { env, auth, event: 'tls-error', error: err.code || err.message, message: err.message }, ctx.config.logLimit);
    rec.finish(e, 'tls-error', {}, err.message);
  });

  server.on('session', (session) => {
    let cert = null;
    if (auth === 'cert') { try { cert = certInfo(session.socket.getPeerCertificate(false)); } catch { cert = null; } }
    session[STATE] = { jwt: null, iat: null, kid: null, raised: auth === 'cert', cert };
  });

  server.on('stream', (stream, headers, flags, rawHeaders) => {
    const session = stream.session;
    const sock = session.socket;
    const entry = rec.begin('apns', {
      env, auth,
      method: headers[':method'], path: headers[':path'], httpVersion: '2',
      alpn: sock.alpnProtocol || null, tls: sock.getProtocol(), connId: session[C.CONN], streamId: stream.id,
      headers: Object.assign({}, headers), rawHeaders: C.pairs(rawHeaders || []),
    }, ctx.config.logLimit);
    const chunks = [];
    let size = 0;
    stream.on('data', (c) => { size += c.length; if (size <= 1 << 20) chunks.push(c); });
    stream.on('end', () => {
      // half a request (the client reset the stream before its END_STREAM): never received
      if (!C.endedWhole(stream)) { rec.finish(entry, 'aborted', {}, null); return; }
      handle(stream, headers, rawHeaders || [], entry, Buffer.concat(chunks), size).catch((e) => {
        ctx.log(`${name}: internal error ${e.stack}`);
        try { stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR); } catch { /* gone */ }
      });
    });
    stream.on('close', () => { if (!entry.response) rec.finish(entry, 'aborted', {}, null); });
    stream.on('error', () => {});
  });

  // Verify the provider token of a token-auth request. Returns null or [status, reason].
  function checkJwt(state, authz, entry) {
    const cfg = acfg();
    if (authz === undefined) return [403, 'MissingProviderToken'];
    const m = /^bearer +([^ ]+)$/i.exec(String(authz));
    if (!m) return [403, 'InvalidProviderToken'];
    const jwtStr = m[1];
    const jwt = C.decodeJwt(jwtStr);
    if (jwt.error) { entry.authError = jwt.error; return [403, 'InvalidProviderToken']; }
    entry.jwt = { header: jwt.header, claims: jwt.claims, signatureBytes: jwt.signature.length };
    const { header, claims } = jwt;
    if (header.alg !== 'ES256') { entry.authError = `alg ${header.alg}`; return [403, 'InvalidProviderToken']; }
    if (header.kid !== cfg.keyId) { entry.authError = `unknown kid ${header.kid}`; return [403, 'InvalidProviderToken']; }
    if (jwt.signature.length !== 64) { entry.authError = `signature is ${jwt.signature.length} bytes, not raw 64-byte R||S`; return [403, 'InvalidProviderToken']; }
    let ok = false;
    try { ok = crypto.verify('sha256', jwt.signingInput, { key: ctx.apnsPublicKey(), dsaEncoding: 'ieee-p1363' }, jwt.signature); } catch { ok = false; }
    if (!ok) { entry.authError = 'bad signature'; return [403, 'InvalidProviderToken']; }
    if (claims.iss !== cfg.teamId) { entry.authError = `iss ${claims.iss}`; return [403, 'InvalidProviderToken']; }
    if (!Number.isInteger(claims.iat)) { entry.authError = 'iat is not an integer'; return [403, 'InvalidProviderToken']; }
    const now = C.nowSec();
    if (claims.iat > now + cfg.futureSkew) { entry.authError = 'iat in the future'; return [403, 'InvalidProviderToken']; }
    if (now - claims.iat > cfg.tokenMaxAge) { entry.authError = 'iat older than tokenMaxAge'; return [403, 'ExpiredProviderToken']; }
    // Token churn: a different JWT on this connection whose iat is less than
    // tokenUpdateMinInterval after the previously accepted one's -> 429.
    if (state.jwt !== null && state.jwt !== jwtStr && claims.iat - state.iat < cfg.tokenUpdateMinInterval) {
      entry.authError = `JWT changed after ${claims.iat - state.iat}s (< ${cfg.tokenUpdateMinInterval}s)`;
      return [429, 'TooManyProviderTokenUpdates'];
    }
    if (state.jwt !== jwtStr) { state.jwt = jwtStr; state.iat = claims.iat; state.kid = header.kid; }
    return null;
  }

  async function handle(stream, headers, rawHeaders, entry, body, size) {
    const cfg = acfg();
    const session = stream.session;
    const state = session[STATE];
    Object.assign(entry, C.bodyForLog(body), { bodyBytes: size });
    // counted as received whatever is answered: the request has arrived, body and all
    const path0 = headers[':path'] || '';
    if (path0.startsWith('/3/device/')) rec.receive('apns', path0.slice('/3/device/'.length), entry);
    const reqId = headers['apns-id'];
    const apnsId = typeof reqId === 'string' && UUID_RE.test(reqId) ? reqId : C.seqUuid(0xa9).toLowerCase();

    const respond = (status, obj, extra = {}) => {
      const h = Object.assign({ ':status': status, 'apns-id': apnsId }, extra);
      let payload = null;
      if (obj !== null && obj !== undefined) {
        payload = typeof obj === 'string' ? obj : JSON.stringify(obj);
        if (!h['content-type']) h['content-type'] = 'application/json';
        h['content-length'] = String(Buffer.byteLength(payload));
      }
      rec.finish(entry, status, h, obj === undefined ? null : obj);
      if (stream.destroyed || stream.closed) return;
      try { stream.respond(h); stream.end(payload === null ? undefined : payload); } catch { /* gone */ }
    };
    const fail = (status, reason, extra) => respond(status, { reason }, extra);

    if (C.takeNext(cfg, 'proxy502Next')) return respond(502, C.PROXY_502_HTML, { 'content-type': 'text/html' });

    // method and path
    if (headers[':method'] !== 'POST') return fail(405, 'MethodNotAllowed');
    const path = headers[':path'] || '';
    if (path === '/3/device' || path === '/3/device/') return fail(400, 'MissingDeviceToken');
    if (!path.startsWith('/3/device/')) return fail(404, 'BadPath');
    const deviceToken = path.slice('/3/device/'.length);
    entry.token = deviceToken;

    // duplicate headers
    const seen = new Map();
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const n = String(rawHeaders[i]).toLowerCase();
      seen.set(n, (seen.get(n) || 0) + 1);
    }
    for (const [n, c] of seen) if (c > 1 && !MAY_REPEAT.has(n)) { entry.duplicateHeader = n; return fail(400, 'DuplicateHeaders'); }

    // authentication
    if (auth === 'token') {
      const bad = checkJwt(state, headers.authorization, entry);
      if (bad) return fail(bad[0], bad[1]);
      if (!state.raised) {
        state.raised = true;
        try { session.settings({ maxConcurrentStreams: cfg.raisedStreams }); } catch { /* closing */ }
      }
    } else {
      const ci = state.cert;
      if (!ci) return fail(403, 'BadCertificate');
      entry.certificate = ci;
      if (!(env === 'production' ? ci.production : ci.development)) return fail(403, 'BadCertificateEnvironment');
    }

    // request headers
    if (reqId !== undefined && !UUID_RE.test(reqId)) return fail(400, 'BadMessageId');
    const exp = headers['apns-expiration'];
    if (exp !== undefined && !/^\d+$/.test(exp)) return fail(400, 'BadExpirationDate');
    const prio = headers['apns-priority'];
    if (prio !== undefined && !['1', '5', '10'].includes(prio)) return fail(400, 'BadPriority');
    const pushType = headers['apns-push-type'];
    if (pushType !== undefined && !Object.prototype.hasOwnProperty.call(SUFFIX, pushType)) return fail(400, 'InvalidPushType');
    const collapse = headers['apns-collapse-id'];
    if (collapse !== undefined && Buffer.byteLength(collapse) > 64) return fail(400, 'BadCollapseId');
    if (pushType === 'background' && (prio === undefined || prio === '10')) return fail(400, 'BadPriority');

    // topic
    let topic = headers['apns-topic'];
    const suffix = SUFFIX[pushType || 'alert'];
    if (auth === 'token') {
      if (topic === undefined || topic === '') return fail(400, 'MissingTopic');
      const ok = suffix === null ? true : cfg.bundleIds.some((b) => topic === b + suffix);
      if (!ok) return fail(400, 'BadTopic');
    } else {
      const topics = state.cert.topics;
      if (topic === undefined || topic === '') {
        if (topics.length !== 1) return fail(400, 'MissingTopic');
        topic = topics[0];
      }
      const base = state.cert.subject && state.cert.subject.UID;
      if (!topics.includes(topic) || (suffix !== null && base && topic !== base + suffix)) return fail(400, 'BadTopic');
    }
    entry.topic = topic;

    // payload
    if (headers['content-encoding'] !== undefined) { entry.payloadError = 'content-encoding is not allowed'; return fail(400, 'BadPayload'); }
    if (size === 0) return fail(400, 'PayloadEmpty');
    const limit = pushType === 'voip' ? cfg.voipMaxPayload : cfg.maxPayload;
    if (size > limit) return fail(413, 'PayloadTooLarge');
    let payload;
    try { payload = C.parseJson(body.toString('utf8')); } catch (e) { entry.payloadError = `invalid JSON: ${e.message}`; return fail(400, 'BadPayload'); }
    if (!C.isObj(payload)) { entry.payloadError = 'payload is not a JSON object'; return fail(400, 'BadPayload'); }
    if (!C.isObj(payload.aps)) { entry.payloadError = 'payload has no "aps" dictionary'; return fail(400, 'BadPayload'); }

    // global fault: shutdown (503 + GOAWAY carrying the same JSON)
    if (C.takeNext(cfg, 'shutdownNext')) {
      fail(503, 'Shutdown');
      try { session.goaway(http2.constants.NGHTTP2_NO_ERROR, stream.id, Buffer.from('{"reason":"Shutdown"}')); } catch { /* gone */ }
      setTimeout(() => { try { session.close(); } catch { /* gone */ } }, 50);
      return;
    }

    // device token
    if (deviceToken.length % 2 !== 0 || !HEX_RE.test(deviceToken)) return fail(400, 'BadDeviceToken');
    const st = tokens.use('apns', deviceToken);
    entry.tokenState = st.spec || 'ok';
    switch (st.kind) {
      case 'slow': await C.sleep(st.ms); break;
      case 'reset':
        rec.finish(entry, 'reset', {}, null);
        try { stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR); } catch { /* gone */ }
        return;
      case 'refuse':
        // refused unprocessed (RFC 9113 8.7): not received after all, a client may resend it
        rec.unreceive('apns', entry);
        rec.finish(entry, 'refused', {}, null);
        try { stream.close(http2.constants.NGHTTP2_REFUSED_STREAM); } catch { /* gone */ }
        return;
      case 'drop':
        rec.finish(entry, 'drop', {}, null);
        C.hardClose(session.socket);
        try { session.destroy(); } catch { /* gone */ }
        return;
      case 'dead': return respond(410, { reason: 'Unregistered', timestamp: st.since });
      case 'expired': return respond(410, { reason: 'ExpiredToken', timestamp: st.since });
      case 'bad': return fail(400, 'BadDeviceToken');
      case 'mismatch': return fail(400, 'DeviceTokenNotForTopic');
      case 'sandbox-only': if (env === 'production') return fail(400, 'BadDeviceToken'); break;
      case 'production-only': if (env === 'sandbox') return fail(400, 'BadDeviceToken'); break;
      case 'fail': {
        const h = st.retryAfter !== null && st.retryAfter !== undefined ? { 'retry-after': String(st.retryAfter) } : {};
        if (st.status === 502) return respond(502, C.PROXY_502_HTML, { 'content-type': 'text/html', ...h });
        const reason = st.reason || FAIL_REASON[st.status] || 'InternalServerError';
        if (st.status === 410) return respond(410, { reason, timestamp: st.since }, h);
        return fail(st.status, reason, h);
      }
      case 'redirect': // to the same URL: a client that follows it sends the request again
        return respond(st.status, C.REDIRECT_HTML,
          { 'content-type': 'text/html', location: `https://${headers[':authority']}${headers[':path']}` });
      default:
    }

    // faults under load (config.faults), on requests that would otherwise be delivered
    const fault = st.kind === 'ok' ? C.faultFor(ctx, 'apns', entry, stream) : null;
    if (fault === 'held') return;                  // its connection is breaking (drop, goaway)
    if (fault === 'reset') {
      rec.finish(entry, 'reset', {}, null);
      try { stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR); } catch { /* gone */ }
      return;
    }
    if (fault === 'slow') await C.sleep(ctx.config.faults.slowMs);

    // success: 200, empty body (a client gone during a delay is not a delivery)
    if (stream.destroyed || stream.closed) return rec.finish(entry, 'aborted', {}, null);
    rec.accept('apns', deviceToken);
    const extra = env === 'sandbox' ? { 'apns-unique-id': C.seqUuid(0x5a).toLowerCase() } : {};
    return respond(200, undefined, extra);
  }

  return { name, server, conns, env, auth };
}

module.exports = { create, certInfo };
