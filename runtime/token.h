/*
 * token.h - PASETO v4.public tokens (Ed25519 via libsodium) and twind's
 * token claims.
 *
 * The low layer implements the PASETO v4.public specification exactly:
 *   token = "v4.public." base64url(m || sig) [ "." base64url(footer) ]
 *   sig   = Ed25519(sk, PAE("v4.public.", m, footer, implicit))
 * where base64url has no padding and PAE is the pre-authentication encoding
 * (LE64 piece count, then LE64 length and bytes of every piece). It is
 * checked against the official test vectors (tests/unit/test_token.c).
 *
 * The claims layer signs and checks twind's JSON claims:
 *   {"sub": client id, "sid": session id, "role": role name,
 *    "iat": RFC 3339, "exp": RFC 3339, "jti": token id}
 * (the random jti makes every token unique, even two issued for the same
 * session in the same millisecond).
 *
 * Keys: the signing key of a data directory is a 32-byte Ed25519 seed in
 * <data_dir>/keys/token.key (file 0600, directory 0700), created on first
 * use.
 *
 * Everything here is pure computation on caller-owned buffers (except the
 * key file function) and thread-safe. Returned strings/buffers are malloc'd
 * and owned by the caller.
 */
#ifndef TW_TOKEN_H
#define TW_TOKEN_H

#include "tw.h"

#define TW_TOKEN_PK_BYTES 32   /* Ed25519 public key */
#define TW_TOKEN_SK_BYTES 64   /* Ed25519 secret key (seed || public key) */
#define TW_TOKEN_SEED_BYTES 32 /* Ed25519 seed */
#define TW_TOKEN_MAX_LEN 4096  /* longer tokens are rejected before any work */

/* Derives an Ed25519 key pair from a 32-byte seed (deterministic). */
int tw_token_keypair_from_seed(const uint8_t seed[TW_TOKEN_SEED_BYTES],
                               uint8_t pk[TW_TOKEN_PK_BYTES], uint8_t sk[TW_TOKEN_SK_BYTES]);

/*
 * Signs message m (mlen bytes) as a v4.public token. footer and implicit may
 * be NULL (length 0). *token is a malloc'd NUL-terminated string.
 */
int tw_paseto_v4_sign(const uint8_t sk[TW_TOKEN_SK_BYTES], const uint8_t *m, size_t mlen,
                      const uint8_t *footer, size_t flen, const uint8_t *implicit, size_t ilen,
                      char **token);

/*
 * Verifies a v4.public token with the implicit assertion (NULL/0 for none)
 * and returns its message (*m, *mlen; malloc'd with a NUL after the last
 * byte) and, if footer is not NULL, its footer (*footer may be NULL when the
 * token has none). TW_EAUTH for anything malformed or not signed by pk.
 */
int tw_paseto_v4_verify(const uint8_t pk[TW_TOKEN_PK_BYTES], const char *token,
                        const uint8_t *implicit, size_t ilen, uint8_t **m, size_t *mlen,
                        uint8_t **footer, size_t *flen);

/* The claims of a twind token. */
typedef struct tw_token_claims {
    char sub[TW_ID_MAX]; /* client id */
    char sid[TW_ID_MAX]; /* session id */
    char jti[TW_ID_MAX]; /* token id; tw_token_issue makes a random one when empty */
    tw_role role;
    int64_t iat_ms; /* issued at, ms since the epoch (whole seconds are kept) */
    int64_t exp_ms; /* expiry, ms since the epoch */
} tw_token_claims;

/* Signs claims into a token (no footer). */
int tw_token_issue(const uint8_t sk[TW_TOKEN_SK_BYTES], const tw_token_claims *c, char **token);

/*
 * Verifies a token and decodes its claims. TW_EAUTH for a bad signature,
 * bad encoding or bad claims; TW_EEXPIRED when now_ms >= exp (the claims are
 * still filled in so the caller can log whose token it was).
 */
int tw_token_check(const uint8_t pk[TW_TOKEN_PK_BYTES], const char *token, int64_t now_ms,
                   tw_token_claims *out);

/*
 * Loads the data directory's signing key, creating keys/ (0700) and
 * keys/token.key (0600, 32 random bytes) on first use. A key file readable
 * by group or others is tightened to 0600 (and logged). *created tells
 * whether a new key was made (may be NULL).
 */
int tw_token_key_load(const char *data_dir, uint8_t pk[TW_TOKEN_PK_BYTES],
                      uint8_t sk[TW_TOKEN_SK_BYTES], bool *created);

#endif
