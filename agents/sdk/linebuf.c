/*
 * linebuf.c - the receive buffer of libtwin's transports: bytes are read
 * into its free tail, newline-delimited envelopes are handed out of it one
 * at a time (bindings/nng/nng_frame.h). Shared by transport_sock.c and
 * transport_nng.c, which differ only in how they read.
 */
#include "transport.h"

#include "bindings/nng/nng_frame.h"

#include <stdlib.h>
#include <string.h>

int tw_linebuf_init(tw_linebuf *b)
{
    memset(b, 0, sizeof *b);
    b->cap = TW_NNG_RECV_CHUNK * 2;
    b->buf = malloc(b->cap);
    return b->buf ? 0 : TW_ENOMEM;
}

void tw_linebuf_free(tw_linebuf *b)
{
    free(b->buf);
    memset(b, 0, sizeof *b);
}

int tw_linebuf_next(tw_linebuf *b, const char **line, size_t *len)
{
    for (;;) {
        char *nl = memchr(b->buf + b->off + b->scan, '\n', b->len - b->off - b->scan);
        if (!nl) break;
        *line = b->buf + b->off;
        *len = (size_t)(nl - *line);
        b->off += *len + 1;
        b->scan = 0;
        if (*len == 0 || (*len == 1 && (*line)[0] == '\r')) continue; /* empty lines */
        return 1;
    }
    b->scan = b->len - b->off; /* no newline there: not scanned again */
    if (b->scan > TW_SOCK_MAX_LINE) return TW_ETOOBIG;
    if (b->off > 0 && b->off == b->len) {
        b->off = b->len = 0;
    } else if (b->off > 0 && b->cap - b->len < TW_NNG_RECV_CHUNK) {
        memmove(b->buf, b->buf + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->cap - b->len < TW_NNG_RECV_CHUNK) {
        char *nb = realloc(b->buf, b->cap * 2);
        if (!nb) return TW_ENOMEM;
        b->buf = nb;
        b->cap *= 2;
    }
    return 0;
}
