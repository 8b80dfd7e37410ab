/*
 * apns.c
 *		Apple Push Notification service: HTTP/2 only, token auth (ES256 provider
 *		JWT with a raw R||S signature, renewed every 50 minutes, shared by every
 *		request) or certificate auth (TLS client certificate).
 *
 * Request: POST /3/device/<token> with apns-topic = applicationId,
 * apns-push-type: alert, apns-priority: 10; body {"aps": {"alert": {"title",
 * "body"}}, ...payload keys} then overrides.apns deep-merged (its "headers"
 * object, if any, become request headers: only those of its own
 * allowlist, each once, without control characters).  Payloads over 4096
 * bytes fail before any request (PayloadTooLarge).  A token that is not hex
 * never reaches the URL path: its message fails.
 * A token is removed only on the dead-token reasons with their HTTP status
 * (410 Unregistered / ExpiredToken, 400 BadDeviceToken / DeviceTokenNotForTopic).
 */
#include "postgres.h"

#include <time.h>

#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "crypto/crypto.h"
#include "net/http.h"
#include "common/jsonb_util.h"
#include "providers/provider.h"
#include "providers/validate.h"
#include "crypto/envelope.h"
#include "providers/rules.h"

#define APNS_PRODUCTION		"https://api.push.apple.com"
#define APNS_SANDBOX		"https://api.sandbox.push.apple.com"
#define APNS_MAX_PAYLOAD	4096
#define APNS_JWT_LIFETIME_S	(50 * 60)	/* Apple: renew between 20 and 60 minutes */

/* What the APNs provider keeps per integration. */
typedef struct ApnsState
{
	EVP_PKEY   *key;			/* token auth */
	char	   *key_id;
	char	   *team_id;
	char	   *certificate;	/* certificate auth */
	char	   *private_key;
	char	   *topic;
	char	   *base_url;
	char	   *jwt;			/* in the integration's context */
	long		jwt_iat;
} ApnsState;

/* Free the OpenSSL key and wipe the secrets kept with the integration's context. */
static void
apns_state_free(void *arg)
{
	ApnsState  *st = arg;

	if (st->key)
		EVP_PKEY_free(st->key);
	st->key = NULL;
	crypto_free_secret(st->private_key);
	st->private_key = NULL;
	crypto_free_secret(st->jwt);
	st->jwt = NULL;
}

/* Parse the credentials once; false with *error if they cannot be used. */
static bool
apns_prepare(Integration *ig, char **error)
{
	ApnsState  *st = palloc0(sizeof(ApnsState));
	JsonbContainer *c = &ig->credentials->root;
	JsonbValue	secure;
	char	   *pem;
	MemoryContextCallback *cb = palloc(sizeof(MemoryContextCallback));

	/* whatever happens below, the key and secrets go with the integration */
	cb->func = apns_state_free;
	cb->arg = st;
	MemoryContextRegisterResetCallback(ig->context, cb);
	st->topic = jsonb_container_get_string(c, "applicationId");
	if (st->topic == NULL)
	{
		*error = "applicationId (the bundle id) is missing";
		return false;
	}
	st->certificate = jsonb_container_get_string(c, "certificate");
	st->private_key = jsonb_container_get_string(c, "privateKey");
	pem = jsonb_container_get_string(c, "secretKey");
	if (pem != NULL)
	{
		st->key_id = jsonb_container_get_string(c, "apiKey");
		st->team_id = jsonb_container_get_string(c, "projectName");
		if (st->key_id == NULL || st->team_id == NULL)
		{
			crypto_free_secret(pem);
			*error = "token auth needs apiKey (Key ID) and projectName (Team ID)";
			return false;
		}
		st->key = crypto_load_private_key_pem(pem, error);
		/* the key lives in OpenSSL now: no copy of its PEM stays in memory */
		crypto_free_secret(pem);
		if (st->key == NULL)
			return false;
	}
	else if (st->certificate == NULL || st->private_key == NULL)
	{
		*error = "neither token auth (secretKey) nor certificate auth (certificate, privateKey) is configured";
		return false;
	}

	/* secure = production host; endpoint replaces either */
	st->base_url = novu_integration_base_url(ig, jsonb_container_get(c, "secure", &secure) &&
										secure.type == jbvBool && secure.val.boolean
										? APNS_PRODUCTION : APNS_SANDBOX);
	ig->state = st;
	return true;
}

/* Mint (or reuse) the provider token; certificate auth needs none. */
static bool
apns_authorize(Integration *ig, bool force, Outcome *failure, char **error)
{
	ApnsState  *st = ig->state;
	long		now = (long) time(NULL);
	char	   *header;
	char	   *claims;
	char	   *jwt;
	StringInfoData buf;
	MemoryContext old;

	if (st->key == NULL)
		return true;
	if (st->jwt != NULL && !force && now - st->jwt_iat < APNS_JWT_LIFETIME_S)
		return true;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"alg\":\"ES256\",\"kid\":");
	escape_json(&buf, st->key_id);
	appendStringInfoChar(&buf, '}');
	header = pstrdup(buf.data);
	resetStringInfo(&buf);
	appendStringInfoString(&buf, "{\"iss\":");
	escape_json(&buf, st->team_id);
	appendStringInfo(&buf, ",\"iat\":%ld}", now);
	claims = buf.data;

	jwt = jwt_sign_es256(st->key, header, claims, error);
	if (jwt == NULL)
	{
		*failure = OUTCOME_CONFIG_ERROR;
		return false;
	}
	old = MemoryContextSwitchTo(ig->context);
	crypto_free_secret(st->jwt);
	st->jwt = pstrdup(jwt);
	MemoryContextSwitchTo(old);
	st->jwt_iat = now;
	return true;
}

/* Build the request of one message; payloads over the limit fail here. */
static HttpRequest *
apns_build(Integration *ig, Message **msgs, int n)
{
	ApnsState  *st = ig->state;
	Message    *m = msgs[0];
	JsonbParseState *state = NULL;
	JsonbValue	v;
	Jsonb	   *payload;
	Jsonb	   *overrides = m->overrides;
	JsonbValue	headers;
	bool		have_headers = false;
	HttpRequest *req;
	char	   *body;
	const char *problem;
	bool		have_push_type = false;
	bool		have_priority = false;
	bool		background = false;
	bool		priority_10 = false;

	/* the token becomes the URL path: hex only, whatever an older version stored */
	if (!novu_device_token_valid("apns", m->target, &problem))
	{
		novu_message_set(m, OUTCOME_DROP, psprintf("Invalid device token: the token %s", problem));
		return NULL;
	}

	/* {"aps": {"alert": {"title", "body"}}} */
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	jsonb_push_key(&state, "aps");
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	jsonb_push_key(&state, "alert");
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	jsonb_push_string(&state, "title", m->title);
	jsonb_push_string(&state, "body", m->body);
	pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	payload = JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));

	/* custom keys: the payload (an "aps" key there cannot replace ours) */
	if (m->data != NULL)
	{
		Jsonb	   *custom = DatumGetJsonbP(DirectFunctionCall2(jsonb_delete,
																JsonbPGetDatum(m->data),
																CStringGetTextDatum("aps")));

		payload = jsonb_deep_merge(custom, payload);
	}
	/* overrides.apns: "headers" are request headers, the rest is payload */
	if (overrides != NULL)
	{
		if (jsonb_container_get(&overrides->root, "headers", &headers) && headers.type == jbvBinary &&
			JsonContainerIsObject(headers.val.binary.data))
			have_headers = true;
		payload = jsonb_deep_merge(payload, DatumGetJsonbP(DirectFunctionCall2(jsonb_delete,
																				JsonbPGetDatum(overrides),
																				CStringGetTextDatum("headers"))));
	}

	body = JsonbToCString(NULL, &payload->root, VARSIZE(payload));
	if (strlen(body) > APNS_MAX_PAYLOAD)
	{
		novu_message_set(m, OUTCOME_DROP, psprintf("PayloadTooLarge: %zu bytes (APNs accepts %d)", strlen(body), APNS_MAX_PAYLOAD));
		return NULL;
	}

	req = http_request_new(psprintf("%s/3/device/%s", st->base_url, m->target));
	req->body = body;
	req->body_len = strlen(body);
	req->require_h2 = true;
	req->id_header = "apns-id";
	req->owner = ig;
	http_add_header(req, "Content-Type: application/json");
	http_add_header(req, psprintf("apns-topic: %s", st->topic));
	if (have_headers)
	{
		JsonbIterator *it = JsonbIteratorInit(headers.val.binary.data);
		JsonbIteratorToken tok;
		JsonbValue	k;
		const char *seen[8];
		int			nseen = 0;

		while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
		{
			const HeaderRule *rule;
			const char *name;
			char	   *value;
			int			i;

			if (tok != WJB_KEY)
				continue;
			(void) JsonbIteratorNext(&it, &v, true);
			/* allowlisted names, each once, clean values (checked before; never inject) */
			rule = novu_header_rule(novu_apns_headers, k.val.string.val, k.val.string.len);
			name = rule ? rule->name : NULL;
			value = v.type == jbvString || v.type == jbvNumeric ? jsonb_value_to_text(&v) : NULL;
			for (i = 0; name != NULL && i < nseen && seen[i] != name; i++)
				;
			if (name == NULL || i < nseen || nseen == lengthof(seen) || value == NULL ||
				!novu_header_value_clean(value, strlen(value)))
			{
				novu_message_set(m, OUTCOME_DROP,
							psprintf("Override refused: overrides.apns.headers.%.*s is not an allowed header, repeats one or has a bad value",
									 k.val.string.len, k.val.string.val));
				http_request_free(req);
				return NULL;
			}
			seen[nseen++] = name;
			have_push_type |= strcmp(name, "apns-push-type") == 0;
			have_priority |= strcmp(name, "apns-priority") == 0;
			background |= strcmp(name, "apns-push-type") == 0 && strcmp(value, "background") == 0;
			priority_10 |= strcmp(name, "apns-priority") == 0 && strcmp(value, "10") == 0;
			http_add_header(req, psprintf("%s: %s", name, value));
		}
	}

	/*
	 * A background push must go with priority 5: Apple refuses 10
	 * (BadPriority), which is the default of every other push type
	 */
	if (background && priority_10)
	{
		novu_message_set(m, OUTCOME_DROP,
					"Override refused: overrides.apns.headers: apns-push-type background needs apns-priority 5, not 10");
		http_request_free(req);
		return NULL;
	}
	if (!have_push_type)
		http_add_header(req, "apns-push-type: alert");
	if (!have_priority)
		http_add_header(req, background ? "apns-priority: 5" : "apns-priority: 10");
	if (st->key != NULL)
		http_add_header(req, psprintf("authorization: bearer %s", st->jwt));
	else
	{
		req->client_cert = st->certificate;
		req->client_key = st->private_key;
	}
	return req;
}

/*
 * APNs reasons and their outcomes (PROTOCOLS.md 2.6 and 7).  A dead-token
 * reason counts only with the HTTP status APNs gives it (status 0: any); the
 * same words with another status are not APNs speaking, so the integration's
 * endpoint is wrong.
 */
typedef struct ApnsReason
{
	const char *reason;
	long		status;
	Outcome		outcome;
} ApnsReason;

static const ApnsReason apns_reasons[] = {
	{"Unregistered", 410, OUTCOME_REMOVE_TOKEN},
	{"ExpiredToken", 410, OUTCOME_REMOVE_TOKEN},
	{"BadDeviceToken", 400, OUTCOME_REMOVE_TOKEN},
	{"DeviceTokenNotForTopic", 400, OUTCOME_REMOVE_TOKEN},
	{"ExpiredProviderToken", 0, OUTCOME_REAUTH},
	{"InvalidProviderToken", 0, OUTCOME_CONFIG_ERROR},
	{"MissingProviderToken", 0, OUTCOME_CONFIG_ERROR},
	{"BadCertificate", 0, OUTCOME_CONFIG_ERROR},
	{"BadCertificateEnvironment", 0, OUTCOME_CONFIG_ERROR},
	{"BadEnvironmentKeyIdInToken", 0, OUTCOME_CONFIG_ERROR},
	{"BadEnvironmentKeyInToken", 0, OUTCOME_CONFIG_ERROR},
	{"UnrelatedKeyIdInToken", 0, OUTCOME_CONFIG_ERROR},
	{"BadTopic", 0, OUTCOME_CONFIG_ERROR},
	{"TopicDisallowed", 0, OUTCOME_CONFIG_ERROR},
	{"MissingTopic", 0, OUTCOME_CONFIG_ERROR},
	{"Forbidden", 0, OUTCOME_CONFIG_ERROR},
	{"TooManyProviderTokenUpdates", 0, OUTCOME_CONFIG_ERROR},
	{"BadPath", 0, OUTCOME_CONFIG_ERROR},
	{"MethodNotAllowed", 0, OUTCOME_CONFIG_ERROR},
	{"TooManyRequests", 0, OUTCOME_RETRY},
	{"IdleTimeout", 0, OUTCOME_RETRY},
	{"InternalServerError", 0, OUTCOME_RETRY},
	{"ServiceUnavailable", 0, OUTCOME_RETRY},
	{"Shutdown", 0, OUTCOME_RETRY},
};

/*
 * The "timestamp" of a 410 answer: since when APNs has known the token to be
 * invalid (milliseconds since the epoch), or 0 if absent or not a plausible
 * whole number.
 */
static int64
apns_gone_since(Jsonb *body)
{
	JsonbValue	v;
	char	   *text;
	char	   *end;
	long long	ms;

	if (body == NULL || !jsonb_container_get(&body->root, "timestamp", &v) || v.type != jbvNumeric)
		return 0;
	text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
	if (strspn(text, "0123456789") != strlen(text) || strlen(text) > 15)
		return 0;				/* not a whole number of ms before the year 33658 */
	ms = strtoll(text, &end, 10);
	return ms > 0 ? (int64) ms : 0;
}

/* Classify APNs's answer (PROTOCOLS.md 2.6 and 7). */
static void
apns_classify(Integration *ig, HttpRequest *req, Message **msgs, int n)
{
	Message    *m = msgs[0];
	Jsonb	   *body;
	char	   *reason;
	int			i;

	if (req->result != CURLE_OK)
	{
		novu_classify_transport(req, msgs, n);
		return;
	}
	if (req->status == 200)
	{
		m->provider_message_id = req->id_value;
		novu_message_set(m, OUTCOME_SENT, NULL);
		return;
	}
	body = jsonb_parse_or_null(req->response.data, req->response.len);
	reason = body ? jsonb_container_get_string(&body->root, "reason") : NULL;
	m->retry_after = http_retry_after_seconds(req->retry_after);

	for (i = 0; reason != NULL && i < lengthof(apns_reasons); i++)
	{
		const ApnsReason *r = &apns_reasons[i];

		if (strcmp(reason, r->reason) != 0)
			continue;
		if (r->status != 0 && r->status != req->status)
			novu_message_set(m, OUTCOME_CONFIG_ERROR,
						psprintf("%s with HTTP %ld (APNs answers it with %ld: check the endpoint)",
								 reason, req->status, r->status));
		else
		{
			novu_message_set(m, r->outcome, reason);
			/* "unless the device registered the token again after that" (PROTOCOLS 2.6) */
			if (r->outcome == OUTCOME_REMOVE_TOKEN && req->status == 410)
				m->gone_since_ms = apns_gone_since(body);
		}
		return;
	}
	if (reason == NULL)
		reason = psprintf("HTTP %ld", req->status);
	if (req->status == 429 || req->status >= 500)
		novu_message_set(m, OUTCOME_RETRY, reason);
	else if (req->status == 401 || req->status == 403 || req->status == 404)
		novu_message_set(m, OUTCOME_CONFIG_ERROR, reason);	/* no APNs reason: wrong endpoint */
	else
		novu_message_set(m, OUTCOME_DROP, reason);
}

/* ---------------------------------------------------------------------------
 * SQL time: credentials, device tokens, overrides
 * ------------------------------------------------------------------------- */

#define APNS_TOKEN_MIN_HEX		64		/* 32 bytes: a physical device's token */
#define APNS_TOKEN_MAX_HEX		200		/* simulators' tokens are longer; Apple fixes no length */
#define APNS_AUTH_HINT \
	"Give secretKey (the .p8 PEM), apiKey (Key ID) and projectName (Team ID) for token auth, " \
	"or certificate and privateKey (PEM) for certificate auth, plus applicationId (the bundle id)."

static const char *const apns_keys[] = {
	"secretKey", "apiKey", "projectName", "applicationId", "secure",
	"certificate", "privateKey", "endpoint", NULL
};

/* apns: token auth (secretKey/apiKey/projectName) or certificate auth (certificate/privateKey), applicationId, secure. */
static void
apns_validate(CredCheck *c)
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
						 cred_token(c, "apiKey", true, "apiKey is the Key ID of the .p8 key (10 characters)."));
		cred_push_string(c, "projectName",
						 cred_token(c, "projectName", true, "projectName is the Apple Developer Team ID (10 characters)."));
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
					 cred_token(c, "applicationId", true,
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

/* APNs: the hex text of the token bytes; it becomes the URL path /3/device/<token>. */
static bool
apns_token_check(const char *t, size_t len, const char **problem)
{
	size_t		i;

	for (i = 0; i < len; i++)
	{
		if (!is_hex(t[i]))
		{
			*problem = "contains a character that is not a hex digit";
			return false;
		}
	}
	if (len < APNS_TOKEN_MIN_HEX || len > APNS_TOKEN_MAX_HEX)
	{
		*problem = "does not have " CppAsString2(APNS_TOKEN_MIN_HEX) " to " CppAsString2(APNS_TOKEN_MAX_HEX) " hex digits";
		return false;
	}
	if (len % 2 != 0)
	{
		*problem = "has an odd number of hex digits";
		return false;
	}
	return true;
}

/* APNs: "headers" become request headers, every other key merges into the JSON body. */
static const FieldRule apns_fields[] = {
	HEADERS("headers", novu_apns_headers),
	ALLOW("aps", FIELD_OBJECT),
	REFUSE("topic", "the apns-topic is the integration's applicationId (its bundle id)"),
	REFUSE("token", WHY_TOKEN),
	REFUSE("deviceToken", WHY_TOKEN),
	OTHERS(FIELD_ANY)
};

/* the .p8 signing key and the certificate's private key are secrets */
static const SecretField apns_secrets[] = {
	{NULL, "secretKey", NULL},
	{NULL, "privateKey", "certificate"},
	{NULL, NULL, NULL}
};

const ProviderOps novu_apns_provider = {
	.provider_id = "apns",
	.label = "APNs",
	.channel = CHANNEL_PUSH,
	.credential_keys = apns_keys,
	.validate = apns_validate,
	.secrets = apns_secrets,
	.token_check = apns_token_check,
	.token_form = "An APNs device token is the hex text of the token's bytes: an even number of 64 to 200 hex digits.",
	.overrides = apns_fields,
	.overrides_hint = "APNs overrides may set aps, custom payload keys, and the headers apns-priority, "
	"apns-expiration, apns-collapse-id and apns-push-type (alert or background).",
	.max_batch = 1,
	.warm_up = true,
	.prepare = apns_prepare,
	.authorize = apns_authorize,
	.check = novu_message_check,
	.build = apns_build,
	.classify = apns_classify,
};
