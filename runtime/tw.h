/*
 * tw.h - the vocabulary every twind module shares: error codes, roles,
 * identities, action statuses, time stamps and unguessable ids.
 *
 * Every fallible function in twind returns 0 or a negative TW_E* code and
 * hands results through out parameters; tw_strerror() names every code and
 * tw_error_http_status() maps it to the HTTP status of the RFC 9457 problem a
 * client gets. All functions here are thread-safe and allocate nothing unless
 * they say so.
 */
#ifndef TW_H
#define TW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    TW_OK = 0,
    TW_ENOMEM = -1,        /* out of memory */
    TW_EINVAL = -2,        /* malformed or invalid input (400) */
    TW_ENOTFOUND = -3,     /* unknown thing, affordance, action or client (404) */
    TW_EEXIST = -4,        /* already exists (409) */
    TW_EPERM = -5,         /* authenticated but not allowed (403) */
    TW_EAUTH = -6,         /* not authenticated / bad credentials (401) */
    TW_EBUSY = -7,         /* resource busy, e.g. data directory locked */
    TW_EIO = -8,           /* file or socket error */
    TW_ETOOBIG = -9,       /* body or field over its limit (413) */
    TW_ECONFLICT = -10,    /* state conflict, e.g. cancel of a finished action (409) */
    TW_EOFFLINE = -11,     /* the agent is not connected and the request cannot wait (503) */
    TW_ERATE = -12,        /* rate limit exceeded (429) */
    TW_ETIMEDOUT = -13,    /* timed out (504) */
    TW_ECLOSED = -14,      /* connection or object closed */
    TW_EEXPIRED = -15,     /* expired token or action */
    TW_EUNSUPPORTED = -16, /* operation not supported here (405/501) */
    TW_EDB = -17,          /* SQLite error */
    TW_EFULL = -18,        /* a bounded queue is full (503) */
    TW_EMEDIA = -19,       /* unsupported media type (415) */
    TW_ECRYPTO = -20,      /* cryptographic failure */
};

/* A static, human readable name of an error code. Never NULL. */
const char *tw_strerror(int code);
/* The HTTP status that best describes an error code (500 for unknown). */
int tw_error_http_status(int code);

/* Roles of DESIGN.md section 7, weakest first. */
typedef enum {
    TW_ROLE_NONE = 0,
    TW_ROLE_VIEWER,
    TW_ROLE_OPERATOR,
    TW_ROLE_MANAGER,
    TW_ROLE_ADMIN,
    TW_ROLE_AGENT,
    TW_ROLE_SERVICE,
    TW_ROLE__COUNT
} tw_role;

const char *tw_role_name(tw_role r);
/* TW_ROLE_NONE when the name is unknown. */
tw_role tw_role_parse(const char *name);

#define TW_ID_MAX 64        /* client ids, session ids, message and action ids */
#define TW_THING_ID_MAX 256 /* thing ids (twin ids included) */

/* Who is on the other end of a connection, once authenticated. */
typedef struct tw_identity {
    char client_id[TW_ID_MAX];
    char session_id[TW_ID_MAX];
    tw_role role;
    int64_t expires_ms; /* token expiry, ms since the epoch; 0 = none */
} tw_identity;

/* Client ids: 1..63 chars of [A-Za-z0-9._-], not starting with '.' or '-'. */
bool tw_client_id_valid(const char *id);

/* Action statuses of DESIGN.md section 2. */
typedef enum {
    TW_STATUS_NONE = 0,
    TW_STATUS_PENDING,
    TW_STATUS_QUEUED,
    TW_STATUS_DELIVERED,
    TW_STATUS_RUNNING,
    TW_STATUS_COMPLETED,
    TW_STATUS_FAILED,
    TW_STATUS_EXPIRED,
    TW_STATUS_CANCELLED,
    TW_STATUS__COUNT
} tw_status;

const char *tw_status_name(tw_status s);
tw_status tw_status_parse(const char *name); /* TW_STATUS_NONE when unknown */
/* completed, failed, expired and cancelled are final. */
bool tw_status_final(tw_status s);
/* The WoT HTTP Basic Profile state: pending, running, completed or failed. */
const char *tw_status_wot(tw_status s);

/* Wall clock, milliseconds since the Unix epoch. */
int64_t tw_now_ms(void);
/* Monotonic clock in microseconds, for durations. */
int64_t tw_mono_us(void);

#define TW_TIME_LEN 32
/* RFC 3339 UTC with milliseconds: 2026-11-22T02:27:08.123Z. */
void tw_time_format(int64_t ms, char out[TW_TIME_LEN]);
/* Parses RFC 3339 (any offset, optional fraction) into ms since the epoch. */
int tw_time_parse(const char *s, int64_t *ms);

/* A new unguessable id: an optional prefix and 128 random bits (libsodium),
 * base32 lower case. out must hold TW_ID_MAX bytes. */
void tw_id_new(const char *prefix, char out[TW_ID_MAX]);

/* Copies src into dst (size n) and returns TW_ETOOBIG when it did not fit. */
int tw_strlcpy(char *dst, const char *src, size_t n);

#endif
