/*
 * pow2.h - the powers-of-two helpers the kernel's allocators use
 * (roundup_pow_of_two, order_base_2), for 64-bit sizes.
 */
#ifndef PYIOVA_POW2_H
#define PYIOVA_POW2_H

#include <stdint.h>

/* The smallest power of two >= x (1 for 0 and 1); x at most 2^63. */
static inline uint64_t roundup_pow_of_two(uint64_t x)
{
    return x <= 1 ? 1 : 1ull << (64 - __builtin_clzll(x - 1));
}

/* log2 of roundup_pow_of_two(x): 0 for 0 and 1. The rcache's size class. */
static inline unsigned order_base_2(uint64_t x)
{
    return x <= 1 ? 0 : 64 - (unsigned)__builtin_clzll(x - 1);
}

#endif
