/*
 * queue.h - durable action records, the offline action queue and the
 * per-consumer inbox (DESIGN.md section 3), all in SQLite through tw_store.
 *
 * Every action (invokeaction or writeproperty) the runtime accepts gets a row
 * in `actions` with its status history:
 *   - delivered straight to an online agent: tw_queue_record(), write-behind
 *     (a live round trip never waits for an fsync);
 *   - queued for an offline agent: tw_queue_push(), whose done callback runs
 *     only after the row is committed with synchronous=FULL. The sender may be
 *     told `queued` only from that callback.
 * Queued rows are drained per agent in sequence order (tw_queue_fetch). Queued
 * writeproperty rows for the same (thing, name) are coalesced: the older row
 * becomes `cancelled` and the push reports its id in `superseded_id` so the
 * router can notify its sender.
 *
 * Nothing of the queue is held in memory: fetches are paged.
 *
 * The inbox holds notifications for a client that had no live connection;
 * each entry has a per-database increasing sequence used as replay cursor.
 *
 * tw_action values returned to the caller are owned by the caller
 * (tw_action_free / tw_action_list_free). All functions are thread-safe.
 */
#ifndef TW_QUEUE_H
#define TW_QUEUE_H

#include "msg.h"
#include "store.h"

typedef struct tw_queue tw_queue;

typedef struct tw_action {
    char id[TW_ID_MAX];   /* action id, unguessable */
    char *thing_id;       /* twin id, dtw:{agent}:{thing} */
    char *agent_id;       /* the agent that owns the Thing */
    char *sender_id;      /* the client that asked */
    char *name;           /* action or property name */
    char *correlation_id; /* the sender's correlationID, may be NULL */
    tw_op op;             /* TW_OP_INVOKEACTION or TW_OP_WRITEPROPERTY */
    json_t *input;        /* may be NULL */
    json_t *output;       /* may be NULL */
    json_t *error;        /* RFC 9457 problem, may be NULL */
    tw_status status;
    int64_t created_ms;
    int64_t updated_ms;
    int64_t expires_ms; /* 0 = never (only for delivered actions) */
    int64_t seq;        /* queue order, set by push */
} tw_action;

void tw_action_free(tw_action *a);
void tw_action_list_free(tw_action *list, int n);
/* The status of an action as a JSON object (id, thingID, name, status,
 * output/error, created, updated, expires), new reference. */
json_t *tw_action_json(const tw_action *a);

int tw_queue_open(tw_store *s, tw_queue **out);
void tw_queue_close(tw_queue *q);

/* Result of a durable push, handed to done after the commit. */
typedef struct tw_queue_push_result {
    int rc; /* 0, or why it was not stored */
    int64_t seq;
    char superseded_id[TW_ID_MAX]; /* coalesced writeproperty, "" if none */
} tw_queue_push_result;
typedef void (*tw_queue_push_done)(void *arg, const tw_queue_push_result *res);

/*
 * Queues a copy of a (status set to `queued`). done runs on the store's writer
 * thread once the row is durable (or failed); it must not block.
 */
int tw_queue_push(tw_queue *q, const tw_action *a, tw_queue_push_done done, void *arg);

/* Records an action delivered directly (write-behind, does not wait). */
int tw_queue_record(tw_queue *q, const tw_action *a);

/* Moves an action's status on and appends to its history (write-behind);
 * output and error may be NULL (borrowed). TW_ECONFLICT if it is final. */
int tw_queue_update(tw_queue *q, const char *action_id, tw_status st, json_t *output,
                    json_t *error);
/* The same for a caller that knows the row's seq (a fetched action's): the
 * write finds the row by it, cheaper than by id. seq <= 0: unknown. */
int tw_queue_update_seq(tw_queue *q, const char *action_id, int64_t seq, tw_status st,
                        json_t *output, json_t *error);

/*
 * The status each of actions[0..n) (by id) will have once every change
 * decided so far is committed, into out[i]: a cancel, a failure or an
 * answer counts as soon as it was decided, before its write is committed.
 * TW_STATUS_NONE for an id that has no row. One look at the in-memory map
 * for the lot; an id it does not know costs a read. On an error the other
 * entries are still filled.
 */
int tw_queue_status(tw_queue *q, const tw_action *actions, int n, tw_status *out);

/*
 * Claims up to max queued rows of agent_id in order, after seq `after`, whose
 * expiry has not passed, and marks them `delivered` (write-behind). *out is a
 * new array of *n actions.
 */
int tw_queue_fetch(tw_queue *q, const char *agent_id, int64_t after, int max, tw_action **out,
                   int *n);

/* One action by id (TW_ENOTFOUND). */
int tw_queue_get(tw_queue *q, const char *action_id, tw_action **out);
/* The status history of an action: array of {status, time}. */
int tw_queue_history(tw_queue *q, const char *action_id, json_t **out);
/* Actions of a thing (newest first, at most limit); sender_id may be NULL for all. */
int tw_queue_list(tw_queue *q, const char *thing_id, const char *sender_id, int limit,
                  tw_action **out, int *n);

/* Cancels a queued or delivered action (TW_ECONFLICT if final). */
int tw_queue_cancel(tw_queue *q, const char *action_id, tw_action **out);

/* Expires queued rows whose time has passed; cb is called (in the calling
 * thread) for each with the row now `expired`. */
typedef void (*tw_queue_action_cb)(void *arg, const tw_action *a);
int tw_queue_expire(tw_queue *q, int64_t now_ms, tw_queue_action_cb cb, void *arg);
/* Fails every unfinished action of a deleted thing; cb per action. */
int tw_queue_fail_thing(tw_queue *q, const char *thing_id, json_t *problem, tw_queue_action_cb cb,
                        void *arg);

/* Deletes finished actions (completed, failed, expired, cancelled) created
 * before older_than_ms, with their history, oldest first, at most max_pages
 * pages of 512 rows per call; *deleted (may be NULL) counts them. Blocking
 * (commits through the writer); the sweeper calls it now and then. */
int tw_queue_prune(tw_queue *q, int64_t older_than_ms, int max_pages, int *deleted);

/* Number of queued rows (agent_id NULL: all agents). */
int tw_queue_depth(tw_queue *q, const char *agent_id, int64_t *n);

/* Inbox: appends a notification for client_id (write-behind); *seq may be NULL. */
int tw_inbox_append(tw_queue *q, const char *client_id, tw_msg *m, int64_t *seq);
/* Calls cb for each inbox entry of client_id with seq > after, in order. */
typedef void (*tw_inbox_cb)(void *arg, int64_t seq, tw_msg *m);
int tw_inbox_replay(tw_queue *q, const char *client_id, int64_t after, tw_inbox_cb cb, void *arg);
/* Drops entries of client_id with seq <= upto (the client has seen them). */
int tw_inbox_ack(tw_queue *q, const char *client_id, int64_t upto);

#endif
