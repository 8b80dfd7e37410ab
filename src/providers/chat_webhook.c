/*
 * chat_webhook.c
 *		Novu's generic chat webhook (PROTOCOLS.md section 4b), the chat
 *		channel.
 *
 * The target is the subscriber's credential webhookUrl.  POST <webhookUrl>
 * with {"content", "webhookUrl", "channel"} and, when the integration has an
 * hmacSecretKey, X-Novu-Signature: the lowercase hex HMAC-SHA256 of the exact
 * body.  2xx is delivered (a JSON "id" is the message id); 404 and 410 mean
 * the webhook is gone: the credential is removed.  401/403 are the
 * integration's configuration (the signature is refused); 429 and 5xx retry,
 * other 4xx drop.
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "common/jsonb_util.h"
#include "crypto/crypto.h"
#include "crypto/envelope.h"
#include "providers/provider.h"
#include "providers/rules.h"
#include "providers/validate.h"

static const char *const chat_webhook_keys[] = {"hmacSecretKey", NULL};

/* chat-webhook: an optional hmacSecretKey signs every call. */
static void
chat_webhook_validate(CredCheck *c)
{
	char	   *s;

	cred_check_keys(c);
	s = cred_string(c, "hmacSecretKey", false,
					"hmacSecretKey is the HMAC-SHA256 key of the X-Novu-Signature header; omit it to send unsigned.");
	if (s != NULL)
		cred_push_string(c, "hmacSecretKey", s);
}

/* the HMAC key is the secret */
static const SecretField chat_webhook_secrets[] = {
	{NULL, "hmacSecretKey", NULL},
	{NULL, NULL, NULL}
};

/* The generic webhook's body is free-form; the target is refused. */
static const FieldRule chat_webhook_fields[] = {
	REFUSE("webhookUrl", "the subscriber's webhook URL is the message's target"),
	OTHERS(FIELD_ANY)
};

/* Build the (signed) webhook call of one message. */
static HttpRequest *
chat_webhook_build(Integration *ig, Message **msgs, int n)
{
	Message    *m = msgs[0];
	char	   *secret = jsonb_container_get_string(&ig->credentials->root, "hmacSecretKey");
	JsonbParseState *state = NULL;
	Jsonb	   *body;
	HttpRequest *req;

	body = novu_text_body("content", m->body, m->overrides);
	/* the target last: whatever was merged, the body names this webhook */
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	jsonb_push_string(&state, "webhookUrl", m->target);
	body = jsonb_deep_merge(body, JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL)));
	req = novu_json_request(ig, m->target, body);
	if (secret != NULL && secret[0] != '\0' && !novu_sign_request(req, secret))
	{
		http_request_free(req);
		novu_message_set(m, OUTCOME_RETRY, "could not compute the HMAC signature");
		return NULL;
	}
	return req;
}

/* Outcome of the receiver's answer. */
static void
chat_webhook_classify(Integration *ig, HttpRequest *req, Message **msgs, int n)
{
	Message    *m = msgs[0];
	Jsonb	   *body;

	if (req->result != CURLE_OK)
	{
		novu_classify_transport(req, msgs, n);
		return;
	}
	novu_webhook_outcome(m, req, req->status == 404 || req->status == 410, true, NULL);
	body = m->outcome == OUTCOME_SENT ? jsonb_parse_object_or_null(req->response.data, req->response.len) : NULL;
	if (body != NULL)
		m->provider_message_id = jsonb_container_get_string(&body->root, "id");
}

const ProviderOps novu_chat_webhook_provider = {
	.provider_id = "chat-webhook",
	.label = "chat webhook",
	.channel = CHANNEL_CHAT,
	.credential_keys = chat_webhook_keys,
	.validate = chat_webhook_validate,
	.secrets = chat_webhook_secrets,
	.token_check = novu_webhook_url_check,
	.token_form = "A webhook URL (https).",
	.overrides = chat_webhook_fields,
	.overrides_hint = "Chat webhook overrides may set any body field but webhookUrl.",
	.max_batch = 1,
	.check = novu_message_check,
	.build = chat_webhook_build,
	.classify = chat_webhook_classify,
};
