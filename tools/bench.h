/*
 * bench.h - scenarios of twin-bench, the load generator.
 *
 * A scenario is one function that runs a bounded workload and reports its
 * figures through tw_bench_report(). Each tools/bench_*.c file registers its
 * own scenarios with TW_BENCH_SCENARIO, so adding one touches no shared file.
 * twin-bench prints a table, or with --json one JSON object per figure line:
 * {"scenario":..., "<figure>":value, "<figure>_unit":...}.
 */
#ifndef TW_BENCH_H
#define TW_BENCH_H

#include <stddef.h>
#include <sys/types.h>

typedef struct tw_bench_args {
    const char *workdir; /* a fresh temporary directory for this scenario */
    double scale;        /* 1.0 = the sizes the issues name; smaller for quick runs */
    int argc;            /* scenario-specific options after the scenario name */
    char **argv;
} tw_bench_args;

typedef int (*tw_bench_fn)(const tw_bench_args *args);

typedef struct tw_bench_scenario {
    const char *name;
    const char *description;
    tw_bench_fn fn;
} tw_bench_scenario;

void tw_bench_register(const tw_bench_scenario *s);

/* Reports one figure of the running scenario (e.g. "msgs_per_s", 512345, "1/s"). */
void tw_bench_report(const char *scenario, const char *figure, double value, const char *unit);

/* CPU seconds (user + system, every thread) process pid has used so far,
 * from /proc/PID/stat; -1 if unknown. A clock tick (10 ms) of resolution:
 * use it over seconds. */
double tw_bench_proc_cpu_s(pid_t pid);

#define TW_BENCH_SCENARIO(id, desc, func)                                                          \
    static const tw_bench_scenario bench_##id = {#id, desc, func};                                 \
    __attribute__((constructor)) static void bench_register_##id(void)                             \
    {                                                                                              \
        tw_bench_register(&bench_##id);                                                            \
    }

#endif
