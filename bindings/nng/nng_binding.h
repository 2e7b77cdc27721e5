/*
 * nng_binding.h - twind's nng protocol binding (server side).
 *
 * Listens on nng stream URLs (tls+tcp://, tcp:// on loopback only, ipc://,
 * ws:// on loopback only, wss://) and carries the same envelopes as the HTTP
 * binding, newline-delimited (nng_frame.h). Each accepted stream is one
 * tw_conn with its own identity (set by the router's login handler, or by
 * a client certificate) and its
 * own bounded send queue. Why nng streams and not an SP protocol socket is
 * explained at the top of nng_binding.c.
 *
 * Configuration (the "nng" section of the config file, every member optional):
 *   "listen":           array of URLs, default ["tls+tcp://0.0.0.0:8445"]
 *   "send_queue":       messages queued per connection, default 16384
 *   "send_queue_bytes": bytes queued per connection, default 64 MiB (at
 *                       least twice max_body); past either bound the
 *                       connection is closed as a slow consumer
 *   "write_timeout_ms": a connection whose write makes no progress, or that
 *                       cannot flush its last answer before closing, for
 *                       this long is dropped, default 30000
 *   "max_conns":        open connections at most, default 10000
 *   "login_timeout_ms": an unauthenticated connection is closed after this,
 *                       default 10000
 *   "direct":           tcp:// and ipc:// on the binding's own sockets and
 *                       poller threads (nng_direct.c), default true; false
 *                       puts them on nng streams like the other schemes
 *   "io_threads":       poller threads for those sockets, default 1 below
 *                       4 usable CPUs, else 2
 *   "poll_spin_us":     a poller busy-polls up to this long while its
 *                       traffic comes back that fast, default 100, 0 off
 *                       (nng_direct.c, "Busy polling")
 * TLS listeners use <data_dir>/tls/server.pem and server.key (created by
 * twind's main). On tls+tcp:// a client certificate signed by
 * <data_dir>/tls/ca.pem (twind --issue-cert) authenticates the connection
 * as its client without a login (see nng_binding.c). The bound address of every listener is logged
 * and written, one URL per line, to <data_dir>/nng.url (useful with port 0).
 *
 * Thread-safety: tw_nng_binding_new() is called once from main before the
 * runtime starts; everything else runs through tw_binding_ops.
 */
#ifndef TW_NNG_BINDING_H
#define TW_NNG_BINDING_H

#include "runtime/binding.h"

#include <jansson.h>

/*
 * Creates the binding from its config section (borrowed, may be NULL for the
 * defaults) and registers it with tw_runtime_add_binding(). Listening starts
 * with tw_runtime_start(). Returns TW_EINVAL for a bad section (logged).
 */
int tw_nng_binding_new(tw_runtime *rt, json_t *section, tw_binding **out);

/* The URLs actually bound (after start; port 0 resolved), as a new JSON
 * array of strings. */
json_t *tw_nng_binding_urls(tw_binding *b);

#endif
