/*
 * outbox.c
 *		The outbox row of a trigger or a broadcast, written in the caller's
 *		transaction (novu.events).
 *
 * A transactionId given by the caller may have been used already (Novu's
 * idempotency): that row is inserted through SPI with ON CONFLICT DO NOTHING,
 * which also waits for, and respects, a concurrent insert of the same key.
 * A transactionId we generated (UUIDv7) cannot collide, and it is the common
 * case on the application's hot path: that row goes to the heap and its
 * indexes through the executor's single-row insert (the one logical
 * replication applies rows with), without planning or starting an executor
 * for a one-row INSERT.  Its other columns get their declared defaults,
 * compiled once per backend and forgotten when the table changes.  A table
 * with triggers or row security takes the SPI path.
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "outbox/lookup.h"
#include "novu.h"
#include "outbox/outbox.h"

/*
 * The columns a trigger or broadcast gives; every other one takes its default.
 * topics (0.7.0) is optional: the library may run over an older schema until
 * ALTER EXTENSION novu UPDATE, and a trigger naming no topic leaves it NULL.
 */
enum
{
	COL_TRANSACTION_ID,
	COL_KIND,
	COL_WORKFLOW_ID,
	COL_RECIPIENTS,
	COL_PAYLOAD,
	COL_OVERRIDES,
	COL_ACTOR,
	COL_TOPICS,
	NUM_GIVEN
};

static const char *const given_names[NUM_GIVEN] = {
	"transaction_id", "kind", "workflow_id", "recipients", "payload", "overrides", "actor", "topics"
};

/* What the direct insert needs to know of novu.events, kept per backend. */
typedef struct OutboxShape
{
	Oid			relid;			/* InvalidOid: to be looked up again */
	AttrNumber	given[NUM_GIVEN];
	int			ndefaults;
	AttrNumber *default_attnums;
	Expr	  **default_exprs;	/* planned default expressions */
	bool		direct;			/* false: triggers or row security, use SPI */
} OutboxShape;

static OutboxShape shape = {InvalidOid};
static MemoryContext shape_context = NULL;
static bool callback_registered = false;

static SPIPlanPtr insert_plan = NULL;	/* ON CONFLICT DO NOTHING */
static SPIPlanPtr insert_topics_plan = NULL;	/* the same, with topics */

/* Forget the shape when novu.events (or every relation) is invalidated. */
static void
outbox_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == shape.relid)
		shape.relid = InvalidOid;
}

/* Learn novu.events' columns and compile its defaults (once per change). */
static void
load_shape(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	MemoryContext old;
	int			i;
	int			k;

	if (shape_context == NULL)
		shape_context = AllocSetContextCreate(TopMemoryContext, "novu outbox", ALLOCSET_SMALL_SIZES);
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(outbox_relcache_callback, (Datum) 0);
		callback_registered = true;
	}
	MemoryContextReset(shape_context);
	old = MemoryContextSwitchTo(shape_context);

	shape.direct = rel->trigdesc == NULL && !rel->rd_rel->relrowsecurity;
	for (k = 0; k < NUM_GIVEN; k++)
	{
		shape.given[k] = InvalidAttrNumber;
		for (i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (!att->attisdropped && strcmp(NameStr(att->attname), given_names[k]) == 0)
				shape.given[k] = att->attnum;
		}
		if (shape.given[k] == InvalidAttrNumber && k != COL_TOPICS)
			elog(ERROR, "novu: column novu.events.%s is missing", given_names[k]);
	}
	shape.default_attnums = palloc(sizeof(AttrNumber) * desc->natts);
	shape.default_exprs = palloc(sizeof(Expr *) * desc->natts);
	shape.ndefaults = 0;
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Node	   *def;

		for (k = 0; k < NUM_GIVEN && shape.given[k] != att->attnum; k++)
			;
		if (att->attisdropped || k < NUM_GIVEN)
			continue;
		if (att->attgenerated)
		{
			shape.direct = false;	/* generated columns: leave them to INSERT */
			continue;
		}
		def = build_column_default(rel, att->attnum);
		if (def == NULL)
			continue;			/* NULL */
		shape.default_attnums[shape.ndefaults] = att->attnum;
		shape.default_exprs[shape.ndefaults] = expression_planner((Expr *) def);
		shape.ndefaults++;
	}
	MemoryContextSwitchTo(old);
	shape.relid = RelationGetRelid(rel);
}

/* Insert the row straight into the heap and its indexes (a generated transactionId). */
static void
insert_direct(Relation rel, Datum *given, bool *given_null)
{
	TupleDesc	desc = RelationGetDescr(rel);
	EState	   *estate = CreateExecutorState();
	ResultRelInfo *rri = makeNode(ResultRelInfo);
	RangeTblEntry *rte = makeNode(RangeTblEntry);
	ExprContext *econtext;
	TupleTableSlot *slot;
	int			i;

	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
#if PG_VERSION_NUM >= 160000
	ExecInitRangeTable(estate, list_make1(rte), NIL);
#else
	ExecInitRangeTable(estate, list_make1(rte));
#endif
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	estate->es_output_cid = GetCurrentCommandId(true);
	ExecOpenIndices(rri, false);

	slot = ExecInitExtraTupleSlot(estate, desc, &TTSOpsVirtual);
	ExecClearTuple(slot);
	for (i = 0; i < desc->natts; i++)
	{
		slot->tts_values[i] = (Datum) 0;
		slot->tts_isnull[i] = true;
	}
	for (i = 0; i < NUM_GIVEN; i++)
	{
		if (shape.given[i] == InvalidAttrNumber)
			continue;			/* an optional column absent: its value is NULL */
		slot->tts_values[shape.given[i] - 1] = given[i];
		slot->tts_isnull[shape.given[i] - 1] = given_null[i];
	}
	econtext = GetPerTupleExprContext(estate);
	for (i = 0; i < shape.ndefaults; i++)
	{
		ExprState  *state = ExecInitExpr(shape.default_exprs[i], NULL);
		AttrNumber	attnum = shape.default_attnums[i];

		slot->tts_values[attnum - 1] = ExecEvalExprSwitchContext(state, econtext, &slot->tts_isnull[attnum - 1]);
	}
	ExecStoreVirtualTuple(slot);

	ExecSimpleRelationInsert(rri, estate, slot);

	ExecCloseIndices(rri);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
}

/* Insert the row through SPI, ON CONFLICT DO NOTHING; false if the key was there. */
static bool
insert_spi(Datum *given, bool *given_null)
{
	Oid			argtypes[NUM_GIVEN] = {TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID, JSONBOID, JSONBOID, JSONBOID,
	TEXTARRAYOID};
	char		nulls[NUM_GIVEN];
	SPIPlanPtr	plan;
	int			i;

	/* a row without topics names no topics column (older schemas have none) */
	if (given_null[COL_TOPICS])
		plan = novu_prepare_once(&insert_plan,
								 "INSERT INTO novu.events (transaction_id, kind, workflow_id, recipients, "
								 "payload, overrides, actor) VALUES ($1, $2, $3, $4, $5, $6, $7) "
								 "ON CONFLICT (transaction_id) DO NOTHING",
								 NUM_GIVEN - 1, argtypes);
	else
		plan = novu_prepare_once(&insert_topics_plan,
								 "INSERT INTO novu.events (transaction_id, kind, workflow_id, recipients, "
								 "payload, overrides, actor, topics) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
								 "ON CONFLICT (transaction_id) DO NOTHING",
								 NUM_GIVEN, argtypes);
	for (i = 0; i < NUM_GIVEN; i++)
		nulls[i] = given_null[i] ? 'n' : ' ';
	if (SPI_execute_plan(plan, given, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "novu: outbox insert failed");
	return SPI_processed == 1;
}

/*
 * Insert the outbox row of a trigger (recipients), a trigger naming topics
 * (kind "topic": recipients, possibly NULL, and topics) or a broadcast (both
 * NULL); false if the transactionId was used already.  generated says that we
 * made the transactionId up, so that it cannot be there.  Runs inside SPI.
 */
bool
novu_outbox_insert(const char *transaction_id, bool generated, const char *kind, const char *workflow_id,
				   ArrayType *recipients, ArrayType *topics, Jsonb *payload, Jsonb *overrides, Jsonb *actor)
{
	Datum		given[NUM_GIVEN];
	bool		given_null[NUM_GIVEN] = {false};
	Oid			relid;
	Relation	rel;
	bool		inserted = true;

	given[COL_TRANSACTION_ID] = CStringGetTextDatum(transaction_id);
	given[COL_KIND] = CStringGetTextDatum(kind);
	given[COL_WORKFLOW_ID] = CStringGetTextDatum(workflow_id);
	given[COL_RECIPIENTS] = PointerGetDatum(recipients);
	given_null[COL_RECIPIENTS] = (recipients == NULL);
	given[COL_PAYLOAD] = JsonbPGetDatum(payload);
	given[COL_OVERRIDES] = JsonbPGetDatum(overrides);
	given[COL_ACTOR] = PointerGetDatum(actor);
	given_null[COL_ACTOR] = (actor == NULL);
	given[COL_TOPICS] = PointerGetDatum(topics);
	given_null[COL_TOPICS] = (topics == NULL);

	if (!generated)
		return insert_spi(given, given_null);

	relid = novu_relid("events");
	rel = table_open(relid, RowExclusiveLock);
	if (shape.relid != relid)
		load_shape(rel);
	if (topics != NULL && shape.given[COL_TOPICS] == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("topics need the schema of novu %s", NOVU_EXTVERSION),
				 errhint("Run ALTER EXTENSION novu UPDATE.")));
	if (shape.direct)
		insert_direct(rel, given, given_null);
	else
		inserted = insert_spi(given, given_null);
	table_close(rel, NoLock);
	return inserted;
}
