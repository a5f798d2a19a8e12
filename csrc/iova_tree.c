/*
 * iova_tree.c - the ordered set of ranges behind an IOVA domain (and behind
 * the wraparound allocator): it knows nothing of either.
 *
 * An AVL tree of disjoint [lo, hi] ranges keyed by lo, whose nodes live in a
 * pool addressed by 26-bit indices (so a node is 48 bytes and a whole domain
 * can be copied or saved without pointer fix-ups). The kernel's results never
 * depend on the tree's shape (only on the ordered set and on which node
 * objects the cache pointers name), so any balanced tree serves. AVL keeps
 * insert and erase short: each is one descent that records its path, then
 * one iterative walk back up that path rebalancing and refreshing the
 * augmented fields (fix_path) - no recursion, and no parent links.
 *
 * Invariants (iova_tree_check verifies each from scratch):
 *   T1  in-order, ranges are sorted and disjoint: prev.hi < lo <= hi;
 *   T2  every node's height is 1 + the larger child height, and the two
 *       child heights differ by at most one;
 *   T3  gap_lo is the predecessor's hi + 1, or 0 for the lowest node, so a
 *       node owns the free gap [gap_lo, lo) below it;
 *   T4  sub_len / sub_fit are the maxima of gap length / gap_fit over the
 *       node's own gap and both subtrees;
 *   T5  count and pfns match the nodes in the tree, and every pool slot is
 *       either in the tree or on the free list (flagged FREE).
 *
 * The searches (iova_tree_search_*) are described in iova_tree.h: the
 * linear one walks gaps downward one node at a time as the kernel does; the
 * augmented one prunes whole subtrees whose best gap is too small, so it
 * costs O(log n) however fragmented the space is.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iova_mem_internal.h"
#include "iova_tree.h"

#define HEIGHT_SHIFT IOVA_IDX_BITS
#define MAX_DEPTH IOVA_PATH_MAX

/* ---- pool --------------------------------------------------------------- */

int iova_tree_init(struct iova_tree *t)
{
    memset(t, 0, sizeof(*t));
    t->root = IOVA_NIL;
    t->free_head = IOVA_NIL;
    return 0;
}

void iova_tree_release(struct iova_tree *t)
{
    free(t->nodes);
    iova_tree_init(t);
}

static int pool_grow(struct iova_tree *t)
{
    uint64_t ncap = t->cap ? (uint64_t)t->cap * 2 : 64;
    if (ncap > IOVA_MAX_NODES)
        ncap = IOVA_MAX_NODES;
    if (ncap <= t->cap)
        return IOVA_E_TOOMANY;
    struct iova_node *n = iova_mem_realloc(t->nodes, ncap * sizeof(*n));
    if (!n)
        return IOVA_E_NOMEM;
    t->nodes = n;
    if (t->cap == 0) {
        /* slot 0: the sentinel (iova_tree.h) - height 0, no gaps */
        memset(&n[IOVA_NIL], 0, sizeof(*n));
        n[IOVA_NIL].right_f = IOVA_NODE_FREE << IOVA_IDX_BITS;
        t->top = 1;
    }
    t->cap = (uint32_t)ncap;
    return 0;
}

uint32_t iova_tree_node_new(struct iova_tree *t, uint64_t lo, uint64_t hi)
{
    uint32_t i;
    if (t->free_head != IOVA_NIL) {
        i = t->free_head;
        t->free_head = iova_left(t, i);
    } else {
        if (t->top == t->cap && pool_grow(t) != 0)
            return IOVA_NIL;
        i = t->top++;
    }
    struct iova_node *n = iova_n(t, i);
    n->left_h = IOVA_NIL | (1u << HEIGHT_SHIFT);
    n->right_f = IOVA_NIL;
    n->lo = lo;
    n->hi = hi;
    n->gap_lo = lo;
    n->sub_len = 0;
    n->sub_fit = 0;
    return i;
}

void iova_tree_node_free(struct iova_tree *t, uint32_t i)
{
    struct iova_node *n = iova_n(t, i);
    n->left_h = t->free_head;
    n->right_f = IOVA_NIL | (IOVA_NODE_FREE << IOVA_IDX_BITS);
    t->free_head = i;
}

/* ---- gap arithmetic ----------------------------------------------------- */

/*
 * The largest s such that a block of s pages starting at a multiple of
 * roundup_pow_of_two(s) fits in [gap_lo, end). Fitting is monotone in s (a
 * spot aligned for a larger block is aligned for a smaller one), so
 * "gap_fit >= size" is exactly "a size-aligned request of size fits".
 *
 * In O(1): with 2^K <= len < 2^(K+1), the largest whole aligned block in
 * the gap is 2^K or 2^(K-1) (any span of 2^K holds an aligned 2^(K-1)).
 * Call it 2^k. A larger answer can only be a partial block at the next
 * alignment, 2^(k+1): any block above 2^(k+1) pages would hold a whole
 * aligned 2^(k+1), contradicting k. So the answer is the larger of 2^k and
 * what fits from the first multiple of 2^(k+1).
 */
static inline uint64_t align_up(uint64_t x, unsigned k)
{
    uint64_t m = (1ull << k) - 1;
    return (x + m) & ~m;           /* gap_lo <= 2^63 here, so this cannot wrap */
}

/* Inline: the path repair asks for it at most levels of every insert and
 * erase, and the call costs as much as the arithmetic. */
static inline uint64_t gap_fit(uint64_t gap_lo, uint64_t end)
{
    if (end <= gap_lo)
        return 0;
    if (gap_lo == 0)
        return end;                /* 0 is aligned to everything */
    uint64_t len = end - gap_lo;
    unsigned k = 63 - (unsigned)__builtin_clzll(len);
    if (align_up(gap_lo, k) > end - (1ull << k))
        k--;
    uint64_t best = 1ull << k;
    if (k < 63) {
        uint64_t p = align_up(gap_lo, k + 1);
        if (p < end && end - p > best)
            best = end - p < (2ull << k) ? end - p : (2ull << k);
    }
    return best;
}

static inline uint64_t own_len(const struct iova_node *n)
{
    return n->lo - n->gap_lo;
}

static inline uint64_t own_fit(const struct iova_node *n)
{
    return gap_fit(n->gap_lo, n->lo);
}

/* ---- AVL ---------------------------------------------------------------- */

static inline unsigned height(const struct iova_tree *t, uint32_t i)
{
    return t->nodes[i].left_h >> HEIGHT_SHIFT;    /* the sentinel's is 0 */
}

static inline void set_left(struct iova_tree *t, uint32_t i, uint32_t c)
{
    struct iova_node *n = iova_n(t, i);
    n->left_h = (n->left_h & ~IOVA_IDX_MASK) | c;
}

static inline void set_right(struct iova_tree *t, uint32_t i, uint32_t c)
{
    struct iova_node *n = iova_n(t, i);
    n->right_f = (n->right_f & ~IOVA_IDX_MASK) | c;
}

/*
 * Points node x's link on side `right` at c. The path repair relinks on
 * whatever side the descent took, which is random: indexing instead of
 * branching avoids a mispredicted branch per level. (The descents
 * themselves keep their branches: a select there would put both loads of
 * every level on the critical path, which measured no faster.)
 */
static inline void set_child(struct iova_tree *t, uint32_t x, bool right, uint32_t c)
{
    _Static_assert(offsetof(struct iova_node, right_f) ==
                   offsetof(struct iova_node, left_h) + sizeof(uint32_t),
                   "the two link words are adjacent");
    uint32_t *link = &iova_n(t, x)->left_h + right;
    *link = (*link & ~IOVA_IDX_MASK) | c;
}

static inline uint64_t max3(uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t m = a > b ? a : b;
    return m > c ? m : c;
}

/*
 * Recomputes node n's height and subtree maxima from its children l and r
 * (the sentinel stands in for a missing one). Returns whether any of the
 * three changed: if not, nothing above n can change either.
 */
static inline bool refresh(struct iova_node *n, const struct iova_node *l,
                           const struct iova_node *r)
{
    unsigned hl = l->left_h >> HEIGHT_SHIFT, hr = r->left_h >> HEIGHT_SHIFT;
    uint32_t h = 1 + (hl > hr ? hl : hr);
    uint64_t len = own_len(n);
    uint64_t slen = max3(len, l->sub_len, r->sub_len);
    /* gap_fit never exceeds the gap's length: when a child already beats
     * the length, the (costlier) fit of our own gap cannot matter. */
    uint64_t cf = l->sub_fit > r->sub_fit ? l->sub_fit : r->sub_fit;
    uint64_t sfit = len <= cf ? cf : (own_fit(n) > cf ? own_fit(n) : cf);
    uint32_t left_h = (n->left_h & IOVA_IDX_MASK) | (h << HEIGHT_SHIFT);
    /* bitwise, not short-circuit: one branch (in the caller) instead of three */
    bool changed = (left_h != n->left_h) | (slen != n->sub_len) | (sfit != n->sub_fit);
    n->left_h = left_h;
    n->sub_len = slen;
    n->sub_fit = sfit;
    return changed;
}

static void update(struct iova_tree *t, uint32_t i)
{
    struct iova_node *n = iova_n(t, i);
    refresh(n, iova_n(t, n->left_h & IOVA_IDX_MASK), iova_n(t, n->right_f & IOVA_IDX_MASK));
}

static uint32_t rotate_right(struct iova_tree *t, uint32_t i)
{
    uint32_t l = iova_left(t, i);
    set_left(t, i, iova_right(t, l));
    update(t, i);
    set_right(t, l, i);
    update(t, l);
    return l;
}

static uint32_t rotate_left(struct iova_tree *t, uint32_t i)
{
    uint32_t r = iova_right(t, i);
    set_right(t, i, iova_left(t, r));
    update(t, i);
    set_left(t, r, i);
    update(t, r);
    return r;
}

/*
 * Restores T2 at i (children already balanced) and refreshes T4. Returns
 * the subtree's root; *changed says whether its parent can see any
 * difference (a new root, height or maxima).
 */
static inline uint32_t rebalance(struct iova_tree *t, uint32_t i, bool *changed)
{
    struct iova_node *n = iova_n(t, i);
    uint32_t l = n->left_h & IOVA_IDX_MASK, r = n->right_f & IOVA_IDX_MASK;
    const struct iova_node *ln = iova_n(t, l), *rn = iova_n(t, r);
    int bf = (int)(ln->left_h >> HEIGHT_SHIFT) - (int)(rn->left_h >> HEIGHT_SHIFT);
    if (__builtin_expect(bf > 1, 0)) {
        *changed = true;
        if (height(t, iova_left(t, l)) < height(t, iova_right(t, l)))
            set_left(t, i, rotate_left(t, l));
        return rotate_right(t, i);
    }
    if (__builtin_expect(bf < -1, 0)) {
        *changed = true;
        if (height(t, iova_right(t, r)) < height(t, iova_left(t, r)))
            set_right(t, i, rotate_right(t, r));
        return rotate_left(t, i);
    }
    *changed = refresh(n, ln, rn);
    return i;
}

/*
 * Insert and erase walk down once, remembering the path, then repair the
 * path bottom-up: relink the child (which a rotation below may have
 * replaced), rebalance, refresh the maxima. A level whose subtree root,
 * height and maxima all come out unchanged leaves everything above it as it
 * was, so the repair stops there - except that a node whose own gap moved
 * (the `must` level: the successor of the inserted or erased node) must
 * still be reached, and the levels in between are skipped.
 */
static void fix_path(struct iova_tree *t, const uint32_t *path,
                     const uint8_t *dirs, int depth, uint32_t sub, int must)
{
    int i = depth - 1;
    while (i >= 0) {
        uint32_t x = path[i];
        set_child(t, x, dirs[i], sub);
        bool changed;
        sub = rebalance(t, x, &changed);
        if (!changed) {
            if (i <= must)
                return;                    /* nothing above can change */
            if (must >= 0) {               /* jump to the node whose gap moved */
                i = must;
                sub = path[must + 1];
                continue;
            }
        }
        i--;
    }
    t->root = sub;
}

void iova_tree_insert(struct iova_tree *t, uint32_t i)
{
    uint32_t path[MAX_DEPTH];
    uint8_t dirs[MAX_DEPTH];
    int depth = 0, must = MAX_DEPTH;
    struct iova_node *n = iova_n(t, i);
    uint32_t pred = IOVA_NIL, succ = IOVA_NIL;
    uint64_t key = n->lo;
    for (uint32_t x = t->root; x != IOVA_NIL; depth++) {
        path[depth] = x;
        if (t->nodes[x].lo < key) {
            pred = x;
            dirs[depth] = 1;
            x = iova_right(t, x);
        } else {
            succ = x;
            must = depth;
            dirs[depth] = 0;
            x = iova_left(t, x);
        }
    }
    /* T3 for the new node and for its successor, whose gap it splits. */
    n->gap_lo = pred == IOVA_NIL ? 0 : t->nodes[pred].hi + 1;
    if (succ != IOVA_NIL)
        t->nodes[succ].gap_lo = n->hi + 1;
    n->left_h = IOVA_NIL | (1u << HEIGHT_SHIFT);
    set_right(t, i, IOVA_NIL);
    update(t, i);
    fix_path(t, path, dirs, depth, i, must);
    t->count++;
    if (n->lo != IOVA_U64_MAX)
        t->pfns += n->hi - n->lo + 1;
}

uint32_t iova_tree_find_path(struct iova_tree *t, uint64_t pfn, struct iova_path *p)
{
    /* Ranges are disjoint, so turning by [lo, hi] against pfn takes the
     * same turns as turning by lo against the found node's lo. */
    int depth = 0, must = IOVA_PATH_MAX;
    uint32_t succ = IOVA_NIL;
    uint32_t x = t->root;
    while (x != IOVA_NIL) {
        const struct iova_node *n = iova_n(t, x);
        if (pfn < n->lo) {
            p->node[depth] = x;
            p->dir[depth] = 0;
            succ = x;
            must = depth++;
            x = iova_left(t, x);
        } else if (pfn > n->hi) {
            p->node[depth] = x;
            p->dir[depth++] = 1;
            x = iova_right(t, x);
        } else {
            break;
        }
    }
    p->depth = depth;
    p->must = must;
    p->succ = succ;
    return x;
}

uint32_t iova_tree_erase(struct iova_tree *t, uint32_t i)
{
    struct iova_path p;
    uint32_t x = iova_tree_find_path(t, t->nodes[i].lo, &p);
    (void)x;                              /* i itself: its lo is in no other range */
    return iova_tree_erase_path(t, i, &p);
}

uint32_t iova_tree_erase_path(struct iova_tree *t, uint32_t i, struct iova_path *p)
{
    uint32_t *path = p->node;
    uint8_t *dirs = p->dir;
    int depth = p->depth, must = p->must;
    struct iova_node *n = iova_n(t, i);
    uint32_t succ = p->succ;
    uint32_t r = iova_right(t, i);
    if (r != IOVA_NIL) {
        /*
         * Two children (or a right one): swap i with its successor m, the
         * lowest node on its right, so that i has no left child. Links are
         * swapped, not fields - cache pointers name node slots, which must
         * keep their ranges. m inherits i's height and maxima, so the path
         * repair compares against what i's parent used to see.
         */
        int base = depth;
        path[depth] = IOVA_NIL;            /* m, once found */
        dirs[depth++] = 1;
        uint32_t m = r;
        while (iova_left(t, m) != IOVA_NIL) {
            path[depth] = m;
            dirs[depth++] = 0;
            m = iova_left(t, m);
        }
        uint32_t mr = iova_right(t, m);
        struct iova_node *mn = iova_n(t, m);
        mn->left_h = (n->left_h & ~IOVA_IDX_MASK) | iova_left(t, i);
        set_right(t, m, r == m ? i : r);
        mn->sub_len = n->sub_len;
        mn->sub_fit = n->sub_fit;
        if (base == 0)
            t->root = m;
        else if (dirs[base - 1])
            set_right(t, path[base - 1], m);
        else
            set_left(t, path[base - 1], m);
        if (r != m)
            set_left(t, path[depth - 1], i);
        path[base] = m;
        set_left(t, i, IOVA_NIL);
        set_right(t, i, mr);
        succ = m;
        must = base;
    }
    /* The successor inherits the erased node's gap (T3). */
    if (succ != IOVA_NIL)
        t->nodes[succ].gap_lo = n->gap_lo;
    uint32_t repl = iova_right(t, i) != IOVA_NIL ? iova_right(t, i) : iova_left(t, i);
    if (depth == 0)
        t->root = repl;
    else
        fix_path(t, path, dirs, depth, repl, must);
    t->count--;
    if (n->lo != IOVA_U64_MAX)
        t->pfns -= n->hi - n->lo + 1;
    return succ;
}

void iova_tree_lo_changed(struct iova_tree *t, uint32_t i)
{
    uint32_t path[MAX_DEPTH];
    uint8_t dirs[MAX_DEPTH];
    int depth = 0;
    uint64_t key = t->nodes[i].lo;
    for (uint32_t x = t->root; x != i; depth++) {
        path[depth] = x;
        dirs[depth] = key > t->nodes[x].lo;
        x = dirs[depth] ? iova_right(t, x) : iova_left(t, x);
    }
    update(t, i);
    fix_path(t, path, dirs, depth, i, MAX_DEPTH);
}

/* ---- lookups ------------------------------------------------------------ */

uint32_t iova_tree_find(struct iova_tree *t, uint64_t pfn)
{
    uint32_t x = t->root;
    while (x != IOVA_NIL) {
        const struct iova_node *n = iova_n(t, x);
        if (pfn < n->lo)
            x = iova_left(t, x);
        else if (pfn > n->hi)
            x = iova_right(t, x);
        else
            return x;
    }
    return IOVA_NIL;
}

uint32_t iova_tree_first(const struct iova_tree *t)
{
    uint32_t x = t->root;
    if (x == IOVA_NIL)
        return x;
    while (iova_left(t, x) != IOVA_NIL)
        x = iova_left(t, x);
    return x;
}

uint32_t iova_tree_last(const struct iova_tree *t)
{
    uint32_t x = t->root;
    if (x == IOVA_NIL)
        return x;
    while (iova_right(t, x) != IOVA_NIL)
        x = iova_right(t, x);
    return x;
}

/* The lowest node whose lo (or hi) is >= key. One descent serves both
 * keys: ranges are disjoint, so hi is ordered like lo. */
static inline uint32_t lowest_ge(const struct iova_tree *t, uint64_t key, bool by_hi)
{
    uint32_t x = t->root, best = IOVA_NIL;
    while (x != IOVA_NIL) {
        const struct iova_node *n = iova_n(t, x);
        if ((by_hi ? n->hi : n->lo) >= key) {
            best = x;
            x = iova_left(t, x);
        } else {
            x = iova_right(t, x);
        }
    }
    return best;
}

uint32_t iova_tree_lowest_lo_ge(const struct iova_tree *t, uint64_t key)
{
    return lowest_ge(t, key, false);
}

uint32_t iova_tree_lowest_hi_ge(const struct iova_tree *t, uint64_t key)
{
    return lowest_ge(t, key, true);
}

uint32_t iova_tree_next(const struct iova_tree *t, uint32_t i)
{
    uint64_t key = t->nodes[i].lo;
    return key == IOVA_U64_MAX ? IOVA_NIL : iova_tree_lowest_lo_ge(t, key + 1);
}

uint32_t iova_tree_prev(const struct iova_tree *t, uint32_t i)
{
    uint64_t key = t->nodes[i].lo;
    uint32_t x = t->root, best = IOVA_NIL;
    while (x != IOVA_NIL) {
        if (t->nodes[x].lo < key) {
            best = x;
            x = iova_right(t, x);
        } else {
            x = iova_left(t, x);
        }
    }
    return best;
}

/* ---- searches ----------------------------------------------------------- */

enum gap_verdict { GAP_FITS, GAP_NEXT, GAP_STOP };

/*
 * Tries one gap [gap_lo, gap_top) with the search's clipping. `bottom` says
 * it is the gap below the lowest node (where 4.10 applies its floor).
 * GAP_STOP means no lower gap can fit either: the gap's top is already below
 * the size, or (6.12) its best candidate is already below the floor.
 */
static enum gap_verdict try_gap(const struct iova_search *s, uint64_t gap_lo,
                                uint64_t gap_top, bool bottom, uint64_t *pfn)
{
    uint64_t t = gap_top < s->top ? gap_top : s->top;
    if (t < s->size)
        return GAP_STOP;
    uint64_t cand = (t - s->size) & s->mask;
    uint64_t b = gap_lo;
    if ((s->floor_all || bottom) && s->floor > b)
        b = s->floor;
    if (cand >= b) {
        *pfn = cand;
        return GAP_FITS;
    }
    if (s->floor_all && cand < s->floor)
        return GAP_STOP;
    return GAP_NEXT;
}

/*
 * The kernel's way: gap by gap, downward from the start node. A small stack
 * of the ancestors still to visit makes each step amortised O(1). Gives up
 * after `budget` gaps (WALK_UNDECIDED), which lets the augmented search try
 * the few gaps nearest the start first: in steady churn the answer is
 * almost always there, and a short walk beats any descent.
 */
enum walk_result { WALK_FOUND, WALK_FAILED, WALK_UNDECIDED };

static enum walk_result walk_gaps(struct iova_tree *t, const struct iova_search *s,
                                  uint64_t *pfn, uint64_t budget)
{
    uint32_t stack[MAX_DEPTH];
    int sp = 0;
    uint32_t cur;
    enum gap_verdict v;

    if (s->start == IOVA_NIL) {
        uint32_t last = iova_tree_last(t);
        uint64_t gl = last == IOVA_NIL ? 0 : t->nodes[last].hi + 1;
        v = try_gap(s, gl, IOVA_U64_MAX, last == IOVA_NIL, pfn);
        if (v != GAP_NEXT)
            return v == GAP_FITS ? WALK_FOUND : WALK_FAILED;
        cur = last;
    } else {
        cur = s->start;
    }
    if (cur == IOVA_NIL)
        return WALK_FAILED;
    /*
     * The ancestors of the start node that lie below it are pushed only once
     * the walk needs them (its left subtree used up): the short walk of the
     * augmented search usually stops at the first gap, and then the descent
     * that finds them would be wasted. Nodes pushed from the left subtree
     * all lie above those ancestors, so the order on the stack still holds.
     */
    uint32_t start = cur;
    bool positioned = false;
    for (; cur != IOVA_NIL; budget--) {
        if (budget == 0)
            return WALK_UNDECIDED;
        t->visited++;
        const struct iova_node *n = iova_n(t, cur);
        /* only the lowest node owns a gap starting at 0 (T3) */
        v = try_gap(s, n->gap_lo, n->lo, n->gap_lo == 0, pfn);
        if (v != GAP_NEXT)
            return v == GAP_FITS ? WALK_FOUND : WALK_FAILED;
        /* step to the predecessor */
        if (iova_left(t, cur) != IOVA_NIL) {
            uint32_t x = iova_left(t, cur);
            while (iova_right(t, x) != IOVA_NIL) {
                stack[sp++] = x;
                x = iova_right(t, x);
            }
            cur = x;
            continue;
        }
        if (sp == 0 && !positioned) {
            uint64_t key = t->nodes[start].lo;
            for (uint32_t x = t->root; x != start;) {
                if (key > t->nodes[x].lo) {
                    stack[sp++] = x;
                    x = iova_right(t, x);
                } else {
                    x = iova_left(t, x);
                }
            }
            positioned = true;
        }
        cur = sp > 0 ? stack[--sp] : IOVA_NIL;
    }
    return WALK_FAILED;
}

bool iova_tree_search_linear(struct iova_tree *t, const struct iova_search *s,
                             uint64_t *pfn)
{
    return walk_gaps(t, s, pfn, UINT64_MAX) == WALK_FOUND;
}

static inline uint64_t own_value(const struct iova_node *n, bool use_fit)
{
    return use_fit ? own_fit(n) : own_len(n);
}

static inline uint64_t sub_value(const struct iova_tree *t, uint32_t i,
                                 bool use_fit)
{
    return use_fit ? t->nodes[i].sub_fit : t->nodes[i].sub_len;
}

/*
 * The highest node with lo <= key whose own, unclipped gap fits size, in
 * O(log n). The nodes at or below key, in descending order, are: for each
 * node x where the way down to key turned right (deepest first), x itself,
 * then x's left subtree. So: go down once, stacking those x (a subtree
 * whose best gap is too small holds no answer, so the way down stops
 * there), then take them back deepest first; the first whose own gap fits
 * wins, or the first whose left subtree holds a fit, which one descent
 * that cannot fail then finds.
 */
static uint32_t rightmost_fit(struct iova_tree *t, uint32_t x, uint64_t key,
                              uint64_t size, bool use_fit)
{
    uint32_t turned[MAX_DEPTH];
    int n = 0;
    while (x != IOVA_NIL && sub_value(t, x, use_fit) >= size) {
        t->visited++;
        if (t->nodes[x].lo > key) {
            x = iova_left(t, x);
        } else {
            turned[n++] = x;
            x = iova_right(t, x);
        }
    }
    while (n > 0) {
        x = turned[--n];
        if (own_value(iova_n(t, x), use_fit) >= size)
            return x;
        uint32_t l = iova_left(t, x);
        if (l != IOVA_NIL && sub_value(t, l, use_fit) >= size) {
            x = l;
            for (;;) {                 /* some gap in x's subtree fits */
                t->visited++;
                uint32_t r = iova_right(t, x);
                if (r != IOVA_NIL && sub_value(t, r, use_fit) >= size)
                    x = r;
                else if (own_value(iova_n(t, x), use_fit) >= size)
                    return x;
                else
                    x = iova_left(t, x);
            }
        }
    }
    return IOVA_NIL;
}

/*
 * Same answer as the linear walk. Only two gaps can be clipped: the one
 * straddling `top` (owned by the lowest node at or above it), tried first,
 * and the one straddling the floor. Every gap between them is whole, so
 * "the highest gap that fits" among them is a query on the subtree maxima;
 * if the gap it finds reaches below the floor, that gap is judged clipped,
 * and nothing lower can fit anyway.
 */
/* Gaps tried one by one before descending: in churn the first gap below
 * the cached node often fits, and then a short walk beats any descent. */
#ifndef SHORT_WALK
#define SHORT_WALK 2
#endif

bool iova_tree_search_augmented(struct iova_tree *t,
                                const struct iova_search *s, uint64_t *pfn)
{
    enum walk_result w = walk_gaps(t, s, pfn, SHORT_WALK);
    if (w != WALK_UNDECIDED)
        return w == WALK_FOUND;

    bool use_fit = s->mask != IOVA_U64_MAX;
    uint32_t upper = IOVA_NIL;   /* node owning the top-clipped gap */
    uint32_t bound;              /* highest node whose gap is not clipped at top */
    enum gap_verdict v;

    if (s->start == IOVA_NIL) {
        upper = iova_tree_lowest_lo_ge(t, s->top);
        if (upper == IOVA_NIL) {
            uint32_t last = iova_tree_last(t);
            uint64_t gl = last == IOVA_NIL ? 0 : t->nodes[last].hi + 1;
            v = try_gap(s, gl, IOVA_U64_MAX, last == IOVA_NIL, pfn);
            if (v != GAP_NEXT)
                return v == GAP_FITS;
            bound = last;
        } else {
            bound = iova_tree_prev(t, upper);
        }
    } else if (t->nodes[s->start].lo >= s->top) {
        upper = iova_tree_lowest_lo_ge(t, s->top);
        bound = iova_tree_prev(t, upper);
    } else {
        bound = s->start;
    }
    if (upper != IOVA_NIL) {
        const struct iova_node *n = iova_n(t, upper);
        v = try_gap(s, n->gap_lo, n->lo, bound == IOVA_NIL, pfn);
        if (v != GAP_NEXT)
            return v == GAP_FITS;
    }
    if (bound == IOVA_NIL)
        return false;

    /* The highest node at or below `bound` whose whole gap fits. Gaps above
     * it cannot fit even clipped, and nodes below it come later in the
     * walk; only its own gap may still be clipped by the floor. */
    uint32_t r = rightmost_fit(t, t->root, t->nodes[bound].lo, s->size, use_fit);
    if (r == IOVA_NIL)
        return false;
    const struct iova_node *n = iova_n(t, r);
    bool bottom = n->gap_lo == 0;        /* a predecessor would end below 2^64-1 */
    bool clipped = s->floor_all ? n->gap_lo < s->floor : bottom && s->floor > 0;
    if (!clipped) {
        *pfn = (n->lo - s->size) & s->mask;
        return true;
    }
    return try_gap(s, n->gap_lo, n->lo, bottom, pfn) == GAP_FITS;
}

/* The lowest node with lo > key whose own, unclipped gap fits size: the
 * mirror image of rightmost_fit, for allocators that search upward. */
static uint32_t leftmost_fit(struct iova_tree *t, uint32_t x, uint64_t key,
                             uint64_t size, bool use_fit)
{
    while (x != IOVA_NIL) {
        t->visited++;
        if (sub_value(t, x, use_fit) < size)
            return IOVA_NIL;
        if (t->nodes[x].lo <= key) {
            x = iova_right(t, x);
            continue;
        }
        uint32_t l = leftmost_fit(t, iova_left(t, x), key, size, use_fit);
        if (l != IOVA_NIL)
            return l;
        if (own_value(iova_n(t, x), use_fit) >= size)
            return x;
        x = iova_right(t, x);
    }
    return IOVA_NIL;
}

/* Lowest aligned start in [max(gap_lo, from), min(gap_top, top)) that fits. */
static bool fits_low(const struct iova_search_up *s, uint64_t gap_lo,
                     uint64_t gap_top, uint64_t *pfn)
{
    uint64_t b = gap_lo > s->from ? gap_lo : s->from;
    uint64_t e = gap_top < s->top ? gap_top : s->top;
    uint64_t p = (b + ~s->mask) & s->mask;      /* align up; pfns stay below 2^63 */
    if (p < b || p >= e || e - p < s->size)
        return false;
    *pfn = p;
    return true;
}

bool iova_tree_search_up(struct iova_tree *t, const struct iova_search_up *s,
                         uint64_t *pfn)
{
    uint32_t first = s->from == IOVA_U64_MAX ? IOVA_NIL
                                             : iova_tree_lowest_lo_ge(t, s->from + 1);
    if (first == IOVA_NIL)
        return false;
    const struct iova_node *n = iova_n(t, first);
    if (fits_low(s, n->gap_lo, n->lo, pfn))
        return true;
    uint32_t r = leftmost_fit(t, t->root, n->lo, s->size, s->mask != IOVA_U64_MAX);
    if (r == IOVA_NIL)
        return false;
    n = iova_n(t, r);
    return fits_low(s, n->gap_lo, n->lo, pfn);
}

/* ---- validator ---------------------------------------------------------- */

struct check_ctx {
    const struct iova_tree *t;
    char *msg;
    size_t msg_len;
    bool have_prev;
    uint64_t prev_hi;
    uint64_t count;
    uint64_t pfns;
    int err;
};

static void fail(struct check_ctx *c, const char *what, uint32_t i)
{
    if (c->err)
        return;
    c->err = IOVA_E_CORRUPT;
    if (c->msg && c->msg_len)
        snprintf(c->msg, c->msg_len, "tree: %s at node %u [%llu, %llu]", what,
                 i, (unsigned long long)c->t->nodes[i].lo,
                 (unsigned long long)c->t->nodes[i].hi);
}

/* In-order walk; returns the subtree height and fills its maxima. */
static unsigned check_at(struct check_ctx *c, uint32_t i, int depth,
                         uint64_t *slen, uint64_t *sfit)
{
    const struct iova_tree *t = c->t;
    *slen = *sfit = 0;
    if (i == IOVA_NIL || c->err)
        return 0;
    if (i >= t->top || depth > MAX_DEPTH) {
        c->err = IOVA_E_CORRUPT;
        if (c->msg && c->msg_len)
            snprintf(c->msg, c->msg_len, "tree: bad link %u at depth %d", i, depth);
        return 0;
    }
    const struct iova_node *n = iova_n(t, i);
    uint64_t llen, lfit, rlen, rfit;
    unsigned hl = check_at(c, iova_left(t, i), depth + 1, &llen, &lfit);
    if (c->err)
        return 0;
    if (iova_flags(t, i) & IOVA_NODE_FREE)
        fail(c, "free slot linked in the tree", i);
    if (n->lo > n->hi)
        fail(c, "lo > hi (T1)", i);
    if (c->have_prev && n->lo <= c->prev_hi)
        fail(c, "overlaps or is out of order with its predecessor (T1)", i);
    uint64_t want_gap = c->have_prev ? c->prev_hi + 1 : 0;
    if (n->gap_lo != want_gap)
        fail(c, "gap_lo is not the predecessor's hi + 1 (T3)", i);
    c->have_prev = true;
    c->prev_hi = n->hi;
    c->count++;
    if (n->lo != IOVA_U64_MAX)   /* the 6.12 anchor is not counted */
        c->pfns += n->hi - n->lo + 1;
    unsigned hr = check_at(c, iova_right(t, i), depth + 1, &rlen, &rfit);
    if (c->err)
        return 0;
    unsigned h = 1 + (hl > hr ? hl : hr);
    if (height(t, i) != h)
        fail(c, "stored height is wrong (T2)", i);
    if (hl > hr + 1 || hr > hl + 1)
        fail(c, "AVL balance violated (T2)", i);
    *slen = max3(own_len(n), llen, rlen);
    *sfit = max3(own_fit(n), lfit, rfit);
    if (n->sub_len != *slen || n->sub_fit != *sfit)
        fail(c, "subtree gap maxima are stale (T4)", i);
    return h;
}

int iova_tree_check(const struct iova_tree *t, char *msg, size_t msg_len)
{
    struct check_ctx c = { .t = t, .msg = msg, .msg_len = msg_len };
    uint64_t slen, sfit;
    check_at(&c, t->root, 0, &slen, &sfit);
    if (c.err)
        return c.err;
    if (c.count != t->count || c.pfns != t->pfns) {
        if (msg && msg_len)
            snprintf(msg, msg_len, "tree: holds %llu nodes / %llu pfns, counters say %llu / %llu (T5)",
                     (unsigned long long)c.count, (unsigned long long)c.pfns,
                     (unsigned long long)t->count, (unsigned long long)t->pfns);
        return IOVA_E_CORRUPT;
    }
    uint64_t nfree = 0;
    for (uint32_t i = t->free_head; i != IOVA_NIL; i = iova_left(t, i)) {
        if (i >= t->top || !(iova_flags(t, i) & IOVA_NODE_FREE) || ++nfree > t->top) {
            if (msg && msg_len)
                snprintf(msg, msg_len, "tree: free list broken at slot %u (T5)", i);
            return IOVA_E_CORRUPT;
        }
    }
    if (t->top > 0) {
        const struct iova_node *z = iova_n(t, IOVA_NIL);
        if (z->left_h != 0 || z->right_f != (IOVA_NODE_FREE << IOVA_IDX_BITS) ||
            z->sub_len != 0 || z->sub_fit != 0) {
            if (msg && msg_len)
                snprintf(msg, msg_len, "tree: the sentinel slot was written to (T5)");
            return IOVA_E_CORRUPT;
        }
        nfree++;                           /* the sentinel: neither live nor listed */
    }
    if (nfree + t->count != t->top) {
        if (msg && msg_len)
            snprintf(msg, msg_len, "tree: %llu free + %llu live slots != %u used (T5)",
                     (unsigned long long)nfree, (unsigned long long)t->count, t->top);
        return IOVA_E_CORRUPT;
    }
    return 0;
}
