/*
 * authn.h - clients, passwords and tokens (DESIGN.md section 7).
 *
 * Clients live in SQLite (id, kind, role, display name, argon2id hash,
 * optional public key). Tokens are PASETO v4.public (Ed25519) carrying client
 * id, session id, role, issued-at and expiry; sessions are rows that logout
 * revokes at once. Verified tokens are cached in memory (keyed by a hash of
 * the token) so a signature check happens once per token, while revocation
 * is still seen on the next call.
 *
 * On first start of a data directory tw_authn_open() creates the signing key
 * and an `admin` client with a random password, written to admin.password
 * (0600) and returned once through first_admin_password.
 *
 * All functions are thread-safe.
 */
#ifndef TW_AUTHN_H
#define TW_AUTHN_H

#include "msg.h"
#include "store.h"

typedef struct tw_authn tw_authn;
typedef struct tw_runtime tw_runtime;

typedef enum { TW_KIND_CONSUMER = 0, TW_KIND_AGENT, TW_KIND_SERVICE } tw_client_kind;

typedef struct tw_authn_opts {
    int64_t consumer_token_ms; /* default 1 day */
    int64_t agent_token_ms;    /* default 90 days (agents and services) */
    int login_fail_limit;      /* bad logins per minute per id and per address; default 10 */
    /* argon2id cost of new password hashes; 0 = libsodium's INTERACTIVE
     * limits (64 MiB). Tests use crypto_pwhash_OPSLIMIT_MIN/MEMLIMIT_MIN. */
    unsigned long long pw_opslimit;
    size_t pw_memlimit;
} tw_authn_opts;

/*
 * Fills opts from the config file's "authn" section (NULL: defaults):
 *   {"consumer_token_s": 86400, "agent_token_s": 7776000, "login_fail_limit": 10}
 * Unknown members and out-of-range values (tokens 60 s .. 10 years, limit
 * 1 .. 1000) are TW_EINVAL with a message in err.
 */
int tw_authn_opts_from_config(json_t *section, tw_authn_opts *opts, char *err, size_t errlen);

/*
 * Opens the client store in data_dir's database. When a new admin was
 * created, *first_admin_password (if not NULL) gets its password (malloc'd),
 * else NULL.
 */
int tw_authn_open(tw_store *s, const char *data_dir, const tw_authn_opts *opts, tw_authn **out,
                  char **first_admin_password);
void tw_authn_close(tw_authn *a);

/* Password login. On TW_ERATE, *retry_after_s says when to retry. TW_EAUTH
 * never reveals whether the id exists. *token is malloc'd. */
int tw_authn_login(tw_authn *a, const char *client_id, const char *password, const char *remote,
                   char **token, int64_t *expires_ms, int *retry_after_s);
/* Verifies a token (cached) and that its session is live. */
int tw_authn_verify(tw_authn *a, const char *token, tw_identity *out);
/* A new token for the same session, for a valid unexpired token. */
int tw_authn_refresh(tw_authn *a, const char *token, char **new_token, int64_t *expires_ms);
/* Revokes the session (every token of it). The caller closes the session's
 * connections (tw_conns_close_session). */
int tw_authn_logout(tw_authn *a, const char *session_id);
/* Whether a session is live (not revoked, not expired): a cheap in-memory
 * check for connections that authenticated once and stay open. */
bool tw_authn_session_live(tw_authn *a, const char *session_id);

/* Client administration. remove_client and set_role revoke the client's
 * sessions (and, once tw_authn_register_service() gave authn the runtime,
 * close their connections); the last admin can be neither removed nor
 * demoted (TW_ECONFLICT). */
int tw_authn_add_client(tw_authn *a, const char *client_id, tw_client_kind kind, tw_role role,
                        const char *display_name, const char *password);
int tw_authn_remove_client(tw_authn *a, const char *client_id);
int tw_authn_set_password(tw_authn *a, const char *client_id, const char *password);
int tw_authn_set_role(tw_authn *a, const char *client_id, tw_role role);
/* JSON array of clients (no hashes), new reference. */
int tw_authn_list_clients(tw_authn *a, json_t **out);
/* A token for a client without a password (agents). */
int tw_authn_issue_token(tw_authn *a, const char *client_id, char **token, int64_t *expires_ms);

/*
 * The identity of a client authenticated by other means than a token: a
 * client certificate that tw_tls_verify_session() accepted (its CN is the
 * client id). The client must exist; its current role is used, session_id
 * is a new "x509-..." id of its own (not a token session: logout from it
 * cuts only the connections given that identity) and expires_ms is 0.
 * TW_EAUTH for an unknown client.
 */
int tw_authn_client_identity(tw_authn *a, const char *client_id, tw_identity *out);

/* Registers the built-in service Thing `dtw:twind:authn` (its TD in the
 * directory and its actions on the router). */
int tw_authn_register_service(tw_authn *a, tw_runtime *rt);

#endif
