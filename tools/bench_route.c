/*
 * bench_route.c - scenario `route`: notifications from one agent through the
 * full middleware chain (log, authn, authz, rate, validate), the value-store
 * hook (the real twin's write-behind value store) and fan-out, to one subscriber whose binding
 * encodes every message, all in process (the loopback binding). Reports messages/s for messages
 * built in process and for messages parsed from JSON bytes as a binding
 * would, and the same with 1,000 subscribers (deliveries/s).
 */
#include "bench.h"

#include "bindings/loopback/loopback.h"
#include "runtime/log.h"
#include "runtime/router.h"
#include "twin/twin.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *TD = "{\"@context\":\"https://www.w3.org/2022/wot/td/"
                        "v1.1\",\"id\":\"sensor\",\"title\":\"Sensor\",\"properties\":{\"t\":{}},"
                        "\"events\":{\"tick\":{}}}";

typedef struct env {
    tw_config cfg;
    tw_runtime *rt;
    tw_twin *twin;
    tw_loop *loop;
    tw_loop_conn *agent;
} env;

static int env_open(env *e, const char *dir)
{
    char err[256];
    tw_config_defaults(&e->cfg);
    snprintf(e->cfg.data_dir, sizeof e->cfg.data_dir, "%s", dir);
    e->cfg.rate = 1e12;
    e->cfg.burst = 1e12;
    tw_log_set_level(TW_LOG_WARN);
    if (tw_runtime_new(&e->cfg, &e->rt, err, sizeof err)) {
        fprintf(stderr, "route: %s\n", err);
        return 1;
    }
    tw_loop_new(e->rt, &e->loop);
    if (tw_twin_open(e->rt, &e->twin)) return 1;
    tw_runtime_set_twin(e->rt, tw_twin_ops_table(), e->twin);
    if (tw_runtime_start(e->rt, err, sizeof err)) return 1;
    e->agent = tw_loop_connect(e->loop, "agent");
    tw_loop_identify(e->agent, "ag", TW_ROLE_AGENT);
    char buf[512];
    snprintf(buf, sizeof buf, "{\"type\":\"request\",\"operation\":\"updatething\",\"input\":%s}",
             TD);
    tw_loop_inject_json(e->agent, buf);
    tw_msg_unref(tw_loop_next(e->agent, 1000));
    return 0;
}

static void env_close(env *e)
{
    tw_loop_close(e->agent);
    tw_runtime_stop(e->rt);
    tw_twin_close(e->twin);
    tw_runtime_free(e->rt);
    tw_config_free(&e->cfg);
}

static tw_loop_conn **subscribe(env *e, int n)
{
    tw_loop_conn **subs = calloc((size_t)n, sizeof *subs);
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "c%d", i);
        subs[i] = tw_loop_connect(e->loop, "consumer");
        tw_loop_identify(subs[i], id, TW_ROLE_VIEWER);
        tw_loop_inject_json(subs[i], "{\"type\":\"request\",\"operation\":\"subscribeevent\","
                                     "\"thingID\":\"dtw:ag:sensor\",\"name\":\"tick\"}");
        tw_msg_unref(tw_loop_next(subs[i], 1000));
        tw_loop_set_discard(subs[i], true);
    }
    return subs;
}

static double run_built(env *e, long n)
{
    int64_t t0 = tw_mono_us();
    for (long i = 0; i < n; i++) {
        tw_msg *m = tw_msg_new(TW_TYPE_NOTIFICATION, TW_OP_SUBSCRIBEEVENT, "sensor", "tick");
        tw_msg_set(m, "value", json_integer(i));
        tw_loop_inject(e->agent, m);
        tw_msg_unref(m);
    }
    return (double)n / ((double)(tw_mono_us() - t0) / 1e6);
}

/* The same from several agent threads at once (the router is thread-safe:
 * bindings call it from their own threads), each agent with its own Thing
 * and a subscriber of its own. */
typedef struct par_arg {
    tw_loop_conn *agent;
    long n;
} par_arg;

static void *par_main(void *p)
{
    par_arg *a = p;
    for (long i = 0; i < a->n; i++) {
        tw_msg *m = tw_msg_new(TW_TYPE_NOTIFICATION, TW_OP_SUBSCRIBEEVENT, "sensor", "tick");
        tw_msg_set(m, "value", json_integer(i));
        tw_loop_inject(a->agent, m);
        tw_msg_unref(m);
    }
    return NULL;
}

static double run_threads(env *e, int nthreads, long n)
{
    pthread_t t[8];
    par_arg args[8];
    tw_loop_conn *subs[8];
    char buf[512];
    for (int k = 0; k < nthreads; k++) {
        char id[16];
        snprintf(id, sizeof id, "ag%d", k);
        args[k].agent = tw_loop_connect(e->loop, "agent");
        tw_loop_identify(args[k].agent, id, TW_ROLE_AGENT);
        snprintf(buf, sizeof buf,
                 "{\"type\":\"request\",\"operation\":\"updatething\",\"input\":%s}", TD);
        tw_loop_inject_json(args[k].agent, buf);
        tw_msg_unref(tw_loop_next(args[k].agent, 1000));
        args[k].n = n / nthreads;
        subs[k] = tw_loop_connect(e->loop, "consumer");
        snprintf(id, sizeof id, "s%d", k);
        tw_loop_identify(subs[k], id, TW_ROLE_VIEWER);
        snprintf(buf, sizeof buf,
                 "{\"type\":\"request\",\"operation\":\"subscribeevent\",\"thingID\":"
                 "\"dtw:ag%d:sensor\",\"name\":\"tick\"}",
                 k);
        tw_loop_inject_json(subs[k], buf);
        tw_msg_unref(tw_loop_next(subs[k], 1000));
        tw_loop_set_discard(subs[k], true);
    }
    uint64_t before = 0; /* the subscribe responses */
    for (int k = 0; k < nthreads; k++)
        before += tw_loop_received(subs[k]);
    int64_t t0 = tw_mono_us();
    for (int k = 0; k < nthreads; k++)
        pthread_create(&t[k], NULL, par_main, &args[k]);
    for (int k = 0; k < nthreads; k++)
        pthread_join(t[k], NULL);
    double rate = (double)(args[0].n * nthreads) / ((double)(tw_mono_us() - t0) / 1e6);
    uint64_t got = 0;
    for (int k = 0; k < nthreads; k++) {
        got += tw_loop_received(subs[k]);
        tw_loop_close(subs[k]);
        tw_loop_close(args[k].agent);
    }
    got -= before;
    if (got != (uint64_t)(args[0].n * nthreads)) {
        fprintf(stderr, "route: %llu of %ld delivered\n", (unsigned long long)got,
                args[0].n * nthreads);
        rate = -1; /* something was lost */
    }
    return rate;
}

static double run_parsed(env *e, long n)
{
    char buf[256];
    int64_t t0 = tw_mono_us();
    for (long i = 0; i < n; i++) {
        snprintf(buf, sizeof buf,
                 "{\"type\":\"notification\",\"operation\":\"subscribeevent\",\"thingID\":"
                 "\"sensor\",\"name\":\"tick\",\"value\":%ld}",
                 i);
        tw_loop_inject_json(e->agent, buf);
    }
    return (double)n / ((double)(tw_mono_us() - t0) / 1e6);
}

static int route(const tw_bench_args *a)
{
    env e;
    if (env_open(&e, a->workdir)) return 1;
    long n = (long)(1000000 * a->scale);
    if (n < 1000) n = 1000;
    tw_loop_conn **one = subscribe(&e, 1);
    run_built(&e, n / 10); /* warm up */
    tw_bench_report("route", "built_msgs_per_s_1_subscriber", run_built(&e, n), "msg/s");
    tw_bench_report("route", "parsed_msgs_per_s_1_subscriber", run_parsed(&e, n), "msg/s");
    uint64_t got = tw_loop_received(one[0]);
    tw_bench_report("route", "delivered_to_subscriber", (double)got, "msgs");
    tw_loop_close(one[0]);
    free(one);

    tw_bench_report("route", "built_msgs_per_s_2_threads", run_threads(&e, 2, n), "msg/s");

    tw_loop_conn **many = subscribe(&e, 1000);
    long m = n / 100;
    double rate = run_built(&e, m);
    tw_bench_report("route", "deliveries_per_s_1000_subscribers", rate * 1000, "deliveries/s");
    for (int i = 0; i < 1000; i++)
        tw_loop_close(many[i]);
    free(many);
    env_close(&e);
    return 0;
}

TW_BENCH_SCENARIO(route, "notifications through the middleware chain to subscribers (in process)",
                  route)
