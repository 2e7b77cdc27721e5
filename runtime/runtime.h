/*
 * runtime.h - the tw_runtime: one running twind, passed down to every module
 * (there is no global mutable state).
 *
 * It owns the store, the action queue, the connection registry, the router's
 * middleware chain, the authn/authz state and the bindings, and holds the
 * twin through its ops table. twind's main (runtime/main.c) is the only place
 * that knows every module and wires them: it creates the runtime, sets the
 * twin, adds the bindings and starts it.
 *
 * Lifecycle: tw_runtime_new -> tw_runtime_set_twin / _add_binding /
 * _set_authn -> tw_runtime_start -> ... -> tw_runtime_stop -> tw_runtime_free.
 * Accessors are thread-safe once started.
 */
#ifndef TW_RUNTIME_H
#define TW_RUNTIME_H

#include "binding.h"
#include "config.h"
#include "queue.h"
#include "twin_ops.h"

typedef struct tw_authn tw_authn;
typedef struct tw_authz tw_authz;

/* Creates a runtime on cfg (borrowed; must outlive the runtime): opens the
 * data directory (locked against a second instance: TW_EBUSY) and store. */
int tw_runtime_new(const tw_config *cfg, tw_runtime **out, char *err, size_t errlen);
void tw_runtime_free(tw_runtime *rt);

void tw_runtime_set_twin(tw_runtime *rt, const tw_twin_ops *ops, void *ctx);
void tw_runtime_set_authn(tw_runtime *rt, tw_authn *an, tw_authz *az);
int tw_runtime_add_binding(tw_runtime *rt, const tw_binding_ops *ops, void *impl, tw_binding **out);

/* Builds the middleware chain, starts the sweeper and every binding. */
int tw_runtime_start(tw_runtime *rt, char *err, size_t errlen);
/* Stops bindings (no new connections), the sweeper, flushes the store. */
void tw_runtime_stop(tw_runtime *rt);

const tw_config *tw_runtime_config(const tw_runtime *rt);
tw_store *tw_runtime_store(const tw_runtime *rt);
tw_queue *tw_runtime_queue(const tw_runtime *rt);
tw_authn *tw_runtime_authn(const tw_runtime *rt);
tw_authz *tw_runtime_authz(const tw_runtime *rt);
/* The twin ops and their context (ops NULL until set). */
const tw_twin_ops *tw_runtime_twin(const tw_runtime *rt, void **ctx);

/* Asks every binding to add its forms to a twin TD. */
int tw_runtime_add_forms(tw_runtime *rt, json_t *twin_td);
/* Bindings, for /metrics and forms. */
int tw_runtime_bindings(tw_runtime *rt, tw_binding ***list, int *n);

#endif
