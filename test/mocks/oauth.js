'use strict';
// Google OAuth2 token endpoint mock: POST /token with a JWT-bearer assertion (RFC 7523) signed
// RS256 by the test service account (PROTOCOLS.md 1.2, 1.3, 6.1). h2 + http/1.1 over TLS.

const crypto = require('crypto');
const http2 = require('http2');
const C = require('./common');

const GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const SCOPES_OK = ['https://www.googleapis.com/auth/firebase.messaging', 'https://www.googleapis.com/auth/cloud-platform'];
const MSG_TIME = 'Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.';

function create(ctx) {
  const { rec, tokens } = ctx;
  const server = http2.createSecureServer({ ...ctx.tlsOptions(), allowHTTP1: true });
  const conns = { sessions: new Set(), sockets: new Set() };
  C.trackConnections(server, conns);

  server.on('request', (req, res) => {
    handle(req, res).catch((e) => {
      ctx.log(`oauth: internal error ${e.stack}`);
      try { res.writeHead(500); res.end(); } catch { /* gone */ }
    });
  });

  async function handle(req, res) {
    const cfg = ctx.config;
    const entry = rec.begin('oauth', C.compatInfo(req), cfg.logLimit);
    const { buf, over } = await C.readBody(req, 1 << 20);
    if (cfg.oauth.delayMs > 0) await C.sleep(cfg.oauth.delayMs);
    const text = buf.toString('utf8');
    entry.bodyText = text;
    entry.body = Object.fromEntries(new URLSearchParams(text));
    const send = (status, body, headers = {}) => {
      C.sendCompat(rec, req, res, entry, status, { 'cache-control': 'no-cache, no-store, max-age=0, must-revalidate', ...headers }, body);
    };
    const err = (status, error, description) => send(status, { error, error_description: description });

    if (C.takeNext(cfg.oauth, 'proxy502Next')) {
      C.sendCompat(rec, req, res, entry, 502, { 'content-type': 'text/html' }, C.PROXY_502_HTML);
      return;
    }
    const path = req.url.split('?')[0];
    if (path !== '/token') return err(404, 'invalid_request', `Not Found: ${path}`);
    if (req.method !== 'POST') return err(405, 'invalid_request', `Method not allowed: ${req.method}`);
    const ct = String(req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
    if (ct !== 'application/x-www-form-urlencoded') {
      return err(400, 'invalid_request', `Content-Type must be application/x-www-form-urlencoded, got "${req.headers['content-type'] || ''}"`);
    }
    if (over) return err(413, 'invalid_request', 'Request body too large');

    const form = new URLSearchParams(text);
    for (const k of ['grant_type', 'assertion']) {
      if (form.getAll(k).length > 1) return err(400, 'invalid_request', `Duplicate parameter: ${k}`);
    }
    const gt = form.get('grant_type');
    if (gt === null) return err(400, 'invalid_request', 'Required parameter is missing: grant_type');
    if (gt !== GRANT_TYPE) return err(400, 'unsupported_grant_type', `Invalid grant_type: ${gt}`);
    const assertion = form.get('assertion');
    if (!assertion) return err(400, 'invalid_request', 'Missing required parameter: assertion');

    const sa = ctx.serviceAccount();
    const jwt = C.decodeJwt(assertion);
    if (jwt.error) return err(400, 'invalid_grant', `Invalid JWT: ${jwt.error}`);
    entry.jwt = { header: jwt.header, claims: jwt.claims };
    const { header, claims } = jwt;
    if (header.alg !== 'RS256') return err(400, 'invalid_grant', `Invalid JWT Signature. (alg must be RS256, got ${JSON.stringify(header.alg)})`);
    if (header.typ !== undefined && header.typ !== 'JWT') return err(400, 'invalid_grant', `Invalid JWT: typ must be "JWT", got ${JSON.stringify(header.typ)}`);
    if (header.kid !== undefined && header.kid !== sa.private_key_id) return err(400, 'invalid_grant', 'Invalid JWT Signature. (unknown kid)');
    let sigOk = false;
    try { sigOk = jwt.signature.length === 256 && crypto.verify('sha256', jwt.signingInput, sa.publicKey, jwt.signature); } catch { sigOk = false; }
    if (!sigOk) return err(400, 'invalid_grant', 'Invalid JWT Signature.');
    if (claims.iss !== sa.client_email) return err(400, 'invalid_grant', 'Invalid email or User ID');
    const audience = cfg.oauth.audience || sa.token_uri;
    if (claims.aud !== audience) return err(400, 'invalid_grant', `Invalid JWT: Failed audience check. The right audience is ${audience}`);
    if (claims.sub !== undefined && claims.sub !== sa.client_email) return err(400, 'invalid_grant', 'Invalid JWT: sub is only for domain-wide delegation');
    const scopes = typeof claims.scope === 'string' ? claims.scope.split(' ').filter(Boolean) : [];
    if (!scopes.some((s) => SCOPES_OK.includes(s))) return err(400, 'invalid_scope', 'Invalid OAuth scope or ID token audience provided.');
    const now = C.nowSec(), skew = cfg.oauth.skew;
    const { iat, exp } = claims;
    if (!Number.isInteger(iat) || !Number.isInteger(exp) || iat > now + skew || exp <= now || exp <= iat || exp - iat > 3600) {
      return err(400, 'invalid_grant', MSG_TIME);
    }

    // Scripted behaviour per service account (token key = client_email).
    const st = tokens.use('oauth', sa.client_email);
    if (st.kind === 'slow') await C.sleep(st.ms);
    else if (st.kind === 'reset' || st.kind === 'drop') { C.abortCompat(rec, req, entry, st.kind); return; }
    else if (st.kind === 'dead') return err(400, 'invalid_grant', 'Invalid grant: account not found');
    else if (st.kind === 'bad') return err(401, 'invalid_client', 'The OAuth client was not found.');
    else if (st.kind === 'fail') {
      const h = st.retryAfter !== null && st.retryAfter !== undefined ? { 'retry-after': String(st.retryAfter) } : {};
      if (st.status === 502) return C.sendCompat(rec, req, res, entry, 502, { 'content-type': 'text/html', ...h }, C.PROXY_502_HTML);
      const code = st.reason || (st.status >= 500 ? 'internal_failure' : st.status === 429 ? 'rate_limit_exceeded' : 'invalid_request');
      return send(st.status, { error: code, error_description: `Scripted failure ${st.status}` }, h);
    }

    if (C.clientGone(req)) return rec.finish(entry, 'aborted', {}, null);
    const token = `ya29.mock.${C.randomToken(32)}`;
    const lifetime = cfg.oauth.tokenLifetime;
    ctx.accessTokens.set(token, { email: sa.client_email, scopes, issuedAt: C.nowMs(), expiresAt: C.nowMs() + lifetime * 1000 });
    rec.accept('oauth', sa.client_email);
    return send(200, { access_token: token, expires_in: lifetime, token_type: 'Bearer' });
  }

  return { name: 'oauth', server, conns };
}

module.exports = { create };
