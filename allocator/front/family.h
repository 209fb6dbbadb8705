/* The malloc family as one list, expanded twice: into the hak_* API (api.c) and into the
 * standard names that replace the process allocator (override.c). Each entry is
 * X(return type, name, parameters, body). */
#ifndef HAK_ALLOCATOR_FRONT_FAMILY_H
#define HAK_ALLOCATOR_FRONT_FAMILY_H

#include "allocator/front/front.h"

#define HAK_MALLOC_FAMILY(X)                                                                    \
  X(void *, malloc, (size_t n), return hak_front_malloc(n);)                                    \
  X(void, free, (void *p), hak_front_free(p);)                                                  \
  X(void *, calloc, (size_t count, size_t size), return hak_front_calloc(count, size);)         \
  X(void *, realloc, (void *p, size_t n), return hak_front_realloc(p, n);)                      \
  X(void *, reallocarray, (void *p, size_t count, size_t size),                                 \
    return hak_front_reallocarray(p, count, size);)                                             \
  X(int, posix_memalign, (void **out, size_t align, size_t n),                                  \
    return hak_front_posix_memalign(out, align, n);)                                            \
  X(void *, aligned_alloc, (size_t align, size_t n), return hak_front_aligned_alloc(align, n);) \
  X(void *, memalign, (size_t align, size_t n), return hak_front_memalign(align, n);)           \
  X(void *, valloc, (size_t n), return hak_front_valloc(n);)                                    \
  X(void *, pvalloc, (size_t n), return hak_front_pvalloc(n);)                                  \
  X(size_t, malloc_usable_size, (void *p), return hak_front_usable(p);)                         \
  X(void, free_sized, (void *p, size_t n), hak_front_free_sized(p, n, 0);)                      \
  X(void, free_aligned_sized, (void *p, size_t align, size_t n),                                \
    hak_front_free_sized(p, n, align);)                                                         \
  X(int, malloc_trim, (size_t pad), return hak_front_trim(pad);)                                \
  X(void, malloc_stats, (void), hak_front_malloc_stats();)                                      \
  X(int, mallopt, (int param, int value), return hak_front_mallopt(param, value);)

#endif /* HAK_ALLOCATOR_FRONT_FAMILY_H */
