// test/liquid/compare.js: compares the engine's renders with LiquidJS's.
//   node compare.js CASES EXPECTED ACTUAL LABEL
// Prints the first differing cases and the agreement rate; exits 1 on any difference.
// An error on both sides (a syntax error, or a render LiquidJS refuses) agrees.
'use strict';
const fs = require('fs');
const [casesFile, expFile, actFile, label] = process.argv.slice(2);
const load = (f) => new Map(fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).map(l => {
  const o = JSON.parse(l);
  return [o.id, o];
}));
const cases = load(casesFile);
const exp = load(expFile);
const act = load(actFile);
let agree = 0;
let errors = 0;
const diffs = [];
for (const [id, c] of cases) {
  const e = exp.get(id);
  const a = act.get(id);
  const same = a && ((e.error !== undefined && a.error !== undefined) ||
    (e.error === undefined && a.error === undefined && e.out === a.out));
  if (same) {
    agree++;
    if (e.error !== undefined) errors++;
  } else diffs.push({ id, template: c.template, context: c.context, liquidjs: e, engine: a || 'missing' });
}
const total = cases.size;
for (const d of diffs.slice(0, 5)) {
  console.log('---- ' + label + ' case ' + d.id);
  console.log('template: ' + JSON.stringify(d.template));
  console.log('context:  ' + d.context);
  console.log('liquidjs: ' + JSON.stringify(d.liquidjs));
  console.log('engine:   ' + JSON.stringify(d.engine));
}
console.log(`${label}: ${agree}/${total} agree with LiquidJS (${(100 * agree / total).toFixed(2)}%; ` +
  `${agree - errors} rendered the same text, ${errors} refused by both)`);
process.exit(diffs.length ? 1 : 0);
