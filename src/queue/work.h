/*
 * work.h
 *		Units of work of the delivery workers (work.c).
 */
#ifndef NOVU_WORK_H
#define NOVU_WORK_H

/* This worker's slot number (0 .. novu.workers - 1), -1 outside a worker. */
extern int	novu_worker_slot;

/* SQLSTATE of the quiet error ending a unit of work whose extension is gone */
#define NOVU_EXTENSION_GONE ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE

extern void novu_begin_work_on(const char *activity, bool need_extension);
extern void novu_begin_work(const char *activity);
extern void novu_end_work(void);
extern void novu_end_work_durable(void);
extern MemoryContext novu_work_outer_context(void);

#endif							/* NOVU_WORK_H */
