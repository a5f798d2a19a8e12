/*
 * test_core.c - a C driver for the IOVA core, meant to run under valgrind
 * memcheck and under ASan+UBSan with LeakSanitizer (tools/leakcheck.sh).
 *
 * It drives every public entry point of iova.h, iova_cookie.h and iova_mem.h,
 * and the save and restore of cookies, page tables and IOTLBs,
 * through ordinary use, through every allocation failure the injector can
 * produce, and through hostile saved states, then destroys everything it
 * made. Its own assertions check results and check() after each phase; the
 * tools around it look for what the assertions cannot: leaks, reads of
 * uninitialised or freed memory, overflows, undefined behaviour.
 *
 * Deterministic (a fixed xorshift seed) so that a report reproduces.
 * Exit status 0 when every assertion held.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io_pgtable.h"
#include "iotlb.h"
#include "iova.h"
#include "iova_cookie.h"
#include "iova_cookie_save.h"
#include "iova_internal.h"   /* the validator_sees_* tests reach inside */
#include "iova_cookie_internal.h"
#include "iova_mem.h"
#include "sim_engine.h"
#include "sim_gen.h"

static int failures;

#define CHECK(cond)                                                             \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                     \
            failures++;                                                         \
        }                                                                       \
    } while (0)

#define CHECK_EQ(a, b)                                                          \
    do {                                                                        \
        long long _a = (long long)(a), _b = (long long)(b);                     \
        if (_a != _b) {                                                         \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %lld, %s == %lld\n", \
                    __FILE__, __LINE__, #a, _a, #b, _b);                        \
            failures++;                                                         \
        }                                                                       \
    } while (0)

#define TOP32 0xFFFFFull   /* the last 4K pfn below 4 GiB */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static uint64_t rnd_below(uint64_t n)
{
    return n ? rnd() % n : 0;
}

static void check_domain(struct iova_domain *d, const char *where)
{
    char msg[256];
    int r = iova_check(d, msg, sizeof(msg));
    if (r) {
        fprintf(stderr, "%s: iova_check = %d: %s\n", where, r, msg);
        failures++;
    }
}

static void check_cookie(struct iova_cookie *c, const char *where)
{
    char msg[256];
    int r = iova_cookie_check(c, msg, sizeof(msg));
    if (r) {
        fprintf(stderr, "%s: iova_cookie_check = %d: %s\n", where, r, msg);
        failures++;
    }
}

static struct iova_domain *new_domain(int kernel, unsigned ncpus)
{
    int err = 0;
    struct iova_domain *d = iova_domain_new(4096, 1, ncpus, kernel, 0, &err);
    CHECK(d != NULL);
    CHECK_EQ(err, 0);
    return d;
}

/* ---- the domain: tree, batches, rcache, clock ---------------------------- */

struct live {
    uint64_t pfn, size;
};

/* Churns a domain through every kind of call; leaves ranges and cached pfns
 * behind on purpose so that close/destroy has something to release. */
static void churn(struct iova_domain *d, unsigned ncpus, int rounds)
{
    struct live *live = calloc((size_t)rounds, sizeof(*live));
    size_t n = 0;
    for (int i = 0; i < rounds; i++) {
        uint64_t r = rnd_below(100);
        if (n && r < 40) {
            size_t k = rnd_below(n);
            struct live l = live[k];
            live[k] = live[--n];
            int e = rnd() & 1 ? iova_rcache_free_fast(d, l.pfn, l.size, (int)rnd_below(ncpus))
                              : iova_free(d, l.pfn);
            CHECK_EQ(e, 0);
        } else if (r < 75) {
            uint64_t size = 1 + rnd_below(40);
            int64_t p = iova_rcache_alloc_fast(d, size, TOP32 >> rnd_below(4), 1,
                                               (int)rnd_below(ncpus));
            CHECK(p >= 0);
            if (p > 0)
                live[n++] = (struct live){ (uint64_t)p, size };
        } else if (r < 95) {
            uint64_t size = 1 + rnd_below(300);
            int64_t p = iova_alloc(d, size, rnd() & 1 ? TOP32 : (1ull << 40), (int)(rnd() & 1));
            CHECK(p >= 0 || p == IOVA_E_NOSPC);
            if (p >= 0)
                live[n++] = (struct live){ (uint64_t)p, size };
        } else if (r < 97) {
            CHECK_EQ(iova_rcache_flush_cpu(d, (int)rnd_below(ncpus)), 0);
        } else if (r < 98) {
            CHECK(iova_rcache_advance(d, rnd_below(150)) >= 0);
        } else {
            CHECK(iova_rcache_run_pending_work(d) >= 0);
        }
    }
    free(live);
}

static void exercise_domain(int kernel)
{
    const unsigned ncpus = 3;
    struct iova_domain *d = new_domain(kernel, ncpus);
    if (!d)
        return;
    CHECK_EQ(iova_set_search_mode(d, IOVA_SEARCH_LINEAR), 0);
    CHECK_EQ(iova_set_search_mode(d, 7), IOVA_E_MODE);
    CHECK_EQ(iova_set_search_mode(d, IOVA_SEARCH_AUGMENTED), 0);

    /* the tree: plain alloc / find / free / reserve */
    int64_t a = iova_alloc(d, 5, TOP32, 1);
    int64_t b = iova_alloc(d, 1, TOP32, 0);
    CHECK(a > 0 && b > 0);
    uint64_t lo_hi[2] = { 0, 0 };
    CHECK_EQ(iova_find(d, (uint64_t)a + 2, lo_hi), 1);
    CHECK_EQ(lo_hi[0], a);
    CHECK_EQ(iova_find(d, 3, lo_hi), 0);
    CHECK_EQ(iova_reserve(d, 0x100, 0x1FF, lo_hi), 0);
    CHECK_EQ(iova_reserve(d, 0x180, 0x2FF, lo_hi), 0);
    CHECK_EQ(iova_reserve(d, 0x20, 0x10, lo_hi), IOVA_E_RANGE);
    CHECK_EQ(iova_free(d, (uint64_t)b), 0);
    CHECK_EQ(iova_free(d, (uint64_t)b), IOVA_E_NOTFOUND);
    CHECK_EQ(iova_alloc(d, 0, TOP32, 0), IOVA_E_SIZE);
    CHECK_EQ(iova_alloc(d, 1, 0, 0), IOVA_E_LIMIT);
    CHECK_EQ(iova_free(d, UINT64_MAX), IOVA_E_PFN);

    /* batches, with a bad size in the middle and a bad pfn in the middle */
    uint64_t sizes[64], out[64], bad = 0;
    for (int i = 0; i < 64; i++)
        sizes[i] = 1 + (uint64_t)i % 9;
    CHECK_EQ(iova_alloc_many(d, sizes, out, 64, TOP32, 1, &bad), 64);
    sizes[7] = 0;
    CHECK_EQ(iova_alloc_many(d, sizes, out + 0, 64, TOP32, 1, &bad), IOVA_E_SIZE);
    CHECK_EQ(bad, 7);
    int err = 0;
    uint64_t pfns[3] = { out[0], 3, out[1] };
    CHECK_EQ(iova_free_many(d, pfns, 3, &err), 1);
    CHECK_EQ(err, IOVA_E_NOTFOUND);
    sizes[7] = 2;
    CHECK(iova_rcache_alloc_fast_many(d, sizes, out, 64, TOP32, 1, 1, &bad) > 0);
    CHECK_EQ(iova_rcache_free_fast_many(d, out, sizes, 64, 1, &err), 64);
    CHECK_EQ(err, 0);
    check_domain(d, "after batches");

    /* enough fast frees on one cpu and class to fill both magazines and
     * push several into the depot, so trim work has something to trim;
     * where the depot holds 32 (6.1, 4.10), enough to fill it and spill */
    const int MANY = kernel == IOVA_KERNEL_6_12 ? 127 * 8 : 128 * 36;
    uint64_t *many = calloc(MANY, sizeof(uint64_t));
    for (int i = 0; i < MANY; i++) {
        int64_t p = iova_alloc(d, 2, TOP32, 1);
        CHECK(p > 0);
        many[i] = p > 0 ? (uint64_t)p : 0;
    }
    for (int i = 0; i < MANY; i++)
        if (many[i])
            CHECK_EQ(iova_rcache_free_fast(d, many[i], 2, 0), 0);
    free(many);
    uint32_t loaded[6 * ncpus], prev[6 * ncpus], pending[6];
    uint64_t depot[6];
    CHECK_EQ(iova_rcache_stats(d, loaded, prev, depot, pending), 0);
    CHECK(depot[1] > 0);
    if (kernel != IOVA_KERNEL_6_12) {
        CHECK_EQ(depot[1], IOVA_DEPOT_MAX_MAGS);
        CHECK_EQ(pending[1], 0);
    }
    CHECK(iova_rcache_pfns(d, NULL, 0) > 0);
    /* trim work under the caller's control: due times, a run now, the clock */
    uint64_t due[6];
    if (kernel == IOVA_KERNEL_6_12)
        CHECK(pending[1]);                              /* the depot push armed it */
    int npending = iova_rcache_trim_due(d, due);
    CHECK(npending >= 0);
    int armed = 0;
    for (int k = 0; k < 6; k++)
        armed += pending[k] != 0;
    CHECK_EQ(npending, armed);
    CHECK_EQ(iova_rcache_trim_due(d, NULL), npending);        /* the count alone */
    if (kernel == IOVA_KERNEL_6_12 && pending[1]) {
        CHECK(due[1] != UINT64_MAX);
        CHECK_EQ(iova_rcache_set_clock(d, due[1] + 7), 0);
        CHECK_EQ(iova_rcache_set_clock(d, 1), 0);              /* never back */
        CHECK_EQ(iova_rcache_run_trim(d, 1), 1);
        uint64_t again[6];
        if (iova_rcache_trim_due(d, again) > 0 && again[1] != UINT64_MAX)
            CHECK_EQ(again[1], due[1] + 7 + IOVA_DEPOT_DELAY_MS);   /* re-armed from now */
    } else {
        CHECK_EQ(iova_rcache_run_trim(d, 1), 0);               /* nothing pending */
    }
    CHECK_EQ(iova_rcache_run_trim(d, 6), IOVA_E_SIZECLASS);
    check_domain(d, "after a trim run by hand");
    CHECK(iova_rcache_run_pending_work(d) >= 0);
    CHECK(iova_rcache_advance(d, 1000) >= 0);
    CHECK(iova_rcache_advance(d, UINT64_MAX) >= 0);          /* saturates, no wrap */
    check_domain(d, "after trim work");

    churn(d, ncpus, 6000);
    check_domain(d, "after churn");

    struct iova_state st;
    CHECK_EQ(iova_get_state(d, &st), 0);
    int64_t nr = iova_ranges(d, NULL, 0);
    CHECK(nr >= 0);
    uint64_t *rs = calloc(2 * (size_t)nr + 2, sizeof(uint64_t));
    CHECK_EQ(iova_ranges(d, rs, (uint64_t)nr), nr);
    CHECK_EQ(iova_ranges(d, rs, 1), nr);             /* a short buffer is fine */
    free(rs);

    /* save, restore, and the copy saves to the same words */
    int64_t words = iova_save(d, NULL, 0);
    CHECK(words > 0);
    uint64_t *saved = malloc((size_t)words * sizeof(uint64_t));
    CHECK_EQ(iova_save(d, saved, (uint64_t)words), words);
    struct iova_domain *copy = iova_restore(saved, (uint64_t)words, &err);
    CHECK(copy != NULL);
    if (copy) {
        check_domain(copy, "restored copy");
        uint64_t *again = malloc((size_t)words * sizeof(uint64_t));
        CHECK_EQ(iova_save(copy, again, (uint64_t)words), words);
        CHECK(memcmp(saved, again, (size_t)words * sizeof(uint64_t)) == 0);
        free(again);
        CHECK_EQ(iova_rcache_alloc_fast(copy, 3, TOP32, 1, 0),
                 iova_rcache_alloc_fast(d, 3, TOP32, 1, 0));
        iova_domain_destroy(copy);                  /* never closed: destroy does it */
    }
    free(saved);

    /* the reset drops the cached ranges and keeps every range still held,
     * the reserved window among them */
    CHECK_EQ(iova_rcache_flush_all(d), 0);
    CHECK_EQ(iova_rcache_pfns(d, NULL, 0), 0);
    for (int i = 0; i < 20; i++) {
        int64_t p = iova_rcache_alloc_fast(d, 1 + (uint64_t)i % 3, TOP32, 1, i % (int)ncpus);
        CHECK(p > 0);
        CHECK_EQ(iova_rcache_free_fast(d, (uint64_t)p, 1 + (uint64_t)i % 3, i % (int)ncpus),
                 0);
    }
    int64_t held = iova_ranges(d, NULL, 0), cached = iova_rcache_pfns(d, NULL, 0);
    CHECK(cached > 0);
    CHECK_EQ(iova_domain_reset(d), 0);
    CHECK_EQ(iova_rcache_pfns(d, NULL, 0), 0);
    CHECK_EQ(iova_ranges(d, NULL, 0), held - cached);
    CHECK_EQ(iova_find(d, 0x200, lo_hi), 1);
    churn(d, ncpus, 500);
    check_domain(d, "after reset");

    /* close with ranges and cached pfns still held, then every call fails */
    CHECK_EQ(iova_domain_close(d), 0);
    CHECK_EQ(iova_domain_close(d), IOVA_E_CLOSED);
    CHECK_EQ(iova_alloc(d, 1, TOP32, 0), IOVA_E_CLOSED);
    CHECK_EQ(iova_rcache_alloc_fast(d, 1, TOP32, 1, 0), IOVA_E_CLOSED);
    CHECK_EQ(iova_rcache_free_fast(d, 5, 1, 0), IOVA_E_CLOSED);
    CHECK_EQ(iova_free(d, 5), IOVA_E_CLOSED);
    CHECK_EQ(iova_find(d, 5, lo_hi), IOVA_E_CLOSED);
    CHECK_EQ(iova_reserve(d, 5, 6, lo_hi), IOVA_E_CLOSED);
    CHECK_EQ(iova_rcache_flush_cpu(d, 0), IOVA_E_CLOSED);
    CHECK_EQ(iova_rcache_flush_depot(d), IOVA_E_CLOSED);
    CHECK_EQ(iova_rcache_flush_all(d), IOVA_E_CLOSED);
    CHECK_EQ(iova_rcache_run_pending_work(d), IOVA_E_CLOSED);
    CHECK_EQ(iova_rcache_advance(d, 5), IOVA_E_CLOSED);
    CHECK_EQ(iova_rcache_trim_due(d, due), IOVA_E_CLOSED);
    CHECK_EQ(iova_rcache_run_trim(d, 0), IOVA_E_CLOSED);
    CHECK_EQ(iova_rcache_set_clock(d, 5), IOVA_E_CLOSED);
    CHECK_EQ(iova_save(d, NULL, 0), IOVA_E_CLOSED);
    CHECK_EQ(iova_ranges(d, NULL, 0), IOVA_E_CLOSED);
    CHECK_EQ(iova_rcache_pfns(d, NULL, 0), IOVA_E_CLOSED);
    CHECK_EQ(iova_rcache_stats(d, loaded, prev, depot, pending), IOVA_E_CLOSED);
    CHECK_EQ(iova_get_state(d, &st), IOVA_E_CLOSED);
    CHECK_EQ(iova_check(d, NULL, 0), IOVA_E_CLOSED);
    CHECK_EQ(iova_domain_reset(d), IOVA_E_CLOSED);
    CHECK_EQ(iova_set_search_mode(d, IOVA_SEARCH_LINEAR), IOVA_E_CLOSED);
    CHECK_EQ(iova_alloc_many(d, sizes, out, 4, TOP32, 0, &bad), IOVA_E_CLOSED);
    CHECK_EQ(iova_free_many(d, out, 4, &err), 0);
    CHECK_EQ(err, IOVA_E_CLOSED);
    iova_domain_destroy(d);

    /* NULL is a closed domain everywhere, never a crash */
    CHECK_EQ(iova_alloc(NULL, 1, TOP32, 0), IOVA_E_CLOSED);
    CHECK_EQ(iova_domain_close(NULL), IOVA_E_CLOSED);
    iova_domain_destroy(NULL);
}

static void bad_domain_parameters(void)
{
    int err = 0;
    CHECK(iova_domain_new(3, 1, 1, IOVA_KERNEL_6_12, 0, &err) == NULL);
    CHECK_EQ(err, IOVA_E_GRANULE);
    CHECK(iova_domain_new(1 << 17, 1, 1, IOVA_KERNEL_6_12, 0, &err) == NULL);
    CHECK_EQ(err, IOVA_E_GRANULE);
    CHECK_EQ(iova_granule_check(1), IOVA_E_GRANULE);
    CHECK_EQ(iova_granule_check(2), 0);
    CHECK_EQ(iova_granule_check(65536), 0);
    CHECK_EQ(iova_granule_check(4096 + 1), IOVA_E_GRANULE);
    CHECK(iova_domain_new(4096, 1ull << 60, 1, IOVA_KERNEL_6_12, 0, &err) == NULL);
    CHECK_EQ(err, IOVA_E_START);
    CHECK(iova_domain_new(4096, 1, 0, IOVA_KERNEL_6_12, 0, &err) == NULL);
    CHECK_EQ(err, IOVA_E_NCPUS);
    CHECK(iova_domain_new(4096, 1, IOVA_MAX_CPUS + 1, IOVA_KERNEL_6_12, 0, &err) == NULL);
    CHECK_EQ(err, IOVA_E_NCPUS);
    CHECK(iova_domain_new(4096, 1, 1, 999, 0, &err) == NULL);
    CHECK_EQ(err, IOVA_E_KERNEL);
    CHECK(iova_domain_new(4096, 1, 1, IOVA_KERNEL_6_12, 5, &err) == NULL);
    CHECK_EQ(err, IOVA_E_DMA32);
    CHECK(iova_domain_new(4096, 1, 1, IOVA_KERNEL_4_10, UINT64_MAX, &err) == NULL);
    CHECK_EQ(err, IOVA_E_DMA32);
    /* the largest domain the API allows: every per-CPU cache of 1024 CPUs */
    struct iova_domain *big = iova_domain_new(65536, 0, IOVA_MAX_CPUS, IOVA_KERNEL_6_12, 0, &err);
    CHECK(big != NULL);
    if (big) {
        CHECK(iova_rcache_alloc_fast(big, 1, 0xFFFF, 1, IOVA_MAX_CPUS - 1) > 0);
        iova_domain_destroy(big);
    }
}

/* ---- hostile saved states ------------------------------------------------ */

/* Uses a domain whose parameters are unknown (a restored hostile state may
 * have any granule, start or CPU count): errors are fine, damage is not. */
static void poke(struct iova_domain *d)
{
    struct iova_state st;
    if (iova_get_state(d, &st) != 0)
        return;
    uint64_t top = UINT64_MAX >> st.shift;
    int64_t held[32];
    for (int i = 0; i < 32; i++) {
        uint64_t size = 1 + rnd_below(40);
        uint64_t limit = st.start_pfn + rnd_below(top - st.start_pfn + 1);
        int cpu = (int)rnd_below(st.ncpus);
        held[i] = i % 2 ? iova_rcache_alloc_fast(d, size, limit, 1, cpu)
                        : iova_alloc(d, size, limit, (int)(rnd() & 1));
        if (held[i] > 0 && i % 4 == 1)
            (void)iova_rcache_free_fast(d, (uint64_t)held[i], size, cpu);
        else if (held[i] > 0 && i % 4 == 2)
            (void)iova_free(d, (uint64_t)held[i]);
    }
    (void)iova_rcache_advance(d, 200);
    (void)iova_rcache_flush_all(d);
}

/* The index of the first word after the ranges that equals v. */
static uint64_t mag_word(const uint64_t *w, uint64_t n, uint64_t v)
{
    for (uint64_t i = 14 + 3 * w[13]; i < n; i++)
        if (w[i] == v)
            return i;
    return n;
}

/* A save whose magazine names a pfn free_fast could never have cached
 * there: restore refuses it (and frees all it built: leakcheck.sh). */
static void forged_magazines(void)
{
    struct iova_domain *d = iova_domain_new(4096, 0, 1, IOVA_KERNEL_6_12, 0, NULL);
    uint64_t lo_hi[2];
    CHECK_EQ(iova_reserve(d, 0, 0, lo_hi), 0);
    int64_t big = iova_alloc(d, 32, TOP32, 1);
    int64_t two = iova_rcache_alloc_fast(d, 2, TOP32, 1, 0);
    CHECK(big > 0 && two > 0);
    CHECK_EQ(iova_rcache_free_fast(d, (uint64_t)big, 32, 0), 0);     /* class 5 */
    CHECK_EQ(iova_rcache_free_fast(d, (uint64_t)two, 2, 0), 0);      /* class 1 */
    int64_t n = iova_save(d, NULL, 0);
    uint64_t *w = malloc((size_t)n * sizeof(uint64_t));
    CHECK_EQ(iova_save(d, w, (uint64_t)n), n);
    uint64_t at = mag_word(w, (uint64_t)n, (uint64_t)two);
    CHECK(at < (uint64_t)n);
    int err = 0;
    struct iova_domain *r = iova_restore(w, (uint64_t)n, &err);
    CHECK(r != NULL);                                         /* as saved: fine */
    iova_domain_destroy(r);
    const uint64_t forged[] = {
        (uint64_t)two + 1,        /* inside the range, not its start */
        (uint64_t)big,            /* a cached range of class 5 in a class-1 magazine */
        0,                        /* the fast path's "nothing" */
    };
    for (unsigned i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
        uint64_t keep = w[at];
        w[at] = forged[i];
        err = 0;
        r = iova_restore(w, (uint64_t)n, &err);
        CHECK(r == NULL);
        CHECK_EQ(err, IOVA_E_STATE);
        iova_domain_destroy(r);
        w[at] = keep;
    }
    free(w);
    iova_domain_destroy(d);
}

static void hostile_restores(void)
{
    struct iova_domain *d = new_domain(IOVA_KERNEL_6_12, 2);
    if (!d)
        return;
    churn(d, 2, 3000);
    int64_t words = iova_save(d, NULL, 0);
    uint64_t *good = malloc((size_t)words * sizeof(uint64_t));
    CHECK_EQ(iova_save(d, good, (uint64_t)words), words);
    uint64_t *w = malloc((size_t)words * sizeof(uint64_t));
    int accepted = 0;
    for (int trial = 0; trial < 1500; trial++) {
        memcpy(w, good, (size_t)words * sizeof(uint64_t));
        uint64_t n = (uint64_t)words;
        int edits = 1 + (int)rnd_below(3);
        for (int e = 0; e < edits; e++) {
            uint64_t i = rnd_below(n);
            switch (rnd_below(6)) {
            case 0: w[i] ^= 1ull << rnd_below(64); break;
            case 1: w[i] = rnd(); break;
            case 2: w[i] += rnd_below(3) - 1; break;
            case 3: w[i] = 0; break;
            case 4: w[i] = UINT64_MAX; break;
            default: n = rnd_below(n + 1); break;      /* truncated */
            }
        }
        int err = 0;
        struct iova_domain *r = iova_restore(w, n, &err);
        if (r) {
            accepted++;
            check_domain(r, "accepted hostile restore");
            poke(r);
            check_domain(r, "accepted hostile restore, after use");
            iova_domain_destroy(r);
        } else {
            CHECK(err == IOVA_E_STATE || err == IOVA_E_NOMEM);
        }
    }
    CHECK(accepted > 0);          /* some edits (the clock, say) are harmless */
    int err = 0;
    CHECK(iova_restore(NULL, 5, &err) == NULL);
    CHECK_EQ(err, IOVA_E_STATE);
    free(w);
    free(good);
    iova_domain_destroy(d);
    forged_magazines();
}

/* ---- cookies ------------------------------------------------------------- */

/* Words of a save call that sizes first, then copies; NULL if it failed. */
#define SAVE_WORDS(save, obj, n_out)                                            \
    ({                                                                          \
        int64_t _n = save(obj, NULL, 0);                                        \
        uint64_t *_w = _n > 0 ? malloc((size_t)_n * sizeof(uint64_t)) : NULL;   \
        CHECK(_w != NULL);                                                      \
        if (_w && save(obj, _w, (uint64_t)_n) != _n) {                          \
            CHECK(!"the state changed between two saves");                     \
            free(_w);                                                           \
            _w = NULL;                                                          \
        }                                                                       \
        *(n_out) = _w ? (uint64_t)_n : 0;                                       \
        _w;                                                                     \
    })

static struct iova_domain *copy_domain(const uint64_t *w, uint64_t n)
{
    int err = 0;
    struct iova_domain *d = iova_restore(w, n, &err);
    CHECK(d != NULL);
    return d;
}

/* A hostile restore of cookie words on a fresh copy of the domain (dw, dn;
 * dn 0 for the types without one): refused with the domain left exactly
 * as it was, or accepted, sound, and usable. Returns whether refused. */
static bool hostile_cookie_restore(const uint64_t *w, uint64_t n, const uint64_t *dw,
                                   uint64_t dn)
{
    struct iova_domain *d = dn ? copy_domain(dw, dn) : NULL;
    if (dn && !d)
        return true;
    int err = 0;
    struct iova_cookie *c = iova_cookie_restore(w, n, d, &err);
    bool refused = c == NULL;
    if (refused) {
        CHECK(err == IOVA_E_STATE);
        if (d) {
            uint64_t m;
            uint64_t *after = SAVE_WORDS(iova_save, d, &m);
            CHECK(after && m == dn && memcmp(after, dw, (size_t)m * sizeof(uint64_t)) == 0);
            free(after);
        }
    } else {
        check_cookie(c, "accepted hostile cookie restore");
        uint32_t ev;
        for (int i = 0; i < 20; i++) {
            int64_t p = iova_cookie_alloc(c, 1 + (uint64_t)i % 3, TOP32, 0, 0, &ev);
            if (p >= 0 && i % 2)
                iova_cookie_free(c, (uint64_t)p, 1 + (uint64_t)i % 3, 0, &ev);
        }
        check_cookie(c, "accepted hostile cookie restore, after use");
        iova_cookie_destroy(c);
    }
    if (d)
        iova_domain_destroy(d);
    return refused;
}

/* Saves cookie c (and d, the domain it runs on, or NULL), restores both,
 * checks that the copy saves to the very same words, and that truncated,
 * outdated or damaged words are refused without a trace. Returns the
 * copy, on *dcopy (the caller destroys both), to be driven on. */
static struct iova_cookie *cookie_copy(struct iova_cookie *c, struct iova_domain *d,
                                       struct iova_domain **dcopy, const char *where)
{
    uint64_t n = 0, dn = 0;
    uint64_t *w = SAVE_WORDS(iova_cookie_save, c, &n);
    uint64_t *dw = d ? SAVE_WORDS(iova_save, d, &dn) : NULL;
    *dcopy = NULL;
    if (!w || (d && !dw)) {
        free(w);
        free(dw);
        return NULL;
    }
    *dcopy = d ? copy_domain(dw, dn) : NULL;
    int err = -1;
    struct iova_cookie *copy = iova_cookie_restore(w, n, *dcopy, &err);
    CHECK(copy != NULL);
    CHECK_EQ(err, 0);
    if (copy) {
        check_cookie(copy, where);
        uint64_t m = 0;
        uint64_t *again = SAVE_WORDS(iova_cookie_save, copy, &m);
        CHECK(again && m == n && memcmp(again, w, (size_t)n * sizeof(uint64_t)) == 0);
        free(again);
    }

    uint64_t *bad = malloc((size_t)(n + 1) * sizeof(uint64_t));
    memcpy(bad, w, (size_t)n * sizeof(uint64_t));
    CHECK(hostile_cookie_restore(bad, n - 1, dw, dn));          /* truncated */
    bad[n] = 0;
    CHECK(hostile_cookie_restore(bad, n + 1, dw, dn));          /* a word too many */
    bad[1] = 1;                                                 /* format version 1 */
    CHECK(hostile_cookie_restore(bad, n, dw, dn));
    /* the domain types need their domain; the others take none */
    if (d) {
        err = 0;
        CHECK(iova_cookie_restore(w, n, NULL, &err) == NULL);
        CHECK_EQ(err, IOVA_E_STATE);
    } else {
        struct iova_domain *other = new_domain(IOVA_KERNEL_6_12, 1);
        CHECK(iova_cookie_restore(w, n, other, &err) == NULL);
        CHECK_EQ(err, IOVA_E_STATE);
        iova_domain_destroy(other);
    }
    /* words nudged by one or replaced, one to three at a time: many of
     * them still look plausible, so they reach the consistency checks */
    int refusals = 0;
    for (int t = 0; t < 150; t++) {
        memcpy(bad, w, (size_t)n * sizeof(uint64_t));
        for (int k = 0, m = 1 + (int)rnd_below(3); k < m; k++) {
            uint64_t i = 2 + rnd_below(n - 2);                 /* past magic and version */
            uint64_t how = rnd_below(4);
            bad[i] = how == 0 ? bad[i] + 1 : how == 1 ? bad[i] - 1
                   : how == 2 ? bad[rnd_below(n)] : rnd();
        }
        refusals += hostile_cookie_restore(bad, n, dw, dn);
    }
    CHECK(refusals > 0);
    free(bad);
    free(w);
    free(dw);
    return copy;
}

/* Destroys a copy made by cookie_copy. */
static void drop_copy(struct iova_cookie *copy, struct iova_domain *dcopy)
{
    iova_cookie_destroy(copy);
    if (dcopy)
        iova_domain_destroy(dcopy);
}

static void exercise_cookie_iova(int kernel)
{
    struct iova_domain *d = new_domain(kernel, 2);
    int err = 0;
    struct iova_cookie *c = iova_cookie_new(IOVA_COOKIE_IOVA, d, 0, 0, 0, &err);
    CHECK(c != NULL);
    if (!c) {
        iova_domain_destroy(d);
        return;
    }
    uint32_t ev = 0;
    struct iova_cookie_stats st;
    int64_t p[600];
    for (int i = 0; i < 600; i++) {
        p[i] = iova_cookie_alloc(c, 1 + (uint64_t)i % 4, 1ull << 36, IOVA_COOKIE_TRY_32BIT,
                                 i % 2, &ev);
        CHECK(p[i] > 0);
    }
    for (int i = 0; i < 300; i++)
        CHECK_EQ(iova_cookie_free(c, (uint64_t)p[i], 1 + (uint64_t)i % 4, i % 2, &ev), 0);
    CHECK_EQ(iova_cookie_free(c, 12345, 1, 0, &ev), IOVA_E_NOTFOUND);
    /* a reserved region is a range of the domain, but not the cookie's */
    uint64_t lo_hi[2];
    CHECK_EQ(iova_reserve(d, 0x80000, 0x80003, lo_hi), 0);
    CHECK_EQ(iova_cookie_free(c, 0x80000, 4, 0, &ev), IOVA_E_NOT_LIVE);
    if (kernel == IOVA_KERNEL_4_10) {
        /* the tree path frees whole ranges, of the size handed out */
        CHECK_EQ(iova_cookie_free(c, (uint64_t)p[300], 2, 0, &ev), IOVA_E_FREE_SIZE);
    }
    if (kernel != IOVA_KERNEL_4_10) {
        CHECK_EQ(iova_cookie_fq_init(c, 3, 16, 10), IOVA_E_CPU);     /* 2 CPUs */
        CHECK_EQ(iova_cookie_fq_init(c, 2, 0, 10), IOVA_E_GEOMETRY);
        CHECK_EQ(iova_cookie_fq_init(c, 2, 16, 10), 0);
        /* p[303] is 4 pages: one page names another class */
        CHECK_EQ(iova_cookie_free_lazy(c, (uint64_t)p[303], 1, 0, 0, &ev), IOVA_E_SIZECLASS);
        CHECK_EQ(iova_cookie_free_lazy(c, (uint64_t)p[303] + 1, 4, 0, 0, &ev),
                 IOVA_E_NOTSTART);
        CHECK_EQ(iova_cookie_free_lazy(c, (uint64_t)p[303], 4, 2, 0, &ev), IOVA_E_CPU);
        CHECK_EQ(iova_cookie_free_lazy(c, (uint64_t)p[0], 1, 0, 0, &ev), IOVA_E_CACHED);
        CHECK_EQ(iova_cookie_free_lazy(c, 0x80000, 4, 0, 0, &ev), IOVA_E_NOT_LIVE);
        CHECK_EQ(iova_cookie_fq_init(c, 2, 16, 10), IOVA_E_COOKIE);   /* only once */
        int queued = 0;
        for (int i = 300; i < 600; i++) {
            int r = iova_cookie_free_lazy(c, (uint64_t)p[i], 1 + (uint64_t)i % 4, i % 2,
                                          (uint64_t)i, &ev);
            if (r == IOVA_E_FQ_FULL) {
                CHECK(ev & IOVA_EV_FLUSH);
                CHECK_EQ(iova_cookie_fq_flushed(c, 0, 0), 0);
                r = iova_cookie_free_lazy(c, (uint64_t)p[i], 1 + (uint64_t)i % 4, i % 2,
                                          (uint64_t)i, &ev);
            }
            CHECK_EQ(r, 0);
            queued++;
            /* queued once: a second lazy free, or a strict one, is refused */
            CHECK_EQ(iova_cookie_free_lazy(c, (uint64_t)p[i], 1 + (uint64_t)i % 4, (i + 1) % 2,
                                           (uint64_t)i, &ev), IOVA_E_QUEUED);
            CHECK_EQ(iova_cookie_free(c, (uint64_t)p[i], 1 + (uint64_t)i % 4, 0, &ev),
                     IOVA_E_QUEUED);
            if (i == 450)
                CHECK_EQ(iova_cookie_fq_flushed(c, 1, 1), 0);      /* the timer */
        }
        CHECK(queued > 0);
        CHECK(iova_cookie_fq_due(c) != UINT64_MAX);
        check_cookie(c, "iova cookie with a flush queue");
        CHECK_EQ(iova_cookie_get_stats(c, &st), 0);
        CHECK(st.fq_queued > 0);
        CHECK_EQ(st.fq_lost, 0);
        /* a copy knows what is queued and what is not the cookie's */
        struct iova_domain *dc;
        struct iova_cookie *cc = cookie_copy(c, d, &dc, "copy of an iova cookie, fq");
        if (cc) {
            CHECK_EQ(iova_cookie_free_lazy(cc, (uint64_t)p[599], 1 + 599 % 4, 1, 600, &ev),
                     IOVA_E_QUEUED);
            CHECK_EQ(iova_cookie_free(cc, 0x80000, 4, 0, &ev), IOVA_E_NOT_LIVE);
            struct iova_cookie_stats st2;
            CHECK_EQ(iova_cookie_fq_flushed(c, 1, 0), 0);
            CHECK_EQ(iova_cookie_fq_flushed(cc, 1, 0), 0);
            CHECK_EQ(iova_cookie_get_stats(c, &st), 0);
            CHECK_EQ(iova_cookie_get_stats(cc, &st2), 0);
            CHECK(memcmp(&st, &st2, sizeof(st)) == 0);
            CHECK_EQ(st.fq_queued, 0);
            for (int i = 0; i < 50; i++) {
                uint64_t size = 1 + (uint64_t)i % 4;
                int64_t q = iova_cookie_alloc(c, size, TOP32, 0, i % 2, &ev);
                CHECK_EQ(iova_cookie_alloc(cc, size, TOP32, 0, i % 2, &ev), q);
                /* queued again, so that destroying the cookie frees entries */
                if (q > 0 && i % 3 == 0)
                    CHECK_EQ(iova_cookie_free_lazy(c, (uint64_t)q, size, i % 2, 700, &ev), 0);
            }
            drop_copy(cc, dc);
        }
        /* entries are left queued: destroying the cookie must free the rings */
    } else {
        CHECK_EQ(iova_cookie_fq_init(c, 2, 16, 10), IOVA_E_COOKIE);
        struct iova_domain *dc;
        struct iova_cookie *cc = cookie_copy(c, d, &dc, "copy of a 4.10 iova cookie");
        if (cc) {
            CHECK_EQ(iova_cookie_free(cc, 0x80000, 4, 0, &ev), IOVA_E_NOT_LIVE);
            CHECK_EQ(iova_cookie_free(cc, (uint64_t)p[301], 2, 0, &ev), 0);
            CHECK_EQ(iova_cookie_free(cc, (uint64_t)p[301], 2, 0, &ev), IOVA_E_NOTFOUND);
            drop_copy(cc, dc);
        }
    }
    CHECK_EQ(iova_cookie_get_stats(c, &st), 0);
    CHECK_EQ(iova_cookie_wrap_ranges(c, NULL, 0), IOVA_E_COOKIE);
    CHECK_EQ(iova_cookie_reserve(c, 1, 2), IOVA_E_COOKIE);
    CHECK_EQ(iova_cookie_set_tree_only(c, 1), IOVA_E_COOKIE);   /* ranges are live */
    check_cookie(c, "iova cookie");
    iova_cookie_destroy(c);
    check_domain(d, "domain after its cookie");

    /* the tree-only policy, on a fresh cookie over the same domain */
    c = iova_cookie_new(IOVA_COOKIE_IOVA, d, 0, 0, 0, &err);
    CHECK(c != NULL);
    if (c) {
        CHECK_EQ(iova_cookie_set_tree_only(c, 1), 0);
        for (int i = 0; i < 200; i++) {
            int64_t q = iova_cookie_alloc(c, 1 + (uint64_t)i % 5, TOP32, 0, 0, &ev);
            CHECK(q > 0);
            if (q > 0 && i % 5 == 2)          /* 3 pages: 4 is of its class, not its size */
                CHECK_EQ(iova_cookie_free(c, (uint64_t)q, 4, 0, &ev), IOVA_E_FREE_SIZE);
            if (q > 0 && i % 3)
                CHECK_EQ(iova_cookie_free(c, (uint64_t)q, 1 + (uint64_t)i % 5, 0, &ev), 0);
        }
        check_cookie(c, "tree-only cookie");
        iova_cookie_destroy(c);
    }
    iova_domain_destroy(d);
}

static void exercise_cookie_wrap(void)
{
    int err = 0;
    struct iova_cookie *c = iova_cookie_new(IOVA_COOKIE_WRAPAROUND, NULL, 4096, 1, 4000, &err);
    CHECK(c != NULL);
    if (!c)
        return;
    uint32_t ev = 0;
    int wraps = 0;
    int64_t held[8] = { 0 };
    /* a reserved window is never handed out, across wraps too */
    CHECK_EQ(iova_cookie_reserve(c, 0x300, 0x37F), 0);
    CHECK_EQ(iova_cookie_reserve(c, 0x380, 0x37F), IOVA_E_RANGE);
    CHECK_EQ(iova_cookie_reserve(c, 5000, 6000), 0);           /* outside: nothing to do */
    CHECK_EQ(iova_cookie_free(c, 0x300, 0x80, 0, &ev), IOVA_E_NOT_LIVE);
    for (int i = 0; i < 5000; i++) {
        int k = i % 8;
        if (held[k] > 0)
            CHECK_EQ(iova_cookie_free(c, (uint64_t)held[k], 1 + (uint64_t)k, 0, &ev), 0);
        held[k] = iova_cookie_alloc(c, 1 + (uint64_t)k, 4000, 0, 0, &ev);
        CHECK(held[k] > 0);
        CHECK(held[k] + k < 0x300 || held[k] > 0x37F);
        wraps += (ev & IOVA_EV_FLUSH) != 0;
    }
    CHECK(wraps > 0);
    CHECK_EQ(iova_cookie_reserve(c, (uint64_t)held[0], (uint64_t)held[0]), IOVA_E_OVERLAP);
    CHECK_EQ(iova_cookie_alloc(c, 1, 0, 0, 0, &ev), IOVA_E_LIMIT);
    CHECK_EQ(iova_cookie_alloc(c, 5000, 4000, 0, 0, &ev), IOVA_E_NOSPC);
    CHECK_EQ(iova_cookie_free(c, (uint64_t)held[3], 1, 0, &ev), IOVA_E_FREE_SIZE);
    int64_t n = iova_cookie_wrap_ranges(c, NULL, 0);
    CHECK(n > 0);
    uint64_t *out = calloc(3 * (size_t)n, sizeof(uint64_t));
    CHECK_EQ(iova_cookie_wrap_ranges(c, out, (uint64_t)n), n);
    free(out);
    CHECK_EQ(iova_cookie_fq_init(c, 1, 16, 10), IOVA_E_COOKIE);
    check_cookie(c, "wraparound");
    struct iova_domain *none;
    struct iova_cookie *cc = cookie_copy(c, NULL, &none, "copy of a wraparound cookie");
    if (cc) {
        for (int i = 0; i < 500; i++) {
            int64_t a = iova_cookie_alloc(c, 3, 4000, 0, 0, &ev);
            CHECK_EQ(iova_cookie_alloc(cc, 3, 4000, 0, 0, &ev), a);
            if (a > 0 && i % 2) {
                CHECK_EQ(iova_cookie_free(c, (uint64_t)a, 3, 0, &ev), 0);
                CHECK_EQ(iova_cookie_free(cc, (uint64_t)a, 3, 0, &ev), 0);
            }
        }
        drop_copy(cc, none);
    }
    iova_cookie_destroy(c);

    CHECK(iova_cookie_new(IOVA_COOKIE_WRAPAROUND, NULL, 3, 1, 10, &err) == NULL);
    CHECK_EQ(err, IOVA_E_GRANULE);
    CHECK(iova_cookie_new(IOVA_COOKIE_MSI, NULL, 1 << 17, 1, 10, &err) == NULL);
    CHECK_EQ(err, IOVA_E_GRANULE);
    CHECK(iova_cookie_new(IOVA_COOKIE_WRAPAROUND, NULL, 4096, 10, 1, &err) == NULL);
    CHECK_EQ(err, IOVA_E_RANGE);
    CHECK(iova_cookie_new(IOVA_COOKIE_IOVA, NULL, 4096, 1, 10, &err) == NULL);
    CHECK_EQ(err, IOVA_E_COOKIE);
    CHECK(iova_cookie_new(17, NULL, 4096, 1, 10, &err) == NULL);
}

static void exercise_cookie_msi(void)
{
    int err = 0;
    struct iova_cookie *c = iova_cookie_new(IOVA_COOKIE_MSI, NULL, 4096, 0x100, 0x1FF, &err);
    CHECK(c != NULL);
    if (!c)
        return;
    uint32_t ev = 0;
    int64_t a = iova_cookie_alloc(c, 2, 0, 0, 0, &ev);
    int64_t b = iova_cookie_alloc(c, 3, 0, 0, 0, &ev);
    CHECK_EQ(a, 0x100);
    CHECK_EQ(b, 0x102);
    /* the copy undoes in the same order, and only that */
    struct iova_domain *none;
    struct iova_cookie *cc = cookie_copy(c, NULL, &none, "copy of an msi cookie");
    if (cc) {
        CHECK_EQ(iova_cookie_free(cc, (uint64_t)a, 2, 0, &ev), IOVA_E_NOT_LIVE);
        CHECK_EQ(iova_cookie_free(cc, (uint64_t)b, 3, 0, &ev), 0);
        CHECK_EQ(iova_cookie_free(cc, (uint64_t)a, 2, 0, &ev), 0);
        CHECK_EQ(iova_cookie_alloc(cc, 4, 0, 0, 0, &ev), 0x100);
        check_cookie(cc, "msi copy after its undos");
        drop_copy(cc, none);
    }
    CHECK_EQ(iova_cookie_free(c, (uint64_t)a, 2, 0, &ev), IOVA_E_NOT_LIVE);   /* not the latest */
    CHECK_EQ(iova_cookie_free(c, (uint64_t)b + 1, 2, 0, &ev), IOVA_E_NOT_LIVE); /* a part */
    CHECK_EQ(iova_cookie_free(c, (uint64_t)b, 2, 0, &ev), IOVA_E_FREE_SIZE);
    check_cookie(c, "msi after refused undos");
    CHECK_EQ(iova_cookie_free(c, (uint64_t)b, 3, 0, &ev), 0);
    CHECK_EQ(iova_cookie_free(c, (uint64_t)a, 2, 0, &ev), 0);      /* now the latest */
    CHECK_EQ(iova_cookie_alloc(c, 1, 0, 0, 0, &ev), 0x100);
    CHECK_EQ(iova_cookie_alloc(c, UINT64_MAX, 0, 0, 0, &ev), IOVA_E_SIZE);
    check_cookie(c, "msi");
    iova_cookie_destroy(c);
}

static void exercise_cookie_reset(void)
{
    struct iova_domain *d = new_domain(IOVA_KERNEL_6_12, 1);
    int err = 0;
    struct iova_cookie *c = iova_cookie_new(IOVA_COOKIE_RESET_WHEN_EMPTY, d, 0, 0, 0, &err);
    CHECK(c != NULL);
    if (!c) {
        iova_domain_destroy(d);
        return;
    }
    uint32_t ev = 0;
    int resets = 0;
    /* a reserved window: counted as held from the start, kept by every reset */
    uint64_t lo_hi[2];
    CHECK_EQ(iova_reserve(d, 0xFEE00, 0xFEEFF, lo_hi), 0);
    check_cookie(c, "reset-when-empty with a reserved window");
    for (int round = 0; round < 20; round++) {
        int64_t p[10];
        for (int i = 0; i < 10; i++) {
            p[i] = iova_cookie_alloc(c, 1 + (uint64_t)i, TOP32, 0, 0, &ev);
            CHECK(p[i] > 0);
        }
        /* 5 pages named for 6: refused, or the count would reach zero early */
        CHECK_EQ(iova_cookie_free(c, (uint64_t)p[5], 5, 0, &ev), IOVA_E_FREE_SIZE);
        CHECK_EQ(iova_cookie_free(c, (uint64_t)0xFEE00, 256, 0, &ev), IOVA_E_FREE_SIZE);
        for (int i = 0; i < 10; i++) {
            CHECK_EQ(iova_cookie_free(c, (uint64_t)p[i], 1 + (uint64_t)i, 0, &ev), 0);
            resets += (ev & IOVA_EV_RESET) != 0;
        }
        CHECK_EQ(iova_find(d, 0xFEE80, lo_hi), 1);
        CHECK_EQ(lo_hi[0], 0xFEE00);
        check_cookie(c, "reset-when-empty");
    }
    CHECK_EQ(resets, 20);
    /* the window is not the cookie's to free, even with enough pfns live */
    int64_t big = iova_cookie_alloc(c, 512, TOP32, 0, 0, &ev);
    CHECK(big > 0);
    int64_t small = iova_cookie_alloc(c, 7, TOP32, 0, 0, &ev);
    CHECK(small > 0);
    CHECK_EQ(iova_cookie_free(c, (uint64_t)small, 7, 0, &ev), 0);   /* retired */
    struct iova_domain *dc;
    struct iova_cookie *cc = cookie_copy(c, d, &dc, "copy of a reset-when-empty cookie");
    if (cc) {
        CHECK_EQ(iova_cookie_free(cc, 0xFEE00, 256, 0, &ev), IOVA_E_NOT_LIVE);
        CHECK_EQ(iova_cookie_free(cc, (uint64_t)small, 7, 0, &ev), IOVA_E_NOT_LIVE);
        CHECK_EQ(iova_cookie_free(cc, (uint64_t)big, 512, 0, &ev), 0);
        CHECK(ev & IOVA_EV_RESET);
        check_cookie(cc, "reset-when-empty copy after its reset");
        drop_copy(cc, dc);
    }
    CHECK_EQ(iova_cookie_free(c, 0xFEE00, 256, 0, &ev), IOVA_E_NOT_LIVE);
    CHECK_EQ(iova_cookie_free(c, (uint64_t)big, 512, 0, &ev), 0);
    CHECK(ev & IOVA_EV_RESET);
    CHECK_EQ(iova_find(d, 0xFEE00, lo_hi), 1);
    check_cookie(c, "reset-when-empty after the window was refused");
    iova_cookie_destroy(c);
    /* the cookie only borrowed the domain: it is still whole */
    check_domain(d, "domain after reset cookie");
    /* a cookie whose domain was closed under it reports it, never crashes */
    c = iova_cookie_new(IOVA_COOKIE_RESET_WHEN_EMPTY, d, 0, 0, 0, &err);
    CHECK(c != NULL);
    CHECK_EQ(iova_domain_close(d), 0);
    if (c) {
        CHECK_EQ(iova_cookie_alloc(c, 1, TOP32, 0, 0, &ev), IOVA_E_CLOSED);
        CHECK_EQ(iova_cookie_check(c, NULL, 0), IOVA_E_CLOSED);
        iova_cookie_destroy(c);
    }
    iova_domain_destroy(d);
}

/* ---- page tables and IOTLBs saved and restored --------------------------- */

#define PGSIZES ((1ull << 12) | (1ull << 21) | (1ull << 30))

/* A page table with pages, blocks and a split block, and an IOTLB that
 * holds entries and stale records (unmaps without an invalidation). */
static void busy_hardware(io_pgtable **pt, iotlb **tlb)
{
    CHECK_EQ(io_pgtable_create(12, 48, 48, PGSIZES, pt), 0);
    CHECK_EQ(iotlb_create(32, 4, 20, tlb), 0);
    if (!*pt || !*tlb)
        return;
    uint64_t unmapped;
    for (uint64_t i = 0; i < 64; i++) {
        uint64_t size = i % 3 == 0 ? 1ull << 21 : 4096ull << (i % 2);
        uint64_t iova = (i << 22) + (i % 3 == 0 ? 0 : 4096 * (i % 7));
        CHECK_EQ(io_pgtable_map(*pt, iova, (i + 1) << 22, size,
                                IO_PGTABLE_PROT_READ | (i % 2 ? IO_PGTABLE_PROT_WRITE : 0)), 0);
    }
    struct iotlb_result res;
    for (uint64_t i = 0; i < 200; i++) {
        uint64_t k = i % 64;
        uint64_t iova = (k << 22) + (k % 3 == 0 ? 4096 * (i % 5) : 4096 * (k % 7));
        int r = iotlb_access(*tlb, *pt, iova, (uint32_t)(i & 1), i, 3, &res);
        CHECK(r == 0 || r == IOVA_E_PERM || r == IOVA_E_FAULT);
        if (i % 17 == 0)     /* a page out of a block: the block is split */
            CHECK_EQ(io_pgtable_unmap(*pt, k << 22, 4096, &unmapped), 0);
    }
    /* unmapped under a cached entry, with no invalidation: the next hit
     * on it is stale */
    for (uint64_t k = 50; k < 64; k++) {
        if (k % 3 == 0)
            continue;
        uint64_t iova = (k << 22) + 4096 * (k % 7);
        CHECK_EQ(iotlb_access(*tlb, *pt, iova, 0, 300 + k, 3, &res), 0);
        CHECK_EQ(io_pgtable_unmap(*pt, iova, 4096ull << (k % 2), &unmapped), 0);
        CHECK_EQ(iotlb_access(*tlb, *pt, iova, 0, 400 + k, 3, &res), 0);
        CHECK(res.flags & IOTLB_STALE);
    }
    struct iotlb_stats st;
    CHECK_EQ(iotlb_get_stats(*tlb, &st), 0);
    CHECK(st.stale_hits > 0 && st.records_kept > 0);
}

/* Restores words with restore(), expecting IOVA_E_STATE or a sound result. */
#define HOSTILE_HW(restore, check, destroy, w, n)                               \
    ({                                                                          \
        __typeof__(destroy) *_d = destroy;                                      \
        void *_o = NULL;                                                        \
        int _r = restore(w, n, (void *)&_o);                                    \
        CHECK(_r == 0 || _r == IOVA_E_STATE);                                   \
        if (_r == 0) {                                                          \
            CHECK_EQ(check(_o, NULL, 0), 0);                                    \
            _d(_o);                                                             \
        }                                                                       \
        _r != 0;                                                                \
    })

static void hardware_saves(void)
{
    io_pgtable *pt = NULL;
    iotlb *tlb = NULL;
    busy_hardware(&pt, &tlb);
    uint64_t pn = 0, tn = 0;
    uint64_t *pw = pt ? SAVE_WORDS(io_pgtable_save, pt, &pn) : NULL;
    uint64_t *tw = tlb ? SAVE_WORDS(iotlb_save, tlb, &tn) : NULL;
    io_pgtable *pt2 = NULL;
    iotlb *tlb2 = NULL;
    if (pw && tw) {
        CHECK_EQ(io_pgtable_restore(pw, pn, &pt2), 0);
        CHECK_EQ(iotlb_restore(tw, tn, &tlb2), 0);
    }
    if (pt2 && tlb2) {
        uint64_t m;
        uint64_t *again = SAVE_WORDS(io_pgtable_save, pt2, &m);
        CHECK(again && m == pn && memcmp(again, pw, (size_t)m * 8) == 0);
        free(again);
        again = SAVE_WORDS(iotlb_save, tlb2, &m);
        CHECK(again && m == tn && memcmp(again, tw, (size_t)m * 8) == 0);
        free(again);
        /* the copies translate, hit, go stale and evict as the originals */
        struct iotlb_result a, b;
        for (uint64_t i = 0; i < 300; i++) {
            uint64_t iova = ((i * 7) % 64) << 22 | 4096 * (i % 9);
            int ra = iotlb_access(tlb, pt, iova, (uint32_t)(i & 1), 1000 + i, 4, &a);
            int rb = iotlb_access(tlb2, pt2, iova, (uint32_t)(i & 1), 1000 + i, 4, &b);
            CHECK_EQ(ra, rb);
            if (ra == 0 || ra == IOVA_E_PERM)
                CHECK(a.paddr == b.paddr && a.flags == b.flags);
        }
        struct iotlb_stats sa, sb;
        CHECK_EQ(iotlb_get_stats(tlb, &sa), 0);
        CHECK_EQ(iotlb_get_stats(tlb2, &sb), 0);
        CHECK(memcmp(&sa, &sb, sizeof(sa)) == 0);
        CHECK_EQ(io_pgtable_check(pt2, NULL, 0), 0);
        CHECK_EQ(iotlb_check(tlb2, NULL, 0), 0);
    }
    io_pgtable_destroy(pt2);
    iotlb_destroy(tlb2);

    /* truncated, extended and damaged words: refused, or sound */
    for (int which = 0; pw && tw && which < 2; which++) {
        uint64_t n = which ? tn : pn;
        const uint64_t *good = which ? tw : pw;
        uint64_t *bad = malloc((size_t)(n + 1) * 8);
        int refusals = 0;
        for (int t = 0; t < 200; t++) {
            memcpy(bad, good, (size_t)n * 8);
            bad[n] = rnd();
            uint64_t len = t == 0 ? n - 1 : t == 1 ? n + 1 : n;
            for (int k = 0; t >= 2 && k < 1 + (int)rnd_below(3); k++) {
                uint64_t i = rnd_below(n), how = rnd_below(3);
                bad[i] = how == 0 ? bad[i] + 1 : how == 1 ? bad[i] - 1 : rnd();
            }
            bool r = which ? HOSTILE_HW(iotlb_restore, iotlb_check, iotlb_destroy, bad, len)
                           : HOSTILE_HW(io_pgtable_restore, io_pgtable_check,
                                        io_pgtable_destroy, bad, len);
            CHECK(t >= 2 || r);
            refusals += r;
        }
        CHECK(refusals > 2);
        free(bad);
    }
    free(pw);
    free(tw);
    io_pgtable_destroy(pt);
    iotlb_destroy(tlb);
}

/* ---- every allocation failure, in turn ----------------------------------- */

typedef int (*scenario_fn)(void);

/* Runs fn with the n-th allocation failing for n = 0, 1, ... until it runs
 * through without meeting the injector. fn returns 0, or IOVA_E_NOMEM when
 * an allocation failed (having cleaned up after itself). */
static void each_failure_point(const char *name, scenario_fn fn)
{
    for (int64_t n = 0; n < 100000; n++) {
        uint64_t before = iova_mem_failures();
        iova_mem_fail_after(n);
        int r = fn();
        iova_mem_fail_after(-1);
        bool failed = iova_mem_failures() != before;
        if (r != 0 && r != IOVA_E_NOMEM) {
            fprintf(stderr, "%s: failure point %" PRId64 ": returned %d\n", name, n, r);
            failures++;
            return;
        }
        if (!failed) {
            CHECK_EQ(r, 0);
            return;
        }
    }
    fprintf(stderr, "%s: still allocating after 100000 failure points\n", name);
    failures++;
}

static int fp_domain(void)
{
    int err = 0;
    struct iova_domain *d = iova_domain_new(4096, 1, 4, IOVA_KERNEL_6_12, 0, &err);
    if (!d)
        return err;
    iova_domain_destroy(d);
    return 0;
}

/* Everything that grows: the node pool, magazines, the depot. A failure in
 * the middle must leave a domain that checks out and destroys cleanly. */
static int fp_grow(void)
{
    int err = 0, ret = 0;
    struct iova_domain *d = iova_domain_new(4096, 1, 1, IOVA_KERNEL_6_12, 0, &err);
    if (!d)
        return err;
    uint64_t pfns[400];
    int n = 0;
    for (; n < 400; n++) {
        int64_t p = iova_alloc(d, 1, TOP32, 0);
        if (p < 0) {
            ret = (int)p;
            break;
        }
        pfns[n] = (uint64_t)p;
    }
    uint64_t lo_hi[2];
    if (!ret)
        ret = iova_reserve(d, 0x10, 0x20, lo_hi);
    for (int i = 0; !ret && i < n; i++)
        ret = iova_rcache_free_fast(d, pfns[i], 1, 0);
    /* free_fast never fails for want of memory: a failed magazine sends
     * the range back to the tree instead */
    (void)iova_rcache_run_pending_work(d);
    int64_t words = ret ? 0 : iova_save(d, NULL, 0);
    if (words > 0) {
        uint64_t *w = malloc((size_t)words * sizeof(uint64_t));
        iova_save(d, w, (uint64_t)words);
        struct iova_domain *copy = iova_restore(w, (uint64_t)words, &err);
        free(w);
        if (copy)
            iova_domain_destroy(copy);
        else
            ret = err;
    }
    iova_mem_fail_after(-1);
    check_domain(d, "after a failure point");
    iova_domain_destroy(d);
    return ret;
}

static int fp_cookies(void)
{
    int err = 0, ret = 0;
    struct iova_cookie *w = iova_cookie_new(IOVA_COOKIE_WRAPAROUND, NULL, 4096, 1, 600, &err);
    if (!w)
        return err;
    uint32_t ev;
    ret = iova_cookie_reserve(w, 100, 140);          /* a node, so it can fail */
    for (int i = 0; !ret && i < 300; i++) {
        int64_t p = iova_cookie_alloc(w, 1, 600, 0, 0, &ev);
        if (p < 0)
            ret = (int)p;
        else
            ret = iova_cookie_free(w, (uint64_t)p, 1, 0, &ev);
    }
    iova_cookie_destroy(w);
    if (ret)
        return ret;
    struct iova_domain *d = iova_domain_new(4096, 1, 2, IOVA_KERNEL_6_12, 0, &err);
    if (!d)
        return err;
    struct iova_cookie *c = iova_cookie_new(IOVA_COOKIE_IOVA, d, 0, 0, 0, &err);
    if (!c)
        ret = err;
    else
        ret = iova_cookie_fq_init(c, 2, 8, 10);
    iova_cookie_destroy(c);
    iova_domain_destroy(d);
    return ret;
}

/* Restoring saved states with every allocation failing in turn: words
 * saved once beforehand (fp_saved), so that only the restore allocates. */
static struct {
    uint64_t *cookie, *domain, *pgtable, *iotlb;
    uint64_t ncookie, ndomain, npgtable, niotlb;
} fp_saved;

static int fp_cookie_restore(void)
{
    int err = 0;
    struct iova_domain *d = NULL;
    if (fp_saved.ndomain) {
        d = iova_restore(fp_saved.domain, fp_saved.ndomain, &err);
        if (!d)
            return err;
    }
    struct iova_cookie *c = iova_cookie_restore(fp_saved.cookie, fp_saved.ncookie, d, &err);
    iova_mem_fail_after(-1);
    if (c) {
        check_cookie(c, "cookie restored at a failure point");
        iova_cookie_destroy(c);
    } else if (d) {
        check_domain(d, "domain after a cookie restore failed");
    }
    if (d)
        iova_domain_destroy(d);
    return c ? 0 : err;
}

static int fp_hardware_restore(void)
{
    io_pgtable *pt = NULL;
    iotlb *tlb = NULL;
    int r = io_pgtable_restore(fp_saved.pgtable, fp_saved.npgtable, &pt);
    if (!r)
        r = iotlb_restore(fp_saved.iotlb, fp_saved.niotlb, &tlb);
    io_pgtable_destroy(pt);
    iotlb_destroy(tlb);
    return r;
}

/* Each type of cookie in a state with every part of its words in use, and
 * the page table and IOTLB, restored through every failure point. */
static void restores_at_failure_points(void)
{
    uint32_t ev;
    int err;
    for (int type = 0; type < 4; type++) {
        struct iova_domain *d = NULL;
        if (type == IOVA_COOKIE_IOVA || type == IOVA_COOKIE_RESET_WHEN_EMPTY)
            d = new_domain(IOVA_KERNEL_6_12, 2);
        struct iova_cookie *c = iova_cookie_new(type, d, 4096, 0x100, 0x8FF, &err);
        CHECK(c != NULL);
        if (!c) {
            if (d)
                iova_domain_destroy(d);
            continue;
        }
        if (type == IOVA_COOKIE_IOVA)
            CHECK_EQ(iova_cookie_fq_init(c, 2, 16, 10), 0);
        for (int i = 0; i < 40; i++) {
            uint64_t size = 1 + (uint64_t)i % 3;
            int64_t p = iova_cookie_alloc(c, size, TOP32, 0, i % 2, &ev);
            CHECK(p > 0);
            if (p <= 0 || i % 4 || type == IOVA_COOKIE_MSI)
                continue;
            if (type == IOVA_COOKIE_IOVA)
                CHECK_EQ(iova_cookie_free_lazy(c, (uint64_t)p, size, i / 4 % 2, 0, &ev), 0);
            else
                CHECK_EQ(iova_cookie_free(c, (uint64_t)p, size, 0, &ev), 0);
        }
        fp_saved.cookie = SAVE_WORDS(iova_cookie_save, c, &fp_saved.ncookie);
        fp_saved.ndomain = 0;
        fp_saved.domain = d ? SAVE_WORDS(iova_save, d, &fp_saved.ndomain) : NULL;
        if (fp_saved.cookie && (!d || fp_saved.domain))
            each_failure_point("cookie restore", fp_cookie_restore);
        free(fp_saved.cookie);
        free(fp_saved.domain);
        iova_cookie_destroy(c);
        if (d)
            iova_domain_destroy(d);
    }
    io_pgtable *pt = NULL;
    iotlb *tlb = NULL;
    busy_hardware(&pt, &tlb);
    if (pt && tlb) {
        fp_saved.pgtable = SAVE_WORDS(io_pgtable_save, pt, &fp_saved.npgtable);
        fp_saved.iotlb = SAVE_WORDS(iotlb_save, tlb, &fp_saved.niotlb);
        if (fp_saved.pgtable && fp_saved.iotlb)
            each_failure_point("hardware restore", fp_hardware_restore);
        free(fp_saved.pgtable);
        free(fp_saved.iotlb);
    }
    io_pgtable_destroy(pt);
    iotlb_destroy(tlb);
}

/* ---- threads ------------------------------------------------------------- */

struct worker {
    struct iova_domain *d;
    int cpu;
    int bad;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    int64_t held[64] = { 0 };
    for (int i = 0; i < 4000; i++) {
        int k = i % 64;
        uint64_t size = 1 + (uint64_t)k % 9;
        if (held[k] && iova_rcache_free_fast(w->d, (uint64_t)held[k], size, w->cpu))
            w->bad++;
        held[k] = iova_rcache_alloc_fast(w->d, size, TOP32, 1, w->cpu);
        if (held[k] < 0)
            w->bad++;
        if (i % 500 == 0) {
            iova_rcache_flush_cpu(w->d, (w->cpu + 1) % 3);
            iova_rcache_advance(w->d, 50);
        }
    }
    return NULL;
}

static void threads(void)
{
    struct iova_domain *d = new_domain(IOVA_KERNEL_6_12, 3);
    if (!d)
        return;
    pthread_t t[3];
    struct worker w[3];
    for (int i = 0; i < 3; i++) {
        w[i] = (struct worker){ d, i, 0 };
        CHECK_EQ(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ(w[i].bad, 0);
    }
    check_domain(d, "after threads");
    iova_domain_destroy(d);
}

/* The validator's one rule about the live_hint table (R4): a slot may be
 * stale but must name a pool slot. Written past the pool, it is reported;
 * put back, the domain checks clean and a cached free still works. */
static void validator_sees_a_bad_hint(void)
{
    int err;
    char msg[256];
    struct iova_domain *d = iova_domain_new(4096, 1, 1, IOVA_KERNEL_6_12, 0, &err);
    CHECK(d != NULL);
    int64_t pfn = iova_rcache_alloc_fast(d, 1, TOP32, 1, 0);
    CHECK(pfn > 0);
    uint32_t *slot = &d->live_hint[iova_live_hint_slot((uint64_t)pfn)];
    uint32_t saved = *slot;
    *slot = d->tree.top + 7;
    CHECK_EQ(iova_check(d, msg, sizeof(msg)), IOVA_E_CORRUPT);
    CHECK(strstr(msg, "R4") != NULL);
    *slot = saved;
    CHECK_EQ(iova_check(d, NULL, 0), 0);
    CHECK_EQ(iova_rcache_free_fast(d, (uint64_t)pfn, 1, 0), 0);
    iova_domain_destroy(d);
}

/* ---- the simulation engine ------------------------------------------------- */

/* A domain, a cookie (with a flush queue when lazy), a page table and an
 * IOTLB for the engine, and the engine on them. */
struct sim_rig {
    struct iova_domain *d;
    struct iova_cookie *c;
    io_pgtable *pt;
    iotlb *tlb;
    struct sim_engine *e;
};

static void rig_destroy(struct sim_rig *r)
{
    sim_engine_destroy(r->e);
    iova_cookie_destroy(r->c);
    if (r->d)
        iova_domain_destroy(r->d);
    io_pgtable_destroy(r->pt);
    iotlb_destroy(r->tlb);
    memset(r, 0, sizeof(*r));
}

/* 0, or IOVA_E_NOMEM when an allocation failed (all released). */
static int rig_make(struct sim_rig *r, int type, bool lazy, int invalidation)
{
    int err;
    memset(r, 0, sizeof(*r));
    if (type == IOVA_COOKIE_IOVA || type == IOVA_COOKIE_RESET_WHEN_EMPTY) {
        r->d = iova_domain_new(4096, 1, 1, IOVA_KERNEL_6_12, 0, &err);
        if (!r->d)
            return IOVA_E_NOMEM;
    }
    r->c = iova_cookie_new(type, r->d, 4096, 1, TOP32, &err);
    if (!r->c || (lazy && iova_cookie_fq_init(r->c, 1, 8, 10)) ||
        io_pgtable_create(12, 32, 40, 0x40201000ull, &r->pt) ||
        iotlb_create(64, 0, 16, &r->tlb)) {
        rig_destroy(r);
        return IOVA_E_NOMEM;
    }
    struct sim_config cfg = {
        .cookie = r->c, .iovad = r->d, .pgtable = r->pt, .iotlb = r->tlb, .lazy = lazy,
        .shift = 12, .stream_limit = 0xFFFFFFFFull, .coherent_limit = 0xFFFFFFFFull,
        .dma_mask = 0xFFFFFFFFull, .dev_id = 1, .aperture_forced = 1, .ap_end = 0xFFFFFFFFull,
        .invalidation = invalidation, .erratum = invalidation == SIM_INVAL_CONTEXT,
        .drop_rate = 0.5, .flush_when_idle = 1, .max_failures = 5, .failure_ops_cap = 3,
        .phys_base = 0x40000000ull, .phys_page = 4096, .ncpus = 1,
    };
    struct sim_state st = { .first_fail = SIM_NONE, .phys_next = 0x40000000ull };
    for (int i = 0; i < SIM_MT_WORDS; i++)
        st.rng.mt[i] = (uint32_t)rnd();
    st.rng.index = SIM_MT_WORDS;
    r->e = sim_engine_new(&cfg, &st, &err);
    if (!r->e) {
        rig_destroy(r);
        return IOVA_E_NOMEM;
    }
    return 0;
}

/* Exports everything the Python side reads; 0 or IOVA_E_NOMEM. */
static int rig_export(struct sim_rig *r)
{
    char msg[128];
    CHECK_EQ(sim_engine_check(r->e, msg, sizeof(msg)), 0);
    int64_t n = sim_engine_mappings(r->e, NULL, 0);
    CHECK(n >= 0);
    struct sim_mapping *m = calloc((size_t)n + 1, sizeof(*m));
    CHECK(m != NULL);
    CHECK_EQ(sim_engine_mappings(r->e, m, (uint64_t)n), n);
    for (int64_t i = 0; i < n; i++) {
        if (m[i].kind != SIM_KIND_SG)
            continue;
        uint64_t words[2 * 64];
        int64_t w = sim_engine_segments(r->e, m[i].handle, words, 2 * 64);
        CHECK_EQ((uint64_t)w, 2 * m[i].nsegs);
    }
    free(m);
    uint64_t spares[2 * 32];
    CHECK(sim_engine_spares(r->e, spares, 32) >= 0);
    uint64_t fails[8];
    while (sim_engine_take_failure_ops(r->e, fails, 8) > 0)
        ;
    return 0;
}

/* A random workload with scatter-gather lists and coherent buffers, run
 * in chunks through every kind of cookie; at any allocation failure
 * everything is released. */
static int fp_engine(void)
{
    static const int types[] = { IOVA_COOKIE_IOVA, IOVA_COOKIE_WRAPAROUND,
                                 IOVA_COOKIE_RESET_WHEN_EMPTY };
    int nomem = 0;
    for (unsigned k = 0; k < 3 && !nomem; k++) {
        struct sim_rig r;
        if (rig_make(&r, types[k], types[k] == IOVA_COOKIE_IOVA,
                     k == 1 ? SIM_INVAL_CONTEXT : SIM_INVAL_RANGE))
            return IOVA_E_NOMEM;
        struct sim_random_params p = {
            .size_min = 4096, .size_max = 1 << 20, .loguniform = 1, .lifetime = 40,
            .live_max = 64, .sg_ratio = 0.3, .coherent_ratio = 0.3, .write_ratio = 0.5,
            .per_ms = 4, .page = 4096, .phys_base = 0x700000000ull, .phys_bits = 21,
        };
        struct sim_mt mt;
        for (int i = 0; i < SIM_MT_WORDS; i++)
            mt.mt[i] = (uint32_t)rnd();
        mt.index = SIM_MT_WORDS;
        int err;
        struct sim_gen *g = sim_gen_random(&p, &mt, &err);
        if (!g) {
            rig_destroy(&r);
            return IOVA_E_NOMEM;
        }
        struct sim_run run;
        for (int chunk = 0; chunk < 8 && !nomem; chunk++) {
            int rc = sim_engine_run_gen(r.e, g, 50, &run);
            if (rc || run.status == SIM_RAISE || run.status == SIM_FALLBACK)
                nomem = 1;                    /* only an injected failure stops it */
        }
        if (!nomem)
            nomem = rig_export(&r) != 0;
        sim_gen_destroy(g);
        rig_destroy(&r);
    }
    return nomem ? IOVA_E_NOMEM : 0;
}

/* Records by hand: misuse stops the engine before the operation, a chunk
 * that cuts a scatter-gather list is refused, a page table that refuses a
 * map is unwound and counted as a failed map (DMA_MAPPING_ERROR), a cpu
 * outside the cookie's slots is left to Python. */
static void exercise_engine_records(void)
{
    struct sim_rig r;
    CHECK_EQ(rig_make(&r, IOVA_COOKIE_IOVA, false, SIM_INVAL_RANGE), 0);
    struct sim_op ops[] = {
        { .code = SIM_OP_MAP_PAGE, .dir = 1, .cpu = -1, .handle = 7, .arg = 0x1000, .size = 8192 },
        { .code = SIM_OP_ACCESS, .handle = 7, .arg = 4096 },
        { .code = SIM_OP_UNMAP_PAGE, .dir = 2, .cpu = -1, .handle = 7, .size = 8192 },  /* misuse */
    };
    struct sim_run run;
    CHECK_EQ(sim_engine_run(r.e, ops, 3, 100, &run), 0);
    CHECK_EQ(run.status, SIM_FALLBACK);
    CHECK_EQ(run.ops, 2);
    CHECK_EQ(run.records, 2);
    struct sim_op cut[] = {
        { .code = SIM_OP_MAP_SG, .dir = 1, .cpu = -1, .handle = 8, .arg = 2 },
        { .code = SIM_OP_SEGMENT, .arg = 0x2000, .size = 4096 },
    };
    CHECK_EQ(sim_engine_run(r.e, cut, 2, 100, &run), IOVA_E_ARG);
    struct sim_op far[] = {
        { .code = SIM_OP_MAP_PAGE, .dir = 1, .cpu = -1, .handle = 9, .arg = 1ull << 41,
          .size = 4096 },
    };
    CHECK_EQ(sim_engine_run(r.e, far, 1, 100, &run), 0);
    CHECK_EQ(run.status, SIM_DONE);
    CHECK_EQ(run.ops, 1);
    struct sim_state st;
    CHECK_EQ(sim_engine_get_state(r.e, &st), 0);
    CHECK_EQ(st.failures, 1);
    CHECK_EQ(st.first_fail, 2);
    CHECK_EQ(st.live_at_fail, 2);                /* handle 7's two pages */
    struct sim_op other_cpu[] = {
        { .code = SIM_OP_MAP_PAGE, .dir = 1, .cpu = 1, .handle = 10, .arg = 0x1000, .size = 1 },
    };
    CHECK_EQ(sim_engine_run(r.e, other_cpu, 1, 100, &run), 0);
    CHECK_EQ(run.status, SIM_FALLBACK);
    CHECK_EQ(run.ops, 0);
    CHECK_EQ(rig_export(&r), 0);
    struct iova_cookie_stats cs;
    iova_cookie_get_stats(r.c, &cs);
    CHECK_EQ(cs.live_ranges, 1);                 /* handle 7 only: 9 was given back */
    rig_destroy(&r);
}

/* A 6.1 depot holds at most 32 full magazines and never has trim work;
 * the validator's R3 says so when either is made false. */
static void validator_sees_a_bad_61_depot(void)
{
    int err;
    char msg[256];
    struct iova_domain *d = iova_domain_new(4096, 1, 1, IOVA_KERNEL_6_1, 0, &err);
    CHECK(d != NULL);
    if (!d)
        return;
    enum { N = 127 * 34 + 1 };
    static uint64_t pfns[N];
    for (int i = 0; i < N; i++) {
        int64_t p = iova_alloc(d, 1, TOP32, 0);
        CHECK(p > 0);
        pfns[i] = (uint64_t)p;
    }
    for (int i = 0; i < N; i++)
        CHECK_EQ(iova_rcache_free_fast(d, pfns[i], 1, 0), 0);
    struct iova_depot *dp = &d->depot[0];
    CHECK_EQ(dp->len, IOVA_DEPOT_MAX_MAGS);
    CHECK_EQ(iova_check(d, msg, sizeof(msg)), 0);

    dp->work_pending = true;
    CHECK_EQ(iova_check(d, msg, sizeof(msg)), IOVA_E_CORRUPT);
    CHECK(strstr(msg, "R3") != NULL && strstr(msg, "trim") != NULL);
    dp->work_pending = false;

    /* a 33rd magazine: the prev one, moved into the depot behind the lock's back */
    struct iova_cpu_rcache *c = &d->cpu_rc[0];
    struct iova_magazine *fresh = iova_rcache_mag_alloc(d);
    CHECK(fresh != NULL);
    if (fresh) {
        CHECK_EQ(iova_rcache_depot_push(dp, c->prev), 0);
        struct iova_magazine *prev = c->prev;
        c->prev = fresh;
        CHECK_EQ(iova_check(d, msg, sizeof(msg)), IOVA_E_CORRUPT);
        CHECK(strstr(msg, "R3") != NULL && strstr(msg, "depot") != NULL);
        c->prev = prev;                   /* undone: the domain is sound again */
        dp->len--;
        free(fresh);
    }
    CHECK_EQ(iova_check(d, NULL, 0), 0);
    CHECK_EQ(iova_rcache_flush_all(d), 0);
    CHECK_EQ(iova_rcache_pfns(d, NULL, 0), 0);
    iova_domain_destroy(d);
}

/* The cookie's own state - its sets of live and retired ranges, its flush
 * queue's rings and counts - is checked by iova_cookie_check (C1, C2, the
 * sets' S1, the queue's Q1 and Q2): each broken by hand is reported, and
 * put back the cookie checks clean. */
static void validator_sees_a_broken_cookie(void)
{
    int err;
    char msg[256];
    uint32_t ev;
    struct iova_domain *d = iova_domain_new(4096, 1, 2, IOVA_KERNEL_6_12, 0, &err);
    CHECK(d != NULL);
    if (!d)
        return;
    struct iova_cookie *c = iova_cookie_new(IOVA_COOKIE_RESET_WHEN_EMPTY, d, 0, 0, 0, &err);
    CHECK(c != NULL);
    if (c) {
        int64_t a = iova_cookie_alloc(c, 4, TOP32, 0, 0, &ev);
        int64_t b = iova_cookie_alloc(c, 2, TOP32, 0, 0, &ev);
        CHECK(a > 0 && b > 0);
        CHECK_EQ(iova_cookie_free(c, (uint64_t)a, 4, 0, &ev), 0);      /* retired */
        CHECK_EQ(iova_cookie_check(c, msg, sizeof(msg)), 0);
        c->retired_pfns += 1;
        CHECK_EQ(iova_cookie_check(c, msg, sizeof(msg)), IOVA_E_CORRUPT);
        CHECK(strstr(msg, "C2") != NULL);
        c->retired_pfns -= 1;
        c->live.count++;
        CHECK_EQ(iova_cookie_check(c, msg, sizeof(msg)), IOVA_E_CORRUPT);
        CHECK(strstr(msg, "S1") != NULL);
        c->live.count--;
        /* a retired range that is live too */
        CHECK_EQ(pfn_set_reserve(&c->live, 1), 0);
        pfn_set_add(&c->live, (uint64_t)a);
        c->live_ranges++;
        CHECK_EQ(iova_cookie_check(c, msg, sizeof(msg)), IOVA_E_CORRUPT);
        CHECK(strstr(msg, "C1") != NULL);
        pfn_set_remove(&c->live, (uint64_t)a);
        c->live_ranges--;
        CHECK_EQ(iova_cookie_check(c, NULL, 0), 0);
        CHECK_EQ(iova_cookie_free(c, (uint64_t)b, 2, 0, &ev), 0);
        CHECK(ev & IOVA_EV_RESET);
        CHECK_EQ(c->retired.count, 0);
        iova_cookie_destroy(c);
    }
    c = iova_cookie_new(IOVA_COOKIE_IOVA, d, 0, 0, 0, &err);
    CHECK(c != NULL);
    if (c) {
        CHECK_EQ(iova_cookie_fq_init(c, 2, 4, 10), 0);
        int64_t a = iova_cookie_alloc(c, 1, TOP32, 0, 0, &ev);
        int64_t b = iova_cookie_alloc(c, 1, TOP32, 0, 1, &ev);
        CHECK_EQ(iova_cookie_free_lazy(c, (uint64_t)a, 1, 0, 5, &ev), 0);
        CHECK_EQ(iova_cookie_free_lazy(c, (uint64_t)b, 1, 1, 6, &ev), 0);
        CHECK_EQ(iova_cookie_check(c, msg, sizeof(msg)), 0);
        c->fq->queued++;
        CHECK_EQ(iova_cookie_check(c, msg, sizeof(msg)), IOVA_E_CORRUPT);
        CHECK(strstr(msg, "Q1") != NULL);
        c->fq->queued--;
        c->fq->rings[1].entries[c->fq->rings[1].head].counter = c->fq->started + 1;
        CHECK_EQ(iova_cookie_check(c, msg, sizeof(msg)), IOVA_E_CORRUPT);
        CHECK(strstr(msg, "Q2") != NULL);
        c->fq->rings[1].entries[c->fq->rings[1].head].counter = c->fq->started;
        CHECK_EQ(iova_cookie_check(c, NULL, 0), 0);
        CHECK_EQ(iova_cookie_fq_flushed(c, 1, 0), 0);
        CHECK_EQ(iova_cookie_check(c, NULL, 0), 0);
        iova_cookie_destroy(c);
    }
    iova_domain_destroy(d);
}

int main(void)
{
    /* tools/leakcheck.sh selftest: a domain deliberately never destroyed,
     * to show that the checkers do see a leak of the core */
    if (getenv("TEST_CORE_LEAK_CANARY")) {
        int err;
        struct iova_domain *leaked = iova_domain_new(4096, 1, 1, IOVA_KERNEL_6_12, 0, &err);
        CHECK(iova_alloc(leaked, 1, TOP32, 0) > 0);
    }
    exercise_domain(IOVA_KERNEL_6_12);
    exercise_domain(IOVA_KERNEL_6_1);
    exercise_domain(IOVA_KERNEL_4_10);
    bad_domain_parameters();
    hostile_restores();
    exercise_cookie_iova(IOVA_KERNEL_6_12);
    exercise_cookie_iova(IOVA_KERNEL_6_1);
    exercise_cookie_iova(IOVA_KERNEL_4_10);
    exercise_cookie_wrap();
    exercise_cookie_msi();
    exercise_cookie_reset();
    hardware_saves();
    each_failure_point("domain", fp_domain);
    each_failure_point("grow", fp_grow);
    each_failure_point("cookies", fp_cookies);
    restores_at_failure_points();
    threads();
    validator_sees_a_bad_hint();
    exercise_engine_records();
    each_failure_point("engine", fp_engine);
    validator_sees_a_bad_61_depot();
    validator_sees_a_broken_cookie();
    if (failures) {
        fprintf(stderr, "test_core: %d check(s) failed\n", failures);
        return 1;
    }
    printf("test_core: all checks passed\n");
    return 0;
}
