/*
 * log.c - one structured line per call on stderr, with a process-wide
 * threshold. Lines are written with a single fputs under stdio's own lock
 * so concurrent threads never interleave within a line.
 */
#include "log.h"

#include "tw.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static _Atomic int threshold = TW_LOG_INFO;
static const char *const names[] = {"error", "warn", "info", "debug"};

void tw_log_set_level(tw_log_level lvl)
{
    atomic_store(&threshold, (int)lvl);
}

tw_log_level tw_log_get_level(void)
{
    return (tw_log_level)atomic_load_explicit(&threshold, memory_order_relaxed);
}

int tw_log_level_parse(const char *name, tw_log_level *out)
{
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, names[i]) == 0) {
            *out = (tw_log_level)i;
            return 0;
        }
    return TW_EINVAL;
}

void tw_log(tw_log_level lvl, const char *module, const char *fmt, ...)
{
    if ((int)lvl > atomic_load_explicit(&threshold, memory_order_relaxed)) return;
    char line[2048], ts[TW_TIME_LEN];
    tw_time_format(tw_now_ms(), ts);
    int n = snprintf(line, sizeof line, "%s %s %s: ", ts, names[lvl], module);
    if (n < 0 || (size_t)n >= sizeof line) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = strlen(line);
    line[len] = '\n';
    line[len + 1] = '\0';
    fputs(line, stderr);
}
