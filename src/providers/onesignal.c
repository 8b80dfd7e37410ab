/*
 * onesignal.c
 *		OneSignal (PROTOCOLS.md section 4): the integration's App ID and REST
 *		API key; a subscriber's device tokens are OneSignal subscription ids.
 *
 * Messages with identical content (title, body, data, overrides, attempt)
 * share one request of up to 2000 include_subscription_ids: {"app_id",
 * "include_subscription_ids", "headings": {"en"}, "contents": {"en"}, "data",
 * "idempotency_key"} with overrides.one-signal merged in (targeting fields are
 * refused) and the target fields set last.  The idempotency key is derived
 * from the integration and the deliveries the request first carries
 * (ProviderOps.request_key): the pipeline records it before sending, and a
 * retry is the same request with the same key, so OneSignal answers it from
 * its first result and delivers nothing twice (keys are kept 30 days).  A
 * retry that lost messages meanwhile (canceled, ...) keeps the key: if the
 * first request was processed, its ids had it, and a new key would deliver it
 * again; if not, the key is new to OneSignal and the rest get it once.  Keys
 * of the current form (os_v2_...) go to
 * https://api.onesignal.com/notifications with "Authorization: Key"; others to
 * the legacy https://onesignal.com/api/v1/notifications with "Basic".
 *
 * 200 with an id is accepted; its errors.invalid_player_ids are pruned, only
 * those.  200 without an id ("All included players are not subscribed")
 * drops the messages; 400 drops them, 401/403 are the configuration, 429 and
 * 5xx retry (Retry-After honoured).
 */
#include "postgres.h"

#include "access/xlog.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "common/jsonb_util.h"
#include "crypto/crypto.h"
#include "crypto/envelope.h"
#include "net/netpolicy.h"
#include "providers/provider.h"
#include "providers/rules.h"
#include "providers/validate.h"

static const char *const onesignal_keys[] = {"applicationId", "apiKey", "endpoint", NULL};

/* one-signal: applicationId and apiKey, optional endpoint. */
static void
onesignal_validate(CredCheck *c)
{
	cred_check_keys(c);
	cred_push_string(c, "applicationId",
					 cred_token(c, "applicationId", true, "applicationId is the OneSignal App ID."));
	cred_push_string(c, "apiKey",
					 cred_token(c, "apiKey", true, "apiKey is the OneSignal REST API key."));
	cred_endpoint(c);
}

/*
 * OneSignal: targeting fields are refused, the older names and the other
 * channels' too (email_to, tags, channel_for_external_user_ids), and the
 * idempotency key with its deprecated alias (external_id): it is the
 * worker's, what makes a retry safe.  Content fields are free (OneSignal
 * has a hundred, per platform).
 */
static const FieldRule onesignal_fields[] = {
	REFUSE("app_id", "the app is the integration's applicationId"),
	REFUSE("include*", "targeting fields choose the recipients"),
	REFUSE("exclude*", "targeting fields choose the recipients"),
	REFUSE("filters", "targeting fields choose the recipients"),
	REFUSE("tags", "targeting fields choose the recipients"),
	REFUSE("target_channel", "targeting fields choose the recipients"),
	REFUSE("channel_for_external_user_ids", "targeting fields choose the recipients"),
	REFUSE("email_to", "targeting fields choose the recipients"),
	REFUSE("idempotency_key", "the worker sets the idempotency key: it is what makes a retry safe"),
	REFUSE("external_id", "the worker sets the idempotency key (external_id is its old name)"),
	OTHERS(FIELD_ANY)
};

/* OneSignal: a subscription id is a UUID. */
static bool
onesignal_token_check(const char *t, size_t len, const char **problem)
{
	if (!novu_is_uuid(t, len))
	{
		*problem = "is not a UUID (8-4-4-4-12 hex digits)";
		return false;
	}
	return true;
}

/* the REST API key is the secret */
static const SecretField onesignal_secrets[] = {
	{NULL, "apiKey", NULL},
	{NULL, NULL, NULL}
};

/* ---------------------------------------------------------------------------
 * Delivery
 * ------------------------------------------------------------------------- */

#define ONESIGNAL_DEFAULT_BASE		"https://api.onesignal.com"
#define ONESIGNAL_LEGACY_BASE		"https://onesignal.com"
#define ONESIGNAL_MAX_IDS			2000

/* What OneSignal keeps per integration. */
typedef struct OneSignalState
{
	char	   *url;
	char	   *auth_header;
	char	   *app_id;
	int64		integration_id;
} OneSignalState;

/* Read the App ID and the key; the key's form says which API it belongs to. */
static bool
onesignal_prepare(Integration *ig, char **error)
{
	OneSignalState *st = palloc0(sizeof(OneSignalState));
	char	   *key = jsonb_container_get_string(&ig->credentials->root, "apiKey");
	bool		current;

	st->app_id = jsonb_container_get_string(&ig->credentials->root, "applicationId");
	if (key == NULL || st->app_id == NULL)
	{
		*error = pstrdup("applicationId and apiKey are required");
		return false;
	}
	current = strncmp(key, "os_v2_", 6) == 0;
	st->url = current
		? psprintf("%s/notifications", novu_integration_base_url(ig, ONESIGNAL_DEFAULT_BASE))
		: psprintf("%s/api/v1/notifications", novu_integration_base_url(ig, ONESIGNAL_LEGACY_BASE));
	st->auth_header = psprintf("Authorization: %s %s", current ? "Key" : "Basic", key);
	st->integration_id = ig->id;
	ig->state = st;
	return true;
}

/* Whether two jsonb values are the same (NULL equals NULL). */
static bool
jsonb_same(Jsonb *a, Jsonb *b)
{
	if (a == b)
		return true;
	if (a == NULL || b == NULL || VARSIZE(a) != VARSIZE(b))
		return false;
	return memcmp(a, b, VARSIZE(a)) == 0;
}

/* Messages share a request when their content and attempt are the same. */
static bool
onesignal_same_request(Message *a, Message *b)
{
	return a->attempts == b->attempts &&
		strcmp(a->title ? a->title : "", b->title ? b->title : "") == 0 &&
		strcmp(a->body ? a->body : "", b->body ? b->body : "") == 0 &&
		jsonb_same(a->data, b->data) && jsonb_same(a->overrides, b->overrides);
}

/* A language map {"en": text}. */
static void
push_language_map(JsonbParseState **state, const char *key, const char *text)
{
	jsonb_push_key(state, key);
	pushJsonbValue(state, WJB_BEGIN_OBJECT, NULL);
	jsonb_push_string(state, "en", text);
	pushJsonbValue(state, WJB_END_OBJECT, NULL);
}

/*
 * The idempotency key of a new request: a UUID from HMAC-SHA-256 over the
 * integration and the delivery ids it carries, in order, and their
 * transactionIds (NULL if it cannot be computed).  Derived, not drawn: a
 * retry whose stored key was lost in a crash makes the same key again.  The
 * ids are bigserials: the cluster's system identifier and the database's OID
 * keep two databases on one OneSignal app (staging and production, tenants,
 * a copy made with pg_dump) from making each other's keys, and the
 * transactionIds keep a database restored to an earlier point from making
 * its lost future's keys again.  OneSignal answers a key it has seen in the
 * last 30 days with that old result, and nothing would be delivered.
 */
static char *
onesignal_request_key(Integration *ig, Message **msgs, int n)
{
	OneSignalState *st = ig->state;
	StringInfoData buf;
	unsigned char mac[CRYPTO_SHA256_LEN];
	static const char *const key = "novu one-signal idempotency v1";
	int			i;

	initStringInfo(&buf);
	appendStringInfo(&buf, UINT64_FORMAT ":%u:" INT64_FORMAT,
					 GetSystemIdentifier(), MyDatabaseId, st->integration_id);
	for (i = 0; i < n; i++)
		appendStringInfo(&buf, ":" INT64_FORMAT ":%s", msgs[i]->id,
						 msgs[i]->transaction_id ? msgs[i]->transaction_id : "");
	if (!crypto_hmac_sha256((const unsigned char *) key, strlen(key), (unsigned char *) buf.data, buf.len, mac))
		return NULL;
	mac[6] = (mac[6] & 0x0f) | 0x40;	/* the form of a version 4 UUID */
	mac[8] = (mac[8] & 0x3f) | 0x80;
	return psprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
					mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], mac[6], mac[7],
					mac[8], mac[9], mac[10], mac[11], mac[12], mac[13], mac[14], mac[15]);
}

/* Build one notification for up to 2000 messages of identical content. */
static HttpRequest *
onesignal_build(Integration *ig, Message **msgs, int n)
{
	OneSignalState *st = ig->state;
	Message    *m = msgs[0];
	JsonbParseState *state = NULL;
	JsonbValue	v;
	Jsonb	   *body;
	char	   *key = m->request_key;	/* the pipeline's (ProviderOps.request_key) */
	HttpRequest *req;
	int			i;

	if (key == NULL)
	{
		novu_messages_set(msgs, n, OUTCOME_RETRY, "could not derive the idempotency key");
		return NULL;
	}
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	if (m->title != NULL && m->title[0] != '\0')
		push_language_map(&state, "headings", m->title);
	push_language_map(&state, "contents", m->body ? m->body : "");
	if (m->data != NULL)
		jsonb_push_jsonb(&state, "data", m->data);
	body = JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
	if (m->overrides != NULL)
		body = jsonb_deep_merge(body, m->overrides);

	/* the app, the recipients and the key last: nothing merged can change them */
	state = NULL;
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	jsonb_push_string(&state, "app_id", st->app_id);
	jsonb_push_key(&state, "include_subscription_ids");
	pushJsonbValue(&state, WJB_BEGIN_ARRAY, NULL);
	for (i = 0; i < n; i++)
	{
		v.type = jbvString;
		v.val.string.val = msgs[i]->target;
		v.val.string.len = strlen(msgs[i]->target);
		pushJsonbValue(&state, WJB_ELEM, &v);
	}
	pushJsonbValue(&state, WJB_END_ARRAY, NULL);
	jsonb_push_string(&state, "idempotency_key", key);
	body = jsonb_deep_merge(body, JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL)));

	req = novu_json_request(ig, st->url, body);
	http_add_header(req, "Accept: application/json");
	http_add_header(req, st->auth_header);
	return req;
}

/* The first text of an "errors" array, or NULL. */
static char *
first_error(Jsonb *body)
{
	JsonbValue	errors;
	JsonbValue *first;

	if (body == NULL || !jsonb_container_get(&body->root, "errors", &errors) || errors.type != jbvBinary ||
		!JsonContainerIsArray(errors.val.binary.data))
		return NULL;
	first = getIthJsonbValueFromContainer(errors.val.binary.data, 0);
	return first != NULL && first->type == jbvString ? pnstrdup(first->val.string.val, first->val.string.len) : NULL;
}

/* Whether a subscription id is listed in errors.invalid_player_ids. */
static bool
listed_invalid(Jsonb *body, const char *id)
{
	JsonbValue	errors;
	JsonbValue	ids;
	JsonbValue	want;

	if (body == NULL || !jsonb_container_get(&body->root, "errors", &errors) || errors.type != jbvBinary ||
		!JsonContainerIsObject(errors.val.binary.data) ||
		!jsonb_container_get(errors.val.binary.data, "invalid_player_ids", &ids) || ids.type != jbvBinary ||
		!JsonContainerIsArray(ids.val.binary.data))
		return false;
	want.type = jbvString;
	want.val.string.val = (char *) id;
	want.val.string.len = strlen(id);
	return findJsonbValueFromContainer(ids.val.binary.data, JB_FARRAY, &want) != NULL;
}

/* Outcome of OneSignal's answer, per subscription id. */
static void
onesignal_classify(Integration *ig, HttpRequest *req, Message **msgs, int n)
{
	Jsonb	   *body;
	char	   *id;
	char	   *error;
	int			i;

	if (req->result != CURLE_OK)
	{
		novu_classify_transport(req, msgs, n);
		return;
	}
	body = jsonb_parse_object_or_null(req->response.data, req->response.len);
	error = first_error(body);
	for (i = 0; i < n; i++)
		msgs[i]->retry_after = http_retry_after_seconds(req->retry_after);
	if (req->status == 429 || req->status >= 500 || (req->status == 200 && body == NULL))
	{
		novu_messages_set(msgs, n, OUTCOME_RETRY,
						  psprintf("HTTP %ld%s%s", req->status, error ? ": " : "", error ? error : ""));
		return;
	}
	if (req->status == 401 || req->status == 403)
	{
		novu_messages_set(msgs, n, OUTCOME_CONFIG_ERROR,
						  psprintf("HTTP %ld%s%s", req->status, error ? ": " : "", error ? error : ""));
		return;
	}
	if (req->status != 200)
	{
		novu_messages_set(msgs, n, OUTCOME_DROP,
						  psprintf("HTTP %ld%s%s", req->status, error ? ": " : "", error ? error : ""));
		return;
	}
	id = jsonb_container_get_string(&body->root, "id");
	for (i = 0; i < n; i++)
	{
		if (listed_invalid(body, msgs[i]->target))
			novu_message_set(msgs[i], OUTCOME_REMOVE_TOKEN, "invalid_player_ids: the subscription id is not valid");
		else if (id == NULL || id[0] == '\0')
			novu_message_set(msgs[i], OUTCOME_DROP, error ? error : "no notification was created");
		else
		{
			msgs[i]->provider_message_id = id;
			novu_message_set(msgs[i], OUTCOME_SENT, NULL);
		}
	}
}

const ProviderOps novu_onesignal_provider = {
	.provider_id = "one-signal",
	.label = "OneSignal",
	.channel = CHANNEL_PUSH,
	.credential_keys = onesignal_keys,
	.validate = onesignal_validate,
	.secrets = onesignal_secrets,
	.overrides = onesignal_fields,
	.overrides_hint = "OneSignal overrides may set content fields (headings, contents, data, ...), not targeting fields.",
	.token_check = onesignal_token_check,
	.token_form = "A OneSignal subscription id: a UUID such as 1dd608f2-c6a1-11e3-851d-000c2940e62c.",
	.max_batch = ONESIGNAL_MAX_IDS,
	.prepare = onesignal_prepare,
	.check = novu_message_check,
	.build = onesignal_build,
	.classify = onesignal_classify,
	.same_request = onesignal_same_request,
	.request_key = onesignal_request_key,
};
