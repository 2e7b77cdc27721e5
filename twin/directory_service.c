/*
 * directory_service.c - the directory as an in-process service Thing,
 * "dtw:twind:directory", for nng and other envelope clients (the HTTP
 * binding serves the W3C TDD API from directory.h directly).
 *
 * Actions (all safe, answered on the caller's thread, never queued):
 *   listThings {offset?, limit?}              -> {total, offset, things:[TD]}
 *   getThing   {id}                           -> TD
 *   search     {type?, title?, name?, agent?, offset?, limit?}
 *                                             -> {total, offset, things:[TD]}
 *   search     {jsonpath}                     -> {results:[node]}
 * limit defaults to 100 and is capped at 1000. Bad input gets a 400 problem
 * naming the input member.
 */
#include "runtime/router.h"
#include "twin/twin_int.h"

#include <string.h>

#define DEFAULT_LIMIT 100
#define MAX_LIMIT 1000

static const char SERVICE_TD[] =
    "{\"@context\":\"https://www.w3.org/2022/wot/td/v1.1\",\"id\":\"directory\","
    "\"title\":\"Thing directory\",\"@type\":\"ThingDirectory\","
    "\"description\":\"The runtime's directory of twin TDs as a service Thing\","
    "\"actions\":{"
    "\"listThings\":{\"title\":\"List Things\",\"safe\":true,\"idempotent\":true,"
    "\"input\":{\"type\":\"object\",\"properties\":{"
    "\"offset\":{\"type\":\"integer\",\"minimum\":0},"
    "\"limit\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":1000}}},"
    "\"output\":{\"type\":\"object\",\"properties\":{\"total\":{\"type\":\"integer\"},"
    "\"offset\":{\"type\":\"integer\"},\"things\":{\"type\":\"array\"}}}},"
    "\"getThing\":{\"title\":\"Get a Thing's TD\",\"safe\":true,\"idempotent\":true,"
    "\"input\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"}},"
    "\"required\":[\"id\"]},\"output\":{\"type\":\"object\"}},"
    "\"search\":{\"title\":\"Search Things\",\"safe\":true,\"idempotent\":true,"
    "\"input\":{\"type\":\"object\",\"properties\":{"
    "\"type\":{\"type\":\"string\"},\"title\":{\"type\":\"string\"},"
    "\"name\":{\"type\":\"string\"},\"agent\":{\"type\":\"string\"},"
    "\"jsonpath\":{\"type\":\"string\"},"
    "\"offset\":{\"type\":\"integer\",\"minimum\":0},"
    "\"limit\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":1000}}},"
    "\"output\":{\"type\":\"object\"}}}}";

static json_t *bad_input(const char *detail, const char *member)
{
    char field[64];
    snprintf(field, sizeof field, "input.%s", member);
    return tw_problem_new(400, "invalid-input", "Invalid input", detail, field);
}

/* Reads an optional non-negative integer member. */
static int get_count(json_t *in, const char *member, size_t def, size_t cap, size_t *out,
                     json_t **problem)
{
    json_t *m = json_object_get(in, member);
    *out = def;
    if (!m) return 0;
    if (!json_is_integer(m) || json_integer_value(m) < 0) {
        *problem = bad_input("must be a non-negative integer", member);
        return TW_EINVAL;
    }
    *out = (size_t)json_integer_value(m);
    if (*out > cap) *out = cap;
    return 0;
}

static int get_str(json_t *in, const char *member, const char **out, json_t **problem)
{
    json_t *m = json_object_get(in, member);
    *out = NULL;
    if (!m) return 0;
    if (!json_is_string(m)) {
        *problem = bad_input("must be a string", member);
        return TW_EINVAL;
    }
    *out = json_string_value(m);
    return 0;
}

static int paged(int rc, json_t *page, size_t total, size_t offset, json_t **output)
{
    if (rc) return rc;
    *output = json_pack("{s:I,s:I,s:o}", "total", (json_int_t)total, "offset", (json_int_t)offset,
                        "things", page);
    return *output ? 0 : TW_ENOMEM;
}

static int serve(void *ctx, tw_conn *c, const tw_msg *req, json_t **output, json_t **problem)
{
    tw_twin *t = ctx;
    const char *action = tw_msg_name(req);
    json_t *in = tw_msg_get(req, "input");
    *output = NULL;
    *problem = NULL;
    if (in && !json_is_object(in) && !json_is_null(in)) {
        *problem = tw_problem_new(400, "invalid-input", "Invalid input",
                                  "the input of a directory action is an object", "input");
        return TW_EINVAL;
    }
    size_t offset, limit;
    if (action && strcmp(action, "listThings") == 0) {
        if (get_count(in, "offset", 0, SIZE_MAX, &offset, problem) ||
            get_count(in, "limit", DEFAULT_LIMIT, MAX_LIMIT, &limit, problem))
            return TW_EINVAL;
        json_t *page = NULL;
        size_t total = 0;
        int rc = tw_dir_list(t->dir, offset, limit, &page, &total, NULL);
        return paged(rc, page, total, offset, output);
    }
    if (action && strcmp(action, "getThing") == 0) {
        const char *id;
        if (get_str(in, "id", &id, problem)) return TW_EINVAL;
        if (!id) {
            *problem = bad_input("is required", "id");
            return TW_EINVAL;
        }
        int rc = tw_dir_get(t->dir, id, output);
        if (rc == TW_ENOTFOUND)
            *problem = tw_problem_from_error(rc, "no Thing with this id", "input.id");
        return rc;
    }
    if (action && strcmp(action, "search") == 0) {
        const char *jp;
        if (get_str(in, "jsonpath", &jp, problem)) return TW_EINVAL;
        if (jp) {
            json_t *res = NULL;
            int rc = tw_dir_query(t->dir, jp, &res, problem);
            if (rc) {
                json_t *f = *problem ? json_object_get(*problem, "field") : NULL;
                if (f) json_object_set_new(*problem, "field", json_string("input.jsonpath"));
                return rc;
            }
            *output = json_pack("{s:o}", "results", res);
            return *output ? 0 : TW_ENOMEM;
        }
        tw_dir_filter f = {0};
        if (get_str(in, "type", &f.type, problem) || get_str(in, "title", &f.title, problem) ||
            get_str(in, "name", &f.name, problem) || get_str(in, "agent", &f.agent, problem) ||
            get_count(in, "offset", 0, SIZE_MAX, &offset, problem) ||
            get_count(in, "limit", DEFAULT_LIMIT, MAX_LIMIT, &limit, problem))
            return TW_EINVAL;
        json_t *page = NULL;
        size_t total = 0;
        int rc = tw_dir_search(t->dir, &f, offset, limit, &page, &total);
        return paged(rc, page, total, offset, output);
    }
    *problem =
        tw_problem_new(404, "not-found", "Not found",
                       "the directory's actions are listThings, getThing and search", "name");
    return TW_ENOTFOUND;
}

int tw_twin_directory_service_start(tw_twin *t)
{
    json_t *td = json_loads(SERVICE_TD, 0, NULL), *twin_td = NULL;
    if (!td) return TW_ENOMEM;
    int rc = tw_twin_derive(t->rt, "twind", td, &twin_td);
    json_t *cur = NULL;
    if (rc == 0 && tw_dir_get_info(t->dir, TW_TWIN_DIRECTORY_ID, NULL, &cur, NULL) == 0 &&
        json_equal(cur, twin_td)) {
        /* as stored by the last start: nothing to write */
    } else if (rc == 0) {
        tw_dir_put_opts o = {.agent_id = "twind", .agent_td = td, .skip_validate = true};
        json_t *problem = NULL;
        rc = tw_dir_put(t->dir, TW_TWIN_DIRECTORY_ID, twin_td, &o, NULL, &problem);
        json_decref(problem);
    }
    json_decref(cur);
    json_decref(twin_td);
    json_decref(td);
    if (rc == 0) rc = tw_router_add_service(t->rt, TW_TWIN_DIRECTORY_ID, serve, t);
    return rc;
}
