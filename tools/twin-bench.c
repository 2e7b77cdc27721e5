/*
 * twin-bench - twind's load generator and benchmark.
 *
 *   twin-bench --list
 *   twin-bench [--json] [--scale X] SCENARIO [scenario options]
 *   twin-bench [--json] [--scale X] all
 *
 * Scenarios register themselves (bench.h). Each runs in a fresh temporary
 * directory that is removed afterwards. Figures are printed as a table, or
 * with --json one JSON object per line so runs can be compared.
 */
#include "bench.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_SCENARIOS 64

static const tw_bench_scenario *scenarios[MAX_SCENARIOS];
static int nscenarios;
static int json_output;

void tw_bench_register(const tw_bench_scenario *s)
{
    if (nscenarios < MAX_SCENARIOS) scenarios[nscenarios++] = s;
}

/* CPU seconds (user + system, every thread) of a process so far. */
double tw_bench_proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    /* after the command: state, then 10 fields, then utime and stime */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

void tw_bench_report(const char *scenario, const char *figure, double value, const char *unit)
{
    if (json_output)
        printf("{\"scenario\":\"%s\",\"figure\":\"%s\",\"value\":%.6g,\"unit\":\"%s\"}\n", scenario,
               figure, value, unit);
    else
        printf("  %-14s %-34s %16.2f %s\n", scenario, figure, value, unit);
    fflush(stdout);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int run(const tw_bench_scenario *s, double scale, int argc, char **argv)
{
    char dir[] = "/tmp/twin-bench-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    if (!json_output) printf("%s: %s\n", s->name, s->description);
    tw_bench_args args = {dir, scale, argc, argv};
    int rc = s->fn(&args);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    if (rc) fprintf(stderr, "twin-bench: scenario %s failed (%d)\n", s->name, rc);
    return rc ? 1 : 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: twin-bench [--json] [--scale X] SCENARIO|all [options]\n"
               "       twin-bench --list\n\nscenarios:\n");
    for (int i = 0; i < nscenarios; i++)
        fprintf(f, "  %-14s %s\n", scenarios[i]->name, scenarios[i]->description);
}

int main(int argc, char **argv)
{
    double scale = 1.0;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json_output = 1;
        } else if (strcmp(argv[i], "--scale") == 0 && i + 1 < argc) {
            scale = atof(argv[++i]);
            if (scale <= 0) {
                fprintf(stderr, "twin-bench: --scale must be > 0\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--list") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    if (!json_output) printf("  %-14s %-34s %16s %s\n", "scenario", "figure", "value", "unit");
    if (strcmp(argv[i], "all") == 0) {
        int failed = 0;
        for (int k = 0; k < nscenarios; k++)
            failed |= run(scenarios[k], scale, 0, NULL);
        return failed;
    }
    for (int k = 0; k < nscenarios; k++)
        if (strcmp(scenarios[k]->name, argv[i]) == 0)
            return run(scenarios[k], scale, argc - i - 1, argv + i + 1);
    fprintf(stderr, "twin-bench: unknown scenario '%s'\n", argv[i]);
    usage(stderr);
    return 2;
}
