/*
 * loopback.h - an in-process binding for tests and benchmarks.
 *
 * A tw_loop_conn is a connection whose peer is the test itself: messages it
 * injects go through the real router, and everything the runtime sends it is
 * captured in a queue the test reads with tw_loop_next(). In discard mode
 * the connection encodes each message (as a real binding would) and only
 * counts it, for benchmarks.
 *
 * All functions are thread-safe. Connections are owned by the caller and
 * freed with tw_loop_close(); the binding itself is owned by the runtime.
 */
#ifndef TW_LOOPBACK_H
#define TW_LOOPBACK_H

#include "runtime/runtime.h"
#include "runtime/conn.h"

typedef struct tw_loop tw_loop;
typedef struct tw_loop_conn tw_loop_conn;

/* Registers a loopback binding with rt. */
int tw_loop_new(tw_runtime *rt, tw_loop **out);

tw_loop_conn *tw_loop_connect(tw_loop *l, const char *remote);
/* Sets the identity directly (what a binding does after verifying a token). */
int tw_loop_identify(tw_loop_conn *c, const char *client_id, tw_role role);
tw_conn *tw_loop_conn_get(tw_loop_conn *c);

/* Injects a message (borrowed) as if it came from the peer. */
void tw_loop_inject(tw_loop_conn *c, tw_msg *m);
/* Parses json and injects it; a parse failure is answered like a binding
 * would: the problem is captured as an error response. Returns the parse rc. */
int tw_loop_inject_json(tw_loop_conn *c, const char *json);

/* The next captured message (one reference for the caller), waiting up to
 * timeout_ms; NULL on timeout. */
tw_msg *tw_loop_next(tw_loop_conn *c, int timeout_ms);
/* Captured messages not yet read. */
int tw_loop_pending(tw_loop_conn *c);
/* Responder mode: fn is called with each message the runtime sends to this
 * connection, in the sending thread, instead of queueing it (a peer that
 * answers at once, even before the runtime has finished sending). */
typedef void (*tw_loop_fn)(void *arg, tw_loop_conn *c, tw_msg *m);
void tw_loop_set_responder(tw_loop_conn *c, tw_loop_fn fn, void *arg);

/* Discard mode: count and drop what arrives (after encoding it). */
void tw_loop_set_discard(tw_loop_conn *c, bool discard);
uint64_t tw_loop_received(tw_loop_conn *c);
/* Whether the runtime asked the binding to close this connection. */
bool tw_loop_was_closed(tw_loop_conn *c);

void tw_loop_close(tw_loop_conn *c);

#endif
