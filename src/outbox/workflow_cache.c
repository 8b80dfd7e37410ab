/*
 * workflow_cache.c
 *		Each backend's cache of the workflows it triggered: whether each one
 *		exists, is active and has steps.
 *
 * novu.trigger asks this on every call, inside the application's
 * transaction; the answer changes only when a workflow is written.  A
 * statement trigger on novu.workflows (novu._workflows_changed) sends a
 * relcache invalidation of the table with every such write: other backends
 * receive it when the writer commits, the writer's own backend at its next
 * command, and an aborted write undoes itself the same way.  Every lookup
 * first takes in the invalidations already queued, and entries are filled
 * from a probe under the latest snapshot: an entry is never older than a
 * write whose invalidation was taken in, so it can never outlive one.
 *
 * Without that trigger (a library newer than the extension's SQL, or the
 * trigger disabled), nothing is cached.
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "outbox/lookup.h"
#include "outbox/workflow_cache.h"

#define WORKFLOW_KEY_LEN 256	/* identifiers have at most 255 characters */
#define WORKFLOW_TRIGGER "workflows_changed"

/* One cached workflow. */
typedef struct WorkflowEntry
{
	char		workflow_id[WORKFLOW_KEY_LEN];
	WorkflowState state;
} WorkflowEntry;

static HTAB *cache = NULL;
static Oid	cache_relid = InvalidOid;	/* novu.workflows when the cache was built */
static bool cache_enabled = false;
static bool callback_registered = false;

PG_FUNCTION_INFO_V1(novu_workflows_changed);

/* Drop the cache when novu.workflows (or every relation) is invalidated. */
static void
workflow_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == cache_relid)
	{
		if (cache != NULL)
			hash_destroy(cache);
		cache = NULL;
		cache_relid = InvalidOid;
	}
}

/* Whether novu.workflows carries the enabled trigger that invalidates the cache. */
static bool
has_invalidation_trigger(Relation rel)
{
	TriggerDesc *td = rel->trigdesc;
	int			i;

	for (i = 0; td != NULL && i < td->numtriggers; i++)
	{
		if (strcmp(td->triggers[i].tgname, WORKFLOW_TRIGGER) == 0 &&
			td->triggers[i].tgenabled != TRIGGER_DISABLED)
			return true;
	}
	return false;
}

/* Build an empty cache for the current novu.workflows, if it can be kept fresh. */
static void
cache_build(void)
{
	Oid			relid = novu_relid("workflows");
	Relation	rel;
	HASHCTL		ctl;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(workflow_relcache_callback, (Datum) 0);
		callback_registered = true;
	}
	rel = table_open(relid, AccessShareLock);
	cache_enabled = has_invalidation_trigger(rel);
	table_close(rel, AccessShareLock);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = WORKFLOW_KEY_LEN;
	ctl.entrysize = sizeof(WorkflowEntry);
	ctl.hcxt = TopMemoryContext;
	cache = hash_create("novu workflows", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	cache_relid = relid;
}

/*
 * The cached state of a workflow: true with *state set, or false if it must
 * be probed (then novu_workflow_cache_put() the answer of a probe under the
 * latest snapshot).
 */
bool
novu_workflow_cache_get(const char *workflow_id, WorkflowState *state)
{
	WorkflowEntry *e;

	AcceptInvalidationMessages();
	if (cache == NULL)
		cache_build();
	if (!cache_enabled || strlen(workflow_id) >= WORKFLOW_KEY_LEN)
		return false;
	e = hash_search(cache, workflow_id, HASH_FIND, NULL);
	if (e == NULL)
		return false;
	*state = e->state;
	return true;
}

/* Remember a workflow's state (from a probe under the latest snapshot). */
void
novu_workflow_cache_put(const char *workflow_id, WorkflowState state)
{
	WorkflowEntry *e;

	if (cache == NULL || !cache_enabled || strlen(workflow_id) >= WORKFLOW_KEY_LEN)
		return;
	e = hash_search(cache, workflow_id, HASH_ENTER, NULL);
	e->state = state;
}

/*
 * novu._workflows_changed(): statement trigger on novu.workflows.  Sends the
 * relcache invalidation that drops every backend's workflow cache.
 */
Datum
novu_workflows_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("novu._workflows_changed() must be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}
