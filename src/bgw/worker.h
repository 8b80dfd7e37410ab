/*
 * worker.h
 *		Background workers of the extension: the launcher and the delivery workers.
 */
#ifndef NOVU_WORKER_H
#define NOVU_WORKER_H

/* The role the delivery workers connect as (created by CREATE EXTENSION). */
#define NOVU_WORKER_ROLE "novu_worker"


extern void novu_register_launcher(void);

/* timeslice.c */
extern void novu_apply_time_slice(void);

#endif							/* NOVU_WORKER_H */
