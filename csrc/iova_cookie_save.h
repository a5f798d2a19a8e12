/*
 * iova_cookie_save.h - a cookie (its allocator's own state and its flush
 * queue) as a flat array of uint64_t words, and back: pickle, deepcopy and
 * checkpoints of long simulations.
 *
 * The iova_domain an IOVA or RESET_WHEN_EMPTY cookie runs on is not part of
 * the words: it is saved with iova_save and restored first, then lent to
 * iova_cookie_restore, exactly as it is lent to iova_cookie_new.
 */
#ifndef PYIOVA_IOVA_COOKIE_SAVE_H
#define PYIOVA_IOVA_COOKIE_SAVE_H

#include <stdint.h>
#include <stddef.h>

struct iova_domain;
struct iova_cookie;

/* Writes the cookie as words; returns how many are needed (copying only
 * when cap suffices), or IOVA_E_CLOSED when its iova_domain was closed. */
int64_t iova_cookie_save(struct iova_cookie *c, uint64_t *out, uint64_t cap);
/* A new cookie from iova_cookie_save's words, on `iovad` (NULL for MSI and
 * WRAPAROUND; for the other types, the restored copy of the domain it ran
 * on). It then makes the same allocations as the original. NULL with
 * *err = IOVA_E_STATE if the words are not a consistent cookie for that
 * domain, IOVA_E_NOMEM if memory ran out; `iovad` is then left as it was. */
struct iova_cookie *iova_cookie_restore(const uint64_t *in, uint64_t n,
                                        struct iova_domain *iovad, int *err);

#endif
