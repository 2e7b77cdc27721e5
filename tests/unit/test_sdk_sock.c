/*
 * test_sdk_sock.c - libtwin's socket transport (agents/sdk/transport_sock.c)
 * against real sockets: a tiny fake server thread in this process listens
 * on loopback TCP (IPv4, IPv6 when the machine has it) or a Unix socket,
 * accepts one connection and runs a script of reads and writes, stepping
 * in lockstep with the test where the order matters.
 *
 * What they pin down: lines come out whole however the bytes are cut into
 * reads (and empty lines are skipped); a line longer than TW_SOCK_MAX_LINE
 * fails the receive, after which the client's shutdown ends the link for
 * the peer; shutdown from another thread makes a blocked recv and a blocked
 * send return at once, and is idempotent; writing to a link the peer
 * closed fails without SIGPIPE; connect fails fast with TW_EOFFLINE on a
 * closed port or a missing ipc:// socket, and with TW_ETIMEDOUT within its
 * timeout on a listener that never answers; ipc:// absolute and relative
 * paths, tcp://[::1]:port and tcp://localhost:port work; tcp:// and ipc://
 * are routed to this transport, tls+tcp:// to nng.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "agents/sdk/transport.h"
#include "tw_test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define SAFETY_MS 20000 /* a generous bound on waits that must not hang */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the fake server ----------------------------------------------------------------- */

typedef struct srv srv;
typedef void (*script_fn)(srv *s, int fd);

struct srv {
    int lfd;
    char url[700];
    script_fn script;
    pthread_t thr;
    pthread_mutex_t mtx;
    pthread_cond_t cond;
    int step; /* advanced by the test (go) and by the script (done) */
    int result;
};

/* Blocks until step reaches n (or the safety limit, which fails). */
static void wait_step(srv *s, int n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += SAFETY_MS / 1000;
    pthread_mutex_lock(&s->mtx);
    while (s->step < n)
        if (pthread_cond_timedwait(&s->cond, &s->mtx, &ts)) break;
    int got = s->step;
    pthread_mutex_unlock(&s->mtx);
    if (got < n) fail_msg("step %d never came (at %d)", n, got);
}

static void set_step(srv *s, int n)
{
    pthread_mutex_lock(&s->mtx);
    s->step = n;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mtx);
}

static bool write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

static bool write_str(int fd, const char *s)
{
    return write_all(fd, s, strlen(s));
}

/* Reads until the bytes so far end with want (false at EOF or error). */
static bool read_until(int fd, const char *want)
{
    char buf[256];
    size_t len = 0, wl = strlen(want);
    for (;;) {
        ssize_t n = read(fd, buf + len, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        len++;
        if (len >= wl && memcmp(buf + len - wl, want, wl) == 0) return true;
        if (len == sizeof buf) len = 0;
    }
}

/* Reads until EOF or an error: true when the peer ended the link. */
static bool read_to_end(int fd)
{
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return n == 0 || errno == ECONNRESET;
    }
}

static void *srv_main(void *arg)
{
    srv *s = arg;
    int fd;
    do
        fd = accept(s->lfd, NULL, NULL);
    while (fd < 0 && errno == EINTR);
    if (fd >= 0) {
        s->script(s, fd);
        close(fd);
    }
    return NULL;
}

static void srv_run(srv *s, script_fn script)
{
    s->script = script;
    pthread_mutex_init(&s->mtx, NULL);
    pthread_cond_init(&s->cond, NULL);
    assert_int_equal(listen(s->lfd, 8), 0);
    assert_int_equal(pthread_create(&s->thr, NULL, srv_main, s), 0);
}

/* A fake server on 127.0.0.1 (or ::1 with v6); false when the address does
 * not exist on this machine. */
static bool srv_start_tcp(srv *s, bool v6, script_fn script)
{
    memset(s, 0, sizeof *s);
    s->lfd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->lfd < 0) return false;
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        sl = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof *a;
    }
    if (bind(s->lfd, (struct sockaddr *)&ss, sl) != 0) {
        close(s->lfd);
        return false;
    }
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&ss, &sl), 0);
    int port =
        ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    snprintf(s->url, sizeof s->url, v6 ? "tcp://[::1]:%d" : "tcp://127.0.0.1:%d", port);
    srv_run(s, script);
    return true;
}

/* A fake server on the Unix socket at path; url is ipc://<url_path>. */
static void srv_start_ipc(srv *s, const char *path, const char *url_path, script_fn script)
{
    memset(s, 0, sizeof *s);
    s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s->lfd >= 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    assert_true(strlen(path) < sizeof sun.sun_path);
    strcpy(sun.sun_path, path);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&sun, sizeof sun), 0);
    snprintf(s->url, sizeof s->url, "ipc://%s", url_path);
    srv_run(s, script);
}

static void srv_stop(srv *s)
{
    pthread_join(s->thr, NULL);
    close(s->lfd);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mtx);
}

static tw_transport *dial(const char *url, int timeout_ms)
{
    tw_client_opts o = {.url = url};
    tw_transport *t = NULL;
    int rc = tw_transport_sock.connect(&o, timeout_ms, &t);
    if (rc) fail_msg("connect %s: %s", url, tw_strerror(rc));
    return t;
}

static void expect_line(tw_transport *t, const char *want)
{
    const char *line;
    size_t n;
    int rc = tw_transport_sock.recv(t, &line, &n);
    if (rc) fail_msg("recv: %s (wanted '%s')", tw_strerror(rc), want);
    if (n != strlen(want) || memcmp(line, want, n) != 0)
        fail_msg("got '%.*s', wanted '%s'", (int)n, line, want);
}

/* ---- lines ------------------------------------------------------------------------- */

/* Lines cut across reads, several in one read, byte by byte, empty and CRLF
 * lines; then a line the client sends, echoed; then the end. */
static void script_lines(srv *s, int fd)
{
    write_str(fd, "{\"a\":1}\n{\"b\":"); /* the second line's start ... */
    wait_step(s, 1);                     /* ... read (the first line came out) */
    write_str(fd, "2}\n\n\r\n{\"c\":3}\n{\"d\":4}\n{\"e\":5}\n");
    wait_step(s, 2);
    const char *slow = "{\"f\":\"byte by byte\"}\n";
    for (const char *p = slow; *p; p++)
        write_all(fd, p, 1);
    /* a line bigger than the transport's first buffer (128 KiB) */
    size_t big = 300 * 1024;
    char *b = malloc(big + 2);
    memset(b, 'x', big);
    b[0] = '"';
    b[big - 1] = '"';
    b[big] = '\n';
    write_all(fd, b, big + 1);
    free(b);
    if (read_until(fd, "{\"ping\":1}\n")) write_str(fd, "{\"pong\":1}\n");
    set_step(s, 3);
}

static void test_lines(void **state)
{
    (void)state;
    srv s;
    assert_true(srv_start_tcp(&s, false, script_lines));
    tw_transport *t = dial(s.url, 5000);
    expect_line(t, "{\"a\":1}");
    set_step(&s, 1);
    expect_line(t, "{\"b\":2}");
    expect_line(t, "{\"c\":3}");
    expect_line(t, "{\"d\":4}");
    expect_line(t, "{\"e\":5}");
    set_step(&s, 2);
    expect_line(t, "{\"f\":\"byte by byte\"}");
    const char *line;
    size_t n;
    assert_int_equal(tw_transport_sock.recv(t, &line, &n), 0);
    assert_int_equal(n, 300 * 1024);
    assert_int_equal(line[0], '"');
    assert_int_equal(line[1], 'x');
    assert_int_equal(line[n - 1], '"');
    assert_int_equal(tw_transport_sock.send(t, "{\"ping\":1}\n", 11), 0);
    expect_line(t, "{\"pong\":1}");
    /* the server closes after the pong: the end of the link */
    assert_int_equal(tw_transport_sock.recv(t, &line, &n), TW_ECLOSED);
    srv_stop(&s);
    tw_transport_sock.free(t);
}

/* More than TW_SOCK_MAX_LINE bytes without a '\n'; then whether the client
 * ended the link. */
static void script_long_line(srv *s, int fd)
{
    size_t chunk = 1u << 20;
    char *b = malloc(chunk);
    memset(b, 'y', chunk);
    b[0] = '{';
    bool ok = true;
    for (size_t sent = 0; ok && sent <= TW_SOCK_MAX_LINE; sent += chunk)
        ok = write_all(fd, b, chunk);
    free(b);
    shutdown(fd, SHUT_WR); /* a client without the limit would see the end */
    s->result = read_to_end(fd) ? 1 : -1;
    set_step(s, 1);
}

static void test_line_too_long(void **state)
{
    (void)state;
    srv s;
    assert_true(srv_start_tcp(&s, false, script_long_line));
    tw_transport *t = dial(s.url, 5000);
    const char *line;
    size_t n;
    assert_int_equal(tw_transport_sock.recv(t, &line, &n), TW_ETOOBIG);
    /* what client.c does with a failed recv: shut the link down and free it
     * (the close also resets the server's write, blocked on a full window) */
    tw_transport_sock.shutdown(t);
    tw_transport_sock.free(t);
    wait_step(&s, 1);
    assert_int_equal(s.result, 1); /* the server saw the link end */
    srv_stop(&s);
}

/* ---- shutdown ---------------------------------------------------------------------- */

typedef struct blocked {
    tw_transport *t;
    bool send; /* a send of len bytes that cannot finish, else a recv */
    size_t len;
    int rc;
    bool done;
    pthread_mutex_t mtx;
    pthread_cond_t cond;
} blocked;

static void *blocked_main(void *arg)
{
    blocked *b = arg;
    int rc;
    if (b->send) {
        char *buf = malloc(b->len);
        memset(buf, 'z', b->len);
        rc = tw_transport_sock.send(b->t, buf, b->len);
        free(buf);
    } else {
        const char *line;
        size_t n;
        rc = tw_transport_sock.recv(b->t, &line, &n);
    }
    pthread_mutex_lock(&b->mtx);
    b->rc = rc;
    b->done = true;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->mtx);
    return NULL;
}

/* Nothing to read, nothing read: the test's operations block until it
 * shuts the link down; then whether the end reached the server. */
static void script_silent(srv *s, int fd)
{
    wait_step(s, 1);
    s->result = read_to_end(fd) ? 1 : -1;
    set_step(s, 2);
}

/* Starts a blocking operation on another thread, shuts the link down from
 * this one, and returns the operation's result (failing if it never ends). */
static int shutdown_blocked(tw_transport *t, bool send, size_t len)
{
    blocked b = {.t = t, .send = send, .len = len};
    pthread_mutex_init(&b.mtx, NULL);
    pthread_cond_init(&b.cond, NULL);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, blocked_main, &b), 0);
    /* give the operation time to block; if it has not yet, it must still
     * fail at once when it starts, so the result does not depend on it */
    struct timespec pause = {0, 50 * 1000000};
    nanosleep(&pause, NULL);
    pthread_mutex_lock(&b.mtx);
    bool early = b.done;
    pthread_mutex_unlock(&b.mtx);
    if (early) fail_msg("the %s returned before shutdown: %d", send ? "send" : "recv", b.rc);
    int64_t t0 = now_ms();
    tw_transport_sock.shutdown(t);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += SAFETY_MS / 1000;
    pthread_mutex_lock(&b.mtx);
    while (!b.done)
        if (pthread_cond_timedwait(&b.cond, &b.mtx, &ts)) break;
    bool done = b.done;
    pthread_mutex_unlock(&b.mtx);
    if (!done) fail_msg("shutdown did not end the blocked %s", send ? "send" : "recv");
    pthread_join(th, NULL);
    if (now_ms() - t0 > SAFETY_MS / 2)
        fail_msg("shutdown took %lld ms", (long long)(now_ms() - t0));
    pthread_cond_destroy(&b.cond);
    pthread_mutex_destroy(&b.mtx);
    return b.rc;
}

static void test_shutdown_unblocks_recv(void **state)
{
    (void)state;
    srv s;
    assert_true(srv_start_tcp(&s, false, script_silent));
    tw_transport *t = dial(s.url, 5000);
    assert_int_equal(shutdown_blocked(t, false, 0), TW_ECLOSED);
    tw_transport_sock.shutdown(t); /* idempotent */
    const char *line;
    size_t n;
    assert_int_equal(tw_transport_sock.recv(t, &line, &n), TW_ECLOSED);
    assert_int_equal(tw_transport_sock.send(t, "{}\n", 3), TW_ECLOSED);
    set_step(&s, 1);
    wait_step(&s, 2);
    assert_int_equal(s.result, 1);
    srv_stop(&s);
    tw_transport_sock.free(t);
}

static void test_shutdown_unblocks_send(void **state)
{
    (void)state;
    srv s;
    assert_true(srv_start_tcp(&s, false, script_silent));
    tw_transport *t = dial(s.url, 5000);
    /* the server reads nothing: far more than both socket buffers hold */
    assert_int_equal(shutdown_blocked(t, true, 64u << 20), TW_ECLOSED);
    set_step(&s, 1);
    wait_step(&s, 2);
    srv_stop(&s);
    tw_transport_sock.free(t);
}

static void script_close_at_once(srv *s, int fd)
{
    (void)fd;
    set_step(s, 1);
}

/* A peer that closed: writes fail with TW_ECLOSED, and SIGPIPE (left at its
 * default, which kills the process) never comes. */
static void test_send_to_closed_peer(void **state)
{
    (void)state;
    void (*old)(int) = signal(SIGPIPE, SIG_DFL);
    srv s;
    assert_true(srv_start_tcp(&s, false, script_close_at_once));
    tw_transport *t = dial(s.url, 5000);
    wait_step(&s, 1);
    srv_stop(&s); /* the server's end of the connection is closed */
    int rc = 0;
    for (int i = 0; i < 1000 && rc == 0; i++) /* the first write may still succeed */
        rc = tw_transport_sock.send(t, "{\"x\":1}\n", 8);
    assert_int_equal(rc, TW_ECLOSED);
    tw_transport_sock.free(t);
    signal(SIGPIPE, old);
}

/* ---- connect ----------------------------------------------------------------------- */

static void test_connect_refused(void **state)
{
    (void)state;
    /* a port bound but not listening: nobody else can take it meanwhile */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sl), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &sl), 0);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", ntohs(a.sin_port));
    tw_client_opts o = {.url = url};
    tw_transport *t = NULL;
    int64_t t0 = now_ms();
    assert_int_equal(tw_transport_sock.connect(&o, SAFETY_MS, &t), TW_EOFFLINE);
    /* fast: refused, not waited out */
    assert_true(now_ms() - t0 < SAFETY_MS / 2);
    assert_null(t);
    close(fd);
}

/* A short private directory for Unix sockets (sun_path holds 108 bytes,
 * which a build directory's TW_TEST_TMP may exceed). */
static void short_dir(char *dir, size_t n)
{
    snprintf(dir, n, "/tmp/twsock.XXXXXX");
    assert_non_null(mkdtemp(dir));
}

/* A Unix listener whose accept queue is full: a connect to it neither
 * succeeds nor fails (EAGAIN, retried), so only the timeout ends it. The
 * queue of a Unix socket fills deterministically, unlike a TCP listener's,
 * whose fate of further SYNs depends on the kernel's settings. */
static void test_connect_timeout(void **state)
{
    (void)state;
    char dir[64], url[128];
    short_dir(dir, sizeof dir);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s/full.sock", dir);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 0), 0);
    /* fill the queue: connect until the kernel says EAGAIN */
    int fill[64], nfill = 0;
    for (;;) {
        assert_true(nfill < 64);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        fill[nfill++] = fd;
        if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            assert_int_equal(errno, EAGAIN);
            break;
        }
    }
    snprintf(url, sizeof url, "ipc://%s", a.sun_path);
    tw_client_opts o = {.url = url};
    tw_transport *t = NULL;
    int64_t t0 = now_ms();
    int rc = tw_transport_sock.connect(&o, 300, &t);
    int64_t took = now_ms() - t0;
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    close(lfd);
    unlink(a.sun_path);
    rmdir(dir);
    assert_int_equal(rc, TW_ETIMEDOUT);
    assert_null(t);
    assert_true(took >= 290);
    assert_true(took < SAFETY_MS / 2);
}

static void test_bad_urls(void **state)
{
    (void)state;
    static const char *bad[] = {"tcp://127.0.0.1",    "tcp://:80",     "tcp://127.0.0.1:",
                                "tcp://::1:80",       "tcp://[::1]80", "tcp://[::1",
                                "tcp://127.0.0.1:8x", "ipc://",        "http://127.0.0.1:80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tw_client_opts o = {.url = bad[i]};
        tw_transport *t = NULL;
        int rc = tw_transport_sock.connect(&o, 1000, &t);
        if (rc != TW_EINVAL) fail_msg("%s: %s, not TW_EINVAL", bad[i], tw_strerror(rc));
    }
    char longp[300] = "ipc:///";
    memset(longp + 7, 'p', 200);
    tw_client_opts o = {.url = longp};
    tw_transport *t = NULL;
    assert_int_equal(tw_transport_sock.connect(&o, 1000, &t), TW_EINVAL);
}

static void test_routing(void **state)
{
    (void)state;
    assert_ptr_equal(tw_transport_for("tcp://127.0.0.1:8446"), &tw_transport_sock);
    assert_ptr_equal(tw_transport_for("ipc:///run/twind.sock"), &tw_transport_sock);
    assert_ptr_equal(tw_transport_for("tls+tcp://127.0.0.1:8445"), &tw_transport_nng);
    assert_ptr_equal(tw_transport_for("wss://127.0.0.1:8445/x"), &tw_transport_nng);
    assert_null(tw_transport_for("http://127.0.0.1:80"));
}

/* ---- ipc:// and IPv6 --------------------------------------------------------------- */

static void script_echo(srv *s, int fd)
{
    if (read_until(fd, "{\"hi\":1}\n")) write_str(fd, "{\"hello\":1}\n");
    set_step(s, 1);
}

static void roundtrip(srv *s)
{
    tw_transport *t = dial(s->url, 5000);
    assert_int_equal(tw_transport_sock.send(t, "{\"hi\":1}\n", 9), 0);
    expect_line(t, "{\"hello\":1}");
    wait_step(s, 1);
    const char *line;
    size_t n;
    assert_int_equal(tw_transport_sock.recv(t, &line, &n), TW_ECLOSED);
    tw_transport_sock.free(t);
    srv_stop(s);
}

static void test_ipc(void **state)
{
    (void)state;
    char dir[64], path[128], url[160];
    short_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/twind.sock", dir);
    /* nobody there yet: refused, like a closed TCP port */
    snprintf(url, sizeof url, "ipc://%s", path);
    tw_client_opts o = {.url = url};
    tw_transport *t = NULL;
    assert_int_equal(tw_transport_sock.connect(&o, 5000, &t), TW_EOFFLINE);

    srv s;
    srv_start_ipc(&s, path, path, script_echo); /* ipc:///abs/path */
    assert_string_equal(s.url, url);
    roundtrip(&s);
    unlink(path);

    /* ipc://rel/path, relative to the working directory */
    char cwd[1024];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(dir), 0);
    srv_start_ipc(&s, "rel.sock", "rel.sock", script_echo);
    roundtrip(&s);
    assert_int_equal(chdir(cwd), 0);
    tw_test_rmdir(dir);
}

static void test_ipv6_loopback(void **state)
{
    (void)state;
    srv s;
    if (srv_start_tcp(&s, true, script_echo)) {
        roundtrip(&s);
        return;
    }
    /* no IPv6 loopback on this machine: the bracketed address is still
     * parsed, and fails as unreachable rather than as a bad URL */
    tw_client_opts o = {.url = "tcp://[::1]:9"};
    tw_transport *t = NULL;
    int rc = tw_transport_sock.connect(&o, 1000, &t);
    assert_null(t);
    assert_true(rc == TW_EOFFLINE || rc == TW_EIO);
}

/* localhost may resolve to ::1 first while the server is on 127.0.0.1 only:
 * the transport must go on to the next address. */
static void test_localhost(void **state)
{
    (void)state;
    srv s;
    assert_true(srv_start_tcp(&s, false, script_echo));
    const char *port = strrchr(s.url, ':') + 1;
    snprintf(s.url, sizeof s.url, "tcp://localhost:%s", port);
    roundtrip(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines),
        cmocka_unit_test(test_line_too_long),
        cmocka_unit_test(test_shutdown_unblocks_recv),
        cmocka_unit_test(test_shutdown_unblocks_send),
        cmocka_unit_test(test_send_to_closed_peer),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_routing),
        cmocka_unit_test(test_ipc),
        cmocka_unit_test(test_ipv6_loopback),
        cmocka_unit_test(test_localhost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
