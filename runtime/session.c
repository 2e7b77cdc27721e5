/*
 * session.c - login, refresh and logout as messages, for bindings that keep
 * a connection open (nng, the HTTP single-connection stream). A connection
 * logs in with a password or a token; its identity then holds for every
 * message on it. Logout revokes the session and closes every connection of
 * that session, on every binding.
 */
#include "authn.h"
#include "router_int.h"

#include <stdlib.h>
#include <string.h>

static const char *in_str(json_t *in, const char *k)
{
    json_t *v = json_object_get(in, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static json_t *rate_problem(int retry)
{
    char detail[80];
    snprintf(detail, sizeof detail, "too many failed logins; retry in %d s", retry);
    json_t *p = tw_problem_new(429, "rate-limited", "too many requests", detail, NULL);
    json_object_set_new(p, "retryAfter", json_integer(retry));
    return p;
}

static json_t *token_output(const char *token, int64_t expires_ms, const tw_identity *id)
{
    json_t *out = json_pack("{s:s}", "clientID", id->client_id);
    if (expires_ms > 0) { /* (a certificate's connection has no expiry) */
        char ts[TW_TIME_LEN];
        tw_time_format(expires_ms, ts);
        json_object_set_new(out, "expires", json_string(ts));
    }
    if (token) json_object_set_new(out, "token", json_string(token));
    json_object_set_new(out, "role", json_string(tw_role_name(id->role)));
    return out;
}

static void login(tw_mw_call *call, tw_authn *an)
{
    json_t *in = tw_msg_get(call->msg, "input");
    const char *login = in_str(in, "login"), *password = in_str(in, "password");
    const char *token = in_str(in, "token");
    char *issued = NULL;
    int64_t expires = 0;
    int retry = 0, rc;
    tw_identity id;
    if (login && password) {
        rc = tw_authn_login(an, login, password, tw_conn_remote(call->conn), &issued, &expires,
                            &retry);
        if (rc == 0) rc = tw_authn_verify(an, issued, &id);
    } else if (token) {
        rc = tw_authn_verify(an, token, &id);
        expires = id.expires_ms;
    } else if (tw_conn_identity(call->conn)) {
        /* a client certificate authenticated the connection at its TLS
         * handshake: a login without credentials names the client and
         * resumes the inbox ("since"), nothing else */
        id = *tw_conn_identity(call->conn);
        tw_router_reply_output(call, token_output(NULL, 0, &id));
        json_t *since0 = json_object_get(in, "since");
        if (json_is_integer(since0))
            tw_router_replay_inbox(call->rt, call->conn, json_integer_value(since0));
        return;
    } else {
        tw_router_reply_error(call, tw_problem_new(400, "invalid", "invalid input",
                                                   "login needs input {login, password} or "
                                                   "{token}",
                                                   "input"));
        return;
    }
    if (rc == 0) rc = tw_conn_set_identity(call->conn, &id);
    if (rc) {
        free(issued);
        tw_router_reply_error(call, rc == TW_ERATE ? rate_problem(retry)
                                                   : tw_problem_new(401, "unauthenticated",
                                                                    "not authenticated",
                                                                    "wrong login or token", NULL));
        return;
    }
    tw_router_reply_output(call, token_output(issued, expires, &id));
    free(issued);
    json_t *since = json_object_get(in, "since");
    if (json_is_integer(since))
        tw_router_replay_inbox(call->rt, call->conn, json_integer_value(since));
}

void tw_session_handle(tw_mw_call *call)
{
    tw_authn *an = call->rt->authn;
    if (!an) {
        tw_router_reply_error(call, tw_problem_new(503, "unsupported", "not supported",
                                                   "authentication is not configured", NULL));
        return;
    }
    tw_op op = tw_msg_get_op(call->msg);
    if (op == TW_OP_LOGIN) {
        login(call, an);
        return;
    }
    const tw_identity *id = tw_conn_identity(call->conn);
    if (op == TW_OP_REFRESH) {
        const char *token = in_str(tw_msg_get(call->msg, "input"), "token");
        char *fresh = NULL;
        int64_t expires = 0;
        int rc = token ? tw_authn_refresh(an, token, &fresh, &expires) : TW_EINVAL;
        tw_identity nid;
        if (rc == 0 && tw_authn_verify(an, fresh, &nid) == 0 &&
            strcmp(nid.client_id, id->client_id) == 0)
            tw_conn_set_identity(call->conn, &nid);
        if (rc) {
            tw_router_reply_error(
                call, rc == TW_EINVAL ? tw_problem_new(400, "invalid", "invalid input",
                                                       "refresh needs input {token}", "input")
                                      : tw_problem_new(401, "unauthenticated", "not authenticated",
                                                       "the token cannot be refreshed", NULL));
            return;
        }
        tw_router_reply_output(call, token_output(fresh, expires, id));
        free(fresh);
        return;
    }
    /* logout: answer first, then cut every connection of the session */
    char sid[TW_ID_MAX];
    tw_strlcpy(sid, id->session_id, sizeof sid);
    int rc = tw_authn_logout(an, sid);
    if (rc) {
        tw_router_reply_error(call, tw_problem_from_error(rc, "logout failed", NULL));
        return;
    }
    tw_router_reply_output(call, NULL);
    tw_conns_close_session(call->rt, sid);
}
