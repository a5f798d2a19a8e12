/*
 * bench_iova_lib.h - the entry points of libbench_iova.so.
 *
 * The library is bench_iova.c built with -DBENCH_IOVA_LIBRARY (see the
 * Makefile): the program's rounds churn (cases a.rounds and b.rounds) and
 * rcache-hit loop (case h), callable from Python, so that
 * bench_python_overhead.py and test_bench_overhead.py time the C core in
 * their own process, interleaved with the Python runs. Same domain as
 * the program: 4K granule, start_pfn 1, one CPU slot, 6.12 rules,
 * augmented search. A failing call of the core ends the process with a
 * message on stderr, as in the program.
 *
 * cffi reads this file as its cdef (the # lines dropped): declarations
 * only.
 */
#include <stdint.h>

/* One timed run of the rounds churn: `pairs` alloc+free pairs (whole
 * rounds of 100 frees then 100 allocs), as single calls or, with `many`,
 * one batch call per round; through alloc_fast/free_fast with `fast`.
 * Returns ns per pair, or -1 if pairs < 100; *digest is the final live set
 * (FNV-1a over the 1000 pfns in slot order). */
double bench_rounds_ns(long pairs, int fast, int many, uint64_t *digest);

/* The same run in three steps, for a caller that times the run itself:
 * _new makes the sequence, the domain and its live set (NULL if
 * pairs < 100), _run replays the rounds (once), _end returns the digest and
 * frees everything. */
struct bench_rounds;
struct bench_rounds *bench_rounds_new(long pairs, int fast, int many);
void bench_rounds_run(struct bench_rounds *b);
uint64_t bench_rounds_end(struct bench_rounds *b);

/* One timed run of h: `batch` sizes (1..32 pages) allocated with
 * alloc_fast_many and freed with free_fast_many, pairs / batch times over
 * (at least once), every alloc a magazine hit. Returns ns per pair, or -1
 * if batch < 1. */
double bench_hits_ns(long pairs, long batch);
