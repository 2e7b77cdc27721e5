/*
 * runtime.c - creating, starting and stopping a tw_runtime.
 *
 * The data directory is created owner-only and locked with flock() on
 * twind.lock, so a second twind on the same directory refuses to start
 * instead of corrupting the queue. The sweeper thread expires queued
 * actions every cfg->sweep_ms; it sleeps on a condition variable so stop
 * does not wait for a full period. It also drains the queues of agents that
 * came online while one of their actions was being committed: the commit
 * callback runs on the store's writer thread, which must not deliver (and
 * fetch from the store) itself, so it kicks the sweeper instead.
 */
#include "log.h"
#include "router_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int make_dir(const char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0700) == 0) return 0;
    if (errno != EEXIST) {
        snprintf(err, errlen, "cannot create data directory %s: %s", path, strerror(errno));
        return TW_EIO;
    }
    struct stat st;
    if (stat(path, &st) || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s is not a directory", path);
        return TW_EIO;
    }
    return 0;
}

int tw_runtime_new(const tw_config *cfg, tw_runtime **out, char *err, size_t errlen)
{
    int rc = make_dir(cfg->data_dir, err, errlen);
    if (rc) return rc;
    char path[1200];
    snprintf(path, sizeof path, "%s/twind.lock", cfg->data_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return TW_EIO;
    }
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        snprintf(err, errlen,
                 "data directory %s is in use by another twind (lock %s is held); stop it or "
                 "use --data with another directory",
                 cfg->data_dir, path);
        close(fd);
        return TW_EBUSY;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) == 0 && write(fd, pid, (size_t)n) < 0) { /* informative only */
    }

    tw_runtime *rt = calloc(1, sizeof *rt);
    if (!rt) {
        close(fd);
        return TW_ENOMEM;
    }
    rt->cfg = cfg;
    rt->lock_fd = fd;
    tw_registry_init(&rt->reg);
    pthread_rwlock_init(&rt->services_lock, NULL);
    tw_hmap_init(&rt->services);
    pthread_mutex_init(&rt->drain_lock, NULL);
    tw_hmap_init(&rt->drains);
    pthread_mutex_init(&rt->live_lock, NULL);
    tw_hmap_init(&rt->live);
    pthread_mutex_init(&rt->sweep_lock, NULL);
    pthread_cond_init(&rt->sweep_cond, NULL);
    tw_hmap_init(&rt->kicks);
    tw_hmap_init(&rt->gone);

    snprintf(path, sizeof path, "%s/twind.db", cfg->data_dir);
    tw_store_opts so = {.synchronous_normal = cfg->store_sync_normal,
                        .behind_linger_ms = cfg->store_linger_ms,
                        .no_idle_priority = !cfg->store_idle_priority};
    rc = tw_store_open(path, &so, &rt->store);
    if (rc == 0) rc = tw_queue_open(rt->store, &rt->queue);
    if (rc) {
        snprintf(err, errlen, "cannot open the database %s: %s", path, tw_strerror(rc));
        tw_runtime_free(rt);
        return rc;
    }
    *out = rt;
    return 0;
}

void tw_runtime_set_twin(tw_runtime *rt, const tw_twin_ops *ops, void *ctx)
{
    rt->twin = ops;
    rt->twin_ctx = ctx;
}

void tw_runtime_set_authn(tw_runtime *rt, tw_authn *an, tw_authz *az)
{
    rt->authn = an;
    rt->authz = az;
}

int tw_runtime_add_binding(tw_runtime *rt, const tw_binding_ops *ops, void *impl, tw_binding **out)
{
    if (rt->nbindings == TW_MAX_BINDINGS) return TW_EFULL;
    tw_binding *b = calloc(1, sizeof *b);
    if (!b) return TW_ENOMEM;
    b->ops = ops;
    b->impl = impl;
    b->rt = rt;
    rt->bindings[rt->nbindings++] = b;
    if (out) *out = b;
    return 0;
}

void tw_runtime_kick_drain(tw_runtime *rt, const char *agent_id)
{
    pthread_mutex_lock(&rt->sweep_lock);
    int err = 0;
    tw_hmap_put(&rt->kicks, agent_id, rt, &err);
    pthread_cond_signal(&rt->sweep_cond);
    pthread_mutex_unlock(&rt->sweep_lock);
}

void tw_router_thing_deleted(tw_runtime *rt, const char *twin_id)
{
    pthread_mutex_lock(&rt->sweep_lock);
    int err = 0;
    tw_hmap_put(&rt->gone, twin_id, rt, &err);
    pthread_cond_signal(&rt->sweep_cond);
    pthread_mutex_unlock(&rt->sweep_lock);
}

/* Fails the actions of deleted Things; sweep_lock held on entry and exit. */
static void fail_gone(tw_runtime *rt)
{
    while (rt->gone.len && !rt->stopping) {
        size_t pos = 0;
        const char *k;
        char id[TW_THING_ID_MAX];
        if (!tw_hmap_next(&rt->gone, &pos, &k, NULL)) break;
        tw_strlcpy(id, k, sizeof id);
        tw_hmap_del(&rt->gone, id);
        pthread_mutex_unlock(&rt->sweep_lock);
        tw_actions_thing_deleted(rt, id);
        pthread_mutex_lock(&rt->sweep_lock);
    }
}

/* Drains every kicked agent; sweep_lock held on entry and exit. */
static void drain_kicked(tw_runtime *rt)
{
    fail_gone(rt);
    while (rt->kicks.len && !rt->stopping) {
        size_t pos = 0;
        const char *k;
        char agent[TW_ID_MAX];
        if (!tw_hmap_next(&rt->kicks, &pos, &k, NULL)) break;
        tw_strlcpy(agent, k, sizeof agent);
        tw_hmap_del(&rt->kicks, agent);
        pthread_mutex_unlock(&rt->sweep_lock);
        tw_router_drain(rt, agent);
        pthread_mutex_lock(&rt->sweep_lock);
    }
}

static void *sweeper_main(void *arg)
{
    tw_runtime *rt = arg;
    int64_t next_sweep = tw_mono_us() + rt->cfg->sweep_ms * 1000;
    pthread_mutex_lock(&rt->sweep_lock);
    while (!rt->stopping) {
        drain_kicked(rt);
        if (rt->stopping) break;
        int64_t now = tw_mono_us();
        if (now >= next_sweep) {
            pthread_mutex_unlock(&rt->sweep_lock);
            tw_router_sweep(rt);
            pthread_mutex_lock(&rt->sweep_lock);
            next_sweep = tw_mono_us() + rt->cfg->sweep_ms * 1000;
            continue;
        }
        if (rt->kicks.len || rt->gone.len) continue;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (next_sweep - now) * 1000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&rt->sweep_cond, &rt->sweep_lock, &ts);
    }
    pthread_mutex_unlock(&rt->sweep_lock);
    return NULL;
}

int tw_runtime_start(tw_runtime *rt, char *err, size_t errlen)
{
    int rc = tw_mw_chain_new(rt, rt->cfg->middleware, rt->cfg->root, &rt->chain, err, errlen);
    if (rc) return rc;
    if (pthread_create(&rt->sweeper, NULL, sweeper_main, rt)) {
        snprintf(err, errlen, "cannot start the sweeper thread");
        return TW_ENOMEM;
    }
    rt->sweeping = true;
    for (int i = 0; i < rt->nbindings; i++) {
        tw_binding *b = rt->bindings[i];
        if (b->ops->start && (rc = b->ops->start(b))) {
            snprintf(err, errlen, "binding %s failed to start: %s", b->ops->name, tw_strerror(rc));
            for (int j = i - 1; j >= 0; j--)
                if (rt->bindings[j]->ops->stop) rt->bindings[j]->ops->stop(rt->bindings[j]);
            return rc;
        }
    }
    return 0;
}

void tw_runtime_stop(tw_runtime *rt)
{
    for (int i = 0; i < rt->nbindings; i++)
        if (rt->bindings[i]->ops->stop) rt->bindings[i]->ops->stop(rt->bindings[i]);
    if (rt->sweeping) {
        pthread_mutex_lock(&rt->sweep_lock);
        rt->stopping = true;
        pthread_cond_signal(&rt->sweep_cond);
        pthread_mutex_unlock(&rt->sweep_lock);
        pthread_join(rt->sweeper, NULL);
        rt->sweeping = false;
    }
    if (rt->store) tw_store_flush(rt->store);
}

void tw_runtime_free(tw_runtime *rt)
{
    if (!rt) return;
    for (int i = 0; i < rt->nbindings; i++) {
        if (rt->bindings[i]->ops->destroy) rt->bindings[i]->ops->destroy(rt->bindings[i]);
        free(rt->bindings[i]);
    }
    tw_actions_fini(rt);
    tw_mw_chain_free(rt->chain);
    if (rt->queue) tw_queue_close(rt->queue);
    if (rt->store) tw_store_close(rt->store);
    size_t pos = 0;
    void *v;
    while (tw_hmap_next(&rt->services, &pos, NULL, &v))
        free(v);
    tw_hmap_fini(&rt->services);
    tw_hmap_fini(&rt->drains);
    tw_hmap_fini(&rt->kicks);
    tw_hmap_fini(&rt->gone);
    tw_hmap_fini(&rt->live);
    tw_registry_fini(&rt->reg);
    pthread_rwlock_destroy(&rt->services_lock);
    pthread_mutex_destroy(&rt->drain_lock);
    pthread_mutex_destroy(&rt->live_lock);
    pthread_mutex_destroy(&rt->sweep_lock);
    pthread_cond_destroy(&rt->sweep_cond);
    if (rt->lock_fd >= 0) close(rt->lock_fd);
    free(rt);
}

const tw_config *tw_runtime_config(const tw_runtime *rt)
{
    return rt->cfg;
}
tw_store *tw_runtime_store(const tw_runtime *rt)
{
    return rt->store;
}
tw_queue *tw_runtime_queue(const tw_runtime *rt)
{
    return rt->queue;
}
tw_authn *tw_runtime_authn(const tw_runtime *rt)
{
    return rt->authn;
}
tw_authz *tw_runtime_authz(const tw_runtime *rt)
{
    return rt->authz;
}

const tw_twin_ops *tw_runtime_twin(const tw_runtime *rt, void **ctx)
{
    if (ctx) *ctx = rt->twin_ctx;
    return rt->twin;
}

int tw_runtime_add_forms(tw_runtime *rt, json_t *twin_td)
{
    for (int i = 0; i < rt->nbindings; i++) {
        tw_binding *b = rt->bindings[i];
        if (b->ops->add_forms) {
            int rc = b->ops->add_forms(b, twin_td);
            if (rc) return rc;
        }
    }
    return 0;
}

int tw_runtime_bindings(tw_runtime *rt, tw_binding ***list, int *n)
{
    *list = rt->bindings;
    *n = rt->nbindings;
    return 0;
}
