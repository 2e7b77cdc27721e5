/*
 * consumer.c - the consumer side of libtwin: the directory (as calls of the
 * built-in service Thing dtw:twind:directory), reads from the value store,
 * subscriptions with local callbacks, and actions.
 *
 * Subscriptions live twice: at the runtime (which decides, with its
 * authorization, what this connection may receive) and here (which callback
 * gets a notification). The local list is the truth that sdk_consumer_resync
 * re-sends after a reconnect. Two local subscriptions with the same pattern
 * share the runtime's one: unsubscribing the first leaves the runtime's in
 * place.
 */
#include "sdk_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- directory and reads -------------------------------------------------------- */

static int call_output(tw_client *c, json_t *env, const char *corr, json_t **out)
{
    if (out) *out = NULL;
    json_t *resp = NULL;
    int rc = sdk_call(c, env, corr, 0, &resp);
    if (rc == 0 && out) {
        json_t *o = json_object_get(resp, "output");
        *out = o ? json_incref(o) : json_null();
    }
    json_decref(resp);
    return rc;
}

static int directory(tw_client *c, const char *action, json_t *input, json_t **out)
{
    char corr[TW_ID_MAX];
    json_t *env = sdk_request(c, "invokeaction", TW_DIRECTORY_ID, action, corr);
    if (!env) {
        json_decref(input);
        return TW_ENOMEM;
    }
    json_object_set_new(env, "input", input);
    return call_output(c, env, corr, out);
}

int tw_consumer_list_things(tw_client *c, int offset, int limit, json_t **out)
{
    return directory(c, "listThings", json_pack("{s:i, s:i}", "offset", offset, "limit", limit),
                     out);
}

int tw_consumer_get_thing(tw_client *c, const char *twin_id, json_t **td)
{
    if (!twin_id) return TW_EINVAL;
    return directory(c, "getThing", json_pack("{s:s}", "id", twin_id), td);
}

int tw_consumer_search(tw_client *c, json_t *query, json_t **out)
{
    if (!json_is_object(query)) return TW_EINVAL;
    return directory(c, "search", json_deep_copy(query), out);
}

static int read_op(tw_client *c, const char *op, const char *twin_id, const char *name,
                   json_t **out)
{
    if (!twin_id) return TW_EINVAL;
    char corr[TW_ID_MAX];
    json_t *env = sdk_request(c, op, twin_id, name, corr);
    if (!env) return TW_ENOMEM;
    return call_output(c, env, corr, out);
}

int tw_consumer_read_property(tw_client *c, const char *twin_id, const char *name, json_t **value)
{
    if (!name) return TW_EINVAL;
    return read_op(c, "readproperty", twin_id, name, value);
}

int tw_consumer_read_all_properties(tw_client *c, const char *twin_id, json_t **values)
{
    return read_op(c, "readallproperties", twin_id, NULL, values);
}

int tw_consumer_read_event(tw_client *c, const char *twin_id, const char *name, json_t **value)
{
    if (!name) return TW_EINVAL;
    return read_op(c, "readevent", twin_id, name, value);
}

/* ---- subscriptions ----------------------------------------------------------------- */

static const char *sub_op(sub_kind k, bool on, const char *name)
{
    bool all = strcmp(name, "*") == 0;
    if (k == SUB_EVENT)
        return on ? (all ? "subscribeallevents" : "subscribeevent")
                  : (all ? "unsubscribeallevents" : "unsubscribeevent");
    return on ? (all ? "observeallproperties" : "observeproperty")
              : (all ? "unobserveallproperties" : "unobserveproperty");
}

static json_t *sub_env(tw_client *c, const sub *s, bool on, char corr[TW_ID_MAX])
{
    bool all = strcmp(s->name, "*") == 0;
    bool any = strcmp(s->thing, "*") == 0;
    /* subscribeevent/observeproperty need a thingID: "*" stands for any */
    const char *thing = any ? (all ? NULL : "*") : s->thing;
    return sdk_request(c, sub_op(s->kind, on, s->name), thing, all ? NULL : s->name, corr);
}

static int subscribe(tw_client *c, sub_kind kind, const char *thing, const char *name,
                     tw_notify_fn fn, tw_notification_fn nfn, void *arg, int *sub_id)
{
    if (!fn && !nfn) return TW_EINVAL;
    sub s = {.kind = kind,
             .thing = strdup(thing && thing[0] ? thing : "*"),
             .name = strdup(name && name[0] ? name : "*"),
             .fn = fn,
             .nfn = nfn,
             .arg = arg};
    if (!s.thing || !s.name) {
        free(s.thing);
        free(s.name);
        return TW_ENOMEM;
    }
    pthread_mutex_lock(&c->mtx);
    if (c->nsubs == c->capsubs) {
        size_t nc = c->capsubs ? c->capsubs * 2 : 8;
        sub *ns = realloc(c->subs, nc * sizeof *ns);
        if (!ns) {
            pthread_mutex_unlock(&c->mtx);
            free(s.thing);
            free(s.name);
            return TW_ENOMEM;
        }
        c->subs = ns;
        c->capsubs = nc;
    }
    s.id = ++c->next_sub_id;
    c->subs[c->nsubs++] = s;
    pthread_mutex_unlock(&c->mtx);
    char corr[TW_ID_MAX];
    json_t *env = sub_env(c, &s, true, corr);
    int rc = env ? sdk_call(c, env, corr, 0, NULL) : TW_ENOMEM;
    /* offline: kept, the resync after the login subscribes */
    if (rc && rc != TW_EOFFLINE && rc != TW_ECLOSED) {
        tw_consumer_unsubscribe(c, s.id);
        return rc;
    }
    if (sub_id) *sub_id = s.id;
    return rc;
}

int tw_consumer_subscribe_event(tw_client *c, const char *twin_id, const char *name,
                                tw_notify_fn fn, void *arg, int *sub_id)
{
    return fn ? subscribe(c, SUB_EVENT, twin_id, name, fn, NULL, arg, sub_id) : TW_EINVAL;
}

int tw_consumer_observe_property(tw_client *c, const char *twin_id, const char *name,
                                 tw_notify_fn fn, void *arg, int *sub_id)
{
    return fn ? subscribe(c, SUB_PROPERTY, twin_id, name, fn, NULL, arg, sub_id) : TW_EINVAL;
}

int tw_consumer_subscribe_event_view(tw_client *c, const char *twin_id, const char *name,
                                     tw_notification_fn fn, void *arg, int *sub_id)
{
    return fn ? subscribe(c, SUB_EVENT, twin_id, name, NULL, fn, arg, sub_id) : TW_EINVAL;
}

int tw_consumer_observe_property_view(tw_client *c, const char *twin_id, const char *name,
                                      tw_notification_fn fn, void *arg, int *sub_id)
{
    return fn ? subscribe(c, SUB_PROPERTY, twin_id, name, NULL, fn, arg, sub_id) : TW_EINVAL;
}

int tw_consumer_unsubscribe(tw_client *c, int sub_id)
{
    sub s = {0};
    bool found = false, shared = false;
    pthread_mutex_lock(&c->mtx);
    for (size_t i = 0; i < c->nsubs; i++)
        if (c->subs[i].id == sub_id) {
            s = c->subs[i];
            c->subs[i] = c->subs[--c->nsubs];
            found = true;
            break;
        }
    for (size_t i = 0; found && i < c->nsubs; i++)
        shared |= c->subs[i].kind == s.kind && strcmp(c->subs[i].thing, s.thing) == 0 &&
                  strcmp(c->subs[i].name, s.name) == 0;
    /* its notifications still queued for the callback thread go too */
    for (job **pp = &c->jhead, *prev = NULL; found && *pp;) {
        job *j = *pp;
        if (j->kind != JOB_NOTIFY || j->sub_id != sub_id) {
            prev = j;
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        if (c->jtail == j) c->jtail = prev;
        c->njobs--;
        tw_msg_unref(j->msg);
        free(j);
        pthread_cond_broadcast(&c->job_space);
    }
    pthread_mutex_unlock(&c->mtx);
    if (!found) return TW_ENOTFOUND;
    int rc = 0;
    if (!shared) {
        char corr[TW_ID_MAX];
        json_t *env = sub_env(c, &s, false, corr);
        rc = env ? sdk_call(c, env, corr, 0, NULL) : TW_ENOMEM;
        if (rc == TW_EOFFLINE || rc == TW_ECLOSED) rc = 0; /* nothing to undo there */
    }
    free(s.thing);
    free(s.name);
    return rc;
}

int sdk_consumer_resync(tw_client *c, char **buf, size_t *len, size_t *cap)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < c->nsubs; i++) {
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++)
            dup = c->subs[j].kind == c->subs[i].kind &&
                  strcmp(c->subs[j].thing, c->subs[i].thing) == 0 &&
                  strcmp(c->subs[j].name, c->subs[i].name) == 0;
        if (dup) continue;
        char corr[TW_ID_MAX];
        json_t *env = sub_env(c, &c->subs[i], true, corr);
        if (!env) return TW_ENOMEM;
        rc = sdk_append_line(buf, len, cap, env);
        json_decref(env);
    }
    return rc;
}

static bool sub_match(const sub *s, sub_kind k, const char *thing, const char *name)
{
    return s->kind == k && (s->thing[0] == '*' || strcmp(s->thing, thing) == 0) &&
           (s->name[0] == '*' || strcmp(s->name, name) == 0);
}

void sdk_consumer_notify(tw_client *c, tw_msg *m)
{
    tw_op op = tw_msg_get_op(m);
    const char *thing = tw_msg_thing(m);
    const char *name = tw_msg_name(m);
    if (!thing || !name) return;
    sub_kind k;
    if (op == TW_OP_SUBSCRIBEEVENT)
        k = SUB_EVENT;
    else if (op == TW_OP_OBSERVEPROPERTY)
        k = SUB_PROPERTY;
    else
        return;
    /* Inline dispatch with nothing queued or running: the callbacks run
     * right here, without a job each (run_mtx keeps them one at a time and
     * an empty queue keeps them in order). */
    bool direct = c->o.dispatch_inline && pthread_equal(pthread_self(), c->io_thr) &&
                  pthread_mutex_trylock(&c->run_mtx) == 0;
    job now[8];
    size_t nnow = 0;
    pthread_mutex_lock(&c->mtx);
    if (direct) {
        size_t matches = 0;
        for (size_t i = 0; i < c->nsubs; i++)
            matches += sub_match(&c->subs[i], k, thing, name);
        if (c->jhead || matches > sizeof now / sizeof now[0]) {
            direct = false;
            pthread_mutex_unlock(&c->run_mtx);
        }
    }
    for (size_t i = 0; i < c->nsubs; i++) {
        if (!sub_match(&c->subs[i], k, thing, name)) continue;
        job *j = direct ? &now[nnow++] : calloc(1, sizeof *j);
        if (!j) break;
        memset(j, 0, sizeof *j);
        j->kind = JOB_NOTIFY;
        j->nfn = c->subs[i].fn;
        j->vfn = c->subs[i].nfn;
        j->arg = c->subs[i].arg;
        j->sub_id = c->subs[i].id;
        j->msg = m;
        if (!direct) {
            j->msg = tw_msg_ref(m);
            sdk_push_job_locked(c, j);
        }
    }
    pthread_mutex_unlock(&c->mtx);
    if (!direct) return;
    for (size_t i = 0; i < nnow; i++)
        sdk_consumer_run_notify(c, &now[i]);
    pthread_mutex_unlock(&c->run_mtx);
}

/* The view a tw_notification_fn gets: the parsed message itself. */
struct tw_notification {
    tw_msg *m;
};

void sdk_consumer_run_notify(tw_client *c, job *j)
{
    tw_msg *m = j->msg;
    if (j->vfn) {
        tw_notification n = {m};
        j->vfn(j->arg, c, &n);
        return;
    }
    json_t *env = tw_msg_json(m);
    if (env) j->nfn(j->arg, c, tw_msg_thing(m), tw_msg_name(m), json_object_get(env, "value"), env);
}

const char *tw_notification_thing(const tw_notification *n)
{
    return tw_msg_thing(n->m);
}

const char *tw_notification_name(const tw_notification *n)
{
    return tw_msg_name(n->m);
}

bool tw_notification_is_property(const tw_notification *n)
{
    return tw_msg_get_op(n->m) == TW_OP_OBSERVEPROPERTY;
}

json_t *tw_notification_value(const tw_notification *n)
{
    json_t *v = tw_msg_get(n->m, "value");
    return v ? v : json_null(); /* the null singleton needs no reference */
}

const char *tw_notification_value_text(const tw_notification *n, size_t *len)
{
    size_t l = 0;
    const char *t = tw_msg_get_raw(n->m, "value", &l);
    if (len) *len = t ? l : 0;
    return t;
}

const char *tw_notification_timestamp(const tw_notification *n)
{
    return json_string_value(tw_msg_get(n->m, "timestamp"));
}

json_t *tw_notification_envelope(const tw_notification *n)
{
    return tw_msg_json(n->m);
}

void sdk_consumer_free(tw_client *c)
{
    for (size_t i = 0; i < c->nsubs; i++) {
        free(c->subs[i].thing);
        free(c->subs[i].name);
    }
    free(c->subs);
}

/* ---- actions -------------------------------------------------------------------------- */

/* Ids and names must be UTF-8 (the runtime refuses the line otherwise,
 * without a correlationID to fail the call early). */
static bool ids_ok(const char *twin_id, const char *name)
{
    return twin_id && name && tw_utf8_valid(twin_id, strlen(twin_id)) &&
           tw_utf8_valid(name, strlen(name));
}

/* An action request written by hand: no JSON tree for the envelope, the
 * input encoded once. */
/* quiet: "progress": false, the caller waits for the outcome only (the
 * runtime then sends no `delivered` or `running` for a live delivery; see
 * tw_consumer_invoke). */
/* NULL with *err TW_EINVAL (input not UTF-8) or TW_ENOMEM. */
static char *action_line(tw_client *c, const char *op, const char *twin_id, const char *name,
                         json_t *input, bool quiet, char corr[TW_ID_MAX], size_t *len, int *err)
{
    sdk_line l = {0};
    sdk_line_request(c, &l, op, twin_id, name, corr);
    if (quiet) sdk_line_raw(&l, ",\"progress\":false", 17);
    if (input) {
        sdk_line_raw(&l, ",\"input\":", 9);
        sdk_line_json(&l, input);
    }
    char *line = sdk_line_end(&l, len);
    if (!line) *err = sdk_line_rc(&l);
    return line;
}

int tw_consumer_invoke(tw_client *c, const char *twin_id, const char *name, json_t *input,
                       int timeout_ms, tw_action_result *res)
{
    if (res) memset(res, 0, sizeof *res);
    if (!ids_ok(twin_id, name)) return TW_EINVAL;
    char corr[TW_ID_MAX];
    size_t len = 0;
    int err = 0;
    char *line = action_line(c, "invokeaction", twin_id, name, input, true, corr, &len, &err);
    if (!line) return err;
    tw_action_result r;
    memset(&r, 0, sizeof r);
    int rc = sdk_call_action(c, line, len, corr, timeout_ms, &r);
    if (res)
        *res = r;
    else
        tw_action_result_clear(&r);
    return rc;
}

int tw_consumer_invoke_async(tw_client *c, const char *twin_id, const char *name, json_t *input,
                             int timeout_ms, tw_action_fn fn, void *arg)
{
    if (!ids_ok(twin_id, name) || !fn) return TW_EINVAL;
    char corr[TW_ID_MAX];
    size_t len = 0;
    int err = 0;
    char *line = action_line(c, "invokeaction", twin_id, name, input, false, corr, &len, &err);
    if (!line) return err;
    return sdk_call_action_async(c, line, len, corr, timeout_ms, fn, arg);
}

int tw_consumer_write_property(tw_client *c, const char *twin_id, const char *name, json_t *value,
                               int timeout_ms, tw_action_result *res)
{
    if (res) memset(res, 0, sizeof *res);
    if (!ids_ok(twin_id, name) || !value) return TW_EINVAL;
    char corr[TW_ID_MAX];
    size_t len = 0;
    int err = 0;
    char *line = action_line(c, "writeproperty", twin_id, name, value, true, corr, &len, &err);
    if (!line) return err;
    tw_action_result r;
    memset(&r, 0, sizeof r);
    int rc = sdk_call_action(c, line, len, corr, timeout_ms, &r);
    if (res)
        *res = r;
    else
        tw_action_result_clear(&r);
    return rc;
}

int tw_consumer_cancel(tw_client *c, const char *action_id)
{
    if (!action_id) return TW_EINVAL;
    char corr[TW_ID_MAX];
    json_t *env = sdk_request(c, "cancelaction", NULL, NULL, corr);
    if (!env) return TW_ENOMEM;
    json_object_set_new(env, "input", json_string(action_id));
    return sdk_call(c, env, corr, 0, NULL);
}

int tw_consumer_query_action(tw_client *c, const char *action_id, json_t **status)
{
    if (!action_id) return TW_EINVAL;
    char corr[TW_ID_MAX];
    json_t *env = sdk_request(c, "queryaction", NULL, NULL, corr);
    if (!env) return TW_ENOMEM;
    json_object_set_new(env, "input", json_string(action_id));
    return call_output(c, env, corr, status);
}
