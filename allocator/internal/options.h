/* The runtime options table (the README's Options section): every HAKMEM_* variable with its
 * default, range and help, parsed once at initialisation. Hot paths read the parsed values from a
 * plain array, never the environment. */
#ifndef HAK_ALLOCATOR_INTERNAL_OPTIONS_H
#define HAK_ALLOCATOR_INTERNAL_OPTIONS_H

#include <stdint.h>

#include "allocator/internal/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* X(id, default, min, max, help); the variable is "HAKMEM_" #id. */
#define HAK_OPTIONS(X)                                                                         \
  X(HELP, 0, 0, 1, "print this table and the compiled variant at start-up")                    \
  X(STATS, 0, 0, 1, "print allocator counters to stderr at exit")                              \
  X(FREE_ROUTE_TRACE, 0, 0, 1, "trace variant: log the route of every free to stderr")         \
  X(BIGCACHE_MB, 1024, 0, 65536, "most MiB of freed Large memory kept for reuse until decay")  \
  X(DECAY_MS, 1000, 0, 3600000, "idle ms before empty memory is returned to the OS")           \
  X(FAULT_RATE, 0, 0, 1000000, "testing: fail this many of every million memory system calls") \
  X(HARDEN, 1, 0, 1, "encoded free-list links, double-free and bad-pointer checks (release)")  \
  X(IDLE_FLUSH, 1, 0, 1, "purge thread flushes the caches of threads blocked for the decay")   \
  X(PURGE_THREAD, 1, 0, 1, "return memory on time from a thread started at the first free")    \
  X(SS_LRU_SIZE, 0, 0, 4096, "empty Tiny SuperSlabs kept committed past the decay")            \
  X(TINY_CACHE_MAX, 2048, 16, 2048, "upper bound of a Tiny thread cache, in blocks")           \
  X(POOL_TLS_ARENA_MB_INIT, 1, 1, 64, "first Pool arena chunk of a thread, MiB")               \
  X(POOL_TLS_ARENA_MB_MAX, 8, 1, 1024, "largest Pool arena chunk, MiB")                        \
  X(POOL_TLS_ARENA_GROWTH_LEVELS, 3, 0, 10, "Pool arena chunk doublings up to the max")        \
  X(RESERVE_GB, 64, 1, 256, "GiB of address space claimed for Tiny and Pool (mapped as used)")

typedef enum {
#define HAK_OPTION_ID(id, def, lo, hi, help) HAK_OPT_##id,
  HAK_OPTIONS(HAK_OPTION_ID)
#undef HAK_OPTION_ID
      HAK_OPT_COUNT
} hak_option_t;

typedef struct {
  const char *name; /* "HAKMEM_..." */
  int64_t def;
  int64_t min;
  int64_t max;
  const char *help;
} hak_option_desc_t;

extern HAK_HIDDEN const hak_option_desc_t hak_option_table[HAK_OPT_COUNT];
extern HAK_HIDDEN int64_t hak_option_values[HAK_OPT_COUNT];

/* Value of an option; defaults until hak_options_load() has run. */
HAK_INLINE int64_t hak_opt(hak_option_t id) { return hak_option_values[id]; }

/* Looks each option up with `get` (getenv-like; NULL = unset) and stores it. A value
 * that is not a decimal number in range keeps the default and writes one warning line
 * naming the variable and the default to `warn_fd`. Allocation-free. */
void hak_options_load(const char *(*get)(const char *name), int warn_fd);

/* Writes the table with current values and the compiled variant to fd. */
void hak_options_print(int fd);

#ifdef __cplusplus
}
#endif

#endif /* HAK_ALLOCATOR_INTERNAL_OPTIONS_H */
