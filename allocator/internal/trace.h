/* Route counters and the free-route log of the trace variant (the README's Variants section). In
 * other variants HAK_TRACE_ROUTE compiles to nothing, so release fast paths carry no counters. */
#ifndef HAK_ALLOCATOR_INTERNAL_TRACE_H
#define HAK_ALLOCATOR_INTERNAL_TRACE_H

#include <stdint.h>

#include "allocator/internal/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  HAK_ROUTE_TINY_FAST,   /* malloc/free served by the thread cache */
  HAK_ROUTE_TINY_REFILL, /* thread cache refilled from slabs */
  HAK_ROUTE_TINY_REMOTE, /* free of another thread's tiny block */
  HAK_ROUTE_POOL_FAST,   /* pool TLS free list hit */
  HAK_ROUTE_POOL_REFILL, /* pool TLS list refilled */
  HAK_ROUTE_POOL_REMOTE, /* free of another thread's pool block */
  HAK_ROUTE_POOL_SHARED, /* shared sharded pool (POOL_TLS_PHASE1=0) */
  HAK_ROUTE_REGISTRY,    /* class found through the page registry */
  HAK_ROUTE_LARGE_MAP,   /* large block mapped */
  HAK_ROUTE_BIGCACHE,    /* large block served by or returned to the BigCache */
  HAK_ROUTE_FOREIGN,     /* free of a pointer hakmem does not own */
  HAK_ROUTE_COUNT
} hak_route_t;

extern HAK_HIDDEN uint64_t hak_route_counts[HAK_ROUTE_COUNT];
extern HAK_HIDDEN const char *const hak_route_names[HAK_ROUTE_COUNT];

/* Counts a route and, for frees with HAKMEM_FREE_ROUTE_TRACE=1, logs one line. */
void hak_trace_route(hak_route_t route, const void *p, int is_free);

#if HAKMEM_TRACE
#define HAK_TRACE_ROUTE(route, p, is_free) hak_trace_route((route), (p), (is_free))
#else
#define HAK_TRACE_ROUTE(route, p, is_free) ((void)0)
#endif

#ifdef __cplusplus
}
#endif

#endif /* HAK_ALLOCATOR_INTERNAL_TRACE_H */
