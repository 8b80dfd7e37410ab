/*
 * msteams.c
 *		Microsoft Teams incoming webhooks and workflow URLs (PROTOCOLS.md
 *		section 4b), the chat channel.
 *
 * The target is the subscriber's credential webhookUrl; the integration needs
 * no keys.  POST <webhookUrl> with {"text": text} or the card the overrides
 * give; 200 or 202 is delivered.  404 and 410 mean the webhook was removed:
 * the credential is removed.  429 and 5xx retry, other 4xx drop.
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

static const char *const msteams_keys[] = {NULL};

/* Teams webhooks need no integration keys: the webhook URL is the credential. */
static void
msteams_validate(CredCheck *c)
{
	cred_check_keys(c);
}

/* A Teams message or card is free-form; only the target is refused. */
static const FieldRule msteams_fields[] = {
	REFUSE("webhookUrl", "the subscriber's webhook URL is the message's target"),
	OTHERS(FIELD_ANY)
};

/* Build the webhook call of one message. */
static HttpRequest *
msteams_build(Integration *ig, Message **msgs, int n)
{
	Message    *m = msgs[0];

	return novu_json_request(ig, m->target, novu_text_body("text", m->body, m->overrides));
}

/* Outcome of the Teams answer. */
static void
msteams_classify(Integration *ig, HttpRequest *req, Message **msgs, int n)
{
	Message    *m = msgs[0];

	if (req->result != CURLE_OK)
	{
		novu_classify_transport(req, msgs, n);
		return;
	}
	novu_webhook_outcome(m, req, req->status == 404 || req->status == 410, false,
						 pnstrdup(req->response.data, Min(req->response.len, 100)));
}

const ProviderOps novu_msteams_provider = {
	.provider_id = "msteams",
	.label = "MS Teams",
	.channel = CHANNEL_CHAT,
	.credential_keys = msteams_keys,
	.validate = msteams_validate,
	.token_check = novu_webhook_url_check,
	.token_form = "A Microsoft Teams incoming webhook or workflow URL (https).",
	.overrides = msteams_fields,
	.overrides_hint = "MS Teams overrides may set any message or card field (text, attachments, ...).",
	.max_batch = 1,
	.check = novu_message_check,
	.build = msteams_build,
	.classify = msteams_classify,
};
