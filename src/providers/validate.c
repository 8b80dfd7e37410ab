/*
 * validate.c
 *		The credential-checking toolkit of the providers' validate() (see
 *		validate.h): every check raises naming the field, never the value.
 */
#include "postgres.h"

#ifndef OPENSSL_NO_DEPRECATED
#define OPENSSL_NO_DEPRECATED 1
#endif

#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "common/jsonb_util.h"
#include "crypto/crypto.h"
#include "net/netpolicy.h"
#include "providers/validate.h"

/* Raise "invalid credentials for provider "p": <prefix><field> <problem>" (field NULL: just the problem). */
void
cred_fail(CredCheck *c, const char *field, const char *problem,
		  const char *detail, const char *hint)
{
	char	   *what;

	if (field != NULL)
		what = psprintf("%s%s %s", c->prefix, field, problem);
	else
		what = pstrdup(problem);
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid credentials for provider \"%s\": %s", c->provider, what),
			 detail ? errdetail("%s", detail) : 0,
			 hint ? errhint("%s", hint) : 0));
	pg_unreachable();
}

/* The accepted keys as "a, b, c". */
static char *
key_list(const char *const *keys)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	for (i = 0; keys[i] != NULL; i++)
		appendStringInfo(&buf, "%s%s", i > 0 ? ", " : "", keys[i]);
	return buf.data;
}

/* Raise on the first key of the object that is not accepted, with a hint listing the accepted ones. */
void
cred_check_keys(CredCheck *c)
{
	JsonbIterator *it = JsonbIteratorInit(c->container);
	JsonbValue	v;
	JsonbIteratorToken tok;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		int			i;
		bool		found = false;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		for (i = 0; c->accepted[i] != NULL; i++)
			if (strcmp(key, c->accepted[i]) == 0)
				found = true;
		if (!found)
		{
			char	   *hint;

			if (c->prefix[0] != '\0')
				hint = psprintf("Accepted keys in %.*s: %s.",
								(int) strlen(c->prefix) - 1, c->prefix, key_list(c->accepted));
			else
				hint = psprintf("Accepted keys for %s: %s.", c->provider, key_list(c->accepted));
			cred_fail(c, NULL, psprintf("unknown key \"%s%s\"", c->prefix, key), NULL, hint);
		}
	}
}

/* The value of a key; false if it is absent or JSON null (null counts as absent). */
bool
cred_get(CredCheck *c, const char *key, JsonbValue *v)
{
	if (!jsonb_container_get(c->container, key, v))
		return false;
	return v->type != jbvNull;
}

/* True if the key is present with a non-null value. */
bool
cred_has(CredCheck *c, const char *key)
{
	JsonbValue	v;

	return cred_get(c, key, &v);
}

/* A non-empty string value (palloc'd); NULL if absent and optional, else an error naming the key. */
char *
cred_string(CredCheck *c, const char *key, bool required, const char *hint)
{
	JsonbValue	v;

	if (!cred_get(c, key, &v))
	{
		if (required)
			cred_fail(c, key, "is required", NULL, hint);
		return NULL;
	}
	if (v.type != jbvString || v.val.string.len == 0)
		cred_fail(c, key, "must be a non-empty string", NULL, hint);
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/*
 * cred_string for a value that goes into a request header or a URL path (an
 * API key, an app or team id): printable ASCII without spaces, so that no
 * value can end a header line or step out of its path segment.
 */
char *
cred_token(CredCheck *c, const char *key, bool required, const char *hint)
{
	char	   *s = cred_string(c, key, required, hint);
	const char *p;

	for (p = s; p != NULL && *p; p++)
		if (*p < 0x21 || *p > 0x7e || *p == '/' || *p == '?' || *p == '#' || *p == '%' || *p == '\\')
			cred_fail(c, key, "must be printable ASCII without spaces, control characters or / ? # % \\",
					  NULL, hint);
	return s;
}

/* Push "key": "value" into the result. */
void
cred_push_string(CredCheck *c, const char *key, const char *value)
{
	jsonb_push_string(c->state, key, value);
}

/* Check and push the optional "endpoint" base URL (fcm, apns, expo, one-signal). */
void
cred_endpoint(CredCheck *c)
{
	char	   *s = cred_string(c, "endpoint", false, ENDPOINT_HINT);
	char	   *url;
	UrlProblem	err;

	if (s == NULL)
		return;
	url = netpolicy_check_url(s, true, &err);
	if (url == NULL)
		cred_fail(c, "endpoint", err.problem, err.detail, err.hint ? err.hint : ENDPOINT_HINT);
	cred_push_string(c, "endpoint", url);
}

/* Load a PEM private key or raise naming the field; expected is e.g. "an RSA private key". */
EVP_PKEY *
cred_private_key(CredCheck *c, const char *field, const char *pem,
				 const char *expected, const char *hint)
{
	char	   *err = NULL;
	EVP_PKEY   *key = crypto_load_private_key_pem(pem, &err);

	if (key == NULL)
		cred_fail(c, field, psprintf("does not parse as %s", expected), err, hint);
	return key;
}

/*
 * Parse JSON text into a jsonb object, or NULL (with *detail set) if it is
 * not valid JSON or not an object.  The non-throwing JSON parser checks the
 * text first (escapes included), so jsonb_in cannot fail on it afterwards.
 */
Jsonb *
cred_parse_json_object(const char *s, int len, char **detail)
{
	JsonLexContext *lex;
	JsonParseErrorType rc;
	Jsonb	   *jb;

	*detail = NULL;
#if PG_VERSION_NUM >= 170000
	lex = makeJsonLexContextCstringLen(NULL, pnstrdup(s, len), len, GetDatabaseEncoding(), true);
#else
	lex = makeJsonLexContextCstringLen(pnstrdup(s, len), len, GetDatabaseEncoding(), true);
#endif
	rc = pg_parse_json(lex, &nullSemAction);
	if (rc != JSON_SUCCESS)
	{
		/* not json_errdetail(): it quotes the bad token, which may be key material */
		*detail = psprintf("The string is not valid JSON: syntax error on line %d (its text is not shown: it holds a private key).",
						   lex->line_number);
		return NULL;
	}
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(pnstrdup(s, len))));
	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
	{
		*detail = pstrdup("The string holds JSON that is not an object.");
		return NULL;
	}
	return jb;
}

