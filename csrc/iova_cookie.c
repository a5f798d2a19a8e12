/*
 * iova_cookie.c - the dma-iommu cookie: allocator types behind one PFN-based
 * alloc/free interface (the review's "move the abstraction up into the
 * alloc and free helpers"), and its flush queue.
 *
 * IOVA (mainline 6.12 and 6.1 rules): alloc_iova_fast, with the PCI "try
 * below 4 GiB first, without flushing the caches" attempt when asked (6.12
 * asks until it first fails, 6.1 every time: the caller decides); frees go
 * to free_iova_fast, at once (strict) or through the flush queue (lazy).
 * IOVA on a 4.10 domain: the 4.10/4.11 dma-iommu path, alloc_iova
 * (size-aligned, tree only; the 32-bit attempt on every call) and frees
 * straight to the tree.
 * MSI: a bump pointer. WRAPAROUND: iova_wrap.c. RESET_WHEN_EMPTY: the
 * rejected patch - alloc_iova as 4.10's dma-iommu did, frees only counted
 * (the range stays allocated in the domain, and the cookie remembers it as
 * retired), and when the count of mapped pfns reaches zero the retired
 * ranges go back to the domain and the domain is reset.
 *
 * The domain is the caller's, seen through iova.h only: what the cookie
 * knows of its ranges (which it handed out, which it retired) it keeps in
 * its own sets (pfn_set.c).
 *
 * Flush queue (mainline; the rings are iova_fq.c): queueing first retires
 * entries a finished flush covers; a full ring needs a flush (the caller
 * does it and calls iova_cookie_fq_flushed); the first entry arms a timer
 * whose expiry flushes and retires everything. The kernel trusts its
 * callers; here a lazy free is checked as the strict free would check it,
 * and refused if the range is queued already, because at retire time a
 * refusal can no longer reach anyone: the range would be lost, or freed
 * twice.
 *
 * Where the kernel does not look at the size of a free (the tree paths,
 * MSI), the cookie still refuses one that does not match the range: it
 * models a correct caller, and a wrong size would corrupt its counts (and,
 * for RESET_WHEN_EMPTY, trigger a reset with ranges still live).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iova_mem_internal.h"
#include "iova_cookie_internal.h"

/* ---- lifetime ----------------------------------------------------------- */

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
    if (!needs_domain && iova_granule_check(granule)) {
        *err = IOVA_E_GRANULE;
        return NULL;
    }
    if (!needs_domain && (end_pfn < start_pfn || end_pfn >= (IOVA_U64_MAX >> 1))) {
        *err = IOVA_E_RANGE;
        return NULL;
    }
    struct iova_state st;
    if (needs_domain) {
        int r = iova_get_state(iovad, &st);         /* the constants, even if closed */
        if (r && r != IOVA_E_CLOSED) {
            *err = r;
            return NULL;
        }
    }
    struct iova_cookie *c = iova_mem_calloc(1, sizeof(*c));
    if (!c) {
        *err = IOVA_E_NOMEM;
        return NULL;
    }
    pthread_mutex_init(&c->lock, NULL);
    c->type = type;
    c->iovad = iovad;
    if (needs_domain) {
        c->granule = st.granule;
        c->start_pfn = st.start_pfn;
        c->end_pfn = IOVA_U64_MAX >> st.shift;
        c->mainline = st.kernel != IOVA_KERNEL_4_10;
        c->dom_ncpus = st.ncpus;
        c->pfn_32 = 0xFFFFFFFFull >> st.shift;
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

void iova_cookie_destroy(struct iova_cookie *c)
{
    if (!c)
        return;
    if (c->type == IOVA_COOKIE_WRAPAROUND)
        iova_wrap_release(&c->wrap);
    iova_fq_destroy(c->fq);
    free(c->msi_starts);
    pfn_set_release(&c->live);
    pfn_set_release(&c->retired);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* ---- per type ----------------------------------------------------------- */

static int64_t alloc_iova_type(struct iova_cookie *c, uint64_t pages,
                               uint64_t limit_pfn, int flags, int cpu,
                               uint32_t *events)
{
    struct iova_domain *d = c->iovad;
    uint64_t low = c->pfn_32;
    int64_t r;
    if (iova_cookie_uses_tree(c)) {
        /* The tree alone, size-aligned, with the PCI 32-bit attempt: the
         * tree-only policy (mainline's sticky attempt, as the caller asks
         * for it) and 4.10/4.11 dma-iommu (the attempt on every call). */
        if ((flags & IOVA_COOKIE_TRY_32BIT) && limit_pfn > low) {
            r = iova_alloc(d, pages, low, 1);
            if (r != IOVA_E_NOSPC)
                return r;
            *events |= IOVA_EV_NO_32BIT;
        }
        return iova_alloc(d, pages, limit_pfn, 1);
    }
    if ((flags & IOVA_COOKIE_TRY_32BIT) && limit_pfn > low) {
        r = iova_rcache_alloc_fast(d, pages, low, 0, cpu);
        if (r != 0)
            return r;
        *events |= IOVA_EV_NO_32BIT;
    }
    r = iova_rcache_alloc_fast(d, pages, limit_pfn, 1, cpu);
    return r == 0 ? IOVA_E_NOSPC : r;
}

int iova_cookie_range_at(const struct iova_cookie *c, uint64_t pfn, uint64_t *size)
{
    uint64_t range[3];
    int found = iova_lookup(c->iovad, pfn, range);
    if (found < 0)
        return found;
    if (!found)
        return IOVA_E_NOTFOUND;
    if (range[0] != pfn)
        return IOVA_E_NOTSTART;
    *size = range[1] - range[0] + 1;
    return range[2] ? IOVA_E_CACHED : 0;
}

/* The pfns an allocation of `pages` takes: on the rcache path the size
 * alloc_iova_fast gives the range. Every size a free may name for that
 * range counts the same, so live_pfns cannot drift. */
static uint64_t counted_pages(const struct iova_cookie *c, uint64_t pages)
{
    if (c->type == IOVA_COOKIE_IOVA && !iova_cookie_uses_tree(c) && pages < FAST_ROUNDED_MAX)
        return roundup_pow_of_two(pages);
    return pages;
}

/* Whether the IOVA type's strict free of (pfn, pages) would be accepted
 * now, without doing it: the tree paths want the range's own size, the
 * rcache path a size of its class - or, beyond the cached classes, where
 * the class says nothing and dma-iommu passes the length it allocated
 * unrounded, the range's own size. The same codes as the frees return. */
static int check_iova_free(struct iova_cookie *c, uint64_t pfn, uint64_t pages)
{
    if (pfn > c->end_pfn)
        return IOVA_E_PFN;
    if (pages > c->end_pfn)
        return IOVA_E_FREE_SIZE;
    bool tree = iova_cookie_uses_tree(c);
    uint64_t size;
    int r = iova_cookie_range_at(c, pfn, &size);
    if (r)
        return r;
    if (!tree && !iova_cookie_same_class(size, pages))
        return IOVA_E_SIZECLASS;
    if ((tree || pages > FAST_ROUNDED_MAX) && size != pages)
        return IOVA_E_FREE_SIZE;
    return 0;
}

static int free_iova_type(struct iova_cookie *c, uint64_t pfn, uint64_t pages,
                          int cpu)
{
    struct iova_domain *d = c->iovad;
    if (iova_cookie_uses_tree(c)) {
        /* the kernel's tree free takes whatever node holds pfn; the cookie
         * wants the start and the size of what it handed out */
        int r = check_iova_free(c, pfn, pages);
        return r ? r : iova_free(d, pfn);
    }
    if (pages > FAST_ROUNDED_MAX) {
        int r = check_iova_free(c, pfn, pages);
        if (r)
            return r;
    }
    return iova_rcache_free_fast(d, pfn, pages, cpu);
}

static int64_t alloc_reset_type(struct iova_cookie *c, uint64_t pages,
                                uint64_t limit_pfn)
{
    return iova_alloc(c->iovad, pages, limit_pfn, 1);
}

/* The patch's reset: the domain's retired ranges go back to it, then the
 * domain drops its caches and resets its cache pointers. Ranges still held
 * (reserved regions) stay. c->lock held. */
static int reset_domain(struct iova_cookie *c)
{
    struct iova_domain *d = c->iovad;
    for (uint64_t i = 0; i < pfn_set_slots(&c->retired); i++) {
        uint64_t pfn = c->retired.slots[i];
        /* each starts a range the domain holds (the frees checked it);
         * only a closed domain can refuse */
        if (pfn != PFN_SET_EMPTY && iova_free(d, pfn) == IOVA_E_CLOSED)
            return IOVA_E_CLOSED;
    }
    pfn_set_clear(&c->retired);
    return iova_domain_reset(d);
}

/* The patch's free: count, never reuse; reset everything at zero. */
static int free_reset_type(struct iova_cookie *c, uint64_t pfn, uint64_t pages,
                           uint32_t *events)
{
    uint64_t size;
    int r = iova_cookie_range_at(c, pfn, &size);
    if (r == IOVA_E_CACHED || (!r && pfn_set_holds(&c->retired, pfn)))
        r = IOVA_E_NOT_LIVE;
    else if (!r && size != pages)
        r = IOVA_E_FREE_SIZE;                    /* a wrong count could reset too early */
    else if (!r && !pfn_set_holds(&c->live, pfn))
        r = IOVA_E_NOT_LIVE;                     /* not the cookie's: a reserved region */
    if (r)
        return r;
    pfn_set_add(&c->retired, pfn);               /* room was made when it was handed out */
    c->retired_pfns += pages;
    if (c->live_pfns == pages) {                 /* this free empties the space */
        r = reset_domain(c);
        if (r)
            return r;
        c->retired_pfns = 0;
        c->resets++;
        *events |= IOVA_EV_RESET;
    }
    return 0;
}

/* Remembers where an MSI allocation starts; c->lock held. */
static int msi_push(struct iova_cookie *c, uint64_t pfn)
{
    if (c->msi_depth == c->msi_cap) {
        uint64_t ncap = c->msi_cap ? 2 * c->msi_cap : 8;
        uint64_t *n = iova_mem_realloc(c->msi_starts, ncap * sizeof(*n));
        if (!n)
            return IOVA_E_NOMEM;
        c->msi_starts = n;
        c->msi_cap = ncap;
    }
    c->msi_starts[c->msi_depth++] = pfn;
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
    /* room to remember the range first: once allocated, it must be kept */
    bool tracked = c->type == IOVA_COOKIE_IOVA || c->type == IOVA_COOKIE_RESET_WHEN_EMPTY;
    if ((tracked && pfn_set_reserve(&c->live, 1)) ||
        (c->type == IOVA_COOKIE_RESET_WHEN_EMPTY &&
         pfn_set_reserve(&c->retired, c->live.count + 1))) {   /* its free retires it */
        pthread_mutex_unlock(&c->lock);
        return IOVA_E_NOMEM;
    }
    switch (c->type) {
    case IOVA_COOKIE_IOVA:
        r = alloc_iova_type(c, pages, limit_pfn, flags, cpu, &ev);
        break;
    case IOVA_COOKIE_MSI:
        /* no limit check and no reuse, as the kernel's MSI cookie */
        if (c->msi_next > IOVA_U64_MAX / 2 - pages) {
            r = IOVA_E_NOSPC;
        } else if (msi_push(c, c->msi_next)) {
            r = IOVA_E_NOMEM;
        } else {
            r = (int64_t)c->msi_next;
            c->msi_next += pages;
        }
        break;
    case IOVA_COOKIE_WRAPAROUND:
        if (limit_pfn < c->start_pfn) {
            r = IOVA_E_LIMIT;
        } else {
            bool wrapped = false;
            r = iova_wrap_alloc(&c->wrap, pages, limit_pfn, &wrapped);
            if (wrapped)
                ev |= IOVA_EV_FLUSH;             /* before the range is used */
        }
        break;
    default:
        r = alloc_reset_type(c, pages, limit_pfn);
        break;
    }
    if (r >= 0) {
        c->allocs++;
        c->live_ranges++;
        c->live_pfns += counted_pages(c, pages);
        /* already there only if the domain was changed behind the cookie;
         * check() then finds live_ranges and the set disagree */
        if (tracked && !pfn_set_holds(&c->live, (uint64_t)r))
            pfn_set_add(&c->live, (uint64_t)r);
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
    uint64_t counted = counted_pages(c, pages);
    if (c->fq && iova_fq_holds(c->fq, pfn)) {
        r = IOVA_E_QUEUED;              /* freed now, it would be freed again at its flush */
    } else if (pages == 0 || counted > c->live_pfns) {
        r = c->live_ranges ? IOVA_E_FREE_SIZE : IOVA_E_NOT_LIVE;
    } else {
        switch (c->type) {
        case IOVA_COOKIE_IOVA:
            if (pfn_set_holds(&c->live, pfn)) {
                r = free_iova_type(c, pfn, pages, cpu);
            } else {
                /* the domain's own reason if it has one, else: a range the
                 * cookie did not hand out (a reserved region, say) */
                r = check_iova_free(c, pfn, pages);
                if (!r)
                    r = IOVA_E_NOT_LIVE;
            }
            break;
        case IOVA_COOKIE_MSI:
            /* the kernel's undo only works for the latest allocation, whole */
            if (!c->msi_depth || pfn != c->msi_starts[c->msi_depth - 1]) {
                r = IOVA_E_NOT_LIVE;
            } else if (pfn + pages != c->msi_next) {
                r = IOVA_E_FREE_SIZE;
            } else {
                r = 0;
                c->msi_next = pfn;
                c->msi_depth--;
            }
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
        c->live_pfns -= counted;
        pfn_set_remove(&c->live, pfn);
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
    /* dma-iommu has had the flush queue since 5.17 (iova.c before that):
     * 6.12 and 6.1, not 4.10 */
    if (c->type != IOVA_COOKIE_IOVA || !c->mainline)
        return IOVA_E_COOKIE;
    if (ncpus < 1 || ring_size < 2 || ring_size > IOVA_FQ_MAX_SIZE)
        return IOVA_E_GEOMETRY;
    /* a ring retires into its own CPU's rcache: there must be one */
    if (ncpus > c->dom_ncpus)
        return IOVA_E_CPU;
    int r;
    struct iova_fq *fq = iova_fq_new(ncpus, ring_size, timeout_ms, &r);
    if (!fq)
        return r;
    pthread_mutex_lock(&c->lock);
    r = c->fq ? IOVA_E_COOKIE : 0;
    if (!r)
        c->fq = fq;
    pthread_mutex_unlock(&c->lock);
    if (r)
        iova_fq_destroy(fq);
    return r;
}

/* Retires, from the head, every entry of a ring that a finished flush
 * covers, into `cpu`'s rcache; c->lock held. Entries were checked when
 * queued, so a refusal here means the domain was changed behind the queue:
 * the entry is dropped and counted, and IOVA_E_FQ_LOST says so. A closed
 * domain keeps its entries (there is nothing left to free them into) and
 * returns IOVA_E_CLOSED. */
static int fq_retire(struct iova_cookie *c, unsigned ring, int cpu)
{
    struct iova_fq *fq = c->fq;
    const struct fq_entry *e;
    int ret = 0;
    while ((e = iova_fq_done(fq, ring)) != NULL) {
        int r = free_iova_type(c, e->pfn, e->pages, cpu);
        if (r == IOVA_E_CLOSED)
            return r;
        if (r) {
            fq->lost++;
            ret = IOVA_E_FQ_LOST;
        }
        iova_fq_pop(fq, ring);
    }
    return ret;
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
    unsigned ring = 0;
    if (!fq) {
        r = IOVA_E_COOKIE;
    } else if (cpu < -1 || (cpu >= 0 && (unsigned)cpu >= fq->ncpus)) {
        r = IOVA_E_CPU;
    } else {
        int me = cpu == -1 ? iova_rcache_current_cpu(c->iovad) : cpu;
        ring = me < 0 ? 0 : (unsigned)me % fq->ncpus;
        if (me < 0)
            r = me;
        else if (iova_fq_holds(fq, pfn))
            r = IOVA_E_QUEUED;
        else if (pages == 0 || counted_pages(c, pages) > c->live_pfns)
            r = IOVA_E_FREE_SIZE;
        else if ((r = check_iova_free(c, pfn, pages)) == 0 && !pfn_set_holds(&c->live, pfn))
            r = IOVA_E_NOT_LIVE;
    }
    if (!r) {
        r = fq_retire(c, ring, (int)ring);
        if (r) {
            /* reported, and this free not done: the caller may call again */
        } else if (iova_fq_full(fq, ring)) {
            r = IOVA_E_FQ_FULL;                  /* the caller flushes, then retries */
            ev |= IOVA_EV_FLUSH;
            fq->flushes++;
        } else {
            iova_fq_push(fq, ring, pfn, pages, now_ms);
            pfn_set_remove(&c->live, pfn);
            c->frees++;
            c->live_ranges--;
            c->live_pfns -= counted_pages(c, pages);
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
        iova_fq_flushed(fq);
        if (all_rings) {
            /* the timer: everything queued is now covered */
            fq->timer_armed = false;
            for (unsigned i = 0; i < fq->ncpus; i++) {
                int e = fq_retire(c, i, cpu);
                if (e && (!r || e == IOVA_E_CLOSED))
                    r = e;
            }
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

int iova_cookie_fq_rings(struct iova_cookie *c)
{
    if (!c)
        return IOVA_E_CLOSED;
    pthread_mutex_lock(&c->lock);
    int n = c->fq ? (int)c->fq->ncpus : 0;
    pthread_mutex_unlock(&c->lock);
    return n;
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
        /* nothing of the domain is reused before the reset: live, retired
         * and reserved ranges alike (0 once the domain is closed) */
        struct iova_state ds;
        st->held_pfns = iova_get_state(c->iovad, &ds) ? 0 : ds.used_pfns;
    }
    if (c->fq) {
        st->fq_queued = c->fq->queued;
        st->fq_flushes = c->fq->flushes;
        st->fq_started = c->fq->started;
        st->fq_finished = c->fq->finished;
        st->fq_lost = c->fq->lost;
    }
    pthread_mutex_unlock(&c->lock);
    return 0;
}

/* IOVA, RESET_WHEN_EMPTY: the ranges the cookie knows of in its domain (C1,
 * C2 at iova_cookie_check). `set` holds where they start; each must start
 * an allocated (uncached) range of the domain and none may be in `other`;
 * together they cover at least `pfns` pages (a reserve may widen a range in
 * place, never shrink it). 0 or IOVA_E_CORRUPT with msg. c->lock held. */
static int check_ranges(struct iova_cookie *c, const struct pfn_set *set,
                        const struct pfn_set *other, uint64_t pfns, const char *what,
                        char *msg, size_t msg_len)
{
    uint64_t covered = 0;
    for (uint64_t i = 0; i < pfn_set_slots(set); i++) {
        uint64_t pfn = set->slots[i], size;
        if (pfn == PFN_SET_EMPTY)
            continue;
        int r = iova_cookie_range_at(c, pfn, &size);
        if (r == IOVA_E_CLOSED)
            return r;
        if (r || pfn_set_holds(other, pfn)) {
            if (msg && msg_len)
                snprintf(msg, msg_len, "cookie: the %s range at pfn %#llx is not an "
                         "allocated range of the domain, or is both live and retired",
                         what, (unsigned long long)pfn);
            return IOVA_E_CORRUPT;
        }
        covered = covered > UINT64_MAX - size ? UINT64_MAX : covered + size;
    }
    if (covered < pfns) {
        if (msg && msg_len)
            snprintf(msg, msg_len, "cookie: the %s ranges hold fewer pfns than it counts",
                     what);
        return IOVA_E_CORRUPT;
    }
    return 0;
}

/*
 * Invariants (iova_cookie_check), beside those of the domain, the
 * wraparound allocator, the sets and the flush queue:
 *   C1  IOVA, RESET_WHEN_EMPTY: the live set holds live_ranges starts of
 *       allocated ranges of the domain, at least live_pfns pages long;
 *   C2  RESET_WHEN_EMPTY: the retired set holds starts of allocated ranges,
 *       none live, at least retired_pfns pages long;
 *   C3  WRAPAROUND: the live pfns are what the tree holds besides retired
 *       and reserved ranges and the sentinel;
 *   C4  MSI: the undo stack holds live_ranges starts in ascending order,
 *       below the bump pointer, which lies at least live_pfns above
 *       start_pfn.
 */
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
        /* every node but the sentinel is live, retired or reserved */
        uint64_t live = c->wrap.tree.pfns - 1 - c->wrap.retired_pfns - c->wrap.reserved_pfns;
        if (!r && live != c->live_pfns)
            why = "live pfns disagree with the tree (C3)";
    } else if (c->type == IOVA_COOKIE_MSI) {
        if (c->msi_next < c->start_pfn + c->live_pfns)
            why = "the bump pointer is below what is live (C4)";
        else if (c->msi_depth != c->live_ranges)
            why = "the MSI undo stack disagrees with the live ranges (C4)";
        for (uint64_t i = 1; !why && i < c->msi_depth; i++)
            if (c->msi_starts[i] <= c->msi_starts[i - 1])
                why = "the MSI undo stack is out of order (C4)";
        if (!why && c->msi_depth && c->msi_starts[c->msi_depth - 1] >= c->msi_next)
            why = "the latest MSI allocation starts at the bump pointer (C4)";
    } else {
        r = iova_check(c->iovad, msg, msg_len);
        if (!r)
            r = pfn_set_check(&c->live, msg, msg_len);
        if (!r)
            r = pfn_set_check(&c->retired, msg, msg_len);
        if (!r && c->live.count != c->live_ranges)
            why = "the set of live ranges disagrees with their count (C1)";
        if (!r && !why)
            r = check_ranges(c, &c->live, &c->retired, c->live_pfns, "live (C1)", msg,
                             msg_len);
        if (!r && !why)
            r = check_ranges(c, &c->retired, &c->live, c->retired_pfns, "retired (C2)", msg,
                             msg_len);
    }
    if (!r && !why && c->fq)
        r = iova_fq_check(c->fq, msg, msg_len);
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
            out[3 * k + 2] = (iova_flags(t, x) & WRAP_NODE_RETIRED) != 0;
        }
        k++;
    }
    pthread_mutex_unlock(&c->lock);
    return (int64_t)k;
}
