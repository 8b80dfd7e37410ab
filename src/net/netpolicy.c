/*
 * netpolicy.c
 *		The outbound URL policy (DESIGN section 5): the URLs the workers may
 *		call, the addresses they may connect to, and how text from a
 *		provider's answer is reduced to a short, safe reason.
 *
 * URLs are checked when they are stored (netpolicy_check_url): https only, no
 * user:password@, no fragment, at most NOVU_URL_MAX_LEN bytes, and a literal
 * address in a refused range is refused at once.  The guarantee is the check
 * at connect time: http.c's opensocket callback hands every resolved address
 * of every new connection to netpolicy_refuses(), so a host name that
 * resolves (or rebinds) to an internal address is refused as well.  Refused
 * unless novu.allowed_private_networks lists them: loopback, unspecified,
 * private, shared (CGNAT), link-local, unique-local, site-local, multicast,
 * broadcast, documentation, benchmarking and other reserved ranges, and the
 * IPv6 forms that embed an IPv4 address (mapped, compatible, translated,
 * NAT64, 6to4) by the IPv4 address they embed.
 *
 * The setting is superuser-only and reloadable; its check hook parses it once
 * per reload into a compact array (the GUC's "extra"), so the connect-time
 * check is a few byte comparisons that never allocate or raise.
 *
 * Text from a provider's answer (an error code, a message field, curl's error
 * buffer) is stored and logged only through netpolicy_reason(): at most
 * NOVU_REASON_MAX_LEN bytes, control and invisible formatting characters
 * removed, bytes that are not valid in the database encoding replaced.
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "net/netpolicy.h"

PG_FUNCTION_INFO_V1(novu_check_url);

/* A network: an address and the number of leading bits that count. */
typedef struct NetRange
{
	uint8		len;			/* 4 (IPv4) or 16 (IPv6) */
	uint8		bits;			/* prefix length */
	uint8		addr[16];
} NetRange;

/* The parsed novu.allowed_private_networks (malloc'd: the GUC's "extra"). */
typedef struct NetPolicy
{
	int			n;
	NetRange	ranges[FLEXIBLE_ARRAY_MEMBER];
} NetPolicy;

/* A range the policy refuses, and what it is. */
typedef struct RefusedRange
{
	NetRange	range;
	const char *what;
} RefusedRange;

#define V4(a, b, c, d, bits, what) {{4, bits, {a, b, c, d}}, what}
#define V6(h0, h1, h2, bits, what) \
	{{16, bits, {(h0) >> 8, (h0) & 0xFF, (h1) >> 8, (h1) & 0xFF, (h2) >> 8, (h2) & 0xFF}}, what}

/* IPv4 ranges refused unless allowed (the first match names the range). */
static const RefusedRange refused_v4[] = {
	V4(0, 0, 0, 0, 8, "unspecified"),
	V4(10, 0, 0, 0, 8, "private"),
	V4(100, 64, 0, 0, 10, "shared address space"),
	V4(127, 0, 0, 0, 8, "loopback"),
	V4(169, 254, 0, 0, 16, "link-local"),
	V4(172, 16, 0, 0, 12, "private"),
	V4(192, 0, 0, 0, 24, "IETF protocol assignments"),
	V4(192, 0, 2, 0, 24, "documentation"),
	V4(192, 88, 99, 0, 24, "6to4 relay anycast"),
	V4(192, 168, 0, 0, 16, "private"),
	V4(198, 18, 0, 0, 15, "benchmarking"),
	V4(198, 51, 100, 0, 24, "documentation"),
	V4(203, 0, 113, 0, 24, "documentation"),
	V4(224, 0, 0, 0, 4, "multicast"),
	V4(255, 255, 255, 255, 32, "broadcast"),
	V4(240, 0, 0, 0, 4, "reserved"),
};

/*
 * IPv6 ranges refused unless allowed, after the forms embedding an IPv4
 * address were judged by that address (see embedded_v4).
 */
static const RefusedRange refused_v6[] = {
	V6(0x0064, 0xff9b, 0x0001, 48, "local-use NAT64"),
	V6(0x0100, 0x0000, 0x0000, 64, "discard-only"),
	V6(0x2001, 0x0000, 0x0000, 32, "Teredo"),
	V6(0x2001, 0x0002, 0x0000, 48, "benchmarking"),
	V6(0x2001, 0x0db8, 0x0000, 32, "documentation"),
	V6(0x3fff, 0x0000, 0x0000, 20, "documentation"),
	V6(0xfc00, 0x0000, 0x0000, 7, "unique-local"),
	V6(0xfe80, 0x0000, 0x0000, 10, "link-local"),
	V6(0xfec0, 0x0000, 0x0000, 10, "site-local"),
	V6(0xff00, 0x0000, 0x0000, 8, "multicast"),
};

char	   *novu_allowed_private_networks = NULL;
uint32		netpolicy_generation = 0;

/* The current novu.allowed_private_networks, parsed (NULL: nothing allowed). */
static const NetPolicy *allowed = NULL;

/* Whether addr (len bytes) lies in range r. */
static bool
net_contains(const NetRange *r, const uint8 *addr, int len)
{
	int			full = r->bits / 8;
	int			rest = r->bits % 8;

	if (r->len != len || memcmp(r->addr, addr, full) != 0)
		return false;
	return rest == 0 || ((r->addr[full] ^ addr[full]) & (0xFF << (8 - rest)) & 0xFF) == 0;
}

/* Whether novu.allowed_private_networks lists addr. */
static bool
is_allowed(const uint8 *addr, int len)
{
	int			i;

	for (i = 0; allowed != NULL && i < allowed->n; i++)
	{
		if (net_contains(&allowed->ranges[i], addr, len))
			return true;
	}
	return false;
}

/* What a refused IPv4 address is, or NULL if it may be used. */
static const char *
v4_refusal(const uint8 *a)
{
	int			i;

	if (is_allowed(a, 4))
		return NULL;
	for (i = 0; i < lengthof(refused_v4); i++)
	{
		if (net_contains(&refused_v4[i].range, a, 4))
			return refused_v4[i].what;
	}
	return NULL;
}

/*
 * The IPv4 address an IPv6 address stands for, if it is one of the forms that
 * reach (or are translated to) an IPv4 host: IPv4-mapped ::ffff:0:0/96,
 * IPv4-translated ::ffff:0:0:0/96, IPv4-compatible ::/96, NAT64 64:ff9b::/96,
 * 6to4 2002::/16.  Returns the name of the form, or NULL.
 */
static const char *
embedded_v4(const uint8 *a, uint8 *v4)
{
	static const uint8 zero[12] = {0};
	static const uint8 nat64[12] = {0x00, 0x64, 0xff, 0x9b};
	const char *form = NULL;

	if (memcmp(a, zero, 10) == 0 && a[10] == 0xff && a[11] == 0xff)
		form = "IPv4-mapped";
	else if (memcmp(a, zero, 8) == 0 && a[8] == 0xff && a[9] == 0xff && a[10] == 0 && a[11] == 0)
		form = "IPv4-translated";
	else if (memcmp(a, zero, 12) == 0)
		form = "IPv4-compatible";
	else if (memcmp(a, nat64, 12) == 0)
		form = "NAT64";
	else if (a[0] == 0x20 && a[1] == 0x02)
	{
		memcpy(v4, a + 2, 4);
		return "6to4";
	}
	if (form != NULL)
		memcpy(v4, a + 12, 4);
	return form;
}

/*
 * Whether the policy refuses a connection to sa.  If so and why is not NULL,
 * writes "<address> (<what>)" there, e.g. "10.0.0.5 (private)" or
 * "::ffff:127.0.0.1 (loopback, IPv4-mapped)".  Never allocates or raises:
 * curl's opensocket callback calls it.
 */
bool
netpolicy_refuses(const struct sockaddr *sa, char *why, size_t whylen)
{
	const char *what = NULL;
	const char *form = NULL;
	char		text[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET)
	{
		const struct sockaddr_in *in = (const struct sockaddr_in *) sa;

		what = v4_refusal((const uint8 *) &in->sin_addr);
		if (what != NULL && why != NULL)
			inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
	}
	else if (sa->sa_family == AF_INET6)
	{
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
		const uint8 *a = (const uint8 *) &in6->sin6_addr;
		uint8		v4[4];
		int			i;

		if (is_allowed(a, 16))
			return false;
		if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
			what = "unspecified";
		else if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
			what = "loopback";
		else if ((form = embedded_v4(a, v4)) != NULL)
			what = v4_refusal(v4);
		else
		{
			for (i = 0; i < lengthof(refused_v6) && what == NULL; i++)
			{
				if (net_contains(&refused_v6[i].range, a, 16))
					what = refused_v6[i].what;
			}
		}
		if (what != NULL && why != NULL)
			inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
	}
	else
	{
		what = "not an IP address";
		strlcpy(text, "?", sizeof(text));
	}

	if (what != NULL && why != NULL)
	{
		if (form != NULL)
			snprintf(why, whylen, "%s (%s, %s)", text, what, form);
		else
			snprintf(why, whylen, "%s (%s)", text, what);
	}
	return what != NULL;
}

/* Whether two parsed settings allow the same networks (NULL: none). */
static bool
policy_equal(const NetPolicy *a, const NetPolicy *b)
{
	int			na = a ? a->n : 0;
	int			nb = b ? b->n : 0;

	return na == nb && (na == 0 || memcmp(a->ranges, b->ranges, sizeof(NetRange) * na) == 0);
}

/*
 * Parse one entry of the setting, "address[/prefix]", into r; false with
 * *problem (a full sentence for errdetail) if it is not a network.
 */
static bool
parse_network(const char *item, NetRange *r, char **problem)
{
	char		addr[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(item, '/');
	size_t		alen = slash ? (size_t) (slash - item) : strlen(item);
	int			max;
	int			bits;
	int			i;

	memset(r, 0, sizeof(NetRange));
	if (strpbrk(item, " \t\r\n") != NULL)
	{
		*problem = pstrdup("Entries are separated by commas.");
		return false;
	}
	if (alen > 0 && alen < sizeof(addr))
	{
		memcpy(addr, item, alen);
		addr[alen] = '\0';
	}
	else
		addr[0] = '\0';
	if (addr[0] != '\0' && inet_pton(AF_INET, addr, r->addr) == 1)
		r->len = 4;
	else if (addr[0] != '\0' && inet_pton(AF_INET6, addr, r->addr) == 1)
		r->len = 16;
	else
	{
		*problem = psprintf("\"%.*s\" is not an IPv4 or IPv6 address.", (int) Min(alen, 64), item);
		return false;
	}
	max = r->len * 8;
	bits = max;
	if (slash != NULL)
	{
		const char *p = slash + 1;

		bits = 0;
		for (i = 0; p[i] >= '0' && p[i] <= '9' && i < 4; i++)
			bits = bits * 10 + (p[i] - '0');
		if (i == 0 || p[i] != '\0' || bits > max)
		{
			*problem = psprintf("The prefix length after \"/\" must be a number from 0 to %d.", max);
			return false;
		}
	}
	r->bits = bits;

	/* no bits right of the mask (as PostgreSQL's cidr type requires) */
	for (i = bits; i < max; i++)
	{
		if (r->addr[i / 8] & (0x80 >> (i % 8)))
		{
			NetRange	net = *r;
			char		text[INET6_ADDRSTRLEN];
			int			j;

			for (j = bits; j < max; j++)
				net.addr[j / 8] &= ~(0x80 >> (j % 8));
			inet_ntop(r->len == 4 ? AF_INET : AF_INET6, net.addr, text, sizeof(text));
			*problem = psprintf("%s has bits set to the right of its /%d mask; the network is %s/%d.",
								addr, bits, text, bits);
			return false;
		}
	}
	return true;
}

/*
 * Check hook of novu.allowed_private_networks: a comma-separated list of
 * networks in CIDR notation (IPv4 or IPv6; a bare address is one host),
 * parsed here once into the compact form the connect-time check reads.
 */
bool
netpolicy_check_networks(char **newval, void **extra, GucSource source)
{
	const char *s = *newval ? *newval : "";
	int			max = 1;
	NetPolicy  *policy;
	const char *p;

	for (p = s; *p; p++)
		max += (*p == ',');
	policy = malloc(offsetof(NetPolicy, ranges) + sizeof(NetRange) * max);
	if (policy == NULL)
	{
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		return false;
	}
	policy->n = 0;

	/* an empty (or blank) setting allows nothing */
	p = s;
	while (*p == ' ' || *p == '\t')
		p++;
	while (*p != '\0')
	{
		const char *end = strchr(p, ',');
		size_t		len = end ? (size_t) (end - p) : strlen(p);
		char	   *item;
		char	   *problem = NULL;

		item = pnstrdup(p, len);
		len = strlen(item);
		while (len > 0 && strchr(" \t\r\n", item[len - 1]) != NULL)
			item[--len] = '\0';
		while (*item == ' ' || *item == '\t' || *item == '\r' || *item == '\n')
			item++;
		if (*item == '\0')
			problem = pstrdup("An entry between commas is empty.");
		else if (parse_network(item, &policy->ranges[policy->n], &problem))
			policy->n++;
		if (problem != NULL)
		{
			GUC_check_errmsg("invalid entry \"%s\" in novu.allowed_private_networks", item);
			GUC_check_errdetail("%s", problem);
			GUC_check_errhint("Give a comma-separated list of networks in CIDR notation, e.g. '127.0.0.1/32, 10.20.0.0/16, fd12:3456::/48', or '' to allow none.");
			free(policy);
			return false;
		}
		if (end == NULL)
			break;
		p = end + 1;
	}
	*extra = policy;
	return true;
}

/* Assign hook of novu.allowed_private_networks: the new list takes effect. */
void
netpolicy_assign_networks(const char *newval, void *extra)
{
	const NetPolicy *policy = extra;

	/* connection pools opened under another list start afresh (http.c) */
	if (!policy_equal(allowed, policy))
		netpolicy_generation++;
	allowed = policy;
}

/* Whether c may appear in a host name (letters, digits, "-", ".", "_"). */
static bool
is_host_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}

/* Fill *err and return NULL (for netpolicy_check_url). */
static char *
url_refused(UrlProblem *err, const char *problem, char *detail, const char *hint)
{
	err->problem = problem;
	err->detail = detail;
	err->hint = hint;
	return NULL;
}

/*
 * Check a URL a worker will call and return it normalized (the scheme in
 * lower case; a base URL without its trailing "/"), or NULL with *err set:
 * "https://", a host (name, IPv4, [IPv6]), an optional :port in 1..65535,
 * then nothing but an optional "/" (base_only) or a path and query of
 * printable ASCII; never user:password@, a fragment or more than
 * NOVU_URL_MAX_LEN bytes.  A literal address the policy refuses is refused
 * here already (host names are checked when a worker connects).  The URL
 * itself never appears in the problem: it may hold a secret.
 */
char *
netpolicy_check_url(const char *url, bool base_only, UrlProblem *err)
{
	static const char *const policy_hint =
		"Use a public address, or have a superuser list the network in novu.allowed_private_networks.";
	size_t		len = strlen(url);
	const char *auth;
	const char *auth_end;
	const char *host;
	const char *host_end;
	const char *p;
	char		hostbuf[256];
	struct sockaddr_storage ss;
	bool		literal = false;
	char		why[NETPOLICY_WHY_LEN];

	memset(err, 0, sizeof(UrlProblem));
	if (len > NOVU_URL_MAX_LEN)
		return url_refused(err, "is too long",
						   psprintf("It has %zu bytes; at most %d are accepted.", len, NOVU_URL_MAX_LEN), NULL);
	if (pg_strncasecmp(url, "http://", 7) == 0)
		return url_refused(err, "must use https, not http",
						   pstrdup("Over plain http, access tokens, signatures and notifications would travel in clear."),
						   NULL);
	if (pg_strncasecmp(url, "https://", 8) != 0)
		return url_refused(err, "must be an https:// URL", NULL, NULL);
	auth = url + 8;
	auth_end = auth + strcspn(auth, "/?#");

	if (memchr(auth, '@', auth_end - auth) != NULL)
		return url_refused(err, "must not contain user:password@",
						   pstrdup("Credentials belong in the integration's keys, never in a URL."), NULL);

	/* host */
	memset(&ss, 0, sizeof(ss));
	if (*auth == '[')
	{
		host = auth + 1;
		host_end = memchr(host, ']', auth_end - host);
		if (host_end == NULL || host_end == host || host_end - host >= sizeof(hostbuf))
			return url_refused(err, "has an invalid host", NULL, NULL);
		memcpy(hostbuf, host, host_end - host);
		hostbuf[host_end - host] = '\0';
		if (inet_pton(AF_INET6, hostbuf, &((struct sockaddr_in6 *) &ss)->sin6_addr) != 1)
			return url_refused(err, "has an invalid host",
							   pstrdup("Between [ and ] goes an IPv6 address (without a zone)."), NULL);
		ss.ss_family = AF_INET6;
		literal = true;
		host_end++;				/* past ']' */
	}
	else
	{
		host = auth;
		for (host_end = host; host_end < auth_end && *host_end != ':'; host_end++)
		{
			if (!is_host_char(*host_end))
				return url_refused(err, "has an invalid host",
								   pstrdup("A host name has letters, digits, \"-\", \".\" and \"_\" only."), NULL);
		}
		if (host_end == host || host_end - host >= sizeof(hostbuf))
			return url_refused(err, "has an invalid host", NULL, NULL);
		memcpy(hostbuf, host, host_end - host);
		hostbuf[host_end - host] = '\0';
		/* inet_aton also reads what resolvers read as IPv4 ("0x7f.1", "2130706433") */
		if (inet_aton(hostbuf, &((struct sockaddr_in *) &ss)->sin_addr) != 0)
		{
			ss.ss_family = AF_INET;
			literal = true;
		}
	}

	/* optional port */
	if (host_end < auth_end)
	{
		long		port = 0;

		if (*host_end != ':' || host_end + 1 == auth_end || auth_end - host_end - 1 > 5)
			return url_refused(err, "has an invalid port", NULL, NULL);
		for (p = host_end + 1; p < auth_end; p++)
		{
			if (*p < '0' || *p > '9')
				return url_refused(err, "has an invalid port", NULL, NULL);
			port = port * 10 + (*p - '0');
		}
		if (port < 1 || port > 65535)
			return url_refused(err, "has an invalid port", pstrdup("A port is a number from 1 to 65535."), NULL);
	}

	/* the rest */
	if (strchr(auth_end, '#') != NULL)
		return url_refused(err, "must not contain a fragment (#...)", NULL, NULL);
	if (base_only && !(auth_end[0] == '\0' || (auth_end[0] == '/' && auth_end[1] == '\0')))
		return url_refused(err, "must be a base URL with no path or query", NULL, NULL);
	for (p = auth_end; *p; p++)
	{
		if ((unsigned char) *p <= 0x20 || (unsigned char) *p >= 0x7F)
			return url_refused(err, "must not contain spaces, control or non-ASCII characters",
							   pstrdup("Percent-encode them (%20 for a space)."), NULL);
	}

	if (literal && netpolicy_refuses((struct sockaddr *) &ss, why, sizeof(why)))
		return url_refused(err, psprintf("points to %s, which the outbound URL policy refuses", why),
						   pstrdup("Loopback, private, link-local and other internal addresses are refused unless novu.allowed_private_networks lists them."),
						   policy_hint);

	if (base_only)
		return psprintf("https://%.*s", (int) (auth_end - auth), auth);
	return psprintf("https://%s", auth);
}

/*
 * novu._check_url(value, field): raise unless value is a URL the outbound URL
 * policy accepts (subscriber webhook URLs); field names it in the error.
 */
Datum
novu_check_url(PG_FUNCTION_ARGS)
{
	const char *field = PG_ARGISNULL(1) ? "url" : text_to_cstring(PG_GETARG_TEXT_PP(1));
	UrlProblem	err;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be an https:// URL", field),
				 errdetail("Got null."),
				 errhint("Use an absolute URL starting with https://.")));
	if (netpolicy_check_url(text_to_cstring(PG_GETARG_TEXT_PP(0)), false, &err) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s %s", field, err.problem),
				 err.detail ? errdetail("%s", err.detail) : 0,
				 errhint("%s", err.hint ? err.hint : "Use an absolute URL starting with https://.")));
	PG_RETURN_VOID();
}

/* Whether a code point is an invisible formatting or line-breaking character. */
static bool
is_format_char(pg_wchar cp)
{
	return (cp >= 0x80 && cp <= 0x9F) ||	/* C1 controls */
		(cp >= 0x200B && cp <= 0x200F) ||	/* zero-width, LRM, RLM */
		(cp >= 0x2028 && cp <= 0x202E) ||	/* line/paragraph separators, bidi embeddings */
		(cp >= 0x2060 && cp <= 0x2069) ||	/* word joiner, bidi isolates */
		cp == 0xFEFF;
}

/*
 * The one sanitiser for text from a provider's answer: a palloc'd copy of
 * at most NOVU_REASON_MAX_LEN bytes ("..." ends a cut text), with runs of
 * control, invisible formatting and white-space characters turned into one
 * space, trimmed, and bytes that are not valid in the database encoding
 * replaced by "?".  NULL stays NULL.
 */
char *
netpolicy_reason(const char *text)
{
	int			enc = GetDatabaseEncoding();
	char	   *out;
	int			o = 0;
	int			cut = 0;		/* length before the last character that fits with "..." */
	bool		gap = false;	/* a space is due before the next character */
	bool		truncated = false;
	const char *p;

	if (text == NULL)
		return NULL;
	out = palloc(NOVU_REASON_MAX_LEN + 1);
	for (p = text; *p != '\0';)
	{
		unsigned char c = (unsigned char) *p;
		int			clen = 1;
		bool		bad = false;

		if (c < 0x80)
		{
			if (c <= 0x20 || c == 0x7F)
			{
				gap = true;
				p++;
				continue;
			}
		}
		else if (enc == PG_UTF8)
		{
			clen = pg_utf_mblen((const unsigned char *) p);
			if (strnlen(p, clen) < clen || !pg_utf8_islegal((const unsigned char *) p, clen))
			{
				bad = true;
				clen = 1;
			}
			else if (is_format_char(utf8_to_unicode((const unsigned char *) p)))
			{
				gap = true;
				p += clen;
				continue;
			}
		}
		else if (enc == PG_SQL_ASCII)
			bad = true;
		else
		{
			clen = pg_encoding_verifymbchar(enc, p, strnlen(p, MAX_MULTIBYTE_CHAR_LEN));
			if (clen < 0)
			{
				bad = true;
				clen = 1;
			}
		}

		if (o + (gap && o > 0) + (bad ? 1 : clen) > NOVU_REASON_MAX_LEN)
		{
			truncated = true;
			break;
		}
		if (gap && o > 0)
			out[o++] = ' ';
		gap = false;
		if (bad)
			out[o++] = '?';
		else
		{
			memcpy(out + o, p, clen);
			o += clen;
		}
		if (o <= NOVU_REASON_MAX_LEN - 3)
			cut = o;
		p += clen;
	}
	if (truncated)
	{
		o = cut;
		while (o > 0 && out[o - 1] == ' ')
			o--;
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}
