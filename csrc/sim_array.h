/*
 * sim_array.h - the growable arrays of the simulation engine and its
 * generators (C callers only): room for one more element, doubling.
 */
#ifndef PYIOVA_SIM_ARRAY_H
#define PYIOVA_SIM_ARRAY_H

#include <stdbool.h>
#include <stdint.h>

#include "iova_mem_internal.h"

/* Makes *items (count used of *cap) hold one more element of `size` bytes,
 * starting at `first` elements; false (nothing changed) when memory ran out. */
static inline bool sim_array_room(void **items, uint64_t count, uint64_t *cap, size_t size,
                                  uint64_t first)
{
    if (count < *cap)
        return true;
    uint64_t n = *cap ? 2 * *cap : first;
    void *grown = iova_mem_realloc(*items, n * size);
    if (!grown)
        return false;
    *items = grown;
    *cap = n;
    return true;
}

#endif
