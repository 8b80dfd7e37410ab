/*
 * rules.c
 *		The engine behind each provider's device-token form and override
 *		allowlist (DESIGN.md section 5; the rules themselves are in the
 *		providers' files), and the SQL functions that enforce them.
 *
 * Tokens: a token goes into an APNs URL path, an FCM or Expo JSON body, or is
 * the web-push subscription itself, so each provider's form is checked before
 * a token is stored (and again by the worker before it is sent).
 *
 * Overrides shape the notification, never its target or its authentication.
 * Each provider has a table of the fields an override may set; a field not in
 * it is refused, except where the provider's payload is free-form (APNs body
 * keys, Web Push notification fields), where only the retargeting fields are
 * listed and refused.  Request headers have their own allowlists with value
 * rules; a value with a control character is refused, and a header (names are
 * case-insensitive) can be set once.
 *
 * Everything here is a few comparisons per character or per key: no regular
 * expressions, no catalog access (the worker calls it per message).
 */
#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "common/jsonb_util.h"
#include "providers/provider.h"
#include "providers/rules.h"
#include "net/netpolicy.h"

PG_FUNCTION_INFO_V1(novu_check_device_token);
PG_FUNCTION_INFO_V1(novu_check_overrides_sql);

static bool token_valid(const ProviderOps *ops, const char *token, const char **problem);

#define TOKEN_MAX_LEN			4096	/* any provider (README: a device token at most 4096 characters) */
#define HEADER_VALUE_MAX_LEN	256
#define APNS_COLLAPSE_ID_MAX	64		/* bytes (PROTOCOLS.md 2.2) */
#define WEBPUSH_TOPIC_MAX		32		/* characters (RFC 8030 5.4) */

/* ---------------------------------------------------------------------------
 * Device tokens
 * ------------------------------------------------------------------------- */






/* Whether s (len bytes) is a UUID in its 8-4-4-4-12 hex form. */
bool
novu_is_uuid(const char *s, size_t len)
{
	size_t		i;

	if (len != 36)
		return false;
	for (i = 0; i < len; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (s[i] != '-')
				return false;
		}
		else if (!is_hex(s[i]))
			return false;
	}
	return true;
}

/* A webhook URL target: https and allowed by the outbound URL policy; false with *problem. */
bool
novu_webhook_url_check(const char *url, size_t len, const char **problem)
{
	UrlProblem	err;

	if (len > NOVU_URL_MAX_LEN)
	{
		*problem = "is longer than " CppAsString2(NOVU_URL_MAX_LEN) " bytes";
		return false;
	}
	if (netpolicy_check_url(url, false, &err) == NULL)
	{
		*problem = err.problem;
		return false;
	}
	return true;
}

/* Any other provider: no control characters. */
static bool
plain_token_check(const char *t, size_t len, const char **problem)
{
	size_t		i;

	for (i = 0; i < len; i++)
	{
		if ((unsigned char) t[i] < 0x20 || t[i] == 0x7f)
		{
			*problem = "contains a control character";
			return false;
		}
	}
	return true;
}


#define PLAIN_TOKEN_FORM "A device token is text without control characters."

/* The token check of a provider (the plain check when it has none of its own). */
static TokenCheck
token_check(const ProviderOps *ops)
{
	return ops != NULL && ops->token_check != NULL ? ops->token_check : plain_token_check;
}

/* Whether a token has its provider's form; false with *problem. */
bool
novu_device_token_valid(const char *provider_id, const char *token, const char **problem)
{
	return token_valid(provider_id ? novu_provider_lookup(provider_id) : NULL, token, problem);
}

/* Whether a token has the form of a provider (NULL: the plain form); false with *problem. */
static bool
token_valid(const ProviderOps *ops, const char *token, const char **problem)
{
	size_t		len = token ? strlen(token) : 0;

	if (len == 0)
	{
		*problem = "is empty";
		return false;
	}
	if (len > TOKEN_MAX_LEN)
	{
		*problem = "is longer than " CppAsString2(TOKEN_MAX_LEN) " characters";
		return false;
	}
	return token_check(ops)(token, len, problem);
}

/* The accepted token form of a provider, in words. */
const char *
novu_device_token_form(const char *provider_id)
{
	const ProviderOps *ops = provider_id ? novu_provider_lookup(provider_id) : NULL;

	return ops != NULL && ops->token_form != NULL ? ops->token_form : PLAIN_TOKEN_FORM;
}

/*
 * novu._check_device_token(provider_id text, token text, field text)
 *		Raise naming the field unless the token has its provider's form.
 */
Datum
novu_check_device_token(PG_FUNCTION_ARGS)
{
	char	   *provider_id = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *token = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *field = PG_ARGISNULL(2) ? pstrdup("device token") : text_to_cstring(PG_GETARG_TEXT_PP(2));
	const ProviderOps *ops = provider_id ? novu_provider_lookup(provider_id) : NULL;
	const char *problem = NULL;

	if (!novu_device_token_valid(provider_id, token, &problem))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is not a valid %s %s", field, ops ? ops->label : "device",
						ops && ops->channel == CHANNEL_CHAT ? "webhook URL" : "device token"),
				 errdetail("The %s %s.", ops && ops->channel == CHANNEL_CHAT ? "URL" : "token", problem),
				 errhint("%s", novu_device_token_form(provider_id))));
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------------
 * Request headers an override may set
 * ------------------------------------------------------------------------- */


/* A non-negative integer of at most max_digits digits. */
bool
novu_digits_valid(const char *v, int len, int max_digits)
{
	int			i;

	if (len < 1 || len > max_digits)
		return false;
	for (i = 0; i < len; i++)
	{
		if (v[i] < '0' || v[i] > '9')
			return false;
	}
	return true;
}

/* Whether v (len bytes) is one of a NULL-terminated list of words. */
bool
novu_word_in(const char *v, int len, const char *const *words)
{
	for (; *words; words++)
	{
		if ((int) strlen(*words) == len && strncmp(v, *words, len) == 0)
			return true;
	}
	return false;
}

/* apns-priority: 10, 5 or 1. */
static bool
apns_priority_valid(const char *v, int len)
{
	static const char *const values[] = {"10", "5", "1", NULL};

	return novu_word_in(v, len, values);
}

/* apns-expiration: UNIX seconds, or 0. */
static bool
apns_expiration_valid(const char *v, int len)
{
	return novu_digits_valid(v, len, 10);
}

/* apns-collapse-id: at most 64 bytes. */
static bool
apns_collapse_id_valid(const char *v, int len)
{
	return len >= 1 && len <= APNS_COLLAPSE_ID_MAX;
}

/*
 * apns-push-type: the types whose apns-topic is the bundle id itself; the
 * others need a suffixed topic, and the topic is not overridable.
 */
static bool
apns_push_type_valid(const char *v, int len)
{
	static const char *const values[] = {"alert", "background", NULL};

	return novu_word_in(v, len, values);
}

/* Web Push TTL: seconds. */
static bool
webpush_ttl_valid(const char *v, int len)
{
	return novu_digits_valid(v, len, 10);
}

/* Web Push Urgency (RFC 8030 5.3). */
static bool
webpush_urgency_valid(const char *v, int len)
{
	static const char *const values[] = {"very-low", "low", "normal", "high", NULL};

	return novu_word_in(v, len, values);
}

/* Web Push Topic (RFC 8030 5.4): at most 32 base64url characters. */
static bool
webpush_topic_valid(const char *v, int len)
{
	int			i;

	if (len < 1 || len > WEBPUSH_TOPIC_MAX)
		return false;
	for (i = 0; i < len; i++)
	{
		if (!is_b64url(v[i]))
			return false;
	}
	return true;
}

/* APNs request headers an override may set (PROTOCOLS.md 2.2). */
const HeaderRule novu_apns_headers[] = {
	{"apns-priority", apns_priority_valid, "10, 5 or 1"},
	{"apns-expiration", apns_expiration_valid, "a UNIX time in seconds, or 0"},
	{"apns-collapse-id", apns_collapse_id_valid, "1 to 64 bytes"},
	{"apns-push-type", apns_push_type_valid, "alert or background"},
	{NULL, NULL, NULL}
};

/* Web Push request headers an override may set (RFC 8030). */
const HeaderRule novu_webpush_headers[] = {
	{"ttl", webpush_ttl_valid, "seconds, a non-negative integer"},
	{"urgency", webpush_urgency_valid, "very-low, low, normal or high"},
	{"topic", webpush_topic_valid, "1 to 32 letters, digits, '-' or '_'"},
	{NULL, NULL, NULL}
};

/* Headers refused with a reason of their own (a trailing '*' matches a prefix). */
static const struct
{
	const char *name;
	const char *why;
}			refused_headers[] = {
	{"apns-topic", "the apns-topic is the integration's applicationId (its bundle id)"},
	{"authorization", "authentication comes from the integration's credentials"},
	{"apns-id", "each notification gets its own apns-id"},
	{":*", "pseudo-headers such as :path are the request itself"},
	{"host", "the host is the integration's endpoint"},
};

/* Whether name (len bytes, any case) equals the lowercase pattern, or starts with it if it ends in '*'. */
static bool
name_matches(const char *name, int len, const char *pattern)
{
	int			plen = strlen(pattern);
	bool		prefix = plen > 0 && pattern[plen - 1] == '*';
	int			i;

	if (prefix)
		plen--;
	if (prefix ? len < plen : len != plen)
		return false;
	for (i = 0; i < plen; i++)
	{
		char		c = name[i];

		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		if (c != pattern[i])
			return false;
	}
	return true;
}

/* The rule of a header name (any case) in a list, or NULL. */
const HeaderRule *
novu_header_rule(const HeaderRule *rules, const char *name, int len)
{
	for (; rules->name; rules++)
	{
		if (name_matches(name, len, rules->name))
			return rules;
	}
	return NULL;
}

/* Whether a header value has no control character (CR and LF would inject headers). */
bool
novu_header_value_clean(const char *value, int len)
{
	int			i;

	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) value[i];

		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

/* ---------------------------------------------------------------------------
 * Override fields per provider
 * ------------------------------------------------------------------------- */







/* What is wrong with an override: errmsg, errdetail and errhint texts. */
typedef struct OverrideProblem
{
	char	   *message;
	char	   *detail;
	const char *hint;
} OverrideProblem;

/* Fill in what is wrong with an override; always returns false. */
static bool
refuse(OverrideProblem *p, const char *hint, char *message, char *detail)
{
	p->message = message;
	p->detail = detail;
	p->hint = hint;
	return false;
}

/* The rule of a key in a field list: its entry, or the list's terminator. */
static const FieldRule *
field_rule(const FieldRule *rules, const char *key, int len)
{
	for (; rules->name; rules++)
	{
		int			nlen = strlen(rules->name);

		if (rules->name[nlen - 1] == '*'
			? (len >= nlen - 1 && strncmp(key, rules->name, nlen - 1) == 0)
			: (len == nlen && strncmp(key, rules->name, len) == 0))
			return rules;
	}
	return rules;
}

/* Check an object of request headers against a header allowlist. */
static bool
check_headers(const HeaderRule *rules, JsonbValue *headers, const char *path, const char *hint,
			  OverrideProblem *p)
{
	bool		seen[NOVU_MAX_HEADER_RULES] = {false};
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	k;
	JsonbValue	v;
	StringInfoData allowed;
	const HeaderRule *r;

	if (headers->type != jbvBinary || !JsonContainerIsObject(headers->val.binary.data))
		return refuse(p, hint, psprintf("%s must be a JSON object", path),
					  pstrdup("Headers are an object of header names and string values."));
	initStringInfo(&allowed);
	for (r = rules; r->name; r++)
		appendStringInfo(&allowed, "%s%s", r == rules ? "" : ", ", r->name);

	it = JsonbIteratorInit(headers->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		char	   *field;
		char	   *value;
		int			vlen;
		int			i;

		if (tok != WJB_KEY)
			continue;
		(void) JsonbIteratorNext(&it, &v, true);
		field = psprintf("%s.%.*s", path, k.val.string.len, k.val.string.val);
		r = novu_header_rule(rules, k.val.string.val, k.val.string.len);
		if (r == NULL)
		{
			for (i = 0; i < lengthof(refused_headers); i++)
			{
				if (name_matches(k.val.string.val, k.val.string.len, refused_headers[i].name))
					return refuse(p, hint, psprintf("%s is not allowed", field),
								  psprintf("Overrides shape the notification, never its target or its authentication: %s.",
											refused_headers[i].why));
			}
			return refuse(p, hint, psprintf("%s is not allowed", field),
						  psprintf("Only the headers %s may be set.", allowed.data));
		}
		if (seen[r - rules])
			return refuse(p, hint, psprintf("%s sets the header \"%s\" twice", path, r->name),
						  pstrdup("Header names are case-insensitive; each header can be set once."));
		seen[r - rules] = true;
		if (v.type != jbvString && v.type != jbvNumeric)
			return refuse(p, hint, psprintf("%s must be a string", field),
						  pstrdup("Header values are strings."));
		value = jsonb_value_to_text(&v);
		vlen = strlen(value);
		if (!novu_header_value_clean(value, vlen))
			return refuse(p, hint, psprintf("%s contains a control character", field),
						  pstrdup("Header values with control characters are refused: CR and LF would inject headers."));
		if (vlen > HEADER_VALUE_MAX_LEN || !r->check(value, vlen))
			return refuse(p, hint, psprintf("%s is not a valid %s value", field, r->name),
						  psprintf("%s takes %s.", r->name, r->form));
	}
	return true;
}

/* What a JSON value (an iterator's, containers not expanded) is, in words. */
static const char *
json_kind(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "a string";
		case jbvNumeric:
			return "a number";
		case jbvBool:
			return "a boolean";
		case jbvBinary:
			return JsonContainerIsArray(v->val.binary.data) ? "an array" : "an object";
		case jbvArray:
			return "an array";
		default:
			return "an object";
	}
}

/* The words of a FIELD_WORD rule as a list: "a, b or c". */
static char *
words_text(const char *const *words)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	for (i = 0; words[i]; i++)
		appendStringInfo(&buf, "%s%s", i == 0 ? "" : words[i + 1] ? ", " : " or ", words[i]);
	return buf.data;
}

/* Check an override object (path names it) against a field list. */
static bool
check_fields(const FieldRule *rules, JsonbContainer *c, const char *path, const char *hint,
			 OverrideProblem *p)
{
	JsonbIterator *it = JsonbIteratorInit(c);
	JsonbIteratorToken tok;
	JsonbValue	k;
	JsonbValue	v;

	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		const FieldRule *r;
		char	   *field;
		bool		is_object;

		if (tok != WJB_KEY)
			continue;
		(void) JsonbIteratorNext(&it, &v, true);
		r = field_rule(rules, k.val.string.val, k.val.string.len);
		field = psprintf("%s.%.*s", path, k.val.string.len, k.val.string.val);
		is_object = v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data);
		switch (r->kind)
		{
			case FIELD_ANY:
				break;
			case FIELD_REFUSED:
				if (r->name == NULL)
					return refuse(p, hint, psprintf("%s is not an overridable field", field),
								  pstrdup("Overrides shape the notification, never its target or its authentication; fields outside the provider's allowlist are refused."));
				return refuse(p, hint, psprintf("%s is not allowed", field),
							  psprintf("Overrides shape the notification, never its target or its authentication: %s.", r->why));
			case FIELD_OBJECT:
			case FIELD_NESTED:
				if (!is_object)
					return refuse(p, hint, psprintf("%s must be a JSON object", field),
								  psprintf("Overrides merge field by field, so %.*s is an object.", k.val.string.len, k.val.string.val));
				if (r->kind == FIELD_NESTED && !check_fields(r->fields, v.val.binary.data, field, hint, p))
					return false;
				break;
			case FIELD_HEADERS:
				if (!check_headers(r->headers, &v, field, hint, p))
					return false;
				break;
			case FIELD_STRING:
			case FIELD_NUMBER:
			case FIELD_BOOLEAN:
				{
					enum jbvType want = r->kind == FIELD_STRING ? jbvString : r->kind == FIELD_NUMBER ? jbvNumeric : jbvBool;
					const char *what = r->kind == FIELD_STRING ? "a string" : r->kind == FIELD_NUMBER ? "a number" : "true or false";

					if (v.type != want)
						return refuse(p, hint, psprintf("%s must be %s", field, what),
									  psprintf("%.*s takes %s, not %s.", k.val.string.len, k.val.string.val,
											   what, json_kind(&v)));
					break;
				}
			case FIELD_WORD:
				if (v.type != jbvString || !novu_word_in(v.val.string.val, v.val.string.len, r->words))
					return refuse(p, hint, psprintf("%s must be one of %s", field, words_text(r->words)),
								  psprintf("%.*s takes one of the strings %s, not %s.", k.val.string.len,
										   k.val.string.val, words_text(r->words),
										   v.type == jbvString ? "another string" : json_kind(&v)));
				break;
			case FIELD_VALUE:
				{
					const char *problem = r->check(&v);

					if (problem != NULL)
						return refuse(p, hint, psprintf("%s%s", field, problem),
									  psprintf("%.*s takes %s.", k.val.string.len, k.val.string.val, r->why));
					break;
				}
		}
	}
	return true;
}

/* Check one provider's overrides (a JSON value, path names it). */
static bool
check_provider(const ProviderOps *ops, JsonbValue *v, const char *path, OverrideProblem *p)
{
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		return refuse(p, ops->overrides_hint, psprintf("%s must be a JSON object", path),
					  pstrdup("A provider's overrides are an object of fields merged into its message."));
	return check_fields(ops->overrides, v->val.binary.data, path, ops->overrides_hint, p);
}

/*
 * Check every provider's overrides in an overrides object: <field>.<provider>,
 * <field>.providers.<provider> and, with steps, <field>.steps.<stepId>.(...).
 */
static bool
check_overrides_object(JsonbContainer *c, const char *field, bool steps, OverrideProblem *p)
{
	JsonbValue	v;
	JsonbValue	providers;
	int			i;
	bool		have_providers;

	have_providers = jsonb_container_get(c, "providers", &providers) && providers.type == jbvBinary &&
		JsonContainerIsObject(providers.val.binary.data);
	for (i = 0; i < novu_provider_count(); i++)
	{
		const ProviderOps *ops = novu_provider_at(i);

		if (ops->overrides == NULL)
			continue;
		if (have_providers && jsonb_container_get(providers.val.binary.data, ops->provider_id, &v) &&
			!check_provider(ops, &v, psprintf("%s.providers.%s", field, ops->provider_id), p))
			return false;
		if (jsonb_container_get(c, ops->provider_id, &v) &&
			!check_provider(ops, &v, psprintf("%s.%s", field, ops->provider_id), p))
			return false;
	}
	if (steps && jsonb_container_get(c, "steps", &v) && v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data))
	{
		JsonbIterator *it = JsonbIteratorInit(v.val.binary.data);
		JsonbIteratorToken tok;
		JsonbValue	k;
		JsonbValue	s;

		while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
		{
			if (tok != WJB_KEY)
				continue;
			(void) JsonbIteratorNext(&it, &s, true);
			if (s.type == jbvBinary && JsonContainerIsObject(s.val.binary.data) &&
				!check_overrides_object(s.val.binary.data,
										psprintf("%s.steps.%.*s", field, k.val.string.len, k.val.string.val),
										false, p))
				return false;
		}
	}
	return true;
}

/* Raise naming the field unless every provider's overrides keep to its allowlist. */
void
novu_check_overrides(Jsonb *overrides, const char *field)
{
	OverrideProblem p;

	if (overrides == NULL || JB_ROOT_IS_SCALAR(overrides) || !JB_ROOT_IS_OBJECT(overrides) ||
		JB_ROOT_COUNT(overrides) == 0)
		return;
	if (!check_overrides_object(&overrides->root, field, true, &p))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s", p.message),
				 errdetail("%s", p.detail),
				 errhint("%s", p.hint)));
}

/* One provider's merged overrides at build time: false with *reason. */
bool
novu_provider_overrides_valid(const char *provider_id, Jsonb *overrides, char **reason)
{
	return novu_overrides_valid(novu_provider_lookup(provider_id), overrides, reason);
}

/* A provider's merged overrides at build time (ops known): false with *reason. */
bool
novu_overrides_valid(const ProviderOps *ops, Jsonb *overrides, char **reason)
{
	OverrideProblem p;
	JsonbValue	v;
	const char *provider_id;

	if (overrides == NULL || ops == NULL || ops->overrides == NULL)
		return true;
	provider_id = ops->provider_id;
	v.type = jbvBinary;
	v.val.binary.data = &overrides->root;
	v.val.binary.len = VARSIZE(overrides) - VARHDRSZ;
	if (JB_ROOT_IS_SCALAR(overrides) ||
		!check_provider(ops, &v, psprintf("overrides.%s", provider_id), &p))
	{
		*reason = JB_ROOT_IS_SCALAR(overrides)
			? psprintf("overrides.%s must be a JSON object", provider_id)
			: psprintf("%s: %s", p.message, p.detail);
		return false;
	}
	return true;
}

/*
 * novu._check_overrides(overrides jsonb, field text)
 *		Raise naming the field unless the overrides keep to the providers'
 *		allowlists (workflow steps; triggers check theirs in C).
 */
Datum
novu_check_overrides_sql(PG_FUNCTION_ARGS)
{
	Jsonb	   *overrides = PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0);
	char	   *field = PG_ARGISNULL(1) ? pstrdup("overrides") : text_to_cstring(PG_GETARG_TEXT_PP(1));

	novu_check_overrides(overrides, field);
	PG_RETURN_VOID();
}

/*
 * The check every provider runs on a message before building it: the device
 * token has its provider's form and the overrides keep to its allowlist.  A
 * row stored by an older version that breaks them fails alone, not its batch.
 */
bool
novu_message_check(Integration *ig, Message *m, char **reason)
{
	const char *problem = NULL;

	/* ig->ops is the provider: no lookup per message */
	if (!token_valid(ig->ops, m->target, &problem))
	{
		*reason = psprintf("Invalid device token: the token %s (%s)", problem, novu_device_token_form(ig->provider_id));
		return false;
	}
	if (!novu_overrides_valid(ig->ops, m->overrides, reason))
	{
		*reason = psprintf("Override refused: %s", *reason);
		return false;
	}
	return true;
}
