/*
 * fuzz_token.c - libFuzzer target for PASETO v4.public and twind's claims.
 *
 * Every input is used three ways, all with a fixed key pair:
 *   - as a token string: tw_paseto_v4_verify / tw_token_check must reject it
 *     (nobody can forge the signature) without crashing or leaking;
 *   - split into message, footer and implicit assertion, signed and verified
 *     back: the round trip must give the same bytes, and the token must fail
 *     with any other implicit assertion;
 *   - as a signed claims payload: tw_token_check must either accept it with
 *     well-formed claims or reject it, never crash.
 */
#include "runtime/token.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint8_t pk[TW_TOKEN_PK_BYTES], sk[TW_TOKEN_SK_BYTES];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!pk[0] && !pk[1]) {
        uint8_t seed[TW_TOKEN_SEED_BYTES];
        memset(seed, 7, sizeof seed);
        if (tw_token_keypair_from_seed(seed, pk, sk)) abort();
    }
    if (size > 8192) return 0;

    /* 1: arbitrary bytes as a token */
    char *tok = malloc(size + 1);
    memcpy(tok, data, size);
    tok[size] = 0;
    uint8_t *m = NULL, *f = NULL;
    size_t mlen = 0, flen = 0;
    if (tw_paseto_v4_verify(pk, tok, NULL, 0, &m, &mlen, &f, &flen) == 0) abort();
    tw_token_claims c;
    if (tw_token_check(pk, tok, 0, &c) == 0) abort();
    free(tok);

    /* 2: sign / verify round trip of message | footer | implicit */
    size_t a = size ? data[0] % (size + 1) : 0, b = size > 1 ? data[1] % (size + 1) : 0;
    if (a > b) {
        size_t t = a;
        a = b;
        b = t;
    }
    const uint8_t *msg = data, *foot = data + a, *imp = data + b;
    size_t ml = a, fl = b - a, il = size - b;
    char *signed_tok = NULL;
    if (tw_paseto_v4_sign(sk, msg, ml, foot, fl, imp, il, &signed_tok) != 0) abort();
    if (tw_paseto_v4_verify(pk, signed_tok, imp, il, &m, &mlen, &f, &flen) != 0) abort();
    if (mlen != ml || (ml && memcmp(m, msg, ml) != 0)) abort();
    if (fl ? (!f || flen != fl || memcmp(f, foot, fl) != 0) : f != NULL) abort();
    free(m);
    free(f);
    m = f = NULL;
    static const uint8_t other[] = "another assertion";
    if (tw_paseto_v4_verify(pk, signed_tok, other, sizeof other - 1, &m, &mlen, NULL, NULL) == 0)
        abort();
    free(signed_tok);

    /* 3: the bytes as signed claims */
    if (tw_paseto_v4_sign(sk, data, size, NULL, 0, NULL, 0, &signed_tok) != 0) abort();
    int rc = tw_token_check(pk, signed_tok, 0, &c);
    if (rc == 0 && (!tw_client_id_valid(c.sub) || !c.sid[0] || c.role == TW_ROLE_NONE)) abort();
    free(signed_tok);
    return 0;
}
