/*
 * push_webhook.c
 *		Novu's push webhook (PROTOCOLS.md section 4a): the notification is
 *		POSTed to the integration's webhookUrl, signed with X-Novu-Signature.
 *
 * One request per device token, body
 *	{"target": [token], "title", "content", "overrides": {...},
 *	 "payload": {...trigger payload, "subscriber": {...}, "step": {...}}}
 * and the header X-Novu-Signature: the lowercase hex HMAC-SHA256 of the exact
 * body bytes, keyed with the integration's secretKey.  2xx is delivered (a
 * JSON "id" in the answer is the provider message id); 429, 5xx and transport
 * errors retry (Retry-After honoured); 401/403 are the integration's
 * configuration (the receiver refuses our signature); 404/410 and other 4xx
 * drop the message: a receiver saying "gone" is not proof the device token is
 * dead, so the token is kept.
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "common/jsonb_util.h"
#include "crypto/crypto.h"
#include "crypto/envelope.h"
#include "net/netpolicy.h"
#include "providers/provider.h"
#include "providers/rules.h"
#include "providers/validate.h"

static const char *const push_webhook_keys[] = {"webhookUrl", "secretKey", NULL};

/* push-webhook: webhookUrl (https URL) and secretKey (HMAC key). */
static void
push_webhook_validate(CredCheck *c)
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

/* Push webhook: the overrides travel in the body; the target and the URL do not change. */
static const FieldRule push_webhook_fields[] = {
	REFUSE("target", WHY_TOKEN),
	REFUSE("webhookUrl", "the URL is the integration's webhookUrl"),
	OTHERS(FIELD_ANY)
};

/* the HMAC key is the secret */
static const SecretField push_webhook_secrets[] = {
	{NULL, "secretKey", NULL},
	{NULL, NULL, NULL}
};

/* ---------------------------------------------------------------------------
 * Delivery
 * ------------------------------------------------------------------------- */

/* What the push webhook keeps per integration. */
typedef struct PushWebhookState
{
	char	   *url;
	char	   *secret;
} PushWebhookState;

/* Read the URL and the HMAC key. */
static bool
push_webhook_prepare(Integration *ig, char **error)
{
	PushWebhookState *st = palloc0(sizeof(PushWebhookState));

	st->url = jsonb_container_get_string(&ig->credentials->root, "webhookUrl");
	st->secret = jsonb_container_get_string(&ig->credentials->root, "secretKey");
	if (st->url == NULL || st->secret == NULL)
	{
		*error = pstrdup("webhookUrl and secretKey are required");
		return false;
	}
	ig->state = st;
	return true;
}

/* Push a jsonb value (NULL: an empty object) under key. */
static void
push_jsonb(JsonbParseState **state, const char *key, Jsonb *value)
{
	JsonbValue	v;

	jsonb_push_key(state, key);
	if (value == NULL)
		value = jsonb_empty_object();
	v.type = jbvBinary;
	v.val.binary.data = &value->root;
	v.val.binary.len = VARSIZE(value) - VARHDRSZ;
	pushJsonbValue(state, WJB_VALUE, &v);
}

/* The body Novu's push webhook receives for one message. */
static char *
push_webhook_body(Message *m)
{
	JsonbParseState *state = NULL;
	JsonbValue	v;
	JsonbValue *root;
	Jsonb	   *payload;

	/* payload: the trigger payload, then subscriber and step as Novu adds them */
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	push_jsonb(&state, "subscriber", m->subscriber);
	jsonb_push_key(&state, "step");
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	jsonb_push_bool(&state, "digest", false);
	jsonb_push_key(&state, "events");
	pushJsonbValue(&state, WJB_BEGIN_ARRAY, NULL);
	pushJsonbValue(&state, WJB_END_ARRAY, NULL);
	jsonb_push_key(&state, "total_count");
	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(1);
	pushJsonbValue(&state, WJB_VALUE, &v);
	pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	payload = JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
	payload = jsonb_deep_merge(m->data ? m->data : jsonb_empty_object(), payload);

	state = NULL;
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	jsonb_push_key(&state, "target");
	pushJsonbValue(&state, WJB_BEGIN_ARRAY, NULL);
	v.type = jbvString;
	v.val.string.val = m->target;
	v.val.string.len = strlen(m->target);
	pushJsonbValue(&state, WJB_ELEM, &v);
	pushJsonbValue(&state, WJB_END_ARRAY, NULL);
	jsonb_push_string(&state, "title", m->title ? m->title : "");
	jsonb_push_string(&state, "content", m->body ? m->body : "");
	push_jsonb(&state, "overrides", m->overrides);
	push_jsonb(&state, "payload", payload);
	root = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbToCString(NULL, &JsonbValueToJsonb(root)->root, 0);
}

/* Build one signed request for one message. */
static HttpRequest *
push_webhook_build(Integration *ig, Message **msgs, int n)
{
	PushWebhookState *st = ig->state;
	char	   *body = push_webhook_body(msgs[0]);
	char	   *signature = crypto_hmac_sha256_hex(st->secret, strlen(st->secret), body, strlen(body));
	HttpRequest *req;

	if (signature == NULL)
	{
		novu_message_set(msgs[0], OUTCOME_RETRY, "could not compute the HMAC signature");
		return NULL;
	}
	req = http_request_new(st->url);
	req->owner = ig;
	http_add_header(req, "Content-Type: application/json");
	http_add_header(req, psprintf("X-Novu-Signature: %s", signature));
	req->body = body;
	req->body_len = strlen(body);
	return req;
}

/* Outcome of the receiver's answer. */
static void
push_webhook_classify(Integration *ig, HttpRequest *req, Message **msgs, int n)
{
	Message    *m = msgs[0];
	Jsonb	   *body;

	if (req->result != CURLE_OK)
	{
		novu_classify_transport(req, msgs, n);
		return;
	}
	m->retry_after = http_retry_after_seconds(req->retry_after);
	if (req->status >= 200 && req->status < 300)
	{
		body = jsonb_parse_or_null(req->response.data, req->response.len);
		if (body != NULL && JB_ROOT_IS_OBJECT(body) && !JB_ROOT_IS_SCALAR(body))
			m->provider_message_id = jsonb_container_get_string(&body->root, "id");
		novu_message_set(m, OUTCOME_SENT, NULL);
	}
	else if (req->status == 429 || req->status >= 500)
		novu_message_set(m, OUTCOME_RETRY, psprintf("HTTP %ld", req->status));
	else if (req->status == 401 || req->status == 403)
		novu_message_set(m, OUTCOME_CONFIG_ERROR,
						 psprintf("HTTP %ld: the receiver refused the request (check secretKey)", req->status));
	else
		novu_message_set(m, OUTCOME_DROP, psprintf("HTTP %ld", req->status));
}

const ProviderOps novu_push_webhook_provider = {
	.provider_id = "push-webhook",
	.label = "push webhook",
	.channel = CHANNEL_PUSH,
	.credential_keys = push_webhook_keys,
	.validate = push_webhook_validate,
	.secrets = push_webhook_secrets,
	.overrides = push_webhook_fields,
	.overrides_hint = "Push webhook overrides may set any field but target and webhookUrl.",
	.max_batch = 1,
	.prepare = push_webhook_prepare,
	.check = novu_message_check,
	.build = push_webhook_build,
	.classify = push_webhook_classify,
};
