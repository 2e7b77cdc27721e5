/*
 * twin_mem.h - a small in-memory implementation of tw_twin_ops, for tests
 * and benchmarks of the runtime core without the twin/ module. It keeps the
 * TDs agents publish (no validation beyond "is an object with an id") and
 * the latest value per (twin, kind, name). Thread-safe (one mutex).
 */
#ifndef TW_TWIN_MEM_H
#define TW_TWIN_MEM_H

#include "twin_ops.h"

typedef struct tw_twin_mem tw_twin_mem;

tw_twin_mem *tw_twin_mem_new(void);
void tw_twin_mem_free(tw_twin_mem *t);
const tw_twin_ops *tw_twin_mem_ops(void);

#endif
