/*
 * iova_wrap.c - the one-way wraparound IOVA allocator.
 *
 * Hands out the lowest size-aligned range that fits at or above a cursor and
 * at or below the request's limit, skipping what is live; the cursor then
 * moves past it, so addresses are used in one direction only. When nothing
 * fits above the cursor, the allocator wraps: the caller must flush the
 * whole IOTLB (IOVA_EV_FLUSH), and the search starts again from start_pfn.
 *
 * A freed range is not returned to the free space at once: it stays in the
 * tree, flagged RETIRED, until the next wrap's flush. So
 *   W1  no range freed since the last full flush is handed out again
 * (a stale IOTLB entry for it can never translate a new mapping), and an
 * allocation fails only when live ranges really fill the space.
 *
 * Reserved regions are nodes too (RESERVED), kept for good.
 *
 * Other invariants (iova_wrap_check), beside the tree's own (T1-T5):
 *   W2  live, retired and reserved ranges lie in [start_pfn, end_pfn], and
 *       the sentinel [end_pfn + 1, end_pfn + 1] is the highest node;
 *   W3  the cursor lies in [start_pfn, end_pfn + 1]; retired_pfns and
 *       reserved_pfns are what the flagged nodes hold.
 */
#include <stdio.h>

#include "iova_wrap.h"
#include "pow2.h"

int iova_wrap_init(struct iova_wrap *w, uint64_t start_pfn, uint64_t end_pfn)
{
    iova_tree_init(&w->tree);
    w->start_pfn = w->cursor = start_pfn;
    w->end_pfn = end_pfn;
    w->retired_pfns = w->reserved_pfns = w->wraps = 0;
    w->sentinel = iova_tree_node_new(&w->tree, end_pfn + 1, end_pfn + 1);
    if (w->sentinel == IOVA_NIL)
        return IOVA_E_NOMEM;
    iova_tree_insert(&w->tree, w->sentinel);
    return 0;
}

void iova_wrap_release(struct iova_wrap *w)
{
    iova_tree_release(&w->tree);
}

static bool find_from(struct iova_wrap *w, uint64_t from, uint64_t top,
                      uint64_t pages, uint64_t *pfn)
{
    struct iova_search_up s = {
        .from = from, .top = top, .size = pages,
        .mask = ~(roundup_pow_of_two(pages) - 1),
    };
    return iova_tree_search_up(&w->tree, &s, pfn);
}

/* The flush at the wrap makes every retired range safe to reuse. */
static void drop_retired(struct iova_wrap *w)
{
    struct iova_tree *t = &w->tree;
    for (uint32_t x = iova_tree_first(t); x != IOVA_NIL && w->retired_pfns;) {
        uint32_t next = iova_tree_next(t, x);
        if (iova_flags(t, x) & WRAP_NODE_RETIRED) {
            w->retired_pfns -= t->nodes[x].hi - t->nodes[x].lo + 1;
            iova_tree_erase(t, x);
            iova_tree_node_free(t, x);
        }
        x = next;
    }
}

int64_t iova_wrap_alloc(struct iova_wrap *w, uint64_t pages, uint64_t limit_pfn,
                        bool *wrapped)
{
    uint64_t top = (limit_pfn < w->end_pfn ? limit_pfn : w->end_pfn) + 1;
    uint32_t node = iova_tree_node_new(&w->tree, 0, 0);
    if (node == IOVA_NIL)
        return IOVA_E_NOMEM;
    uint64_t pfn;
    bool found = find_from(w, w->cursor, top, pages, &pfn);
    if (!found) {
        drop_retired(w);
        w->cursor = w->start_pfn;
        w->wraps++;
        *wrapped = true;
        found = find_from(w, w->cursor, top, pages, &pfn);
    }
    if (!found) {
        iova_tree_node_free(&w->tree, node);
        return IOVA_E_NOSPC;
    }
    struct iova_node *n = iova_n(&w->tree, node);
    n->lo = pfn;
    n->hi = pfn + pages - 1;
    iova_tree_insert(&w->tree, node);
    w->cursor = pfn + pages;
    return (int64_t)pfn;
}

int iova_wrap_free(struct iova_wrap *w, uint64_t pfn, uint64_t pages)
{
    struct iova_tree *t = &w->tree;
    uint32_t x = iova_tree_find(t, pfn);
    if (x == IOVA_NIL || x == w->sentinel || t->nodes[x].lo != pfn)
        return IOVA_E_NOTFOUND;                  /* no range handed out starts at pfn */
    if (iova_flags(t, x) & (WRAP_NODE_RETIRED | WRAP_NODE_RESERVED))
        return IOVA_E_NOT_LIVE;
    if (t->nodes[x].hi - t->nodes[x].lo + 1 != pages)
        return IOVA_E_FREE_SIZE;
    iova_set_flag(t, x, WRAP_NODE_RETIRED);
    w->retired_pfns += pages;
    return 0;
}

int iova_wrap_reserve(struct iova_wrap *w, uint64_t lo, uint64_t hi)
{
    struct iova_tree *t = &w->tree;
    if (lo > hi)
        return IOVA_E_RANGE;
    if (hi < w->start_pfn || lo > w->end_pfn)
        return 0;                                /* outside the space: nothing to keep out */
    if (lo < w->start_pfn)
        lo = w->start_pfn;
    if (hi > w->end_pfn)
        hi = w->end_pfn;
    uint32_t above = iova_tree_lowest_hi_ge(t, lo);
    if (above != IOVA_NIL && t->nodes[above].lo <= hi)
        return IOVA_E_OVERLAP;
    uint32_t x = iova_tree_node_new(t, lo, hi);
    if (x == IOVA_NIL)
        return IOVA_E_NOMEM;
    iova_tree_insert(t, x);
    iova_set_flag(t, x, WRAP_NODE_RESERVED);
    w->reserved_pfns += hi - lo + 1;
    return 0;
}

int iova_wrap_check(const struct iova_wrap *w, char *msg, size_t msg_len)
{
    const struct iova_tree *t = &w->tree;
    int r = iova_tree_check(t, msg, msg_len);
    if (r)
        return r;
    const char *why = NULL;
    uint64_t retired = 0, reserved = 0;
    uint32_t first = iova_tree_first(t);
    if (iova_tree_last(t) != w->sentinel || t->nodes[w->sentinel].lo != w->end_pfn + 1)
        why = "the sentinel is not the highest node (W2)";
    else if (first != w->sentinel && t->nodes[first].lo < w->start_pfn)
        why = "a range lies below start_pfn (W2)";
    else if (w->cursor < w->start_pfn || w->cursor > w->end_pfn + 1)
        why = "the cursor lies outside the space (W3)";
    for (uint32_t x = first; !why && x != w->sentinel; x = iova_tree_next(t, x))
        if (iova_flags(t, x) & WRAP_NODE_RETIRED)
            retired += t->nodes[x].hi - t->nodes[x].lo + 1;
        else if (iova_flags(t, x) & WRAP_NODE_RESERVED)
            reserved += t->nodes[x].hi - t->nodes[x].lo + 1;
    if (!why && (retired != w->retired_pfns || reserved != w->reserved_pfns))
        why = "retired or reserved pfns do not add up (W3)";
    if (why) {
        if (msg && msg_len)
            snprintf(msg, msg_len, "wraparound: %s", why);
        return IOVA_E_CORRUPT;
    }
    return 0;
}
