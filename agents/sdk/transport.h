/*
 * transport.h - how libtwin moves envelopes, independent of the protocol.
 *
 * A transport carries whole envelopes (compact JSON objects) in both
 * directions over one link. The client core (client.c) owns the only
 * instance of a link and uses it from two threads: the I/O thread calls
 * recv(), the writer thread calls send(). shutdown() may be called from any
 * thread and makes both return; free() runs after both threads let go.
 *
 * The socket transport (transport_sock.c) carries tcp:// and ipc:// over
 * plain POSIX sockets with newline-delimited JSON; the nng transport
 * (transport_nng.c) carries the same lines over an nng byte stream for
 * tls+tcp://, ws:// and wss:// (and tcp4://, tcp6://, abstract://). An
 * HTTPS+SSE transport would map send() onto POSTs of the runtime's HTTP
 * binding (one per envelope, or a batch endpoint) and recv() onto the SSE
 * stream plus the POST responses: nothing in libtwin.h would change.
 */
#ifndef TW_SDK_TRANSPORT_H
#define TW_SDK_TRANSPORT_H

#include "libtwin.h"

#include <stddef.h>

typedef struct tw_transport tw_transport;

typedef struct tw_transport_ops {
    const char *name;
    /* Whether this transport handles the URL's scheme. */
    bool (*accepts)(const char *url);
    /* Opens a link (blocking, at most timeout_ms). */
    int (*connect)(const tw_client_opts *o, int timeout_ms, tw_transport **out);
    /* Sends buf: one or more envelopes, each followed by '\n'. Blocking until
     * written; TW_ECLOSED/TW_EIO when the link is gone. */
    int (*send)(tw_transport *t, const char *buf, size_t len);
    /* The same, and *sent: the bytes handed on before it failed (len on
     * success), so the caller knows which envelopes never left whole. */
    int (*send_n)(tw_transport *t, const char *buf, size_t len, size_t *sent);
    /* The next envelope (without its '\n'); *line stays valid until the next
     * recv. Blocking; TW_ECLOSED when the link is gone. */
    int (*recv)(tw_transport *t, const char **line, size_t *len);
    /* Makes send and recv return (any thread, idempotent). */
    void (*shutdown)(tw_transport *t);
    void (*free)(tw_transport *t);
} tw_transport_ops;

/* The longest line a transport's recv() accepts; a longer one fails with
 * TW_ETOOBIG (the runtime never sends one: its own limit is max_body). */
#define TW_SOCK_MAX_LINE (64u * 1024u * 1024u)

/* The transports' receive buffer (linebuf.c). */
typedef struct tw_linebuf {
    char *buf;
    size_t len, cap, off; /* bytes in buf, capacity, start of unconsumed data */
    size_t scan;          /* bytes after off already known to hold no '\n' */
} tw_linebuf;

int tw_linebuf_init(tw_linebuf *b); /* TW_ENOMEM */
void tw_linebuf_free(tw_linebuf *b);
/* 1: the next line (without its '\n'; empty lines are skipped), valid until
 * the next call. 0: read more, into buf + len, up to cap (at least
 * TW_NNG_RECV_CHUNK bytes are free), then call again. TW_ETOOBIG: a line
 * longer than TW_SOCK_MAX_LINE; TW_ENOMEM. */
int tw_linebuf_next(tw_linebuf *b, const char **line, size_t *len);

extern const tw_transport_ops tw_transport_nng;
extern const tw_transport_ops tw_transport_sock;

/* The transport for a URL, or NULL: tcp:// and ipc:// go to the socket
 * transport, the other nng schemes to the nng transport. */
const tw_transport_ops *tw_transport_for(const char *url);

#endif
