/*
 * iotlb.c - an IOMMU translation cache that notices stale translations.
 *
 * Layout. nentries entries in nsets = nentries / ways sets; entry i always
 * belongs to set i / ways. Each set threads its valid entries on a doubly
 * linked list in recency order (mru ... lru) and its free entries on a
 * singly linked free list. A valid entry caches one page-table leaf: the
 * leaf's first iova (aligned to 2^shift), its physical base and prot. A hash
 * table keyed by (iova, shift) finds an entry without scanning its set, so a
 * lookup costs one probe per leaf size currently cached, whatever the
 * associativity; shift_mask says which sizes those are.
 *
 * An entry is placed in set ((iova >> shift) % nsets), like a set index
 * taken from the virtual page number.
 *
 * Invariants (iotlb_check reports the first broken one):
 *   1. Each set's recency list holds exactly its `used` valid entries, all of
 *      that set, with consistent prev/next links from mru to lru; its free
 *      list holds the other ways - used entries, all invalid.
 *   2. Every valid entry is on exactly one hash chain, the one its key
 *      hashes to; chains hold nothing else; the chains hold valid_entries
 *      entries in all.
 *   3. No two valid entries have the same key.
 *   4. An entry's iova is aligned to its size and it sits in the set its
 *      key selects.
 *   5. shift_count[s] is the number of valid entries of size 2^s and bit s
 *      of shift_mask is set exactly when that count is non-zero.
 *   6. hits + misses == accesses; stale_unmapped + stale_remapped ==
 *      stale_hits == records kept + dropped + cleared; records kept <= limit.
 *
 * Staleness. Hardware cannot tell a stale entry from a good one, so a hit
 * is always served from the entry. The model then walks the page table
 * (io_pgtable_lookup, a handful of loads) and compares: if the address is
 * unmapped, or now translates to another physical address, or with rights
 * that forbid this access, the hit was stale. An entry whose mapping was
 * unmapped and mapped again to the same page with the same rights is not
 * reported: the access lands where the current mapping says.
 *
 * Locking: public entry points take tlb->lock; iotlb_access then takes the
 * page table's lock inside io_pgtable_lookup. The page table never calls
 * into this file, so the order iotlb -> io_pgtable cannot deadlock.
 */
#include "iotlb.h"
#include "iova_mem_internal.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NIL (-1)

struct tlb_entry {
    uint64_t iova;    /* first address of the cached leaf */
    uint64_t paddr;   /* its physical base */
    uint32_t prot;
    uint8_t shift;    /* log2 of the leaf size */
    uint8_t valid;
    uint16_t pad;
    int32_t hnext;    /* next entry on the same hash chain */
    int32_t prev;     /* recency list neighbours (valid entries) */
    int32_t next;     /* ... or the next free entry (invalid ones) */
};

struct tlb_set {
    int32_t mru, lru; /* ends of the recency list */
    int32_t free;     /* head of the free list */
    uint32_t used;
};

struct iotlb {
    pthread_mutex_t lock;
    uint32_t nentries, ways, nsets;
    struct tlb_entry *e;
    struct tlb_set *sets;
    int32_t *bucket;
    unsigned bucket_bits;
    uint32_t shift_count[64];
    uint64_t shift_mask;
    struct iotlb_stats st;
    uint64_t records_cleared;
    struct iotlb_stale_record *rec;
    size_t rec_cap;
    uint64_t rec_limit;
};

/* ---- hashing and set selection ----------------------------------------- */

static inline uint32_t tlb_hash(const iotlb *tlb, uint64_t iova, unsigned shift)
{
    uint64_t k = (iova >> shift) ^ ((uint64_t)shift << 57);

    k *= 0x9e3779b97f4a7c15ull;
    return (uint32_t)(k >> (64 - tlb->bucket_bits));
}

static inline uint32_t tlb_set_of(const iotlb *tlb, uint64_t iova, unsigned shift)
{
    return (uint32_t)((iova >> shift) % tlb->nsets);
}

static int32_t tlb_find(const iotlb *tlb, uint64_t iova, unsigned shift)
{
    int32_t i = tlb->bucket[tlb_hash(tlb, iova, shift)];

    while (i != NIL && (tlb->e[i].iova != iova || tlb->e[i].shift != shift))
        i = tlb->e[i].hnext;
    return i;
}

/* ---- list surgery ------------------------------------------------------- */

static void tlb_unlink_recency(iotlb *tlb, int32_t i)
{
    struct tlb_entry *x = &tlb->e[i];
    struct tlb_set *s = &tlb->sets[(uint32_t)i / tlb->ways];

    if (x->prev != NIL)
        tlb->e[x->prev].next = x->next;
    else
        s->mru = x->next;
    if (x->next != NIL)
        tlb->e[x->next].prev = x->prev;
    else
        s->lru = x->prev;
}

static void tlb_push_mru(iotlb *tlb, int32_t i)
{
    struct tlb_entry *x = &tlb->e[i];
    struct tlb_set *s = &tlb->sets[(uint32_t)i / tlb->ways];

    x->prev = NIL;
    x->next = s->mru;
    if (s->mru != NIL)
        tlb->e[s->mru].prev = i;
    else
        s->lru = i;
    s->mru = i;
}

static void tlb_touch(iotlb *tlb, int32_t i)
{
    if (tlb->sets[(uint32_t)i / tlb->ways].mru == i)
        return;
    tlb_unlink_recency(tlb, i);
    tlb_push_mru(tlb, i);
}

/* Turn valid entry i back into a free one. */
static void tlb_drop(iotlb *tlb, int32_t i)
{
    struct tlb_entry *x = &tlb->e[i];
    struct tlb_set *s = &tlb->sets[(uint32_t)i / tlb->ways];
    int32_t *link = &tlb->bucket[tlb_hash(tlb, x->iova, x->shift)];

    while (*link != i)
        link = &tlb->e[*link].hnext;
    *link = x->hnext;
    tlb_unlink_recency(tlb, i);
    x->valid = 0;
    x->hnext = NIL;
    x->prev = NIL;
    x->next = s->free;
    s->free = i;
    s->used--;
    if (--tlb->shift_count[x->shift] == 0)
        tlb->shift_mask &= ~((uint64_t)1 << x->shift);
    tlb->st.valid_entries--;
}

/* Cache a leaf, evicting the set's least recently used entry if full. */
static void tlb_fill(iotlb *tlb, const struct io_pgtable_leaf *leaf)
{
    unsigned shift = (unsigned)__builtin_ctzll(leaf->size);
    struct tlb_set *s = &tlb->sets[tlb_set_of(tlb, leaf->iova, shift)];
    uint32_t h = tlb_hash(tlb, leaf->iova, shift);
    struct tlb_entry *x;
    int32_t i;

    if (s->free == NIL) {
        tlb_drop(tlb, s->lru);
        tlb->st.evictions++;
    }
    i = s->free;
    x = &tlb->e[i];
    s->free = x->next;
    s->used++;
    x->iova = leaf->iova;
    x->paddr = leaf->paddr;
    x->prot = leaf->prot;
    x->shift = (uint8_t)shift;
    x->valid = 1;
    x->hnext = tlb->bucket[h];
    tlb->bucket[h] = i;
    tlb_push_mru(tlb, i);
    if (tlb->shift_count[shift]++ == 0)
        tlb->shift_mask |= (uint64_t)1 << shift;
    tlb->st.valid_entries++;
    tlb->st.fills++;
}

/* ---- creation ----------------------------------------------------------- */

int iotlb_create(uint32_t entries, uint32_t ways, uint64_t record_limit, iotlb **out)
{
    iotlb *tlb;
    uint32_t nbuckets;

    if (!out)
        return IOVA_E_ARG;
    *out = NULL;
    if (ways == 0)
        ways = entries;
    if (entries == 0 || entries > IOTLB_MAX_ENTRIES || entries % ways)
        return IOVA_E_GEOMETRY;

    tlb = iova_mem_calloc(1, sizeof(*tlb));
    if (!tlb)
        return IOVA_E_NOMEM;
    tlb->nentries = entries;
    tlb->ways = ways;
    tlb->nsets = entries / ways;
    tlb->rec_limit = record_limit;
    /* At least two buckets per entry keeps chains short. */
    tlb->bucket_bits = 1;
    while ((1u << tlb->bucket_bits) < 2 * entries)
        tlb->bucket_bits++;
    nbuckets = 1u << tlb->bucket_bits;

    tlb->e = iova_mem_calloc(entries, sizeof(*tlb->e));
    tlb->sets = iova_mem_calloc(tlb->nsets, sizeof(*tlb->sets));
    tlb->bucket = iova_mem_malloc((size_t)nbuckets * sizeof(*tlb->bucket));
    if (!tlb->e || !tlb->sets || !tlb->bucket || pthread_mutex_init(&tlb->lock, NULL)) {
        free(tlb->e);
        free(tlb->sets);
        free(tlb->bucket);
        free(tlb);
        return IOVA_E_NOMEM;
    }
    for (uint32_t b = 0; b < nbuckets; b++)
        tlb->bucket[b] = NIL;
    for (uint32_t s = 0; s < tlb->nsets; s++) {
        tlb->sets[s].mru = tlb->sets[s].lru = NIL;
        tlb->sets[s].free = (int32_t)(s * ways);
    }
    for (uint32_t i = 0; i < entries; i++) {
        tlb->e[i].hnext = tlb->e[i].prev = NIL;
        tlb->e[i].next = (i + 1) % ways ? (int32_t)(i + 1) : NIL;
    }
    *out = tlb;
    return 0;
}

void iotlb_destroy(iotlb *tlb)
{
    if (!tlb)
        return;
    pthread_mutex_destroy(&tlb->lock);
    free(tlb->e);
    free(tlb->sets);
    free(tlb->bucket);
    free(tlb->rec);
    free(tlb);
}

int iotlb_geometry(const iotlb *tlb, uint32_t *entries, uint32_t *ways, uint32_t *sets)
{
    if (!tlb)
        return IOVA_E_ARG;
    if (entries)
        *entries = tlb->nentries;
    if (ways)
        *ways = tlb->ways;
    if (sets)
        *sets = tlb->nsets;
    return 0;
}

/* ---- stale records ------------------------------------------------------ */

static void tlb_record(iotlb *tlb, const struct iotlb_stale_record *r)
{
    uint64_t kept = tlb->st.records_kept;

    if (kept >= tlb->rec_limit) {
        tlb->st.records_dropped++;
        return;
    }
    if (kept == tlb->rec_cap) {
        size_t cap = tlb->rec_cap ? tlb->rec_cap * 2 : 64;
        struct iotlb_stale_record *grown;

        if (cap > tlb->rec_limit)
            cap = (size_t)tlb->rec_limit;
        grown = iova_mem_realloc(tlb->rec, cap * sizeof(*grown));
        if (!grown) {
            tlb->st.records_dropped++;
            return;
        }
        tlb->rec = grown;
        tlb->rec_cap = cap;
    }
    tlb->rec[kept] = *r;
    tlb->st.records_kept++;
}

/* ---- access ------------------------------------------------------------- */

static int tlb_access_locked(iotlb *tlb, io_pgtable *pt, uint64_t iova, uint32_t access,
                             uint64_t op_index, uint32_t dev_id, struct iotlb_result *res)
{
    uint32_t need = access == IOTLB_ACCESS_WRITE ? IO_PGTABLE_PROT_WRITE : IO_PGTABLE_PROT_READ;
    struct io_pgtable_leaf leaf;
    int32_t hit = NIL;
    uint32_t flags = 0;
    int rc;

    tlb->st.accesses++;
    for (uint64_t m = tlb->shift_mask; m; m &= m - 1) {
        unsigned s = (unsigned)__builtin_ctzll(m);
        int32_t i = tlb_find(tlb, iova & ~(((uint64_t)1 << s) - 1), s);

        if (i == NIL)
            continue;
        if (hit != NIL) {
            flags |= IOTLB_MULTI_HIT;
            break;
        }
        hit = i;
    }

    if (hit != NIL) {
        const struct tlb_entry *x = &tlb->e[hit];
        struct iotlb_stale_record r;

        tlb->st.hits++;
        if (flags & IOTLB_MULTI_HIT)
            tlb->st.multi_hits++;
        tlb_touch(tlb, hit);
        flags |= IOTLB_HIT;
        res->paddr = x->paddr + (iova - x->iova);
        res->flags = flags;
        if (!(x->prot & need)) {
            tlb->st.permission_faults++;
            return IOVA_E_PERM;
        }
        rc = io_pgtable_lookup(pt, iova, &leaf);
        if (rc == 0) {
            r.current_paddr = leaf.paddr + (iova - leaf.iova);
            if (r.current_paddr == res->paddr && (leaf.prot & need))
                return 0;
            flags |= IOTLB_STALE | IOTLB_STALE_REMAPPED;
            tlb->st.stale_remapped++;
        } else {
            r.current_paddr = IOTLB_UNMAPPED;
            flags |= IOTLB_STALE | IOTLB_STALE_UNMAPPED;
            tlb->st.stale_unmapped++;
        }
        tlb->st.stale_hits++;
        r.iova = iova;
        r.stale_paddr = res->paddr;
        r.op_index = op_index;
        r.dev_id = dev_id;
        r.flags = (flags & (IOTLB_STALE | IOTLB_STALE_UNMAPPED | IOTLB_STALE_REMAPPED)) |
                  (access == IOTLB_ACCESS_WRITE ? IOTLB_RECORD_WRITE : 0);
        tlb_record(tlb, &r);
        res->flags = flags;
        return 0;
    }

    tlb->st.misses++;
    res->flags = 0;
    rc = io_pgtable_lookup(pt, iova, &leaf);
    if (rc) {
        res->paddr = 0;
        tlb->st.translation_faults++;
        return IOVA_E_FAULT;
    }
    res->paddr = leaf.paddr + (iova - leaf.iova);
    if (!(leaf.prot & need)) {
        tlb->st.permission_faults++;
        return IOVA_E_PERM;
    }
    tlb_fill(tlb, &leaf);
    return 0;
}

int iotlb_access(iotlb *tlb, io_pgtable *pt, uint64_t iova, uint32_t access,
                 uint64_t op_index, uint32_t dev_id, struct iotlb_result *res)
{
    int rc;

    if (!tlb || !pt || !res || access > IOTLB_ACCESS_WRITE)
        return IOVA_E_ARG;
    pthread_mutex_lock(&tlb->lock);
    rc = tlb_access_locked(tlb, pt, iova, access, op_index, dev_id, res);
    pthread_mutex_unlock(&tlb->lock);
    return rc;
}

int iotlb_access_many(iotlb *tlb, io_pgtable *pt, const uint64_t *iovas,
                      const uint8_t *writes, size_t n, uint64_t op_base,
                      uint32_t dev_id, uint64_t *paddrs, int32_t *status)
{
    struct iotlb_result res;

    if (!tlb || !pt || (n && !iovas))
        return IOVA_E_ARG;
    if (writes)
        for (size_t i = 0; i < n; i++)
            if (writes[i] > IOTLB_ACCESS_WRITE)
                return IOVA_E_ARG;
    pthread_mutex_lock(&tlb->lock);
    for (size_t i = 0; i < n; i++) {
        int rc = tlb_access_locked(tlb, pt, iovas[i], writes ? writes[i] : IOTLB_ACCESS_READ,
                                   op_base + i, dev_id, &res);

        if (paddrs)
            paddrs[i] = res.paddr;
        if (status)
            status[i] = rc < 0 ? rc : (int32_t)res.flags;
    }
    pthread_mutex_unlock(&tlb->lock);
    return 0;
}

/* ---- invalidation ------------------------------------------------------- */

/* Drop every entry meeting [first, last]; returns how many went. */
static uint64_t tlb_drop_range(iotlb *tlb, uint64_t first, uint64_t last)
{
    uint64_t probes = 0, dropped = 0;

    for (uint64_t m = tlb->shift_mask; m; m &= m - 1) {
        unsigned s = (unsigned)__builtin_ctzll(m);
        uint64_t n = (last >> s) - (first >> s) + 1;

        probes = n > UINT64_MAX - probes ? UINT64_MAX : probes + n;
    }

    if (probes > tlb->st.valid_entries) {
        /* Cheaper to look at every valid entry than to probe every page. */
        for (uint32_t s = 0; s < tlb->nsets; s++) {
            int32_t i = tlb->sets[s].mru;

            while (i != NIL) {
                const struct tlb_entry *x = &tlb->e[i];
                int32_t next = x->next;
                uint64_t xl = x->iova + (((uint64_t)1 << x->shift) - 1);

                if (x->iova <= last && xl >= first) {
                    tlb_drop(tlb, i);
                    dropped++;
                }
                i = next;
            }
        }
        return dropped;
    }
    for (uint64_t m = tlb->shift_mask; m; m &= m - 1) {
        unsigned s = (unsigned)__builtin_ctzll(m);

        for (uint64_t p = first >> s; p <= last >> s; p++) {
            int32_t i = tlb_find(tlb, p << s, s);

            if (i != NIL) {
                tlb_drop(tlb, i);
                dropped++;
            }
        }
    }
    return dropped;
}

int iotlb_invalidate_range(iotlb *tlb, uint64_t iova, uint64_t size, uint64_t *dropped)
{
    uint64_t last, n;

    if (!tlb)
        return IOVA_E_ARG;
    if (!size)
        return IOVA_E_ALIGN;
    /* A range running past the top of the address space stops there. */
    last = size - 1 > UINT64_MAX - iova ? UINT64_MAX : iova + size - 1;
    pthread_mutex_lock(&tlb->lock);
    n = tlb_drop_range(tlb, iova, last);
    tlb->st.range_invalidations++;
    tlb->st.entries_invalidated += n;
    pthread_mutex_unlock(&tlb->lock);
    if (dropped)
        *dropped = n;
    return 0;
}

int iotlb_invalidate_all(iotlb *tlb, uint64_t *dropped)
{
    uint64_t n = 0;

    if (!tlb)
        return IOVA_E_ARG;
    pthread_mutex_lock(&tlb->lock);
    for (uint32_t s = 0; s < tlb->nsets; s++)
        while (tlb->sets[s].mru != NIL) {
            tlb_drop(tlb, tlb->sets[s].mru);
            n++;
        }
    tlb->st.full_invalidations++;
    tlb->st.entries_invalidated += n;
    pthread_mutex_unlock(&tlb->lock);
    if (dropped)
        *dropped = n;
    return 0;
}

/* ---- reporting ---------------------------------------------------------- */

int iotlb_get_stats(iotlb *tlb, struct iotlb_stats *stats)
{
    if (!tlb || !stats)
        return IOVA_E_ARG;
    pthread_mutex_lock(&tlb->lock);
    *stats = tlb->st;
    pthread_mutex_unlock(&tlb->lock);
    return 0;
}

int iotlb_stale_records(iotlb *tlb, uint64_t start, struct iotlb_stale_record *out,
                        size_t max, size_t *count)
{
    size_t n = 0;

    if (!tlb || !count || (max && !out))
        return IOVA_E_ARG;
    pthread_mutex_lock(&tlb->lock);
    for (uint64_t i = start; i < tlb->st.records_kept && n < max; i++)
        out[n++] = tlb->rec[i];
    pthread_mutex_unlock(&tlb->lock);
    *count = n;
    return 0;
}

int iotlb_clear_records(iotlb *tlb)
{
    if (!tlb)
        return IOVA_E_ARG;
    pthread_mutex_lock(&tlb->lock);
    tlb->records_cleared += tlb->st.records_kept;
    tlb->st.records_kept = 0;
    free(tlb->rec);
    tlb->rec = NULL;
    tlb->rec_cap = 0;
    pthread_mutex_unlock(&tlb->lock);
    return 0;
}

int iotlb_entries(iotlb *tlb, struct iotlb_entry_info *out, size_t max, size_t *count)
{
    size_t n = 0;

    if (!tlb || !count || (max && !out))
        return IOVA_E_ARG;
    pthread_mutex_lock(&tlb->lock);
    for (uint32_t s = 0; s < tlb->nsets && n < max; s++) {
        uint32_t rank = 0;

        for (int32_t i = tlb->sets[s].mru; i != NIL && n < max; i = tlb->e[i].next) {
            const struct tlb_entry *x = &tlb->e[i];

            out[n].iova = x->iova;
            out[n].paddr = x->paddr;
            out[n].size = (uint64_t)1 << x->shift;
            out[n].prot = x->prot;
            out[n].set = s;
            out[n].rank = rank++;
            out[n].pad = 0;
            n++;
        }
    }
    pthread_mutex_unlock(&tlb->lock);
    *count = n;
    return 0;
}

/* ---- validation --------------------------------------------------------- */

static uint32_t tlb_check_locked(const iotlb *tlb)
{
    uint32_t shift_count[64];
    uint64_t valid = 0, chained = 0, mask = 0;
    const struct iotlb_stats *st = &tlb->st;

    memset(shift_count, 0, sizeof(shift_count));
    /* 1 and 4: the sets. */
    for (uint32_t s = 0; s < tlb->nsets; s++) {
        const struct tlb_set *set = &tlb->sets[s];
        int32_t prev = NIL, i;
        uint32_t used = 0, nfree = 0;

        for (i = set->mru; i != NIL; prev = i, i = tlb->e[i].next) {
            const struct tlb_entry *x = &tlb->e[i];

            if (i < 0 || (uint32_t)i >= tlb->nentries || (uint32_t)i / tlb->ways != s)
                return 1;
            if (!x->valid || x->prev != prev || ++used > tlb->ways)
                return 1;
            if (x->shift >= 64 || (x->iova & (((uint64_t)1 << x->shift) - 1)))
                return 4;
            if (tlb_set_of(tlb, x->iova, x->shift) != s)
                return 4;
            shift_count[x->shift]++;
        }
        if (prev != set->lru || used != set->used)
            return 1;
        for (i = set->free; i != NIL; i = tlb->e[i].next) {
            if (i < 0 || (uint32_t)i >= tlb->nentries || (uint32_t)i / tlb->ways != s)
                return 1;
            if (tlb->e[i].valid || ++nfree > tlb->ways)
                return 1;
        }
        if (used + nfree != tlb->ways)
            return 1;
        valid += used;
    }
    /* 2 and 3: the hash chains. */
    for (uint32_t b = 0; b < (1u << tlb->bucket_bits); b++) {
        for (int32_t i = tlb->bucket[b]; i != NIL; i = tlb->e[i].hnext) {
            const struct tlb_entry *x = &tlb->e[i];

            if (i < 0 || (uint32_t)i >= tlb->nentries || !x->valid)
                return 2;
            if (tlb_hash(tlb, x->iova, x->shift) != b || ++chained > valid)
                return 2;
            if (tlb_find(tlb, x->iova, x->shift) != i)
                return 3; /* an earlier entry on the chain has the same key */
        }
    }
    if (chained != valid || valid != st->valid_entries)
        return 2;
    /* 5 */
    for (unsigned s = 0; s < 64; s++) {
        if (shift_count[s] != tlb->shift_count[s])
            return 5;
        if (shift_count[s])
            mask |= (uint64_t)1 << s;
    }
    if (mask != tlb->shift_mask)
        return 5;
    /* 6 */
    if (st->hits + st->misses != st->accesses)
        return 6;
    if (st->stale_unmapped + st->stale_remapped != st->stale_hits)
        return 6;
    if (st->records_kept + st->records_dropped + tlb->records_cleared != st->stale_hits)
        return 6;
    if (st->records_kept > tlb->rec_limit || st->records_kept > tlb->rec_cap)
        return 6;
    return 0;
}

/* What each invariant says, as iotlb_check reports it. */
static const char *const tlb_invariant[] = {
    "",
    "each set's recency list holds its used valid entries, linked both ways, and "
    "its free list the rest",
    "every valid entry is on the one hash chain its key selects, and only those",
    "no two valid entries have the same key",
    "an entry's iova is aligned to its size, in the set its key selects",
    "shift_count and shift_mask match the sizes of the valid entries",
    "the counters add up (hits + misses, stale kinds, records)",
};

int iotlb_check(iotlb *tlb, char *msg, size_t msg_len)
{
    uint32_t bad;

    if (msg && msg_len)
        msg[0] = 0;
    if (!tlb)
        return IOVA_E_ARG;
    pthread_mutex_lock(&tlb->lock);
    bad = tlb_check_locked(tlb);
    pthread_mutex_unlock(&tlb->lock);
    if (!bad)
        return 0;
    if (msg && msg_len)
        snprintf(msg, msg_len, "iotlb: invariant %u does not hold: %s", bad,
                 tlb_invariant[bad]);
    return IOVA_E_CORRUPT;
}

/* ---- saving and restoring ----------------------------------------------- */

/*
 * Layout (version 1):
 *   magic, version, nentries, ways, record_limit,
 *   the 17 words of struct iotlb_stats in declaration order, records_cleared,
 *   per stale record (records_kept of them, oldest first):
 *       iova, stale_paddr, current_paddr, op_index, dev_id, flags
 *   per set: used, then per entry from most to least recently used:
 *       iova, paddr, prot, shift
 * Which slot of its set an entry occupies, and the hash chains' order,
 * decide nothing and are not saved.
 */
#define TLB_SAVE_MAGIC 0x7079696f76610004ull   /* "pyiova" + format family */
#define TLB_SAVE_VERSION 1
#define TLB_STAT_WORDS 17
#define TLB_HEAD_WORDS (5 + TLB_STAT_WORDS + 1)

static uint64_t *tlb_stat_word(struct iotlb_stats *s, unsigned i)
{
    uint64_t *fixed[TLB_STAT_WORDS] = {
        &s->accesses, &s->hits, &s->misses, &s->fills, &s->evictions,
        &s->translation_faults, &s->permission_faults, &s->stale_hits,
        &s->stale_unmapped, &s->stale_remapped, &s->multi_hits,
        &s->range_invalidations, &s->full_invalidations, &s->entries_invalidated,
        &s->valid_entries, &s->records_kept, &s->records_dropped,
    };
    return fixed[i];
}

int64_t iotlb_save(iotlb *tlb, uint64_t *out, uint64_t cap)
{
    uint64_t n = 0;

    if (!tlb)
        return IOVA_E_ARG;
    if (!out)
        cap = 0;
#define TLB_PUT(v) do { uint64_t v_ = (v); if (n < cap) out[n] = v_; n++; } while (0)
    pthread_mutex_lock(&tlb->lock);
    TLB_PUT(TLB_SAVE_MAGIC);
    TLB_PUT(TLB_SAVE_VERSION);
    TLB_PUT(tlb->nentries);
    TLB_PUT(tlb->ways);
    TLB_PUT(tlb->rec_limit);
    for (unsigned i = 0; i < TLB_STAT_WORDS; i++)
        TLB_PUT(*tlb_stat_word(&tlb->st, i));
    TLB_PUT(tlb->records_cleared);
    for (uint64_t k = 0; k < tlb->st.records_kept; k++) {
        const struct iotlb_stale_record *r = &tlb->rec[k];

        TLB_PUT(r->iova);
        TLB_PUT(r->stale_paddr);
        TLB_PUT(r->current_paddr);
        TLB_PUT(r->op_index);
        TLB_PUT(r->dev_id);
        TLB_PUT(r->flags);
    }
    for (uint32_t s = 0; s < tlb->nsets; s++) {
        TLB_PUT(tlb->sets[s].used);
        for (int32_t i = tlb->sets[s].mru; i != NIL; i = tlb->e[i].next) {
            TLB_PUT(tlb->e[i].iova);
            TLB_PUT(tlb->e[i].paddr);
            TLB_PUT(tlb->e[i].prot);
            TLB_PUT(tlb->e[i].shift);
        }
    }
#undef TLB_PUT
    pthread_mutex_unlock(&tlb->lock);
    return (int64_t)n;
}

static bool tlb_record_sound(const struct iotlb_stale_record *r)
{
    uint32_t kind = r->flags & (IOTLB_STALE_UNMAPPED | IOTLB_STALE_REMAPPED);

    if ((r->flags & ~(uint32_t)(IOTLB_STALE | IOTLB_STALE_UNMAPPED | IOTLB_STALE_REMAPPED |
                                IOTLB_RECORD_WRITE)) ||
        !(r->flags & IOTLB_STALE))
        return false;
    if (kind == IOTLB_STALE_UNMAPPED)
        return r->current_paddr == IOTLB_UNMAPPED;
    return kind == IOTLB_STALE_REMAPPED && r->current_paddr != IOTLB_UNMAPPED;
}

/* Appends an entry at the least recently used end of set s: restoring the
 * entries most recent first rebuilds each set's order. IOVA_E_STATE if the
 * entry cannot be there. */
static int tlb_restore_entry(iotlb *tlb, uint32_t s, const uint64_t *x)
{
    uint64_t iova = x[0], paddr = x[1], prot = x[2], shift = x[3];
    struct tlb_set *set = &tlb->sets[s];
    struct tlb_entry *e;
    uint32_t h;
    int32_t i;

    if (shift < 12 || shift > 63 || ((iova | paddr) & (((uint64_t)1 << shift) - 1)) ||
        prot > IO_PGTABLE_PROT_ALL || set->free == NIL ||
        tlb_set_of(tlb, iova, (unsigned)shift) != s || tlb_find(tlb, iova, (unsigned)shift) != NIL)
        return IOVA_E_STATE;
    i = set->free;
    e = &tlb->e[i];
    set->free = e->next;
    set->used++;
    e->iova = iova;
    e->paddr = paddr;
    e->prot = (uint32_t)prot;
    e->shift = (uint8_t)shift;
    e->valid = 1;
    h = tlb_hash(tlb, iova, (unsigned)shift);
    e->hnext = tlb->bucket[h];
    tlb->bucket[h] = i;
    e->next = NIL;
    e->prev = set->lru;
    if (set->lru != NIL)
        tlb->e[set->lru].next = i;
    else
        set->mru = i;
    set->lru = i;
    if (tlb->shift_count[shift]++ == 0)
        tlb->shift_mask |= (uint64_t)1 << shift;
    return 0;
}

static int tlb_restore_body(iotlb *tlb, const uint64_t *in, uint64_t n,
                            const struct iotlb_stats *saved)
{
    uint64_t pos = TLB_HEAD_WORDS, kept = saved->records_kept, valid = 0;

    if (kept > tlb->rec_limit || kept > (n - pos) / 6)
        return IOVA_E_STATE;
    if (kept) {
        tlb->rec = iova_mem_calloc((size_t)kept, sizeof(*tlb->rec));
        if (!tlb->rec)
            return IOVA_E_NOMEM;
        tlb->rec_cap = (size_t)kept;
    }
    for (uint64_t k = 0; k < kept; k++, pos += 6) {
        struct iotlb_stale_record *r = &tlb->rec[k];

        if (in[pos + 4] > UINT32_MAX || in[pos + 5] > UINT32_MAX)
            return IOVA_E_STATE;
        r->iova = in[pos];
        r->stale_paddr = in[pos + 1];
        r->current_paddr = in[pos + 2];
        r->op_index = in[pos + 3];
        r->dev_id = (uint32_t)in[pos + 4];
        r->flags = (uint32_t)in[pos + 5];
        if (!tlb_record_sound(r))
            return IOVA_E_STATE;
    }
    for (uint32_t s = 0; s < tlb->nsets; s++) {
        uint64_t used;

        if (pos >= n)
            return IOVA_E_STATE;
        used = in[pos++];
        if (used > tlb->ways || used > (n - pos) / 4)
            return IOVA_E_STATE;
        for (uint64_t k = 0; k < used; k++, pos += 4)
            if (tlb_restore_entry(tlb, s, in + pos))
                return IOVA_E_STATE;
        valid += used;
    }
    if (pos != n || valid != saved->valid_entries)
        return IOVA_E_STATE;
    return 0;
}

int iotlb_restore(const uint64_t *in, uint64_t n, iotlb **out)
{
    struct iotlb_stats saved;
    iotlb *tlb;
    int rc;

    if (!out)
        return IOVA_E_ARG;
    *out = NULL;
    if (!in || n < TLB_HEAD_WORDS || in[0] != TLB_SAVE_MAGIC || in[1] != TLB_SAVE_VERSION ||
        in[2] == 0 || in[2] > IOTLB_MAX_ENTRIES || in[3] == 0 || in[3] > in[2])
        return IOVA_E_STATE;
    rc = iotlb_create((uint32_t)in[2], (uint32_t)in[3], in[4], &tlb);
    if (rc)
        return rc == IOVA_E_NOMEM ? rc : IOVA_E_STATE;
    for (unsigned i = 0; i < TLB_STAT_WORDS; i++)
        *tlb_stat_word(&saved, i) = in[5 + i];
    tlb->records_cleared = in[5 + TLB_STAT_WORDS];
    rc = tlb_restore_body(tlb, in, n, &saved);
    if (!rc) {
        tlb->st = saved;
        if (tlb_check_locked(tlb))
            rc = IOVA_E_STATE;
    }
    if (rc) {
        iotlb_destroy(tlb);
        return rc;
    }
    *out = tlb;
    return 0;
}
