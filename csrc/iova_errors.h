/*
 * iova_errors.h - the error codes of the whole C core.
 *
 * Every call of the core that can fail returns 0 (or a non-negative
 * result) or one of these negative codes; each names what was wrong, so
 * that the binding can name the offending value (pyiova/errors.py maps
 * each code to one exception class). A failed call changes nothing, unless
 * its own comment says what it leaves.
 *
 * Read by cffi's cdef as well as by the C compiler: integer #defines only.
 */
#ifndef PYIOVA_IOVA_ERRORS_H
#define PYIOVA_IOVA_ERRORS_H

#define IOVA_E_NOMEM      -1   /* an allocation failed; nothing changed */
#define IOVA_E_CLOSED     -2   /* the domain was closed */
#define IOVA_E_SIZE       -3   /* size is 0 or larger than the pfn space */
#define IOVA_E_LIMIT      -4   /* limit_pfn below start_pfn or beyond the pfn space */
#define IOVA_E_PFN        -5   /* a pfn the granule cannot address in 64 bits */
#define IOVA_E_NOTFOUND   -6   /* no range contains the pfn; nothing is mapped there */
#define IOVA_E_NOTSTART   -7   /* free_fast: pfn is inside a range, not its start */
#define IOVA_E_CACHED     -8   /* the range already sits in an rcache magazine */
#define IOVA_E_SIZECLASS  -9   /* free_fast: size names another size class */
#define IOVA_E_RANGE      -10  /* lo > hi (a reserve, an allocator's space) */
#define IOVA_E_CPU        -11  /* cpu slot out of range */
#define IOVA_E_ANCHOR     -12  /* the anchor node cannot be freed */
#define IOVA_E_NOSPC      -13  /* no room: the allocation failed */
#define IOVA_E_GRANULE    -14  /* granule not a power of two in [2, 65536] */
#define IOVA_E_START      -15  /* start_pfn beyond the pfn space */
#define IOVA_E_NCPUS      -16  /* ncpus not in [1, IOVA_MAX_CPUS] */
#define IOVA_E_KERNEL     -17  /* unknown kernel rules */
#define IOVA_E_DMA32      -18  /* 4.10 dma_32bit_pfn out of range, or given for 6.12/6.1 */
#define IOVA_E_MODE       -19  /* unknown search mode */
#define IOVA_E_TOOMANY    -20  /* more ranges than the node index can address */
#define IOVA_E_CORRUPT    -21  /* a validator (*_check): an invariant does not hold */
#define IOVA_E_STATE      -22  /* a restore: the saved state is inconsistent */
/* Page tables, IOTLBs and the simulation engine (io_pgtable.h, iotlb.h,
 * sim_engine.h, sim_gen.h). ARG: a malformed argument (a NULL pointer, a bad
 * chunk of operation records, parameters the call cannot follow). GEOMETRY:
 * a shape the structure cannot have (a page table's granule, sizes or page
 * sizes, an IOTLB's entries and ways, a flush queue's rings). FAULT and
 * PERM: a device access nothing translates (translation fault), or that its
 * translation forbids (permission fault). */
#define IOVA_E_ARG        -23
#define IOVA_E_GEOMETRY   -24
#define IOVA_E_ALIGN      -25  /* an address or size not a multiple of the granule, or 0 */
#define IOVA_E_PROT       -26  /* prot without READ or WRITE, or with unknown bits */
#define IOVA_E_ADDR       -27  /* beyond the page table's input or output size */
#define IOVA_E_EXISTS     -28  /* a map would cover an address that is already mapped */
#define IOVA_E_FAULT      -29
#define IOVA_E_PERM       -30

/* The cookie's (iova_cookie.h). */
#define IOVA_E_FQ_FULL    -40  /* flush queue full: flush, then call again */
#define IOVA_E_NOT_LIVE   -41  /* free of a range that is not handed out */
#define IOVA_E_COOKIE     -42  /* unknown type, or the call does not apply to it */
#define IOVA_E_QUEUED     -43  /* the range already waits in the flush queue */
/* A queued range could not be freed when its flush came (the domain was
 * changed behind the queue): it was dropped, and counted in fq_lost. */
#define IOVA_E_FQ_LOST    -44
#define IOVA_E_FREE_SIZE  -45  /* a free names another size than the range's own */
#define IOVA_E_OVERLAP    -46  /* a reserve overlaps ranges already held */

#endif
