/*
 * actions.c - invokeaction and writeproperty, end to end (DESIGN.md 3).
 *
 * Request from a consumer:
 *   in-process service     -> its C function answers at once
 *   agent online           -> request to one of its connections with the
 *                             action id as correlationID; the action row is
 *                             written behind (a live round trip never waits
 *                             for an fsync); the sender gets `delivered`
 *   agent offline, queueable -> tw_queue_push; the sender gets `queued` from
 *                             the commit callback, never before
 *   offline and safe (RPC) or not queueable -> failed, 503 problem
 * Answer from the agent (response, or an invokeaction notification for
 * progress): found by its correlationID (= action id) in the live map, only
 * accepted from the agent it was delivered to, recorded, and passed to the
 * sender: to the connection that asked if it is still open, else to the
 * client's other connections, else to its inbox.
 *
 * Drain: when an agent comes online its queue is delivered in order with at
 * most cfg->drain_window actions in flight; final answers free slots, and
 * once a quarter of the window is free the sweeper thread claims the next
 * rows, so a queue of a million rows neither floods the agent's connection
 * nor sits in memory, and the agent always has the rest of the window to
 * work on while a claim is under way.
 */
#include "log.h"
#include "router_int.h"

#include <stdlib.h>
#include <string.h>

/* An answer that arrived before its action's row was recorded. */
typedef struct held_answer {
    tw_status st;
    json_t *output, *error; /* references */
} held_answer;

/* An action handed to an agent and not yet finally answered. */
typedef struct tw_live {
    char action_id[TW_ID_MAX];
    char agent_id[TW_ID_MAX];
    char sender_id[TW_ID_MAX];
    char twin_id[TW_THING_ID_MAX];
    char *name;
    char *correlation; /* the sender's correlationID, may be NULL */
    tw_op op;
    tw_conn *origin; /* the connection that asked (ref), NULL after restart/drain */
    bool from_queue; /* holds a slot of the drain window */
    /* The sender asked for no progress ("progress": false): it hears the
     * final status only; `delivered` is withheld, and sent by the sweeper
     * (once, acked) if the action is still running then. */
    bool quiet, acked;
    int64_t created_ms;
    int64_t seq; /* the action's row, when known (drained), else 0 */
    /* Delivered live, its row not recorded and `delivered` not sent yet:
     * the agent's answers wait here, in order, and the invoking thread
     * passes them on once it has done both (settle()). An agent can answer
     * before the invoking thread gets there (on the binding's own sockets
     * it often does); passed on at once, its `completed` would be written
     * before the row exists, and reach the sender before `delivered`. */
    bool unsettled;
    held_answer *held;
    size_t nheld, capheld;
} tw_live;

static void held_free(held_answer *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        json_decref(h[i].output);
        json_decref(h[i].error);
    }
    free(h);
}

static void live_free(tw_live *l)
{
    if (!l) return;
    if (l->origin) tw_conn_unref(l->origin);
    held_free(l->held, l->nheld);
    free(l->name);
    free(l->correlation);
    free(l);
}

void tw_actions_fini(tw_runtime *rt)
{
    size_t pos = 0;
    void *v;
    while (tw_hmap_next(&rt->live, &pos, NULL, &v))
        live_free(v);
    pos = 0;
    while (tw_hmap_next(&rt->drains, &pos, NULL, &v))
        free(v);
}

/* ---- delivering status to the sender ------------------------------------ */

typedef struct {
    tw_msg *m;
    int sent;
} send_ctx;

static void send_one(void *arg, tw_conn *c)
{
    send_ctx *s = arg;
    if (tw_conn_send(c, s->m) == 0) s->sent++;
}

void tw_router_notify_client(tw_runtime *rt, const char *client_id, tw_msg *m)
{
    send_ctx s = {m, 0};
    tw_conns_of_client(rt, client_id, send_one, &s);
    if (s.sent == 0 && rt->queue) tw_inbox_append(rt->queue, client_id, m, NULL);
}

static void to_sender(tw_runtime *rt, tw_conn *origin, const char *sender, tw_msg *m)
{
    if (origin && !tw_conn_closed(origin) && tw_conn_send(origin, m) == 0) return;
    tw_router_notify_client(rt, sender, m);
}

/* A status message for the sender of an action. */
static tw_msg *status_msg(tw_op op, const char *twin_id, const char *name, const char *action_id,
                          const char *correlation, tw_status st, json_t *output, json_t *error)
{
    tw_msg *m = tw_msg_new(TW_TYPE_RESPONSE, op, twin_id, name);
    if (!m) return NULL;
    tw_msg_set_str(m, "correlationID", correlation ? correlation : action_id);
    tw_msg_set_str(m, "actionID", action_id);
    tw_msg_set_status(m, st);
    if (output) tw_msg_set(m, "output", json_incref(output));
    if (error) tw_msg_set(m, "error", json_incref(error));
    return m;
}

static void notify_action(tw_runtime *rt, tw_conn *origin, const tw_action *a)
{
    tw_msg *m = status_msg(a->op, a->thing_id, a->name, a->id, a->correlation_id, a->status,
                           a->output, a->error);
    if (!m) return;
    to_sender(rt, origin, a->sender_id, m);
    tw_msg_unref(m);
}

/* ---- delivery to agents -------------------------------------------------- */

typedef struct {
    tw_conn *c;
} pick_ctx;

static void pick_first(void *arg, tw_conn *c)
{
    pick_ctx *p = arg;
    if (!p->c) p->c = tw_conn_ref(c);
}

static tw_conn *agent_conn(tw_runtime *rt, const char *agent_id)
{
    pick_ctx p = {NULL};
    tw_conns_of_client(rt, agent_id, pick_first, &p);
    return p.c;
}

/* Sends the request of action a to the agent's connection; registers it live. */
static int deliver(tw_runtime *rt, tw_conn *agent, const tw_action *a, tw_conn *origin,
                   bool from_queue, bool quiet)
{
    char buf[TW_THING_ID_MAX];
    const char *agent_id, *local;
    if (tw_twin_id_split(a->thing_id, buf, &agent_id, &local)) return TW_EINVAL;
    tw_msg *req = tw_msg_new(TW_TYPE_REQUEST, a->op, local, a->name);
    tw_live *l = calloc(1, sizeof *l);
    if (!req || !l || !(l->name = strdup(a->name))) {
        tw_msg_unref(req);
        live_free(l);
        return TW_ENOMEM;
    }
    if (a->input) tw_msg_set(req, "input", json_incref(a->input));
    tw_msg_set_str(req, "correlationID", a->id);
    tw_msg_set_str(req, "senderID", a->sender_id);
    if (a->expires_ms) {
        char ts[TW_TIME_LEN];
        tw_time_format(a->expires_ms, ts);
        tw_msg_set_str(req, "expires", ts);
    }
    tw_strlcpy(l->action_id, a->id, sizeof l->action_id);
    tw_strlcpy(l->agent_id, a->agent_id, sizeof l->agent_id);
    tw_strlcpy(l->sender_id, a->sender_id, sizeof l->sender_id);
    tw_strlcpy(l->twin_id, a->thing_id, sizeof l->twin_id);
    l->correlation = a->correlation_id ? strdup(a->correlation_id) : NULL;
    l->op = a->op;
    l->origin = origin ? tw_conn_ref(origin) : NULL;
    l->from_queue = from_queue;
    l->quiet = quiet;
    l->created_ms = tw_now_ms();
    l->seq = a->seq;
    l->unsettled = !from_queue; /* a drained action's row exists */
    int err = 0;
    pthread_mutex_lock(&rt->live_lock);
    tw_hmap_put(&rt->live, l->action_id, l, &err);
    pthread_mutex_unlock(&rt->live_lock);
    if (err) {
        live_free(l);
        tw_msg_unref(req);
        return TW_ENOMEM;
    }
    int rc = tw_conn_send(agent, req);
    tw_msg_unref(req);
    if (rc) {
        pthread_mutex_lock(&rt->live_lock);
        tw_hmap_del(&rt->live, a->id);
        pthread_mutex_unlock(&rt->live_lock);
        live_free(l);
    }
    return rc;
}

static void drain(tw_runtime *rt, const char *agent_id);

/*
 * The invoking thread, after recording a live action's row and answering
 * `delivered`: passes on the answers the agent sent meanwhile (tw_live's
 * unsettled), in order, up to a final one; the next ones go their usual
 * way (tw_actions_agent_answer).
 */
static void settle(tw_runtime *rt, const tw_action *a, tw_conn *origin, bool quiet)
{
    for (int pass = 1;; pass++) {
        held_answer *held = NULL;
        size_t n = 0, nall = 0;
        tw_live *owned = NULL;
        pthread_mutex_lock(&rt->live_lock);
        tw_live *l = tw_hmap_get(&rt->live, a->id);
        if (!l) {
            pthread_mutex_unlock(&rt->live_lock);
            return;
        }
        if (l->nheld == 0) { /* nothing held: later answers go their usual way */
            l->unsettled = false;
            pthread_mutex_unlock(&rt->live_lock);
            return;
        }
        held = l->held;
        n = nall = l->nheld;
        l->held = NULL;
        l->nheld = l->capheld = 0;
        /* An agent that keeps reporting progress must not keep this thread
         * (a poller with other connections) here: after a few passes the
         * rest goes its usual way, unordered, like a full hold. */
        if (pass >= 8) l->unsettled = false;
        for (size_t i = 0; i < n && !owned; i++)
            if (tw_status_final(held[i].st)) {
                owned = tw_hmap_del(&rt->live, a->id);
                n = i + 1;
            }
        pthread_mutex_unlock(&rt->live_lock);
        for (size_t i = 0; i < n; i++) {
            if (rt->queue)
                tw_queue_update_seq(rt->queue, a->id, 0, held[i].st, held[i].output, held[i].error);
            if (quiet && !tw_status_final(held[i].st)) continue; /* no progress wanted */
            tw_msg *sm = status_msg(a->op, a->thing_id, a->name, a->id, a->correlation_id,
                                    held[i].st, held[i].output, held[i].error);
            if (sm) {
                to_sender(rt, origin, a->sender_id, sm);
                tw_msg_unref(sm);
            }
        }
        held_free(held, nall);
        if (owned || pass >= 8) {
            live_free(owned);
            return;
        }
    }
}

/* A queued action whose delivery failed after it was claimed: it is not
 * retried (that could run it twice), it fails and its sender is told. */
static void delivery_failed(tw_runtime *rt, tw_action *a, int rc)
{
    json_t *p = tw_problem_from_error(rc, "the agent's connection closed during delivery", NULL);
    tw_queue_update_seq(rt->queue, a->id, a->seq, TW_STATUS_FAILED, NULL, p);
    a->status = TW_STATUS_FAILED;
    a->error = p;
    notify_action(rt, NULL, a);
}

/* Free slots of the drain window that start a refill: a quarter of it (at
 * least one). With half, the agent ran dry while each claim waited behind
 * a group commit; a larger batch per claim saves little once the claim is
 * one statement per page. */
static int refill_at(const tw_runtime *rt)
{
    int q = rt->cfg->drain_window / 4;
    return q > 0 ? q : 1;
}

static void drain(tw_runtime *rt, const char *agent_id)
{
    if (!rt->queue) return;
    pthread_mutex_lock(&rt->drain_lock);
    tw_drain *d = tw_hmap_get(&rt->drains, agent_id);
    if (!d) {
        int err = 0;
        d = calloc(1, sizeof *d);
        if (d) tw_hmap_put(&rt->drains, agent_id, d, &err);
        if (!d || err) {
            free(d);
            pthread_mutex_unlock(&rt->drain_lock);
            return;
        }
    }
    if (d->running) {
        d->more = true;
        pthread_mutex_unlock(&rt->drain_lock);
        return;
    }
    d->running = true;
    for (;;) {
        int want = rt->cfg->drain_window - d->inflight;
        d->more = false;
        /* Claiming rows costs a writer job, so refill in batches: once a
         * quarter of the window is free (refill_at), unless nothing is in
         * flight at all. Not later: the agent must still have work while
         * the claim waits for the writer and the batch is sent. */
        if (want <= 0 || (want < refill_at(rt) && d->inflight > 0)) break;
        /* Reserve the slots before delivering: an answer may come back (and
         * free its slot) before this loop has delivered the rest. */
        d->inflight += want;
        pthread_mutex_unlock(&rt->drain_lock);

        tw_conn *agent = agent_conn(rt, agent_id);
        tw_action *list = NULL;
        int n = 0;
        if (agent) tw_queue_fetch(rt->queue, agent_id, 0, want, &list, &n);
        int delivered = 0;
        for (int i = 0; i < n; i++) {
            tw_action *a = &list[i];
            int rc = deliver(rt, agent, a, NULL, true, false);
            if (rc) {
                delivery_failed(rt, a, rc);
                continue;
            }
            delivered++;
            a->status = TW_STATUS_DELIVERED;
            notify_action(rt, NULL, a);
        }
        tw_action_list_free(list, n);
        if (agent) tw_conn_unref(agent);

        pthread_mutex_lock(&rt->drain_lock);
        d->inflight -= want - delivered; /* give back what was not used */
        if (d->inflight < 0) d->inflight = 0;
        if (!agent || (n < want && !d->more)) break;
    }
    d->running = false;
    pthread_mutex_unlock(&rt->drain_lock);
}

void tw_router_drain(tw_runtime *rt, const char *agent_id)
{
    drain(rt, agent_id);
}

void tw_router_agent_online(tw_runtime *rt, const char *agent_id)
{
    /* A new connection starts with a fresh window: answers for actions sent
     * over a connection that is gone will not come. */
    pthread_mutex_lock(&rt->drain_lock);
    tw_drain *d = tw_hmap_get(&rt->drains, agent_id);
    if (d) d->inflight = 0;
    pthread_mutex_unlock(&rt->drain_lock);
    /* Claiming rows waits for a commit: not on the binding's thread. */
    tw_runtime_kick_drain(rt, agent_id);
}

/* A drained action was finally answered: its slot is free. The refill
 * (a fetch that waits for a commit) runs on the sweeper thread, never on the
 * binding thread that carried the answer. */
static void window_release(tw_runtime *rt, const char *agent_id)
{
    pthread_mutex_lock(&rt->drain_lock);
    tw_drain *d = tw_hmap_get(&rt->drains, agent_id);
    bool refill = false;
    if (d && d->inflight > 0) {
        d->inflight--;
        refill = rt->cfg->drain_window - d->inflight >= refill_at(rt);
    }
    pthread_mutex_unlock(&rt->drain_lock);
    if (refill) tw_runtime_kick_drain(rt, agent_id);
}

/* ---- requests from consumers ---------------------------------------------- */

static void call_service(tw_mw_call *call, tw_service *svc)
{
    json_t *output = NULL, *problem = NULL;
    int rc = svc->fn(svc->ctx, call->conn, call->msg, &output, &problem);
    if (rc) {
        tw_router_reply_error(call, problem ? problem : tw_problem_from_error(rc, NULL, NULL));
        json_decref(output);
        return;
    }
    json_decref(problem);
    tw_router_reply_output(call, output);
}

typedef struct push_ctx {
    tw_runtime *rt;
    tw_conn *origin;
    tw_action a;
} push_ctx;

static void push_done(void *arg, const tw_queue_push_result *res)
{
    push_ctx *p = arg;
    tw_runtime *rt = p->rt;
    if (res->rc) {
        json_t *problem = tw_problem_from_error(res->rc == TW_EEXPIRED ? TW_EINVAL : res->rc,
                                                "the action could not be queued", NULL);
        p->a.status = TW_STATUS_FAILED;
        p->a.error = problem;
        notify_action(rt, p->origin, &p->a);
    } else {
        p->a.status = TW_STATUS_QUEUED;
        p->a.seq = res->seq;
        notify_action(rt, p->origin, &p->a);
        if (res->superseded_id[0]) {
            tw_action *old = NULL;
            if (tw_queue_get(rt->queue, res->superseded_id, &old) == 0) {
                notify_action(rt, NULL, old);
                tw_action_free(old);
            }
        }
        /* The agent may have connected while the row was being committed.
         * This runs on the store's writer thread: let the sweeper drain. */
        tw_conn *agent = agent_conn(rt, p->a.agent_id);
        if (agent) {
            tw_conn_unref(agent);
            tw_runtime_kick_drain(rt, p->a.agent_id);
        }
    }
    if (p->origin) tw_conn_unref(p->origin);
    json_decref(p->a.input);
    json_decref(p->a.error);
    free(p->a.thing_id);
    free(p->a.agent_id);
    free(p->a.sender_id);
    free(p->a.name);
    free(p->a.correlation_id);
    free(p);
}

void tw_actions_request(tw_mw_call *call)
{
    tw_runtime *rt = call->rt;
    tw_msg *m = call->msg;
    const tw_identity *id = tw_conn_identity(call->conn);
    tw_op op = tw_msg_get_op(m);

    pthread_rwlock_rdlock(&rt->services_lock);
    tw_service *svc = tw_hmap_get(&rt->services, call->twin_id);
    pthread_rwlock_unlock(&rt->services_lock);
    if (svc && op == TW_OP_INVOKEACTION) {
        call_service(call, svc);
        return;
    }

    tw_aff_info aff = call->aff;
    if (!call->aff_found) {
        int rc = rt->twin
                     ? rt->twin->lookup(rt->twin_ctx, call->twin_id,
                                        op == TW_OP_INVOKEACTION ? TW_AFF_ACTION : TW_AFF_PROPERTY,
                                        tw_msg_name(m), &aff)
                     : TW_ENOTFOUND;
        if (rc) {
            tw_router_reply_error(
                call, tw_problem_from_error(rc, "unknown Thing or affordance", "thingID"));
            return;
        }
    }
    if (!aff.agent_id[0]) {
        tw_router_reply_error(call, tw_problem_new(503, "no-agent", "not connected",
                                                   "no agent serves this Thing", "thingID"));
        return;
    }

    tw_action a;
    memset(&a, 0, sizeof a);
    tw_id_new("a-", a.id);
    a.thing_id = call->twin_id;
    a.agent_id = aff.agent_id;
    a.sender_id = (char *)id->client_id;
    a.name = (char *)tw_msg_name(m);
    a.correlation_id = (char *)tw_msg_correlation(m);
    a.op = op;
    a.input = tw_msg_get(m, "input");
    a.created_ms = a.updated_ms = tw_now_ms();

    /* "progress": false: the sender wants the outcome only (libtwin's
     * synchronous invoke): no `delivered` reply, no `running` forwarded. A
     * round trip then costs the sender's connection one message, not two. */
    bool quiet = json_is_false(tw_msg_get(m, "progress"));
    tw_conn *agent = agent_conn(rt, aff.agent_id);
    if (agent) {
        a.status = TW_STATUS_DELIVERED;
        int rc = deliver(rt, agent, &a, call->conn, false, quiet);
        tw_conn_unref(agent);
        if (rc == 0) {
            if (rt->queue) tw_queue_record(rt->queue, &a);
            call->status = 201;
            if (!quiet)
                tw_router_reply(call, status_msg(op, a.thing_id, a.name, a.id, a.correlation_id,
                                                 TW_STATUS_DELIVERED, NULL, NULL));
            settle(rt, &a, call->conn, quiet);
            return;
        }
        /* The connection went away under us: fall through to the offline path. */
    }
    if (aff.safe || !aff.queueable || !rt->queue) {
        char detail[300];
        snprintf(detail, sizeof detail, "agent '%s' is not connected%s", aff.agent_id,
                 aff.safe ? " and RPC calls are never queued" : "");
        json_t *p = tw_problem_new(503, "not-connected", "not connected", detail, NULL);
        tw_router_reply_error(call, p);
        return;
    }
    int64_t now = tw_now_ms(), cap = aff.max_ttl_ms > 0 ? aff.max_ttl_ms : rt->cfg->queue_ttl_ms;
    a.expires_ms = now + cap;
    json_t *exp = tw_msg_get(m, "expires");
    int64_t ms;
    if (exp && tw_time_parse(json_string_value(exp), &ms) == 0 && ms < a.expires_ms)
        a.expires_ms = ms;

    push_ctx *p = calloc(1, sizeof *p);
    if (!p) {
        tw_router_reply_error(call, tw_problem_from_error(TW_ENOMEM, NULL, NULL));
        return;
    }
    p->rt = rt;
    p->origin = tw_conn_ref(call->conn);
    p->a = a;
    p->a.thing_id = strdup(a.thing_id);
    p->a.agent_id = strdup(a.agent_id);
    p->a.sender_id = strdup(a.sender_id);
    p->a.name = strdup(a.name);
    p->a.correlation_id = a.correlation_id ? strdup(a.correlation_id) : NULL;
    p->a.input = a.input ? json_incref(a.input) : NULL;
    call->status = 202;
    int rc = tw_queue_push(rt->queue, &p->a, push_done, p);
    if (rc) {
        tw_queue_push_result res = {.rc = rc};
        push_done(p, &res);
    }
}

/* ---- answers from agents ----------------------------------------------------- */

static bool grow_held(tw_live *l)
{
    size_t nc = l->capheld ? l->capheld * 2 : 4;
    if (nc > 1024) return false; /* an agent chattering before settle(): go on unordered */
    held_answer *nh = realloc(l->held, nc * sizeof *nh);
    if (!nh) return false;
    l->held = nh;
    l->capheld = nc;
    return true;
}

void tw_actions_agent_answer(tw_mw_call *call)
{
    tw_runtime *rt = call->rt;
    tw_msg *m = call->msg;
    const tw_identity *id = tw_conn_identity(call->conn);
    const char *action_id = tw_msg_correlation(m);
    if (!action_id) {
        tw_router_reply_error(call, tw_problem_new(400, "invalid", "invalid input",
                                                   "an answer needs the correlationID of the "
                                                   "request",
                                                   "correlationID"));
        return;
    }
    tw_status st = tw_msg_status(m);
    json_t *output = tw_msg_get(m, "output"), *error = tw_msg_get(m, "error");
    if (st == TW_STATUS_NONE)
        st = error                                    ? TW_STATUS_FAILED
             : tw_msg_get_type(m) == TW_TYPE_RESPONSE ? TW_STATUS_COMPLETED
                                                      : TW_STATUS_RUNNING;
    if (st == TW_STATUS_QUEUED || st == TW_STATUS_EXPIRED || st == TW_STATUS_DELIVERED)
        st = TW_STATUS_RUNNING; /* those are the runtime's to say */

    /* Copy what we need under the lock: a concurrent final answer may free
     * the live entry as soon as we let go. */
    tw_live snap;
    memset(&snap, 0, sizeof snap);
    tw_live *owned = NULL;
    pthread_mutex_lock(&rt->live_lock);
    tw_live *l = tw_hmap_get(&rt->live, action_id);
    bool found = l != NULL, mine = l && strcmp(l->agent_id, id->client_id) == 0;
    if (mine && l->unsettled) { /* the invoking thread passes it on (settle) */
        if (l->nheld < l->capheld || grow_held(l)) {
            l->held[l->nheld++] = (held_answer){st, output ? json_incref(output) : NULL,
                                                error ? json_incref(error) : NULL};
            pthread_mutex_unlock(&rt->live_lock);
            return;
        }
    }
    if (mine) {
        if (tw_status_final(st)) {
            tw_hmap_del(&rt->live, action_id);
            owned = l;
            snap = *l;
        } else {
            snap = *l;
            snap.name = strdup(l->name);
            snap.correlation = l->correlation ? strdup(l->correlation) : NULL;
            snap.origin = l->origin ? tw_conn_ref(l->origin) : NULL;
        }
    }
    pthread_mutex_unlock(&rt->live_lock);

    if (!found) {
        /* delivered before a restart: no live entry, the row knows the sender */
        tw_action *stored = NULL;
        if (rt->queue && tw_queue_get(rt->queue, action_id, &stored) == 0 &&
            strcmp(stored->agent_id, id->client_id) == 0) {
            if (tw_queue_update_seq(rt->queue, action_id, stored->seq, st, output, error) == 0) {
                stored->status = st;
                json_decref(stored->output);
                json_decref(stored->error);
                stored->output = output ? json_incref(output) : NULL;
                stored->error = error ? json_incref(error) : NULL;
                notify_action(rt, NULL, stored);
            }
            tw_action_free(stored);
            return;
        }
        tw_action_free(stored);
    }
    if (!mine) {
        tw_router_reply_error(call, tw_problem_new(404, "not-found", "not found",
                                                   "no action of yours has this correlationID",
                                                   "correlationID"));
        return;
    }
    if (rt->queue) tw_queue_update_seq(rt->queue, action_id, snap.seq, st, output, error);
    tw_msg *sm = snap.quiet && !tw_status_final(st)
                     ? NULL /* the sender wants no progress */
                     : status_msg(snap.op, snap.twin_id, snap.name, snap.action_id,
                                  snap.correlation, st, output, error);
    if (sm) {
        to_sender(rt, snap.origin, snap.sender_id, sm);
        tw_msg_unref(sm);
    }
    if (owned) {
        live_free(owned);
        if (snap.from_queue) window_release(rt, snap.agent_id);
    } else {
        free(snap.name);
        free(snap.correlation);
        if (snap.origin) tw_conn_unref(snap.origin);
    }
}

/* ---- queries and cancel ---------------------------------------------------------- */

static const char *action_ref(const tw_msg *m)
{
    json_t *in = tw_msg_get(m, "input");
    if (json_is_string(in)) return json_string_value(in);
    if (json_is_object(in) && json_is_string(json_object_get(in, "actionID")))
        return json_string_value(json_object_get(in, "actionID"));
    return tw_msg_correlation(m);
}

static bool may_see(const tw_identity *id, const tw_action *a)
{
    return id->role == TW_ROLE_ADMIN || strcmp(a->sender_id, id->client_id) == 0;
}

void tw_actions_query(tw_mw_call *call)
{
    tw_runtime *rt = call->rt;
    const tw_identity *id = tw_conn_identity(call->conn);
    tw_op op = tw_msg_get_op(call->msg);
    if (!rt->queue) {
        tw_router_reply_error(call,
                              tw_problem_from_error(TW_EUNSUPPORTED, "no action store", NULL));
        return;
    }
    if (op == TW_OP_QUERYALLACTIONS) {
        tw_action *list = NULL;
        int n = 0;
        int rc = tw_queue_list(rt->queue, call->twin_id,
                               id->role == TW_ROLE_ADMIN ? NULL : id->client_id, 100, &list, &n);
        if (rc) {
            tw_router_reply_error(call, tw_problem_from_error(rc, NULL, NULL));
            return;
        }
        json_t *arr = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(arr, tw_action_json(&list[i]));
        tw_action_list_free(list, n);
        tw_router_reply_output(call, arr);
        return;
    }
    const char *ref = action_ref(call->msg);
    tw_action *a = NULL;
    int rc = ref ? tw_queue_get(rt->queue, ref, &a) : TW_ENOTFOUND;
    if (rc == 0 && !may_see(id, a)) rc = TW_ENOTFOUND; /* do not reveal others' actions */
    if (rc) {
        tw_action_free(a);
        tw_router_reply_error(call, tw_problem_from_error(rc, "no such action", "input"));
        return;
    }
    if (op == TW_OP_QUERYACTION) {
        json_t *out = tw_action_json(a);
        json_t *hist = NULL;
        if (tw_queue_history(rt->queue, a->id, &hist) == 0)
            json_object_set_new(out, "history", hist);
        tw_action_free(a);
        tw_router_reply_output(call, out);
        return;
    }
    /* cancelaction */
    tw_action *cancelled = NULL;
    rc = tw_queue_cancel(rt->queue, a->id, &cancelled);
    if (rc) {
        tw_action_free(a);
        tw_router_reply_error(
            call, tw_problem_from_error(
                      rc, rc == TW_ECONFLICT ? "the action has already finished" : NULL, "input"));
        return;
    }
    pthread_mutex_lock(&rt->live_lock);
    tw_live *l = tw_hmap_del(&rt->live, a->id);
    pthread_mutex_unlock(&rt->live_lock);
    if (l) { /* tell the agent to stop */
        tw_conn *agent = agent_conn(rt, l->agent_id);
        char buf[TW_THING_ID_MAX];
        const char *ag, *local;
        if (agent && tw_twin_id_split(l->twin_id, buf, &ag, &local) == 0) {
            tw_msg *req = tw_msg_new(TW_TYPE_REQUEST, TW_OP_CANCELACTION, local, l->name);
            if (req) {
                tw_msg_set_str(req, "correlationID", l->action_id);
                tw_msg_set_str(req, "input", l->action_id);
                tw_conn_send(agent, req);
                tw_msg_unref(req);
            }
        }
        if (agent) tw_conn_unref(agent);
        bool from_queue = l->from_queue;
        char agent_id[TW_ID_MAX];
        tw_strlcpy(agent_id, l->agent_id, sizeof agent_id);
        live_free(l);
        if (from_queue) window_release(rt, agent_id);
    }
    tw_router_reply_output(call, tw_action_json(cancelled));
    /* The original sender hears of it too (it may be another connection). */
    notify_action(rt, NULL, cancelled);
    tw_action_free(cancelled);
    tw_action_free(a);
}

/* ---- expiry and deleted things ------------------------------------------------------ */

static void notify_cb(void *arg, const tw_action *a)
{
    notify_action(arg, NULL, a);
}

void tw_actions_thing_deleted(tw_runtime *rt, const char *twin_id)
{
    if (!rt->queue) return;
    json_t *p = tw_problem_new(410, "thing-deleted", "gone", "the Thing was deleted", NULL);
    tw_queue_fail_thing(rt->queue, twin_id, p, notify_cb, rt);
    json_decref(p);
}

/* A quiet action (see tw_live) still running at a sweep: its sender gets
 * the withheld `delivered` now, so a caller that gives up waiting still
 * learns the action id (to query or cancel it). The entry is marked
 * unsettled first, so an answer arriving meanwhile waits and is passed on
 * after `delivered` (settle()), never before it. */
typedef struct late_ack {
    tw_action a;
    tw_conn *origin;
} late_ack;

static void ack_late(tw_runtime *rt)
{
    late_ack *list = NULL;
    size_t n = 0, cap = 0;
    int64_t young = tw_now_ms() - 10; /* leave the ones about to finish alone */
    pthread_mutex_lock(&rt->live_lock);
    size_t pos = 0;
    void *v;
    while (tw_hmap_next(&rt->live, &pos, NULL, &v)) {
        tw_live *l = v;
        if (!l->quiet || l->acked || l->unsettled || l->created_ms > young) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            late_ack *nl = realloc(list, nc * sizeof *nl);
            if (!nl) break;
            list = nl;
            cap = nc;
        }
        late_ack *x = &list[n];
        memset(x, 0, sizeof *x);
        memcpy(x->a.id, l->action_id, sizeof x->a.id);
        x->a.op = l->op;
        x->a.thing_id = strdup(l->twin_id);
        x->a.name = strdup(l->name);
        x->a.sender_id = strdup(l->sender_id);
        x->a.correlation_id = l->correlation ? strdup(l->correlation) : NULL;
        x->a.status = TW_STATUS_DELIVERED;
        if (!x->a.thing_id || !x->a.name || !x->a.sender_id ||
            (l->correlation && !x->a.correlation_id)) {
            free(x->a.thing_id);
            free(x->a.name);
            free(x->a.sender_id);
            free(x->a.correlation_id);
            break;
        }
        x->origin = l->origin ? tw_conn_ref(l->origin) : NULL;
        l->acked = l->unsettled = true;
        n++;
    }
    pthread_mutex_unlock(&rt->live_lock);
    for (size_t i = 0; i < n; i++) {
        late_ack *x = &list[i];
        notify_action(rt, x->origin, &x->a);
        settle(rt, &x->a, x->origin, true);
        if (x->origin) tw_conn_unref(x->origin);
        free(x->a.thing_id);
        free(x->a.name);
        free(x->a.sender_id);
        free(x->a.correlation_id);
    }
    free(list);
}

void tw_router_sweep(tw_runtime *rt)
{
    ack_late(rt);
    if (!rt->queue) return;
    tw_queue_expire(rt->queue, tw_now_ms(), notify_cb, rt);
    /* Retention: a few pages per sweep keep each pass short. */
    int deleted = 0;
    tw_queue_prune(rt->queue, tw_now_ms() - rt->cfg->action_retention_ms, 4, &deleted);
    if (deleted) tw_log_debug("router", "pruned %d finished actions", deleted);
    /* Live entries whose agent never answered are forgotten after the queue
     * TTL: the row stays `delivered` and can still be queried. */
    int64_t horizon = tw_now_ms() - rt->cfg->queue_ttl_ms;
    pthread_mutex_lock(&rt->live_lock);
    size_t pos = 0;
    const char *k;
    void *v;
    while (tw_hmap_next(&rt->live, &pos, &k, &v)) {
        tw_live *l = v;
        if (l->created_ms < horizon) {
            tw_hmap_del(&rt->live, k);
            live_free(l);
        }
    }
    pthread_mutex_unlock(&rt->live_lock);
}

static void replay_one(void *arg, int64_t seq, tw_msg *m)
{
    tw_msg *copy = tw_msg_copy(m);
    if (!copy) return;
    tw_msg_set(copy, "inboxSeq", json_integer(seq));
    tw_conn_send(arg, copy);
    tw_msg_unref(copy);
}

void tw_router_replay_inbox(tw_runtime *rt, tw_conn *c, int64_t since)
{
    const tw_identity *id = tw_conn_identity(c);
    if (!id || !rt->queue) return;
    if (since > 0) tw_inbox_ack(rt->queue, id->client_id, since);
    tw_inbox_replay(rt->queue, id->client_id, since, replay_one, c);
}
