/*
 * fuzz_msg_diff.c - differential libFuzzer target for the envelope parser:
 * the lazy parser (tw_msg_parse, which scans the text once and decodes
 * members on demand) must decide exactly as the tree path does (Jansson's
 * json_loadb, then tw_msg_from_json) on any UTF-8 input within the limits:
 * the same accept or reject, the same problem detail, the same typed
 * fields, and tw_msg_get of every member equal to the tree's value (which
 * also exercises the lazy lookup of keys). fuzz_msg checks what is
 * accepted; this checks that nothing is accepted or rejected differently.
 * Written by a reviewer of the parser speed-ups of session 4.
 */
#include "runtime/msg.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BYTES 65536
#define MAX_DEPTH 32

static bool same_str(const char *a, const char *b)
{
    return (!a || !b) ? a == b : strcmp(a, b) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *b = (const char *)data;
    if (size > MAX_BYTES || !tw_utf8_valid(b, size) || tw_json_max_depth(b, size) > MAX_DEPTH)
        return 0; /* rejected by both paths, with different details */
    tw_msg_limits lim = {.max_bytes = MAX_BYTES, .max_depth = MAX_DEPTH};
    tw_msg *m = NULL, *t = NULL;
    json_t *p1 = NULL, *p2 = NULL;
    int rc1 = tw_msg_parse(b, size, &lim, &m, &p1);
    json_t *ref = json_loadb(b, size, JSON_REJECT_DUPLICATES, NULL);
    int rc2 = ref ? tw_msg_from_json(ref, &t, &p2) : TW_EINVAL; /* steals ref */
    if (rc1 != rc2) {
        fprintf(stderr, "lazy %d, tree %d\n", rc1, rc2);
        abort();
    }
    if (p1 && p2) {
        json_t *d1 = json_object_get(p1, "detail"), *d2 = json_object_get(p2, "detail");
        if ((d1 || d2) && !json_equal(d1, d2)) {
            fprintf(stderr, "detail '%s' vs '%s'\n", json_string_value(d1), json_string_value(d2));
            abort();
        }
    }
    if (rc1 == 0) {
        if (tw_msg_get_type(m) != tw_msg_get_type(t) || tw_msg_get_op(m) != tw_msg_get_op(t) ||
            tw_msg_status(m) != tw_msg_status(t) || !same_str(tw_msg_thing(m), tw_msg_thing(t)) ||
            !same_str(tw_msg_name(m), tw_msg_name(t)) ||
            !same_str(tw_msg_correlation(m), tw_msg_correlation(t)) ||
            !same_str(tw_msg_sender(m), tw_msg_sender(t)) || !same_str(tw_msg_id(m), tw_msg_id(t)))
            abort();
        /* each member looked up on a fresh lazy message (no tree built) */
        const char *k;
        json_t *v;
        json_object_foreach(tw_msg_json(t), k, v)
        {
            tw_msg *m2 = NULL;
            if (tw_msg_parse(b, size, &lim, &m2, NULL)) abort();
            if (!json_equal(tw_msg_get(m2, k), v)) abort();
            tw_msg_unref(m2);
        }
    }
    json_decref(p1);
    json_decref(p2);
    tw_msg_unref(m);
    tw_msg_unref(t);
    return 0;
}
