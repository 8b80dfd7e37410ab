/*
 * breaker.c
 *		The dead-token circuit breaker (DESIGN.md 4 and 5, PROTOCOLS.md 7),
 *		counted in shared memory across all delivery workers.
 *
 * A provider's dead-token code is trusted only when the integration's other
 * answers make it credible: a wrong project, endpoint or "secure" flag makes
 * every token look dead, and pruning on that deletes every token it touches.
 * Every worker counts its answers into one window per integration
 * (BREAKER_WINDOW_MS): accepted messages, dead-token answers, and how many
 * different tokens those named.  A dead-token answer removes its token only if
 *
 *	- the breaker is not tripped.  It trips, for BREAKER_HOLD_MS, when at least
 *	  BREAKER_MIN_DEAD different tokens were reported dead in the window and
 *	  they are BREAKER_RATIO or more of its verdicts (accepted messages plus
 *	  different dead tokens).  Then tokens are kept, the messages fail as a
 *	  configuration error, and a WARNING says so;
 *	- and the integration has shown that it works: a message of it, with its
 *	  current credentials, was accepted within BREAKER_TRUST_MS.  An
 *	  integration that has delivered nothing cannot tell a dead device from its
 *	  own misconfiguration on a small sample, so its dead-token answers keep
 *	  their tokens (the message fails with a reason saying so).
 *
 * The pipeline (deliver.c) holds dead-token answers for up to a second while
 * the window has fewer than BREAKER_MIN_SAMPLE verdicts, so that a burst is
 * judged as a whole.  Changed credentials (updated_at) start the integration's
 * slot afresh: a fixed integration is not held back by its broken past, and a
 * broken one is not trusted for its working past.
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "delivery/breaker.h"
#include "providers/provider.h"

#define BREAKER_SLOTS		128		/* integrations followed at once (least recently used evicted) */
#define BREAKER_RING		64		/* dead tokens remembered per window, to count different ones */
#define BREAKER_WINDOW_MS	60000
#define BREAKER_MIN_SAMPLE	20
#define BREAKER_MIN_DEAD	3
#define BREAKER_RATIO		0.8
#define BREAKER_HOLD_MS		(10 * 60 * 1000)
#define BREAKER_TRUST_MS	(60 * 60 * 1000)

/* What the workers know about one integration's answers. */
typedef struct BreakerSlot
{
	int64		integration_id; /* 0: free */
	uint32		version;		/* hash of the credentials' updated_at */
	TimestampTz last_used;
	TimestampTz window_start;
	int32		sent;			/* accepted messages in the window */
	int32		dead;			/* dead-token answers in the window */
	int32		dead_tokens;	/* different tokens among them */
	int32		ring_len;
	int32		ring_next;
	uint32		ring[BREAKER_RING]; /* hashes of the window's latest dead tokens */
	TimestampTz last_sent;		/* last accepted message: the integration works */
	TimestampTz tripped_until;	/* pruning suspended until then */
	bool		config_error_logged;	/* a worker logged its configuration error */
} BreakerSlot;

typedef struct BreakerShared
{
	LWLock	   *lock;
	BreakerSlot slots[BREAKER_SLOTS];
} BreakerShared;

static BreakerShared *breaker = NULL;

/* Ask for the breaker's shared memory and its lock. */
void
novu_breaker_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(BreakerShared)));
	RequestNamedLWLockTranche("novu breaker", 1);
}

/* Create or attach the breaker's shared memory (AddinShmemInitLock held). */
void
novu_breaker_shmem_startup(void)
{
	bool		found;

	breaker = ShmemInitStruct("novu breaker", sizeof(BreakerShared), &found);
	if (!found)
	{
		memset(breaker, 0, sizeof(BreakerShared));
		breaker->lock = &(GetNamedLWLockTranche("novu breaker"))->lock;
	}
}

/* The credentials version of a cached integration. */
static uint32
credentials_version(Integration *ig)
{
	return hash_bytes((const unsigned char *) ig->updated_at, strlen(ig->updated_at));
}

/* Forget a slot's counts and give it to an integration. */
static void
slot_reset(BreakerSlot *s, int64 integration_id, uint32 version)
{
	memset(s, 0, sizeof(BreakerSlot));
	s->integration_id = integration_id;
	s->version = version;
}

/* The slot of an integration, or NULL (lock held, shared or exclusive). */
static BreakerSlot *
slot_find(Integration *ig)
{
	uint32		version = credentials_version(ig);
	int			i;

	for (i = 0; i < BREAKER_SLOTS; i++)
	{
		BreakerSlot *s = &breaker->slots[i];

		if (s->integration_id == ig->id)
			return s->version == version ? s : NULL;
	}
	return NULL;
}

/*
 * The slot of an integration (lock held exclusively): its own, reset when its
 * credentials changed, else a free or the least recently used one.
 */
static BreakerSlot *
slot_get(Integration *ig, TimestampTz now)
{
	uint32		version = credentials_version(ig);
	BreakerSlot *victim = &breaker->slots[0];
	int			i;

	for (i = 0; i < BREAKER_SLOTS; i++)
	{
		BreakerSlot *s = &breaker->slots[i];

		if (s->integration_id == ig->id)
		{
			if (s->version != version)
				slot_reset(s, ig->id, version);
			victim = s;
			break;
		}
		if (s->last_used < victim->last_used)
			victim = s;
	}
	if (i == BREAKER_SLOTS)
		slot_reset(victim, ig->id, version);
	victim->last_used = now;

	/* a new window once the last one is over */
	if (victim->window_start == 0 || TimestampDifferenceExceeds(victim->window_start, now, BREAKER_WINDOW_MS))
	{
		victim->window_start = now;
		victim->sent = victim->dead = victim->dead_tokens = 0;
		victim->ring_len = victim->ring_next = 0;
	}
	return victim;
}

/* Count a dead token in the window; a token seen in it before is not a different one. */
static void
slot_add_dead(BreakerSlot *s, uint32 hash)
{
	int			i;

	s->dead++;
	for (i = 0; i < s->ring_len; i++)
	{
		if (s->ring[i] == hash)
			return;
	}
	s->dead_tokens++;
	s->ring[s->ring_next] = hash;
	s->ring_next = (s->ring_next + 1) % BREAKER_RING;
	if (s->ring_len < BREAKER_RING)
		s->ring_len++;
}

/* Count answered messages of one integration into its shared window. */
void
novu_breaker_note(Integration *ig, Message **msgs, int n)
{
	TimestampTz now;
	uint32	   *dead;
	int			ndead = 0;
	int			sent = 0;
	int			i;
	BreakerSlot *s;

	if (breaker == NULL || ig == NULL || n == 0)
		return;
	dead = palloc(sizeof(uint32) * n);
	for (i = 0; i < n; i++)
	{
		if (msgs[i]->outcome == OUTCOME_SENT)
			sent++;
		else if (msgs[i]->outcome == OUTCOME_REMOVE_TOKEN && msgs[i]->target != NULL)
			dead[ndead++] = hash_bytes((const unsigned char *) msgs[i]->target,
									   strlen(msgs[i]->target));
	}
	if (sent + ndead > 0)
	{
		now = GetCurrentTimestamp();
		LWLockAcquire(breaker->lock, LW_EXCLUSIVE);
		s = slot_get(ig, now);
		s->sent += sent;
		if (sent > 0)
			s->last_sent = now;
		for (i = 0; i < ndead; i++)
			slot_add_dead(s, dead[i]);
		LWLockRelease(breaker->lock);
	}
	pfree(dead);
}

/*
 * Whether this is the first configuration error of the integration (with its
 * current credentials) that any worker reports: it is logged once, not once
 * per worker.
 */
bool
novu_breaker_first_config_error(Integration *ig)
{
	BreakerSlot *s;
	bool		first;

	if (breaker == NULL)
		return true;
	LWLockAcquire(breaker->lock, LW_EXCLUSIVE);
	s = slot_get(ig, GetCurrentTimestamp());
	first = !s->config_error_logged;
	s->config_error_logged = true;
	LWLockRelease(breaker->lock);
	return first;
}

/* Whether the integration's window holds enough answers to judge dead-token answers now. */
bool
novu_breaker_settled(Integration *ig)
{
	TimestampTz now = GetCurrentTimestamp();
	BreakerSlot *s;
	bool		settled;

	if (breaker == NULL)
		return true;
	LWLockAcquire(breaker->lock, LW_SHARED);
	s = slot_find(ig);
	settled = s != NULL &&
		(s->tripped_until > now ||
		 (!TimestampDifferenceExceeds(s->window_start, now, BREAKER_WINDOW_MS) &&
		  s->sent + s->dead >= BREAKER_MIN_SAMPLE));
	LWLockRelease(breaker->lock);
	return settled;
}

/* Decide the dead-token answers among msgs: prune, or keep the token with the reason. */
void
novu_breaker_apply(Integration *ig, Message **msgs, int n)
{
	TimestampTz now;
	BreakerSlot *s;
	bool		tripped = false;
	bool		just_tripped = false;
	bool		trusted = false;
	int			dead_tokens = 0;
	int			verdicts = 0;
	int			removals = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		if (msgs[i]->outcome == OUTCOME_REMOVE_TOKEN)
			removals++;
	}
	if (removals == 0 || ig == NULL)
		return;

	if (breaker != NULL)
	{
		now = GetCurrentTimestamp();
		LWLockAcquire(breaker->lock, LW_EXCLUSIVE);
		s = slot_get(ig, now);
		tripped = s->tripped_until > now;
		if (!tripped && s->dead_tokens >= BREAKER_MIN_DEAD &&
			s->dead_tokens >= BREAKER_RATIO * (s->sent + s->dead_tokens))
		{
			s->tripped_until = TimestampTzPlusMilliseconds(now, BREAKER_HOLD_MS);
			tripped = just_tripped = true;
		}
		dead_tokens = s->dead_tokens;
		verdicts = s->sent + s->dead_tokens;
		trusted = s->last_sent != 0 && !TimestampDifferenceExceeds(s->last_sent, now, BREAKER_TRUST_MS);
		LWLockRelease(breaker->lock);
	}

	if (just_tripped)
		ereport(WARNING,
				(errmsg("novu: integration \"%s\": %d of %d answers in the last minute reported the device token dead; token pruning is suspended",
						ig->identifier, dead_tokens, verdicts),
				 errdetail("Counted across all delivery workers: so many different tokens reported dead at once almost always means a misconfigured integration (wrong project, endpoint or \"secure\" flag), not dead devices. For the next %d minutes its tokens are kept and these messages fail.",
						   BREAKER_HOLD_MS / 60000),
				 errhint("Check the integration's project, credentials, endpoint and \"secure\" (production/sandbox) flag.")));
	else if (!tripped && !trusted && !ig->prune_warned)
	{
		ig->prune_warned = true;
		ereport(WARNING,
				(errmsg("novu: integration \"%s\" reported device tokens dead before delivering any message; the tokens are kept",
						ig->identifier),
				 errdetail("A dead-token answer removes a token only once the integration has delivered a message in the last hour with its current credentials: until then it may mean a misconfiguration."),
				 errhint("If every message of this integration fails, check its project, credentials, endpoint and \"secure\" flag.")));
	}

	for (i = 0; i < n; i++)
	{
		Message    *m = msgs[i];
		const char *reason = m->reason ? m->reason : "dead token";

		if (m->outcome != OUTCOME_REMOVE_TOKEN)
			continue;
		if (tripped)
			novu_message_set(m, OUTCOME_CONFIG_ERROR,
						psprintf("%s (pruning suspended: most answers of this integration reported different tokens dead at once)",
								 reason));
		else if (!trusted)
			novu_message_set(m, OUTCOME_DROP,
						psprintf("%s (token kept, pruning suspended: this integration has not delivered a message in the last hour, so the answer may mean a misconfiguration)",
								 reason));
	}
}
