/*
 * provider.h
 *		The small interface every push provider implements (provider_*.c), and
 *		the message and integration structures the delivery cycle hands them.
 */
#ifndef NOVU_PROVIDER_H
#define NOVU_PROVIDER_H

#include "datatype/timestamp.h"
#include "utils/jsonb.h"

#include "net/http.h"

/* How a provider's answer is classified (PROTOCOLS.md section 7). */
typedef enum Outcome
{
	OUTCOME_NONE = 0,			/* not answered yet */
	OUTCOME_SENT,				/* DELIVERED / ACCEPTED */
	OUTCOME_REMOVE_TOKEN,		/* the token is dead: prune it, fail the message */
	OUTCOME_RETRY,				/* RETRY_BACKOFF: 429, 5xx, transport errors */
	OUTCOME_REAUTH,				/* REAUTH_THEN_RETRY: renew our credential once */
	OUTCOME_CONFIG_ERROR,		/* the integration is misconfigured: fail, keep tokens */
	OUTCOME_DROP				/* DROP_MESSAGE: this message can never succeed */
} Outcome;

struct Integration;

/* One claimed delivery: a message to one device token. */
typedef struct Message
{
	int64		id;
	int32		attempts;		/* including this one */
	char	   *transaction_id;
	char	   *workflow_id;
	char	   *subscriber_id;
	char	   *device_token;
	struct Integration *integration;

	/* rendered content */
	char	   *title;
	char	   *body;
	Jsonb	   *data;			/* trigger payload merged with the step's rendered data */
	Jsonb	   *overrides;		/* this provider's overrides: step, then trigger (trigger wins) */

	/* the answer */
	Outcome		outcome;
	char	   *reason;			/* provider's reason, e.g. "UNREGISTERED" or "Unregistered" */
	char	   *provider_message_id;
	int			retry_after;	/* seconds, -1 if none given */
	bool		receipt;		/* Expo: a receipt is to be checked later */
	bool		judged;			/* the circuit breaker has counted this answer */
} Message;

/* An integration as the worker caches it, with its provider's private state. */
typedef struct Integration
{
	int64		id;
	char	   *identifier;
	char	   *provider_id;
	Jsonb	   *credentials;
	char	   *updated_at;		/* detects credential changes */
	const struct ProviderOps *ops;
	void	   *state;			/* provider-private, in the integration's context */
	MemoryContext context;		/* lives as long as the cached integration */
	struct HttpPool *pool;		/* its own connections */
	int			in_flight;		/* requests not answered yet */
	char	   *config_error;	/* set when the credentials cannot be used at all */
	bool		config_error_logged;
	TimestampTz reauth_at;		/* last forced renewal of the credential */
	bool		prune_warned;	/* logged that its dead-token answers keep their tokens (breaker.c) */
} Integration;

/*
 * A provider.  build() turns up to max_batch messages into one request (or
 * marks them DROP and returns NULL); classify() sets every message's outcome
 * from the answer.  prepare() parses the credentials once; authorize() makes
 * sure a usable access token exists (it may perform a request of its own).
 * check() runs before build() on each message: false (with *reason) fails
 * that message alone, e.g. a token or an override stored by an older version
 * that breaks provider_rules.c.  warm_up: the server allows one stream on a
 * new connection until a request has authenticated it (APNs token auth), so
 * its pool sends one request first (http.c).
 */
typedef struct ProviderOps
{
	const char *provider_id;
	int			max_batch;
	bool		warm_up;
	bool		(*prepare) (Integration *ig, char **error);
	bool		(*authorize) (Integration *ig, bool force, Outcome *failure, char **error);
	bool		(*check) (Integration *ig, Message *m, char **reason);
	HttpRequest *(*build) (Integration *ig, Message **msgs, int n);
	void		(*classify) (Integration *ig, HttpRequest *req, Message **msgs, int n);
} ProviderOps;

extern const ProviderOps fcm_provider;
extern const ProviderOps apns_provider;
extern const ProviderOps expo_provider;

extern const ProviderOps *provider_lookup(const char *provider_id);

/* Expo receipts (provider_expo.c) and the round that checks them (deliver.c) */
extern HttpRequest *expo_receipts_request(Integration *ig, char **ids, int n);
extern bool expo_receipt(Jsonb *body, const char *id, Outcome *outcome, char **reason);
extern int	novu_expo_receipts(void);

/* helpers shared by the providers (deliver.c) */
extern void message_set(Message *m, Outcome outcome, const char *reason);
extern void messages_set(Message **msgs, int n, Outcome outcome, const char *reason);
extern void classify_transport(HttpRequest *req, Message **msgs, int n);
extern char *integration_base_url(Integration *ig, const char *default_base);

/* provider_rules.c: the token form and the overrides allowlist of the message's provider */
extern bool novu_message_check(Integration *ig, Message *m, char **reason);

#endif							/* NOVU_PROVIDER_H */
