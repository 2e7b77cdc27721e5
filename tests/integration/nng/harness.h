/*
 * harness.h - a real twind for the nng integration tests: starts the binary
 * (TWIND_PATH, from CMake) on loopback with a fresh data directory, waits
 * for its nng.url, stops and restarts it on the same port; plus helpers to
 * create clients through the admin service and to wait for conditions.
 *
 * Header-only (static functions) because each test program is one file.
 */
#ifndef TW_TEST_NNG_HARNESS_H
#define TW_TEST_NNG_HARNESS_H

#include "agents/sdk/libtwin.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct twind_proc {
    pid_t pid;
    char dir[512];       /* the test's temporary directory */
    char data[600];      /* its data directory */
    char url[300];       /* tls+tcp://127.0.0.1:PORT */
    char plain_url[300]; /* tcp://127.0.0.1:PORT (raw wire tests) */
    char ca[700];        /* data/tls/ca.pem */
    char admin_pw[128];  /* data/admin.password */
    char config[700];    /* optional config file */
    int http_port;       /* plain HTTP on loopback */
} twind_proc;

static void h_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int h_read_line(const char *path, char *out, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    if (!fgets(out, (int)n, f)) out[0] = 0;
    fclose(f);
    out[strcspn(out, "\r\n")] = 0;
    return out[0] ? 0 : -1;
}

/* A fresh directory under $TW_TEST_TMP (or /tmp). */
static int h_mkdtemp(char *out, size_t n, const char *tag)
{
    const char *base = getenv("TW_TEST_TMP");
    if (!base || !base[0]) base = "/tmp";
    mkdir(base, 0700);
    snprintf(out, n, "%s/%s-XXXXXX", base, tag);
    return mkdtemp(out) ? 0 : -1;
}

/* Every twind started, so a failed test (cmocka leaves the test function by
 * longjmp) cannot leave one running: atexit kills what is still there, and
 * each child dies with this process anyway (PR_SET_PDEATHSIG). */
static pid_t h_pids[16];

static void h_kill_all(void)
{
    for (int i = 0; i < 16; i++)
        if (h_pids[i] > 0) {
            kill(h_pids[i], SIGKILL);
            waitpid(h_pids[i], NULL, 0);
            h_pids[i] = 0;
        }
}

static void h_track(pid_t pid, bool add)
{
    static bool registered;
    if (!registered) {
        atexit(h_kill_all);
        registered = true;
    }
    for (int i = 0; i < 16; i++) {
        if (add && h_pids[i] <= 0) {
            h_pids[i] = pid;
            return;
        }
        if (!add && h_pids[i] == pid) {
            h_pids[i] = 0;
            return;
        }
    }
}

/*
 * The same tests over each way a client can reach twind (ctest registers
 * them once per way): TW_E2E_MAIN picks the URL the clients use, "tls"
 * (default: tls+tcp on an nng stream), "tcp" or "ipc" (the binding's own
 * sockets, nng_direct.c, and libtwin's socket transport); TW_E2E_NNG adds
 * members to the config's "nng" section, e.g. `"direct": false` (tcp://
 * and ipc:// on nng streams on the server side too).
 */
static const char *h_nng_extra(void)
{
    const char *e = getenv("TW_E2E_NNG");
    return e ? e : "";
}

static const char *h_main_url(const twind_proc *d, char *buf, size_t n)
{
    const char *m = getenv("TW_E2E_MAIN");
    if (m && strcmp(m, "tcp") == 0) return "tcp://127.0.0.1:0";
    if (m && strcmp(m, "ipc") == 0) {
        snprintf(buf, n, "ipc://%s/twind.sock", d->dir);
        return buf;
    }
    return "tls+tcp://127.0.0.1:0";
}

/* Starts twind. nng_url NULL: the main URL of this run (above) on a free
 * loopback port. */
static int twind_start(twind_proc *d, const char *nng_url)
{
    char main_url[700];
    if (!nng_url) nng_url = h_main_url(d, main_url, sizeof main_url);
    if (!d->config[0] && h_nng_extra()[0]) {
        snprintf(d->config, sizeof d->config, "%s/twind-nng.json", d->dir);
        FILE *cf = fopen(d->config, "w");
        if (!cf) return -1;
        fprintf(cf, "{\"nng\": {%s}}\n", h_nng_extra() + strspn(h_nng_extra(), " ,"));
        fclose(cf);
    }
    char urlfile[700], portfile[700], log[600];
    snprintf(urlfile, sizeof urlfile, "%s/nng.url", d->data);
    snprintf(portfile, sizeof portfile, "%s/http.port", d->data);
    snprintf(log, sizeof log, "%s/twind.log", d->dir);
    unlink(urlfile);
    unlink(portfile);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        const char *argv[20];
        int a = 0;
        argv[a++] = TWIND_PATH;
        argv[a++] = "--data";
        argv[a++] = d->data;
        argv[a++] = "--https";
        argv[a++] = "off";
        argv[a++] = "--http";
        argv[a++] = "127.0.0.1:0";
        argv[a++] = "--nng";
        argv[a++] = nng_url;
        argv[a++] = "--nng";
        argv[a++] = d->plain_url[0] ? d->plain_url : "tcp://127.0.0.1:0";
        argv[a++] = "--log-level";
        argv[a++] = getenv("TW_TEST_LOG") ? getenv("TW_TEST_LOG") : "warn";
        if (d->config[0]) {
            argv[a++] = "--config";
            argv[a++] = d->config;
        }
        argv[a] = NULL;
        execv(TWIND_PATH, (char **)argv);
        _exit(127);
    }
    d->pid = pid;
    h_track(pid, true);
    for (int i = 0; i < 300; i++) { /* 30 s */
        if (h_read_line(urlfile, d->url, sizeof d->url) == 0) break;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            h_track(pid, false);
            d->pid = 0;
            fprintf(stderr, "twind exited early; see %s\n", log);
            return -1;
        }
        h_sleep_ms(100);
    }
    if (!d->url[0]) return -1;
    FILE *uf = fopen(urlfile, "r");
    char line[300];
    if (uf && fgets(line, sizeof line, uf) && fgets(line, sizeof line, uf)) {
        line[strcspn(line, "\r\n")] = 0;
        snprintf(d->plain_url, sizeof d->plain_url, "%s", line);
    }
    if (uf) fclose(uf);
    char port[32];
    for (int i = 0; i < 100 && h_read_line(portfile, port, sizeof port) != 0; i++)
        h_sleep_ms(50);
    d->http_port = atoi(port);
    snprintf(d->ca, sizeof d->ca, "%s/tls/ca.pem", d->data);
    char pwfile[700];
    snprintf(pwfile, sizeof pwfile, "%s/admin.password", d->data);
    return h_read_line(pwfile, d->admin_pw, sizeof d->admin_pw);
}

static int twind_new(twind_proc *d, const char *tag)
{
    memset(d, 0, sizeof *d);
    if (h_mkdtemp(d->dir, sizeof d->dir, tag)) return -1;
    snprintf(d->data, sizeof d->data, "%s/data", d->dir);
    return twind_start(d, NULL);
}

/* Reaps a twind the test killed itself (SIGKILL: no clean stop to check). */
static inline void twind_reap_killed(twind_proc *d)
{
    if (d->pid <= 0) return;
    h_track(d->pid, false);
    int st;
    waitpid(d->pid, &st, 0);
    d->pid = 0;
}

/* Whether twind's log holds s (the log of every start of d). */
static inline bool h_log_has(const twind_proc *d, const char *s)
{
    char log[600], line[4096];
    snprintf(log, sizeof log, "%s/twind.log", d->dir);
    FILE *f = fopen(log, "r");
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f))
        found = strstr(line, s) != NULL;
    if (f) fclose(f);
    return found;
}

/* Stops twind with SIGTERM. A clean stop is part of every test: exit status
 * 0 (under ASan, LeakSanitizer makes a leak a non-zero exit) and no
 * connection still busy at stop. */
static void twind_stop(twind_proc *d)
{
    if (d->pid <= 0) return;
    h_track(d->pid, false);
    kill(d->pid, SIGTERM);
    int st;
    for (int i = 0; i < 200; i++) {
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            d->pid = 0;
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                fprintf(stderr, "twind did not stop cleanly (status %d); see %s/twind.log\n", st,
                        d->dir);
            assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
            assert_false(h_log_has(d, "still busy at stop"));
            return;
        }
        h_sleep_ms(50);
    }
    kill(d->pid, SIGKILL);
    waitpid(d->pid, &st, 0);
    d->pid = 0;
}

/* Restarts on the same URL (same port), so clients can find it again. */
static int twind_restart(twind_proc *d)
{
    char url[300];
    snprintf(url, sizeof url, "%s", d->url);
    twind_stop(d);
    d->url[0] = 0;
    return twind_start(d, url);
}

static tw_client *h_client(const twind_proc *d, const char *id, const char *password)
{
    tw_client_opts o = {.url = d->url,
                        .ca_file = d->ca,
                        .client_id = id,
                        .password = password,
                        .reconnect_min_ms = 50,
                        .reconnect_max_ms = 500,
                        .request_timeout_ms = 10000};
    tw_client *c = NULL;
    if (tw_client_new(&o, &c) != 0) return NULL;
    if (tw_client_wait_connected(c, 15000) != 0) {
        tw_client_close(c);
        return NULL;
    }
    return c;
}

static tw_client *h_admin(const twind_proc *d)
{
    return h_client(d, "admin", d->admin_pw);
}

/* addClient through dtw:twind:authn. */
static int h_add_client(tw_client *admin, const char *id, const char *kind, const char *role,
                        const char *password)
{
    json_t *in = json_pack("{s:s, s:s, s:s, s:s}", "clientID", id, "kind", kind, "role", role,
                           "password", password);
    tw_action_result r;
    int rc = tw_consumer_invoke(admin, "dtw:twind:authn", "addClient", in, 10000, &r);
    json_decref(in);
    tw_action_result_clear(&r);
    return rc;
}

/* Polls cond (a function of arg) every 10 ms for at most ms. */
static bool h_wait(bool (*cond)(void *), void *arg, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        if (cond(arg)) return true;
        h_sleep_ms(10);
    }
    return cond(arg);
}

#endif
