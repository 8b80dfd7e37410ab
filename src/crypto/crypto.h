/*
 * crypto.h
 *		All cryptography of the novu extension, on OpenSSL 3 EVP APIs.
 *
 * Nothing here raises an ERROR for a bad key, signature or input: the
 * functions return NULL/false and, when errmsg is not NULL, set *errmsg to a
 * palloc'd message that includes the OpenSSL reason (the OpenSSL error queue
 * is cleared).  They run inside the delivery worker's loop, where one bad
 * credential must fail one message, not the worker.  (palloc itself may
 * still raise on out-of-memory, as everywhere in PostgreSQL.)
 *
 * Byte buffers and strings returned are palloc'd in CurrentMemoryContext;
 * EVP_PKEY and X509 objects are OpenSSL's: free them with EVP_PKEY_free()
 * and X509_free().
 */
#ifndef NOVU_CRYPTO_H
#define NOVU_CRYPTO_H

#include <openssl/evp.h>
#include <openssl/x509.h>

/* sizes fixed by the protocols (PROTOCOLS.md 0.4, 5.3) */
#define CRYPTO_P256_PUBLIC_LEN		65	/* uncompressed point 0x04||X||Y */
#define CRYPTO_P256_PRIVATE_LEN		32	/* scalar d */
#define CRYPTO_ES256_SIG_LEN		64	/* raw R||S */
#define CRYPTO_SHA256_LEN			32
#define CRYPTO_WEBPUSH_SALT_LEN		16
#define CRYPTO_WEBPUSH_AUTH_LEN		16
#define CRYPTO_WEBPUSH_RS			4096
#define CRYPTO_WEBPUSH_HEADER_LEN	(16 + 4 + 1 + CRYPTO_P256_PUBLIC_LEN)	/* 86 */
#define CRYPTO_WEBPUSH_MAX_PLAINTEXT	(CRYPTO_WEBPUSH_RS - CRYPTO_WEBPUSH_HEADER_LEN - 16 - 1)	/* 3993 */

/* base64url (RFC 4648 section 5) */
extern char *base64url_encode(const unsigned char *data, size_t len);	/* no padding */
extern unsigned char *base64url_decode(const char *text, size_t *outlen); /* accepts missing padding; NULL if invalid */

/* wipe a palloc'd string that held a secret (a key, a token, a JWT), then free it; NULL is fine */
extern void crypto_free_secret(char *secret);

/* keys and certificates from PEM text (literal \n escapes accepted; never prompts for a password) */
extern char *crypto_pem_unescape(const char *pem);	/* the two-character escapes \n, \r, \/ undone */
extern EVP_PKEY *crypto_load_private_key_pem(const char *pem, char **errmsg);
extern X509 *crypto_load_certificate_pem(const char *pem, char **errmsg);
extern bool crypto_key_is_rsa(EVP_PKEY *key);
extern bool crypto_key_is_p256(EVP_PKEY *key);	/* EC on prime256v1 */
extern char *crypto_key_description(EVP_PKEY *key);	/* e.g. "RSA 2048-bit", "EC secp384r1" */
extern bool crypto_certificate_matches_key(X509 *cert, EVP_PKEY *key, char **errmsg);
extern EVP_PKEY *crypto_public_key(EVP_PKEY *key, char **errmsg);	/* public half only */

/*
 * Compact JWS: base64url(header) "." base64url(claims) "." base64url(sig);
 * header/claims are JSON text given by the caller.
 */
extern char *jwt_sign_rs256(EVP_PKEY *key, const char *header_json, const char *claims_json, char **errmsg);
extern char *jwt_sign_es256(EVP_PKEY *key, const char *header_json, const char *claims_json, char **errmsg); /* signature = raw 64-byte R||S, NOT DER */
/* verify a compact JWS signed alg "RS256" (RSA key) or "ES256" (P-256 key, raw R||S); the key may be public only */
extern bool jwt_verify(EVP_PKEY *key, const char *alg, const char *token, size_t *siglen, char **errmsg);

/* ES256 signature conversions: DER ECDSA-Sig-Value <-> raw 64-byte R||S */
extern bool crypto_ecdsa_der_to_raw(const unsigned char *der, size_t derlen, unsigned char *raw64, char **errmsg);
extern unsigned char *crypto_ecdsa_raw_to_der(const unsigned char *raw64, size_t *derlen, char **errmsg);

/* HMAC-SHA-256 (webhook X-Novu-Signature): lowercase hex, or NULL on failure */
extern char *crypto_hmac_sha256_hex(const char *key, size_t keylen, const char *data, size_t datalen);
extern bool crypto_hmac_sha256(const unsigned char *key, size_t keylen,
							   const unsigned char *data, size_t datalen,
							   unsigned char out[CRYPTO_SHA256_LEN]);

/* cryptographically secure random bytes */
extern bool crypto_random_bytes(unsigned char *buf, size_t len, char **errmsg);

/*
 * P-256 keys from raw bytes (EVP_PKEY_fromdata).  With priv NULL a public-only
 * key is built; with both, they must form a pair.
 */
extern EVP_PKEY *crypto_p256_key_from_raw(const unsigned char *pub, size_t publen,
										  const unsigned char *priv, size_t privlen,
										  char **errmsg);
/*
 * VAPID: an EC P-256 EVP_PKEY from base64url raw keys (public = 65-byte
 * 0x04||X||Y, private = 32-byte scalar); checks that they form a pair.
 */
extern EVP_PKEY *crypto_vapid_key(const char *public_b64url, const char *private_b64url, char **errmsg);
/* the 65-byte uncompressed public point of a P-256 key (VAPID "k=") */
extern unsigned char *crypto_p256_public_raw(EVP_PKEY *key, size_t *len, char **errmsg);

/*
 * RFC 8291 Web Push message encryption (aes128gcm, one record, rs = 4096, no
 * padding).  ua_public is the subscription's p256dh (65 bytes), auth_secret
 * its auth (16 bytes).  Returns the whole request body (86-byte header ||
 * ciphertext || tag); plaintext at most CRYPTO_WEBPUSH_MAX_PLAINTEXT bytes.
 * crypto_webpush_encrypt uses a fresh ephemeral key and salt; the _with
 * variant takes them: the ephemeral private scalar (32 bytes; its public
 * point is computed) and the 16-byte salt (the RFC 8291 Appendix A vector).
 */
extern unsigned char *crypto_webpush_encrypt(const unsigned char *ua_public, size_t ua_public_len,
											 const unsigned char *auth_secret, size_t auth_secret_len,
											 const unsigned char *plaintext, size_t plaintext_len,
											 size_t *outlen, char **errmsg);
extern unsigned char *crypto_webpush_encrypt_with(const unsigned char *ua_public, size_t ua_public_len,
												  const unsigned char *auth_secret, size_t auth_secret_len,
												  const unsigned char *plaintext, size_t plaintext_len,
												  const unsigned char *as_private, const unsigned char *salt,
												  size_t *outlen, char **errmsg);

/*
 * AES-256-GCM with a 12-byte nonce and a 16-byte tag (secrets at rest,
 * secrets.c).  encrypt returns ciphertext || tag; decrypt takes that and
 * returns the plaintext (NUL-terminated), or NULL when the tag does not verify
 * (wrong key, wrong associated data, altered bytes).
 */
#define CRYPTO_AES256_KEY_LEN		32
#define CRYPTO_GCM_NONCE_LEN		12
#define CRYPTO_GCM_TAG_LEN			16
extern unsigned char *crypto_aes256gcm_encrypt(const unsigned char *key, const unsigned char *nonce,
											   const unsigned char *aad, size_t aad_len,
											   const unsigned char *plaintext, size_t plaintext_len,
											   size_t *outlen, char **errmsg);
extern unsigned char *crypto_aes256gcm_decrypt(const unsigned char *key, const unsigned char *nonce,
											   const unsigned char *aad, size_t aad_len,
											   const unsigned char *in, size_t inlen,
											   size_t *outlen, char **errmsg);

#endif							/* NOVU_CRYPTO_H */
