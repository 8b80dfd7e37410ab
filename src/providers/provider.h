/*
 * provider.h
 *		The small interface every provider implements (one file each in
 *		providers/), the channel-neutral message and the integration the
 *		delivery pipeline hands them.
 *
 * A provider is its file plus one line in registry.c.  Everything that knows
 * a provider by name reads its ProviderOps: the SQL-time checks (credentials,
 * device tokens, overrides, which credential fields are secrets) and the
 * delivery pipeline.  Nothing else names a provider.
 */
#ifndef NOVU_PROVIDER_H
#define NOVU_PROVIDER_H

#include "datatype/timestamp.h"
#include "utils/jsonb.h"

#include "net/http.h"

/* The channel a provider delivers on (Novu's channel names). */
typedef enum Channel
{
	CHANNEL_PUSH = 0,			/* "push": device tokens, web-push subscriptions */
	CHANNEL_CHAT,				/* "chat": a subscriber's webhook URL */
	CHANNEL_IN_APP				/* "in_app": the feed (comes with the engine) */
} Channel;

/* How a provider's answer is classified (PROTOCOLS.md section 7). */
typedef enum Outcome
{
	OUTCOME_NONE = 0,			/* not answered yet */
	OUTCOME_SENT,				/* DELIVERED / ACCEPTED */
	OUTCOME_REMOVE_TOKEN,		/* the target is gone: prune it, fail the message */
	OUTCOME_RETRY,				/* RETRY_BACKOFF: 429, 5xx, transport errors */
	OUTCOME_REAUTH,				/* REAUTH_THEN_RETRY: renew our credential once */
	OUTCOME_CONFIG_ERROR,		/* the integration is misconfigured: fail, keep targets */
	OUTCOME_DROP				/* DROP_MESSAGE: this message can never succeed */
} Outcome;

struct Integration;
struct CredCheck;
struct FieldRule;

/*
 * One claimed delivery: a message to one target on one channel.  The target
 * is what the subscriber's credential holds for the provider: a device token,
 * a web-push subscription (JSON text) or a chat webhook URL.
 */
typedef struct Message
{
	int64		id;
	int32		attempts;		/* including this one */
	Channel		channel;
	char	   *transaction_id;
	char	   *workflow_id;
	char	   *subscriber_id;
	char	   *target;
	struct Integration *integration;

	/* rendered content */
	char	   *title;			/* push: the title; chat: NULL */
	char	   *body;			/* push: the body; chat: the message text */
	Jsonb	   *data;			/* trigger payload merged with the step's rendered data */
	Jsonb	   *overrides;		/* this provider's overrides: step, then trigger (trigger wins) */
	Jsonb	   *subscriber;		/* the subscriber's profile as templates see it (may be NULL) */

	/* the answer */
	Outcome		outcome;
	char	   *reason;			/* provider's reason, e.g. "UNREGISTERED" or "Unregistered" */
	char	   *provider_message_id;
	int			retry_after;	/* seconds, -1 if none given */
	int64		gone_since_ms;	/* APNs 410: the token is invalid since then (ms since the epoch; 0: not said) */
	double		jitter;			/* backoff factor shared by the messages of one request (0: unset) */
	bool		receipt;		/* a receipt is to be checked later (ProviderOps.receipts) */
	bool		judged;			/* the circuit breaker has counted this answer */
	bool		handed;			/* handed to curl, stored in the feed or given its result (deliver.c) */

	/*
	 * The key of the request it went out in (NULL: none): ProviderOps.request_key's,
	 * or one classify() gave it to be retried apart (see ProviderOps)
	 */
	char	   *request_key;
	bool		split_resend;	/* its request was split and the new key recorded: the
								 * resend may go past novu.max_attempts (deliver.c) */
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
 * A credential field that is a secret (integrations/secrets.c seals it at
 * rest).  object names the nested object holding it (NULL: top level); pair
 * names a public setting that must match it (a certificate, a public key):
 * when that changes, the secret must be given again.  A list ends with key NULL.
 */
typedef struct SecretField
{
	const char *object;
	const char *key;
	const char *pair;
} SecretField;

/* Checks one device token of len bytes; false with *problem ("contains ..."). */
typedef bool (*TokenCheck) (const char *token, size_t len, const char **problem);

/*
 * Receipts checked some time after a send was accepted (Expo): request()
 * asks about up to max_batch receipt ids (the provider_message_id of each
 * message marked receipt), read() finds one id in the answer.
 */
typedef struct ReceiptOps
{
	int			max_batch;
	HttpRequest *(*request) (struct Integration *ig, char **ids, int n);
	bool		(*read) (Jsonb *body, const char *id, Outcome *outcome, char **reason);
} ReceiptOps;

/*
 * A provider.
 *
 * SQL time (raising, naming the field): validate() checks the integration's
 * credentials (the keys in credential_keys) and pushes them normalized;
 * token_check (NULL: any text without control characters) and overrides (a
 * field list, see rules.h) guard what the app role stores.
 *
 * Delivery (never raising for bad data): prepare() parses the credentials
 * once; authorize() makes sure a usable access token exists (it may perform a
 * request of its own); check() runs before build() on each message: false
 * (with *reason) fails that message alone.  build() turns up to max_batch
 * messages into one request (or marks them DROP and returns NULL);
 * classify() sets every message's outcome from the answer.  warm_up: the
 * server allows one stream on a new connection until a request has
 * authenticated it (APNs token auth), so its pool sends one request first.
 * same_request (optional): two messages may share a request only if it says
 * so (OneSignal: identical content); the pipeline cuts a batch where it does
 * not.  request_key (optional): the provider deduplicates a request by an
 * idempotency key in it (OneSignal): request_key() derives the key of a new
 * request of these messages and build() sends msgs[0]->request_key.  The
 * pipeline records the key on the messages before the request is first sent,
 * and a retry is that request again: its messages not final yet, together,
 * with that key, never merged with others (novu._claim_groups).
 *
 * Splitting a request: one message must never fail the others (DESIGN 5), and
 * a provider whose request carries several messages may answer an error about
 * some of them for the whole request (Expo: one wrong value, one token of
 * another project).  Its classify() then sets those messages to OUTCOME_RETRY
 * with a new request_key, the same for the messages to be sent again together
 * (each alone, or grouped as the answer says), different from the key they
 * went out with.  The pipeline records the keys before the results, and each
 * retry is that smaller request, a new attempt like any retry (counted, with
 * backoff, up to novu.max_attempts); a request never reaches a provider
 * without its attempt being recorded.  A provider without request_key() sends
 * no key: there it only groups the retries.
 *
 * A provider whose build is NULL is accepted but not delivered by this
 * version: its messages fail with a configuration error.
 */
typedef struct ProviderOps
{
	const char *provider_id;
	const char *label;			/* as messages name it, e.g. "FCM" */
	Channel		channel;

	/* SQL time */
	const char *const *credential_keys;
	void		(*validate) (struct CredCheck *c);
	const SecretField *secrets;
	TokenCheck	token_check;
	const char *token_form;		/* the accepted target form, in words (hints) */
	const struct FieldRule *overrides;
	const char *overrides_hint;
	bool		subscriber_webhook_url; /* a subscriber's credentials may hold a
										 * webhookUrl (chat: where it goes) */

	/* delivery */
	int			max_batch;
	bool		warm_up;
	bool		(*prepare) (Integration *ig, char **error);
	bool		(*authorize) (Integration *ig, bool force, Outcome *failure, char **error);
	bool		(*check) (Integration *ig, Message *m, char **reason);
	HttpRequest *(*build) (Integration *ig, Message **msgs, int n);
	void		(*classify) (Integration *ig, HttpRequest *req, Message **msgs, int n);
	bool		(*same_request) (Message *a, Message *b);
	char	   *(*request_key) (Integration *ig, Message **msgs, int n);
	const ReceiptOps *receipts;
} ProviderOps;

/* registry.c: the providers of this version */
extern const ProviderOps *novu_provider_lookup(const char *provider_id);
extern int	novu_provider_count(void);
extern const ProviderOps *novu_provider_at(int i);
extern const char *novu_provider_list(void);	/* "fcm, apns, ..." for hints */
extern const char *novu_channel_name(Channel channel);

/* message.c: helpers the providers share */
extern void novu_message_set(Message *m, Outcome outcome, const char *reason);
extern void novu_messages_set(Message **msgs, int n, Outcome outcome, const char *reason);
extern void novu_classify_transport(HttpRequest *req, Message **msgs, int n);
extern char *novu_integration_base_url(Integration *ig, const char *default_base);
extern Jsonb *novu_text_body(const char *key, const char *text, Jsonb *overrides);
extern HttpRequest *novu_json_request(Integration *ig, const char *url, Jsonb *body);
extern void novu_webhook_outcome(Message *m, HttpRequest *req, bool gone, bool auth_is_config, const char *what);
extern bool novu_sign_request(HttpRequest *req, const char *secret);

#endif							/* NOVU_PROVIDER_H */
