/*
 * secrets.h
 *		Integration secrets at rest: AES-256-GCM under the key of
 *		novu.secret_key_file (DESIGN.md section 5).  See secrets.c for the
 *		stored format and which credential fields are secrets.
 */
#ifndef NOVU_SECRETS_H
#define NOVU_SECRETS_H

#include "utils/jsonb.h"

#include "crypto/envelope.h"

/*
 * The delivery worker's view of an integration's credentials: every sealed
 * secret decrypted (clear legacy values are kept as they are).  Returns NULL
 * and sets *error (a reason naming the field and the key id, never a secret)
 * when a secret cannot be decrypted; never raises for a bad key or
 * ciphertext.  The result is palloc'd in CurrentMemoryContext, or is
 * credentials itself when nothing was sealed.
 */
extern Jsonb *secrets_open_credentials(int64 integration_id, const char *provider_id,
									   Jsonb *credentials, char **error);

/* A value that changes when the key settings or the key files change (the worker retries then). */
extern uint32 secrets_key_state(void);

/*
 * SQL-callable (prototypes come from PG_FUNCTION_INFO_V1 in secrets.c):
 *   novu._seal_secrets() RETURNS trigger (BEFORE INSERT OR UPDATE OF id, provider_id, credentials ON novu.integrations)
 *   novu._mask_secrets(provider_id text, credentials jsonb) RETURNS jsonb
 *   novu.reencrypt_secrets() RETURNS integer (superuser only)
 *   novu._secrets_upgrade() RETURNS void (the 0.3.0 -> 0.4.0 script only)
 */

#endif							/* NOVU_SECRETS_H */
