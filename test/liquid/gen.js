// test/liquid/gen.js: a seeded generator of random templates and contexts over the
// language the template engine supports, for the differential test against LiquidJS.
//   node gen.js SEED COUNT > cases.jsonl
// Each line: {"id": n, "template": "...", "context": "<JSON text>"}. The context is
// JSON text (not an object) so both engines parse the same bytes ("1.0", "-0", 1e21).
'use strict';

const seed = Number(process.argv[2] || 1);
const count = Number(process.argv[3] || 5000);

// mulberry32: a small seeded PRNG
let state = seed >>> 0;
function rand() {
  state = (state + 0x6D2B79F5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (n) => Math.floor(rand() * n);
const pick = (a) => a[int(a.length)];
const chance = (p) => rand() < p;

// ---------- contexts ----------

const words = ['alice', 'Bob', 'ÉLODIE', 'ßtraße', 'Ωmega', 'привет', 'İstanbul', 'ǅemal', 'hello world',
  '  padded  ', '', ' ', 'a,b,c', 'x-y-z', '<b>bold</b> & "quoted"', 'it\'s', 'line1\nline2', 'tab\there',
  '😀 smile', 'e\u0301', 'MiXeD CaSe', '42', '3.14', '-7', '0x1F', ' 12 ', 'true', 'null', 'Σίσυφος ΟΔΟΣ',
  'nbsp\u00a0here', '\u3000ideo', 'a&amp;b', '&lt;tag&gt;', 'café', 'ﬁne', 'ǰ', 'ŉ', 'ΐ', 'straße', 'ΑΣ', 'ΑΣ.'];
const numTexts = ['0', '1', '-1', '2', '3', '10', '1.0', '2.50', '-0', '0.1', '0.2', '1e3', '1e21', '1.5e-7',
  '123456789012345678901', '9007199254740993', '-2.5', '3.999', '100', '7', '1e-7', '0.000001'];
const dates = ['2024-01-05T13:04:05Z', '2024-02-29', '2023-12-31T23:59:59.999Z', '2024-07-04T08:00:00+02:00',
  '2024-03-10T01:30:00-05:00', '1700000000', '2024-06-15T12:00:00', '2024-11-03 09:05:00', '1999-12-31T00:00:00Z'];
const zones = ['Europe/Paris', 'America/New_York', 'Asia/Kolkata', 'Asia/Tokyo', 'UTC', 'Australia/Adelaide'];

function jsonString(s) { return JSON.stringify(s); }

// keys in jsonb order (shorter first, then bytewise) so JavaScript's insertion order matches
function sortKeys(keys) {
  return keys.sort((a, b) => Buffer.byteLength(a) - Buffer.byteLength(b) || Buffer.compare(Buffer.from(a), Buffer.from(b)));
}
function objText(entries) {
  const keys = sortKeys(Object.keys(entries));
  return '{' + keys.map(k => jsonString(k) + ':' + entries[k]).join(',') + '}';
}

function scalarText() {
  switch (int(6)) {
    case 0: case 1: return jsonString(pick(words));
    case 2: case 3: return pick(numTexts);
    case 4: return pick(['true', 'false', 'null']);
    default: return jsonString(pick(dates));
  }
}

function contextText() {
  const p = {};
  p.name = jsonString(pick(words));
  p.title = jsonString(pick(words.filter(w => !/\p{Extended_Pictographic}/u.test(w)))); // indexed by code unit
  p.n = pick(numTexts);
  p.m = pick(numTexts);
  p.k = pick(['0', '1', '2', '3', '-1', '2.5', '"2"', 'null']);
  p.s = jsonString(pick(numTexts));
  p.flag = pick(['true', 'false', 'null']);
  p.nil = 'null';
  p.date = jsonString(pick(dates));
  p.d2 = jsonString(pick(dates));
  p.epoch = pick(['1700000000', '0', '1704067200', '86400.5']);
  p.empty = pick(['""', '[]', '{}']);
  p.words = '[' + Array.from({ length: int(5) }, () => jsonString(pick(words))).join(',') + ']';
  p.nums = '[' + Array.from({ length: int(6) }, () => pick(['1', '2', '3', '10', '-1', '2.5', '0', 'null'])).join(',') + ']';
  p.mixed = '[' + Array.from({ length: int(4) }, () => scalarText()).join(',') + ']';
  p.items = '[' + Array.from({ length: int(4) }, () => objText({
    name: jsonString(pick(words)), price: pick(['1', '2.5', '10', '0', '-3', '100']),
    tag: jsonString(pick(['a', 'b', 'c'])), ok: pick(['true', 'false', 'null'])
  })).join(',') + ']';
  p.obj = objText({ a: scalarText(), b: scalarText(), zz: scalarText(), 1: scalarText(), 10: scalarText() });
  p.nested = objText({ deep: objText({ er: scalarText(), list: '[1,[2,3],"x"]' }) });
  p.html = jsonString(pick(['<p>Hi <b>there</b></p>', '<script>x()</script>ok', 'a < b > c', '<!-- c -->t<br/>', '&amp; &lt;', 'plain']));
  p.url = jsonString(pick(['a b&c=d', 'é/ü?x=1', '100%', 'a+b', '~*()\'!']));
  const sub = { firstName: jsonString(pick(words)), lastName: jsonString(pick(words)), email: '"a@b.co"' };
  if (chance(0.3)) sub.timezone = jsonString(pick(zones));
  return objText({ payload: objText(p), subscriber: objText(sub), actor: 'null' });
}

// ---------- templates ----------

const scalarPaths = ['payload.name', 'payload.title', 'payload.n', 'payload.m', 'payload.s', 'payload.flag',
  'payload.nil', 'payload.missing', 'payload.date', 'payload.epoch', 'payload.empty', 'payload.obj.a',
  'payload.obj.b', 'payload.obj["zz"]', 'payload.obj.1', 'payload.nested.deep.er', 'subscriber.firstName',
  'subscriber.lastName', 'payload.words[0]', 'payload.words[-1]', 'payload.nums.first', 'payload.nums.last',
  'payload.items[0].name', 'payload.items.first.price', 'payload.words.size', 'payload.obj.size',
  'payload.name.size', 'payload.html', 'payload.url', 'payload.mixed[1]', 'payload.nested.deep.list[1][0]',
  'payload.title[0]', 'payload["name"]', 'payload.name.length', 'payload.words.length'];
const arrayPaths = ['payload.words', 'payload.nums', 'payload.mixed', 'payload.items', 'payload.obj',
  'payload.name', 'payload.empty', 'payload.missing', '(1..3)', '(0..payload.k)', '(payload.k..2)', 'payload.nested.deep.list'];

function stringLit() {
  const s = pick(['', 'x', 'a b', 'Hello', ',', ' ', '-', 'é', 'ab', '%Y-%m-%d', '%H:%M', 'b', '1', '...', '!', 'ΣΑ', '&']);
  return chance(0.5) ? '"' + s + '"' : "'" + s + "'";
}
function numLit() { return pick(['0', '1', '2', '3', '-1', '1.5', '10', '1.0', '0.5', '-2.25', '100', '7', '+2']); }
function literal() {
  switch (int(6)) {
    case 0: return stringLit();
    case 1: case 2: return numLit();
    case 3: return pick(['true', 'false']);
    case 4: return pick(['nil', 'null', 'empty', 'blank']);
    default: return stringLit();
  }
}
function loopVar(vars) { return vars.length ? pick(vars) : null; }
function value(vars) {
  const r = rand();
  if (r < 0.3) return literal();
  if (r < 0.45 && vars.length) {
    const v = pick(vars);
    return pick([v, v + '.name', v + '.price', v + '[0]', v + '[1]', v + '.size', 'forloop.index', 'forloop.first',
      'forloop.last', 'forloop.rindex', 'forloop.length', 'forloop.index0', 'forloop.rindex0', 'forloop.name']);
  }
  if (r < 0.5) return pick(['assigned', 'captured', 'counter']);
  return pick(scalarPaths);
}

const filterGen = [
  () => 'upcase', () => 'downcase', () => 'capitalize', () => 'size', () => 'strip', () => 'lstrip', () => 'rstrip',
  () => 'escape', () => 'escape_once', () => 'url_encode', () => 'strip_html', () => 'strip_newlines',
  () => 'newline_to_br', () => 'first', () => 'last', () => 'reverse', () => 'sort', () => 'sort_natural',
  () => 'uniq', () => 'compact', () => 'json', () => 'abs', () => 'ceil', () => 'floor',
  () => 'round', () => 'round: ' + pick(['0', '1', '2', '-1']),
  () => 'default: ' + literal(), () => 'default: ' + literal() + ', allow_false: true',
  () => 'join', () => 'join: ' + stringLit(), () => 'split: ' + stringLit(),
  () => 'append: ' + literal(), () => 'prepend: ' + literal(),
  () => 'replace: ' + stringLit() + ', ' + stringLit(), () => 'replace_first: ' + stringLit() + ', ' + stringLit(),
  () => 'remove: ' + stringLit(), () => 'remove_first: ' + stringLit(),
  () => 'truncate: ' + pick(['0', '1', '3', '5', '10', '50']), () => 'truncate: ' + pick(['3', '6']) + ', ' + stringLit(),
  () => 'truncatewords: ' + pick(['0', '1', '2', '3']), () => 'truncatewords: 2, ' + stringLit(),
  () => 'plus: ' + numLit(), () => 'minus: ' + numLit(), () => 'times: ' + numLit(),
  () => 'divided_by: ' + pick(['1', '2', '3', '0', '0.5', '-4']), () => 'modulo: ' + pick(['2', '3', '-3', '0', '1.5']),
  () => 'at_least: ' + numLit(), () => 'at_most: ' + numLit(),
  () => 'slice: ' + pick(['0', '1', '-1', '-2', '2']) + (chance(0.5) ? ', ' + pick(['1', '2', '3', '0']) : ''),
  () => 'map: "name"', () => 'map: "price"', () => 'where: "tag", "a"', () => 'where: "ok"',
  () => 'sort: "price"', () => 'sort_natural: "name"', () => 'concat: payload.nums', () => 'concat: payload.words',
  () => 'url_decode', () => 'push: ' + literal(), () => 'pop', () => 'shift', () => 'unshift: ' + literal(),
  () => 'remove_last: ' + stringLit(), () => 'replace_last: ' + stringLit() + ', ' + stringLit(),
  () => 'sum', () => 'to_integer', () => 'raw', () => 'no_such_filter', () => 'json: 2',
];

function filters(n) {
  let s = '';
  for (let i = 0; i < n; i++) s += ' | ' + pick(filterGen)();
  return s;
}
// the date filter reads what it is given as JavaScript's Date does; text beyond
// ISO 8601 (V8's own fallback formats) is out of scope (README), so dates get dates
const dateFilter = [
  () => 'date: ' + pick(['"%Y-%m-%d"', '"%H:%M:%S %p"', '"%a %b %e %-d %j"', '"%A, %B %d, %Y"', '"%I:%M %P %z %Z"',
    '"%s %L %N %3N %u %w %U %W"', '"%y %C %k %l %q"', '"%^a %#B %_5d %-m %010Y"', '"%c"', '"%x %X"', '"%:z %% %t %n %Q"']),
  () => 'date', () => 'date: "%H:%M %Z", "' + pick(zones) + '"',
];
function dateExpr() {
  return pick(['payload.date', 'payload.epoch', 'payload.d2', '0', '1700000000', '"1700000000"', 'true', 'nil',
    'payload.missing', '"2024-05-06T07:08:09.123+05:30"']) + ' | ' + pick(dateFilter)();
}
function expr(vars) {
  if (chance(0.08)) return dateExpr() + filters(chance(0.3) ? 1 : 0);
  return value(vars) + filters(chance(0.6) ? 1 + int(2) : 0);
}
function cond(vars, depth = 0) {
  const ops = ['==', '!=', '<', '>', '<=', '>=', 'contains'];
  let c;
  const r = rand();
  if (r < 0.2) c = value(vars);
  else if (r < 0.25) c = 'not ' + value(vars);
  else c = value(vars) + ' ' + pick(ops) + ' ' + value(vars);
  if (depth < 2 && chance(0.25)) c += ' ' + pick(['and', 'or']) + ' ' + cond(vars, depth + 1);
  return c;
}

function open(t) { return '{%' + (chance(0.15) ? '-' : '') + ' ' + t + ' ' + (chance(0.15) ? '-' : '') + '%}'; }
function out(e) { return '{{' + (chance(0.15) ? '-' : '') + ' ' + e + ' ' + (chance(0.15) ? '-' : '') + '}}'; }
function text() {
  return pick(['Hello ', ' ', '\n', '  \n  ', 'x', ', ', '!', '\u00a0', ' \u3000 ', 'é ', '\t', '{ }', '%', '-', chance(0.1) ? '} {' : '}']);
}

function block(vars, depth, inLoop) {
  const n = 1 + int(3);
  let s = '';
  for (let i = 0; i < n; i++) s += node(vars, depth, inLoop);
  return s;
}

function node(vars, depth, inLoop) {
  const r = rand();
  if (depth > 3 || r < 0.25) return text();
  if (r < 0.55) return out(expr(vars));
  if (r < 0.63) {
    let s = open('if ' + cond(vars)) + block(vars, depth + 1, inLoop);
    if (chance(0.4)) s += open('elsif ' + cond(vars)) + block(vars, depth + 1, inLoop);
    if (chance(0.5)) s += open('else') + block(vars, depth + 1, inLoop);
    return s + open('endif');
  }
  if (r < 0.67) {
    let s = open('unless ' + cond(vars)) + block(vars, depth + 1, inLoop);
    if (chance(0.4)) s += open('else') + block(vars, depth + 1, inLoop);
    return s + open('endunless');
  }
  if (r < 0.77) {
    const v = pick(['item', 'x', 'w']);
    let mods = '';
    if (chance(0.3)) mods += ' limit: ' + pick(['0', '1', '2', '-1', 'payload.n']);
    if (chance(0.3)) mods += ' offset: ' + pick(['0', '1', '2', '-1', '5']);
    if (chance(0.2)) mods += ' reversed';
    const nv = vars.concat([v]);
    let body = block(nv, depth + 1, true);
    if (chance(0.2)) body += open('if forloop.index == 2') + open(pick(['break', 'continue'])) + open('endif') + out(v);
    let s = open('for ' + v + ' in ' + pick(arrayPaths) + mods) + body;
    if (chance(0.3)) s += open('else') + block(vars, depth + 1, inLoop);
    return s + open('endfor');
  }
  if (r < 0.82) {
    let s = open('case ' + expr(vars));
    const k = 1 + int(3);
    for (let i = 0; i < k; i++) s += open('when ' + literal() + (chance(0.3) ? ', ' + literal() : chance(0.2) ? ' or ' + literal() : '')) + block(vars, depth + 1, inLoop);
    if (chance(0.5)) s += open('else') + block(vars, depth + 1, inLoop);
    return s + open('endcase');
  }
  if (r < 0.87) return open('assign ' + pick(['assigned', 'counter']) + ' = ' + expr(vars));
  if (r < 0.9) return open('capture captured') + block(vars, depth + 1, inLoop) + open('endcapture');
  if (r < 0.92) return open('raw') + pick(['{{ x }}', '{% if %}', 'plain', ' {{- y -}} ']) +
    (chance(0.8) ? '{% endraw' + pick([' ', ' -']) + '%}' : open('endraw'));
  if (r < 0.94) return open('comment') + pick(['{{ x }}', 'hidden', '{% if x %}']) + open('endcomment');
  if (r < 0.95) return open('echo ' + expr(vars));
  if (r < 0.96) return '{% # a note %}';
  if (r < 0.98 && inLoop) return open(pick(['break', 'continue']));
  return out(expr(vars));
}

for (let id = 1; id <= count; id++) {
  let template = '';
  const n = 1 + int(4);
  for (let i = 0; i < n; i++) template += node([], 0, false);
  process.stdout.write(JSON.stringify({ id, template, context: contextText() }) + '\n');
}
