/*
 * msg.h - the twind message envelope (DESIGN.md section 2).
 *
 * A tw_msg is one JSON envelope, parsed and validated once at the binding,
 * routed as a tw_msg and encoded once: tw_msg_encode() produces the bytes on
 * first use and every later caller (every receiver of a fan-out, on any
 * thread) gets the same buffer. Messages are refcounted: tw_msg_ref() /
 * tw_msg_unref() are thread-safe. A message may be modified (tw_msg_set*)
 * only by a holder of the single reference and only before it was encoded;
 * tw_msg_copy() gives a private, modifiable copy.
 *
 * Accessors return pointers owned by the message, valid while a reference
 * is held.
 */
#ifndef TW_MSG_H
#define TW_MSG_H

#include "tw.h"

#include <jansson.h>

typedef enum {
    TW_TYPE_NONE = 0,
    TW_TYPE_REQUEST,
    TW_TYPE_RESPONSE,
    TW_TYPE_NOTIFICATION,
} tw_msg_type;

typedef enum {
    TW_OP_NONE = 0,
    /* WoT operations */
    TW_OP_INVOKEACTION,
    TW_OP_CANCELACTION,
    TW_OP_QUERYACTION,
    TW_OP_QUERYALLACTIONS,
    TW_OP_READPROPERTY,
    TW_OP_READALLPROPERTIES,
    TW_OP_READMULTIPLEPROPERTIES,
    TW_OP_WRITEPROPERTY,
    TW_OP_OBSERVEPROPERTY,
    TW_OP_UNOBSERVEPROPERTY,
    TW_OP_OBSERVEALLPROPERTIES,
    TW_OP_UNOBSERVEALLPROPERTIES,
    TW_OP_SUBSCRIBEEVENT,
    TW_OP_UNSUBSCRIBEEVENT,
    TW_OP_SUBSCRIBEALLEVENTS,
    TW_OP_UNSUBSCRIBEALLEVENTS,
    /* runtime operations */
    TW_OP_LOGIN,
    TW_OP_REFRESH,
    TW_OP_LOGOUT,
    TW_OP_PING,
    TW_OP_UPDATETHING,
    TW_OP_DELETETHING,
    TW_OP_READEVENT,
    TW_OP_READALLEVENTS,
    TW_OP__COUNT
} tw_op;

const char *tw_op_name(tw_op op);    /* "" for TW_OP_NONE */
tw_op tw_op_parse(const char *name); /* TW_OP_NONE when unknown */
const char *tw_msg_type_name(tw_msg_type t);

/* Limits applied to bytes from the network. */
typedef struct tw_msg_limits {
    size_t max_bytes; /* default 1 MiB */
    int max_depth;    /* default 32 */
} tw_msg_limits;

#define TW_MSG_MAX_BYTES_DEFAULT (1024u * 1024u)
#define TW_MSG_MAX_DEPTH_DEFAULT 32

typedef struct tw_msg tw_msg;

/*
 * Parses and validates an envelope from untrusted bytes. lim may be NULL for
 * the defaults. On success *out holds a new message (one reference). On
 * failure returns TW_EINVAL or TW_ETOOBIG and, if problem is not NULL, sets
 * *problem to a new RFC 9457 problem object naming the offending field.
 */
int tw_msg_parse(const char *buf, size_t len, const tw_msg_limits *lim, tw_msg **out,
                 json_t **problem);

/*
 * Validates an already decoded envelope object and wraps it. Steals the
 * reference to obj in every case. Same results as tw_msg_parse().
 */
int tw_msg_from_json(json_t *obj, tw_msg **out, json_t **problem);

/*
 * Builds a new message with a fresh messageID and `created` time. thing_id and
 * name may be NULL. Returns NULL only on allocation failure.
 */
tw_msg *tw_msg_new(tw_msg_type type, tw_op op, const char *thing_id, const char *name);

/* A response to req: same operation, thingID, name and correlationID. */
tw_msg *tw_msg_new_response(const tw_msg *req, tw_status status);
/* An error response to req carrying the problem (reference stolen);
 * status is `failed`. */
tw_msg *tw_msg_new_error(const tw_msg *req, json_t *problem);

tw_msg *tw_msg_ref(tw_msg *m);
void tw_msg_unref(tw_msg *m);
/* A deep, private copy (one reference, not encoded). */
tw_msg *tw_msg_copy(const tw_msg *m);

tw_msg_type tw_msg_get_type(const tw_msg *m);
tw_op tw_msg_get_op(const tw_msg *m);
const char *tw_msg_thing(const tw_msg *m);       /* NULL when absent */
const char *tw_msg_name(const tw_msg *m);        /* NULL when absent */
const char *tw_msg_correlation(const tw_msg *m); /* NULL when absent */
const char *tw_msg_sender(const tw_msg *m);      /* NULL when absent */
const char *tw_msg_id(const tw_msg *m);          /* NULL when absent */
tw_status tw_msg_status(const tw_msg *m);        /* TW_STATUS_NONE when absent */
/* Any field, borrowed; NULL when absent. */
json_t *tw_msg_get(const tw_msg *m, const char *field);
/* The whole envelope object, borrowed. Do not modify. A parsed message
 * builds it on the first call (NULL only on allocation failure). */
json_t *tw_msg_json(const tw_msg *m);
/* The JSON text of a field exactly as it arrived (compact, no whitespace
 * outside strings), when the message was parsed from bytes and the field has
 * not been set since; NULL otherwise (use tw_msg_get). Lets a binding copy a
 * value into a frame without decoding and re-encoding it. */
const char *tw_msg_get_raw(const tw_msg *m, const char *field, size_t *len);

/* Sets a field (reference to value stolen). Only on an unshared, unencoded
 * message; returns TW_EINVAL otherwise. */
int tw_msg_set(tw_msg *m, const char *field, json_t *value);
int tw_msg_set_str(tw_msg *m, const char *field, const char *value);
int tw_msg_set_status(tw_msg *m, tw_status st);
int tw_msg_del(tw_msg *m, const char *field);
/* True when tw_msg_set would succeed (one reference, not yet encoded). */
bool tw_msg_writable(const tw_msg *m);

/*
 * The encoded bytes (compact JSON, no trailing newline). Produced once, on the
 * first call, then shared; thread-safe. Returns NULL on allocation failure.
 */
const char *tw_msg_encode(tw_msg *m, size_t *len);

/*
 * RFC 9457 problem objects. type is "urn:twind:problem:<slug>" for twind's own
 * problems. field, when not NULL, is added as "field" (the envelope member or
 * JSON pointer that was wrong). Returns a new reference.
 */
json_t *tw_problem_new(int status, const char *slug, const char *title, const char *detail,
                       const char *field);
/* A problem from an error code with the status tw_error_http_status(). */
json_t *tw_problem_from_error(int code, const char *detail, const char *field);

/* Envelope validation of an object already known to be within size/depth
 * limits; exposed for the bindings' own validators. */
int tw_msg_validate(json_t *obj, json_t **problem);

/* Nesting depth of the containers in a JSON text, counted on the raw bytes
 * (strings skipped), as tw_msg_parse checks its depth limit. */
int tw_json_max_depth(const char *buf, size_t len);
/* Checks UTF-8 well-formedness (no overlongs, no surrogates). */
bool tw_utf8_valid(const char *s, size_t len);
/* Writes code point cp (<= 0x10FFFF) as UTF-8 into out (4 bytes of room);
 * returns the number of bytes written. */
size_t tw_utf8_put(char *out, uint32_t cp);

#endif
