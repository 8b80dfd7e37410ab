/*
 * render.c
 *		Rendering of a claimed message: the step's templates against
 *		{payload, subscriber, actor} (and step, after a digest), the step's
 *		data, and the provider's overrides (step, then trigger, then the
 *		trigger's overrides.steps.<stepId>; both Novu forms; deep-merged).
 *
 * Runs in the worker between transactions: no SQL, no catalog access.
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"

#include "common/jsonb_util.h"
#include "queue/queue.h"
#include "delivery/render.h"
#include "template/template.h"

/* Compiled templates of one workflow step, cached for a batch. */
typedef struct StepTemplates
{
	char		key[RENDER_STEP_KEY_LEN];
	Template   *title;
	Template   *content;
	char	   *error;			/* a template that no longer parses */
} StepTemplates;

/* A batch's cache of compiled step templates. */
struct RenderCache
{
	HTAB	   *steps;
	MemoryContext context;		/* the compiled templates live here */
};

/* A cache of compiled step templates, in the current memory context. */
RenderCache *
render_cache_create(void)
{
	RenderCache *cache = palloc(sizeof(RenderCache));
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = RENDER_STEP_KEY_LEN;
	ctl.entrysize = sizeof(StepTemplates);
	ctl.hcxt = CurrentMemoryContext;
	cache->steps = hash_create("novu step templates", 16, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	cache->context = CurrentMemoryContext;
	return cache;
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

/*
 * The trigger's overrides for this step: overrides.steps.<stepId> (Novu), the
 * step's id being its stepId or "<type>-<index>" (the index from the step key
 * "workflow/index/..."); NULL if none.
 */
static Jsonb *
trigger_step_overrides(ClaimedRow *r)
{
	JsonbValue	steps;
	JsonbValue	v;
	char	   *id;
	const char *slash;

	if (r->trigger_overrides == NULL || !JB_ROOT_IS_OBJECT(r->trigger_overrides) ||
		!jsonb_container_get(&r->trigger_overrides->root, "steps", &steps) || steps.type != jbvBinary ||
		!JsonContainerIsObject(steps.val.binary.data))
		return NULL;
	id = jsonb_container_get_string(&r->step->root, "stepId");
	if (id == NULL)
	{
		char	   *type = jsonb_container_get_string(&r->step->root, "type");

		slash = r->step_key ? strchr(r->step_key, '/') : NULL;
		if (type == NULL || slash == NULL)
			return NULL;
		id = psprintf("%s-%d", type, atoi(slash + 1));
	}
	if (!jsonb_container_get(steps.val.binary.data, id, &v) || v.type != jbvBinary ||
		!JsonContainerIsObject(v.val.binary.data))
		return NULL;
	return JsonbValueToJsonb(&v);
}

/* Compile a step's title and content, or find them in this batch's cache. */
static StepTemplates *
step_templates(RenderCache *cache, ClaimedRow *r)
{
	StepTemplates *st;
	bool		found;
	char		key[RENDER_STEP_KEY_LEN];
	char	   *src;
	char	   *error = NULL;
	MemoryContext old;

	strlcpy(key, r->step_key ? r->step_key : "", RENDER_STEP_KEY_LEN);
	st = hash_search(cache->steps, key, HASH_ENTER, &found);
	if (found)
		return st;
	old = MemoryContextSwitchTo(cache->context);
	st->title = NULL;
	st->content = NULL;
	/* stays if compiling raises an error: the entry never looks compiled */
	st->error = pstrdup("the step's templates could not be compiled");
	src = jsonb_container_get_string(&r->step->root, "title");
	if (src == NULL)
		src = jsonb_container_get_string(&r->step->root, "subject");	/* in_app */
	if (src == NULL || (st->title = template_parse(src, strlen(src), &error)) != NULL)
	{
		src = jsonb_container_get_string(&r->step->root, "content");
		if (src != NULL)
			st->content = template_parse(src, strlen(src), &error);
	}
	st->error = error;
	MemoryContextSwitchTo(old);
	return st;
}

/*
 * The rendering context {payload, subscriber, actor} of a message, and "step"
 * ({digest, events, total_count}) for a step after a digest: the workflow
 * engine hands it in the step's "_digest" key (novu._digest_context).
 */
static Jsonb *
render_context(ClaimedRow *r)
{
	JsonbParseState *state = NULL;
	JsonbValue	v;
	JsonbValue	digest;
	Jsonb	   *parts[4] = {r->payload, r->subscriber, r->actor, NULL};
	const char *names[4] = {"payload", "subscriber", "actor", "step"};
	int			nparts = 3;
	int			i;

	if (r->step != NULL && jsonb_container_get(&r->step->root, "_digest", &digest) && digest.type == jbvBinary)
	{
		parts[3] = JsonbValueToJsonb(&digest);
		nparts = 4;
	}
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (i = 0; i < nparts; i++)
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
bool
render_message(RenderCache *cache, ClaimedRow *r, char **error)
{
	Message    *m = r->msg;
	StepTemplates *st = step_templates(cache, r);
	Jsonb	   *context;
	Jsonb	   *step_data;
	Jsonb	   *step_ov;
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
	m->subscriber = r->subscriber;
	if (step_data != NULL)
		m->data = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(m->data),
													 JsonbPGetDatum(step_data)));

	m->overrides = provider_overrides(jsonb_container_get(&r->step->root, "overrides", &ov) && ov.type == jbvBinary
									  ? JsonbValueToJsonb(&ov) : NULL,
									  r->trigger_overrides, m->integration->provider_id);
	/* the trigger's overrides.steps.<stepId> last: the most specific */
	step_ov = trigger_step_overrides(r);
	if (step_ov != NULL)
	{
		Jsonb	   *more = provider_overrides(NULL, step_ov, m->integration->provider_id);

		if (more != NULL)
			m->overrides = jsonb_deep_merge(m->overrides, more);
	}
	return true;
}


/*
 * Render an in_app message: its subject (NULL if the step has none), content
 * and the cta's url (NULL if none), against {payload, subscriber, actor}, as
 * push steps render; false with *error on failure.
 */
bool
render_in_app(RenderCache *cache, ClaimedRow *r, char **subject, char **content, char **url, char **error)
{
	StepTemplates *st = step_templates(cache, r);
	Jsonb	   *context;
	JsonbValue	cta;
	JsonbValue	data;
	char	   *src = NULL;

	*subject = *content = *url = NULL;
	if (st->error != NULL)
	{
		*error = st->error;
		return false;
	}
	context = render_context(r);
	if (st->title != NULL && (*subject = template_render(st->title, context, error)) == NULL)
		return false;
	*content = st->content ? template_render(st->content, context, error) : pstrdup("");
	if (*content == NULL)
		return false;
	if (jsonb_container_get(&r->step->root, "cta", &cta) && cta.type == jbvBinary &&
		JsonContainerIsObject(cta.val.binary.data) &&
		jsonb_container_get(cta.val.binary.data, "data", &data) && data.type == jbvBinary &&
		JsonContainerIsObject(data.val.binary.data))
		src = jsonb_container_get_string(data.val.binary.data, "url");
	if (src != NULL)
	{
		Template   *t = template_parse(src, strlen(src), error);

		if (t == NULL || (*url = template_render(t, context, error)) == NULL)
			return false;
	}
	return true;
}
