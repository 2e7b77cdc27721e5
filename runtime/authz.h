/*
 * authz.h - who may do what (DESIGN.md section 7).
 *
 * The role table decides per operation; agents and services may publish
 * only for Things they own and receive requests only for those; per-Thing
 * allow/deny role lists (set by an admin, persisted, cached in memory)
 * override the table and take effect on the next message.
 *
 * All functions are thread-safe.
 */
#ifndef TW_AUTHZ_H
#define TW_AUTHZ_H

#include "msg.h"
#include "store.h"

typedef struct tw_authz tw_authz;

int tw_authz_open(tw_store *s, tw_authz **out);
void tw_authz_close(tw_authz *az);

/*
 * 0 when id may send m; TW_EPERM otherwise. owner_agent is the agent that
 * owns m's Thing (NULL if the thing is unknown or not addressed).
 */
int tw_authz_check(tw_authz *az, const tw_identity *id, const tw_msg *m, const char *owner_agent);
/* Pure role-table decision, without per-Thing lists. */
bool tw_authz_role_allows(tw_role role, tw_msg_type type, tw_op op);

/* Per-Thing lists: roles as JSON arrays of role names (borrowed; NULL to clear). */
int tw_authz_set_thing_acl(tw_authz *az, const char *thing_id, json_t *allow, json_t *deny);
int tw_authz_get_thing_acl(tw_authz *az, const char *thing_id, json_t **out);

#endif
