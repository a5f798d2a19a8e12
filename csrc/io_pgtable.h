/*
 * io_pgtable.h - LPAE-style I/O page tables (public interface).
 *
 * A sparse multi-level table translating I/O virtual addresses (iova) to
 * physical addresses, shaped like the ARM LPAE stage-1 format that
 * io-pgtable-arm builds for the IPMMU and the SMMUs: a granule of 4K, 16K or
 * 64K, tables of granule/8 entries, up to four levels, block (large-page)
 * leaves at the upper levels the page-size bitmap allows.
 *
 * This header is read by cffi as well as by C: it holds only an opaque
 * struct, plain structs of integers, prototypes and integer #defines.
 *
 * Conventions: every function returns 0 or a negative IOVA_E_* code
 * (iova_errors.h):
 *   IOVA_E_ARG       a NULL pointer
 *   IOVA_E_GEOMETRY  a granule, input or output size or page-size bitmap
 *                    the table cannot have
 *   IOVA_E_ALIGN     an address or size not a multiple of the granule, or a
 *                    size of 0
 *   IOVA_E_PROT      prot without READ or WRITE, or with unknown bits
 *   IOVA_E_ADDR      an address beyond the input (ias) or output (oas) size
 *   IOVA_E_EXISTS    a map would cover an address that is already mapped
 *   IOVA_E_NOTFOUND  nothing is mapped at the address looked up
 *   IOVA_E_NOMEM     a table could not be allocated (the table is left as it
 *                    was; pyiova.faults can make any allocation fail to
 *                    test this)
 *   IOVA_E_CORRUPT   io_pgtable_check found a broken invariant
 *   IOVA_E_STATE     io_pgtable_restore was given words that are no table
 * A single io_pgtable may be used from several threads: each call takes the
 * table's own mutex.
 */
#ifndef PYIOVA_IO_PGTABLE_H
#define PYIOVA_IO_PGTABLE_H

#include <stdint.h>
#include <stddef.h>

#include "iova_errors.h"

/* Access rights, the same bit values as the kernel's IOMMU_* prot flags. */
#define IO_PGTABLE_PROT_READ 1
#define IO_PGTABLE_PROT_WRITE 2
#define IO_PGTABLE_PROT_CACHE 4
#define IO_PGTABLE_PROT_NOEXEC 8
#define IO_PGTABLE_PROT_MMIO 16
#define IO_PGTABLE_PROT_PRIV 32
#define IO_PGTABLE_PROT_ALL 63

/* Limits of the model (LPAE without the 52-bit extensions for inputs). */
#define IO_PGTABLE_MAX_IAS 48
#define IO_PGTABLE_MAX_OAS 52
#define IO_PGTABLE_LEVELS 4

typedef struct io_pgtable io_pgtable;

/* One leaf (a page or a block) of the table. */
struct io_pgtable_leaf {
    uint64_t iova;   /* first address the leaf translates (aligned to size) */
    uint64_t paddr;  /* physical address iova translates to */
    uint64_t size;   /* bytes the leaf covers: a page size of the bitmap */
    uint32_t prot;   /* IO_PGTABLE_PROT_* bits given to the map */
    uint32_t level;  /* 0..3, 3 being the granule level */
};

/* Counters; "live" ones describe the table now, the others only grow. */
struct io_pgtable_stats {
    uint64_t mapped_bytes;        /* live: bytes translated by some leaf */
    uint64_t live_leaves[4];      /* live: leaves per level */
    uint64_t live_tables;         /* live: tables, the root included */
    uint64_t tables_allocated;    /* tables ever allocated (root included) */
    uint64_t tables_freed;        /* tables freed because they became empty */
    uint64_t leaves_installed;    /* leaves written by maps (pages mapped) */
    uint64_t leaves_removed;      /* leaves cleared by unmaps or rollback */
    uint64_t bytes_mapped_total;  /* bytes covered by the leaves installed */
    uint64_t bytes_unmapped_total;/* bytes covered by the leaves removed */
    uint64_t block_splits;        /* blocks split to unmap part of them */
    uint64_t map_calls;           /* successful maps */
    uint64_t unmap_calls;         /* unmaps that got past argument checks */
    uint64_t map_failures;        /* maps refused after argument checks */
};

/*
 * Create an empty table. granule_shift is 12, 14 or 16; ias and oas are the
 * input and output address sizes in bits; pgsize_bitmap has one bit per
 * supported page size (bit n = a 2^n page). It must include the granule and
 * may only name block sizes of consecutive levels from the granule up, at
 * level 1 or below (4K granule: 4K, 2M, 1G).
 */
int io_pgtable_create(uint32_t granule_shift, uint32_t ias, uint32_t oas,
                      uint64_t pgsize_bitmap, io_pgtable **out);
void io_pgtable_destroy(io_pgtable *pt);

/* The geometry the table was created with (any pointer may be NULL). */
int io_pgtable_geometry(const io_pgtable *pt, uint32_t *granule_shift,
                        uint32_t *ias, uint32_t *oas, uint64_t *pgsize_bitmap,
                        uint32_t *start_level);

/*
 * Map [iova, iova + size) to [paddr, paddr + size), cutting the range the
 * way iommu_map() does: each step takes the largest page size of the bitmap
 * that fits the remaining size and to which both addresses are aligned.
 * All or nothing: if any address of the range is already mapped the call
 * fails with IOVA_E_EXISTS before touching anything, and on IOVA_E_NOMEM
 * what was installed is taken back. prot needs READ or WRITE.
 */
int io_pgtable_map(io_pgtable *pt, uint64_t iova, uint64_t paddr,
                   uint64_t size, uint32_t prot);

/*
 * Unmap [iova, iova + size) the way iommu_unmap() walks it: steps of the
 * largest page size that fits the remaining size and iova's alignment. A
 * step over a larger block splits the block first; a step whose span holds
 * a whole sub-table removes the sub-table. The walk stops at the first step
 * whose span has nothing mapped. *unmapped receives the bytes unmapped (the
 * sum of the steps taken), which is size unless unmapped space was met.
 * Tables left empty are freed.
 */
int io_pgtable_unmap(io_pgtable *pt, uint64_t iova, uint64_t size,
                     uint64_t *unmapped);

/* The leaf translating iova (IOVA_E_NOTFOUND if none). */
int io_pgtable_lookup(io_pgtable *pt, uint64_t iova,
                      struct io_pgtable_leaf *leaf);

/* The physical address iova translates to (IOVA_E_NOTFOUND if none). */
int io_pgtable_iova_to_phys(io_pgtable *pt, uint64_t iova, uint64_t *paddr);

/*
 * Copy up to max leaves, in ascending iova order, starting with the first
 * leaf that ends above from. *count receives how many were copied.
 */
int io_pgtable_leaves(io_pgtable *pt, uint64_t from,
                      struct io_pgtable_leaf *out, size_t max, size_t *count);

/*
 * Batches: one call, one lock hold for n maps or unmaps. Both stop at the
 * first failing element and return its error; *done receives how many
 * elements completed. unmapped (may be NULL) receives each element's bytes.
 */
int io_pgtable_map_many(io_pgtable *pt, const uint64_t *iovas,
                        const uint64_t *paddrs, const uint64_t *sizes,
                        uint32_t prot, size_t n, size_t *done);
int io_pgtable_unmap_many(io_pgtable *pt, const uint64_t *iovas,
                          const uint64_t *sizes, size_t n,
                          uint64_t *unmapped, size_t *done);

int io_pgtable_get_stats(io_pgtable *pt, struct io_pgtable_stats *stats);

/*
 * Validator: walks the whole table and recomputes every count. 0, or
 * IOVA_E_CORRUPT with the broken invariant (numbered as in io_pgtable.c)
 * described in msg.
 */
int io_pgtable_check(io_pgtable *pt, char *msg, size_t msg_len);

/*
 * Saving and restoring (pickle, deepcopy, checkpoints). io_pgtable_save
 * writes the geometry, every counter and every leaf as uint64_t words and
 * returns how many words that takes (copying them only when cap suffices),
 * or a negative code. io_pgtable_restore builds a new table from them that
 * translates, counts and changes exactly as the original would:
 * IOVA_E_STATE if the words are not a consistent table, IOVA_E_NOMEM if
 * memory ran out (nothing is left allocated either way).
 */
int64_t io_pgtable_save(io_pgtable *pt, uint64_t *out, uint64_t cap);
int io_pgtable_restore(const uint64_t *in, uint64_t n, io_pgtable **out);

#endif /* PYIOVA_IO_PGTABLE_H */
