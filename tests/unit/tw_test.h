/*
 * tw_test.h - small helpers shared by the unit tests: fresh temporary
 * directories (under $TW_TEST_TMP when set) removed at exit of the test.
 */
#ifndef TW_TEST_H
#define TW_TEST_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int tw_test_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* A new empty directory; path must hold 512 bytes. */
static inline void tw_test_tmpdir(char *path, const char *name)
{
    const char *base = getenv("TW_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0700);
    snprintf(path, 512, "%s/%s-XXXXXX", base, name);
    if (!mkdtemp(path)) {
        perror("mkdtemp");
        abort();
    }
}

static inline void tw_test_rmdir(const char *path)
{
    nftw(path, tw_test_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
