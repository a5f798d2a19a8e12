/*
 * iova_tree.h - the ordered set of ranges (iova_tree.c): an augmented AVL
 * tree of disjoint [lo, hi] pfn ranges in a pool of 48-byte nodes, with the
 * kernel's linear walk and an O(log n) search over the free gaps between
 * them. It knows nothing of domains or caches: the IOVA domain (iova.c) and
 * the wraparound allocator (iova_wrap.c) each own trees of their own.
 *
 * Not thread safe: the owner holds its lock around every call.
 */
#ifndef PYIOVA_IOVA_TREE_H
#define PYIOVA_IOVA_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iova_errors.h"

/* Node indices are 26 bits: the top bits of the two link words carry the
 * AVL height and the node flags, keeping a node at 48 bytes.
 * Slot 0 of every pool is a sentinel standing for "no node": height 0, no
 * gaps, flagged FREE so that nothing mistakes it for a range. Reading a
 * missing child's fields then needs no branch, which is most of the cost of
 * repairing a path after an insert or erase. */
#define IOVA_IDX_BITS   26
#define IOVA_NIL        0u
#define IOVA_IDX_MASK   ((1u << IOVA_IDX_BITS) - 1)
#define IOVA_MAX_NODES  (1u << IOVA_IDX_BITS)   /* pool slots, sentinel included */

/* Node flags. FREE is the tree's own; the other bits (1, 4, 8, 16, 32) are
 * for the tree's owner to give meanings (the domain's CACHED, the
 * wraparound allocator's RETIRED and RESERVED), and the tree never reads
 * them. */
#define IOVA_NODE_FREE   2u   /* the slot is on the pool's free list */

#define IOVA_U64_MAX UINT64_MAX

/*
 * One range [lo, hi] of pfns that the tree's owner holds, plus what the
 * O(log n) search needs: each node owns the free gap [gap_lo, lo) just below
 * it, and keeps the largest gap length and the largest size-aligned block
 * that fits in any gap of its subtree.
 */
struct iova_node {
    uint32_t left_h;    /* left child index | AVL height << IOVA_IDX_BITS */
    uint32_t right_f;   /* right child index | flags << IOVA_IDX_BITS */
    uint64_t lo;
    uint64_t hi;
    uint64_t gap_lo;    /* predecessor's hi + 1, or 0 for the lowest node */
    uint64_t sub_len;   /* max over the subtree of (lo - gap_lo) */
    uint64_t sub_fit;   /* max over the subtree of gap_fit(gap_lo, lo) */
};

struct iova_tree {
    struct iova_node *nodes;  /* the pool; indices stay valid across growth */
    uint32_t cap;             /* slots allocated */
    uint32_t top;             /* slots ever used, the sentinel included (the
                               * rest are untouched) */
    uint32_t free_head;       /* free slots, linked through left_h */
    uint32_t root;
    uint64_t count;           /* nodes in the tree */
    uint64_t pfns;            /* pages they cover; a [~0, ~0] node (the 6.12
                               * domain's anchor) counts none */
    uint64_t visited;         /* nodes looked at by searches (statistics) */
};

/* ---- node accessors ---- */
static inline struct iova_node *iova_n(const struct iova_tree *t, uint32_t i)
{
    return &t->nodes[i];
}
static inline uint32_t iova_left(const struct iova_tree *t, uint32_t i)
{
    return t->nodes[i].left_h & IOVA_IDX_MASK;
}
static inline uint32_t iova_right(const struct iova_tree *t, uint32_t i)
{
    return t->nodes[i].right_f & IOVA_IDX_MASK;
}
static inline unsigned iova_flags(const struct iova_tree *t, uint32_t i)
{
    return t->nodes[i].right_f >> IOVA_IDX_BITS;
}
static inline void iova_set_flag(struct iova_tree *t, uint32_t i, unsigned f)
{
    t->nodes[i].right_f |= f << IOVA_IDX_BITS;
}
static inline void iova_clear_flag(struct iova_tree *t, uint32_t i, unsigned f)
{
    t->nodes[i].right_f &= ~(f << IOVA_IDX_BITS);
}

int iova_tree_init(struct iova_tree *t);
void iova_tree_release(struct iova_tree *t);
/* Allocates a node slot; IOVA_NIL when out of memory or indices. */
uint32_t iova_tree_node_new(struct iova_tree *t, uint64_t lo, uint64_t hi);
void iova_tree_node_free(struct iova_tree *t, uint32_t i);
/* Links node i into the tree (its lo must not be a key already). */
void iova_tree_insert(struct iova_tree *t, uint32_t i);
/* Unlinks node i; does not free the slot, nor touch its lo and hi. Returns
 * the node that followed i (IOVA_NIL if none): the descent finds it anyway,
 * and the cache pointers want it. */
uint32_t iova_tree_erase(struct iova_tree *t, uint32_t i);

/* The way down from the root to a node, as a lookup found it: erasing what
 * was just looked up (every free) then needs no second descent. Valid until
 * the tree next changes. */
#define IOVA_PATH_MAX 64   /* an AVL tree of 2^26 nodes is at most 38 deep */
struct iova_path {
    uint32_t node[IOVA_PATH_MAX];   /* the ancestors, root first */
    uint8_t dir[IOVA_PATH_MAX];     /* 1: the way down turned right there */
    int depth;
    int must;                       /* level of the last left turn */
    uint32_t succ;                  /* the node there: the found node's
                                     * successor if it has no right child */
};
/* iova_tree_find, recording the way down in *p. */
uint32_t iova_tree_find_path(struct iova_tree *t, uint64_t pfn, struct iova_path *p);
/* iova_tree_erase of node i, which iova_tree_find_path just returned. */
uint32_t iova_tree_erase_path(struct iova_tree *t, uint32_t i, struct iova_path *p);
/* Node i's lo was lowered in place (reserve): refresh the derived fields. */
void iova_tree_lo_changed(struct iova_tree *t, uint32_t i);
uint32_t iova_tree_find(struct iova_tree *t, uint64_t pfn);      /* containing pfn */
uint32_t iova_tree_first(const struct iova_tree *t);
uint32_t iova_tree_last(const struct iova_tree *t);
uint32_t iova_tree_next(const struct iova_tree *t, uint32_t i);
uint32_t iova_tree_prev(const struct iova_tree *t, uint32_t i);
uint32_t iova_tree_lowest_lo_ge(const struct iova_tree *t, uint64_t key);  /* lo >= key */
uint32_t iova_tree_lowest_hi_ge(const struct iova_tree *t, uint64_t key);  /* hi >= key */

/*
 * The search every kernel version reduces to: the highest gap, among those
 * owned by the node `start` and the nodes below it, that a block of `size`
 * pages (aligned by `mask`) fits, with the gap's top clipped to `top`
 * (exclusive) and its bottom to `floor`. `floor_all` applies the floor to
 * every gap (6.12); otherwise only to the gap below the lowest node (4.10).
 * start == IOVA_NIL means "from the very top", including the space above the
 * highest node (4.10 has no anchor to own it). Returns true and *pfn, or
 * false. The two implementations return the same answer.
 */
struct iova_search {
    uint32_t start;
    uint64_t top;
    uint64_t floor;
    bool floor_all;
    uint64_t size;
    uint64_t mask;
};
bool iova_tree_search_linear(struct iova_tree *t, const struct iova_search *s,
                             uint64_t *pfn);
bool iova_tree_search_augmented(struct iova_tree *t,
                                const struct iova_search *s, uint64_t *pfn);
/*
 * The lowest block of `size` pages (aligned by `mask`) that starts at or
 * above `from` and ends at or below `top` (exclusive), in a gap owned by a
 * node: the caller keeps a node at or above `top` so every gap has an
 * owner. O(log n) by the same subtree maxima.
 */
struct iova_search_up {
    uint64_t from;
    uint64_t top;
    uint64_t size;
    uint64_t mask;
};
bool iova_tree_search_up(struct iova_tree *t, const struct iova_search_up *s,
                         uint64_t *pfn);
/* Validator (T1-T5, iova_tree.c): 0, or IOVA_E_CORRUPT with msg. */
int iova_tree_check(const struct iova_tree *t, char *msg, size_t msg_len);

#endif
