/*
 * derive.c - the twin TD of an agent's TD (DESIGN.md section 4).
 *
 * Consumers never talk to agents, so nothing of how to reach the agent may
 * leak into the twin TD: the agent's forms and base go, the id becomes the
 * twin id, security becomes the runtime's (PASETO v4.public bearer tokens,
 * signed with Ed25519), and every binding adds the forms that reach the
 * runtime (tw_runtime_add_forms). Everything else - titles, @type, data
 * schemas, links, twind:* hints - is kept as the agent wrote it.
 */
#include "runtime/runtime.h"
#include "twin/json_fast.h"
#include "twin/twin.h"

#include <string.h>

#define SEC_NAME "bearer_sc"

static void strip_forms(json_t *td, const char *member)
{
    json_t *affs = json_object_get(td, member);
    const char *k;
    json_t *a;
    json_object_foreach(affs, k, a) if (json_is_object(a)) json_object_del(a, "forms");
}

static json_t *runtime_security(void)
{
    return json_pack("{s:{s:s,s:s,s:s,s:s,s:s,s:s}}", SEC_NAME, "scheme", "bearer", "format",
                     "paseto", "alg", "EdDSA", "in", "header", "name", "Authorization",
                     "description", "PASETO v4.public token from the runtime's login");
}

int tw_twin_derive(tw_runtime *rt, const char *agent_id, const json_t *agent_td, json_t **twin_td)
{
    *twin_td = NULL;
    json_t *tid = json_object_get(agent_td, "id");
    if (!json_is_string(tid) || !agent_id || !*agent_id) return TW_EINVAL;
    char id[TW_THING_ID_MAX];
    int rc = tw_twin_id_make(agent_id, json_string_value(tid), id, sizeof id);
    if (rc) return rc == TW_ETOOBIG ? TW_EINVAL : rc;
    json_t *td = tw_json_copy(agent_td);
    json_t *sec = runtime_security();
    if (!td || !sec) {
        json_decref(td);
        json_decref(sec);
        return TW_ENOMEM;
    }
    json_object_set_new(td, "id", json_string(id));
    json_object_del(td, "forms");
    json_object_del(td, "base");
    json_object_del(td, "registration");
    strip_forms(td, "properties");
    strip_forms(td, "actions");
    strip_forms(td, "events");
    json_object_set_new(td, "securityDefinitions", sec);
    json_object_set_new(td, "security", json_string(SEC_NAME));
    if (!json_object_get(td, "@context"))
        json_object_set_new(td, "@context", json_string("https://www.w3.org/2022/wot/td/v1.1"));
    if (rt && (rc = tw_runtime_add_forms(rt, td)) < 0) {
        json_decref(td);
        return rc;
    }
    *twin_td = td;
    return 0;
}
