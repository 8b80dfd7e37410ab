/*
 * provider_rules.h
 *		What a caller may give each push provider (DESIGN.md section 5): the
 *		device-token forms it accepts, and the override fields that shape a
 *		notification without changing its target or its authentication.
 *
 * The same tables serve the SQL functions (raise before anything is stored)
 * and the delivery worker (a message stored by an older version that breaks
 * them fails alone, with the reason).
 */
#ifndef NOVU_PROVIDER_RULES_H
#define NOVU_PROVIDER_RULES_H

#include "utils/jsonb.h"

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

/*
 * The canonical (lowercase) name of an APNs request header an override may
 * set, or NULL when it is not in the allowlist; name need not be terminated.
 */
extern const char *novu_apns_header_name(const char *name, int len);

/* Whether a header value is free of control characters (CR and LF included). */
extern bool novu_header_value_clean(const char *value, int len);

/*
 * SQL-callable (prototypes come from PG_FUNCTION_INFO_V1 in provider_rules.c):
 *   novu._check_device_token(provider_id text, token text, field text) RETURNS void
 *		C symbol novu_check_device_token
 *   novu._check_overrides(overrides jsonb, field text) RETURNS void
 *		C symbol novu_check_overrides_sql
 */

#endif							/* NOVU_PROVIDER_RULES_H */
