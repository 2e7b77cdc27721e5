/*
 * dir_feed.c - the directory's change feed: thing_created / thing_updated /
 * thing_deleted with a sequence id, pushed live to in-process subscribers
 * and replayed from SQLite (twin_changes, bounded by max_changes rows). A
 * thing_created row carries no copy of the TD while the Thing still has it
 * (the replay reads it from twin_things); the first change copies it in.
 */
#include "twin/dir_int.h"
#include "twin/json_fast.h"

#include <stdlib.h>
#include <string.h>

/* Called with the write lock held. */
void dir_notify(tw_dir *d, tw_dir_change_kind kind, const char *id, json_t *data, int64_t ts)
{
    tw_dir_change ch = {.seq = d->seq, .kind = kind, .id = id, .data = data, .ts_ms = ts};
    for (size_t i = 0; i < d->nlisteners; i++)
        d->listeners[i].fn(d->listeners[i].ctx, &ch);
}

const char *tw_dir_change_name(tw_dir_change_kind k)
{
    switch (k) {
    case TW_DIR_CREATED:
        return "thing_created";
    case TW_DIR_UPDATED:
        return "thing_updated";
    case TW_DIR_DELETED:
        return "thing_deleted";
    }
    return "";
}

tw_dir_change_kind tw_dir_change_parse(const char *name)
{
    if (!name) return 0;
    if (strcmp(name, "thing_created") == 0) return TW_DIR_CREATED;
    if (strcmp(name, "thing_updated") == 0) return TW_DIR_UPDATED;
    if (strcmp(name, "thing_deleted") == 0) return TW_DIR_DELETED;
    return 0;
}

typedef struct replay_ctx {
    uint64_t after;
    int kinds;
    size_t max;
    tw_dir_change_fn fn;
    void *ctx;
    uint64_t oldest;
} replay_ctx;

static int replay_job(tw_store_tx *tx, void *arg)
{
    replay_ctx *rc = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT MIN(seq) FROM twin_changes");
    if (!st) return TW_EDB;
    if (sqlite3_step(st) == SQLITE_ROW) rc->oldest = (uint64_t)sqlite3_column_int64(st, 0);
    /* a thing_created row without data: the Thing still has that TD */
    st = tw_store_stmt(tx, "SELECT c.seq, c.kind, c.thing_id, COALESCE(c.data, t.td), c.ts "
                           "FROM twin_changes c LEFT JOIN twin_things t "
                           "ON c.kind=1 AND c.data IS NULL AND t.id=c.thing_id "
                           "WHERE c.seq>?1 ORDER BY c.seq");
    if (!st) return TW_EDB;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)rc->after);
    size_t n = 0;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        tw_dir_change ch = {.seq = (uint64_t)sqlite3_column_int64(st, 0),
                            .kind = sqlite3_column_int(st, 1),
                            .id = (const char *)sqlite3_column_text(st, 2),
                            .ts_ms = sqlite3_column_int64(st, 4)};
        if (rc->kinds && !(rc->kinds & (int)ch.kind)) continue;
        const char *data = (const char *)sqlite3_column_text(st, 3);
        ch.data = data ? tw_json_decode(data, strlen(data)) : NULL;
        rc->fn(rc->ctx, &ch);
        json_decref(ch.data);
        if (rc->max && ++n >= rc->max) break;
    }
    return (r == SQLITE_ROW || r == SQLITE_DONE) ? 0 : TW_EDB;
}

int tw_dir_changes(tw_dir *d, uint64_t after, int kinds, size_t max, tw_dir_change_fn fn, void *ctx,
                   uint64_t *oldest)
{
    if (!fn) return TW_EINVAL;
    replay_ctx rc = {.after = after, .kinds = kinds, .max = max, .fn = fn, .ctx = ctx};
    int r = tw_store_read(d->store, replay_job, &rc);
    if (oldest) *oldest = rc.oldest;
    return r;
}

int tw_dir_subscribe(tw_dir *d, tw_dir_change_fn fn, void *ctx, uint64_t *handle)
{
    if (!fn) return TW_EINVAL;
    pthread_rwlock_wrlock(&d->lock);
    listener *l = realloc(d->listeners, (d->nlisteners + 1) * sizeof *l);
    if (!l) {
        pthread_rwlock_unlock(&d->lock);
        return TW_ENOMEM;
    }
    d->listeners = l;
    l[d->nlisteners] = (listener){.handle = ++d->next_handle, .fn = fn, .ctx = ctx};
    d->nlisteners++;
    if (handle) *handle = d->next_handle;
    pthread_rwlock_unlock(&d->lock);
    return 0;
}

void tw_dir_unsubscribe(tw_dir *d, uint64_t handle)
{
    pthread_rwlock_wrlock(&d->lock);
    for (size_t i = 0; i < d->nlisteners; i++) {
        if (d->listeners[i].handle == handle) {
            memmove(&d->listeners[i], &d->listeners[i + 1],
                    (d->nlisteners - i - 1) * sizeof *d->listeners);
            d->nlisteners--;
            break;
        }
    }
    pthread_rwlock_unlock(&d->lock);
}
