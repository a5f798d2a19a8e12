/*
 * sim_mt.h - the Mersenne Twister (MT19937) as CPython's random module
 * uses it, so that C code draws the very numbers a random.Random with the
 * same state would: random(), getrandbits(k) for k <= 32, expovariate().
 *
 * The state is CPython's: 624 words and an index, as Random.getstate()
 * gives them (state[1][:624] and state[1][624]); it goes in and comes back
 * out unchanged in form, so a Python Random and a C stream can hand the
 * sequence to each other at any point.
 */
#ifndef PYIOVA_SIM_MT_H
#define PYIOVA_SIM_MT_H

#include <stdint.h>
#include <stddef.h>

#define SIM_MT_WORDS 624

struct sim_mt {
    uint32_t mt[624];
    uint32_t index;          /* 0..624: words used of the current block */
};

#endif
