/*
 * tw_loop_runtime.h - the runtime the router tests run messages through:
 * a tw_runtime on a fresh data directory with the in-memory twin
 * (runtime/twin_mem.h) and the loopback binding, optionally with a config
 * file's text on top of the defaults. Include after <cmocka.h>.
 */
#ifndef TW_LOOP_RUNTIME_H
#define TW_LOOP_RUNTIME_H

#include "bindings/loopback/loopback.h"
#include "runtime/runtime.h"
#include "runtime/twin_mem.h"
#include "tw_test.h"

#include <unistd.h>

typedef struct tw_loop_runtime {
    char dir[512];
    tw_config cfg;
    tw_runtime *rt;
    tw_twin_mem *twin;
    tw_loop *loop;
} tw_loop_runtime;

/* Starts the runtime on f->dir (already made), with extra_config (JSON
 * text, may be NULL) loaded over the defaults. */
static inline void tw_loop_runtime_open(tw_loop_runtime *f, const char *extra_config)
{
    tw_config_defaults(&f->cfg);
    if (extra_config) {
        char path[600];
        snprintf(path, sizeof path, "%s.json", f->dir);
        FILE *fp = fopen(path, "w");
        assert_non_null(fp);
        fputs(extra_config, fp);
        fclose(fp);
        char err[256];
        assert_int_equal(tw_config_load(&f->cfg, path, err, sizeof err), 0);
        unlink(path);
    }
    snprintf(f->cfg.data_dir, sizeof f->cfg.data_dir, "%s", f->dir);
    f->cfg.store_sync_normal = true;
    char err[256];
    assert_int_equal(tw_runtime_new(&f->cfg, &f->rt, err, sizeof err), 0);
    f->twin = tw_twin_mem_new();
    tw_runtime_set_twin(f->rt, tw_twin_mem_ops(), f->twin);
    assert_int_equal(tw_loop_new(f->rt, &f->loop), 0);
    assert_int_equal(tw_runtime_start(f->rt, err, sizeof err), 0);
}

/* Stops and frees it; the data directory stays (a test may reopen it). */
static inline void tw_loop_runtime_close(tw_loop_runtime *f)
{
    tw_runtime_stop(f->rt);
    tw_runtime_free(f->rt);
    tw_twin_mem_free(f->twin);
    tw_config_free(&f->cfg);
}

#endif
