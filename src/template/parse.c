/*
 * parse.c
 *		Lexer and parser of the template engine: the text is cut into text,
 *		{{ output }} and {% tag %} tokens, whitespace control is applied, then
 *		tags are parsed into a tree of TplNode (template_int.h).
 *
 * The grammar is LiquidJS's (default options), including its leniency: an
 * expression reads as many operands and operators as it can and ignores what
 * follows, a filter that no engine knows passes its input through.  What
 * LiquidJS refuses at parse time is refused here with the position as line
 * and column.  Each byte is read a bounded number of times (linear time) and
 * lexing checks for interrupts.
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "template/template_int.h"

typedef enum TopKind
{
	TK_HTML,
	TK_TAG,
	TK_OUTPUT
} TopKind;

/* A top-level token: text, a tag or an output */
typedef struct TopToken
{
	TopKind		kind;
	int			begin;			/* the whole token */
	int			end;
	int			cbegin;			/* tag/output content without delimiters, "-" and blanks */
	int			cend;
	bool		trim_left;
	bool		trim_right;
	int			tl;				/* HTML: bytes trimmed at the start and end */
	int			tr;
	const char *name;			/* tag name */
	int			namelen;
	int			args;			/* tag: where its arguments start */
} TopToken;

typedef struct Parser
{
	const char *src;
	int			len;
	TopToken   *tokens;
	int			ntokens;
	int			maxtokens;
	int			next;			/* next token to parse */
	int			depth;
	int			value_depth;	/* values being read inside each other: [ and ( */
	sigjmp_buf	fail;
	char	   *errmsg;
} Parser;

/* A cursor over part of the source: LiquidJS's Tokenizer */
typedef struct Lex
{
	Parser	   *ps;
	const char *s;
	int			p;
	int			N;
} Lex;

static List *parse_token(Parser *ps, TopToken *t, List *nodes);
static void parse_fail(Parser *ps, int pos, const char *fmt,...) pg_attribute_printf(3, 4) pg_attribute_noreturn();

/* ---------- Errors ---------- */

/* "line L column C" of a byte offset; columns count characters. */
static char *
location(Parser *ps, int pos)
{
	int			line = 1;
	int			line_start = 0;
	int			i;

	for (i = 0; i < pos && i < ps->len; i++)
	{
		if (ps->src[i] == '\n')
		{
			line++;
			line_start = i + 1;
		}
	}
	return psprintf("line %d column %d", line,
					pg_mbstrlen_with_len(ps->src + line_start, i - line_start) + 1);
}

/* Fail the parse with a message ending in the position of pos. */
static void
parse_fail(Parser *ps, int pos, const char *fmt,...)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	appendStringInfo(&buf, " at %s", location(ps, pos));
	ps->errmsg = buf.data;
	siglongjmp(ps->fail, 1);
}

/* A short quote of the source from pos, for messages. */
static char *
snapshot(Parser *ps, int pos, int end)
{
	int			n = Min(end - pos, 32);

	if (n <= 0)
		return "end of tag";
	n = pg_mbcliplen(ps->src + pos, n, n);
	return psprintf("\"%.*s%s\"", n, ps->src + pos, end - pos > n ? "..." : "");
}

/* ---------- Character classes (LiquidJS's TYPES table) ---------- */

/* Byte length of a blank character at s (ASCII or Unicode space), else 0. */
int
blank_len(const char *s, int len)
{
	unsigned char c = (unsigned char) s[0];

	if (len <= 0)
		return 0;
	if (c == ' ' || (c >= '\t' && c <= '\r'))
		return 1;
	if (c < 0x80)
		return 0;
	if (c == 0xC2 && len >= 2 && (unsigned char) s[1] == 0xA0)
		return 2;				/* U+00A0 */
	if (c == 0xE1 && len >= 3)
	{
		if ((unsigned char) s[1] == 0x9A && (unsigned char) s[2] == 0x80)
			return 3;			/* U+1680 */
		if ((unsigned char) s[1] == 0xA0 && (unsigned char) s[2] == 0x8E)
			return 3;			/* U+180E */
	}
	if (c == 0xE2 && len >= 3)
	{
		unsigned char b1 = (unsigned char) s[1];
		unsigned char b2 = (unsigned char) s[2];

		if (b1 == 0x80 && ((b2 >= 0x80 && b2 <= 0x8A) || b2 == 0xA8 || b2 == 0xA9 || b2 == 0xAF))
			return 3;			/* U+2000..200A, 2028, 2029, 202F */
		if (b1 == 0x81 && b2 == 0x9F)
			return 3;			/* U+205F */
	}
	if (c == 0xE3 && len >= 3 && (unsigned char) s[1] == 0x80 && (unsigned char) s[2] == 0x80)
		return 3;				/* U+3000 */
	return 0;
}

/* Byte length of a blank character ending at s + len, else 0. */
int
blank_len_before(const char *s, int len)
{
	int			start = len - 1;

	if (len <= 0)
		return 0;
	while (start > 0 && len - start < 4 && ((unsigned char) s[start] & 0xC0) == 0x80)
		start--;
	return blank_len(s + start, len - start) == len - start ? len - start : 0;
}

/* Byte length of the (UTF-8) character at s, at least 1. */
int
utf8_char_len(const char *s, int len)
{
	unsigned char c = (unsigned char) s[0];
	int			n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;

	return Min(n, Max(len, 1));
}

/* Is the character at pos a word character (identifier part)? */
static bool
word_at(Lex *lx, int pos)
{
	unsigned char c;

	if (pos >= lx->N)
		return false;
	c = (unsigned char) lx->s[pos];
	if (c < 0x80)
		return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			c == '_' || c == '-' || c == '?';
	if (blank_len(lx->s + pos, lx->N - pos) > 0)
		return false;
	/* U+201C and U+201D are punctuation */
	if (c == 0xE2 && pos + 2 < lx->N && (unsigned char) lx->s[pos + 1] == 0x80 &&
		((unsigned char) lx->s[pos + 2] == 0x9C || (unsigned char) lx->s[pos + 2] == 0x9D))
		return false;
	return true;
}

/* ---------- Lexer primitives (over a range of the source) ---------- */

/* Skip blanks. */
static void
skip_blank(Lex *lx)
{
	int			n;

	while (lx->p < lx->N && (n = blank_len(lx->s + lx->p, lx->N - lx->p)) > 0)
		lx->p += n;
}

/* The byte at p + n, or 0 past the end. */
static inline char
peekc(Lex *lx, int n)
{
	return lx->p + n < lx->N ? lx->s[lx->p + n] : '\0';
}

/* Does the source just before pos end with the two bytes a b? */
static inline bool
rmatch2(Lex *lx, int pos, char a, char b)
{
	return pos >= 2 && lx->s[pos - 2] == a && lx->s[pos - 1] == b;
}

/* Advance until the two bytes a b are just behind; return the position or -1. */
static int
read_to(Lex *lx, char a, char b)
{
	while (lx->p < lx->N)
	{
		lx->p++;
		if (rmatch2(lx, lx->p, a, b))
			return lx->p;
	}
	return -1;
}

/* Advance until the byte c is just behind; return the position or -1. */
static int
read_to1(Lex *lx, char c)
{
	while (lx->p < lx->N)
	{
		lx->p++;
		if (lx->s[lx->p - 1] == c)
			return lx->p;
	}
	return -1;
}

/* Read an identifier (possibly empty) after blanks; sets *begin. */
static int
read_identifier(Lex *lx, int *begin)
{
	skip_blank(lx);
	*begin = lx->p;
	while (lx->p < lx->N && word_at(lx, lx->p))
		lx->p += utf8_char_len(lx->s + lx->p, lx->N - lx->p);
	return lx->p - *begin;
}

/* Is the longest word of words (a prefix of the input at p) bounded correctly? Length or -1. */
static int
match_words(Lex *lx, const char *const *words, int nwords)
{
	int			best = -1;
	int			i;

	for (i = 0; i < nwords; i++)
	{
		int			n = strlen(words[i]);

		if (lx->N - lx->p >= n && memcmp(lx->s + lx->p, words[i], n) == 0 && n > best)
			best = n;
	}
	if (best > 0)
	{
		char		last = lx->s[lx->p + best - 1];

		/* a word ending in a letter needs a boundary */
		if (((last >= 'a' && last <= 'z')) && word_at(lx, lx->p + best))
			return -1;
	}
	return best;
}

static const char *const operator_words[] = {
	"==", "!=", ">", "<", ">=", "<=", "contains", "not", "and", "or"
};
static const OpKind operator_kinds[] = {
	OP_EQ, OP_NE, OP_GT, OP_LT, OP_GE, OP_LE, OP_CONTAINS, OP_NOT, OP_AND, OP_OR
};
static const char *const literal_words[] = {
	"true", "false", "nil", "null", "empty", "blank"
};

/* Read an operator after blanks, or OP_NONE (position unchanged past blanks). */
static OpKind
read_operator(Lex *lx)
{
	int			n;
	int			i;

	skip_blank(lx);
	n = match_words(lx, operator_words, lengthof(operator_words));
	if (n <= 0)
		return OP_NONE;
	for (i = 0; i < lengthof(operator_words); i++)
	{
		if (strlen(operator_words[i]) == n && memcmp(lx->s + lx->p, operator_words[i], n) == 0)
		{
			lx->p += n;
			return operator_kinds[i];
		}
	}
	return OP_NONE;
}

/* A literal value token. */
static ValToken *
make_literal(Lex *lx, int begin, TplValue v)
{
	ValToken   *t = palloc0(sizeof(ValToken));

	t->kind = VT_LITERAL;
	t->literal = v;
	t->text = (char *) lx->s + begin;
	t->textlen = lx->p - begin;
	return t;
}

/* Read true/false/nil/null/empty/blank, or NULL. */
static ValToken *
read_literal(Lex *lx)
{
	int			begin;
	int			n;
	TplValue	v = {0};

	skip_blank(lx);
	begin = lx->p;
	n = match_words(lx, literal_words, lengthof(literal_words));
	if (n <= 0)
		return NULL;
	switch (lx->s[begin])
	{
		case 't':
			v = tv_bool(true);
			break;
		case 'f':
			v = tv_bool(false);
			break;
		case 'n':
			v.kind = TV_NILDROP;
			break;
		case 'e':
			v.kind = TV_EMPTY;
			break;
		case 'b':
			v.kind = TV_BLANK;
			break;
	}
	lx->p += n;
	return make_literal(lx, begin, v);
}

/* Append code point c as UTF-8 (a lone surrogate becomes U+FFFD, NUL is dropped). */
static void
append_code_point(StringInfo buf, pg_wchar c)
{
	unsigned char tmp[8];

	if (c == 0)
		return;
	if (c >= 0xD800 && c <= 0xDFFF)
		c = 0xFFFD;
	unicode_to_utf8(c, tmp);
	appendBinaryStringInfo(buf, (char *) tmp, pg_utf_mblen(tmp));
}

/* Is c a hex digit? */
static inline bool
is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Value of a hex (or octal) digit. */
static inline int
hex_val(char c)
{
	return c >= 'a' ? c - 'a' + 10 : c >= 'A' ? c - 'A' + 10 : c - '0';
}

/* Read a quoted string (escapes as LiquidJS decodes them), or NULL. */
static ValToken *
read_quoted(Lex *lx)
{
	int			begin;
	bool		escaped = false;
	StringInfoData buf;
	int			i;
	int			last;
	pg_wchar	pending_high = 0;

	skip_blank(lx);
	begin = lx->p;
	if (lx->p >= lx->N || (lx->s[lx->p] != '"' && lx->s[lx->p] != '\''))
		return NULL;
	lx->p++;
	while (lx->p < lx->N)
	{
		lx->p++;
		if (lx->s[lx->p - 1] == lx->s[begin] && !escaped)
			break;
		if (escaped)
			escaped = false;
		else if (lx->s[lx->p - 1] == '\\')
			escaped = true;
	}
	/* the text between the first and the last character of the token */
	initStringInfo(&buf);
	last = lx->p - 1;
	for (i = begin + 1; i < last; i++)
	{
		char		c = lx->s[i];
		char		e;

		if (c != '\\')
		{
			if (pending_high)
				append_code_point(&buf, pending_high);
			pending_high = 0;
			appendStringInfoChar(&buf, c);
			continue;
		}
		e = i + 1 < lx->N ? lx->s[i + 1] : '\0';
		if (e == 'u')
		{
			int			j = i + 2;
			pg_wchar	val = 0;

			while (j <= i + 5 && j < lx->N && is_hex(lx->s[j]))
				val = val * 16 + hex_val(lx->s[j++]);
			i = j - 1;
			if (val >= 0xD800 && val <= 0xDBFF)
			{
				if (pending_high)
					append_code_point(&buf, pending_high);
				pending_high = val;
				continue;
			}
			if (val >= 0xDC00 && val <= 0xDFFF && pending_high)
				val = 0x10000 + ((pending_high - 0xD800) << 10) + (val - 0xDC00);
			else if (pending_high)
				append_code_point(&buf, pending_high);
			pending_high = 0;
			append_code_point(&buf, val);
			continue;
		}
		if (pending_high)
			append_code_point(&buf, pending_high);
		pending_high = 0;
		if (e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't' || e == 'v')
		{
			appendStringInfoChar(&buf, e == 'b' ? '\b' : e == 'f' ? '\f' : e == 'n' ? '\n' :
								 e == 'r' ? '\r' : e == 't' ? '\t' : '\v');
			i++;
		}
		else if (e >= '0' && e <= '7')
		{
			int			j = i + 1;
			pg_wchar	val = 0;

			while (j <= i + 3 && j < lx->N && lx->s[j] >= '0' && lx->s[j] <= '7')
				val = val * 8 + hex_val(lx->s[j++]);
			i = j - 1;
			append_code_point(&buf, val);
		}
		else if (i + 1 < last || i + 1 < lx->N)
		{
			/* any other escaped character stands for itself (a whole UTF-8 character) */
			int			n = utf8_char_len(lx->s + i + 1, lx->N - i - 1);

			appendBinaryStringInfo(&buf, lx->s + i + 1, n);
			i += n;
		}
	}
	if (pending_high)
		append_code_point(&buf, pending_high);
	return make_literal(lx, begin, tv_str(buf.data, buf.len));
}

/* Read a number ([+-]digits[.digits]), or NULL. */
static ValToken *
read_number(Lex *lx)
{
	bool		decimal = false;
	bool		digit = false;
	int			n = 0;
	char		c;
	char	   *text;

	skip_blank(lx);
	c = peekc(lx, 0);
	if (c == '+' || c == '-')
		n++;
	while (lx->p + n <= lx->N)
	{
		c = peekc(lx, n);
		if (c >= '0' && c <= '9')
		{
			digit = true;
			n++;
		}
		else if (c == '.' && peekc(lx, n + 1) != '.')
		{
			if (decimal || !digit)
				return NULL;
			decimal = true;
			n++;
		}
		else
			break;
	}
	if (!digit || word_at(lx, lx->p + n))
		return NULL;
	text = pnstrdup(lx->s + lx->p, n);
	lx->p += n;
	return make_literal(lx, lx->p - n, tv_num(strtod(text, NULL)));
}

static ValToken *read_value(Lex *lx);

/* Read a value or fail. */
static ValToken *
read_value_or_fail(Lex *lx)
{
	ValToken   *v = read_value(lx);

	if (v == NULL)
		parse_fail(lx->ps, lx->p, "unexpected token %s, value expected",
				   snapshot(lx->ps, lx->p, lx->N));
	return v;
}

/* Read (a..b); other parentheses are an error (as in LiquidJS by default). */
static ValToken *
read_range(Lex *lx)
{
	int			begin;
	ValToken   *t;

	skip_blank(lx);
	begin = lx->p;
	if (peekc(lx, 0) != '(')
		return NULL;
	lx->p++;
	t = palloc0(sizeof(ValToken));
	t->kind = VT_RANGE;
	t->lhs = read_value_or_fail(lx);
	skip_blank(lx);
	if (peekc(lx, 0) != '.' || peekc(lx, 1) != '.')
		parse_fail(lx->ps, begin, "invalid range syntax (ranges are (a..b); parentheses do not group)");
	lx->p += 2;
	t->rhs = read_value_or_fail(lx);
	skip_blank(lx);
	if (lx->p >= lx->N || lx->s[lx->p] != ')')
		parse_fail(lx->ps, begin, "invalid range syntax (ranges are (a..b))");
	lx->p++;
	t->text = (char *) lx->s + begin;
	t->textlen = lx->p - begin;
	return t;
}

/* An identifier property: a literal string key. */
static ValToken *
make_key(Lex *lx, int begin, int n)
{
	ValToken   *t = palloc0(sizeof(ValToken));

	t->kind = VT_LITERAL;
	t->literal = tv_str(pnstrdup(lx->s + begin, n), n);
	t->text = (char *) lx->s + begin;
	t->textlen = n;
	return t;
}

/* Read .name, [value] and (at the start of a variable) name properties. */
static List *
read_properties(Lex *lx, bool is_begin)
{
	List	   *props = NIL;

	for (;;)
	{
		int			begin;
		int			n;

		if (peekc(lx, 0) == '[')
		{
			ValToken   *prop;

			lx->p++;
			prop = read_value(lx);
			if (prop == NULL)
				prop = make_key(lx, lx->p, 0);
			if (read_to1(lx, ']') == -1)
				parse_fail(lx->ps, lx->p, "\"[\" not closed");
			props = lappend(props, prop);
			continue;
		}
		if (is_begin && props == NIL)
		{
			int			save = lx->p;

			n = read_identifier(lx, &begin);
			if (n > 0)
			{
				props = lappend(props, make_key(lx, begin, n));
				continue;
			}
			lx->p = save;
		}
		if (peekc(lx, 0) == '.' && peekc(lx, 1) != '.')
		{
			lx->p++;
			n = read_identifier(lx, &begin);
			if (n == 0)
				break;
			props = lappend(props, make_key(lx, begin, n));
			continue;
		}
		break;
	}
	return props;
}

/* Read a value: literal, string, number or range, then properties; NULL if none. */
static ValToken *
read_value(Lex *lx)
{
	int			begin;
	ValToken   *base;
	List	   *props;
	ValToken   *t;

	CHECK_FOR_INTERRUPTS();
	skip_blank(lx);
	begin = lx->p;

	/*
	 * [ and ( read a value inside a value: a bound on the nesting keeps the
	 * recursion off the end of the stack (the blocks have theirs)
	 */
	if (++lx->ps->value_depth > TEMPLATE_MAX_NESTING)
		parse_fail(lx->ps, begin, "values nest deeper than %d levels", TEMPLATE_MAX_NESTING);
	base = read_literal(lx);
	if (base == NULL)
		base = read_quoted(lx);
	if (base == NULL)
		base = read_number(lx);
	if (base == NULL && peekc(lx, 0) == '(')
		base = read_range(lx);
	props = read_properties(lx, base == NULL);
	lx->ps->value_depth--;
	if (props == NIL)
		return base;
	t = palloc0(sizeof(ValToken));
	t->kind = VT_PROPS;
	t->base = base;
	t->props = props;

	t->text = (char *) lx->s + begin;
	t->textlen = lx->p - begin;
	return t;
}

/* Read filter argument: value, or key: value. */
static FilterArg *
read_filter_arg(Lex *lx)
{
	ValToken   *key = read_value(lx);
	FilterArg  *arg;

	if (key == NULL)
		return NULL;
	arg = palloc0(sizeof(FilterArg));
	skip_blank(lx);
	if (peekc(lx, 0) != ':')
	{
		arg->value = key;
		return arg;
	}
	lx->p++;
	arg->key = pnstrdup(key->text, key->textlen);
	arg->value = read_value(lx);
	return arg;
}

/* Read "| name: args" filters up to the end (or a "," or ")"). */
static List *
read_filters(Lex *lx)
{
	List	   *filters = NIL;

	for (;;)
	{
		FilterCall *f;
		int			begin;
		int			n;
		bool		unsupported;
		char		c;

		skip_blank(lx);
		if (lx->p >= lx->N)
			return filters;
		c = lx->s[lx->p];
		if (c == ')' || c == ',')
			return filters;
		if (c != '|')
			parse_fail(lx->ps, lx->p, "expected \"|\" before filter, found %s",
					   snapshot(lx->ps, lx->p, lx->N));
		lx->p++;
		n = read_identifier(lx, &begin);
		if (n == 0)
		{
			if (lx->p < lx->N)
				parse_fail(lx->ps, lx->p, "expected filter name");
			return filters;
		}
		f = palloc0(sizeof(FilterCall));
		f->id = tpl_filter_lookup(lx->s + begin, n, &unsupported);
		if (unsupported)
			parse_fail(lx->ps, begin, "filter \"%.*s\" is not supported", n, lx->s + begin);
		skip_blank(lx);
		c = peekc(lx, 0);
		if (c == ':')
		{
			do
			{
				FilterArg  *arg;

				lx->p++;
				arg = read_filter_arg(lx);
				if (arg)
					f->args = lappend(f->args, arg);
				skip_blank(lx);
				c = peekc(lx, 0);
				if (!(lx->p >= lx->N || c == ',' || c == '|' || c == ')'))
					parse_fail(lx->ps, lx->p, "unexpected character %s",
							   snapshot(lx->ps, lx->p, lx->N));
			} while (c == ',');
		}
		else if (!(c == '|' || c == ')' || c == ',' || lx->p >= lx->N))
			parse_fail(lx->ps, lx->p, "expected \":\" after filter name");
		filters = lappend(filters, f);
	}
}

/* Precedence of an operator (LiquidJS's). */
static int
precedence(OpKind op)
{
	return op == OP_AND || op == OP_OR ? 0 : op == OP_NOT ? 1 : 2;
}

/* Read an expression and its filters: LiquidJS's readFilteredValue. */
static FilteredValue *
read_filtered_value(Lex *lx)
{
	FilteredValue *fv = palloc0(sizeof(FilteredValue));
	int			maxops = 8;
	OpKind	   *ops = palloc(maxops * sizeof(OpKind));
	int			nops = 0;
	int			max = 8;
	int			begin;

	skip_blank(lx);
	begin = lx->p;
	fv->items = palloc(max * sizeof(ExprItem));
	while (lx->p < lx->N)
	{
		OpKind		op = read_operator(lx);
		ValToken   *v;

		if (fv->nitems + nops + 2 > max)
		{
			max *= 2;
			fv->items = repalloc(fv->items, max * sizeof(ExprItem));
		}
		if (op != OP_NONE)
		{
			/* shunting: pop operators of strictly higher precedence */
			while (nops > 0 && precedence(ops[nops - 1]) > precedence(op))
				fv->items[fv->nitems++] = (ExprItem) {.op = ops[--nops]};
			if (nops == maxops)
			{
				maxops *= 2;
				ops = repalloc(ops, maxops * sizeof(OpKind));
			}
			ops[nops++] = op;
			continue;
		}
		v = read_value(lx);
		if (v == NULL)
			break;
		fv->items[fv->nitems++] = (ExprItem) {.op = OP_NONE, .operand = v};
	}
	while (nops > 0)
	{
		if (fv->nitems + 1 > max)
		{
			max *= 2;
			fv->items = repalloc(fv->items, max * sizeof(ExprItem));
		}
		fv->items[fv->nitems++] = (ExprItem) {.op = ops[--nops]};
	}
	if (fv->nitems == 0)
		parse_fail(lx->ps, begin, "invalid value expression: %s", snapshot(lx->ps, begin, lx->N));
	fv->filters = read_filters(lx);
	return fv;
}

/* ---------- Top-level tokens ---------- */

/* Append a top-level token. */
static TopToken *
add_token(Parser *ps, TopKind kind, int begin, int end)
{
	TopToken   *t;

	if (ps->ntokens == ps->maxtokens)
	{
		ps->maxtokens *= 2;
		ps->tokens = repalloc(ps->tokens, ps->maxtokens * sizeof(TopToken));
	}
	t = &ps->tokens[ps->ntokens++];
	memset(t, 0, sizeof(TopToken));
	t->kind = kind;
	t->begin = begin;
	t->end = end;
	return t;
}

/* Set the content range and trim flags of a tag or output token. */
static void
delimit(Parser *ps, TopToken *t)
{
	int			l = t->begin + 2;
	int			r = t->end - 2;
	int			n;

	t->trim_left = l < ps->len && ps->src[l] == '-';
	t->trim_right = r - 1 >= 0 && ps->src[r - 1] == '-';
	if (t->trim_left)
		l++;
	if (t->trim_right)
		r--;
	while (l < r && (n = blank_len(ps->src + l, r - l)) > 0)
		l += n;
	while (r > l && (n = blank_len_before(ps->src + l, r - l)) > 0)
		r -= n;
	t->cbegin = l;
	t->cend = Max(r, l);
}

/* Name and arguments of a tag token; fail without a name. */
static void
tag_name(Parser *ps, TopToken *t)
{
	Lex			lx = {ps, ps->src, t->cbegin, t->cend};
	int			begin;
	int			n;

	skip_blank(&lx);
	if (lx.p < lx.N && lx.s[lx.p] == '#')
	{
		begin = lx.p++;
		n = 1;
	}
	else
		n = read_identifier(&lx, &begin);
	if (n == 0)
		parse_fail(ps, t->begin, "illegal tag syntax, tag name expected");
	t->name = ps->src + begin;
	t->namelen = n;
	skip_blank(&lx);
	t->args = lx.p;
}

/* Is the tag token named name? */
static bool
tag_is(TopToken *t, const char *name)
{
	return t->kind == TK_TAG && t->namelen == strlen(name) && memcmp(t->name, name, t->namelen) == 0;
}

/* The content after the raw tag: text tokens up to and including {% endraw %}. */
static bool
read_raw_content(Parser *ps, Lex *lx)
{
	int			begin = lx->p;
	int			left = read_to(lx, '{', '%') - 2;

	while (lx->p < lx->N)
	{
		int			idbegin;
		int			n = read_identifier(lx, &idbegin);

		CHECK_FOR_INTERRUPTS();
		if (!(n == 6 && memcmp(lx->s + idbegin, "endraw", 6) == 0))
		{
			left = read_to(lx, '{', '%') - 2;
			continue;
		}
		while (lx->p <= lx->N)
		{
			if (rmatch2(lx, lx->p, '%', '}'))
			{
				int			end = lx->p;

				if (begin == left)
				{
					TopToken   *t = add_token(ps, TK_TAG, begin, end);

					delimit(ps, t);
					tag_name(ps, t);
					return false;	/* raw mode ends */
				}
				lx->p = left;
				add_token(ps, TK_HTML, begin, left);
				return true;
			}
			if (rmatch2(lx, lx->p, '{', '%'))
				break;
			lx->p++;
		}
	}
	parse_fail(ps, begin, "{%% raw %%} not closed");
	return false;
}

/* Cut the source into top-level tokens and apply whitespace control. */
static void
tokenize(Parser *ps)
{
	Lex			lx = {ps, ps->src, 0, ps->len};
	bool		in_raw = false;
	int			i;

	while (lx.p < lx.N)
	{
		int			begin = lx.p;

		CHECK_FOR_INTERRUPTS();
		if (in_raw)
			in_raw = read_raw_content(ps, &lx);
		else if (peekc(&lx, 0) == '{' && peekc(&lx, 1) == '%')
		{
			TopToken   *t;

			if (read_to(&lx, '%', '}') == -1)
				parse_fail(ps, begin, "tag %s not closed", snapshot(ps, begin, ps->len));
			t = add_token(ps, TK_TAG, begin, lx.p);
			delimit(ps, t);
			tag_name(ps, t);
			if (tag_is(t, "raw"))
				in_raw = true;
		}
		else if (peekc(&lx, 0) == '{' && peekc(&lx, 1) == '{')
		{
			bool		closed = false;

			/* quoted strings may hold "}}" */
			while (lx.p < lx.N)
			{
				char		c = lx.s[lx.p];

				if (c == '"' || c == '\'')
				{
					(void) read_quoted(&lx);
					continue;
				}
				lx.p++;
				if (rmatch2(&lx, lx.p, '}', '}'))
				{
					closed = true;
					break;
				}
			}
			if (!closed)
				parse_fail(ps, begin, "output %s not closed", snapshot(ps, begin, ps->len));
			delimit(ps, add_token(ps, TK_OUTPUT, begin, lx.p));
		}
		else
		{
			/* text up to the next "{%" or "{{" (not at begin: the branches above) */
			lx.p++;
			while (lx.p < lx.N)
			{
				const char *brace = memchr(lx.s + lx.p, '{', lx.N - lx.p);

				if (brace == NULL)
				{
					lx.p = lx.N;
					break;
				}
				lx.p = brace - lx.s;
				if (lx.p + 1 < lx.N && (lx.s[lx.p + 1] == '%' || lx.s[lx.p + 1] == '{'))
					break;
				lx.p++;
			}
			add_token(ps, TK_HTML, begin, lx.p);
		}
	}

	/* whitespace control: "-" trims the blanks of the text next to it */
	in_raw = false;
	for (i = 0; i < ps->ntokens; i++)
	{
		TopToken   *t = &ps->tokens[i];

		if (t->kind == TK_HTML)
			continue;
		if (!in_raw && t->trim_left && i > 0 && ps->tokens[i - 1].kind == TK_HTML)
		{
			TopToken   *h = &ps->tokens[i - 1];
			int			n;

			while (h->end - h->tr > h->begin + h->tl &&
				   (n = blank_len_before(ps->src + h->begin + h->tl,
										 h->end - h->tr - h->begin - h->tl)) > 0)
				h->tr += n;
		}
		if (tag_is(t, "raw"))
			in_raw = true;
		else if (tag_is(t, "endraw"))
			in_raw = false;
		if (!in_raw && t->trim_right && i + 1 < ps->ntokens && ps->tokens[i + 1].kind == TK_HTML)
		{
			TopToken   *h = &ps->tokens[i + 1];
			int			n;

			while (h->begin + h->tl < h->end - h->tr &&
				   (n = blank_len(ps->src + h->begin + h->tl,
								  h->end - h->tr - h->begin - h->tl)) > 0)
				h->tl += n;
		}
	}
}

/* ---------- Tags ---------- */

/* A cursor over a tag's arguments. */
static Lex
tag_args(Parser *ps, TopToken *t)
{
	Lex			lx = {ps, ps->src, t->args, t->cend};

	return lx;
}

/* Fail unless a tag (else, endif, endfor) has no arguments. */
static void
assert_no_args(Parser *ps, TopToken *t)
{
	if (t->args < t->cend)
		parse_fail(ps, t->args, "unexpected %s after {%% %.*s %%}",
				   snapshot(ps, t->args, t->cend), t->namelen, t->name);
}

/* Depth guard for block tags. */
static void
enter_block(Parser *ps, TopToken *t)
{
	if (++ps->depth > TEMPLATE_MAX_NESTING)
		parse_fail(ps, t->begin, "nesting too deep: {%% %.*s %%} is more than %d blocks deep",
				   t->namelen, t->name, TEMPLATE_MAX_NESTING);
}

/*
 * Parse tokens into nodes until a tag named in stops (returned; the caller
 * handles it) or the end of the template (NULL).
 */
static TopToken *
parse_until(Parser *ps, const char *const *stops, int nstops, List **nodes)
{
	while (ps->next < ps->ntokens)
	{
		TopToken   *t = &ps->tokens[ps->next++];
		int			i;

		if (t->kind == TK_TAG)
			for (i = 0; i < nstops; i++)
				if (tag_is(t, stops[i]))
					return t;
		*nodes = parse_token(ps, t, *nodes);
	}
	return NULL;
}

/* Fail on a block that reaches the end of the template. */
static void
not_closed(Parser *ps, TopToken *open)
{
	parse_fail(ps, open->begin, "tag {%% %.*s %%} not closed", open->namelen, open->name);
}

/* A new node. */
static TplNode *
make_node(NodeKind kind)
{
	TplNode    *n = palloc0(sizeof(TplNode));

	n->kind = kind;
	return n;
}

/* {% if %} ... {% elsif %} ... {% else %} ... {% endif %} */
static TplNode *
parse_if(Parser *ps, TopToken *open)
{
	static const char *const stops[] = {"elsif", "else", "endif"};
	TplNode    *node = make_node(NODE_IF);
	Branch	   *b = palloc0(sizeof(Branch));
	Lex			lx = tag_args(ps, open);
	List	  **body;

	b->cond = read_filtered_value(&lx);
	node->branches = list_make1(b);
	body = &b->body;
	for (;;)
	{
		TopToken   *t = parse_until(ps, stops, lengthof(stops), body);

		if (t == NULL)
			not_closed(ps, open);
		if (tag_is(t, "elsif"))
		{
			Lex			el = tag_args(ps, t);

			if (node->has_else)
				parse_fail(ps, t->begin, "unexpected elsif after else");
			b = palloc0(sizeof(Branch));
			b->cond = read_filtered_value(&el);
			node->branches = lappend(node->branches, b);
			body = &b->body;
		}
		else if (tag_is(t, "else"))
		{
			assert_no_args(ps, t);
			if (node->has_else)
				parse_fail(ps, t->begin, "duplicated else");
			node->has_else = true;
			body = &node->else_body;
		}
		else
		{
			assert_no_args(ps, t);
			return node;
		}
	}
}

/* {% unless %}: the first branch runs on a falsy value; LiquidJS's quirks kept. */
static TplNode *
parse_unless(Parser *ps, TopToken *open)
{
	static const char *const stops[] = {"elsif", "else", "endunless"};
	TplNode    *node = make_node(NODE_IF);
	Branch	   *b = palloc0(sizeof(Branch));
	Lex			lx = tag_args(ps, open);
	List	   *discard = NIL;
	List	  **body;
	int			else_count = 0;

	b->cond = read_filtered_value(&lx);
	b->want_falsy = true;
	node->branches = list_make1(b);
	body = &b->body;
	for (;;)
	{
		TopToken   *t = parse_until(ps, stops, lengthof(stops), body);

		if (t == NULL)
			not_closed(ps, open);
		if (tag_is(t, "elsif"))
		{
			Lex			el = tag_args(ps, t);

			if (else_count > 0)
			{
				discard = NIL;
				body = &discard;
				continue;
			}
			b = palloc0(sizeof(Branch));
			b->cond = read_filtered_value(&el);
			node->branches = lappend(node->branches, b);
			body = &b->body;
		}
		else if (tag_is(t, "else"))
		{
			/* only the first else's body counts */
			else_count++;
			node->has_else = true;
			if (else_count == 1)
				body = &node->else_body;
			else
			{
				discard = NIL;
				body = &discard;
			}
		}
		else
			return node;
	}
}

/* {% for var in collection offset: n limit: n reversed %} ... {% else %} ... {% endfor %} */
static TplNode *
parse_for(Parser *ps, TopToken *open)
{
	static const char *const stops[] = {"else", "endfor"};
	TplNode    *node = make_node(NODE_FOR);
	Lex			lx = tag_args(ps, open);
	int			vbegin;
	int			vlen;
	int			ibegin;
	int			ilen;
	List	  **body = &node->body;

	vlen = read_identifier(&lx, &vbegin);
	ilen = read_identifier(&lx, &ibegin);
	node->collection = read_value(&lx);
	if (vlen == 0 || !(ilen == 2 && memcmp(lx.s + ibegin, "in", 2) == 0) || node->collection == NULL)
		parse_fail(ps, open->begin, "illegal tag: %s (expected {%% for item in collection %%})",
				   snapshot(ps, open->begin, open->end));
	node->name = pnstrdup(lx.s + vbegin, vlen);
	node->namelen = vlen;
	node->loopname = psprintf("%s-%.*s", node->name, node->collection->textlen, node->collection->text);
	/* modifiers: name[: value], separated by blanks or commas */
	for (;;)
	{
		int			kbegin;
		int			klen;
		ValToken   *value = NULL;

		skip_blank(&lx);
		if (peekc(&lx, 0) == ',')
			lx.p++;
		klen = read_identifier(&lx, &kbegin);
		if (klen == 0)
			break;
		skip_blank(&lx);
		if (peekc(&lx, 0) == ':')
		{
			lx.p++;
			value = read_value(&lx);
		}
		/* a modifier without a value is true; a later one replaces an earlier one */
		if (klen == 6 && memcmp(lx.s + kbegin, "offset", 6) == 0)
		{
			node->has_offset = true;
			node->offset = value;
		}
		else if (klen == 5 && memcmp(lx.s + kbegin, "limit", 5) == 0)
		{
			node->has_limit = true;
			node->limit = value;
		}
		else if (klen == 8 && memcmp(lx.s + kbegin, "reversed", 8) == 0)
		{
			node->reversed = true;
			node->rev_value = value;
		}
	}
	for (;;)
	{
		TopToken   *t = parse_until(ps, stops, lengthof(stops), body);

		if (t == NULL)
			not_closed(ps, open);
		assert_no_args(ps, t);
		if (tag_is(t, "endfor"))
			return node;
		node->has_else = true;
		body = &node->else_body;
	}
}

/* {% case value %} {% when a, b or c %} ... {% else %} ... {% endcase %} */
static TplNode *
parse_case(Parser *ps, TopToken *open)
{
	static const char *const stops[] = {"when", "else", "endcase"};
	TplNode    *node = make_node(NODE_CASE);
	Lex			lx = tag_args(ps, open);
	List	   *discard = NIL;
	List	  **body = &discard;
	int			else_count = 0;

	node->value = read_filtered_value(&lx);
	for (;;)
	{
		TopToken   *t = parse_until(ps, stops, lengthof(stops), body);

		if (t == NULL)
			not_closed(ps, open);
		if (tag_is(t, "when"))
		{
			Lex			wl = tag_args(ps, t);
			Branch	   *b;

			if (else_count > 0)
				continue;		/* a when after else: its body goes to else */
			b = palloc0(sizeof(Branch));
			while (wl.p < wl.N)
			{
				b->values = lappend(b->values, read_value_or_fail(&wl));
				skip_blank(&wl);
				if (peekc(&wl, 0) == ',')
					(void) read_to1(&wl, ',');
				else
					(void) read_to(&wl, 'o', 'r');
			}
			node->branches = lappend(node->branches, b);
			body = &b->body;
		}
		else if (tag_is(t, "else"))
		{
			else_count++;
			node->has_else = true;
			if (else_count == 1)
				body = &node->else_body;
			else
			{
				discard = NIL;
				body = &discard;
			}
		}
		else
			return node;
	}
}

/* {% capture name %} ... {% endcapture %} */
static TplNode *
parse_capture(Parser *ps, TopToken *open)
{
	static const char *const stops[] = {"endcapture"};
	TplNode    *node = make_node(NODE_CAPTURE);
	Lex			lx = tag_args(ps, open);
	int			begin;
	int			n = read_identifier(&lx, &begin);

	if (n > 0)
		node->name = pnstrdup(lx.s + begin, n);
	else
	{
		ValToken   *q = read_quoted(&lx);

		if (q == NULL)
			parse_fail(ps, lx.p, "invalid capture name");
		node->name = pnstrdup(q->literal.str, q->literal.len);
	}
	node->namelen = strlen(node->name);
	if (parse_until(ps, stops, 1, &node->body) == NULL)
		not_closed(ps, open);
	return node;
}

/* A text node for a top-level text token (NULL when trimmed to nothing). */
static TplNode *
text_node(Parser *ps, int begin, int end)
{
	TplNode    *node;

	if (end <= begin)
		return NULL;
	node = make_node(NODE_TEXT);
	node->text = ps->src + begin;
	node->len = end - begin;
	return node;
}

/* Parse one top-level token (a block tag consumes its body); append to nodes. */
static List *
parse_token(Parser *ps, TopToken *t, List *nodes)
{
	TplNode    *node = NULL;
	Lex			lx;
	int			i;

	CHECK_FOR_INTERRUPTS();
	if (t->kind == TK_HTML)
		node = text_node(ps, t->begin + t->tl, t->end - t->tr);
	else if (t->kind == TK_OUTPUT)
	{
		lx = (Lex) {ps, ps->src, t->cbegin, t->cend};
		node = make_node(NODE_OUTPUT);
		node->value = read_filtered_value(&lx);
	}
	else if (tag_is(t, "if"))
	{
		enter_block(ps, t);
		node = parse_if(ps, t);
		ps->depth--;
	}
	else if (tag_is(t, "unless"))
	{
		enter_block(ps, t);
		node = parse_unless(ps, t);
		ps->depth--;
	}
	else if (tag_is(t, "for"))
	{
		enter_block(ps, t);
		node = parse_for(ps, t);
		ps->depth--;
	}
	else if (tag_is(t, "case"))
	{
		enter_block(ps, t);
		node = parse_case(ps, t);
		ps->depth--;
	}
	else if (tag_is(t, "capture"))
	{
		enter_block(ps, t);
		node = parse_capture(ps, t);
		ps->depth--;
	}
	else if (tag_is(t, "assign"))
	{
		int			begin;
		int			n;

		lx = tag_args(ps, t);
		n = read_identifier(&lx, &begin);
		if (n == 0)
			parse_fail(ps, t->begin, "expected variable name in {%% assign %%}");
		skip_blank(&lx);
		if (peekc(&lx, 0) != '=')
			parse_fail(ps, lx.p, "expected \"=\" in {%% assign %%}");
		lx.p++;
		node = make_node(NODE_ASSIGN);
		node->name = pnstrdup(lx.s + begin, n);
		node->namelen = n;
		node->value = read_filtered_value(&lx);
	}
	else if (tag_is(t, "echo"))
	{
		lx = tag_args(ps, t);
		skip_blank(&lx);
		if (lx.p < lx.N)
		{
			node = make_node(NODE_OUTPUT);
			node->value = read_filtered_value(&lx);
		}
	}
	else if (tag_is(t, "break"))
		node = make_node(NODE_BREAK);
	else if (tag_is(t, "continue"))
		node = make_node(NODE_CONTINUE);
	else if (tag_is(t, "comment"))
	{
		/* skip to the first endcomment (comments do not nest) */
		while (ps->next < ps->ntokens && !tag_is(&ps->tokens[ps->next], "endcomment"))
			ps->next++;
		if (ps->next == ps->ntokens)
			not_closed(ps, t);
		ps->next++;
	}
	else if (tag_is(t, "raw"))
	{
		/* the raw text, as written (whitespace control does not apply inside) */
		while (ps->next < ps->ntokens && !tag_is(&ps->tokens[ps->next], "endraw"))
		{
			TopToken   *r = &ps->tokens[ps->next++];
			TplNode    *text = text_node(ps, r->begin, r->end);

			if (text)
				nodes = lappend(nodes, text);
		}
		if (ps->next == ps->ntokens)
			not_closed(ps, t);
		ps->next++;
	}
	else if (tag_is(t, "#"))
	{
		/* inline comment: every line must start with "#" */
		for (i = t->args; i < t->cend; i++)
		{
			if (ps->src[i] == '\n')
			{
				int			j = i + 1;
				int			clen;

				while (j < t->cend && js_space_at(ps->src + j, t->cend - j, &clen))
					j += clen;
				if (j < t->cend && ps->src[j] != '#')
					parse_fail(ps, j, "every line of an inline comment must start with a \"#\" character");
				i = j - 1;
			}
		}
	}
	else if (tag_is(t, "include") || tag_is(t, "render") || tag_is(t, "layout") ||
			 tag_is(t, "block") || tag_is(t, "cycle") || tag_is(t, "tablerow") ||
			 tag_is(t, "increment") || tag_is(t, "decrement") || tag_is(t, "liquid"))
		parse_fail(ps, t->begin, "tag \"%.*s\" is not supported", t->namelen, t->name);
	else
		parse_fail(ps, t->begin, "tag \"%.*s\" not found", t->namelen, t->name);
	if (node != NULL)
		nodes = lappend(nodes, node);
	return nodes;
}

/* ---------- Entry points ---------- */

/* Compile a template; NULL and *errmsg (naming line and column) on a syntax error. */
Template *
template_parse(const char *src, int len, char **errmsg)
{
	MemoryContext callercxt = CurrentMemoryContext;
	MemoryContext cxt;
	Parser	   *ps;
	Template   *tpl;

	*errmsg = NULL;
	if (len > TEMPLATE_MAX_SOURCE_BYTES)
	{
		*errmsg = psprintf("the template is %d bytes long, at most %d are parsed",
						   len, TEMPLATE_MAX_SOURCE_BYTES);
		return NULL;
	}
	cxt = AllocSetContextCreate(callercxt, "novu template", ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(cxt);
	ps = palloc0(sizeof(Parser));
	/* the template keeps pointers into its text: copy it */
	ps->src = pnstrdup(src, len);
	ps->len = len;
	ps->maxtokens = 16;
	ps->tokens = palloc(ps->maxtokens * sizeof(TopToken));
	if (sigsetjmp(ps->fail, 0) != 0)
	{
		MemoryContextSwitchTo(callercxt);
		*errmsg = pstrdup(ps->errmsg);
		MemoryContextDelete(cxt);
		return NULL;
	}
	tokenize(ps);
	tpl = palloc0(sizeof(Template));
	while (ps->next < ps->ntokens)
		tpl->nodes = parse_token(ps, &ps->tokens[ps->next++], tpl->nodes);
	pfree(ps->tokens);
	MemoryContextSwitchTo(callercxt);
	return tpl;
}

/* True if src contains neither "{{" nor "{%". */
bool
template_is_static(const char *src, int len)
{
	const char *p = src;
	const char *end = src + len;

	while ((p = memchr(p, '{', end - p)) != NULL && p + 1 < end)
	{
		if (p[1] == '{' || p[1] == '%')
			return false;
		p++;
	}
	return true;
}
