/*
 * rules.h
 *		What a caller may give a provider (DESIGN.md section 5): the target
 *		forms it accepts, and the override fields that shape a notification
 *		without changing its target or its authentication.
 *
 * Each provider declares its rules in its own file (ProviderOps.token_check,
 * .overrides); this is the vocabulary they use and the engine that applies
 * them.  The same rules serve the SQL functions (raise before anything is
 * stored) and the delivery worker (a message stored by an older version that
 * breaks them fails alone, with the reason).
 */
#ifndef NOVU_RULES_H
#define NOVU_RULES_H

#include "utils/jsonb.h"

#include "providers/provider.h"

#define NOVU_MAX_HEADER_RULES	8	/* headers one allowlist may name */

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

extern bool novu_is_uuid(const char *s, size_t len);

/*
 * A webhook URL as a target (chat providers): https, and allowed by the
 * outbound URL policy (no credentials in it, no private address unless
 * novu.allowed_private_networks says so).
 */
extern bool novu_webhook_url_check(const char *url, size_t len, const char **problem);
extern bool novu_digits_valid(const char *v, int len, int max_digits);
extern bool novu_word_in(const char *v, int len, const char *const *words);

/* A request header an override may set, with the rule of its values. */
typedef bool (*HeaderValueCheck) (const char *value, int len);

typedef struct HeaderRule
{
	const char *name;			/* lowercase */
	HeaderValueCheck check;
	const char *form;			/* what valid values are */
} HeaderRule;

/*
 * The protocols' overridable headers: APNs (PROTOCOLS.md 2.2) and Web Push
 * (RFC 8030).  Shared because FCM's message carries both an APNs and a Web
 * Push section.  Each list ends with name NULL.
 */
extern const HeaderRule novu_apns_headers[];
extern const HeaderRule novu_webpush_headers[];

/* The rule of a header name (any case) in a list, or NULL. */
extern const HeaderRule *novu_header_rule(const HeaderRule *rules, const char *name, int len);

/* Whether a header value is free of control characters (CR and LF included). */
extern bool novu_header_value_clean(const char *value, int len);

typedef enum FieldKind
{
	FIELD_ANY,					/* any JSON value */
	FIELD_OBJECT,				/* a JSON object, its contents free */
	FIELD_NESTED,				/* a JSON object whose keys have rules of their own */
	FIELD_HEADERS,				/* request headers, checked against a header list */
	FIELD_STRING,				/* a JSON string */
	FIELD_NUMBER,				/* a JSON number */
	FIELD_BOOLEAN,				/* true or false */
	FIELD_WORD,					/* a JSON string, one of a list of words */
	FIELD_VALUE,				/* a value its own check accepts */
	FIELD_REFUSED				/* targets or authenticates: never overridable */
} FieldKind;

/*
 * The check of a FIELD_VALUE field: NULL if v is acceptable, else what is
 * wrong, completing the field's path: " must be ..." about the value itself,
 * or ".key must be ..." about a key inside it.
 */
typedef const char *(*FieldValueCheck) (JsonbValue *v);

/*
 * One field of an override object.  A list ends with an entry whose name is
 * NULL; its kind says what happens to fields not listed (FIELD_ANY: allowed,
 * FIELD_REFUSED: refused).  A name ending in '*' matches a prefix.
 *
 * A provider that refuses a whole request for one wrong value (Expo) gives
 * its fields their types, so that a trigger with a wrong one is refused
 * before anything is stored rather than failing the messages of others sent
 * with its own (DESIGN.md 5).
 */
typedef struct FieldRule
{
	const char *name;
	FieldKind	kind;
	const struct FieldRule *fields; /* FIELD_NESTED */
	const HeaderRule *headers;	/* FIELD_HEADERS */
	const char *why;			/* FIELD_REFUSED: what the field is; FIELD_VALUE: the values it takes */
	const char *const *words;	/* FIELD_WORD: the values it takes, NULL-terminated */
	FieldValueCheck check;		/* FIELD_VALUE */
} FieldRule;

/*
 * list entries: an allowed field (any kind without a list of its own), a
 * nested object, headers, one of some words, a value with its own check, a
 * refused field, the rule of unlisted fields
 */
#define ALLOW(name, kind)		{name, kind, NULL, NULL, NULL, NULL, NULL}
#define NESTED(name, fields)	{name, FIELD_NESTED, fields, NULL, NULL, NULL, NULL}
#define HEADERS(name, rules)	{name, FIELD_HEADERS, NULL, rules, NULL, NULL, NULL}
#define WORDS(name, words)		{name, FIELD_WORD, NULL, NULL, NULL, words, NULL}
#define VALUE(name, check, form) {name, FIELD_VALUE, NULL, NULL, form, NULL, check}
#define REFUSE(name, why)		{name, FIELD_REFUSED, NULL, NULL, why, NULL, NULL}
#define OTHERS(kind)			{NULL, kind, NULL, NULL, NULL, NULL, NULL}

#define WHY_TOKEN	"the device token is the message's target"

/*
 * Whether a device token has the form its provider accepts; false with a
 * short *problem ("it contains a character that is not a hex digit").
 * Providers without a rule of their own take any token without control
 * characters.  A few character comparisons per token: no regex, no allocation.
 */
extern bool novu_device_token_valid(const char *provider_id, const char *token, const char **problem);

/* The token form a provider accepts, in words (for hints and reasons). */
extern const char *novu_device_token_form(const char *provider_id);

/*
 * Raise (ERRCODE_INVALID_PARAMETER_VALUE, naming the field) unless every
 * provider's overrides in a trigger's or a step's overrides object keep to
 * that provider's allowlist.  Looks at overrides.<provider>,
 * overrides.providers.<provider> and overrides.steps.<stepId>.(providers.)<provider>.
 */
extern void novu_check_overrides(Jsonb *overrides, const char *field);

/*
 * The same rules for one provider's merged overrides, at build time: false
 * with *reason ("overrides.fcm.token is not allowed: ...").  NULL passes.
 */
extern bool novu_provider_overrides_valid(const char *provider_id, Jsonb *overrides, char **reason);
extern bool novu_overrides_valid(const ProviderOps *ops, Jsonb *overrides, char **reason);

/* The check a provider runs on a message before building it (its check op). */
extern bool novu_message_check(Integration *ig, Message *m, char **reason);

/*
 * SQL-callable (prototypes come from PG_FUNCTION_INFO_V1 in rules.c):
 *   novu._check_device_token(provider_id text, token text, field text) RETURNS void
 *		C symbol novu_check_device_token
 *   novu._check_overrides(overrides jsonb, field text) RETURNS void
 *		C symbol novu_check_overrides_sql
 */

#endif							/* NOVU_RULES_H */
