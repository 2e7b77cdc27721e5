/*
 * json_fast.c - see json_fast.h. A recursive copy and a recursive encoder
 * into one growing buffer; both stop at TW_JSON_FAST_MAX_DEPTH.
 */
#include "twin/json_fast.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *copy(const json_t *j, int depth)
{
    if (depth > TW_JSON_FAST_MAX_DEPTH) return NULL;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        json_t *o = json_object();
        const char *k;
        size_t klen;
        json_t *v;
        if (!o) return NULL;
        json_object_keylen_foreach((json_t *)j, k, klen, v)
        {
            json_t *c = copy(v, depth + 1);
            if (!c || json_object_setn_new_nocheck(o, k, klen, c) != 0) {
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    case JSON_ARRAY: {
        json_t *a = json_array();
        size_t i;
        json_t *v;
        if (!a) return NULL;
        json_array_foreach((json_t *)j, i, v)
        {
            json_t *c = copy(v, depth + 1);
            if (!c || json_array_append_new(a, c) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case JSON_STRING:
        return json_stringn_nocheck(json_string_value(j), json_string_length(j));
    case JSON_INTEGER:
        return json_integer(json_integer_value(j));
    case JSON_REAL:
        return json_real(json_real_value(j));
    case JSON_TRUE:
        return json_true();
    case JSON_FALSE:
        return json_false();
    default:
        return json_null();
    }
}

json_t *tw_json_copy(const json_t *j)
{
    return j ? copy(j, 0) : NULL;
}

typedef struct buf {
    char *p;
    size_t len, cap;
    bool failed;
} buf;

static void grow(buf *b, size_t extra)
{
    if (b->failed || b->len + extra < b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap <= b->len + extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void put(buf *b, const char *s, size_t n)
{
    grow(b, n);
    if (b->failed) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void put_string(buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    grow(b, n + 2);
    if (b->failed) return;
    b->p[b->len++] = '"';
    size_t run = 0; /* bytes copied as they are */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        put(b, s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', 0};
        size_t elen = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        put(b, esc, elen);
    }
    put(b, s + run, n - run);
    put(b, "\"", 1);
}

static void encode(buf *b, const json_t *j, int depth)
{
    if (b->failed) return;
    if (depth > TW_JSON_FAST_MAX_DEPTH) {
        b->failed = true;
        return;
    }
    char num[40];
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *k;
        size_t klen;
        json_t *v;
        bool first = true;
        put(b, "{", 1);
        json_object_keylen_foreach((json_t *)j, k, klen, v)
        {
            if (!first) put(b, ",", 1);
            first = false;
            put_string(b, k, klen);
            put(b, ":", 1);
            encode(b, v, depth + 1);
        }
        put(b, "}", 1);
        return;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *v;
        put(b, "[", 1);
        json_array_foreach((json_t *)j, i, v)
        {
            if (i) put(b, ",", 1);
            encode(b, v, depth + 1);
        }
        put(b, "]", 1);
        return;
    }
    case JSON_STRING:
        put_string(b, json_string_value(j), json_string_length(j));
        return;
    case JSON_INTEGER: {
        int n = snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        put(b, num, (size_t)n);
        return;
    }
    case JSON_REAL: {
        int n = snprintf(num, sizeof num, "%.17g", json_real_value(j));
        /* keep it a real when read back: 2 -> 2.0 */
        if (!strpbrk(num, ".eE")) n += snprintf(num + n, sizeof num - (size_t)n, ".0");
        put(b, num, (size_t)n);
        return;
    }
    case JSON_TRUE:
        put(b, "true", 4);
        return;
    case JSON_FALSE:
        put(b, "false", 5);
        return;
    default:
        put(b, "null", 4);
    }
}

char *tw_json_encode(const json_t *j, size_t *len)
{
    buf b = {0};
    if (!j) return NULL;
    encode(&b, j, 0);
    put(&b, "", 1);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    if (len) *len = b.len - 1;
    return b.p;
}
