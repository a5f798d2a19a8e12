/*
 * sim_engine.h - the simulation engine: the workload vocabulary executed in
 * C against a cookie of any allocator type, a page table, an IOTLB and the
 * flush queue, with the IOMMU driver's behaviour given as declared
 * properties. pyiova.sim's Python loop (the reference) and this engine
 * produce the same results; the tests hold them equal.
 *
 * Operations arrive as fixed-width records (struct sim_op, 32 bytes, the
 * layout below) in chunks, so any producer can feed the engine: the
 * built-in workloads' generators (sim_gen.h), a Python generator whose
 * tuples are packed into records, a trace. A chunk holds whole operations:
 * a MAP_SG record is followed by its SEGMENT records.
 *
 *   code    SIM_OP_*: the vocabulary's opcodes (pyiova.workloads.base), then
 *           SEGMENT and PYTHON
 *   dir     the DMA direction (0 bidirectional, 1 to device, 2 from device)
 *   write   ACCESS: 1 when the device writes
 *   cpu     the CPU slot of the call, -1 for none (the caller thread's slot)
 *   handle  the workload's name for the mapping
 *   arg     MAP_PAGE, SEGMENT: physical address; ACCESS: offset into the
 *           mapping; ADVANCE: milliseconds; MAP_SG: how many SEGMENT records
 *           follow; PYTHON: the producer's own index of the operation
 *   size    MAP_PAGE, UNMAP_PAGE, ALLOC_COHERENT: bytes; SEGMENT: its length
 *
 * The engine runs an operation only when it can do exactly what the Python
 * engine would. Anything else - a PYTHON record, misuse of a handle, an
 * argument the DMA API refuses - stops it *before* the operation
 * (SIM_FALLBACK): the caller runs that one operation in Python, gives the
 * engine the state back and goes on. A C call that fails halfway through an
 * operation (a page table out of memory, say) is unwound as the Python path
 * unwinds it, and reported (SIM_RAISE) with the call, its code and its
 * arguments, for the caller to raise what the Python path raises.
 *
 * State the Python objects keep between runs (the domain's counters and
 * operation clock, the cookie's clock and counts, the IPMMU's random state
 * and dirty flag, the handles' mappings, the coherent pages' allocator)
 * is copied in before a run and out after it (struct sim_state,
 * sim_engine_add_mapping, sim_engine_mappings...). The structures themselves
 * are shared: the engine calls their public functions, which lock them. One
 * engine is used by one thread at a time.
 *
 * This header is read by cffi as well as by C (plain structs of integers and
 * doubles, prototypes, integer #defines).
 */
#ifndef PYIOVA_SIM_ENGINE_H
#define PYIOVA_SIM_ENGINE_H

#include <stdint.h>
#include <stddef.h>

#include "iova_errors.h"
#include "sim_mt.h"
#include "io_pgtable.h"
#include "iotlb.h"

#define SIM_OP_ACCESS 0
#define SIM_OP_MAP_PAGE 1
#define SIM_OP_UNMAP_PAGE 2
#define SIM_OP_MAP_SG 3
#define SIM_OP_UNMAP_SG 4
#define SIM_OP_ALLOC_COHERENT 5
#define SIM_OP_FREE_COHERENT 6
#define SIM_OP_ADVANCE 7
#define SIM_OP_SEGMENT 8
#define SIM_OP_PYTHON 9

struct sim_op {
    uint8_t code;
    uint8_t dir;
    uint8_t write;
    uint8_t pad;
    int32_t cpu;
    uint64_t handle;
    uint64_t arg;
    uint64_t size;
};

/* How the driver invalidates (struct sim_config.invalidation). */
#define SIM_INVAL_RANGE 0
#define SIM_INVAL_CONTEXT 1

/* Run outcomes (struct sim_run.status). */
#define SIM_DONE 0
#define SIM_STOPPED 1
#define SIM_FALLBACK 2
#define SIM_RAISE 3

/* Which call failed (struct sim_run.where). */
#define SIM_AT_APERTURE 1
#define SIM_AT_PT_MAP 2
#define SIM_AT_PT_UNMAP 3
#define SIM_AT_FREE 4
#define SIM_AT_FREE_LAZY 5
#define SIM_AT_FQ_FLUSHED 6
#define SIM_AT_FQ_FULL 7
#define SIM_AT_ACCESS 8
#define SIM_AT_INVALIDATE 9
#define SIM_AT_ADVANCE 10
#define SIM_AT_NOMEM 11

/* Kinds of mapping a handle holds. */
#define SIM_KIND_PAGE 1
#define SIM_KIND_SG 2
#define SIM_KIND_COHERENT 3

/* No first failure yet. */
#define SIM_NONE 0xffffffffffffffff

struct iova_cookie;
struct iova_domain;
struct sim_engine;
struct sim_gen;

struct sim_config {
    struct iova_cookie *cookie;
    struct iova_domain *iovad;   /* the cookie's domain (depot trim on ADVANCE), or NULL */
    io_pgtable *pgtable;
    iotlb *iotlb;
    int msi;                     /* the MSI cookie: no limit, no events, failures raise */
    int lazy;                    /* unmaps free through the flush queue */
    uint32_t shift;              /* log2 of the granule */
    uint64_t stream_limit;       /* the limit of streaming maps, as the cookie applies it */
    uint64_t coherent_limit;     /* and of coherent buffers */
    int try_32bit;               /* PCI (and not forcedac): try below 4 GiB first... */
    int sticky_no32;             /* ...until an attempt fails, for good (6.12 rules) */
    uint64_t dma_mask;           /* device accesses above it are refused (in Python) */
    uint32_t dev_id;             /* labels stale records */
    int aperture_forced;         /* maps and unmaps must lie in [ap_start, ap_end] */
    uint64_t ap_start;
    uint64_t ap_end;
    /* the driver's declared behaviour */
    int invalidation;            /* SIM_INVAL_RANGE or SIM_INVAL_CONTEXT */
    int skip_syncs;              /* iotlb_sync skipped, and counted (IPMMU under wraparound) */
    int erratum;                 /* unmap-path flushes may be lost... */
    double drop_rate;            /* ...with this probability (>= 1: always) */
    int flush_when_idle;         /* flush the context when an unmap leaves nothing mapped */
    /* the run */
    uint64_t max_failures;       /* stop after this many failed maps */
    uint64_t failure_ops_cap;    /* op indexes of the first failures kept */
    uint64_t phys_base;          /* the coherent pages' allocator: first address... */
    uint64_t phys_page;          /* ...and page size */
    uint32_t ncpus;              /* the cookie's CPU slots: a call's cpu must name one */
};

struct sim_state {
    uint64_t pos;                /* operations done */
    uint64_t live;               /* pfns mapped for the device */
    uint64_t peak;
    uint64_t maps;
    uint64_t unmaps;
    uint64_t failures;
    uint64_t skipped;
    uint64_t faults;
    uint64_t first_fail;         /* SIM_NONE when no map failed yet */
    uint64_t maps_before;
    uint64_t live_at_fail;       /* live when the first map failed */
    int stopped;
    /* the domain's */
    uint64_t op_count;
    uint64_t dom_maps;
    uint64_t dom_unmaps;
    uint64_t short_unmaps;
    uint64_t syncs;
    uint64_t syncs_skipped;
    uint64_t full_flushes;
    uint64_t invalidations_lost;
    uint64_t idle_flushes;
    int dirty;                   /* IPMMU: unmaps since the last flush that took effect */
    /* the cookie's */
    uint64_t clock_ms;
    int no32;                    /* a 32-bit-first attempt failed (sticky) */
    uint64_t cookie_flushes;
    uint64_t cookie_resets;
    uint64_t phys_next;
    struct sim_mt rng;           /* the erratum's random state */
};

struct sim_run {
    int status;                  /* SIM_DONE, SIM_STOPPED, SIM_FALLBACK, SIM_RAISE */
    uint64_t ops;                /* operations done by the call */
    uint64_t records;            /* records consumed */
    int where;                   /* SIM_RAISE: SIM_AT_* */
    int64_t code;                /* the failed call's IOVA_E_* code */
    uint64_t a0;                 /* its arguments (see sim_engine.c, raise_at) */
    uint64_t a1;
    uint64_t a2;
    uint64_t a3;
};

struct sim_mapping {
    uint64_t handle;
    uint32_t kind;               /* SIM_KIND_* */
    uint32_t dir;
    uint32_t orphan;             /* 1: the DMA layer let the mapping go (an unmap failed
                                  * halfway): the handle stays, only accesses run in C */
    uint32_t pad;
    uint64_t dma_addr;           /* what the DMA API returned */
    uint64_t iova;               /* the start of the allocated range */
    uint64_t size;               /* the size the DMA layer recorded */
    uint64_t length;             /* the bytes allocated and mapped */
    uint64_t buf_size;           /* coherent: the size asked for */
    uint64_t paddr;              /* coherent: its pages */
    uint64_t live_pfns;          /* what the mapping added to state.live */
    uint64_t nsegs;              /* sg: its segments (sim_engine_segments) */
};

/* A new engine; NULL with *err = IOVA_E_ARG (a configuration it cannot
 * run) or IOVA_E_NOMEM. */
struct sim_engine *sim_engine_new(const struct sim_config *cfg, const struct sim_state *st,
                                  int *err);
void sim_engine_destroy(struct sim_engine *e);

/* Import: a live handle (segs: 2 * nsegs words, paddr and length of each),
 * and the coherent allocator's spare pages (pushed in order, per size). */
int sim_engine_add_mapping(struct sim_engine *e, const struct sim_mapping *m,
                           const uint64_t *segs);
int sim_engine_push_spare(struct sim_engine *e, uint64_t pages, uint64_t paddr);

/* Runs the records ops[0..n) until max_ops operations are done or the
 * records end; *run says what happened. IOVA_E_ARG for a malformed chunk. */
int sim_engine_run(struct sim_engine *e, const struct sim_op *ops, uint64_t n,
                   uint64_t max_ops, struct sim_run *run);
/* The same with a generator as the producer (sim_gen.h). */
int sim_engine_run_gen(struct sim_engine *e, struct sim_gen *g, uint64_t max_ops,
                       struct sim_run *run);

/* Export. */
int sim_engine_get_state(struct sim_engine *e, struct sim_state *st);
/* Copies up to cap mappings; returns how many there are. */
int64_t sim_engine_mappings(struct sim_engine *e, struct sim_mapping *out, uint64_t cap);
/* The segments of a handle's sg mapping (2 words each); returns how many words. */
int64_t sim_engine_segments(struct sim_engine *e, uint64_t handle, uint64_t *out,
                            uint64_t cap);
/* The spare coherent pages, (pages, paddr) pairs in push order; returns the pairs. */
int64_t sim_engine_spares(struct sim_engine *e, uint64_t *out, uint64_t cap);
/* The op indexes of failed maps recorded since the last call (at most cap);
 * returns how many were copied, and forgets them. */
int64_t sim_engine_take_failure_ops(struct sim_engine *e, uint64_t *out, uint64_t cap);

/* Validator: 0, or IOVA_E_CORRUPT with a description in msg. */
int sim_engine_check(struct sim_engine *e, char *msg, size_t msg_len);

#endif
