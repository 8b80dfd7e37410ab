/*
 * deliver.c
 *		The delivery pipeline: claim batches, render, send through the
 *		providers, classify the answers as they arrive, record the results.
 *
 * Claim and record are short transactions (queue.c); rendering and all network
 * I/O happen between them, with no transaction, snapshot or lock held.  The
 * pipeline never waits for a whole round: requests stay in flight across calls,
 * answers are classified as they arrive and recorded in batches, and new batches
 * are claimed while others are still in flight, so a slow provider delays only
 * its own messages.
 * Outcomes follow PROTOCOLS.md section 7: sent; token removed; retried with
 * exponential backoff and jitter (Retry-After honoured) up to novu.max_attempts;
 * credential renewed once then retried; configuration error (tokens kept, logged
 * once per integration); dropped.  A circuit breaker shared by all workers
 * (breaker.c) decides whether a dead-token answer removes its token.
 */
#include "postgres.h"

#include <time.h>

#include "access/xact.h"
#include "common/pg_prng.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "delivery/breaker.h"
#include "delivery/deliver.h"
#include "net/http.h"
#include "common/jsonb_util.h"
#include "net/netpolicy.h"
#include "novu.h"
#include "providers/provider.h"
#include "queue/queue.h"
#include "queue/work.h"
#include "delivery/render.h"
#include "integrations/secrets.h"
#include "common/shmem.h"

#define RESULTS_FLUSH_AT		1000	/* record at least this many results at once ... */
#define RESULTS_FLUSH_MS		20		/* ... or whatever waited this long */
#define REAUTH_INTERVAL_MS		10000	/* renew a credential at most this often on 401 */
#define BREAKER_SETTLE_MS		1000	/* dead-token answers wait this long for a sample */
/*
 * A claim's lease, with novu.request_timeout T: its requests go out within
 * 2T + 10 s of the claim (send_by; a request still waiting then, behind a
 * slow provider, is not sent at all and its message is retried as a recorded
 * attempt), the provider has T to answer, and the answer then has
 * LEASE_RECORD_MARGIN_MS + 2T to be recorded: a request of the worker's own
 * that it waits for (an OAuth token, receipts: up to 2T, unsent for T and then
 * answered in T) may come between an answer and its record, not two
 * (record_before_blocking; dead-token answers the circuit breaker waits to
 * judge together may wait up to BREAKER_SETTLE_MS more).  So no other worker
 * claims a message whose request may still be going out or whose answer is
 * about to be recorded.
 */
#define LEASE_RECORD_MARGIN_MS	20000
#define LEASE_MS(timeout_ms)	((timeout_ms) * 5 + 30000)
#define RECORD_MS(timeout_ms)	((timeout_ms) * 2 + LEASE_RECORD_MARGIN_MS)
#define CLAIM_BYTES_BUDGET		(32 * 1024 * 1024)	/* event data one claim may hold */

/* Cached integrations, by id. */
typedef struct IntegrationEntry
{
	int64		id;
	Integration *ig;
	bool		secrets_failed; /* its secrets did not decrypt ... */
	uint32		key_state;		/* ... with the key settings and files in this state */
	TimestampTz used_at;		/* last claimed for (novu_deliver_evict_idle) */
} IntegrationEntry;

/* How often to look for integrations unused for novu.integration_idle_timeout (ms, at most). */
#define INTEGRATION_SWEEP_MS	(60 * 1000)

/* The memory of one claimed batch, freed once all its messages are recorded. */
typedef struct Batch
{
	MemoryContext context;
	int			unrecorded;
	TimestampTz send_by;		/* its requests are not sent after this (LEASE_MS) */
	int			timeout_ms;		/* novu.request_timeout its lease was made for */
	Message   **msgs;			/* the messages claimed */
	int			nmsgs;
} Batch;

/* One request in flight with the messages it carries. */
typedef struct InFlight
{
	Integration *ig;
	HttpRequest *req;
	Message   **msgs;
	int			n;
	Batch	   *batch;
} InFlight;

static HTAB *integration_cache = NULL;
static MemoryContext cache_context = NULL;

/*
 * Rendering, building a request and reading an answer make garbage many times
 * the size of what they keep (about 30 kB per FCM message): they run here, the
 * context is reset after each message or request, and what is kept is copied
 * into the batch.  Without it a batch of 1,000 messages held 33 MB until its
 * last answer was recorded.
 */
static MemoryContext scratch_context = NULL;

/* Answered messages waiting to be recorded, and the batches they point into. */
static MemoryContext results_context = NULL;
static Message **answered = NULL;	/* in results_context */
static int	nanswered = 0;
static int	answered_cap = 0;
static List *finished_batches = NIL;	/* in TopMemoryContext */
static List *retired_integrations = NIL;	/* replaced, not freed yet (integration_retire) */
static TimestampTz results_since = 0;

/* Messages claimed and not answered yet (in flight or waiting to be resent). */
static int	messages_in_flight = 0;

/* Claim scheduling: claim again at once after a full batch, else when due. */
static bool last_claim_full = false;
static TimestampTz next_claim_at = 0;

/* Rows the next claim may take: novu.batch_size, less while events are large. */
static int	claim_limit = 0;

/* Errors in a row while answers waited to be recorded (see novu_deliver_abandon). */
static int	record_errors = 0;

static void record_before_blocking(void);
static void abandon_answer(void);

/* The batch of a claim under way: none of its messages is handed out yet. */
static Batch *claiming = NULL;

/* The batch claimed and being rendered and sent: some messages may not be handed out yet. */
static Batch *sending = NULL;

/* Requests built with a new key and not sent yet (submit_messages); freed after an error. */
static InFlight **unsent_built = NULL;
static int	nunsent_built = 0;

/* The answered request whose credential is being renewed (handle_answer). */
static InFlight *answering = NULL;

/* Before a wait of the worker's own: answers being taken, or recorded (record_before_blocking). */
static bool taking_answers = false;
static bool flushing_before_wait = false;

/*
 * Run fn(arg), turning an ERROR it raises into a false return with the
 * error's message (in the caller's memory context): rendering, building or
 * reading one message's request must fail that message alone, never the
 * worker and the answers it holds (DESIGN 5).  Only used between transactions;
 * cancel and shutdown requests go on to the worker's handler.
 */
static bool
run_guarded(void (*fn) (void *), void *arg, char **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	ErrorContextCallback *errstack = error_context_stack;
	volatile bool ok = true;

	Assert(!IsTransactionState());
	PG_TRY();
	{
		fn(arg);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED || edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN ||
			IsTransactionState())
			PG_RE_THROW();
		FlushErrorState();
		error_context_stack = errstack;
		*error = edata->message;
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * Run fn(arg), which does its work in a transaction of its own (queue.c's
 * short transactions); false, with the error's message in *error, if it
 * failed: the error is logged and the transaction rolled back, so that the
 * caller can go on with the other messages.  With pass_cancel, a cancel or a
 * shutdown goes on to the worker's handler after the rollback.
 */
static bool
run_transaction(void (*fn) (void *), void *arg, char **error, bool pass_cancel)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = false;

	PG_TRY();
	{
		fn(arg);
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (pass_cancel &&
			(edata->sqlerrcode == ERRCODE_QUERY_CANCELED || edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN))
		{
			AbortOutOfAnyTransaction();
			RESUME_INTERRUPTS();
			PG_RE_THROW();
		}
		EmitErrorReport();
		AbortOutOfAnyTransaction();
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		RESUME_INTERRUPTS();
		*error = edata->message ? pstrdup(edata->message) : pstrdup("unknown error");
	}
	PG_END_TRY();
	return ok;
}

/* A copy of a jsonb value in the current memory context. */
static Jsonb *
jsonb_copy(Jsonb *j)
{
	return j ? memcpy(palloc(VARSIZE(j)), j, VARSIZE(j)) : NULL;
}

/*
 * Copy a message's rendered content out of the scratch context.  The
 * provider's overrides depend only on the event, the step and the provider:
 * a message following one of the same (prev) shares its copy.
 */
static void
keep_rendered(Message *m, ClaimedRow *r, Message *prev, ClaimedRow *prev_row)
{
	m->title = pstrdup(m->title);
	m->body = pstrdup(m->body);
	if (m->data != r->payload)
		m->data = jsonb_copy(m->data);
	if (prev != NULL && prev_row->trigger_overrides == r->trigger_overrides && prev_row->step == r->step &&
		prev->integration != NULL && m->integration != NULL &&
		strcmp(prev->integration->provider_id, m->integration->provider_id) == 0)
		m->overrides = prev->overrides;
	else
		m->overrides = jsonb_copy(m->overrides);
}

/* Copy what a provider set on messages (reason, message id) out of the scratch context. */
static void
keep_answers(Message **msgs, int n)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		if (msgs[i]->reason)
			msgs[i]->reason = pstrdup(msgs[i]->reason);
		if (msgs[i]->provider_message_id)
			msgs[i]->provider_message_id = netpolicy_reason(msgs[i]->provider_message_id);
	}
}

/* Create the HTTP engine and the integration cache; once per worker. */
void
novu_deliver_init(void)
{
	HASHCTL		ctl;

	http_init();
	http_set_before_wait(record_before_blocking);
	results_context = AllocSetContextCreate(TopMemoryContext, "novu results", ALLOCSET_DEFAULT_SIZES);
	cache_context = AllocSetContextCreate(TopMemoryContext, "novu integrations", ALLOCSET_DEFAULT_SIZES);
	scratch_context = AllocSetContextCreate(TopMemoryContext, "novu scratch", ALLOCSET_DEFAULT_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(IntegrationEntry);
	ctl.hcxt = cache_context;
	integration_cache = hash_create("novu integrations", 32, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/* Free a cached integration: its connections, its decrypted secrets, its memory. */
static void
integration_free(Integration *ig)
{
	http_pool_destroy(ig->pool);
	/* the decrypted secrets do not outlive the cache entry */
	explicit_bzero(ig->credentials, VARSIZE(ig->credentials));
	MemoryContextDelete(ig->context);
	pfree(ig);
}

/*
 * Drop the integrations not claimed for novu.integration_idle_timeout
 * (deleted ones, say): their connections, decrypted secrets and memory would
 * stay for the worker's life.  Looked for every fifth of that time (a minute
 * at most), and only while nothing is in flight or waits to be recorded:
 * those messages point to their integration.
 */
void
novu_deliver_evict_idle(void)
{
	static TimestampTz last = 0;
	TimestampTz now = GetCurrentTimestamp();
	HASH_SEQ_STATUS seq;
	IntegrationEntry *entry;

	if (messages_in_flight > 0 || nanswered > 0 || finished_batches != NIL)
		return;
	/* nothing points to a replaced integration any more */
	while (retired_integrations != NIL)
	{
		Integration *ig = linitial(retired_integrations);

		retired_integrations = list_delete_first(retired_integrations);
		integration_free(ig);
	}
	if (!TimestampDifferenceExceeds(last, now, Min(INTEGRATION_SWEEP_MS, novu_integration_idle_timeout / 5)))
		return;
	last = now;
	hash_seq_init(&seq, integration_cache);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		if (entry->ig->in_flight > 0 ||
			!TimestampDifferenceExceeds(entry->used_at, now, novu_integration_idle_timeout))
			continue;
		integration_free(entry->ig);
		(void) hash_search(integration_cache, &entry->id, HASH_REMOVE, NULL);
	}
}

/*
 * Build an integration from its row: secrets decrypted, provider state
 * prepared, a connection pool.  An error part way frees what was built
 * (wiping the decrypted secrets) and leaves the cache as it was.
 */
static Integration *
integration_build(IntegrationRow *row, bool *secrets_failed, uint32 *key_state)
{
	Integration *ig;
	MemoryContext old;
	char	   *error = NULL;

	old = MemoryContextSwitchTo(cache_context);
	ig = palloc0(sizeof(Integration));
	ig->context = AllocSetContextCreate(cache_context, "novu integration", ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(ig->context);
	PG_TRY();
	{
		ig->id = row->id;
		ig->identifier = pstrdup(row->identifier);
		ig->provider_id = pstrdup(row->provider_id);
		/* secrets are decrypted here, once per load of the integration (secrets.c) */
		ig->credentials = secrets_open_credentials(row->id, row->provider_id, row->credentials, &error);
		*secrets_failed = (ig->credentials == NULL);
		if (ig->credentials == row->credentials || ig->credentials == NULL)
		{
			ig->credentials = palloc(VARSIZE(row->credentials));
			memcpy(ig->credentials, row->credentials, VARSIZE(row->credentials));
		}
		ig->updated_at = pstrdup(row->updated_at);
		ig->ops = novu_provider_lookup(row->provider_id);
		ig->pool = http_pool_create(ig->ops != NULL && ig->ops->warm_up);
		if (*secrets_failed)
		{
			ig->config_error = psprintf("cannot decrypt its secrets: %s", error);
			*key_state = secrets_key_state();
		}
		else if (ig->ops == NULL || ig->ops->build == NULL)
			ig->config_error = psprintf("provider \"%s\" is not delivered by this version", row->provider_id);
		else if (ig->ops->prepare != NULL && !ig->ops->prepare(ig, &error))
			ig->config_error = pstrdup(error ? error : "unusable credentials");
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		if (ig->pool != NULL)
			http_pool_destroy(ig->pool);
		if (ig->credentials != NULL)
			explicit_bzero(ig->credentials, VARSIZE(ig->credentials));
		MemoryContextDelete(ig->context);
		pfree(ig);
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	return ig;
}

/*
 * An integration replaced in the cache (its credentials changed): messages
 * answered and not recorded yet may still point to it, so it is freed once
 * nothing is in flight or waits to be recorded (novu_deliver_evict_idle).
 */
static void
integration_retire(Integration *ig)
{
	MemoryContext old;

	if (messages_in_flight == 0 && nanswered == 0 && finished_batches == NIL)
	{
		integration_free(ig);
		return;
	}
	old = MemoryContextSwitchTo(cache_context);
	retired_integrations = lappend(retired_integrations, ig);
	MemoryContextSwitchTo(old);
}

/* The cached integration for a row, rebuilt when its credentials changed. */
static Integration *
integration_get(IntegrationRow *row)
{
	IntegrationEntry *entry;
	bool		found;
	bool		secrets_failed = false;
	uint32		key_state = 0;
	Integration *ig;

	entry = hash_search(integration_cache, &row->id, HASH_FIND, NULL);
	if (entry != NULL)
	{
		entry->used_at = GetCurrentTimestamp();
		/* changed credentials take effect once its requests in flight are answered */
		if ((strcmp(entry->ig->updated_at, row->updated_at) == 0 || entry->ig->in_flight > 0) &&
			!(entry->secrets_failed && entry->key_state != secrets_key_state()))
			return entry->ig;
	}
	/* built before it enters the cache: an error leaves no entry half made */
	ig = integration_build(row, &secrets_failed, &key_state);
	entry = hash_search(integration_cache, &row->id, HASH_ENTER, &found);
	if (found)
		integration_retire(entry->ig);
	entry->ig = ig;
	entry->secrets_failed = secrets_failed;
	entry->key_state = key_state;
	entry->used_at = GetCurrentTimestamp();
	return ig;
}

/* Exponential backoff with jitter, at least Retry-After. */
static int64
retry_delay_ms(Message *m)
{
	double		delay = (double) novu_retry_initial_delay;
	int			i;

	for (i = 1; i < m->attempts && delay < novu_retry_max_delay; i++)
		delay *= 2;
	delay = Min(delay, (double) novu_retry_max_delay);
	/* jitter 0.5x .. 1.5x, the same for the messages of one request (so they come due together) */
	delay *= m->jitter > 0 ? m->jitter : 0.5 + pg_prng_double(&pg_global_prng_state);
	if (m->retry_after >= 0)
		delay = Max(delay, m->retry_after * 1000.0);
	return (int64) Max(delay, 1.0);
}

/* Log a configuration error once per integration (not once per message). */
static void
log_config_error(Integration *ig, const char *reason)
{
	if (ig->config_error_logged)
		return;
	ig->config_error_logged = true;
	if (!novu_breaker_first_config_error(ig))
		return;					/* another worker said it */
	ereport(WARNING,
			(errmsg("novu: integration \"%s\" (%s) is misconfigured: %s",
					ig->identifier, ig->provider_id, reason ? reason : "unknown error"),
			 errdetail("Its messages fail and its device tokens are kept."),
			 errhint("Fix it with novu.update_integration(); this is logged once until its credentials change.")));
}

/* A time given in ms since the epoch, as ISO 8601 in UTC with milliseconds. */
static char *
iso_from_ms(int64 ms)
{
	time_t		secs = (time_t) (ms / 1000);
	struct tm	tm;
	char		buf[64];

	if (gmtime_r(&secs, &tm) == NULL || strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		return psprintf("%lld ms", (long long) ms);
	return psprintf("%s.%03dZ", buf, (int) (ms % 1000));
}

/* Turn a message's outcome into its recorded status. */
static void
record_outcome(ResultBatch *rb, Message *m)
{
	Integration *ig = m->integration;
	const char *reason = m->reason ? m->reason : "unknown error";

	switch (m->outcome)
	{
		case OUTCOME_SENT:
			result_add(rb, m, "sent", NULL, 0, m->receipt ? (int64) novu_expo_receipt_delay : -1,
					   "Message sent");
			break;
		case OUTCOME_REMOVE_TOKEN:
			result_prune(rb, ig->id, m->target, m->gone_since_ms);
			if (m->gone_since_ms > 0)
				result_add(rb, m, "failed", reason, 0, -1,
						   psprintf("Token removed: %s (invalid since %s; kept if registered again after that)",
									reason, iso_from_ms(m->gone_since_ms)));
			else
				result_add(rb, m, "failed", reason, 0, -1, psprintf("Token removed: %s", reason));
			break;
		case OUTCOME_CONFIG_ERROR:
			log_config_error(ig, reason);
			result_add(rb, m, "failed", reason, 0, -1,
					   psprintf("Integration configuration error: %s", reason));
			break;
		case OUTCOME_DROP:
			result_add(rb, m, "failed", reason, 0, -1, psprintf("Message dropped: %s", reason));
			break;
		case OUTCOME_NONE:
		case OUTCOME_REAUTH:
		case OUTCOME_RETRY:
			if (m->attempts >= novu_max_attempts && !m->split_resend)
				result_add(rb, m, "failed", reason, 0, -1,
						   psprintf("Failed after %d attempts: %s", m->attempts, reason));
			else
			{
				int64		delay = retry_delay_ms(m);

				result_add(rb, m, "pending", reason, delay, -1,
						   psprintf("Retry %d scheduled in %.1f s: %s", m->attempts + 1, delay / 1000.0, reason));
			}
			break;
	}
}

/* A new batch context (a child of TopMemoryContext: it outlives worker cycles). */
static Batch *
batch_create(void)
{
	Batch	   *b = MemoryContextAllocZero(TopMemoryContext, sizeof(Batch));

	b->context = AllocSetContextCreate(TopMemoryContext, "novu batch", ALLOCSET_DEFAULT_SIZES);
	return b;
}

/* One message of a batch is recorded; a batch with none left waits for the flush. */
static void
batch_done(Batch *b, int n)
{
	b->unrecorded -= n;
	if (b->unrecorded == 0)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		finished_batches = lappend(finished_batches, b);
		MemoryContextSwitchTo(old);
	}
}

/* Queue an answered (or failed-before-sending) message to be recorded. */
static void
add_result(Message *m, Batch *b)
{
	if (nanswered == answered_cap)
	{
		answered_cap = Max(256, answered_cap * 2);
		answered = answered == NULL
			? MemoryContextAlloc(results_context, sizeof(Message *) * answered_cap)
			: repalloc(answered, sizeof(Message *) * answered_cap);
	}
	if (nanswered == 0)
		results_since = GetCurrentTimestamp();
	answered[nanswered++] = m;
	m->handed = true;
	batch_done(b, 1);
}

/*
 * Turn some answered messages into results (into *rb, in results_context).
 * The circuit breaker looks at each integration's answers together, before
 * any token is pruned, and counts each answer once even when a failed
 * transaction makes the results be built again.
 */
static void
build_results_of(Message **msgs, int n, ResultBatch *rb)
{
	MemoryContext old = MemoryContextSwitchTo(results_context);
	int			i;

	memset(rb, 0, sizeof(*rb));
	for (i = 0; i < n; i++)
	{
		Integration *ig = msgs[i]->integration;
		Message   **same;
		int			k = 0;
		int			j;

		/* once per integration: its answers not judged yet */
		if (ig == NULL || msgs[i]->judged)
			continue;
		same = palloc(sizeof(Message *) * n);
		for (j = i; j < n; j++)
		{
			if (msgs[j]->integration == ig && !msgs[j]->judged)
				same[k++] = msgs[j];
		}
		novu_breaker_apply(ig, same, k);
		for (j = 0; j < k; j++)
			same[j]->judged = true;
	}
	for (i = 0; i < n; i++)
	{
		Message    *m = msgs[i];

		/* no integration: an in_app message, or one dropped before it had one */
		if (m->integration == NULL && m->outcome != OUTCOME_RETRY)
			result_add(rb, m, "failed", m->reason, 0, -1, psprintf("Message dropped: %s", m->reason));
		else
			record_outcome(rb, m);
	}
	MemoryContextSwitchTo(old);
}

/* Turn all the answered messages into results (see build_results_of). */
static void
build_results(ResultBatch *rb)
{
	build_results_of(answered, nanswered, rb);
}

/*
 * Free the batches whose messages are all recorded.  Only while no answer
 * waits to be recorded: an answered message lives in its batch's memory.
 */
static void
free_finished_batches(void)
{
	ListCell   *lc;

	Assert(nanswered == 0);
	foreach(lc, finished_batches)
	{
		Batch	   *b = lfirst(lc);

		MemoryContextDelete(b->context);
		pfree(b);
	}
	list_free(finished_batches);
	finished_batches = NIL;
}

/* After the results are committed: forget them and free the finished batches. */
static void
results_recorded(void)
{
	answered = NULL;
	nanswered = answered_cap = 0;
	MemoryContextReset(results_context);
	free_finished_batches();
}

/*
 * Whether the answered messages can be recorded now.  Dead-token answers of an
 * integration whose shared breaker window (all workers) has too few answers
 * wait (up to BREAKER_SETTLE_MS) for more, so that a burst of them is judged
 * as a whole by the circuit breaker before any token is pruned.
 */
static bool
results_ready(void)
{
	TimestampTz now = GetCurrentTimestamp();
	Integration *settled = NULL;
	int			i;

	if (nanswered == 0)
		return false;
	if (nanswered >= RESULTS_FLUSH_AT || TimestampDifferenceExceeds(results_since, now, BREAKER_SETTLE_MS))
		return true;
	for (i = 0; i < nanswered; i++)
	{
		Integration *ig = answered[i]->integration;

		if (ig == NULL || ig == settled || answered[i]->outcome != OUTCOME_REMOVE_TOKEN)
			continue;
		if (!novu_breaker_settled(ig))
			return false;
		settled = ig;
	}
	return true;
}

/*
 * Whether the answered messages are to be recorded now: enough of them, or
 * nothing else in flight, or the oldest waited RESULTS_FLUSH_MS; and they are
 * ready (results_ready).  While other requests are in flight, answers wait a
 * little to be recorded several at once (a record costs about as much for one
 * message as for ten); with none, at once: an answer held back is one a
 * worker that dies meanwhile sends again.
 */
static bool
results_flush_due(void)
{
	if (nanswered == 0)
		return false;
	if (nanswered < RESULTS_FLUSH_AT && messages_in_flight > 0 &&
		!TimestampDifferenceExceeds(results_since, GetCurrentTimestamp(), RESULTS_FLUSH_MS))
		return false;
	return results_ready();
}

/* Milliseconds until the answers waiting are to be recorded (none waiting: -1). */
static long
results_flush_in_ms(void)
{
	long		waited;

	if (nanswered == 0)
		return -1;
	waited = (long) ((GetCurrentTimestamp() - results_since) / 1000);
	/* due but held back (the breaker settles): look again soon */
	return waited >= RESULTS_FLUSH_MS || messages_in_flight == 0 ? 50L : Max(RESULTS_FLUSH_MS - waited, 1L);
}

/*
 * A message recorded for a retry is due after its delay: claim then, not at
 * the next poll (commits' wake-ups only fan out, see queue_claim).
 */
static void
schedule_retries(ResultBatch *rb)
{
	TimestampTz due = 0;
	int			i;

	for (i = 0; i < rb->n; i++)
	{
		if (strcmp(rb->statuses[i], "pending") == 0)
		{
			TimestampTz t = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), Max(rb->delays_ms[i], 0));

			if (due == 0 || t < due)
				due = t;
		}
	}
	if (due != 0 && due < next_claim_at)
		next_claim_at = due;
}

/*
 * Record each answered message in a transaction of its own, after recording
 * them together failed twice: one result that cannot be written must not keep
 * the others from being recorded (they would be sent again).  A message whose
 * result cannot be recorded stays leased; when the lease expires it is claimed
 * again and counts as an attempt, up to novu.max_attempts.
 */
static void
flush_results_one_by_one(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile int lost = 0;
	volatile int i;

	for (i = 0; i < nanswered; i++)
	{
		ResultBatch rb;

		PG_TRY();
		{
			build_results_of(&answered[(int) i], 1, &rb);
			queue_record(&rb);
			schedule_retries(&rb);
		}
		PG_CATCH();
		{
			HOLD_INTERRUPTS();
			MemoryContextSwitchTo(cxt);
			EmitErrorReport();
			AbortOutOfAnyTransaction();
			MemoryContextSwitchTo(cxt);
			FlushErrorState();
			RESUME_INTERRUPTS();
			lost++;
		}
		PG_END_TRY();
		CHECK_FOR_INTERRUPTS();
	}
	if (lost > 0)
		ereport(WARNING,
				(errmsg("novu: the results of %d message(s) could not be recorded", lost),
				 errdetail("Their messages stay leased; once the lease expires they are sent again, counting as an attempt.")));
	results_recorded();
}

/* Record the answered messages in their own transaction. */
static int
flush_results(void)
{
	int			n = nanswered;
	ResultBatch rb;

	if (n == 0)
		return 0;
	if (record_errors >= 2)
		flush_results_one_by_one();
	else
	{
		build_results(&rb);
		queue_record(&rb);
		schedule_retries(&rb);
		results_recorded();
	}
	record_errors = 0;
	return n;
}

/* A guarded call of a provider's build() or classify() (see run_guarded). */
typedef struct ProviderCall
{
	Integration *ig;
	HttpRequest *req;
	Message   **msgs;
	int			n;
} ProviderCall;

/* Build one request (run_guarded body). */
static void
build_call(void *arg)
{
	ProviderCall *c = arg;

	c->req = c->ig->ops->build(c->ig, c->msgs, c->n);
}

/* Classify one answer (run_guarded body). */
static void
classify_call(void *arg)
{
	ProviderCall *c = arg;

	c->ig->ops->classify(c->ig, c->req, c->msgs, c->n);
}

/* A message and its place among those of a send, for ordering (order_requests). */
typedef struct Placed
{
	Message    *m;
	int			pos;
} Placed;

/* Messages with a request key first, by key; the others after, in their order. */
static int
placed_cmp(const void *a, const void *b)
{
	const Placed *x = a;
	const Placed *y = b;
	int			c;

	if ((x->m->request_key == NULL) != (y->m->request_key == NULL))
		return x->m->request_key == NULL ? 1 : -1;
	if (x->m->request_key != NULL && (c = strcmp(x->m->request_key, y->m->request_key)) != 0)
		return c;
	return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/*
 * Order the messages of a provider with request keys (ProviderOps.request_key,
 * or keys its classify() gave a split request, see handle_answer):
 * the messages of each retried request together and first, the new ones after
 * in their order.  A retried message whose content is no longer that of its
 * request (its subscriber's data changed since) cannot go in that body: it
 * leaves the request and goes out in a new one, with a key of its own (a second
 * copy if the first request was processed, never someone else's content).
 */
static void
order_requests(Integration *ig, Message **msgs, int n)
{
	Placed	   *p = palloc(sizeof(Placed) * Max(n, 1));
	bool		left = false;
	int			start;
	int			i;

	for (i = 0; i < n; i++)
	{
		p[i].m = msgs[i];
		p[i].pos = i;
	}
	qsort(p, n, sizeof(Placed), placed_cmp);
	if (ig->ops->same_request != NULL)
	{
		for (start = 0; start < n && p[start].m->request_key != NULL; start = i)
		{
			for (i = start + 1; i < n && p[i].m->request_key != NULL &&
				 strcmp(p[i].m->request_key, p[start].m->request_key) == 0; i++)
			{
				if (!ig->ops->same_request(p[start].m, p[i].m))
				{
					p[i].m->request_key = NULL;
					left = true;
				}
			}
		}
		if (left)
			qsort(p, n, sizeof(Placed), placed_cmp);
	}
	for (i = 0; i < n; i++)
		msgs[i] = p[i].m;
	pfree(p);
}

/* Hand a built request to its integration's connections. */
static void
submit_request(InFlight *f)
{
	int			i;

	f->req->owner = f;
	f->req->send_by = f->batch->send_by;
	f->req->timeout_ms = f->batch->timeout_ms;	/* not a later setting: the lease is this one's */
	/* before: a request curl may have is never given up as unsent (novu_deliver_abandon) */
	for (i = 0; i < f->n; i++)
		f->msgs[i]->handed = true;
	http_submit(f->ig->pool, f->req);
	f->ig->in_flight++;
	messages_in_flight += f->n;
}

/* queue_set_request_keys' arguments, for run_transaction. */
typedef struct RequestKeysCall
{
	int64	   *ids;
	int32	   *attempts;
	char	  **keys;
	int			n;
	bool	   *written;
} RequestKeysCall;

/* Record the request keys of messages (run_transaction body). */
static void
request_keys_call(void *arg)
{
	RequestKeysCall *c = arg;

	(void) queue_set_request_keys(c->ids, c->attempts, c->keys, c->n, c->written);
}

/*
 * Record the request keys of messages (queue_set_request_keys) in a
 * transaction of their own; false, with the error's message in *error, if it
 * failed (it is rolled back).
 */
static bool
record_request_keys(int64 *ids, int32 *attempts, char **keys, int n, bool *written, char **error)
{
	RequestKeysCall call = {ids, attempts, keys, n, written};

	return run_transaction(request_keys_call, &call, error, false);
}

/*
 * Send requests with a new idempotency key once the key is recorded on each
 * of their messages: whatever claims one of them again must retry that very
 * request (novu._claim_groups).  A request whose key could not be recorded on
 * every message is not sent; its messages are retried later (a request never
 * sent needs no key of the past).
 */
static void
submit_with_new_keys(InFlight **fresh, int nfresh, Batch *b)
{
	int64	   *ids;
	int32	   *attempts;
	char	  **keys;
	bool	   *written;
	char	   *error = NULL;
	bool		ok;
	int			n = 0;
	int			at = 0;
	int			i;
	int			j;

	for (i = 0; i < nfresh; i++)
		n += fresh[i]->n;
	ids = palloc(sizeof(int64) * n);
	attempts = palloc(sizeof(int32) * n);
	keys = palloc(sizeof(char *) * n);
	written = palloc(sizeof(bool) * n);
	for (i = 0; i < nfresh; i++)
	{
		for (j = 0; j < fresh[i]->n; j++, at++)
		{
			ids[at] = fresh[i]->msgs[j]->id;
			attempts[at] = fresh[i]->msgs[j]->attempts;
			keys[at] = fresh[i]->msgs[j]->request_key;
		}
	}
	ok = record_request_keys(ids, attempts, keys, n, written, &error);

	at = 0;
	for (i = 0; i < nfresh; i++)
	{
		InFlight   *f = fresh[i];
		bool		all = ok;
		double		jitter;

		for (j = 0; j < f->n; j++)
			all = all && written[at + j];
		at += f->n;
		if (all)
		{
			submit_request(f);
			continue;
		}
		http_request_free(f->req);
		novu_messages_set(f->msgs, f->n, OUTCOME_RETRY,
						  ok ? "not sent: its request lost a message to another attempt before it went out"
						  : psprintf("not sent: could not record its request's idempotency key: %s", error));
		/* its messages come due together, as after an answer */
		jitter = 0.5 + pg_prng_double(&pg_global_prng_state);
		for (j = 0; j < f->n; j++)
		{
			f->msgs[j]->jitter = jitter;
			add_result(f->msgs[j], b);
		}
	}
}

/*
 * Build and submit the requests of some messages of one integration.  A
 * request that cannot be built fails its messages, not the others.  With
 * request keys (ProviderOps.request_key), a retried request is sent as it
 * was, its messages alone under its key, and a new one once its key is
 * recorded (submit_with_new_keys).
 */
static void
submit_messages(Integration *ig, Message **msgs, int n, Batch *b)
{
	int			i;
	int			k;
	int			per = Max(ig->ops->max_batch, 1);
	bool		keyed = ig->ops->request_key != NULL;
	InFlight  **fresh = NULL;
	int			nfresh = 0;

	/* a message the provider refuses to build (bad token, bad override) fails alone */
	if (ig->ops->check != NULL)
	{
		int			kept = 0;

		for (i = 0; i < n; i++)
		{
			char	   *reason = NULL;

			if (ig->ops->check(ig, msgs[i], &reason))
				msgs[kept++] = msgs[i];
			else
			{
				novu_message_set(msgs[i], OUTCOME_DROP, reason);
				add_result(msgs[i], b);
			}
		}
		n = kept;
	}
	if (keyed)
	{
		fresh = palloc(sizeof(InFlight *) * Max(n, 1));
		unsent_built = fresh;	/* an error before they go: their header lists are freed */
		nunsent_built = 0;
	}
	/* the messages of each retried request together (a provider's split requests too, see handle_answer) */
	for (i = 0; i < n && !keyed && msgs[i]->request_key == NULL; i++)
		;
	if (keyed || i < n)
		order_requests(ig, msgs, n);

	for (i = 0; i < n; i += k)
	{
		MemoryContext keep = MemoryContextSwitchTo(scratch_context);
		ProviderCall call;
		char	   *error = NULL;
		HttpRequest *req = NULL;
		InFlight   *f;
		bool		new_key = false;
		int			j;

		if (msgs[i]->request_key != NULL)
		{
			/* a retried request: its messages, whatever their number, and no other */
			for (k = 1; i + k < n && msgs[i + k]->request_key != NULL &&
				 strcmp(msgs[i + k]->request_key, msgs[i]->request_key) == 0; k++)
				;
		}
		else
		{
			/* a request carries messages the provider lets share it (adjacent ones) */
			k = Min(per, n - i);
			if (ig->ops->same_request != NULL)
			{
				for (j = 1; j < k && ig->ops->same_request(msgs[i], msgs[i + j]); j++)
					;
				k = j;
			}
			if (keyed)
			{
				char	   *key = ig->ops->request_key(ig, msgs + i, k);

				MemoryContextSwitchTo(keep);
				key = key != NULL ? pstrdup(key) : NULL;
				MemoryContextSwitchTo(scratch_context);
				for (j = 0; j < k; j++)
					msgs[i + j]->request_key = key;
				new_key = (key != NULL);
			}
		}
		call.ig = ig;
		call.req = NULL;
		call.msgs = msgs + i;
		call.n = k;

		if (run_guarded(build_call, &call, &error))
			req = call.req;
		else
		{
			MemoryContextSwitchTo(keep);
			novu_messages_set(msgs + i, k, OUTCOME_DROP, psprintf("Could not build the request: %s", error));
			MemoryContextSwitchTo(scratch_context);
		}
		MemoryContextSwitchTo(keep);
		if (req != NULL)
			req = http_request_keep(req);
		keep_answers(msgs + i, k);
		MemoryContextReset(scratch_context);
		if (req == NULL)
		{
			/* build() decided their outcomes (e.g. PayloadTooLarge) */
			for (j = 0; j < k; j++)
				add_result(msgs[i + j], b);
			continue;
		}
		f = palloc(sizeof(InFlight));
		f->ig = ig;
		f->req = req;
		f->msgs = msgs + i;
		f->n = k;
		f->batch = b;
		if (new_key)
		{
			fresh[nfresh++] = f;
			nunsent_built = nfresh;
		}
		else
			submit_request(f);
	}
	unsent_built = NULL;
	nunsent_built = 0;
	if (nfresh > 0)
		submit_with_new_keys(fresh, nfresh, b);
}

/* A guarded call of a provider's authorize() (see run_guarded). */
typedef struct AuthorizeCall
{
	Integration *ig;
	bool		force;
	Outcome		failure;
	char	   *error;
	bool		ok;
} AuthorizeCall;

/* Authorize an integration (run_guarded body). */
static void
authorize_call(void *arg)
{
	AuthorizeCall *c = arg;

	c->ok = c->ig->ops->authorize(c->ig, c->force, &c->failure, &c->error);
}

/*
 * The integration's authorization (an OAuth access token), or false with the
 * outcome and reason for its messages.  An error raised while reading the
 * token server's answer fails them with a retry, never the worker's batch.
 */
static bool
authorize_guarded(Integration *ig, bool force, Outcome *failure, char **error)
{
	AuthorizeCall c = {ig, force, OUTCOME_RETRY, NULL, false};
	char	   *raised = NULL;

	if (!run_guarded(authorize_call, &c, &raised))
	{
		*failure = OUTCOME_RETRY;
		*error = psprintf("authorization failed: %s", raised);
		return false;
	}
	*failure = c.failure;
	*error = c.error;
	return c.ok;
}

/* Send the messages of one integration, or fail them if it cannot be used. */
static void
send_group(Integration *ig, Message **msgs, int n, Batch *b)
{
	Outcome		failure = OUTCOME_RETRY;
	char	   *error = NULL;
	int			i;

	if (ig->config_error != NULL)
		novu_messages_set(msgs, n, OUTCOME_CONFIG_ERROR, ig->config_error);
	else if (ig->ops->authorize != NULL && !authorize_guarded(ig, false, &failure, &error))
		novu_messages_set(msgs, n, failure, error);
	else
	{
		submit_messages(ig, msgs, n, b);
		return;
	}
	for (i = 0; i < n; i++)
		add_result(msgs[i], b);
}

/* A guarded call of render_message() (see run_guarded). */
typedef struct RenderCall
{
	RenderCache *cache;
	ClaimedRow *row;
	bool		rendered;
	char	   *error;
} RenderCall;

/* Render one message (run_guarded body). */
static void
render_call(void *arg)
{
	RenderCall *c = arg;

	c->rendered = render_message(c->cache, c->row, &c->error);
}

/*
 * The in_app channel has no provider: its messages are rendered like the
 * others and "delivered" by the in_app sink, which writes them into the feed
 * (queue_store_in_app, novu._store_in_app).  A claim's in_app messages are
 * stored together, in one short transaction after the claim's.
 */
typedef struct InAppBatch
{
	int			n;
	Message   **msgs;
	int64	   *ids;
	int32	   *attempts;
	char	  **subjects;
	char	  **contents;
	char	  **urls;
} InAppBatch;

/* Room for up to n in_app messages (in the current memory context). */
static void
in_app_batch_init(InAppBatch *ia, int n)
{
	ia->n = 0;
	ia->msgs = palloc(sizeof(Message *) * n);
	ia->ids = palloc(sizeof(int64) * n);
	ia->attempts = palloc(sizeof(int32) * n);
	ia->subjects = palloc(sizeof(char *) * n);
	ia->contents = palloc(sizeof(char *) * n);
	ia->urls = palloc(sizeof(char *) * n);
}

/* A guarded call of render_in_app() (see run_guarded). */
typedef struct InAppRenderCall
{
	RenderCache *cache;
	ClaimedRow *row;
	bool		rendered;
	char	   *subject;
	char	   *content;
	char	   *url;
	char	   *error;
} InAppRenderCall;

/* Render one in_app message (run_guarded body). */
static void
in_app_render_call(void *arg)
{
	InAppRenderCall *c = arg;

	c->rendered = render_in_app(c->cache, c->row, &c->subject, &c->content, &c->url, &c->error);
}

/*
 * Render a claimed in_app message and add it to *ia (its strings copied into
 * the current context, the batch's); false, with the message's outcome set,
 * if it cannot be delivered.
 */
static bool
in_app_prepare(RenderCache *cache, ClaimedRow *r, InAppBatch *ia)
{
	Message    *m = r->msg;
	MemoryContext keep;
	InAppRenderCall call = {cache, r, false, NULL, NULL, NULL, NULL};
	char	   *error = NULL;
	bool		rendered;

	m->channel = CHANNEL_IN_APP;
	if (r->step == NULL)
	{
		novu_message_set(m, OUTCOME_DROP, "Workflow not found");
		return false;
	}
	if (r->subscriber == NULL)
	{
		novu_message_set(m, OUTCOME_DROP, "Subscriber not found");
		return false;
	}
	keep = MemoryContextSwitchTo(scratch_context);
	rendered = run_guarded(in_app_render_call, &call, &error) && call.rendered;
	MemoryContextSwitchTo(keep);
	if (call.error != NULL)
		error = call.error;
	if (rendered)
	{
		ia->msgs[ia->n] = m;
		ia->ids[ia->n] = m->id;
		ia->attempts[ia->n] = m->attempts;
		ia->subjects[ia->n] = call.subject ? pstrdup(call.subject) : NULL;
		ia->contents[ia->n] = pstrdup(call.content);
		ia->urls[ia->n] = call.url ? pstrdup(call.url) : NULL;
		ia->n++;
	}
	else
		novu_message_set(m, OUTCOME_DROP, psprintf("Template error: %s", error ? error : "unknown"));
	MemoryContextReset(scratch_context);
	return rendered;
}

/* queue_store_in_app's arguments, for run_transaction. */
typedef struct InAppStoreCall
{
	InAppBatch *ia;
	int			from;
	int			n;
} InAppStoreCall;

/* Store in_app messages in the feed (run_transaction body). */
static void
in_app_store_call(void *arg)
{
	InAppStoreCall *c = arg;
	InAppBatch *ia = c->ia;

	(void) queue_store_in_app(ia->ids + c->from, ia->attempts + c->from, ia->subjects + c->from,
							  ia->contents + c->from, ia->urls + c->from, c->n);
}

/*
 * Store messages [from, from + n) of *ia in the feed; false, with the
 * error's message in *error, if the transaction failed (it is rolled back).
 */
static bool
in_app_store(InAppBatch *ia, int from, int n, char **error)
{
	InAppStoreCall call = {ia, from, n};

	/* a cancel: the messages not stored are recorded as not sent (novu_deliver_abandon) */
	return run_transaction(in_app_store_call, &call, error, true);
}

/*
 * The in_app sink of one claim: store its rendered in_app messages in the
 * feed, together; if that fails, each alone, and one that still cannot be
 * stored is recorded failed with the reason.  A message stored is recorded
 * (sent) by the same transaction; one whose lease went to another attempt
 * meanwhile is left to that attempt.
 */
static void
in_app_deliver(InAppBatch *ia, Batch *b)
{
	char	   *error = NULL;
	int			i;

	if (ia->n == 0)
		return;
	if (in_app_store(ia, 0, ia->n, &error))
	{
		for (i = 0; i < ia->n; i++)
			ia->msgs[i]->handed = true;
		batch_done(b, ia->n);
		return;
	}
	for (i = 0; i < ia->n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (in_app_store(ia, i, 1, &error))
		{
			ia->msgs[i]->handed = true;
			batch_done(b, 1);
		}
		else
		{
			novu_message_set(ia->msgs[i], OUTCOME_DROP, psprintf("Could not store the in-app message: %s", error));
			add_result(ia->msgs[i], b);
		}
	}
}

/*
 * In one short transaction, record the answered messages, fan out new
 * triggers (if fanout), and claim a batch; then render it and submit its
 * requests.  Messages that cannot be sent (deleted integration, render
 * error, ...) get their result at once.  Returns the number of messages
 * claimed; *next_due_ms says when more is due, *fanned how many rows the
 * fan-out handled.
 */
static int
claim_and_send(int limit, long *next_due_ms, bool fanout, bool claim_due, int *fanned)
{
	Batch	   *b = batch_create();
	MemoryContext old = MemoryContextSwitchTo(b->context);
	ClaimedRow *rows;
	IntegrationRow *irows = NULL;
	int			nirows = 0;
	int			n;
	int			i;
	int			g;
	Message  ***groups;
	int		   *ngroup;
	RenderCache *step_cache;
	Message    *prev_kept;
	ClaimedRow *prev_row;
	InAppBatch	in_app;
	int			lease_ms = LEASE_MS(novu_request_timeout);

	{
		ResultBatch rb;
		/*
		 * Answers due to be recorded ride along with a claim that was due
		 * anyway (one transaction for both); a commit's wake-up alone takes
		 * none, so that its new messages leave without waiting for a record
		 * (novu_deliver records them after sending).
		 */
		bool		recording = record_errors == 0 && claim_due && results_flush_due();

		if (recording)
			build_results(&rb);
		claiming = b;
		/* taken before the claim's transaction begins: its lease ends later */
		b->timeout_ms = novu_request_timeout;
		b->send_by = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												 lease_ms - b->timeout_ms - RECORD_MS(b->timeout_ms));
		n = queue_claim(limit, lease_ms, &rows, next_due_ms, recording ? &rb : NULL, fanout, claim_due, fanned,
						&irows, &nirows);
		claiming = NULL;
		if (recording)
		{
			schedule_retries(&rb);
			results_recorded();
		}
	}
	if (n == 0)
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(b->context);
		pfree(b);
		return 0;
	}
	b->unrecorded = n;
	b->msgs = palloc(sizeof(Message *) * n);
	b->nmsgs = n;
	for (i = 0; i < n; i++)
		b->msgs[i] = rows[i].msg;
	sending = b;				/* until each message is handed out (novu_deliver_abandon) */

	/* the batch's integrations were read with it (integration_get: the cache, refreshed if changed) */
	groups = palloc0(sizeof(Message **) * Max(nirows, 1));
	ngroup = palloc0(sizeof(int) * Max(nirows, 1));
	for (g = 0; g < nirows; g++)
		groups[g] = palloc(sizeof(Message *) * n);

	/* resolve and render every message; failures get their result now */
	step_cache = render_cache_create();
	prev_kept = NULL;
	prev_row = NULL;
	in_app_batch_init(&in_app, n);
	for (i = 0; i < n; i++)
	{
		ClaimedRow *r = &rows[i];
		Message    *m = r->msg;
		char	   *error = NULL;
		int			j;

		/* in_app: no integration and no target; rendered for the feed (in_app_deliver) */
		if (r->integration_id == 0 && m->target == NULL)
		{
			if (!in_app_prepare(step_cache, r, &in_app))
				add_result(m, b);
			continue;
		}
		for (j = 0; j < nirows && irows[j].id != r->integration_id; j++)
			;
		if (j == nirows)
			novu_message_set(m, OUTCOME_DROP, "Integration deleted");
		else
		{
			m->integration = integration_get(&irows[j]);
			if (!irows[j].active)
				novu_message_set(m, OUTCOME_DROP, "Integration is not active");
			else if (r->step == NULL)
				novu_message_set(m, OUTCOME_DROP, "Workflow not found");
			else if (r->subscriber == NULL)
				novu_message_set(m, OUTCOME_DROP, "Subscriber not found");
			else
			{
				MemoryContext keep = MemoryContextSwitchTo(scratch_context);
				RenderCall	call = {step_cache, r, false, NULL};
				bool		rendered = run_guarded(render_call, &call, &error) && call.rendered;

				MemoryContextSwitchTo(keep);
				if (call.error != NULL)
					error = call.error;
				if (rendered)
				{
					keep_rendered(m, r, prev_kept, prev_row);
					prev_kept = m;
					prev_row = r;
				}
				else
					novu_message_set(m, OUTCOME_DROP, psprintf("Template error: %s", error ? error : "unknown"));
				MemoryContextReset(scratch_context);
				if (rendered)
				{
					groups[j][ngroup[j]++] = m;
					continue;
				}
			}
		}
		add_result(m, b);
	}

	in_app_deliver(&in_app, b);

	/* every integration's requests go out together, multiplexed */
	for (g = 0; g < nirows; g++)
	{
		if (ngroup[g] > 0)
			send_group(integration_get(&irows[g]), groups[g], ngroup[g], b);
	}
	sending = NULL;
	MemoryContextSwitchTo(old);
	return n;
}

/*
 * Record the request keys classify() gave messages of an answered request
 * (sent[i]: the key msgs[i] went out with): a request-level error that may be
 * some messages' only, and the provider splits the request.  A message it
 * sets to be retried with a new key is retried in that request, apart from
 * the others (novu._claim_groups), as a new attempt like any retry; the key
 * is recorded before its result, in a transaction of its own (as a new
 * request's, submit_with_new_keys).  A key that is not recorded (an error, the
 * lease went to another attempt), or on a message that will not be retried,
 * is dropped: the message is retried as before, in whatever request comes.
 */
static void
record_split_keys(Message **msgs, int n, char **sent)
{
	int64	   *ids = palloc(sizeof(int64) * n);
	int32	   *attempts = palloc(sizeof(int32) * n);
	char	  **keys = palloc(sizeof(char *) * n);
	bool	   *written = palloc(sizeof(bool) * n);
	int		   *at = palloc(sizeof(int) * n);
	char	   *error = NULL;
	bool		ok;
	int			k = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		Message    *m = msgs[i];

		if (m->request_key == sent[i])
			continue;
		if (m->request_key == NULL || m->outcome != OUTCOME_RETRY ||
			m->attempts >= novu_max_attempts + SPLIT_EXTRA_ATTEMPTS ||
			(sent[i] != NULL && strcmp(m->request_key, sent[i]) == 0))
		{
			m->request_key = sent[i];
			continue;
		}
		m->request_key = pstrdup(m->request_key);	/* out of the scratch context */
		ids[k] = m->id;
		attempts[k] = m->attempts;
		keys[k] = m->request_key;
		at[k++] = i;
	}
	if (k == 0)
		return;
	ok = record_request_keys(ids, attempts, keys, k, written, &error);
	for (i = 0; i < k; i++)
	{
		if (!ok || !written[i])
			msgs[at[i]]->request_key = sent[at[i]];
		else
			msgs[at[i]]->split_resend = true;
	}
}

/*
 * A request was answered: classify its messages and queue their results; a
 * credential the provider rejected is renewed once and the messages resent;
 * the keys of a request the provider split are recorded (record_split_keys).
 */
static void
handle_answer(HttpRequest *req)
{
	InFlight   *f = req->owner;
	Integration *ig = f->ig;
	MemoryContext old = MemoryContextSwitchTo(f->batch->context);
	Message   **again;
	char	  **sent_keys = palloc(sizeof(char *) * f->n);
	int			nagain = 0;
	int			i;

	ig->in_flight--;
	messages_in_flight -= f->n;
	for (i = 0; i < f->n; i++)
		sent_keys[i] = f->msgs[i]->request_key;
	MemoryContextSwitchTo(scratch_context);
	{
		ProviderCall call = {ig, req, f->msgs, f->n};
		char	   *error = NULL;

		/* an answer that cannot be read is retried like a lost one, in the request it went out in */
		if (!run_guarded(classify_call, &call, &error))
		{
			novu_messages_set(f->msgs, f->n, OUTCOME_RETRY, psprintf("Could not read the answer: %s", error));
			for (i = 0; i < f->n; i++)
				f->msgs[i]->request_key = sent_keys[i];
		}
	}
	{
		double		jitter = 0.5 + pg_prng_double(&pg_global_prng_state);

		for (i = 0; i < f->n; i++)
			f->msgs[i]->jitter = jitter;
	}
	novu_breaker_note(ig, f->msgs, f->n);
	MemoryContextSwitchTo(f->batch->context);
	keep_answers(f->msgs, f->n);
	record_split_keys(f->msgs, f->n, sent_keys);
	MemoryContextReset(scratch_context);
	http_request_free(req);
	/* its answers are kept: an error from here on records them (novu_deliver_abandon) */
	answering = f;

	/* every answer but REAUTH_THEN_RETRY is final: recorded whatever comes next */
	again = palloc(sizeof(Message *) * f->n);
	for (i = 0; i < f->n; i++)
	{
		if (f->msgs[i]->outcome == OUTCOME_REAUTH)
			again[nagain++] = f->msgs[i];
		else
			add_result(f->msgs[i], f->batch);
	}

	/* REAUTH_THEN_RETRY: renew the credential (at most every 10 s) and resend */
	if (nagain > 0)
	{
		TimestampTz now = GetCurrentTimestamp();
		Outcome		failure = OUTCOME_RETRY;
		char	   *error = NULL;
		bool		resend = false;

		if (ig->reauth_at == 0 || TimestampDifferenceExceeds(ig->reauth_at, now, REAUTH_INTERVAL_MS))
		{
			ig->reauth_at = now;
			if (ig->ops->authorize == NULL || authorize_guarded(ig, true, &failure, &error))
				resend = true;
			else
				novu_messages_set(again, nagain, failure, error);
		}
		answering = NULL;		/* resent, they are handed to curl again */
		if (resend)
		{
			novu_messages_set(again, nagain, OUTCOME_NONE, NULL);
			submit_messages(ig, again, nagain, f->batch);
		}
		else
		{
			for (i = 0; i < nagain; i++)
				add_result(again[i], f->batch);
		}
	}
	answering = NULL;
	MemoryContextSwitchTo(old);
}

/*
 * One step of the pipeline: if poked (a commit, the poll) or work is known to
 * wait, and there is room, run one short transaction that records answered
 * messages, fans out new triggers and claims a batch, and send it; let the
 * requests in flight progress (waiting at most wait_ms, less if something is
 * answered or the latch is set); classify the answers; record results that
 * waited long enough.  Returns the number of rows claimed, fanned out or
 * answered; *sleep_ms is shortened when something falls due before the next
 * poll; *fanout_more says the fan-out may have more to do.
 */
int
novu_deliver(bool poke, bool *fanout_more, long wait_ms, long *sleep_ms)
{
	TimestampTz now = GetCurrentTimestamp();
	int			handled = 0;
	HttpRequest *req;

	/*
	 * The next claim is never planned further than a poll interval ahead:
	 * further means the wall clock was set back, and due work would wait as
	 * long as the clock went back.
	 */
	if (next_claim_at > TimestampTzPlusMilliseconds(now, novu_poll_interval))
		next_claim_at = now;

	/* answers held back by an error are recorded first, on their own */
	if (record_errors > 0 && nanswered > 0)
		handled += flush_results();

	/* keep the network busy before a transaction: answers keep flowing */
	if (http_in_flight() > 0 && messages_in_flight >= novu_batch_size / 2)
		(void) http_wait(0);
	if (claim_limit <= 0 || claim_limit > novu_batch_size)
		claim_limit = novu_batch_size;
	if ((poke || *fanout_more || last_claim_full || now >= next_claim_at) &&
		messages_in_flight < novu_batch_size)
	{
		long		next_due = -1;
		int			fanned = 0;
		int			limit = claim_limit;
		bool		claim_due = last_claim_full || now >= next_claim_at;
		int			n;
		Size		bytes;

		/* plans on statistics that still see an empty queue are the slow ones */
		(void) queue_refresh_stats();
		n = claim_and_send(limit, &next_due, poke || *fanout_more, claim_due, &fanned);
		bytes = queue_last_claim_bytes();

		/*
		 * A fan-out that took fewer outbox rows than it could saw them all
		 * (its own share and then the others', see novu._fanout): rows
		 * committed since come with their own wake-up.
		 */
		*fanout_more = (fanned >= limit);
		handled += n + fanned;
		last_claim_full = (n >= limit);

		/*
		 * More is waiting than this worker takes at once: a commit woke only
		 * this one, so wake another rather than let it sleep until its poll.
		 */
		if (*fanout_more || last_claim_full)
			novu_wake_other_worker();

		/*
		 * Memory stays bounded however large the events: while a claim holds
		 * more event data than the budget, the next one takes fewer rows.
		 */
		if (bytes > CLAIM_BYTES_BUDGET && n > 1)
			claim_limit = Max(1, (int) ((double) n * CLAIM_BYTES_BUDGET / bytes));
		else if (claim_limit < novu_batch_size)
			claim_limit = Min(novu_batch_size, claim_limit * 2);
		if (!last_claim_full && next_due != -2)
		{
			TimestampTz at = TimestampTzPlusMilliseconds(now, next_due >= 0 ? Min(next_due, novu_poll_interval)
														 : novu_poll_interval);

			/* a claim that was not due only brings the schedule forward */
			if (claim_due || at < next_claim_at)
				next_claim_at = at;
		}
	}

	/*
	 * Wait for answers: not at all after a claim (more may be claimed at
	 * once), but for one answer at least when no claim was possible because
	 * enough messages are in flight, or this would spin until one came.
	 */
	if (http_in_flight() > 0)
	{
		long		timeout = handled > 0 ? 0 : messages_in_flight >= novu_batch_size ? Max(wait_ms, 200L) : wait_ms;

		/* waiting for answers, this worker takes a commit's wake-up at once */
		if (timeout > 0)
			novu_set_worker_waiting(novu_worker_slot, true);
		(void) http_wait(timeout);
		if (timeout > 0)
			novu_set_worker_waiting(novu_worker_slot, false);
	}
	while ((req = http_take_done()) != NULL)
	{
		handle_answer(req);
		handled++;
	}

	/* record in batches: enough results, or none in flight, or the oldest waited RESULTS_FLUSH_MS */
	if (results_flush_due())
		flush_results();
	if (nanswered > 0)
		*sleep_ms = Min(*sleep_ms, results_flush_in_ms());	/* held answers: back in time to record them */
	else if (finished_batches != NIL)
		free_finished_batches();	/* recorded without answers (in_app): no flush comes to free them */

	if (!last_claim_full)
	{
		long		until_claim = (long) ((next_claim_at - GetCurrentTimestamp()) / 1000);

		*sleep_ms = Min(*sleep_ms, Max(until_claim, 1L));
	}
	return handled;
}

/* Whether requests are in flight or results wait to be recorded. */
bool
novu_deliver_busy(void)
{
	return messages_in_flight > 0 || results_flush_due();
}

/*
 * An error while an answer was being handled, once its answers were kept
 * (handle_answer renewing a credential): the messages waiting for the renewal
 * are recorded as the retry their answer asked for, not left leased.
 */
static void
abandon_answer(void)
{
	InFlight   *f = answering;
	int			i;

	if (f == NULL)
		return;
	answering = NULL;
	for (i = 0; i < f->n; i++)
	{
		if (f->msgs[i]->outcome != OUTCOME_REAUTH)
			continue;			/* given its result already */
		f->msgs[i]->outcome = OUTCOME_RETRY;
		add_result(f->msgs[i], f->batch);
	}
}

/*
 * After an error: keep the answers not recorded yet (dropping them would send
 * their messages again once their leases expired).  The next cycle records
 * them on their own, and one by one if that fails again.  Requests still in
 * flight go on and are recorded as usual.
 */
void
novu_deliver_abandon(void)
{
	int			i;

	if (nanswered > 0)
		record_errors++;
	/* an error in the express fan-out: the general one takes its triggers for a while */
	queue_express_failed();
	/* a claim that failed took nothing: its batch has no message to wait for */
	if (claiming != NULL)
	{
		MemoryContextDelete(claiming->context);
		pfree(claiming);
		claiming = NULL;
	}

	/*
	 * An error after a claim (a cancel while rendering, or while waiting for
	 * an OAuth token): the messages it had not handed out were not sent.
	 * They are recorded so (an attempt, retried after the usual delay), at
	 * once rather than when their lease ends, and their batch is freed once
	 * the requests it did send are answered.
	 */
	if (sending != NULL)
	{
		Batch	   *b = sending;
		MemoryContext old = MemoryContextSwitchTo(b->context);

		sending = NULL;
		for (i = 0; i < b->nmsgs; i++)
		{
			Message    *m = b->msgs[i];

			if (m->handed)
				continue;
			novu_message_set(m, OUTCOME_RETRY, "not sent: the worker stopped with an error before sending it (see the server log)");
			add_result(m, b);
		}
		MemoryContextSwitchTo(old);
	}
	abandon_answer();
	/* requests built and not handed to curl: only their header lists live outside the batch */
	for (i = 0; i < nunsent_built; i++)
		http_request_free(unsent_built[i]->req);
	unsent_built = NULL;
	nunsent_built = 0;
	taking_answers = false;
	flushing_before_wait = false;
}

/* Record the answered messages (run_transaction body). */
static void
flush_call(void *arg)
{
	(void) flush_results();
}

/*
 * Before the worker waits for a request of its own (an OAuth token, Expo
 * receipts: http_run_one), take the answers that came and record the answers
 * it holds, so that an answer waits for at most one such request before it is
 * recorded (the lease leaves room for one, see LEASE_MS): with several
 * integrations renewing their tokens in one batch the waits would add up.
 * While an answer renews its credential (handle_answer), the answers held are
 * recorded and the others wait for the loop that takes them.  Dead-token
 * answers the circuit breaker waits to judge together (results_ready) are not
 * recorded early: they wait at most BREAKER_SETTLE_MS more.  An error while
 * recording keeps the answers for the next cycle, as any error while
 * recording does (novu_deliver_abandon); a cancel or a shutdown goes on to the
 * worker's handler.
 */
static void
record_before_blocking(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	HttpRequest *req;
	char	   *error = NULL;

	Assert(cxt != scratch_context); /* reset by handle_answer */
	if (flushing_before_wait || IsTransactionState())
		return;
	/* not while an answer is handled: it is renewing that answer's credential */
	if (answering == NULL && !taking_answers)
	{
		taking_answers = true;
		PG_TRY();
		{
			while ((req = http_take_done()) != NULL)
				handle_answer(req);
		}
		PG_CATCH();
		{
			abandon_answer();
			taking_answers = false;
			PG_RE_THROW();
		}
		PG_END_TRY();
		taking_answers = false;
		MemoryContextSwitchTo(cxt);
	}
	if (nanswered == 0 || record_errors > 0 || !results_ready())
		return;
	flushing_before_wait = true;
	if (!run_transaction(flush_call, NULL, &error, true))
		record_errors++;
	flushing_before_wait = false;
}

/*
 * Check the receipts that are due (providers with ProviderOps.receipts, e.g.
 * Expo: a ticket "ok" only meant Expo accepted the message; the receipt says
 * whether APNs/FCM took it).  A dead-token receipt prunes the token and turns
 * the message failed.  Returns receipts handled.
 */
int
novu_check_receipts(void)
{
	ReceiptRow *rows;
	int			n;
	int			i;
	int			g;
	int64	   *ids;
	int			nids = 0;
	IntegrationRow *irows = NULL;
	int			nirows = 0;
	Integration **igs;
	Message   **msgs;
	HttpRequest **reqs;
	ResultBatch rb;
	int64		later_ms = Max((int64) novu_expo_receipt_delay, 1000);

	n = queue_claim_receipts(1000, LEASE_MS(novu_request_timeout), &rows);
	if (n == 0)
		return 0;

	ids = palloc(sizeof(int64) * n);
	for (i = 0; i < n; i++)
	{
		int			j;

		for (j = 0; j < nids && ids[j] != rows[i].integration_id; j++)
			;
		if (j == nids && rows[i].integration_id != 0)
			ids[nids++] = rows[i].integration_id;
	}
	if (nids > 0)
		nirows = queue_load_integrations(ids, nids, &irows);
	igs = palloc0(sizeof(Integration *) * Max(nirows, 1));
	reqs = palloc0(sizeof(HttpRequest *) * Max(nirows, 1));
	msgs = palloc0(sizeof(Message *) * n);

	/* one getReceipts request per Expo integration (at most 1000 ids were claimed) */
	for (g = 0; g < nirows; g++)
	{
		char	  **tickets = palloc(sizeof(char *) * n);
		int			k = 0;

		igs[g] = integration_get(&irows[g]);
		if (igs[g]->ops == NULL || igs[g]->ops->receipts == NULL || igs[g]->config_error != NULL)
			continue;
		for (i = 0; i < n && k < igs[g]->ops->receipts->max_batch; i++)
		{
			if (rows[i].integration_id == irows[g].id && rows[i].ticket != NULL)
				tickets[k++] = rows[i].ticket;
		}
		if (k == 0)
			continue;
		reqs[g] = igs[g]->ops->receipts->request(igs[g], tickets, k);
		http_run_one(igs[g]->pool, reqs[g]);
	}

	memset(&rb, 0, sizeof(rb));
	for (g = 0; g < nirows; g++)
	{
		Jsonb	   *body = NULL;
		Message   **group = palloc(sizeof(Message *) * n);
		int			k = 0;

		if (reqs[g] != NULL && reqs[g]->result == CURLE_OK && reqs[g]->status == 200)
			body = jsonb_parse_or_null(reqs[g]->response.data, reqs[g]->response.len);
		else if (reqs[g] != NULL && reqs[g]->policy_refused)
			log_config_error(igs[g], netpolicy_reason(http_transport_error(reqs[g])));
		for (i = 0; i < n; i++)
		{
			Message    *m;
			Outcome		outcome;
			char	   *reason;

			if (rows[i].integration_id != irows[g].id)
				continue;
			m = palloc0(sizeof(Message));
			m->id = rows[i].id;
			m->attempts = rows[i].attempts;
			m->target = rows[i].device_token;
			m->integration = igs[g];
			m->retry_after = -1;
			msgs[i] = m;
			if (body != NULL && rows[i].ticket != NULL && igs[g]->ops->receipts->read(body, rows[i].ticket, &outcome, &reason))
			{
				novu_message_set(m, outcome, reason);
				group[k++] = m;
			}
		}
		novu_breaker_note(igs[g], group, k);
		novu_breaker_apply(igs[g], group, k);
		if (reqs[g] != NULL)
			http_request_free(reqs[g]);
	}

	for (i = 0; i < n; i++)
	{
		Message    *m = msgs[i];
		const char *reason;

		if (m == NULL)
		{
			/* the integration is gone: nothing left to check */
			Message		gone = {.id = rows[i].id, .attempts = rows[i].attempts};

			result_add(&rb, &gone, "expired", NULL, 0, -1, NULL);
			continue;
		}
		reason = m->reason ? m->reason : "unknown error";
		switch (m->outcome)
		{
			case OUTCOME_SENT:
				result_add(&rb, m, "ok", NULL, 0, -1, NULL);
				break;
			case OUTCOME_NONE:
				/* no receipt yet: look again later, for up to a day */
				if (rows[i].sent_age_s > 24 * 3600)
					result_add(&rb, m, "expired", NULL, 0, -1, NULL);
				else
					result_add(&rb, m, "later", NULL, later_ms, -1, NULL);
				break;
			case OUTCOME_REMOVE_TOKEN:
				result_prune(&rb, m->integration->id, m->target, 0);
				result_add(&rb, m, "failed", reason, 0, -1, psprintf("Token removed: %s (receipt)", reason));
				break;
			case OUTCOME_RETRY:
			case OUTCOME_REAUTH:
				if (m->attempts >= novu_max_attempts)
					result_add(&rb, m, "failed", reason, 0, -1,
							   psprintf("Failed after %d attempts: %s (receipt)", m->attempts, reason));
				else
					result_add(&rb, m, "pending", reason, retry_delay_ms(m), -1,
							   psprintf("Receipt says %s: sending again", reason));
				break;
			case OUTCOME_CONFIG_ERROR:
				log_config_error(m->integration, reason);
				result_add(&rb, m, "failed", reason, 0, -1,
						   psprintf("Integration configuration error: %s (receipt)", reason));
				break;
			case OUTCOME_DROP:
				result_add(&rb, m, "failed", reason, 0, -1, psprintf("Message dropped: %s (receipt)", reason));
				break;
		}
	}
	queue_record_receipts(&rb);
	return n;
}
