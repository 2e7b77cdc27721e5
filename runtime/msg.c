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
 */
#include "msg.h"

#include "json_enc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct tw_msg {
    _Atomic int refs;
    json_t *obj;
    tw_msg_type type;
    tw_op op;
    tw_status status;
    const char *thing, *name, *correlation, *sender, *id;
    pthread_mutex_t enc_lock;
    char *_Atomic enc;
    size_t enc_len;
};

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

tw_op tw_op_parse(const char *name)
{
    if (!name || !*name) return TW_OP_NONE;
    for (int i = 1; i < TW_OP__COUNT; i++)
        if (strcmp(op_names[i], name) == 0) return (tw_op)i;
    return TW_OP_NONE;
}

static const char *const type_names[] = {"", "request", "response", "notification"};

const char *tw_msg_type_name(tw_msg_type t)
{
    return (unsigned)t <= TW_TYPE_NOTIFICATION ? type_names[t] : "";
}

static tw_msg_type type_parse(const char *s)
{
    for (int i = 1; i <= TW_TYPE_NOTIFICATION; i++)
        if (strcmp(type_names[i], s) == 0) return (tw_msg_type)i;
    return TW_TYPE_NONE;
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
static int max_depth_of(const char *buf, size_t len)
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

/* Fields whose type the envelope fixes. */
static const struct {
    const char *name;
    json_type type;
} typed_fields[] = {
    {"type", JSON_STRING},     {"operation", JSON_STRING},     {"thingID", JSON_STRING},
    {"name", JSON_STRING},     {"correlationID", JSON_STRING}, {"messageID", JSON_STRING},
    {"senderID", JSON_STRING}, {"created", JSON_STRING},       {"timestamp", JSON_STRING},
    {"expires", JSON_STRING},  {"status", JSON_STRING},        {"error", JSON_OBJECT},
};

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

int tw_msg_validate(json_t *obj, json_t **problem)
{
    char detail[160];
    if (!json_is_object(obj))
        return reject(problem, TW_EINVAL, "the message is not a JSON object", "");

    for (size_t i = 0; i < sizeof typed_fields / sizeof typed_fields[0]; i++) {
        json_t *v = json_object_get(obj, typed_fields[i].name);
        if (v && json_typeof(v) != typed_fields[i].type) {
            snprintf(detail, sizeof detail, "'%s' must be a %s", typed_fields[i].name,
                     typed_fields[i].type == JSON_STRING ? "string" : "object");
            return reject(problem, TW_EINVAL, detail, typed_fields[i].name);
        }
    }
    const char *ts = str_field(obj, "type");
    if (!ts) return reject(problem, TW_EINVAL, "'type' is required", "type");
    tw_msg_type type = type_parse(ts);
    if (type == TW_TYPE_NONE) {
        snprintf(detail, sizeof detail, "unknown type '%.60s'", ts);
        return reject(problem, TW_EINVAL, detail, "type");
    }
    const char *os = str_field(obj, "operation");
    if (!os) return reject(problem, TW_EINVAL, "'operation' is required", "operation");
    tw_op op = tw_op_parse(os);
    if (op == TW_OP_NONE) {
        snprintf(detail, sizeof detail, "unknown operation '%.60s'", os);
        return reject(problem, TW_EINVAL, detail, "operation");
    }
    const char *thing = str_field(obj, "thingID");
    if (thing && (strlen(thing) == 0 || strlen(thing) >= TW_THING_ID_MAX))
        return reject(problem, TW_EINVAL, "'thingID' must have 1 to 255 characters", "thingID");
    const char *name = str_field(obj, "name");
    if (name && strlen(name) > 255)
        return reject(problem, TW_EINVAL, "'name' is longer than 255 characters", "name");
    const char *st = str_field(obj, "status");
    if (st && tw_status_parse(st) == TW_STATUS_NONE) {
        snprintf(detail, sizeof detail, "unknown status '%.60s'", st);
        return reject(problem, TW_EINVAL, detail, "status");
    }
    const char *exp = str_field(obj, "expires");
    int64_t ms;
    if (exp && tw_time_parse(exp, &ms) != 0)
        return reject(problem, TW_EINVAL, "'expires' is not an RFC 3339 time", "expires");
    const char *cid = str_field(obj, "correlationID");
    if (cid && strlen(cid) >= TW_ID_MAX * 2)
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
        if ((op == TW_OP_WRITEPROPERTY || op == TW_OP_UPDATETHING) &&
            !json_object_get(obj, "input")) {
            snprintf(detail, sizeof detail, "'%s' needs 'input'", os);
            return reject(problem, TW_EINVAL, detail, "input");
        }
        if (op == TW_OP_UPDATETHING && !json_is_object(json_object_get(obj, "input")))
            return reject(problem, TW_EINVAL, "'input' of updatething must be a TD object",
                          "input");
        if ((op == TW_OP_QUERYACTION || op == TW_OP_CANCELACTION) &&
            !json_is_string(json_object_get(obj, "input")) && !cid)
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
    return 0;
}

/* ---- construction ------------------------------------------------------ */

static void cache_fields(tw_msg *m);

/* Refreshes the cached pointer of one field after it was set or deleted;
 * cheaper than cache_fields() on the hot path of rewriting a message. */
static void cache_field(tw_msg *m, const char *field)
{
    json_t *o = m->obj;
    switch (field[0]) {
    case 't':
        if (strcmp(field, "thingID") == 0) {
            m->thing = str_field(o, "thingID");
            return;
        }
        break;
    case 'n':
        if (strcmp(field, "name") == 0) {
            m->name = str_field(o, "name");
            return;
        }
        break;
    case 's':
        if (strcmp(field, "senderID") == 0) {
            m->sender = str_field(o, "senderID");
            return;
        }
        if (strcmp(field, "status") == 0) {
            m->status = tw_status_parse(str_field(o, "status"));
            return;
        }
        break;
    case 'c':
        if (strcmp(field, "correlationID") == 0) {
            m->correlation = str_field(o, "correlationID");
            return;
        }
        if (strcmp(field, "created") == 0) return;
        break;
    case 'v':
    case 'i':
    case 'o':
    case 'e':
        /* value, input, output, error, expires, inboxSeq...: not cached,
         * unless it is one of the cached ones below */
        if (strcmp(field, "operation") != 0) return;
        break;
    default:
        break;
    }
    cache_fields(m);
}

static void cache_fields(tw_msg *m)
{
    json_t *o = m->obj;
    const char *t = str_field(o, "type");
    m->type = t ? type_parse(t) : TW_TYPE_NONE;
    m->op = tw_op_parse(str_field(o, "operation"));
    m->status = tw_status_parse(str_field(o, "status"));
    m->thing = str_field(o, "thingID");
    m->name = str_field(o, "name");
    m->correlation = str_field(o, "correlationID");
    m->sender = str_field(o, "senderID");
    m->id = str_field(o, "messageID");
}

static tw_msg *wrap(json_t *obj)
{
    tw_msg *m = calloc(1, sizeof *m);
    if (!m) {
        json_decref(obj);
        return NULL;
    }
    atomic_init(&m->refs, 1);
    m->obj = obj;
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
    if (max_depth_of(buf, len) > max_depth) {
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

tw_msg *tw_msg_new(tw_msg_type type, tw_op op, const char *thing_id, const char *name)
{
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
    json_decref(m->obj);
    free(atomic_load(&m->enc));
    pthread_mutex_destroy(&m->enc_lock);
    free(m);
}

tw_msg *tw_msg_copy(const tw_msg *m)
{
    json_t *o = json_deep_copy(m->obj);
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
    return json_object_get(m->obj, field);
}
json_t *tw_msg_json(const tw_msg *m)
{
    return m->obj;
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
    if (json_object_set_new(m->obj, field, value)) return TW_ENOMEM;
    cache_field(m, field);
    return 0;
}

int tw_msg_set_str(tw_msg *m, const char *field, const char *value)
{
    return tw_msg_set(m, field, json_string(value));
}

int tw_msg_set_status(tw_msg *m, tw_status st)
{
    return tw_msg_set(m, "status", json_string(tw_status_name(st)));
}

int tw_msg_del(tw_msg *m, const char *field)
{
    if (frozen(m)) return TW_EINVAL;
    json_object_del(m->obj, field);
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
            enc = tw_json_encode(m->obj, &n);
            if (enc) {
                m->enc_len = n;
                atomic_store_explicit(&m->enc, enc, memory_order_release);
            }
        }
        pthread_mutex_unlock(&m->enc_lock);
        if (!enc) return NULL;
    }
    if (len) *len = m->enc_len;
    return enc;
}
