/*
 * discord.c
 *		Discord incoming webhooks (PROTOCOLS.md section 4b), the chat channel.
 *
 * The target is the subscriber's credential webhookUrl
 * (set_credentials(sub, 'discord', '{"webhookUrl": ...}')); the integration
 * itself needs no keys.  POST <webhookUrl>?wait=true with {"content": text}
 * and the overrides (embeds, username, avatar_url, ...): 200 answers the
 * message {id, ...}.  404 "Unknown Webhook" (code 10015) and 401 "Invalid
 * Webhook Token" mean the webhook was deleted: the credential is removed.
 * 429 carries retry_after (seconds, in the body) and Retry-After; 429 and
 * 5xx retry, other 4xx drop the message.
 */
#include "postgres.h"

#include <math.h>

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "common/jsonb_util.h"
#include "crypto/crypto.h"
#include "crypto/envelope.h"
#include "providers/provider.h"
#include "providers/rules.h"
#include "providers/validate.h"

#define DISCORD_CONTENT_MAX		2000	/* characters Discord takes in "content" */

static const char *const discord_keys[] = {NULL};

/* Discord needs no integration keys: each subscriber's webhook URL is the credential. */
static void
discord_validate(CredCheck *c)
{
	cred_check_keys(c);
}

/* Discord webhook message fields an override may set (the webhook is the target). */
static const FieldRule discord_fields[] = {
	ALLOW("content", FIELD_ANY),
	ALLOW("embeds", FIELD_ANY),
	ALLOW("username", FIELD_ANY),
	ALLOW("avatar_url", FIELD_ANY),
	ALLOW("tts", FIELD_ANY),
	ALLOW("allowed_mentions", FIELD_OBJECT),
	ALLOW("components", FIELD_ANY),
	ALLOW("flags", FIELD_ANY),
	ALLOW("thread_name", FIELD_ANY),
	REFUSE("webhookUrl", "the subscriber's webhook URL is the message's target"),
	OTHERS(FIELD_REFUSED)
};

/* Build the webhook call of one message. */
static HttpRequest *
discord_build(Integration *ig, Message **msgs, int n)
{
	Message    *m = msgs[0];
	const char *url = m->target;

	if (m->body != NULL && pg_mbstrlen(m->body) > DISCORD_CONTENT_MAX)
	{
		novu_message_set(m, OUTCOME_DROP,
						 psprintf("the content has %d characters; Discord takes at most %d",
								  pg_mbstrlen(m->body), DISCORD_CONTENT_MAX));
		return NULL;
	}
	/* wait=true: Discord answers the created message (its id) instead of 204 */
	url = psprintf("%s%swait=true", url, strchr(url, '?') ? "&" : "?");
	return novu_json_request(ig, url, novu_text_body("content", m->body, m->overrides));
}

/* Discord's error "code" in an answer body; -1 if none. */
static int
discord_code(Jsonb *body)
{
	int32		code;

	return body != NULL && jsonb_container_get_int32(&body->root, "code", &code) ? code : -1;
}

/* Outcome of Discord's answer. */
static void
discord_classify(Integration *ig, HttpRequest *req, Message **msgs, int n)
{
	Message    *m = msgs[0];
	Jsonb	   *body;
	JsonbValue	v;

	if (req->result != CURLE_OK)
	{
		novu_classify_transport(req, msgs, n);
		return;
	}
	body = jsonb_parse_object_or_null(req->response.data, req->response.len);
	/*
	 * 404 Unknown Webhook (code 10015), 401 Invalid Webhook Token (50027): the
	 * webhook was deleted.  A 404 or 401 without its code (a proxy's) does not
	 * remove the credential.
	 */
	novu_webhook_outcome(m, req,
						 (req->status == 404 && discord_code(body) == 10015) ||
						 (req->status == 401 && discord_code(body) == 50027), false,
						 body ? jsonb_container_get_string(&body->root, "message") : NULL);
	if (m->outcome == OUTCOME_SENT && body != NULL)
		m->provider_message_id = jsonb_container_get_string(&body->root, "id");
	/*
	 * A rate limit says retry_after (seconds, a float) in the body too:
	 * bounded as the Retry-After header is (a day at most; 1e9 would park the
	 * message for decades, and past INT_MAX the conversion is undefined).
	 */
	if (m->retry_after < 0 && body != NULL &&
		jsonb_container_get(&body->root, "retry_after", &v) && v.type == jbvNumeric)
	{
		/* as text: numeric_float8 raises on a number too large for a double */
		double		secs = strtod(DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric))),
								  NULL);

		if (!isnan(secs) && secs >= 0)
			m->retry_after = (int) ceil(Min(secs, 86400.0));
	}
}

const ProviderOps novu_discord_provider = {
	.provider_id = "discord",
	.label = "Discord",
	.channel = CHANNEL_CHAT,
	.credential_keys = discord_keys,
	.validate = discord_validate,
	.token_check = novu_webhook_url_check,
	.token_form = "A Discord webhook URL: https://discord.com/api/webhooks/<id>/<token>.",
	.overrides = discord_fields,
	.overrides_hint = "Discord overrides may set content, embeds, username, avatar_url, tts, allowed_mentions, components, flags and thread_name.",
	.max_batch = 1,
	.check = novu_message_check,
	.build = discord_build,
	.classify = discord_classify,
};
