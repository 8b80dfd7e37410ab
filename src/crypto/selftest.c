/*
 * selftest.c
 *		novu._jwt_selftest(): the JWT signing and verification of crypto.c
 *		checked end to end from SQL (a test helper).
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

#include "crypto/crypto.h"

PG_FUNCTION_INFO_V1(novu_jwt_selftest);
PG_FUNCTION_INFO_V1(novu_webpush_selftest);

/*
 * novu._jwt_selftest(alg text, pem text) RETURNS text: sign a fixed JWT with
 * the key (RS256 or ES256), check the header and claims round-trip, verify
 * the signature with the public half only (ES256: raw R||S converted back to
 * DER), check that a tampered token does not verify, and return
 * 'ok: <signature length in bytes>'.
 */
Datum
novu_jwt_selftest(PG_FUNCTION_ARGS)
{
	char	   *alg = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *pem = text_to_cstring(PG_GETARG_TEXT_PP(1));
	const char *header;
	const char *claims = "{\"iss\":\"novu-selftest\",\"iat\":1700000000,\"exp\":1700003600}";
	bool		es256;
	EVP_PKEY   *key;
	EVP_PKEY   *pub;
	char	   *err = NULL;
	char	   *token;
	char	   *expected_input;
	char	   *tampered;
	char	   *dot;
	size_t		siglen = 0;
	bool		ok;

	if (strcmp(alg, "RS256") == 0)
	{
		es256 = false;
		header = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
	}
	else if (strcmp(alg, "ES256") == 0)
	{
		es256 = true;
		header = "{\"alg\":\"ES256\",\"typ\":\"JWT\"}";
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unsupported JWT algorithm \"%s\"", alg),
				 errhint("Use RS256 or ES256.")));

	key = crypto_load_private_key_pem(pem, &err);
	if (key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("could not load the private key"),
				 errdetail("%s", err),
				 errhint("Give a PEM private key: RSA for RS256, EC P-256 for ES256.")));

	token = es256 ? jwt_sign_es256(key, header, claims, &err)
		: jwt_sign_rs256(key, header, claims, &err);
	if (token == NULL)
	{
		EVP_PKEY_free(key);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("could not sign the %s JWT: %s", alg, err),
				 errhint("Give a PEM private key: RSA for RS256, EC P-256 for ES256.")));
	}

	pub = crypto_public_key(key, &err);
	EVP_PKEY_free(key);
	if (pub == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not extract the public key: %s", err)));

	/* the first two parts are exactly base64url(header) "." base64url(claims) */
	expected_input = psprintf("%s.%s",
							  base64url_encode((const unsigned char *) header, strlen(header)),
							  base64url_encode((const unsigned char *) claims, strlen(claims)));
	dot = strrchr(token, '.');
	if (dot == NULL || (size_t) (dot - token) != strlen(expected_input) ||
		strncmp(token, expected_input, dot - token) != 0)
	{
		EVP_PKEY_free(pub);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("the %s JWT does not start with the encoded header and claims", alg)));
	}

	ok = jwt_verify(pub, alg, token, &siglen, &err);
	if (!ok)
	{
		EVP_PKEY_free(pub);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("the %s JWT does not verify: %s", alg, err)));
	}

	/* a changed claim must not verify */
	tampered = pstrdup(token);
	dot = strchr(tampered, '.');
	dot[1] = (dot[1] == 'A') ? 'B' : 'A';
	ok = jwt_verify(pub, alg, tampered, NULL, &err);
	EVP_PKEY_free(pub);
	if (ok)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("a tampered %s JWT verifies", alg)));

	PG_RETURN_TEXT_P(cstring_to_text(psprintf("ok: %zu", siglen)));
}

/*
 * novu._webpush_selftest() RETURNS text: encrypt RFC 8291 Appendix A's
 * plaintext with its fixed sender key and salt and compare the body byte for
 * byte with the RFC's; 'ok: <bytes>' or an error naming the first difference.
 */
Datum
novu_webpush_selftest(PG_FUNCTION_ARGS)
{
	static const char *const plaintext = "When I grow up, I want to be a watermelon";
	static const char *const as_private = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
	static const char *const ua_public = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
	static const char *const salt = "DGv6ra1nlYgDCS1FRnbzlw";
	static const char *const auth = "BTBZMqHH6r4Tts7J_aSIgg";
	static const char *const expected =
		"DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_y"
		"l95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";
	size_t		ua_len = 0;
	size_t		auth_len = 0;
	size_t		salt_len = 0;
	size_t		out_len = 0;
	unsigned char *ua = base64url_decode(ua_public, &ua_len);
	unsigned char *auth_bytes = base64url_decode(auth, &auth_len);
	unsigned char *salt_bytes = base64url_decode(salt, &salt_len);
	char	   *err = NULL;
	size_t		as_len = 0;
	unsigned char *as_key = base64url_decode(as_private, &as_len);
	unsigned char *body;
	char	   *got;

	/* the sender's public key is computed from it: the expected body holds it as keyid */
	if (as_key == NULL || as_len != CRYPTO_P256_PRIVATE_LEN)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not load the RFC 8291 sender key")));
	body = crypto_webpush_encrypt_with(ua, ua_len, auth_bytes, auth_len,
									   (const unsigned char *) plaintext, strlen(plaintext),
									   as_key, salt_bytes, &out_len, &err);
	if (body == NULL)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("RFC 8291 encryption failed: %s", err)));
	got = base64url_encode(body, out_len);
	if (strcmp(got, expected) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("the RFC 8291 Appendix A body differs"),
				 errdetail("Got %s, expected %s.", got, expected)));
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("ok: %zu bytes", out_len)));
}
