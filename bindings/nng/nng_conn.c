/*
 * nng_conn.c - one nng connection: its byte stream, the newline-delimited
 * envelope framing (nng_frame.h) and its bounded send queue.
 *
 * Receiving: one receive aio is always in flight while the connection is
 * open. Bytes land in a growing buffer (at most max_body plus one chunk);
 * every complete line is parsed with tw_msg_parse() and handed to
 * tw_router_handle() on the nng callback thread, in order. The next receive
 * is only started once the whole chunk is handled, so a peer that sends
 * faster than the router runs is slowed down by TCP, not buffered without
 * bound. A malformed envelope is answered with an RFC 9457 problem (with the
 * request's correlationID when it can be read); a line longer than max_body
 * gets a 413 problem and the connection is closed.
 *
 * Sending: tw_binding_ops.send() may come from any thread. The message is
 * appended (one reference) to a ring of send_queue entries. If no stream
 * send is in flight, the caller gathers everything queued (up to
 * TW_NNG_BATCH_MAX bytes) into one buffer and starts it; the send callback
 * continues with whatever was queued meanwhile. So a single message leaves
 * at once, and a burst leaves in few large writes: batching costs no latency.
 * On top of that, messages produced while a receive callback handles one
 * chunk are corked per destination and written when the chunk is done (see
 * "Corking" below): one write per destination per received chunk. A chunk
 * of a single line is not corked: its messages leave as they are made.
 *
 * Overflow policy: the queue is bounded twice, in messages (the ring,
 * nng.send_queue, default 16384) and in bytes (nng.send_queue_bytes,
 * default 64 MiB or twice max_body if that is more): a message is counted
 * once, by its encoded length plus the newline, when it is queued, and its
 * bytes are released as they are written (a batch being written still holds
 * what has not left; a partial write releases what did). The bytes bound is
 * what keeps memory in check: a client that pipelines requests with large
 * answers (getThing of a big TD) and never reads would otherwise make twind
 * hold up to send_queue encoded answers. A message that would pass either
 * bound is refused (TW_EFULL) and the connection is closed ("slow
 * consumer", logged with the bound). A message larger than the whole bytes
 * bound is accepted when nothing else is queued, so a big answer to a peer
 * that reads is never refused. Sends that are not bounded (the housekeeping
 * thread's problem to a refused client certificate) may pass the bounds by
 * a little: a message of at most UNBOUNDED_MAX bytes, up to UNBOUNDED_SLACK
 * bytes over, the ring grown at most to twice its size; beyond that they
 * are refused like the rest. Nothing is dropped silently and nothing is
 * resent: the peer sees the disconnect, reconnects, and resumes from
 * durable state (its queued actions drain again, its inbox replays from its
 * cursor, action status can be queried).
 *
 * Write deadlines (nng.write_timeout_ms, default 30000): a write that waits
 * for the peer (a direct socket's full buffer, an nng stream send in
 * flight) and makes no progress for that long, and a connection that is to
 * close once its queue is written (the 413 case) but is still open that
 * long after, are closed by the housekeeping thread (nconn_overdue). Else
 * a peer that never reads would keep its slot, its queue and its socket
 * for ever: a blocked direct write has no timeout of its own, and a
 * connection that stopped reading never sees the peer go.
 *
 * A dead TLS stream (nng 1.5.2's TLS layer, also under wss://): after
 * handing us a chunk, the layer reads the socket again on its own. If that
 * read meets the end of the connection (a FIN without the peer's
 * close_notify: a killed client, or one closing in a hurry as libtwin did,
 * see its transport_nng.c) while none of our receives is outstanding, while
 * rx_cb handles the chunk, nng closes the socket's aios but remembers
 * nothing: our next receive starts a socket read on a closed aio, which
 * nni_aio_begin() refuses without a callback, and it never completes.
 * Sends are swallowed likewise. The connection then stayed open for ever,
 * and an agent that had closed stayed online: its RPCs timed out instead
 * of failing at once as not connected, its actions were "delivered"
 * instead of queued (found by test_nng_e2e's offline_queue on a loaded
 * machine: a login of 80 ms is a wide window). The socket itself is closed
 * and has no peer any more, so the housekeeping thread asks it for its
 * peer's address (nconn_peer_lost) when a receive has been outstanding for
 * PROBE_MS, and again every PROBE_MS; a failure closes the connection.
 * One getpeername() per idle TLS connection per second, on streams where
 * it worked at the start (a stream that answers NNG_OPT_TLS_VERIFIED: plain
 * nng streams and direct sockets need none, epoll sees their hang-up).
 */
#include "nng_int.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MOD "nng"

/* Unbounded sends: the largest message, and how far past the bytes bound
 * they may go ("Overflow policy"). */
#define UNBOUNDED_MAX (16u * 1024u)
#define UNBOUNDED_SLACK (64u * 1024u)

/* A receive outstanding this long gets its socket probed ("A dead TLS
 * stream"), and again as often. */
#define PROBE_MS 1000

static void rx_cb(void *arg);

/* The peer hung up or we closed: an ordinary end, not worth a log line. */
static bool peer_gone(int rv)
{
    return rv == NNG_ECLOSED || rv == NNG_ECONNSHUT || rv == NNG_ECONNRESET ||
           rv == NNG_ECONNREFUSED || rv == NNG_ECANCELED;
}
static void tx_cb(void *arg);
static void rx_start(nconn *c);

nconn *nconn_ref(nconn *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void nconn_unref(nconn *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1) return;
    /* Last reference: possibly inside one of our own aio callbacks, where the
     * aio cannot be freed. The housekeeping thread does it. */
    nng_reap_push(c->nb, c);
}

void nconn_free(nconn *c)
{
    atomic_fetch_sub(&c->nb->nlive, 1);
    if (c->rx_aio) nng_aio_free(c->rx_aio);
    if (c->tx_aio) nng_aio_free(c->tx_aio);
    if (c->st) nng_stream_free(c->st);
    if (c->fd >= 0) close(c->fd);
    for (size_t i = 0; i < c->qn; i++)
        tw_msg_unref(c->q[(c->qhead + i) % c->qcap]);
    if (c->conn) tw_conn_unref(c->conn);
    pthread_mutex_destroy(&c->mtx);
    free(c->q);
    free(c->rbuf);
    free(c->wbuf);
    free(c);
}

static void format_addr(const nng_sockaddr *sa, char *out, size_t n)
{
    switch (sa->s_family) {
    case NNG_AF_INET: {
        const uint8_t *a = (const uint8_t *)&sa->s_in.sa_addr;
        snprintf(out, n, "%u.%u.%u.%u:%u", a[0], a[1], a[2], a[3],
                 (unsigned)ntohs(sa->s_in.sa_port));
        break;
    }
    case NNG_AF_INET6: {
        const uint8_t *a = sa->s_in6.sa_addr;
        snprintf(out, n, "[%x:%x:%x:%x:%x:%x:%x:%x]:%u", a[0] << 8 | a[1], a[2] << 8 | a[3],
                 a[4] << 8 | a[5], a[6] << 8 | a[7], a[8] << 8 | a[9], a[10] << 8 | a[11],
                 a[12] << 8 | a[13], a[14] << 8 | a[15], (unsigned)ntohs(sa->s_in6.sa_port));
        break;
    }
    case NNG_AF_IPC:
        snprintf(out, n, "ipc:%.58s", sa->s_ipc.sa_path);
        break;
    default:
        snprintf(out, n, "nng");
    }
}

int nconn_start(nng_bind *nb, nng_stream *st, int fd, const char *remote, uint32_t slot,
                uint32_t gen, nconn **out)
{
    nconn *c = calloc(1, sizeof *c);
    if (!c) return TW_ENOMEM;
    c->pe_kind = TW_NNG_PE_CONN;
    atomic_init(&c->refs, 1); /* the slot's */
    c->nb = nb;
    c->slot = slot;
    c->gen = gen;
    c->st = st;
    c->fd = st ? -1 : fd;
    c->ep = -1;
    c->opened_ms = tw_now_ms();
    atomic_init(&c->tx_wait_ms, 0);
    atomic_init(&c->close_by_ms, 0);
    atomic_init(&c->rx_probe_ms, 0);
    pthread_mutex_init(&c->mtx, NULL);
    c->qcap = nb->send_queue;
    c->q = calloc(c->qcap, sizeof *c->q);
    c->rcap = TW_NNG_RECV_CHUNK;
    c->rbuf = malloc(c->rcap);
    if (!c->q || !c->rbuf ||
        (st &&
         (nng_aio_alloc(&c->rx_aio, rx_cb, c) != 0 || nng_aio_alloc(&c->tx_aio, tx_cb, c) != 0)))
        goto fail;
    nng_sockaddr sa;
    if (!st)
        snprintf(c->remote, sizeof c->remote, "%s", remote ? remote : "socket");
    else if (nng_stream_get_addr(st, NNG_OPT_REMADDR, &sa) == 0) {
        format_addr(&sa, c->remote, sizeof c->remote);
        /* only TLS streams lose a peer's end (the bug is in nng's TLS
         * layer): plain tcp:// and ws:// streams are not probed, which
         * spares housekeeping a getpeername per idle connection a second */
        bool verified;
        c->probe = nng_stream_get_bool(st, NNG_OPT_TLS_VERIFIED, &verified) == 0;
    } else
        snprintf(c->remote, sizeof c->remote, "nng");
    /* bdata names the table slot and its generation, never the pointer: the
     * router may still hold the tw_conn after this nconn is gone. */
    void *bdata = (void *)(uintptr_t)(((uint64_t)gen << 32) | slot);
    c->conn = tw_conn_new(nb->rt, nb->b, bdata, c->remote);
    if (!c->conn) goto fail;
    tw_log_debug(MOD, "connection %llu from %s", (unsigned long long)tw_conn_serial(c->conn),
                 c->remote);
    atomic_fetch_add(&nb->nlive, 1);
    *out = c;
    return 0;
fail:
    c->st = NULL; /* the caller still owns the stream or socket on failure */
    c->fd = -1;
    if (c->rx_aio) nng_aio_free(c->rx_aio);
    if (c->tx_aio) nng_aio_free(c->tx_aio);
    c->rx_aio = c->tx_aio = NULL;
    pthread_mutex_destroy(&c->mtx);
    free(c->q);
    free(c->rbuf);
    free(c);
    return TW_ENOMEM;
}

static void update_interest_locked(nconn *c);

void nconn_begin(nconn *c)
{
    if (c->st) {
        rx_start(c);
        return;
    }
    /* the registration's reference: dropped by the poller that sees the
     * connection closing (nconn_on_event) */
    nconn_ref(c);
    pthread_mutex_lock(&c->mtx);
    c->ev_mask = EPOLLIN;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    int rv = epoll_ctl(c->ep, EPOLL_CTL_ADD, c->fd, &ev);
    pthread_mutex_unlock(&c->mtx);
    if (rv != 0) {
        c->deregistered = true;
        nconn_close(c, strerror(errno));
        nconn_unref(c);
    }
}

void nconn_close(nconn *c, const char *why)
{
    pthread_mutex_lock(&c->mtx);
    if (c->closing) {
        pthread_mutex_unlock(&c->mtx);
        return;
    }
    c->closing = true;
    /* queued messages are released now: the peer will never get them */
    for (size_t i = 0; i < c->qn; i++)
        tw_msg_unref(c->q[(c->qhead + i) % c->qcap]);
    c->qn = c->qhead = 0;
    c->qbytes = 0; /* (a write in progress is dropped: its bytes are not counted) */
    pthread_mutex_unlock(&c->mtx);
    if (why)
        tw_log_info(MOD, "closing connection %llu (%s): %s",
                    (unsigned long long)tw_conn_serial(c->conn), c->remote, why);
    tw_conn_close(c->conn);
    if (c->st)
        nng_stream_close(c->st); /* aborts the aios in flight: their callbacks unref */
    else
        shutdown(c->fd, SHUT_RDWR); /* its poller sees the hang-up and lets go */
    nng_slot_release(c->nb, c);     /* drops the slot's reference */
}

/* ---- sending ---------------------------------------------------------- */

static int64_t mono_ms(void)
{
    return tw_mono_us() / 1000;
}

/* The batch's bytes written since the last call leave qbytes. mtx held. */
static void release_written_locked(nconn *c)
{
    size_t done = c->woff - c->wrel;
    c->wrel = c->woff;
    assert(c->closing || done <= c->qbytes);
    c->qbytes = done < c->qbytes ? c->qbytes - done : 0; /* (closing: 0) */
}

/* Gathers queued messages into wbuf. mtx held. Returns false if nothing. */
static bool batch_build(nconn *c)
{
    release_written_locked(c); /* what is left of the last batch is written */
    c->wlen = c->woff = c->wrel = 0;
    while (c->qn && c->wlen < TW_NNG_BATCH_MAX) {
        tw_msg *m = c->q[c->qhead];
        size_t len = 0;
        const char *s = tw_msg_encode(m, &len);
        if (s && c->wlen + len + 1 > c->wcap) {
            size_t nc = c->wcap ? c->wcap : 4096;
            while (nc < c->wlen + len + 1)
                nc *= 2;
            char *nb = realloc(c->wbuf, nc);
            if (!nb) {
                if (c->wlen) break; /* send what we have, retry later */
                s = NULL;
            } else {
                c->wbuf = nb;
                c->wcap = nc;
            }
        }
        if (s) {
            memcpy(c->wbuf + c->wlen, s, len);
            c->wlen += len;
            c->wbuf[c->wlen++] = '\n';
        } else {
            tw_log_error(MOD, "out of memory encoding a message; dropped");
            if (len + 1 <= c->qbytes) c->qbytes -= len + 1; /* (encoded when queued) */
        }
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qn--;
        tw_msg_unref(m);
    }
    return c->wlen > 0;
}

/*
 * Corking. While a receive callback handles the lines of one chunk (say 300
 * events from an agent), the messages it produces for other connections are
 * not written one by one: the first one registers its connection on this
 * thread's flush list and the rest pile up behind it; when the chunk is done,
 * every connection on the list is written in one batch. A chunk of one line
 * (a lone request, the common case of a round trip) is not corked at all:
 * an invokeaction's request then reaches the agent before the router goes
 * on to record the action and answer `delivered`, instead of after. The
 * list is thread-local because the router reaches send() without any context
 * of who is receiving; it belongs to nng's callback threads and lives only
 * inside one rx_cb.
 */
typedef struct flush_list {
    bool active;
    nconn **v;
    size_t n, cap;
} flush_list;

static __thread flush_list tl_flush;

/* mtx of c held. Whether c was put on this thread's flush list. */
static bool defer_flush(nconn *c)
{
    flush_list *fl = &tl_flush;
    if (!fl->active) return false;
    if (fl->n == fl->cap) {
        size_t nc = fl->cap ? fl->cap * 2 : 16;
        nconn **nv = realloc(fl->v, nc * sizeof *nv);
        if (!nv) return false;
        fl->v = nv;
        fl->cap = nc;
    }
    fl->v[fl->n++] = nconn_ref(c);
    return true;
}

static void tx_go(nconn *c);

void nconn_thread_done(void)
{
    free(tl_flush.v);
    tl_flush = (flush_list){0};
}

/* Writes what the connections on this thread's flush list have queued. */
static void flush_deferred(void)
{
    flush_list *fl = &tl_flush;
    for (size_t i = 0; i < fl->n; i++) {
        nconn *c = fl->v[i];
        pthread_mutex_lock(&c->mtx);
        c->flush_deferred = false;
        bool start = false;
        if (!c->writing && !c->closing && batch_build(c)) {
            c->writing = true;
            start = true;
            nconn_ref(c);
        }
        pthread_mutex_unlock(&c->mtx);
        if (start) tx_go(c);
        nconn_unref(c);
    }
    fl->n = 0;
    if (fl->cap > 1024) { /* a burst to many connections: give the memory back */
        free(fl->v);
        fl->v = NULL;
        fl->cap = 0;
    }
}

/* A batch is written: the next one is built if anything is queued (true),
 * else the write ends (false; *flushed_close: the connection was waiting
 * for it to close). mtx held. */
static bool tx_next_locked(nconn *c, bool *flushed_close)
{
    bool more = !c->closing && batch_build(c);
    *flushed_close = false;
    if (!more) {
        c->writing = false;
        *flushed_close = c->close_when_flushed;
    }
    return more;
}

static void tx_issue(nconn *c)
{
    /* waits for the peer from now on (tx_cb clears it) */
    atomic_store_explicit(&c->tx_wait_ms, mono_ms(), memory_order_relaxed);
    nng_iov iov = {.iov_buf = c->wbuf + c->woff, .iov_len = c->wlen - c->woff};
    nng_aio_set_iov(c->tx_aio, 1, &iov);
    nng_stream_send(c->st, c->tx_aio);
}

/*
 * A direct socket: writes the batch from woff on the calling thread, and
 * the batches queued meanwhile, until the queue is empty or the socket's
 * buffer is full. The caller owns the write in progress (c->writing) and
 * its reference. On a full buffer the poller goes on when the socket is
 * writable (tx_blocked, EPOLLOUT); the write and its reference stay.
 */
static void tx_write(nconn *c)
{
    for (;;) {
        while (c->woff < c->wlen) {
            ssize_t n =
                send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                c->woff += (size_t)n;
                continue;
            }
            int err = n < 0 ? errno : EPIPE;
            if (err == EINTR) continue;
            pthread_mutex_lock(&c->mtx);
            release_written_locked(c);
            if ((err == EAGAIN || err == EWOULDBLOCK) && !c->closing) {
                c->tx_blocked = true;
                atomic_store_explicit(&c->tx_wait_ms, mono_ms(), memory_order_relaxed);
                update_interest_locked(c);
                pthread_mutex_unlock(&c->mtx);
                return;
            }
            c->writing = false;
            pthread_mutex_unlock(&c->mtx);
            nconn_close(c, err == EPIPE || err == ECONNRESET ? NULL : strerror(err));
            nconn_unref(c);
            return;
        }
        pthread_mutex_lock(&c->mtx);
        bool flushed_close;
        bool more = tx_next_locked(c, &flushed_close);
        pthread_mutex_unlock(&c->mtx);
        if (!more) {
            if (flushed_close) nconn_close(c, "envelope too large");
            nconn_unref(c);
            return;
        }
    }
}

static void tx_go(nconn *c)
{
    if (c->st)
        tx_issue(c);
    else
        tx_write(c);
}

int nconn_send(nconn *c, tw_msg *m, bool bounded)
{
    /* encode outside the lock (once per message, shared by every receiver):
     * batch_build then only copies bytes while it holds the lock */
    size_t elen;
    if (!tw_msg_encode(m, &elen)) return TW_ENOMEM;
    size_t need = elen + 1; /* and the newline */
    size_t max_bytes = c->nb->send_queue_bytes;
    pthread_mutex_lock(&c->mtx);
    if (c->closing) {
        pthread_mutex_unlock(&c->mtx);
        return TW_ECLOSED;
    }
    bool full_msgs = c->qn == c->qcap;
    /* (a message alone in the queue is never refused, however large) */
    bool full_bytes = c->qbytes > 0 && c->qbytes + need > max_bytes;
    if (full_msgs || full_bytes) {
        /* unbounded sends may pass the bounds by a little, no more */
        bool slack = !bounded && need <= UNBOUNDED_MAX &&
                     c->qbytes + need <= max_bytes + UNBOUNDED_SLACK &&
                     (!full_msgs || c->qcap < 2 * c->nb->send_queue);
        if (!slack) {
            char why[128];
            if (full_msgs)
                snprintf(why, sizeof why, "send queue full (slow consumer): %zu messages", c->qn);
            else
                snprintf(why, sizeof why,
                         "send queue full (slow consumer): %zu bytes queued + %zu > %zu", c->qbytes,
                         need, max_bytes);
            pthread_mutex_unlock(&c->mtx);
            /* an operator wants to hear of this one: warn, not info */
            tw_log_warn(MOD, "closing connection %llu (%s): %s",
                        (unsigned long long)tw_conn_serial(c->conn), c->remote, why);
            nconn_close(c, NULL);
            return TW_EFULL;
        }
    }
    if (full_msgs) {
        size_t nc = c->qcap * 2;
        tw_msg **nq = malloc(nc * sizeof *nq);
        if (!nq) {
            pthread_mutex_unlock(&c->mtx);
            return TW_ENOMEM;
        }
        for (size_t i = 0; i < c->qn; i++)
            nq[i] = c->q[(c->qhead + i) % c->qcap];
        free(c->q);
        c->q = nq;
        c->qcap = nc;
        c->qhead = 0;
    }
    c->q[(c->qhead + c->qn) % c->qcap] = tw_msg_ref(m);
    c->qn++;
    c->qbytes += need;
    bool start = false;
    if (!c->writing && !c->flush_deferred && defer_flush(c)) {
        c->flush_deferred = true; /* the receive loop of this thread flushes it */
    } else if (!c->writing &&
               (!c->flush_deferred || c->qn >= c->qcap / 2 || c->qbytes >= max_bytes / 2) &&
               batch_build(c)) {
        /* (a corked connection whose queue is half full, in messages or in
         * bytes, is written now: a big inbox replay must flow, not overflow) */
        c->writing = true;
        start = true;
        nconn_ref(c); /* the send in flight */
    }
    pthread_mutex_unlock(&c->mtx);
    if (start) tx_go(c);
    return 0;
}

static void tx_cb(void *arg)
{
    nconn *c = arg;
    atomic_store_explicit(&c->tx_wait_ms, 0, memory_order_relaxed);
    int rv = nng_aio_result(c->tx_aio);
    if (rv != 0) {
        pthread_mutex_lock(&c->mtx);
        c->writing = false;
        pthread_mutex_unlock(&c->mtx);
        if (rv != NNG_ECLOSED)
            nconn_close(c, nng_strerror(rv));
        else
            nconn_close(c, NULL);
        nconn_unref(c);
        return;
    }
    pthread_mutex_lock(&c->mtx);
    c->woff += nng_aio_count(c->tx_aio);
    release_written_locked(c);
    if (c->woff < c->wlen && !c->closing) { /* partial write: finish it */
        pthread_mutex_unlock(&c->mtx);
        tx_issue(c);
        return;
    }
    bool flushed_close;
    bool more = tx_next_locked(c, &flushed_close);
    pthread_mutex_unlock(&c->mtx);
    if (more) {
        tx_issue(c);
        return;
    }
    if (flushed_close) nconn_close(c, "envelope too large");
    nconn_unref(c);
}

/* ---- receiving -------------------------------------------------------- */

static void send_problem(nconn *c, json_t *problem, const char *line, size_t len)
{
    tw_msg *r = tw_msg_new(TW_TYPE_RESPONSE, TW_OP_NONE, NULL, NULL);
    if (!r) {
        json_decref(problem);
        return;
    }
    /* best effort: tie the problem to the request it answers */
    json_t *o = line ? json_loadb(line, len, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
    if (json_is_object(o)) {
        const char *corr = json_string_value(json_object_get(o, "correlationID"));
        const char *op = json_string_value(json_object_get(o, "operation"));
        if (corr && strlen(corr) < 256) tw_msg_set_str(r, "correlationID", corr);
        if (op && tw_op_parse(op) != TW_OP_NONE) tw_msg_set_str(r, "operation", op);
    }
    json_decref(o);
    tw_msg_set_status(r, TW_STATUS_FAILED);
    tw_msg_set(r, "error", problem);
    nconn_send(c, r, true);
    tw_msg_unref(r);
}

static void handle_line(nconn *c, const char *line, size_t len)
{
    tw_msg *m = NULL;
    json_t *problem = NULL;
    int rv = tw_msg_parse(line, len, &c->nb->lim, &m, &problem);
    if (rv != 0) {
        if (!problem) problem = tw_problem_from_error(rv, "malformed envelope", NULL);
        send_problem(c, problem, line, len);
        return;
    }
    tw_router_handle(c->nb->rt, c->conn, m);
    tw_msg_unref(m);
}

/* Room for the next receive: at least half a chunk. False: out of memory
 * (the connection is closed). */
static bool rx_room(nconn *c)
{
    if (c->rcap - c->rlen >= TW_NNG_RECV_CHUNK / 2) return true;
    size_t nc = c->rcap * 2;
    char *nb = realloc(c->rbuf, nc);
    if (!nb) {
        nconn_close(c, "out of memory");
        return false;
    }
    c->rbuf = nb;
    c->rcap = nc;
    return true;
}

static void rx_start(nconn *c)
{
    if (!rx_room(c)) return;
    nng_iov iov = {.iov_buf = c->rbuf + c->rlen, .iov_len = c->rcap - c->rlen};
    nng_aio_set_iov(c->rx_aio, 1, &iov);
    nconn_ref(c); /* the receive in flight */
    /* (before the receive: its callback may run before this returns) */
    if (c->probe)
        atomic_store_explicit(&c->rx_probe_ms, mono_ms() + PROBE_MS, memory_order_relaxed);
    nng_stream_recv(c->st, c->rx_aio);
}

/*
 * n more bytes are in rbuf: routes every complete line. Returns whether to
 * go on reading (false: the connection is closing, or waits to close once
 * a 413 problem has left).
 */
static bool rx_got(nconn *c, size_t n)
{
    size_t scan = c->rlen; /* bytes before this chunk hold no newline */
    c->rlen += n;
    size_t start = 0;
    bool closing = false;
    /* cork only when the chunk holds more than one line */
    const char *first = memchr(c->rbuf + scan, '\n', c->rlen - scan);
    tl_flush.active =
        first && memchr(first + 1, '\n', (size_t)(c->rbuf + c->rlen - first - 1)) != NULL;
    for (;;) {
        char *nl = memchr(c->rbuf + scan, '\n', c->rlen - scan);
        if (!nl) break;
        size_t end = (size_t)(nl - c->rbuf);
        size_t len = end - start;
        if (len && !(len == 1 && c->rbuf[start] == '\r')) handle_line(c, c->rbuf + start, len);
        start = scan = end + 1;
        /* closed (by this line or by another thread)? nconn_close closes the
         * tw_conn too, and its flag is atomic: no lock per line */
        if (tw_conn_closed(c->conn)) break;
    }
    pthread_mutex_lock(&c->mtx);
    closing = c->closing;
    pthread_mutex_unlock(&c->mtx);
    tl_flush.active = false;
    flush_deferred();
    if (start) {
        memmove(c->rbuf, c->rbuf + start, c->rlen - start);
        c->rlen -= start;
    }
    if (!closing && c->rlen > c->nb->lim.max_bytes) {
        char detail[96];
        snprintf(detail, sizeof detail, "an envelope is longer than %zu bytes",
                 c->nb->lim.max_bytes);
        send_problem(c, tw_problem_new(413, "too-large", "Envelope too large", detail, NULL), NULL,
                     0);
        /* stop reading, let the problem leave, then close */
        tw_conn_close(c->conn);
        atomic_store_explicit(&c->close_by_ms, mono_ms() + c->nb->write_timeout_ms,
                              memory_order_relaxed);
        pthread_mutex_lock(&c->mtx);
        c->close_when_flushed = true;
        bool idle = !c->writing;
        pthread_mutex_unlock(&c->mtx);
        if (idle) nconn_close(c, "envelope too large");
        closing = true;
    }
    return !closing;
}

static void rx_cb(void *arg)
{
    nconn *c = arg;
    atomic_store_explicit(&c->rx_probe_ms, 0, memory_order_relaxed);
    int rv = nng_aio_result(c->rx_aio);
    if (rv != 0) {
        pthread_mutex_lock(&c->mtx);
        bool ours = c->closing;
        pthread_mutex_unlock(&c->mtx);
        /* how the peer left, at debug: over TLS, NNG_ECLOSED is its
         * close_notify, NNG_ECONNSHUT the socket's end without one ("A dead
         * TLS stream"; test_nng_e2e's clean_close counts them) */
        if (!ours && peer_gone(rv))
            tw_log_debug(MOD, "connection %llu (%s) ended by the peer: %s",
                         (unsigned long long)tw_conn_serial(c->conn), c->remote, nng_strerror(rv));
        nconn_close(c, peer_gone(rv) ? NULL : nng_strerror(rv));
        nconn_unref(c);
        return;
    }
    if (rx_got(c, nng_aio_count(c->rx_aio))) rx_start(c);
    nconn_unref(c);
}

/* ---- direct sockets (nng_direct.c's pollers) ------------------------------ */

/* The events a direct socket's epoll entry watches: EPOLLIN while reading,
 * EPOLLOUT while a write is blocked. mtx held. */
static void update_interest_locked(nconn *c)
{
    if (c->closing || c->deregistered) return;
    uint32_t want =
        (c->rx_stopped ? 0u : (uint32_t)EPOLLIN) | (c->tx_blocked ? (uint32_t)EPOLLOUT : 0u);
    if (want == c->ev_mask) return;
    struct epoll_event ev = {.events = want, .data.ptr = c};
    if (epoll_ctl(c->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0) c->ev_mask = want;
}

static void rx_ready(nconn *c)
{
    if (!rx_room(c)) return;
    ssize_t n;
    do
        n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        if (!rx_got(c, (size_t)n)) {
            pthread_mutex_lock(&c->mtx);
            c->rx_stopped = true;
            pthread_mutex_unlock(&c->mtx);
        }
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    nconn_close(c, n == 0 || errno == ECONNRESET ? NULL : strerror(errno));
}

/*
 * An epoll event of a direct socket, on the one poller thread it belongs
 * to. Goes on with a blocked write, reads, and once the connection is
 * closing leaves the epoll set and drops the registration's reference:
 * only this thread ever sees the socket's events, so none can still be on
 * its way.
 */
void nconn_on_event(nconn *c, uint32_t events)
{
    if (c->deregistered) return;
    pthread_mutex_lock(&c->mtx);
    bool closing = c->closing;
    /* (closing: the write is dropped below, with its reference) */
    bool out = !closing && c->tx_blocked && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP));
    if (out) { /* this thread takes the write over */
        c->tx_blocked = false;
        atomic_store_explicit(&c->tx_wait_ms, 0, memory_order_relaxed);
    }
    bool reading = !c->rx_stopped;
    pthread_mutex_unlock(&c->mtx);
    if (!closing) {
        if (out) tx_write(c);
        if (reading && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
            rx_ready(c);
        else if (events & (EPOLLERR | EPOLLHUP))
            nconn_close(c, NULL);
    }
    pthread_mutex_lock(&c->mtx);
    closing = c->closing;
    if (!closing) update_interest_locked(c);
    /* a write that waited for room will never go on: its reference goes */
    bool drop_write = closing && c->tx_blocked;
    if (drop_write) {
        c->tx_blocked = false;
        c->writing = false;
    }
    pthread_mutex_unlock(&c->mtx);
    if (drop_write) nconn_unref(c);
    if (closing) {
        epoll_ctl(c->ep, EPOLL_CTL_DEL, c->fd, NULL);
        c->deregistered = true;
        nconn_unref(c); /* the registration's */
    }
}

const char *nconn_overdue(nconn *c, int64_t now_ms)
{
    int64_t close_by = atomic_load_explicit(&c->close_by_ms, memory_order_relaxed);
    if (close_by && now_ms >= close_by) return "closing, but the peer does not read";
    int64_t wait = atomic_load_explicit(&c->tx_wait_ms, memory_order_relaxed);
    if (wait && now_ms - wait >= c->nb->write_timeout_ms)
        return "a write made no progress in time (the peer does not read)";
    return NULL;
}

bool nconn_peer_lost(nconn *c, int64_t now_ms)
{
    int64_t due = atomic_load_explicit(&c->rx_probe_ms, memory_order_relaxed);
    if (!c->probe || !due || now_ms < due) return false;
    /* the next one a PROBE_MS on, unless the receive completed meanwhile */
    if (!atomic_compare_exchange_strong(&c->rx_probe_ms, &due, now_ms + PROBE_MS)) return false;
    nng_sockaddr sa;
    return nng_stream_get_addr(c->st, NNG_OPT_REMADDR, &sa) != 0;
}
