/*
 * msg.c - parsing, validation, building and one-time encoding of envelopes.
 *
 * A tw_msg wraps a Jansson object plus cached pointers to the fields the
 * router reads on every message (type, operation, thingID, name, ...), so
 * the hot path never looks a key up twice. Untrusted bytes are checked in a
 * fixed order that gives the most useful error first: size, UTF-8, JSON
 * syntax (with Jansson's own depth cap), our nesting limit, then the
 * envelope rules of DESIGN.md section 2.
 *
 * Encoding happens once: the first tw_msg_encode() dumps the object into a
 * buffer published with a release store; concurrent first callers race
 * benignly on a mutex and every later call is one acquire load. After that
 * the message is frozen (setters refuse), which is what makes sharing the
 * buffer across a fan-out safe.
 *
 * Lazy envelopes. A message parsed from bytes usually builds no tree at all:
 * json_scan.c validates the text and splits the top-level object into raw
 * members, the header strings are copied out once (into the same allocation
 * as the message), and the payload members ("value", "input", "output", ...)
 * stay raw bytes. tw_msg_get() decodes one member on first use (a
 * compare-and-swap publishes it, so concurrent readers are safe);
 * tw_msg_set() on a lazy message hides the raw member and keeps the new
 * value in a small `extra` object, or, for tw_msg_set_str() (the router
 * stamps senderID and the twin's thingID on every message), in a list of
 * plain strings; tw_msg_encode() writes the
 * raw members that are still visible followed by the set ones, so an event
 * is forwarded with one memcpy of its value. tw_msg_json() and tw_msg_copy()
 * build the full tree on demand (once, under the lock), after which the
 * message behaves as a tree-backed one. tw_msg_new() builds messages the
 * same way (its fields as plain strings, no tree), so a response or an
 * action request costs one allocation, not a Jansson object. Text outside
 * the scanner's narrow form (json_scan.h) takes the tree path from the
 * start, with the same results and errors as before.
 *
 * Each lazy message's block ends with a small arena: the plain strings set
 * on it later and its encoding are carved from there when they fit (else
 * allocated apart), so an event passing through costs one allocation
 * instead of four; and that allocation is usually a block reused from a
 * per-thread cache (see "Message blocks" below).
 */
#include "msg.h"

#include "json_enc.h"
#include "json_scan.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Members of a lazy envelope, at most this many (more: the tree path). */
#define LZ_MAX_MEMBERS 24

/* One top-level member of a lazily parsed envelope. */
typedef struct lz_member {
    const char *key;     /* NUL-terminated, in the message's allocation */
    const char *val;     /* raw JSON text inside raw (not terminated) */
    const char *str;     /* a string value without escapes, decoded; else NULL */
    json_t *_Atomic dec; /* decoded on first tw_msg_get */
    uint32_t val_len;    /* (small fields: a message's block stays small) */
    uint16_t key_len;
    uint8_t type; /* json_type */
    bool gone;    /* replaced by tw_msg_set or deleted */
} lz_member;

/* A string field set on a lazy message (key and value in one block). */
typedef struct lz_str {
    struct lz_str *next;
    json_t *_Atomic dec; /* as a Jansson string, made on first tw_msg_get */
    bool gone;           /* set again, or deleted */
    bool in_arena;       /* in the message's own block: not freed apart */
    const char *val;
    size_t val_len;
    uint32_t key_len;
    char key[];
} lz_str;

struct tw_msg {
    _Atomic int refs;
    tw_msg_type type;
    tw_op op;
    tw_status status;
    bool lazy;           /* members/sx/extra hold the message until a tree is built */
    bool enc_in_arena;   /* enc was carved from the arena: not freed apart */
    json_t *_Atomic obj; /* the tree; for a lazy message only once built */
    /* lazy envelopes (raw != NULL) */
    char *raw; /* a copy of the text: the members point into it */
    lz_member *mem;
    size_t nmem;
    uint32_t key_bits; /* bit (first byte of the key & 31) of every member */
    json_t *extra;     /* fields set after parsing, before a tree was built */
    lz_str *sx;        /* string fields set likewise (oldest first) */
    lz_str **sx_tail;
    const char *thing, *name, *correlation, *sender, *id;
    pthread_mutex_t enc_lock;
    char *_Atomic enc;
    size_t enc_len;
    /* Room at the end of the message's own block for what is added to it
     * later: the strings the router stamps (senderID, thingID) and the
     * encoding. An event passing through would otherwise cost three more
     * allocations and frees. Carved from the front, never given back; what
     * does not fit is allocated as before. */
    char *arena;
    size_t arena_left;
    bool pooled; /* the block is BLK_BYTES long and goes back to a cache */
};

/* The arena of a parsed message: two stamped strings with short ids, and
 * the encoding when the envelope is small (the encoding is about as long,
 * plus the stamps). */
#define ARENA_STAMPS 192
#define ARENA_ENC_EXTRA 64
#define ARENA_ENC_MAX 1024
/* The arena of a built message (tw_msg_new: its six fields, a
 * correlationID, a status, and the encoding). */
#define ARENA_NEW 768

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/*
 * Message blocks. Every event is one block, allocated on the thread that
 * parses it and freed after it is written, in batches: a poller parses a
 * whole received chunk (up to some 400 events) before the corked writes
 * free them. malloc's own per-thread cache holds only 7 blocks of a size,
 * so most took its slow paths (some 700 instructions for the pair, per
 * event). Blocks of up to BLK_BYTES are therefore all made BLK_BYTES long
 * (the room left over is arena) and up to BLK_KEEP free ones (a chunk's
 * worth; at most 640 KiB) are kept per thread, whichever thread allocated
 * them. A thread's cache is freed when it exits (a pthread key's
 * destructor); the main thread's stays reachable from its TLS until exit.
 * Under AddressSanitizer a cached block is poisoned, so a use after free is
 * still caught.
 */
#define BLK_BYTES 1280
#define BLK_KEEP 512

#if defined(__SANITIZE_ADDRESS__)
#define TW_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TW_ASAN 1
#endif
#endif
#ifdef TW_ASAN
#include <sanitizer/asan_interface.h>
#define BLK_POISON(p) ASAN_POISON_MEMORY_REGION(p, BLK_BYTES)
#define BLK_UNPOISON(p) ASAN_UNPOISON_MEMORY_REGION(p, BLK_BYTES)
/* the arena's untaken room, so that an overrun of what was taken shows */
#define ARENA_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define ARENA_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define BLK_POISON(p) ((void)(p))
#define BLK_UNPOISON(p) ((void)(p))
#define ARENA_POISON(p, n) ((void)(p), (void)(n))
#define ARENA_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

typedef struct blk_cache {
    int n;
    bool registered; /* the key's destructor will free it at thread exit */
    bool gone;       /* that destructor ran: free blocks at once */
    void *v[BLK_KEEP];
} blk_cache;

static __thread blk_cache tl_blk;
static pthread_key_t blk_key;
static pthread_once_t blk_once = PTHREAD_ONCE_INIT;
static bool blk_key_ok;

static void blk_cache_free(void *arg)
{
    blk_cache *c = arg;
    while (c->n > 0) {
        void *p = c->v[--c->n];
        BLK_UNPOISON(p);
        free(p);
    }
    c->gone = true;
}

static void blk_key_init(void)
{
    blk_key_ok = pthread_key_create(&blk_key, blk_cache_free) == 0;
}

/* A block of n bytes; *pooled when it is a BLK_BYTES one (n <= BLK_BYTES). */
static void *blk_alloc(size_t n, bool *pooled)
{
    *pooled = n <= BLK_BYTES;
    if (!*pooled) return malloc(n);
    blk_cache *c = &tl_blk;
    if (c->n > 0) {
        void *p = c->v[--c->n];
        BLK_UNPOISON(p);
        return p;
    }
    return malloc(BLK_BYTES);
}

static void blk_free(void *p, bool pooled)
{
    blk_cache *c = &tl_blk;
    if (pooled && c->n < BLK_KEEP && !c->gone) {
        if (!c->registered) {
            pthread_once(&blk_once, blk_key_init);
            if (!blk_key_ok || pthread_setspecific(blk_key, c) != 0) {
                free(p);
                return;
            }
            c->registered = true;
        }
        BLK_POISON(p);
        c->v[c->n++] = p;
        return;
    }
    free(p);
}

/* n bytes from m's arena (8-aligned), or NULL when they do not fit. */
static void *arena_take(tw_msg *m, size_t n)
{
    n = align8(n);
    if (n > m->arena_left) return NULL;
    void *p = m->arena;
    m->arena += n;
    m->arena_left -= n;
    ARENA_UNPOISON(p, n);
    return p;
}

static const char *const op_names[TW_OP__COUNT] = {
    "",
    "invokeaction",
    "cancelaction",
    "queryaction",
    "queryallactions",
    "readproperty",
    "readallproperties",
    "readmultipleproperties",
    "writeproperty",
    "observeproperty",
    "unobserveproperty",
    "observeallproperties",
    "unobserveallproperties",
    "subscribeevent",
    "unsubscribeevent",
    "subscribeallevents",
    "unsubscribeallevents",
    "login",
    "refresh",
    "logout",
    "ping",
    "updatething",
    "deletething",
    "readevent",
    "readallevents",
};

const char *tw_op_name(tw_op op)
{
    return (unsigned)op < TW_OP__COUNT ? op_names[op] : "";
}

/* The operations by first letter (a-z), for tw_op_parse. */
static const signed char op_by_letter[26][7] = {
    ['c' - 'a'] = {TW_OP_CANCELACTION},
    ['d' - 'a'] = {TW_OP_DELETETHING},
    ['i' - 'a'] = {TW_OP_INVOKEACTION},
    ['l' - 'a'] = {TW_OP_LOGIN, TW_OP_LOGOUT},
    ['o' - 'a'] = {TW_OP_OBSERVEPROPERTY, TW_OP_OBSERVEALLPROPERTIES},
    ['p' - 'a'] = {TW_OP_PING},
    ['q' - 'a'] = {TW_OP_QUERYACTION, TW_OP_QUERYALLACTIONS},
    ['r' - 'a'] = {TW_OP_READPROPERTY, TW_OP_READALLPROPERTIES, TW_OP_READMULTIPLEPROPERTIES,
                   TW_OP_REFRESH, TW_OP_READEVENT, TW_OP_READALLEVENTS},
    ['s' - 'a'] = {TW_OP_SUBSCRIBEEVENT, TW_OP_SUBSCRIBEALLEVENTS},
    ['u' - 'a'] = {TW_OP_UNOBSERVEPROPERTY, TW_OP_UNOBSERVEALLPROPERTIES, TW_OP_UNSUBSCRIBEEVENT,
                   TW_OP_UNSUBSCRIBEALLEVENTS, TW_OP_UPDATETHING},
    ['w' - 'a'] = {TW_OP_WRITEPROPERTY},
};

/* On every envelope: the first letter picks the few candidates (no
 * operation has more than six sharing one), strcmp confirms. */
tw_op tw_op_parse(const char *name)
{
    if (!name || name[0] < 'a' || name[0] > 'z') return TW_OP_NONE;
    const signed char *c = op_by_letter[name[0] - 'a'];
    for (int i = 0; i < 7 && c[i]; i++)
        if (strcmp(op_names[c[i]], name) == 0) return (tw_op)c[i];
    return TW_OP_NONE;
}

static const char *const type_names[] = {"", "request", "response", "notification"};

const char *tw_msg_type_name(tw_msg_type t)
{
    return (unsigned)t <= TW_TYPE_NOTIFICATION ? type_names[t] : "";
}

/* On every envelope: one byte picks the candidate, one strcmp confirms it. */
static tw_msg_type type_parse(const char *s)
{
    bool r = s[0] == 'r' && s[1]; /* (then s[2] exists) */
    tw_msg_type t = s[0] == 'n'        ? TW_TYPE_NOTIFICATION
                    : r && s[2] == 'q' ? TW_TYPE_REQUEST
                    : r && s[2] == 's' ? TW_TYPE_RESPONSE
                                       : TW_TYPE_NONE;
    return t != TW_TYPE_NONE && strcmp(type_names[t], s) == 0 ? t : TW_TYPE_NONE;
}

/* ---- problems ---------------------------------------------------------- */

json_t *tw_problem_new(int status, const char *slug, const char *title, const char *detail,
                       const char *field)
{
    char type[128];
    snprintf(type, sizeof type, "urn:twind:problem:%s", slug ? slug : "error");
    json_t *p = json_object();
    json_object_set_new(p, "type", json_string(type));
    json_object_set_new(p, "title", json_string(title ? title : "error"));
    json_object_set_new(p, "status", json_integer(status));
    if (detail) json_object_set_new(p, "detail", json_string(detail));
    if (field) json_object_set_new(p, "field", json_string(field));
    return p;
}

static const char *slug_of(int code)
{
    switch (code) {
    case TW_EINVAL:
        return "invalid";
    case TW_ENOTFOUND:
        return "not-found";
    case TW_EEXIST:
        return "exists";
    case TW_EPERM:
        return "forbidden";
    case TW_EAUTH:
        return "unauthenticated";
    case TW_ETOOBIG:
        return "too-large";
    case TW_ECONFLICT:
        return "conflict";
    case TW_EOFFLINE:
        return "not-connected";
    case TW_ERATE:
        return "rate-limited";
    case TW_ETIMEDOUT:
        return "timeout";
    case TW_EEXPIRED:
        return "expired";
    case TW_EUNSUPPORTED:
        return "unsupported";
    case TW_EFULL:
        return "queue-full";
    case TW_EMEDIA:
        return "unsupported-media-type";
    default:
        return "internal";
    }
}

json_t *tw_problem_from_error(int code, const char *detail, const char *field)
{
    return tw_problem_new(tw_error_http_status(code), slug_of(code), tw_strerror(code), detail,
                          field);
}

static int reject(json_t **problem, int code, const char *detail, const char *field)
{
    if (problem) *problem = tw_problem_from_error(code, detail, field);
    return code;
}

/* ---- UTF-8 ------------------------------------------------------------- */

bool tw_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned char c = *p;
        if (c < 0x80) {
            p++;
            /* runs of ASCII, eight bytes at a time */
            while (end - p >= 8) {
                uint64_t w;
                memcpy(&w, p, 8);
                if (w & 0x8080808080808080ULL) break;
                p += 8;
            }
            continue;
        }
        int n;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (end - p <= n) return false;
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        p += n + 1;
    }
    return true;
}

size_t tw_utf8_put(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Depth of nested containers, counted on the raw bytes so a hostile body is
 * rejected before Jansson builds anything. Strings are skipped. */
int tw_json_max_depth(const char *buf, size_t len)
{
    int depth = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max) max = depth;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return max;
}

/* ---- validation -------------------------------------------------------- */

/* Fields whose type the envelope fixes; the FI_ indices name them. */
#define TF(n, t)                                                                                   \
    {                                                                                              \
        n, sizeof n - 1, t                                                                         \
    }
static const struct {
    const char *name;
    size_t len;
    json_type type;
} typed_fields[] = {
    TF("type", JSON_STRING),     TF("operation", JSON_STRING),     TF("thingID", JSON_STRING),
    TF("name", JSON_STRING),     TF("correlationID", JSON_STRING), TF("messageID", JSON_STRING),
    TF("senderID", JSON_STRING), TF("created", JSON_STRING),       TF("timestamp", JSON_STRING),
    TF("expires", JSON_STRING),  TF("status", JSON_STRING),        TF("error", JSON_OBJECT),
};
#undef TF
enum {
    FI_TYPE,
    FI_OPERATION,
    FI_THING,
    FI_NAME,
    FI_CORRELATION,
    FI_MESSAGE,
    FI_SENDER,
    FI_CREATED,
    FI_TIMESTAMP,
    FI_EXPIRES,
    FI_STATUS,
    FI_ERROR,
    FI__COUNT
};

/* What validation looks at, read from a tree or from scanned members. */
typedef struct env_view {
    int ftype[FI__COUNT];        /* json_type, or -1 when absent */
    const char *fstr[FI__COUNT]; /* the value of a string field */
    size_t flen[FI__COUNT];      /* its length */
    int input_type;              /* json_type of "input", or -1 */
} env_view;

/* typed_index's answer for "input" */
#define FI_INPUT FI__COUNT

/* The FI_ index of a member's key, FI_INPUT, or -1. Called for every member
 * of every message: the length and one byte pick the one candidate, and a
 * comparison with a literal of known length (inlined, no call) confirms it. */
static int typed_index(const char *key, size_t len)
{
#define IS(lit) (memcmp(key, lit, sizeof lit - 1) == 0)
    switch (len) {
    case 4:
        return key[0] == 't' ? (IS("type") ? FI_TYPE : -1)
                             : (key[0] == 'n' && IS("name") ? FI_NAME : -1);
    case 5:
        return IS("input") ? FI_INPUT : IS("error") ? FI_ERROR : -1;
    case 6:
        return IS("status") ? FI_STATUS : -1;
    case 7:
        return key[0] == 't'   ? (IS("thingID") ? FI_THING : -1)
               : key[0] == 'c' ? (IS("created") ? FI_CREATED : -1)
                               : (key[0] == 'e' && IS("expires") ? FI_EXPIRES : -1);
    case 8:
        return IS("senderID") ? FI_SENDER : -1;
    case 9:
        return key[0] == 'o'   ? (IS("operation") ? FI_OPERATION : -1)
               : key[0] == 'm' ? (IS("messageID") ? FI_MESSAGE : -1)
                               : (key[0] == 't' && IS("timestamp") ? FI_TIMESTAMP : -1);
    case 13:
        return IS("correlationID") ? FI_CORRELATION : -1;
    default:
        return -1;
    }
#undef IS
}

/* Which request operations address a Thing, and which an affordance. */
static bool op_needs_thing(tw_op op)
{
    switch (op) {
    case TW_OP_LOGIN:
    case TW_OP_REFRESH:
    case TW_OP_LOGOUT:
    case TW_OP_PING:
    case TW_OP_UPDATETHING:
    case TW_OP_QUERYACTION:
    case TW_OP_CANCELACTION:
    case TW_OP_SUBSCRIBEALLEVENTS:
    case TW_OP_UNSUBSCRIBEALLEVENTS:
    case TW_OP_OBSERVEALLPROPERTIES:
    case TW_OP_UNOBSERVEALLPROPERTIES:
        return false;
    default:
        return true;
    }
}

static bool op_needs_name(tw_op op)
{
    switch (op) {
    case TW_OP_INVOKEACTION:
    case TW_OP_READPROPERTY:
    case TW_OP_WRITEPROPERTY:
    case TW_OP_READEVENT:
        return true;
    default:
        return false;
    }
}

static const char *str_field(json_t *obj, const char *k)
{
    json_t *v = json_object_get(obj, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Checks the envelope rules; on success *type_out and *op_out are its
 * parsed type and operation (the caller caches them: no second parse). */
static int validate_view(const env_view *v, tw_msg_type *type_out, tw_op *op_out, json_t **problem)
{
    char detail[160];
    for (int i = 0; i < FI__COUNT; i++) {
        if (v->ftype[i] >= 0 && v->ftype[i] != (int)typed_fields[i].type) {
            snprintf(detail, sizeof detail, "'%s' must be a %s", typed_fields[i].name,
                     typed_fields[i].type == JSON_STRING ? "string" : "object");
            return reject(problem, TW_EINVAL, detail, typed_fields[i].name);
        }
    }
    const char *ts = v->fstr[FI_TYPE];
    if (!ts) return reject(problem, TW_EINVAL, "'type' is required", "type");
    tw_msg_type type = type_parse(ts);
    if (type == TW_TYPE_NONE) {
        snprintf(detail, sizeof detail, "unknown type '%.60s'", ts);
        return reject(problem, TW_EINVAL, detail, "type");
    }
    const char *os = v->fstr[FI_OPERATION];
    if (!os) return reject(problem, TW_EINVAL, "'operation' is required", "operation");
    tw_op op = tw_op_parse(os);
    if (op == TW_OP_NONE) {
        snprintf(detail, sizeof detail, "unknown operation '%.60s'", os);
        return reject(problem, TW_EINVAL, detail, "operation");
    }
    const char *thing = v->fstr[FI_THING];
    if (thing && (v->flen[FI_THING] == 0 || v->flen[FI_THING] >= TW_THING_ID_MAX))
        return reject(problem, TW_EINVAL, "'thingID' must have 1 to 255 characters", "thingID");
    const char *name = v->fstr[FI_NAME];
    if (name && v->flen[FI_NAME] > 255)
        return reject(problem, TW_EINVAL, "'name' is longer than 255 characters", "name");
    const char *st = v->fstr[FI_STATUS];
    if (st && tw_status_parse(st) == TW_STATUS_NONE) {
        snprintf(detail, sizeof detail, "unknown status '%.60s'", st);
        return reject(problem, TW_EINVAL, detail, "status");
    }
    const char *exp = v->fstr[FI_EXPIRES];
    int64_t ms;
    if (exp && tw_time_parse(exp, &ms) != 0)
        return reject(problem, TW_EINVAL, "'expires' is not an RFC 3339 time", "expires");
    const char *cid = v->fstr[FI_CORRELATION];
    if (cid && v->flen[FI_CORRELATION] >= TW_ID_MAX * 2)
        return reject(problem, TW_EINVAL, "'correlationID' is longer than 127 characters",
                      "correlationID");

    switch (type) {
    case TW_TYPE_REQUEST:
        if (op_needs_thing(op) && !thing) {
            snprintf(detail, sizeof detail, "'%s' needs 'thingID'", os);
            return reject(problem, TW_EINVAL, detail, "thingID");
        }
        if (op_needs_name(op) && !name) {
            snprintf(detail, sizeof detail, "'%s' needs 'name'", os);
            return reject(problem, TW_EINVAL, detail, "name");
        }
        if ((op == TW_OP_WRITEPROPERTY || op == TW_OP_UPDATETHING) && v->input_type < 0) {
            snprintf(detail, sizeof detail, "'%s' needs 'input'", os);
            return reject(problem, TW_EINVAL, detail, "input");
        }
        if (op == TW_OP_UPDATETHING && v->input_type != JSON_OBJECT)
            return reject(problem, TW_EINVAL, "'input' of updatething must be a TD object",
                          "input");
        if ((op == TW_OP_QUERYACTION || op == TW_OP_CANCELACTION) && v->input_type != JSON_STRING &&
            !cid)
            return reject(problem, TW_EINVAL, "needs the action id as 'input' (or 'correlationID')",
                          "input");
        break;
    case TW_TYPE_RESPONSE:
        if (!cid)
            return reject(problem, TW_EINVAL, "a response needs 'correlationID'", "correlationID");
        break;
    case TW_TYPE_NOTIFICATION:
        if (!thing) return reject(problem, TW_EINVAL, "a notification needs 'thingID'", "thingID");
        if (op != TW_OP_INVOKEACTION && !name)
            return reject(problem, TW_EINVAL, "a notification needs 'name'", "name");
        break;
    default:
        break;
    }
    *type_out = type;
    *op_out = op;
    return 0;
}

int tw_msg_validate(json_t *obj, json_t **problem)
{
    if (!json_is_object(obj))
        return reject(problem, TW_EINVAL, "the message is not a JSON object", "");
    env_view v;
    for (int i = 0; i < FI__COUNT; i++) {
        json_t *f = json_object_get(obj, typed_fields[i].name);
        v.ftype[i] = f ? (int)json_typeof(f) : -1;
        v.fstr[i] = json_is_string(f) ? json_string_value(f) : NULL;
        /* (a string with a NUL inside counts up to it, as strlen did) */
        v.flen[i] = v.fstr[i] ? strlen(v.fstr[i]) : 0;
    }
    json_t *in = json_object_get(obj, "input");
    v.input_type = in ? (int)json_typeof(in) : -1;
    tw_msg_type type;
    tw_op op;
    return validate_view(&v, &type, &op, problem);
}

/* ---- lazy members ------------------------------------------------------ */

static bool plain_string(const char *s, size_t n);

static lz_member *lz_find(const tw_msg *m, const char *key)
{
    /* most lookups are of fields the envelope lacks (expires, senderID):
     * one bit test says so without a walk */
    if (!(m->key_bits & (1u << (key[0] & 31)))) return NULL;
    for (size_t i = 0; i < m->nmem; i++)
        if (m->mem[i].key[0] == key[0] && !m->mem[i].gone && strcmp(m->mem[i].key, key) == 0)
            return &m->mem[i];
    return NULL;
}

static lz_str *sx_find(const tw_msg *m, const char *key)
{
    for (lz_str *x = m->sx; x; x = x->next)
        if (x->key[0] == key[0] && !x->gone && strcmp(x->key, key) == 0) return x;
    return NULL;
}

/* The string field as a Jansson value, made once. */
static json_t *sx_value(lz_str *x)
{
    json_t *d = atomic_load_explicit(&x->dec, memory_order_acquire);
    if (d) return d;
    if (!(d = json_stringn_nocheck(x->val, x->val_len))) return NULL;
    json_t *expect = NULL;
    if (!atomic_compare_exchange_strong_explicit(&x->dec, &expect, d, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        json_decref(d);
        return expect;
    }
    return d;
}

static void lz_forget(tw_msg *m, const char *field);

/* Sets a plain string field on a lazy message (no tree built yet). */
static int sx_add(tw_msg *m, const char *field, size_t kl, const char *value, size_t vl,
                  const char **stored)
{
    size_t size = sizeof(lz_str) + kl + 1 + vl + 1;
    lz_str *x = arena_take(m, size);
    bool in_arena = x != NULL;
    if (!x && !(x = malloc(size))) return TW_ENOMEM;
    /* Copy first: field or value may be the very value lz_forget frees (a
     * string set with tw_msg_set, read back and set again). */
    memcpy(x->key, field, kl + 1);
    x->key_len = (uint32_t)kl;
    x->val = x->key + kl + 1;
    memcpy((char *)x->val, value, vl + 1);
    x->val_len = vl;
    lz_forget(m, x->key);
    x->gone = false;
    x->in_arena = in_arena;
    x->next = NULL;
    atomic_init(&x->dec, NULL);
    if (!m->sx) m->sx_tail = &m->sx;
    *m->sx_tail = x;
    m->sx_tail = &x->next;
    if (stored) *stored = x->val;
    return 0;
}

/* Hides every earlier value of field in a lazy message. */
static void lz_forget(tw_msg *m, const char *field)
{
    lz_member *mb = lz_find(m, field);
    if (mb) mb->gone = true; /* its raw text no longer says what the message holds */
    lz_str *x = sx_find(m, field);
    if (x) x->gone = true;
    if (m->extra) json_object_del(m->extra, field);
}

/* The member decoded, once; concurrent first callers race on a CAS. */
static json_t *lz_value(lz_member *mb)
{
    json_t *d = atomic_load_explicit(&mb->dec, memory_order_acquire);
    if (d) return d;
    switch (mb->type) {
    case JSON_STRING:
        d = mb->str ? json_string_nocheck(mb->str) : NULL;
        break;
    case JSON_INTEGER: {
        /* json_scan.c let through an optional '-' and at most 18 digits:
         * no overflow (the raw text is not terminated, so no strtoll) */
        const char *p = mb->val, *end = mb->val + mb->val_len;
        bool neg = p < end && *p == '-';
        json_int_t x = 0;
        for (p += neg; p < end; p++)
            x = x * 10 + (*p - '0');
        d = json_integer(neg ? -x : x);
    } break;
    case JSON_TRUE:
        d = json_true();
        break;
    case JSON_FALSE:
        d = json_false();
        break;
    case JSON_NULL:
        d = json_null();
        break;
    default:
        break;
    }
    if (!d) d = json_loadb(mb->val, mb->val_len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    if (!d) return NULL;
    json_t *expect = NULL;
    if (!atomic_compare_exchange_strong_explicit(&mb->dec, &expect, d, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        json_decref(d);
        return expect;
    }
    return d;
}

/* A string field wherever the message keeps it. */
static const char *get_str(const tw_msg *m, const char *k)
{
    json_t *o = atomic_load_explicit(&m->obj, memory_order_acquire);
    if (o || !m->lazy) return str_field(o, k);
    json_t *x = m->extra ? json_object_get(m->extra, k) : NULL;
    if (x) return json_is_string(x) ? json_string_value(x) : NULL;
    lz_str *sx = sx_find(m, k);
    if (sx) return sx->val;
    lz_member *mb = lz_find(m, k);
    if (!mb || mb->type != JSON_STRING) return NULL;
    return mb->str ? mb->str : json_string_value(lz_value(mb));
}

/* A new tree of a lazy message's fields (no lock: the caller holds
 * enc_lock). NULL on allocation failure. */
static json_t *build_tree(tw_msg *m)
{
    json_t *o = json_object();
    for (size_t i = 0; i < m->nmem && o; i++) {
        if (m->mem[i].gone) continue;
        json_t *v = lz_value(&m->mem[i]);
        if (!v || json_object_set(o, m->mem[i].key, v)) {
            json_decref(o);
            o = NULL;
        }
    }
    for (lz_str *x = m->sx; x && o; x = x->next) {
        if (x->gone) continue;
        json_t *v = sx_value(x);
        if (!v || json_object_set(o, x->key, v)) {
            json_decref(o);
            o = NULL;
        }
    }
    if (o && m->extra && json_object_update(o, m->extra)) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

/* The full tree of a lazy message, built once. */
static json_t *materialize(const tw_msg *mc)
{
    tw_msg *m = (tw_msg *)mc; /* building the tree is a cache, not a change */
    json_t *o = atomic_load_explicit(&m->obj, memory_order_acquire);
    if (o || !m->lazy) return o;
    pthread_mutex_lock(&m->enc_lock);
    o = atomic_load_explicit(&m->obj, memory_order_relaxed);
    if (!o && (o = build_tree(m)) != NULL) atomic_store_explicit(&m->obj, o, memory_order_release);
    pthread_mutex_unlock(&m->enc_lock);
    return o;
}

static json_type raw_type(const char *v, size_t n)
{
    switch (v[0]) {
    case '"':
        return JSON_STRING;
    case '{':
        return JSON_OBJECT;
    case '[':
        return JSON_ARRAY;
    case 't':
        return JSON_TRUE;
    case 'f':
        return JSON_FALSE;
    case 'n':
        return JSON_NULL;
    default:
        /* a number (json_scan.c checked it): real if it has a fraction or
         * an exponent */
        for (size_t i = 0; i < n; i++)
            if (v[i] == '.' || v[i] == 'e' || v[i] == 'E') return JSON_REAL;
        return JSON_INTEGER;
    }
}

static void cache_from_view(tw_msg *m, const env_view *v, tw_msg_type type, tw_op op);

/* Builds a lazy message from the text: returns 1 with *out set, 0 when the
 * text needs the tree path, or a TW_E* code (with *problem) when the
 * envelope is invalid. */
static int parse_lazy(const char *buf, size_t len, int max_depth, tw_msg **out, json_t **problem)
{
    tw_jscan_member sm[LZ_MAX_MEMBERS];
    size_t n;
    if (len > UINT32_MAX || !tw_jscan_object(buf, len, max_depth, sm, LZ_MAX_MEMBERS, &n)) return 0;
    size_t str_len = 0;
    for (size_t i = 0; i < n; i++) {
        if (sm[i].key_len > UINT16_MAX) return 0; /* (lz_member's field) */
        bool is_str = sm[i].val[0] == '"';
        if (is_str && sm[i].val_escaped) {
            int fi = typed_index(sm[i].key, sm[i].key_len);
            if (fi >= 0 && fi < FI__COUNT)
                return 0; /* a header string with escapes: let Jansson decode it */
        }
        if (is_str && !sm[i].val_escaped) str_len += sm[i].val_len - 1;
    }
    /* the text is copied whole (one memcpy, not three per member): keys and
     * values point into the copy, each key ended in place by a NUL over its
     * closing quote (no value includes that byte) */
    size_t raw_len = len;
    /* one allocation: the message, its members, the values, the strings,
     * the arena */
    size_t used = align8(sizeof(tw_msg) + n * sizeof(lz_member) + raw_len + str_len);
    size_t arena = ARENA_STAMPS + (len <= ARENA_ENC_MAX ? align8(len) + ARENA_ENC_EXTRA : 0);
    /* (a cached block when the stamps fit: the encoding then does too, or
     * is allocated apart) */
    if (used + arena > BLK_BYTES && used + ARENA_STAMPS <= BLK_BYTES) arena = BLK_BYTES - used;
    bool pooled;
    char *blk = blk_alloc(used + arena, &pooled);
    if (!blk) return reject(problem, TW_ENOMEM, NULL, NULL);
    tw_msg *m = (tw_msg *)(void *)blk;
    memset(m, 0, sizeof *m);
    m->pooled = pooled;
    m->arena = blk + used;
    m->arena_left = pooled ? BLK_BYTES - used : arena;
    ARENA_POISON(m->arena, m->arena_left);
    m->lazy = true;
    m->mem = (lz_member *)(void *)(blk + sizeof *m);
    m->nmem = n;
    m->raw = (char *)(m->mem + n);
    memcpy(m->raw, buf, len);
    char *sp = m->raw + raw_len;
    env_view v;
    for (int i = 0; i < FI__COUNT; i++) {
        v.ftype[i] = -1;
        v.fstr[i] = NULL;
        v.flen[i] = 0;
    }
    v.input_type = -1;
    for (size_t i = 0; i < n; i++) {
        lz_member *mb = &m->mem[i];
        memset(mb, 0, sizeof *mb);
        char *key = m->raw + (sm[i].key - buf);
        key[sm[i].key_len] = '\0';
        mb->key = key;
        mb->key_len = (uint16_t)sm[i].key_len;
        m->key_bits |= 1u << (key[0] & 31);
        mb->val = m->raw + (sm[i].val - buf);
        mb->val_len = (uint32_t)sm[i].val_len;
        mb->type = (uint8_t)raw_type(mb->val, mb->val_len);
        size_t sl = 0;
        if (mb->type == JSON_STRING && !sm[i].val_escaped) {
            sl = mb->val_len - 2;
            memcpy(sp, mb->val + 1, sl);
            sp[sl] = '\0';
            mb->str = sp;
            sp += sl + 1;
        }
        int fi = typed_index(mb->key, sm[i].key_len);
        if (fi == FI_INPUT) {
            v.input_type = (int)mb->type;
        } else if (fi >= 0) {
            v.ftype[fi] = (int)mb->type;
            v.fstr[fi] = mb->str;
            v.flen[fi] = sl;
        }
    }
    tw_msg_type type;
    tw_op op;
    int rc = validate_view(&v, &type, &op, problem);
    if (rc) {
        blk_free(blk, pooled);
        return rc;
    }
    atomic_init(&m->refs, 1);
    atomic_init(&m->obj, NULL);
    pthread_mutex_init(&m->enc_lock, NULL);
    atomic_init(&m->enc, NULL);
    cache_from_view(m, &v, type, op);
    *out = m;
    return 1;
}

/* True when s can go between quotes as it is. */
static bool plain_string(const char *s, size_t n)
{
    return tw_jscan_plain_len(s, n) == n;
}

/* The encoding of a lazy message: its visible raw members, then the ones
 * set since it was parsed (plain strings written directly, anything else
 * through the encoder). In the message's arena when it fits (*in_arena). */
static char *encode_lazy(tw_msg *m, size_t *len, bool *in_arena)
{
    size_t nx = m->extra ? json_object_size(m->extra) : 0;
    char *pieces[LZ_MAX_MEMBERS]; /* encoded extras that were not plain */
    size_t plen[LZ_MAX_MEMBERS];
    if (nx > LZ_MAX_MEMBERS) return NULL;
    for (size_t j = 0; j < nx; j++) { /* (only as many as used: on every event) */
        pieces[j] = NULL;
        plen[j] = 0;
    }
    size_t cap = 3, i = 0;
    const char *k;
    json_t *v;
    bool failed = false;
    if (nx) {
        json_object_foreach(m->extra, k, v)
        {
            size_t kl = strlen(k);
            if (!plain_string(k, kl)) failed = true;
            cap += kl + 4;
            if (json_is_string(v) && plain_string(json_string_value(v), json_string_length(v))) {
                cap += json_string_length(v) + 2;
            } else if ((pieces[i] = tw_json_encode(v, &plen[i])) != NULL) {
                cap += plen[i];
            } else {
                failed = true;
            }
            i++;
        }
    }
    for (size_t j = 0; j < m->nmem; j++)
        if (!m->mem[j].gone) cap += m->mem[j].key_len + 4 + m->mem[j].val_len;
    for (const lz_str *x = m->sx; x; x = x->next)
        if (!x->gone) cap += x->key_len + 6 + x->val_len;
    char *b = NULL;
    *in_arena = false;
    if (!failed) {
        b = arena_take(m, cap);
        *in_arena = b != NULL;
        if (!b) b = malloc(cap);
    }
    if (b) {
        size_t o = 0;
        b[o++] = '{';
        for (size_t j = 0; j < m->nmem; j++) {
            const lz_member *mb = &m->mem[j];
            if (mb->gone) continue;
            if (o > 1) b[o++] = ',';
            b[o++] = '"';
            memcpy(b + o, mb->key, mb->key_len);
            o += mb->key_len;
            b[o++] = '"';
            b[o++] = ':';
            memcpy(b + o, mb->val, mb->val_len);
            o += mb->val_len;
        }
        for (const lz_str *x = m->sx; x; x = x->next) {
            if (x->gone) continue; /* (keys and values are plain: tw_msg_set_str checked) */
            if (o > 1) b[o++] = ',';
            b[o++] = '"';
            memcpy(b + o, x->key, x->key_len);
            o += x->key_len;
            memcpy(b + o, "\":\"", 3);
            o += 3;
            memcpy(b + o, x->val, x->val_len);
            o += x->val_len;
            b[o++] = '"';
        }
        i = 0;
        if (nx) {
            json_object_foreach(m->extra, k, v)
            {
                if (o > 1) b[o++] = ',';
                b[o++] = '"';
                size_t kl = strlen(k);
                memcpy(b + o, k, kl);
                o += kl;
                b[o++] = '"';
                b[o++] = ':';
                if (pieces[i]) {
                    memcpy(b + o, pieces[i], plen[i]);
                    o += plen[i];
                } else {
                    b[o++] = '"';
                    memcpy(b + o, json_string_value(v), json_string_length(v));
                    o += json_string_length(v);
                    b[o++] = '"';
                }
                i++;
            }
        }
        b[o++] = '}';
        b[o] = '\0';
        *len = o;
    }
    for (size_t j = 0; j < nx; j++)
        free(pieces[j]);
    return b;
}

/* ---- construction ------------------------------------------------------ */

static void cache_fields(tw_msg *m);

/* Refreshes the cached pointer of one field after it was set or deleted;
 * cheaper than cache_fields() on the hot path of rewriting a message. */
static void cache_field(tw_msg *m, const char *field)
{
    switch (field[0]) {
    case 't':
        if (strcmp(field, "thingID") == 0) {
            m->thing = get_str(m, "thingID");
            return;
        }
        break;
    case 'n':
        if (strcmp(field, "name") == 0) {
            m->name = get_str(m, "name");
            return;
        }
        break;
    case 's':
        if (strcmp(field, "senderID") == 0) {
            m->sender = get_str(m, "senderID");
            return;
        }
        if (strcmp(field, "status") == 0) {
            m->status = tw_status_parse(get_str(m, "status"));
            return;
        }
        break;
    case 'c':
        if (strcmp(field, "correlationID") == 0) {
            m->correlation = get_str(m, "correlationID");
            return;
        }
        if (strcmp(field, "created") == 0) return;
        break;
    case 'v':
    case 'i':
    case 'o':
    case 'e':
    case 'u':
        /* value, input, output, error, expires, inboxSeq, unchanged...: not
         * cached, unless it is one of the cached ones below */
        if (strcmp(field, "operation") != 0) return;
        break;
    default:
        break;
    }
    cache_fields(m);
}

static void cache_fields(tw_msg *m)
{
    const char *t = get_str(m, "type");
    m->type = t ? type_parse(t) : TW_TYPE_NONE;
    m->op = tw_op_parse(get_str(m, "operation"));
    m->status = tw_status_parse(get_str(m, "status"));
    m->thing = get_str(m, "thingID");
    m->name = get_str(m, "name");
    m->correlation = get_str(m, "correlationID");
    m->sender = get_str(m, "senderID");
    m->id = get_str(m, "messageID");
}

static void cache_from_view(tw_msg *m, const env_view *v, tw_msg_type type, tw_op op)
{
    m->type = type;
    m->op = op;
    m->status = tw_status_parse(v->fstr[FI_STATUS]);
    m->thing = v->fstr[FI_THING];
    m->name = v->fstr[FI_NAME];
    m->correlation = v->fstr[FI_CORRELATION];
    m->sender = v->fstr[FI_SENDER];
    m->id = v->fstr[FI_MESSAGE];
}

static tw_msg *wrap(json_t *obj)
{
    tw_msg *m = calloc(1, sizeof *m);
    if (!m) {
        json_decref(obj);
        return NULL;
    }
    atomic_init(&m->refs, 1);
    atomic_init(&m->obj, obj);
    pthread_mutex_init(&m->enc_lock, NULL);
    atomic_init(&m->enc, NULL);
    cache_fields(m);
    return m;
}

int tw_msg_from_json(json_t *obj, tw_msg **out, json_t **problem)
{
    int rc = tw_msg_validate(obj, problem);
    if (rc) {
        json_decref(obj);
        return rc;
    }
    tw_msg *m = wrap(obj);
    if (!m) return reject(problem, TW_ENOMEM, NULL, NULL);
    *out = m;
    return 0;
}

int tw_msg_parse(const char *buf, size_t len, const tw_msg_limits *lim, tw_msg **out,
                 json_t **problem)
{
    size_t max_bytes = lim && lim->max_bytes ? lim->max_bytes : TW_MSG_MAX_BYTES_DEFAULT;
    int max_depth = lim && lim->max_depth ? lim->max_depth : TW_MSG_MAX_DEPTH_DEFAULT;
    char detail[160];
    if (len > max_bytes) {
        snprintf(detail, sizeof detail, "the message has %zu bytes; the limit is %zu", len,
                 max_bytes);
        return reject(problem, TW_ETOOBIG, detail, "");
    }
    if (!tw_utf8_valid(buf, len))
        return reject(problem, TW_EINVAL, "the message is not valid UTF-8", "");
    int rc = parse_lazy(buf, len, max_depth, out, problem);
    if (rc) return rc > 0 ? 0 : rc;
    if (tw_json_max_depth(buf, len) > max_depth) {
        snprintf(detail, sizeof detail, "the message nests deeper than %d levels", max_depth);
        return reject(problem, TW_EINVAL, detail, "");
    }
    json_error_t err;
    json_t *obj = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err);
    if (!obj) {
        snprintf(detail, sizeof detail, "malformed JSON at line %d column %d: %.80s", err.line,
                 err.column, err.text);
        return reject(problem, TW_EINVAL, detail, "");
    }
    return tw_msg_from_json(obj, out, problem);
}

static void stamp_new(json_t *o)
{
    char id[TW_ID_MAX], ts[TW_TIME_LEN];
    tw_id_new("m-", id);
    tw_time_format(tw_now_ms(), ts);
    json_object_set_new(o, "messageID", json_string(id));
    json_object_set_new(o, "created", json_string(ts));
}

/* A string that a lazy message can carry as it is. */
static bool plain_utf8(const char *s)
{
    size_t n = strlen(s);
    return plain_string(s, n) && tw_utf8_valid(s, n);
}

tw_msg *tw_msg_new(tw_msg_type type, tw_op op, const char *thing_id, const char *name)
{
    if ((!thing_id || plain_utf8(thing_id)) && (!name || plain_utf8(name))) {
        /* built lazily too: the fields as plain strings, no tree, in the
         * message's own arena */
        size_t head = align8(sizeof(tw_msg));
        bool pooled;
        char *blk = blk_alloc(head + ARENA_NEW, &pooled);
        if (!blk) return NULL;
        tw_msg *m = (tw_msg *)(void *)blk;
        memset(m, 0, sizeof *m);
        m->pooled = pooled;
        m->arena = blk + head;
        m->arena_left = pooled ? BLK_BYTES - head : ARENA_NEW;
        ARENA_POISON(m->arena, m->arena_left);
        atomic_init(&m->refs, 1);
        atomic_init(&m->obj, NULL);
        pthread_mutex_init(&m->enc_lock, NULL);
        atomic_init(&m->enc, NULL);
        m->lazy = true;
        char id[TW_ID_MAX], ts[TW_TIME_LEN];
        tw_id_new("m-", id);
        tw_time_format(tw_now_ms(), ts);
        const char *tn = tw_msg_type_name(type), *on = tw_op_name(op);
        if (sx_add(m, "type", 4, tn, strlen(tn), NULL) ||
            sx_add(m, "operation", 9, on, strlen(on), NULL) ||
            (thing_id && sx_add(m, "thingID", 7, thing_id, strlen(thing_id), NULL)) ||
            (name && sx_add(m, "name", 4, name, strlen(name), NULL)) ||
            sx_add(m, "messageID", 9, id, strlen(id), NULL) ||
            sx_add(m, "created", 7, ts, strlen(ts), NULL)) {
            tw_msg_unref(m);
            return NULL;
        }
        cache_fields(m);
        return m;
    }
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "type", json_string(tw_msg_type_name(type)));
    json_object_set_new(o, "operation", json_string(tw_op_name(op)));
    if (thing_id) json_object_set_new(o, "thingID", json_string(thing_id));
    if (name) json_object_set_new(o, "name", json_string(name));
    stamp_new(o);
    return wrap(o);
}

tw_msg *tw_msg_new_response(const tw_msg *req, tw_status status)
{
    tw_msg *r = tw_msg_new(TW_TYPE_RESPONSE, req->op, req->thing, req->name);
    if (!r) return NULL;
    if (req->correlation)
        tw_msg_set_str(r, "correlationID", req->correlation);
    else if (req->id)
        tw_msg_set_str(r, "correlationID", req->id);
    if (status != TW_STATUS_NONE) tw_msg_set_status(r, status);
    return r;
}

tw_msg *tw_msg_new_error(const tw_msg *req, json_t *problem)
{
    tw_msg *r = tw_msg_new_response(req, TW_STATUS_FAILED);
    if (!r) {
        json_decref(problem);
        return NULL;
    }
    tw_msg_set(r, "error", problem);
    return r;
}

tw_msg *tw_msg_ref(tw_msg *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void tw_msg_unref(tw_msg *m)
{
    if (!m) return;
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1) return;
    json_decref(atomic_load_explicit(&m->obj, memory_order_relaxed));
    for (size_t i = 0; i < m->nmem; i++)
        json_decref(atomic_load_explicit(&m->mem[i].dec, memory_order_relaxed));
    json_decref(m->extra);
    for (lz_str *x = m->sx, *next; x; x = next) {
        next = x->next;
        json_decref(atomic_load_explicit(&x->dec, memory_order_relaxed));
        if (!x->in_arena) free(x);
    }
    if (!m->enc_in_arena) free(atomic_load(&m->enc));
    pthread_mutex_destroy(&m->enc_lock);
    blk_free(m, m->pooled); /* a lazy message's members and text are in the same block */
}

tw_msg *tw_msg_copy(const tw_msg *m)
{
    json_t *tree = materialize(m);
    json_t *o = tree ? json_deep_copy(tree) : NULL;
    return o ? wrap(o) : NULL;
}

tw_msg_type tw_msg_get_type(const tw_msg *m)
{
    return m->type;
}
tw_op tw_msg_get_op(const tw_msg *m)
{
    return m->op;
}
const char *tw_msg_thing(const tw_msg *m)
{
    return m->thing;
}
const char *tw_msg_name(const tw_msg *m)
{
    return m->name;
}
const char *tw_msg_correlation(const tw_msg *m)
{
    return m->correlation;
}
const char *tw_msg_sender(const tw_msg *m)
{
    return m->sender;
}
const char *tw_msg_id(const tw_msg *m)
{
    return m->id;
}
tw_status tw_msg_status(const tw_msg *m)
{
    return m->status;
}
json_t *tw_msg_get(const tw_msg *m, const char *field)
{
    json_t *o = atomic_load_explicit(&m->obj, memory_order_acquire);
    if (o || !m->lazy) return json_object_get(o, field);
    json_t *x = m->extra ? json_object_get(m->extra, field) : NULL;
    if (x) return x;
    lz_str *sx = sx_find(m, field);
    if (sx) return sx_value(sx);
    lz_member *mb = lz_find(m, field);
    return mb ? lz_value(mb) : NULL;
}

const char *tw_msg_get_raw(const tw_msg *m, const char *field, size_t *len)
{
    const lz_member *mb = m->lazy ? lz_find(m, field) : NULL;
    if (!mb) return NULL;
    if (len) *len = mb->val_len;
    return mb->val;
}

json_t *tw_msg_json(const tw_msg *m)
{
    return materialize(m);
}

static bool frozen(const tw_msg *m)
{
    return atomic_load_explicit(&m->refs, memory_order_acquire) != 1 ||
           atomic_load_explicit(&m->enc, memory_order_acquire) != NULL;
}

bool tw_msg_writable(const tw_msg *m)
{
    return !frozen(m);
}

int tw_msg_set(tw_msg *m, const char *field, json_t *value)
{
    if (!value) return TW_ENOMEM;
    if (frozen(m)) {
        json_decref(value);
        return TW_EINVAL;
    }
    if (m->lazy) lz_forget(m, field);
    json_t *o = atomic_load_explicit(&m->obj, memory_order_relaxed);
    if (o) {
        if (json_object_set_new(o, field, value)) return TW_ENOMEM;
    } else {
        if (!m->extra && !(m->extra = json_object())) {
            json_decref(value);
            return TW_ENOMEM;
        }
        if (json_object_set_new(m->extra, field, value)) return TW_ENOMEM;
    }
    cache_field(m, field);
    return 0;
}

int tw_msg_set_str(tw_msg *m, const char *field, const char *value)
{
    if (!value) return TW_EINVAL;
    size_t kl = strlen(field), vl = strlen(value);
    if (!m->lazy || atomic_load_explicit(&m->obj, memory_order_relaxed) || kl > UINT32_MAX ||
        !plain_string(field, kl) || !plain_string(value, vl) || !tw_utf8_valid(value, vl))
        return tw_msg_set(m, field, json_string(value));
    if (frozen(m)) return TW_EINVAL;
    const char *v = NULL;
    int rc = sx_add(m, field, kl, value, vl, &v);
    if (rc) return rc;
    /* the cached pointers of the fields the router reads, straight from the
     * new value (no lookup) */
    if (kl == 7 && memcmp(field, "thingID", 7) == 0)
        m->thing = v;
    else if (kl == 8 && memcmp(field, "senderID", 8) == 0)
        m->sender = v;
    else if (kl == 4 && memcmp(field, "name", 4) == 0)
        m->name = v;
    else if (kl == 13 && memcmp(field, "correlationID", 13) == 0)
        m->correlation = v;
    else
        cache_field(m, field);
    return 0;
}

int tw_msg_set_status(tw_msg *m, tw_status st)
{
    return tw_msg_set_str(m, "status", tw_status_name(st));
}

int tw_msg_del(tw_msg *m, const char *field)
{
    if (frozen(m)) return TW_EINVAL;
    json_t *o = atomic_load_explicit(&m->obj, memory_order_relaxed);
    if (o) json_object_del(o, field);
    if (m->lazy) lz_forget(m, field);
    cache_field(m, field);
    return 0;
}

const char *tw_msg_encode(tw_msg *m, size_t *len)
{
    char *enc = atomic_load_explicit(&m->enc, memory_order_acquire);
    if (!enc) {
        pthread_mutex_lock(&m->enc_lock);
        enc = atomic_load_explicit(&m->enc, memory_order_relaxed);
        if (!enc) {
            size_t n = 0;
            bool in_arena = false;
            json_t *o = atomic_load_explicit(&m->obj, memory_order_relaxed);
            enc = o ? tw_json_encode(o, &n) : encode_lazy(m, &n, &in_arena);
            if (!enc && !o) {
                /* a set key that needs escaping, or very many set fields:
                 * through a tree, which is not kept */
                json_t *t = build_tree(m);
                enc = t ? tw_json_encode(t, &n) : NULL;
                json_decref(t);
            }
            if (enc) {
                m->enc_len = n;
                m->enc_in_arena = in_arena;
                atomic_store_explicit(&m->enc, enc, memory_order_release);
            }
        }
        pthread_mutex_unlock(&m->enc_lock);
        if (!enc) return NULL;
    }
    if (len) *len = m->enc_len;
    return enc;
}
