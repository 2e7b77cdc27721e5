/*
 * config.h - twind's configuration: defaults, the JSON config file and the
 * command line.
 *
 * tw_config_load() reads a JSON file and reports errors as
 * "FILE:LINE:COLUMN: message". Sections the runtime core does not know
 * ("http", "nng", "authn", ...) are kept as JSON for their modules
 * (tw_config_section). A tw_config is filled once at start-up and read-only
 * afterwards (so reading it is thread-safe).
 */
#ifndef TW_CONFIG_H
#define TW_CONFIG_H

#include "tw.h"

#include <jansson.h>

typedef struct tw_config {
    char data_dir[1024];         /* default ./twind-data */
    char log_level[16];          /* error, warn, info, debug */
    size_t max_body;             /* default 1 MiB */
    int max_depth;               /* default 32 */
    double rate;                 /* requests per second per client, default 1000 */
    double burst;                /* default 2000 */
    int64_t queue_ttl_ms;        /* default action TTL, 1 h */
    int64_t sweep_ms;            /* sweeper period, default 1000 */
    int drain_window;            /* in-flight queued actions per agent, default 512 */
    int64_t action_retention_ms; /* finished actions are kept this long, default 7 days */
    int store_linger_ms;         /* write-behind commits may wait this long, default 20 */
    bool store_idle_priority;    /* write-behind batches at SCHED_IDLE, default true */
    bool store_sync_normal;      /* tests/benchmarks only */
    json_t *middleware;          /* array of stage names, or NULL */
    json_t *root;                /* the whole file (or an empty object) */
} tw_config;

void tw_config_defaults(tw_config *cfg);
/* Loads a JSON config file over the defaults. err gets FILE:LINE:COL: msg. */
int tw_config_load(tw_config *cfg, const char *path, char *err, size_t errlen);
void tw_config_free(tw_config *cfg);
/* A section of the file, borrowed (NULL if absent). */
json_t *tw_config_section(const tw_config *cfg, const char *name);

#endif
