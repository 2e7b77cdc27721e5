/*
 * log.h - leveled, structured log lines on stderr.
 *
 * One line per call: "2026-11-22T02:27:08.123Z level module: message". The
 * level threshold is process-wide (set once at start-up, read atomically).
 * Thread-safe.
 */
#ifndef TW_LOG_H
#define TW_LOG_H

typedef enum { TW_LOG_ERROR = 0, TW_LOG_WARN, TW_LOG_INFO, TW_LOG_DEBUG } tw_log_level;

void tw_log_set_level(tw_log_level lvl);
tw_log_level tw_log_get_level(void);
int tw_log_level_parse(const char *name, tw_log_level *out);
void tw_log(tw_log_level lvl, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define tw_log_error(mod, ...) tw_log(TW_LOG_ERROR, mod, __VA_ARGS__)
#define tw_log_warn(mod, ...) tw_log(TW_LOG_WARN, mod, __VA_ARGS__)
#define tw_log_info(mod, ...) tw_log(TW_LOG_INFO, mod, __VA_ARGS__)
#define tw_log_debug(mod, ...)                                                                     \
    do {                                                                                           \
        if (tw_log_get_level() >= TW_LOG_DEBUG) tw_log(TW_LOG_DEBUG, mod, __VA_ARGS__);            \
    } while (0)

#endif
