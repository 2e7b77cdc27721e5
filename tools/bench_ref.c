/*
 * bench_ref.c - NATS and MQTT references for nng_events and nng_rtt (see
 * bench_ref.h): real brokers, started by the bench, driven by their own
 * well-kept C clients (libnats, libmosquitto) with default options, so the
 * figure is what a user of that broker gets, not what a hand-written client
 * could get.
 *
 * Fairness with the nng scenarios: the payloads are the envelopes
 * bench_nng.c sends (an event notification with an integer value; an
 * invokeaction request, echoed back), without the newline that frames them
 * on an nng stream (both brokers frame messages themselves). The event
 * publisher stays at most `window` events ahead of the subscriber, as the
 * libtwin agent does in nng_events, and throughput is counted from the first
 * to the last event received, as the bare-stream reference does. The
 * subscribers only count: a broker routes by subject or topic, so nothing
 * needs the envelope decoded to dispatch it.
 *
 * Servers: each function picks a free loopback port (bind to port 0), forks
 * and execs the server with its log (and mosquitto's config) in workdir,
 * waits until the port accepts connections, and stops it with SIGTERM
 * (SIGKILL after 5 s). A port taken between the pick and the server's bind
 * makes the server exit; the start is then retried on another port.
 *
 * Built with the references only when CMake found libnats and libmosquitto
 * (TW_BENCH_REFS); otherwise every function says which packages to install.
 */
#include "bench_ref.h"

#include "bench.h"

#include <stdio.h>

#ifdef TW_BENCH_REFS

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mosquitto.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The envelopes of bench_nng.c (ref_events, ref_rtt): keep them the same. */
#define EVENT_HEAD                                                                                 \
    "{\"type\":\"notification\",\"operation\":\"subscribeevent\",\"thingID\":\"dtw:ba:b\","        \
    "\"name\":\"e\",\"value\":"
#define REQUEST_HEAD                                                                               \
    "{\"type\":\"request\",\"operation\":\"invokeaction\",\"thingID\":\"dtw:ba:b\","               \
    "\"name\":\"echo\",\"input\":"

#define STALL_US 3000000 /* no event received for this long: the rest is lost */

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static int envelope(char *out, size_t cap, const char *head, long v)
{
    return snprintf(out, cap, "%s%ld}", head, v);
}

/* ---- servers ------------------------------------------------------------------- */

typedef struct ref_server {
    pid_t pid;
    int port;
} ref_server;

/* The server binary: $PATH, then the sbin directories Debian installs
 * nats-server and mosquitto in (not in a normal user's $PATH). */
static bool find_bin(const char *name, char *out, size_t cap)
{
    const char *env = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof dirs, "%s:/usr/sbin:/usr/local/sbin:/sbin", env ? env : "/usr/bin:/bin");
    char *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        if (snprintf(out, cap, "%s/%s", d[0] ? d : ".", name) >= (int)cap) continue;
        if (access(out, X_OK) == 0) return true;
    }
    return false;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return false;
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static void server_stop(ref_server *s)
{
    if (s->pid <= 0) return;
    kill(s->pid, SIGTERM);
    int st;
    for (int i = 0; i < 500 && waitpid(s->pid, &st, WNOHANG) == 0; i++)
        sleep_us(10000);
    if (waitpid(s->pid, &st, WNOHANG) == 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &st, 0);
    }
    s->pid = 0;
}

/* Forks and execs argv (argv[0] the binary's path) in workdir, output to
 * log, and waits up to 10 s for s->port to accept connections. Everything
 * the child needs is prepared before fork: the parent has threads. */
static int server_spawn(ref_server *s, const char *workdir, const char *log, char *const argv[])
{
    s->pid = fork();
    if (s->pid < 0) return -1;
    if (s->pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        if (chdir(workdir) != 0) _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    for (int i = 0; i < 1000; i++) {
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            return -1;
        }
        if (port_open(s->port)) return 0;
        sleep_us(10000);
    }
    server_stop(s);
    return -1;
}

static int nats_up(ref_server *s, const char *workdir)
{
    char bin[PATH_MAX], log[PATH_MAX], port[16];
    if (!find_bin("nats-server", bin, sizeof bin)) {
        fprintf(stderr, "bench_ref: nats-server not found: no NATS reference (install the "
                        "Debian package nats-server)\n");
        return -1;
    }
    snprintf(log, sizeof log, "%s/nats-server.log", workdir);
    for (int attempt = 0; attempt < 3; attempt++) {
        if ((s->port = free_port()) < 0) break;
        snprintf(port, sizeof port, "%d", s->port);
        char *argv[] = {bin, "-a", "127.0.0.1", "-p", port, NULL};
        if (server_spawn(s, workdir, log, argv) == 0) return 0;
    }
    fprintf(stderr, "bench_ref: nats-server did not start; see %s\n", log);
    return -1;
}

/* mosquitto with an unbounded per-client queue: its default (1,000 messages,
 * QoS 0 included) drops events whenever the subscriber is 1,000 behind. */
static int mqtt_up(ref_server *s, const char *workdir)
{
    char bin[PATH_MAX], log[PATH_MAX], conf[PATH_MAX];
    if (!find_bin("mosquitto", bin, sizeof bin)) {
        fprintf(stderr, "bench_ref: mosquitto not found: no MQTT reference (install the "
                        "Debian package mosquitto)\n");
        return -1;
    }
    snprintf(log, sizeof log, "%s/mosquitto.log", workdir);
    snprintf(conf, sizeof conf, "%s/mosquitto.conf", workdir);
    for (int attempt = 0; attempt < 3; attempt++) {
        if ((s->port = free_port()) < 0) break;
        FILE *f = fopen(conf, "w");
        if (!f) break;
        fprintf(f,
                "listener %d 127.0.0.1\n"
                "allow_anonymous true\n"
                "persistence false\n"
                "max_queued_messages 0\n"
                "log_dest stderr\n"
                "log_type error\n"
                "log_type warning\n",
                s->port);
        fclose(f);
        char *argv[] = {bin, "-c", conf, NULL};
        if (server_spawn(s, workdir, log, argv) == 0) return 0;
    }
    fprintf(stderr, "bench_ref: mosquitto did not start; see %s\n", log);
    return -1;
}

/* ---- the event counter both subscribers share ------------------------------------ */

typedef struct ev_count {
    atomic_long received;
    _Atomic int64_t t_first, t_last;
} ev_count;

static void ev_seen(ev_count *x)
{
    int64_t now = mono_us();
    if (atomic_fetch_add(&x->received, 1) == 0) atomic_store(&x->t_first, now);
    atomic_store(&x->t_last, now);
}

/* Waits while the publisher is more than window events ahead (sleeping, not
 * spinning: 2 cores); false when the subscriber made no progress for
 * STALL_US (events lost), so the publisher stops instead of hanging. */
static bool ev_wait_window(ev_count *x, long sent, long window)
{
    long seen = atomic_load(&x->received);
    if (sent - seen <= window) return true;
    int64_t since = mono_us();
    while (sent - seen > window) {
        sleep_us(20);
        long now = atomic_load(&x->received);
        if (now != seen) {
            seen = now;
            since = mono_us();
        } else if (mono_us() - since > STALL_US) {
            return false;
        }
    }
    return true;
}

/* Waits until all n arrived or none arrived for STALL_US; the figure. */
static double ev_finish(ev_count *x, long n, long *lost, const char *what)
{
    long seen = atomic_load(&x->received);
    int64_t since = mono_us();
    while (seen < n && mono_us() - since < STALL_US) {
        sleep_us(10000);
        long now = atomic_load(&x->received);
        if (now != seen) since = mono_us();
        seen = now;
    }
    *lost = n - seen;
    int64_t t0 = atomic_load(&x->t_first), t1 = atomic_load(&x->t_last);
    if (seen < 2 || t1 <= t0) {
        fprintf(stderr, "bench_ref: %s: %ld of %ld events received\n", what, seen, n);
        return -1;
    }
    return (double)(seen - 1) * 1e6 / (double)(t1 - t0);
}

/* ---- NATS ---------------------------------------------------------------------- */

static void nats_say(const char *what, natsStatus st)
{
    fprintf(stderr, "bench_ref: %s: %s (%s)\n", what, natsStatus_GetText(st),
            nats_GetLastError(NULL) ? nats_GetLastError(NULL) : "");
}

/* send_asap: publish at once instead of leaving it to libnats' flusher
 * thread, which waits about a millisecond to coalesce writes. nats.h
 * recommends it for "a connection used solely to send replies", the
 * responder's; with the default every round trip measured that sleep. */
static natsStatus nats_connect(natsConnection **nc, int port, bool send_asap)
{
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    natsOptions *o = NULL;
    natsStatus st = natsOptions_Create(&o);
    if (st == NATS_OK) st = natsOptions_SetURL(o, url);
    if (st == NATS_OK) st = natsOptions_SetSendAsap(o, send_asap);
    if (st == NATS_OK) st = natsConnection_Connect(nc, o);
    natsOptions_Destroy(o);
    return st;
}

/* The responder: the request back to its reply subject. */
static void nats_echo(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *arg)
{
    const char *reply = natsMsg_GetReply(msg);
    if (reply) natsConnection_Publish(nc, reply, natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
    natsMsg_Destroy(msg);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int tw_ref_nats_rtt(const char *workdir, long n, double *p50, double *p99)
{
    ref_server s = {0};
    natsConnection *req = NULL, *rsp = NULL;
    natsSubscription *sub = NULL;
    int64_t *lat = calloc((size_t)n, sizeof *lat);
    int rc = -1;
    natsStatus st;
    if (!lat || n < 1 || nats_up(&s, workdir)) goto out;
    if ((st = nats_connect(&rsp, s.port, true)) != NATS_OK ||
        (st = natsConnection_Subscribe(&sub, rsp, "dtw.ba.b.echo", nats_echo, NULL)) != NATS_OK ||
        (st = natsConnection_Flush(rsp)) != NATS_OK ||
        (st = nats_connect(&req, s.port, false)) != NATS_OK) {
        nats_say("NATS request/reply setup", st);
        goto out;
    }
    long warm = n / 10;
    for (long i = -warm; i < n; i++) { /* i < 0: warm-up, untimed */
        char body[256];
        int len = envelope(body, sizeof body, REQUEST_HEAD, i);
        natsMsg *reply = NULL;
        int64_t t0 = mono_us();
        st = natsConnection_Request(&reply, req, "dtw.ba.b.echo", body, len, 10000);
        int64_t t1 = mono_us();
        if (st != NATS_OK || natsMsg_GetDataLength(reply) != len) {
            nats_say("NATS request", st);
            natsMsg_Destroy(reply);
            goto out;
        }
        natsMsg_Destroy(reply);
        if (i >= 0) lat[i] = t1 - t0;
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_i64);
    *p50 = (double)lat[n / 2];
    *p99 = (double)lat[n * 99 / 100];
    rc = 0;
out:
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(req);
    natsConnection_Destroy(rsp);
    server_stop(&s);
    free(lat);
    return rc;
}

static void nats_count(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *arg)
{
    ev_seen(arg);
    natsMsg_Destroy(msg);
}

double tw_ref_nats_events(const char *workdir, long n, long window, long *lost)
{
    ref_server s = {0};
    natsConnection *pub = NULL, *subc = NULL;
    natsSubscription *sub = NULL;
    ev_count x = {0};
    double r = -1;
    natsStatus st;
    *lost = n;
    if (nats_up(&s, workdir)) return -1;
    /* no limit on the messages libnats holds for the subscriber: an event
     * dropped there would be counted as throughput */
    if ((st = nats_connect(&subc, s.port, false)) != NATS_OK ||
        (st = natsConnection_Subscribe(&sub, subc, "dtw.ba.b.e", nats_count, &x)) != NATS_OK ||
        (st = natsSubscription_SetPendingLimits(sub, -1, -1)) != NATS_OK ||
        (st = natsConnection_Flush(subc)) != NATS_OK ||
        (st = nats_connect(&pub, s.port, false)) != NATS_OK) {
        nats_say("NATS events setup", st);
        goto out;
    }
    for (long i = 0; i < n; i++) {
        char body[256];
        int len = envelope(body, sizeof body, EVENT_HEAD, i);
        if (!ev_wait_window(&x, i, window)) break;
        if ((st = natsConnection_Publish(pub, "dtw.ba.b.e", body, len)) != NATS_OK) {
            nats_say("NATS publish", st);
            break;
        }
    }
    if ((st = natsConnection_Flush(pub)) != NATS_OK) nats_say("NATS flush", st);
    r = ev_finish(&x, n, lost, "NATS events");
out:
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(pub);
    natsConnection_Destroy(subc);
    server_stop(&s);
    return r;
}

/* ---- MQTT ---------------------------------------------------------------------- */

typedef struct mq_state {
    atomic_int connected, subscribed; /* 1 yes, -1 refused */
    ev_count *count;
} mq_state;

static void mq_on_connect(struct mosquitto *m, void *arg, int rc)
{
    atomic_store(&((mq_state *)arg)->connected, rc == 0 ? 1 : -1);
}

static void mq_on_subscribe(struct mosquitto *m, void *arg, int mid, int nqos, const int *qos)
{
    atomic_store(&((mq_state *)arg)->subscribed, nqos == 1 && qos[0] == 0 ? 1 : -1);
}

static void mq_on_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg)
{
    ev_seen(((mq_state *)arg)->count);
}

static bool mq_wait(atomic_int *flag)
{
    for (int i = 0; i < 1000 && atomic_load(flag) == 0; i++)
        sleep_us(10000);
    return atomic_load(flag) == 1;
}

/* A client with its network loop on its own thread (mosquitto_loop_start). */
static struct mosquitto *mq_client(const char *id, int port, mq_state *state)
{
    struct mosquitto *m = mosquitto_new(id, true, state);
    if (!m) return NULL;
    mosquitto_connect_callback_set(m, mq_on_connect);
    mosquitto_subscribe_callback_set(m, mq_on_subscribe);
    mosquitto_message_callback_set(m, mq_on_message);
    int rc = mosquitto_connect(m, "127.0.0.1", port, 60);
    if (rc == MOSQ_ERR_SUCCESS) rc = mosquitto_loop_start(m);
    if (rc != MOSQ_ERR_SUCCESS || !mq_wait(&state->connected)) {
        fprintf(stderr, "bench_ref: MQTT client %s: %s\n", id,
                rc ? mosquitto_strerror(rc) : "connection refused or timed out");
        mosquitto_destroy(m);
        return NULL;
    }
    return m;
}

static void mq_close(struct mosquitto *m)
{
    if (!m) return;
    mosquitto_disconnect(m);
    mosquitto_loop_stop(m, false);
    mosquitto_destroy(m);
}

double tw_ref_mqtt_events(const char *workdir, long n, long window, long *lost)
{
    ref_server s = {0};
    ev_count x = {0};
    mq_state subst = {.count = &x}, pubst = {.count = &x};
    struct mosquitto *sub = NULL, *pub = NULL;
    double r = -1;
    *lost = n;
    mosquitto_lib_init();
    if (mqtt_up(&s, workdir)) goto out;
    if (!(sub = mq_client("ref-sub", s.port, &subst))) goto out;
    int rc = mosquitto_subscribe(sub, NULL, "dtw/ba/b/e", 0);
    if (rc != MOSQ_ERR_SUCCESS || !mq_wait(&subst.subscribed)) {
        fprintf(stderr, "bench_ref: MQTT subscribe: %s\n",
                rc ? mosquitto_strerror(rc) : "refused or timed out");
        goto out;
    }
    if (!(pub = mq_client("ref-pub", s.port, &pubst))) goto out;
    for (long i = 0; i < n; i++) {
        char body[256];
        int len = envelope(body, sizeof body, EVENT_HEAD, i);
        if (!ev_wait_window(&x, i, window)) break;
        if ((rc = mosquitto_publish(pub, NULL, "dtw/ba/b/e", len, body, 0, false)) != 0) {
            fprintf(stderr, "bench_ref: MQTT publish: %s\n", mosquitto_strerror(rc));
            break;
        }
    }
    r = ev_finish(&x, n, lost, "MQTT events");
out:
    mq_close(pub);
    mq_close(sub);
    server_stop(&s);
    mosquitto_lib_cleanup();
    return r;
}

#else /* !TW_BENCH_REFS */

static int not_built(void)
{
    fprintf(stderr, "bench_ref: NATS and MQTT references not built: install libnats-dev "
                    "libmosquitto-dev (tools/install-deps.sh --bench) and reconfigure\n");
    return -1;
}

int tw_ref_nats_rtt(const char *workdir, long n, double *p50, double *p99)
{
    return not_built();
}

double tw_ref_nats_events(const char *workdir, long n, long window, long *lost)
{
    *lost = n;
    return not_built();
}

double tw_ref_mqtt_events(const char *workdir, long n, long window, long *lost)
{
    *lost = n;
    return not_built();
}

#endif

void tw_ref_report_rtt(const char *scenario, const char *workdir, long n)
{
    double p50, p99;
    if (tw_ref_nats_rtt(workdir, n, &p50, &p99) != 0) return;
    tw_bench_report(scenario, "reference_nats_p50", p50, "us");
    tw_bench_report(scenario, "reference_nats_p99", p99, "us");
}

void tw_ref_report_events(const char *scenario, const char *workdir, long n, long window)
{
    long lost;
    double r = tw_ref_nats_events(workdir, n, window, &lost);
    if (r >= 0) {
        tw_bench_report(scenario, "reference_nats_per_s", r, "1/s");
        tw_bench_report(scenario, "reference_nats_lost", (double)lost, "events");
    }
#ifdef TW_BENCH_REFS /* else the line saying what to install was printed once above */
    r = tw_ref_mqtt_events(workdir, n, window, &lost);
    if (r >= 0) {
        tw_bench_report(scenario, "reference_mosquitto_per_s", r, "1/s");
        tw_bench_report(scenario, "reference_mosquitto_lost", (double)lost, "events");
    }
#endif
}
