/*
 * nng_tls.h - a GnuTLS engine for nng's TLS streams, so the nng binding can
 * see who a client certificate names.
 *
 * nng 1.5.2 (Debian's build, over mbedTLS) only says whether a peer was
 * verified (NNG_OPT_TLS_VERIFIED); it has no option that returns the peer's
 * certificate or its CN (NNG_OPT_TLS_PEER_CN arrived in nng 1.6). Verified
 * alone is useless for mutual TLS: every client certificate of the CA
 * verifies, so it cannot tell clients apart. nng does let a program plug in
 * its own TLS library (nng/supplemental/tls/engine.h), and this module is
 * such an engine over GnuTLS, the library the HTTP binding already uses.
 * It handles every nng TLS stream of the process from then on, client and
 * server side (a process-wide nng setting, like the mbedTLS engine it
 * replaces); nng_tls_config objects made before keep the old engine.
 *
 * The binding asks to be told when a server stream's handshake completes
 * (tw_nng_tls_watch); the callback gets the peer's certificate chain (DER,
 * leaf first, NULL/0 when it sent none) and checks it with the same
 * tw_tls_verifier as the HTTP binding, so both bindings map a certificate
 * to a client the same way.
 *
 * The callback runs on an nng thread that holds the stream's lock, before
 * any data of the stream is delivered (so an identity set there is in place
 * before the first envelope is routed). It must not send on, close or free
 * that stream.
 *
 * Thread-safety: all functions may be called from any thread.
 */
#ifndef TW_NNG_TLS_H
#define TW_NNG_TLS_H

#include "runtime/tw.h"

#include <gnutls/gnutls.h>
#include <nng/nng.h>

/* Makes the GnuTLS engine nng's TLS engine for this process (idempotent). */
int tw_nng_tls_engine_use(void);

typedef void (*tw_nng_tls_peer_fn)(void *arg, uint64_t key, const gnutls_datum_t *chain,
                                   unsigned n);

/*
 * Calls fn(arg, key, chain, n) once, when the handshake of st (a stream of a
 * tls+tcp or wss:// listener whose config was made by this engine)
 * completes; at once, on this thread, if it already has (always for wss://:
 * the websocket upgrade came over TLS). TW_ENOTFOUND when st is not such a
 * stream. fn is not called after the stream is freed.
 */
int tw_nng_tls_watch(nng_stream *st, tw_nng_tls_peer_fn fn, void *arg, uint64_t key);

#endif
