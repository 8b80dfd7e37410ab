/*
 * envelope.c
 *		The format of a sealed secret (see integrations/secrets.c for how it
 *		is made and opened): recognising and parsing one needs no key.
 */
#include "postgres.h"

#include "crypto/crypto.h"
#include "crypto/envelope.h"

/*
 * Parse an envelope: the key id into kid (17 bytes) and the decoded
 * nonce || ciphertext || tag into *blob.  False if value is not one.
 */
bool
secrets_envelope_parse(const char *value, char *kid, unsigned char **blob, size_t *bloblen)
{
	const char *p;
	const char *b64;
	int			i;
	unsigned char *bytes;
	size_t		len = 0;

	if (strncmp(value, SECRETS_PREFIX, strlen(SECRETS_PREFIX)) != 0)
		return false;
	p = value + strlen(SECRETS_PREFIX);
	for (i = 0; i < SECRETS_KEY_ID_LEN; i++)
		if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
			return false;
	if (p[SECRETS_KEY_ID_LEN] != ':')
		return false;
	b64 = p + SECRETS_KEY_ID_LEN + 1;
	if (strspn(b64, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != strlen(b64))
		return false;
	bytes = base64url_decode(b64, &len);
	if (bytes == NULL || len < CRYPTO_GCM_NONCE_LEN + CRYPTO_GCM_TAG_LEN)
		return false;
	if (kid != NULL)
	{
		memcpy(kid, p, SECRETS_KEY_ID_LEN);
		kid[SECRETS_KEY_ID_LEN] = '\0';
	}
	if (blob != NULL)
	{
		*blob = bytes;
		*bloblen = len;
	}
	else
		pfree(bytes);
	return true;
}

/* True if the value is a sealed secret (the envelope's exact shape), not a clear one. */
bool
secrets_is_sealed(const char *value)
{
	return value != NULL && secrets_envelope_parse(value, NULL, NULL, NULL);
}
