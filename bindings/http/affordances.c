/*
 * affordances.c - a Thing's properties, actions and events over HTTP, as the
 * WoT HTTP Basic and SSE profiles describe them:
 *
 *   GET    /things/{id}/properties                 readallproperties
 *   GET    /things/{id}/properties/{name}          readproperty
 *   PUT    /things/{id}/properties/{name}          writeproperty
 *   (either GET with Accept: text/event-stream)    observe(all)properties
 *   POST   /things/{id}/actions/{name}             invokeaction: 200 + output when
 *                                                  it completes within action_wait_ms,
 *                                                  else 201 + Location
 *   GET    /things/{id}/actions                    queryallactions
 *   GET    /things/{id}/actions/{name}/{actionID}  queryaction
 *   DELETE /things/{id}/actions/{name}/{actionID}  cancelaction
 *   GET    /things/{id}/events[/{name}]            SSE: subscribe(all)event(s);
 *                                                  without Accept: text/event-stream,
 *                                                  the last value (readevent)
 *
 * Each request is one message through the router (so authn, authz, rate
 * limits and validation apply exactly as on every other binding); call.c
 * waits for its answer. The reads of properties take a shorter way with
 * the same checks (the direct read path, below).
 */
#include "http_int.h"

#include "runtime/json_enc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_WAIT_MS 10000

static enum MHD_Result timeout_reply(http_req *r)
{
    atomic_fetch_add_explicit(&r->h->st.rejected[6], 1, memory_order_relaxed);
    if (atomic_load(&r->h->stopping))
        return http_reply_error(r, 503, "stopping", "service unavailable",
                                "the runtime is stopping");
    return http_reply_error(r, 504, "timeout", "timed out", "no answer in time");
}

static json_t *output_of(tw_msg *resp)
{
    json_t *o = tw_msg_get(resp, "output");
    if (!o) o = tw_msg_get(resp, "value");
    return o;
}

/* The output of a read, as JSON. */
static enum MHD_Result answer_output(http_req *r, tw_msg *resp)
{
    enum MHD_Result res;
    if (!resp) return timeout_reply(r);
    if (http_resp_error(r, resp, &res)) return res;
    json_t *o = output_of(resp);
    return http_reply_json(r, 200, NULL, o ? json_incref(o) : json_null(), NULL);
}

static void action_href(http_req *r, const char *action_id, char *out, size_t n)
{
    snprintf(out, n, "/things/");
    http_seg_encode(out, n, r->segs[1]);
    strncat(out, "/actions/", n - strlen(out) - 1);
    http_seg_encode(out, n, r->aux);
    strncat(out, "/", n - strlen(out) - 1);
    http_seg_encode(out, n, action_id);
}

/* An action status as the HTTP Basic Profile shows it. */
static json_t *status_body(tw_msg *resp, const char *href)
{
    tw_status st = tw_msg_status(resp);
    json_t *b = json_pack("{s:s,s:s}", "status", tw_status_wot(st ? st : TW_STATUS_PENDING),
                          "twindStatus", tw_status_name(st ? st : TW_STATUS_PENDING));
    if (!b) return NULL;
    if (href) json_object_set_new(b, "href", json_string(href));
    json_t *id = tw_msg_get(resp, "actionID");
    if (id) json_object_set(b, "actionID", id);
    json_t *o = tw_msg_get(resp, "output");
    if (o) json_object_set(b, "output", o);
    return b;
}

static enum MHD_Result answer_invoke(http_req *r, tw_msg *resp)
{
    enum MHD_Result res;
    if (!resp) return timeout_reply(r); /* not even a pending answer */
    if (http_resp_error(r, resp, &res)) return res;
    tw_status st = tw_msg_status(resp);
    if (st == TW_STATUS_COMPLETED || st == TW_STATUS_NONE) {
        json_t *o = output_of(resp);
        if (!o || json_is_null(o)) return http_reply_empty(r, 204, NULL);
        return http_reply_json(r, 200, NULL, json_incref(o), NULL);
    }
    const char *aid = json_string_value(tw_msg_get(resp, "actionID"));
    char href[1024] = "";
    if (aid) action_href(r, aid, href, sizeof href);
    return http_reply_json(r, 201, NULL, status_body(resp, aid ? href : NULL), "Location",
                           aid ? href : NULL, NULL);
}

static enum MHD_Result answer_write(http_req *r, tw_msg *resp)
{
    enum MHD_Result res;
    if (!resp) return timeout_reply(r);
    if (http_resp_error(r, resp, &res)) return res;
    tw_status st = tw_msg_status(resp);
    if (st == TW_STATUS_COMPLETED || st == TW_STATUS_NONE) return http_reply_empty(r, 204, NULL);
    return http_reply_json(r, 202, NULL, status_body(resp, NULL), NULL);
}

static enum MHD_Result answer_query(http_req *r, tw_msg *resp)
{
    enum MHD_Result res;
    if (!resp) return timeout_reply(r);
    if (http_resp_error(r, resp, &res)) return res;
    json_t *o = output_of(resp);
    if (o && json_is_object(o) && r->op == TW_OP_QUERYACTION) {
        /* Show the profile's four states beside twind's own. */
        json_t *copy = json_deep_copy(o);
        const char *st = json_string_value(json_object_get(copy, "status"));
        if (st) {
            json_object_set_new(copy, "twindStatus", json_string(st));
            json_object_set_new(copy, "status", json_string(tw_status_wot(tw_status_parse(st))));
        }
        return http_reply_json(r, 200, NULL, copy, NULL);
    }
    return http_reply_json(r, 200, NULL, o ? json_incref(o) : json_null(), NULL);
}

static enum MHD_Result answer_cancel(http_req *r, tw_msg *resp)
{
    enum MHD_Result res;
    if (!resp) return timeout_reply(r);
    if (http_resp_error(r, resp, &res)) return res;
    return http_reply_empty(r, 204, NULL);
}

static enum MHD_Result call(http_req *r, tw_op op, const char *name, json_t *input,
                            enum MHD_Result (*on_answer)(http_req *, tw_msg *), http_call_wait wait,
                            unsigned wait_ms)
{
    if (input && json_is_null(input)) {
        json_decref(input);
        input = NULL;
    }
    json_t *problem = NULL;
    tw_msg *m = http_request_new(r->h, op, r->segs[1], name, r->id.client_id, input, &problem);
    if (!m) return http_reply_problem(r, problem);
    r->on_answer = on_answer;
    return http_call_start(r, m, wait, wait_ms);
}

/* ---- the direct read path ----
 *
 * readproperty and readallproperties are most of what pollers send, and
 * routing them costs two messages (the request and its response) and an
 * encoding per read. The binding answers them itself instead, with the same
 * checks: tw_router_admit() resolves the Thing and runs the configured
 * middleware chain (authn, authz, rate, validate, log) on a request
 * message, the twin's own read produces the value, and
 * tw_router_admit_done() runs the `after` stages and counts the request in
 * the router's statistics, as routing would have. What it saves:
 *   - the request message is built once per TCP connection and reused for
 *     the next identical read (same operation, Thing, name and sender); it
 *     is only ever the chain's view of the request, never sent or kept;
 *   - no response message;
 *   - the value's encoding, as a libmicrohttpd response queued again and
 *     again, is kept per connection beside a reference to the value it
 *     encodes: the value store hands out the same immutable value until it
 *     changes, so an unchanged value is not encoded again;
 *   - a property the validate stage found in the TD is read from the value
 *     store at once (the twin's read would look the TD up again).
 */

static bool same(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* The connection's request message for this read (borrowed from the
 * socket), built on first use; NULL with *problem when the thing id or
 * name is not valid in an envelope. */
static tw_msg *read_request(http_req *r, tw_op op, const char *name, json_t **problem)
{
    http_sock *sk = r->sock;
    tw_msg *m = sk->read_req;
    if (m && tw_msg_get_op(m) == op && same(tw_msg_thing(m), r->segs[1]) &&
        (name ? same(tw_msg_name(m), name) : !tw_msg_name(m)) &&
        same(tw_msg_sender(m), r->id.client_id))
        return m;
    if (m) tw_msg_unref(m);
    sk->read_req = http_request_new(r->h, op, r->segs[1], name, r->id.client_id, NULL, problem);
    return sk->read_req;
}

/* Answers with the encoding of v (reference stolen). */
static enum MHD_Result reply_value(http_req *r, tw_op op, json_t *v)
{
    http_sock *sk = r->sock;
    if (!v) return http_reply_bytes(r, 200, "application/json", "null", 4, false, NULL);
    if (v == sk->read_val) {
        json_decref(v);
        return http_reply_response(r, 200, sk->read_resp);
    }
    size_t len = 0;
    char *enc = tw_json_encode(v, &len);
    if (!enc) {
        json_decref(v);
        return http_reply_code(r, TW_ENOMEM, NULL);
    }
    if (op != TW_OP_READPROPERTY) { /* a new object every time: not worth keeping */
        json_decref(v);
        enum MHD_Result res = http_reply_bytes(r, 200, "application/json", enc, len, true, NULL);
        free(enc);
        return res;
    }
    /* The response owns the bytes and libmicrohttpd counts its references:
     * dropping ours while one is being sent is safe. */
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, enc, MHD_RESPMEM_MUST_FREE);
    if (!resp || MHD_add_response_header(resp, "Content-Type", "application/json") != MHD_YES) {
        if (resp)
            MHD_destroy_response(resp);
        else
            free(enc);
        json_decref(v);
        return http_reply_code(r, TW_ENOMEM, NULL);
    }
    json_decref(sk->read_val);
    if (sk->read_resp) MHD_destroy_response(sk->read_resp);
    sk->read_val = v;
    sk->read_resp = resp;
    return http_reply_response(r, 200, resp);
}

static int problem_status(json_t *problem)
{
    json_t *st = json_object_get(problem, "status");
    return json_is_integer(st) ? (int)json_integer_value(st) : 500;
}

static enum MHD_Result read_direct(http_req *r, tw_op op, const char *name)
{
    tw_http *h = r->h;
    enum MHD_Result res;
    json_t *problem = NULL;
    tw_msg *m = read_request(r, op, name, &problem);
    if (!m) return http_reply_problem(r, problem);
    tw_conn *conn = http_call_conn(r, &res);
    if (!conn) return res;
    r->op = op;
    /* Our reference keeps it from being writable: a stage that changes the
     * message gets a copy, and the next read finds it as it was. */
    tw_msg_ref(m);
    tw_mw_call call;
    int status;
    if (tw_router_admit(h->rt, conn, m, &call)) {
        status = call.status;
        res = http_reply_problem(r, json_incref(call.problem));
    } else {
        void *ctx = NULL;
        const tw_twin_ops *tops = tw_runtime_twin(h->rt, &ctx);
        json_t *out = NULL;
        int rc = TW_EUNSUPPORTED;
        if (op == TW_OP_READPROPERTY && call.aff_found && h->values) {
            /* The validate stage found the property in the TD: what the
             * twin's read would check before it asks the value store. */
            rc = tw_values_get(h->values, call.twin_id, TW_AFF_PROPERTY, name, &out, NULL);
            if (rc) problem = tw_problem_from_error(rc, "no value yet", "name");
        } else if (tops) {
            rc = tops->read(ctx, call.msg, &out, &problem);
        } else {
            problem = tw_problem_from_error(rc, "no value store", NULL);
        }
        if (rc) {
            if (!problem) problem = tw_problem_from_error(rc, NULL, NULL);
            status = problem_status(problem);
            json_decref(out);
            res = http_reply_problem(r, problem);
        } else {
            status = 200;
            res = reply_value(r, op, out);
        }
    }
    tw_router_admit_done(&call, status);
    tw_msg_unref(m);
    return res;
}

/* ---- streams ---- */

static int setup_sub(http_req *r, http_stream *s, json_t **problem)
{
    return http_sse_subscribe(s, r->op, r->segs[1], r->nsegs > 3 ? r->segs[3] : NULL, problem);
}

static enum MHD_Result stream(http_req *r, tw_op op)
{
    r->op = op;
    return http_sse_open(r, SSE_AFFORDANCE, setup_sub);
}

/* ---- dispatch ---- */

static bool is(const http_req *r, const char *m)
{
    return strcmp(r->method, m) == 0;
}

static enum MHD_Result properties(http_req *r)
{
    bool get = is(r, "GET") || r->head;
    if (r->nsegs == 3) {
        if (!get) return http_reply_405(r, "GET, HEAD");
        if (http_wants_sse(r)) return stream(r, TW_OP_OBSERVEALLPROPERTIES);
        if (r->sock) return read_direct(r, TW_OP_READALLPROPERTIES, NULL);
        return call(r, TW_OP_READALLPROPERTIES, NULL, NULL, answer_output, CALL_WAIT_RESPONSE,
                    READ_WAIT_MS);
    }
    if (r->nsegs != 4) return http_reply_code(r, TW_ENOTFOUND, "no such resource");
    const char *name = r->segs[3];
    if (get) {
        if (http_wants_sse(r)) return stream(r, TW_OP_OBSERVEPROPERTY);
        if (r->sock) return read_direct(r, TW_OP_READPROPERTY, name);
        return call(r, TW_OP_READPROPERTY, name, NULL, answer_output, CALL_WAIT_RESPONSE,
                    READ_WAIT_MS);
    }
    if (is(r, "PUT")) {
        enum MHD_Result res;
        json_t *v = http_body_json(r, NULL, false, &res);
        if (!v) return res;
        if (json_is_null(v)) v = json_null();
        r->op = TW_OP_WRITEPROPERTY;
        /* input must be present even when the value is null */
        json_t *problem = NULL;
        tw_msg *m = http_request_new(r->h, TW_OP_WRITEPROPERTY, r->segs[1], name, r->id.client_id,
                                     v, &problem);
        if (!m) return http_reply_problem(r, problem);
        r->on_answer = answer_write;
        return http_call_start(r, m, CALL_WAIT_FINAL, r->h->cfg.action_wait_ms);
    }
    return http_reply_405(r, "GET, HEAD, PUT");
}

static enum MHD_Result actions(http_req *r)
{
    if (r->nsegs == 3) {
        if (!is(r, "GET") && !r->head) return http_reply_405(r, "GET, HEAD");
        return call(r, TW_OP_QUERYALLACTIONS, NULL, NULL, answer_query, CALL_WAIT_RESPONSE,
                    READ_WAIT_MS);
    }
    const char *name = r->segs[3];
    if (tw_strlcpy(r->aux, name, sizeof r->aux))
        return http_reply_code(r, TW_ENOTFOUND, "no such action");
    if (r->nsegs == 4) {
        if (!is(r, "POST")) return http_reply_405(r, "POST");
        enum MHD_Result res;
        json_t *in = http_body_json(r, NULL, true, &res);
        if (!in) return res;
        return call(r, TW_OP_INVOKEACTION, name, in, answer_invoke, CALL_WAIT_FINAL,
                    r->h->cfg.action_wait_ms);
    }
    if (r->nsegs != 5) return http_reply_code(r, TW_ENOTFOUND, "no such resource");
    const char *aid = r->segs[4];
    tw_op op;
    enum MHD_Result (*fn)(http_req *, tw_msg *);
    if (is(r, "GET") || r->head) {
        op = TW_OP_QUERYACTION;
        fn = answer_query;
    } else if (is(r, "DELETE")) {
        op = TW_OP_CANCELACTION;
        fn = answer_cancel;
    } else {
        return http_reply_405(r, "GET, HEAD, DELETE");
    }
    json_t *problem = NULL;
    tw_msg *m =
        http_request_new(r->h, op, r->segs[1], name, r->id.client_id, json_string(aid), &problem);
    if (!m) return http_reply_problem(r, problem);
    r->on_answer = fn;
    return http_call_start(r, m, CALL_WAIT_RESPONSE, READ_WAIT_MS);
}

static enum MHD_Result events(http_req *r)
{
    if (!is(r, "GET") && !r->head) return http_reply_405(r, "GET, HEAD");
    if (r->nsegs > 4) return http_reply_code(r, TW_ENOTFOUND, "no such resource");
    bool one = r->nsegs == 4;
    if (http_wants_sse(r)) return stream(r, one ? TW_OP_SUBSCRIBEEVENT : TW_OP_SUBSCRIBEALLEVENTS);
    return call(r, one ? TW_OP_READEVENT : TW_OP_READALLEVENTS, one ? r->segs[3] : NULL, NULL,
                answer_output, CALL_WAIT_RESPONSE, READ_WAIT_MS);
}

enum MHD_Result http_affordance_route(http_req *r)
{
    const char *kind = r->segs[2];
    if (strcmp(kind, "properties") == 0) return properties(r);
    if (strcmp(kind, "actions") == 0) return actions(r);
    if (strcmp(kind, "events") == 0) return events(r);
    return http_reply_code(r, TW_ENOTFOUND, "no such resource");
}
