/*
 * envelope.h
 *		The envelope of a sealed secret (envelope.c):
 *		"novu:v1:<key id>:<base64url(nonce || ciphertext || tag)>".
 */
#ifndef NOVU_ENVELOPE_H
#define NOVU_ENVELOPE_H

#define SECRETS_PREFIX			"novu:v1:"
#define SECRETS_KEY_ID_LEN		16	/* hex characters */

/*
 * Parse an envelope: the key id into kid (SECRETS_KEY_ID_LEN + 1 bytes) and
 * the decoded nonce || ciphertext || tag into *blob (either may be NULL).
 * False if value is not one.
 */
extern bool secrets_envelope_parse(const char *value, char *kid, unsigned char **blob, size_t *bloblen);

/* True if the value is a sealed secret (the envelope's exact shape), not a clear one. */
extern bool secrets_is_sealed(const char *value);

#endif							/* NOVU_ENVELOPE_H */
