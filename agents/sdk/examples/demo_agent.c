/*
 * demo_agent.c - twin-demo-agent: the example agent of libtwin, and the demo
 * Thing a dashboard shows next to a fresh twind.
 *
 * It publishes one Thing ("demo" unless --thing says otherwise) with
 *   properties  uptime (s, of this machine), load (1/5/15 min averages from
 *               /proc/loadavg), interval (ms between updates, writable),
 *               counter (ticks since start)
 *   event       tick {counter, uptime} at every update
 *   actions     echo (returns its input), setInterval (sets interval),
 *               countdown (a slow action: reports progress every 200 ms for
 *               n steps from a worker thread, honours cancel)
 * and updates the properties every `interval` ms.
 *
 * Credentials: --id/--password, --token-file, or --data DIR alone: then it
 * logs in as admin (DIR/admin.password), creates the agent client
 * "demo-agent" through dtw:twind:authn (addClient + issueToken) if
 * DIR/demo-agent.token does not exist yet, saves the token there (0600) and
 * uses it. The URL defaults to the first line of DIR/nng.url with 0.0.0.0
 * replaced by 127.0.0.1, and the CA to DIR/tls/ca.pem.
 *
 *   twin-demo-agent --data ./twind-data
 *   twin-demo-agent --url tls+tcp://host:8445 --ca ca.pem --token-file t.txt
 *
 * Runs until SIGINT/SIGTERM (or --run-ms, for tests).
 */
#include "agents/sdk/libtwin.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static atomic_int interval_ms = 1000;
static atomic_bool stop_flag = false;
static atomic_int workers = 0; /* countdown threads still answering */

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&stop_flag, true);
}

static int read_line(const char *path, char *out, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    if (!fgets(out, (int)n, f)) out[0] = 0;
    fclose(f);
    out[strcspn(out, "\r\n")] = 0;
    return out[0] ? 0 : -1;
}

/* Creates the agent client with the admin account and saves its token. */
static int provision(const char *url, const char *ca, const char *data, const char *agent_id,
                     const char *token_path)
{
    char pw[256], path[1100];
    snprintf(path, sizeof path, "%s/admin.password", data);
    if (read_line(path, pw, sizeof pw)) {
        fprintf(stderr, "demo-agent: cannot read %s\n", path);
        return -1;
    }
    tw_client_opts o = {.url = url, .ca_file = ca, .client_id = "admin", .password = pw};
    tw_client *admin;
    int rc = tw_client_new(&o, &admin);
    if (!rc) rc = tw_client_wait_connected(admin, 10000);
    if (rc) {
        fprintf(stderr, "demo-agent: admin login at %s: %s\n", url, tw_strerror(rc));
        if (admin) tw_client_close(admin);
        return -1;
    }
    tw_action_result res;
    json_t *in = json_pack("{s:s, s:s, s:s, s:s}", "clientID", agent_id, "role", "agent", "kind",
                           "agent", "displayName", "twind demo agent");
    rc = tw_consumer_invoke(admin, "dtw:twind:authn", "addClient", in, 10000, &res);
    json_decref(in);
    tw_action_result_clear(&res);
    if (rc && rc != TW_EEXIST && rc != TW_ECONFLICT)
        fprintf(stderr, "demo-agent: addClient: %s (continuing)\n", tw_strerror(rc));
    in = json_pack("{s:s}", "clientID", agent_id);
    rc = tw_consumer_invoke(admin, "dtw:twind:authn", "issueToken", in, 10000, &res);
    json_decref(in);
    const char *token = json_string_value(json_object_get(res.output, "token"));
    int ret = -1;
    if (rc || !token) {
        fprintf(stderr, "demo-agent: issueToken: %s\n", tw_strerror(rc ? rc : TW_EINVAL));
    } else {
        umask(077);
        FILE *f = fopen(token_path, "w");
        if (f && fprintf(f, "%s\n", token) > 0 && fclose(f) == 0)
            ret = 0;
        else
            fprintf(stderr, "demo-agent: cannot write %s\n", token_path);
    }
    tw_action_result_clear(&res);
    tw_client_close(admin);
    return ret;
}

static json_t *make_td(const char *thing)
{
    return json_pack(
        "{s:s, s:s, s:s, s:s,"
        " s:{s:{s:s, s:s, s:s, s:b, s:b},"
        "    s:{s:s, s:s, s:b, s:b, s:{s:{s:s}, s:{s:s}, s:{s:s}}},"
        "    s:{s:s, s:s, s:s, s:i, s:i, s:b},"
        "    s:{s:s, s:s, s:b, s:b}},"
        " s:{s:{s:s, s:{s:s, s:{s:{s:s}, s:{s:s}}}}},"
        " s:{s:{s:s, s:b}, s:{s:s, s:{s:s, s:i, s:i}}, s:{s:s, s:{s:s, s:i, s:i}}}}",
        "@context", "https://www.w3.org/2022/wot/td/v1.1", "id", thing, "title", "twind demo agent",
        "description", "Live demo values from the machine running the agent", "properties",
        /* uptime */ "uptime", "title", "Uptime", "type", "number", "unit", "s", "readOnly", 1,
        "observable", 1,
        /* load */ "load", "title", "Load average", "type", "object", "readOnly", 1, "observable",
        1, "properties", "m1", "type", "number", "m5", "type", "number", "m15", "type", "number",
        /* interval */ "interval", "title", "Update interval", "type", "integer", "unit", "ms",
        "minimum", 100, "maximum", 60000, "observable", 1,
        /* counter */ "counter", "title", "Updates since start", "type", "integer", "readOnly", 1,
        "observable", 1, "events", "tick", "title", "Tick", "data", "type", "object", "properties",
        "counter", "type", "integer", "uptime", "type", "number", "actions", "echo", "title",
        "Echo the input back", "idempotent", 1, "setInterval", "title", "Set the update interval",
        "input", "type", "integer", "minimum", 100, "maximum", 60000, "countdown", "title",
        "Count down slowly, with progress", "input", "type", "integer", "minimum", 1, "maximum",
        100);
}

/* ---- handlers -------------------------------------------------------------------- */

static void on_echo(void *arg, tw_client *c, tw_req *r)
{
    (void)arg;
    (void)c;
    tw_req_complete(r, tw_req_input(r));
}

static int set_interval(json_t *v)
{
    if (!json_is_integer(v) || json_integer_value(v) < 100 || json_integer_value(v) > 60000)
        return TW_EINVAL;
    atomic_store(&interval_ms, (int)json_integer_value(v));
    return 0;
}

static void on_set_interval(void *arg, tw_client *c, tw_req *r)
{
    (void)arg;
    if (set_interval(tw_req_input(r))) {
        tw_req_fail(r, TW_EINVAL, "interval must be an integer from 100 to 60000 ms");
        return;
    }
    json_t *v = json_integer(atomic_load(&interval_ms));
    tw_agent_publish_property(c, tw_req_thing(r), "interval", v);
    tw_req_complete(r, v);
    json_decref(v);
}

static void on_write_interval(void *arg, tw_client *c, tw_req *r)
{
    on_set_interval(arg, c, r);
}

/* countdown runs on its own thread: the callback thread stays free */
static void *countdown_main(void *arg)
{
    tw_req *r = arg;
    json_int_t n = json_integer_value(tw_req_input(r));
    for (json_int_t i = n; i > 0; i--) {
        if (tw_req_cancelled(r)) {
            tw_req_fail(r, TW_ECONFLICT, "cancelled");
            atomic_fetch_sub(&workers, 1);
            return NULL;
        }
        json_t *p = json_pack("{s:I}", "remaining", (json_int_t)i);
        tw_req_progress(r, p);
        json_decref(p);
        struct timespec ts = {0, 200 * 1000000};
        nanosleep(&ts, NULL);
    }
    json_t *out = json_pack("{s:I}", "counted", n);
    tw_req_complete(r, out);
    json_decref(out);
    atomic_fetch_sub(&workers, 1);
    return NULL;
}

static void on_countdown(void *arg, tw_client *c, tw_req *r)
{
    (void)arg;
    (void)c;
    json_t *in = tw_req_input(r);
    if (!json_is_integer(in) || json_integer_value(in) < 1 || json_integer_value(in) > 100) {
        tw_req_fail(r, TW_EINVAL, "countdown needs an integer from 1 to 100");
        return;
    }
    pthread_t th;
    atomic_fetch_add(&workers, 1);
    if (pthread_create(&th, NULL, countdown_main, r) != 0) {
        atomic_fetch_sub(&workers, 1);
        tw_req_fail(r, TW_ENOMEM, "no thread");
        return;
    }
    pthread_detach(th);
}

static void on_state(void *arg, tw_client *c, tw_client_state s)
{
    (void)arg;
    (void)c;
    fprintf(stderr, "demo-agent: %s\n", tw_client_state_name(s));
}

/* ---- main ------------------------------------------------------------------------- */

static double read_uptime(void)
{
    FILE *f = fopen("/proc/uptime", "r");
    double up = 0;
    if (f) {
        if (fscanf(f, "%lf", &up) != 1) up = 0;
        fclose(f);
    }
    return up;
}

static json_t *read_load(void)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double a = 0, b = 0, c = 0;
    if (f) {
        if (fscanf(f, "%lf %lf %lf", &a, &b, &c) != 3) a = b = c = 0;
        fclose(f);
    }
    return json_pack("{s:f, s:f, s:f}", "m1", a, "m5", b, "m15", c);
}

static void usage(void)
{
    fprintf(stderr, "usage: twin-demo-agent [--data DIR] [--url URL] [--ca FILE] [--id ID]\n"
                    "                       [--password PW | --token-file FILE] [--thing ID]\n"
                    "                       [--interval MS] [--run-ms MS]\n");
}

int main(int argc, char **argv)
{
    const char *data = NULL, *url = NULL, *ca = NULL, *id = NULL, *password = NULL,
               *token_file = NULL, *thing = "demo";
    long run_ms = 0;
    static const struct option opts[] = {{"data", required_argument, 0, 'd'},
                                         {"url", required_argument, 0, 'u'},
                                         {"ca", required_argument, 0, 'c'},
                                         {"id", required_argument, 0, 'i'},
                                         {"password", required_argument, 0, 'p'},
                                         {"token-file", required_argument, 0, 't'},
                                         {"thing", required_argument, 0, 'T'},
                                         {"interval", required_argument, 0, 'n'},
                                         {"run-ms", required_argument, 0, 'r'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'd':
            data = optarg;
            break;
        case 'u':
            url = optarg;
            break;
        case 'c':
            ca = optarg;
            break;
        case 'i':
            id = optarg;
            break;
        case 'p':
            password = optarg;
            break;
        case 't':
            token_file = optarg;
            break;
        case 'T':
            thing = optarg;
            break;
        case 'n':
            atomic_store(&interval_ms, atoi(optarg) < 100 ? 100 : atoi(optarg));
            break;
        case 'r':
            run_ms = atol(optarg);
            break;
        default:
            usage();
            return ch == 'h' ? 0 : 2;
        }
    }
    char urlbuf[300], cabuf[1100], tokbuf[1100];
    if (data && !url) {
        char p[1100];
        snprintf(p, sizeof p, "%s/nng.url", data);
        if (read_line(p, urlbuf, sizeof urlbuf) == 0) {
            char *z = strstr(urlbuf, "0.0.0.0");
            if (z) {
                char rest[300];
                snprintf(rest, sizeof rest, "%s", z + 7);
                snprintf(z, sizeof urlbuf - (size_t)(z - urlbuf), "127.0.0.1%s", rest);
            }
            url = urlbuf;
        } else {
            url = "tls+tcp://127.0.0.1:8445";
        }
    }
    if (data && !ca) {
        snprintf(cabuf, sizeof cabuf, "%s/tls/ca.pem", data);
        ca = cabuf;
    }
    if (!url) {
        usage();
        return 2;
    }
    if (!password && !token_file) {
        if (!data) {
            fprintf(stderr, "demo-agent: give --password, --token-file or --data\n");
            return 2;
        }
        if (!id) id = "demo-agent";
        snprintf(tokbuf, sizeof tokbuf, "%s/%s.token", data, id);
        if (access(tokbuf, R_OK) != 0 && provision(url, ca, data, id, tokbuf) != 0) return 1;
        token_file = tokbuf;
    }

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);

    tw_client_opts o = {.url = url,
                        .ca_file = ca,
                        .client_id = id,
                        .password = password,
                        .token_file = token_file,
                        .on_state = on_state};
    tw_client *c;
    int rc = tw_client_new(&o, &c);
    if (rc) {
        fprintf(stderr, "demo-agent: %s\n", tw_strerror(rc));
        return 1;
    }
    tw_agent_on_action(c, thing, "echo", on_echo, NULL);
    tw_agent_on_action(c, thing, "setInterval", on_set_interval, NULL);
    tw_agent_on_action(c, thing, "countdown", on_countdown, NULL);
    tw_agent_on_write(c, thing, "interval", on_write_interval, NULL);

    json_t *td = make_td(thing);
    char *twin_id = NULL;
    json_t *problem = NULL;
    /* The TD is kept by the client and published at every login; wait for
     * the first to report the twin id (or the problem). */
    if (tw_client_wait_connected(c, 30000) != 0)
        fprintf(stderr, "demo-agent: not connected yet; retrying in the background\n");
    rc = tw_agent_publish_td(c, td, &twin_id, &problem);
    if (rc == 0) {
        printf("demo-agent: publishing %s\n", twin_id ? twin_id : thing);
        fflush(stdout);
    } else {
        char *p = problem ? json_dumps(problem, JSON_COMPACT) : NULL;
        fprintf(stderr, "demo-agent: updatething: %s %s\n", tw_strerror(rc), p ? p : "");
        free(p);
        if (rc != TW_EOFFLINE && rc != TW_ETIMEDOUT && rc != TW_ECLOSED) {
            json_decref(problem);
            json_decref(td);
            tw_client_close(c);
            return 1;
        }
    }
    free(twin_id);
    json_decref(problem);
    json_decref(td);

    json_int_t counter = 0;
    int64_t start = tw_mono_us();
    int64_t last_interval = -1;
    while (!atomic_load(&stop_flag)) {
        if (run_ms > 0 && tw_mono_us() - start > run_ms * 1000) break;
        double up = read_uptime();
        json_t *v = json_real(up);
        tw_agent_publish_property(c, thing, "uptime", v);
        json_decref(v);
        v = read_load();
        tw_agent_publish_property(c, thing, "load", v);
        json_decref(v);
        v = json_integer(++counter);
        tw_agent_publish_property(c, thing, "counter", v);
        json_decref(v);
        int iv = atomic_load(&interval_ms);
        if (iv != last_interval) {
            v = json_integer(iv);
            tw_agent_publish_property(c, thing, "interval", v);
            json_decref(v);
            last_interval = iv;
        }
        v = json_pack("{s:I, s:f}", "counter", counter, "uptime", up);
        tw_agent_publish_event(c, thing, "tick", v);
        json_decref(v);
        /* sleep in small steps so a new interval or a signal acts quickly */
        for (int slept = 0; slept < iv && !atomic_load(&stop_flag); slept += 50) {
            struct timespec ts = {0, 50 * 1000000};
            nanosleep(&ts, NULL);
            if (atomic_load(&interval_ms) != iv) break;
        }
    }
    /* answers of running countdowns must leave before the client goes */
    for (int i = 0; i < 200 && atomic_load(&workers) > 0; i++) {
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
    }
    tw_client_close(c);
    return 0;
}
