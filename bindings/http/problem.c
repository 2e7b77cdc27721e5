/*
 * problem.c - building responses: JSON bodies, RFC 9457 problems with the
 * headers their status needs (401 WWW-Authenticate: Bearer, 405 Allow, 429
 * Retry-After), and strict parsing of JSON request bodies (media type,
 * nesting depth, UTF-8 and syntax checked before anything is used).
 *
 * Response status counters for /metrics are kept here because every
 * response passes through queue_response().
 */
#include "http_int.h"

#include "runtime/json_enc.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void count_status(tw_http *h, int status)
{
    int i = status < 300 ? 0 : status < 400 ? 1 : status < 500 ? 2 : 3;
    atomic_fetch_add_explicit(&h->st.by_status[i], 1, memory_order_relaxed);
    if (status == 401) atomic_fetch_add_explicit(&h->st.by_status[4], 1, memory_order_relaxed);
    if (status == 429) atomic_fetch_add_explicit(&h->st.by_status[5], 1, memory_order_relaxed);
}

static enum MHD_Result queue_response(http_req *r, int status, struct MHD_Response *resp,
                                      const char *ctype, va_list ap)
{
    if (!resp) return MHD_NO;
    if (ctype) MHD_add_response_header(resp, "Content-Type", ctype);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k) break;
        const char *v = va_arg(ap, const char *);
        if (v) MHD_add_response_header(resp, k, v);
    }
    count_status(r->h, status);
    enum MHD_Result res = MHD_queue_response(r->mc, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return res;
}

enum MHD_Result http_reply_response(http_req *r, int status, struct MHD_Response *resp)
{
    count_status(r->h, status);
    return MHD_queue_response(r->mc, (unsigned)status, resp);
}

enum MHD_Result http_reply_bytes(http_req *r, int status, const char *ctype, const char *bytes,
                                 size_t len, bool copy, ...)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, (void *)bytes, copy ? MHD_RESPMEM_MUST_COPY : MHD_RESPMEM_PERSISTENT);
    va_list ap;
    va_start(ap, copy);
    enum MHD_Result res = queue_response(r, status, resp, ctype, ap);
    va_end(ap);
    return res;
}

static struct MHD_Response *json_response(json_t *body)
{
    if (!body) return MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    size_t len = 0;
    char *s = tw_json_encode(body, &len);
    json_decref(body);
    if (!s) return NULL;
    return MHD_create_response_from_buffer(len, s, MHD_RESPMEM_MUST_FREE);
}

enum MHD_Result http_reply_json(http_req *r, int status, const char *ctype, json_t *body, ...)
{
    struct MHD_Response *resp = json_response(body);
    va_list ap;
    va_start(ap, body);
    enum MHD_Result res =
        queue_response(r, status, resp, body ? (ctype ? ctype : "application/json") : NULL, ap);
    va_end(ap);
    return res;
}

enum MHD_Result http_reply_empty(http_req *r, int status, ...)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    va_list ap;
    va_start(ap, status);
    enum MHD_Result res = queue_response(r, status, resp, NULL, ap);
    va_end(ap);
    return res;
}

static enum MHD_Result reply_problem_allow(http_req *r, json_t *problem, const char *allow)
{
    json_t *st = json_object_get(problem, "status");
    int status = json_is_integer(st) ? (int)json_integer_value(st) : 500;
    if (status < 400 || status > 599) status = 500;
    char retry[24] = "";
    const char *www = NULL;
    if (status == 401) www = "Bearer realm=\"twind\"";
    if (status == 429) {
        json_t *ra = json_object_get(problem, "retryAfter");
        snprintf(retry, sizeof retry, "%lld",
                 json_is_integer(ra) && json_integer_value(ra) > 0
                     ? (long long)json_integer_value(ra)
                     : 1LL);
    }
    if (status == 405 && !allow) allow = "GET, HEAD";
    return http_reply_json(r, status, "application/problem+json", problem, "WWW-Authenticate", www,
                           "Retry-After", retry[0] ? retry : NULL, "Allow", allow, "Cache-Control",
                           "no-store", NULL);
}

enum MHD_Result http_reply_problem(http_req *r, json_t *problem)
{
    if (!problem) problem = tw_problem_from_error(TW_ENOMEM, NULL, NULL);
    return reply_problem_allow(r, problem, NULL);
}

enum MHD_Result http_reply_error(http_req *r, int status, const char *slug, const char *title,
                                 const char *detail)
{
    return http_reply_problem(r, tw_problem_new(status, slug, title, detail, NULL));
}

enum MHD_Result http_reply_code(http_req *r, int code, const char *detail)
{
    return http_reply_problem(r, tw_problem_from_error(code, detail, NULL));
}

enum MHD_Result http_reply_405(http_req *r, const char *allow)
{
    char detail[160];
    snprintf(detail, sizeof detail, "%s is not allowed here (allowed: %s)", r->method, allow);
    return reply_problem_allow(
        r, tw_problem_new(405, "method-not-allowed", "method not allowed", detail, NULL), allow);
}

/* Nesting depth of JSON text (brackets outside strings). */
static int json_depth(const char *s, size_t n)
{
    int d = 0, max = 0;
    bool str = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                str = false;
        } else if (c == '"') {
            str = true;
        } else if (c == '[' || c == '{') {
            if (++d > max) max = d;
        } else if (c == ']' || c == '}') {
            d--;
        }
    }
    return max;
}

static bool media_ok(const char *ctype, const char *allowed)
{
    size_t n = strcspn(ctype, ";");
    while (n && (ctype[n - 1] == ' ' || ctype[n - 1] == '\t'))
        n--;
    const char *a = allowed;
    while (*a) {
        size_t m = strcspn(a, "|");
        if (m == n && strncasecmp(a, ctype, n) == 0) return true;
        a += m;
        if (*a == '|') a++;
    }
    return false;
}

json_t *http_body_json(http_req *r, const char *ctype_ok, bool allow_empty, enum MHD_Result *res)
{
    if (!ctype_ok) ctype_ok = "application/json";
    if (r->body_len == 0) {
        if (allow_empty) return json_null();
        *res = http_reply_error(r, 400, "invalid", "invalid input", "a JSON body is required");
        return NULL;
    }
    const char *ct = http_header(r, "Content-Type");
    if (ct && !media_ok(ct, ctype_ok)) {
        char detail[200];
        snprintf(detail, sizeof detail, "Content-Type must be %s", ctype_ok);
        for (char *p = detail; *p; p++)
            if (*p == '|') *p = ',';
        atomic_fetch_add_explicit(&r->h->st.rejected[2], 1, memory_order_relaxed);
        *res = http_reply_error(r, 415, "unsupported-media-type", "unsupported media type", detail);
        return NULL;
    }
    int max_depth = tw_runtime_config(r->h->rt)->max_depth;
    if (max_depth <= 0) max_depth = TW_MSG_MAX_DEPTH_DEFAULT;
    if (json_depth(r->body, r->body_len) > max_depth) {
        atomic_fetch_add_explicit(&r->h->st.rejected[3], 1, memory_order_relaxed);
        *res = http_reply_error(r, 400, "too-deep", "invalid input",
                                "the JSON body is nested too deeply");
        return NULL;
    }
    json_error_t err;
    json_t *v = json_loadb(r->body, r->body_len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
    if (!v) {
        char detail[300];
        snprintf(detail, sizeof detail, "malformed JSON at line %d column %d: %s", err.line,
                 err.column, err.text);
        atomic_fetch_add_explicit(&r->h->st.rejected[3], 1, memory_order_relaxed);
        *res = http_reply_error(r, 400, "malformed", "invalid input", detail);
        return NULL;
    }
    return v;
}
