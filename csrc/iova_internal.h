/*
 * iova_internal.h - what is behind struct iova_domain (iova.h): the domain
 * and its rcache, shared by iova.c (the allocator and its validator),
 * iova_rcache.c (magazines, depot, trim work) and iova_save.c (saving and
 * restoring). The ranges themselves are an iova_tree (iova_tree.h). Nothing
 * outside the domain's own files includes this: cookies and the other
 * allocators see a domain only through iova.h.
 *
 * Locking (the kernel's, plus what a userspace model needs):
 *   tree_lock      - the tree, the cache pointers, max32_alloc_size, and each
 *                    node's CACHED flag (iova_rbtree_lock in the kernel);
 *   cpu_rc[].lock  - one per size class per CPU (the kernel's cpu_rcache lock);
 *   depot[].lock   - one per size class (the kernel's rcache lock);
 *   work_lock      - the simulated clock and the trim work;
 *   thread_lock    - which slot each calling thread has (cpu == -1).
 * Order, outermost first: work_lock, cpu locks (ascending index), depot locks
 * (ascending class), tree_lock. thread_lock is taken alone, with none of the
 * others held. No path takes them in another order.
 */
#ifndef PYIOVA_IOVA_INTERNAL_H
#define PYIOVA_IOVA_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "iova.h"
#include "iova_mutex.h"
#include "iova_tree.h"
#include "pow2.h"

/* A range of the domain's tree that sits in a magazine or the depot (a node
 * flag: iova_tree.h leaves this bit to the tree's owner). */
#define IOVA_NODE_CACHED 1u

#define IOVA_LIVE_HINT_BITS 12
#define IOVA_LIVE_HINTS (1u << IOVA_LIVE_HINT_BITS)

struct iova_magazine {
    uint32_t count;
    uint32_t *nodes;          /* the tree node of each pfn, so that taking one out
                               * of the cache needs no lookup (mag_size slots,
                               * in the same allocation, after pfns) */
    uint64_t pfns[];          /* mag_size slots, index 0 the oldest */
};

struct iova_cpu_rcache {
    iova_mutex lock;
    struct iova_magazine *loaded;
    struct iova_magazine *prev;
};

struct iova_depot {
    iova_mutex lock;
    struct iova_magazine **mags;  /* full magazines, mags[0] the oldest,
                                   * mags[len-1] the newest */
    uint64_t len;
    uint64_t cap;
    bool work_pending;            /* trim work armed (6.12) */
    uint64_t work_due_ms;
};

struct iova_domain {
    iova_mutex tree_lock;
    struct iova_tree tree;
    int kernel;                   /* IOVA_KERNEL_6_12, _6_1 or _4_10 */
    int search_mode;
    bool closed;

    uint64_t granule;
    unsigned shift;
    uint64_t start_pfn;
    uint64_t max_pfn;             /* highest pfn addressable in 64 bits */
    uint64_t dma_32bit_pfn;       /* 6.12/6.1: exclusive; 4.10: inclusive */
    uint64_t max32_alloc_size;    /* 6.12/6.1 "known to fail" size */
    uint32_t cached_node;         /* 6.12/6.1: node index, never NIL */
    uint32_t cached32_node;       /* 6.12/6.1: never NIL; 4.10: may be NIL */
    uint32_t anchor;              /* 6.12/6.1: the [~0, ~0] node; 4.10: NIL */
    uint64_t cached_ranges;       /* nodes flagged CACHED */

    unsigned ncpus;
    unsigned mag_size;            /* 127 (6.12, 6.1) or 128 (4.10) */
    uint64_t depot_max;           /* 6.1, 4.10: 32 magazines; 6.12: unbounded */
    struct iova_cpu_rcache *cpu_rc;   /* [class * ncpus + cpu] */
    struct iova_depot depot[IOVA_RANGE_CACHE_MAX_SIZE];

    iova_mutex work_lock;
    uint64_t clock_ms;

    /* Where recently allocated ranges live, by pfn: a free_fast that the
     * magazines take needs only to prove the pfn starts a live, uncached
     * range, and the node found here proves it without a descent (whose
     * mispredicted turns cost more than the rest of a cached free). A slot
     * is only a guess - stale, overwritten or never set, it fails the check
     * and the lookup runs as before - so nothing needs to clear it. A fixed
     * size per domain (IOVA_LIVE_HINTS slots, allocated with the rcache),
     * not per range. tree_lock. */
    uint32_t *live_hint;

    /* cpu == -1: each calling thread's slot on this domain. Threads get
     * slots in the order they first ask this domain (the n-th gets slot
     * n % ncpus), so the answers never depend on what else the process ran.
     * thread_lock guards the list; a thread remembers its own answers in a
     * small thread-local cache keyed by uid, which no other domain reuses. */
    uint64_t uid;
    iova_mutex thread_lock;
    uint64_t *thread_uids;        /* the threads' own uids, in order of first use */
    uint32_t nthreads;
    uint32_t threads_cap;
};

/* The two ways the kernels differ, as questions a caller asks.
 * The tree: 6.12 and 6.1 share it (anchor, two cache pointers,
 * max32_alloc_size, the retry pass, alloc_iova_fast's rounding and flush
 * flag); 4.10 has its own. */
static inline bool iova_mainline_tree(const struct iova_domain *d)
{
    return d->kernel != IOVA_KERNEL_4_10;
}

/* The depot: 6.12's is an unbounded list trimmed by delayed work; 6.1's and
 * 4.10's a fixed array whose overflow spills straight into the tree. */
static inline bool iova_depot_trimmed(const struct iova_domain *d)
{
    return d->kernel == IOVA_KERNEL_6_12;
}

static inline unsigned iova_live_hint_slot(uint64_t pfn)
{
    /* Fibonacci hashing: pfns of one size class share their low bits. */
    return (unsigned)((pfn * 0x9E3779B97F4A7C15ull) >> (64 - IOVA_LIVE_HINT_BITS));
}

/* Node `node` now holds a live range starting at pfn; tree_lock held. */
static inline void iova_note_live(struct iova_domain *d, uint64_t pfn, uint32_t node)
{
    if (d->live_hint)              /* NULL only once the domain is closed */
        d->live_hint[iova_live_hint_slot(pfn)] = node;
}

/* ---- iova.c: used by the rcache and the saver ---- */
/* Every lock of the domain, in the documented order. */
void iova_lock_all(struct iova_domain *d);
void iova_unlock_all(struct iova_domain *d);
/* Removes node i with the kernel's cache-pointer maintenance; tree_lock held. */
void iova_remove_node_locked(struct iova_domain *d, uint32_t i);
/* The same, for node i just returned by iova_tree_find_path(p). */
void iova_remove_found_locked(struct iova_domain *d, uint32_t i, struct iova_path *p);
/* Frees the range holding a cached pfn, as a magazine flush does: the node
 * must be CACHED; anything else is silently skipped. `node` is where the
 * magazine says it is; it is checked, and looked up again if it is stale. */
void iova_release_cached_pfn_locked(struct iova_domain *d, uint64_t pfn, uint32_t node);
/* The node of a cached pfn: `hint` if it still holds pfn, else a lookup. */
uint32_t iova_cached_node_locked(struct iova_domain *d, uint64_t pfn, uint32_t hint);
int64_t iova_alloc_locked(struct iova_domain *d, uint64_t size,
                          uint64_t limit_pfn, bool size_aligned);
int iova_validate_size(const struct iova_domain *d, uint64_t size);
int iova_validate_limit(const struct iova_domain *d, uint64_t limit_pfn);
/* A number no earlier call returned (domains' and threads' identities). */
uint64_t iova_new_uid(void);

/* ---- iova_rcache.c ---- */
int iova_rcache_init(struct iova_domain *d);
void iova_rcache_release(struct iova_domain *d);   /* drops every magazine */
int iova_rcache_check(struct iova_domain *d, char *msg, size_t msg_len);
struct iova_magazine *iova_rcache_mag_alloc(const struct iova_domain *d);
int iova_rcache_depot_push(struct iova_depot *dp, struct iova_magazine *m);

#endif
