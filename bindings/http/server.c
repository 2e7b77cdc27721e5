/*
 * server.c - the binding object: configuration, the libmicrohttpd daemons
 * (HTTPS on the generated certificate, optional loopback HTTP), the
 * tw_binding_ops table and the housekeeping thread.
 *
 * Each listener is one libmicrohttpd daemon with its own epoll threads
 * (MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, a small thread pool) and
 * suspend/resume: a request waiting for the router and an idle SSE stream
 * are suspended connections, never a thread each.
 *
 * The housekeeper wakes every 20 ms: it resumes calls whose wait expired,
 * writes SSE heartbeats and frees parked per-connection data after its
 * grace period (see http_int.h for why it is parked).
 */
#include "http_int.h"

#include "runtime/tls.h"

#include "twin/twin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#define GRAVE_DELAY_US 2000000

/* ---- configuration ------------------------------------------------------ */

static int cfg_uint(json_t *sec, const char *key, size_t lo, size_t hi, size_t *out)
{
    json_t *v = sec ? json_object_get(sec, key) : NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)lo ||
        (hi && json_integer_value(v) > (json_int_t)hi)) {
        tw_log_error(HTTP_LOG, "config: http.%s must be an integer in [%zu, %zu]", key, lo, hi);
        return TW_EINVAL;
    }
    *out = (size_t)json_integer_value(v);
    return 0;
}

static int cfg_addr(json_t *sec, const char *key, const char *def, char *out, size_t n)
{
    json_t *v = sec ? json_object_get(sec, key) : NULL;
    if (!v) return tw_strlcpy(out, def, n);
    if (json_is_null(v) || json_is_false(v)) {
        out[0] = '\0';
        return 0;
    }
    if (!json_is_string(v) || tw_strlcpy(out, json_string_value(v), n)) {
        tw_log_error(HTTP_LOG, "config: http.%s must be \"ADDR:PORT\" or null", key);
        return TW_EINVAL;
    }
    return 0;
}

static int parse_config(json_t *sec, http_cfg *c)
{
    size_t v;
    int rc = 0;
    memset(c, 0, sizeof *c);
    c->max_body = 1024 * 1024;
    c->max_header = 8192;
    c->max_connections = 20000;
    c->idle_timeout_s = 60;
    c->stream_queue = 256 * 1024;
    c->replay_window = 8192;
    c->replay_bytes = 64u * 1024 * 1024;
    c->heartbeat_s = 15;
    c->action_wait_ms = 2000;
    c->threads = 2;
    if (sec && !json_is_object(sec)) {
        tw_log_error(HTTP_LOG, "config: http must be an object");
        return TW_EINVAL;
    }
    rc |= cfg_addr(sec, "https", "0.0.0.0:8444", c->https_addr, sizeof c->https_addr);
    rc |= cfg_addr(sec, "http", "", c->http_addr, sizeof c->http_addr);
    rc |= cfg_addr(sec, "public_url", "", c->public_url, sizeof c->public_url);
    rc |= cfg_uint(sec, "max_body", 0, (size_t)1 << 30, &c->max_body);
    rc |= cfg_uint(sec, "max_header", 1024, 1 << 20, &c->max_header);
    v = c->max_connections;
    rc |= cfg_uint(sec, "max_connections", 1, 1000000, &v);
    c->max_connections = (unsigned)v;
    v = c->idle_timeout_s;
    rc |= cfg_uint(sec, "idle_timeout_s", 1, 86400, &v);
    c->idle_timeout_s = (unsigned)v;
    rc |= cfg_uint(sec, "stream_queue", 1024, (size_t)1 << 30, &c->stream_queue);
    rc |= cfg_uint(sec, "replay_window", 16, 10000000, &c->replay_window);
    rc |= cfg_uint(sec, "replay_bytes", 65536, (size_t)1 << 34, &c->replay_bytes);
    v = c->heartbeat_s;
    rc |= cfg_uint(sec, "heartbeat_s", 1, 3600, &v);
    c->heartbeat_s = (unsigned)v;
    v = c->action_wait_ms;
    rc |= cfg_uint(sec, "action_wait_ms", 0, 600000, &v);
    c->action_wait_ms = (unsigned)v;
    v = c->threads;
    rc |= cfg_uint(sec, "threads", 1, 64, &v);
    c->threads = (unsigned)v;
    return rc ? TW_EINVAL : 0;
}

/* "host:port", "[v6]:port" -> sockaddr. */
static int resolve_addr(const char *spec, struct sockaddr_storage *ss, socklen_t *len, bool *v6)
{
    char host[128];
    const char *port;
    if (spec[0] == '[') {
        const char *e = strchr(spec, ']');
        if (!e || e[1] != ':' || (size_t)(e - spec - 1) >= sizeof host) return TW_EINVAL;
        memcpy(host, spec + 1, (size_t)(e - spec - 1));
        host[e - spec - 1] = '\0';
        port = e + 2;
    } else {
        const char *c = strrchr(spec, ':');
        if (!c || (size_t)(c - spec) >= sizeof host) return TW_EINVAL;
        memcpy(host, spec, (size_t)(c - spec));
        host[c - spec] = '\0';
        port = c + 1;
    }
    char *end;
    long p = strtol(port, &end, 10);
    if (!*port || *end || p < 0 || p > 65535) return TW_EINVAL;
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    if (getaddrinfo(host[0] ? host : NULL, port, &hints, &ai) || !ai) return TW_EINVAL;
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    *v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    return 0;
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
    }
    return false;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 4096) {
            char *nb = realloc(buf, cap + 8192);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
            cap += 8192;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0 || len > 1024 * 1024) break;
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

/* ---- graveyard ---------------------------------------------------------- */

static void bdata_free(http_bdata *bd)
{
    if (bd->tag == BDATA_CALL) {
        http_call *c = (http_call *)bd;
        if (c->resp) tw_msg_unref(c->resp);
        pthread_mutex_destroy(&c->mu);
    } else {
        http_stream *s = (http_stream *)bd;
        free(s->buf);
        free(s->filters);
        pthread_mutex_destroy(&s->mu);
    }
    free(bd);
}

void http_graveyard_park(tw_http *h, http_bdata *bd)
{
    bd->grave_us = tw_mono_us();
    bd->grave_next = NULL;
    pthread_mutex_lock(&h->mu);
    if (h->grave_tail)
        h->grave_tail->grave_next = bd;
    else
        h->grave_head = bd;
    h->grave_tail = bd;
    pthread_mutex_unlock(&h->mu);
}

static void graveyard_sweep(tw_http *h, int64_t now_us, bool all)
{
    http_bdata *list = NULL, **tail = &list;
    pthread_mutex_lock(&h->mu);
    while (h->grave_head && (all || now_us - h->grave_head->grave_us >= GRAVE_DELAY_US)) {
        http_bdata *bd = h->grave_head;
        h->grave_head = bd->grave_next;
        if (!h->grave_head) h->grave_tail = NULL;
        bd->grave_next = NULL;
        *tail = bd;
        tail = &bd->grave_next;
    }
    pthread_mutex_unlock(&h->mu);
    while (list) {
        http_bdata *n = list->grave_next;
        bdata_free(list);
        list = n;
    }
}

/* ---- housekeeper -------------------------------------------------------- */

static void *housekeeper(void *arg)
{
    tw_http *h = arg;
    int64_t last_hb = tw_mono_us();
    pthread_mutex_lock(&h->mu);
    while (!atomic_load(&h->stopping)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&h->cond, &h->mu, &ts);
        if (atomic_load(&h->stopping)) break;
        pthread_mutex_unlock(&h->mu);
        int64_t now = tw_mono_us();
        http_calls_expire(h, now);
        if (now - last_hb >= 1000000) {
            http_sse_heartbeat(h, now);
            http_sse_expire_subs(h, now, false);
            last_hb = now;
        }
        http_sse_reap_hangups(h);
        graveyard_sweep(h, now, false);
        pthread_mutex_lock(&h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* ---- daemons ------------------------------------------------------------ */

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    tw_log_debug(HTTP_LOG, "libmicrohttpd: %s", buf);
}

static int write_port_file(tw_http *h, const char *name, int port)
{
    const tw_config *cfg = tw_runtime_config(h->rt);
    char path[1200], tmp[1210];
    snprintf(path, sizeof path, "%s/%s", cfg->data_dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return TW_EIO;
    fprintf(f, "%d\n", port);
    if (fclose(f) != 0 || rename(tmp, path) != 0) return TW_EIO;
    return 0;
}

static void make_base(const tw_http *h, const struct sockaddr_storage *ss, bool tls, int port,
                      char *out, size_t n)
{
    char host[256] = "localhost";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        if (a->sin_addr.s_addr != htonl(INADDR_ANY))
            inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        else if (gethostname(host, sizeof host) != 0)
            strcpy(host, "localhost");
        snprintf(out, n, "%s://%s:%d", tls ? "https" : "http", host, port);
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        if (!IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr)) {
            char v6[INET6_ADDRSTRLEN];
            inet_ntop(AF_INET6, &a->sin6_addr, v6, sizeof v6);
            snprintf(out, n, "%s://[%s]:%d", tls ? "https" : "http", v6, port);
            return;
        }
        if (gethostname(host, sizeof host) != 0) strcpy(host, "localhost");
        snprintf(out, n, "%s://%s:%d", tls ? "https" : "http", host, port);
    }
    (void)h;
}

static int start_daemon(tw_http *h, const char *spec, bool tls)
{
    struct sockaddr_storage ss;
    socklen_t slen;
    bool v6;
    if (resolve_addr(spec, &ss, &slen, &v6)) {
        tw_log_error(HTTP_LOG, "bad listen address \"%s\" (want HOST:PORT)", spec);
        return TW_EINVAL;
    }
    if (!tls && !is_loopback(&ss)) {
        tw_log_error(HTTP_LOG,
                     "plain HTTP refused on %s: only loopback addresses may serve "
                     "without TLS",
                     spec);
        return TW_EPERM;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_TURBO;
    if (v6) flags |= MHD_USE_IPv6;
    if (tls) {
        const tw_config *cfg = tw_runtime_config(h->rt);
        char path[1200];
        snprintf(path, sizeof path, "%s/tls/server.pem", cfg->data_dir);
        if (!h->tls_cert) h->tls_cert = read_file(path);
        snprintf(path, sizeof path, "%s/tls/server.key", cfg->data_dir);
        if (!h->tls_key) h->tls_key = read_file(path);
        if (!h->tls_cert || !h->tls_key) {
            tw_log_error(HTTP_LOG, "HTTPS needs %s/tls/server.pem and server.key", cfg->data_dir);
            return TW_EIO;
        }
        /* Mutual TLS is optional: libmicrohttpd asks for (does not require)
         * a client certificate once it has a CA to trust; a request that
         * has no bearer token is then authenticated by its certificate. */
        snprintf(path, sizeof path, "%s/tls/ca.pem", cfg->data_dir);
        if (!h->tls_ca && (h->tls_ca = read_file(path)) && !h->verifier &&
            tw_tls_verifier_new(path, &h->verifier))
            tw_log_warn(HTTP_LOG, "cannot load %s: client certificates are not accepted", path);
        flags |= MHD_USE_TLS;
    }
    /* Per-connection memory pool: request line and headers plus the write
     * buffer an SSE stream's reader fills (its coalesced write size).
     * libmicrohttpd clears the pool between requests on a keep-alive
     * connection, so a bigger pool costs every request. It holds headers
     * of up to twice max_header: route.c answers those over the limit with
     * a 431 problem; only beyond that does libmicrohttpd refuse them itself
     * (with an HTML page: 0.9.75 has no hook for its own 431). */
    size_t mem = 2 * h->cfg.max_header + 8 * 1024;
    struct MHD_OptionItem opts[20];
    int n = 0;
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, &ss};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, h->cfg.threads, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, h->cfg.max_connections, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, h->cfg.idle_timeout_s, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)mem, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)http_completed, h};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)http_connection, h};
    opts[n++] =
        (struct MHD_OptionItem){MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)http_unescape_noop, h};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_logger, h};
    if (tls) {
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, h->tls_cert};
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, h->tls_key};
        if (h->tls_ca && h->verifier)
            opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_TRUST, 0, h->tls_ca};
    }
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    struct MHD_Daemon *d = MHD_start_daemon(flags, 0, NULL, NULL, http_access, h, MHD_OPTION_ARRAY,
                                            opts, MHD_OPTION_END);
    if (!d) {
        tw_log_error(HTTP_LOG, "cannot listen on %s (%s)", spec, strerror(errno));
        return TW_EIO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    int port = di ? di->port : 0;
    if (tls) {
        h->d_https = d;
        h->port_https = port;
        make_base(h, &ss, true, port, h->base_https, sizeof h->base_https);
    } else {
        h->d_http = d;
        h->port_http = port;
        make_base(h, &ss, false, port, h->base_http, sizeof h->base_http);
    }
    /* "http: listening on http://127.0.0.1:PORT", the host as configured. */
    {
        char host[128];
        const char *c = strrchr(spec, ':');
        size_t hl = c ? (size_t)(c - spec) : strlen(spec);
        if (hl >= sizeof host) hl = sizeof host - 1;
        memcpy(host, spec, hl);
        host[hl] = '\0';
        tw_log_info(HTTP_LOG, "listening on %s://%s:%d", tls ? "https" : "http", host, port);
    }
    if (write_port_file(h, tls ? "https.port" : "http.port", port))
        tw_log_warn(HTTP_LOG, "cannot write the port file in the data directory");
    return 0;
}

void http_new_id(tw_http *h, char *out)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t n = atomic_fetch_add_explicit(&h->id_next, 1, memory_order_relaxed);
    size_t p = strlen(h->id_prefix);
    memcpy(out, h->id_prefix, p);
    char tmp[16];
    int k = 0;
    do {
        tmp[k++] = hex[n & 15];
        n >>= 4;
    } while (n);
    while (k)
        out[p++] = tmp[--k];
    out[p] = '\0';
}

tw_msg *http_request_new(tw_http *h, tw_op op, const char *thing, const char *name,
                         const char *sender, json_t *input, json_t **problem)
{
    char id[TW_ID_MAX], corr[TW_ID_MAX], ts[TW_TIME_LEN];
    http_new_id(h, id);
    http_new_id(h, corr);
    tw_time_format(tw_now_ms(), ts);
    json_t *o = json_object();
    if (o) {
        json_object_set_new_nocheck(o, "type", json_string_nocheck("request"));
        json_object_set_new_nocheck(o, "operation", json_string_nocheck(tw_op_name(op)));
        json_object_set_new_nocheck(o, "messageID", json_string_nocheck(id));
        json_object_set_new_nocheck(o, "created", json_string_nocheck(ts));
        json_object_set_new_nocheck(o, "senderID", json_string(sender));
    }
    if (!o) {
        json_decref(input);
        *problem = tw_problem_from_error(TW_ENOMEM, NULL, NULL);
        return NULL;
    }
    if (thing) json_object_set_new(o, "thingID", json_string(thing));
    if (name) json_object_set_new(o, "name", json_string(name));
    json_object_set_new_nocheck(o, "correlationID", json_string_nocheck(corr));
    if (input) json_object_set_new(o, "input", input);
    tw_msg *m = NULL;
    *problem = NULL;
    if (tw_msg_from_json(o, &m, problem)) { /* e.g. an invalid thing id */
        if (!*problem) *problem = tw_problem_from_error(TW_EINVAL, NULL, NULL);
        return NULL;
    }
    return m;
}

const char *http_base(tw_http *h)
{
    if (h->cfg.public_url[0]) return h->cfg.public_url;
    return h->d_https ? h->base_https : h->base_http;
}

/* ---- ops ---------------------------------------------------------------- */

static int ops_start(tw_binding *b)
{
    tw_http *h = b->impl;
    void *tctx = NULL;
    const tw_twin_ops *tops = tw_runtime_twin(h->rt, &tctx);
    if (!h->dir && tops && tops == tw_twin_ops_table() && tctx) h->dir = tw_twin_dir(tctx);
    if (!h->values && tops && tops == tw_twin_ops_table() && tctx) h->values = tw_twin_values(tctx);
    atomic_store(&h->stopping, false);
    if (pthread_create(&h->housekeeper, NULL, housekeeper, h)) return TW_ENOMEM;
    h->housekeeper_started = true;
    int rc = 0;
    if (h->cfg.https_addr[0]) rc = start_daemon(h, h->cfg.https_addr, true);
    if (!rc && h->cfg.http_addr[0]) rc = start_daemon(h, h->cfg.http_addr, false);
    if (!rc && !h->d_https && !h->d_http) {
        tw_log_error(HTTP_LOG, "neither https nor http is configured");
        rc = TW_EINVAL;
    }
    if (!rc) http_dir_attach(h);
    if (!rc) {
        /* The recorder: unauthenticated, never a target of anything but
         * the fan-out it subscribes to directly. It starts recording when
         * the first stream opens (http_recorder_start). */
        h->recorder_bd.tag = BDATA_RECORDER;
        h->recorder = tw_conn_new(h->rt, h->b, &h->recorder_bd, "replay-window");
        if (!h->recorder) rc = TW_ENOMEM;
    }
    return rc;
}

int http_recorder_start(tw_http *h)
{
    /* Until a stream has been opened, no client can hold an id of this
     * window to resume from, so there is nothing to record for: a runtime
     * whose consumers all use nng pays nothing for the window. */
    if (atomic_load_explicit(&h->recording, memory_order_acquire)) return 0;
    pthread_mutex_lock(&h->mu);
    int rc = 0;
    if (!atomic_load_explicit(&h->recording, memory_order_relaxed) && h->recorder) {
        rc = tw_conn_subscribe(h->recorder, TW_SUB_EVENT, "*", "*");
        if (!rc) rc = tw_conn_subscribe(h->recorder, TW_SUB_PROPERTY, "*", "*");
        if (!rc) atomic_store_explicit(&h->recording, true, memory_order_release);
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

static void ops_stop(tw_binding *b)
{
    tw_http *h = b->impl;
    if (atomic_exchange(&h->stopping, true) && !h->housekeeper_started) return;
    /* The housekeeper first: from here on only this thread resumes
     * connections, so nothing of ours holds h->mu while libmicrohttpd shuts
     * connections down and calls http_completed. */
    if (h->housekeeper_started) {
        pthread_mutex_lock(&h->mu);
        pthread_cond_broadcast(&h->cond);
        pthread_mutex_unlock(&h->mu);
        pthread_join(h->housekeeper, NULL);
        h->housekeeper_started = false;
    }
    http_dir_detach(h);
    if (h->recorder) {
        tw_conn_close(h->recorder);
        tw_conn_unref(h->recorder);
        h->recorder = NULL;
    }
    /* Every suspended connection must be resumed before the daemon stops. */
    http_sse_end_all(h);
    http_calls_abort_all(h);
    if (h->d_https) MHD_quiesce_daemon(h->d_https);
    if (h->d_http) MHD_quiesce_daemon(h->d_http);
    if (h->d_https) MHD_stop_daemon(h->d_https);
    if (h->d_http) MHD_stop_daemon(h->d_http);
    h->d_https = h->d_http = NULL;
}

static int ops_send(tw_binding *b, tw_conn *c, tw_msg *m)
{
    tw_http *h = b->impl;
    http_bdata *bd = tw_conn_bdata(c);
    if (!bd) return TW_ECLOSED;
    if (bd->tag == BDATA_CALL) return http_call_send(h, (http_call *)bd, m);
    if (bd->tag == BDATA_RECORDER) {
        rp_item_unref(http_replay_get(h->replay, m, NULL));
        return 0;
    }
    return http_sse_send(h, (http_stream *)bd, m);
}

static void ops_close_conn(tw_binding *b, tw_conn *c)
{
    tw_http *h = b->impl;
    http_bdata *bd = tw_conn_bdata(c);
    if (bd && bd->tag == BDATA_STREAM) http_sse_close_session(h, c);
    tw_conn_close(c);
}

static void ops_destroy(tw_binding *b)
{
    tw_http *h = b->impl;
    if (!h) return;
    ops_stop(b);
    graveyard_sweep(h, 0, true);
    http_replay_free(h->replay);
    http_sse_expire_subs(h, 0, true);
    tw_hmap_fini(&h->sess_subs);
    if (h->hup_ep >= 0) close(h->hup_ep);
    free(h->tls_cert);
    free(h->tls_key);
    free(h->tls_ca);
    if (h->verifier) tw_tls_verifier_free(h->verifier);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cond);
    free(h);
    b->impl = NULL;
}

static const tw_binding_ops http_ops = {
    .name = "http",
    .start = ops_start,
    .stop = ops_stop,
    .send = ops_send,
    .close_conn = ops_close_conn,
    .add_forms = http_add_forms,
    .destroy = ops_destroy,
};

int tw_http_binding_new(tw_runtime *rt, json_t *section, tw_binding **out)
{
    tw_http *h = calloc(1, sizeof *h);
    if (!h) return TW_ENOMEM;
    int rc = parse_config(section, &h->cfg);
    if (rc) {
        free(h);
        return rc;
    }
    h->rt = rt;
    {
        char rnd[TW_ID_MAX];
        tw_id_new("h", rnd);
        snprintf(h->id_prefix, sizeof h->id_prefix, "%.16s-", rnd);
    }
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cond, NULL);
    tw_hmap_init(&h->sess_subs);
    atomic_store(&h->stopping, true);
    h->hup_ep = epoll_create1(EPOLL_CLOEXEC);
    if (h->hup_ep < 0 ||
        (rc = http_replay_new(h->cfg.replay_window, h->cfg.replay_bytes, &h->replay)) != 0) {
        if (h->hup_ep >= 0) close(h->hup_ep);
        pthread_mutex_destroy(&h->mu);
        pthread_cond_destroy(&h->cond);
        free(h);
        return rc;
    }
    tw_binding *b = NULL;
    if ((rc = tw_runtime_add_binding(rt, &http_ops, h, &b)) != 0) {
        http_replay_free(h->replay);
        close(h->hup_ep);
        pthread_mutex_destroy(&h->mu);
        pthread_cond_destroy(&h->cond);
        free(h);
        return rc;
    }
    h->b = b;
    if (out) *out = b;
    return 0;
}

int tw_http_binding_port(tw_binding *b, bool tls)
{
    tw_http *h = b->impl;
    return tls ? h->port_https : h->port_http;
}
