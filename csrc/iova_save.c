/*
 * iova_save.c - a domain as a flat array of uint64_t words, and back.
 *
 * Everything that decides future answers is saved: the ranges (with their
 * CACHED flags), which nodes the cache pointers name, max32_alloc_size,
 * every magazine's pfns in order, the depot stack, the trim work and the
 * simulated clock. A restored domain therefore makes the same allocations
 * as the original. The tree's shape is not saved: results never depend on
 * it.
 *
 * Layout (version 1):
 *   magic, version, kernel, granule, start_pfn, ncpus, dma_32bit_pfn,
 *   search_mode, max32_alloc_size, clock_ms,
 *   cached_lo, has_cached32, cached32_lo,
 *   nranges, then per range (anchor excluded): lo, hi, flags
 *   per size class: per cpu: loaded count + pfns, prev count + pfns;
 *                   depot length, per magazine: count + pfns;
 *                   work_pending, work_due_ms
 * Restoring checks every word it reads (a magazine's pfns against the
 * ranges read before them) and then runs the full validator, so corrupt
 * input yields IOVA_E_STATE, never a broken domain.
 */
#include <stdlib.h>
#include <string.h>

#include "iova_mem_internal.h"
#include "save_words.h"
#include "iova_internal.h"

#define SAVE_MAGIC   0x7079696f76610001ull   /* "pyiova" + format family */
#define SAVE_VERSION 1

static void put_mag(struct words_writer *w, const struct iova_magazine *m)
{
    words_put(w, m->count);
    for (uint32_t i = 0; i < m->count; i++)
        words_put(w, m->pfns[i]);
}

int64_t iova_save(struct iova_domain *d, uint64_t *out, uint64_t cap)
{
    if (!d)
        return IOVA_E_CLOSED;
    struct words_writer w = words_writer(out, cap);
    iova_lock_all(d);
    if (d->closed) {
        iova_unlock_all(d);
        return IOVA_E_CLOSED;
    }
    const struct iova_tree *t = &d->tree;
    words_put(&w, SAVE_MAGIC);
    words_put(&w, SAVE_VERSION);
    words_put(&w, (uint64_t)d->kernel);
    words_put(&w, d->granule);
    words_put(&w, d->start_pfn);
    words_put(&w, d->ncpus);
    words_put(&w, d->dma_32bit_pfn);
    words_put(&w, (uint64_t)d->search_mode);
    words_put(&w, d->max32_alloc_size);
    words_put(&w, d->clock_ms);
    words_put(&w, d->cached_node == IOVA_NIL ? 0 : t->nodes[d->cached_node].lo);
    words_put(&w, d->cached32_node != IOVA_NIL);
    words_put(&w, d->cached32_node == IOVA_NIL ? 0 : t->nodes[d->cached32_node].lo);
    words_put(&w, t->count - (d->anchor != IOVA_NIL));
    for (uint32_t x = iova_tree_first(t); x != IOVA_NIL; x = iova_tree_next(t, x)) {
        if (x == d->anchor)
            continue;
        words_put(&w, t->nodes[x].lo);
        words_put(&w, t->nodes[x].hi);
        words_put(&w, iova_flags(t, x) & IOVA_NODE_CACHED);
    }
    for (unsigned k = 0; k < IOVA_RANGE_CACHE_MAX_SIZE; k++) {
        for (unsigned cpu = 0; cpu < d->ncpus; cpu++) {
            const struct iova_cpu_rcache *c = &d->cpu_rc[k * d->ncpus + cpu];
            put_mag(&w, c->loaded);
            put_mag(&w, c->prev);
        }
        const struct iova_depot *dp = &d->depot[k];
        words_put(&w, dp->len);
        for (uint64_t j = 0; j < dp->len; j++)
            put_mag(&w, dp->mags[j]);
        words_put(&w, dp->work_pending);
        words_put(&w, dp->work_due_ms);
    }
    iova_unlock_all(d);
    return (int64_t)w.n;
}

/* Reads a magazine of size class k. Each pfn must be what free_fast could
 * have cached there: the start of a range flagged CACHED, of class k. The validator would take a pfn inside
 * a cached range, or a range of another class, and alloc_fast would then
 * hand out a pfn that starts nothing, or the wrong number of pages. */
static bool get_mag(struct words_reader *r, const struct iova_domain *d, unsigned k,
                    struct iova_magazine *m)
{
    const struct iova_tree *t = &d->tree;
    uint64_t count = words_get(r);
    if (r->bad || count > d->mag_size)
        return false;
    m->count = 0;
    for (uint32_t i = 0; i < (uint32_t)count; i++) {
        uint64_t pfn = words_get(r);
        uint32_t x = r->bad ? IOVA_NIL : iova_tree_find((struct iova_tree *)t, pfn);
        if (x == IOVA_NIL || x == d->anchor || t->nodes[x].lo != pfn ||
            !(iova_flags(t, x) & IOVA_NODE_CACHED) ||
            order_base_2(t->nodes[x].hi - t->nodes[x].lo + 1) != k)
            return false;
        m->pfns[i] = pfn;
        m->nodes[i] = x;
        m->count = i + 1;
    }
    return true;
}

static int restore_into(struct iova_domain *d, struct words_reader *r,
                        uint64_t cached_lo, bool has32, uint64_t cached32_lo)
{
    struct iova_tree *t = &d->tree;
    uint64_t nranges = words_get(r);
    if (r->bad || nranges > IOVA_MAX_NODES)
        return IOVA_E_STATE;
    bool have_prev = false;
    uint64_t prev_hi = 0;
    for (uint64_t i = 0; i < nranges; i++) {
        uint64_t lo = words_get(r), hi = words_get(r), flags = words_get(r);
        if (r->bad || lo > hi || hi > d->max_pfn || (have_prev && lo <= prev_hi) ||
            (flags & ~(uint64_t)IOVA_NODE_CACHED))
            return IOVA_E_STATE;
        uint32_t x = iova_tree_node_new(t, lo, hi);
        if (x == IOVA_NIL)
            return IOVA_E_NOMEM;
        iova_tree_insert(t, x);
        if (flags) {
            iova_set_flag(t, x, IOVA_NODE_CACHED);
            d->cached_ranges++;
        }
        have_prev = true;
        prev_hi = hi;
    }
    /* The cache pointers name nodes; ranges start at distinct pfns. */
    if (iova_mainline_tree(d)) {
        uint32_t c = iova_tree_find(t, cached_lo), c32 = iova_tree_find(t, cached32_lo);
        if (c == IOVA_NIL || c32 == IOVA_NIL || t->nodes[c].lo != cached_lo ||
            t->nodes[c32].lo != cached32_lo || !has32)
            return IOVA_E_STATE;
        d->cached_node = c;
        d->cached32_node = c32;
    } else if (has32) {
        uint32_t c32 = iova_tree_find(t, cached32_lo);
        if (c32 == IOVA_NIL || t->nodes[c32].lo != cached32_lo)
            return IOVA_E_STATE;
        d->cached32_node = c32;
    }
    for (unsigned k = 0; k < IOVA_RANGE_CACHE_MAX_SIZE; k++) {
        for (unsigned cpu = 0; cpu < d->ncpus; cpu++) {
            struct iova_cpu_rcache *c = &d->cpu_rc[k * d->ncpus + cpu];
            if (!get_mag(r, d, k, c->loaded) || !get_mag(r, d, k, c->prev))
                return IOVA_E_STATE;
        }
        struct iova_depot *dp = &d->depot[k];
        uint64_t len = words_get(r);
        if (r->bad || len > d->depot_max || len > (r->n - r->pos))
            return IOVA_E_STATE;
        for (uint64_t j = 0; j < len; j++) {
            struct iova_magazine *m = iova_rcache_mag_alloc(d);
            if (!m)
                return IOVA_E_NOMEM;
            if (!get_mag(r, d, k, m) || m->count != d->mag_size) {
                free(m);
                return IOVA_E_STATE;
            }
            if (iova_rcache_depot_push(dp, m) != 0) {
                free(m);
                return IOVA_E_NOMEM;
            }
        }
        dp->work_pending = words_get(r) != 0;
        dp->work_due_ms = words_get(r);
    }
    if (r->bad || r->pos != r->n)
        return IOVA_E_STATE;
    return 0;
}

struct iova_domain *iova_restore(const uint64_t *in, uint64_t n, int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    struct words_reader r = words_reader(in, n);
    uint64_t magic = words_get(&r), version = words_get(&r), kernel = words_get(&r), granule = words_get(&r);
    uint64_t start = words_get(&r), ncpus = words_get(&r), dma32 = words_get(&r), mode = words_get(&r);
    uint64_t max32 = words_get(&r), clock = words_get(&r);
    uint64_t cached_lo = words_get(&r), has32 = words_get(&r), cached32_lo = words_get(&r);
    if (r.bad || magic != SAVE_MAGIC || version != SAVE_VERSION || ncpus > IOVA_MAX_CPUS ||
        (kernel != IOVA_KERNEL_6_12 && kernel != IOVA_KERNEL_6_1 &&
         kernel != IOVA_KERNEL_4_10) ||
        (mode != IOVA_SEARCH_AUGMENTED && mode != IOVA_SEARCH_LINEAR)) {
        *err = IOVA_E_STATE;
        return NULL;
    }
    struct iova_domain *d = iova_domain_new(granule, start, (unsigned)ncpus, (int)kernel,
                                            kernel == IOVA_KERNEL_4_10 ? dma32 : 0, err);
    if (!d) {
        if (*err != IOVA_E_NOMEM)
            *err = IOVA_E_STATE;
        return NULL;
    }
    if (d->dma_32bit_pfn != dma32 || (iova_mainline_tree(d) && max32 == 0)) {
        iova_domain_destroy(d);
        *err = IOVA_E_STATE;
        return NULL;
    }
    d->search_mode = (int)mode;
    d->max32_alloc_size = max32;
    d->clock_ms = clock;
    int rc = restore_into(d, &r, cached_lo, has32 != 0, cached32_lo);
    if (!rc) {
        /* Last line of defence: whatever the words said, the result must
         * satisfy every invariant the validator knows. */
        rc = iova_check(d, NULL, 0);
        if (rc && rc != IOVA_E_NOMEM)
            rc = IOVA_E_STATE;
    }
    if (rc) {
        iova_domain_destroy(d);
        *err = rc;
        return NULL;
    }
    *err = 0;
    return d;
}
