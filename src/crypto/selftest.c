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
