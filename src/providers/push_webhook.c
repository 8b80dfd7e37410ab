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
	jsonb_push_jsonb(&state, "subscriber", m->subscriber);
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
	jsonb_push_jsonb(&state, "overrides", m->overrides);
	jsonb_push_jsonb(&state, "payload", payload);
	root = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbToCString(NULL, &JsonbValueToJsonb(root)->root, 0);
}

/* Build one signed request for one message. */
static HttpRequest *
push_webhook_build(Integration *ig, Message **msgs, int n)
{
	PushWebhookState *st = ig->state;
	char	   *body = push_webhook_body(msgs[0]);
	HttpRequest *req = http_request_new(st->url);

	req->owner = ig;
	http_add_header(req, "Content-Type: application/json");
	req->body = body;
	req->body_len = strlen(body);
	if (!novu_sign_request(req, st->secret))
	{
		http_request_free(req);
		novu_message_set(msgs[0], OUTCOME_RETRY, "could not compute the HMAC signature");
		return NULL;
	}
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
	/* a receiver saying "gone" is not proof the device token is dead: never pruned */
	novu_webhook_outcome(m, req, false, true, NULL);
	body = m->outcome == OUTCOME_SENT ? jsonb_parse_object_or_null(req->response.data, req->response.len) : NULL;
	if (body != NULL)
		m->provider_message_id = jsonb_container_get_string(&body->root, "id");
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
	.subscriber_webhook_url = true,
	.max_batch = 1,
	.prepare = push_webhook_prepare,
	.check = novu_message_check,
	.build = push_webhook_build,
	.classify = push_webhook_classify,
};
