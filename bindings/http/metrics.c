/*
 * metrics.c - GET /metrics in the Prometheus text exposition format:
 * connections by binding, messages by type, deliveries, queue depth,
 * rejected requests (router outcomes and this binding's own refusals),
 * the router latency histogram, store commits and HTTP/SSE counters.
 */
#include "http_int.h"

#include "runtime/queue.h"
#include "runtime/store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n + 256;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

static const char *const reject_names[8] = {"bad_path",  "too_big",         "media_type",
                                            "malformed", "unauthenticated", "stream_overflow",
                                            "timeout",   "header_too_big"};

enum MHD_Result http_metrics_route(http_req *r)
{
    if (strcmp(r->method, "GET") != 0 && !r->head) return http_reply_405(r, "GET, HEAD");
    tw_http *h = r->h;
    tw_runtime *rt = h->rt;
    sbuf b = {malloc(4096), 0, 4096, false};
    if (!b.p) return http_reply_code(r, TW_ENOMEM, NULL);

    sb_printf(&b, "# HELP twind_connections Open connections by binding.\n"
                  "# TYPE twind_connections gauge\n");
    tw_binding **list = NULL;
    int nb = 0;
    if (tw_runtime_bindings(rt, &list, &nb) == 0) {
        for (int i = 0; i < nb; i++) {
            int n = tw_conns_count(rt, list[i]->ops->name);
            if (list[i] == h->b && h->recorder && n > 0) n--; /* our replay recorder */
            sb_printf(&b, "twind_connections{binding=\"%s\"} %d\n", list[i]->ops->name, n);
        }
    }

    tw_router_stats rs;
    memset(&rs, 0, sizeof rs);
    tw_router_get_stats(rt, &rs);
    static const char *const types[4] = {"none", "request", "response", "notification"};
    sb_printf(&b, "# HELP twind_messages_total Messages routed by type.\n"
                  "# TYPE twind_messages_total counter\n");
    for (int i = 1; i < 4; i++)
        sb_printf(&b, "twind_messages_total{type=\"%s\"} %llu\n", types[i],
                  (unsigned long long)rs.by_type[i]);
    sb_printf(&b,
              "# HELP twind_delivered_total Messages handed to connections.\n"
              "# TYPE twind_delivered_total counter\ntwind_delivered_total %llu\n",
              (unsigned long long)rs.delivered);
    static const char *const rej[6] = {"400", "401", "403", "404", "429", "other"};
    sb_printf(&b, "# HELP twind_rejected_total Rejected messages and requests by reason.\n"
                  "# TYPE twind_rejected_total counter\n");
    for (int i = 0; i < 6; i++)
        sb_printf(&b, "twind_rejected_total{reason=\"router_%s\"} %llu\n", rej[i],
                  (unsigned long long)rs.rejected_by_status[i]);
    for (int i = 0; i < 8; i++)
        sb_printf(&b, "twind_rejected_total{reason=\"http_%s\"} %llu\n", reject_names[i],
                  (unsigned long long)atomic_load(&h->st.rejected[i]) +
                      (i == 5 ? (unsigned long long)atomic_load(&h->st.stream_overflows) : 0ULL));

    static const char *const le[12] = {"0.00001", "0.00002", "0.00005", "0.0001",
                                       "0.0002",  "0.0005",  "0.001",   "0.002",
                                       "0.005",   "0.01",    "0.1",     "+Inf"};
    sb_printf(&b, "# HELP twind_route_latency_seconds Time from receipt to handled.\n"
                  "# TYPE twind_route_latency_seconds histogram\n");
    unsigned long long cum = 0;
    for (int i = 0; i < 12; i++) {
        cum += rs.latency_hist[i];
        sb_printf(&b, "twind_route_latency_seconds_bucket{le=\"%s\"} %llu\n", le[i], cum);
    }
    sb_printf(&b, "twind_route_latency_seconds_count %llu\n", cum);

    int64_t depth = 0;
    tw_queue *q = tw_runtime_queue(rt);
    if (q && tw_queue_depth(q, NULL, &depth) == 0)
        sb_printf(&b,
                  "# HELP twind_queue_depth Queued actions waiting for offline agents.\n"
                  "# TYPE twind_queue_depth gauge\ntwind_queue_depth %lld\n",
                  (long long)depth);
    tw_store *st = tw_runtime_store(rt);
    if (st) {
        tw_store_stats ss;
        memset(&ss, 0, sizeof ss);
        tw_store_get_stats(st, &ss);
        sb_printf(&b,
                  "# TYPE twind_store_commits_total counter\ntwind_store_commits_total %llu\n"
                  "# TYPE twind_store_jobs_total counter\ntwind_store_jobs_total %llu\n"
                  "# TYPE twind_store_pending gauge\ntwind_store_pending %llu\n",
                  (unsigned long long)ss.commits, (unsigned long long)ss.jobs,
                  (unsigned long long)ss.pending);
    }

    static const char *const cls[4] = {"2xx", "3xx", "4xx", "5xx"};
    sb_printf(&b,
              "# TYPE twind_http_requests_total counter\ntwind_http_requests_total %llu\n"
              "# TYPE twind_http_responses_total counter\n",
              (unsigned long long)atomic_load(&h->st.requests));
    for (int i = 0; i < 4; i++)
        sb_printf(&b, "twind_http_responses_total{class=\"%s\"} %llu\n", cls[i],
                  (unsigned long long)atomic_load(&h->st.by_status[i]));
    pthread_mutex_lock(&h->mu);
    size_t ns = h->nstreams;
    pthread_mutex_unlock(&h->mu);
    sb_printf(
        &b,
        "# TYPE twind_http_streams gauge\ntwind_http_streams %zu\n"
        "# TYPE twind_http_streams_opened_total counter\ntwind_http_streams_opened_total %llu\n"
        "# TYPE twind_http_stream_frames_total counter\ntwind_http_stream_frames_total %llu\n"
        "# TYPE twind_http_stream_overflows_total counter\n"
        "twind_http_stream_overflows_total %llu\n",
        ns, (unsigned long long)atomic_load(&h->st.streams_opened),
        (unsigned long long)atomic_load(&h->st.stream_frames),
        (unsigned long long)atomic_load(&h->st.stream_overflows));
    if (b.oom) {
        free(b.p);
        return http_reply_code(r, TW_ENOMEM, NULL);
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(b.len, b.p, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(b.p);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4");
    atomic_fetch_add_explicit(&h->st.by_status[0], 1, memory_order_relaxed);
    enum MHD_Result res = MHD_queue_response(r->mc, 200, resp);
    MHD_destroy_response(resp);
    return res;
}
