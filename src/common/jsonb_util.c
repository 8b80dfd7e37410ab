/*
 * jsonb_util.c
 *		Small helpers over PostgreSQL's jsonb API, novu._parse_object() and
 *		novu._profile().
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/jsonfuncs.h"
#include "utils/numeric.h"

#include "common/jsonb_util.h"
#include "novu.h"

PG_FUNCTION_INFO_V1(novu_parse_object);
PG_FUNCTION_INFO_V1(novu_check_size);
PG_FUNCTION_INFO_V1(novu_json_size_ok);
PG_FUNCTION_INFO_V1(novu_profile);

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

/*
 * The integer value of a key of a jsonb object (a number that fits an int32,
 * its fraction dropped); false if absent, not a number or out of range.
 */
bool
jsonb_container_get_int32(JsonbContainer *container, const char *key, int32 *result)
{
	JsonbValue	v;
	bool		overflow = false;
	int32		n;

	if (!jsonb_container_get(container, key, &v) || v.type != jbvNumeric)
		return false;
	n = numeric_int4_opt_error(v.val.numeric, &overflow);
	if (overflow)
		return false;
	*result = n;
	return true;
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

/* Longest JSON text jsonb_parse_or_null() looks at (provider answers, CSV data). */
#define JSON_PARSE_MAX_BYTES	(4 * 1024 * 1024)

/* What the parse check of jsonb_parse_or_null() found. */
typedef struct ParseCheck
{
	bool		bad_number;
} ParseCheck;

/*
 * Whether a JSON number (valid syntax) fits numeric, which jsonb stores it in:
 * numeric_in raises for a decimal weight past about 131,000 digits or more than
 * 16,383 digits after the point ("1e1000000").  Conservative: a few numbers
 * numeric would take (zeros with huge exponents) count as not fitting.
 */
static bool
json_number_fits(const char *tok)
{
	const char *p = tok;
	int64		intdigits = 0;
	int64		fracdigits = 0;
	int64		exp = 0;
	bool		negexp = false;

	if (*p == '-')
		p++;
	while (*p == '0')
		p++;
	for (; *p >= '0' && *p <= '9'; p++)
		intdigits++;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			fracdigits++;
	if (*p == 'e' || *p == 'E')
	{
		p++;
		if (*p == '+' || *p == '-')
			negexp = (*p++ == '-');
		for (; *p >= '0' && *p <= '9'; p++)
		{
			if (exp < 10000000)
				exp = exp * 10 + (*p - '0');
		}
	}
	if (negexp)
		exp = -exp;
	return intdigits + exp <= 131000 && fracdigits - exp <= 16383;
}

/* Semantic action of the parse check: flag numbers numeric cannot hold. */
#if PG_VERSION_NUM >= 160000
static JsonParseErrorType
#else
static void
#endif
check_scalar(void *state, char *token, JsonTokenType tokentype)
{
	if (tokentype == JSON_TOKEN_NUMBER && !json_number_fits(token))
		((ParseCheck *) state)->bad_number = true;
#if PG_VERSION_NUM >= 160000
	return JSON_SUCCESS;
#endif
}

/*
 * Whether the JSON text nests containers deeper than limit: a linear scan,
 * done before parsing so that a hostile text cannot exhaust the stack of the
 * recursive-descent parser.
 */
static bool
json_nests_deeper(const char *text, int len, int limit)
{
	int			depth = 0;
	bool		in_string = false;
	int			i;

	for (i = 0; i < len; i++)
	{
		char		c = text[i];

		if (in_string)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == '[' || c == '{')
		{
			if (++depth > limit)
				return true;
		}
		else if (c == ']' || c == '}')
			depth--;
	}
	return false;
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
	char	   *copy;
	JsonLexContext *lex;
	JsonSemAction sem;
	ParseCheck	check = {false};

	if (len > JSON_PARSE_MAX_BYTES || json_nests_deeper(text, len, NOVU_MAX_JSON_DEPTH))
		return NULL;
	copy = pnstrdup(text, len);
	if (strstr(copy, "\\u0000") != NULL)
		return NULL;
#if PG_VERSION_NUM >= 170000
	lex = makeJsonLexContextCstringLen(NULL, copy, len, GetDatabaseEncoding(), true);
#else
	lex = makeJsonLexContextCstringLen(copy, len, GetDatabaseEncoding(), true);
#endif
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &check;
	sem.scalar = check_scalar;
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS || check.bad_number)
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
 * One walk over a jsonb value: how deeply its containers nest (*deepest, 0 for
 * a scalar) and how many bytes of JSON text its numbers make (*numbers).  It
 * stops once the nesting passes depth_limit or the numbers pass numbers_stop.
 * A number's text is not bounded by its binary size: 1e131071 is a few bytes
 * stored and 131,072 characters written out.
 */
static void
jsonb_walk_shape(JsonbContainer *c, int depth_limit, Size numbers_stop, int *deepest, Size *numbers)
{
	JsonbIterator *it = JsonbIteratorInit(c);
	JsonbIteratorToken tok;
	JsonbValue	v;
	int			depth = 0;

	*deepest = 0;
	*numbers = 0;
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if (tok == WJB_BEGIN_ARRAY || tok == WJB_BEGIN_OBJECT)
		{
			/* a scalar root comes as a one-element "raw scalar" array */
			if (!(tok == WJB_BEGIN_ARRAY && v.val.array.rawScalar) && ++depth > *deepest)
				*deepest = depth;
			if (*deepest > depth_limit)
				break;
		}
		else if (tok == WJB_END_ARRAY || tok == WJB_END_OBJECT)
			depth--;
		else if ((tok == WJB_VALUE || tok == WJB_ELEM) && v.type == jbvNumeric)
		{
			char	   *text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));

			*numbers += strlen(text);
			pfree(text);
			if (*numbers > numbers_stop)
				break;
		}
	}
}

/*
 * Measure a jsonb value against a limit of max_bytes of JSON text: how deeply
 * it nests (*deepest) and its text's length (*textlen; *partial when only its
 * numbers were written out, already past the limit).  Apart from numbers, the
 * text of a jsonb is at most about six times its binary size (a control
 * character becomes "\u0001"): the numbers are written out first (stopping
 * past the limit), and only values that may then be too long are written out
 * whole.
 */
static void
json_measure(Jsonb *value, int max_bytes, int *deepest, Size *textlen, bool *partial)
{
	Size		binary = VARSIZE(value);
	Size		numbers;

	jsonb_walk_shape(&value->root, NOVU_MAX_JSON_DEPTH, (Size) max_bytes, deepest, &numbers);
	*textlen = numbers;
	*partial = numbers > (Size) max_bytes;
	if (*deepest <= NOVU_MAX_JSON_DEPTH && !*partial && binary * 6 + numbers > (Size) max_bytes)
		*textlen = strlen(JsonbToCString(NULL, &value->root, binary));
}

/*
 * Raise unless the value's containers nest at most NOVU_MAX_JSON_DEPTH deep
 * and its JSON text has at most max_bytes bytes.
 */
void
novu_check_json_size(Jsonb *value, const char *field, int max_bytes)
{
	int			deepest;
	Size		textlen;
	bool		partial;

	json_measure(value, max_bytes, &deepest, &textlen, &partial);
	if (deepest > NOVU_MAX_JSON_DEPTH)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s nests too deeply", field),
				 errdetail("The limit is %d levels of objects and arrays.", NOVU_MAX_JSON_DEPTH),
				 errhint("Flatten the structure.")));
	if (textlen > (Size) max_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s is too large (%s%zu bytes as JSON text)", field,
						partial ? "at least " : "", textlen),
				 errdetail("The limit is %d bytes as JSON text.", max_bytes),
				 errhint("Keep large data in your tables and pass its key instead.")));
}

/*
 * novu._json_size_ok(value jsonb, max_bytes integer): whether
 * novu._check_size would accept the value, without raising (the CSV import
 * rejects such a row alone).
 */
Datum
novu_json_size_ok(PG_FUNCTION_ARGS)
{
	int			deepest;
	Size		textlen;
	bool		partial;

	json_measure(PG_GETARG_JSONB_P(0), PG_GETARG_INT32(1), &deepest, &textlen, &partial);
	PG_RETURN_BOOL(deepest <= NOVU_MAX_JSON_DEPTH && textlen <= (Size) PG_GETARG_INT32(1));
}

/*
 * novu._check_size(value jsonb, field text, max_bytes integer): the SQL face
 * of novu_check_json_size, for the PL/pgSQL functions.  Returns the value.
 */
Datum
novu_check_size(PG_FUNCTION_ARGS)
{
	Jsonb	   *value = PG_GETARG_JSONB_P(0);
	char	   *field = text_to_cstring(PG_GETARG_TEXT_PP(1));

	novu_check_json_size(value, field, PG_GETARG_INT32(2));
	PG_RETURN_JSONB_P(value);
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

/* Push "key": value (a whole jsonb; NULL pushes {}) into an object under construction. */
void
jsonb_push_jsonb(JsonbParseState **state, const char *key, Jsonb *value)
{
	JsonbValue	v;

	jsonb_push_key(state, key);
	if (value == NULL)
		value = jsonb_empty_object();
	v.type = jbvBinary;
	v.val.binary.data = &value->root;
	v.val.binary.len = VARSIZE(value) - VARHDRSZ;
	pushJsonbValue(state, WJB_VALUE, &v);
}

/* A provider's answer parsed as a JSON object, or NULL (not JSON, or not an object). */
Jsonb *
jsonb_parse_object_or_null(const char *text, int len)
{
	Jsonb	   *j = jsonb_parse_or_null(text, len);

	return j != NULL && JB_ROOT_IS_OBJECT(j) && !JB_ROOT_IS_SCALAR(j) ? j : NULL;
}

/*
 * novu._profile(subscriber_id, first_name, last_name, email, phone, avatar,
 * locale, timezone, data): a subscriber as templates see it, the jsonb that
 * jsonb_build_object('subscriberId', ..., 'data', data) makes, built directly
 * (the workers build one per message they send: jsonb_build_object looks up
 * each argument's type on every call, about 6 us a row, this about 1 us).
 * NULL arguments are JSON nulls.
 */
Datum
novu_profile(PG_FUNCTION_ARGS)
{
	static const char *const keys[] = {"subscriberId", "firstName", "lastName", "email", "phone",
	"avatar", "locale", "timezone"};
	JsonbParseState *state = NULL;
	JsonbValue	v;
	JsonbValue *res;
	int			i;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (i = 0; i < lengthof(keys); i++)
	{
		jsonb_push_key(&state, keys[i]);
		if (PG_ARGISNULL(i))
			v.type = jbvNull;
		else
		{
			text	   *t = PG_GETARG_TEXT_PP(i);

			v.type = jbvString;
			v.val.string.val = VARDATA_ANY(t);
			v.val.string.len = VARSIZE_ANY_EXHDR(t);
		}
		pushJsonbValue(&state, WJB_VALUE, &v);
	}
	if (PG_ARGISNULL(lengthof(keys)))
	{
		jsonb_push_key(&state, "data");
		v.type = jbvNull;
		pushJsonbValue(&state, WJB_VALUE, &v);
	}
	else
		jsonb_push_jsonb(&state, "data", PG_GETARG_JSONB_P(lengthof(keys)));
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	PG_RETURN_JSONB_P(JsonbValueToJsonb(res));
}
