/*
 * fastmock.c: the fast mock provider of make bench, in C, so that its own CPU
 * cost per request (tens of microseconds) stays small beside the workers it
 * measures (fastmock.js, Node http2, costs about as much as they do).
 *
 * It answers the routes of fastmock.js exactly as fastmock.js does, with the
 * same counting: FCM (/v1/projects/...), OAuth (/token), APNs
 * (/3/device/<token>, apns-id), Expo (/--/api/v2/push/send, one ticket per
 * message; /--/api/v2/push/getReceipts), OneSignal (/notifications,
 * /api/v1/notifications: one id per request, each include_subscription_ids
 * counted), Web Push (/push/<id>: 201 with Location, nothing decrypted), and
 * anything else as "plain".  Counted: requests per kind, messages, every
 * device token once per request carrying it, messages per second, and the
 * commit-to-receipt latency from a message's "t" (epoch seconds), extracted
 * as fastmock.js does.  Expo's gzip request bodies are inflated.
 *
 * Fault injection is not here: test/bench/mixed.sh uses fastmock.js.  A POST
 * /_faults turning any fault on is answered 501, so a misuse is loud.
 *
 *   fastmock --certs DIR --port P [--plain-port Q]
 *
 * One thread, epoll, level-triggered, non-blocking sockets on 127.0.0.1.
 * Port P: TLS 1.2/1.3 (DIR/server.pem, DIR/server.key), ALPN h2 (libnghttp2's
 * server API; 1000 concurrent streams, a 1 GiB connection window) or
 * http/1.1.  Port Q: plain HTTP/1.1 (pg_net's baseline row).  Prints
 * {"ready":true} when listening.  Control routes (any port): GET /_stats,
 * POST /_reset, GET /_tokens, GET /_timeline, GET /_receipts (each message's
 * "rid", the bench's id of its trigger, and when it arrived), GET/POST /_faults.
 *
 *   cc -O2 -o fastmock fastmock.c -lnghttp2 -lssl -lcrypto -lz
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <zlib.h>

#define OUT_HIGH_WATER	(1024 * 1024)	/* stop generating HTTP/2 output above this */
#define H1_MAX_HEAD		65536	/* largest HTTP/1.1 request head accepted */
#define READ_CHUNK		65536

/* a growable byte buffer, always NUL-terminated */
typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Buf;

/* what the request handler sees, whichever protocol carried it */
typedef struct Request
{
	char	   *method;
	char	   *path;
	char	   *authority;		/* :authority, else host */
	bool		gzip;			/* Content-Encoding: gzip */
	Buf			body;
} Request;

/* what it answers */
typedef struct Response
{
	int			status;
	const char *ctype;			/* NULL: no Content-Type */
	bool		length;			/* send Content-Length (with or without a body) */
	int			nextra;
	char		xname[2][32];
	char		xvalue[2][512];
	Buf			body;
} Response;

/* one HTTP/2 stream */
typedef struct Stream
{
	Request		req;
	Response	res;
	size_t		sent;			/* bytes of res.body handed to nghttp2 */
	bool		answered;
} Stream;

enum
{
	KIND_LISTEN_TLS, KIND_LISTEN_PLAIN, KIND_CONN
};

/* a listening socket (the epoll tag comes first, as in Conn) */
typedef struct Listener
{
	int			kind;
	int			fd;
} Listener;

/* one client connection */
typedef struct Conn
{
	int			kind;
	int			fd;
	SSL		   *ssl;			/* NULL on the plain port */
	BIO		   *rbio;			/* TLS input: a memory BIO this file fills from the socket */
	bool		tls_done;
	bool		ssl_wants_write;
	nghttp2_session *h2;		/* NULL: HTTP/1.1 */
	Buf			in;				/* HTTP/1.1 input not yet consumed */
	size_t		in_off;
	bool		h1_head;		/* the head of the current request is parsed */
	size_t		h1_head_len;
	size_t		h1_body_len;
	bool		h1_keepalive;
	bool		h1_expect;		/* Expect: 100-continue, not answered yet */
	Request		h1req;
	Buf			out;			/* bytes to write (TLS plaintext) */
	size_t		out_off;
	bool		close_after_flush;
	uint32_t	events;
} Conn;

/* a device token and how many requests carried it (insertion order kept) */
typedef struct Token
{
	char	   *key;
	uint32_t	len;
	uint32_t	hash;
	long long	n;
} Token;

/* messages received in one epoch second */
typedef struct SecCount
{
	long long	sec;
	long long	n;
} SecCount;

static struct
{
	long long	oauth, fcm, apns, expo, receipts, onesignal, webpush, plain, messages;
}			counts;
static long long first_at, last_at;	/* epoch ms of the first and last non-control request */
static long long seq;			/* ids in answers; never reset, as in fastmock.js */
static int	sessions;			/* HTTP/2 connections open */
static double *lat;				/* commit-to-receipt latencies, seconds */
static size_t nlat, caplat;

/* A message's "rid" (the bench's own id of its trigger) and when it arrived. */
typedef struct Receipt
{
	char		id[32];
	double		at;
} Receipt;
static Receipt *rcpts;
static size_t nrcpts, caprcpts;
static Token *toks;
static size_t ntoks, captoks;
static uint32_t *tokslot;		/* open addressing: 0 empty, else index + 1 into toks */
static size_t ntokslots;
static SecCount *secs;
static size_t nsecs, capsecs;

static int	epfd;
static SSL_CTX *sslctx;

static const char faults_defaults[] =
"{\"rst\":0,\"e5xx\":0,\"slow\":0,\"goaway\":0,\"destroy\":0,\"retryAfter\":1,\"slowMs\":3000,\"quietMs\":150,\"maxHoldMs\":1500}";

/* Print a message and exit. */
static void
die(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	fprintf(stderr, "fastmock: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

/* malloc or die. */
static void *
xmalloc(size_t n)
{
	void	   *p = malloc(n ? n : 1);

	if (p == NULL)
		die("out of memory");
	return p;
}

/* realloc or die. */
static void *
xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (p == NULL)
		die("out of memory");
	return p;
}

/* Make room for extra more bytes (and the NUL) in a buffer. */
static void
buf_reserve(Buf *b, size_t extra)
{
	size_t		need = b->len + extra + 1;

	if (need <= b->cap)
		return;
	if (b->cap == 0)
		b->cap = 256;
	while (b->cap < need)
		b->cap *= 2;
	b->data = xrealloc(b->data, b->cap);
}

/* Append bytes to a buffer. */
static void
buf_append(Buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

/* Append a string to a buffer. */
static void
buf_puts(Buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

/* Append printf-formatted text to a buffer. */
static void
buf_printf(Buf *b, const char *fmt,...)
{
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	buf_reserve(b, n);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, n + 1, fmt, ap);
	va_end(ap);
	b->len += n;
}

/* Empty a buffer, keeping its memory. */
static void
buf_clear(Buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

/* Free a buffer's memory. */
static void
buf_free(Buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* Wall-clock time in epoch seconds, microsecond resolution. */
static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* --- counting ----------------------------------------------------------- */

/* FNV-1a hash of a token. */
static uint32_t
hash_bytes(const char *s, size_t n)
{
	uint32_t	h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char) s[i]) * 16777619u;
	return h;
}

/* Rebuild the token index with room for twice as many tokens. */
static void
tokens_grow(void)
{
	size_t		nslots = ntokslots ? ntokslots * 2 : 4096;

	free(tokslot);
	tokslot = calloc(nslots, sizeof(uint32_t));
	if (tokslot == NULL)
		die("out of memory");
	ntokslots = nslots;
	for (size_t i = 0; i < ntoks; i++)
	{
		size_t		s = toks[i].hash & (nslots - 1);

		while (tokslot[s])
			s = (s + 1) & (nslots - 1);
		tokslot[s] = i + 1;
	}
}

/* Count one message for a device token, in its token and in this second. */
static void
note_token(const char *tok, size_t len, double now)
{
	uint32_t	h = hash_bytes(tok, len);
	size_t		s;
	long long	sec = (long long) (now * 1000) / 1000;
	size_t		i;

	if ((ntoks + 1) * 2 > ntokslots)
		tokens_grow();
	s = h & (ntokslots - 1);
	for (;;)
	{
		Token	   *t;

		if (tokslot[s] == 0)
		{
			if (ntoks == captoks)
			{
				captoks = captoks ? captoks * 2 : 4096;
				toks = xrealloc(toks, captoks * sizeof(Token));
			}
			t = &toks[ntoks];
			t->key = xmalloc(len + 1);
			memcpy(t->key, tok, len);
			t->key[len] = '\0';
			t->len = len;
			t->hash = h;
			t->n = 1;
			tokslot[s] = ++ntoks;
			break;
		}
		t = &toks[tokslot[s] - 1];
		if (t->hash == h && t->len == len && memcmp(t->key, tok, len) == 0)
		{
			t->n++;
			break;
		}
		s = (s + 1) & (ntokslots - 1);
	}

	/* the timeline: the current second is nearly always the last one */
	for (i = nsecs; i > 0; i--)
		if (secs[i - 1].sec == sec)
		{
			secs[i - 1].n++;
			return;
		}
	if (nsecs == capsecs)
	{
		capsecs = capsecs ? capsecs * 2 : 256;
		secs = xrealloc(secs, capsecs * sizeof(SecCount));
	}
	secs[nsecs].sec = sec;
	secs[nsecs].n = 1;
	nsecs++;
}

/* Record a commit-to-receipt latency when t (epoch seconds) is positive. */
static void
note_latency(double t, double now)
{
	if (!(t > 0))
		return;
	if (nlat == caplat)
	{
		caplat = caplat ? caplat * 2 : 4096;
		lat = xrealloc(lat, caplat * sizeof(double));
	}
	lat[nlat++] = now - t;
}

/* Remember when the message whose "rid" is id arrived (GET /_receipts). */
static void
note_receipt(const char *id, size_t len, double now)
{
	if (len == 0 || len >= sizeof(rcpts[0].id))
		return;
	if (nrcpts == caprcpts)
	{
		caprcpts = caprcpts ? caprcpts * 2 : 4096;
		rcpts = xrealloc(rcpts, caprcpts * sizeof(Receipt));
	}
	memcpy(rcpts[nrcpts].id, id, len);
	rcpts[nrcpts].id[len] = '\0';
	rcpts[nrcpts].at = now;
	nrcpts++;
}

/* Zero every count (POST /_reset). */
static void
reset_counts(void)
{
	memset(&counts, 0, sizeof(counts));
	nlat = 0;
	nrcpts = 0;
	for (size_t i = 0; i < ntoks; i++)
		free(toks[i].key);
	ntoks = 0;
	if (tokslot)
		memset(tokslot, 0, ntokslots * sizeof(uint32_t));
	nsecs = 0;
	first_at = last_at = 0;
}

/* --- request bodies ----------------------------------------------------- */

/* Inflate a gzip body; false when it is not valid gzip. */
static bool
gunzip(const char *in, size_t len, Buf *out)
{
	z_stream	z;
	int			rc;

	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
		return false;
	z.next_in = (Bytef *) in;
	z.avail_in = len;
	for (;;)
	{
		buf_reserve(out, len * 4 + 4096);
		z.next_out = (Bytef *) out->data + out->len;
		z.avail_out = out->cap - out->len - 1;
		rc = inflate(&z, Z_NO_FLUSH);
		out->len = (char *) z.next_out - out->data;
		out->data[out->len] = '\0';
		if (rc == Z_STREAM_END)
			break;
		if (rc != Z_OK && !(rc == Z_BUF_ERROR && z.avail_out == 0))
		{
			inflateEnd(&z);
			return false;
		}
		if (z.avail_in == 0 && z.avail_out > 0)
		{
			/* the input ended before the gzip stream did */
			inflateEnd(&z);
			return false;
		}
	}
	inflateEnd(&z);
	return true;
}

/*
 * Find the first "KEY": ?"VALUE" in s, as fastmock.js's regular expressions do:
 * digits_only false: /"KEY": ?"([^"]*)"/; digits_only true: /"KEY": ?"([0-9.]+)"/;
 * quoted false (always digits): /"KEY": ?([0-9.]+)/.
 */
static bool
find_field(const char *s, size_t len, const char *key, bool quoted, bool digits_only,
		   const char **val, size_t *vlen)
{
	char		pat[64];
	size_t		plen = snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *end = s + len;
	const char *p = s;

	while ((p = memmem(p, end - p, pat, plen)) != NULL)
	{
		const char *v = p + plen;
		const char *e;

		p++;
		if (v < end && *v == ' ')
			v++;
		if (quoted)
		{
			if (v >= end || *v != '"')
				continue;
			v++;
		}
		e = v;
		if (digits_only || !quoted)
		{
			while (e < end && (isdigit((unsigned char) *e) || *e == '.'))
				e++;
			if (e == v)
				continue;
			if (quoted && (e >= end || *e != '"'))
				continue;
		}
		else
		{
			e = memchr(v, '"', end - v);
			if (e == NULL)
				return false;
		}
		*val = v;
		*vlen = e - v;
		return true;
	}
	return false;
}

/* JavaScript's Number() of a string: whitespace trimmed, "" is 0, else all of it or NaN. */
static double
js_number(const char *s, size_t len)
{
	char		tmp[64];
	char	   *end;
	double		v;

	while (len > 0 && isspace((unsigned char) *s))
		s++, len--;
	while (len > 0 && isspace((unsigned char) s[len - 1]))
		len--;
	if (len == 0)
		return 0;
	if (len >= sizeof(tmp))
		return NAN;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	v = strtod(tmp, &end);
	if (*end != '\0')
		return NAN;
	return v;
}

/* --- a small JSON parser (Expo and OneSignal bodies) --------------------- */

enum
{
	J_NULL, J_FALSE, J_TRUE, J_NUM, J_STR, J_ARR, J_OBJ
};

/* a parsed value; members and elements are linked by next */
typedef struct JNode
{
	int			type;
	int			child;			/* first member or element, -1 */
	int			next;			/* next sibling, -1 */
	const char *key;			/* as a member: its name (unescaped) */
	size_t		klen;
	const char *s;				/* string (unescaped) or number text */
	size_t		len;
} JNode;

typedef struct JParser
{
	const char *p;
	const char *end;
	JNode	   *nodes;
	int			n;
	int			cap;
	char	   *strs;			/* unescaped strings: never longer than the input */
	size_t		nstrs;
	int			depth;
} JParser;

/* Skip JSON whitespace. */
static void
j_ws(JParser *jp)
{
	while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r'))
		jp->p++;
}

/* Append a code point as UTF-8 to the unescaped strings. */
static void
j_utf8(JParser *jp, unsigned cp)
{
	char	   *o = jp->strs + jp->nstrs;

	if (cp < 0x80)
		o[0] = cp, jp->nstrs += 1;
	else if (cp < 0x800)
		o[0] = 0xC0 | (cp >> 6), o[1] = 0x80 | (cp & 0x3F), jp->nstrs += 2;
	else if (cp < 0x10000)
		o[0] = 0xE0 | (cp >> 12), o[1] = 0x80 | ((cp >> 6) & 0x3F), o[2] = 0x80 | (cp & 0x3F), jp->nstrs += 3;
	else
		o[0] = 0xF0 | (cp >> 18), o[1] = 0x80 | ((cp >> 12) & 0x3F), o[2] = 0x80 | ((cp >> 6) & 0x3F),
			o[3] = 0x80 | (cp & 0x3F), jp->nstrs += 4;
}

/* Read four hex digits of a \u escape; -1 if malformed. */
static int
j_hex4(JParser *jp)
{
	int			v = 0;

	if (jp->end - jp->p < 4)
		return -1;
	for (int i = 0; i < 4; i++)
	{
		char		c = *jp->p++;

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

/* Parse a string (at its opening quote): points into the input when it has no escape. */
static bool
j_string(JParser *jp, const char **s, size_t *len)
{
	const char *start = ++jp->p;
	size_t		o;

	while (jp->p < jp->end && *jp->p != '"' && *jp->p != '\\')
		jp->p++;
	if (jp->p < jp->end && *jp->p == '"')
	{
		*s = start;
		*len = jp->p - start;
		jp->p++;
		return true;
	}
	/* escapes: copy and unescape */
	o = jp->nstrs;
	memcpy(jp->strs + o, start, jp->p - start);
	jp->nstrs += jp->p - start;
	while (jp->p < jp->end && *jp->p != '"')
	{
		char		c = *jp->p++;

		if ((unsigned char) c < 0x20)
			return false;
		if (c != '\\')
		{
			jp->strs[jp->nstrs++] = c;
			continue;
		}
		if (jp->p >= jp->end)
			return false;
		c = *jp->p++;
		switch (c)
		{
			case '"':
			case '\\':
			case '/':
				jp->strs[jp->nstrs++] = c;
				break;
			case 'b':
				jp->strs[jp->nstrs++] = '\b';
				break;
			case 'f':
				jp->strs[jp->nstrs++] = '\f';
				break;
			case 'n':
				jp->strs[jp->nstrs++] = '\n';
				break;
			case 'r':
				jp->strs[jp->nstrs++] = '\r';
				break;
			case 't':
				jp->strs[jp->nstrs++] = '\t';
				break;
			case 'u':
				{
					int			cp = j_hex4(jp);

					if (cp < 0)
						return false;
					if (cp >= 0xD800 && cp < 0xDC00 && jp->end - jp->p >= 6 &&
						jp->p[0] == '\\' && jp->p[1] == 'u')
					{
						const char *save = jp->p;
						int			lo;

						jp->p += 2;
						lo = j_hex4(jp);
						if (lo >= 0xDC00 && lo < 0xE000)
							cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
						else
							jp->p = save;
					}
					j_utf8(jp, cp);
					break;
				}
			default:
				return false;
		}
	}
	if (jp->p >= jp->end)
		return false;
	jp->p++;
	*s = jp->strs + o;
	*len = jp->nstrs - o;
	return true;
}

/* Parse one value; its node index, or -1 when the text is not JSON. */
static int
j_value(JParser *jp)
{
	int			i;
	JNode	   *nd;

	j_ws(jp);
	if (jp->p >= jp->end || ++jp->depth > 200)
		return -1;
	if (jp->n == jp->cap)
	{
		jp->cap = jp->cap ? jp->cap * 2 : 64;
		jp->nodes = xrealloc(jp->nodes, jp->cap * sizeof(JNode));
	}
	i = jp->n++;
	nd = &jp->nodes[i];
	nd->child = nd->next = -1;
	nd->key = nd->s = NULL;
	nd->klen = nd->len = 0;
	switch (*jp->p)
	{
		case '"':
			nd->type = J_STR;
			{
				const char *s;
				size_t		len;

				if (!j_string(jp, &s, &len))
					return -1;
				jp->nodes[i].s = s;
				jp->nodes[i].len = len;
			}
			break;
		case '[':
		case '{':
			{
				bool		obj = *jp->p == '{';
				int			last = -1;

				nd->type = obj ? J_OBJ : J_ARR;
				jp->p++;
				j_ws(jp);
				if (jp->p < jp->end && *jp->p == (obj ? '}' : ']'))
				{
					jp->p++;
					break;
				}
				for (;;)
				{
					const char *k = NULL;
					size_t		klen = 0;
					int			c;

					if (obj)
					{
						j_ws(jp);
						if (jp->p >= jp->end || *jp->p != '"' || !j_string(jp, &k, &klen))
							return -1;
						j_ws(jp);
						if (jp->p >= jp->end || *jp->p != ':')
							return -1;
						jp->p++;
					}
					c = j_value(jp);
					if (c < 0)
						return -1;
					jp->nodes[c].key = k;
					jp->nodes[c].klen = klen;
					if (last < 0)
						jp->nodes[i].child = c;
					else
						jp->nodes[last].next = c;
					last = c;
					j_ws(jp);
					if (jp->p < jp->end && *jp->p == ',')
					{
						jp->p++;
						continue;
					}
					if (jp->p < jp->end && *jp->p == (obj ? '}' : ']'))
					{
						jp->p++;
						break;
					}
					return -1;
				}
			}
			break;
		case 't':
		case 'f':
		case 'n':
			{
				static const char *const words[] = {"null", "false", "true"};
				int			w;

				for (w = 0; w < 3; w++)
				{
					size_t		wl = strlen(words[w]);

					if (jp->end - jp->p >= (long) wl && memcmp(jp->p, words[w], wl) == 0)
						break;
				}
				if (w == 3)
					return -1;
				nd->type = w == 0 ? J_NULL : w == 1 ? J_FALSE : J_TRUE;
				jp->p += strlen(words[w]);
			}
			break;
		default:
			{
				const char *s = jp->p;

				if (*jp->p == '-')
					jp->p++;
				if (jp->p >= jp->end || !isdigit((unsigned char) *jp->p))
					return -1;
				while (jp->p < jp->end && (isdigit((unsigned char) *jp->p) || *jp->p == '.' ||
										   *jp->p == 'e' || *jp->p == 'E' || *jp->p == '+' || *jp->p == '-'))
					jp->p++;
				nd->type = J_NUM;
				nd->s = s;
				nd->len = jp->p - s;
			}
			break;
	}
	jp->depth--;
	return i;
}

/* Parse a whole text as one JSON value (JSON.parse); -1 when it is not JSON. */
static int
j_parse(JParser *jp, const char *s, size_t len)
{
	int			root;

	memset(jp, 0, sizeof(*jp));
	jp->p = s;
	jp->end = s + len;
	jp->strs = xmalloc(len + 1);
	root = j_value(jp);
	j_ws(jp);
	if (root >= 0 && jp->p != jp->end)
		root = -1;
	return root;
}

/* Free a parser's memory. */
static void
j_free(JParser *jp)
{
	free(jp->nodes);
	free(jp->strs);
}

/* An object's member (the last of that name, as JSON.parse keeps); -1 if none. */
static int
j_get(JParser *jp, int obj, const char *key)
{
	size_t		kl = strlen(key);
	int			found = -1;

	if (obj < 0 || jp->nodes[obj].type != J_OBJ)
		return -1;
	for (int c = jp->nodes[obj].child; c >= 0; c = jp->nodes[c].next)
		if (jp->nodes[c].klen == kl && memcmp(jp->nodes[c].key, key, kl) == 0)
			found = c;
	return found;
}

/* JavaScript's String() of a value, as fastmock.js counts a token (absent: "undefined"). */
static void
j_js_string(JParser *jp, int v, const char **s, size_t *len)
{
	static const char *const lit[] = {"null", "false", "true"};

	if (v < 0)
		*s = "undefined", *len = 9;
	else if (jp->nodes[v].type == J_STR || jp->nodes[v].type == J_NUM)
		*s = jp->nodes[v].s, *len = jp->nodes[v].len;
	else if (jp->nodes[v].type == J_OBJ)
		*s = "[object Object]", *len = 15;
	else if (jp->nodes[v].type == J_ARR)
		*s = "", *len = 0;		/* only an empty or one-element array would match */
	else
		*s = lit[jp->nodes[v].type], *len = strlen(*s);
}

/* Note the latency of a message's data.t when it is truthy, as fastmock.js does. */
static void
j_note_data_t(JParser *jp, int msg, double now)
{
	int			t = j_get(jp, j_get(jp, msg, "data"), "t");
	int			rid = j_get(jp, j_get(jp, msg, "data"), "rid");

	if (rid >= 0 && jp->nodes[rid].type == J_STR)
	{
		const char *s;
		size_t		sl;

		j_js_string(jp, rid, &s, &sl);
		note_receipt(s, sl, now);
	}
	if (t < 0)
		return;
	if (jp->nodes[t].type == J_STR || jp->nodes[t].type == J_NUM)
	{
		if (jp->nodes[t].len > 0)
			note_latency(js_number(jp->nodes[t].s, jp->nodes[t].len), now);
	}
	else if (jp->nodes[t].type == J_TRUE)
		note_latency(1, now);
}

/* --- the routes --------------------------------------------------------- */

/* Answer with a JSON body. */
static void
answer_json(Response *rs, int status, const char *json)
{
	rs->status = status;
	rs->ctype = "application/json";
	rs->length = true;
	buf_clear(&rs->body);
	buf_puts(&rs->body, json);
}

/* Add a header to an answer. */
static void
answer_header(Response *rs, const char *name, const char *value)
{
	if (rs->nextra >= 2)
		return;
	snprintf(rs->xname[rs->nextra], sizeof(rs->xname[0]), "%s", name);
	snprintf(rs->xvalue[rs->nextra], sizeof(rs->xvalue[0]), "%s", value);
	rs->nextra++;
}

/* Compare two latencies for qsort. */
static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return x < y ? -1 : x > y;
}

/* Compare two timeline seconds for qsort. */
static int
cmp_sec(const void *a, const void *b)
{
	long long	x = ((const SecCount *) a)->sec,
				y = ((const SecCount *) b)->sec;

	return x < y ? -1 : x > y;
}

/* Append a latency percentile in ms (null when nothing was measured). */
static void
put_pct(Buf *b, const double *l, size_t n, double p)
{
	size_t		i;

	if (n == 0)
	{
		buf_puts(b, "null");
		return;
	}
	i = (size_t) (p * n);
	if (i > n - 1)
		i = n - 1;
	buf_printf(b, "%.4f", l[i] * 1000);
}

/* GET /_stats: the JSON of fastmock.js's stats(). */
static void
control_stats(Response *rs)
{
	double	   *l = xmalloc(nlat * sizeof(double));
	Buf		   *b = &rs->body;

	memcpy(l, lat, nlat * sizeof(double));
	qsort(l, nlat, sizeof(double), cmp_double);
	answer_json(rs, 200, "");
	buf_printf(b, "{\"counts\":{\"oauth\":%lld,\"fcm\":%lld,\"apns\":%lld,\"expo\":%lld,\"receipts\":%lld,"
			   "\"onesignal\":%lld,\"webpush\":%lld,\"plain\":%lld,\"messages\":%lld},",
			   counts.oauth, counts.fcm, counts.apns, counts.expo, counts.receipts,
			   counts.onesignal, counts.webpush, counts.plain, counts.messages);
	buf_printf(b, "\"firstAt\":%lld,\"lastAt\":%lld,\"tokens\":%zu,\"sessions\":%d,", first_at, last_at, ntoks, sessions);
	buf_puts(b, "\"faults\":{\"rst\":0,\"e5xx\":0,\"slow\":0,\"goaway\":0,\"destroy\":0,\"drainedQuiet\":0,"
			 "\"drainedTimeout\":0,\"incomplete\":0,\"refused\":0,\"lateStreams\":0},");
	buf_printf(b, "\"latency\":{\"n\":%zu,\"p50_ms\":", nlat);
	put_pct(b, l, nlat, 0.5);
	buf_puts(b, ",\"p99_ms\":");
	put_pct(b, l, nlat, 0.99);
	buf_puts(b, ",\"max_ms\":");
	put_pct(b, l, nlat, 1);
	buf_puts(b, "}}");
	free(l);
}

/* POST /_faults: only "every fault off" is accepted here; GET: the (all-off) settings. */
static void
control_faults(Request *rq, Response *rs)
{
	static const char *const names[] = {"rst", "e5xx", "slow", "goaway", "destroy"};
	JParser		jp;
	int			root;

	if (strcmp(rq->method, "POST") != 0)
	{
		answer_json(rs, 200, faults_defaults);
		return;
	}
	root = rq->body.len ? j_parse(&jp, rq->body.data, rq->body.len) : j_parse(&jp, "{}", 2);
	if (root < 0)
	{
		j_free(&jp);
		answer_json(rs, 400, "{\"error\":\"bad JSON\"}");
		return;
	}
	for (int i = 0; i < 5; i++)
	{
		int			v = j_get(&jp, root, names[i]);

		if (v >= 0 && (jp.nodes[v].type == J_TRUE ||
					   ((jp.nodes[v].type == J_NUM || jp.nodes[v].type == J_STR) &&
						js_number(jp.nodes[v].s, jp.nodes[v].len) > 0)))
		{
			j_free(&jp);
			answer_json(rs, 501, "{\"error\":\"the C fast mock injects no faults: use fastmock.js (BENCH_MOCK=node)\"}");
			return;
		}
	}
	j_free(&jp);
	answer_json(rs, 200, faults_defaults);
}

/* The control routes (/_...). */
static void
control(Request *rq, Response *rs)
{
	const char *u = rq->path;

	if (strcmp(u, "/_stats") == 0)
		control_stats(rs);
	else if (strcmp(u, "/_reset") == 0)
	{
		reset_counts();
		answer_json(rs, 200, "{\"ok\":true}");
	}
	else if (strcmp(u, "/_tokens") == 0)
	{
		answer_json(rs, 200, "");
		rs->ctype = "text/tab-separated-values";
		for (size_t i = 0; i < ntoks; i++)
		{
			buf_append(&rs->body, toks[i].key, toks[i].len);
			buf_printf(&rs->body, "\t%lld\n", toks[i].n);
		}
	}
	else if (strcmp(u, "/_receipts") == 0)
	{
		answer_json(rs, 200, "");
		rs->ctype = "text/tab-separated-values";
		for (size_t i = 0; i < nrcpts; i++)
			buf_printf(&rs->body, "%s\t%.6f\n", rcpts[i].id, rcpts[i].at);
	}
	else if (strcmp(u, "/_timeline") == 0)
	{
		qsort(secs, nsecs, sizeof(SecCount), cmp_sec);
		answer_json(rs, 200, "{");
		for (size_t i = 0; i < nsecs; i++)
			buf_printf(&rs->body, "%s\"%lld\":%lld", i ? "," : "", secs[i].sec, secs[i].n);
		buf_puts(&rs->body, "}");
	}
	else if (strcmp(u, "/_faults") == 0)
		control_faults(rq, rs);
	else
		answer_json(rs, 404, "{\"error\":\"unknown control URL\"}");
}

/* Answer an Expo send: one ticket per message of the request's array. */
static void
route_expo(const char *body, size_t len, Response *rs, double now)
{
	JParser		jp;
	int			root = j_parse(&jp, body, len);
	int			first = -1;
	int			single = -1;
	long long	nmsgs = 0;

	counts.expo++;
	if (root >= 0 && jp.nodes[root].type == J_ARR)
		first = jp.nodes[root].child;
	else if (root >= 0)
		single = first = root;
	for (int m = first; m >= 0; m = (m == single ? -1 : jp.nodes[m].next))
	{
		int			to = j_get(&jp, m, "to");
		const char *s;
		size_t		sl;

		nmsgs++;
		if (to >= 0 && jp.nodes[to].type == J_ARR)
		{
			for (int e = jp.nodes[to].child; e >= 0; e = jp.nodes[e].next)
			{
				j_js_string(&jp, e, &s, &sl);
				note_token(s, sl, now);
			}
		}
		else
		{
			j_js_string(&jp, to, &s, &sl);
			note_token(s, sl, now);
		}
		j_note_data_t(&jp, m, now);
	}
	counts.messages += nmsgs;
	j_free(&jp);
	answer_json(rs, 200, "{\"data\":[");
	for (long long i = 0; i < nmsgs; i++)
		buf_printf(&rs->body, "%s{\"status\":\"ok\",\"id\":\"r-%lld\"}", i ? "," : "", ++seq);
	buf_puts(&rs->body, "]}");
}

/* Answer a OneSignal notification: one id; each include_subscription_ids is a message. */
static void
route_onesignal(const char *body, size_t len, Response *rs, double now)
{
	JParser		jp;
	int			root = j_parse(&jp, body, len);
	int			ids = j_get(&jp, root, "include_subscription_ids");
	char		json[128];

	counts.onesignal++;
	if (ids >= 0 && jp.nodes[ids].type == J_ARR)
	{
		for (int e = jp.nodes[ids].child; e >= 0; e = jp.nodes[e].next)
		{
			const char *s;
			size_t		sl;

			j_js_string(&jp, e, &s, &sl);
			note_token(s, sl, now);
			counts.messages++;
		}
	}
	j_note_data_t(&jp, root, now);
	j_free(&jp);
	snprintf(json, sizeof(json), "{\"id\":\"00000000-0000-4000-8000-%012lld\",\"external_id\":null}", ++seq);
	answer_json(rs, 200, json);
}

/* Answer one request, counting it, as fastmock.js's handle() does. */
static void
handle_request(Request *rq, Response *rs)
{
	const char *url = rq->path ? rq->path : "";
	double		now = now_seconds();
	const char *body;
	size_t		len;
	Buf			inflated = {0};
	const char *v;
	size_t		vl;
	char		tmp[512];

	rs->status = 200;
	rs->nextra = 0;
	if (rq->method == NULL)
		rq->method = strdup("GET");
	if (rq->body.data == NULL)
	{
		buf_reserve(&rq->body, 0);
		rq->body.data[0] = '\0';
	}
	if (strncmp(url, "/_", 2) == 0)
	{
		control(rq, rs);
		return;
	}
	if (!first_at)
		first_at = (long long) (now * 1000);
	last_at = (long long) (now * 1000);
	body = rq->body.data;
	len = rq->body.len;
	if (rq->gzip)
	{
		if (!gunzip(body, len, &inflated))
		{
			buf_free(&inflated);
			answer_json(rs, 400, "{\"error\":\"bad gzip body\"}");
			return;
		}
		body = inflated.data;
		len = inflated.len;
	}

	if (strcmp(url, "/token") == 0)
	{
		counts.oauth++;
		answer_json(rs, 200, "{\"access_token\":\"bench-token\",\"expires_in\":3600,\"token_type\":\"Bearer\"}");
	}
	else if (strncmp(url, "/v1/projects/", 13) == 0)
	{
		counts.fcm++;
		counts.messages++;
		if (find_field(body, len, "token", true, false, &v, &vl))
			note_token(v, vl, now);
		if (find_field(body, len, "t", true, true, &v, &vl))
			note_latency(js_number(v, vl), now);
		if (find_field(body, len, "rid", true, false, &v, &vl))
			note_receipt(v, vl, now);
		snprintf(tmp, sizeof(tmp), "{\"name\":\"projects/bench/messages/%lld\"}", ++seq);
		answer_json(rs, 200, tmp);
	}
	else if (strncmp(url, "/3/device/", 10) == 0)
	{
		counts.apns++;
		counts.messages++;
		note_token(url + 10, strlen(url + 10), now);
		if (find_field(body, len, "t", false, true, &v, &vl))
			note_latency(js_number(v, vl), now);
		if (find_field(body, len, "rid", true, false, &v, &vl))
			note_receipt(v, vl, now);
		rs->status = 200;
		rs->ctype = NULL;
		rs->length = false;
		snprintf(tmp, sizeof(tmp), "00000000-0000-4000-8000-%012lld", ++seq);
		answer_header(rs, "apns-id", tmp);
	}
	else if (strcmp(url, "/--/api/v2/push/send") == 0)
		route_expo(body, len, rs, now);
	else if (strcmp(url, "/--/api/v2/push/getReceipts") == 0)
	{
		counts.receipts++;
		answer_json(rs, 200, "{\"data\":{}}");
	}
	else if (strcmp(url, "/notifications") == 0 || strcmp(url, "/api/v1/notifications") == 0)
		route_onesignal(body, len, rs, now);
	else if (strncmp(url, "/push/", 6) == 0)
	{
		counts.webpush++;
		counts.messages++;
		note_token(url + 6, strcspn(url + 6, "?"), now);
		rs->status = 201;
		rs->ctype = NULL;
		rs->length = true;
		snprintf(tmp, sizeof(tmp), "https://%s/message/%lld", rq->authority ? rq->authority : "undefined", ++seq);
		answer_header(rs, "location", tmp);
	}
	else
	{
		counts.plain++;
		counts.messages++;
		answer_json(rs, 200, "{\"ok\":true}");
	}
	buf_free(&inflated);
}

/* Free what a request and its answer hold. */
static void
request_free(Request *rq, Response *rs)
{
	free(rq->method);
	free(rq->path);
	free(rq->authority);
	buf_free(&rq->body);
	memset(rq, 0, sizeof(*rq));
	if (rs)
	{
		buf_free(&rs->body);
		memset(rs, 0, sizeof(*rs));
	}
}

/* --- HTTP/2 (libnghttp2) ------------------------------------------------ */

/* Copy the next part of an answer's body into a DATA frame. */
static ssize_t
h2_read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
			 uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
	Stream	   *st = source->ptr;
	size_t		n = st->res.body.len - st->sent;

	if (n > length)
		n = length;
	memcpy(buf, st->res.body.data + st->sent, n);
	st->sent += n;
	if (st->sent == st->res.body.len)
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
	return n;
}

/* Make an nghttp2 header entry. */
static nghttp2_nv
h2_nv(const char *name, const char *value)
{
	nghttp2_nv	nv = {(uint8_t *) name, (uint8_t *) value, strlen(name), strlen(value), NGHTTP2_NV_FLAG_NONE};

	return nv;
}

/* Answer a stream whose request is complete. */
static int
h2_answer(nghttp2_session *session, int32_t id, Stream *st)
{
	nghttp2_nv	nva[6];
	int			n = 0;
	char		status[8];
	char		clen[24];
	nghttp2_data_provider dp;

	st->answered = true;
	handle_request(&st->req, &st->res);
	snprintf(status, sizeof(status), "%d", st->res.status);
	nva[n++] = h2_nv(":status", status);
	if (st->res.ctype)
		nva[n++] = h2_nv("content-type", st->res.ctype);
	if (st->res.length)
	{
		snprintf(clen, sizeof(clen), "%zu", st->res.body.len);
		nva[n++] = h2_nv("content-length", clen);
	}
	for (int i = 0; i < st->res.nextra; i++)
		nva[n++] = h2_nv(st->res.xname[i], st->res.xvalue[i]);
	dp.source.ptr = st;
	dp.read_callback = h2_read_body;
	return nghttp2_submit_response(session, id, nva, n, st->res.body.len ? &dp : NULL);
}

/* A request's HEADERS begin: a new stream. */
static int
h2_on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	Stream	   *st;

	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	st = calloc(1, sizeof(Stream));
	if (st == NULL)
		die("out of memory");
	nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, st);
	return 0;
}

/* One request header: keep those the routes need. */
static int
h2_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
			 const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
	Stream	   *st;

	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (st == NULL)
		return 0;
	if (namelen == 5 && memcmp(name, ":path", 5) == 0)
		st->req.path = strndup((const char *) value, valuelen);
	else if (namelen == 7 && memcmp(name, ":method", 7) == 0)
		st->req.method = strndup((const char *) value, valuelen);
	else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
	{
		free(st->req.authority);
		st->req.authority = strndup((const char *) value, valuelen);
	}
	else if (namelen == 4 && memcmp(name, "host", 4) == 0 && st->req.authority == NULL)
		st->req.authority = strndup((const char *) value, valuelen);
	else if (namelen == 16 && memcmp(name, "content-encoding", 16) == 0)
		st->req.gzip = valuelen == 4 && memcmp(value, "gzip", 4) == 0;
	return 0;
}

/* A piece of a request body. */
static int
h2_on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
				 size_t len, void *user_data)
{
	Stream	   *st = nghttp2_session_get_stream_user_data(session, stream_id);

	if (st)
		buf_append(&st->req.body, data, len);
	return 0;
}

/* A frame ending a request's stream: the request is complete, answer it. */
static int
h2_on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	Stream	   *st;

	if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
		!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (st == NULL || st->answered)
		return 0;
	if (h2_answer(session, frame->hd.stream_id, st) != 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return 0;
}

/* A stream closed: free it. */
static int
h2_on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data)
{
	Stream	   *st = nghttp2_session_get_stream_user_data(session, stream_id);

	if (st)
	{
		nghttp2_session_set_stream_user_data(session, stream_id, NULL);
		request_free(&st->req, &st->res);
		free(st);
	}
	return 0;
}

/* Start HTTP/2 on a connection: the session and our SETTINGS. */
static bool
h2_start(Conn *c)
{
	static nghttp2_session_callbacks *cbs;
	nghttp2_settings_entry iv[2] = {
		{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000},
		{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
	};

	if (cbs == NULL)
	{
		if (nghttp2_session_callbacks_new(&cbs) != 0)
			die("nghttp2_session_callbacks_new failed");
		nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, h2_on_begin_headers);
		nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
		nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2_on_data_chunk);
		nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2_on_frame_recv);
		nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_stream_close);
	}
	if (nghttp2_session_server_new(&c->h2, cbs, c) != 0)
		return false;
	sessions++;
	if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
		nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, (1 << 30)) != 0)
		return false;
	return true;
}

/* Move nghttp2's pending output into the connection's buffer; bytes added. */
static size_t
h2_fill(Conn *c)
{
	size_t		added = 0;

	while (c->out.len - c->out_off < OUT_HIGH_WATER)
	{
		const uint8_t *d;
		ssize_t		n = nghttp2_session_mem_send(c->h2, &d);

		if (n <= 0)
		{
			if (n < 0)
				c->close_after_flush = true;
			break;
		}
		buf_append(&c->out, d, n);
		added += n;
	}
	return added;
}

/* --- HTTP/1.1 (the plain port, and TLS without h2) ---------------------- */

/* Case-insensitive test of a header name. */
static bool
h1_name_is(const char *name, size_t len, const char *want)
{
	return strlen(want) == len && strncasecmp(name, want, len) == 0;
}

/* Reason phrase of a status. */
static const char *
h1_reason(int status)
{
	switch (status)
	{
		case 100:
			return "Continue";
		case 200:
			return "OK";
		case 201:
			return "Created";
		case 400:
			return "Bad Request";
		case 404:
			return "Not Found";
		case 501:
			return "Not Implemented";
		default:
			return "Unknown";
	}
}

/* Parse a request head (request line and headers); false if malformed. */
static bool
h1_parse_head(Conn *c, const char *p, size_t len)
{
	const char *end = p + len;
	const char *eol = memmem(p, len, "\r\n", 2);
	const char *sp1,
			   *sp2;
	bool		http10;
	bool		chunked = false;

	if (eol == NULL)
		return false;
	sp1 = memchr(p, ' ', eol - p);
	if (sp1 == NULL)
		return false;
	sp2 = memchr(sp1 + 1, ' ', eol - sp1 - 1);
	if (sp2 == NULL)
		return false;
	c->h1req.method = strndup(p, sp1 - p);
	c->h1req.path = strndup(sp1 + 1, sp2 - sp1 - 1);
	http10 = (eol - sp2 - 1 == 8 && memcmp(sp2 + 1, "HTTP/1.0", 8) == 0);
	c->h1_keepalive = !http10;
	c->h1_body_len = 0;
	c->h1_expect = false;
	p = eol + 2;
	while (p < end && (eol = memmem(p, end - p, "\r\n", 2)) != NULL && eol > p)
	{
		const char *colon = memchr(p, ':', eol - p);
		const char *v;
		size_t		vl;

		if (colon == NULL)
			return false;
		v = colon + 1;
		while (v < eol && (*v == ' ' || *v == '\t'))
			v++;
		vl = eol - v;
		while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
			vl--;
		if (h1_name_is(p, colon - p, "content-length"))
			c->h1_body_len = strtoull(v, NULL, 10);
		else if (h1_name_is(p, colon - p, "content-encoding"))
			c->h1req.gzip = vl == 4 && strncasecmp(v, "gzip", 4) == 0;
		else if (h1_name_is(p, colon - p, "host"))
		{
			free(c->h1req.authority);
			c->h1req.authority = strndup(v, vl);
		}
		else if (h1_name_is(p, colon - p, "connection"))
		{
			if (vl == 5 && strncasecmp(v, "close", 5) == 0)
				c->h1_keepalive = false;
		}
		else if (h1_name_is(p, colon - p, "transfer-encoding"))
			chunked = true;
		else if (h1_name_is(p, colon - p, "expect"))
			c->h1_expect = vl == 12 && strncasecmp(v, "100-continue", 12) == 0;
		p = eol + 2;
	}
	/* chunked request bodies: not needed by any client of this mock */
	return !chunked;
}

/* Serialize an answer as HTTP/1.1. */
static void
h1_write_answer(Conn *c, Response *rs)
{
	buf_printf(&c->out, "HTTP/1.1 %d %s\r\n", rs->status, h1_reason(rs->status));
	if (rs->ctype)
		buf_printf(&c->out, "Content-Type: %s\r\n", rs->ctype);
	/* a keep-alive HTTP/1.1 answer always states its length */
	buf_printf(&c->out, "Content-Length: %zu\r\n", rs->body.len);
	for (int i = 0; i < rs->nextra; i++)
		buf_printf(&c->out, "%s: %s\r\n", rs->xname[i], rs->xvalue[i]);
	buf_puts(&c->out, c->h1_keepalive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
	buf_append(&c->out, rs->body.data ? rs->body.data : "", rs->body.len);
}

/* Answer every complete request in the input. */
static bool
h1_process(Conn *c)
{
	while (!c->close_after_flush)
	{
		const char *base = c->in.data + c->in_off;
		size_t		avail = c->in.len - c->in_off;
		Response	rs = {0};

		if (!c->h1_head)
		{
			const char *e = avail ? memmem(base, avail, "\r\n\r\n", 4) : NULL;

			if (e == NULL)
			{
				if (avail > H1_MAX_HEAD)
					return false;
				break;
			}
			c->h1_head_len = e + 4 - base;
			c->h1_head = true;
			if (!h1_parse_head(c, base, c->h1_head_len))
			{
				answer_json(&rs, 400, "{\"error\":\"bad or chunked request\"}");
				c->h1_keepalive = false;
				h1_write_answer(c, &rs);
				buf_free(&rs.body);
				c->close_after_flush = true;
				break;
			}
		}
		if (avail < c->h1_head_len + c->h1_body_len)
		{
			/* Expect: 100-continue: invite the body */
			if (c->h1_expect)
			{
				buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
				c->h1_expect = false;
			}
			break;
		}
		buf_append(&c->h1req.body, base + c->h1_head_len, c->h1_body_len);
		handle_request(&c->h1req, &rs);
		h1_write_answer(c, &rs);
		request_free(&c->h1req, &rs);
		c->in_off += c->h1_head_len + c->h1_body_len;
		c->h1_head = false;
		if (!c->h1_keepalive)
			c->close_after_flush = true;
	}
	if (c->in_off == c->in.len)
		c->in_off = c->in.len = 0;
	else if (c->in_off > READ_CHUNK)
	{
		memmove(c->in.data, c->in.data + c->in_off, c->in.len - c->in_off);
		c->in.len -= c->in_off;
		c->in_off = 0;
	}
	return true;
}

/* --- connections -------------------------------------------------------- */

/* Close a connection and free it. */
static void
conn_close(Conn *c)
{
	if (c->h2)
	{
		nghttp2_session_del(c->h2);	/* frees the open streams (on_stream_close) */
		sessions--;
	}
	if (c->ssl)
		SSL_free(c->ssl);
	close(c->fd);
	request_free(&c->h1req, NULL);
	buf_free(&c->in);
	buf_free(&c->out);
	free(c);
}

/* Choose the protocol once TLS is up (ALPN h2, else HTTP/1.1). */
static bool
conn_start(Conn *c)
{
	const unsigned char *alpn = NULL;
	unsigned int alen = 0;

	if (c->ssl)
		SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
	if (alen == 2 && memcmp(alpn, "h2", 2) == 0)
		return h2_start(c);
	return true;
}

/* Feed bytes read from the client to the protocol. */
static bool
conn_feed(Conn *c, const char *d, size_t n)
{
	if (c->h2)
		return nghttp2_session_mem_recv(c->h2, (const uint8_t *) d, n) == (ssize_t) n;
	buf_append(&c->in, d, n);
	return h1_process(c);
}

/* Run TLS over the input buffered in rbio: the handshake, then records to the protocol. */
static bool
tls_pump(Conn *c)
{
	static char plain[READ_CHUNK];
	int			n;
	int			e;

	if (!c->tls_done)
	{
		n = SSL_do_handshake(c->ssl);
		if (n != 1)
		{
			e = SSL_get_error(c->ssl, n);
			if (e == SSL_ERROR_WANT_READ)
				return true;
			if (e == SSL_ERROR_WANT_WRITE)
			{
				c->ssl_wants_write = true;
				return true;
			}
			ERR_clear_error();
			return false;
		}
		c->tls_done = true;
		if (!conn_start(c))
			return false;
	}
	while ((n = SSL_read(c->ssl, plain, sizeof(plain))) > 0)
		if (!conn_feed(c, plain, n))
			return false;
	e = SSL_get_error(c->ssl, n);
	if (e == SSL_ERROR_WANT_READ)
		return true;
	if (e == SSL_ERROR_WANT_WRITE)
	{
		c->ssl_wants_write = true;
		return true;
	}
	ERR_clear_error();
	return false;
}

/*
 * Read what the socket holds; false when the connection is over.  A short read
 * means the socket is drained: level-triggered epoll says when more comes (no
 * read ending in EAGAIN at every wake-up).
 */
static bool
conn_read(Conn *c)
{
	static char buf[READ_CHUNK];

	for (;;)
	{
		ssize_t		n = read(c->fd, buf, sizeof(buf));

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return true;
		if (n <= 0)
			return false;
		if (c->ssl)
		{
			if (BIO_write(c->rbio, buf, n) != n || !tls_pump(c))
				return false;
		}
		else if (!conn_feed(c, buf, n))
			return false;
		if (n < (ssize_t) sizeof(buf))
			return true;
	}
}

/* Write what is buffered; false on an error. */
static bool
conn_flush(Conn *c)
{
	while (c->out_off < c->out.len)
	{
		size_t		left = c->out.len - c->out_off;
		ssize_t		n;

		if (c->ssl)
		{
			/* a retry after WANT_WRITE passes at least the length tried before */
			n = SSL_write(c->ssl, c->out.data + c->out_off, left);
			if (n <= 0)
			{
				int			e = SSL_get_error(c->ssl, n);

				if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
					return true;
				ERR_clear_error();
				return false;
			}
		}
		else
		{
			n = write(c->fd, c->out.data + c->out_off, left);
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
				return true;
			if (n < 0)
				return false;
		}
		c->out_off += n;
	}
	c->out_off = 0;
	buf_clear(&c->out);
	return true;
}

/* Set the epoll interest of a connection: read always, write while output waits. */
static void
conn_set_events(Conn *c)
{
	uint32_t	ev = EPOLLIN;
	struct epoll_event e;

	if (c->out_off < c->out.len || c->ssl_wants_write)
		ev |= EPOLLOUT;
	if (ev == c->events)
		return;
	e.events = ev;
	e.data.ptr = c;
	epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
	c->events = ev;
}

/* Serve a connection that epoll says is ready. */
static void
conn_io(Conn *c)
{
	/* TLS waiting to write (the handshake, a post-handshake message): go on first */
	if (c->ssl && c->ssl_wants_write)
	{
		c->ssl_wants_write = false;
		if (!tls_pump(c))
		{
			conn_close(c);
			return;
		}
	}
	if (!conn_read(c))
	{
		conn_close(c);
		return;
	}
	for (;;)
	{
		size_t		added = c->h2 ? h2_fill(c) : 0;

		if (!conn_flush(c))
		{
			conn_close(c);
			return;
		}
		if (c->out_off < c->out.len || added == 0 || !c->h2)
			break;
	}
	if (c->out_off == c->out.len &&
		(c->close_after_flush ||
		 (c->h2 && !nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))))
	{
		conn_close(c);
		return;
	}
	conn_set_events(c);
}

/* Accept every pending connection of a listening socket. */
static void
accept_all(Listener *l)
{
	for (;;)
	{
		int			fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		int			one = 1;
		Conn	   *c;
		struct epoll_event e;

		if (fd < 0)
			return;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = calloc(1, sizeof(Conn));
		if (c == NULL)
			die("out of memory");
		c->kind = KIND_CONN;
		c->fd = fd;
		if (l->kind == KIND_LISTEN_TLS)
		{
			c->ssl = SSL_new(sslctx);
			if (c->ssl == NULL)
				die("SSL_new failed");
			c->rbio = BIO_new(BIO_s_mem());
			if (c->rbio == NULL)
				die("BIO_new failed");
			BIO_set_mem_eof_return(c->rbio, -1);
			SSL_set_bio(c->ssl, c->rbio, BIO_new_socket(fd, BIO_NOCLOSE));
			SSL_set_accept_state(c->ssl);
		}
		else
			c->tls_done = true;
		c->events = EPOLLIN;
		e.events = EPOLLIN;
		e.data.ptr = c;
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) != 0)
			die("epoll_ctl: %s", strerror(errno));
	}
}

/* ALPN: h2 when offered, else http/1.1, else no protocol (HTTP/1.1 then). */
static int
alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char prefs[] = "\x02h2\x08http/1.1";

	if (SSL_select_next_proto((unsigned char **) out, outlen, prefs, sizeof(prefs) - 1, in, inlen) ==
		OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_OK;
	return SSL_TLSEXT_ERR_NOACK;
}

/* Listen on 127.0.0.1:port and register the socket with epoll. */
static void
listen_on(int port, int kind)
{
	Listener   *l = xmalloc(sizeof(Listener));
	struct sockaddr_in a;
	int			one = 1;
	struct epoll_event e;

	l->kind = kind;
	l->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (l->fd < 0)
		die("socket: %s", strerror(errno));
	setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(l->fd, (struct sockaddr *) &a, sizeof(a)) != 0)
		die("bind 127.0.0.1:%d: %s", port, strerror(errno));
	if (listen(l->fd, 1024) != 0)
		die("listen: %s", strerror(errno));
	e.events = EPOLLIN;
	e.data.ptr = l;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, l->fd, &e) != 0)
		die("epoll_ctl: %s", strerror(errno));
}

/* The TLS context: the certificates of --certs, TLS 1.2 and 1.3, ALPN. */
static void
tls_setup(const char *certs)
{
	char		path[4096];

	sslctx = SSL_CTX_new(TLS_server_method());
	if (sslctx == NULL)
		die("SSL_CTX_new failed");
	SSL_CTX_set_min_proto_version(sslctx, TLS1_2_VERSION);
	SSL_CTX_set_options(sslctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_mode(sslctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	snprintf(path, sizeof(path), "%s/server.pem", certs);
	if (SSL_CTX_use_certificate_chain_file(sslctx, path) != 1)
		die("cannot load %s", path);
	snprintf(path, sizeof(path), "%s/server.key", certs);
	if (SSL_CTX_use_PrivateKey_file(sslctx, path, SSL_FILETYPE_PEM) != 1)
		die("cannot load %s", path);
	SSL_CTX_set_alpn_select_cb(sslctx, alpn_select, NULL);
}

/* Parse the options, listen, print {"ready":true}, serve until killed. */
int
main(int argc, char **argv)
{
	const char *certs = NULL;
	int			port = 0;
	int			plain_port = 0;
	struct epoll_event ev[64];

	for (int i = 1; i + 1 < argc; i += 2)
	{
		if (strcmp(argv[i], "--certs") == 0)
			certs = argv[i + 1];
		else if (strcmp(argv[i], "--port") == 0)
			port = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--plain-port") == 0)
			plain_port = atoi(argv[i + 1]);
		else
			die("unknown option %s", argv[i]);
	}
	if (certs == NULL || port <= 0)
		die("usage: fastmock --certs DIR --port P [--plain-port Q]");
	signal(SIGPIPE, SIG_IGN);
	tls_setup(certs);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		die("epoll_create1: %s", strerror(errno));
	listen_on(port, KIND_LISTEN_TLS);
	if (plain_port > 0)
		listen_on(plain_port, KIND_LISTEN_PLAIN);
	printf("{\"ready\":true}\n");
	fflush(stdout);

	for (;;)
	{
		int			n = epoll_wait(epfd, ev, 64, -1);

		if (n < 0 && errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (int i = 0; i < n; i++)
		{
			int			kind = *(int *) ev[i].data.ptr;

			if (kind == KIND_CONN)
				conn_io(ev[i].data.ptr);
			else
				accept_all(ev[i].data.ptr);
		}
	}
}
