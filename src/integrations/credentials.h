/*
 * credentials.h
 *		Validation and normalization of integration credentials, by the
 *		integration's provider.
 */
#ifndef NOVU_CREDENTIALS_H
#define NOVU_CREDENTIALS_H

#include "utils/jsonb.h"

#include "providers/provider.h"

/* The provider of an id; raises ERRCODE_INVALID_PARAMETER_VALUE listing the known ones. */
extern const ProviderOps *novu_provider_or_error(const char *provider_id);

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
 */

#endif							/* NOVU_CREDENTIALS_H */
