/*
 * http.h
 *		The HTTP engine of the delivery workers: libcurl multi, one connection
 *		pool per integration, HTTP/2 multiplexing, and waits that also watch
 *		MyLatch and postmaster death.
 */
#ifndef NOVU_HTTP_H
#define NOVU_HTTP_H

#include <curl/curl.h>

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"

#include "net/netpolicy.h"

/* A connection pool: the connections of one integration (its own curl multi). */
typedef struct HttpPool HttpPool;

/* One HTTP request and, once done, its response. */
typedef struct HttpRequest
{
	/* what to send (owned by the caller, valid until the request is done) */
	const char *url;
	struct curl_slist *headers;
	const char *body;
	size_t		body_len;
	bool		require_h2;		/* anything but HTTP/2 is an error (a provider speaking only HTTP/2) */
	const char *id_header;		/* lowercase name of an answer header to keep (the message id), or NULL */
	const char *client_cert;	/* PEM client certificate (APNs certificate auth) */
	const char *client_key;		/* PEM private key of client_cert */
	void	   *owner;			/* the caller's context for this request */

	/* what came back */
	CURLcode	result;			/* transport outcome; CURLE_OK if a response arrived */
	long		status;			/* HTTP status, 0 if none */
	long		http_version;	/* CURL_HTTP_VERSION_* negotiated */
	StringInfoData response;	/* response body */
	char	   *retry_after;	/* Retry-After header, or NULL */
	char	   *id_value;		/* the id_header of the answer, or NULL */
	char		error[CURL_ERROR_SIZE]; /* curl's message on transport errors */
	bool		policy_refused; /* the outbound URL policy stopped it (error says why) */
	double		elapsed_ms;

	/* engine state */
	CURL	   *easy;
	HttpPool   *pool;
	bool		done;
	int			sockets_opened; /* connections this transfer opened */
	int			sends;			/* times curl was about to send it (see prereq_cb) */
	int			timeout_ms;		/* the provider's time after the send: the
								 * caller's (the claim's novu.request_timeout,
								 * which its lease was made for), or 0: the
								 * setting when handed to curl */
	TimestampTz started_at;		/* handed to curl */
	TimestampTz sent_at;		/* curl began its last send; 0 if none */
	TimestampTz send_by;		/* not sent at all after this (the caller's
								 * lease, see deliver.c); 0: no limit */
	bool		send_late;		/* ended unsent because send_by passed */
	bool		stream_refused; /* the server refused its stream: not processed */
	bool		headers_done;	/* the answer's headers arrived */
	bool		on_stream;		/* its last send went on an HTTP/2 stream (http_request_on_stream) */
	const void *h2_session;		/* ... that stream's nghttp2 session and id: the */
	int32		h2_stream_id;	/* only stream whose events concern this request */
	bool		written;		/* ... and went out whole (http_request_written) */
	const char *unsent;			/* a transfer that failed without its request
								 * reaching the provider whole: why (see
								 * unsent_reason), else NULL */
	char		refused[NETPOLICY_WHY_LEN]; /* the last address the policy refused */
} HttpRequest;

extern bool novu_wakeup_pending;

extern void http_init(void);
extern void http_stream_refused(void *easy, const void *session, int32 stream_id);
extern bool http_answer_started(void *easy, const void *session, int32 stream_id);
extern void http_request_on_stream(void *easy, const void *session, int32 stream_id);
extern void http_request_written(void *easy, const void *session, int32 stream_id);
extern HttpPool *http_pool_create(bool warm_up);
extern void http_pool_destroy(HttpPool *pool);
extern HttpRequest *http_request_new(const char *url);
extern HttpRequest *http_request_keep(HttpRequest *req);
extern void http_add_header(HttpRequest *req, const char *header);
extern void http_submit(HttpPool *pool, HttpRequest *req);
extern bool http_wait(long timeout_ms);
extern HttpRequest *http_take_done(void);
extern int	http_in_flight(void);
extern void http_run_one(HttpPool *pool, HttpRequest *req);
extern void http_set_before_wait(void (*hook) (void));
extern void http_request_free(HttpRequest *req);
extern char *http_transport_error(HttpRequest *req);
extern int	http_retry_after_seconds(const char *value);

#endif							/* NOVU_HTTP_H */
