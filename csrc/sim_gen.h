/*
 * sim_gen.h - the built-in workloads' operation streams, generated in
 * C as records for the simulation engine (sim_engine.h).
 *
 * Each generator is its Python counterpart (pyiova/workloads/usb.py, nic.py,
 * nvme.py, randomized.py) written as a state machine: given the same
 * parameters and the same random state (a random.Random's getstate(), see
 * sim_mt.h) it yields the same operations, number for number; a test
 * compares the two streams. The parameters come from the Python workload
 * object, its module's constants included (handles, physical bases), so
 * that they are stated once.
 *
 * This header is read by cffi as well as by C.
 */
#ifndef PYIOVA_SIM_GEN_H
#define PYIOVA_SIM_GEN_H

#include <stdint.h>
#include <stddef.h>

#include "sim_mt.h"
#include "sim_engine.h"

struct sim_usb_params {
    uint64_t ring;               /* the ring's handle */
    uint64_t ring_size;
    uint64_t desc_size;
    uint64_t nsizes;
    const uint64_t *sizes;
    const uint64_t *weights;
    uint64_t inflight;
    double in_ratio;
    double unaligned;
    uint64_t per_ms;
    uint64_t page;
    uint64_t phys_base;
    uint32_t phys_bits;
};

struct sim_nic_params {
    uint64_t rx_ring_handle;
    uint64_t tx_ring_handle;
    uint64_t rx_base;
    uint64_t tx_base;
    uint64_t desc_size;
    uint64_t tso_size;
    uint64_t rx_ring;
    uint64_t tx_ring;
    uint64_t rx_buf;
    uint64_t mtu;
    double tso;
    double tx_ratio;
    uint64_t burst;
    uint64_t reap;
    uint64_t idle_ms;
    uint64_t page;
    uint64_t phys_base;
    uint32_t phys_bits;
};

struct sim_nvme_params {
    uint64_t sq_base;
    uint64_t cq_base;
    uint64_t cmd_base;
    uint64_t sqe_size;
    uint64_t cqe_size;
    uint64_t queues;
    uint64_t depth;
    uint32_t min_log2;           /* transfer sizes 2^min_log2 .. 2^max_log2 */
    uint32_t max_log2;
    double read_ratio;
    uint64_t prp_max;
    uint32_t seg_min_log2;       /* sg segments 2^seg_min_log2 .. 2^seg_max_log2 */
    uint32_t seg_max_log2;
    uint64_t per_ms;
    uint64_t phys_base;
    uint32_t phys_bits;
};

struct sim_random_params {
    uint64_t size_min;
    uint64_t size_max;
    int loguniform;
    double lifetime;
    int fixed_lifetime;
    uint64_t live_max;
    double sg_ratio;
    double coherent_ratio;
    double write_ratio;
    uint64_t per_ms;
    uint64_t page;
    uint64_t phys_base;
    uint32_t phys_bits;
};

/* A generator; NULL with *err = IOVA_E_ARG (parameters it cannot follow
 * exactly) or IOVA_E_NOMEM. */
struct sim_gen *sim_gen_usb(const struct sim_usb_params *p, const struct sim_mt *rng, int *err);
struct sim_gen *sim_gen_nic(const struct sim_nic_params *p, const struct sim_mt *rng, int *err);
struct sim_gen *sim_gen_nvme(const struct sim_nvme_params *p, const struct sim_mt *rng, int *err);
struct sim_gen *sim_gen_random(const struct sim_random_params *p, const struct sim_mt *rng,
                               int *err);
void sim_gen_destroy(struct sim_gen *g);

/* Copies the records of the next whole operations to out: at most cap
 * records and max_ops operations. Returns the records copied (*ops: the
 * operations), or IOVA_E_NOMEM. An operation larger than cap is not copied. */
int64_t sim_gen_next(struct sim_gen *g, struct sim_op *out, uint64_t cap, uint64_t max_ops,
                     uint64_t *ops);
/* Copies the records of the next operation without taking it; returns how
 * many (0 when more than cap), or IOVA_E_NOMEM. */
int64_t sim_gen_peek(struct sim_gen *g, struct sim_op *out, uint64_t cap);
/* Drops the next n operations (a restored run goes back to where it stood). */
int sim_gen_skip(struct sim_gen *g, uint64_t n);

#endif
