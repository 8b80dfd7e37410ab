/*
 * h2_reset_guard.c
 *		Keep libcurl before 8.0 from resetting HTTP/2 streams that already
 *		ended.
 *
 * libcurl 7.x (Debian 12 ships 7.88) ends every HTTP/2 transfer whose answer
 * had no Content-Length (every APNs answer: a bodyless 200) by sending
 * RST_STREAM(STREAM_CLOSED) for a stream that is already closed: its stream
 * close handling clears the "closed" flag that the end-of-transfer code then
 * tests (fixed in curl 8.0, commit 544a7f8).  One pointless frame per message
 * would be harmless, but servers count resets since the 2023 "rapid reset"
 * attack: nghttp2 (in nghttpx, Apache, Node.js) allows a burst of 1,000 then
 * 33 per second, and then sends GOAWAY(INTERNAL_ERROR).  At a few thousand
 * APNs requests a second every connection was cut after about 1,000 streams,
 * with up to 100 requests in flight on it, answers lost.
 *
 * The guard defines nghttp2_submit_rst_stream() in this library.  libcurl was
 * loaded as this library's dependency, so its calls bind here first; a reset of
 * a stream nghttp2 no longer tracks (closed) is dropped, every other one goes
 * to the real function.  This is the one exported symbol without the novu_
 * prefix, on purpose, and only when built against a libcurl older than 8.0.
 */
#include "postgres.h"

#include <dlfcn.h>

#include <curl/curl.h>
#include <nghttp2/nghttp2.h>

#if LIBCURL_VERSION_NUM < 0x080000

typedef int (*submit_rst_stream_fn) (nghttp2_session *, uint8_t, int32_t, uint32_t);

/* nghttp2's own nghttp2_submit_rst_stream, looked up once. */
static submit_rst_stream_fn
real_submit_rst_stream(void)
{
	static submit_rst_stream_fn real = NULL;

	if (real == NULL)
		real = (submit_rst_stream_fn) dlsym(RTLD_NEXT, "nghttp2_submit_rst_stream");
	return real;
}

/*
 * Submit RST_STREAM unless the stream is already closed.  Runs inside libcurl:
 * never ereports or allocates.
 */
PGDLLEXPORT int
nghttp2_submit_rst_stream(nghttp2_session *session, uint8_t flags, int32_t stream_id, uint32_t error_code)
{
	submit_rst_stream_fn real = real_submit_rst_stream();
	nghttp2_stream *stream;

	if (stream_id > 0 && session != NULL)
	{
		stream = nghttp2_session_find_stream(session, stream_id);
		if (stream == NULL || nghttp2_stream_get_state(stream) == NGHTTP2_STREAM_STATE_CLOSED)
			return 0;
	}
	if (real == NULL)
		return NGHTTP2_ERR_INVALID_STATE;	/* cannot happen: nghttp2 is loaded */
	return real(session, flags, stream_id, error_code);
}

#endif							/* LIBCURL_VERSION_NUM < 0x080000 */
