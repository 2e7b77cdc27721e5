/*
 * merge_patch.c - RFC 7396 JSON Merge Patch.
 *
 * apply() is the RFC's recursive MergePatch pseudo-code on copies (the
 * inputs are never modified). diff() walks two objects: members removed
 * become null, objects on both sides recurse, anything else that differs is
 * replaced whole. As RFC 7396 says, a merge patch cannot set a
 * member to null: diff() of a document holding nulls is lossy there.
 */
#include "twin/merge_patch.h"
#include "twin/json_fast.h"

json_t *tw_merge_patch_apply(const json_t *target, const json_t *patch)
{
    if (!json_is_object(patch)) return tw_json_copy(patch);
    json_t *out = json_is_object(target) ? tw_json_copy(target) : json_object();
    if (!out) return NULL;
    const char *key;
    json_t *pv;
    json_object_foreach((json_t *)patch, key, pv)
    {
        if (json_is_null(pv)) {
            json_object_del(out, key);
            continue;
        }
        json_t *merged = tw_merge_patch_apply(json_object_get(out, key), pv);
        if (!merged || json_object_set_new(out, key, merged) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

json_t *tw_merge_patch_diff(const json_t *from, const json_t *to)
{
    if (!json_is_object(from) || !json_is_object(to)) return tw_json_copy(to);
    json_t *p = json_object();
    if (!p) return NULL;
    const char *key;
    json_t *fv, *tv;
    json_object_foreach((json_t *)from, key, fv)
    {
        if (!json_object_get(to, key) && json_object_set_new(p, key, json_null()) != 0) goto fail;
    }
    json_object_foreach((json_t *)to, key, tv)
    {
        fv = json_object_get(from, key);
        if (fv && json_equal(fv, tv)) continue;
        json_t *sub = (json_is_object(fv) && json_is_object(tv)) ? tw_merge_patch_diff(fv, tv)
                                                                 : tw_json_copy(tv);
        if (!sub || json_object_set_new(p, key, sub) != 0) goto fail;
    }
    return p;
fail:
    json_decref(p);
    return NULL;
}
