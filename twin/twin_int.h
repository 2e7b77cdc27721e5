/*
 * twin_int.h - what twin.c and directory_service.c share inside the twin
 * module. Not for other modules: they use twin.h.
 */
#ifndef TW_TWIN_INT_H
#define TW_TWIN_INT_H

#include "twin/twin.h"

#include <pthread.h>

struct tw_twin {
    tw_runtime *rt;
    tw_dir *dir;
    tw_values *values;
    uint64_t dir_sub; /* directory subscription: deletes drop values */
    /* maintenance thread: purges expired TDs */
    pthread_t thread;
    bool thread_started;
    bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

/* Registers dtw:twind:directory (its TD and the service). */
int tw_twin_directory_service_start(tw_twin *t);

#endif
