// test/liquid/ref.js: renders cases with LiquidJS (new Liquid(), default options), the
// reference of the template engine.  Reads JSON lines {id, template, context} on stdin,
// writes {id, out} or {id, error} lines.  Run with TZ=UTC: LiquidJS reads times in the
// server's zone, the engine in UTC.  A subscriber.timezone is passed as LiquidJS's
// timezoneOffset option, the engine's documented equivalent.
'use strict';
const path = require('path');
const readline = require('readline');
const { Liquid } = require(path.join(__dirname, '.npm', 'node_modules', 'liquidjs'));

const plain = new Liquid();
const byZone = new Map();
function engineFor(ctx) {
  const tz = ctx && ctx.subscriber && typeof ctx.subscriber.timezone === 'string' ? ctx.subscriber.timezone : null;
  if (!tz) return plain;
  if (!byZone.has(tz)) byZone.set(tz, new Liquid({ timezoneOffset: tz }));
  return byZone.get(tz);
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  const c = JSON.parse(line);
  const ctx = JSON.parse(c.context);
  let result;
  try {
    // the text as UTF-8 bytes, what a provider receives: a lone surrogate (half of a
    // character split by slice or split) becomes U+FFFD
    const out = engineFor(ctx).parseAndRenderSync(c.template, ctx);
    result = { id: c.id, out: Buffer.from(out, 'utf8').toString('utf8') };
  } catch (e) {
    result = { id: c.id, error: String(e.message).split('\n')[0] };
  }
  process.stdout.write(JSON.stringify(result) + '\n');
});
