/*
 * merge_patch.h - JSON Merge Patch (RFC 7396): apply and create.
 *
 * tw_merge_patch_apply() implements the RFC's MergePatch(Target, Patch)
 * exactly: an object patch merges member by member, null deletes, anything
 * else replaces. tw_merge_patch_diff() produces a patch that turns one
 * document into another (used for thing_updated notifications with
 * diff=true). Note that RFC 7396 cannot express a null value in an object:
 * diff() cannot express members whose new value is null.
 *
 * Pure functions, thread-safe; inputs are borrowed, results are new.
 */
#ifndef TW_TWIN_MERGE_PATCH_H
#define TW_TWIN_MERGE_PATCH_H

#include <jansson.h>

/* A new document: target (may be NULL = absent) with patch applied. NULL
 * only on allocation failure. */
json_t *tw_merge_patch_apply(const json_t *target, const json_t *patch);

/* A new merge patch p with apply(from, p) == to (both objects). NULL on
 * allocation failure. */
json_t *tw_merge_patch_diff(const json_t *from, const json_t *to);

#endif
