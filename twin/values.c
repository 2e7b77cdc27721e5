/*
 * values.c - the value store (see values.h): memory first, SQLite behind.
 *
 * Layout: a hash map twin id -> vtwin, each with one hash map per kind
 * (properties, events) name -> vent {value, ts}. One mutex guards it all:
 * an update is a couple of hash lookups and a pointer swap, far shorter than
 * anything that could contend.
 *
 * Write-behind: an update marks its vent dirty and appends it to the dirty
 * list once. The flusher thread wakes every flush_ms (or early when the list
 * reaches `batch`), turns the dirty list into one batch of rows and submits
 * it as ONE store job. Only one batch is in flight at a time: while the
 * writer is busy, updates keep coalescing in memory, so a flood of updates
 * costs memory bounded by the number of keys, never a queue that grows.
 * Batches and twin deletions are submitted under the mutex, so the writer
 * applies them in the order they happened in memory.
 *
 * A deleted twin's vents that sit in the dirty list are marked dead and
 * freed by the flusher instead of being written.
 */
#include "twin/values.h"
#include "runtime/hmap.h"
#include "runtime/log.h"
#include "twin/json_fast.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MOD "twin.values"

typedef struct vtwin vtwin;

typedef struct vent {
    char *name;
    tw_aff_kind kind;
    json_t *value;
    int64_t ts;
    bool dirty;
    bool dead;
    vtwin *twin; /* NULL once dead */
} vent;

struct vtwin {
    char *id;
    tw_hmap by_kind[2]; /* [0] properties, [1] events: name -> vent* */
};

typedef struct row {
    char *thing_id;
    char *name;
    int kind;
    json_t *value;
    int64_t ts;
} row;

typedef struct batch {
    tw_values *v;
    row *rows;
    size_t n;
} batch;

struct tw_values {
    tw_store *store;
    tw_values_opts opts;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* wakes the flusher */
    pthread_cond_t idle_cv; /* a batch finished */
    tw_hmap twins;          /* id -> vtwin* */
    vent **dirty;
    size_t ndirty, cap_dirty;
    bool in_flight;
    bool stop;
    pthread_t thread;
    bool thread_started;
    tw_values_stats stats;
};

static const char *const MIGRATIONS[] = {
    "CREATE TABLE twin_values(thing_id TEXT NOT NULL, kind INTEGER NOT NULL, name TEXT NOT NULL,"
    "  value TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY(thing_id, kind, name))"
    "  WITHOUT ROWID;",
};

static int kind_slot(tw_aff_kind k)
{
    return k == TW_AFF_PROPERTY ? 0 : k == TW_AFF_EVENT ? 1 : -1;
}

static void vent_free(vent *e)
{
    free(e->name);
    json_decref(e->value);
    free(e);
}

/* Frees a twin's vents, except dirty ones (marked dead for the flusher). */
static void vtwin_free(vtwin *t)
{
    for (int k = 0; k < 2; k++) {
        size_t pos = 0;
        const char *key;
        void *val;
        while (tw_hmap_next(&t->by_kind[k], &pos, &key, &val)) {
            vent *e = val;
            if (e->dirty) {
                e->dead = true;
                e->twin = NULL;
            } else {
                vent_free(e);
            }
        }
        tw_hmap_fini(&t->by_kind[k]);
    }
    free(t->id);
    free(t);
}

/* ---- write-behind ------------------------------------------------------- */

static void batch_free(batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->rows[i].thing_id);
        free(b->rows[i].name);
        json_decref(b->rows[i].value);
    }
    free(b->rows);
    free(b);
}

static int batch_job(tw_store_tx *tx, void *arg)
{
    batch *b = arg;
    for (size_t i = 0; i < b->n; i++) {
        row *r = &b->rows[i];
        sqlite3_stmt *st = tw_store_stmt(tx, "INSERT OR REPLACE INTO twin_values(thing_id, "
                                             "kind, name, value, ts) VALUES(?1,?2,?3,?4,?5)");
        if (!st) return TW_EDB;
        char *text = tw_json_encode(r->value, NULL);
        if (!text) return TW_ENOMEM;
        sqlite3_bind_text(st, 1, r->thing_id, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, r->kind);
        sqlite3_bind_text(st, 3, r->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, text, -1, free);
        sqlite3_bind_int64(st, 5, r->ts);
        if (sqlite3_step(st) != SQLITE_DONE) {
            tw_log_error(MOD, "writing values: %s", sqlite3_errmsg(tw_store_db(tx)));
            return TW_EDB;
        }
    }
    return 0;
}

static void batch_done(void *arg, int rc)
{
    batch *b = arg;
    tw_values *v = b->v;
    if (rc < 0)
        tw_log_error(MOD, "a batch of %zu values was not written: %s", b->n, tw_strerror(rc));
    pthread_mutex_lock(&v->mu);
    v->in_flight = false;
    if (rc == 0) v->stats.flushed += b->n;
    pthread_cond_broadcast(&v->idle_cv);
    pthread_cond_signal(&v->cv);
    pthread_mutex_unlock(&v->mu);
    batch_free(b);
}

/* Turns the dirty list into one store job. Called with mu held and no batch
 * in flight. */
static int flush_locked(tw_values *v)
{
    if (!v->ndirty) return 0;
    batch *b = calloc(1, sizeof *b);
    if (!b || !(b->rows = calloc(v->ndirty, sizeof *b->rows))) {
        free(b);
        return TW_ENOMEM;
    }
    b->v = v;
    size_t i;
    for (i = 0; i < v->ndirty; i++) {
        vent *e = v->dirty[i];
        if (e->dead) {
            vent_free(e);
            continue;
        }
        row *r = &b->rows[b->n];
        r->thing_id = strdup(e->twin->id);
        r->name = strdup(e->name);
        if (!r->thing_id || !r->name) {
            free(r->thing_id);
            free(r->name);
            break; /* keep the rest dirty; retried next time */
        }
        r->kind = e->kind;
        r->value = json_incref(e->value);
        r->ts = e->ts;
        e->dirty = false;
        b->n++;
    }
    memmove(v->dirty, v->dirty + i, (v->ndirty - i) * sizeof *v->dirty);
    v->ndirty -= i;
    if (!b->n) {
        batch_free(b);
        return 0;
    }
    int rc = tw_store_submit(v->store, batch_job, b, batch_done);
    if (rc < 0) {
        /* the store is closing: these rows are lost, say so once */
        tw_log_error(MOD, "%zu values not written: %s", b->n, tw_strerror(rc));
        batch_free(b);
        return rc;
    }
    v->in_flight = true;
    v->stats.batches++;
    return 0;
}

static void *flusher(void *arg)
{
    tw_values *v = arg;
    pthread_mutex_lock(&v->mu);
    while (!v->stop) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_nsec += (long)v->opts.flush_ms * 1000000L;
        dl.tv_sec += dl.tv_nsec / 1000000000L;
        dl.tv_nsec %= 1000000000L;
        while (!v->stop && (v->ndirty < v->opts.batch || v->in_flight)) {
            if (pthread_cond_timedwait(&v->cv, &v->mu, &dl) != 0) break;
        }
        if (!v->in_flight) flush_locked(v);
    }
    pthread_mutex_unlock(&v->mu);
    return NULL;
}

/* ---- load --------------------------------------------------------------- */

static vtwin *twin_get(tw_values *v, const char *id, bool create)
{
    vtwin *t = tw_hmap_get(&v->twins, id);
    if (t || !create) return t;
    t = calloc(1, sizeof *t);
    if (!t || !(t->id = strdup(id))) {
        free(t);
        return NULL;
    }
    tw_hmap_init(&t->by_kind[0]);
    tw_hmap_init(&t->by_kind[1]);
    int err = 0;
    tw_hmap_put(&v->twins, id, t, &err);
    if (err) {
        vtwin_free(t);
        return NULL;
    }
    return t;
}

static vent *vent_add(tw_values *v, vtwin *t, int slot, const char *name)
{
    if (v->stats.entries >= v->opts.max_entries) return NULL;
    vent *e = calloc(1, sizeof *e);
    if (!e || !(e->name = strdup(name))) {
        free(e);
        return NULL;
    }
    e->kind = slot == 0 ? TW_AFF_PROPERTY : TW_AFF_EVENT;
    e->twin = t;
    int err = 0;
    tw_hmap_put(&t->by_kind[slot], name, e, &err);
    if (err) {
        vent_free(e);
        return NULL;
    }
    v->stats.entries++;
    return e;
}

static int load_job(tw_store_tx *tx, void *arg)
{
    tw_values *v = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT thing_id, kind, name, value, ts FROM twin_values");
    if (!st) return TW_EDB;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        int slot = kind_slot((tw_aff_kind)sqlite3_column_int(st, 1));
        const char *name = (const char *)sqlite3_column_text(st, 2);
        const char *text = (const char *)sqlite3_column_text(st, 3);
        json_t *val = text ? tw_json_decode(text, strlen(text)) : NULL;
        vtwin *t = (id && name && slot >= 0 && val) ? twin_get(v, id, true) : NULL;
        vent *e = t ? vent_add(v, t, slot, name) : NULL;
        if (!e) {
            json_decref(val);
            continue;
        }
        e->value = val;
        e->ts = sqlite3_column_int64(st, 4);
    }
    return rc == SQLITE_DONE ? 0 : TW_EDB;
}

static void free_all(tw_values *v)
{
    size_t pos = 0;
    const char *key;
    void *val;
    while (tw_hmap_next(&v->twins, &pos, &key, &val))
        vtwin_free(val);
    tw_hmap_fini(&v->twins);
    for (size_t i = 0; i < v->ndirty; i++)
        if (v->dirty[i]->dead) vent_free(v->dirty[i]);
    free(v->dirty);
}

int tw_values_open(tw_store *s, const tw_values_opts *opts, tw_values **out)
{
    *out = NULL;
    if (!s) return TW_EINVAL;
    tw_values *v = calloc(1, sizeof *v);
    if (!v) return TW_ENOMEM;
    v->store = s;
    if (opts) v->opts = *opts;
    if (v->opts.flush_ms <= 0) v->opts.flush_ms = 100;
    if (!v->opts.batch) v->opts.batch = 8192;
    if (!v->opts.max_entries) v->opts.max_entries = 10000000;
    pthread_mutex_init(&v->mu, NULL);
    pthread_cond_init(&v->cv, NULL);
    pthread_cond_init(&v->idle_cv, NULL);
    tw_hmap_init(&v->twins);
    int rc = tw_store_migrate(s, "twin_values", MIGRATIONS,
                              (int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]));
    int64_t t0 = tw_mono_us();
    if (rc == 0) rc = tw_store_read(s, load_job, v);
    if (rc == 0) {
        tw_log_info(MOD, "loaded %zu values in %.1f ms", v->stats.entries,
                    (double)(tw_mono_us() - t0) / 1000.0);
        if (pthread_create(&v->thread, NULL, flusher, v) != 0)
            rc = TW_ENOMEM;
        else
            v->thread_started = true;
    }
    if (rc) {
        tw_values_close(v);
        return rc;
    }
    *out = v;
    return 0;
}

void tw_values_close(tw_values *v)
{
    if (!v) return;
    if (v->thread_started) {
        pthread_mutex_lock(&v->mu);
        v->stop = true;
        pthread_cond_signal(&v->cv);
        pthread_mutex_unlock(&v->mu);
        pthread_join(v->thread, NULL);
        tw_values_flush(v);
    }
    pthread_mutex_lock(&v->mu);
    while (v->in_flight)
        pthread_cond_wait(&v->idle_cv, &v->mu);
    pthread_mutex_unlock(&v->mu);
    free_all(v);
    pthread_cond_destroy(&v->idle_cv);
    pthread_cond_destroy(&v->cv);
    pthread_mutex_destroy(&v->mu);
    free(v);
}

/* ---- the API ------------------------------------------------------------ */

int tw_values_set(tw_values *v, const char *twin_id, tw_aff_kind kind, const char *name,
                  json_t *value, int64_t ts_ms, bool *changed)
{
    int slot = kind_slot(kind);
    if (slot < 0 || !twin_id || !name || !value) return TW_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&v->mu);
    v->stats.updates++;
    vtwin *t = twin_get(v, twin_id, true);
    vent *e = t ? tw_hmap_get(&t->by_kind[slot], name) : NULL;
    if (t && !e) e = vent_add(v, t, slot, name);
    if (!e) {
        rc = v->stats.entries >= v->opts.max_entries ? TW_EFULL : TW_ENOMEM;
        goto out;
    }
    if (!e->dirty) {
        if (v->ndirty == v->cap_dirty) {
            size_t cap = v->cap_dirty ? v->cap_dirty * 2 : 1024;
            vent **d = realloc(v->dirty, cap * sizeof *d);
            if (!d) {
                rc = TW_ENOMEM;
                goto out;
            }
            v->dirty = d;
            v->cap_dirty = cap;
        }
        v->dirty[v->ndirty++] = e;
        e->dirty = true;
        if (v->ndirty == v->opts.batch) pthread_cond_signal(&v->cv);
    }
    bool same = slot == 0 && e->value && json_equal(e->value, value);
    if (changed) *changed = !same;
    if (!same) {
        json_decref(e->value);
        e->value = json_incref(value);
    }
    e->ts = ts_ms;
out:
    pthread_mutex_unlock(&v->mu);
    return rc;
}

int tw_values_get(tw_values *v, const char *twin_id, tw_aff_kind kind, const char *name,
                  json_t **value, int64_t *ts_ms)
{
    *value = NULL;
    int slot = kind_slot(kind);
    if (slot < 0 || !twin_id || !name) return TW_EINVAL;
    pthread_mutex_lock(&v->mu);
    vtwin *t = tw_hmap_get(&v->twins, twin_id);
    vent *e = t ? tw_hmap_get(&t->by_kind[slot], name) : NULL;
    if (e) {
        *value = json_incref(e->value);
        if (ts_ms) *ts_ms = e->ts;
    }
    pthread_mutex_unlock(&v->mu);
    return e ? 0 : TW_ENOTFOUND;
}

int tw_values_get_all(tw_values *v, const char *twin_id, tw_aff_kind kind, bool with_ts,
                      json_t **out)
{
    *out = NULL;
    int slot = kind_slot(kind);
    if (slot < 0 || !twin_id) return TW_EINVAL;
    json_t *obj = json_object();
    if (!obj) return TW_ENOMEM;
    int rc = 0;
    pthread_mutex_lock(&v->mu);
    vtwin *t = tw_hmap_get(&v->twins, twin_id);
    size_t pos = 0;
    const char *key;
    void *val;
    while (t && tw_hmap_next(&t->by_kind[slot], &pos, &key, &val)) {
        vent *e = val;
        json_t *item = json_incref(e->value);
        if (with_ts) {
            char ts[TW_TIME_LEN];
            tw_time_format(e->ts, ts);
            item = json_pack("{s:o,s:s}", "value", item, "timestamp", ts);
        }
        if (!item || json_object_set_new(obj, key, item) != 0) {
            rc = TW_ENOMEM;
            break;
        }
    }
    pthread_mutex_unlock(&v->mu);
    if (rc) {
        json_decref(obj);
        return rc;
    }
    *out = obj;
    return 0;
}

static int delete_job(tw_store_tx *tx, void *arg)
{
    sqlite3_stmt *st = tw_store_stmt(tx, "DELETE FROM twin_values WHERE thing_id=?1");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
    return sqlite3_step(st) == SQLITE_DONE ? 0 : TW_EDB;
}

static void delete_done(void *arg, int rc)
{
    if (rc < 0) tw_log_error(MOD, "deleting the values of %s failed", (char *)arg);
    free(arg);
}

int tw_values_delete_twin(tw_values *v, const char *twin_id)
{
    if (!twin_id) return TW_EINVAL;
    char *id = strdup(twin_id);
    if (!id) return TW_ENOMEM;
    pthread_mutex_lock(&v->mu);
    vtwin *t = tw_hmap_del(&v->twins, twin_id);
    if (t) {
        v->stats.entries -= t->by_kind[0].len + t->by_kind[1].len;
        vtwin_free(t);
    }
    /* Submitted under mu: ordered after every batch that held its values. */
    int rc = tw_store_submit(v->store, delete_job, id, delete_done);
    pthread_mutex_unlock(&v->mu);
    if (rc < 0) free(id);
    return rc;
}

int tw_values_flush(tw_values *v)
{
    pthread_mutex_lock(&v->mu);
    while (v->in_flight)
        pthread_cond_wait(&v->idle_cv, &v->mu);
    int rc = flush_locked(v);
    pthread_mutex_unlock(&v->mu);
    int frc = tw_store_flush(v->store);
    return rc ? rc : frc;
}

void tw_values_get_stats(tw_values *v, tw_values_stats *out)
{
    pthread_mutex_lock(&v->mu);
    *out = v->stats;
    pthread_mutex_unlock(&v->mu);
}
