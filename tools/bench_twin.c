/*
 * bench_twin.c - scenarios of the digital twin (twin/).
 *
 * `directory`: 100,000 generated agent TDs (times --scale; 10 properties,
 * 3 actions, 2 events each) registered the way agents publish them: the
 * twin's updatething validates each, derives the twin TD with binding
 * forms and writes it durably (synchronous=FULL), from 16 publisher
 * threads by default (a fleet of agents reconnecting at once: commits are
 * shared, as with real concurrent publishers; --publishers 1 shows one
 * agent alone, paying a commit per TD). register_rate times only
 * that; register_rate_with_parse also counts parsing the TDs from JSON
 * text (the binding's work), generated before the clock starts. Then, on the full
 * directory: a page of 100 at random offsets, a search by @type, a JSONPath
 * filter on @type and a property (narrowed by the @type index), a JSONPath
 * filter that must test every TD (cold: first query after a write; warm:
 * cached snapshot), and the start-up reload of the whole directory.
 *
 * `values`: value-store updates as the router makes them (store_value of
 * the ops table: affordance check + update) from several threads (2 by
 * default) over 1,000 twins x 10 properties for a fixed number of updates
 * (5,000,000 times --scale), while the write-behind flusher writes batches
 * to SQLite; the final flush is inside the timing.
 *
 * Options: --publishers N, --threads N, --normal (synchronous=NORMAL).
 */
#include "bench.h"

#include "runtime/config.h"
#include "runtime/log.h"
#include "runtime/runtime.h"
#include "twin/twin.h"

#include <malloc.h>
#include <pthread.h>
#include <sys/resource.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct opts {
    int publishers;
    int threads;
    bool normal;
} opts;

static void parse_opts(const tw_bench_args *args, opts *o)
{
    *o = (opts){.publishers = 16, .threads = 2};
    for (int i = 0; i < args->argc; i++) {
        const char *a = args->argv[i];
        const char *v = i + 1 < args->argc ? args->argv[i + 1] : NULL;
        if (strcmp(a, "--publishers") == 0 && v) {
            o->publishers = atoi(v);
            i++;
        } else if (strcmp(a, "--threads") == 0 && v) {
            o->threads = atoi(v);
            i++;
        } else if (strcmp(a, "--normal") == 0) {
            o->normal = true;
        }
    }
    if (o->publishers < 1) o->publishers = 1;
    if (o->publishers > 64) o->publishers = 64;
    if (o->threads < 1) o->threads = 1;
    if (o->threads > 64) o->threads = 64;
}

/* ---- a binding that adds forms like the HTTP binding does --------------- */

static int fb_start(tw_binding *b)
{
    return 0;
}
static void fb_stop(tw_binding *b) {}
static int fb_send(tw_binding *b, tw_conn *c, tw_msg *m)
{
    return 0;
}
static void fb_destroy(tw_binding *b) {}

static json_t *form(const char *id, const char *kind, const char *name, const char *op)
{
    char href[600];
    snprintf(href, sizeof href, "https://localhost:8444/things/%s/%s/%s", id, kind, name);
    return json_pack("{s:s,s:s}", "href", href, "op", op);
}

static int fb_add_forms(tw_binding *b, json_t *td)
{
    const char *id = json_string_value(json_object_get(td, "id"));
    static const struct {
        const char *member, *op;
    } k[] = {
        {"properties", "readproperty"}, {"actions", "invokeaction"}, {"events", "subscribeevent"}};
    for (int i = 0; i < 3; i++) {
        const char *name;
        json_t *aff;
        json_object_foreach(json_object_get(td, k[i].member), name, aff) json_object_set_new(
            aff, "forms", json_pack("[o]", form(id, k[i].member, name, k[i].op)));
    }
    return 0;
}

static const tw_binding_ops FORMS = {.name = "bench-forms",
                                     .start = fb_start,
                                     .stop = fb_stop,
                                     .send = fb_send,
                                     .add_forms = fb_add_forms,
                                     .destroy = fb_destroy};

typedef struct env {
    tw_config cfg;
    tw_runtime *rt;
    tw_twin *twin;
} env;

static int env_open(env *e, const tw_bench_args *args, const opts *o)
{
    tw_log_set_level(TW_LOG_WARN);
    tw_config_defaults(&e->cfg);
    snprintf(e->cfg.data_dir, sizeof e->cfg.data_dir, "%s", args->workdir);
    e->cfg.store_sync_normal = o->normal;
    char err[256];
    int rc = tw_runtime_new(&e->cfg, &e->rt, err, sizeof err);
    if (rc == 0) rc = tw_runtime_add_binding(e->rt, &FORMS, NULL, NULL);
    if (rc == 0) rc = tw_twin_open(e->rt, &e->twin);
    if (rc) fprintf(stderr, "twin bench: open: %s\n", tw_strerror(rc));
    return rc;
}

static void env_close(env *e)
{
    tw_twin_close(e->twin);
    tw_runtime_free(e->rt);
    tw_config_free(&e->cfg);
}

/* A generated agent TD: 10 properties, 3 actions, 2 events. */
static json_t *gen_td(long i)
{
    char id[32], title[64];
    snprintf(id, sizeof id, "thing-%06ld", i);
    snprintf(title, sizeof title, "Generated thing %ld", i);
    static const char *const types[] = {"TemperatureSensor", "Light", "Switch", "Meter"};
    json_t *props = json_object(), *actions = json_object(), *events = json_object();
    for (int p = 0; p < 10; p++) {
        char name[16];
        snprintf(name, sizeof name, "prop%d", p);
        json_object_set_new(props, name,
                            json_pack("{s:s,s:s,s:f,s:f,s:s,s:b}", "title", name, "type", "number",
                                      "minimum", 0.0, "maximum", (double)(i % 100 + p), "unit",
                                      "cel", "observable", 1));
    }
    json_object_set_new(actions, "reset", json_pack("{s:s}", "title", "Reset"));
    json_object_set_new(actions, "status",
                        json_pack("{s:b,s:{s:s}}", "safe", 1, "output", "type", "object"));
    json_object_set_new(
        actions, "set",
        json_pack("{s:{s:s,s:i,s:i}}", "input", "type", "integer", "minimum", 0, "maximum", 100));
    json_object_set_new(events, "alarm", json_pack("{s:{s:s}}", "data", "type", "string"));
    json_object_set_new(events, "tick", json_pack("{s:{s:s}}", "data", "type", "integer"));
    return json_pack("{s:s,s:s,s:s,s:s,s:o,s:o,s:o}", "@context",
                     "https://www.w3.org/2022/wot/td/v1.1", "id", id, "title", title, "@type",
                     types[i % 4], "properties", props, "actions", actions, "events", events);
}

/*
 * Publishers work in rounds: parse a chunk of TDs (the binding's work, off
 * the clock), wait for each other, register the chunk (on the clock), wait
 * again. The wall time of the registration phases is the register time.
 */
#define CHUNK 500

typedef struct pub_shared {
    env *e;
    char **texts; /* the agent TDs as they arrive: JSON text */
    long n;
    int publishers;
    pthread_barrier_t barrier;
    int64_t reg_us; /* summed wall time of the registration phases */
    atomic_int failed;
} pub_shared;

typedef struct pub_arg {
    pub_shared *sh;
    int t;
} pub_arg;

static void *publisher(void *arg)
{
    pub_arg *p = arg;
    pub_shared *sh = p->sh;
    const tw_twin_ops *ops = tw_twin_ops_table();
    json_t *tds[CHUNK];
    long per_round = (long)CHUNK * sh->publishers;
    for (long base = 0; base < sh->n; base += per_round) {
        long from = base + (long)p->t * CHUNK, to = from + CHUNK;
        if (to > sh->n) to = sh->n;
        int k = 0;
        for (long i = from; i < to; i++)
            tds[k++] = json_loads(sh->texts[i], 0, NULL);
        pthread_barrier_wait(&sh->barrier);
        int64_t t0 = tw_mono_us();
        for (int j = 0; j < k; j++) {
            char agent[32], *id = NULL;
            json_t *problem = NULL;
            snprintf(agent, sizeof agent, "agent-%ld", (from + j) % 100);
            if (!tds[j] || ops->update_thing(sh->e->twin, agent, tds[j], &id, &problem) != 0)
                atomic_fetch_add(&sh->failed, 1);
            free(id);
            json_decref(problem);
            json_decref(tds[j]);
        }
        if (pthread_barrier_wait(&sh->barrier) == PTHREAD_BARRIER_SERIAL_THREAD)
            sh->reg_us += tw_mono_us() - t0; /* t0 of the serial thread: close enough */
    }
    return NULL;
}

static double ms_since(int64_t t0)
{
    return (double)(tw_mono_us() - t0) / 1000.0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_directory(const tw_bench_args *args)
{
    opts o;
    parse_opts(args, &o);
    long n = (long)(100000 * args->scale);
    if (n < 100) n = 100;
    env e = {0};
    if (env_open(&e, args, &o)) return 1;
    /* generated before the clock starts */
    char **texts = calloc((size_t)n, sizeof *texts);
    for (long i = 0; texts && i < n; i++) {
        json_t *td = gen_td(i);
        texts[i] = json_dumps(td, JSON_COMPACT);
        json_decref(td);
    }
    pub_shared sh = {.e = &e, .texts = texts, .n = n, .publishers = o.publishers};
    pthread_barrier_init(&sh.barrier, NULL, (unsigned)o.publishers);
    pub_arg pa[64];
    pthread_t th[64];
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    int64_t t0 = tw_mono_us();
    for (int i = 0; i < o.publishers; i++) {
        pa[i] = (pub_arg){.sh = &sh, .t = i};
        pthread_create(&th[i], NULL, publisher, &pa[i]);
    }
    for (int i = 0; i < o.publishers; i++)
        pthread_join(th[i], NULL);
    double all_ms = ms_since(t0);
    getrusage(RUSAGE_SELF, &ru1);
    double cpu_us = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) * 1e6 +
                    (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) +
                    (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) * 1e6 +
                    (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec);
    pthread_barrier_destroy(&sh.barrier);
    for (long i = 0; texts && i < n; i++)
        free(texts[i]);
    free(texts);
    int failed = atomic_load(&sh.failed);
    if (failed) {
        fprintf(stderr, "directory bench: %d registrations failed\n", failed);
        env_close(&e);
        return 1;
    }
    tw_dir *d = tw_twin_dir(e.twin);
    tw_bench_report("directory", "things", (double)tw_dir_count(d), "TDs");
    struct mallinfo2 mi = mallinfo2();
    tw_bench_report("directory", "heap_per_thing",
                    (double)(mi.uordblks + mi.hblkhd) / (double)tw_dir_count(tw_twin_dir(e.twin)),
                    "bytes");
    tw_bench_report("directory", "register_rate", (double)n / ((double)sh.reg_us / 1e6), "TDs/s");
    tw_bench_report("directory", "register_rate_with_parse", (double)n / (all_ms / 1000.0),
                    "TDs/s");
    /* CPU of the whole process (all threads, SQLite's writer included) per
     * TD parsed and registered: on an idle machine, cores / this = the rate
     * CPU allows */
    tw_bench_report("directory", "cpu_per_td_with_parse", cpu_us / (double)n, "us");

    /* a page of 100 at random offsets: the directory's part, then with the
     * encoding a binding adds */
    enum { ROUNDS = 200 };
    double t[ROUNDS], te[ROUNDS];
    size_t total = tw_dir_count(d);
    unsigned seed = 42;
    for (int r = 0; r < ROUNDS; r++) {
        size_t off = total > 100 ? (size_t)rand_r(&seed) % (total - 100) : 0;
        json_t *page = NULL;
        int64_t s = tw_mono_us();
        tw_dir_list(d, off, 100, &page, NULL, NULL);
        t[r] = ms_since(s);
        char *text = json_dumps(page, JSON_COMPACT);
        te[r] = ms_since(s);
        free(text);
        json_decref(page);
    }
    qsort(t, ROUNDS, sizeof t[0], cmp_double);
    qsort(te, ROUNDS, sizeof te[0], cmp_double);
    tw_bench_report("directory", "page100_p50", t[ROUNDS / 2], "ms");
    tw_bench_report("directory", "page100_p99", t[ROUNDS * 99 / 100], "ms");
    tw_bench_report("directory", "page100_with_json_dumps_p50", te[ROUNDS / 2], "ms");

    /* search by @type (all matches counted, first 100 returned) */
    for (int r = 0; r < 20; r++) {
        tw_dir_filter f = {.type = "Light"};
        json_t *page = NULL;
        size_t matches = 0;
        int64_t s = tw_mono_us();
        tw_dir_search(d, &f, 0, 100, &page, &matches);
        t[r] = ms_since(s);
        json_decref(page);
        if (r == 0) tw_bench_report("directory", "search_type_matches", (double)matches, "TDs");
    }
    qsort(t, 20, sizeof t[0], cmp_double);
    tw_bench_report("directory", "search_type_p50", t[10], "ms");

    /* JSONPath filter over every TD */
    const char *q = "$[?@['@type']=='Light' && @.properties.prop3.maximum > 90].id";
    json_t *res = NULL, *problem = NULL;
    int64_t s = tw_mono_us();
    if (tw_dir_query(d, q, &res, &problem) != 0) {
        fprintf(stderr, "directory bench: query failed\n");
        json_decref(problem);
        env_close(&e);
        return 1;
    }
    tw_bench_report("directory", "jsonpath_cold", ms_since(s), "ms");
    tw_bench_report("directory", "jsonpath_matches", (double)json_array_size(res), "ids");
    json_decref(res);
    for (int r = 0; r < 20; r++) {
        s = tw_mono_us();
        tw_dir_query(d, q, &res, NULL);
        t[r] = ms_since(s);
        json_decref(res);
    }
    qsort(t, 20, sizeof t[0], cmp_double);
    tw_bench_report("directory", "jsonpath_warm_p50", t[10], "ms");

    /* a JSONPath filter no index helps: every TD is tested */
    const char *scan = "$[?@.properties.prop3.maximum > 98].id";
    s = tw_mono_us();
    tw_dir_query(d, scan, &res, NULL);
    tw_bench_report("directory", "jsonpath_scan_cold", ms_since(s), "ms");
    tw_bench_report("directory", "jsonpath_scan_matches", (double)json_array_size(res), "ids");
    json_decref(res);
    for (int r = 0; r < 20; r++) {
        s = tw_mono_us();
        tw_dir_query(d, scan, &res, NULL);
        t[r] = ms_since(s);
        json_decref(res);
    }
    qsort(t, 20, sizeof t[0], cmp_double);
    tw_bench_report("directory", "jsonpath_scan_warm_p50", t[10], "ms");

    /* start-up reload */
    env_close(&e);
    memset(&e, 0, sizeof e);
    s = tw_mono_us();
    if (env_open(&e, args, &o)) return 1;
    tw_bench_report("directory", "reload", ms_since(s), "ms");
    if (tw_dir_count(tw_twin_dir(e.twin)) != total) {
        fprintf(stderr, "directory bench: reloaded %zu of %zu\n", tw_dir_count(tw_twin_dir(e.twin)),
                total);
        env_close(&e);
        return 1;
    }
    env_close(&e);
    return 0;
}

TW_BENCH_SCENARIO(directory,
                  "register 100k TDs (10 props, 3 actions, 2 events), page, search, JSONPath, "
                  "reload",
                  run_directory)

/* ---- values ------------------------------------------------------------- */

#define V_TWINS 1000
#define V_PROPS 10

typedef struct val_arg {
    env *e;
    long n;
    int t;
    int failed;
} val_arg;

static void *updater(void *arg)
{
    val_arg *a = arg;
    const tw_twin_ops *ops = tw_twin_ops_table();
    char ids[V_TWINS][32];
    for (int i = 0; i < V_TWINS; i++)
        snprintf(ids[i], sizeof ids[i], "dtw:agent-%d:thing-%06d", i % 100, i);
    static const char *const names[V_PROPS] = {"prop0", "prop1", "prop2", "prop3", "prop4",
                                               "prop5", "prop6", "prop7", "prop8", "prop9"};
    json_t *vals[64];
    for (int i = 0; i < 64; i++)
        vals[i] = json_real(20.0 + i * 0.25);
    unsigned seed = (unsigned)a->t * 7919u + 1;
    for (long i = 0; i < a->n; i++) {
        unsigned r = (unsigned)rand_r(&seed);
        bool changed;
        if (ops->store_value(a->e->twin, ids[r % V_TWINS], TW_AFF_PROPERTY,
                             names[(r >> 10) % V_PROPS], false, vals[(r >> 14) % 64], tw_now_ms(),
                             &changed) != 0)
            a->failed++;
    }
    for (int i = 0; i < 64; i++)
        json_decref(vals[i]);
    return NULL;
}

static int run_values(const tw_bench_args *args)
{
    opts o;
    parse_opts(args, &o);
    long n = (long)(5000000 * args->scale);
    if (n < 1000) n = 1000;
    env e = {0};
    if (env_open(&e, args, &o)) return 1;
    /* the Things whose values are updated */
    const tw_twin_ops *ops = tw_twin_ops_table();
    for (long i = 0; i < V_TWINS; i++) {
        char agent[32];
        snprintf(agent, sizeof agent, "agent-%ld", i % 100);
        json_t *td = gen_td(i);
        char *id = NULL;
        json_t *problem = NULL;
        if (ops->update_thing(e.twin, agent, td, &id, &problem) != 0) {
            fprintf(stderr, "values bench: updatething failed\n");
            return 1;
        }
        free(id);
        json_decref(td);
    }
    tw_values *v = tw_twin_values(e.twin);
    tw_values_stats st0;
    tw_values_get_stats(v, &st0);
    val_arg va[64];
    pthread_t th[64];
    int64_t t0 = tw_mono_us();
    for (int i = 0; i < o.threads; i++) {
        va[i] = (val_arg){.e = &e, .n = n / o.threads, .t = i};
        pthread_create(&th[i], NULL, updater, &va[i]);
    }
    int failed = 0;
    for (int i = 0; i < o.threads; i++) {
        pthread_join(th[i], NULL);
        failed += va[i].failed;
    }
    double update_ms = ms_since(t0);
    tw_values_flush(v);
    double total_ms = ms_since(t0);
    if (failed) {
        fprintf(stderr, "values bench: %d updates failed\n", failed);
        env_close(&e);
        return 1;
    }
    tw_values_stats st;
    tw_values_get_stats(v, &st);
    long done = (n / o.threads) * o.threads;
    tw_bench_report("values", "updates", (double)done, "updates");
    tw_bench_report("values", "update_rate", (double)done / (update_ms / 1000.0), "updates/s");
    tw_bench_report("values", "update_rate_incl_flush", (double)done / (total_ms / 1000.0),
                    "updates/s");
    tw_bench_report("values", "rows_written", (double)(st.flushed - st0.flushed), "rows");
    tw_bench_report("values", "batches", (double)(st.batches - st0.batches), "jobs");
    env_close(&e);
    return 0;
}

TW_BENCH_SCENARIO(values,
                  "value-store updates/s through store_value with write-behind (1000 twins x 10 "
                  "properties)",
                  run_values)
