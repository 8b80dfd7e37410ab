/*
 * onesignal.c
 *		OneSignal (PROTOCOLS.md section 4): the integration's App ID and REST
 *		API key; recipients are OneSignal subscription ids.
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

static const char *const onesignal_keys[] = {"applicationId", "apiKey", "endpoint", NULL};

/* one-signal: applicationId and apiKey, optional endpoint. */
static void
onesignal_validate(CredCheck *c)
{
	cred_check_keys(c);
	cred_push_string(c, "applicationId",
					 cred_string(c, "applicationId", true, "applicationId is the OneSignal App ID."));
	cred_push_string(c, "apiKey",
					 cred_string(c, "apiKey", true, "apiKey is the OneSignal REST API key."));
	cred_endpoint(c);
}

/* OneSignal: targeting fields are refused; content fields are free. */
static const FieldRule onesignal_fields[] = {
	REFUSE("app_id", "the app is the integration's applicationId"),
	REFUSE("include*", "targeting fields choose the recipients"),
	REFUSE("exclude*", "targeting fields choose the recipients"),
	REFUSE("filters", "targeting fields choose the recipients"),
	REFUSE("target_channel", "targeting fields choose the recipients"),
	OTHERS(FIELD_ANY)
};

/* the REST API key is the secret */
static const SecretField onesignal_secrets[] = {
	{NULL, "apiKey", NULL},
	{NULL, NULL, NULL}
};

const ProviderOps novu_onesignal_provider = {
	.provider_id = "one-signal",
	.label = "OneSignal",
	.channel = CHANNEL_PUSH,
	.credential_keys = onesignal_keys,
	.validate = onesignal_validate,
	.secrets = onesignal_secrets,
	.overrides = onesignal_fields,
	.overrides_hint = "OneSignal overrides may set content fields (headings, contents, data, ...), not targeting fields.",
};
