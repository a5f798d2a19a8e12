/*
 * iova_fq.h - the flush queue (iova_fq.c): per-CPU rings of freed ranges
 * that wait for an IOTLB flush before they may be reused, as dma-iommu's
 * (mainline, since 5.17; iova.c's before that).
 *
 * A ring of `size` slots holds size - 1 entries, as the kernel's (full when
 * tail + 1 == head). Each entry records how many flushes had started when
 * it was queued; a flush that has finished since covers it. The first entry
 * arms a timer whose expiry flushes and retires everything. What "retire"
 * means (freeing into an rcache) is the cookie's business: the queue only
 * says which entries are done (iova_cookie.c drives it).
 *
 * Not thread safe: the cookie holds its lock around every call.
 */
#ifndef PYIOVA_IOVA_FQ_H
#define PYIOVA_IOVA_FQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pfn_set.h"

#define IOVA_FQ_MAX_SIZE (1u << 20)   /* slots per ring at most */

struct fq_entry {
    uint64_t pfn;
    uint64_t pages;
    uint64_t counter;         /* flushes started when it was queued */
};

struct fq_ring {
    struct fq_entry *entries;
    unsigned head;
    unsigned count;
};

struct iova_fq {
    unsigned ncpus;
    unsigned size;
    uint64_t timeout_ms;
    struct fq_ring *rings;
    uint64_t started;         /* the kernel's flush-start and flush-finish counters */
    uint64_t finished;
    bool timer_armed;
    uint64_t timer_due_ms;
    uint64_t queued;
    uint64_t flushes;         /* flushes a full ring asked for */
    struct pfn_set queued_pfns;   /* the pfn of every entry in the rings, so that a
                                   * range can be refused a second place; sized
                                   * for every ring full, it never grows */
    uint64_t lost;            /* entries a retire could not free (IOVA_E_FQ_LOST) */
};

/* ncpus rings (at least 1) of ring_size slots (2..IOVA_FQ_MAX_SIZE), a
 * timer of timeout_ms; NULL with *err = IOVA_E_GEOMETRY or IOVA_E_NOMEM. */
struct iova_fq *iova_fq_new(unsigned ncpus, unsigned ring_size, uint64_t timeout_ms,
                            int *err);
void iova_fq_destroy(struct iova_fq *fq);

static inline bool iova_fq_holds(const struct iova_fq *fq, uint64_t pfn)
{
    return pfn_set_holds(&fq->queued_pfns, pfn);
}

static inline bool iova_fq_full(const struct iova_fq *fq, unsigned ring)
{
    return fq->rings[ring].count == fq->size - 1;
}

/* Queues (pfn, pages) at the tail of a ring that is not full; pfn must not
 * be queued. The first entry arms the timer, to fire timeout_ms after now. */
void iova_fq_push(struct iova_fq *fq, unsigned ring, uint64_t pfn, uint64_t pages,
                  uint64_t now_ms);
/* The ring's oldest entry when a finished flush covers it, else NULL. */
const struct fq_entry *iova_fq_done(const struct iova_fq *fq, unsigned ring);
/* Drops the ring's oldest entry (which iova_fq_done returned). */
void iova_fq_pop(struct iova_fq *fq, unsigned ring);
/* A flush was made: it started and finished, and covers every entry queued
 * so far. */
void iova_fq_flushed(struct iova_fq *fq);

/* Validator: the rings, the counts and the set of queued pfns agree. 0, or
 * IOVA_E_CORRUPT with a description in msg. */
int iova_fq_check(const struct iova_fq *fq, char *msg, size_t msg_len);

#endif
