/*
 * jsonb_util.h
 *		Small helpers over PostgreSQL's jsonb API used across the extension.
 */
#ifndef NOVU_JSONB_UTIL_H
#define NOVU_JSONB_UTIL_H

#include "utils/jsonb.h"

extern bool jsonb_container_get(JsonbContainer *container, const char *key, JsonbValue *result);
extern char *jsonb_container_get_string(JsonbContainer *container, const char *key);
extern bool jsonb_container_get_int32(JsonbContainer *container, const char *key, int32 *result);
extern void jsonb_push_key(JsonbParseState **state, const char *key);
extern void jsonb_push_string(JsonbParseState **state, const char *key, const char *value);
extern void jsonb_push_bool(JsonbParseState **state, const char *key, bool value);
extern Jsonb *jsonb_empty_object(void);
extern Jsonb *jsonb_parse_or_null(const char *text, int len);
extern Jsonb *jsonb_parse_object_or_null(const char *text, int len);
extern void jsonb_push_jsonb(JsonbParseState **state, const char *key, Jsonb *value);
extern Jsonb *jsonb_deep_merge(Jsonb *a, Jsonb *b);
extern char *jsonb_value_to_text(JsonbValue *v);
extern void novu_check_json_size(Jsonb *value, const char *field, int max_bytes);

/* trigger.c */
extern void novu_check_identifier(const char *value, const char *field);

#endif							/* NOVU_JSONB_UTIL_H */
