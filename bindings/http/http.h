/*
 * http.h - the HTTPS + SSE binding of twind on libmicrohttpd.
 *
 * One binding serves the WoT HTTP Basic and SSE profiles for every twin
 * (/things/{id}/properties, .../actions, .../events), the W3C WoT Discovery directory
 * API (/things, /search/jsonpath, /events), login (/authn/...), the
 * single-connection mode of agents and applications (GET /sse + POST
 * /messages), /metrics and a placeholder dashboard page (/).
 *
 * twind's main creates it from the "http" section of the configuration:
 *   "https": "0.0.0.0:8444"   (default; null disables) certificate and key
 *                              from <data_dir>/tls/server.pem, server.key
 *   "http": "127.0.0.1:8080"  plain HTTP, refused unless loopback (default off)
 *   "max_body": 1048576       request body bytes
 *   "max_header": 8192        bytes of request line + headers; over it a
 *                              431 problem (beyond twice it, libmicrohttpd
 *                              refuses the request itself, with an HTML page)
 *   "max_connections": 20000  open connections per listener
 *   "idle_timeout_s": 60      idle keep-alive / ordinary request timeout
 *   "stream_queue": 262144    bytes waiting on one SSE stream; overflow closes
 *                              the stream (Last-Event-ID recovers)
 *   "replay_window": 8192     messages kept for Last-Event-ID replay
 *   "replay_bytes": 67108864  ... and at most about this many bytes of them
 *   "heartbeat_s": 15         SSE comment heartbeat period
 *   "action_wait_ms": 2000    how long POST .../actions/{name} waits for the
 *                              output before answering 201 + Location
 *   "threads": 2              libmicrohttpd epoll threads per listener
 *   "public_url": null        base of the hrefs in twin TD forms (default:
 *                              the listener's scheme, host name and port)
 * and, once started, writes the bound ports to <data_dir>/http.port and
 * <data_dir>/https.port (port 0 in the config picks a free port).
 *
 * Who may write the directory through the TDD API: the admin role only;
 * agents publish their own Things with `updatething` (POST /messages).
 *
 * The directory API uses the twin's directory (tw_twin_dir of the twin set
 * with tw_runtime_set_twin); without the twin module the /things directory
 * endpoints answer 503.
 *
 * Thread-safety: tw_http_binding_new is called once from main
 * before the runtime starts. Everything else runs on libmicrohttpd's threads
 * and on the router's callers through tw_binding_ops.
 */
#ifndef TW_HTTP_H
#define TW_HTTP_H

#include "runtime/runtime.h"

/* Creates the binding from the "http" config section (borrowed; may be NULL
 * for the defaults) and registers it with tw_runtime_add_binding(). Errors in
 * the section give TW_EINVAL with a log line naming the member. */
int tw_http_binding_new(tw_runtime *rt, json_t *section, tw_binding **out);

/* The ports actually bound (0 when that listener is off or not started). */
int tw_http_binding_port(tw_binding *b, bool tls);

#endif
