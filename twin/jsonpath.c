/*
 * jsonpath.c - compiler and evaluator of the JSONPath subset in jsonpath.h.
 *
 * The compiler is a recursive-descent parser that builds a small tree of
 * jp_node (segments -> selectors -> filter expressions -> operands), all
 * allocated from one bounded arena inside the tw_jsonpath, so freeing is one
 * pass and the size of a query is bounded. The evaluator walks the tree
 * depth-first and hands every match to a callback in document order without
 * building intermediate node lists; filters resolve only singular paths, so
 * testing one candidate costs a handful of hash lookups. That is what keeps a
 * filter over 100,000 TDs in a few milliseconds.
 */
#include "twin/jsonpath.h"
#include "runtime/msg.h"
#include "runtime/tw.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    N_SEGMENT, /* desc, a = first selector, next = next segment */
    N_NAME,    /* str/len */
    N_INDEX,   /* i1 */
    N_SLICE,   /* i1/has1, i2/has2 */
    N_WILD,
    N_FILTER, /* a = expression */
    N_OR,     /* a || b */
    N_AND,    /* a && b */
    N_NOT,    /* !a */
    N_CMP,    /* a op b (operands) */
    N_EXISTS, /* a (path operand) */
    N_REL,    /* @ + singular segments (a = first N_NAME/N_INDEX, chained by next) */
    N_ABS,    /* $ + singular segments */
    N_LIT,    /* lit */
};

enum { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE };

typedef struct jp_node {
    int kind;
    int op;
    bool desc;
    bool has1, has2;
    struct jp_node *next, *a, *b;
    char *str;
    size_t len;
    int64_t i1, i2;
    json_t *lit;
} jp_node;

struct tw_jsonpath {
    jp_node *first;  /* first segment; NULL = the root itself */
    uint64_t budget; /* nodes an evaluation may visit */
    size_t nnodes;
    jp_node nodes[TW_JSONPATH_MAX_NODES];
};

typedef struct parser {
    const char *s;
    size_t pos, len;
    tw_jsonpath *p;
    char *err;
    size_t errlen;
    size_t err_off;
    bool failed;
    int too_big;
    int depth;
} parser;

static void fail(parser *ps, size_t at, const char *msg)
{
    if (ps->failed) return;
    ps->failed = true;
    ps->err_off = at;
    if (ps->err && ps->errlen) snprintf(ps->err, ps->errlen, "at offset %zu: %s", at, msg);
}

static jp_node *node_new(parser *ps, int kind)
{
    if (ps->p->nnodes >= TW_JSONPATH_MAX_NODES) {
        ps->too_big = 1;
        fail(ps, ps->pos, "query too complex");
        return NULL;
    }
    jp_node *n = &ps->p->nodes[ps->p->nnodes++];
    memset(n, 0, sizeof *n);
    n->kind = kind;
    return n;
}

static int peek(parser *ps)
{
    return ps->pos < ps->len ? (unsigned char)ps->s[ps->pos] : -1;
}

static void skip_ws(parser *ps)
{
    while (ps->pos < ps->len && strchr(" \t\r\n", ps->s[ps->pos]))
        ps->pos++;
}

static bool accept(parser *ps, const char *tok)
{
    size_t n = strlen(tok);
    if (ps->len - ps->pos >= n && memcmp(ps->s + ps->pos, tok, n) == 0) {
        ps->pos += n;
        return true;
    }
    return false;
}

static bool name_first(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '@' || c >= 0x80;
}

static bool name_char(int c)
{
    return name_first(c) || (c >= '0' && c <= '9') || c == '-';
}

static jp_node *parse_name(parser *ps)
{
    size_t start = ps->pos;
    if (!name_first(peek(ps))) {
        fail(ps, start, "expected a member name or '*'");
        return NULL;
    }
    while (ps->pos < ps->len && name_char((unsigned char)ps->s[ps->pos]))
        ps->pos++;
    jp_node *n = node_new(ps, N_NAME);
    if (!n) return NULL;
    n->str = strndup(ps->s + start, ps->pos - start);
    n->len = ps->pos - start;
    if (!n->str) fail(ps, start, "out of memory");
    return n;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool read_hex4(parser *ps, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = ps->pos < ps->len ? hexval((unsigned char)ps->s[ps->pos]) : -1;
        if (h < 0) {
            fail(ps, ps->pos, "expected four hex digits after \\u");
            return false;
        }
        v = v * 16 + (unsigned)h;
        ps->pos++;
    }
    *out = v;
    return true;
}

/* A quoted string at pos; returns malloc'd bytes (may contain NUL) and len. */
static char *parse_string(parser *ps, size_t *len)
{
    size_t start = ps->pos;
    char q = ps->s[ps->pos++];
    /* decoded output is never longer than the input */
    char *out = malloc(ps->len - start + 1);
    size_t o = 0;
    if (!out) {
        fail(ps, start, "out of memory");
        return NULL;
    }
    for (;;) {
        if (ps->pos >= ps->len) {
            fail(ps, start, "unterminated string");
            break;
        }
        unsigned char c = (unsigned char)ps->s[ps->pos++];
        if (c == (unsigned char)q) {
            out[o] = '\0';
            *len = o;
            return out;
        }
        if (c < 0x20) {
            fail(ps, ps->pos - 1, "control character in string");
            break;
        }
        if (c != '\\') {
            out[o++] = (char)c;
            continue;
        }
        if (ps->pos >= ps->len) {
            fail(ps, ps->pos, "unterminated escape");
            break;
        }
        c = (unsigned char)ps->s[ps->pos++];
        switch (c) {
        case '\'':
        case '"':
        case '\\':
        case '/':
            out[o++] = (char)c;
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
        case 'u': {
            unsigned cp, lo;
            if (!read_hex4(ps, &cp)) goto bad;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (!accept(ps, "\\u") || !read_hex4(ps, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                    fail(ps, ps->pos, "unpaired surrogate in \\u escape");
                    goto bad;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                fail(ps, ps->pos, "unpaired surrogate in \\u escape");
                goto bad;
            }
            o += tw_utf8_put(out + o, cp);
            break;
        }
        default:
            fail(ps, ps->pos - 1, "unknown escape in string");
            goto bad;
        }
    }
bad:
    free(out);
    return NULL;
}

static bool parse_int(parser *ps, int64_t *out)
{
    size_t start = ps->pos;
    bool neg = accept(ps, "-");
    if (peek(ps) < '0' || peek(ps) > '9') {
        fail(ps, start, "expected an integer");
        return false;
    }
    if (peek(ps) == '0' && ps->pos + 1 < ps->len && ps->s[ps->pos + 1] >= '0' &&
        ps->s[ps->pos + 1] <= '9') {
        fail(ps, start, "leading zero in integer");
        return false;
    }
    int64_t v = 0;
    while (peek(ps) >= '0' && peek(ps) <= '9') {
        int d = ps->s[ps->pos++] - '0';
        if (v > (INT64_MAX - d) / 10) {
            fail(ps, start, "integer out of range");
            return false;
        }
        v = v * 10 + d;
    }
    *out = neg ? -v : v;
    return true;
}

static jp_node *parse_or(parser *ps);

/* Singular segments after @ or $ in a filter. */
static jp_node *parse_singular(parser *ps, int kind)
{
    jp_node *path = node_new(ps, kind);
    if (!path) return NULL;
    jp_node **tail = &path->a;
    for (;;) {
        skip_ws(ps);
        jp_node *seg = NULL;
        size_t at = ps->pos;
        if (accept(ps, "..") ||
            (peek(ps) == '.' && ps->pos + 1 < ps->len && ps->s[ps->pos + 1] == '*')) {
            fail(ps, at, "filters support only singular paths (.name, ['name'], [index])");
            return NULL;
        } else if (accept(ps, ".")) {
            seg = parse_name(ps);
        } else if (peek(ps) == '[') {
            ps->pos++;
            skip_ws(ps);
            if (peek(ps) == '\'' || peek(ps) == '"') {
                seg = node_new(ps, N_NAME);
                if (seg) seg->str = parse_string(ps, &seg->len);
                if (seg && !seg->str) seg = NULL;
            } else if (peek(ps) == '-' || (peek(ps) >= '0' && peek(ps) <= '9')) {
                seg = node_new(ps, N_INDEX);
                if (seg && !parse_int(ps, &seg->i1)) seg = NULL;
            } else {
                fail(ps, ps->pos, "filters support only singular paths (.name, ['name'], [index])");
                return NULL;
            }
            skip_ws(ps);
            if (seg && !accept(ps, "]")) {
                fail(ps, ps->pos, "expected ']'");
                return NULL;
            }
        } else {
            return path;
        }
        if (!seg) return NULL;
        *tail = seg;
        tail = &seg->next;
    }
}

static jp_node *parse_number(parser *ps)
{
    size_t start = ps->pos;
    const char *p = ps->s + ps->pos;
    size_t i = 0, n = ps->len - ps->pos;
    bool is_real = false;
    if (i < n && p[i] == '-') i++;
    if (i >= n || p[i] < '0' || p[i] > '9') {
        fail(ps, start, "expected a number");
        return NULL;
    }
    if (p[i] == '0' && i + 1 < n && p[i + 1] >= '0' && p[i + 1] <= '9') {
        fail(ps, start, "leading zero in number");
        return NULL;
    }
    while (i < n && p[i] >= '0' && p[i] <= '9')
        i++;
    if (i < n && p[i] == '.') {
        is_real = true;
        i++;
        if (i >= n || p[i] < '0' || p[i] > '9') {
            fail(ps, start + i, "expected a digit after '.'");
            return NULL;
        }
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        is_real = true;
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-')) i++;
        if (i >= n || p[i] < '0' || p[i] > '9') {
            fail(ps, start + i, "expected a digit in the exponent");
            return NULL;
        }
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
    }
    char buf[64];
    if (i >= sizeof buf) {
        fail(ps, start, "number too long");
        return NULL;
    }
    memcpy(buf, p, i);
    buf[i] = '\0';
    jp_node *lit = node_new(ps, N_LIT);
    if (!lit) return NULL;
    if (!is_real) {
        errno = 0;
        long long v = strtoll(buf, NULL, 10);
        if (errno)
            is_real = true;
        else
            lit->lit = json_integer(v);
    }
    if (is_real) {
        double d = strtod(buf, NULL);
        if (!isfinite(d)) {
            fail(ps, start, "number out of range");
            return NULL;
        }
        lit->lit = json_real(d);
    }
    ps->pos += i;
    if (!lit->lit) fail(ps, start, "out of memory");
    return lit->lit ? lit : NULL;
}

static jp_node *parse_operand(parser *ps)
{
    skip_ws(ps);
    size_t at = ps->pos;
    int c = peek(ps);
    if (c == '@') {
        ps->pos++;
        return parse_singular(ps, N_REL);
    }
    if (c == '$') {
        ps->pos++;
        return parse_singular(ps, N_ABS);
    }
    jp_node *lit = NULL;
    if (c == '\'' || c == '"') {
        size_t len;
        char *s = parse_string(ps, &len);
        if (!s) return NULL;
        lit = node_new(ps, N_LIT);
        if (lit) lit->lit = json_stringn_nocheck(s, len);
        free(s);
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        return parse_number(ps);
    } else if (accept(ps, "true")) {
        if ((lit = node_new(ps, N_LIT))) lit->lit = json_true();
    } else if (accept(ps, "false")) {
        if ((lit = node_new(ps, N_LIT))) lit->lit = json_false();
    } else if (accept(ps, "null")) {
        if ((lit = node_new(ps, N_LIT))) lit->lit = json_null();
    } else {
        fail(ps, at,
             c < 0 ? "unexpected end of query in filter"
                   : "expected @, $, a string, a number, true, false or null");
        return NULL;
    }
    if (lit && !lit->lit) {
        fail(ps, at, "out of memory");
        return NULL;
    }
    return lit;
}

static int parse_cmp_op(parser *ps)
{
    if (accept(ps, "==")) return OP_EQ;
    if (accept(ps, "!=")) return OP_NE;
    if (accept(ps, "<=")) return OP_LE;
    if (accept(ps, ">=")) return OP_GE;
    if (accept(ps, "<")) return OP_LT;
    if (accept(ps, ">")) return OP_GT;
    return -1;
}

static jp_node *parse_unary(parser *ps)
{
    skip_ws(ps);
    if (++ps->depth > 32) {
        ps->too_big = 1;
        fail(ps, ps->pos, "filter nested too deeply");
        return NULL;
    }
    jp_node *r = NULL;
    size_t at = ps->pos;
    if (peek(ps) == '!' && !(ps->pos + 1 < ps->len && ps->s[ps->pos + 1] == '=')) {
        ps->pos++;
        jp_node *a = parse_unary(ps);
        if (a && (r = node_new(ps, N_NOT))) r->a = a;
    } else if (accept(ps, "(")) {
        r = parse_or(ps);
        skip_ws(ps);
        if (r && !accept(ps, ")")) {
            fail(ps, ps->pos, "expected ')'");
            r = NULL;
        }
    } else {
        jp_node *lhs = parse_operand(ps);
        if (lhs) {
            skip_ws(ps);
            size_t opat = ps->pos;
            int op = parse_cmp_op(ps);
            if (op < 0) {
                if (lhs->kind == N_LIT) {
                    fail(ps, opat, "expected a comparison operator (==, !=, <, <=, >, >=)");
                } else if ((r = node_new(ps, N_EXISTS))) {
                    r->a = lhs;
                }
            } else {
                jp_node *rhs = parse_operand(ps);
                if (rhs && (r = node_new(ps, N_CMP))) {
                    r->op = op;
                    r->a = lhs;
                    r->b = rhs;
                }
            }
        }
        (void)at;
    }
    ps->depth--;
    return ps->failed ? NULL : r;
}

static jp_node *parse_and(parser *ps)
{
    jp_node *l = parse_unary(ps);
    while (l) {
        skip_ws(ps);
        if (!accept(ps, "&&")) break;
        jp_node *r = parse_unary(ps), *n;
        if (!r || !(n = node_new(ps, N_AND))) return NULL;
        n->a = l;
        n->b = r;
        l = n;
    }
    return l;
}

static jp_node *parse_or(parser *ps)
{
    jp_node *l = parse_and(ps);
    while (l) {
        skip_ws(ps);
        if (!accept(ps, "||")) break;
        jp_node *r = parse_and(ps), *n;
        if (!r || !(n = node_new(ps, N_OR))) return NULL;
        n->a = l;
        n->b = r;
        l = n;
    }
    return l;
}

static jp_node *parse_selector(parser *ps)
{
    skip_ws(ps);
    int c = peek(ps);
    size_t at = ps->pos;
    jp_node *n = NULL;
    if (c == '\'' || c == '"') {
        if ((n = node_new(ps, N_NAME)) && !(n->str = parse_string(ps, &n->len))) n = NULL;
    } else if (c == '*') {
        ps->pos++;
        n = node_new(ps, N_WILD);
    } else if (c == '?') {
        ps->pos++;
        jp_node *e = parse_or(ps);
        if (e && (n = node_new(ps, N_FILTER))) n->a = e;
    } else if (c == '-' || c == ':' || (c >= '0' && c <= '9')) {
        int64_t v = 0;
        bool has = false;
        if (c != ':') {
            if (!parse_int(ps, &v)) return NULL;
            has = true;
        }
        skip_ws(ps);
        if (accept(ps, ":")) {
            if (!(n = node_new(ps, N_SLICE))) return NULL;
            n->i1 = v;
            n->has1 = has;
            skip_ws(ps);
            if (peek(ps) == '-' || (peek(ps) >= '0' && peek(ps) <= '9')) {
                if (!parse_int(ps, &n->i2)) return NULL;
                n->has2 = true;
            }
            skip_ws(ps);
            if (peek(ps) == ':') {
                fail(ps, ps->pos, "slice steps are not supported");
                return NULL;
            }
        } else if ((n = node_new(ps, N_INDEX))) {
            n->i1 = v;
        }
    } else {
        fail(ps, at,
             c < 0 ? "unexpected end of query, expected a selector"
                   : "expected a selector: 'name', index, slice, * or ?filter");
    }
    return ps->failed ? NULL : n;
}

/* After '[': selectors up to and including ']'. */
static jp_node *parse_bracket(parser *ps)
{
    jp_node *first = NULL, **tail = &first;
    for (;;) {
        jp_node *sel = parse_selector(ps);
        if (!sel) return NULL;
        *tail = sel;
        tail = &sel->next;
        skip_ws(ps);
        if (accept(ps, ",")) continue;
        if (accept(ps, "]")) return first;
        fail(ps, ps->pos,
             peek(ps) < 0 ? "unexpected end of query, expected ']'" : "expected ',' or ']'");
        return NULL;
    }
}

int tw_jsonpath_compile(const char *query, tw_jsonpath **out, char *err, size_t errlen,
                        size_t *err_offset)
{
    *out = NULL;
    if (err && errlen) err[0] = '\0';
    size_t qlen = query ? strlen(query) : 0;
    if (qlen > TW_JSONPATH_MAX_LEN) {
        if (err)
            snprintf(err, errlen, "at offset %d: query longer than %d bytes", TW_JSONPATH_MAX_LEN,
                     TW_JSONPATH_MAX_LEN);
        if (err_offset) *err_offset = TW_JSONPATH_MAX_LEN;
        return TW_ETOOBIG;
    }
    tw_jsonpath *p = calloc(1, sizeof *p);
    if (!p) return TW_ENOMEM;
    parser ps = {.s = query ? query : "", .len = qlen, .p = p, .err = err, .errlen = errlen};
    skip_ws(&ps);
    if (!accept(&ps, "$")) fail(&ps, ps.pos, "a query starts with '$'");
    jp_node **tail = &p->first;
    while (!ps.failed) {
        skip_ws(&ps);
        if (ps.pos >= ps.len) break;
        size_t at = ps.pos;
        jp_node *seg = node_new(&ps, N_SEGMENT);
        if (!seg) break;
        if (accept(&ps, "..")) {
            seg->desc = true;
            if (accept(&ps, "*"))
                seg->a = node_new(&ps, N_WILD);
            else if (accept(&ps, "["))
                seg->a = parse_bracket(&ps);
            else
                seg->a = parse_name(&ps);
        } else if (accept(&ps, ".")) {
            if (accept(&ps, "*"))
                seg->a = node_new(&ps, N_WILD);
            else
                seg->a = parse_name(&ps);
        } else if (accept(&ps, "[")) {
            seg->a = parse_bracket(&ps);
        } else {
            fail(&ps, at, "expected '.', '..' or '['");
        }
        *tail = seg;
        tail = &seg->next;
    }
    if (ps.failed) {
        if (err_offset) *err_offset = ps.err_off;
        tw_jsonpath_free(p);
        return ps.too_big ? TW_ETOOBIG : TW_EINVAL;
    }
    p->budget = TW_JSONPATH_MAX_STEPS;
    *out = p;
    return 0;
}

void tw_jsonpath_set_budget(tw_jsonpath *p, uint64_t steps)
{
    p->budget = steps ? steps : 1;
}

void tw_jsonpath_free(tw_jsonpath *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->nnodes; i++) {
        free(p->nodes[i].str);
        json_decref(p->nodes[i].lit);
    }
    free(p);
}

/* ---- evaluation ---- */

typedef struct eval_ctx {
    json_t *root;
    tw_jsonpath_fn fn;
    void *ctx;
    uint64_t *steps; /* nodes visited so far, bounded by budget */
    uint64_t budget;
} eval_ctx;

/* Counts one visited node; TW_ETOOBIG once the budget is spent. */
static int step(const eval_ctx *ec)
{
    return ++*ec->steps > ec->budget ? TW_ETOOBIG : 0;
}

static json_t *resolve(const jp_node *path, json_t *cur, json_t *root)
{
    json_t *v = path->kind == N_REL ? cur : root;
    for (const jp_node *s = path->a; s && v; s = s->next) {
        if (s->kind == N_NAME) {
            v = json_is_object(v) ? json_object_getn(v, s->str, s->len) : NULL;
        } else {
            if (!json_is_array(v)) return NULL;
            int64_t n = (int64_t)json_array_size(v), i = s->i1 < 0 ? n + s->i1 : s->i1;
            v = (i >= 0 && i < n) ? json_array_get(v, (size_t)i) : NULL;
        }
    }
    return v;
}

static bool is_num(const json_t *v)
{
    return json_is_integer(v) || json_is_real(v);
}

static bool values_equal(json_t *a, json_t *b)
{
    if (is_num(a) && is_num(b)) {
        if (json_is_integer(a) && json_is_integer(b))
            return json_integer_value(a) == json_integer_value(b);
        return json_number_value(a) == json_number_value(b);
    }
    if (json_is_string(a) && json_is_string(b)) {
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    }
    return json_equal(a, b);
}

/* a < b per RFC 9535: numbers and strings only. */
static bool values_less(json_t *a, json_t *b)
{
    if (is_num(a) && is_num(b)) {
        if (json_is_integer(a) && json_is_integer(b))
            return json_integer_value(a) < json_integer_value(b);
        return json_number_value(a) < json_number_value(b);
    }
    if (json_is_string(a) && json_is_string(b)) {
        size_t la = json_string_length(a), lb = json_string_length(b);
        int c = memcmp(json_string_value(a), json_string_value(b), la < lb ? la : lb);
        return c < 0 || (c == 0 && la < lb);
    }
    return false;
}

static json_t *operand(const jp_node *o, json_t *cur, json_t *root)
{
    return o->kind == N_LIT ? o->lit : resolve(o, cur, root);
}

static bool test(const jp_node *e, json_t *cur, json_t *root)
{
    switch (e->kind) {
    case N_OR:
        return test(e->a, cur, root) || test(e->b, cur, root);
    case N_AND:
        return test(e->a, cur, root) && test(e->b, cur, root);
    case N_NOT:
        return !test(e->a, cur, root);
    case N_EXISTS:
        return resolve(e->a, cur, root) != NULL;
    case N_CMP: {
        json_t *a = operand(e->a, cur, root), *b = operand(e->b, cur, root);
        bool eq = (!a || !b) ? (a == b) : values_equal(a, b);
        switch (e->op) {
        case OP_EQ:
            return eq;
        case OP_NE:
            return !eq;
        case OP_LT:
            return a && b && values_less(a, b);
        case OP_LE:
            return a && b && (values_less(a, b) || (eq && (is_num(a) || json_is_string(a))));
        case OP_GT:
            return a && b && values_less(b, a);
        case OP_GE:
            return a && b && (values_less(b, a) || (eq && (is_num(a) || json_is_string(a))));
        }
        return false;
    }
    }
    return false;
}

static int eval_seg(const eval_ctx *ec, const jp_node *seg, json_t *node);

/* Applies the selectors of seg to node, continuing with seg->next per match. */
static int apply_selectors(const eval_ctx *ec, const jp_node *seg, json_t *node)
{
    int rc;
    for (const jp_node *s = seg->a; s; s = s->next) {
        switch (s->kind) {
        case N_NAME:
            if (json_is_object(node)) {
                json_t *v = json_object_getn(node, s->str, s->len);
                if (v && (rc = eval_seg(ec, seg->next, v))) return rc;
            }
            break;
        case N_INDEX:
            if (json_is_array(node)) {
                int64_t n = (int64_t)json_array_size(node), i = s->i1 < 0 ? n + s->i1 : s->i1;
                if (i >= 0 && i < n &&
                    (rc = eval_seg(ec, seg->next, json_array_get(node, (size_t)i))))
                    return rc;
            }
            break;
        case N_SLICE:
            if (json_is_array(node)) {
                int64_t n = (int64_t)json_array_size(node);
                int64_t a = s->has1 ? s->i1 : 0, b = s->has2 ? s->i2 : n;
                if (a < 0) a += n;
                if (b < 0) b += n;
                if (a < 0) a = 0;
                if (b > n) b = n;
                for (int64_t i = a; i < b; i++)
                    if ((rc = eval_seg(ec, seg->next, json_array_get(node, (size_t)i)))) return rc;
            }
            break;
        case N_WILD:
        case N_FILTER: {
            if (json_is_array(node)) {
                size_t i;
                json_t *v;
                json_array_foreach(node, i, v)
                {
                    if ((rc = step(ec))) return rc;
                    if (s->kind == N_FILTER && !test(s->a, v, ec->root)) continue;
                    if ((rc = eval_seg(ec, seg->next, v))) return rc;
                }
            } else if (json_is_object(node)) {
                const char *k;
                json_t *v;
                json_object_foreach(node, k, v)
                {
                    if ((rc = step(ec))) return rc;
                    if (s->kind == N_FILTER && !test(s->a, v, ec->root)) continue;
                    if ((rc = eval_seg(ec, seg->next, v))) return rc;
                }
            }
            break;
        }
        }
    }
    return 0;
}

/* Descendant segment: the selectors on node and on every descendant. */
static int descend(const eval_ctx *ec, const jp_node *seg, json_t *node)
{
    int rc = step(ec);
    if (rc) return rc;
    rc = apply_selectors(ec, seg, node);
    if (rc) return rc;
    if (json_is_array(node)) {
        size_t i;
        json_t *v;
        json_array_foreach(node, i,
                           v) if (json_is_array(v) ||
                                  json_is_object(v)) if ((rc = descend(ec, seg, v))) return rc;
    } else if (json_is_object(node)) {
        const char *k;
        json_t *v;
        json_object_foreach(node, k,
                            v) if (json_is_array(v) ||
                                   json_is_object(v)) if ((rc = descend(ec, seg, v))) return rc;
    }
    return 0;
}

static int eval_seg(const eval_ctx *ec, const jp_node *seg, json_t *node)
{
    if (!seg) return ec->fn(ec->ctx, node);
    return seg->desc ? descend(ec, seg, node) : apply_selectors(ec, seg, node);
}

int tw_jsonpath_eval(const tw_jsonpath *p, json_t *root, tw_jsonpath_fn fn, void *ctx)
{
    uint64_t steps = 0;
    eval_ctx ec = {.root = root, .fn = fn, .ctx = ctx, .steps = &steps, .budget = p->budget};
    return eval_seg(&ec, p->first, root);
}

typedef struct collect {
    json_t *arr;
    size_t max;
} collect;

static int collect_fn(void *ctx, json_t *node)
{
    collect *c = ctx;
    if (json_array_size(c->arr) >= c->max) return TW_ETOOBIG;
    return json_array_append(c->arr, node) == 0 ? 0 : TW_ENOMEM;
}

int tw_jsonpath_query(const tw_jsonpath *p, json_t *root, size_t max, json_t **result)
{
    collect c = {.arr = json_array(), .max = max};
    *result = NULL;
    if (!c.arr) return TW_ENOMEM;
    int rc = tw_jsonpath_eval(p, root, collect_fn, &c);
    if (rc) {
        json_decref(c.arr);
        return rc;
    }
    *result = c.arr;
    return 0;
}

/* ---- parallel evaluation over a large root array ------------------------ */

#define PAR_MIN_ITEMS 4096
#define PAR_MAX_THREADS 8

typedef struct par_part {
    const tw_jsonpath *p;
    json_t *root;
    size_t from, to, max;
    uint64_t budget;
    json_t *out;
    int rc;
} par_part;

/* The first segment's selector on root[from..to), then the rest of the
 * path, into part->out. */
static void *par_run(void *arg)
{
    par_part *pt = arg;
    const jp_node *seg = pt->p->first, *sel = seg->a;
    collect c = {.arr = pt->out, .max = pt->max};
    uint64_t steps = 0;
    eval_ctx ec = {
        .root = pt->root, .fn = collect_fn, .ctx = &c, .steps = &steps, .budget = pt->budget};
    for (size_t i = pt->from; i < pt->to && !pt->rc; i++) {
        json_t *v = json_array_get(pt->root, i);
        if ((pt->rc = step(&ec))) break;
        if (sel->kind == N_FILTER && !test(sel->a, v, pt->root)) continue;
        pt->rc = eval_seg(&ec, seg->next, v);
    }
    return NULL;
}

int tw_jsonpath_query_parallel(const tw_jsonpath *p, json_t *root, size_t max, int nthreads,
                               json_t **result)
{
    const jp_node *seg = p->first;
    size_t n = json_array_size(root);
    /* only `$[*]...` and `$[?filter]...` split cleanly by element */
    if (nthreads > PAR_MAX_THREADS) nthreads = PAR_MAX_THREADS;
    if (nthreads < 2 || !json_is_array(root) || n < PAR_MIN_ITEMS || !seg || seg->desc ||
        seg->a->next || (seg->a->kind != N_WILD && seg->a->kind != N_FILTER))
        return tw_jsonpath_query(p, root, max, result);
    *result = NULL;
    par_part parts[PAR_MAX_THREADS];
    pthread_t th[PAR_MAX_THREADS];
    bool started[PAR_MAX_THREADS] = {false};
    int rc = 0;
    for (int t = 0; t < nthreads; t++) {
        parts[t] = (par_part){.p = p,
                              .root = root,
                              .from = n * (size_t)t / (size_t)nthreads,
                              .to = n * (size_t)(t + 1) / (size_t)nthreads,
                              .max = max,
                              .budget = p->budget / (uint64_t)nthreads + 1,
                              .out = json_array()};
        if (!parts[t].out)
            parts[t].rc = TW_ENOMEM;
        else if (t > 0 && pthread_create(&th[t], NULL, par_run, &parts[t]) == 0)
            started[t] = true;
    }
    for (int t = 0; t < nthreads; t++) /* this thread's part, and any not started */
        if (!started[t] && parts[t].out) par_run(&parts[t]);
    for (int t = 0; t < nthreads; t++)
        if (started[t]) pthread_join(th[t], NULL);
    json_t *all = json_array();
    if (!all) rc = TW_ENOMEM;
    for (int t = 0; t < nthreads; t++) {
        if (!rc) rc = parts[t].rc;
        if (!rc && json_array_size(all) + json_array_size(parts[t].out) > max) rc = TW_ETOOBIG;
        if (!rc && json_array_extend(all, parts[t].out) != 0) rc = TW_ENOMEM;
        json_decref(parts[t].out);
    }
    if (rc) {
        json_decref(all);
        return rc;
    }
    *result = all;
    return 0;
}

/* ---- hints for the directory's indexes ---------------------------------- */

static bool uses_abs(const jp_node *e)
{
    if (!e) return false;
    switch (e->kind) {
    case N_OR:
    case N_AND:
    case N_CMP:
        return uses_abs(e->a) || uses_abs(e->b);
    case N_NOT:
    case N_EXISTS:
        return uses_abs(e->a);
    case N_ABS:
        return true;
    default:
        return false;
    }
}

static bool is_member_path(const jp_node *o, const char *member, size_t mlen)
{
    return o->kind == N_REL && o->a && !o->a->next && o->a->kind == N_NAME && o->a->len == mlen &&
           memcmp(o->a->str, member, mlen) == 0;
}

static const char *find_eq(const jp_node *e, const char *member, size_t mlen)
{
    if (e->kind == N_AND) {
        const char *s = find_eq(e->a, member, mlen);
        return s ? s : find_eq(e->b, member, mlen);
    }
    if (e->kind != N_CMP || e->op != OP_EQ) return NULL;
    const jp_node *path = e->a, *lit = e->b;
    if (path->kind == N_LIT) {
        path = e->b;
        lit = e->a;
    }
    if (lit->kind != N_LIT || !json_is_string(lit->lit) || !is_member_path(path, member, mlen))
        return NULL;
    return json_string_value(lit->lit);
}

const char *tw_jsonpath_eq_hint(const tw_jsonpath *p, const char *member)
{
    const jp_node *seg = p->first;
    if (!seg || seg->desc || !seg->a || seg->a->next || seg->a->kind != N_FILTER) return NULL;
    if (uses_abs(seg->a->a)) return NULL;
    return find_eq(seg->a->a, member, strlen(member));
}
