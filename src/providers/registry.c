/*
 * registry.c
 *		The providers of this version: one line each.  Everything that needs
 *		a provider by its id (credential validation, token and override rules,
 *		secrets, the SQL lists, the delivery pipeline) finds it here.
 */
#include "postgres.h"

#include "fmgr.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "providers/provider.h"

PG_FUNCTION_INFO_V1(novu_providers_sql);

extern const ProviderOps novu_fcm_provider;
extern const ProviderOps novu_apns_provider;
extern const ProviderOps novu_expo_provider;
extern const ProviderOps novu_onesignal_provider;
extern const ProviderOps novu_push_webhook_provider;
extern const ProviderOps novu_webpush_provider;
extern const ProviderOps novu_discord_provider;
extern const ProviderOps novu_slack_provider;
extern const ProviderOps novu_msteams_provider;
extern const ProviderOps novu_mattermost_provider;
extern const ProviderOps novu_chat_webhook_provider;

static const ProviderOps *const registry[] = {
	&novu_fcm_provider,
	&novu_apns_provider,
	&novu_expo_provider,
	&novu_onesignal_provider,
	&novu_push_webhook_provider,
	&novu_webpush_provider,
	&novu_discord_provider,
	&novu_slack_provider,
	&novu_msteams_provider,
	&novu_mattermost_provider,
	&novu_chat_webhook_provider,
};

/* The provider of an id, or NULL. */
const ProviderOps *
novu_provider_lookup(const char *provider_id)
{
	int			i;

	for (i = 0; i < lengthof(registry); i++)
	{
		if (strcmp(registry[i]->provider_id, provider_id) == 0)
			return registry[i];
	}
	return NULL;
}

/* How many providers there are. */
int
novu_provider_count(void)
{
	return lengthof(registry);
}

/* The i-th provider (0 .. novu_provider_count() - 1). */
const ProviderOps *
novu_provider_at(int i)
{
	Assert(i >= 0 && i < lengthof(registry));
	return registry[i];
}

/* The provider ids as "fcm, apns, ...", for hints. */
const char *
novu_provider_list(void)
{
	static char *list = NULL;

	if (list == NULL)
	{
		StringInfoData buf;
		int			i;

		initStringInfo(&buf);
		for (i = 0; i < lengthof(registry); i++)
			appendStringInfo(&buf, "%s%s", i > 0 ? ", " : "", registry[i]->provider_id);
		list = MemoryContextStrdup(TopMemoryContext, buf.data);
		pfree(buf.data);
	}
	return list;
}

/* Novu's name of a channel. */
const char *
novu_channel_name(Channel channel)
{
	switch (channel)
	{
		case CHANNEL_PUSH:
			return "push";
		case CHANNEL_CHAT:
			return "chat";
		case CHANNEL_IN_APP:
			return "in_app";
	}
	return "push";
}

/*
 * novu._providers(channel text DEFAULT NULL) RETURNS text[]
 *		The provider ids of this version, of one channel or of all, or with
 *		'webhookUrl' those a subscriber's webhookUrl credential is stored for;
 *		the SQL functions read their lists of providers here.
 */
Datum
novu_providers_sql(PG_FUNCTION_ARGS)
{
	char	   *channel = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	Datum	   *ids = palloc(sizeof(Datum) * lengthof(registry));
	int			n = 0;
	int			i;

	for (i = 0; i < lengthof(registry); i++)
	{
		if (channel != NULL && strcmp(channel, "webhookUrl") == 0)
		{
			if (!registry[i]->subscriber_webhook_url && registry[i]->channel != CHANNEL_CHAT)
				continue;
		}
		else if (channel != NULL && strcmp(channel, novu_channel_name(registry[i]->channel)) != 0)
			continue;
		ids[n++] = CStringGetTextDatum(registry[i]->provider_id);
	}
	PG_RETURN_ARRAYTYPE_P(construct_array(ids, n, TEXTOID, -1, false, TYPALIGN_INT));
}
