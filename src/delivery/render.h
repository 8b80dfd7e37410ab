/*
 * render.h
 *		Rendering of claimed messages (render.c).
 */
#ifndef NOVU_RENDER_H
#define NOVU_RENDER_H

#include "utils/hsearch.h"

#include "queue/queue.h"

#define RENDER_STEP_KEY_LEN 400

typedef struct RenderCache RenderCache;

extern RenderCache *render_cache_create(void);
extern bool render_message(RenderCache *cache, ClaimedRow *r, char **error);
extern bool render_in_app(RenderCache *cache, ClaimedRow *r, char **subject, char **content, char **url,
						  char **error);

#endif							/* NOVU_RENDER_H */
