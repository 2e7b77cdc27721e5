/*
 * token.c - PASETO v4.public (Ed25519, libsodium) and twind's token claims.
 *
 * Signing builds PAE("v4.public.", m, footer, implicit) and signs it with
 * crypto_sign_detached; verification parses the token strictly (exact
 * header, at most one footer, canonical unpadded base64url, a payload of at
 * least one signature) before it checks the signature, and only then looks at
 * the JSON claims. Claims use RFC 3339 UTC times, as the PASETO registered
 * claims do.
 */
#include "token.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char HEADER[] = "v4.public.";
#define HEADER_LEN (sizeof HEADER - 1)
#define SIG_LEN crypto_sign_BYTES

int tw_token_keypair_from_seed(const uint8_t seed[TW_TOKEN_SEED_BYTES],
                               uint8_t pk[TW_TOKEN_PK_BYTES], uint8_t sk[TW_TOKEN_SK_BYTES])
{
    if (sodium_init() < 0) return TW_ECRYPTO;
    return crypto_sign_seed_keypair(pk, sk, seed) == 0 ? 0 : TW_ECRYPTO;
}

static void le64(uint8_t out[8], uint64_t n)
{
    n &= UINT64_C(0x7fffffffffffffff); /* PAE clears the top bit */
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(n & 0xff);
        n >>= 8;
    }
}

/* PAE of 4 pieces into a new buffer. */
static int pae4(const uint8_t *const piece[4], const size_t len[4], uint8_t **out, size_t *outlen)
{
    size_t total = 8;
    for (int i = 0; i < 4; i++) {
        if (len[i] > SIZE_MAX - total - 8) return TW_ETOOBIG;
        total += 8 + len[i];
    }
    uint8_t *buf = malloc(total);
    if (!buf) return TW_ENOMEM;
    uint8_t *p = buf;
    le64(p, 4);
    p += 8;
    for (int i = 0; i < 4; i++) {
        le64(p, len[i]);
        p += 8;
        if (len[i]) memcpy(p, piece[i], len[i]);
        p += len[i];
    }
    *out = buf;
    *outlen = total;
    return 0;
}

static int pae_for(const uint8_t *m, size_t mlen, const uint8_t *f, size_t flen, const uint8_t *i,
                   size_t ilen, uint8_t **out, size_t *outlen)
{
    const uint8_t *piece[4] = {(const uint8_t *)HEADER, m, f, i};
    const size_t len[4] = {HEADER_LEN, mlen, f ? flen : 0, i ? ilen : 0};
    return pae4(piece, len, out, outlen);
}

int tw_paseto_v4_sign(const uint8_t sk[TW_TOKEN_SK_BYTES], const uint8_t *m, size_t mlen,
                      const uint8_t *footer, size_t flen, const uint8_t *implicit, size_t ilen,
                      char **token)
{
    if (!sk || (!m && mlen) || !token) return TW_EINVAL;
    if (!footer) flen = 0;
    if (!implicit) ilen = 0;
    if (mlen > TW_TOKEN_MAX_LEN || flen > TW_TOKEN_MAX_LEN) return TW_ETOOBIG;
    if (sodium_init() < 0) return TW_ECRYPTO;

    uint8_t *pae;
    size_t paelen;
    int rc = pae_for(m, mlen, footer, flen, implicit, ilen, &pae, &paelen);
    if (rc) return rc;

    /* m || sig, then base64url of it and of the footer. */
    uint8_t *body = malloc(mlen + SIG_LEN);
    if (!body) {
        free(pae);
        return TW_ENOMEM;
    }
    if (mlen) memcpy(body, m, mlen);
    crypto_sign_detached(body + mlen, NULL, pae, paelen, sk);
    free(pae);

    const int variant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
    size_t b1 = sodium_base64_ENCODED_LEN(mlen + SIG_LEN, variant);
    size_t b2 = flen ? sodium_base64_ENCODED_LEN(flen, variant) : 0;
    char *out = malloc(HEADER_LEN + b1 + 1 + b2 + 1);
    if (!out) {
        free(body);
        return TW_ENOMEM;
    }
    memcpy(out, HEADER, HEADER_LEN);
    sodium_bin2base64(out + HEADER_LEN, b1, body, mlen + SIG_LEN, variant);
    free(body);
    if (flen) {
        size_t n = strlen(out);
        out[n] = '.';
        sodium_bin2base64(out + n + 1, b2, footer, flen, variant);
    }
    *token = out;
    return 0;
}

/* Strict base64url (no padding) of s[0..n) into a new buffer with a NUL after it. */
static int b64url_decode(const char *s, size_t n, uint8_t **out, size_t *outlen)
{
    uint8_t *buf = malloc(n / 4 * 3 + 3 + 1);
    if (!buf) return TW_ENOMEM;
    size_t len = 0;
    const char *end = NULL;
    if (sodium_base642bin(buf, n / 4 * 3 + 3, s, n, NULL, &len, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        end != s + n) {
        free(buf);
        return TW_EAUTH;
    }
    buf[len] = 0;
    *out = buf;
    *outlen = len;
    return 0;
}

int tw_paseto_v4_verify(const uint8_t pk[TW_TOKEN_PK_BYTES], const char *token,
                        const uint8_t *implicit, size_t ilen, uint8_t **m, size_t *mlen,
                        uint8_t **footer, size_t *flen)
{
    if (!pk || !token || !m || !mlen) return TW_EINVAL;
    if (!implicit) ilen = 0;
    size_t tlen = strnlen(token, TW_TOKEN_MAX_LEN + 1);
    if (tlen > TW_TOKEN_MAX_LEN) return TW_EAUTH;
    if (tlen < HEADER_LEN || memcmp(token, HEADER, HEADER_LEN) != 0) return TW_EAUTH;
    if (sodium_init() < 0) return TW_ECRYPTO;

    const char *body = token + HEADER_LEN;
    const char *dot = memchr(body, '.', tlen - HEADER_LEN);
    size_t blen = dot ? (size_t)(dot - body) : tlen - HEADER_LEN;
    const char *ftxt = dot ? dot + 1 : NULL;
    size_t ftlen = dot ? tlen - HEADER_LEN - blen - 1 : 0;
    if (ftxt && (ftlen == 0 || memchr(ftxt, '.', ftlen))) return TW_EAUTH;

    uint8_t *raw = NULL, *f = NULL;
    size_t rawlen = 0, fl = 0;
    int rc = b64url_decode(body, blen, &raw, &rawlen);
    if (rc) return rc;
    if (rawlen < SIG_LEN) {
        free(raw);
        return TW_EAUTH;
    }
    if (ftxt && (rc = b64url_decode(ftxt, ftlen, &f, &fl)) != 0) {
        free(raw);
        return rc;
    }

    size_t ml = rawlen - SIG_LEN;
    uint8_t *pae;
    size_t paelen;
    rc = pae_for(raw, ml, f, fl, implicit, ilen, &pae, &paelen);
    if (rc == 0) {
        if (crypto_sign_verify_detached(raw + ml, pae, paelen, pk) != 0) rc = TW_EAUTH;
        free(pae);
    }
    if (rc) {
        free(raw);
        free(f);
        return rc;
    }
    raw[ml] = 0; /* the signature is no longer needed: terminate the message */
    *m = raw;
    *mlen = ml;
    if (footer) {
        *footer = f;
        if (flen) *flen = fl;
    } else {
        free(f);
    }
    return 0;
}

int tw_token_issue(const uint8_t sk[TW_TOKEN_SK_BYTES], const tw_token_claims *c, char **token)
{
    if (!c || !token || !tw_client_id_valid(c->sub) || !c->sid[0] || c->role == TW_ROLE_NONE ||
        (unsigned)c->role >= TW_ROLE__COUNT)
        return TW_EINVAL;
    char iat[TW_TIME_LEN], exp[TW_TIME_LEN];
    tw_time_format(c->iat_ms, iat);
    tw_time_format(c->exp_ms, exp);
    char jti[TW_ID_MAX];
    if (c->jti[0])
        tw_strlcpy(jti, c->jti, sizeof jti);
    else
        tw_id_new("t", jti);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "sub", c->sub, "sid", c->sid, "role",
                          tw_role_name(c->role), "iat", iat, "exp", exp, "jti", jti);
    if (!o) return TW_ENOMEM;
    char *js = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!js) return TW_ENOMEM;
    int rc = tw_paseto_v4_sign(sk, (const uint8_t *)js, strlen(js), NULL, 0, NULL, 0, token);
    free(js);
    return rc;
}

static int claim_str(json_t *o, const char *name, char *dst, size_t n)
{
    const char *s = json_string_value(json_object_get(o, name));
    if (!s || !*s) return TW_EAUTH;
    return tw_strlcpy(dst, s, n) == 0 ? 0 : TW_EAUTH;
}

static int claim_time(json_t *o, const char *name, int64_t *ms)
{
    const char *s = json_string_value(json_object_get(o, name));
    if (!s || tw_time_parse(s, ms) != 0) return TW_EAUTH;
    return 0;
}

int tw_token_check(const uint8_t pk[TW_TOKEN_PK_BYTES], const char *token, int64_t now_ms,
                   tw_token_claims *out)
{
    if (!out) return TW_EINVAL;
    memset(out, 0, sizeof *out);
    uint8_t *m = NULL, *f = NULL;
    size_t mlen = 0;
    int rc = tw_paseto_v4_verify(pk, token, NULL, 0, &m, &mlen, &f, NULL);
    if (rc) return rc;
    /* twind never puts a footer on its tokens: one there was added by someone else. */
    if (f) {
        free(f);
        free(m);
        return TW_EAUTH;
    }
    json_error_t jerr;
    json_t *o = json_loadb((const char *)m, mlen, JSON_REJECT_DUPLICATES, &jerr);
    free(m);
    if (!json_is_object(o)) {
        json_decref(o);
        return TW_EAUTH;
    }
    const char *role = json_string_value(json_object_get(o, "role"));
    out->role = tw_role_parse(role);
    if (claim_str(o, "sub", out->sub, sizeof out->sub) || !tw_client_id_valid(out->sub) ||
        claim_str(o, "sid", out->sid, sizeof out->sid) || claim_time(o, "iat", &out->iat_ms) ||
        claim_time(o, "exp", &out->exp_ms) || out->role == TW_ROLE_NONE ||
        (json_object_get(o, "jti") && claim_str(o, "jti", out->jti, sizeof out->jti)))
        rc = TW_EAUTH;
    json_decref(o);
    if (rc) {
        memset(out, 0, sizeof *out);
        return rc;
    }
    return now_ms >= out->exp_ms ? TW_EEXPIRED : 0;
}

/* Makes dir (mode 0700) or tightens an existing one to owner-only. */
static int ensure_private_dir(const char *dir)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        tw_log_error("token", "cannot create %s: %s", dir, strerror(errno));
        return TW_EIO;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        tw_log_error("token", "%s is not a directory", dir);
        return TW_EIO;
    }
    if ((st.st_mode & 077) && chmod(dir, 0700) != 0) {
        tw_log_error("token", "cannot make %s owner-only: %s", dir, strerror(errno));
        return TW_EIO;
    }
    return 0;
}

static int read_seed(int fd, const char *path, uint8_t seed[TW_TOKEN_SEED_BYTES])
{
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != TW_TOKEN_SEED_BYTES) {
        tw_log_error("token", "%s is not a %d-byte key file", path, TW_TOKEN_SEED_BYTES);
        return TW_ECRYPTO;
    }
    if (st.st_mode & 077) {
        tw_log_warn("token", "%s was readable by others: made owner-only", path);
        if (fchmod(fd, 0600) != 0) return TW_EIO;
    }
    size_t got = 0;
    while (got < TW_TOKEN_SEED_BYTES) {
        ssize_t n = read(fd, seed + got, TW_TOKEN_SEED_BYTES - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return TW_EIO;
        got += (size_t)n;
    }
    return 0;
}

static int write_seed(const char *dir, const char *path, const uint8_t seed[TW_TOKEN_SEED_BYTES])
{
    char tmp[1100];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return TW_ETOOBIG;
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return TW_EIO;
    size_t put = 0;
    int rc = 0;
    while (put < TW_TOKEN_SEED_BYTES) {
        ssize_t n = write(fd, seed + put, TW_TOKEN_SEED_BYTES - put);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            rc = TW_EIO;
            break;
        }
        put += (size_t)n;
    }
    if (rc == 0 && fsync(fd) != 0) rc = TW_EIO;
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0) rc = TW_EIO;
    if (rc) {
        unlink(tmp);
        return rc;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

int tw_token_key_load(const char *data_dir, uint8_t pk[TW_TOKEN_PK_BYTES],
                      uint8_t sk[TW_TOKEN_SK_BYTES], bool *created)
{
    if (!data_dir || !pk || !sk) return TW_EINVAL;
    if (created) *created = false;
    if (sodium_init() < 0) return TW_ECRYPTO;
    char dir[1050], path[1080];
    if (snprintf(dir, sizeof dir, "%s/keys", data_dir) >= (int)sizeof dir) return TW_ETOOBIG;
    snprintf(path, sizeof path, "%s/token.key", dir);
    int rc = ensure_private_dir(dir);
    if (rc) return rc;

    uint8_t seed[TW_TOKEN_SEED_BYTES];
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        rc = read_seed(fd, path, seed);
        close(fd);
    } else if (errno == ENOENT) {
        randombytes_buf(seed, sizeof seed);
        rc = write_seed(dir, path, seed);
        if (rc == 0) {
            tw_log_info("token", "created the token signing key %s", path);
            if (created) *created = true;
        } else {
            tw_log_error("token", "cannot write %s: %s", path, tw_strerror(rc));
        }
    } else {
        tw_log_error("token", "cannot open %s: %s", path, strerror(errno));
        rc = TW_EIO;
    }
    if (rc == 0) rc = tw_token_keypair_from_seed(seed, pk, sk);
    sodium_memzero(seed, sizeof seed);
    return rc;
}
