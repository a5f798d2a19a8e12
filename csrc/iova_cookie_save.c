/*
 * iova_cookie_save.c - a cookie as a flat array of uint64_t words, and back.
 *
 * Everything that decides the cookie's future answers is saved: the type,
 * the space, the MSI bump pointer, the tree-only switch, the counters; for
 * WRAPAROUND every range it holds (live, awaiting the wrap's flush, or
 * reserved), the cursor and the wrap count; for RESET_WHEN_EMPTY which
 * ranges of its iova_domain are freed but kept out of reuse (the domain
 * holds them as any allocated range); for MSI where each live allocation
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
 * The sets of pfns are written in ascending order, so that a cookie and
 * its copy save to the same words whatever their sets' layout. Neither
 * saving nor restoring walks the domain: a restore asks it, through
 * iova.h, about each range the words name.
 *
 * Restoring checks every word as it reads it, builds a cookie that nobody
 * else can see yet, and finally runs the cookie's validator. On any failure
 * everything it built is released; the lent iova_domain is never changed.
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
        words_put(w, (f & WRAP_NODE_RETIRED) ? WRAP_RETIRED
               : (f & WRAP_NODE_RESERVED) ? WRAP_RESERVED : WRAP_LIVE);
    }
}

/* A set's size, then its members in ascending order: sorted in the output
 * itself, so that saving needs no memory. */
static void save_set(struct words_writer *w, const struct pfn_set *s)
{
    words_put(w, s->count);
    uint64_t first = w->n;
    if (first + s->count <= w->cap)
        pfn_set_sorted(s, w->out + first);
    w->n += s->count;
}

/* MSI: the undo stack, oldest first. */
static void save_msi(struct words_writer *w, const struct iova_cookie *c)
{
    words_put(w, c->msi_depth);
    for (uint64_t i = 0; i < c->msi_depth; i++)
        words_put(w, c->msi_starts[i]);
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
    struct iova_state ds;
    if (c->iovad && iova_get_state(c->iovad, &ds) == IOVA_E_CLOSED) {
        pthread_mutex_unlock(&c->lock);
        return IOVA_E_CLOSED;
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
        save_set(&w, &c->retired);
    if (c->type == IOVA_COOKIE_MSI)
        save_msi(&w, c);
    else if (c->iovad)
        save_set(&w, &c->live);
    save_fq(&w, c->fq);
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
            iova_set_flag(&w->tree, x, WRAP_NODE_RETIRED);
            w->retired_pfns += hi - lo + 1;
        } else if (kind == WRAP_RESERVED) {
            iova_set_flag(&w->tree, x, WRAP_NODE_RESERVED);
            w->reserved_pfns += hi - lo + 1;
        }
        have_prev = true;
        prev_hi = hi;
    }
    w->cursor = cursor;
    w->wraps = wraps;
    return 0;
}

/* A set of range starts of the domain (the live or the retired ranges), as
 * save_set wrote it: `n` of them, ascending (so none twice), each the start
 * of an allocated range of the domain that is not in `other`, together at
 * least `pfns` pages long (a reserve may have widened one in place, never
 * shrunk it). */
static int restore_set(struct iova_cookie *c, struct words_reader *r, struct pfn_set *set,
                       const struct pfn_set *other, uint64_t n, uint64_t pfns)
{
    if (!room_for(r, n, 1))
        return IOVA_E_STATE;
    if (n && pfn_set_reserve(set, n))
        return IOVA_E_NOMEM;
    uint64_t covered = 0, prev = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t pfn = words_get(r), size;
        if (iova_cookie_range_at(c, pfn, &size) || (i && pfn <= prev) ||
            pfn_set_holds(other, pfn))
            return IOVA_E_STATE;
        covered = covered > UINT64_MAX - size ? UINT64_MAX : covered + size;
        pfn_set_add(set, pfn);
        prev = pfn;
    }
    return covered < pfns ? IOVA_E_STATE : 0;
}

/* RESET_WHEN_EMPTY: the retired ranges; room for every live one to join
 * them (as iova_cookie_alloc makes it). */
static int restore_retired(struct iova_cookie *c, struct words_reader *r)
{
    uint64_t n = words_get(r);
    if (r->bad || n > IOVA_MAX_NODES)
        return IOVA_E_STATE;
    int rc = restore_set(c, r, &c->retired, &c->live, n, c->retired_pfns);
    if (!rc && pfn_set_reserve(&c->retired, c->live_ranges))
        rc = IOVA_E_NOMEM;
    return rc;
}

/* IOVA, RESET_WHEN_EMPTY: the live ranges the cookie handed out, as many as
 * live_ranges. Queued ranges are checked against this set afterwards. */
static int restore_live(struct iova_cookie *c, struct words_reader *r)
{
    uint64_t n = words_get(r);
    if (r->bad || n != c->live_ranges)
        return IOVA_E_STATE;
    return restore_set(c, r, &c->live, &c->retired, n, c->live_pfns);
}

/* Whether free_lazy could have queued (pfn, pages): the start of an
 * allocated range of the domain, not handed out as live any more, and
 * `pages` a size the free accepts for it - its own size on the tree paths
 * and beyond the cached classes, else one of its size class. An entry the
 * retire would refuse would be lost. */
static bool queued_range_ok(struct iova_cookie *c, uint64_t pfn, uint64_t pages)
{
    uint64_t size;
    if (pages == 0 || pfn_set_holds(&c->live, pfn) || iova_cookie_range_at(c, pfn, &size))
        return false;
    if (iova_cookie_uses_tree(c) || pages > FAST_ROUNDED_MAX)
        return pages == size;
    return iova_cookie_same_class(pages, size);
}

static int restore_fq(struct iova_cookie *c, struct words_reader *r)
{
    uint64_t has = words_get(r);
    if (r->bad || has > 1)
        return IOVA_E_STATE;
    if (!has)
        return 0;
    uint64_t ncpus = words_get(r), size = words_get(r), timeout = words_get(r);
    if (r->bad || c->type != IOVA_COOKIE_IOVA || !c->mainline ||
        ncpus < 1 || ncpus > FQ_MAX_CPUS || size < 2 || size > IOVA_FQ_MAX_SIZE)
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
                !queued_range_ok(c, e->pfn, e->pages) || iova_fq_holds(fq, e->pfn))
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
    c->msi_starts = iova_mem_malloc(depth * sizeof(*c->msi_starts));
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
    int rc = restore_header(c, &r, granule, start, end);
    if (!rc && type == IOVA_COOKIE_WRAPAROUND)
        rc = restore_wrap(c, &r);
    else if (!rc && type == IOVA_COOKIE_RESET_WHEN_EMPTY)
        rc = restore_retired(c, &r);
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
        iova_cookie_destroy(c);
        *err = rc;
        return NULL;
    }
    *err = 0;
    return c;
}
