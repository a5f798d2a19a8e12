/*
 * iova_cookie.c - the dma-iommu cookie: allocator types behind one PFN-based
 * alloc/free interface (the review's "move the abstraction up into the
 * alloc and free helpers"), and the flush queue.
 *
 * IOVA (mainline 6.12 rules): alloc_iova_fast, with the PCI "try below
 * 4 GiB first, without flushing the caches" attempt when asked; frees go
 * to free_iova_fast, at once (strict) or through the flush queue (lazy).
 * IOVA on a 4.10 domain: the 4.10/4.11 dma-iommu path, alloc_iova
 * (size-aligned, tree only; the 32-bit attempt on every call) and frees
 * straight to the tree.
 * MSI: a bump pointer. WRAPAROUND: iova_wrap.c. RESET_WHEN_EMPTY: the
 * rejected patch - alloc_iova as 4.10's dma-iommu did, frees only counted,
 * and the whole domain reset when the count of mapped pfns reaches zero.
 *
 * Flush queue (mainline): per-CPU rings; queueing first retires entries a
 * finished flush covers; a full ring needs a flush (the caller does it and
 * calls iova_cookie_fq_flushed); the first entry arms a timer whose expiry
 * flushes and retires everything.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iova_mem_internal.h"
#include "iova_cookie_internal.h"

#define U32_PFN(d) (0xFFFFFFFFull >> (d)->shift)

struct iova_cookie *iova_cookie_new(int type, struct iova_domain *iovad,
                                    uint64_t granule, uint64_t start_pfn,
                                    uint64_t end_pfn, int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    bool needs_domain = type == IOVA_COOKIE_IOVA || type == IOVA_COOKIE_RESET_WHEN_EMPTY;
    if (type < IOVA_COOKIE_IOVA || type > IOVA_COOKIE_RESET_WHEN_EMPTY ||
        (needs_domain && !iovad)) {
        *err = IOVA_E_COOKIE;
        return NULL;
    }
    if (!needs_domain && (granule < 2 || (granule & (granule - 1)) ||
                          end_pfn < start_pfn || end_pfn >= (IOVA_U64_MAX >> 1))) {
        *err = IOVA_E_RANGE;
        return NULL;
    }
    struct iova_cookie *c = iova_calloc(1, sizeof(*c));
    if (!c) {
        *err = IOVA_E_NOMEM;
        return NULL;
    }
    pthread_mutex_init(&c->lock, NULL);
    c->type = type;
    c->iovad = iovad;
    if (needs_domain) {
        c->granule = iovad->granule;
        c->start_pfn = iovad->start_pfn;
        c->end_pfn = iovad->max_pfn;
    } else {
        c->granule = granule;
        c->start_pfn = c->msi_next = start_pfn;
        c->end_pfn = end_pfn;
    }
    if (type == IOVA_COOKIE_WRAPAROUND && iova_wrap_init(&c->wrap, start_pfn, end_pfn)) {
        iova_cookie_destroy(c);
        *err = IOVA_E_NOMEM;
        return NULL;
    }
    *err = 0;
    return c;
}

static void fq_release(struct iova_fq *fq)
{
    if (!fq)
        return;
    if (fq->rings)
        for (unsigned i = 0; i < fq->ncpus; i++)
            free(fq->rings[i].entries);
    free(fq->rings);
    free(fq);
}

void iova_cookie_destroy(struct iova_cookie *c)
{
    if (!c)
        return;
    if (c->type == IOVA_COOKIE_WRAPAROUND)
        iova_wrap_release(&c->wrap);
    fq_release(c->fq);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* ---- per type ----------------------------------------------------------- */

static int64_t alloc_iova_type(struct iova_cookie *c, uint64_t pages,
                               uint64_t limit_pfn, int flags, int cpu,
                               uint32_t *events)
{
    struct iova_domain *d = c->iovad;
    uint64_t low = U32_PFN(d);
    int64_t r;
    if (c->tree_only) {
        /* the tree alone, with mainline's sticky 32-bit-first attempt */
        if ((flags & IOVA_COOKIE_TRY_32BIT) && limit_pfn > low) {
            r = iova_alloc(d, pages, low, 1);
            if (r != IOVA_E_NOSPC)
                return r;
            *events |= IOVA_EV_NO_32BIT;
        }
        return iova_alloc(d, pages, limit_pfn, 1);
    }
    if (d->kernel == IOVA_KERNEL_4_10) {
        /* 4.10/4.11 dma-iommu: the tree only, size-aligned, and the PCI
         * 32-bit attempt on every call. */
        if ((flags & IOVA_COOKIE_TRY_32BIT) && limit_pfn > low) {
            r = iova_alloc(d, pages, low, 1);
            if (r != IOVA_E_NOSPC)
                return r;
            *events |= IOVA_EV_NO_32BIT;
        }
        return iova_alloc(d, pages, limit_pfn, 1);
    }
    if ((flags & IOVA_COOKIE_TRY_32BIT) && limit_pfn > low) {
        r = iova_alloc_fast(d, pages, low, 0, cpu);
        if (r != 0)
            return r;
        *events |= IOVA_EV_NO_32BIT;
    }
    r = iova_alloc_fast(d, pages, limit_pfn, 1, cpu);
    return r == 0 ? IOVA_E_NOSPC : r;
}

static int free_iova_type(struct iova_cookie *c, uint64_t pfn, uint64_t pages,
                          int cpu)
{
    struct iova_domain *d = c->iovad;
    if (d->kernel == IOVA_KERNEL_4_10 || c->tree_only) {
        uint64_t lo_hi[2];
        int r = iova_find(d, pfn, lo_hi);
        if (r <= 0)
            return r < 0 ? r : IOVA_E_NOTFOUND;
        if (lo_hi[0] != pfn)
            return IOVA_E_NOTSTART;
        return iova_free(d, pfn);
    }
    return iova_free_fast(d, pfn, pages, cpu);
}

static int64_t alloc_reset_type(struct iova_cookie *c, uint64_t pages,
                                uint64_t limit_pfn)
{
    return iova_alloc(c->iovad, pages, limit_pfn, 1);
}

/* The patch's free: count, never reuse; reset everything at zero. */
static int free_reset_type(struct iova_cookie *c, uint64_t pfn, uint64_t pages,
                           uint32_t *events)
{
    struct iova_domain *d = c->iovad;
    pthread_mutex_lock(&d->tree_lock);
    int r = 0;
    uint32_t x = d->closed ? IOVA_NIL : iova_tree_find(&d->tree, pfn);
    if (d->closed)
        r = IOVA_E_CLOSED;
    else if (x == IOVA_NIL || x == d->anchor)
        r = IOVA_E_NOTFOUND;
    else if (d->tree.nodes[x].lo != pfn)
        r = IOVA_E_NOTSTART;
    else if (iova_flags(&d->tree, x) & IOVA_NODE_RETIRED)
        r = IOVA_E_NOT_LIVE;
    else
        iova_set_flag(&d->tree, x, IOVA_NODE_RETIRED);
    pthread_mutex_unlock(&d->tree_lock);
    if (r)
        return r;
    c->retired_pfns += pages;
    if (c->live_pfns == pages) {                 /* this free empties the space */
        r = iova_domain_reset(d);
        if (r)
            return r;
        c->retired_pfns = 0;
        c->resets++;
        *events |= IOVA_EV_RESET;
    }
    return 0;
}

/* ---- the interface ------------------------------------------------------ */

int64_t iova_cookie_alloc(struct iova_cookie *c, uint64_t pages,
                          uint64_t limit_pfn, int flags, int cpu,
                          uint32_t *events)
{
    uint32_t ev = 0;
    if (!c)
        return IOVA_E_CLOSED;
    if (pages == 0 || pages > (IOVA_U64_MAX >> 2))
        return IOVA_E_SIZE;                      /* beyond any space: keeps sums exact */
    int64_t r;
    pthread_mutex_lock(&c->lock);
    switch (c->type) {
    case IOVA_COOKIE_IOVA:
        r = alloc_iova_type(c, pages, limit_pfn, flags, cpu, &ev);
        break;
    case IOVA_COOKIE_MSI:
        /* no limit check and no reuse, as the kernel's MSI cookie */
        if (c->msi_next > IOVA_U64_MAX / 2 - pages) {
            r = IOVA_E_NOSPC;
        } else {
            r = (int64_t)c->msi_next;
            c->msi_next += pages;
        }
        break;
    case IOVA_COOKIE_WRAPAROUND:
        r = limit_pfn < c->start_pfn ? IOVA_E_LIMIT
                                     : iova_wrap_alloc(&c->wrap, pages, limit_pfn, &ev);
        break;
    default:
        r = alloc_reset_type(c, pages, limit_pfn);
        break;
    }
    if (r >= 0) {
        c->allocs++;
        c->live_ranges++;
        c->live_pfns += pages;
    } else if (r == IOVA_E_NOSPC) {
        c->failures++;
    }
    pthread_mutex_unlock(&c->lock);
    if (events)
        *events = ev;
    return r;
}

int iova_cookie_free(struct iova_cookie *c, uint64_t pfn, uint64_t pages,
                     int cpu, uint32_t *events)
{
    uint32_t ev = 0;
    if (!c)
        return IOVA_E_CLOSED;
    int r;
    pthread_mutex_lock(&c->lock);
    if (pages == 0 || pages > c->live_pfns) {
        r = c->live_ranges ? IOVA_E_SIZE : IOVA_E_NOT_LIVE;
    } else {
        switch (c->type) {
        case IOVA_COOKIE_IOVA:
            r = free_iova_type(c, pfn, pages, cpu);
            break;
        case IOVA_COOKIE_MSI:
            /* only right for undoing the latest allocation, as in the kernel */
            r = pfn + pages == c->msi_next ? 0 : IOVA_E_NOT_LIVE;
            if (!r)
                c->msi_next -= pages;
            break;
        case IOVA_COOKIE_WRAPAROUND:
            r = iova_wrap_free(&c->wrap, pfn, pages);
            break;
        default:
            r = free_reset_type(c, pfn, pages, &ev);
            break;
        }
    }
    if (!r) {
        c->frees++;
        c->live_ranges--;
        c->live_pfns -= pages;
    }
    pthread_mutex_unlock(&c->lock);
    if (events)
        *events = ev;
    return r;
}

int iova_cookie_reserve(struct iova_cookie *c, uint64_t lo, uint64_t hi)
{
    if (!c)
        return IOVA_E_CLOSED;
    if (c->type != IOVA_COOKIE_WRAPAROUND)
        return IOVA_E_COOKIE;
    pthread_mutex_lock(&c->lock);
    int r = iova_wrap_reserve(&c->wrap, lo, hi);
    pthread_mutex_unlock(&c->lock);
    return r;
}

int iova_cookie_set_tree_only(struct iova_cookie *c, int tree_only)
{
    if (!c)
        return IOVA_E_CLOSED;
    if (c->type != IOVA_COOKIE_IOVA)
        return IOVA_E_COOKIE;
    pthread_mutex_lock(&c->lock);
    /* switching with ranges live would strand them in the wrong place */
    int r = c->live_ranges || c->fq ? IOVA_E_COOKIE : 0;
    if (!r)
        c->tree_only = tree_only != 0;
    pthread_mutex_unlock(&c->lock);
    return r;
}

/* ---- flush queue -------------------------------------------------------- */

int iova_cookie_fq_init(struct iova_cookie *c, unsigned ncpus,
                        unsigned ring_size, uint64_t timeout_ms)
{
    if (!c)
        return IOVA_E_CLOSED;
    if (c->type != IOVA_COOKIE_IOVA || c->iovad->kernel != IOVA_KERNEL_6_12)
        return IOVA_E_COOKIE;
    if (ncpus < 1 || ncpus > IOVA_MAX_CPUS || ring_size < 1 || ring_size > (1u << 20))
        return IOVA_E_RANGE;
    struct iova_fq *fq = iova_calloc(1, sizeof(*fq));
    if (!fq)
        return IOVA_E_NOMEM;
    fq->ncpus = ncpus;
    fq->size = ring_size;
    fq->timeout_ms = timeout_ms;
    fq->rings = iova_calloc(ncpus, sizeof(*fq->rings));
    if (!fq->rings) {
        fq_release(fq);
        return IOVA_E_NOMEM;
    }
    for (unsigned i = 0; i < ncpus; i++) {
        fq->rings[i].entries = iova_calloc(ring_size, sizeof(struct fq_entry));
        if (!fq->rings[i].entries) {
            fq_release(fq);
            return IOVA_E_NOMEM;
        }
    }
    pthread_mutex_lock(&c->lock);
    int r = c->fq ? IOVA_E_COOKIE : 0;
    if (!r)
        c->fq = fq;
    pthread_mutex_unlock(&c->lock);
    if (r)
        fq_release(fq);
    return r;
}

/* Retires, from the head, every entry a finished flush covers. c->lock held. */
static void fq_retire(struct iova_cookie *c, struct fq_ring *ring, int cpu)
{
    struct iova_fq *fq = c->fq;
    while (ring->count && ring->entries[ring->head].counter < fq->finished) {
        struct fq_entry *e = &ring->entries[ring->head];
        iova_free_fast(c->iovad, e->pfn, e->pages, cpu);
        ring->head = (ring->head + 1) % fq->size;
        ring->count--;
        fq->queued--;
    }
}

int iova_cookie_free_lazy(struct iova_cookie *c, uint64_t pfn, uint64_t pages,
                          int cpu, uint64_t now_ms, uint32_t *events)
{
    uint32_t ev = 0;
    if (!c)
        return IOVA_E_CLOSED;
    pthread_mutex_lock(&c->lock);
    struct iova_fq *fq = c->fq;
    int r = 0;
    unsigned slot = cpu < 0 ? (unsigned)iova_current_cpu(c->iovad) : (unsigned)cpu;
    if (!fq) {
        r = IOVA_E_COOKIE;
    } else if (slot >= fq->ncpus) {
        r = IOVA_E_CPU;
    } else if (pages == 0 || pages > c->live_pfns) {
        r = IOVA_E_SIZE;
    } else {
        /* the range must be live: the same checks free_iova_fast makes */
        uint64_t lo_hi[2];
        int f = iova_find(c->iovad, pfn, lo_hi);
        if (f < 0)
            r = f;
        else if (!f)
            r = IOVA_E_NOTFOUND;
        else if (lo_hi[0] != pfn)
            r = IOVA_E_NOTSTART;
    }
    if (!r) {
        struct fq_ring *ring = &fq->rings[slot];
        fq_retire(c, ring, (int)slot);
        if (ring->count == fq->size) {
            r = IOVA_E_FQ_FULL;                  /* the caller flushes, then retries */
            ev |= IOVA_EV_FLUSH;
            fq->flushes++;
        } else {
            struct fq_entry *e = &ring->entries[(ring->head + ring->count) % fq->size];
            e->pfn = pfn;
            e->pages = pages;
            e->counter = fq->started;
            ring->count++;
            fq->queued++;
            if (!fq->timer_armed) {
                fq->timer_armed = true;
                fq->timer_due_ms = now_ms + fq->timeout_ms;
            }
            c->frees++;
            c->live_ranges--;
            c->live_pfns -= pages;
            ev |= IOVA_EV_QUEUED;
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (events)
        *events = ev;
    return r;
}

int iova_cookie_fq_flushed(struct iova_cookie *c, int all_rings, int cpu)
{
    if (!c)
        return IOVA_E_CLOSED;
    pthread_mutex_lock(&c->lock);
    struct iova_fq *fq = c->fq;
    int r = fq ? 0 : IOVA_E_COOKIE;
    if (fq && all_rings && (cpu < 0 || (unsigned)cpu >= fq->ncpus))
        r = IOVA_E_CPU;
    if (!r) {
        fq->started++;
        fq->finished++;
        if (all_rings) {
            /* the timer: everything queued is now covered */
            fq->timer_armed = false;
            for (unsigned i = 0; i < fq->ncpus; i++)
                fq_retire(c, &fq->rings[i], cpu);
        }
    }
    pthread_mutex_unlock(&c->lock);
    return r;
}

uint64_t iova_cookie_fq_due(struct iova_cookie *c)
{
    if (!c)
        return UINT64_MAX;
    pthread_mutex_lock(&c->lock);
    uint64_t due = c->fq && c->fq->timer_armed ? c->fq->timer_due_ms : UINT64_MAX;
    pthread_mutex_unlock(&c->lock);
    return due;
}

/* ---- introspection ------------------------------------------------------ */

int iova_cookie_get_stats(struct iova_cookie *c, struct iova_cookie_stats *st)
{
    if (!c)
        return IOVA_E_CLOSED;
    memset(st, 0, sizeof(*st));
    pthread_mutex_lock(&c->lock);
    st->type = c->type;
    st->start_pfn = c->start_pfn;
    st->end_pfn = c->end_pfn;
    st->allocs = c->allocs;
    st->frees = c->frees;
    st->failures = c->failures;
    st->live_ranges = c->live_ranges;
    st->live_pfns = c->live_pfns;
    st->held_pfns = c->live_pfns;
    st->resets = c->resets;
    if (c->type == IOVA_COOKIE_WRAPAROUND) {
        st->cursor = c->wrap.cursor;
        st->wraps = c->wrap.wraps;
        st->held_pfns += c->wrap.retired_pfns + c->wrap.reserved_pfns;
    } else if (c->type == IOVA_COOKIE_MSI) {
        st->cursor = c->msi_next;
    } else if (c->type == IOVA_COOKIE_RESET_WHEN_EMPTY) {
        st->held_pfns += c->retired_pfns;
    }
    if (c->fq) {
        st->fq_queued = c->fq->queued;
        st->fq_flushes = c->fq->flushes;
        st->fq_started = c->fq->started;
        st->fq_finished = c->fq->finished;
    }
    pthread_mutex_unlock(&c->lock);
    return 0;
}

int iova_cookie_check(struct iova_cookie *c, char *msg, size_t msg_len)
{
    if (!c)
        return IOVA_E_CLOSED;
    if (msg && msg_len)
        msg[0] = 0;
    pthread_mutex_lock(&c->lock);
    int r = 0;
    const char *why = NULL;
    if (c->type == IOVA_COOKIE_WRAPAROUND) {
        r = iova_wrap_check(&c->wrap, msg, msg_len);
        /* every node but the sentinel is live or retired */
        uint64_t live = c->wrap.tree.pfns - 1 - c->wrap.retired_pfns - c->wrap.reserved_pfns;
        if (!r && live != c->live_pfns)
            why = "live pfns disagree with the tree";
    } else if (c->type == IOVA_COOKIE_MSI) {
        if (c->msi_next < c->start_pfn + c->live_pfns)
            why = "the bump pointer is below what is live";
    } else {
        r = iova_check(c->iovad, msg, msg_len);
        if (!r && c->type == IOVA_COOKIE_RESET_WHEN_EMPTY &&
            c->iovad->tree.pfns != c->live_pfns + c->retired_pfns)
            why = "mapped + retired pfns disagree with the tree";
    }
    if (c->fq) {
        uint64_t queued = 0;
        for (unsigned i = 0; i < c->fq->ncpus; i++)
            queued += c->fq->rings[i].count;
        if (queued != c->fq->queued || c->fq->finished > c->fq->started)
            why = "the flush queue's counts disagree";
    }
    if (!r && why) {
        r = IOVA_E_CORRUPT;
        if (msg && msg_len)
            snprintf(msg, msg_len, "cookie: %s", why);
    }
    pthread_mutex_unlock(&c->lock);
    return r;
}

int64_t iova_cookie_wrap_ranges(struct iova_cookie *c, uint64_t *out,
                                uint64_t cap)
{
    if (!c)
        return IOVA_E_CLOSED;
    if (c->type != IOVA_COOKIE_WRAPAROUND)
        return IOVA_E_COOKIE;
    pthread_mutex_lock(&c->lock);
    const struct iova_tree *t = &c->wrap.tree;
    uint64_t k = 0;
    for (uint32_t x = iova_tree_first(t); x != c->wrap.sentinel; x = iova_tree_next(t, x)) {
        if (k < cap) {
            out[3 * k] = t->nodes[x].lo;
            out[3 * k + 1] = t->nodes[x].hi;
            out[3 * k + 2] = (iova_flags(t, x) & IOVA_NODE_RETIRED) != 0;
        }
        k++;
    }
    pthread_mutex_unlock(&c->lock);
    return (int64_t)k;
}
