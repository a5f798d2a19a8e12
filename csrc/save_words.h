/*
 * save_words.h - the flat arrays of 64-bit words every save in the core is
 * made of (domains, cookies, page tables).
 *
 * A writer stores what fits and counts everything, so a first call with no
 * buffer tells the caller how many words to provide. A reader marks itself
 * bad instead of reading past the end, so a restore can read a whole section
 * and check once.
 */
#ifndef PYIOVA_SAVE_WORDS_H
#define PYIOVA_SAVE_WORDS_H

#include <stdbool.h>
#include <stdint.h>

struct words_writer {
    uint64_t *out;
    uint64_t cap;
    uint64_t n;           /* words written, or that would have been */
};

static inline struct words_writer words_writer(uint64_t *out, uint64_t cap)
{
    struct words_writer w = { out, out ? cap : 0, 0 };
    return w;
}

static inline void words_put(struct words_writer *w, uint64_t v)
{
    if (w->n < w->cap)
        w->out[w->n] = v;
    w->n++;
}

struct words_reader {
    const uint64_t *in;
    uint64_t n;
    uint64_t pos;
    bool bad;             /* a read went past the end */
};

static inline struct words_reader words_reader(const uint64_t *in, uint64_t n)
{
    struct words_reader r = { in, in ? n : 0, 0, false };
    return r;
}

static inline uint64_t words_get(struct words_reader *r)
{
    if (r->pos >= r->n) {
        r->bad = true;
        return 0;
    }
    return r->in[r->pos++];
}

#endif
