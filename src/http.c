/*
 * http.c
 *		The HTTP engine of the delivery workers, on libcurl's multi interface.
 *
 * One multi handle lives as long as the worker, so connections (and their TLS
 * sessions) are reused across batches; HTTP/2 transfers to one host are
 * multiplexed on one connection (CURLPIPE_MULTIPLEX + PIPEWAIT) and the number
 * of connections per host is bounded, which bounds the requests in flight.
 * Waits are cut into slices of at most 100 ms with CHECK_FOR_INTERRUPTS between
 * them, so SIGTERM is served promptly even when a provider hangs.  curl keeps its
 * own (malloc) memory: its objects outlive our memory contexts.
 */
#include "postgres.h"

#include <curl/curl.h>

#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/pmsignal.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "http.h"
#include "novu.h"

#define HTTP_MAX_RESPONSE		(1024 * 1024)
#define HTTP_MAX_HOST_CONNS		4
#define HTTP_MAX_TOTAL_CONNS	32
#define HTTP_POOL_SIZE			1024

static CURLM *multi = NULL;
static CURL *pool[HTTP_POOL_SIZE];
static int	pool_len = 0;
static int	in_flight = 0;

/* Create the worker's multi handle (after fork: curl_global_init belongs here). */
void
http_init(void)
{
	int			fds = 0;

	if (multi != NULL)
		return;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		elog(ERROR, "novu: curl_global_init failed");
	multi = curl_multi_init();
	if (multi == NULL)
		elog(ERROR, "novu: curl_multi_init failed");

	/* curl's sockets are invisible to fd.c: reserve room for them */
	while (fds < HTTP_MAX_TOTAL_CONNS && AcquireExternalFD())
		fds++;
	if (fds < 2)
		ereport(ERROR,
				(errmsg("novu: no file descriptors left for provider connections"),
				 errhint("Raise max_files_per_process or the process's open-file limit.")));

	curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) HTTP_MAX_HOST_CONNS);
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) fds);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) fds);
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

/* Copy a header value if the line is "name: value". */
static char *
header_value(const char *line, size_t len, const char *name)
{
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
	return pnstrdup(v, end - v);
}

/* Keep the response headers the providers need (Retry-After, apns-id). */
static size_t
header_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	HttpRequest *req = arg;
	size_t		n = size * nmemb;
	char	   *v;

	if ((v = header_value(data, n, "retry-after")) != NULL)
		req->retry_after = v;
	else if ((v = header_value(data, n, "apns-id")) != NULL)
		req->apns_id = v;
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

/* Add a header line ("Name: value") to a request. */
void
http_add_header(HttpRequest *req, const char *header)
{
	struct curl_slist *l = curl_slist_append(req->headers, header);

	if (l == NULL)
		elog(ERROR, "novu: out of memory building request headers");
	req->headers = l;
}

/* An easy handle from the pool, reset, or a new one. */
static CURL *
easy_get(void)
{
	CURL	   *h;

	if (pool_len > 0)
	{
		h = pool[--pool_len];
		curl_easy_reset(h);
		return h;
	}
	h = curl_easy_init();
	if (h == NULL)
		elog(ERROR, "novu: curl_easy_init failed");
	return h;
}

/* Return an easy handle to the pool. */
static void
easy_put(CURL *h)
{
	if (pool_len < HTTP_POOL_SIZE)
		pool[pool_len++] = h;
	else
		curl_easy_cleanup(h);
}

/* Queue a POST request on the multi handle. */
void
http_submit(HttpRequest *req)
{
	CURL	   *h = easy_get();

	req->easy = h;
	req->done = false;
	req->result = CURLE_OK;
	req->status = 0;
	req->error[0] = '\0';
	resetStringInfo(&req->response);
	req->retry_after = NULL;
	req->apns_id = NULL;

	curl_easy_setopt(h, CURLOPT_PRIVATE, req);
	curl_easy_setopt(h, CURLOPT_URL, req->url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
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
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long) novu_request_timeout);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(novu_request_timeout, 10000));
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

	if (curl_multi_add_handle(multi, h) != CURLM_OK)
		elog(ERROR, "novu: curl_multi_add_handle failed");
	in_flight++;
}

/* Record a finished transfer in its request and recycle the handle. */
static void
finish_transfer(CURL *h, CURLcode result)
{
	HttpRequest *req = NULL;
	double		total = 0;

	curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **) &req);
	req->result = result;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &req->status);
	curl_easy_getinfo(h, CURLINFO_HTTP_VERSION, &req->http_version);
	curl_easy_getinfo(h, CURLINFO_TOTAL_TIME, &total);
	req->elapsed_ms = total * 1000.0;
	if (result == CURLE_OK && req->require_h2 && req->http_version != CURL_HTTP_VERSION_2_0)
	{
		/* APNs speaks HTTP/2 only: a fallback to HTTP/1.1 is a failure */
		req->result = CURLE_HTTP2;
		snprintf(req->error, CURL_ERROR_SIZE, "HTTP/2 was not negotiated (APNs requires it)");
	}
	curl_multi_remove_handle(multi, h);
	req->easy = NULL;
	req->done = true;
	easy_put(h);
	in_flight--;
}

/*
 * Drive every submitted request to completion.  Waits in slices of at most
 * 100 ms and checks for interrupts (SIGTERM) and postmaster death between them.
 */
void
http_run(void)
{
	while (in_flight > 0)
	{
		int			running = 0;
		int			numfds = 0;
		int			queued;
		CURLMsg    *msg;

		if (curl_multi_perform(multi, &running) != CURLM_OK)
			elog(ERROR, "novu: curl_multi_perform failed");
		while ((msg = curl_multi_info_read(multi, &queued)) != NULL)
		{
			if (msg->msg == CURLMSG_DONE)
				finish_transfer(msg->easy_handle, msg->data.result);
		}
		if (in_flight == 0)
			break;
		curl_multi_poll(multi, NULL, 0, 100, &numfds);
		CHECK_FOR_INTERRUPTS();
		if (!PostmasterIsAlive())
			proc_exit(1);
	}
}

/* Release a request's header list. */
void
http_request_free(HttpRequest *req)
{
	if (req->headers)
		curl_slist_free_all(req->headers);
	req->headers = NULL;
}

/* A short text for a transport failure (no HTTP response). */
char *
http_transport_error(HttpRequest *req)
{
	if (req->error[0] != '\0')
		return psprintf("%s (%s)", curl_easy_strerror(req->result), req->error);
	return pstrdup(curl_easy_strerror(req->result));
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
