/*
 * iova_mem.c - malloc wrappers with a fault injector (see iova_mem.h).
 *
 * The injector is a single atomic countdown: cheap enough to stay compiled
 * in, so the shipped extension is the one the out-of-memory tests exercise.
 */
#include <stdlib.h>

#include "iova_mem.h"
#include "iova_mem_internal.h"

static int64_t fail_countdown = -1;   /* < 0: never fail */
static uint64_t failures;

static int should_fail(void)
{
    int64_t n = __atomic_load_n(&fail_countdown, __ATOMIC_RELAXED);
    if (n < 0)
        return 0;
    if (n == 0) {
        __atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED);
        return 1;
    }
    /* another thread may have moved it: only count down from what we saw */
    __atomic_compare_exchange_n(&fail_countdown, &n, n - 1, 0, __ATOMIC_RELAXED,
                                __ATOMIC_RELAXED);
    return 0;
}

int64_t iova_mem_fail_after(int64_t n)
{
    return __atomic_exchange_n(&fail_countdown, n < 0 ? -1 : n, __ATOMIC_RELAXED);
}

uint64_t iova_mem_failures(void)
{
    return __atomic_load_n(&failures, __ATOMIC_RELAXED);
}

void *iova_mem_malloc(size_t size)
{
    return should_fail() ? NULL : malloc(size);
}

void *iova_mem_calloc(size_t n, size_t size)
{
    return should_fail() ? NULL : calloc(n, size);
}

void *iova_mem_realloc(void *p, size_t size)
{
    return should_fail() ? NULL : realloc(p, size);
}
