/*
 * iova_fq.c - the flush queue's rings (iova_fq.h).
 *
 * Invariants (iova_fq_check):
 *   Q1  queued is the sum of the rings' counts, no ring holds more than
 *       size - 1 entries, and the set of queued pfns holds exactly the
 *       entries' pfns, each once;
 *   Q2  finished <= started, and along each ring the entries' counters
 *       never go down nor past started.
 */
#include <stdio.h>
#include <stdlib.h>

#include "iova_fq.h"
#include "iova_mem_internal.h"

struct iova_fq *iova_fq_new(unsigned ncpus, unsigned ring_size, uint64_t timeout_ms,
                            int *err)
{
    /* one slot always stays empty (a full ring has tail + 1 == head), so a
     * ring needs two slots to hold anything */
    if (ncpus < 1 || ring_size < 2 || ring_size > IOVA_FQ_MAX_SIZE) {
        *err = IOVA_E_GEOMETRY;
        return NULL;
    }
    *err = IOVA_E_NOMEM;
    struct iova_fq *fq = iova_mem_calloc(1, sizeof(*fq));
    if (!fq)
        return NULL;
    fq->ncpus = ncpus;
    fq->size = ring_size;
    fq->timeout_ms = timeout_ms;
    fq->rings = iova_mem_calloc(ncpus, sizeof(*fq->rings));
    if (!fq->rings) {
        iova_fq_destroy(fq);
        return NULL;
    }
    for (unsigned i = 0; i < ncpus; i++) {
        fq->rings[i].entries = iova_mem_calloc(ring_size, sizeof(struct fq_entry));
        if (!fq->rings[i].entries) {
            iova_fq_destroy(fq);
            return NULL;
        }
    }
    if (pfn_set_reserve(&fq->queued_pfns, (uint64_t)ncpus * ring_size)) {
        iova_fq_destroy(fq);
        return NULL;
    }
    *err = 0;
    return fq;
}

void iova_fq_destroy(struct iova_fq *fq)
{
    if (!fq)
        return;
    if (fq->rings)
        for (unsigned i = 0; i < fq->ncpus; i++)
            free(fq->rings[i].entries);
    free(fq->rings);
    pfn_set_release(&fq->queued_pfns);
    free(fq);
}

void iova_fq_push(struct iova_fq *fq, unsigned ring, uint64_t pfn, uint64_t pages,
                  uint64_t now_ms)
{
    struct fq_ring *r = &fq->rings[ring];
    struct fq_entry *e = &r->entries[(r->head + r->count) % fq->size];
    e->pfn = pfn;
    e->pages = pages;
    e->counter = fq->started;
    r->count++;
    fq->queued++;
    pfn_set_add(&fq->queued_pfns, pfn);
    if (!fq->timer_armed) {
        fq->timer_armed = true;
        fq->timer_due_ms = now_ms + fq->timeout_ms;
    }
}

const struct fq_entry *iova_fq_done(const struct iova_fq *fq, unsigned ring)
{
    const struct fq_ring *r = &fq->rings[ring];
    if (!r->count || r->entries[r->head].counter >= fq->finished)
        return NULL;
    return &r->entries[r->head];
}

void iova_fq_pop(struct iova_fq *fq, unsigned ring)
{
    struct fq_ring *r = &fq->rings[ring];
    pfn_set_remove(&fq->queued_pfns, r->entries[r->head].pfn);
    r->head = (r->head + 1) % fq->size;
    r->count--;
    fq->queued--;
}

void iova_fq_flushed(struct iova_fq *fq)
{
    fq->started++;
    fq->finished++;
}

int iova_fq_check(const struct iova_fq *fq, char *msg, size_t msg_len)
{
    int r = pfn_set_check(&fq->queued_pfns, msg, msg_len);
    if (r)
        return r;
    const char *why = NULL;
    uint64_t queued = 0;
    for (unsigned i = 0; !why && i < fq->ncpus; i++) {
        const struct fq_ring *ring = &fq->rings[i];
        queued += ring->count;
        if (ring->count >= fq->size || ring->head >= fq->size)
            why = "a ring holds more entries than its slots allow (Q1)";
        uint64_t prev = 0;
        for (unsigned k = 0; !why && k < ring->count; k++) {
            const struct fq_entry *e = &ring->entries[(ring->head + k) % fq->size];
            if (!pfn_set_holds(&fq->queued_pfns, e->pfn))
                why = "a queued entry is missing from the set of queued pfns (Q1)";
            else if (e->counter < prev || e->counter > fq->started)
                why = "an entry's flush counter is out of order (Q2)";
            prev = e->counter;
        }
    }
    if (!why && (queued != fq->queued || fq->queued_pfns.count != fq->queued))
        why = "the flush queue's counts disagree (Q1)";
    else if (!why && fq->finished > fq->started)
        why = "more flushes finished than started (Q2)";
    if (why) {
        if (msg && msg_len)
            snprintf(msg, msg_len, "flush queue: %s", why);
        return IOVA_E_CORRUPT;
    }
    return 0;
}
