/*
 * conn.h - connections and the registry that finds them.
 *
 * A tw_conn is one client connection of one binding (an SSE stream, an nng
 * pipe, a single HTTP request). The binding creates it with tw_conn_new(),
 * authenticates it with tw_conn_set_identity() and ends it with
 * tw_conn_close() when the peer goes away. The registry indexes connections
 * by client id (a client may have several) and keeps their subscriptions:
 * (kind, thing, name) patterns where thing and name may be "*".
 *
 * Connections are refcounted because the router may still hold one while its
 * binding closes it: tw_conn_send() on a closed connection returns
 * TW_ECLOSED. All functions are thread-safe.
 */
#ifndef TW_CONN_H
#define TW_CONN_H

#include "binding.h"

typedef enum {
    TW_SUB_EVENT = 0,    /* subscribeevent */
    TW_SUB_PROPERTY = 1, /* observeproperty */
} tw_sub_kind;

/* Creates and registers an unauthenticated connection (one reference, held
 * by the caller until tw_conn_close + tw_conn_unref). bdata is the binding's
 * own per-connection pointer. remote is the peer address for logs. */
tw_conn *tw_conn_new(tw_runtime *rt, tw_binding *b, void *bdata, const char *remote);
/*
 * Marks a connection as ephemeral (call before tw_conn_set_identity): one
 * HTTP request that only waits for the answer to its own request. It gets
 * the responses to what it sent, but it is never a delivery target for
 * requests to an agent, notifications or a client's other messages, and it
 * does not make an agent "online".
 */
void tw_conn_set_ephemeral(tw_conn *c);
tw_conn *tw_conn_ref(tw_conn *c);
void tw_conn_unref(tw_conn *c);
/* Unregisters: drops subscriptions; later sends fail with TW_ECLOSED. */
void tw_conn_close(tw_conn *c);

/*
 * Authenticates the connection. When the identity is an agent or service,
 * the runtime starts draining its queued actions to it. Returns TW_EAUTH for
 * an expired identity.
 */
int tw_conn_set_identity(tw_conn *c, const tw_identity *id);
/* NULL while unauthenticated. */
const tw_identity *tw_conn_identity(const tw_conn *c);
tw_binding *tw_conn_binding(const tw_conn *c);
void *tw_conn_bdata(const tw_conn *c);
const char *tw_conn_remote(const tw_conn *c);
uint64_t tw_conn_serial(const tw_conn *c); /* unique per process, for logs */
bool tw_conn_closed(const tw_conn *c);

/* Pushes a message to this connection through its binding (non-blocking). */
int tw_conn_send(tw_conn *c, tw_msg *m);

/* Subscriptions; thing and name may be "*" (NULL means "*"). */
int tw_conn_subscribe(tw_conn *c, tw_sub_kind kind, const char *thing, const char *name);
int tw_conn_unsubscribe(tw_conn *c, tw_sub_kind kind, const char *thing, const char *name);

/* Calls fn for every open connection of client_id; returns how many. */
typedef void (*tw_conn_fn)(void *arg, tw_conn *c);
int tw_conns_of_client(tw_runtime *rt, const char *client_id, tw_conn_fn fn, void *arg);
/* Sends m to every connection subscribed to (kind, thing, name); returns how many. */
int tw_conns_fanout(tw_runtime *rt, tw_sub_kind kind, const char *thing, const char *name,
                    tw_msg *m);
/* Asks the bindings to close every connection of a session (logout). */
int tw_conns_close_session(tw_runtime *rt, const char *session_id);
/* The same for every connection of client_id whose session id starts with
 * prefix ("x509-": those a client certificate authenticated). */
int tw_conns_close_client(tw_runtime *rt, const char *client_id, const char *prefix);
/* Open connections, all bindings or one (name NULL: all). */
int tw_conns_count(tw_runtime *rt, const char *binding_name);

#endif
