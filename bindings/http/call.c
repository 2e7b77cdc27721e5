/*
 * call.c - one HTTP request that waits for the router's answer.
 *
 * The request goes through an ephemeral tw_conn (it gets only the answers to
 * what it sent) whose bdata is the http_call; the call and its connection
 * belong to the TCP connection and are reused by its next request. The message gets a correlationID
 * (unless the client chose one) and goes to tw_router_handle(). Most reads
 * are answered synchronously, inside that call; otherwise the libmicrohttpd
 * connection is suspended and ops->send, on whatever thread the answer comes
 * from, stores it and resumes the connection. A call that waits for a final
 * action status (invokeaction, writeproperty) keeps the latest answer
 * (carrying the actionID) and finishes early on a final or `queued` status;
 * the housekeeper resumes calls whose wait expired.
 *
 * Locking: h->mu (the list of waiting calls) is taken before c->mu, never
 * the other way round.
 */
#include "http_int.h"

#include <stdlib.h>
#include <string.h>

static void list_add(tw_http *h, http_call *c)
{
    pthread_mutex_lock(&h->mu);
    c->wprev = NULL;
    c->wnext = h->waiting;
    if (h->waiting) h->waiting->wprev = c;
    h->waiting = c;
    c->in_list = true;
    pthread_mutex_unlock(&h->mu);
}

static void list_del(tw_http *h, http_call *c)
{
    /* in_list changes only on the connection's own libmicrohttpd thread
     * (list_add, list_del), which is this one. */
    if (!c->in_list) return;
    pthread_mutex_lock(&h->mu);
    if (c->in_list) {
        if (c->wprev)
            c->wprev->wnext = c->wnext;
        else
            h->waiting = c->wnext;
        if (c->wnext) c->wnext->wprev = c->wprev;
        c->in_list = false;
    }
    pthread_mutex_unlock(&h->mu);
}

/* The socket's call, created on first use; NULL on ENOMEM. */
static http_call *call_get(http_req *r)
{
    tw_http *h = r->h;
    http_call *c = r->sock ? r->sock->call : NULL;
    if (c && !c->busy && !tw_conn_closed(c->conn)) return c;
    if (c && !c->busy) { /* closed under us (logout of its last session) */
        r->sock->call = NULL;
        http_call_free(h, c);
    }
    c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->bd.tag = BDATA_CALL;
    c->h = h;
    pthread_mutex_init(&c->mu, NULL);
    c->conn = tw_conn_new(h->rt, h->b, c, r->remote);
    if (!c->conn) {
        pthread_mutex_destroy(&c->mu);
        free(c);
        return NULL;
    }
    tw_conn_set_ephemeral(c->conn);
    if (r->sock && !r->sock->call) r->sock->call = c;
    return c;
}

tw_conn *http_call_conn(http_req *r, enum MHD_Result *res)
{
    http_call *c = r->sock ? call_get(r) : NULL;
    if (!c) {
        *res = http_reply_code(r, TW_ENOMEM, NULL);
        return NULL;
    }
    if (tw_conn_set_identity(c->conn, &r->id)) {
        *res = http_reply_error(r, 401, "unauthenticated", "unauthenticated", "the token expired");
        return NULL;
    }
    return c->conn;
}

enum MHD_Result http_call_start(http_req *r, tw_msg *m, http_call_wait wait, unsigned wait_ms)
{
    tw_http *h = r->h;
    http_call *c = call_get(r);
    if (!c) {
        tw_msg_unref(m);
        return http_reply_code(r, TW_ENOMEM, NULL);
    }
    char corr[TW_ID_MAX];
    const char *mc = tw_msg_correlation(m);
    if (mc) {
        tw_strlcpy(corr, mc, sizeof corr);
    } else {
        http_new_id(h, corr);
        tw_msg_set_str(m, "correlationID", corr);
    }
    /* The runtime stamps the sender from the identity; doing it while we
     * hold the only reference saves the router a copy of the message. */
    const char *snd = tw_msg_sender(m);
    if (!snd || strcmp(snd, r->id.client_id) != 0) tw_msg_set_str(m, "senderID", r->id.client_id);
    pthread_mutex_lock(&c->mu);
    c->busy = true;
    c->mc = r->mc;
    c->wait = wait;
    c->done = c->timed_out = c->suspended = false;
    if (c->resp) tw_msg_unref(c->resp);
    c->resp = NULL;
    memcpy(c->corr, corr, sizeof corr);
    c->deadline_us = tw_mono_us() + (int64_t)wait_ms * 1000;
    pthread_mutex_unlock(&c->mu);
    r->call = c;
    r->op = tw_msg_get_op(m);
    if (tw_conn_set_identity(c->conn, &r->id)) {
        tw_msg_unref(m);
        http_call_release(r);
        return http_reply_error(r, 401, "unauthenticated", "unauthenticated", "the token expired");
    }
    tw_router_handle(h->rt, c->conn, m);
    tw_msg_unref(m);

    pthread_mutex_lock(&c->mu);
    if (!c->done) {
        c->suspended = true;
        MHD_suspend_connection(r->mc);
        pthread_mutex_unlock(&c->mu);
        /* Only waiting calls need the housekeeper's deadline. Adding it
         * after the unlock is safe: libmicrohttpd runs this connection's
         * resumption on this thread, after we return. */
        list_add(h, c);
        return MHD_YES;
    }
    pthread_mutex_unlock(&c->mu);
    /* Answered synchronously. */
    tw_msg *resp = NULL;
    http_call_ready(r, &resp);
    enum MHD_Result res = r->on_answer(r, resp);
    if (resp) tw_msg_unref(resp);
    http_call_release(r);
    return res;
}

enum MHD_Result http_call_wait_again(http_req *r)
{
    http_call *c = r->call;
    pthread_mutex_lock(&c->mu);
    if (!c->done && !c->suspended) { /* woken early: sleep on */
        c->suspended = true;
        MHD_suspend_connection(r->mc);
    }
    pthread_mutex_unlock(&c->mu);
    return MHD_YES;
}

bool http_call_ready(http_req *r, tw_msg **resp)
{
    http_call *c = r->call;
    pthread_mutex_lock(&c->mu);
    bool done = c->done;
    if (done) {
        *resp = c->resp;
        c->resp = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    return done;
}

void http_call_free(tw_http *h, http_call *c)
{
    list_del(h, c);
    tw_conn_close(c->conn);
    tw_conn_unref(c->conn);
    c->conn = NULL;
    http_graveyard_park(h, &c->bd);
}

void http_call_release(http_req *r)
{
    http_call *c = r->call;
    if (!c) return;
    r->call = NULL;
    list_del(c->h, c);
    pthread_mutex_lock(&c->mu);
    c->done = true; /* late answers are dropped */
    c->busy = false;
    c->corr[0] = '\0';
    if (c->resp) tw_msg_unref(c->resp);
    c->resp = NULL;
    pthread_mutex_unlock(&c->mu);
    if (!r->sock || r->sock->call != c) http_call_free(c->h, c); /* a one-off */
}

int http_call_send(tw_http *h, http_call *c, tw_msg *m)
{
    const char *corr = tw_msg_correlation(m);
    if (!corr) return 0;
    pthread_mutex_lock(&c->mu);
    if (c->done || strcmp(corr, c->corr) != 0) { /* not the answer we wait for */
        pthread_mutex_unlock(&c->mu);
        return 0;
    }
    if (c->resp) tw_msg_unref(c->resp);
    c->resp = tw_msg_ref(m);
    tw_status st = tw_msg_status(m);
    bool fin = c->wait == CALL_WAIT_RESPONSE || tw_msg_get(m, "error") != NULL ||
               tw_status_final(st) || st == TW_STATUS_QUEUED || st == TW_STATUS_NONE;
    if (fin) {
        c->done = true;
        if (c->suspended) {
            c->suspended = false;
            MHD_resume_connection(c->mc);
        }
    }
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int64_t http_calls_expire(tw_http *h, int64_t now_us)
{
    int64_t next = 0;
    pthread_mutex_lock(&h->mu);
    for (http_call *c = h->waiting; c; c = c->wnext) {
        pthread_mutex_lock(&c->mu);
        if (!c->done && c->deadline_us <= now_us) {
            c->done = true;
            c->timed_out = true;
            if (c->suspended) {
                c->suspended = false;
                MHD_resume_connection(c->mc);
            }
        } else if (!c->done && (!next || c->deadline_us < next)) {
            next = c->deadline_us;
        }
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&h->mu);
    return next;
}

void http_calls_abort_all(tw_http *h)
{
    http_calls_expire(h, INT64_MAX);
}

bool http_resp_error(http_req *r, tw_msg *resp, enum MHD_Result *res)
{
    json_t *err = tw_msg_get(resp, "error");
    if (!err) return false;
    *res = http_reply_problem(r, json_deep_copy(err));
    return true;
}
