/*
 * json_fast.c - see json_fast.h. A recursive copy and a recursive encoder
 * into one growing buffer; both stop at TW_JSON_FAST_MAX_DEPTH.
 */
#include "twin/json_fast.h"
#include "runtime/msg.h"

#include <errno.h>
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

/* ---- decoding ----------------------------------------------------------- */

typedef struct rd {
    const char *p, *end;
} rd;

static void skip_ws(rd *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned cp;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, cp = c & 0x07;
    else
        return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/*
 * A string at r->p (after the opening quote). On success s and n name the
 * bytes: inside the input when there were no escapes (*owned = NULL), else
 * in *owned (malloc'd). Returns -1 on error.
 */
static int read_string(rd *r, const char **s, size_t *n, char **owned)
{
    const char *start = r->p;
    bool escapes = false;
    *owned = NULL;
    while (r->p < r->end && *r->p != '"') {
        unsigned char c = (unsigned char)*r->p;
        if (c < 0x20) return -1;
        if (c == '\\') {
            escapes = true;
            if (r->end - r->p < 2) return -1;
            r->p += 2;
            continue;
        }
        if (c < 0x80) {
            r->p++;
            continue;
        }
        size_t l = utf8_seq((const unsigned char *)r->p, (size_t)(r->end - r->p));
        if (!l) return -1;
        r->p += l;
    }
    if (r->p >= r->end) return -1;
    const char *stop = r->p++; /* past the closing quote */
    if (!escapes) {
        *s = start;
        *n = (size_t)(stop - start);
        return 0;
    }
    char *out = malloc((size_t)(stop - start) + 1);
    size_t o = 0;
    if (!out) return -1;
    for (const char *q = start; q < stop;) {
        if (*q != '\\') {
            out[o++] = *q++;
            continue;
        }
        q++;
        unsigned cp, lo;
        switch (*q++) {
        case '"':
            out[o++] = '"';
            break;
        case '\\':
            out[o++] = '\\';
            break;
        case '/':
            out[o++] = '/';
            break;
        case 'b':
            out[o++] = '\b';
            break;
        case 'f':
            out[o++] = '\f';
            break;
        case 'n':
            out[o++] = '\n';
            break;
        case 'r':
            out[o++] = '\r';
            break;
        case 't':
            out[o++] = '\t';
            break;
        case 'u':
            if (stop - q < 4 || hex4(q, &cp)) goto bad;
            q += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (stop - q < 6 || q[0] != '\\' || q[1] != 'u' || hex4(q + 2, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    goto bad;
                q += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                goto bad;
            }
            o += tw_utf8_put(out + o, cp);
            break;
        default:
            goto bad;
        }
    }
    *owned = out;
    *s = out;
    *n = o;
    return 0;
bad:
    free(out);
    return -1;
}

static json_t *read_number(rd *r)
{
    const char *start = r->p;
    bool real = false;
    if (r->p < r->end && *r->p == '-') r->p++;
    if (r->p >= r->end || *r->p < '0' || *r->p > '9') return NULL;
    if (*r->p == '0') {
        r->p++;
    } else {
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
            r->p++;
    }
    if (r->p < r->end && *r->p == '.') {
        real = true;
        r->p++;
        if (r->p >= r->end || *r->p < '0' || *r->p > '9') return NULL;
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
            r->p++;
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        real = true;
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-')) r->p++;
        if (r->p >= r->end || *r->p < '0' || *r->p > '9') return NULL;
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
            r->p++;
    }
    char num[64];
    size_t n = (size_t)(r->p - start);
    if (n >= sizeof num) {
        /* absurdly long number: only strtod can make sense of it */
        char *big = strndup(start, n);
        if (!big) return NULL;
        double d = strtod(big, NULL);
        free(big);
        return json_real(d);
    }
    memcpy(num, start, n);
    num[n] = '\0';
    if (!real) {
        errno = 0;
        long long v = strtoll(num, NULL, 10);
        if (errno == 0) return json_integer(v);
    }
    return json_real(strtod(num, NULL));
}

static json_t *read_value(rd *r, int depth);

static json_t *read_object(rd *r, int depth)
{
    json_t *o = json_object();
    if (!o) return NULL;
    skip_ws(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        return o;
    }
    for (;;) {
        skip_ws(r);
        if (r->p >= r->end || *r->p != '"') break;
        r->p++;
        const char *k;
        size_t klen;
        char *owned;
        if (read_string(r, &k, &klen, &owned)) break;
        skip_ws(r);
        json_t *v = NULL;
        if (r->p < r->end && *r->p == ':') {
            r->p++;
            v = read_value(r, depth + 1);
        }
        int rc = v ? json_object_setn_new_nocheck(o, k, klen, v) : -1;
        free(owned);
        if (rc) break;
        skip_ws(r);
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            continue;
        }
        if (r->p < r->end && *r->p == '}') {
            r->p++;
            return o;
        }
        break;
    }
    json_decref(o);
    return NULL;
}

static json_t *read_array(rd *r, int depth)
{
    json_t *a = json_array();
    if (!a) return NULL;
    skip_ws(r);
    if (r->p < r->end && *r->p == ']') {
        r->p++;
        return a;
    }
    for (;;) {
        json_t *v = read_value(r, depth + 1);
        if (!v || json_array_append_new(a, v)) break;
        skip_ws(r);
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            continue;
        }
        if (r->p < r->end && *r->p == ']') {
            r->p++;
            return a;
        }
        break;
    }
    json_decref(a);
    return NULL;
}

static bool literal(rd *r, const char *word, size_t n)
{
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) return false;
    r->p += n;
    return true;
}

static json_t *read_value(rd *r, int depth)
{
    if (depth > TW_JSON_FAST_MAX_DEPTH) return NULL;
    skip_ws(r);
    if (r->p >= r->end) return NULL;
    switch (*r->p) {
    case '{':
        r->p++;
        return read_object(r, depth);
    case '[':
        r->p++;
        return read_array(r, depth);
    case '"': {
        r->p++;
        const char *s;
        size_t n;
        char *owned;
        if (read_string(r, &s, &n, &owned)) return NULL;
        json_t *v = json_stringn_nocheck(s, n);
        free(owned);
        return v;
    }
    case 't':
        return literal(r, "true", 4) ? json_true() : NULL;
    case 'f':
        return literal(r, "false", 5) ? json_false() : NULL;
    case 'n':
        return literal(r, "null", 4) ? json_null() : NULL;
    default:
        return read_number(r);
    }
}

json_t *tw_json_decode(const char *text, size_t len)
{
    if (!text) return NULL;
    rd r = {.p = text, .end = text + len};
    json_t *v = read_value(&r, 0);
    skip_ws(&r);
    if (v && r.p != r.end) {
        json_decref(v);
        return NULL;
    }
    return v;
}
