/*
 * deliver.h
 *		The delivery pipeline the worker's loop drives: claim, render, send
 *		through the providers, record (deliver.c).
 */
#ifndef NOVU_DELIVER_H
#define NOVU_DELIVER_H

extern void novu_deliver_init(void);
extern int	novu_deliver(bool poke, bool *fanout_more, long wait_ms, long *sleep_ms);
extern bool novu_deliver_busy(void);
extern void novu_deliver_abandon(void);
extern int	novu_check_receipts(void);
extern void novu_deliver_evict_idle(void);

#endif							/* NOVU_DELIVER_H */
