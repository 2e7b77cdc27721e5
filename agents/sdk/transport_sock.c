/*
 * transport_sock.c - libtwin's socket transport: tcp:// and ipc:// over
 * plain POSIX sockets, carrying newline-delimited envelopes (the wire
 * format of bindings/nng/nng_frame.h). twind's nng listener on tcp:// and
 * ipc:// is a raw byte stream, so it cannot tell this client from one on
 * transport_nng.c. TLS, ws:// and wss:// stay on transport_nng.c.
 *
 * Why: on the nng transport every envelope that arrives costs two thread
 * wake-ups in the client (nng's poller thread sees the socket readable and
 * completes the aio, which wakes our I/O thread waiting on it), and every
 * send goes through nng's completion callbacks. Here the I/O thread itself
 * sleeps in read() and the kernel wakes it directly: one wake-up per
 * arrival, no poller thread, and a send is one write() on the calling
 * thread. Measured with twin-bench nng_rtt (Release, 2 cores, the same
 * twind on tcp://, two runs each): an action round trip consumer -> twind
 * -> agent -> twind -> consumer went from 221/251 us p50 on nng to 155/137
 * us, the asynchronous chain from 213 us to 134/130 us; the whole run (62k
 * requests, twind included) from ~880k voluntary context switches and 20 s
 * of CPU to ~440k and 11 s. Event throughput (nng_events) was within the
 * run-to-run noise of this machine either way.
 *
 * Threading (transport.h): the I/O thread calls recv(), the writer (or a
 * caller on the fast path) calls send(), each blocking on the same socket,
 * which the kernel allows. shutdown() may come from any thread, any number
 * of times: the first call does shutdown(fd, SHUT_RDWR), which makes a
 * blocked read() return 0 and a blocked write() fail at once, and every
 * later read or write fail. It never closes the descriptor: another thread
 * may still be inside read() or write() on it, and a closed number could
 * be reused by an unrelated open() before that thread gets there. free()
 * closes it, after both threads let go.
 *
 * Connect: getaddrinfo (IPv4 and IPv6, "localhost" and "[::1]" work), each
 * address tried in turn with a non-blocking connect within the one
 * deadline, then the socket goes back to blocking mode with TCP_NODELAY and
 * SO_KEEPALIVE. Errors are those of the nng transport for the same
 * situation: refused (or no socket file at an ipc:// path) TW_EOFFLINE, a
 * deadline TW_ETIMEDOUT, a malformed URL or unknown host TW_EINVAL, the
 * rest TW_EIO; client.c retries every one of them with backoff.
 *
 * recv() reads into a growing buffer and hands out one line at a time; a
 * line longer than TW_SOCK_MAX_LINE (both transports' limit, linebuf.c) fails
 * with TW_ETOOBIG, and the client then drops the link. No SIGPIPE, ever:
 * every write is send() with MSG_NOSIGNAL, for ipc:// too.
 */
#include "transport.h"

#include "bindings/nng/nng_frame.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct tw_transport {
    int fd;
    atomic_bool closed;
    tw_linebuf rb;
};

static bool sock_accepts(const char *url)
{
    return strncmp(url, "tcp://", 6) == 0 || strncmp(url, "ipc://", 6) == 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* What the nng transport answers for the same errno (see the top). */
static int map_errno(int e)
{
    switch (e) {
    case 0:
        return 0;
    case ENOMEM:
    case ENOBUFS:
        return TW_ENOMEM;
    case ECONNREFUSED:
    case ENOENT: /* ipc://: nobody has created the socket (nng: refused) */
        return TW_EOFFLINE;
    case ETIMEDOUT:
        return TW_ETIMEDOUT;
    case EPIPE:
    case ECONNRESET:
    case ENOTCONN:
    case ESHUTDOWN:
    case ECONNABORTED:
        return TW_ECLOSED;
    default:
        return TW_EIO;
    }
}

/* Splits "host:port" or "[v6]:port" (the text after tcp://) into host and
 * port; TW_EINVAL when it is not of that form. */
static int split_hostport(const char *hp, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *h = hp, *he, *p;
    if (*hp == '[') {
        h = hp + 1;
        he = strchr(h, ']');
        if (!he || he[1] != ':') return TW_EINVAL;
        p = he + 2;
    } else {
        he = strrchr(hp, ':');
        if (!he) return TW_EINVAL;
        p = he + 1;
        if (memchr(hp, ':', (size_t)(he - hp))) return TW_EINVAL; /* v6 needs [] */
    }
    size_t hl = (size_t)(he - h), pl = strlen(p);
    if (hl == 0 || hl >= hcap || pl == 0 || pl >= pcap) return TW_EINVAL;
    if (strspn(p, "0123456789") != pl) return TW_EINVAL;
    memcpy(host, h, hl);
    host[hl] = 0;
    memcpy(port, p, pl + 1);
    return 0;
}

static int set_blocking(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) return -1;
    return fcntl(fd, F_SETFL, on ? fl & ~O_NONBLOCK : fl | O_NONBLOCK);
}

/* One non-blocking connect, waited for until deadline (-1: none). Returns
 * the connected socket (blocking mode), or -1 with errno set. */
static int dial_one(int family, const struct sockaddr *sa, socklen_t salen, int64_t deadline)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int rv = connect(fd, sa, salen);
    /* a full backlog of a Unix socket says EAGAIN, not EINPROGRESS, and
     * poll cannot wait for room: retry every few ms until the deadline */
    while (rv != 0 && errno == EAGAIN && family == AF_UNIX) {
        if (deadline >= 0 && now_ms() >= deadline) {
            errno = ETIMEDOUT;
            break;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        rv = connect(fd, sa, salen);
    }
    if (rv != 0 && errno == EINPROGRESS) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        for (;;) {
            int ms = -1;
            if (deadline >= 0) {
                int64_t left = deadline - now_ms();
                ms = left > 0 ? (left > 1000000 ? 1000000 : (int)left) : 0;
            }
            int n = poll(&pfd, 1, ms);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) break;
            if (n == 0 && ms != 0) continue; /* the wait was capped: look again */
            if (n == 0) {
                errno = ETIMEDOUT;
                break;
            }
            int err = 0;
            socklen_t el = sizeof err;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0) break;
            errno = err;
            rv = err ? -1 : 0;
            break;
        }
    }
    if (rv != 0 || set_blocking(fd, true) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int dial_ipc(const char *path, int64_t deadline, int *fd)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof sun.sun_path) return TW_EINVAL;
    memcpy(sun.sun_path, path, n + 1);
    *fd = dial_one(AF_UNIX, (struct sockaddr *)&sun, sizeof sun, deadline);
    return *fd < 0 ? map_errno(errno) : 0;
}

static int dial_tcp(const char *hostport, int64_t deadline, int *fd)
{
    char host[256], port[8];
    if (split_hostport(hostport, host, sizeof host, port, sizeof port)) return TW_EINVAL;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int gr = getaddrinfo(host, port, &hints, &res);
    if (gr != 0) {
        if (gr == EAI_MEMORY) return TW_ENOMEM;
        if (gr == EAI_NONAME || gr == EAI_SERVICE || gr == EAI_FAMILY) return TW_EINVAL;
        return TW_EIO; /* EAI_AGAIN and friends: the resolver, not the URL */
    }
    /* every address in turn ("localhost" may be ::1 with twind on 127.0.0.1
     * only); the error is the last one's */
    int rc = TW_EINVAL;
    *fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        *fd = dial_one(ai->ai_family, ai->ai_addr, ai->ai_addrlen, deadline);
        if (*fd >= 0) break;
        rc = map_errno(errno);
        if (rc == TW_ETIMEDOUT) break; /* the deadline is shared */
    }
    freeaddrinfo(res);
    if (*fd < 0) return rc;
    int one = 1;
    /* neither can fail on a connected TCP socket; if one did, the link would
     * still work, only slower or with a later dead-peer detection */
    (void)setsockopt(*fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    (void)setsockopt(*fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    return 0;
}

static void sock_free(tw_transport *t)
{
    if (!t) return;
    if (t->fd >= 0) close(t->fd);
    tw_linebuf_free(&t->rb);
    free(t);
}

static int sock_connect(const tw_client_opts *o, int timeout_ms, tw_transport **out)
{
    if (!o || !o->url || !sock_accepts(o->url)) return TW_EINVAL;
    int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : -1;
    tw_transport *t = calloc(1, sizeof *t);
    if (!t) return TW_ENOMEM;
    t->fd = -1;
    atomic_init(&t->closed, false);
    int rc = tw_linebuf_init(&t->rb);
    if (!rc && strncmp(o->url, "ipc://", 6) == 0)
        rc = dial_ipc(o->url + 6, deadline, &t->fd);
    else if (!rc)
        rc = dial_tcp(o->url + 6, deadline, &t->fd);
    if (rc) {
        sock_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

static int sock_send_n(tw_transport *t, const char *buf, size_t len, size_t *sent)
{
    *sent = 0;
    while (len > 0) {
        if (atomic_load_explicit(&t->closed, memory_order_acquire)) return TW_ECLOSED;
        ssize_t n = send(t->fd, buf, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return atomic_load(&t->closed) ? TW_ECLOSED : map_errno(errno);
        }
        buf += n;
        len -= (size_t)n;
        *sent += (size_t)n;
    }
    return 0;
}

static int sock_send(tw_transport *t, const char *buf, size_t len)
{
    size_t sent;
    return sock_send_n(t, buf, len, &sent);
}

static int sock_recv(tw_transport *t, const char **line, size_t *len)
{
    for (;;) {
        int rc = tw_linebuf_next(&t->rb, line, len);
        if (rc != 0) return rc > 0 ? 0 : rc;
        if (atomic_load_explicit(&t->closed, memory_order_acquire)) return TW_ECLOSED;
        ssize_t n = read(t->fd, t->rb.buf + t->rb.len, t->rb.cap - t->rb.len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return atomic_load(&t->closed) ? TW_ECLOSED : map_errno(errno);
        if (n == 0) return TW_ECLOSED; /* the peer's end, or our shutdown */
        t->rb.len += (size_t)n;
    }
}

static void sock_shutdown(tw_transport *t)
{
    if (!atomic_exchange(&t->closed, true)) shutdown(t->fd, SHUT_RDWR);
}

const tw_transport_ops tw_transport_sock = {
    .name = "sock",
    .accepts = sock_accepts,
    .connect = sock_connect,
    .send = sock_send,
    .send_n = sock_send_n,
    .recv = sock_recv,
    .shutdown = sock_shutdown,
    .free = sock_free,
};
