/*
 * novu.h
 *		Shared declarations of the novu extension: GUCs and module-wide helpers.
 */
#ifndef NOVU_H
#define NOVU_H

#include "postgres.h"

/* GUC variables (guc.c) */
extern char *novu_database_name;
extern int	novu_workers;
extern int	novu_batch_size;
extern int	novu_poll_interval;
extern double novu_worker_time_slice;
extern bool novu_durable_claims;
extern int	novu_request_timeout;
extern int	novu_max_attempts;
extern int	novu_retry_initial_delay;
extern int	novu_retry_max_delay;
extern char *novu_ca_file;
extern int	novu_retention;
extern int	novu_expo_receipt_delay;
extern int	novu_fanout_lock_wait;
extern int	novu_integration_idle_timeout;
extern char *novu_secret_key_file;
extern char *novu_previous_secret_key_file;

extern void novu_define_gucs(void);

/* SPI plans prepared once per backend (spi_util.c) */
struct _SPI_plan;
extern struct _SPI_plan *novu_prepare_once(struct _SPI_plan **slot, const char *sql, int nargs, Oid *argtypes);
extern struct _SPI_plan *novu_prepare_generic_once(struct _SPI_plan **slot, const char *sql, int nargs, Oid *argtypes);
extern int *novu_pin_begin(int *pin);
extern void novu_pin_end(int *outer, int pin);

/* Limits fixed by the contract (DESIGN.md section 3) */
#define NOVU_MAX_ID_LEN				255
#define NOVU_MAX_PAYLOAD_BYTES		(256 * 1024)
#define NOVU_MAX_BULK_IDENTIFY		500
#define NOVU_MAX_BULK_TRIGGER		100

/*
 * Size limits of every jsonb input, as JSON text (DESIGN 5: bounded input).
 * The worker holds at most a payload, overrides, actor and a subscriber's
 * profile per message, so one trigger can never exhaust its memory.
 */
#define NOVU_MAX_OVERRIDES_BYTES	(64 * 1024)
#define NOVU_MAX_ACTOR_BYTES		(16 * 1024)
#define NOVU_MAX_TO_BYTES			(1024 * 1024)
#define NOVU_MAX_RECIPIENTS			1000
#define NOVU_MAX_PROFILE_BYTES		(64 * 1024)
#define NOVU_MAX_CREDENTIALS_BYTES	(64 * 1024)
#define NOVU_MAX_STEPS_BYTES		(256 * 1024)
#define NOVU_MAX_JSON_DEPTH			64

#endif							/* NOVU_H */
