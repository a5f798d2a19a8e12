/*
 * pfn_set.c - a set of pfns: open addressing with linear probing, Fibonacci
 * hashing (pfns are dense, so their low bits alone would cluster), removal
 * by moving the later entries of a probe run back instead of tombstones.
 *
 * Invariants (pfn_set_check):
 *   S1  count is the number of slots that hold a member;
 *   S2  every member sits in its home slot or after it, with no free slot
 *       between the two (cyclically), so a lookup that stops at the first
 *       free slot finds it;
 *   S3  at most half the slots hold a member (pfn_set_reserve grows first).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iova_mem_internal.h"
#include "pfn_set.h"
#include "pow2.h"

static uint64_t home(const struct pfn_set *s, uint64_t pfn)
{
    uint64_t h = pfn * 0x9E3779B97F4A7C15ull;
    return (h ^ h >> 32) & s->mask;
}

/* The slot holding pfn, or the empty slot where it would go. */
static uint64_t slot_of(const struct pfn_set *s, uint64_t pfn)
{
    uint64_t i = home(s, pfn);
    while (s->slots[i] != PFN_SET_EMPTY && s->slots[i] != pfn)
        i = (i + 1) & s->mask;
    return i;
}

bool pfn_set_holds(const struct pfn_set *s, uint64_t pfn)
{
    return pfn != PFN_SET_EMPTY && s->slots && s->slots[slot_of(s, pfn)] == pfn;
}

int pfn_set_reserve(struct pfn_set *s, uint64_t more)
{
    uint64_t want = 2 * (s->count + more);
    if (s->slots && want <= s->mask + 1)
        return 0;
    uint64_t n = roundup_pow_of_two(want < 16 ? 16 : want);
    if (n > SIZE_MAX / sizeof(uint64_t) || (s->slots && n <= s->mask + 1))
        return IOVA_E_NOMEM;
    struct pfn_set grown = { iova_mem_malloc(n * sizeof(uint64_t)), n - 1, 0 };
    if (!grown.slots)
        return IOVA_E_NOMEM;
    memset(grown.slots, 0xFF, n * sizeof(uint64_t));             /* all PFN_SET_EMPTY */
    for (uint64_t i = 0; i < pfn_set_slots(s); i++)
        if (s->slots[i] != PFN_SET_EMPTY) {
            grown.slots[slot_of(&grown, s->slots[i])] = s->slots[i];
            grown.count++;
        }
    free(s->slots);
    *s = grown;
    return 0;
}

void pfn_set_add(struct pfn_set *s, uint64_t pfn)
{
    s->slots[slot_of(s, pfn)] = pfn;
    s->count++;
}

bool pfn_set_remove(struct pfn_set *s, uint64_t pfn)
{
    if (!s->slots)
        return false;
    uint64_t *t = s->slots, m = s->mask;
    uint64_t hole = slot_of(s, pfn);
    if (t[hole] != pfn)
        return false;
    for (uint64_t j = (hole + 1) & m; t[j] != PFN_SET_EMPTY; j = (j + 1) & m) {
        uint64_t h = home(s, t[j]);
        /* t[j] stays unless the hole lies cyclically in [h, j) */
        bool stays = hole < j ? hole < h && h <= j : hole < h || h <= j;
        if (!stays) {
            t[hole] = t[j];
            hole = j;
        }
    }
    t[hole] = PFN_SET_EMPTY;
    s->count--;
    return true;
}

void pfn_set_clear(struct pfn_set *s)
{
    if (s->slots)
        memset(s->slots, 0xFF, pfn_set_slots(s) * sizeof(uint64_t));
    s->count = 0;
}

void pfn_set_release(struct pfn_set *s)
{
    free(s->slots);
    s->slots = NULL;
    s->mask = s->count = 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void pfn_set_sorted(const struct pfn_set *s, uint64_t *out)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < pfn_set_slots(s) && n < s->count; i++)
        if (s->slots[i] != PFN_SET_EMPTY)
            out[n++] = s->slots[i];
    qsort(out, n, sizeof(*out), cmp_u64);
}

int pfn_set_check(const struct pfn_set *s, char *msg, size_t msg_len)
{
    const char *why = NULL;
    uint64_t members = 0, bad = 0;
    for (uint64_t i = 0; !why && i < pfn_set_slots(s); i++) {
        uint64_t pfn = s->slots[i];
        if (pfn == PFN_SET_EMPTY)
            continue;
        members++;
        if (slot_of(s, pfn) != i) {
            why = "a member is not reachable from its home slot (S2)";
            bad = pfn;
        }
    }
    if (!why && members != s->count)
        why = "the count disagrees with the members (S1)";
    else if (!why && s->slots && 2 * s->count > s->mask + 1)
        why = "more than half the slots are taken (S3)";
    else if (!why && !s->slots && s->count)
        why = "an empty set counts members (S1)";
    if (why) {
        if (msg && msg_len)
            snprintf(msg, msg_len, "pfn set: %s (pfn %#llx)", why, (unsigned long long)bad);
        return IOVA_E_CORRUPT;
    }
    return 0;
}
