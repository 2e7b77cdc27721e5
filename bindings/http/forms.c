/*
 * forms.c - the HTTP forms of a twin TD (ops->add_forms), following the WoT
 * HTTP Basic Profile and the HTTP SSE Profile, so that a standard WoT
 * consumer can use a Thing from its TD alone:
 *
 *   property  readproperty (GET) / writeproperty (PUT, unless readOnly)
 *             observeproperty (GET, subprotocol "sse")   .../properties/{name}
 *   action    invokeaction (POST) .../actions/{name};
 *             queryaction (GET) / cancelaction (DELETE) .../actions/{name}/{actionID}
 *   event     subscribeevent (GET, subprotocol "sse")    .../events/{name}
 *   Thing     readallproperties, observeallproperties, subscribeallevents,
 *             queryallactions
 *
 * hrefs are absolute (https://host:port/things/{id}/...): a twin TD carries
 * the forms of several bindings, so no single "base" fits. Thread-safe: it
 * only reads the binding's configuration.
 */
#include "http_int.h"

#include <stdio.h>
#include <string.h>

static void href(char *out, size_t n, const char *base, const char *id, const char *kind,
                 const char *name, const char *tail)
{
    snprintf(out, n, "%s/things/", base);
    http_seg_encode(out, n, id);
    if (kind) {
        strncat(out, "/", n - strlen(out) - 1);
        strncat(out, kind, n - strlen(out) - 1);
    }
    if (name) {
        strncat(out, "/", n - strlen(out) - 1);
        http_seg_encode(out, n, name);
    }
    if (tail) strncat(out, tail, n - strlen(out) - 1);
}

static int add(json_t *forms, const char *h, const char *op, const char *method, bool sse)
{
    json_t *f = json_pack("{s:s,s:s,s:s,s:s}", "href", h, "op", op, "htv:methodName", method,
                          "contentType", sse ? "text/event-stream" : "application/json");
    if (!f) return TW_ENOMEM;
    if (sse) json_object_set_new(f, "subprotocol", json_string("sse"));
    return json_array_append_new(forms, f) ? TW_ENOMEM : 0;
}

static json_t *forms_of(json_t *obj)
{
    json_t *f = json_object_get(obj, "forms");
    if (json_is_array(f)) return f;
    f = json_array();
    if (!f || json_object_set_new(obj, "forms", f)) return NULL;
    return f;
}

int http_add_forms(tw_binding *b, json_t *td)
{
    tw_http *h = b->impl;
    const char *id = json_string_value(json_object_get(td, "id"));
    if (!id) return TW_EINVAL;
    const char *base = http_base(h);
    char u[2048];
    int rc = 0;
    const char *key;
    json_t *aff;

    json_t *props = json_object_get(td, "properties");
    json_object_foreach(props, key, aff)
    {
        json_t *forms = forms_of(aff);
        if (!forms) return TW_ENOMEM;
        href(u, sizeof u, base, id, "properties", key, NULL);
        rc |= add(forms, u, "readproperty", "GET", false);
        if (!json_is_true(json_object_get(aff, "readOnly")))
            rc |= add(forms, u, "writeproperty", "PUT", false);
        rc |= add(forms, u, "observeproperty", "GET", true);
    }
    json_t *acts = json_object_get(td, "actions");
    json_object_foreach(acts, key, aff)
    {
        json_t *forms = forms_of(aff);
        if (!forms) return TW_ENOMEM;
        href(u, sizeof u, base, id, "actions", key, NULL);
        rc |= add(forms, u, "invokeaction", "POST", false);
        href(u, sizeof u, base, id, "actions", key, "/{actionID}");
        rc |= add(forms, u, "queryaction", "GET", false);
        rc |= add(forms, u, "cancelaction", "DELETE", false);
    }
    json_t *evs = json_object_get(td, "events");
    json_object_foreach(evs, key, aff)
    {
        json_t *forms = forms_of(aff);
        if (!forms) return TW_ENOMEM;
        href(u, sizeof u, base, id, "events", key, NULL);
        rc |= add(forms, u, "subscribeevent", "GET", true);
    }
    json_t *forms = forms_of(td);
    if (!forms) return TW_ENOMEM;
    if (json_object_size(props)) {
        href(u, sizeof u, base, id, "properties", NULL, NULL);
        rc |= add(forms, u, "readallproperties", "GET", false);
        rc |= add(forms, u, "observeallproperties", "GET", true);
    }
    if (json_object_size(evs)) {
        href(u, sizeof u, base, id, "events", NULL, NULL);
        rc |= add(forms, u, "subscribeallevents", "GET", true);
    }
    if (json_object_size(acts)) {
        href(u, sizeof u, base, id, "actions", NULL, NULL);
        rc |= add(forms, u, "queryallactions", "GET", false);
    }
    return rc ? TW_ENOMEM : 0;
}
