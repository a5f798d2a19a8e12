/*
 * iova_cookie.h - the dma-iommu cookie's allocators behind one PFN-based
 * alloc/free interface, and its flush queue.
 *
 * Allocator types, chosen per cookie:
 *   IOVA              the kernel's tree + rcache (an iova_domain the caller
 *                     owns and lends to the cookie);
 *   MSI               the MSI cookie's bump allocator (no limit, no reuse;
 *                     a free undoes the latest allocation);
 *   WRAPAROUND        one-way: the lowest fitting range at or above a cursor
 *                     that only moves up; at the limit, one full IOTLB flush
 *                     and back to the start. No range freed since the last
 *                     flush is ever handed out again;
 *   RESET_WHEN_EMPTY  the rejected 2017 patch: never reuse, count mapped
 *                     pfns, reset the whole space when the count hits zero.
 *
 * Some allocator decisions need the IOMMU driver (a flush, a reset). The C
 * core cannot call it, so such calls report an event bit and the caller
 * acts on it before using the result.
 */
#ifndef PYIOVA_IOVA_COOKIE_H
#define PYIOVA_IOVA_COOKIE_H

#include <stdint.h>
#include <stddef.h>

#include "iova_errors.h"

#define IOVA_COOKIE_IOVA             0
#define IOVA_COOKIE_MSI              1
#define IOVA_COOKIE_WRAPAROUND       2
#define IOVA_COOKIE_RESET_WHEN_EMPTY 3

/* Events reported through *events (bits). */
#define IOVA_EV_FLUSH     1   /* flush the whole IOTLB now (a wrap, or the flush queue) */
#define IOVA_EV_RESET     2   /* the space was reset: call the driver's domain_reset */
#define IOVA_EV_NO_32BIT  4   /* a 32-bit-first attempt failed (6.12: stop trying) */
#define IOVA_EV_QUEUED    8   /* the free went into the flush queue */

/* Flags of iova_cookie_alloc. */
#define IOVA_COOKIE_TRY_32BIT 1   /* try below 4 GiB first, without flushing caches */

struct iova_domain;
struct iova_cookie;

struct iova_cookie_stats {
    int type;
    uint64_t start_pfn;
    uint64_t end_pfn;          /* highest pfn the allocator may use */
    uint64_t allocs;
    uint64_t frees;
    uint64_t failures;
    uint64_t live_ranges;      /* handed out and not yet freed */
    uint64_t live_pfns;        /* IOVA on the rcache path: as alloc_iova_fast sizes
                                * them (below 32 pages, rounded up to a power of two) */
    uint64_t held_pfns;        /* pfns not available: live, awaiting a flush, never reused */
    uint64_t cursor;           /* WRAPAROUND / MSI: next pfn considered */
    uint64_t wraps;            /* WRAPAROUND: flushes at the wrap */
    uint64_t resets;           /* RESET_WHEN_EMPTY */
    uint64_t fq_queued;        /* entries waiting in flush queues */
    uint64_t fq_flushes;       /* flushes the flush queue asked for */
    uint64_t fq_started;       /* the kernel's two flush counters */
    uint64_t fq_finished;
    uint64_t fq_lost;          /* queued ranges a retire could not free (IOVA_E_FQ_LOST) */
};

/* type IOVA and RESET_WHEN_EMPTY use `iovad` (not owned; it must outlive the
 * cookie); WRAPAROUND and MSI use [start_pfn, end_pfn] and `granule`.
 * NULL with *err = IOVA_E_COOKIE (an unknown type, or no domain for a type
 * that needs one), IOVA_E_GRANULE (a granule iova_granule_check refuses),
 * IOVA_E_RANGE (start_pfn > end_pfn, or end_pfn beyond 2^63) or
 * IOVA_E_NOMEM. */
struct iova_cookie *iova_cookie_new(int type, struct iova_domain *iovad,
                                    uint64_t granule, uint64_t start_pfn,
                                    uint64_t end_pfn, int *err);
void iova_cookie_destroy(struct iova_cookie *c);

/* The dma-iommu allocation of `pages` pfns at or below limit_pfn; returns
 * the pfn (>= 0), or a negative code (IOVA_E_NOSPC when there is no room). */
int64_t iova_cookie_alloc(struct iova_cookie *c, uint64_t pages,
                          uint64_t limit_pfn, int flags, int cpu,
                          uint32_t *events);
/* Keeps [lo, hi] out of use for good (reserved regions). WRAPAROUND only:
 * the IOVA types reserve on their iova_domain. Overlapping what is already
 * held is refused (IOVA_E_OVERLAP). */
int iova_cookie_reserve(struct iova_cookie *c, uint64_t lo, uint64_t hi);
/* IOVA type on a 6.12 domain: use the tree alone (alloc_iova/free_iova,
 * size-aligned), bypassing the rcache - a policy to compare against. */
int iova_cookie_set_tree_only(struct iova_cookie *c, int tree_only);
/* Frees what iova_cookie_alloc returned (strict: at once). `pages` must be
 * what was asked for: the range's own size on the tree paths (4.10,
 * tree-only, RESET_WHEN_EMPTY), a size of its class on the rcache path (as
 * free_iova_fast takes it); MSI undoes only the latest live allocation, whole.
 * Another size is refused (IOVA_E_FREE_SIZE, or IOVA_E_SIZECLASS on the
 * rcache path), as is a range the cookie did not hand out (IOVA_E_NOT_LIVE)
 * or one waiting in the flush queue (IOVA_E_QUEUED). */
int iova_cookie_free(struct iova_cookie *c, uint64_t pfn, uint64_t pages,
                     int cpu, uint32_t *events);

/* Flush queue (IOVA type only): ncpus (at least 1) per-CPU rings of
 * ring_size slots (2..2^20: IOVA_E_GEOMETRY otherwise) holding
 * ring_size - 1 entries each, as the kernel's (iova_fq.h); a timer of
 * timeout_ms on the caller's clock. A retired entry goes to its ring's CPU
 * rcache, so ncpus may not exceed the domain's (IOVA_E_CPU). */
int iova_cookie_fq_init(struct iova_cookie *c, unsigned ncpus,
                        unsigned ring_size, uint64_t timeout_ms);
/* Queues a free. The range must be one the strict free would take now
 * (same checks and codes) and not be queued already (IOVA_E_QUEUED).
 * cpu -1: this thread's ring. IOVA_E_FQ_FULL: the caller flushes the
 * IOTLB, calls iova_cookie_fq_flushed, and queues again. Nothing is queued
 * when the call fails; IOVA_E_FQ_LOST reports an older entry of the ring
 * that could not be retired. */
int iova_cookie_free_lazy(struct iova_cookie *c, uint64_t pfn, uint64_t pages,
                          int cpu, uint64_t now_ms, uint32_t *events);
/* The caller has flushed the IOTLB: count it, and (all_rings) retire every
 * queued entry on `cpu`'s rcache, as the timer does. IOVA_E_FQ_LOST: an
 * entry could not be freed (the others were retired). */
int iova_cookie_fq_flushed(struct iova_cookie *c, int all_rings, int cpu);
/* When the timer fires, or UINT64_MAX when it is not armed. */
uint64_t iova_cookie_fq_due(struct iova_cookie *c);
/* How many flush-queue rings the cookie has (0: no flush queue); a restored
 * cookie's wrapper names the valid CPUs with it. */
int iova_cookie_fq_rings(struct iova_cookie *c);

int iova_cookie_get_stats(struct iova_cookie *c, struct iova_cookie_stats *st);
/* Validator; 0 or IOVA_E_CORRUPT with a description. */
int iova_cookie_check(struct iova_cookie *c, char *msg, size_t msg_len);
/* WRAPAROUND: copies up to cap (lo, hi, dirty) triples of the ranges it
 * holds; returns how many there are. */
int64_t iova_cookie_wrap_ranges(struct iova_cookie *c, uint64_t *out,
                                uint64_t cap);

#endif
