/*
 * mattermost.c
 *		Mattermost incoming webhooks (PROTOCOLS.md section 4b), the chat
 *		channel.
 *
 * The target is the subscriber's credential webhookUrl; the integration needs
 * no keys.  POST <webhookUrl> with {"text": text} and the overrides; 200
 * answers "ok" and the x-request-id header is the message id.  Mattermost
 * says a webhook is gone with its error ids: web.incoming_webhook.invalid
 * (400, the hook was deleted) or can_not_post_to_deleted (403, its channel
 * was archived); those and 404/410 remove the credential.  429 and 5xx
 * retry, other 4xx drop.
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

static const char *const mattermost_keys[] = {NULL};

/* Mattermost incoming webhooks need no integration keys. */
static void
mattermost_validate(CredCheck *c)
{
	cred_check_keys(c);
}

/* Mattermost message fields an override may set. */
static const FieldRule mattermost_fields[] = {
	ALLOW("text", FIELD_ANY),
	ALLOW("username", FIELD_ANY),
	ALLOW("icon_url", FIELD_ANY),
	ALLOW("icon_emoji", FIELD_ANY),
	ALLOW("attachments", FIELD_ANY),
	ALLOW("props", FIELD_OBJECT),
	ALLOW("type", FIELD_ANY),
	ALLOW("priority", FIELD_OBJECT),
	REFUSE("channel", "the channel comes from the subscriber's credential"),
	REFUSE("webhookUrl", "the subscriber's webhook URL is the message's target"),
	OTHERS(FIELD_REFUSED)
};

/* Build the webhook call of one message. */
static HttpRequest *
mattermost_build(Integration *ig, Message **msgs, int n)
{
	Message    *m = msgs[0];
	HttpRequest *req = novu_json_request(ig, m->target, novu_text_body("text", m->body, m->overrides));

	req->id_header = "x-request-id";
	return req;
}

/* Whether Mattermost's error id says the webhook or its channel is gone. */
static bool
webhook_gone(HttpRequest *req)
{
	Jsonb	   *body = jsonb_parse_or_null(req->response.data, req->response.len);
	char	   *id;

	if (body == NULL || JB_ROOT_IS_SCALAR(body) || !JB_ROOT_IS_OBJECT(body))
		return false;
	id = jsonb_container_get_string(&body->root, "id");
	return id != NULL && (strstr(id, "incoming_webhook.invalid") != NULL ||
						  strstr(id, "can_not_post_to_deleted") != NULL);
}

/* Outcome of Mattermost's answer. */
static void
mattermost_classify(Integration *ig, HttpRequest *req, Message **msgs, int n)
{
	Message    *m = msgs[0];

	if (req->result != CURLE_OK)
	{
		novu_classify_transport(req, msgs, n);
		return;
	}
	novu_webhook_outcome(m, req, req->status == 404 || req->status == 410 || webhook_gone(req), false,
						 pnstrdup(req->response.data, Min(req->response.len, 100)));
	if (m->outcome == OUTCOME_SENT)
		m->provider_message_id = req->id_value;
}

const ProviderOps novu_mattermost_provider = {
	.provider_id = "mattermost",
	.label = "Mattermost",
	.channel = CHANNEL_CHAT,
	.credential_keys = mattermost_keys,
	.validate = mattermost_validate,
	.token_check = novu_webhook_url_check,
	.token_form = "A Mattermost incoming webhook URL: https://<server>/hooks/<id>.",
	.overrides = mattermost_fields,
	.overrides_hint = "Mattermost overrides may set text, username, icon_url, icon_emoji, attachments, props, type and priority.",
	.max_batch = 1,
	.check = novu_message_check,
	.build = mattermost_build,
	.classify = mattermost_classify,
};
