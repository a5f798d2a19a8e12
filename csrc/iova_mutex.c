/*
 * iova_mutex.c - the contended half of iova_mutex (see iova_mutex.h).
 */
#include "iova_mutex.h"

#include <sched.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* Spins this many times before sleeping: the sections these locks guard are
 * a few hundred nanoseconds at most, so a lock held by a running thread is
 * usually free again within the spin. */
#define SPINS 100

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

void iova_mutex_lock_slow(iova_mutex *m)
{
    for (int i = 0; i < SPINS; i++) {
        cpu_relax();
        uint32_t free_word = 0;
        if (__atomic_load_n(&m->word, __ATOMIC_RELAXED) == 0 &&
            __atomic_compare_exchange_n(&m->word, &free_word, 1, 0,
                                        __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return;
    }
    /* Mark the lock contended (2) and sleep until it is released; whoever
     * takes it here keeps the mark, since other sleepers may remain, so its
     * unlock wakes the next one. */
    while (__atomic_exchange_n(&m->word, 2, __ATOMIC_ACQUIRE) != 0) {
#ifdef __linux__
        syscall(SYS_futex, &m->word, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
#else
        sched_yield();
#endif
    }
}

void iova_mutex_wake(iova_mutex *m)
{
#ifdef __linux__
    syscall(SYS_futex, &m->word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
#else
    (void)m;
#endif
}
