/*
 * nghttp2_hooks.c
 *		Hooks into libcurl's use of nghttp2, for what libcurl's API does not
 *		tell: which HTTP/2 streams the server refused, which requests went out
 *		whole, and (libcurl before 8.0) resets of streams that already ended.
 *
 * libcurl was loaded as this library's dependency, so its calls to nghttp2
 * bind to the definitions here first; each hook does its small part and calls
 * nghttp2's own function (found with dlsym(RTLD_NEXT)).  These are the only
 * exported symbols without the novu_ prefix, on purpose.  Both run inside
 * libcurl: they never ereport or allocate.
 *
 * Refused streams.  http.c refuses every resend libcurl attempts on its own
 * (a request on a connection that broke may have been processed), except for
 * a stream the server refused: RST_STREAM(REFUSED_STREAM), or above the
 * last-stream-id of a GOAWAY, which nghttp2 closes the same way.  The protocol
 * guarantees such a request was not processed (RFC 9113, 8.7), and APNs
 * refuses every stream but one on a new token connection until the first
 * request authenticates it.  So libcurl's stream-close callback is wrapped,
 * and a refused stream is reported to http.c (http_stream_refused) before
 * libcurl sees it.  Every report names the session and the stream: http.c
 * acts on it only for the stream its request's current send went on
 * (http_request_on_stream), never for one an earlier use of the same easy
 * handle left behind.
 *
 * Requests sent whole.  A transfer that failed without an answer may or may
 * not have reached the provider; the activity log says which (http.c,
 * unsent_reason).  libcurl counts the body bytes it handed to its HTTP/2
 * layer, but a retry it starts on its own (on a fresh connection, which
 * prereq_cb then refuses) resets that count before the transfer ends, and
 * what completes a request is the frame carrying END_STREAM, not its last
 * body byte.  So nghttp2's frame-sent callback is added to libcurl's
 * sessions (libcurl 7.88 sets none; a later libcurl's own is called after
 * ours), and a request frame with END_STREAM handed to libcurl's connection
 * output is reported to http.c (http_request_written).  libcurl's
 * nghttp2_submit_request is wrapped too, so that http.c knows the send went
 * on an HTTP/2 stream (http_request_on_stream): over HTTP/1.1 nothing is
 * reported, and nothing is concluded.  An HTTP/2 request not reported as
 * written never left whole: no server acts on it.
 *
 * Resets of ended streams.  libcurl 7.x (Debian 12 ships 7.88) ends every
 * HTTP/2 transfer whose answer had no Content-Length (every APNs answer: a
 * bodyless 200) by sending RST_STREAM(STREAM_CLOSED) for a stream that is
 * already closed: its stream-close handling clears the "closed" flag that the
 * end-of-transfer code then tests (fixed in curl 8.0, commit 544a7f8).  Servers
 * count resets since the 2023 "rapid reset" attack: nghttp2 (nghttpx, Apache,
 * Node.js) allows a burst of 1,000 then 33 a second, then sends
 * GOAWAY(INTERNAL_ERROR).  Every APNs connection was cut after about 1,000
 * messages, with up to 100 requests in flight on it.  It also resets a stream
 * whose answer reached its Content-Length before the server's END_STREAM came
 * (Node.js sends END_STREAM in a frame of its own): FCM connections were cut
 * the same way.  So a reset is dropped here when the stream is closed, or when
 * our request went out whole and its answer's headers came (nothing is left to
 * cancel; the server's END_STREAM closes the stream).  A reset of a request
 * still waiting for its answer (a timeout) goes out as before.
 */
#include "postgres.h"

#include <dlfcn.h>

#include <curl/curl.h>
#include <nghttp2/nghttp2.h>

#include "net/http.h"

typedef void (*set_close_cb_fn) (nghttp2_session_callbacks *, nghttp2_on_stream_close_callback);

/* libcurl's own stream-close callback (one function for all its sessions). */
static nghttp2_on_stream_close_callback curl_stream_close = NULL;

/* Report a refused stream to http.c, then let libcurl handle the close. */
static int
stream_close_hook(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data)
{
	if (error_code == NGHTTP2_REFUSED_STREAM)
	{
		void	   *easy = nghttp2_session_get_stream_user_data(session, stream_id);

		if (easy != NULL)
			http_stream_refused(easy, session, stream_id);
	}
	return curl_stream_close != NULL ? curl_stream_close(session, stream_id, error_code, user_data) : 0;
}

typedef void (*set_send_cb_fn) (nghttp2_session_callbacks *, nghttp2_send_callback);
typedef void (*set_frame_send_cb_fn) (nghttp2_session_callbacks *, nghttp2_on_frame_send_callback);

/* libcurl's own frame-sent callback, if it sets one (not libcurl 7.88). */
static nghttp2_on_frame_send_callback curl_frame_send = NULL;

/* Report a request whose last frame (END_STREAM) went out, then call libcurl's callback. */
static int
frame_send_hook(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && frame->hd.stream_id > 0 &&
		(frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS))
	{
		void	   *easy = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);

		if (easy != NULL)
			http_request_written(easy, session, frame->hd.stream_id);
	}
	return curl_frame_send != NULL ? curl_frame_send(session, frame, user_data) : 0;
}

/* The real nghttp2_session_callbacks_set_on_frame_send_callback. */
static set_frame_send_cb_fn
real_set_frame_send(void)
{
	static set_frame_send_cb_fn real = NULL;

	if (real == NULL)
		real = (set_frame_send_cb_fn) dlsym(RTLD_NEXT, "nghttp2_session_callbacks_set_on_frame_send_callback");
	return real;
}

/* libcurl sets its frame-sent callback (libcurl 8): keep it, install the hook in its place. */
PGDLLEXPORT void
nghttp2_session_callbacks_set_on_frame_send_callback(nghttp2_session_callbacks *cbs,
													 nghttp2_on_frame_send_callback cb)
{
	set_frame_send_cb_fn real = real_set_frame_send();

	if (real == NULL)
		return;					/* cannot happen: nghttp2 is loaded */
	if (cb != frame_send_hook)
		curl_frame_send = cb;
	real(cbs, frame_send_hook);
}

/*
 * libcurl sets up the callbacks of a new connection (the send callback comes
 * first, every libcurl version): install the frame-sent hook too.
 */
PGDLLEXPORT void
nghttp2_session_callbacks_set_send_callback(nghttp2_session_callbacks *cbs, nghttp2_send_callback cb)
{
	static set_send_cb_fn real = NULL;
	set_frame_send_cb_fn real_frame = real_set_frame_send();

	if (real == NULL)
		real = (set_send_cb_fn) dlsym(RTLD_NEXT, "nghttp2_session_callbacks_set_send_callback");
	if (real == NULL)
		return;					/* cannot happen: nghttp2 is loaded */
	real(cbs, cb);
	if (real_frame != NULL)
		real_frame(cbs, frame_send_hook);
}

typedef int32_t (*submit_request_fn) (nghttp2_session *, const nghttp2_priority_spec *,
									   const nghttp2_nv *, size_t, const nghttp2_data_provider *, void *);

/* libcurl opens a request's stream: tell http.c the request goes over HTTP/2. */
PGDLLEXPORT int32_t
nghttp2_submit_request(nghttp2_session *session, const nghttp2_priority_spec *pri_spec,
					   const nghttp2_nv *nva, size_t nvlen,
					   const nghttp2_data_provider *data_prd, void *stream_user_data)
{
	static submit_request_fn real = NULL;
	int32_t		stream_id;

	if (real == NULL)
		real = (submit_request_fn) dlsym(RTLD_NEXT, "nghttp2_submit_request");
	if (real == NULL)
		return NGHTTP2_ERR_INVALID_STATE;	/* cannot happen: nghttp2 is loaded */
	stream_id = real(session, pri_spec, nva, nvlen, data_prd, stream_user_data);
	if (stream_id > 0 && stream_user_data != NULL)
		http_request_on_stream(stream_user_data, session, stream_id);
	return stream_id;
}

/* libcurl installs its stream-close callback: install the hook in front of it. */
PGDLLEXPORT void
nghttp2_session_callbacks_set_on_stream_close_callback(nghttp2_session_callbacks *cbs,
													   nghttp2_on_stream_close_callback cb)
{
	static set_close_cb_fn real = NULL;

	if (real == NULL)
		real = (set_close_cb_fn) dlsym(RTLD_NEXT, "nghttp2_session_callbacks_set_on_stream_close_callback");
	if (real == NULL)
		return;					/* cannot happen: nghttp2 is loaded */
	if (cb != NULL && cb != stream_close_hook)
	{
		curl_stream_close = cb;
		cb = stream_close_hook;
	}
	real(cbs, cb);
}

#if LIBCURL_VERSION_NUM < 0x080000

typedef int (*submit_rst_stream_fn) (nghttp2_session *, uint8_t, int32_t, uint32_t);

/* Submit RST_STREAM unless the stream ended or its answer came. */
PGDLLEXPORT int
nghttp2_submit_rst_stream(nghttp2_session *session, uint8_t flags, int32_t stream_id, uint32_t error_code)
{
	static submit_rst_stream_fn real = NULL;
	nghttp2_stream *stream;

	if (real == NULL)
		real = (submit_rst_stream_fn) dlsym(RTLD_NEXT, "nghttp2_submit_rst_stream");
	if (stream_id > 0 && session != NULL)
	{
		stream = nghttp2_session_find_stream(session, stream_id);
		if (stream == NULL || nghttp2_stream_get_state(stream) == NGHTTP2_STREAM_STATE_CLOSED)
			return 0;
		/* our request was sent whole and its answer came: nothing to cancel */
		if (nghttp2_stream_get_state(stream) == NGHTTP2_STREAM_STATE_HALF_CLOSED_LOCAL &&
			http_answer_started(nghttp2_session_get_stream_user_data(session, stream_id), session, stream_id))
			return 0;
	}
	if (real == NULL)
		return NGHTTP2_ERR_INVALID_STATE;	/* cannot happen: nghttp2 is loaded */
	return real(session, flags, stream_id, error_code);
}

#endif							/* LIBCURL_VERSION_NUM < 0x080000 */
