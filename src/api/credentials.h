/*
 * credentials.h
 *		Per-provider validation and normalization of integration credentials.
 */
#ifndef NOVU_CREDENTIALS_H
#define NOVU_CREDENTIALS_H

#include "utils/jsonb.h"

/* the provider ids this version delivers to (DESIGN.md 3a), NULL-terminated */
extern const char *const novu_push_providers[];

extern bool novu_provider_is_known(const char *provider_id);

/*
 * Validate credentials of a provider and return them normalized (defaults
 * filled, serviceAccount parsed, secure as boolean, URLs canonical).  Raises
 * ERRCODE_INVALID_PARAMETER_VALUE naming the bad field: for SQL calls only,
 * the delivery worker uses the non-raising crypto.h functions.
 */
extern Jsonb *novu_validate_credentials(const char *provider_id, Jsonb *credentials);

/*
 * SQL-callable (prototypes come from PG_FUNCTION_INFO_V1 in credentials.c):
 *   novu._validate_integration(provider_id text, credentials jsonb) RETURNS jsonb
 *		C symbol novu_validate_integration
 *   novu._jwt_selftest(alg text, pem text) RETURNS text
 *		C symbol novu_jwt_selftest (test helper: sign, then verify with the public half)
 */

#endif							/* NOVU_CREDENTIALS_H */
