/*
 * conn.c - connections, the registry by client id, and subscriptions.
 *
 * One rwlock guards the registry: the client index, the subscription index
 * and each connection's own subscription list. Fan-out, the hot path, takes
 * it for reading, collects referenced connections into a small array, drops
 * the lock and only then calls the bindings, so a binding may block briefly
 * or re-enter the registry without deadlock.
 *
 * Subscriptions are indexed by thing id (a hash map of vectors) plus one
 * vector for thing "*", so an event reaches its subscribers without looking
 * at anyone else's. A connection subscribed twice to the same notification
 * (a wildcard and an exact pattern) gets it once.
 *
 * The registry holds no references: a binding keeps its connection alive
 * until after tw_conn_close(), which removes it from every index under the
 * write lock, so an indexed connection is always alive.
 */
#include "log.h"
#include "runtime_int.h"

#include <stdlib.h>
#include <string.h>

struct tw_sub {
    tw_conn *conn;
    tw_sub_kind kind;
    char *thing; /* "*" for any */
    char *name;  /* "*" for any */
};

typedef struct tw_connvec {
    tw_conn **v;
    size_t n, cap;
} tw_connvec;

struct tw_conn {
    atomic_int refs;
    tw_runtime *rt;
    tw_binding *b;
    int bidx;
    void *bdata;
    char remote[64];
    uint64_t serial;
    tw_identity id;
    atomic_bool authed;
    atomic_bool closed;
    bool ephemeral;
    tw_subvec subs; /* this connection's subscriptions (registry lock) */
};

static atomic_uint_fast64_t next_serial = 1;

int tw_registry_init(tw_registry *r)
{
    memset(r, 0, sizeof *r);
    pthread_rwlock_init(&r->lock, NULL);
    tw_hmap_init(&r->by_client);
    tw_hmap_init(&r->subs_by_thing);
    return 0;
}

void tw_registry_fini(tw_registry *r)
{
    size_t pos = 0;
    void *v;
    while (tw_hmap_next(&r->by_client, &pos, NULL, &v)) {
        free(((tw_connvec *)v)->v);
        free(v);
    }
    pos = 0;
    while (tw_hmap_next(&r->subs_by_thing, &pos, NULL, &v)) {
        free(((tw_subvec *)v)->v);
        free(v);
    }
    free(r->subs_any.v);
    tw_hmap_fini(&r->by_client);
    tw_hmap_fini(&r->subs_by_thing);
    pthread_rwlock_destroy(&r->lock);
}

static int vec_push(void ***v, size_t *n, size_t *cap, void *item)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        void **nv = realloc(*v, nc * sizeof *nv);
        if (!nv) return TW_ENOMEM;
        *v = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = item;
    return 0;
}

static void vec_remove(void **v, size_t *n, void *item)
{
    for (size_t i = 0; i < *n; i++)
        if (v[i] == item) {
            v[i] = v[--*n];
            return;
        }
}

tw_conn *tw_conn_new(tw_runtime *rt, tw_binding *b, void *bdata, const char *remote)
{
    tw_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    atomic_init(&c->refs, 1);
    c->rt = rt;
    c->b = b;
    c->bidx = 0;
    for (int i = 0; i < rt->nbindings; i++)
        if (rt->bindings[i] == b) c->bidx = i;
    c->bdata = bdata;
    snprintf(c->remote, sizeof c->remote, "%s", remote ? remote : "");
    c->serial = atomic_fetch_add(&next_serial, 1);
    atomic_fetch_add(&rt->reg.nconns, 1);
    atomic_fetch_add(&rt->reg.nconns_by_binding[c->bidx], 1);
    return c;
}

void tw_conn_set_ephemeral(tw_conn *c)
{
    c->ephemeral = true;
}

tw_conn *tw_conn_ref(tw_conn *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void tw_conn_unref(tw_conn *c)
{
    if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1) return;
    free(c->subs.v);
    free(c);
}

/* Registry write lock held. */
static void unindex_client(tw_registry *r, tw_conn *c)
{
    if (!atomic_load(&c->authed) || c->ephemeral) return;
    tw_connvec *cv = tw_hmap_get(&r->by_client, c->id.client_id);
    if (!cv) return;
    vec_remove((void **)cv->v, &cv->n, c);
    if (cv->n == 0) {
        tw_hmap_del(&r->by_client, c->id.client_id);
        free(cv->v);
        free(cv);
    }
}

static tw_subvec *thing_subs(tw_registry *r, const char *thing, bool create)
{
    if (strcmp(thing, "*") == 0) return &r->subs_any;
    tw_subvec *sv = tw_hmap_get(&r->subs_by_thing, thing);
    if (!sv && create) {
        sv = calloc(1, sizeof *sv);
        int err = 0;
        if (sv) tw_hmap_put(&r->subs_by_thing, thing, sv, &err);
        if (err) {
            free(sv);
            sv = NULL;
        }
    }
    return sv;
}

/* Registry write lock held. */
static void sub_free(tw_registry *r, tw_sub *s)
{
    tw_subvec *sv = thing_subs(r, s->thing, false);
    if (sv) {
        vec_remove((void **)sv->v, &sv->n, s);
        if (sv->n == 0 && sv != &r->subs_any) {
            tw_hmap_del(&r->subs_by_thing, s->thing);
            free(sv->v);
            free(sv);
        }
    }
    free(s->thing);
    free(s->name);
    free(s);
}

void tw_conn_close(tw_conn *c)
{
    if (atomic_exchange(&c->closed, true)) return;
    tw_registry *r = &c->rt->reg;
    pthread_rwlock_wrlock(&r->lock);
    unindex_client(r, c);
    for (size_t i = 0; i < c->subs.n; i++)
        sub_free(r, c->subs.v[i]);
    c->subs.n = 0;
    pthread_rwlock_unlock(&r->lock);
    atomic_fetch_sub(&r->nconns, 1);
    atomic_fetch_sub(&r->nconns_by_binding[c->bidx], 1);
}

int tw_conn_set_identity(tw_conn *c, const tw_identity *id)
{
    if (id->expires_ms && id->expires_ms <= tw_now_ms()) return TW_EAUTH;
    if (!tw_client_id_valid(id->client_id)) return TW_EINVAL;
    if (atomic_load(&c->closed)) return TW_ECLOSED;
    tw_registry *r = &c->rt->reg;
    bool first = false;
    int rc = 0;
    if (c->ephemeral) {
        c->id = *id;
        atomic_store(&c->authed, true);
        return 0;
    }
    pthread_rwlock_wrlock(&r->lock);
    unindex_client(r, c);
    c->id = *id;
    tw_connvec *cv = tw_hmap_get(&r->by_client, id->client_id);
    if (!cv) {
        cv = calloc(1, sizeof *cv);
        int err = 0;
        if (cv) tw_hmap_put(&r->by_client, id->client_id, cv, &err);
        if (!cv || err) {
            free(cv);
            rc = TW_ENOMEM;
        }
    }
    if (!rc) rc = vec_push((void ***)&cv->v, &cv->n, &cv->cap, c);
    if (!rc) {
        first = cv->n == 1;
        atomic_store(&c->authed, true);
    }
    pthread_rwlock_unlock(&r->lock);
    if (!rc && first && (id->role == TW_ROLE_AGENT || id->role == TW_ROLE_SERVICE))
        tw_router_agent_online(c->rt, id->client_id);
    return rc;
}

const tw_identity *tw_conn_identity(const tw_conn *c)
{
    return atomic_load(&c->authed) ? &c->id : NULL;
}

tw_binding *tw_conn_binding(const tw_conn *c)
{
    return c->b;
}
void *tw_conn_bdata(const tw_conn *c)
{
    return c->bdata;
}
const char *tw_conn_remote(const tw_conn *c)
{
    return c->remote;
}
uint64_t tw_conn_serial(const tw_conn *c)
{
    return c->serial;
}
bool tw_conn_closed(const tw_conn *c)
{
    return atomic_load(&c->closed);
}

int tw_conn_send(tw_conn *c, tw_msg *m)
{
    if (atomic_load_explicit(&c->closed, memory_order_acquire)) return TW_ECLOSED;
    int rc = c->b->ops->send(c->b, c, m);
    if (rc == 0) atomic_fetch_add_explicit(&c->rt->st_delivered, 1, memory_order_relaxed);
    return rc;
}

#define MAX_SUBS_PER_CONN 1024

int tw_conn_subscribe(tw_conn *c, tw_sub_kind kind, const char *thing, const char *name)
{
    if (!thing) thing = "*";
    if (!name) name = "*";
    tw_registry *r = &c->rt->reg;
    int rc = 0;
    pthread_rwlock_wrlock(&r->lock);
    if (atomic_load(&c->closed)) {
        rc = TW_ECLOSED;
        goto out;
    }
    for (size_t i = 0; i < c->subs.n; i++) {
        tw_sub *s = c->subs.v[i];
        if (s->kind == kind && strcmp(s->thing, thing) == 0 && strcmp(s->name, name) == 0)
            goto out; /* already subscribed */
    }
    if (c->subs.n >= MAX_SUBS_PER_CONN) {
        rc = TW_EFULL;
        goto out;
    }
    tw_sub *s = calloc(1, sizeof *s);
    tw_subvec *sv = thing_subs(r, thing, true);
    if (!s || !sv || !(s->thing = strdup(thing)) || !(s->name = strdup(name))) {
        if (s) {
            free(s->thing);
            free(s);
        }
        rc = TW_ENOMEM;
        goto out;
    }
    s->conn = c;
    s->kind = kind;
    if ((rc = vec_push((void ***)&sv->v, &sv->n, &sv->cap, s)) == 0 &&
        (rc = vec_push((void ***)&c->subs.v, &c->subs.n, &c->subs.cap, s)) != 0)
        vec_remove((void **)sv->v, &sv->n, s);
    if (rc) {
        free(s->thing);
        free(s->name);
        free(s);
    }
out:
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

int tw_conn_unsubscribe(tw_conn *c, tw_sub_kind kind, const char *thing, const char *name)
{
    if (!thing) thing = "*";
    if (!name) name = "*";
    tw_registry *r = &c->rt->reg;
    pthread_rwlock_wrlock(&r->lock);
    for (size_t i = 0; i < c->subs.n;) {
        tw_sub *s = c->subs.v[i];
        /* "*" in an unsubscribe removes every matching pattern */
        if (s->kind == kind && (strcmp(thing, "*") == 0 || strcmp(s->thing, thing) == 0) &&
            (strcmp(name, "*") == 0 || strcmp(s->name, name) == 0)) {
            c->subs.v[i] = c->subs.v[--c->subs.n];
            sub_free(r, s);
        } else {
            i++;
        }
    }
    pthread_rwlock_unlock(&r->lock);
    return 0;
}

int tw_conns_of_client(tw_runtime *rt, const char *client_id, tw_conn_fn fn, void *arg)
{
    tw_conn *stack[16], **list = stack;
    size_t n = 0;
    tw_registry *r = &rt->reg;
    pthread_rwlock_rdlock(&r->lock);
    tw_connvec *cv = tw_hmap_get(&r->by_client, client_id);
    if (cv && cv->n) {
        if (cv->n > 16) list = malloc(cv->n * sizeof *list);
        if (list)
            for (size_t i = 0; i < cv->n; i++)
                list[n++] = tw_conn_ref(cv->v[i]);
    }
    pthread_rwlock_unlock(&r->lock);
    if (!list) return TW_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        fn(arg, list[i]);
        tw_conn_unref(list[i]);
    }
    if (list != stack) free(list);
    return (int)n;
}

/* Collects matching connections of one vector, without duplicates. */
static int collect(tw_subvec *sv, tw_sub_kind kind, const char *name, tw_conn ***list, size_t *n,
                   size_t *cap, tw_conn **stack)
{
    for (size_t i = 0; sv && i < sv->n; i++) {
        tw_sub *s = sv->v[i];
        if (s->kind != kind || (s->name[0] != '*' && strcmp(s->name, name) != 0)) continue;
        tw_conn *c = s->conn;
        if (c->subs.n > 1) { /* only then can it match twice */
            bool dup = false;
            for (size_t j = 0; j < *n && !dup; j++)
                dup = (*list)[j] == c;
            if (dup) continue;
        }
        if (*n == *cap) {
            size_t nc = *cap * 4;
            tw_conn **nl = malloc(nc * sizeof *nl);
            if (!nl) return TW_ENOMEM;
            memcpy(nl, *list, *n * sizeof *nl);
            if (*list != stack) free(*list);
            *list = nl;
            *cap = nc;
        }
        (*list)[(*n)++] = tw_conn_ref(c);
    }
    return 0;
}

int tw_conns_fanout(tw_runtime *rt, tw_sub_kind kind, const char *thing, const char *name,
                    tw_msg *m)
{
    tw_conn *stack[32], **list = stack;
    size_t n = 0, cap = 32;
    tw_registry *r = &rt->reg;
    pthread_rwlock_rdlock(&r->lock);
    int rc = collect(tw_hmap_get(&r->subs_by_thing, thing), kind, name, &list, &n, &cap, stack);
    if (!rc) rc = collect(&r->subs_any, kind, name, &list, &n, &cap, stack);
    pthread_rwlock_unlock(&r->lock);
    int sent = 0;
    for (size_t i = 0; i < n; i++) {
        if (tw_conn_send(list[i], m) == 0) sent++;
        tw_conn_unref(list[i]);
    }
    if (list != stack) free(list);
    return rc ? rc : sent;
}

/* Connections picked under the registry lock, closed after it. */
typedef struct {
    tw_conn **v;
    size_t n, cap;
} close_list;

/* Adds the connections of cv whose session id starts with the n bytes of
 * sid (n = strlen(sid) + 1: equal to it). Registry lock held. */
static void close_pick(close_list *cl, const tw_connvec *cv, const char *sid, size_t n)
{
    for (size_t i = 0; cv && i < cv->n; i++)
        if (strncmp(cv->v[i]->id.session_id, sid, n) == 0 &&
            vec_push((void ***)&cl->v, &cl->n, &cl->cap, cv->v[i]) == 0)
            tw_conn_ref(cv->v[i]);
}

/* Asks each binding to close its connection (lock released). */
static int close_all(close_list *cl)
{
    for (size_t i = 0; i < cl->n; i++) {
        tw_conn *c = cl->v[i];
        if (c->b->ops->close_conn)
            c->b->ops->close_conn(c->b, c);
        else
            tw_conn_close(c);
        tw_conn_unref(c);
    }
    free(cl->v);
    return (int)cl->n;
}

int tw_conns_close_session(tw_runtime *rt, const char *session_id)
{
    close_list cl = {NULL, 0, 0};
    tw_registry *r = &rt->reg;
    size_t n = strlen(session_id) + 1;
    pthread_rwlock_rdlock(&r->lock);
    size_t pos = 0;
    void *v;
    while (tw_hmap_next(&r->by_client, &pos, NULL, &v))
        close_pick(&cl, v, session_id, n);
    pthread_rwlock_unlock(&r->lock);
    return close_all(&cl);
}

int tw_conns_close_client(tw_runtime *rt, const char *client_id, const char *prefix)
{
    close_list cl = {NULL, 0, 0};
    tw_registry *r = &rt->reg;
    pthread_rwlock_rdlock(&r->lock);
    close_pick(&cl, tw_hmap_get(&r->by_client, client_id), prefix, strlen(prefix));
    pthread_rwlock_unlock(&r->lock);
    return close_all(&cl);
}

int tw_conns_count(tw_runtime *rt, const char *binding_name)
{
    if (!binding_name) return atomic_load(&rt->reg.nconns);
    for (int i = 0; i < rt->nbindings; i++)
        if (strcmp(rt->bindings[i]->ops->name, binding_name) == 0)
            return atomic_load(&rt->reg.nconns_by_binding[i]);
    return 0;
}
