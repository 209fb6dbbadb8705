/* Route counters of the trace variant (see trace.h). */
#include "allocator/internal/trace.h"

#include "allocator/internal/log.h"
#include "allocator/internal/options.h"

uint64_t hak_route_counts[HAK_ROUTE_COUNT];

const char *const hak_route_names[HAK_ROUTE_COUNT] = {
    "tiny fast",   "tiny refill", "tiny remote", "pool fast", "pool refill",  "pool remote",
    "pool shared", "registry",    "large map",   "bigcache",  "foreign free",
};

void hak_trace_route(hak_route_t route, const void *p, int is_free) {
  __atomic_fetch_add(&hak_route_counts[route], 1, __ATOMIC_RELAXED);
  if (is_free && hak_opt(HAK_OPT_FREE_ROUTE_TRACE)) {
    char line[96];
    hak_buf_t b = {line, 0, sizeof line};
    hak_buf_str(&b, "hakmem: free ");
    hak_buf_hex(&b, (uintptr_t)p);
    hak_buf_str(&b, " -> ");
    hak_buf_str(&b, hak_route_names[route]);
    hak_buf_str(&b, "\n");
    hak_buf_flush(&b, 2);
  }
}
