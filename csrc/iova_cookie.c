/*
 * iova_cookie.c - the dma-iommu cookie: allocator types behind one PFN-based
 * alloc/free interface (the review's "move the abstraction up into the
 * alloc and free helpers"), and the flush queue.
 *
 * IOVA (mainline 6.12 and 6.1 rules): alloc_iova_fast, with the PCI "try
 * below 4 GiB first, without flushing the caches" attempt when asked (6.12
 * asks until it first fails, 6.1 every time: the caller decides); frees go
 * to free_iova_fast, at once (strict) or through the flush queue (lazy).
 * IOVA on a 4.10 domain: the 4.10/4.11 dma-iommu path, alloc_iova
 * (size-aligned, tree only; the 32-bit attempt on every call) and frees
 * straight to the tree.
 * MSI: a bump pointer. WRAPAROUND: iova_wrap.c. RESET_WHEN_EMPTY: the
 * rejected patch - alloc_iova as 4.10's dma-iommu did, frees only counted,
 * and the whole domain reset when the count of mapped pfns reaches zero.
 *
 * Flush queue (mainline): per-CPU rings of ring_size slots that hold
 * ring_size - 1 entries, as the kernel's (full when tail + 1 == head);
 * queueing first retires entries a
 * finished flush covers; a full ring needs a flush (the caller does it and
 * calls iova_cookie_fq_flushed); the first entry arms a timer whose expiry
 * flushes and retires everything. The kernel trusts its callers; here a
 * lazy free is checked as the strict free would check it, and refused if
 * the range is queued already, because at retire time a refusal can no
 * longer reach anyone: the range would be lost, or freed twice.
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

#define U32_PFN(d) (0xFFFFFFFFull >> (d)->shift)

/* ---- sets of pfns ------------------------------------------------------- */

static uint64_t pfn_set_home(const struct pfn_set *s, uint64_t pfn)
{
    uint64_t h = pfn * 0x9E3779B97F4A7C15ull;   /* Fibonacci hashing: pfns are dense */
    return (h ^ h >> 32) & s->mask;
}

/* The slot holding pfn, or the empty slot where it would go. */
static uint64_t pfn_set_slot(const struct pfn_set *s, uint64_t pfn)
{
    uint64_t i = pfn_set_home(s, pfn);
    while (s->slots[i] != PFN_SET_EMPTY && s->slots[i] != pfn)
        i = (i + 1) & s->mask;
    return i;
}

bool pfn_set_holds(const struct pfn_set *s, uint64_t pfn)
{
    /* PFN_SET_EMPTY marks a free slot, so it is never a member */
    return pfn != PFN_SET_EMPTY && s->slots && s->slots[pfn_set_slot(s, pfn)] == pfn;
}

/* Room for `more` entries beyond the present ones (growing keeps the set at
 * most half full); IOVA_E_NOMEM leaves it as it was. */
int pfn_set_reserve(struct pfn_set *s, uint64_t more)
{
    uint64_t want = 2 * (s->count + more);
    if (s->slots && want <= s->mask + 1)
        return 0;
    uint64_t n = roundup_pow_of_two(want < 16 ? 16 : want);
    if (n > SIZE_MAX / sizeof(uint64_t) || (s->slots && n <= s->mask + 1))
        return IOVA_E_NOMEM;
    struct pfn_set grown = { iova_malloc(n * sizeof(uint64_t)), n - 1, 0 };
    if (!grown.slots)
        return IOVA_E_NOMEM;
    memset(grown.slots, 0xFF, n * sizeof(uint64_t));             /* all PFN_SET_EMPTY */
    for (uint64_t i = 0; s->slots && i <= s->mask; i++)
        if (s->slots[i] != PFN_SET_EMPTY) {
            grown.slots[pfn_set_slot(&grown, s->slots[i])] = s->slots[i];
            grown.count++;
        }
    free(s->slots);
    *s = grown;
    return 0;
}

/* pfn must not be in the set, and pfn_set_reserve must have made room. */
void pfn_set_add(struct pfn_set *s, uint64_t pfn)
{
    s->slots[pfn_set_slot(s, pfn)] = pfn;
    s->count++;
}

/* Removes pfn, moving the later entries of its probe run back so that each
 * stays reachable from its home slot, without tombstones. */
bool pfn_set_remove(struct pfn_set *s, uint64_t pfn)
{
    if (!s->slots)
        return false;
    uint64_t *t = s->slots, m = s->mask;
    uint64_t hole = pfn_set_slot(s, pfn);
    if (t[hole] != pfn)
        return false;
    for (uint64_t j = (hole + 1) & m; t[j] != PFN_SET_EMPTY; j = (j + 1) & m) {
        uint64_t home = pfn_set_home(s, t[j]);
        /* t[j] stays unless the hole lies cyclically in [home, j) */
        bool stays = hole < j ? hole < home && home <= j : hole < home || home <= j;
        if (!stays) {
            t[hole] = t[j];
            hole = j;
        }
    }
    t[hole] = PFN_SET_EMPTY;
    s->count--;
    return true;
}

void pfn_set_release(struct pfn_set *s)
{
    free(s->slots);
    s->slots = NULL;
    s->mask = s->count = 0;
}

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
    pfn_set_release(&fq->queued_pfns);
    free(fq);
}

void iova_cookie_destroy(struct iova_cookie *c)
{
    if (!c)
        return;
    if (c->type == IOVA_COOKIE_WRAPAROUND)
        iova_wrap_release(&c->wrap);
    fq_release(c->fq);
    free(c->msi_starts);
    pfn_set_release(&c->live);
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
    if (!iova_mainline_tree(d)) {
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

/* The node that starts at pfn, or the code saying why there is none that
 * could be freed; d->tree_lock held. */
static int64_t range_start_locked(struct iova_domain *d, uint64_t pfn)
{
    if (d->closed)
        return IOVA_E_CLOSED;
    uint32_t x = iova_tree_find(&d->tree, pfn);
    if (x == IOVA_NIL)
        return IOVA_E_NOTFOUND;
    if (x == d->anchor)
        return IOVA_E_ANCHOR;
    if (d->tree.nodes[x].lo != pfn)
        return IOVA_E_NOTSTART;
    return x;
}

/* free_iova_fast's size rule: any size of the range's class (classes past
 * the cached ones count as one, as they all go to the tree). */
static bool same_size_class(uint64_t a, uint64_t b)
{
    unsigned ka = iova_size_class(a), kb = iova_size_class(b);
    if (ka > IOVA_RANGE_CACHE_MAX_SIZE)
        ka = IOVA_RANGE_CACHE_MAX_SIZE;
    if (kb > IOVA_RANGE_CACHE_MAX_SIZE)
        kb = IOVA_RANGE_CACHE_MAX_SIZE;
    return ka == kb;
}

static bool iova_type_uses_tree(const struct iova_cookie *c)
{
    return !iova_mainline_tree(c->iovad) || c->tree_only;
}

/* The largest size alloc_iova_fast rounds up to a power of two, and the
 * largest that free_iova_fast tells apart by its size class. */
#define FAST_ROUNDED_MAX (1ull << (IOVA_RANGE_CACHE_MAX_SIZE - 1))

/* The pfns an allocation of `pages` takes: on the rcache path the size
 * alloc_iova_fast gives the range. Every size a free may name for that
 * range counts the same, so live_pfns cannot drift. */
static uint64_t counted_pages(const struct iova_cookie *c, uint64_t pages)
{
    if (c->type == IOVA_COOKIE_IOVA && !iova_type_uses_tree(c) && pages < FAST_ROUNDED_MAX)
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
    struct iova_domain *d = c->iovad;
    if (pfn > d->max_pfn)
        return IOVA_E_PFN;
    if (pages > d->max_pfn)
        return IOVA_E_SIZE;
    bool tree = iova_type_uses_tree(c);
    iova_mutex_lock(&d->tree_lock);
    int64_t x = range_start_locked(d, pfn);
    int r = x < 0 ? (int)x : 0;
    if (!r) {
        const struct iova_node *n = &d->tree.nodes[x];
        uint64_t size = n->hi - n->lo + 1;
        if (iova_flags(&d->tree, (uint32_t)x) & IOVA_NODE_CACHED)
            r = IOVA_E_CACHED;
        else if (!tree && !same_size_class(size, pages))
            r = IOVA_E_SIZECLASS;
        else if ((tree || pages > FAST_ROUNDED_MAX) && size != pages)
            r = IOVA_E_SIZE;
    }
    iova_mutex_unlock(&d->tree_lock);
    return r;
}

static int free_iova_type(struct iova_cookie *c, uint64_t pfn, uint64_t pages,
                          int cpu)
{
    struct iova_domain *d = c->iovad;
    if (iova_type_uses_tree(c)) {
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
    iova_mutex_lock(&d->tree_lock);
    int64_t x = range_start_locked(d, pfn);
    int r = x == IOVA_E_ANCHOR ? IOVA_E_NOTFOUND : x < 0 ? (int)x : 0;
    if (!r) {
        const struct iova_node *n = &d->tree.nodes[x];
        if (iova_flags(&d->tree, (uint32_t)x) & (IOVA_NODE_RETIRED | IOVA_NODE_CACHED))
            r = IOVA_E_NOT_LIVE;
        else if (n->hi - n->lo + 1 != pages)
            r = IOVA_E_SIZE;                     /* a wrong count could reset too early */
        else if (!pfn_set_holds(&c->live, pfn))
            r = IOVA_E_NOT_LIVE;                 /* not the cookie's: a reserved region */
        else
            iova_set_flag(&d->tree, (uint32_t)x, IOVA_NODE_RETIRED);
    }
    iova_mutex_unlock(&d->tree_lock);
    if (r)
        return r;
    c->retired_pfns += pages;
    if (c->live_pfns == pages) {                 /* this free empties the space */
        /* drops every retired range; reserved ones stay */
        r = iova_domain_reset(d);
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
        uint64_t *n = iova_realloc(c->msi_starts, ncap * sizeof(*n));
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
    if (tracked && pfn_set_reserve(&c->live, 1)) {
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
    if (c->fq && pfn_set_holds(&c->fq->queued_pfns, pfn)) {
        r = IOVA_E_QUEUED;              /* freed now, it would be freed again at its flush */
    } else if (pages == 0 || counted > c->live_pfns) {
        r = c->live_ranges ? IOVA_E_SIZE : IOVA_E_NOT_LIVE;
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
                r = IOVA_E_SIZE;
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
    if (c->type != IOVA_COOKIE_IOVA || !iova_mainline_tree(c->iovad))
        return IOVA_E_COOKIE;
    /* one slot always stays empty (a full ring has tail + 1 == head), so a
     * ring needs two slots to hold anything */
    if (ncpus < 1 || ring_size < 2 || ring_size > (1u << 20))
        return IOVA_E_RANGE;
    /* a ring retires into its own CPU's rcache: there must be one */
    if (ncpus > c->iovad->ncpus)
        return IOVA_E_CPU;
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
    if (pfn_set_reserve(&fq->queued_pfns, (uint64_t)ncpus * ring_size)) {
        fq_release(fq);
        return IOVA_E_NOMEM;
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

/* Retires, from the head, every entry a finished flush covers, into `cpu`'s
 * rcache; c->lock held. Entries were checked when queued, so a refusal here
 * means the domain was changed behind the queue: the entry is dropped and
 * counted, and IOVA_E_FQ_LOST says so. A closed domain keeps its entries
 * (there is nothing left to free them into) and returns IOVA_E_CLOSED. */
static int fq_retire(struct iova_cookie *c, struct fq_ring *ring, int cpu)
{
    struct iova_fq *fq = c->fq;
    int ret = 0;
    while (ring->count && ring->entries[ring->head].counter < fq->finished) {
        struct fq_entry *e = &ring->entries[ring->head];
        int r = free_iova_type(c, e->pfn, e->pages, cpu);
        if (r == IOVA_E_CLOSED)
            return r;
        if (r) {
            fq->lost++;
            ret = IOVA_E_FQ_LOST;
        }
        pfn_set_remove(&fq->queued_pfns, e->pfn);
        ring->head = (ring->head + 1) % fq->size;
        ring->count--;
        fq->queued--;
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
    unsigned slot = 0;
    if (!fq) {
        r = IOVA_E_COOKIE;
    } else if (cpu < -1 || (cpu >= 0 && (unsigned)cpu >= fq->ncpus)) {
        r = IOVA_E_CPU;
    } else {
        int me = cpu == -1 ? iova_current_cpu(c->iovad) : cpu;
        slot = me < 0 ? 0 : (unsigned)me % fq->ncpus;
        if (me < 0)
            r = me;
        else if (pfn_set_holds(&fq->queued_pfns, pfn))
            r = IOVA_E_QUEUED;
        else if (pages == 0 || counted_pages(c, pages) > c->live_pfns)
            r = IOVA_E_SIZE;
        else if ((r = check_iova_free(c, pfn, pages)) == 0 && !pfn_set_holds(&c->live, pfn))
            r = IOVA_E_NOT_LIVE;
    }
    if (!r) {
        struct fq_ring *ring = &fq->rings[slot];
        r = fq_retire(c, ring, (int)slot);
        if (r) {
            /* reported, and this free not done: the caller may call again */
        } else if (ring->count == fq->size - 1) {
            /* the kernel's ring is full at tail + 1 == head: size - 1 entries */
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
            pfn_set_add(&fq->queued_pfns, pfn);
            pfn_set_remove(&c->live, pfn);
            if (!fq->timer_armed) {
                fq->timer_armed = true;
                fq->timer_due_ms = now_ms + fq->timeout_ms;
            }
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
        fq->started++;
        fq->finished++;
        if (all_rings) {
            /* the timer: everything queued is now covered */
            fq->timer_armed = false;
            for (unsigned i = 0; i < fq->ncpus; i++) {
                int e = fq_retire(c, &fq->rings[i], cpu);
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
         * and reserved ranges alike */
        iova_mutex_lock(&c->iovad->tree_lock);
        st->held_pfns = c->iovad->tree.pfns;
        iova_mutex_unlock(&c->iovad->tree_lock);
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

/* RESET_WHEN_EMPTY: the domain's ranges are the cookie's live and retired
 * ones plus what it did not hand out (reserved regions); a reserve may have
 * widened either kind in place, so the tree may hold more than the counts,
 * never less. c->lock held. */
static const char *check_reset_counts(struct iova_cookie *c)
{
    struct iova_domain *d = c->iovad;
    const struct iova_tree *t = &d->tree;
    uint64_t retired = 0, held = 0, held_ranges = 0;
    iova_mutex_lock(&d->tree_lock);
    for (uint32_t x = iova_tree_first(t); x != IOVA_NIL; x = iova_tree_next(t, x)) {
        if (x == d->anchor)
            continue;
        uint64_t n = t->nodes[x].hi - t->nodes[x].lo + 1;
        unsigned f = iova_flags(t, x);
        if (f & IOVA_NODE_RETIRED) {
            retired += n;
        } else if (!(f & IOVA_NODE_CACHED)) {
            held += n;
            held_ranges++;
        }
    }
    iova_mutex_unlock(&d->tree_lock);
    if (retired < c->retired_pfns)
        return "the tree holds fewer retired pfns than were freed";
    if (held < c->live_pfns || held_ranges < c->live_ranges)
        return "the tree holds fewer live ranges than are handed out";
    return NULL;
}

/* The flush queue's rings, counts and set of queued pfns agree. c->lock held. */
static const char *check_fq(const struct iova_fq *fq)
{
    uint64_t queued = 0, in_set = 0;
    for (unsigned i = 0; i < fq->ncpus; i++) {
        const struct fq_ring *ring = &fq->rings[i];
        queued += ring->count;
        for (unsigned k = 0; k < ring->count; k++)
            if (!pfn_set_holds(&fq->queued_pfns, ring->entries[(ring->head + k) % fq->size].pfn))
                return "a queued entry is missing from the set of queued pfns";
    }
    for (uint64_t i = 0; i <= fq->queued_pfns.mask; i++)
        in_set += fq->queued_pfns.slots[i] != PFN_SET_EMPTY;
    if (in_set != fq->queued_pfns.count)
        return "the set of queued pfns miscounts";
    if (queued != fq->queued || in_set != fq->queued || fq->finished > fq->started)
        return "the flush queue's counts disagree";
    return NULL;
}

/* IOVA, RESET_WHEN_EMPTY: the set of live ranges matches the count, and
 * each starts a range of the domain that is neither cached nor retired.
 * c->lock held. */
static const char *check_live_set(struct iova_cookie *c)
{
    if (c->live.count != c->live_ranges)
        return "the set of live ranges disagrees with their count";
    struct iova_domain *d = c->iovad;
    const char *why = NULL;
    iova_mutex_lock(&d->tree_lock);
    for (uint64_t i = 0; !why && c->live.slots && i <= c->live.mask; i++) {
        uint64_t pfn = c->live.slots[i];
        if (pfn == PFN_SET_EMPTY)
            continue;
        int64_t x = range_start_locked(d, pfn);
        if (x < 0)
            why = "a live range is not in the domain";
        else if (iova_flags(&d->tree, (uint32_t)x) & (IOVA_NODE_CACHED | IOVA_NODE_RETIRED))
            why = "a live range is cached or retired";
    }
    iova_mutex_unlock(&d->tree_lock);
    return why;
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
        else if (c->msi_depth != c->live_ranges)
            why = "the MSI undo stack disagrees with the live ranges";
        for (uint64_t i = 1; !why && i < c->msi_depth; i++)
            if (c->msi_starts[i] <= c->msi_starts[i - 1])
                why = "the MSI undo stack is out of order";
        if (!why && c->msi_depth && c->msi_starts[c->msi_depth - 1] >= c->msi_next)
            why = "the latest MSI allocation starts at the bump pointer";
    } else {
        r = iova_check(c->iovad, msg, msg_len);
        if (!r)
            why = check_live_set(c);
        if (!r && !why && c->type == IOVA_COOKIE_RESET_WHEN_EMPTY)
            why = check_reset_counts(c);
    }
    if (!why && c->fq)
        why = check_fq(c->fq);
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
