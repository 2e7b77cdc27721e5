/*
 * replay.c - the window of recent stream messages, for Last-Event-ID.
 *
 * Every message the binding pushes to any SSE stream is entered once into a
 * ring of the last `window` messages and gets the next sequence number, the
 * SSE id every stream shows for it. A message fanned out to a thousand
 * streams is one item: its envelope is encoded once (tw_msg_encode, shared
 * with every other receiver), its frames are built on first use (the value
 * copied as it arrived, or encoded only then) and every stream copies those
 * bytes into its own buffer. Every event is recorded whether or not a stream exists, so
 * recording is kept cheap: no encoding of its own, and eviction reads only
 * the ring's and the table's slots. The item is found by the message's
 * address in a small open-addressing table (the ring holds a reference, so
 * the address is unique while it is there).
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

/* A ring slot and a table slot keep what eviction needs beside the item
 * pointer: the window turns over constantly, and the item being evicted
 * (and its neighbours in the table) went cold long ago. Reading the slots
 * alone costs the ring's sequential walk and one table line. */
typedef struct rp_slot {
    rp_item *it;
    const tw_msg *m;
    size_t bytes;
} rp_slot;

typedef struct rp_entry {
    const tw_msg *m; /* NULL: free */
    rp_item *it;
} rp_entry;

struct http_replay {
    pthread_mutex_t mu;
    rp_slot *ring; /* ring[seq % cap] */
    size_t cap;
    uint64_t first, next;    /* items first..next-1 are in the ring */
    size_t bytes, max_bytes; /* what the items hold, roughly, and its bound */
    rp_entry *tab;           /* message address -> item, linear probing */
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
    char *val = NULL;
    if (variant == 1) {
        event = tw_msg_type_name(tw_msg_get_type(it->m));
        data = it->env;
        dlen = it->env_len;
    } else {
        /* The value as it arrived when it was parsed from bytes, else
         * encoded now: recording a message that no affordance stream shows
         * costs nothing. */
        event = tw_msg_name(it->m) ? tw_msg_name(it->m) : "value";
        static const char *const members[2] = {"value", "output"};
        data = NULL;
        for (int i = 0; i < 2 && !data; i++) {
            if ((data = tw_msg_get_raw(it->m, members[i], &dlen))) break;
            json_t *v = tw_msg_get(it->m, members[i]);
            if (v && !(data = val = tw_json_encode(v, &dlen))) return NULL;
        }
        if (!data) {
            data = "null";
            dlen = 4;
        }
    }
    char head[200], ev[121];
    http_sse_event_name(event, ev);
    int hn = snprintf(head, sizeof head, "id: %" PRIu64 "\nevent: %s\ndata: ", it->seq, ev);
    size_t n = (size_t)hn + dlen + 2;
    f = malloc(n + 1);
    if (!f) {
        free(val);
        return NULL;
    }
    memcpy(f, head, (size_t)hn);
    memcpy(f + hn, data, dlen);
    memcpy(f + hn + dlen, "\n\n", 3);
    free(val);
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
        rp_item_unref(rp->ring[s % rp->cap].it);
    free(rp->ring);
    free(rp->tab);
    pthread_mutex_destroy(&rp->mu);
    free(rp);
}

static void tab_del(http_replay *rp, const tw_msg *m)
{
    size_t mask = rp->tabcap - 1, i = hash_ptr(m, mask);
    while (rp->tab[i].m && rp->tab[i].m != m)
        i = (i + 1) & mask;
    if (!rp->tab[i].m) return;
    rp->tab[i].m = NULL;
    /* Backward-shift deletion keeps probe chains intact without tombstones. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!rp->tab[j].m) break;
        size_t k = hash_ptr(rp->tab[j].m, mask);
        bool move = (i <= j) ? (k <= i || k > j) : (k <= i && k > j);
        if (move) {
            rp->tab[i] = rp->tab[j];
            rp->tab[j].m = NULL;
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
    /* The envelope is the one every receiver shares (tw_msg_encode encodes
     * a message once). */
    it->env = tw_msg_encode(m, &it->env_len);
    if (!it->env) {
        free(it);
        return NULL;
    }
    /* The envelope and the two frames built on use: one of it, one of its
     * value (which the envelope holds, so at most as long). */
    it->bytes = sizeof *it + 3 * it->env_len + 256;
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
    while (rp->tab[i].m) {
        if (rp->tab[i].m == m) {
            rp_item *it = rp->tab[i].it;
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
    while (rp->tab[i].m) {
        if (rp->tab[i].m == m) {
            rp_item *other = rp->tab[i].it;
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
        rp_slot *old = &rp->ring[rp->first % rp->cap];
        tab_del(rp, old->m);
        rp->first++;
        rp->bytes -= old->bytes;
        rp_item_unref(old->it);
        old->it = NULL;
        evicted = true;
    }
    if (evicted) {
        i = hash_ptr(m, mask);
        while (rp->tab[i].m)
            i = (i + 1) & mask;
    }
    rp->bytes += it->bytes;
    it->seq = rp->next++;
    rp->ring[it->seq % rp->cap] = (rp_slot){it, m, it->bytes};
    rp->tab[i] = (rp_entry){m, it};
    atomic_fetch_add(&it->refs, 1); /* the caller's */
    pthread_mutex_unlock(&rp->mu);
    return it;
}

uint64_t http_replay_each(http_replay *rp, uint64_t after, bool (*fn)(void *, rp_item *), void *arg)
{
    uint64_t s = after + 1 > rp->first ? after + 1 : rp->first;
    uint64_t last = s - 1;
    for (; s < rp->next; s++) {
        if (!fn(arg, rp->ring[s % rp->cap].it)) break;
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
