/*
 * json_scan.h - validates JSON text and splits a top-level object into its
 * members without building a tree.
 *
 * Routing an event needs its envelope's header fields (type, operation,
 * thingID, name, ...) but never looks inside its value; building a Jansson
 * tree for every message, and freeing it again, was most of the cost of
 * passing one through the runtime. This scanner checks the whole text in one
 * pass and hands back, for each top-level member, the raw bytes of its key
 * and of its value, so the message can forward the value as it came and
 * decode it only if someone asks.
 *
 * It only says yes to text that a full parser (Jansson with
 * JSON_REJECT_DUPLICATES, as tw_msg_parse uses) would accept with the same
 * meaning, and it is deliberately narrow: whitespace inside values, escaped
 * keys, duplicate keys, objects with many keys, integers beyond 18 digits,
 * reals near overflow, "\u0000" and anything malformed make it give up, and
 * the caller falls back to the full parser (which also words the error).
 * Because values come back without whitespace, they can be copied into
 * newline-delimited frames as they are.
 *
 * The text must already be valid UTF-8 (tw_utf8_valid). No allocation, no
 * state: thread-safe.
 */
#ifndef TW_JSON_SCAN_H
#define TW_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>

typedef struct tw_jscan_member {
    const char *key; /* the key's bytes between its quotes (no escapes) */
    size_t key_len;
    const char *val; /* the value's text: no whitespace outside strings */
    size_t val_len;
    bool val_escaped; /* a string value with backslash escapes */
} tw_jscan_member;

/*
 * Scans buf as one JSON object (whitespace allowed around its members).
 * Fills out[0..*n) with its members in order and returns true; returns false
 * when the text is not in the narrow form above, has more than nmax
 * members, nests containers deeper than max_depth levels (the object itself
 * is level 1), or is not valid JSON.
 */
bool tw_jscan_object(const char *buf, size_t len, int max_depth, tw_jscan_member *out, size_t nmax,
                     size_t *n);

/*
 * The length of the longest prefix of s[0..n) that can stand between JSON
 * quotes as it is: no control character, '"' or '\\'. (n when all of it
 * can.) Eight bytes at a time, like the scanner's strings.
 */
size_t tw_jscan_plain_len(const char *s, size_t n);

#endif
