/*
 * webpush.c
 *		Web Push (RFC 8030, RFC 8291 encryption, RFC 8292 VAPID; PROTOCOLS.md
 *		section 5): the target is the browser's PushSubscription JSON.
 *
 * Each message is one POST to the subscription's endpoint: the notification
 * JSON {"title", "body", "data"} with the overrides merged in (all but
 * "headers"), encrypted for the browser (aes128gcm: a fresh ECDH key and salt
 * per message, crypto.c), with the headers TTL (default 4 weeks), Urgency and
 * Topic from overrides.headers, and Authorization: vapid t=<JWT>, k=<public
 * key>.  The JWT (ES256; aud the endpoint's origin, exp 12 hours ahead, sub
 * the integration's subject) is made once per origin and reused for an hour
 * less than it lives.  201 (any 2xx) is accepted; 404 and 410 mean the
 * subscription expired or was withdrawn: it is removed; 413 and a notification
 * over 3993 bytes (one 4096-byte record) fail at once; 429 and 5xx retry
 * (Retry-After honoured); 401/403 are the VAPID configuration.
 */
#include "postgres.h"

#include <time.h>

#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "common/jsonb_util.h"
#include "crypto/crypto.h"
#include "crypto/envelope.h"
#include "net/netpolicy.h"
#include "providers/provider.h"
#include "providers/rules.h"
#include "providers/validate.h"

#define WEBPUSH_KEY_MAX_LEN		256

static const char *const webpush_keys[] = {"vapidPublicKey", "vapidPrivateKey", "subject", NULL};

/* web-push: a VAPID P-256 key pair as base64url raw keys, and a mailto:/https: subject. */
static void
webpush_validate(CredCheck *c)
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

	if (!((pg_strncasecmp(subject, "mailto:", 7) == 0 && subject[7] != '@' && strchr(subject + 7, '@') != NULL &&
		   strchr(subject + 7, '@')[1] != '\0') ||
		  (pg_strncasecmp(subject, "https://", 8) == 0 && subject[8] != '\0')))
		cred_fail(c, "subject", "must be a mailto:user@host or https:// URI", NULL, subject_hint);

	cred_push_string(c, "vapidPublicKey", base64url_encode(pub, publen));
	cred_push_string(c, "vapidPrivateKey", priv ? base64url_encode(priv, privlen) : priv_b64);
	cred_push_string(c, "subject", subject);
	if (priv != NULL)
		explicit_bzero(priv, privlen);	/* the stored text is sealed by the trigger */
}

/* Whether a string value of a jsonb object is base64url text (padding allowed) of bounded length. */
static bool
b64url_member(JsonbContainer *c, const char *key)
{
	JsonbValue	v;
	int			i;
	int			len;

	if (!jsonb_container_get(c, key, &v) || v.type != jbvString)
		return false;
	len = v.val.string.len;
	while (len > 0 && v.val.string.val[len - 1] == '=')
		len--;
	if (len == 0 || len > WEBPUSH_KEY_MAX_LEN)
		return false;
	for (i = 0; i < len; i++)
	{
		if (!is_b64url(v.val.string.val[i]))
			return false;
	}
	return true;
}

/*
 * Web Push: the browser's PushSubscription JSON: an https endpoint the URL
 * policy accepts, keys.p256dh and keys.auth as base64url; with keys, also that
 * p256dh is a P-256 point and auth 16 bytes (what is stored is checked in
 * full; the worker checks the shape again, and its encryption the key).
 */
static bool
webpush_subscription_check(Jsonb *sub, bool keys_too, const char **problem)
{
	JsonbValue	v;
	size_t		i;

	if (sub == NULL || JB_ROOT_IS_SCALAR(sub) || !JB_ROOT_IS_OBJECT(sub))
	{
		*problem = "is not a JSON object";
		return false;
	}
	if (!jsonb_container_get(&sub->root, "endpoint", &v) || v.type != jbvString ||
		v.val.string.len <= 8 || strncmp(v.val.string.val, "https://", 8) != 0)
	{
		*problem = "has no https:// endpoint";
		return false;
	}
	for (i = 0; i < v.val.string.len; i++)
	{
		unsigned char c = (unsigned char) v.val.string.val[i];

		if (c <= 0x20 || c == 0x7f)
		{
			*problem = "has an endpoint with a space or a control character";
			return false;
		}
	}
	{
		char	   *endpoint = pnstrdup(v.val.string.val, v.val.string.len);
		UrlProblem	err;

		if (netpolicy_check_url(endpoint, false, &err) == NULL)
		{
			*problem = psprintf("has an endpoint that %s", err.problem);
			return false;
		}
	}
	if (!jsonb_container_get(&sub->root, "keys", &v) || v.type != jbvBinary ||
		!JsonContainerIsObject(v.val.binary.data) ||
		!b64url_member(v.val.binary.data, "p256dh") || !b64url_member(v.val.binary.data, "auth"))
	{
		*problem = "lacks keys.p256dh and keys.auth as base64url strings";
		return false;
	}
	if (keys_too)
	{
		JsonbContainer *keys = v.val.binary.data;
		size_t		plen = 0;
		size_t		alen = 0;
		unsigned char *p256dh = base64url_decode(jsonb_container_get_string(keys, "p256dh"), &plen);
		unsigned char *auth = base64url_decode(jsonb_container_get_string(keys, "auth"), &alen);
		EVP_PKEY   *key;

		if (auth == NULL || alen != CRYPTO_WEBPUSH_AUTH_LEN)
		{
			*problem = "has a keys.auth that is not 16 bytes";
			return false;
		}
		if (p256dh == NULL || plen != CRYPTO_P256_PUBLIC_LEN || p256dh[0] != 0x04 ||
			(key = crypto_p256_key_from_raw(p256dh, plen, NULL, 0, NULL)) == NULL)
		{
			*problem = "has a keys.p256dh that is not a point on P-256 (65 bytes, uncompressed)";
			return false;
		}
		EVP_PKEY_free(key);
	}
	return true;
}

/* Web Push: the notification is free-form; the subscription is the target. */
static const FieldRule webpush_fields[] = {
	HEADERS("headers", novu_webpush_headers),
	REFUSE("endpoint", "the subscription's endpoint is the message's target"),
	REFUSE("keys", "the subscription's keys encrypt for its browser"),
	REFUSE("subscription", "the subscription is the message's target"),
	REFUSE("vapid*", "VAPID keys are the integration's credentials"),
	OTHERS(FIELD_ANY)
};

/* The subscription in full, keys included (SQL time). */
static bool
webpush_token_check(const char *t, size_t len, const char **problem)
{
	return webpush_subscription_check(jsonb_parse_or_null(t, (int) len), true, problem);
}

/*
 * The worker's check before building: the overrides allowlist.  The
 * subscription was checked in full when it was stored; build() parses it
 * anyway (once per message) and fails that message alone if it is unusable.
 */
static bool
webpush_message_check(Integration *ig, Message *m, char **reason)
{
	if (!novu_overrides_valid(ig->ops, m->overrides, reason))
	{
		*reason = psprintf("Override refused: %s", *reason);
		return false;
	}
	return true;
}

/* the VAPID private key is the secret; a new public key needs it again */
static const SecretField webpush_secrets[] = {
	{NULL, "vapidPrivateKey", "vapidPublicKey"},
	{NULL, NULL, NULL}
};

/* ---------------------------------------------------------------------------
 * Delivery
 * ------------------------------------------------------------------------- */

#define WEBPUSH_DEFAULT_TTL		2419200 /* seconds: 4 weeks, as push services keep at most */
#define VAPID_LIFETIME_S		(12 * 3600) /* exp this far ahead (RFC 8292: at most 24 h) */
#define VAPID_RENEW_S			3600	/* made anew this long before it expires */
#define VAPID_MAX_ORIGINS		64		/* JWTs kept per integration */

/* A VAPID JWT made for one origin. */
typedef struct VapidToken
{
	char	   *origin;
	char	   *header;			/* "Authorization: vapid t=<jwt>, k=<key>" */
	long		exp;
	uint64		used;			/* when last used, in st->uses */
} VapidToken;

/* What Web Push keeps per integration. */
typedef struct WebPushState
{
	EVP_PKEY   *key;
	char	   *public_b64;
	char	   *subject;
	VapidToken	tokens[VAPID_MAX_ORIGINS];
	int			ntokens;
	uint64		uses;			/* lookups so far: the clock of VapidToken.used */
	MemoryContext context;		/* the integration's: where tokens live */
} WebPushState;

/* Free the VAPID key and wipe the JWTs when the integration's context goes away. */
static void
webpush_state_free(void *arg)
{
	WebPushState *st = arg;
	int			i;

	if (st->key)
		EVP_PKEY_free(st->key);
	st->key = NULL;
	for (i = 0; i < st->ntokens; i++)
	{
		crypto_free_secret(st->tokens[i].header);
		st->tokens[i].header = NULL;
	}
	st->ntokens = 0;
}

/* Load the VAPID key pair and the subject. */
static bool
webpush_prepare(Integration *ig, char **error)
{
	WebPushState *st = palloc0(sizeof(WebPushState));
	MemoryContextCallback *cb = palloc(sizeof(MemoryContextCallback));
	char	   *pub = jsonb_container_get_string(&ig->credentials->root, "vapidPublicKey");
	char	   *priv = jsonb_container_get_string(&ig->credentials->root, "vapidPrivateKey");

	cb->func = webpush_state_free;
	cb->arg = st;
	MemoryContextRegisterResetCallback(ig->context, cb);
	st->subject = jsonb_container_get_string(&ig->credentials->root, "subject");
	if (pub == NULL || priv == NULL || st->subject == NULL)
	{
		crypto_free_secret(priv);
		*error = pstrdup("vapidPublicKey, vapidPrivateKey and subject are required");
		return false;
	}
	st->key = crypto_vapid_key(pub, priv, error);
	/* the key lives in OpenSSL now: no copy of it stays in memory */
	crypto_free_secret(priv);
	if (st->key == NULL)
		return false;
	st->public_b64 = pub;
	st->context = CurrentMemoryContext;
	ig->state = st;
	return true;
}

/* The origin (scheme://host[:port]) of an https URL, or NULL. */
static char *
url_origin(const char *url)
{
	const char *host;
	size_t		len;

	char	   *origin;
	char	   *port;
	size_t		i;

	if (pg_strncasecmp(url, "https://", 8) != 0)
		return NULL;
	host = url + 8;
	len = strcspn(host, "/?#");
	if (len == 0)
		return NULL;
	/* serialized as RFC 6454 says: the host in lower case, no default port */
	origin = psprintf("https://%.*s", (int) len, host);
	for (i = 8; origin[i] != '\0'; i++)
		origin[i] = pg_ascii_tolower((unsigned char) origin[i]);
	port = strrchr(origin + 8, ':');
	if (port != NULL && strchr(port, ']') == NULL)
	{
		char	   *p = port + 1;

		while (*p == '0')
			p++;
		if (port[1] == '\0' || strcmp(p, "443") == 0)
			*port = '\0';
	}
	return origin;
}

/* The Authorization header for an origin: a cached JWT, or a new one. */
static const char *
vapid_header(WebPushState *st, const char *origin, char **error)
{
	long		now = (long) time(NULL);
	VapidToken *t = NULL;
	StringInfoData claims;
	char	   *jwt;
	MemoryContext old;
	int			i;

	st->uses++;
	for (i = 0; i < st->ntokens; i++)
	{
		if (strcmp(st->tokens[i].origin, origin) == 0)
		{
			t = &st->tokens[i];
			t->used = st->uses;
			if (now < t->exp - VAPID_RENEW_S)
				return t->header;
			break;
		}
	}
	initStringInfo(&claims);
	appendStringInfoString(&claims, "{\"aud\":");
	escape_json(&claims, origin);
	appendStringInfo(&claims, ",\"exp\":%ld,\"sub\":", now + VAPID_LIFETIME_S);
	escape_json(&claims, st->subject);
	appendStringInfoChar(&claims, '}');
	jwt = jwt_sign_es256(st->key, "{\"typ\":\"JWT\",\"alg\":\"ES256\"}", claims.data, error);
	if (jwt == NULL)
		return NULL;

	old = MemoryContextSwitchTo(st->context);
	if (t == NULL)
	{
		/*
		 * Origins are few (one per push service), but endpoints come from
		 * browsers: a full cache gives up the token used least recently, and
		 * frees it (the integration's memory stays bounded however many
		 * origins the subscriptions name).
		 */
		if (st->ntokens < VAPID_MAX_ORIGINS)
			t = &st->tokens[st->ntokens++];
		else
		{
			t = &st->tokens[0];
			for (i = 1; i < st->ntokens; i++)
				if (st->tokens[i].used < t->used)
					t = &st->tokens[i];
			pfree(t->origin);
			crypto_free_secret(t->header);
		}
		t->origin = pstrdup(origin);
		t->used = st->uses;
	}
	else
		crypto_free_secret(t->header);
	t->header = psprintf("Authorization: vapid t=%s, k=%s", jwt, st->public_b64);
	t->exp = now + VAPID_LIFETIME_S;
	MemoryContextSwitchTo(old);
	return t->header;
}

/* The notification the browser decrypts: title, body, data, then the overrides but headers. */
static char *
webpush_plaintext(Message *m)
{
	JsonbParseState *state = NULL;
	Jsonb	   *note;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	jsonb_push_string(&state, "title", m->title ? m->title : "");
	jsonb_push_string(&state, "body", m->body ? m->body : "");
	if (m->data != NULL)
		jsonb_push_jsonb(&state, "data", m->data);
	note = JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
	if (m->overrides != NULL)
	{
		Jsonb	   *ov = DatumGetJsonbP(DirectFunctionCall2(jsonb_delete, JsonbPGetDatum(m->overrides),
															CStringGetTextDatum("headers")));

		note = jsonb_deep_merge(note, ov);
	}
	return JsonbToCString(NULL, &note->root, VARSIZE(note));
}

/* Add TTL (always), Urgency and Topic from overrides.headers (names any case, checked before). */
static void
webpush_headers(HttpRequest *req, Message *m)
{
	JsonbValue	headers;
	bool		ttl = false;

	if (m->overrides != NULL &&
		jsonb_container_get(&m->overrides->root, "headers", &headers) && headers.type == jbvBinary &&
		JsonContainerIsObject(headers.val.binary.data))
	{
		JsonbIterator *it = JsonbIteratorInit(headers.val.binary.data);
		JsonbIteratorToken tok;
		JsonbValue	k;
		JsonbValue	v;

		while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
		{
			const HeaderRule *rule;
			char	   *value;

			if (tok != WJB_KEY)
				continue;
			(void) JsonbIteratorNext(&it, &v, true);
			rule = novu_header_rule(novu_webpush_headers, k.val.string.val, k.val.string.len);
			value = v.type == jbvString || v.type == jbvNumeric ? jsonb_value_to_text(&v) : NULL;
			if (rule == NULL || value == NULL || !novu_header_value_clean(value, strlen(value)) ||
				!rule->check(value, strlen(value)))
				continue;		/* stored by an older version: check() refused it already */
			http_add_header(req, psprintf("%s: %s", rule->name, value));
			if (strcmp(rule->name, "ttl") == 0)
				ttl = true;
		}
	}
	if (!ttl)
		http_add_header(req, "TTL: " CppAsString2(WEBPUSH_DEFAULT_TTL));
}

/* Build the encrypted, VAPID-signed request of one message. */
static HttpRequest *
webpush_build(Integration *ig, Message **msgs, int n)
{
	WebPushState *st = ig->state;
	Message    *m = msgs[0];
	Jsonb	   *sub = jsonb_parse_or_null(m->target, strlen(m->target));
	const char *problem = NULL;
	JsonbValue	keys;
	char	   *endpoint;
	char	   *origin;
	unsigned char *p256dh;
	unsigned char *auth;
	size_t		plen = 0;
	size_t		alen = 0;
	char	   *plaintext;
	unsigned char *body;
	size_t		body_len = 0;
	const char *authorization;
	char	   *error = NULL;
	HttpRequest *req;

	if (!webpush_subscription_check(sub, false, &problem))
	{
		novu_message_set(m, OUTCOME_DROP, psprintf("Invalid device token: the subscription %s",
												   problem ? problem : "is not a JSON object"));
		return NULL;
	}
	endpoint = jsonb_container_get_string(&sub->root, "endpoint");
	origin = url_origin(endpoint);
	if (origin == NULL || !jsonb_container_get(&sub->root, "keys", &keys) || keys.type != jbvBinary)
	{
		novu_message_set(m, OUTCOME_DROP, "Invalid subscription: no https endpoint or no keys");
		return NULL;
	}
	p256dh = base64url_decode(jsonb_container_get_string(keys.val.binary.data, "p256dh"), &plen);
	auth = base64url_decode(jsonb_container_get_string(keys.val.binary.data, "auth"), &alen);
	if (p256dh == NULL || auth == NULL)
	{
		novu_message_set(m, OUTCOME_DROP, "Invalid subscription: keys.p256dh or keys.auth is not base64url");
		return NULL;
	}

	plaintext = webpush_plaintext(m);
	if (strlen(plaintext) > CRYPTO_WEBPUSH_MAX_PLAINTEXT)
	{
		novu_message_set(m, OUTCOME_DROP,
						 psprintf("PayloadTooLarge: the notification is %zu bytes; one Web Push record holds %d",
								  strlen(plaintext), CRYPTO_WEBPUSH_MAX_PLAINTEXT));
		return NULL;
	}
	body = crypto_webpush_encrypt(p256dh, plen, auth, alen, (unsigned char *) plaintext, strlen(plaintext),
								  &body_len, &error);
	if (body == NULL)
	{
		novu_message_set(m, OUTCOME_DROP, psprintf("Invalid subscription: %s", error ? error : "encryption failed"));
		return NULL;
	}
	authorization = vapid_header(st, origin, &error);
	if (authorization == NULL)
	{
		novu_message_set(m, OUTCOME_CONFIG_ERROR, psprintf("VAPID JWT: %s", error ? error : "signing failed"));
		return NULL;
	}

	req = http_request_new(endpoint);
	req->owner = ig;
	req->id_header = "location";
	http_add_header(req, authorization);
	http_add_header(req, "Content-Encoding: aes128gcm");
	http_add_header(req, "Content-Type: application/octet-stream");
	webpush_headers(req, m);
	req->body = (char *) body;
	req->body_len = body_len;
	return req;
}

/* Outcome of the push service's answer. */
static void
webpush_classify(Integration *ig, HttpRequest *req, Message **msgs, int n)
{
	Message    *m = msgs[0];
	char	   *text;

	if (req->result != CURLE_OK)
	{
		novu_classify_transport(req, msgs, n);
		return;
	}
	text = pnstrdup(req->response.data, Min(req->response.len, 120));
	m->retry_after = http_retry_after_seconds(req->retry_after);
	if (req->status >= 200 && req->status < 300)
	{
		m->provider_message_id = req->id_value;
		novu_message_set(m, OUTCOME_SENT, NULL);
	}
	else if (req->status == 404 || req->status == 410)
		novu_message_set(m, OUTCOME_REMOVE_TOKEN,
						 psprintf("HTTP %ld: the subscription %s", req->status,
								  req->status == 404 ? "expired" : "was withdrawn"));
	else if (req->status == 413)
		novu_message_set(m, OUTCOME_DROP, psprintf("PayloadTooLarge: HTTP 413 %s", text));
	else if (req->status == 429 || req->status >= 500)
		novu_message_set(m, OUTCOME_RETRY, psprintf("HTTP %ld %s", req->status, text));
	else if (req->status == 401 || req->status == 403)
		novu_message_set(m, OUTCOME_CONFIG_ERROR, psprintf("HTTP %ld (VAPID refused) %s", req->status, text));
	else
		novu_message_set(m, OUTCOME_DROP, psprintf("HTTP %ld %s", req->status, text));
}

const ProviderOps novu_webpush_provider = {
	.provider_id = "web-push",
	.label = "web-push",
	.channel = CHANNEL_PUSH,
	.credential_keys = webpush_keys,
	.validate = webpush_validate,
	.secrets = webpush_secrets,
	.token_check = webpush_token_check,
	.token_form = "A web-push token is the browser's PushSubscription JSON: {\"endpoint\": \"https://...\", \"keys\": {\"p256dh\": \"...\", \"auth\": \"...\"}}.",
	.overrides = webpush_fields,
	.overrides_hint = "Web Push overrides may set notification fields and the headers TTL, Urgency and Topic.",
	.max_batch = 1,
	.prepare = webpush_prepare,
	.check = webpush_message_check,
	.build = webpush_build,
	.classify = webpush_classify,
};
