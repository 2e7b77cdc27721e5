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
 * The sender's statuses of a live action go out in order, and nothing after
 * a final one: one thread at a time passes them on, the one that set the
 * entry's `busy` (the invoking thread until it has answered `delivered`, the
 * drain, the sweeper's late `delivered`, an agent's progress); whatever
 * comes meanwhile (answers, a cancel, the Thing's deletion) waits in `held`
 * and that thread passes it on after its own (pass_on()). A final status is
 * sent by the thread that ends the live entry, after everything before it,
 * and only if the store took it: when a cancel and the agent's result race,
 * the store decides and only the winner is sent.
 *
 * Quiet actions ("progress": false): the sender hears the outcome only; a
 * quiet action still running at a sweep gets its `delivered` then (ack_late).
 * A sender that gave up waiting before that learns the id by asking for
 * {"correlationID": ...} (queryaction or cancelaction), see action_ref().
 *
 * Drain: when an agent comes online its queue is delivered in order with at
 * most cfg->drain_window actions in flight; final answers free slots, and
 * once a quarter of the window is free the sweeper thread claims the next
 * rows, so a queue of a million rows neither floods the agent's connection
 * nor sits in memory, and the agent always has the rest of the window to
 * work on while a claim is under way. A claimed batch is registered live
 * before any of it is sent, then the store is asked which rows a cancel or
 * the Thing's deletion finished meanwhile: those never reach the agent
 * (deliver_batch()). A row whose request cannot be sent (the connection
 * closed during the drain) goes back to the queue (requeue()). A cancel's
 * order to the agent to stop goes after the request, from the thread that
 * holds the turn.
 */
#include "log.h"
#include "router_int.h"

#include <stdlib.h>
#include <string.h>

/* A status waiting for the thread that passes the action's statuses on. */
typedef struct held_answer {
    tw_status st;
    json_t *output, *error; /* references */
    bool recorded;          /* decided and stored already (a cancel, the Thing deleted) */
    bool stop;              /* a cancel: the agent is told to stop, after its request */
} held_answer;

/* Progress held per action, at most: an agent chattering faster than its
 * statuses are passed on loses the rest in its sender's view (the store
 * still records it), never their order. Final statuses get a few more
 * places (only the first one the store takes is sent). */
#define HELD_MAX 1024
#define HELD_MAX_FINAL (HELD_MAX + 16)

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
     * (once, acked) if the action is still running then, unless the sender
     * asked for the action by its correlationID first. */
    bool quiet, acked;
    int64_t created_ms;
    int64_t seq; /* the action's row, when known (drained), else 0 */
    /* A thread is passing this action's statuses to its sender (see the
     * header): set by deliver() (the invoking thread or the drain first
     * records the row and answers `delivered`), by the sweeper's late
     * `delivered` and by an agent's progress. Everything else meanwhile
     * waits in held, in order, and that thread passes it on (pass_on()).
     * An agent can answer before the invoking thread gets there (on the
     * binding's own sockets it often does); passed on at once, its
     * `completed` would be written before the row exists, and reach the
     * sender before `delivered`. */
    bool busy;
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

/* Whom an action's statuses go to: borrowed from a tw_action the caller
 * holds (sender_of_action) or from a copy of a tw_live (live_snap). */
typedef struct sender_ref {
    const char *action_id, *sender_id, *twin_id, *name, *correlation, *agent_id;
    tw_op op;
    tw_conn *origin;
    int64_t seq; /* the row's, when known, for the store's updates */
    bool quiet;
} sender_ref;

static sender_ref sender_of_action(const tw_action *a, tw_conn *origin, bool quiet)
{
    return (sender_ref){a->id,       a->sender_id, a->thing_id, a->name, a->correlation_id,
                        a->agent_id, a->op,        origin,      a->seq,  quiet};
}

static sender_ref sender_of_live(const tw_live *l)
{
    return (sender_ref){l->action_id, l->sender_id, l->twin_id, l->name, l->correlation,
                        l->agent_id,  l->op,        l->origin,  l->seq,  l->quiet};
}

/* Copies what sender_of_live needs out of l (live_lock held), so it
 * outlives the entry; false when out of memory. live_snap_drop frees. */
static bool live_snap(const tw_live *l, tw_live *snap)
{
    *snap = *l;
    snap->held = NULL;
    snap->nheld = snap->capheld = 0;
    snap->name = strdup(l->name);
    snap->correlation = l->correlation ? strdup(l->correlation) : NULL;
    snap->origin = l->origin ? tw_conn_ref(l->origin) : NULL;
    if (snap->name && (snap->correlation || !l->correlation)) return true;
    free(snap->name);
    free(snap->correlation);
    if (snap->origin) tw_conn_unref(snap->origin);
    return false;
}

static void live_snap_drop(tw_live *snap)
{
    free(snap->name);
    free(snap->correlation);
    if (snap->origin) tw_conn_unref(snap->origin);
}

static void send_status(tw_runtime *rt, const sender_ref *w, tw_status st, json_t *output,
                        json_t *error)
{
    tw_msg *m =
        status_msg(w->op, w->twin_id, w->name, w->action_id, w->correlation, st, output, error);
    if (!m) return;
    to_sender(rt, w->origin, w->sender_id, m);
    tw_msg_unref(m);
}

/* Appends a status to l->held (live_lock held); false when it cannot be
 * held: beyond HELD_MAX (HELD_MAX_FINAL), or out of memory. */
static bool hold(tw_live *l, tw_status st, json_t *output, json_t *error, bool recorded, bool stop)
{
    if (l->nheld >= (tw_status_final(st) ? HELD_MAX_FINAL : HELD_MAX)) return false;
    if (l->nheld == l->capheld) {
        size_t nc = l->capheld ? l->capheld * 2 : 4;
        held_answer *nh = realloc(l->held, nc * sizeof *nh);
        if (!nh) return false;
        l->held = nh;
        l->capheld = nc;
    }
    l->held[l->nheld++] = (held_answer){st, output ? json_incref(output) : NULL,
                                        error ? json_incref(error) : NULL, recorded, stop};
    return true;
}

static bool held_has_final(const tw_live *l)
{
    for (size_t i = 0; i < l->nheld; i++)
        if (tw_status_final(l->held[i].st)) return true;
    return false;
}

static void window_release(tw_runtime *rt, const char *agent_id);
static tw_conn *agent_conn(tw_runtime *rt, const char *agent_id);

/* Tells the agent that has the request of action w to stop (it was
 * cancelled). Sent after the request, never before: by the thread that
 * holds the action's turn, which sent the request or came after it. */
static void stop_agent(tw_runtime *rt, const sender_ref *w)
{
    tw_conn *agent = agent_conn(rt, w->agent_id);
    if (!agent) return;
    char buf[TW_THING_ID_MAX];
    const char *ag, *local;
    if (tw_twin_id_split(w->twin_id, buf, &ag, &local) == 0) {
        tw_msg *req = tw_msg_new(TW_TYPE_REQUEST, TW_OP_CANCELACTION, local, w->name);
        if (req) {
            tw_msg_set_str(req, "correlationID", w->action_id);
            tw_msg_set_str(req, "input", w->action_id);
            tw_conn_send(agent, req);
            tw_msg_unref(req);
        }
    }
    tw_conn_unref(agent);
}

/* Passes n held statuses on in order (see pass_on), the agent told to stop
 * if it has the request (agent_has_it); returns whether a final one was
 * sent, after which nothing is. */
static bool pass_held(tw_runtime *rt, const sender_ref *w, const held_answer *held, size_t n,
                      bool agent_has_it)
{
    for (size_t i = 0; i < n; i++) {
        const held_answer *h = &held[i];
        if (!h->recorded && rt->queue &&
            tw_queue_update_seq(rt->queue, w->action_id, w->seq, h->st, h->output, h->error) ==
                TW_ECONFLICT)
            continue; /* finished otherwise: that status is the one sent */
        bool final = tw_status_final(h->st);
        if (w->quiet && !final) continue; /* no progress wanted */
        send_status(rt, w, h->st, h->output, h->error);
        if (h->stop && agent_has_it) stop_agent(rt, w);
        if (final) return true;
    }
    return false;
}

/*
 * The thread that set the live entry's `busy` passes on what waits in its
 * held, in order, then clears busy. Each answer is recorded first; one the
 * store refuses (the action was finished by another decision: a cancel, the
 * Thing deleted, whose own status is passed on by whoever holds the turn)
 * is not sent, nor progress to a quiet sender, nor anything after the first
 * final status sent. That one ends the live entry, removed only after it
 * was sent, so nothing else can be sent for the action before it.
 */
static void pass_on(tw_runtime *rt, const sender_ref *w)
{
    bool finished = false;
    for (int pass = 1;; pass++) {
        pthread_mutex_lock(&rt->live_lock);
        tw_live *l = tw_hmap_get(&rt->live, w->action_id);
        if (!l) { /* forgotten by the sweep, or ended out of order, meanwhile */
            pthread_mutex_unlock(&rt->live_lock);
            return;
        }
        if (finished) {
            tw_hmap_del(&rt->live, w->action_id);
            pthread_mutex_unlock(&rt->live_lock);
            if (l->from_queue) window_release(rt, l->agent_id);
            live_free(l);
            return;
        }
        /* An agent that keeps reporting progress must not keep this thread
         * (a poller with other connections) here: after a few passes the
         * turn is given up and the next answer (or the sweep) takes it with
         * what waits; a final status waiting is passed on first. */
        if (l->nheld == 0 || (pass > 8 && !held_has_final(l))) {
            l->busy = false;
            pthread_mutex_unlock(&rt->live_lock);
            return;
        }
        held_answer *held = l->held;
        size_t n = l->nheld;
        l->held = NULL;
        l->nheld = l->capheld = 0;
        pthread_mutex_unlock(&rt->live_lock);
        finished = pass_held(rt, w, held, n, true);
        held_free(held, n);
    }
}

/*
 * A final status the router decided and recorded itself (a cancel, the
 * Thing deleted) for an action that may be live: it ends the live entry
 * and reaches the sender after every status before it (held for the thread
 * that holds the turn, if any). With stop (a cancel), the agent that has
 * the request is told to stop, after it: a thread holding the turn may not
 * have sent the request yet (the drain), and one that has not sent it by
 * then never does (withdraw()).
 */
static void finish_decided(tw_runtime *rt, const tw_action *a, bool stop)
{
    pthread_mutex_lock(&rt->live_lock);
    tw_live *l = tw_hmap_get(&rt->live, a->id);
    if (!l) { /* not delivered (queued, or about to be: the drain looks again) */
        pthread_mutex_unlock(&rt->live_lock);
        notify_action(rt, NULL, a);
        return;
    }
    if ((l->busy || l->nheld) && hold(l, a->status, a->output, a->error, true, stop)) {
        if (l->busy) { /* its thread passes it on */
            pthread_mutex_unlock(&rt->live_lock);
            return;
        }
        /* earlier statuses wait without a thread (given up): take the turn */
        tw_live snap;
        bool ok = live_snap(l, &snap);
        l->busy = ok;
        pthread_mutex_unlock(&rt->live_lock);
        if (ok) {
            sender_ref w = sender_of_live(&snap);
            pass_on(rt, &w);
            live_snap_drop(&snap);
        }
        return;
    }
    if (l->busy || l->nheld) /* out of memory: unordered rather than lost */
        tw_log_warn("router", "action %s: status passed on out of order (out of memory)", a->id);
    tw_hmap_del(&rt->live, a->id);
    pthread_mutex_unlock(&rt->live_lock);
    notify_action(rt, NULL, a);
    if (stop) {
        sender_ref w = sender_of_live(l);
        stop_agent(rt, &w);
    }
    if (l->from_queue) window_release(rt, l->agent_id);
    live_free(l);
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

/* The request of action a for its agent: the agent's own thing id, the
 * action id as correlationID. */
static int request_msg(const tw_action *a, tw_msg **out)
{
    char buf[TW_THING_ID_MAX];
    const char *agent_id, *local;
    *out = NULL;
    if (tw_twin_id_split(a->thing_id, buf, &agent_id, &local)) return TW_EINVAL;
    tw_msg *req = tw_msg_new(TW_TYPE_REQUEST, a->op, local, a->name);
    if (!req) return TW_ENOMEM;
    if (a->input) tw_msg_set(req, "input", json_incref(a->input));
    tw_msg_set_str(req, "correlationID", a->id);
    tw_msg_set_str(req, "senderID", a->sender_id);
    if (a->expires_ms) {
        char ts[TW_TIME_LEN];
        tw_time_format(a->expires_ms, ts);
        tw_msg_set_str(req, "expires", ts);
    }
    *out = req;
    return 0;
}

/* A live entry for action a, busy: the thread that delivers it answers
 * `delivered` first, then passes on what came meanwhile (pass_on()). */
static tw_live *live_new(const tw_action *a, tw_conn *origin, bool from_queue, bool quiet)
{
    tw_live *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->name = strdup(a->name);
    l->correlation = a->correlation_id ? strdup(a->correlation_id) : NULL;
    if (!l->name || (a->correlation_id && !l->correlation)) {
        live_free(l);
        return NULL;
    }
    tw_strlcpy(l->action_id, a->id, sizeof l->action_id);
    tw_strlcpy(l->agent_id, a->agent_id, sizeof l->agent_id);
    tw_strlcpy(l->sender_id, a->sender_id, sizeof l->sender_id);
    tw_strlcpy(l->twin_id, a->thing_id, sizeof l->twin_id);
    l->op = a->op;
    l->origin = origin ? tw_conn_ref(origin) : NULL;
    l->from_queue = from_queue;
    l->quiet = quiet;
    l->created_ms = tw_now_ms();
    l->seq = a->seq;
    l->busy = true;
    return l;
}

/* Takes back the live entry of an action whose request did not reach the
 * agent (finished before it was sent, or the send failed). What was held
 * for it meanwhile (a cancel, the Thing's deletion: decided and recorded)
 * is passed on to its sender; the agent, which has nothing, is told
 * nothing. */
static void withdraw(tw_runtime *rt, const char *action_id)
{
    pthread_mutex_lock(&rt->live_lock);
    tw_live *l = tw_hmap_del(&rt->live, action_id);
    pthread_mutex_unlock(&rt->live_lock);
    if (!l) return;
    sender_ref w = sender_of_live(l);
    pass_held(rt, &w, l->held, l->nheld, false);
    live_free(l);
}

/* Delivers a consumer's action to its online agent: registers it live,
 * then sends the request. Nothing can be decided for it before the send
 * (its row is recorded after it), so nothing is looked at; on failure
 * nothing stays live. */
static int deliver(tw_runtime *rt, tw_conn *agent, const tw_action *a, tw_conn *origin, bool quiet)
{
    tw_msg *req = NULL;
    int rc = request_msg(a, &req);
    if (rc) return rc;
    tw_live *l = live_new(a, origin, false, quiet);
    int err = 0;
    if (l) {
        pthread_mutex_lock(&rt->live_lock);
        tw_hmap_put(&rt->live, l->action_id, l, &err);
        pthread_mutex_unlock(&rt->live_lock);
    }
    if (!l || err) {
        live_free(l);
        tw_msg_unref(req);
        return TW_ENOMEM;
    }
    rc = tw_conn_send(agent, req);
    tw_msg_unref(req);
    if (rc) withdraw(rt, a->id);
    return rc;
}

static void drain(tw_runtime *rt, const char *agent_id);

/* A queued action whose delivery failed after it was claimed: it is not
 * retried (that could run it twice), it fails and its sender is told,
 * unless it was finished otherwise meanwhile (a cancel): that status is
 * the one its sender hears (withdraw()). */
static void delivery_failed(tw_runtime *rt, tw_action *a, int rc)
{
    json_t *p = tw_problem_from_error(rc, "the agent's connection closed during delivery", NULL);
    if (tw_queue_update_seq(rt->queue, a->id, a->seq, TW_STATUS_FAILED, NULL, p) == TW_ECONFLICT) {
        json_decref(p);
        return;
    }
    a->status = TW_STATUS_FAILED;
    json_decref(a->error);
    a->error = p;
    notify_action(rt, NULL, a);
}

/* A drained action whose request could not be sent (the agent's
 * connection closed during the drain) goes back to the queue: the agent
 * never got it, so it is delivered when the agent is back, as if the
 * drain had not begun. (It used to fail: an action queued for an offline
 * device was lost to a reconnect at the wrong moment.) Its sender hears
 * nothing new; it was told `queued`. Returns false if it could not be
 * requeued (finished meanwhile: nothing to do; no memory: failed). */
static bool requeue(tw_runtime *rt, tw_action *a, int rc)
{
    int urc = tw_queue_update_seq(rt->queue, a->id, a->seq, TW_STATUS_QUEUED, NULL, NULL);
    if (urc == 0 || urc == TW_ECONFLICT) return urc == 0;
    delivery_failed(rt, a, rc);
    return false;
}

typedef enum { REQ_SENT, REQ_FAILED, REQ_FINISHED, REQ_GONE } req_outcome;

/* Sends req, the request of the drained action a whose entry is live and
 * busy, unless a final status was held for it meanwhile (a cancel, the
 * Thing deleted: it is withdrawn) or its entry is gone (ended by another
 * thread, out of memory). A failed send withdraws it too (*rc). */
static req_outcome send_drained(tw_runtime *rt, tw_conn *agent, const tw_action *a, tw_msg *req,
                                int *rc)
{
    pthread_mutex_lock(&rt->live_lock);
    tw_live *l = tw_hmap_get(&rt->live, a->id);
    bool gone = !l, finished = l && held_has_final(l);
    pthread_mutex_unlock(&rt->live_lock);
    if (gone) return REQ_GONE;
    if (finished) {
        withdraw(rt, a->id);
        return REQ_FINISHED;
    }
    *rc = tw_conn_send(agent, req);
    if (*rc == 0) return REQ_SENT;
    withdraw(rt, a->id);
    return REQ_FAILED;
}

/*
 * Delivers a batch the drain claimed. Every action of it is registered live
 * (busy) before any request is sent; then the store says which of them
 * were finished meanwhile: a cancel or the Thing's deletion between the
 * claim and the registration found nothing live, told the sender itself,
 * and the agent must not get the request, so those are withdrawn. A
 * decision after the registration is held (finish_decided()): before the
 * send it withdraws the action (send_drained()), after it it is passed on
 * after `delivered`, and a cancel's stop reaches the agent after the
 * request. Returns how many hold a slot of the window (released when they
 * end); *requeued_out says whether some went back to the queue (their
 * connection failed).
 */
static int deliver_batch(tw_runtime *rt, tw_conn *agent, const char *agent_id, tw_action *list,
                         int n, bool *requeued_out)
{
    bool requeued = false;
    tw_status *st = malloc((size_t)n * sizeof *st);
    tw_live **live = calloc((size_t)n, sizeof *live); /* non-NULL: registered */
    if (st && live) {
        for (int i = 0; i < n; i++)
            live[i] = live_new(&list[i], NULL, true, false);
        pthread_mutex_lock(&rt->live_lock);
        for (int i = 0; i < n; i++) {
            int err = 0;
            if (live[i]) tw_hmap_put(&rt->live, live[i]->action_id, live[i], &err);
            if (err) {
                live_free(live[i]);
                live[i] = NULL;
            }
        }
        pthread_mutex_unlock(&rt->live_lock);
        /* On an error the statuses it could not learn stay NONE: those
         * are delivered, as before this look. */
        int rc = tw_queue_status(rt->queue, list, n, st);
        if (rc) tw_log_warn("router", "drain: statuses not read: %s", tw_strerror(rc));
    }
    int kept = 0;
    for (int i = 0; i < n; i++) {
        tw_action *a = &list[i];
        if (!st || !live || !live[i]) {
            delivery_failed(rt, a, TW_ENOMEM);
            continue;
        }
        if (tw_status_final(st[i])) {
            withdraw(rt, a->id);
            continue;
        }
        tw_msg *req = NULL;
        int rc = request_msg(a, &req);
        if (rc) {
            withdraw(rt, a->id);
            delivery_failed(rt, a, rc);
            continue;
        }
        req_outcome o = send_drained(rt, agent, a, req, &rc);
        tw_msg_unref(req);
        if (o == REQ_GONE) kept++; /* whoever ended it released its slot */
        if (o == REQ_FAILED && requeue(rt, a, rc)) requeued = true;
        if (o != REQ_SENT) continue;
        kept++;
        a->status = TW_STATUS_DELIVERED;
        notify_action(rt, NULL, a);
        sender_ref w = sender_of_action(a, NULL, false);
        pass_on(rt, &w); /* answers that came meanwhile */
    }
    free(st);
    free(live);
    if (requeued) {
        /* The agent may be back on another connection already, whose
         * drain has passed these rows: drain again. Not for the same
         * connection (still registered while it closes): that would spin. */
        tw_conn *now = agent_conn(rt, agent_id);
        if (now && now != agent) tw_runtime_kick_drain(rt, agent_id);
        if (now) tw_conn_unref(now);
    }
    *requeued_out = requeued;
    return kept;
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
        bool requeued = false;
        int delivered = n > 0 ? deliver_batch(rt, agent, agent_id, list, n, &requeued) : 0;
        tw_action_list_free(list, n);
        if (agent) tw_conn_unref(agent);

        pthread_mutex_lock(&rt->drain_lock);
        d->inflight -= want - delivered; /* give back what was not used */
        if (d->inflight < 0) d->inflight = 0;
        /* A connection that fails its sends stops this drain: while it is
         * still registered it would be found again, and the same rows
         * claimed and requeued in a loop. The agent's next connection
         * starts a drain of its own (or deliver_batch() kicked one), unless
         * it asked while this one ran (d->more): then this one goes on. */
        if (!agent || ((requeued || n < want) && !d->more)) break;
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
        int rc = deliver(rt, agent, &a, call->conn, quiet);
        tw_conn_unref(agent);
        if (rc == 0) {
            if (rt->queue) tw_queue_record(rt->queue, &a);
            call->status = 201;
            if (!quiet)
                tw_router_reply(call, status_msg(op, a.thing_id, a.name, a.id, a.correlation_id,
                                                 TW_STATUS_DELIVERED, NULL, NULL));
            sender_ref w = sender_of_action(&a, call->conn, quiet);
            pass_on(rt, &w); /* answers that came meanwhile */
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

    /* Decide under the lock what becomes of the answer (see the header). */
    enum { NOT_LIVE, HELD, RECORD_ONLY, TAKE_TURN, SEND_TAKE_TURN, SEND_FINAL } what = NOT_LIVE;
    tw_live snap;
    memset(&snap, 0, sizeof snap);
    tw_live *owned = NULL;
    int64_t seq = 0;
    bool unordered = false;
    pthread_mutex_lock(&rt->live_lock);
    tw_live *l = tw_hmap_get(&rt->live, action_id);
    bool found = l != NULL, mine = l && strcmp(l->agent_id, id->client_id) == 0;
    if (mine) {
        seq = l->seq;
        if (l->busy || l->nheld) {
            /* another thread has the turn, or statuses wait without one:
             * this one waits behind them (and takes the turn if free) */
            if (!hold(l, st, output, error, false, false)) {
                /* Cannot wait (out of memory, or HELD_MAX_FINAL held): a
                 * final status ends the entry here, after what it holds,
                 * unordered with the turn's thread rather than never sent
                 * (recorded only, the entry left until queue_ttl). */
                if (tw_status_final(st)) {
                    tw_hmap_del(&rt->live, action_id);
                    owned = l;
                    what = SEND_FINAL;
                    unordered = true;
                } else {
                    what = RECORD_ONLY;
                }
            } else if (l->busy)
                what = HELD;
            else
                what = (l->busy = live_snap(l, &snap)) ? TAKE_TURN : HELD;
        } else if (tw_status_final(st)) {
            tw_hmap_del(&rt->live, action_id);
            owned = l;
            what = SEND_FINAL;
        } else if (l->quiet) {
            what = RECORD_ONLY; /* the sender wants no progress */
        } else {
            what = (l->busy = live_snap(l, &snap)) ? SEND_TAKE_TURN : RECORD_ONLY;
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
    if (what == HELD) return;
    if (what == TAKE_TURN) {
        sender_ref w = sender_of_live(&snap);
        pass_on(rt, &w);
        live_snap_drop(&snap);
        return;
    }
    /* What the entry held comes first (a final status that could not be
     * held); then this one, unless one of those was final. */
    if (unordered)
        tw_log_warn("router", "action %s: final status passed on out of order", action_id);
    bool finished = false;
    if (owned && owned->nheld) {
        sender_ref w = sender_of_live(owned);
        finished = pass_held(rt, &w, owned->held, owned->nheld, true);
    }
    /* A status the store refuses (finished otherwise, e.g. cancelled) is
     * not sent: the decision that won is. */
    bool taken = !rt->queue ||
                 tw_queue_update_seq(rt->queue, action_id, seq, st, output, error) != TW_ECONFLICT;
    if (what == SEND_FINAL) {
        sender_ref w = sender_of_live(owned);
        if (taken && !finished) send_status(rt, &w, st, output, error);
        if (owned->from_queue) window_release(rt, owned->agent_id);
        live_free(owned);
    } else if (what == SEND_TAKE_TURN) {
        sender_ref w = sender_of_live(&snap);
        if (taken) send_status(rt, &w, st, output, error);
        pass_on(rt, &w); /* what came meanwhile; gives the turn back */
        live_snap_drop(&snap);
    }
}

/* ---- queries and cancel ---------------------------------------------------------- */

/* The caller's own live action that it invoked with correlationID corr
 * (live_lock taken here); its id goes to out. A walk of the live actions
 * under live_lock: only callers that gave up waiting before they learned
 * the id ask, and an index (sender and correlationID -> id) would cost
 * every live action with a correlationID an allocation and a second map
 * on the hot path, for this rare lookup. */
static bool live_by_correlation(tw_runtime *rt, const char *sender, const char *corr,
                                char out[TW_ID_MAX])
{
    bool found = false;
    pthread_mutex_lock(&rt->live_lock);
    size_t pos = 0;
    void *v;
    while (!found && tw_hmap_next(&rt->live, &pos, NULL, &v)) {
        tw_live *l = v;
        if (!l->correlation || strcmp(l->correlation, corr) || strcmp(l->sender_id, sender))
            continue;
        tw_strlcpy(out, l->action_id, TW_ID_MAX);
        found = true;
    }
    pthread_mutex_unlock(&rt->live_lock);
    return found;
}

/* The sender of live action action_id was answered with its id (a
 * queryaction by correlationID): the sweeper's late `delivered` is not
 * sent after this. Only then: a lookup that found the action but could not
 * answer leaves the late `delivered` its way to learn the id. */
static void mark_acked(tw_runtime *rt, const char *action_id)
{
    pthread_mutex_lock(&rt->live_lock);
    tw_live *l = tw_hmap_get(&rt->live, action_id);
    if (l) l->acked = true;
    pthread_mutex_unlock(&rt->live_lock);
}

/* The action a queryaction or cancelaction is about: input "<id>",
 * {"actionID": "<id>"} or {"correlationID": "<c>"}, the caller's own action
 * that it invoked with correlationID c while that action is live (delivered
 * and not finished): a synchronous call that gave up waiting before it
 * learned the action id (a quiet one hears no `delivered` until the sweep)
 * asks this way (*by_correlation set). Else the request's own
 * correlationID. NULL: none. */
static const char *action_ref(tw_runtime *rt, const tw_identity *id, const tw_msg *m,
                              char buf[TW_ID_MAX], bool *by_correlation)
{
    json_t *in = tw_msg_get(m, "input");
    *by_correlation = json_is_object(in) && !json_is_string(json_object_get(in, "actionID")) &&
                      json_is_string(json_object_get(in, "correlationID"));
    if (json_is_string(in)) return json_string_value(in);
    if (json_is_object(in) && json_is_string(json_object_get(in, "actionID")))
        return json_string_value(json_object_get(in, "actionID"));
    if (json_is_object(in) && json_is_string(json_object_get(in, "correlationID")))
        return live_by_correlation(rt, id->client_id,
                                   json_string_value(json_object_get(in, "correlationID")), buf)
                   ? buf
                   : NULL;
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
    char ref_buf[TW_ID_MAX];
    bool by_correlation = false;
    const char *ref = action_ref(rt, id, call->msg, ref_buf, &by_correlation);
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
        if (by_correlation && out) mark_acked(rt, a->id);
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
    tw_router_reply_output(call, tw_action_json(cancelled));
    /* The original sender hears of it too (it may be another connection),
     * after whatever was on its way to it before, and a live action's agent
     * is told to stop (finish_decided). */
    finish_decided(rt, cancelled, true);
    tw_action_free(cancelled);
    tw_action_free(a);
}

/* ---- expiry and deleted things ------------------------------------------------------ */

static void notify_cb(void *arg, const tw_action *a)
{
    notify_action(arg, NULL, a);
}

/* An action failed because its Thing was deleted: a live one ends, after
 * what was on its way to the sender (the agent's later answer is refused). */
static void deleted_cb(void *arg, const tw_action *a)
{
    finish_decided(arg, a, false);
}

void tw_actions_thing_deleted(tw_runtime *rt, const char *twin_id)
{
    if (!rt->queue) return;
    json_t *p = tw_problem_new(410, "thing-deleted", "gone", "the Thing was deleted", NULL);
    tw_queue_fail_thing(rt->queue, twin_id, p, deleted_cb, rt);
    json_decref(p);
}

/* A quiet action (see tw_live) still running at a sweep: its sender gets
 * the withheld `delivered` now, so a caller that gives up waiting still
 * learns the action id (to query or cancel it). The sweeper takes the
 * entry's turn first (busy), so whatever comes meanwhile (the agent's
 * answer, a cancel) waits and is passed on after `delivered`, never before
 * it. Statuses left waiting by a thread that gave up its turn (pass_on) are
 * passed on here too. */
typedef struct late_ack {
    tw_live snap;
    bool ack; /* send `delivered` first */
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
        if (l->busy) continue;
        bool ack = l->quiet && !l->acked && l->created_ms <= young;
        if (!ack && l->nheld == 0) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            late_ack *nl = realloc(list, nc * sizeof *nl);
            if (!nl) break;
            list = nl;
            cap = nc;
        }
        if (!live_snap(l, &list[n].snap)) break;
        list[n++].ack = ack;
        l->busy = true;
        if (ack) l->acked = true;
    }
    pthread_mutex_unlock(&rt->live_lock);
    for (size_t i = 0; i < n; i++) {
        late_ack *x = &list[i];
        sender_ref w = sender_of_live(&x->snap);
        if (x->ack) send_status(rt, &w, TW_STATUS_DELIVERED, NULL, NULL);
        pass_on(rt, &w);
        live_snap_drop(&x->snap);
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
     * TTL: the row stays `delivered` and can still be queried. A drained
     * one gives its slot of the drain window back (it kept it until the
     * agent reconnected: enough of them stopped the drain; found in
     * review). */
    int64_t horizon = tw_now_ms() - rt->cfg->queue_ttl_ms;
    char(*slots)[TW_ID_MAX] = NULL;
    size_t nslots = 0, cap = 0;
    pthread_mutex_lock(&rt->live_lock);
    size_t pos = 0;
    const char *k;
    void *v;
    while (tw_hmap_next(&rt->live, &pos, &k, &v)) {
        tw_live *l = v;
        if (l->created_ms >= horizon) continue;
        if (l->from_queue) {
            if (nslots == cap) {
                size_t nc = cap ? 2 * cap : 16;
                void *ns = realloc(slots, nc * sizeof *slots);
                if (!ns) continue; /* kept for the next sweep */
                slots = ns;
                cap = nc;
            }
            memcpy(slots[nslots++], l->agent_id, TW_ID_MAX);
        }
        tw_hmap_del(&rt->live, k);
        live_free(l);
    }
    pthread_mutex_unlock(&rt->live_lock);
    for (size_t i = 0; i < nslots; i++) /* drain_lock after live_lock, never inside */
        window_release(rt, slots[i]);
    free(slots);
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
