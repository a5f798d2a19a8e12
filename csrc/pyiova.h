/*
 * pyiova.h - the one header the cffi binding includes.
 *
 * It only pulls in the public header of each C module. Every header named
 * here is also fed to cffi's cdef (see build_ext.py), so each holds nothing
 * but declarations cffi can parse: opaque structs, plain structs of integers,
 * function prototypes and integer #defines. Internals live in *_internal.h
 * files or in the .c files.
 */
#ifndef PYIOVA_H
#define PYIOVA_H

#include <stdint.h>
#include <stddef.h>

#include "iova_errors.h"
#include "iova.h"
#include "iova_cookie.h"
#include "iova_cookie_save.h"
#include "iova_mem.h"
#include "io_pgtable.h"
#include "iotlb.h"
#include "sim_mt.h"
#include "sim_engine.h"
#include "sim_gen.h"

#endif
