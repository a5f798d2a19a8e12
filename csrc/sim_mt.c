/*
 * sim_mt.c - MT19937 with CPython's way of turning its words into
 * numbers (Modules/_randommodule.c and Lib/random.py): the simulation
 * engine's workload streams and the IPMMU erratum's dropped flushes must be
 * the numbers the Python reference draws from the same state, bit for bit.
 *
 * The generator is the published algorithm of Matsumoto and Nishimura; the
 * conversions follow CPython's documented behaviour: random() joins the top
 * 27 and 26 bits of two words into a 53-bit fraction, getrandbits(k <= 32)
 * keeps the top k bits of one word, expovariate(l) is -log(1 - random()) / l.
 */
#include <math.h>

#include "sim_mt_internal.h"

#define MT_N 624
#define MT_M 397
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu
#define MT_MATRIX 0x9908b0dfu

int sim_mt_valid(const struct sim_mt *m)
{
    return m && m->index <= MT_N ? 0 : -1;
}

static inline uint32_t mt_mix(uint32_t upper, uint32_t lower, uint32_t far)
{
    uint32_t y = (upper & MT_UPPER) | (lower & MT_LOWER);
    return far ^ (y >> 1) ^ ((y & 1u) ? MT_MATRIX : 0u);
}

/* The next block of 624 words (in three runs, so no index wraps). */
static void mt_twist(struct sim_mt *m)
{
    uint32_t *mt = m->mt;
    int k = 0;
    for (; k < MT_N - MT_M; k++)
        mt[k] = mt_mix(mt[k], mt[k + 1], mt[k + MT_M]);
    for (; k < MT_N - 1; k++)
        mt[k] = mt_mix(mt[k], mt[k + 1], mt[k + MT_M - MT_N]);
    mt[MT_N - 1] = mt_mix(mt[MT_N - 1], mt[0], mt[MT_M - 1]);
    m->index = 0;
}

uint32_t sim_mt_next(struct sim_mt *m)
{
    if (m->index >= MT_N)
        mt_twist(m);
    uint32_t y = m->mt[m->index++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

double sim_mt_random(struct sim_mt *m)
{
    uint32_t a = sim_mt_next(m) >> 5, b = sim_mt_next(m) >> 6;
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

uint32_t sim_mt_bits(struct sim_mt *m, unsigned k)
{
    if (k == 0)
        return 0;
    return sim_mt_next(m) >> (32 - k);
}

double sim_mt_expovariate(struct sim_mt *m, double lambd)
{
    return -log(1.0 - sim_mt_random(m)) / lambd;
}
