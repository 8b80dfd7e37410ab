/*
 * sqlfuncs.c
 *		The SQL-callable functions of the template engine: novu.render() for
 *		previews and tests, and novu._check_template() that workflow creation
 *		calls so a syntax error is an error at creation.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "template/template.h"

PG_FUNCTION_INFO_V1(novu_render);
PG_FUNCTION_INFO_V1(novu_check_template);

#define TEMPLATE_HINT \
	"Templates use Liquid syntax as LiquidJS reads it: {{ payload.name }}, {% if ... %}...{% endif %}."

/* Refuse a template source longer than TEMPLATE_MAX_SOURCE_BYTES, naming the field. */
static void
check_source_length(text *src, const char *field)
{
	if (VARSIZE_ANY_EXHDR(src) > TEMPLATE_MAX_SOURCE_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s is too long: %zu bytes, a template is at most %d",
						field, (size_t) VARSIZE_ANY_EXHDR(src), TEMPLATE_MAX_SOURCE_BYTES),
				 errhint("Split the template or move large static text into the payload.")));
}

/* novu.render(template, context): render a template, for previews and tests. */
Datum
novu_render(PG_FUNCTION_ARGS)
{
	text	   *src = PG_GETARG_TEXT_PP(0);
	Jsonb	   *context = PG_GETARG_JSONB_P(1);
	Template   *tpl;
	char	   *msg;
	char	   *out;
	bool		over_limit;

	if (!JB_ROOT_IS_OBJECT(context))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("context must be a JSON object"),
				 errhint("Pass an object such as {\"payload\": {...}, \"subscriber\": {...}}.")));
	check_source_length(src, "template");
	if (template_is_static(VARDATA_ANY(src), VARSIZE_ANY_EXHDR(src)))
		PG_RETURN_TEXT_P(src);

	tpl = template_parse(VARDATA_ANY(src), VARSIZE_ANY_EXHDR(src), &msg);
	if (tpl == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("invalid template: %s", msg),
				 errhint("%s", TEMPLATE_HINT)));
	out = template_render_ext(tpl, context, &msg, &over_limit);
	if (out == NULL && !over_limit)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid template: %s", msg),
				 errhint("A filter refused the value or the arguments it was given here.")));
	if (out == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
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

	check_source_length(src, text_to_cstring(PG_GETARG_TEXT_PP(1)));
	if (!template_is_static(VARDATA_ANY(src), VARSIZE_ANY_EXHDR(src)) &&
		template_parse(VARDATA_ANY(src), VARSIZE_ANY_EXHDR(src), &msg) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("template syntax error in %s: %s",
						text_to_cstring(PG_GETARG_TEXT_PP(1)), msg),
				 errhint("%s", TEMPLATE_HINT)));
	PG_RETURN_VOID();
}
