/*
 * client.c - a tw_client's connection: the I/O thread (connect, login,
 * resync, read and route), the writer thread (batches the send queue into
 * few large writes), the callback thread (runs user callbacks in order) and
 * the request/response plumbing every call in agent.c and consumer.c uses.
 *
 * Reconnect: after a failed connect or a dropped link the I/O thread waits a
 * backoff that doubles from reconnect_min_ms up to reconnect_max_ms, with
 * full jitter in its upper half (so a thousand agents cut off together do
 * not come back together). A successful login resets it. Login uses the
 * session token of the previous login when there is one (no password hash
 * on the server per reconnect), falling back to the configured credentials
 * if the runtime refuses it. The login carries the inbox cursor ("since"),
 * so the runtime replays what this client missed.
 *
 * Batching: publishers append encoded envelopes to a bounded ring and return.
 * Events and property values are written by hand (no JSON tree) and copied
 * into the run of values at the ring's tail, one buffer growing to 64 KiB,
 * so a fast publisher costs a memcpy per envelope, not an allocation. The
 * writer takes everything queued (up to TW_NNG_BATCH_MAX bytes) in one go,
 * so while one write is in flight the next batch builds up; a lone envelope
 * leaves at once. The bound (send_queue) counts envelopes, not ring items.
 * A write that fails partway settles what did not leave whole (wr_failed):
 * answers back to the head of the ring, requests failed with TW_EOFFLINE;
 * nobody writes on that link again (link_broken).
 *
 * Round trips: a request or answer that finds the ring empty and no write in
 * flight is written by the calling thread itself, not handed to the writer.
 * Incoming envelopes are read with tw_msg_parse (header fields without a
 * tree, payloads decoded on demand). On the way back a synchronous caller
 * waits on its own condition, which the I/O thread signals: with the socket
 * transport (tcp://, ipc://) a response costs two wake-ups in this process
 * (the kernel wakes the I/O thread, the I/O thread wakes the caller), and
 * one with dispatch_inline and an asynchronous call; with the nng transport
 * (TLS, websockets) one more, nng's poller thread.
 *
 * Pending calls are keyed by correlationID. Plain requests complete with
 * their response; actions (invokeaction, writeproperty) see every status
 * the runtime reports (all of them are responses with the request's
 * correlationID) and complete with a final one. Async timeouts are checked
 * every 100 ms by the thread that runs callbacks, between callbacks too. A synchronous action call
 * that times out before any status named its action asks the runtime for it by its correlationID
 * (learn_action_id), so the caller can query or cancel it.
 */
#include "sdk_int.h"

#include "bindings/nng/nng_frame.h"
#include "runtime/json_enc.h"
#include "runtime/log.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_JOBS 65536

/* How long a synchronous action call that timed out without the action's
 * id waits more to learn it (learn_action_id): its own timeout, within
 * these bounds. Normally one round trip. */
#define ID_GRACE_MIN_MS 100
#define ID_GRACE_MAX_MS 1000

const char *tw_client_state_name(tw_client_state s)
{
    static const char *names[] = {"disconnected", "connecting", "connected", "auth-failed",
                                  "closed"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "unknown";
}

static char *dupz(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Every timed wait of a client runs on CLOCK_MONOTONIC (its conditions are
 * made with cond_init): a wall clock stepped back (a device without an RTC
 * setting its time at boot) would stall timeouts and the reconnect backoff,
 * one stepped forward would end them early. */
static void cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

static void abstime(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

/* "<prefix><hex counter>", written by hand: it is on every envelope. */
void sdk_new_id(tw_client *c, char out[TW_ID_MAX])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t n = __atomic_add_fetch(&c->idseq, 1, __ATOMIC_RELAXED);
    size_t pl = strlen(c->idprefix); /* < 24 */
    memcpy(out, c->idprefix, pl);
    char tmp[16];
    size_t k = 0;
    do {
        tmp[k++] = hex[n & 15];
        n >>= 4;
    } while (n);
    while (k)
        out[pl++] = tmp[--k];
    out[pl] = 0;
}

json_t *sdk_request(tw_client *c, const char *op, const char *thing, const char *name,
                    char corr[TW_ID_MAX])
{
    sdk_new_id(c, corr);
    json_t *env = json_pack("{s:s, s:s, s:s, s:s}", "type", "request", "operation", op,
                            "correlationID", corr, "messageID", corr);
    if (env && thing) json_object_set_new(env, "thingID", json_string(thing));
    if (env && name) json_object_set_new(env, "name", json_string(name));
    return env;
}

/* The envelope as one line: the runtime's encoder, its NUL turned into the
 * line's '\n'. */
static char *encode(json_t *env, size_t *len)
{
    size_t n = 0;
    char *buf = tw_json_encode(env, &n);
    if (!buf) return NULL;
    buf[n] = '\n';
    *len = n + 1;
    return buf;
}

int sdk_append_line(char **buf, size_t *len, size_t *cap, json_t *env)
{
    size_t n = json_dumpb(env, NULL, 0, JSON_COMPACT);
    if (n == 0) return TW_EINVAL;
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 4096;
        while (nc < *len + n + 1)
            nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb) return TW_ENOMEM;
        *buf = nb;
        *cap = nc;
    }
    json_dumpb(env, *buf + *len, n, JSON_COMPACT);
    *len += n;
    (*buf)[(*len)++] = '\n';
    return 0;
}

/* ---- envelopes written by hand ------------------------------------------------- */

/* Appends s[0..n) as a JSON string, quotes included; out has room for
 * 6*n+2 bytes. Short escapes where JSON has them, \u00XX for the other
 * control characters; everything else (UTF-8 included) as it is. */
size_t sdk_put_json_str(char *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    *o++ = '"';
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        const unsigned char *run = p;
        while (p < end && *p >= 0x20 && *p != '"' && *p != '\\')
            p++;
        memcpy(o, run, (size_t)(p - run));
        o += p - run;
        if (p == end) break;
        unsigned char ch = *p++;
        *o++ = '\\';
        switch (ch) {
        case '"':
        case '\\':
            *o++ = (char)ch;
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        case '\b':
            *o++ = 'b';
            break;
        case '\f':
            *o++ = 'f';
            break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        }
    }
    *o++ = '"';
    return (size_t)(o - out);
}

size_t sdk_put_lit(char *out, const char *lit, size_t n)
{
    memcpy(out, lit, n);
    return n;
}

/* A decimal integer; out has room for 21 bytes. */
size_t sdk_put_int(char *out, json_int_t v)
{
    char tmp[24];
    size_t n = 0;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t k = 0;
    if (v < 0) out[k++] = '-';
    while (n)
        out[k++] = tmp[--n];
    return k;
}

static void line_room(sdk_line *l, size_t n)
{
    if (l->failed || l->cap - l->len >= n) return;
    size_t nc = l->cap ? l->cap : 256;
    while (nc - l->len < n)
        nc *= 2;
    char *nb = realloc(l->buf, nc);
    if (!nb) {
        l->failed = true;
        return;
    }
    l->buf = nb;
    l->cap = nc;
}

void sdk_line_raw(sdk_line *l, const char *s, size_t n)
{
    line_room(l, n);
    if (!l->failed) l->len += sdk_put_lit(l->buf + l->len, s, n);
}

void sdk_line_str(sdk_line *l, const char *s, size_t n)
{
    if (!tw_utf8_valid(s, n)) { /* the runtime would refuse the whole line */
        l->failed = l->invalid = true;
        return;
    }
    line_room(l, 6 * n + 2);
    if (!l->failed) l->len += sdk_put_json_str(l->buf + l->len, s, n);
}

void sdk_line_json(sdk_line *l, json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        sdk_line_str(l, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER:
        line_room(l, 24);
        if (!l->failed) l->len += sdk_put_int(l->buf + l->len, json_integer_value(v));
        return;
    case JSON_TRUE:
        sdk_line_raw(l, "true", 4);
        return;
    case JSON_FALSE:
        sdk_line_raw(l, "false", 5);
        return;
    case JSON_NULL:
        sdk_line_raw(l, "null", 4);
        return;
    default: {
        size_t n = 0;
        char *enc = tw_json_encode(v, &n);
        if (!enc) {
            l->failed = true;
            return;
        }
        sdk_line_raw(l, enc, n);
        free(enc);
    }
    }
}

void sdk_line_member(sdk_line *l, const char *key, const char *s)
{
    sdk_line_raw(l, ",\"", 2);
    sdk_line_raw(l, key, strlen(key));
    sdk_line_raw(l, "\":", 2);
    sdk_line_str(l, s, strlen(s));
}

void sdk_line_request(tw_client *c, sdk_line *l, const char *op, const char *thing,
                      const char *name, char corr[TW_ID_MAX])
{
    sdk_new_id(c, corr);
    sdk_line_raw(l, "{\"type\":\"request\",\"operation\":\"", 31);
    sdk_line_raw(l, op, strlen(op));
    sdk_line_raw(l, "\"", 1);
    if (thing) sdk_line_member(l, "thingID", thing);
    if (name) sdk_line_member(l, "name", name);
    sdk_line_member(l, "correlationID", corr);
    sdk_line_member(l, "messageID", corr);
}

char *sdk_line_end(sdk_line *l, size_t *len)
{
    sdk_line_raw(l, "}\n", 2);
    if (l->failed) {
        free(l->buf);
        l->buf = NULL;
        return NULL;
    }
    *len = l->len;
    return l->buf;
}

int sdk_line_rc(const sdk_line *l)
{
    return l->invalid ? TW_EINVAL : TW_ENOMEM;
}

/* The TW_E* code of a response's status and problem. */
static int rc_of(tw_status st, json_t *err)
{
    if (!err && st != TW_STATUS_FAILED) {
        if (st == TW_STATUS_EXPIRED) return TW_EEXPIRED;
        if (st == TW_STATUS_CANCELLED) return TW_ECONFLICT;
        return 0;
    }
    json_int_t http = json_integer_value(json_object_get(err, "status"));
    switch (http) {
    case 400:
        return TW_EINVAL;
    case 401:
        return TW_EAUTH;
    case 403:
        return TW_EPERM;
    case 404:
        return TW_ENOTFOUND;
    case 405:
    case 501:
        return TW_EUNSUPPORTED;
    case 409:
        return TW_ECONFLICT;
    case 410:
        return TW_EEXPIRED;
    case 413:
        return TW_ETOOBIG;
    case 415:
        return TW_EMEDIA;
    case 429:
        return TW_ERATE;
    case 503:
        return TW_EOFFLINE;
    case 504:
        return TW_ETIMEDOUT;
    default:
        return TW_EIO;
    }
}

int sdk_response_rc(json_t *resp)
{
    return rc_of(tw_status_parse(json_string_value(json_object_get(resp, "status"))),
                 json_object_get(resp, "error"));
}

/* ---- the callback thread -------------------------------------------------- */

/* mtx held. Waits for room (the I/O thread slows down, TCP pushes back),
 * except while the callback thread itself waits in a synchronous call: only
 * it makes room, and its response may be behind what is being queued. The
 * thread that runs the jobs never waits for room it alone would make (the
 * callback thread queueing a local timeout's status, the I/O thread with
 * dispatch_inline). */
void sdk_push_job_locked(tw_client *c, job *j)
{
    while (c->njobs >= MAX_JOBS && !c->closing && !c->cb_blocked &&
           !pthread_equal(pthread_self(), c->cb_thr) &&
           !(c->o.dispatch_inline && pthread_equal(pthread_self(), c->io_thr)))
        pthread_cond_wait(&c->job_space, &c->mtx);
    j->next = NULL;
    if (c->jtail)
        c->jtail->next = j;
    else
        c->jhead = j;
    c->jtail = j;
    c->njobs++;
    /* inline dispatch: the I/O thread runs what it queued itself */
    if (!(c->o.dispatch_inline && j->kind != JOB_STATE && pthread_equal(pthread_self(), c->io_thr)))
        pthread_cond_signal(&c->job_cond);
}

void sdk_push_job(tw_client *c, job *j)
{
    pthread_mutex_lock(&c->mtx);
    sdk_push_job_locked(c, j);
    pthread_mutex_unlock(&c->mtx);
}

static void state_job_locked(tw_client *c, tw_client_state s)
{
    if (!c->o.on_state) return;
    job *j = calloc(1, sizeof *j);
    if (!j) return;
    j->kind = JOB_STATE;
    j->state = s;
    sdk_push_job_locked(c, j);
}

static void set_state(tw_client *c, tw_client_state s)
{
    pthread_mutex_lock(&c->mtx);
    bool changed = c->state != s;
    c->state = s;
    pthread_cond_broadcast(&c->state_cond);
    if (changed) state_job_locked(c, s);
    pthread_mutex_unlock(&c->mtx);
}

static void result_copy(tw_action_result *dst, const tw_action_result *src)
{
    *dst = *src;
    if (dst->output) json_incref(dst->output);
    if (dst->error) json_incref(dst->error);
}

void tw_action_result_clear(tw_action_result *r)
{
    if (!r) return;
    json_decref(r->output);
    json_decref(r->error);
    r->output = r->error = NULL;
}

static void pending_free(pending *p)
{
    if (p->sync) pthread_cond_destroy(&p->cond);
    json_decref(p->response);
    tw_action_result_clear(&p->last);
    free(p);
}

/* mtx held: p leaves the table; a sync waiter is woken (it frees p), an
 * async one gets its final callback queued (if fn) and p is freed. */
static void pending_finish(tw_client *c, pending *p, int rc, bool notify_async)
{
    tw_hmap_del(&c->pend, p->corr);
    p->done = true;
    p->rc = rc;
    if (p->sync) {
        pthread_cond_signal(p->wake ? p->wake : &p->cond);
        return;
    }
    if (notify_async && p->fn) {
        job *j = calloc(1, sizeof *j);
        if (j) {
            j->kind = JOB_ACTION;
            j->afn = p->fn;
            j->arg = p->arg;
            result_copy(&j->res, &p->last);
            if (!tw_status_final(j->res.status)) j->res.status = TW_STATUS_FAILED;
            sdk_push_job_locked(c, j);
        }
    }
    pending_free(p);
}

static void check_timeouts_locked(tw_client *c)
{
    int64_t now = tw_mono_us();
    size_t pos = 0;
    void *v;
    pending *expired[64];
    int n = 0;
    while (n < 64 && tw_hmap_next(&c->pend, &pos, NULL, &v)) {
        pending *p = v;
        if (!p->sync && p->deadline_us && p->deadline_us < now) expired[n++] = p;
    }
    for (int i = 0; i < n; i++)
        pending_finish(c, expired[i], TW_ETIMEDOUT, true);
}

static void run_job(tw_client *c, job *j)
{
    switch (j->kind) {
    case JOB_STATE:
        c->o.on_state(c->o.state_arg, c, j->state);
        break;
    case JOB_NOTIFY:
        sdk_consumer_run_notify(c, j);
        tw_msg_unref(j->msg);
        break;
    case JOB_ACTION:
        j->afn(j->arg, c, &j->res);
        tw_action_result_clear(&j->res);
        break;
    case JOB_REQ:
        j->rfn(j->arg, c, j->req);
        break;
    }
}

/* mtx held. Pings an idle link; drops one that stays silent (a peer that
 * vanished without a FIN, or a TLS stream that missed the end). */
static bool keepalive_locked(tw_client *c)
{
    if (c->o.keepalive_ms <= 0 || c->state != TW_CLIENT_CONNECTED || !c->tr) return false;
    int64_t now = tw_mono_us(), ka = (int64_t)c->o.keepalive_ms * 1000;
    /* Nothing is read while the resync is written: a slow one is not a
     * silent link (dropping it sent the whole resync again, found in
     * review), but one stuck for ten keepalive periods (at least a minute:
     * a peer gone mid-resync, a zero window) is dropped all the same. */
    if (c->resyncing) {
        int64_t bound = 10 * ka > 60000000 ? 10 * ka : 60000000;
        if (now - c->resync_since_us > bound) c->tops->shutdown(c->tr);
        return false;
    }
    int64_t idle = now - atomic_load(&c->last_rx_us);
    if (idle > 2 * ka) {
        c->tops->shutdown(c->tr); /* the I/O thread reconnects */
        return false;
    }
    if (idle > ka && now - c->last_ping_us > ka) {
        c->last_ping_us = now;
        return true;
    }
    return false;
}

static void send_ping(tw_client *c)
{
    char corr[TW_ID_MAX];
    json_t *env = sdk_request(c, "ping", NULL, NULL, corr);
    if (env) sdk_enqueue(c, env, OUT_VALUE, NULL);
}

/* mtx held. The periodic work: asynchronous timeouts and the keepalive,
 * every 100 ms, between jobs too (a queue that never runs empty must not
 * starve them). true: a ping is due (send it without mtx). */
static bool periodic_locked(tw_client *c)
{
    int64_t now = tw_mono_us();
    if (now < c->next_check_us) return false;
    c->next_check_us = now + 100000;
    check_timeouts_locked(c);
    return keepalive_locked(c);
}

/* Runs queued jobs in order; run_mtx keeps them one at a time whichever
 * thread (callback thread, or the I/O thread with dispatch_inline) runs. */
static void run_jobs(tw_client *c)
{
    pthread_mutex_lock(&c->run_mtx);
    for (;;) {
        pthread_mutex_lock(&c->mtx);
        if (periodic_locked(c)) {
            pthread_mutex_unlock(&c->mtx);
            send_ping(c);
            pthread_mutex_lock(&c->mtx);
        }
        job *j = c->jhead;
        if (j) {
            c->jhead = j->next;
            if (!c->jhead) c->jtail = NULL;
            c->njobs--;
            pthread_cond_signal(&c->job_space);
        }
        pthread_mutex_unlock(&c->mtx);
        if (!j) break;
        run_job(c, j);
        free(j);
    }
    pthread_mutex_unlock(&c->run_mtx);
}

static void *cb_main(void *arg)
{
    tw_client *c = arg;
    pthread_mutex_lock(&c->mtx);
    for (;;) {
        while (!c->jhead && !c->cb_stop) {
            struct timespec ts;
            abstime(&ts, 100);
            pthread_cond_timedwait(&c->job_cond, &c->mtx, &ts);
            if (!c->jhead) break;
        }
        if (periodic_locked(c)) {
            pthread_mutex_unlock(&c->mtx);
            send_ping(c);
            pthread_mutex_lock(&c->mtx);
        }
        if (!c->jhead) {
            if (c->cb_stop) break; /* closing and drained */
            continue;
        }
        pthread_mutex_unlock(&c->mtx);
        run_jobs(c);
        pthread_mutex_lock(&c->mtx);
    }
    pthread_mutex_unlock(&c->mtx);
    return NULL;
}

/* ---- the send queue and the writer thread ------------------------------------ */

static void item_free(out_item *it)
{
    free(it->buf);
    free(it->corr);
}

int sdk_enqueue(tw_client *c, json_t *env, out_kind kind, const char *corr)
{
    size_t len = 0;
    char *buf = env ? encode(env, &len) : NULL;
    json_decref(env);
    if (!buf) return TW_ENOMEM;
    return sdk_enqueue_line(c, buf, len, kind, corr);
}

/* mtx held: no room for one more envelope. */
static bool queue_full(const tw_client *c)
{
    return c->qn == c->qcap || c->qenv >= (size_t)c->o.send_queue;
}

/* A run of values grows (doubling from 256 bytes) to this size before a new
 * one starts: large enough that the writer sends few buffers, small enough to
 * stay cache-friendly. */
#define VALUE_RUN (64u * 1024u)

/* mtx held: puts an item back at the head of the ring (what a failed write
 * did not send, to leave first on the next link), growing the ring when it
 * is full (the envelope bound may be passed by what comes back). */
static bool ring_push_front(tw_client *c, const out_item *it)
{
    if (c->qn == c->qcap) {
        size_t nc = c->qcap * 2;
        out_item *nq = calloc(nc, sizeof *nq);
        if (!nq) return false;
        for (size_t i = 0; i < c->qn; i++)
            nq[i] = c->q[(c->qhead + i) % c->qcap];
        free(c->q);
        c->q = nq;
        c->qcap = nc;
        c->qhead = 0;
    }
    c->qhead = (c->qhead + c->qcap - 1) % c->qcap;
    c->q[c->qhead] = *it;
    c->qn++;
    c->qenv += it->nenv;
    return true;
}

/* Waits (mtx held) until the send queue has room: 0, or TW_ECLOSED,
 * TW_EOFFLINE (unless offline_ok: answers wait for the reconnect) or
 * TW_EFULL after send_block_ms. */
static int wait_for_room(tw_client *c, bool offline_ok)
{
    bool timed_out = false;
    for (;;) {
        if (c->closing) return TW_ECLOSED;
        if (c->state != TW_CLIENT_CONNECTED && !offline_ok) return TW_EOFFLINE;
        if (!queue_full(c)) return 0;
        if (timed_out) return TW_EFULL;
        struct timespec ts;
        abstime(&ts, c->o.send_block_ms);
        if (pthread_cond_timedwait(&c->space_cond, &c->mtx, &ts) == ETIMEDOUT) timed_out = true;
    }
}

int sdk_enqueue_value(tw_client *c, const char *line, size_t len)
{
    pthread_mutex_lock(&c->mtx);
    int rc = wait_for_room(c, false);
    if (rc) {
        atomic_fetch_add(&c->st_dropped, 1);
        pthread_mutex_unlock(&c->mtx);
        return rc;
    }
    out_item *tail = c->qn ? &c->q[(c->qhead + c->qn - 1) % c->qcap] : NULL;
    if (tail && tail->kind == OUT_VALUE && tail->len + len <= VALUE_RUN &&
        tail->cap - tail->len < len) {
        /* the run grows by doubling: memory stays within twice the bytes queued
         * even when values alternate with requests and every run is short */
        size_t nc = tail->cap * 2;
        while (nc - tail->len < len)
            nc *= 2;
        char *nb = realloc(tail->buf, nc);
        if (nb) {
            tail->buf = nb;
            tail->cap = nc;
        }
    }
    if (!tail || tail->kind != OUT_VALUE || tail->cap - tail->len < len) {
        /* a new run (the ring has room: queue_full said so) */
        size_t cap = len > 256 ? len : 256;
        char *buf = malloc(cap);
        if (!buf) {
            atomic_fetch_add(&c->st_dropped, 1);
            pthread_mutex_unlock(&c->mtx);
            return TW_ENOMEM;
        }
        tail = &c->q[(c->qhead + c->qn) % c->qcap];
        *tail = (out_item){.buf = buf, .cap = cap, .kind = OUT_VALUE};
        c->qn++;
    }
    memcpy(tail->buf + tail->len, line, len);
    tail->len += len;
    tail->nenv++;
    c->qenv++;
    if (c->writer_waiting) {
        c->writer_waiting = false;
        pthread_cond_broadcast(&c->state_cond);
    }
    pthread_mutex_unlock(&c->mtx);
    return 0;
}

int sdk_enqueue_line(tw_client *c, char *buf, size_t len, out_kind kind, const char *corr)
{
    char *corr_copy = NULL;
    if (kind == OUT_REQUEST && corr && !(corr_copy = strdup(corr))) {
        free(buf);
        return TW_ENOMEM;
    }
    int rc = 0;
    pthread_mutex_lock(&c->mtx);
    /* Fast path for requests and answers: with nothing queued and nobody
     * writing, the caller writes itself instead of waking the writer - one
     * thread hand-off less on every round trip. Values always go through the
     * writer, which batches them. */
    if (kind != OUT_VALUE && c->qn == 0 && !c->writer_busy && !c->closing &&
        c->state == TW_CLIENT_CONNECTED && c->tr && !c->link_broken) {
        tw_transport *t = c->tr;
        c->writer_busy = true;
        pthread_mutex_unlock(&c->mtx);
        size_t sent = 0;
        int src = c->tops->send_n(t, buf, len, &sent);
        if (src) c->tops->shutdown(t); /* the I/O thread sees the link end */
        atomic_fetch_add(&c->st_sent, 1);
        atomic_fetch_add(&c->st_batches, 1);
        pthread_mutex_lock(&c->mtx);
        if (src && sent < len) {
            /* the line never left whole, so the runtime never read it: an
             * answer waits for the next link, a request fails now */
            c->link_broken = true;
            out_item it = {.buf = buf, .len = len, .cap = len, .nenv = 1, .kind = kind};
            if (kind == OUT_ANSWER)
                rc = ring_push_front(c, &it) ? 0 : TW_ENOMEM;
            else
                rc = TW_EOFFLINE;
            if (kind == OUT_ANSWER && !rc) buf = NULL;
        }
        c->writer_busy = false;
        /* Only if someone waits for this write: the writer thread (idle on
         * state_cond) when something was queued meanwhile, link_down, or
         * anyone after a failure. Waking the idle writer after every round
         * trip's write, for nothing, cost each client a context switch per
         * request and per answer. */
        if (c->qn > 0 || c->busy_waiters > 0 || src) pthread_cond_broadcast(&c->state_cond);
        pthread_mutex_unlock(&c->mtx);
        free(buf);
        free(corr_copy);
        return rc;
    }
    rc = wait_for_room(c, kind == OUT_ANSWER);
    if (!rc) {
        out_item *it = &c->q[(c->qhead + c->qn) % c->qcap];
        it->buf = buf;
        it->len = it->cap = len;
        it->nenv = 1;
        it->kind = kind;
        it->corr = corr_copy;
        c->qn++;
        c->qenv++;
        if (c->writer_waiting) {
            c->writer_waiting = false; /* one wake-up is enough */
            pthread_cond_broadcast(&c->state_cond);
        }
    } else {
        if (kind == OUT_VALUE) atomic_fetch_add(&c->st_dropped, 1);
        free(buf);
        free(corr_copy);
    }
    pthread_mutex_unlock(&c->mtx);
    return rc;
}

/* What the writer took into one write, per item: enough to settle each
 * item if the write fails partway (wr_failed). */
typedef struct wr_meta {
    out_kind kind;
    size_t nenv;
    size_t end; /* the item's last byte + 1 in the write buffer */
    char *corr; /* OUT_REQUEST: the pending call's (owned) */
} wr_meta;

/* mtx held. A write failed after `sent` bytes: the items that did not leave
 * whole never reached the runtime. Answers go back to the head of the
 * queue, in order, for the next link; requests fail with TW_EOFFLINE
 * (their callers no longer wait for a status that cannot come); values
 * are dropped. Items that left whole count as sent. */
static void wr_failed(tw_client *c, const char *wbuf, wr_meta *m, size_t n, size_t sent)
{
    c->link_broken = true;
    for (size_t i = n; i-- > 0;) {
        size_t start = i ? m[i - 1].end : 0;
        if (m[i].end <= sent) break;
        if (m[i].kind == OUT_ANSWER) {
            out_item it = {.buf = malloc(m[i].end - start),
                           .len = m[i].end - start,
                           .cap = m[i].end - start,
                           .nenv = m[i].nenv,
                           .kind = OUT_ANSWER};
            if (it.buf) memcpy(it.buf, wbuf + start, it.len);
            if (!it.buf || !ring_push_front(c, &it)) {
                free(it.buf);
                tw_log_warn("libtwin", "an answer was lost with the link (out of memory)");
            }
        } else if (m[i].kind == OUT_REQUEST && m[i].corr) {
            pending *p = tw_hmap_get(&c->pend, m[i].corr);
            if (p) pending_finish(c, p, TW_EOFFLINE, true);
        } else if (m[i].kind == OUT_VALUE) {
            atomic_fetch_add(&c->st_dropped, m[i].nenv);
        }
    }
}

static void *wr_main(void *arg)
{
    tw_client *c = arg;
    char *wbuf = NULL;
    size_t wcap = 0;
    wr_meta *meta = NULL;
    size_t mcap = 0;
    pthread_mutex_lock(&c->mtx);
    for (;;) {
        while (!c->closing && (c->qn == 0 || c->state != TW_CLIENT_CONNECTED || !c->tr ||
                               c->writer_busy || c->link_broken)) {
            c->writer_waiting = true;
            pthread_cond_wait(&c->state_cond, &c->mtx);
            c->writer_waiting = false;
            atomic_fetch_add(&c->st_writer_wakeups, 1);
        }
        if (c->closing) break;
        size_t wlen = 0, n = 0, nitems = 0;
        while (c->qn && (wlen == 0 || wlen + c->q[c->qhead].len <= TW_NNG_BATCH_MAX)) {
            out_item *it = &c->q[c->qhead];
            if (wlen + it->len > wcap) {
                size_t nc = wcap ? wcap : 65536;
                while (nc < wlen + it->len)
                    nc *= 2;
                char *nb = realloc(wbuf, nc);
                if (!nb) break;
                wbuf = nb;
                wcap = nc;
            }
            if (nitems == mcap) {
                size_t nc = mcap ? 2 * mcap : 64;
                wr_meta *nm = realloc(meta, nc * sizeof *nm);
                if (!nm) break;
                meta = nm;
                mcap = nc;
            }
            memcpy(wbuf + wlen, it->buf, it->len);
            wlen += it->len;
            n += it->nenv;
            meta[nitems++] = (wr_meta){it->kind, it->nenv, wlen, it->corr};
            it->corr = NULL; /* now meta's */
            c->qenv -= it->nenv;
            item_free(it);
            c->qhead = (c->qhead + 1) % c->qcap;
            c->qn--;
        }
        pthread_cond_broadcast(&c->space_cond);
        if (wlen == 0) continue;
        tw_transport *t = c->tr;
        c->writer_busy = true;
        pthread_mutex_unlock(&c->mtx);
        size_t sent = 0;
        int rc = c->tops->send_n(t, wbuf, wlen, &sent);
        if (rc) c->tops->shutdown(t); /* the I/O thread sees the link end */
        atomic_fetch_add(&c->st_sent, n);
        atomic_fetch_add(&c->st_batches, 1);
        pthread_mutex_lock(&c->mtx);
        if (rc && sent < wlen) wr_failed(c, wbuf, meta, nitems, sent);
        for (size_t i = 0; i < nitems; i++)
            free(meta[i].corr);
        c->writer_busy = false;
        pthread_cond_broadcast(&c->state_cond);
    }
    pthread_mutex_unlock(&c->mtx);
    free(wbuf);
    free(meta);
    return NULL;
}

/* ---- routing incoming envelopes --------------------------------------------- */

static json_t *ref_or_null(json_t *v)
{
    return v ? json_incref(v) : NULL;
}

static void handle_response(tw_client *c, tw_msg *m)
{
    const char *corr = tw_msg_correlation(m);
    if (!corr) return;
    pthread_mutex_lock(&c->mtx);
    pending *p = tw_hmap_get(&c->pend, corr);
    if (!p) {
        const char *aid = json_string_value(tw_msg_get(m, "actionID"));
        tw_status st = tw_msg_status(m);
        job *j = aid && st != TW_STATUS_NONE && c->o.on_action_status ? calloc(1, sizeof *j) : NULL;
        if (j) {
            j->kind = JOB_ACTION;
            j->afn = c->o.on_action_status;
            j->arg = c->o.action_status_arg;
            j->res.status = st;
            tw_strlcpy(j->res.action_id, aid, sizeof j->res.action_id);
            j->res.output = ref_or_null(tw_msg_get(m, "output"));
            j->res.error = ref_or_null(tw_msg_get(m, "error"));
            sdk_push_job_locked(c, j);
        }
        pthread_mutex_unlock(&c->mtx);
        return;
    }
    if (p->kind == PEND_PLAIN) {
        json_t *env = tw_msg_json(m);
        p->response = ref_or_null(env);
        pending_finish(c, p, env ? sdk_response_rc(env) : TW_ENOMEM, true);
        pthread_mutex_unlock(&c->mtx);
        return;
    }
    json_t *err = tw_msg_get(m, "error");
    tw_status st = tw_msg_status(m);
    if (st == TW_STATUS_NONE) st = err ? TW_STATUS_FAILED : TW_STATUS_PENDING;
    const char *aid = json_string_value(tw_msg_get(m, "actionID"));
    if (aid) tw_strlcpy(p->last.action_id, aid, sizeof p->last.action_id);
    tw_action_result_clear(&p->last);
    p->last.status = st;
    p->last.output = ref_or_null(tw_msg_get(m, "output"));
    p->last.error = ref_or_null(err);
    bool final = tw_status_final(st);
    if (!p->sync && p->fn && !final) {
        job *j = calloc(1, sizeof *j);
        if (j) {
            j->kind = JOB_ACTION;
            j->afn = p->fn;
            j->arg = p->arg;
            result_copy(&j->res, &p->last);
            sdk_push_job_locked(c, j);
        }
    }
    if (final)
        pending_finish(c, p, rc_of(st, err), true);
    else if (p->want_id && aid)
        pthread_cond_signal(&p->cond); /* learn_action_id waits for it */
    pthread_mutex_unlock(&c->mtx);
}

/* Envelopes from the runtime are read with the runtime's own parser: it
 * reads the header fields and leaves payloads for whoever asks. The limits
 * are the transport's (a directory listing may exceed the runtime's
 * max_body, and TDs nest deeper than envelopes it accepts). */
static const tw_msg_limits rx_limits = {.max_bytes = 64u * 1024u * 1024u, .max_depth = 256};

static void process_line(tw_client *c, const char *line, size_t len)
{
    atomic_fetch_add_explicit(&c->st_received, 1, memory_order_relaxed);
    atomic_store_explicit(&c->last_rx_us, tw_mono_us(), memory_order_relaxed);
    tw_msg *m = NULL;
    json_t *problem = NULL;
    if (tw_msg_parse(line, len, &rx_limits, &m, &problem) != 0) {
        /* dropped: a call it answered would only time out, so say so (the
         * reason, not the content: it may hold a token), at most every 10 s */
        c->rx_bad++;
        int64_t now = tw_mono_us();
        if (!c->rx_bad_warn_us || now - c->rx_bad_warn_us >= 10000000) {
            tw_log_warn("libtwin",
                        "dropped %llu envelope(s) from the runtime that could not be parsed "
                        "(the last: %zu bytes, %s)",
                        (unsigned long long)c->rx_bad, len,
                        json_string_value(json_object_get(problem, "detail"))
                            ? json_string_value(json_object_get(problem, "detail"))
                            : "invalid");
            c->rx_bad_warn_us = now;
            c->rx_bad = 0;
        }
        json_decref(problem);
        return;
    }
    json_t *seq = tw_msg_get(m, TW_NNG_CURSOR_FIELD);
    if (json_is_integer(seq)) {
        pthread_mutex_lock(&c->mtx);
        if (json_integer_value(seq) > c->cursor) c->cursor = json_integer_value(seq);
        pthread_mutex_unlock(&c->mtx);
    }
    switch (tw_msg_get_type(m)) {
    case TW_TYPE_RESPONSE:
        handle_response(c, m);
        break;
    case TW_TYPE_NOTIFICATION:
        sdk_consumer_notify(c, m);
        break;
    case TW_TYPE_REQUEST:
        sdk_agent_request(c, m);
        break;
    default:
        break;
    }
    tw_msg_unref(m);
}

/* ---- synchronous and asynchronous calls --------------------------------------- */

static pending *pending_new(tw_client *c, const char *corr, pend_kind kind, bool sync)
{
    pending *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    tw_strlcpy(p->corr, corr, sizeof p->corr);
    p->kind = kind;
    p->sync = sync;
    if (sync) cond_init(&p->cond);
    return p;
}

static int pending_add(tw_client *c, pending *p)
{
    int err = 0;
    pthread_mutex_lock(&c->mtx);
    if (c->closing)
        err = -1;
    else
        tw_hmap_put(&c->pend, p->corr, p, &err);
    pthread_mutex_unlock(&c->mtx);
    return err ? (c->closing ? TW_ECLOSED : TW_ENOMEM) : 0;
}

/*
 * A synchronous action call whose time ran out before any status named the
 * action: a quiet call (see tw_consumer_invoke) hears no `delivered` from
 * the runtime until its sweep, so without this the caller could neither
 * query nor cancel the action it started. Asks the runtime which live
 * action of ours has the call's correlationID (a queryaction with input
 * {"correlationID": ...}) and waits up to grace_ms for that answer or for
 * any status of the action (a final one completes the call after all; a
 * `queued` whose commit was slow names it too). mtx held on entry and exit;
 * p stays in the table throughout, so no status is missed meanwhile.
 */
/* The answer to learn_action_id's query says the action is final. */
static bool query_says_final(const pending *q)
{
    json_t *out = json_object_get(q->response, "output");
    return tw_status_final(tw_status_parse(json_string_value(json_object_get(out, "status"))));
}

static void learn_action_id(tw_client *c, pending *p, int grace_ms)
{
    pthread_mutex_unlock(&c->mtx);
    char qcorr[TW_ID_MAX];
    json_t *env = sdk_request(c, "queryaction", NULL, NULL, qcorr);
    if (env) json_object_set_new(env, "input", json_pack("{s:s}", "correlationID", p->corr));
    size_t len = 0;
    char *line = env ? encode(env, &len) : NULL;
    json_decref(env);
    pending *q = line ? pending_new(c, qcorr, PEND_PLAIN, true) : NULL;
    if (q) q->wake = &p->cond; /* one condition for both: its answer, or p's status */
    int rc = q ? pending_add(c, q) : TW_ENOMEM;
    if (rc == 0)
        rc = sdk_enqueue_line(c, line, len, OUT_REQUEST, qcorr);
    else
        free(line);
    pthread_mutex_lock(&c->mtx);
    if (!q) return;
    if (rc == 0) {
        p->want_id = true;
        struct timespec ts;
        abstime(&ts, grace_ms);
        /* Until p ends or names itself, or the query answers: a refusal
         * (not live: queued, or gone) ends the wait at once; an answer that
         * the action is already final means its final status is on its way
         * to p, which is worth the rest of the grace to return the outcome
         * rather than a final status without output. */
        while (!p->done && !p->last.action_id[0] &&
               !(q->done && (q->rc != 0 || !query_says_final(q))))
            if (pthread_cond_timedwait(&p->cond, &c->mtx, &ts) == ETIMEDOUT) break;
        p->want_id = false;
    }
    if (!q->done) tw_hmap_del(&c->pend, q->corr);
    if (!p->done && !p->last.action_id[0] && q->done && q->rc == 0) {
        json_t *out = json_object_get(q->response, "output");
        const char *aid = json_string_value(json_object_get(out, "id"));
        tw_status st = tw_status_parse(json_string_value(json_object_get(out, "status")));
        if (aid) {
            tw_strlcpy(p->last.action_id, aid, sizeof p->last.action_id);
            /* a final status without its output would pass for the outcome */
            if (st != TW_STATUS_NONE && !tw_status_final(st)) p->last.status = st;
        }
    }
    pending_free(q);
}

/* mtx held. A synchronous wait starts (on) or ends: on the callback
 * thread, the bound on queued callbacks is lifted meanwhile (see
 * sdk_push_job_locked). */
static void cb_block(tw_client *c, bool on)
{
    if (!pthread_equal(pthread_self(), c->cb_thr)) return;
    c->cb_blocked = on;
    if (on) pthread_cond_broadcast(&c->job_space);
}

/* Sends the line (ownership taken) and waits; on return p is out of the
 * table and owned by the caller. */
static int wait_pending(tw_client *c, pending *p, char *line, size_t len, int timeout_ms)
{
    if (!line) return TW_ENOMEM;
    int rc = pending_add(c, p);
    if (rc) {
        free(line);
        return rc;
    }
    rc = sdk_enqueue_line(c, line, len, OUT_REQUEST, p->corr);
    pthread_mutex_lock(&c->mtx);
    if (rc) {
        if (!p->done) tw_hmap_del(&c->pend, p->corr);
        pthread_mutex_unlock(&c->mtx);
        return rc;
    }
    struct timespec ts;
    int wait_ms = timeout_ms > 0 ? timeout_ms : c->o.request_timeout_ms;
    abstime(&ts, wait_ms);
    cb_block(c, true);
    while (!p->done)
        if (pthread_cond_timedwait(&p->cond, &c->mtx, &ts) == ETIMEDOUT) break;
    if (!p->done && p->kind == PEND_ACTION && !p->last.action_id[0])
        learn_action_id(c, p,
                        wait_ms < ID_GRACE_MIN_MS   ? ID_GRACE_MIN_MS
                        : wait_ms > ID_GRACE_MAX_MS ? ID_GRACE_MAX_MS
                                                    : wait_ms);
    cb_block(c, false);
    if (!p->done) {
        tw_hmap_del(&c->pend, p->corr);
        rc = TW_ETIMEDOUT;
    } else {
        rc = p->rc;
    }
    pthread_mutex_unlock(&c->mtx);
    return rc;
}

int sdk_call(tw_client *c, json_t *env, const char *corr, int timeout_ms, json_t **response)
{
    if (response) *response = NULL;
    size_t len = 0;
    char *line = env ? encode(env, &len) : NULL;
    json_decref(env);
    pending *p = line ? pending_new(c, corr, PEND_PLAIN, true) : NULL;
    if (!p) {
        free(line);
        return TW_ENOMEM;
    }
    int rc = wait_pending(c, p, line, len, timeout_ms);
    if (response) {
        *response = p->response;
        p->response = NULL;
    }
    pending_free(p);
    return rc;
}

int sdk_call_action(tw_client *c, char *line, size_t len, const char *corr, int timeout_ms,
                    tw_action_result *res)
{
    pending *p = line ? pending_new(c, corr, PEND_ACTION, true) : NULL;
    if (!p) {
        free(line);
        return TW_ENOMEM;
    }
    int rc = wait_pending(c, p, line, len, timeout_ms);
    if (res) {
        *res = p->last;
        memset(&p->last, 0, sizeof p->last);
    }
    pending_free(p);
    return rc;
}

int sdk_call_action_async(tw_client *c, char *line, size_t len, const char *corr, int timeout_ms,
                          tw_action_fn fn, void *arg)
{
    pending *p = line ? pending_new(c, corr, PEND_ACTION, false) : NULL;
    if (!p) {
        free(line);
        return TW_ENOMEM;
    }
    p->fn = fn;
    p->arg = arg;
    p->deadline_us = timeout_ms > 0 ? tw_mono_us() + (int64_t)timeout_ms * 1000 : 0;
    int rc = pending_add(c, p);
    if (rc) {
        pending_free(p);
        free(line);
        return rc;
    }
    rc = sdk_enqueue_line(c, line, len, OUT_REQUEST, corr);
    if (rc) {
        pthread_mutex_lock(&c->mtx);
        if (tw_hmap_get(&c->pend, corr) == p) {
            tw_hmap_del(&c->pend, corr);
            pending_free(p);
        }
        pthread_mutex_unlock(&c->mtx);
    }
    return rc;
}

int tw_client_request(tw_client *c, json_t *envelope, int timeout_ms, json_t **response)
{
    if (response) *response = NULL;
    if (!json_is_object(envelope) || !json_is_string(json_object_get(envelope, "operation")))
        return TW_EINVAL;
    json_t *env = json_deep_copy(envelope);
    if (!env) return TW_ENOMEM;
    char corr[TW_ID_MAX];
    sdk_new_id(c, corr);
    json_object_set_new(env, "type", json_string("request"));
    json_object_set_new(env, "correlationID", json_string(corr));
    json_object_set_new(env, "messageID", json_string(corr));
    return sdk_call(c, env, corr, timeout_ms, response);
}

int tw_client_send_raw(tw_client *c, json_t *envelope)
{
    if (!json_is_object(envelope)) return TW_EINVAL;
    const char *type = json_string_value(json_object_get(envelope, "type"));
    out_kind k = type && strcmp(type, "response") == 0  ? OUT_ANSWER
                 : type && strcmp(type, "request") == 0 ? OUT_REQUEST
                                                        : OUT_VALUE;
    return sdk_enqueue(c, json_incref(envelope), k, NULL);
}

/* ---- the I/O thread: connect, login, resync, read ------------------------------ */

static int read_token_file(const char *path, char *out, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f) return TW_EIO;
    size_t len = fread(out, 1, n - 1, f);
    fclose(f);
    out[len] = 0;
    while (len && (out[len - 1] == '\n' || out[len - 1] == '\r' || out[len - 1] == ' '))
        out[--len] = 0;
    return len ? 0 : TW_EINVAL;
}

/* Sends the login and reads until its response. 0, TW_EAUTH (the runtime
 * refused the credentials), another TW_E* of a transient refusal, or a link
 * error. */
static int login(tw_client *c, tw_transport *t, bool use_session)
{
    char corr[TW_ID_MAX];
    json_t *env = sdk_request(c, "login", NULL, NULL, corr);
    json_t *in = json_object();
    char tok[4096];
    pthread_mutex_lock(&c->mtx);
    int64_t since = c->cursor;
    if (use_session && c->session_token[0])
        json_object_set_new(in, "token", json_string(c->session_token));
    pthread_mutex_unlock(&c->mtx);
    if (!json_object_get(in, "token")) {
        if (c->token_file && read_token_file(c->token_file, tok, sizeof tok) == 0)
            json_object_set_new(in, "token", json_string(tok));
        else if (c->token)
            json_object_set_new(in, "token", json_string(c->token));
        else if (c->client_id && c->password) {
            json_object_set_new(in, "login", json_string(c->client_id));
            json_object_set_new(in, "password", json_string(c->password));
        }
    }
    json_object_set_new(in, "since", json_integer(since));
    json_object_set_new(env, "input", in);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = sdk_append_line(&buf, &len, &cap, env);
    sodium_memzero(tok, sizeof tok);
    json_decref(env);
    size_t sent = 0;
    if (!rc) rc = c->tops->send_n(t, buf, len, &sent);
    if (buf) sodium_memzero(buf, len);
    free(buf);
    if (rc) return rc;
    for (;;) {
        const char *line;
        size_t n;
        if ((rc = c->tops->recv(t, &line, &n)) != 0) return rc;
        json_t *r = json_loadb(line, n, 0, NULL);
        const char *rc_corr = json_string_value(json_object_get(r, "correlationID"));
        if (!rc_corr || strcmp(rc_corr, corr) != 0) {
            json_decref(r);
            process_line(c, line, n);
            continue;
        }
        rc = sdk_response_rc(r);
        if (rc == 0) {
            json_t *out = json_object_get(r, "output");
            const char *token = json_string_value(json_object_get(out, "token"));
            const char *id = json_string_value(json_object_get(out, "clientID"));
            pthread_mutex_lock(&c->mtx);
            if (token) tw_strlcpy(c->session_token, token, sizeof c->session_token);
            if (id) tw_strlcpy(c->auth_id, id, sizeof c->auth_id);
            pthread_mutex_unlock(&c->mtx);
        } else if (rc == TW_EAUTH || rc == TW_EPERM || rc == TW_EINVAL) {
            rc = TW_EAUTH; /* 401, 403, 400: these credentials will not do */
        }
        /* else (429, a 5xx such as 503 while twind starts): transient, the
         * link is re-made after the backoff and the session token kept */
        json_decref(r);
        return rc;
    }
}

/* Waits the backoff (interrupted by close); doubles it. */
static void backoff_wait(tw_client *c, int64_t *backoff)
{
    int64_t d = *backoff;
    int64_t wait = d / 2 + (d > 1 ? randombytes_uniform((uint32_t)(d / 2 + 1)) : 0);
    struct timespec ts;
    abstime(&ts, wait);
    pthread_mutex_lock(&c->mtx);
    while (!c->closing)
        if (pthread_cond_timedwait(&c->state_cond, &c->mtx, &ts) == ETIMEDOUT) break;
    pthread_mutex_unlock(&c->mtx);
    *backoff = d * 2 > c->o.reconnect_max_ms ? c->o.reconnect_max_ms : d * 2;
}

/* The link is gone: drop what cannot survive it, fail who waited on it. */
static void link_down(tw_client *c, tw_transport *t)
{
    pthread_mutex_lock(&c->mtx);
    c->tr = NULL;
    c->kick = false;
    if (c->state == TW_CLIENT_CONNECTED) atomic_fetch_add(&c->st_reconnects, 1);
    c->state = c->closing ? TW_CLIENT_CLOSED : TW_CLIENT_DISCONNECTED;
    state_job_locked(c, c->state);
    pthread_cond_broadcast(&c->state_cond);
    /* the send queue: answers stay, the rest goes */
    size_t kept = 0;
    for (size_t i = 0; i < c->qn; i++) {
        out_item it = c->q[(c->qhead + i) % c->qcap];
        if (it.kind == OUT_ANSWER) {
            c->q[(c->qhead + kept++) % c->qcap] = it;
            continue;
        }
        c->qenv -= it.nenv;
        if (it.kind == OUT_REQUEST && it.corr) {
            pending *p = tw_hmap_get(&c->pend, it.corr);
            if (p) pending_finish(c, p, TW_EOFFLINE, true);
        }
        if (it.kind == OUT_VALUE) atomic_fetch_add(&c->st_dropped, it.nenv);
        item_free(&it);
    }
    c->qn = kept;
    pthread_cond_broadcast(&c->space_cond);
    /* plain requests sent on this link will never be answered; actions keep
     * waiting: their status comes live or from the inbox after the login */
    pending *plain[256];
    int n;
    do {
        n = 0;
        size_t pos = 0;
        void *v;
        while (n < 256 && tw_hmap_next(&c->pend, &pos, NULL, &v))
            if (((pending *)v)->kind == PEND_PLAIN) plain[n++] = v;
        for (int i = 0; i < n; i++)
            pending_finish(c, plain[i], TW_ECLOSED, true);
    } while (n == 256);
    c->tops->shutdown(t);
    c->busy_waiters++;
    while (c->writer_busy)
        pthread_cond_wait(&c->state_cond, &c->mtx);
    c->busy_waiters--;
    pthread_mutex_unlock(&c->mtx);
    c->tops->free(t);
}

static void *io_main(void *arg)
{
    tw_client *c = arg;
    int64_t backoff = c->o.reconnect_min_ms;
    for (;;) {
        pthread_mutex_lock(&c->mtx);
        bool closing = c->closing;
        pthread_mutex_unlock(&c->mtx);
        if (closing) break;
        tw_transport *t = NULL;
        int rc = c->tops->connect(&c->o, c->o.connect_timeout_ms, &t);
        if (rc) {
            backoff_wait(c, &backoff);
            continue;
        }
        pthread_mutex_lock(&c->mtx);
        c->tr = t; /* not CONNECTED yet: the writer keeps off; close() can shut it */
        c->link_broken = false;
        closing = c->closing;
        pthread_mutex_unlock(&c->mtx);
        if (closing) {
            link_down(c, t);
            break;
        }
        set_state(c, TW_CLIENT_CONNECTING);
        rc = login(c, t, true);
        if (rc == TW_EAUTH && c->session_token[0]) {
            pthread_mutex_lock(&c->mtx);
            c->session_token[0] = 0; /* expired or revoked: back to the credentials */
            pthread_mutex_unlock(&c->mtx);
            rc = login(c, t, false);
        }
        if (rc) {
            link_down(c, t);
            if (rc == TW_EAUTH) set_state(c, TW_CLIENT_AUTH_FAILED);
            backoff_wait(c, &backoff);
            continue;
        }
        backoff = c->o.reconnect_min_ms;
        /* What the runtime must know again: TDs, values, subscriptions. The
         * snapshot and CONNECTED are one locked section, and writer_busy
         * keeps every other writer off until the resync is out: a value or
         * subscription made after the snapshot queues behind it (before,
         * one made meanwhile was refused as offline and missing from the
         * snapshot, unknown to the runtime until the next reconnect). */
        char *buf = NULL;
        size_t len = 0, cap = 0;
        pthread_mutex_lock(&c->mtx);
        rc = sdk_agent_resync(c, &buf, &len, &cap);
        if (!rc) rc = sdk_consumer_resync(c, &buf, &len, &cap);
        if (!rc) {
            atomic_store(&c->last_rx_us, tw_mono_us());
            c->state = TW_CLIENT_CONNECTED;
            c->writer_busy = true;
            c->resyncing = true;
            c->resync_since_us = tw_mono_us();
            state_job_locked(c, c->state);
            pthread_cond_broadcast(&c->state_cond);
        }
        pthread_mutex_unlock(&c->mtx);
        if (!rc) {
            size_t sent = 0;
            if (len) rc = c->tops->send_n(t, buf, len, &sent);
            pthread_mutex_lock(&c->mtx);
            if (rc) c->link_broken = true;
            c->writer_busy = false; /* (before link_down, which waits for it) */
            c->resyncing = false;
            atomic_store(&c->last_rx_us, tw_mono_us()); /* silence counts from here */
            pthread_cond_broadcast(&c->state_cond);
            pthread_mutex_unlock(&c->mtx);
        }
        free(buf);
        if (!rc) {
            const char *line;
            size_t n;
            while (c->tops->recv(t, &line, &n) == 0) {
                process_line(c, line, n);
                if (c->o.dispatch_inline) run_jobs(c);
            }
        }
        link_down(c, t);
        backoff_wait(c, &backoff);
    }
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------ */

static int start_thread(pthread_t *th, size_t stack, void *(*fn)(void *), void *arg)
{
    pthread_attr_t at;
    pthread_attr_init(&at);
    if (stack) pthread_attr_setstacksize(&at, stack);
    int rv = pthread_create(th, &at, fn, arg);
    pthread_attr_destroy(&at);
    return rv ? TW_ENOMEM : 0;
}

int tw_client_new(const tw_client_opts *opts, tw_client **out)
{
    if (!opts || !opts->url || !out) return TW_EINVAL;
    const tw_transport_ops *tops = tw_transport_for(opts->url);
    if (!tops) return TW_EUNSUPPORTED;
    if (!opts->token && !opts->token_file && !(opts->client_id && opts->password) &&
        !opts->cert_file)
        return TW_EINVAL;
    if (sodium_init() < 0) return TW_ECRYPTO;
    tw_client *c = calloc(1, sizeof *c);
    if (!c) return TW_ENOMEM;
    c->o = *opts;
    c->tops = tops;
    c->o.url = c->url = dupz(opts->url);
    c->o.ca_file = c->ca_file = dupz(opts->ca_file);
    c->o.server_name = c->server_name = dupz(opts->server_name);
    c->o.client_id = c->client_id = dupz(opts->client_id);
    c->o.password = c->password = dupz(opts->password);
    c->o.token = c->token = dupz(opts->token);
    c->o.token_file = c->token_file = dupz(opts->token_file);
    c->o.cert_file = c->cert_file = dupz(opts->cert_file);
    c->o.key_file = c->key_file = dupz(opts->key_file);
    if (c->o.connect_timeout_ms <= 0) c->o.connect_timeout_ms = 5000;
    if (c->o.request_timeout_ms <= 0) c->o.request_timeout_ms = 10000;
    if (c->o.reconnect_min_ms <= 0) c->o.reconnect_min_ms = 100;
    if (c->o.reconnect_max_ms < c->o.reconnect_min_ms)
        c->o.reconnect_max_ms = c->o.reconnect_min_ms > 15000 ? c->o.reconnect_min_ms : 15000;
    if (c->o.send_queue <= 0) c->o.send_queue = 65536;
    if (c->o.send_block_ms <= 0) c->o.send_block_ms = 2000;
    if (c->o.keepalive_ms == 0) c->o.keepalive_ms = 10000;
    c->cursor = opts->inbox_cursor > 0 ? opts->inbox_cursor : 0;
    c->state = TW_CLIENT_DISCONNECTED;
    c->qcap = (size_t)c->o.send_queue;
    c->q = calloc(c->qcap, sizeof *c->q);
    char rnd[TW_ID_MAX];
    tw_id_new(NULL, rnd);
    snprintf(c->idprefix, sizeof c->idprefix, "%.12s-", rnd);
    pthread_mutex_init(&c->mtx, NULL);
    pthread_mutex_init(&c->run_mtx, NULL);
    cond_init(&c->state_cond);
    cond_init(&c->space_cond);
    cond_init(&c->job_cond);
    cond_init(&c->job_space);
    tw_hmap_init(&c->pend);
    tw_hmap_init(&c->tds);
    tw_hmap_init(&c->props);
    tw_hmap_init(&c->reqs);
    if (!c->url || !c->q || (opts->password && !c->password) || (opts->token && !c->token)) {
        tw_client_close(c);
        return TW_ENOMEM;
    }
    int rc = start_thread(&c->cb_thr, 0, cb_main, c);
    bool cb = rc == 0;
    if (!rc) rc = start_thread(&c->wr_thr, 256 * 1024, wr_main, c);
    bool wr = cb && rc == 0;
    if (!rc) rc = start_thread(&c->io_thr, 512 * 1024, io_main, c);
    if (rc) {
        pthread_mutex_lock(&c->mtx);
        c->closing = c->cb_stop = true;
        pthread_cond_broadcast(&c->state_cond);
        pthread_cond_broadcast(&c->job_cond);
        pthread_mutex_unlock(&c->mtx);
        if (wr) pthread_join(c->wr_thr, NULL);
        if (cb) pthread_join(c->cb_thr, NULL);
        c->cb_thr = c->wr_thr = 0;
        tw_client_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

void tw_client_close(tw_client *c)
{
    if (!c) return;
    bool threads = c->io_thr != 0;
    pthread_mutex_lock(&c->mtx);
    c->closing = true;
    if (c->tr) c->tops->shutdown(c->tr);
    pthread_cond_broadcast(&c->state_cond);
    pthread_cond_broadcast(&c->space_cond);
    pthread_mutex_unlock(&c->mtx);
    if (threads) {
        pthread_join(c->io_thr, NULL);
        pthread_join(c->wr_thr, NULL);
    }
    /* every pending call fails; async ones hear it on the callback thread */
    pthread_mutex_lock(&c->mtx);
    pending *list[256];
    int n;
    do {
        n = 0;
        size_t pos = 0;
        void *v;
        while (n < 256 && tw_hmap_next(&c->pend, &pos, NULL, &v))
            list[n++] = v;
        for (int i = 0; i < n; i++)
            pending_finish(c, list[i], TW_ECLOSED, true);
    } while (n == 256);
    c->cb_stop = true;
    pthread_cond_broadcast(&c->job_cond);
    pthread_cond_broadcast(&c->job_space);
    pthread_mutex_unlock(&c->mtx);
    if (threads) pthread_join(c->cb_thr, NULL);
    /* a sync caller still waiting (another thread) is a caller bug */
    for (size_t i = 0; i < c->qn; i++)
        item_free(&c->q[(c->qhead + i) % c->qcap]);
    while (c->jhead) {
        job *j = c->jhead;
        c->jhead = j->next;
        if (j->msg) tw_msg_unref(j->msg);
        tw_action_result_clear(&j->res);
        if (j->req) sdk_req_free(j->req); /* (never handed to its handler) */
        free(j);
    }
    sdk_agent_free(c);
    sdk_consumer_free(c);
    tw_hmap_fini(&c->pend);
    tw_hmap_fini(&c->tds);
    tw_hmap_fini(&c->props);
    pthread_cond_destroy(&c->state_cond);
    pthread_cond_destroy(&c->space_cond);
    pthread_cond_destroy(&c->job_cond);
    pthread_cond_destroy(&c->job_space);
    pthread_mutex_destroy(&c->run_mtx);
    if (c->password) sodium_memzero(c->password, strlen(c->password));
    sodium_memzero(c->session_token, sizeof c->session_token);
    free(c->q);
    free(c->url);
    free(c->ca_file);
    free(c->server_name);
    free(c->client_id);
    free(c->password);
    free(c->token);
    free(c->token_file);
    free(c->cert_file);
    free(c->key_file);
    c->q = NULL;
    c->url = c->ca_file = c->server_name = c->client_id = c->password = c->token = NULL;
    c->token_file = c->cert_file = c->key_file = NULL;
    /* requests still held by the application keep the rest */
    pthread_mutex_lock(&c->mtx);
    c->zombie = c->nreqs > 0;
    bool last = !c->zombie;
    pthread_mutex_unlock(&c->mtx);
    if (last) sdk_client_free(c);
}

void sdk_client_free(tw_client *c)
{
    tw_hmap_fini(&c->reqs);
    pthread_mutex_destroy(&c->mtx);
    free(c);
}

tw_client_state tw_client_get_state(tw_client *c)
{
    pthread_mutex_lock(&c->mtx);
    tw_client_state s = c->state;
    pthread_mutex_unlock(&c->mtx);
    return s;
}

int tw_client_wait_connected(tw_client *c, int timeout_ms)
{
    struct timespec ts;
    abstime(&ts, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&c->mtx);
    cb_block(c, true);
    while (c->state != TW_CLIENT_CONNECTED && !c->closing)
        if (pthread_cond_timedwait(&c->state_cond, &c->mtx, &ts) == ETIMEDOUT) break;
    cb_block(c, false);
    if (c->state != TW_CLIENT_CONNECTED) rc = c->closing ? TW_ECLOSED : TW_ETIMEDOUT;
    pthread_mutex_unlock(&c->mtx);
    return rc;
}

void tw_client_get_id(tw_client *c, char out[TW_ID_MAX])
{
    pthread_mutex_lock(&c->mtx);
    tw_strlcpy(out, c->auth_id, TW_ID_MAX);
    pthread_mutex_unlock(&c->mtx);
}

int64_t tw_client_inbox_cursor(tw_client *c)
{
    pthread_mutex_lock(&c->mtx);
    int64_t v = c->cursor;
    pthread_mutex_unlock(&c->mtx);
    return v;
}

void tw_client_disconnect(tw_client *c)
{
    pthread_mutex_lock(&c->mtx);
    if (c->tr) c->tops->shutdown(c->tr);
    pthread_mutex_unlock(&c->mtx);
}

void tw_client_get_stats(tw_client *c, tw_client_stats *out)
{
    out->sent = atomic_load(&c->st_sent);
    out->received = atomic_load(&c->st_received);
    out->batches = atomic_load(&c->st_batches);
    out->dropped = atomic_load(&c->st_dropped);
    out->reconnects = atomic_load(&c->st_reconnects);
    out->writer_wakeups = atomic_load(&c->st_writer_wakeups);
}
