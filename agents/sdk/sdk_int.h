/*
 * sdk_int.h - the inside of a tw_client, shared by client.c (connection,
 * login, reconnect, the three threads, request/response plumbing), agent.c
 * (TDs, values, request handlers) and consumer.c (directory, reads,
 * subscriptions, actions). Private to agents/sdk.
 *
 * One mutex (c->mtx) guards everything mutable in the client; it is never
 * held while calling the transport or a user callback.
 */
#ifndef TW_SDK_INT_H
#define TW_SDK_INT_H

#include "libtwin.h"
#include "runtime/hmap.h"
#include "runtime/msg.h"
#include "transport.h"

#include <pthread.h>
#include <stdatomic.h>

/* What an outgoing envelope is, which decides its fate on a disconnect. */
typedef enum {
    OUT_VALUE = 0, /* event or property value: dropped */
    OUT_REQUEST,   /* request: dropped, its caller fails with TW_EOFFLINE */
    OUT_ANSWER,    /* agent answer: kept for the next link */
} out_kind;

/* One entry of the send queue: one envelope, or (OUT_VALUE) a run of
 * consecutive values packed into one buffer by sdk_enqueue_value. */
typedef struct out_item {
    char *buf; /* envelope(s), each followed by '\n' */
    size_t len, cap;
    size_t nenv; /* envelopes in buf */
    out_kind kind;
    char *corr; /* OUT_REQUEST: the pending call's correlationID */
} out_item;

typedef enum { PEND_PLAIN = 0, PEND_ACTION } pend_kind;

/* A request waiting for its response (keyed by correlationID). */
typedef struct pending {
    char corr[TW_ID_MAX];
    pend_kind kind;
    /* synchronous callers wait on cond (or on *wake: a call that waits
     * for this one and another together); asynchronous ones have fn */
    pthread_cond_t cond;
    pthread_cond_t *wake;
    bool sync;
    bool done;
    bool want_id; /* a sync action's waiter wants a wake-up as soon as the id is known */
    int rc;
    json_t *response; /* PEND_PLAIN: the response envelope */
    tw_action_result last;
    tw_action_fn fn;
    void *arg;
    int64_t deadline_us; /* 0: none */
} pending;

typedef enum { SUB_EVENT = 0, SUB_PROPERTY } sub_kind;

typedef struct sub {
    int id;
    sub_kind kind;
    char *thing;            /* "*" for any */
    char *name;             /* "*" for any */
    tw_notify_fn fn;        /* either this (envelope as JSON) */
    tw_notification_fn nfn; /* or this (lazy view) */
    void *arg;
} sub;

typedef struct handler {
    bool write;
    char *thing;
    char *name;
    tw_req_fn fn;
    void *arg;
} handler;

/* Callback-thread jobs. */
typedef enum { JOB_STATE, JOB_NOTIFY, JOB_ACTION, JOB_REQ } job_kind;
typedef struct job {
    job_kind kind;
    tw_client_state state;
    tw_notify_fn nfn;
    tw_notification_fn vfn;
    tw_action_fn afn;
    tw_req_fn rfn;
    void *arg;
    tw_msg *msg;          /* JOB_NOTIFY: the notification (one ref) */
    int sub_id;           /* JOB_NOTIFY: the subscription (unsubscribe drops the job) */
    tw_action_result res; /* JOB_ACTION: output/error hold refs */
    tw_req *req;          /* JOB_REQ */
    struct job *next;
} job;

struct tw_req {
    tw_client *c;
    char action_id[TW_ID_MAX * 2];
    char *thing;
    char *name;
    char *sender;
    bool write;
    json_t *input;
    atomic_bool cancelled;
    atomic_bool answered;
};

struct tw_client {
    /* options, copied */
    tw_client_opts o;
    char *url, *ca_file, *server_name, *client_id, *password, *token, *token_file;
    char *cert_file, *key_file; /* mutual TLS */
    const tw_transport_ops *tops;

    pthread_mutex_t mtx;
    pthread_mutex_t run_mtx;   /* held while a user callback runs (one at a time) */
    pthread_cond_t state_cond; /* state changes (writer, waiters) */
    pthread_cond_t space_cond; /* room in the send queue */
    tw_client_state state;
    bool closing;
    tw_transport *tr;         /* the live link while CONNECTED (or logging in) */
    bool writer_busy;         /* the writer is inside tr->send */
    bool resyncing;           /* the I/O thread writes the resync: it reads nothing */
    int busy_waiters;         /* threads waiting for writer_busy to clear */
    int64_t resync_since_us;  /* when the resync began to be written */
    bool link_broken;         /* a write on tr failed: nobody writes on it again */
    char session_token[4096]; /* token from the last login, for the next one */
    char auth_id[TW_ID_MAX];
    int64_t cursor;
    uint64_t idseq;
    char idprefix[24];
    bool kick;                  /* tw_client_disconnect asked to drop the link */
    _Atomic int64_t last_rx_us; /* when the I/O thread last received (keepalive) */
    int64_t last_ping_us;
    int64_t next_check_us;  /* the next check of async timeouts and the keepalive */
    uint64_t rx_bad;        /* I/O thread: envelopes dropped unparsed since the last warning */
    int64_t rx_bad_warn_us; /* I/O thread: when that warning was logged */

    /* send queue (ring of items; qenv envelopes in them, at most send_queue) */
    out_item *q;
    size_t qhead, qn, qcap, qenv;
    bool writer_waiting;

    /* pending calls by correlationID */
    tw_hmap pend;
    /* subscriptions and handlers */
    sub *subs;
    size_t nsubs, capsubs;
    int next_sub_id;
    handler *hs;
    size_t nhs, caphs;
    /* published TDs (thing id -> json), latest property values
     * ("thing\nname" -> json array [thing, name, value]) */
    tw_hmap tds;
    tw_hmap props;
    /* live requests by action id, for cancelaction */
    tw_hmap reqs;
    size_t nreqs; /* tw_reqs not yet freed (handed to handlers or being answered) */
    bool zombie;  /* closed, the memory kept for those requests (sdk_req_free frees it) */

    /* callback thread */
    pthread_cond_t job_cond, job_space;
    bool cb_stop;
    job *jhead, *jtail;
    size_t njobs;
    bool cb_blocked; /* the callback thread waits in a synchronous call (no job bound) */

    pthread_t io_thr, wr_thr, cb_thr;

    /* stats */
    atomic_uint_fast64_t st_sent, st_received, st_batches, st_dropped, st_reconnects;
    atomic_uint_fast64_t st_writer_wakeups;
};

/* client.c */
void sdk_new_id(tw_client *c, char out[TW_ID_MAX]);
/* A new request envelope {type:request, operation, thingID?, name?,
 * correlationID, messageID}. */
json_t *sdk_request(tw_client *c, const char *op, const char *thing, const char *name,
                    char corr[TW_ID_MAX]);
/* Encodes env (reference stolen) and queues it. */
int sdk_enqueue(tw_client *c, json_t *env, out_kind kind, const char *corr);
/* The same for an encoded line (malloc'd, ending in '\n', ownership taken). */
int sdk_enqueue_line(tw_client *c, char *buf, size_t len, out_kind kind, const char *corr);
/* Queues an event or property value line (ending in '\n', copied): appended
 * to the run of values at the tail of the queue, so a fast publisher costs
 * one memcpy per envelope and the writer one buffer per run. */
int sdk_enqueue_value(tw_client *c, const char *line, size_t len);
/* Sends a request and waits for its response (plain) or its final action
 * status (action). env stolen. */
int sdk_call(tw_client *c, json_t *env, const char *corr, int timeout_ms, json_t **response);
/* The action calls take the request as an encoded line (ownership taken;
 * NULL means an allocation failed). A synchronous one whose time runs out
 * before any status named the action asks the runtime for it (see
 * tw_consumer_invoke). */
int sdk_call_action(tw_client *c, char *line, size_t len, const char *corr, int timeout_ms,
                    tw_action_result *res);
int sdk_call_action_async(tw_client *c, char *line, size_t len, const char *corr, int timeout_ms,
                          tw_action_fn fn, void *arg);
/* The TW_E* code of a failed response (from its problem's status). */
int sdk_response_rc(json_t *resp);
void sdk_push_job(tw_client *c, job *j);
void sdk_push_job_locked(tw_client *c, job *j); /* mtx held */
/* Envelopes sent right after login (TDs, subscriptions, values), as one
 * buffer of lines; mtx held. */
int sdk_agent_resync(tw_client *c, char **buf, size_t *len, size_t *cap);
int sdk_consumer_resync(tw_client *c, char **buf, size_t *len, size_t *cap);
int sdk_append_line(char **buf, size_t *len, size_t *cap, json_t *env);

/* Envelope lines written by hand (the hot paths: values, action requests,
 * answers): no JSON tree, one buffer. A failed allocation or a string that
 * is not UTF-8 is remembered and reported by sdk_line_end (sdk_line_rc
 * tells which). */
typedef struct sdk_line {
    char *buf;
    size_t len, cap;
    bool failed;  /* no line: an allocation failed, or: */
    bool invalid; /* a string was not UTF-8 (the runtime would refuse the line) */
} sdk_line;
/* s[0..n) as a JSON string (out has room for 6*n+2); raw bytes; a
 * decimal integer (room for 21). Each returns the bytes written. */
size_t sdk_put_json_str(char *out, const char *s, size_t n);
size_t sdk_put_lit(char *out, const char *lit, size_t n);
size_t sdk_put_int(char *out, json_int_t v);
void sdk_line_raw(sdk_line *l, const char *s, size_t n);
void sdk_line_str(sdk_line *l, const char *s, size_t n);
/* Any JSON value: scalars by hand, the rest through the runtime's encoder. */
void sdk_line_json(sdk_line *l, json_t *v);
/* ,"key":"s" */
void sdk_line_member(sdk_line *l, const char *key, const char *s);
/* {"type":"request","operation":op[,"thingID"][,"name"],"correlationID",
 * "messageID" - without the closing brace; corr gets the new id. */
void sdk_line_request(tw_client *c, sdk_line *l, const char *op, const char *thing,
                      const char *name, char corr[TW_ID_MAX]);
/* Closes the object and the line: the buffer (the caller owns it) and its
 * length, or NULL if an allocation failed or a string was not UTF-8. */
char *sdk_line_end(sdk_line *l, size_t *len);
/* Why sdk_line_end gave NULL: TW_EINVAL (not UTF-8) or TW_ENOMEM. */
int sdk_line_rc(const sdk_line *l);

/* agent.c: an incoming request or cancel for the agent */
void sdk_agent_request(tw_client *c, tw_msg *m);
void sdk_agent_free(tw_client *c);
void sdk_req_free(tw_req *r);
/* client.c: the last of a closed client (its mutex, c->reqs, c itself) */
void sdk_client_free(tw_client *c);
/* consumer.c: an incoming notification */
void sdk_consumer_notify(tw_client *c, tw_msg *m);
/* Runs a JOB_NOTIFY job's callback (callback thread, or I/O thread inline). */
void sdk_consumer_run_notify(tw_client *c, job *j);
void sdk_consumer_free(tw_client *c);

#endif
