/*
 * sim_gen_internal.h - how the engine reads a generator in place.
 */
#ifndef PYIOVA_SIM_GEN_INTERNAL_H
#define PYIOVA_SIM_GEN_INTERNAL_H

#include "sim_gen.h"

/* The records generated and not consumed yet (generating more when there
 * are none): *ops points at whole operations, *n of them records. */
int sim_gen_pending(struct sim_gen *g, const struct sim_op **ops, uint64_t *n);
/* The first n of those records were used. */
void sim_gen_consume(struct sim_gen *g, uint64_t n);

#endif
