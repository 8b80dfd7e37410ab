/*
 * template_int.h
 *		Internals shared by the files of the template engine: the value model
 *		(value.c), the compiled template (parse.c), the render state and its
 *		budget (render.c), filters (filters.c) and dates (date.c).
 *
 * The engine follows LiquidJS (new Liquid(), default options): values behave
 * as the JavaScript values LiquidJS sees after JSON.parse of the context.
 * Numbers are doubles and print as JavaScript prints them; strings are UTF-8
 * here, and where LiquidJS counts UTF-16 code units (size, slice, truncate)
 * so does this engine.
 */
#ifndef NOVU_TEMPLATE_INT_H
#define NOVU_TEMPLATE_INT_H

#include <setjmp.h>

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"

#include "template/template.h"

/* ---------- Values ---------- */

typedef enum TplKind
{
	TV_UNDEF,					/* a missing variable or property */
	TV_NULL,					/* JSON null */
	TV_BOOL,
	TV_NUM,
	TV_STR,
	TV_ARR,
	TV_OBJ,
	TV_NILDROP,					/* the nil / null literal */
	TV_EMPTY,					/* the empty literal */
	TV_BLANK,					/* the blank literal */
	TV_FORLOOP					/* the forloop object of a loop */
} TplKind;

struct LoopFrame;

typedef struct TplValue
{
	uint8		kind;			/* TplKind */
	bool		b;				/* TV_BOOL: the value; TV_ARR: an array of the context (jc) */
	int32		len;			/* TV_STR: bytes; TV_ARR made by the engine: elements */
	union
	{
		double		num;		/* TV_NUM */
		const char *str;		/* TV_STR: UTF-8, not NUL-terminated */
		JsonbContainer *jc;		/* TV_ARR (b) / TV_OBJ of the context */
		struct TplValue *items; /* TV_ARR made by the engine (!b) */
		struct LoopFrame *loop; /* TV_FORLOOP */
	};
} TplValue;

/* ---------- Compiled template ---------- */

typedef enum ValKind
{
	VT_LITERAL,					/* a literal value */
	VT_RANGE,					/* (a..b) */
	VT_PROPS					/* [base] followed by properties */
} ValKind;

typedef struct ValToken
{
	ValKind		kind;
	TplValue	literal;		/* VT_LITERAL */
	struct ValToken *lhs;		/* VT_RANGE */
	struct ValToken *rhs;
	struct ValToken *base;		/* VT_PROPS: literal/range base, or NULL */
	List	   *props;			/* VT_PROPS: of ValToken (literals are keys) */
	char	   *text;			/* source text (the forloop name uses it) */
	int			textlen;
} ValToken;

typedef enum OpKind
{
	OP_NONE,					/* an operand */
	OP_EQ, OP_NE, OP_GT, OP_LT, OP_GE, OP_LE, OP_CONTAINS, OP_NOT, OP_AND, OP_OR
} OpKind;

/* One item of an expression in postfix order: an operand or an operator */
typedef struct ExprItem
{
	OpKind		op;
	ValToken   *operand;
} ExprItem;

typedef struct FilterCall
{
	int			id;				/* index in the filter table, -1: unknown (identity) */
	List	   *args;			/* of FilterArg */
} FilterCall;

typedef struct FilterArg
{
	char	   *key;			/* key: value arguments, else NULL */
	ValToken   *value;			/* NULL for "key:" without a value */
} FilterArg;

typedef struct FilteredValue
{
	ExprItem   *items;			/* postfix */
	int			nitems;
	List	   *filters;		/* of FilterCall */
} FilteredValue;

typedef enum NodeKind
{
	NODE_TEXT,
	NODE_OUTPUT,				/* {{ }} and echo */
	NODE_IF,					/* if and unless */
	NODE_FOR,
	NODE_ASSIGN,
	NODE_CAPTURE,
	NODE_CASE,
	NODE_BREAK,
	NODE_CONTINUE
} NodeKind;

typedef struct Branch
{
	FilteredValue *cond;		/* if/unless: the condition */
	bool		want_falsy;		/* unless: the first branch runs on a falsy value */
	List	   *values;			/* case: of ValToken */
	List	   *body;			/* of TplNode */
} Branch;

typedef struct TplNode
{
	NodeKind	kind;
	const char *text;			/* NODE_TEXT */
	int			len;
	FilteredValue *value;		/* OUTPUT, ASSIGN, CASE; NULL: echo of nothing */
	char	   *name;			/* ASSIGN, CAPTURE, FOR variable */
	int			namelen;
	List	   *branches;		/* IF, CASE: of Branch */
	List	   *else_body;		/* IF, CASE, FOR; NULL when there is none */
	bool		has_else;
	ValToken   *collection;		/* FOR */
	ValToken   *offset;			/* FOR modifiers: NULL when absent */
	ValToken   *limit;
	bool		has_offset;
	bool		has_limit;
	bool		reversed;
	ValToken   *rev_value;		/* FOR: reversed: value (NULL: true) */
	char	   *loopname;		/* FOR: "var-collection" (forloop.name) */
	List	   *body;			/* FOR, CAPTURE */
} TplNode;

struct Template
{
	List	   *nodes;
};

/* ---------- Render state ---------- */

typedef struct LoopFrame
{
	const char *var;
	int			varlen;
	TplValue	item;
	int			index0;
	int			length;
	const char *name;
	struct LoopFrame *outer;
} LoopFrame;

typedef struct Variable
{
	char	   *name;
	int			namelen;
	TplValue	value;
	struct Variable *next;
} Variable;

#define MAX_SCRATCH_DEPTH	(TEMPLATE_MAX_NESTING + 2)

typedef struct RenderState
{
	StringInfo	out;			/* where output goes (a capture redirects it) */
	StringInfoData main_out;	/* the render's output, in the caller's context */
	JsonbContainer *root;		/* context object, or NULL */
	LoopFrame  *loop;			/* innermost for loop */
	Variable   *vars;			/* assigned and captured variables */
	MemoryContext render_cxt;	/* scratch of depth 0, parent of the contexts below */
	MemoryContext keep_cxt;		/* values that outlive a node: variables, captures */
	MemoryContext scratch;		/* values of the node being rendered */
	MemoryContext *scratch_stack;	/* scratch contexts by loop depth (made at first loop) */
	int			scratch_depth;
	bool		break_called;
	bool		continue_called;
	int64		iterations;
	int64		work;			/* units spent, see tpl_spend() */
	int64		next_check;
	sigjmp_buf	fail;
	char	   *errmsg;
	bool		over_limit;		/* the failure is a limit (work, memory, output, ...) */
} RenderState;

/* Work units (see template.h) */
#define WORK_PER_STEP		32
#define WORK_PER_TEXT_BYTE	8
#define WORK_PER_VARIABLE	4	/* each assigned variable passed in a lookup */
#define WORK_CHECK_INTERVAL	65536

extern void tpl_fail(RenderState *st, const char *fmt,...) pg_attribute_printf(2, 3) pg_attribute_noreturn();
extern void tpl_fail_limit(RenderState *st, const char *fmt,...) pg_attribute_printf(2, 3) pg_attribute_noreturn();
extern void tpl_check_budget(RenderState *st, int64 pending);

/* Spend units of work, checking the budgets every WORK_CHECK_INTERVAL units. */
static inline void
tpl_spend(RenderState *st, int64 units)
{
	st->work += units;
	if (unlikely(st->work >= st->next_check))
		tpl_check_budget(st, 0);
}

/* Spend the work of producing bytes bytes; check memory first for large ones. */
static inline void
tpl_reserve(RenderState *st, int64 bytes)
{
	st->work += bytes;
	if (unlikely(st->work >= st->next_check || bytes >= WORK_CHECK_INTERVAL))
		tpl_check_budget(st, bytes);
}

/* ---------- value.c ---------- */

/* undefined */
static inline TplValue
tv_undef(void)
{
	TplValue	v = {0};

	v.kind = TV_UNDEF;
	return v;
}

/* null */
static inline TplValue
tv_null(void)
{
	TplValue	v = {0};

	v.kind = TV_NULL;
	return v;
}

/* a boolean */
static inline TplValue
tv_bool(bool b)
{
	TplValue	v = {0};

	v.kind = TV_BOOL;
	v.b = b;
	return v;
}

/* a number */
static inline TplValue
tv_num(double d)
{
	TplValue	v = {0};

	v.kind = TV_NUM;
	v.num = d;
	return v;
}

/* a string (not copied) */
static inline TplValue
tv_str(const char *s, int len)
{
	TplValue	v = {0};

	v.kind = TV_STR;
	v.str = s;
	v.len = len;
	return v;
}

/* a string from a C string (not copied) */
static inline TplValue
tv_cstr(const char *s)
{
	return tv_str(s, strlen(s));
}

/* an engine-made array (items not copied) */
static inline TplValue
tv_array(TplValue *items, int n)
{
	TplValue	v = {0};

	v.kind = TV_ARR;
	v.items = items;
	v.len = n;
	return v;
}
extern TplValue tv_from_jsonb(RenderState *st, JsonbValue *jv);
extern TplValue tv_drop_value(TplValue v);

/* LiquidJS's toValue(): the value a literal drop or forloop stands for. */
static inline TplValue
tv_to_value(TplValue v)
{
	if (likely(v.kind < TV_NILDROP))
		return v;
	return tv_drop_value(v);
}
extern bool tv_is_nil(TplValue v);
extern bool tv_truthy(TplValue v);
extern int	tv_arr_len(TplValue v);
extern TplValue tv_arr_get(RenderState *st, TplValue v, int i);
extern TplValue tv_to_array(RenderState *st, TplValue v);
extern TplValue tv_materialize(RenderState *st, TplValue v);
extern TplValue tv_read_property(RenderState *st, TplValue obj, TplValue key);
extern void tv_stringify(RenderState *st, StringInfo buf, TplValue v);
extern TplValue tv_stringify_value(RenderState *st, TplValue v);
extern void tv_js_string(RenderState *st, StringInfo buf, TplValue v);
extern void tv_js_element_string(RenderState *st, StringInfo buf, TplValue e);
extern void tv_json(RenderState *st, StringInfo buf, TplValue v, int indent, int level);
extern void tv_format_number(StringInfo buf, double d);
extern int	tv_number_text(char *out, double d);
extern double tv_to_number(RenderState *st, TplValue v);
extern double tv_js_number(RenderState *st, TplValue v);
extern TplValue tv_object_entries(RenderState *st, TplValue obj);
extern int	tv_find(const char *h, int hlen, const char *n, int nlen, int from);
extern int	tv_find_last(const char *h, int hlen, const char *n, int nlen);
extern double tv_string_to_number(const char *s, int len);
extern bool tv_equals(RenderState *st, TplValue a, TplValue b);
extern bool tv_compare(RenderState *st, OpKind op, TplValue a, TplValue b);
extern bool tv_contains(RenderState *st, TplValue a, TplValue b);
extern TplValue tv_copy(TplValue v);
extern int	utf16_length(const char *s, int len);
extern void append_surrogate(StringInfo buf, uint32 unit);
extern void split_surrogates(const char *s, int len, TplValue *high, TplValue *low);
extern int	tv_finish_text(char *s, int len);
extern bool tv_surrogates_made;
extern int	utf8_char_len(const char *s, int len);
extern int	blank_len(const char *s, int len);
extern int	blank_len_before(const char *s, int len);
extern bool js_space_at(const char *s, int len, int *clen);
extern void tv_change_case(StringInfo buf, const char *s, int len, bool upper);

/* ---------- filters.c ---------- */

extern int	tpl_filter_lookup(const char *name, int len, bool *known_unsupported);
extern TplValue tpl_apply_filter(RenderState *st, int id, TplValue v, TplValue *args,
								 char **keys, int nargs);

/* ---------- date.c ---------- */

extern TplValue tpl_date_filter(RenderState *st, TplValue v, TplValue *args, int nargs);

/* ---------- render.c ---------- */

extern TplValue tpl_eval_token(RenderState *st, ValToken *t);
extern TplValue tpl_lookup_path(RenderState *st, TplValue item, const char *path, int len);

#endif							/* NOVU_TEMPLATE_INT_H */
