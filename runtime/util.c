/*
 * util.c - the shared vocabulary of tw.h: error names and HTTP statuses,
 * role and status names, clocks, RFC 3339 time stamps and random ids.
 */
#include "tw.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct {
    int code;
    const char *name;
    int http;
} errors[] = {
    {TW_OK, "ok", 200},
    {TW_ENOMEM, "out of memory", 500},
    {TW_EINVAL, "invalid input", 400},
    {TW_ENOTFOUND, "not found", 404},
    {TW_EEXIST, "already exists", 409},
    {TW_EPERM, "forbidden", 403},
    {TW_EAUTH, "not authenticated", 401},
    {TW_EBUSY, "busy", 503},
    {TW_EIO, "input/output error", 500},
    {TW_ETOOBIG, "too large", 413},
    {TW_ECONFLICT, "conflict", 409},
    {TW_EOFFLINE, "not connected", 503},
    {TW_ERATE, "too many requests", 429},
    {TW_ETIMEDOUT, "timed out", 504},
    {TW_ECLOSED, "closed", 503},
    {TW_EEXPIRED, "expired", 410},
    {TW_EUNSUPPORTED, "not supported", 405},
    {TW_EDB, "database error", 500},
    {TW_EFULL, "queue full", 503},
    {TW_EMEDIA, "unsupported media type", 415},
    {TW_ECRYPTO, "cryptographic failure", 500},
};

const char *tw_strerror(int code)
{
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == code) return errors[i].name;
    return "unknown error";
}

int tw_error_http_status(int code)
{
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == code) return errors[i].http;
    return 500;
}

static const char *const role_names[TW_ROLE__COUNT] = {
    "none", "viewer", "operator", "manager", "admin", "agent", "service",
};

const char *tw_role_name(tw_role r)
{
    return (unsigned)r < TW_ROLE__COUNT ? role_names[r] : "none";
}

tw_role tw_role_parse(const char *name)
{
    if (!name) return TW_ROLE_NONE;
    for (int i = 1; i < TW_ROLE__COUNT; i++)
        if (strcmp(role_names[i], name) == 0) return (tw_role)i;
    return TW_ROLE_NONE;
}

bool tw_client_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n >= TW_ID_MAX || id[0] == '.' || id[0] == '-') return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static const char *const status_names[TW_STATUS__COUNT] = {
    "", "pending", "queued", "delivered", "running", "completed", "failed", "expired", "cancelled",
};

const char *tw_status_name(tw_status s)
{
    return (unsigned)s < TW_STATUS__COUNT ? status_names[s] : "";
}

tw_status tw_status_parse(const char *name)
{
    if (!name) return TW_STATUS_NONE;
    for (int i = 1; i < TW_STATUS__COUNT; i++)
        if (strcmp(status_names[i], name) == 0) return (tw_status)i;
    return TW_STATUS_NONE;
}

bool tw_status_final(tw_status s)
{
    return s == TW_STATUS_COMPLETED || s == TW_STATUS_FAILED || s == TW_STATUS_EXPIRED ||
           s == TW_STATUS_CANCELLED;
}

const char *tw_status_wot(tw_status s)
{
    switch (s) {
    case TW_STATUS_RUNNING:
        return "running";
    case TW_STATUS_COMPLETED:
        return "completed";
    case TW_STATUS_FAILED:
    case TW_STATUS_EXPIRED:
    case TW_STATUS_CANCELLED:
        return "failed";
    default:
        return "pending";
    }
}

int64_t tw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t tw_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Every message carries a time stamp, so formatting is on the hot path:
 * the "YYYY-MM-DDTHH:MM:SS" part is cached per thread for the current
 * second and only the milliseconds are written each time. */
static _Thread_local time_t cached_sec = -1;
static _Thread_local char cached_prefix[24];
static _Thread_local size_t cached_len;

void tw_time_format(int64_t ms, char out[TW_TIME_LEN])
{
    time_t secs = (time_t)(ms / 1000);
    int frac = (int)(ms % 1000);
    if (frac < 0) {
        frac += 1000;
        secs -= 1;
    }
    if (secs != cached_sec) {
        struct tm tm;
        gmtime_r(&secs, &tm);
        cached_len = strftime(cached_prefix, sizeof cached_prefix, "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = secs;
    }
    memcpy(out, cached_prefix, cached_len);
    char *p = out + cached_len;
    p[0] = '.';
    p[1] = (char)('0' + frac / 100);
    p[2] = (char)('0' + frac / 10 % 10);
    p[3] = (char)('0' + frac % 10);
    p[4] = 'Z';
    p[5] = '\0';
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9') return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

int tw_time_parse(const char *s, int64_t *ms)
{
    int y, mo, d, h, mi, sec, frac_ms = 0;
    const char *p = s;
    if (!s) return TW_EINVAL;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
        digits(&p, 2, &d) || (*p != 'T' && *p != 't' && *p != ' '))
        return TW_EINVAL;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' ||
        digits(&p, 2, &sec))
        return TW_EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return TW_EINVAL;
    if (*p == '.') {
        p++;
        int nd = 0;
        while (*p >= '0' && *p <= '9') {
            if (nd < 3) frac_ms = frac_ms * 10 + (*p - '0');
            nd++;
            p++;
        }
        if (nd == 0) return TW_EINVAL;
        for (; nd < 3; nd++)
            frac_ms *= 10;
    }
    int64_t offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;
        p++;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om)) return TW_EINVAL;
        offset_min = sign * (oh * 60 + om);
    } else {
        return TW_EINVAL;
    }
    if (*p) return TW_EINVAL;
    int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    *ms = secs * 1000 + frac_ms;
    return 0;
}

/* Random bytes for ids come from a per-thread pool refilled from the
 * kernel's CSPRNG through libsodium 4 KiB at a time: one getrandom() per 256
 * ids instead of one per id. A forked child drops its inherited pool so
 * parent and child never hand out the same bytes. */
#define ID_POOL 4096
static _Thread_local unsigned char id_pool[ID_POOL];
static _Thread_local size_t id_pool_left;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void id_pool_drop(void)
{
    sodium_memzero(id_pool, sizeof id_pool);
    id_pool_left = 0;
}

static void id_atfork_install(void)
{
    pthread_atfork(NULL, NULL, id_pool_drop);
}

static void id_random(unsigned char *out, size_t n)
{
    if (id_pool_left < n) {
        pthread_once(&atfork_once, id_atfork_install);
        randombytes_buf(id_pool, sizeof id_pool);
        id_pool_left = sizeof id_pool;
    }
    unsigned char *src = id_pool + (ID_POOL - id_pool_left);
    memcpy(out, src, n);
    sodium_memzero(src, n); /* a used byte is never kept */
    id_pool_left -= n;
}

void tw_id_new(const char *prefix, char out[TW_ID_MAX])
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    unsigned char raw[16];
    id_random(raw, sizeof raw);
    size_t n = 0;
    if (prefix) {
        size_t pl = strlen(prefix);
        if (pl > TW_ID_MAX - 28) pl = TW_ID_MAX - 28;
        memcpy(out, prefix, pl);
        n = pl;
    }
    /* 128 bits -> 26 base32 characters */
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < sizeof raw; i++) {
        acc = (acc << 8) | raw[i];
        bits += 8;
        while (bits >= 5) {
            out[n++] = alphabet[(acc >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits > 0) out[n++] = alphabet[(acc << (5 - bits)) & 31];
    out[n] = '\0';
}

int tw_strlcpy(char *dst, const char *src, size_t n)
{
    size_t len = strlen(src);
    if (n == 0) return TW_ETOOBIG;
    if (len >= n) {
        memcpy(dst, src, n - 1);
        dst[n - 1] = '\0';
        return TW_ETOOBIG;
    }
    memcpy(dst, src, len + 1);
    return 0;
}
