/* hakmem: a general-purpose memory allocator. This is its only public header.
 *
 * Link //allocator:hakmem (or LD_PRELOAD libhakmem.so) and the standard malloc family is
 * hakmem's. Link //allocator:hakmem_api to call the same allocator as hak_* functions
 * without replacing malloc. Semantics follow glibc's for each function. */
#ifndef HAK_ALLOCATOR_HAKMEM_H
#define HAK_ALLOCATOR_HAKMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HAK_API __attribute__((visibility("default")))

HAK_API void *hak_malloc(size_t size);
HAK_API void hak_free(void *ptr);
HAK_API void *hak_calloc(size_t count, size_t size);
HAK_API void *hak_realloc(void *ptr, size_t size);
HAK_API void *hak_reallocarray(void *ptr, size_t count, size_t size);
HAK_API int hak_posix_memalign(void **out, size_t alignment, size_t size);
HAK_API void *hak_aligned_alloc(size_t alignment, size_t size);
HAK_API void *hak_memalign(size_t alignment, size_t size);
HAK_API void *hak_valloc(size_t size);
HAK_API void *hak_pvalloc(size_t size);
HAK_API size_t hak_malloc_usable_size(void *ptr);
HAK_API void hak_free_sized(void *ptr, size_t size);
HAK_API void hak_free_aligned_sized(void *ptr, size_t alignment, size_t size);
HAK_API int hak_malloc_trim(size_t pad);
HAK_API void hak_malloc_stats(void);
HAK_API int hak_mallopt(int param, int value);

/* Memory system calls by kind, as counted by the OS boundary. */
enum {
  HAK_STAT_OS_RESERVE,
  HAK_STAT_OS_MAP,
  HAK_STAT_OS_COMMIT,
  HAK_STAT_OS_DECOMMIT,
  HAK_STAT_OS_RELEASE,
  HAK_STAT_OS_REMAP,
  HAK_STAT_OS_PROTECT,
  HAK_STAT_OS_KINDS
};

/* Every scalar counter of hak_stats_t, listed once: X(field, label, what it counts).
 * The struct below and hak_stats_print's lines ("  <label> <value>") come from it. */
#define HAK_STATS_COUNTERS(X)                                                                    \
  X(tiny_refills, "tiny refills", "Tiny thread-cache refills")                                   \
  X(tiny_overflows, "tiny overflows", "Tiny thread caches trimmed on overflow")                  \
  X(tiny_remote_frees, "tiny remote frees", "Tiny blocks freed by a thread not their owner")     \
  X(tiny_slabs_in_use, "tiny slabs in use", "64 KiB Tiny slabs owned by a heap")                 \
  X(tiny_superslabs, "tiny superslabs", "2 MiB Tiny SuperSlabs ever handed out")                 \
  X(tiny_empty_superslabs, "tiny empty superslabs", "SuperSlabs with no slab in use")            \
  X(tiny_decommitted_superslabs, "tiny decommitted superslabs",                                  \
    "empty SuperSlabs whose pages went back to the OS")                                          \
  X(pool_refills, "pool refills", "Pool thread-list refills (or shard calls)")                   \
  X(pool_overflows, "pool overflows", "Pool thread lists trimmed on overflow")                   \
  X(pool_remote_frees, "pool remote frees", "Pool blocks freed by a thread not their owner")     \
  X(pool_pages_in_use, "pool pages in use", "64 KiB Pool pages of spans in use")                 \
  X(remote_batches, "remote batches", "batches of remote frees sent to their slabs")             \
  X(remote_flushes, "remote flushes", "buffers of remote frees sent whole (slow path, exit)")    \
  X(large_live_blocks, "large live blocks", "Large blocks allocated")                            \
  X(large_live_bytes, "large live bytes", "their usable bytes (page-heap spans, own mappings)")  \
  X(large_cached_blocks, "large cached blocks", "freed Large spans and mappings kept for reuse") \
  X(large_cached_bytes, "large cached bytes",                                                    \
    "their bytes, until the decay gives them back (pages moved out of them included)")           \
  X(bigcache_hits, "large reuses", "Large requests served from free spans or cached mappings")   \
  X(bigcache_misses, "large growths", "Large requests that grew an arena or needed a mapping")   \
  X(large_moved_bytes, "large moved bytes",                                                      \
    "freed Large pages moved into new blocks in place of fresh ones (no fault, no copy)")        \
  X(large_unreleased_bytes, "large unreleased bytes",                                            \
    "freed Large mappings the kernel refused to unmap: decommitted, kept, retried")              \
  X(foreign_frees, "foreign frees", "frees of pointers hakmem did not hand out (release)")       \
  X(idle_flushes, "idle flushes",                                                                \
    "heaps of threads blocked for the decay whose caches the purge thread flushed")              \
  X(reserved_bytes, "claimed bytes", "address space claimed for Tiny and Pool (mapped as used)") \
  X(resident_bytes, "resident bytes",                                                            \
    "bytes of hakmem's memory in RAM now (mincore): the sum of the three below")                 \
  X(tiny_resident_bytes, "tiny resident bytes", "of Tiny SuperSlabs not decommitted")            \
  X(pool_resident_bytes, "pool resident bytes", "of the Pool arena")                             \
  X(large_resident_bytes, "large resident bytes", "of Large blocks and cached mappings")

typedef struct hak_stats {
  uint64_t os_calls[HAK_STAT_OS_KINDS];    /* memory system calls by kind */
  uint64_t os_bytes[HAK_STAT_OS_KINDS];    /* bytes they covered */
  uint64_t os_failures[HAK_STAT_OS_KINDS]; /* calls that failed (or were made to fail) */
  uint64_t os_calls_total;                 /* sum of os_calls */
  /* Bytes of the Tiny/Pool range committed and not decommitted since (Large memory is
   * in large_live_bytes and large_cached_bytes; the arenas' commits are left out). */
  int64_t committed_bytes;
#define HAK_STATS_FIELD(field, label, what) uint64_t field;
  HAK_STATS_COUNTERS(HAK_STATS_FIELD)
#undef HAK_STATS_FIELD
} hak_stats_t;

/* Fills *out with the current counters (exact when other threads are quiet). */
HAK_API void hak_stats_get(hak_stats_t *out);
/* Writes the counters (and, in the trace variant, the route counters) to fd. */
HAK_API void hak_stats_print(int fd);
/* "release", "debug-fail-fast" or "trace", then the compile-time flags. */
HAK_API const char *hak_variant(void);

#ifdef __cplusplus
}
#endif

#endif /* HAK_ALLOCATOR_HAKMEM_H */
