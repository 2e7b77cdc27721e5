/*
 * dump_tds.c - fills a twind directory through the C API the way the
 * runtime does (agents' updatething with twin TD derivation and binding
 * forms, W3C TDD puts, anonymous TDs, merge patches, the directory service)
 * and writes every TD the directory returns - listed, fetched one by one,
 * and as carried by the change feed - as JSON lines for check.js. It also
 * writes broken TDs that twind's validator rejects, which the W3C schema
 * must reject too. Usage: dump_tds DATA_DIR > tds.jsonl
 */
#include "bindings/http/http.h"
#include "bindings/nng/nng_binding.h"
#include "runtime/config.h"
#include "runtime/runtime.h"
#include "twin/merge_patch.h"
#include "twin/td_validate.h"
#include "twin/twin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Forms as a protocol binding adds them (all WoT op kinds). */
static int fb_start(tw_binding *b)
{
    return 0;
}
static void fb_stop(tw_binding *b) {}
static int fb_send(tw_binding *b, tw_conn *c, tw_msg *m)
{
    return 0;
}
static void fb_destroy(tw_binding *b) {}

static json_t *form(const char *id, const char *kind, const char *name, json_t *ops)
{
    char href[600];
    snprintf(href, sizeof href, "https://localhost:8444/things/%s/%s/%s", id, kind,
             name ? name : "");
    return json_pack("{s:s,s:o,s:s}", "href", href, "op", ops, "contentType", "application/json");
}

/* Appends form (reference stolen) to obj's "forms", creating the array. */
static void add_form(json_t *obj, json_t *form)
{
    json_t *forms = json_object_get(obj, "forms");
    if (!json_is_array(forms)) json_object_set_new(obj, "forms", forms = json_array());
    json_array_append_new(forms, form);
}

/* Adds to what the other bindings added (bindings append, never replace). */
static int fb_add_forms(tw_binding *b, json_t *td)
{
    const char *id = json_string_value(json_object_get(td, "id"));
    const char *name;
    json_t *aff;
    json_object_foreach(json_object_get(td, "properties"), name, aff)
    {
        add_form(aff,
                 form(id, "properties", name, json_pack("[s,s]", "readproperty", "writeproperty")));
        json_t *obs = form(id, "properties", name,
                           json_pack("[s,s]", "observeproperty", "unobserveproperty"));
        json_object_set_new(obs, "subprotocol", json_string("sse"));
        add_form(aff, obs);
    }
    json_object_foreach(json_object_get(td, "actions"), name, aff)
        add_form(aff, form(id, "actions", name,
                           json_pack("[s,s,s]", "invokeaction", "queryaction", "cancelaction")));
    json_object_foreach(json_object_get(td, "events"), name, aff) add_form(
        aff, form(id, "events", name, json_pack("[s,s]", "subscribeevent", "unsubscribeevent")));
    add_form(td, form(id, "properties", NULL,
                      json_pack("[s,s,s]", "readallproperties", "readmultipleproperties",
                                "observeallproperties")));
    add_form(td, form(id, "events", NULL,
                      json_pack("[s,s]", "subscribeallevents", "unsubscribeallevents")));
    return 0;
}

static const tw_binding_ops FORMS = {.name = "forms",
                                     .start = fb_start,
                                     .stop = fb_stop,
                                     .send = fb_send,
                                     .add_forms = fb_add_forms,
                                     .destroy = fb_destroy};

/* json_object_update, stealing the reference to more. */
static void update_new(json_t *obj, json_t *more)
{
    json_object_update(obj, more);
    json_decref(more);
}

/* An agent's TD as a device would publish it: no forms, no security. */
static json_t *agent_td(int i)
{
    char id[32], title[64];
    snprintf(id, sizeof id, "dev-%03d", i);
    snprintf(title, sizeof title, "Device %d", i);
    json_t *props = json_object(), *actions = json_object(), *events = json_object();
    static const char *types[] = {"number", "integer", "string", "boolean", "object", "array"};
    for (int p = 0; p < 10; p++) {
        char name[16];
        snprintf(name, sizeof name, "prop%d", p);
        const char *t = types[(i + p) % 6];
        json_t *ds = json_pack("{s:s,s:s,s:b}", "type", t, "title", name, "observable", p % 2);
        if (!strcmp(t, "number"))
            update_new(
                ds, json_pack("{s:f,s:f,s:s}", "minimum", -40.0, "maximum", 85.5, "unit", "cel"));
        if (!strcmp(t, "integer"))
            update_new(ds,
                       json_pack("{s:i,s:i,s:i}", "minimum", 0, "maximum", 100, "multipleOf", 5));
        if (!strcmp(t, "string"))
            update_new(ds,
                       json_pack("{s:[s,s,s],s:b}", "enum", "low", "mid", "high", "readOnly", 1));
        if (!strcmp(t, "object"))
            update_new(ds, json_pack("{s:{s:{s:s},s:{s:s}},s:[s]}", "properties", "x", "type",
                                     "number", "y", "type", "number", "required", "x"));
        if (!strcmp(t, "array"))
            update_new(ds, json_pack("{s:{s:s},s:i,s:i}", "items", "type", "string", "minItems", 0,
                                     "maxItems", 8));
        json_object_set_new(props, name, ds);
    }
    json_object_set_new(actions, "reset", json_pack("{s:s}", "title", "Reset"));
    json_object_set_new(
        actions, "status",
        json_pack("{s:b,s:b,s:{s:s}}", "safe", 1, "idempotent", 1, "output", "type", "object"));
    json_object_set_new(actions, "move",
                        json_pack("{s:{s:s,s:{s:{s:s,s:i}}},s:i}", "input", "type", "object",
                                  "properties", "steps", "type", "integer", "minimum", 1,
                                  "twind:maxTTL", 600));
    json_object_set_new(events, "alarm", json_pack("{s:{s:s}}", "data", "type", "string"));
    json_object_set_new(events, "tick", json_pack("{s:s}", "description", "every second"));
    return json_pack("{s:[s,{s:s}],s:s,s:s,s:[s],s:s,s:o,s:o,s:o}", "@context",
                     "https://www.w3.org/2022/wot/td/v1.1", "twind", "https://twind.example/ns#",
                     "id", id, "title", title, "@type", i % 2 ? "Sensor" : "Actuator",
                     "description", "generated by dump_tds", "properties", props, "actions",
                     actions, "events", events);
}

static const char RICH[] =
    "{\"@context\":[\"https://www.w3.org/2022/wot/td/v1.1\",{\"saref\":\"https://w3id.org/"
    "saref#\"},{\"@language\":\"en\"}],\"id\":\"urn:dev:ops:32473-WoTLamp-1234\",\"title\":"
    "\"MyLampThing\",\"titles\":{\"en\":\"MyLampThing\",\"de\":\"MeinLampenDing\"},\"@type\":"
    "[\"saref:LightSwitch\"],\"version\":{\"instance\":\"1.2.1\"},\"created\":"
    "\"2018-11-14T19:10:23.824Z\",\"base\":\"https://mylamp.example.com/\","
    "\"securityDefinitions\":{\"basic_sc\":{\"scheme\":\"basic\",\"in\":\"header\"},"
    "\"digest_sc\":{\"scheme\":\"digest\",\"qop\":\"auth\"},\"combo_sc\":{\"scheme\":\"combo\","
    "\"oneOf\":[\"basic_sc\",\"digest_sc\"]},\"apikey_sc\":{\"scheme\":\"apikey\",\"in\":"
    "\"uri\"},\"oauth2_sc\":{\"scheme\":\"oauth2\",\"flow\":\"code\"}},\"security\":"
    "[\"combo_sc\"],\"links\":[{\"rel\":\"icon\",\"href\":\"icon.png\",\"sizes\":\"16x16\"},"
    "{\"rel\":\"controlledBy\",\"href\":\"https://c.example.com\",\"hreflang\":\"de\"}],"
    "\"forms\":[{\"op\":[\"readallproperties\",\"writemultipleproperties\"],\"href\":"
    "\"properties\"}],\"properties\":{\"status\":{\"type\":\"string\",\"enum\":[\"on\","
    "\"off\"],\"readOnly\":true,\"forms\":[{\"href\":\"status\",\"op\":\"readproperty\","
    "\"response\":{\"contentType\":\"application/json\"},\"additionalResponses\":[{\"success\":"
    "false,\"contentType\":\"application/problem+json\"}]}]},\"pair\":{\"type\":\"array\","
    "\"items\":[{\"type\":\"number\"},{\"type\":\"string\"}],\"forms\":[{\"href\":\"pair\"}]},"
    "\"mode\":{\"oneOf\":[{\"type\":\"string\"},{\"type\":\"null\"}],\"forms\":[{\"href\":"
    "\"mode\"}]}},\"actions\":{\"fade\":{\"input\":{\"type\":\"object\",\"properties\":"
    "{\"duration\":{\"type\":\"number\",\"exclusiveMinimum\":0}}},\"forms\":[{\"href\":"
    "\"fade\"}]}},\"events\":{\"overheating\":{\"data\":{\"type\":\"string\"},\"forms\":"
    "[{\"href\":\"oh\",\"subprotocol\":\"longpoll\"}]}}}";

/* Broken variants (patches of a valid TD) that both validators reject. */
static const struct {
    const char *name, *patch;
} BROKEN[] = {
    {"no-title", "{\"title\":null}"},
    {"no-context", "{\"@context\":null}"},
    {"bad-context", "{\"@context\":\"https://example.com\"}"},
    {"no-security", "{\"security\":null}"},
    {"empty-securityDefinitions", "{\"securityDefinitions\":{},\"security\":[]}"},
    {"unknown-scheme", "{\"securityDefinitions\":{\"basic_sc\":{\"scheme\":\"magic\"}}}"},
    {"property-op", "{\"properties\":{\"status\":{\"forms\":[{\"href\":\"s\",\"op\":"
                    "\"invokeaction\"}]}}}"},
    {"form-no-href", "{\"properties\":{\"status\":{\"forms\":[{\"op\":\"readproperty\"}]}}}"},
    {"no-forms", "{\"actions\":{\"fade\":{\"forms\":null}}}"},
    {"bad-type", "{\"properties\":{\"status\":{\"type\":\"float\"}}}"},
    {"empty-enum", "{\"properties\":{\"status\":{\"enum\":[]}}}"},
    {"negative-minLength", "{\"properties\":{\"status\":{\"minLength\":-1}}}"},
    {"zero-multipleOf", "{\"properties\":{\"status\":{\"multipleOf\":0}}}"},
    {"root-op", "{\"forms\":[{\"href\":\"x\",\"op\":\"readproperty\"}]}"},
    {"bad-date", "{\"created\":\"yesterday\"}"},
    {"thing-model", "{\"@type\":\"tm:ThingModel\"}"},
    {"combo-one", "{\"securityDefinitions\":{\"combo_sc\":{\"oneOf\":[\"basic_sc\"]}}}"},
    {"link-no-href", "{\"links\":[{\"rel\":\"next\"}]}"},
    {"bad-id", "{\"id\":\"not a uri\"}"},
};

/* One line for check.js, with twind's own validator's verdict on the TD
 * ("c_valid"), which ajv's must match. */
static void emit(const char *expect, const char *name, json_t *td)
{
    json_t *errors = NULL;
    bool c_valid = tw_td_validate(td, 0, &errors) == 0;
    json_t *line = json_pack("{s:s,s:s,s:O,s:b,s:o*}", "expect", expect, "name", name, "td", td,
                             "c_valid", c_valid, "c_errors", errors);
    char *s = json_dumps(line, JSON_COMPACT);
    puts(s);
    free(s);
    json_decref(line);
}

static void emit_change(void *ctx, const tw_dir_change *ch)
{
    if (ch->kind != TW_DIR_CREATED || !ch->data) return;
    char name[320];
    snprintf(name, sizeof name, "feed:%llu:%s", (unsigned long long)ch->seq, ch->id);
    emit("valid", name, ch->data);
}

static int die(const char *what, int rc, json_t *problem)
{
    char *p = problem ? json_dumps(problem, JSON_COMPACT) : NULL;
    fprintf(stderr, "dump_tds: %s: %s %s\n", what, tw_strerror(rc), p ? p : "");
    free(p);
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: dump_tds DATA_DIR\n");
        return 2;
    }
    tw_config cfg;
    tw_config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", argv[1]);
    cfg.store_sync_normal = true;
    char err[256];
    tw_runtime *rt = NULL;
    tw_twin *twin = NULL;
    int rc = tw_runtime_new(&cfg, &rt, err, sizeof err);
    if (rc) die(err, rc, NULL);
    /* the real bindings' forms (plain listeners on free loopback ports),
     * and the test binding's, which uses every kind of op */
    json_t *http = json_pack("{s:n,s:s}", "https", "http", "127.0.0.1:0");
    json_t *nng = json_pack("{s:[s]}", "listen", "tcp://127.0.0.1:0");
    if ((rc = tw_http_binding_new(rt, http, NULL))) die("http binding", rc, NULL);
    if ((rc = tw_nng_binding_new(rt, nng, NULL))) die("nng binding", rc, NULL);
    if ((rc = tw_runtime_add_binding(rt, &FORMS, NULL, NULL))) die("binding", rc, NULL);
    if ((rc = tw_twin_open(rt, &twin))) die("twin", rc, NULL);
    tw_runtime_set_twin(rt, tw_twin_ops_table(), twin);
    if ((rc = tw_runtime_start(rt, err, sizeof err))) die(err, rc, NULL);
    const tw_twin_ops *ops = tw_twin_ops_table();
    tw_dir *d = tw_twin_dir(twin);
    json_t *problem = NULL;

    /* agents publish their Things */
    for (int i = 0; i < 24; i++) {
        json_t *td = agent_td(i);
        char *id = NULL, agent[16];
        snprintf(agent, sizeof agent, "agent%d", i % 3);
        if ((rc = ops->update_thing(twin, agent, td, &id, &problem)))
            die("updatething", rc, problem);
        free(id);
        json_decref(td);
    }
    /* an agent republishes with a change */
    json_t *td = agent_td(1);
    json_object_set_new(td, "title", json_string("Device 1, renamed"));
    char *id = NULL;
    if ((rc = ops->update_thing(twin, "agent1", td, &id, &problem))) die("update", rc, problem);
    free(id);
    json_decref(td);
    /* W3C TDD API: put, anonymous, patch */
    json_t *rich = json_loads(RICH, 0, NULL);
    if ((rc = tw_dir_put(d, "urn:dev:ops:32473-WoTLamp-1234", rich, NULL, NULL, &problem)))
        die("put", rc, problem);
    json_t *anon = json_deep_copy(rich);
    json_object_del(anon, "id");
    json_object_set_new(anon, "registration", json_pack("{s:i}", "ttl", 3600));
    if ((rc = tw_dir_create_anonymous(d, anon, NULL, &id, &problem))) die("anonymous", rc, problem);
    json_t *patch =
        json_pack("{s:s,s:{s:n,s:{s:s,s:[{s:s}]}}}", "title", "Patched lamp", "properties", "pair",
                  "level", "type", "integer", "forms", "href", "level");
    if ((rc = tw_dir_patch(d, id, patch, NULL, &problem))) die("patch", rc, problem);
    free(id);
    json_decref(patch);
    json_decref(anon);

    /* everything the directory returns */
    json_t *page = NULL;
    size_t total = 0;
    if ((rc = tw_dir_list(d, 0, SIZE_MAX, &page, &total, NULL))) die("list", rc, NULL);
    size_t i;
    json_t *t;
    json_array_foreach(page, i, t)
    {
        const char *tid = json_string_value(json_object_get(t, "id"));
        char name[320];
        snprintf(name, sizeof name, "list:%s", tid);
        emit("valid", name, t);
        json_t *one = NULL;
        if ((rc = tw_dir_get(d, tid, &one))) die("get", rc, NULL);
        snprintf(name, sizeof name, "get:%s", tid);
        emit("valid", name, one);
        json_decref(one);
    }
    json_decref(page);
    if ((rc = tw_dir_changes(d, 0, 0, 0, emit_change, NULL, NULL))) die("changes", rc, NULL);
    json_t *res = NULL;
    if ((rc = tw_dir_query(d, "$[?@['@type']=='Sensor']", &res, &problem)))
        die("query", rc, problem);
    json_array_foreach(res, i, t) emit("valid", "query", t);
    json_decref(res);

    /* broken TDs: twind must reject each */
    for (size_t b = 0; b < sizeof BROKEN / sizeof BROKEN[0]; b++) {
        json_t *p = json_loads(BROKEN[b].patch, 0, NULL);
        json_t *bad = tw_merge_patch_apply(rich, p);
        json_t *errors = NULL;
        if (tw_td_validate(bad, 0, &errors) != TW_EINVAL) {
            fprintf(stderr, "dump_tds: twind accepted the broken TD %s\n", BROKEN[b].name);
            return 1;
        }
        emit("invalid", BROKEN[b].name, bad);
        json_decref(errors);
        json_decref(bad);
        json_decref(p);
    }
    json_decref(rich);
    fprintf(stderr, "dump_tds: %zu Things in the directory\n", total);
    tw_runtime_stop(rt);
    tw_twin_close(twin);
    tw_runtime_free(rt);
    json_decref(http);
    json_decref(nng);
    tw_config_free(&cfg);
    return 0;
}
