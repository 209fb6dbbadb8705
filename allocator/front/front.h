/* The front end: size dispatch to the tiers and ownership from the address alone.
 * Tiny and Pool memory lives in one reserved range [base, base + total): the low half is
 * Tiny's, the high half Pool's; everything else hakmem hands out is a Large mapping. */
#ifndef HAK_ALLOCATOR_FRONT_FRONT_H
#define HAK_ALLOCATOR_FRONT_FRONT_H

#include <stddef.h>
#include <stdint.h>

#include "allocator/internal/config.h"
#include "allocator/pool/pool.h"
#include "allocator/tiny/tiny.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The reserved range [base, base + total): Tiny's region (hak_tiny_geom) is its first
 * hak_tiny_geom.size bytes, Pool's the rest. */
typedef struct {
  uintptr_t base;
  uintptr_t total;        /* hak_tiny_geom.size without Pool, 0 without Tiny */
  int ready;              /* Tiny is in use */
  uint64_t foreign_frees; /* frees of pointers outside every tier (atomic) */
} hak_front_t;

extern hak_front_t hak_front;

void *hak_front_malloc_slow(size_t n);
void hak_front_free_slow(void *p);
void *hak_front_calloc(size_t count, size_t size);
void *hak_front_realloc(void *p, size_t n);
void *hak_front_aligned(size_t align, size_t n, int zero);
int hak_front_posix_memalign(void **out, size_t align, size_t n);
void *hak_front_aligned_alloc(size_t align, size_t n);
void *hak_front_memalign(size_t align, size_t n);
void *hak_front_valloc(size_t n);
void *hak_front_pvalloc(size_t n);
void *hak_front_reallocarray(void *p, size_t count, size_t size);
size_t hak_front_usable(const void *p);
int hak_front_trim(size_t pad);
void hak_front_malloc_stats(void);
int hak_front_mallopt(int param, int value);
void hak_front_free_sized(void *p, size_t n, size_t align);

/* No readiness check: before initialisation every thread's caches are the empty ones, so
 * the pops miss and the slow path initialises. */
HAK_INLINE void *hak_front_malloc(size_t n) {
  void *p = NULL;
  if (HAK_LIKELY(n <= HAK_TINY_MAX)) {
    p = hak_tiny_pop(n);
  } else if (n <= HAK_POOL_MAX) {
    p = hak_pool_pop(n);
  }
  return HAK_LIKELY(p != NULL) ? p : hak_front_malloc_slow(n);
}

/* Pool exists only beside Tiny, on the same base, so the one offset serves both range
 * checks; without Tiny its size and total are 0, and without Pool total is Tiny's size. */
HAK_INLINE void hak_front_free(void *p) {
  uintptr_t off = (uintptr_t)p - hak_tiny_geom.base;
  if (HAK_LIKELY(off < hak_tiny_geom.size)) {
    hak_tiny_free(p, off);
    return;
  }
  if (off < hak_front.total && hak_pool_push(p, off - hak_tiny_geom.size)) return;
  hak_front_free_slow(p);
}

#ifdef __cplusplus
}
#endif

#endif /* HAK_ALLOCATOR_FRONT_FRONT_H */
