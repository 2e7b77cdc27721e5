/*
 * call.c - one HTTP request that waits for the router's answer.
 *
 * The request becomes an ephemeral tw_conn (it gets only the answers to what
 * it sent) whose bdata is the http_call. The message gets a correlationID
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

enum MHD_Result http_call_start(http_req *r, tw_msg *m, http_call_wait wait, unsigned wait_ms)
{
    tw_http *h = r->h;
    http_call *c = calloc(1, sizeof *c);
    if (!c) {
        tw_msg_unref(m);
        return http_reply_code(r, TW_ENOMEM, NULL);
    }
    c->bd.tag = BDATA_CALL;
    c->h = h;
    c->mc = r->mc;
    c->wait = wait;
    pthread_mutex_init(&c->mu, NULL);
    const char *corr = tw_msg_correlation(m);
    if (corr) {
        tw_strlcpy(c->corr, corr, sizeof c->corr);
    } else {
        tw_id_new("h", c->corr);
        tw_msg_set_str(m, "correlationID", c->corr);
    }
    tw_conn *conn = tw_conn_new(h->rt, h->b, c, r->remote);
    if (!conn) {
        pthread_mutex_destroy(&c->mu);
        free(c);
        tw_msg_unref(m);
        return http_reply_code(r, TW_ENOMEM, NULL);
    }
    tw_conn_set_ephemeral(conn);
    c->conn = conn;
    r->call = c;
    r->op = tw_msg_get_op(m);
    int rc = tw_conn_set_identity(conn, &r->id);
    if (rc) {
        tw_msg_unref(m);
        http_call_release(r);
        return http_reply_error(r, 401, "unauthenticated", "unauthenticated", "the token expired");
    }
    c->deadline_us = tw_mono_us() + (int64_t)wait_ms * 1000;
    list_add(h, c);
    tw_router_handle(h->rt, conn, m);
    tw_msg_unref(m);

    pthread_mutex_lock(&c->mu);
    if (!c->done) {
        c->suspended = true;
        MHD_suspend_connection(r->mc);
        pthread_mutex_unlock(&c->mu);
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

bool http_call_ready(http_req *r, tw_msg **resp)
{
    http_call *c = r->call;
    pthread_mutex_lock(&c->mu);
    bool done = c->done;
    if (done) {
        *resp = c->resp;
        c->resp = NULL;
        if (c->timed_out && c->wait == CALL_WAIT_RESPONSE && *resp == NULL) *resp = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    return done;
}

void http_call_release(http_req *r)
{
    http_call *c = r->call;
    if (!c) return;
    r->call = NULL;
    list_del(c->h, c);
    pthread_mutex_lock(&c->mu);
    c->done = true;
    pthread_mutex_unlock(&c->mu);
    tw_conn_close(c->conn);
    tw_conn_unref(c->conn);
    c->conn = NULL;
    http_graveyard_park(c->h, &c->bd);
}

int http_call_send(tw_http *h, http_call *c, tw_msg *m)
{
    const char *corr = tw_msg_correlation(m);
    if (!corr || strcmp(corr, c->corr) != 0) return 0; /* not the answer we wait for */
    pthread_mutex_lock(&c->mu);
    if (c->done) {
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
