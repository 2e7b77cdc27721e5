/*
 * twin_mem.c - the in-memory twin: a hash map of twin id -> TD and one of
 * "twin\nkind\nname" -> value. Affordance flags come from the TD: an action
 * is RPC when "safe" is true; "twind:queueable": false and
 * "twind:maxTTL" (seconds) tune queueing, as in the real twin.
 */
#include "twin_mem.h"

#include "hmap.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct tw_twin_mem {
    pthread_mutex_t lock;
    tw_hmap tds;    /* twin id -> json_t* (TD) */
    tw_hmap values; /* key -> json_t* {value, timestamp} */
};

tw_twin_mem *tw_twin_mem_new(void)
{
    tw_twin_mem *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    pthread_mutex_init(&t->lock, NULL);
    tw_hmap_init(&t->tds);
    tw_hmap_init(&t->values);
    return t;
}

static void free_values(tw_hmap *m)
{
    size_t pos = 0;
    void *v;
    while (tw_hmap_next(m, &pos, NULL, &v))
        json_decref(v);
    tw_hmap_fini(m);
}

void tw_twin_mem_free(tw_twin_mem *t)
{
    if (!t) return;
    free_values(&t->tds);
    free_values(&t->values);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

static const char *kind_member(tw_aff_kind k)
{
    return k == TW_AFF_ACTION ? "actions" : k == TW_AFF_EVENT ? "events" : "properties";
}

static int lookup(void *ctx, const char *twin_id, tw_aff_kind kind, const char *name,
                  tw_aff_info *out)
{
    tw_twin_mem *t = ctx;
    memset(out, 0, sizeof *out);
    int rc = 0;
    pthread_mutex_lock(&t->lock);
    json_t *td = tw_hmap_get(&t->tds, twin_id);
    json_t *aff = name && td ? json_object_get(json_object_get(td, kind_member(kind)), name) : NULL;
    if (!td || (name && !aff)) {
        rc = TW_ENOTFOUND;
    } else {
        char buf[TW_THING_ID_MAX];
        const char *agent, *thing;
        if (tw_twin_id_split(twin_id, buf, &agent, &thing) == 0)
            tw_strlcpy(out->agent_id, agent, sizeof out->agent_id);
        out->safe = json_is_true(json_object_get(aff, "safe"));
        out->read_only = json_is_true(json_object_get(aff, "readOnly"));
        json_t *q = json_object_get(aff, "twind:queueable");
        out->queueable = q ? json_is_true(q) : true;
        json_t *ttl = json_object_get(aff, "twind:maxTTL");
        out->max_ttl_ms = json_is_number(ttl) ? (int64_t)(json_number_value(ttl) * 1000) : 0;
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

static void value_key(char *buf, size_t n, const char *twin_id, tw_aff_kind kind, const char *name)
{
    snprintf(buf, n, "%s\n%d\n%s", twin_id, (int)kind, name);
}

static int store_value(void *ctx, const char *twin_id, tw_aff_kind kind, const char *name,
                       bool declared, json_t *value, int64_t ts_ms, bool *changed)
{
    (void)declared;
    tw_twin_mem *t = ctx;
    char key[TW_THING_ID_MAX + 300], ts[TW_TIME_LEN];
    value_key(key, sizeof key, twin_id, kind, name ? name : "");
    tw_time_format(ts_ms, ts);
    json_t *entry = json_pack("{s:O,s:s}", "value", value, "timestamp", ts);
    if (!entry) return TW_ENOMEM;
    int err = 0;
    pthread_mutex_lock(&t->lock);
    json_t *old = tw_hmap_put(&t->values, key, entry, &err);
    pthread_mutex_unlock(&t->lock);
    if (err) {
        json_decref(entry);
        return TW_ENOMEM;
    }
    *changed = !old || !json_equal(json_object_get(old, "value"), value);
    json_decref(old);
    return 0;
}

static int read_op(void *ctx, const tw_msg *req, json_t **output, json_t **problem)
{
    tw_twin_mem *t = ctx;
    const char *twin_id = tw_msg_thing(req), *name = tw_msg_name(req);
    tw_op op = tw_msg_get_op(req);
    tw_aff_kind kind =
        op == TW_OP_READEVENT || op == TW_OP_READALLEVENTS ? TW_AFF_EVENT : TW_AFF_PROPERTY;
    char key[TW_THING_ID_MAX + 300];
    int rc = 0;
    pthread_mutex_lock(&t->lock);
    if (!tw_hmap_get(&t->tds, twin_id)) {
        rc = TW_ENOTFOUND;
    } else if (op == TW_OP_READPROPERTY || op == TW_OP_READEVENT) {
        value_key(key, sizeof key, twin_id, kind, name);
        json_t *e = tw_hmap_get(&t->values, key);
        if (e)
            *output = json_deep_copy(json_object_get(e, "value"));
        else
            rc = TW_ENOTFOUND;
    } else {
        json_t *names = tw_msg_get(req, "input"); /* readmultipleproperties: array of names */
        json_t *out = json_object();
        json_t *affs = json_object_get(tw_hmap_get(&t->tds, twin_id), kind_member(kind));
        const char *k;
        json_t *v;
        json_object_foreach(affs, k, v)
        {
            if (json_is_array(names)) {
                bool wanted = false;
                size_t i;
                json_t *n;
                json_array_foreach(names, i, n) wanted |=
                    json_is_string(n) && strcmp(json_string_value(n), k) == 0;
                if (!wanted) continue;
            }
            value_key(key, sizeof key, twin_id, kind, k);
            json_t *e = tw_hmap_get(&t->values, key);
            if (e) json_object_set(out, k, json_object_get(e, "value"));
        }
        *output = out;
    }
    pthread_mutex_unlock(&t->lock);
    if (rc) *problem = tw_problem_from_error(rc, "no value yet", "name");
    return rc;
}

static int update_thing(void *ctx, const char *agent_id, json_t *td, char **twin_id,
                        json_t **problem)
{
    tw_twin_mem *t = ctx;
    json_t *id = json_object_get(td, "id");
    if (!json_is_string(id)) {
        *problem = tw_problem_new(400, "invalid-td", "invalid input", "the TD needs an 'id'", "id");
        return TW_EINVAL;
    }
    char tid[TW_THING_ID_MAX];
    if (tw_twin_id_make(agent_id, json_string_value(id), tid, sizeof tid)) {
        *problem =
            tw_problem_new(400, "invalid-td", "invalid input", "the TD id is too long", "id");
        return TW_EINVAL;
    }
    json_t *copy = json_deep_copy(td);
    json_object_set_new(copy, "id", json_string(tid));
    int err = 0;
    pthread_mutex_lock(&t->lock);
    json_decref(tw_hmap_put(&t->tds, tid, copy, &err));
    pthread_mutex_unlock(&t->lock);
    if (err) {
        json_decref(copy);
        return TW_ENOMEM;
    }
    *twin_id = strdup(tid);
    return 0;
}

static int delete_thing(void *ctx, const char *agent_id, const char *twin_id, json_t **problem)
{
    tw_twin_mem *t = ctx;
    char buf[TW_THING_ID_MAX];
    const char *agent, *thing;
    if (agent_id &&
        (tw_twin_id_split(twin_id, buf, &agent, &thing) || strcmp(agent, agent_id) != 0)) {
        *problem = tw_problem_from_error(TW_EPERM, "not your Thing", "thingID");
        return TW_EPERM;
    }
    pthread_mutex_lock(&t->lock);
    json_t *td = tw_hmap_del(&t->tds, twin_id);
    pthread_mutex_unlock(&t->lock);
    if (!td) {
        *problem = tw_problem_from_error(TW_ENOTFOUND, "no such Thing", "thingID");
        return TW_ENOTFOUND;
    }
    json_decref(td);
    return 0;
}

static const tw_twin_ops ops = {lookup, store_value, read_op, update_thing, delete_thing};

const tw_twin_ops *tw_twin_mem_ops(void)
{
    return &ops;
}
