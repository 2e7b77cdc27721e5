/*
 * json_enc.h - a fast compact JSON encoder for Jansson values.
 *
 * Every message is encoded once and then shared, but that one encoding is
 * still on the path of every event, so it matters: Jansson's json_dumps
 * goes through a callback per fragment and escapes strings byte by byte.
 * This encoder appends straight into one growing buffer, copies runs of
 * plain characters with memcpy and formats integers by hand. The output is
 * the same compact JSON (insertion order, "/" not escaped, non-ASCII kept as
 * UTF-8) except that reals use the shorter of 15 or 17 significant digits
 * that read back exactly (0.1, not 0.10000000000000001).
 *
 * Thread-safe (no shared state). The result is malloc'd and owned by the
 * caller.
 */
#ifndef TW_JSON_ENC_H
#define TW_JSON_ENC_H

#include <jansson.h>
#include <stddef.h>

/* Encodes v; returns NULL for NULL, on allocation failure or nesting deeper
 * than 2048. *len (may be NULL) gets the length without the terminating NUL.
 * jansson 2.14's json_dumps guards against cycles with a hash table of every
 * container it enters, most of its cost on TD-sized trees; trees from the
 * parser cannot be cyclic, so this encoder only bounds the depth. */
char *tw_json_encode(const json_t *v, size_t *len);

#endif
