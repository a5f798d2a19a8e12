/*
 * pfn_set.h - a set of pfns (pfn_set.c): open addressing with linear
 * probing, kept at most half full so that a lookup is O(1). The cookie
 * keeps the ranges it handed out and the ranges it retired in such sets,
 * and its flush queue the ranges that wait in it.
 *
 * Not thread safe: the owner holds its lock around every call.
 */
#ifndef PYIOVA_PFN_SET_H
#define PYIOVA_PFN_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iova_errors.h"

/* Slots hold PFN_SET_EMPTY when free; that is the 6.12 anchor's pfn, which
 * no allocator hands out, so it is never a member. A set of all zeros is
 * empty and needs no init. */
struct pfn_set {
    uint64_t *slots;
    uint64_t mask;            /* slots - 1: their number is a power of two */
    uint64_t count;
};

#define PFN_SET_EMPTY UINT64_MAX

bool pfn_set_holds(const struct pfn_set *s, uint64_t pfn);
/* Room for `more` entries beyond the present ones; IOVA_E_NOMEM leaves the
 * set as it was. */
int pfn_set_reserve(struct pfn_set *s, uint64_t more);
/* pfn must not be in the set yet, and pfn_set_reserve must have made room. */
void pfn_set_add(struct pfn_set *s, uint64_t pfn);
bool pfn_set_remove(struct pfn_set *s, uint64_t pfn);
/* Every member goes; the room stays. */
void pfn_set_clear(struct pfn_set *s);
void pfn_set_release(struct pfn_set *s);
/* Copies the members to out in ascending order (out has room for
 * s->count): the same order however the set was built. */
void pfn_set_sorted(const struct pfn_set *s, uint64_t *out);
/* Validator: the count matches the members, and each member is reachable
 * from its home slot (no gap in its probe run). 0, or IOVA_E_CORRUPT with a
 * description in msg. */
int pfn_set_check(const struct pfn_set *s, char *msg, size_t msg_len);

/* Iterating: for (uint64_t i = 0; i < pfn_set_slots(s); i++) if
 * (s->slots[i] != PFN_SET_EMPTY) ... */
static inline uint64_t pfn_set_slots(const struct pfn_set *s)
{
    return s->slots ? s->mask + 1 : 0;
}

#endif
