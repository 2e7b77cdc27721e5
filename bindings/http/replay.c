/*
 * replay.c - the window of recent stream messages, for Last-Event-ID.
 *
 * Every message the binding pushes to any SSE stream is entered once into a
 * ring of the last `window` messages and gets the next sequence number, the
 * SSE id every stream shows for it. A message fanned out to a thousand
 * streams is one item: its envelope is encoded once (tw_msg_encode) and its
 * value once, and every stream copies those bytes into its own buffer. The
 * item is found by the message's address in a small open-addressing table
 * (the ring holds a reference, so the address is unique while it is there).
 *
 * On reconnect a stream walks the ring after the client's Last-Event-ID and
 * takes the items its filters match, in order. Thread-safe: one mutex, held
 * for a table probe on the hot path.
 */
#include "http_int.h"

#include "runtime/json_enc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct http_replay {
    pthread_mutex_t mu;
    rp_item **ring; /* ring[seq % cap] */
    size_t cap;
    uint64_t first, next;    /* items first..next-1 are in the ring */
    size_t bytes, max_bytes; /* what the items hold, roughly, and its bound */
    rp_item **tab;           /* address -> item, linear probing */
    size_t tabcap;           /* power of two >= 2 * cap */
};

static size_t hash_ptr(const void *p, size_t mask)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & mask;
}

int http_replay_new(size_t window, size_t max_bytes, http_replay **out)
{
    http_replay *rp = calloc(1, sizeof *rp);
    if (!rp) return TW_ENOMEM;
    rp->cap = window;
    rp->max_bytes = max_bytes;
    rp->tabcap = 16;
    while (rp->tabcap < window * 2)
        rp->tabcap *= 2;
    rp->ring = calloc(window, sizeof *rp->ring);
    rp->tab = calloc(rp->tabcap, sizeof *rp->tab);
    if (!rp->ring || !rp->tab) {
        free(rp->ring);
        free(rp->tab);
        free(rp);
        return TW_ENOMEM;
    }
    rp->first = rp->next = 1;
    pthread_mutex_init(&rp->mu, NULL);
    *out = rp;
    return 0;
}

void rp_item_unref(rp_item *it)
{
    if (!it || atomic_fetch_sub(&it->refs, 1) != 1) return;
    tw_msg_unref(it->m);
    free(it->val);
    free(atomic_load(&it->frame[0]));
    free(atomic_load(&it->frame[1]));
    free(it);
}

const char *rp_item_frame(rp_item *it, int variant, size_t *len)
{
    char *f = atomic_load_explicit(&it->frame[variant], memory_order_acquire);
    if (f) {
        *len = it->frame_len[variant];
        return f;
    }
    const char *event, *data;
    size_t dlen;
    if (variant == 1) {
        event = tw_msg_type_name(tw_msg_get_type(it->m));
        data = it->env;
        dlen = it->env_len;
    } else {
        event = tw_msg_name(it->m) ? tw_msg_name(it->m) : "value";
        data = it->val;
        dlen = it->val_len;
    }
    char head[200];
    int hn = snprintf(head, sizeof head, "id: %" PRIu64 "\nevent: %.120s\ndata: ", it->seq, event);
    size_t n = (size_t)hn + dlen + 2;
    f = malloc(n + 1);
    if (!f) return NULL;
    memcpy(f, head, (size_t)hn);
    memcpy(f + hn, data, dlen);
    memcpy(f + hn + dlen, "\n\n", 3);
    /* frame_len is written before the pointer is published (release). */
    char *expected = NULL;
    it->frame_len[variant] = n;
    if (!atomic_compare_exchange_strong_explicit(&it->frame[variant], &expected, f,
                                                 memory_order_acq_rel, memory_order_acquire)) {
        free(f); /* another thread built the same bytes first */
        f = expected;
    }
    *len = n;
    return f;
}

void http_replay_free(http_replay *rp)
{
    if (!rp) return;
    for (uint64_t s = rp->first; s < rp->next; s++)
        rp_item_unref(rp->ring[s % rp->cap]);
    free(rp->ring);
    free(rp->tab);
    pthread_mutex_destroy(&rp->mu);
    free(rp);
}

static void tab_del(http_replay *rp, rp_item *it)
{
    size_t mask = rp->tabcap - 1, i = hash_ptr(it->m, mask);
    while (rp->tab[i] && rp->tab[i] != it)
        i = (i + 1) & mask;
    if (!rp->tab[i]) return;
    rp->tab[i] = NULL;
    /* Backward-shift deletion keeps probe chains intact without tombstones. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!rp->tab[j]) break;
        size_t k = hash_ptr(rp->tab[j]->m, mask);
        bool move = (i <= j) ? (k <= i || k > j) : (k <= i && k > j);
        if (move) {
            rp->tab[i] = rp->tab[j];
            rp->tab[j] = NULL;
            i = j;
        }
    }
}

static rp_kind classify(tw_msg *m)
{
    if (tw_msg_get_type(m) != TW_TYPE_NOTIFICATION) return RP_DIRECT;
    switch (tw_msg_get_op(m)) {
    case TW_OP_SUBSCRIBEEVENT:
        return RP_EVENT;
    case TW_OP_OBSERVEPROPERTY:
        return RP_PROPERTY;
    default:
        return RP_DIRECT;
    }
}

static rp_item *item_new(tw_msg *m, const char *client)
{
    rp_item *it = calloc(1, sizeof *it);
    if (!it) return NULL;
    it->env = tw_msg_encode(m, &it->env_len);
    json_t *v = tw_msg_get(m, "value");
    if (!v) v = tw_msg_get(m, "output");
    it->val = v ? tw_json_encode(v, NULL) : strdup("null");
    if (!it->env || !it->val) {
        free(it->val);
        free(it);
        return NULL;
    }
    it->val_len = strlen(it->val);
    /* the envelope, the value and the two frames built from them */
    it->bytes = sizeof *it + 2 * it->env_len + 2 * it->val_len + 256;
    it->m = tw_msg_ref(m);
    it->kind = classify(m);
    if (client) tw_strlcpy(it->client, client, sizeof it->client);
    atomic_init(&it->refs, 1);
    return it;
}

rp_item *http_replay_get(http_replay *rp, tw_msg *m, const char *client_id)
{
    size_t mask = rp->tabcap - 1;
    pthread_mutex_lock(&rp->mu);
    size_t i = hash_ptr(m, mask);
    while (rp->tab[i]) {
        if (rp->tab[i]->m == m) {
            rp_item *it = rp->tab[i];
            atomic_fetch_add(&it->refs, 1);
            pthread_mutex_unlock(&rp->mu);
            return it;
        }
        i = (i + 1) & mask;
    }
    pthread_mutex_unlock(&rp->mu);
    /* Encode outside the lock; another thread may race us to it. */
    rp_item *it = item_new(m, client_id);
    if (!it) return NULL;
    pthread_mutex_lock(&rp->mu);
    i = hash_ptr(m, mask);
    while (rp->tab[i]) {
        if (rp->tab[i]->m == m) {
            rp_item *other = rp->tab[i];
            atomic_fetch_add(&other->refs, 1);
            pthread_mutex_unlock(&rp->mu);
            rp_item_unref(it);
            return other;
        }
        i = (i + 1) & mask;
    }
    /* Evict the oldest while the window is full in count or in bytes. */
    bool evicted = false;
    while (rp->next > rp->first &&
           (rp->next - rp->first == rp->cap || rp->bytes + it->bytes > rp->max_bytes)) {
        rp_item *old = rp->ring[rp->first % rp->cap];
        tab_del(rp, old);
        rp->ring[rp->first % rp->cap] = NULL;
        rp->first++;
        rp->bytes -= old->bytes;
        rp_item_unref(old);
        evicted = true;
    }
    if (evicted) {
        i = hash_ptr(m, mask);
        while (rp->tab[i])
            i = (i + 1) & mask;
    }
    rp->bytes += it->bytes;
    it->seq = rp->next++;
    rp->ring[it->seq % rp->cap] = it;
    rp->tab[i] = it;
    atomic_fetch_add(&it->refs, 1); /* the caller's */
    pthread_mutex_unlock(&rp->mu);
    return it;
}

uint64_t http_replay_each(http_replay *rp, uint64_t after, bool (*fn)(void *, rp_item *), void *arg)
{
    uint64_t s = after + 1 > rp->first ? after + 1 : rp->first;
    uint64_t last = s - 1;
    for (; s < rp->next; s++) {
        if (!fn(arg, rp->ring[s % rp->cap])) break;
        last = s;
    }
    return last;
}

uint64_t http_replay_last(http_replay *rp)
{
    pthread_mutex_lock(&rp->mu);
    uint64_t v = rp->next - 1;
    pthread_mutex_unlock(&rp->mu);
    return v;
}

uint64_t http_replay_last_locked(http_replay *rp)
{
    return rp->next - 1;
}

void http_replay_locked(http_replay *rp, void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&rp->mu);
    fn(arg);
    pthread_mutex_unlock(&rp->mu);
}
