/*
 * json_fast.h - deep copy and fast decoding of jansson trees, without
 * jansson's per-container cycle check (encoding: runtime/json_enc.h).
 *
 * jansson 2.14 guards json_deep_copy() and json_dumps() against cycles by
 * recording every container it enters in a hash table keyed by the printed
 * pointer, which is most of their cost on TD-sized trees. The twin only
 * copies and encodes trees that came from the parser or from copies of
 * parsed trees, which cannot be cyclic, so these versions skip that and
 * bound the depth instead (TW_JSON_FAST_MAX_DEPTH: deeper trees fail).
 * The encoding is compact JSON that json_loads() reads back equal
 * (integers stay integers, reals keep a '.' or exponent, 17 digits).
 *
 * Pure functions, thread-safe on trees nobody modifies concurrently.
 */
#ifndef TW_TWIN_JSON_FAST_H
#define TW_TWIN_JSON_FAST_H

#include <jansson.h>

#define TW_JSON_FAST_MAX_DEPTH 64

/* A new deep copy; NULL on allocation failure or excessive depth. */
json_t *tw_json_copy(const json_t *j);

/* Compact encoding is runtime/json_enc.h's tw_json_encode (one encoder for
 * the whole runtime). */
#include "runtime/json_enc.h"

/*
 * Parses JSON text (len bytes, any top-level value) into a new tree; NULL
 * on a syntax error, invalid UTF-8 or excessive depth. Made for reading
 * back what tw_json_encode wrote (the directory's rows at start-up): one
 * pass over the buffer, strings without escapes copied once. Accepts exactly
 * what json_loadb(JSON_DECODE_ANY | JSON_ALLOW_NUL) accepts, except that
 * integers out of range become reals instead of an error.
 */
json_t *tw_json_decode(const char *text, size_t len);

#endif
