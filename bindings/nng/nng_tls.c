/*
 * nng_tls.c - the GnuTLS engine for nng (see nng_tls.h for why).
 *
 * nng's TLS framework owns the TCP stream, the buffers and the locking; an
 * engine only turns bytes into records: the framework calls handshake,
 * recv and send with its stream lock held, and the engine reads and writes
 * ciphertext through nng_tls_engine_recv/send, which answer NNG_EAGAIN when
 * the framework must wait for the socket (it calls the engine again when
 * it can). GnuTLS fits this through its push/pull transport functions with
 * errno EAGAIN.
 *
 * The framework only drives the handshake from its socket callbacks, and
 * those only run once a first read or write was asked for, so recv and send
 * start the handshake themselves (as mbedtls_ssl_read/write do for the
 * mbedTLS engine).
 *
 * Server side: the peer is asked for a certificate (GNUTLS_CERT_REQUEST)
 * when the config's auth mode is optional, required when it is required.
 * GnuTLS does not judge the chain during the handshake: whoever watches
 * the stream does (tw_tls_verify_client), and `verified` (the
 * NNG_OPT_TLS_VERIFIED option) reports GnuTLS's own check against the
 * config's CAs. Client side: with auth mode required, the server's chain
 * must verify against the CAs and match the server name (an IP address is
 * matched against the IP SANs).
 *
 * Watching: a table of the server-side engine connections, hashed by the
 * peer's address (ip, port), under one mutex; an entry lives from conn_init
 * to conn_fini. A tls+tcp listener hands out the framework's stream itself
 * (the `tls` given to conn_init), found by pointer. A wss:// listener hands
 * out a websocket stream on top of an HTTP connection on top of the TLS
 * stream, which nng keeps to itself; the websocket stream reports the same
 * peer and local addresses, and among live connections that 4-tuple names
 * one TLS stream (an entry whose connection was closed is skipped). The
 * local address matters: the same peer ip:port may hold a second TCP
 * connection to another listener (a shared source port), which must never
 * lend its certificate. The wss handshake is over by then (the upgrade
 * request came over TLS), so the watch is answered at once, on the
 * watcher's thread, with a copy of the chain taken under the lock (the
 * connection may end at any moment after it).
 */
#include "nng_tls.h"

#include "runtime/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <nng/supplemental/tls/engine.h>
#include <nng/supplemental/tls/tls.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "nng"
#define WATCH_BUCKETS 1024

struct nng_tls_engine_config {
    gnutls_certificate_credentials_t cred;
    nng_tls_mode mode;
    nng_tls_auth_mode auth;
    char *server_name;
    char priority[160];
};

struct nng_tls_engine_conn {
    void *tls; /* the framework's connection: the nng_stream */
    gnutls_session_t s;
    bool server;
    bool hs_done;
    int io_err; /* the nng error behind a GnuTLS push/pull error */
    nng_sockaddr peer, local;
    bool has_peer, has_local;
    /* watching (under watch_mtx) */
    bool closed;
    struct nng_tls_engine_conn *next;
    tw_nng_tls_peer_fn fn;
    void *arg;
    uint64_t key;
};

static pthread_mutex_t watch_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct nng_tls_engine_conn *watch_tab[WATCH_BUCKETS];

static size_t bucket(const nng_sockaddr *sa)
{
    uint64_t v = 0;
    if (sa->s_family == NNG_AF_INET) {
        v = ((uint64_t)sa->s_in.sa_addr << 16) ^ sa->s_in.sa_port;
    } else if (sa->s_family == NNG_AF_INET6) {
        for (int i = 0; i < 16; i++)
            v = v * 31 + sa->s_in6.sa_addr[i];
        v ^= sa->s_in6.sa_port;
    }
    v *= 0x9e3779b97f4a7c15ull;
    return (size_t)(v >> 40) % WATCH_BUCKETS;
}

static bool same_peer(const nng_sockaddr *a, const nng_sockaddr *b)
{
    if (a->s_family != b->s_family) return false;
    if (a->s_family == NNG_AF_INET)
        return a->s_in.sa_addr == b->s_in.sa_addr && a->s_in.sa_port == b->s_in.sa_port;
    if (a->s_family == NNG_AF_INET6)
        return memcmp(a->s_in6.sa_addr, b->s_in6.sa_addr, 16) == 0 &&
               a->s_in6.sa_port == b->s_in6.sa_port;
    return false;
}

static void watch_add(nng_tls_engine_conn *ec)
{
    pthread_mutex_lock(&watch_mtx);
    size_t b = bucket(&ec->peer);
    ec->next = watch_tab[b];
    watch_tab[b] = ec;
    pthread_mutex_unlock(&watch_mtx);
}

static void watch_remove(nng_tls_engine_conn *ec)
{
    pthread_mutex_lock(&watch_mtx);
    for (nng_tls_engine_conn **pp = &watch_tab[bucket(&ec->peer)]; *pp; pp = &(*pp)->next)
        if (*pp == ec) {
            *pp = ec->next;
            break;
        }
    pthread_mutex_unlock(&watch_mtx);
}

/* ---- config ----------------------------------------------------------- */

static int map_gnutls(int rv)
{
    switch (rv) {
    case GNUTLS_E_SUCCESS:
        return 0;
    case GNUTLS_E_AGAIN:
    case GNUTLS_E_INTERRUPTED:
        return NNG_EAGAIN;
    case GNUTLS_E_MEMORY_ERROR:
        return NNG_ENOMEM;
    case GNUTLS_E_PREMATURE_TERMINATION:
        return NNG_ECONNSHUT;
    case GNUTLS_E_CERTIFICATE_ERROR:
    case GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR:
    case GNUTLS_E_NO_CERTIFICATE_FOUND:
        return NNG_EPEERAUTH;
    default:
        return NNG_ECRYPTO;
    }
}

static int config_init(nng_tls_engine_config *cfg, nng_tls_mode mode)
{
    cfg->mode = mode;
    /* nng's defaults: servers do not ask, clients verify */
    cfg->auth = mode == NNG_TLS_MODE_SERVER ? NNG_TLS_AUTH_MODE_NONE : NNG_TLS_AUTH_MODE_REQUIRED;
    snprintf(cfg->priority, sizeof cfg->priority, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2");
    return gnutls_certificate_allocate_credentials(&cfg->cred) == 0 ? 0 : NNG_ENOMEM;
}

static void config_fini(nng_tls_engine_config *cfg)
{
    if (cfg->cred) gnutls_certificate_free_credentials(cfg->cred);
    free(cfg->server_name);
}

static int config_server(nng_tls_engine_config *cfg, const char *name)
{
    char *dup = name ? strdup(name) : NULL;
    if (name && !dup) return NNG_ENOMEM;
    free(cfg->server_name);
    cfg->server_name = dup;
    return 0;
}

static int config_auth(nng_tls_engine_config *cfg, nng_tls_auth_mode mode)
{
    cfg->auth = mode;
    return 0;
}

static int config_ca_chain(nng_tls_engine_config *cfg, const char *certs, const char *crl)
{
    gnutls_datum_t d = {(unsigned char *)certs, (unsigned)strlen(certs)};
    int rv = gnutls_certificate_set_x509_trust_mem(cfg->cred, &d, GNUTLS_X509_FMT_PEM);
    if (rv < 0) return NNG_ECRYPTO;
    if (rv == 0) return NNG_EINVAL; /* no certificate in there */
    if (crl) {
        gnutls_datum_t c = {(unsigned char *)crl, (unsigned)strlen(crl)};
        /* the CA file may hold no CRL at all: only a broken one is an error */
        if (strstr(crl, "-----BEGIN X509 CRL-----") &&
            gnutls_certificate_set_x509_crl_mem(cfg->cred, &c, GNUTLS_X509_FMT_PEM) < 0)
            return NNG_ECRYPTO;
    }
    return 0;
}

static int config_own_cert(nng_tls_engine_config *cfg, const char *cert, const char *key,
                           const char *pass)
{
    gnutls_datum_t c = {(unsigned char *)cert, (unsigned)strlen(cert)};
    gnutls_datum_t k = {(unsigned char *)key, (unsigned)strlen(key)};
    int rv = gnutls_certificate_set_x509_key_mem2(cfg->cred, &c, &k, GNUTLS_X509_FMT_PEM, pass, 0);
    return rv < 0 ? NNG_ECRYPTO : 0;
}

static int config_version(nng_tls_engine_config *cfg, nng_tls_version lo, nng_tls_version hi)
{
    static const struct {
        nng_tls_version v;
        const char *name;
    } vs[] = {{NNG_TLS_1_3, "+VERS-TLS1.3"},
              {NNG_TLS_1_2, "+VERS-TLS1.2"},
              {NNG_TLS_1_1, "+VERS-TLS1.1"},
              {NNG_TLS_1_0, "+VERS-TLS1.0"}};
    if (lo > hi) return NNG_ENOTSUP;
    char p[160] = "NORMAL:-VERS-ALL";
    bool any = false;
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++)
        if (vs[i].v >= lo && vs[i].v <= hi) {
            size_t n = strlen(p);
            snprintf(p + n, sizeof p - n, ":%s", vs[i].name);
            any = true;
        }
    if (!any) return NNG_ENOTSUP;
    memcpy(cfg->priority, p, sizeof p);
    return 0;
}

/* ---- connections ------------------------------------------------------ */

static ssize_t pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
    nng_tls_engine_conn *ec = p;
    size_t n = len;
    int rv = nng_tls_engine_recv(ec->tls, buf, &n);
    if (rv == 0) return (ssize_t)n;
    ec->io_err = rv;
    gnutls_transport_set_errno(ec->s, rv == NNG_EAGAIN ? EAGAIN : EIO);
    return -1;
}

static ssize_t push(gnutls_transport_ptr_t p, const void *buf, size_t len)
{
    nng_tls_engine_conn *ec = p;
    size_t n = len;
    int rv = nng_tls_engine_send(ec->tls, buf, &n);
    if (rv == 0) return (ssize_t)n;
    ec->io_err = rv;
    gnutls_transport_set_errno(ec->s, rv == NNG_EAGAIN ? EAGAIN : EIO);
    return -1;
}

/* A GnuTLS result as an nng error: a transport failure as what nng said. */
static int conn_err(nng_tls_engine_conn *ec, int rv)
{
    if ((rv == GNUTLS_E_PULL_ERROR || rv == GNUTLS_E_PUSH_ERROR) && ec->io_err) return ec->io_err;
    return map_gnutls(rv);
}

static bool is_ip(const char *name)
{
    unsigned char b[16];
    return inet_pton(AF_INET, name, b) == 1 || inet_pton(AF_INET6, name, b) == 1;
}

static int conn_init(nng_tls_engine_conn *ec, void *tls, nng_tls_engine_config *cfg)
{
    ec->tls = tls;
    ec->server = cfg->mode == NNG_TLS_MODE_SERVER;
    if (gnutls_init(&ec->s, (ec->server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK) != 0)
        return NNG_ENOMEM;
    int rv = gnutls_priority_set_direct(ec->s, cfg->priority, NULL);
    if (rv == 0) rv = gnutls_credentials_set(ec->s, GNUTLS_CRD_CERTIFICATE, cfg->cred);
    if (rv == 0 && ec->server && cfg->auth != NNG_TLS_AUTH_MODE_NONE)
        gnutls_certificate_server_set_request(ec->s, cfg->auth == NNG_TLS_AUTH_MODE_REQUIRED
                                                         ? GNUTLS_CERT_REQUIRE
                                                         : GNUTLS_CERT_REQUEST);
    if (rv == 0 && !ec->server) {
        const char *name = cfg->server_name;
        if (name && name[0] && !is_ip(name))
            rv = gnutls_server_name_set(ec->s, GNUTLS_NAME_DNS, name, strlen(name));
        if (rv == 0 && cfg->auth == NNG_TLS_AUTH_MODE_REQUIRED)
            gnutls_session_set_verify_cert(ec->s, name && name[0] ? name : NULL, 0);
    }
    if (rv != 0) {
        gnutls_deinit(ec->s);
        ec->s = NULL;
        return NNG_ECRYPTO;
    }
    gnutls_transport_set_ptr(ec->s, ec);
    gnutls_transport_set_pull_function(ec->s, pull);
    gnutls_transport_set_push_function(ec->s, push);
    /* (tls_start gave the framework its socket before calling us) */
    ec->has_peer =
        ec->server && nng_stream_get_addr((nng_stream *)tls, NNG_OPT_REMADDR, &ec->peer) == 0;
    ec->has_local =
        ec->server && nng_stream_get_addr((nng_stream *)tls, NNG_OPT_LOCADDR, &ec->local) == 0;
    if (ec->has_peer) watch_add(ec);
    return 0;
}

static void conn_fini(nng_tls_engine_conn *ec)
{
    if (ec->has_peer) watch_remove(ec);
    if (ec->s) gnutls_deinit(ec->s);
    ec->s = NULL;
}

static void conn_close(nng_tls_engine_conn *ec)
{
    if (ec->has_peer) {
        pthread_mutex_lock(&watch_mtx);
        ec->closed = true;
        pthread_mutex_unlock(&watch_mtx);
    }
    /* best effort close_notify: the socket goes right after */
    if (ec->s && ec->hs_done) gnutls_bye(ec->s, GNUTLS_SHUT_WR);
}

static void handshake_done(nng_tls_engine_conn *ec)
{
    if (!ec->server) {
        ec->hs_done = true;
        return;
    }
    pthread_mutex_lock(&watch_mtx); /* tw_nng_tls_watch reads hs_done */
    ec->hs_done = true;
    tw_nng_tls_peer_fn fn = ec->fn;
    void *arg = ec->arg;
    uint64_t key = ec->key;
    ec->fn = NULL; /* once */
    pthread_mutex_unlock(&watch_mtx);
    if (!fn) return;
    unsigned n = 0;
    const gnutls_datum_t *chain = NULL;
    if (gnutls_certificate_type_get(ec->s) == GNUTLS_CRT_X509)
        chain = gnutls_certificate_get_peers(ec->s, &n);
    fn(arg, key, chain, chain ? n : 0);
}

/* A non-fatal result other than "wait for the socket" (a warning alert):
 * the call is to be repeated at once, since no I/O will call us again. */
static bool again_now(int rv)
{
    return rv < 0 && rv != GNUTLS_E_AGAIN && rv != GNUTLS_E_INTERRUPTED &&
           rv != GNUTLS_E_REHANDSHAKE && !gnutls_error_is_fatal(rv);
}

static int conn_handshake(nng_tls_engine_conn *ec)
{
    if (ec->hs_done) return 0; /* a second gnutls_handshake would renegotiate */
    ec->io_err = 0;
    int rv, tries = 0;
    do
        rv = gnutls_handshake(ec->s);
    while (again_now(rv) && ++tries < 16);
    if (rv == 0) {
        handshake_done(ec);
        return 0;
    }
    if (rv != GNUTLS_E_AGAIN && rv != GNUTLS_E_INTERRUPTED)
        tw_log_debug(MOD, "TLS handshake: %s", gnutls_strerror(rv));
    return conn_err(ec, rv);
}

static int conn_recv(nng_tls_engine_conn *ec, uint8_t *buf, size_t *szp)
{
    int rv = conn_handshake(ec);
    if (rv != 0) return rv;
    ec->io_err = 0;
    ssize_t n;
    int tries = 0;
    do
        n = gnutls_record_recv(ec->s, buf, *szp);
    while (again_now((int)n) && ++tries < 16);
    /* (a peer's renegotiation request, GNUTLS_E_REHANDSHAKE, ends the link) */
    if (n > 0) {
        *szp = (size_t)n;
        return 0;
    }
    if (n == 0) return NNG_ECLOSED; /* the peer's close_notify */
    return conn_err(ec, (int)n);
}

static int conn_send(nng_tls_engine_conn *ec, const uint8_t *buf, size_t *szp)
{
    int rv = conn_handshake(ec);
    if (rv != 0) return rv;
    ec->io_err = 0;
    /* a record interrupted by EAGAIN must be resumed with the same data:
     * the framework does, it retries the same aio's buffer */
    ssize_t n = gnutls_record_send(ec->s, buf, *szp);
    if (n > 0) {
        *szp = (size_t)n;
        return 0;
    }
    return conn_err(ec, n == 0 ? GNUTLS_E_PUSH_ERROR : (int)n);
}

static bool conn_verified(nng_tls_engine_conn *ec)
{
    unsigned status = 0, n = 0;
    if (!ec->hs_done || !gnutls_certificate_get_peers(ec->s, &n) || n == 0) return false;
    return gnutls_certificate_verify_peers2(ec->s, &status) == 0 && status == 0;
}

static nng_tls_engine_config_ops config_ops = {
    .size = sizeof(nng_tls_engine_config),
    .init = config_init,
    .fini = config_fini,
    .server = config_server,
    .auth = config_auth,
    .ca_chain = config_ca_chain,
    .own_cert = config_own_cert,
    .version = config_version,
};

static nng_tls_engine_conn_ops conn_ops = {
    .size = sizeof(nng_tls_engine_conn),
    .init = conn_init,
    .fini = conn_fini,
    .close = conn_close,
    .handshake = conn_handshake,
    .recv = conn_recv,
    .send = conn_send,
    .verified = conn_verified,
};

static const nng_tls_engine engine = {
    .version = NNG_TLS_ENGINE_VERSION,
    .config_ops = &config_ops,
    .conn_ops = &conn_ops,
    .name = "gnutls",
    .description = "GnuTLS (twind)",
    .fips_mode = false,
};

static pthread_once_t use_once = PTHREAD_ONCE_INIT;
static int use_rc;

static void use_engine(void)
{
    /* nng registers its built-in engine when it initializes, which
     * nng_tls_engine_register() does not trigger: initialize it first so
     * ours is not replaced afterwards */
    (void)nng_tls_engine_name();
    int rv = nng_tls_engine_register(&engine);
    if (rv != 0) {
        tw_log_error(MOD, "cannot register the GnuTLS engine with nng: %s", nng_strerror(rv));
        use_rc = TW_EUNSUPPORTED;
    }
}

int tw_nng_tls_engine_use(void)
{
    pthread_once(&use_once, use_engine);
    return use_rc;
}

/* A copy of a peer chain (at most CHAIN_MAX certificates). */
#define CHAIN_MAX 8
typedef struct chain_copy {
    gnutls_datum_t d[CHAIN_MAX];
    unsigned n;
} chain_copy;

static void chain_copy_free(chain_copy *c)
{
    for (unsigned i = 0; i < c->n; i++)
        free(c->d[i].data);
    c->n = 0;
}

/* watch_mtx held. */
static int chain_copy_of(nng_tls_engine_conn *ec, chain_copy *c)
{
    unsigned n = 0;
    const gnutls_datum_t *chain = ec->s ? gnutls_certificate_get_peers(ec->s, &n) : NULL;
    c->n = 0;
    for (unsigned i = 0; chain && i < n && i < CHAIN_MAX; i++) {
        c->d[i].data = malloc(chain[i].size ? chain[i].size : 1);
        if (!c->d[i].data) {
            chain_copy_free(c);
            return TW_ENOMEM;
        }
        memcpy(c->d[i].data, chain[i].data, chain[i].size);
        c->d[i].size = chain[i].size;
        c->n++;
    }
    return 0;
}

int tw_nng_tls_watch(nng_stream *st, tw_nng_tls_peer_fn fn, void *arg, uint64_t key)
{
    nng_sockaddr sa, la;
    if (nng_stream_get_addr(st, NNG_OPT_REMADDR, &sa) != 0) return TW_ENOTFOUND;
    bool has_la = nng_stream_get_addr(st, NNG_OPT_LOCADDR, &la) == 0;
    nng_tls_engine_conn *ec = NULL, *by_addr = NULL;
    int matches = 0;
    pthread_mutex_lock(&watch_mtx);
    for (ec = watch_tab[bucket(&sa)]; ec && ec->tls != (void *)st; ec = ec->next)
        if (!ec->closed && same_peer(&ec->peer, &sa) && has_la && ec->has_local &&
            same_peer(&ec->local, &la)) {
            by_addr = ec;
            matches++;
        }
    if (!ec) ec = matches == 1 ? by_addr : NULL; /* never a guess between two */
    bool done = ec && ec->hs_done;
    chain_copy cc = {.n = 0};
    int rc = 0;
    if (ec && !done) {
        ec->fn = fn;
        ec->arg = arg;
        ec->key = key;
    } else if (ec) {
        /* wss:// (a tls+tcp stream nobody read or wrote yet has not shaken
         * hands): its chain, copied while the connection surely lives */
        rc = chain_copy_of(ec, &cc);
    }
    pthread_mutex_unlock(&watch_mtx);
    if (!ec) return TW_ENOTFOUND;
    if (rc) return rc;
    if (done) {
        fn(arg, key, cc.n ? cc.d : NULL, cc.n);
        chain_copy_free(&cc);
    }
    return 0;
}
