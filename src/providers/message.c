/*
 * message.c
 *		Helpers every provider shares: setting a message's outcome through the
 *		one reason sanitiser, the outcome of a request that got no answer, and
 *		an integration's base URL.
 */
#include "postgres.h"

#include "common/jsonb_util.h"
#include "net/netpolicy.h"
#include "providers/provider.h"

/*
 * Set a message's outcome and reason.  Every reason passes here, and so
 * through the one sanitiser: text from a provider's answer is stored (and
 * logged) only as a short reason without control characters.
 */
void
novu_message_set(Message *m, Outcome outcome, const char *reason)
{
	m->outcome = outcome;
	m->reason = netpolicy_reason(reason);
}

/* Set the same outcome on several messages. */
void
novu_messages_set(Message **msgs, int n, Outcome outcome, const char *reason)
{
	int			i;

	for (i = 0; i < n; i++)
		novu_message_set(msgs[i], outcome, reason);
}

/*
 * Outcome of a request that got no HTTP answer: worth a retry, unless the
 * outbound URL policy stopped it (a refused address, a redirect): that is the
 * integration's configuration, and retrying cannot help.
 */
void
novu_classify_transport(HttpRequest *req, Message **msgs, int n)
{
	novu_messages_set(msgs, n, req->policy_refused ? OUTCOME_CONFIG_ERROR : OUTCOME_RETRY, http_transport_error(req));
}

/* The integration's endpoint override without a trailing slash, or the default. */
char *
novu_integration_base_url(Integration *ig, const char *default_base)
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

/*
 * A JSON body {key: text} with the message's overrides deep-merged into it
 * (the chat providers: Discord "content", Slack "text", ...).
 */
Jsonb *
novu_text_body(const char *key, const char *text, Jsonb *overrides)
{
	JsonbParseState *state = NULL;
	Jsonb	   *body;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	jsonb_push_string(&state, key, text ? text : "");
	body = JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
	return overrides ? jsonb_deep_merge(body, overrides) : body;
}

/* A POST of a JSON body to url, owned by the integration. */
HttpRequest *
novu_json_request(Integration *ig, const char *url, Jsonb *body)
{
	HttpRequest *req = http_request_new(url);
	char	   *text = JsonbToCString(NULL, &body->root, VARSIZE(body));

	req->owner = ig;
	http_add_header(req, "Content-Type: application/json");
	req->body = text;
	req->body_len = strlen(text);
	return req;
}
