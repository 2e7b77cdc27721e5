/*
 * bench_relay.c - the floor of nng_rtt on this machine: the same four hops
 * (consumer -> middle -> agent -> middle -> consumer) over plain loopback
 * TCP with nothing done in the middle but copying bytes.
 *
 * nng_rtt's target (60 us p50) is an absolute number, and this machine's
 * speed changes from minute to minute. So that every run says how much of
 * a round trip the hops themselves cost, the relay runs in the same run:
 * a middle thread with one epoll set forwards whatever the consumer writes
 * to the agent and back (as twind's poller threads do, without parsing,
 * routing or storing), an agent thread echoes with blocking reads and
 * writes (as libtwin's socket transport does), and the calling thread
 * times each round trip of a line of msg_len bytes, one at a time, with
 * TCP_NODELAY everywhere. It is a floor, not a model of twind: twind also
 * parses, authorizes and records every message (and answers `delivered` to
 * a consumer that does not say "progress": false).
 */
#include "bench_relay.h"

#include "runtime/tw.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct relay {
    int lst;
    int mid_cons, mid_agent; /* the middle's ends */
    int agent;               /* the agent's end */
} relay;

static void nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int dial(const struct sockaddr_in *a)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (const struct sockaddr *)a, sizeof *a)) {
        close(fd);
        return -1;
    }
    nodelay(fd);
    return fd;
}

static int write_all(int fd, const char *b, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, b, n);
        if (k <= 0) return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

/* The middle: copies bytes from each end to the other until one closes. */
static void *middle_main(void *arg)
{
    relay *r = arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return NULL;
    struct epoll_event e = {.events = EPOLLIN};
    e.data.fd = r->mid_cons;
    epoll_ctl(ep, EPOLL_CTL_ADD, r->mid_cons, &e);
    e.data.fd = r->mid_agent;
    epoll_ctl(ep, EPOLL_CTL_ADD, r->mid_agent, &e);
    char buf[65536];
    for (bool open = true; open;) {
        struct epoll_event ev[2];
        int n = epoll_wait(ep, ev, 2, -1);
        for (int i = 0; i < n && open; i++) {
            int from = ev[i].data.fd, to = from == r->mid_cons ? r->mid_agent : r->mid_cons;
            ssize_t k = read(from, buf, sizeof buf);
            open = k > 0 && write_all(to, buf, (size_t)k) == 0;
        }
    }
    close(ep);
    return NULL;
}

/* The agent: echoes until the middle closes. */
static void *agent_main(void *arg)
{
    relay *r = arg;
    char buf[65536];
    ssize_t k;
    while ((k = read(r->agent, buf, sizeof buf)) > 0)
        if (write_all(r->agent, buf, (size_t)k)) break;
    return NULL;
}

static int cmp_lat(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int relay_open(relay *r, int *cons)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    r->lst = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (r->lst < 0 || bind(r->lst, (struct sockaddr *)&a, sizeof a) || listen(r->lst, 4) ||
        getsockname(r->lst, (struct sockaddr *)&a, &len))
        return -1;
    /* accept() returns them in the order they connected */
    if ((*cons = dial(&a)) < 0 || (r->mid_cons = accept(r->lst, NULL, NULL)) < 0) return -1;
    if ((r->agent = dial(&a)) < 0 || (r->mid_agent = accept(r->lst, NULL, NULL)) < 0) return -1;
    nodelay(r->mid_cons);
    nodelay(r->mid_agent);
    return 0;
}

static void relay_close(relay *r)
{
    if (r->lst >= 0) close(r->lst);
    if (r->mid_cons >= 0) close(r->mid_cons);
    if (r->mid_agent >= 0) close(r->mid_agent);
    if (r->agent >= 0) close(r->agent);
}

int tw_ref_relay_rtt(long n, size_t msg_len, double *p50, double *p99)
{
    *p50 = *p99 = 0;
    if (n < 1 || msg_len < 1 || msg_len > 4096) return -1;
    relay r = {.lst = -1, .mid_cons = -1, .mid_agent = -1, .agent = -1};
    int cons = -1;
    int64_t *lat = calloc((size_t)n, sizeof *lat);
    char *msg = malloc(msg_len), *in = malloc(msg_len);
    int rc = lat && msg && in ? relay_open(&r, &cons) : -1;
    pthread_t mid, ag;
    bool mid_up = false, ag_up = false;
    if (rc == 0) {
        mid_up = pthread_create(&mid, NULL, middle_main, &r) == 0;
        ag_up = pthread_create(&ag, NULL, agent_main, &r) == 0;
        if (!mid_up || !ag_up) rc = -1;
    }
    if (rc == 0) {
        memset(msg, 'x', msg_len);
        msg[msg_len - 1] = '\n';
        for (long i = -n / 10; i < n && rc == 0; i++) { /* n/10 untimed first */
            int64_t t0 = tw_mono_us();
            rc = write_all(cons, msg, msg_len);
            for (size_t got = 0; rc == 0 && got < msg_len;) {
                ssize_t k = read(cons, in, msg_len - got);
                if (k <= 0) rc = -1;
                got += k > 0 ? (size_t)k : 0;
            }
            if (i >= 0) lat[i] = tw_mono_us() - t0;
        }
    }
    if (cons >= 0) shutdown(cons, SHUT_RDWR); /* the middle sees EOF, closes, the agent too */
    if (r.mid_cons >= 0) shutdown(r.mid_cons, SHUT_RDWR);
    if (r.mid_agent >= 0) shutdown(r.mid_agent, SHUT_RDWR);
    if (mid_up) pthread_join(mid, NULL);
    if (ag_up) pthread_join(ag, NULL);
    if (rc == 0) {
        qsort(lat, (size_t)n, sizeof *lat, cmp_lat);
        *p50 = (double)lat[n / 2];
        *p99 = (double)lat[n * 99 / 100];
    }
    if (cons >= 0) close(cons);
    relay_close(&r);
    free(lat);
    free(msg);
    free(in);
    return rc;
}
