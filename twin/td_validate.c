/*
 * td_validate.c - TD 1.1 validation with every problem as {field, description}.
 *
 * The checks mirror the W3C JSON Schema for TD instances definition by
 * definition (thing-context, dataSchema, property/action/event elements,
 * form_element_*, link elements, the security schemes) so a TD accepted here
 * is accepted by a JSON Schema validator running that schema; the ajv
 * integration test (tests/integration/td-schema) holds us to it. A few rules
 * the schema cannot state are added (security names must be defined, bounds
 * must be ordered). The walk keeps the current JSON pointer in a fixed buffer:
 * push a segment before descending, pop after.
 */
#include "twin/td_validate.h"
#include "runtime/msg.h"
#include "runtime/tw.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define PTR_MAX 1024

typedef struct vctx {
    json_t *errors;
    int flags;
    int depth;
    bool overflow;
    size_t plen;
    char ptr[PTR_MAX];
} vctx;

static void problem(vctx *v, const char *field_suffix, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void problem(vctx *v, const char *field_suffix, const char *fmt, ...)
{
    if (json_array_size(v->errors) >= TW_TDV_MAX_ERRORS) {
        v->overflow = true;
        return;
    }
    char desc[256], field[PTR_MAX + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof desc, fmt, ap);
    va_end(ap);
    snprintf(field, sizeof field, "%s%s", v->ptr, field_suffix ? field_suffix : "");
    json_array_append_new(
        v->errors, json_pack("{s:s,s:s}", "field", field[0] ? field : "/", "description", desc));
}

/* Appends "/seg" (escaped per RFC 6901) to the pointer; returns the old length. */
static size_t push(vctx *v, const char *seg)
{
    size_t old = v->plen;
    if (v->plen + 1 < PTR_MAX) v->ptr[v->plen++] = '/';
    for (const char *c = seg; *c && v->plen + 2 < PTR_MAX; c++) {
        if (*c == '~' || *c == '/') {
            v->ptr[v->plen++] = '~';
            v->ptr[v->plen++] = *c == '~' ? '0' : '1';
        } else {
            v->ptr[v->plen++] = *c;
        }
    }
    v->ptr[v->plen] = '\0';
    return old;
}

static size_t push_idx(vctx *v, size_t i)
{
    char b[32];
    snprintf(b, sizeof b, "%zu", i);
    return push(v, b);
}

static void pop(vctx *v, size_t old)
{
    v->plen = old;
    v->ptr[old] = '\0';
}

/* ---- small type checks on a member ---- */

static const char *type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static bool is_int_value(const json_t *j)
{
    if (json_is_integer(j)) return true;
    if (!json_is_real(j)) return false;
    double d = json_real_value(j);
    return d == (double)(long long)d;
}

/* Checks obj[key], if present, has one of the JSON types in the mask
 * (bits 1 << json_type); what names them in the problem. */
static void opt_typed(vctx *v, const json_t *obj, const char *key, unsigned types, const char *what)
{
    json_t *m = json_object_get(obj, key);
    if (m && !(types & 1u << json_typeof(m))) {
        size_t o = push(v, key);
        problem(v, NULL, "must be %s, not %s", what, type_name(m));
        pop(v, o);
    }
}

static void opt_string(vctx *v, const json_t *obj, const char *key)
{
    opt_typed(v, obj, key, 1u << JSON_STRING, "a string");
}

static void opt_bool(vctx *v, const json_t *obj, const char *key)
{
    opt_typed(v, obj, key, 1u << JSON_TRUE | 1u << JSON_FALSE, "a boolean");
}

static void opt_number(vctx *v, const json_t *obj, const char *key)
{
    opt_typed(v, obj, key, 1u << JSON_INTEGER | 1u << JSON_REAL, "a number");
}

static void opt_nonneg_int(vctx *v, const json_t *obj, const char *key)
{
    json_t *m = json_object_get(obj, key);
    if (!m) return;
    size_t o = push(v, key);
    if (!is_int_value(m))
        problem(v, NULL, "must be an integer, not %s", type_name(m));
    else if (json_number_value(m) < 0)
        problem(v, NULL, "must be >= 0");
    pop(v, o);
}

/* A map of strings (titles, descriptions). */
static void opt_string_map(vctx *v, const json_t *obj, const char *key)
{
    json_t *m = json_object_get(obj, key);
    if (!m) return;
    size_t o = push(v, key);
    if (!json_is_object(m)) {
        problem(v, NULL, "must be an object of strings, not %s", type_name(m));
    } else {
        const char *k;
        json_t *s;
        json_object_foreach(m, k, s)
        {
            if (!json_is_string(s)) {
                size_t o2 = push(v, k);
                problem(v, NULL, "must be a string, not %s", type_name(s));
                pop(v, o2);
            }
        }
    }
    pop(v, o);
}

/* A string or an array of strings (min_items when an array). */
static void opt_string_or_array(vctx *v, const json_t *obj, const char *key, size_t min_items)
{
    json_t *m = json_object_get(obj, key);
    if (!m || json_is_string(m)) return;
    size_t o = push(v, key);
    if (!json_is_array(m)) {
        problem(v, NULL, "must be a string or an array of strings, not %s", type_name(m));
    } else {
        if (json_array_size(m) < min_items)
            problem(v, NULL, "must have at least %zu item(s)", min_items);
        size_t i;
        json_t *s;
        json_array_foreach(m, i, s)
        {
            if (!json_is_string(s)) {
                size_t o2 = push_idx(v, i);
                problem(v, NULL, "must be a string, not %s", type_name(s));
                pop(v, o2);
            }
        }
    }
    pop(v, o);
}

static void type_declaration(vctx *v, const json_t *obj)
{
    json_t *t = json_object_get(obj, "@type");
    if (!t) return;
    size_t o = push(v, "@type");
    if (json_is_string(t)) {
        if (strcmp(json_string_value(t), "tm:ThingModel") == 0)
            problem(v, NULL, "a TD must not be typed tm:ThingModel (that is a Thing Model)");
    } else if (json_is_array(t)) {
        size_t i;
        json_t *s;
        json_array_foreach(t, i, s)
        {
            size_t o2 = push_idx(v, i);
            if (!json_is_string(s))
                problem(v, NULL, "must be a string, not %s", type_name(s));
            else if (strcmp(json_string_value(s), "tm:ThingModel") == 0)
                problem(v, NULL, "a TD must not be typed tm:ThingModel (that is a Thing Model)");
            pop(v, o2);
        }
    } else {
        problem(v, NULL, "must be a string or an array of strings, not %s", type_name(t));
    }
    pop(v, o);
}

static void human_readable(vctx *v, const json_t *obj)
{
    opt_string(v, obj, "title");
    opt_string_map(v, obj, "titles");
    opt_string(v, obj, "description");
    opt_string_map(v, obj, "descriptions");
    type_declaration(v, obj);
}

/* URI (RFC 3986, as ajv-formats "uri" checks it, simplified): a scheme, ':',
 * then no whitespace, controls or characters URIs never contain. */
static bool uri_valid(const char *s)
{
    const char *c = s;
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z'))) return false;
    while ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
           *c == '+' || *c == '-' || *c == '.')
        c++;
    if (*c != ':') return false;
    for (c++; *c; c++) {
        unsigned char u = (unsigned char)*c;
        if (u <= 0x20 || u == 0x7f || strchr("\"<>\\^`{|}", u)) return false;
        if (u == '%') {
            if (!strchr("0123456789abcdefABCDEF", c[1]) || !c[1] ||
                !strchr("0123456789abcdefABCDEF", c[2]) || !c[2])
                return false;
        }
    }
    return true;
}

static bool digits(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return true;
}

/* RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM). */
static bool date_time_valid(const char *s)
{
    if (strlen(s) < 20 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' ||
        !digits(s + 8, 2) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2) || s[13] != ':' ||
        !digits(s + 14, 2) || s[16] != ':' || !digits(s + 17, 2))
        return false;
    int mo = (s[5] - '0') * 10 + s[6] - '0', d = (s[8] - '0') * 10 + s[9] - '0';
    int h = (s[11] - '0') * 10 + s[12] - '0', mi = (s[14] - '0') * 10 + s[15] - '0';
    int se = (s[17] - '0') * 10 + s[18] - '0';
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) return false;
    const char *c = s + 19;
    if (*c == '.') {
        c++;
        if (*c < '0' || *c > '9') return false;
        while (*c >= '0' && *c <= '9')
            c++;
    }
    if ((*c == 'Z' || *c == 'z') && c[1] == '\0') return true;
    if ((*c == '+' || *c == '-') && digits(c + 1, 2) && c[3] == ':' && digits(c + 4, 2) &&
        c[6] == '\0')
        return (c[1] - '0') * 10 + c[2] - '0' <= 23 && (c[4] - '0') * 10 + c[5] - '0' <= 59;
    return false;
}

/* ---- data schemas ---- */

static void data_schema_body(vctx *v, const json_t *ds);

static void data_schema(vctx *v, const json_t *ds)
{
    if (!json_is_object(ds)) {
        problem(v, NULL, "a data schema must be an object, not %s", type_name(ds));
        return;
    }
    data_schema_body(v, ds);
}

static void data_schema_member(vctx *v, const json_t *obj, const char *key)
{
    json_t *m = json_object_get(obj, key);
    if (!m) return;
    size_t o = push(v, key);
    data_schema(v, m);
    pop(v, o);
}

static void data_schema_map(vctx *v, const json_t *obj, const char *key, bool min_one)
{
    json_t *m = json_object_get(obj, key);
    if (!m) return;
    size_t o = push(v, key);
    if (!json_is_object(m)) {
        problem(v, NULL, "must be an object of data schemas, not %s", type_name(m));
    } else {
        if (min_one && json_object_size(m) == 0) problem(v, NULL, "must not be empty");
        const char *k;
        json_t *s;
        json_object_foreach(m, k, s)
        {
            size_t o2 = push(v, k);
            data_schema(v, s);
            pop(v, o2);
        }
    }
    pop(v, o);
}

static const char *const DS_TYPES[] = {"boolean", "integer", "number", "string",
                                       "object",  "array",   "null",   NULL};

static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0) return true;
    return false;
}

static void bounds_ordered(vctx *v, const json_t *ds, const char *lo, const char *hi)
{
    json_t *a = json_object_get(ds, lo), *b = json_object_get(ds, hi);
    if (json_is_number(a) && json_is_number(b) && json_number_value(a) > json_number_value(b)) {
        size_t o = push(v, lo);
        problem(v, NULL, "must not be greater than %s", hi);
        pop(v, o);
    }
}

/* Every keyword of the dataSchema definition (also used for properties,
 * which are data schemas themselves). */
static void data_schema_body(vctx *v, const json_t *ds)
{
    if (++v->depth > TW_TDV_MAX_DEPTH) {
        problem(v, NULL, "nested deeper than %d levels", TW_TDV_MAX_DEPTH);
        v->depth--;
        return;
    }
    human_readable(v, ds);
    opt_bool(v, ds, "writeOnly");
    opt_bool(v, ds, "readOnly");
    opt_string(v, ds, "unit");
    opt_string(v, ds, "format");
    opt_string(v, ds, "contentEncoding");
    opt_string(v, ds, "contentMediaType");
    json_t *m;
    if ((m = json_object_get(ds, "type"))) {
        size_t o = push(v, "type");
        if (!json_is_string(m) || !in_list(json_string_value(m), DS_TYPES))
            problem(v, NULL,
                    "must be one of boolean, integer, number, string, object, array, null");
        pop(v, o);
    }
    if ((m = json_object_get(ds, "oneOf"))) {
        size_t o = push(v, "oneOf");
        if (!json_is_array(m)) {
            problem(v, NULL, "must be an array of data schemas, not %s", type_name(m));
        } else {
            size_t i;
            json_t *s;
            json_array_foreach(m, i, s)
            {
                size_t o2 = push_idx(v, i);
                data_schema(v, s);
                pop(v, o2);
            }
        }
        pop(v, o);
    }
    if ((m = json_object_get(ds, "enum"))) {
        size_t o = push(v, "enum");
        if (!json_is_array(m)) {
            problem(v, NULL, "must be an array, not %s", type_name(m));
        } else if (json_array_size(m) == 0) {
            problem(v, NULL, "must have at least 1 item");
        } else {
            for (size_t i = 0; i < json_array_size(m); i++)
                for (size_t j = i + 1; j < json_array_size(m); j++)
                    if (json_equal(json_array_get(m, i), json_array_get(m, j))) {
                        size_t o2 = push_idx(v, j);
                        problem(v, NULL, "duplicates item %zu (enum items must be unique)", i);
                        pop(v, o2);
                    }
        }
        pop(v, o);
    }
    if ((m = json_object_get(ds, "items"))) {
        size_t o = push(v, "items");
        if (json_is_array(m)) {
            size_t i;
            json_t *s;
            json_array_foreach(m, i, s)
            {
                size_t o2 = push_idx(v, i);
                data_schema(v, s);
                pop(v, o2);
            }
        } else {
            data_schema(v, m);
        }
        pop(v, o);
    }
    opt_nonneg_int(v, ds, "minItems");
    opt_nonneg_int(v, ds, "maxItems");
    opt_nonneg_int(v, ds, "minLength");
    opt_nonneg_int(v, ds, "maxLength");
    opt_number(v, ds, "minimum");
    opt_number(v, ds, "maximum");
    opt_number(v, ds, "exclusiveMinimum");
    opt_number(v, ds, "exclusiveMaximum");
    bounds_ordered(v, ds, "minimum", "maximum");
    bounds_ordered(v, ds, "minLength", "maxLength");
    bounds_ordered(v, ds, "minItems", "maxItems");
    if ((m = json_object_get(ds, "multipleOf"))) {
        size_t o = push(v, "multipleOf");
        if (!json_is_number(m))
            problem(v, NULL, "must be a number, not %s", type_name(m));
        else if (json_number_value(m) <= 0)
            problem(v, NULL, "must be greater than 0");
        pop(v, o);
    }
    data_schema_map(v, ds, "properties", false);
    if ((m = json_object_get(ds, "required"))) {
        size_t o = push(v, "required");
        if (!json_is_array(m)) {
            problem(v, NULL, "must be an array of strings, not %s", type_name(m));
        } else {
            size_t i;
            json_t *s;
            json_array_foreach(m, i, s)
            {
                if (!json_is_string(s)) {
                    size_t o2 = push_idx(v, i);
                    problem(v, NULL, "must be a string, not %s", type_name(s));
                    pop(v, o2);
                }
            }
        }
        pop(v, o);
    }
    v->depth--;
}

/* ---- forms ---- */

static const char *const OPS_PROPERTY[] = {"readproperty", "writeproperty", "observeproperty",
                                           "unobserveproperty", NULL};
static const char *const OPS_ACTION[] = {"invokeaction", "queryaction", "cancelaction", NULL};
static const char *const OPS_EVENT[] = {"subscribeevent", "unsubscribeevent", NULL};
static const char *const OPS_ROOT[] = {"readallproperties",      "writeallproperties",
                                       "readmultipleproperties", "writemultipleproperties",
                                       "observeallproperties",   "unobserveallproperties",
                                       "queryallactions",        "subscribeallevents",
                                       "unsubscribeallevents",   NULL};

static void op_name(vctx *v, const json_t *op, const char *const *ops, const char *where)
{
    if (!json_is_string(op)) {
        problem(v, NULL, "must be a string, not %s", type_name(op));
    } else if (!in_list(json_string_value(op), ops)) {
        char list[300] = "";
        for (const char *const *o = ops; *o; o++) {
            if (o != ops) strncat(list, ", ", sizeof list - strlen(list) - 1);
            strncat(list, *o, sizeof list - strlen(list) - 1);
        }
        problem(v, NULL, "\"%s\" is not an operation of %s (one of: %s)", json_string_value(op),
                where, list);
    }
}

static void form(vctx *v, const json_t *f, const char *const *ops, const char *where)
{
    if (!json_is_object(f)) {
        problem(v, NULL, "a form must be an object, not %s", type_name(f));
        return;
    }
    json_t *href = json_object_get(f, "href");
    if (!href) {
        problem(v, "/href", "is required");
    } else if (!json_is_string(href)) {
        problem(v, "/href", "must be a string, not %s", type_name(href));
    } else {
        for (const char *c = json_string_value(href); *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f) {
                problem(v, "/href", "must not contain control characters");
                break;
            }
    }
    opt_string(v, f, "contentType");
    opt_string(v, f, "contentCoding");
    opt_string(v, f, "subprotocol");
    opt_string_or_array(v, f, "security", 1);
    opt_string_or_array(v, f, "scopes", 0);
    json_t *m;
    if ((m = json_object_get(f, "op"))) {
        size_t o = push(v, "op");
        if (json_is_array(m)) {
            if (json_array_size(m) == 0) problem(v, NULL, "must have at least 1 item");
            size_t i;
            json_t *s;
            json_array_foreach(m, i, s)
            {
                size_t o2 = push_idx(v, i);
                op_name(v, s, ops, where);
                pop(v, o2);
            }
        } else {
            op_name(v, m, ops, where);
        }
        pop(v, o);
    }
    if ((m = json_object_get(f, "response"))) {
        size_t o = push(v, "response");
        if (!json_is_object(m))
            problem(v, NULL, "must be an object, not %s", type_name(m));
        else if (!json_object_get(m, "contentType"))
            problem(v, "/contentType", "is required");
        else
            opt_string(v, m, "contentType");
        pop(v, o);
    }
    if ((m = json_object_get(f, "additionalResponses"))) {
        size_t o = push(v, "additionalResponses");
        if (!json_is_array(m)) {
            problem(v, NULL, "must be an array, not %s", type_name(m));
        } else {
            size_t i;
            json_t *r;
            json_array_foreach(m, i, r)
            {
                size_t o2 = push_idx(v, i);
                if (!json_is_object(r)) {
                    problem(v, NULL, "must be an object, not %s", type_name(r));
                } else {
                    opt_string(v, r, "contentType");
                    opt_string(v, r, "schema");
                    opt_bool(v, r, "success");
                }
                pop(v, o2);
            }
        }
        pop(v, o);
    }
}

static void forms(vctx *v, const json_t *obj, const char *const *ops, const char *where,
                  bool required)
{
    json_t *fs = json_object_get(obj, "forms");
    if (!fs) {
        if (required && !(v->flags & TW_TDV_FORMS_OPTIONAL)) problem(v, "/forms", "is required");
        return;
    }
    size_t o = push(v, "forms");
    if (!json_is_array(fs)) {
        problem(v, NULL, "must be an array of forms, not %s", type_name(fs));
    } else {
        if (json_array_size(fs) == 0) problem(v, NULL, "must have at least 1 form");
        size_t i;
        json_t *f;
        json_array_foreach(fs, i, f)
        {
            size_t o2 = push_idx(v, i);
            form(v, f, ops, where);
            pop(v, o2);
        }
    }
    pop(v, o);
}

/* ---- affordances ---- */

enum { K_PROPERTY, K_ACTION, K_EVENT };

static void affordance(vctx *v, const json_t *a, int kind)
{
    static const char *const *OPS[] = {OPS_PROPERTY, OPS_ACTION, OPS_EVENT};
    static const char *const WHERE[] = {"a property", "an action", "an event"};
    if (!json_is_object(a)) {
        problem(v, NULL, "an interaction affordance must be an object, not %s", type_name(a));
        return;
    }
    forms(v, a, OPS[kind], WHERE[kind], true);
    data_schema_map(v, a, "uriVariables", false);
    switch (kind) {
    case K_PROPERTY:
        data_schema_body(v, a); /* a property is a data schema */
        opt_bool(v, a, "observable");
        break;
    case K_ACTION:
        human_readable(v, a);
        data_schema_member(v, a, "input");
        data_schema_member(v, a, "output");
        opt_bool(v, a, "safe");
        opt_bool(v, a, "idempotent");
        opt_bool(v, a, "synchronous");
        break;
    default:
        human_readable(v, a);
        data_schema_member(v, a, "subscription");
        data_schema_member(v, a, "data");
        data_schema_member(v, a, "dataResponse");
        data_schema_member(v, a, "cancellation");
        break;
    }
}

static void affordances(vctx *v, const json_t *td, const char *key, int kind)
{
    json_t *m = json_object_get(td, key);
    if (!m) return;
    size_t o = push(v, key);
    if (!json_is_object(m)) {
        problem(v, NULL, "must be an object (name -> affordance), not %s", type_name(m));
    } else {
        const char *k;
        json_t *a;
        json_object_foreach(m, k, a)
        {
            size_t o2 = push(v, k);
            if (k[0] == '\0') problem(v, NULL, "affordance names must not be empty");
            affordance(v, a, kind);
            pop(v, o2);
        }
    }
    pop(v, o);
}

/* ---- @context ---- */

#define CTX_V1 "https://www.w3.org/2019/wot/td/v1"
#define CTX_V11 "https://www.w3.org/2022/wot/td/v1.1"

static void context(vctx *v, const json_t *td)
{
    json_t *c = json_object_get(td, "@context");
    if (!c) {
        problem(v, "/@context", "is required");
        return;
    }
    size_t o = push(v, "@context");
    if (json_is_string(c)) {
        const char *s = json_string_value(c);
        if (strcmp(s, CTX_V1) != 0 && strcmp(s, CTX_V11) != 0)
            problem(v, NULL,
                    "must be \"" CTX_V11 "\" (or \"" CTX_V1 "\"), or an array starting "
                    "with it");
    } else if (json_is_array(c)) {
        json_t *first = json_array_get(c, 0);
        const char *f = json_is_string(first) ? json_string_value(first) : "";
        bool v11 = strcmp(f, CTX_V11) == 0, v1 = strcmp(f, CTX_V1) == 0;
        if (!v11 && !v1)
            problem(v, json_array_size(c) ? "/0" : NULL,
                    "the first item must be \"" CTX_V11 "\" (or \"" CTX_V1 "\")");
        size_t i;
        json_t *it;
        json_array_foreach(c, i, it)
        {
            if (i == 0) continue;
            size_t o2 = push_idx(v, i);
            if (json_is_string(it)) {
                if (v11 && strcmp(json_string_value(it), CTX_V1) == 0)
                    problem(v, NULL, "the TD 1.0 context must not follow the TD 1.1 context");
            } else if (json_is_object(it)) {
                const char *k;
                json_t *s;
                json_object_foreach(it, k, s)
                {
                    if (!json_is_string(s)) {
                        size_t o3 = push(v, k);
                        problem(v, NULL, "context prefixes map to strings, not %s", type_name(s));
                        pop(v, o3);
                    }
                }
            } else {
                problem(v, NULL, "must be a URI string or an object of prefixes, not %s",
                        type_name(it));
            }
            pop(v, o2);
        }
    } else {
        problem(v, NULL, "must be a string or an array, not %s", type_name(c));
    }
    pop(v, o);
}

/* ---- security ---- */

static const char *const IN_COMMON[] = {"header", "query", "body", "cookie", "auto", NULL};
static const char *const IN_APIKEY[] = {"header", "query", "body", "cookie", "uri", "auto", NULL};

static void opt_enum(vctx *v, const json_t *obj, const char *key, const char *const *allowed)
{
    json_t *m = json_object_get(obj, key);
    if (!m) return;
    size_t o = push(v, key);
    if (!json_is_string(m) || !in_list(json_string_value(m), allowed)) {
        char list[200] = "";
        for (const char *const *a = allowed; *a; a++) {
            if (a != allowed) strncat(list, ", ", sizeof list - strlen(list) - 1);
            strncat(list, *a, sizeof list - strlen(list) - 1);
        }
        problem(v, NULL, "must be one of: %s", list);
    }
    pop(v, o);
}

static void security_scheme(vctx *v, const json_t *s)
{
    if (!json_is_object(s)) {
        problem(v, NULL, "a security scheme must be an object, not %s", type_name(s));
        return;
    }
    type_declaration(v, s);
    opt_string(v, s, "description");
    opt_string_map(v, s, "descriptions");
    opt_string(v, s, "proxy");
    json_t *sc = json_object_get(s, "scheme");
    if (!sc) {
        problem(v, "/scheme", "is required");
        return;
    }
    if (!json_is_string(sc)) {
        problem(v, "/scheme", "must be a string, not %s", type_name(sc));
        return;
    }
    const char *n = json_string_value(sc);
    if (strcmp(n, "nosec") == 0) {
    } else if (strcmp(n, "auto") == 0) {
        if (json_object_get(s, "name")) problem(v, "/name", "is not allowed with scheme auto");
    } else if (strcmp(n, "combo") == 0) {
        json_t *one = json_object_get(s, "oneOf"), *all = json_object_get(s, "allOf");
        if (!one == !all) {
            problem(v, NULL, "a combo scheme needs exactly one of oneOf and allOf");
        } else {
            const char *key = one ? "oneOf" : "allOf";
            json_t *arr = one ? one : all;
            size_t o = push(v, key);
            if (!json_is_array(arr) || json_array_size(arr) < 2) {
                problem(v, NULL, "must be an array of at least 2 scheme names");
            } else {
                size_t i;
                json_t *x;
                json_array_foreach(arr, i, x) if (!json_is_string(x))
                {
                    size_t o2 = push_idx(v, i);
                    problem(v, NULL, "must be a string, not %s", type_name(x));
                    pop(v, o2);
                }
            }
            pop(v, o);
        }
    } else if (strcmp(n, "basic") == 0 || strcmp(n, "digest") == 0 || strcmp(n, "bearer") == 0) {
        opt_enum(v, s, "in", IN_COMMON);
        opt_string(v, s, "name");
        if (n[0] == 'd') {
            static const char *const QOP[] = {"auth", "auth-int", NULL};
            opt_enum(v, s, "qop", QOP);
        }
        if (n[1] == 'e') { /* bearer */
            opt_string(v, s, "authorization");
            opt_string(v, s, "alg");
            opt_string(v, s, "format");
        }
    } else if (strcmp(n, "apikey") == 0) {
        opt_enum(v, s, "in", IN_APIKEY);
        opt_string(v, s, "name");
    } else if (strcmp(n, "psk") == 0) {
        opt_string(v, s, "identity");
    } else if (strcmp(n, "oauth2") == 0) {
        opt_string(v, s, "authorization");
        opt_string(v, s, "token");
        opt_string(v, s, "refresh");
        opt_string_or_array(v, s, "scopes", 0);
        opt_string(v, s, "flow");
    } else if (!strchr(n, ':') || n[0] == ':') {
        problem(v, "/scheme",
                "\"%s\" is not a TD security scheme (nosec, auto, combo, basic, digest, apikey, "
                "bearer, psk, oauth2) nor a prefixed extension scheme (\"prefix:Name\")",
                n);
    }
}

static void security(vctx *v, const json_t *td)
{
    json_t *defs = json_object_get(td, "securityDefinitions");
    json_t *sec = json_object_get(td, "security");
    bool optional = v->flags & TW_TDV_SECURITY_OPTIONAL;
    if (!defs) {
        if (!optional) problem(v, "/securityDefinitions", "is required");
    } else {
        size_t o = push(v, "securityDefinitions");
        if (!json_is_object(defs)) {
            problem(v, NULL, "must be an object (name -> security scheme), not %s",
                    type_name(defs));
        } else {
            if (json_object_size(defs) == 0) problem(v, NULL, "must define at least 1 scheme");
            const char *k;
            json_t *s;
            json_object_foreach(defs, k, s)
            {
                size_t o2 = push(v, k);
                security_scheme(v, s);
                pop(v, o2);
            }
        }
        pop(v, o);
    }
    if (!sec) {
        if (!optional) problem(v, "/security", "is required");
        return;
    }
    size_t o = push(v, "security");
    if (json_is_string(sec)) {
        if (json_is_object(defs) && !json_object_get(defs, json_string_value(sec)))
            problem(v, NULL, "\"%s\" is not defined in securityDefinitions",
                    json_string_value(sec));
    } else if (json_is_array(sec)) {
        if (json_array_size(sec) == 0) problem(v, NULL, "must name at least 1 scheme");
        size_t i;
        json_t *s;
        json_array_foreach(sec, i, s)
        {
            size_t o2 = push_idx(v, i);
            if (!json_is_string(s))
                problem(v, NULL, "must be a string, not %s", type_name(s));
            else if (json_is_object(defs) && !json_object_get(defs, json_string_value(s)))
                problem(v, NULL, "\"%s\" is not defined in securityDefinitions",
                        json_string_value(s));
            pop(v, o2);
        }
    } else {
        problem(v, NULL, "must be a string or an array of strings, not %s", type_name(sec));
    }
    pop(v, o);
}

/* ---- links ---- */

static void links(vctx *v, const json_t *td)
{
    json_t *ls = json_object_get(td, "links");
    if (!ls) return;
    size_t o = push(v, "links");
    if (!json_is_array(ls)) {
        problem(v, NULL, "must be an array of links, not %s", type_name(ls));
        pop(v, o);
        return;
    }
    size_t i;
    json_t *l;
    json_array_foreach(ls, i, l)
    {
        size_t o2 = push_idx(v, i);
        if (!json_is_object(l)) {
            problem(v, NULL, "a link must be an object, not %s", type_name(l));
            pop(v, o2);
            continue;
        }
        json_t *href = json_object_get(l, "href");
        if (!href)
            problem(v, "/href", "is required");
        else if (!json_is_string(href))
            problem(v, "/href", "must be a string");
        opt_string(v, l, "type");
        opt_string(v, l, "rel");
        opt_string(v, l, "anchor");
        opt_string_or_array(v, l, "hreflang", 0);
        json_t *rel = json_object_get(l, "rel"), *sizes = json_object_get(l, "sizes");
        const char *r = json_is_string(rel) ? json_string_value(rel) : "";
        if (strcmp(r, "tm:extends") == 0)
            problem(v, "/rel", "tm:extends links belong in Thing Models, not in TDs");
        if (sizes) {
            if (strcmp(r, "icon") != 0) {
                problem(v, "/sizes", "is only allowed on links with rel \"icon\"");
            } else if (!json_is_string(sizes)) {
                problem(v, "/sizes", "must be a string");
            } else {
                const char *x = strchr(json_string_value(sizes), 'x');
                if (!x || x[1] < '0' || x[1] > '9')
                    problem(v, "/sizes", "must look like \"16x16\"");
            }
        }
        pop(v, o2);
    }
    pop(v, o);
}

/* ---- the Thing ---- */

int tw_td_validate(const json_t *td, int flags, json_t **errors)
{
    vctx v = {.flags = flags, .errors = json_array()};
    if (errors) *errors = NULL;
    if (!v.errors) return TW_ENOMEM;
    if (!json_is_object(td)) {
        problem(&v, NULL, "a Thing Description must be a JSON object, not %s", type_name(td));
        goto done;
    }
    context(&v, td);
    json_t *m = json_object_get(td, "title");
    if (!m) problem(&v, "/title", "is required");
    human_readable(&v, td);
    if ((m = json_object_get(td, "id"))) {
        if (!json_is_string(m)) {
            problem(&v, "/id", "must be a string, not %s", type_name(m));
        } else if (flags & TW_TDV_ID_REQUIRED) {
            const char *c = json_string_value(m);
            bool ok = *c != '\0';
            for (; *c; c++)
                if ((unsigned char)*c <= 0x20 || *c == 0x7f) ok = false;
            if (!ok) problem(&v, "/id", "must be a non-empty id without spaces or controls");
        } else if (!uri_valid(json_string_value(m))) {
            problem(&v, "/id", "must be a URI (scheme:rest, no spaces), e.g. urn:dev:ops:32473");
        }
    } else if (flags & TW_TDV_ID_REQUIRED) {
        problem(&v, "/id", "is required");
    }
    security(&v, td);
    if ((m = json_object_get(td, "version"))) {
        if (!json_is_object(m))
            problem(&v, "/version", "must be an object");
        else if (!json_is_string(json_object_get(m, "instance")))
            problem(&v, "/version/instance", "is required and must be a string");
    }
    static const char *const dates[] = {"created", "modified"};
    for (int i = 0; i < 2; i++) {
        if ((m = json_object_get(td, dates[i])) &&
            (!json_is_string(m) || !date_time_valid(json_string_value(m)))) {
            size_t o = push(&v, dates[i]);
            problem(&v, NULL, "must be an RFC 3339 date-time, e.g. 2026-11-22T02:27:08Z");
            pop(&v, o);
        }
    }
    opt_string(&v, td, "support");
    opt_string(&v, td, "base");
    opt_string_or_array(&v, td, "profile", 1);
    affordances(&v, td, "properties", K_PROPERTY);
    affordances(&v, td, "actions", K_ACTION);
    affordances(&v, td, "events", K_EVENT);
    forms(&v, td, OPS_ROOT, "a Thing", false);
    links(&v, td);
    data_schema_map(&v, td, "schemaDefinitions", true);
    data_schema_map(&v, td, "uriVariables", false);
done:
    if (v.overflow)
        json_array_append_new(v.errors, json_pack("{s:s,s:s}", "field", "/", "description",
                                                  "more problems were found and not listed"));
    if (json_array_size(v.errors) == 0) {
        json_decref(v.errors);
        return 0;
    }
    if (errors)
        *errors = v.errors;
    else
        json_decref(v.errors);
    return TW_EINVAL;
}

json_t *tw_td_problem(json_t *errors)
{
    json_t *first = json_array_get(errors, 0);
    char detail[512];
    size_t n = json_array_size(errors);
    snprintf(detail, sizeof detail, "%s: %s%s", json_string_value(json_object_get(first, "field")),
             json_string_value(json_object_get(first, "description")),
             n > 1 ? " (and more, see validationErrors)" : "");
    json_t *p = tw_problem_new(400, "invalid-td", "Invalid Thing Description",
                               first ? detail : "the TD is not valid", NULL);
    if (p)
        json_object_set_new(p, "validationErrors", errors ? errors : json_array());
    else
        json_decref(errors);
    return p;
}
