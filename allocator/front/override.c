/* The standard malloc family, replacing the process allocator: linked from
 * //allocator:hakmem (cc_binary malloc = ..., deps) and exported by libhakmem.so. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdlib.h>

#include "allocator/front/family.h"
#include "allocator/hakmem.h"

/* C23 functions glibc 2.36 does not declare yet. */
void free_sized(void *p, size_t n);
void free_aligned_sized(void *p, size_t align, size_t n);

#define HAK_DEFINE_OVERRIDE(ret, name, params, body) \
  HAK_API ret name params { body }
HAK_MALLOC_FAMILY(HAK_DEFINE_OVERRIDE)
