/*
 * router.h - every message from every binding goes through tw_router_handle().
 *
 * The router runs the configured middleware chain (middleware.h) and then the
 * handler for the message kind (DESIGN.md section 1):
 *   notifications from agents -> value store -> fan-out to subscribers
 *   invokeaction / writeproperty -> live agent connection, or durable queue
 *   safe actions (RPC) and service calls -> live agent, or fail 503
 *   reads and queries -> the twin and the action store
 *   responses from agents -> action status -> the sender (live or inbox)
 * Replies go back through tw_conn_send() on the same connection. Nothing here
 * blocks on an fsync: a queued action is acknowledged from the store's commit
 * callback.
 *
 * In-process services (the built-in authn and directory Things) are Things
 * whose actions are answered by a C function instead of an agent.
 *
 * tw_router_handle() is thread-safe and may be called from any binding
 * thread. It takes its own reference to msg when it needs to keep it. When
 * the caller holds the only reference and has not encoded msg, the router may
 * change it in place (stamp senderID, rewrite thingID): a binding hands the
 * message over and releases it afterwards, it does not reuse it.
 */
#ifndef TW_ROUTER_H
#define TW_ROUTER_H

#include "conn.h"
#include "middleware.h"

/* Handles one message from conn. Never fails: problems are sent back. */
void tw_router_handle(tw_runtime *rt, tw_conn *c, tw_msg *m);

/*
 * A read that a binding answers itself (from bytes it keeps, without a
 * response message), with the same checks and counts as tw_router_handle():
 * tw_router_admit() resolves m's Thing into call and runs the chain's
 * `before` stages on m (borrowed; as in tw_router_handle() a stage changes
 * m in place when the caller holds its only reference, so a caller that
 * reuses m holds a second one). 0: the binding reads call->msg's value
 * and answers. Otherwise the rejection's code, with call->problem and
 * call->status set: the binding answers with the problem. Either way it
 * then calls tw_router_admit_done() with the status it answered (0 keeps
 * call->status), which runs the `after` stages, counts the request, its
 * outcome, latency and answer for tw_router_get_stats() and releases what
 * call holds. Thread-safe like tw_router_handle().
 */
int tw_router_admit(tw_runtime *rt, tw_conn *c, tw_msg *m, tw_mw_call *call);
void tw_router_admit_done(tw_mw_call *call, int status);

/*
 * An in-process service: fn answers an invokeaction addressed to twin_id.
 * Return 0 with *output set (new ref, may be NULL) or a TW_E* code with
 * *problem set (new ref). Called on the caller's thread.
 */
typedef int (*tw_service_fn)(void *ctx, tw_conn *c, const tw_msg *req, json_t **output,
                             json_t **problem);
int tw_router_add_service(tw_runtime *rt, const char *twin_id, tw_service_fn fn, void *ctx);

/* Sends a notification about an action to its sender: to every live
 * connection of sender_id, or into its inbox when it has none. */
void tw_router_notify_client(tw_runtime *rt, const char *client_id, tw_msg *m);

/* Replays c's client inbox entries with seq > since to c (each message
 * carries its "inboxSeq"), then forgets entries <= since: the client saw
 * them. Bindings call this when a client reconnects with a cursor (the login
 * operation does it for `input.since`). */
void tw_router_replay_inbox(tw_runtime *rt, tw_conn *c, int64_t since);

/* Called by the runtime when an agent (or service) gets its first live
 * connection: drains its queue to it. */
void tw_router_agent_online(tw_runtime *rt, const char *agent_id);

/* A Thing left the directory (whoever deleted it, or its expiry): its
 * unfinished actions fail and their senders are told. Non-blocking: the
 * sweeper thread does the work soon after, so it may be called under locks. */
void tw_router_thing_deleted(tw_runtime *rt, const char *twin_id);

/* Called by the sweeper: expires queued actions and notifies senders. */
void tw_router_sweep(tw_runtime *rt);

/* Counters for /metrics. */
typedef struct tw_router_stats {
    uint64_t by_type[4];            /* indexed by tw_msg_type */
    uint64_t rejected_by_status[6]; /* 400,401,403,404,429,other */
    uint64_t delivered;             /* messages handed to connections */
    uint64_t latency_hist[12];      /* <=10us, 20, 50, 100, 200, 500, 1ms, 2, 5, 10, 100, +inf */
} tw_router_stats;
void tw_router_get_stats(tw_runtime *rt, tw_router_stats *out);

#endif
