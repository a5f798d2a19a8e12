/*
 * io_pgtable.c - sparse LPAE-style I/O page tables.
 *
 * Shape. Levels are numbered 0..3 as in LPAE, level 3 holding granule-sized
 * pages. A table has 2^bpl entries (bpl = granule_shift - 3: 512 for 4K),
 * except the root, which only has as many as the input size needs (4 for a
 * 32-bit ias with a 4K granule, whose walk then starts at level 1). An entry
 * at level L covers 2^(granule_shift + bpl * (3 - L)) bytes and is one of:
 *   - empty;
 *   - a leaf: a page (level 3) or a block (levels above), translating its
 *     whole span to a physical range of the same size;
 *   - a pointer to a table of level L + 1.
 *
 * Invariants (io_pgtable_check verifies every one; the numbers are the ones
 * it reports):
 *   1. A table's nvalid is the number of its non-empty entries.
 *   2. No table but the root is empty: the unmap that clears a table's last
 *      entry frees it. (LPAE keeps empty tables around; freeing them keeps
 *      "something is mapped below" equal to "there is a table", which is what
 *      makes overlap checks and unmap steps cheap.)
 *   3. Leaves sit only at levels whose span is a page size of the bitmap.
 *   4. A leaf's physical address is aligned to its span and its end is within
 *      2^oas; its prot has READ or WRITE and no unknown bit.
 *   5. Table pointers appear only at levels 0..2, and a table one level down
 *      hangs from each.
 *   6. live_leaves, mapped_bytes and live_tables equal what a full walk
 *      counts, and tables_allocated - tables_freed == live_tables.
 *   7. The root has the entry count the geometry asks for; no entry the
 *      input size cannot reach exists.
 *   8. The spare tables (freed, kept for reuse) number nspare <= PT_SPARE_MAX,
 *      are full-sized and hold nothing but the link to the next spare.
 * Leaves cannot overlap by construction: each address has exactly one slot
 * per level and a slot holds either a leaf or a table.
 *
 * Page sizes. The bitmap must name the granule and block sizes of
 * consecutive levels from 3 upwards (LPAE 4K: 4K, 4K+2M, or 4K+2M+1G), never
 * level 0. Consecutiveness guarantees that splitting a block always yields
 * leaves one level down, as io-pgtable-arm's split does.
 *
 * Locking: every public entry point takes pt->lock; the static helpers
 * assume it is held. While holding it nothing is called that takes another
 * lock (the allocation wrappers take none), so callers such as the IOTLB may
 * hold their own lock around ours.
 *
 * Memory: allocations go through iova_mem_calloc, so the fault injector of
 * iova_mem.c reaches them; a failed one is reported as IOVA_E_NOMEM with the
 * table unchanged.
 */
#include "io_pgtable.h"
#include "iova_mem_internal.h"
#include "save_words.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t pte_t;

/*
 * Entry encoding. Table pointers come from malloc, aligned to at least 8,
 * and leaf addresses are aligned to at least 4K, so the low bits are free
 * for the type and (in leaves) the prot bits.
 */
#define PTE_VALID ((pte_t)1)
#define PTE_TABLE ((pte_t)2)
#define PTE_PROT_SHIFT 2
#define PTE_PROT_BITS ((pte_t)IO_PGTABLE_PROT_ALL << PTE_PROT_SHIFT)
#define PTE_ADDR_MASK (~(pte_t)0xfff)

#define PT_SPARE_MAX 16

struct pt_table {
    uint32_t nvalid;    /* invariant 1 */
    uint32_t nentries;  /* 2^bpl, or fewer for the root */
    pte_t e[];
};

struct io_pgtable {
    pthread_mutex_t lock;
    uint32_t gshift;          /* log2 of the granule */
    uint32_t bpl;             /* index bits per level */
    uint32_t ias, oas;
    uint32_t start_level;     /* level of the root table */
    uint32_t top_leaf_level;  /* highest level that may hold leaves */
    uint64_t pgsize_bitmap;
    uint64_t in_limit;        /* 2^ias: first address beyond the input */
    uint64_t out_limit;       /* 2^oas */
    struct pt_table *root;
    struct pt_table *spare;   /* freed tables kept for reuse (invariant 8) */
    uint32_t nspare;
    struct io_pgtable_stats st;
};

/* ---- geometry helpers -------------------------------------------------- */

static inline unsigned lvl_shift(const io_pgtable *pt, unsigned lvl)
{
    return pt->gshift + pt->bpl * (3 - lvl);
}

static inline uint64_t lvl_size(const io_pgtable *pt, unsigned lvl)
{
    return (uint64_t)1 << lvl_shift(pt, lvl);
}

static inline uint64_t lvl_index(const io_pgtable *pt, unsigned lvl, uint64_t iova)
{
    return (iova >> lvl_shift(pt, lvl)) & (((uint64_t)1 << pt->bpl) - 1);
}

static inline bool pte_valid(pte_t e) { return e & PTE_VALID; }
static inline bool pte_is_table(pte_t e) { return (e & (PTE_VALID | PTE_TABLE)) == (PTE_VALID | PTE_TABLE); }
static inline bool pte_is_leaf(pte_t e) { return (e & (PTE_VALID | PTE_TABLE)) == PTE_VALID; }
static inline struct pt_table *pte_table(pte_t e) { return (struct pt_table *)(uintptr_t)(e & ~(PTE_VALID | PTE_TABLE)); }
static inline uint64_t pte_paddr(pte_t e) { return e & PTE_ADDR_MASK; }
static inline uint32_t pte_prot(pte_t e) { return (uint32_t)((e & PTE_PROT_BITS) >> PTE_PROT_SHIFT); }

static inline pte_t pte_make_table(struct pt_table *t)
{
    return (pte_t)(uintptr_t)t | PTE_TABLE | PTE_VALID;
}

static inline pte_t pte_make_leaf(uint64_t paddr, uint32_t prot)
{
    return paddr | ((pte_t)prot << PTE_PROT_SHIFT) | PTE_VALID;
}

/* ---- table memory ------------------------------------------------------- */

/*
 * A table freed by an unmap is all zeroes (its entries were cleared one by
 * one), so a few are kept aside and handed out again as they are: a lone
 * page mapped and unmapped over and over would otherwise cost three
 * allocations and three frees each time. The counters still see every
 * allocation and free.
 */
static struct pt_table *pt_table_alloc(io_pgtable *pt, uint32_t nentries)
{
    struct pt_table *t;

    if (pt->spare && nentries == pt->spare->nentries) {
        t = pt->spare;
        pt->spare = pte_table(t->e[0]);
        t->e[0] = 0;
        pt->nspare--;
    } else {
        t = iova_mem_calloc(1, sizeof(*t) + (size_t)nentries * sizeof(pte_t));
        if (!t)
            return NULL;
        t->nentries = nentries;
    }
    pt->st.live_tables++;
    pt->st.tables_allocated++;
    return t;
}

static void pt_table_free(io_pgtable *pt, struct pt_table *t)
{
    pt->st.live_tables--;
    pt->st.tables_freed++;
    if (pt->nspare < PT_SPARE_MAX && t != pt->root && t->nentries == (1u << pt->bpl)) {
        t->e[0] = pt->spare ? pte_make_table(pt->spare) : 0;
        pt->spare = t;
        pt->nspare++;
        return;
    }
    free(t);
}

static void pt_leaf_added(io_pgtable *pt, unsigned lvl)
{
    pt->st.live_leaves[lvl]++;
    pt->st.mapped_bytes += lvl_size(pt, lvl);
    pt->st.leaves_installed++;
    pt->st.bytes_mapped_total += lvl_size(pt, lvl);
}

static void pt_leaf_removed(io_pgtable *pt, unsigned lvl)
{
    pt->st.live_leaves[lvl]--;
    pt->st.mapped_bytes -= lvl_size(pt, lvl);
    pt->st.leaves_removed++;
    pt->st.bytes_unmapped_total += lvl_size(pt, lvl);
}

/* Free a table and everything below it, counting every leaf as removed. */
static void pt_free_subtree(io_pgtable *pt, struct pt_table *t, unsigned lvl)
{
    for (uint32_t i = 0; i < t->nentries && t->nvalid; i++) {
        pte_t e = t->e[i];

        if (!pte_valid(e))
            continue;
        if (pte_is_table(e))
            pt_free_subtree(pt, pte_table(e), lvl + 1);
        else
            pt_leaf_removed(pt, lvl);
        t->e[i] = 0;
        t->nvalid--;
    }
    pt_table_free(pt, t);
}

/* ---- creation ----------------------------------------------------------- */

int io_pgtable_create(uint32_t granule_shift, uint32_t ias, uint32_t oas,
                      uint64_t pgsize_bitmap, io_pgtable **out)
{
    io_pgtable *pt;
    uint32_t levels, root_entries;
    unsigned lvl;

    if (!out)
        return IOVA_E_ARG;
    *out = NULL;
    if (granule_shift != 12 && granule_shift != 14 && granule_shift != 16)
        return IOVA_E_GEOMETRY;
    if (ias <= granule_shift || ias > IO_PGTABLE_MAX_IAS)
        return IOVA_E_GEOMETRY;
    if (oas < granule_shift || oas > IO_PGTABLE_MAX_OAS)
        return IOVA_E_GEOMETRY;

    pt = iova_mem_calloc(1, sizeof(*pt));
    if (!pt)
        return IOVA_E_NOMEM;
    pt->gshift = granule_shift;
    pt->bpl = granule_shift - 3;
    pt->ias = ias;
    pt->oas = oas;
    pt->in_limit = (uint64_t)1 << ias;
    pt->out_limit = (uint64_t)1 << oas;

    /* Levels needed to resolve ias - granule_shift bits, bpl at a time. */
    levels = (ias - granule_shift + pt->bpl - 1) / pt->bpl;
    if (levels > IO_PGTABLE_LEVELS)
        goto inval;
    pt->start_level = IO_PGTABLE_LEVELS - levels;
    root_entries = 1u << (ias - lvl_shift(pt, pt->start_level));

    /* The bitmap: the granule, then consecutive block levels upwards. */
    if (!(pgsize_bitmap & ((uint64_t)1 << granule_shift)))
        goto inval;
    pt->top_leaf_level = 3;
    for (lvl = 2; lvl >= 1 && lvl >= pt->start_level; lvl--) {
        if (!(pgsize_bitmap & lvl_size(pt, lvl)))
            break;
        pt->top_leaf_level = lvl;
    }
    {
        uint64_t allowed = 0;

        for (lvl = pt->top_leaf_level; lvl <= 3; lvl++)
            allowed |= lvl_size(pt, lvl);
        if (pgsize_bitmap != allowed)
            goto inval;
    }
    pt->pgsize_bitmap = pgsize_bitmap;

    if (pthread_mutex_init(&pt->lock, NULL) != 0) {
        free(pt);
        return IOVA_E_NOMEM;
    }
    pt->root = pt_table_alloc(pt, root_entries);
    if (!pt->root) {
        pthread_mutex_destroy(&pt->lock);
        free(pt);
        return IOVA_E_NOMEM;
    }
    *out = pt;
    return 0;

inval:
    free(pt);
    return IOVA_E_GEOMETRY;
}

void io_pgtable_destroy(io_pgtable *pt)
{
    if (!pt)
        return;
    pt_free_subtree(pt, pt->root, pt->start_level);
    while (pt->spare) {
        struct pt_table *t = pt->spare;

        pt->spare = pte_table(t->e[0]);
        free(t);
    }
    pthread_mutex_destroy(&pt->lock);
    free(pt);
}

int io_pgtable_geometry(const io_pgtable *pt, uint32_t *granule_shift,
                        uint32_t *ias, uint32_t *oas, uint64_t *pgsize_bitmap,
                        uint32_t *start_level)
{
    if (!pt)
        return IOVA_E_ARG;
    /* Immutable after creation, so no lock is needed. */
    if (granule_shift)
        *granule_shift = pt->gshift;
    if (ias)
        *ias = pt->ias;
    if (oas)
        *oas = pt->oas;
    if (pgsize_bitmap)
        *pgsize_bitmap = pt->pgsize_bitmap;
    if (start_level)
        *start_level = pt->start_level;
    return 0;
}

/* ---- range walks -------------------------------------------------------- */

/*
 * Whether any leaf intersects [start, last] (inclusive, inside the span of t,
 * whose entry 0 starts at base). A table lying wholly inside the range
 * answers yes without a descent: by invariant 2 it holds a leaf somewhere.
 */
static bool pt_any_leaf(const io_pgtable *pt, const struct pt_table *t,
                        unsigned lvl, uint64_t base, uint64_t start, uint64_t last)
{
    unsigned sh = lvl_shift(pt, lvl);
    uint64_t i0 = (start - base) >> sh, i1 = (last - base) >> sh;

    for (uint64_t i = i0; i <= i1; i++) {
        pte_t e = t->e[i];
        uint64_t cb, cl;

        if (!pte_valid(e))
            continue;
        if (pte_is_leaf(e))
            return true;
        cb = base + (i << sh);
        cl = cb + (((uint64_t)1 << sh) - 1);
        if (start <= cb && cl <= last)
            return true;
        if (pt_any_leaf(pt, pte_table(e), lvl + 1, cb,
                        start > cb ? start : cb, last < cl ? last : cl))
            return true;
    }
    return false;
}

/*
 * Remove every leaf inside [start, last], freeing tables that end up empty.
 * The caller guarantees no leaf straddles either end of the range.
 */
static void pt_clear(io_pgtable *pt, struct pt_table *t, unsigned lvl,
                     uint64_t base, uint64_t start, uint64_t last)
{
    unsigned sh = lvl_shift(pt, lvl);
    uint64_t i0 = (start - base) >> sh, i1 = (last - base) >> sh;

    for (uint64_t i = i0; i <= i1 && t->nvalid; i++) {
        pte_t e = t->e[i];
        uint64_t cb, cl;
        struct pt_table *c;

        if (!pte_valid(e))
            continue;
        cb = base + (i << sh);
        cl = cb + (((uint64_t)1 << sh) - 1);
        if (pte_is_leaf(e)) {
            pt_leaf_removed(pt, lvl);
        } else if (start <= cb && cl <= last) {
            pt_free_subtree(pt, pte_table(e), lvl + 1);
        } else {
            c = pte_table(e);
            pt_clear(pt, c, lvl + 1, cb, start > cb ? start : cb, last < cl ? last : cl);
            if (c->nvalid)
                continue;
            pt_table_free(pt, c);
        }
        t->e[i] = 0;
        t->nvalid--;
    }
}

/* ---- map ---------------------------------------------------------------- */

/* The level of the largest page that fits `remaining` and the alignment. */
static unsigned pt_pick_level(const io_pgtable *pt, uint64_t addr_merge, uint64_t remaining)
{
    for (unsigned lvl = pt->top_leaf_level; lvl < 3; lvl++) {
        uint64_t sz = lvl_size(pt, lvl);

        if (sz <= remaining && !(addr_merge & (sz - 1)))
            return lvl;
    }
    return 3;
}

/*
 * Write one leaf at level target, creating tables on the way down. The slot
 * is known to be empty (the caller checked the whole range), and a table
 * created here is non-empty as soon as the leaf lands, so invariant 2 only
 * breaks transiently on IOVA_E_NOMEM, which the caller repairs with pt_clear.
 */
static int pt_install_in(io_pgtable *pt, uint64_t iova, uint64_t paddr,
                         unsigned target, uint32_t prot, struct pt_table **leaf_table)
{
    struct pt_table *t = pt->root;
    pte_t *e;

    for (unsigned lvl = pt->start_level; lvl < target; lvl++) {
        e = &t->e[lvl_index(pt, lvl, iova)];
        if (!pte_valid(*e)) {
            struct pt_table *n = pt_table_alloc(pt, 1u << pt->bpl);

            if (!n)
                return IOVA_E_NOMEM;
            *e = pte_make_table(n);
            t->nvalid++;
        }
        t = pte_table(*e);
    }
    e = &t->e[lvl_index(pt, target, iova)];
    *e = pte_make_leaf(paddr, prot);
    t->nvalid++;
    pt_leaf_added(pt, target);
    if (leaf_table)
        *leaf_table = t;
    return 0;
}

static int pt_install(io_pgtable *pt, uint64_t iova, uint64_t paddr,
                      unsigned target, uint32_t prot)
{
    return pt_install_in(pt, iova, paddr, target, prot, NULL);
}

static int pt_check_map_args(const io_pgtable *pt, uint64_t iova, uint64_t paddr,
                             uint64_t size, uint32_t prot)
{
    uint64_t gmask = ((uint64_t)1 << pt->gshift) - 1;

    if (!size || ((iova | paddr | size) & gmask))
        return IOVA_E_ALIGN;
    if ((prot & ~(uint32_t)IO_PGTABLE_PROT_ALL) ||
        !(prot & (IO_PGTABLE_PROT_READ | IO_PGTABLE_PROT_WRITE)))
        return IOVA_E_PROT;
    if (iova >= pt->in_limit || size > pt->in_limit - iova)
        return IOVA_E_ADDR;
    if (paddr >= pt->out_limit || size > pt->out_limit - paddr)
        return IOVA_E_ADDR;
    return 0;
}

static int pt_map_locked(io_pgtable *pt, uint64_t iova, uint64_t paddr,
                         uint64_t size, uint32_t prot)
{
    uint64_t done = 0;
    int rc;

    rc = pt_check_map_args(pt, iova, paddr, size, prot);
    if (rc)
        return rc;
    if (pt_any_leaf(pt, pt->root, pt->start_level, 0, iova, iova + size - 1)) {
        pt->st.map_failures++;
        return IOVA_E_EXISTS;
    }
    /* Granule pages that follow one another in the same last-level table
     * go straight into it: nothing on the way down changes between them. */
    struct pt_table *leaves = NULL;
    uint64_t leaves_span = 0, leaves_key = 0;
    while (done < size) {
        unsigned lvl = pt_pick_level(pt, (iova + done) | (paddr + done), size - done);

        if (lvl == 3 && leaves && (iova + done) >> leaves_span == leaves_key) {
            /* the rest of this table, up to where a larger step could start */
            uint64_t page = lvl_size(pt, 3), i = lvl_index(pt, 3, iova + done);
            uint64_t n = (size - done) >> lvl_shift(pt, 3);
            if (n > leaves->nentries - i)
                n = leaves->nentries - i;
            for (uint64_t k = 0; k < n; k++)
                leaves->e[i + k] = pte_make_leaf(paddr + done + k * page, prot);
            leaves->nvalid += (uint32_t)n;
            pt->st.live_leaves[3] += n;
            pt->st.mapped_bytes += n * page;
            pt->st.leaves_installed += n;
            pt->st.bytes_mapped_total += n * page;
            done += n * page;
            continue;
        }
        rc = pt_install_in(pt, iova + done, paddr + done, lvl, prot, &leaves);
        if (!rc && lvl == 3 && pt->start_level < 3) {
            leaves_span = lvl_shift(pt, 2);
            leaves_key = (iova + done) >> leaves_span;
        } else {
            leaves = NULL;
        }
        if (rc) {
            /* Take back the leaves written and the tables created so far. */
            pt_clear(pt, pt->root, pt->start_level, 0, iova,
                     iova + done + lvl_size(pt, lvl) - 1);
            pt->st.map_failures++;
            return rc;
        }
        done += lvl_size(pt, lvl);
    }
    pt->st.map_calls++;
    return 0;
}

int io_pgtable_map(io_pgtable *pt, uint64_t iova, uint64_t paddr,
                   uint64_t size, uint32_t prot)
{
    int rc;

    if (!pt)
        return IOVA_E_ARG;
    pthread_mutex_lock(&pt->lock);
    rc = pt_map_locked(pt, iova, paddr, size, prot);
    pthread_mutex_unlock(&pt->lock);
    return rc;
}

/* ---- unmap -------------------------------------------------------------- */

/*
 * Replace the block in *e (at level lvl) by a table of leaves one level
 * down that translate the same addresses with the same prot.
 */
static int pt_split_block(io_pgtable *pt, pte_t *e, unsigned lvl)
{
    uint64_t paddr = pte_paddr(*e), step = lvl_size(pt, lvl + 1);
    uint32_t prot = pte_prot(*e), n = 1u << pt->bpl;
    struct pt_table *t = pt_table_alloc(pt, n);

    if (!t)
        return IOVA_E_NOMEM;
    for (uint32_t i = 0; i < n; i++)
        t->e[i] = pte_make_leaf(paddr + i * step, prot);
    t->nvalid = n;
    /* Same bytes, finer leaves: move the counts without touching totals. */
    pt->st.live_leaves[lvl]--;
    pt->st.live_leaves[lvl + 1] += n;
    pt->st.block_splits++;
    *e = pte_make_table(t);
    return 0;
}

/*
 * One step of an unmap: clear everything in [iova, iova + size of level
 * target). *removed is that size, or 0 when nothing was mapped there.
 */
static int pt_unmap_step(io_pgtable *pt, uint64_t iova, unsigned target, uint64_t *removed)
{
    struct pt_table *path[IO_PGTABLE_LEVELS];
    struct pt_table *t = pt->root;
    pte_t *e;
    unsigned lvl;
    int rc;

    *removed = 0;
    for (lvl = pt->start_level; lvl < target; lvl++) {
        path[lvl] = t;
        e = &t->e[lvl_index(pt, lvl, iova)];
        if (!pte_valid(*e))
            return 0;
        if (pte_is_leaf(*e)) {
            rc = pt_split_block(pt, e, lvl);
            if (rc)
                return rc;
        }
        t = pte_table(*e);
    }
    path[target] = t;
    e = &t->e[lvl_index(pt, target, iova)];
    if (!pte_valid(*e))
        return 0;
    if (pte_is_leaf(*e))
        pt_leaf_removed(pt, target);
    else
        pt_free_subtree(pt, pte_table(*e), target + 1);
    *e = 0;
    t->nvalid--;

    /* Invariant 2: free the tables this step emptied, bottom up. */
    for (lvl = target; lvl > pt->start_level && path[lvl]->nvalid == 0; lvl--) {
        struct pt_table *parent = path[lvl - 1];

        pt_table_free(pt, path[lvl]);
        parent->e[lvl_index(pt, lvl - 1, iova)] = 0;
        parent->nvalid--;
    }
    *removed = lvl_size(pt, target);
    return 0;
}

/*
 * Granule leaves of one last-level table, cleared from iova on while they
 * are mapped and the unmap's steps stay at the granule level in that table;
 * the bytes cleared. The table itself is left for pt_unmap_step, which
 * clears the last of them and frees what that empties.
 */
static uint64_t pt_unmap_leaves(io_pgtable *pt, uint64_t iova, uint64_t size)
{
    if (pt->start_level >= 3 || size <= lvl_size(pt, 3))
        return 0;
    struct pt_table *t = pt->root;
    for (unsigned lvl = pt->start_level; lvl < 3; lvl++) {
        pte_t e = t->e[lvl_index(pt, lvl, iova)];
        if (!pte_is_table(e))
            return 0;
        t = pte_table(e);
    }
    /* Only a step at the table's first entry can be larger than a page
     * (the table spans one block); past it every step is a page. */
    if (lvl_index(pt, 3, iova) == 0 && pt_pick_level(pt, iova, size) != 3)
        return 0;
    uint64_t page = lvl_size(pt, 3);
    uint64_t first = lvl_index(pt, 3, iova), last = t->nentries;
    uint64_t pages = (size >> lvl_shift(pt, 3)) - 1;    /* all but the unmap's last step */
    if (pages < last - first)
        last = first + pages;
    uint64_t i = first;
    /* and none that would empty the table: pt_unmap_step frees it */
    for (; i < last && t->nvalid > 1 && pte_valid(t->e[i]); i++) {
        t->e[i] = 0;
        t->nvalid--;
    }
    uint64_t n = i - first;
    pt->st.live_leaves[3] -= n;
    pt->st.mapped_bytes -= n * page;
    pt->st.leaves_removed += n;
    pt->st.bytes_unmapped_total += n * page;
    return n * page;
}

static int pt_unmap_locked(io_pgtable *pt, uint64_t iova, uint64_t size, uint64_t *unmapped)
{
    uint64_t gmask = ((uint64_t)1 << pt->gshift) - 1;
    uint64_t done = 0, step;
    int rc = 0;

    *unmapped = 0;
    if (!size || ((iova | size) & gmask))
        return IOVA_E_ALIGN;
    if (iova >= pt->in_limit || size > pt->in_limit - iova)
        return IOVA_E_ADDR;
    pt->st.unmap_calls++;
    while (done < size) {
        unsigned lvl = pt_pick_level(pt, iova + done, size - done);

        if (lvl == 3) {
            uint64_t run = pt_unmap_leaves(pt, iova + done, size - done);
            done += run;
            if (run)
                continue;
        }
        rc = pt_unmap_step(pt, iova + done, lvl, &step);
        if (rc || !step)
            break;
        done += step;
    }
    *unmapped = done;
    return rc;
}

int io_pgtable_unmap(io_pgtable *pt, uint64_t iova, uint64_t size, uint64_t *unmapped)
{
    uint64_t scratch;
    int rc;

    if (!pt)
        return IOVA_E_ARG;
    pthread_mutex_lock(&pt->lock);
    rc = pt_unmap_locked(pt, iova, size, unmapped ? unmapped : &scratch);
    pthread_mutex_unlock(&pt->lock);
    return rc;
}

/* ---- batches ------------------------------------------------------------ */

int io_pgtable_map_many(io_pgtable *pt, const uint64_t *iovas,
                        const uint64_t *paddrs, const uint64_t *sizes,
                        uint32_t prot, size_t n, size_t *done)
{
    size_t i = 0;
    int rc = 0;

    if (done)
        *done = 0;
    if (!pt || (n && (!iovas || !paddrs || !sizes)))
        return IOVA_E_ARG;
    pthread_mutex_lock(&pt->lock);
    for (; i < n; i++) {
        rc = pt_map_locked(pt, iovas[i], paddrs[i], sizes[i], prot);
        if (rc)
            break;
    }
    pthread_mutex_unlock(&pt->lock);
    if (done)
        *done = i;
    return rc;
}

int io_pgtable_unmap_many(io_pgtable *pt, const uint64_t *iovas,
                          const uint64_t *sizes, size_t n,
                          uint64_t *unmapped, size_t *done)
{
    size_t i = 0;
    uint64_t got;
    int rc = 0;

    if (done)
        *done = 0;
    if (!pt || (n && (!iovas || !sizes)))
        return IOVA_E_ARG;
    pthread_mutex_lock(&pt->lock);
    for (; i < n; i++) {
        rc = pt_unmap_locked(pt, iovas[i], sizes[i], &got);
        if (unmapped)
            unmapped[i] = got;
        if (rc)
            break;
    }
    pthread_mutex_unlock(&pt->lock);
    if (done)
        *done = i;
    return rc;
}

/* ---- lookups ------------------------------------------------------------ */

static int pt_lookup_locked(const io_pgtable *pt, uint64_t iova, struct io_pgtable_leaf *leaf)
{
    const struct pt_table *t = pt->root;

    if (iova >= pt->in_limit)
        return IOVA_E_ADDR;
    for (unsigned lvl = pt->start_level; lvl <= 3; lvl++) {
        pte_t e = t->e[lvl_index(pt, lvl, iova)];

        if (!pte_valid(e))
            return IOVA_E_NOTFOUND;
        if (pte_is_leaf(e)) {
            uint64_t size = lvl_size(pt, lvl);

            leaf->iova = iova & ~(size - 1);
            leaf->paddr = pte_paddr(e);
            leaf->size = size;
            leaf->prot = pte_prot(e);
            leaf->level = lvl;
            return 0;
        }
        t = pte_table(e);
    }
    return IOVA_E_NOTFOUND; /* not reached: level 3 holds no tables (invariant 5) */
}

int io_pgtable_lookup(io_pgtable *pt, uint64_t iova, struct io_pgtable_leaf *leaf)
{
    int rc;

    if (!pt || !leaf)
        return IOVA_E_ARG;
    pthread_mutex_lock(&pt->lock);
    rc = pt_lookup_locked(pt, iova, leaf);
    pthread_mutex_unlock(&pt->lock);
    return rc;
}

int io_pgtable_iova_to_phys(io_pgtable *pt, uint64_t iova, uint64_t *paddr)
{
    struct io_pgtable_leaf leaf;
    int rc;

    if (!paddr)
        return IOVA_E_ARG;
    rc = io_pgtable_lookup(pt, iova, &leaf);
    if (rc == 0)
        *paddr = leaf.paddr + (iova - leaf.iova);
    return rc;
}

/*
 * Append to out the leaves of t (entry 0 at base) that end above from, in
 * order, until max are collected. Returns whether out is full.
 */
static bool pt_collect(const io_pgtable *pt, const struct pt_table *t, unsigned lvl,
                       uint64_t base, uint64_t from, struct io_pgtable_leaf *out,
                       size_t max, size_t *count)
{
    unsigned sh = lvl_shift(pt, lvl);
    uint64_t i = from > base ? (from - base) >> sh : 0;

    for (; i < t->nentries; i++) {
        pte_t e = t->e[i];
        uint64_t cb = base + (i << sh);

        if (!pte_valid(e))
            continue;
        if (pte_is_table(e)) {
            if (pt_collect(pt, pte_table(e), lvl + 1, cb, from, out, max, count))
                return true;
            continue;
        }
        out[*count].iova = cb;
        out[*count].paddr = pte_paddr(e);
        out[*count].size = (uint64_t)1 << sh;
        out[*count].prot = pte_prot(e);
        out[*count].level = lvl;
        if (++*count == max)
            return true;
    }
    return false;
}

int io_pgtable_leaves(io_pgtable *pt, uint64_t from,
                      struct io_pgtable_leaf *out, size_t max, size_t *count)
{
    if (!pt || !count || (max && !out))
        return IOVA_E_ARG;
    *count = 0;
    if (!max)
        return 0;
    pthread_mutex_lock(&pt->lock);
    if (from < pt->in_limit)
        pt_collect(pt, pt->root, pt->start_level, 0, from, out, max, count);
    pthread_mutex_unlock(&pt->lock);
    return 0;
}

int io_pgtable_get_stats(io_pgtable *pt, struct io_pgtable_stats *stats)
{
    if (!pt || !stats)
        return IOVA_E_ARG;
    pthread_mutex_lock(&pt->lock);
    *stats = pt->st;
    pthread_mutex_unlock(&pt->lock);
    return 0;
}

/* ---- validation --------------------------------------------------------- */

struct pt_census {
    uint64_t leaves[IO_PGTABLE_LEVELS];
    uint64_t bytes;
    uint64_t tables;
};

/* Walk t (at lvl), checking invariants 1-5; 0 or the broken invariant. */
static uint32_t pt_check_table(const io_pgtable *pt, const struct pt_table *t,
                               unsigned lvl, struct pt_census *c)
{
    uint32_t nvalid = 0;
    uint64_t size = lvl_size(pt, lvl);

    c->tables++;
    for (uint32_t i = 0; i < t->nentries; i++) {
        pte_t e = t->e[i];

        if (!pte_valid(e)) {
            if (e)
                return 1; /* junk bits in an empty slot */
            continue;
        }
        nvalid++;
        if (pte_is_table(e)) {
            const struct pt_table *child = pte_table(e);
            uint32_t bad;

            if (lvl >= 3 || child->nentries != (1u << pt->bpl))
                return 5;
            if (child->nvalid == 0)
                return 2;
            bad = pt_check_table(pt, child, lvl + 1, c);
            if (bad)
                return bad;
            continue;
        }
        if (lvl < pt->top_leaf_level || !(pt->pgsize_bitmap & size))
            return 3;
        {
            uint64_t paddr = pte_paddr(e);
            uint32_t prot = pte_prot(e);

            if (paddr & (size - 1))
                return 4;
            if (paddr >= pt->out_limit || size > pt->out_limit - paddr)
                return 4;
            if (!(prot & (IO_PGTABLE_PROT_READ | IO_PGTABLE_PROT_WRITE)))
                return 4;
            if (e & ~(PTE_ADDR_MASK | PTE_PROT_BITS | PTE_VALID))
                return 4;
        }
        c->leaves[lvl]++;
        c->bytes += size;
    }
    if (nvalid != t->nvalid)
        return 1;
    return 0;
}

/* What each invariant says, as io_pgtable_check reports it. */
static const char *const pt_invariant[] = {
    "",
    "a table's nvalid counts its non-empty entries, and empty entries hold no bits",
    "no table but the root is empty",
    "leaves sit only at levels whose span is a page size of the bitmap",
    "a leaf's physical address is aligned to its span and below 2^oas, its prot "
    "has READ or WRITE and no unknown bit",
    "table pointers appear only at levels 0..2, each to a full table one level down",
    "the live counters equal what a full walk counts",
    "the root has the entry count the geometry asks for",
    "the spare tables are full-sized, hold nothing but their link, and number nspare",
};

int io_pgtable_check(io_pgtable *pt, char *msg, size_t msg_len)
{
    struct pt_census c;
    uint32_t bad;

    if (msg && msg_len)
        msg[0] = 0;
    if (!pt)
        return IOVA_E_ARG;
    memset(&c, 0, sizeof(c));
    pthread_mutex_lock(&pt->lock);
    if (pt->root->nentries != 1u << (pt->ias - lvl_shift(pt, pt->start_level)))
        bad = 7;
    else
        bad = pt_check_table(pt, pt->root, pt->start_level, &c);
    if (!bad) {
        for (unsigned l = 0; l < IO_PGTABLE_LEVELS; l++)
            if (c.leaves[l] != pt->st.live_leaves[l])
                bad = 6;
        if (c.bytes != pt->st.mapped_bytes || c.tables != pt->st.live_tables ||
            pt->st.tables_allocated - pt->st.tables_freed != pt->st.live_tables)
            bad = 6;
    }
    if (!bad) {
        uint32_t n = 0;

        for (const struct pt_table *t = pt->spare; t && !bad; t = pte_table(t->e[0])) {
            if (++n > pt->nspare || t->nvalid || t->nentries != (1u << pt->bpl))
                bad = 8;
            for (uint32_t i = 1; i < t->nentries && !bad; i++)
                if (t->e[i])
                    bad = 8;
        }
        if (n != pt->nspare)
            bad = 8;
    }
    pthread_mutex_unlock(&pt->lock);
    if (!bad)
        return 0;
    if (msg && msg_len)
        snprintf(msg, msg_len, "io_pgtable: invariant %u does not hold: %s", bad,
                 pt_invariant[bad]);
    return IOVA_E_CORRUPT;
}

/* ---- saving and restoring ----------------------------------------------- */

/*
 * Layout (version 1):
 *   magic, version, granule_shift, ias, oas, pgsize_bitmap,
 *   the 16 words of struct io_pgtable_stats in declaration order,
 *   nleaves, per leaf in iova order: iova, paddr, prot, level
 * The tables are not saved: by invariant 2 the leaves decide which exist.
 * Nor are the spare tables: they change no answer and no counter.
 */
#define PT_SAVE_MAGIC 0x7079696f76610003ull   /* "pyiova" + format family */
#define PT_SAVE_VERSION 1
#define PT_STAT_WORDS 16

static uint64_t *pt_stat_word(struct io_pgtable_stats *s, unsigned i)
{
    uint64_t *fixed[PT_STAT_WORDS] = {
        &s->mapped_bytes, &s->live_leaves[0], &s->live_leaves[1], &s->live_leaves[2],
        &s->live_leaves[3], &s->live_tables, &s->tables_allocated, &s->tables_freed,
        &s->leaves_installed, &s->leaves_removed, &s->bytes_mapped_total,
        &s->bytes_unmapped_total, &s->block_splits, &s->map_calls, &s->unmap_calls,
        &s->map_failures,
    };
    return fixed[i];
}

static void pt_save_table(const io_pgtable *pt, const struct pt_table *t, unsigned lvl,
                          uint64_t base, struct words_writer *w)
{
    unsigned sh = lvl_shift(pt, lvl);

    for (uint32_t i = 0; i < t->nentries; i++) {
        pte_t e = t->e[i];
        uint64_t cb = base + ((uint64_t)i << sh);

        if (!pte_valid(e))
            continue;
        if (pte_is_table(e)) {
            pt_save_table(pt, pte_table(e), lvl + 1, cb, w);
            continue;
        }
        words_put(w, cb);
        words_put(w, pte_paddr(e));
        words_put(w, pte_prot(e));
        words_put(w, lvl);
    }
}

int64_t io_pgtable_save(io_pgtable *pt, uint64_t *out, uint64_t cap)
{
    struct words_writer w = words_writer(out, cap);
    uint64_t nleaves = 0;

    if (!pt)
        return IOVA_E_ARG;
    pthread_mutex_lock(&pt->lock);
    words_put(&w, PT_SAVE_MAGIC);
    words_put(&w, PT_SAVE_VERSION);
    words_put(&w, pt->gshift);
    words_put(&w, pt->ias);
    words_put(&w, pt->oas);
    words_put(&w, pt->pgsize_bitmap);
    for (unsigned i = 0; i < PT_STAT_WORDS; i++)
        words_put(&w, *pt_stat_word(&pt->st, i));
    for (unsigned l = 0; l < IO_PGTABLE_LEVELS; l++)
        nleaves += pt->st.live_leaves[l];
    words_put(&w, nleaves);
    pt_save_table(pt, pt->root, pt->start_level, 0, &w);
    pthread_mutex_unlock(&pt->lock);
    return (int64_t)w.n;
}

/* Installs the saved leaves; IOVA_E_STATE on the first that is not sound. */
static int pt_restore_leaves(io_pgtable *pt, const uint64_t *in, uint64_t nleaves)
{
    uint64_t next = 0;   /* leaves come in iova order and never overlap */

    for (uint64_t k = 0; k < nleaves; k++) {
        const uint64_t *x = &in[4 * k];
        uint64_t iova = x[0], paddr = x[1], prot = x[2], lvl = x[3], size;
        int rc;

        if (lvl > 3 || lvl < pt->top_leaf_level || lvl < pt->start_level)
            return IOVA_E_STATE;
        size = lvl_size(pt, (unsigned)lvl);
        if ((k && iova < next) || ((iova | paddr) & (size - 1)) ||
            iova >= pt->in_limit || size > pt->in_limit - iova ||
            paddr >= pt->out_limit || size > pt->out_limit - paddr ||
            prot > IO_PGTABLE_PROT_ALL ||
            !(prot & (IO_PGTABLE_PROT_READ | IO_PGTABLE_PROT_WRITE)))
            return IOVA_E_STATE;
        rc = pt_install(pt, iova, paddr, (unsigned)lvl, (uint32_t)prot);
        if (rc)
            return rc;
        next = iova + size;
        if (next == 0)   /* the leaf ends at the top of the address space */
            return k + 1 == nleaves ? 0 : IOVA_E_STATE;
    }
    return 0;
}

int io_pgtable_restore(const uint64_t *in, uint64_t n, io_pgtable **out)
{
    struct io_pgtable_stats saved;
    io_pgtable *pt;
    uint64_t nleaves;
    int rc;

    if (!out)
        return IOVA_E_ARG;
    *out = NULL;
    if (!in || n < 6 + PT_STAT_WORDS + 1 || in[0] != PT_SAVE_MAGIC ||
        in[1] != PT_SAVE_VERSION || in[2] > 64 || in[3] > 64 || in[4] > 64)
        return IOVA_E_STATE;
    nleaves = in[6 + PT_STAT_WORDS];
    if (nleaves != (n - 7 - PT_STAT_WORDS) / 4 || (n - 7 - PT_STAT_WORDS) % 4)
        return IOVA_E_STATE;
    rc = io_pgtable_create((uint32_t)in[2], (uint32_t)in[3], (uint32_t)in[4], in[5], &pt);
    if (rc)
        return rc == IOVA_E_NOMEM ? rc : IOVA_E_STATE;
    rc = pt_restore_leaves(pt, in + 7 + PT_STAT_WORDS, nleaves);
    if (!rc) {
        /* What the leaves built must be what the counters say is live. */
        for (unsigned i = 0; i < PT_STAT_WORDS; i++)
            *pt_stat_word(&saved, i) = in[6 + i];
        for (unsigned l = 0; l < IO_PGTABLE_LEVELS; l++)
            if (saved.live_leaves[l] != pt->st.live_leaves[l])
                rc = IOVA_E_STATE;
        if (saved.mapped_bytes != pt->st.mapped_bytes ||
            saved.live_tables != pt->st.live_tables)
            rc = IOVA_E_STATE;
    }
    if (!rc) {
        pt->st = saved;
        if (io_pgtable_check(pt, NULL, 0))
            rc = IOVA_E_STATE;
    }
    if (rc) {
        io_pgtable_destroy(pt);
        return rc;
    }
    *out = pt;
    return 0;
}
