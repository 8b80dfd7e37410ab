'use strict';
// Chat incoming-webhook mock (PROTOCOLS.md 4b): Discord, Slack, MS Teams (connector and
// workflow URLs), Mattermost and Novu's generic chat-webhook, told apart by the URL path,
// over TLS >= 1.2, h2 and http/1.1 via ALPN. A webhook is its URL path: token states, counts
// and the log's "token" use the path (no query).

const crypto = require('crypto');
const http = require('http');
const http2 = require('http2');
const C = require('./common');
const { signatureError } = require('./webhook');

const DEFAULTS = {
  chat: {
    secrets: {},             // generic chat-webhook: URL path -> HMAC key (X-Novu-Signature required)
    discordRequireWait: true, // Discord without ?wait=true -> 400 (false: 204 and no body, as Discord does)
    rateLimit: 0,            // > 0: requests per webhook per rateWindowMs, then the service's 429
    rateWindowMs: 1000,
    proxy502Next: 0,         // next N requests: a non-JSON 502 from a "proxy"
  },
};

// Answers: {status, headers, body}; body an object (JSON), a string or null.
const json = (status, body, headers = {}) => ({ status, body, headers: { 'content-type': 'application/json', ...headers } });
const text = (status, t, headers = {}) => ({ status, body: t, headers: { 'content-type': 'text/plain; charset=utf-8', ...headers } });
const empty = (status, headers = {}) => ({ status, body: null, headers });
const isStr = (v) => typeof v === 'string';
const nonEmpty = (v) => isStr(v) && v !== '';
const retryAfterOf = (st) => (st.retryAfter !== null && st.retryAfter !== undefined ? { 'retry-after': String(st.retryAfter) } : {});
const statusText = (s) => `${s}: ${http.STATUS_CODES[s] || 'Error'}`;
let seq = 0;

// Discord snowflake: ms since 2015-01-01 << 22, plus a counter.
const snowflake = () => ((BigInt(Date.now() - 1420070400000) << 22n) | BigInt(++seq & 0xfff)).toString();
const mmId = () => crypto.randomBytes(20).toString('hex').replace(/[^a-z0-9]/g, '').slice(0, 26);
const uuid = () => crypto.randomUUID();

// ---------------------------------------------------------------------------------------------
// Discord: POST /api/webhooks/<id>/<token>?wait=true (also /api/v10/webhooks/...)
// ---------------------------------------------------------------------------------------------
const formError = (field, code, message) => json(400, { message: 'Invalid Form Body', code: 50035, errors: { [field]: { _errors: [{ code, message }] } } });
const DISCORD_KNOWN = new Set(['content', 'username', 'avatar_url', 'tts', 'embeds', 'allowed_mentions', 'components',
  'attachments', 'flags', 'thread_name', 'applied_tags', 'poll', 'payload_json']);
const discord = {
  name: 'discord',
  route(x) {
    const m = /^\/api\/(?:v\d+\/)?webhooks\/([^/]+)\/([^/]+)$/.exec(x.path);
    if (!m) return ['not a Discord webhook path', json(404, { message: '404: Not Found', code: 0 })];
    if (!/^\d{1,20}$/.test(m[1])) return ['webhook id is not a snowflake', json(400, { webhook_id: [`Value "${m[1]}" is not snowflake.`] })];
    x.webhookId = m[1];
    const wait = x.query.get('wait');
    x.wait = wait !== null && wait.toLowerCase() === 'true';
    if (wait !== null && !['true', 'false'].includes(wait.toLowerCase())) return ['bad ?wait', formError('wait', 'BOOLEAN_TYPE_COERCE', `Value "${wait}" is not a valid boolean.`)];
    if (!x.wait && x.cfg.discordRequireWait) {
      return ['no ?wait=true', formError('wait', 'MOCK_WAIT_REQUIRED', 'The mock requires ?wait=true: without it Discord answers 204 and no message id.')];
    }
    return null;
  },
  method: () => json(405, { message: '405: Method Not Allowed', code: 0 }),
  contentType: () => ['Content-Type is not application/json', json(400, { message: 'Cannot send an empty message', code: 50006 })],
  badJson: () => json(400, { message: 'The request body contains invalid JSON.', code: 50109 }),
  validate(b, x) {
    if (!C.isObj(b)) return ['body is not an object', json(400, { message: 'Invalid Form Body', code: 50035, errors: { _errors: [{ code: 'DICT_TYPE_CONVERT', message: 'Only dictionaries may be used in a DictType' }] } })];
    const unknown = C.keysOf(b).filter((k) => !DISCORD_KNOWN.has(k));
    if (unknown.length) x.entry.unknownFields = unknown;
    if (b.content !== undefined && b.content !== null) {
      if (!isStr(b.content)) return ['content is not a string', formError('content', 'BASE_TYPE_STRING', 'Must be a string.')];
      if ([...b.content].length > 2000) return ['content longer than 2000', formError('content', 'BASE_TYPE_MAX_LENGTH', 'Must be 2000 or fewer in length.')];
    }
    if (b.embeds !== undefined && b.embeds !== null) {
      if (!Array.isArray(b.embeds)) return ['embeds is not an array', formError('embeds', 'LIST_TYPE_CONVERT', 'Must be an array.')];
      if (b.embeds.length > 10) return ['more than 10 embeds', formError('embeds', 'BASE_TYPE_MAX_LENGTH', 'Must be 10 or fewer in length.')];
      if (b.embeds.some((e) => !C.isObj(e))) return ['an embed is not an object', formError('embeds', 'DICT_TYPE_CONVERT', 'Only dictionaries may be used in a DictType')];
    }
    if (b.username !== undefined && b.username !== null) {
      if (!isStr(b.username) || [...b.username].length < 1 || [...b.username].length > 80) return ['bad username length', formError('username', 'BASE_TYPE_BAD_LENGTH', 'Must be between 1 and 80 in length.')];
      const bad = ['discord', 'clyde'].find((w) => b.username.toLowerCase().includes(w));
      if (bad) return [`username contains "${bad}"`, formError('username', 'USERNAME_INVALID_CONTAINS', `Username cannot contain "${bad}"`)];
    }
    if (b.avatar_url !== undefined && b.avatar_url !== null && !(isStr(b.avatar_url) && /^https?:\/\/[^\s/]+/.test(b.avatar_url))) {
      return ['avatar_url is not a URL', formError('avatar_url', 'URL_TYPE_INVALID_URL', 'Not a well formed URL.')];
    }
    if (!nonEmpty(b.content) && !(Array.isArray(b.embeds) && b.embeds.length)) return ['empty message', json(400, { message: 'Cannot send an empty message', code: 50006 })];
    return null;
  },
  // bodyOnly: retry_after in the body and no Retry-After header
  rateLimited: (sec, bodyOnly) => json(429, { message: 'You are being rate limited.', retry_after: sec, global: false },
    bodyOnly ? { 'x-ratelimit-scope': 'user' } : { 'retry-after': String(Math.ceil(sec)), 'x-ratelimit-scope': 'user' }),
  state(st) {
    switch (st.kind) {
      case 'deleted': case 'not-found': case 'dead': case 'archived': return json(404, { message: 'Unknown Webhook', code: 10015 });
      case 'invalid-token': case 'bad': return json(401, { message: 'Invalid Webhook Token', code: 50027 });
      default: return null;
    }
  },
  fail(st) {
    if (st.status === 429) {
      const sec = st.retryAfter === null || st.retryAfter === undefined || !/^\d+(\.\d+)?$/.test(String(st.retryAfter)) ? 0.5 : Number(st.retryAfter);
      return discord.rateLimited(sec, st.reason === 'body-only');
    }
    return json(st.status, { message: st.reason || statusText(st.status), code: 0 }, retryAfterOf(st));
  },
  ok(b, x) {
    if (!x.wait) return empty(204);
    const id = snowflake();
    return json(200, {
      id, type: 0, content: b.content || '', channel_id: '1100000000000000001',
      author: { id: x.webhookId, username: b.username || 'Novu Test Hook', avatar: null, discriminator: '0000', bot: true },
      attachments: [], embeds: b.embeds || [], mentions: [], mention_roles: [], pinned: false, mention_everyone: false,
      tts: b.tts === true, timestamp: new Date().toISOString().replace('Z', '000+00:00'), edited_timestamp: null,
      flags: 0, components: [], webhook_id: x.webhookId,
    }, { 'x-ratelimit-limit': '5', 'x-ratelimit-remaining': '4', 'x-ratelimit-reset-after': '2' });
  },
};

// ---------------------------------------------------------------------------------------------
// Slack incoming webhook: POST /services/T.../B.../<secret>; answers are text/plain words.
// ---------------------------------------------------------------------------------------------
const slackText = (status, word, headers = {}) => text(status, word, { 'x-slack-req-id': uuid(), ...headers });
const slack = {
  name: 'slack',
  route(x) {
    if (!/^\/services\/T[A-Z0-9]+\/B[A-Z0-9]+\/[A-Za-z0-9]+$/.test(x.path)) return ['not a Slack webhook path', slackText(404, 'no_service')];
    return null;
  },
  method: () => slackText(405, 'invalid_method'),
  contentType: () => ['Content-Type is not application/json', slackText(400, 'invalid_payload')],
  badJson: () => slackText(400, 'invalid_payload'),
  validate(b) {
    if (!C.isObj(b)) return ['body is not an object', slackText(400, 'invalid_payload')];
    if (b.text !== undefined && !isStr(b.text)) return ['text is not a string', slackText(400, 'invalid_payload')];
    if (b.blocks !== undefined) {
      if (!Array.isArray(b.blocks) || b.blocks.length > 50 || b.blocks.some((k) => !C.isObj(k) || !nonEmpty(k.type))) {
        return ['blocks must be an array of at most 50 objects with a "type"', slackText(400, 'invalid_blocks')];
      }
    }
    if (!nonEmpty(b.text) && !(Array.isArray(b.blocks) && b.blocks.length)) return ['neither text nor blocks', slackText(400, 'no_text')];
    return null;
  },
  rateLimited: (sec) => slackText(429, 'rate_limited', { 'retry-after': String(Math.ceil(sec)) }),
  state(st) {
    switch (st.kind) {
      case 'deleted': case 'not-found': case 'dead': return slackText(404, 'no_service');
      case 'no-team': return slackText(404, 'no_team');
      case 'channel-not-found': return slackText(404, 'channel_not_found');
      case 'invalid-token': case 'bad': return slackText(403, 'invalid_token');
      case 'archived': return slackText(410, 'channel_is_archived');
      default: return null;
    }
  },
  fail: (st) => slackText(st.status, st.reason || (st.status === 429 ? 'rate_limited' : st.status >= 500 ? 'rollup_error' : 'invalid_payload'), retryAfterOf(st)),
  ok: () => slackText(200, 'ok'),
};

// ---------------------------------------------------------------------------------------------
// MS Teams: Office 365 connector /webhookb2/<group>@<tenant>/IncomingWebhook/<id>/<owner>[/<x>]
// (200 "1") or a Power Automate workflow /workflows/<id>/triggers/manual/paths/invoke?api-version=
// ...&sig=... (202, empty). Either takes {"text"}, a MessageCard or a message with attachments.
// ---------------------------------------------------------------------------------------------
const ADAPTIVE = 'application/vnd.microsoft.card.adaptive';
const azErr = (status, code, message, headers) => json(status, { error: { code, message } }, headers);
function teamsBodyError(b) {
  if (!C.isObj(b)) return 'body is not an object';
  if (b.attachments !== undefined || b.type === 'message') {
    if (b.type !== 'message') return 'a message with attachments needs "type": "message"';
    if (!Array.isArray(b.attachments) || !b.attachments.length) return '"attachments" must be a non-empty array';
    for (const [i, a] of b.attachments.entries()) {
      if (!C.isObj(a) || !nonEmpty(a.contentType) || !C.isObj(a.content)) return `attachments[${i}] needs "contentType" and a "content" object`;
      if (a.contentType === ADAPTIVE) {
        if (a.content.type !== 'AdaptiveCard') return `attachments[${i}].content.type must be "AdaptiveCard"`;
        if (a.content.body !== undefined && !Array.isArray(a.content.body)) return `attachments[${i}].content.body must be an array`;
        if (a.content.version !== undefined && !isStr(a.content.version)) return `attachments[${i}].content.version must be a string`;
      }
    }
    return null;
  }
  if (b['@type'] !== undefined) {
    if (b['@type'] !== 'MessageCard') return '"@type" must be "MessageCard"';
    if (!nonEmpty(b.text) && !nonEmpty(b.summary)) return 'a MessageCard needs "text" or "summary"';
    return null;
  }
  if (!nonEmpty(b.text)) return '"text" must be a non-empty string';
  return null;
}
const msteams = {
  name: 'msteams',
  route(x) {
    if (x.path.startsWith('/webhookb2/')) {
      x.flavor = 'connector';
      if (!/^\/webhookb2\/[^/]+@[^/]+\/IncomingWebhook\/[^/]+\/[^/]+(?:\/[^/]+)?$/.test(x.path)) return ['not a connector webhook path', text(404, 'Not Found')];
      return null;
    }
    x.flavor = 'workflow';
    const m = /^(?:\/powerautomate\/automations\/direct)?\/workflows\/([^/]+)\/triggers\/([^/]+)\/paths\/invoke$/.exec(x.path);
    if (!m) return ['not a workflow trigger path', azErr(404, 'NotFound', 'The requested resource was not found.')];
    x.workflowId = m[1];
    if (!x.query.get('api-version')) return ['no api-version', azErr(400, 'MissingApiVersionParameter', 'The api-version query parameter (?api-version=) is required for all requests.')];
    if (!x.query.get('sig')) return ['no sig', azErr(401, 'DirectApiAuthorizationRequired', 'The request must be authenticated only by Shared Access scheme.')];
    return null;
  },
  method: (x) => (x.flavor === 'connector' ? text(405, 'Method Not Allowed') : azErr(405, 'TriggerRequestMethodNotValid', 'The HTTP method for this request is not valid: expected \'Post\'.')),
  contentType: (x) => ['Content-Type is not application/json', x.flavor === 'connector' ? text(400, 'Bad payload received by generic incoming webhook.')
    : azErr(415, 'UnsupportedMediaType', 'The request content type must be application/json.')],
  badJson: (x) => (x.flavor === 'connector' ? text(400, 'Bad payload received by generic incoming webhook.')
    : azErr(400, 'InvalidRequestContent', 'The request content is not valid JSON.')),
  validate(b, x) {
    const e = teamsBodyError(b);
    if (!e) return null;
    // a real workflow answers 202 and its run fails later; the mock rejects so that a test sees it
    return [e, x.flavor === 'connector' ? text(400, 'Summary or Text is required.') : azErr(400, 'InvalidTemplate', `mock: ${e}`)];
  },
  rateLimited: (sec, x) => msteams.fail({ status: 429, retryAfter: Math.ceil(sec) }, x),
  state(st, x) {
    const conn = x.flavor === 'connector';
    switch (st.kind) {
      case 'deleted': case 'not-found': case 'dead':
        return conn ? text(404, 'Webhook not found.') : azErr(404, 'WorkflowNotFound', `The workflow '${x.workflowId}' could not be found.`);
      case 'archived': return conn ? text(410, 'Gone') : azErr(410, 'WorkflowDisabled', `The workflow '${x.workflowId}' is disabled.`);
      case 'invalid-token': case 'bad':
        return conn ? text(401, 'Unauthorized') : azErr(401, 'DirectApiInvalidAuthorizationSignature', 'The provided authorization signature is not valid.');
      default: return null;
    }
  },
  fail(st, x) {
    const h = retryAfterOf(st);
    if (x.flavor === 'connector') {
      return text(st.status, st.reason || (st.status === 429 ? 'Microsoft Teams endpoint returned HTTP error 429 with ContextId MS-CV=mock.' : statusText(st.status)), h);
    }
    return st.status === 429 ? azErr(429, st.reason || 'WorkflowRequestsThrottled', 'Rate limit is exceeded. Try again later.', h)
      : azErr(st.status, st.reason || 'ServiceUnavailable', statusText(st.status), h);
  },
  ok: (b, x) => (x.flavor === 'connector' ? text(200, '1')
    : empty(202, { 'x-ms-workflow-run-id': `0858${String(++seq).padStart(26, '0')}CU00`, 'x-ms-correlation-id': uuid() })),
};

// ---------------------------------------------------------------------------------------------
// Mattermost: POST /hooks/<26-char id>; 200 "ok" with X-Request-Id.
// ---------------------------------------------------------------------------------------------
const mmErr = (status, id, message, headers = {}) => {
  const rid = mmId();
  return json(status, { id, message, detailed_error: '', request_id: rid, status_code: status }, { 'x-request-id': rid, ...headers });
};
const MM_INVALID = ['web.incoming_webhook.invalid.app_error', 'Invalid webhook.'];
const mattermost = {
  name: 'mattermost',
  route(x) {
    const m = /^\/hooks\/([^/]+)$/.exec(x.path);
    if (!m) return ['not a Mattermost hook path', text(404, '404 page not found', { 'x-request-id': mmId() })];
    if (!/^[a-z0-9]{26}$/.test(m[1])) return ['hook id is not 26 lowercase letters/digits', mmErr(400, ...MM_INVALID)];
    return null;
  },
  method: () => text(405, 'Method Not Allowed', { 'x-request-id': mmId() }),
  contentType: () => ['Content-Type is not application/json', mmErr(400, 'web.incoming_webhook.parse.app_error', 'Unable to parse incoming data.')],
  badJson: () => mmErr(400, 'web.incoming_webhook.parse.app_error', 'Unable to parse incoming data.'),
  validate(b) {
    if (!C.isObj(b)) return ['body is not an object', mmErr(400, 'web.incoming_webhook.parse.app_error', 'Unable to parse incoming data.')];
    for (const k of ['channel', 'username', 'icon_url', 'icon_emoji', 'type']) {
      if (b[k] !== undefined && !nonEmpty(b[k])) return [`${k} must be a non-empty string`, mmErr(400, 'web.incoming_webhook.parse.app_error', 'Unable to parse incoming data.')];
    }
    if (b.props !== undefined && !C.isObj(b.props)) return ['props must be an object', mmErr(400, 'web.incoming_webhook.parse.app_error', 'Unable to parse incoming data.')];
    if (b.text !== undefined && !isStr(b.text)) return ['text is not a string', mmErr(400, 'web.incoming_webhook.parse.app_error', 'Unable to parse incoming data.')];
    if (!nonEmpty(b.text) && !(Array.isArray(b.attachments) && b.attachments.length)) return ['no text', mmErr(400, 'web.incoming_webhook.text.app_error', 'No text specified.')];
    return null;
  },
  rateLimited: (sec) => mattermost.fail({ status: 429, retryAfter: Math.ceil(sec) }),
  state(st) {
    switch (st.kind) {
      case 'deleted': case 'not-found': case 'dead': case 'invalid-token': case 'bad': return mmErr(400, ...MM_INVALID);
      case 'channel-not-found': return mmErr(400, 'web.incoming_webhook.channel.app_error', "Couldn't find the channel.");
      case 'archived': return mmErr(403, 'api.post.create_post.can_not_post_to_deleted.error', 'Can not post to deleted channel.');
      default: return null;
    }
  },
  fail: (st) => (st.status === 429 && !st.reason
    ? text(429, 'limit exceeded', { 'x-request-id': mmId(), ...retryAfterOf(st) })
    : mmErr(st.status, st.reason || 'api.context.mock_failure.app_error', statusText(st.status), retryAfterOf(st))),
  ok: () => text(200, 'ok', { 'x-request-id': mmId() }),
};

// ---------------------------------------------------------------------------------------------
// Novu's generic chat-webhook: POST /chat/<id>, {"content","webhookUrl","channel"?}, signed with
// X-Novu-Signature when chat.secrets has the path.
// ---------------------------------------------------------------------------------------------
const GENERIC_KEYS = ['content', 'webhookUrl', 'channel', 'phoneNumber'];
const generic = {
  name: 'chat-webhook',
  route(x) {
    if (!/^\/chat\/[^/]+$/.test(x.path)) return ['not a chat-webhook path', json(404, { error: 'not found' })];
    return null;
  },
  method: () => json(405, { error: 'POST only' }, { allow: 'POST' }),
  contentType: (x) => ['Content-Type is not application/json', json(415, { error: `Content-Type must be application/json, got "${x.req.headers['content-type'] || ''}"` })],
  auth(x, raw) {
    const secret = x.cfg.secrets[x.path];
    if (!isStr(secret)) {
      x.entry.signature = x.req.headers['x-novu-signature'] === undefined ? 'none' : 'unchecked (no secret configured for the path)';
      return null;
    }
    const e = signatureError(x.req.headers['x-novu-signature'], raw, secret);
    x.entry.signature = e ? 'bad' : 'ok';
    return e ? [e, json(401, { error: e })] : null;
  },
  badJson: (x, e) => json(400, { error: `the body is not JSON: ${e.message}` }),
  validate(b, x) {
    const bad = (m) => [m, json(400, { error: m })];
    if (!C.isObj(b)) return bad('the body must be a JSON object');
    for (const k of C.keysOf(b)) if (!GENERIC_KEYS.includes(k)) return bad(`unexpected key "${k}" (expected ${GENERIC_KEYS.join(', ')})`);
    if (!nonEmpty(b.content)) return bad('"content" must be a non-empty string');
    if (!isStr(b.webhookUrl)) return bad('"webhookUrl" must be a string');
    let u;
    try { u = new URL(b.webhookUrl); } catch { return bad('"webhookUrl" is not a URL'); }
    if (!/^https?:$/.test(u.protocol)) return bad('"webhookUrl" must be http(s)');
    if (u.pathname + u.search !== x.req.url) return bad(`"webhookUrl" (${u.pathname}${u.search}) is not the URL this request was sent to (${x.req.url})`);
    if (b.channel !== undefined && b.channel !== null && !isStr(b.channel)) return bad('"channel" must be a string');
    if (b.phoneNumber !== undefined && b.phoneNumber !== null && !isStr(b.phoneNumber)) return bad('"phoneNumber" must be a string');
    return null;
  },
  rateLimited: (sec) => json(429, { error: 'too many requests' }, { 'retry-after': String(Math.ceil(sec)) }),
  state(st) {
    switch (st.kind) {
      case 'deleted': case 'not-found': return json(404, { error: 'not found' });
      case 'archived': case 'dead': return json(410, { error: 'gone' });
      case 'invalid-token': case 'bad': return json(401, { error: 'unauthorized' });
      default: return null;
    }
  },
  fail: (st) => json(st.status, { error: st.reason || (st.status === 429 ? 'too many requests' : statusText(st.status)) }, retryAfterOf(st)),
  ok: () => json(200, { id: `chat-${String(++seq).padStart(8, '0')}` }),
};

function serviceOf(path) {
  if (/^\/api\/(?:v\d+\/)?webhooks\//.test(path)) return discord;
  if (path.startsWith('/services/')) return slack;
  if (path.startsWith('/webhookb2/') || /^(?:\/powerautomate\/automations\/direct)?\/workflows\//.test(path)) return msteams;
  if (path.startsWith('/hooks/')) return mattermost;
  if (path.startsWith('/chat/')) return generic;
  return null;
}

function create(ctx) {
  const { rec, tokens } = ctx;
  const server = http2.createSecureServer({ ...ctx.tlsOptions(), allowHTTP1: true });
  const conns = { sessions: new Set(), sockets: new Set() };
  C.trackConnections(server, conns);
  const windows = new Map(); // path -> [request times] for chat.rateLimit

  server.on('request', (req, res) => {
    handle(req, res).catch((e) => {
      ctx.log(`chat: internal error ${e.stack}`);
      try { res.writeHead(500); res.end(); } catch { /* gone */ }
    });
  });

  // Seconds until the webhook may send again, or 0 (chat.rateLimit; off when 0).
  function rateLimitWait(cfg, path) {
    if (!(cfg.rateLimit > 0)) return 0;
    const now = Date.now();
    const w = (windows.get(path) || []).filter((t) => now - t < cfg.rateWindowMs);
    windows.set(path, w);
    if (w.length >= cfg.rateLimit) return Math.max(0.001, (cfg.rateWindowMs - (now - w[0])) / 1000);
    w.push(now);
    return 0;
  }

  async function handle(req, res) {
    const cfg = ctx.config.chat;
    const entry = rec.begin('chat', C.compatInfo(req), ctx.config.logLimit);
    const whole = await C.readWholeBody(rec, req, entry, 1 << 20);
    if (!whole) return;  // half a request: not received
    const { buf, over } = whole;
    Object.assign(entry, C.bodyForLog(buf), { bodyBytes: buf.length });
    let url;
    try { url = new URL(req.url, 'https://mock.invalid'); } catch { url = new URL('https://mock.invalid/'); }
    const path = url.pathname;
    // every complete request counts for its webhook (the URL path), whatever is answered
    entry.token = path;
    rec.receive('chat', path, entry);
    const svc = serviceOf(path);
    entry.kind = svc ? svc.name : null;

    const reply = (a) => C.sendCompat(rec, req, res, entry, a.status, a.headers, a.body);
    const reject = ([msg, a]) => { entry.payloadError = msg; return reply(a); };

    if (C.takeNext(cfg, 'proxy502Next')) return reply({ status: 502, body: C.PROXY_502_HTML, headers: { 'content-type': 'text/html' } });
    if (!svc) return reply(text(404, 'Not Found'));
    const x = { cfg, req, entry, path, query: url.searchParams };
    const routeErr = svc.route(x);
    if (routeErr) return reject(routeErr);
    if (x.flavor) entry.flavor = x.flavor;
    if (req.method !== 'POST') return reply(svc.method(x));
    if (over) return reject(['request body too large', text(413, 'Request Entity Too Large')]);
    const ct = String(req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
    if (ct !== 'application/json') return reject(svc.contentType(x));
    if (svc.auth) {
      const authErr = svc.auth(x, buf);
      if (authErr) { entry.authError = authErr[0]; return reply(authErr[1]); }
    }
    let body;
    try { body = C.parseJson(buf.toString('utf8')); } catch (e) { entry.payloadError = `not JSON: ${e.message}`; return reply(svc.badJson(x, e)); }
    const invalid = svc.validate(body, x);
    if (invalid) return reject(invalid);

    const wait = rateLimitWait(cfg, path);
    if (wait) { entry.rateLimited = true; return reply(svc.rateLimited(Math.round(wait * 1000) / 1000, x)); }

    // scripted state of the webhook
    const st = tokens.use('chat', path);
    entry.tokenState = st.spec || 'ok';
    const special = svc.state(st, x);
    if (special) return reply(special);
    switch (st.kind) {
      case 'slow': await C.sleep(st.ms); break;
      case 'reset': case 'drop': return C.abortCompat(rec, req, entry, st.kind);
      case 'fail':
        if (st.status === 502) return reply({ status: 502, body: C.PROXY_502_HTML, headers: { 'content-type': 'text/html', ...retryAfterOf(st) } });
        return reply(svc.fail(st, x));
      case 'redirect':
        return reply({ status: st.status, body: C.REDIRECT_HTML, headers: { 'content-type': 'text/html', location: `https://${req.headers[':authority'] || req.headers.host}${req.url}` } });
      default:
    }

    const fault = st.kind === 'ok' ? C.faultFor(ctx, 'chat', entry, req.httpVersionMajor === 2 ? req.stream : null) : null;
    if (fault === 'held') return;
    if (fault === 'reset' || fault === 'close') return C.abortCompat(rec, req, entry, fault === 'reset' ? 'reset' : 'drop');
    if (fault === 'slow') await C.sleep(ctx.config.faults.slowMs);
    if (C.clientGone(req)) return rec.finish(entry, 'aborted', {}, null);
    const a = svc.ok(body, x);
    if (a.status < 300) rec.accept('chat', path);
    return reply(a);
  }

  return { name: 'chat', server, conns, reset: () => windows.clear() };
}

module.exports = { create, DEFAULTS };
