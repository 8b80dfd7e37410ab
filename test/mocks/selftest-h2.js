#!/usr/bin/env node
'use strict';
// HTTP/2 / TLS probes for selftest.sh: things curl cannot show. Prints one JSON line.
//
//   selftest-h2.js settings   PORT CA JWT          SETTINGS_MAX_CONCURRENT_STREAMS before/after a valid JWT
//   selftest-h2.js concurrent PORT CA JWT N        N streams at once on a fresh token connection
//   selftest-h2.js churn      PORT CA JWT1 JWT2    two different JWTs on one connection
//   selftest-h2.js goaway     PORT CA JWT          one request; reports the response and any GOAWAY
//   selftest-h2.js noalpn     PORT CA              TLS without ALPN: is the connection closed?
//   selftest-h2.js certsettings PORT CA CERT KEY   initial SETTINGS on a certificate connection
//   selftest-h2.js burst      PORT CA JWT N [MS]   one request, then N at once (tokens 00..), each
//                                                  outcome: status, rst:<code> or lost; after MS ms
//   selftest-h2.js halfbody   PORT CA PATH BODY    a POST whose whole body goes out without END_STREAM,
//                                                  then RST_STREAM: half a request

const fs = require('fs');
const http2 = require('http2');
const tls = require('tls');

const [cmd, port, caFile, ...args] = process.argv.slice(2);
const ca = fs.readFileSync(caFile);
const url = `https://localhost:${port}`;
const out = (o) => { process.stdout.write(`${JSON.stringify(o)}\n`); process.exit(0); };
setTimeout(() => out({ error: 'timeout' }), 5000).unref();

const HEADERS = (jwt) => ({
  ':method': 'POST', ':path': '/3/device/0123456789abcdef', authorization: `bearer ${jwt}`,
  'apns-topic': 'com.novu.test', 'apns-push-type': 'alert', 'content-type': 'application/json',
});
function push(session, jwt, token) {
  return new Promise((resolve) => {
    const h = HEADERS(jwt);
    if (token) h[':path'] = `/3/device/${token}`;
    const r = session.request(h);
    let status = null, body = '';
    r.on('response', (h) => { status = h[':status']; });
    r.setEncoding('utf8');
    r.on('data', (d) => { body += d; });
    r.on('error', () => {}); // reported on 'close' with the RST code
    r.on('close', () => resolve(status === null ? { error: 'closed', rstCode: r.rstCode, id: r.id } : { status, body, id: r.id }));
    r.end('{"aps":{"alert":"hi"}}');
  });
}

async function main() {
  if (cmd === 'settings') {
    const s = http2.connect(url, { ca });
    const seen = [];
    s.on('remoteSettings', (st) => seen.push(st.maxConcurrentStreams));
    await new Promise((r) => s.once('remoteSettings', r));
    const res = await push(s, args[0]);
    for (let i = 0; i < 50 && seen.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    s.close();
    out({ initial: seen[0], after: seen[seen.length - 1], seen, status: res.status });
  } else if (cmd === 'concurrent') {
    const s = http2.connect(url, { ca });
    const n = Number(args[1] || 3);
    const res = await Promise.all(Array.from({ length: n }, () => push(s, args[0])));
    s.close();
    out({ results: res.map((r) => r.status || `rst:${r.rstCode}`) });
  } else if (cmd === 'churn') {
    const s = http2.connect(url, { ca });
    const a = await push(s, args[0]);
    const b = await push(s, args[1]);
    const c = await push(s, args[0]);
    s.close();
    const s2 = http2.connect(url, { ca });
    const d = await push(s2, args[1]);
    s2.close();
    out({ first: a.status, second: b.status, secondBody: b.body, again: c.status, newConnection: d.status });
  } else if (cmd === 'goaway') {
    const s = http2.connect(url, { ca });
    let goaway = null;
    s.on('goaway', (code, last, data) => { goaway = { code, lastStreamID: last, data: data ? data.toString() : null }; });
    s.on('error', () => {});
    const res = await push(s, args[0]);
    for (let i = 0; i < 50 && !goaway; i++) await new Promise((r) => setTimeout(r, 20));
    out({ status: res.status, body: res.body, goaway });
  } else if (cmd === 'burst') {
    const s = http2.connect(url, { ca });
    let goaway = null;
    s.on('goaway', (code, last) => { goaway = { code, lastStreamID: last }; });
    s.on('error', () => {});
    await push(s, args[0]);
    const n = Number(args[1]);
    const res = await Promise.all(Array.from({ length: n }, (_, i) => push(s, args[0], i.toString(16).padStart(2, '0').repeat(4))));
    const outcome = res.map((r) => (r.status ? String(r.status) : r.rstCode ? `rst:${r.rstCode}` : 'lost'));
    await new Promise((r) => setTimeout(r, Number(args[2] || 0)));
    out({ outcome, ids: res.map((r) => r.id), goaway });
  } else if (cmd === 'halfbody') {
    const s = http2.connect(url, { ca });
    s.on('error', () => {});
    const r = s.request({ ':method': 'POST', ':path': args[0], 'content-type': 'application/json' }, { endStream: false });
    r.on('error', () => {});
    let status = null;
    r.on('response', (h) => { status = h[':status']; });
    r.write(args[1]);
    await new Promise((res) => setTimeout(res, 200));
    // destroy, not close: Http2Stream.close() ends the writable side (END_STREAM) first
    r.destroy(new Error('half a request'));
    await new Promise((res) => setTimeout(res, 200));
    s.close();
    out({ status, canceled: true });
  } else if (cmd === 'noalpn') {
    const sock = tls.connect({ host: '127.0.0.1', port: Number(port), servername: 'localhost', ca });
    let secure = false;
    sock.on('secureConnect', () => { secure = true; });
    sock.on('error', (e) => out({ secure, closed: true, error: e.code }));
    sock.on('close', () => out({ secure, closed: true, alpn: sock.alpnProtocol }));
    setTimeout(() => out({ secure, closed: false }), 2000);
  } else if (cmd === 'certsettings') {
    const s = http2.connect(url, { ca, cert: fs.readFileSync(args[0]), key: fs.readFileSync(args[1]) });
    s.on('error', (e) => out({ error: e.code }));
    s.once('remoteSettings', (st) => { s.close(); out({ initial: st.maxConcurrentStreams }); });
  } else {
    out({ error: `unknown command ${cmd}` });
  }
}
main().catch((e) => out({ error: e.message }));
