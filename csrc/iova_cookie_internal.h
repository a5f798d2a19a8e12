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
};

struct iova_cookie {
    pthread_mutex_t lock;
    int type;
    struct iova_domain *iovad;    /* IOVA, RESET_WHEN_EMPTY: lent by the caller */
    uint64_t granule;
    uint64_t start_pfn;
    uint64_t end_pfn;
    uint64_t msi_next;            /* MSI: the next pfn handed out */
    bool tree_only;               /* IOVA: bypass the rcache */
    struct iova_wrap wrap;
    struct iova_fq *fq;
    uint64_t allocs, frees, failures;
    uint64_t live_ranges, live_pfns;
    uint64_t retired_pfns;        /* RESET_WHEN_EMPTY: freed but never reused */
    uint64_t resets;
};

#endif
