#!/usr/bin/env node
'use strict';
// Mint test JWTs (for the selftest and for end-to-end tests that talk to the mocks directly).
//
//   node jwt.js apns  --key apns-key.p8 [--kid ABC123DEFG] [--iss TEAM123456] [--iat N | --age SECONDS]
//                     [--der] [--alg ES256] [--tamper]
//       ES256 provider token; the signature is raw 64-byte R||S (dsaEncoding ieee-p1363) unless
//       --der (ASN.1 DER, which APNs must reject).
//   node jwt.js oauth --sa fcm-service-account.json [--aud URL] [--scope S] [--iat N] [--exp N]
//                     [--iss EMAIL] [--kid ID | --no-kid] [--alg RS256] [--tamper]
//       RS256 JWT-bearer assertion for the Google token endpoint (aud defaults to token_uri).
// Prints the compact JWS on stdout.

const crypto = require('crypto');
const fs = require('fs');

const [mode, ...rest] = process.argv.slice(2);
const opt = {};
for (let i = 0; i < rest.length; i++) {
  const a = rest[i];
  if (!a.startsWith('--')) throw new Error(`bad argument ${a}`);
  const k = a.slice(2);
  if (['der', 'tamper', 'no-kid'].includes(k)) opt[k] = true;
  else opt[k] = rest[++i];
}
const b64 = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');
const now = Math.floor(Date.now() / 1000);
const int = (v, d) => (v === undefined ? d : Number(v));

let header, claims, key, sign;
if (mode === 'apns') {
  key = crypto.createPrivateKey(fs.readFileSync(opt.key));
  header = { alg: opt.alg || 'ES256', kid: opt.kid || 'ABC123DEFG' };
  claims = { iss: opt.iss || 'TEAM123456', iat: opt.iat !== undefined ? int(opt.iat) : now - int(opt.age, 0) };
  sign = (input) => crypto.sign('sha256', input, { key, dsaEncoding: opt.der ? 'der' : 'ieee-p1363' });
} else if (mode === 'oauth') {
  const sa = JSON.parse(fs.readFileSync(opt.sa, 'utf8'));
  key = crypto.createPrivateKey(sa.private_key);
  header = { alg: opt.alg || 'RS256', typ: 'JWT' };
  if (!opt['no-kid']) header.kid = opt.kid || sa.private_key_id;
  const iat = int(opt.iat, now);
  claims = {
    iss: opt.iss || sa.client_email,
    scope: opt.scope !== undefined ? opt.scope : 'https://www.googleapis.com/auth/firebase.messaging',
    aud: opt.aud || sa.token_uri,
    iat,
    exp: int(opt.exp, iat + 3600),
  };
  sign = (input) => crypto.sign('sha256', input, key);
} else {
  process.stderr.write('usage: jwt.js apns|oauth [options]  (see the header of this file)\n');
  process.exit(2);
}
const input = `${b64(header)}.${b64(claims)}`;
const sig = sign(Buffer.from(input));
if (opt.tamper) sig[sig.length - 1] ^= 0x01;
process.stdout.write(`${input}.${sig.toString('base64url')}\n`);
