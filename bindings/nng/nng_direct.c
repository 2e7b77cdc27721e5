/*
 * nng_direct.c - the binding's own sockets for tcp:// and ipc:// listeners:
 * listening sockets, accept, and the poller threads that run every direct
 * connection's reads and blocked writes.
 *
 * Why not nng's stream for these two transports
 * ---------------------------------------------
 * The wire is the same byte stream either way (nng's tcp and ipc streams
 * add no framing), so a client cannot tell the difference; what differs is
 * how many threads an envelope passes through. With an nng stream, every
 * receive is finished by nng's poller thread and its callback then runs on
 * a taskq thread (two wake-ups per hop), and every send completes through
 * one more taskq callback. Measured on a 2-core machine: a request/reply
 * between two threads over a bare nng stream takes 41-50 us p50
 * (twin-bench nng_rtt's reference), over a plain socket pair 20 us; an
 * action round trip consumer -> twind -> agent -> twind -> consumer took
 * 230-300 us p50 with nng streams in twind and in libtwin, and 110-120 us
 * once both use plain sockets. On these sockets a received
 * envelope is read, parsed and routed by the thread epoll woke, and the
 * router's writes go straight to the destination socket from the routing
 * thread (one wake-up per hop, no completion callbacks). TLS (tls+tcp://,
 * wss://) and websockets stay on nng, whose TLS layer and websocket
 * framing we do want; `"nng": {"direct": false}` puts tcp:// and ipc://
 * back on nng streams too.
 *
 * Threads: `io_threads` pollers, each with its own epoll set.
 * A connection belongs to one poller for its whole life (assigned round
 * robin at accept), so its events are handled by one thread, in order, and
 * an event can never be in flight on another thread when the connection
 * leaves the epoll set: the poller that sees the connection closing
 * removes it and drops the reference the registration held (nng_conn.c,
 * nconn_on_event). Listening sockets are on the first poller.
 *
 * Busy polling (config nng.poll_spin_us, default 100; 0 is off). Every hop of a
 * round trip that finds its poller asleep pays a wake-up; on the 2-core
 * virtual machine this was measured on (a PVM guest, where switching
 * between processes is dear), one wake-up of twind costs about as much as
 * everything twind does with the envelope. With poll_spin_us set, a poller
 * that has handled events keeps asking epoll (timeout 0) for up to that
 * long before it sleeps, so the answer to the request it just forwarded
 * finds it awake. The budget adapts: a spin that catches nothing halves it
 * (down to 0), and a sleep that ended sooner than poll_spin_us sets it to
 * twice that sleep, so a poller spins only while its traffic actually
 * comes back within the budget, and sparse traffic (a reading a second, a
 * dashboard) costs no CPU at all. At most one poller per two usable CPUs
 * spins at a time (a token; none on one CPU), so spinning pollers never
 * take every core from the threads they wait for. A poller only sees its own connections: a round
 * trip between two connections of different pollers gains less, which is
 * why io_threads is 1 below 4 CPUs (nng_binding.c). Measured with
 * twin-bench nng_rtt on 2 cores, interleaved runs: an action round trip
 * took 93-98 us p50 with two pollers and no spin, 58-76 with one poller
 * spinning up to 100 us, 61-62 with that and store_linger_ms 20 (the
 * defaults now; store.c says why), p99 285-300 / 298-315 / 216-230 us;
 * two pollers spinning on 2 cores made it worse (90 us, twind's CPU per
 * round trip 137 us against 86), hence the token.
 *
 * Connections are level-triggered: EPOLLIN while receiving, EPOLLOUT only
 * while a write is blocked on a full socket buffer (nng_conn.c). The send
 * side is shared with nng streams (the ring, its bound and overflow policy,
 * corking), only the write itself differs.
 */
#include "nng_int.h"
#include "nng_spin.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MOD "nng"
#define MAX_EVENTS 64
#define ACCEPT_BATCH 64
#define ACCEPT_RETRY_MS 100

typedef struct poller {
    nng_direct *dx;
    int ep;     /* epoll set */
    int wakefd; /* eventfd: stop */
    pthread_t th;
    bool started;
    int64_t spin_us;           /* busy-poll budget, adapted (see "Busy polling") */
    uint64_t spins, spin_hits; /* statistics, this thread only */
} poller;

struct nng_direct {
    nng_bind *nb;
    poller *p;
    int np;
    atomic_uint next; /* round robin */
    int spin_max_us;  /* nng.poll_spin_us; 0: never spin */
    int max_spinners; /* pollers that may spin at once */
    atomic_int spinners;
    atomic_bool accept_paused;
    int64_t paused_until; /* mono ms; poller 0 only */
    /* held while accepting and while the listeners close: a connection
     * accepted during stop is in its slot before stop closes them all */
    pthread_mutex_t accept_mu;
};

/* The CPUs this process may run on (its affinity mask, so taskset and
 * cpusets count; CPU quotas of a cgroup do not). */
int nng_usable_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

bool nng_direct_url(const char *url)
{
    return strncmp(url, "tcp://", 6) == 0 || strncmp(url, "ipc://", 6) == 0;
}

/* ---- addresses ------------------------------------------------------------ */

static void format_peer(const struct sockaddr_storage *ss, const char *ipc_path, char *out,
                        size_t n)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        snprintf(out, n, "%s:%u", host, (unsigned)ntohs(a->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        snprintf(out, n, "[%s]:%u", host, (unsigned)ntohs(a->sin6_port));
    } else {
        snprintf(out, n, "ipc:%.58s", ipc_path);
    }
}

/* "tcp://host:port" -> host (brackets removed) and port. */
static int split_hostport(const char *url, char *host, size_t hn, char *port, size_t pn)
{
    const char *h = url + 6;
    const char *colon;
    if (*h == '[') {
        const char *rb = strchr(h, ']');
        if (!rb || rb[1] != ':') return TW_EINVAL;
        snprintf(host, hn, "%.*s", (int)(rb - h - 1), h + 1);
        colon = rb + 1;
    } else {
        colon = strrchr(h, ':');
        if (!colon) return TW_EINVAL;
        snprintf(host, hn, "%.*s", (int)(colon - h), h);
    }
    const char *p = colon + 1;
    size_t plen = strspn(p, "0123456789");
    if (plen == 0 || plen > 5 || (p[plen] && p[plen] != '/')) return TW_EINVAL;
    snprintf(port, pn, "%.*s", (int)plen, p);
    return 0;
}

static int listen_tcp(nng_listener_ent *le)
{
    char host[256], port[8];
    if (split_hostport(le->url, host, sizeof host, port, sizeof port) != 0) {
        tw_log_error(MOD, "%s: expected tcp://host:port", le->url);
        return TW_EINVAL;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gr = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (gr != 0) {
        tw_log_error(MOD, "%s: %s", le->url, gai_strerror(gr));
        return TW_EINVAL;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        tw_log_error(MOD, "cannot listen on %s: %s", le->url, strerror(err));
        return TW_EIO;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int bound = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    le->fd = fd;
    nng_listener_set_bound(le, bound);
    return 0;
}

/*
 * ipc://path: a Unix stream socket at path. A socket file left by a runtime
 * that died is replaced; one that still answers is somebody else's.
 */
static int listen_ipc(nng_listener_ent *le)
{
    const char *path = le->url + 6;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!*path || strlen(path) >= sizeof sa.sun_path) {
        tw_log_error(MOD, "%s: the socket path is empty or too long", le->url);
        return TW_EINVAL;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool alive = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
        if (probe >= 0) close(probe);
        if (alive) {
            tw_log_error(MOD, "cannot listen on %s: another process is listening", le->url);
            return TW_EIO;
        }
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, SOMAXCONN) != 0) {
        tw_log_error(MOD, "cannot listen on %s: %s", le->url, strerror(errno));
        if (fd >= 0) close(fd);
        return TW_EIO;
    }
    le->fd = fd;
    le->unlink_path = true;
    return 0;
}

/* ---- accepting ------------------------------------------------------------ */

static int arm(int ep, int op, int fd, uint32_t events, void *ptr)
{
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    return epoll_ctl(ep, op, fd, &ev);
}

static void accept_one(nng_direct *dx, nng_listener_ent *le, int fd)
{
    nng_bind *nb = dx->nb;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    memset(&ss, 0, sizeof ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0) ss.ss_family = AF_UNIX;
    if (ss.ss_family != AF_UNIX) {
        int one = 1; /* one envelope must not wait for an ACK */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    char remote[64];
    format_peer(&ss, le->url + 6, remote, sizeof remote);
    uint32_t slot, gen;
    nconn *c = NULL;
    if (nng_slot_alloc(nb, le->bound, &slot, &gen) != 0) {
        close(fd);
        return;
    }
    if (nconn_start(nb, NULL, fd, remote, slot, gen, &c) != 0) {
        nng_slot_free(nb, slot);
        close(fd);
        return;
    }
    poller *p = &dx->p[atomic_fetch_add(&dx->next, 1) % (unsigned)dx->np];
    c->ep = p->ep;
    atomic_fetch_add(&nb->nconns, 1);
    nng_slot_set(nb, slot, c);
    nconn_begin(c);
}

static void on_listener(nng_direct *dx, nng_listener_ent *le)
{
    pthread_mutex_lock(&dx->accept_mu);
    for (int i = 0; i < ACCEPT_BATCH && le->fd >= 0 && !atomic_load(&dx->nb->stopping); i++) {
        int fd = accept4(le->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            accept_one(dx, le, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        /* e.g. out of file descriptors: stop listening a little instead of
         * spinning on a socket that stays readable */
        tw_log_warn(MOD, "accept on %s: %s", le->bound, strerror(errno));
        arm(dx->p[0].ep, EPOLL_CTL_MOD, le->fd, 0, le);
        dx->paused_until = tw_mono_us() / 1000 + ACCEPT_RETRY_MS;
        atomic_store(&dx->accept_paused, true);
        break;
    }
    pthread_mutex_unlock(&dx->accept_mu);
}

static void resume_accept(nng_direct *dx)
{
    if (!atomic_exchange(&dx->accept_paused, false)) return;
    nng_bind *nb = dx->nb;
    pthread_mutex_lock(&dx->accept_mu);
    for (int i = 0; i < nb->nls; i++)
        if (nb->ls[i].fd >= 0) arm(dx->p[0].ep, EPOLL_CTL_MOD, nb->ls[i].fd, EPOLLIN, &nb->ls[i]);
    pthread_mutex_unlock(&dx->accept_mu);
}

/* ---- pollers -------------------------------------------------------------- */

static bool take_spin_token(nng_direct *dx)
{
    int k = atomic_load_explicit(&dx->spinners, memory_order_relaxed);
    while (k < dx->max_spinners)
        if (atomic_compare_exchange_weak(&dx->spinners, &k, k + 1)) return true;
    return false;
}

/* Busy-polls for up to the poller's budget (idle_since: when it went idle):
 * the events, or 0 when none came. *spun says whether it spun at all (a
 * budget of 0 or no token: no). */
static int spin_wait(poller *p, struct epoll_event *evs, int64_t idle_since, bool *spun)
{
    nng_direct *dx = p->dx;
    *spun = false;
    if (p->spin_us <= 0 || !take_spin_token(dx)) return 0;
    *spun = true;
    int n;
    while ((n = epoll_wait(p->ep, evs, MAX_EVENTS, 0)) == 0 &&
           tw_mono_us() - idle_since < p->spin_us) {
    }
    atomic_fetch_sub(&dx->spinners, 1);
    p->spins++;
    if (n > 0) p->spin_hits++;
    return n < 0 ? 0 : n;
}

/* The next events: a spin first if the budget allows, then a sleep; the
 * budget follows what happened (nng_spin.h). */
static int next_events(poller *p, struct epoll_event *evs, int timeout)
{
    int64_t max = p->dx->spin_max_us;
    if (!max) return epoll_wait(p->ep, evs, MAX_EVENTS, timeout);
    int64_t idle_since = tw_mono_us();
    bool spun;
    int n = spin_wait(p, evs, idle_since, &spun);
    if (n > 0) {
        p->spin_us = nng_spin_update(p->spin_us, true, true, 0, max);
        return n;
    }
    n = epoll_wait(p->ep, evs, MAX_EVENTS, timeout);
    if (n > 0)
        p->spin_us = nng_spin_update(p->spin_us, spun, false, tw_mono_us() - idle_since, max);
    return n;
}

static void *poller_main(void *arg)
{
    poller *p = arg;
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int timeout =
            atomic_load(&p->dx->accept_paused) && p == &p->dx->p[0] ? ACCEPT_RETRY_MS : -1;
        int n = next_events(p, evs, timeout);
        if (n < 0 && errno != EINTR) {
            tw_log_error(MOD, "epoll_wait: %s", strerror(errno));
            return NULL;
        }
        if (p == &p->dx->p[0] && atomic_load(&p->dx->accept_paused) &&
            tw_mono_us() / 1000 >= p->dx->paused_until)
            resume_accept(p->dx);
        for (int i = 0; i < n; i++) {
            int *kind = evs[i].data.ptr;
            if (!kind) { /* the stop eventfd */
                if (p->spins)
                    tw_log_debug(MOD, "poller %d: %llu spins, %llu caught an event",
                                 (int)(p - p->dx->p), (unsigned long long)p->spins,
                                 (unsigned long long)p->spin_hits);
                nconn_thread_done();
                return NULL;
            }
            if (*kind == TW_NNG_PE_LISTENER)
                on_listener(p->dx, (nng_listener_ent *)(void *)kind);
            else
                nconn_on_event((nconn *)(void *)kind, evs[i].events);
        }
    }
}

int nng_direct_new(nng_bind *nb, int threads, int spin_us, nng_direct **out)
{
    nng_direct *dx = calloc(1, sizeof *dx);
    if (!dx) return TW_ENOMEM;
    dx->nb = nb;
    dx->np = threads;
    dx->spin_max_us = spin_us;
    dx->max_spinners = nng_usable_cpus() / 2; /* none on 1 CPU */
    atomic_init(&dx->spinners, 0);
    pthread_mutex_init(&dx->accept_mu, NULL);
    dx->p = calloc((size_t)threads, sizeof *dx->p);
    if (!dx->p) {
        free(dx);
        return TW_ENOMEM;
    }
    for (int i = 0; i < threads; i++) {
        dx->p[i].ep = dx->p[i].wakefd = -1;
        dx->p[i].dx = dx;
    }
    *out = dx;
    return 0;
}

int nng_direct_start(nng_direct *dx)
{
    for (int i = 0; i < dx->np; i++) {
        poller *p = &dx->p[i];
        p->ep = epoll_create1(EPOLL_CLOEXEC);
        p->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (p->ep < 0 || p->wakefd < 0 ||
            arm(p->ep, EPOLL_CTL_ADD, p->wakefd, EPOLLIN, NULL) != 0) {
            tw_log_error(MOD, "epoll: %s", strerror(errno));
            return TW_EIO;
        }
        if (pthread_create(&p->th, NULL, poller_main, p) != 0) return TW_ENOMEM;
        p->started = true;
    }
    return 0;
}

int nng_direct_listen(nng_direct *dx, nng_listener_ent *le)
{
    le->pe_kind = TW_NNG_PE_LISTENER;
    int rc = strncmp(le->url, "ipc://", 6) == 0 ? listen_ipc(le) : listen_tcp(le);
    if (rc != 0) return rc;
    if (arm(dx->p[0].ep, EPOLL_CTL_ADD, le->fd, EPOLLIN, le) != 0) {
        tw_log_error(MOD, "%s: epoll: %s", le->url, strerror(errno));
        return TW_EIO;
    }
    tw_log_info(MOD, "listening on %s (direct sockets)", le->bound);
    return 0;
}

void nng_direct_close_listeners(nng_direct *dx)
{
    nng_bind *nb = dx->nb;
    pthread_mutex_lock(&dx->accept_mu);
    for (int i = 0; i < nb->nls; i++) {
        nng_listener_ent *le = &nb->ls[i];
        if (le->fd < 0) continue;
        epoll_ctl(dx->p[0].ep, EPOLL_CTL_DEL, le->fd, NULL);
        close(le->fd);
        le->fd = -1;
        if (le->unlink_path) unlink(le->url + 6);
    }
    pthread_mutex_unlock(&dx->accept_mu);
}

void nng_direct_stop(nng_direct *dx)
{
    for (int i = 0; i < dx->np; i++) {
        poller *p = &dx->p[i];
        if (p->started) {
            uint64_t one = 1;
            if (write(p->wakefd, &one, sizeof one) < 0)
                tw_log_warn(MOD, "eventfd: %s", strerror(errno));
            pthread_join(p->th, NULL);
            p->started = false;
        }
        if (p->ep >= 0) close(p->ep);
        if (p->wakefd >= 0) close(p->wakefd);
        p->ep = p->wakefd = -1;
    }
}

void nng_direct_free(nng_direct *dx)
{
    if (!dx) return;
    pthread_mutex_destroy(&dx->accept_mu);
    free(dx->p);
    free(dx);
}
