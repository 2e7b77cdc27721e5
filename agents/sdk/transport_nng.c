/*
 * transport_nng.c - libtwin's nng transport: one nng byte stream (tls+tcp,
 * ws, wss; also tcp4, tcp6 and abstract) carrying newline-delimited
 * envelopes, the wire format of bindings/nng/nng_frame.h. tcp:// and
 * ipc:// go to transport_sock.c instead (tw_transport_for, at the end); this
 * transport still accepts them when asked directly.
 *
 * Blocking calls on top of nng's aios: send() and recv() each own an aio and
 * wait on it, so the writer and the reader thread never share one. recv()
 * reads in chunks into a buffer and hands out one line at a time; a line
 * longer than TW_SOCK_MAX_LINE closes the link (the server never sends one;
 * linebuf.c keeps the buffer for both transports).
 *
 * TLS: the server certificate must chain to ca_file and match the server
 * name (the URL's host unless server_name is given); there is no "insecure"
 * switch. With cert_file (and key_file, or a cert_file holding both) the
 * link presents that client certificate: on tls+tcp:// and wss:// twind's
 * nng binding then authenticates the connection as the certificate's client
 * during the handshake, and a certificate it refuses gets a 401 problem and
 * the link closed.
 *
 * A dead TLS link that nng 1.5 never reports: its TLS stream keeps a read
 * of the socket going on its own. If that read meets the end of the
 * connection (the server was killed, a reset) while no receive of ours is
 * outstanding, nng closes the socket's aios, and our next receive starts a
 * socket read on a closed aio: nni_aio_begin() refuses it without a
 * callback, so the receive never completes, and neither its timeout nor
 * nng_aio_abort() can end it (the TLS layer only aborts the socket read,
 * which is not running); only closing the stream does. (A server that
 * closes cleanly sends a close_notify first, which the client reads
 * instead of the end: no hang.) So a receive on a TLS link wakes every
 * PROBE_MS and asks the socket for its peer address; a socket nng has shut
 * down after the end of the connection has none (ENOTCONN), and the
 * stream is closed, which fails the receive with TW_ECLOSED. The probe is
 * one getpeername() per idle second, and only on links where it worked
 * right after connecting.
 */
#include "transport.h"

#include "bindings/nng/nng_frame.h"

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROBE_MS 1000

struct tw_transport {
    nng_stream_dialer *d;
    nng_stream *st;
    nng_tls_config *tls;
    nng_aio *rx, *tx;
    tw_linebuf rb;
    /* shutdown vs. operations being started: an operation is submitted under
     * mtx after checking closed, so shutdown's abort always finds it */
    pthread_mutex_t mtx;
    bool closed;
    /* receives on TLS links: rx completes into rx_done (under mtx) */
    pthread_cond_t rx_cond;
    bool rx_done;
    bool probe; /* the dead-link probe works on this link */
};

static void rx_cb(void *arg)
{
    tw_transport *t = arg;
    pthread_mutex_lock(&t->mtx);
    t->rx_done = true;
    pthread_cond_signal(&t->rx_cond);
    pthread_mutex_unlock(&t->mtx);
}

/* Whether the socket under the stream still has a peer (see the top). */
static bool peer_alive(tw_transport *t)
{
    nng_sockaddr sa;
    return nng_stream_get_addr(t->st, NNG_OPT_REMADDR, &sa) == 0;
}

/* A receive on rx that a dead link cannot hang (see the top). */
static int run_recv(tw_transport *t)
{
    pthread_mutex_lock(&t->mtx);
    if (t->closed) {
        pthread_mutex_unlock(&t->mtx);
        return NNG_ECLOSED;
    }
    t->rx_done = false;
    nng_stream_recv(t->st, t->rx);
    while (!t->rx_done) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += PROBE_MS / 1000;
        ts.tv_nsec += (long)(PROBE_MS % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        if (pthread_cond_timedwait(&t->rx_cond, &t->mtx, &ts) == ETIMEDOUT && !t->rx_done &&
            !t->closed && !peer_alive(t)) {
            /* the close completes the receive (its callback waits for mtx) */
            nng_stream_close(t->st);
        }
    }
    pthread_mutex_unlock(&t->mtx);
    nng_aio_wait(t->rx); /* the callback has run: nothing of rx is in use */
    return nng_aio_result(t->rx);
}

/* Starts op on aio unless the link was shut down; then waits for it. */
static int run_op(tw_transport *t, nng_aio *aio, void (*op)(nng_stream *, nng_aio *))
{
    pthread_mutex_lock(&t->mtx);
    if (t->closed) {
        pthread_mutex_unlock(&t->mtx);
        return NNG_ECLOSED;
    }
    op(t->st, aio);
    pthread_mutex_unlock(&t->mtx);
    nng_aio_wait(aio);
    return nng_aio_result(aio);
}

static bool nng_accepts(const char *url)
{
    static const char *schemes[] = {"tls+tcp://", "tcp://",  "ipc://",  "ws://",
                                    "wss://",     "tcp4://", "tcp6://", "abstract://"};
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (strncmp(url, schemes[i], strlen(schemes[i])) == 0) return true;
    return false;
}

static int map_err(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case NNG_ENOMEM:
        return TW_ENOMEM;
    case NNG_ETIMEDOUT:
        return TW_ETIMEDOUT;
    case NNG_EADDRINVAL:
    case NNG_EINVAL:
        return TW_EINVAL;
    case NNG_ECRYPTO:
    case NNG_EPEERAUTH:
        return TW_ECRYPTO;
    case NNG_ECLOSED:
    case NNG_ECONNSHUT:
    case NNG_ECONNRESET:
    case NNG_ECANCELED:
        return TW_ECLOSED;
    default:
        return TW_EIO;
    }
}

/* A whole PEM file (at most 64 KiB) as a new string, or NULL. */
static char *read_pem(const char *path, size_t *cap)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    *cap = 65536;
    char *buf = malloc(*cap);
    size_t n = buf ? fread(buf, 1, *cap - 1, f) : 0;
    bool ok = buf && !ferror(f) && feof(f);
    fclose(f);
    if (!ok) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

/* The client certificate (mutual TLS): cert_file and key_file, or one file
 * with both. The key is wiped from memory once nng has parsed it. */
static int own_cert(nng_tls_config *cfg, const char *cert_file, const char *key_file)
{
    size_t ccap = 0, kcap = 0;
    char *cert = read_pem(cert_file, &ccap);
    char *key = cert ? read_pem(key_file ? key_file : cert_file, &kcap) : NULL;
    int rv = cert && key ? nng_tls_config_own_cert(cfg, cert, key, NULL) : NNG_ENOENT;
    free(cert);
    if (key) sodium_memzero(key, kcap);
    free(key);
    return rv;
}

static void nng_tfree(tw_transport *t)
{
    if (!t) return;
    if (t->st) nng_stream_close(t->st);
    if (t->rx) nng_aio_free(t->rx);
    if (t->tx) nng_aio_free(t->tx);
    if (t->st) nng_stream_free(t->st);
    if (t->d) nng_stream_dialer_free(t->d);
    if (t->tls) nng_tls_config_free(t->tls);
    pthread_mutex_destroy(&t->mtx);
    pthread_cond_destroy(&t->rx_cond);
    tw_linebuf_free(&t->rb);
    free(t);
}

static int nng_connect(const tw_client_opts *o, int timeout_ms, tw_transport **out)
{
    tw_transport *t = calloc(1, sizeof *t);
    if (!t) return TW_ENOMEM;
    pthread_mutex_init(&t->mtx, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->rx_cond, &ca);
    pthread_condattr_destroy(&ca);
    int rv = nng_stream_dialer_alloc(&t->d, o->url);
    bool tls = strncmp(o->url, "tls+tcp://", 10) == 0 || strncmp(o->url, "wss://", 6) == 0;
    if (rv == 0 && tls) {
        rv = nng_tls_config_alloc(&t->tls, NNG_TLS_MODE_CLIENT);
        if (rv == 0) rv = nng_tls_config_auth_mode(t->tls, NNG_TLS_AUTH_MODE_REQUIRED);
        if (rv == 0 && o->ca_file) rv = nng_tls_config_ca_file(t->tls, o->ca_file);
        if (rv == 0 && o->server_name) rv = nng_tls_config_server_name(t->tls, o->server_name);
        if (rv == 0 && o->cert_file) rv = own_cert(t->tls, o->cert_file, o->key_file);
        if (rv == 0) rv = nng_stream_dialer_set_ptr(t->d, NNG_OPT_TLS_CONFIG, t->tls);
    }
    if (rv == 0) /* not for ipc://, hence no error check */
        nng_stream_dialer_set_bool(t->d, NNG_OPT_TCP_NODELAY, true);
    if (rv == 0) rv = nng_aio_alloc(&t->rx, rx_cb, t);
    if (rv == 0) rv = nng_aio_alloc(&t->tx, NULL, NULL);
    if (rv == 0) {
        nng_aio_set_timeout(t->rx, timeout_ms > 0 ? timeout_ms : NNG_DURATION_DEFAULT);
        nng_stream_dialer_dial(t->d, t->rx);
        nng_aio_wait(t->rx);
        rv = nng_aio_result(t->rx);
        if (rv == 0) t->st = nng_aio_get_output(t->rx, 0);
        nng_aio_set_timeout(t->rx, NNG_DURATION_INFINITE);
    }
    if (rv == 0) {
        if (tw_linebuf_init(&t->rb) != 0) rv = NNG_ENOMEM;
        t->probe = t->tls && peer_alive(t);
    }
    if (rv != 0) {
        nng_tfree(t);
        return rv == NNG_ECONNREFUSED ? TW_EOFFLINE : map_err(rv);
    }
    *out = t;
    return 0;
}

static int nng_tsend_n(tw_transport *t, const char *buf, size_t len, size_t *sent)
{
    *sent = 0;
    while (len > 0) {
        nng_iov iov = {.iov_buf = (void *)buf, .iov_len = len};
        nng_aio_set_iov(t->tx, 1, &iov);
        int rv = run_op(t, t->tx, nng_stream_send);
        if (rv != 0) return map_err(rv);
        size_t n = nng_aio_count(t->tx);
        buf += n;
        len -= n;
        *sent += n;
    }
    return 0;
}

static int nng_tsend(tw_transport *t, const char *buf, size_t len)
{
    size_t sent;
    return nng_tsend_n(t, buf, len, &sent);
}

static int nng_trecv(tw_transport *t, const char **line, size_t *len)
{
    for (;;) {
        int rc = tw_linebuf_next(&t->rb, line, len);
        if (rc != 0) return rc > 0 ? 0 : rc;
        nng_iov iov = {.iov_buf = t->rb.buf + t->rb.len, .iov_len = t->rb.cap - t->rb.len};
        nng_aio_set_iov(t->rx, 1, &iov);
        int rv = t->probe ? run_recv(t) : run_op(t, t->rx, nng_stream_recv);
        if (rv != 0) return map_err(rv);
        t->rb.len += nng_aio_count(t->rx);
    }
}

/* The stream is closed first: on a TLS link that sends our close_notify
 * and fails the receive and the send in flight. Aborting the receive first
 * made nng's TLS layer abort its socket read, whose callback (on an nng
 * thread) closes the socket; when it ran before the close, as it could on
 * a loaded machine, the close_notify never left, and twind, busy with our
 * last envelope, missed the end of the connection (bindings/nng/nng_conn.c,
 * "A dead TLS stream"). The aborts remain for what a close leaves. */
static void nng_tshutdown(tw_transport *t)
{
    pthread_mutex_lock(&t->mtx);
    t->closed = true;
    if (t->st) nng_stream_close(t->st);
    if (t->rx) nng_aio_abort(t->rx, NNG_ECLOSED);
    if (t->tx) nng_aio_abort(t->tx, NNG_ECLOSED);
    pthread_mutex_unlock(&t->mtx);
}

const tw_transport_ops tw_transport_nng = {
    .name = "nng",
    .accepts = nng_accepts,
    .connect = nng_connect,
    .send = nng_tsend,
    .send_n = nng_tsend_n,
    .recv = nng_trecv,
    .shutdown = nng_tshutdown,
    .free = nng_tfree,
};

const tw_transport_ops *tw_transport_for(const char *url)
{
    /* the socket transport first: it takes tcp:// and ipc:// (fewer thread
     * wake-ups per envelope, see transport_sock.c), nng the rest */
    static const tw_transport_ops *all[] = {&tw_transport_sock, &tw_transport_nng};
    for (size_t i = 0; url && i < sizeof all / sizeof all[0]; i++)
        if (all[i]->accepts(url)) return all[i];
    return NULL;
}
