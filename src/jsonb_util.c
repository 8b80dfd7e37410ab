/*
 * jsonb_util.c
 *		Small helpers over PostgreSQL's jsonb API, and novu._parse_object().
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/jsonfuncs.h"

#include "jsonb_util.h"

PG_FUNCTION_INFO_V1(novu_parse_object);

/* Look a key up in a jsonb object container; false if absent (result may be NULL). */
bool
jsonb_container_get(JsonbContainer *container, const char *key, JsonbValue *result)
{
	JsonbValue	local;

	if (!JsonContainerIsObject(container))
		return false;
	return getKeyJsonValueFromContainer(container, key, strlen(key),
										result ? result : &local) != NULL;
}

/* The string value of a key of a jsonb object, palloc'd, or NULL if absent or not a string. */
char *
jsonb_container_get_string(JsonbContainer *container, const char *key)
{
	JsonbValue	v;

	if (!jsonb_container_get(container, key, &v) || v.type != jbvString)
		return NULL;
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/* Push an object key while building a jsonb value. */
void
jsonb_push_key(JsonbParseState **state, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(state, WJB_KEY, &k);
}

/* Push "key": "value" (null when value is NULL). */
void
jsonb_push_string(JsonbParseState **state, const char *key, const char *value)
{
	JsonbValue	v;

	jsonb_push_key(state, key);
	if (value == NULL)
		v.type = jbvNull;
	else
	{
		v.type = jbvString;
		v.val.string.val = (char *) value;
		v.val.string.len = strlen(value);
	}
	pushJsonbValue(state, WJB_VALUE, &v);
}

/* Push "key": true/false. */
void
jsonb_push_bool(JsonbParseState **state, const char *key, bool value)
{
	JsonbValue	v;

	jsonb_push_key(state, key);
	v.type = jbvBool;
	v.val.boolean = value;
	pushJsonbValue(state, WJB_VALUE, &v);
}

/* A new empty jsonb object. */
Jsonb *
jsonb_empty_object(void)
{
	JsonbParseState *state = NULL;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
}

/*
 * Parse JSON text into jsonb, or return NULL if it is not valid JSON; never
 * raises for bad input.  The text is checked with the non-throwing JSON parser
 * first, and jsonb's one extra rule (no \u0000) by hand, so jsonb_in cannot fail.
 * Used for provider responses in the worker and for the CSV import.
 */
Jsonb *
jsonb_parse_or_null(const char *text, int len)
{
	char	   *copy = pnstrdup(text, len);
	JsonLexContext *lex;

	if (strstr(copy, "\\u0000") != NULL)
		return NULL;
#if PG_VERSION_NUM >= 170000
	lex = makeJsonLexContextCstringLen(NULL, copy, len, GetDatabaseEncoding(), true);
#else
	lex = makeJsonLexContextCstringLen(copy, len, GetDatabaseEncoding(), true);
#endif
	if (pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
		return NULL;
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(copy)));
}

/* Merge the keys of object containers a and b into the state; b wins, objects merge recursively. */
static JsonbValue *
merge_objects(JsonbParseState **state, JsonbContainer *a, JsonbContainer *b)
{
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	k;
	JsonbValue	v;
	JsonbValue	bv;

	pushJsonbValue(state, WJB_BEGIN_OBJECT, NULL);
	it = JsonbIteratorInit(a);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		(void) JsonbIteratorNext(&it, &v, true);
		pushJsonbValue(state, WJB_KEY, &k);
		if (getKeyJsonValueFromContainer(b, k.val.string.val, k.val.string.len, &bv) == NULL)
			pushJsonbValue(state, WJB_VALUE, &v);
		else if (v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data) &&
				 bv.type == jbvBinary && JsonContainerIsObject(bv.val.binary.data))
			merge_objects(state, v.val.binary.data, bv.val.binary.data);
		else
			pushJsonbValue(state, WJB_VALUE, &bv);
	}
	it = JsonbIteratorInit(b);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		(void) JsonbIteratorNext(&it, &v, true);
		if (getKeyJsonValueFromContainer(a, k.val.string.val, k.val.string.len, &bv) != NULL)
			continue;
		pushJsonbValue(state, WJB_KEY, &k);
		pushJsonbValue(state, WJB_VALUE, &v);
	}
	return pushJsonbValue(state, WJB_END_OBJECT, NULL);
}

/*
 * Deep merge (Novu's overrides): b's keys win over a's, objects present in
 * both are merged recursively; either may be NULL.  Non-objects: b wins.
 */
Jsonb *
jsonb_deep_merge(Jsonb *a, Jsonb *b)
{
	JsonbParseState *state = NULL;

	if (a == NULL)
		return b;
	if (b == NULL)
		return a;
	if (!JB_ROOT_IS_OBJECT(a) || !JB_ROOT_IS_OBJECT(b))
		return b;
	return JsonbValueToJsonb(merge_objects(&state, &a->root, &b->root));
}

/* The JSON text of a jsonb value (containers and scalars alike). */
char *
jsonb_value_to_text(JsonbValue *v)
{
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	return JsonbToCString(NULL, &JsonbValueToJsonb(v)->root, 0);
}

/*
 * novu._parse_object(text): the text as a jsonb object, or NULL when it is not
 * a valid JSON object.  Used by the set-based CSV import, where one bad row
 * must not abort the statement.
 */
Datum
novu_parse_object(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	char	   *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);
	Jsonb	   *result;
	int			i;

	/* quick reject: an object starts with '{' after optional whitespace */
	for (i = 0; i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'); i++)
		;
	if (i == len || s[i] != '{')
		PG_RETURN_NULL();
	result = jsonb_parse_or_null(s, len);
	if (result == NULL || !JB_ROOT_IS_OBJECT(result) || JB_ROOT_IS_SCALAR(result))
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(result);
}
