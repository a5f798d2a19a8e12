/*
 * iova.c - the IOVA domain and the kernel's tree allocator.
 *
 * Behaviour follows drivers/iommu/iova.c as docs/allocator-rules.md and
 * docs/kernels.md describe it (mainline 6.12 by default, Linux 6.1 or 4.10 on
 * request); the code is our own. What the rules come down to:
 *
 *   6.12  alloc searches downward from cached32_node (limit below 4 GiB) or
 *         cached_node, and if that fails, once more over the space above
 *         that node; a failure records max32_alloc_size, which makes later
 *         32-bit requests that are at least as large fail at once. A new node
 *         becomes cached32_node if it ends below 4 GiB, else cached_node.
 *         Removing a node at or above a cached node moves that cache up to
 *         the removed node's successor; the [~0, ~0] anchor keeps the
 *         successor defined.
 *   6.1   the 6.12 tree rules exactly (only its rcache depot differs:
 *         iova_rcache.c).
 *   4.10  one cache pointer, set only by requests whose limit is exactly
 *         dma_32bit_pfn, which (when set) replaces any 32-bit limit by the
 *         cached node's lo - 1; no retry, no failure shortcut, and the lowest
 *         usable pfn is start_pfn + 1.
 *
 * Everything that changes the tree runs under tree_lock.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iova_mem_internal.h"
#include "iova_internal.h"

static uint64_t size_mask(uint64_t size, bool aligned)
{
    return aligned ? ~(roundup_pow_of_two(size) - 1) : IOVA_U64_MAX;
}

/* ---- lifetime ----------------------------------------------------------- */

static uint64_t next_uid = 1;   /* domains' and threads' uids alike */

uint64_t iova_new_uid(void)
{
    return __atomic_fetch_add(&next_uid, 1, __ATOMIC_RELAXED);
}

int iova_granule_check(uint64_t granule)
{
    /* The kernel requires a power of two no larger than PAGE_SIZE (64K at
     * most); at least 2 keeps every pfn below 2^63, so it fits an int64. */
    if (granule < 2 || granule > 65536 || (granule & (granule - 1)))
        return IOVA_E_GRANULE;
    return 0;
}

struct iova_domain *iova_domain_new(uint64_t granule, uint64_t start_pfn,
                                    unsigned ncpus, int kernel,
                                    uint64_t dma_32bit_pfn, int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    if (iova_granule_check(granule)) {
        *err = IOVA_E_GRANULE;
        return NULL;
    }
    unsigned shift = (unsigned)__builtin_ctzll(granule);
    uint64_t max_pfn = IOVA_U64_MAX >> shift;
    if (start_pfn > max_pfn) {
        *err = IOVA_E_START;
        return NULL;
    }
    if (ncpus < 1 || ncpus > IOVA_MAX_CPUS) {
        *err = IOVA_E_NCPUS;
        return NULL;
    }
    if (kernel != IOVA_KERNEL_6_12 && kernel != IOVA_KERNEL_6_1 &&
        kernel != IOVA_KERNEL_4_10) {
        *err = IOVA_E_KERNEL;
        return NULL;
    }
    if (kernel != IOVA_KERNEL_4_10 && dma_32bit_pfn != 0) {
        *err = IOVA_E_DMA32;
        return NULL;
    }
    if (kernel == IOVA_KERNEL_4_10 && dma_32bit_pfn > max_pfn) {
        *err = IOVA_E_DMA32;
        return NULL;
    }

    struct iova_domain *d = iova_mem_calloc(1, sizeof(*d));
    if (!d) {
        *err = IOVA_E_NOMEM;
        return NULL;
    }
    iova_mutex_init(&d->tree_lock);
    iova_mutex_init(&d->work_lock);
    iova_mutex_init(&d->thread_lock);
    d->uid = iova_new_uid();
    for (int k = 0; k < IOVA_RANGE_CACHE_MAX_SIZE; k++)
        iova_mutex_init(&d->depot[k].lock);
    iova_tree_init(&d->tree);
    d->kernel = kernel;
    d->search_mode = IOVA_SEARCH_AUGMENTED;
    d->granule = granule;
    d->shift = shift;
    d->start_pfn = start_pfn;
    d->max_pfn = max_pfn;
    d->ncpus = ncpus;
    d->anchor = d->cached_node = d->cached32_node = IOVA_NIL;

    if (iova_mainline_tree(d)) {
        d->dma_32bit_pfn = 1ull << (32 - shift);
        d->max32_alloc_size = d->dma_32bit_pfn;
        d->anchor = iova_tree_node_new(&d->tree, IOVA_U64_MAX, IOVA_U64_MAX);
        if (d->anchor == IOVA_NIL)
            goto nomem;
        iova_tree_insert(&d->tree, d->anchor);
        d->cached_node = d->cached32_node = d->anchor;
    } else {
        d->dma_32bit_pfn = dma_32bit_pfn ? dma_32bit_pfn : 0xFFFFFFFFull >> shift;
    }
    if (iova_rcache_init(d) != 0)
        goto nomem;
    *err = 0;
    return d;

nomem:
    iova_domain_destroy(d);
    *err = IOVA_E_NOMEM;
    return NULL;
}

void iova_lock_all(struct iova_domain *d)
{
    iova_mutex_lock(&d->work_lock);
    if (d->cpu_rc)
        for (unsigned i = 0; i < IOVA_RANGE_CACHE_MAX_SIZE * d->ncpus; i++)
            iova_mutex_lock(&d->cpu_rc[i].lock);
    for (int k = 0; k < IOVA_RANGE_CACHE_MAX_SIZE; k++)
        iova_mutex_lock(&d->depot[k].lock);
    iova_mutex_lock(&d->tree_lock);
}

void iova_unlock_all(struct iova_domain *d)
{
    iova_mutex_unlock(&d->tree_lock);
    for (int k = IOVA_RANGE_CACHE_MAX_SIZE - 1; k >= 0; k--)
        iova_mutex_unlock(&d->depot[k].lock);
    if (d->cpu_rc)
        for (unsigned i = IOVA_RANGE_CACHE_MAX_SIZE * d->ncpus; i-- > 0;)
            iova_mutex_unlock(&d->cpu_rc[i].lock);
    iova_mutex_unlock(&d->work_lock);
}

int iova_domain_close(struct iova_domain *d)
{
    if (!d)
        return IOVA_E_CLOSED;
    iova_lock_all(d);
    int ret = d->closed ? IOVA_E_CLOSED : 0;
    if (!d->closed) {
        /* put_iova_domain: cached pfns are dropped with their magazines,
         * not returned to the tree, then every node goes. */
        iova_rcache_release(d);
        iova_tree_release(&d->tree);
        d->anchor = d->cached_node = d->cached32_node = IOVA_NIL;
        d->cached_ranges = 0;
        d->closed = true;
    }
    iova_unlock_all(d);
    return ret;
}

void iova_domain_destroy(struct iova_domain *d)
{
    if (!d)
        return;
    if (!d->closed)
        iova_domain_close(d);
    free(d->cpu_rc);             /* the locks in it need no teardown */
    free(d->thread_uids);
    free(d);
}

int iova_domain_reset(struct iova_domain *d)
{
    if (!d)
        return IOVA_E_CLOSED;
    iova_lock_all(d);
    int ret = d->closed ? IOVA_E_CLOSED : 0;
    if (!ret) {
        /* Empty every magazine and the depot, then drop every range they
         * held. Allocated ranges stay - reserved regions above all: the
         * rejected patch rebuilt the domain from scratch and so lost its
         * reservations, then handed out e.g. the MSI doorbell window.
         * Nothing here needs memory, so the reset cannot fail halfway. */
        for (unsigned i = 0; i < IOVA_RANGE_CACHE_MAX_SIZE * d->ncpus; i++)
            d->cpu_rc[i].loaded->count = d->cpu_rc[i].prev->count = 0;
        for (int k = 0; k < IOVA_RANGE_CACHE_MAX_SIZE; k++) {
            struct iova_depot *dp = &d->depot[k];
            while (dp->len)
                free(dp->mags[--dp->len]);
            dp->work_pending = false;
        }
        struct iova_tree *t = &d->tree;
        for (uint32_t x = iova_tree_first(t); x != IOVA_NIL;) {
            uint32_t next = iova_tree_next(t, x);
            if (iova_flags(t, x) & IOVA_NODE_CACHED) {
                iova_tree_erase(t, x);
                iova_tree_node_free(t, x);
            }
            x = next;
        }
        d->cached_ranges = 0;
        /* The cache pointers and the failure shortcut as init leaves them:
         * reserve_iova, which made what is left, touches neither. */
        d->cached_node = d->cached32_node = d->anchor;   /* NIL under 4.10 */
        d->max32_alloc_size = d->dma_32bit_pfn;
    }
    iova_unlock_all(d);
    return ret;
}

int iova_set_search_mode(struct iova_domain *d, int mode)
{
    if (!d)
        return IOVA_E_CLOSED;
    if (mode != IOVA_SEARCH_AUGMENTED && mode != IOVA_SEARCH_LINEAR)
        return IOVA_E_MODE;
    iova_mutex_lock(&d->tree_lock);
    int ret = d->closed ? IOVA_E_CLOSED : 0;
    if (!ret)
        d->search_mode = mode;
    iova_mutex_unlock(&d->tree_lock);
    return ret;
}

/* ---- argument checks ---------------------------------------------------- */

int iova_validate_size(const struct iova_domain *d, uint64_t size)
{
    return size == 0 || size > d->max_pfn ? IOVA_E_SIZE : 0;
}

int iova_validate_limit(const struct iova_domain *d, uint64_t limit_pfn)
{
    return limit_pfn < d->start_pfn || limit_pfn > d->max_pfn ? IOVA_E_LIMIT : 0;
}

/* ---- allocation --------------------------------------------------------- */

static bool search(struct iova_domain *d, const struct iova_search *s,
                   uint64_t *pfn)
{
    if (d->search_mode == IOVA_SEARCH_LINEAR)
        return iova_tree_search_linear(&d->tree, s, pfn);
    return iova_tree_search_augmented(&d->tree, s, pfn);
}

/* 6.12's alloc_iova, which 6.1 shares. */
static int64_t alloc_612(struct iova_domain *d, uint32_t node, uint64_t size,
                         uint64_t limit_pfn, bool aligned)
{
    struct iova_tree *t = &d->tree;
    uint64_t top = limit_pfn + 1;            /* exclusive from here on */
    bool low = top <= d->dma_32bit_pfn;

    if (low && size >= d->max32_alloc_size)
        return IOVA_E_NOSPC;                 /* known to fail: no state change */
    uint32_t cached = low ? d->cached32_node : d->cached_node;
    uint64_t retry_floor = t->nodes[cached].hi;
    struct iova_search s = {
        .start = cached, .top = top, .floor = d->start_pfn, .floor_all = true,
        .size = size, .mask = size_mask(size, aligned),
    };
    uint64_t pfn;
    bool found = search(d, &s, &pfn);
    if (!found && retry_floor < top) {
        /* Free space above the cached node is only looked at once the
         * space below it is exhausted: one more pass over it. */
        s.start = iova_tree_lowest_hi_ge(t, top);
        s.floor = retry_floor + 1;
        found = search(d, &s, &pfn);
    }
    if (!found) {
        d->max32_alloc_size = size;          /* whatever the limit was */
        return IOVA_E_NOSPC;
    }
    struct iova_node *n = iova_n(t, node);
    n->lo = pfn;
    n->hi = pfn + size - 1;
    iova_tree_insert(t, node);
    if (n->hi < d->dma_32bit_pfn)
        d->cached32_node = node;
    else
        d->cached_node = node;
    return (int64_t)pfn;
}

static int64_t alloc_410(struct iova_domain *d, uint32_t node, uint64_t size,
                         uint64_t limit_pfn, bool aligned)
{
    struct iova_tree *t = &d->tree;
    struct iova_search s = {
        .floor = d->start_pfn + 1,           /* 4.10 never uses start_pfn itself */
        .floor_all = false, .size = size, .mask = size_mask(size, aligned),
    };
    if (limit_pfn > d->dma_32bit_pfn || d->cached32_node == IOVA_NIL) {
        s.start = IOVA_NIL;                  /* from the top of the space */
        s.top = limit_pfn + 1;
    } else {
        /* the cached node's lo - 1 replaces the caller's limit */
        s.start = d->cached32_node;
        s.top = t->nodes[d->cached32_node].lo;
    }
    uint64_t pfn;
    if (!search(d, &s, &pfn))
        return IOVA_E_NOSPC;
    struct iova_node *n = iova_n(t, node);
    n->lo = pfn;
    n->hi = pfn + size - 1;
    iova_tree_insert(t, node);
    if (limit_pfn == d->dma_32bit_pfn)
        d->cached32_node = node;
    return (int64_t)pfn;
}

int64_t iova_alloc_locked(struct iova_domain *d, uint64_t size,
                          uint64_t limit_pfn, bool size_aligned)
{
    /* Take the node first, as the kernel does: running out of memory must
     * leave no trace, not even a max32_alloc_size update. */
    uint32_t node = iova_tree_node_new(&d->tree, 0, 0);
    if (node == IOVA_NIL)
        return d->tree.top >= IOVA_MAX_NODES ? IOVA_E_TOOMANY : IOVA_E_NOMEM;
    int64_t r = iova_mainline_tree(d)
                    ? alloc_612(d, node, size, limit_pfn, size_aligned)
                    : alloc_410(d, node, size, limit_pfn, size_aligned);
    if (r < 0)
        iova_tree_node_free(&d->tree, node);
    else
        iova_note_live(d, (uint64_t)r, node);
    return r;
}

int64_t iova_alloc(struct iova_domain *d, uint64_t size, uint64_t limit_pfn,
                   int size_aligned)
{
    if (!d)
        return IOVA_E_CLOSED;
    int err = iova_validate_size(d, size);
    if (!err)
        err = iova_validate_limit(d, limit_pfn);
    if (err)
        return err;
    iova_mutex_lock(&d->tree_lock);
    int64_t r = d->closed ? IOVA_E_CLOSED
                          : iova_alloc_locked(d, size, limit_pfn, size_aligned != 0);
    iova_mutex_unlock(&d->tree_lock);
    return r;
}

/* ---- removal ------------------------------------------------------------ */

void iova_remove_found_locked(struct iova_domain *d, uint32_t i, struct iova_path *p)
{
    struct iova_tree *t = &d->tree;
    const struct iova_node *f = iova_n(t, i);
    /* Unlinked first: the erase hands back i's successor, which the cache
     * pointers move to; i keeps its lo and hi until the slot is freed, and
     * the pointers' own nodes are untouched, so each test below sees what it
     * would have seen before the erase. */
    uint32_t next = iova_tree_erase_path(t, i, p);

    if (iova_mainline_tree(d)) {
        const struct iova_node *c32 = iova_n(t, d->cached32_node);
        if (i == d->cached32_node ||
            (f->hi < d->dma_32bit_pfn && f->lo >= c32->lo))
            d->cached32_node = next;
        if (f->lo < d->dma_32bit_pfn)
            d->max32_alloc_size = d->dma_32bit_pfn;
        if (f->lo >= t->nodes[d->cached_node].lo)
            d->cached_node = next;
    } else if (d->cached32_node != IOVA_NIL &&
               f->lo >= t->nodes[d->cached32_node].lo) {
        d->cached32_node =
            next != IOVA_NIL && t->nodes[next].lo < d->dma_32bit_pfn ? next : IOVA_NIL;
    }
    if (iova_flags(t, i) & IOVA_NODE_CACHED)
        d->cached_ranges--;
    iova_tree_node_free(t, i);
}

void iova_remove_node_locked(struct iova_domain *d, uint32_t i)
{
    struct iova_path p;
    iova_tree_find_path(&d->tree, d->tree.nodes[i].lo, &p);
    iova_remove_found_locked(d, i, &p);
}

uint32_t iova_cached_node_locked(struct iova_domain *d, uint64_t pfn, uint32_t hint)
{
    struct iova_tree *t = &d->tree;
    if (hint < t->top && !(iova_flags(t, hint) & IOVA_NODE_FREE) &&
        t->nodes[hint].lo <= pfn && pfn <= t->nodes[hint].hi)
        return hint;
    return iova_tree_find(t, pfn);
}

void iova_release_cached_pfn_locked(struct iova_domain *d, uint64_t pfn, uint32_t node)
{
    uint32_t i = iova_cached_node_locked(d, pfn, node);
    /* The kernel warns and skips a pfn whose node has gone; it cannot
     * happen here, since a cached range can only leave through this path. */
    if (i != IOVA_NIL && (iova_flags(&d->tree, i) & IOVA_NODE_CACHED))
        iova_remove_node_locked(d, i);
}

static int free_locked(struct iova_domain *d, uint64_t pfn)
{
    if (pfn > d->max_pfn)
        return IOVA_E_PFN;
    struct iova_path p;
    uint32_t i = iova_tree_find_path(&d->tree, pfn, &p);
    if (i == IOVA_NIL)
        return IOVA_E_NOTFOUND;
    if (i == d->anchor)
        return IOVA_E_ANCHOR;
    if (iova_flags(&d->tree, i) & IOVA_NODE_CACHED)
        return IOVA_E_CACHED;                /* already freed into a magazine */
    iova_remove_found_locked(d, i, &p);
    return 0;
}

int iova_free(struct iova_domain *d, uint64_t pfn)
{
    if (!d)
        return IOVA_E_CLOSED;
    iova_mutex_lock(&d->tree_lock);
    int r = d->closed ? IOVA_E_CLOSED : free_locked(d, pfn);
    iova_mutex_unlock(&d->tree_lock);
    return r;
}

/* ---- lookups and reservations ------------------------------------------- */

int iova_find(struct iova_domain *d, uint64_t pfn, uint64_t *lo_hi)
{
    if (!d)
        return IOVA_E_CLOSED;
    iova_mutex_lock(&d->tree_lock);
    int r = IOVA_E_CLOSED;
    if (!d->closed) {
        uint32_t i = iova_tree_find(&d->tree, pfn);
        r = i != IOVA_NIL;
        if (r) {
            lo_hi[0] = d->tree.nodes[i].lo;
            lo_hi[1] = d->tree.nodes[i].hi;
        }
    }
    iova_mutex_unlock(&d->tree_lock);
    return r;
}

int iova_lookup(struct iova_domain *d, uint64_t pfn, uint64_t *out)
{
    if (!d)
        return IOVA_E_CLOSED;
    iova_mutex_lock(&d->tree_lock);
    int r = IOVA_E_CLOSED;
    if (!d->closed) {
        const struct iova_tree *t = &d->tree;
        uint32_t i = iova_tree_find(&d->tree, pfn);
        r = i != IOVA_NIL && i != d->anchor;
        if (r) {
            out[0] = t->nodes[i].lo;
            out[1] = t->nodes[i].hi;
            out[2] = (iova_flags(t, i) & IOVA_NODE_CACHED) != 0;
        }
    }
    iova_mutex_unlock(&d->tree_lock);
    return r;
}

/*
 * reserve_iova: walks the ranges that overlap [lo, hi] in address order,
 * widening each one downward in place to cover what lies below it, and
 * creates one node for whatever is left above the last of them. If an
 * existing node covers the remainder, that node is the answer.
 */
static int reserve_locked(struct iova_domain *d, uint64_t lo, uint64_t hi,
                          uint64_t *lo_hi)
{
    struct iova_tree *t = &d->tree;
    uint32_t spare = iova_tree_node_new(t, 0, 0);   /* so nothing can fail later */
    if (spare == IOVA_NIL)
        return t->top >= IOVA_MAX_NODES ? IOVA_E_TOOMANY : IOVA_E_NOMEM;
    /* Nodes wholly below lo can never overlap; start at the first that may. */
    for (uint32_t i = iova_tree_lowest_hi_ge(t, lo); i != IOVA_NIL;
         i = iova_tree_next(t, i)) {
        struct iova_node *n = iova_n(t, i);
        if (!(lo <= n->hi && hi >= n->lo))
            break;                           /* past the overlapping run */
        if (lo < n->lo) {
            if (n->lo != IOVA_U64_MAX)
                t->pfns += n->lo - lo;
            n->lo = lo;
            iova_tree_lo_changed(t, i);
        }
        if (hi > n->hi)
            lo = n->hi + 1;
        if (lo >= n->lo && hi <= n->hi) {
            iova_tree_node_free(t, spare);
            lo_hi[0] = n->lo;
            lo_hi[1] = n->hi;
            return 0;
        }
    }
    struct iova_node *n = iova_n(t, spare);
    n->lo = lo;
    n->hi = hi;
    iova_tree_insert(t, spare);
    lo_hi[0] = lo;
    lo_hi[1] = hi;
    return 0;
}

int iova_reserve(struct iova_domain *d, uint64_t lo, uint64_t hi,
                 uint64_t *lo_hi)
{
    if (!d)
        return IOVA_E_CLOSED;
    if (lo > d->max_pfn || hi > d->max_pfn)
        return IOVA_E_PFN;
    if (lo > hi)
        return IOVA_E_RANGE;
    iova_mutex_lock(&d->tree_lock);
    int r = d->closed ? IOVA_E_CLOSED : reserve_locked(d, lo, hi, lo_hi);
    iova_mutex_unlock(&d->tree_lock);
    return r;
}

/* ---- introspection ------------------------------------------------------ */

int iova_get_state(struct iova_domain *d, struct iova_state *st)
{
    if (!d)
        return IOVA_E_CLOSED;
    memset(st, 0, sizeof(*st));
    /* the constants, readable after close */
    st->dma_32bit_pfn = d->dma_32bit_pfn;
    st->start_pfn = d->start_pfn;
    st->granule = d->granule;
    st->shift = d->shift;
    st->kernel = d->kernel;
    st->ncpus = d->ncpus;
    iova_mutex_lock(&d->tree_lock);
    int r = d->closed ? IOVA_E_CLOSED : 0;
    if (!r) {
        const struct iova_tree *t = &d->tree;
        if (d->cached_node != IOVA_NIL)
            st->cached_lo = t->nodes[d->cached_node].lo;
        st->has_cached32 = d->cached32_node != IOVA_NIL;
        if (st->has_cached32)
            st->cached32_lo = t->nodes[d->cached32_node].lo;
        st->max32_alloc_size = d->max32_alloc_size;
        st->search_mode = d->search_mode;
        st->nodes = t->count - (d->anchor != IOVA_NIL);
        st->used_pfns = t->pfns;
        st->cached_pfns = d->cached_ranges;
        st->node_bytes = (uint64_t)t->cap * sizeof(struct iova_node);
        st->nodes_visited = t->visited;
        st->clock_ms = d->clock_ms;
    }
    iova_mutex_unlock(&d->tree_lock);
    return r;
}

int64_t iova_ranges(struct iova_domain *d, uint64_t *out, uint64_t cap)
{
    if (!d)
        return IOVA_E_CLOSED;
    iova_mutex_lock(&d->tree_lock);
    int64_t r = IOVA_E_CLOSED;
    if (!d->closed) {
        const struct iova_tree *t = &d->tree;
        uint32_t stack[64];
        int sp = 0;
        uint64_t k = 0;
        uint32_t x = t->root;
        while (x != IOVA_NIL || sp > 0) {
            while (x != IOVA_NIL) {
                stack[sp++] = x;
                x = iova_left(t, x);
            }
            x = stack[--sp];
            if (x != d->anchor) {
                if (k < cap) {
                    out[2 * k] = t->nodes[x].lo;
                    out[2 * k + 1] = t->nodes[x].hi;
                }
                k++;
            }
            x = iova_right(t, x);
        }
        r = (int64_t)k;
    }
    iova_mutex_unlock(&d->tree_lock);
    return r;
}

/* ---- batches ------------------------------------------------------------ */

int64_t iova_alloc_many(struct iova_domain *d, const uint64_t *sizes,
                        uint64_t *out, uint64_t n, uint64_t limit_pfn,
                        int size_aligned, uint64_t *bad_index)
{
    if (!d)
        return IOVA_E_CLOSED;
    int err = iova_validate_limit(d, limit_pfn);
    if (err)
        return err;
    for (uint64_t i = 0; i < n; i++) {
        if ((err = iova_validate_size(d, sizes[i])) != 0) {
            *bad_index = i;
            return err;
        }
    }
    iova_mutex_lock(&d->tree_lock);
    int64_t ok = d->closed ? IOVA_E_CLOSED : 0;
    for (uint64_t i = 0; ok >= 0 && i < n; i++) {
        int64_t r = iova_alloc_locked(d, sizes[i], limit_pfn, size_aligned != 0);
        if (r >= 0) {
            out[i] = (uint64_t)r;
            ok++;
        } else if (r == IOVA_E_NOSPC) {
            out[i] = 0;
        } else {
            memset(out + i, 0, (n - i) * sizeof(*out));
            *bad_index = i;
            ok = r;
        }
    }
    iova_mutex_unlock(&d->tree_lock);
    return ok;
}

int64_t iova_free_many(struct iova_domain *d, const uint64_t *pfns, uint64_t n,
                       int *err)
{
    *err = 0;
    if (!d) {
        *err = IOVA_E_CLOSED;
        return 0;
    }
    iova_mutex_lock(&d->tree_lock);
    uint64_t i = 0;
    if (d->closed)
        *err = IOVA_E_CLOSED;
    for (; !*err && i < n; i++) {
        int r = free_locked(d, pfns[i]);
        if (r) {
            *err = r;
            break;
        }
    }
    iova_mutex_unlock(&d->tree_lock);
    return (int64_t)i;
}

/* ---- validator ---------------------------------------------------------- */

static bool live(const struct iova_domain *d, uint32_t i)
{
    return i < d->tree.top && !(iova_flags(&d->tree, i) & IOVA_NODE_FREE);
}

int iova_check(struct iova_domain *d, char *msg, size_t msg_len)
{
    if (!d)
        return IOVA_E_CLOSED;
    if (msg && msg_len)
        msg[0] = 0;
    iova_lock_all(d);
    int r = 0;
    const char *why = NULL;
    if (d->closed) {
        r = IOVA_E_CLOSED;
        goto out;
    }
    r = iova_tree_check(&d->tree, msg, msg_len);
    if (r)
        goto out;
    const struct iova_tree *t = &d->tree;
    if (iova_mainline_tree(d)) {
        if (!live(d, d->anchor) || t->nodes[d->anchor].lo != IOVA_U64_MAX ||
            iova_tree_last(t) != d->anchor)
            why = "the anchor is not the [~0, ~0] node at the top";
        else if (!live(d, d->cached_node) || !live(d, d->cached32_node))
            why = "a cache pointer names a node that is not in the tree";
        else if (d->max32_alloc_size == 0)
            why = "max32_alloc_size is 0";
    } else {
        if (d->anchor != IOVA_NIL)
            why = "a 4.10 domain has an anchor";
        else if (d->cached32_node != IOVA_NIL &&
                 (!live(d, d->cached32_node) ||
                  t->nodes[d->cached32_node].lo > d->dma_32bit_pfn))
            why = "cached32_node is not a node below the 32-bit boundary";
    }
    if (why) {
        r = IOVA_E_CORRUPT;
        if (msg && msg_len)
            snprintf(msg, msg_len, "domain: %s", why);
        goto out;
    }
    r = iova_rcache_check(d, msg, msg_len);
out:
    iova_unlock_all(d);
    return r;
}
