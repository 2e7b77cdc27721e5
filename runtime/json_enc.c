/*
 * json_enc.c - the compact encoder of json_enc.h.
 */
#include "json_enc.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf {
    char *p;
    size_t len, cap;
    bool failed;
} buf;

static bool reserve(buf *b, size_t more)
{
    if (b->len + more <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void put(buf *b, const char *s, size_t n)
{
    if (!reserve(b, n)) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void putc1(buf *b, char c)
{
    if (!reserve(b, 1)) return;
    b->p[b->len++] = c;
}

/* 1 when the byte must be escaped in a JSON string. */
static const unsigned char needs_escape[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

static void put_string(buf *b, const char *s, size_t n)
{
    if (!reserve(b, n + 2)) return; /* the common case: nothing to escape */
    putc1(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!needs_escape[c]) continue;
        put(b, s + run, i - run);
        run = i + 1;
        char esc[8];
        switch (c) {
        case '"':
            put(b, "\\\"", 2);
            break;
        case '\\':
            put(b, "\\\\", 2);
            break;
        case '\n':
            put(b, "\\n", 2);
            break;
        case '\r':
            put(b, "\\r", 2);
            break;
        case '\t':
            put(b, "\\t", 2);
            break;
        case '\b':
            put(b, "\\b", 2);
            break;
        case '\f':
            put(b, "\\f", 2);
            break;
        default:
            snprintf(esc, sizeof esc, "\\u%04X", c);
            put(b, esc, 6);
        }
    }
    put(b, s + run, n - run);
    putc1(b, '"');
}

static void put_int(buf *b, json_int_t v)
{
    char tmp[24];
    int i = (int)sizeof tmp;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) tmp[--i] = '-';
    put(b, tmp + i, sizeof tmp - (size_t)i);
}

static void put_real(buf *b, double d)
{
    char tmp[40];
    /* the shortest of 15 or 17 digits that reads back as the same double:
     * 0.1 stays 0.1 instead of 0.10000000000000001 */
    int n = snprintf(tmp, sizeof tmp, "%.15g", d);
    if (strtod(tmp, NULL) != d) n = snprintf(tmp, sizeof tmp, "%.17g", d);
    /* keep it a real for readers that care: 1 -> 1.0, as Jansson does */
    if (!strpbrk(tmp, ".eE") && n + 2 < (int)sizeof tmp) {
        tmp[n++] = '.';
        tmp[n++] = '0';
    }
    put(b, tmp, (size_t)n);
}

static void encode(buf *b, const json_t *v, int depth)
{
    if (b->failed) return;
    if (depth > 2048) {
        b->failed = true;
        return;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        putc1(b, '{');
        const char *k;
        size_t klen;
        json_t *val;
        bool first = true;
        void *tmp;
        json_object_keylen_foreach_safe((json_t *)v, tmp, k, klen, val)
        {
            if (!first) putc1(b, ',');
            first = false;
            put_string(b, k, klen);
            putc1(b, ':');
            encode(b, val, depth + 1);
        }
        putc1(b, '}');
        break;
    }
    case JSON_ARRAY: {
        putc1(b, '[');
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n; i++) {
            if (i) putc1(b, ',');
            encode(b, json_array_get(v, i), depth + 1);
        }
        putc1(b, ']');
        break;
    }
    case JSON_STRING:
        put_string(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        put_int(b, json_integer_value(v));
        break;
    case JSON_REAL:
        put_real(b, json_real_value(v));
        break;
    case JSON_TRUE:
        put(b, "true", 4);
        break;
    case JSON_FALSE:
        put(b, "false", 5);
        break;
    case JSON_NULL:
        put(b, "null", 4);
        break;
    }
}

char *tw_json_encode(const json_t *v, size_t *len)
{
    if (!v) return NULL;
    buf b = {0};
    encode(&b, v, 0);
    putc1(&b, '\0');
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    if (len) *len = b.len - 1;
    return b.p;
}
