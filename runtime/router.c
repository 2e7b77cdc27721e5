/*
 * router.c - resolves what a message is about, runs the middleware chain and
 * dispatches to the handler of its kind (handlers live in actions.c,
 * session.c and here for the small ones).
 *
 * Thing ids: consumers address twins ("dtw:agent:thing"); an agent speaks
 * its own thing ids in what it publishes (notifications, responses,
 * updatething, deletething). The router resolves both to the twin id once,
 * before the chain, so every stage and handler sees the same address.
 */
#include "router_int.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

static bool speaks_local_ids(const tw_identity *id, const tw_msg *m)
{
    if (!id || (id->role != TW_ROLE_AGENT && id->role != TW_ROLE_SERVICE)) return false;
    tw_op op = tw_msg_get_op(m);
    return tw_msg_get_type(m) != TW_TYPE_REQUEST || op == TW_OP_UPDATETHING ||
           op == TW_OP_DELETETHING;
}

static void resolve(tw_mw_call *call)
{
    const char *thing = tw_msg_thing(call->msg);
    const tw_identity *id = tw_conn_identity(call->conn);
    call->twin_id[0] = '\0';
    if (!thing || strcmp(thing, "*") == 0) return;
    if (speaks_local_ids(id, call->msg)) {
        if (tw_twin_id_make(id->client_id, thing, call->twin_id, sizeof call->twin_id) == 0)
            call->local_thing = true;
        else
            call->twin_id[0] = '\0';
    } else {
        tw_strlcpy(call->twin_id, thing, sizeof call->twin_id);
    }
}

void tw_router_reply(tw_mw_call *call, tw_msg *resp)
{
    if (!resp) return;
    tw_conn_send(call->conn, resp);
    tw_msg_unref(resp);
}

void tw_router_reply_error(tw_mw_call *call, json_t *problem)
{
    json_t *st = json_object_get(problem, "status");
    call->status = json_is_integer(st) ? (int)json_integer_value(st) : 500;
    if (tw_msg_get_type(call->msg) != TW_TYPE_REQUEST) {
        tw_log_debug("router", "dropped %s %s from %s: %s",
                     tw_msg_type_name(tw_msg_get_type(call->msg)),
                     tw_op_name(tw_msg_get_op(call->msg)), tw_conn_remote(call->conn),
                     json_string_value(json_object_get(problem, "detail")));
        json_decref(problem);
        return;
    }
    tw_router_reply(call, tw_msg_new_error(call->msg, problem));
}

void tw_router_reply_output(tw_mw_call *call, json_t *output)
{
    tw_msg *r = tw_msg_new_response(call->msg, TW_STATUS_COMPLETED);
    if (r && output)
        tw_msg_set(r, "output", output);
    else
        json_decref(output);
    tw_router_reply(call, r);
}

static void count_outcome(tw_runtime *rt, const tw_mw_call *call)
{
    tw_msg_type t = tw_msg_get_type(call->msg);
    if ((unsigned)t < 4) atomic_fetch_add_explicit(&rt->st_type[t], 1, memory_order_relaxed);
    if (call->status >= 400) {
        int i = call->status == 400   ? 0
                : call->status == 401 ? 1
                : call->status == 403 ? 2
                : call->status == 404 ? 3
                : call->status == 429 ? 4
                                      : 5;
        atomic_fetch_add_explicit(&rt->st_rejected[i], 1, memory_order_relaxed);
    }
    static const int64_t bounds[11] = {10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 100000};
    int64_t us = tw_mono_us() - call->start_us;
    int b = 0;
    while (b < 11 && us > bounds[b])
        b++;
    atomic_fetch_add_explicit(&rt->st_latency[b], 1, memory_order_relaxed);
}

/* ---- small handlers ----------------------------------------------------- */

static void handle_subscription(tw_mw_call *call)
{
    tw_msg *m = call->msg;
    tw_op op = tw_msg_get_op(m);
    const char *thing = call->twin_id[0] ? call->twin_id : "*";
    const char *name = tw_msg_name(m) ? tw_msg_name(m) : "*";
    int rc;
    switch (op) {
    case TW_OP_SUBSCRIBEEVENT:
        rc = tw_conn_subscribe(call->conn, TW_SUB_EVENT, thing, name);
        break;
    case TW_OP_SUBSCRIBEALLEVENTS:
        rc = tw_conn_subscribe(call->conn, TW_SUB_EVENT, thing, "*");
        break;
    case TW_OP_OBSERVEPROPERTY:
        rc = tw_conn_subscribe(call->conn, TW_SUB_PROPERTY, thing, name);
        break;
    case TW_OP_OBSERVEALLPROPERTIES:
        rc = tw_conn_subscribe(call->conn, TW_SUB_PROPERTY, thing, "*");
        break;
    case TW_OP_UNSUBSCRIBEEVENT:
        rc = tw_conn_unsubscribe(call->conn, TW_SUB_EVENT, thing, name);
        break;
    case TW_OP_UNSUBSCRIBEALLEVENTS:
        rc = tw_conn_unsubscribe(call->conn, TW_SUB_EVENT, thing, "*");
        break;
    case TW_OP_UNOBSERVEPROPERTY:
        rc = tw_conn_unsubscribe(call->conn, TW_SUB_PROPERTY, thing, name);
        break;
    default:
        rc = tw_conn_unsubscribe(call->conn, TW_SUB_PROPERTY, thing, "*");
        break;
    }
    if (rc) {
        tw_router_reply_error(call, tw_problem_from_error(rc, "subscription failed", NULL));
        return;
    }
    tw_router_reply_output(call, NULL);
}

static void handle_read(tw_mw_call *call)
{
    tw_runtime *rt = call->rt;
    if (!rt->twin) {
        tw_router_reply_error(call, tw_problem_from_error(TW_EUNSUPPORTED, "no value store", NULL));
        return;
    }
    json_t *output = NULL, *problem = NULL;
    tw_msg *req = call->msg;
    int rc = rt->twin->read(rt->twin_ctx, req, &output, &problem);
    if (rc) {
        tw_router_reply_error(call, problem ? problem : tw_problem_from_error(rc, NULL, NULL));
        return;
    }
    tw_router_reply_output(call, output);
}

static void handle_thing(tw_mw_call *call)
{
    tw_runtime *rt = call->rt;
    const tw_identity *id = tw_conn_identity(call->conn);
    json_t *problem = NULL;
    if (!rt->twin) {
        tw_router_reply_error(call, tw_problem_from_error(TW_EUNSUPPORTED, "no directory", NULL));
        return;
    }
    if (tw_msg_get_op(call->msg) == TW_OP_UPDATETHING) {
        char *twin_id = NULL;
        int rc = rt->twin->update_thing(rt->twin_ctx, id->client_id, tw_msg_get(call->msg, "input"),
                                        &twin_id, &problem);
        if (rc) {
            tw_router_reply_error(call, problem ? problem : tw_problem_from_error(rc, NULL, NULL));
            return;
        }
        tw_router_reply_output(call, json_pack("{s:s}", "thingID", twin_id));
        free(twin_id);
        return;
    }
    bool owner = call->local_thing;
    int rc =
        rt->twin->delete_thing(rt->twin_ctx, owner ? id->client_id : NULL, call->twin_id, &problem);
    if (rc) {
        tw_router_reply_error(call, problem ? problem : tw_problem_from_error(rc, NULL, NULL));
        return;
    }
    tw_actions_thing_deleted(rt, call->twin_id);
    tw_router_reply_output(call, json_pack("{s:s}", "thingID", call->twin_id));
}

static void handle_notification(tw_mw_call *call)
{
    tw_runtime *rt = call->rt;
    tw_op op = tw_msg_get_op(call->msg);
    if (op == TW_OP_INVOKEACTION) { /* action progress from an agent */
        tw_actions_agent_answer(call);
        return;
    }
    tw_sub_kind kind;
    tw_aff_kind akind;
    if (op == TW_OP_SUBSCRIBEEVENT) {
        kind = TW_SUB_EVENT;
        akind = TW_AFF_EVENT;
    } else if (op == TW_OP_OBSERVEPROPERTY) {
        kind = TW_SUB_PROPERTY;
        akind = TW_AFF_PROPERTY;
    } else {
        tw_router_reply_error(call, tw_problem_new(400, "invalid", "invalid input",
                                                   "notifications are events (subscribeevent), "
                                                   "properties (observeproperty) or action "
                                                   "progress (invokeaction)",
                                                   "operation"));
        return;
    }
    if (!call->local_thing) {
        tw_router_reply_error(call, tw_problem_new(403, "forbidden", "forbidden",
                                                   "only a Thing's agent publishes its values",
                                                   "thingID"));
        return;
    }
    const char *name = tw_msg_name(call->msg);
    json_t *value = tw_msg_get(call->msg, "value");
    bool changed = true;
    if (rt->twin) {
        /* (the validate stage's lookup, when it ran, found this affordance) */
        int rc = rt->twin->store_value(rt->twin_ctx, call->twin_id, akind, name, call->aff_found,
                                       value ? value : json_null(), tw_now_ms(), &changed);
        if (rc) {
            tw_router_reply_error(call,
                                  tw_problem_from_error(rc, "storing the value failed", NULL));
            return;
        }
    }
    /* Consumers see the twin id. The binding normally hands us the only
     * reference, so this rewrites in place instead of copying. */
    if (tw_mw_own(call)) return;
    tw_msg_set_str(call->msg, "thingID", call->twin_id);
    if (!changed) tw_msg_set(call->msg, "unchanged", json_true());
    tw_conns_fanout(rt, kind, call->twin_id, name, call->msg);
}

static void dispatch(tw_mw_call *call)
{
    tw_msg *m = call->msg;
    switch (tw_msg_get_type(m)) {
    case TW_TYPE_NOTIFICATION:
        handle_notification(call);
        return;
    case TW_TYPE_RESPONSE:
        tw_actions_agent_answer(call);
        return;
    default:
        break;
    }
    switch (tw_msg_get_op(m)) {
    case TW_OP_PING:
        tw_router_reply_output(call, json_string("pong"));
        return;
    case TW_OP_LOGIN:
    case TW_OP_REFRESH:
    case TW_OP_LOGOUT:
        tw_session_handle(call);
        return;
    case TW_OP_UPDATETHING:
    case TW_OP_DELETETHING:
        handle_thing(call);
        return;
    case TW_OP_INVOKEACTION:
    case TW_OP_WRITEPROPERTY:
        tw_actions_request(call);
        return;
    case TW_OP_QUERYACTION:
    case TW_OP_QUERYALLACTIONS:
    case TW_OP_CANCELACTION:
        tw_actions_query(call);
        return;
    case TW_OP_READPROPERTY:
    case TW_OP_READALLPROPERTIES:
    case TW_OP_READMULTIPLEPROPERTIES:
    case TW_OP_READEVENT:
    case TW_OP_READALLEVENTS:
        handle_read(call);
        return;
    default:
        handle_subscription(call);
        return;
    }
}

void tw_router_handle(tw_runtime *rt, tw_conn *c, tw_msg *m)
{
    tw_mw_call call;
    call.rt = rt;
    call.conn = c;
    call.msg = call.orig = m;
    call.problem = NULL;
    call.status = 200;
    call.start_us = tw_mono_us();
    call.local_thing = false;
    call.aff_found = false;
    resolve(&call);
    if (rt->chain && tw_mw_chain_before(rt->chain, &call)) {
        json_t *p = call.problem;
        call.problem = NULL;
        tw_router_reply_error(&call, p);
    } else {
        dispatch(&call);
    }
    if (rt->chain) tw_mw_chain_after(rt->chain, &call);
    count_outcome(rt, &call);
    json_decref(call.problem);
    if (call.msg != call.orig) tw_msg_unref(call.msg);
}

int tw_router_admit(tw_runtime *rt, tw_conn *c, tw_msg *m, tw_mw_call *call)
{
    call->rt = rt;
    call->conn = c;
    call->msg = call->orig = m;
    call->problem = NULL;
    call->status = 200;
    call->start_us = tw_mono_us();
    call->local_thing = false;
    call->aff_found = false;
    resolve(call);
    return rt->chain ? tw_mw_chain_before(rt->chain, call) : 0;
}

void tw_router_admit_done(tw_mw_call *call, int status)
{
    tw_runtime *rt = call->rt;
    if (status) call->status = status;
    if (rt->chain) tw_mw_chain_after(rt->chain, call);
    count_outcome(rt, call);
    atomic_fetch_add_explicit(&rt->st_delivered, 1, memory_order_relaxed); /* the answer */
    json_decref(call->problem);
    call->problem = NULL;
    if (call->msg != call->orig) tw_msg_unref(call->msg);
    call->msg = call->orig;
}

int tw_router_add_service(tw_runtime *rt, const char *twin_id, tw_service_fn fn, void *ctx)
{
    tw_service *s = malloc(sizeof *s);
    if (!s) return TW_ENOMEM;
    s->fn = fn;
    s->ctx = ctx;
    int err = 0;
    pthread_rwlock_wrlock(&rt->services_lock);
    free(tw_hmap_put(&rt->services, twin_id, s, &err));
    pthread_rwlock_unlock(&rt->services_lock);
    if (err) {
        free(s);
        return TW_ENOMEM;
    }
    return 0;
}

void tw_router_get_stats(tw_runtime *rt, tw_router_stats *out)
{
    for (int i = 0; i < 4; i++)
        out->by_type[i] = atomic_load(&rt->st_type[i]);
    for (int i = 0; i < 6; i++)
        out->rejected_by_status[i] = atomic_load(&rt->st_rejected[i]);
    out->delivered = atomic_load(&rt->st_delivered);
    for (int i = 0; i < 12; i++)
        out->latency_hist[i] = atomic_load(&rt->st_latency[i]);
}
