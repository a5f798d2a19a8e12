/*
 * iova_rcache.c - the per-CPU IOVA range caches ("rcache"): magazines, the
 * depot, and the delayed work that trims it (alloc_iova_fast /
 * free_iova_fast behaviour, mainline 6.12, Linux 6.1 or Linux 4.10).
 *
 * Shape: six size classes (1, 2, 4, 8, 16, 32 pages); per class and CPU a
 * `loaded` and a `prev` magazine; per class a depot of full magazines.
 *   6.12: magazines of 127, an unbounded LIFO depot; every depot push arms a
 *         trim item that, when it runs, frees the newest magazine back to
 *         the tree if the depot holds more magazines than there are CPUs,
 *         and re-arms itself. Time is simulated: the work only runs from
 *         iova_rcache_run_pending_work / iova_rcache_advance, so runs are
 *         reproducible.
 *   6.1:  6.12's magazines of 127, its pop and its flush-and-retry, but the
 *         depot is a fixed array of 32 magazines: a full loaded magazine
 *         that finds the depot full has its pfns freed to the tree (oldest
 *         first, once the CPU's lock is dropped); no trim work. Flushing the
 *         depot frees its magazines oldest first, where 6.12 goes newest
 *         first - each free may move the cached nodes, so the order shows.
 *   4.10: magazines of 128, a depot of at most 32 that spills as 6.1's;
 *         pop looks at the newest pfn only; no size rounding.
 *
 * Invariants (iova_rcache_check):
 *   R1  a cached pfn is the lo of a tree node flagged CACHED, of the class it
 *       is cached under, and no pfn is cached twice;
 *   R2  the number of CACHED nodes equals the number of cached pfns;
 *   R3  magazines hold at most mag_size pfns, depot magazines exactly that,
 *       a 6.1 or 4.10 depot at most 32 magazines and never armed trim work;
 *   R4  every live_hint slot names a pool slot (its contents are guesses,
 *       checked where used, but reading them must stay in bounds).
 * So every allocated pfn is in exactly one place: live, cached, or free.
 *
 * Unlike the kernel, which trusts its callers, free_fast proves the range
 * live and uncached first (briefly taking tree_lock) so that a double free
 * or a wrong size can be refused instead of corrupting the domain: by the
 * node d->live_hint names for the pfn when that node checks out, else by a
 * tree lookup.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iova_mem_internal.h"
#include "iova_internal.h"

#define CACHED_CLASSES IOVA_RANGE_CACHE_MAX_SIZE

struct iova_magazine *iova_rcache_mag_alloc(const struct iova_domain *d)
{
    struct iova_magazine *m =
        iova_mem_malloc(sizeof(*m) + d->mag_size * (sizeof(m->pfns[0]) + sizeof(m->nodes[0])));
    if (m) {
        m->count = 0;
        m->nodes = (uint32_t *)(m->pfns + d->mag_size);
    }
    return m;
}

static inline struct iova_cpu_rcache *cpu_rc(struct iova_domain *d,
                                             unsigned k, unsigned cpu)
{
    return &d->cpu_rc[k * d->ncpus + cpu];
}

static inline uint64_t clock_now(struct iova_domain *d)
{
    return __atomic_load_n(&d->clock_ms, __ATOMIC_RELAXED);
}

/* ---- lifetime ----------------------------------------------------------- */

int iova_rcache_init(struct iova_domain *d)
{
    d->mag_size = iova_mainline_tree(d) ? 127 : 128;
    d->depot_max = iova_depot_trimmed(d) ? UINT64_MAX : IOVA_DEPOT_MAX_MAGS;
    d->live_hint = iova_mem_calloc(IOVA_LIVE_HINTS, sizeof(*d->live_hint));
    d->cpu_rc = iova_mem_calloc((size_t)CACHED_CLASSES * d->ncpus, sizeof(*d->cpu_rc));
    if (!d->live_hint || !d->cpu_rc)
        return IOVA_E_NOMEM;
    for (unsigned i = 0; i < CACHED_CLASSES * d->ncpus; i++)
        iova_mutex_init(&d->cpu_rc[i].lock);
    for (unsigned i = 0; i < CACHED_CLASSES * d->ncpus; i++) {
        d->cpu_rc[i].loaded = iova_rcache_mag_alloc(d);
        d->cpu_rc[i].prev = iova_rcache_mag_alloc(d);
        if (!d->cpu_rc[i].loaded || !d->cpu_rc[i].prev)
            return IOVA_E_NOMEM;
    }
    return 0;
}

void iova_rcache_release(struct iova_domain *d)
{
    free(d->live_hint);
    d->live_hint = NULL;
    if (d->cpu_rc) {
        for (unsigned i = 0; i < CACHED_CLASSES * d->ncpus; i++) {
            free(d->cpu_rc[i].loaded);
            free(d->cpu_rc[i].prev);
            d->cpu_rc[i].loaded = d->cpu_rc[i].prev = NULL;
        }
    }
    for (int k = 0; k < CACHED_CLASSES; k++) {
        struct iova_depot *dp = &d->depot[k];
        for (uint64_t j = 0; j < dp->len; j++)
            free(dp->mags[j]);
        free(dp->mags);
        dp->mags = NULL;
        dp->len = dp->cap = 0;
        dp->work_pending = false;
    }
}

/* ---- magazines ---------------------------------------------------------- */

/* Returns every pfn of m to the tree, oldest first; tree_lock held. */
static void mag_free_pfns(struct iova_domain *d, struct iova_magazine *m)
{
    for (uint32_t i = 0; i < m->count; i++)
        iova_release_cached_pfn_locked(d, m->pfns[i], m->nodes[i]);
    m->count = 0;
}

/* 6.12 and 6.1: the newest pfn that is <= lim; the newest takes its slot. */
static uint64_t mag_pop_612(struct iova_magazine *m, uint64_t lim, uint32_t *node)
{
    if (m->count == 0)
        return 0;
    uint32_t i = m->count - 1;
    while (m->pfns[i] > lim) {
        if (i == 0)
            return 0;
        i--;
    }
    uint64_t pfn = m->pfns[i];
    *node = m->nodes[i];
    m->count--;
    m->pfns[i] = m->pfns[m->count];
    m->nodes[i] = m->nodes[m->count];
    return pfn;
}

/* 4.10: only the newest pfn is considered, against the inclusive limit. */
static uint64_t mag_pop_410(struct iova_magazine *m, uint64_t limit_pfn, uint32_t *node)
{
    if (m->count == 0 || m->pfns[m->count - 1] >= limit_pfn)
        return 0;
    m->count--;
    *node = m->nodes[m->count];
    return m->pfns[m->count];
}

/* ---- depot -------------------------------------------------------------- */

int iova_rcache_depot_push(struct iova_depot *dp, struct iova_magazine *m)
{
    if (dp->len == dp->cap) {
        uint64_t ncap = dp->cap ? dp->cap * 2 : 8;
        struct iova_magazine **n = iova_mem_realloc(dp->mags, ncap * sizeof(*n));
        if (!n)
            return IOVA_E_NOMEM;
        dp->mags = n;
        dp->cap = ncap;
    }
    dp->mags[dp->len++] = m;
    return 0;
}

static void arm_trim(struct iova_domain *d, struct iova_depot *dp)
{
    if (!dp->work_pending) {       /* schedule_delayed_work keeps an earlier arming */
        dp->work_pending = true;
        dp->work_due_ms = clock_now(d) + IOVA_DEPOT_DELAY_MS;
    }
}

/* ---- get / insert ------------------------------------------------------- */

/* Takes a pfn from this CPU's caches (with the depot as backing); 0 if none
 * fits. The pfn's node stops being CACHED. */
static uint64_t rcache_get(struct iova_domain *d, uint64_t size,
                           uint64_t limit_pfn, unsigned cpu)
{
    unsigned k = order_base_2(size);
    if (k >= CACHED_CLASSES)
        return 0;
    struct iova_cpu_rcache *c = cpu_rc(d, k, cpu);
    struct iova_depot *dp = &d->depot[k];
    uint64_t pfn = 0;
    uint32_t node = IOVA_NIL;
    bool has = true;

    iova_mutex_lock(&c->lock);
    if (d->closed) {
        iova_mutex_unlock(&c->lock);
        return 0;
    }
    if (c->loaded->count) {
        /* use it */
    } else if (c->prev->count) {
        struct iova_magazine *tmp = c->loaded;
        c->loaded = c->prev;
        c->prev = tmp;
    } else {
        iova_mutex_lock(&dp->lock);
        has = dp->len > 0;
        if (has) {
            free(c->loaded);
            c->loaded = dp->mags[--dp->len];
        }
        iova_mutex_unlock(&dp->lock);
    }
    if (has) {
        if (iova_mainline_tree(d))
            pfn = mag_pop_612(c->loaded, limit_pfn + 1 - size, &node);   /* may wrap, as the kernel's */
        else
            pfn = mag_pop_410(c->loaded, limit_pfn, &node);
    }
    /* A popped pfn 0 is the kernel's "nothing" too: the caller allocates
     * from the tree, and the range at 0 stays allocated, in no magazine. */
    if (node != IOVA_NIL) {
        iova_mutex_lock(&d->tree_lock);
        uint32_t i = iova_cached_node_locked(d, pfn, node);
        if (i != IOVA_NIL) {
            iova_clear_flag(&d->tree, i, IOVA_NODE_CACHED);
            d->cached_ranges--;
            iova_note_live(d, pfn, i);
        }
        iova_mutex_unlock(&d->tree_lock);
    }
    iova_mutex_unlock(&c->lock);
    return pfn;
}

/* Puts pfn (whose node is already flagged CACHED) into this CPU's loaded
 * magazine, making room as the kernel does. c->lock held. Returns a
 * magazine whose pfns must go back to the tree (the full loaded magazine a
 * full 6.1 or 4.10 depot could not take), or NULL. */
static struct iova_magazine *rcache_insert(struct iova_domain *d, unsigned k,
                                           struct iova_cpu_rcache *c,
                                           uint64_t pfn, uint32_t node, bool *inserted)
{
    struct iova_depot *dp = &d->depot[k];
    struct iova_magazine *evicted = NULL;
    *inserted = true;
    if (c->loaded->count < d->mag_size) {
        /* room */
    } else if (c->prev->count < d->mag_size) {
        struct iova_magazine *tmp = c->loaded;
        c->loaded = c->prev;
        c->prev = tmp;
    } else {
        struct iova_magazine *fresh = iova_rcache_mag_alloc(d);
        if (!fresh) {
            *inserted = false;
            return NULL;
        }
        iova_mutex_lock(&dp->lock);
        if (dp->len >= d->depot_max) {
            evicted = c->loaded;               /* 6.1, 4.10: depot full */
        } else if (iova_rcache_depot_push(dp, c->loaded) != 0) {
            iova_mutex_unlock(&dp->lock);
            free(fresh);
            *inserted = false;
            return NULL;
        } else if (iova_depot_trimmed(d)) {
            arm_trim(d, dp);
        }
        iova_mutex_unlock(&dp->lock);
        c->loaded = fresh;
    }
    c->loaded->pfns[c->loaded->count] = pfn;
    c->loaded->nodes[c->loaded->count++] = node;
    return evicted;
}

/* ---- public: fast paths ------------------------------------------------- */

/* cpu == -1. A thread's uid, and its last few answers per domain uid, are
 * thread-local: a hit costs no lock. Uids of both kinds come from counters
 * that never repeat a value, so a destroyed domain's entry can never answer
 * for a new domain at the same address. */
#define SLOT_CACHE 4                       /* a power of two */
static _Thread_local uint64_t thread_uid;
static _Thread_local struct {
    uint64_t domain;
    unsigned slot;
} slot_cache[SLOT_CACHE];

/* The slot of the calling thread on d: the position in which it first
 * asked d, modulo ncpus. IOVA_E_NOMEM if d cannot remember one more thread
 * (nothing changed). */
static int thread_slot(struct iova_domain *d)
{
    unsigned h = (unsigned)d->uid & (SLOT_CACHE - 1);
    if (slot_cache[h].domain == d->uid)
        return (int)slot_cache[h].slot;
    if (!thread_uid)
        thread_uid = iova_new_uid();
    iova_mutex_lock(&d->thread_lock);
    uint32_t i = 0;
    while (i < d->nthreads && d->thread_uids[i] != thread_uid)
        i++;
    int r = 0;
    if (i == d->nthreads) {
        if (d->nthreads == d->threads_cap) {
            uint32_t ncap = d->threads_cap ? 2 * d->threads_cap : 8;
            uint64_t *n = ncap > d->threads_cap
                              ? iova_mem_realloc(d->thread_uids, (size_t)ncap * sizeof(*n))
                              : NULL;
            if (!n)
                r = IOVA_E_NOMEM;
            else {
                d->thread_uids = n;
                d->threads_cap = ncap;
            }
        }
        if (!r)
            d->thread_uids[d->nthreads++] = thread_uid;
    }
    iova_mutex_unlock(&d->thread_lock);
    if (r)
        return r;
    slot_cache[h].domain = d->uid;
    slot_cache[h].slot = i % d->ncpus;
    return (int)slot_cache[h].slot;
}

int iova_rcache_current_cpu(struct iova_domain *d)
{
    return d ? thread_slot(d) : IOVA_E_CLOSED;
}

static int resolve_cpu(struct iova_domain *d, int cpu, unsigned *out)
{
    if (cpu == -1) {
        int slot = thread_slot(d);
        if (slot < 0)
            return slot;
        *out = (unsigned)slot;
        return 0;
    }
    if (cpu < 0 || (unsigned)cpu >= d->ncpus)
        return IOVA_E_CPU;
    *out = (unsigned)cpu;
    return 0;
}

static void flush_cpu_locked_caches(struct iova_domain *d, unsigned cpu)
{
    for (unsigned k = 0; k < CACHED_CLASSES; k++) {
        struct iova_cpu_rcache *c = cpu_rc(d, k, cpu);
        iova_mutex_lock(&c->lock);
        if (!d->closed) {
            iova_mutex_lock(&d->tree_lock);
            mag_free_pfns(d, c->loaded);
            mag_free_pfns(d, c->prev);
            iova_mutex_unlock(&d->tree_lock);
        }
        iova_mutex_unlock(&c->lock);
    }
}

/* free_global_cached_iovas. The order of the magazines matters (each free
 * may move a cached node): 6.1 walks its array from index 0, the oldest;
 * 6.12 pops its list from the newest, and so does pyiova's 4.10, which had
 * no such call. */
static void flush_depot_all(struct iova_domain *d)
{
    bool oldest_first = d->kernel == IOVA_KERNEL_6_1;
    for (unsigned k = 0; k < CACHED_CLASSES; k++) {
        struct iova_depot *dp = &d->depot[k];
        iova_mutex_lock(&dp->lock);
        if (!d->closed) {
            iova_mutex_lock(&d->tree_lock);
            for (uint64_t j = 0; j < dp->len; j++) {
                struct iova_magazine *m = dp->mags[oldest_first ? j : dp->len - 1 - j];
                mag_free_pfns(d, m);
                free(m);
            }
            dp->len = 0;
            iova_mutex_unlock(&d->tree_lock);
        }
        iova_mutex_unlock(&dp->lock);
    }
}

static int64_t alloc_fast_one(struct iova_domain *d, uint64_t size,
                              uint64_t limit_pfn, bool flush, unsigned cpu)
{
    bool mainline = iova_mainline_tree(d);
    /* 6.12 and 6.1 round small sizes up to their class so a cached range of
     * the class always fits; 4.10 does not round (its dma-iommu did). */
    if (mainline && size < (1u << (CACHED_CLASSES - 1)))
        size = roundup_pow_of_two(size);
    uint64_t pfn = rcache_get(d, size, limit_pfn, cpu);
    if (pfn)
        return (int64_t)pfn;
    if (!mainline)
        flush = true;                      /* 4.10 always retries once */
    for (;;) {
        iova_mutex_lock(&d->tree_lock);
        int64_t r = d->closed ? IOVA_E_CLOSED
                              : iova_alloc_locked(d, size, limit_pfn, true);
        iova_mutex_unlock(&d->tree_lock);
        if (r != IOVA_E_NOSPC)
            return r;
        if (!flush)
            return 0;
        flush = false;
        for (unsigned c = 0; c < d->ncpus; c++)
            flush_cpu_locked_caches(d, c);
        if (mainline)
            flush_depot_all(d);            /* 4.10 had no global flush */
    }
}

int64_t iova_rcache_alloc_fast(struct iova_domain *d, uint64_t size,
                               uint64_t limit_pfn, int flush_rcache, int cpu)
{
    if (!d)
        return IOVA_E_CLOSED;
    unsigned c;
    int err = iova_validate_size(d, size);
    if (!err)
        err = iova_validate_limit(d, limit_pfn);
    if (!err)
        err = resolve_cpu(d, cpu, &c);
    if (err)
        return err;
    return alloc_fast_one(d, size, limit_pfn, flush_rcache != 0, c);
}

/* The node d->live_hint names for pfn, if it is a live, uncached range
 * starting at pfn; IOVA_NIL otherwise. Ranges are disjoint, so a live node
 * whose lo is pfn is the one a lookup would find. tree_lock held. */
static uint32_t hinted_node(struct iova_domain *d, uint64_t pfn)
{
    const struct iova_tree *t = &d->tree;
    uint32_t i = d->live_hint ? d->live_hint[iova_live_hint_slot(pfn)] : IOVA_NIL;
    if (i == IOVA_NIL || i >= t->top || i == d->anchor ||
        t->nodes[i].lo != pfn || iova_flags(t, i) != 0)
        return IOVA_NIL;
    return i;
}

/* Checks that pfn starts a live, uncached range of size's class; tree_lock
 * held. Returns the node or a negative code. With p, *p is the way down to
 * it, for a free that goes straight to the tree; without, the free goes to
 * a magazine and the hint may stand in for the lookup. */
static int64_t validate_fast_free(struct iova_domain *d, uint64_t pfn,
                                  uint64_t size, struct iova_path *p)
{
    struct iova_tree *t = &d->tree;
    uint32_t i = p ? IOVA_NIL : hinted_node(d, pfn);
    if (i == IOVA_NIL) {
        struct iova_path unused;
        i = iova_tree_find_path(t, pfn, p ? p : &unused);
    }
    if (i == IOVA_NIL)
        return IOVA_E_NOTFOUND;
    if (i == d->anchor)
        return IOVA_E_ANCHOR;
    if (t->nodes[i].lo != pfn)
        return IOVA_E_NOTSTART;
    if (iova_flags(t, i) & IOVA_NODE_CACHED)
        return IOVA_E_CACHED;
    unsigned want = order_base_2(t->nodes[i].hi - t->nodes[i].lo + 1);
    unsigned got = order_base_2(size);
    if (want > CACHED_CLASSES)
        want = CACHED_CLASSES;
    if (got > CACHED_CLASSES)
        got = CACHED_CLASSES;
    if (want != got)
        return IOVA_E_SIZECLASS;
    return i;
}

static int free_fast_one(struct iova_domain *d, uint64_t pfn, uint64_t size,
                         unsigned cpu)
{
    unsigned k = order_base_2(size);
    int64_t i;
    struct iova_path p;
    /* pfn 0 is cached like any other, as the kernel does (only a reserve
     * widened down to 0 can put a range there); rcache_get reads it back as
     * a miss. */
    if (k >= CACHED_CLASSES) {
        iova_mutex_lock(&d->tree_lock);
        i = d->closed ? IOVA_E_CLOSED : validate_fast_free(d, pfn, size, &p);
        if (i >= 0)
            iova_remove_found_locked(d, (uint32_t)i, &p);
        iova_mutex_unlock(&d->tree_lock);
        return i < 0 ? (int)i : 0;
    }
    struct iova_cpu_rcache *c = cpu_rc(d, k, cpu);
    iova_mutex_lock(&c->lock);
    iova_mutex_lock(&d->tree_lock);
    i = d->closed ? IOVA_E_CLOSED : validate_fast_free(d, pfn, size, NULL);
    if (i >= 0) {
        iova_set_flag(&d->tree, (uint32_t)i, IOVA_NODE_CACHED);
        d->cached_ranges++;
    }
    iova_mutex_unlock(&d->tree_lock);
    if (i < 0) {
        iova_mutex_unlock(&c->lock);
        return (int)i;
    }
    bool inserted;
    struct iova_magazine *evicted = rcache_insert(d, k, c, pfn, (uint32_t)i, &inserted);
    /* The kernel spills a magazine after dropping the CPU's lock; keeping
     * it here changes no answer (the tree lock is held across the whole
     * magazine either way, and only this CPU slot's own calls wait on it),
     * and no thread ever sees a range flagged CACHED in no magazine. */
    if (evicted || !inserted) {
        iova_mutex_lock(&d->tree_lock);
        if (evicted)
            mag_free_pfns(d, evicted);
        if (!inserted)                     /* no magazine to be had: the tree takes it */
            iova_release_cached_pfn_locked(d, pfn, (uint32_t)i);
        iova_mutex_unlock(&d->tree_lock);
        free(evicted);
    }
    iova_mutex_unlock(&c->lock);
    return 0;
}

int iova_rcache_free_fast(struct iova_domain *d, uint64_t pfn, uint64_t size, int cpu)
{
    if (!d)
        return IOVA_E_CLOSED;
    unsigned c;
    int err = iova_validate_size(d, size);
    if (!err && pfn > d->max_pfn)
        err = IOVA_E_PFN;
    if (!err)
        err = resolve_cpu(d, cpu, &c);
    if (err)
        return err;
    return free_fast_one(d, pfn, size, c);
}

int64_t iova_rcache_alloc_fast_many(struct iova_domain *d, const uint64_t *sizes,
                                    uint64_t *out, uint64_t n, uint64_t limit_pfn,
                                    int flush_rcache, int cpu, uint64_t *bad_index)
{
    if (!d)
        return IOVA_E_CLOSED;
    unsigned c;
    int err = iova_validate_limit(d, limit_pfn);
    if (!err)
        err = resolve_cpu(d, cpu, &c);
    if (err)
        return err;
    for (uint64_t i = 0; i < n; i++) {
        if ((err = iova_validate_size(d, sizes[i])) != 0) {
            *bad_index = i;
            return err;
        }
    }
    int64_t ok = 0;
    for (uint64_t i = 0; i < n; i++) {
        int64_t r = alloc_fast_one(d, sizes[i], limit_pfn, flush_rcache != 0, c);
        if (r < 0) {
            memset(out + i, 0, (n - i) * sizeof(*out));
            *bad_index = i;
            return r;
        }
        out[i] = (uint64_t)r;
        ok += r != 0;
    }
    return ok;
}

int64_t iova_rcache_free_fast_many(struct iova_domain *d, const uint64_t *pfns,
                                   const uint64_t *sizes, uint64_t n, int cpu,
                                   int *err)
{
    *err = 0;
    if (!d) {
        *err = IOVA_E_CLOSED;
        return 0;
    }
    unsigned c;
    if ((*err = resolve_cpu(d, cpu, &c)) != 0)
        return 0;
    for (uint64_t i = 0; i < n; i++) {
        int r = iova_validate_size(d, sizes[i]);
        if (!r && pfns[i] > d->max_pfn)
            r = IOVA_E_PFN;
        if (!r)
            r = free_fast_one(d, pfns[i], sizes[i], c);
        if (r) {
            *err = r;
            return (int64_t)i;
        }
    }
    return (int64_t)n;
}

/* ---- public: flushes and trim work -------------------------------------- */

int iova_rcache_flush_cpu(struct iova_domain *d, int cpu)
{
    if (!d)
        return IOVA_E_CLOSED;
    if (cpu < 0 || (unsigned)cpu >= d->ncpus)
        return IOVA_E_CPU;
    flush_cpu_locked_caches(d, (unsigned)cpu);
    return d->closed ? IOVA_E_CLOSED : 0;
}

int iova_rcache_flush_depot(struct iova_domain *d)
{
    if (!d)
        return IOVA_E_CLOSED;
    flush_depot_all(d);
    return d->closed ? IOVA_E_CLOSED : 0;
}

int iova_rcache_flush_all(struct iova_domain *d)
{
    if (!d)
        return IOVA_E_CLOSED;
    for (unsigned c = 0; c < d->ncpus; c++)
        flush_cpu_locked_caches(d, c);
    flush_depot_all(d);
    return d->closed ? IOVA_E_CLOSED : 0;
}

/* One run of class k's trim item; work_lock held. */
static void run_trim(struct iova_domain *d, unsigned k)
{
    struct iova_depot *dp = &d->depot[k];
    iova_mutex_lock(&dp->lock);
    dp->work_pending = false;
    if (!d->closed && dp->len > d->ncpus) {
        struct iova_magazine *m = dp->mags[--dp->len];
        iova_mutex_lock(&d->tree_lock);
        mag_free_pfns(d, m);
        iova_mutex_unlock(&d->tree_lock);
        free(m);
        arm_trim(d, dp);
    }
    iova_mutex_unlock(&dp->lock);
}

int64_t iova_rcache_run_pending_work(struct iova_domain *d)
{
    if (!d)
        return IOVA_E_CLOSED;
    iova_mutex_lock(&d->work_lock);
    int64_t ran = d->closed ? IOVA_E_CLOSED : 0;
    bool pending[CACHED_CLASSES];
    for (unsigned k = 0; ran >= 0 && k < CACHED_CLASSES; k++) {
        iova_mutex_lock(&d->depot[k].lock);
        pending[k] = d->depot[k].work_pending;
        iova_mutex_unlock(&d->depot[k].lock);
    }
    /* Only what was pending when called runs; re-armed items wait. */
    for (unsigned k = 0; ran >= 0 && k < CACHED_CLASSES; k++) {
        if (pending[k]) {
            run_trim(d, k);
            ran++;
        }
    }
    iova_mutex_unlock(&d->work_lock);
    return ran;
}

int iova_rcache_trim_due(struct iova_domain *d, uint64_t *due_ms)
{
    if (!d)
        return IOVA_E_CLOSED;
    iova_mutex_lock(&d->work_lock);
    int n = d->closed ? IOVA_E_CLOSED : 0;
    for (unsigned k = 0; n >= 0 && k < CACHED_CLASSES; k++) {
        iova_mutex_lock(&d->depot[k].lock);
        bool pending = d->depot[k].work_pending;
        if (due_ms)
            due_ms[k] = pending ? d->depot[k].work_due_ms : UINT64_MAX;
        iova_mutex_unlock(&d->depot[k].lock);
        n += pending;
    }
    iova_mutex_unlock(&d->work_lock);
    return n;
}

int iova_rcache_run_trim(struct iova_domain *d, unsigned k)
{
    if (!d)
        return IOVA_E_CLOSED;
    if (k >= CACHED_CLASSES)
        return IOVA_E_SIZECLASS;
    iova_mutex_lock(&d->work_lock);
    int r = d->closed ? IOVA_E_CLOSED : 0;
    if (!r) {
        iova_mutex_lock(&d->depot[k].lock);
        bool pending = d->depot[k].work_pending;
        iova_mutex_unlock(&d->depot[k].lock);
        if (pending) {
            run_trim(d, k);
            r = 1;
        }
    }
    iova_mutex_unlock(&d->work_lock);
    return r;
}

int iova_rcache_set_clock(struct iova_domain *d, uint64_t ms)
{
    if (!d)
        return IOVA_E_CLOSED;
    iova_mutex_lock(&d->work_lock);
    int r = d->closed ? IOVA_E_CLOSED : 0;
    if (!r && ms > clock_now(d))
        __atomic_store_n(&d->clock_ms, ms, __ATOMIC_RELAXED);
    iova_mutex_unlock(&d->work_lock);
    return r;
}

int64_t iova_rcache_advance(struct iova_domain *d, uint64_t ms)
{
    if (!d)
        return IOVA_E_CLOSED;
    iova_mutex_lock(&d->work_lock);
    if (d->closed) {
        iova_mutex_unlock(&d->work_lock);
        return IOVA_E_CLOSED;
    }
    uint64_t now = clock_now(d);
    uint64_t target = ms > UINT64_MAX - now ? UINT64_MAX : now + ms;
    int64_t ran = 0;
    for (;;) {
        int next = -1;
        uint64_t due = 0;
        for (unsigned k = 0; k < CACHED_CLASSES; k++) {
            struct iova_depot *dp = &d->depot[k];
            iova_mutex_lock(&dp->lock);
            if (dp->work_pending && dp->work_due_ms <= target &&
                (next < 0 || dp->work_due_ms < due)) {
                next = (int)k;
                due = dp->work_due_ms;
            }
            iova_mutex_unlock(&dp->lock);
        }
        if (next < 0)
            break;
        if (due > clock_now(d))
            __atomic_store_n(&d->clock_ms, due, __ATOMIC_RELAXED);
        run_trim(d, (unsigned)next);
        ran++;
    }
    __atomic_store_n(&d->clock_ms, target, __ATOMIC_RELAXED);
    iova_mutex_unlock(&d->work_lock);
    return ran;
}

/* ---- introspection and the validator ------------------------------------ */

int iova_rcache_stats(struct iova_domain *d, uint32_t *loaded, uint32_t *prev,
                      uint64_t *depot, uint32_t *pending)
{
    if (!d)
        return IOVA_E_CLOSED;
    int r = 0;
    for (unsigned k = 0; k < CACHED_CLASSES; k++) {
        for (unsigned cpu = 0; cpu < d->ncpus; cpu++) {
            struct iova_cpu_rcache *c = cpu_rc(d, k, cpu);
            iova_mutex_lock(&c->lock);
            if (d->closed) {
                r = IOVA_E_CLOSED;
            } else {
                loaded[k * d->ncpus + cpu] = c->loaded->count;
                prev[k * d->ncpus + cpu] = c->prev->count;
            }
            iova_mutex_unlock(&c->lock);
        }
        iova_mutex_lock(&d->depot[k].lock);
        depot[k] = d->depot[k].len;
        pending[k] = d->depot[k].work_pending;
        iova_mutex_unlock(&d->depot[k].lock);
    }
    return r;
}

/* Visits every cached pfn with its class; caller holds every lock. */
typedef void (*pfn_visitor)(void *ctx, unsigned k, uint64_t pfn, uint32_t node);

static void for_each_cached(struct iova_domain *d, pfn_visitor fn, void *ctx)
{
    for (unsigned k = 0; k < CACHED_CLASSES; k++) {
        for (unsigned cpu = 0; cpu < d->ncpus; cpu++) {
            struct iova_cpu_rcache *c = cpu_rc(d, k, cpu);
            for (uint32_t i = 0; i < c->loaded->count; i++)
                fn(ctx, k, c->loaded->pfns[i], c->loaded->nodes[i]);
            for (uint32_t i = 0; i < c->prev->count; i++)
                fn(ctx, k, c->prev->pfns[i], c->prev->nodes[i]);
        }
        struct iova_depot *dp = &d->depot[k];
        for (uint64_t j = 0; j < dp->len; j++)
            for (uint32_t i = 0; i < dp->mags[j]->count; i++)
                fn(ctx, k, dp->mags[j]->pfns[i], dp->mags[j]->nodes[i]);
    }
}

struct collect_ctx {
    uint64_t *out;
    uint64_t cap;
    uint64_t n;
};

static void collect(void *p, unsigned k, uint64_t pfn, uint32_t node)
{
    struct collect_ctx *c = p;
    if (c->n < c->cap)
        c->out[c->n] = pfn;
    c->n++;
}

static void lock_caches(struct iova_domain *d)
{
    for (unsigned i = 0; i < CACHED_CLASSES * d->ncpus; i++)
        iova_mutex_lock(&d->cpu_rc[i].lock);
    for (unsigned k = 0; k < CACHED_CLASSES; k++)
        iova_mutex_lock(&d->depot[k].lock);
}

static void unlock_caches(struct iova_domain *d)
{
    for (unsigned k = CACHED_CLASSES; k-- > 0;)
        iova_mutex_unlock(&d->depot[k].lock);
    for (unsigned i = CACHED_CLASSES * d->ncpus; i-- > 0;)
        iova_mutex_unlock(&d->cpu_rc[i].lock);
}

int64_t iova_rcache_pfns(struct iova_domain *d, uint64_t *out, uint64_t cap)
{
    if (!d)
        return IOVA_E_CLOSED;
    lock_caches(d);
    struct collect_ctx c = { out, cap, 0 };
    if (!d->closed)
        for_each_cached(d, collect, &c);
    unlock_caches(d);
    return d->closed ? IOVA_E_CLOSED : (int64_t)c.n;
}

struct verify_ctx {
    struct iova_domain *d;
    uint64_t *seen;
    uint64_t n;
    const char *why;
    uint64_t bad;
};

static void verify(void *p, unsigned k, uint64_t pfn, uint32_t node)
{
    struct verify_ctx *v = p;
    const struct iova_tree *t = &v->d->tree;
    if (v->why)
        return;
    uint32_t i = iova_tree_find((struct iova_tree *)t, pfn);
    if (i == IOVA_NIL)
        v->why = "a cached pfn lies in no range (R1)";
    else if (!(iova_flags(t, i) & IOVA_NODE_CACHED))
        v->why = "a cached pfn's range is not flagged CACHED (R1)";
    else if (node != i)
        v->why = "a magazine names the wrong node for a pfn (R1)";
    if (v->why)
        v->bad = pfn;
    else
        v->seen[v->n++] = i;       /* node index: two pfns may not share a node */
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Caller holds every lock (iova_check does). */
int iova_rcache_check(struct iova_domain *d, char *msg, size_t msg_len)
{
    const char *why = NULL;
    uint64_t bad = 0;
    for (unsigned i = 0; !why && i < CACHED_CLASSES * d->ncpus; i++)
        if (d->cpu_rc[i].loaded->count > d->mag_size ||
            d->cpu_rc[i].prev->count > d->mag_size)
            why = "a magazine holds more than its size (R3)";
    for (unsigned h = 0; !why && d->live_hint && h < IOVA_LIVE_HINTS; h++)
        if (d->live_hint[h] >= d->tree.top && d->live_hint[h] != IOVA_NIL)
            why = "a live_hint slot names no pool slot (R4)";
    for (unsigned k = 0; !why && k < CACHED_CLASSES; k++) {
        const struct iova_depot *dp = &d->depot[k];
        if (dp->len > d->depot_max)
            why = "the depot holds more magazines than allowed (R3)";
        else if (dp->work_pending && !iova_depot_trimmed(d))
            why = "trim work is armed in a kernel that has none (R3)";
        for (uint64_t j = 0; !why && j < dp->len; j++)
            if (dp->mags[j]->count != d->mag_size)
                why = "a depot magazine is not full (R3)";
    }
    if (!why) {
        struct verify_ctx v = { .d = d };
        struct collect_ctx count = { NULL, 0, 0 };
        for_each_cached(d, collect, &count);
        v.seen = iova_mem_malloc((count.n ? count.n : 1) * sizeof(uint64_t));
        if (!v.seen)
            return IOVA_E_NOMEM;
        for_each_cached(d, verify, &v);
        why = v.why;
        bad = v.bad;
        if (!why) {
            qsort(v.seen, v.n, sizeof(uint64_t), cmp_u64);
            for (uint64_t i = 1; !why && i < v.n; i++)
                if (v.seen[i] == v.seen[i - 1]) {
                    why = "a range is cached twice (R1)";
                    bad = d->tree.nodes[v.seen[i]].lo;
                }
        }
        if (!why && v.n != d->cached_ranges)
            why = "CACHED ranges and cached pfns differ in number (R2)";
        free(v.seen);
    }
    if (why) {
        if (msg && msg_len)
            snprintf(msg, msg_len, "rcache: %s (pfn %llu)", why,
                     (unsigned long long)bad);
        return IOVA_E_CORRUPT;
    }
    return 0;
}
