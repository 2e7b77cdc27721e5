/*
 * things.c - the W3C WoT Discovery directory HTTP API (section 7.3 of the
 * Recommendation), complete except SPARQL, on twin/directory.h:
 *
 *   GET|HEAD /things[?offset&limit&format=array|collection]   listing
 *   POST     /things                       anonymous TD -> 201 + Location
 *   GET|HEAD /things/{id}                  application/td+json
 *   PUT      /things/{id}                  201 created / 204 replaced
 *   PATCH    /things/{id}                  application/merge-patch+json -> 204
 *   DELETE   /things/{id}                  204
 *   GET      /search/jsonpath?query=       JSONPath (search/sparql: 501)
 *   GET      /events[/thing_created|thing_updated|thing_deleted][?diff=true]
 *                                          SSE notifications, Last-Event-ID
 *   GET      /.well-known/wot              this directory's own TD (public)
 *
 * Who may write: reading is open to every authenticated role; creating,
 * replacing, patching and deleting through this API need the admin role.
 * Agents publish their own Things with `updatething` (POST /messages or
 * nng), which derives the twin TD; the TDD write API is the administrator's
 * (and registers directory-only TDs, e.g. of devices twind does not proxy).
 *
 * Directory notifications: the binding subscribes once to the directory's
 * change feed; each change is formatted once per variant ({id} or the diff)
 * and appended to every directory stream that wants its kind. A stream
 * starting with Last-Event-ID replays the stored feed after that id; changes
 * that arrive meanwhile are held and appended after the replay, in order.
 */
#include "http_int.h"

#include "runtime/json_enc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wellknown_td.inc"

#define LIST_DEFAULT_LIMIT 100000
#define DIR_PENDING_MAX 4096

static bool is(const http_req *r, const char *m)
{
    return strcmp(r->method, m) == 0;
}

static enum MHD_Result no_dir(http_req *r)
{
    return http_reply_error(r, 503, "no-directory", "service unavailable",
                            "the Thing directory is not available");
}

static bool need_admin(http_req *r, enum MHD_Result *res)
{
    if (r->id.role == TW_ROLE_ADMIN) return true;
    *res = http_reply_error(r, 403, "forbidden", "forbidden",
                            "writing the directory through the TDD API needs the admin role; "
                            "agents publish their Things with updatething");
    return false;
}

static enum MHD_Result dir_error(http_req *r, int rc, json_t *problem, const char *detail)
{
    if (problem) return http_reply_problem(r, problem);
    return http_reply_code(r, rc, detail);
}

/* A non-negative integer query argument. */
static bool query_size(http_req *r, const char *key, size_t def, size_t *out, enum MHD_Result *res)
{
    bool bad = false;
    char *v = http_query(r, key, &bad);
    *out = def;
    if (v) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(v, &end, 10);
        bad = !*v || *end || errno || v[0] == '-';
        if (!bad) *out = (size_t)n;
        free(v);
    }
    if (bad) {
        char detail[100];
        snprintf(detail, sizeof detail, "%s must be a non-negative integer", key);
        *res = http_reply_problem(
            r, tw_problem_new(400, "invalid", "invalid query argument", detail, key));
        return false;
    }
    return true;
}

static enum MHD_Result list(http_req *r)
{
    tw_dir *d = r->h->dir;
    enum MHD_Result res;
    size_t offset, limit;
    if (!query_size(r, "offset", 0, &offset, &res) ||
        !query_size(r, "limit", LIST_DEFAULT_LIMIT, &limit, &res))
        return res;
    bool bad = false;
    char *format = http_query(r, "format", &bad);
    bool collection = format && strcmp(format, "collection") == 0;
    if (bad || (format && !collection && strcmp(format, "array") != 0)) {
        free(format);
        return http_reply_problem(r,
                                  tw_problem_new(400, "invalid", "invalid query argument",
                                                 "format must be array or collection", "format"));
    }
    free(format);
    json_t *page = NULL;
    size_t total = 0;
    uint64_t etag = 0;
    int rc = tw_dir_list(d, offset, limit, &page, &total, &etag);
    if (rc) return http_reply_code(r, rc, "listing failed");
    size_t got = json_array_size(page);
    bool more = offset + got < total && got > 0;
    char next[160] = "", link_next[200] = "", canon[160];
    if (more) {
        snprintf(next, sizeof next, "/things?offset=%zu&limit=%zu%s", offset + got, limit,
                 collection ? "&format=collection" : "");
        snprintf(link_next, sizeof link_next, "<%s>; rel=\"next\"", next);
    }
    snprintf(canon, sizeof canon, "</things>; rel=\"canonical\"; etag=\"%" PRIu64 "\"", etag);
    char etag_hdr[40];
    snprintf(etag_hdr, sizeof etag_hdr, "W/\"%" PRIu64 "\"", etag);
    if (collection) {
        char self[160];
        snprintf(self, sizeof self, "/things?offset=%zu&limit=%zu&format=collection", offset,
                 limit);
        json_t *body = json_pack("{s:s,s:I,s:o,s:s}", "@type", "ThingCollection", "total",
                                 (json_int_t)total, "members", page, "@id", self);
        if (body && more) json_object_set_new(body, "next", json_string(next));
        return http_reply_json(r, 200, "application/ld+json", body, "Link", canon, "Link",
                               more ? link_next : NULL, "ETag", etag_hdr, NULL);
    }
    return http_reply_json(r, 200, "application/ld+json", page, "Link", canon, "Link",
                           more ? link_next : NULL, "ETag", etag_hdr, NULL);
}

static enum MHD_Result create_anonymous(http_req *r)
{
    enum MHD_Result res;
    if (!need_admin(r, &res)) return res;
    json_t *td =
        http_body_json(r, "application/td+json|application/json|application/ld+json", false, &res);
    if (!td) return res;
    if (!json_is_object(td)) {
        json_decref(td);
        return http_reply_error(r, 400, "invalid", "invalid TD", "a TD is a JSON object");
    }
    if (json_object_get(td, "id")) {
        json_decref(td);
        return http_reply_problem(
            r, tw_problem_new(400, "invalid", "invalid TD",
                              "an anonymous TD has no id: use PUT /things/{id} instead", "id"));
    }
    char *id = NULL;
    json_t *problem = NULL;
    int rc = tw_dir_create_anonymous(r->h->dir, td, NULL, &id, &problem);
    json_decref(td);
    if (rc) return dir_error(r, rc, problem, "registration failed");
    char loc[1024] = "/things/";
    http_seg_encode(loc, sizeof loc, id);
    free(id);
    return http_reply_empty(r, 201, "Location", loc, NULL);
}

static enum MHD_Result answer_deleted(http_req *r, tw_msg *resp)
{
    enum MHD_Result res;
    if (!resp) return http_reply_error(r, 504, "timeout", "timed out", "no answer in time");
    if (http_resp_error(r, resp, &res)) return res;
    return http_reply_empty(r, 204, NULL);
}

static enum MHD_Result one_thing(http_req *r)
{
    tw_dir *d = r->h->dir;
    const char *id = r->segs[1];
    enum MHD_Result res;
    if (is(r, "GET") || r->head) {
        json_t *td = NULL;
        int rc = tw_dir_get(d, id, &td);
        if (rc) return http_reply_code(r, rc, rc == TW_ENOTFOUND ? "no Thing with this id" : NULL);
        return http_reply_json(r, 200, "application/td+json", td, NULL);
    }
    if (is(r, "PUT")) {
        if (!need_admin(r, &res)) return res;
        json_t *td = http_body_json(r, "application/td+json|application/json|application/ld+json",
                                    false, &res);
        if (!td) return res;
        if (!json_is_object(td)) {
            json_decref(td);
            return http_reply_error(r, 400, "invalid", "invalid TD", "a TD is a JSON object");
        }
        bool created = false;
        json_t *problem = NULL;
        int rc = tw_dir_put(d, id, td, NULL, &created, &problem);
        json_decref(td);
        if (rc) return dir_error(r, rc, problem, "registration failed");
        return http_reply_empty(r, created ? 201 : 204, NULL);
    }
    if (is(r, "PATCH")) {
        if (!need_admin(r, &res)) return res;
        json_t *patch = http_body_json(r, "application/merge-patch+json", false, &res);
        if (!patch) return res;
        if (!json_is_object(patch)) {
            json_decref(patch);
            return http_reply_error(r, 400, "invalid", "invalid patch",
                                    "a merge patch of a TD is a JSON object");
        }
        json_t *problem = NULL;
        int rc = tw_dir_patch(d, id, patch, NULL, &problem);
        json_decref(patch);
        if (rc)
            return dir_error(r, rc, problem,
                             rc == TW_ENOTFOUND ? "no Thing with this id" : "patch failed");
        return http_reply_empty(r, 204, NULL);
    }
    if (is(r, "DELETE")) {
        if (!need_admin(r, &res)) return res;
        tw_dir_info info;
        int rc = tw_dir_get_info(d, id, &info, NULL, NULL);
        if (rc) return http_reply_code(r, rc, rc == TW_ENOTFOUND ? "no Thing with this id" : NULL);
        if (info.agent_id[0]) {
            /* An agent's twin: through the router, so its pending actions
             * fail and their senders hear of it. */
            json_t *problem = NULL;
            tw_msg *m = http_request_new(r->h, TW_OP_DELETETHING, id, NULL, r->id.client_id, NULL,
                                         &problem);
            if (!m) return http_reply_problem(r, problem);
            r->on_answer = answer_deleted;
            return http_call_start(r, m, CALL_WAIT_RESPONSE, 10000);
        }
        rc = tw_dir_delete(d, id, NULL);
        if (rc) return http_reply_code(r, rc, rc == TW_ENOTFOUND ? "no Thing with this id" : NULL);
        return http_reply_empty(r, 204, NULL);
    }
    return http_reply_405(r, "GET, HEAD, PUT, PATCH, DELETE");
}

enum MHD_Result http_things_route(http_req *r)
{
    if (!r->h->dir) return no_dir(r);
    if (r->nsegs == 1) {
        if (is(r, "GET") || r->head) return list(r);
        if (is(r, "POST")) return create_anonymous(r);
        return http_reply_405(r, "GET, HEAD, POST");
    }
    return one_thing(r);
}

enum MHD_Result http_search_route(http_req *r)
{
    if (r->nsegs != 2) return http_reply_code(r, TW_ENOTFOUND, "no such resource");
    if (strcmp(r->segs[1], "sparql") == 0 || strcmp(r->segs[1], "xpath") == 0)
        return http_reply_error(r, 501, "not-implemented", "not implemented",
                                "this directory answers JSONPath queries only");
    if (strcmp(r->segs[1], "jsonpath") != 0)
        return http_reply_code(r, TW_ENOTFOUND, "no such resource");
    if (!is(r, "GET") && !r->head) return http_reply_405(r, "GET, HEAD");
    if (!r->h->dir) return no_dir(r);
    bool bad = false;
    char *q = http_query(r, "query", &bad);
    if (!q || bad) {
        free(q);
        return http_reply_problem(r, tw_problem_new(400, "invalid", "invalid query",
                                                    "the query argument is required", "query"));
    }
    json_t *result = NULL, *problem = NULL;
    int rc = tw_dir_query(r->h->dir, q, &result, &problem);
    free(q);
    if (rc) return dir_error(r, rc, problem, "query failed");
    return http_reply_json(r, 200, "application/json", result, NULL);
}

enum MHD_Result http_wellknown_route(http_req *r)
{
    if (r->nsegs != 2 || strcmp(r->segs[1], "wot") != 0)
        return http_reply_code(r, TW_ENOTFOUND, "no such resource");
    if (!is(r, "GET") && !r->head) return http_reply_405(r, "GET, HEAD");
    json_t *td = json_loads(wellknown_td, 0, NULL);
    if (!td) return http_reply_code(r, TW_ENOMEM, NULL);
    json_object_set_new(td, "base", json_string(http_base(r->h)));
    return http_reply_json(r, 200, "application/td+json", td, NULL);
}

/* ---- notifications ------------------------------------------------------ */

typedef struct dir_frame {
    const tw_dir_change *ch;
    char *plain, *diff;
} dir_frame;

static const char *frame_data(dir_frame *f, bool diff)
{
    char **slot = diff ? &f->diff : &f->plain;
    if (*slot) return *slot;
    json_t *d;
    if (!diff || !f->ch->data) {
        d = json_pack("{s:s}", "id", f->ch->id);
    } else {
        d = json_deep_copy(f->ch->data);
        if (json_is_object(d)) json_object_set_new(d, "id", json_string(f->ch->id));
    }
    *slot = d ? tw_json_encode(d, NULL) : NULL;
    json_decref(d);
    return *slot;
}

static void stream_change(http_stream *s, dir_frame *f)
{
    const tw_dir_change *ch = f->ch;
    if (s->dir_kinds && !(s->dir_kinds & (int)ch->kind)) return;
    const char *data = frame_data(f, s->dir_diff);
    if (!data) return;
    const char *ev = tw_dir_change_name(ch->kind);
    if (!s->live) {
        if (json_array_size(s->dir_pending) < DIR_PENDING_MAX)
            json_array_append_new(
                s->dir_pending,
                json_pack("{s:I,s:s,s:s}", "seq", (json_int_t)ch->seq, "event", ev, "data", data));
        return;
    }
    if (ch->seq <= s->last_id) return;
    s->last_id = ch->seq;
    pthread_mutex_unlock(&s->mu);
    http_sse_push_raw(s, ch->seq, ev, data, strlen(data));
    pthread_mutex_lock(&s->mu);
}

static void on_change(void *ctx, const tw_dir_change *ch)
{
    tw_http *h = ctx;
    dir_frame f = {ch, NULL, NULL};
    pthread_mutex_lock(&h->mu);
    for (http_stream *s = h->streams; s; s = s->next) {
        if (s->mode != SSE_DIRECTORY) continue;
        pthread_mutex_lock(&s->mu);
        if (!s->finished) stream_change(s, &f);
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&h->mu);
    free(f.plain);
    free(f.diff);
}

void http_dir_attach(tw_http *h)
{
    if (h->dir && !h->dir_sub && tw_dir_subscribe(h->dir, on_change, h, &h->dir_sub))
        tw_log_warn(HTTP_LOG, "cannot subscribe to the directory's changes");
}

void http_dir_detach(tw_http *h)
{
    if (h->dir && h->dir_sub) tw_dir_unsubscribe(h->dir, h->dir_sub);
    h->dir_sub = 0;
}

static void replay_change(void *ctx, const tw_dir_change *ch)
{
    http_stream *s = ctx;
    dir_frame f = {ch, NULL, NULL};
    pthread_mutex_lock(&s->mu);
    bool want = !s->dir_kinds || (s->dir_kinds & (int)ch->kind);
    const char *data = want ? frame_data(&f, s->dir_diff) : NULL;
    if (data && ch->seq > s->last_id) {
        s->last_id = ch->seq;
        pthread_mutex_unlock(&s->mu);
        http_sse_push_raw(s, ch->seq, tw_dir_change_name(ch->kind), data, strlen(data));
    } else {
        pthread_mutex_unlock(&s->mu);
    }
    free(f.plain);
    free(f.diff);
}

static int setup_dir(http_req *r, http_stream *s, json_t **problem)
{
    tw_dir *d = r->h->dir;
    int kinds = 0;
    if (r->nsegs == 2) {
        kinds = tw_dir_change_parse(r->segs[1]);
        if (!kinds) {
            *problem = tw_problem_new(404, "not-found", "not found",
                                      "the event types are thing_created, thing_updated and "
                                      "thing_deleted",
                                      NULL);
            return TW_ENOTFOUND;
        }
    }
    bool bad = false;
    char *diff = http_query(r, "diff", &bad);
    bool want_diff = diff && strcmp(diff, "true") == 0;
    if (bad || (diff && !want_diff && strcmp(diff, "false") != 0)) {
        free(diff);
        *problem = tw_problem_new(400, "invalid", "invalid query argument",
                                  "diff must be true or false", "diff");
        return TW_EINVAL;
    }
    free(diff);
    if (want_diff && kinds == TW_DIR_DELETED) {
        *problem = tw_problem_new(400, "invalid", "invalid query argument",
                                  "diff does not apply to thing_deleted", "diff");
        return TW_EINVAL;
    }
    uint64_t after = 0;
    bool resume = http_last_event_id(r, &after);
    pthread_mutex_lock(&s->mu);
    s->dir_kinds = kinds;
    s->dir_diff = want_diff;
    s->dir_pending = json_array();
    s->live = false;
    pthread_mutex_unlock(&s->mu);
    /* The stream is already in the list: changes from now on are held. */
    uint64_t now = tw_dir_etag(d);
    if (resume) {
        s->last_id = after;
        if (after < now) tw_dir_changes(d, after, kinds, 0, replay_change, s, NULL);
    }
    pthread_mutex_lock(&s->mu);
    /* A fresh stream starts after `now`; a resumed one after what it
     * replayed, so a change that reached the feed late comes from pending. */
    if (!resume && s->last_id < now) s->last_id = now;
    json_t *pend = s->dir_pending;
    s->dir_pending = NULL;
    size_t i;
    json_t *e;
    json_array_foreach(pend, i, e)
    {
        uint64_t seq = (uint64_t)json_integer_value(json_object_get(e, "seq"));
        if (seq <= s->last_id) continue;
        s->last_id = seq;
        const char *data = json_string_value(json_object_get(e, "data"));
        pthread_mutex_unlock(&s->mu);
        http_sse_push_raw(s, seq, json_string_value(json_object_get(e, "event")), data,
                          strlen(data));
        pthread_mutex_lock(&s->mu);
    }
    s->live = true;
    pthread_mutex_unlock(&s->mu);
    json_decref(pend);
    return 0;
}

enum MHD_Result http_dir_events_route(http_req *r)
{
    if (r->nsegs > 2) return http_reply_code(r, TW_ENOTFOUND, "no such resource");
    if (!is(r, "GET")) return http_reply_405(r, "GET");
    if (!r->h->dir) return no_dir(r);
    return http_sse_open(r, SSE_DIRECTORY, setup_dir);
}
