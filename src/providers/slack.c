/*
 * slack.c
 *		Slack incoming webhooks (PROTOCOLS.md section 4b), the chat channel.
 *
 * The target is the subscriber's credential webhookUrl; the integration needs
 * no keys.  POST <webhookUrl> with {"text": text} and the overrides (blocks,
 * attachments, ...); 200 answers "ok".  404 no_team / channel_not_found,
 * 403 invalid_token and 410 channel_is_archived mean the webhook cannot be
 * used again: the credential is removed.  400 invalid_payload drops the
 * message; 429 and 5xx retry (Retry-After honoured).
 */
#include "postgres.h"

#include <ctype.h>

#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "common/jsonb_util.h"
#include "crypto/crypto.h"
#include "crypto/envelope.h"
#include "providers/provider.h"
#include "providers/rules.h"
#include "providers/validate.h"

static const char *const slack_keys[] = {NULL};

/* Slack incoming webhooks need no integration keys: the webhook URL is the credential. */
static void
slack_validate(CredCheck *c)
{
	cred_check_keys(c);
}

/* Slack message fields an override may set; the webhook's channel is fixed. */
static const FieldRule slack_fields[] = {
	ALLOW("text", FIELD_ANY),
	ALLOW("blocks", FIELD_ANY),
	ALLOW("attachments", FIELD_ANY),
	ALLOW("username", FIELD_ANY),
	ALLOW("icon_emoji", FIELD_ANY),
	ALLOW("icon_url", FIELD_ANY),
	ALLOW("mrkdwn", FIELD_ANY),
	ALLOW("unfurl_links", FIELD_ANY),
	ALLOW("unfurl_media", FIELD_ANY),
	ALLOW("thread_ts", FIELD_ANY),
	REFUSE("channel", "an incoming webhook posts to its own channel"),
	REFUSE("webhookUrl", "the subscriber's webhook URL is the message's target"),
	OTHERS(FIELD_REFUSED)
};

/* Build the webhook call of one message. */
static HttpRequest *
slack_build(Integration *ig, Message **msgs, int n)
{
	Message    *m = msgs[0];

	return novu_json_request(ig, m->target, novu_text_body("text", m->body, m->overrides));
}

/* Is Slack's answer body this error code (surrounding blanks aside)? */
static bool
slack_body_is(HttpRequest *req, const char *code)
{
	const char *b = req->response.data;
	int			len = (int) req->response.len;
	int			clen = strlen(code);

	if (b == NULL)
		return false;
	while (len > 0 && isspace((unsigned char) *b))
		b++, len--;
	while (len > 0 && isspace((unsigned char) b[len - 1]))
		len--;
	return len == clen && memcmp(b, code, clen) == 0;
}

/* Outcome of Slack's answer (a short text body: "ok" or an error code). */
static void
slack_classify(Integration *ig, HttpRequest *req, Message **msgs, int n)
{
	Message    *m = msgs[0];

	if (req->result != CURLE_OK)
	{
		novu_classify_transport(req, msgs, n);
		return;
	}
	/*
	 * no_team, channel_not_found (404), invalid_token (403), channel_is_archived
	 * (410): the webhook cannot be used again.  A 403 or 404 with another body
	 * (action_prohibited, a proxy's page) does not remove the credential.
	 */
	novu_webhook_outcome(m, req,
						 (req->status == 404 && (slack_body_is(req, "no_team") || slack_body_is(req, "channel_not_found"))) ||
						 (req->status == 403 && slack_body_is(req, "invalid_token")) ||
						 req->status == 410, false,
						 pnstrdup(req->response.data, Min(req->response.len, 100)));
}

const ProviderOps novu_slack_provider = {
	.provider_id = "slack",
	.label = "Slack",
	.channel = CHANNEL_CHAT,
	.credential_keys = slack_keys,
	.validate = slack_validate,
	.token_check = novu_webhook_url_check,
	.token_form = "A Slack incoming webhook URL: https://hooks.slack.com/services/T.../B.../....",
	.overrides = slack_fields,
	.overrides_hint = "Slack overrides may set text, blocks, attachments, username, icon_emoji, icon_url, mrkdwn, unfurl_links, unfurl_media and thread_ts.",
	.max_batch = 1,
	.check = novu_message_check,
	.build = slack_build,
	.classify = slack_classify,
};
