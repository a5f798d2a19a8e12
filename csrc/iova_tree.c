/*
 * iova_tree.c - the ordered set of ranges behind an IOVA domain.
 *
 * An AVL tree of disjoint [lo, hi] ranges keyed by lo, whose nodes live in a
 * pool addressed by 26-bit indices (so a node is 48 bytes and a whole domain
 * can be copied or saved without pointer fix-ups). The kernel's results never
 * depend on the tree's shape (only on the ordered set and on which node
 * objects the cache pointers name), so any balanced tree serves; AVL keeps
 * insert and erase short and recursive, which makes maintaining the
 * augmented fields on the way back up straightforward.
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
 * The searches (iova_tree_search_*) are described in iova_internal.h: the
 * linear one walks gaps downward one node at a time as the kernel does; the
 * augmented one prunes whole subtrees whose best gap is too small, so it
 * costs O(log n) however fragmented the space is.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iova_internal.h"

#define HEIGHT_SHIFT IOVA_IDX_BITS
#define MAX_DEPTH 64   /* an AVL tree of 2^26 nodes is at most 38 deep */

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
    struct iova_node *n = realloc(t->nodes, ncap * sizeof(*n));
    if (!n)
        return IOVA_E_NOMEM;
    t->nodes = n;
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
 * The best spot for each alignment is the first multiple at or above
 * gap_lo; stepping x += lowbit(x) visits those multiples in order of
 * increasing alignment.
 */
uint64_t iova_gap_fit(uint64_t gap_lo, uint64_t end)
{
    uint64_t best = 0, x = gap_lo;
    while (x < end) {
        if (x == 0)                       /* 0 is aligned to everything */
            return end;
        uint64_t lb = x & (~x + 1);
        uint64_t room = end - x;
        uint64_t v = lb < room ? lb : room;
        if (v > best)
            best = v;
        if (lb >= room)                   /* next multiple lies past end */
            break;
        x += lb;
    }
    return best;
}

static inline uint64_t own_len(const struct iova_node *n)
{
    return n->lo - n->gap_lo;
}

static inline uint64_t own_fit(const struct iova_node *n)
{
    return iova_gap_fit(n->gap_lo, n->lo);
}

/* ---- AVL ---------------------------------------------------------------- */

static inline unsigned height(const struct iova_tree *t, uint32_t i)
{
    return i == IOVA_NIL ? 0 : t->nodes[i].left_h >> HEIGHT_SHIFT;
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

static inline uint64_t max3(uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t m = a > b ? a : b;
    return m > c ? m : c;
}

/* Recomputes node i's height and subtree maxima from its children. */
static void update(struct iova_tree *t, uint32_t i)
{
    struct iova_node *n = iova_n(t, i);
    uint32_t l = iova_left(t, i), r = iova_right(t, i);
    unsigned hl = height(t, l), hr = height(t, r);
    unsigned h = 1 + (hl > hr ? hl : hr);
    n->left_h = (n->left_h & IOVA_IDX_MASK) | (h << HEIGHT_SHIFT);
    uint64_t ll = l == IOVA_NIL ? 0 : t->nodes[l].sub_len;
    uint64_t rl = r == IOVA_NIL ? 0 : t->nodes[r].sub_len;
    uint64_t lf = l == IOVA_NIL ? 0 : t->nodes[l].sub_fit;
    uint64_t rf = r == IOVA_NIL ? 0 : t->nodes[r].sub_fit;
    n->sub_len = max3(own_len(n), ll, rl);
    n->sub_fit = max3(own_fit(n), lf, rf);
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

/* Restores T2 at i (children already balanced) and refreshes T4. */
static uint32_t rebalance(struct iova_tree *t, uint32_t i)
{
    uint32_t l = iova_left(t, i), r = iova_right(t, i);
    int bf = (int)height(t, l) - (int)height(t, r);
    if (bf > 1) {
        if (height(t, iova_left(t, l)) < height(t, iova_right(t, l)))
            set_left(t, i, rotate_left(t, l));
        return rotate_right(t, i);
    }
    if (bf < -1) {
        if (height(t, iova_right(t, r)) < height(t, iova_left(t, r)))
            set_right(t, i, rotate_right(t, r));
        return rotate_left(t, i);
    }
    update(t, i);
    return i;
}

static uint32_t insert_at(struct iova_tree *t, uint32_t x, uint32_t i)
{
    if (x == IOVA_NIL)
        return i;
    if (t->nodes[i].lo < t->nodes[x].lo)
        set_left(t, x, insert_at(t, iova_left(t, x), i));
    else
        set_right(t, x, insert_at(t, iova_right(t, x), i));
    return rebalance(t, x);
}

void iova_tree_insert(struct iova_tree *t, uint32_t i)
{
    struct iova_node *n = iova_n(t, i);
    uint32_t pred = IOVA_NIL, succ = IOVA_NIL, x = t->root;
    while (x != IOVA_NIL) {
        if (t->nodes[x].lo < n->lo) {
            pred = x;
            x = iova_right(t, x);
        } else {
            succ = x;
            x = iova_left(t, x);
        }
    }
    /* T3 for the new node and its successor. Both neighbours are ancestors
     * of the new leaf, so the rebalancing walk back up refreshes their T4. */
    n->gap_lo = pred == IOVA_NIL ? 0 : t->nodes[pred].hi + 1;
    if (succ != IOVA_NIL)
        t->nodes[succ].gap_lo = n->hi + 1;
    n->left_h = IOVA_NIL | (1u << HEIGHT_SHIFT);
    set_right(t, i, IOVA_NIL);
    update(t, i);
    t->root = insert_at(t, t->root, i);
    t->count++;
    if (n->lo != IOVA_U64_MAX)
        t->pfns += n->hi - n->lo + 1;
}

/* Detaches the lowest node of subtree x into *min; returns the new subtree. */
static uint32_t remove_min(struct iova_tree *t, uint32_t x, uint32_t *min)
{
    if (iova_left(t, x) == IOVA_NIL) {
        *min = x;
        return iova_right(t, x);
    }
    set_left(t, x, remove_min(t, iova_left(t, x), min));
    return rebalance(t, x);
}

static uint32_t erase_at(struct iova_tree *t, uint32_t x, uint64_t key)
{
    if (x == IOVA_NIL)
        return IOVA_NIL;
    uint64_t lo = t->nodes[x].lo;
    if (key < lo) {
        set_left(t, x, erase_at(t, iova_left(t, x), key));
    } else if (key > lo) {
        set_right(t, x, erase_at(t, iova_right(t, x), key));
    } else {
        uint32_t l = iova_left(t, x), r = iova_right(t, x), m;
        if (r == IOVA_NIL)
            return l;
        /* Relink the successor into x's place rather than copying its
         * fields: cache pointers name node slots, which must not move. */
        r = remove_min(t, r, &m);
        set_left(t, m, l);
        set_right(t, m, r);
        return rebalance(t, m);
    }
    return rebalance(t, x);
}

void iova_tree_erase(struct iova_tree *t, uint32_t i)
{
    struct iova_node *n = iova_n(t, i);
    uint32_t succ = iova_tree_next(t, i);
    /* The successor inherits the erased node's gap (T3). It is either an
     * ancestor of i or the node relinked into i's place, so erase_at
     * refreshes its T4 on the way up. */
    if (succ != IOVA_NIL)
        t->nodes[succ].gap_lo = n->gap_lo;
    t->root = erase_at(t, t->root, n->lo);
    t->count--;
    if (n->lo != IOVA_U64_MAX)
        t->pfns -= n->hi - n->lo + 1;
}

void iova_tree_lo_changed(struct iova_tree *t, uint32_t i)
{
    uint32_t path[MAX_DEPTH];
    int depth = 0;
    uint64_t key = t->nodes[i].lo;
    uint32_t x = t->root;
    while (x != IOVA_NIL) {
        path[depth++] = x;
        if (x == i)
            break;
        x = key < t->nodes[x].lo ? iova_left(t, x) : iova_right(t, x);
    }
    while (depth > 0)
        update(t, path[--depth]);
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

uint32_t iova_tree_lowest_lo_ge(const struct iova_tree *t, uint64_t key)
{
    uint32_t x = t->root, best = IOVA_NIL;
    while (x != IOVA_NIL) {
        if (t->nodes[x].lo >= key) {
            best = x;
            x = iova_left(t, x);
        } else {
            x = iova_right(t, x);
        }
    }
    return best;
}

uint32_t iova_tree_lowest_hi_ge(const struct iova_tree *t, uint64_t key)
{
    /* hi is ordered like lo, since ranges are disjoint */
    uint32_t x = t->root, best = IOVA_NIL;
    while (x != IOVA_NIL) {
        if (t->nodes[x].hi >= key) {
            best = x;
            x = iova_left(t, x);
        } else {
            x = iova_right(t, x);
        }
    }
    return best;
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
    /* Position the iterator at cur: remember the ancestors below it. */
    uint64_t key = t->nodes[cur].lo;
    for (uint32_t x = t->root; x != IOVA_NIL && x != cur;) {
        if (key > t->nodes[x].lo) {
            stack[sp++] = x;
            x = iova_right(t, x);
        } else {
            x = iova_left(t, x);
        }
    }
    for (; cur != IOVA_NIL; budget--) {
        if (budget == 0)
            return WALK_UNDECIDED;
        t->visited++;
        /* step to the predecessor before judging, to know if cur is lowest */
        uint32_t below;
        if (iova_left(t, cur) != IOVA_NIL) {
            uint32_t x = iova_left(t, cur);
            while (iova_right(t, x) != IOVA_NIL) {
                stack[sp++] = x;
                x = iova_right(t, x);
            }
            below = x;
        } else {
            below = sp > 0 ? stack[--sp] : IOVA_NIL;
        }
        const struct iova_node *n = iova_n(t, cur);
        v = try_gap(s, n->gap_lo, n->lo, below == IOVA_NIL, pfn);
        if (v != GAP_NEXT)
            return v == GAP_FITS ? WALK_FOUND : WALK_FAILED;
        cur = below;
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

/* The highest node with lo <= key whose own, unclipped gap fits size. A
 * subtree whose best gap is too small is skipped whole, so this follows one
 * root-to-leaf path plus one descent that is sure to succeed: O(log n). */
static uint32_t rightmost_fit(struct iova_tree *t, uint32_t x, uint64_t key,
                              uint64_t size, bool use_fit)
{
    while (x != IOVA_NIL) {
        t->visited++;
        if (sub_value(t, x, use_fit) < size)
            return IOVA_NIL;
        if (t->nodes[x].lo > key) {
            x = iova_left(t, x);
            continue;
        }
        uint32_t r = rightmost_fit(t, iova_right(t, x), key, size, use_fit);
        if (r != IOVA_NIL)
            return r;
        if (own_value(iova_n(t, x), use_fit) >= size)
            return x;
        x = iova_left(t, x);
    }
    return IOVA_NIL;
}

/*
 * Same answer as the linear walk. Only two gaps can be clipped: the one
 * straddling `top` (owned by the lowest node at or above it) and the one
 * straddling the floor (owned by the lowest node above it). Every gap in
 * between is whole, so "the highest gap that fits" among them is a query
 * on the subtree maxima.
 */
#define SHORT_WALK 8   /* gaps tried one by one before descending */

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

    uint32_t lowest;             /* node owning the floor-clipped gap */
    if (s->floor_all)
        lowest = s->floor == IOVA_U64_MAX ? IOVA_NIL
                                          : iova_tree_lowest_lo_ge(t, s->floor + 1);
    else
        lowest = iova_tree_first(t);
    if (lowest == IOVA_NIL || t->nodes[lowest].lo > t->nodes[bound].lo)
        return false;            /* every gap left lies below the floor */

    uint32_t r = rightmost_fit(t, t->root, t->nodes[bound].lo, s->size, use_fit);
    if (r != IOVA_NIL && t->nodes[r].lo > t->nodes[lowest].lo) {
        *pfn = (t->nodes[r].lo - s->size) & s->mask;
        return true;
    }
    const struct iova_node *n = iova_n(t, lowest);
    v = try_gap(s, n->gap_lo, n->lo, lowest == iova_tree_first(t), pfn);
    return v == GAP_FITS;
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
    if (nfree + t->count != t->top) {
        if (msg && msg_len)
            snprintf(msg, msg_len, "tree: %llu free + %llu live slots != %u used (T5)",
                     (unsigned long long)nfree, (unsigned long long)t->count, t->top);
        return IOVA_E_CORRUPT;
    }
    return 0;
}
