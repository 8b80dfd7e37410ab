/*
 * value.c
 *		The value model of the template engine: the JavaScript values LiquidJS
 *		works with, over a jsonb context.
 *
 * Containers of the context stay in the jsonb (TV_ARR/TV_OBJ with jc); arrays
 * the engine makes (split, map, ranges...) are arrays of TplValue.  Numbers
 * are doubles printed as JavaScript prints them; equality, ordering,
 * "contains" and truthiness follow LiquidJS's operators and JavaScript's
 * coercions.  Objects compare by identity, as in JavaScript: the same place
 * in the context is the same object.  Object keys come in JavaScript's order
 * where jsonb allows (array-index keys first, ascending); jsonb does not keep
 * the order the other keys were written in (README).
 */
#include "postgres.h"

#include <math.h>

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/numeric.h"

#include "template/template_int.h"
#include "template/case_table.h"

/* ---------- Constructors ---------- */

/* A value from a jsonb value: scalars, or containers as references. */
TplValue
tv_from_jsonb(RenderState *st, JsonbValue *jv)
{
	switch (jv->type)
	{
		case jbvString:
			return tv_str(jv->val.string.val, jv->val.string.len);
		case jbvNumeric:
			{
				Numeric		num = jv->val.numeric;
				char	   *s;
				double		d;

				/* an integer that fits in 32 bits: exact, without text */
				LOCAL_FCINFO(fcinfo, 1);

				InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
				fcinfo->args[0].value = NumericGetDatum(num);
				fcinfo->args[0].isnull = false;
				if (DatumGetInt32(numeric_scale(fcinfo)) == 0)
				{
					bool		overflow = false;
					int32		i = numeric_int4_opt_error(num, &overflow);

					if (!overflow)
						return tv_num((double) i);
				}
				s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(num)));
				tpl_spend(st, strlen(s));
				d = strtod(s, NULL);
				pfree(s);
				return tv_num(d);
			}
		case jbvBool:
			return tv_bool(jv->val.boolean);
		case jbvBinary:
			{
				TplValue	v = {0};

				v.kind = JsonContainerIsArray(jv->val.binary.data) ? TV_ARR : TV_OBJ;
				v.b = true;		/* a container of the context */
				v.jc = jv->val.binary.data;
				return v;
			}
		default:
			return tv_null();
	}
}

/* ---------- Basic predicates ---------- */

/* The forloop object as JSON, what LiquidJS's ForloopDrop.valueOf() gives. */
static TplValue
forloop_json(LoopFrame *f)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"i\":%d,\"length\":%d,\"name\":", f->index0, f->length);
	tv_json(NULL, &buf, tv_cstr(f->name), 0, 0);
	appendStringInfoChar(&buf, '}');
	return tv_str(buf.data, buf.len);
}

/* toValue() of a literal drop or forloop (tv_to_value() does the others inline). */
TplValue
tv_drop_value(TplValue v)
{
	switch (v.kind)
	{
		case TV_NILDROP:
			return tv_null();
		case TV_EMPTY:
		case TV_BLANK:
			return tv_str("", 0);
		case TV_FORLOOP:
			return forloop_json(v.loop);
		default:
			return v;
	}
}

/* null or undefined (after toValue) */
bool
tv_is_nil(TplValue v)
{
	v = tv_to_value(v);
	return v.kind == TV_NULL || v.kind == TV_UNDEF;
}

/* LiquidJS truthiness: only false, null and undefined are falsy. */
bool
tv_truthy(TplValue v)
{
	v = tv_to_value(v);
	return !(v.kind == TV_NULL || v.kind == TV_UNDEF || (v.kind == TV_BOOL && !v.b));
}

/* Length of an array value. */
int
tv_arr_len(TplValue v)
{
	return v.b ? JsonContainerSize(v.jc) : v.len;
}

/* Element i of an array value (0 <= i < length). */
TplValue
tv_arr_get(RenderState *st, TplValue v, int i)
{
	JsonbValue *jv;
	TplValue	r;

	if (!v.b)
		return v.items[i];
	jv = getIthJsonbValueFromContainer(v.jc, i);
	r = tv_from_jsonb(st, jv);
	pfree(jv);
	return r;
}

/* An array value as an engine-made array (items in scratch). */
TplValue
tv_materialize(RenderState *st, TplValue v)
{
	int			n = tv_arr_len(v);
	TplValue   *items;
	int			i;

	if (!v.b)
		return v;
	tpl_reserve(st, (int64) n * sizeof(TplValue));
	items = palloc(Max(n, 1) * sizeof(TplValue));
	for (i = 0; i < n; i++)
		items[i] = tv_arr_get(st, v, i);
	return tv_array(items, n);
}

/* LiquidJS's toArray(): nil is [], an array itself, anything else [value]. */
TplValue
tv_to_array(RenderState *st, TplValue v)
{
	TplValue   *one;

	v = tv_to_value(v);
	if (v.kind == TV_NULL || v.kind == TV_UNDEF)
		return tv_array(NULL, 0);
	if (v.kind == TV_ARR)
		return tv_materialize(st, v);
	one = palloc(sizeof(TplValue));
	one[0] = v;
	return tv_array(one, 1);
}

/* ---------- Strings: UTF-8 here, UTF-16 in JavaScript ---------- */

/* Length in UTF-16 code units of UTF-8 text. */
int
utf16_length(const char *s, int len)
{
	int			n = 0;
	int			i;

	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if ((c & 0xC0) != 0x80)
			n += c >= 0xF0 ? 2 : 1;
	}
	return n;
}

/*
 * Half of a UTF-16 surrogate pair, as JavaScript strings may hold one (a
 * string index or split('') inside a character above U+FFFF): kept as its
 * 3-byte generalized UTF-8 form while rendering; tv_finish_text() joins
 * pairs back and turns lone halves into U+FFFD, as UTF-8 encoding does.
 */
/* Set when a surrogate half is made: tv_finish_text() has work to do */
bool		tv_surrogates_made = false;

/* Append one UTF-16 surrogate half in its 3-byte form. */
void
append_surrogate(StringInfo buf, uint32 unit)
{
	tv_surrogates_made = true;
	appendStringInfoChar(buf, (char) (0xE0 | (unit >> 12)));
	appendStringInfoChar(buf, (char) (0x80 | ((unit >> 6) & 0x3F)));
	appendStringInfoChar(buf, (char) (0x80 | (unit & 0x3F)));
}

/* The two surrogate halves of the character above U+FFFF at s, as separate strings. */
void
split_surrogates(const char *s, int len, TplValue *high, TplValue *low)
{
	pg_wchar	c = len >= 4 ? utf8_to_unicode((const unsigned char *) s) : 0xFFFD;
	StringInfoData h;
	StringInfoData l;

	c -= 0x10000;
	initStringInfo(&h);
	initStringInfo(&l);
	append_surrogate(&h, 0xD800 + ((c >> 10) & 0x3FF));
	append_surrogate(&l, 0xDC00 + (c & 0x3FF));
	*high = tv_str(h.data, h.len);
	*low = tv_str(l.data, l.len);
}

/* Is a surrogate half (3-byte form, see append_surrogate) at s? */
static inline bool
surrogate_at(const char *s, int len)
{
	return len >= 3 && (unsigned char) s[0] == 0xED && (unsigned char) s[1] >= 0xA0;
}

/* Final text: surrogate pairs joined into characters, lone halves as U+FFFD (in place). */
int
tv_finish_text(char *s, int len)
{
	int			i = 0;
	int			o = 0;

	if (!tv_surrogates_made)
		return len;
	tv_surrogates_made = false;
	if (memchr(s, 0xED, len) == NULL)
		return len;
	while (i < len)
	{
		if (surrogate_at(s + i, len - i))
		{
			uint32		hi = ((s[i] & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);

			if (hi < 0xDC00 && surrogate_at(s + i + 3, len - i - 3) &&
				(unsigned char) s[i + 4] >= 0xB0)
			{
				uint32		lo = ((s[i + 3] & 0x0F) << 12) | ((s[i + 4] & 0x3F) << 6) | (s[i + 5] & 0x3F);
				unsigned char tmp[4];

				unicode_to_utf8(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00), tmp);
				memcpy(s + o, tmp, 4);
				o += 4;
				i += 6;
				continue;
			}
			memcpy(s + o, "\xEF\xBF\xBD", 3);
			o += 3;
			i += 3;
			continue;
		}
		s[o++] = s[i++];
	}
	s[o] = '\0';
	return o;
}

/* Is a JavaScript whitespace character (\s) at s?  Sets its byte length. */
bool
js_space_at(const char *s, int len, int *clen)
{
	unsigned char c = (unsigned char) s[0];

	*clen = 1;
	if (len <= 0)
		return false;
	if (c == ' ' || (c >= '\t' && c <= '\r'))
		return true;
	if (c < 0x80)
		return false;
	/* U+FEFF is whitespace in JavaScript, U+180E is not */
	if (c == 0xEF && len >= 3 && (unsigned char) s[1] == 0xBB && (unsigned char) s[2] == 0xBF)
	{
		*clen = 3;
		return true;
	}
	if (c == 0xE1 && len >= 3 && (unsigned char) s[1] == 0xA0 && (unsigned char) s[2] == 0x8E)
		return false;
	*clen = blank_len(s, len);
	if (*clen > 0)
		return true;
	*clen = 1;
	return false;
}

/* Decode the UTF-8 character at s (len > 0); sets its byte length. */
static pg_wchar
decode_char(const char *s, int len, int *clen)
{
	int			n = utf8_char_len(s, len);

	*clen = n;
	if (n == 1 || n > len)
		return (unsigned char) s[0];
	return utf8_to_unicode((const unsigned char *) s);
}

/* Append code point c as UTF-8. */
static void
append_cp(StringInfo buf, pg_wchar c)
{
	unsigned char tmp[8];

	unicode_to_utf8(c, tmp);
	appendBinaryStringInfo(buf, (char *) tmp, pg_utf_mblen(tmp));
}

/* Look c up in a case table; NULL if it maps to itself. */
static const CaseMapping *
case_lookup(const CaseMapping *table, int n, pg_wchar c)
{
	int			lo = 0;
	int			hi = n - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (table[mid].from == c)
			return &table[mid];
		if (table[mid].from < c)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return NULL;
}

/* Is c a cased letter (one that has a case mapping either way)? */
static bool
is_cased(pg_wchar c)
{
	return case_lookup(upper_table, lengthof(upper_table), c) != NULL ||
		case_lookup(lower_table, lengthof(lower_table), c) != NULL || c == 0x3A3;
}

/* Is c case-ignorable (skipped by the final sigma rule)? */
static bool
is_case_ignorable(pg_wchar c)
{
	return c == '\'' || c == '.' || c == ':' || c == '^' || c == '`' || c == 0xAD ||
		c == 0x2019 || (c >= 0x300 && c <= 0x36F);
}

/* Lowercase of capital sigma at byte i of s: final form at the end of a word. */
static pg_wchar
sigma_lower(const char *s, int len, int i)
{
	int			j;
	bool		before = false;
	int			clen;

	/* a cased letter before (skipping case-ignorable ones) */
	for (j = i; j > 0;)
	{
		pg_wchar	c;
		int			k = j - 1;

		while (k > 0 && ((unsigned char) s[k] & 0xC0) == 0x80)
			k--;
		c = decode_char(s + k, len - k, &clen);
		j = k;
		if (is_case_ignorable(c))
			continue;
		before = is_cased(c);
		break;
	}
	if (!before)
		return 0x3C3;
	/* no cased letter after */
	for (j = i + 2; j < len; j += clen)
	{
		pg_wchar	c = decode_char(s + j, len - j, &clen);

		if (is_case_ignorable(c))
			continue;
		return is_cased(c) ? 0x3C3 : 0x3C2;
	}
	return 0x3C2;
}

/* Append s upcased or downcased as JavaScript's toUpperCase/toLowerCase does. */
void
tv_change_case(StringInfo buf, const char *s, int len, bool upper)
{
	int			i = 0;

	enlargeStringInfo(buf, len);
	while (i < len)
	{
		unsigned char c = (unsigned char) s[i];
		int			clen;
		pg_wchar	cp;
		const CaseMapping *m;

		if (c < 0x80)
		{
			/* a run of ASCII: mapped in place, never longer */
			char	   *d;

			enlargeStringInfo(buf, len - i);
			d = buf->data + buf->len;
			while (i < len && !IS_HIGHBIT_SET(s[i]))
			{
				c = (unsigned char) s[i++];
				if (upper ? (c >= 'a' && c <= 'z') : (c >= 'A' && c <= 'Z'))
					c ^= 0x20;
				*d++ = (char) c;
			}
			buf->len = d - buf->data;
			buf->data[buf->len] = '\0';
			continue;
		}
		cp = decode_char(s + i, len - i, &clen);
		if (!upper && cp == 0x3A3)
			append_cp(buf, sigma_lower(s, len, i));
		else if ((m = upper ? case_lookup(upper_table, lengthof(upper_table), cp)
				  : case_lookup(lower_table, lengthof(lower_table), cp)) != NULL)
		{
			int			k;

			for (k = 0; k < 3 && m->to[k] != 0; k++)
				append_cp(buf, m->to[k]);
		}
		else
			appendBinaryStringInfo(buf, s + i, clen);
		i += clen;
	}
}

/* ---------- Numbers ---------- */

/*
 * Write a number as JavaScript's Number.prototype.toString() does into out
 * (at least 32 bytes); returns the length.
 */
int
tv_number_text(char *out, double d)
{
	char		tmp[40];
	char		digits[20];
	int			k = 0;
	int			n;
	int			p;
	int			i;
	int			o = 0;
	char	   *e;

	if (isnan(d))
		return sprintf(out, "NaN");
	if (isinf(d))
		return sprintf(out, d > 0 ? "Infinity" : "-Infinity");
	if (d == 0)
		return sprintf(out, "0");
	if (d == rint(d) && fabs(d) < 9007199254740992.0)
	{
		/* an integer: its digits, without printf */
		char		rev[24];
		uint64		u = (uint64) fabs(d);
		int			r = 0;

		if (d < 0)
			out[o++] = '-';
		do
		{
			rev[r++] = '0' + (char) (u % 10);
			u /= 10;
		} while (u > 0);
		while (r > 0)
			out[o++] = rev[--r];
		out[o] = '\0';
		return o;
	}
	if (d < 0)
	{
		out[o++] = '-';
		d = -d;
	}
	/* the shortest digits that read back as d */
	for (p = 1; p <= 17; p++)
	{
		snprintf(tmp, sizeof(tmp), "%.*e", p - 1, d);
		if (strtod(tmp, NULL) == d)
			break;
	}
	for (e = tmp; *e != 'e'; e++)
		if (*e >= '0' && *e <= '9')
			digits[k++] = *e;
	while (k > 1 && digits[k - 1] == '0')
		k--;
	n = atoi(e + 1) + 1;		/* d = 0.digits * 10^n */
	if (k <= n && n <= 21)
	{
		memcpy(out + o, digits, k);
		o += k;
		for (i = k; i < n; i++)
			out[o++] = '0';
	}
	else if (0 < n && n <= 21)
	{
		memcpy(out + o, digits, n);
		o += n;
		out[o++] = '.';
		memcpy(out + o, digits + n, k - n);
		o += k - n;
	}
	else if (-6 < n && n <= 0)
	{
		out[o++] = '0';
		out[o++] = '.';
		for (i = 0; i < -n; i++)
			out[o++] = '0';
		memcpy(out + o, digits, k);
		o += k;
	}
	else
	{
		out[o++] = digits[0];
		if (k > 1)
		{
			out[o++] = '.';
			memcpy(out + o, digits + 1, k - 1);
			o += k - 1;
		}
		o += sprintf(out + o, "e%c%d", n - 1 >= 0 ? '+' : '-', abs(n - 1));
	}
	out[o] = '\0';
	return o;
}

/* Append a number as JavaScript writes it. */
void
tv_format_number(StringInfo buf, double d)
{
	char		tmp[48];
	int			n = tv_number_text(tmp, d);

	appendBinaryStringInfo(buf, tmp, n);
}

/* JavaScript's StringToNumber (NaN when the text is not a number). */
double
tv_string_to_number(const char *s, int len)
{
	int			i = 0;
	int			end = len;
	int			clen;
	char	   *text;
	double		d;
	int			j;
	bool		digits = false;

	while (i < end && js_space_at(s + i, end - i, &clen))
		i += clen;
	while (end > i)
	{
		int			k = end - 1;

		while (k > i && ((unsigned char) s[k] & 0xC0) == 0x80)
			k--;
		if (!js_space_at(s + k, end - k, &clen) || k + clen != end)
			break;
		end = k;
	}
	if (i == end)
		return 0;
	if (end - i > 2 && s[i] == '0' && strchr("xXoObB", s[i + 1]) != NULL)
	{
		int			base = (s[i + 1] == 'x' || s[i + 1] == 'X') ? 16 :
			(s[i + 1] == 'o' || s[i + 1] == 'O') ? 8 : 2;

		d = 0;
		for (j = i + 2; j < end; j++)
		{
			int			v = (s[j] >= '0' && s[j] <= '9') ? s[j] - '0' :
				(s[j] >= 'a' && s[j] <= 'f') ? s[j] - 'a' + 10 :
				(s[j] >= 'A' && s[j] <= 'F') ? s[j] - 'A' + 10 : 99;

			if (v >= base)
				return NAN;
			d = d * base + v;
		}
		return d;
	}
	j = i;
	if (s[j] == '+' || s[j] == '-')
		j++;
	if (end - j == 8 && memcmp(s + j, "Infinity", 8) == 0)
		return s[i] == '-' ? -INFINITY : INFINITY;
	while (j < end && s[j] >= '0' && s[j] <= '9')
		j++, digits = true;
	if (j < end && s[j] == '.')
	{
		j++;
		while (j < end && s[j] >= '0' && s[j] <= '9')
			j++, digits = true;
	}
	if (!digits)
		return NAN;
	if (j < end && (s[j] == 'e' || s[j] == 'E'))
	{
		bool		expdigits = false;

		j++;
		if (j < end && (s[j] == '+' || s[j] == '-'))
			j++;
		while (j < end && s[j] >= '0' && s[j] <= '9')
			j++, expdigits = true;
		if (!expdigits)
			return NAN;
	}
	if (j != end)
		return NAN;
	text = pnstrdup(s + i, end - i);
	d = strtod(text, NULL);
	pfree(text);
	return d;
}

/* JavaScript's ToNumber of a value (after toValue). */
double
tv_js_number(RenderState *st, TplValue v)
{
	v = tv_to_value(v);
	switch (v.kind)
	{
		case TV_UNDEF:
			return NAN;
		case TV_NULL:
			return 0;
		case TV_BOOL:
			return v.b ? 1 : 0;
		case TV_NUM:
			return v.num;
		case TV_STR:
			return tv_string_to_number(v.str, v.len);
		case TV_ARR:
			{
				StringInfoData buf;

				initStringInfo(&buf);
				tv_js_string(st, &buf, v);
				return tv_string_to_number(buf.data, buf.len);
			}
		default:
			return NAN;
	}
}

/* LiquidJS's toNumber(): +value || 0. */
double
tv_to_number(RenderState *st, TplValue v)
{
	double		d = tv_js_number(st, v);

	return (isnan(d) || d == 0) ? 0 : d;
}

/* ---------- Text of values ---------- */

/*
 * Append an array element as Array.prototype.join writes it: nothing for
 * null and undefined, "[object Object]" for the literal drops and forloop
 * (objects to JavaScript), String(element) otherwise.
 */
void
tv_js_element_string(RenderState *st, StringInfo buf, TplValue e)
{
	if (e.kind == TV_UNDEF || e.kind == TV_NULL)
		return;
	if (e.kind == TV_NILDROP || e.kind == TV_EMPTY || e.kind == TV_BLANK || e.kind == TV_FORLOOP)
		appendStringInfoString(buf, "[object Object]");
	else
		tv_js_string(st, buf, e);
}

/* Append JavaScript's String(value). */
void
tv_js_string(RenderState *st, StringInfo buf, TplValue v)
{
	int			i;
	int			n;

	check_stack_depth();
	v = tv_to_value(v);
	switch (v.kind)
	{
		case TV_UNDEF:
			appendStringInfoString(buf, "undefined");
			break;
		case TV_NULL:
			appendStringInfoString(buf, "null");
			break;
		case TV_BOOL:
			appendStringInfoString(buf, v.b ? "true" : "false");
			break;
		case TV_NUM:
			tv_format_number(buf, v.num);
			break;
		case TV_STR:
			appendBinaryStringInfo(buf, v.str, v.len);
			/* charged as it is appended: joins of many big strings hit the budget */
			if (st)
				tpl_reserve(st, v.len);
			break;
		case TV_ARR:
			n = tv_arr_len(v);
			for (i = 0; i < n; i++)
			{
				TplValue	e = tv_arr_get(st, v, i);

				if (st)
					tpl_spend(st, WORK_PER_STEP);
				if (i > 0)
					appendStringInfoChar(buf, ',');
				tv_js_element_string(st, buf, e);
			}
			break;
		default:
			appendStringInfoString(buf, "[object Object]");
			break;
	}
}

/* Append LiquidJS's stringify(value): nil is "", arrays concatenate. */
void
tv_stringify(RenderState *st, StringInfo buf, TplValue v)
{
	int			i;
	int			n;

	check_stack_depth();
	v = tv_to_value(v);
	switch (v.kind)
	{
		case TV_UNDEF:
		case TV_NULL:
			break;
		case TV_STR:
			appendBinaryStringInfo(buf, v.str, v.len);
			if (st)
				tpl_reserve(st, v.len);
			break;
		case TV_ARR:
			n = tv_arr_len(v);
			for (i = 0; i < n; i++)
			{
				if (st)
					tpl_spend(st, WORK_PER_STEP);
				tv_stringify(st, buf, tv_arr_get(st, v, i));
			}
			break;
		default:
			tv_js_string(st, buf, v);
			break;
	}
	if (st)
		tpl_reserve(st, 0);
}

/* stringify(value) as a string value (strings are returned as they are). */
TplValue
tv_stringify_value(RenderState *st, TplValue v)
{
	StringInfoData buf;

	v = tv_to_value(v);
	if (v.kind == TV_STR)
		return v;
	initStringInfo(&buf);
	tv_stringify(st, &buf, v);
	tpl_reserve(st, (int64) buf.len * WORK_PER_TEXT_BYTE);
	return tv_str(buf.data, buf.len);
}

/* Is a key an array index ("0", "17": canonical, below 2^32 - 1)? */
static bool
is_array_index(const char *k, int len)
{
	int			i;

	if (len == 0 || len > 10 || (len > 1 && k[0] == '0'))
		return false;
	for (i = 0; i < len; i++)
		if (k[i] < '0' || k[i] > '9')
			return false;
	return len < 10 || strncmp(k, "4294967295", 10) < 0;
}

/* Append a JSON string literal as JSON.stringify writes it. */
static void
json_string(StringInfo buf, const char *s, int len)
{
	int			i;

	appendStringInfoChar(buf, '"');
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		switch (c)
		{
			case '"':
				appendStringInfoString(buf, "\\\"");
				break;
			case '\\':
				appendStringInfoString(buf, "\\\\");
				break;
			case '\b':
				appendStringInfoString(buf, "\\b");
				break;
			case '\f':
				appendStringInfoString(buf, "\\f");
				break;
			case '\n':
				appendStringInfoString(buf, "\\n");
				break;
			case '\r':
				appendStringInfoString(buf, "\\r");
				break;
			case '\t':
				appendStringInfoString(buf, "\\t");
				break;
			default:
				if (c < 0x20)
					appendStringInfo(buf, "\\u%04x", c);
				else if (surrogate_at(s + i, len - i))
				{
					/* JSON.stringify escapes a lone surrogate; a pair is one character */
					uint32		u = ((s[i] & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);

					if (u < 0xDC00 && surrogate_at(s + i + 3, len - i - 3) &&
						(unsigned char) s[i + 4] >= 0xB0)
					{
						appendBinaryStringInfo(buf, s + i, 6);
						i += 5;
					}
					else
					{
						appendStringInfo(buf, "\\u%04x", u);
						i += 2;
					}
				}
				else
					appendStringInfoChar(buf, (char) c);
		}
	}
	appendStringInfoChar(buf, '"');
}

/* A newline and the indentation of a level (pretty JSON). */
static void
json_newline(StringInfo buf, int indent, int level)
{
	int			i;

	appendStringInfoChar(buf, '\n');
	for (i = 0; i < indent * level; i++)
		appendStringInfoChar(buf, ' ');
}

/* The keys and values of an object in JavaScript's order. */
static int
object_pairs(RenderState *st, JsonbContainer *jc, JsonbValue **keys, JsonbValue **vals)
{
	int			n = JsonContainerSize(jc);
	JsonbIterator *it = JsonbIteratorInit(jc);
	JsonbValue	jv;
	JsonbIteratorToken r;
	JsonbValue *k = palloc(Max(n, 1) * sizeof(JsonbValue));
	JsonbValue *v = palloc(Max(n, 1) * sizeof(JsonbValue));
	int			i = 0;
	int			nidx = 0;
	int			j;
	JsonbValue *ok = palloc(Max(n, 1) * sizeof(JsonbValue));
	JsonbValue *ov = palloc(Max(n, 1) * sizeof(JsonbValue));

	while ((r = JsonbIteratorNext(&it, &jv, true)) != WJB_DONE)
	{
		if (r == WJB_KEY)
			k[i] = jv;
		else if (r == WJB_VALUE)
			v[i++] = jv;
	}
	/* array-index keys first (jsonb orders them numerically), then the others */
	for (j = 0; j < i; j++)
		if (is_array_index(k[j].val.string.val, k[j].val.string.len))
		{
			ok[nidx] = k[j];
			ov[nidx++] = v[j];
		}
	for (j = 0; j < i; j++)
		if (!is_array_index(k[j].val.string.val, k[j].val.string.len))
		{
			ok[nidx] = k[j];
			ov[nidx++] = v[j];
		}
	pfree(k);
	pfree(v);
	if (st)
		tpl_spend(st, (int64) i * WORK_PER_STEP);
	*keys = ok;
	*vals = ov;
	return i;
}

/* Key i of an object in JavaScript's order, and its value. */
TplValue
tv_object_entries(RenderState *st, TplValue obj)
{
	JsonbValue *keys;
	JsonbValue *vals;
	int			n = object_pairs(st, obj.jc, &keys, &vals);
	TplValue   *items = palloc(Max(n, 1) * sizeof(TplValue));
	int			i;

	for (i = 0; i < n; i++)
	{
		TplValue   *pair = palloc(2 * sizeof(TplValue));

		pair[0] = tv_str(keys[i].val.string.val, keys[i].val.string.len);
		pair[1] = tv_from_jsonb(st, &vals[i]);
		items[i] = tv_array(pair, 2);
	}
	return tv_array(items, n);
}

/* Append JSON.stringify(value[, null, indent]); undefined appends nothing. */
void
tv_json(RenderState *st, StringInfo buf, TplValue v, int indent, int level)
{
	int			i;
	int			n;

	check_stack_depth();
	if (st)
		tpl_spend(st, WORK_PER_STEP);
	switch (v.kind)
	{
		case TV_UNDEF:
			return;
		case TV_NULL:
			appendStringInfoString(buf, "null");
			return;
		case TV_BOOL:
			appendStringInfoString(buf, v.b ? "true" : "false");
			return;
		case TV_NUM:
			if (isnan(v.num) || isinf(v.num))
				appendStringInfoString(buf, "null");
			else
				tv_format_number(buf, v.num);
			return;
		case TV_STR:
			json_string(buf, v.str, v.len);
			return;
		case TV_NILDROP:
		case TV_EMPTY:
		case TV_BLANK:
			appendStringInfoString(buf, "{}");
			return;
		case TV_FORLOOP:
			if (indent > 0)
			{
				appendStringInfoChar(buf, '{');
				json_newline(buf, indent, level + 1);
				appendStringInfo(buf, "\"i\": %d,", v.loop->index0);
				json_newline(buf, indent, level + 1);
				appendStringInfo(buf, "\"length\": %d,", v.loop->length);
				json_newline(buf, indent, level + 1);
				appendStringInfoString(buf, "\"name\": ");
				json_string(buf, v.loop->name, strlen(v.loop->name));
				json_newline(buf, indent, level);
				appendStringInfoChar(buf, '}');
			}
			else
			{
				TplValue	s = forloop_json(v.loop);

				appendBinaryStringInfo(buf, s.str, s.len);
			}
			return;
		case TV_ARR:
			n = tv_arr_len(v);
			appendStringInfoChar(buf, '[');
			for (i = 0; i < n; i++)
			{
				TplValue	e = tv_arr_get(st, v, i);

				if (i > 0)
					appendStringInfoChar(buf, ',');
				if (indent > 0)
					json_newline(buf, indent, level + 1);
				if (e.kind == TV_UNDEF)
					appendStringInfoString(buf, "null");
				else
					tv_json(st, buf, e, indent, level + 1);
			}
			if (indent > 0 && n > 0)
				json_newline(buf, indent, level);
			appendStringInfoChar(buf, ']');
			return;
		case TV_OBJ:
			{
				JsonbValue *keys;
				JsonbValue *vals;

				n = object_pairs(st, v.jc, &keys, &vals);
				appendStringInfoChar(buf, '{');
				for (i = 0; i < n; i++)
				{
					if (i > 0)
						appendStringInfoChar(buf, ',');
					if (indent > 0)
						json_newline(buf, indent, level + 1);
					json_string(buf, keys[i].val.string.val, keys[i].val.string.len);
					appendStringInfoString(buf, indent > 0 ? ": " : ":");
					tv_json(st, buf, tv_from_jsonb(st, &vals[i]), indent, level + 1);
				}
				if (indent > 0 && n > 0)
					json_newline(buf, indent, level);
				appendStringInfoChar(buf, '}');
				return;
			}
	}
}

/* ---------- Properties ---------- */

/* The UTF-16 code unit at index i of a string as text (a lone surrogate as U+FFFD). */
static TplValue
string_code_unit(const char *s, int len, int index)
{
	int			u = 0;
	int			i = 0;

	while (i < len)
	{
		int			clen;
		pg_wchar	c = decode_char(s + i, len - i, &clen);
		int			units = c >= 0x10000 ? 2 : 1;

		if (index < u + units)
		{
			TplValue	high;
			TplValue	low;

			if (units == 1)
				return tv_str(s + i, clen);
			split_surrogates(s + i, clen, &high, &low);
			return index == u ? high : low;
		}
		u += units;
		i += clen;
	}
	return tv_undef();
}

/* The array index a property name stands for, or -1. */
static int
name_index(const char *k, int len)
{
	int			v = 0;
	int			i;

	if (!is_array_index(k, len) || len > 9)
		return -1;				/* larger indexes exceed any array here */
	for (i = 0; i < len; i++)
		v = v * 10 + (k[i] - '0');
	return v;
}

/* Is the name (k, len) the NUL-terminated word w? */
static inline bool
name_is(const char *k, int len, const char *w)
{
	return strlen(w) == len && memcmp(k, w, len) == 0;
}

/* LiquidJS's readProperty(): obj[key], with size, first and last. */
TplValue
tv_read_property(RenderState *st, TplValue obj, TplValue key)
{
	const char *k;
	int			klen;
	int			index;
	int			n;
	char		numbuf[48];

	tpl_spend(st, WORK_PER_STEP);
	if (obj.kind == TV_OBJ && key.kind == TV_STR)
	{
		/* the common case first: a key of an object of the context */
		JsonbValue	jv;

		tpl_spend(st, key.len);
		if (getKeyJsonValueFromContainer(obj.jc, key.str, key.len, &jv))
			return tv_from_jsonb(st, &jv);
		if (key.len == 4 && memcmp(key.str, "size", 4) == 0)
			return tv_num(JsonContainerSize(obj.jc));
		return tv_undef();
	}
	key = tv_to_value(key);
	if (obj.kind == TV_UNDEF || obj.kind == TV_NULL)
		return obj;
	if (obj.kind == TV_NILDROP || obj.kind == TV_EMPTY || obj.kind == TV_BLANK)
		return tv_undef();
	if (obj.kind == TV_ARR && key.kind == TV_NUM)
	{
		double		i = key.num;

		n = tv_arr_len(obj);
		if (i < 0)
			i += n;
		if (i != rint(i) || i < 0 || i >= n)
			return tv_undef();
		return tv_arr_get(st, obj, (int) i);
	}
	/* the property name: String(key) */
	if (key.kind == TV_STR)
	{
		k = key.str;
		klen = key.len;
	}
	else if (key.kind == TV_NUM)
	{
		klen = tv_number_text(numbuf, key.num);
		k = numbuf;
	}
	else
	{
		StringInfoData name;

		initStringInfo(&name);
		tv_js_string(st, &name, key);
		k = name.data;
		klen = name.len;
	}
	index = (obj.kind == TV_STR || obj.kind == TV_ARR) ? name_index(k, klen) : -1;
	switch (obj.kind)
	{
		case TV_FORLOOP:
			{
				LoopFrame  *f = obj.loop;

				if (name_is(k, klen, "index0") || name_is(k, klen, "i"))
					return tv_num(f->index0);
				if (name_is(k, klen, "index"))
					return tv_num(f->index0 + 1);
				if (name_is(k, klen, "first"))
					return tv_bool(f->index0 == 0);
				if (name_is(k, klen, "last"))
					return tv_bool(f->index0 == f->length - 1);
				if (name_is(k, klen, "rindex"))
					return tv_num(f->length - f->index0);
				if (name_is(k, klen, "rindex0"))
					return tv_num(f->length - f->index0 - 1);
				if (name_is(k, klen, "length"))
					return tv_num(f->length);
				if (name_is(k, klen, "name"))
					return tv_cstr(f->name);
				return tv_undef();
			}
		case TV_STR:
			if (index >= 0)
			{
				/* found by walking the UTF-8 up to it */
				tpl_spend(st, Min(obj.len, (int64) index * 4 + 4));
				return string_code_unit(obj.str, obj.len, index);
			}
			if (name_is(k, klen, "length") || name_is(k, klen, "size"))
			{
				tpl_spend(st, obj.len);
				return tv_num(utf16_length(obj.str, obj.len));
			}
			return tv_undef();
		case TV_ARR:
			n = tv_arr_len(obj);
			if (index >= 0)
				return index < n ? tv_arr_get(st, obj, index) : tv_undef();
			if (name_is(k, klen, "length") || name_is(k, klen, "size"))
				return tv_num(n);
			if (name_is(k, klen, "first"))
				return n > 0 ? tv_arr_get(st, obj, 0) : tv_undef();
			if (name_is(k, klen, "last"))
				return n > 0 ? tv_arr_get(st, obj, n - 1) : tv_undef();
			return tv_undef();
		case TV_OBJ:
			{
				JsonbValue	jv;

				tpl_spend(st, klen);
				if (getKeyJsonValueFromContainer(obj.jc, k, klen, &jv))
					return tv_from_jsonb(st, &jv);
				if (name_is(k, klen, "size"))
					return tv_num(JsonContainerSize(obj.jc));
				return tv_undef();
			}
		default:
			return tv_undef();
	}
}

/* ---------- Operators ---------- */

/* Is v one of the literal drops (nil, empty, blank) that compare specially? */
static inline bool
is_comparable_drop(TplValue v)
{
	return v.kind == TV_NILDROP || v.kind == TV_EMPTY || v.kind == TV_BLANK;
}

/* Is the whole string JavaScript whitespace (/^\s*$/)? */
static bool
all_js_space(const char *s, int len)
{
	int			i = 0;
	int			clen;

	while (i < len)
	{
		if (!js_space_at(s + i, len - i, &clen))
			return false;
		i += clen;
	}
	return true;
}

/* EmptyDrop.equals */
static bool
empty_equals(TplValue v)
{
	if (v.kind == TV_EMPTY || v.kind == TV_BLANK)
		return false;
	v = tv_to_value(v);
	if (v.kind == TV_STR)
		return v.len == 0;
	if (v.kind == TV_ARR)
		return tv_arr_len(v) == 0;
	if (v.kind == TV_OBJ)
		return JsonContainerSize(v.jc) == 0;
	return false;
}

/* drop.equals(v) for the nil, empty and blank literals. */
static bool
drop_equals(TplValue drop, TplValue v)
{
	if (drop.kind == TV_NILDROP)
		return tv_is_nil(v);
	if (drop.kind == TV_EMPTY)
		return empty_equals(v);
	/* blank */
	if (v.kind == TV_BOOL && !v.b)
		return true;
	if (tv_is_nil(v))
		return true;
	if (v.kind == TV_STR)
		return all_js_space(v.str, v.len);
	return empty_equals(v);
}

/* LiquidJS's == : drops first, arrays element by element, else ===. */
bool
tv_equals(RenderState *st, TplValue a, TplValue b)
{
	check_stack_depth();
	tpl_spend(st, WORK_PER_STEP);
	if (is_comparable_drop(a))
		return drop_equals(a, b);
	if (is_comparable_drop(b))
		return drop_equals(b, a);
	a = tv_to_value(a);
	b = tv_to_value(b);
	if (a.kind == TV_ARR)
	{
		int			n = tv_arr_len(a);
		int			i;

		if (b.kind != TV_ARR || tv_arr_len(b) != n)
			return false;
		for (i = 0; i < n; i++)
			if (!tv_equals(st, tv_arr_get(st, a, i), tv_arr_get(st, b, i)))
				return false;
		return true;
	}
	if (a.kind != b.kind)
		return false;
	switch (a.kind)
	{
		case TV_UNDEF:
		case TV_NULL:
			return true;
		case TV_BOOL:
			return a.b == b.b;
		case TV_NUM:
			return a.num == b.num;
		case TV_STR:
			tpl_spend(st, Min(a.len, b.len));
			return a.len == b.len && memcmp(a.str, b.str, a.len) == 0;
		case TV_OBJ:
			return a.jc == b.jc;
		default:
			return false;
	}
}

/* Compare two strings by UTF-16 code units, as JavaScript's < does. */
static int
utf16_cmp(const char *a, int alen, const char *b, int blen)
{
	int			i = 0;
	int			j = 0;

	while (i < alen && j < blen)
	{
		int			la;
		int			lb;
		pg_wchar	ca = decode_char(a + i, alen - i, &la);
		pg_wchar	cb = decode_char(b + j, blen - j, &lb);

		if (ca != cb)
		{
			/* code points above U+FFFF sort as their high surrogate */
			uint32		ka = ca >= 0x10000 ? 0xD800 + ((ca - 0x10000) >> 10) : ca;
			uint32		kb = cb >= 0x10000 ? 0xD800 + ((cb - 0x10000) >> 10) : cb;

			if (ka != kb)
				return ka < kb ? -1 : 1;
			return ca < cb ? -1 : 1;
		}
		i += la;
		j += lb;
	}
	return (i < alen) - (j < blen);
}

/* JavaScript's ToPrimitive for < and >: containers become their String(). */
static TplValue
to_primitive(RenderState *st, TplValue v)
{
	if (v.kind == TV_ARR || v.kind == TV_OBJ)
	{
		StringInfoData buf;

		initStringInfo(&buf);
		tv_js_string(st, &buf, v);
		return tv_str(buf.data, buf.len);
	}
	return v;
}

/* LiquidJS's <, >, <=, >=: JavaScript's relational comparison. */
bool
tv_compare(RenderState *st, OpKind op, TplValue a, TplValue b)
{
	double		x;
	double		y;

	tpl_spend(st, WORK_PER_STEP);
	if (a.kind == TV_NUM && b.kind == TV_NUM)
	{
		/* the common case, directly (NaN compares false) */
		x = a.num;
		y = b.num;
		return op == OP_LT ? x < y : op == OP_GT ? x > y : op == OP_LE ? x <= y : x >= y;
	}
	if (is_comparable_drop(a) || is_comparable_drop(b))
		return false;
	a = to_primitive(st, tv_to_value(a));
	b = to_primitive(st, tv_to_value(b));
	if (a.kind == TV_STR && b.kind == TV_STR)
	{
		int			c;

		tpl_spend(st, Min(a.len, b.len));
		c = utf16_cmp(a.str, a.len, b.str, b.len);
		return op == OP_LT ? c < 0 : op == OP_GT ? c > 0 : op == OP_LE ? c <= 0 : c >= 0;
	}
	x = tv_js_number(st, a);
	y = tv_js_number(st, b);
	if (isnan(x) || isnan(y))
		return false;
	return op == OP_LT ? x < y : op == OP_GT ? x > y : op == OP_LE ? x <= y : x >= y;
}

/*
 * Find needle in haystack, byte-wise; -1 if absent.  glibc's memmem is linear
 * (two-way) for any needle: a naive scan is quadratic on "aaa...ab".
 */
int
tv_find(const char *h, int hlen, const char *n, int nlen, int from)
{
	const char *p;

	if (nlen == 0)
		return from <= hlen ? from : -1;
	if (from < 0 || from > hlen || nlen > hlen - from)
		return -1;
	p = memmem(h + from, hlen - from, n, nlen);
	return p ? (int) (p - h) : -1;
}

/*
 * The last occurrence of needle in haystack; -1 if absent.  Searched forward
 * in both strings reversed (memmem stays linear): stepping forward match by
 * match is quadratic when matches overlap ("aaaa" in "aaa...a").
 */
int
tv_find_last(const char *h, int hlen, const char *n, int nlen)
{
	char	   *rh;
	char	   *rn;
	const char *p;
	int			i;
	int			at;

	if (nlen == 0)
		return hlen;
	if (nlen > hlen)
		return -1;
	rh = palloc(hlen);
	rn = palloc(nlen);
	for (i = 0; i < hlen; i++)
		rh[i] = h[hlen - 1 - i];
	for (i = 0; i < nlen; i++)
		rn[i] = n[nlen - 1 - i];
	p = memmem(rh, hlen, rn, nlen);
	/* the match ends at hlen - 1 - (p - rh) in the haystack */
	at = p ? hlen - (int) (p - rh) - nlen : -1;
	pfree(rh);
	pfree(rn);
	return at;
}

/* LiquidJS's contains: an array element ==, or a substring of String(b). */
bool
tv_contains(RenderState *st, TplValue a, TplValue b)
{
	a = tv_to_value(a);
	if (a.kind == TV_ARR)
	{
		int			n = tv_arr_len(a);
		int			i;

		for (i = 0; i < n; i++)
			if (tv_equals(st, tv_arr_get(st, a, i), b))
				return true;
		return false;
	}
	if (a.kind == TV_STR)
	{
		StringInfoData buf;

		initStringInfo(&buf);
		tv_js_string(st, &buf, tv_to_value(b));
		tpl_spend(st, a.len + buf.len);
		return tv_find(a.str, a.len, buf.data, buf.len, 0) >= 0;
	}
	return false;
}

/* ---------- Copies ---------- */

/* A deep copy of a value in CurrentMemoryContext (context containers are shared). */
TplValue
tv_copy(TplValue v)
{
	int			i;

	check_stack_depth();
	switch (v.kind)
	{
		case TV_STR:
			v.str = pnstrdup(v.str, v.len);
			break;
		case TV_ARR:
			if (!v.b)
			{
				TplValue   *items = palloc(Max(v.len, 1) * sizeof(TplValue));

				for (i = 0; i < v.len; i++)
					items[i] = tv_copy(v.items[i]);
				v.items = items;
			}
			break;
		case TV_FORLOOP:
			{
				LoopFrame  *f = palloc(sizeof(LoopFrame));

				*f = *v.loop;
				f->name = pstrdup(v.loop->name);
				f->outer = NULL;
				v.loop = f;
			}
			break;
		default:
			break;
	}
	return v;
}
