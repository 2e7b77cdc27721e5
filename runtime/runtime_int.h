/*
 * runtime_int.h - the inside of tw_runtime, shared by the runtime core's own
 * files (runtime.c, conn.c, router.c, handlers, middleware.c). No module
 * outside runtime/ includes this header: they use the accessors of
 * runtime.h.
 */
#ifndef TW_RUNTIME_INT_H
#define TW_RUNTIME_INT_H

#include "hmap.h"
#include "middleware.h"
#include "router.h"
#include "runtime.h"

#include <pthread.h>
#include <stdatomic.h>

#define TW_MAX_BINDINGS 8

/* Subscriptions and connections (conn.c). */
typedef struct tw_sub tw_sub;
typedef struct tw_subvec {
    tw_sub **v;
    size_t n, cap;
} tw_subvec;

typedef struct tw_registry {
    pthread_rwlock_t lock;
    tw_hmap by_client;     /* client id -> tw_connvec* */
    tw_hmap subs_by_thing; /* thing id -> tw_subvec* */
    tw_subvec subs_any;    /* thing "*" */
    atomic_int nconns;
    atomic_int nconns_by_binding[TW_MAX_BINDINGS];
} tw_registry;

/* In-process services (router.c). */
typedef struct tw_service {
    tw_service_fn fn;
    void *ctx;
} tw_service;

/* Agents draining their queue (router.c): in-flight window per agent. */
typedef struct tw_drain {
    int inflight;
    int64_t last_seq;
    bool running;
    bool more;
} tw_drain;

struct tw_runtime {
    const tw_config *cfg;
    int lock_fd;
    tw_store *store;
    tw_queue *queue;
    tw_authn *authn;
    tw_authz *authz;
    const tw_twin_ops *twin;
    void *twin_ctx;
    tw_binding *bindings[TW_MAX_BINDINGS];
    int nbindings;
    tw_mw_chain *chain;
    tw_registry reg;

    pthread_rwlock_t services_lock;
    tw_hmap services; /* twin id -> tw_service* */

    pthread_mutex_t drain_lock;
    tw_hmap drains; /* agent id -> tw_drain* */

    /* live actions: action id -> agent id of requests delivered and unanswered */
    pthread_mutex_t live_lock;
    tw_hmap live; /* correlation key "agent\ncorrelation" -> tw_live* */

    pthread_t sweeper;
    pthread_mutex_t sweep_lock;
    pthread_cond_t sweep_cond;
    bool sweeping, stopping;
    tw_hmap kicks; /* agent ids whose queue the sweeper thread should drain */
    tw_hmap gone;  /* twin ids deleted: the sweeper fails their actions */

    /* stats */
    atomic_uint_fast64_t st_type[4];
    atomic_uint_fast64_t st_rejected[6];
    atomic_uint_fast64_t st_delivered;
    atomic_uint_fast64_t st_latency[12];
};

int tw_registry_init(tw_registry *r);
/* Asks the sweeper thread to drain agent_id's queue soon (from threads that
 * must not block, such as the store's writer). */
void tw_runtime_kick_drain(tw_runtime *rt, const char *agent_id);
void tw_router_drain(tw_runtime *rt, const char *agent_id);
void tw_actions_thing_deleted(tw_runtime *rt, const char *twin_id);
void tw_registry_fini(tw_registry *r);

#endif
