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

typedef struct hak_stats {
  uint64_t os_calls[HAK_STAT_OS_KINDS];
  uint64_t os_bytes[HAK_STAT_OS_KINDS];
  uint64_t os_failures[HAK_STAT_OS_KINDS];
  uint64_t os_calls_total;
  /* Bytes of the Tiny/Pool range committed and not decommitted since (Large memory is
   * in large_live_bytes and large_cached_bytes). */
  int64_t committed_bytes;
  uint64_t tiny_refills, tiny_overflows, tiny_remote_frees, tiny_slabs_in_use;
  uint64_t tiny_superslabs, tiny_empty_superslabs;
  uint64_t tiny_decommitted_superslabs; /* empty ones whose pages went back to the OS */
  uint64_t pool_refills, pool_remote_frees, pool_pages_in_use;
  uint64_t large_live_blocks, large_live_bytes, large_cached_blocks, large_cached_bytes;
  uint64_t bigcache_hits, bigcache_misses;
  /* Freed Large mappings the kernel refused to unmap: decommitted, kept, retried by the
   * decay and malloc_trim. */
  uint64_t large_unreleased_bytes;
  uint64_t foreign_frees;  /* frees of pointers hakmem does not own (release builds) */
  uint64_t reserved_bytes; /* address space claimed for Tiny and Pool (mapped as used) */
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
