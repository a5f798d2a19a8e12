/*
 * iova_cookie_internal.h - what is behind struct iova_cookie: one lock for
 * the cookie's own allocators (the IOVA type uses the iova_domain's locks),
 * the per-type state, and the flush queue.
 */
#ifndef PYIOVA_IOVA_COOKIE_INTERNAL_H
#define PYIOVA_IOVA_COOKIE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>

#include "iova_cookie.h"
#include "iova_internal.h"

/* The one-way wraparound allocator (iova_wrap.c). */
struct iova_wrap {
    struct iova_tree tree;    /* live ranges and RETIRED ones awaiting the flush */
    uint32_t sentinel;        /* a node just above end_pfn: every gap has an owner */
    uint64_t start_pfn;
    uint64_t end_pfn;
    uint64_t cursor;          /* only moves up, until the wrap */
    uint64_t retired_pfns;
    uint64_t reserved_pfns;   /* RESERVED nodes: never handed out, never dropped */
    uint64_t wraps;
};

int iova_wrap_init(struct iova_wrap *w, uint64_t start_pfn, uint64_t end_pfn);
void iova_wrap_release(struct iova_wrap *w);
int64_t iova_wrap_alloc(struct iova_wrap *w, uint64_t pages, uint64_t limit_pfn,
                        uint32_t *events);
int iova_wrap_free(struct iova_wrap *w, uint64_t pfn, uint64_t pages);
int iova_wrap_reserve(struct iova_wrap *w, uint64_t lo, uint64_t hi);
int iova_wrap_check(struct iova_wrap *w, char *msg, size_t msg_len);

/* A set of pfns: open addressing with linear probing, kept at most half
 * full so that a lookup is O(1). Slots hold PFN_SET_EMPTY when free; that
 * is the 6.12 anchor's pfn, which no allocator hands out. */
struct pfn_set {
    uint64_t *slots;
    uint64_t mask;            /* slots - 1: their number is a power of two */
    uint64_t count;
};

#define PFN_SET_EMPTY UINT64_MAX

/* iova_cookie.c; the cookie's save and restore use them too. */
bool pfn_set_holds(const struct pfn_set *s, uint64_t pfn);
/* Room for `more` entries beyond the present ones; IOVA_E_NOMEM leaves the
 * set as it was. */
int pfn_set_reserve(struct pfn_set *s, uint64_t more);
/* pfn must not be in the set yet, and pfn_set_reserve must have made room. */
void pfn_set_add(struct pfn_set *s, uint64_t pfn);
bool pfn_set_remove(struct pfn_set *s, uint64_t pfn);
void pfn_set_release(struct pfn_set *s);

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
    uint64_t flushes;
    struct pfn_set queued_pfns;   /* the pfn of every entry in the rings, so that a
                                   * range can be refused a second place; sized
                                   * for every ring full, it never grows */
    uint64_t lost;            /* entries a retire could not free (IOVA_E_FQ_LOST) */
};

struct iova_cookie {
    pthread_mutex_t lock;
    int type;
    struct iova_domain *iovad;    /* IOVA, RESET_WHEN_EMPTY: lent by the caller */
    uint64_t granule;
    uint64_t start_pfn;
    uint64_t end_pfn;
    uint64_t msi_next;            /* MSI: the next pfn handed out */
    uint64_t *msi_starts;         /* MSI: where each live allocation starts, oldest
                                   * first, so an undo can be checked to be whole
                                   * and the latest (msi_depth == live_ranges) */
    uint64_t msi_depth, msi_cap;
    bool tree_only;               /* IOVA: bypass the rcache */
    struct pfn_set live;          /* IOVA, RESET_WHEN_EMPTY: where each live range it
                                   * handed out starts (not queued, not retired), so
                                   * that a free of anything else - a reserved
                                   * region above all - is refused */
    struct iova_wrap wrap;
    struct iova_fq *fq;
    uint64_t allocs, frees, failures;
    uint64_t live_ranges, live_pfns;
    uint64_t retired_pfns;        /* RESET_WHEN_EMPTY: freed but never reused */
    uint64_t resets;
};

#endif
