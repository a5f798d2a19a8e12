/*
 * iova_mem_internal.h - allocation wrappers every C file uses instead of
 * malloc/calloc/realloc, so that the fault injector reaches all of them.
 */
#ifndef PYIOVA_IOVA_MEM_INTERNAL_H
#define PYIOVA_IOVA_MEM_INTERNAL_H

#include <stddef.h>

void *iova_mem_malloc(size_t size);
void *iova_mem_calloc(size_t n, size_t size);
void *iova_mem_realloc(void *p, size_t size);

#endif
