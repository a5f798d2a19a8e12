/*
 * bench_iova.c - the C core timed on its own, with no Python in the way.
 *
 * Built from the very csrc/ C files the Python extension is built from
 * (see benchmarks/Makefile), so the ns/op printed here is the floor the
 * Python figures are measured against (benchmarks/bench_python_overhead.py
 * times the same loops in its own process, through libbench_iova.so below).
 *
 * The cases are those the kernel's own iova.c was measured on, built as a
 * userspace program (benchmarks/README.md, "The kernel baseline"), run once
 * per search mode so the two columns can be read side by side:
 *
 *   a   1M alloc(aligned)+free pairs, random sizes 1..64, 1000 live,
 *       32-bit limit (4K granule: limit_pfn 0xFFFFF)
 *   b   the same with alloc_fast/free_fast on CPU slot 0
 *   c   200k one-page ranges, every other one freed, then two-page aligned
 *       allocs until one fails or 10k succeed
 *   c1  as c, but the top range is freed and allocated again before each
 *       two-page alloc, which sends the cached node back up
 *   c2  32-bit region full (start_pfn chosen so the 200k ranges fill it),
 *       every other one freed: failing two-page allocs
 *   c3  the region above 4 GiB full up to the 64-bit limit, same holes:
 *       failing two-page allocs with the 64-bit limit
 *
 * Extra cases the Python side needs as a yardstick:
 *
 *   a.rounds / b.rounds  the churn of a/b in rounds of 100 frees then 100
 *       allocs (the shape a batch call can express), once as single calls
 *       and once as alloc_many/free_many (alloc_fast_many/free_fast_many)
 *   h   rcache hits only: the same sizes (1..32) allocated with
 *       alloc_fast_many and freed with free_fast_many, over and over, in
 *       batches of 64 and of 1024, and as single calls
 *   t   one thread against two on the same work (t.hits, t.churn)
 *   s   per-alloc latency percentiles at 1M live ranges (random churn)
 *   mem bytes per live range at 1M and 10M live ranges: the core's own
 *       node_bytes and the growth of the resident set (/proc/self/statm)
 *
 * Every random choice comes from one fixed-seed generator, so each run does
 * exactly the same calls (callgrind gives identical counts run to run).
 *
 * Built with -DBENCH_IOVA_LIBRARY (make libbench_iova.so), this file is a
 * shared library instead of a program: no main(), and the a.rounds,
 * b.rounds and h loops exported through the entry points of
 * bench_iova_lib.h, for a Python process to time in-process.
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
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "iova.h"

#define GRANULE     4096u
#define LIMIT32     0xFFFFFull               /* last pfn below 4 GiB at 4K */
#define DMA32       (LIMIT32 + 1)
#define MAX_PFN     (UINT64_MAX >> 12)       /* the 64-bit limit at 4K */
#define ROUND       100                      /* frees (then allocs) per round */
#define FRAG_N      200000u
#define C_MAX_OK    10000u

/* ---- options ------------------------------------------------------------ */

static struct {
    int kernel;
    long pairs;        /* a/b: alloc+free pairs */
    long patho;        /* c1/c2/c3: timed allocs per case */
    int repeats;       /* a/b/h: best of this many runs */
    bool csv;
    bool quick;
    const char *only;  /* comma-separated case names, or NULL for all */
    long mem_max;      /* largest live-set size for the memory case */
    int search;        /* -1: both search modes, else just this one */
} opt = {
    .kernel = IOVA_KERNEL_6_12, .pairs = 1000000, .patho = 1000,
    .repeats = 3, .mem_max = 10000000, .search = -1,
};

static const char *mode_name(int m)
{
    return m == IOVA_SEARCH_LINEAR ? "linear" : "augmented";
}

static bool wanted(const char *name)
{
    if (!opt.only)
        return true;
    /* match whole comma-separated words, so "c" does not select "c1" */
    size_t len = strlen(name);
    for (const char *p = opt.only; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && strncmp(p, name, n) == 0)
            return true;
        if (!end)
            break;
        p = end + 1;
    }
    return false;
}

/* ---- plumbing ----------------------------------------------------------- */

/* splitmix64: tiny, fast and good enough; the seed fixes every sequence */
static _Thread_local uint64_t rng_state;

static void seed(uint64_t s)
{
    rng_state = s;
}

static inline uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* uniform in [0, n) without a division */
static inline uint64_t rnd_below(uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rnd() * n) >> 64);
}

static inline double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void die(const char *what, int64_t code)
{
    fprintf(stderr, "bench_iova: %s failed with code %" PRId64 "\n", what, code);
    exit(1);
}

static struct iova_domain *domain(uint64_t start_pfn, int mode)
{
    int err = 0;
    /* 4.10 takes its 32-bit boundary as a parameter; 0 picks intel-iommu's */
    struct iova_domain *d = iova_domain_new(GRANULE, start_pfn, 1, opt.kernel, 0, &err);
    if (!d)
        die("iova_domain_new", err);
    if (iova_set_search_mode(d, mode))
        die("iova_set_search_mode", mode);
    return d;
}

static struct iova_state state(struct iova_domain *d)
{
    struct iova_state st;
    if (iova_get_state(d, &st))
        die("iova_get_state", 0);
    return st;
}

static int64_t must_alloc(struct iova_domain *d, uint64_t size, uint64_t limit)
{
    int64_t r = iova_alloc(d, size, limit, 1);
    if (r < 0)
        die("iova_alloc", r);
    return r;
}

static void must_free(struct iova_domain *d, uint64_t pfn)
{
    int r = iova_free(d, pfn);
    if (r)
        die("iova_free", r);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- reporting ---------------------------------------------------------- */

struct result {
    const char *name;
    const char *mode;
    long ops;
    double ns_per_op;   /* mean */
    double first, p50, p99, p999, max;   /* per-call figures, where timed per call */
    char note[160];
};

static void header(void)
{
    if (opt.csv)
        printf("case,search,ops,ns_per_op,first_ns,p50_ns,p99_ns,p999_ns,max_ns,note\n");
    else
        printf("%-16s %-9s %8s %11s %10s %8s %8s %8s %10s  %s\n", "case", "search",
               "ops", "ns/op(mean)", "first", "p50", "p99", "p99.9", "max", "note");
}

static void report(const struct result *r)
{
    if (opt.csv) {
        printf("%s,%s,%ld,%.1f,%.0f,%.0f,%.0f,%.0f,%.0f,\"%s\"\n", r->name, r->mode, r->ops,
               r->ns_per_op, r->first, r->p50, r->p99, r->p999, r->max, r->note);
    } else {
        char first[32] = "-", p50[32] = "-", p99[32] = "-", p999[32] = "-", max[32] = "-";
        if (r->first > 0) {
            snprintf(first, sizeof(first), "%.0f", r->first);
            snprintf(p50, sizeof(p50), "%.0f", r->p50);
            snprintf(p99, sizeof(p99), "%.0f", r->p99);
            snprintf(p999, sizeof(p999), "%.0f", r->p999);
            snprintf(max, sizeof(max), "%.0f", r->max);
        }
        printf("%-16s %-9s %8ld %11.1f %10s %8s %8s %8s %10s  %s\n", r->name, r->mode,
               r->ops, r->ns_per_op, first, p50, p99, p999, max, r->note);
    }
    fflush(stdout);
}

/* Fills the per-call statistics from samples[0..n) (sorted in place); the
 * first sample is kept apart because the kernel table quotes it alone. */
static void per_call(struct result *r, double *samples, long n)
{
    double sum = 0;
    for (long i = 0; i < n; i++)
        sum += samples[i];
    r->ops = n;
    r->ns_per_op = n ? sum / n : 0;
    r->first = n ? samples[0] : 0;
    qsort(samples, (size_t)n, sizeof(*samples), cmp_double);
    r->p50 = n ? samples[n / 2] : 0;
    r->p99 = n ? samples[(long)(n * 0.99)] : 0;
    r->p999 = n ? samples[(long)(n * 0.999)] : 0;
    r->max = n ? samples[n - 1] : 0;
}

/* ---- a / b: churn ------------------------------------------------------- */

#define LIVE 1000

/* The same starting point for every churn case: LIVE ranges of random sizes,
 * allocated as the tree path would place them. */
static void prefill(struct iova_domain *d, uint64_t *pfn, uint64_t *size)
{
    seed(1);
    for (int i = 0; i < LIVE; i++) {
        size[i] = 1 + rnd_below(64);
        pfn[i] = (uint64_t)must_alloc(d, size[i], LIMIT32);
    }
}

/* a: one free and one alloc per pair, single calls */
static double churn_tree_pairs(int mode, uint64_t *visited)
{
    uint64_t pfn[LIVE], size[LIVE];
    struct iova_domain *d = domain(1, mode);
    prefill(d, pfn, size);
    uint64_t v0 = state(d).nodes_visited;
    double t0 = now_ns();
    for (long p = 0; p < opt.pairs; p++) {
        uint64_t k = rnd_below(LIVE);
        must_free(d, pfn[k]);
        pfn[k] = (uint64_t)must_alloc(d, 1 + rnd_below(64), LIMIT32);
    }
    double t = now_ns() - t0;
    *visited = state(d).nodes_visited - v0;
    iova_domain_destroy(d);
    return t / opt.pairs;
}

/* b: the same churn through the rcache. Misses are counted from the tree:
 * with no flush and no trim, the tree gains a node exactly when alloc_fast
 * misses and loses one exactly when free_fast bypasses the cache. */
static double churn_fast_pairs(int mode, double *hit_rate)
{
    uint64_t pfn[LIVE], size[LIVE];
    struct iova_domain *d = domain(1, mode);
    prefill(d, pfn, size);
    uint64_t n0 = state(d).nodes, bypass = 0;
    double t0 = now_ns();
    for (long p = 0; p < opt.pairs; p++) {
        uint64_t k = rnd_below(LIVE);
        int r = iova_rcache_free_fast(d, pfn[k], size[k], 0);
        if (r)
            die("iova_rcache_free_fast", r);
        bypass += size[k] > 32;
        size[k] = 1 + rnd_below(64);
        int64_t q = iova_rcache_alloc_fast(d, size[k], LIMIT32, 1, 0);
        if (q <= 0)
            die("iova_rcache_alloc_fast", q);
        pfn[k] = (uint64_t)q;
    }
    double t = now_ns() - t0;
    uint64_t misses = state(d).nodes + bypass - n0;
    *hit_rate = 1.0 - (double)misses / opt.pairs;
    iova_domain_destroy(d);
    return t / opt.pairs;
}

/*
 * a.rounds / b.rounds: each round frees ROUND distinct random slots, then
 * allocates ROUND new ranges into them, in that order, so single calls and
 * batch calls do exactly the same operations. The victims are chosen before
 * the clock starts for every round at once, so both forms time only the
 * allocator (plus the gathering of pfns a caller has to do anyway).
 */
struct rounds {
    long n;
    uint32_t *victim;   /* n * ROUND slot indices */
    uint64_t *size;     /* n * ROUND new sizes */
};

static struct rounds make_rounds(long pairs)
{
    struct rounds r = { .n = pairs / ROUND };
    r.victim = malloc(sizeof(*r.victim) * r.n * ROUND);
    r.size = malloc(sizeof(*r.size) * r.n * ROUND);
    if (!r.victim || !r.size)
        die("malloc", 0);
    seed(2);
    for (long i = 0; i < r.n; i++) {
        uint32_t *v = r.victim + i * ROUND;
        /* a partial Fisher-Yates over the slots gives ROUND distinct ones */
        static uint32_t perm[LIVE];
        for (uint32_t j = 0; j < LIVE; j++)
            perm[j] = j;
        for (int j = 0; j < ROUND; j++) {
            uint32_t k = j + (uint32_t)rnd_below(LIVE - j);
            uint32_t tmp = perm[j];
            perm[j] = perm[k];
            perm[k] = tmp;
            v[j] = perm[j];
            r.size[i * ROUND + j] = 1 + rnd_below(64);
        }
    }
    return r;
}

/* FNV-1a over the final live set: bench_python_overhead.py replays the same
 * sequence and compares, to be sure both sides did the same work. */
static uint64_t live_digest(const uint64_t *pfn, int n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < n; i++)
        for (int b = 0; b < 64; b += 8) {
            h ^= (pfn[i] >> b) & 0xff;
            h *= 0x100000001b3ull;
        }
    return h;
}

static void free_rounds(struct rounds *r)
{
    free(r->victim);
    free(r->size);
}

/* One run of the rounds churn, in three steps so that a caller can time the
 * middle one alone: churn_start() makes the domain and its live set,
 * churn_run() replays every round, churn_end() digests the final live set
 * and destroys the domain. */
struct churn {
    struct iova_domain *d;
    const struct rounds *rs;
    bool fast, many;
    uint64_t pfn[LIVE], size[LIVE];
};

static void churn_start(struct churn *c, int mode, const struct rounds *rs, bool fast,
                        bool many)
{
    c->d = domain(1, mode);
    c->rs = rs;
    c->fast = fast;
    c->many = many;
    prefill(c->d, c->pfn, c->size);
}

static void churn_run(struct churn *c)
{
    struct iova_domain *d = c->d;
    const struct rounds *rs = c->rs;
    const bool fast = c->fast, many = c->many;
    uint64_t *pfn = c->pfn, *size = c->size;
    uint64_t gone[ROUND], gsize[ROUND], fresh[ROUND], bad;
    int err;
    for (long i = 0; i < rs->n; i++) {
        const uint32_t *v = rs->victim + i * ROUND;
        const uint64_t *ns = rs->size + i * ROUND;
        for (int j = 0; j < ROUND; j++) {
            gone[j] = pfn[v[j]];
            gsize[j] = size[v[j]];
        }
        if (many) {
            int64_t r = fast ? iova_rcache_free_fast_many(d, gone, gsize, ROUND, 0, &err)
                             : iova_free_many(d, gone, ROUND, &err);
            if (err || r != ROUND)
                die("free_many", err);
            r = fast ? iova_rcache_alloc_fast_many(d, ns, fresh, ROUND, LIMIT32, 1, 0, &bad)
                     : iova_alloc_many(d, ns, fresh, ROUND, LIMIT32, 1, &bad);
            if (r != ROUND)
                die("alloc_many", r);
        } else {
            for (int j = 0; j < ROUND; j++) {
                int r = fast ? iova_rcache_free_fast(d, gone[j], gsize[j], 0)
                             : iova_free(d, gone[j]);
                if (r)
                    die("free", r);
            }
            for (int j = 0; j < ROUND; j++) {
                int64_t r = fast ? iova_rcache_alloc_fast(d, ns[j], LIMIT32, 1, 0)
                                 : iova_alloc(d, ns[j], LIMIT32, 1);
                if (r <= 0)
                    die("alloc", r);
                fresh[j] = (uint64_t)r;
            }
        }
        for (int j = 0; j < ROUND; j++) {
            pfn[v[j]] = fresh[j];
            size[v[j]] = ns[j];
        }
    }
}

static uint64_t churn_end(struct churn *c)
{
    uint64_t digest = live_digest(c->pfn, LIVE);
    iova_domain_destroy(c->d);
    return digest;
}

/* ns per alloc+free pair of one timed run; *digest is the final live set */
static double churn_rounds(int mode, const struct rounds *rs, bool fast, bool many,
                           uint64_t *digest)
{
    struct churn c;
    churn_start(&c, mode, rs, fast, many);
    double t0 = now_ns();
    churn_run(&c);
    double t = now_ns() - t0;
    *digest = churn_end(&c);
    return t / (rs->n * ROUND);
}

static void run_churn(int mode)
{
    struct result r = { .mode = mode_name(mode) };
    double best, t;
    uint64_t visited = 0;

    if (wanted("a")) {
        best = 1e30;
        for (int i = 0; i < opt.repeats; i++)
            if ((t = churn_tree_pairs(mode, &visited)) < best)
                best = t;
        r.name = "a";
        r.ops = opt.pairs;
        r.ns_per_op = best;
        snprintf(r.note, sizeof(r.note), "ns per alloc+free pair; %.2f nodes visited per alloc",
                 (double)visited / opt.pairs);
        report(&r);
    }
    if (wanted("b")) {
        double hit = 0;
        best = 1e30;
        for (int i = 0; i < opt.repeats; i++)
            if ((t = churn_fast_pairs(mode, &hit)) < best)
                best = t;
        r.name = "b";
        r.ns_per_op = best;
        snprintf(r.note, sizeof(r.note), "ns per alloc_fast+free_fast pair; magazine hit rate %.1f%%",
                 100 * hit);
        report(&r);
    }
    if (wanted("a.rounds") || wanted("b.rounds")) {
        struct rounds rs = make_rounds(opt.pairs);
        for (int fast = 0; fast < 2; fast++) {
            const char *name = fast ? "b.rounds" : "a.rounds";
            if (!wanted(name))
                continue;
            for (int many = 0; many < 2; many++) {
                uint64_t digest = 0;
                best = 1e30;
                for (int i = 0; i < opt.repeats; i++)
                    if ((t = churn_rounds(mode, &rs, fast, many, &digest)) < best)
                        best = t;
                char nm[32];
                snprintf(nm, sizeof(nm), "%s.%s", name, many ? "many" : "single");
                r.name = nm;
                r.ops = rs.n * ROUND;
                r.ns_per_op = best;
                snprintf(r.note, sizeof(r.note),
                         "ns per pair; rounds of %d frees then %d allocs%s; live set %016" PRIx64,
                         ROUND, ROUND, many ? ", one batch call each" : "", digest);
                report(&r);
            }
        }
        free_rounds(&rs);
    }
}

/* ---- h: rcache hits only ------------------------------------------------ */

/* One domain whose magazines hold exactly what `sizes` asks for: the first
 * round misses and stocks them. */
static struct iova_domain *hit_domain(int mode, unsigned ncpus, int cpu,
                                      const uint64_t *sizes, uint64_t *pfns, long batch)
{
    int err = 0;
    uint64_t bad;
    struct iova_domain *d = iova_domain_new(GRANULE, 1, ncpus, opt.kernel, 0, &err);
    if (!d || iova_set_search_mode(d, mode))
        die("iova_domain_new", err);
    if (iova_rcache_alloc_fast_many(d, sizes, pfns, batch, LIMIT32, 1, cpu, &bad) != batch)
        die("alloc_fast_many", 0);
    if (iova_rcache_free_fast_many(d, pfns, sizes, batch, cpu, &err) != batch)
        die("free_fast_many", err);
    return d;
}

static void hit_rounds(struct iova_domain *d, int cpu, const uint64_t *sizes,
                       uint64_t *pfns, long batch, long rounds, bool many)
{
    uint64_t bad;
    int err;
    for (long i = 0; i < rounds; i++) {
        if (many) {
            iova_rcache_alloc_fast_many(d, sizes, pfns, batch, LIMIT32, 1, cpu, &bad);
            iova_rcache_free_fast_many(d, pfns, sizes, batch, cpu, &err);
        } else {
            for (long j = 0; j < batch; j++)
                pfns[j] = (uint64_t)iova_rcache_alloc_fast(d, sizes[j], LIMIT32, 1, cpu);
            for (long j = 0; j < batch; j++)
                iova_rcache_free_fast(d, pfns[j], sizes[j], cpu);
        }
    }
}

/* h's sizes: `batch` of them, 1..32 pages, from seed 3 */
static uint64_t *hit_sizes(long batch)
{
    uint64_t *sizes = malloc(sizeof(*sizes) * batch);
    if (!sizes)
        die("malloc", 0);
    seed(3);
    for (long i = 0; i < batch; i++)
        sizes[i] = 1 + rnd_below(32);
    return sizes;
}

/* One timed run of h on a fresh domain: ns per alloc+free pair of `rounds`
 * rounds of `batch` hits, as batch calls (many) or single calls. */
static double hits_once(int mode, const uint64_t *sizes, uint64_t *pfns, long batch,
                        long rounds, bool many)
{
    struct iova_domain *d = hit_domain(mode, 1, 0, sizes, pfns, batch);
    uint64_t n0 = state(d).nodes;
    double t0 = now_ns();
    hit_rounds(d, 0, sizes, pfns, batch, rounds, many);
    double t = (now_ns() - t0) / (rounds * batch);
    if (state(d).nodes != n0)
        die("the rcache-hit loop missed the cache", 0);
    iova_domain_destroy(d);
    return t;
}

static void run_hits(int mode)
{
    if (!wanted("h"))
        return;
    static const long batches[] = { 64, 1024 };
    for (unsigned b = 0; b < 2; b++) {
        long batch = batches[b];
        uint64_t *sizes = hit_sizes(batch);
        uint64_t *pfns = malloc(sizeof(*pfns) * batch);
        if (!pfns)
            die("malloc", 0);
        long rounds = opt.pairs / batch;
        for (int many = 1; many >= 0; many--) {
            if (!many && b)
                continue;              /* single calls do not care about the batch */
            double best = 1e30, t;
            for (int rep = 0; rep < opt.repeats; rep++)
                if ((t = hits_once(mode, sizes, pfns, batch, rounds, many)) < best)
                    best = t;
            char name[32];
            snprintf(name, sizeof(name), many ? "h.many%ld" : "h.single", batch);
            struct result r = { .name = name, .mode = mode_name(mode),
                                .ops = rounds * batch, .ns_per_op = best };
            if (many)
                snprintf(r.note, sizeof(r.note), "rcache hits, batches of %ld: %.1fM pairs/s",
                         batch, 1e3 / best);
            else
                snprintf(r.note, sizeof(r.note), "rcache hits, single calls: %.1fM pairs/s",
                         1e3 / best);
            report(&r);
        }
        free(sizes);
        free(pfns);
    }
}

/* ---- t: one thread against two ------------------------------------------ */

/*
 * Two workloads on one domain with two CPU slots, each on its own slot:
 * either one after the other on one thread, or at once on two. The work is
 * the same; the ratio is the scaling the core's locks allow, with no GIL.
 *   t.hits   rcache hits, batches of 64 (as h.many64)
 *   t.churn  the b churn (alloc_fast/free_fast pairs, random victims and
 *            sizes 1..64, 1000 live per workload)
 */
struct worker {
    struct iova_domain *d;
    int cpu;
    bool churn;
    long pairs;
    uint64_t sizes[LIVE], pfns[LIVE];
};

static void *work(void *p)
{
    struct worker *w = p;
    if (!w->churn) {
        hit_rounds(w->d, w->cpu, w->sizes, w->pfns, 64, w->pairs / 64, true);
        return NULL;
    }
    seed(100 + w->cpu);
    for (long i = 0; i < w->pairs; i++) {
        uint64_t k = rnd_below(LIVE);
        if (iova_rcache_free_fast(w->d, w->pfns[k], w->sizes[k], w->cpu))
            die("iova_rcache_free_fast", 0);
        w->sizes[k] = 1 + rnd_below(64);
        int64_t q = iova_rcache_alloc_fast(w->d, w->sizes[k], LIMIT32, 1, w->cpu);
        if (q <= 0)
            die("iova_rcache_alloc_fast", q);
        w->pfns[k] = (uint64_t)q;
    }
    return NULL;
}

static double run_workers(int mode, bool churn, int threads)
{
    static struct worker w[2];
    int err = 0;
    struct iova_domain *d = iova_domain_new(GRANULE, 1, 2, opt.kernel, 0, &err);
    if (!d || iova_set_search_mode(d, mode))
        die("iova_domain_new", err);
    for (int i = 0; i < 2; i++) {
        w[i].d = d;
        w[i].cpu = i;
        w[i].churn = churn;
        w[i].pairs = opt.pairs / 2;
        seed(10 + i);
        if (churn) {
            for (int k = 0; k < LIVE; k++) {
                w[i].sizes[k] = 1 + rnd_below(64);
                w[i].pfns[k] = (uint64_t)must_alloc(d, w[i].sizes[k], LIMIT32);
            }
        } else {
            uint64_t bad;
            for (int k = 0; k < 64; k++)
                w[i].sizes[k] = 1 + rnd_below(32);
            if (iova_rcache_alloc_fast_many(d, w[i].sizes, w[i].pfns, 64, LIMIT32, 1, i,
                                            &bad) != 64 ||
                iova_rcache_free_fast_many(d, w[i].pfns, w[i].sizes, 64, i, &err) != 64)
                die("stocking the magazines", err);
        }
    }
    double t0 = now_ns();
    if (threads == 1) {
        work(&w[0]);
        work(&w[1]);
    } else {
        pthread_t th[2];
        for (int i = 0; i < 2; i++)
            if (pthread_create(&th[i], NULL, work, &w[i]))
                die("pthread_create", i);
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
    }
    double t = (now_ns() - t0) / (2 * (opt.pairs / 2));
    char msg[128];
    if (iova_check(d, msg, sizeof(msg))) {
        fprintf(stderr, "bench_iova: check failed after the threads: %s\n", msg);
        exit(1);
    }
    iova_domain_destroy(d);
    return t;
}

static void run_threads(int mode)
{
    for (int churn = 0; churn < 2; churn++) {
        const char *name = churn ? "t.churn" : "t.hits";
        if (!wanted("t") && !wanted(name))
            continue;
        double best[3] = { 0, 1e30, 1e30 };
        for (int threads = 1; threads <= 2; threads++)
            for (int rep = 0; rep < opt.repeats; rep++) {
                double t = run_workers(mode, churn, threads);
                if (t < best[threads])
                    best[threads] = t;
            }
        for (int threads = 1; threads <= 2; threads++) {
            char nm[32];
            snprintf(nm, sizeof(nm), "%s.%dthr", name, threads);
            struct result r = { .name = nm, .mode = mode_name(mode),
                                .ops = 2 * (opt.pairs / 2), .ns_per_op = best[threads] };
            snprintf(r.note, sizeof(r.note), "ns per pair over both workloads%s",
                     threads == 1 ? "" : "; time vs 1 thread: ");
            if (threads == 2) {
                size_t len = strlen(r.note);
                snprintf(r.note + len, sizeof(r.note) - len, "%.2fx",
                         best[2] / best[1]);
            }
            report(&r);
        }
    }
}

/* ---- c: the fragmentation pathology ------------------------------------- */

/* FRAG_N one-page ranges allocated top-down under `limit`, then every other
 * one freed in allocation order (which leaves the cached node near the top,
 * as in the kernel measurement). Returns the pfns, kept ones at even index. */
static uint64_t *fragment(struct iova_domain *d, uint64_t limit)
{
    uint64_t *pfn = malloc(sizeof(*pfn) * FRAG_N);
    if (!pfn)
        die("malloc", 0);
    for (uint32_t i = 0; i < FRAG_N; i++)
        pfn[i] = (uint64_t)must_alloc(d, 1, limit);
    for (uint32_t i = 1; i < FRAG_N; i += 2)
        must_free(d, pfn[i]);
    return pfn;
}

static void run_c(int mode)
{
    if (!wanted("c"))
        return;
    struct iova_domain *d = domain(1, mode);
    uint64_t *pfn = fragment(d, LIMIT32);
    double *s = malloc(sizeof(*s) * C_MAX_OK);
    uint64_t v0 = state(d).nodes_visited;
    long ok = 0;
    while (ok < (long)C_MAX_OK) {
        double t0 = now_ns();
        int64_t r = iova_alloc(d, 2, LIMIT32, 1);
        double t = now_ns() - t0;
        if (r < 0)
            break;
        s[ok++] = t;
    }
    struct result res = { .name = "c", .mode = mode_name(mode) };
    uint64_t visited = state(d).nodes_visited - v0;
    per_call(&res, s, ok);
    snprintf(res.note, sizeof(res.note), "%ld two-page allocs ok; %.1f nodes visited per alloc",
             ok, ok ? (double)visited / ok : 0.0);
    report(&res);
    free(s);
    free(pfn);
    iova_domain_destroy(d);
}

static void run_c1(int mode)
{
    if (!wanted("c1"))
        return;
    struct iova_domain *d = domain(1, mode);
    uint64_t *pfn = fragment(d, LIMIT32);
    long n = opt.patho;
    double *s = malloc(sizeof(*s) * n);
    uint64_t visited = 0;
    long ok = 0;
    for (long i = 0; i < n; i++) {
        /* pfn[0] is the top range: freeing it moves cached32_node up to the
         * anchor, and allocating it again leaves the cache at the top */
        must_free(d, pfn[0]);
        pfn[0] = (uint64_t)must_alloc(d, 1, LIMIT32);
        uint64_t v0 = state(d).nodes_visited;
        double t0 = now_ns();
        int64_t r = iova_alloc(d, 2, LIMIT32, 1);
        double t = now_ns() - t0;
        visited += state(d).nodes_visited - v0;
        if (r < 0)
            break;
        s[ok++] = t;
    }
    struct result res = { .name = "c1", .mode = mode_name(mode) };
    per_call(&res, s, ok);
    snprintf(res.note, sizeof(res.note),
             "two-page alloc after a free+realloc at the top; %.0f nodes visited per alloc",
             ok ? (double)visited / ok : 0.0);
    report(&res);
    free(s);
    free(pfn);
    iova_domain_destroy(d);
}

/* c2/c3: time n failing two-page allocs under `limit` */
static void fail_loop(struct iova_domain *d, const char *name, int mode, uint64_t limit)
{
    long n = opt.patho;
    double *s = malloc(sizeof(*s) * n);
    uint64_t v0 = state(d).nodes_visited;
    for (long i = 0; i < n; i++) {
        double t0 = now_ns();
        int64_t r = iova_alloc(d, 2, limit, 1);
        s[i] = now_ns() - t0;
        if (r != IOVA_E_NOSPC)
            die("an alloc in a full region did not fail", r);
    }
    uint64_t visited = state(d).nodes_visited - v0;
    struct result res = { .name = name, .mode = mode_name(mode) };
    per_call(&res, s, n);
    snprintf(res.note, sizeof(res.note), "failing two-page allocs; %.0f nodes visited per alloc",
             (double)visited / n);
    report(&res);
    free(s);
}

static void run_c2(int mode)
{
    if (!wanted("c2"))
        return;
    /* start_pfn such that the FRAG_N ranges fill the 32-bit region exactly
     * (4.10 never hands out start_pfn itself, so it sits one lower there) */
    uint64_t start = DMA32 - FRAG_N - (opt.kernel == IOVA_KERNEL_4_10);
    struct iova_domain *d = domain(start, mode);
    uint64_t *pfn = fragment(d, LIMIT32);
    fail_loop(d, "c2", mode, LIMIT32);
    free(pfn);
    iova_domain_destroy(d);
}

static void run_c3(int mode)
{
    if (!wanted("c3"))
        return;
    struct iova_domain *d = domain(1, mode);
    uint64_t lo_hi[2];
    /* below 4 GiB: one reserved block; above the holes: one reserved block
     * up to the 64-bit limit, so the only free space is the one-page holes */
    uint64_t top = DMA32 + FRAG_N - 1;
    uint64_t *pfn = fragment(d, top);
    if (iova_reserve(d, 1, LIMIT32, lo_hi) || iova_reserve(d, top + 1, MAX_PFN, lo_hi))
        die("iova_reserve", 0);
    fail_loop(d, "c3", mode, MAX_PFN);
    free(pfn);
    iova_domain_destroy(d);
}

/* ---- s: per-alloc latency at 1M live ----------------------------------- */

/*
 * The scale target (benchmarks/README.md, case s): 10^6 live ranges,
 * p99.9 alloc under 5 us. 1M ranges of 1..64 pages do not fit below 4 GiB
 * at a 4K granule, so this one uses the 64-bit limit: random victims, random
 * sizes, each alloc timed on its own.
 */
#define SCALE_LIVE 1000000
#define SCALE_OPS  200000

static void run_scale(int mode)
{
    if (!wanted("s"))
        return;
    uint64_t *pfn = malloc(sizeof(*pfn) * SCALE_LIVE);
    double *s = malloc(sizeof(*s) * SCALE_OPS);
    if (!pfn || !s)
        die("malloc", 0);
    struct iova_domain *d = domain(1, mode);
    seed(5);
    for (long i = 0; i < SCALE_LIVE; i++)
        pfn[i] = (uint64_t)must_alloc(d, 1 + rnd_below(64), MAX_PFN);
    /* the linear walk costs milliseconds per alloc here: time fewer */
    long n = mode == IOVA_SEARCH_LINEAR ? opt.patho : opt.quick ? SCALE_OPS / 20 : SCALE_OPS;
    uint64_t v0 = state(d).nodes_visited;
    for (long i = 0; i < n; i++) {
        uint64_t k = rnd_below(SCALE_LIVE);
        must_free(d, pfn[k]);
        uint64_t size = 1 + rnd_below(64);
        double t0 = now_ns();
        int64_t r = iova_alloc(d, size, MAX_PFN, 1);
        s[i] = now_ns() - t0;
        if (r < 0)
            die("iova_alloc", r);
        pfn[k] = (uint64_t)r;
    }
    uint64_t visited = state(d).nodes_visited - v0;
    struct result res = { .name = "s.1M", .mode = mode_name(mode) };
    per_call(&res, s, n);
    snprintf(res.note, sizeof(res.note),
             "per alloc, 1M live, random churn, 64-bit limit; %.1f nodes visited per alloc",
             (double)visited / n);
    report(&res);
    iova_domain_destroy(d);
    free(pfn);
    free(s);
}

/* ---- memory ------------------------------------------------------------- */

static uint64_t rss_bytes(void)
{
    unsigned long size, resident;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%lu %lu", &size, &resident) != 2)
        die("reading /proc/self/statm", 0);
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void mem_one(long n, const char *name)
{
    uint64_t rss0 = rss_bytes();
    struct iova_domain *d = domain(1, IOVA_SEARCH_AUGMENTED);
    seed(4);
    double t0 = now_ns();
    for (long i = 0; i < n; i++)
        must_alloc(d, 1 + rnd_below(64), MAX_PFN);
    double t = (now_ns() - t0) / n;
    struct iova_state st = state(d);
    uint64_t rss = rss_bytes() - rss0;
    struct result r = { .name = name, .mode = "augmented", .ops = n, .ns_per_op = t };
    snprintf(r.note, sizeof(r.note),
             "node_bytes %.1f B/range, RSS growth %.1f B/range (%" PRIu64 " ranges); ns/op = fill",
             (double)st.node_bytes / st.nodes, (double)rss / st.nodes, st.nodes);
    report(&r);
    iova_domain_destroy(d);
}

static void run_mem(void)
{
    if (!wanted("mem"))
        return;
    static const long counts[] = { 1000000, 10000000 };
    static const char *names[] = { "mem.1M", "mem.10M" };
    for (unsigned c = 0; c < 2; c++) {
        if (counts[c] > opt.mem_max)
            continue;
        /* Each size in its own child, forked before any other case has run:
         * blocks freed earlier raise glibc's mmap threshold and stay resident
         * in the heap, which would blur the resident-set growth. */
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0)
            die("fork", pid);
        if (pid == 0) {
            mem_one(counts[c], names[c]);
            fflush(stdout);
            _exit(0);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
            die("the memory measurement", status);
    }
}

#ifdef BENCH_IOVA_LIBRARY

/* ---- libbench_iova.so: the entry points --------------------------------- */

/* Built with -fvisibility=hidden: these are the only symbols exported. */
#pragma GCC visibility push(default)
#include "bench_iova_lib.h"
#pragma GCC visibility pop

double bench_rounds_ns(long pairs, int fast, int many, uint64_t *digest)
{
    if (pairs < ROUND)
        return -1;
    struct rounds rs = make_rounds(pairs);
    double t = churn_rounds(IOVA_SEARCH_AUGMENTED, &rs, fast, many, digest);
    free_rounds(&rs);
    return t;
}

struct bench_rounds {
    struct rounds rs;
    struct churn c;
};

struct bench_rounds *bench_rounds_new(long pairs, int fast, int many)
{
    if (pairs < ROUND)
        return NULL;
    struct bench_rounds *b = malloc(sizeof(*b));
    if (!b)
        die("malloc", 0);
    b->rs = make_rounds(pairs);
    churn_start(&b->c, IOVA_SEARCH_AUGMENTED, &b->rs, fast, many);
    return b;
}

void bench_rounds_run(struct bench_rounds *b)
{
    churn_run(&b->c);
}

uint64_t bench_rounds_end(struct bench_rounds *b)
{
    uint64_t digest = churn_end(&b->c);
    free_rounds(&b->rs);
    free(b);
    return digest;
}

double bench_hits_ns(long pairs, long batch)
{
    if (batch < 1)
        return -1;
    uint64_t *sizes = hit_sizes(batch);
    uint64_t *pfns = malloc(sizeof(*pfns) * batch);
    if (!pfns)
        die("malloc", 0);
    long rounds = pairs / batch > 0 ? pairs / batch : 1;
    double t = hits_once(IOVA_SEARCH_AUGMENTED, sizes, pfns, batch, rounds, true);
    free(sizes);
    free(pfns);
    return t;
}

#else /* the program */

/* ---- main --------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_iova [--csv] [--quick] [--kernel 6.12|6.1|4.10] [--only a,b,...]\n"
            "                  [--search augmented|linear|both] [--pairs N] [--patho N]\n"
            "                  [--repeats N] [--mem-max N]\n"
            "cases: a b a.rounds b.rounds h t t.hits t.churn c c1 c2 c3 s mem\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--csv")) {
            opt.csv = true;
        } else if (!strcmp(a, "--quick")) {
            opt.quick = true;
        } else if (v && !strcmp(a, "--kernel")) {
            if (!strcmp(v, "6.12"))
                opt.kernel = IOVA_KERNEL_6_12;
            else if (!strcmp(v, "6.1"))
                opt.kernel = IOVA_KERNEL_6_1;
            else if (!strcmp(v, "4.10"))
                opt.kernel = IOVA_KERNEL_4_10;
            else
                usage();
            i++;
        } else if (v && !strcmp(a, "--search")) {
            if (!strcmp(v, "augmented"))
                opt.search = IOVA_SEARCH_AUGMENTED;
            else if (!strcmp(v, "linear"))
                opt.search = IOVA_SEARCH_LINEAR;
            else if (strcmp(v, "both"))
                usage();
            i++;
        } else if (v && !strcmp(a, "--only")) {
            opt.only = v;
            i++;
        } else if (v && !strcmp(a, "--pairs")) {
            opt.pairs = atol(v);
            i++;
        } else if (v && !strcmp(a, "--patho")) {
            opt.patho = atol(v);
            i++;
        } else if (v && !strcmp(a, "--repeats")) {
            opt.repeats = atoi(v);
            i++;
        } else if (v && !strcmp(a, "--mem-max")) {
            opt.mem_max = atol(v);
            i++;
        } else {
            usage();
        }
    }
    if (opt.quick) {
        /* a smoke run: every case, a hundredth of the work */
        opt.pairs = 10000;
        opt.patho = 50;
        opt.repeats = 1;
        opt.mem_max = 1000000;
    }
    if (opt.pairs < ROUND || opt.patho < 1 || opt.repeats < 1)
        usage();

    if (!opt.csv)
        printf("# bench_iova: kernel %s rules, 4K granule, 1 CPU slot, best of %d for a/b/h\n",
               opt.kernel == IOVA_KERNEL_6_12 ? "6.12"
               : opt.kernel == IOVA_KERNEL_6_1 ? "6.1" : "4.10", opt.repeats);
    header();
    run_mem();      /* first, while the heap is untouched (see run_mem) */
    int modes[] = { IOVA_SEARCH_AUGMENTED, IOVA_SEARCH_LINEAR };
    for (int m = 0; m < 2; m++) {
        if (opt.search >= 0 && modes[m] != opt.search)
            continue;
        run_churn(modes[m]);
        run_hits(modes[m]);
        run_threads(modes[m]);
        run_c(modes[m]);
        run_c1(modes[m]);
        run_c2(modes[m]);
        run_c3(modes[m]);
        run_scale(modes[m]);
    }
    return 0;
}

#endif /* BENCH_IOVA_LIBRARY */
