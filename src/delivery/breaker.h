/*
 * breaker.h
 *		The dead-token circuit breaker, shared by all delivery workers.
 */
#ifndef NOVU_BREAKER_H
#define NOVU_BREAKER_H

#include "providers/provider.h"

/* shared memory: request (shmem_request_hook / _PG_init) and attach (shmem_startup_hook) */
extern void novu_breaker_shmem_request(void);
extern void novu_breaker_shmem_startup(void);

/* Count answered messages of one integration (accepted, dead token) into its shared window. */
extern void novu_breaker_note(Integration *ig, Message **msgs, int n);

/* Whether the integration's window holds enough answers to judge dead-token answers now. */
extern bool novu_breaker_settled(Integration *ig);

/* Whether no worker has logged the integration's configuration error yet (and now one has). */
extern bool novu_breaker_first_config_error(Integration *ig);

/*
 * Decide the dead-token answers among msgs (noted before): pruned, or kept
 * (CONFIG_ERROR when the breaker is tripped, DROP when the integration has
 * not shown yet that it works), with the reason.
 */
extern void novu_breaker_apply(Integration *ig, Message **msgs, int n);

#endif							/* NOVU_BREAKER_H */
