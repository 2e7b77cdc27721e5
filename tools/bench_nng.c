/*
 * bench_nng.c - twin-bench scenarios of the nng binding and libtwin, against
 * a real twind (started from next to twin-bench, or --twind PATH / $TWIND)
 * on loopback, with the rate limit lifted. Each figure comes with
 * references measured in the same run on the same machine: the same
 * traffic over a bare nng stream between two threads of this process (same
 * framing, envelopes written by hand and read with tw_msg_parse as libtwin
 * does), i.e. what the transport and the codec alone cost; and the same
 * payloads through NATS and Mosquitto (bench_ref.c).
 *
 *   nng_events  one agent -> runtime -> one consumer, events/s (flow
 *               controlled: the agent stays at most --window events ahead
 *               of the consumer, so nobody is cut off as a slow consumer)
 *   nng_rtt     action round trips consumer -> runtime -> agent -> runtime
 *               -> consumer, one at a time (with a plain-socket relay over
 *               the same four hops as a floor, bench_relay.c): p50/p99 in
 *               microseconds of
 *               tw_consumer_invoke (the caller waits on a condition the I/O
 *               thread signals), then async_p50/p99 of a chain of
 *               tw_consumer_invoke_async calls (each final status issues
 *               the next from the I/O thread: one thread hand-off less)
 *   nng_conns   1,000 agent connections (distinct agents, token login) held:
 *               time to connect them all, twind's memory per connection
 *   nng_drain   100,000 actions queued for an offline agent; the agent
 *               connects: actions/s delivered and answered
 *
 * Both libtwin clients run their callbacks on their I/O thread
 * (opts.dispatch_inline); --callback-thread gives the consumer the default
 * callback thread instead. nng_events subscribes with the view callback
 * (tw_consumer_subscribe_event_view), which decodes nothing it is not asked
 * for.
 *
 * Options after the scenario name: --tls (tls+tcp instead of tcp on
 * loopback), --nng-streams (twind's tcp:// on nng streams, "direct":
 * false, instead of its own sockets), --ipc (ipc:// instead of tcp://),
 * --twind PATH, --twind-opts 'MEMBERS' (added to twind's config file, e.g.
 * '"store_linger_ms": 5'), --nng-opts 'MEMBERS' (added to its "nng"
 * object, e.g. '"io_threads": 1'), --window N (nng_events), --callback-thread,
 * --no-reference (skip the reference figures: bare stream, NATS,
 * Mosquitto; e.g. under a profiler).
 */
#include "bench.h"
#include "bench_ref.h"
#include "bench_relay.h"

#include "agents/sdk/libtwin.h"
#include "runtime/msg.h"

#include <fcntl.h>
#include <limits.h>
#include <nng/nng.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct nb_twind {
    pid_t pid;
    char data[1100];
    char url[300];
    char ca[1200];
    char admin_pw[128];
} nb_twind;

static const char *nb_opt(const tw_bench_args *a, const char *name)
{
    for (int i = 0; i + 1 < a->argc; i++)
        if (strcmp(a->argv[i], name) == 0) return a->argv[i + 1];
    return NULL;
}

static bool nb_flag(const tw_bench_args *a, const char *name)
{
    for (int i = 0; i < a->argc; i++)
        if (strcmp(a->argv[i], name) == 0) return true;
    return false;
}

static const char *nb_twind_path(const tw_bench_args *a)
{
    static char path[PATH_MAX];
    const char *p = nb_opt(a, "--twind");
    if (!p) p = getenv("TWIND");
    if (p) return p;
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 16);
    if (n <= 0) return "twind";
    path[n] = '\0';
    char *slash = strrchr(path, '/');
    if (slash) *slash = '\0';
    slash = strrchr(path, '/');
    if (slash) strcpy(slash, "/twind");
    return path;
}

static int nb_line(const char *path, char *out, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    if (!fgets(out, (int)n, f)) out[0] = 0;
    fclose(f);
    out[strcspn(out, "\r\n")] = 0;
    return out[0] ? 0 : -1;
}

static void nb_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int nb_start(nb_twind *t, const tw_bench_args *a)
{
    memset(t, 0, sizeof *t);
    snprintf(t->data, sizeof t->data, "%s/data", a->workdir);
    char cfg[1200], logp[1200];
    snprintf(cfg, sizeof cfg, "%s/twind.json", a->workdir);
    snprintf(logp, sizeof logp, "%s/twind.log", a->workdir);
    FILE *f = fopen(cfg, "w");
    if (!f) return -1;
    /* --twind-opts adds top-level members, e.g. '"store_linger_ms": 5' */
    const char *extra = nb_opt(a, "--twind-opts");
    const char *nx = nb_opt(a, "--nng-opts");
    fprintf(f, "{\"rate\": 1e9, \"burst\": 1e9, %s%s\"nng\": {\"max_conns\": 5000%s%s%s}}\n",
            extra ? extra : "", extra ? ", " : "",
            nb_flag(a, "--nng-streams") ? ", \"direct\": false" : "", nx ? ", " : "", nx ? nx : "");
    fclose(f);
    char ipc[1200];
    snprintf(ipc, sizeof ipc, "ipc://%s/twind.sock", a->workdir);
    const char *url = nb_flag(a, "--tls")   ? "tls+tcp://127.0.0.1:0"
                      : nb_flag(a, "--ipc") ? ipc
                                            : "tcp://127.0.0.1:0";
    const char *bin = nb_twind_path(a);
    t->pid = fork();
    if (t->pid < 0) return -1;
    if (t->pid == 0) {
        int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(bin, bin, "--config", cfg, "--data", t->data, "--https", "off", "--http",
              "127.0.0.1:0", "--nng", url, "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    char up[1200], pp[1200];
    snprintf(up, sizeof up, "%s/nng.url", t->data);
    snprintf(pp, sizeof pp, "%s/admin.password", t->data);
    for (int i = 0; i < 600 && nb_line(up, t->url, sizeof t->url) != 0; i++) {
        int st;
        if (waitpid(t->pid, &st, WNOHANG) == t->pid) {
            fprintf(stderr, "bench_nng: %s exited; see %s\n", bin, logp);
            t->pid = 0;
            return -1;
        }
        nb_sleep_ms(50);
    }
    snprintf(t->ca, sizeof t->ca, "%s/tls/ca.pem", t->data);
    if (!t->url[0] || nb_line(pp, t->admin_pw, sizeof t->admin_pw)) return -1;
    return 0;
}

static void nb_stop(nb_twind *t)
{
    if (t->pid <= 0) return;
    kill(t->pid, SIGTERM);
    int st;
    waitpid(t->pid, &st, 0);
    t->pid = 0;
}

static long nb_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

/* inline: callbacks on the I/O thread (opts.dispatch_inline), one thread
 * hand-off less per message */
static tw_client *nb_client(const nb_twind *t, const char *id, const char *pw, bool inline_cb)
{
    tw_client_opts o = {.url = t->url,
                        .dispatch_inline = inline_cb,
                        .ca_file = t->ca,
                        .client_id = id,
                        .password = pw,
                        .request_timeout_ms = 60000,
                        .send_queue = 1 << 18};
    tw_client *c = NULL;
    if (tw_client_new(&o, &c)) return NULL;
    if (tw_client_wait_connected(c, 30000)) {
        tw_client_close(c);
        return NULL;
    }
    return c;
}

static int nb_add(tw_client *admin, const char *id, const char *kind, const char *role,
                  const char *pw)
{
    json_t *in = pw ? json_pack("{s:s, s:s, s:s, s:s}", "clientID", id, "kind", kind, "role", role,
                                "password", pw)
                    : json_pack("{s:s, s:s, s:s}", "clientID", id, "kind", kind, "role", role);
    int rc = tw_consumer_invoke(admin, "dtw:twind:authn", "addClient", in, 60000, NULL);
    json_decref(in);
    return rc;
}

static json_t *nb_td(const char *id)
{
    return json_pack("{s:s, s:s, s:s, s:{s:{s:s}}, s:{s:{}}, s:{s:{}, s:{}}}", "@context",
                     "https://www.w3.org/2022/wot/td/v1.1", "id", id, "title", "bench thing",
                     "properties", "p", "type", "number", "events", "e", "actions", "echo", "work");
}

/* twind up, admin, an agent "ba" with Thing "b", a consumer "bc". */
typedef struct nb_env {
    nb_twind t;
    tw_client *admin, *agent, *cons;
} nb_env;

static int nb_env_up(nb_env *e, const tw_bench_args *a, bool agent_online)
{
    memset(e, 0, sizeof *e);
    if (nb_start(&e->t, a)) return -1;
    if (!(e->admin = nb_client(&e->t, "admin", e->t.admin_pw, false))) return -1;
    if (nb_add(e->admin, "ba", "agent", "agent", "bench-agent-pw") ||
        nb_add(e->admin, "bc", "consumer", "operator", "bench-consumer-pw"))
        return -1;
    if (!(e->agent = nb_client(&e->t, "ba", "bench-agent-pw", true))) return -1;
    json_t *td = nb_td("b");
    int rc = tw_agent_publish_td(e->agent, td, NULL, NULL);
    json_decref(td);
    if (rc) return -1;
    if (!agent_online) {
        tw_client_close(e->agent);
        e->agent = NULL;
    }
    return (e->cons = nb_client(&e->t, "bc", "bench-consumer-pw", !nb_flag(a, "--callback-thread")))
               ? 0
               : -1;
}

static void nb_env_down(nb_env *e)
{
    if (e->cons) tw_client_close(e->cons);
    if (e->agent) tw_client_close(e->agent);
    if (e->admin) tw_client_close(e->admin);
    nb_stop(&e->t);
}

/* ---- the reference: a bare nng stream between two threads ------------------------- */

typedef struct ref_pair {
    nng_stream_listener *l;
    nng_stream_dialer *d;
    nng_stream *a, *b; /* a: dialer side, b: accepted side */
} ref_pair;

static int ref_open(ref_pair *p)
{
    memset(p, 0, sizeof *p);
    nng_aio *aio;
    if (nng_stream_listener_alloc(&p->l, "tcp://127.0.0.1:0") || nng_stream_listener_listen(p->l) ||
        nng_aio_alloc(&aio, NULL, NULL))
        return -1;
    int port = 0;
    nng_stream_listener_get_int(p->l, NNG_OPT_TCP_BOUND_PORT, &port);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    nng_aio *aio2;
    if (nng_stream_dialer_alloc(&p->d, url) || nng_aio_alloc(&aio2, NULL, NULL)) return -1;
    nng_stream_listener_accept(p->l, aio);
    nng_stream_dialer_dial(p->d, aio2);
    nng_aio_wait(aio);
    nng_aio_wait(aio2);
    int rc = nng_aio_result(aio) || nng_aio_result(aio2) ? -1 : 0;
    if (!rc) {
        p->b = nng_aio_get_output(aio, 0);
        p->a = nng_aio_get_output(aio2, 0);
    }
    nng_aio_free(aio);
    nng_aio_free(aio2);
    return rc;
}

static void ref_close(ref_pair *p)
{
    if (p->a) nng_stream_free(p->a);
    if (p->b) nng_stream_free(p->b);
    nng_stream_dialer_free(p->d);
    nng_stream_listener_free(p->l);
}

static int ref_write(nng_stream *s, nng_aio *aio, const char *buf, size_t len)
{
    while (len) {
        nng_iov iov = {(void *)buf, len};
        nng_aio_set_iov(aio, 1, &iov);
        nng_stream_send(s, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio)) return -1;
        buf += nng_aio_count(aio);
        len -= nng_aio_count(aio);
    }
    return 0;
}

/* A line reader over a stream: returns lines parsed with tw_msg_parse, the
 * parser libtwin and twind use, so the reference costs what the transport
 * and the codec cost, nothing else. It keeps an offset to the first unread
 * byte and compacts the buffer only when it must read more, as libtwin's
 * transport does: moving the rest of a 256 KiB batch after every line would
 * cost more than the parse and make the reference unfairly slow. */
typedef struct ref_reader {
    nng_stream *s;
    nng_aio *aio;
    char *buf;
    size_t len, cap, off;
} ref_reader;

static tw_msg *ref_next(ref_reader *r)
{
    for (;;) {
        char *nl = memchr(r->buf + r->off, '\n', r->len - r->off);
        if (nl) {
            char *line = r->buf + r->off;
            tw_msg *m = NULL;
            tw_msg_parse(line, (size_t)(nl - line), NULL, &m, NULL);
            r->off = (size_t)(nl - r->buf) + 1;
            return m ? m : tw_msg_new(TW_TYPE_NONE, TW_OP_NONE, NULL, NULL);
        }
        if (r->off) {
            memmove(r->buf, r->buf + r->off, r->len - r->off);
            r->len -= r->off;
            r->off = 0;
        }
        nng_iov iov = {r->buf + r->len, r->cap - r->len};
        nng_aio_set_iov(r->aio, 1, &iov);
        nng_stream_recv(r->s, r->aio);
        nng_aio_wait(r->aio);
        if (nng_aio_result(r->aio)) return NULL;
        r->len += nng_aio_count(r->aio);
    }
}

typedef struct ref_events_ctx {
    ref_pair *p;
    long n;
    int64_t t0, t1;
} ref_events_ctx;

static void *ref_events_reader(void *arg)
{
    ref_events_ctx *x = arg;
    ref_reader r = {x->p->b, NULL, malloc(1 << 20), 0, 1 << 20, 0};
    nng_aio_alloc(&r.aio, NULL, NULL);
    for (long i = 0; i < x->n; i++) {
        tw_msg *m = ref_next(&r);
        if (!m) break;
        if (i == 0) x->t0 = tw_mono_us();
        tw_msg_unref(m);
    }
    x->t1 = tw_mono_us();
    nng_aio_free(r.aio);
    free(r.buf);
    return NULL;
}

/* An envelope with an integer member last, written by hand as libtwin does:
 * head (a constant), the integer, "}\n". */
static size_t ref_line(char *out, const char *head, long v)
{
    size_t n = strlen(head);
    memcpy(out, head, n);
    n += (size_t)sprintf(out + n, "%ld}\n", v);
    return n;
}

/* events over a bare stream: the sender batches encoded envelopes. */
static double ref_events(long n)
{
    ref_pair p;
    if (ref_open(&p)) return 0;
    ref_events_ctx x = {&p, n, 0, 0};
    pthread_t th;
    pthread_create(&th, NULL, ref_events_reader, &x);
    nng_aio *aio;
    nng_aio_alloc(&aio, NULL, NULL);
    char *batch = malloc(1 << 18);
    size_t blen = 0;
    for (long i = 0; i < n; i++) {
        blen += ref_line(batch + blen,
                         "{\"type\":\"notification\",\"operation\":\"subscribeevent\","
                         "\"thingID\":\"dtw:ba:b\",\"name\":\"e\",\"value\":",
                         i);
        if (blen > (1 << 18) - 512 || i == n - 1) {
            ref_write(p.a, aio, batch, blen);
            blen = 0;
        }
    }
    pthread_join(th, NULL);
    nng_aio_free(aio);
    free(batch);
    ref_close(&p);
    return x.t1 > x.t0 ? (double)(n - 1) * 1e6 / (double)(x.t1 - x.t0) : 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void *ref_echo_server(void *arg)
{
    ref_pair *p = arg;
    ref_reader r = {p->b, NULL, malloc(1 << 16), 0, 1 << 16, 0};
    nng_aio *aio;
    nng_aio_alloc(&r.aio, NULL, NULL);
    nng_aio_alloc(&aio, NULL, NULL);
    tw_msg *m;
    char out[4096];
    while ((m = ref_next(&r)) != NULL) { /* echoes the envelope, encoded as twind does */
        size_t len = 0;
        const char *s = tw_msg_encode(m, &len);
        if (s && len < sizeof out) {
            memcpy(out, s, len);
            out[len] = '\n';
            ref_write(p->b, aio, out, len + 1);
        }
        tw_msg_unref(m);
    }
    nng_aio_free(aio);
    nng_aio_free(r.aio);
    free(r.buf);
    return NULL;
}

/* request/reply over a bare stream, one at a time: p50/p99 us */
static void ref_rtt(long n, double *p50, double *p99)
{
    ref_pair p;
    *p50 = *p99 = 0;
    if (ref_open(&p)) return;
    pthread_t th;
    pthread_create(&th, NULL, ref_echo_server, &p);
    ref_reader r = {p.a, NULL, malloc(1 << 16), 0, 1 << 16, 0};
    nng_aio *aio;
    nng_aio_alloc(&r.aio, NULL, NULL);
    nng_aio_alloc(&aio, NULL, NULL);
    int64_t *lat = calloc((size_t)n, sizeof *lat);
    for (long i = 0; i < n; i++) {
        int64_t t0 = tw_mono_us();
        char s[256];
        size_t len = ref_line(s,
                              "{\"type\":\"request\",\"operation\":\"invokeaction\","
                              "\"thingID\":\"dtw:ba:b\",\"name\":\"echo\",\"input\":",
                              i);
        ref_write(p.a, aio, s, len);
        tw_msg *m = ref_next(&r);
        if (m) tw_msg_unref(m);
        lat[i] = tw_mono_us() - t0;
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_i64);
    *p50 = (double)lat[n / 2];
    *p99 = (double)lat[n * 99 / 100];
    nng_stream_close(p.a);
    nng_stream_close(p.b);
    pthread_join(th, NULL);
    nng_aio_free(aio);
    nng_aio_free(r.aio);
    free(r.buf);
    free(lat);
    ref_close(&p);
}

/* ---- nng_events ---------------------------------------------------------------- */

typedef struct ev_ctx {
    atomic_long received;
    _Atomic int64_t t_first, t_last;
} ev_ctx;

/* A consumer that counts (it needs neither the value nor the envelope: the
 * view callback decodes nothing it does not ask for). */
static void ev_cb(void *arg, tw_client *c, const tw_notification *n)
{
    ev_ctx *x = arg;
    int64_t now = tw_mono_us();
    if (atomic_fetch_add(&x->received, 1) == 0) atomic_store(&x->t_first, now);
    atomic_store(&x->t_last, now);
}

static int run_events(const tw_bench_args *a)
{
    long n = (long)(2000000 * a->scale);
    if (n < 1000) n = 1000;
    const char *w = nb_opt(a, "--window");
    long window = w ? atol(w) : 8192;
    nb_env e;
    ev_ctx x = {0};
    int rc = -1;
    if (nb_env_up(&e, a, true)) goto out;
    if (tw_consumer_subscribe_event_view(e.cons, "dtw:ba:b", "e", ev_cb, &x, NULL)) goto out;
    json_t *v = json_integer(0);
    double cpu0 = tw_bench_proc_cpu_s(e.t.pid);
    int64_t t0 = tw_mono_us();
    for (long i = 0; i < n; i++) {
        while (i - atomic_load(&x.received) > window) {
            struct timespec ts = {0, 20000}; /* sleep, not spin: 2 cores */
            nanosleep(&ts, NULL);
        }
        if (tw_agent_publish_event(e.agent, "b", "e", v) != 0) {
            fprintf(stderr, "bench_nng: publish failed at %ld\n", i);
            break;
        }
    }
    json_decref(v);
    for (int i = 0; i < 3000 && atomic_load(&x.received) < n; i++)
        nb_sleep_ms(10);
    int64_t t1 = tw_mono_us();
    double cpu1 = tw_bench_proc_cpu_s(e.t.pid);
    long got = atomic_load(&x.received);
    tw_client_stats st;
    tw_client_get_stats(e.agent, &st);
    tw_bench_report("nng_events", "events_per_s", (double)got * 1e6 / (double)(t1 - t0), "1/s");
    tw_bench_report("nng_events", "delivered", (double)got, "events");
    if (cpu0 >= 0 && cpu1 >= 0 && got > 0)
        tw_bench_report("nng_events", "twind_cpu_per_event", (cpu1 - cpu0) * 1e9 / (double)got,
                        "ns");
    tw_bench_report("nng_events", "sent_per_write", st.batches ? (double)st.sent / st.batches : 0,
                    "envelopes");
    if (!nb_flag(a, "--no-reference")) {
        tw_bench_report("nng_events", "reference_bare_stream_per_s", ref_events(n), "1/s");
        tw_ref_report_events("nng_events", a->workdir, n, window);
    }
    rc = got == n ? 0 : -1;
out:
    nb_env_down(&e);
    return rc;
}

/* ---- nng_rtt ------------------------------------------------------------------- */

static void echo_cb(void *arg, tw_client *c, tw_req *r)
{
    tw_req_complete(r, tw_req_input(r));
}

/* The asynchronous round trip: each final status (on the consumer's I/O
 * thread, dispatch_inline) records its latency and invokes the next action,
 * so no thread of the application sits between the statuses and the next
 * request. Still one action at a time. */
typedef struct rtt_chain {
    tw_client *cons;
    json_t *in;
    int64_t *lat;
    long n, i;
    int64_t t0;
    atomic_int done; /* 1: all done, -1: failed */
} rtt_chain;

static void rtt_next(void *arg, tw_client *c, const tw_action_result *r);

static void rtt_issue(rtt_chain *x)
{
    x->t0 = tw_mono_us();
    if (tw_consumer_invoke_async(x->cons, "dtw:ba:b", "echo", x->in, 10000, rtt_next, x) != 0)
        atomic_store(&x->done, -1);
}

static void rtt_next(void *arg, tw_client *c, const tw_action_result *r)
{
    rtt_chain *x = arg;
    if (!tw_status_final(r->status)) return;
    if (r->status != TW_STATUS_COMPLETED) {
        atomic_store(&x->done, -1);
        return;
    }
    x->lat[x->i++] = tw_mono_us() - x->t0;
    if (x->i == x->n)
        atomic_store(&x->done, 1);
    else
        rtt_issue(x);
}

static int run_rtt(const tw_bench_args *a)
{
    long n = (long)(20000 * a->scale);
    if (n < 200) n = 200;
    nb_env e;
    int rc = -1;
    int64_t *lat = calloc((size_t)n, sizeof *lat);
    if (!lat || nb_env_up(&e, a, true)) goto out;
    tw_agent_on_action(e.agent, "b", "echo", echo_cb, NULL);
    json_t *in = json_integer(1);
    for (long i = 0; i < n / 10; i++) /* warm-up */
        tw_consumer_invoke(e.cons, "dtw:ba:b", "echo", in, 10000, NULL);
    double cpu0 = tw_bench_proc_cpu_s(e.t.pid);
    for (long i = 0; i < n; i++) {
        int64_t t0 = tw_mono_us();
        if (tw_consumer_invoke(e.cons, "dtw:ba:b", "echo", in, 10000, NULL) != 0) goto out_in;
        lat[i] = tw_mono_us() - t0;
    }
    /* includes the writer's commits of the round trips' rows, if done by
     * then: a store linger may leave the last few ms for later */
    double cpu1 = tw_bench_proc_cpu_s(e.t.pid);
    qsort(lat, (size_t)n, sizeof *lat, cmp_i64);
    tw_bench_report("nng_rtt", "p50", (double)lat[n / 2], "us");
    tw_bench_report("nng_rtt", "p99", (double)lat[n * 99 / 100], "us");
    if (cpu0 >= 0 && cpu1 >= 0)
        tw_bench_report("nng_rtt", "twind_cpu_per_rtt", (cpu1 - cpu0) * 1e6 / (double)n, "us");
    /* the share of one hop: consumer -> runtime -> consumer (ping) */
    json_t *ping = json_pack("{s:s}", "operation", "ping");
    for (long i = 0; i < n; i++) {
        int64_t t0 = tw_mono_us();
        tw_client_request(e.cons, ping, 10000, NULL);
        lat[i] = tw_mono_us() - t0;
    }
    json_decref(ping);
    qsort(lat, (size_t)n, sizeof *lat, cmp_i64);
    tw_bench_report("nng_rtt", "ping_p50", (double)lat[n / 2], "us");
    rtt_chain x = {.cons = e.cons, .in = in, .lat = lat, .n = n};
    rtt_issue(&x);
    while (atomic_load(&x.done) == 0)
        nb_sleep_ms(5);
    if (atomic_load(&x.done) < 0) goto out_in;
    qsort(lat, (size_t)n, sizeof *lat, cmp_i64);
    tw_bench_report("nng_rtt", "async_p50", (double)lat[n / 2], "us");
    tw_bench_report("nng_rtt", "async_p99", (double)lat[n * 99 / 100], "us");
    if (!nb_flag(a, "--no-reference")) {
        double r50, r99;
        ref_rtt(n, &r50, &r99);
        tw_bench_report("nng_rtt", "reference_bare_stream_p50", r50, "us");
        tw_bench_report("nng_rtt", "reference_bare_stream_p99", r99, "us");
        /* the same four hops over plain sockets, nothing done in the middle */
        if (tw_ref_relay_rtt(n, 300, &r50, &r99) == 0) {
            tw_bench_report("nng_rtt", "reference_socket_relay_p50", r50, "us");
            tw_bench_report("nng_rtt", "reference_socket_relay_p99", r99, "us");
        }
        tw_ref_report_rtt("nng_rtt", a->workdir, n);
    }
    rc = 0;
out_in:
    json_decref(in);
out:
    nb_env_down(&e);
    free(lat);
    return rc;
}

/* ---- nng_conns ----------------------------------------------------------------- */

static int run_conns(const tw_bench_args *a)
{
    int n = (int)(1000 * a->scale);
    if (n < 10) n = 10;
    nb_twind t;
    tw_client *admin = NULL, **cl = calloc((size_t)n, sizeof *cl);
    char **tokens = calloc((size_t)n, sizeof *tokens);
    int rc = -1, up = 0;
    if (!cl || !tokens || nb_start(&t, a) || !(admin = nb_client(&t, "admin", t.admin_pw, false)))
        goto out;
    for (int i = 0; i < n; i++) { /* token-only agents: no password hashing */
        char id[32];
        snprintf(id, sizeof id, "conn-agent-%d", i);
        if (nb_add(admin, id, "agent", "agent", NULL)) goto out;
        json_t *in = json_pack("{s:s}", "clientID", id);
        tw_action_result r;
        int irc = tw_consumer_invoke(admin, "dtw:twind:authn", "issueToken", in, 60000, &r);
        json_decref(in);
        const char *tok = json_string_value(json_object_get(r.output, "token"));
        if (!irc && tok) tokens[i] = strdup(tok);
        tw_action_result_clear(&r);
        if (!tokens[i]) goto out;
    }
    long rss0 = nb_rss_kb(t.pid);
    int64_t t0 = tw_mono_us();
    for (int i = 0; i < n; i++) {
        tw_client_opts o = {.url = t.url, .ca_file = t.ca, .token = tokens[i]};
        if (tw_client_new(&o, &cl[i])) goto out;
    }
    for (int i = 0; i < n; i++)
        if (tw_client_wait_connected(cl[i], 60000) == 0) up++;
    int64_t t1 = tw_mono_us();
    nb_sleep_ms(2000); /* held */
    int still = 0;
    for (int i = 0; i < n; i++)
        still += tw_client_get_state(cl[i]) == TW_CLIENT_CONNECTED;
    long rss1 = nb_rss_kb(t.pid);
    tw_bench_report("nng_conns", "connections_held", still, "conns");
    tw_bench_report("nng_conns", "connect_all_s", (double)(t1 - t0) / 1e6, "s");
    tw_bench_report("nng_conns", "twind_rss_per_conn", (double)(rss1 - rss0) / n, "KiB");
    rc = still == n ? 0 : -1;
out:
    for (int i = 0; i < n && cl; i++)
        if (cl[i]) tw_client_close(cl[i]);
    for (int i = 0; i < n && tokens; i++)
        free(tokens[i]);
    free(cl);
    free(tokens);
    if (admin) tw_client_close(admin);
    nb_stop(&t);
    return rc;
}

/* ---- nng_drain ----------------------------------------------------------------- */

typedef struct drain_ctx {
    atomic_long queued, completed, answered;
    _Atomic int64_t t_last;
} drain_ctx;

static void drain_status(void *arg, tw_client *c, const tw_action_result *r)
{
    drain_ctx *x = arg;
    if (r->status == TW_STATUS_QUEUED) atomic_fetch_add(&x->queued, 1);
    if (tw_status_final(r->status)) {
        atomic_fetch_add(&x->completed, 1);
        atomic_store(&x->t_last, tw_mono_us());
    }
}

static void drain_work(void *arg, tw_client *c, tw_req *r)
{
    drain_ctx *x = arg;
    tw_req_complete(r, NULL);
    atomic_fetch_add(&x->answered, 1);
}

static int run_drain(const tw_bench_args *a)
{
    long n = (long)(100000 * a->scale);
    if (n < 100) n = 100;
    nb_env e;
    drain_ctx x = {0};
    int rc = -1;
    if (nb_env_up(&e, a, false)) goto out;
    int64_t q0 = tw_mono_us();
    for (long i = 0; i < n; i++)
        if (tw_consumer_invoke_async(e.cons, "dtw:ba:b", "work", NULL, 0, drain_status, &x))
            goto out;
    while (atomic_load(&x.queued) < n && tw_mono_us() - q0 < 600000000LL)
        nb_sleep_ms(5);
    int64_t q1 = tw_mono_us();
    tw_bench_report("nng_drain", "queued_per_s", (double)n * 1e6 / (double)(q1 - q0), "1/s");
    tw_client_opts o = {.url = e.t.url,
                        .ca_file = e.t.ca,
                        .client_id = "ba",
                        .password = "bench-agent-pw",
                        .dispatch_inline = true};
    int64_t t0 = tw_mono_us();
    if (tw_client_new(&o, &e.agent)) goto out;
    tw_agent_on_action(e.agent, "b", "work", drain_work, &x);
    while (atomic_load(&x.completed) < n && tw_mono_us() - t0 < 600000000LL)
        nb_sleep_ms(5);
    int64_t t1 = atomic_load(&x.t_last);
    tw_bench_report("nng_drain", "drained_per_s", (double)n * 1e6 / (double)(t1 - t0), "1/s");
    tw_bench_report("nng_drain", "answered", (double)atomic_load(&x.answered), "actions");
    rc = atomic_load(&x.completed) == n ? 0 : -1;
out:
    nb_env_down(&e);
    return rc;
}

TW_BENCH_SCENARIO(nng_events, "events agent -> runtime -> consumer over nng (events/s)", run_events)
TW_BENCH_SCENARIO(nng_rtt, "action round trip consumer -> agent -> consumer over nng (p50/p99)",
                  run_rtt)
TW_BENCH_SCENARIO(nng_conns, "1,000 agent connections held over nng", run_conns)
TW_BENCH_SCENARIO(nng_drain, "100,000 queued actions drained to an agent that connects", run_drain)
