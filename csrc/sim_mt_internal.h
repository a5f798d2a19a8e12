/*
 * sim_mt_internal.h - the draws of sim_mt.c (C callers only).
 */
#ifndef PYIOVA_SIM_MT_INTERNAL_H
#define PYIOVA_SIM_MT_INTERNAL_H

#include "sim_mt.h"

/* 0 for a state CPython would accept (index in 0..624), else -1. */
int sim_mt_valid(const struct sim_mt *m);
uint32_t sim_mt_next(struct sim_mt *m);
/* random.random(): 53 random bits in [0, 1). */
double sim_mt_random(struct sim_mt *m);
/* random.getrandbits(k), 0 <= k <= 32. */
uint32_t sim_mt_bits(struct sim_mt *m, unsigned k);
/* random.expovariate(lambd). */
double sim_mt_expovariate(struct sim_mt *m, double lambd);

#endif
