/*
 * workflow_cache.h
 *		Each backend's cache of workflow states for the trigger path
 *		(workflow_cache.c).
 */
#ifndef NOVU_WORKFLOW_CACHE_H
#define NOVU_WORKFLOW_CACHE_H

/* What a trigger needs to know of its workflow (a missing one is an error). */
typedef enum WorkflowState
{
	WORKFLOW_OK,
	WORKFLOW_NOT_ACTIVE,
	WORKFLOW_NO_STEPS
} WorkflowState;

extern bool novu_workflow_cache_get(const char *workflow_id, WorkflowState *state);
extern void novu_workflow_cache_put(const char *workflow_id, WorkflowState state);

#endif							/* NOVU_WORKFLOW_CACHE_H */
