/*
 * iova_cookie_save.c - a cookie as a flat array of uint64_t words, and back.
 *
 * Everything that decides the cookie's future answers is saved: the type,
 * the space, the MSI bump pointer, the tree-only switch, the counters; for
 * WRAPAROUND every range it holds (live, awaiting the wrap's flush, or
 * reserved), the cursor and the wrap count; for RESET_WHEN_EMPTY which
 * ranges of its iova_domain are freed but kept out of reuse (the domain's
 * own save knows nothing of that flag); for MSI where each live allocation
 * starts (only the latest may be undone); for IOVA and RESET_WHEN_EMPTY
 * which ranges of the domain the cookie handed out (the domain cannot tell
 * them from reserved regions, so this is saved, not rebuilt); and the flush
 * queue: its counters, its timer, and every queued entry of every ring in
 * queue order.
 *
 * Not saved, because no answer depends on it: the wraparound tree's shape,
 * a ring's head position (a restored ring starts at slot 0), the layout of
 * the pfn sets (rebuilt; the set of queued pfns from the rings' entries)
 * and the spare room of the MSI stack.
 *
 * Layout (version 2):
 *   magic, version, type, granule, start_pfn, end_pfn, msi_next, tree_only,
 *   allocs, frees, failures, live_ranges, live_pfns, retired_pfns, resets,
 *   WRAPAROUND:       cursor, wraps, nranges, per range: lo, hi, kind
 *                     (kind 0 live, 1 awaiting the flush, 2 reserved)
 *   RESET_WHEN_EMPTY: nretired, per retired range: lo
 *   MSI:              depth, per live allocation (oldest first): start
 *   IOVA, RESET_WHEN_EMPTY:
 *                     nlive, per live range handed out (ascending): start
 *   has_fq, and if 1: ncpus, ring_size, timeout_ms, started, finished,
 *                     timer_armed, timer_due_ms, queued, flushes, lost,
 *                     per ring: count, per entry (oldest first): pfn, pages, counter
 *
 * Version 1 lacked the MSI stack, the live set and `lost`; a cookie
 * restored from it could not check its frees, so it is refused.
 *
 * Restoring checks every word as it reads it, builds a cookie that nobody
 * else can see yet, and finally runs the cookie's validator. On any failure
 * everything it built is released and the lent iova_domain is left exactly
 * as it was (the RETIRED flags it may have set are cleared again).
 */
#include <stdlib.h>

#include "iova_mem_internal.h"
#include "save_words.h"
#include "iova_cookie_internal.h"
#include "iova_cookie_save.h"

#define COOKIE_SAVE_MAGIC   0x7079696f76610002ull   /* "pyiova" + format family */
#define COOKIE_SAVE_VERSION 2

#define WRAP_LIVE     0
#define WRAP_RETIRED  1
#define WRAP_RESERVED 2

#define FQ_MAX_CPUS   IOVA_MAX_CPUS
#define FQ_MAX_SIZE   (1u << 20)                     /* what iova_cookie_fq_init accepts */

static void save_wrap(struct words_writer *w, const struct iova_wrap *wr)
{
    const struct iova_tree *t = &wr->tree;
    words_put(w, wr->cursor);
    words_put(w, wr->wraps);
    words_put(w, t->count - 1);                            /* the sentinel is implied */
    for (uint32_t x = iova_tree_first(t); x != wr->sentinel; x = iova_tree_next(t, x)) {
        unsigned f = iova_flags(t, x);
        words_put(w, t->nodes[x].lo);
        words_put(w, t->nodes[x].hi);
        words_put(w, (f & IOVA_NODE_RETIRED) ? WRAP_RETIRED
               : (f & IOVA_NODE_RESERVED) ? WRAP_RESERVED : WRAP_LIVE);
    }
}

/* The retired ranges of a RESET_WHEN_EMPTY cookie's domain; tree_lock held. */
static void save_retired(struct words_writer *w, const struct iova_domain *d)
{
    const struct iova_tree *t = &d->tree;
    uint64_t n = 0;
    for (uint32_t x = iova_tree_first(t); x != IOVA_NIL; x = iova_tree_next(t, x))
        n += x != d->anchor && (iova_flags(t, x) & IOVA_NODE_RETIRED);
    words_put(w, n);
    for (uint32_t x = iova_tree_first(t); x != IOVA_NIL; x = iova_tree_next(t, x))
        if (x != d->anchor && (iova_flags(t, x) & IOVA_NODE_RETIRED))
            words_put(w, t->nodes[x].lo);
}

/* MSI: the undo stack, oldest first. */
static void save_msi(struct words_writer *w, const struct iova_cookie *c)
{
    words_put(w, c->msi_depth);
    for (uint64_t i = 0; i < c->msi_depth; i++)
        words_put(w, c->msi_starts[i]);
}

/* IOVA, RESET_WHEN_EMPTY: the live ranges the cookie handed out, found by
 * walking the domain's tree so that they come out in ascending order - the
 * same words for a cookie and its copy, whatever their sets' layout. A
 * member that is not a range start (a domain changed behind the cookie) is
 * left out; the restore then finds the count short and refuses. tree_lock
 * held. */
static void save_live(struct words_writer *w, const struct iova_cookie *c)
{
    const struct iova_domain *d = c->iovad;
    const struct iova_tree *t = &d->tree;
    uint64_t n = 0;
    for (uint32_t x = iova_tree_first(t); x != IOVA_NIL; x = iova_tree_next(t, x))
        n += x != d->anchor && pfn_set_holds(&c->live, t->nodes[x].lo);
    words_put(w, n);
    for (uint32_t x = iova_tree_first(t); x != IOVA_NIL; x = iova_tree_next(t, x))
        if (x != d->anchor && pfn_set_holds(&c->live, t->nodes[x].lo))
            words_put(w, t->nodes[x].lo);
}

static void save_fq(struct words_writer *w, const struct iova_fq *fq)
{
    words_put(w, fq != NULL);
    if (!fq)
        return;
    words_put(w, fq->ncpus);
    words_put(w, fq->size);
    words_put(w, fq->timeout_ms);
    words_put(w, fq->started);
    words_put(w, fq->finished);
    words_put(w, fq->timer_armed);
    words_put(w, fq->timer_due_ms);
    words_put(w, fq->queued);
    words_put(w, fq->flushes);
    words_put(w, fq->lost);
    for (unsigned i = 0; i < fq->ncpus; i++) {
        const struct fq_ring *r = &fq->rings[i];
        words_put(w, r->count);
        for (unsigned k = 0; k < r->count; k++) {
            const struct fq_entry *e = &r->entries[(r->head + k) % fq->size];
            words_put(w, e->pfn);
            words_put(w, e->pages);
            words_put(w, e->counter);
        }
    }
}

int64_t iova_cookie_save(struct iova_cookie *c, uint64_t *out, uint64_t cap)
{
    if (!c)
        return IOVA_E_CLOSED;
    struct words_writer w = words_writer(out, cap);
    pthread_mutex_lock(&c->lock);
    struct iova_domain *d = c->iovad;
    if (d) {
        iova_mutex_lock(&d->tree_lock);
        if (d->closed) {
            iova_mutex_unlock(&d->tree_lock);
            pthread_mutex_unlock(&c->lock);
            return IOVA_E_CLOSED;
        }
    }
    words_put(&w, COOKIE_SAVE_MAGIC);
    words_put(&w, COOKIE_SAVE_VERSION);
    words_put(&w, (uint64_t)c->type);
    words_put(&w, c->granule);
    words_put(&w, c->start_pfn);
    words_put(&w, c->end_pfn);
    words_put(&w, c->msi_next);
    words_put(&w, c->tree_only);
    words_put(&w, c->allocs);
    words_put(&w, c->frees);
    words_put(&w, c->failures);
    words_put(&w, c->live_ranges);
    words_put(&w, c->live_pfns);
    words_put(&w, c->retired_pfns);
    words_put(&w, c->resets);
    if (c->type == IOVA_COOKIE_WRAPAROUND)
        save_wrap(&w, &c->wrap);
    else if (c->type == IOVA_COOKIE_RESET_WHEN_EMPTY)
        save_retired(&w, d);
    if (c->type == IOVA_COOKIE_MSI)
        save_msi(&w, c);
    else if (d)
        save_live(&w, c);
    save_fq(&w, c->fq);
    if (d)
        iova_mutex_unlock(&d->tree_lock);
    pthread_mutex_unlock(&c->lock);
    return (int64_t)w.n;
}

/* ---- restoring ----------------------------------------------------------- */

/* Whether `count` items of `words` words each can still follow. */
static bool room_for(const struct words_reader *r, uint64_t count, uint64_t words)
{
    return !r->bad && count <= (r->n - r->pos) / words;
}

static int restore_wrap(struct iova_cookie *c, struct words_reader *r)
{
    struct iova_wrap *w = &c->wrap;
    uint64_t cursor = words_get(r), wraps = words_get(r), nranges = words_get(r);
    if (r->bad || cursor < w->start_pfn || cursor > w->end_pfn + 1 ||
        nranges > IOVA_MAX_NODES - 1 || !room_for(r, nranges, 3))
        return IOVA_E_STATE;
    bool have_prev = false;
    uint64_t prev_hi = 0;
    for (uint64_t i = 0; i < nranges; i++) {
        uint64_t lo = words_get(r), hi = words_get(r), kind = words_get(r);
        if (r->bad || lo > hi || lo < w->start_pfn || hi > w->end_pfn ||
            (have_prev && lo <= prev_hi) || kind > WRAP_RESERVED)
            return IOVA_E_STATE;
        uint32_t x = iova_tree_node_new(&w->tree, lo, hi);
        if (x == IOVA_NIL)
            return IOVA_E_NOMEM;
        iova_tree_insert(&w->tree, x);
        if (kind == WRAP_RETIRED) {
            iova_set_flag(&w->tree, x, IOVA_NODE_RETIRED);
            w->retired_pfns += hi - lo + 1;
        } else if (kind == WRAP_RESERVED) {
            iova_set_flag(&w->tree, x, IOVA_NODE_RESERVED);
            w->reserved_pfns += hi - lo + 1;
        }
        have_prev = true;
        prev_hi = hi;
    }
    w->cursor = cursor;
    w->wraps = wraps;
    return 0;
}

/* Flags the domain's retired ranges. On success *marked holds the nodes
 * flagged (the caller clears them if the restore fails later). */
static int restore_retired(struct iova_cookie *c, struct words_reader *r,
                           uint32_t **marked, uint64_t *nmarked)
{
    struct iova_domain *d = c->iovad;
    uint64_t n = words_get(r);
    if (!room_for(r, n, 1) || n > IOVA_MAX_NODES)
        return IOVA_E_STATE;
    uint32_t *nodes = n ? iova_malloc(n * sizeof(*nodes)) : NULL;
    if (n && !nodes)
        return IOVA_E_NOMEM;
    int rc = 0;
    iova_mutex_lock(&d->tree_lock);
    struct iova_tree *t = &d->tree;
    for (uint64_t i = 0; i < n && !rc; i++) {
        uint64_t lo = words_get(r);
        uint32_t x = d->closed ? IOVA_NIL : iova_tree_find(t, lo);
        if (x == IOVA_NIL || x == d->anchor || t->nodes[x].lo != lo ||
            (iova_flags(t, x) & (IOVA_NODE_CACHED | IOVA_NODE_RETIRED)) ||
            (i && lo <= t->nodes[nodes[i - 1]].lo))
            rc = IOVA_E_STATE;
        else
            nodes[i] = x;
    }
    if (!rc)
        for (uint64_t i = 0; i < n; i++)
            iova_set_flag(t, nodes[i], IOVA_NODE_RETIRED);
    iova_mutex_unlock(&d->tree_lock);
    if (rc) {
        free(nodes);
        return rc;
    }
    *marked = nodes;
    *nmarked = n;
    return 0;
}

/* The largest size alloc_iova_fast rounds up, and the largest size class
 * free_iova_fast tells apart (iova_cookie.c's FAST_ROUNDED_MAX). */
#define FAST_ROUNDED_MAX (1ull << (IOVA_RANGE_CACHE_MAX_SIZE - 1))

static unsigned cached_class(uint64_t pages)
{
    unsigned k = iova_size_class(pages);
    return k > IOVA_RANGE_CACHE_MAX_SIZE ? IOVA_RANGE_CACHE_MAX_SIZE : k;
}

/* Whether free_lazy could have queued (pfn, pages): the start of a range
 * of the domain that is allocated (not cached, not retired), not handed
 * out as live any more, and `pages` a size the free accepts for it - its
 * own size on the tree paths and beyond the cached classes, else one of
 * its size class. An entry the retire would refuse would be lost. */
static bool queued_range_ok(struct iova_cookie *c, uint64_t pfn, uint64_t pages)
{
    struct iova_domain *d = c->iovad;
    bool tree = !iova_mainline_tree(d) || c->tree_only;
    if (pages == 0 || pfn_set_holds(&c->live, pfn))
        return false;
    iova_mutex_lock(&d->tree_lock);
    uint32_t x = d->closed ? IOVA_NIL : iova_tree_find(&d->tree, pfn);
    bool ok = x != IOVA_NIL && x != d->anchor && d->tree.nodes[x].lo == pfn &&
              !(iova_flags(&d->tree, x) & (IOVA_NODE_CACHED | IOVA_NODE_RETIRED));
    if (ok) {
        uint64_t size = d->tree.nodes[x].hi - pfn + 1;
        if (tree || pages > FAST_ROUNDED_MAX)
            ok = pages == size;
        else
            ok = cached_class(pages) == cached_class(size);
    }
    iova_mutex_unlock(&d->tree_lock);
    return ok;
}

static int restore_fq(struct iova_cookie *c, struct words_reader *r)
{
    uint64_t has = words_get(r);
    if (r->bad || has > 1)
        return IOVA_E_STATE;
    if (!has)
        return 0;
    uint64_t ncpus = words_get(r), size = words_get(r), timeout = words_get(r);
    if (r->bad || c->type != IOVA_COOKIE_IOVA || !iova_mainline_tree(c->iovad) ||
        ncpus < 1 || ncpus > FQ_MAX_CPUS || size < 2 || size > FQ_MAX_SIZE)
        return IOVA_E_STATE;
    /* Seven counter words follow, then each ring needs its count word:
     * refuse sizes the words cannot describe before allocating anything
     * for them. */
    if (!room_for(r, ncpus + 7, 1))
        return IOVA_E_STATE;
    int rc = iova_cookie_fq_init(c, (unsigned)ncpus, (unsigned)size, timeout);
    if (rc)
        return rc == IOVA_E_NOMEM ? rc : IOVA_E_STATE;
    struct iova_fq *fq = c->fq;
    fq->started = words_get(r);
    fq->finished = words_get(r);
    uint64_t armed = words_get(r);
    fq->timer_due_ms = words_get(r);
    fq->queued = words_get(r);
    fq->flushes = words_get(r);
    fq->lost = words_get(r);
    if (r->bad || armed > 1 || fq->finished > fq->started)
        return IOVA_E_STATE;
    fq->timer_armed = armed != 0;
    uint64_t total = 0;
    for (unsigned i = 0; i < fq->ncpus; i++) {
        struct fq_ring *ring = &fq->rings[i];
        uint64_t count = words_get(r);
        if (r->bad || count >= fq->size || !room_for(r, count, 3))
            return IOVA_E_STATE;
        uint64_t prev_counter = 0;
        for (uint64_t k = 0; k < count; k++) {
            struct fq_entry *e = &ring->entries[k];
            e->pfn = words_get(r);
            e->pages = words_get(r);
            e->counter = words_get(r);
            /* counters never go down along a ring, nor beyond the flushes
             * started; a range has at most one place in the queue (the
             * set was sized for every ring full by fq_init) */
            if (r->bad || e->counter > fq->started || e->counter < prev_counter ||
                !queued_range_ok(c, e->pfn, e->pages) ||
                pfn_set_holds(&fq->queued_pfns, e->pfn))
                return IOVA_E_STATE;
            pfn_set_add(&fq->queued_pfns, e->pfn);
            prev_counter = e->counter;
        }
        ring->head = 0;
        ring->count = (unsigned)count;
        total += count;
    }
    return total == fq->queued ? 0 : IOVA_E_STATE;
}

/* MSI: the undo stack. The frees undo the latest allocation, whole, so
 * the live allocations lie back to back from start_pfn up to msi_next:
 * the first starts at start_pfn, each later one above the one before, the
 * latest below msi_next, and msi_next - start_pfn is what is live. */
static int restore_msi(struct iova_cookie *c, struct words_reader *r)
{
    uint64_t depth = words_get(r);
    if (!room_for(r, depth, 1) || depth != c->live_ranges ||
        c->msi_next - c->start_pfn != c->live_pfns)
        return IOVA_E_STATE;
    if (!depth)
        return 0;
    c->msi_starts = iova_malloc(depth * sizeof(*c->msi_starts));
    if (!c->msi_starts)
        return IOVA_E_NOMEM;
    c->msi_cap = depth;                 /* msi_push grows it from there */
    for (uint64_t i = 0; i < depth; i++) {
        uint64_t start = words_get(r);
        if (i == 0 ? start != c->start_pfn : start <= c->msi_starts[i - 1])
            return IOVA_E_STATE;
        c->msi_starts[c->msi_depth++] = start;
    }
    return c->msi_starts[depth - 1] < c->msi_next ? 0 : IOVA_E_STATE;
}

/* IOVA, RESET_WHEN_EMPTY: the live ranges the cookie handed out, each the
 * start of a range of the domain that is neither cached nor retired, in
 * ascending order (so none twice), as many as live_ranges, and together at
 * least live_pfns long (a reserve may have widened one in place, never
 * shrunk it). Queued ranges are checked against this set afterwards. */
static int restore_live(struct iova_cookie *c, struct words_reader *r)
{
    struct iova_domain *d = c->iovad;
    uint64_t n = words_get(r);
    if (!room_for(r, n, 1) || n != c->live_ranges)
        return IOVA_E_STATE;
    if (n && pfn_set_reserve(&c->live, n))
        return IOVA_E_NOMEM;
    int rc = 0;
    uint64_t pfns = 0, prev = 0;
    iova_mutex_lock(&d->tree_lock);
    struct iova_tree *t = &d->tree;
    for (uint64_t i = 0; i < n && !rc; i++) {
        uint64_t lo = words_get(r);
        uint32_t x = d->closed ? IOVA_NIL : iova_tree_find(t, lo);
        if (x == IOVA_NIL || x == d->anchor || t->nodes[x].lo != lo ||
            (iova_flags(t, x) & (IOVA_NODE_CACHED | IOVA_NODE_RETIRED)) || (i && lo <= prev)) {
            rc = IOVA_E_STATE;
        } else {
            uint64_t size = t->nodes[x].hi - lo + 1;
            pfns = pfns > UINT64_MAX - size ? UINT64_MAX : pfns + size;
            pfn_set_add(&c->live, lo);
            prev = lo;
        }
    }
    iova_mutex_unlock(&d->tree_lock);
    if (!rc && pfns < c->live_pfns)
        rc = IOVA_E_STATE;
    return rc;
}

/* The header's values for the type, or IOVA_E_STATE. */
static int restore_header(struct iova_cookie *c, struct words_reader *r, uint64_t granule,
                          uint64_t start, uint64_t end)
{
    uint64_t msi_next = words_get(r), tree_only = words_get(r);
    c->allocs = words_get(r);
    c->frees = words_get(r);
    c->failures = words_get(r);
    c->live_ranges = words_get(r);
    c->live_pfns = words_get(r);
    c->retired_pfns = words_get(r);
    c->resets = words_get(r);
    if (r->bad || granule != c->granule || start != c->start_pfn || end != c->end_pfn)
        return IOVA_E_STATE;
    if (c->type == IOVA_COOKIE_MSI) {
        if (msi_next < c->start_pfn || msi_next > IOVA_U64_MAX / 2)
            return IOVA_E_STATE;
        c->msi_next = msi_next;
    } else if (msi_next != c->msi_next) {
        return IOVA_E_STATE;
    }
    if (tree_only > 1 || (tree_only && c->type != IOVA_COOKIE_IOVA))
        return IOVA_E_STATE;
    c->tree_only = tree_only != 0;
    /* every live range holds at least one pfn; only reset-when-empty retires */
    if (c->live_ranges > c->live_pfns || (c->live_pfns && !c->live_ranges) ||
        (c->retired_pfns && c->type != IOVA_COOKIE_RESET_WHEN_EMPTY))
        return IOVA_E_STATE;
    return 0;
}

struct iova_cookie *iova_cookie_restore(const uint64_t *in, uint64_t n,
                                        struct iova_domain *iovad, int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    struct words_reader r = words_reader(in, n);
    uint64_t magic = words_get(&r), version = words_get(&r), type = words_get(&r);
    uint64_t granule = words_get(&r), start = words_get(&r), end = words_get(&r);
    bool needs_domain = type == IOVA_COOKIE_IOVA || type == IOVA_COOKIE_RESET_WHEN_EMPTY;
    if (r.bad || magic != COOKIE_SAVE_MAGIC || version != COOKIE_SAVE_VERSION ||
        type > IOVA_COOKIE_RESET_WHEN_EMPTY || needs_domain != (iovad != NULL)) {
        *err = IOVA_E_STATE;
        return NULL;
    }
    struct iova_cookie *c = iova_cookie_new((int)type, iovad, granule, start, end, err);
    if (!c) {
        if (*err != IOVA_E_NOMEM)
            *err = IOVA_E_STATE;
        return NULL;
    }
    uint32_t *marked = NULL;
    uint64_t nmarked = 0;
    int rc = restore_header(c, &r, granule, start, end);
    if (!rc && type == IOVA_COOKIE_WRAPAROUND)
        rc = restore_wrap(c, &r);
    else if (!rc && type == IOVA_COOKIE_RESET_WHEN_EMPTY)
        rc = restore_retired(c, &r, &marked, &nmarked);
    if (!rc && type == IOVA_COOKIE_MSI)
        rc = restore_msi(c, &r);
    else if (!rc && needs_domain)
        rc = restore_live(c, &r);        /* after the retired ranges: live is not retired */
    if (!rc)
        rc = restore_fq(c, &r);          /* after the live set: queued is not live */
    if (!rc && (r.bad || r.pos != r.n))
        rc = IOVA_E_STATE;
    if (!rc) {
        /* Last line of defence: the validator's invariants must hold. */
        rc = iova_cookie_check(c, NULL, 0);
        if (rc && rc != IOVA_E_NOMEM)
            rc = IOVA_E_STATE;
    }
    if (rc) {
        if (nmarked) {
            iova_mutex_lock(&iovad->tree_lock);
            for (uint64_t i = 0; i < nmarked; i++)
                iova_clear_flag(&iovad->tree, marked[i], IOVA_NODE_RETIRED);
            iova_mutex_unlock(&iovad->tree_lock);
        }
        free(marked);
        iova_cookie_destroy(c);
        *err = rc;
        return NULL;
    }
    free(marked);
    *err = 0;
    return c;
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
