/*
 * netpolicy.h
 *		The outbound URL policy (DESIGN section 5): which URLs are stored, which
 *		addresses the workers may connect to (novu.allowed_private_networks),
 *		and the one sanitiser for text that comes back from a provider.
 */
#ifndef NOVU_NETPOLICY_H
#define NOVU_NETPOLICY_H

#include <sys/socket.h>

#include "utils/guc.h"

/* Longest URL accepted for an endpoint, token_uri or webhook URL (bytes). */
#define NOVU_URL_MAX_LEN		2048

/* Longest reason stored from a provider's answer (bytes, "..." included). */
#define NOVU_REASON_MAX_LEN		200

/* Room for "<address> (<what>, <form>)" of a refused address. */
#define NETPOLICY_WHY_LEN		96

/* What is wrong with a URL, for an error naming the field. */
typedef struct UrlProblem
{
	const char *problem;		/* follows the field name: "must use https, not http" */
	char	   *detail;			/* or NULL */
	const char *hint;			/* or NULL: the caller's own hint applies */
} UrlProblem;

/* novu.allowed_private_networks (guc.c defines it with these hooks) */
extern char *novu_allowed_private_networks;
extern bool netpolicy_check_networks(char **newval, void **extra, GucSource source);
extern void netpolicy_assign_networks(const char *newval, void *extra);

/* Bumped whenever the effective list of allowed networks changes. */
extern uint32 netpolicy_generation;

extern bool netpolicy_refuses(const struct sockaddr *sa, char *why, size_t whylen);
extern char *netpolicy_check_url(const char *url, bool base_only, UrlProblem *err);
extern char *netpolicy_reason(const char *text);

#endif							/* NOVU_NETPOLICY_H */
