/*
 * template.c
 *		The Liquid-style template engine: a lexer, a recursive-descent parser
 *		building an AST, and a renderer walking that AST against a jsonb context.
 *
 * Language: text is copied verbatim; {{ expr }} outputs; {% tag %} controls;
 * "{{-", "-}}", "{%-" and "-%}" strip the whitespace next to them.  expr is a
 * variable path (payload.items[0]["name"], .size/.first/.last) or a literal,
 * followed by filters (default, upcase, downcase, capitalize, size, join).
 * Tags: if/elsif/else/endif, unless/else/endunless, for/else/endfor (with
 * forloop.* and limit:/offset:), comment/endcomment and raw/endraw.
 *
 * Neither parsing nor rendering ereports for bad template text or data: a
 * failure unwinds (siglongjmp, within this file only) to template_parse() or
 * template_render(), which return NULL and a palloc'd message.  Rendering
 * runs no SQL and reads no catalog: a background worker may render outside a
 * transaction.  Each call works in a child memory context of the caller's.
 *
 * Hostile templates (DESIGN 5): parsing reads each byte a bounded number of
 * times (the scans of raw and comment bodies included); parser and renderer
 * check for interrupts as they go; a render frees the values of each node
 * once used and fails past TEMPLATE_MAX_WORK units of work or
 * TEMPLATE_MAX_MEMORY bytes held (see "Render budget").
 */
#include "postgres.h"

#include <setjmp.h>

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "template/template.h"

PG_FUNCTION_INFO_V1(novu_render);
PG_FUNCTION_INFO_V1(novu_check_template);

#define TEMPLATE_HINT \
	"Templates use Liquid syntax: {{ payload.name }}, {% if ... %}...{% endif %}."

/* Longest number literal accepted (numeric_in would ereport on absurd ones) */
#define MAX_NUMBER_LITERAL	100

typedef enum CompareOp
{
	CMP_NONE,					/* no operator: truthiness of the left side */
	CMP_EQ,
	CMP_NE,
	CMP_LT,
	CMP_GT,
	CMP_LE,
	CMP_GE,
	CMP_CONTAINS
} CompareOp;

typedef enum TokenKind
{
	TOK_EOF,
	TOK_TEXT,					/* literal text outside tags */
	TOK_OUTPUT_OPEN,			/* {{ */
	TOK_TAG_OPEN,				/* {% */
	TOK_OUTPUT_CLOSE,			/* }} */
	TOK_TAG_CLOSE,				/* %} */
	TOK_IDENT,
	TOK_STRING,					/* str/len: the contents, without quotes */
	TOK_NUMBER,
	TOK_PUNCT,					/* . [ ] | : , */
	TOK_OP						/* comparison operator, in op */
} TokenKind;

typedef struct Token
{
	TokenKind	kind;
	CompareOp	op;
	const char *str;			/* points into the source */
	int			len;
	int			pos;			/* byte offset in the source */
} Token;

/* Operators and punctuation inside tags, two-character ones first */
static const struct
{
	const char *text;
	CompareOp	op;				/* CMP_NONE for punctuation */
}			symbols[] = {
	{"==", CMP_EQ}, {"!=", CMP_NE}, {"<>", CMP_NE}, {"<=", CMP_LE}, {">=", CMP_GE},
	{"<", CMP_LT}, {">", CMP_GT}, {".", CMP_NONE}, {"[", CMP_NONE}, {"]", CMP_NONE},
	{"|", CMP_NONE}, {":", CMP_NONE}, {",", CMP_NONE},
};

typedef enum ValueKind
{
	VAL_NIL,					/* missing variable, JSON null, nil literal */
	VAL_EMPTY,					/* the "empty" literal */
	VAL_BOOL,
	VAL_NUMBER,
	VAL_STRING,
	VAL_ARRAY,
	VAL_OBJECT
} ValueKind;

typedef struct TplValue
{
	ValueKind	kind;
	bool		boolean;
	Numeric		number;
	const char *str;			/* VAL_STRING: not NUL-terminated */
	int			len;
	JsonbContainer *container;	/* VAL_ARRAY, VAL_OBJECT */
} TplValue;

typedef enum FilterKind
{
	FILTER_DEFAULT,
	FILTER_UPCASE,
	FILTER_DOWNCASE,
	FILTER_CAPITALIZE,
	FILTER_SIZE,
	FILTER_JOIN
} FilterKind;

static const struct
{
	const char *name;
	FilterKind	kind;
	int			min_args;
	int			max_args;
}			filter_defs[] = {
	{"default", FILTER_DEFAULT, 1, 1},
	{"upcase", FILTER_UPCASE, 0, 0},
	{"downcase", FILTER_DOWNCASE, 0, 0},
	{"capitalize", FILTER_CAPITALIZE, 0, 0},
	{"size", FILTER_SIZE, 0, 0},
	{"join", FILTER_JOIN, 0, 1},
};

typedef struct Filter
{
	FilterKind	kind;
	List	   *args;			/* of TplExpr (literals or paths) */
} Filter;

typedef struct PathStep
{
	char	   *key;			/* .key or ["key"]; NULL for [index] */
	int			keylen;
	int			index;
} PathStep;

typedef struct TplExpr
{
	bool		is_literal;
	TplValue	literal;
	char	   *name;			/* root variable of a path */
	List	   *path;			/* of PathStep */
	List	   *filters;		/* of Filter */
} TplExpr;

/* One comparison of a condition; and_next tells how it joins the next one */
typedef struct Comparison
{
	TplExpr    *left;
	CompareOp	op;
	TplExpr    *right;
	bool		and_next;
} Comparison;

typedef enum NodeKind
{
	NODE_TEXT,
	NODE_OUTPUT,
	NODE_IF,
	NODE_FOR
} NodeKind;

typedef struct TplNode
{
	NodeKind	kind;
	char	   *text;			/* NODE_TEXT */
	int			len;
	TplExpr    *expr;			/* NODE_OUTPUT */
	List	   *conds;			/* NODE_IF: of List of Comparison, and in */
	List	   *bodies;			/* parallel, of List of TplNode */
	bool		negate;			/* NODE_IF from unless: first condition negated */
	char	   *var;			/* NODE_FOR */
	TplExpr    *collection;
	TplExpr    *limit;
	TplExpr    *offset;
	List	   *body;
	List	   *else_body;		/* NODE_IF and NODE_FOR */
} TplNode;

struct Template
{
	List	   *nodes;
};

typedef struct Parser
{
	const char *src;
	int			len;
	int			pos;			/* next byte to lex */
	TokenKind	in_tag;			/* TOK_EOF outside tags, else the opening kind */
	int			tag_pos;		/* where the open {{ or {% starts */
	bool		trim_next;		/* the last tag ended with -}} or -%} */
	bool		peeked;
	Token		next;
	sigjmp_buf	fail;
	char	   *errmsg;
} Parser;

/* The tag that ended a block body: else, elsif, endif, ... or NULL at the end */
typedef struct BlockEnd
{
	char	   *tag;
	int			pos;
} BlockEnd;

typedef struct LoopFrame
{
	const char *var;
	TplValue	item;
	int			index0;
	int			length;
	struct LoopFrame *outer;
} LoopFrame;

/*
 * State of one render.  This state and the output live in the caller's
 * context; values are computed in scratch, a context reset after each output
 * node and condition, so what a loop computes never accumulates.  Values that
 * outlive a reset (a loop's collection and item) point into the context jsonb
 * or the template, never into scratch.
 */
typedef struct RenderState
{
	StringInfoData out;
	JsonbContainer *root;		/* context object, or NULL */
	LoopFrame  *loop;			/* innermost for loop */
	MemoryContext scratch;
	int64		iterations;
	int64		work;			/* units spent, see spend() */
	int64		next_check;		/* work at which check_budget() runs next */
	sigjmp_buf	fail;
	char	   *errmsg;
} RenderState;

static void fail_with(sigjmp_buf *jump, char **msg, const char *fmt,...) pg_attribute_printf(3, 4) pg_attribute_noreturn();

#define parse_fail(p, ...)		fail_with(&(p)->fail, &(p)->errmsg, __VA_ARGS__)
#define render_fail(st, ...)	fail_with(&(st)->fail, &(st)->errmsg, __VA_ARGS__)

static List *parse_body(Parser *p, int depth, BlockEnd *end);
static bool values_equal(RenderState *st, TplValue a, TplValue b);
static void render_nodes(RenderState *st, List *nodes);


/* ---------- Errors ---------- */

/* Format an error message, store it and unwind to the sigsetjmp of the call. */
static void
fail_with(sigjmp_buf *jump, char **msg, const char *fmt,...)
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
	*msg = buf.data;
	siglongjmp(*jump, 1);
}

/* "line L column C" of a byte offset in the source; columns count characters. */
static char *
location(Parser *p, int pos)
{
	int			line = 1;
	int			line_start = 0;
	int			i;

	for (i = 0; i < pos && i < p->len; i++)
	{
		if (p->src[i] == '\n')
		{
			line++;
			line_start = i + 1;
		}
	}
	return psprintf("line %d column %d", line,
					pg_mbstrlen_with_len(p->src + line_start, i - line_start) + 1);
}

/* A token as quoted in messages (long ones cut). */
static char *
describe(Token t)
{
	if (t.kind == TOK_EOF)
		return "end of template";
	if (t.kind == TOK_STRING)
		return psprintf("string \"%.*s\"", pg_mbcliplen(t.str, t.len, 30), t.str);
	return psprintf("\"%.*s\"", Min(t.len, 64), t.str);	/* ASCII */
}


/* ---------- Lexer ---------- */

/* Whitespace that "-" trims and that separates tokens. */
static inline bool
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* ASCII digit. */
static inline bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* ASCII letter or underscore: starts an identifier. */
static inline bool
is_ident_start(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

/* Continues an identifier: [A-Za-z0-9_-]. */
static inline bool
is_ident_char(char c)
{
	return is_ident_start(c) || is_digit(c) || c == '-';
}

/* Do the two bytes a b start at pos? */
static inline bool
at_pair(Parser *p, int pos, char a, char b)
{
	return pos + 1 < p->len && p->src[pos] == a && p->src[pos + 1] == b;
}

/* Does the closer of the open tag ("}}" or "%}") start at pos? */
static inline bool
at_closer(Parser *p, int pos)
{
	return p->in_tag == TOK_OUTPUT_OPEN ? at_pair(p, pos, '}', '}') : at_pair(p, pos, '%', '}');
}

/* Does word, not followed by an identifier character, start at pos? */
static bool
word_at(Parser *p, int pos, const char *word)
{
	int			n = strlen(word);

	return p->len - pos >= n && strncmp(p->src + pos, word, n) == 0 &&
		(pos + n == p->len || !is_ident_char(p->src[pos + n]));
}

/* Offset of the next "{{" or "{%" at or after pos, or len. */
static int
find_open(Parser *p, int pos)
{
	while (pos < p->len)
	{
		const char *brace = memchr(p->src + pos, '{', p->len - pos);

		if (brace == NULL)
			break;
		pos = brace - p->src;
		if (pos + 1 < p->len && (p->src[pos + 1] == '{' || p->src[pos + 1] == '%'))
			return pos;
		pos++;
	}
	return p->len;
}

/* Lex outside tags: text (trimmed as "-" markers say), a tag opener, or the end. */
static Token
lex_outside(Parser *p)
{
	Token		t = {0};
	int			open = find_open(p, p->pos);

	t.pos = p->pos;
	t.str = p->src + p->pos;
	if (p->pos >= p->len)
		return t;				/* TOK_EOF */
	if (open == p->pos)
	{
		t.kind = p->src[open + 1] == '{' ? TOK_OUTPUT_OPEN : TOK_TAG_OPEN;
		t.len = 2;
		p->pos = open + 2;
		if (p->pos < p->len && p->src[p->pos] == '-')
			p->pos++;
		p->in_tag = t.kind;
		p->tag_pos = open;
		p->trim_next = false;
		return t;
	}
	t.kind = TOK_TEXT;
	t.len = open - p->pos;
	while (p->trim_next && t.len > 0 && is_space(*t.str))
	{
		t.str++;
		t.len--;
	}
	if (open + 2 < p->len && p->src[open + 2] == '-')
	{
		while (t.len > 0 && is_space(t.str[t.len - 1]))
			t.len--;
	}
	p->trim_next = false;
	p->pos = open;
	return t;
}

/* Lex the next token inside {{ }} or {% %}. */
static Token
lex_inside(Parser *p)
{
	const char *s = p->src;
	const char *open = p->in_tag == TOK_OUTPUT_OPEN ? "{{" : "{%";
	const char *close = p->in_tag == TOK_OUTPUT_OPEN ? "}}" : "%}";
	Token		t = {0};
	int			i;

	while (p->pos < p->len && is_space(s[p->pos]))
		p->pos++;
	t.pos = p->pos;
	t.str = s + p->pos;
	if (p->pos >= p->len)
		parse_fail(p, "\"%s\" at %s is not closed by \"%s\"",
				   open, location(p, p->tag_pos), close);
	if (at_closer(p, p->pos) || (*t.str == '-' && at_closer(p, p->pos + 1)))
	{
		t.kind = p->in_tag == TOK_OUTPUT_OPEN ? TOK_OUTPUT_CLOSE : TOK_TAG_CLOSE;
		p->trim_next = *t.str == '-';
		t.len = p->trim_next ? 3 : 2;
		p->pos += t.len;
		p->in_tag = TOK_EOF;
		return t;
	}
	if (at_pair(p, p->pos, '}', '}') || at_pair(p, p->pos, '%', '}'))
		parse_fail(p, "\"%s\" at %s is closed by \"%.2s\" at %s, expected \"%s\"",
				   open, location(p, p->tag_pos), t.str, location(p, t.pos), close);

	if (is_ident_start(*t.str))
	{
		/* [A-Za-z_][A-Za-z0-9_-]*, but "name-}}" is name then a trimming closer */
		t.kind = TOK_IDENT;
		do
			p->pos++;
		while (p->pos < p->len && is_ident_char(s[p->pos]) &&
			   !(s[p->pos] == '-' && at_closer(p, p->pos + 1)));
	}
	else if (is_digit(*t.str) ||
			 (*t.str == '-' && p->pos + 1 < p->len && is_digit(s[p->pos + 1])))
	{
		/* -?[0-9]+(\.[0-9]+)? */
		t.kind = TOK_NUMBER;
		p->pos++;
		while (p->pos < p->len && is_digit(s[p->pos]))
			p->pos++;
		if (p->pos + 1 < p->len && s[p->pos] == '.' && is_digit(s[p->pos + 1]))
		{
			p->pos++;
			while (p->pos < p->len && is_digit(s[p->pos]))
				p->pos++;
		}
		if (p->pos - t.pos > MAX_NUMBER_LITERAL)
			parse_fail(p, "number at %s is too long", location(p, t.pos));
	}
	else if (*t.str == '"' || *t.str == '\'')
	{
		const char *end = memchr(t.str + 1, *t.str, p->len - t.pos - 1);

		if (end == NULL)
			parse_fail(p, "unterminated string starting at %s", location(p, t.pos));
		t.kind = TOK_STRING;
		t.str++;
		t.len = end - t.str;
		p->pos = end - s + 1;
		return t;
	}
	else
	{
		for (i = 0; i < lengthof(symbols) && t.kind == TOK_EOF; i++)
		{
			int			n = strlen(symbols[i].text);

			if (p->len - p->pos >= n && strncmp(t.str, symbols[i].text, n) == 0)
			{
				t.kind = symbols[i].op == CMP_NONE ? TOK_PUNCT : TOK_OP;
				t.op = symbols[i].op;
				p->pos += n;
			}
		}
		if (t.kind == TOK_EOF && (*t.str == '=' || *t.str == '!'))
			parse_fail(p, "unexpected character \"%c\" at %s (comparisons are ==, !=, <>, <, >, <=, >=, contains)",
					   *t.str, location(p, t.pos));
		if (t.kind == TOK_EOF)
			parse_fail(p, "unexpected character \"%.*s\" at %s",
					   Min(pg_mblen(t.str), p->len - t.pos), t.str, location(p, t.pos));
	}
	t.len = p->pos - t.pos;
	return t;
}

/*
 * The next token, without consuming it.  Lexing a token checks for interrupts
 * (a load and a branch), so statement_timeout and pg_terminate_backend stop a
 * long parse.
 */
static Token
peek(Parser *p)
{
	if (!p->peeked)
	{
		CHECK_FOR_INTERRUPTS();
		p->next = p->in_tag == TOK_EOF ? lex_outside(p) : lex_inside(p);
		p->peeked = true;
	}
	return p->next;
}

/* Consume and return the next token. */
static Token
advance(Parser *p)
{
	Token		t = peek(p);

	p->peeked = false;
	return t;
}

/* Is t the identifier word? */
static bool
word_is(Token t, const char *word)
{
	return t.kind == TOK_IDENT && t.len == strlen(word) && memcmp(t.str, word, t.len) == 0;
}

/* Is t the punctuation character c? */
static bool
punct_is(Token t, char c)
{
	return t.kind == TOK_PUNCT && t.str[0] == c;
}

/* Consume the "%}" ending {% tag ... %}, or fail naming the tag. */
static void
expect_tag_close(Parser *p, const char *tag)
{
	Token		t = advance(p);

	if (t.kind == TOK_TAG_CLOSE)
		return;
	if (strcmp(tag, "else") == 0 && word_is(t, "if"))
		parse_fail(p, "unexpected \"if\" after {%% else %%} at %s, use {%% elsif ... %%}",
				   location(p, t.pos));
	parse_fail(p, "unexpected %s at %s, expected \"%%}\" to end {%% %s %%}",
			   describe(t), location(p, t.pos), tag);
}


/* ---------- Parser ---------- */

/* The Numeric of a number token (the lexer admits only -?digits[.digits]). */
static Numeric
number_literal(Token t)
{
	Datum		n = DirectFunctionCall3(numeric_in, CStringGetDatum(pnstrdup(t.str, t.len)),
										ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));

	return DatumGetNumeric(n);
}

/* Parse a literal or a variable path: name(.key | [int] | ["key"])*. */
static TplExpr *
parse_primary(Parser *p)
{
	Token		t = advance(p);
	TplExpr    *e = palloc0(sizeof(TplExpr));

	e->is_literal = true;
	if (t.kind == TOK_STRING)
		e->literal = (TplValue) {.kind = VAL_STRING, .str = pnstrdup(t.str, t.len), .len = t.len};
	else if (t.kind == TOK_NUMBER)
		e->literal = (TplValue) {.kind = VAL_NUMBER, .number = number_literal(t)};
	else if (t.kind != TOK_IDENT)
		parse_fail(p, "unexpected %s at %s, expected a variable or a literal",
				   describe(t), location(p, t.pos));
	else if (word_is(t, "true") || word_is(t, "false"))
		e->literal = (TplValue) {.kind = VAL_BOOL, .boolean = word_is(t, "true")};
	else if (word_is(t, "empty"))
		e->literal.kind = VAL_EMPTY;
	else if (!word_is(t, "nil") && !word_is(t, "null"))
		e->is_literal = false;
	if (e->is_literal)
		return e;

	e->name = pnstrdup(t.str, t.len);
	while (punct_is(peek(p), '.') || punct_is(peek(p), '['))
	{
		PathStep   *step = palloc0(sizeof(PathStep));
		bool		dot = punct_is(advance(p), '.');
		Token		k = advance(p);

		if (dot && k.kind != TOK_IDENT)
			parse_fail(p, "unexpected %s at %s, expected a name after \".\"",
					   describe(k), location(p, k.pos));
		if (dot || k.kind == TOK_STRING)
		{
			step->key = pnstrdup(k.str, k.len);
			step->keylen = k.len;
		}
		else if (k.kind == TOK_NUMBER && memchr(k.str, '.', k.len) == NULL)
		{
			char	   *digits = pnstrdup(k.str, k.len);
			long		index;

			errno = 0;
			index = strtol(digits, NULL, 10);
			if (errno != 0 || index > PG_INT32_MAX || index < -PG_INT32_MAX)
				parse_fail(p, "index %s at %s is out of range", digits, location(p, k.pos));
			step->index = (int) index;
		}
		else
			parse_fail(p, "unexpected %s at %s, expected an integer or a quoted key inside \"[]\"",
					   describe(k), location(p, k.pos));
		if (!dot && !punct_is(k = advance(p), ']'))
			parse_fail(p, "unexpected %s at %s, expected \"]\"", describe(k), location(p, k.pos));
		e->path = lappend(e->path, step);
	}
	return e;
}

/* Parse primary (| filter (: arg (, arg)*)?)*. */
static TplExpr *
parse_expr(Parser *p)
{
	TplExpr    *e = parse_primary(p);

	while (punct_is(peek(p), '|'))
	{
		Token		name;
		Filter	   *f = palloc0(sizeof(Filter));
		int			def;
		int			nargs;

		advance(p);
		name = advance(p);
		if (name.kind != TOK_IDENT)
			parse_fail(p, "unexpected %s at %s, expected a filter name after \"|\"",
					   describe(name), location(p, name.pos));
		for (def = 0; def < lengthof(filter_defs); def++)
			if (word_is(name, filter_defs[def].name))
				break;
		if (def == lengthof(filter_defs))
			parse_fail(p, "unknown filter %s at %s (filters are default, upcase, downcase, capitalize, size, join)",
					   describe(name), location(p, name.pos));
		f->kind = filter_defs[def].kind;
		if (punct_is(peek(p), ':'))
		{
			do
			{
				advance(p);
				f->args = lappend(f->args, parse_primary(p));
			} while (punct_is(peek(p), ','));
		}
		nargs = list_length(f->args);
		if (nargs < filter_defs[def].min_args || nargs > filter_defs[def].max_args)
			parse_fail(p, "filter \"%s\" at %s takes %s, got %d", filter_defs[def].name,
					   location(p, name.pos),
					   filter_defs[def].max_args == 0 ? "no arguments" :
					   filter_defs[def].min_args == 1 ? "1 argument" : "at most 1 argument",
					   nargs);
		e->filters = lappend(e->filters, f);
	}
	return e;
}

/* Parse comparison ((and | or) comparison)*, up to the end of the tag. */
static List *
parse_condition(Parser *p, const char *tag, int tag_pos)
{
	List	   *terms = NIL;

	if (peek(p).kind == TOK_TAG_CLOSE)
		parse_fail(p, "{%% %s %%} at %s needs a condition", tag, location(p, tag_pos));
	for (;;)
	{
		Comparison *c = palloc0(sizeof(Comparison));
		Token		t;

		c->left = parse_expr(p);
		t = peek(p);
		if (t.kind == TOK_OP || word_is(t, "contains"))
		{
			advance(p);
			c->op = t.kind == TOK_OP ? t.op : CMP_CONTAINS;
			c->right = parse_expr(p);
		}
		terms = lappend(terms, c);
		t = peek(p);
		if (!word_is(t, "and") && !word_is(t, "or"))
			return terms;
		advance(p);
		c->and_next = word_is(t, "and");
	}
}

/* Fail on a block tag that does not fit where it stands, or on end of template. */
static void
block_mismatch(Parser *p, BlockEnd *end, const char *open_tag, int open_pos, const char *end_tag)
{
	if (end->tag == NULL)
		parse_fail(p, "unexpected end of template, {%% %s %%} at %s is not closed",
				   open_tag, location(p, open_pos));
	parse_fail(p, "unexpected {%% %s %%} at %s inside {%% %s %%} at %s (close it with {%% %s %%})",
			   end->tag, location(p, end->pos), open_tag, location(p, open_pos), end_tag);
}

/* Fail if block nesting goes past TEMPLATE_MAX_NESTING. */
static void
check_depth(Parser *p, int depth, const char *tag, int pos)
{
	if (depth > TEMPLATE_MAX_NESTING)
		parse_fail(p, "nesting too deep: {%% %s %%} at %s is more than %d blocks deep",
				   tag, location(p, pos), TEMPLATE_MAX_NESTING);
}

/* Is this block end the given tag? */
static inline bool
end_is(BlockEnd *end, const char *tag)
{
	return end->tag != NULL && strcmp(end->tag, tag) == 0;
}

/* Parse {% if %} or {% unless %} after its name, through its end tag. */
static TplNode *
parse_if(Parser *p, int tag_pos, int depth, bool unless)
{
	const char *tag = unless ? "unless" : "if";
	const char *end_tag = unless ? "endunless" : "endif";
	TplNode    *node = palloc0(sizeof(TplNode));
	bool		in_else = false;

	check_depth(p, depth, tag, tag_pos);
	node->kind = NODE_IF;
	node->negate = unless;
	node->conds = list_make1(parse_condition(p, tag, tag_pos));
	expect_tag_close(p, tag);
	for (;;)
	{
		BlockEnd	end;
		List	   *body = parse_body(p, depth, &end);

		if (in_else)
			node->else_body = body;
		else
			node->bodies = lappend(node->bodies, body);
		if (end_is(&end, end_tag))
		{
			expect_tag_close(p, end_tag);
			return node;
		}
		else if (end_is(&end, "elsif") && !in_else)
		{
			node->conds = lappend(node->conds, parse_condition(p, "elsif", end.pos));
			expect_tag_close(p, "elsif");
		}
		else if (end_is(&end, "else") && !in_else)
		{
			expect_tag_close(p, "else");
			in_else = true;
		}
		else
			block_mismatch(p, &end, tag, tag_pos, end_tag);
	}
}

/* Parse {% for var in path limit: n offset: n %} after its name, through endfor. */
static TplNode *
parse_for(Parser *p, int tag_pos, int depth)
{
	TplNode    *node = palloc0(sizeof(TplNode));
	bool		in_else = false;
	Token		t;

	check_depth(p, depth, "for", tag_pos);
	node->kind = NODE_FOR;
	t = advance(p);
	if (t.kind != TOK_IDENT)
		parse_fail(p, "unexpected %s at %s, expected a loop variable name after \"for\"",
				   describe(t), location(p, t.pos));
	node->var = pnstrdup(t.str, t.len);
	if (!word_is(t = advance(p), "in"))
		parse_fail(p, "unexpected %s at %s, expected \"in\"", describe(t), location(p, t.pos));
	t = peek(p);
	node->collection = parse_primary(p);
	if (node->collection->is_literal)
		parse_fail(p, "unexpected %s at %s, expected a variable to iterate over",
				   describe(t), location(p, t.pos));
	while ((t = advance(p)).kind == TOK_IDENT)
	{
		bool		is_limit = word_is(t, "limit");
		TplExpr    *arg;

		if (!is_limit && !word_is(t, "offset"))
			parse_fail(p, "unknown option %s in {%% for %%} at %s (options are limit: and offset:)",
					   describe(t), location(p, t.pos));
		if (!punct_is(t = advance(p), ':'))
			parse_fail(p, "unexpected %s at %s, expected \":\"", describe(t), location(p, t.pos));
		t = peek(p);
		arg = parse_primary(p);
		if (arg->is_literal && arg->literal.kind != VAL_NUMBER)
			parse_fail(p, "unexpected %s at %s, expected a number or a variable",
					   describe(t), location(p, t.pos));
		if (is_limit)
			node->limit = arg;
		else
			node->offset = arg;
	}
	if (t.kind != TOK_TAG_CLOSE)
		parse_fail(p, "unexpected %s at %s, expected \"%%}\" to end {%% for %%}",
				   describe(t), location(p, t.pos));
	for (;;)
	{
		BlockEnd	end;
		List	   *body = parse_body(p, depth, &end);

		if (in_else)
			node->else_body = body;
		else
			node->body = body;
		if (end_is(&end, "endfor"))
		{
			expect_tag_close(p, "endfor");
			return node;
		}
		else if (end_is(&end, "else") && !in_else)
		{
			expect_tag_close(p, "else");
			in_else = true;
		}
		else
			block_mismatch(p, &end, "for", tag_pos, "endfor");
	}
}

/* Offset of the first "%}" at or after pos, or len. */
static int
find_close(Parser *p, int pos)
{
	while (pos < p->len)
	{
		const char *pct = memchr(p->src + pos, '%', p->len - pos);

		if (pct == NULL)
			break;
		pos = pct - p->src;
		if (pos + 1 < p->len && p->src[pos + 1] == '}')
			return pos;
		pos++;
	}
	return p->len;
}

/*
 * Find the next {% ... %} at or after pos, setting where it opens, where its
 * tag name starts and where the first "%}" after that name starts.  False if
 * there is none (no "{%", or no "%}" after it).  *close carries the last answer
 * between calls of one scan (-1 to start): it is still right while it lies
 * ahead of the new name, so a scan over many tags reads each byte once.
 */
static bool
next_tag(Parser *p, int pos, int *open, int *word, int *close)
{
	for (*open = find_open(p, pos); *open < p->len; *open = find_open(p, *open + 1))
	{
		CHECK_FOR_INTERRUPTS();
		if (p->src[*open + 1] != '%')
			continue;
		*word = *open + 2;
		if (*word < p->len && p->src[*word] == '-')
			(*word)++;
		while (*word < p->len && is_space(p->src[*word]))
			(*word)++;
		if (*close < *word)
			*close = find_close(p, *word);
		return *close < p->len;
	}
	return false;
}

/* Skip a {% comment %} body through its matching {% endcomment %} (comments nest). */
static void
skip_comment(Parser *p, int open_pos)
{
	int			depth = 1;
	int			open;
	int			word;
	int			close = -1;

	while (depth > 0)
	{
		if (!next_tag(p, p->pos, &open, &word, &close))
			parse_fail(p, "unexpected end of template, {%% comment %%} at %s is not closed",
					   location(p, open_pos));
		if (word_at(p, word, "comment"))
			depth++;
		else if (word_at(p, word, "endcomment"))
			depth--;
		p->pos = close + 2;
		p->trim_next = p->src[close - 1] == '-';
	}
}

/* A text node holding a copy of len bytes. */
static TplNode *
make_text(const char *text, int len)
{
	TplNode    *node = palloc0(sizeof(TplNode));

	node->kind = NODE_TEXT;
	node->text = pnstrdup(text, len);
	node->len = len;
	return node;
}

/* Take a {% raw %} body verbatim up to {% endraw %}: a text node, NULL if empty. */
static TplNode *
scan_raw(Parser *p, int open_pos)
{
	int			start = p->pos;
	int			pos = p->pos;
	int			open;
	int			word;
	int			close = -1;

	for (;;)
	{
		if (!next_tag(p, pos, &open, &word, &close))
			parse_fail(p, "unexpected end of template, {%% raw %%} at %s is not closed",
					   location(p, open_pos));
		if (word_at(p, word, "endraw"))
			break;
		pos = open + 2;
	}
	p->pos = close + 2;
	p->trim_next = p->src[close - 1] == '-';
	return open > start ? make_text(p->src + start, open - start) : NULL;
}

/* Parse nodes up to the end of template or a tag ending the enclosing block. */
static List *
parse_body(Parser *p, int depth, BlockEnd *end)
{
	static const char *const block_words[] = {
		"elsif", "else", "endif", "endunless", "endfor", "endcomment", "endraw"
	};
	List	   *nodes = NIL;

	for (;;)
	{
		Token		t = advance(p);
		Token		name;
		TplNode    *node = NULL;
		int			i;

		if (t.kind == TOK_EOF)
		{
			end->tag = NULL;
			end->pos = t.pos;
			return nodes;
		}
		else if (t.kind == TOK_TEXT)
			node = t.len > 0 ? make_text(t.str, t.len) : NULL;
		else if (t.kind == TOK_OUTPUT_OPEN)
		{
			Token		close;

			node = palloc0(sizeof(TplNode));
			node->kind = NODE_OUTPUT;
			node->expr = parse_expr(p);
			if ((close = advance(p)).kind != TOK_OUTPUT_CLOSE)
				parse_fail(p, "unexpected %s at %s, expected \"|\" or \"}}\"",
						   describe(close), location(p, close.pos));
		}
		else if ((name = advance(p)).kind != TOK_IDENT)
			parse_fail(p, "unexpected %s at %s, expected a tag name after \"{%%\"",
					   describe(name), location(p, name.pos));
		else if (word_is(name, "if") || word_is(name, "unless"))
			node = parse_if(p, t.pos, depth + 1, word_is(name, "unless"));
		else if (word_is(name, "for"))
			node = parse_for(p, t.pos, depth + 1);
		else if (word_is(name, "comment"))
		{
			expect_tag_close(p, "comment");
			skip_comment(p, t.pos);
		}
		else if (word_is(name, "raw"))
		{
			expect_tag_close(p, "raw");
			node = scan_raw(p, t.pos);
		}
		else
		{
			for (i = 0; i < lengthof(block_words); i++)
			{
				if (word_is(name, block_words[i]))
				{
					end->tag = pnstrdup(name.str, name.len);
					end->pos = t.pos;
					return nodes;
				}
			}
			parse_fail(p, "unknown tag %s at %s", describe(name), location(p, name.pos));
		}
		if (node != NULL)
			nodes = lappend(nodes, node);
	}
}

/* Fail on a block-ending tag found at the top level. */
static void
stray_tag(Parser *p, BlockEnd *end)
{
	if (end_is(end, "else") || end_is(end, "elsif"))
		parse_fail(p, "unexpected {%% %s %%} at %s outside {%% if %%}, {%% unless %%} or {%% for %%}",
				   end->tag, location(p, end->pos));
	parse_fail(p, "unexpected {%% %s %%} at %s without a matching {%% %s %%}",
			   end->tag, location(p, end->pos), end->tag + 3);	/* endif -> if */
}


/* ---------- Render budget ---------- */

/*
 * Work units: one per byte that a filter or a comparison reads or writes
 * (WORK_PER_TEXT_BYTE for JSON text made of a number or a container), and
 * WORK_PER_STEP per node, loop iteration, variable lookup, filter or container
 * element compared.  TEMPLATE_MAX_WORK of them bound a render's CPU time.
 */
#define WORK_PER_STEP		32

/* Making the JSON text of a number or a container costs this many units a byte */
#define WORK_PER_TEXT_BYTE	8

/* Interrupts and both budgets are checked at least every this many units */
#define WORK_CHECK_INTERVAL	65536

/*
 * Check for interrupts, the work budget, and that the render's memory plus
 * pending bytes about to be allocated stays within TEMPLATE_MAX_MEMORY.
 */
static void
check_budget(RenderState *st, int64 pending)
{
	CHECK_FOR_INTERRUPTS();
	if (st->work > TEMPLATE_MAX_WORK)
		render_fail(st, "render work limit exceeded: more than %d units of work in one render",
					TEMPLATE_MAX_WORK);
	if ((int64) MemoryContextMemAllocated(st->scratch, true) + st->out.maxlen + pending >
		TEMPLATE_MAX_MEMORY)
		render_fail(st, "render memory limit exceeded: more than %d bytes of working memory in one render",
					TEMPLATE_MAX_MEMORY);
	st->next_check = st->work + WORK_CHECK_INTERVAL;
}

/* Spend units of work, checking the budgets every WORK_CHECK_INTERVAL units. */
static inline void
spend(RenderState *st, int64 units)
{
	st->work += units;
	if (unlikely(st->work >= st->next_check))
		check_budget(st, 0);
}

/*
 * Spend the work of producing bytes bytes; for a large value, or when a check
 * is due, first check that memory stays within its budget with them.  (Small
 * values are counted by the next check: every byte costs a unit, so memory
 * grows by at most WORK_CHECK_INTERVAL bytes between checks.)
 */
static inline void
reserve(RenderState *st, int64 bytes)
{
	st->work += bytes;
	if (unlikely(st->work >= st->next_check || bytes >= WORK_CHECK_INTERVAL))
		check_budget(st, bytes);
}

/* Free the values of the node just rendered. */
static inline void
scratch_reset(RenderState *st)
{
	MemoryContextReset(st->scratch);
}


/* ---------- Values ---------- */

/* A value from a jsonb value (scalars, or containers as jbvBinary). */
static TplValue
value_from_jsonb(JsonbValue *jv)
{
	switch (jv->type)
	{
		case jbvString:
			return (TplValue) {.kind = VAL_STRING, .str = jv->val.string.val, .len = jv->val.string.len};
		case jbvNumeric:
			return (TplValue) {.kind = VAL_NUMBER, .number = jv->val.numeric};
		case jbvBool:
			return (TplValue) {.kind = VAL_BOOL, .boolean = jv->val.boolean};
		case jbvBinary:
			return (TplValue) {.kind = JsonContainerIsArray(jv->val.binary.data) ? VAL_ARRAY : VAL_OBJECT,
				.container = jv->val.binary.data};
		default:
			return (TplValue) {.kind = VAL_NIL};
	}
}

/* A number value from an integer. */
static TplValue
value_int(int64 n)
{
	return (TplValue) {.kind = VAL_NUMBER, .number = int64_to_numeric(n)};
}

/* The text a value outputs: strings as is, JSON text for numbers and containers. */
static const char *
value_text(RenderState *st, TplValue v, int *len)
{
	const char *s = "";

	if (v.kind == VAL_STRING)
	{
		*len = v.len;
		return v.str;
	}
	if (v.kind == VAL_BOOL)
		s = v.boolean ? "true" : "false";
	else if (v.kind == VAL_NUMBER || v.kind == VAL_ARRAY || v.kind == VAL_OBJECT)
	{
		/* the text's size is known once made: count it then */
		s = v.kind == VAL_NUMBER
			? DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.number)))
			: JsonbToCString(NULL, v.container, -1);
		*len = strlen(s);
		spend(st, WORK_PER_STEP + (int64) *len * WORK_PER_TEXT_BYTE);
		return s;
	}
	*len = strlen(s);
	return s;
}

/* Liquid truthiness: only nil and false are false. */
static bool
value_truthy(TplValue v)
{
	return v.kind != VAL_NIL && !(v.kind == VAL_BOOL && !v.boolean);
}

/* "", [] or {} (or the empty literal itself): what == empty matches. */
static bool
value_is_empty(TplValue v)
{
	return v.kind == VAL_EMPTY ||
		(v.kind == VAL_STRING && v.len == 0) ||
		((v.kind == VAL_ARRAY || v.kind == VAL_OBJECT) && JsonContainerSize(v.container) == 0);
}

/* Size as Liquid counts it: characters, elements or pairs; 0 otherwise. */
static int
value_size(RenderState *st, TplValue v)
{
	if (v.kind == VAL_STRING)
	{
		spend(st, v.len);
		return pg_mbstrlen_with_len(v.str, v.len);
	}
	if (v.kind == VAL_ARRAY || v.kind == VAL_OBJECT)
		return JsonContainerSize(v.container);
	return 0;
}

/* numeric_cmp of two numbers. */
static int
numbers_cmp(RenderState *st, Numeric a, Numeric b)
{
	spend(st, VARSIZE_ANY(a) + VARSIZE_ANY(b));
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(a), NumericGetDatum(b)));
}

/* Deep equality of containers: jsonb keeps object keys sorted, so walk both in step. */
static bool
containers_equal(RenderState *st, JsonbContainer *a, JsonbContainer *b)
{
	JsonbIterator *ia;
	JsonbIterator *ib;
	JsonbValue	va;
	JsonbValue	vb;

	if (JsonContainerSize(a) != JsonContainerSize(b) ||
		JsonContainerIsArray(a) != JsonContainerIsArray(b))
		return false;
	ia = JsonbIteratorInit(a);
	ib = JsonbIteratorInit(b);
	for (;;)
	{
		JsonbIteratorToken ra = JsonbIteratorNext(&ia, &va, false);
		JsonbIteratorToken rb = JsonbIteratorNext(&ib, &vb, false);

		spend(st, 2 * WORK_PER_STEP);
		if (ra != rb)
			return false;
		if (ra == WJB_DONE)
			return true;
		if ((ra == WJB_KEY || ra == WJB_VALUE || ra == WJB_ELEM) &&
			!values_equal(st, value_from_jsonb(&va), value_from_jsonb(&vb)))
			return false;
	}
}

/* ==: same kind and value (numbers numerically); empty matches "", [] and {}. */
static bool
values_equal(RenderState *st, TplValue a, TplValue b)
{
	if (a.kind == VAL_EMPTY || b.kind == VAL_EMPTY)
		return value_is_empty(a) && value_is_empty(b);
	if (a.kind != b.kind)
		return false;
	switch (a.kind)
	{
		case VAL_BOOL:
			return a.boolean == b.boolean;
		case VAL_NUMBER:
			return numbers_cmp(st, a.number, b.number) == 0;
		case VAL_STRING:
			if (a.len != b.len)
				return false;
			spend(st, a.len);
			return memcmp(a.str, b.str, a.len) == 0;
		case VAL_ARRAY:
		case VAL_OBJECT:
			return containers_equal(st, a.container, b.container);
		default:
			return true;		/* nil == nil */
	}
}

/* Order two numbers, or two strings by bytes; false if not comparable. */
static bool
values_compare(RenderState *st, TplValue a, TplValue b, int *cmp)
{
	if (a.kind == VAL_NUMBER && b.kind == VAL_NUMBER)
	{
		*cmp = numbers_cmp(st, a.number, b.number);
		return true;
	}
	if (a.kind == VAL_STRING && b.kind == VAL_STRING)
	{
		spend(st, Min(a.len, b.len));
		*cmp = memcmp(a.str, b.str, Min(a.len, b.len));
		if (*cmp == 0)
			*cmp = (a.len > b.len) - (a.len < b.len);
		return true;
	}
	return false;
}

/*
 * contains: substring of a string, element of an array, key of an object.
 * Substrings are found by memmem (linear time, unlike a memcmp at each offset).
 */
static bool
value_contains(RenderState *st, TplValue a, TplValue b)
{
	JsonbValue	jv;

	if (a.kind == VAL_STRING && b.kind != VAL_NIL && b.kind != VAL_EMPTY)
	{
		int			len;
		const char *needle = value_text(st, b, &len);

		spend(st, (int64) a.len + len);
		return len == 0 || (len <= a.len && memmem(a.str, a.len, needle, len) != NULL);
	}
	else if (a.kind == VAL_ARRAY)
	{
		JsonbIterator *it = JsonbIteratorInit(a.container);
		JsonbIteratorToken r;

		while ((r = JsonbIteratorNext(&it, &jv, true)) != WJB_DONE)
		{
			spend(st, WORK_PER_STEP);
			if (r == WJB_ELEM && values_equal(st, value_from_jsonb(&jv), b))
				return true;
		}
	}
	else if (a.kind == VAL_OBJECT && b.kind == VAL_STRING)
	{
		spend(st, WORK_PER_STEP + b.len);
		return getKeyJsonValueFromContainer(a.container, b.str, b.len, &jv) != NULL;
	}
	return false;
}

/* A number rounded to an integer and clamped to +-1e9; false if not a number. */
static bool
value_to_int(RenderState *st, TplValue v, int *result)
{
	const int	bound = 1000000000;

	if (v.kind != VAL_NUMBER)
		return false;
	if (numbers_cmp(st, v.number, int64_to_numeric(bound)) > 0)
		*result = bound;
	else if (numbers_cmp(st, v.number, int64_to_numeric(-bound)) < 0)
		*result = -bound;
	else
		*result = DatumGetInt32(DirectFunctionCall1(numeric_int4, NumericGetDatum(v.number)));
	return true;
}


/* ---------- Case mapping ---------- */

/* Lowercase ranges and the offset to their uppercase */
static const struct
{
	pg_wchar	first;
	pg_wchar	last;
	int32		to_upper;
}			case_ranges[] = {
	{0x00E0, 0x00F6, -32}, {0x00F8, 0x00FE, -32}, {0x00FF, 0x00FF, 121},	/* Latin-1 */
	{0x03B1, 0x03C1, -32}, {0x03C3, 0x03CB, -32}, {0x03AC, 0x03AC, -38},	/* Greek */
	{0x03AD, 0x03AF, -37}, {0x03CC, 0x03CC, -64}, {0x03CD, 0x03CE, -63},
	{0x0430, 0x044F, -32}, {0x0450, 0x045F, -80},	/* Cyrillic */
};

/* Ranges of upper/lower pairs, the uppercase one even (or odd if upper_odd) */
static const struct
{
	pg_wchar	first;
	pg_wchar	last;
	bool		upper_odd;
}			case_pairs[] = {
	{0x0100, 0x0137, false}, {0x0139, 0x0148, true},	/* Latin Extended-A */
	{0x014A, 0x0177, false}, {0x0179, 0x017E, true},
	{0x0460, 0x0481, false}, {0x048A, 0x04BF, false},	/* Cyrillic extensions */
	{0x04C1, 0x04CE, true}, {0x04D0, 0x052F, false},
	{0x1E00, 0x1E95, false}, {0x1EA0, 0x1EFF, false},	/* Latin Extended Additional */
};

/* Simple one-to-one case mapping of a non-ASCII Latin, Greek or Cyrillic letter. */
static pg_wchar
unicode_case(pg_wchar c, bool upper)
{
	int			i;

	if (upper && (c == 0x131 || c == 0x17F || c == 0x3C2))	/* dotless i, long s, final sigma */
		return c == 0x131 ? 'I' : c == 0x17F ? 'S' : 0x3A3;
	if (!upper && c == 0x130)	/* I with dot */
		return 'i';
	for (i = 0; i < lengthof(case_ranges); i++)
	{
		if (upper && c >= case_ranges[i].first && c <= case_ranges[i].last)
			return c + case_ranges[i].to_upper;
		if (!upper && c >= case_ranges[i].first + case_ranges[i].to_upper &&
			c <= case_ranges[i].last + case_ranges[i].to_upper)
			return c - case_ranges[i].to_upper;
	}
	for (i = 0; i < lengthof(case_pairs); i++)
	{
		if (c >= case_pairs[i].first && c <= case_pairs[i].last)
		{
			bool		is_upper = ((c & 1) != 0) == case_pairs[i].upper_odd;

			return upper == is_upper ? c : upper ? c - 1 : c + 1;
		}
	}
	return c;
}

/*
 * Change the case of a value's text: all of it (upcase, downcase) or the first
 * character up and the rest down (capitalize).  ASCII letters always; in UTF8
 * databases also Latin, Greek and Cyrillic letters (unicode_case()).
 */
static TplValue
change_case(RenderState *st, TplValue v, FilterKind filter)
{
	int			len;
	const char *s = value_text(st, v, &len);
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;
	StringInfoData buf;
	int			i = 0;

	/* mapped text is never longer: size the buffer to the source (and a character) */
	reserve(st, (int64) len + MAX_MULTIBYTE_CHAR_LEN + 1);
	buf.maxlen = len + MAX_MULTIBYTE_CHAR_LEN + 1;
	buf.data = palloc(buf.maxlen);
	buf.data[0] = '\0';
	buf.len = 0;
	buf.cursor = 0;
	while (i < len)
	{
		bool		upper = filter == FILTER_UPCASE || (filter == FILTER_CAPITALIZE && i == 0);
		unsigned char c = (unsigned char) s[i];
		int			mblen;
		int			l;

		if (c < 0x80)
		{
			/* a run of ASCII characters: one room check, then a plain loop */
			int			end = i + 1;
			char	   *d;

			while (end < len && !IS_HIGHBIT_SET(s[end]))
				end++;
			enlargeStringInfo(&buf, end - i);
			d = buf.data + buf.len;
			for (; i < end; i++)
			{
				char		a = s[i];

				/* pg_ascii_toupper/tolower, inline */
				if (upper ? (a >= 'a' && a <= 'z') : (a >= 'A' && a <= 'Z'))
					a ^= 0x20;
				*d++ = a;
				upper = filter == FILTER_UPCASE;
			}
			buf.len = d - buf.data;
			buf.data[buf.len] = '\0';
			continue;
		}
		spend(st, WORK_PER_STEP);	/* a non-ASCII character costs like a step */
		mblen = utf8 ? pg_utf_mblen((const unsigned char *) s + i) : pg_mblen(s + i);
		l = Min(mblen, len - i);
		if (utf8 && l == mblen)
		{
			unsigned char *mapped;

			enlargeStringInfo(&buf, MAX_MULTIBYTE_CHAR_LEN);
			mapped = (unsigned char *) buf.data + buf.len;
			unicode_to_utf8(unicode_case(utf8_to_unicode((const unsigned char *) s + i), upper),
							mapped);
			buf.len += pg_utf_mblen(mapped);
			buf.data[buf.len] = '\0';
		}
		else
			appendBinaryStringInfo(&buf, s + i, l);
		i += l;
	}
	return (TplValue) {.kind = VAL_STRING, .str = buf.data, .len = buf.len};
}


/* ---------- Renderer ---------- */

/* Append to the output, failing past TEMPLATE_MAX_OUTPUT_BYTES. */
static void
emit(RenderState *st, const char *s, int len)
{
	if ((int64) st->out.len + len > TEMPLATE_MAX_OUTPUT_BYTES)
		render_fail(st, "rendered output exceeds the limit of 1 MB (%d bytes)",
					TEMPLATE_MAX_OUTPUT_BYTES);
	spend(st, len);
	appendBinaryStringInfo(&st->out, s, len);
}

/* A forloop attribute of a loop (nil if unknown). */
static TplValue
forloop_attribute(LoopFrame *f, const char *name)
{
	if (strcmp(name, "index") == 0)
		return value_int(f->index0 + 1);
	if (strcmp(name, "index0") == 0)
		return value_int(f->index0);
	if (strcmp(name, "rindex") == 0)
		return value_int(f->length - f->index0);
	if (strcmp(name, "rindex0") == 0)
		return value_int(f->length - f->index0 - 1);
	if (strcmp(name, "length") == 0)
		return value_int(f->length);
	if (strcmp(name, "first") == 0)
		return (TplValue) {.kind = VAL_BOOL, .boolean = f->index0 == 0};
	if (strcmp(name, "last") == 0)
		return (TplValue) {.kind = VAL_BOOL, .boolean = f->index0 == f->length - 1};
	return (TplValue) {.kind = VAL_NIL};
}

/* Element i of an array (the value points into the container). */
static TplValue
array_element(JsonbContainer *array, int i)
{
	JsonbValue *jv = getIthJsonbValueFromContainer(array, i);
	TplValue	v = value_from_jsonb(jv);

	pfree(jv);
	return v;
}

/* Follow one path step: a key, an index, or size/first/last. */
static TplValue
apply_step(RenderState *st, TplValue v, PathStep *step)
{
	JsonbValue	jv;
	int			n;
	int			i = -1;

	spend(st, WORK_PER_STEP + step->keylen);
	if (v.kind == VAL_OBJECT && step->key != NULL &&
		getKeyJsonValueFromContainer(v.container, step->key, step->keylen, &jv))
		return value_from_jsonb(&jv);
	if (step->key != NULL && strcmp(step->key, "size") == 0 &&
		(v.kind == VAL_OBJECT || v.kind == VAL_ARRAY || v.kind == VAL_STRING))
		return value_int(value_size(st, v));
	if (v.kind != VAL_ARRAY)
		return (TplValue) {.kind = VAL_NIL};
	n = JsonContainerSize(v.container);
	if (step->key == NULL)
		i = step->index < 0 ? step->index + n : step->index;
	else if (strcmp(step->key, "first") == 0)
		i = 0;
	else if (strcmp(step->key, "last") == 0)
		i = n - 1;
	if (i < 0 || i >= n)
		return (TplValue) {.kind = VAL_NIL};
	return array_element(v.container, i);
}

/* Evaluate a literal or a path: loop variables, then forloop, then context keys. */
static TplValue
eval_primary(RenderState *st, TplExpr *e)
{
	TplValue	v = {.kind = VAL_NIL};
	LoopFrame  *f;
	ListCell   *lc;
	int			skip = 0;

	if (e->is_literal)
		return e->literal;
	spend(st, WORK_PER_STEP);
	for (f = st->loop; f != NULL; f = f->outer)
	{
		spend(st, 1);
		if (strcmp(f->var, e->name) == 0)
			break;
	}
	if (f != NULL)
		v = f->item;
	else if (st->loop != NULL && strcmp(e->name, "forloop") == 0)
	{
		PathStep   *step = e->path != NIL ? linitial(e->path) : NULL;

		if (step == NULL || step->key == NULL)
			return v;
		v = forloop_attribute(st->loop, step->key);
		skip = 1;
	}
	else if (st->root != NULL)
	{
		JsonbValue	jv;

		if (getKeyJsonValueFromContainer(st->root, e->name, strlen(e->name), &jv))
			v = value_from_jsonb(&jv);
	}
	for_each_from(lc, e->path, skip)
	{
		if (v.kind == VAL_NIL)
			break;
		v = apply_step(st, v, lfirst(lc));
	}
	return v;
}

/* Join the elements of an array with a separator (other values: their text). */
static TplValue
join_values(RenderState *st, TplValue v, const char *sep, int seplen)
{
	StringInfoData buf;
	JsonbIterator *it;
	JsonbValue	jv;
	JsonbIteratorToken r;
	bool		first = true;

	if (v.kind != VAL_ARRAY)
	{
		v.str = value_text(st, v, &v.len);
		v.kind = VAL_STRING;
		return v;
	}
	initStringInfo(&buf);
	it = JsonbIteratorInit(v.container);
	while ((r = JsonbIteratorNext(&it, &jv, true)) != WJB_DONE)
	{
		TplValue	elem;
		const char *s;
		int			len;
		int64		need;

		if (r != WJB_ELEM)
			continue;
		elem = value_from_jsonb(&jv);
		s = value_text(st, elem, &len);
		need = (int64) buf.len + (first ? 0 : seplen) + len + 1;
		if (need > buf.maxlen)
		{
			/* the buffer is about to double: check the memory that takes first */
			int64		newlen = buf.maxlen;

			while (newlen < need)
				newlen *= 2;
			check_budget(st, newlen);
		}
		spend(st, WORK_PER_STEP + seplen + len);
		if (!first)
			appendBinaryStringInfo(&buf, sep, seplen);
		first = false;
		appendBinaryStringInfo(&buf, s, len);
		if (elem.kind == VAL_NUMBER || elem.kind == VAL_ARRAY || elem.kind == VAL_OBJECT)
			pfree((char *) s);	/* text made for this element */
	}
	return (TplValue) {.kind = VAL_STRING, .str = buf.data, .len = buf.len};
}

/* Evaluate an expression: its primary through its filters. */
static TplValue
eval_expr(RenderState *st, TplExpr *e)
{
	TplValue	v = eval_primary(st, e);
	ListCell   *lc;

	foreach(lc, e->filters)
	{
		Filter	   *f = lfirst(lc);
		const char *sep = " ";
		int			seplen = 1;

		spend(st, WORK_PER_STEP);
		switch (f->kind)
		{
			case FILTER_DEFAULT:
				if (!value_truthy(v) || value_is_empty(v))
					v = eval_primary(st, linitial(f->args));
				break;
			case FILTER_UPCASE:
			case FILTER_DOWNCASE:
			case FILTER_CAPITALIZE:
				v = change_case(st, v, f->kind);
				break;
			case FILTER_SIZE:
				v = value_int(value_size(st, v));
				break;
			case FILTER_JOIN:
				if (f->args != NIL)
					sep = value_text(st, eval_primary(st, linitial(f->args)), &seplen);
				v = join_values(st, v, sep, seplen);
				break;
		}
	}
	return v;
}

/* Evaluate one comparison. */
static bool
eval_comparison(RenderState *st, Comparison *c)
{
	TplValue	a = eval_expr(st, c->left);
	TplValue	b;
	int			cmp;

	if (c->op == CMP_NONE)
		return value_truthy(a);
	b = eval_expr(st, c->right);
	if (c->op == CMP_EQ || c->op == CMP_NE)
		return values_equal(st, a, b) == (c->op == CMP_EQ);
	if (c->op == CMP_CONTAINS)
		return value_contains(st, a, b);
	if (!values_compare(st, a, b, &cmp))
		return false;			/* <, >, <=, >= across types */
	return c->op == CMP_LT ? cmp < 0 : c->op == CMP_GT ? cmp > 0 :
		c->op == CMP_LE ? cmp <= 0 : cmp >= 0;
}

/* Evaluate and/or right to left as Liquid does: a and b or c = a and (b or c). */
static bool
eval_condition(RenderState *st, List *terms)
{
	ListCell   *lc;
	bool		result = false;

	foreach(lc, terms)
	{
		Comparison *c = lfirst(lc);

		result = eval_comparison(st, c);
		if (c->and_next ? !result : result)
			break;				/* false and ..., true or ... */
	}
	scratch_reset(st);
	return result;
}

/* Render an if/unless: the first branch whose condition holds, else the else body. */
static void
render_if(RenderState *st, TplNode *node)
{
	ListCell   *lc1;
	ListCell   *lc2;

	forboth(lc1, node->conds, lc2, node->bodies)
	{
		bool		result = eval_condition(st, lfirst(lc1));

		if (node->negate && lc1 == list_head(node->conds))
			result = !result;
		if (result)
		{
			render_nodes(st, lfirst(lc2));
			return;
		}
	}
	render_nodes(st, node->else_body);
}

/*
 * Render a for loop over an array (the else body when empty or not an array).
 * The collection is a path without filters, so its container lies in the
 * context jsonb and survives the resets of scratch done by the body.
 */
static void
render_for(RenderState *st, TplNode *node)
{
	TplValue	coll = eval_expr(st, node->collection);
	LoopFrame	frame;
	int			from = 0;
	int			count;
	int			i;

	if (coll.kind != VAL_ARRAY)
	{
		scratch_reset(st);
		render_nodes(st, node->else_body);
		return;
	}
	count = JsonContainerSize(coll.container);
	if (node->offset && value_to_int(st, eval_expr(st, node->offset), &i))
		from = Min(Max(i, 0), count);
	count -= from;
	if (node->limit && value_to_int(st, eval_expr(st, node->limit), &i))
		count = Min(count, Max(i, 0));
	scratch_reset(st);
	if (count == 0)
	{
		render_nodes(st, node->else_body);
		return;
	}
	frame.var = node->var;
	frame.length = count;
	frame.outer = st->loop;
	st->loop = &frame;
	for (i = 0; i < count; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (++st->iterations > TEMPLATE_MAX_ITERATIONS)
			render_fail(st, "loop iteration limit exceeded: more than %d iterations in one render",
						TEMPLATE_MAX_ITERATIONS);
		spend(st, WORK_PER_STEP);
		frame.index0 = i;
		frame.item = array_element(coll.container, from + i);
		render_nodes(st, node->body);
	}
	st->loop = frame.outer;
}

/* Render a list of nodes, freeing each output node's values once emitted. */
static void
render_nodes(RenderState *st, List *nodes)
{
	ListCell   *lc;

	foreach(lc, nodes)
	{
		TplNode    *node = lfirst(lc);
		const char *s;
		int			len;

		spend(st, WORK_PER_STEP);
		switch (node->kind)
		{
			case NODE_TEXT:
				emit(st, node->text, node->len);
				break;
			case NODE_OUTPUT:
				s = value_text(st, eval_expr(st, node->expr), &len);
				emit(st, s, len);
				scratch_reset(st);
				break;
			case NODE_IF:
				render_if(st, node);
				break;
			case NODE_FOR:
				render_for(st, node);
				break;
		}
	}
}


/* ---------- Public API ---------- */

/* Compile a template; NULL and *errmsg (naming line and column) on a syntax error. */
Template *
template_parse(const char *src, int len, char **errmsg)
{
	MemoryContext callercxt = CurrentMemoryContext;
	MemoryContext cxt = AllocSetContextCreate(callercxt, "novu template",
											  ALLOCSET_SMALL_SIZES);
	Parser	   *p;
	Template   *tpl;
	BlockEnd	end;

	*errmsg = NULL;
	MemoryContextSwitchTo(cxt);
	p = palloc0(sizeof(Parser));
	p->src = src;
	p->len = len;
	p->in_tag = TOK_EOF;
	if (sigsetjmp(p->fail, 0) != 0)
	{
		MemoryContextSwitchTo(callercxt);
		*errmsg = pstrdup(p->errmsg);
		MemoryContextDelete(cxt);
		return NULL;
	}
	tpl = palloc0(sizeof(Template));
	tpl->nodes = parse_body(p, 0, &end);
	if (end.tag != NULL)
		stray_tag(p, &end);
	MemoryContextSwitchTo(callercxt);
	return tpl;
}

/*
 * Render against a jsonb object; NULL and *errmsg when a limit is exceeded.
 * Values are computed in a scratch context reset node by node; the render's
 * work and memory are bounded by TEMPLATE_MAX_WORK and TEMPLATE_MAX_MEMORY.
 */
char *
template_render(const Template *tpl, Jsonb *context, char **errmsg)
{
	MemoryContext callercxt = CurrentMemoryContext;
	RenderState *st = palloc0(sizeof(RenderState));
	char	   *result;

	*errmsg = NULL;
	initStringInfo(&st->out);
	st->root = (context != NULL && JB_ROOT_IS_OBJECT(context)) ? &context->root : NULL;
	st->scratch = AllocSetContextCreate(callercxt, "novu template render",
										ALLOCSET_DEFAULT_SIZES);
	st->next_check = WORK_CHECK_INTERVAL;
	if (sigsetjmp(st->fail, 0) != 0)
	{
		MemoryContextSwitchTo(callercxt);
		*errmsg = pstrdup(st->errmsg);
		MemoryContextDelete(st->scratch);
		pfree(st->out.data);
		pfree(st);
		return NULL;
	}
	MemoryContextSwitchTo(st->scratch);
	render_nodes(st, tpl->nodes);
	MemoryContextSwitchTo(callercxt);
	MemoryContextDelete(st->scratch);
	result = palloc(st->out.len + 1);
	memcpy(result, st->out.data, st->out.len + 1);
	pfree(st->out.data);
	pfree(st);
	return result;
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


/* ---------- SQL functions ---------- */

/* novu.render(template, context): render a template, for previews and tests. */
Datum
novu_render(PG_FUNCTION_ARGS)
{
	text	   *src = PG_GETARG_TEXT_PP(0);
	Jsonb	   *context = PG_GETARG_JSONB_P(1);
	Template   *tpl;
	char	   *msg;
	char	   *out;

	if (!JB_ROOT_IS_OBJECT(context))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("context must be a JSON object"),
				 errhint("Pass an object such as {\"payload\": {...}, \"subscriber\": {...}}.")));
	if (template_is_static(VARDATA_ANY(src), VARSIZE_ANY_EXHDR(src)))
		PG_RETURN_TEXT_P(src);

	tpl = template_parse(VARDATA_ANY(src), VARSIZE_ANY_EXHDR(src), &msg);
	if (tpl == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("invalid template: %s", msg),
				 errhint("%s", TEMPLATE_HINT)));
	out = template_render(tpl, context, &msg);
	if (out == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid template: %s", msg),
				 errhint("Rendering is limited to %d bytes of output, %d loop iterations, %d units of work (a byte a filter or comparison handles is one) and %d bytes of working memory.",
						 TEMPLATE_MAX_OUTPUT_BYTES, TEMPLATE_MAX_ITERATIONS,
						 TEMPLATE_MAX_WORK, TEMPLATE_MAX_MEMORY)));
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/* novu._check_template(template, field): raise a syntax error naming the field. */
Datum
novu_check_template(PG_FUNCTION_ARGS)
{
	text	   *src = PG_GETARG_TEXT_PP(0);
	char	   *msg;

	if (!template_is_static(VARDATA_ANY(src), VARSIZE_ANY_EXHDR(src)) &&
		template_parse(VARDATA_ANY(src), VARSIZE_ANY_EXHDR(src), &msg) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("template syntax error in %s: %s",
						text_to_cstring(PG_GETARG_TEXT_PP(1)), msg),
				 errhint("%s", TEMPLATE_HINT)));
	PG_RETURN_VOID();
}
