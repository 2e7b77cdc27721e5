/*
 * authz.c - the role table of DESIGN.md section 7 and per-Thing allow/deny
 * lists.
 *
 * The table is a bit set of request operations per role:
 *   everyone  login, refresh, logout, ping
 *   viewer    + read..., (un)observe..., (un)subscribe...
 *   operator  + invokeaction, cancelaction, queryaction, queryallactions
 *   manager   + writeproperty
 *   admin     + updatething, deletething of any Thing (and the admin
 *               services, whose actions check the admin role themselves)
 *   agent     viewer rights + updatething/deletething of its own Things
 *   service   agent rights + invoke/cancel/query actions of other Things
 * Responses and notifications come only from agents and services, and only
 * for Things they own: owner_agent (from the directory) must be the sender;
 * for a Thing not in the directory yet a twin id "dtw:{agent}:..." must name
 * the sender, an agent-local id is the sender's own by construction.
 *
 * Per-Thing lists (role sets, persisted in SQLite table authz_acl, cached in
 * a hash map read under a rwlock, so a change applies to the next message):
 *   - a role in `deny` may send no request to the Thing (deny wins);
 *   - a non-empty `allow` limits requests to the listed roles, and grants a
 *     listed role the consumer operations (read, observe, subscribe, invoke,
 *     query, cancel, write) on this Thing even where the table would not;
 *     Thing management (updatething/deletething) stays with the table;
 *   - the owner agent's own traffic for its Thing is not subject to lists.
 */
#include "authz.h"

#include "hmap.h"
#include "log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BIT(op) (UINT64_C(1) << (op))

#define OPS_EVERYONE (BIT(TW_OP_LOGIN) | BIT(TW_OP_REFRESH) | BIT(TW_OP_LOGOUT) | BIT(TW_OP_PING))
#define OPS_READ                                                                                   \
    (BIT(TW_OP_READPROPERTY) | BIT(TW_OP_READALLPROPERTIES) | BIT(TW_OP_READMULTIPLEPROPERTIES) |  \
     BIT(TW_OP_OBSERVEPROPERTY) | BIT(TW_OP_UNOBSERVEPROPERTY) | BIT(TW_OP_OBSERVEALLPROPERTIES) | \
     BIT(TW_OP_UNOBSERVEALLPROPERTIES) | BIT(TW_OP_SUBSCRIBEEVENT) | BIT(TW_OP_UNSUBSCRIBEEVENT) | \
     BIT(TW_OP_SUBSCRIBEALLEVENTS) | BIT(TW_OP_UNSUBSCRIBEALLEVENTS) | BIT(TW_OP_READEVENT) |      \
     BIT(TW_OP_READALLEVENTS))
#define OPS_INVOKE                                                                                 \
    (BIT(TW_OP_INVOKEACTION) | BIT(TW_OP_CANCELACTION) | BIT(TW_OP_QUERYACTION) |                  \
     BIT(TW_OP_QUERYALLACTIONS))
#define OPS_WRITE BIT(TW_OP_WRITEPROPERTY)
#define OPS_MANAGE (BIT(TW_OP_UPDATETHING) | BIT(TW_OP_DELETETHING))
#define OPS_CONSUMER (OPS_READ | OPS_INVOKE | OPS_WRITE)

static const uint64_t request_ops[TW_ROLE__COUNT] = {
    [TW_ROLE_NONE] = OPS_EVERYONE,
    [TW_ROLE_VIEWER] = OPS_EVERYONE | OPS_READ,
    [TW_ROLE_OPERATOR] = OPS_EVERYONE | OPS_READ | OPS_INVOKE,
    [TW_ROLE_MANAGER] = OPS_EVERYONE | OPS_READ | OPS_INVOKE | OPS_WRITE,
    [TW_ROLE_ADMIN] = OPS_EVERYONE | OPS_READ | OPS_INVOKE | OPS_WRITE | OPS_MANAGE,
    [TW_ROLE_AGENT] = OPS_EVERYONE | OPS_READ | OPS_MANAGE,
    [TW_ROLE_SERVICE] = OPS_EVERYONE | OPS_READ | OPS_MANAGE | OPS_INVOKE,
};

static bool publisher(tw_role r)
{
    return r == TW_ROLE_AGENT || r == TW_ROLE_SERVICE;
}

bool tw_authz_role_allows(tw_role role, tw_msg_type type, tw_op op)
{
    if ((unsigned)role >= TW_ROLE__COUNT || op <= TW_OP_NONE || op >= TW_OP__COUNT) return false;
    switch (type) {
    case TW_TYPE_REQUEST:
        return (request_ops[role] & BIT(op)) != 0;
    case TW_TYPE_RESPONSE:
    case TW_TYPE_NOTIFICATION:
        return publisher(role);
    default:
        return false;
    }
}

/* ---- per-Thing lists ---- */

#define MAX_ACLS 100000

typedef struct acl {
    uint32_t allow, deny; /* bit per tw_role */
} acl;

struct tw_authz {
    tw_store *store;
    pthread_rwlock_t lock;    /* guards acls */
    tw_hmap acls;             /* thing id -> acl* */
    pthread_mutex_t set_lock; /* serializes writers: store row and map change together */
};

static const char *const migrations[] = {
    "CREATE TABLE authz_acl ("
    " thing_id TEXT PRIMARY KEY,"
    " allow TEXT NOT NULL,"
    " deny TEXT NOT NULL,"
    " updated INTEGER NOT NULL)",
};

static int roles_to_mask(json_t *arr, uint32_t *mask)
{
    *mask = 0;
    if (!arr || json_is_null(arr)) return 0;
    if (!json_is_array(arr) || json_array_size(arr) > TW_ROLE__COUNT * 4) return TW_EINVAL;
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        tw_role r = tw_role_parse(json_string_value(v));
        if (r == TW_ROLE_NONE) return TW_EINVAL;
        *mask |= 1u << r;
    }
    return 0;
}

static json_t *mask_to_roles(uint32_t mask)
{
    json_t *a = json_array();
    for (int r = 1; a && r < TW_ROLE__COUNT; r++)
        if (mask & (1u << r)) json_array_append_new(a, json_string(tw_role_name((tw_role)r)));
    return a;
}

static char *mask_to_text(uint32_t mask)
{
    json_t *a = mask_to_roles(mask);
    char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return s;
}

typedef struct load_ctx {
    tw_authz *az;
    int rc;
} load_ctx;

static uint32_t text_to_mask(const char *text)
{
    json_t *a = text ? json_loads(text, 0, NULL) : NULL;
    uint32_t m = 0;
    if (roles_to_mask(a, &m) != 0) m = 0;
    json_decref(a);
    return m;
}

static int load_job(tw_store_tx *tx, void *arg)
{
    load_ctx *lc = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT thing_id, allow, deny FROM authz_acl");
    if (!st) return TW_EDB;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        const char *thing = (const char *)sqlite3_column_text(st, 0);
        acl *a = calloc(1, sizeof *a);
        if (!a || !thing) {
            free(a);
            return TW_ENOMEM;
        }
        a->allow = text_to_mask((const char *)sqlite3_column_text(st, 1));
        a->deny = text_to_mask((const char *)sqlite3_column_text(st, 2));
        int err = 0;
        free(tw_hmap_put(&lc->az->acls, thing, a, &err));
        if (err) {
            free(a);
            return TW_ENOMEM;
        }
    }
    sqlite3_reset(st);
    return r == SQLITE_DONE ? 0 : TW_EDB;
}

static void free_acls(tw_hmap *m)
{
    size_t pos = 0;
    const char *k;
    void *v;
    while (tw_hmap_next(m, &pos, &k, &v))
        free(v);
    tw_hmap_fini(m);
}

int tw_authz_open(tw_store *s, tw_authz **out)
{
    if (!s || !out) return TW_EINVAL;
    int rc = tw_store_migrate(s, "authz", migrations, sizeof migrations / sizeof migrations[0]);
    if (rc) return rc;
    tw_authz *az = calloc(1, sizeof *az);
    if (!az) return TW_ENOMEM;
    az->store = s;
    tw_hmap_init(&az->acls);
    pthread_rwlock_init(&az->lock, NULL);
    pthread_mutex_init(&az->set_lock, NULL);
    load_ctx lc = {az, 0};
    rc = tw_store_read(s, load_job, &lc);
    if (rc) {
        tw_authz_close(az);
        return rc;
    }
    *out = az;
    return 0;
}

void tw_authz_close(tw_authz *az)
{
    if (!az) return;
    free_acls(&az->acls);
    pthread_rwlock_destroy(&az->lock);
    pthread_mutex_destroy(&az->set_lock);
    free(az);
}

typedef struct set_ctx {
    const char *thing;
    char *allow, *deny; /* NULL: delete the row */
} set_ctx;

static int set_job(tw_store_tx *tx, void *arg)
{
    set_ctx *sc = arg;
    sqlite3_stmt *st;
    if (sc->allow) {
        st = tw_store_stmt(tx, "INSERT INTO authz_acl (thing_id, allow, deny, updated)"
                               " VALUES (?1, ?2, ?3, ?4) ON CONFLICT(thing_id) DO UPDATE SET"
                               " allow = excluded.allow, deny = excluded.deny,"
                               " updated = excluded.updated");
        if (!st) return TW_EDB;
        sqlite3_bind_text(st, 2, sc->allow, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, sc->deny, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, tw_now_ms());
    } else {
        st = tw_store_stmt(tx, "DELETE FROM authz_acl WHERE thing_id = ?1");
        if (!st) return TW_EDB;
    }
    sqlite3_bind_text(st, 1, sc->thing, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return r == SQLITE_DONE ? 0 : TW_EDB;
}

static bool thing_id_ok(const char *t)
{
    size_t n = t ? strnlen(t, TW_THING_ID_MAX) : 0;
    return n > 0 && n < TW_THING_ID_MAX && tw_utf8_valid(t, n);
}

int tw_authz_set_thing_acl(tw_authz *az, const char *thing_id, json_t *allow, json_t *deny)
{
    if (!az || !thing_id_ok(thing_id)) return TW_EINVAL;
    uint32_t am, dm;
    if (roles_to_mask(allow, &am) || roles_to_mask(deny, &dm)) return TW_EINVAL;

    set_ctx sc = {thing_id, NULL, NULL};
    bool clear = am == 0 && dm == 0;
    if (!clear) {
        sc.allow = mask_to_text(am);
        sc.deny = mask_to_text(dm);
        if (!sc.allow || !sc.deny) {
            free(sc.allow);
            free(sc.deny);
            return TW_ENOMEM;
        }
    }
    acl *fresh = NULL;
    if (!clear && !(fresh = calloc(1, sizeof *fresh))) {
        free(sc.allow);
        free(sc.deny);
        return TW_ENOMEM;
    }

    pthread_mutex_lock(&az->set_lock);
    int rc = 0;
    pthread_rwlock_rdlock(&az->lock);
    bool exists = tw_hmap_get(&az->acls, thing_id) != NULL;
    size_t n = az->acls.len;
    pthread_rwlock_unlock(&az->lock);
    if (!clear && !exists && n >= MAX_ACLS) rc = TW_EFULL;
    if (rc == 0) rc = tw_store_exec(az->store, set_job, &sc);
    if (rc == 0) {
        pthread_rwlock_wrlock(&az->lock);
        if (clear) {
            free(tw_hmap_del(&az->acls, thing_id));
        } else {
            int err = 0;
            fresh->allow = am;
            fresh->deny = dm;
            free(tw_hmap_put(&az->acls, thing_id, fresh, &err));
            if (err)
                rc = TW_ENOMEM; /* the row is stored: it applies from the next start */
            else
                fresh = NULL;
        }
        pthread_rwlock_unlock(&az->lock);
    }
    pthread_mutex_unlock(&az->set_lock);
    free(fresh);
    free(sc.allow);
    free(sc.deny);
    if (rc == 0) tw_log_info("authz", "access lists of %s %s", thing_id, clear ? "cleared" : "set");
    return rc;
}

int tw_authz_get_thing_acl(tw_authz *az, const char *thing_id, json_t **out)
{
    if (!az || !out || !thing_id_ok(thing_id)) return TW_EINVAL;
    uint32_t am = 0, dm = 0;
    pthread_rwlock_rdlock(&az->lock);
    const acl *a = tw_hmap_get(&az->acls, thing_id);
    if (a) {
        am = a->allow;
        dm = a->deny;
    }
    pthread_rwlock_unlock(&az->lock);
    json_t *o = json_object();
    if (!o) return TW_ENOMEM;
    json_object_set_new(o, "thingID", json_string(thing_id));
    json_object_set_new(o, "allow", mask_to_roles(am));
    json_object_set_new(o, "deny", mask_to_roles(dm));
    *out = o;
    return 0;
}

/* The agent a thing id names: owner_agent, else the agent part of a twin id.
 * NULL when neither says (an agent-local id or no thing at all). */
static const char *thing_owner(const char *thing, const char *owner_agent, char *buf, size_t n)
{
    if (owner_agent) return owner_agent;
    if (!thing || strncmp(thing, "dtw:", 4) != 0) return NULL;
    const char *a = thing + 4, *colon = strchr(a, ':');
    if (!colon || (size_t)(colon - a) >= n) return "";
    memcpy(buf, a, (size_t)(colon - a));
    buf[colon - a] = 0;
    return buf;
}

int tw_authz_check(tw_authz *az, const tw_identity *id, const tw_msg *m, const char *owner_agent)
{
    if (!m) return TW_EPERM;
    tw_role role = id ? id->role : TW_ROLE_NONE;
    const char *client = id ? id->client_id : "";
    tw_msg_type type = tw_msg_get_type(m);
    tw_op op = tw_msg_get_op(m);
    const char *thing = tw_msg_thing(m);
    char buf[TW_ID_MAX];
    const char *owner = thing_owner(thing, owner_agent, buf, sizeof buf);
    bool own = owner && *client && strcmp(owner, client) == 0;

    if (type == TW_TYPE_RESPONSE || type == TW_TYPE_NOTIFICATION) {
        if (!tw_authz_role_allows(role, type, op)) return TW_EPERM;
        /* agent-local ids (owner NULL) are the sender's own Things */
        return owner == NULL || own ? 0 : TW_EPERM;
    }
    if (type != TW_TYPE_REQUEST || op <= TW_OP_NONE || op >= TW_OP__COUNT) return TW_EPERM;

    bool allowed = tw_authz_role_allows(role, type, op);
    uint64_t bit = BIT(op);
    /* agents and services manage only their own Things; a Thing not known yet
     * (owner NULL) is created under the sender's own id by the router */
    if (allowed && (bit & OPS_MANAGE) && publisher(role) && owner && !own) allowed = false;
    if ((bit & OPS_EVERYONE) || !thing || !az || own) return allowed ? 0 : TW_EPERM;

    pthread_rwlock_rdlock(&az->lock);
    const acl *a = tw_hmap_get(&az->acls, thing);
    uint32_t am = a ? a->allow : 0, dm = a ? a->deny : 0;
    pthread_rwlock_unlock(&az->lock);
    uint32_t rbit = 1u << role;
    if (dm & rbit) return TW_EPERM;
    if (am) {
        if (!(am & rbit)) return TW_EPERM;
        if (bit & OPS_CONSUMER) allowed = true;
    }
    return allowed ? 0 : TW_EPERM;
}
