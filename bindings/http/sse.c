/*
 * sse.c - Server-Sent Events streams.
 *
 * A stream is a long-lived tw_conn whose bdata is an http_stream: a bounded
 * byte buffer of frames waiting to be written. ops->send appends the frame
 * of a message (bytes encoded once per message by replay.c, copied here) and
 * resumes the libmicrohttpd connection if it sleeps. The content reader
 * hands libmicrohttpd everything that is waiting, as many frames as fit,
 * in one go, so a busy subscriber costs one write per wake-up, not one per
 * event; with nothing to write it suspends the connection (no thread, no
 * polling). A stream whose buffer would exceed stream_queue bytes is closed:
 * the client reconnects with Last-Event-ID and gets what is still in the
 * replay window. A slow reader therefore never holds anybody else up.
 *
 * Frames: "id: <seq>\nevent: <name>\ndata: <json>\n\n". On /sse the event is
 * the message type and the data the envelope; on a Thing's streams the
 * event is the affordance name and the data its value. The id is the
 * message's sequence in the replay window: it increases along each stream
 * (with gaps for what the stream does not carry), so it is the stream's
 * Last-Event-ID cursor. A comment line is written after heartbeat_s
 * seconds of silence.
 *
 * Start-up without gaps or duplicates: the stream subscribes first and then
 * catches up from the replay window, after Last-Event-ID (or after the
 * window's newest item before it subscribed). Catch-up is paced by the
 * reader: whenever the buffer runs dry it copies the next matching items,
 * up to half of stream_queue, so a long replay never overflows the stream.
 * While catching up, live messages only wake the reader (they are in the
 * window already); once the cursor reaches the window's newest item the
 * stream turns live, atomically under the window's lock, and later items
 * are appended as they come.
 */
#include "http_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

/* The block size of the callback response. libmicrohttpd fills chunked
 * responses from the connection's own pool, so this buffer is not used for
 * data; it is allocated (and zeroed) per stream, so it is kept small. */
#define SSE_BLOCK 256

/* The batch being routed on this thread, if any. This is the one piece of
 * thread-local state in the binding: it lives only between
 * http_defer_begin() and http_defer_end() on the same thread, so fan-outs
 * running inside a batch can hand their wake-ups to it. */
typedef struct http_defer {
    tw_http *h;
    http_stream **v;
    size_t n, cap;
    bool oom;
} http_defer;
static __thread http_defer *tls_defer;

static void resume_now_locked(http_stream *s)
{
    if (s->suspended && !s->finished) {
        s->suspended = false;
        MHD_resume_connection(s->mc);
    }
}

static void resume_locked(http_stream *s)
{
    http_defer *d = tls_defer;
    if (!d || d->h != s->h || !s->suspended || s->finished) {
        resume_now_locked(s);
        return;
    }
    if (s->wake_pending) return;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        http_stream **nv = realloc(d->v, cap * sizeof *nv);
        if (!nv) {
            resume_now_locked(s);
            return;
        }
        d->v = nv;
        d->cap = cap;
    }
    s->wake_pending = true;
    d->v[d->n++] = s;
}

void http_defer_begin(tw_http *h)
{
    if (tls_defer) return; /* nested: the outer batch resumes */
    http_defer *d = calloc(1, sizeof *d);
    if (!d) return;
    d->h = h;
    tls_defer = d;
}

void http_defer_end(tw_http *h)
{
    http_defer *d = tls_defer;
    if (!d || d->h != h) return;
    tls_defer = NULL;
    /* Streams stay allocated for the graveyard's grace period after they
     * finish, and `finished` is checked under their lock. */
    for (size_t i = 0; i < d->n; i++) {
        http_stream *s = d->v[i];
        pthread_mutex_lock(&s->mu);
        s->wake_pending = false;
        resume_now_locked(s);
        pthread_mutex_unlock(&s->mu);
    }
    free(d->v);
    free(d);
}

/* Appends n pieces; TW_EFULL (and the stream ends) when over the limit. */
static int append_locked(http_stream *s, const char *const *parts, const size_t *lens, int n)
{
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += lens[i];
    size_t waiting = s->len - s->off;
    if (waiting + total > s->h->cfg.stream_queue) {
        if (!s->overflow) {
            s->overflow = true;
            atomic_fetch_add_explicit(&s->h->st.stream_overflows, 1, memory_order_relaxed);
            tw_log_info(HTTP_LOG, "stream of %s (%s) overflowed %zu bytes: closing it", s->client,
                        tw_conn_remote(s->conn), s->h->cfg.stream_queue);
        }
        resume_now_locked(s);
        return TW_EFULL;
    }
    if (s->off && s->cap - s->len < total) {
        memmove(s->buf, s->buf + s->off, waiting);
        s->len = waiting;
        s->off = 0;
    }
    if (s->cap - s->len < total) {
        size_t cap = s->cap ? s->cap : 1024;
        while (cap - s->len < total)
            cap *= 2;
        char *nb = realloc(s->buf, cap);
        if (!nb) return TW_ENOMEM;
        s->buf = nb;
        s->cap = cap;
    }
    for (int i = 0; i < n; i++) {
        memcpy(s->buf + s->len, parts[i], lens[i]);
        s->len += lens[i];
    }
    s->last_write_us = tw_mono_us();
    resume_locked(s);
    return 0;
}

void http_sse_event_name(const char *in, char out[121])
{
    /* a name is one line: a CR or LF in it would start SSE fields of its own */
    size_t i = 0;
    for (; in && in[i] && i < 120; i++)
        out[i] = (unsigned char)in[i] < 0x20 ? '_' : in[i];
    out[i] = '\0';
}

static int append_frame(http_stream *s, uint64_t id, const char *event, const char *data,
                        size_t dlen)
{
    char head[200], ev[121];
    int hn;
    http_sse_event_name(event, ev);
    if (id)
        hn = snprintf(head, sizeof head, "id: %" PRIu64 "\nevent: %s\ndata: ", id, ev);
    else
        hn = snprintf(head, sizeof head, "event: %s\ndata: ", ev);
    const char *parts[3] = {head, data, "\n\n"};
    size_t lens[3] = {(size_t)hn, dlen, 2};
    int rc = append_locked(s, parts, lens, 3);
    if (!rc) atomic_fetch_add_explicit(&s->h->st.stream_frames, 1, memory_order_relaxed);
    return rc;
}

static bool filter_match(const http_stream *s, const rp_item *it)
{
    tw_sub_kind k = it->kind == RP_EVENT ? TW_SUB_EVENT : TW_SUB_PROPERTY;
    const char *thing = tw_msg_thing(it->m), *name = tw_msg_name(it->m);
    for (int i = 0; i < s->nfilters; i++) {
        const sse_filter *f = &s->filters[i];
        if (f->kind != k) continue;
        if (strcmp(f->thing, "*") && (!thing || strcmp(f->thing, thing))) continue;
        if (strcmp(f->name, "*") && (!name || strcmp(f->name, name))) continue;
        return true;
    }
    return false;
}

static bool item_match(const http_stream *s, rp_item *it)
{
    if (it->kind == RP_DIRECT) return s->mode == SSE_ENVELOPE && strcmp(it->client, s->client) == 0;
    return filter_match(s, it);
}

static int append_item(http_stream *s, rp_item *it)
{
    size_t len;
    const char *f = rp_item_frame(it, s->mode == SSE_ENVELOPE ? 1 : 0, &len);
    if (!f) return TW_ENOMEM;
    const char *parts[1] = {f};
    size_t lens[1] = {len};
    int rc = append_locked(s, parts, lens, 1);
    if (!rc) atomic_fetch_add_explicit(&s->h->st.stream_frames, 1, memory_order_relaxed);
    return rc;
}

int http_sse_send(tw_http *h, http_stream *s, tw_msg *m)
{
    if (s->mode == SSE_DIRECTORY) return 0;
    const char *corr = tw_msg_correlation(m);
    if (corr && atomic_load_explicit(&s->capturing, memory_order_acquire)) {
        pthread_mutex_lock(&s->mu);
        bool mine = s->capture[0] && strcmp(corr, s->capture) == 0;
        if (mine) {
            if (s->captured) tw_msg_unref(s->captured);
            s->captured = tw_msg_ref(m);
        }
        pthread_mutex_unlock(&s->mu);
        if (mine) return 0;
    }
    if (s->mode == SSE_AFFORDANCE && tw_msg_get_type(m) != TW_TYPE_NOTIFICATION) return 0;
    rp_item *it = http_replay_get(h->replay, m, s->client);
    if (!it) return TW_ENOMEM;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    if (s->finished || s->ended || s->overflow) {
        rc = TW_ECLOSED;
    } else if (s->catchup) {
        resume_locked(s); /* the reader takes it from the window */
    } else if (s->live && it->seq > s->live_from &&
               !(s->mode == SSE_AFFORDANCE && it->kind == RP_DIRECT)) {
        rc = append_item(s, it);
    }
    /* Not open yet: the catch-up takes it from the window. */
    pthread_mutex_unlock(&s->mu);
    rp_item_unref(it);
    return rc;
}

int http_sse_push_raw(http_stream *s, uint64_t id, const char *event, const char *data, size_t dlen)
{
    pthread_mutex_lock(&s->mu);
    int rc = s->finished || s->ended || s->overflow ? TW_ECLOSED
                                                    : append_frame(s, id, event, data, dlen);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static void refill(http_stream *s);

static ssize_t reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    http_stream *s = cls;
    pthread_mutex_lock(&s->mu);
    if (s->overflow) {
        /* libmicrohttpd 0.9.75 does not always drop a chunked response that
         * ends with an error; shutting the socket down makes sure the peer
         * sees the end (after the bytes already queued) and the connection
         * completes. The fd is still open: we are inside its reader. */
        if (s->fd >= 0) shutdown(s->fd, SHUT_RDWR);
        pthread_mutex_unlock(&s->mu);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t waiting = s->len - s->off;
    if (waiting) {
        size_t n = waiting < max ? waiting : max;
        memcpy(buf, s->buf + s->off, n);
        s->off += n;
        if (s->off == s->len) {
            s->off = s->len = 0;
            if (s->cap > 64 * 1024) { /* give a burst's memory back */
                free(s->buf);
                s->buf = NULL;
                s->cap = 0;
            }
        }
        pthread_mutex_unlock(&s->mu);
        return (ssize_t)n;
    }
    if (s->catchup) {
        pthread_mutex_unlock(&s->mu);
        refill(s);
        pthread_mutex_lock(&s->mu);
        waiting = s->len - s->off;
        if (waiting && !s->overflow) {
            size_t n = waiting < max ? waiting : max;
            memcpy(buf, s->buf + s->off, n);
            s->off += n;
            if (s->off == s->len) s->off = s->len = 0;
            pthread_mutex_unlock(&s->mu);
            return (ssize_t)n;
        }
        if (s->overflow) {
            pthread_mutex_unlock(&s->mu);
            return 0; /* called again at once: ends with the error above */
        }
        /* Otherwise the catch-up reached the window's head and the stream
         * is live: sleep until something arrives. */
    }
    if (s->ended) {
        pthread_mutex_unlock(&s->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    s->suspended = true;
    MHD_suspend_connection(s->mc);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

typedef struct refill_ctx {
    http_stream *s;
    size_t limit;
} refill_ctx;

static bool refill_one(void *arg, rp_item *it)
{
    refill_ctx *rc = arg;
    http_stream *s = rc->s;
    if (s->len - s->off >= rc->limit) return false;
    if (item_match(s, it)) append_item(s, it);
    return true;
}

/* Under the window's lock: the next part of the catch-up. */
static void refill_locked(void *arg)
{
    http_stream *s = arg;
    pthread_mutex_lock(&s->mu);
    if (s->catchup && !s->overflow && !s->finished) {
        refill_ctx rc = {s, s->h->cfg.stream_queue / 2};
        uint64_t newest = http_replay_last_locked(s->h->replay);
        s->cursor = http_replay_each(s->h->replay, s->cursor, refill_one, &rc);
        if (s->cursor >= newest) {
            s->catchup = false;
            s->live = true;
            s->live_from = newest;
        }
    }
    pthread_mutex_unlock(&s->mu);
}

static void refill(http_stream *s)
{
    http_replay_locked(s->h->replay, refill_locked, s);
}

static void stream_unlink(tw_http *h, http_stream *s)
{
    pthread_mutex_lock(&h->mu);
    if (s->prev || h->streams == s) {
        if (s->prev)
            s->prev->next = s->next;
        else
            h->streams = s->next;
        if (s->next) s->next->prev = s->prev;
        s->next = s->prev = NULL;
        h->nstreams--;
    }
    pthread_mutex_unlock(&h->mu);
}

/* Parses Last-Event-ID (header, or ?lastEventId= for EventSource polyfills). */
bool http_last_event_id(http_req *r, uint64_t *out)
{
    const char *v = http_header(r, "Last-Event-ID");
    char *q = NULL;
    bool bad = false;
    if (!v) v = q = http_query(r, "lastEventId", &bad);
    if (!v) return false;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    bool ok = *v && !*end && errno == 0;
    free(q);
    if (ok) *out = n;
    return ok;
}

enum MHD_Result http_sse_open(http_req *r, sse_mode mode, sse_setup_fn setup)
{
    tw_http *h = r->h;
    if (http_recorder_start(h)) return http_reply_code(r, TW_ENOMEM, NULL);
    http_stream *s = calloc(1, sizeof *s);
    if (!s) return http_reply_code(r, TW_ENOMEM, NULL);
    s->bd.tag = BDATA_STREAM;
    s->h = h;
    s->mc = r->mc;
    s->mode = mode;
    s->fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    tw_strlcpy(s->client, r->id.client_id, sizeof s->client);
    tw_strlcpy(s->session, r->id.session_id, sizeof s->session);
    uint64_t before = http_replay_last(h->replay);
    s->conn = tw_conn_new(h->rt, h->b, s, r->remote);
    if (!s->conn) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return http_reply_code(r, TW_ENOMEM, NULL);
    }
    r->stream = s; /* from here on, http_completed cleans up */
    pthread_mutex_lock(&h->mu);
    s->next = h->streams;
    if (h->streams) h->streams->prev = s;
    h->streams = s;
    h->nstreams++;
    pthread_mutex_unlock(&h->mu);
    if (tw_conn_set_identity(s->conn, &r->id))
        return http_reply_error(r, 401, "unauthenticated", "unauthenticated", "the token expired");
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) {
        struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET, .data.ptr = s};
        if (epoll_ctl(h->hup_ep, EPOLL_CTL_ADD, ci->connect_fd, &ev) == 0) s->fd = ci->connect_fd;
    }
    static const char hello[] = ": twind\nretry: 2000\n\n";
    const char *parts[1] = {hello};
    size_t lens[1] = {sizeof hello - 1};
    pthread_mutex_lock(&s->mu);
    append_locked(s, parts, lens, 1);
    pthread_mutex_unlock(&s->mu);

    uint64_t after = 0;
    bool resume = http_last_event_id(r, &after);
    if (setup) {
        json_t *problem = NULL;
        int rc = setup(r, s, &problem);
        if (rc)
            return http_reply_problem(r, problem ? problem : tw_problem_from_error(rc, NULL, NULL));
    }
    if (mode != SSE_DIRECTORY) {
        pthread_mutex_lock(&s->mu);
        s->cursor = resume ? after : before;
        s->catchup = true;
        pthread_mutex_unlock(&s->mu);
        refill(s);
    }
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK, reader, s, NULL);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    atomic_fetch_add_explicit(&h->st.streams_opened, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->st.by_status[0], 1, memory_order_relaxed);
    enum MHD_Result res = MHD_queue_response(r->mc, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return res;
}

void http_sse_end(http_stream *s, bool error)
{
    pthread_mutex_lock(&s->mu);
    if (error)
        s->overflow = true;
    else
        s->ended = true;
    resume_locked(s);
    pthread_mutex_unlock(&s->mu);
}

#define SESS_SUBS_MAX 10000
#define SESS_SUBS_TTL_US (600LL * 1000000)

typedef struct sess_subs {
    sse_filter *filters;
    int n;
    int64_t at_us;
} sess_subs;

static void sess_subs_free(sess_subs *ss)
{
    if (!ss) return;
    free(ss->filters);
    free(ss);
}

/* Keeps the subscriptions of an ending /sse stream for its session. */
static void remember_subs(http_stream *s)
{
    tw_http *h = s->h;
    if (s->mode != SSE_ENVELOPE || s->nfilters == 0 || !s->session[0]) return;
    sess_subs *ss = calloc(1, sizeof *ss);
    pthread_mutex_lock(&s->mu);
    int n = s->nfilters;
    if (ss && (ss->filters = malloc((size_t)n * sizeof *ss->filters)) != NULL) {
        memcpy(ss->filters, s->filters, (size_t)n * sizeof *ss->filters);
        ss->n = n;
    }
    pthread_mutex_unlock(&s->mu);
    if (!ss || !ss->filters) {
        sess_subs_free(ss);
        return;
    }
    ss->at_us = tw_mono_us();
    int err = 0;
    pthread_mutex_lock(&h->mu);
    if (h->sess_subs.len < SESS_SUBS_MAX || tw_hmap_get(&h->sess_subs, s->session)) {
        sess_subs_free(tw_hmap_put(&h->sess_subs, s->session, ss, &err));
        if (err) sess_subs_free(ss);
    } else {
        sess_subs_free(ss);
    }
    pthread_mutex_unlock(&h->mu);
}

void http_sse_restore_subs(http_stream *s)
{
    tw_http *h = s->h;
    pthread_mutex_lock(&h->mu);
    sess_subs *ss = tw_hmap_del(&h->sess_subs, s->session);
    pthread_mutex_unlock(&h->mu);
    if (!ss) return;
    for (int i = 0; i < ss->n; i++) {
        const sse_filter *f = &ss->filters[i];
        bool all = strcmp(f->name, "*") == 0;
        tw_op op = f->kind == TW_SUB_EVENT
                       ? (all ? TW_OP_SUBSCRIBEALLEVENTS : TW_OP_SUBSCRIBEEVENT)
                       : (all ? TW_OP_OBSERVEALLPROPERTIES : TW_OP_OBSERVEPROPERTY);
        json_t *problem = NULL;
        /* Through the router: authz decides again. */
        if (http_sse_subscribe(s, op, strcmp(f->thing, "*") ? f->thing : NULL, all ? NULL : f->name,
                               &problem))
            tw_log_info(HTTP_LOG, "not restoring a subscription of %s to %s/%s", s->client,
                        f->thing, f->name);
        json_decref(problem);
    }
    sess_subs_free(ss);
}

void http_sse_expire_subs(tw_http *h, int64_t now_us, bool all)
{
    pthread_mutex_lock(&h->mu);
    size_t pos = 0;
    const char *key;
    void *val;
    char *dead[64];
    int nd = 0;
    while (nd < 64 && tw_hmap_next(&h->sess_subs, &pos, &key, &val))
        if (all || now_us - ((sess_subs *)val)->at_us > SESS_SUBS_TTL_US) dead[nd++] = strdup(key);
    for (int i = 0; i < nd; i++) {
        if (dead[i]) sess_subs_free(tw_hmap_del(&h->sess_subs, dead[i]));
        free(dead[i]);
    }
    pthread_mutex_unlock(&h->mu);
    if (all && nd == 64) http_sse_expire_subs(h, now_us, all);
}

void http_sse_closed(http_stream *s)
{
    tw_http *h = s->h;
    remember_subs(s);
    stream_unlink(h, s);
    if (s->fd >= 0) epoll_ctl(h->hup_ep, EPOLL_CTL_DEL, s->fd, NULL);
    pthread_mutex_lock(&s->mu);
    s->finished = true;
    if (s->captured) {
        tw_msg_unref(s->captured);
        s->captured = NULL;
    }
    json_decref(s->dir_pending);
    s->dir_pending = NULL;
    pthread_mutex_unlock(&s->mu);
    tw_conn_close(s->conn);
    tw_conn_unref(s->conn);
    http_graveyard_park(h, &s->bd);
}

void http_sse_heartbeat(tw_http *h, int64_t now_us)
{
    static const char hb[] = ":\n\n";
    const char *parts[1] = {hb};
    size_t lens[1] = {sizeof hb - 1};
    int64_t period = (int64_t)h->cfg.heartbeat_s * 1000000;
    pthread_mutex_lock(&h->mu);
    for (http_stream *s = h->streams; s; s = s->next) {
        pthread_mutex_lock(&s->mu);
        if (s->live && !s->finished && now_us - s->last_write_us >= period)
            append_locked(s, parts, lens, 1);
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&h->mu);
}

void http_sse_reap_hangups(tw_http *h)
{
    struct epoll_event evs[256];
    int n = epoll_wait(h->hup_ep, evs, 256, 0);
    for (int i = 0; i < n; i++) {
        if (!(evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) continue;
        http_stream *s = evs[i].data.ptr;
        tw_conn *c = NULL;
        pthread_mutex_lock(&s->mu);
        if (!s->finished) {
            s->overflow = true; /* ends with an error: nobody is reading */
            resume_locked(s);
            c = tw_conn_ref(s->conn);
        }
        pthread_mutex_unlock(&s->mu);
        /* Stop routing to it now, not when libmicrohttpd gets round to it. */
        if (c) {
            tw_conn_close(c);
            tw_conn_unref(c);
        }
    }
}

void http_sse_end_all(tw_http *h)
{
    pthread_mutex_lock(&h->mu);
    for (http_stream *s = h->streams; s; s = s->next)
        http_sse_end(s, false);
    pthread_mutex_unlock(&h->mu);
}

void http_sse_close_session(tw_http *h, tw_conn *c)
{
    http_stream *s = tw_conn_bdata(c);
    http_sse_end(s, false);
}

void http_sse_add_filter(http_stream *s, tw_op op, const char *thing, const char *name)
{
    if (s->nfilters == s->capfilters) {
        int cap = s->capfilters ? s->capfilters * 2 : 1;
        if (cap > SSE_MAX_FILTERS) return;
        sse_filter *nf = realloc(s->filters, (size_t)cap * sizeof *nf);
        if (!nf) return;
        s->filters = nf;
        s->capfilters = cap;
    }
    sse_filter *f = &s->filters[s->nfilters++];
    bool ev = op == TW_OP_SUBSCRIBEEVENT || op == TW_OP_SUBSCRIBEALLEVENTS;
    bool all = op == TW_OP_SUBSCRIBEALLEVENTS || op == TW_OP_OBSERVEALLPROPERTIES;
    f->kind = ev ? TW_SUB_EVENT : TW_SUB_PROPERTY;
    tw_strlcpy(f->thing, thing ? thing : "*", sizeof f->thing);
    tw_strlcpy(f->name, (!all && name) ? name : "*", sizeof f->name);
}

int http_sse_subscribe(http_stream *s, tw_op op, const char *thing, const char *name,
                       json_t **problem)
{
    tw_http *h = s->h;
    tw_msg *m = http_request_new(h, op, thing, name, s->client, NULL, problem);
    if (!m) return TW_EINVAL;
    pthread_mutex_lock(&s->mu);
    tw_strlcpy(s->capture, tw_msg_correlation(m), sizeof s->capture);
    atomic_store_explicit(&s->capturing, true, memory_order_release);
    pthread_mutex_unlock(&s->mu);
    tw_router_handle(h->rt, s->conn, m);
    tw_msg_unref(m);
    pthread_mutex_lock(&s->mu);
    tw_msg *resp = s->captured;
    s->captured = NULL;
    s->capture[0] = '\0';
    atomic_store_explicit(&s->capturing, false, memory_order_release);
    pthread_mutex_unlock(&s->mu);
    int rc = 0;
    json_t *err = resp ? tw_msg_get(resp, "error") : NULL;
    if (err) {
        json_t *st = json_object_get(err, "status");
        int status = json_is_integer(st) ? (int)json_integer_value(st) : 500;
        rc = status == 403   ? TW_EPERM
             : status == 404 ? TW_ENOTFOUND
             : status == 401 ? TW_EAUTH
                             : TW_EINVAL;
        *problem = json_deep_copy(err);
    }
    if (resp) tw_msg_unref(resp);
    if (rc) return rc;
    pthread_mutex_lock(&s->mu);
    http_sse_add_filter(s, op, thing, name);
    pthread_mutex_unlock(&s->mu);
    return 0;
}
