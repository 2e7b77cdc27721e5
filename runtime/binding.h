/*
 * binding.h - how a protocol binding plugs into the runtime.
 *
 * A binding (HTTP, nng, the in-process loopback of the tests) registers a
 * tw_binding_ops table with tw_runtime_add_binding(). The runtime calls it to
 * start and stop, to push a message to one of the binding's connections, to
 * close a connection (session revoked) and to add the binding's forms to a
 * twin TD. The runtime never includes a binding's header; bindings reach the
 * runtime only through router.h, conn.h and runtime.h.
 *
 * send() is called from any thread (router callers, the store's writer
 * thread, the sweeper) and must not block: it queues the message on the
 * connection (taking its own reference) and returns TW_EFULL when the
 * connection's bounded queue is full, after applying its stated overflow
 * policy (typically: close the connection).
 */
#ifndef TW_BINDING_H
#define TW_BINDING_H

#include "msg.h"

typedef struct tw_binding tw_binding;
typedef struct tw_conn tw_conn;
typedef struct tw_runtime tw_runtime;

typedef struct tw_binding_ops {
    const char *name; /* "http", "nng", "loopback" */
    int (*start)(tw_binding *b);
    void (*stop)(tw_binding *b); /* stop accepting, close connections */
    int (*send)(tw_binding *b, tw_conn *c, tw_msg *m);
    void (*close_conn)(tw_binding *b, tw_conn *c); /* may be NULL */
    /* Adds this binding's forms (Thing level and per affordance) to a twin
     * TD whose id is already the twin id. May be NULL. */
    int (*add_forms)(tw_binding *b, json_t *twin_td);
    void (*destroy)(tw_binding *b); /* frees impl; after stop */
} tw_binding_ops;

struct tw_binding {
    const tw_binding_ops *ops;
    void *impl;
    tw_runtime *rt;
};

#endif
