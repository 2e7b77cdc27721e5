/*
 * route.c - the access handler: request context, the request line and
 * headers within max_header (a 431 problem; libmicrohttpd's own answer is an
 * HTML page), body collection within max_body, path splitting and dispatch
 * to the endpoint files.
 *
 * libmicrohttpd is told not to unescape anything (http_unescape_noop): the
 * raw path is split on '/' first and each segment percent-decoded after, so
 * a Thing id may contain an encoded '/'. Query arguments are decoded on use.
 *
 * The handler runs on libmicrohttpd's threads. A request that waits for the
 * router was suspended by call.c; when it is resumed libmicrohttpd calls the
 * handler again and r->on_answer finishes it.
 */
#include "http_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t http_unescape_noop(void *cls, struct MHD_Connection *c, char *s)
{
    return strlen(s);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

long http_pct_decode(char *s, bool plus)
{
    char *w = s;
    for (const char *p = s; *p; p++) {
        if (*p == '%') {
            int hi = hexval((unsigned char)p[1]), lo = hi < 0 ? -1 : hexval((unsigned char)p[2]);
            if (hi < 0 || lo < 0) return -1;
            int v = hi * 16 + lo;
            if (v == 0) return -1;
            *w++ = (char)v;
            p += 2;
        } else if (plus && *p == '+') {
            *w++ = ' ';
        } else {
            *w++ = *p;
        }
    }
    *w = '\0';
    if (!tw_utf8_valid(s, (size_t)(w - s))) return -1;
    return (long)(w - s);
}

void http_seg_encode(char *out, size_t n, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t w = strlen(out);
    for (; *s && w + 4 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            strchr("-._~:@!$&'()*+,;=", c)) {
            out[w++] = (char)c;
        } else {
            out[w++] = '%';
            out[w++] = hex[c >> 4];
            out[w++] = hex[c & 15];
        }
    }
    out[w] = '\0';
}

char *http_query(http_req *r, const char *key, bool *bad)
{
    const char *v = MHD_lookup_connection_value(r->mc, MHD_GET_ARGUMENT_KIND, key);
    if (!v) return NULL;
    char *s = strdup(v);
    if (!s) {
        *bad = true;
        return NULL;
    }
    if (http_pct_decode(s, true) < 0) {
        free(s);
        *bad = true;
        return NULL;
    }
    return s;
}

const char *http_header(http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->mc, MHD_HEADER_KIND, name);
}

bool http_wants_sse(http_req *r)
{
    const char *a = http_header(r, "Accept");
    return a && strstr(a, "text/event-stream") != NULL;
}

static void sock_remote(struct MHD_Connection *mc, char *out, size_t n)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, n, "?");
    if (!ci || !ci->client_addr) return;
    const struct sockaddr *sa = ci->client_addr;
    char a[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, a, sizeof a);
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in = (const void *)sa;
        inet_ntop(AF_INET6, &in->sin6_addr, a, sizeof a);
        port = ntohs(in->sin6_port);
    }
    snprintf(out, n, "%s:%d", a, port);
}

void http_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
                     enum MHD_ConnectionNotificationCode toe)
{
    tw_http *h = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        http_sock *sk = calloc(1, sizeof *sk);
        if (sk) sock_remote(mc, sk->remote, sizeof sk->remote);
        *socket_context = sk;
        return;
    }
    http_sock *sk = *socket_context;
    *socket_context = NULL;
    if (!sk) return;
    if (sk->call) http_call_free(h, sk->call);
    if (sk->read_req) tw_msg_unref(sk->read_req);
    json_decref(sk->read_val);
    if (sk->read_resp) MHD_destroy_response(sk->read_resp);
    free(sk->tok);
    free(sk);
}

static http_req *req_new(tw_http *h, struct MHD_Connection *mc, const char *url, const char *method)
{
    /* One allocation: the request, its path and the path's segments. */
    size_t n = strlen(url);
    http_req *r = calloc(1, sizeof *r + 2 * (n + 1));
    if (!r) return NULL;
    r->h = h;
    r->mc = mc;
    r->method = method;
    r->head = strcmp(method, "HEAD") == 0;
    r->path = (char *)(r + 1);
    memcpy(r->path, url, n + 1);
    r->segbuf = r->path + n + 1;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->sock = ci ? ci->socket_context : NULL;
    r->remote = r->sock ? r->sock->remote : "?";
    return r;
}

/* Splits the raw path into decoded segments. false when malformed. */
static bool split_path(http_req *r)
{
    const char *p = r->path;
    if (*p != '/') return false;
    strcpy(r->segbuf, p + 1);
    char *s = r->segbuf;
    size_t n = strlen(s);
    if (n && s[n - 1] == '/') s[n - 1] = '\0'; /* tolerate one trailing slash */
    r->nsegs = 0;
    if (!*s) return true;
    for (;;) {
        if (r->nsegs == (int)(sizeof r->segs / sizeof r->segs[0])) return false;
        char *slash = strchr(s, '/');
        if (slash) *slash = '\0';
        if (http_pct_decode(s, false) < 0) return false;
        r->segs[r->nsegs++] = s;
        if (!slash) break;
        s = slash + 1;
    }
    return true;
}

static enum MHD_Result add_size(void *cls, enum MHD_ValueKind kind, const char *key,
                                size_t key_size, const char *value, size_t value_size)
{
    *(size_t *)cls += key_size + value_size + 4; /* "key: value\r\n", "key=value&" */
    return MHD_YES;
}

/* Bytes of the request line and headers, as the client sent them (give or
 * take the whitespace libmicrohttpd dropped). */
static size_t head_size(struct MHD_Connection *mc, const char *url, const char *method,
                        const char *version)
{
    size_t n = strlen(method) + strlen(url) + strlen(version) + 4;
    MHD_get_connection_values_n(mc, MHD_HEADER_KIND | MHD_GET_ARGUMENT_KIND, add_size, &n);
    return n;
}

static void count(tw_http *h, int kind)
{
    atomic_fetch_add_explicit(&h->st.rejected[kind], 1, memory_order_relaxed);
}

static enum MHD_Result dispatch(http_req *r)
{
    enum MHD_Result res;
    if (!split_path(r)) {
        count(r->h, 0);
        return http_reply_error(r, 400, "bad-path", "malformed path",
                                "the path is not valid percent-encoded UTF-8 or too deep");
    }
    const char *s0 = r->nsegs ? r->segs[0] : "";
    /* Public endpoints. */
    if (r->nsegs == 0 || strcmp(s0, "index.html") == 0 || strcmp(s0, "static") == 0 ||
        strcmp(s0, "favicon.ico") == 0)
        return http_static_route(r);
    if (strcmp(s0, ".well-known") == 0) return http_wellknown_route(r);
    if (strcmp(s0, "authn") == 0) return http_authn_route(r);
    /* Everything else needs a bearer token. */
    if (!http_authenticate(r, &res)) return res;
    if (strcmp(s0, "things") == 0) {
        if (r->nsegs >= 3) return http_affordance_route(r);
        return http_things_route(r);
    }
    if (strcmp(s0, "search") == 0) return http_search_route(r);
    if (strcmp(s0, "events") == 0) return http_dir_events_route(r);
    if (strcmp(s0, "sse") == 0) return http_sse_route(r);
    if (strcmp(s0, "messages") == 0) return http_messages_route(r);
    if (strcmp(s0, "metrics") == 0) return http_metrics_route(r);
    return http_reply_code(r, TW_ENOTFOUND, "no such resource");
}

enum MHD_Result http_access(void *cls, struct MHD_Connection *mc, const char *url,
                            const char *method, const char *version, const char *upload,
                            size_t *upload_size, void **con_cls)
{
    tw_http *h = cls;
    http_req *r = *con_cls;
    if (!r) {
        r = req_new(h, mc, url, method);
        if (!r) return MHD_NO;
        *con_cls = r;
        atomic_fetch_add_explicit(&h->st.requests, 1, memory_order_relaxed);
        if (atomic_load(&h->stopping))
            return http_reply_error(r, 503, "stopping", "service unavailable",
                                    "the runtime is stopping");
        /* libmicrohttpd's own 431 is an HTML page; its pool is twice the
         * limit (server.c), so every request up to that size is checked
         * here and gets a problem instead. */
        if (head_size(mc, url, method, version) > h->cfg.max_header) {
            count(h, 7);
            return http_reply_error(r, 431, "header-too-big", "request header fields too large",
                                    "the request line and headers exceed the limit");
        }
        const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            unsigned long long v = strtoull(cl, &end, 10);
            if (*end || v > h->cfg.max_body) {
                count(h, 1);
                return http_reply_error(r, 413, "too-big", "content too large",
                                        "the request body exceeds the limit");
            }
        }
        return MHD_YES;
    }
    if (r->call) {
        /* Resumed after the router answered (or the wait expired). */
        tw_msg *resp = NULL;
        if (!http_call_ready(r, &resp)) return http_call_wait_again(r);
        enum MHD_Result res = r->on_answer(r, resp);
        if (resp) tw_msg_unref(resp);
        http_call_release(r);
        return res;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (r->body_too_big) return MHD_YES;
        if (r->body_len + n > h->cfg.max_body) {
            r->body_too_big = true;
            free(r->body);
            r->body = NULL;
            r->body_len = r->body_cap = 0;
            return MHD_YES;
        }
        if (r->body_len + n + 1 > r->body_cap) {
            size_t cap = r->body_cap ? r->body_cap : 1024;
            while (cap < r->body_len + n + 1)
                cap *= 2;
            char *nb = realloc(r->body, cap);
            if (!nb) return MHD_NO;
            r->body = nb;
            r->body_cap = cap;
        }
        memcpy(r->body + r->body_len, upload, n);
        r->body_len += n;
        r->body[r->body_len] = '\0';
        return MHD_YES;
    }
    if (r->body_too_big) {
        count(h, 1);
        return http_reply_error(r, 413, "too-big", "content too large",
                                "the request body exceeds the limit");
    }
    return dispatch(r);
}

void http_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    http_req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    if (r->call) http_call_release(r);
    if (r->stream) http_sse_closed(r->stream);
    free(r->body);
    free(r);
}
