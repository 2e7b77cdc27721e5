/*
 * td_validate.h - validation of W3C WoT Thing Descriptions (TD 1.1) in C.
 *
 * Checks a TD against the TD 1.1 information model: everything the W3C JSON
 * Schema for TD instances (td-schemas/td-json-schema-validation.json) checks
 * - required members (@context, title, security, securityDefinitions), the
 * @context forms, member types, affordances with forms, form `op` names per
 * affordance kind, forms with href, security schemes, links, data schema
 * keywords (type names, enum, numeric and length bounds, items, properties,
 * required, oneOf) - plus rules the schema cannot express: every name in
 * `security` is defined in securityDefinitions, minimum <= maximum, ids and
 * hrefs without whitespace or control characters.
 *
 * Every problem is reported, not only the first: as {field, description}
 * where field is a JSON pointer into the TD ("/properties/temp/forms/0/op").
 * Validation is bounded: nesting deeper than TW_TDV_MAX_DEPTH is itself a
 * problem, and at most TW_TDV_MAX_ERRORS problems are listed.
 *
 * Pure functions; thread-safe; the TD is borrowed and never modified.
 */
#ifndef TW_TWIN_TD_VALIDATE_H
#define TW_TWIN_TD_VALIDATE_H

#include <jansson.h>
#include <stdbool.h>

#define TW_TDV_MAX_DEPTH 32
#define TW_TDV_MAX_ERRORS 100

enum {
    /* Forms may be absent everywhere: an agent's TD, whose forms the
     * runtime replaces by its bindings' forms. */
    TW_TDV_FORMS_OPTIONAL = 1,
    /* security/securityDefinitions may be absent (replaced by the runtime's). */
    TW_TDV_SECURITY_OPTIONAL = 2,
    /* "id" is required and is an agent's local Thing id: any string without
     * whitespace or control characters (the twin id "dtw:agent:id" is the URI). */
    TW_TDV_ID_REQUIRED = 4,
};

/*
 * Validates td. Returns 0 when valid; TW_EINVAL otherwise, with *errors (if
 * not NULL) a new array of {"field": "<json pointer>", "description": "..."}.
 * On success *errors is set to NULL.
 */
int tw_td_validate(const json_t *td, int flags, json_t **errors);

/*
 * A 400 RFC 9457 problem for a rejected TD: type
 * "urn:twind:problem:invalid-td", title "Invalid Thing Description", detail
 * naming the first problem, "validationErrors" = errors (reference stolen).
 */
json_t *tw_td_problem(json_t *errors);

#endif
