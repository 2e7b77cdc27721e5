/*
 * test_twin_validate.c - the TD 1.1 validator: TDs written after the W3C TD
 * 1.1 Recommendation's examples pass; each broken variant (a merge patch
 * applied to a valid TD) is rejected with exactly the expected fields as JSON
 * pointers; several problems are all listed; flags, depth and error limits;
 * the RFC 9457 problem built from the errors.
 */
#include "runtime/tw.h"
#include "twin/merge_patch.h"
#include "twin/td_validate.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* TD 1.1 Example 1 (MyLampThing), with the 1.1 context. */
static const char LAMP[] =
    "{\"@context\":\"https://www.w3.org/2022/wot/td/v1.1\","
    "\"id\":\"urn:uuid:0804d572-cce8-422a-bb7c-4412fcd56f06\",\"title\":\"MyLampThing\","
    "\"securityDefinitions\":{\"basic_sc\":{\"scheme\":\"basic\",\"in\":\"header\"}},"
    "\"security\":\"basic_sc\","
    "\"properties\":{\"status\":{\"type\":\"string\","
    "\"forms\":[{\"href\":\"https://mylamp.example.com/status\"}]}},"
    "\"actions\":{\"toggle\":{\"forms\":[{\"href\":\"https://mylamp.example.com/toggle\"}]}},"
    "\"events\":{\"overheating\":{\"data\":{\"type\":\"string\"},"
    "\"forms\":[{\"href\":\"https://mylamp.example.com/oh\",\"subprotocol\":\"longpoll\"}]}}}";

/* After the TD 1.1 examples with semantic annotations, combo security,
 * multi-language, links, uriVariables, Thing-level forms and data schemas. */
static const char RICH[] =
    "{\"@context\":[\"https://www.w3.org/2022/wot/td/v1.1\","
    "{\"saref\":\"https://w3id.org/saref#\"},{\"@language\":\"en\"}],"
    "\"id\":\"urn:dev:ops:32473-WoTLamp-1234\",\"title\":\"MyLampThing\","
    "\"titles\":{\"en\":\"MyLampThing\",\"de\":\"MeinLampenDing\"},"
    "\"description\":\"MyLampThing uses JSON serialization\","
    "\"descriptions\":{\"en\":\"MyLampThing uses JSON serialization\"},"
    "\"@type\":[\"saref:LightSwitch\"],\"version\":{\"instance\":\"1.2.1\"},"
    "\"created\":\"2018-11-14T19:10:23.824Z\",\"modified\":\"2019-06-01T09:12:43+02:00\","
    "\"support\":\"mailto:support@example.com\",\"base\":\"https://mylamp.example.com/\","
    "\"profile\":[\"https://www.w3.org/2022/wot/profile/http-basic/v1\"],"
    "\"securityDefinitions\":{\"basic_sc\":{\"scheme\":\"basic\",\"in\":\"header\"},"
    "\"digest_sc\":{\"scheme\":\"digest\",\"qop\":\"auth\"},"
    "\"bearer_sc\":{\"scheme\":\"bearer\",\"format\":\"jwt\",\"alg\":\"ES256\","
    "\"authorization\":\"https://server.example.com\"},"
    "\"apikey_sc\":{\"scheme\":\"apikey\",\"in\":\"uri\",\"name\":\"key\"},"
    "\"psk_sc\":{\"scheme\":\"psk\",\"identity\":\"id\"},"
    "\"oauth2_sc\":{\"scheme\":\"oauth2\",\"flow\":\"code\",\"scopes\":[\"limited\"],"
    "\"authorization\":\"https://a.example.com\",\"token\":\"https://t.example.com\"},"
    "\"nosec_sc\":{\"scheme\":\"nosec\"},\"auto_sc\":{\"scheme\":\"auto\"},"
    "\"ace_sc\":{\"scheme\":\"ace:ACESecurityScheme\",\"ace:as\":\"coaps://as.example.com\"},"
    "\"combo_sc\":{\"scheme\":\"combo\",\"oneOf\":[\"basic_sc\",\"digest_sc\"]}},"
    "\"security\":[\"combo_sc\"],"
    "\"links\":[{\"rel\":\"icon\",\"href\":\"icon.png\",\"type\":\"image/png\","
    "\"sizes\":\"16x16\"},{\"rel\":\"controlledBy\",\"href\":\"https://c.example.com\","
    "\"hreflang\":\"de\"}],"
    "\"uriVariables\":{\"lang\":{\"type\":\"string\",\"enum\":[\"en\",\"de\"]}},"
    "\"schemaDefinitions\":{\"level\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":100}},"
    "\"forms\":[{\"op\":[\"readallproperties\",\"writemultipleproperties\"],"
    "\"href\":\"https://mylamp.example.com/properties\",\"contentType\":\"application/json\"},"
    "{\"op\":\"subscribeallevents\",\"href\":\"https://mylamp.example.com/events\","
    "\"subprotocol\":\"sse\"}],"
    "\"properties\":{"
    "\"status\":{\"@type\":\"saref:OnOffState\",\"type\":\"string\","
    "\"enum\":[\"on\",\"off\"],\"readOnly\":true,\"observable\":true,\"title\":\"Status\","
    "\"forms\":[{\"href\":\"status\",\"op\":[\"readproperty\",\"observeproperty\"],"
    "\"response\":{\"contentType\":\"application/json\"},"
    "\"additionalResponses\":[{\"success\":false,\"contentType\":\"application/problem+json\"}],"
    "\"security\":\"basic_sc\",\"scopes\":\"limited\"}]},"
    "\"brightness\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":100,\"multipleOf\":5,"
    "\"unit\":\"percent\",\"forms\":[{\"href\":\"brightness{?lang}\",\"op\":\"writeproperty\"}],"
    "\"uriVariables\":{\"lang\":{\"type\":\"string\"}}},"
    "\"color\":{\"type\":\"object\",\"properties\":{\"r\":{\"type\":\"number\"},"
    "\"g\":{\"type\":\"number\"},\"b\":{\"type\":\"number\"}},\"required\":[\"r\",\"g\",\"b\"],"
    "\"forms\":[{\"href\":\"color\"}]},"
    "\"history\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"minLength\":1,"
    "\"maxLength\":20,\"format\":\"date-time\"},\"minItems\":0,\"maxItems\":10,"
    "\"forms\":[{\"href\":\"history\"}]},"
    "\"pair\":{\"type\":\"array\",\"items\":[{\"type\":\"number\"},{\"type\":\"string\"}],"
    "\"forms\":[{\"href\":\"pair\"}]},"
    "\"mode\":{\"oneOf\":[{\"type\":\"string\",\"const\":\"auto\"},{\"type\":\"null\"}],"
    "\"default\":\"auto\",\"forms\":[{\"href\":\"mode\"}]},"
    "\"image\":{\"contentMediaType\":\"image/png\",\"contentEncoding\":\"base64\","
    "\"type\":\"string\",\"writeOnly\":false,\"forms\":[{\"href\":\"image\"}]}},"
    "\"actions\":{\"fade\":{\"title\":\"Fade in/out\",\"safe\":false,\"idempotent\":false,"
    "\"synchronous\":true,\"input\":{\"type\":\"object\",\"properties\":{"
    "\"from\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":100},"
    "\"duration\":{\"type\":\"number\",\"exclusiveMinimum\":0}},\"required\":[\"duration\"]},"
    "\"output\":{\"type\":\"boolean\"},"
    "\"forms\":[{\"href\":\"fade\",\"op\":[\"invokeaction\",\"queryaction\",\"cancelaction\"]}]}},"
    "\"events\":{\"overheating\":{\"data\":{\"type\":\"string\"},"
    "\"subscription\":{\"type\":\"object\"},\"cancellation\":{\"type\":\"object\"},"
    "\"dataResponse\":{\"type\":\"string\"},"
    "\"forms\":[{\"href\":\"oh\",\"subprotocol\":\"longpoll\","
    "\"op\":[\"subscribeevent\",\"unsubscribeevent\"]}]}}}";

/* TD 1.0-style context followed by the 1.1 one, nosec, no affordances. */
static const char OLD_CTX[] =
    "{\"@context\":[\"https://www.w3.org/2019/wot/td/v1\","
    "\"https://www.w3.org/2022/wot/td/v1.1\",{\"iot\":\"http://iotschema.org/\"}],"
    "\"title\":\"Bare\",\"securityDefinitions\":{\"nosec_sc\":{\"scheme\":\"nosec\"}},"
    "\"security\":\"nosec_sc\"}";

static json_t *J(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    if (!j) fail_msg("bad test JSON: %s at %d: %.60s", e.text, e.position, s);
    return j;
}

static void assert_valid(const char *td_text, int flags)
{
    json_t *td = J(td_text), *errors = (json_t *)1;
    int rc = tw_td_validate(td, flags, &errors);
    if (rc) {
        char *e = json_dumps(errors, JSON_INDENT(1));
        fail_msg("valid TD rejected: %s", e);
    }
    assert_null(errors);
    json_decref(td);
}

static void test_w3c_examples_pass(void **state)
{
    assert_valid(LAMP, 0);
    assert_valid(RICH, 0);
    assert_valid(OLD_CTX, 0);
    assert_valid("{\"@context\":\"https://www.w3.org/2019/wot/td/v1\",\"title\":\"T\","
                 "\"securityDefinitions\":{\"s\":{\"scheme\":\"nosec\"}},\"security\":[\"s\"]}",
                 0);
}

/*
 * Applies patch to base, validates with flags and checks that the problems'
 * fields are exactly the space-separated list `fields` (order free).
 */
static void expect_fields(const char *base, const char *patch, int flags, const char *fields)
{
    json_t *b = J(base), *p = J(patch);
    json_t *td = tw_merge_patch_apply(b, p), *errors = NULL;
    int rc = tw_td_validate(td, flags, &errors);
    char *got = errors ? json_dumps(errors, JSON_INDENT(1)) : strdup("(none)");
    if (rc != TW_EINVAL) fail_msg("patch %s: accepted, expected %s", patch, fields);
    char want[1024];
    snprintf(want, sizeof want, "%s", fields);
    size_t nwant = 0;
    for (char *tok = strtok(want, " "); tok; tok = strtok(NULL, " ")) {
        nwant++;
        bool found = false;
        size_t i;
        json_t *e;
        json_array_foreach(errors, i, e)
        {
            const char *f = json_string_value(json_object_get(e, "field"));
            const char *d = json_string_value(json_object_get(e, "description"));
            assert_non_null(f);
            assert_non_null(d);
            assert_true(strlen(d) > 3);
            if (strcmp(f, tok) == 0) found = true;
        }
        if (!found) fail_msg("patch %s: no problem at %s; got %s", patch, tok, got);
    }
    if (json_array_size(errors) != nwant)
        fail_msg("patch %s: want exactly [%s]; got %s", patch, fields, got);
    free(got);
    json_decref(errors);
    json_decref(td);
    json_decref(b);
    json_decref(p);
}

static void test_required_members(void **state)
{
    expect_fields(LAMP, "{\"@context\":null}", 0, "/@context");
    expect_fields(LAMP, "{\"title\":null}", 0, "/title");
    expect_fields(LAMP, "{\"security\":null}", 0, "/security");
    expect_fields(LAMP, "{\"securityDefinitions\":null}", 0, "/securityDefinitions");
    expect_fields(LAMP, "{\"@context\":null,\"title\":null,\"security\":null}", 0,
                  "/@context /title /security");
    json_t *errors = NULL, *arr = json_array();
    assert_int_equal(tw_td_validate(arr, 0, &errors), TW_EINVAL);
    assert_string_equal(json_string_value(json_object_get(json_array_get(errors, 0), "field")),
                        "/");
    json_decref(errors);
    json_decref(arr);
}

static void test_context(void **state)
{
    expect_fields(LAMP, "{\"@context\":\"https://example.com/td\"}", 0, "/@context");
    expect_fields(LAMP, "{\"@context\":[\"https://example.com\"]}", 0, "/@context/0");
    expect_fields(LAMP, "{\"@context\":[]}", 0, "/@context");
    expect_fields(LAMP,
                  "{\"@context\":[\"https://www.w3.org/2022/wot/td/v1.1\","
                  "\"https://www.w3.org/2019/wot/td/v1\"]}",
                  0, "/@context/1");
    expect_fields(LAMP, "{\"@context\":[\"https://www.w3.org/2022/wot/td/v1.1\",3]}", 0,
                  "/@context/1");
    expect_fields(LAMP, "{\"@context\":[\"https://www.w3.org/2022/wot/td/v1.1\",{\"x\":1}]}", 0,
                  "/@context/1/x");
    expect_fields(LAMP, "{\"@context\":7}", 0, "/@context");
}

static void test_thing_members(void **state)
{
    expect_fields(LAMP, "{\"title\":5}", 0, "/title");
    expect_fields(LAMP, "{\"titles\":{\"de\":1}}", 0, "/titles/de");
    expect_fields(LAMP, "{\"description\":[]}", 0, "/description");
    expect_fields(LAMP, "{\"descriptions\":\"x\"}", 0, "/descriptions");
    expect_fields(LAMP, "{\"id\":\"not a uri\"}", 0, "/id");
    expect_fields(LAMP, "{\"id\":\"nocolon\"}", 0, "/id");
    expect_fields(LAMP, "{\"id\":\"urn:a%zz\"}", 0, "/id");
    expect_fields(LAMP, "{\"id\":42}", 0, "/id");
    expect_fields(LAMP, "{\"@type\":\"tm:ThingModel\"}", 0, "/@type");
    expect_fields(LAMP, "{\"@type\":[\"A\",3]}", 0, "/@type/1");
    expect_fields(LAMP, "{\"version\":{\"model\":\"1\"}}", 0, "/version/instance");
    expect_fields(LAMP, "{\"version\":\"1\"}", 0, "/version");
    expect_fields(LAMP, "{\"created\":\"yesterday\"}", 0, "/created");
    expect_fields(LAMP, "{\"modified\":\"2019-13-01T00:00:00Z\"}", 0, "/modified");
    expect_fields(LAMP, "{\"created\":\"2019-01-01T00:00:00\"}", 0, "/created");
    expect_fields(LAMP, "{\"support\":1,\"base\":true}", 0, "/support /base");
    expect_fields(LAMP, "{\"profile\":[]}", 0, "/profile");
    expect_fields(LAMP, "{\"profile\":[1]}", 0, "/profile/0");
    expect_fields(LAMP, "{\"schemaDefinitions\":{}}", 0, "/schemaDefinitions");
    expect_fields(LAMP, "{\"schemaDefinitions\":{\"a\":{\"type\":\"int\"}}}", 0,
                  "/schemaDefinitions/a/type");
    expect_fields(LAMP, "{\"uriVariables\":{\"a\":3}}", 0, "/uriVariables/a");
    expect_fields(LAMP, "{\"properties\":[],\"actions\":\"x\",\"events\":1}", 0,
                  "/properties /actions /events");
}

static void test_forms(void **state)
{
    expect_fields(LAMP, "{\"properties\":{\"status\":{\"forms\":null}}}", 0,
                  "/properties/status/forms");
    expect_fields(LAMP, "{\"properties\":{\"status\":{\"forms\":[]}}}", 0,
                  "/properties/status/forms");
    expect_fields(LAMP, "{\"properties\":{\"status\":{\"forms\":{}}}}", 0,
                  "/properties/status/forms");
    expect_fields(LAMP, "{\"properties\":{\"status\":{\"forms\":[{}]}}}", 0,
                  "/properties/status/forms/0/href");
    expect_fields(LAMP, "{\"properties\":{\"status\":{\"forms\":[{\"href\":3}]}}}", 0,
                  "/properties/status/forms/0/href");
    expect_fields(LAMP, "{\"properties\":{\"status\":{\"forms\":[{\"href\":\"a\\nb\"}]}}}", 0,
                  "/properties/status/forms/0/href");
    expect_fields(LAMP, "{\"properties\":{\"status\":{\"forms\":[7]}}}", 0,
                  "/properties/status/forms/0");
    expect_fields(
        LAMP,
        "{\"properties\":{\"status\":{\"forms\":[{\"href\":\"a\",\"op\":\"invokeaction\"}]}}}", 0,
        "/properties/status/forms/0/op");
    expect_fields(LAMP,
                  "{\"actions\":{\"toggle\":{\"forms\":[{\"href\":\"a\",\"op\":"
                  "[\"invokeaction\",\"readproperty\"]}]}}}",
                  0, "/actions/toggle/forms/0/op/1");
    expect_fields(LAMP, "{\"events\":{\"overheating\":{\"forms\":[{\"href\":\"a\",\"op\":[]}]}}}",
                  0, "/events/overheating/forms/0/op");
    expect_fields(LAMP,
                  "{\"events\":{\"overheating\":{\"forms\":[{\"href\":\"a\",\"op\":"
                  "\"readproperty\"}]}}}",
                  0, "/events/overheating/forms/0/op");
    expect_fields(LAMP, "{\"forms\":[{\"href\":\"a\",\"op\":\"readproperty\"}]}", 0, "/forms/0/op");
    expect_fields(LAMP, "{\"forms\":[]}", 0, "/forms");
    expect_fields(LAMP, "{\"forms\":[{\"href\":\"a\",\"op\":5}]}", 0, "/forms/0/op");
    expect_fields(LAMP,
                  "{\"properties\":{\"status\":{\"forms\":[{\"href\":\"a\",\"response\":{}}]}}}", 0,
                  "/properties/status/forms/0/response/contentType");
    expect_fields(LAMP,
                  "{\"properties\":{\"status\":{\"forms\":[{\"href\":\"a\","
                  "\"additionalResponses\":[{\"success\":\"no\",\"schema\":1}]}]}}}",
                  0,
                  "/properties/status/forms/0/additionalResponses/0/success "
                  "/properties/status/forms/0/additionalResponses/0/schema");
    expect_fields(LAMP,
                  "{\"properties\":{\"status\":{\"forms\":[{\"href\":\"a\",\"security\":[],"
                  "\"scopes\":3,\"contentType\":1,\"subprotocol\":2,\"contentCoding\":[]}]}}}",
                  0,
                  "/properties/status/forms/0/security /properties/status/forms/0/scopes "
                  "/properties/status/forms/0/contentType /properties/status/forms/0/subprotocol "
                  "/properties/status/forms/0/contentCoding");
}

static void test_security(void **state)
{
    expect_fields(LAMP, "{\"security\":\"other_sc\"}", 0, "/security");
    expect_fields(LAMP, "{\"security\":[]}", 0, "/security");
    expect_fields(LAMP, "{\"security\":[\"basic_sc\",\"x\"]}", 0, "/security/1");
    expect_fields(LAMP, "{\"security\":5}", 0, "/security");
    expect_fields(LAMP, "{\"securityDefinitions\":{\"basic_sc\":null}}", 0,
                  "/securityDefinitions /security");
    expect_fields(LAMP, "{\"securityDefinitions\":{\"x\":{}}}", 0, "/securityDefinitions/x/scheme");
    expect_fields(LAMP, "{\"securityDefinitions\":{\"x\":{\"scheme\":\"magic\"}}}", 0,
                  "/securityDefinitions/x/scheme");
    expect_fields(LAMP, "{\"securityDefinitions\":{\"x\":{\"scheme\":7}}}", 0,
                  "/securityDefinitions/x/scheme");
    expect_fields(LAMP, "{\"securityDefinitions\":{\"basic_sc\":{\"in\":\"uri\"}}}", 0,
                  "/securityDefinitions/basic_sc/in");
    expect_fields(LAMP, "{\"securityDefinitions\":{\"x\":{\"scheme\":\"digest\",\"qop\":\"x\"}}}",
                  0, "/securityDefinitions/x/qop");
    expect_fields(LAMP,
                  "{\"securityDefinitions\":{\"x\":{\"scheme\":\"combo\",\"oneOf\":[\"a\"]}}}", 0,
                  "/securityDefinitions/x/oneOf");
    expect_fields(LAMP, "{\"securityDefinitions\":{\"x\":{\"scheme\":\"combo\"}}}", 0,
                  "/securityDefinitions/x");
    expect_fields(LAMP, "{\"securityDefinitions\":{\"x\":{\"scheme\":\"auto\",\"name\":\"n\"}}}", 0,
                  "/securityDefinitions/x/name");
    expect_fields(LAMP, "{\"securityDefinitions\":{\"x\":{\"scheme\":\"bearer\",\"alg\":1}}}", 0,
                  "/securityDefinitions/x/alg");
    expect_fields(LAMP, "{\"securityDefinitions\":{\"x\":{\"scheme\":\"oauth2\",\"scopes\":1}}}", 0,
                  "/securityDefinitions/x/scopes");
    expect_fields(LAMP, "{\"securityDefinitions\":{\"x\":\"basic\"}}", 0, "/securityDefinitions/x");
}

static void test_data_schemas(void **state)
{
    const char *p = "/properties/status";
    char f[512];
#define PROP(x) "{\"properties\":{\"status\":" x "}}"
    expect_fields(LAMP, PROP("{\"type\":\"float\"}"), 0, "/properties/status/type");
    expect_fields(LAMP, PROP("{\"enum\":[]}"), 0, "/properties/status/enum");
    expect_fields(LAMP, PROP("{\"enum\":[\"a\",\"b\",\"a\"]}"), 0, "/properties/status/enum/2");
    expect_fields(LAMP, PROP("{\"enum\":\"a\"}"), 0, "/properties/status/enum");
    expect_fields(LAMP, PROP("{\"minimum\":\"0\",\"maximum\":[],\"exclusiveMinimum\":{}}"), 0,
                  "/properties/status/minimum /properties/status/maximum "
                  "/properties/status/exclusiveMinimum");
    expect_fields(LAMP, PROP("{\"minimum\":10,\"maximum\":1}"), 0, "/properties/status/minimum");
    expect_fields(LAMP, PROP("{\"minLength\":-1,\"maxLength\":1.5}"), 0,
                  "/properties/status/minLength /properties/status/maxLength");
    expect_fields(LAMP, PROP("{\"minItems\":3,\"maxItems\":2}"), 0, "/properties/status/minItems");
    expect_fields(LAMP, PROP("{\"multipleOf\":0}"), 0, "/properties/status/multipleOf");
    expect_fields(LAMP, PROP("{\"multipleOf\":\"2\"}"), 0, "/properties/status/multipleOf");
    expect_fields(LAMP, PROP("{\"items\":{\"type\":\"x\"}}"), 0, "/properties/status/items/type");
    expect_fields(LAMP, PROP("{\"items\":[{\"type\":\"string\"},5]}"), 0,
                  "/properties/status/items/1");
    expect_fields(LAMP, PROP("{\"properties\":{\"a\":{\"type\":\"x\"},\"b\":[]}}"), 0,
                  "/properties/status/properties/a/type /properties/status/properties/b");
    expect_fields(LAMP, PROP("{\"required\":\"a\"}"), 0, "/properties/status/required");
    expect_fields(LAMP, PROP("{\"required\":[\"a\",1]}"), 0, "/properties/status/required/1");
    expect_fields(LAMP, PROP("{\"oneOf\":[{\"type\":\"y\"}]}"), 0,
                  "/properties/status/oneOf/0/type");
    expect_fields(LAMP, PROP("{\"oneOf\":{}}"), 0, "/properties/status/oneOf");
    expect_fields(LAMP, PROP("{\"readOnly\":\"yes\",\"writeOnly\":1,\"observable\":0}"), 0,
                  "/properties/status/readOnly /properties/status/writeOnly "
                  "/properties/status/observable");
    expect_fields(LAMP,
                  PROP("{\"unit\":1,\"format\":2,\"contentEncoding\":3,"
                       "\"contentMediaType\":4}"),
                  0,
                  "/properties/status/unit /properties/status/format "
                  "/properties/status/contentEncoding /properties/status/contentMediaType");
    expect_fields(LAMP, PROP("{\"uriVariables\":{\"v\":{\"type\":1}}}"), 0,
                  "/properties/status/uriVariables/v/type");
    expect_fields(LAMP, PROP("[1]"), 0, "/properties/status");
    snprintf(f, sizeof f, "%s/title", p);
    expect_fields(LAMP, PROP("{\"title\":{}}"), 0, f);
    expect_fields(LAMP,
                  "{\"actions\":{\"toggle\":{\"safe\":\"y\",\"idempotent\":1,\"synchronous\":2,"
                  "\"input\":3,\"output\":{\"type\":\"q\"}}}}",
                  0,
                  "/actions/toggle/safe /actions/toggle/idempotent /actions/toggle/synchronous "
                  "/actions/toggle/input /actions/toggle/output/type");
    expect_fields(LAMP,
                  "{\"events\":{\"overheating\":{\"data\":{\"type\":\"q\"},\"subscription\":1,"
                  "\"dataResponse\":[],\"cancellation\":\"c\"}}}",
                  0,
                  "/events/overheating/data/type /events/overheating/subscription "
                  "/events/overheating/dataResponse /events/overheating/cancellation");
#undef PROP
}

static void test_links(void **state)
{
    expect_fields(LAMP, "{\"links\":[{\"rel\":\"next\"}]}", 0, "/links/0/href");
    expect_fields(LAMP, "{\"links\":{}}", 0, "/links");
    expect_fields(LAMP, "{\"links\":[{\"href\":\"a\",\"sizes\":\"16x16\"}]}", 0, "/links/0/sizes");
    expect_fields(LAMP, "{\"links\":[{\"href\":\"a\",\"rel\":\"icon\",\"sizes\":\"big\"}]}", 0,
                  "/links/0/sizes");
    expect_fields(LAMP, "{\"links\":[{\"href\":\"a\",\"rel\":\"tm:extends\"}]}", 0, "/links/0/rel");
    expect_fields(LAMP, "{\"links\":[{\"href\":\"a\",\"type\":1,\"anchor\":2,\"hreflang\":[3]}]}",
                  0, "/links/0/type /links/0/anchor /links/0/hreflang/0");
}

static void test_pointer_escaping(void **state)
{
    expect_fields(LAMP, "{\"properties\":{\"a/b~c\":{\"type\":\"string\"}}}", 0,
                  "/properties/a~1b~0c/forms");
    expect_fields(LAMP, "{\"properties\":{\"\":{\"forms\":[{\"href\":\"x\"}]}}}", 0,
                  "/properties/");
}

static void test_flags(void **state)
{
    /* an agent's TD: no forms, no security, but an id */
    static const char AGENT[] =
        "{\"@context\":\"https://www.w3.org/2022/wot/td/v1.1\",\"id\":\"lamp1\","
        "\"title\":\"Lamp\",\"properties\":{\"on\":{\"type\":\"boolean\"}},"
        "\"actions\":{\"toggle\":{}},\"events\":{\"hot\":{\"data\":{\"type\":\"number\"}}}}";
    int agent_flags = TW_TDV_FORMS_OPTIONAL | TW_TDV_SECURITY_OPTIONAL | TW_TDV_ID_REQUIRED;
    expect_fields(AGENT, "{}", 0,
                  "/properties/on/forms /actions/toggle/forms /events/hot/forms /security "
                  "/securityDefinitions /id");
    assert_valid(AGENT, agent_flags);
    expect_fields(AGENT, "{\"id\":null}", agent_flags, "/id");
    expect_fields(AGENT, "{\"id\":\"two words\"}", agent_flags, "/id");
    expect_fields(AGENT, "{\"id\":\"\"}", agent_flags, "/id");
    /* optional does not mean anything goes: present members are checked */
    expect_fields(AGENT, "{\"security\":5,\"properties\":{\"on\":{\"forms\":[]}}}", agent_flags,
                  "/security /properties/on/forms");
}

static void test_limits(void **state)
{
    /* nesting deeper than the limit is reported, not recursed into */
    json_t *td = J(LAMP), *errors = NULL;
    json_t *ds = json_object_get(json_object_get(td, "properties"), "status");
    for (int i = 0; i < TW_TDV_MAX_DEPTH + 5; i++) {
        json_t *inner = json_pack("{s:s}", "type", "array");
        json_object_set_new(ds, "items", inner);
        ds = inner;
    }
    assert_int_equal(tw_td_validate(td, 0, &errors), TW_EINVAL);
    assert_int_equal(json_array_size(errors), 1);
    assert_non_null(strstr(
        json_string_value(json_object_get(json_array_get(errors, 0), "description")), "deeper"));
    json_decref(errors);
    json_decref(td);
    /* hundreds of problems: the first TW_TDV_MAX_ERRORS and a note */
    td = J(LAMP);
    json_t *props = json_object_get(td, "properties");
    for (int i = 0; i < 300; i++) {
        char name[16];
        snprintf(name, sizeof name, "p%d", i);
        json_object_set_new(props, name, json_pack("{s:s}", "type", "bad"));
    }
    assert_int_equal(tw_td_validate(td, 0, &errors), TW_EINVAL);
    assert_int_equal(json_array_size(errors), TW_TDV_MAX_ERRORS + 1);
    assert_non_null(strstr(json_string_value(json_object_get(
                               json_array_get(errors, TW_TDV_MAX_ERRORS), "description")),
                           "more problems"));
    json_decref(errors);
    json_decref(td);
}

static void test_problem(void **state)
{
    json_t *td = J(LAMP), *errors = NULL;
    json_object_del(td, "title");
    json_object_set_new(td, "security", json_string("zz"));
    assert_int_equal(tw_td_validate(td, 0, &errors), TW_EINVAL);
    json_t *p = tw_td_problem(errors);
    assert_non_null(p);
    assert_int_equal(json_integer_value(json_object_get(p, "status")), 400);
    assert_string_equal(json_string_value(json_object_get(p, "type")),
                        "urn:twind:problem:invalid-td");
    json_t *ve = json_object_get(p, "validationErrors");
    assert_int_equal(json_array_size(ve), 2);
    assert_non_null(strstr(json_string_value(json_object_get(p, "detail")), "/title"));
    json_decref(p);
    json_decref(td);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_w3c_examples_pass),
        cmocka_unit_test(test_required_members),
        cmocka_unit_test(test_context),
        cmocka_unit_test(test_thing_members),
        cmocka_unit_test(test_forms),
        cmocka_unit_test(test_security),
        cmocka_unit_test(test_data_schemas),
        cmocka_unit_test(test_links),
        cmocka_unit_test(test_pointer_escaping),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_problem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
