/*
 * iova_wrap.h - the one-way wraparound allocator (iova_wrap.c), one of the
 * cookie's allocator types. It keeps its own tree of ranges (iova_tree.h)
 * and knows nothing of IOVA domains.
 *
 * Not thread safe: the cookie holds its lock around every call.
 */
#ifndef PYIOVA_IOVA_WRAP_H
#define PYIOVA_IOVA_WRAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iova_tree.h"

/* Node flags of the wraparound tree (bits iova_tree.h leaves to the owner). */
#define WRAP_NODE_RETIRED  4u   /* freed, kept out of reuse until the wrap's flush */
#define WRAP_NODE_RESERVED 8u   /* a reserved region: never handed out, never dropped */

struct iova_wrap {
    struct iova_tree tree;    /* live ranges, RETIRED ones awaiting the flush,
                               * RESERVED ones */
    uint32_t sentinel;        /* a node just above end_pfn: every gap has an owner */
    uint64_t start_pfn;
    uint64_t end_pfn;
    uint64_t cursor;          /* only moves up, until the wrap */
    uint64_t retired_pfns;
    uint64_t reserved_pfns;
    uint64_t wraps;
};

/* 0 or IOVA_E_NOMEM (then iova_wrap_release frees what there is). */
int iova_wrap_init(struct iova_wrap *w, uint64_t start_pfn, uint64_t end_pfn);
void iova_wrap_release(struct iova_wrap *w);
/* The pfn of `pages` fitting pfns at or below limit_pfn, or IOVA_E_NOSPC /
 * IOVA_E_NOMEM. *wrapped is set when the allocator wrapped: the caller must
 * flush the whole IOTLB before it uses the range. */
int64_t iova_wrap_alloc(struct iova_wrap *w, uint64_t pages, uint64_t limit_pfn,
                        bool *wrapped);
int iova_wrap_free(struct iova_wrap *w, uint64_t pfn, uint64_t pages);
int iova_wrap_reserve(struct iova_wrap *w, uint64_t lo, uint64_t hi);
/* Validator (W1-W3, iova_wrap.c): 0, or IOVA_E_CORRUPT with msg. */
int iova_wrap_check(const struct iova_wrap *w, char *msg, size_t msg_len);

#endif
