/*
 * iova_mutex.h - the lock behind every domain lock (tree, per-CPU caches,
 * depot, work).
 *
 * A fast-path alloc/free pair takes four of them, so their cost is a large
 * part of an rcache hit: an uncontended lock here is one compare-and-swap
 * and its unlock one exchange, inline, where a pthread mutex adds a call and
 * its type checks to each. Contended, it sleeps on a futex (a yield loop
 * elsewhere) like any mutex, so threads holding the GIL elsewhere or
 * preempted lock holders cost no spinning. The word: 0 free, 1 held,
 * 2 held with sleepers possible.
 */
#ifndef PYIOVA_IOVA_MUTEX_H
#define PYIOVA_IOVA_MUTEX_H

#include <stdint.h>

typedef struct {
    uint32_t word;
} iova_mutex;

void iova_mutex_lock_slow(iova_mutex *m);
void iova_mutex_wake(iova_mutex *m);

static inline void iova_mutex_init(iova_mutex *m)
{
    __atomic_store_n(&m->word, 0, __ATOMIC_RELAXED);
}

static inline void iova_mutex_lock(iova_mutex *m)
{
    uint32_t free_word = 0;
    if (!__atomic_compare_exchange_n(&m->word, &free_word, 1, 0,
                                     __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        iova_mutex_lock_slow(m);
}

static inline void iova_mutex_unlock(iova_mutex *m)
{
    if (__atomic_exchange_n(&m->word, 0, __ATOMIC_RELEASE) == 2)
        iova_mutex_wake(m);
}

#endif
