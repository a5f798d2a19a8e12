/*
 * iova_internal.h - the structures behind struct iova_domain, shared by
 * iova.c (the allocator), iova_tree.c (the ordered set of ranges),
 * iova_rcache.c (magazines and depot) and iova_check.c (the validator).
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

/* Node indices are 26 bits: the top bits of the two link words carry the
 * AVL height and the node flags, keeping a node at 48 bytes.
 * Slot 0 of every pool is a sentinel standing for "no node": height 0, no
 * gaps, flagged FREE so that nothing mistakes it for a range. Reading a
 * missing child's fields then needs no branch, which is most of the cost of
 * repairing a path after an insert or erase. */
#define IOVA_IDX_BITS   26
#define IOVA_NIL        0u
#define IOVA_IDX_MASK   ((1u << IOVA_IDX_BITS) - 1)
#define IOVA_MAX_NODES  (1u << IOVA_IDX_BITS)   /* pool slots, sentinel included */

#define IOVA_NODE_CACHED 1u   /* the range sits in a magazine or the depot */
#define IOVA_NODE_FREE   2u   /* the slot is on the pool's free list */
#define IOVA_NODE_RETIRED 4u  /* freed, but kept out of reuse (reset-when-empty,
                               * or wraparound space awaiting a flush) */
#define IOVA_NODE_RESERVED 8u /* a reserved region in a wraparound space */

#define IOVA_U64_MAX UINT64_MAX

#define IOVA_LIVE_HINT_BITS 12
#define IOVA_LIVE_HINTS (1u << IOVA_LIVE_HINT_BITS)

/*
 * One range [lo, hi] of allocated (or reserved, or cached) pfns, plus what
 * the O(log n) search needs: each node owns the free gap [gap_lo, lo) just
 * below it, and keeps the largest gap length and the largest size-aligned
 * block that fits in any gap of its subtree.
 */
struct iova_node {
    uint32_t left_h;    /* left child index | AVL height << IOVA_IDX_BITS */
    uint32_t right_f;   /* right child index | flags << IOVA_IDX_BITS */
    uint64_t lo;
    uint64_t hi;
    uint64_t gap_lo;    /* predecessor's hi + 1, or 0 for the lowest node */
    uint64_t sub_len;   /* max over the subtree of (lo - gap_lo) */
    uint64_t sub_fit;   /* max over the subtree of gap_fit(gap_lo, lo) */
};

struct iova_tree {
    struct iova_node *nodes;  /* the pool; indices stay valid across growth */
    uint32_t cap;             /* slots allocated */
    uint32_t top;             /* slots ever used, the sentinel included (the
                               * rest are untouched) */
    uint32_t free_head;       /* free slots, linked through left_h */
    uint32_t root;
    uint64_t count;           /* live nodes, anchor included */
    uint64_t pfns;            /* pages they cover, anchor excluded */
    uint64_t visited;         /* nodes looked at by searches (statistics) */
};

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

/* The kernel's roundup_pow_of_two, for sizes of at most 2^63 pages. */
static inline uint64_t roundup_pow_of_two(uint64_t x)
{
    return x <= 1 ? 1 : 1ull << (64 - __builtin_clzll(x - 1));
}

/* ---- node accessors ---- */
static inline struct iova_node *iova_n(const struct iova_tree *t, uint32_t i)
{
    return &t->nodes[i];
}
static inline uint32_t iova_left(const struct iova_tree *t, uint32_t i)
{
    return t->nodes[i].left_h & IOVA_IDX_MASK;
}
static inline uint32_t iova_right(const struct iova_tree *t, uint32_t i)
{
    return t->nodes[i].right_f & IOVA_IDX_MASK;
}
static inline unsigned iova_flags(const struct iova_tree *t, uint32_t i)
{
    return t->nodes[i].right_f >> IOVA_IDX_BITS;
}
static inline void iova_set_flag(struct iova_tree *t, uint32_t i, unsigned f)
{
    t->nodes[i].right_f |= f << IOVA_IDX_BITS;
}
static inline void iova_clear_flag(struct iova_tree *t, uint32_t i, unsigned f)
{
    t->nodes[i].right_f &= ~(f << IOVA_IDX_BITS);
}

/* ---- iova_tree.c: the ordered set ---- */
int iova_tree_init(struct iova_tree *t);
void iova_tree_release(struct iova_tree *t);
/* Allocates a node slot; IOVA_NIL when out of memory or indices. */
uint32_t iova_tree_node_new(struct iova_tree *t, uint64_t lo, uint64_t hi);
void iova_tree_node_free(struct iova_tree *t, uint32_t i);
/* Links node i into the tree (its lo must not be a key already). */
void iova_tree_insert(struct iova_tree *t, uint32_t i);
/* Unlinks node i; does not free the slot, nor touch its lo and hi. Returns
 * the node that followed i (IOVA_NIL if none): the descent finds it anyway,
 * and the cache pointers want it. */
uint32_t iova_tree_erase(struct iova_tree *t, uint32_t i);

/* The way down from the root to a node, as a lookup found it: erasing what
 * was just looked up (every free) then needs no second descent. Valid until
 * the tree next changes. */
#define IOVA_PATH_MAX 64   /* an AVL tree of 2^26 nodes is at most 38 deep */
struct iova_path {
    uint32_t node[IOVA_PATH_MAX];   /* the ancestors, root first */
    uint8_t dir[IOVA_PATH_MAX];     /* 1: the way down turned right there */
    int depth;
    int must;                       /* level of the last left turn */
    uint32_t succ;                  /* the node there: the found node's
                                     * successor if it has no right child */
};
/* iova_tree_find, recording the way down in *p. */
uint32_t iova_tree_find_path(struct iova_tree *t, uint64_t pfn, struct iova_path *p);
/* iova_tree_erase of node i, which iova_tree_find_path just returned. */
uint32_t iova_tree_erase_path(struct iova_tree *t, uint32_t i, struct iova_path *p);
/* Node i's lo was lowered in place (reserve): refresh the derived fields. */
void iova_tree_lo_changed(struct iova_tree *t, uint32_t i);
uint32_t iova_tree_find(struct iova_tree *t, uint64_t pfn);      /* containing pfn */
uint32_t iova_tree_first(const struct iova_tree *t);
uint32_t iova_tree_last(const struct iova_tree *t);
uint32_t iova_tree_next(const struct iova_tree *t, uint32_t i);
uint32_t iova_tree_prev(const struct iova_tree *t, uint32_t i);
uint32_t iova_tree_lowest_lo_ge(const struct iova_tree *t, uint64_t key);  /* lo >= key */
uint32_t iova_tree_lowest_hi_ge(const struct iova_tree *t, uint64_t key);  /* hi >= key */
uint64_t iova_gap_fit(uint64_t gap_lo, uint64_t end);

/*
 * The search every kernel version reduces to: the highest gap, among those
 * owned by the node `start` and the nodes below it, that a block of `size`
 * pages (aligned by `mask`) fits, with the gap's top clipped to `top`
 * (exclusive) and its bottom to `floor`. `floor_all` applies the floor to
 * every gap (6.12); otherwise only to the gap below the lowest node (4.10).
 * start == IOVA_NIL means "from the very top", including the space above the
 * highest node (4.10 has no anchor to own it). Returns true and *pfn, or
 * false. The two implementations return the same answer.
 */
struct iova_search {
    uint32_t start;
    uint64_t top;
    uint64_t floor;
    bool floor_all;
    uint64_t size;
    uint64_t mask;
};
bool iova_tree_search_linear(struct iova_tree *t, const struct iova_search *s,
                             uint64_t *pfn);
bool iova_tree_search_augmented(struct iova_tree *t,
                                const struct iova_search *s, uint64_t *pfn);
/*
 * The lowest block of `size` pages (aligned by `mask`) that starts at or
 * above `from` and ends at or below `top` (exclusive), in a gap owned by a
 * node: the caller keeps a node at or above `top` so every gap has an
 * owner. O(log n) by the same subtree maxima.
 */
struct iova_search_up {
    uint64_t from;
    uint64_t top;
    uint64_t size;
    uint64_t mask;
};
bool iova_tree_search_up(struct iova_tree *t, const struct iova_search_up *s,
                         uint64_t *pfn);
/* Recomputes heights and gap fields; 0 or IOVA_E_CORRUPT with msg. */
int iova_tree_check(const struct iova_tree *t, char *msg, size_t msg_len);

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

/* ---- iova_rcache.c ---- */
int iova_rcache_init(struct iova_domain *d);
void iova_rcache_release(struct iova_domain *d);   /* drops every magazine */
int iova_rcache_check(struct iova_domain *d, char *msg, size_t msg_len);
unsigned iova_size_class(uint64_t size);            /* order_base_2 */
struct iova_magazine *iova_mag_alloc(const struct iova_domain *d);
int iova_depot_push(struct iova_depot *dp, struct iova_magazine *m);
/* A number no earlier call returned (domains' and threads' identities). */
uint64_t iova_new_uid(void);

#endif
