/*
 * messages.c - the single-connection mode for agents and applications.
 *
 *   GET  /sse       one stream carrying every message addressed to this client:
 *                   responses, action notifications, notifications of its
 *                   subscriptions and, for an agent, the requests for its
 *                   Things (event: the message type, data: the envelope)
 *   POST /messages  sends an envelope (or an array of at most 1000) on the
 *                   client's behalf
 *
 * A POST from a client that has a /sse stream of the same session open is
 * routed as that stream's connection (so subscriptions attach to it and
 * answers arrive on it) and gets 202 {"messageID"}. Without a stream, a
 * request waits for its answer like any HTTP call (200 with the response
 * envelope) and notifications and responses get 202. An agent can thus live
 * entirely on HTTPS: /sse for what it receives, /messages for what it sends.
 */
#include "http_int.h"

#include "runtime/queue.h"

#include <stdlib.h>
#include <string.h>

#define MAX_BATCH 1000

typedef struct inbox_ctx {
    http_stream *s;
    int64_t last;
} inbox_ctx;

static void inbox_one(void *arg, int64_t seq, tw_msg *m)
{
    inbox_ctx *ic = arg;
    size_t len;
    const char *env = tw_msg_encode(m, &len);
    if (env && http_sse_push_raw(ic->s, 0, tw_msg_type_name(tw_msg_get_type(m)), env, len) == 0)
        ic->last = seq;
}

/* A client resuming with Last-Event-ID gets the subscriptions of its
 * session's previous stream back (authorized again), so the catch-up
 * includes the events it missed under them. What arrived for this client
 * while it had no connection (its inbox) comes first, without ids (it is
 * not part of the replay window), and is then acknowledged. */
static int setup_envelope(http_req *r, http_stream *s, json_t **problem)
{
    uint64_t last;
    if (http_last_event_id(r, &last)) http_sse_restore_subs(s);
    tw_queue *q = tw_runtime_queue(r->h->rt);
    if (!q) return 0;
    inbox_ctx ic = {s, 0};
    if (tw_inbox_replay(q, s->client, 0, inbox_one, &ic) == 0 && ic.last > 0)
        tw_inbox_ack(q, s->client, ic.last);
    return 0;
}

enum MHD_Result http_sse_route(http_req *r)
{
    if (r->nsegs != 1) return http_reply_code(r, TW_ENOTFOUND, "no such resource");
    if (strcmp(r->method, "GET") != 0) return http_reply_405(r, "GET");
    return http_sse_open(r, SSE_ENVELOPE, setup_envelope);
}

typedef struct find_ctx {
    tw_binding *b;
    const char *session;
    http_stream *found;
    tw_conn *conn; /* referenced */
} find_ctx;

static void find_stream(void *arg, tw_conn *c)
{
    find_ctx *fc = arg;
    if (fc->found || tw_conn_binding(c) != fc->b || tw_conn_closed(c)) return;
    http_bdata *bd = tw_conn_bdata(c);
    if (!bd || bd->tag != BDATA_STREAM) return;
    http_stream *s = (http_stream *)bd;
    if (s->mode == SSE_ENVELOPE && strcmp(s->session, fc->session) == 0) {
        fc->found = s;
        fc->conn = tw_conn_ref(c);
    }
}

static enum MHD_Result answer_envelope(http_req *r, tw_msg *resp)
{
    if (!resp) return http_reply_error(r, 504, "timeout", "timed out", "no answer in time");
    size_t len;
    const char *bytes = tw_msg_encode(resp, &len);
    if (!bytes) return http_reply_code(r, TW_ENOMEM, NULL);
    return http_reply_bytes(r, 200, "application/json", bytes, len, true, NULL);
}

/* Remembers what a stream subscribes to, for its replay filters. */
static void note_subscription(http_stream *s, tw_msg *m)
{
    tw_op op = tw_msg_get_op(m);
    if (op != TW_OP_SUBSCRIBEEVENT && op != TW_OP_SUBSCRIBEALLEVENTS &&
        op != TW_OP_OBSERVEPROPERTY && op != TW_OP_OBSERVEALLPROPERTIES)
        return;
    /* Filters decide what a catch-up replays, and this one is not
     * authorized yet (the router decides after us): never add one to a
     * stream still catching up. Remembered filters are authorized again
     * when a later stream restores them. */
    pthread_mutex_lock(&s->mu);
    if (!s->catchup) http_sse_add_filter(s, op, tw_msg_thing(m), tw_msg_name(m));
    pthread_mutex_unlock(&s->mu);
}

enum MHD_Result http_messages_route(http_req *r)
{
    tw_http *h = r->h;
    if (r->nsegs != 1) return http_reply_code(r, TW_ENOTFOUND, "no such resource");
    if (strcmp(r->method, "POST") != 0) return http_reply_405(r, "POST");
    enum MHD_Result res;
    json_t *body = http_body_json(r, NULL, false, &res);
    if (!body) return res;
    bool batch = json_is_array(body);
    size_t n = batch ? json_array_size(body) : 1;
    if (batch && (n == 0 || n > MAX_BATCH)) {
        json_decref(body);
        return http_reply_error(r, 400, "invalid", "invalid input",
                                "a batch holds 1 to 1000 envelopes");
    }
    /* Validate everything before routing anything. */
    tw_msg **msgs = calloc(n, sizeof *msgs);
    if (!msgs) {
        json_decref(body);
        return http_reply_code(r, TW_ENOMEM, NULL);
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = batch ? json_incref(json_array_get(body, i)) : json_incref(body);
        json_t *problem = NULL;
        if (tw_msg_from_json(e, &msgs[i], &problem)) {
            for (size_t j = 0; j < i; j++)
                tw_msg_unref(msgs[j]);
            free(msgs);
            json_decref(body);
            if (batch && problem)
                json_object_set_new(problem, "index", json_integer((json_int_t)i));
            return http_reply_problem(r, problem ? problem
                                                 : tw_problem_from_error(TW_EINVAL, NULL, NULL));
        }
    }
    json_decref(body);
    for (size_t i = 0; i < n; i++) {
        /* The runtime overwrites senderID with the identity anyway; setting
         * it while the message is unshared saves the router a copy. */
        tw_msg_set_str(msgs[i], "senderID", r->id.client_id);
        if (!tw_msg_id(msgs[i])) {
            char id[TW_ID_MAX];
            http_new_id(h, id);
            tw_msg_set_str(msgs[i], "messageID", id);
        }
    }

    find_ctx fc = {h->b, r->id.session_id, NULL, NULL};
    tw_conns_of_client(h->rt, r->id.client_id, find_stream, &fc);
    if (fc.found || batch || tw_msg_get_type(msgs[0]) != TW_TYPE_REQUEST) {
        tw_conn *conn = NULL;
        bool ephemeral = false;
        if (fc.found) {
            conn = fc.conn;
        } else {
            conn = tw_conn_new(h->rt, h->b, NULL, r->remote);
            if (conn) {
                tw_conn_set_ephemeral(conn);
                ephemeral = true;
                if (tw_conn_set_identity(conn, &r->id)) {
                    tw_conn_close(conn);
                    tw_conn_unref(conn);
                    conn = NULL;
                }
            }
        }
        json_t *ids = json_array();
        http_defer_begin(h);
        for (size_t i = 0; i < n; i++) {
            if (conn) {
                if (fc.found && !tw_conn_closed(conn)) note_subscription(fc.found, msgs[i]);
                const char *mid = tw_msg_id(msgs[i]);
                if (mid) json_array_append_new(ids, json_string(mid));
                tw_router_handle(h->rt, conn, msgs[i]);
            }
            tw_msg_unref(msgs[i]);
        }
        http_defer_end(h);
        free(msgs);
        if (!conn) {
            json_decref(ids);
            return http_reply_code(r, TW_ENOMEM, NULL);
        }
        if (ephemeral) tw_conn_close(conn);
        tw_conn_unref(conn);
        json_t *out = batch ? json_pack("{s:o}", "messageIDs", ids)
                            : json_pack("{s:O?}", "messageID", json_array_get(ids, 0));
        if (!batch) json_decref(ids);
        return http_reply_json(r, 202, NULL, out, NULL);
    }
    /* A lone request without a stream: wait for its answer. */
    tw_msg *m = msgs[0];
    free(msgs);
    r->on_answer = answer_envelope;
    return http_call_start(r, m, CALL_WAIT_RESPONSE, 10000);
}
