/*
 * iotlb.h - a model of an IOMMU's translation cache (public interface).
 *
 * The IOTLB caches leaves of an io_pgtable: a device access that misses
 * walks the table and fills an entry; a hit is served from the entry alone,
 * exactly as hardware does, even if the table has changed since. Such a hit
 * on an entry that no longer matches the table is a stale translation: on
 * real hardware, DMA into a page that was freed or now belongs to someone
 * else. The model finds every one by comparing each hit with a fresh walk,
 * counts it and keeps a record of it.
 *
 * Entries are grouped in sets of `ways` entries, each set replacing its
 * least recently used entry (ways == entries: fully associative LRU).
 *
 * This header is read by cffi as well as by C (only an opaque struct, plain
 * structs of integers, prototypes and integer #defines).
 *
 * Conventions: every function returns 0 or a negative IOVA_E_* code
 * (iova_errors.h):
 *   IOVA_E_ARG       a NULL pointer, an access kind that is neither read nor write
 *   IOVA_E_GEOMETRY  entries and ways the IOTLB cannot have
 *   IOVA_E_ALIGN     an invalidation of size 0
 *   IOVA_E_FAULT     (iotlb_access) translation fault: nothing cached, nothing mapped
 *   IOVA_E_PERM      (iotlb_access) permission fault: the translation forbids the access
 *   IOVA_E_NOMEM     allocation failure (the structure is left as it was)
 *   IOVA_E_CORRUPT   iotlb_check found a broken invariant
 *   IOVA_E_STATE     iotlb_restore was given words that are no IOTLB
 * Each iotlb has its own mutex. iotlb_access also takes the page table's
 * mutex (always in that order: iotlb, then io_pgtable; the page table never
 * calls back into the IOTLB).
 */
#ifndef PYIOVA_IOTLB_H
#define PYIOVA_IOTLB_H

#include <stdint.h>
#include <stddef.h>

#include "io_pgtable.h"

#define IOTLB_MAX_ENTRIES 1048576

/* Access kinds for iotlb_access. */
#define IOTLB_ACCESS_READ 0
#define IOTLB_ACCESS_WRITE 1

/*
 * Result flags of an access (struct iotlb_result.flags, batch status):
 *   HIT             served from a cached entry
 *   STALE           ...which no longer matches the table
 *   STALE_UNMAPPED  the address is not mapped any more
 *   STALE_REMAPPED  the address now maps elsewhere, or with rights that
 *                   forbid this access
 *   MULTI_HIT       more than one entry matched (the smallest page won)
 */
#define IOTLB_HIT 1
#define IOTLB_STALE 2
#define IOTLB_STALE_UNMAPPED 4
#define IOTLB_STALE_REMAPPED 8
#define IOTLB_MULTI_HIT 16

/* current_paddr of a stale record whose address is not mapped any more. */
#define IOTLB_UNMAPPED 0xffffffffffffffff

typedef struct iotlb iotlb;

struct iotlb_result {
    uint64_t paddr;  /* where the access went (also set on a permission fault) */
    uint32_t flags;  /* IOTLB_* result flags */
    uint32_t pad;
};

/* One stale translation, as it happened. */
struct iotlb_stale_record {
    uint64_t iova;           /* the address the device used */
    uint64_t stale_paddr;    /* where the cached entry sent the access */
    uint64_t current_paddr;  /* where the table maps iova now, or IOTLB_UNMAPPED */
    uint64_t op_index;       /* the caller's operation counter at the access */
    uint32_t dev_id;         /* the caller's device number */
    uint32_t flags;          /* IOTLB_STALE | _UNMAPPED or _REMAPPED, + write bit 0x100 */
};

#define IOTLB_RECORD_WRITE 256

/* One cached entry, as iotlb_entries reports it. */
struct iotlb_entry_info {
    uint64_t iova;   /* first address of the cached leaf */
    uint64_t paddr;
    uint64_t size;
    uint32_t prot;
    uint32_t set;    /* the set holding it */
    uint32_t rank;   /* 0 = most recently used in its set */
    uint32_t pad;
};

struct iotlb_stats {
    uint64_t accesses;             /* iotlb_access calls that got to translate */
    uint64_t hits;
    uint64_t misses;
    uint64_t fills;                /* misses that filled an entry */
    uint64_t evictions;            /* entries pushed out by fills */
    uint64_t translation_faults;   /* misses with nothing mapped */
    uint64_t permission_faults;    /* accesses the translation forbids */
    uint64_t stale_hits;
    uint64_t stale_unmapped;
    uint64_t stale_remapped;
    uint64_t multi_hits;
    uint64_t range_invalidations;  /* iotlb_invalidate_range calls */
    uint64_t full_invalidations;   /* iotlb_invalidate_all calls */
    uint64_t entries_invalidated;  /* entries dropped by either */
    uint64_t valid_entries;        /* live: entries holding a translation */
    uint64_t records_kept;         /* live: stale records stored */
    uint64_t records_dropped;      /* stale hits not recorded (limit, memory) */
};

/*
 * Create an empty IOTLB of `entries` entries in sets of `ways` (0 means
 * fully associative). entries must be a multiple of ways, at most
 * IOTLB_MAX_ENTRIES. At most record_limit stale records are kept (the count
 * goes on beyond it).
 */
int iotlb_create(uint32_t entries, uint32_t ways, uint64_t record_limit, iotlb **out);
void iotlb_destroy(iotlb *tlb);

int iotlb_geometry(const iotlb *tlb, uint32_t *entries, uint32_t *ways, uint32_t *sets);

/*
 * A device access to iova through the IOTLB, then (on a miss) the table pt.
 * access is IOTLB_ACCESS_READ or _WRITE; op_index and dev_id only label a
 * stale record. On 0 or IOVA_E_PERM, *res says where the access went and how.
 */
int iotlb_access(iotlb *tlb, io_pgtable *pt, uint64_t iova, uint32_t access,
                 uint64_t op_index, uint32_t dev_id, struct iotlb_result *res);

/*
 * n accesses in one call, the i-th labelled op_base + i. paddrs and status
 * may be NULL; status[i] gets the access's flags (>= 0) or its fault
 * (IOVA_E_FAULT, IOVA_E_PERM). Faults do not stop the batch. writes may be NULL (all
 * reads) or hold one 0/1 per access.
 */
int iotlb_access_many(iotlb *tlb, io_pgtable *pt, const uint64_t *iovas,
                      const uint8_t *writes, size_t n, uint64_t op_base,
                      uint32_t dev_id, uint64_t *paddrs, int32_t *status);

/* Drop every entry whose span meets [iova, iova + size); *dropped may be NULL. */
int iotlb_invalidate_range(iotlb *tlb, uint64_t iova, uint64_t size, uint64_t *dropped);
/* Drop every entry. */
int iotlb_invalidate_all(iotlb *tlb, uint64_t *dropped);

int iotlb_get_stats(iotlb *tlb, struct iotlb_stats *stats);

/* Copy up to max stale records from number start on; *count gets how many. */
int iotlb_stale_records(iotlb *tlb, uint64_t start, struct iotlb_stale_record *out,
                        size_t max, size_t *count);
/* Forget the stored records (the counters stay). */
int iotlb_clear_records(iotlb *tlb);

/* Copy the valid entries, set by set, most recently used first. */
int iotlb_entries(iotlb *tlb, struct iotlb_entry_info *out, size_t max, size_t *count);

/* Validator: rechecks every invariant. 0, or IOVA_E_CORRUPT with the broken
 * invariant (numbered as in iotlb.c) described in msg. */
int iotlb_check(iotlb *tlb, char *msg, size_t msg_len);

/*
 * Saving and restoring (pickle, deepcopy, checkpoints). iotlb_save writes
 * the geometry, every counter, every stale record and every cached entry
 * in recency order as uint64_t words; it returns how many words that takes
 * (copying them only when cap suffices), or a negative code.
 * iotlb_restore builds a new IOTLB from them that hits, misses, evicts and
 * records exactly as the original would: IOVA_E_STATE if the words are not
 * a consistent IOTLB, IOVA_E_NOMEM if memory ran out (nothing is left
 * allocated).
 */
int64_t iotlb_save(iotlb *tlb, uint64_t *out, uint64_t cap);
int iotlb_restore(const uint64_t *in, uint64_t n, iotlb **out);

#endif /* PYIOVA_IOTLB_H */
