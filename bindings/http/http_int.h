/*
 * http_int.h - what the files of the HTTP binding share (not a public API).
 *
 * The binding (struct tw_http) owns up to two libmicrohttpd daemons (HTTPS
 * and loopback HTTP) that share one access handler (route.c). Every request
 * gets a struct http_req as libmicrohttpd's per-request context, and every
 * TCP connection a struct http_sock. A request that carries an operation
 * goes to the router through the socket's ephemeral tw_conn whose bdata is
 * a struct http_call (call.c, reused by the socket's next request): the
 * router's answer arrives through ops->send, possibly from another thread,
 * and resumes the suspended libmicrohttpd connection. Property reads skip
 * the messages (affordances.c, the direct read path): the router's chain
 * checks them through tw_router_admit() and the socket keeps what the next
 * identical read can reuse (its request message, the value's response,
 * its verified token). A stream (sse.c) is a
 * long-lived tw_conn whose bdata is a struct http_stream with a bounded
 * output buffer drained by a content reader that coalesces every waiting
 * frame into one write. replay.c keeps the window of recent stream
 * messages (each encoded once, its SSE frames built once) that every stream
 * copies from and that Last-Event-ID replays.
 *
 * Both kinds of bdata start with the same tag. Because the runtime may still
 * be inside ops->send for a connection when it is closed (fan-out drops the
 * registry lock before calling bindings), closed bdata is not freed at once
 * but parked for a grace period (graveyard in server.c).
 */
#ifndef TW_HTTP_INT_H
#define TW_HTTP_INT_H

#include "http.h"

#include "runtime/conn.h"
#include "runtime/log.h"
#include "runtime/hmap.h"
#include "runtime/router.h"
#include "twin/directory.h"
#include "twin/values.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

#define HTTP_LOG "http"

enum { BDATA_CALL = 0x43414c4c, BDATA_STREAM = 0x5354524d, BDATA_RECORDER = 0x52454344 };

typedef struct http_bdata {
    int tag;
    struct http_bdata *grave_next; /* graveyard link */
    int64_t grave_us;              /* when it was parked */
} http_bdata;

typedef struct http_cfg {
    char https_addr[128]; /* "" = off */
    char http_addr[128];  /* "" = off */
    size_t max_body;
    size_t max_header;
    unsigned max_connections;
    unsigned idle_timeout_s;
    size_t stream_queue;
    size_t replay_window;
    size_t replay_bytes;
    unsigned heartbeat_s;
    unsigned action_wait_ms;
    unsigned threads;
    char public_url[160]; /* "" = derived from the listener */
} http_cfg;

/* Counters for /metrics (atomics, relaxed). */
typedef struct http_stats {
    atomic_uint_fast64_t requests;
    atomic_uint_fast64_t by_status[6]; /* 2xx,3xx,4xx,5xx,401,429 */
    atomic_uint_fast64_t rejected[8];  /* see metrics.c reject_names */
    atomic_uint_fast64_t stream_frames;
    atomic_uint_fast64_t stream_overflows;
    atomic_uint_fast64_t streams_opened;
} http_stats;

typedef struct http_replay http_replay;
typedef struct http_stream http_stream;
typedef struct http_call http_call;

typedef struct tw_http {
    tw_runtime *rt;
    tw_binding *b;
    tw_dir *dir;
    tw_values *values; /* the twin's value store (direct reads), or NULL */
    http_cfg cfg;
    struct MHD_Daemon *d_https, *d_http;
    int port_https, port_http;
    char base_https[160]; /* https://host:port, for absolute hrefs */
    char base_http[160];
    char *tls_cert, *tls_key;         /* PEM, kept for the daemon's lifetime */
    char *tls_ca;                     /* the CA (PEM): client certificates chain to it */
    struct tw_tls_verifier *verifier; /* mutual TLS: checks a client certificate */
    http_stats st;
    http_replay *replay;

    atomic_bool stopping;
    pthread_mutex_t mu; /* streams, waiting calls, graveyard */
    pthread_cond_t cond;
    http_stream *streams; /* doubly linked list of open streams */
    size_t nstreams;
    http_call *waiting; /* suspended calls with a deadline */
    http_bdata *grave_head, *grave_tail;
    pthread_t housekeeper;
    bool housekeeper_started;

    uint64_t dir_sub; /* tw_dir_subscribe handle, 0 = none */

    /* Correlation ids of the binding's own requests: a random prefix per
     * binding and a counter (unique without a syscall per request). */
    char id_prefix[24];
    atomic_uint_fast64_t id_next;

    /* Records every event and property notification into the replay
     * window, whether or not a stream is subscribed at that moment, so a
     * client that reconnects finds what it missed. Subscribed from the
     * first stream on (recording set then; see http_recorder_start). */
    tw_conn *recorder;
    http_bdata recorder_bd;
    atomic_bool recording;

    /* Subscriptions of /sse streams that ended, by session id, so a client
     * resuming with Last-Event-ID gets them back (and the events it missed
     * under them). Bounded; entries expire. Guarded by mu. */
    tw_hmap sess_subs;

    /* Peer hang-ups of suspended streams (libmicrohttpd does not watch a
     * suspended socket): an epoll set polled by the housekeeper. */
    int hup_ep;
} tw_http;

/* One TCP connection (libmicrohttpd's socket context, route.c): its peer
 * address and the ephemeral call it reuses for every request it carries
 * (a keep-alive client pays for one tw_conn, not one per request). */
typedef struct http_tok http_tok;
typedef struct http_sock {
    char remote[80];
    http_call *call; /* NULL until the first call */
    http_tok *tok;   /* the last verified token (authn.c), or NULL */
    /* The direct read path (affordances.c), for a client that reads the
     * same thing again and again: the request message of the last read (the
     * chain's view of the next identical read; never sent) and the last
     * property value with its encoding. read_val's reference is held, so
     * its address cannot be reused by another value while it is cached. */
    tw_msg *read_req;
    json_t *read_val;
    struct MHD_Response *read_resp; /* read_val's encoding, ready to queue again */
} http_sock;

/* One request: libmicrohttpd's per-request context (route.c). */
typedef struct http_req {
    tw_http *h;
    struct MHD_Connection *mc;
    const char *method; /* borrowed from libmicrohttpd, valid during the request */
    char *path;         /* raw path (copy) */
    char *segs[8];      /* decoded path segments, pointers into segbuf */
    int nsegs;
    char *segbuf;
    char *body;
    size_t body_len, body_cap;
    bool body_too_big;
    bool head; /* HEAD: answer like GET without a body */
    tw_identity id;
    bool authed;
    http_sock *sock;
    const char *remote; /* sock->remote */
    http_call *call;    /* a pending router call, or NULL */
    /* What to do with the router's answer once the call completes (resp is
     * NULL on timeout; borrowed). */
    enum MHD_Result (*on_answer)(struct http_req *r, tw_msg *resp);
    tw_op op;            /* the operation of the call */
    char aux[TW_ID_MAX]; /* per-endpoint scratch (e.g. the action name) */
    http_stream *stream; /* the stream this request became, or NULL */
} http_req;

/* ---- server.c ---- */
void http_graveyard_park(tw_http *h, http_bdata *bd);
/* A fresh correlation id for a request the binding makes (out: TW_ID_MAX). */
void http_new_id(tw_http *h, char *out);
/* A request built in one go (messageID and correlationID from
 * http_new_id, created, senderID; input stolen when not NULL): cheaper than
 * tw_msg_new + tw_msg_set per field. NULL with *problem set (a 400 for an
 * invalid thing id or name, 500 on ENOMEM). */
tw_msg *http_request_new(tw_http *h, tw_op op, const char *thing, const char *name,
                         const char *sender, json_t *input, json_t **problem);
/* The base URL ("https://host:port") for forms, as seen by this request
 * when req is not NULL. */
const char *http_base(tw_http *h);

/* ---- route.c ---- */
enum MHD_Result http_access(void *cls, struct MHD_Connection *mc, const char *url,
                            const char *method, const char *version, const char *upload,
                            size_t *upload_size, void **con_cls);
void http_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                    enum MHD_RequestTerminationCode toe);
void http_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
                     enum MHD_ConnectionNotificationCode toe);
size_t http_unescape_noop(void *cls, struct MHD_Connection *c, char *s);
/* Percent-decodes s in place; returns the new length or -1 when malformed
 * (or when it decodes to a NUL byte). plus: '+' means ' ' (query strings). */
long http_pct_decode(char *s, bool plus);
/* Appends s to out (size n, NUL-terminated) percent-encoded as one path
 * segment (RFC 3986 pchar). */
void http_seg_encode(char *out, size_t n, const char *s);
/* A query argument of the request, decoded into a malloc'd string (NULL if
 * absent). *bad is set when it is malformed. */
char *http_query(http_req *r, const char *key, bool *bad);
const char *http_header(http_req *r, const char *name);
/* true when the Accept header asks for text/event-stream. */
bool http_wants_sse(http_req *r);

/* ---- problem.c (responses) ---- */
/* Queues a JSON response (body stolen; may be NULL for no body). Extra
 * headers as name, value pairs ended by NULL. */
enum MHD_Result http_reply_json(http_req *r, int status, const char *ctype, json_t *body, ...);
enum MHD_Result http_reply_bytes(http_req *r, int status, const char *ctype, const char *bytes,
                                 size_t len, bool copy, ...);
/* Queues resp, a response the caller keeps (it may queue it again). */
enum MHD_Result http_reply_response(http_req *r, int status, struct MHD_Response *resp);
/* An RFC 9457 problem (reference stolen) with the headers its status needs
 * (WWW-Authenticate, Allow, Retry-After). */
enum MHD_Result http_reply_problem(http_req *r, json_t *problem);
enum MHD_Result http_reply_error(http_req *r, int status, const char *slug, const char *title,
                                 const char *detail);
enum MHD_Result http_reply_code(http_req *r, int code, const char *detail);
enum MHD_Result http_reply_405(http_req *r, const char *allow);
enum MHD_Result http_reply_empty(http_req *r, int status, ...);
/* Parses the request body as JSON (within max_depth); on failure queues
 * the 400/415 problem and returns NULL with *res set. ctype_ok: the media
 * types accepted (NULL: application/json), separated by '|'. allow_empty:
 * an empty body gives json null instead of an error. */
json_t *http_body_json(http_req *r, const char *ctype_ok, bool allow_empty, enum MHD_Result *res);

/* ---- authn.c ---- */
/* Verifies the bearer token into r->id. On failure queues the 401 and
 * returns false with *res set. */
bool http_authenticate(http_req *r, enum MHD_Result *res);
enum MHD_Result http_authn_route(http_req *r);

/* ---- call.c: a request that waits for the router's answer ---- */
typedef enum {
    CALL_WAIT_RESPONSE = 0, /* the first response finishes the call */
    CALL_WAIT_FINAL,        /* wait for a final action status (invokeaction) */
} http_call_wait;

struct http_call {
    http_bdata bd;
    tw_http *h;
    pthread_mutex_t mu;
    struct MHD_Connection *mc;
    tw_conn *conn;
    char corr[TW_ID_MAX];
    http_call_wait wait;
    bool suspended, done, timed_out, in_list, busy;
    tw_msg *resp; /* the latest answer (owned) */
    int64_t deadline_us;
    http_call *wnext, *wprev; /* h->waiting */
};

/*
 * Sends m (reference stolen) to the router on behalf of r's identity and
 * waits (suspending the libmicrohttpd connection) for the answer or until
 * wait_ms passed. Returns MHD_YES when the request is now waiting: the
 * access handler is called again after resumption and then calls
 * http_call_finish(). Or queues an error response.
 */
enum MHD_Result http_call_start(http_req *r, tw_msg *m, http_call_wait wait, unsigned wait_ms);
/* On the handler's next invocation: true when the call is complete (or
 * timed out); *resp is the answer (new reference, NULL on timeout). */
bool http_call_ready(http_req *r, tw_msg **resp);
/* Not ready after all: suspends the connection again. */
enum MHD_Result http_call_wait_again(http_req *r);
/* The socket's connection to the router, with r's identity, for a request
 * the binding answers itself (the direct read path). NULL with the answer
 * queued in *res when there is none (no memory, the token expired). */
tw_conn *http_call_conn(http_req *r, enum MHD_Result *res);
/* The request is done with its call (the call stays with the socket). */
void http_call_release(http_req *r);
/* The socket closed: ends its call's connection. */
void http_call_free(tw_http *h, http_call *c);
int http_call_send(tw_http *h, http_call *c, tw_msg *m);
/* Resumes every waiting call whose deadline passed (housekeeper). Returns
 * the earliest remaining deadline (0 = none). */
int64_t http_calls_expire(tw_http *h, int64_t now_us);
void http_calls_abort_all(tw_http *h);
/* Answers with the response's problem when it carries an error. */
bool http_resp_error(http_req *r, tw_msg *resp, enum MHD_Result *res);

/* ---- replay.c: the window of recent stream messages ---- */
typedef enum {
    RP_DIRECT = 0,   /* addressed to one client (responses, action notifications, requests) */
    RP_EVENT = 1,    /* an event notification (subscribers) */
    RP_PROPERTY = 2, /* a property notification (observers) */
} rp_kind;

/* One message as streams see it, encoded once. Refcounted. */
typedef struct rp_item {
    atomic_int refs;
    uint64_t seq;
    rp_kind kind;
    tw_msg *m;
    const char *env; /* tw_msg_encode of m */
    size_t env_len;
    char client[TW_ID_MAX]; /* RP_DIRECT: the client it was sent to */
    /* The complete SSE frames ("id: ..\nevent: ..\ndata: ..\n\n"), built on
     * first use and then shared by every stream: [0] affordance streams
     * (data: the "value" or "output" member, encoded then), [1] /sse (data:
     * the envelope). */
    _Atomic(char *) frame[2];
    size_t frame_len[2];
    size_t bytes; /* what it holds, roughly, for the window's byte bound */
} rp_item;

/* The frame of it for a stream mode (0 affordance, 1 envelope); NULL on ENOMEM. */
const char *rp_item_frame(rp_item *it, int variant, size_t *len);

/* At most window messages and about max_bytes of them. */
int http_replay_new(size_t window, size_t max_bytes, http_replay **out);
void http_replay_free(http_replay *rp);
/* The item of m (one per message: fan-out to N streams shares one), added
 * to the window when first seen. New reference. NULL on ENOMEM. */
rp_item *http_replay_get(http_replay *rp, tw_msg *m, const char *client_id);
void rp_item_unref(rp_item *it);
/* Calls fn for items with seq > after, in order, while fn returns true;
 * call it inside http_replay_locked() (fn must not call back into the
 * window). Returns the seq of the last item fn accepted, or of the newest
 * when all were (items evicted before `after` are skipped). */
uint64_t http_replay_each(http_replay *rp, uint64_t after, bool (*fn)(void *, rp_item *),
                          void *arg);
uint64_t http_replay_last(http_replay *rp);
uint64_t http_replay_last_locked(http_replay *rp); /* inside http_replay_locked() */
/* Runs fn under the window lock (used to start a stream atomically with its
 * replay). */
void http_replay_locked(http_replay *rp, void (*fn)(void *), void *arg);

/* server.c: subscribes the replay recorder, once, when the first stream
 * opens. 0 or TW_ENOMEM. */
int http_recorder_start(tw_http *h);

/* ---- sse.c: streams ---- */
typedef enum {
    SSE_ENVELOPE = 0, /* /sse: event = message type, data = the envelope */
    SSE_AFFORDANCE,   /* /things/{id}/...: event = affordance name, data = value */
    SSE_DIRECTORY,    /* /events: event = thing_created|..., data = {id} / TD / patch */
} sse_mode;

#define SSE_MAX_FILTERS 64
typedef struct sse_filter {
    tw_sub_kind kind;
    char thing[TW_THING_ID_MAX];
    char name[128]; /* "*" = any */
} sse_filter;

struct http_stream {
    http_bdata bd;
    tw_http *h;
    pthread_mutex_t mu;
    struct MHD_Connection *mc;
    tw_conn *conn;
    sse_mode mode;
    char client[TW_ID_MAX];
    char session[TW_ID_MAX];
    sse_filter *filters; /* what the stream subscribed to, for its catch-up */
    int nfilters, capfilters;
    int dir_kinds; /* SSE_DIRECTORY: mask of tw_dir_change_kind */
    bool dir_diff;
    char *buf; /* frames waiting to be written */
    size_t len, off, cap;
    bool suspended, live, overflow, ended, finished;
    bool wake_pending;       /* in the current batch's list of streams to resume */
    bool catchup;            /* replaying from the window: the reader refills */
    uint64_t cursor;         /* catch-up: the last window seq looked at */
    uint64_t live_from;      /* live: items up to this seq were the catch-up's */
    uint64_t last_id;        /* SSE_DIRECTORY: the last change sequence written */
    json_t *dir_pending;     /* SSE_DIRECTORY: changes seen while replaying */
    char capture[TW_ID_MAX]; /* correlationID of a setup request to capture */
    atomic_bool capturing;   /* capture[] is set: check answers against it */
    tw_msg *captured;
    int64_t last_write_us;
    int fd;                   /* the socket, watched for hang-ups; -1 if not */
    http_stream *next, *prev; /* h->streams */
};

/* Opens a stream on request r: creates its tw_conn (identity r->id), lets
 * setup subscribe it (through the router, so authz applies; return a
 * negative TW_E* with *problem to refuse), replays after Last-Event-ID and
 * queues the text/event-stream response. */
typedef int (*sse_setup_fn)(http_req *r, http_stream *s, json_t **problem);
enum MHD_Result http_sse_open(http_req *r, sse_mode mode, sse_setup_fn setup);
int http_sse_send(tw_http *h, http_stream *s, tw_msg *m);
/* The value of an `event:` field for a name: at most 120 bytes, control
 * characters (a CR or LF would end the field) replaced by '_'. */
void http_sse_event_name(const char *in, char out[121]);
/* Appends a preformatted frame (directory notifications). */
int http_sse_push_raw(http_stream *s, uint64_t id, const char *event, const char *data,
                      size_t dlen);
/* Last-Event-ID (header, or ?lastEventId=) as a number. */
bool http_last_event_id(http_req *r, uint64_t *out);
void http_sse_end(http_stream *s, bool error); /* close from our side */
void http_sse_closed(http_stream *s);          /* the request completed */
void http_sse_heartbeat(tw_http *h, int64_t now_us);
void http_sse_end_all(tw_http *h);
/* Batches: while a handler routes a batch of messages (POST /messages), the
 * streams it feeds are resumed once at the end instead of once per message,
 * so each stream writes the whole batch in one go. */
void http_defer_begin(tw_http *h);
void http_defer_end(tw_http *h);
/* Ends streams whose peer hung up (housekeeper). */
void http_sse_reap_hangups(tw_http *h);
/* Re-subscribes s to what the last /sse stream of its session had, if that
 * ended recently (messages.c calls it when a client resumes). */
void http_sse_restore_subs(http_stream *s);
void http_sse_expire_subs(tw_http *h, int64_t now_us, bool all);
void http_sse_close_session(tw_http *h, tw_conn *c);
/* Remembers a subscription of s for matching the replay window (s->mu
 * held). Silently bounded by SSE_MAX_FILTERS. */
void http_sse_add_filter(http_stream *s, tw_op op, const char *thing, const char *name);
/* A subscription through the router for s's connection: 0 or the error
 * (with *problem). */
int http_sse_subscribe(http_stream *s, tw_op op, const char *thing, const char *name,
                       json_t **problem);

/* ---- endpoints ---- */
enum MHD_Result http_things_route(http_req *r);     /* things.c: TDD API */
enum MHD_Result http_search_route(http_req *r);     /* things.c */
enum MHD_Result http_dir_events_route(http_req *r); /* things.c: /events */
enum MHD_Result http_wellknown_route(http_req *r);  /* things.c */
void http_dir_attach(tw_http *h);                   /* things.c: change feed -> streams */
void http_dir_detach(tw_http *h);
enum MHD_Result http_affordance_route(http_req *r); /* affordances.c */
enum MHD_Result http_call_continue(http_req *r);    /* affordances.c / messages.c */
enum MHD_Result http_sse_route(http_req *r);        /* messages.c: GET /sse */
enum MHD_Result http_messages_route(http_req *r);   /* messages.c: POST /messages */
enum MHD_Result http_metrics_route(http_req *r);    /* metrics.c */
enum MHD_Result http_static_route(http_req *r);     /* static.c */
int http_add_forms(tw_binding *b, json_t *td);      /* forms.c */

#endif
