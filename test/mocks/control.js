'use strict';
// Control API of the mock providers: plain HTTP/1.1 + JSON on 127.0.0.1 (see README.md).

const http = require('http');
const http2 = require('http2');
const C = require('./common');

const PROVIDERS = ['fcm', 'apns', 'expo', 'oauth', 'webpush'];
PROVIDERS.push('onesignal', 'webhook', 'chat');
// Config maps whose keys are free (app ids, URL paths); their values are strings (null removes).
const FREE_MAPS = new Set(['onesignal.apps', 'webhook.secrets', 'chat.secrets']);

// Reject config keys that do not exist in the defaults (typos would silently do nothing).
// Keys whose default is null accept any value.
function checkKeys(src, def, path) {
  if (!C.isObj(src)) throw new Error(`${path || 'config'} must be an object`);
  for (const k of Object.keys(src)) {
    if (!Object.prototype.hasOwnProperty.call(def, k)) throw new Error(`unknown config key "${path}${k}"`);
    if (FREE_MAPS.has(`${path}${k}`)) {
      if (!C.isObj(src[k]) || Object.values(src[k]).some((v) => v !== null && typeof v !== 'string')) throw new Error(`config key "${path}${k}" must be an object of strings`);
    } else if (C.isObj(def[k])) checkKeys(src[k], def[k], `${path}${k}.`);
    else if (def[k] !== null && src[k] !== null && typeof src[k] !== typeof def[k]) {
      throw new Error(`config key "${path}${k}" must be of type ${typeof def[k]}`);
    }
  }
}

function create(ctx) {
  const { rec, tokens } = ctx;

  function setTokens(body) {
    const items = Array.isArray(body) ? body : [body];
    const done = [];
    for (const it of items) {
      if (!C.isObj(it)) throw new Error('each item must be an object {provider, token|tokens, state}');
      if (!PROVIDERS.includes(it.provider)) throw new Error(`provider must be one of ${PROVIDERS.join(', ')}`);
      const list = it.tokens !== undefined ? it.tokens : [it.token];
      if (!Array.isArray(list) || !list.length || list.some((t) => typeof t !== 'string' || !t)) throw new Error('token must be a non-empty string (or tokens an array of them)');
      const state = it.state === undefined ? 'ok' : it.state;
      for (const t of list) {
        if (state === 'ok' || state === null) tokens.delete(it.provider, t);
        else tokens.set(it.provider, t, state);
        done.push({ provider: it.provider, token: t, state });
      }
    }
    return done;
  }

  function stats() {
    const out = { providers: {}, accepted: rec.accepted, faults: rec.faults, logged: rec.entries.length, droppedFromLog: rec.dropped };
    for (const p of PROVIDERS) out.providers[p] = rec.stats[p] || { requests: 0, byStatus: {}, events: {} };
    let live = 0;
    const now = C.nowMs();
    for (const t of ctx.accessTokens.values()) if (t.expiresAt > now) live++;
    out.oauthAccessTokens = { issued: ctx.accessTokens.size, live };
    out.expoReceipts = ctx.expoReceipts.size;
    out.connections = {};
    for (const pr of ctx.providers) out.connections[pr.name] = pr.conns.sessions.size + [...pr.conns.sockets].filter((s) => s.alpnProtocol && s.alpnProtocol !== 'h2').length;
    return out;
  }

  // mode: "close" (graceful GOAWAY, in-flight streams finish), "hard" (destroy the sockets),
  // "abandon" (GOAWAY with last-stream-id 0 + {"reason":"Shutdown"}, then destroy: every
  // in-flight stream is unprocessed and must be retried on a new connection), "error"
  // (GOAWAY INTERNAL_ERROR whose last-stream-id says every stream may have been
  // processed, then destroy: their answers are lost; resending one is a duplicate).
  function disconnect(provider, mode) {
    let n = 0;
    const hard = mode !== 'close';
    for (const pr of ctx.providers) {
      if (provider && !pr.name.startsWith(provider)) continue;
      for (const s of pr.conns.sessions) {
        n++;
        try {
          if (mode === 'abandon') {
            s.goaway(http2.constants.NGHTTP2_NO_ERROR, 0, Buffer.from('{"reason":"Shutdown"}'));
            setTimeout(() => { try { s.destroy(); } catch { /* gone */ } }, 50);
          } else if (mode === 'error') {
            s.goaway(http2.constants.NGHTTP2_INTERNAL_ERROR, 2147483647);
            setTimeout(() => { try { s.destroy(); } catch { /* gone */ } }, 50);
          } else if (hard) s.destroy();
          else s.close();
        } catch { /* gone */ }
      }
      for (const s of pr.conns.sockets) {
        if (s.alpnProtocol === 'h2') continue;
        n++;
        try { hard ? C.hardClose(s) : s.end(); } catch { /* gone */ }
      }
    }
    return n;
  }

  // SETTINGS_INITIAL_WINDOW_SIZE on a provider's open HTTP/2 connections: 0 stops every
  // request body at its first byte (a stream's send window), until raised again.
  function setWindow(provider, size) {
    let n = 0;
    for (const pr of ctx.providers) {
      if (provider && !pr.name.startsWith(provider)) continue;
      for (const s of pr.conns.sessions) {
        try { s.settings({ initialWindowSize: size }); n++; } catch { /* closing */ }
      }
    }
    return n;
  }

  async function route(req, url, body) {
    const q = url.searchParams;
    const key = `${req.method} ${url.pathname}`;
    // routes a provider module adds (webpush.js: /webpush/...); null = not theirs
    for (const extra of ctx.controlRoutes || []) { const r = await extra(req.method, url, body); if (r) return r; }
    switch (key) {
      case 'GET /health': return [200, { ready: true, ports: ctx.ports }];
      case 'GET /requests': {
        let list = rec.entries;
        const provider = q.get('provider'), token = q.get('token'), since = q.get('since'), env = q.get('env');
        // connection-level events (refused TLS/ALPN handshakes) only with events=1
        if (q.get('events') !== '1') list = list.filter((e) => !e.event);
        if (provider) list = list.filter((e) => e.provider === provider);
        if (env) list = list.filter((e) => e.env === env);
        if (token) list = list.filter((e) => e.token === token || (Array.isArray(e.tokens) && e.tokens.includes(token)));
        if (since) list = list.filter((e) => e.seq > Number(since));
        if (q.get('limit')) list = list.slice(-Number(q.get('limit')));
        return [200, { count: list.length, dropped: rec.dropped, requests: list }];
      }
      case 'DELETE /requests': rec.clearLog(); return [200, { ok: true }];
      case 'GET /tokens': return [200, { tokens: tokens.list() }];
      case 'POST /tokens': return [200, { ok: true, set: setTokens(body) }];
      case 'DELETE /tokens': {
        const provider = q.get('provider'), token = q.get('token');
        if (provider && token) tokens.delete(provider, token);
        else tokens.clear();
        return [200, { ok: true }];
      }
      case 'GET /accepted': {
        const p = q.get('provider');
        return [200, p ? (rec.accepted[p] || {}) : rec.accepted];
      }
      case 'GET /received': {
        const p = q.get('provider');
        return [200, p ? (rec.received[p] || {}) : rec.received];
      }
      case 'GET /faults': {
        const p = q.get('provider');
        return [200, p ? rec.faultStats(p) : rec.faults];
      }
      case 'GET /config': return [200, ctx.config];
      case 'POST /config': {
        checkKeys(body, ctx.defaults, '');
        const kinds = C.isObj(body.faults) ? body.faults.kinds : undefined;
        if (kinds !== undefined && !(Array.isArray(kinds) && kinds.every((k) => C.FAULT_KINDS.includes(k)))) {
          throw new Error(`faults.kinds must be an array of ${C.FAULT_KINDS.join(', ')}`);
        }
        C.deepMerge(ctx.config, body);
        ctx.applyConfig();
        return [200, ctx.config];
      }
      case 'POST /reset': {
        rec.reset();
        tokens.clear();
        ctx.expoReceipts.clear();
        for (const pr of ctx.providers) if (pr.reset) pr.reset();
        ctx.resetConfig();
        if (body && body.oauthTokens) ctx.accessTokens.clear();
        if (body && body.disconnect) disconnect(null, 'close');
        return [200, { ok: true }];
      }
      case 'GET /stats': return [200, stats()];
      case 'POST /window': {
        const size = Number(q.get('size'));
        if (!Number.isInteger(size) || size < 0 || size > 2147483647) return [400, { error: 'size must be 0 .. 2^31-1' }];
        return [200, { ok: true, connections: setWindow(q.get('provider'), size) }];
      }
      case 'POST /disconnect': {
        const mode = q.get('abandon') === '1' ? 'abandon' : q.get('error') === '1' ? 'error'
          : q.get('hard') === '1' ? 'hard' : 'close';
        return [200, { ok: true, closed: disconnect(q.get('provider'), mode) }];
      }
      case 'POST /oauth/revoke': { const n = ctx.accessTokens.size; ctx.accessTokens.clear(); return [200, { ok: true, revoked: n }]; }
      default: return [404, { error: `no route ${key}` }];
    }
  }

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      let status, out;
      try {
        const url = new URL(req.url, 'http://127.0.0.1');
        const text = Buffer.concat(chunks).toString('utf8');
        let body = null;
        if (text.trim()) {
          try { body = JSON.parse(text); } catch (e) { throw Object.assign(new Error(`body is not JSON: ${e.message}`), { status: 400 }); }
        }
        [status, out] = await route(req, url, body);
      } catch (e) {
        status = e.status || 400;
        out = { error: e.message };
      }
      const payload = JSON.stringify(out);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
      res.end(payload);
    });
  });
  server.keepAliveTimeout = 5000;
  return { name: 'control', server, conns: { sessions: new Set(), sockets: new Set() } };
}

module.exports = { create, PROVIDERS };
