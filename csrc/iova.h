/*
 * iova.h - public interface of the IOVA domain: the kernel's range allocator
 * (drivers/iommu/iova.c behaviour: mainline 6.12 rules, Linux 6.1 rules or
 * Linux 4.10 rules) and its per-CPU range caches.
 *
 * Conventions:
 *   - pfns are unsigned 64-bit page frame numbers in units of the granule;
 *     limits are inclusive, as in the kernel's API;
 *   - calls that hand out a pfn return it as a non-negative int64_t, or a
 *     negative IOVA_E_* code (iova_errors.h: the one family of codes of the
 *     whole C core); other calls return 0 or a negative code;
 *   - nothing here aborts, prints or touches Python; every entry point takes
 *     the locks it needs, so any call may come from any thread.
 *
 * The per-CPU caches' calls are iova_rcache_* (iova_rcache.c), the others
 * iova_* (iova.c; saving and restoring: iova_save.c).
 *
 * This file is read by cffi's cdef as well as by the C compiler: keep it to
 * prototypes, plain structs of integers and integer #defines.
 */
#ifndef PYIOVA_IOVA_H
#define PYIOVA_IOVA_H

#include <stdint.h>
#include <stddef.h>

#include "iova_errors.h"

/* Kernel rules a domain follows. 6.1 is 6.12's tree with a depot of 4.10's
 * shape (a fixed array of 32 magazines that spills into the tree). */
#define IOVA_KERNEL_6_12  612
#define IOVA_KERNEL_6_1   601
#define IOVA_KERNEL_4_10  410

/* How alloc finds its gap; both return the same pfns. */
#define IOVA_SEARCH_AUGMENTED 0   /* O(log n): subtree gap maxima */
#define IOVA_SEARCH_LINEAR    1   /* the kernel's walk, node by node */

/* rcache geometry. */
#define IOVA_RANGE_CACHE_MAX_SIZE 6   /* size classes: 1, 2, 4, 8, 16, 32 pages */
#define IOVA_MAX_CPUS 1024
#define IOVA_DEPOT_DELAY_MS 100       /* 6.12: depot trim work fires this long after arming */
#define IOVA_DEPOT_MAX_MAGS 32        /* 6.1 and 4.10: the depot's fixed size (MAX_GLOBAL_MAGS) */

struct iova_domain;

struct iova_state {
    uint64_t cached_lo;        /* 6.12/6.1: pfn_lo of cached_node (anchor: 2^64-1) */
    uint64_t cached32_lo;      /* pfn_lo of cached32_node */
    int has_cached32;          /* 4.10: 0 when cached32_node is empty */
    uint64_t max32_alloc_size; /* 6.12 and 6.1 only */
    uint64_t dma_32bit_pfn;    /* 6.12/6.1: exclusive; 4.10: inclusive */
    uint64_t start_pfn;
    uint64_t granule;
    unsigned shift;
    int kernel;
    unsigned ncpus;
    int search_mode;
    uint64_t nodes;            /* ranges in the tree, anchor excluded */
    uint64_t used_pfns;        /* pages covered by them */
    uint64_t cached_pfns;      /* ranges that sit in magazines or the depot */
    uint64_t clock_ms;         /* the simulated clock of the depot trim work */
    uint64_t node_bytes;       /* bytes the tree's node pool holds */
    uint64_t nodes_visited;    /* tree nodes the searches have looked at */
};

/* --- lifetime ------------------------------------------------------------ */

/* 0 when granule is one the core models, else IOVA_E_GRANULE: the one rule
 * every constructor (iova_domain_new, iova_cookie_new) applies, and what the
 * binding asks before it uses a granule. */
int iova_granule_check(uint64_t granule);

/* init_iova_domain (+ iova_domain_init_rcaches). dma_32bit_pfn is used by the
 * 4.10 rules only (inclusive boundary); pass 0 for 6.12 and 6.1. */
struct iova_domain *iova_domain_new(uint64_t granule, uint64_t start_pfn,
                                    unsigned ncpus, int kernel,
                                    uint64_t dma_32bit_pfn, int *err);
/* put_iova_domain: releases every range and cache; later calls fail with
 * IOVA_E_CLOSED. The domain object itself stays until iova_domain_destroy. */
int iova_domain_close(struct iova_domain *d);
void iova_domain_destroy(struct iova_domain *d);
int iova_set_search_mode(struct iova_domain *d, int mode);
/* The rejected 2017 patch's reset_iova_domain, minus its loss of the
 * reserved regions: every cached pfn is dropped (with its range), the cache
 * pointers and max32_alloc_size go back to what init_iova_domain sets;
 * allocated ranges (reserved regions, anything not freed) stay. The
 * reset-when-empty cookie frees the ranges it retired first. */
int iova_domain_reset(struct iova_domain *d);

/* --- the tree (alloc_iova, free_iova, find_iova, reserve_iova) ----------- */

int64_t iova_alloc(struct iova_domain *d, uint64_t size, uint64_t limit_pfn,
                   int size_aligned);
/* Frees the range containing pfn; IOVA_E_NOTFOUND if there is none. */
int iova_free(struct iova_domain *d, uint64_t pfn);
/* 1 and lo_hi[0..1] filled when a range contains pfn, 0 when none. */
int iova_find(struct iova_domain *d, uint64_t pfn, uint64_t *lo_hi);
/* iova_find for a caller that hands ranges out and takes them back (a
 * cookie): 1 with out[0..2] = lo, hi, and 1 if the range sits in an rcache
 * magazine (0 if it is allocated), 0 when no range holds pfn (the 6.12
 * anchor is none), or IOVA_E_CLOSED. */
int iova_lookup(struct iova_domain *d, uint64_t pfn, uint64_t *out);
/* The range reserve_iova returns, in lo_hi[0..1]. */
int iova_reserve(struct iova_domain *d, uint64_t lo, uint64_t hi,
                 uint64_t *lo_hi);
/* IOVA_E_CLOSED on a closed domain, with the constants (granule, shift,
 * start_pfn, kernel, ncpus, dma_32bit_pfn) still filled in. */
int iova_get_state(struct iova_domain *d, struct iova_state *st);
/* Copies up to cap ranges (lo, hi pairs, address order, anchor excluded) to
 * out; returns how many ranges exist (may be more than cap). */
int64_t iova_ranges(struct iova_domain *d, uint64_t *out, uint64_t cap);
/* Validator: recomputes every invariant from scratch. 0, or IOVA_E_CORRUPT
 * with a description in msg. */
int iova_check(struct iova_domain *d, char *msg, size_t msg_len);

/* Batch calls: one C call for many operations. alloc_many writes a pfn per
 * size (0 where the allocation failed) and returns how many succeeded, or a
 * negative code with *bad_index set when a size is invalid (nothing was done).
 * free_many stops at the first pfn it cannot free: it returns the number
 * freed, and on a short count *err says why. */
int64_t iova_alloc_many(struct iova_domain *d, const uint64_t *sizes,
                        uint64_t *out, uint64_t n, uint64_t limit_pfn,
                        int size_aligned, uint64_t *bad_index);
int64_t iova_free_many(struct iova_domain *d, const uint64_t *pfns,
                       uint64_t n, int *err);

/* --- the rcache (alloc_iova_fast, free_iova_fast and friends) ------------ */

/* The slot cpu == -1 stands for: the calling thread's own on this domain.
 * Threads get slots in the order they first ask the domain (by this call or
 * by any call with cpu == -1): the first slot 0, the next slot 1, and so on,
 * modulo ncpus; a thread keeps its slot for the domain's life. A restored
 * domain starts a new order. IOVA_E_NOMEM if the domain cannot remember one
 * more thread. */
int iova_rcache_current_cpu(struct iova_domain *d);
/* Returns the pfn, 0 where the kernel returns 0, or a negative code. */
int64_t iova_rcache_alloc_fast(struct iova_domain *d, uint64_t size,
                               uint64_t limit_pfn, int flush_rcache, int cpu);
int iova_rcache_free_fast(struct iova_domain *d, uint64_t pfn, uint64_t size,
                          int cpu);
int iova_rcache_flush_cpu(struct iova_domain *d, int cpu);
/* free_global_cached_iovas: 6.12 frees the newest magazine first, 6.1 the
 * oldest (index 0 up); 4.10 had no such call, pyiova flushes newest first. */
int iova_rcache_flush_depot(struct iova_domain *d);
int iova_rcache_flush_all(struct iova_domain *d);
/* Runs once every pending depot trim item (6.12; 6.1 and 4.10 have none);
 * returns how many ran. */
int64_t iova_rcache_run_pending_work(struct iova_domain *d);
/* Moves the simulated clock forward, running trim work as it falls due. */
int64_t iova_rcache_advance(struct iova_domain *d, uint64_t ms);
/* For a caller that decides itself when trim work runs (a trace replay):
 * due_ms[k] (IOVA_RANGE_CACHE_MAX_SIZE of them) is when class k's pending
 * trim item falls due on the clock, UINT64_MAX when none; returns how many
 * are pending (due_ms may be NULL: the count alone). iova_rcache_run_trim runs
 * class k's item now if it is pending (1 if it ran, 0 if not,
 * IOVA_E_SIZECLASS for no such class); iova_rcache_set_clock
 * moves the clock forward to `ms` (never back) and runs nothing. */
int iova_rcache_trim_due(struct iova_domain *d, uint64_t *due_ms);
int iova_rcache_run_trim(struct iova_domain *d, unsigned k);
int iova_rcache_set_clock(struct iova_domain *d, uint64_t ms);
/* Per size class k (0..5): loaded[k*ncpus+cpu], prev[k*ncpus+cpu], depot[k],
 * pending[k] (1 when trim work is armed). Arrays sized by the caller. */
int iova_rcache_stats(struct iova_domain *d, uint32_t *loaded, uint32_t *prev,
                      uint64_t *depot, uint32_t *pending);
/* Every pfn held by the caches, in a fixed order (per class: per cpu loaded
 * then prev, then the depot from oldest to newest). Returns the total count,
 * copying at most cap. */
int64_t iova_rcache_pfns(struct iova_domain *d, uint64_t *out, uint64_t cap);

int64_t iova_rcache_alloc_fast_many(struct iova_domain *d, const uint64_t *sizes,
                                    uint64_t *out, uint64_t n, uint64_t limit_pfn,
                                    int flush_rcache, int cpu, uint64_t *bad_index);
/* Frees pfns[i] with sizes[i]; stops at the first failure like free_many. */
int64_t iova_rcache_free_fast_many(struct iova_domain *d, const uint64_t *pfns,
                                   const uint64_t *sizes, uint64_t n, int cpu,
                                   int *err);

/* --- saving and restoring a domain (pickle, deepcopy, checkpoints) ------ */

/* Writes the whole domain - ranges, cache pointers, max32_alloc_size, every
 * magazine in order, the depot, the trim work and the clock - as uint64_t
 * words. Returns the number of words needed; copies only if cap suffices. */
int64_t iova_save(struct iova_domain *d, uint64_t *out, uint64_t cap);
/* A new domain from iova_save's words: it then makes the same allocations
 * as the original. NULL with *err = IOVA_E_STATE if the words are not a
 * consistent domain, IOVA_E_NOMEM if memory ran out. */
struct iova_domain *iova_restore(const uint64_t *in, uint64_t n, int *err);

#endif
