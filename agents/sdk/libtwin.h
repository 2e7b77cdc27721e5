/*
 * libtwin.h - the C client library of twind, for agents (devices and
 * services that publish Things) and consumers (dashboards, scripts).
 *
 * One handle, tw_client, is one logical connection to a runtime. It connects
 * out (so agents work behind NAT), logs in with a password or a token, and
 * keeps itself connected: when the link drops it reconnects with exponential
 * backoff and jitter, logs in again, re-subscribes, re-publishes the agent's
 * TDs and latest property values, and asks the runtime to replay the inbox
 * (action statuses that arrived while it was away) from its cursor.
 *
 * Transports: the URL scheme picks one, all with the wire format of
 * bindings/nng/nng_frame.h: tcp:// and ipc:// on plain sockets (one thread
 * wake-up per arriving envelope), tls+tcp://, ws:// and wss:// on nng
 * streams; the transport interface (transport.h) lets an HTTPS+SSE
 * transport be added without changing this API.
 *
 * Errors: every fallible call returns 0 or a negative TW_E* code of
 * runtime/tw.h (tw_strerror names them). A request the runtime refused also
 * hands back its RFC 9457 problem where the call has a `problem` out
 * parameter.
 *
 * Ownership: JSON passed in is borrowed (the library takes its own
 * reference) unless the parameter says "stolen"; JSON handed out through out
 * parameters is a new reference the caller must json_decref(). JSON passed to
 * callbacks is borrowed for the duration of the callback.
 *
 * Threading model: every function is thread-safe, with the one rule of
 * tw_client_close (no other call of the client may be under way or follow).
 * A client runs three threads of its own: an I/O thread (connect, login,
 * read and route incoming envelopes), a writer thread (batches everything
 * queued into few large writes; a request or answer that finds nothing
 * queued is written by the calling thread itself), and a callback thread
 * that runs every user callback - state changes, event and property
 * notifications, asynchronous action statuses and agent request handlers -
 * one at a time, in arrival order. Callbacks may call any libtwin function
 * but tw_client_close, including the synchronous ones (those wait on their
 * own condition, which the I/O thread signals; meanwhile the I/O thread
 * keeps reading, queueing callbacks past the bound of 65536 at which it
 * otherwise waits for the callback thread), but a long callback delays the
 * ones behind it: hand long work to another thread and answer the request
 * from there (tw_req_* may be called from any thread, later, even after
 * tw_client_close). With opts.dispatch_inline, request handlers,
 * notifications and action statuses run on the I/O thread as their
 * envelope is read; state changes and the final status of an asynchronous
 * call's local timeout may still run on the callback thread. All callbacks
 * stay one at a time, in order: lower latency, but no synchronous calls of
 * the same client from inside them.
 *
 * Delivery rules: nothing is resent silently. An envelope still queued when
 * the link drops is dropped: events and property values are stale by then
 * (property values are re-published on reconnect anyway), requests fail with
 * TW_EOFFLINE. An action that was sent keeps waiting across a reconnect for
 * its status (the runtime delivers it live or from the inbox) until its
 * timeout. Agent answers are the exception: an answer given while
 * disconnected waits in the queue and leaves after the next login, so a
 * consumer still hears the outcome of an action that did run. A write the
 * link's end cuts short counts as not sent for every envelope that did not
 * leave whole: such a request fails with TW_EOFFLINE (returned by the call,
 * or an asynchronous action's final `failed`), such an answer leaves on the
 * next link. An envelope written whole counts as sent, though a link reset
 * right after may still lose it in the network: a request then waits for
 * its timeout (an asynchronous one without a timeout until close).
 */
#ifndef TW_LIBTWIN_H
#define TW_LIBTWIN_H

#include "runtime/tw.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct tw_client tw_client;

typedef enum {
    TW_CLIENT_DISCONNECTED = 0, /* waiting to (re)connect */
    TW_CLIENT_CONNECTING,       /* link up, logging in */
    TW_CLIENT_CONNECTED,        /* logged in: requests flow */
    TW_CLIENT_AUTH_FAILED,      /* the runtime refused the credentials: 400, 401 or 403
                                   (retrying slowly); another refusal of the login (a 503
                                   while it starts) is retried as DISCONNECTED */
    TW_CLIENT_CLOSED,           /* tw_client_close() was called */
} tw_client_state;

const char *tw_client_state_name(tw_client_state s);

typedef void (*tw_client_state_fn)(void *arg, tw_client *c, tw_client_state state);

typedef struct tw_action_result tw_action_result;
typedef void (*tw_action_fn)(void *arg, tw_client *c, const tw_action_result *res);

typedef struct tw_client_opts {
    const char *url;         /* required: "tls+tcp://host:8445", "ipc:///run/twind.sock", ... */
    const char *ca_file;     /* PEM CA that signed the server certificate (TLS URLs) */
    const char *server_name; /* TLS name to verify; default: the URL's host */
    const char *client_id;   /* login */
    const char *password;    /* password login, or: */
    const char *token;       /* a token, or: */
    const char *token_file;  /* a file holding a token (read at every login) */
    int connect_timeout_ms;  /* default 5000 */
    int request_timeout_ms;  /* default for synchronous calls, default 10000 */
    int reconnect_min_ms;    /* first backoff, default 100 */
    int reconnect_max_ms;    /* backoff cap, default 15000 */
    int send_queue;          /* envelopes queued for sending, default 65536 */
    int send_block_ms;       /* how long a publish waits on a full queue, default 2000 */
    int keepalive_ms;        /* a ping after this long without traffic, default 10000; a link silent
                                for twice as long is dropped and re-made; -1: never */
    int64_t inbox_cursor;    /* the inbox cursor to resume from (0: everything unseen) */
    /* Run callbacks on the I/O thread as soon as their envelope is read,
     * saving a thread hand-off (for latency-bound agents); state changes
     * and local timeouts' statuses may still come on the callback thread
     * (one at a time with the others all the same). Callbacks then must
     * not call the synchronous functions of the same client (they would
     * wait for the thread that runs them); tw_req_* and the asynchronous
     * and publishing functions are fine. Default false. */
    bool dispatch_inline;
    tw_client_state_fn on_state; /* may be NULL; runs on the callback thread (or the I/O
                                    thread, see dispatch_inline) */
    void *state_arg;
    /* Action statuses no call of this client waits for: those of actions
     * invoked before a restart, replayed from the inbox after the login,
     * and those arriving after a synchronous call timed out
     * (res->action_id names the action). May be NULL. Callback thread. */
    tw_action_fn on_action_status;
    void *action_status_arg;
    /* Mutual TLS (tls+tcp:// and wss:// URLs): a client certificate and
     * its key, PEM files (`twind --issue-cert ID` writes both). The runtime
     * then knows the client from the TLS handshake: no password, token or
     * login is needed (the other credentials may stay NULL). */
    const char *cert_file;
    const char *key_file;
} tw_client_opts;

/* Creates a client and starts connecting in the background. opts is copied. */
int tw_client_new(const tw_client_opts *opts, tw_client **out);
/* Stops the threads, fails every pending call with TW_ECLOSED (async ones
 * hear it through their callback, run before this returns), frees. Must
 * not be called from a callback of the same client, nor while another
 * thread is inside (or may still enter) a function of c: c is gone when
 * this returns. The one exception are requests (tw_req) a handler kept:
 * they stay valid, answering one returns TW_ECLOSED and frees it (the
 * client's last memory goes with the last of them). */
void tw_client_close(tw_client *c);

tw_client_state tw_client_get_state(tw_client *c);
/* Waits until the client is CONNECTED (0) or timeout_ms passed (TW_ETIMEDOUT). */
int tw_client_wait_connected(tw_client *c, int timeout_ms);
/* The client id the runtime authenticated ("" before the first login). */
void tw_client_get_id(tw_client *c, char out[TW_ID_MAX]);
/* The last inbox cursor seen (persist it to resume after a restart). */
int64_t tw_client_inbox_cursor(tw_client *c);
/* Drops the current link on purpose (tests, network change); the client
 * reconnects by itself. */
void tw_client_disconnect(tw_client *c);

/* Counters, for benchmarks and health pages. writer_wakeups: how often
 * the writer thread woke up (to write a batch, or to find nothing to do);
 * a round trip written by its caller (the fast path) does not wake it. */
typedef struct tw_client_stats {
    uint64_t sent, received, batches, dropped, reconnects, writer_wakeups;
} tw_client_stats;
void tw_client_get_stats(tw_client *c, tw_client_stats *out);

/*
 * A raw request: envelope is an object with at least "operation" (type
 * "request", messageID, correlationID and created are filled in). Waits for
 * the response; *response (may be NULL) gets it, a new reference. Returns
 * the TW_E* code of a failed response (its problem is in "error").
 */
int tw_client_request(tw_client *c, json_t *envelope, int timeout_ms, json_t **response);

/*
 * Sends an envelope exactly as given (reference borrowed), without waiting
 * for anything: for tools and tests that speak the protocol directly.
 */
int tw_client_send_raw(tw_client *c, json_t *envelope);

/* ---- agent side ------------------------------------------------------- */

/*
 * Publishes (updatething) a TD; td["id"] is the agent's own thing id. The TD
 * is kept and re-published after every reconnect. Waits for the runtime's
 * answer; *twin_id (may be NULL) gets the twin id, malloc'd.
 */
int tw_agent_publish_td(tw_client *c, json_t *td, char **twin_id, json_t **problem);
/* Removes a published TD (deletething) and forgets it (and its property
 * values) at once, so it is not re-published. While disconnected this
 * returns TW_EOFFLINE and the runtime keeps the TD: call it again once
 * connected. */
int tw_agent_delete_td(tw_client *c, const char *thing_id);

/*
 * Publishes an event or a property value (value borrowed). Non-blocking
 * unless the send queue is full (then waits up to send_block_ms). Fast
 * publishers are batched automatically. Returns TW_EOFFLINE while
 * disconnected (the latest property values are kept and re-published on
 * reconnect; events are dropped, as the runtime never queues them).
 */
int tw_agent_publish_event(tw_client *c, const char *thing_id, const char *name, json_t *value);
int tw_agent_publish_property(tw_client *c, const char *thing_id, const char *name, json_t *value);

/* An incoming request (invokeaction or writeproperty) for one of our Things. */
typedef struct tw_req tw_req;

const char *tw_req_thing(const tw_req *r);     /* the agent's own thing id */
const char *tw_req_name(const tw_req *r);      /* action or property */
const char *tw_req_sender(const tw_req *r);    /* the consumer that asked */
const char *tw_req_action_id(const tw_req *r); /* the runtime's action id */
bool tw_req_is_write(const tw_req *r);         /* writeproperty, not invokeaction */
json_t *tw_req_input(const tw_req *r);         /* borrowed; may be NULL */
/* Set when the consumer cancelled the action (the handler may stop early). */
bool tw_req_cancelled(const tw_req *r);

/*
 * Answers. Any thread, any time after the handler ran. progress may be
 * called several times (status "running", output optional); complete or
 * fail once: when that returns 0 (the answer is queued; one given while
 * disconnected leaves after the next login) or TW_ECLOSED, r is freed. On
 * any other error nothing was sent and r stays the caller's, to answer
 * again: TW_EINVAL (output or detail not valid UTF-8), TW_EFULL (the send
 * queue stayed full for send_block_ms), TW_ENOMEM. output borrowed.
 */
int tw_req_progress(tw_req *r, json_t *output);
int tw_req_complete(tw_req *r, json_t *output);
/* Fails with a problem built from code (a TW_E*) and detail. */
int tw_req_fail(tw_req *r, int code, const char *detail);

/*
 * A handler for requests to (thing_id, name); either may be "*". Runs on the
 * callback thread. It owns r: answer now or keep r and answer later.
 */
typedef void (*tw_req_fn)(void *arg, tw_client *c, tw_req *r);
int tw_agent_on_action(tw_client *c, const char *thing_id, const char *name, tw_req_fn fn,
                       void *arg);
int tw_agent_on_write(tw_client *c, const char *thing_id, const char *name, tw_req_fn fn,
                      void *arg);

/* ---- consumer side ---------------------------------------------------- */

/* The directory (the built-in service Thing dtw:twind:directory). */
#define TW_DIRECTORY_ID "dtw:twind:directory"
/* *out: the runtime's listing (an array of twin TDs, or an object with them). */
int tw_consumer_list_things(tw_client *c, int offset, int limit, json_t **out);
int tw_consumer_get_thing(tw_client *c, const char *twin_id, json_t **td);
/* query: an object such as {"title": "..."} or {"jsonpath": "$..."}. */
int tw_consumer_search(tw_client *c, json_t *query, json_t **out);

/* The last known value from the runtime's value store (*value: new ref). */
int tw_consumer_read_property(tw_client *c, const char *twin_id, const char *name, json_t **value);
int tw_consumer_read_all_properties(tw_client *c, const char *twin_id, json_t **values);
int tw_consumer_read_event(tw_client *c, const char *twin_id, const char *name, json_t **value);

/* Notifications: thing_id and name may be NULL or "*". The callback gets the
 * twin id, affordance name, value and the envelope (for timestamps). */
typedef void (*tw_notify_fn)(void *arg, tw_client *c, const char *twin_id, const char *name,
                             json_t *value, json_t *envelope);
/* Subscribes (waits for the runtime's answer; re-done after reconnects).
 * *sub_id (may be NULL) identifies the subscription for unsubscribe. */
int tw_consumer_subscribe_event(tw_client *c, const char *twin_id, const char *name,
                                tw_notify_fn fn, void *arg, int *sub_id);
int tw_consumer_observe_property(tw_client *c, const char *twin_id, const char *name,
                                 tw_notify_fn fn, void *arg, int *sub_id);
/* Ends a subscription: notifications for it still queued for the callback
 * thread are dropped, so fn hears nothing more once this returns, except a
 * callback already under way on another thread (called from fn itself, or
 * from any callback of the callback thread, nothing at all). */
int tw_consumer_unsubscribe(tw_client *c, int sub_id);

/*
 * The same subscriptions for high-rate consumers: the callback gets a view
 * of the notification instead of its envelope as a JSON tree. libtwin reads
 * the header fields without building a tree and decodes the value only
 * when tw_notification_value() asks for it, so a callback that only counts,
 * reads the header or forwards the raw text costs no JSON decoding of the
 * value. The view and
 * everything it hands out are borrowed for the duration of the callback.
 * tw_consumer_unsubscribe() ends them like the others.
 */
typedef struct tw_notification tw_notification;
typedef void (*tw_notification_fn)(void *arg, tw_client *c, const tw_notification *n);
int tw_consumer_subscribe_event_view(tw_client *c, const char *twin_id, const char *name,
                                     tw_notification_fn fn, void *arg, int *sub_id);
int tw_consumer_observe_property_view(tw_client *c, const char *twin_id, const char *name,
                                      tw_notification_fn fn, void *arg, int *sub_id);
const char *tw_notification_thing(const tw_notification *n); /* the twin id */
const char *tw_notification_name(const tw_notification *n);
bool tw_notification_is_property(const tw_notification *n);
/* The value, decoded on the first call (json null when the envelope has none). */
json_t *tw_notification_value(const tw_notification *n);
/* The value's JSON text as it arrived (compact), without decoding it; NULL
 * when it is not at hand that way (use tw_notification_value). Not
 * NUL-terminated: *len bytes. */
const char *tw_notification_value_text(const tw_notification *n, size_t *len);
/* The "timestamp" member (RFC 3339), or NULL. */
const char *tw_notification_timestamp(const tw_notification *n);
/* The whole envelope, built on the first call (NULL on allocation failure). */
json_t *tw_notification_envelope(const tw_notification *n);

/* The outcome or progress of an action. */
struct tw_action_result {
    tw_status status;
    char action_id[TW_ID_MAX];
    json_t *output; /* borrowed in callbacks, new ref from tw_consumer_invoke */
    json_t *error;  /* RFC 9457 problem when failed */
};
void tw_action_result_clear(tw_action_result *r); /* drops output and error */

/*
 * Invokes an action and waits for its final status (completed, failed,
 * expired, cancelled) or timeout_ms (<= 0: request_timeout_ms). Returns 0
 * when the action completed, the error of a failed one, TW_ETIMEDOUT when
 * no final status came in time (res then holds the last status seen, e.g.
 * queued). res may be NULL. input borrowed (TW_EINVAL if a string in it
 * is not valid UTF-8).
 * The request says "progress": false: for an action delivered to a
 * connected agent the runtime sends no `delivered` and no `running`, only
 * the outcome (one message instead of two on the round trip); if the action
 * is still running at the runtime's next sweep (sweep_ms, 1 s by default)
 * it sends `delivered` then. A call that times out before any status named
 * the action asks the runtime which action it started (a queryaction with
 * input {"correlationID": ...}) and waits for the answer up to timeout_ms
 * more (at least 100 ms, at most 1 s; normally one round trip): on
 * TW_ETIMEDOUT res->action_id then names the action (res->status is its
 * stored status, unless that is final) for tw_consumer_query_action or
 * tw_consumer_cancel, unless the runtime no longer had it live; its later
 * statuses go to opts.on_action_status. If the outcome arrives meanwhile
 * (the runtime may answer that the action is already final: its outcome is
 * then on its way and is waited for), it is returned as if in time. tw_consumer_invoke_async
 * reports every status.
 */
int tw_consumer_invoke(tw_client *c, const char *twin_id, const char *name, json_t *input,
                       int timeout_ms, tw_action_result *res);
/*
 * Invokes asynchronously: fn runs on the callback thread for every status
 * (delivered, queued, running, ...) and last for the final one; it is never
 * called again after a final status. timeout_ms <= 0 means no local timeout
 * (the runtime's expiry still applies); on a local timeout fn gets status
 * failed with action_id as known and error NULL.
 */
int tw_consumer_invoke_async(tw_client *c, const char *twin_id, const char *name, json_t *input,
                             int timeout_ms, tw_action_fn fn, void *arg);
/* writeproperty, same semantics as tw_consumer_invoke. */
int tw_consumer_write_property(tw_client *c, const char *twin_id, const char *name, json_t *value,
                               int timeout_ms, tw_action_result *res);
/* Cancels an action by its id (TW_ECONFLICT if it already finished). */
int tw_consumer_cancel(tw_client *c, const char *action_id);
/* The status of an action as the runtime keeps it (*status: new ref). */
int tw_consumer_query_action(tw_client *c, const char *action_id, json_t **status);

#endif
