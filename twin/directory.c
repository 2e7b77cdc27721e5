/*
 * directory.c - the Thing Description directory (see directory.h).
 *
 * Memory: every Thing is one `entry`, reachable two ways: a hash map by id
 * (lookups from the router, get) and a treap ordered by id whose nodes carry
 * their subtree size, so the k-th Thing is found in O(log n) and a page of the
 * listing costs O(log n + limit) without ever sorting. A reader-writer lock
 * guards both. Stored TDs are immutable jansson objects: readers take a
 * reference under the read lock and use it after releasing the lock.
 *
 * Writes: validate outside the lock, then under the write lock check the
 * owner, bump the sequence, swap the entry, notify subscribers and submit one
 * store job (TD row + change-feed row + pruning of the feed) - submitting
 * under the lock keeps the writer's order equal to the sequence order. The
 * caller then waits for the commit outside the lock, so concurrent writers
 * share group commits.
 *
 * Start-up loads every row back into memory; the sequence continues from the
 * highest one stored. The tree is in dir_tree.c, the change feed in
 * dir_feed.c; this file has the entries, writes, reads, search and queries.
 */
#include "twin/dir_int.h"
#include "runtime/log.h"
#include "runtime/msg.h"
#include "twin/json_fast.h"
#include "twin/jsonpath.h"
#include "twin/merge_patch.h"
#include "twin/td_validate.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- entries ------------------------------------------------------------ */

static void entry_free(entry *e)
{
    if (!e) return;
    free(e->id);
    json_decref(e->td);
    free(e->agent_td);
    free(e);
}

static uint32_t next_prio(tw_dir *d)
{
    /* xorshift64*: treap priorities need no cryptographic quality */
    d->rng ^= d->rng >> 12;
    d->rng ^= d->rng << 25;
    d->rng ^= d->rng >> 27;
    return (uint32_t)((d->rng * 0x2545F4914F6CDD1DULL) >> 32);
}

static json_t *registration(const tw_dir_info *in, bool retrieved)
{
    char t[TW_TIME_LEN];
    json_t *r = json_object();
    if (!r) return NULL;
    tw_time_format(in->created_ms, t);
    json_object_set_new(r, "created", json_string(t));
    tw_time_format(in->modified_ms, t);
    json_object_set_new(r, "modified", json_string(t));
    if (in->expires_ms) {
        tw_time_format(in->expires_ms, t);
        json_object_set_new(r, "expires", json_string(t));
    }
    if (in->ttl_s) json_object_set_new(r, "ttl", json_integer(in->ttl_s));
    if (retrieved) {
        tw_time_format(tw_now_ms(), t);
        json_object_set_new(r, "retrieved", json_string(t));
    }
    return r;
}

/* A shallow copy of the stored TD with registration info (read-only use). */
static json_t *enriched(const entry *e)
{
    json_t *out = json_copy(e->td);
    if (out) json_object_set_new(out, "registration", registration(&e->info, true));
    return out;
}

/* Keeps next_expiry at or before every entry's expiry (write lock held). */
static void note_expiry(tw_dir *d, int64_t expires_ms)
{
    if (expires_ms && (!d->next_expiry || expires_ms < d->next_expiry)) d->next_expiry = expires_ms;
}

/* Gives e its @type ids (write lock held, or single-threaded at open). */
static void index_types(tw_dir *d, entry *e)
{
    json_t *t = json_object_get(e->td, "@type");
    size_t n = json_is_array(t) ? json_array_size(t) : 1;
    e->ntypes = 0;
    e->types_more = false;
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_is_array(t) ? json_array_get(t, i) : t;
        if (!json_is_string(x)) continue;
        if (e->ntypes == sizeof e->types / sizeof e->types[0]) {
            e->types_more = true;
            return;
        }
        uintptr_t id = (uintptr_t)tw_hmap_get(&d->type_ids, json_string_value(x));
        if (!id) {
            int err = 0;
            id = ++d->ntype_ids;
            tw_hmap_put(&d->type_ids, json_string_value(x), (void *)id, &err);
            if (err) {
                d->ntype_ids--;
                e->types_more = true; /* fall back to the TD */
                return;
            }
        }
        e->types[e->ntypes++] = (uint32_t)id;
    }
}

/* ---- SQLite ------------------------------------------------------------- */

static const char *const MIGRATIONS[] = {
    /* a rowid table: TD rows are kilobytes, too big for WITHOUT ROWID */
    "CREATE TABLE twin_things("
    "  id TEXT NOT NULL UNIQUE, agent_id TEXT NOT NULL, td TEXT NOT NULL, agent_td TEXT,"
    "  created INTEGER NOT NULL, modified INTEGER NOT NULL, expires INTEGER NOT NULL,"
    "  ttl INTEGER NOT NULL, seq INTEGER NOT NULL);"
    "CREATE TABLE twin_changes("
    "  seq INTEGER PRIMARY KEY, kind INTEGER NOT NULL, thing_id TEXT NOT NULL, data TEXT,"
    "  ts INTEGER NOT NULL);",
};

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
} waiter;

/* One write: the Thing row (put or delete) and its change-feed row. */
typedef struct dir_job {
    bool del;
    char *id;
    char *agent_id;
    char *td_text;       /* put */
    char *agent_td_text; /* may be NULL */
    tw_dir_info info;
    int kind;        /* tw_dir_change_kind */
    char *data_text; /* thing_updated: the merge patch; otherwise NULL */
    int64_t ts_ms;
    uint64_t prune_upto; /* delete change rows with seq <= this */
    uint64_t fill_seq;   /* copy the old TD into this thing_created row first */
    waiter *w;           /* NULL = nowait */
} dir_job;

static void dir_job_free(dir_job *j)
{
    if (j->data_text != j->td_text) free(j->data_text);
    free(j->td_text);
    free(j->agent_td_text);
    free(j->id);
    free(j->agent_id);
    free(j);
}

static int dir_job_run(tw_store_tx *tx, void *arg)
{
    dir_job *j = arg;
    sqlite3_stmt *st;
    if (j->fill_seq) {
        /* the TD this Thing was created with is about to be replaced: the
         * thing_created row that pointed at it gets its own copy */
        st = tw_store_stmt(tx, "UPDATE twin_changes SET data=(SELECT td FROM twin_things "
                               "WHERE id=?1) WHERE seq=?2 AND data IS NULL");
        if (!st) return TW_EDB;
        sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)j->fill_seq);
        if (sqlite3_step(st) != SQLITE_DONE) goto db_error;
    }
    if (j->del) {
        st = tw_store_stmt(tx, "DELETE FROM twin_things WHERE id=?1");
        if (!st) return TW_EDB;
        sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
    } else {
        st = tw_store_stmt(tx, "INSERT OR REPLACE INTO twin_things(id, agent_id, td, agent_td, "
                               "created, modified, expires, ttl, seq) "
                               "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)");
        if (!st) return TW_EDB;
        sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, j->agent_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, j->td_text, -1, SQLITE_STATIC);
        if (j->agent_td_text) sqlite3_bind_text(st, 4, j->agent_td_text, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, j->info.created_ms);
        sqlite3_bind_int64(st, 6, j->info.modified_ms);
        sqlite3_bind_int64(st, 7, j->info.expires_ms);
        sqlite3_bind_int64(st, 8, j->info.ttl_s);
        sqlite3_bind_int64(st, 9, (sqlite3_int64)j->info.seq);
    }
    if (sqlite3_step(st) != SQLITE_DONE) goto db_error;
    st = tw_store_stmt(tx, "INSERT INTO twin_changes(seq, kind, thing_id, data, ts) "
                           "VALUES(?1,?2,?3,?4,?5)");
    if (!st) return TW_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)j->info.seq);
    sqlite3_bind_int(st, 2, j->kind);
    sqlite3_bind_text(st, 3, j->id, -1, SQLITE_STATIC);
    if (j->data_text) sqlite3_bind_text(st, 4, j->data_text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, j->ts_ms);
    if (sqlite3_step(st) != SQLITE_DONE) goto db_error;
    if (j->prune_upto) {
        st = tw_store_stmt(tx, "DELETE FROM twin_changes WHERE seq<=?1");
        if (!st) return TW_EDB;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)j->prune_upto);
        if (sqlite3_step(st) != SQLITE_DONE) goto db_error;
    }
    return 0;
db_error:
    tw_log_error(MOD, "writing %s: %s", j->id, sqlite3_errmsg(tw_store_db(tx)));
    return TW_EDB;
}

static void dir_job_done(void *arg, int rc)
{
    dir_job *j = arg;
    waiter *w = j->w;
    if (rc < 0) tw_log_error(MOD, "the write of %s failed: %s", j->id, tw_strerror(rc));
    dir_job_free(j);
    if (w) {
        pthread_mutex_lock(&w->mu);
        w->rc = rc;
        w->done = true;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
    }
}

static int waiter_wait(waiter *w)
{
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    return w->rc;
}

/* ---- open / close / load ------------------------------------------------ */

/*
 * Start-up: the reading job copies the rows out (entries with their TD as
 * text), parsing - the slow part - then runs on a few threads, and the
 * entries go into the map and tree on the opening thread.
 */
typedef struct load_ctx {
    tw_dir *d;
    entry **rows;
    char **texts;
    size_t n, cap;
    size_t loaded, bad;
} load_ctx;

static int load_job(tw_store_tx *tx, void *arg)
{
    load_ctx *lc = arg;
    sqlite3_stmt *st = tw_store_stmt(
        tx, "SELECT t.id, t.agent_id, t.td, t.agent_td, t.created, t.modified, t.expires, t.ttl, "
            "t.seq, c.seq FROM twin_things t LEFT JOIN twin_changes c ON c.seq=t.seq AND "
            "c.kind=1 AND c.data IS NULL");
    if (!st) return TW_EDB;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (lc->n == lc->cap) {
            size_t cap = lc->cap ? lc->cap * 2 : 1024;
            entry **rows = realloc(lc->rows, cap * sizeof *rows);
            if (rows) lc->rows = rows;
            char **texts = rows ? realloc(lc->texts, cap * sizeof *texts) : NULL;
            if (!texts) return TW_ENOMEM;
            lc->texts = texts;
            lc->cap = cap;
        }
        entry *e = calloc(1, sizeof *e);
        if (!e) return TW_ENOMEM;
        const char *id = (const char *)sqlite3_column_text(st, 0);
        const char *agent = (const char *)sqlite3_column_text(st, 1);
        const char *td = (const char *)sqlite3_column_text(st, 2);
        const char *atd = (const char *)sqlite3_column_text(st, 3);
        e->id = strdup(id ? id : "");
        e->agent_td = atd ? strdup(atd) : NULL;
        tw_strlcpy(e->info.agent_id, agent ? agent : "", sizeof e->info.agent_id);
        e->info.created_ms = sqlite3_column_int64(st, 4);
        e->info.modified_ms = sqlite3_column_int64(st, 5);
        e->info.expires_ms = sqlite3_column_int64(st, 6);
        e->info.ttl_s = sqlite3_column_int64(st, 7);
        e->info.seq = (uint64_t)sqlite3_column_int64(st, 8);
        e->create_seq = (uint64_t)sqlite3_column_int64(st, 9); /* 0 when NULL */
        lc->rows[lc->n] = e;
        lc->texts[lc->n] = td ? strdup(td) : NULL;
        lc->n++;
    }
    if (rc != SQLITE_DONE) return TW_EDB;
    st = tw_store_stmt(tx, "SELECT MAX(seq) FROM twin_changes");
    if (!st) return TW_EDB;
    if (sqlite3_step(st) == SQLITE_ROW) {
        uint64_t s = (uint64_t)sqlite3_column_int64(st, 0);
        if (s > lc->d->seq) lc->d->seq = s;
    }
    return 0;
}

#define LOAD_THREADS 4

typedef struct parse_arg {
    load_ctx *lc;
    size_t from, to;
} parse_arg;

static void *parse_rows(void *arg)
{
    parse_arg *pa = arg;
    for (size_t i = pa->from; i < pa->to; i++) {
        char *t = pa->lc->texts[i];
        json_t *td = t ? tw_json_decode(t, strlen(t)) : NULL;
        if (td) tw_intern_tree(pa->lc->d->intern, td);
        pa->lc->rows[i]->td = td;
        free(t);
        pa->lc->texts[i] = NULL;
    }
    return NULL;
}

static int load(tw_dir *d, load_ctx *lc)
{
    int rc = tw_store_read(d->store, load_job, lc);
    /* parse on up to LOAD_THREADS threads (fewer for small directories) */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nt =
        lc->n < 2000 ? 1 : (size_t)(ncpu > 1 ? (ncpu < LOAD_THREADS ? ncpu : LOAD_THREADS) : 1);
    pthread_t th[LOAD_THREADS];
    parse_arg pa[LOAD_THREADS];
    size_t started = 0;
    for (size_t t = 0; t < nt; t++) {
        pa[t] = (parse_arg){.lc = lc, .from = lc->n * t / nt, .to = lc->n * (t + 1) / nt};
        if (t == 0 || pthread_create(&th[t], NULL, parse_rows, &pa[t]) != 0) continue;
        started |= (size_t)1 << t;
    }
    for (size_t t = 0; t < nt; t++)
        if (!(started & ((size_t)1 << t))) parse_rows(&pa[t]); /* this thread's share */
    for (size_t t = 0; t < nt; t++)
        if (started & ((size_t)1 << t)) pthread_join(th[t], NULL);
    for (size_t i = 0; i < lc->n; i++) {
        entry *e = lc->rows[i];
        int err = 0;
        if (rc || !e->id || !json_is_object(e->td) || tw_hmap_get(&d->by_id, e->id)) {
            if (!rc) {
                tw_log_error(MOD, "skipping an unreadable stored TD %s", e->id ? e->id : "?");
                lc->bad++;
            }
            entry_free(e);
            continue;
        }
        tw_hmap_put(&d->by_id, e->id, e, &err);
        if (err) {
            entry_free(e);
            rc = TW_ENOMEM;
            continue;
        }
        index_types(d, e);
        note_expiry(d, e->info.expires_ms);
        e->prio = next_prio(d);
        e->size = 1;
        d->root = dir_tree_insert(d->root, e);
        if (e->info.seq > d->seq) d->seq = e->info.seq;
        lc->loaded++;
    }
    free(lc->rows);
    free(lc->texts);
    return rc;
}

static void free_tree(entry *t)
{
    if (!t) return;
    free_tree(t->l);
    free_tree(t->r);
    entry_free(t);
}

int tw_dir_open(tw_store *s, const tw_dir_opts *opts, tw_dir **out)
{
    *out = NULL;
    if (!s) return TW_EINVAL;
    if (sodium_init() < 0) return TW_ECRYPTO;
    tw_dir *d = calloc(1, sizeof *d);
    if (!d) return TW_ENOMEM;
    d->store = s;
    if (opts) d->opts = *opts;
    if (!d->opts.max_things) d->opts.max_things = 1000000;
    if (!d->opts.max_changes) d->opts.max_changes = 10000;
    if (!d->opts.max_td_bytes) d->opts.max_td_bytes = 1024 * 1024;
    if (!d->opts.max_query_results) d->opts.max_query_results = 100000;
    randombytes_buf(&d->rng, sizeof d->rng);
    d->rng |= 1;
    pthread_rwlock_init(&d->lock, NULL);
    pthread_mutex_init(&d->snap_mu, NULL);
    if (!(d->intern = tw_intern_new())) {
        free(d);
        return TW_ENOMEM;
    }
    tw_hmap_init(&d->by_id);
    tw_hmap_init(&d->type_ids);
    int rc = tw_store_migrate(s, "twin_dir", MIGRATIONS,
                              (int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]));
    if (rc == 0) {
        int64_t t0 = tw_mono_us();
        load_ctx lc = {.d = d};
        rc = load(d, &lc);
        if (rc == 0)
            tw_log_info(MOD, "loaded %zu Things in %.1f ms (%zu unreadable), sequence %llu",
                        lc.loaded, (double)(tw_mono_us() - t0) / 1000.0, lc.bad,
                        (unsigned long long)d->seq);
    }
    if (rc) {
        tw_log_error(MOD, "cannot open the directory: %s", tw_strerror(rc));
        tw_dir_close(d);
        return rc;
    }
    *out = d;
    return 0;
}

void tw_dir_close(tw_dir *d)
{
    if (!d) return;
    tw_store_flush(d->store);
    free_tree(d->root);
    tw_intern_free(d->intern);
    tw_hmap_fini(&d->by_id);
    tw_hmap_fini(&d->type_ids);
    free(d->listeners);
    json_decref(d->snap);
    json_decref(d->tsnap);
    free(d->tsnap_type);
    free(d->items);
    pthread_mutex_destroy(&d->snap_mu);
    pthread_rwlock_destroy(&d->lock);
    free(d);
}

/* ---- writes ------------------------------------------------------------- */

static json_t *problem_simple(int code, const char *detail, const char *field)
{
    return tw_problem_from_error(code, detail, field);
}

static void set_problem(json_t **problem, json_t *p)
{
    if (problem)
        *problem = p;
    else
        json_decref(p);
}

static bool is_twin_id(const char *id)
{
    return strncmp(id, "dtw:", 4) == 0;
}

/* Submits j (under the write lock); returns what to wait for. */
static int submit(tw_dir *d, dir_job *j, waiter *w)
{
    if (d->seq > d->opts.max_changes) j->prune_upto = d->seq - d->opts.max_changes;
    if (w) {
        pthread_mutex_init(&w->mu, NULL);
        pthread_cond_init(&w->cv, NULL);
        w->done = false;
        w->rc = 0;
    }
    j->w = w;
    int rc = tw_store_submit(d->store, dir_job_run, j, dir_job_done);
    if (rc < 0) {
        if (w) {
            pthread_mutex_destroy(&w->mu);
            pthread_cond_destroy(&w->cv);
        }
        dir_job_free(j);
    }
    return rc;
}

static bool owner_ok(const entry *e, const char *agent_id)
{
    return strcmp(e->info.agent_id, agent_id ? agent_id : "") == 0;
}

/*
 * Installs td (new reference stolen) under id. Validation already happened.
 * A replaced entry's old TD is diffed against the new one for the feed.
 */
static int install(tw_dir *d, const char *id, json_t *td, const tw_dir_put_opts *o, bool *created,
                   json_t **problem)
{
    const char *agent = (o && o->agent_id) ? o->agent_id : "";
    /* registration info is the directory's; the TD may only ask for a ttl */
    int64_t ttl = o ? o->ttl_s : 0;
    if (!ttl) {
        json_t *t = json_object_get(json_object_get(td, "registration"), "ttl");
        if (json_is_integer(t) && json_integer_value(t) > 0) ttl = json_integer_value(t);
    }
    json_object_del(td, "registration");
    size_t td_len = 0;
    char *td_text = tw_json_encode(td, &td_len);
    char *atd_text = (o && o->agent_td) ? tw_json_encode(o->agent_td, NULL) : NULL;
    char *agent_td = atd_text ? strdup(atd_text) : NULL;
    entry *e = calloc(1, sizeof *e);
    dir_job *j = calloc(1, sizeof *j);
    int rc = 0;
    if (!td_text || !e || !j || ((o && o->agent_td) && (!atd_text || !agent_td)) ||
        !(e->id = strdup(id)) || !(j->id = strdup(id)) || !(j->agent_id = strdup(agent))) {
        rc = TW_ENOMEM;
        goto fail;
    }
    if (td_len > d->opts.max_td_bytes) {
        rc = TW_ETOOBIG;
        set_problem(problem,
                    problem_simple(rc, "the TD is larger than the directory allows", NULL));
        goto fail;
    }
    if (strlen(agent) >= TW_ID_MAX) {
        rc = TW_EINVAL;
        goto fail;
    }
    tw_intern_tree(d->intern, td); /* td is ours alone until installed */
    e->td = td;
    td = NULL;
    e->agent_td = agent_td;
    agent_td = NULL;
    tw_strlcpy(e->info.agent_id, agent, sizeof e->info.agent_id);
    int64_t now = tw_now_ms();

    waiter w;
    bool wait = !(o && o->nowait);
    pthread_rwlock_wrlock(&d->lock);
    entry *old = tw_hmap_get(&d->by_id, id);
    if (old && !owner_ok(old, o ? o->agent_id : NULL)) {
        bool agents = old->info.agent_id[0] != '\0';
        pthread_rwlock_unlock(&d->lock);
        rc = TW_EPERM;
        set_problem(problem, tw_problem_new(403, "not-owner", "forbidden",
                                            agents ? "this Thing belongs to another agent"
                                                   : "this Thing is a directory entry, not an "
                                                     "agent's",
                                            "id"));
        goto fail;
    }
    if (!old && tw_hmap_get(&d->by_id, id) == NULL && d->by_id.len >= d->opts.max_things) {
        pthread_rwlock_unlock(&d->lock);
        rc = TW_EFULL;
        set_problem(problem, problem_simple(rc, "the directory is full", NULL));
        goto fail;
    }
    e->info.created_ms = old ? old->info.created_ms : now;
    e->info.modified_ms = now;
    e->info.ttl_s = ttl;
    e->info.expires_ms = ttl ? now + ttl * 1000 : 0;
    note_expiry(d, e->info.expires_ms);
    e->info.seq = ++d->seq;
    json_t *data;
    if (old) {
        data = tw_merge_patch_diff(old->td, e->td);
        j->kind = TW_DIR_UPDATED;
        j->data_text = data ? tw_json_encode(data, NULL) : NULL;
    } else {
        data = json_incref(e->td);
        j->kind = TW_DIR_CREATED;
        /* no copy of the TD in the feed row while the Thing keeps it */
        j->data_text = NULL;
        e->create_seq = e->info.seq;
    }
    index_types(d, e);
    int err = 0;
    tw_hmap_put(&d->by_id, e->id, e, &err);
    if (err) {
        d->seq--;
        pthread_rwlock_unlock(&d->lock);
        json_decref(data);
        rc = TW_ENOMEM;
        goto fail;
    }
    if (old) {
        j->fill_seq = old->create_seq;
        d->root = dir_tree_replace(d->root, e);
    } else {
        e->prio = next_prio(d);
        e->size = 1;
        d->root = dir_tree_insert(d->root, e);
    }
    j->td_text = td_text;
    td_text = NULL;
    j->agent_td_text = atd_text;
    atd_text = NULL;
    j->info = e->info;
    j->ts_ms = now;
    dir_notify(d, j->kind, e->id, data, now);
    json_decref(data);
    rc = submit(d, j, wait ? &w : NULL);
    j = NULL;
    pthread_rwlock_unlock(&d->lock);
    entry_free(old);
    if (created) *created = old == NULL;
    if (rc == 0 && wait) rc = waiter_wait(&w);
    if (rc < 0)
        set_problem(problem, problem_simple(rc, "the directory could not store the TD", NULL));
    return rc;
fail:
    if (j) {
        dir_job_free(j);
    }
    free(td_text);
    free(atd_text);
    json_decref(td);
    free(agent_td);
    entry_free(e); /* owns td and agent_td once they were moved into it */
    if (rc == TW_ENOMEM) set_problem(problem, problem_simple(rc, NULL, NULL));
    return rc;
}

static int validate(const tw_dir_put_opts *o, json_t *td, json_t **problem)
{
    if (o && o->skip_validate) return 0;
    json_t *errors = NULL;
    int rc = tw_td_validate(td, 0, &errors);
    if (rc == TW_EINVAL)
        set_problem(problem, tw_td_problem(errors));
    else if (rc)
        set_problem(problem, problem_simple(rc, NULL, NULL));
    return rc;
}

static bool id_ok(const char *id, json_t **problem)
{
    if (!id || !*id || strlen(id) >= TW_THING_ID_MAX) {
        set_problem(problem, problem_simple(TW_EINVAL, "a Thing id is 1 to 255 bytes", "id"));
        return false;
    }
    return true;
}

/* The checks of tw_dir_put before anything is copied. */
static int put_check(const char *id, json_t *td, const tw_dir_put_opts *opts, json_t **problem)
{
    if (!id_ok(id, problem)) return TW_EINVAL;
    if (!json_is_object(td)) {
        set_problem(problem, problem_simple(TW_EINVAL, "a TD is a JSON object", NULL));
        return TW_EINVAL;
    }
    bool agent = opts && opts->agent_id && opts->agent_id[0];
    if (!agent && is_twin_id(id)) {
        set_problem(problem, tw_problem_new(403, "reserved-id", "forbidden",
                                            "ids starting with dtw: name agents' twins; "
                                            "they are managed by their agents",
                                            "id"));
        return TW_EPERM;
    }
    json_t *tid = json_object_get(td, "id");
    if (tid && (!json_is_string(tid) || strcmp(json_string_value(tid), id) != 0)) {
        set_problem(problem, problem_simple(TW_EINVAL,
                                            "the TD's id differs from the id it is "
                                            "stored under",
                                            "/id"));
        return TW_EINVAL;
    }
    return 0;
}

int tw_dir_put(tw_dir *d, const char *id, json_t *td, const tw_dir_put_opts *opts, bool *created,
               json_t **problem)
{
    if (problem) *problem = NULL;
    bool take = opts && opts->take;
    int rc = put_check(id, td, opts, problem);
    if (rc) {
        if (take) json_decref(td);
        return rc;
    }
    json_t *copy = take ? td : tw_json_copy(td);
    if (!copy) return TW_ENOMEM;
    if (!json_object_get(copy, "id")) json_object_set_new(copy, "id", json_string(id));
    rc = validate(opts, copy, problem);
    if (rc) {
        json_decref(copy);
        return rc;
    }
    return install(d, id, copy, opts, created, problem);
}

int tw_dir_create_anonymous(tw_dir *d, json_t *td, const tw_dir_put_opts *opts, char **id_out,
                            json_t **problem)
{
    *id_out = NULL;
    if (problem) *problem = NULL;
    if (json_is_object(td) && json_object_get(td, "id")) {
        set_problem(problem, problem_simple(TW_EINVAL,
                                            "an anonymous TD has no id (PUT it "
                                            "under its id instead)",
                                            "/id"));
        return TW_EINVAL;
    }
    uint8_t u[16];
    randombytes_buf(u, sizeof u);
    u[6] = (uint8_t)((u[6] & 0x0F) | 0x40); /* version 4 */
    u[8] = (uint8_t)((u[8] & 0x3F) | 0x80); /* RFC 4122 variant */
    char id[64];
    snprintf(id, sizeof id,
             "urn:uuid:%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
             u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
             u[14], u[15]);
    int rc = tw_dir_put(d, id, td, opts, NULL, problem);
    if (rc == 0 && !(*id_out = strdup(id))) rc = TW_ENOMEM;
    return rc;
}

int tw_dir_patch(tw_dir *d, const char *id, const json_t *patch, const char *agent_id,
                 json_t **problem)
{
    if (problem) *problem = NULL;
    if (!json_is_object(patch)) {
        set_problem(problem, problem_simple(TW_EINVAL, "a merge patch of a TD is an object", NULL));
        return TW_EINVAL;
    }
    json_t *pid = json_object_get(patch, "id");
    if (pid && !(json_is_string(pid) && strcmp(json_string_value(pid), id) == 0)) {
        set_problem(problem, problem_simple(TW_EINVAL, "a patch cannot change the id", "/id"));
        return TW_EINVAL;
    }
    json_t *cur = NULL, *agent_td = NULL;
    tw_dir_info info;
    int rc = tw_dir_get_info(d, id, &info, &cur, &agent_td);
    if (rc) {
        set_problem(problem, problem_simple(rc, "no such Thing", "id"));
        return rc;
    }
    if (strcmp(info.agent_id, agent_id ? agent_id : "") != 0) {
        json_decref(cur);
        json_decref(agent_td);
        set_problem(problem, tw_problem_new(403, "not-owner", "forbidden",
                                            "this Thing belongs to another agent", "id"));
        return TW_EPERM;
    }
    json_t *next = tw_merge_patch_apply(cur, patch);
    json_decref(cur);
    /* the agent's own TD stays as it was */
    tw_dir_put_opts o = {.agent_id = agent_id, .agent_td = agent_td, .ttl_s = info.ttl_s};
    rc = next ? validate(&o, next, problem) : TW_ENOMEM;
    if (rc == 0)
        rc = install(d, id, next, &o, NULL, problem);
    else
        json_decref(next);
    json_decref(agent_td);
    return rc;
}

/* Removes an entry (write lock held) and submits the delete. Returns
 * TW_ENOMEM with nothing changed, or the submit result with e removed from
 * memory (the caller frees it). */
static int remove_locked(tw_dir *d, entry *e, waiter *w, bool *removed)
{
    *removed = false;
    dir_job *j = calloc(1, sizeof *j);
    if (!j || !(j->id = strdup(e->id)) || !(j->agent_id = strdup(""))) {
        if (j) free(j->id);
        free(j);
        return TW_ENOMEM;
    }
    j->del = true;
    j->kind = TW_DIR_DELETED;
    j->fill_seq = e->create_seq;
    j->info.seq = ++d->seq;
    j->ts_ms = tw_now_ms();
    tw_hmap_del(&d->by_id, e->id);
    d->root = dir_tree_erase(d->root, e->id);
    *removed = true;
    dir_notify(d, TW_DIR_DELETED, e->id, NULL, j->ts_ms);
    return submit(d, j, w);
}

int tw_dir_delete(tw_dir *d, const char *id, const char *agent_id)
{
    if (!id) return TW_EINVAL;
    pthread_rwlock_wrlock(&d->lock);
    entry *e = tw_hmap_get(&d->by_id, id);
    if (!e) {
        pthread_rwlock_unlock(&d->lock);
        return TW_ENOTFOUND;
    }
    if (agent_id && !owner_ok(e, agent_id)) {
        pthread_rwlock_unlock(&d->lock);
        return TW_EPERM;
    }
    waiter w;
    bool removed;
    int rc = remove_locked(d, e, &w, &removed);
    pthread_rwlock_unlock(&d->lock);
    if (removed) entry_free(e);
    if (rc == 0) rc = waiter_wait(&w);
    return rc;
}

typedef struct purge_ctx {
    int64_t now;
    int64_t next; /* earliest expiry that stays */
    char **ids;
    size_t n, cap;
} purge_ctx;

static bool purge_visit(void *ctx, entry *e)
{
    purge_ctx *pc = ctx;
    if (!e->info.expires_ms) return true;
    if (e->info.expires_ms >= pc->now) {
        if (!pc->next || e->info.expires_ms < pc->next) pc->next = e->info.expires_ms;
        return true;
    }
    if (pc->n == pc->cap) {
        size_t cap = pc->cap ? pc->cap * 2 : 16;
        char **ids = realloc(pc->ids, cap * sizeof *ids);
        if (!ids) return false;
        pc->ids = ids;
        pc->cap = cap;
    }
    pc->ids[pc->n] = strdup(e->id);
    if (pc->ids[pc->n]) pc->n++;
    return true;
}

int tw_dir_purge_expired(tw_dir *d, int64_t now_ms, size_t *purged)
{
    purge_ctx pc = {.now = now_ms};
    if (purged) *purged = 0;
    /* leaves of deleted TDs: dropped once the table doubled since last time */
    tw_intern_sweep(d->intern, 0);
    pthread_rwlock_rdlock(&d->lock);
    /* nothing can have expired yet: no walk (this runs every second) */
    if (!d->next_expiry || now_ms <= d->next_expiry) {
        pthread_rwlock_unlock(&d->lock);
        return 0;
    }
    uint64_t seq_at_walk = d->seq;
    dir_tree_walk(d->root, 0, purge_visit, &pc);
    pthread_rwlock_unlock(&d->lock);
    size_t n = 0;
    for (size_t i = 0; i < pc.n; i++) {
        pthread_rwlock_wrlock(&d->lock);
        entry *e = tw_hmap_get(&d->by_id, pc.ids[i]);
        bool removed = false;
        /* re-check: it may have been renewed since the scan */
        if (e && e->info.expires_ms && e->info.expires_ms < now_ms)
            remove_locked(d, e, NULL, &removed);
        pthread_rwlock_unlock(&d->lock);
        if (removed) {
            entry_free(e);
            n++;
        }
        free(pc.ids[i]);
    }
    free(pc.ids);
    pthread_rwlock_wrlock(&d->lock);
    if (d->seq == seq_at_walk + n)
        d->next_expiry = pc.next; /* only our deletes since */
    else if (pc.next && pc.next < d->next_expiry)
        d->next_expiry = pc.next;
    pthread_rwlock_unlock(&d->lock);
    if (n) tw_log_info(MOD, "purged %zu expired TDs", n);
    if (purged) *purged = n;
    return 0;
}

/* ---- reads -------------------------------------------------------------- */

static bool expired(const entry *e)
{
    return e->info.expires_ms && e->info.expires_ms < tw_now_ms();
}

int tw_dir_get(tw_dir *d, const char *id, json_t **td_out)
{
    *td_out = NULL;
    if (!id) return TW_EINVAL;
    pthread_rwlock_rdlock(&d->lock);
    entry *e = tw_hmap_get(&d->by_id, id);
    if (e && !expired(e)) *td_out = enriched(e);
    pthread_rwlock_unlock(&d->lock);
    if (!e) return TW_ENOTFOUND;
    return *td_out ? 0 : (expired(e) ? TW_ENOTFOUND : TW_ENOMEM);
}

int tw_dir_get_info(tw_dir *d, const char *id, tw_dir_info *info, json_t **td_out,
                    json_t **agent_td_out)
{
    if (td_out) *td_out = NULL;
    if (agent_td_out) *agent_td_out = NULL;
    if (!id) return TW_EINVAL;
    pthread_rwlock_rdlock(&d->lock);
    entry *e = tw_hmap_get(&d->by_id, id);
    if (e) {
        if (info) *info = e->info;
        if (td_out) *td_out = json_incref(e->td);
        if (agent_td_out && e->agent_td)
            *agent_td_out = tw_json_decode(e->agent_td, strlen(e->agent_td));
    }
    pthread_rwlock_unlock(&d->lock);
    return e ? 0 : TW_ENOTFOUND;
}

size_t tw_dir_count(tw_dir *d)
{
    pthread_rwlock_rdlock(&d->lock);
    size_t n = d->by_id.len;
    pthread_rwlock_unlock(&d->lock);
    return n;
}

uint64_t tw_dir_etag(tw_dir *d)
{
    pthread_rwlock_rdlock(&d->lock);
    uint64_t s = d->seq;
    pthread_rwlock_unlock(&d->lock);
    return s;
}

typedef struct page_ctx {
    json_t *page;
    size_t left;
    bool failed;
} page_ctx;

static bool page_visit(void *ctx, entry *e)
{
    page_ctx *pc = ctx;
    if (!pc->left) return false;
    if (json_array_append_new(pc->page, enriched(e)) != 0) {
        pc->failed = true;
        return false;
    }
    return --pc->left > 0;
}

int tw_dir_list(tw_dir *d, size_t offset, size_t limit, json_t **page, size_t *total,
                uint64_t *etag)
{
    page_ctx pc = {.page = json_array(), .left = limit};
    *page = NULL;
    if (!pc.page) return TW_ENOMEM;
    pthread_rwlock_rdlock(&d->lock);
    if (limit && offset < dir_tree_size(d->root)) dir_tree_walk(d->root, offset, page_visit, &pc);
    if (total) *total = dir_tree_size(d->root);
    if (etag) *etag = d->seq;
    pthread_rwlock_unlock(&d->lock);
    if (pc.failed) {
        json_decref(pc.page);
        return TW_ENOMEM;
    }
    *page = pc.page;
    return 0;
}

static bool has_type(const json_t *td, const char *type)
{
    json_t *t = json_object_get(td, "@type");
    if (json_is_string(t)) return strcmp(json_string_value(t), type) == 0;
    size_t i;
    json_t *x;
    json_array_foreach(t, i, x) if (json_is_string(x) &&
                                    strcmp(json_string_value(x), type) == 0) return true;
    return false;
}

static bool has_affordance(const json_t *td, const char *name)
{
    return json_object_get(json_object_get(td, "properties"), name) ||
           json_object_get(json_object_get(td, "actions"), name) ||
           json_object_get(json_object_get(td, "events"), name);
}

/* want: the filter's type id (0 = a type no Thing has). */
static bool entry_has_type(const entry *e, const char *type, uint32_t want)
{
    for (int i = 0; i < e->ntypes; i++)
        if (e->types[i] == want) return true;
    return e->types_more && has_type(e->td, type);
}

static bool matches(const entry *e, const tw_dir_filter *f, uint32_t want_type)
{
    if (f->type && *f->type && !entry_has_type(e, f->type, want_type)) return false;
    if (f->title && *f->title) {
        const char *t = json_string_value(json_object_get(e->td, "title"));
        if (!t || !strcasestr(t, f->title)) return false;
    }
    if (f->name && *f->name && !has_affordance(e->td, f->name)) return false;
    if (f->agent && *f->agent) {
        const char *a = strcmp(f->agent, "-") == 0 ? "" : f->agent;
        if (strcmp(e->info.agent_id, a) != 0) return false;
    }
    return true;
}

typedef struct items_ctx {
    snap_item *items;
    size_t n;
} items_ctx;

static bool items_visit(void *ctx, entry *e)
{
    items_ctx *ic = ctx;
    snap_item *it = &ic->items[ic->n++];
    it->e = e;
    it->ntypes = e->ntypes;
    it->types_more = e->types_more;
    memcpy(it->types, e->types, sizeof it->types);
    return true;
}

/*
 * Takes the read lock with d->items current for it. Returns 0 with the read
 * lock held, or TW_ENOMEM with no lock held.
 */
static int lock_items(tw_dir *d)
{
    int rc = 0;
    pthread_mutex_lock(&d->snap_mu);
    pthread_rwlock_rdlock(&d->lock);
    if (!d->items_valid || d->items_seq != d->seq) {
        size_t n = d->by_id.len;
        if (n > d->cap_items) {
            size_t cap = n + n / 4 + 16;
            snap_item *items = realloc(d->items, cap * sizeof *items);
            if (items) {
                d->items = items;
                d->cap_items = cap;
            } else {
                rc = TW_ENOMEM;
            }
        }
        if (rc == 0) {
            items_ctx ic = {.items = d->items};
            dir_tree_walk(d->root, 0, items_visit, &ic);
            d->nitems = ic.n;
            d->items_seq = d->seq;
            d->items_valid = true;
        }
    }
    /* the read lock keeps the array current: no write, so no rebuild */
    pthread_mutex_unlock(&d->snap_mu);
    if (rc) pthread_rwlock_unlock(&d->lock);
    return rc;
}

static bool item_has_type(const snap_item *it, const char *type, uint32_t want)
{
    for (int i = 0; i < it->ntypes; i++)
        if (it->types[i] == want) return true;
    return it->types_more && has_type(it->e->td, type);
}

int tw_dir_search(tw_dir *d, const tw_dir_filter *f, size_t offset, size_t limit, json_t **page,
                  size_t *total)
{
    static const tw_dir_filter none = {0};
    if (!f) f = &none;
    *page = NULL;
    json_t *out = json_array();
    if (!out || lock_items(d)) {
        json_decref(out);
        return TW_ENOMEM;
    }
    const char *type = f->type && *f->type ? f->type : NULL;
    tw_dir_filter rest = *f; /* the filters besides @type */
    rest.type = NULL;
    uint32_t want = type ? (uint32_t)(uintptr_t)tw_hmap_get(&d->type_ids, type) : 0;
    size_t matched = 0;
    bool failed = false;
    for (size_t i = 0; i < d->nitems; i++) {
        const snap_item *it = &d->items[i];
        if (type && !item_has_type(it, type, want)) continue;
        if (!matches(it->e, &rest, 0)) continue;
        if (matched >= offset && matched - offset < limit &&
            json_array_append_new(out, enriched(it->e)) != 0)
            failed = true;
        matched++;
    }
    pthread_rwlock_unlock(&d->lock);
    if (failed) {
        json_decref(out);
        return TW_ENOMEM;
    }
    if (total) *total = matched;
    *page = out;
    return 0;
}

static bool snap_visit(void *ctx, entry *e)
{
    return json_array_append(ctx, e->td) == 0;
}

/* The array of every stored TD, rebuilt only after a write. */
static json_t *snapshot(tw_dir *d)
{
    json_t *arr = NULL;
    pthread_mutex_lock(&d->snap_mu);
    pthread_rwlock_rdlock(&d->lock);
    if (d->snap && d->snap_seq == d->seq) {
        arr = json_incref(d->snap);
    } else {
        arr = json_array();
        if (arr && !dir_tree_walk(d->root, 0, snap_visit, arr)) {
            json_decref(arr);
            arr = NULL;
        }
        if (arr) {
            json_decref(d->snap);
            d->snap = json_incref(arr);
            d->snap_seq = d->seq;
        }
    }
    pthread_rwlock_unlock(&d->lock);
    pthread_mutex_unlock(&d->snap_mu);
    return arr;
}

/* The array of the TDs whose @type includes type, in id order. */
static json_t *typed(tw_dir *d, const char *type)
{
    /* the last type's array is kept until the next write: repeated queries
     * on one type take no reference per TD */
    pthread_mutex_lock(&d->snap_mu);
    pthread_rwlock_rdlock(&d->lock);
    json_t *hit = d->tsnap && d->tsnap_seq == d->seq && strcmp(d->tsnap_type, type) == 0
                      ? json_incref(d->tsnap)
                      : NULL;
    uint64_t seq = d->seq;
    pthread_rwlock_unlock(&d->lock);
    pthread_mutex_unlock(&d->snap_mu);
    if (hit) return hit;

    json_t *arr = json_array();
    if (!arr || lock_items(d)) {
        json_decref(arr);
        return NULL;
    }
    seq = d->seq;
    uint32_t want = (uint32_t)(uintptr_t)tw_hmap_get(&d->type_ids, type);
    for (size_t i = 0; arr && i < d->nitems; i++) {
        const snap_item *it = &d->items[i];
        if (item_has_type(it, type, want) && json_array_append(arr, it->e->td) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    pthread_rwlock_unlock(&d->lock);
    char *t = arr ? strdup(type) : NULL;
    if (t) {
        pthread_mutex_lock(&d->snap_mu);
        json_decref(d->tsnap);
        free(d->tsnap_type);
        d->tsnap = json_incref(arr);
        d->tsnap_type = t;
        d->tsnap_seq = seq; /* the state the array was read at */
        pthread_mutex_unlock(&d->snap_mu);
    }
    return arr;
}

int tw_dir_query(tw_dir *d, const char *jsonpath, json_t **result, json_t **problem)
{
    *result = NULL;
    if (problem) *problem = NULL;
    tw_jsonpath *p = NULL;
    char err[256];
    size_t off = 0;
    int rc = tw_jsonpath_compile(jsonpath, &p, err, sizeof err, &off);
    if (rc) {
        json_t *pr = tw_problem_new(rc == TW_ETOOBIG ? 413 : 400, "invalid-jsonpath",
                                    "Invalid JSONPath query", err, "query");
        if (pr) json_object_set_new(pr, "offset", json_integer((json_int_t)off));
        set_problem(problem, pr);
        return rc;
    }
    /* `$[?@['@type']=='X' && ...]`: only Things the @type index lists can
     * match, so evaluate over those (in id order) instead of every TD */
    const char *type = tw_jsonpath_eq_hint(p, "@type");
    json_t *all = type ? typed(d, type) : snapshot(d);
    if (!all) {
        tw_jsonpath_free(p);
        return TW_ENOMEM;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    rc = tw_jsonpath_query_parallel(p, all, d->opts.max_query_results, ncpu > 1 ? (int)ncpu : 1,
                                    result);
    json_decref(all);
    tw_jsonpath_free(p);
    if (rc == TW_ETOOBIG)
        set_problem(problem, tw_problem_new(413, "too-many-results", "Too many results",
                                            "the query matches more nodes than the directory "
                                            "returns; narrow it",
                                            "query"));
    return rc;
}
