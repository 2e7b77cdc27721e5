/*
 * nng_frame.h - the wire format of twind's nng binding, shared by the server
 * (bindings/nng) and libtwin's nng transport (agents/sdk).
 *
 * A connection is one nng byte stream (tcp, tls+tcp, ipc, ws or wss) carrying
 * newline-delimited JSON: every envelope (DESIGN.md section 2) is one compact
 * JSON object followed by a single '\n'. Compact JSON never contains a raw
 * newline (newlines inside strings are escaped by JSON itself), so the
 * receiver finds message boundaries with memchr and never scans inside JSON.
 *
 * Batching is free: a sender that has several envelopes ready writes them in
 * one stream send ("a\nb\nc\n"), and the receiver cannot tell the difference
 * from three sends. The server concatenates the shared, once-encoded bytes of
 * each tw_msg (tw_msg_encode) without re-encoding them.
 *
 * Limits: a line is at most the runtime's max_body (1 MiB by default; a longer
 * line gets a 413 problem and the connection is closed, since the stream
 * cannot be resynchronised cheaply); empty lines are ignored.
 *
 * Login: the first request must be `login` with input {"login","password"}
 * or {"token"}, and optionally "since": the inbox cursor of the last replayed
 * notification this client has seen. After a successful login the router
 * drops inbox entries up to `since` and replays the later ones, each carrying
 * its cursor in the extra envelope member "inboxSeq" (an integer).
 */
#ifndef TW_NNG_FRAME_H
#define TW_NNG_FRAME_H

/* Bytes asked from the stream per receive. */
#define TW_NNG_RECV_CHUNK (64u * 1024u)
/* At most this many bytes are gathered into one stream send. */
#define TW_NNG_BATCH_MAX (256u * 1024u)
/* The extra envelope member carrying an inbox replay cursor. */
#define TW_NNG_CURSOR_FIELD "inboxSeq"
/* Default port of the TLS listener. */
#define TW_NNG_DEFAULT_URL "tls+tcp://0.0.0.0:8445"

#endif
