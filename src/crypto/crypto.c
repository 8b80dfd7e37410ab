/*
 * crypto.c
 *		All cryptography of the novu extension, on OpenSSL 3: the EVP APIs, and
 *		the EC_POINT API for Web Push's per-message P-256 key agreement.
 *
 * - base64url (RFC 4648 section 5, unpadded output)
 * - PEM private keys and X.509 certificates (never prompting for a password)
 * - compact JWS: RS256 (Google OAuth assertion), ES256 with the raw 64-byte
 *   R||S signature JWS requires (APNs provider token, VAPID), verification
 * - HMAC-SHA-256 (webhook signatures)
 * - P-256 keys from raw bytes (VAPID), RFC 8291 Web Push encryption
 *
 * Error convention: no function here raises an ERROR for bad input or a
 * failing OpenSSL call.  They return NULL/false and set *errmsg (when errmsg
 * is not NULL) to a palloc'd message that names what failed, followed by the
 * OpenSSL error string when OpenSSL gave one; the OpenSSL error queue is
 * cleared either way, so a stale error never leaks into the next message.
 */
#include "postgres.h"

/* refuse any OpenSSL API deprecated in 3.0 at compile time */
#ifndef OPENSSL_NO_DEPRECATED
#define OPENSSL_NO_DEPRECATED 1
#endif

#include <limits.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "lib/stringinfo.h"

#include "crypto/crypto.h"

static const char b64url_alphabet[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";


/* Set *errmsg to "what: <first OpenSSL error>" (or just "what") and clear the OpenSSL error queue. */
static void
crypto_fail(char **errmsg, const char *what)
{
	unsigned long code = ERR_get_error();

	if (errmsg != NULL)
	{
		if (code != 0)
		{
			char		buf[256];

			ERR_error_string_n(code, buf, sizeof(buf));
			*errmsg = psprintf("%s: %s", what, buf);
		}
		else
			*errmsg = pstrdup(what);
	}
	ERR_clear_error();
}

/* Set *errmsg to a message of our own (no OpenSSL reason) and clear the OpenSSL error queue. */
static void
crypto_fail_plain(char **errmsg, const char *what)
{
	if (errmsg != NULL)
		*errmsg = pstrdup(what);
	ERR_clear_error();
}

/* Encode bytes as base64url without padding; the result is a palloc'd string. */
char *
base64url_encode(const unsigned char *data, size_t len)
{
	char	   *out = palloc(((len + 2) / 3) * 4 + 1);
	char	   *p = out;
	size_t		i;

	for (i = 0; i + 2 < len; i += 3)
	{
		uint32		v = ((uint32) data[i] << 16) | ((uint32) data[i + 1] << 8) | data[i + 2];

		*p++ = b64url_alphabet[(v >> 18) & 0x3F];
		*p++ = b64url_alphabet[(v >> 12) & 0x3F];
		*p++ = b64url_alphabet[(v >> 6) & 0x3F];
		*p++ = b64url_alphabet[v & 0x3F];
	}
	if (len - i == 1)
	{
		uint32		v = (uint32) data[i] << 16;

		*p++ = b64url_alphabet[(v >> 18) & 0x3F];
		*p++ = b64url_alphabet[(v >> 12) & 0x3F];
	}
	else if (len - i == 2)
	{
		uint32		v = ((uint32) data[i] << 16) | ((uint32) data[i + 1] << 8);

		*p++ = b64url_alphabet[(v >> 18) & 0x3F];
		*p++ = b64url_alphabet[(v >> 12) & 0x3F];
		*p++ = b64url_alphabet[(v >> 6) & 0x3F];
	}
	*p = '\0';
	return out;
}

/* The value of one base64url character, or -1 if it is not in the alphabet. */
static int
b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/*
 * Decode base64url text (padding optional, at most two trailing '=' forming
 * a multiple of 4).  Returns a palloc'd buffer (NUL-terminated for
 * convenience, *outlen excludes it) or NULL if the text is not base64url.
 */
unsigned char *
base64url_decode(const char *text, size_t *outlen)
{
	size_t		len;
	size_t		pad = 0;
	size_t		i;
	size_t		o = 0;
	uint32		acc = 0;
	int			bits = 0;
	unsigned char *out;

	*outlen = 0;
	if (text == NULL)
		return NULL;
	len = strlen(text);
	while (len > 0 && text[len - 1] == '=' && pad < 2)
	{
		len--;
		pad++;
	}
	if (pad > 0 && (len + pad) % 4 != 0)
		return NULL;
	if (len % 4 == 1)
		return NULL;

	out = palloc(len / 4 * 3 + 3);
	for (i = 0; i < len; i++)
	{
		int			v = b64url_value((unsigned char) text[i]);

		if (v < 0)
		{
			pfree(out);
			return NULL;
		}
		acc = (acc << 6) | (uint32) v;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			out[o++] = (unsigned char) ((acc >> bits) & 0xFF);
		}
	}
	out[o] = '\0';
	*outlen = o;
	return out;
}

/*
 * A palloc'd copy of PEM text with JSON-style escapes undone: the literal
 * two-character sequences \n, \r and \/ (as left by copying a key out of a
 * JSON file or an environment variable) become newline, CR and '/'.  Real
 * PEM never contains a backslash, so this is safe on unescaped text too.
 */
static char *
pem_unescape_len(const char *pem, size_t *outlen)
{
	size_t		len = strlen(pem);
	char	   *out = palloc(len + 1);
	size_t		i;
	size_t		o = 0;

	for (i = 0; i < len; i++)
	{
		if (pem[i] == '\\' && i + 1 < len &&
			(pem[i + 1] == 'n' || pem[i + 1] == 'r' || pem[i + 1] == '/'))
		{
			out[o++] = pem[i + 1] == 'n' ? '\n' : pem[i + 1] == 'r' ? '\r' : '/';
			i++;
		}
		else
			out[o++] = pem[i];
	}
	out[o] = '\0';
	*outlen = o;
	return out;
}

/* Wipe a palloc'd secret string (explicit_bzero: not optimized away), then free it. */
void
crypto_free_secret(char *secret)
{
	if (secret == NULL)
		return;
	explicit_bzero(secret, strlen(secret));
	pfree(secret);
}

/* PEM text with the two-character escapes \n, \r, \/ undone (palloc'd), for storing or handing to libcurl. */
char *
crypto_pem_unescape(const char *pem)
{
	size_t		len;

	return pem_unescape_len(pem, &len);
}

/* PEM password callback that supplies no password, so OpenSSL never prompts. */
static int
crypto_no_password(char *buf, int size, int rwflag, void *userdata)
{
	return 0;
}

/* A read-only memory BIO over the unescaped PEM text, or NULL with *errmsg set. */
static BIO *
pem_bio(const char *pem, char **text, size_t *len, char **errmsg)
{
	BIO		   *bio;

	if (pem == NULL || pem[0] == '\0')
	{
		crypto_fail_plain(errmsg, "empty PEM text");
		return NULL;
	}
	*text = pem_unescape_len(pem, len);
	if (*len > INT_MAX)
	{
		crypto_fail_plain(errmsg, "PEM text is too long");
		return NULL;
	}
	ERR_clear_error();
	bio = BIO_new_mem_buf(*text, (int) *len);
	if (bio == NULL)
		crypto_fail(errmsg, "could not create a memory BIO");
	return bio;
}

/*
 * Load a private key (PKCS#8, PKCS#1 RSA or SEC1 EC) from PEM text, also in
 * the form with literal \n escapes.  Encrypted keys are refused, never prompted
 * for: the password callback supplies nothing.
 */
EVP_PKEY *
crypto_load_private_key_pem(const char *pem, char **errmsg)
{
	char	   *text = NULL;
	size_t		len = 0;
	BIO		   *bio;
	EVP_PKEY   *key;

	bio = pem_bio(pem, &text, &len, errmsg);
	if (bio == NULL)
		return NULL;
	key = PEM_read_bio_PrivateKey(bio, NULL, crypto_no_password, NULL);
	BIO_free(bio);
	if (key == NULL)
	{
		if (strstr(text, "ENCRYPTED") != NULL)
			crypto_fail(errmsg, "could not read the PEM private key: it is encrypted, and passphrases are not supported");
		else if (strstr(text, "-----BEGIN") == NULL)
			crypto_fail(errmsg, "could not read the PEM private key: no \"-----BEGIN ...-----\" line");
		else
			crypto_fail(errmsg, "could not read the PEM private key");
	}
	else
		ERR_clear_error();
	OPENSSL_cleanse(text, len);
	pfree(text);
	return key;
}

/* Load the first X.509 certificate from PEM text (literal \n escapes accepted). */
X509 *
crypto_load_certificate_pem(const char *pem, char **errmsg)
{
	char	   *text = NULL;
	size_t		len = 0;
	BIO		   *bio;
	X509	   *cert;

	bio = pem_bio(pem, &text, &len, errmsg);
	if (bio == NULL)
		return NULL;
	cert = PEM_read_bio_X509(bio, NULL, crypto_no_password, NULL);
	BIO_free(bio);
	if (cert == NULL)
	{
		if (strstr(text, "-----BEGIN") == NULL)
			crypto_fail(errmsg, "could not read the PEM certificate: no \"-----BEGIN CERTIFICATE-----\" line");
		else
			crypto_fail(errmsg, "could not read the PEM certificate");
	}
	else
		ERR_clear_error();
	pfree(text);
	return cert;
}

/* True if the key is an RSA key. */
bool
crypto_key_is_rsa(EVP_PKEY *key)
{
	return key != NULL && EVP_PKEY_is_a(key, "RSA");
}

/* True if the key is an EC key on prime256v1 (P-256). */
bool
crypto_key_is_p256(EVP_PKEY *key)
{
	char		name[80];
	size_t		len = 0;

	if (key == NULL || !EVP_PKEY_is_a(key, "EC"))
		return false;
	if (EVP_PKEY_get_group_name(key, name, sizeof(name), &len) != 1)
	{
		ERR_clear_error();
		return false;
	}
	return OBJ_txt2nid(name) == NID_X9_62_prime256v1 ||
		pg_strcasecmp(name, "P-256") == 0;
}

/* A palloc'd description of a key's type for messages, e.g. "RSA 2048-bit" or "EC secp384r1". */
char *
crypto_key_description(EVP_PKEY *key)
{
	const char *type;
	char		name[80];
	size_t		len = 0;

	if (key == NULL)
		return pstrdup("no key");
	type = EVP_PKEY_get0_type_name(key);
	if (type == NULL)
		type = "unknown";
	if (EVP_PKEY_is_a(key, "EC") &&
		EVP_PKEY_get_group_name(key, name, sizeof(name), &len) == 1)
		return psprintf("EC %s", name);
	ERR_clear_error();
	if (EVP_PKEY_get_bits(key) > 0)
		return psprintf("%s %d-bit", type, EVP_PKEY_get_bits(key));
	return pstrdup(type);
}

/* True if the private key is the certificate's key (X509_check_private_key). */
bool
crypto_certificate_matches_key(X509 *cert, EVP_PKEY *key, char **errmsg)
{
	if (cert == NULL || key == NULL)
	{
		crypto_fail_plain(errmsg, "no certificate or key");
		return false;
	}
	ERR_clear_error();
	if (X509_check_private_key(cert, key) != 1)
	{
		crypto_fail(errmsg, "the private key does not match the certificate");
		return false;
	}
	return true;
}

/* A new key holding only the public half of the given key. */
EVP_PKEY *
crypto_public_key(EVP_PKEY *key, char **errmsg)
{
	unsigned char *der = NULL;
	const unsigned char *p;
	int			len;
	EVP_PKEY   *pub;

	if (key == NULL)
	{
		crypto_fail_plain(errmsg, "no key");
		return NULL;
	}
	ERR_clear_error();
	len = i2d_PUBKEY(key, &der);
	if (len <= 0)
	{
		crypto_fail(errmsg, "could not encode the public key");
		return NULL;
	}
	p = der;
	pub = d2i_PUBKEY(NULL, &p, len);
	OPENSSL_free(der);
	if (pub == NULL)
		crypto_fail(errmsg, "could not decode the public key");
	return pub;
}

/* Sign data with SHA-256 and the key's default scheme; the signature is palloc'd. */
static unsigned char *
crypto_sign_sha256(EVP_PKEY *key, const unsigned char *data, size_t len,
				   size_t *siglen, char **errmsg)
{
	EVP_MD_CTX *ctx;
	unsigned char *sig = NULL;
	size_t		n = 0;

	ERR_clear_error();
	ctx = EVP_MD_CTX_new();
	if (ctx == NULL)
	{
		crypto_fail(errmsg, "could not create a digest context");
		return NULL;
	}
	if (EVP_DigestSignInit_ex(ctx, NULL, "SHA256", NULL, NULL, key, NULL) != 1 ||
		EVP_DigestSign(ctx, NULL, &n, data, len) != 1)
	{
		crypto_fail(errmsg, "could not initialize signing");
		EVP_MD_CTX_free(ctx);
		return NULL;
	}
	sig = palloc(n);
	if (EVP_DigestSign(ctx, sig, &n, data, len) != 1)
	{
		crypto_fail(errmsg, "could not sign");
		EVP_MD_CTX_free(ctx);
		pfree(sig);
		return NULL;
	}
	EVP_MD_CTX_free(ctx);
	*siglen = n;
	return sig;
}

/* The JWS signing input: base64url(header) "." base64url(claims), palloc'd. */
static char *
jwt_signing_input(const char *header_json, const char *claims_json)
{
	char	   *h = base64url_encode((const unsigned char *) header_json, strlen(header_json));
	char	   *c = base64url_encode((const unsigned char *) claims_json, strlen(claims_json));
	char	   *result = psprintf("%s.%s", h, c);

	pfree(h);
	pfree(c);
	return result;
}

/* Append "." base64url(sig) to the signing input and free both inputs. */
static char *
jwt_finish(char *input, unsigned char *sig, size_t siglen)
{
	char	   *s = base64url_encode(sig, siglen);
	char	   *token = psprintf("%s.%s", input, s);

	pfree(s);
	pfree(input);
	pfree(sig);
	return token;
}

/* A compact JWS signed RS256 (RSASSA-PKCS1-v1_5 with SHA-256) with an RSA private key. */
char *
jwt_sign_rs256(EVP_PKEY *key, const char *header_json, const char *claims_json, char **errmsg)
{
	char	   *input;
	unsigned char *sig;
	size_t		siglen = 0;

	if (!crypto_key_is_rsa(key))
	{
		if (errmsg != NULL)
			*errmsg = psprintf("RS256 needs an RSA private key, not %s", crypto_key_description(key));
		ERR_clear_error();
		return NULL;
	}
	if (header_json == NULL || claims_json == NULL)
	{
		crypto_fail_plain(errmsg, "no JWT header or claims");
		return NULL;
	}
	input = jwt_signing_input(header_json, claims_json);
	sig = crypto_sign_sha256(key, (const unsigned char *) input, strlen(input), &siglen, errmsg);
	if (sig == NULL)
	{
		pfree(input);
		return NULL;
	}
	return jwt_finish(input, sig, siglen);
}

/* Convert a DER ECDSA-Sig-Value of a P-256 signature into the raw 64-byte R||S form. */
bool
crypto_ecdsa_der_to_raw(const unsigned char *der, size_t derlen, unsigned char *raw64, char **errmsg)
{
	const unsigned char *p = der;
	ECDSA_SIG  *sig;
	const BIGNUM *r = NULL;
	const BIGNUM *s = NULL;
	bool		ok;

	ERR_clear_error();
	if (derlen > LONG_MAX)
	{
		crypto_fail_plain(errmsg, "ECDSA signature is too long");
		return false;
	}
	sig = d2i_ECDSA_SIG(NULL, &p, (long) derlen);
	if (sig == NULL)
	{
		crypto_fail(errmsg, "could not decode the DER ECDSA signature");
		return false;
	}
	if (p != der + derlen)
	{
		ECDSA_SIG_free(sig);
		crypto_fail_plain(errmsg, "trailing bytes after the DER ECDSA signature");
		return false;
	}
	ECDSA_SIG_get0(sig, &r, &s);
	ok = BN_num_bytes(r) <= 32 && BN_num_bytes(s) <= 32 &&
		BN_bn2binpad(r, raw64, 32) == 32 &&
		BN_bn2binpad(s, raw64 + 32, 32) == 32;
	ECDSA_SIG_free(sig);
	if (!ok)
	{
		crypto_fail(errmsg, "ECDSA signature values do not fit 32 bytes");
		return false;
	}
	return true;
}

/* Convert a raw 64-byte R||S P-256 signature into a DER ECDSA-Sig-Value (palloc'd). */
unsigned char *
crypto_ecdsa_raw_to_der(const unsigned char *raw64, size_t *derlen, char **errmsg)
{
	ECDSA_SIG  *sig;
	BIGNUM	   *r;
	BIGNUM	   *s;
	unsigned char *der;
	unsigned char *p;
	int			len;

	ERR_clear_error();
	sig = ECDSA_SIG_new();
	r = BN_bin2bn(raw64, 32, NULL);
	s = BN_bin2bn(raw64 + 32, 32, NULL);
	if (sig == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(sig, r, s) != 1)
	{
		crypto_fail(errmsg, "could not build the ECDSA signature");
		BN_free(r);
		BN_free(s);
		ECDSA_SIG_free(sig);
		return NULL;
	}
	/* sig owns r and s now */
	len = i2d_ECDSA_SIG(sig, NULL);
	if (len <= 0)
	{
		crypto_fail(errmsg, "could not encode the ECDSA signature");
		ECDSA_SIG_free(sig);
		return NULL;
	}
	der = palloc(len);
	p = der;
	if (i2d_ECDSA_SIG(sig, &p) != len)
	{
		crypto_fail(errmsg, "could not encode the ECDSA signature");
		ECDSA_SIG_free(sig);
		pfree(der);
		return NULL;
	}
	ECDSA_SIG_free(sig);
	*derlen = (size_t) len;
	return der;
}

/* A compact JWS signed ES256 with a P-256 private key; the signature is raw R||S (64 bytes), not DER. */
char *
jwt_sign_es256(EVP_PKEY *key, const char *header_json, const char *claims_json, char **errmsg)
{
	char	   *input;
	unsigned char *der;
	unsigned char *raw;
	size_t		derlen = 0;

	if (!crypto_key_is_p256(key))
	{
		if (errmsg != NULL)
			*errmsg = psprintf("ES256 needs an EC P-256 private key, not %s", crypto_key_description(key));
		ERR_clear_error();
		return NULL;
	}
	if (header_json == NULL || claims_json == NULL)
	{
		crypto_fail_plain(errmsg, "no JWT header or claims");
		return NULL;
	}
	input = jwt_signing_input(header_json, claims_json);
	der = crypto_sign_sha256(key, (const unsigned char *) input, strlen(input), &derlen, errmsg);
	if (der == NULL)
	{
		pfree(input);
		return NULL;
	}
	raw = palloc(CRYPTO_ES256_SIG_LEN);
	if (!crypto_ecdsa_der_to_raw(der, derlen, raw, errmsg))
	{
		pfree(der);
		pfree(raw);
		pfree(input);
		return NULL;
	}
	pfree(der);
	return jwt_finish(input, raw, CRYPTO_ES256_SIG_LEN);
}

/*
 * Verify the signature of a compact JWS with alg "RS256" (RSA key) or
 * "ES256" (P-256 key; the signature must be the raw 64-byte R||S).  The key
 * may be public only.  The header's own "alg" is the caller's to check.
 * On success *siglen (if not NULL) is the decoded signature's length.
 */
bool
jwt_verify(EVP_PKEY *key, const char *alg, const char *token, size_t *siglen, char **errmsg)
{
	const char *dot1;
	const char *dot2;
	bool		es256;
	unsigned char *sig;
	unsigned char *der = NULL;
	size_t		len = 0;
	size_t		derlen = 0;
	EVP_MD_CTX *ctx;
	int			rc;

	if (key == NULL || alg == NULL || token == NULL)
	{
		crypto_fail_plain(errmsg, "no key, algorithm or token");
		return false;
	}
	if (strcmp(alg, "RS256") == 0)
	{
		es256 = false;
		if (!crypto_key_is_rsa(key))
		{
			crypto_fail_plain(errmsg, "RS256 needs an RSA key");
			return false;
		}
	}
	else if (strcmp(alg, "ES256") == 0)
	{
		es256 = true;
		if (!crypto_key_is_p256(key))
		{
			crypto_fail_plain(errmsg, "ES256 needs an EC P-256 key");
			return false;
		}
	}
	else
	{
		crypto_fail_plain(errmsg, "unsupported JWS algorithm (RS256 and ES256 are)");
		return false;
	}

	dot1 = strchr(token, '.');
	dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	if (dot1 == NULL || dot2 == NULL || strchr(dot2 + 1, '.') != NULL)
	{
		crypto_fail_plain(errmsg, "not a compact JWS (three base64url parts separated by dots)");
		return false;
	}
	sig = base64url_decode(dot2 + 1, &len);
	if (sig == NULL || len == 0)
	{
		crypto_fail_plain(errmsg, "the JWS signature is not base64url");
		return false;
	}
	if (es256)
	{
		if (len != CRYPTO_ES256_SIG_LEN)
		{
			if (errmsg != NULL)
				*errmsg = psprintf("an ES256 signature has 64 bytes (raw R||S), not %zu", len);
			pfree(sig);
			return false;
		}
		der = crypto_ecdsa_raw_to_der(sig, &derlen, errmsg);
		if (der == NULL)
		{
			pfree(sig);
			return false;
		}
	}

	ERR_clear_error();
	ctx = EVP_MD_CTX_new();
	if (ctx == NULL ||
		EVP_DigestVerifyInit_ex(ctx, NULL, "SHA256", NULL, NULL, key, NULL) != 1)
	{
		crypto_fail(errmsg, "could not initialize verification");
		EVP_MD_CTX_free(ctx);
		pfree(sig);
		if (der)
			pfree(der);
		return false;
	}
	rc = EVP_DigestVerify(ctx, es256 ? der : sig, es256 ? derlen : len,
						  (const unsigned char *) token, dot2 - token);
	EVP_MD_CTX_free(ctx);
	pfree(sig);
	if (der)
		pfree(der);
	if (rc != 1)
	{
		crypto_fail(errmsg, "the JWS signature does not verify");
		return false;
	}
	ERR_clear_error();
	if (siglen != NULL)
		*siglen = len;
	return true;
}

/* HMAC-SHA-256 of data into out (32 bytes); false on failure. */
bool
crypto_hmac_sha256(const unsigned char *key, size_t keylen,
				   const unsigned char *data, size_t datalen,
				   unsigned char out[CRYPTO_SHA256_LEN])
{
	static EVP_MAC_CTX *hmac_sha256 = NULL;
	EVP_MAC_CTX *ctx;
	size_t		outlen = 0;
	bool		ok;

	ERR_clear_error();

	/*
	 * A context with SHA-256 set is made once per process and copied per
	 * call: setting the digest fetches it, a visible share of Web Push's cost
	 * (five HMACs per message).
	 */
	if (hmac_sha256 == NULL)
	{
		EVP_MAC   *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
		OSSL_PARAM	params[2];

		params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *) "SHA256", 0);
		params[1] = OSSL_PARAM_construct_end();
		ctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
		EVP_MAC_free(hmac);		/* the context holds its own reference */
		if (ctx != NULL && EVP_MAC_CTX_set_params(ctx, params) != 1)
		{
			EVP_MAC_CTX_free(ctx);
			ctx = NULL;
		}
		if (ctx == NULL)
		{
			ERR_clear_error();
			return false;
		}
		hmac_sha256 = ctx;
	}
	ctx = EVP_MAC_CTX_dup(hmac_sha256);
	/* a NULL key would mean "keep the previous key" to EVP_MAC_init */
	ok = ctx != NULL &&
		EVP_MAC_init(ctx, key ? key : (const unsigned char *) "", keylen, NULL) == 1 &&
		EVP_MAC_update(ctx, data ? data : (const unsigned char *) "", datalen) == 1 &&
		EVP_MAC_final(ctx, out, &outlen, CRYPTO_SHA256_LEN) == 1 &&
		outlen == CRYPTO_SHA256_LEN;
	EVP_MAC_CTX_free(ctx);
	if (!ok)
		ERR_clear_error();
	return ok;
}

/* HMAC-SHA-256 as lowercase hex (64 characters, palloc'd), or NULL on failure. */
char *
crypto_hmac_sha256_hex(const char *key, size_t keylen, const char *data, size_t datalen)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char mac[CRYPTO_SHA256_LEN];
	char	   *out;
	int			i;

	if (!crypto_hmac_sha256((const unsigned char *) key, keylen,
							(const unsigned char *) data, datalen, mac))
		return NULL;
	out = palloc(CRYPTO_SHA256_LEN * 2 + 1);
	for (i = 0; i < CRYPTO_SHA256_LEN; i++)
	{
		out[2 * i] = hex[mac[i] >> 4];
		out[2 * i + 1] = hex[mac[i] & 0x0F];
	}
	out[CRYPTO_SHA256_LEN * 2] = '\0';
	return out;
}

/* Fill buf with cryptographically secure random bytes. */
bool
crypto_random_bytes(unsigned char *buf, size_t len, char **errmsg)
{
	ERR_clear_error();
	if (len > INT_MAX || RAND_bytes(buf, (int) len) != 1)
	{
		crypto_fail(errmsg, "could not generate random bytes");
		return false;
	}
	return true;
}

/* the EC key import context, made once per process */
static EVP_PKEY_CTX *import_ctx = NULL;

/*
 * A P-256 EVP_PKEY from raw bytes via EVP_PKEY_fromdata: pub is the 65-byte
 * uncompressed point; priv (optional) the 32-byte scalar.  The point must be
 * on the curve, the scalar in range, and the two a pair.
 */
EVP_PKEY *
crypto_p256_key_from_raw(const unsigned char *pub, size_t publen,
						 const unsigned char *priv, size_t privlen,
						 char **errmsg)
{
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	BIGNUM	   *d = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY_CTX *check = NULL;
	EVP_PKEY   *key = NULL;

	if (pub == NULL || publen != CRYPTO_P256_PUBLIC_LEN || pub[0] != 0x04)
	{
		if (errmsg != NULL)
			*errmsg = psprintf("the public key must be a 65-byte uncompressed P-256 point (0x04||X||Y), not %zu bytes%s",
							   publen, (publen == CRYPTO_P256_PUBLIC_LEN) ? " starting with another byte" : "");
		ERR_clear_error();
		return NULL;
	}
	if (priv != NULL && privlen != CRYPTO_P256_PRIVATE_LEN)
	{
		if (errmsg != NULL)
			*errmsg = psprintf("the private key must be a 32-byte P-256 scalar, not %zu bytes", privlen);
		ERR_clear_error();
		return NULL;
	}

	ERR_clear_error();
	bld = OSSL_PARAM_BLD_new();
	if (bld == NULL ||
		!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, SN_X9_62_prime256v1, 0) ||
		!OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, publen))
	{
		crypto_fail(errmsg, "could not build the key parameters");
		goto done;
	}
	if (priv != NULL)
	{
		d = BN_secure_new();
		if (d == NULL || BN_bin2bn(priv, (int) privlen, d) == NULL ||
			!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, d))
		{
			crypto_fail(errmsg, "could not build the key parameters");
			goto done;
		}
	}
	params = OSSL_PARAM_BLD_to_param(bld);
	/* the import context is made once per process (a fetch per key cost a third of an import) */
	if (import_ctx == NULL)
		import_ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	ctx = import_ctx;
	if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1)
	{
		crypto_fail(errmsg, "could not prepare the EC key import");
		goto done;
	}
	if (EVP_PKEY_fromdata(ctx, &key, priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) != 1)
	{
		key = NULL;
		crypto_fail(errmsg, "the key is not a valid P-256 key");
		goto done;
	}

	check = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
	if (check == NULL)
	{
		crypto_fail(errmsg, "could not prepare the key check");
		EVP_PKEY_free(key);
		key = NULL;
		goto done;
	}
	/*
	 * On the curve is enough: P-256's cofactor is 1, so every point on it
	 * (infinity has no uncompressed encoding) is in the prime-order group;
	 * the full check multiplies by the order once more per key.
	 */
	if (EVP_PKEY_public_check_quick(check) != 1)
	{
		crypto_fail(errmsg, "the public key is not a valid P-256 point");
		EVP_PKEY_free(key);
		key = NULL;
		goto done;
	}
	if (priv != NULL && EVP_PKEY_private_check(check) != 1)
	{
		crypto_fail(errmsg, "the private key is not a valid P-256 scalar");
		EVP_PKEY_free(key);
		key = NULL;
		goto done;
	}
	if (priv != NULL && EVP_PKEY_pairwise_check(check) != 1)
	{
		crypto_fail(errmsg, "the public and private keys do not form a P-256 key pair");
		EVP_PKEY_free(key);
		key = NULL;
		goto done;
	}
	ERR_clear_error();

done:
	EVP_PKEY_CTX_free(check);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_clear_free(d);
	return key;
}

/* The VAPID signing key from its base64url raw public (65 bytes) and private (32 bytes) keys, checked as a pair. */
EVP_PKEY *
crypto_vapid_key(const char *public_b64url, const char *private_b64url, char **errmsg)
{
	unsigned char *pub;
	unsigned char *priv;
	size_t		publen = 0;
	size_t		privlen = 0;
	EVP_PKEY   *key;

	pub = base64url_decode(public_b64url, &publen);
	if (pub == NULL)
	{
		crypto_fail_plain(errmsg, "the VAPID public key is not base64url");
		return NULL;
	}
	priv = base64url_decode(private_b64url, &privlen);
	if (priv == NULL)
	{
		pfree(pub);
		crypto_fail_plain(errmsg, "the VAPID private key is not base64url");
		return NULL;
	}
	key = crypto_p256_key_from_raw(pub, publen, priv, privlen, errmsg);
	OPENSSL_cleanse(priv, privlen);
	pfree(priv);
	pfree(pub);
	return key;
}

/* The 65-byte uncompressed public point (0x04||X||Y) of a P-256 key, palloc'd. */
unsigned char *
crypto_p256_public_raw(EVP_PKEY *key, size_t *len, char **errmsg)
{
	unsigned char buf[CRYPTO_P256_PUBLIC_LEN + 8];
	unsigned char *out;
	size_t		n = 0;

	if (!crypto_key_is_p256(key))
	{
		crypto_fail_plain(errmsg, "not an EC P-256 key");
		return NULL;
	}
	ERR_clear_error();
	if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY,
										buf, sizeof(buf), &n) != 1)
	{
		crypto_fail(errmsg, "could not export the public key");
		return NULL;
	}
	if (n != CRYPTO_P256_PUBLIC_LEN || buf[0] != 0x04)
	{
		crypto_fail_plain(errmsg, "the public key is not an uncompressed P-256 point");
		return NULL;
	}
	out = palloc(CRYPTO_P256_PUBLIC_LEN);
	memcpy(out, buf, CRYPTO_P256_PUBLIC_LEN);
	*len = CRYPTO_P256_PUBLIC_LEN;
	return out;
}

/*
 * P-256 for Web Push's per-message key agreement, on the EC_POINT API: the
 * group is made once per process, and a subscription's public key is decoded
 * straight into a point.  Importing it as an EVP_PKEY (EVP_PKEY_fromdata and
 * a key check) built the curve again for every message: 52 us of the 197 us
 * a message's cryptography took; decoding the point and checking it is on
 * the curve takes 2 us.  The scalar multiplications are OpenSSL's own
 * (constant-time for the secret scalar), as in its ECDH.
 */
static EC_GROUP *p256_group = NULL;
static BN_CTX *p256_bnctx = NULL;

/* The P-256 group and a BN_CTX, made once per process; false if OpenSSL could not. */
static bool
p256_ready(char **errmsg)
{
	if (p256_group == NULL)
		p256_group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
	if (p256_bnctx == NULL)
		p256_bnctx = BN_CTX_secure_new();
	if (p256_group == NULL || p256_bnctx == NULL)
	{
		crypto_fail(errmsg, "could not set up the P-256 group");
		return false;
	}
	return true;
}

/* A fresh random P-256 private scalar (1 <= d < n) as 32 big-endian bytes. */
static bool
p256_random_scalar(unsigned char out[CRYPTO_P256_PRIVATE_LEN], char **errmsg)
{
	BIGNUM	   *d;
	bool		ok;

	if (!p256_ready(errmsg))
		return false;
	d = BN_secure_new();
	/* [0, n) then reject 0 (probability 2^-256) */
	ok = d != NULL &&
		BN_priv_rand_range(d, EC_GROUP_get0_order(p256_group)) == 1 &&
		!BN_is_zero(d) &&
		BN_bn2binpad(d, out, CRYPTO_P256_PRIVATE_LEN) == CRYPTO_P256_PRIVATE_LEN;
	BN_clear_free(d);
	if (!ok)
		crypto_fail(errmsg, "could not generate the ephemeral P-256 key");
	return ok;
}

/*
 * ECDH on P-256 (SEC 1 3.3.1): from our private scalar (32 bytes) and the
 * peer's uncompressed public point (65 bytes), our own public point
 * (as_public, 65 bytes) and the shared secret, the X coordinate of d * Q (32
 * bytes).  The peer's point must be on the curve (P-256's cofactor is 1: then
 * it is in the prime-order group).
 */
static bool
p256_ecdh(const unsigned char *priv, const unsigned char *peer_raw,
		  unsigned char as_public[CRYPTO_P256_PUBLIC_LEN], unsigned char secret[32], char **errmsg)
{
	BIGNUM	   *d = NULL;
	BIGNUM	   *x = NULL;
	EC_POINT   *ours = NULL;
	EC_POINT   *peer = NULL;
	EC_POINT   *shared = NULL;
	const char *failed = NULL;

	if (!p256_ready(errmsg))
		return false;
	ERR_clear_error();
	BN_CTX_start(p256_bnctx);
	d = BN_secure_new();
	x = BN_CTX_get(p256_bnctx);
	ours = EC_POINT_new(p256_group);
	peer = EC_POINT_new(p256_group);
	shared = EC_POINT_new(p256_group);
	if (d == NULL || x == NULL || ours == NULL || peer == NULL || shared == NULL)
		failed = "out of memory";
	else if (BN_bin2bn(priv, CRYPTO_P256_PRIVATE_LEN, d) == NULL || BN_is_zero(d) ||
			 BN_cmp(d, EC_GROUP_get0_order(p256_group)) >= 0)
		failed = "the ephemeral private key is not a valid P-256 scalar";
	else if (EC_POINT_oct2point(p256_group, peer, peer_raw, CRYPTO_P256_PUBLIC_LEN, p256_bnctx) != 1 ||
			 EC_POINT_is_on_curve(p256_group, peer, p256_bnctx) != 1)
		failed = "the subscription's p256dh key is not a valid P-256 point";
	else
	{
		BN_set_flags(d, BN_FLG_CONSTTIME);
		if (EC_POINT_mul(p256_group, ours, d, NULL, NULL, p256_bnctx) != 1 ||
			EC_POINT_point2oct(p256_group, ours, POINT_CONVERSION_UNCOMPRESSED, as_public,
							   CRYPTO_P256_PUBLIC_LEN, p256_bnctx) != CRYPTO_P256_PUBLIC_LEN ||
			EC_POINT_mul(p256_group, shared, NULL, peer, d, p256_bnctx) != 1 ||
			EC_POINT_get_affine_coordinates(p256_group, shared, x, NULL, p256_bnctx) != 1 ||
			BN_bn2binpad(x, secret, 32) != 32)
			failed = "ECDH key agreement failed";
	}
	EC_POINT_clear_free(shared);
	EC_POINT_free(peer);
	EC_POINT_free(ours);
	BN_clear(x);
	BN_CTX_end(p256_bnctx);
	BN_clear_free(d);
	if (failed != NULL)
	{
		crypto_fail(errmsg, failed);
		return false;
	}
	return true;
}

/* HMAC-SHA-256(key, a || b || 0x01): one HKDF-Expand block whose info is a || b. */
static bool
hkdf_expand1(const unsigned char *prk, const unsigned char *a, size_t alen,
			 const unsigned char *b, size_t blen, unsigned char out[CRYPTO_SHA256_LEN])
{
	unsigned char buf[256];
	bool		ok;

	Assert(alen + blen + 1 <= sizeof(buf));
	memcpy(buf, a, alen);
	if (blen > 0)
		memcpy(buf + alen, b, blen);
	buf[alen + blen] = 0x01;
	ok = crypto_hmac_sha256(prk, CRYPTO_SHA256_LEN, buf, alen + blen + 1, out);
	OPENSSL_cleanse(buf, sizeof(buf));
	return ok;
}

/* AES-128-GCM, fetched once per process (Web Push encrypts every message) */
static EVP_CIPHER *aes128gcm = NULL;

/*
 * RFC 8291 encryption with a given ephemeral key pair (as_key) and salt:
 * returns the aes128gcm body salt||rs||idlen||as_public||ciphertext||tag.
 */
unsigned char *
crypto_webpush_encrypt_with(const unsigned char *ua_public, size_t ua_public_len,
							const unsigned char *auth_secret, size_t auth_secret_len,
							const unsigned char *plaintext, size_t plaintext_len,
							const unsigned char *as_private, const unsigned char *salt,
							size_t *outlen, char **errmsg)
{
	static const char webpush_info[] = "WebPush: info";	/* + NUL = 14 bytes */
	static const char cek_info[] = "Content-Encoding: aes128gcm";	/* + NUL = 28 */
	static const char nonce_info[] = "Content-Encoding: nonce";	/* + NUL = 24 */
	unsigned char as_public[CRYPTO_P256_PUBLIC_LEN];
	unsigned char ecdh_secret[32];
	unsigned char prk_key[CRYPTO_SHA256_LEN];
	unsigned char key_info[14 + 2 * CRYPTO_P256_PUBLIC_LEN];
	unsigned char ikm[CRYPTO_SHA256_LEN];
	unsigned char prk[CRYPTO_SHA256_LEN];
	unsigned char cek[CRYPTO_SHA256_LEN];
	unsigned char nonce[CRYPTO_SHA256_LEN];
	unsigned char *out = NULL;
	unsigned char *p;
	unsigned char delimiter = 0x02;
	EVP_CIPHER *cipher = NULL;
	EVP_CIPHER_CTX *cctx = NULL;
	OSSL_PARAM	tag_params[2];
	int			n = 0;
	size_t		total;

	if (ua_public == NULL || ua_public_len != CRYPTO_P256_PUBLIC_LEN || ua_public[0] != 0x04)
	{
		crypto_fail_plain(errmsg, "the subscription's p256dh key must be a 65-byte uncompressed P-256 point");
		return NULL;
	}
	if (auth_secret == NULL || auth_secret_len != CRYPTO_WEBPUSH_AUTH_LEN)
	{
		crypto_fail_plain(errmsg, "the subscription's auth secret must be 16 bytes");
		return NULL;
	}
	if (plaintext_len > CRYPTO_WEBPUSH_MAX_PLAINTEXT)
	{
		if (errmsg != NULL)
			*errmsg = psprintf("the Web Push payload has %zu bytes, more than the %d that fit one 4096-byte record",
							   plaintext_len, CRYPTO_WEBPUSH_MAX_PLAINTEXT);
		ERR_clear_error();
		return NULL;
	}
	if (as_private == NULL || salt == NULL)
	{
		crypto_fail_plain(errmsg, "no ephemeral key or salt");
		return NULL;
	}

	if (!p256_ecdh(as_private, ua_public, as_public, ecdh_secret, errmsg))
		goto fail;

	/* HKDF #1 (RFC 8291 section 3.4): IKM from the ECDH secret and the auth secret */
	memcpy(key_info, webpush_info, 14);
	memcpy(key_info + 14, ua_public, CRYPTO_P256_PUBLIC_LEN);
	memcpy(key_info + 14 + CRYPTO_P256_PUBLIC_LEN, as_public, CRYPTO_P256_PUBLIC_LEN);
	/* HKDF #2 (RFC 8188 section 2.2-2.3): CEK and NONCE from the salt */
	if (!crypto_hmac_sha256(auth_secret, auth_secret_len, ecdh_secret, sizeof(ecdh_secret), prk_key) ||
		!hkdf_expand1(prk_key, key_info, sizeof(key_info), NULL, 0, ikm) ||
		!crypto_hmac_sha256(salt, CRYPTO_WEBPUSH_SALT_LEN, ikm, sizeof(ikm), prk) ||
		!hkdf_expand1(prk, (const unsigned char *) cek_info, sizeof(cek_info), NULL, 0, cek) ||
		!hkdf_expand1(prk, (const unsigned char *) nonce_info, sizeof(nonce_info), NULL, 0, nonce))
	{
		crypto_fail_plain(errmsg, "HKDF (HMAC-SHA-256) failed");
		goto fail;
	}

	/* header: salt || rs (uint32 BE) || idlen || keyid (= as_public) */
	total = CRYPTO_WEBPUSH_HEADER_LEN + plaintext_len + 1 + 16;
	out = palloc(total);
	p = out;
	memcpy(p, salt, CRYPTO_WEBPUSH_SALT_LEN);
	p += CRYPTO_WEBPUSH_SALT_LEN;
	*p++ = (CRYPTO_WEBPUSH_RS >> 24) & 0xFF;
	*p++ = (CRYPTO_WEBPUSH_RS >> 16) & 0xFF;
	*p++ = (CRYPTO_WEBPUSH_RS >> 8) & 0xFF;
	*p++ = CRYPTO_WEBPUSH_RS & 0xFF;
	*p++ = CRYPTO_P256_PUBLIC_LEN;
	memcpy(p, as_public, CRYPTO_P256_PUBLIC_LEN);
	p += CRYPTO_P256_PUBLIC_LEN;

	/* one record: AES-128-GCM(CEK, NONCE) over plaintext || 0x02, tag appended, no AAD */
	ERR_clear_error();
	if (aes128gcm == NULL)
		aes128gcm = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);	/* once per process */
	cipher = aes128gcm;
	cctx = EVP_CIPHER_CTX_new();
	if (cipher == NULL || cctx == NULL ||
		EVP_EncryptInit_ex2(cctx, cipher, cek, nonce, NULL) != 1)
	{
		crypto_fail(errmsg, "could not initialize AES-128-GCM");
		goto fail;
	}
	if (plaintext_len > 0)
	{
		if (EVP_EncryptUpdate(cctx, p, &n, plaintext, (int) plaintext_len) != 1)
		{
			crypto_fail(errmsg, "AES-128-GCM encryption failed");
			goto fail;
		}
		p += n;
	}
	if (EVP_EncryptUpdate(cctx, p, &n, &delimiter, 1) != 1)
	{
		crypto_fail(errmsg, "AES-128-GCM encryption failed");
		goto fail;
	}
	p += n;
	if (EVP_EncryptFinal_ex(cctx, p, &n) != 1)
	{
		crypto_fail(errmsg, "AES-128-GCM encryption failed");
		goto fail;
	}
	p += n;
	tag_params[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, p, 16);
	tag_params[1] = OSSL_PARAM_construct_end();
	if (EVP_CIPHER_CTX_get_params(cctx, tag_params) != 1)
	{
		crypto_fail(errmsg, "could not get the AES-128-GCM tag");
		goto fail;
	}
	p += 16;
	Assert((size_t) (p - out) == total);

	EVP_CIPHER_CTX_free(cctx);
	OPENSSL_cleanse(ecdh_secret, sizeof(ecdh_secret));
	OPENSSL_cleanse(prk_key, sizeof(prk_key));
	OPENSSL_cleanse(ikm, sizeof(ikm));
	OPENSSL_cleanse(prk, sizeof(prk));
	OPENSSL_cleanse(cek, sizeof(cek));
	OPENSSL_cleanse(nonce, sizeof(nonce));
	ERR_clear_error();
	*outlen = total;
	return out;

fail:
	EVP_CIPHER_CTX_free(cctx);
	if (out)
		pfree(out);
	OPENSSL_cleanse(ecdh_secret, sizeof(ecdh_secret));
	OPENSSL_cleanse(prk_key, sizeof(prk_key));
	OPENSSL_cleanse(ikm, sizeof(ikm));
	OPENSSL_cleanse(prk, sizeof(prk));
	OPENSSL_cleanse(cek, sizeof(cek));
	OPENSSL_cleanse(nonce, sizeof(nonce));
	return NULL;
}

/* RFC 8291 encryption with a fresh ephemeral P-256 key pair and a random 16-byte salt. */
unsigned char *
crypto_webpush_encrypt(const unsigned char *ua_public, size_t ua_public_len,
					   const unsigned char *auth_secret, size_t auth_secret_len,
					   const unsigned char *plaintext, size_t plaintext_len,
					   size_t *outlen, char **errmsg)
{
	unsigned char salt[CRYPTO_WEBPUSH_SALT_LEN];
	unsigned char as_private[CRYPTO_P256_PRIVATE_LEN];
	unsigned char *out;

	if (!crypto_random_bytes(salt, sizeof(salt), errmsg) ||
		!p256_random_scalar(as_private, errmsg))
		return NULL;
	out = crypto_webpush_encrypt_with(ua_public, ua_public_len, auth_secret, auth_secret_len,
									  plaintext, plaintext_len, as_private, salt, outlen, errmsg);
	OPENSSL_cleanse(as_private, sizeof(as_private));
	return out;
}

/*
 * AES-256-GCM (secrets at rest): encrypt plaintext under a 32-byte key and a
 * 12-byte nonce, authenticating aad as well.  Returns ciphertext || 16-byte
 * tag (palloc'd, plaintext_len + 16 bytes), or NULL with *errmsg set.
 */
unsigned char *
crypto_aes256gcm_encrypt(const unsigned char *key, const unsigned char *nonce,
						 const unsigned char *aad, size_t aad_len,
						 const unsigned char *plaintext, size_t plaintext_len,
						 size_t *outlen, char **errmsg)
{
	EVP_CIPHER *cipher = NULL;
	EVP_CIPHER_CTX *cctx = NULL;
	OSSL_PARAM	params[2];
	unsigned char *out = NULL;
	int			n = 0;
	size_t		done = 0;

	if (plaintext_len > INT_MAX - 64 || aad_len > INT_MAX)
	{
		crypto_fail_plain(errmsg, "AES-256-GCM input is too long");
		return NULL;
	}
	ERR_clear_error();
	cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	cctx = EVP_CIPHER_CTX_new();
	/* the default GCM nonce length is 12 bytes (CRYPTO_GCM_NONCE_LEN) */
	if (cipher == NULL || cctx == NULL ||
		EVP_EncryptInit_ex2(cctx, cipher, key, nonce, NULL) != 1)
	{
		crypto_fail(errmsg, "could not initialize AES-256-GCM");
		goto fail;
	}
	out = palloc(plaintext_len + CRYPTO_GCM_TAG_LEN);
	if ((aad_len > 0 && EVP_EncryptUpdate(cctx, NULL, &n, aad, (int) aad_len) != 1) ||
		(plaintext_len > 0 && EVP_EncryptUpdate(cctx, out, &n, plaintext, (int) plaintext_len) != 1))
	{
		crypto_fail(errmsg, "AES-256-GCM encryption failed");
		goto fail;
	}
	done = plaintext_len > 0 ? (size_t) n : 0;
	if (EVP_EncryptFinal_ex(cctx, out + done, &n) != 1)
	{
		crypto_fail(errmsg, "AES-256-GCM encryption failed");
		goto fail;
	}
	done += (size_t) n;
	Assert(done == plaintext_len);
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, out + done, CRYPTO_GCM_TAG_LEN);
	params[1] = OSSL_PARAM_construct_end();
	if (EVP_CIPHER_CTX_get_params(cctx, params) != 1)
	{
		crypto_fail(errmsg, "could not get the AES-256-GCM tag");
		goto fail;
	}
	EVP_CIPHER_CTX_free(cctx);
	EVP_CIPHER_free(cipher);
	ERR_clear_error();
	*outlen = done + CRYPTO_GCM_TAG_LEN;
	return out;

fail:
	EVP_CIPHER_CTX_free(cctx);
	EVP_CIPHER_free(cipher);
	if (out != NULL)
	{
		OPENSSL_cleanse(out, plaintext_len + CRYPTO_GCM_TAG_LEN);
		pfree(out);
	}
	return NULL;
}

/*
 * AES-256-GCM decryption of ciphertext || 16-byte tag (as made by
 * crypto_aes256gcm_encrypt) with the same key, nonce and aad.  Returns the
 * plaintext (palloc'd, with a NUL after its *outlen bytes), or NULL with
 * *errmsg set when the tag does not verify: wrong key, wrong aad, or altered
 * bytes.  No partial plaintext is ever returned.
 */
unsigned char *
crypto_aes256gcm_decrypt(const unsigned char *key, const unsigned char *nonce,
						 const unsigned char *aad, size_t aad_len,
						 const unsigned char *in, size_t inlen,
						 size_t *outlen, char **errmsg)
{
	EVP_CIPHER *cipher = NULL;
	EVP_CIPHER_CTX *cctx = NULL;
	OSSL_PARAM	params[2];
	unsigned char tag[CRYPTO_GCM_TAG_LEN];
	unsigned char *out = NULL;
	size_t		ctlen;
	int			n = 0;
	size_t		done = 0;

	if (inlen < CRYPTO_GCM_TAG_LEN || inlen > INT_MAX - 64 || aad_len > INT_MAX)
	{
		crypto_fail_plain(errmsg, "AES-256-GCM input has a bad length");
		return NULL;
	}
	ctlen = inlen - CRYPTO_GCM_TAG_LEN;
	memcpy(tag, in + ctlen, CRYPTO_GCM_TAG_LEN);
	ERR_clear_error();
	cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	cctx = EVP_CIPHER_CTX_new();
	if (cipher == NULL || cctx == NULL ||
		EVP_DecryptInit_ex2(cctx, cipher, key, nonce, NULL) != 1)
	{
		crypto_fail(errmsg, "could not initialize AES-256-GCM");
		goto fail;
	}
	out = palloc(ctlen + 1);
	if ((aad_len > 0 && EVP_DecryptUpdate(cctx, NULL, &n, aad, (int) aad_len) != 1) ||
		(ctlen > 0 && EVP_DecryptUpdate(cctx, out, &n, in, (int) ctlen) != 1))
	{
		crypto_fail(errmsg, "AES-256-GCM decryption failed");
		goto fail;
	}
	done = ctlen > 0 ? (size_t) n : 0;
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, CRYPTO_GCM_TAG_LEN);
	params[1] = OSSL_PARAM_construct_end();
	if (EVP_CIPHER_CTX_set_params(cctx, params) != 1)
	{
		crypto_fail(errmsg, "could not set the AES-256-GCM tag");
		goto fail;
	}
	if (EVP_DecryptFinal_ex(cctx, out + done, &n) != 1)
	{
		crypto_fail_plain(errmsg, "AES-256-GCM authentication failed");
		goto fail;
	}
	done += (size_t) n;
	Assert(done == ctlen);
	out[done] = '\0';
	EVP_CIPHER_CTX_free(cctx);
	EVP_CIPHER_free(cipher);
	ERR_clear_error();
	*outlen = done;
	return out;

fail:
	EVP_CIPHER_CTX_free(cctx);
	EVP_CIPHER_free(cipher);
	if (out != NULL)
	{
		OPENSSL_cleanse(out, ctlen + 1);
		pfree(out);
	}
	return NULL;
}
