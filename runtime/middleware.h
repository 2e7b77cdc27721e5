/*
 * middleware.h - the router's stages (log, authn, authz, rate, validate).
 *
 * A stage is a `before` function that sees every message before its handler
 * and may pass it (return 0), change it (replace call->msg with a private
 * copy it owns: the router releases the old one) or reject it (return a
 * negative TW_E* code and set call->problem). An optional `after` function
 * sees the outcome (status, microseconds) once the handler returned.
 *
 * Stages are registered by name in one table (middleware.c); the chain is an
 * ordered list of names from the configuration ("middleware" in the config
 * file; default: log, authn, authz, rate, validate). Adding a stage is one
 * function and one table line.
 */
#ifndef TW_MIDDLEWARE_H
#define TW_MIDDLEWARE_H

#include "conn.h"
#include "twin_ops.h"

typedef struct tw_mw_call {
    tw_runtime *rt;
    tw_conn *conn;
    tw_msg *msg;      /* the message; a stage may swap it (tw_mw_own) */
    tw_msg *orig;     /* the caller's message (borrowed, never released here) */
    json_t *problem;  /* set by a rejecting stage */
    int status;       /* HTTP-like outcome: 200, 202 queued, 4xx, 5xx */
    int64_t start_us; /* tw_mono_us() when routing began */
    /* Filled by the stages that resolve the addressed Thing, reused by the
     * handlers so a message looks its Thing up once. */
    char twin_id[TW_THING_ID_MAX]; /* the twin id the message is about, or "" */
    bool local_thing;              /* the sender is the Thing's own agent (its local id) */
    bool aff_found;                /* aff holds the affordance lookup of twin_id/name */
    tw_aff_info aff;
} tw_mw_call;

typedef struct tw_middleware {
    const char *name;
    int (*before)(void *state, tw_mw_call *call);
    void (*after)(void *state, const tw_mw_call *call); /* may be NULL */
    /* Creates the stage's state from its config section (may be NULL). */
    int (*init)(tw_runtime *rt, json_t *config, void **state);
    void (*fini)(void *state);
} tw_middleware;

/*
 * Makes call->msg modifiable: when the caller holds the only reference and it
 * is not encoded yet it is changed in place (the router's caller gave it up
 * to the router); otherwise it is replaced by a private copy. Returns
 * TW_ENOMEM when the copy fails.
 */
int tw_mw_own(tw_mw_call *call);

/* Looks a stage up by name in the table of known stages. */
const tw_middleware *tw_middleware_find(const char *name);

/* The built-in chain as configured: builds state for each named stage. */
typedef struct tw_mw_chain tw_mw_chain;
/* names: JSON array of stage names or NULL for the default chain. */
int tw_mw_chain_new(tw_runtime *rt, json_t *names, json_t *config, tw_mw_chain **out, char *err,
                    size_t errlen);
void tw_mw_chain_free(tw_mw_chain *ch);
/* Runs `before` of each stage in order; stops at the first rejection. */
int tw_mw_chain_before(tw_mw_chain *ch, tw_mw_call *call);
/* Runs `after` of each stage in reverse order. */
void tw_mw_chain_after(tw_mw_chain *ch, const tw_mw_call *call);

#endif
