/*
 * crash.h - the parent side the crash tests share: fork the child that does
 * durable work, wait until it is under way, let it run a while, SIGKILL it;
 * afterwards remove the data directory, or keep it for a post-mortem when
 * the check failed. The checks themselves are each test's own.
 */
#ifndef TW_CRASH_H
#define TW_CRASH_H

#include "tests/unit/tw_test.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * Forks child(dir) and waits until started(dir) (whatever the machine's
 * speed; a child that exits first fails, "before <what>"), then lets it
 * run delay_ms more and kills it with SIGKILL. 0, or 1 (logged).
 */
static inline int crash_kill_child(const char *dir, int (*child)(const char *dir),
                                   bool (*started)(const char *dir), const char *what, int delay_ms)
{
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) _exit(child(dir));
    int status;
    while (!started(dir)) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "FAIL: the child exited before %s\n", what);
            return 1;
        }
        usleep(2000);
    }
    usleep((useconds_t)delay_ms * 1000);
    kill(pid, SIGKILL);
    if (waitpid(pid, &status, 0) != pid || !WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
        fprintf(stderr, "FAIL: the child did not die by SIGKILL (status %d)\n", status);
        return 1;
    }
    return 0;
}

/* Removes dir after a consistent run (rc 0), keeps it otherwise. */
static inline void crash_cleanup(const char *dir, int rc)
{
    if (rc == 0)
        tw_test_rmdir(dir);
    else
        fprintf(stderr, "data left in %s\n", dir);
}

#endif
