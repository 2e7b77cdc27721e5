/*
 * twin_ops.h - what the runtime asks of the digital twin, without including
 * twin/. The twin module (twin/) implements this table; tests may use the
 * small in-memory implementation in runtime/twin_mem.c.
 *
 * Ids: a twin id is "dtw:{agentID}:{thingID}" (tw_twin_id_make / _split).
 * Agents speak their own thing ids; consumers only see twin ids. The router
 * rewrites between the two.
 *
 * Every function must be thread-safe: the router calls them from binding
 * threads concurrently. Returned JSON is a new reference owned by the caller.
 */
#ifndef TW_TWIN_OPS_H
#define TW_TWIN_OPS_H

#include "msg.h"

typedef enum {
    TW_AFF_PROPERTY = 0,
    TW_AFF_ACTION = 1,
    TW_AFF_EVENT = 2,
} tw_aff_kind;

/* What the router needs to know about one affordance of a twin. */
typedef struct tw_aff_info {
    char agent_id[TW_ID_MAX]; /* owner of the Thing ("" for a directory-only TD) */
    bool safe;                /* action: safe/idempotent RPC, never queued */
    bool queueable;           /* action/property write may be queued offline */
    int64_t max_ttl_ms;       /* queue TTL cap from the TD; 0 = runtime default */
    bool read_only;           /* property: readOnly */
} tw_aff_info;

typedef struct tw_twin_ops {
    /* TW_ENOTFOUND for an unknown thing or affordance. For TW_AFF_* lookups
     * name may be NULL to ask only whether the Thing exists (fills agent_id). */
    int (*lookup)(void *ctx, const char *twin_id, tw_aff_kind kind, const char *name,
                  tw_aff_info *out);
    /* An agent notification (event or property value) for the value store.
     * value is borrowed. *changed tells whether a property value differed.
     * declared: the caller has just found this affordance with lookup() (the
     * validate stage), so the store need not look for it again. */
    int (*store_value)(void *ctx, const char *twin_id, tw_aff_kind kind, const char *name,
                       bool declared, json_t *value, int64_t ts_ms, bool *changed);
    /* readproperty, readallproperties, readmultipleproperties, readevent,
     * readallevents: *output is the response's `output`. */
    int (*read)(void *ctx, const tw_msg *req, json_t **output, json_t **problem);
    /* updatething from an agent: validates and stores td (borrowed), derives
     * the twin TD. *twin_id (malloc'd) names it. */
    int (*update_thing)(void *ctx, const char *agent_id, json_t *td, char **twin_id,
                        json_t **problem);
    /* deletething: agent_id NULL means an admin (any thing). */
    int (*delete_thing)(void *ctx, const char *agent_id, const char *twin_id, json_t **problem);
} tw_twin_ops;

/* "dtw:{agent}:{thing}" into out (TW_ETOOBIG if it does not fit). */
int tw_twin_id_make(const char *agent_id, const char *thing_id, char *out, size_t n);
/* Splits a twin id; returns TW_EINVAL if it is not one. The out strings point
 * into buf, which must hold strlen(twin_id)+1 bytes. */
int tw_twin_id_split(const char *twin_id, char *buf, const char **agent_id, const char **thing_id);

#endif
