/*
 * credentials.c
 *		Per-provider validation of integration credentials, and the JWT
 *		self-test helper.
 *
 * novu._validate_integration(provider_id, credentials) checks the keys of
 * DESIGN.md 3a (Novu's names) with OpenSSL where they hold keys, and returns
 * them normalized: serviceAccount given as a string is parsed, "secure"
 * becomes a boolean, defaults are filled in (serviceAccount.token_uri, apns
 * secure), URLs pass the outbound URL policy (netpolicy_check_url: https
 * only) and base URLs lose their trailing "/", PEM text given with literal
 * \n escapes is stored with real newlines (so libcurl can take it as is),
 * VAPID keys are re-encoded as unpadded base64url.  A key whose value
 * is JSON null counts as absent and is dropped (so update_integration can
 * remove a key, e.g. to switch APNs from token to certificate auth).
 *
 * Errors are ERRCODE_INVALID_PARAMETER_VALUE with
 *	 invalid credentials for provider "<id>": <field> <problem>
 * plus the OpenSSL reason as detail where there is one, and a hint saying
 * what is expected.  No message ever quotes a value (a key that fails to
 * parse is still a secret).  Raising is right here: this runs in a SQL call.
 * The delivery worker uses crypto.h, which never raises.
 *
 * A secret that is already sealed (secrets.c: update_integration merges the
 * stored credentials with the changes) was validated when it was stored and
 * passes as it is; the novu.integrations trigger encrypts the clear ones.
 */
#include "postgres.h"

#ifndef OPENSSL_NO_DEPRECATED
#define OPENSSL_NO_DEPRECATED 1
#endif

#include "common/jsonapi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "api/credentials.h"
#include "crypto/crypto.h"
#include "common/jsonb_util.h"
#include "net/netpolicy.h"
#include "novu.h"
#include "crypto/secrets.h"

PG_FUNCTION_INFO_V1(novu_validate_integration);
PG_FUNCTION_INFO_V1(novu_jwt_selftest);

const char *const novu_push_providers[] = {
	"fcm", "apns", "expo", "one-signal", "push-webhook", "web-push", NULL
};

#define KNOWN_PROVIDERS_HINT \
	"Known providers: fcm, apns, expo, one-signal, push-webhook, web-push."

#define FCM_TOKEN_URI_DEFAULT	"https://oauth2.googleapis.com/token"

/* accepted keys per provider, and the hint listing them */
static const char *const fcm_keys[] = {"serviceAccount", "endpoint", NULL};
static const char *const fcm_sa_keys[] = {
	"type", "project_id", "private_key_id", "private_key", "client_email",
	"client_id", "auth_uri", "token_uri", "auth_provider_x509_cert_url",
	"client_x509_cert_url", "universe_domain", NULL
};
static const char *const apns_keys[] = {
	"secretKey", "apiKey", "projectName", "applicationId", "secure",
	"certificate", "privateKey", "endpoint", NULL
};
static const char *const expo_keys[] = {"apiKey", "endpoint", NULL};
static const char *const onesignal_keys[] = {"applicationId", "apiKey", "endpoint", NULL};
static const char *const webhook_keys[] = {"webhookUrl", "secretKey", NULL};
static const char *const webpush_keys[] = {"vapidPublicKey", "vapidPrivateKey", "subject", NULL};

#define ENDPOINT_HINT \
	"Give a base URL https://host[:port] with no path, e.g. https://push-proxy.example.com:8443."
#define APNS_AUTH_HINT \
	"Give secretKey (the .p8 PEM), apiKey (Key ID) and projectName (Team ID) for token auth, " \
	"or certificate and privateKey (PEM) for certificate auth, plus applicationId (the bundle id)."

/* What is being checked: one JSON object of the credentials, and where its result goes. */
typedef struct CredCheck
{
	const char *provider;		/* provider_id, for messages */
	JsonbContainer *container;	/* the object being checked */
	const char *prefix;			/* "" or "serviceAccount." for field names */
	const char *const *accepted;	/* accepted keys of this object */
	JsonbParseState **state;	/* normalized result under construction */
} CredCheck;

static void cred_fail(CredCheck *c, const char *field, const char *problem,
					  const char *detail, const char *hint) pg_attribute_noreturn();


/* True if provider_id is one of the push providers of this version. */
bool
novu_provider_is_known(const char *provider_id)
{
	int			i;

	for (i = 0; novu_push_providers[i] != NULL; i++)
		if (strcmp(provider_id, novu_push_providers[i]) == 0)
			return true;
	return false;
}

/* Raise "invalid credentials for provider "p": <prefix><field> <problem>" (field NULL: just the problem). */
static void
cred_fail(CredCheck *c, const char *field, const char *problem,
		  const char *detail, const char *hint)
{
	char	   *what;

	if (field != NULL)
		what = psprintf("%s%s %s", c->prefix, field, problem);
	else
		what = pstrdup(problem);
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid credentials for provider \"%s\": %s", c->provider, what),
			 detail ? errdetail("%s", detail) : 0,
			 hint ? errhint("%s", hint) : 0));
	pg_unreachable();
}

/* The accepted keys as "a, b, c". */
static char *
key_list(const char *const *keys)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	for (i = 0; keys[i] != NULL; i++)
		appendStringInfo(&buf, "%s%s", i > 0 ? ", " : "", keys[i]);
	return buf.data;
}

/* Raise on the first key of the object that is not accepted, with a hint listing the accepted ones. */
static void
cred_check_keys(CredCheck *c)
{
	JsonbIterator *it = JsonbIteratorInit(c->container);
	JsonbValue	v;
	JsonbIteratorToken tok;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		int			i;
		bool		found = false;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		for (i = 0; c->accepted[i] != NULL; i++)
			if (strcmp(key, c->accepted[i]) == 0)
				found = true;
		if (!found)
		{
			char	   *hint;

			if (c->prefix[0] != '\0')
				hint = psprintf("Accepted keys in %.*s: %s.",
								(int) strlen(c->prefix) - 1, c->prefix, key_list(c->accepted));
			else
				hint = psprintf("Accepted keys for %s: %s.", c->provider, key_list(c->accepted));
			cred_fail(c, NULL, psprintf("unknown key \"%s%s\"", c->prefix, key), NULL, hint);
		}
	}
}

/* The value of a key; false if it is absent or JSON null (null counts as absent). */
static bool
cred_get(CredCheck *c, const char *key, JsonbValue *v)
{
	if (!jsonb_container_get(c->container, key, v))
		return false;
	return v->type != jbvNull;
}

/* True if the key is present with a non-null value. */
static bool
cred_has(CredCheck *c, const char *key)
{
	JsonbValue	v;

	return cred_get(c, key, &v);
}

/* A non-empty string value (palloc'd); NULL if absent and optional, else an error naming the key. */
static char *
cred_string(CredCheck *c, const char *key, bool required, const char *hint)
{
	JsonbValue	v;

	if (!cred_get(c, key, &v))
	{
		if (required)
			cred_fail(c, key, "is required", NULL, hint);
		return NULL;
	}
	if (v.type != jbvString || v.val.string.len == 0)
		cred_fail(c, key, "must be a non-empty string", NULL, hint);
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/* Push "key": "value" into the result. */
static void
cred_push_string(CredCheck *c, const char *key, const char *value)
{
	jsonb_push_string(c->state, key, value);
}

/* Check and push the optional "endpoint" base URL (fcm, apns, expo, one-signal). */
static void
cred_endpoint(CredCheck *c)
{
	char	   *s = cred_string(c, "endpoint", false, ENDPOINT_HINT);
	char	   *url;
	UrlProblem	err;

	if (s == NULL)
		return;
	url = netpolicy_check_url(s, true, &err);
	if (url == NULL)
		cred_fail(c, "endpoint", err.problem, err.detail, err.hint ? err.hint : ENDPOINT_HINT);
	cred_push_string(c, "endpoint", url);
}

/* Load a PEM private key or raise naming the field; expected is e.g. "an RSA private key". */
static EVP_PKEY *
cred_private_key(CredCheck *c, const char *field, const char *pem,
				 const char *expected, const char *hint)
{
	char	   *err = NULL;
	EVP_PKEY   *key = crypto_load_private_key_pem(pem, &err);

	if (key == NULL)
		cred_fail(c, field, psprintf("does not parse as %s", expected), err, hint);
	return key;
}

/*
 * Parse JSON text into a jsonb object, or NULL (with *detail set) if it is
 * not valid JSON or not an object.  The non-throwing JSON parser checks the
 * text first (escapes included), so jsonb_in cannot fail on it afterwards.
 */
static Jsonb *
parse_json_object(const char *s, int len, char **detail)
{
	JsonLexContext *lex;
	JsonParseErrorType rc;
	Jsonb	   *jb;

	*detail = NULL;
#if PG_VERSION_NUM >= 170000
	lex = makeJsonLexContextCstringLen(NULL, pnstrdup(s, len), len, GetDatabaseEncoding(), true);
#else
	lex = makeJsonLexContextCstringLen(pnstrdup(s, len), len, GetDatabaseEncoding(), true);
#endif
	rc = pg_parse_json(lex, &nullSemAction);
	if (rc != JSON_SUCCESS)
	{
		/* not json_errdetail(): it quotes the bad token, which may be key material */
		*detail = psprintf("The string is not valid JSON: syntax error on line %d (its text is not shown: it holds a private key).",
						   lex->line_number);
		return NULL;
	}
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(pnstrdup(s, len))));
	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
	{
		*detail = pstrdup("The string holds JSON that is not an object.");
		return NULL;
	}
	return jb;
}

/* fcm: serviceAccount (object or JSON string) with an RSA private_key; optional endpoint. */
static void
validate_fcm(CredCheck *c)
{
	static const char *sa_hint =
		"Give the Firebase service-account key file (JSON) as an object or as a string; "
		"it needs project_id, client_email and private_key.";
	JsonbValue	v;
	JsonbContainer *sa;
	CredCheck	sc;
	char	   *s;
	EVP_PKEY   *key;
	int			i;

	cred_check_keys(c);
	if (!cred_get(c, "serviceAccount", &v))
		cred_fail(c, "serviceAccount", "is required", NULL, sa_hint);
	if (v.type == jbvString)
	{
		char	   *detail = NULL;
		Jsonb	   *jb = parse_json_object(v.val.string.val, v.val.string.len, &detail);

		if (jb == NULL)
			cred_fail(c, "serviceAccount", "is not a JSON object", detail, sa_hint);
		sa = &jb->root;
	}
	else if (v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data))
		sa = v.val.binary.data;
	else
		cred_fail(c, "serviceAccount", "is not a JSON object", NULL, sa_hint);

	sc.provider = c->provider;
	sc.container = sa;
	sc.prefix = "serviceAccount.";
	sc.accepted = fcm_sa_keys;
	sc.state = c->state;
	cred_check_keys(&sc);

	jsonb_push_key(c->state, "serviceAccount");
	pushJsonbValue(c->state, WJB_BEGIN_OBJECT, NULL);

	cred_push_string(&sc, "project_id", cred_string(&sc, "project_id", true, sa_hint));
	cred_push_string(&sc, "client_email", cred_string(&sc, "client_email", true, sa_hint));

	s = cred_string(&sc, "private_key", true, sa_hint);
	if (secrets_is_sealed(s))
		cred_push_string(&sc, "private_key", s);	/* stored sealed, validated then */
	else
	{
		key = cred_private_key(&sc, "private_key", s, "an RSA private key",
							   "Give the service account's private_key: a PEM RSA private key (-----BEGIN PRIVATE KEY-----).");
		if (!crypto_key_is_rsa(key))
		{
			char	   *detail = psprintf("It is an %s key.", crypto_key_description(key));

			EVP_PKEY_free(key);
			cred_fail(&sc, "private_key", "does not parse as an RSA private key", detail,
					  "Give the service account's private_key: a PEM RSA private key (-----BEGIN PRIVATE KEY-----).");
		}
		EVP_PKEY_free(key);
		cred_push_string(&sc, "private_key", crypto_pem_unescape(s));
	}

	s = cred_string(&sc, "private_key_id", false, "private_key_id is the key's id (the JWT kid); omit it or give a string.");
	if (s != NULL)
		cred_push_string(&sc, "private_key_id", s);

	s = cred_string(&sc, "token_uri", false, "Omit token_uri for " FCM_TOKEN_URI_DEFAULT ", or give an https URL.");
	if (s != NULL)
	{
		UrlProblem	err;
		char	   *url = netpolicy_check_url(s, false, &err);

		if (url == NULL)
			cred_fail(&sc, "token_uri", err.problem, err.detail, err.hint ? err.hint :
					  "Omit token_uri for " FCM_TOKEN_URI_DEFAULT ", or give an https URL.");
		cred_push_string(&sc, "token_uri", url);
	}
	else
		cred_push_string(&sc, "token_uri", FCM_TOKEN_URI_DEFAULT);

	/* the other keys of the key file are kept as they are */
	for (i = 0; fcm_sa_keys[i] != NULL; i++)
	{
		const char *k = fcm_sa_keys[i];

		if (strcmp(k, "project_id") == 0 || strcmp(k, "client_email") == 0 ||
			strcmp(k, "private_key") == 0 || strcmp(k, "private_key_id") == 0 ||
			strcmp(k, "token_uri") == 0)
			continue;
		if (cred_get(&sc, k, &v))
		{
			jsonb_push_key(c->state, k);
			pushJsonbValue(c->state, WJB_VALUE, &v);
		}
	}
	pushJsonbValue(c->state, WJB_END_OBJECT, NULL);

	cred_endpoint(c);
}

/* apns: token auth (secretKey/apiKey/projectName) or certificate auth (certificate/privateKey), applicationId, secure. */
static void
validate_apns(CredCheck *c)
{
	bool		token_auth;
	bool		cert_auth;
	bool		secure = false;
	JsonbValue	v;
	char	   *s;
	char	   *err = NULL;
	EVP_PKEY   *key;

	cred_check_keys(c);
	token_auth = cred_has(c, "secretKey") || cred_has(c, "apiKey") || cred_has(c, "projectName");
	cert_auth = cred_has(c, "certificate") || cred_has(c, "privateKey");
	if (token_auth && cert_auth)
		cred_fail(c, NULL,
				  "both token auth (secretKey, apiKey, projectName) and certificate auth (certificate, privateKey) are given",
				  NULL,
				  "Give the keys of one of the two; set the other's keys to null to remove them.");
	if (!token_auth && !cert_auth)
		cred_fail(c, NULL, "no authentication given", NULL, APNS_AUTH_HINT);

	if (token_auth)
	{
		static const char *p8_hint =
			"secretKey is the .p8 signing key from Apple: a PEM EC P-256 private key (-----BEGIN PRIVATE KEY-----).";

		s = cred_string(c, "secretKey", true, p8_hint);
		if (secrets_is_sealed(s))
			cred_push_string(c, "secretKey", s);	/* stored sealed, validated then */
		else
		{
			key = cred_private_key(c, "secretKey", s, "an EC P-256 private key", p8_hint);
			if (!crypto_key_is_p256(key))
			{
				char	   *detail = psprintf("It is an %s key.", crypto_key_description(key));

				EVP_PKEY_free(key);
				cred_fail(c, "secretKey", "does not parse as an EC P-256 private key", detail, p8_hint);
			}
			EVP_PKEY_free(key);
			cred_push_string(c, "secretKey", crypto_pem_unescape(s));
		}
		cred_push_string(c, "apiKey",
						 cred_string(c, "apiKey", true, "apiKey is the Key ID of the .p8 key (10 characters)."));
		cred_push_string(c, "projectName",
						 cred_string(c, "projectName", true, "projectName is the Apple Developer Team ID (10 characters)."));
	}
	else
	{
		static const char *cert_hint =
			"Give certificate (the APNs client certificate, PEM) and privateKey (its PEM private key, unencrypted).";
		char	   *cert_pem = cred_string(c, "certificate", true, cert_hint);
		char	   *key_pem = cred_string(c, "privateKey", true, cert_hint);
		X509	   *cert;
		bool		match;

		cert = crypto_load_certificate_pem(cert_pem, &err);
		if (cert == NULL)
			cred_fail(c, "certificate", "does not parse as a PEM X.509 certificate", err, cert_hint);
		if (secrets_is_sealed(key_pem))
		{
			/* stored sealed: the trigger refuses a new certificate without a new key */
			X509_free(cert);
			cred_push_string(c, "certificate", crypto_pem_unescape(cert_pem));
			cred_push_string(c, "privateKey", key_pem);
		}
		else
		{
			key = crypto_load_private_key_pem(key_pem, &err);
			if (key == NULL)
			{
				X509_free(cert);
				cred_fail(c, "privateKey", "does not parse as a private key", err, cert_hint);
			}
			match = crypto_certificate_matches_key(cert, key, &err);
			X509_free(cert);
			EVP_PKEY_free(key);
			if (!match)
				cred_fail(c, "privateKey", "does not match certificate", err,
						  "Give the private key the certificate was issued for.");
			cred_push_string(c, "certificate", crypto_pem_unescape(cert_pem));
			cred_push_string(c, "privateKey", crypto_pem_unescape(key_pem));
		}
	}

	cred_push_string(c, "applicationId",
					 cred_string(c, "applicationId", true,
								 "applicationId is the app's bundle id (the apns-topic), e.g. com.example.app."));

	if (cred_get(c, "secure", &v))
	{
		if (v.type == jbvBool)
			secure = v.val.boolean;
		else if (v.type == jbvString && v.val.string.len == 4 &&
				 strncmp(v.val.string.val, "true", 4) == 0)
			secure = true;
		else if (v.type == jbvString && v.val.string.len == 5 &&
				 strncmp(v.val.string.val, "false", 5) == 0)
			secure = false;
		else
			cred_fail(c, "secure", "must be a boolean", NULL,
					  "true sends to the production APNs host, false (the default) to the sandbox.");
	}
	jsonb_push_bool(c->state, "secure", secure);

	cred_endpoint(c);
}

/* expo: optional apiKey (access token), optional endpoint. */
static void
validate_expo(CredCheck *c)
{
	char	   *s;

	cred_check_keys(c);
	s = cred_string(c, "apiKey", false,
					"apiKey is an Expo access token (enhanced push security); omit it if not used.");
	if (s != NULL)
		cred_push_string(c, "apiKey", s);
	cred_endpoint(c);
}

/* one-signal: applicationId and apiKey, optional endpoint. */
static void
validate_onesignal(CredCheck *c)
{
	cred_check_keys(c);
	cred_push_string(c, "applicationId",
					 cred_string(c, "applicationId", true, "applicationId is the OneSignal App ID."));
	cred_push_string(c, "apiKey",
					 cred_string(c, "apiKey", true, "apiKey is the OneSignal REST API key."));
	cred_endpoint(c);
}

/* push-webhook: webhookUrl (https URL) and secretKey (HMAC key). */
static void
validate_push_webhook(CredCheck *c)
{
	static const char *url_hint = "webhookUrl is the https URL the notification is POSTed to.";
	char	   *s;
	char	   *url;
	UrlProblem	err;

	cred_check_keys(c);
	s = cred_string(c, "webhookUrl", true, url_hint);
	url = netpolicy_check_url(s, false, &err);
	if (url == NULL)
		cred_fail(c, "webhookUrl", err.problem, err.detail, err.hint ? err.hint : url_hint);
	cred_push_string(c, "webhookUrl", url);
	cred_push_string(c, "secretKey",
					 cred_string(c, "secretKey", true,
								 "secretKey is the HMAC-SHA256 key of the X-Novu-Signature header."));
}

/* web-push: a VAPID P-256 key pair as base64url raw keys, and a mailto:/https: subject. */
static void
validate_web_push(CredCheck *c)
{
	static const char *key_hint =
		"Give the VAPID keys as unpadded base64url raw keys (public: 65-byte uncompressed P-256 point, "
		"private: 32 bytes), as web-push generate-vapid-keys prints them.";
	static const char *subject_hint =
		"subject is the contact URI of the sender, e.g. mailto:ops@example.com or https://example.com/contact.";
	char	   *pub_b64;
	char	   *priv_b64;
	char	   *subject;
	unsigned char *pub;
	unsigned char *priv;
	size_t		publen = 0;
	size_t		privlen = 0;
	char	   *err = NULL;
	EVP_PKEY   *key;

	cred_check_keys(c);
	pub_b64 = cred_string(c, "vapidPublicKey", true, key_hint);
	priv_b64 = cred_string(c, "vapidPrivateKey", true, key_hint);
	subject = cred_string(c, "subject", true, subject_hint);

	pub = base64url_decode(pub_b64, &publen);
	if (pub == NULL)
		cred_fail(c, "vapidPublicKey", "is not base64url", NULL, key_hint);
	if (publen != CRYPTO_P256_PUBLIC_LEN || pub[0] != 0x04)
		cred_fail(c, "vapidPublicKey", "must be a 65-byte uncompressed P-256 point",
				  psprintf("It decodes to %zu bytes%s.", publen,
						   publen == CRYPTO_P256_PUBLIC_LEN ? " not starting with 0x04" : ""),
				  key_hint);
	key = crypto_p256_key_from_raw(pub, publen, NULL, 0, &err);
	if (key == NULL)
		cred_fail(c, "vapidPublicKey", "is not a valid P-256 public key", err, key_hint);
	EVP_PKEY_free(key);

	if (secrets_is_sealed(priv_b64))
		priv = NULL;			/* stored sealed: the trigger refuses a new public key without a new private key */
	else
	{
		priv = base64url_decode(priv_b64, &privlen);
		if (priv == NULL)
			cred_fail(c, "vapidPrivateKey", "is not base64url", NULL, key_hint);
		if (privlen != CRYPTO_P256_PRIVATE_LEN)
			cred_fail(c, "vapidPrivateKey", "must be a 32-byte P-256 private key",
					  psprintf("It decodes to %zu bytes.", privlen), key_hint);

		key = crypto_vapid_key(pub_b64, priv_b64, &err);
		if (key == NULL)
			cred_fail(c, NULL, "vapidPublicKey and vapidPrivateKey do not form a P-256 key pair", err,
					  "Give the public key that belongs to the private key.");
		EVP_PKEY_free(key);
	}

	if (!((pg_strncasecmp(subject, "mailto:", 7) == 0 && subject[7] != '\0') ||
		  (pg_strncasecmp(subject, "https:", 6) == 0 && subject[6] != '\0')))
		cred_fail(c, "subject", "must be a mailto: or https: URI", NULL, subject_hint);

	cred_push_string(c, "vapidPublicKey", base64url_encode(pub, publen));
	cred_push_string(c, "vapidPrivateKey", priv ? base64url_encode(priv, privlen) : priv_b64);
	cred_push_string(c, "subject", subject);
}

/* Validate and normalize the credentials of a provider; raises naming the bad field. */
Jsonb *
novu_validate_credentials(const char *provider_id, Jsonb *credentials)
{
	JsonbParseState *state = NULL;
	JsonbValue *result;
	CredCheck	c;

	if (!novu_provider_is_known(provider_id))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown provider_id \"%s\"", provider_id),
				 errhint(KNOWN_PROVIDERS_HINT)));
	novu_check_json_size(credentials, "credentials", NOVU_MAX_CREDENTIALS_BYTES);

	c.provider = provider_id;
	c.container = &credentials->root;
	c.prefix = "";
	c.accepted = NULL;
	c.state = &state;
	if (!JB_ROOT_IS_OBJECT(credentials) || JB_ROOT_IS_SCALAR(credentials))
		cred_fail(&c, "credentials", "must be a JSON object", NULL,
				  "Give an object with the provider's keys, e.g. {\"apiKey\": \"...\"}.");

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	if (strcmp(provider_id, "fcm") == 0)
	{
		c.accepted = fcm_keys;
		validate_fcm(&c);
	}
	else if (strcmp(provider_id, "apns") == 0)
	{
		c.accepted = apns_keys;
		validate_apns(&c);
	}
	else if (strcmp(provider_id, "expo") == 0)
	{
		c.accepted = expo_keys;
		validate_expo(&c);
	}
	else if (strcmp(provider_id, "one-signal") == 0)
	{
		c.accepted = onesignal_keys;
		validate_onesignal(&c);
	}
	else if (strcmp(provider_id, "push-webhook") == 0)
	{
		c.accepted = webhook_keys;
		validate_push_webhook(&c);
	}
	else
	{
		Assert(strcmp(provider_id, "web-push") == 0);
		c.accepted = webpush_keys;
		validate_web_push(&c);
	}
	result = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(result);
}

/* novu._validate_integration(provider_id text, credentials jsonb) RETURNS jsonb */
Datum
novu_validate_integration(PG_FUNCTION_ARGS)
{
	char	   *provider_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *credentials = PG_GETARG_JSONB_P(1);

	PG_RETURN_JSONB_P(novu_validate_credentials(provider_id, credentials));
}

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
