/*
 * agent.c - the agent side of libtwin: publishing TDs, events and property
 * values, and answering the runtime's requests (invokeaction, writeproperty,
 * cancelaction) through handlers.
 *
 * The client remembers what the runtime must know after a reconnect: every
 * published TD and the latest value of every property. sdk_agent_resync()
 * sends them again right after the login, before anything else.
 *
 * A request becomes a tw_req, registered by action id (so a cancelaction can
 * flag it) until it is completed or failed, then handed to its handler on
 * the callback thread. Answers may come from any thread; answers given while
 * the link is down wait in the send queue for the next one (see libtwin.h).
 * A request outlives tw_client_close: the client's memory stays until the
 * last request is answered (TW_ECLOSED) or failed.
 */
#include "sdk_int.h"

#include "runtime/json_enc.h"
#include "runtime/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- publishing --------------------------------------------------------------- */

int tw_agent_publish_td(tw_client *c, json_t *td, char **twin_id, json_t **problem)
{
    if (twin_id) *twin_id = NULL;
    if (problem) *problem = NULL;
    const char *id = json_string_value(json_object_get(td, "id"));
    if (!json_is_object(td) || !id || !id[0] || strlen(id) >= TW_THING_ID_MAX) return TW_EINVAL;
    json_t *copy = json_deep_copy(td);
    if (!copy) return TW_ENOMEM;
    int err = 0;
    pthread_mutex_lock(&c->mtx);
    json_t *old = tw_hmap_put(&c->tds, id, copy, &err);
    pthread_mutex_unlock(&c->mtx);
    if (err) {
        json_decref(copy);
        return TW_ENOMEM;
    }
    json_decref(old);
    char corr[TW_ID_MAX];
    json_t *env = sdk_request(c, "updatething", id, NULL, corr);
    if (!env) return TW_ENOMEM;
    json_object_set_new(env, "input", json_deep_copy(td));
    json_t *resp = NULL;
    int rc = sdk_call(c, env, corr, 0, &resp);
    if (rc == 0 && twin_id) {
        const char *tid =
            json_string_value(json_object_get(json_object_get(resp, "output"), "thingID"));
        *twin_id = tid ? strdup(tid) : NULL;
    }
    if (rc && problem && json_object_get(resp, "error"))
        *problem = json_incref(json_object_get(resp, "error"));
    json_decref(resp);
    return rc;
}

int tw_agent_delete_td(tw_client *c, const char *thing_id)
{
    if (!thing_id) return TW_EINVAL;
    pthread_mutex_lock(&c->mtx);
    json_decref(tw_hmap_del(&c->tds, thing_id));
    /* its remembered property values go too */
    size_t tl = strlen(thing_id), pos = 0;
    const char *k;
    void *v;
    while (tw_hmap_next(&c->props, &pos, &k, &v))
        if (strncmp(k, thing_id, tl) == 0 && k[tl] == '\n') {
            json_decref(v);
            tw_hmap_del(&c->props, k);
        }
    pthread_mutex_unlock(&c->mtx);
    char corr[TW_ID_MAX];
    json_t *env = sdk_request(c, "deletething", thing_id, NULL, corr);
    if (!env) return TW_ENOMEM;
    return sdk_call(c, env, corr, 0, NULL);
}

static json_t *value_env(tw_client *c, const char *op, const char *thing, const char *name,
                         json_t *value)
{
    char mid[TW_ID_MAX], ts[TW_TIME_LEN];
    sdk_new_id(c, mid);
    tw_time_format(tw_now_ms(), ts);
    return json_pack("{s:s, s:s, s:s, s:s, s:O, s:s, s:s}", "type", "notification", "operation", op,
                     "thingID", thing, "name", name, "value", value ? value : json_null(),
                     "messageID", mid, "timestamp", ts);
}

/*
 * The hot path of publishing: the envelope line is written straight into
 * one buffer (on the stack when it fits) without building an envelope
 * object, the common scalar values are written by hand (containers and
 * reals go through the runtime's encoder), and the line is appended to the
 * run of values at the tail of the send queue: no allocation per envelope,
 * since an agent may publish hundreds of thousands of values a second.
 */
static int publish_value(tw_client *c, const char *op, const char *thing, const char *name,
                         json_t *value)
{
    json_t *v = value ? value : json_null();
    size_t tl = strlen(thing), nl = strlen(name);
    if (tl >= TW_THING_ID_MAX || nl > 255 || !tw_utf8_valid(thing, tl) || !tw_utf8_valid(name, nl))
        return TW_EINVAL; /* (the runtime would refuse the line, and the link with it) */
    char *venc = NULL;    /* containers and reals: encoded apart */
    size_t vmax;
    switch (json_typeof(v)) {
    case JSON_INTEGER:
    case JSON_TRUE:
    case JSON_FALSE:
    case JSON_NULL:
        vmax = 24;
        break;
    case JSON_STRING:
        vmax = 6 * json_string_length(v) + 2;
        break;
    default:
        venc = tw_json_encode(v, &vmax);
        if (!venc) return TW_ENOMEM;
    }
    char mid[TW_ID_MAX], ts[TW_TIME_LEN];
    sdk_new_id(c, mid);
    tw_time_format(tw_now_ms(), ts);
    size_t cap = 160 + strlen(op) + 6 * (tl + nl) + strlen(mid) + vmax;
    char stack[1024];
    char *buf = cap <= sizeof stack ? stack : malloc(cap);
    if (!buf) {
        free(venc);
        return TW_ENOMEM;
    }
    size_t n = sdk_put_lit(buf, "{\"type\":\"notification\",\"operation\":\"", 36);
    n += sdk_put_lit(buf + n, op, strlen(op));
    n += sdk_put_lit(buf + n, "\",\"thingID\":", 12);
    n += sdk_put_json_str(buf + n, thing, tl);
    n += sdk_put_lit(buf + n, ",\"name\":", 8);
    n += sdk_put_json_str(buf + n, name, nl);
    n += sdk_put_lit(buf + n, ",\"messageID\":\"", 14);
    n += sdk_put_lit(buf + n, mid, strlen(mid));
    n += sdk_put_lit(buf + n, "\",\"timestamp\":\"", 15);
    n += sdk_put_lit(buf + n, ts, strlen(ts));
    n += sdk_put_lit(buf + n, "\",\"value\":", 10);
    switch (json_typeof(v)) {
    case JSON_INTEGER:
        n += sdk_put_int(buf + n, json_integer_value(v));
        break;
    case JSON_TRUE:
        n += sdk_put_lit(buf + n, "true", 4);
        break;
    case JSON_FALSE:
        n += sdk_put_lit(buf + n, "false", 5);
        break;
    case JSON_NULL:
        n += sdk_put_lit(buf + n, "null", 4);
        break;
    case JSON_STRING:
        n += sdk_put_json_str(buf + n, json_string_value(v), json_string_length(v));
        break;
    default:
        n += sdk_put_lit(buf + n, venc, vmax);
    }
    buf[n++] = '}';
    buf[n++] = '\n';
    int rc = sdk_enqueue_value(c, buf, n);
    if (buf != stack) free(buf);
    free(venc);
    return rc;
}

int tw_agent_publish_event(tw_client *c, const char *thing_id, const char *name, json_t *value)
{
    if (!thing_id || !name) return TW_EINVAL;
    return publish_value(c, "subscribeevent", thing_id, name, value);
}

int tw_agent_publish_property(tw_client *c, const char *thing_id, const char *name, json_t *value)
{
    if (!thing_id || !name) return TW_EINVAL;
    char key[TW_THING_ID_MAX + 260];
    if ((size_t)snprintf(key, sizeof key, "%s\n%s", thing_id, name) >= sizeof key)
        return TW_ETOOBIG;
    json_t *v = value ? value : json_null();
    /* the remembered latest value: replaced in place once the entry exists
     * (no allocation per publish) */
    pthread_mutex_lock(&c->mtx);
    json_t *entry = tw_hmap_get(&c->props, key);
    if (entry) json_array_set(entry, 2, v);
    pthread_mutex_unlock(&c->mtx);
    if (!entry) {
        entry = json_pack("[s, s, O]", thing_id, name, v);
        if (!entry) return TW_ENOMEM;
        int err = 0;
        pthread_mutex_lock(&c->mtx);
        json_t *old = tw_hmap_put(&c->props, key, entry, &err);
        pthread_mutex_unlock(&c->mtx);
        if (err) json_decref(entry);
        json_decref(old);
    }
    return publish_value(c, "observeproperty", thing_id, name, value);
}

int sdk_agent_resync(tw_client *c, char **buf, size_t *len, size_t *cap)
{
    size_t pos = 0;
    const char *k;
    void *v;
    int rc = 0;
    while (!rc && tw_hmap_next(&c->tds, &pos, &k, &v)) {
        char corr[TW_ID_MAX];
        json_t *env = sdk_request(c, "updatething", k, NULL, corr);
        if (!env) return TW_ENOMEM;
        json_object_set(env, "input", v);
        rc = sdk_append_line(buf, len, cap, env);
        json_decref(env);
    }
    pos = 0;
    while (!rc && tw_hmap_next(&c->props, &pos, &k, &v)) {
        json_t *env = value_env(c, "observeproperty", json_string_value(json_array_get(v, 0)),
                                json_string_value(json_array_get(v, 1)), json_array_get(v, 2));
        if (!env) return TW_ENOMEM;
        rc = sdk_append_line(buf, len, cap, env);
        json_decref(env);
    }
    return rc;
}

/* ---- handlers and requests -------------------------------------------------------- */

static int add_handler(tw_client *c, bool write, const char *thing, const char *name, tw_req_fn fn,
                       void *arg)
{
    if (!fn) return TW_EINVAL;
    handler h = {write, strdup(thing ? thing : "*"), strdup(name ? name : "*"), fn, arg};
    if (!h.thing || !h.name) {
        free(h.thing);
        free(h.name);
        return TW_ENOMEM;
    }
    pthread_mutex_lock(&c->mtx);
    if (c->nhs == c->caphs) {
        size_t nc = c->caphs ? c->caphs * 2 : 8;
        handler *nh = realloc(c->hs, nc * sizeof *nh);
        if (!nh) {
            pthread_mutex_unlock(&c->mtx);
            free(h.thing);
            free(h.name);
            return TW_ENOMEM;
        }
        c->hs = nh;
        c->caphs = nc;
    }
    c->hs[c->nhs++] = h;
    pthread_mutex_unlock(&c->mtx);
    return 0;
}

int tw_agent_on_action(tw_client *c, const char *thing_id, const char *name, tw_req_fn fn,
                       void *arg)
{
    return add_handler(c, false, thing_id, name, fn, arg);
}

int tw_agent_on_write(tw_client *c, const char *thing_id, const char *name, tw_req_fn fn, void *arg)
{
    return add_handler(c, true, thing_id, name, fn, arg);
}

/* The most specific handler (exact beats wildcard). mtx held. */
static const handler *find_handler(tw_client *c, bool write, const char *thing, const char *name)
{
    const handler *best = NULL;
    int best_score = -1;
    for (size_t i = 0; i < c->nhs; i++) {
        const handler *h = &c->hs[i];
        if (h->write != write) continue;
        bool te = strcmp(h->thing, thing) == 0, ne = strcmp(h->name, name) == 0;
        if (!(te || strcmp(h->thing, "*") == 0) || !(ne || strcmp(h->name, "*") == 0)) continue;
        int score = (te ? 2 : 0) + (ne ? 1 : 0);
        if (score > best_score) {
            best = h;
            best_score = score;
        }
    }
    return best;
}

static void req_fields_free(tw_req *r)
{
    free(r->thing);
    free(r->name);
    free(r->sender);
    json_decref(r->input);
    free(r);
}

/* Unregisters and frees r. Every live tw_req counts in c->nreqs: a closed
 * client stays allocated (a zombie) until the last request it handed out
 * is answered or failed. */
void sdk_req_free(tw_req *r)
{
    tw_client *c = r->c;
    pthread_mutex_lock(&c->mtx);
    if (tw_hmap_get(&c->reqs, r->action_id) == r) tw_hmap_del(&c->reqs, r->action_id);
    bool last = --c->nreqs == 0 && c->zombie;
    pthread_mutex_unlock(&c->mtx);
    req_fields_free(r);
    if (last) sdk_client_free(c);
}

/* Sends an answer for r; a final answer that was queued (or met a closed
 * client) unregisters and frees r. */
static int req_answer(tw_req *r, const char *type, tw_status st, json_t *output, json_t *error)
{
    tw_client *c = r->c;
    bool final = tw_status_final(st);
    if (atomic_load(&r->answered)) return TW_ECONFLICT;
    if (final && atomic_exchange(&r->answered, true)) return TW_ECONFLICT;
    char mid[TW_ID_MAX];
    sdk_new_id(c, mid);
    /* written by hand: an agent draining a queue answers thousands a second */
    sdk_line l = {0};
    sdk_line_raw(&l, "{\"type\":\"", 9);
    sdk_line_raw(&l, type, strlen(type));
    sdk_line_raw(&l, "\"", 1);
    sdk_line_member(&l, "operation", r->write ? "writeproperty" : "invokeaction");
    sdk_line_member(&l, "thingID", r->thing);
    sdk_line_member(&l, "name", r->name);
    sdk_line_member(&l, "correlationID", r->action_id);
    sdk_line_member(&l, "status", tw_status_name(st));
    sdk_line_member(&l, "messageID", mid);
    if (output) {
        sdk_line_raw(&l, ",\"output\":", 10);
        sdk_line_json(&l, output);
    }
    if (error) {
        sdk_line_raw(&l, ",\"error\":", 9);
        sdk_line_json(&l, error);
    }
    size_t len = 0;
    char *line = sdk_line_end(&l, &len);
    int rc = line ? sdk_enqueue_line(c, line, len, OUT_ANSWER, NULL) : sdk_line_rc(&l);
    if (final && rc && rc != TW_ECLOSED) {
        /* not sent (output not UTF-8, no memory, the queue full): r stays
         * the caller's, to answer again (e.g. with tw_req_fail) */
        atomic_store(&r->answered, false);
        return rc;
    }
    if (final) sdk_req_free(r);
    return rc;
}

int tw_req_progress(tw_req *r, json_t *output)
{
    /* invokeaction progress is a notification; the runtime takes a running
     * response for writes, which have no progress notification */
    return req_answer(r, r->write ? "response" : "notification", TW_STATUS_RUNNING, output, NULL);
}

int tw_req_complete(tw_req *r, json_t *output)
{
    return req_answer(r, "response", TW_STATUS_COMPLETED, output, NULL);
}

int tw_req_fail(tw_req *r, int code, const char *detail)
{
    int http = tw_error_http_status(code);
    json_t *p = json_pack("{s:s, s:s, s:i, s:s}", "type", "urn:twind:problem:agent", "title",
                          tw_strerror(code), "status", http < 400 ? 500 : http, "detail",
                          detail ? detail : tw_strerror(code));
    if (!p) return detail && !tw_utf8_valid(detail, strlen(detail)) ? TW_EINVAL : TW_ENOMEM;
    int rc = req_answer(r, "response", TW_STATUS_FAILED, NULL, p);
    json_decref(p);
    return rc;
}

const char *tw_req_thing(const tw_req *r)
{
    return r->thing;
}
const char *tw_req_name(const tw_req *r)
{
    return r->name;
}
const char *tw_req_sender(const tw_req *r)
{
    return r->sender ? r->sender : "";
}
const char *tw_req_action_id(const tw_req *r)
{
    return r->action_id;
}
bool tw_req_is_write(const tw_req *r)
{
    return r->write;
}
json_t *tw_req_input(const tw_req *r)
{
    return r->input;
}
bool tw_req_cancelled(const tw_req *r)
{
    return atomic_load(&r->cancelled);
}

void sdk_agent_request(tw_client *c, tw_msg *m)
{
    tw_op op = tw_msg_get_op(m);
    const char *corr = tw_msg_correlation(m);
    if (!corr || strlen(corr) >= TW_ID_MAX * 2) return;
    if (op == TW_OP_CANCELACTION) {
        pthread_mutex_lock(&c->mtx);
        tw_req *r = tw_hmap_get(&c->reqs, corr);
        if (r) atomic_store(&r->cancelled, true);
        pthread_mutex_unlock(&c->mtx);
        return;
    }
    bool write = op == TW_OP_WRITEPROPERTY;
    if (!write && op != TW_OP_INVOKEACTION) return;
    const char *thing = tw_msg_thing(m);
    const char *name = tw_msg_name(m);
    tw_req *r = calloc(1, sizeof *r);
    if (!r) return;
    r->c = c;
    r->write = write;
    tw_strlcpy(r->action_id, corr, sizeof r->action_id);
    r->thing = strdup(thing ? thing : "");
    r->name = strdup(name ? name : "");
    const char *sender = tw_msg_sender(m);
    r->sender = sender ? strdup(sender) : NULL;
    json_t *in = tw_msg_get(m, "input");
    r->input = in ? json_incref(in) : NULL;
    atomic_init(&r->cancelled, false);
    atomic_init(&r->answered, false);
    if (!r->thing || !r->name) {
        req_fields_free(r);
        return;
    }
    job *j = calloc(1, sizeof *j);
    pthread_mutex_lock(&c->mtx);
    c->nreqs++; /* from here on r is counted (sdk_req_free) */
    const handler *h = find_handler(c, write, r->thing, r->name);
    int err = 0;
    if (h && j) tw_hmap_put(&c->reqs, r->action_id, r, &err);
    if (h && j && !err) {
        j->kind = JOB_REQ;
        j->rfn = h->fn;
        j->arg = h->arg;
        j->req = r;
        sdk_push_job_locked(c, j);
        pthread_mutex_unlock(&c->mtx);
        return;
    }
    pthread_mutex_unlock(&c->mtx);
    free(j);
    int rc;
    if (!h) {
        char detail[300];
        snprintf(detail, sizeof detail, "this agent has no handler for %s %s/%s",
                 write ? "writes of" : "action", r->thing, r->name);
        rc = tw_req_fail(r, TW_ENOTFOUND, detail);
    } else {
        rc = tw_req_fail(r, TW_ENOMEM, NULL);
    }
    /* An answer that could not be queued leaves r with its caller, here:
     * nobody else will answer it, so it is freed (it stayed counted and
     * kept a closed client's memory forever; found in review). The runtime
     * expires the action. TW_ECLOSED is the exception: req_answer freed r
     * already (freeing it again was a double free; found in review). */
    if (rc && rc != TW_ECLOSED) {
        tw_log_warn("libtwin", "the refusal of action %s could not be sent: %s", r->action_id,
                    tw_strerror(rc));
        sdk_req_free(r);
    }
}

void sdk_agent_free(tw_client *c)
{
    for (size_t i = 0; i < c->nhs; i++) {
        free(c->hs[i].thing);
        free(c->hs[i].name);
    }
    free(c->hs);
    size_t pos = 0;
    void *v;
    while (tw_hmap_next(&c->tds, &pos, NULL, &v))
        json_decref(v);
    pos = 0;
    while (tw_hmap_next(&c->props, &pos, NULL, &v))
        json_decref(v);
    /* requests still held by the application stay valid (answering one
     * returns TW_ECLOSED and frees it); c->reqs goes with the client */
}
