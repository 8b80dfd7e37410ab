/*
 * fcm.c
 *		Firebase Cloud Messaging, HTTP v1 API, with the OAuth2 service-account
 *		flow (RS256 JWT assertion, access token cached until shortly before it
 *		expires, renewed once on a plain 401).
 *
 * Message: {"message": {"token", "notification": {"title", "body"},
 * "data": payload with every value a string}} then overrides.fcm deep-merged
 * (only the fields of its own allowlist; the token is set last, so
 * nothing can retarget the message).
 * A token is removed only on FCM's explicit dead-token answers (PROTOCOLS.md
 * section 7): a bare 404 or NOT_FOUND without UNREGISTERED is a wrong project or
 * endpoint, not a dead token.
 */
#include "postgres.h"

#include <time.h>

#include "common/string.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "crypto/crypto.h"
#include "net/http.h"
#include "common/jsonb_util.h"
#include "providers/provider.h"
#include "providers/rules.h"
#include "providers/validate.h"
#include "crypto/envelope.h"
#include "net/netpolicy.h"

#define FCM_DEFAULT_BASE	"https://fcm.googleapis.com"
#define FCM_DEFAULT_TOKEN_URI "https://oauth2.googleapis.com/token"
#define FCM_SCOPE			"https://www.googleapis.com/auth/firebase.messaging"

/* What the FCM provider keeps per integration. */
typedef struct FcmState
{
	EVP_PKEY   *key;
	char	   *project_id;
	char	   *client_email;
	char	   *private_key_id;
	char	   *token_uri;
	char	   *send_url;
	char	   *access_token;	/* in the integration's context */
	TimestampTz token_expires;
} FcmState;

/* Free the OpenSSL key and wipe the access token when the integration's context goes away. */
static void
fcm_state_free(void *arg)
{
	FcmState   *st = arg;

	if (st->key)
		EVP_PKEY_free(st->key);
	st->key = NULL;
	crypto_free_secret(st->access_token);
	st->access_token = NULL;
}

/* Parse the service account once; false with *error if it cannot be used. */
static bool
fcm_prepare(Integration *ig, char **error)
{
	FcmState   *st = palloc0(sizeof(FcmState));
	MemoryContextCallback *cb = palloc(sizeof(MemoryContextCallback));
	JsonbValue	sa;
	JsonbContainer *c;
	char	   *pem;

	/* whatever happens below, the key and the token go with the integration */
	cb->func = fcm_state_free;
	cb->arg = st;
	MemoryContextRegisterResetCallback(ig->context, cb);
	if (!jsonb_container_get(&ig->credentials->root, "serviceAccount", &sa) || sa.type != jbvBinary)
	{
		*error = "serviceAccount is missing";
		return false;
	}
	c = sa.val.binary.data;
	st->project_id = jsonb_container_get_string(c, "project_id");
	st->client_email = jsonb_container_get_string(c, "client_email");
	st->private_key_id = jsonb_container_get_string(c, "private_key_id");
	st->token_uri = jsonb_container_get_string(c, "token_uri");
	if (st->token_uri == NULL)
		st->token_uri = FCM_DEFAULT_TOKEN_URI;
	pem = jsonb_container_get_string(c, "private_key");
	if (st->project_id == NULL || st->client_email == NULL || pem == NULL)
	{
		crypto_free_secret(pem);
		*error = "serviceAccount lacks project_id, client_email or private_key";
		return false;
	}
	st->key = crypto_load_private_key_pem(pem, error);
	/* the key lives in OpenSSL now: no copy of its PEM stays in memory */
	crypto_free_secret(pem);
	if (st->key == NULL)
		return false;

	st->send_url = psprintf("%s/v1/projects/%s/messages:send",
							novu_integration_base_url(ig, FCM_DEFAULT_BASE), st->project_id);
	ig->state = st;
	return true;
}

/* Append "key": "value" (JSON-escaped) to a JSON object being written. */
static void
json_pair(StringInfo buf, const char *key, const char *value, bool comma)
{
	if (comma)
		appendStringInfoChar(buf, ',');
	escape_json(buf, key);
	appendStringInfoChar(buf, ':');
	escape_json(buf, value);
}

/* Get an OAuth2 access token with a signed JWT assertion (RFC 7523). */
static bool
fcm_authorize(Integration *ig, bool force, Outcome *failure, char **error)
{
	FcmState   *st = ig->state;
	TimestampTz now = GetCurrentTimestamp();
	long		iat = (long) time(NULL);
	StringInfoData header;
	StringInfoData claims;
	char	   *jwt;
	HttpRequest *req;
	Jsonb	   *resp;
	char	   *token;
	long		expires_in = 3600;
	int32		given;
	MemoryContext old;

	if (!force && st->access_token != NULL && now < st->token_expires)
		return true;

	initStringInfo(&header);
	appendStringInfoChar(&header, '{');
	json_pair(&header, "alg", "RS256", false);
	json_pair(&header, "typ", "JWT", true);
	if (st->private_key_id)
		json_pair(&header, "kid", st->private_key_id, true);
	appendStringInfoChar(&header, '}');

	initStringInfo(&claims);
	appendStringInfoChar(&claims, '{');
	json_pair(&claims, "iss", st->client_email, false);
	json_pair(&claims, "scope", FCM_SCOPE, true);
	json_pair(&claims, "aud", st->token_uri, true);
	appendStringInfo(&claims, ",\"iat\":%ld,\"exp\":%ld}", iat, iat + 3600);

	jwt = jwt_sign_rs256(st->key, header.data, claims.data, error);
	if (jwt == NULL)
	{
		*failure = OUTCOME_CONFIG_ERROR;
		return false;
	}

	req = http_request_new(st->token_uri);
	http_add_header(req, "Content-Type: application/x-www-form-urlencoded");
	req->body = psprintf("grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-bearer&assertion=%s", jwt);
	req->body_len = strlen(req->body);
	http_run_one(ig->pool, req);
	http_request_free(req);

	if (req->result != CURLE_OK)
	{
		/* refused by the outbound URL policy: token_uri is misconfigured */
		*failure = req->policy_refused ? OUTCOME_CONFIG_ERROR : OUTCOME_RETRY;
		*error = psprintf("OAuth token request failed: %s", http_transport_error(req));
		return false;
	}
	resp = jsonb_parse_or_null(req->response.data, req->response.len);
	if (req->status != 200)
	{
		char	   *err = resp ? jsonb_container_get_string(&resp->root, "error") : NULL;
		char	   *desc = resp ? jsonb_container_get_string(&resp->root, "error_description") : NULL;

		*failure = req->status >= 500 || req->status == 429 ? OUTCOME_RETRY : OUTCOME_CONFIG_ERROR;
		*error = psprintf("OAuth token request failed: HTTP %ld %s%s%s", req->status,
						  err ? err : "", desc ? ": " : "", desc ? desc : "");
		return false;
	}
	token = resp ? jsonb_container_get_string(&resp->root, "access_token") : NULL;
	if (token == NULL)
	{
		*failure = OUTCOME_RETRY;
		*error = "OAuth token response has no access_token";
		return false;
	}
	/* it goes into the Authorization header: no line break, no control character */
	if (!novu_header_value_clean(token, strlen(token)))
	{
		*failure = OUTCOME_RETRY;
		*error = "OAuth token response has an access_token with control characters";
		return false;
	}
	/*
	 * The token server's lifetime, clamped to a minute .. a day: a huge value
	 * must not raise an error in the worker (int8 overflow), a zero or
	 * negative one must not make every batch fetch a token first.
	 */
	if (jsonb_container_get_int32(&resp->root, "expires_in", &given))
		expires_in = Min(Max(given, 60), 86400);

	/* renew five minutes early (or halfway through a short lifetime) */
	expires_in = expires_in > 600 ? expires_in - 300 : expires_in / 2;
	old = MemoryContextSwitchTo(ig->context);
	crypto_free_secret(st->access_token);
	st->access_token = pstrdup(token);
	MemoryContextSwitchTo(old);
	st->token_expires = TimestampTzPlusMilliseconds(now, expires_in * 1000);
	return true;
}

/* FCM data: every value a string (non-strings as their JSON text). */
static Jsonb *
stringify_values(JsonbContainer *c)
{
	JsonbParseState *state = NULL;
	JsonbIterator *it = JsonbIteratorInit(c);
	JsonbIteratorToken tok;
	JsonbValue	v;
	JsonbValue *result = NULL;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_VALUE && v.type != jbvString)
		{
			char	   *text = jsonb_value_to_text(&v);

			v.type = jbvString;
			v.val.string.val = text;
			v.val.string.len = strlen(text);
		}
		result = pushJsonbValue(&state, tok, tok < WJB_BEGIN_ARRAY ? &v : NULL);
	}
	return JsonbValueToJsonb(result);
}

/* Build the messages:send request of one message. */
static HttpRequest *
fcm_build(Integration *ig, Message **msgs, int n)
{
	FcmState   *st = ig->state;
	Message    *m = msgs[0];
	JsonbParseState *state = NULL;
	JsonbValue	v;
	Jsonb	   *message;
	HttpRequest *req;
	char	   *auth;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	jsonb_push_key(&state, "notification");
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	jsonb_push_string(&state, "title", m->title);
	jsonb_push_string(&state, "body", m->body);
	pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	message = JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));

	/* data (the payload), then overrides.fcm on top, then data values as strings */
	{
		JsonbParseState *ds = NULL;

		pushJsonbValue(&ds, WJB_BEGIN_OBJECT, NULL);
		jsonb_push_key(&ds, "data");
		v.type = jbvBinary;
		v.val.binary.data = &m->data->root;
		v.val.binary.len = VARSIZE(m->data) - VARHDRSZ;
		pushJsonbValue(&ds, WJB_VALUE, &v);
		message = jsonb_deep_merge(message, JsonbValueToJsonb(pushJsonbValue(&ds, WJB_END_OBJECT, NULL)));
	}
	message = jsonb_deep_merge(message, m->overrides);
	if (jsonb_container_get(&message->root, "data", &v) && v.type == jbvBinary &&
		JsonContainerIsObject(v.val.binary.data))
	{
		JsonbParseState *ds = NULL;
		Jsonb	   *data = stringify_values(v.val.binary.data);

		pushJsonbValue(&ds, WJB_BEGIN_OBJECT, NULL);
		jsonb_push_key(&ds, "data");
		v.type = jbvBinary;
		v.val.binary.data = &data->root;
		v.val.binary.len = VARSIZE(data) - VARHDRSZ;
		pushJsonbValue(&ds, WJB_VALUE, &v);
		message = jsonb_deep_merge(message, JsonbValueToJsonb(pushJsonbValue(&ds, WJB_END_OBJECT, NULL)));
	}
	/* the target last: whatever was merged, the message goes to this token */
	{
		JsonbParseState *ts = NULL;

		pushJsonbValue(&ts, WJB_BEGIN_OBJECT, NULL);
		jsonb_push_string(&ts, "token", m->target);
		message = jsonb_deep_merge(message, JsonbValueToJsonb(pushJsonbValue(&ts, WJB_END_OBJECT, NULL)));
	}

	req = http_request_new(st->send_url);
	req->body = psprintf("{\"message\":%s}", JsonbToCString(NULL, &message->root, VARSIZE(message)));
	req->body_len = strlen(req->body);
	http_add_header(req, "Content-Type: application/json");
	auth = psprintf("Authorization: Bearer %s", st->access_token);
	http_add_header(req, auth);
	req->owner = ig;
	return req;
}

/* The FcmError errorCode and ApnsError statusCode and reason in a google.rpc.Status body. */
static void
fcm_error_details(Jsonb *body, char **status, char **message, char **code, char **apns_status,
				  char **apns_reason)
{
	JsonbValue	err;
	JsonbValue	details;

	*status = *message = *code = *apns_status = *apns_reason = NULL;
	if (body == NULL || !jsonb_container_get(&body->root, "error", &err) || err.type != jbvBinary)
		return;
	*status = jsonb_container_get_string(err.val.binary.data, "status");
	*message = jsonb_container_get_string(err.val.binary.data, "message");
	if (jsonb_container_get(err.val.binary.data, "details", &details) && details.type == jbvBinary &&
		JsonContainerIsArray(details.val.binary.data))
	{
		JsonbIterator *it = JsonbIteratorInit(details.val.binary.data);
		JsonbIteratorToken tok;
		JsonbValue	d;

		while ((tok = JsonbIteratorNext(&it, &d, true)) != WJB_DONE)
		{
			char	   *type;

			if (tok != WJB_ELEM || d.type != jbvBinary)
				continue;
			type = jsonb_container_get_string(d.val.binary.data, "@type");
			if (type == NULL)
				continue;
			if (pg_str_endswith(type, "google.firebase.fcm.v1.FcmError"))
				*code = jsonb_container_get_string(d.val.binary.data, "errorCode");
			else if (pg_str_endswith(type, "google.firebase.fcm.v1.ApnsError"))
			{
				JsonbValue	sc;

				*apns_reason = jsonb_container_get_string(d.val.binary.data, "reason");
				if (jsonb_container_get(d.val.binary.data, "statusCode", &sc) &&
					(sc.type == jbvNumeric || sc.type == jbvString))
					*apns_status = jsonb_value_to_text(&sc);
			}
		}
	}
}

/*
 * FCM's explicit dead-token answers (PROTOCOLS.md section 7): the FcmError code
 * with the HTTP status it comes with.  The code alone decides; a status
 * without its code (a bare 404 from a wrong project or endpoint) does not.
 */
static const struct
{
	const char *code;
	long		status;
}			fcm_dead_codes[] = {
	{"UNREGISTERED", 404},
	{"SENDER_ID_MISMATCH", 403},
};

/* Whether an FCM error answer says the token itself is dead. */
static bool
fcm_token_dead(long status, const char *code, const char *message, const char *apns_status,
			   const char *apns_reason)
{
	int			i;

	for (i = 0; code != NULL && i < lengthof(fcm_dead_codes); i++)
	{
		if (strcmp(code, fcm_dead_codes[i].code) == 0)
			return status == fcm_dead_codes[i].status;
	}
	if (status != 400 || code == NULL || strcmp(code, "INVALID_ARGUMENT") != 0)
		return false;
	/* INVALID_ARGUMENT about the token itself */
	if (message != NULL && strstr(message, "registration token") != NULL)
		return true;
	/* the APNs token behind it is dead: ApnsError 410 Unregistered / ExpiredToken */
	return (apns_status != NULL && strcmp(apns_status, "410") == 0) ||
		(apns_reason != NULL && (strcmp(apns_reason, "Unregistered") == 0 || strcmp(apns_reason, "ExpiredToken") == 0));
}

/* Classify FCM's answer (PROTOCOLS.md 1.7 and 7). */
static void
fcm_classify(Integration *ig, HttpRequest *req, Message **msgs, int n)
{
	Message    *m = msgs[0];
	Jsonb	   *body;
	char	   *status;
	char	   *message;
	char	   *code;
	char	   *apns_status;
	char	   *apns_reason;
	char	   *reason;

	if (req->result != CURLE_OK)
	{
		novu_classify_transport(req, msgs, n);
		return;
	}
	body = jsonb_parse_or_null(req->response.data, req->response.len);
	if (req->status == 200)
	{
		m->provider_message_id = body ? jsonb_container_get_string(&body->root, "name") : NULL;
		novu_message_set(m, OUTCOME_SENT, NULL);
		return;
	}

	m->retry_after = http_retry_after_seconds(req->retry_after);
	fcm_error_details(body, &status, &message, &code, &apns_status, &apns_reason);
	reason = psprintf("%s%s%s", code ? code : (status ? status : psprintf("HTTP %ld", req->status)),
					  message ? ": " : "", message ? message : "");
	if (apns_reason)
		reason = psprintf("%s (APNs: %s)", reason, apns_reason);

	if (req->status == 429 || req->status >= 500)
	{
		/* QUOTA_EXCEEDED without Retry-After: back off a minute (Firebase's guidance) */
		if (code && strcmp(code, "QUOTA_EXCEEDED") == 0 && m->retry_after < 0)
			m->retry_after = 60;
		novu_message_set(m, OUTCOME_RETRY, reason);
	}
	else if (fcm_token_dead(req->status, code, message, apns_status, apns_reason))
		novu_message_set(m, OUTCOME_REMOVE_TOKEN, reason);
	else if (req->status == 401 && code == NULL)
		novu_message_set(m, OUTCOME_REAUTH, reason);	/* our access token: renew once */
	else if (req->status == 401 || req->status == 403 || req->status == 404)
		novu_message_set(m, OUTCOME_CONFIG_ERROR, reason);	/* wrong project, endpoint or credentials */
	else
		novu_message_set(m, OUTCOME_DROP, reason);
}

/* ---------------------------------------------------------------------------
 * SQL time: credentials, device tokens, overrides
 * ------------------------------------------------------------------------- */

#define FCM_TOKEN_URI_DEFAULT	"https://oauth2.googleapis.com/token"
#define FCM_TOKEN_MAX_LEN		4096

static const char *const fcm_keys[] = {"serviceAccount", "endpoint", NULL};
static const char *const fcm_sa_keys[] = {
	"type", "project_id", "private_key_id", "private_key", "client_email",
	"client_id", "auth_uri", "token_uri", "auth_provider_x509_cert_url",
	"client_x509_cert_url", "universe_domain", NULL
};

/* fcm: serviceAccount (object or JSON string) with an RSA private_key; optional endpoint. */
static void
fcm_validate(CredCheck *c)
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
		Jsonb	   *jb = cred_parse_json_object(v.val.string.val, v.val.string.len, &detail);

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

	cred_push_string(&sc, "project_id", cred_token(&sc, "project_id", true, sa_hint));
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

/* FCM: a registration token (base64url characters and ':'). */
static bool
fcm_token_check(const char *t, size_t len, const char **problem)
{
	size_t		i;

	if (len == 0 || len > FCM_TOKEN_MAX_LEN)
	{
		*problem = "does not have 1 to " CppAsString2(FCM_TOKEN_MAX_LEN) " characters";
		return false;
	}
	for (i = 0; i < len; i++)
	{
		if (!is_b64url(t[i]) && t[i] != ':')
		{
			*problem = "contains a character other than letters, digits, '-', '_' and ':'";
			return false;
		}
	}
	return true;
}

/* FCM: overrides.fcm merges into the HTTP v1 "message" (PROTOCOLS.md 1.5). */
static const FieldRule fcm_apns_fields[] = {
	HEADERS("headers", novu_apns_headers),
	ALLOW("payload", FIELD_OBJECT),
	ALLOW("fcm_options", FIELD_OBJECT),
	ALLOW("fcmOptions", FIELD_OBJECT),
	REFUSE("live_activity_token", "a Live Activity token is a target"),
	REFUSE("liveActivityToken", "a Live Activity token is a target"),
	OTHERS(FIELD_REFUSED)
};

static const FieldRule fcm_webpush_fields[] = {
	HEADERS("headers", novu_webpush_headers),
	ALLOW("data", FIELD_OBJECT),
	ALLOW("notification", FIELD_OBJECT),
	ALLOW("fcm_options", FIELD_OBJECT),
	ALLOW("fcmOptions", FIELD_OBJECT),
	OTHERS(FIELD_REFUSED)
};

static const FieldRule fcm_fields[] = {
	REFUSE("token", WHY_TOKEN),
	REFUSE("topic", "a topic would send it to every subscriber of that topic"),
	REFUSE("condition", "a condition would send it to every device matching it"),
	REFUSE("fid", "a Firebase installation id is a target"),
	REFUSE("name", "the message name is set by FCM"),
	ALLOW("notification", FIELD_OBJECT),
	ALLOW("data", FIELD_OBJECT),
	ALLOW("android", FIELD_OBJECT),
	NESTED("apns", fcm_apns_fields),
	NESTED("webpush", fcm_webpush_fields),
	ALLOW("fcm_options", FIELD_OBJECT),
	ALLOW("fcmOptions", FIELD_OBJECT),
	OTHERS(FIELD_REFUSED)
};

/* the service account's private key is the secret */
static const SecretField fcm_secrets[] = {
	{"serviceAccount", "private_key", NULL},
	{NULL, NULL, NULL}
};

const ProviderOps novu_fcm_provider = {
	.provider_id = "fcm",
	.label = "FCM",
	.channel = CHANNEL_PUSH,
	.credential_keys = fcm_keys,
	.validate = fcm_validate,
	.secrets = fcm_secrets,
	.token_check = fcm_token_check,
	.token_form = "An FCM registration token has 1 to 4096 letters, digits, '-', '_' and ':'.",
	.overrides = fcm_fields,
	.overrides_hint = "FCM overrides may set notification, data, android, apns (headers, payload, fcm_options), "
	"webpush (headers, data, notification, fcm_options) and fcm_options.",
	.max_batch = 1,
	.warm_up = false,
	.prepare = fcm_prepare,
	.authorize = fcm_authorize,
	.check = novu_message_check,
	.build = fcm_build,
	.classify = fcm_classify,
};
