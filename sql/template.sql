-- template: the Liquid template engine (novu.render, novu._check_template), rendering as
-- LiquidJS does with its default options (test/liquid/ compares the two on thousands of cases)
\set VERBOSITY terse

--
-- Text and output
--
SELECT novu.render('plain text, { single } braces and }} closers stay', '{}');
SELECT novu.render('', '{}');
SELECT novu.render('Hello {{ subscriber.firstName }}!', '{"subscriber": {"firstName": "Ana"}}');
SELECT novu.render('{{payload.orderId}}|{{   payload.orderId   }}', '{"payload": {"orderId": "A-1"}}');
-- values: strings as is (no HTML escaping), numbers as JavaScript prints them (1.50 is 1.5,
-- big numbers are doubles), booleans, null and missing as ''
SELECT novu.render('[{{ s }}] [{{ n }}] [{{ d }}] [{{ neg }}] [{{ big }}] [{{ t }}] [{{ f }}] [{{ z }}] [{{ missing }}] [{{ missing.deeper[0] }}]',
                   '{"s": "<b>&amp;</b>", "n": 42, "d": 1.50, "neg": -0.25, "big": 123456789012345678901234567890, "t": true, "f": false, "z": null}');
-- arrays print their elements one after the other, objects as [object Object] (LiquidJS)
SELECT novu.render('{{ payload }} {{ payload.tags }} {{ payload.empty_obj }} {{ payload.empty_arr }}',
                   '{"payload": {"tags": ["a", 1, null, {"k": [true]}], "empty_obj": {}, "empty_arr": []}}');
-- literals
SELECT novu.render('{{ "double" }} {{ ''single'' }} {{ 7 }} {{ -1 }} {{ 2.5 }} {{ true }} {{ false }} [{{ nil }}] [{{ null }}] [{{ empty }}]', '{}');
-- strings may hold tag-like text
SELECT novu.render('{{ "a }} b %} c {{" }}', '{}');

--
-- Paths
--
SELECT novu.render('{{ payload.items[0].name }} {{ payload.items[1]["name"] }} {{ payload.items[-1][''name''] }} {{ payload.items[-3].name }}',
                   '{"payload": {"items": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}}');
-- out of range indexes, an index on an object is its key, key on an array, key on a scalar
SELECT novu.render('[{{ a[3] }}] [{{ a[-4] }}] [{{ o[0] }}] [{{ a.x }}] [{{ s.x }}] [{{ n.x }}]',
                   '{"a": [1, 2, 3], "o": {"0": "zero"}, "s": "str", "n": 5}');
-- identifiers with hyphens and underscores, quoted keys with spaces and dots, nested indexes
SELECT novu.render('{{ payload.first-name }} {{ payload._x1 }} {{ payload["full name"] }} {{ payload[''a.b''] }} {{ m[1][0] }}',
                   '{"payload": {"first-name": "Ana", "_x1": "u", "full name": "Ana Lee", "a.b": "dot"}, "m": [[1, 2], [3, 4]]}');
-- .size, .first, .last
SELECT novu.render('{{ a.size }} {{ a.first }} {{ a.last }} {{ o.size }} {{ s.size }} [{{ n.size }}] [{{ e.first }}] [{{ e.last }}] {{ e.size }}',
                   '{"a": [10, 20, 30], "o": {"x": 1, "y": 2}, "s": "hello", "n": 12, "e": []}');
-- a real "size" key wins over the count; first/last are not keys of objects
SELECT novu.render('{{ o.size }} [{{ o.first }}] {{ h.first }}', '{"o": {"size": "XL"}, "h": {"first": "F"}}');
SELECT novu.render('{{ a.first.name }} {{ a.last.tags.size }}', '{"a": [{"name": "x"}, {"tags": [1, 2]}]}');

--
-- Filters
--
-- default: for nil, false, "" and []; not for {}, 0, "0" or " "
SELECT novu.render('{{ missing | default: "d" }} {{ z | default: "d" }} {{ f | default: "d" }} {{ es | default: "d" }} {{ ea | default: "d" }} {{ eo | default: "d" }}',
                   '{"z": null, "f": false, "es": "", "ea": [], "eo": {}}');
SELECT novu.render('{{ zero | default: "d" }} {{ szero | default: "d" }} [{{ sp | default: "d" }}] {{ t | default: "d" }} {{ s | default: "d" }}',
                   '{"zero": 0, "szero": "0", "sp": " ", "t": true, "s": "set"}');
-- the default value can be a path, a number or nil; filters chain
SELECT novu.render('{{ subscriber.firstName | default: subscriber.email }} {{ x | default: 3 }} [{{ x | default: nil }}] {{ x | default: "guest" | upcase }}',
                   '{"subscriber": {"email": "a@b.c"}}');
-- upcase, downcase, capitalize (first character up, the rest down), on any value's text
SELECT novu.render('{{ s | upcase }} {{ s | downcase }} {{ s | capitalize }} {{ "HELLO wORLD" | capitalize }} [{{ "" | capitalize }}] {{ " x" | capitalize }}',
                   '{"s": "hELLo World 42"}');
SELECT novu.render('{{ n | upcase }} {{ t | upcase }} [{{ missing | upcase }}] {{ a | upcase }}', '{"n": 1.5, "t": true, "a": ["x"]}');
-- size: UTF-16 units of a string, elements of an array; 0 for others (objects too, as in LiquidJS)
SELECT novu.render('{{ s | size }} {{ a | size }} {{ o | size }} {{ n | size }} {{ missing | size }} {{ "" | size }}',
                   '{"s": "abc", "a": [1, 2], "o": {"k": 1}, "n": 123}');
-- join: " " by default, any separator; elements as JavaScript's join writes them; non-arrays as their text
SELECT novu.render('{{ a | join }}|{{ a | join: ", " }}|{{ a | join: "" }}|{{ mixed | join: "-" }}|{{ one | join: "," }}|{{ e | join: "," }}|{{ s | join: "," }}|{{ missing | join: "," }}|{{ a | join: sep }}',
                   '{"a": ["x", "y", "z"], "mixed": [1, true, null, "s", [1, 2], {"k": "v"}], "one": ["solo"], "e": [], "s": "str", "sep": " / "}');
SELECT novu.render('{{ a | join: ", " | upcase }} {{ a | join: "" | size }} {{ a | size | default: 9 }}', '{"a": ["x", "y"]}');

--
-- Case mapping beyond ASCII: JavaScript's Unicode mappings (ß upcases to SS) in UTF8 databases.  The CASE and the unaligned format keep this
-- file's expected output the same whatever the database encoding.
--
\pset format unaligned
SELECT CASE WHEN getdatabaseencoding() = 'UTF8'
            THEN novu.render('{{ s | upcase }}|{{ s | downcase }}|{{ s | capitalize }}|{{ s.size }}|{{ s | size }}',
                             '{"s": "éLODIE çA ÿ œ straße"}')
            ELSE 'ÉLODIE ÇA Ÿ Œ STRAßE|élodie ça ÿ œ straße|Élodie ça ÿ œ straße|20|20' END AS latin;
SELECT CASE WHEN getdatabaseencoding() = 'UTF8'
            THEN novu.render('{{ g | upcase }}|{{ g | downcase }}|{{ c | upcase }}|{{ c | capitalize }}|{{ v | upcase }}|{{ cjk | upcase }}',
                             '{"g": "Οδυσσεύς", "c": "пРИВЕТ ёж", "v": "tiếng việt", "cjk": "日本 ok"}')
            ELSE 'ΟΔΥΣΣΕΎΣ|οδυσσεύς|ПРИВЕТ ЁЖ|Привет ёж|TIẾNG VIỆT|日本 OK' END AS greek_cyrillic_vietnamese;
SELECT CASE WHEN getdatabaseencoding() = 'UTF8'
            THEN novu.render('{% if s contains "é" %}{{ s | size }} chars{% endif %} {{ a | join: " · " }}', '{"s": "café", "a": ["α", "β"]}')
            ELSE '4 chars α · β' END AS utf8_text;
-- columns in error messages count characters
DO $$
BEGIN
    PERFORM novu.render('é ü {{ x | sha256 }}', '{}');
EXCEPTION WHEN syntax_error THEN
    RAISE NOTICE '%', CASE WHEN getdatabaseencoding() = 'UTF8' THEN SQLERRM
        ELSE 'invalid template: filter "sha256" is not supported at line 1 column 12' END;
END
$$;
\pset format aligned

--
-- if / elsif / else / unless
--
SELECT novu.render('{% if x %}yes{% endif %}|{% if y %}yes{% else %}no{% endif %}', '{"x": 1}');
SELECT novu.render('{% if n > 10 %}big{% elsif n > 5 %}medium{% elsif n > 0 %}small{% else %}none{% endif %}', '{"n": 7}');
SELECT novu.render('{% if n > 10 %}big{% elsif n > 5 %}medium{% elsif n > 0 %}small{% else %}none{% endif %}', '{"n": 0}');
SELECT novu.render('{% unless vip %}regular{% else %}vip{% endunless %}|{% unless vip %}regular{% endunless %}', '{"vip": true}');
SELECT novu.render('{% unless a %}not a{% elsif b %}b{% else %}neither{% endunless %}', '{"a": true, "b": true}');
-- truthiness: only nil (missing or null) and false are false
SELECT novu.render('{% if zero %}0{% endif %}{% if es %}E{% endif %}{% if ea %}A{% endif %}{% if eo %}O{% endif %}{% if f %}F{% endif %}{% if z %}Z{% endif %}{% if missing %}M{% endif %}{% if empty %}e{% endif %}',
                   '{"zero": 0, "es": "", "ea": [], "eo": {}, "f": false, "z": null}');
-- ==, != across types: strict (1 is not "1"); <> is < then >, as LiquidJS reads it
SELECT novu.render('{% if n == 1 %}a{% endif %}{% if n == 1.0 %}b{% endif %}{% if n == "1" %}c{% endif %}{% if s == "1" %}d{% endif %}{% if n != s %}e{% endif %}{% if n <> 2 %}f{% endif %}{% if t == true %}g{% endif %}{% if t == "true" %}h{% endif %}',
                   '{"n": 1, "s": "1", "t": true}');
SELECT novu.render('{% if z == nil %}a{% endif %}{% if missing == nil %}b{% endif %}{% if missing == null %}c{% endif %}{% if f == nil %}d{% endif %}{% if missing != nil %}e{% endif %}{% if z == missing %}f{% endif %}',
                   '{"z": null, "f": false}');
-- arrays compare element by element, objects by identity (the same place in the context)
SELECT novu.render('{% if a == b %}a{% endif %}{% if a == c %}b{% endif %}{% if o == p %}c{% endif %}{% if o == q %}d{% endif %}{% if a != c %}e{% endif %}',
                   '{"a": [1, {"k": "v"}], "b": [1.0, {"k": "v"}], "c": [{"k": "v"}, 1], "o": {"x": 1, "y": [2]}, "p": {"y": [2], "x": 1}, "q": {"x": 1}}');
-- <, >, <=, >=: JavaScript's comparison ("10" > 9 is true; a missing value compares false)
SELECT novu.render('{% if 2 < 10 %}a{% endif %}{% if "2" < "10" %}b{% endif %}{% if "abc" < "abd" %}c{% endif %}{% if "ab" < "abc" %}d{% endif %}{% if n >= 5 %}e{% endif %}{% if n <= 5 %}f{% endif %}{% if n > 5 %}g{% endif %}{% if d < 0.3 %}h{% endif %}{% if -1 < 0 %}i{% endif %}',
                   '{"n": 5, "d": 0.25}');
SELECT novu.render('{% if n < "10" %}a{% endif %}{% if n > "1" %}b{% endif %}{% if missing < 1 %}c{% endif %}{% if missing >= 0 %}d{% endif %}{% if t > f %}e{% endif %}{% if a < b %}f{% endif %}[done]',
                   '{"n": 5, "t": true, "f": false, "a": [1], "b": [2]}');
-- contains: substring of a string (of String(value)), element of an array; never on objects
SELECT novu.render('{% if s contains "ell" %}a{% endif %}{% if s contains "xyz" %}b{% endif %}{% if s contains "" %}c{% endif %}{% if code contains 12 %}d{% endif %}{% if tags contains "vip" %}e{% endif %}{% if tags contains "vi" %}f{% endif %}{% if nums contains 2 %}g{% endif %}{% if nums contains "2" %}h{% endif %}{% if o contains "k" %}i{% endif %}{% if o contains "v" %}j{% endif %}{% if missing contains "x" %}k{% endif %}{% if s contains missing %}l{% endif %}',
                   '{"s": "hello", "code": "A123", "tags": ["new", "vip"], "nums": [1, 2.0, 3], "o": {"k": "v"}}');
-- empty matches "", [] and {} (either side); nil is not empty
SELECT novu.render('{% if es == empty %}a{% endif %}{% if ea == empty %}b{% endif %}{% if eo == empty %}c{% endif %}{% if empty == es %}d{% endif %}{% if s == empty %}e{% endif %}{% if a != empty %}f{% endif %}{% if missing == empty %}g{% endif %}{% if z == empty %}h{% endif %}{% if zero == empty %}i{% endif %}',
                   '{"es": "", "ea": [], "eo": {}, "s": "x", "a": [0], "z": null, "zero": 0}');
-- and / or are evaluated right to left, as in Liquid: a or b and c = a or (b and c)
SELECT novu.render('{% if true or false and false %}T{% else %}F{% endif %}{% if false and true or true %}T{% else %}F{% endif %}{% if true and true and true %}T{% else %}F{% endif %}{% if false or false or true %}T{% else %}F{% endif %}{% if true and false or false and true %}T{% else %}F{% endif %}',
                   '{}');
SELECT novu.render('{% if subscriber.locale == "fr" and payload.total > 100 %}Merci !{% elsif subscriber.locale == "fr" or subscriber.locale == "fr-CA" %}Merci{% else %}Thanks{% endif %}',
                   '{"subscriber": {"locale": "fr-CA"}, "payload": {"total": 150}}');
-- filters inside conditions end the condition (LiquidJS refuses an operator after them): assign first
SELECT novu.render('{% assign n = items | size %}{% if n > 2 %}many{% else %}few{% endif %} {% if name | default: "x" | upcase %}X{% endif %}', '{"items": [1, 2, 3]}');
SELECT novu.render('{% if items | size > 2 %}many{% endif %}', '{"items": [1, 2, 3]}');
-- unless negates the whole condition
SELECT novu.render('{% unless a and b %}not both{% endunless %}', '{"a": true, "b": false}');

--
-- for
--
SELECT novu.render('{% for item in payload.items %}{{ item.name }}={{ item.qty }};{% endfor %}',
                   '{"payload": {"items": [{"name": "tea", "qty": 2}, {"name": "cake", "qty": 1}]}}');
SELECT novu.render('{% for x in xs %}{{ forloop.index }}/{{ forloop.index0 }}/{{ forloop.rindex }}/{{ forloop.rindex0 }}/{{ forloop.length }}/{{ forloop.first }}/{{ forloop.last }}:{{ x }} {% endfor %}',
                   '{"xs": ["a", "b", "c"]}');
SELECT novu.render('{% for t in tags %}{{ t }}{% unless forloop.last %}, {% endunless %}{% endfor %}{% for t in tags %}{% if forloop.first %} [{% endif %}{{ forloop.index }}{% if forloop.last %}]{% endif %}{% endfor %}',
                   '{"tags": ["x", "y", "z"]}');
-- limit and offset (literals, variables, decimals truncate, negatives count from the end, offset first)
SELECT novu.render('{% for x in xs limit: 2 %}{{ x }}{% endfor %}|{% for x in xs offset: 3 %}{{ x }}{% endfor %}|{% for x in xs offset: 1 limit: 2 %}{{ x }}{% endfor %}|{% for x in xs limit: 2 offset: 4 %}{{ x }}{% endfor %}',
                   '{"xs": [1, 2, 3, 4, 5]}');
SELECT novu.render('{% for x in xs limit: n offset: o %}{{ x }}{% endfor %}|{% for x in xs limit: 1.6 %}{{ x }}{% endfor %}|{% for x in xs offset: -2 limit: 1 %}{{ x }}{% endfor %}|{% for x in xs limit: missing %}{{ x }}{% endfor %}|{% for x in xs limit: 99999999999 %}{{ x }}{% endfor %}',
                   '{"xs": [1, 2, 3, 4, 5], "n": 2, "o": 2}');
-- forloop.length counts the iterations after limit and offset
SELECT novu.render('{% for x in xs offset: 1 limit: 3 %}{{ forloop.index }}/{{ forloop.length }}={{ x }} {% endfor %}', '{"xs": [1, 2, 3, 4, 5]}');
-- else: only for an empty collection (limit 0 or offset past the end render nothing); objects
-- iterate [key, value] pairs, a string runs once
SELECT novu.render('{% for x in e %}{{ x }}{% else %}empty{% endfor %}|{% for x in xs limit: 0 %}{{ x }}{% else %}none{% endfor %}|{% for x in xs offset: 9 %}{{ x }}{% else %}past{% endfor %}|{% for x in xs limit: -1 %}{{ x }}{% else %}neg{% endfor %}',
                   '{"e": [], "xs": [1, 2]}');
SELECT novu.render('{% for x in o %}{{ x }}{% else %}object{% endfor %}|{% for x in s %}{{ x }}{% else %}string{% endfor %}|{% for x in n %}{{ x }}{% else %}number{% endfor %}|{% for x in missing %}{{ x }}{% else %}nil{% endfor %}|{% for x in o %}{{ x }}{% endfor %}',
                   '{"o": {"a": 1}, "s": "abc", "n": 3}');
-- nested loops: forloop is the innermost loop's, outer loop variables stay visible
SELECT novu.render('{% for row in rows %}{{ forloop.index }}:{% for c in row.cells %}{{ row.name }}{{ c }}{{ forloop.index }}{% if forloop.last %};{% else %},{% endif %}{% endfor %}{% endfor %}',
                   '{"rows": [{"name": "a", "cells": [1, 2]}, {"name": "b", "cells": [3]}]}');
-- a loop variable shadows a context key of the same name; after the loop the key is back
SELECT novu.render('{% for payload in list %}{{ payload }}{% endfor %}/{{ payload.x }}', '{"payload": {"x": "ctx"}, "list": ["l1", "l2"]}');
-- outside a loop, forloop is an ordinary (here missing) variable; forloop alone prints as JSON
SELECT novu.render('[{{ forloop.index }}] {% for x in xs %}[{{ forloop }}][{{ forloop.nope }}][{{ forloop[0] }}]{% endfor %}', '{"xs": [1]}');
SELECT novu.render('{{ forloop.index }}', '{"forloop": {"index": "from context"}}');
-- loops over nested arrays and arrays of arrays
SELECT novu.render('{% for pair in m %}{{ pair[0] }}{{ pair.last }} {% endfor %}{% for x in m.first %}{{ x }}{% endfor %}', '{"m": [["a", 1], ["b", 2]]}');

--
-- Whitespace control
--
SELECT novu.render(E'<ul>\n  {%- for x in xs %}\n  <li>{{ x }}</li>\n  {%- endfor %}\n</ul>', '{"xs": [1, 2]}');
SELECT novu.render(E'a  \n {{- name -}} \n\t b|{{ name -}}   c|d   {{- name }}|{{ name-}}  e', '{"name": "N"}');
SELECT novu.render(E'Hi\n{%- if vip -%}\n  VIP\n{%- else -%}\n  regular\n{%- endif -%}\n!', '{"vip": true}');
SELECT novu.render(E'Hi\n{% if vip %}\n  VIP\n{% endif %}\n!', '{"vip": true}');
-- "-" inside an identifier is part of it unless it starts a trimming closer
SELECT novu.render('{{ first-name }}|{{ first-name-}} x', '{"first-name": "Ana"}');

--
-- comment and raw
--
SELECT novu.render('a{% comment %} {{ x | nope }} {% if %} {% comment %}inner{% endcomment %}b', '{}');
-- comments do not nest: the first endcomment ends one (LiquidJS), so a second one is an unknown tag
SELECT novu.render('a{% comment %}{% comment %}nested{% endcomment %} still comment {% endcomment %}b', '{}');
SELECT novu.render(E'a \n{%- comment -%} hidden {%- endcomment -%}\n b', '{}');
SELECT novu.render('{% raw %}{{ payload.name }} and {% if x %} stay{% endraw %}|{% raw %}{% endraw %}|{{ x }}', '{"x": 1}');
SELECT novu.render(E'a {%- raw -%}  kept  {% endraw -%} b', '{}');
-- LiquidJS looks for "endraw" right after "{%": "{%- endraw" does not close a raw block
SELECT novu.render(E'a {% raw %} x {%- endraw %} b', '{}');

--
-- _check_template: void when the template parses, a syntax error naming the field otherwise
--
SELECT novu._check_template('Hello {{ subscriber.firstName | default: "there" }}', 'title');
SELECT novu._check_template('no template syntax', 'content');
SELECT novu._check_template('{% for x in payload.items %}{{ x }}{% endfor %}', 'steps[0].content');
SELECT novu._check_template('Hello {{ subscriber.firstName', 'steps[0].title');
SELECT novu._check_template('{% if a %}open', 'steps[1].data.url');

--
-- Parse errors (every one names line and column)
--
-- unclosed delimiters and strings
SELECT novu.render('Hi {{ name', '{}');
SELECT novu.render('Hi {% if x', '{}');
SELECT novu.render('{{ name %}', '{}');
SELECT novu.render('{% if x }}{% endif %}', '{}');
SELECT novu.render('{{ "abc }}', '{}');
SELECT novu.render('{{ x | default: ''abc }}', '{}');
-- unclosed blocks
SELECT novu.render('Hi, {% if x %}', '{}');
SELECT novu.render(E'line one\n  {% unless x %}\n  body', '{}');
SELECT novu.render('{% for x in xs %}{% if x %}{% endif %}', '{}');
SELECT novu.render('{% for x in xs %}{% else %}', '{}');
SELECT novu.render('a {% comment %} never closed', '{}');
SELECT novu.render('a {% comment %}{% comment %}{% endcomment %}', '{}');
SELECT novu.render('a {% raw %} never closed {% endraw', '{}');
-- stray and mismatched block tags
SELECT novu.render('{% endif %}', '{}');
SELECT novu.render('x {% endfor %}', '{}');
SELECT novu.render('{% endunless %}', '{}');
SELECT novu.render('{% endcomment %}', '{}');
SELECT novu.render('{% endraw %}', '{}');
SELECT novu.render('{% else %}', '{}');
SELECT novu.render('{% elsif x %}', '{}');
SELECT novu.render(E'{% if x %}\n{% endfor %}', '{}');
SELECT novu.render('{% unless x %}{% endif %}', '{}');
SELECT novu.render('{% for x in xs %}{% elsif y %}{% endfor %}', '{}');
SELECT novu.render('{% if x %}{% else %}{% else %}{% endif %}', '{}');
SELECT novu.render('{% if x %}{% else %}{% elsif y %}{% endif %}', '{}');
SELECT novu.render('{% for x in xs %}{% else %}{% else %}{% endfor %}', '{}');
SELECT novu.render('{% if x %}{% else if y %}{% endif %}', '{}');
SELECT novu.render('{% if x %}{% endif extra %}', '{}');
SELECT novu.render('{% if x %}{% else y %}{% endif %}', '{}');
-- unknown or missing tag names
SELECT novu.render('{% assign x = 1 %}', '{}');
SELECT novu.render('{% include "header" %}', '{}');
SELECT novu.render('{% %}', '{}');
SELECT novu.render('{% "if" %}', '{}');
-- conditions
SELECT novu.render('{% if %}{% endif %}', '{}');
SELECT novu.render('{% if x %}{% elsif %}{% endif %}', '{}');
SELECT novu.render('{% unless %}{% endunless %}', '{}');
SELECT novu.render('{% if x == %}{% endif %}', '{}');
SELECT novu.render('{% if x and %}{% endif %}', '{}');
SELECT novu.render('{% if x = 1 %}{% endif %}', '{}');
SELECT novu.render('{% if !x %}{% endif %}', '{}');
SELECT novu.render('{% if x y %}{% endif %}', '{}');
SELECT novu.render('{% if (x) %}{% endif %}', '{}');
-- for syntax
SELECT novu.render('{% for %}{% endfor %}', '{}');
SELECT novu.render('{% for x %}{% endfor %}', '{}');
SELECT novu.render('{% for x of xs %}{% endfor %}', '{}');
SELECT novu.render('{% for x in %}{% endfor %}', '{}');
SELECT novu.render('{% for x in "abc" %}{% endfor %}', '{}');
SELECT novu.render('{% for x in (1..3) %}{% endfor %}', '{}');
SELECT novu.render('{% for x in xs reversed %}{% endfor %}', '{}');
SELECT novu.render('{% for x in xs limit 2 %}{% endfor %}', '{}');
SELECT novu.render('{% for x in xs limit: "2" %}{% endfor %}', '{}');
SELECT novu.render('{% for x in xs limit: %}{% endfor %}', '{}');
SELECT novu.render('{% for x in xs | size %}{% endfor %}', '{}');
-- filters
SELECT novu.render('{{ name | escape }}', '{}');
SELECT novu.render('{{ name | }}', '{}');
SELECT novu.render('{{ name | default }}', '{}');
SELECT novu.render('{{ name | default: "a", "b" }}', '{}');
SELECT novu.render('{{ name | upcase: "x" }}', '{}');
SELECT novu.render('{{ name | size: 1 }}', '{}');
SELECT novu.render('{{ name | join: ",", ";" }}', '{}');
SELECT novu.render('{{ name | default: }}', '{}');
SELECT novu.render('{{ name | default: x | upcase }}|{{ name | default: a.b[0] }}', '{"x": "ok"}');
-- bad paths and values
SELECT novu.render('{{ }}', '{}');
SELECT novu.render('{{ payload. }}', '{}');
SELECT novu.render('{{ payload..x }}', '{}');
SELECT novu.render('{{ .x }}', '{}');
SELECT novu.render('{{ payload.0 }}', '{}');
SELECT novu.render('{{ payload[x] }}', '{}');
SELECT novu.render('{{ payload[1.5] }}', '{}');
SELECT novu.render('{{ payload[] }}', '{}');
SELECT novu.render('{{ payload["x" }}', '{}');
SELECT novu.render('{{ payload[0 }}', '{}');
SELECT novu.render('{{ payload[99999999999] }}', '{}');
SELECT novu.render('{{ "abc".size }}', '{}');
SELECT novu.render('{{ a b }}', '{}');
SELECT novu.render('{{ a == b }}', '{}');
SELECT novu.render('{{ 1e3 }}', '{}');
SELECT novu.render('{{ a & b }}', '{}');
SELECT novu.render('{{ a {{ b }}', '{}');
SELECT novu.render('{{ ' || repeat('9', 101) || ' }}', '{}');
-- positions on later lines
SELECT novu.render(E'Dear {{ name }},\n\nyour order:\n  {% for i in items %}{{ i.name | bogus }}{% endfor %}', '{}');
-- nesting: 100 levels are fine, 101 are too deep
SELECT novu.render(repeat('{% if true %}', 100) || 'deep' || repeat('{% endif %}', 100), '{}');
SELECT novu.render(repeat('{% for x in xs %}', 50) || repeat('{% unless false %}', 50) || '.' || repeat('{% endunless %}', 50) || repeat('{% endfor %}', 50), '{"xs": [1]}');
SELECT novu.render(repeat('{% if true %}', 101) || 'deep' || repeat('{% endif %}', 101), '{}');
SELECT novu.render(repeat('{% for x in xs %}', 101) || repeat('{% endfor %}', 101), '{}');

--
-- Render limits
--
-- exactly 1 MB of output is fine, one byte more is not
SELECT length(novu.render('{{ big }}', jsonb_build_object('big', repeat('x', 1048576))));
SELECT novu.render('{{ big }}!', jsonb_build_object('big', repeat('x', 1048576)));
SELECT novu.render('{% for x in xs %}{{ big }}{% endfor %}',
                   jsonb_build_object('xs', (SELECT jsonb_agg(i) FROM generate_series(1, 2000) i), 'big', repeat('x', 1000)));
-- 300 + 300 * 300 = 90300 iterations are fine; 320 + 320 * 320 = 102720 are not
SELECT length(novu.render('{% for x in xs %}{% for y in xs %}{% endfor %}.{% endfor %}',
                          jsonb_build_object('xs', (SELECT jsonb_agg(i) FROM generate_series(1, 300) i))));
SELECT novu.render('{% for x in xs %}{% for y in xs %}{% endfor %}{% endfor %}',
                   jsonb_build_object('xs', (SELECT jsonb_agg(i) FROM generate_series(1, 320) i)));

--
-- Hostile templates (DESIGN 5): parsing takes linear time; a render has a work
-- and a memory budget; statement_timeout stops a parse or a render as it runs
--
-- a loop's values are freed as it goes: 900,000 upcased strings with no output
-- (900 MB kept until the end before) leave this backend's peak memory low
SELECT length(novu.render('{% for x in xs %}{% for y in xs %}' || repeat('{% if "a" | upcase %}{% endif %}', 10) || '{% endfor %}{% endfor %}',
                          jsonb_build_object('xs', (SELECT jsonb_agg(i) FROM generate_series(1, 300) i))));
SELECT coalesce((regexp_match(pg_read_file('/proc/self/status', 0, 100000, true), 'VmHWM:\s+(\d+) kB'))[1]::bigint < 256 * 1024,
                true) AS peak_memory_under_256_mb;
SET statement_timeout = '2s';
-- one value over the memory budget: 100 elements joined by 1 MB
SELECT novu.render('{% if a | join: big | size %}joined{% endif %}',
                   jsonb_build_object('big', repeat('x', 1000000), 'a', (SELECT jsonb_agg(i) FROM generate_series(1, 100) i)));
-- nested loops computing large values (900 MB of upcasing) stop at the work budget
SELECT novu.render('{% for x in xs %}{% for y in xs %}{% if big | upcase %}{% endif %}{% endfor %}{% endfor %}',
                   jsonb_build_object('big', repeat('x', 10000), 'xs', (SELECT jsonb_agg(i) FROM generate_series(1, 300) i)));
-- so do many nodes without a loop (200 MB of upcasing)
SELECT novu.render(repeat('{% if big | upcase %}{% endif %}', 200), jsonb_build_object('big', repeat('x', 1000000)));
-- 250,000 tag openers inside {% raw %}, unclosed tags inside {% raw %}, and
-- 54,000 more tags: templates of up to a megabyte, the longest parsed
SELECT length(novu.render('{% raw %}' || repeat('{%', 250000) || ' %}{% endraw %}', '{}'));
SELECT length(novu.render('{% raw %}' || repeat('{% if x ', 100000) || '%}{% endraw %}{{ x }}', '{"x": "!"}'));
SELECT novu._check_template('{% raw %}' || repeat('{%', 250000) || ' %}{% endraw %}' || repeat('{{ x }}{% if x %}{% endif %}', 18000), 'content');
RESET statement_timeout;
-- a template source over 1 MiB (1,048,576 bytes) is refused before it is parsed
-- (a compiled template takes up to about 65 bytes of memory per source byte)
SELECT length(novu.render(repeat('x', 1048576), '{}'));
SELECT length(novu.render(repeat('x', 1048577), '{}'));
SELECT novu.render(repeat('{{ x }}', 150000), '{}');
SELECT novu._check_template(repeat('{{ x }}', 150000), 'steps[0].content');
SELECT novu._check_template(repeat('{{ x }}', 149796), 'steps[0].content');
-- a parse and a render stop for a cancel as they run, not when they end: with
-- a cancel already pending as it starts (only the engine's own checks can see
-- it there), and for statement_timeout (its input built beforehand)
CREATE FUNCTION pg_temp.canceled_while_running(tpl text, ctx jsonb, cancel_first boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz := clock_timestamp();
BEGIN
    IF cancel_first THEN
        PERFORM pg_cancel_backend(pg_backend_pid()), novu.render(tpl, ctx);
    ELSE
        PERFORM novu.render(tpl, ctx);
    END IF;
    RETURN 'finished';
EXCEPTION WHEN query_canceled THEN
    RETURN CASE WHEN clock_timestamp() - started < interval '1 second'
                THEN 'canceled while running' ELSE 'canceled only after running for over a second' END;
END
$$;
SELECT pg_temp.canceled_while_running('{% raw %}' || repeat('{%', 100000) || ' %}{% endraw %}', '{}', true) AS parse;
CREATE TEMP TABLE big_array AS SELECT jsonb_build_object('a', jsonb_agg(i)) AS ctx FROM generate_series(1, 100000) i;
SET statement_timeout = '50ms';
SELECT pg_temp.canceled_while_running(repeat('{% if a | upcase %}{% endif %}', 200), ctx, false) AS render FROM big_array;
RESET statement_timeout;
DROP TABLE big_array;

--
-- Tags beyond if/for: assign, capture, case, echo, inline comments, break, continue, ranges
--
SELECT novu.render('{% assign name = subscriber.firstName | default: "there" | capitalize %}Hi {{ name }}!', '{"subscriber": {"firstName": "ana"}}');
SELECT novu.render('{% capture greeting %}Hi {{ n }}{% endcapture %}[{{ greeting | upcase }}] {{ greeting.size }}', '{"n": "Bo"}');
-- assigned variables shadow the context; a loop variable shadows them inside the loop
SELECT novu.render('{{ x }}{% assign x = "A" %}{{ x }}{% for x in (1..2) %}{{ x }}{% endfor %}{{ x }}', '{"x": "ctx"}');
SELECT novu.render('{% case p.status %}{% when "paid", "settled" %}Paid{% when "late" or "overdue" %}Late{% else %}Other{% endcase %}', '{"p": {"status": "settled"}}');
SELECT novu.render('{% case p.n %}{% when 1 %}one{% when 2 %}two{% endcase %}|{% case "x" %}{% when "y" %}y{% endcase %}', '{"p": {"n": 2}}');
SELECT novu.render('{% echo "e" | upcase %}{% echo %}{% # a comment %}{%# another %}!', '{}');
SELECT novu.render('{% for i in (1..10) %}{% if i == 3 %}{% continue %}{% endif %}{% if i > 5 %}{% break %}{% endif %}{{ i }}{% endfor %}', '{}');
SELECT novu.render('{% for i in (a..b) %}{{ i }},{% endfor %}|{% for i in (3..1) %}x{% else %}none{% endfor %}', '{"a": 2, "b": "4"}');
SELECT novu.render('{% for i in (1..3) reversed %}{{ i }}{% endfor %} {% for p in o %}{{ p[0] }}{{ p[1] }}{% endfor %}', '{"o": {"a": 1, "b": 2}}');
-- unless with elsif and else
SELECT novu.render('{% unless a %}not a{% elsif b %}b{% else %}neither{% endunless %}', '{"a": true, "b": true}');
-- not, and literal drops
SELECT novu.render('{% if not a %}x{% endif %}{% if s == blank %}b{% endif %}{% if e == empty %}e{% endif %}{% if m == nil %}n{% endif %}', '{"a": false, "s": "  ", "e": []}');

--
-- Filters (LiquidJS's definitions)
--
SELECT novu.render('{{ s | escape }}|{{ s | escape_once }}|{{ "a &amp; b" | escape_once }}|{{ h | strip_html }}|{{ nl | newline_to_br }}|{{ nl | strip_newlines }}', '{"s": "<a href=\"x\">Tom''s & co</a>", "h": "<p>Hi <b>you</b><!-- no --></p><script>x()</script>", "nl": "a\nb\r\nc"}');
SELECT novu.render('{{ u | url_encode }}|{{ "a%20b+c%C3%A9" | url_decode }}', '{"u": "a b&c=é/ü"}');
SELECT novu.render('{{ "ab" | append: "cd" | prepend: ">" }}|{{ "a-b-c" | replace: "-", "+" }}|{{ "a-b-c" | replace_first: "-", "+" }}|{{ "a-b-c" | replace_last: "-", "+" }}|{{ "a-b-c" | remove: "-" }}|{{ "a-b-c" | remove_first: "-" }}|{{ "a-b-c" | remove_last: "-" }}', '{}');
SELECT novu.render('[{{ s | strip }}][{{ s | lstrip }}][{{ s | rstrip }}][{{ "xxaxx" | strip: "x" }}]', '{"s": "  hi  "}');
SELECT novu.render('{{ s | truncate: 8 }}|{{ s | truncate: 8, "…" }}|{{ s | truncate: 50 }}|{{ s | truncatewords: 2 }}|{{ s | truncatewords: 2, "" }}', '{"s": "The quick brown fox"}');
SELECT novu.render('{{ "a,b,,c" | split: "," | size }}|{{ "abc" | split: "" | join: "." }}|{{ "Hello" | slice: 1, 3 }}|{{ "Hello" | slice: -2 }}|{{ a | slice: 1, 2 | join }}', '{"a": [1, 2, 3, 4]}');
SELECT novu.render('{{ a | first }}{{ a | last }}|{{ a | reverse | join }}|{{ a | sort | join }}|{{ w | sort | join }}|{{ w | sort_natural | join }}|{{ a | uniq | join }}|{{ m | compact | join }}|{{ a | concat: w | join }}', '{"a": [3, 1, 3, 2], "w": ["b", "C", "a"], "m": [1, null, 2]}');
SELECT novu.render('{{ items | map: "name" | join }}|{{ items | where: "active" | map: "name" | join }}|{{ items | where: "tier", "gold" | map: "name" | join }}|{{ items | sort: "price" | map: "name" | join }}|{{ items | sum: "price" }}', '{"items": [{"name": "a", "price": 3, "active": true, "tier": "gold"}, {"name": "b", "price": 1, "active": false}, {"name": "c", "price": 2, "active": true, "tier": "gold"}]}');
SELECT novu.render('{{ 5 | plus: 2.5 }} {{ 5 | minus: 7 }} {{ 3 | times: 0.1 }} {{ 7 | divided_by: 2 }} {{ 7 | divided_by: 0 }} {{ -7 | modulo: 3 }} {{ 2.345 | round: 2 }} {{ 2.5 | round }} {{ -1.5 | abs }} {{ 1.2 | ceil }} {{ 1.8 | floor }} {{ 1 | at_least: 3 }} {{ 9 | at_most: 3 }} {{ "4" | plus: "1" }} {{ "x" | plus: 1 }}', '{}');
SELECT novu.render('{{ o | json }}|{{ a | json }}|{{ "q\"" | json }}|{{ missing | json }}', '{"o": {"k": [1, null, "é"]}, "a": [true, 1.5]}');
SELECT novu.render('{{ x | default: "d" }}{{ f | default: "d", allow_false: true }}{{ "v" | no_such_filter | upcase }}', '{"f": false}');

--
-- date: strftime formats; ISO 8601, epoch seconds or "now" as input; UTC unless the
-- subscriber's timezone (or the filter's second argument) says otherwise
--
SELECT novu.render('{{ d | date: "%Y-%m-%d %H:%M:%S %z" }}|{{ d | date: "%a %A %b %B %-d %e %j %I %l %p %P %y %C" }}|{{ d | date }}', '{"d": "2024-03-09T17:06:07Z"}');
SELECT novu.render('{{ 1700000000 | date: "%F %T" }}{{ "1700000000" | date: "%s" }}|{{ "2024-07-04" | date: "%U %W %u %w %q" }}|{{ d | date: "%^B %-m %010Y %3N %%" }}', '{"d": "2024-01-05T00:00:00.123+02:00"}');
SELECT novu.render('{{ d | date: "%H:%M %Z %z" }}|{{ d | date: "%H:%M %Z", "Asia/Tokyo" }}', '{"d": "2024-07-01T23:30:00Z", "subscriber": {"timezone": "America/New_York"}}');
-- an unknown subscriber timezone falls back to UTC; text that is not a date is returned as is
SELECT novu.render('{{ d | date: "%H:%M %Z" }}|{{ "soon" | date: "%Y" }}|{{ missing | date: "%Y" }}', '{"d": "2024-07-01T23:30:00Z", "subscriber": {"timezone": "Mars/Olympus"}}');
SELECT novu.render('{{ "now" | date: "%Y" }}', '{}') = to_char(now() AT TIME ZONE 'UTC', 'YYYY') AS now_is_this_year;

--
-- Errors of the new tags and filters (syntax errors at creation, with line and column)
--
SELECT novu.render('{% assign = 1 %}', '{}');
SELECT novu.render('{% assign x 1 %}', '{}');
SELECT novu.render('{% capture %}x{% endcapture %}', '{}');
SELECT novu.render('{% capture c %}x', '{}');
SELECT novu.render('{% case x %}{% when 1 %}a', '{}');
SELECT novu.render('{% case x %}{% when , %}a{% endcase %}', '{}');
SELECT novu.render('{% for i in (1..3 %}{% endfor %}', '{}');
SELECT novu.render('{% for i in (1.3) %}{% endfor %}', '{}');
SELECT novu.render(E'ok\n{% # fine\n   # still fine\n   not fine %}', '{}');
SELECT novu.render('{{ x | sha256 }}', '{}');
SELECT novu.render('{{ x | base64_decode }}', '{}');
SELECT novu.render('{% include "partial" %}', '{}');
SELECT novu.render('{% cycle "a", "b" %}', '{}');
SELECT novu.render('{% tablerow x in xs %}{% endtablerow %}', '{}');
SELECT novu.render('{% frobnicate %}', '{}');
SELECT novu.render('{{ x | default: "a" "b" }}', '{}');
SELECT novu.render('{{ x | upcase "b" }}', '{}');
SELECT novu.render('{{ x | }} {{ | }}', '{}');
SELECT novu.render('{{ x | ! }}', '{}');
-- many operators in one expression (as LiquidJS: no limit but the template's size)
SELECT novu.render('{% if ' || repeat('not ', 10001) || 'x %}odd{% endif %}|{{ ' || repeat('x == ', 1000) || 'x }}', '{}');
-- render errors: what LiquidJS refuses while rendering
SELECT novu.render('{{ "%E0%A4%A" | url_decode }}', '{}');
SELECT novu.render('{{ "%00" | url_decode }}', '{}');
SELECT novu.render('{{ "a" | append }}', '{}');
SELECT novu.render('{{ "a" | prepend: "b", "c" }}', '{}');
SELECT novu.render('{{ d | date: "%H", "Not/AZone" }}', '{"d": "2024-01-01T00:00:00Z"}');
SELECT novu.render('{% for i in (1..200000) %}{% endfor %}', '{}');
SELECT novu.render('{{ 1 | date: "%1048577Y" }}', '{}');

--
-- Bounds under attack: each of these once crashed the server, held a worker's
-- memory or CPU without end, or ran for seconds to minutes; each now fails
-- fast with its limit, or runs in linear time
--
SET statement_timeout = '5s';
-- values nested in [ ] or ( ) deeper than 100 levels (100,000 overflowed the stack)
SELECT novu.render('{{ ' || repeat('[', 100000) || ' }}', '{}');
SELECT novu.render('{{ ' || repeat('(', 100000) || ' }}', '{}');
SELECT novu.render('{{ x' || repeat('[x', 101) || repeat(']', 101) || ' }}', '{}');
SELECT novu.render('{{ x' || repeat('[x', 99) || repeat(']', 99) || ' | size }}|ok', '{}');
-- replace and join grow their result within the memory budget (1 GB before)
SELECT novu.render('{% capture s %}{% for i in (1..20000) %}xxxxx{% endfor %}{% endcapture %}{{ s | replace: "x", s }}', '{}');
SELECT novu.render('{{ payload.s | replace: "", payload.s }}', jsonb_build_object('payload', jsonb_build_object('s', repeat('y', 40000))));
SELECT novu.render('{% capture s %}{% for i in (1..20000) %}xxxxxxxxxx{% endfor %}{% endcapture %}'
                   '{% assign a = "" | split: "," %}{% for i in (1..200) %}{% assign a = a | push: s %}{% endfor %}{{ a | join: "" | size }}', '{}');
-- a time zone must be a tz database name: POSIX rules were each kept for the
-- life of the process (a worker's memory grew with every distinct one)
SELECT novu.render('{{ 0 | date: "%z", "<A1>0" }}', '{}');
SELECT novu.render('{{ 0 | date: "%z", "ABC5DEF" }}', '{}');
SELECT novu.render('{{ 0 | date: "%z", "posix/Europe/Paris" }}', '{}');
SELECT novu.render('{{ 0 | date: "%H:%M %z", "America/New_York" }}|{{ 0 | date: "%z", "EST5EDT" }}|{{ 0 | date: "%z", "Etc/GMT+5" }}|{{ 0 | date: "%z", "GMT-14" }}|{{ 0 | date: "%z", "asia/kolkata" }}', '{}');
SELECT novu.render('{{ 0 | date: "%z", "Etc/GMT+15" }}', '{}');
-- a subscriber's POSIX timezone is ignored like an unknown one (UTC)
SELECT novu.render('{{ 0 | date: "%H:%M %z" }}', '{"subscriber": {"timezone": "<X9>-9"}}');
SELECT novu.render('{% for i in (1..300) %}{% assign z = "<A" | append: i | append: ">0" %}{{ 0 | date: "%z", z }}{% endfor %}', '{}');
SELECT count(*) AS posix_zones_kept FROM pg_backend_memory_contexts WHERE name = 'Timezones' AND total_bytes > 4000000;
-- substring search is linear: 1 MB haystack, 0.5 MB needle of the same letter
SELECT novu.render('{% capture h %}{% for i in (1..25000) %}aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa{% endfor %}{% endcapture %}'
                   '{% capture n %}{% for i in (1..12500) %}aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa{% endfor %}b{% endcapture %}'
                   '{% if h contains n %}found{% else %}absent{% endif %}|{{ h | replace_last: "ab", "" | size }}|{{ h | remove_first: n | size }}', '{}');
SELECT novu.render('{% capture h %}{% for i in (1..25000) %}aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa{% endfor %}{% endcapture %}'
                   '{% capture n %}{% for i in (1..12500) %}aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa{% endfor %}{% endcapture %}'
                   '{{ h | replace_last: n, "x" | size }}|{{ h | remove_last: n | size }}', '{}');
-- walking a long string is charged by its length (last, size, s[i], slice)
SELECT novu.render('{% for i in (1..100000) %}{{ payload.s | last }}{% endfor %}', jsonb_build_object('payload', jsonb_build_object('s', repeat('a', 200000))));
SELECT novu.render('{% for i in (1..100000) %}{{ payload.s[199999] }}{% endfor %}', jsonb_build_object('payload', jsonb_build_object('s', repeat('a', 200000))));
SELECT novu.render('{% for i in (1..100000) %}{{ payload.s | slice: -1 }}{% endfor %}', jsonb_build_object('payload', jsonb_build_object('s', repeat('a', 200000))));
-- many assigned variables are charged per lookup (quadratic before)
SELECT novu.render(string_agg('{% assign v' || i || ' = 1 %}', ''), '{}') FROM generate_series(1, 40000) i;
SELECT novu.render(string_agg('{% assign v' || i || ' = ' || i || ' %}', '') || '{{ v1 }}+{{ v300 }}', '{}') FROM generate_series(1, 300) i;
-- uniq charges each probe: strings chosen so that their hashes (not seeded)
-- fall in 64 of the 16,384 slots probe in long runs and hit the work limit;
-- as many strings with spread hashes do not
SELECT novu.render('{{ payload.a | uniq | size }}', jsonb_build_object('payload', jsonb_build_object('a',
    (SELECT jsonb_agg('k' || i) FROM generate_series(1, 1300000) i WHERE hashtext('k' || i) & 16383 < 64))));
SELECT novu.render('{{ payload.a | uniq | size }}', jsonb_build_object('payload', jsonb_build_object('a',
    (SELECT jsonb_agg('k' || i) FROM generate_series(1, 5000) i))));
RESET statement_timeout;

--
-- Arguments
--
SELECT novu.render('{{ x }}', '[]');
SELECT novu.render('{{ x }}', '"scalar"');
SELECT novu.render('static', 'null');
SELECT novu.render(NULL, '{}') IS NULL AS null_template, novu.render('x', NULL) IS NULL AS null_context;

-- the hints
\set VERBOSITY default
SELECT novu.render('{% if x %}', '{}');
SELECT novu._check_template('{{ x | base64_encode }}', 'title');
SELECT novu.render('{% for x in xs %}{% for y in xs %}{% endfor %}{% endfor %}',
                   jsonb_build_object('xs', (SELECT jsonb_agg(i) FROM generate_series(1, 320) i)));
SELECT novu.render('{{ x }}', '[1]');
SELECT novu.render('{{ "%zz" | url_decode }}', '{}');
\set VERBOSITY terse

-- the SQLSTATEs: a syntax error 42601, a render limit 54000, a value a filter refuses 22023
CREATE FUNCTION pg_temp.render_state(t text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM novu.render(t, '{}');
    RETURN 'rendered';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
SELECT pg_temp.render_state('{% if x %}') AS syntax,
       pg_temp.render_state('{% for i in (1..200000) %}{% endfor %}') AS range_limit,
       pg_temp.render_state('{% for i in (1..1000) %}{% for j in (1..1000) %}{% endfor %}{% endfor %}') AS loop_limit,
       pg_temp.render_state('{{ "x" | append: "y" }}') AS ok,
       pg_temp.render_state('{{ "%zz" | url_decode }}') AS bad_value,
       pg_temp.render_state('{{ 0 | date: "%z", "Not/AZone" }}') AS bad_zone;
