#!/usr/bin/env node
'use strict';
// Strict local mock providers for the novu end-to-end tests (see README.md).
//
//   node test/mocks/server.js --certs DIR [--port-base N] [--config FILE.json] [--host 127.0.0.1] [--verbose]
//
// Starts, on 127.0.0.1 only: the control API (plain HTTP), the Google OAuth token endpoint, FCM
// HTTP v1, APNs (production/sandbox x token/certificate auth), Expo, OneSignal, a push-webhook
// receiver and the chat webhooks, then prints ONE line
//   {"ready":true,"ports":{...},...}
// to stdout. Nothing else goes to stdout; --verbose logs each request to stderr. SIGTERM/SIGINT
// close everything and exit 0.
//
// Port layout: base+0 control, +1 oauth, +2 fcm, +3 apns (production, token auth),
// +4 apnsSandbox (token), +5 apnsCert (production, certificate auth), +6 apnsCertSandbox, +7 expo,
// +8 webpush (Web Push services, h2 + http/1.1), +9 webpushH1 (the same, http/1.1 only).
// +10 onesignal, +11 webhook (Novu's push webhook), +12 chat (chat incoming webhooks).
// --port-base 0 picks free ports (read them from the ready line).

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const C = require('./common');

const PORT_NAMES = ['control', 'oauth', 'fcm', 'apns', 'apnsSandbox', 'apnsCert', 'apnsCertSandbox', 'expo', 'webpush', 'webpushH1'];
// Mocks on fixed offsets (+8/+9 are Web Push's): OneSignal, Novu's push webhook, chat webhooks.
const FIXED_PORTS = { onesignal: 10, webhook: 11, chat: 12 };

// Global configuration; POST /config deep-merges into it, POST /reset restores it.
const DEFAULTS = {
  clockOffset: 0,          // seconds added to the mock clock (JWT iat/exp, token expiry, receipts)
  logLimit: 50000,         // request-log entries kept (oldest dropped first); raise/lower for benchmarks
  faults: {                // faults under load (README "Faults under load"; common.js faultFor)
    every: { fcm: 0, apns: 0, expo: 0, webpush: 0, onesignal: 0, webhook: 0, chat: 0 }, // every Nth deliverable request of the provider gets a fault; 0 = off
    kinds: ['goaway', 'reset', 'drop', 'error', 'slow'], // taken in turn
    max: 0,                // faults per provider at most; 0 = no limit
    slowMs: 5000,          // how late a "slow" answer comes (make it longer than the client's timeout)
    quietMs: 50,           // a breaking connection breaks once no stream arrived for this long ...
    holdMaxMs: 1000,       // ... or after this long at the latest
  },
  oauth: {
    tokenLifetime: 3600,   // expires_in of issued access tokens (s); shorten to test refresh
    skew: 60,              // allowed clock skew for assertion iat (s)
    audience: null,        // expected assertion aud; null = the service account's token_uri
    proxy502Next: 0,       // next N requests get a non-JSON 502 from a "proxy"
    delayMs: 0,            // every answer comes this late
  },
  fcm: {
    project: null,         // null = the service account's project_id
    unauthNext: 0,         // next N requests with a VALID access token get 401 UNAUTHENTICATED
    proxy502Next: 0,
    maxConcurrentStreams: 100, // h2 SETTINGS (startup only)
    maxMessageBytes: 4096,
    topicMaxMessageBytes: 2048,
  },
  apns: {
    bundleIds: ['com.novu.test'], // allowed apns-topic bases (token auth)
    keyId: 'ABC123DEFG',
    teamId: 'TEAM123456',
    tokenMaxAge: 3600,     // JWT iat older than this -> 403 ExpiredProviderToken
    futureSkew: 60,        // JWT iat further in the future -> 403 InvalidProviderToken
    tokenUpdateMinInterval: 1200, // a new JWT on a connection whose iat is < this after the previous one's -> 429
    initialStreams: 1,     // SETTINGS_MAX_CONCURRENT_STREAMS of a new token-auth connection (startup only)
    raisedStreams: 1000,   // ... after the first valid JWT; and for certificate connections
    maxPayload: 4096,
    voipMaxPayload: 5120,
    shutdownNext: 0,       // next N otherwise-valid requests: 503 Shutdown + GOAWAY
    proxy502Next: 0,
  },
  expo: {
    accessToken: null,     // non-null: "Authorization: Bearer <accessToken>" required
    project: '@novu/test', // experience id of tokens without a project:<x> state
    maxRecipients: 100,
    maxReceiptIds: 1000,
    maxMessageBytes: 4096,
    malformedToken: 'request', // "request": 400 VALIDATION_ERROR; "ticket": DeviceNotRegistered ticket
    rejectUnknownFields: true,
    gzipResponses: true,   // gzip JSON responses when the client sends accept-encoding: gzip
    rateLimit: 0,          // > 0: recipients per rolling second, else 429 TOO_MANY_REQUESTS
    receiptDelayMs: 0,     // receipts become visible this long after the send
    receiptTtl: 86400,     // receipts disappear after this many seconds
    html200Next: 0,        // next N requests: 200 with an HTML body
    errors200Next: 0,      // next N requests: 200 with {"errors":[...]}
    dropTicketNext: 0,     // next N sends: one ticket fewer than recipients
    proxy502Next: 0,
  },
  webpush: require('./webpush').DEFAULTS, // the Web Push mock (webpush.js)
  ...require('./onesignal').DEFAULTS, ...require('./webhook').DEFAULTS, ...require('./chat').DEFAULTS,
};

function usage(msg) {
  if (msg) process.stderr.write(`server.js: ${msg}\n`);
  process.stderr.write('usage: node server.js --certs DIR [--port-base N] [--config FILE.json] [--host 127.0.0.1] [--verbose]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const o = { host: '127.0.0.1', portBase: null, certs: null, verbose: false, config: {}, ports: {} };
  let fileCfg = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return argv[++i]; };
    if (a === '--certs') o.certs = val();
    else if (a === '--port-base') o.portBase = Number(val());
    else if (a === '--config') fileCfg = val();
    else if (a === '--host') o.host = val();
    else if (a === '--verbose' || a === '-v') o.verbose = true;
    else if (a === '--help' || a === '-h') usage();
    else usage(`unknown argument ${a}`);
  }
  if (fileCfg) {
    // {"certs": DIR, "portBase": N, "ports": {name: port}, "host": ..., "verbose": bool, "config": {...}}
    const j = JSON.parse(fs.readFileSync(fileCfg, 'utf8'));
    if (o.certs === null && j.certs) o.certs = path.resolve(path.dirname(fileCfg), j.certs);
    if (o.portBase === null && j.portBase !== undefined) o.portBase = j.portBase;
    if (j.ports) o.ports = j.ports;
    if (j.host && o.host === '127.0.0.1') o.host = j.host;
    if (j.verbose) o.verbose = true;
    if (j.config) o.config = j.config;
  }
  if (!o.certs) usage('--certs DIR is required');
  if (o.portBase === null) o.portBase = 8000;
  if (!Number.isInteger(o.portBase) || o.portBase < 0 || o.portBase > 65523) usage('bad --port-base');
  return o;
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const dir = args.certs;
  const read = (f) => fs.readFileSync(path.join(dir, f));
  let serverKey, serverCert, apnsCa, apnsP8;
  try {
    serverKey = read('server.key'); serverCert = read('server.pem'); apnsCa = read('apns-ca.pem'); apnsP8 = read('apns-key.p8');
  } catch (e) { usage(`cannot read certificates in ${dir} (run test/certs/make-certs.sh ${dir}): ${e.message}`); }

  const defaults = JSON.parse(JSON.stringify(DEFAULTS));
  try {
    const aj = JSON.parse(read('apns.json'));
    if (aj.keyId) defaults.apns.keyId = aj.keyId;
    if (aj.teamId) defaults.apns.teamId = aj.teamId;
    if (aj.bundleId) defaults.apns.bundleIds = [aj.bundleId];
  } catch { /* optional */ }
  C.deepMerge(defaults, args.config);

  // Service account, re-read when the file changes (make-certs.sh may rewrite token_uri).
  let saCache = null;
  const saPath = path.join(dir, 'fcm-service-account.json');
  function serviceAccount() {
    const st = fs.statSync(saPath);
    if (!saCache || saCache.mtimeMs !== st.mtimeMs || saCache.size !== st.size) {
      const j = JSON.parse(fs.readFileSync(saPath, 'utf8'));
      j.publicKey = crypto.createPublicKey(crypto.createPrivateKey(j.private_key));
      saCache = { mtimeMs: st.mtimeMs, size: st.size, sa: j };
    }
    return saCache.sa;
  }
  try { serviceAccount(); } catch (e) { usage(`bad ${saPath}: ${e.message}`); }
  const apnsPub = crypto.createPublicKey(crypto.createPrivateKey(apnsP8));

  const ctx = {
    defaults,
    config: JSON.parse(JSON.stringify(defaults)),
    rec: new C.Recorder(),
    tokens: new C.TokenRegistry(),
    accessTokens: new Map(),
    expoReceipts: new Map(),
    providers: [],
    ports: {},
    apnsCa,
    apnsPublicKey: () => apnsPub,
    serviceAccount,
    tlsOptions: () => ({ key: serverKey, cert: serverCert, minVersion: 'TLSv1.2' }),
    log: (m) => process.stderr.write(`[mocks] ${m}\n`),
    applyConfig() { C.clock.offsetMs = Math.round((ctx.config.clockOffset || 0) * 1000); },
    resetConfig() { ctx.config = JSON.parse(JSON.stringify(defaults)); ctx.applyConfig(); },
  };
  ctx.applyConfig();
  if (args.verbose) {
    ctx.rec.onFinish = (e) => {
      const r = e.response || {};
      process.stderr.write(`[${e.provider}${e.env ? `/${e.env}` : ''}] #${e.seq} ${e.method || e.event} ${e.path || ''} h${e.httpVersion || '-'} conn=${e.connId ?? '-'} -> ${r.status}${r.body && r.body.reason ? ` ${r.body.reason}` : ''}\n`);
    };
  }

  const mk = {
    control: () => require('./control').create(ctx),
    oauth: () => require('./oauth').create(ctx),
    fcm: () => require('./fcm').create(ctx),
    apns: () => require('./apns').create(ctx, { env: 'production', auth: 'token' }),
    apnsSandbox: () => require('./apns').create(ctx, { env: 'sandbox', auth: 'token' }),
    apnsCert: () => require('./apns').create(ctx, { env: 'production', auth: 'cert' }),
    apnsCertSandbox: () => require('./apns').create(ctx, { env: 'sandbox', auth: 'cert' }),
    expo: () => require('./expo').create(ctx),
    webpush: () => require('./webpush').create(ctx, { portName: 'webpush' }),
    webpushH1: () => require('./webpush').create(ctx, { portName: 'webpushH1' }),
    onesignal: () => require('./onesignal').create(ctx),
    webhook: () => require('./webhook').create(ctx),
    chat: () => require('./chat').create(ctx),
  };

  const listens = PORT_NAMES.concat(Object.keys(FIXED_PORTS)).map((name, i) => {
    const pr = mk[name]();
    pr.portName = name;
    if (name !== 'control') ctx.providers.push(pr);
    const port = args.ports[name] !== undefined ? args.ports[name] : (args.portBase === 0 ? 0 : args.portBase + (FIXED_PORTS[name] ?? i));
    return new Promise((resolve, reject) => {
      pr.server.once('error', (e) => reject(new Error(`${name}: cannot listen on ${args.host}:${port}: ${e.message}`)));
      pr.server.listen(port, args.host, () => { ctx.ports[name] = pr.server.address().port; resolve(pr); });
    });
  });

  let all = [];
  Promise.all(listens).then((prs) => {
    all = prs;
    const h = args.host, p = ctx.ports;
    const sa = serviceAccount();
    const tokenUri = `https://${h}:${p.oauth}/token`;
    if (!ctx.config.oauth.audience && sa.token_uri !== tokenUri && sa.token_uri !== `https://localhost:${p.oauth}/token`) {
      ctx.log(`warning: service account token_uri ${sa.token_uri} is not this OAuth mock (${tokenUri}); rerun make-certs.sh ${dir} ${p.oauth}`);
    }
    const ready = {
      ready: true, pid: process.pid, host: h, certs: path.resolve(dir), ports: p,
      urls: {
        control: `http://${h}:${p.control}`,
        oauthTokenUri: tokenUri,
        fcm: `https://${h}:${p.fcm}`,
        apns: `https://${h}:${p.apns}`, apnsSandbox: `https://${h}:${p.apnsSandbox}`,
        apnsCert: `https://${h}:${p.apnsCert}`, apnsCertSandbox: `https://${h}:${p.apnsCertSandbox}`,
        expo: `https://${h}:${p.expo}`,
        webpush: `https://${h}:${p.webpush}`, webpushH1: `https://${h}:${p.webpushH1}`,
        onesignal: `https://${h}:${p.onesignal}`, webhook: `https://${h}:${p.webhook}`, chat: `https://${h}:${p.chat}`,
      },
    };
    process.stdout.write(`${JSON.stringify(ready)}\n`);
  }).catch((e) => {
    process.stderr.write(`server.js: ${e.message}\n`);
    process.exit(1);
  });

  let stopping = false;
  function stop() {
    if (stopping) return;
    stopping = true;
    const servers = all.length ? all : [];
    for (const pr of servers) {
      try { pr.server.close(); } catch { /* not listening */ }
      for (const s of pr.conns.sessions) { try { s.destroy(); } catch { /* gone */ } }
      for (const s of pr.conns.sockets) { try { s.destroy(); } catch { /* gone */ } }
      if (typeof pr.server.closeAllConnections === 'function') { try { pr.server.closeAllConnections(); } catch { /* ignore */ } }
    }
    setTimeout(() => process.exit(0), 100).unref();
    setImmediate(() => process.exit(0));
  }
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('SIGHUP', stop);
  process.stdout.on('error', () => {}); // reader went away: keep serving
}

main();
