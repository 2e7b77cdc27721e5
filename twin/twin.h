/*
 * twin.h - the digital twin: directory + value store + twin TD derivation,
 * plugged into the runtime through the tw_twin_ops table (runtime/twin_ops.h).
 *
 * twind's main does:
 *     tw_twin *twin;
 *     tw_twin_open(rt, &twin);
 *     tw_runtime_set_twin(rt, tw_twin_ops_table(), twin);
 *     ... tw_runtime_stop(rt); tw_twin_close(twin); tw_runtime_free(rt);
 *
 * tw_twin_open() opens the directory (directory.h) and value store
 * (values.h) in tw_runtime_store(rt) with the limits of the config file's
 * optional "twin" section ({"max_things", "max_changes", "max_td_bytes",
 * "max_query_results", "max_values", "value_batch", "value_flush_ms"}),
 * and registers the in-process service Thing "dtw:twind:directory" (tw_router_add_service) with the
 * actions listThings {offset,limit}, getThing {id} and search {type,title,name,agent} or
 * {jsonpath}; its TD is in the directory too.
 *
 * updatething from agent A with TD T (thing id T.id) validates T, keeps it,
 * and stores the twin TD: a copy of T with id "dtw:A:T.id", the runtime's
 * security (bearer PASETO tokens), the agent's forms removed and every
 * binding's forms added (tw_runtime_add_forms) - so open the twin after the
 * bindings are added. Republishing an unchanged TD (agents do on every
 * connect) writes nothing. Deleting a Thing through any API (deletething,
 * the W3C TDD DELETE, expiry) drops its values; a maintenance thread purges
 * expired registrations every second.
 *
 * All functions are thread-safe once open; the ops table's ctx is the tw_twin*.
 */
#ifndef TW_TWIN_TWIN_H
#define TW_TWIN_TWIN_H

#include "runtime/runtime.h"
#include "twin/directory.h"
#include "twin/values.h"

typedef struct tw_twin tw_twin;

#define TW_TWIN_DIRECTORY_ID "dtw:twind:directory"

int tw_twin_open(tw_runtime *rt, tw_twin **out);
/* Flushes the value store and frees the twin. Call after tw_runtime_stop. */
void tw_twin_close(tw_twin *t);

/* The ops table for tw_runtime_set_twin (ctx = the tw_twin*). */
const tw_twin_ops *tw_twin_ops_table(void);

/* The directory and value store, for the bindings (W3C TDD API, metrics). */
tw_dir *tw_twin_dir(tw_twin *t);
tw_values *tw_twin_values(tw_twin *t);

/*
 * Derives the twin TD of an agent's TD (borrowed): a new TD with id
 * "dtw:{agent_id}:{td.id}", the runtime's security definitions, the agent's
 * forms removed and the bindings' forms added (rt may be NULL: no forms are
 * added). TW_EINVAL when td has no string id or the twin id is too long.
 */
int tw_twin_derive(tw_runtime *rt, const char *agent_id, const json_t *agent_td, json_t **twin_td);

#endif
