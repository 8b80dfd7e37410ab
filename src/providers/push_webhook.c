/*
 * push_webhook.c
 *		Novu's push webhook (PROTOCOLS.md section 4a): the notification is
 *		POSTed to the integration's webhookUrl, signed with X-Novu-Signature.
 */
#include "postgres.h"

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

const ProviderOps novu_push_webhook_provider = {
	.provider_id = "push-webhook",
	.label = "push webhook",
	.channel = CHANNEL_PUSH,
	.credential_keys = push_webhook_keys,
	.validate = push_webhook_validate,
	.secrets = push_webhook_secrets,
	.overrides = push_webhook_fields,
	.overrides_hint = "Push webhook overrides may set any field but target and webhookUrl.",
};
