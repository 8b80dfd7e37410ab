'use strict';
// FCM HTTP v1 mock: POST /v1/projects/{project}/messages:send (PROTOCOLS.md 1.4-1.7, 6.2).
// h2 and http/1.1 via ALPN over TLS >= 1.2. Bearer tokens must come from the OAuth mock.

const http2 = require('http2');
const zlib = require('zlib');
const C = require('./common');

// ---------------------------------------------------------------------------------------------
// Message schema (discovery doc 2025-02 + firebase-admin additions). Field names in snake_case;
// the lowerCamelCase JSON names are accepted too (proto3 JSON), e.g. collapse_key / collapseKey.
// ---------------------------------------------------------------------------------------------
const PKG = 'type.googleapis.com/google.firebase.fcm.v1.';
const S = { scalar: 'TYPE_STRING' }, B = { scalar: 'TYPE_BOOL' }, I32 = { scalar: 'TYPE_INT32' }, D = { scalar: 'TYPE_DOUBLE' };
const DUR = { special: 'duration', type: 'type.googleapis.com/google.protobuf.Duration' };
const TS = { special: 'timestamp', type: 'type.googleapis.com/google.protobuf.Timestamp' };
const STRUCT = { special: 'struct', type: 'type.googleapis.com/google.protobuf.Struct' };
const map = (entry) => ({ map: S, type: PKG + entry });
const rep = (t) => ({ repeated: t });
const en = (name, values) => ({ enumType: PKG + name, values });
const camel = (s) => s.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
function msg(name, fields) {
  const lookup = {};
  for (const f of Object.keys(fields)) { lookup[f] = f; lookup[camel(f)] = f; }
  return { msgType: PKG + name, fields, lookup };
}

const Color = msg('Color', { red: D, green: D, blue: D, alpha: D });
const LightSettings = msg('LightSettings', { color: Color, light_on_duration: DUR, light_off_duration: DUR });
const AndroidNotification = msg('AndroidNotification', {
  title: S, body: S, icon: S, color: S, sound: S, tag: S, click_action: S,
  body_loc_key: S, body_loc_args: rep(S), title_loc_key: S, title_loc_args: rep(S),
  channel_id: S, ticker: S, sticky: B, event_time: TS, local_only: B,
  notification_priority: en('AndroidNotification.NotificationPriority',
    ['PRIORITY_UNSPECIFIED', 'PRIORITY_MIN', 'PRIORITY_LOW', 'PRIORITY_DEFAULT', 'PRIORITY_HIGH', 'PRIORITY_MAX']),
  default_sound: B, default_vibrate_timings: B, default_light_settings: B, vibrate_timings: rep(DUR),
  visibility: en('AndroidNotification.Visibility', ['VISIBILITY_UNSPECIFIED', 'PRIVATE', 'PUBLIC', 'SECRET']),
  notification_count: I32, light_settings: LightSettings, image: S, bypass_proxy_notification: B,
  proxy: en('AndroidNotification.Proxy', ['PROXY_UNSPECIFIED', 'ALLOW', 'DENY', 'IF_PRIORITY_LOWERED']),
});
const AndroidConfig = msg('AndroidConfig', {
  collapse_key: S, priority: en('AndroidMessagePriority', ['NORMAL', 'HIGH']), ttl: DUR,
  restricted_package_name: S, data: map('AndroidConfig.DataEntry'), notification: AndroidNotification,
  fcm_options: msg('AndroidFcmOptions', { analytics_label: S }),
  direct_boot_ok: B, bandwidth_constrained_ok: B, restricted_satellite_ok: B,
});
const WebpushConfig = msg('WebpushConfig', {
  headers: map('WebpushConfig.HeadersEntry'), data: map('WebpushConfig.DataEntry'), notification: STRUCT,
  fcm_options: msg('WebpushFcmOptions', { link: S, analytics_label: S }),
});
const ApnsConfig = msg('ApnsConfig', {
  headers: map('ApnsConfig.HeadersEntry'), payload: STRUCT,
  fcm_options: msg('ApnsFcmOptions', { analytics_label: S, image: S }), live_activity_token: S,
});
const Message = msg('Message', {
  name: S, data: map('Message.DataEntry'), notification: msg('Notification', { title: S, body: S, image: S }),
  android: AndroidConfig, webpush: WebpushConfig, apns: ApnsConfig,
  fcm_options: msg('FcmOptions', { analytics_label: S }),
  token: S, topic: S, condition: S, fid: S,
});
const SendMessageRequest = msg('SendMessageRequest', { message: Message, validate_only: B });

const DURATION_RE = /^[0-9]+(\.[0-9]{1,9})?s$/;
const TIMESTAMP_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$/;
const TOKEN_RE = /^[A-Za-z0-9_:.\-]{1,4096}$/;
const TOPIC_RE = /^[a-zA-Z0-9\-_.~%]+$/;

// Walk a JSON value against the schema. Collects google.rpc.BadRequest field violations in errs
// and returns a normalized copy (canonical snake_case keys) for the semantic checks.
function walk(v, t, path, errs) {
  const invalid = (type) => errs.push({ field: path, description: `Invalid value at '${path}' (${type}), ${JSON.stringify(v)}` });
  if (t.scalar) {
    if (t.scalar === 'TYPE_STRING' && typeof v === 'string') return v;
    if (t.scalar === 'TYPE_BOOL' && typeof v === 'boolean') return v;
    if (t.scalar === 'TYPE_INT32' && ((Number.isInteger(v) && Math.abs(v) < 2 ** 31) || (typeof v === 'string' && /^-?\d{1,10}$/.test(v)))) return Number(v);
    if (t.scalar === 'TYPE_DOUBLE' && ((typeof v === 'number') || (typeof v === 'string' && v.trim() !== '' && !isNaN(Number(v))))) return Number(v);
    invalid(t.scalar);
    return undefined;
  }
  if (t.special === 'duration') { if (typeof v === 'string' && DURATION_RE.test(v)) return v; invalid(t.type); return undefined; }
  if (t.special === 'timestamp') { if (typeof v === 'string' && TIMESTAMP_RE.test(v)) return v; invalid(t.type); return undefined; }
  if (t.special === 'struct') { if (C.isObj(v)) return v; invalid(t.type); return undefined; }
  if (t.enumType) {
    if (typeof v === 'string' && t.values.includes(v)) return v;
    if (Number.isInteger(v) && v >= 0 && v < t.values.length) return t.values[v];
    invalid(t.enumType);
    return undefined;
  }
  if (t.repeated) {
    if (!Array.isArray(v)) { invalid(t.repeated.scalar || t.repeated.type); return undefined; }
    return v.map((x, i) => walk(x, t.repeated, `${path}[${i}]`, errs));
  }
  if (t.map) {
    if (!C.isObj(v)) { invalid(t.type); return undefined; }
    const out = {};
    C.keysOf(v).forEach((k, i) => {
      const x = v[k];
      if (typeof x !== 'string') {
        errs.push({ field: `${path}[${i}].value`, description: `Invalid value at '${path}[${i}].value' (TYPE_STRING), ${JSON.stringify(x)}` });
      } else out[k] = x;
    });
    for (const k of C.dupKeysOf(v)) errs.push({ field: path, description: `Invalid JSON payload received. Duplicate map key "${k}" at '${path}'.` });
    return out;
  }
  // message
  if (!C.isObj(v)) { invalid(t.msgType); return undefined; }
  const out = {};
  const where = path ? ` at '${path}'` : '';
  for (const k of C.keysOf(v)) {
    const canon = t.lookup[k];
    if (!canon) {
      errs.push({ field: path, description: `Invalid JSON payload received. Unknown name "${k}"${where}: Cannot find field.` });
      continue;
    }
    if (out[canon] !== undefined) {
      errs.push({ field: path, description: `Invalid JSON payload received. Duplicate field "${canon}"${where}.` });
      continue;
    }
    const x = v[k];
    if (x === null) continue; // proto3 JSON: null = default value
    const ft = t.fields[canon];
    if (Array.isArray(x) && !ft.repeated && ft.special !== 'struct') {
      errs.push({ field: path, description: `Invalid JSON payload received. Unknown name "${k}"${where}: Proto field is not repeating, cannot start list.` });
      continue;
    }
    const sub = path ? `${path}.${k}` : k;
    const r = walk(x, ft, sub, errs);
    if (r !== undefined) out[canon] = r;
  }
  for (const k of C.dupKeysOf(v)) errs.push({ field: path, description: `Invalid JSON payload received. Duplicate name "${k}"${where}.` });
  return out;
}

// ---------------------------------------------------------------------------------------------
// google.rpc.Status error bodies
// ---------------------------------------------------------------------------------------------
const FCM_ERROR = (code) => ({ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode: code });
const BAD_REQUEST = (violations) => ({ '@type': 'type.googleapis.com/google.rpc.BadRequest', fieldViolations: violations });
const APNS_ERROR = (statusCode, reason) => ({ '@type': 'type.googleapis.com/google.firebase.fcm.v1.ApnsError', statusCode, reason });
const gerr = (code, status, message, details) => ({ error: Object.assign({ code, message, status }, details ? { details } : {}) });
const UNAUTH_MSG = 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.';
const INVALID_ARG_MSG = 'Request contains an invalid argument.';
const invalidArg = (field, description, message = INVALID_ARG_MSG) =>
  gerr(400, 'INVALID_ARGUMENT', message, [FCM_ERROR('INVALID_ARGUMENT'), BAD_REQUEST([{ field, description }])]);
const CANONICAL = { 400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED', 404: 'NOT_FOUND', 409: 'ABORTED', 429: 'RESOURCE_EXHAUSTED', 500: 'INTERNAL', 501: 'NOT_IMPLEMENTED', 503: 'UNAVAILABLE', 504: 'DEADLINE_EXCEEDED' };

// Body for a scripted "fail:<status>" of a token.
function scriptedFailure(status, reason) {
  switch (status) {
    case 400: return invalidArg('message', 'Scripted failure', INVALID_ARG_MSG);
    case 401: return gerr(401, 'UNAUTHENTICATED', UNAUTH_MSG);
    case 403: return gerr(403, 'PERMISSION_DENIED', 'The caller does not have permission');
    // reason "bare": NOT_FOUND without an FcmError (a wrong project or endpoint, not a dead token)
    case 404: return gerr(404, 'NOT_FOUND', 'Requested entity was not found.', reason === 'bare' ? undefined : [FCM_ERROR(reason || 'UNREGISTERED')]);
    case 429: return gerr(429, 'RESOURCE_EXHAUSTED', 'Quota exceeded for this device.', [FCM_ERROR(reason || 'QUOTA_EXCEEDED')]);
    case 500: return gerr(500, 'INTERNAL', 'Internal error encountered.', [FCM_ERROR(reason || 'INTERNAL')]);
    case 503: return gerr(503, 'UNAVAILABLE', 'The service is currently unavailable.', [FCM_ERROR(reason || 'UNAVAILABLE')]);
    default: return gerr(status, CANONICAL[status] || 'UNKNOWN', `Scripted failure ${status}`, reason ? [FCM_ERROR(reason)] : undefined);
  }
}

const HTML_404 = (path) => `<!DOCTYPE html>\n<html lang=en><meta charset=utf-8><title>Error 404 (Not Found)!!1</title><p><b>404.</b> <ins>That’s an error.</ins><p>The requested URL <code>${path.replace(/[<>&"]/g, '')}</code> was not found on this server.  <ins>That’s all we know.</ins>\n`;

function utf8Len(s) { return typeof s === 'string' ? Buffer.byteLength(s) : 0; }

let msgSeq = 0;

// The key a request is counted under (as in /accepted): its token, or "topic:x"; null if the
// body names no target.
function targetKey(body) {
  const m = C.isObj(body) && C.isObj(body.message) ? body.message : null;
  if (!m) return null;
  if (typeof m.token === 'string') return m.token;
  for (const k of ['topic', 'condition', 'fid']) if (typeof m[k] === 'string') return `${k}:${m[k]}`;
  return null;
}

function create(ctx) {
  const { rec, tokens } = ctx;
  const server = http2.createSecureServer({
    ...ctx.tlsOptions(), allowHTTP1: true,
    settings: { maxConcurrentStreams: ctx.config.fcm.maxConcurrentStreams },
  });
  const conns = { sessions: new Set(), sockets: new Set() };
  C.trackConnections(server, conns);

  server.on('request', (req, res) => {
    handle(req, res).catch((e) => {
      ctx.log(`fcm: internal error ${e.stack}`);
      try { res.writeHead(500); res.end(); } catch { /* gone */ }
    });
  });

  async function handle(req, res) {
    const cfg = ctx.config;
    const entry = rec.begin('fcm', C.compatInfo(req), cfg.logLimit);
    const whole = await C.readWholeBody(rec, req, entry, 1 << 20);
    if (!whole) return;  // half a request: not received
    const { buf: wire, over } = whole;
    let buf = wire;
    const ce = String(req.headers['content-encoding'] || '').toLowerCase();
    let decodeError = null;
    if (ce === 'gzip') { try { buf = zlib.gunzipSync(wire); } catch (e) { decodeError = e.message; } }
    else if (ce && ce !== 'identity') decodeError = `unsupported content-encoding ${ce}`;
    Object.assign(entry, C.bodyForLog(buf), { bodyBytes: wire.length });
    rec.receive('fcm', targetKey(entry.body), entry);

    const send = (status, body, headers = {}) =>
      C.sendCompat(rec, req, res, entry, status, Object.assign({ 'content-type': 'application/json; charset=UTF-8' }, headers), body);

    if (C.takeNext(cfg.fcm, 'proxy502Next')) return send(502, C.PROXY_502_HTML, { 'content-type': 'text/html' });

    // 1. route
    const path = req.url.split('?')[0];
    const m = /^\/v1\/projects\/([^/]+)\/messages:send$/.exec(path);
    if (!m) return send(404, HTML_404(path), { 'content-type': 'text/html; charset=UTF-8' });
    if (req.method !== 'POST') return send(404, gerr(404, 'NOT_FOUND', 'Method not found.'));
    const project = decodeURIComponent(m[1]);
    entry.project = project;

    // 2. authentication: an unexpired access token issued by the OAuth mock
    const am = /^Bearer +(\S+)$/i.exec(String(req.headers.authorization || ''));
    const tok = am && ctx.accessTokens.get(am[1]);
    const unauth = () => send(401, gerr(401, 'UNAUTHENTICATED', UNAUTH_MSG), { 'www-authenticate': 'Bearer realm="https://accounts.google.com/"' });
    if (!tok) { entry.authError = am ? 'unknown access token' : 'no bearer token'; return unauth(); }
    if (tok.expiresAt <= C.nowMs()) { entry.authError = 'access token expired'; return unauth(); }
    if (C.takeNext(cfg.fcm, 'unauthNext')) { entry.authError = 'scripted (fcm.unauthNext)'; return unauth(); }

    // project check
    const sa = ctx.serviceAccount();
    const expected = cfg.fcm.project || sa.project_id;
    if (project !== expected) {
      return send(403, gerr(403, 'PERMISSION_DENIED', `Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/${project}' (or it may not exist).`));
    }

    // 3. body
    if (over) return send(413, '<html><body>413 Request Entity Too Large</body></html>', { 'content-type': 'text/html' });
    const ct = String(req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
    if (ct !== 'application/json') {
      const d = `Invalid JSON payload received. Content-Type must be application/json, got "${req.headers['content-type'] || ''}".`;
      return send(400, gerr(400, 'INVALID_ARGUMENT', d, [BAD_REQUEST([{ description: d }])]));
    }
    if (decodeError) {
      const d = `Invalid request body: ${decodeError}`;
      return send(400, gerr(400, 'INVALID_ARGUMENT', d, [BAD_REQUEST([{ description: d }])]));
    }
    let body;
    try { body = C.parseJson(buf.toString('utf8')); } catch (e) {
      const d = `Invalid JSON payload received. Unexpected token.\n${e.message}`;
      return send(400, gerr(400, 'INVALID_ARGUMENT', d, [BAD_REQUEST([{ description: d }])]));
    }
    if (!C.isObj(body)) {
      const d = 'Invalid JSON payload received. Unknown name "": Root element must be a message.';
      return send(400, gerr(400, 'INVALID_ARGUMENT', d, [BAD_REQUEST([{ description: d }])]));
    }

    // 4 + 6. field names (snake_case or camelCase) and types
    const errs = [];
    const reqN = walk(body, SendMessageRequest, '', errs);
    if (errs.length) {
      return send(400, gerr(400, 'INVALID_ARGUMENT', errs.map((e) => e.description).join('\n'), [BAD_REQUEST(errs)]));
    }
    const msgN = reqN.message;
    if (!msgN) return send(400, invalidArg('message', 'Message must be set'));
    const validateOnly = reqN.validate_only === true;
    entry.validateOnly = validateOnly;

    // 5. exactly one target
    const targets = ['token', 'topic', 'condition', 'fid'].filter((k) => typeof msgN[k] === 'string' && msgN[k] !== '');
    if (targets.length !== 1) {
      return send(400, invalidArg('message', `Exactly one of token, topic, condition or fid must be set (got ${targets.length ? targets.join(', ') : 'none'})`));
    }
    const target = targets[0];
    if (target === 'topic' && (msgN.topic.startsWith('/topics/') || !TOPIC_RE.test(msgN.topic))) {
      return send(400, invalidArg('message.topic', `Invalid topic name "${msgN.topic}" (no "/topics/" prefix; characters [a-zA-Z0-9-_.~%])`));
    }

    // value rules
    const a = msgN.android || {};
    if (a.ttl !== undefined && parseFloat(a.ttl) > 2419200) {
      return send(400, invalidArg('message.android.ttl', `TTL ${a.ttl} out of range: must be between 0s and 2419200s (4 weeks)`));
    }
    if (a.notification && a.notification.color !== undefined && !/^#[0-9a-fA-F]{6}$/.test(a.notification.color)) {
      return send(400, invalidArg('message.android.notification.color', `Invalid color "${a.notification.color}": must be #rrggbb`));
    }
    const link = msgN.webpush && msgN.webpush.fcm_options && msgN.webpush.fcm_options.link;
    if (link !== undefined && !/^https:\/\//.test(link)) {
      return send(400, invalidArg('message.webpush.fcm_options.link', 'The link must be an HTTPS URL'));
    }
    // 7. reserved data keys
    for (const [field, data] of [['message.data', msgN.data], ['message.android.data', a.data]]) {
      for (const k of Object.keys(data || {})) {
        if (k === 'from' || k === 'message_type' || k.startsWith('google.') || k.startsWith('gcm.')) {
          return send(400, invalidArg(field, `Invalid data payload key: "${k}" is reserved (from, message_type, google.*, gcm.*)`));
        }
      }
    }
    // 8. size: data keys + values and notification strings
    let size = 0;
    for (const [k, v] of Object.entries(msgN.data || {})) size += utf8Len(k) + utf8Len(v);
    for (const v of Object.values(msgN.notification || {})) size += utf8Len(v);
    const limit = target === 'token' || target === 'fid' ? cfg.fcm.maxMessageBytes : cfg.fcm.topicMaxMessageBytes;
    entry.payloadBytes = size;
    if (size > limit) {
      return send(400, invalidArg('message', `Message is too big: ${size} bytes of data and notification payload, the limit is ${limit}`));
    }

    // 9. token registry / scripted behaviour
    const key = target === 'token' ? msgN.token : `${target}:${msgN[target]}`;
    entry.token = key;
    if (target === 'token' && !TOKEN_RE.test(msgN.token)) {
      return send(400, invalidArg('message.token', 'Invalid registration token', 'The registration token is not a valid FCM registration token'));
    }
    const st = tokens.use('fcm', key);
    entry.tokenState = st.spec || 'ok';
    switch (st.kind) {
      case 'slow': await C.sleep(st.ms); break;
      case 'reset': case 'drop': return C.abortCompat(rec, req, entry, st.kind);
      case 'dead': case 'expired':
        return send(404, gerr(404, 'NOT_FOUND', 'Requested entity was not found.', [FCM_ERROR('UNREGISTERED')]));
      case 'bad':
        return send(400, invalidArg('message.token', 'Invalid registration token', 'The registration token is not a valid FCM registration token'));
      case 'mismatch':
        return send(403, gerr(403, 'PERMISSION_DENIED', 'SenderId mismatch', [FCM_ERROR('SENDER_ID_MISMATCH')]));
      case 'apns-dead':
        return send(400, gerr(400, 'INVALID_ARGUMENT', 'APNs device token is disabled.', [FCM_ERROR('INVALID_ARGUMENT'), APNS_ERROR(410, 'Unregistered')]));
      case 'apns-auth':
        return send(401, gerr(401, 'UNAUTHENTICATED', 'Auth error from APNS or Web Push Service', [FCM_ERROR('THIRD_PARTY_AUTH_ERROR'), APNS_ERROR(403, 'InvalidProviderToken')]));
      case 'fail': {
        const h = st.retryAfter !== null && st.retryAfter !== undefined ? { 'retry-after': String(st.retryAfter) } : {};
        if (st.status === 502) return send(502, C.PROXY_502_HTML, { 'content-type': 'text/html', ...h });
        return send(st.status, scriptedFailure(st.status, st.reason), h);
      }
      case 'redirect': // to the same URL: a client that follows it sends the request again
        return send(st.status, C.REDIRECT_HTML,
          { 'content-type': 'text/html', location: `https://${req.headers[':authority'] || req.headers.host}${req.url}` });
      default: // ok and states meant for other providers
    }

    // faults under load (config.faults), on requests that would otherwise be delivered
    const fault = st.kind === 'ok' ? C.faultFor(ctx, 'fcm', entry, req.httpVersionMajor === 2 ? req.stream : null) : null;
    if (fault === 'held') return;                  // its connection is breaking (drop, goaway)
    if (fault === 'reset' || fault === 'close') return C.abortCompat(rec, req, entry, fault === 'reset' ? 'reset' : 'drop');
    if (fault === 'slow') await C.sleep(cfg.faults.slowMs);

    // 10/11. success
    if (C.clientGone(req)) return rec.finish(entry, 'aborted', {}, null);
    if (validateOnly) return send(200, { name: `projects/${project}/messages/fake_message_id` });
    const id = `0:${String(++msgSeq).padStart(16, '0')}%6e6f7675746573`;
    rec.accept('fcm', key);
    return send(200, { name: `projects/${project}/messages/${id}` });
  }

  return { name: 'fcm', server, conns };
}

module.exports = { create, walk, SendMessageRequest };
