/*
 * config.c - defaults and the JSON config file. Jansson reports parse errors
 * with line and column, which we pass on as FILE:LINE:COL so a user can jump
 * straight to the mistake. Known members are type-checked here; sections of
 * other modules are kept verbatim in cfg->root.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

void tw_config_defaults(tw_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->data_dir, sizeof cfg->data_dir, "./twind-data");
    snprintf(cfg->log_level, sizeof cfg->log_level, "info");
    cfg->max_body = 1024 * 1024;
    cfg->max_depth = 32;
    cfg->rate = 1000;
    cfg->burst = 2000;
    cfg->queue_ttl_ms = 3600 * 1000;
    cfg->sweep_ms = 1000;
    cfg->store_idle_priority = true;
    cfg->store_linger_ms = 20;
    cfg->drain_window = 512;
    cfg->action_retention_ms = 7LL * 24 * 3600 * 1000;
    cfg->root = json_object();
}

void tw_config_free(tw_config *cfg)
{
    json_decref(cfg->root);
    cfg->root = NULL;
    cfg->middleware = NULL;
}

json_t *tw_config_section(const tw_config *cfg, const char *name)
{
    return cfg->root ? json_object_get(cfg->root, name) : NULL;
}

/* Where "key" first appears as a member name in the file, so a type error
 * points at the line to fix (Jansson keeps no positions for values). */
static void locate(const char *path, const char *key, int *line, int *col)
{
    *line = 1;
    *col = 1;
    FILE *f = key ? fopen(path, "r") : NULL;
    if (!f) return;
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    char buf[4096];
    for (int ln = 1; fgets(buf, sizeof buf, f); ln++) {
        char *hit = strstr(buf, pat);
        if (hit) {
            *line = ln;
            *col = (int)(hit - buf) + 1;
            break;
        }
    }
    fclose(f);
}

static int bad_at(char *err, size_t n, const char *path, const char *key, const char *what)
{
    int line, col;
    locate(path, key, &line, &col);
    snprintf(err, n, "%s:%d:%d: %s", path, line, col, what);
    return TW_EINVAL;
}

static int bad(char *err, size_t n, const char *path, const char *what)
{
    return bad_at(err, n, path, NULL, what);
}

int tw_config_load(tw_config *cfg, const char *path, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errlen, "%s:%d:%d: %s", path, je.line < 1 ? 1 : je.line,
                 je.column < 1 ? 1 : je.column, je.text);
        return TW_EINVAL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return bad(err, errlen, path, "the configuration must be a JSON object");
    }
    json_t *v;
    char what[160];
#define STRING_MEMBER(key, dst)                                                                    \
    if ((v = json_object_get(root, key))) {                                                        \
        if (!json_is_string(v) || strlen(json_string_value(v)) >= sizeof(dst)) {                   \
            snprintf(what, sizeof what, "'%s' must be a string", key);                             \
            json_decref(root);                                                                     \
            return bad_at(err, errlen, path, key, what);                                           \
        }                                                                                          \
        snprintf(dst, sizeof(dst), "%s", json_string_value(v));                                    \
    }
#define NUMBER_MEMBER(key, dst, type, min)                                                         \
    if ((v = json_object_get(root, key))) {                                                        \
        if (!json_is_number(v) || json_number_value(v) < (min)) {                                  \
            snprintf(what, sizeof what, "'%s' must be a number >= %g", key, (double)(min));        \
            json_decref(root);                                                                     \
            return bad_at(err, errlen, path, key, what);                                           \
        }                                                                                          \
        dst = (type)json_number_value(v);                                                          \
    }
    STRING_MEMBER("data", cfg->data_dir);
    STRING_MEMBER("log_level", cfg->log_level);
    NUMBER_MEMBER("max_body", cfg->max_body, size_t, 1024);
    NUMBER_MEMBER("max_depth", cfg->max_depth, int, 2);
    NUMBER_MEMBER("rate", cfg->rate, double, 0.001);
    NUMBER_MEMBER("burst", cfg->burst, double, 1);
    NUMBER_MEMBER("queue_ttl_s", cfg->queue_ttl_ms, int64_t, 1);
    if (json_object_get(root, "queue_ttl_s")) cfg->queue_ttl_ms *= 1000;
    NUMBER_MEMBER("sweep_ms", cfg->sweep_ms, int64_t, 10);
    NUMBER_MEMBER("drain_window", cfg->drain_window, int, 1);
    if ((v = json_object_get(root, "store_linger_ms")) &&
        (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1000)) {
        json_decref(root);
        return bad_at(err, errlen, path, "store_linger_ms",
                      "'store_linger_ms' must be a number of milliseconds in [0, 1000]");
    }
    if (v) cfg->store_linger_ms = (int)json_number_value(v);
    if ((v = json_object_get(root, "store_idle_priority")) && !json_is_boolean(v)) {
        json_decref(root);
        return bad_at(err, errlen, path, "store_idle_priority",
                      "'store_idle_priority' must be true or false");
    }
    if (v) cfg->store_idle_priority = json_is_true(v);
    NUMBER_MEMBER("action_retention_s", cfg->action_retention_ms, int64_t, 1);
    if (json_object_get(root, "action_retention_s")) cfg->action_retention_ms *= 1000;
#undef STRING_MEMBER
#undef NUMBER_MEMBER
    v = json_object_get(root, "middleware");
    if (v && !json_is_array(v)) {
        json_decref(root);
        return bad_at(err, errlen, path, "middleware",
                      "'middleware' must be an array of stage names");
    }
    json_decref(cfg->root);
    cfg->root = root;
    cfg->middleware = v;
    return 0;
}
