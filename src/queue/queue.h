/*
 * queue.h
 *		The delivery workers' statements on the outbox tables: fan-out, claim,
 *		record, receipts and housekeeping, each a short transaction.
 */
#ifndef NOVU_QUEUE_H
#define NOVU_QUEUE_H

#include "providers/provider.h"

/*
 * A request refused as a whole for what may be another message's fault is
 * split (at most twice: by project, then one per message, see expo_split), and
 * each resend is an attempt: a message refused at its last attempt alongside
 * others still gets its resends, up to this many past novu.max_attempts (the
 * claim fails a message beyond that).
 */
#define SPLIT_EXTRA_ATTEMPTS 2

/* A claimed batch: messages plus the raw context their rendering needs. */
typedef struct ClaimedRow
{
	Message    *msg;
	int64		integration_id; /* 0 if the integration was deleted */
	Jsonb	   *payload;
	Jsonb	   *trigger_overrides;
	Jsonb	   *actor;
	Jsonb	   *step;			/* NULL if the workflow was deleted */
	char	   *step_key;		/* workflow_id/step_index/updated_at: template cache key */
	Jsonb	   *subscriber;
} ClaimedRow;

/* One row of integration data for the worker's cache. */
typedef struct IntegrationRow
{
	int64		id;
	char	   *identifier;
	char	   *provider_id;
	Jsonb	   *credentials;
	char	   *updated_at;
	bool		active;
} IntegrationRow;

/* One Expo receipt to check. */
typedef struct ReceiptRow
{
	int64		id;
	int64		integration_id;
	char	   *ticket;
	char	   *device_token;
	int32		attempts;
	double		sent_age_s;
} ReceiptRow;

/* Results of one batch, as parallel arrays for novu._record(). */
typedef struct ResultBatch
{
	int			n;
	int			cap;
	int64	   *ids;
	int32	   *attempts;
	char	  **statuses;
	char	  **errors;
	char	  **message_ids;
	int64	   *delays_ms;
	int64	   *receipt_ms;		/* -1 = none */
	char	  **details;
	int			nprune;
	int			prune_cap;
	int64	   *prune_integrations;
	char	  **prune_tokens;
	int64	   *prune_since;	/* ms since the epoch the provider says the token is gone; -1: not said */
} ResultBatch;

extern int	queue_claim(int limit, int lease_ms, ClaimedRow **rows, long *next_due_ms,
						ResultBatch *record_first, bool fanout_first, bool claim_due, int *fanned,
						IntegrationRow **irows, int *nirows);
extern Size queue_last_claim_bytes(void);
extern int	queue_load_integrations(int64 *ids, int n, IntegrationRow **rows);
extern void result_add(ResultBatch *rb, Message *m, const char *status, const char *error,
					   int64 delay_ms, int64 receipt_ms, const char *detail);
extern void result_prune(ResultBatch *rb, int64 integration_id, const char *token, int64 gone_since_ms);
extern void queue_record(ResultBatch *rb);
extern int	queue_set_request_keys(int64 *ids, int32 *attempts, char **keys, int n, bool *written);
extern int	queue_store_in_app(int64 *ids, int32 *attempts, char **subjects, char **contents, char **urls,
							   int n);
extern int	queue_claim_receipts(int limit, int lease_ms, ReceiptRow **rows);
extern void queue_record_receipts(ResultBatch *rb);
extern int	novu_housekeeping(void);
extern int	queue_refresh_stats(void);
extern void queue_floor_update(void);
extern int64 queue_floor(void);

/* express.c: the fan-out of a few plain triggers in one statement */
extern bool queue_express_wanted(void);
extern int	queue_express_fanout(int64 floor, int lease_limit, int lease_ms);
extern bool queue_express_full(int taken);
extern void queue_express_failed(void);


#endif							/* NOVU_QUEUE_H */
