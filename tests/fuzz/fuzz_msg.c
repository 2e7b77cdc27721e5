/*
 * fuzz_msg.c - libFuzzer target for the envelope parser: any bytes must
 * either parse into a message that re-encodes and re-parses to an equal
 * envelope, or be rejected with a problem object; never crash or leak. What
 * it accepts must be exactly what Jansson reads from the same bytes (the
 * lazy scanner must not accept anything Jansson would not, nor change a
 * value). Strings set on a parsed message encode as the tree says.
 */
#include "runtime/msg.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tw_msg *m = NULL;
    json_t *problem = NULL;
    tw_msg_limits lim = {.max_bytes = 65536, .max_depth = 32};
    int rc = tw_msg_parse((const char *)data, size, &lim, &m, &problem);
    if (rc) {
        if (!json_is_object(problem)) abort();
        json_decref(problem);
        return 0;
    }
    json_t *ref = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!ref || !json_equal(ref, tw_msg_json(m))) abort();
    json_decref(ref);
    size_t len;
    const char *enc = tw_msg_encode(m, &len);
    tw_msg *again = NULL;
    if (!enc || tw_msg_parse(enc, len, NULL, &again, NULL) != 0) abort();
    if (!json_equal(tw_msg_json(m), tw_msg_json(again))) abort();
    tw_msg_unref(again);
    tw_msg_unref(m);

    /* As the router does: stamp strings on a fresh (lazy) parse, then encode
     * (into the message's arena or not, by size): the encoding must say
     * what the tree built from the same message says. */
    tw_msg *w = NULL;
    if (tw_msg_parse((const char *)data, size, &lim, &w, NULL) != 0) abort();
    char s[600];
    size_t n = size < sizeof s - 1 ? size : sizeof s - 1;
    memcpy(s, data, n);
    s[n] = '\0';
    tw_msg_set_str(w, "senderID", s); /* (refused when not UTF-8: fine) */
    tw_msg_set_str(w, "thingID", "dtw:fuzz:thing");
    tw_msg_set_str(w, s[0] ? s : "k", "v");
    enc = tw_msg_encode(w, &len);
    json_t *got = enc ? json_loadb(enc, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (!got || !json_equal(got, tw_msg_json(w))) abort();
    json_decref(got);
    tw_msg_unref(w);
    return 0;
}
