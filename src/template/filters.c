/*
 * filters.c
 *		The filters of the template engine, each as LiquidJS defines it
 *		(string, HTML, URL, math, array and misc filters; date is in date.c).
 *
 * A filter LiquidJS does not know passes its input through, as in LiquidJS.
 * A filter LiquidJS has but this engine does not (include-like, hashing,
 * base64...) is refused when the template is parsed, so a workflow never
 * renders differently from Novu without saying so (README).  Every filter is
 * linear in its input; uniq hashes.
 */
#include "postgres.h"

#include <math.h>

#include "common/hashfn.h"
#include "mb/pg_wchar.h"

#include "template/template_int.h"

typedef enum FilterId
{
	F_ESCAPE, F_ESCAPE_ONCE, F_NEWLINE_TO_BR, F_STRIP_HTML,
	F_ABS, F_AT_LEAST, F_AT_MOST, F_CEIL, F_DIVIDED_BY, F_FLOOR, F_MINUS, F_PLUS,
	F_MODULO, F_TIMES, F_ROUND,
	F_URL_DECODE, F_URL_ENCODE,
	F_JOIN, F_LAST, F_FIRST, F_REVERSE, F_SORT, F_SORT_NATURAL, F_SIZE, F_MAP,
	F_COMPACT, F_CONCAT, F_SLICE, F_WHERE, F_REJECT, F_UNIQ, F_PUSH, F_POP, F_SHIFT,
	F_UNSHIFT, F_SUM,
	F_DATE,
	F_APPEND, F_PREPEND, F_LSTRIP, F_DOWNCASE, F_UPCASE, F_REMOVE, F_REMOVE_FIRST,
	F_REMOVE_LAST, F_RSTRIP, F_SPLIT, F_STRIP, F_STRIP_NEWLINES, F_CAPITALIZE,
	F_REPLACE, F_REPLACE_FIRST, F_REPLACE_LAST, F_TRUNCATE, F_TRUNCATEWORDS,
	F_DEFAULT, F_JSON, F_RAW, F_TO_INTEGER
} FilterId;

static const struct
{
	const char *name;
	FilterId	id;
}			filter_names[] = {
	{"escape", F_ESCAPE}, {"xml_escape", F_ESCAPE}, {"escape_once", F_ESCAPE_ONCE},
	{"newline_to_br", F_NEWLINE_TO_BR}, {"strip_html", F_STRIP_HTML},
	{"abs", F_ABS}, {"at_least", F_AT_LEAST}, {"at_most", F_AT_MOST}, {"ceil", F_CEIL},
	{"divided_by", F_DIVIDED_BY}, {"floor", F_FLOOR}, {"minus", F_MINUS}, {"plus", F_PLUS},
	{"modulo", F_MODULO}, {"times", F_TIMES}, {"round", F_ROUND},
	{"url_decode", F_URL_DECODE}, {"url_encode", F_URL_ENCODE},
	{"join", F_JOIN}, {"last", F_LAST}, {"first", F_FIRST}, {"reverse", F_REVERSE},
	{"sort", F_SORT}, {"sort_natural", F_SORT_NATURAL}, {"size", F_SIZE}, {"map", F_MAP},
	{"compact", F_COMPACT}, {"concat", F_CONCAT}, {"slice", F_SLICE}, {"where", F_WHERE},
	{"reject", F_REJECT}, {"uniq", F_UNIQ}, {"push", F_PUSH}, {"pop", F_POP},
	{"shift", F_SHIFT}, {"unshift", F_UNSHIFT}, {"sum", F_SUM},
	{"date", F_DATE},
	{"append", F_APPEND}, {"prepend", F_PREPEND}, {"lstrip", F_LSTRIP},
	{"downcase", F_DOWNCASE}, {"upcase", F_UPCASE}, {"remove", F_REMOVE},
	{"remove_first", F_REMOVE_FIRST}, {"remove_last", F_REMOVE_LAST}, {"rstrip", F_RSTRIP},
	{"split", F_SPLIT}, {"strip", F_STRIP}, {"strip_newlines", F_STRIP_NEWLINES},
	{"capitalize", F_CAPITALIZE}, {"replace", F_REPLACE}, {"replace_first", F_REPLACE_FIRST},
	{"replace_last", F_REPLACE_LAST}, {"truncate", F_TRUNCATE},
	{"truncatewords", F_TRUNCATEWORDS}, {"default", F_DEFAULT}, {"json", F_JSON},
	{"jsonify", F_JSON}, {"raw", F_RAW}, {"to_integer", F_TO_INTEGER},
};

/* LiquidJS filters this engine refuses at parse time */
static const char *const unsupported_filters[] = {
	"cgi_escape", "uri_escape", "slugify", "where_exp", "reject_exp", "group_by",
	"group_by_exp", "has", "has_exp", "find_index", "find_index_exp", "find", "find_exp",
	"sample", "date_to_xmlschema", "date_to_rfc822", "date_to_string",
	"date_to_long_string", "squish", "normalize_whitespace", "number_of_words",
	"array_to_sentence_string", "base64_encode", "base64_decode", "sha256",
	"hmac_sha256", "inspect"
};

/* The id of a filter name; -1 for a name LiquidJS does not know (identity). */
int
tpl_filter_lookup(const char *name, int len, bool *known_unsupported)
{
	int			i;

	*known_unsupported = false;
	for (i = 0; i < lengthof(filter_names); i++)
		if (strlen(filter_names[i].name) == len && memcmp(filter_names[i].name, name, len) == 0)
			return filter_names[i].id;
	for (i = 0; i < lengthof(unsupported_filters); i++)
		if (strlen(unsupported_filters[i]) == len && memcmp(unsupported_filters[i], name, len) == 0)
			*known_unsupported = true;
	return -1;
}

/* ---------- Helpers ---------- */

/* Argument i, or undefined when absent (a JavaScript default applies then). */
static inline TplValue
arg(TplValue *args, int nargs, int i)
{
	return i < nargs ? args[i] : tv_undef();
}

/* stringify(v) as a (str, len) pair. */
static TplValue
S(RenderState *st, TplValue v)
{
	return tv_stringify_value(st, v);
}

/* JavaScript truthiness (0, NaN and "" are falsy too). */
static bool
js_truthy(TplValue v)
{
	v = tv_to_value(v);
	switch (v.kind)
	{
		case TV_UNDEF:
		case TV_NULL:
			return false;
		case TV_BOOL:
			return v.b;
		case TV_NUM:
			return !(v.num == 0 || isnan(v.num));
		case TV_STR:
			return v.len > 0;
		default:
			return true;
	}
}

/* A new string buffer sized for about expected bytes, charged to the budget. */
static void
buf_init(RenderState *st, StringInfo buf, int64 expected)
{
	int			size = expected < 64 ? 64 : expected < 1024 ? (int) expected + 1 : 1024;

	tpl_reserve(st, expected);
	buf->data = palloc(size);
	buf->maxlen = size;
	buf->len = 0;
	buf->cursor = 0;
	buf->data[0] = '\0';
}

/* The buffer as a string value (charged for what it holds). */
static TplValue
buf_value(RenderState *st, StringInfo buf)
{
	tpl_reserve(st, buf->len);
	return tv_str(buf->data, buf->len);
}

/* Append s with every occurrence of from replaced by to (from non-empty); count of matches. */
static int
replace_all(RenderState *st, StringInfo buf, const char *s, int len, const char *from, int flen,
			const char *to, int tlen, int max)
{
	int			pos = 0;
	int			n = 0;

	while (max < 0 || n < max)
	{
		int			at = tv_find(s, len, from, flen, pos);

		if (at < 0)
			break;
		appendBinaryStringInfo(buf, s + pos, at - pos);
		appendBinaryStringInfo(buf, to, tlen);
		/* charged as it grows: a long "to" times many matches hits the budget */
		tpl_reserve(st, (int64) (at - pos) + tlen);
		pos = at + flen;
		n++;
	}
	appendBinaryStringInfo(buf, s + pos, len - pos);
	return n;
}

/* Append s with sep between its UTF-16 units (split('') then join(sep)). */
static void
join_units(RenderState *st, StringInfo buf, const char *s, int len, const char *sep, int seplen)
{
	int			i = 0;
	bool		first = true;

	while (i < len)
	{
		int			clen = utf8_char_len(s + i, len - i);

		/* charged as it grows: a long separator between many units hits the budget */
		tpl_reserve(st, (int64) 2 * seplen + clen);
		if (!first)
			appendBinaryStringInfo(buf, sep, seplen);
		first = false;
		if (clen == 4)
		{
			/* a character outside the BMP is two UTF-16 units */
			TplValue	high;
			TplValue	low;

			split_surrogates(s + i, clen, &high, &low);
			appendBinaryStringInfo(buf, high.str, high.len);
			appendBinaryStringInfo(buf, sep, seplen);
			appendBinaryStringInfo(buf, low.str, low.len);
		}
		else
			appendBinaryStringInfo(buf, s + i, clen);
		i += clen;
	}
}

/* Byte offset after count code points from byte from. */
static int
advance_code_points(const char *s, int len, int from, double count)
{
	int			i = from;
	int			k;

	for (k = 0; k < count && i < len; k++)
		i += utf8_char_len(s + i, len - i);
	return i;
}

/* Number of code points. */
static int
code_point_length(const char *s, int len)
{
	return pg_mbstrlen_with_len(s, len);
}

/* ---------- HTML and URL ---------- */

/* escape: & < > " ' as entities. */
static TplValue
f_escape(RenderState *st, TplValue s)
{
	StringInfoData buf;
	int			i;

	buf_init(st, &buf, s.len);
	for (i = 0; i < s.len; i++)
	{
		switch (s.str[i])
		{
			case '&':
				appendStringInfoString(&buf, "&amp;");
				break;
			case '<':
				appendStringInfoString(&buf, "&lt;");
				break;
			case '>':
				appendStringInfoString(&buf, "&gt;");
				break;
			case '"':
				appendStringInfoString(&buf, "&#34;");
				break;
			case '\'':
				appendStringInfoString(&buf, "&#39;");
				break;
			default:
				appendStringInfoChar(&buf, s.str[i]);
		}
	}
	return buf_value(st, &buf);
}

/* unescape: the five entities escape writes, back to characters. */
static TplValue
f_unescape(RenderState *st, TplValue s)
{
	static const struct
	{
		const char *entity;
		char		c;
	}			ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&#34;", '"'}, {"&#39;", '\''}};
	StringInfoData buf;
	int			i;

	buf_init(st, &buf, s.len);
	for (i = 0; i < s.len; i++)
	{
		int			k;

		if (s.str[i] == '&')
		{
			for (k = 0; k < lengthof(ents); k++)
			{
				int			n = strlen(ents[k].entity);

				if (s.len - i >= n && memcmp(s.str + i, ents[k].entity, n) == 0)
				{
					appendStringInfoChar(&buf, ents[k].c);
					i += n - 1;
					break;
				}
			}
			if (k < lengthof(ents))
				continue;
		}
		appendStringInfoChar(&buf, s.str[i]);
	}
	return buf_value(st, &buf);
}

/* strip_html: drop script/style blocks, comments and tags (LiquidJS's scan). */
static TplValue
f_strip_html(RenderState *st, TplValue s)
{
	static const char *const openers[] = {"<script", "<style", "<!--", "<"};
	static const char *const closers[] = {"</script>", "</style>", "-->", ">"};
	bool		dead[4] = {false, false, false, false};
	StringInfoData buf;
	int			i = 0;

	buf_init(st, &buf, s.len);
	while (i < s.len)
	{
		int			lt = tv_find(s.str, s.len, "<", 1, i);
		int			k;
		bool		skipped = false;

		if (lt < 0)
		{
			appendBinaryStringInfo(&buf, s.str + i, s.len - i);
			return buf_value(st, &buf);
		}
		appendBinaryStringInfo(&buf, s.str + i, lt - i);
		for (k = 0; k < 4; k++)
		{
			int			ol = strlen(openers[k]);
			int			e;

			if (dead[k] || s.len - lt < ol || memcmp(s.str + lt, openers[k], ol) != 0)
				continue;
			e = tv_find(s.str, s.len, closers[k], strlen(closers[k]), lt + ol);
			if (e >= 0)
			{
				i = e + strlen(closers[k]);
				skipped = true;
				break;
			}
			dead[k] = true;
		}
		if (!skipped)
		{
			appendBinaryStringInfo(&buf, s.str + lt, s.len - lt);
			return buf_value(st, &buf);
		}
	}
	return buf_value(st, &buf);
}

/* url_encode: encodeURIComponent, spaces as "+". */
static TplValue
f_url_encode(RenderState *st, TplValue s)
{
	StringInfoData buf;
	int			i;

	buf_init(st, &buf, s.len * 3);
	for (i = 0; i < s.len; i++)
	{
		unsigned char c = (unsigned char) s.str[i];

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			strchr("-_.!~*'()", c) != NULL)
			appendStringInfoChar(&buf, (char) c);
		else if (c == ' ')
			appendStringInfoChar(&buf, '+');
		else
			appendStringInfo(&buf, "%%%02X", c);
	}
	return buf_value(st, &buf);
}

/* url_decode: "+" as space, then decodeURIComponent (malformed input is an error). */
static TplValue
f_url_decode(RenderState *st, TplValue s)
{
	StringInfoData buf;
	int			i;

	buf_init(st, &buf, s.len);
	for (i = 0; i < s.len; i++)
	{
		unsigned char bytes[4];
		int			n;
		int			k;

		if (s.str[i] == '+')
		{
			appendStringInfoChar(&buf, ' ');
			continue;
		}
		if (s.str[i] != '%')
		{
			appendStringInfoChar(&buf, s.str[i]);
			continue;
		}
		/* one %XX-encoded UTF-8 character */
		for (n = 0, k = 0; k < 4; k++)
		{
			int			j = i + 3 * k;

			if (k > 0 && k >= n)
				break;
			if (j + 2 >= s.len + 0 && !(j + 2 < s.len))
				tpl_fail(st, "url_decode: URI malformed");
			if (s.str[j] != '%' || !isxdigit((unsigned char) s.str[j + 1]) ||
				!isxdigit((unsigned char) s.str[j + 2]))
				tpl_fail(st, "url_decode: URI malformed");
			bytes[k] = (unsigned char) strtol(pnstrdup(s.str + j + 1, 2), NULL, 16);
			if (k == 0)
			{
				n = bytes[0] < 0x80 ? 1 : (bytes[0] & 0xE0) == 0xC0 ? 2 :
					(bytes[0] & 0xF0) == 0xE0 ? 3 : (bytes[0] & 0xF8) == 0xF0 ? 4 : 0;
				if (n == 0)
					tpl_fail(st, "url_decode: URI malformed");
			}
			else if ((bytes[k] & 0xC0) != 0x80)
				tpl_fail(st, "url_decode: URI malformed");
		}
		if (n > 1 && !pg_utf8_islegal(bytes, n))
			tpl_fail(st, "url_decode: URI malformed");
		if (n == 1 && bytes[0] == 0)
			tpl_fail(st, "url_decode: a NUL character cannot be rendered");
		appendBinaryStringInfo(&buf, (char *) bytes, n);
		i += 3 * n - 1;
	}
	return buf_value(st, &buf);
}

/* ---------- Math ---------- */

/* JavaScript's Math.round. */
static double
js_round(double x)
{
	double		f = floor(x);

	if (isnan(x) || isinf(x))
		return x;
	return (x - f >= 0.5) ? f + 1 : f;
}

/* Number(`${mantissa}e${exponent + shift}`) of n's JavaScript text. */
static double
shift_decimal(double n, double shift)
{
	StringInfoData buf;
	StringInfoData text;
	char	   *e;
	double		power = 0;

	initStringInfo(&buf);
	tv_format_number(&buf, n);
	e = strchr(buf.data, 'e');
	if (e != NULL)
	{
		*e = '\0';
		power = tv_string_to_number(e + 1, strlen(e + 1));
	}
	initStringInfo(&text);
	appendStringInfo(&text, "%se", buf.data);
	tv_format_number(&text, power + shift);
	return tv_string_to_number(text.data, text.len);
}

/* round(v, digits) as LiquidJS does it (through decimal text). */
static double
liquid_round(RenderState *st, TplValue v, TplValue digits)
{
	double		x = tv_to_number(st, v);
	double		d = tv_to_number(st, digits);
	double		scaled = shift_decimal(fabs(x), d);
	double		r;

	if (!(scaled <= 9007199254740991.0))
		return x;
	r = shift_decimal(js_round(scaled), -d);
	return x < 0 ? -r : r;
}

/* JavaScript's % (fmod, sign of the dividend). */
static double
js_mod(double a, double b)
{
	if (isnan(a) || isnan(b) || isinf(a) || b == 0)
		return NAN;
	if (isinf(b))
		return a;
	return fmod(a, b);
}

/* ---------- Arrays ---------- */

/* A stable merge sort of items by cmp. */
static void
merge_sort(RenderState *st, TplValue *items, TplValue *keys, int n,
		   int (*cmp) (RenderState *, TplValue, TplValue))
{
	TplValue   *ti;
	TplValue   *tk;
	int			width;

	if (n < 2)
		return;
	ti = palloc(n * sizeof(TplValue));
	tk = palloc(n * sizeof(TplValue));
	for (width = 1; width < n; width *= 2)
	{
		int			lo;

		for (lo = 0; lo < n; lo += 2 * width)
		{
			int			mid = Min(lo + width, n);
			int			hi = Min(lo + 2 * width, n);
			int			a = lo;
			int			b = mid;
			int			k = lo;

			while (a < mid || b < hi)
			{
				tpl_spend(st, WORK_PER_STEP);
				if (b >= hi || (a < mid && cmp(st, keys[a], keys[b]) <= 0))
				{
					ti[k] = items[a];
					tk[k++] = keys[a++];
				}
				else
				{
					ti[k] = items[b];
					tk[k++] = keys[b++];
				}
			}
		}
		memcpy(items, ti, n * sizeof(TplValue));
		memcpy(keys, tk, n * sizeof(TplValue));
	}
}

/* LiquidJS's orderedCompare: nil last, then JavaScript's < and >. */
static int
ordered_compare(RenderState *st, TplValue a, TplValue b)
{
	bool		na = tv_is_nil(a);
	bool		nb = tv_is_nil(b);

	if (na && nb)
		return 0;
	if (na)
		return 1;
	if (nb)
		return -1;
	if (tv_compare(st, OP_LT, a, b))
		return -1;
	if (tv_compare(st, OP_GT, a, b))
		return 1;
	return 0;
}

/* LiquidJS's caseInsensitiveCompare: nil last, then lowercased strings. */
static int
natural_compare(RenderState *st, TplValue a, TplValue b)
{
	StringInfoData sa;
	StringInfoData sb;
	StringInfoData la;
	StringInfoData lb;

	if (tv_is_nil(a) && tv_is_nil(b))
		return 0;
	if (tv_is_nil(a))
		return 1;
	if (tv_is_nil(b))
		return -1;
	initStringInfo(&sa);
	initStringInfo(&sb);
	tv_js_string(st, &sa, a);
	tv_js_string(st, &sb, b);
	initStringInfo(&la);
	initStringInfo(&lb);
	tv_change_case(&la, sa.data, sa.len, false);
	tv_change_case(&lb, sb.data, sb.len, false);
	tpl_spend(st, la.len + lb.len);
	if (tv_compare(st, OP_LT, tv_str(la.data, la.len), tv_str(lb.data, lb.len)))
		return -1;
	if (tv_compare(st, OP_GT, tv_str(la.data, la.len), tv_str(lb.data, lb.len)))
		return 1;
	return 0;
}

/* sort / sort_natural, by the values or by a property path. */
static TplValue
f_sort(RenderState *st, TplValue v, TplValue property, bool natural)
{
	TplValue	a = tv_to_array(st, tv_to_value(v));
	TplValue   *items = palloc(Max(a.len, 1) * sizeof(TplValue));
	TplValue   *keys = palloc(Max(a.len, 1) * sizeof(TplValue));
	TplValue	path = {0};
	bool		by_property = js_truthy(property);
	int			i;

	if (by_property)
		path = S(st, property);
	for (i = 0; i < a.len; i++)
	{
		items[i] = a.items[i];
		keys[i] = by_property ? tpl_lookup_path(st, a.items[i], path.str, path.len) : a.items[i];
	}
	merge_sort(st, items, keys, a.len, natural ? natural_compare : ordered_compare);
	return tv_array(items, a.len);
}

/* A hash of a value for uniq (SameValueZero: containers by identity). */
static uint32
value_hash(TplValue v)
{
	switch (v.kind)
	{
		case TV_STR:
			return hash_bytes((const unsigned char *) v.str, v.len) ^ 1;
		case TV_NUM:
			{
				double		d = v.num == 0 ? 0 : v.num;

				if (isnan(d))
					return 7;
				return hash_bytes((const unsigned char *) &d, sizeof(d)) ^ 2;
			}
		case TV_BOOL:
			return v.b ? 3 : 4;
		case TV_ARR:
			return hash_bytes((const unsigned char *) &v.items,
							  sizeof(void *)) ^ 5;
		case TV_OBJ:
			return hash_bytes((const unsigned char *) &v.jc, sizeof(void *)) ^ 6;
		default:
			return v.kind;
	}
}

/* SameValueZero of two values (what a JavaScript Set compares by). */
static bool
same_value_zero(TplValue a, TplValue b)
{
	if (a.kind != b.kind)
		return false;
	switch (a.kind)
	{
		case TV_STR:
			return a.len == b.len && memcmp(a.str, b.str, a.len) == 0;
		case TV_NUM:
			return a.num == b.num || (isnan(a.num) && isnan(b.num));
		case TV_BOOL:
			return a.b == b.b;
		case TV_ARR:
			return a.b == b.b && a.items == b.items && (a.b || a.len == b.len);
		case TV_OBJ:
			return a.jc == b.jc;
		case TV_FORLOOP:
			return a.loop == b.loop;
		default:
			return true;
	}
}

/* uniq: the first of each SameValueZero-equal group, in a hash table. */
static TplValue
f_uniq(RenderState *st, TplValue v)
{
	TplValue	a = tv_to_array(st, v);
	int			size = 16;
	int		   *slots;
	TplValue   *out = palloc(Max(a.len, 1) * sizeof(TplValue));
	int			n = 0;
	int			i;

	while (size < a.len * 2)
		size *= 2;
	tpl_reserve(st, (int64) size * sizeof(int));
	slots = palloc(size * sizeof(int));
	memset(slots, -1, size * sizeof(int));
	for (i = 0; i < a.len; i++)
	{
		uint32		h = value_hash(a.items[i]) & (size - 1);

		tpl_spend(st, WORK_PER_STEP + (a.items[i].kind == TV_STR ? a.items[i].len : 0));
		/* each probe is charged: colliding values (the hash is not seeded) hit the budget */
		while (slots[h] >= 0 && !same_value_zero(out[slots[h]], a.items[i]))
		{
			tpl_spend(st, WORK_PER_STEP);
			h = (h + 1) & (size - 1);
		}
		if (slots[h] < 0)
		{
			slots[h] = n;
			out[n++] = a.items[i];
		}
	}
	return tv_array(out, n);
}

/* where / reject: items whose property equals expected (or is truthy). */
static TplValue
f_where(RenderState *st, TplValue v, TplValue property, TplValue expected, bool include)
{
	TplValue	a = tv_to_array(st, v);
	TplValue	path = S(st, property);
	TplValue   *out = palloc(Max(a.len, 1) * sizeof(TplValue));
	int			n = 0;
	int			i;

	for (i = 0; i < a.len; i++)
	{
		TplValue	value = path.len > 0 ? tpl_lookup_path(st, a.items[i], path.str, path.len) : tv_undef();
		bool		match = expected.kind == TV_UNDEF ? tv_truthy(value) : tv_equals(st, value, expected);

		if (match == include)
			out[n++] = a.items[i];
	}
	return tv_array(out, n);
}

/* slice(v, begin, length = 1) of an array (elements) or a string (code points). */
static TplValue
f_slice(RenderState *st, TplValue v, TplValue beginv, TplValue lengthv)
{
	double		begin = tv_js_number(st, tv_to_value(beginv));
	double		length = lengthv.kind == TV_UNDEF ? 1 : tv_js_number(st, tv_to_value(lengthv));
	bool		is_array;
	int			n;

	v = tv_to_value(v);
	if (tv_is_nil(v))
		return tv_array(NULL, 0);
	is_array = v.kind == TV_ARR;
	if (!is_array)
	{
		v = S(st, v);
		/* counted, then walked to the slice: linear in the string */
		tpl_spend(st, (int64) 2 * v.len);
	}
	n = is_array ? tv_arr_len(v) : code_point_length(v.str, v.len);
	if (begin < 0)
		begin += n;
	if (begin < 0 || length < 0 || isnan(begin) || isnan(length))
		return is_array ? tv_array(NULL, 0) : tv_str("", 0);
	if (is_array)
	{
		int			from = begin > n ? n : (int) begin;
		double		endd = begin + length;
		int			to = endd > n ? n : (int) endd;
		TplValue   *items;
		int			i;

		if (to <= from)
			return tv_array(NULL, 0);
		items = palloc((to - from) * sizeof(TplValue));
		for (i = from; i < to; i++)
			items[i - from] = tv_arr_get(st, v, i);
		return tv_array(items, to - from);
	}
	else
	{
		int			start = advance_code_points(v.str, v.len, 0, begin);
		int			end = advance_code_points(v.str, v.len, start, length);

		return tv_str(v.str + start, end - start);
	}
}

/* ---------- Strings ---------- */

/* The set of code points of chars, as an array of (byte offset, length) searched linearly. */
static bool
in_char_set(const char *chars, int clen, const char *c, int n)
{
	int			i = 0;

	while (i < clen)
	{
		int			l = utf8_char_len(chars + i, clen - i);

		if (l == n && memcmp(chars + i, c, n) == 0)
			return true;
		i += l;
	}
	return false;
}

/* strip, lstrip, rstrip: JavaScript whitespace, or the characters of chars. */
static TplValue
f_strip(RenderState *st, TplValue v, TplValue chars, bool left, bool right)
{
	TplValue	s = S(st, v);
	int			start = 0;
	int			end = s.len;
	bool		set = js_truthy(chars);
	TplValue	cs = {0};

	if (set)
		cs = S(st, chars);
	tpl_spend(st, s.len + (set ? (int64) s.len * cs.len / 16 : 0));
	if (left)
		while (start < end)
		{
			int			l = utf8_char_len(s.str + start, end - start);
			int			sl;

			if (set ? !in_char_set(cs.str, cs.len, s.str + start, l)
				: !js_space_at(s.str + start, end - start, &sl))
				break;
			start += set ? l : sl;
		}
	if (right)
		while (end > start)
		{
			int			k = end - 1;
			int			sl;

			while (k > start && ((unsigned char) s.str[k] & 0xC0) == 0x80)
				k--;
			if (set ? !in_char_set(cs.str, cs.len, s.str + k, end - k)
				: !(js_space_at(s.str + k, end - k, &sl) && k + sl == end))
				break;
			end = k;
		}
	return tv_str(s.str + start, end - start);
}

/* capitalize: the first UTF-16 unit upper, the rest lower. */
static TplValue
f_capitalize(RenderState *st, TplValue v)
{
	TplValue	s = S(st, v);
	StringInfoData buf;
	int			first;

	if (s.len == 0)
		return s;
	buf_init(st, &buf, s.len);
	/* ASCII text: in one pass */
	for (first = 0; first < s.len && !IS_HIGHBIT_SET(s.str[first]); first++)
		;
	if (first == s.len)
	{
		char	   *d = buf.data;
		int			i;

		enlargeStringInfo(&buf, s.len);
		d = buf.data;
		d[0] = pg_ascii_toupper(s.str[0]);
		for (i = 1; i < s.len; i++)
			d[i] = pg_ascii_tolower(s.str[i]);
		d[s.len] = '\0';
		buf.len = s.len;
		return buf_value(st, &buf);
	}
	first = utf8_char_len(s.str, s.len);
	if (first == 4)
		appendBinaryStringInfo(&buf, s.str, 4);	/* half a surrogate pair: unchanged */
	else
		tv_change_case(&buf, s.str, first, true);
	tv_change_case(&buf, s.str + first, s.len - first, false);
	return buf_value(st, &buf);
}

/* truncate(v, length = 50, ellipsis = "..."). */
static TplValue
f_truncate(RenderState *st, TplValue v, TplValue lv, TplValue ov)
{
	TplValue	s = S(st, v);
	double		l = lv.kind == TV_UNDEF ? 50 : tv_js_number(st, tv_to_value(lv));
	TplValue	o = ov.kind == TV_UNDEF ? tv_cstr("...") : S(st, ov);
	StringInfoData buf;
	double		keep;

	tpl_spend(st, s.len);
	if (utf16_length(s.str, s.len) <= l ||
		advance_code_points(s.str, s.len, 0, l) >= s.len)
		return v;
	keep = l - code_point_length(o.str, o.len);
	buf_init(st, &buf, s.len + o.len);
	appendBinaryStringInfo(&buf, s.str, advance_code_points(s.str, s.len, 0, keep > 0 ? keep : 0));
	appendBinaryStringInfo(&buf, o.str, o.len);
	return buf_value(st, &buf);
}

/* truncatewords(v, words = 15, ellipsis = "..."). */
static TplValue
f_truncatewords(RenderState *st, TplValue v, TplValue wv, TplValue ov)
{
	TplValue	s = S(st, v);
	double		words = wv.kind == TV_UNDEF ? 15 : tv_js_number(st, tv_to_value(wv));
	TplValue	o = ov.kind == TV_UNDEF ? tv_cstr("...") : S(st, ov);
	StringInfoData buf;
	int			i = 0;
	int			count = 0;
	int			clen;
	double		limit;

	if (words <= 0 || isnan(words))
		words = isnan(words) ? words : 1;
	limit = isnan(words) ? 0 : trunc(words);
	buf_init(st, &buf, s.len + o.len);
	while (i < s.len && js_space_at(s.str + i, s.len - i, &clen))
		i += clen;
	/* split(/\s+/): words separated by runs of whitespace */
	for (;;)
	{
		int			start = i;

		while (i < s.len && !js_space_at(s.str + i, s.len - i, &clen))
			i += utf8_char_len(s.str + i, s.len - i);
		if (count < limit)
		{
			if (count > 0)
				appendStringInfoChar(&buf, ' ');
			appendBinaryStringInfo(&buf, s.str + start, i - start);
		}
		count++;
		if (i >= s.len)
			break;
		while (i < s.len && js_space_at(s.str + i, s.len - i, &clen))
			i += clen;
	}
	if (count >= words)
		appendBinaryStringInfo(&buf, o.str, o.len);
	return buf_value(st, &buf);
}

/* split(v, separator), trailing empty strings dropped. */
static TplValue
f_split(RenderState *st, TplValue v, TplValue sepv)
{
	TplValue	s = S(st, v);
	TplValue	sep = S(st, sepv);
	TplValue   *items;
	int			n = 0;

	/* at most two items per byte (a split character outside the BMP) plus one */
	tpl_reserve(st, (int64) (s.len + 2) * 2 * sizeof(TplValue));
	items = palloc((s.len + 2) * 2 * sizeof(TplValue));
	if (sep.len == 0)
	{
		int			i = 0;

		while (i < s.len)
		{
			int			clen = utf8_char_len(s.str + i, s.len - i);

			if (clen == 4)
			{
				split_surrogates(s.str + i, clen, &items[n], &items[n + 1]);
				n += 2;
			}
			else
				items[n++] = tv_str(s.str + i, clen);
			i += clen;
		}
	}
	else
	{
		int			pos = 0;

		for (;;)
		{
			int			at = tv_find(s.str, s.len, sep.str, sep.len, pos);

			if (at < 0)
			{
				items[n++] = tv_str(s.str + pos, s.len - pos);
				break;
			}
			items[n++] = tv_str(s.str + pos, at - pos);
			pos = at + sep.len;
		}
	}
	while (n > 0 && items[n - 1].len == 0)
		n--;
	return tv_array(items, n);
}

/* join(v, separator = " "): Array.prototype.join of toArray(v). */
static TplValue
f_join(RenderState *st, TplValue v, TplValue sepv)
{
	TplValue	a = tv_to_array(st, v);
	TplValue	sep = tv_is_nil(sepv) ? tv_cstr(" ") : S(st, sepv);
	StringInfoData buf;
	int			i;

	buf_init(st, &buf, 0);
	for (i = 0; i < a.len; i++)
	{
		if (i > 0)
			appendBinaryStringInfo(&buf, sep.str, sep.len);
		tv_js_element_string(st, &buf, a.items[i]);
		tpl_reserve(st, sep.len);
	}
	return buf_value(st, &buf);
}

/* first / last: element (or UTF-16 unit) of an array-like, else "". */
static TplValue
f_first_last(RenderState *st, TplValue v, bool last)
{
	int			n;

	v = tv_to_value(v);
	if (v.kind == TV_ARR)
	{
		n = tv_arr_len(v);
		return n == 0 ? tv_undef() : tv_arr_get(st, v, last ? n - 1 : 0);
	}
	if (v.kind == TV_STR && v.len > 0)
	{
		tpl_spend(st, v.len);
		n = utf16_length(v.str, v.len);
		return tv_read_property(st, v, tv_num(last ? n - 1 : 0));
	}
	return tv_str("", 0);
}

/* ---------- Dispatch ---------- */

/* Apply filter id to v with evaluated arguments (keys: names of key: value arguments). */
TplValue
tpl_apply_filter(RenderState *st, int id, TplValue v, TplValue *args, char **keys, int nargs)
{
	TplValue	a0 = arg(args, nargs, 0);
	TplValue	a1 = arg(args, nargs, 1);
	StringInfoData buf;
	TplValue	s;
	TplValue	x;
	int			i;

	/* a key: value argument is a [key, value] pair, as in LiquidJS */
	for (i = 0; i < nargs; i++)
		if (keys[i] != NULL)
		{
			TplValue   *pair = palloc(2 * sizeof(TplValue));

			pair[0] = tv_cstr(keys[i]);
			pair[1] = args[i];
			args[i] = tv_array(pair, 2);
		}
	a0 = arg(args, nargs, 0);
	a1 = arg(args, nargs, 1);

	switch ((FilterId) id)
	{
		case F_ESCAPE:
			return f_escape(st, S(st, v));
		case F_ESCAPE_ONCE:
			return f_escape(st, f_unescape(st, S(st, v)));
		case F_NEWLINE_TO_BR:
			s = S(st, v);
			buf_init(st, &buf, s.len);
			for (i = 0; i < s.len; i++)
			{
				if (s.str[i] == '\r' && i + 1 < s.len && s.str[i + 1] == '\n')
					continue;
				if (s.str[i] == '\n')
					appendStringInfoString(&buf, "<br />\n");
				else
					appendStringInfoChar(&buf, s.str[i]);
			}
			return buf_value(st, &buf);
		case F_STRIP_HTML:
			return f_strip_html(st, S(st, v));
		case F_ABS:
			return tv_num(fabs(tv_to_number(st, v)));
		case F_AT_LEAST:
		case F_AT_MOST:
			{
				double		r = tv_to_number(st, v);

				for (i = 0; i < nargs; i++)
				{
					double		y = tv_to_number(st, args[i]);

					if (isnan(r) || isnan(y))
						r = NAN;
					else if (id == F_AT_LEAST ? y > r || (y == 0 && r == 0 && !signbit(y)) : y < r || (y == 0 && r == 0 && signbit(y)))
						r = y;
				}
				return tv_num(r);
			}
		case F_CEIL:
			return tv_num(ceil(tv_to_number(st, v)));
		case F_FLOOR:
			return tv_num(floor(tv_to_number(st, v)));
		case F_DIVIDED_BY:
			{
				double		q = tv_to_number(st, v) / (nargs > 0 ? tv_to_number(st, a0) : NAN);

				if (nargs > 1 && tv_to_number(st, a1) != 0)
					q = floor(q);
				return tv_num(q);
			}
		case F_MINUS:
			return tv_num(tv_to_number(st, v) - (nargs > 0 ? tv_to_number(st, a0) : NAN));
		case F_PLUS:
			return tv_num(tv_to_number(st, v) + (nargs > 0 ? tv_to_number(st, a0) : NAN));
		case F_TIMES:
			return tv_num(tv_to_number(st, v) * (nargs > 0 ? tv_to_number(st, a0) : NAN));
		case F_MODULO:
			{
				double		m = nargs > 0 ? tv_to_number(st, a0) : NAN;

				return tv_num(js_mod(js_mod(tv_to_number(st, v), m) + m, m));
			}
		case F_ROUND:
			return tv_num(liquid_round(st, v, a0));
		case F_URL_DECODE:
			return f_url_decode(st, S(st, v));
		case F_URL_ENCODE:
			return f_url_encode(st, S(st, v));
		case F_JOIN:
			return f_join(st, v, a0);
		case F_FIRST:
			return f_first_last(st, v, false);
		case F_LAST:
			return f_first_last(st, v, true);
		case F_REVERSE:
			{
				TplValue	a = tv_to_array(st, v);
				TplValue   *items = palloc(Max(a.len, 1) * sizeof(TplValue));

				for (i = 0; i < a.len; i++)
					items[i] = a.items[a.len - 1 - i];
				return tv_array(items, a.len);
			}
		case F_SORT:
			return f_sort(st, v, a0, false);
		case F_SORT_NATURAL:
			return f_sort(st, v, a0, true);
		case F_SIZE:
			if (v.kind == TV_STR)
			{
				tpl_spend(st, v.len);
				return tv_num(utf16_length(v.str, v.len));
			}
			if (v.kind == TV_ARR)
				return tv_num(tv_arr_len(v));
			if (v.kind == TV_FORLOOP)
				return tv_num(v.loop->length);
			return tv_num(0);
		case F_MAP:
			{
				TplValue	a = tv_to_array(st, v);
				TplValue	path = S(st, a0);
				TplValue   *items = palloc(Max(a.len, 1) * sizeof(TplValue));

				for (i = 0; i < a.len; i++)
					items[i] = tpl_lookup_path(st, a.items[i], path.str, path.len);
				return tv_array(items, a.len);
			}
		case F_COMPACT:
			{
				TplValue	a = tv_to_array(st, v);
				TplValue   *items = palloc(Max(a.len, 1) * sizeof(TplValue));
				int			n = 0;

				for (i = 0; i < a.len; i++)
					if (!tv_is_nil(a.items[i]))
						items[n++] = a.items[i];
				return tv_array(items, n);
			}
		case F_CONCAT:
		case F_PUSH:
		case F_UNSHIFT:
			{
				TplValue	a = tv_to_array(st, v);
				TplValue	b;
				TplValue   *items;

				if (id == F_CONCAT)
					b = nargs > 0 ? tv_to_array(st, a0) : tv_array(NULL, 0);
				else
					b = tv_array(&args[0], nargs > 0 ? 1 : 0);
				if (id == F_PUSH && nargs == 0)
				{
					b = tv_array(palloc(sizeof(TplValue)), 1);
					b.items[0] = tv_undef();
				}
				items = palloc(Max(a.len + b.len + 1, 1) * sizeof(TplValue));
				if (id == F_UNSHIFT)
				{
					items[0] = a0;
					memcpy(items + 1, a.items, a.len * sizeof(TplValue));
					return tv_array(items, a.len + 1);
				}
				memcpy(items, a.items, a.len * sizeof(TplValue));
				memcpy(items + a.len, b.items, b.len * sizeof(TplValue));
				return tv_array(items, a.len + b.len);
			}
		case F_POP:
		case F_SHIFT:
			{
				TplValue	a = tv_to_array(st, v);

				if (a.len == 0)
					return a;
				return tv_array(a.items + (id == F_SHIFT ? 1 : 0), a.len - 1);
			}
		case F_SUM:
			{
				TplValue	a = tv_to_array(st, v);
				double		sum = 0;
				bool		by = js_truthy(a0);
				TplValue	path = by ? S(st, a0) : tv_str("", 0);

				for (i = 0; i < a.len; i++)
				{
					double		d = tv_js_number(st, tv_to_value(by ? tpl_lookup_path(st, a.items[i], path.str, path.len) : a.items[i]));

					sum += isnan(d) ? 0 : d;
				}
				return tv_num(sum);
			}
		case F_SLICE:
			return f_slice(st, v, a0, a1);
		case F_WHERE:
			return f_where(st, v, a0, a1, true);
		case F_REJECT:
			return f_where(st, v, a0, a1, false);
		case F_UNIQ:
			return f_uniq(st, v);
		case F_DATE:
			return tpl_date_filter(st, v, args, nargs);
		case F_APPEND:
		case F_PREPEND:
			if (nargs != 1)
				tpl_fail(st, "%s expects 1 argument, got %d", id == F_APPEND ? "append" : "prepend", nargs);
			s = S(st, v);
			x = S(st, a0);
			buf_init(st, &buf, s.len + x.len);
			if (id == F_PREPEND)
				appendBinaryStringInfo(&buf, x.str, x.len);
			appendBinaryStringInfo(&buf, s.str, s.len);
			if (id == F_APPEND)
				appendBinaryStringInfo(&buf, x.str, x.len);
			return buf_value(st, &buf);
		case F_STRIP:
			return f_strip(st, v, a0, true, true);
		case F_LSTRIP:
			return f_strip(st, v, a0, true, false);
		case F_RSTRIP:
			return f_strip(st, v, a0, false, true);
		case F_UPCASE:
		case F_DOWNCASE:
			s = S(st, v);
			buf_init(st, &buf, s.len);
			tv_change_case(&buf, s.str, s.len, id == F_UPCASE);
			return buf_value(st, &buf);
		case F_CAPITALIZE:
			return f_capitalize(st, v);
		case F_REMOVE:
		case F_REMOVE_FIRST:
		case F_REPLACE:
		case F_REPLACE_FIRST:
			{
				bool		all = id == F_REMOVE || id == F_REPLACE;
				TplValue	to = (id == F_REPLACE || id == F_REPLACE_FIRST) ? S(st, a1) : tv_str("", 0);

				s = S(st, v);
				x = S(st, a0);
				buf_init(st, &buf, s.len);
				tpl_spend(st, s.len + x.len);
				if (x.len == 0)
				{
					if (!all)
						appendBinaryStringInfo(&buf, to.str, to.len);	/* matches at 0 */
					if (all && to.len > 0)
						join_units(st, &buf, s.str, s.len, to.str, to.len);
					else
						appendBinaryStringInfo(&buf, s.str, s.len);
				}
				else
					replace_all(st, &buf, s.str, s.len, x.str, x.len, to.str, to.len, all ? -1 : 1);
				tpl_reserve(st, buf.len);
				return buf_value(st, &buf);
			}
		case F_REMOVE_LAST:
		case F_REPLACE_LAST:
			{
				TplValue	to = id == F_REPLACE_LAST ? S(st, a1) : tv_str("", 0);
				int			at;

				s = S(st, v);
				x = S(st, a0);
				/* the reversed copies of tv_find_last, and the scan */
				tpl_reserve(st, (int64) s.len + x.len);
				at = tv_find_last(s.str, s.len, x.str, x.len);
				if (at < 0)
					return s;
				buf_init(st, &buf, s.len + to.len);
				appendBinaryStringInfo(&buf, s.str, at);
				appendBinaryStringInfo(&buf, to.str, to.len);
				appendBinaryStringInfo(&buf, s.str + at + x.len, s.len - at - x.len);
				return buf_value(st, &buf);
			}
		case F_SPLIT:
			return f_split(st, v, a0);
		case F_STRIP_NEWLINES:
			s = S(st, v);
			buf_init(st, &buf, s.len);
			for (i = 0; i < s.len; i++)
			{
				if (s.str[i] == '\r' && i + 1 < s.len && s.str[i + 1] == '\n')
					continue;
				if (s.str[i] != '\n')
					appendStringInfoChar(&buf, s.str[i]);
			}
			return buf_value(st, &buf);
		case F_TRUNCATE:
			return f_truncate(st, v, a0, a1);
		case F_TRUNCATEWORDS:
			return f_truncatewords(st, v, a0, a1);
		case F_DEFAULT:
			x = tv_to_value(v);
			if (x.kind == TV_STR)
				return x.len > 0 ? x : a0;
			if (x.kind == TV_ARR)
				return tv_arr_len(x) > 0 ? x : a0;
			if (x.kind == TV_BOOL && !x.b)
			{
				for (i = nargs - 1; i >= 1; i--)
					if (keys[i] != NULL && strcmp(keys[i], "allow_false") == 0)
						return js_truthy(args[i].items[1]) ? x : a0;
			}
			return tv_truthy(x) ? x : a0;
		case F_JSON:
			{
				int			indent = 0;

				if (a0.kind == TV_NUM && a0.num >= 1)
					indent = a0.num > 10 ? 10 : (int) a0.num;
				buf_init(st, &buf, 0);
				tv_json(st, &buf, v, indent, 0);
				if (v.kind == TV_UNDEF)
					return tv_undef();
				return buf_value(st, &buf);
			}
		case F_RAW:
			return v;
		case F_TO_INTEGER:
			return tv_num(tv_js_number(st, tv_to_value(v)));
	}
	return v;
}
