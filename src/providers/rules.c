/*
 * provider_rules.c
 *		Device-token forms and override allowlists per push provider
 *		(DESIGN.md section 5), and the SQL functions that enforce them.
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

PG_FUNCTION_INFO_V1(novu_check_device_token);
PG_FUNCTION_INFO_V1(novu_check_overrides_sql);

#define TOKEN_MAX_LEN			4096	/* any provider (README: a device token at most 4096 characters) */
#define APNS_TOKEN_MIN_HEX		64		/* 32 bytes: a physical device's token */
#define APNS_TOKEN_MAX_HEX		200		/* simulators' tokens are longer; Apple fixes no length */
#define FCM_TOKEN_MAX_LEN		4096
#define EXPO_TOKEN_INNER_MAX	256
#define WEBPUSH_KEY_MAX_LEN		256
#define HEADER_VALUE_MAX_LEN	256
#define APNS_COLLAPSE_ID_MAX	64		/* bytes (PROTOCOLS.md 2.2) */
#define WEBPUSH_TOPIC_MAX		32		/* characters (RFC 8030 5.4) */

/* ---------------------------------------------------------------------------
 * Device tokens
 * ------------------------------------------------------------------------- */

/* Checks one token of len bytes; false with *problem ("contains ..."). */
typedef bool (*TokenCheck) (const char *token, size_t len, const char **problem);

typedef struct TokenRule
{
	const char *provider_id;
	const char *label;			/* as errors name the provider */
	TokenCheck	check;
	const char *form;			/* the accepted form, for hints */
} TokenRule;

/* ASCII letter or digit (locale-independent). */
static inline bool
is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* ASCII hex digit. */
static inline bool
is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A base64url character (RFC 4648 section 5). */
static inline bool
is_b64url(char c)
{
	return is_alnum(c) || c == '-' || c == '_';
}

/* Whether s (len bytes) is a UUID in its 8-4-4-4-12 hex form. */
static bool
is_uuid(const char *s, size_t len)
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

/* APNs: the hex text of the token bytes; it becomes the URL path /3/device/<token>. */
static bool
apns_token_check(const char *t, size_t len, const char **problem)
{
	size_t		i;

	for (i = 0; i < len; i++)
	{
		if (!is_hex(t[i]))
		{
			*problem = "contains a character that is not a hex digit";
			return false;
		}
	}
	if (len < APNS_TOKEN_MIN_HEX || len > APNS_TOKEN_MAX_HEX)
	{
		*problem = "does not have " CppAsString2(APNS_TOKEN_MIN_HEX) " to " CppAsString2(APNS_TOKEN_MAX_HEX) " hex digits";
		return false;
	}
	if (len % 2 != 0)
	{
		*problem = "has an odd number of hex digits";
		return false;
	}
	return true;
}

/* FCM: a registration token (base64url characters and ':'). */
static bool
fcm_token_check(const char *t, size_t len, const char **problem)
{
	size_t		i;

	if (len == 0 || len > FCM_TOKEN_MAX_LEN)
	{
		*problem = "does not have 1 to " CppAsString2(FCM_TOKEN_MAX_LEN) " characters";
		return false;
	}
	for (i = 0; i < len; i++)
	{
		if (!is_b64url(t[i]) && t[i] != ':')
		{
			*problem = "contains a character other than letters, digits, '-', '_' and ':'";
			return false;
		}
	}
	return true;
}

/* Expo: ExponentPushToken[...] or ExpoPushToken[...] (or a bare UUID, as Expo's SDK accepts). */
static bool
expo_token_check(const char *t, size_t len, const char **problem)
{
	static const char *const prefixes[] = {"ExponentPushToken[", "ExpoPushToken["};
	int			p;

	if (is_uuid(t, len))
		return true;
	for (p = 0; p < lengthof(prefixes); p++)
	{
		size_t		plen = strlen(prefixes[p]);
		size_t		i;

		if (len <= plen || strncmp(t, prefixes[p], plen) != 0)
			continue;
		if (t[len - 1] != ']' || len - plen - 1 < 1 || len - plen - 1 > EXPO_TOKEN_INNER_MAX)
		{
			*problem = "does not have 1 to " CppAsString2(EXPO_TOKEN_INNER_MAX) " characters between its brackets";
			return false;
		}
		for (i = plen; i < len - 1; i++)
		{
			if (!is_b64url(t[i]))
			{
				*problem = "has a character other than letters, digits, '-' and '_' between its brackets";
				return false;
			}
		}
		return true;
	}
	*problem = "is not of the form ExponentPushToken[...] or ExpoPushToken[...]";
	return false;
}

/* Whether a string value of a jsonb object is base64url text (padding allowed) of bounded length. */
static bool
b64url_member(JsonbContainer *c, const char *key)
{
	JsonbValue	v;
	int			i;
	int			len;

	if (!jsonb_container_get(c, key, &v) || v.type != jbvString)
		return false;
	len = v.val.string.len;
	while (len > 0 && v.val.string.val[len - 1] == '=')
		len--;
	if (len == 0 || len > WEBPUSH_KEY_MAX_LEN)
		return false;
	for (i = 0; i < len; i++)
	{
		if (!is_b64url(v.val.string.val[i]))
			return false;
	}
	return true;
}

/* Web Push: the browser's PushSubscription JSON (shape only). */
static bool
webpush_token_check(const char *t, size_t len, const char **problem)
{
	Jsonb	   *sub = jsonb_parse_or_null(t, (int) len);
	JsonbValue	v;
	size_t		i;

	if (sub == NULL || JB_ROOT_IS_SCALAR(sub) || !JB_ROOT_IS_OBJECT(sub))
	{
		*problem = "is not a JSON object";
		return false;
	}
	if (!jsonb_container_get(&sub->root, "endpoint", &v) || v.type != jbvString ||
		v.val.string.len <= 8 || strncmp(v.val.string.val, "https://", 8) != 0)
	{
		*problem = "has no https:// endpoint";
		return false;
	}
	for (i = 0; i < v.val.string.len; i++)
	{
		unsigned char c = (unsigned char) v.val.string.val[i];

		if (c <= 0x20 || c == 0x7f)
		{
			*problem = "has an endpoint with a space or a control character";
			return false;
		}
	}
	if (!jsonb_container_get(&sub->root, "keys", &v) || v.type != jbvBinary ||
		!JsonContainerIsObject(v.val.binary.data) ||
		!b64url_member(v.val.binary.data, "p256dh") || !b64url_member(v.val.binary.data, "auth"))
	{
		*problem = "lacks keys.p256dh and keys.auth as base64url strings";
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

static const TokenRule token_rules[] = {
	{"apns", "APNs", apns_token_check,
	"An APNs device token is the hex text of the token's bytes: an even number of 64 to 200 hex digits."},
	{"fcm", "FCM", fcm_token_check,
	"An FCM registration token has 1 to 4096 letters, digits, '-', '_' and ':'."},
	{"expo", "Expo", expo_token_check,
	"An Expo push token looks like ExponentPushToken[xxxxxxxxxxxxxxxxxxxxxx] or ExpoPushToken[...] (letters, digits, '-' and '_' between the brackets)."},
	{"web-push", "web-push", webpush_token_check,
	"A web-push token is the browser's PushSubscription JSON: {\"endpoint\": \"https://...\", \"keys\": {\"p256dh\": \"...\", \"auth\": \"...\"}}."},
};

static const TokenRule plain_token_rule = {NULL, "device", plain_token_check,
"A device token is text without control characters."};

/* The token rule of a provider (the plain rule when it has none of its own). */
static const TokenRule *
token_rule(const char *provider_id)
{
	int			i;

	for (i = 0; provider_id != NULL && i < lengthof(token_rules); i++)
	{
		if (strcmp(token_rules[i].provider_id, provider_id) == 0)
			return &token_rules[i];
	}
	return &plain_token_rule;
}

/* Whether a token has its provider's form; false with *problem. */
bool
novu_device_token_valid(const char *provider_id, const char *token, const char **problem)
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
	return token_rule(provider_id)->check(token, len, problem);
}

/* The accepted token form of a provider, in words. */
const char *
novu_device_token_form(const char *provider_id)
{
	return token_rule(provider_id)->form;
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
	const TokenRule *rule = token_rule(provider_id);
	const char *problem = NULL;

	if (!novu_device_token_valid(provider_id, token, &problem))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is not a valid %s device token", field, rule->label),
				 errdetail("The token %s.", problem),
				 errhint("%s", rule->form)));
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------------
 * Request headers an override may set
 * ------------------------------------------------------------------------- */

/* Whether a header value (len bytes) is acceptable for its header. */
typedef bool (*HeaderValueCheck) (const char *value, int len);

typedef struct HeaderRule
{
	const char *name;			/* lowercase */
	HeaderValueCheck check;
	const char *form;			/* what valid values are */
} HeaderRule;

/* A non-negative integer of at most max_digits digits. */
static bool
digits_valid(const char *v, int len, int max_digits)
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
static bool
word_in(const char *v, int len, const char *const *words)
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

	return word_in(v, len, values);
}

/* apns-expiration: UNIX seconds, or 0. */
static bool
apns_expiration_valid(const char *v, int len)
{
	return digits_valid(v, len, 10);
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

	return word_in(v, len, values);
}

/* Web Push TTL: seconds. */
static bool
webpush_ttl_valid(const char *v, int len)
{
	return digits_valid(v, len, 10);
}

/* Web Push Urgency (RFC 8030 5.3). */
static bool
webpush_urgency_valid(const char *v, int len)
{
	static const char *const values[] = {"very-low", "low", "normal", "high", NULL};

	return word_in(v, len, values);
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
static const HeaderRule apns_header_rules[] = {
	{"apns-priority", apns_priority_valid, "10, 5 or 1"},
	{"apns-expiration", apns_expiration_valid, "a UNIX time in seconds, or 0"},
	{"apns-collapse-id", apns_collapse_id_valid, "1 to 64 bytes"},
	{"apns-push-type", apns_push_type_valid, "alert or background"},
	{NULL, NULL, NULL}
};

/* Web Push request headers an override may set (RFC 8030). */
static const HeaderRule webpush_header_rules[] = {
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
static const HeaderRule *
header_rule(const HeaderRule *rules, const char *name, int len)
{
	for (; rules->name; rules++)
	{
		if (name_matches(name, len, rules->name))
			return rules;
	}
	return NULL;
}

/* The canonical name of an APNs header an override may set, or NULL. */
const char *
novu_apns_header_name(const char *name, int len)
{
	const HeaderRule *r = header_rule(apns_header_rules, name, len);

	return r ? r->name : NULL;
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

typedef enum FieldKind
{
	FIELD_ANY,					/* any JSON value */
	FIELD_OBJECT,				/* a JSON object, its contents free */
	FIELD_NESTED,				/* a JSON object whose keys have rules of their own */
	FIELD_APNS_HEADERS,			/* APNs request headers */
	FIELD_WEBPUSH_HEADERS,		/* Web Push request headers */
	FIELD_REFUSED				/* targets or authenticates: never overridable */
} FieldKind;

/*
 * One field of an override object.  A list ends with an entry whose name is
 * NULL; its kind says what happens to fields not listed (FIELD_ANY: allowed,
 * FIELD_REFUSED: refused).  A name ending in '*' matches a prefix.
 */
typedef struct FieldRule
{
	const char *name;
	FieldKind	kind;
	const struct FieldRule *fields; /* FIELD_NESTED */
	const char *why;			/* FIELD_REFUSED: what the field is */
} FieldRule;

typedef struct OverrideRules
{
	const char *provider_id;
	const FieldRule *fields;
	const char *hint;
} OverrideRules;

/* table entries: an allowed field, a nested object, a refused field, the rule of unlisted fields */
#define ALLOW(name, kind)		{name, kind, NULL, NULL}
#define NESTED(name, fields)	{name, FIELD_NESTED, fields, NULL}
#define REFUSE(name, why)		{name, FIELD_REFUSED, NULL, why}
#define OTHERS(kind)			{NULL, kind, NULL, NULL}

#define WHY_TOKEN	"the device token is the message's target"

/* FCM: overrides.fcm merges into the HTTP v1 "message" (PROTOCOLS.md 1.5). */
static const FieldRule fcm_apns_fields[] = {
	ALLOW("headers", FIELD_APNS_HEADERS),
	ALLOW("payload", FIELD_OBJECT),
	ALLOW("fcm_options", FIELD_OBJECT),
	ALLOW("fcmOptions", FIELD_OBJECT),
	REFUSE("live_activity_token", "a Live Activity token is a target"),
	REFUSE("liveActivityToken", "a Live Activity token is a target"),
	OTHERS(FIELD_REFUSED)
};

static const FieldRule fcm_webpush_fields[] = {
	ALLOW("headers", FIELD_WEBPUSH_HEADERS),
	ALLOW("data", FIELD_OBJECT),
	ALLOW("notification", FIELD_OBJECT),
	ALLOW("fcm_options", FIELD_OBJECT),
	ALLOW("fcmOptions", FIELD_OBJECT),
	OTHERS(FIELD_REFUSED)
};

static const FieldRule fcm_fields[] = {
	REFUSE("token", WHY_TOKEN),
	REFUSE("topic", "a topic would send it to every subscriber of that topic"),
	REFUSE("condition", "a condition would send it to every device matching it"),
	REFUSE("fid", "a Firebase installation id is a target"),
	REFUSE("name", "the message name is set by FCM"),
	ALLOW("notification", FIELD_OBJECT),
	ALLOW("data", FIELD_OBJECT),
	ALLOW("android", FIELD_OBJECT),
	NESTED("apns", fcm_apns_fields),
	NESTED("webpush", fcm_webpush_fields),
	ALLOW("fcm_options", FIELD_OBJECT),
	ALLOW("fcmOptions", FIELD_OBJECT),
	OTHERS(FIELD_REFUSED)
};

/* APNs: "headers" become request headers, every other key merges into the JSON body. */
static const FieldRule apns_fields[] = {
	ALLOW("headers", FIELD_APNS_HEADERS),
	ALLOW("aps", FIELD_OBJECT),
	REFUSE("topic", "the apns-topic is the integration's applicationId (its bundle id)"),
	REFUSE("token", WHY_TOKEN),
	REFUSE("deviceToken", WHY_TOKEN),
	OTHERS(FIELD_ANY)
};

/* Expo: overrides.expo merges into each push message (PROTOCOLS.md 3.1). */
static const FieldRule expo_fields[] = {
	REFUSE("to", "the Expo push token is the message's target"),
	ALLOW("title", FIELD_ANY),
	ALLOW("body", FIELD_ANY),
	ALLOW("subtitle", FIELD_ANY),
	ALLOW("data", FIELD_OBJECT),
	ALLOW("sound", FIELD_ANY),
	ALLOW("badge", FIELD_ANY),
	ALLOW("ttl", FIELD_ANY),
	ALLOW("expiration", FIELD_ANY),
	ALLOW("priority", FIELD_ANY),
	ALLOW("channelId", FIELD_ANY),
	ALLOW("categoryId", FIELD_ANY),
	ALLOW("mutableContent", FIELD_ANY),
	ALLOW("interruptionLevel", FIELD_ANY),
	ALLOW("richContent", FIELD_OBJECT),
	ALLOW("icon", FIELD_ANY),
	ALLOW("collapseId", FIELD_ANY),
	ALLOW("tag", FIELD_ANY),
	ALLOW("_contentAvailable", FIELD_ANY),
	ALLOW("_displayInForeground", FIELD_ANY),
	OTHERS(FIELD_REFUSED)
};

/* Web Push: the notification is free-form; the subscription is the target. */
static const FieldRule webpush_fields[] = {
	ALLOW("headers", FIELD_WEBPUSH_HEADERS),
	REFUSE("endpoint", "the subscription's endpoint is the message's target"),
	REFUSE("keys", "the subscription's keys encrypt for its browser"),
	REFUSE("subscription", "the subscription is the message's target"),
	REFUSE("vapid*", "VAPID keys are the integration's credentials"),
	OTHERS(FIELD_ANY)
};

/* OneSignal: targeting fields are refused; content fields are free. */
static const FieldRule onesignal_fields[] = {
	REFUSE("app_id", "the app is the integration's applicationId"),
	REFUSE("include*", "targeting fields choose the recipients"),
	REFUSE("exclude*", "targeting fields choose the recipients"),
	REFUSE("filters", "targeting fields choose the recipients"),
	REFUSE("target_channel", "targeting fields choose the recipients"),
	OTHERS(FIELD_ANY)
};

/* Push webhook: the overrides travel in the body; the target and the URL do not change. */
static const FieldRule pushwebhook_fields[] = {
	REFUSE("target", WHY_TOKEN),
	REFUSE("webhookUrl", "the URL is the integration's webhookUrl"),
	OTHERS(FIELD_ANY)
};

static const OverrideRules override_rules[] = {
	{"fcm", fcm_fields,
		"FCM overrides may set notification, data, android, apns (headers, payload, fcm_options), "
	"webpush (headers, data, notification, fcm_options) and fcm_options."},
	{"apns", apns_fields,
		"APNs overrides may set aps, custom payload keys, and the headers apns-priority, "
	"apns-expiration, apns-collapse-id and apns-push-type (alert or background)."},
	{"expo", expo_fields,
		"Expo overrides may set title, body, subtitle, data, sound, badge, ttl, expiration, priority, "
	"channelId, categoryId, mutableContent, interruptionLevel, richContent, icon, collapseId, tag, "
	"_contentAvailable and _displayInForeground."},
	{"web-push", webpush_fields,
	"Web Push overrides may set notification fields and the headers TTL, Urgency and Topic."},
	{"one-signal", onesignal_fields,
	"OneSignal overrides may set content fields (headings, contents, data, ...), not targeting fields."},
	{"push-webhook", pushwebhook_fields,
	"Push webhook overrides may set any field but target and webhookUrl."},
};

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
	bool		seen[8] = {false};
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
		r = header_rule(rules, k.val.string.val, k.val.string.len);
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
			case FIELD_APNS_HEADERS:
				if (!check_headers(apns_header_rules, &v, field, hint, p))
					return false;
				break;
			case FIELD_WEBPUSH_HEADERS:
				if (!check_headers(webpush_header_rules, &v, field, hint, p))
					return false;
				break;
		}
	}
	return true;
}

/* Check one provider's overrides (a JSON value, path names it). */
static bool
check_provider(const OverrideRules *r, JsonbValue *v, const char *path, OverrideProblem *p)
{
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		return refuse(p, r->hint, psprintf("%s must be a JSON object", path),
					  pstrdup("A provider's overrides are an object of fields merged into its message."));
	return check_fields(r->fields, v->val.binary.data, path, r->hint, p);
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
	for (i = 0; i < lengthof(override_rules); i++)
	{
		const OverrideRules *r = &override_rules[i];

		if (have_providers && jsonb_container_get(providers.val.binary.data, r->provider_id, &v) &&
			!check_provider(r, &v, psprintf("%s.providers.%s", field, r->provider_id), p))
			return false;
		if (jsonb_container_get(c, r->provider_id, &v) &&
			!check_provider(r, &v, psprintf("%s.%s", field, r->provider_id), p))
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
	OverrideProblem p;
	JsonbValue	v;
	int			i;

	if (overrides == NULL)
		return true;
	for (i = 0; i < lengthof(override_rules); i++)
	{
		if (strcmp(override_rules[i].provider_id, provider_id) != 0)
			continue;
		v.type = jbvBinary;
		v.val.binary.data = &overrides->root;
		v.val.binary.len = VARSIZE(overrides) - VARHDRSZ;
		if (JB_ROOT_IS_SCALAR(overrides) ||
			!check_provider(&override_rules[i], &v, psprintf("overrides.%s", provider_id), &p))
		{
			*reason = JB_ROOT_IS_SCALAR(overrides)
				? psprintf("overrides.%s must be a JSON object", provider_id)
				: psprintf("%s: %s", p.message, p.detail);
			return false;
		}
		return true;
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

	if (!novu_device_token_valid(ig->provider_id, m->device_token, &problem))
	{
		*reason = psprintf("Invalid device token: the token %s (%s)", problem, novu_device_token_form(ig->provider_id));
		return false;
	}
	if (!novu_provider_overrides_valid(ig->provider_id, m->overrides, reason))
	{
		*reason = psprintf("Override refused: %s", *reason);
		return false;
	}
	return true;
}
