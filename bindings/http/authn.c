/*
 * authn.c - bearer tokens on requests and the /authn endpoints.
 *
 * Every request but the public ones carries "Authorization: Bearer <token>"
 * (browsers' EventSource cannot set headers, so GET requests may instead pass
 * ?access_token=, as RFC 6750 section 2.3 allows). tw_authn_verify() caches
 * verified tokens (one signature check per token) and still sees a revoked
 * session at once. A TCP connection also keeps its last verified token and
 * identity (struct http_tok below): a keep-alive client's next request with
 * the same token costs a comparison and the session check, not a hash.
 *
 *   POST /authn/login   {"login","password"} -> {"token","expires"}
 *   POST /authn/refresh (bearer)             -> {"token","expires"}
 *   POST /authn/logout  (bearer)             -> 204, the session's streams end
 */
#include "http_int.h"

#include "runtime/authn.h"
#include "runtime/tls.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TOKEN_MAX 4096

static enum MHD_Result unauthorized(http_req *r, const char *detail)
{
    atomic_fetch_add_explicit(&r->h->st.rejected[4], 1, memory_order_relaxed);
    return http_reply_error(r, 401, "unauthenticated", "unauthenticated", detail);
}

/* The token of the request: a pointer into the Authorization header (not
 * NUL-terminated at *len), or a decoded ?access_token= in *owned
 * (malloc'd). NULL when there is none. */
static const char *bearer_ref(http_req *r, size_t *len, char **owned)
{
    *owned = NULL;
    const char *a = http_header(r, "Authorization");
    if (a) {
        while (*a == ' ')
            a++;
        if (strncasecmp(a, "Bearer ", 7) != 0) return NULL;
        a += 7;
        while (*a == ' ')
            a++;
        size_t n = strlen(a);
        while (n && a[n - 1] == ' ')
            n--;
        if (!n || n > TOKEN_MAX) return NULL;
        *len = n;
        return a;
    }
    if (strcmp(r->method, "GET") == 0 || r->head) {
        bool bad = false;
        char *t = http_query(r, "access_token", &bad);
        if (t && (!*t || strlen(t) > TOKEN_MAX)) {
            free(t);
            t = NULL;
        }
        if (t) *len = strlen(t);
        *owned = t;
        return t;
    }
    return NULL;
}

/* The token of the request (malloc'd) or NULL. */
static char *bearer(http_req *r)
{
    size_t n = 0;
    char *owned;
    const char *t = bearer_ref(r, &n, &owned);
    if (!t || owned) return owned;
    return strndup(t, n);
}

/* The socket's last verified token and its identity: a keep-alive client
 * sends the same token with every request, and comparing it is cheaper
 * than tw_authn_verify()'s hash of it. The session is still checked on
 * every request (tw_authn_session_live), so a logout or a revoked client
 * is seen at once, as through the verifier's own cache. */
struct http_tok {
    tw_identity id;
    size_t len;
    char tok[];
};

static bool tok_cached(http_req *r, tw_authn *an, const char *tok, size_t n)
{
    const http_tok *tc = r->sock ? r->sock->tok : NULL;
    if (!tc || tc->len != n || memcmp(tc->tok, tok, n) != 0) return false;
    if (tc->id.expires_ms && tc->id.expires_ms <= tw_now_ms()) return false;
    if (!tw_authn_session_live(an, tc->id.session_id)) return false;
    r->id = tc->id;
    return true;
}

static void tok_keep(http_req *r, const char *tok, size_t n)
{
    if (!r->sock) return;
    http_tok *tc = r->sock->tok;
    if (!tc || tc->len < n) {
        free(tc);
        tc = r->sock->tok = malloc(sizeof *tc + n);
        if (!tc) return;
    }
    tc->id = r->id;
    tc->len = n;
    memcpy(tc->tok, tok, n);
}

/* Mutual TLS: the identity of a verified client certificate (CN = client
 * id), for a request without a bearer token. */
static bool client_certificate(http_req *r, tw_authn *an)
{
    if (!an || !r->h->verifier) return false;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->mc, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (!ci || !ci->tls_session) return false;
    char cn[TW_ID_MAX];
    if (tw_tls_verify_session(r->h->verifier, (gnutls_session_t)ci->tls_session, cn)) return false;
    return tw_authn_client_identity(an, cn, &r->id) == 0;
}

bool http_authenticate(http_req *r, enum MHD_Result *res)
{
    tw_authn *an = tw_runtime_authn(r->h->rt);
    size_t n = 0;
    char *owned = NULL;
    const char *tok = bearer_ref(r, &n, &owned);
    if (!tok) {
        if (client_certificate(r, an)) {
            r->authed = true;
            return true;
        }
        *res = unauthorized(r, "an Authorization: Bearer token (or a client certificate) "
                               "is required");
        return false;
    }
    if (!an) {
        free(owned);
        *res = http_reply_error(r, 503, "no-authn", "service unavailable",
                                "authentication is not configured");
        return false;
    }
    if (tok_cached(r, an, tok, n)) {
        free(owned);
        r->authed = true;
        return true;
    }
    int rc;
    if (owned) {
        rc = tw_authn_verify(an, owned, &r->id);
    } else {
        char *t = strndup(tok, n);
        rc = t ? tw_authn_verify(an, t, &r->id) : TW_ENOMEM;
        free(t);
    }
    if (rc) {
        free(owned);
        *res = unauthorized(r, rc == TW_EEXPIRED ? "the token expired"
                                                 : "the token is invalid or its session ended");
        return false;
    }
    tok_keep(r, tok, n);
    free(owned);
    r->authed = true;
    return true;
}

static enum MHD_Result token_reply(http_req *r, char *token, int64_t expires_ms)
{
    char exp[TW_TIME_LEN];
    tw_time_format(expires_ms, exp);
    json_t *body = json_pack("{s:s,s:s}", "token", token, "expires", exp);
    free(token);
    if (!body) return http_reply_code(r, TW_ENOMEM, NULL);
    return http_reply_json(r, 200, NULL, body, "Cache-Control", "no-store", NULL);
}

static enum MHD_Result login(http_req *r, tw_authn *an)
{
    enum MHD_Result res;
    json_t *body = http_body_json(r, NULL, false, &res);
    if (!body) return res;
    const char *login = json_string_value(json_object_get(body, "login"));
    const char *pass = json_string_value(json_object_get(body, "password"));
    if (!json_is_object(body) || !login || !pass) {
        json_decref(body);
        return http_reply_problem(
            r, tw_problem_new(400, "invalid", "invalid input",
                              "the body must be {\"login\": string, \"password\": string}",
                              login ? "password" : "login"));
    }
    char *token = NULL;
    int64_t expires = 0;
    int retry = 0;
    int rc = tw_authn_login(an, login, pass, r->remote, &token, &expires, &retry);
    json_decref(body);
    if (rc == TW_ERATE) {
        json_t *p = tw_problem_new(429, "rate-limited", "too many requests",
                                   "too many failed logins; retry later", NULL);
        json_object_set_new(p, "retryAfter", json_integer(retry > 0 ? retry : 1));
        return http_reply_problem(r, p);
    }
    if (rc == TW_EAUTH || rc == TW_ENOTFOUND || rc == TW_EINVAL)
        return unauthorized(r, "unknown login or wrong password");
    if (rc) return http_reply_code(r, rc, "login failed");
    return token_reply(r, token, expires);
}

enum MHD_Result http_authn_route(http_req *r)
{
    tw_authn *an = tw_runtime_authn(r->h->rt);
    if (r->nsegs != 2) return http_reply_code(r, TW_ENOTFOUND, "no such resource");
    const char *what = r->segs[1];
    if (strcmp(what, "login") && strcmp(what, "refresh") && strcmp(what, "logout"))
        return http_reply_code(r, TW_ENOTFOUND, "no such resource");
    if (strcmp(r->method, "POST") != 0) return http_reply_405(r, "POST");
    if (!an)
        return http_reply_error(r, 503, "no-authn", "service unavailable",
                                "authentication is not configured");
    if (strcmp(what, "login") == 0) return login(r, an);

    char *tok = bearer(r);
    if (!tok) return unauthorized(r, "an Authorization: Bearer token is required");
    if (strcmp(what, "refresh") == 0) {
        char *nt = NULL;
        int64_t expires = 0;
        int rc = tw_authn_refresh(an, tok, &nt, &expires);
        free(tok);
        if (rc == TW_EAUTH || rc == TW_EEXPIRED || rc == TW_EINVAL || rc == TW_ENOTFOUND)
            return unauthorized(r, "the token is invalid, expired or its session ended");
        if (rc) return http_reply_code(r, rc, "refresh failed");
        return token_reply(r, nt, expires);
    }
    tw_identity id;
    int rc = tw_authn_verify(an, tok, &id);
    free(tok);
    if (rc) return unauthorized(r, "the token is invalid or its session ended");
    rc = tw_authn_logout(an, id.session_id);
    if (rc && rc != TW_ENOTFOUND) return http_reply_code(r, rc, "logout failed");
    tw_conns_close_session(r->h->rt, id.session_id);
    return http_reply_empty(r, 204, NULL);
}
