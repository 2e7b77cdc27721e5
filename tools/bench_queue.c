/*
 * bench_queue.c - scenarios of the durable action queue (runtime/queue.c).
 *
 * `enqueue`: durable, acknowledged pushes with synchronous=FULL. Producer
 * threads (4 by default) each keep up to a window of pushes outstanding (2048
 * by default), the way many concurrent senders would; an action counts when
 * its done callback says it is committed. Reports acknowledged actions/s,
 * the p50/p99/max latency from tw_queue_push to the acknowledgement, and how
 * many pushes shared each commit (fsync).
 *
 * `drain`: 100,000 queued rows (times --scale) drained the way an agent that
 * reconnects drains its queue: fetch pages in order, move each action on
 * with tw_queue_update_seq (completed, with an output), until empty; the final
 * flush is inside the timing. Reports drained actions/s and the CPU time
 * (all threads) per drained action, which a busy machine disturbs less.
 *
 * Options after the scenario name: --producers N, --window N, --normal
 * (synchronous=NORMAL, for comparison only), --page N (drain).
 */
#include "bench.h"

#include "runtime/log.h"
#include "runtime/queue.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct opts {
    int producers;
    int window;
    int page;
    bool normal;
} opts;

static void parse_opts(const tw_bench_args *args, opts *o)
{
    *o = (opts){.producers = 4, .window = 2048, .page = 500};
    for (int i = 0; i < args->argc; i++) {
        const char *a = args->argv[i];
        const char *v = i + 1 < args->argc ? args->argv[i + 1] : NULL;
        if (strcmp(a, "--producers") == 0 && v) {
            o->producers = atoi(v);
            i++;
        } else if (strcmp(a, "--window") == 0 && v) {
            o->window = atoi(v);
            i++;
        } else if (strcmp(a, "--page") == 0 && v) {
            o->page = atoi(v);
            i++;
        } else if (strcmp(a, "--normal") == 0) {
            o->normal = true;
        }
    }
    if (o->producers < 1) o->producers = 1;
    if (o->producers > 64) o->producers = 64;
    if (o->window < 1) o->window = 1;
    if (o->page < 1) o->page = 1;
}

static int open_queue(const tw_bench_args *args, const opts *o, tw_store **s, tw_queue **q)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/twind.db", args->workdir);
    tw_log_set_level(TW_LOG_WARN);
    tw_store_opts so = {.synchronous_normal = o->normal};
    int rc = tw_store_open(path, &so, s);
    if (rc == 0) rc = tw_queue_open(*s, q);
    if (rc) fprintf(stderr, "queue bench: open: %s\n", tw_strerror(rc));
    return rc;
}

/* A realistic action: random id, a few agents and things, small input. */
static void fill_action(tw_action *a, long n, json_t *input)
{
    static const char *const agents[] = {"agent-0", "agent-1", "agent-2", "agent-3",
                                         "agent-4", "agent-5", "agent-6", "agent-7"};
    static const char *const things[] = {"dtw:agent-0:lamp", "dtw:agent-1:lamp", "dtw:agent-2:lamp",
                                         "dtw:agent-3:lamp", "dtw:agent-4:lamp", "dtw:agent-5:lamp",
                                         "dtw:agent-6:lamp", "dtw:agent-7:lamp"};
    memset(a, 0, sizeof *a);
    tw_id_new("act-", a->id);
    a->agent_id = (char *)agents[n % 8];
    a->thing_id = (char *)things[n % 8];
    a->sender_id = "bench-consumer";
    a->name = "setLevel";
    a->correlation_id = "bench";
    a->op = TW_OP_INVOKEACTION;
    a->input = input;
    a->expires_ms = tw_now_ms() + 3600 * 1000LL;
}

/* ---- enqueue ------------------------------------------------------------- */

typedef struct producer {
    tw_queue *q;
    long first, count; /* indexes into lat[] */
    int window;
    int64_t *lat; /* per push: start time, then latency (us) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inflight;
    long failed;
    long acked;
    int64_t last_ack_us;
} producer;

typedef struct ticket {
    producer *p;
    long i;
} ticket;

static void on_ack(void *arg, const tw_queue_push_result *res)
{
    ticket *t = arg;
    producer *p = t->p;
    int64_t now = tw_mono_us();
    pthread_mutex_lock(&p->mu);
    if (res->rc == 0) {
        p->lat[t->i] = now - p->lat[t->i];
        p->acked++;
    } else {
        p->lat[t->i] = -1;
        p->failed++;
    }
    p->last_ack_us = now;
    /* Wake the producer at half a window (or when all are in), not on
     * every ack: a futex wake per ack would run on the writer thread. */
    p->inflight--;
    if (p->inflight == p->window / 2 || p->inflight == 0) pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void *producer_main(void *arg)
{
    producer *p = arg;
    ticket *tickets = malloc((size_t)p->count * sizeof *tickets);
    if (!tickets) return NULL;
    json_t *input = json_pack("{s:i, s:s}", "level", 42, "unit", "percent");
    for (long k = 0; k < p->count; k++) {
        long i = p->first + k;
        pthread_mutex_lock(&p->mu);
        if (p->inflight >= p->window)
            while (p->inflight > p->window / 2)
                pthread_cond_wait(&p->cv, &p->mu);
        p->inflight++;
        pthread_mutex_unlock(&p->mu);
        tw_action a;
        fill_action(&a, i, input);
        tickets[k] = (ticket){p, i};
        p->lat[i] = tw_mono_us();
        int rc = tw_queue_push(p->q, &a, on_ack, &tickets[k]);
        if (rc) {
            pthread_mutex_lock(&p->mu);
            p->inflight--;
            p->failed++;
            p->lat[i] = -1;
            pthread_mutex_unlock(&p->mu);
        }
    }
    pthread_mutex_lock(&p->mu);
    while (p->inflight > 0)
        pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    json_decref(input);
    free(tickets);
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int run_enqueue(const tw_bench_args *args)
{
    opts o;
    parse_opts(args, &o);
    long total = (long)(200000 * args->scale);
    if (total < 1000) total = 1000;
    tw_store *s;
    tw_queue *q;
    if (open_queue(args, &o, &s, &q)) return 1;

    int64_t *lat = calloc((size_t)total, sizeof *lat);
    producer *ps = calloc((size_t)o.producers, sizeof *ps);
    pthread_t *th = calloc((size_t)o.producers, sizeof *th);
    if (!lat || !ps || !th) return 1;
    tw_store_stats before;
    tw_store_get_stats(s, &before);
    int64_t t0 = tw_mono_us();
    long per = total / o.producers;
    for (int i = 0; i < o.producers; i++) {
        producer *p = &ps[i];
        p->q = q;
        p->first = i * per;
        p->count = i == o.producers - 1 ? total - p->first : per;
        p->window = o.window;
        p->lat = lat;
        pthread_mutex_init(&p->mu, NULL);
        pthread_cond_init(&p->cv, NULL);
        pthread_create(&th[i], NULL, producer_main, p);
    }
    long acked = 0, failed = 0;
    int64_t t1 = t0;
    for (int i = 0; i < o.producers; i++) {
        pthread_join(th[i], NULL);
        acked += ps[i].acked;
        failed += ps[i].failed;
        if (ps[i].last_ack_us > t1) t1 = ps[i].last_ack_us;
    }
    tw_store_stats after;
    tw_store_get_stats(s, &after);

    long nl = 0;
    for (long i = 0; i < total; i++)
        if (lat[i] >= 0) lat[nl++] = lat[i];
    qsort(lat, (size_t)nl, sizeof *lat, cmp_i64);
    double secs = (double)(t1 - t0) / 1e6;
    const char *sc = "enqueue";
    tw_bench_report(sc, o.normal ? "acked_actions_per_s (NORMAL)" : "acked_actions_per_s",
                    secs > 0 ? (double)acked / secs : 0, "1/s");
    if (nl > 0) {
        tw_bench_report(sc, "ack_latency_p50", (double)lat[nl / 2] / 1000.0, "ms");
        tw_bench_report(sc, "ack_latency_p99", (double)lat[(nl * 99) / 100] / 1000.0, "ms");
        tw_bench_report(sc, "ack_latency_max", (double)lat[nl - 1] / 1000.0, "ms");
    }
    uint64_t commits = after.commits - before.commits;
    tw_bench_report(sc, "actions", (double)acked, "");
    tw_bench_report(sc, "pushes_per_commit",
                    commits ? (double)(after.jobs - before.jobs) / (double)commits : 0, "");
    tw_bench_report(sc, "in_flight_max", (double)o.producers * o.window, "");
    if (failed) fprintf(stderr, "enqueue: %ld pushes failed\n", failed);

    /* Under that load the latency is mostly queueing (Little's law: in
     * flight / rate). One push at a time shows the cost of one commit. */
    long n1 = (long)(1000 * args->scale);
    if (n1 < 200) n1 = 200;
    producer one = {.q = q, .first = 0, .count = n1, .window = 1, .lat = lat};
    pthread_mutex_init(&one.mu, NULL);
    pthread_cond_init(&one.cv, NULL);
    producer_main(&one);
    nl = 0;
    for (long i = 0; i < n1; i++)
        if (lat[i] >= 0) lat[nl++] = lat[i];
    qsort(lat, (size_t)nl, sizeof *lat, cmp_i64);
    if (nl > 0) {
        tw_bench_report(sc, "ack_latency_one_at_a_time_p50", (double)lat[nl / 2] / 1000.0, "ms");
        tw_bench_report(sc, "ack_latency_one_at_a_time_p99", (double)lat[(nl * 99) / 100] / 1000.0,
                        "ms");
    }
    failed += one.failed;
    pthread_mutex_destroy(&one.mu);
    pthread_cond_destroy(&one.cv);

    for (int i = 0; i < o.producers; i++) {
        pthread_mutex_destroy(&ps[i].mu);
        pthread_cond_destroy(&ps[i].cv);
    }
    free(lat);
    free(ps);
    free(th);
    tw_queue_close(q);
    tw_store_close(s);
    return failed ? 1 : 0;
}

/* ---- drain --------------------------------------------------------------- */

/* CPU time (user + system) of the whole process so far, in microseconds:
 * unlike the rate, it hardly depends on what else the machine runs. */
static int64_t cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec +
           ru.ru_stime.tv_usec;
}

static int run_drain(const tw_bench_args *args)
{
    opts o;
    parse_opts(args, &o);
    long total = (long)(100000 * args->scale);
    if (total < 1000) total = 1000;
    tw_store *s;
    tw_queue *q;
    if (open_queue(args, &o, &s, &q)) return 1;

    /* Fill one agent's queue (write-behind pushes, one flush). */
    json_t *input = json_pack("{s:i}", "level", 7);
    for (long i = 0; i < total; i++) {
        tw_action a;
        fill_action(&a, 0, input);
        if (tw_queue_push(q, &a, NULL, NULL)) {
            fprintf(stderr, "drain: push failed\n");
            return 1;
        }
    }
    json_decref(input);
    tw_store_flush(s);

    json_t *output = json_pack("{s:b}", "ok", 1);
    int64_t c0 = cpu_us();
    int64_t t0 = tw_mono_us();
    long done = 0, errors = 0;
    int64_t after = 0;
    for (;;) {
        tw_action *got = NULL;
        int n = 0;
        if (tw_queue_fetch(q, "agent-0", after, o.page, &got, &n)) {
            errors++;
            break;
        }
        if (n == 0) break;
        for (int i = 0; i < n; i++)
            if (tw_queue_update_seq(q, got[i].id, got[i].seq, TW_STATUS_COMPLETED, output, NULL))
                errors++;
        after = got[n - 1].seq;
        done += n;
        tw_action_list_free(got, n);
    }
    tw_store_flush(s);
    int64_t t1 = tw_mono_us();
    int64_t c1 = cpu_us();
    json_decref(output);
    int64_t left = -1;
    tw_queue_depth(q, "agent-0", &left);

    double secs = (double)(t1 - t0) / 1e6;
    tw_bench_report("drain", "drained_actions_per_s", secs > 0 ? (double)done / secs : 0, "1/s");
    tw_bench_report("drain", "cpu_per_action", done ? (double)(c1 - c0) / (double)done : 0, "us");
    tw_bench_report("drain", "actions", (double)done, "");
    tw_bench_report("drain", "page", (double)o.page, "");
    tw_queue_close(q);
    tw_store_close(s);
    if (errors || done != total || left != 0) {
        fprintf(stderr, "drain: %ld errors, %ld of %ld drained, %lld left\n", errors, done, total,
                (long long)left);
        return 1;
    }
    return 0;
}

TW_BENCH_SCENARIO(enqueue, "durable acknowledged enqueues (synchronous=FULL), many in flight",
                  run_enqueue)
TW_BENCH_SCENARIO(drain, "fetch + complete 100,000 queued actions of one agent", run_drain)
