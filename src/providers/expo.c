/*
 * expo.c
 *		Expo push service: up to 100 messages per request, tickets mapped back
 *		to their messages in order, optional bearer access token, gzip bodies,
 *		and receipts (getReceipts, up to 1000 ids a call) checked later to catch
 *		DeviceNotRegistered after acceptance.
 *
 * Message: {"to", "title", "body", "data": payload}, then overrides.expo
 * deep-merged into each message (only the fields of its own
 * allowlist; "to" is set last, so nothing can retarget it).  A token is
 * removed only on a DeviceNotRegistered ticket or receipt of that token, never
 * on a request-level error.
 *
 * Expo may refuse a whole request for one message (a wrong value:
 * VALIDATION_ERROR; a token of another project: PUSH_TOO_MANY_EXPERIENCE_IDS),
 * and a request carries the messages of many triggers.  Such an error on a
 * request of several messages (expo_error_may_be_some) splits it: its
 * messages are retried, each a new attempt, by project when the error's
 * details list the projects' tokens, else one per request (expo_split,
 * ProviderOps); a message refused alone fails with Expo's reason.  Errors
 * about the integration (401, 403, UNAUTHORIZED, its credentials), a wrong
 * endpoint, the rate or the service still answer for all its messages.
 */
#include "postgres.h"

#include <zlib.h>

#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "net/http.h"
#include "common/jsonb_util.h"
#include "providers/provider.h"
#include "providers/rules.h"
#include "providers/validate.h"
#include "crypto/envelope.h"

#define EXPO_DEFAULT_BASE	"https://exp.host"
#define EXPO_GZIP_OVER		1024

/* What the Expo provider keeps per integration. */
typedef struct ExpoState
{
	char	   *send_url;
	char	   *receipts_url;
	char	   *auth_header;	/* NULL without an access token */
} ExpoState;

/* Read the optional access token and the base URL. */
static bool
expo_prepare(Integration *ig, char **error)
{
	ExpoState  *st = palloc0(sizeof(ExpoState));
	char	   *base = novu_integration_base_url(ig, EXPO_DEFAULT_BASE);
	char	   *token = jsonb_container_get_string(&ig->credentials->root, "apiKey");

	st->send_url = psprintf("%s/--/api/v2/push/send", base);
	st->receipts_url = psprintf("%s/--/api/v2/push/getReceipts", base);
	if (token != NULL && token[0] != '\0')
		st->auth_header = psprintf("Authorization: Bearer %s", token);
	ig->state = st;
	return true;
}

/* Expo needs no token exchange. */
static bool
expo_authorize(Integration *ig, bool force, Outcome *failure, char **error)
{
	return true;
}

/* gzip a body (Expo accepts Content-Encoding: gzip); NULL if zlib fails. */
static char *
gzip_body(const char *data, size_t len, size_t *outlen)
{
	z_stream	zs;
	size_t		cap = compressBound(len) + 32;
	char	   *out = palloc(cap);

	memset(&zs, 0, sizeof(zs));
	if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return NULL;
	zs.next_in = (Bytef *) data;
	zs.avail_in = len;
	zs.next_out = (Bytef *) out;
	zs.avail_out = cap;
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
	{
		deflateEnd(&zs);
		return NULL;
	}
	*outlen = zs.total_out;
	deflateEnd(&zs);
	return out;
}

/* Set the common headers and the (possibly gzipped) JSON body of a request. */
static void
expo_set_body(HttpRequest *req, ExpoState *st, char *json)
{
	size_t		len = strlen(json);
	size_t		zlen;
	char	   *z;

	http_add_header(req, "Content-Type: application/json");
	http_add_header(req, "Accept: application/json");
	if (st->auth_header)
		http_add_header(req, st->auth_header);
	if (len > EXPO_GZIP_OVER && (z = gzip_body(json, len, &zlen)) != NULL)
	{
		http_add_header(req, "Content-Encoding: gzip");
		req->body = z;
		req->body_len = zlen;
	}
	else
	{
		req->body = json;
		req->body_len = len;
	}
}

/* Build one send request for up to 100 messages. */
static HttpRequest *
expo_build(Integration *ig, Message **msgs, int n)
{
	ExpoState  *st = ig->state;
	StringInfoData buf;
	HttpRequest *req;
	int			i;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	for (i = 0; i < n; i++)
	{
		Message    *m = msgs[i];
		JsonbParseState *state = NULL;
		JsonbValue	v;
		Jsonb	   *message;

		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		jsonb_push_string(&state, "title", m->title);
		jsonb_push_string(&state, "body", m->body);
		jsonb_push_key(&state, "data");
		v.type = jbvBinary;
		v.val.binary.data = &m->data->root;
		v.val.binary.len = VARSIZE(m->data) - VARHDRSZ;
		pushJsonbValue(&state, WJB_VALUE, &v);
		message = jsonb_deep_merge(JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL)),
								   m->overrides);
		/* the target last: whatever was merged, the message goes to this token */
		state = NULL;
		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		jsonb_push_string(&state, "to", m->target);
		message = jsonb_deep_merge(message, JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL)));
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		appendStringInfoString(&buf, JsonbToCString(NULL, &message->root, VARSIZE(message)));
	}
	appendStringInfoChar(&buf, ']');

	req = http_request_new(st->send_url);
	req->owner = ig;
	expo_set_body(req, st, buf.data);
	return req;
}

/* Outcome of an Expo error code (tickets, receipts and request errors). */
static Outcome
expo_error_outcome(const char *code)
{
	if (code == NULL)
		return OUTCOME_DROP;
	if (strcmp(code, "DeviceNotRegistered") == 0)
		return OUTCOME_REMOVE_TOKEN;
	if (strcmp(code, "MessageRateExceeded") == 0 || strcmp(code, "TOO_MANY_REQUESTS") == 0)
		return OUTCOME_RETRY;
	if (strcmp(code, "InvalidCredentials") == 0 || strcmp(code, "MismatchSenderId") == 0 ||
		strcmp(code, "UNAUTHORIZED") == 0)
		return OUTCOME_CONFIG_ERROR;
	return OUTCOME_DROP;
}

/*
 * The first request-level error {"errors": [{"code", "message", "details"}]}
 * of a body; *details is its details object, or has type jbvNull.
 */
static bool
expo_request_error(Jsonb *body, char **code, char **message, JsonbValue *details)
{
	JsonbValue	errors;
	JsonbValue	first;

	details->type = jbvNull;
	if (body == NULL || !JB_ROOT_IS_OBJECT(body) ||
		!jsonb_container_get(&body->root, "errors", &errors) || errors.type != jbvBinary ||
		!JsonContainerIsArray(errors.val.binary.data) ||
		getIthJsonbValueFromContainer(errors.val.binary.data, 0) == NULL)
		return false;
	first = *getIthJsonbValueFromContainer(errors.val.binary.data, 0);
	*code = first.type == jbvBinary ? jsonb_container_get_string(first.val.binary.data, "code") : NULL;
	*message = first.type == jbvBinary ? jsonb_container_get_string(first.val.binary.data, "message") : NULL;
	if (first.type == jbvBinary && (!jsonb_container_get(first.val.binary.data, "details", details) ||
									details->type != jbvBinary || !JsonContainerIsObject(details->val.binary.data)))
		details->type = jbvNull;
	return true;
}

/*
 * Whether an error Expo answered for a whole request may be about some of its
 * messages only: a 4xx other than authentication (401, 403), a wrong endpoint
 * (404, 405) and the rate limit (429), whose code does not name the project's
 * credentials or rate (expo_error_outcome: a payload error).  VALIDATION_ERROR
 * (one message's value), PUSH_TOO_MANY_EXPERIENCE_IDS (a token of another
 * project), PUSH_TOO_MANY_NOTIFICATIONS, a body too large (413) are.
 */
static bool
expo_error_may_be_some(long status, const char *code)
{
	if (status < 400 || status >= 500 || status == 401 || status == 403 || status == 404 ||
		status == 405 || status == 429)
		return false;
	return code == NULL || expo_error_outcome(code) == OUTCOME_DROP;
}

/* The position of the project whose tokens (details: {project: [tokens]}) hold a token, or -1. */
static int
expo_project_of(JsonbValue *details, const char *token)
{
	JsonbIterator *it = JsonbIteratorInit(details->val.binary.data);
	JsonbIteratorToken tok;
	JsonbValue	k;
	JsonbValue	v;
	JsonbValue	want;
	int			p = 0;

	want.type = jbvString;
	want.val.string.val = (char *) token;
	want.val.string.len = strlen(token);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		(void) JsonbIteratorNext(&it, &v, true);
		if (v.type == jbvBinary && JsonContainerIsArray(v.val.binary.data) &&
			findJsonbValueFromContainer(v.val.binary.data, JB_FARRAY, &want) != NULL)
			return p;
		p++;
	}
	return -1;
}

/*
 * A request of several messages that Expo refused as a whole for what may be
 * some of them (expo_error_may_be_some): each message is retried, as a new
 * attempt, in a smaller request (ProviderOps: a new request_key per group).
 * With the tokens of each project (PUSH_TOO_MANY_EXPERIENCE_IDS details), a
 * project's messages go together; otherwise, and when the request was such a
 * group already, each message goes alone, so that a split always ends: a
 * message refused alone fails with Expo's reason, and the others are sent.
 */
static void
expo_split(Integration *ig, Message **msgs, int n, JsonbValue *details, const char *code, const char *message)
{
	int		   *lead = palloc(sizeof(int) * n);	/* the first message of each one's group */
	int		   *project = palloc(sizeof(int) * n);
	int			groups = 0;
	char	   *reason;
	int			i;
	int			j;

	for (i = 0; i < n; i++)
	{
		/* the keys of Expo's requests are only those of its splits: a group is split into single messages */
		project[i] = details->type == jbvBinary && msgs[0]->request_key == NULL
			? expo_project_of(details, msgs[i]->target) : -1;
		for (j = 0; project[i] >= 0 && j < i && project[j] != project[i]; j++)
			;
		lead[i] = project[i] >= 0 ? j : i;
		if (lead[i] == i)
			groups++;
	}
	/* one group of them all (details that do not tell the projects apart): each alone */
	for (i = 0; groups == 1 && i < n; i++)
		lead[i] = i;
	/* the split first: a reason is cut at NOVU_REASON_MAX_LEN bytes, Expo's text may be long */
	reason = psprintf("%s (a request of %d messages, split %s)%s%s", code, n,
					  groups > 1 && groups < n ? "by Expo project" : "into one per message",
					  message ? ": " : "", message ? message : "");
	for (i = 0; i < n; i++)
	{
		Message    *first = msgs[lead[i]];

		msgs[i]->request_key = psprintf("expo:" INT64_FORMAT ":" INT64_FORMAT ":%d", ig->id, first->id, first->attempts);
		novu_message_set(msgs[i], OUTCOME_RETRY, reason);
	}
}

/* Map the tickets of a send answer back to the messages, in order. */
static void
expo_classify(Integration *ig, HttpRequest *req, Message **msgs, int n)
{
	Jsonb	   *body;
	JsonbValue	data;
	JsonbValue	details;
	char	   *code = NULL;
	char	   *message = NULL;
	int			i;

	if (req->result != CURLE_OK)
	{
		novu_classify_transport(req, msgs, n);
		return;
	}
	body = jsonb_parse_or_null(req->response.data, req->response.len);
	for (i = 0; i < n; i++)
		msgs[i]->retry_after = http_retry_after_seconds(req->retry_after);

	if (expo_request_error(body, &code, &message, &details))
	{
		Outcome		o = expo_error_outcome(code);

		/* a request-level error is never about one token: a dead-token code there is not Expo speaking */
		if (o == OUTCOME_REMOVE_TOKEN)
			o = OUTCOME_CONFIG_ERROR;
		if (req->status == 429 || req->status >= 500)
			o = OUTCOME_RETRY;
		else if (n > 1 && expo_error_may_be_some(req->status, code))
		{
			/* one message's error must not fail the others sent with it */
			expo_split(ig, msgs, n, &details, code ? code : "error", message);
			return;
		}
		novu_messages_set(msgs, n, o, psprintf("%s: %s", code ? code : "error", message ? message : ""));
		return;
	}
	if (req->status == 429 || req->status >= 500 || body == NULL)
	{
		/* rate limit, server error, or a proxy's HTML page: try again later */
		novu_messages_set(msgs, n, OUTCOME_RETRY,
					 psprintf("HTTP %ld%s", req->status, body == NULL ? " (not JSON)" : ""));
		return;
	}
	if (req->status != 200)
	{
		if (n > 1 && expo_error_may_be_some(req->status, NULL))
			expo_split(ig, msgs, n, &details, psprintf("HTTP %ld", req->status), NULL);
		else
			novu_messages_set(msgs, n, req->status == 401 || req->status == 403 ? OUTCOME_CONFIG_ERROR : OUTCOME_DROP,
							  psprintf("HTTP %ld", req->status));
		return;
	}
	if (!jsonb_container_get(&body->root, "data", &data) || data.type != jbvBinary ||
		!JsonContainerIsArray(data.val.binary.data) || JsonContainerSize(data.val.binary.data) != n)
	{
		novu_messages_set(msgs, n, OUTCOME_RETRY, "tickets do not match the messages sent");
		return;
	}
	for (i = 0; i < n; i++)
	{
		JsonbValue *t = getIthJsonbValueFromContainer(data.val.binary.data, i);
		char	   *status = t && t->type == jbvBinary ? jsonb_container_get_string(t->val.binary.data, "status") : NULL;

		if (status != NULL && strcmp(status, "ok") == 0)
		{
			msgs[i]->provider_message_id = jsonb_container_get_string(t->val.binary.data, "id");
			msgs[i]->receipt = (msgs[i]->provider_message_id != NULL);
			novu_message_set(msgs[i], OUTCOME_SENT, NULL);
		}
		else
		{
			JsonbValue	details;
			char	   *error = NULL;
			char	   *named = NULL;
			char	   *text = t && t->type == jbvBinary ? jsonb_container_get_string(t->val.binary.data, "message") : NULL;
			Outcome		o;

			if (t && t->type == jbvBinary && jsonb_container_get(t->val.binary.data, "details", &details) &&
				details.type == jbvBinary)
			{
				error = jsonb_container_get_string(details.val.binary.data, "error");
				named = jsonb_container_get_string(details.val.binary.data, "expoPushToken");
			}
			o = expo_error_outcome(error);
			/* tickets come in request order; one naming another token is not about this one */
			if (o == OUTCOME_REMOVE_TOKEN && named != NULL && strcmp(named, msgs[i]->target) != 0)
				o = OUTCOME_CONFIG_ERROR;
			novu_message_set(msgs[i], o,
						psprintf("%s%s%s", error ? error : "error", text ? ": " : "", text ? text : ""));
		}
	}
}

/* Build a getReceipts request for up to 1000 receipt ids. */
static HttpRequest *
expo_receipts_request(Integration *ig, char **ids, int n)
{
	ExpoState  *st = ig->state;
	StringInfoData buf;
	HttpRequest *req;
	int			i;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"ids\":[");
	for (i = 0; i < n; i++)
	{
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		escape_json(&buf, ids[i]);
	}
	appendStringInfoString(&buf, "]}");
	req = http_request_new(st->receipts_url);
	req->owner = ig;
	expo_set_body(req, st, buf.data);
	return req;
}

/*
 * Read one receipt from a getReceipts answer: true if present, with its
 * outcome (SENT for ok) and reason; false if Expo has none for it yet.
 */
static bool
expo_receipt(Jsonb *body, const char *id, Outcome *outcome, char **reason)
{
	JsonbValue	data;
	JsonbValue	r;
	JsonbValue	details;
	char	   *status;
	char	   *error = NULL;
	char	   *text;

	if (body == NULL || !jsonb_container_get(&body->root, "data", &data) || data.type != jbvBinary ||
		!jsonb_container_get(data.val.binary.data, id, &r) || r.type != jbvBinary)
		return false;
	status = jsonb_container_get_string(r.val.binary.data, "status");
	if (status != NULL && strcmp(status, "ok") == 0)
	{
		*outcome = OUTCOME_SENT;
		*reason = NULL;
		return true;
	}
	if (jsonb_container_get(r.val.binary.data, "details", &details) && details.type == jbvBinary)
		error = jsonb_container_get_string(details.val.binary.data, "error");
	text = jsonb_container_get_string(r.val.binary.data, "message");
	*outcome = expo_error_outcome(error);
	*reason = psprintf("%s%s%s", error ? error : "error", text ? ": " : "", text ? text : "");
	return true;
}

/* ---------------------------------------------------------------------------
 * SQL time: credentials, device tokens, overrides
 * ------------------------------------------------------------------------- */

#define EXPO_TOKEN_INNER_MAX	256

static const char *const expo_keys[] = {"apiKey", "endpoint", NULL};

/* expo: optional apiKey (access token), optional endpoint. */
static void
expo_validate(CredCheck *c)
{
	char	   *s;

	cred_check_keys(c);
	s = cred_token(c, "apiKey", false,
					"apiKey is an Expo access token (enhanced push security); omit it if not used.");
	if (s != NULL)
		cred_push_string(c, "apiKey", s);
	cred_endpoint(c);
}

/* Expo: ExponentPushToken[...] or ExpoPushToken[...] (or a bare UUID, as Expo's SDK accepts). */
static bool
expo_token_check(const char *t, size_t len, const char **problem)
{
	static const char *const prefixes[] = {"ExponentPushToken[", "ExpoPushToken["};
	int			p;

	if (novu_is_uuid(t, len))
		return true;
	for (p = 0; p < lengthof(prefixes); p++)
	{
		size_t		plen = strlen(prefixes[p]);
		size_t		i;

		if (len <= plen || strncmp(t, prefixes[p], plen) != 0)
			continue;
		if (t[len - 1] != ']' || len - plen - 1 < 1 || len - plen - 1 > EXPO_TOKEN_INNER_MAX)
		{
			*problem = "does not have 1 to " CppAsString2(EXPO_TOKEN_INNER_MAX) " characters between its brackets";
			return false;
		}
		for (i = plen; i < len - 1; i++)
		{
			if (!is_b64url(t[i]))
			{
				*problem = "has a character other than letters, digits, '-' and '_' between its brackets";
				return false;
			}
		}
		return true;
	}
	*problem = "is not of the form ExponentPushToken[...] or ExpoPushToken[...]";
	return false;
}

/*
 * sound: a string ("default" or a sound file's name), null, or an object
 * {critical: boolean, name: string or null, volume: number} (PROTOCOLS.md
 * 3.1).  Keys of the object beyond these are Expo's to judge.
 */
static const char *
expo_sound_check(JsonbValue *v)
{
	JsonbValue	x;

	if (v->type == jbvString || v->type == jbvNull)
		return NULL;
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		return " must be a string, null or an object";
	if (jsonb_container_get(v->val.binary.data, "critical", &x) && x.type != jbvBool)
		return ".critical must be true or false";
	if (jsonb_container_get(v->val.binary.data, "name", &x) && x.type != jbvString && x.type != jbvNull)
		return ".name must be a string or null";
	if (jsonb_container_get(v->val.binary.data, "volume", &x) && x.type != jbvNumeric)
		return ".volume must be a number";
	return NULL;
}

static const char *const expo_priorities[] = {"default", "normal", "high", NULL};
static const char *const expo_interruption_levels[] = {"active", "critical", "passive", "time-sensitive", NULL};

static const FieldRule expo_rich_content_fields[] = {
	ALLOW("image", FIELD_STRING),
	OTHERS(FIELD_ANY)
};

/*
 * Expo: overrides.expo merges into each push message (PROTOCOLS.md 3.1), each
 * field with the type Expo takes: Expo refuses a whole request (VALIDATION_ERROR)
 * for one wrong value, and a request carries the messages of many triggers.
 * Only types and Expo's documented words are checked: what Expo may accept
 * beyond them (a negative number, keys it adds) is left to it, and a request
 * it refuses is split (expo_classify).
 */
static const FieldRule expo_fields[] = {
	REFUSE("to", "the Expo push token is the message's target"),
	ALLOW("title", FIELD_STRING),
	ALLOW("body", FIELD_STRING),
	ALLOW("subtitle", FIELD_STRING),
	ALLOW("data", FIELD_OBJECT),
	VALUE("sound", expo_sound_check, "a string (\"default\" or a sound's name), null, or an object {critical: true or false, name: a string or null, volume: a number}"),
	ALLOW("badge", FIELD_NUMBER),
	ALLOW("ttl", FIELD_NUMBER),
	ALLOW("expiration", FIELD_NUMBER),
	WORDS("priority", expo_priorities),
	ALLOW("channelId", FIELD_STRING),
	ALLOW("categoryId", FIELD_STRING),
	ALLOW("mutableContent", FIELD_BOOLEAN),
	WORDS("interruptionLevel", expo_interruption_levels),
	NESTED("richContent", expo_rich_content_fields),
	ALLOW("icon", FIELD_STRING),
	ALLOW("collapseId", FIELD_STRING),
	ALLOW("tag", FIELD_STRING),
	ALLOW("_contentAvailable", FIELD_BOOLEAN),
	ALLOW("_displayInForeground", FIELD_BOOLEAN),
	OTHERS(FIELD_REFUSED)
};

/* the access token is the secret */
static const SecretField expo_secrets[] = {
	{NULL, "apiKey", NULL},
	{NULL, NULL, NULL}
};

static const ReceiptOps expo_receipts = {
	.max_batch = 1000,
	.request = expo_receipts_request,
	.read = expo_receipt,
};

const ProviderOps novu_expo_provider = {
	.provider_id = "expo",
	.label = "Expo",
	.channel = CHANNEL_PUSH,
	.credential_keys = expo_keys,
	.validate = expo_validate,
	.secrets = expo_secrets,
	.token_check = expo_token_check,
	.token_form = "An Expo push token looks like ExponentPushToken[xxxxxxxxxxxxxxxxxxxxxx] or ExpoPushToken[...] (letters, digits, '-' and '_' between the brackets).",
	.overrides = expo_fields,
	.overrides_hint = "Expo overrides may set title, body, subtitle, channelId, categoryId, icon, collapseId and tag "
	"(strings), data and richContent (objects), sound (a string, null or an object), badge, ttl and expiration "
	"(numbers), priority (default, normal or high), interruptionLevel (active, critical, passive or time-sensitive), "
	"mutableContent, _contentAvailable and _displayInForeground (true or false).",
	.max_batch = 100,
	.warm_up = false,
	.prepare = expo_prepare,
	.authorize = expo_authorize,
	.check = novu_message_check,
	.build = expo_build,
	.classify = expo_classify,
	.receipts = &expo_receipts,
};
