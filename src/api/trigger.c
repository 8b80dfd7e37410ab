/*
 * trigger.c
 *		novu.trigger() and novu.broadcast(): validate the call, then write one
 *		outbox row in the caller's transaction.
 *
 * This is the path applications run inside their own transactions, so it is
 * kept to a workflow probe (a per-backend cache) and one outbox insert
 * (outbox.c).  Recipients named by a plain subscriberId are not looked up:
 * the workers' fan-out creates the missing ones (novu._fanout).  Subscriber
 * objects (inline profiles) and the actor are written here, in the caller's
 * transaction, through plans prepared once per backend.  Fan-out to devices
 * happens later, in the delivery workers.
 *
 * "to" may also name topics, {"type": "Topic", "topicKey": key}: the keys are
 * checked here (an unknown topic is an error now, not in the worker) and the
 * outbox row, of kind "topic", keeps them with the direct recipients; the
 * workers expand both by a cursor, de-duplicated and without the actor
 * (novu._topic_chunk).  A trigger naming no topic costs what it did before.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "port.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "novu.h"
#include "common/jsonb_util.h"
#include "outbox/lookup.h"
#include "outbox/outbox.h"
#include "providers/rules.h"
#include "common/shmem.h"
#include "outbox/workflow_cache.h"

PG_FUNCTION_INFO_V1(novu_trigger);
PG_FUNCTION_INFO_V1(novu_broadcast);

/*
 * One element of "to": a subscriberId and, for inline subscribers, its
 * profile; or a topic (topic_key set, subscriber_id NULL).
 */
typedef struct Recipient
{
	char	   *subscriber_id;
	Jsonb	   *profile;		/* NULL when only the subscriberId was given */
	bool		create_now;		/* a subscriber object or the actor: created, if
								 * missing, in the caller's transaction */
	char	   *topic_key;		/* {"type": "Topic", "topicKey": ...} */
} Recipient;

/* At most this many topics in one trigger: a fan-out chunk reads p_limit rows of each. */
#define NOVU_MAX_TOPICS				100

/* Plans prepared once per backend (SPI_keepplan). */
static SPIPlanPtr ensure_subscribers_plan = NULL;
static SPIPlanPtr upsert_profile_plan = NULL;
static SPIPlanPtr topics_plan = NULL;
static SPIPlanPtr actor_plan = NULL;

/* Raise unless the identifier has 1 to 255 characters and no control characters. */
void
novu_check_identifier(const char *value, const char *field)
{
	const unsigned char *p;

	if (value == NULL || value[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", field),
				 errhint("Give a %s of 1 to 255 characters.", field)));
	if (pg_mbstrlen(value) > NOVU_MAX_ID_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is too long (%d characters)", field, pg_mbstrlen(value)),
				 errhint("A %s has at most 255 characters.", field)));
	/* the C0 and C1 controls (U+0080..U+009F: 0xC2 0x80..0x9F), as novu._check_id */
	for (p = (const unsigned char *) value; *p; p++)
	{
		if (*p < 0x20 || *p == 0x7f || (p[0] == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must not contain control characters", field),
					 errhint("Use printable characters in %s.", field)));
	}
}

/* Raise unless the argument is a JSON object; NULL means the empty object. */
static Jsonb *
check_object_arg(Jsonb *value, const char *field)
{
	if (value == NULL)
		return NULL;
	if (!JB_ROOT_IS_OBJECT(value) || JB_ROOT_IS_SCALAR(value))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", field),
				 errhint("Pass an object, e.g. '{\"orderId\": 42}'::jsonb.")));
	return value;
}

/*
 * Fill buf with len bytes from the strong random source (OpenSSL's CSPRNG
 * behind pg_strong_random), drawn a few kilobytes at a time per backend:
 * generated transactionIds are unguessable, and one call of the source serves
 * hundreds of triggers.
 */
static void
strong_random_bytes(unsigned char *buf, int len)
{
	static unsigned char pool[4096];
	static int	left = 0;

	if (left < len)
	{
		if (!pg_strong_random(pool, sizeof(pool)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a random transactionId")));
		left = sizeof(pool);
	}
	memcpy(buf, pool + sizeof(pool) - left, len);
	memset(pool + sizeof(pool) - left, 0, len);
	left -= len;
}

/*
 * A time-ordered (version 7) UUID as text, for generated transactionIds:
 * Unix milliseconds then 74 bits from the strong random source.  Consecutive
 * ids sort together, so the outbox's primary key grows at its right edge
 * instead of dirtying a random leaf per trigger.  Formatted by hand: psprintf
 * of sixteen %02x cost a trigger 2 us.
 */
static char *
random_uuid_text(void)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char b[16];
	uint64		ms = (uint64) ((GetCurrentTimestamp() / 1000) + (uint64) 946684800000);	/* Unix ms */
	char	   *text = palloc(37);
	char	   *p = text;
	int			i;

	for (i = 0; i < 6; i++)
		b[i] = (unsigned char) (ms >> (40 - 8 * i));
	strong_random_bytes(b + 6, 10);
	b[6] = (b[6] & 0x0f) | 0x70;	/* version 7 */
	b[8] = (b[8] & 0x3f) | 0x80;	/* RFC 9562 variant */
	for (i = 0; i < 16; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[b[i] >> 4];
		*p++ = hex[b[i] & 0x0f];
	}
	*p = '\0';
	return text;
}

/*
 * Raise unless the topic key has 1 to 255 characters, each a letter, digit or
 * one of - _ : . @ + (the rule of novu._check_topic_key).
 */
static void
check_topic_key(const char *key, const char *field)
{
	const char *p;

	if (key[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", field),
				 errhint("A topic key has 1 to 255 characters, e.g. \"post:42\".")));
	if (strlen(key) > NOVU_MAX_ID_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is too long (%zu characters)", field, strlen(key)),
				 errhint("A topic key has at most 255 characters.")));
	for (p = key; *p; p++)
	{
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
			  strchr("-_:.@+", *p) != NULL))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s may contain only letters, digits and - _ : . @ +", field),
					 errhint("Examples: \"post:42\", \"team-engineering\", \"ada@example.com\".")));
	}
}

/*
 * Parse a topic element of "to", {"type": "Topic", "topicKey": key}, into r;
 * topics are not allowed where allow_topic is false (the actor).
 */
static void
parse_topic(JsonbContainer *obj, const char *field, Recipient *r, bool allow_topic)
{
	JsonbValue	type;
	JsonbValue	key;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;

	if (!jsonb_container_get(obj, "type", &type) || type.type != jbvString ||
		type.val.string.len != 5 || memcmp(type.val.string.val, "Topic", 5) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s.type must be \"Topic\"", field),
				 errhint("A topic recipient is {\"type\": \"Topic\", \"topicKey\": \"post:42\"}; a subscriber has no type.")));
	if (!allow_topic)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s cannot be a topic", field),
				 errhint("The actor is one subscriber: a subscriberId or a subscriber object.")));
	if (!jsonb_container_get(obj, "topicKey", &key) || key.type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s.topicKey is required and must be a string", field),
				 errhint("A topic recipient is {\"type\": \"Topic\", \"topicKey\": \"post:42\"}.")));
	it = JsonbIteratorInit(obj);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY &&
			!(v.val.string.len == 4 && memcmp(v.val.string.val, "type", 4) == 0) &&
			!(v.val.string.len == 8 && memcmp(v.val.string.val, "topicKey", 8) == 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown key \"%s\" in %s", pnstrdup(v.val.string.val, v.val.string.len), field),
					 errhint("A topic recipient has only type and topicKey.")));
	}
	r->topic_key = pnstrdup(key.val.string.val, key.val.string.len);
	check_topic_key(r->topic_key, psprintf("%s.topicKey", field));
}

/*
 * Parse one element of "to" (a subscriberId string, a subscriber object or,
 * where allow_topic, a topic).
 */
static Recipient *
parse_recipient(JsonbValue *v, const char *field, bool allow_topic)
{
	Recipient  *r = palloc0(sizeof(Recipient));
	JsonbValue	sid;

	if (v->type == jbvString)
	{
		r->subscriber_id = pnstrdup(v->val.string.val, v->val.string.len);
		novu_check_identifier(r->subscriber_id, "subscriberId");
		return r;
	}
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a subscriberId string or a subscriber object", field),
				 errhint("Example: \"user-1\" or {\"subscriberId\": \"user-1\", \"email\": \"a@b.co\"}.")));

	if (jsonb_container_get(v->val.binary.data, "topicKey", NULL) ||
		jsonb_container_get(v->val.binary.data, "type", NULL))
	{
		parse_topic(v->val.binary.data, field, r, allow_topic);
		return r;
	}

	if (!jsonb_container_get(v->val.binary.data, "subscriberId", &sid) || sid.type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s.subscriberId is required and must be a string", field),
				 errhint("A subscriber object has a subscriberId and optional profile keys and channels.")));
	r->subscriber_id = pnstrdup(sid.val.string.val, sid.val.string.len);
	novu_check_identifier(r->subscriber_id, "subscriberId");
	r->create_now = true;

	/* Anything besides subscriberId is an inline profile to upsert. */
	if (JsonContainerSize(v->val.binary.data) > 1)
	{
		r->profile = JsonbValueToJsonb(v);
		novu_check_json_size(r->profile, field, NOVU_MAX_PROFILE_BYTES);
	}
	return r;
}

/* Order recipients by subscriberId, bytewise (qsort comparator). */
static int
recipient_cmp(const void *a, const void *b)
{
	return strcmp((*(Recipient *const *) a)->subscriber_id, (*(Recipient *const *) b)->subscriber_id);
}

/* Order C strings bytewise, as COLLATE "C" does (qsort comparator). */
static int
cstring_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Parse "to" into a list of recipients, in the order given (repeats included). */
static List *
parse_to(Jsonb *to)
{
	List	   *result = NIL;
	JsonbValue	v;

	if (to == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("to must not be null"),
				 errhint("Pass a subscriberId, a subscriber object, or an array of them.")));
	novu_check_json_size(to, "to", NOVU_MAX_TO_BYTES);
	if (JB_ROOT_IS_ARRAY(to) && !JB_ROOT_IS_SCALAR(to) && JB_ROOT_COUNT(to) > NOVU_MAX_RECIPIENTS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("to names too many recipients (%u)", JB_ROOT_COUNT(to)),
				 errdetail("The limit is %d recipients per trigger.", NOVU_MAX_RECIPIENTS),
				 errhint("Use a topic or novu.broadcast() for larger audiences, or split the trigger.")));

	if (JB_ROOT_IS_SCALAR(to))
	{
		JsonbExtractScalar(&to->root, &v);
		return list_make1(parse_recipient(&v, "to", true));
	}
	if (JB_ROOT_IS_OBJECT(to))
	{
		v.type = jbvBinary;
		v.val.binary.data = &to->root;
		v.val.binary.len = VARSIZE(to) - VARHDRSZ;
		return list_make1(parse_recipient(&v, "to", true));
	}
	else
	{
		JsonbIterator *it = JsonbIteratorInit(&to->root);
		JsonbIteratorToken tok;
		int			i = 0;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_ELEM)
				result = lappend(result, parse_recipient(&v, psprintf("to[%d]", i++), true));
		}
	}
	if (result == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("to must name at least one subscriber"),
				 errhint("Pass a subscriberId, a subscriber object, a topic, or a non-empty array of them; novu.broadcast() reaches everyone.")));
	return result;
}

/* Which identifiers of a trigger's recipients recipient_id_array collects. */
typedef enum RecipientIds
{
	IDS_SUBSCRIBERS,			/* every subscriberId (the outbox row's recipients) */
	IDS_TO_CREATE,				/* those to create now if missing: create_now, no profile */
	IDS_TOPICS					/* the topic keys */
} RecipientIds;

/*
 * The distinct subscriberIds or topic keys of the recipients (see
 * RecipientIds) as a text[], sorted bytewise (so that concurrent triggers
 * creating the same new subscribers lock them in one order); NULL if there
 * are none.
 */
static ArrayType *
recipient_id_array(List *recipients, RecipientIds which)
{
	int			n = list_length(recipients);
	char	  **sorted = palloc(sizeof(char *) * n);
	Datum	   *ids = palloc(sizeof(Datum) * n);
	int			nsorted = 0;
	int			nids = 0;
	int			i;
	ListCell   *lc;

	foreach(lc, recipients)
	{
		Recipient  *r = lfirst(lc);
		char	   *id = which == IDS_TOPICS ? r->topic_key : r->subscriber_id;

		if (which == IDS_TO_CREATE && (!r->create_now || r->profile != NULL))
			continue;
		if (id != NULL)
			sorted[nsorted++] = id;
	}
	if (nsorted == 0)
		return NULL;
	if (nsorted > 1)
		qsort(sorted, nsorted, sizeof(char *), cstring_cmp);
	for (i = 0; i < nsorted; i++)
	{
		if (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0)
			continue;
		ids[nids++] = CStringGetTextDatum(sorted[i]);
	}
	if (which == IDS_TOPICS && nids > NOVU_MAX_TOPICS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("to names too many topics (%d)", nids),
				 errdetail("The limit is %d topics per trigger.", NOVU_MAX_TOPICS),
				 errhint("Split the trigger, or gather the audience in fewer topics.")));
	return construct_array(ids, nids, TEXTOID, -1, false, TYPALIGN_INT);
}

/*
 * Raise unless every topic key exists (an unknown topic is an error at trigger
 * time).  A plain read: the topic row is not locked, so concurrent triggers of
 * one topic never write to it; a topic deleted meanwhile was empty (novu.
 * delete_topic refuses others), and the fan-out then finds no member.
 */
static void
check_topics_exist(ArrayType *keys)
{
	Oid			argtypes[1] = {TEXTARRAYOID};
	Datum		values[1];
	SPIPlanPtr	plan;
	bool		isnull;
	char	   *missing;

	plan = novu_prepare_once(&topics_plan,
						"SELECT k FROM pg_catalog.unnest($1::pg_catalog.text[]) AS k "
						"WHERE NOT EXISTS (SELECT FROM novu.topics t WHERE t.key OPERATOR(pg_catalog.=) k) "
						"ORDER BY k COLLATE \"C\" LIMIT 1",
						1, argtypes);
	values[0] = PointerGetDatum(keys);
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "novu: topic lookup failed");
	if (SPI_processed == 0)
		return;
	missing = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("topic \"%s\" not found", missing),
			 errhint("Create it with novu.create_topic(); topic keys are case sensitive.")));
}

/*
 * The actor as the outbox row keeps it: its profile as it will be once the
 * trigger's inline profile (if any) is applied, in the shape templates see
 * the subscriber in ({{actor.firstName}}, {{actor.subscriberId}}).  It is
 * computed before the outbox insert and the actor upserted after, so that a
 * duplicate transactionId changes nothing; the merge follows
 * novu._upsert_subscriber (given keys win, data is replaced whole).  Written
 * here, not as an SQL function, so that it runs over the schema of any
 * version (the library may be newer until ALTER EXTENSION novu UPDATE).
 */
static Jsonb *
actor_snapshot(Recipient *actor)
{
	Oid			argtypes[2] = {TEXTOID, JSONBOID};
	Datum		values[2];
	SPIPlanPtr	plan;
	bool		isnull;
	Datum		d;

	plan = novu_prepare_once(&actor_plan,
						"SELECT pg_catalog.jsonb_build_object("
						" 'subscriberId', $1::pg_catalog.text,"
						" 'firstName', CASE WHEN p ? 'firstName' THEN p ->> 'firstName' ELSE s.first_name END,"
						" 'lastName', CASE WHEN p ? 'lastName' THEN p ->> 'lastName' ELSE s.last_name END,"
						" 'email', CASE WHEN p ? 'email' THEN p ->> 'email' ELSE s.email END,"
						" 'phone', CASE WHEN p ? 'phone' THEN p ->> 'phone' ELSE s.phone END,"
						" 'avatar', CASE WHEN p ? 'avatar' THEN p ->> 'avatar' ELSE s.avatar END,"
						" 'locale', CASE WHEN p ? 'locale' THEN p ->> 'locale' ELSE s.locale END,"
						" 'timezone', CASE WHEN p ? 'timezone' THEN p ->> 'timezone' ELSE s.timezone END,"
						" 'data', CASE WHEN pg_catalog.jsonb_typeof(p -> 'data') = 'object' THEN p -> 'data'"
						"              WHEN p ? 'data' THEN '{}'::pg_catalog.jsonb"
						"              ELSE COALESCE(s.data, '{}'::pg_catalog.jsonb) END)"
						" FROM (SELECT $2::pg_catalog.jsonb AS p) given"
						" LEFT JOIN novu.subscribers s ON s.subscriber_id = $1",
						2, argtypes);
	values[0] = CStringGetTextDatum(actor->subscriber_id);
	values[1] = actor->profile ? JsonbPGetDatum(actor->profile) : JsonbPGetDatum(jsonb_empty_object());
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "novu: actor lookup failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		elog(ERROR, "novu: actor lookup returned null");
	/* out of SPI's memory: the outbox insert uses it after more SPI calls */
	return DatumGetJsonbP(SPI_datumTransfer(d, false, -1));
}

/*
 * Probe the workflow: raise if unknown, else say whether it can run.  In READ
 * COMMITTED the answer comes from the backend's cache (workflow_cache.c), and
 * a miss is probed under the latest snapshot, which is what the cache needs;
 * with a transaction snapshot (REPEATABLE READ, SERIALIZABLE) the probe reads
 * under it and the cache is left alone.
 */
static WorkflowState
probe_workflow(const char *workflow_id)
{
	AttrNumber	attnums[2];
	Datum		values[2];
	bool		isnull[2];
	Jsonb	   *steps;
	WorkflowState state;
	bool		cacheable = !IsolationUsesXactSnapshot();
	bool		found;

	if (cacheable && novu_workflow_cache_get(workflow_id, &state))
		return state;
	attnums[0] = novu_attnum("workflows", "active");
	attnums[1] = novu_attnum("workflows", "steps");
	if (cacheable)
		PushActiveSnapshot(GetLatestSnapshot());
	found = novu_pk_fetch("workflows", workflow_id, 2, attnums, values, isnull);
	if (cacheable)
		PopActiveSnapshot();
	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" not found", workflow_id),
				 errhint("Create it with novu.create_workflow(); workflow ids are case sensitive.")));
	steps = isnull[1] ? NULL : DatumGetJsonbP(values[1]);
	if (isnull[0] || !DatumGetBool(values[0]))
		state = WORKFLOW_NOT_ACTIVE;
	else if (steps == NULL || !JB_ROOT_IS_ARRAY(steps) || JB_ROOT_COUNT(steps) == 0)
		state = WORKFLOW_NO_STEPS;
	else
		state = WORKFLOW_OK;
	if (cacheable)
		novu_workflow_cache_put(workflow_id, state);
	return state;
}

/*
 * Create the subscribers given as objects without a profile, and the actor,
 * that do not exist yet (empty profile).  Existing ones, the usual case, cost
 * one index probe each; only when some are missing does it run the insert
 * (ON CONFLICT: a concurrent trigger may create the same one).
 */
static void
ensure_subscribers(ArrayType *ids)
{
	Oid			argtypes[1] = {TEXTARRAYOID};
	Datum		values[1];
	SPIPlanPtr	plan;
	Datum	   *elems;
	int			nelems;
	int			i;
	AttrNumber	attnum = 1;
	Datum		value;
	bool		isnull;

	deconstruct_array(ids, TEXTOID, -1, false, TYPALIGN_INT, &elems, NULL, &nelems);
	for (i = 0; i < nelems; i++)
	{
		if (!novu_pk_fetch("subscribers", TextDatumGetCString(elems[i]), 1, &attnum, &value, &isnull))
			break;
	}
	if (i == nelems)
		return;

	plan = novu_prepare_once(&ensure_subscribers_plan,
						"INSERT INTO novu.subscribers (subscriber_id) SELECT pg_catalog.unnest($1) "
						"ON CONFLICT (subscriber_id) DO NOTHING",
						1, argtypes);
	values[0] = PointerGetDatum(ids);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "novu: subscriber insert failed");
}

/* Upsert an inline subscriber profile (and append its channels). */
static void
upsert_profile(const char *subscriber_id, Jsonb *profile)
{
	Oid			argtypes[2] = {TEXTOID, JSONBOID};
	Datum		values[2];
	SPIPlanPtr	plan;

	plan = novu_prepare_once(&upsert_profile_plan,
						"SELECT novu._upsert_subscriber($1, $2)",
						2, argtypes);
	values[0] = CStringGetTextDatum(subscriber_id);
	values[1] = JsonbPGetDatum(profile);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "novu: subscriber upsert failed");
}

/* Set a JsonbValue to the string s (not copied). */
static void
string_value(JsonbValue *v, const char *s)
{
	v->type = jbvString;
	v->val.string.val = (char *) s;
	v->val.string.len = strlen(s);
}

/*
 * Build Novu's trigger response {acknowledged, status, transactionId}.  The
 * object is given whole, its keys in jsonb's order (shorter first), which
 * spares the sort and de-duplication of building it key by key.
 */
static Jsonb *
trigger_result(const char *status, const char *transaction_id)
{
	JsonbPair	pairs[3];
	JsonbValue	obj;

	string_value(&pairs[0].key, "status");
	string_value(&pairs[0].value, status);
	string_value(&pairs[1].key, "acknowledged");
	pairs[1].value.type = jbvBool;
	pairs[1].value.val.boolean = true;
	string_value(&pairs[2].key, "transactionId");
	string_value(&pairs[2].value, transaction_id);
	pairs[0].order = 0;
	pairs[1].order = 1;
	pairs[2].order = 2;
	obj.type = jbvObject;
	obj.val.object.nPairs = 3;
	obj.val.object.pairs = pairs;
	return JsonbValueToJsonb(&obj);
}

/* Validate the arguments common to trigger and broadcast; returns the transactionId. */
static char *
check_common_args(const char *workflow_id, Jsonb **payload, Jsonb **overrides, char *transaction_id,
				  bool *generated)
{
	if (workflow_id == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("workflow_id must not be null"),
				 errhint("Pass the identifier given to novu.create_workflow().")));
	novu_check_identifier(workflow_id, "workflow_id");

	*payload = check_object_arg(*payload, "payload");
	if (*payload == NULL)
		*payload = jsonb_empty_object();
	novu_check_json_size(*payload, "payload", NOVU_MAX_PAYLOAD_BYTES);
	*overrides = check_object_arg(*overrides, "overrides");
	if (*overrides == NULL)
		*overrides = jsonb_empty_object();
	novu_check_json_size(*overrides, "overrides", NOVU_MAX_OVERRIDES_BYTES);
	novu_check_overrides(*overrides, "overrides");	/* no retargeting, no header injection */

	*generated = (transaction_id == NULL);
	if (transaction_id == NULL)
		return random_uuid_text();
	novu_check_identifier(transaction_id, "transactionId");
	return transaction_id;
}

/* Status text of a workflow that cannot run, or NULL. */
static const char *
workflow_status(WorkflowState state)
{
	switch (state)
	{
		case WORKFLOW_NOT_ACTIVE:
			return "trigger_not_active";
		case WORKFLOW_NO_STEPS:
			return "no_workflow_steps_defined";
		case WORKFLOW_OK:
			break;
	}
	return NULL;
}

static Datum trigger_call(FunctionCallInfo fcinfo);

/*
 * novu.trigger(workflow_id, to, payload, overrides, transaction_id, actor)
 *		Enqueue a workflow run for the recipients in the caller's transaction.
 *
 * SECURITY DEFINER without a SET clause: search_path is pinned (to
 * pg_catalog, pg_temp) before the first statement run through SPI, and the
 * common path (subscriberIds, the direct outbox insert) resolves no name.
 */
Datum
novu_trigger(PG_FUNCTION_ARGS)
{
	int			pin;
	int		   *outer = novu_pin_begin(&pin);
	Datum		result;

	PG_TRY();
	{
		result = trigger_call(fcinfo);
	}
	PG_CATCH();
	{
		/* the abort undoes the pin with the other GUC levels */
		novu_pin_end(outer, 0);
		PG_RE_THROW();
	}
	PG_END_TRY();
	novu_pin_end(outer, pin);
	return result;
}

/* The body of novu_trigger, search_path pinned at its first SPI statement. */
static Datum
trigger_call(FunctionCallInfo fcinfo)
{
	char	   *workflow_id = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *to = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	Jsonb	   *payload = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	Jsonb	   *overrides = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	char	   *transaction_id = PG_ARGISNULL(4) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(4));
	Jsonb	   *actor = PG_ARGISNULL(5) ? NULL : PG_GETARG_JSONB_P(5);
	Recipient  *actor_profile = NULL;
	List	   *recipients;
	ListCell   *lc;
	ArrayType  *id_array;
	ArrayType  *create_array;
	ArrayType  *topic_array;
	const char *status;
	bool		generated;

	transaction_id = check_common_args(workflow_id, &payload, &overrides, transaction_id, &generated);
	recipients = parse_to(to);

	if (actor != NULL)
	{
		JsonbValue	v;

		novu_check_json_size(actor, "actor", NOVU_MAX_ACTOR_BYTES);
		if (JB_ROOT_IS_SCALAR(actor))
		{
			JsonbExtractScalar(&actor->root, &v);
			if (v.type == jbvNull)
				actor = NULL;
		}
		else if (JB_ROOT_IS_OBJECT(actor))
		{
			v.type = jbvBinary;
			v.val.binary.data = &actor->root;
			v.val.binary.len = VARSIZE(actor) - VARHDRSZ;
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("actor must be a subscriberId string or a subscriber object"),
					 errhint("The actor is the subscriber shown as the notification's author.")));
		if (actor != NULL)
			actor_profile = parse_recipient(&v, "actor", false);
	}
	topic_array = recipient_id_array(recipients, IDS_TOPICS);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "novu: SPI_connect failed");

	status = workflow_status(probe_workflow(workflow_id));
	if (topic_array != NULL)
		check_topics_exist(topic_array);
	if (status == NULL)
	{
		id_array = recipient_id_array(recipients, IDS_SUBSCRIBERS);

		/*
		 * The row keeps the actor's profile (templates see it as "actor"); the
		 * actor itself is upserted below, once the row is in.
		 */
		if (actor_profile != NULL)
			actor = actor_snapshot(actor_profile);
		if (!novu_outbox_insert(transaction_id, generated, topic_array ? "topic" : "trigger", workflow_id,
								id_array, topic_array, payload, overrides, actor))
			status = "duplicate";
		else
		{
			/*
			 * Inline profiles and channels change in the caller's
			 * transaction, in subscriberId order: two triggers naming the
			 * same subscribers in another order lock their rows in one
			 * order, and do not deadlock.
			 */
			Recipient **profiles = palloc(sizeof(Recipient *) * (list_length(recipients) + 1));
			int			nprofiles = 0;
			int			i;

			foreach(lc, recipients)
			{
				Recipient  *r = lfirst(lc);

				if (r->profile != NULL)
					profiles[nprofiles++] = r;
			}
			if (actor_profile != NULL && actor_profile->profile != NULL)
				profiles[nprofiles++] = actor_profile;
			qsort(profiles, nprofiles, sizeof(Recipient *), recipient_cmp);
			for (i = 0; i < nprofiles; i++)
				upsert_profile(profiles[i]->subscriber_id, profiles[i]->profile);

			/*
			 * Subscriber objects and the actor that do not exist are created
			 * now, in one sorted insert.  A recipient named by a plain
			 * subscriberId is not looked up here: the fan-out creates it if
			 * it is missing (novu._fanout), so a trigger to anyone costs no
			 * probe of novu.subscribers.
			 */
			if (actor_profile != NULL)
			{
				actor_profile->create_now = true;
				recipients = lappend(list_copy(recipients), actor_profile);
			}
			create_array = recipient_id_array(recipients, IDS_TO_CREATE);
			if (create_array != NULL)
				ensure_subscribers(create_array);
			novu_wake_workers_at_commit();
			status = "processed";
		}
	}

	SPI_finish();
	PG_RETURN_JSONB_P(trigger_result(status, transaction_id));
}

/*
 * novu.broadcast(workflow_id, payload, overrides, transaction_id)
 *		Enqueue a workflow run for every subscriber; the workers fan it out.
 */
Datum
novu_broadcast(PG_FUNCTION_ARGS)
{
	char	   *workflow_id = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *payload = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	Jsonb	   *overrides = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	char	   *transaction_id = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	const char *status;
	bool		generated;

	transaction_id = check_common_args(workflow_id, &payload, &overrides, transaction_id, &generated);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "novu: SPI_connect failed");
	status = workflow_status(probe_workflow(workflow_id));
	if (status == NULL)
	{
		if (novu_outbox_insert(transaction_id, generated, "broadcast", workflow_id, NULL, NULL, payload, overrides, NULL))
		{
			novu_wake_workers_at_commit();
			status = "processed";
		}
		else
			status = "duplicate";
	}
	SPI_finish();
	PG_RETURN_JSONB_P(trigger_result(status, transaction_id));
}
