/*
 * deliver.c
 *		One delivery round: claim a batch, render it, send it through the
 *		providers, classify the answers, record the results.
 *
 * Claim and record are short transactions (queue.c); rendering and all network
 * I/O happen between them, with no transaction, snapshot or lock held.
 * Outcomes follow PROTOCOLS.md section 7: sent; token removed; retried with
 * exponential backoff and jitter (Retry-After honoured) up to novu.max_attempts;
 * credential renewed once then retried; configuration error (tokens kept, logged
 * once per integration); dropped.  A circuit breaker stops token pruning when
 * most answers of an integration say "dead token" at once.
 */
#include "postgres.h"

#include "common/pg_prng.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "http.h"
#include "jsonb_util.h"
#include "novu.h"
#include "provider.h"
#include "queue.h"
#include "template.h"

#define BREAKER_WINDOW_MS		60000
#define BREAKER_MIN_ANSWERS		20
#define BREAKER_RATIO			0.8
#define BREAKER_HOLD_MS			(10 * 60 * 1000)
#define STEP_KEY_LEN			400

/* Cached integrations, by id. */
typedef struct IntegrationEntry
{
	int64		id;
	Integration *ig;
} IntegrationEntry;

/* Compiled templates of one workflow step, for one batch. */
typedef struct StepTemplates
{
	char		key[STEP_KEY_LEN];
	Template   *title;
	Template   *content;
	char	   *error;			/* a template that no longer parses */
} StepTemplates;

/* One request in flight with the messages it carries. */
typedef struct InFlight
{
	Integration *ig;
	HttpRequest *req;
	Message   **msgs;
	int			n;
} InFlight;

static HTAB *integration_cache = NULL;
static MemoryContext cache_context = NULL;

static const ProviderOps *const providers[] = {&fcm_provider, &apns_provider, &expo_provider};

/* The provider implementation for a provider id, or NULL. */
const ProviderOps *
provider_lookup(const char *provider_id)
{
	int			i;

	for (i = 0; i < lengthof(providers); i++)
	{
		if (strcmp(providers[i]->provider_id, provider_id) == 0)
			return providers[i];
	}
	return NULL;
}

/* Set a message's outcome and reason. */
void
message_set(Message *m, Outcome outcome, const char *reason)
{
	m->outcome = outcome;
	m->reason = reason ? pstrdup(reason) : NULL;
}

/* Set the same outcome on several messages. */
void
messages_set(Message **msgs, int n, Outcome outcome, const char *reason)
{
	int			i;

	for (i = 0; i < n; i++)
		message_set(msgs[i], outcome, reason);
}

/* Outcome of a request that got no HTTP answer: always worth a retry. */
void
classify_transport(HttpRequest *req, Message **msgs, int n)
{
	messages_set(msgs, n, OUTCOME_RETRY, http_transport_error(req));
}

/* The integration's endpoint override without a trailing slash, or the default. */
char *
integration_base_url(Integration *ig, const char *default_base)
{
	char	   *endpoint = jsonb_container_get_string(&ig->credentials->root, "endpoint");
	size_t		len;

	if (endpoint == NULL || endpoint[0] == '\0')
		return pstrdup(default_base);
	len = strlen(endpoint);
	while (len > 0 && endpoint[len - 1] == '/')
		endpoint[--len] = '\0';
	return endpoint;
}

/* Create the HTTP engine and the integration cache; once per worker. */
void
novu_deliver_init(void)
{
	HASHCTL		ctl;

	http_init();
	cache_context = AllocSetContextCreate(TopMemoryContext, "novu integrations", ALLOCSET_DEFAULT_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(IntegrationEntry);
	ctl.hcxt = cache_context;
	integration_cache = hash_create("novu integrations", 32, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/* The cached integration for a row, rebuilt when its credentials changed. */
static Integration *
integration_get(IntegrationRow *row)
{
	IntegrationEntry *entry;
	bool		found;
	Integration *ig;
	MemoryContext old;
	char	   *error = NULL;

	entry = hash_search(integration_cache, &row->id, HASH_ENTER, &found);
	if (found && strcmp(entry->ig->updated_at, row->updated_at) == 0)
		return entry->ig;
	if (found)
		MemoryContextDelete(entry->ig->context);

	old = MemoryContextSwitchTo(cache_context);
	ig = palloc0(sizeof(Integration));
	ig->context = AllocSetContextCreate(cache_context, "novu integration", ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(ig->context);
	ig->id = row->id;
	ig->identifier = pstrdup(row->identifier);
	ig->provider_id = pstrdup(row->provider_id);
	ig->credentials = palloc(VARSIZE(row->credentials));
	memcpy(ig->credentials, row->credentials, VARSIZE(row->credentials));
	ig->updated_at = pstrdup(row->updated_at);
	ig->ops = provider_lookup(row->provider_id);
	if (ig->ops == NULL)
		ig->config_error = psprintf("provider \"%s\" is not delivered by this version", row->provider_id);
	else if (!ig->ops->prepare(ig, &error))
		ig->config_error = pstrdup(error ? error : "unusable credentials");
	MemoryContextSwitchTo(old);
	entry->ig = ig;
	return ig;
}

/* Deep-merge a provider's overrides: step then trigger, each in both Novu forms. */
static Jsonb *
provider_overrides(Jsonb *step_overrides, Jsonb *trigger_overrides, const char *provider_id)
{
	Jsonb	   *result = NULL;
	Jsonb	   *sources[2] = {step_overrides, trigger_overrides};
	int			i;

	for (i = 0; i < 2; i++)
	{
		JsonbValue	v;
		JsonbValue	p;

		if (sources[i] == NULL || !JB_ROOT_IS_OBJECT(sources[i]))
			continue;
		/* overrides.providers.<id> first, then overrides.<id> */
		if (jsonb_container_get(&sources[i]->root, "providers", &p) && p.type == jbvBinary &&
			jsonb_container_get(p.val.binary.data, provider_id, &v) && v.type == jbvBinary &&
			JsonContainerIsObject(v.val.binary.data))
			result = jsonb_deep_merge(result, JsonbValueToJsonb(&v));
		if (jsonb_container_get(&sources[i]->root, provider_id, &v) && v.type == jbvBinary &&
			JsonContainerIsObject(v.val.binary.data))
			result = jsonb_deep_merge(result, JsonbValueToJsonb(&v));
	}
	return result;
}

/* Compile a step's title and content, or find them in this batch's cache. */
static StepTemplates *
step_templates(HTAB *cache, ClaimedRow *r)
{
	StepTemplates *st;
	bool		found;
	char		key[STEP_KEY_LEN];
	char	   *src;

	strlcpy(key, r->step_key ? r->step_key : "", STEP_KEY_LEN);
	st = hash_search(cache, key, HASH_ENTER, &found);
	if (found)
		return st;
	st->title = NULL;
	st->content = NULL;
	st->error = NULL;
	src = jsonb_container_get_string(&r->step->root, "title");
	if (src != NULL && (st->title = template_parse(src, strlen(src), &st->error)) == NULL)
		return st;
	src = jsonb_container_get_string(&r->step->root, "content");
	if (src != NULL)
		st->content = template_parse(src, strlen(src), &st->error);
	return st;
}

/* The rendering context {payload, subscriber, actor} of a message. */
static Jsonb *
render_context(ClaimedRow *r)
{
	JsonbParseState *state = NULL;
	JsonbValue	v;
	Jsonb	   *parts[3] = {r->payload, r->subscriber, r->actor};
	const char *names[3] = {"payload", "subscriber", "actor"};
	int			i;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (i = 0; i < 3; i++)
	{
		jsonb_push_key(&state, names[i]);
		if (parts[i] == NULL)
		{
			v.type = jbvNull;
			pushJsonbValue(&state, WJB_VALUE, &v);
		}
		else
		{
			v.type = jbvBinary;
			v.val.binary.data = &parts[i]->root;
			v.val.binary.len = VARSIZE(parts[i]) - VARHDRSZ;
			pushJsonbValue(&state, WJB_VALUE, &v);
		}
	}
	return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
}

/* Render the step's data object: string values are templates. */
static Jsonb *
render_step_data(Jsonb *step, Jsonb *context, char **error)
{
	JsonbValue	data;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	JsonbParseState *state = NULL;
	JsonbValue *result = NULL;

	if (!jsonb_container_get(&step->root, "data", &data) || data.type != jbvBinary ||
		!JsonContainerIsObject(data.val.binary.data))
		return NULL;
	it = JsonbIteratorInit(data.val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_VALUE && v.type == jbvString)
		{
			char	   *src = pnstrdup(v.val.string.val, v.val.string.len);
			Template   *t = template_parse(src, strlen(src), error);
			char	   *out;

			if (t == NULL || (out = template_render(t, context, error)) == NULL)
				return NULL;
			v.val.string.val = out;
			v.val.string.len = strlen(out);
		}
		result = pushJsonbValue(&state, tok, tok < WJB_BEGIN_ARRAY ? &v : NULL);
	}
	return JsonbValueToJsonb(result);
}

/* Render one message's title, body, data and overrides; false with *error on failure. */
static bool
render_message(HTAB *cache, ClaimedRow *r, char **error)
{
	Message    *m = r->msg;
	StepTemplates *st = step_templates(cache, r);
	Jsonb	   *context;
	Jsonb	   *step_data;
	JsonbValue	ov;

	if (st->error != NULL)
	{
		*error = st->error;
		return false;
	}
	context = render_context(r);
	m->title = st->title ? template_render(st->title, context, error) : pstrdup("");
	if (m->title == NULL)
		return false;
	m->body = st->content ? template_render(st->content, context, error) : pstrdup("");
	if (m->body == NULL)
		return false;

	*error = NULL;
	step_data = render_step_data(r->step, context, error);
	if (*error != NULL)
		return false;
	m->data = r->payload ? r->payload : jsonb_empty_object();
	if (step_data != NULL)
		m->data = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(m->data),
													 JsonbPGetDatum(step_data)));

	m->overrides = provider_overrides(jsonb_container_get(&r->step->root, "overrides", &ov) && ov.type == jbvBinary
									  ? JsonbValueToJsonb(&ov) : NULL,
									  r->trigger_overrides, m->integration->provider_id);
	return true;
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
	delay *= 0.5 + pg_prng_double(&pg_global_prng_state);	/* jitter: 0.5x .. 1.5x */
	if (m->retry_after >= 0)
		delay = Max(delay, m->retry_after * 1000.0);
	return (int64) Max(delay, 1.0);
}

/*
 * The circuit breaker: when most answers of an integration within a minute say
 * "dead token", the integration is misconfigured (wrong project, wrong secure
 * flag) far more likely than every device died.  Then stop pruning for a while.
 */
static void
apply_breaker(Integration *ig, Message **msgs, int n)
{
	TimestampTz now = GetCurrentTimestamp();
	int			answers = 0;
	int			removals = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		if (msgs[i]->outcome == OUTCOME_NONE)
			continue;
		answers++;
		if (msgs[i]->outcome == OUTCOME_REMOVE_TOKEN)
			removals++;
	}
	if (ig->window_start == 0 || TimestampDifferenceExceeds(ig->window_start, now, BREAKER_WINDOW_MS))
	{
		ig->window_start = now;
		ig->window_answers = 0;
		ig->window_removals = 0;
	}
	ig->window_answers += answers;
	ig->window_removals += removals;

	if (ig->breaker_until < now && ig->window_answers >= BREAKER_MIN_ANSWERS &&
		ig->window_removals >= BREAKER_RATIO * ig->window_answers)
	{
		ig->breaker_until = TimestampTzPlusMilliseconds(now, BREAKER_HOLD_MS);
		ereport(WARNING,
				(errmsg("novu: integration \"%s\": %d of %d answers in the last minute reported the device token dead; token pruning is suspended",
						ig->identifier, ig->window_removals, ig->window_answers),
				 errdetail("So many dead tokens at once almost always means a misconfigured integration, not dead devices; the tokens are kept and these messages fail."),
				 errhint("Check the integration's project, credentials and \"secure\" (production/sandbox) flag.")));
	}
	if (ig->breaker_until >= now)
	{
		for (i = 0; i < n; i++)
		{
			if (msgs[i]->outcome == OUTCOME_REMOVE_TOKEN)
				message_set(msgs[i], OUTCOME_CONFIG_ERROR,
							psprintf("%s (pruning suspended: most tokens of this integration were reported dead at once)",
									 msgs[i]->reason ? msgs[i]->reason : "dead token"));
		}
	}
}

/* Log a configuration error once per integration (not once per message). */
static void
log_config_error(Integration *ig, const char *reason)
{
	if (ig->config_error_logged)
		return;
	ig->config_error_logged = true;
	ereport(WARNING,
			(errmsg("novu: integration \"%s\" (%s) is misconfigured: %s",
					ig->identifier, ig->provider_id, reason ? reason : "unknown error"),
			 errdetail("Its messages fail and its device tokens are kept."),
			 errhint("Fix it with novu.update_integration(); this is logged once per worker until its credentials change.")));
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
			result_prune(rb, ig->id, m->device_token);
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
			if (m->attempts >= novu_max_attempts)
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

/* Build, submit and collect the requests of one integration's messages. */
static List *
submit_messages(Integration *ig, Message **msgs, int n, List *inflight)
{
	int			i;
	int			batch = Max(ig->ops->max_batch, 1);

	for (i = 0; i < n; i += batch)
	{
		int			k = Min(batch, n - i);
		HttpRequest *req = ig->ops->build(ig, msgs + i, k);
		InFlight   *f;

		if (req == NULL)
			continue;			/* build() decided their outcomes */
		f = palloc(sizeof(InFlight));
		f->ig = ig;
		f->req = req;
		f->msgs = msgs + i;
		f->n = k;
		http_submit(req);
		inflight = lappend(inflight, f);
	}
	return inflight;
}

/* Send the messages of one integration and classify the answers. */
static void
send_group(Integration *ig, Message **msgs, int n, List **inflight)
{
	Outcome		failure = OUTCOME_RETRY;
	char	   *error = NULL;

	if (ig->config_error != NULL)
	{
		messages_set(msgs, n, OUTCOME_CONFIG_ERROR, ig->config_error);
		return;
	}
	if (!ig->ops->authorize(ig, false, &failure, &error))
	{
		messages_set(msgs, n, failure, error);
		return;
	}
	*inflight = submit_messages(ig, msgs, n, *inflight);
}

/* Wait for the requests in flight and let their providers classify the answers. */
static void
collect(List *inflight)
{
	ListCell   *lc;

	http_run();
	foreach(lc, inflight)
	{
		InFlight   *f = lfirst(lc);

		f->ig->ops->classify(f->ig, f->req, f->msgs, f->n);
		http_request_free(f->req);
	}
}

/* Messages of one integration in a batch. */
typedef struct Group
{
	Integration *ig;
	Message   **msgs;
	int			n;
} Group;

/*
 * One delivery round.  Returns the number of messages handled; *sleep_ms is
 * shortened when a retry or receipt is due before the next poll.
 */
int
novu_deliver(long *sleep_ms)
{
	ClaimedRow *rows;
	long		next_due = -1;
	int			n;
	int			i;
	int			g;
	int			ngroups = 0;
	Group	   *groups;
	IntegrationRow *irows = NULL;
	int			nirows = 0;
	int64	   *ids;
	int			nids = 0;
	HASHCTL		ctl;
	HTAB	   *step_cache;
	List	   *inflight = NIL;
	ResultBatch rb;
	int			lease_ms = novu_request_timeout * 3 + 30000;

	n = queue_claim(novu_batch_size, lease_ms, &rows, &next_due);
	if (n == 0)
	{
		if (next_due >= 0)
			*sleep_ms = Min(*sleep_ms, Max(next_due, 1L));
		return novu_expo_receipts(sleep_ms);
	}

	/* integrations of the batch, from the cache (refreshed if changed) */
	ids = palloc(sizeof(int64) * n);
	for (i = 0; i < n; i++)
	{
		int			j;

		if (rows[i].integration_id == 0)
			continue;
		for (j = 0; j < nids && ids[j] != rows[i].integration_id; j++)
			;
		if (j == nids)
			ids[nids++] = rows[i].integration_id;
	}
	if (nids > 0)
		nirows = queue_load_integrations(ids, nids, &irows);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = STEP_KEY_LEN;
	ctl.entrysize = sizeof(StepTemplates);
	ctl.hcxt = CurrentMemoryContext;
	step_cache = hash_create("novu step templates", 16, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	groups = palloc0(sizeof(Group) * (nirows + 1));
	for (g = 0; g < nirows; g++)
	{
		groups[g].ig = integration_get(&irows[g]);
		groups[g].msgs = palloc(sizeof(Message *) * n);
		groups[g].n = 0;
	}
	ngroups = nirows;

	/* resolve and render every message; failures get their outcome now */
	for (i = 0; i < n; i++)
	{
		ClaimedRow *r = &rows[i];
		Message    *m = r->msg;
		char	   *error = NULL;
		int			j;

		for (j = 0; j < nirows && irows[j].id != r->integration_id; j++)
			;
		if (j == nirows)
		{
			message_set(m, OUTCOME_DROP, "Integration deleted");
			continue;
		}
		m->integration = groups[j].ig;
		if (!irows[j].active)
			message_set(m, OUTCOME_DROP, "Integration is not active");
		else if (r->step == NULL)
			message_set(m, OUTCOME_DROP, "Workflow not found");
		else if (r->subscriber == NULL)
			message_set(m, OUTCOME_DROP, "Subscriber not found");
		else if (!render_message(step_cache, r, &error))
			message_set(m, OUTCOME_DROP, psprintf("Template error: %s", error ? error : "unknown"));
		else
			groups[j].msgs[groups[j].n++] = m;
		CHECK_FOR_INTERRUPTS();
	}

	/* send: every integration's requests go out together, multiplexed */
	for (g = 0; g < ngroups; g++)
	{
		groups[g].ig->reauthed = false;
		if (groups[g].n > 0)
			send_group(groups[g].ig, groups[g].msgs, groups[g].n, &inflight);
	}
	collect(inflight);

	/* REAUTH_THEN_RETRY: renew the credential once, resend those messages */
	inflight = NIL;
	for (g = 0; g < ngroups; g++)
	{
		Group	   *gr = &groups[g];
		Message   **again = palloc(sizeof(Message *) * Max(gr->n, 1));
		int			nagain = 0;

		for (i = 0; i < gr->n; i++)
		{
			if (gr->msgs[i]->outcome == OUTCOME_REAUTH)
				again[nagain++] = gr->msgs[i];
		}
		if (nagain == 0 || gr->ig->reauthed)
			continue;
		gr->ig->reauthed = true;
		{
			Outcome		failure = OUTCOME_RETRY;
			char	   *error = NULL;

			if (!gr->ig->ops->authorize(gr->ig, true, &failure, &error))
				messages_set(again, nagain, failure, error);
			else
			{
				messages_set(again, nagain, OUTCOME_NONE, NULL);
				inflight = submit_messages(gr->ig, again, nagain, inflight);
			}
		}
	}
	if (inflight != NIL)
		collect(inflight);

	/* outcomes → results */
	memset(&rb, 0, sizeof(rb));
	for (g = 0; g < ngroups; g++)
		apply_breaker(groups[g].ig, groups[g].msgs, groups[g].n);
	for (i = 0; i < n; i++)
	{
		Message    *m = rows[i].msg;

		if (m->integration == NULL)
		{
			/* no integration: nothing to prune or log against */
			result_add(&rb, m, "failed", m->reason, 0, -1, psprintf("Message dropped: %s", m->reason));
			continue;
		}
		record_outcome(&rb, m);
	}
	queue_record(&rb);
	return n + novu_expo_receipts(sleep_ms);
}

/*
 * Check the Expo receipts that are due: a ticket "ok" only meant Expo accepted
 * the message; the receipt says whether APNs/FCM took it.  DeviceNotRegistered
 * prunes the token and turns the message failed.  Returns receipts handled.
 */
int
novu_expo_receipts(long *sleep_ms)
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

	n = queue_claim_receipts(1000, novu_request_timeout * 3 + 30000, &rows);
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
		if (igs[g]->ops != &expo_provider || igs[g]->config_error != NULL)
			continue;
		for (i = 0; i < n; i++)
		{
			if (rows[i].integration_id == irows[g].id && rows[i].ticket != NULL)
				tickets[k++] = rows[i].ticket;
		}
		if (k == 0)
			continue;
		reqs[g] = expo_receipts_request(igs[g], tickets, k);
		http_submit(reqs[g]);
	}
	http_run();

	memset(&rb, 0, sizeof(rb));
	for (g = 0; g < nirows; g++)
	{
		Jsonb	   *body = NULL;
		Message   **group = palloc(sizeof(Message *) * n);
		int			k = 0;

		if (reqs[g] != NULL && reqs[g]->result == CURLE_OK && reqs[g]->status == 200)
			body = jsonb_parse_or_null(reqs[g]->response.data, reqs[g]->response.len);
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
			m->device_token = rows[i].device_token;
			m->integration = igs[g];
			m->retry_after = -1;
			msgs[i] = m;
			if (body != NULL && rows[i].ticket != NULL && expo_receipt(body, rows[i].ticket, &outcome, &reason))
			{
				message_set(m, outcome, reason);
				group[k++] = m;
			}
		}
		apply_breaker(igs[g], group, k);
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
				result_prune(&rb, m->integration->id, m->device_token);
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
