/*
 * http.c
 *		The HTTP engine of the delivery workers, on libcurl's multi interface.
 *
 * Each integration has its own pool (a curl multi handle), so its connections
 * are reused across rounds but never shared with another integration: APNs
 * binds a connection to one provider token, so two apps of one team must not
 * share one.  HTTP/2 transfers of a pool are multiplexed on a connection
 * (CURLPIPE_MULTIPLEX + PIPEWAIT) and connections per host are bounded, which
 * bounds the requests in flight; beyond pool_capacity() a pool's requests wait
 * in order.  curl is driven event by event (curl_multi_socket_action): it
 * tells us which sockets to watch and when its next timeout falls, and is
 * called only for the sockets that are ready, so the cost of a wake-up does
 * not grow with the number of transfers.  Waiting is one WaitEventSet holding
 * those sockets, MyLatch and postmaster death, so a commit wakes the worker
 * even while a provider hangs, and SIGTERM (die sets the latch) is served at
 * once.  curl keeps its own (malloc) memory: its objects outlive our memory
 * contexts.
 *
 * novu.request_timeout is the provider's time to answer, counted from the
 * send (not from when curl got the transfer: it may wait for a free stream
 * first); a request curl never sent is ended after as long, as not sent
 * (expire_overdue).  A request may also carry a time past which it is not sent
 * at all (send_by: deliver.c keeps each request within its message's lease).
 *
 * The outbound URL policy (netpolicy.c) holds for every transfer: https only,
 * no proxy, no redirect followed (a 3xx answer fails the request), and every
 * connection curl opens passes netpolicy_refuses() with its resolved address
 * before any byte is sent.  A pool whose connections were opened under another
 * novu.allowed_private_networks is emptied before it is used again.  A transfer
 * the policy stopped ends with policy_refused set and the reason in error.
 */
#include "postgres.h"

#include <curl/curl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/latch.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "net/http.h"
#include "net/netpolicy.h"
#include "novu.h"

#define HTTP_MAX_RESPONSE		(1024 * 1024)
#define HTTP_MAX_HOST_CONNS		4
#define HTTP_EASY_POOL			256
#define HTTP_MAX_ACTIVE			200		/* transfers handed to curl per pool; more wait in order */
#define HTTP_MAX_STREAMS		100		/* per connection: curl (7.88) walks every stream of a
										 * connection on each of its socket events */
/* why a request past its send_by was not sent */
#define SEND_LATE_TEXT "not sent: it waited until too little of its message's lease was left"
#define HTTP_MAX_SOCKETS		16		/* sockets curl may ask us to watch per pool */

/* A socket curl asked us to watch, and for what (CURL_POLL_IN/OUT/INOUT). */
typedef struct HttpSocket
{
	curl_socket_t fd;
	int			what;
	int			pos;			/* its event in wait_set, -1 if none */
	bool		changed;		/* what changed since wait_set was last adjusted */
	bool		corked;			/* TCP_CORK set (cork_sockets) */
} HttpSocket;

/* One connection pool: the connections of one integration. */
struct HttpPool
{
	CURLM	   *multi;
	int			in_flight;		/* submitted and not finished */
	int			active;			/* handed to curl */
	HttpRequest **waiting;		/* submitted beyond pool_capacity(), oldest first */
	int			nwaiting;
	int			waiting_cap;
	int			fds;			/* external file descriptors reserved for it */
	HttpSocket	socks[HTTP_MAX_SOCKETS];	/* what curl wants watched */
	int			nsocks;
	TimestampTz timer_at;		/* when curl wants its timeout action; 0: none */
	uint32		policy_generation;	/* netpolicy_generation its connections were opened under */
	bool		warm_up;		/* one request first on a new connection (see pool_capacity) */
	bool		warm;			/* a request got an answer on its open connection */
	int			open_conns;		/* connections curl opened and has not closed */
};

static HttpPool **pools = NULL;
static int	npools = 0;
static int	pools_cap = 0;
static HttpRequest **done = NULL;
static int	ndone = 0;
static int	done_cap = 0;
static int	in_flight = 0;
static CURL *easy_pool[HTTP_EASY_POOL];
static int	easy_pool_len = 0;

/*
 * The set http_wait() waits on: MyLatch, postmaster death and every socket of
 * every pool.  It lives across waits (creating an epoll set and registering
 * each socket on every wait was half of the worker's CPU time): a changed
 * interest is applied with ModifyWaitEvent, and the set is built again only
 * when sockets come or go, which is when connections open or close.
 */
static WaitEventSet *wait_set = NULL;
static WaitEvent *wait_events = NULL;	/* room for every event of wait_set */
static int	wait_set_size = 0;
static bool wait_set_stale = true;

/* The requests handed to curl, by easy handle (see http_stream_refused). */
typedef struct ActiveEntry
{
	CURL	   *easy;
	HttpRequest *req;
} ActiveEntry;

static HTAB *active_requests = NULL;

/*
 * No request's deadline (request_deadline) falls before this; 0: none in
 * curl.  Each deadline is a moment plus the timeout, so a request handed to
 * curl later has a later one: the bound is lowered when a request starts, and
 * recomputed only when it has passed (expire_overdue).
 */
static TimestampTz next_deadline = 0;

/* What http_run_one calls before it waits (http_set_before_wait); NULL: nothing. */
static void (*before_wait_hook) (void) = NULL;

/* Set when a wait saw MyLatch set (the latch is reset here; see http_wait). */
bool		novu_wakeup_pending = false;

/* Initialize curl (after fork: curl_global_init belongs in the worker). */
void
http_init(void)
{
	static bool initialized = false;
	HASHCTL		ctl;

	if (initialized)
		return;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		elog(ERROR, "novu: curl_global_init failed");
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(CURL *);
	ctl.entrysize = sizeof(ActiveEntry);
	ctl.hcxt = TopMemoryContext;
	active_requests = hash_create("novu requests in curl", 512, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	initialized = true;
}

/* Grow a TopMemoryContext array to hold at least n elements. */
static void *
grow(void *array, int *cap, int n, Size elem)
{
	if (n <= *cap)
		return array;
	*cap = Max(n, Max(16, *cap * 2));
	if (array == NULL)
		return MemoryContextAlloc(TopMemoryContext, *cap * elem);
	return repalloc(array, *cap * elem);
}

/*
 * How many of a pool's requests curl may have at once.  A warm-up pool (APNs
 * token auth: a new connection allows one stream until a request
 * authenticated it) has one request in curl's hands until an answer came on
 * its connection, then as many as one connection carries, so curl never opens
 * a second, cold connection beside it: curl sends before it reads the
 * server's SETTINGS, and each stream the server refused closes the connection
 * it came on (libcurl 7.88), so the resends met cold connections again.
 */
static int
pool_capacity(HttpPool *pool)
{
	if (!pool->warm_up)
		return HTTP_MAX_ACTIVE;
	return pool->warm ? HTTP_MAX_STREAMS : 1;
}

/* Set or clear TCP_CORK on a connection's socket (never ereports: curl may be on the stack). */
static void
set_cork(curl_socket_t fd, bool on)
{
	int			v = on ? 1 : 0;

	(void) setsockopt(fd, IPPROTO_TCP, TCP_CORK, &v, sizeof(v));
}

/*
 * Cork (or uncork) every socket curl watches, around a run of curl actions.
 * libcurl (7.88) writes each HTTP/2 frame of each stream in its own TLS
 * record and send(), so a batch of requests left as two TCP segments per
 * request.  Corked, the frames of all the requests one run starts leave as
 * full segments when the socket is uncorked, at the end of the run and
 * always before waiting, so no frame waits for the kernel's cork timer.  (A
 * burst of 20,000 FCM requests: the mock's CPU per request -30%, the
 * workers' about -7%.)
 */
static void
cork_sockets(bool on)
{
	int			i;
	int			j;

	for (i = 0; i < npools; i++)
	{
		for (j = 0; j < pools[i]->nsocks; j++)
		{
			HttpSocket *hs = &pools[i]->socks[j];

			if (hs->corked != on)
			{
				set_cork(hs->fd, on);
				hs->corked = on;
			}
		}
	}
}

/* curl's socket callback: remember which sockets to watch, for what. */
static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	HttpPool   *pool = userp;
	int			i;

	for (i = 0; i < pool->nsocks && pool->socks[i].fd != fd; i++)
		;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < pool->nsocks)
		{
			/* an idle connection stays open: its next request must not wait for the cork */
			if (pool->socks[i].corked)
				set_cork(fd, false);
			pool->socks[i] = pool->socks[--pool->nsocks];
			wait_set_stale = true;
		}
		return 0;
	}
	if (i == pool->nsocks)
	{
		if (pool->nsocks == HTTP_MAX_SOCKETS)
			return -1;			/* cannot happen: connections are bounded */
		pool->socks[pool->nsocks++].fd = fd;
		pool->socks[i].what = 0;
		pool->socks[i].pos = -1;
		pool->socks[i].changed = false;
		pool->socks[i].corked = false;
		wait_set_stale = true;
	}
	if (pool->socks[i].what != what)
	{
		pool->socks[i].what = what;
		pool->socks[i].changed = true;
	}
	return 0;
}

/* curl's timer callback: remember when it wants its timeout action. */
static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	HttpPool   *pool = userp;

	pool->timer_at = timeout_ms < 0 ? 0 : TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

/* Give a pool a new curl multi handle (its connection cache), set up. */
static void
pool_open_multi(HttpPool *pool)
{
	pool->multi = curl_multi_init();
	if (pool->multi == NULL)
		elog(ERROR, "novu: curl_multi_init failed");
	pool->policy_generation = netpolicy_generation;
	curl_multi_setopt(pool->multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
	/* a warm-up pool keeps to one connection: a second one would start cold */
	curl_multi_setopt(pool->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) (pool->warm_up ? 1 : pool->fds));
	curl_multi_setopt(pool->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) pool->fds);
	curl_multi_setopt(pool->multi, CURLMOPT_MAXCONNECTS, (long) pool->fds);
	/* streams per connection (the server may allow fewer) */
	curl_multi_setopt(pool->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, (long) HTTP_MAX_STREAMS);
	curl_multi_setopt(pool->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(pool->multi, CURLMOPT_SOCKETDATA, pool);
	curl_multi_setopt(pool->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(pool->multi, CURLMOPT_TIMERDATA, pool);
}

/*
 * Close an idle pool's connections and start a new connection cache: the
 * list of allowed networks changed, and a connection opened under the old
 * list must not be reused.
 */
static void
pool_renew(HttpPool *pool)
{
	Assert(pool->active == 0);
	curl_multi_cleanup(pool->multi);
	pool->multi = NULL;
	pool->nsocks = 0;
	pool->timer_at = 0;
	pool->warm = false;
	pool->open_conns = 0;
	wait_set_stale = true;
	pool_open_multi(pool);
}

/* A new pool: its own connections, at most HTTP_MAX_HOST_CONNS per host. */
HttpPool *
http_pool_create(bool warm_up)
{
	HttpPool   *pool = MemoryContextAllocZero(TopMemoryContext, sizeof(HttpPool));

	pool->warm_up = warm_up;
	/* curl's sockets are invisible to fd.c: reserve room for them */
	while (pool->fds < HTTP_MAX_HOST_CONNS && AcquireExternalFD())
		pool->fds++;
	if (pool->fds == 0)
	{
		pfree(pool);
		ereport(ERROR,
				(errmsg("novu: no file descriptors left for provider connections"),
				 errhint("Raise max_files_per_process or the process's open-file limit.")));
	}
	pool_open_multi(pool);

	pools = grow(pools, &pools_cap, npools + 1, sizeof(HttpPool *));
	pools[npools++] = pool;
	return pool;
}

/* Close a pool's connections (it must have nothing in flight). */
void
http_pool_destroy(HttpPool *pool)
{
	int			i;

	Assert(pool->in_flight == 0);
	for (i = 0; i < npools && pools[i] != pool; i++)
		;
	if (i < npools)
		pools[i] = pools[--npools];
	curl_multi_cleanup(pool->multi);
	wait_set_stale = true;
	while (pool->fds-- > 0)
		ReleaseExternalFD();
	if (pool->waiting)
		pfree(pool->waiting);
	pfree(pool);
}

/* Collect the response body (never ereports: curl is on the stack). */
static size_t
write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	HttpRequest *req = arg;
	size_t		n = size * nmemb;

	if (req->response.len + n > HTTP_MAX_RESPONSE)
		return 0;				/* aborts the transfer: CURLE_WRITE_ERROR */
	appendBinaryStringInfo(&req->response, data, n);
	return n;
}

/* Copy a header value into cxt if the line is "name: value". */
static char *
header_value(MemoryContext cxt, const char *line, size_t len, const char *name)
{
	char	   *copy;
	size_t		nlen = strlen(name);
	const char *v;
	const char *end = line + len;

	if (len <= nlen + 1 || pg_strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
		return NULL;
	v = line + nlen + 1;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	copy = MemoryContextAlloc(cxt, end - v + 1);
	memcpy(copy, v, end - v);
	copy[end - v] = '\0';
	return copy;
}

/* Keep the response headers the providers need (Retry-After, apns-id). */
static size_t
header_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	HttpRequest *req = arg;
	size_t		n = size * nmemb;
	char	   *v;

	if (n <= 2 && (n == 0 || data[0] == '\r' || data[0] == '\n'))
		req->headers_done = true;	/* the blank line ending the answer's headers */
	else if ((v = header_value(GetMemoryChunkContext(req), data, n, "retry-after")) != NULL)
		req->retry_after = v;
	else if (req->id_header != NULL &&
			 (v = header_value(GetMemoryChunkContext(req), data, n, req->id_header)) != NULL)
		req->id_value = v;
	return n;
}

/* A new request for url, allocated in the current memory context. */
HttpRequest *
http_request_new(const char *url)
{
	HttpRequest *req = palloc0(sizeof(HttpRequest));

	req->url = pstrdup(url);
	initStringInfo(&req->response);
	return req;
}

/*
 * A request built in a short-lived context, copied into the current one: the
 * struct, its URL and its body (the headers are curl's, the client
 * certificate and key the caller's).
 */
HttpRequest *
http_request_keep(HttpRequest *req)
{
	HttpRequest *copy = palloc(sizeof(HttpRequest));
	char	   *body = palloc(req->body_len + 1);

	memcpy(copy, req, sizeof(HttpRequest));
	copy->url = pstrdup(req->url);
	if (req->body != NULL)
		memcpy(body, req->body, req->body_len);
	body[req->body_len] = '\0';
	copy->body = req->body != NULL ? body : NULL;
	initStringInfo(&copy->response);
	return copy;
}

/* Add a header line ("Name: value") to a request. */
void
http_add_header(HttpRequest *req, const char *header)
{
	struct curl_slist *l = curl_slist_append(req->headers, header);

	if (l == NULL)
		elog(ERROR, "novu: out of memory building request headers");
	req->headers = l;
}

/*
 * curl's opensocket callback: the resolved address of every new connection
 * passes the outbound URL policy here, before anything is sent.  Connections
 * are reused only within a pool and a pool is emptied when the policy
 * changes, so reuse never bypasses this.  A refused address is remembered in
 * the request; curl then tries the host's other addresses, if any.  Never
 * ereports or allocates: curl is on the stack.
 */
static curl_socket_t
opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	HttpRequest *req = clientp;
	curl_socket_t fd;

	if (purpose != CURLSOCKTYPE_IPCXN)
	{
		strlcpy(req->refused, "? (not an outgoing connection)", sizeof(req->refused));
		return CURL_SOCKET_BAD;
	}
	if (netpolicy_refuses(&address->addr, req->refused, sizeof(req->refused)))
		return CURL_SOCKET_BAD;
	fd = socket(address->family, address->socktype, address->protocol);
	if (fd != CURL_SOCKET_BAD)
	{
		req->sockets_opened++;
		req->pool->open_conns++;
	}
	return fd;
}

/*
 * curl's close-socket callback: a connection of the pool closed.  Once none is
 * left, the next one starts cold (see pool_capacity).  curl stops watching an
 * idle connection's socket, so this, not the socket callback, tells when a
 * connection is gone.
 */
static int
closesocket_cb(void *clientp, curl_socket_t fd)
{
	HttpPool   *pool = clientp;

	if (pool->open_conns > 0 && --pool->open_conns == 0)
		pool->warm = false;
	return close(fd);
}

/*
 * curl's pre-request callback, called each time curl is about to send the
 * request on a connection.  A second call means curl is resending it on its
 * own: the connection it was sent on broke before any answer (curl then
 * resends "on a fresh connect", GOAWAY or reset alike), and the provider may
 * well have processed it.  That resend is refused: the transfer fails, and
 * the message is retried by the extension as a recorded attempt.  A stream
 * the server refused (http_stream_refused) was not processed, and its resend
 * goes on.  So a request reaches the provider at most once per attempt the
 * extension records.  A send past the request's send_by (the first, or the
 * resend of a refused stream) does not go out: the request ends "not sent"
 * (send_late); a resend of a send that may have been processed is refused as
 * a resend even then, so that it never reads "not sent".  Each send that goes
 * on starts afresh what unsent_reason reads.  Never ereports: curl is on the
 * stack.
 */
static int
prereq_cb(void *clientp, char *conn_primary_ip, char *conn_local_ip,
		  int conn_primary_port, int conn_local_port)
{
	HttpRequest *req = clientp;

	/* first: a resend of a send the provider may have processed is refused as such */
	if (req->sends > 0 && !req->stream_refused)
	{
		req->sends++;
		return CURL_PREREQFUNC_ABORT;
	}
	if (req->send_by != 0 && GetCurrentTimestamp() >= req->send_by)
	{
		req->send_late = true;	/* sends stays: this one never went out */
		return CURL_PREREQFUNC_ABORT;
	}
	req->sends++;
	req->stream_refused = false;
	req->on_stream = false;
	req->h2_session = NULL;
	req->h2_stream_id = 0;
	req->written = false;
	req->sent_at = GetCurrentTimestamp();	/* the provider's time starts now */
	return CURL_PREREQFUNC_OK;
}

/* Our request on an easy handle, or NULL (the handle may be another curl user's). */
static HttpRequest *
active_request(void *easy)
{
	ActiveEntry *entry;

	if (active_requests == NULL)
		return NULL;
	entry = hash_search(active_requests, &easy, HASH_FIND, NULL);
	return entry != NULL ? entry->req : NULL;
}

/*
 * Our request whose current send went on this HTTP/2 stream, or NULL.  An
 * easy handle serves one request after another (easy_get), and an event of a
 * stream an earlier request or an earlier send left behind (a stream still
 * known to its session, whose user data still names the handle) must never
 * mark the request it carries now as refused, written or answered: a request
 * wrongly taken for refused would be let through prereq_cb and sent twice.
 */
static HttpRequest *
stream_request(void *easy, const void *session, int32 stream_id)
{
	HttpRequest *req = active_request(easy);

	if (req == NULL || !req->on_stream || req->h2_session != session || req->h2_stream_id != stream_id)
		return NULL;
	return req;
}

/*
 * When a request in curl's hands times out: novu.request_timeout (as it was
 * when the request started) after its last send began, or after it was handed
 * to curl if it was never sent (no connection or free stream came for it);
 * an unsent one at its send_by at the latest.
 */
static TimestampTz
request_deadline(HttpRequest *req)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(req->sent_at != 0 ? req->sent_at : req->started_at,
													   req->timeout_ms);

	/* not sent (or refused, waiting for a resend) by send_by: not sent at all */
	if ((req->sent_at == 0 || req->stream_refused) && req->send_by != 0 && req->send_by < deadline)
		deadline = req->send_by;
	return deadline;
}

/*
 * Whether the transfer on an easy handle got its answer's headers: called by
 * nghttp2_hooks.c from inside curl (the handle may be another curl user's).
 * Never ereports.
 */
bool
http_answer_started(void *easy, const void *session, int32 stream_id)
{
	HttpRequest *req = stream_request(easy, session, stream_id);

	return req != NULL && req->headers_done;
}

/*
 * The server refused a stream of ours (RST_STREAM(REFUSED_STREAM), or above a
 * GOAWAY's last-stream-id): called by nghttp2_hooks.c from inside curl, with
 * the easy handle, which may be another curl user's.  Never ereports.
 */
void
http_stream_refused(void *easy, const void *session, int32 stream_id)
{
	HttpRequest *req = stream_request(easy, session, stream_id);

	if (req != NULL)
	{
		TimestampTz deadline;

		req->stream_refused = true;
		/* its resend must come by its send_by: that may be sooner than the bound */
		deadline = request_deadline(req);
		if (next_deadline == 0 || deadline < next_deadline)
			next_deadline = deadline;
	}
}

/*
 * Our request is being sent on an HTTP/2 stream: called by nghttp2_hooks.c
 * from inside curl, with the easy handle, which may be another curl user's.
 * Never ereports.
 */
void
http_request_on_stream(void *easy, const void *session, int32 stream_id)
{
	HttpRequest *req = active_request(easy);

	if (req != NULL)
	{
		req->on_stream = true;
		req->h2_session = session;
		req->h2_stream_id = stream_id;
	}
}

/*
 * The frame ending our request (END_STREAM) was handed to the connection:
 * called by nghttp2_hooks.c from inside curl, with the easy handle, which may
 * be another curl user's.  Never ereports.
 */
void
http_request_written(void *easy, const void *session, int32 stream_id)
{
	HttpRequest *req = stream_request(easy, session, stream_id);

	if (req != NULL)
		req->written = true;
}

/* An easy handle from the free list, reset, or a new one. */
static CURL *
easy_get(void)
{
	CURL	   *h;

	if (easy_pool_len > 0)
	{
		h = easy_pool[--easy_pool_len];
		curl_easy_reset(h);
		return h;
	}
	h = curl_easy_init();
	if (h == NULL)
		elog(ERROR, "novu: curl_easy_init failed");
	return h;
}

/* Return an easy handle to the free list. */
static void
easy_put(CURL *h)
{
	if (easy_pool_len < HTTP_EASY_POOL)
		easy_pool[easy_pool_len++] = h;
	else
		curl_easy_cleanup(h);
}

/* Hand a request to curl (configure an easy handle and add it to the pool). */
static void
start_transfer(HttpPool *pool, HttpRequest *req)
{
	CURL	   *h = easy_get();
	TimestampTz deadline;

	req->easy = h;
	req->result = CURLE_OK;
	req->status = 0;
	req->error[0] = '\0';
	resetStringInfo(&req->response);
	req->retry_after = NULL;
	req->id_value = NULL;
	req->policy_refused = false;
	req->sockets_opened = 0;
	req->sends = 0;
	if (req->timeout_ms <= 0)
		req->timeout_ms = novu_request_timeout;
	req->started_at = GetCurrentTimestamp();
	req->sent_at = 0;
	req->send_late = false;
	req->stream_refused = false;
	req->headers_done = false;
	req->on_stream = false;
	req->h2_session = NULL;
	req->h2_stream_id = 0;
	req->written = false;
	req->unsent = NULL;
	req->refused[0] = '\0';

	curl_easy_setopt(h, CURLOPT_PRIVATE, req);
	curl_easy_setopt(h, CURLOPT_URL, req->url);
	/* the outbound URL policy: https only, straight to the host, no redirect */
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, 0L);
	curl_easy_setopt(h, CURLOPT_PROXY, "");	/* no proxy from the environment */
	curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
	curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, req);
	curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, closesocket_cb);
	curl_easy_setopt(h, CURLOPT_CLOSESOCKETDATA, pool);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, prereq_cb);
	curl_easy_setopt(h, CURLOPT_PREREQDATA, req);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, req->headers);
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body ? req->body : "");
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req->body_len);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, req->error);
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
	/*
	 * No CURLOPT_TIMEOUT_MS: curl counts it from when the transfer was added,
	 * including the time it waits for a free stream, so a request could go
	 * out moments before its end and reach a provider that is then given no
	 * time to answer.  The request timeout runs from the send instead
	 * (expire_overdue).
	 */
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(req->timeout_ms, 10000));
	curl_easy_setopt(h, CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
	if (novu_ca_file != NULL && novu_ca_file[0] != '\0')
	{
		/* the extra bundle, and the system store as well */
		curl_easy_setopt(h, CURLOPT_CAINFO, novu_ca_file);
		curl_easy_setopt(h, CURLOPT_CAPATH, "/etc/ssl/certs");
	}
	if (req->client_cert != NULL && req->client_key != NULL)
	{
		struct curl_blob cert = {(void *) req->client_cert, strlen(req->client_cert), CURL_BLOB_COPY};
		struct curl_blob key = {(void *) req->client_key, strlen(req->client_key), CURL_BLOB_COPY};

		curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
		curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &cert);
		curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
		curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &key);
	}

	if (curl_multi_add_handle(pool->multi, h) != CURLM_OK)
		elog(ERROR, "novu: curl_multi_add_handle failed");
	deadline = request_deadline(req);
	if (next_deadline == 0 || deadline < next_deadline)
		next_deadline = deadline;
	((ActiveEntry *) hash_search(active_requests, &h, HASH_ENTER, NULL))->req = req;
	pool->active++;
}

/*
 * Queue a request in a pool (see http_submit); first: one the worker waits
 * for (http_run_one), which goes to curl even when the pool is full (a pool
 * that warms up a connection excepted: it goes first in the queue).
 */
static void
submit(HttpPool *pool, HttpRequest *req, bool first)
{
	req->pool = pool;
	req->done = false;
	req->easy = NULL;
	pool->in_flight++;
	in_flight++;
	/* after a policy change, new transfers wait until the old connections are idle */
	if (pool->policy_generation != netpolicy_generation && pool->active == 0)
		pool_renew(pool);
	if ((pool->active < pool_capacity(pool) || (first && !pool->warm_up)) &&
		pool->policy_generation == netpolicy_generation)
	{
		start_transfer(pool, req);
		return;
	}
	pool->waiting = grow(pool->waiting, &pool->waiting_cap, pool->nwaiting + 1, sizeof(HttpRequest *));
	if (first)
	{
		memmove(pool->waiting + 1, pool->waiting, sizeof(HttpRequest *) * pool->nwaiting);
		pool->waiting[0] = req;
		pool->nwaiting++;
	}
	else
		pool->waiting[pool->nwaiting++] = req;
}

/*
 * Queue a POST request in a pool; it runs while http_wait() waits.  At most
 * HTTP_MAX_ACTIVE requests of a pool are in curl's hands (enough to fill the
 * multiplexed connections); the others wait here, in order.
 */
void
http_submit(HttpPool *pool, HttpRequest *req)
{
	submit(pool, req, false);
}

/* Whether a transfer ended because prereq_cb refused curl's own resend (see there). */
static bool
resend_refused(HttpRequest *req, CURLcode result)
{
	return result == CURLE_ABORTED_BY_CALLBACK && req->sends > 1 && !req->send_late;
}

/*
 * Why a transfer that failed cannot have been processed by the provider, or
 * NULL if it may have been.  Every send but the last was refused by the
 * server (prereq_cb refuses any other resend, and that case, sends > 1 with
 * CURLE_ABORTED_BY_CALLBACK, may have been processed), so it is the last
 * send that tells:
 *   - there was none: curl never got a connection for it in time;
 *   - the server refused it (RST_STREAM(REFUSED_STREAM), a GOAWAY's
 *     last-stream-id below it, or nghttp2 refusing a new stream on a
 *     connection that received a GOAWAY) and curl did not send it again
 *     before the transfer ended: libcurl's resend waits for a new
 *     connection, and under a per-host limit that may take past the timeout;
 *   - its last frame (END_STREAM) was never handed to the connection
 *     (http_request_written): a stream's send window, a connection that
 *     never became writable; no server acts on a request it did not get
 *     whole.
 * A frame handed to the connection may still sit in a buffer when the
 * connection breaks: such a request counts as possibly processed, the safe
 * side.
 */
static const char *
unsent_reason(HttpRequest *req, CURLcode result)
{
	if (result == CURLE_OK || resend_refused(req, result))
		return NULL;
	if (req->sends == 0)
		return "the request was not sent";
	if (req->stream_refused)
		return "the request was refused unprocessed and not sent again";
	if (req->on_stream && !req->written)
		return "the request was not sent whole";
	return NULL;
}

static void start_waiting(HttpPool *pool);

/* Take a transfer out of curl and give its easy handle back; the request is done. */
static void
detach_transfer(HttpPool *pool, HttpRequest *req, CURL *h)
{
	curl_multi_remove_handle(pool->multi, h);
	(void) hash_search(active_requests, &h, HASH_REMOVE, NULL);
	req->easy = NULL;
	req->done = true;
	easy_put(h);
	pool->active--;
	pool->in_flight--;
	in_flight--;
}

/* Record a finished transfer in its request and queue it as done. */
static void
finish_transfer(HttpPool *pool, CURL *h, CURLcode result)
{
	HttpRequest *req = NULL;
	double		total = 0;

	curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **) &req);
	req->result = result;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &req->status);
	curl_easy_getinfo(h, CURLINFO_HTTP_VERSION, &req->http_version);
	curl_easy_getinfo(h, CURLINFO_TOTAL_TIME, &total);
	req->elapsed_ms = total * 1000.0;
	req->unsent = unsent_reason(req, result);
	if (result != CURLE_OK && req->refused[0] != '\0' && req->sockets_opened == 0)
	{
		/* every address of the host was refused: the policy, not the network */
		req->policy_refused = true;
		snprintf(req->error, CURL_ERROR_SIZE,
				 "address %s refused by the outbound URL policy (novu.allowed_private_networks)", req->refused);
	}
	else if (req->send_late)
	{
		/* past send_by: prereq_cb refused the send, or expire_overdue ended it unsent */
		snprintf(req->error, CURL_ERROR_SIZE, "%s", SEND_LATE_TEXT);
	}
	else if (resend_refused(req, result))
	{
		/* prereq_cb refused curl's own resend */
		snprintf(req->error, CURL_ERROR_SIZE,
				 "connection lost before the answer; the provider may have received the request");
	}
	else if (result == CURLE_UNSUPPORTED_PROTOCOL)
	{
		/* a URL stored before the policy (CURLOPT_PROTOCOLS_STR allows https only) */
		req->policy_refused = true;
		snprintf(req->error, CURL_ERROR_SIZE, "URL refused by the outbound URL policy: https only");
	}
	else if (result == CURLE_OK && req->status >= 300 && req->status < 400)
	{
		/* the target moved: the integration must name the final URL */
		req->result = CURLE_TOO_MANY_REDIRECTS;
		req->policy_refused = true;
		snprintf(req->error, CURL_ERROR_SIZE,
				 "HTTP %ld redirect not followed (the outbound URL policy follows no redirects; configure the final URL)",
				 req->status);
	}
	else if (result == CURLE_OK && req->require_h2 && req->http_version != CURL_HTTP_VERSION_2_0)
	{
		/* the provider speaks HTTP/2 only: a fallback to HTTP/1.1 is a failure */
		req->result = CURLE_HTTP2;
		snprintf(req->error, CURL_ERROR_SIZE, "HTTP/2 was not negotiated (the provider requires it)");
	}
	if (req->status > 0 && pool->open_conns > 0)
		pool->warm = true;		/* an answer came: the connection is open for more */
	detach_transfer(pool, req, h);
	done = grow(done, &done_cap, ndone + 1, sizeof(HttpRequest *));
	done[ndone++] = req;
	start_waiting(pool);
}

/*
 * The oldest waiting requests of a pool take its free places; after a policy
 * change, only once the pool is idle and renewed (then all of them).
 */
static void
start_waiting(HttpPool *pool)
{
	if (pool->policy_generation != netpolicy_generation)
	{
		if (pool->active > 0)
			return;
		pool_renew(pool);
	}
	if (pool->nwaiting > 0)
	{
		int			k = Max(Min(pool->nwaiting, pool_capacity(pool) - pool->active), 0);
		int			i;
		HttpRequest **starting = palloc(sizeof(HttpRequest *) * Max(k, 1));

		/* out of the queue first: an error part way must not start one twice */
		memcpy(starting, pool->waiting, sizeof(HttpRequest *) * k);
		pool->nwaiting -= k;
		memmove(pool->waiting, pool->waiting + k, sizeof(HttpRequest *) * pool->nwaiting);
		for (i = 0; i < k; i++)
			start_transfer(pool, starting[i]);
		pfree(starting);
	}
}

/* Move a pool's finished transfers to the done queue. */
static void
drain(HttpPool *pool)
{
	CURLMsg    *msg;
	int			queued;

	while ((msg = curl_multi_info_read(pool->multi, &queued)) != NULL)
	{
		if (msg->msg == CURLMSG_DONE)
			finish_transfer(pool, msg->easy_handle, msg->data.result);
	}
}

/* Milliseconds until the earliest deadline of a transfer may come (0: it may have), or -1: none. */
static long
deadline_ms(TimestampTz now)
{
	if (next_deadline == 0)
		return -1;
	return now >= next_deadline ? 0 : (long) ((next_deadline - now + 999) / 1000);
}

/* The earliest deadline of the transfers in curl, walked again (next_deadline). */
static void
recompute_next_deadline(void)
{
	HASH_SEQ_STATUS scan;
	ActiveEntry *entry;

	next_deadline = 0;
	hash_seq_init(&scan, active_requests);
	while ((entry = hash_seq_search(&scan)) != NULL)
	{
		TimestampTz deadline = request_deadline(entry->req);

		if (next_deadline == 0 || deadline < next_deadline)
			next_deadline = deadline;
	}
}

/*
 * End the transfers whose deadline (request_deadline) has passed, as timed
 * out; returns ms until the next deadline (-1: none).  The requests in curl
 * are walked only when the earliest deadline may have come.  The deadlines
 * are on the wall clock, as the leases in the tables are: a clock set back
 * lengthens both alike.
 */
static long
expire_overdue(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		wait_ms = deadline_ms(now);
	HASH_SEQ_STATUS scan;
	ActiveEntry *entry;
	HttpRequest **overdue = NULL;
	int			noverdue = 0;
	int			cap = 0;
	int			i;

	if (wait_ms != 0)
		return wait_ms;

	hash_seq_init(&scan, active_requests);
	while ((entry = hash_seq_search(&scan)) != NULL)
	{
		if (request_deadline(entry->req) <= now)
		{
			overdue = grow(overdue, &cap, noverdue + 1, sizeof(HttpRequest *));
			overdue[noverdue++] = entry->req;
		}
	}
	/*
	 * Finishing one may start waiting requests (later deadlines): not during
	 * the scan.  next_deadline stays passed until all are finished (an error
	 * part way leaves the rest to the next call), then is walked again.
	 */
	for (i = 0; i < noverdue; i++)
	{
		HttpRequest *req = overdue[i];
		bool		sent = req->sent_at != 0 && !req->stream_refused;	/* refused: waits for a resend */

		if (!sent && req->send_by != 0 && now >= req->send_by)
			req->send_late = true;	/* finish_transfer says so */
		finish_transfer(req->pool, req->easy, CURLE_OPERATION_TIMEDOUT);
		if (req->send_late)
			continue;
		if (sent)
			snprintf(req->error, CURL_ERROR_SIZE, "no answer within %d ms of starting to send the request (novu.request_timeout)",
					 req->timeout_ms);
		else
			snprintf(req->error, CURL_ERROR_SIZE, "no connection or stream for the request within %d ms (novu.request_timeout)",
					 req->timeout_ms);
	}
	if (overdue != NULL)
		pfree(overdue);
	recompute_next_deadline();
	return deadline_ms(now);
}

/* Whether pool is still open (events of one wait can outlive a pool's sockets). */
static bool
pool_exists(HttpPool *pool)
{
	int			i;

	for (i = 0; i < npools; i++)
	{
		if (pools[i] == pool)
			return true;
	}
	return false;
}

/*
 * Ask curl when its next timeout falls.  Its timer callback reports only
 * changes, so a timeout action run a little early (curl found nothing due)
 * would otherwise leave no timer at all.
 */
static void
sync_timer(HttpPool *pool)
{
	long		ms = -1;

	if (curl_multi_timeout(pool->multi, &ms) != CURLM_OK)
		ms = -1;
	pool->timer_at = ms < 0 ? 0 : TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);
}

/* Run curl's timeout actions that are due; returns ms until the next one (-1: none). */
static long
run_timers(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		next = -1;
	int			i;

	for (i = 0; i < npools; i++)
	{
		HttpPool   *pool = pools[i];
		int			running;
		long		ms;

		if (pool->timer_at != 0 && pool->timer_at <= now)
		{
			curl_multi_socket_action(pool->multi, CURL_SOCKET_TIMEOUT, 0, &running);
			drain(pool);
			sync_timer(pool);
		}
		if (pool->timer_at != 0)
		{
			ms = (long) ((pool->timer_at - now + 999) / 1000);
			if (next < 0 || ms < next)
				next = Max(ms, 0);
		}
	}
	return next;
}

/* The wait events for what curl wants of a socket. */
static int
socket_events(HttpSocket *hs)
{
	return ((hs->what & CURL_POLL_IN) ? WL_SOCKET_READABLE : 0) |
		((hs->what & CURL_POLL_OUT) ? WL_SOCKET_WRITEABLE : 0);
}

/* Build wait_set again from scratch: the latch, postmaster death, every socket. */
static void
rebuild_wait_set(void)
{
	int			nsock = 0;
	int			i;
	int			j;

	if (wait_set != NULL)
		FreeWaitEventSet(wait_set);
	wait_set = NULL;
	for (i = 0; i < npools; i++)
		nsock += pools[i]->nsocks;
	if (wait_events == NULL || wait_set_size < nsock + 2)
	{
		wait_set_size = Max(nsock + 2, 16);
		if (wait_events != NULL)
			pfree(wait_events);
		wait_events = MemoryContextAlloc(TopMemoryContext, sizeof(WaitEvent) * wait_set_size);
	}
#if PG_VERSION_NUM >= 170000
	wait_set = CreateWaitEventSet(NULL, wait_set_size);	/* no resource owner: lives with the process */
#else
	wait_set = CreateWaitEventSet(TopMemoryContext, wait_set_size);
#endif
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (i = 0; i < npools; i++)
	{
		for (j = 0; j < pools[i]->nsocks; j++)
		{
			HttpSocket *hs = &pools[i]->socks[j];
			int			ev = socket_events(hs);

			hs->pos = ev != 0 ? AddWaitEventToSet(wait_set, ev, hs->fd, NULL, pools[i]) : -1;
			hs->changed = false;
		}
	}
	wait_set_stale = false;
}

/* Bring wait_set up to date with what curl asked for since the last wait. */
static void
adjust_wait_set(void)
{
	int			i;
	int			j;

	if (!wait_set_stale)
	{
		for (i = 0; i < npools && !wait_set_stale; i++)
		{
			for (j = 0; j < pools[i]->nsocks; j++)
			{
				HttpSocket *hs = &pools[i]->socks[j];

				if (!hs->changed)
					continue;
				if (hs->pos < 0 || socket_events(hs) == 0)
				{
					wait_set_stale = true;
					break;
				}
				ModifyWaitEvent(wait_set, hs->pos, socket_events(hs), NULL);
				hs->changed = false;
			}
		}
	}
	if (wait_set_stale)
		rebuild_wait_set();
}

/*
 * Let transfers progress for at most timeout_ms (0: only what is ready now).
 * Returns early when a transfer finishes or MyLatch is set; a set latch is
 * reset here and remembered in novu_wakeup_pending for the worker loop.
 * Waits on wait_set (the sockets curl asked for, MyLatch and postmaster
 * death), then hands curl the ready sockets only.  Returns true if something
 * finished.
 */
bool
http_wait(long timeout_ms)
{
	int			before = ndone;
	long		next;
	long		expiry;
	int			nev;
	int			i;

	cork_sockets(true);
	next = run_timers();
	cork_sockets(false);
	/*
	 * Overdue transfers end after the sockets were read (below): an answer
	 * that came in time while the worker was busy is taken, not timed out.
	 */
	expiry = deadline_ms(GetCurrentTimestamp());
	if (expiry >= 0 && (next < 0 || expiry < next))
		next = expiry;
	if (ndone > before)
		timeout_ms = 0;
	else if (next >= 0 && next < timeout_ms)
		timeout_ms = next;

	adjust_wait_set();
	nev = WaitEventSetWait(wait_set, timeout_ms, wait_events, wait_set_size, PG_WAIT_EXTENSION);
	cork_sockets(true);

	for (i = 0; i < nev; i++)
	{
		WaitEvent  *ev = &wait_events[i];

		if (ev->events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			novu_wakeup_pending = true;
		}
		else if (ev->events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
		{
			HttpPool   *pool = ev->user_data;
			int			flags = ((ev->events & WL_SOCKET_READABLE) ? CURL_CSELECT_IN : 0) |
				((ev->events & WL_SOCKET_WRITEABLE) ? CURL_CSELECT_OUT : 0);
			int			running;

			/* an earlier event of this wait may have closed its pool */
			if (wait_set_stale && !pool_exists(pool))
				continue;
			curl_multi_socket_action(pool->multi, ev->fd, flags, &running);
			drain(pool);
			sync_timer(pool);
		}
	}
	(void) run_timers();
	(void) expire_overdue();
	cork_sockets(false);
	CHECK_FOR_INTERRUPTS();
	return ndone > before;
}

/* The next finished request, or NULL. */
HttpRequest *
http_take_done(void)
{
	HttpRequest *req;

	if (ndone == 0)
		return NULL;
	req = done[0];
	memmove(done, done + 1, sizeof(HttpRequest *) * --ndone);
	return req;
}

/* Requests submitted and not finished yet. */
int
http_in_flight(void)
{
	return in_flight;
}

/* Take a request off the done queue, if it is there. */
static void
unqueue_done(HttpRequest *req)
{
	int			i;

	for (i = 0; i < ndone && done[i] != req; i++)
		;
	if (i < ndone)
	{
		memmove(done + i, done + i + 1, sizeof(HttpRequest *) * (ndone - i - 1));
		ndone--;
	}
}

/*
 * Withdraw a submitted request, wherever it is: in curl (its transfer ends
 * there; on HTTP/2 its stream is reset), waiting in its pool, or done and
 * not taken yet.  Nothing of it is touched afterwards, so its memory may go.
 */
static void
http_withdraw(HttpRequest *req)
{
	HttpPool   *pool = req->pool;
	int			i;

	if (req->easy != NULL)
	{
		detach_transfer(pool, req, req->easy);
		start_waiting(pool);
		return;
	}
	for (i = 0; i < pool->nwaiting; i++)
	{
		if (pool->waiting[i] == req)
		{
			memmove(pool->waiting + i, pool->waiting + i + 1, sizeof(HttpRequest *) * (pool->nwaiting - i - 1));
			pool->nwaiting--;
			pool->in_flight--;
			in_flight--;
			req->done = true;
			return;
		}
	}
	unqueue_done(req);
}

/*
 * Set what http_run_one calls before it sends its request and waits (the
 * delivery layer records the answers it holds: see record_before_blocking).
 */
void
http_set_before_wait(void (*hook) (void))
{
	before_wait_hook = hook;
}

/*
 * Send one request and wait for it (OAuth tokens, Expo receipts).  Other
 * requests keep going meanwhile; this one is taken off the done queue.  An
 * error while waiting (a cancel, a shutdown) withdraws it first: the caller's
 * memory that holds it goes with the error, and curl must not write there,
 * nor the worker take it for a delivery's answer.
 */
void
http_run_one(HttpPool *pool, HttpRequest *req)
{
	if (before_wait_hook != NULL)
		before_wait_hook();
	submit(pool, req, true);	/* not behind the pool's deliveries: the worker waits for it */
	PG_TRY();
	{
		while (!req->done)
			(void) http_wait(1000);
	}
	PG_CATCH();
	{
		http_withdraw(req);
		PG_RE_THROW();
	}
	PG_END_TRY();
	unqueue_done(req);
}

/* Release a request's header list. */
void
http_request_free(HttpRequest *req)
{
	if (req->headers)
		curl_slist_free_all(req->headers);
	req->headers = NULL;
}

/*
 * A short text for a transport failure (no HTTP response), or for a transfer
 * the outbound URL policy stopped.  It may hold a host name or an address;
 * callers store it through netpolicy_reason() (providers/message.c's novu_message_set).
 */
char *
http_transport_error(HttpRequest *req)
{
	const char *unsent;

	if (req->policy_refused || resend_refused(req, req->result))
		return pstrdup(req->error);

	/*
	 * The request never reached the provider whole (see unsent_reason): the
	 * provider cannot have processed this attempt.  Said in the activity log,
	 * so that an attempt with no request behind it is told apart from one the
	 * provider may have received.
	 */
	unsent = req->unsent ? psprintf("; %s", req->unsent) : "";
	if (req->error[0] != '\0')
		return psprintf("%s (%s)%s", curl_easy_strerror(req->result), req->error, unsent);
	return psprintf("%s%s", curl_easy_strerror(req->result), unsent);
}

/* Seconds to wait from a Retry-After value (delta-seconds or HTTP-date), -1 if unusable. */
int
http_retry_after_seconds(const char *value)
{
	char	   *end;
	long		secs;
	time_t		when;

	if (value == NULL || *value == '\0')
		return -1;
	secs = strtol(value, &end, 10);
	if (end != value && *end == '\0')
		return secs < 0 ? -1 : (int) Min(secs, 86400L);
	when = curl_getdate(value, NULL);
	if (when == (time_t) -1)
		return -1;
	secs = (long) (when - time(NULL));
	return (int) Max(Min(secs, 86400L), 0L);
}
