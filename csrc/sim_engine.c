/*
 * sim_engine.c - the simulation engine (sim_engine.h): each operation of the
 * workload vocabulary done the way pyiova's DMA layer, IOMMU core and model
 * drivers do it, call for call and counter for counter, with the drivers'
 * behaviour read from declared properties instead of Python methods.
 *
 * The Python functions each step mirrors are named beside it (dma._map,
 * IommuDomain.unmap_fast, IpmmuVmsa._flush_context...): the Python engine
 * is the reference, and the differential tests compare every counter, the
 * timeline and the final live set of both engines.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iova.h"
#include "iova_cookie.h"
#include "iova_mem_internal.h"
#include "sim_array.h"
#include "sim_engine.h"
#include "sim_mt_internal.h"
#include "sim_gen_internal.h"

#define U32_MAX 0xffffffffull
#define DIR_BIDIRECTIONAL 0
#define DIR_NONE 3
#define PROT_READ IO_PGTABLE_PROT_READ
#define PROT_WRITE IO_PGTABLE_PROT_WRITE
#define PROT_CACHE IO_PGTABLE_PROT_CACHE

/* One handle's mapping. Slots are free when kind is 0. */
struct entry {
    struct sim_mapping m;
    uint64_t *segs;               /* sg: 2 * m.nsegs words */
};

/* Spare coherent pages of one size: a stack, as PhysAllocator's lists. */
struct spare_class {
    uint64_t pages;
    uint64_t *paddr;
    uint64_t count;
    uint64_t cap;
};

struct sim_engine {
    struct sim_config cfg;
    struct sim_state st;
    uint64_t gmask;                 /* granule - 1 */
    /* handle -> mapping: open addressing, linear probing, at most half full */
    struct entry *slots;
    uint64_t mask;
    uint64_t count;
    /* PhysAllocator's spare pages, classes in first-use order */
    struct spare_class *spares;
    uint64_t nspares;
    uint64_t spares_cap;
    /* op indexes of failed maps not yet taken */
    uint64_t *failure_ops;
    uint64_t nfailure_ops;
    uint64_t failure_ops_cap;
    /* the operation being run: how it ended */
    struct sim_run *run;
};

/* An operation's outcome inside the engine. */
enum step { STEP_OK, STEP_FALLBACK, STEP_RAISE, STEP_STOP };

/* ---- the handle table --------------------------------------------------- */

static uint64_t home_slot(const struct sim_engine *e, uint64_t handle)
{
    uint64_t h = handle * 0x9E3779B97F4A7C15ull;
    return (h ^ h >> 32) & e->mask;
}

static struct entry *find(struct sim_engine *e, uint64_t handle)
{
    for (uint64_t i = home_slot(e, handle);; i = (i + 1) & e->mask) {
        struct entry *s = &e->slots[i];
        if (!s->m.kind)
            return NULL;
        if (s->m.handle == handle)
            return s;
    }
}

/* Room for one more mapping; IOVA_E_NOMEM leaves the table as it was. */
static int reserve_slot(struct sim_engine *e)
{
    if (2 * (e->count + 1) <= e->mask + 1)
        return 0;
    uint64_t n = 2 * (e->mask + 1);
    struct entry *grown = iova_mem_calloc(n, sizeof(*grown));
    if (!grown)
        return IOVA_E_NOMEM;
    struct entry *old = e->slots;
    uint64_t old_n = e->mask + 1;
    e->slots = grown;
    e->mask = n - 1;
    for (uint64_t i = 0; i < old_n; i++) {
        if (!old[i].m.kind)
            continue;
        uint64_t j = home_slot(e, old[i].m.handle);
        while (grown[j].m.kind)
            j = (j + 1) & e->mask;
        grown[j] = old[i];
    }
    free(old);
    return 0;
}

/* Inserts m (its handle absent, a slot reserved); takes segs. */
static void insert(struct sim_engine *e, const struct sim_mapping *m, uint64_t *segs)
{
    uint64_t i = home_slot(e, m->handle);
    while (e->slots[i].m.kind)
        i = (i + 1) & e->mask;
    e->slots[i].m = *m;
    e->slots[i].segs = segs;
    e->count++;
}

/* Removes the slot s points at, moving later entries of its probe run back
 * so each stays reachable from its home slot. */
static void remove_slot(struct sim_engine *e, struct entry *s)
{
    struct entry *t = e->slots;
    uint64_t m = e->mask, hole = (uint64_t)(s - t);
    for (uint64_t j = (hole + 1) & m; t[j].m.kind; j = (j + 1) & m) {
        uint64_t home = home_slot(e, t[j].m.handle);
        bool stays = hole < j ? hole < home && home <= j : hole < home || home <= j;
        if (!stays) {
            t[hole] = t[j];
            hole = j;
        }
    }
    memset(&t[hole], 0, sizeof(t[hole]));
    e->count--;
}

/* ---- PhysAllocator (pyiova.dma) ----------------------------------------- */

static struct spare_class *spare_class(struct sim_engine *e, uint64_t pages, bool make)
{
    for (uint64_t i = 0; i < e->nspares; i++)
        if (e->spares[i].pages == pages)
            return &e->spares[i];
    if (!make)
        return NULL;
    if (!sim_array_room((void **)&e->spares, e->nspares, &e->spares_cap, sizeof(*e->spares), 8))
        return NULL;
    struct spare_class *c = &e->spares[e->nspares++];
    memset(c, 0, sizeof(*c));
    c->pages = pages;
    return c;
}

/* PhysAllocator.free: the pages go on their size's stack. */
static int phys_free(struct sim_engine *e, uint64_t paddr, uint64_t size)
{
    uint64_t page = e->cfg.phys_page;
    uint64_t pages = size / page + (size % page != 0);
    struct spare_class *c = spare_class(e, pages, true);
    if (!c)
        return IOVA_E_NOMEM;
    if (!sim_array_room((void **)&c->paddr, c->count, &c->cap, sizeof(*c->paddr), 8))
        return IOVA_E_NOMEM;
    c->paddr[c->count++] = paddr;
    return 0;
}

/* PhysAllocator.take: the pages' address in *paddr, *spare says where they
 * came from (to undo). False, nothing taken, when they would run past the
 * top of the 64-bit physical address space (alloc_coherent's DmaMappingError). */
static bool phys_alloc(struct sim_engine *e, uint64_t size, uint64_t *paddr, bool *spare)
{
    uint64_t page = e->cfg.phys_page;
    uint64_t pages = size / page + (size % page != 0), bytes, end;
    struct spare_class *c = spare_class(e, pages, false);
    if (c && c->count) {
        *spare = true;
        *paddr = c->paddr[--c->count];
        return true;
    }
    if (__builtin_mul_overflow(pages, page, &bytes) ||
        __builtin_add_overflow(e->st.phys_next, bytes, &end))
        return false;
    *spare = false;
    *paddr = e->st.phys_next;
    e->st.phys_next = end;
    return true;
}

static void phys_undo_alloc(struct sim_engine *e, uint64_t paddr, uint64_t size, bool spare)
{
    uint64_t page = e->cfg.phys_page;
    uint64_t pages = size / page + (size % page != 0);
    if (spare) {
        struct spare_class *c = spare_class(e, pages, false);
        c->paddr[c->count++] = paddr;       /* the slot it was popped from */
    } else {
        e->st.phys_next -= pages * page;
    }
}

/* ---- failures ----------------------------------------------------------- */

static enum step raise_at(struct sim_engine *e, int where, int64_t code, uint64_t a0,
                          uint64_t a1, uint64_t a2, uint64_t a3)
{
    struct sim_run *r = e->run;
    r->where = where;
    r->code = code;
    r->a0 = a0;
    r->a1 = a1;
    r->a2 = a2;
    r->a3 = a3;
    return STEP_RAISE;
}

/* sim._run's failed(): a map returned DMA_MAPPING_ERROR. */
static enum step map_failed(struct sim_engine *e)
{
    struct sim_state *st = &e->st;
    st->failures++;
    if (st->first_fail == SIM_NONE) {
        st->first_fail = st->pos;
        st->maps_before = st->maps;
        st->live_at_fail = st->live;
    }
    if (st->failures <= e->cfg.failure_ops_cap) {
        if (!sim_array_room((void **)&e->failure_ops, e->nfailure_ops, &e->failure_ops_cap,
                            sizeof(*e->failure_ops), 64)) {
            st->failures--;
            return raise_at(e, SIM_AT_NOMEM, IOVA_E_NOMEM, 0, 0, 0, 0);
        }
        e->failure_ops[e->nfailure_ops++] = st->pos;
    }
    st->stopped = st->failures >= e->cfg.max_failures;
    return st->stopped ? STEP_STOP : STEP_OK;
}

/* ---- the driver (pyiova/drivers, as declared) ---------------------------- */

/* IpmmuVmsa._flush_context / GenericIommu's flush_iotlb_all. */
static void flush_context(struct sim_engine *e, bool unmap_path)
{
    struct sim_state *st = &e->st;
    st->full_flushes++;
    if (unmap_path && e->cfg.erratum &&
        (e->cfg.drop_rate >= 1.0 || sim_mt_random(&st->rng) < e->cfg.drop_rate)) {
        st->invalidations_lost++;
        return;
    }
    iotlb_invalidate_all(e->cfg.iotlb, NULL);
    st->dirty = 0;
}

/* DmaCookie._flush: IommuDomain.flush_iotlb_all. */
static void cookie_flush(struct sim_engine *e)
{
    e->st.cookie_flushes++;
    e->st.op_count++;
    flush_context(e, false);
}

/* DmaCookie._events. The driver's domain_reset flushes the context (both
 * model drivers), and is called directly, off the domain's clock. */
static void cookie_events(struct sim_engine *e, uint32_t ev)
{
    if (ev & IOVA_EV_FLUSH)
        cookie_flush(e);
    if (ev & IOVA_EV_RESET) {
        e->st.cookie_resets++;
        flush_context(e, false);
    }
}

static bool outside_aperture(const struct sim_engine *e, uint64_t iova, uint64_t size)
{
    if (!e->cfg.aperture_forced)
        return false;
    return iova < e->cfg.ap_start || size - 1 > e->cfg.ap_end - iova ||
           iova > e->cfg.ap_end;
}

/* IommuDomain.map + IommuDriver.map. */
static enum step domain_map(struct sim_engine *e, uint64_t iova, uint64_t paddr,
                            uint64_t size, uint32_t prot)
{
    if (outside_aperture(e, iova, size))
        return raise_at(e, SIM_AT_APERTURE, 0, iova, size, 0, 0);
    int rc = io_pgtable_map(e->cfg.pgtable, iova, paddr, size, prot);
    if (rc)
        return raise_at(e, SIM_AT_PT_MAP, rc, iova, paddr, size, prot);
    e->st.op_count++;                       /* counted once done: a refused map changes nothing */
    e->st.dom_maps++;
    return STEP_OK;
}

/* IommuDomain.unmap_fast + the driver's unmap; *gathered: what a ranged
 * invalidation would cover (0: nothing). */
static enum step domain_unmap_fast(struct sim_engine *e, uint64_t iova, uint64_t size,
                                   uint64_t *gathered)
{
    *gathered = 0;
    if (outside_aperture(e, iova, size))
        return raise_at(e, SIM_AT_APERTURE, 0, iova, size, 0, 0);
    uint64_t unmapped = 0;
    int rc = io_pgtable_unmap(e->cfg.pgtable, iova, size, &unmapped);
    if (rc)
        return raise_at(e, SIM_AT_PT_UNMAP, rc, iova, size, unmapped, 0);
    e->st.op_count++;
    if (unmapped) {
        if (e->cfg.invalidation == SIM_INVAL_RANGE)
            *gathered = unmapped;
        else
            e->st.dirty = 1;
    }
    e->st.dom_unmaps++;
    if (unmapped != size)
        e->st.short_unmaps++;
    return STEP_OK;
}

/* IommuDomain.iotlb_sync + the driver's iotlb_sync. */
static enum step domain_iotlb_sync(struct sim_engine *e, uint64_t iova, uint64_t gathered)
{
    struct sim_state *st = &e->st;
    st->op_count++;
    if (e->cfg.invalidation == SIM_INVAL_RANGE) {
        if (!gathered)
            return STEP_OK;
        st->syncs++;
        int rc = iotlb_invalidate_range(e->cfg.iotlb, iova, gathered, NULL);
        if (rc)
            return raise_at(e, SIM_AT_INVALIDATE, rc, iova, gathered, 0, 0);
        return STEP_OK;
    }
    if (e->cfg.skip_syncs) {
        st->syncs_skipped++;
    } else {
        st->syncs++;
        flush_context(e, true);
    }
    if (e->cfg.flush_when_idle && st->dirty) {
        struct io_pgtable_stats ps;
        io_pgtable_get_stats(e->cfg.pgtable, &ps);
        if (ps.mapped_bytes == 0) {
            st->idle_flushes++;
            flush_context(e, false);
        }
    }
    return STEP_OK;
}

/* ---- the cookie (pyiova.cookie.DmaCookie) --------------------------------- */

/* alloc_iova: the iova, 0 when there is no room (the events handled), or
 * STEP_FALLBACK through *out when the Python path would raise (nothing
 * changed then). */
static enum step alloc_iova(struct sim_engine *e, uint64_t size, uint64_t limit, int cpu,
                            uint64_t *iova)
{
    uint32_t shift = e->cfg.shift, ev = 0;
    uint64_t pages = size >> shift;
    if (e->cfg.msi) {
        int64_t r = iova_cookie_alloc(e->cfg.cookie, pages, 0, 0, -1, &ev);
        if (r < 0)
            return STEP_FALLBACK;
        *iova = (uint64_t)r << shift;
        return STEP_OK;
    }
    bool try32 = limit > U32_MAX && e->cfg.try_32bit && !e->st.no32;
    int64_t r = iova_cookie_alloc(e->cfg.cookie, pages, limit >> shift,
                                  try32 ? IOVA_COOKIE_TRY_32BIT : 0, cpu, &ev);
    if (r < 0 && r != IOVA_E_NOSPC)
        return STEP_FALLBACK;
    if ((ev & IOVA_EV_NO_32BIT) && e->cfg.sticky_no32)
        e->st.no32 = 1;
    cookie_events(e, ev);
    *iova = r < 0 ? 0 : (uint64_t)r << shift;
    return STEP_OK;
}

/* free_iova, strict. */
static enum step free_iova(struct sim_engine *e, uint64_t iova, uint64_t size, int cpu)
{
    uint32_t shift = e->cfg.shift, ev = 0;
    uint64_t pfn = iova >> shift, pages = size >> shift;
    int r = iova_cookie_free(e->cfg.cookie, pfn, pages, cpu, &ev);
    if (r)
        return raise_at(e, SIM_AT_FREE, r, pfn, pages, (uint64_t)(int64_t)cpu, 0);
    cookie_events(e, ev);
    return STEP_OK;
}

/* free_iova, lazy: queue it; a full ring is flushed and the free tried once more. */
static enum step free_iova_lazy(struct sim_engine *e, uint64_t iova, uint64_t size, int cpu)
{
    uint32_t shift = e->cfg.shift;
    uint64_t pfn = iova >> shift, pages = size >> shift;
    for (int attempt = 0; attempt < 2; attempt++) {
        uint32_t ev = 0;
        int r = iova_cookie_free_lazy(e->cfg.cookie, pfn, pages, cpu, e->st.clock_ms, &ev);
        if (r && r != IOVA_E_FQ_FULL)
            return raise_at(e, SIM_AT_FREE_LAZY, r, pfn, pages, (uint64_t)(int64_t)cpu, 0);
        if (ev & IOVA_EV_QUEUED)
            return STEP_OK;
        cookie_flush(e);
        r = iova_cookie_fq_flushed(e->cfg.cookie, 0, 0);
        if (r)
            return raise_at(e, SIM_AT_FQ_FLUSHED, r, 0, 0, 0, 0);
    }
    return raise_at(e, SIM_AT_FQ_FULL, 0, 0, 0, 0, 0);
}

/* ---- the DMA layer (pyiova.dma) --------------------------------------------- */

static uint32_t dir_prot(unsigned dir)
{
    return dir == DIR_BIDIRECTIONAL ? PROT_READ | PROT_WRITE
           : dir == 1               ? PROT_READ
                                    : PROT_WRITE;
}

/* a + b + c, false when it does not fit in 64 bits. */
static bool add3(uint64_t a, uint64_t b, uint64_t c, uint64_t *out)
{
    uint64_t s;
    if (__builtin_add_overflow(a, b, &s) || __builtin_add_overflow(s, c, &s))
        return false;
    *out = s;
    return true;
}

/* The bytes [off, off + size) take, rounded to the granule; false on overflow. */
static bool aligned_length(const struct sim_engine *e, uint64_t off, uint64_t size,
                           uint64_t *out)
{
    uint64_t s;
    if (!add3(off, size, e->gmask, &s))
        return false;
    *out = s & ~e->gmask;
    return true;
}

/* _unmap: unmap_fast, the sync unless lazy, then the free, strict or lazy. */
static enum step unmap_range(struct sim_engine *e, uint64_t iova, uint64_t size, int cpu,
                             bool lazy)
{
    uint64_t gathered;
    enum step s = domain_unmap_fast(e, iova, size, &gathered);
    if (s != STEP_OK)
        return s;
    if (!lazy) {
        s = domain_iotlb_sync(e, iova, gathered);
        if (s != STEP_OK)
            return s;
    }
    return lazy ? free_iova_lazy(e, iova, size, cpu) : free_iova(e, iova, size, cpu);
}

/* _map's tail once the iova is allocated: map the range, or unwind and raise. */
/* iommu_dma_map's end, as pyiova.dma does it: map what was allocated. A map
 * the IOMMU refuses frees the IOVA again and is a failed map (the kernel's
 * DMA_MAPPING_ERROR); *mapped says whether it was mapped. */
static enum step map_allocated(struct sim_engine *e, uint64_t iova, uint64_t paddr,
                               uint64_t length, uint32_t prot, int cpu, bool *mapped)
{
    enum step s = domain_map(e, iova, paddr, length, prot);
    *mapped = s == STEP_OK;
    if (s != STEP_RAISE)
        return s;
    s = free_iova(e, iova, length, cpu);
    return s == STEP_OK ? map_failed(e) : s;
}

/* Whether an operation's cpu is one pyiova.dma takes: -1 (none: the calling
 * thread's slot) or one of the cookie's slots; any other it refuses before
 * acting, so the engine leaves the operation to Python. */
static bool cpu_ok(const struct sim_engine *e, int cpu)
{
    return cpu == -1 || (cpu >= 0 && (uint32_t)cpu < e->cfg.ncpus);
}

static void count_map(struct sim_engine *e, uint64_t live_pfns)
{
    struct sim_state *st = &e->st;
    st->maps++;
    st->live += live_pfns;
    if (st->live > st->peak)
        st->peak = st->live;
}

/* The mapping op's handle holds; NULL, counted as skipped, when none (its
 * map failed: sim._run skips what names it). */
static struct entry *mapped(struct sim_engine *e, const struct sim_op *op)
{
    struct entry *s = find(e, op->handle);
    if (!s)
        e->st.skipped++;
    return s;
}

static enum step op_access(struct sim_engine *e, const struct sim_op *op)
{
    struct entry *s = mapped(e, op);
    if (!s)
        return STEP_OK;
    uint64_t a = s->m.dma_addr + op->arg;
    if (a < op->arg || a > e->cfg.dma_mask || op->write > 1)
        return STEP_FALLBACK;               /* Device.dma_access refuses it */
    struct iotlb_result res;
    e->st.op_count++;
    int rc = iotlb_access(e->cfg.iotlb, e->cfg.pgtable, a, op->write, e->st.op_count,
                          e->cfg.dev_id, &res);
    if (rc == IOVA_E_FAULT || rc == IOVA_E_PERM)
        e->st.faults++;
    else if (rc)
        return raise_at(e, SIM_AT_ACCESS, rc, a, op->write, 0, 0);
    return STEP_OK;
}

static enum step op_map_page(struct sim_engine *e, const struct sim_op *op)
{
    uint64_t off = op->arg & e->gmask, length, iova;
    if (find(e, op->handle) || op->dir >= DIR_NONE || op->size == 0 || !cpu_ok(e, op->cpu) ||
        !aligned_length(e, off, op->size, &length))
        return STEP_FALLBACK;
    if (reserve_slot(e))
        return raise_at(e, SIM_AT_NOMEM, IOVA_E_NOMEM, 0, 0, 0, 0);
    if (alloc_iova(e, length, e->cfg.stream_limit, op->cpu, &iova) != STEP_OK)
        return STEP_FALLBACK;
    if (!iova)
        return map_failed(e);
    bool ok;
    enum step s = map_allocated(e, iova, op->arg - off, length, dir_prot(op->dir), op->cpu, &ok);
    if (!ok)
        return s;
    struct sim_mapping m = {
        .handle = op->handle, .kind = SIM_KIND_PAGE, .dir = op->dir, .dma_addr = iova + off,
        .iova = iova, .size = op->size, .length = length, .live_pfns = length >> e->cfg.shift,
    };
    insert(e, &m, NULL);
    count_map(e, m.live_pfns);
    return STEP_OK;
}

/* A live handle stays in the table as an orphan when its unmap failed after
 * the DMA layer had let the mapping go (the Python engine keeps the handle). */
static enum step unmapped(struct sim_engine *e, struct entry *s, enum step step)
{
    if (step != STEP_OK) {
        if (step == STEP_RAISE)
            s->m.orphan = 1;
        return step;
    }
    e->st.unmaps++;
    e->st.live -= s->m.live_pfns;
    free(s->segs);
    remove_slot(e, s);
    return STEP_OK;
}

static enum step op_unmap_page(struct sim_engine *e, const struct sim_op *op)
{
    struct entry *s = mapped(e, op);
    if (!s)
        return STEP_OK;
    if (s->m.orphan || s->m.kind != SIM_KIND_PAGE || s->m.size != op->size ||
        s->m.dir != op->dir || !cpu_ok(e, op->cpu))
        return STEP_FALLBACK;                 /* pyiova.dma refuses it */
    return unmapped(e, s, unmap_range(e, s->m.iova, s->m.length, op->cpu, e->cfg.lazy));
}

static enum step op_map_sg(struct sim_engine *e, const struct sim_op *op)
{
    const struct sim_op *seg = op + 1;
    uint64_t n = op->arg, total = 0, iova;
    if (find(e, op->handle) || op->dir >= DIR_NONE || n == 0 || !cpu_ok(e, op->cpu))
        return STEP_FALLBACK;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len;
        if (seg[i].size == 0 || !aligned_length(e, seg[i].arg & e->gmask, seg[i].size, &len) ||
            __builtin_add_overflow(total, len, &total))
            return STEP_FALLBACK;
    }
    uint64_t *segs = iova_mem_malloc(2 * n * sizeof(uint64_t));
    if (!segs || reserve_slot(e)) {
        free(segs);
        return raise_at(e, SIM_AT_NOMEM, IOVA_E_NOMEM, 0, 0, 0, 0);
    }
    if (alloc_iova(e, total, e->cfg.stream_limit, op->cpu, &iova) != STEP_OK) {
        free(segs);
        return STEP_FALLBACK;
    }
    if (!iova) {
        free(segs);
        return map_failed(e);
    }
    uint32_t prot = dir_prot(op->dir);
    uint64_t done = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t off = seg[i].arg & e->gmask, len = 0;
        aligned_length(e, off, seg[i].size, &len);
        if (domain_map(e, iova + done, seg[i].arg - off, len, prot) != STEP_OK) {
            /* map_sg's unwinding: what was mapped is unmapped and synced,
             * the range freed at once; a failed map (DMA_MAPPING_ERROR) */
            free(segs);
            enum step s = STEP_OK;
            if (done) {
                uint64_t gathered;
                s = domain_unmap_fast(e, iova, done, &gathered);
                if (s == STEP_OK)
                    s = domain_iotlb_sync(e, iova, gathered);
            }
            if (s == STEP_OK)
                s = free_iova(e, iova, total, op->cpu);
            return s == STEP_OK ? map_failed(e) : s;
        }
        segs[2 * i] = seg[i].arg;
        segs[2 * i + 1] = seg[i].size;
        done += len;
    }
    struct sim_mapping m = {
        .handle = op->handle, .kind = SIM_KIND_SG, .dir = op->dir, .dma_addr = iova,
        .iova = iova, .size = total, .length = total, .live_pfns = total >> e->cfg.shift,
        .nsegs = n,
    };
    insert(e, &m, segs);
    count_map(e, m.live_pfns);
    return STEP_OK;
}

static enum step op_unmap_sg(struct sim_engine *e, const struct sim_op *op)
{
    struct entry *s = mapped(e, op);
    if (!s)
        return STEP_OK;
    if (s->m.orphan || s->m.kind != SIM_KIND_SG || s->m.dir != op->dir || !cpu_ok(e, op->cpu))
        return STEP_FALLBACK;
    return unmapped(e, s, unmap_range(e, s->m.iova, s->m.length, op->cpu, e->cfg.lazy));
}

static enum step op_alloc_coherent(struct sim_engine *e, const struct sim_op *op)
{
    uint64_t size, length, iova;
    bool spare;
    if (find(e, op->handle) || op->size == 0 || !cpu_ok(e, op->cpu) ||
        !aligned_length(e, 0, op->size, &size))
        return STEP_FALLBACK;
    if (reserve_slot(e))
        return raise_at(e, SIM_AT_NOMEM, IOVA_E_NOMEM, 0, 0, 0, 0);
    uint64_t paddr;
    if (!phys_alloc(e, size, &paddr, &spare))
        return map_failed(e);
    uint64_t off = paddr & e->gmask;
    if (!aligned_length(e, off, size, &length) ||
        alloc_iova(e, length, e->cfg.coherent_limit, op->cpu, &iova) != STEP_OK) {
        phys_undo_alloc(e, paddr, size, spare);
        return STEP_FALLBACK;
    }
    enum step s = STEP_OK;
    bool ok = false;
    if (iova)
        s = map_allocated(e, iova, paddr - off, length, PROT_READ | PROT_WRITE | PROT_CACHE,
                          op->cpu, &ok);
    if (!ok) {
        /* the pages go back as if they had never been taken, whatever the failure */
        phys_undo_alloc(e, paddr, size, spare);
        return iova ? s : map_failed(e);
    }
    struct sim_mapping m = {
        .handle = op->handle, .kind = SIM_KIND_COHERENT, .dir = DIR_BIDIRECTIONAL,
        .dma_addr = iova + off, .iova = iova, .size = size, .length = length,
        .buf_size = op->size, .paddr = paddr,
        .live_pfns = (op->size + e->gmask) >> e->cfg.shift,
    };
    insert(e, &m, NULL);
    count_map(e, m.live_pfns);
    return STEP_OK;
}

static enum step op_free_coherent(struct sim_engine *e, const struct sim_op *op)
{
    struct entry *s = mapped(e, op);
    if (!s)
        return STEP_OK;
    if (s->m.orphan || s->m.kind != SIM_KIND_COHERENT || !cpu_ok(e, op->cpu))
        return STEP_FALLBACK;
    enum step step = unmap_range(e, s->m.iova, s->m.length, op->cpu, e->cfg.lazy);
    if (step == STEP_OK && phys_free(e, s->m.paddr, s->m.length))
        step = raise_at(e, SIM_AT_NOMEM, IOVA_E_NOMEM, 0, 0, 0, 0);
    return unmapped(e, s, step);
}

/* DmaCookie.advance (cpu 0). */
static enum step op_advance(struct sim_engine *e, const struct sim_op *op)
{
    uint64_t clock;
    if (__builtin_add_overflow(e->st.clock_ms, op->arg, &clock))
        return STEP_FALLBACK;
    e->st.clock_ms = clock;
    if (e->cfg.lazy) {
        uint64_t due = iova_cookie_fq_due(e->cfg.cookie);
        if (due != UINT64_MAX && due <= clock) {
            cookie_flush(e);
            int r = iova_cookie_fq_flushed(e->cfg.cookie, 1, 0);
            if (r)
                return raise_at(e, SIM_AT_FQ_FLUSHED, r, 1, 0, 0, 0);
        }
    }
    if (e->cfg.iovad) {
        int64_t r = iova_rcache_advance(e->cfg.iovad, op->arg);
        if (r < 0)
            return raise_at(e, SIM_AT_ADVANCE, r, op->arg, 0, 0, 0);
    }
    return STEP_OK;
}

/* ---- running ------------------------------------------------------------------ */

/* The records op takes (1, or 1 + its segments for MAP_SG); 0 for a record
 * that cannot start an operation or an operation cut by the chunk's end. */
static uint64_t op_records(const struct sim_op *op, uint64_t left)
{
    if (op->code == SIM_OP_SEGMENT || op->code > SIM_OP_PYTHON)
        return 0;
    if (op->code != SIM_OP_MAP_SG)
        return 1;
    if (op->arg >= left)
        return 0;
    for (uint64_t i = 1; i <= op->arg; i++)
        if (op[i].code != SIM_OP_SEGMENT)
            return 0;
    return 1 + op->arg;
}

static enum step step_op(struct sim_engine *e, const struct sim_op *op)
{
    switch (op->code) {
    case SIM_OP_ACCESS:
        return op_access(e, op);
    case SIM_OP_MAP_PAGE:
        return op_map_page(e, op);
    case SIM_OP_UNMAP_PAGE:
        return op_unmap_page(e, op);
    case SIM_OP_MAP_SG:
        return op_map_sg(e, op);
    case SIM_OP_UNMAP_SG:
        return op_unmap_sg(e, op);
    case SIM_OP_ALLOC_COHERENT:
        return op_alloc_coherent(e, op);
    case SIM_OP_FREE_COHERENT:
        return op_free_coherent(e, op);
    case SIM_OP_ADVANCE:
        return op_advance(e, op);
    default:
        return STEP_FALLBACK;                   /* PYTHON */
    }
}

/* Runs whole operations of ops[0..n); adds to run->ops and run->records. */
static int run_records(struct sim_engine *e, const struct sim_op *ops, uint64_t n,
                       uint64_t max_ops, struct sim_run *run)
{
    uint64_t i = 0;
    e->run = run;
    while (i < n && run->ops < max_ops) {
        if (e->st.stopped) {
            run->status = SIM_STOPPED;
            break;
        }
        uint64_t k = op_records(&ops[i], n - i);
        if (!k)
            return IOVA_E_ARG;
        enum step s = step_op(e, &ops[i]);
        if (s == STEP_FALLBACK || s == STEP_RAISE) {
            run->status = s == STEP_FALLBACK ? SIM_FALLBACK : SIM_RAISE;
            break;
        }
        i += k;
        run->ops++;
        e->st.pos++;
        if (s == STEP_STOP) {
            run->status = SIM_STOPPED;
            break;
        }
    }
    run->records += i;
    e->run = NULL;
    return 0;
}

static void start_run(struct sim_run *run)
{
    memset(run, 0, sizeof(*run));
    run->status = SIM_DONE;
}

int sim_engine_run(struct sim_engine *e, const struct sim_op *ops, uint64_t n,
                   uint64_t max_ops, struct sim_run *run)
{
    if (!e || !run || (n && !ops))
        return IOVA_E_ARG;
    start_run(run);
    if (e->st.stopped) {
        run->status = SIM_STOPPED;
        return 0;
    }
    return run_records(e, ops, n, max_ops, run);
}

int sim_engine_run_gen(struct sim_engine *e, struct sim_gen *g, uint64_t max_ops,
                       struct sim_run *run)
{
    if (!e || !g || !run)
        return IOVA_E_ARG;
    start_run(run);
    if (e->st.stopped) {
        run->status = SIM_STOPPED;
        return 0;
    }
    while (run->ops < max_ops && run->status == SIM_DONE) {
        const struct sim_op *ops;
        uint64_t n;
        int r = sim_gen_pending(g, &ops, &n);
        if (r)
            return r;
        uint64_t before = run->records;
        r = run_records(e, ops, n, max_ops, run);
        sim_gen_consume(g, run->records - before);
        if (r)
            return r;
    }
    return 0;
}

/* ---- lifetime, import and export -------------------------------------------- */

struct sim_engine *sim_engine_new(const struct sim_config *cfg, const struct sim_state *st,
                                  int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    *err = IOVA_E_ARG;
    if (!cfg || !st || !cfg->cookie || !cfg->pgtable || !cfg->iotlb || cfg->shift < 1 ||
        cfg->shift > 63 || cfg->phys_page == 0 || cfg->max_failures == 0 || cfg->ncpus == 0 ||
        sim_mt_valid(&st->rng) || cfg->invalidation < SIM_INVAL_RANGE ||
        cfg->invalidation > SIM_INVAL_CONTEXT)
        return NULL;
    struct sim_engine *e = iova_mem_calloc(1, sizeof(*e));
    if (!e || !(e->slots = iova_mem_calloc(16, sizeof(*e->slots)))) {
        free(e);
        *err = IOVA_E_NOMEM;
        return NULL;
    }
    e->mask = 15;
    e->cfg = *cfg;
    e->st = *st;
    e->gmask = (1ull << cfg->shift) - 1;
    *err = 0;
    return e;
}

void sim_engine_destroy(struct sim_engine *e)
{
    if (!e)
        return;
    for (uint64_t i = 0; i <= e->mask; i++)
        free(e->slots[i].segs);
    free(e->slots);
    for (uint64_t i = 0; i < e->nspares; i++)
        free(e->spares[i].paddr);
    free(e->spares);
    free(e->failure_ops);
    free(e);
}

int sim_engine_add_mapping(struct sim_engine *e, const struct sim_mapping *m,
                           const uint64_t *segs)
{
    if (!e || !m || m->kind < SIM_KIND_PAGE || m->kind > SIM_KIND_COHERENT || m->orphan > 1 ||
        find(e, m->handle) ||
        (m->kind == SIM_KIND_SG && (!m->nsegs || !segs)) || m->dir >= DIR_NONE ||
        m->nsegs > (UINT64_MAX >> 4))
        return IOVA_E_ARG;
    uint64_t *copy = NULL;
    if (m->kind == SIM_KIND_SG) {
        copy = iova_mem_malloc(2 * m->nsegs * sizeof(uint64_t));
        if (!copy)
            return IOVA_E_NOMEM;
        memcpy(copy, segs, 2 * m->nsegs * sizeof(uint64_t));
    }
    if (reserve_slot(e)) {
        free(copy);
        return IOVA_E_NOMEM;
    }
    struct sim_mapping mm = *m;
    if (mm.kind != SIM_KIND_SG)
        mm.nsegs = 0;
    insert(e, &mm, copy);
    return 0;
}

int sim_engine_push_spare(struct sim_engine *e, uint64_t pages, uint64_t paddr)
{
    if (!e || !pages || pages > UINT64_MAX / e->cfg.phys_page)
        return IOVA_E_ARG;
    return phys_free(e, paddr, pages * e->cfg.phys_page);
}

int sim_engine_get_state(struct sim_engine *e, struct sim_state *st)
{
    if (!e || !st)
        return IOVA_E_ARG;
    *st = e->st;
    return 0;
}

int64_t sim_engine_mappings(struct sim_engine *e, struct sim_mapping *out, uint64_t cap)
{
    if (!e || (cap && !out))
        return IOVA_E_ARG;
    uint64_t k = 0;
    for (uint64_t i = 0; i <= e->mask; i++) {
        if (!e->slots[i].m.kind)
            continue;
        if (k < cap)
            out[k] = e->slots[i].m;
        k++;
    }
    return (int64_t)k;
}

int64_t sim_engine_segments(struct sim_engine *e, uint64_t handle, uint64_t *out, uint64_t cap)
{
    if (!e || (cap && !out))
        return IOVA_E_ARG;
    struct entry *s = find(e, handle);
    if (!s || s->m.kind != SIM_KIND_SG)
        return IOVA_E_ARG;
    uint64_t words = 2 * s->m.nsegs;
    memcpy(out, s->segs, (words < cap ? words : cap) * sizeof(uint64_t));
    return (int64_t)words;
}

int64_t sim_engine_spares(struct sim_engine *e, uint64_t *out, uint64_t cap)
{
    if (!e || (cap && !out))
        return IOVA_E_ARG;
    uint64_t k = 0;
    for (uint64_t i = 0; i < e->nspares; i++)
        for (uint64_t j = 0; j < e->spares[i].count; j++, k++)
            if (k < cap) {
                out[2 * k] = e->spares[i].pages;
                out[2 * k + 1] = e->spares[i].paddr[j];
            }
    return (int64_t)k;
}

int64_t sim_engine_take_failure_ops(struct sim_engine *e, uint64_t *out, uint64_t cap)
{
    if (!e || (cap && !out))
        return IOVA_E_ARG;
    uint64_t n = e->nfailure_ops < cap ? e->nfailure_ops : cap;
    if (!n)
        return 0;
    memcpy(out, e->failure_ops, n * sizeof(uint64_t));
    memmove(e->failure_ops, e->failure_ops + n, (e->nfailure_ops - n) * sizeof(uint64_t));
    e->nfailure_ops -= n;
    return (int64_t)n;
}

int sim_engine_check(struct sim_engine *e, char *msg, size_t msg_len)
{
    if (!e)
        return IOVA_E_ARG;
    const char *why = NULL;
    uint64_t count = 0, live = 0, orphans = 0;
    for (uint64_t i = 0; !why && i <= e->mask; i++) {
        const struct entry *s = &e->slots[i];
        if (!s->m.kind)
            continue;
        count++;
        live += s->m.live_pfns;
        orphans += s->m.orphan;
        if (find(e, s->m.handle) != s)
            why = "a handle is not reachable from its home slot";
        else if (s->m.kind < SIM_KIND_PAGE || s->m.kind > SIM_KIND_COHERENT)
            why = "a mapping of an unknown kind";
        else if ((s->m.kind == SIM_KIND_SG) != (s->segs != NULL))
            why = "segments held by a mapping that is not a scatter-gather list";
        else if (s->m.iova & e->gmask)
            why = "a mapping's iova is not granule-aligned";
    }
    if (!why && count != e->count)
        why = "the handle table miscounts its mappings";
    else if (!why && 2 * e->count > e->mask + 1)
        why = "the handle table is more than half full";
    else if (!why && (orphans ? live > e->st.live : live != e->st.live))
        why = "the live pfns disagree with the mappings";   /* an orphan's may be unknown */
    else if (!why && e->st.peak < e->st.live)
        why = "the peak is below the live pfns";
    else if (!why && e->st.failures < e->nfailure_ops)
        why = "more failed maps recorded than counted";
    else if (!why && (e->st.first_fail == SIM_NONE) != (e->st.failures == 0))
        why = "a first failure without failures, or failures without a first";
    if (why) {
        if (msg && msg_len)
            snprintf(msg, msg_len, "sim engine: %s", why);
        return IOVA_E_CORRUPT;
    }
    if (msg && msg_len)
        msg[0] = 0;
    return 0;
}
