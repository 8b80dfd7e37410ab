'use strict';
// Expo push service mock (PROTOCOLS.md 3, 6.4): POST /--/api/v2/push/send and
// /--/api/v2/push/getReceipts over TLS, h2 and http/1.1 via ALPN.

const http2 = require('http2');
const zlib = require('zlib');
const C = require('./common');

const SEND = '/--/api/v2/push/send';
const RECEIPTS = '/--/api/v2/push/getReceipts';
const TOKEN_RE = /^(ExponentPushToken|ExpoPushToken)\[.+\]$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const isExpoToken = (t) => typeof t === 'string' && (TOKEN_RE.test(t) || UUID_RE.test(t));

const ERROR_TEXT = {
  DeviceNotRegistered: (t) => `${JSON.stringify(t)} is not a registered push notification recipient`,
  MessageTooBig: () => 'The notification was too large. Make sure the payload is at most 4096 bytes.',
  MessageRateExceeded: () => 'The app is sending messages too frequently to the device.',
  MismatchSenderId: () => 'The FCM credentials used to send this notification do not match the sender id of the device.',
  InvalidCredentials: () => 'The push notification credentials for this project are invalid.',
};
function errorTicket(code, token) {
  const message = (ERROR_TEXT[code] || (() => `Scripted error ${code}`))(token);
  const details = { error: code };
  if (code === 'DeviceNotRegistered') details.expoPushToken = token;
  return { status: 'error', message, details };
}
const requestError = (code, message, extra) => ({ errors: [Object.assign({ code, message }, extra || {})] });

// Validate one message object. Returns an error message or null.
function validateMessage(m, i, cfg) {
  const at = (k) => `"[${i}].${k}"`;
  const str = (k) => m[k] === undefined || typeof m[k] === 'string' ? null : `${at(k)} must be a string`;
  const num = (k) => m[k] === undefined || (typeof m[k] === 'number' && Number.isFinite(m[k]) && m[k] >= 0) ? null : `${at(k)} must be a non-negative number`;
  const bool = (k) => m[k] === undefined || typeof m[k] === 'boolean' ? null : `${at(k)} must be a boolean`;
  const KNOWN = {
    to: () => {
      const to = m.to;
      if (to === undefined) return `${at('to')} is required`;
      const list = Array.isArray(to) ? to : [to];
      if (Array.isArray(to) && to.length === 0) return `${at('to')} must contain at least 1 item`;
      for (const t of list) {
        if (typeof t !== 'string') return `${at('to')} must be a string or an array of strings`;
        if (cfg.malformedToken === 'request' && !isExpoToken(t)) return `${JSON.stringify(t)} is not a valid Expo push token`;
      }
      return null;
    },
    data: () => m.data === undefined || C.isObj(m.data) ? null : `${at('data')} must be of type object`,
    title: () => str('title'), subtitle: () => str('subtitle'), body: () => str('body'),
    sound: () => {
      const s = m.sound;
      if (s === undefined || s === null || typeof s === 'string') return null;
      if (C.isObj(s)) {
        for (const k of Object.keys(s)) if (!['critical', 'name', 'volume'].includes(k)) return `${at(`sound.${k}`)} is not allowed`;
        if (s.critical !== undefined && typeof s.critical !== 'boolean') return `${at('sound.critical')} must be a boolean`;
        if (s.name !== undefined && s.name !== null && typeof s.name !== 'string') return `${at('sound.name')} must be a string`;
        if (s.volume !== undefined && !(typeof s.volume === 'number' && s.volume >= 0 && s.volume <= 1)) return `${at('sound.volume')} must be a number between 0 and 1`;
        return null;
      }
      return `${at('sound')} must be "default", null or an object`;
    },
    ttl: () => num('ttl'), expiration: () => num('expiration'), badge: () => num('badge'),
    priority: () => m.priority === undefined || ['default', 'normal', 'high'].includes(m.priority) ? null : `${at('priority')} must be one of [default, normal, high]`,
    channelId: () => str('channelId'), categoryId: () => str('categoryId'),
    mutableContent: () => bool('mutableContent'), _contentAvailable: () => bool('_contentAvailable'),
    _displayInForeground: () => bool('_displayInForeground'),
    interruptionLevel: () => m.interruptionLevel === undefined || ['active', 'critical', 'passive', 'time-sensitive'].includes(m.interruptionLevel)
      ? null : `${at('interruptionLevel')} must be one of [active, critical, passive, time-sensitive]`,
    richContent: () => m.richContent === undefined || (C.isObj(m.richContent) && (m.richContent.image === undefined || typeof m.richContent.image === 'string'))
      ? null : `${at('richContent')} must be an object {image?: string}`,
    icon: () => str('icon'), collapseId: () => str('collapseId'), tag: () => str('tag'),
  };
  for (const k of C.keysOf(m)) {
    if (KNOWN[k]) { const e = KNOWN[k](); if (e) return e; }
    else if (cfg.rejectUnknownFields) return `${at(k)} is not allowed`;
  }
  if (m.to === undefined) return `${at('to')} is required`;
  for (const k of C.dupKeysOf(m)) return `${at(k)} is duplicated`;
  return null;
}

// The recipients of a send body (a message or an array of them; "to" a token or an array).
function sendTokens(body) {
  const out = [];
  for (const m of Array.isArray(body) ? body : [body]) {
    if (!C.isObj(m)) continue;
    for (const t of Array.isArray(m.to) ? m.to : [m.to]) if (typeof t === 'string') out.push(t);
  }
  return out;
}

function create(ctx) {
  const { rec, tokens } = ctx;
  const server = http2.createSecureServer({ ...ctx.tlsOptions(), allowHTTP1: true });
  const conns = { sessions: new Set(), sockets: new Set() };
  C.trackConnections(server, conns);
  const window = []; // [timeMs, recipients] for the optional rate limit

  server.on('request', (req, res) => {
    handle(req, res).catch((e) => {
      ctx.log(`expo: internal error ${e.stack}`);
      try { res.writeHead(500); res.end(); } catch { /* gone */ }
    });
  });

  async function handle(req, res) {
    const cfg = ctx.config.expo;
    const entry = rec.begin('expo', C.compatInfo(req), ctx.config.logLimit);
    const whole = await C.readWholeBody(rec, req, entry, 8 << 20);
    if (!whole) return;  // half a request: not received
    const { buf: wire, over } = whole;
    const ce = String(req.headers['content-encoding'] || '').toLowerCase();
    let buf = wire, decodeError = null;
    if (ce === 'gzip') { try { buf = zlib.gunzipSync(wire); } catch (e) { decodeError = `gzip: ${e.message}`; } }
    else if (ce === 'deflate') { try { buf = zlib.inflateSync(wire); } catch (e) { decodeError = `deflate: ${e.message}`; } }
    else if (ce && ce !== 'identity') decodeError = `unsupported content-encoding "${ce}"`;
    Object.assign(entry, C.bodyForLog(decodeError ? wire : buf), { bodyBytes: wire.length, contentEncoding: ce || null });
    // each token of a send counts as received, whatever is answered
    if (req.url.split('?')[0] === SEND) for (const t of sendTokens(entry.body)) rec.receive('expo', t, entry);

    const gzipOk = cfg.gzipResponses && /\bgzip\b/i.test(String(req.headers['accept-encoding'] || ''));
    const send = (status, body, headers = {}) => C.sendCompat(rec, req, res, entry, status, headers, body, { gzip: gzipOk && typeof body === 'object' });
    const bad = (code, message, status = 400, extra) => send(status, requestError(code, message, extra));

    // global faults
    if (C.takeNext(cfg, 'proxy502Next')) return send(502, C.PROXY_502_HTML, { 'content-type': 'text/html' });
    if (C.takeNext(cfg, 'html200Next')) {
      return send(200, '<!DOCTYPE html><html><head><title>Expo</title></head><body><h1>We are experiencing issues</h1></body></html>\n', { 'content-type': 'text/html; charset=utf-8' });
    }

    const path = req.url.split('?')[0];
    if (path !== SEND && path !== RECEIPTS) return bad('NOT_FOUND', `Not found: ${path}`, 404);
    if (req.method !== 'POST') return bad('METHOD_NOT_ALLOWED', `Method ${req.method} is not allowed on ${path}`, 405);
    if (cfg.accessToken) {
      const am = /^Bearer +(\S+)$/i.exec(String(req.headers.authorization || ''));
      if (!am || am[1] !== cfg.accessToken) {
        entry.authError = am ? 'wrong access token' : 'no bearer token';
        return bad('UNAUTHORIZED', 'The bearer token is invalid.', 401);
      }
    }
    if (over) return bad('PAYLOAD_TOO_LARGE', 'The request body is too large.', 413);
    if (decodeError) return bad('VALIDATION_ERROR', `Could not decode the request body: ${decodeError}`);
    const ct = String(req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
    if (ct !== 'application/json') return bad('VALIDATION_ERROR', `"content-type" must be "application/json", got "${req.headers['content-type'] || ''}"`);
    let body;
    try { body = C.parseJson(buf.toString('utf8')); } catch (e) {
      return bad('VALIDATION_ERROR', `The request body is not valid JSON${wire[0] === 0x1f && wire[1] === 0x8b ? ' (gzip data without content-encoding: gzip?)' : ''}: ${e.message}`);
    }
    if (C.takeNext(cfg, 'errors200Next')) return send(200, requestError('INTERNAL_SERVER_ERROR', 'An unknown error occurred.'));

    if (path === RECEIPTS) return receipts(body, send, bad, entry);

    // ---- send ----
    const msgs = Array.isArray(body) ? body : [body];
    if (msgs.length === 0) return bad('VALIDATION_ERROR', '"value" must contain at least 1 item');
    // count recipients first (a "to" array expands)
    let count = 0;
    for (const m of msgs) count += C.isObj(m) && Array.isArray(m.to) ? m.to.length : 1;
    entry.recipients = count;
    if (count > cfg.maxRecipients) {
      return bad('PUSH_TOO_MANY_NOTIFICATIONS', `You are trying to send more than ${cfg.maxRecipients} push notifications in one request`);
    }
    for (let i = 0; i < msgs.length; i++) {
      if (!C.isObj(msgs[i])) return bad('VALIDATION_ERROR', `"[${i}]" must be of type object`);
      const e = validateMessage(msgs[i], i, cfg);
      if (e) return bad('VALIDATION_ERROR', e);
    }
    // recipients in order, each with its message
    const recips = [];
    for (const m of msgs) for (const t of (Array.isArray(m.to) ? m.to : [m.to])) recips.push({ token: t, msg: m });
    entry.tokens = recips.map((r) => r.token);

    // optional rate limit (recipients per rolling second)
    if (cfg.rateLimit > 0) {
      const now = Date.now();
      while (window.length && now - window[0][0] >= 1000) window.shift();
      const inWindow = window.reduce((a, w) => a + w[1], 0);
      if (inWindow + count > cfg.rateLimit) return bad('TOO_MANY_REQUESTS', `You are sending too many notifications; the limit is ${cfg.rateLimit} per second.`, 429);
      window.push([now, count]);
    }

    // all recipients must belong to one project (experience)
    const projects = {};
    for (const r of recips) {
      const st = tokens.peek('expo', r.token);
      const p = st && st.kind === 'project' ? st.project : cfg.project;
      (projects[p] || (projects[p] = [])).push(r.token);
    }
    if (Object.keys(projects).length > 1) {
      return bad('PUSH_TOO_MANY_EXPERIENCE_IDS', 'All push notification messages in the same request must be for the same project; check the details field to investigate conflicting tokens.', 400, { details: projects });
    }

    // scripted behaviour: a fail/reset/drop state of any recipient fails the whole request
    const states = recips.map((r) => tokens.use('expo', r.token));
    entry.tokenStates = states.map((s) => s.spec || 'ok');
    const abort = states.find((s) => s.kind === 'reset' || s.kind === 'drop');
    if (abort) return C.abortCompat(rec, req, entry, abort.kind);
    const f = states.find((s) => s.kind === 'fail');
    if (f) {
      const h = f.retryAfter !== null && f.retryAfter !== undefined ? { 'retry-after': String(f.retryAfter) } : {};
      if (f.status === 502) return send(502, C.PROXY_502_HTML, { 'content-type': 'text/html', ...h });
      const code = f.reason || (f.status === 429 ? 'TOO_MANY_REQUESTS' : f.status >= 500 ? 'INTERNAL_SERVER_ERROR' : f.status === 401 ? 'UNAUTHORIZED' : 'VALIDATION_ERROR');
      return send(f.status, requestError(code, `Scripted failure ${f.status}`), h);
    }
    let delay = Math.max(0, ...states.filter((s) => s.kind === 'slow').map((s) => s.ms));
    // faults under load (config.faults), on sends that would otherwise be delivered
    const fault = states.every((s) => s.kind === 'ok') ? C.faultFor(ctx, 'expo', entry, req.httpVersionMajor === 2 ? req.stream : null) : null;
    if (fault === 'held') return;                  // its connection is breaking (drop, goaway)
    if (fault === 'reset' || fault === 'close') return C.abortCompat(rec, req, entry, fault === 'reset' ? 'reset' : 'drop');
    if (fault === 'slow') delay = Math.max(delay, ctx.config.faults.slowMs);
    if (delay) await C.sleep(delay);
    if (C.clientGone(req)) return rec.finish(entry, 'aborted', {}, null);

    // tickets, in request order
    const tickets = recips.map((r, i) => {
      const st = states[i];
      if (!isExpoToken(r.token)) return errorTicket('DeviceNotRegistered', r.token); // only with malformedToken=ticket
      switch (st.kind) {
        case 'dead': case 'bad': case 'expired': return errorTicket('DeviceNotRegistered', r.token);
        case 'mismatch': return errorTicket('MismatchSenderId', r.token);
        case 'ticket-error': return errorTicket(st.code, r.token);
        default:
      }
      const m = Object.assign({}, r.msg, { to: r.token });
      if (Buffer.byteLength(JSON.stringify(m)) > cfg.maxMessageBytes) return errorTicket('MessageTooBig', r.token);
      const id = C.seqUuid(0xe0).toUpperCase();
      let receipt = { status: 'ok' };
      if (st.kind === 'receipt-dead') receipt = errorTicket('DeviceNotRegistered', r.token);
      else if (st.kind === 'receipt-error') receipt = errorTicket(st.code, r.token);
      ctx.expoReceipts.set(id, { receipt, token: r.token, created: C.nowMs() });
      rec.accept('expo', r.token);
      return { status: 'ok', id };
    });
    if (C.takeNext(cfg, 'dropTicketNext')) tickets.pop();
    return send(200, { data: tickets });
  }

  function receipts(body, send, bad, entry) {
    const cfg = ctx.config.expo;
    if (!C.isObj(body) || !Array.isArray(body.ids)) return bad('VALIDATION_ERROR', '"ids" is required and must be an array');
    for (const k of C.keysOf(body)) if (k !== 'ids') return bad('VALIDATION_ERROR', `"${k}" is not allowed`);
    if (body.ids.some((x) => typeof x !== 'string')) return bad('VALIDATION_ERROR', '"ids" must be an array of strings');
    if (body.ids.length > cfg.maxReceiptIds) return bad('PUSH_TOO_MANY_RECEIPTS', `You are trying to get more than ${cfg.maxReceiptIds} receipts in one request`);
    entry.receiptIds = body.ids.length;
    const now = C.nowMs();
    const data = {};
    for (const id of body.ids) {
      const r = ctx.expoReceipts.get(id);
      if (!r) continue;
      const age = now - r.created;
      if (age < cfg.receiptDelayMs) continue;               // not yet
      if (age >= cfg.receiptTtl * 1000) continue;           // expired (24 h)
      data[id] = r.receipt;
    }
    return send(200, { data });
  }

  return { name: 'expo', server, conns };
}

module.exports = { create, isExpoToken };
