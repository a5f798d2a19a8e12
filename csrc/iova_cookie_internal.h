/*
 * iova_cookie_internal.h - what is behind struct iova_cookie, shared by
 * iova_cookie.c and iova_cookie_save.c: one lock for the cookie's own state
 * (the IOVA types' domain takes its own locks), the per-type state, and the
 * flush queue. A cookie sees its iova_domain only through iova.h, and keeps
 * what it knows of the domain's ranges (which it handed out, which it
 * retired) itself.
 */
#ifndef PYIOVA_IOVA_COOKIE_INTERNAL_H
#define PYIOVA_IOVA_COOKIE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>

#include "iova.h"
#include "iova_cookie.h"
#include "iova_fq.h"
#include "iova_wrap.h"
#include "pfn_set.h"
#include "pow2.h"

/* The largest size alloc_iova_fast rounds up to a power of two, and the
 * largest that free_iova_fast tells apart by its size class. */
#define FAST_ROUNDED_MAX (1ull << (IOVA_RANGE_CACHE_MAX_SIZE - 1))

struct iova_cookie {
    pthread_mutex_t lock;
    int type;
    struct iova_domain *iovad;    /* IOVA, RESET_WHEN_EMPTY: lent by the caller */
    bool mainline;                /* IOVA, RESET_WHEN_EMPTY: the domain follows
                                   * 6.12 or 6.1 rules (not 4.10) */
    unsigned dom_ncpus;           /* the domain's CPU slots */
    uint64_t pfn_32;              /* the last pfn below 4 GiB */
    uint64_t granule;
    uint64_t start_pfn;
    uint64_t end_pfn;
    uint64_t msi_next;            /* MSI: the next pfn handed out */
    uint64_t *msi_starts;         /* MSI: where each live allocation starts, oldest
                                   * first, so an undo can be checked to be whole
                                   * and the latest (msi_depth == live_ranges) */
    uint64_t msi_depth, msi_cap;
    bool tree_only;               /* IOVA: bypass the rcache */
    struct pfn_set live;          /* IOVA, RESET_WHEN_EMPTY: where each live range it
                                   * handed out starts (not queued, not retired), so
                                   * that a free of anything else - a reserved
                                   * region above all - is refused */
    struct pfn_set retired;       /* RESET_WHEN_EMPTY: where each range it freed but
                                   * keeps out of reuse starts; the domain holds them
                                   * as allocated ranges until the reset frees them.
                                   * Room for every live range to join it is made
                                   * when the range is handed out, so a free never
                                   * needs memory */
    struct iova_wrap wrap;
    struct iova_fq *fq;
    uint64_t allocs, frees, failures;
    uint64_t live_ranges, live_pfns;
    uint64_t retired_pfns;        /* RESET_WHEN_EMPTY: freed but never reused */
    uint64_t resets;
};

/* Whether the IOVA type frees straight into the domain's tree (4.10, or
 * tree-only) rather than through the rcache. */
static inline bool iova_cookie_uses_tree(const struct iova_cookie *c)
{
    return !c->mainline || c->tree_only;
}

/* free_iova_fast's size rule: any size of the range's class (classes past
 * the cached ones count as one, as they all go to the tree). */
static inline bool iova_cookie_same_class(uint64_t a, uint64_t b)
{
    unsigned ka = order_base_2(a), kb = order_base_2(b);
    if (ka > IOVA_RANGE_CACHE_MAX_SIZE)
        ka = IOVA_RANGE_CACHE_MAX_SIZE;
    if (kb > IOVA_RANGE_CACHE_MAX_SIZE)
        kb = IOVA_RANGE_CACHE_MAX_SIZE;
    return ka == kb;
}

/* The range of the cookie's domain that starts at pfn, as the cookie sees
 * it: 0 with its size in *size when it is allocated (not in an rcache),
 * else IOVA_E_NOTFOUND, IOVA_E_NOTSTART, IOVA_E_CACHED or IOVA_E_CLOSED. */
int iova_cookie_range_at(const struct iova_cookie *c, uint64_t pfn, uint64_t *size);

#endif
