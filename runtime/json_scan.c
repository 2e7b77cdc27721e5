/*
 * json_scan.c - the one-pass validator and member splitter of json_scan.h.
 *
 * A recursive descent over the bytes: strings are checked for control
 * characters and well-formed escapes (surrogates paired), numbers against
 * the JSON grammar and a magnitude a double or a 64-bit integer holds, and
 * objects for duplicate keys by comparing the raw keys pairwise (objects
 * with more than SCAN_KEYS keys or escaped keys are left to the full
 * parser). Recursion stops at SCAN_DEPTH levels; the envelope's own nesting
 * limit (max_depth, the top-level object being level 1) is usually lower.
 */
#include "json_scan.h"

#include <stdint.h>
#include <string.h>

#define SCAN_DEPTH 40
#define SCAN_KEYS 16

typedef struct scan {
    const char *p, *end;
    int max_depth;
} scan;

static bool scan_value(scan *s, int depth, bool *escaped);

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Four hex digits at p (p + 4 <= end checked by the caller). */
static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return -1;
        v = v << 4 | h;
    }
    return v;
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* The first byte at or after p that ends a run of plain string bytes: a
 * control character, '"' or '\\' (or end). Eight bytes at a time: the usual
 * "has a zero byte" test on x (for < 0x20) and on x xor '"' and x xor '\\'.
 * Such a test may also flag bytes above the first hit (a borrow), never
 * below it, so the lowest flagged byte is the answer. Strings are most of
 * an envelope's bytes: this is the scanner's inner loop. */
static inline __attribute__((always_inline)) const char *plain_run(const char *p, const char *end)
{
    while (end - p >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        uint64_t q = x ^ (ONES * '"'), b = x ^ (ONES * '\\');
        /* (q and b have the high bits of x: one ~x serves all three tests) */
        uint64_t hit = ((x - ONES * 0x20) | (q - ONES) | (b - ONES)) & ~x & HIGHS;
        if (hit) return p + (__builtin_ctzll(hit) >> 3);
        p += 8;
    }
    while (p < end && (unsigned char)*p >= 0x20 && *p != '"' && *p != '\\')
        p++;
    return p;
}
#else
static const char *plain_run(const char *p, const char *end)
{
    while (p < end && (unsigned char)*p >= 0x20 && *p != '"' && *p != '\\')
        p++;
    return p;
}
#endif

size_t tw_jscan_plain_len(const char *s, size_t n)
{
    return (size_t)(plain_run(s, s + n) - s);
}

/* s->p at the opening quote; leaves it after the closing one. */
static bool scan_string(scan *s, bool *escaped)
{
    const char *p = s->p + 1, *end = s->end;
    for (;;) {
        p = plain_run(p, end);
        if (p >= end || (unsigned char)*p < 0x20) return false;
        if (*p == '"') {
            s->p = p + 1;
            return true;
        }
        /* a backslash */
        *escaped = true;
        if (p + 1 >= end) return false;
        char e = p[1];
        if (e == 'u') {
            if (end - p < 6) return false;
            int cp = hex4(p + 2);
            if (cp <= 0) return false; /* malformed, or \u0000 (the full parser words it) */
            p += 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return false; /* a lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u') return false;
                int lo = hex4(p + 2);
                if (lo < 0xDC00 || lo > 0xDFFF) return false;
                p += 6;
            }
        } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
                   e == 'r' || e == 't') {
            p += 2;
        } else {
            return false;
        }
    }
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool scan_number(scan *s)
{
    const char *p = s->p, *end = s->end;
    if (p < end && *p == '-') p++;
    const char *int_start = p;
    if (p >= end || !is_digit(*p)) return false;
    if (*p == '0')
        p++;
    else
        while (p < end && is_digit(*p))
            p++;
    size_t int_digits = (size_t)(p - int_start);
    bool real = false;
    if (p < end && *p == '.') {
        real = true;
        p++;
        if (p >= end || !is_digit(*p)) return false;
        while (p < end && is_digit(*p))
            p++;
    }
    long exp = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        real = true;
        p++;
        bool neg = false;
        if (p < end && (*p == '+' || *p == '-')) neg = *p++ == '-';
        if (p >= end || !is_digit(*p)) return false;
        while (p < end && is_digit(*p)) {
            if (exp < 100000) exp = exp * 10 + (*p - '0');
            p++;
        }
        if (neg) exp = -exp;
    }
    /* what a double or a 64-bit integer holds without the full parser's
     * overflow errors */
    if (!real && int_digits > 18) return false;
    if (real && (long)int_digits + exp > 300) return false;
    s->p = p;
    return true;
}

static bool scan_literal(scan *s, const char *lit, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0) return false;
    s->p += n;
    return true;
}

static bool scan_object(scan *s, int depth)
{
    const char *keys[SCAN_KEYS];
    size_t lens[SCAN_KEYS], nkeys = 0;
    s->p++; /* { */
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return true;
    }
    for (;;) {
        if (s->p >= s->end || *s->p != '"' || nkeys == SCAN_KEYS) return false;
        const char *k = s->p + 1;
        bool kesc = false;
        if (!scan_string(s, &kesc) || kesc) return false;
        size_t klen = (size_t)(s->p - 1 - k);
        for (size_t i = 0; i < nkeys; i++)
            if (lens[i] == klen && memcmp(keys[i], k, klen) == 0) return false;
        keys[nkeys] = k;
        lens[nkeys++] = klen;
        if (s->p >= s->end || *s->p != ':') return false;
        s->p++;
        bool vesc = false;
        if (!scan_value(s, depth + 1, &vesc)) return false;
        if (s->p >= s->end) return false;
        if (*s->p == '}') {
            s->p++;
            return true;
        }
        if (*s->p != ',') return false;
        s->p++;
    }
}

static bool scan_array(scan *s, int depth)
{
    s->p++; /* [ */
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return true;
    }
    for (;;) {
        bool vesc = false;
        if (!scan_value(s, depth + 1, &vesc)) return false;
        if (s->p >= s->end) return false;
        if (*s->p == ']') {
            s->p++;
            return true;
        }
        if (*s->p != ',') return false;
        s->p++;
    }
}

static bool scan_value(scan *s, int depth, bool *escaped)
{
    if (s->p >= s->end) return false;
    if (depth > s->max_depth && (*s->p == '{' || *s->p == '[')) return false;
    switch (*s->p) {
    case '"':
        return scan_string(s, escaped);
    case '{':
        return scan_object(s, depth);
    case '[':
        return scan_array(s, depth);
    case 't':
        return scan_literal(s, "true", 4);
    case 'f':
        return scan_literal(s, "false", 5);
    case 'n':
        return scan_literal(s, "null", 4);
    default:
        return scan_number(s);
    }
}

static void skip_ws_run(scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* Called four times per member: on compact text (the usual) one comparison,
 * inlined. */
static inline __attribute__((always_inline)) void skip_ws(scan *s)
{
    if (s->p < s->end && (unsigned char)*s->p <= ' ') skip_ws_run(s);
}

bool tw_jscan_object(const char *buf, size_t len, int max_depth, tw_jscan_member *out, size_t nmax,
                     size_t *n)
{
    scan s = {buf, buf + len, max_depth < SCAN_DEPTH ? max_depth : SCAN_DEPTH};
    size_t count = 0;
    *n = 0;
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{') return false;
    s.p++;
    skip_ws(&s);
    if (s.p < s.end && *s.p == '}') {
        s.p++;
    } else {
        for (;;) {
            if (s.p >= s.end || *s.p != '"' || count == nmax) return false;
            const char *k = s.p + 1;
            bool kesc = false;
            if (!scan_string(&s, &kesc) || kesc) return false;
            size_t klen = (size_t)(s.p - 1 - k);
            for (size_t i = 0; i < count; i++)
                if (out[i].key_len == klen &&
                    (klen == 0 || (out[i].key[0] == k[0] && memcmp(out[i].key, k, klen) == 0)))
                    return false;
            skip_ws(&s);
            if (s.p >= s.end || *s.p != ':') return false;
            s.p++;
            skip_ws(&s);
            const char *v = s.p;
            bool vesc = false;
            if (!scan_value(&s, 2, &vesc)) return false;
            out[count++] = (tw_jscan_member){k, klen, v, (size_t)(s.p - v), vesc};
            skip_ws(&s);
            if (s.p >= s.end) return false;
            if (*s.p == '}') {
                s.p++;
                break;
            }
            if (*s.p != ',') return false;
            s.p++;
            skip_ws(&s);
        }
    }
    skip_ws(&s);
    if (s.p != s.end) return false;
    *n = count;
    return true;
}
