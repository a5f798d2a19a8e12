/*
 * sim_gen.c - the built-in workloads as record generators (see
 * sim_gen.h). Each step function is one turn of its Python
 * generator's endless loop: it appends that turn's operations to the
 * generator's queue, drawing the random numbers in the order the Python
 * code draws them (a conditional draws only when Python's short-circuit
 * evaluation would; an argument list draws left to right).
 */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "iova_mem_internal.h"
#include "sim_array.h"
#include "sim_mt_internal.h"
#include "sim_gen_internal.h"

#define DIR_TO_DEVICE 1
#define DIR_FROM_DEVICE 2
#define NO_CPU (-1)
/* Integers a double holds exactly: larger parameters would make C's float
 * arithmetic differ from Python's integer arithmetic. */
#define EXACT (1ull << 52)

enum kind { GEN_USB, GEN_NIC, GEN_NVME, GEN_RANDOM };

struct usb_transfer {
    uint64_t h, size, desc;
    bool is_in;
};

struct nic_send {
    uint64_t slot, size;
};

struct nvme_cmd {
    uint64_t size;
    bool is_read, sg;
};

struct nvme_queue {
    uint64_t *free_tags;          /* a stack: pop() takes the last */
    uint64_t nfree;
    uint64_t *busy;               /* tags in flight, in no particular order */
    uint64_t nbusy;
    struct nvme_cmd *cmd;         /* by tag */
    uint64_t sq_tail;
};

struct due {                       /* the random workload's pending unmaps */
    uint64_t step, handle, size;
    uint8_t kind, dir;
};

struct sim_gen {
    enum kind kind;
    struct sim_mt rng;
    struct sim_op *q;              /* records generated: [head, len) not consumed */
    uint64_t head, len, cap;
    bool started;
    int error;                     /* IOVA_E_NOMEM once a step could not append */
    union {
        struct {
            struct sim_usb_params p;
            uint64_t *sizes, *cum, total, ndesc, seq, done;
            struct usb_transfer *queue;   /* a ring of inflight transfers */
            uint64_t qhead, qlen;
        } usb;
        struct {
            struct sim_nic_params p;
            uint64_t halves, frame_span, rx_next, tx_next;
            struct nic_send *busy;        /* a ring of tx_ring sends */
            uint64_t bhead, blen;
        } nic;
        struct {
            struct sim_nvme_params p;
            struct nvme_queue *queues;
            uint64_t done;
        } nvme;
        struct {
            struct sim_random_params p;
            double log_lo, log_hi, coh_cut;
            uint64_t pages_lo, pages_span, step, handle;
            struct due *heap;
            uint64_t nheap, heap_cap;
        } rnd;
    } u;
};

/* ---- the queue of records ------------------------------------------------ */

static struct sim_op *append(struct sim_gen *g)
{
    if (!sim_array_room((void **)&g->q, g->len, &g->cap, sizeof(*g->q), 256)) {
        g->error = IOVA_E_NOMEM;
        return NULL;
    }
    struct sim_op *op = &g->q[g->len++];
    memset(op, 0, sizeof(*op));
    return op;
}

static void emit(struct sim_gen *g, uint8_t code, uint64_t handle, uint64_t arg,
                 uint64_t size, uint8_t dir, uint8_t write, int32_t cpu)
{
    struct sim_op *op = append(g);
    if (!op)
        return;
    op->code = code;
    op->handle = handle;
    op->arg = arg;
    op->size = size;
    op->dir = dir;
    op->write = write;
    op->cpu = cpu;
}

static void emit_access(struct sim_gen *g, uint64_t h, uint64_t offset, bool write)
{
    emit(g, SIM_OP_ACCESS, h, offset, 0, 0, write, NO_CPU);
}

static double draw(struct sim_gen *g)
{
    return sim_mt_random(&g->rng);
}

/* PHYS_BASE + (getrandbits(PHYS_BITS) << 12) */
static uint64_t draw_page(struct sim_gen *g, uint64_t base, uint32_t bits)
{
    return base + ((uint64_t)sim_mt_bits(&g->rng, bits) << 12);
}

/* int(x) for the non-negative doubles the workloads truncate */
static uint64_t trunc_u64(double x)
{
    return (uint64_t)x;
}

/* A MAP_SG record and its segments: `size` bytes cut into segments whose
 * length seg_len draws (capped by what is left), each at a page drawn after
 * its length, as both Python generators do. */
static void emit_sg(struct sim_gen *g, uint64_t h, uint64_t size, uint8_t dir, int32_t cpu,
                    uint64_t (*seg_len)(struct sim_gen *), uint64_t phys_base, uint32_t phys_bits)
{
    uint64_t at = g->len, left = size, nsegs = 0;
    emit(g, SIM_OP_MAP_SG, h, 0, 0, dir, 0, cpu);
    while (left && !g->error) {
        uint64_t n = seg_len(g);
        if (n > left)
            n = left;
        uint64_t paddr = draw_page(g, phys_base, phys_bits);
        emit(g, SIM_OP_SEGMENT, 0, paddr, n, 0, 0, NO_CPU);
        left -= n;
        nsegs++;
    }
    if (!g->error)
        g->q[at].arg = nsegs;
}

/* ---- usb.py ------------------------------------------------------------------ */

static void usb_step(struct sim_gen *g)
{
    __typeof__(g->u.usb) *u = &g->u.usb;
    const struct sim_usb_params *p = &u->p;
    if (!g->started) {
        g->started = true;
        emit(g, SIM_OP_ALLOC_COHERENT, p->ring, 0, p->ring_size, 0, 0, NO_CPU);
    }
    while (u->qlen < p->inflight) {
        uint64_t h = 1 + u->seq % p->inflight;
        /* bisect(cum, rand() * total): how many cumulative weights are <= it */
        double x = draw(g) * (double)u->total;
        uint64_t k = 0;
        while (k < p->nsizes && (double)u->cum[k] <= x)
            k++;
        uint64_t size = u->sizes[k < p->nsizes ? k : p->nsizes - 1];
        uint64_t off = 0;
        if (draw(g) < p->unaligned)
            off = (1 + trunc_u64(draw(g) * 7)) * 512;
        uint64_t paddr = draw_page(g, p->phys_base, p->phys_bits) + off;
        bool is_in = draw(g) < p->in_ratio;
        uint64_t desc = (u->seq % u->ndesc) * p->desc_size;
        u->seq++;
        emit(g, SIM_OP_MAP_PAGE, h, paddr, size, is_in ? DIR_FROM_DEVICE : DIR_TO_DEVICE, 0,
             NO_CPU);
        emit_access(g, p->ring, desc, false);
        u->queue[(u->qhead + u->qlen++) % p->inflight] =
            (struct usb_transfer){ .h = h, .size = size, .desc = desc, .is_in = is_in };
    }
    struct usb_transfer t = u->queue[u->qhead];
    u->qhead = (u->qhead + 1) % p->inflight;
    u->qlen--;
    emit_access(g, t.h, 0, t.is_in);
    if (t.size > p->page)
        emit_access(g, t.h, t.size - 1, t.is_in);
    emit_access(g, p->ring, t.desc, true);
    emit(g, SIM_OP_UNMAP_PAGE, t.h, 0, t.size, t.is_in ? DIR_FROM_DEVICE : DIR_TO_DEVICE, 0,
         NO_CPU);
    u->done++;
    if (u->done % p->per_ms == 0)
        emit(g, SIM_OP_ADVANCE, 0, 1, 0, 0, 0, NO_CPU);
}

/* ---- nic.py ------------------------------------------------------------------ */

static uint64_t nic_rx_paddr(struct sim_gen *g)
{
    const struct sim_nic_params *p = &g->u.nic.p;
    uint64_t base = draw_page(g, p->phys_base, p->phys_bits);
    return base + trunc_u64(draw(g) * (double)g->u.nic.halves) * p->rx_buf;
}

/* The poll: up to `reap` completed sends unmapped, oldest first. */
static void nic_reap(struct sim_gen *g)
{
    __typeof__(g->u.nic) *u = &g->u.nic;
    const struct sim_nic_params *p = &u->p;
    uint64_t n = p->reap < u->blen ? p->reap : u->blen;
    for (uint64_t i = 0; i < n; i++) {
        struct nic_send s = u->busy[u->bhead];
        u->bhead = (u->bhead + 1) % p->tx_ring;
        u->blen--;
        emit_access(g, p->tx_ring_handle, s.slot * p->desc_size, true);
        emit(g, SIM_OP_UNMAP_PAGE, p->tx_base + s.slot, 0, s.size, DIR_TO_DEVICE, 0, NO_CPU);
    }
}

static void nic_step(struct sim_gen *g)
{
    __typeof__(g->u.nic) *u = &g->u.nic;
    const struct sim_nic_params *p = &u->p;
    if (!g->started) {
        g->started = true;
        emit(g, SIM_OP_ALLOC_COHERENT, p->rx_ring_handle, 0, p->rx_ring * p->desc_size, 0, 0,
             NO_CPU);
        emit(g, SIM_OP_ALLOC_COHERENT, p->tx_ring_handle, 0, p->tx_ring * p->desc_size, 0, 0,
             NO_CPU);
        for (uint64_t slot = 0; slot < p->rx_ring; slot++) {
            uint64_t paddr = nic_rx_paddr(g);
            emit(g, SIM_OP_MAP_PAGE, p->rx_base + slot, paddr, p->rx_buf, DIR_FROM_DEVICE, 0,
                 NO_CPU);
        }
        return;
    }
    uint64_t n = 1 + trunc_u64(sim_mt_expovariate(&g->rng, 1.0 / (double)p->burst));
    for (uint64_t k = 0; k < n && !g->error; k++) {
        if (draw(g) < p->tx_ratio) {
            if (u->blen == p->tx_ring)
                nic_reap(g);               /* ring full: the stack waits for a poll */
            uint64_t size = draw(g) < p->tso ? p->tso_size
                                             : 60 + trunc_u64(draw(g) * (double)u->frame_span);
            uint64_t slot = u->tx_next;
            u->tx_next = (u->tx_next + 1) % p->tx_ring;
            uint64_t paddr = draw_page(g, p->phys_base, p->phys_bits);
            paddr += (uint64_t)sim_mt_bits(&g->rng, 5) << 6;
            emit(g, SIM_OP_MAP_PAGE, p->tx_base + slot, paddr, size, DIR_TO_DEVICE, 0, NO_CPU);
            emit_access(g, p->tx_ring_handle, slot * p->desc_size, false);
            emit_access(g, p->tx_base + slot, 0, false);
            if (size > p->page)
                emit_access(g, p->tx_base + slot, size - 1, false);
            u->busy[(u->bhead + u->blen++) % p->tx_ring] =
                (struct nic_send){ .slot = slot, .size = size };
        } else {
            uint64_t slot = u->rx_next;
            u->rx_next = (u->rx_next + 1) % p->rx_ring;
            uint64_t h = p->rx_base + slot;
            emit_access(g, p->rx_ring_handle, slot * p->desc_size, false);
            emit_access(g, h, 0, true);
            emit_access(g, p->rx_ring_handle, slot * p->desc_size, true);
            emit(g, SIM_OP_UNMAP_PAGE, h, 0, p->rx_buf, DIR_FROM_DEVICE, 0, NO_CPU);
            uint64_t paddr = nic_rx_paddr(g);
            emit(g, SIM_OP_MAP_PAGE, h, paddr, p->rx_buf, DIR_FROM_DEVICE, 0, NO_CPU);
        }
    }
    nic_reap(g);
    if (p->idle_ms)
        emit(g, SIM_OP_ADVANCE, 0, p->idle_ms, 0, 0, 0, NO_CPU);
}

/* ---- nvme.py ----------------------------------------------------------------- */

/* 1 << (seg_lo + int(rand() * seg_octaves)) */
static uint64_t nvme_seg_len(struct sim_gen *g)
{
    const struct sim_nvme_params *p = &g->u.nvme.p;
    uint64_t octaves = p->seg_max_log2 - p->seg_min_log2 + 1;
    return 1ull << (p->seg_min_log2 + trunc_u64(draw(g) * (double)octaves));
}

static void nvme_step(struct sim_gen *g)
{
    __typeof__(g->u.nvme) *u = &g->u.nvme;
    const struct sim_nvme_params *p = &u->p;
    if (!g->started) {
        g->started = true;
        for (uint64_t q = 0; q < p->queues; q++) {
            emit(g, SIM_OP_ALLOC_COHERENT, p->sq_base + q, 0, p->depth * p->sqe_size, 0, 0,
                 (int32_t)q);
            emit(g, SIM_OP_ALLOC_COHERENT, p->cq_base + q, 0, p->depth * p->cqe_size, 0, 0,
                 (int32_t)q);
        }
        return;
    }
    uint64_t q = trunc_u64(draw(g) * (double)p->queues);
    struct nvme_queue *Q = &u->queues[q];
    uint64_t octaves = p->max_log2 - p->min_log2 + 1;
    if (Q->nfree && (!Q->nbusy || draw(g) < 0.5)) {
        uint64_t tag = Q->free_tags[--Q->nfree];
        uint64_t h = p->cmd_base + q * p->depth + tag;
        uint64_t size = 1ull << (p->min_log2 + trunc_u64(draw(g) * (double)octaves));
        bool is_read = draw(g) < p->read_ratio;
        uint8_t d = is_read ? DIR_FROM_DEVICE : DIR_TO_DEVICE;
        bool sg = size > p->prp_max;
        if (!sg) {
            uint64_t paddr = draw_page(g, p->phys_base, p->phys_bits);
            emit(g, SIM_OP_MAP_PAGE, h, paddr, size, d, 0, (int32_t)q);
        } else {
            emit_sg(g, h, size, d, (int32_t)q, nvme_seg_len, p->phys_base, p->phys_bits);
        }
        Q->cmd[tag] = (struct nvme_cmd){ .size = size, .is_read = is_read, .sg = sg };
        Q->busy[Q->nbusy++] = tag;
        emit_access(g, p->sq_base + q, Q->sq_tail * p->sqe_size, false);
        Q->sq_tail = (Q->sq_tail + 1) % p->depth;
        emit_access(g, h, 0, is_read);
        emit_access(g, h, size - 1, is_read);
    } else {
        uint64_t i = trunc_u64(draw(g) * (double)Q->nbusy);
        uint64_t tag = Q->busy[i];
        Q->busy[i] = Q->busy[Q->nbusy - 1];
        Q->nbusy--;
        struct nvme_cmd c = Q->cmd[tag];
        uint64_t h = p->cmd_base + q * p->depth + tag;
        emit_access(g, p->cq_base + q, tag * p->cqe_size, true);
        uint8_t d = c.is_read ? DIR_FROM_DEVICE : DIR_TO_DEVICE;
        if (c.sg)
            emit(g, SIM_OP_UNMAP_SG, h, 0, 0, d, 0, (int32_t)q);
        else
            emit(g, SIM_OP_UNMAP_PAGE, h, 0, c.size, d, 0, (int32_t)q);
        Q->free_tags[Q->nfree++] = tag;
        u->done++;
        if (u->done % p->per_ms == 0)
            emit(g, SIM_OP_ADVANCE, 0, 1, 0, 0, 0, NO_CPU);
    }
}

/* ---- randomized.py ------------------------------------------------------------- */

enum { RND_PAGE, RND_SG, RND_COHERENT };

static bool due_before(const struct due *a, const struct due *b)
{
    return a->step < b->step || (a->step == b->step && a->handle < b->handle);
}

static bool heap_push(struct sim_gen *g, struct due d)
{
    __typeof__(g->u.rnd) *u = &g->u.rnd;
    if (!sim_array_room((void **)&u->heap, u->nheap, &u->heap_cap, sizeof(*u->heap), 64)) {
        g->error = IOVA_E_NOMEM;
        return false;
    }
    uint64_t i = u->nheap++;
    while (i && due_before(&d, &u->heap[(i - 1) / 2])) {
        u->heap[i] = u->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    u->heap[i] = d;
    return true;
}

static struct due heap_pop(struct sim_gen *g)
{
    __typeof__(g->u.rnd) *u = &g->u.rnd;
    struct due top = u->heap[0], last = u->heap[--u->nheap];
    uint64_t i = 0, n = u->nheap;
    for (;;) {
        uint64_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && due_before(&u->heap[c + 1], &u->heap[c]))
            c++;
        if (!due_before(&u->heap[c], &last))
            break;
        u->heap[i] = u->heap[c];
        i = c;
    }
    if (n)
        u->heap[i] = last;
    return top;
}

/* (1 + int(rand() * 16)) * PAGE */
static uint64_t random_seg_len(struct sim_gen *g)
{
    return (1 + trunc_u64(draw(g) * 16)) * g->u.rnd.p.page;
}

/* One turn of the loop; false when it yielded nothing (the live set was full). */
static bool random_turn(struct sim_gen *g)
{
    __typeof__(g->u.rnd) *u = &g->u.rnd;
    const struct sim_random_params *p = &u->p;
    uint64_t before = g->len;
    while (u->nheap && u->heap[0].step <= u->step) {
        struct due d = heap_pop(g);
        if (d.kind == RND_PAGE)
            emit(g, SIM_OP_UNMAP_PAGE, d.handle, 0, d.size, d.dir, 0, NO_CPU);
        else if (d.kind == RND_SG)
            emit(g, SIM_OP_UNMAP_SG, d.handle, 0, 0, d.dir, 0, NO_CPU);
        else
            emit(g, SIM_OP_FREE_COHERENT, d.handle, 0, 0, 0, 0, NO_CPU);
    }
    if (u->nheap >= p->live_max) {
        u->step = u->heap[0].step;         /* full: time moves on to the next unmap */
        return g->len != before;
    }
    u->handle++;
    uint64_t size;
    if (p->loguniform) {
        size = trunc_u64(exp(u->log_lo + (u->log_hi - u->log_lo) * draw(g)));
    } else {
        size = (u->pages_lo + trunc_u64(draw(g) * (double)u->pages_span)) * p->page;
    }
    if (size < p->size_min)
        size = p->size_min;
    if (size > p->size_max)
        size = p->size_max;
    bool is_write = draw(g) < p->write_ratio;
    uint8_t d = is_write ? DIR_FROM_DEVICE : DIR_TO_DEVICE;
    double r = draw(g);
    uint8_t kind;
    if (r < p->sg_ratio) {
        kind = RND_SG;
        emit_sg(g, u->handle, size, d, NO_CPU, random_seg_len, p->phys_base, p->phys_bits);
    } else if (r < u->coh_cut) {
        kind = RND_COHERENT;
        emit(g, SIM_OP_ALLOC_COHERENT, u->handle, 0, size, 0, 0, NO_CPU);
    } else {
        kind = RND_PAGE;
        uint64_t paddr = draw_page(g, p->phys_base, p->phys_bits);
        emit(g, SIM_OP_MAP_PAGE, u->handle, paddr, size, d, 0, NO_CPU);
    }
    emit_access(g, u->handle, trunc_u64(draw(g) * (double)size), is_write);
    double life = p->fixed_lifetime ? p->lifetime
                  : p->lifetime > 0  ? sim_mt_expovariate(&g->rng, 1.0 / p->lifetime)
                                     : 0.0;
    heap_push(g, (struct due){ .step = u->step + 1 + trunc_u64(life), .handle = u->handle,
                               .size = size, .kind = kind, .dir = d });
    u->step++;
    if (u->step % p->per_ms == 0)
        emit(g, SIM_OP_ADVANCE, 0, 1, 0, 0, 0, NO_CPU);
    return true;
}

static void random_step(struct sim_gen *g)
{
    while (!random_turn(g) && !g->error)
        ;
}

/* ---- making them ------------------------------------------------------------- */

static struct sim_gen *gen_new(enum kind kind, const struct sim_mt *rng, int *err)
{
    if (sim_mt_valid(rng)) {
        *err = IOVA_E_ARG;
        return NULL;
    }
    struct sim_gen *g = iova_mem_calloc(1, sizeof(*g));
    if (!g) {
        *err = IOVA_E_NOMEM;
        return NULL;
    }
    g->kind = kind;
    g->rng = *rng;
    return g;
}

static struct sim_gen *gen_failed(struct sim_gen *g, int *err, int code)
{
    sim_gen_destroy(g);
    *err = code;
    return NULL;
}

struct sim_gen *sim_gen_usb(const struct sim_usb_params *p, const struct sim_mt *rng, int *err)
{
    int dummy;
    err = err ? err : &dummy;
    if (!p || !p->nsizes || !p->sizes || !p->weights || !p->inflight || !p->per_ms ||
        p->desc_size == 0 || p->ring_size < p->desc_size || p->nsizes > (1u << 20) ||
        p->phys_bits > 32 || p->inflight > (1u << 20)) {
        *err = IOVA_E_ARG;
        return NULL;
    }
    struct sim_gen *g = gen_new(GEN_USB, rng, err);
    if (!g)
        return NULL;
    __typeof__(g->u.usb) *u = &g->u.usb;
    u->p = *p;
    u->sizes = iova_mem_malloc(p->nsizes * sizeof(uint64_t));
    u->cum = iova_mem_malloc(p->nsizes * sizeof(uint64_t));
    u->queue = iova_mem_calloc(p->inflight, sizeof(*u->queue));
    if (!u->sizes || !u->cum || !u->queue)
        return gen_failed(g, err, IOVA_E_NOMEM);
    for (uint64_t i = 0; i < p->nsizes; i++) {
        u->sizes[i] = p->sizes[i];
        if (p->weights[i] > EXACT || u->total > EXACT)
            return gen_failed(g, err, IOVA_E_ARG);
        u->total += p->weights[i];
        u->cum[i] = u->total;
    }
    if (!u->total)
        return gen_failed(g, err, IOVA_E_ARG);
    u->p.sizes = u->p.weights = NULL;
    u->ndesc = p->ring_size / p->desc_size;
    return g;
}

struct sim_gen *sim_gen_nic(const struct sim_nic_params *p, const struct sim_mt *rng, int *err)
{
    int dummy;
    err = err ? err : &dummy;
    if (!p || !p->rx_ring || !p->tx_ring || !p->rx_buf || !p->burst || !p->reap ||
        p->rx_ring > (1u << 24) || p->tx_ring > (1u << 24) || p->mtu + 14 < 60 ||
        p->mtu > EXACT || p->phys_bits > 32) {
        *err = IOVA_E_ARG;
        return NULL;
    }
    struct sim_gen *g = gen_new(GEN_NIC, rng, err);
    if (!g)
        return NULL;
    __typeof__(g->u.nic) *u = &g->u.nic;
    u->p = *p;
    u->halves = p->page / p->rx_buf ? p->page / p->rx_buf : 1;
    u->frame_span = p->mtu + 14 - 60 + 1;
    u->busy = iova_mem_calloc(p->tx_ring, sizeof(*u->busy));
    if (!u->busy)
        return gen_failed(g, err, IOVA_E_NOMEM);
    return g;
}

struct sim_gen *sim_gen_nvme(const struct sim_nvme_params *p, const struct sim_mt *rng,
                             int *err)
{
    int dummy;
    err = err ? err : &dummy;
    if (!p || !p->queues || !p->depth || !p->per_ms || p->queues > 1024 ||
        p->depth > (1u << 20) || p->min_log2 > p->max_log2 || p->max_log2 > 62 ||
        p->seg_min_log2 > p->seg_max_log2 || p->seg_max_log2 > 62 || p->phys_bits > 32) {
        *err = IOVA_E_ARG;
        return NULL;
    }
    struct sim_gen *g = gen_new(GEN_NVME, rng, err);
    if (!g)
        return NULL;
    __typeof__(g->u.nvme) *u = &g->u.nvme;
    u->p = *p;
    u->queues = iova_mem_calloc(p->queues, sizeof(*u->queues));
    if (!u->queues)
        return gen_failed(g, err, IOVA_E_NOMEM);
    for (uint64_t q = 0; q < p->queues; q++) {
        struct nvme_queue *Q = &u->queues[q];
        Q->free_tags = iova_mem_malloc(p->depth * sizeof(uint64_t));
        Q->busy = iova_mem_malloc(p->depth * sizeof(uint64_t));
        Q->cmd = iova_mem_calloc(p->depth, sizeof(*Q->cmd));
        if (!Q->free_tags || !Q->busy || !Q->cmd)
            return gen_failed(g, err, IOVA_E_NOMEM);
        for (uint64_t i = 0; i < p->depth; i++)
            Q->free_tags[i] = p->depth - 1 - i;       /* range(depth - 1, -1, -1) */
        Q->nfree = p->depth;
    }
    return g;
}

struct sim_gen *sim_gen_random(const struct sim_random_params *p, const struct sim_mt *rng,
                               int *err)
{
    int dummy;
    err = err ? err : &dummy;
    if (!p || !p->size_min || p->size_min > p->size_max || p->size_max >= EXACT ||
        !p->per_ms || !p->live_max || !p->page || !(p->lifetime >= 0) ||
        p->lifetime > 1e15 || p->phys_bits > 32) {
        *err = IOVA_E_ARG;
        return NULL;
    }
    struct sim_gen *g = gen_new(GEN_RANDOM, rng, err);
    if (!g)
        return NULL;
    __typeof__(g->u.rnd) *u = &g->u.rnd;
    u->p = *p;
    u->log_lo = log((double)p->size_min);
    u->log_hi = log((double)(p->size_max + 1));
    u->pages_lo = (p->size_min + p->page - 1) / p->page;
    uint64_t pages_hi = p->size_max / p->page ? p->size_max / p->page : 1;
    u->pages_span = pages_hi - u->pages_lo + 1;
    u->coh_cut = p->sg_ratio + p->coherent_ratio;
    return g;
}

void sim_gen_destroy(struct sim_gen *g)
{
    if (!g)
        return;
    switch (g->kind) {
    case GEN_USB:
        free(g->u.usb.sizes);
        free(g->u.usb.cum);
        free(g->u.usb.queue);
        break;
    case GEN_NIC:
        free(g->u.nic.busy);
        break;
    case GEN_NVME:
        for (uint64_t q = 0; g->u.nvme.queues && q < g->u.nvme.p.queues; q++) {
            free(g->u.nvme.queues[q].free_tags);
            free(g->u.nvme.queues[q].busy);
            free(g->u.nvme.queues[q].cmd);
        }
        free(g->u.nvme.queues);
        break;
    case GEN_RANDOM:
        free(g->u.rnd.heap);
        break;
    }
    free(g->q);
    free(g);
}

/* ---- reading them ------------------------------------------------------------ */

int sim_gen_pending(struct sim_gen *g, const struct sim_op **ops, uint64_t *n)
{
    if (g->error)
        return g->error;
    if (g->head == g->len) {
        g->head = g->len = 0;
        switch (g->kind) {
        case GEN_USB:
            usb_step(g);
            break;
        case GEN_NIC:
            nic_step(g);
            break;
        case GEN_NVME:
            nvme_step(g);
            break;
        case GEN_RANDOM:
            random_step(g);
            break;
        }
        if (g->error)
            return g->error;     /* a step half appended: the generator is spent */
    }
    *ops = g->q + g->head;
    *n = g->len - g->head;
    return 0;
}

void sim_gen_consume(struct sim_gen *g, uint64_t n)
{
    g->head += n;
}

/* The records of the operation at rec (1, or 1 + its segments). */
static uint64_t records_of(const struct sim_op *rec)
{
    return rec->code == SIM_OP_MAP_SG ? 1 + rec->arg : 1;
}

int64_t sim_gen_next(struct sim_gen *g, struct sim_op *out, uint64_t cap, uint64_t max_ops,
                     uint64_t *ops)
{
    uint64_t copied = 0, done = 0;
    if (!g || !ops || (cap && !out))
        return IOVA_E_ARG;
    while (done < max_ops) {
        const struct sim_op *rec;
        uint64_t n;
        int r = sim_gen_pending(g, &rec, &n);
        if (r)
            return r;
        uint64_t k = records_of(rec);
        if (copied + k > cap)
            break;
        memcpy(out + copied, rec, k * sizeof(*rec));
        sim_gen_consume(g, k);
        copied += k;
        done++;
    }
    *ops = done;
    return (int64_t)copied;
}

int64_t sim_gen_peek(struct sim_gen *g, struct sim_op *out, uint64_t cap)
{
    const struct sim_op *rec;
    uint64_t n;
    if (!g || (cap && !out))
        return IOVA_E_ARG;
    int r = sim_gen_pending(g, &rec, &n);
    if (r)
        return r;
    uint64_t k = records_of(rec);
    if (k > cap)
        return 0;
    memcpy(out, rec, k * sizeof(*rec));
    return (int64_t)k;
}

int sim_gen_skip(struct sim_gen *g, uint64_t n)
{
    if (!g)
        return IOVA_E_ARG;
    while (n) {
        const struct sim_op *rec;
        uint64_t left;
        int r = sim_gen_pending(g, &rec, &left);
        if (r)
            return r;
        for (uint64_t i = 0; i < left && n; n--) {
            uint64_t k = records_of(rec + i);
            sim_gen_consume(g, k);
            i += k;
        }
    }
    return 0;
}
