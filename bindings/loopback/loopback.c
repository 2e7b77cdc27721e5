/*
 * loopback.c - the in-process binding: a mutex-protected FIFO of captured
 * messages per connection, with a condition variable for tests that wait.
 */
#include "loopback.h"

#include "runtime/router.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOOP_MAX_PENDING 1000000

struct tw_loop {
    tw_runtime *rt;
    tw_binding *b;
};

typedef struct item {
    struct item *next;
    tw_msg *m;
} item;

struct tw_loop_conn {
    tw_loop *loop;
    tw_conn *conn;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    item *head, *tail;
    int pending;
    bool discard;
    tw_loop_fn responder;
    void *responder_arg;
    atomic_uint_fast64_t received;
    atomic_bool closed_by_runtime;
};

static int loop_send(tw_binding *b, tw_conn *c, tw_msg *m)
{
    tw_loop_conn *lc = tw_conn_bdata(c);
    atomic_fetch_add_explicit(&lc->received, 1, memory_order_relaxed);
    if (lc->discard) {
        size_t len;
        return tw_msg_encode(m, &len) ? 0 : TW_ENOMEM;
    }
    if (lc->responder) {
        lc->responder(lc->responder_arg, lc, m);
        return 0;
    }
    item *it = malloc(sizeof *it);
    if (!it) return TW_ENOMEM;
    it->m = tw_msg_ref(m);
    it->next = NULL;
    pthread_mutex_lock(&lc->lock);
    if (lc->pending >= LOOP_MAX_PENDING) {
        pthread_mutex_unlock(&lc->lock);
        tw_msg_unref(it->m);
        free(it);
        return TW_EFULL;
    }
    if (lc->tail)
        lc->tail->next = it;
    else
        lc->head = it;
    lc->tail = it;
    lc->pending++;
    pthread_cond_signal(&lc->cond);
    pthread_mutex_unlock(&lc->lock);
    return 0;
}

static void loop_close_conn(tw_binding *b, tw_conn *c)
{
    tw_loop_conn *lc = tw_conn_bdata(c);
    atomic_store(&lc->closed_by_runtime, true);
    tw_conn_close(c);
}

static void loop_destroy(tw_binding *b)
{
    free(b->impl);
}

static const tw_binding_ops loop_ops = {
    .name = "loopback",
    .send = loop_send,
    .close_conn = loop_close_conn,
    .destroy = loop_destroy,
};

int tw_loop_new(tw_runtime *rt, tw_loop **out)
{
    tw_loop *l = calloc(1, sizeof *l);
    if (!l) return TW_ENOMEM;
    l->rt = rt;
    int rc = tw_runtime_add_binding(rt, &loop_ops, l, &l->b);
    if (rc) {
        free(l);
        return rc;
    }
    *out = l;
    return 0;
}

tw_loop_conn *tw_loop_connect(tw_loop *l, const char *remote)
{
    tw_loop_conn *lc = calloc(1, sizeof *lc);
    if (!lc) return NULL;
    lc->loop = l;
    pthread_mutex_init(&lc->lock, NULL);
    pthread_cond_init(&lc->cond, NULL);
    lc->conn = tw_conn_new(l->rt, l->b, lc, remote ? remote : "loopback");
    if (!lc->conn) {
        free(lc);
        return NULL;
    }
    return lc;
}

int tw_loop_identify(tw_loop_conn *c, const char *client_id, tw_role role)
{
    tw_identity id;
    memset(&id, 0, sizeof id);
    tw_strlcpy(id.client_id, client_id, sizeof id.client_id);
    snprintf(id.session_id, sizeof id.session_id, "loop-%s", client_id);
    id.role = role;
    return tw_conn_set_identity(c->conn, &id);
}

tw_conn *tw_loop_conn_get(tw_loop_conn *c)
{
    return c->conn;
}

void tw_loop_inject(tw_loop_conn *c, tw_msg *m)
{
    tw_router_handle(c->loop->rt, c->conn, m);
}

int tw_loop_inject_json(tw_loop_conn *c, const char *json)
{
    tw_msg *m = NULL;
    json_t *problem = NULL;
    int rc = tw_msg_parse(json, strlen(json), NULL, &m, &problem);
    if (rc) {
        tw_msg *req = tw_msg_new(TW_TYPE_RESPONSE, TW_OP_NONE, NULL, NULL);
        if (req) {
            tw_msg_set_status(req, TW_STATUS_FAILED);
            tw_msg_set(req, "error", problem);
            loop_send(c->loop->b, c->conn, req);
            tw_msg_unref(req);
        } else {
            json_decref(problem);
        }
        return rc;
    }
    tw_loop_inject(c, m);
    tw_msg_unref(m);
    return 0;
}

tw_msg *tw_loop_next(tw_loop_conn *c, int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = ts.tv_nsec + (int64_t)(timeout_ms % 1000) * 1000000;
    ts.tv_sec += timeout_ms / 1000 + ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    pthread_mutex_lock(&c->lock);
    while (!c->head)
        if (pthread_cond_timedwait(&c->cond, &c->lock, &ts)) break;
    item *it = c->head;
    if (it) {
        c->head = it->next;
        if (!c->head) c->tail = NULL;
        c->pending--;
    }
    pthread_mutex_unlock(&c->lock);
    if (!it) return NULL;
    tw_msg *m = it->m;
    free(it);
    return m;
}

int tw_loop_pending(tw_loop_conn *c)
{
    pthread_mutex_lock(&c->lock);
    int n = c->pending;
    pthread_mutex_unlock(&c->lock);
    return n;
}

void tw_loop_set_discard(tw_loop_conn *c, bool discard)
{
    c->discard = discard;
}

void tw_loop_set_responder(tw_loop_conn *c, tw_loop_fn fn, void *arg)
{
    c->responder_arg = arg;
    c->responder = fn;
}
uint64_t tw_loop_received(tw_loop_conn *c)
{
    return atomic_load(&c->received);
}
bool tw_loop_was_closed(tw_loop_conn *c)
{
    return atomic_load(&c->closed_by_runtime);
}

void tw_loop_close(tw_loop_conn *c)
{
    if (!c) return;
    tw_conn_close(c->conn);
    tw_conn_unref(c->conn);
    item *it = c->head;
    while (it) {
        item *next = it->next;
        tw_msg_unref(it->m);
        free(it);
        it = next;
    }
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    free(c);
}
