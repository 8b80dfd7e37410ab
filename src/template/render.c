/*
 * render.c
 *		The renderer of the template engine: walks the tree parse.c built
 *		against a jsonb context, with LiquidJS's scoping (for-loop scopes, then
 *		assigned variables, then the context), and enforces the render budget.
 *
 * Rendering runs no SQL and reads no catalog: a background worker may render
 * outside a transaction.  Failures unwind (siglongjmp, within the engine) to
 * template_render(), which returns NULL and a palloc'd message.  Values of a
 * node are computed in a scratch context reset once the node is done; each
 * for loop renders its body one scratch level deeper, so its collection
 * survives the body's resets.  Assigned values are copied to their own
 * context.  Work, memory, output and iterations are bounded (template.h).
 */
#include "postgres.h"

#include <math.h>

#include "miscadmin.h"
#include "utils/memutils.h"

#include "template/template_int.h"

static void render_nodes(RenderState *st, List *nodes);

/* ---------- Errors and budget ---------- */

static void tpl_format_error(RenderState *st, const char *fmt, va_list args) pg_attribute_printf(2, 0);

/* Format st->errmsg from fmt and args. */
static void
tpl_format_error(RenderState *st, const char *fmt, va_list args)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (;;)
	{
		va_list		copy;
		int			needed;

		va_copy(copy, args);
		needed = appendStringInfoVA(&buf, fmt, copy);
		va_end(copy);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	st->errmsg = buf.data;
}

/* Fail on the data (a malformed value, a wrong argument): unwind to template_render(). */
void
tpl_fail(RenderState *st, const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	tpl_format_error(st, fmt, args);
	va_end(args);
	siglongjmp(st->fail, 1);
}

/* Fail on a render limit (work, memory, output, iterations): unwind to template_render(). */
void
tpl_fail_limit(RenderState *st, const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	tpl_format_error(st, fmt, args);
	va_end(args);
	st->over_limit = true;
	siglongjmp(st->fail, 1);
}

/* Check for interrupts, the work budget and the memory budget (with pending bytes). */
void
tpl_check_budget(RenderState *st, int64 pending)
{
	CHECK_FOR_INTERRUPTS();
	if (st->work > TEMPLATE_MAX_WORK)
		tpl_fail_limit(st, "render work limit exceeded: more than %d units of work in one render",
				 TEMPLATE_MAX_WORK);
	if ((int64) MemoryContextMemAllocated(st->render_cxt, true) + st->main_out.maxlen + pending >
		TEMPLATE_MAX_MEMORY)
		tpl_fail_limit(st, "render memory limit exceeded: more than %d bytes of working memory in one render",
				 TEMPLATE_MAX_MEMORY);
	st->next_check = st->work + WORK_CHECK_INTERVAL;
}

/* Append to the current output, failing past TEMPLATE_MAX_OUTPUT_BYTES. */
static inline void
emit(RenderState *st, const char *s, int len)
{
	StringInfo	out = st->out;

	if (unlikely((int64) out->len + len > TEMPLATE_MAX_OUTPUT_BYTES))
		tpl_fail_limit(st, "rendered output exceeds the limit of 1 MB (%d bytes)",
				 TEMPLATE_MAX_OUTPUT_BYTES);
	tpl_reserve(st, len);
	if (likely(out->len + len < out->maxlen))
	{
		/* fits: no call */
		memcpy(out->data + out->len, s, len);
		out->len += len;
		out->data[out->len] = '\0';
	}
	else
		appendBinaryStringInfo(out, s, len);
}

/* Free the values of the node just rendered (not the contexts under it). */
static inline void
scratch_reset(RenderState *st)
{
	if (!st->scratch->isReset)
		MemoryContextResetOnly(st->scratch);
}

/* The context of values that outlive a node (created at first use). */
static MemoryContext
keep_context(RenderState *st)
{
	if (st->keep_cxt == NULL)
		st->keep_cxt = AllocSetContextCreate(st->render_cxt, "novu template variables",
											 ALLOCSET_SMALL_SIZES);
	return st->keep_cxt;
}

/* ---------- Variables ---------- */

/* The value of a variable: loop scopes, then assigned variables, then the context. */
static TplValue
lookup_variable(RenderState *st, const char *name, int len)
{
	LoopFrame  *f;
	Variable   *v;

	tpl_spend(st, WORK_PER_STEP);
	for (f = st->loop; f != NULL; f = f->outer)
	{
		if (f->varlen == len && memcmp(f->var, name, len) == 0)
			return f->item;
		if (len == 7 && memcmp(name, "forloop", 7) == 0)
		{
			TplValue	d = {0};

			d.kind = TV_FORLOOP;
			d.loop = f;
			return d;
		}
	}
	/* a list: each entry passed is charged, so many names hit the work budget */
	for (v = st->vars; v != NULL; v = v->next)
	{
		tpl_spend(st, WORK_PER_VARIABLE);
		if (v->namelen == len && memcmp(v->name, name, len) == 0)
			return v->value;
	}
	if (st->root != NULL)
	{
		JsonbValue	jv;

		if (getKeyJsonValueFromContainer(st->root, name, len, &jv))
			return tv_from_jsonb(st, &jv);
	}
	return tv_undef();
}

/* Set an assigned (or captured) variable to a copy of value. */
static void
set_variable(RenderState *st, const char *name, TplValue value)
{
	MemoryContext old;
	Variable   *v;

	old = MemoryContextSwitchTo(keep_context(st));
	for (v = st->vars; v != NULL; v = v->next)
	{
		tpl_spend(st, WORK_PER_VARIABLE);
		if (strcmp(v->name, name) == 0)
			break;
	}
	if (v == NULL)
	{
		v = palloc(sizeof(Variable));
		v->name = pstrdup(name);
		v->namelen = strlen(name);
		v->next = st->vars;
		st->vars = v;
	}
	v->value = tv_copy(value);
	MemoryContextSwitchTo(old);
	tpl_check_budget(st, 0);
}

/* ---------- Expressions ---------- */

/* Evaluate a value token (literals, ranges, variables and their properties). */
TplValue
tpl_eval_token(RenderState *st, ValToken *t)
{
	ListCell   *lc;
	TplValue	v;
	int			skip = 0;

	check_stack_depth();
	if (t == NULL)
		return tv_undef();
	switch (t->kind)
	{
		case VT_LITERAL:
			return t->literal;
		case VT_RANGE:
			{
				double		lo = tv_js_number(st, tv_to_value(tpl_eval_token(st, t->lhs)));
				double		hi = tv_js_number(st, tv_to_value(tpl_eval_token(st, t->rhs))) + 1;
				double		count = (isnan(lo) || isnan(hi) || hi <= lo) ? 0 : ceil(hi - lo);
				TplValue   *items;
				int			i;

				if (count > TEMPLATE_MAX_ITERATIONS)
					tpl_fail_limit(st, "range (%g..%g) has more than %d elements", lo, hi - 1,
							 TEMPLATE_MAX_ITERATIONS);
				tpl_reserve(st, (int64) count * sizeof(TplValue));
				items = palloc(Max(count, 1) * sizeof(TplValue));
				for (i = 0; i < count; i++)
					items[i] = tv_num(lo + i);
				return tv_array(items, (int) count);
			}
		case VT_PROPS:
			break;
	}
	if (t->base != NULL)
		v = tpl_eval_token(st, t->base);
	else
	{
		ValToken   *first = linitial(t->props);
		TplValue	key = first->kind == VT_LITERAL ? first->literal :
			tv_to_value(tpl_eval_token(st, first));

		if (key.kind == TV_STR)
			v = lookup_variable(st, key.str, key.len);
		else
		{
			StringInfoData name;

			initStringInfo(&name);
			tv_js_string(st, &name, key);
			v = lookup_variable(st, name.data, name.len);
		}
		skip = 1;
	}
	for_each_from(lc, t->props, skip)
	{
		ValToken   *p = lfirst(lc);
		TplValue	key = p->kind == VT_LITERAL ? p->literal : tv_to_value(tpl_eval_token(st, p));

		v = tv_read_property(st, v, key);
	}
	return v;
}

/* A property path "a.b.c" read from item (map, sort, where). */
TplValue
tpl_lookup_path(RenderState *st, TplValue item, const char *path, int len)
{
	int			start = 0;
	int			i;

	for (i = 0; i <= len; i++)
	{
		if (i == len || path[i] == '.')
		{
			item = tv_read_property(st, item, tv_str(path + start, i - start));
			start = i + 1;
		}
	}
	return item;
}

/* Evaluate an expression (postfix) and apply its filters. */
static TplValue
eval_filtered(RenderState *st, FilteredValue *fv)
{
	TplValue	v;
	ListCell   *lc;

	if (fv->nitems == 1)
		v = tpl_eval_token(st, fv->items[0].operand);
	else
	{
		TplValue	local[8];
		TplValue   *stack = fv->nitems <= lengthof(local) ? local :
			palloc(fv->nitems * sizeof(TplValue));
		int			sp = 0;
		int			i;

		for (i = 0; i < fv->nitems; i++)
		{
			ExprItem   *it = &fv->items[i];
			TplValue	l;
			TplValue	r;
			bool		res = false;

			if (it->op == OP_NONE)
			{
				stack[sp++] = tpl_eval_token(st, it->operand);
				continue;
			}
			r = sp > 0 ? stack[--sp] : tv_undef();
			if (it->op == OP_NOT)
			{
				stack[sp++] = tv_bool(!tv_truthy(r));
				continue;
			}
			l = sp > 0 ? stack[--sp] : tv_undef();
			switch (it->op)
			{
				case OP_EQ:
					res = tv_equals(st, l, r);
					break;
				case OP_NE:
					res = !tv_equals(st, l, r);
					break;
				case OP_GT:
				case OP_LT:
				case OP_GE:
				case OP_LE:
					res = tv_compare(st, it->op, l, r);
					break;
				case OP_CONTAINS:
					res = tv_contains(st, l, r);
					break;
				case OP_AND:
					res = tv_truthy(l) && tv_truthy(r);
					break;
				case OP_OR:
					res = tv_truthy(l) || tv_truthy(r);
					break;
				default:
					break;
			}
			stack[sp++] = tv_bool(res);
		}
		/* LiquidJS takes the first operand left on the stack */
		v = sp > 0 ? stack[0] : tv_undef();
	}
	foreach(lc, fv->filters)
	{
		FilterCall *f = lfirst(lc);
		int			nargs = list_length(f->args);
		TplValue   *args = nargs > 0 ? palloc(nargs * sizeof(TplValue)) : NULL;
		char	  **keys = nargs > 0 ? palloc(nargs * sizeof(char *)) : NULL;
		ListCell   *ac;
		int			i = 0;

		tpl_spend(st, WORK_PER_STEP);
		foreach(ac, f->args)
		{
			FilterArg  *a = lfirst(ac);

			keys[i] = a->key;
			args[i++] = tpl_eval_token(st, a->value);
		}
		if (f->id >= 0)
			v = tpl_apply_filter(st, f->id, v, args, keys, nargs);
	}
	return v;
}

/* ---------- Nodes ---------- */

/* Enter a deeper scratch level (a for loop's body), creating it at first use. */
static void
scratch_push(RenderState *st)
{
	int			d = ++st->scratch_depth;

	if (d >= MAX_SCRATCH_DEPTH)
		tpl_fail_limit(st, "nesting too deep");
	if (st->scratch_stack == NULL)
	{
		st->scratch_stack = MemoryContextAllocZero(keep_context(st),
												   MAX_SCRATCH_DEPTH * sizeof(MemoryContext));
		st->scratch_stack[0] = st->render_cxt;
	}
	if (st->scratch_stack[d] == NULL)
		st->scratch_stack[d] = AllocSetContextCreate(st->render_cxt, "novu template scratch",
													 ALLOCSET_SMALL_SIZES);
	st->scratch = st->scratch_stack[d];
	MemoryContextSwitchTo(st->scratch);
}

/* Leave a scratch level. */
static void
scratch_pop(RenderState *st)
{
	MemoryContextResetOnly(st->scratch);
	st->scratch = st->scratch_stack[--st->scratch_depth];
	MemoryContextSwitchTo(st->scratch);
}

/* Argument of a slice-like modifier: JavaScript's ToIntegerOrInfinity, relative. */
static int
relative_index(RenderState *st, TplValue v, int len)
{
	double		d = tv_js_number(st, tv_to_value(v));

	if (isnan(d))
		d = 0;
	d = trunc(d);
	if (d < 0)
		return d + len < 0 ? 0 : (int) (d + len);
	return d > len ? len : (int) d;
}

/* Render a for loop: collection, modifiers (offset, limit, reversed), body or else. */
static void
render_for(RenderState *st, TplNode *node)
{
	TplValue	coll = tv_to_value(tpl_eval_token(st, node->collection));
	LoopFrame	frame;
	int			from = 0;
	int			count;
	int			i;
	bool		reversed = false;

	if (coll.kind == TV_OBJ)
		coll = tv_object_entries(st, coll);
	else if (coll.kind == TV_STR && coll.len > 0)
	{
		TplValue   *one = palloc(sizeof(TplValue));

		one[0] = coll;
		coll = tv_array(one, 1);
	}
	else if (coll.kind != TV_ARR)
		coll = tv_array(NULL, 0);
	count = tv_arr_len(coll);
	if (count == 0)
	{
		scratch_reset(st);
		render_nodes(st, node->else_body);
		return;
	}
	if (node->has_offset)
	{
		TplValue	v = node->offset ? tpl_eval_token(st, node->offset) : tv_bool(true);

		if (v.kind != TV_UNDEF)
			from = relative_index(st, v, count);
	}
	count -= from;
	if (node->has_limit)
	{
		TplValue	v = node->limit ? tpl_eval_token(st, node->limit) : tv_bool(true);

		if (v.kind != TV_UNDEF)
			count = relative_index(st, v, count);
	}
	if (node->reversed)
	{
		TplValue	v = node->rev_value ? tpl_eval_token(st, node->rev_value) : tv_bool(true);

		reversed = v.kind != TV_UNDEF;
	}

	frame.var = node->name;
	frame.varlen = node->namelen;
	frame.length = count;
	frame.name = node->loopname;
	frame.outer = st->loop;
	st->loop = &frame;
	scratch_push(st);
	for (i = 0; i < count; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (++st->iterations > TEMPLATE_MAX_ITERATIONS)
			tpl_fail_limit(st, "loop iteration limit exceeded: more than %d iterations in one render",
					 TEMPLATE_MAX_ITERATIONS);
		tpl_spend(st, WORK_PER_STEP);
		frame.index0 = i;
		frame.item = tv_arr_get(st, coll, from + (reversed ? count - 1 - i : i));
		st->break_called = st->continue_called = false;
		render_nodes(st, node->body);
		scratch_reset(st);
		if (st->break_called)
			break;
	}
	st->break_called = st->continue_called = false;
	scratch_pop(st);
	st->loop = frame.outer;
}

/* Render an if/unless: the first branch whose test holds, else the else body. */
static void
render_if(RenderState *st, TplNode *node)
{
	ListCell   *lc;

	foreach(lc, node->branches)
	{
		Branch	   *b = lfirst(lc);
		bool		t = tv_truthy(eval_filtered(st, b->cond));

		scratch_reset(st);
		if (t != b->want_falsy)
		{
			render_nodes(st, b->body);
			return;
		}
	}
	render_nodes(st, node->else_body);
}

/* Render a case: every when branch one of whose values equals the target. */
static void
render_case(RenderState *st, TplNode *node)
{
	ListCell   *lc;
	bool		hit = false;
	TplValue	target = tv_to_value(eval_filtered(st, node->value));

	/* the target must survive the bodies' resets: keep a copy outside scratch */
	if (target.kind == TV_STR || (target.kind == TV_ARR && !target.b))
	{
		MemoryContext old = MemoryContextSwitchTo(keep_context(st));

		target = tv_copy(target);
		MemoryContextSwitchTo(old);
	}
	scratch_reset(st);
	foreach(lc, node->branches)
	{
		Branch	   *b = lfirst(lc);
		ListCell   *vc;

		foreach(vc, b->values)
		{
			bool		eq = tv_equals(st, target, tpl_eval_token(st, lfirst(vc)));

			scratch_reset(st);
			if (eq)
			{
				render_nodes(st, b->body);
				hit = true;
				break;
			}
		}
	}
	if (!hit)
		render_nodes(st, node->else_body);
}

/* Render a capture into a string and assign it. */
static void
render_capture(RenderState *st, TplNode *node)
{
	StringInfo	saved = st->out;
	StringInfoData buf;
	MemoryContext old = MemoryContextSwitchTo(keep_context(st));

	initStringInfo(&buf);
	MemoryContextSwitchTo(old);
	st->out = &buf;
	render_nodes(st, node->body);
	st->out = saved;
	set_variable(st, node->name, tv_str(buf.data, buf.len));
	pfree(buf.data);
}

/* Render a list of nodes; a break or continue stops the list. */
static void
render_nodes(RenderState *st, List *nodes)
{
	ListCell   *lc;

	check_stack_depth();
	foreach(lc, nodes)
	{
		TplNode    *node = lfirst(lc);

		tpl_spend(st, WORK_PER_STEP);
		switch (node->kind)
		{
			case NODE_TEXT:
				emit(st, node->text, node->len);
				break;
			case NODE_OUTPUT:
				{
					FilteredValue *fv = node->value;
					TplValue	v;

					/* a lone value without filters, directly */
					if (fv->nitems == 1 && fv->filters == NIL)
						v = tv_to_value(tpl_eval_token(st, fv->items[0].operand));
					else
						v = tv_to_value(eval_filtered(st, fv));

					if (v.kind == TV_STR)
						emit(st, v.str, v.len);
					else if (v.kind == TV_NUM)
					{
						char		num[48];

						emit(st, num, tv_number_text(num, v.num));
					}
					else
					{
						StringInfoData buf;

						initStringInfo(&buf);
						tv_stringify(st, &buf, v);
						emit(st, buf.data, buf.len);
					}
					scratch_reset(st);
					break;
				}
			case NODE_IF:
				render_if(st, node);
				break;
			case NODE_FOR:
				render_for(st, node);
				break;
			case NODE_CASE:
				render_case(st, node);
				break;
			case NODE_ASSIGN:
				set_variable(st, node->name, eval_filtered(st, node->value));
				scratch_reset(st);
				break;
			case NODE_CAPTURE:
				render_capture(st, node);
				break;
			case NODE_BREAK:
				st->break_called = true;
				break;
			case NODE_CONTINUE:
				st->continue_called = true;
				break;
		}
		if (st->break_called || st->continue_called)
			return;
	}
}

/* ---------- Public API ---------- */

/*
 * Render against a jsonb object; NULL and *errmsg when rendering fails (a
 * limit is exceeded, or a filter refuses its value or arguments).
 * The render's work and memory are bounded by TEMPLATE_MAX_WORK and
 * TEMPLATE_MAX_MEMORY.
 */
char *
template_render(const Template *tpl, Jsonb *context, char **errmsg)
{
	return template_render_ext(tpl, context, errmsg, NULL);
}

/* template_render(), and *over_limit (if not NULL): whether a failure is a render limit. */
char *
template_render_ext(const Template *tpl, Jsonb *context, char **errmsg, bool *over_limit)
{
	/* kept across renders and reset at the start of each: no context to create per render */
	static MemoryContext render_cxt = NULL;
	MemoryContext callercxt = CurrentMemoryContext;
	RenderState state;
	RenderState *st = &state;

	*errmsg = NULL;
	if (render_cxt == NULL)
		render_cxt = AllocSetContextCreate(TopMemoryContext, "novu template render",
										   ALLOCSET_DEFAULT_SIZES);
	else
		MemoryContextReset(render_cxt);
	tv_surrogates_made = false;
	st->out = &st->main_out;
	st->root = (context != NULL && JB_ROOT_IS_OBJECT(context)) ? &context->root : NULL;
	st->loop = NULL;
	st->vars = NULL;
	st->render_cxt = render_cxt;
	st->keep_cxt = NULL;
	st->scratch = render_cxt;
	st->scratch_stack = NULL;
	st->scratch_depth = 0;
	st->break_called = st->continue_called = false;
	st->iterations = 0;
	st->over_limit = false;
	st->work = 0;
	st->next_check = WORK_CHECK_INTERVAL;
	initStringInfo(&st->main_out);
	if (sigsetjmp(st->fail, 0) != 0)
	{
		MemoryContextSwitchTo(callercxt);
		*errmsg = pstrdup(st->errmsg);
		if (over_limit)
			*over_limit = st->over_limit;
		MemoryContextReset(render_cxt);
		pfree(st->main_out.data);
		return NULL;
	}
	MemoryContextSwitchTo(render_cxt);
	render_nodes(st, tpl->nodes);
	MemoryContextSwitchTo(callercxt);
	MemoryContextReset(render_cxt);
	st->main_out.len = tv_finish_text(st->main_out.data, st->main_out.len);
	return st->main_out.data;
}
