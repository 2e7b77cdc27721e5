/*
 * middleware.c - the router's stages and the chain that runs them.
 *
 *   log       one structured line per request once it is answered (client, op,
 *             thing, name, status, microseconds); notifications are counted,
 *             not logged, so an agent streaming values cannot flood the log
 *   authn     only login and ping pass an unauthenticated connection; an
 *             identity whose token expired is refused; senderID is stamped
 *             from the identity (a client-supplied one is overwritten)
 *   authz     the role table and per-Thing lists (authz.h)
 *   rate      a token bucket per client (or per address before login)
 *   validate  the addressed Thing and affordance exist and may be used so
 *             (e.g. no write to a readOnly property, no expiry in the past)
 *
 * A new stage is one `before` function and one line in `stages` below.
 */
#include "authz.h"
#include "hmap.h"
#include "log.h"
#include "runtime_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- log --------------------------------------------------------------- */

static int log_before(void *state, tw_mw_call *call)
{
    return 0;
}

static void log_after(void *state, const tw_mw_call *call)
{
    tw_msg *m = call->msg;
    if (tw_msg_get_type(m) != TW_TYPE_REQUEST || tw_log_get_level() < TW_LOG_INFO) return;
    const tw_identity *id = tw_conn_identity(call->conn);
    tw_log_info("request", "client=%s op=%s thing=%s name=%s status=%d us=%lld",
                id ? id->client_id : "-", tw_op_name(tw_msg_get_op(m)),
                tw_msg_thing(m) ? tw_msg_thing(m) : "-", tw_msg_name(m) ? tw_msg_name(m) : "-",
                call->status, (long long)(tw_mono_us() - call->start_us));
}

/* ---- authn ------------------------------------------------------------- */

int tw_mw_own(tw_mw_call *call)
{
    if (tw_msg_writable(call->msg)) return 0;
    tw_msg *copy = tw_msg_copy(call->msg);
    if (!copy) return TW_ENOMEM;
    if (call->msg != call->orig) tw_msg_unref(call->msg);
    call->msg = copy;
    return 0;
}

static int authn_before(void *state, tw_mw_call *call)
{
    tw_op op = tw_msg_get_op(call->msg);
    const tw_identity *id = tw_conn_identity(call->conn);
    if (!id) {
        if (tw_msg_get_type(call->msg) == TW_TYPE_REQUEST &&
            (op == TW_OP_LOGIN || op == TW_OP_PING))
            return 0;
        call->problem =
            tw_problem_new(401, "unauthenticated", "not authenticated",
                           "log in first (operation 'login') or send a bearer token", NULL);
        return TW_EAUTH;
    }
    if (id->expires_ms && id->expires_ms <= tw_now_ms() && op != TW_OP_LOGIN && op != TW_OP_PING) {
        call->problem = tw_problem_new(401, "token-expired", "not authenticated",
                                       "the token of this connection has expired", NULL);
        return TW_EAUTH;
    }
    const char *sender = tw_msg_sender(call->msg);
    if (!sender || strcmp(sender, id->client_id) != 0) {
        if (tw_mw_own(call)) return TW_ENOMEM;
        tw_msg_set_str(call->msg, "senderID", id->client_id);
    }
    return 0;
}

/* ---- authz ------------------------------------------------------------- */

static int authz_before(void *state, tw_mw_call *call)
{
    const tw_identity *id = tw_conn_identity(call->conn);
    if (!id) return 0; /* login/ping, let through by authn */
    char buf[TW_THING_ID_MAX];
    const char *owner = NULL, *agent, *thing;
    if (call->local_thing)
        owner = id->client_id;
    else if (call->twin_id[0] && tw_twin_id_split(call->twin_id, buf, &agent, &thing) == 0)
        owner = agent;
    int rc =
        call->rt->authz
            ? tw_authz_check(call->rt->authz, id, call->msg, owner)
            : (tw_authz_role_allows(id->role, tw_msg_get_type(call->msg), tw_msg_get_op(call->msg))
                   ? 0
                   : TW_EPERM);
    if (rc) {
        char detail[TW_THING_ID_MAX + 100];
        snprintf(detail, sizeof detail, "role '%s' may not %s %s", tw_role_name(id->role),
                 tw_op_name(tw_msg_get_op(call->msg)), call->twin_id[0] ? call->twin_id : "here");
        call->problem = tw_problem_new(403, "forbidden", "forbidden", detail, NULL);
        return TW_EPERM;
    }
    return 0;
}

/* ---- rate -------------------------------------------------------------- */

#define RATE_SHARDS 16
#define RATE_MAX_CLIENTS_PER_SHARD 4096

typedef struct bucket {
    double tokens;
    int64_t last_us;
} bucket;

typedef struct rate_state {
    double rate, burst;
    struct {
        pthread_mutex_t lock;
        tw_hmap buckets;
    } shard[RATE_SHARDS];
} rate_state;

static int rate_init(tw_runtime *rt, json_t *config, void **state)
{
    rate_state *rs = calloc(1, sizeof *rs);
    if (!rs) return TW_ENOMEM;
    rs->rate = rt->cfg->rate;
    rs->burst = rt->cfg->burst;
    json_t *sec = json_object_get(config, "rate");
    if (json_is_object(sec)) {
        if (json_is_number(json_object_get(sec, "per_second")))
            rs->rate = json_number_value(json_object_get(sec, "per_second"));
        if (json_is_number(json_object_get(sec, "burst")))
            rs->burst = json_number_value(json_object_get(sec, "burst"));
    }
    for (int i = 0; i < RATE_SHARDS; i++) {
        pthread_mutex_init(&rs->shard[i].lock, NULL);
        tw_hmap_init(&rs->shard[i].buckets);
    }
    *state = rs;
    return 0;
}

static void rate_fini(void *state)
{
    rate_state *rs = state;
    for (int i = 0; i < RATE_SHARDS; i++) {
        size_t pos = 0;
        void *v;
        while (tw_hmap_next(&rs->shard[i].buckets, &pos, NULL, &v))
            free(v);
        tw_hmap_fini(&rs->shard[i].buckets);
        pthread_mutex_destroy(&rs->shard[i].lock);
    }
    free(rs);
}

static int rate_before(void *state, tw_mw_call *call)
{
    rate_state *rs = state;
    const tw_identity *id = tw_conn_identity(call->conn);
    const char *key = id ? id->client_id : tw_conn_remote(call->conn);
    int shard = (int)(tw_hash_str(key) % RATE_SHARDS);
    int64_t now = call->start_us; /* routing began a moment ago: no second clock read */
    double retry = 0;
    pthread_mutex_lock(&rs->shard[shard].lock);
    tw_hmap *map = &rs->shard[shard].buckets;
    bucket *b = tw_hmap_get(map, key);
    if (!b) {
        if (map->len >= RATE_MAX_CLIENTS_PER_SHARD) { /* bounded: forget idle buckets */
            size_t pos = 0;
            const char *k;
            void *v;
            while (tw_hmap_next(map, &pos, &k, &v)) {
                bucket *old = v;
                if (now - old->last_us > 60 * 1000000LL) {
                    free(tw_hmap_del(map, k));
                }
            }
        }
        b = calloc(1, sizeof *b);
        int err = 0;
        if (b) {
            b->tokens = rs->burst;
            b->last_us = now;
            tw_hmap_put(map, key, b, &err);
            if (err) {
                free(b);
                b = NULL;
            }
        }
    }
    if (b) {
        b->tokens += (double)(now - b->last_us) / 1e6 * rs->rate;
        if (b->tokens > rs->burst) b->tokens = rs->burst;
        b->last_us = now;
        if (b->tokens >= 1)
            b->tokens -= 1;
        else
            retry = (1 - b->tokens) / rs->rate;
    }
    pthread_mutex_unlock(&rs->shard[shard].lock);
    if (retry > 0) {
        char detail[120];
        int secs = (int)ceil(retry);
        snprintf(detail, sizeof detail, "more than %g requests per second; retry in %d s", rs->rate,
                 secs < 1 ? 1 : secs);
        call->problem = tw_problem_new(429, "rate-limited", "too many requests", detail, NULL);
        json_object_set_new(call->problem, "retryAfter", json_integer(secs < 1 ? 1 : secs));
        return TW_ERATE;
    }
    return 0;
}

/* ---- validate ---------------------------------------------------------- */

static int validate_before(void *state, tw_mw_call *call)
{
    tw_msg *m = call->msg;
    tw_msg_type type = tw_msg_get_type(m);
    tw_op op = tw_msg_get_op(m);
    const char *name = tw_msg_name(m);
    tw_runtime *rt = call->rt;
    if (!rt->twin || !call->twin_id[0]) return 0;
    /* Requests for in-process services are the service's to check. */
    pthread_rwlock_rdlock(&rt->services_lock);
    bool service = tw_hmap_get(&rt->services, call->twin_id) != NULL;
    pthread_rwlock_unlock(&rt->services_lock);
    if (service) return 0;

    tw_aff_kind kind;
    bool by_name = false;
    switch (op) {
    case TW_OP_INVOKEACTION:
        kind = TW_AFF_ACTION;
        by_name = type != TW_TYPE_NOTIFICATION || name;
        break;
    case TW_OP_READPROPERTY:
    case TW_OP_WRITEPROPERTY:
    case TW_OP_OBSERVEPROPERTY:
        kind = TW_AFF_PROPERTY;
        by_name = name != NULL;
        break;
    case TW_OP_SUBSCRIBEEVENT:
    case TW_OP_READEVENT:
        kind = TW_AFF_EVENT;
        by_name = name != NULL;
        break;
    case TW_OP_UPDATETHING:
        return 0; /* the twin validates the TD itself */
    default:
        kind = TW_AFF_PROPERTY;
        break;
    }
    /* Unsubscribing from something that is gone must still work. */
    if (op == TW_OP_UNOBSERVEPROPERTY || op == TW_OP_UNSUBSCRIBEEVENT ||
        op == TW_OP_UNOBSERVEALLPROPERTIES || op == TW_OP_UNSUBSCRIBEALLEVENTS ||
        op == TW_OP_DELETETHING || op == TW_OP_QUERYACTION || op == TW_OP_CANCELACTION)
        return 0;
    if (name && strcmp(name, "*") == 0) by_name = false;
    int rc = rt->twin->lookup(rt->twin_ctx, call->twin_id, kind, by_name ? name : NULL, &call->aff);
    char detail[TW_THING_ID_MAX + 300];
    if (rc == TW_ENOTFOUND) {
        if (by_name)
            snprintf(detail, sizeof detail, "'%s' has no %s '%.200s'", call->twin_id,
                     kind == TW_AFF_ACTION  ? "action"
                     : kind == TW_AFF_EVENT ? "event"
                                            : "property",
                     name);
        else
            snprintf(detail, sizeof detail, "no Thing '%s' in the directory", call->twin_id);
        call->problem =
            tw_problem_new(404, "not-found", "not found", detail, by_name ? "name" : "thingID");
        return TW_ENOTFOUND;
    }
    if (rc) {
        call->problem = tw_problem_from_error(rc, "looking up the Thing failed", "thingID");
        return rc;
    }
    call->aff_found = by_name;
    if (type == TW_TYPE_REQUEST && op == TW_OP_WRITEPROPERTY && call->aff.read_only) {
        snprintf(detail, sizeof detail, "property '%.200s' is read-only", name);
        call->problem = tw_problem_new(400, "read-only", "invalid input", detail, "name");
        return TW_EINVAL;
    }
    json_t *exp = tw_msg_get(m, "expires");
    int64_t ms;
    if (exp && tw_time_parse(json_string_value(exp), &ms) == 0 && ms <= tw_now_ms()) {
        call->problem =
            tw_problem_new(400, "expired", "invalid input", "'expires' is in the past", "expires");
        return TW_EINVAL;
    }
    return 0;
}

/* ---- the table and the chain ------------------------------------------- */

static const tw_middleware stages[] = {
    {"log", log_before, log_after, NULL, NULL},
    {"authn", authn_before, NULL, NULL, NULL},
    {"authz", authz_before, NULL, NULL, NULL},
    {"rate", rate_before, NULL, rate_init, rate_fini},
    {"validate", validate_before, NULL, NULL, NULL},
};

static const char *const default_chain[] = {"log", "authn", "authz", "rate", "validate"};

#define MAX_STAGES 16

struct tw_mw_chain {
    int n;
    const tw_middleware *mw[MAX_STAGES];
    void *state[MAX_STAGES];
};

const tw_middleware *tw_middleware_find(const char *name)
{
    for (size_t i = 0; i < sizeof stages / sizeof stages[0]; i++)
        if (strcmp(stages[i].name, name) == 0) return &stages[i];
    return NULL;
}

static int add_stage(tw_runtime *rt, tw_mw_chain *ch, const char *name, json_t *config, char *err,
                     size_t errlen)
{
    const tw_middleware *mw = tw_middleware_find(name);
    if (!mw) {
        snprintf(err, errlen, "unknown middleware stage '%s'", name);
        return TW_EINVAL;
    }
    if (ch->n == MAX_STAGES) {
        snprintf(err, errlen, "more than %d middleware stages", MAX_STAGES);
        return TW_EINVAL;
    }
    void *state = NULL;
    if (mw->init) {
        int rc = mw->init(rt, config, &state);
        if (rc) {
            snprintf(err, errlen, "middleware '%s': %s", name, tw_strerror(rc));
            return rc;
        }
    }
    ch->mw[ch->n] = mw;
    ch->state[ch->n++] = state;
    return 0;
}

int tw_mw_chain_new(tw_runtime *rt, json_t *names, json_t *config, tw_mw_chain **out, char *err,
                    size_t errlen)
{
    tw_mw_chain *ch = calloc(1, sizeof *ch);
    if (!ch) return TW_ENOMEM;
    int rc = 0;
    if (names) {
        size_t i;
        json_t *v;
        json_array_foreach(names, i, v)
        {
            if (!json_is_string(v)) {
                snprintf(err, errlen, "middleware names must be strings");
                rc = TW_EINVAL;
                break;
            }
            if ((rc = add_stage(rt, ch, json_string_value(v), config, err, errlen))) break;
        }
    } else {
        for (size_t i = 0; i < sizeof default_chain / sizeof default_chain[0] && !rc; i++)
            rc = add_stage(rt, ch, default_chain[i], config, err, errlen);
    }
    if (rc) {
        tw_mw_chain_free(ch);
        return rc;
    }
    *out = ch;
    return 0;
}

void tw_mw_chain_free(tw_mw_chain *ch)
{
    if (!ch) return;
    for (int i = 0; i < ch->n; i++)
        if (ch->mw[i]->fini) ch->mw[i]->fini(ch->state[i]);
    free(ch);
}

int tw_mw_chain_before(tw_mw_chain *ch, tw_mw_call *call)
{
    for (int i = 0; i < ch->n; i++) {
        int rc = ch->mw[i]->before(ch->state[i], call);
        if (rc) {
            if (!call->problem) call->problem = tw_problem_from_error(rc, NULL, NULL);
            json_t *st = json_object_get(call->problem, "status");
            call->status =
                json_is_integer(st) ? (int)json_integer_value(st) : tw_error_http_status(rc);
            return rc;
        }
    }
    return 0;
}

void tw_mw_chain_after(tw_mw_chain *ch, const tw_mw_call *call)
{
    for (int i = ch->n - 1; i >= 0; i--)
        if (ch->mw[i]->after) ch->mw[i]->after(ch->state[i], call);
}
