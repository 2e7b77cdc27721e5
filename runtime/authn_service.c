/*
 * authn_service.c - the built-in service Thing `dtw:twind:authn`: client
 * and access-list administration as WoT actions.
 *
 * tw_authn_register_service() publishes the Thing's TD in the directory
 * (as the pseudo-agent "twind", so its twin id is dtw:twind:authn) and
 * registers one C function with the router that answers every invokeaction
 * addressed to it. The router's authz stage lets operators reach a service;
 * every action here then requires the caller's role to be admin.
 *
 * Actions (input -> output):
 *   addClient    {clientID, role, kind?, displayName?, password?} -> {clientID}
 *   removeClient {clientID} -> null
 *   setPassword  {clientID, password} -> null
 *   setRole      {clientID, role} -> null
 *   listClients  -> [{clientID, kind, role, displayName, hasPassword, created, updated}]
 *   issueToken   {clientID} -> {clientID, token, expires}
 *   setThingACL  {thingID, allow?: [role], deny?: [role]} -> {thingID, allow, deny}
 *   getThingACL  {thingID} -> {thingID, allow, deny}
 * Bad input gets a 400 problem naming the member ("/input/clientID");
 * nothing is changed by a rejected request.
 */
#include "authn.h"
#include "authz.h"
#include "conn.h"
#include "log.h"
#include "router.h"
#include "runtime.h"

#include <stdlib.h>
#include <string.h>

#define AGENT_ID "twind"
#define THING_ID "authn"

/* authn.c keeps the runtime for this service (and to close revoked sessions) */
void tw_authn__set_runtime(tw_authn *a, tw_runtime *rt);
tw_runtime *tw_authn__runtime(tw_authn *a);

/* The service's context is the tw_authn itself: nothing to free separately. */
typedef struct tw_authn service;

static json_t *bad_input(const char *field, const char *detail)
{
    char ptr[64];
    snprintf(ptr, sizeof ptr, "/input%s%s", field ? "/" : "", field ? field : "");
    return tw_problem_new(400, "invalid-input", "invalid input", detail, ptr);
}

/* A required (or optional) string member of the input. */
static int in_str(json_t *in, const char *name, bool required, const char **out, json_t **problem)
{
    json_t *v = json_object_get(in, name);
    *out = NULL;
    if (!v) {
        if (!required) return 0;
        char d[96];
        snprintf(d, sizeof d, "'%s' is required", name);
        *problem = bad_input(name, d);
        return TW_EINVAL;
    }
    if (!json_is_string(v)) {
        char d[96];
        snprintf(d, sizeof d, "'%s' must be a string", name);
        *problem = bad_input(name, d);
        return TW_EINVAL;
    }
    *out = json_string_value(v);
    return 0;
}

static int in_client(json_t *in, const char **id, json_t **problem)
{
    int rc = in_str(in, "clientID", true, id, problem);
    if (rc) return rc;
    if (!tw_client_id_valid(*id)) {
        *problem = bad_input("clientID", "a client id is 1..63 characters of [A-Za-z0-9._-], "
                                         "not starting with '.' or '-'");
        return TW_EINVAL;
    }
    return 0;
}

static int in_role(json_t *in, tw_role *role, json_t **problem)
{
    const char *s;
    int rc = in_str(in, "role", true, &s, problem);
    if (rc) return rc;
    *role = tw_role_parse(s);
    if (*role == TW_ROLE_NONE) {
        *problem = bad_input("role", "role must be one of viewer, operator, manager, admin, "
                                     "agent, service");
        return TW_EINVAL;
    }
    return 0;
}

/* A problem for an authn/authz error code, naming the client where useful. */
static json_t *problem_for(int rc, const char *what)
{
    switch (rc) {
    case TW_ENOTFOUND:
        return tw_problem_new(404, "not-found", "not found", what, "/input/clientID");
    case TW_EEXIST:
        return tw_problem_new(409, "exists", "already exists", what, "/input/clientID");
    case TW_ECONFLICT:
        return tw_problem_new(409, "last-admin", "conflict",
                              "the last admin can be neither removed nor demoted",
                              "/input/clientID");
    case TW_EINVAL:
        return bad_input(NULL, what);
    default:
        return tw_problem_from_error(rc, what, NULL);
    }
}

static int act_add(service *s, json_t *in, json_t **out, json_t **problem)
{
    const char *id, *kind_s, *display, *pw;
    tw_role role;
    int rc;
    if ((rc = in_client(in, &id, problem)) || (rc = in_role(in, &role, problem)) ||
        (rc = in_str(in, "kind", false, &kind_s, problem)) ||
        (rc = in_str(in, "displayName", false, &display, problem)) ||
        (rc = in_str(in, "password", false, &pw, problem)))
        return rc;
    tw_client_kind kind = TW_KIND_CONSUMER;
    if (kind_s) {
        if (strcmp(kind_s, "agent") == 0)
            kind = TW_KIND_AGENT;
        else if (strcmp(kind_s, "service") == 0)
            kind = TW_KIND_SERVICE;
        else if (strcmp(kind_s, "consumer") != 0) {
            *problem = bad_input("kind", "kind must be consumer, agent or service");
            return TW_EINVAL;
        }
    }
    if (pw && (!*pw || strlen(pw) > 1024)) {
        *problem = bad_input("password", "a password is 1..1024 bytes");
        return TW_EINVAL;
    }
    if (display && strlen(display) > 256) {
        *problem = bad_input("displayName", "a display name is at most 256 bytes");
        return TW_EINVAL;
    }
    rc = tw_authn_add_client(s, id, kind, role, display, pw);
    if (rc) {
        *problem = problem_for(rc, rc == TW_EEXIST ? "a client with this id exists"
                                                   : "the client could not be added");
        return rc;
    }
    *out = json_pack("{s:s}", "clientID", id);
    return 0;
}

static int act_remove(service *s, json_t *in, json_t **out, json_t **problem)
{
    const char *id;
    int rc = in_client(in, &id, problem);
    if (rc) return rc;
    if ((rc = tw_authn_remove_client(s, id)) != 0) *problem = problem_for(rc, "no such client");
    return rc;
}

static int act_set_password(service *s, json_t *in, json_t **out, json_t **problem)
{
    const char *id, *pw;
    int rc;
    if ((rc = in_client(in, &id, problem)) || (rc = in_str(in, "password", true, &pw, problem)))
        return rc;
    if (!*pw || strlen(pw) > 1024) {
        *problem = bad_input("password", "a password is 1..1024 bytes");
        return TW_EINVAL;
    }
    if ((rc = tw_authn_set_password(s, id, pw)) != 0) *problem = problem_for(rc, "no such client");
    return rc;
}

static int act_set_role(service *s, json_t *in, json_t **out, json_t **problem)
{
    const char *id;
    tw_role role;
    int rc;
    if ((rc = in_client(in, &id, problem)) || (rc = in_role(in, &role, problem))) return rc;
    if ((rc = tw_authn_set_role(s, id, role)) != 0) *problem = problem_for(rc, "no such client");
    return rc;
}

static int act_list(service *s, json_t *in, json_t **out, json_t **problem)
{
    int rc = tw_authn_list_clients(s, out);
    if (rc) *problem = problem_for(rc, "the clients could not be listed");
    return rc;
}

static int act_issue(service *s, json_t *in, json_t **out, json_t **problem)
{
    const char *id;
    int rc = in_client(in, &id, problem);
    if (rc) return rc;
    char *token = NULL;
    int64_t exp = 0;
    if ((rc = tw_authn_issue_token(s, id, &token, &exp)) != 0) {
        *problem = problem_for(rc, "no such client");
        return rc;
    }
    char ts[TW_TIME_LEN];
    tw_time_format(exp, ts);
    *out = json_pack("{s:s, s:s, s:s}", "clientID", id, "token", token, "expires", ts);
    free(token);
    return *out ? 0 : TW_ENOMEM;
}

static int in_thing(json_t *in, const char **thing, json_t **problem)
{
    int rc = in_str(in, "thingID", true, thing, problem);
    if (rc) return rc;
    size_t n = strlen(*thing);
    if (n == 0 || n >= TW_THING_ID_MAX) {
        *problem = bad_input("thingID", "a thing id is 1..255 bytes");
        return TW_EINVAL;
    }
    return 0;
}

static int act_set_acl(service *s, json_t *in, json_t **out, json_t **problem)
{
    const char *thing;
    int rc = in_thing(in, &thing, problem);
    if (rc) return rc;
    tw_authz *az = tw_runtime_authz(tw_authn__runtime(s));
    if (!az) {
        *problem = tw_problem_from_error(TW_EUNSUPPORTED, "authorization is not configured", NULL);
        return TW_EUNSUPPORTED;
    }
    char self[TW_THING_ID_MAX];
    if (tw_twin_id_make(AGENT_ID, THING_ID, self, sizeof self) == 0 && strcmp(thing, self) == 0) {
        /* a deny here could lock every admin out of undoing it */
        *problem = bad_input("thingID", "the access of the authn service itself cannot be "
                                        "changed");
        return TW_EINVAL;
    }
    static const char *const lists[] = {"allow", "deny"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(in, lists[i]);
        size_t k;
        json_t *r;
        bool ok = !v || json_is_null(v) || json_is_array(v);
        if (ok && json_is_array(v)) {
            json_array_foreach(v, k, r)
            {
                if (tw_role_parse(json_string_value(r)) == TW_ROLE_NONE) ok = false;
            }
        }
        if (!ok) {
            *problem = bad_input(lists[i], "an array of role names (viewer, operator, manager, "
                                           "admin, agent, service)");
            return TW_EINVAL;
        }
    }
    rc = tw_authz_set_thing_acl(az, thing, json_object_get(in, "allow"),
                                json_object_get(in, "deny"));
    if (rc == 0) rc = tw_authz_get_thing_acl(az, thing, out);
    if (rc) *problem = problem_for(rc, "the access lists could not be set");
    return rc;
}

static int act_get_acl(service *s, json_t *in, json_t **out, json_t **problem)
{
    const char *thing;
    int rc = in_thing(in, &thing, problem);
    if (rc) return rc;
    tw_authz *az = tw_runtime_authz(tw_authn__runtime(s));
    if (!az) {
        *problem = tw_problem_from_error(TW_EUNSUPPORTED, "authorization is not configured", NULL);
        return TW_EUNSUPPORTED;
    }
    rc = tw_authz_get_thing_acl(az, thing, out);
    if (rc) *problem = problem_for(rc, "the access lists could not be read");
    return rc;
}

typedef int (*action_fn)(service *s, json_t *in, json_t **out, json_t **problem);

static const struct {
    const char *name;
    action_fn fn;
    bool needs_input;
} actions[] = {
    {"addClient", act_add, true},
    {"removeClient", act_remove, true},
    {"setPassword", act_set_password, true},
    {"setRole", act_set_role, true},
    {"listClients", act_list, false},
    {"issueToken", act_issue, true},
    {"setThingACL", act_set_acl, true},
    {"getThingACL", act_get_acl, true},
};

static int handle(void *ctx, tw_conn *c, const tw_msg *req, json_t **output, json_t **problem)
{
    service *s = ctx;
    *output = NULL;
    *problem = NULL;
    const tw_identity *id = c ? tw_conn_identity(c) : NULL;
    if (!id || id->role != TW_ROLE_ADMIN) {
        *problem = tw_problem_new(403, "forbidden", "forbidden",
                                  "client administration needs the admin role", NULL);
        return TW_EPERM;
    }
    const char *name = tw_msg_name(req);
    for (size_t i = 0; name && i < sizeof actions / sizeof actions[0]; i++) {
        if (strcmp(actions[i].name, name) != 0) continue;
        json_t *in = tw_msg_get(req, "input");
        if (actions[i].needs_input && !json_is_object(in)) {
            *problem = bad_input(NULL, "the input must be an object");
            return TW_EINVAL;
        }
        int rc = actions[i].fn(s, in, output, problem);
        if (rc == 0)
            tw_log_info("authn", "%s by '%s'", name, id->client_id);
        else if (!*problem)
            *problem = tw_problem_from_error(rc, NULL, NULL);
        return rc;
    }
    *problem = tw_problem_new(404, "not-found", "not found", "the authn service has no such action",
                              "name");
    return TW_ENOTFOUND;
}

/* ---- the TD ---- */

static json_t *str_prop(const char *desc)
{
    return json_pack("{s:s, s:s}", "type", "string", "description", desc);
}

static json_t *roles_schema(void)
{
    return json_pack("{s:s, s:{s:s, s:[s,s,s,s,s,s]}}", "type", "array", "items", "type", "string",
                     "enum", "viewer", "operator", "manager", "admin", "agent", "service");
}

static json_t *action(const char *title, json_t *props, const char *const *required, json_t *output)
{
    json_t *a = json_pack("{s:s, s:b, s:b}", "title", title, "safe", 0, "idempotent", 0);
    if (props) {
        json_t *req = json_array();
        for (; required && *required; required++)
            json_array_append_new(req, json_string(*required));
        json_object_set_new(
            a, "input",
            json_pack("{s:s, s:o, s:o}", "type", "object", "properties", props, "required", req));
    }
    if (output) json_object_set_new(a, "output", output);
    return a;
}

static json_t *build_td(void)
{
    json_t *role = json_pack("{s:s, s:[s,s,s,s,s,s]}", "type", "string", "enum", "viewer",
                             "operator", "manager", "admin", "agent", "service");
    static const char *const req_id[] = {"clientID", NULL};
    static const char *const req_id_role[] = {"clientID", "role", NULL};
    static const char *const req_id_pw[] = {"clientID", "password", NULL};
    static const char *const req_thing[] = {"thingID", NULL};
    json_t *acl_out =
        json_pack("{s:s, s:{s:o, s:o, s:o}}", "type", "object", "properties", "thingID",
                  str_prop("twin id"), "allow", roles_schema(), "deny", roles_schema());
    json_t *acts = json_object();
    json_object_set_new(
        acts, "addClient",
        action("Add a client",
               json_pack("{s:o, s:O, s:{s:s, s:[s,s,s]}, s:o, s:o}", "clientID",
                         str_prop("client id"), "role", role, "kind", "type", "string", "enum",
                         "consumer", "agent", "service", "displayName", str_prop("display name"),
                         "password", str_prop("password (omit for token-only agents)")),
               req_id_role, json_pack("{s:s}", "type", "object")));
    json_object_set_new(acts, "removeClient",
                        action("Remove a client and revoke its sessions",
                               json_pack("{s:o}", "clientID", str_prop("client id")), req_id,
                               NULL));
    json_object_set_new(acts, "setPassword",
                        action("Set a client's password",
                               json_pack("{s:o, s:o}", "clientID", str_prop("client id"),
                                         "password", str_prop("new password")),
                               req_id_pw, NULL));
    json_object_set_new(
        acts, "setRole",
        action("Set a client's role (revokes its sessions)",
               json_pack("{s:o, s:O}", "clientID", str_prop("client id"), "role", role),
               req_id_role, NULL));
    json_object_set_new(acts, "listClients",
                        action("List clients", NULL, NULL, json_pack("{s:s}", "type", "array")));
    json_object_set_new(acts, "issueToken",
                        action("Issue a token for a client (agents without a password)",
                               json_pack("{s:o}", "clientID", str_prop("client id")), req_id,
                               json_pack("{s:s}", "type", "object")));
    json_object_set_new(acts, "setThingACL",
                        action("Set a Thing's allow/deny role lists (deny wins; empty lists clear)",
                               json_pack("{s:o, s:o, s:o}", "thingID", str_prop("twin id"), "allow",
                                         roles_schema(), "deny", roles_schema()),
                               req_thing, json_deep_copy(acl_out)));
    json_object_set_new(acts, "getThingACL",
                        action("Get a Thing's allow/deny role lists",
                               json_pack("{s:o}", "thingID", str_prop("twin id")), req_thing,
                               acl_out));
    json_decref(role);
    return json_pack("{s:s, s:s, s:s, s:s, s:{s:{s:s}}, s:s, s:o}", "@context",
                     "https://www.w3.org/2022/wot/td/v1.1", "id", THING_ID, "title",
                     "twind authentication", "description",
                     "Clients, roles, tokens and per-Thing access lists of this runtime "
                     "(every action needs the admin role)",
                     "securityDefinitions", "nosec_sc", "scheme", "nosec", "security", "nosec_sc",
                     "actions", acts);
}

int tw_authn_register_service(tw_authn *a, tw_runtime *rt)
{
    if (!a || !rt) return TW_EINVAL;
    char twin_id[TW_THING_ID_MAX];
    int rc = tw_twin_id_make(AGENT_ID, THING_ID, twin_id, sizeof twin_id);
    if (rc) return rc;

    void *tctx = NULL;
    const tw_twin_ops *ops = tw_runtime_twin(rt, &tctx);
    if (ops && ops->update_thing) {
        json_t *td = build_td();
        if (!td) return TW_ENOMEM;
        char *tid = NULL;
        json_t *problem = NULL;
        rc = ops->update_thing(tctx, AGENT_ID, td, &tid, &problem);
        json_decref(td);
        if (rc) {
            const char *d = json_string_value(json_object_get(problem, "detail"));
            tw_log_error("authn", "the directory refused the authn TD: %s",
                         d ? d : tw_strerror(rc));
            json_decref(problem);
            return rc;
        }
        if (tid && strcmp(tid, twin_id) != 0) tw_strlcpy(twin_id, tid, sizeof twin_id);
        free(tid);
        json_decref(problem);
    }

    tw_authn__set_runtime(a, rt);
    return tw_router_add_service(rt, twin_id, handle, a);
}
