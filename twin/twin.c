/*
 * twin.c - the twin as the runtime sees it: tw_twin_open/close and the
 * tw_twin_ops table (runtime/twin_ops.h) over the directory and value store.
 *
 * update_thing validates the agent's TD (forms and security may be absent:
 * they are replaced), derives the twin TD (derive.c) and stores both in the
 * directory, owned by the agent. delete_thing deletes from the directory; a
 * directory subscription drops the Thing's values on every delete, whichever
 * API deleted it. Reads are answered from the value store, restricted to the
 * affordances the TD still has. A maintenance thread purges expired TDs once
 * a second.
 */
#include "runtime/log.h"
#include "runtime/router.h"
#include "twin/td_validate.h"
#include "twin/twin_int.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MOD "twin"
#define PURGE_PERIOD_MS 1000

static const char *kind_member(tw_aff_kind k)
{
    return k == TW_AFF_ACTION ? "actions" : k == TW_AFF_EVENT ? "events" : "properties";
}

/* ---- ops ---------------------------------------------------------------- */

/* The members of an affordance the router needs. Every event passes here:
 * a small affordance (the usual: data or input/output, a title, forms) is
 * read in one walk over its members rather than with four hashed lookups of
 * names it mostly does not have. */
static void aff_fields(json_t *aff, tw_aff_info *out)
{
    json_t *safe = NULL, *ro = NULL, *q = NULL, *ttl = NULL;
    if (json_object_size(aff) <= 8) {
        const char *k;
        json_t *v;
        json_object_foreach(aff, k, v)
        {
            switch (k[0]) {
            case 's':
                if (strcmp(k, "safe") == 0) safe = v;
                break;
            case 'r':
                if (strcmp(k, "readOnly") == 0) ro = v;
                break;
            case 't':
                if (strcmp(k, "twind:queueable") == 0)
                    q = v;
                else if (strcmp(k, "twind:maxTTL") == 0)
                    ttl = v;
                break;
            default:
                break;
            }
        }
    } else {
        safe = json_object_get(aff, "safe");
        ro = json_object_get(aff, "readOnly");
        q = json_object_get(aff, "twind:queueable");
        ttl = json_object_get(aff, "twind:maxTTL");
    }
    out->safe = json_is_true(safe);
    out->read_only = json_is_true(ro);
    out->queueable = q ? json_is_true(q) : true;
    out->max_ttl_ms = json_is_number(ttl) && json_number_value(ttl) > 0
                          ? (int64_t)(json_number_value(ttl) * 1000)
                          : 0;
}

static int op_lookup(void *ctx, const char *twin_id, tw_aff_kind kind, const char *name,
                     tw_aff_info *out)
{
    tw_twin *t = ctx;
    tw_dir_info info;
    json_t *td = NULL;
    memset(out, 0, sizeof *out);
    int rc = tw_dir_get_info(t->dir, twin_id, &info, &td, NULL);
    if (rc) return rc;
    tw_strlcpy(out->agent_id, info.agent_id, sizeof out->agent_id);
    if (name) {
        json_t *aff = json_object_get(json_object_get(td, kind_member(kind)), name);
        if (!json_is_object(aff))
            rc = TW_ENOTFOUND;
        else
            aff_fields(aff, out);
    }
    json_decref(td);
    return rc;
}

/* True when the twin's TD has an affordance of that kind and name. */
static bool has_affordance(tw_twin *t, const char *twin_id, tw_aff_kind kind, const char *name)
{
    json_t *td = NULL;
    if (tw_dir_get_info(t->dir, twin_id, NULL, &td, NULL)) return false;
    bool ok = json_object_get(json_object_get(td, kind_member(kind)), name) != NULL;
    json_decref(td);
    return ok;
}

static int op_store_value(void *ctx, const char *twin_id, tw_aff_kind kind, const char *name,
                          bool declared, json_t *value, int64_t ts_ms, bool *changed)
{
    tw_twin *t = ctx;
    if (kind == TW_AFF_ACTION || !name) return TW_EINVAL;
    /* Only affordances the TD declares: this bounds the store by the TDs.
     * (Once per message: a caller that just looked it up says so.) */
    if (!declared && !has_affordance(t, twin_id, kind, name)) return TW_ENOTFOUND;
    return tw_values_set(t->values, twin_id, kind, name, value, ts_ms, changed);
}

/* Keeps only the members of obj that the TD declares under member. */
static void keep_declared(json_t *obj, json_t *td, const char *member)
{
    json_t *affs = json_object_get(td, member);
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(obj, tmp, k, v) if (!json_object_get(affs, k)) json_object_del(obj, k);
}

static int op_read(void *ctx, const tw_msg *req, json_t **output, json_t **problem)
{
    tw_twin *t = ctx;
    const char *twin_id = tw_msg_thing(req), *name = tw_msg_name(req);
    tw_op op = tw_msg_get_op(req);
    *output = NULL;
    *problem = NULL;
    tw_aff_kind kind =
        op == TW_OP_READEVENT || op == TW_OP_READALLEVENTS ? TW_AFF_EVENT : TW_AFF_PROPERTY;
    json_t *td = NULL;
    int rc = twin_id ? tw_dir_get_info(t->dir, twin_id, NULL, &td, NULL) : TW_EINVAL;
    if (rc) {
        *problem = tw_problem_from_error(rc, "no such Thing", "thingID");
        return rc;
    }
    switch (op) {
    case TW_OP_READPROPERTY:
    case TW_OP_READEVENT:
        if (!name) {
            rc = TW_EINVAL;
            *problem = tw_problem_from_error(rc, "a name is required", "name");
        } else if (!json_object_get(json_object_get(td, kind_member(kind)), name)) {
            rc = TW_ENOTFOUND;
            *problem = tw_problem_from_error(
                rc, kind == TW_AFF_EVENT ? "no such event" : "no such property", "name");
        } else if ((rc = tw_values_get(t->values, twin_id, kind, name, output, NULL))) {
            *problem = tw_problem_from_error(rc, "no value yet", "name");
        }
        break;
    case TW_OP_READALLPROPERTIES:
    case TW_OP_READALLEVENTS:
    case TW_OP_READMULTIPLEPROPERTIES: {
        rc = tw_values_get_all(t->values, twin_id, kind, false, output);
        if (rc) break;
        keep_declared(*output, td, kind_member(kind));
        if (op != TW_OP_READMULTIPLEPROPERTIES) break;
        json_t *names = tw_msg_get(req, "input");
        if (json_is_object(names)) names = json_object_get(names, "names");
        if (!json_is_array(names)) {
            rc = TW_EINVAL;
            *problem = tw_problem_from_error(rc, "input is an array of property names", "input");
            break;
        }
        json_t *sel = json_object();
        size_t i;
        json_t *n;
        json_array_foreach(names, i, n)
        {
            json_t *v = json_is_string(n) ? json_object_get(*output, json_string_value(n)) : NULL;
            if (v) json_object_set(sel, json_string_value(n), v);
        }
        json_decref(*output);
        *output = sel;
        if (!sel) rc = TW_ENOMEM;
        break;
    }
    default:
        rc = TW_EUNSUPPORTED;
        *problem = tw_problem_from_error(rc, "not a read operation", "operation");
    }
    json_decref(td);
    if (rc) {
        json_decref(*output);
        *output = NULL;
        if (!*problem) *problem = tw_problem_from_error(rc, NULL, NULL);
    }
    return rc;
}

/* True when id is stored, owned by agent_id, with these very TDs. */
static bool unchanged(tw_twin *t, const char *id, const char *agent_id, json_t *agent_td,
                      json_t *twin_td)
{
    tw_dir_info info;
    json_t *cur = NULL, *cur_agent = NULL;
    if (tw_dir_get_info(t->dir, id, &info, &cur, &cur_agent) != 0) return false;
    bool same = strcmp(info.agent_id, agent_id) == 0 && json_equal(cur, twin_td) && cur_agent &&
                json_equal(cur_agent, agent_td);
    json_decref(cur);
    json_decref(cur_agent);
    return same;
}

static int op_update_thing(void *ctx, const char *agent_id, json_t *td, char **twin_id,
                           json_t **problem)
{
    tw_twin *t = ctx;
    *twin_id = NULL;
    if (problem) *problem = NULL;
    json_t *errors = NULL;
    int rc = tw_td_validate(
        td, TW_TDV_FORMS_OPTIONAL | TW_TDV_SECURITY_OPTIONAL | TW_TDV_ID_REQUIRED, &errors);
    if (rc) {
        if (problem)
            *problem =
                rc == TW_EINVAL ? tw_td_problem(errors) : tw_problem_from_error(rc, NULL, NULL);
        else
            json_decref(errors);
        return rc;
    }
    json_t *twin_td = NULL;
    rc = tw_twin_derive(t->rt, agent_id, td, &twin_td);
    if (rc) {
        if (problem)
            *problem =
                tw_problem_from_error(rc, "the Thing id is too long for a twin id", "input.id");
        return rc;
    }
    char *out = strdup(json_string_value(json_object_get(twin_td, "id")));
    /* Agents publish their TDs on every connect: an unchanged TD is not a
     * change (no write, no thing_updated event). */
    if (out && unchanged(t, out, agent_id, td, twin_td)) {
        json_decref(twin_td);
        *twin_id = out;
        return 0;
    }
    /* the directory takes the twin TD we just built: no copy */
    tw_dir_put_opts o = {.agent_id = agent_id, .agent_td = td, .skip_validate = true, .take = true};
    rc = out ? tw_dir_put(t->dir, out, twin_td, &o, NULL, problem) : TW_ENOMEM;
    if (!out) json_decref(twin_td);
    if (rc) {
        free(out);
        return rc;
    }
    *twin_id = out;
    return 0;
}

static int op_delete_thing(void *ctx, const char *agent_id, const char *twin_id, json_t **problem)
{
    tw_twin *t = ctx;
    int rc = tw_dir_delete(t->dir, twin_id, agent_id);
    if (rc && problem)
        *problem = tw_problem_from_error(
            rc, rc == TW_EPERM ? "an agent deletes only its own Things" : "no such Thing",
            "thingID");
    return rc;
}

static const tw_twin_ops OPS = {
    .lookup = op_lookup,
    .store_value = op_store_value,
    .read = op_read,
    .update_thing = op_update_thing,
    .delete_thing = op_delete_thing,
};

const tw_twin_ops *tw_twin_ops_table(void)
{
    return &OPS;
}

/* ---- lifecycle ---------------------------------------------------------- */

static void on_change(void *ctx, const tw_dir_change *ch)
{
    tw_twin *t = ctx;
    if (ch->kind == TW_DIR_DELETED) {
        tw_values_delete_twin(t->values, ch->id);
        /* however it left (router, TDD DELETE, expiry): its actions fail */
        tw_router_thing_deleted(t->rt, ch->id);
    }
}

static void *maintenance(void *arg)
{
    tw_twin *t = arg;
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += PURGE_PERIOD_MS / 1000;
        while (!t->stop && pthread_cond_timedwait(&t->cv, &t->mu, &dl) == 0) {
        }
        if (t->stop) break;
        pthread_mutex_unlock(&t->mu);
        tw_dir_purge_expired(t->dir, tw_now_ms(), NULL);
        pthread_mutex_lock(&t->mu);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* Reads a non-negative integer member of the "twin" config section. */
static int config_count(json_t *sec, const char *key, size_t *out)
{
    json_t *v = json_object_get(sec, key);
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        tw_log_error(MOD, "config: twin.%s must be a non-negative integer", key);
        return TW_EINVAL;
    }
    *out = (size_t)json_integer_value(v);
    return 0;
}

/* The optional "twin" section of the config file: limits of the directory
 * and the value store (0 or absent = the defaults of directory.h/values.h). */
static int read_config(const tw_config *cfg, tw_dir_opts *d, tw_values_opts *v)
{
    memset(d, 0, sizeof *d);
    memset(v, 0, sizeof *v);
    json_t *sec = cfg ? tw_config_section(cfg, "twin") : NULL;
    if (!sec) return 0;
    if (!json_is_object(sec)) {
        tw_log_error(MOD, "config: twin must be an object");
        return TW_EINVAL;
    }
    size_t flush_ms = 0;
    int rc = config_count(sec, "max_things", &d->max_things);
    if (rc == 0) rc = config_count(sec, "max_changes", &d->max_changes);
    if (rc == 0) rc = config_count(sec, "max_td_bytes", &d->max_td_bytes);
    if (rc == 0) rc = config_count(sec, "max_query_results", &d->max_query_results);
    if (rc == 0) rc = config_count(sec, "max_values", &v->max_entries);
    if (rc == 0) rc = config_count(sec, "value_batch", &v->batch);
    if (rc == 0) rc = config_count(sec, "value_flush_ms", &flush_ms);
    if (flush_ms > 60000) flush_ms = 60000;
    v->flush_ms = (int)flush_ms;
    return rc;
}

int tw_twin_open(tw_runtime *rt, tw_twin **out)
{
    *out = NULL;
    tw_store *s = rt ? tw_runtime_store(rt) : NULL;
    if (!s) return TW_EINVAL;
    tw_twin *t = calloc(1, sizeof *t);
    if (!t) return TW_ENOMEM;
    t->rt = rt;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    tw_dir_opts dopts;
    tw_values_opts vopts;
    int rc = read_config(tw_runtime_config(rt), &dopts, &vopts);
    if (rc == 0) rc = tw_dir_open(s, &dopts, &t->dir);
    if (rc == 0) rc = tw_values_open(s, &vopts, &t->values);
    if (rc == 0) rc = tw_dir_subscribe(t->dir, on_change, t, &t->dir_sub);
    if (rc == 0) rc = tw_twin_directory_service_start(t);
    if (rc == 0) {
        if (pthread_create(&t->thread, NULL, maintenance, t) != 0)
            rc = TW_ENOMEM;
        else
            t->thread_started = true;
    }
    if (rc) {
        tw_log_error(MOD, "cannot open the twin: %s", tw_strerror(rc));
        tw_twin_close(t);
        return rc;
    }
    *out = t;
    return 0;
}

void tw_twin_close(tw_twin *t)
{
    if (!t) return;
    if (t->thread_started) {
        pthread_mutex_lock(&t->mu);
        t->stop = true;
        pthread_cond_signal(&t->cv);
        pthread_mutex_unlock(&t->mu);
        pthread_join(t->thread, NULL);
    }
    if (t->dir && t->dir_sub) tw_dir_unsubscribe(t->dir, t->dir_sub);
    tw_values_close(t->values);
    tw_dir_close(t->dir);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

tw_dir *tw_twin_dir(tw_twin *t)
{
    return t->dir;
}

tw_values *tw_twin_values(tw_twin *t)
{
    return t->values;
}
