/*
 * template.h
 *		The Liquid template engine of workflow steps, with LiquidJS's semantics
 *		(parse.c, value.c, render.c, filters.c, date.c; internals in template_int.h).
 *
 * A template is parsed once (at workflow creation, to reject syntax errors, and
 * again by the delivery worker) and rendered against a jsonb context such as
 * {"payload": {...}, "subscriber": {...}}.  Neither call ereports for bad
 * template text or data: errors come back as palloc'd messages.  Rendering
 * runs no SQL and reads no catalog, so it works outside a transaction.  Both
 * calls check for interrupts (CHECK_FOR_INTERRUPTS), so a cancel, a timeout or
 * a terminate request stops a long parse or render with the usual ereport.
 */
#ifndef NOVU_TEMPLATE_H
#define NOVU_TEMPLATE_H

#include "utils/jsonb.h"

/* Limits (a render over them fails with a message naming the limit) */
#define TEMPLATE_MAX_OUTPUT_BYTES	(1024 * 1024)
#define TEMPLATE_MAX_ITERATIONS		100000
#define TEMPLATE_MAX_NESTING		100

/*
 * Work units one render may spend, bounding its CPU time (about 0.3 s at most
 * on a 2020s server core): a byte that a filter or a comparison reads or
 * writes is 1 unit (a byte of JSON text made of a number or a container, 8);
 * a node, a loop iteration, a variable lookup, a filter call or a container
 * element compared is 32.
 */
#define TEMPLATE_MAX_WORK			100000000

/*
 * Longest template source parsed (a compiled template takes about 65 bytes of
 * memory per byte of a dense source; workflow steps are at most 256 KiB)
 */
#define TEMPLATE_MAX_SOURCE_BYTES	(1024 * 1024)

/* Memory one render may hold at once: its output and the values in use */
#define TEMPLATE_MAX_MEMORY			(16 * 1024 * 1024)

/* Opaque compiled template, allocated under CurrentMemoryContext */
typedef struct Template Template;

/*
 * Compile src (len bytes, need not be NUL-terminated).  On a syntax error,
 * returns NULL and sets *errmsg to a palloc'd message naming line and column.
 */
extern Template *template_parse(const char *src, int len, char **errmsg);

/*
 * Render against a jsonb object.  Returns palloc'd NUL-terminated text, or
 * NULL with *errmsg set when a limit is exceeded.
 */
extern char *template_render(const Template *tpl, Jsonb *context, char **errmsg);
extern char *template_render_ext(const Template *tpl, Jsonb *context, char **errmsg, bool *over_limit);

/* True if src holds no template syntax ("{{" or "{%"): it renders as itself. */
extern bool template_is_static(const char *src, int len);

#endif							/* NOVU_TEMPLATE_H */
