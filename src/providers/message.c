/*
 * message.c
 *		Helpers every provider shares: setting a message's outcome through the
 *		one reason sanitiser, the outcome of a request that got no answer, and
 *		an integration's base URL.
 */
#include "postgres.h"

#include "common/jsonb_util.h"
#include "crypto/crypto.h"
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

/*
 * The outcome of a webhook-style answer (push webhook, chat webhooks, Web
 * Push): 2xx sent, 429 and 5xx retried (Retry-After honoured), "gone" (the
 * provider's own reading of the answer) removes the target, 401/403 are the
 * integration's configuration when auth_is_config, anything else drops the
 * message.  what is a short text of the answer for the reason (may be NULL).
 */
void
novu_webhook_outcome(Message *m, HttpRequest *req, bool gone, bool auth_is_config, const char *what)
{
	const char *sep = what && what[0] ? ": " : "";

	what = what ? what : "";
	m->retry_after = http_retry_after_seconds(req->retry_after);
	if (req->status >= 200 && req->status < 300)
		novu_message_set(m, OUTCOME_SENT, NULL);
	else if (req->status == 429 || req->status >= 500)
		novu_message_set(m, OUTCOME_RETRY, psprintf("HTTP %ld%s%s", req->status, sep, what));
	else if (gone)
		novu_message_set(m, OUTCOME_REMOVE_TOKEN, psprintf("HTTP %ld%s%s (the target is gone)", req->status, sep, what));
	else if (auth_is_config && (req->status == 401 || req->status == 403))
		novu_message_set(m, OUTCOME_CONFIG_ERROR,
						 psprintf("HTTP %ld%s%s (the receiver refused our credentials)", req->status, sep, what));
	else
		novu_message_set(m, OUTCOME_DROP, psprintf("HTTP %ld%s%s", req->status, sep, what));
}

/* Add X-Novu-Signature, the lowercase hex HMAC-SHA256 of the request's exact body; false if it cannot be made. */
bool
novu_sign_request(HttpRequest *req, const char *secret)
{
	char	   *signature = crypto_hmac_sha256_hex(secret, strlen(secret), req->body, req->body_len);

	if (signature == NULL)
		return false;
	http_add_header(req, psprintf("X-Novu-Signature: %s", signature));
	return true;
}
