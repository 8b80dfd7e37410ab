/*
 * outbox.h
 *		The outbox row of a trigger or a broadcast (outbox.c).
 */
#ifndef NOVU_OUTBOX_H
#define NOVU_OUTBOX_H

#include "utils/array.h"
#include "utils/jsonb.h"

extern bool novu_outbox_insert(const char *transaction_id, bool generated, const char *kind,
							   const char *workflow_id, ArrayType *recipients, ArrayType *topics,
							   Jsonb *payload, Jsonb *overrides, Jsonb *actor);

#endif							/* NOVU_OUTBOX_H */
