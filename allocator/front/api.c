/* The hak_* API: the malloc family under hakmem's own names (hakmem.h). */
#include "allocator/front/family.h"
#include "allocator/hakmem.h"

#define HAK_DEFINE_API(ret, name, params, body) \
  HAK_API ret hak_##name params { body }
HAK_MALLOC_FAMILY(HAK_DEFINE_API)
