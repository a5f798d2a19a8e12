/*
 * iova_mem.h - the C core's memory allocation, with a fault injector so that
 * tests can make any malloc fail and check that the failure is reported
 * (IOVA_E_NOMEM / MemoryError) and leaves every structure consistent.
 */
#ifndef PYIOVA_IOVA_MEM_H
#define PYIOVA_IOVA_MEM_H

#include <stdint.h>
#include <stddef.h>

/* After n more successful allocations, every allocation fails until the
 * injector is disarmed with a negative n. Returns the previous setting. */
int64_t iova_mem_fail_after(int64_t n);
/* Allocations refused by the injector so far. */
uint64_t iova_mem_failures(void);

#endif
